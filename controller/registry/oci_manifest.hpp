#pragma once
// Parsing of the manifests the registry accepts: OCI image manifest and index (v1.1, with
// `artifactType` and `subject`), Docker v2 schema 2 manifest and manifest list. Socket-free,
// unit-tested and fuzzed (tests/fuzz/fuzz_oci_manifest.cpp).
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/result.hpp"
#include "controller/registry/oci_digest.hpp"

namespace provisioner::registry {

inline constexpr std::string_view kOciManifest = "application/vnd.oci.image.manifest.v1+json";
inline constexpr std::string_view kOciIndex = "application/vnd.oci.image.index.v1+json";
inline constexpr std::string_view kDockerManifest = "application/vnd.docker.distribution.manifest.v2+json";
inline constexpr std::string_view kDockerList = "application/vnd.docker.distribution.manifest.list.v2+json";
inline constexpr std::string_view kOciEmptyJson = "application/vnd.oci.empty.v1+json";

struct Descriptor {
  std::string media_type;
  Digest digest;
  std::uint64_t size = 0;
  std::optional<std::string> artifact_type;
  nlohmann::json annotations;  // object or null
  bool foreign = false;        // a non-distributable layer with URLs: not stored here
  nlohmann::json to_json() const;
};

struct ParsedManifest {
  enum class Kind { image, index } kind = Kind::image;
  std::string media_type;                    // effective: Content-Type, else the mediaType field
  std::optional<std::string> artifact_type;  // artifactType, else an image's config mediaType
  std::vector<Descriptor> blobs;             // image: config, then layers in order
  std::vector<Descriptor> manifests;         // index: the manifests it lists
  std::optional<Descriptor> subject;
  nlohmann::json annotations;
};

bool is_manifest_media_type(std::string_view media_type);

// `content_type` is the PUT's Content-Type (parameters dropped), if any. Every error is
// invalid_input whose message starts with the field path (the answer's MANIFEST_INVALID).
Result<ParsedManifest> parse_manifest(std::string_view bytes, std::optional<std::string_view> content_type);

}  // namespace provisioner::registry
