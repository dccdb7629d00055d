#pragma once
// POST /api/v1/artifacts: streams a client's upload into the content-addressed store,
// checking it against the digest the client names, never holding it whole in memory.
#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "common/result.hpp"
#include "controller/artifacts/artifact_store.hpp"

namespace provisioner::artifacts {

struct UploadRequest {
  std::optional<std::string> digest;   // "sha256:<hex>" (required)
  std::optional<std::string> name;     // served name, default "artifact.iso"
  std::optional<std::string> purpose;  // "maintenance-iso" makes it the current maintenance ISO
  ReadFn read;                         // the body, piece by piece; 0 at the end
};

class UploadService {
 public:
  // `make_maintenance`: called with the sha256 when purpose is maintenance-iso.
  UploadService(ArtifactStore& store, std::string public_base_url, std::uint64_t max_bytes,
                std::function<Status(const std::string&)> make_maintenance);

  Result<nlohmann::json> upload(const UploadRequest& request);
  std::uint64_t max_bytes() const { return max_bytes_; }

 private:
  ArtifactStore& store_;
  std::string base_url_;
  std::uint64_t max_bytes_;
  std::function<Status(const std::string&)> make_maintenance_;
};

}  // namespace provisioner::artifacts
