#pragma once
// Content-addressed artifact store: task ISOs, maintenance ISOs and the small per-job parts
// of single-ISO media, each named by the sha256 of its bytes.
//
// Layout under `root` (the controller passes `<data_dir>/artifacts`):
//   sha256/<hex>              plain artifacts (immutable once renamed into place)
//   sha256/.tmp-<random>      uploads in flight (same directory, so rename is atomic)
//   composite/<hex>.json      composite manifests; <hex> is the sha256 of the served bytes
//
// A composite artifact is a virtual concatenation of regions of plain artifacts, so a
// per-job single ISO is "shared base ISO + small per-job parts" without copying the base.
//
// Timestamps: a file's mtime is its creation time and is served as Last-Modified, so it never
// changes. Its atime is bumped on every put() that reuses it and is what GC retention counts
// from ("last registered"), so re-registering an old artifact protects it again (on relatime
// mounts a download may refresh it too, which only errs on the side of keeping).
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.hpp"

namespace provisioner::artifacts {

struct ArtifactInfo {
  std::string sha256;          // lowercase hex, 64 chars
  std::uint64_t size = 0;      // bytes served
  bool composite = false;
  bool reused = false;         // true when identical content was already stored
  std::filesystem::path path;  // the blob (plain) or the manifest (composite)
};

// One region of a composite artifact as stored in its manifest.
struct Segment {
  enum class Kind { artifact, bytes };
  Kind kind = Kind::artifact;
  std::string sha256;         // the plain artifact holding the bytes
  std::uint64_t offset = 0;   // into that artifact (always 0 for `bytes`)
  std::uint64_t length = 0;
  // SHA-256 of this segment's own bytes (for `bytes`, and a whole artifact: its sha256; for a
  // region: computed once per region and kept). "" in manifests written before it existed.
  std::string digest;
  bool operator==(const Segment&) const = default;
};

// A composite's id, from its segments' lengths and digests (composite_id_v2 below):
//   sha256("provisioner-composite-v2\n" + for each segment: "<length> <sha256 hex>\n")
// So it costs the small per-job parts, not the size of the base they reuse, and it is
// checkable: hash each byte range of the download, rebuild this text, hash it.
std::string composite_id(const std::vector<std::pair<std::uint64_t, std::string>>& lengths_and_digests);

// What a caller hands to put_composite(): a region of a stored artifact, or inline bytes that
// the store keeps as a small plain artifact of their own.
struct CompositePart {
  static CompositePart region(std::string sha256, std::uint64_t offset, std::uint64_t length) {
    return CompositePart{Segment::Kind::artifact, std::move(sha256), offset, length, {}};
  }
  static CompositePart bytes(std::string data) {
    return CompositePart{Segment::Kind::bytes, {}, 0, 0, std::move(data)};
  }
  Segment::Kind kind;
  std::string sha256;
  std::uint64_t offset;
  std::uint64_t length;
  std::string data;
};

struct CompositeManifest {
  std::string sha256;  // of the concatenated bytes
  std::uint64_t size = 0;
  std::vector<Segment> segments;
};

struct GcReport {
  std::size_t removed = 0;
  std::uint64_t bytes_freed = 0;
  std::size_t kept = 0;
};

// Reads up to `cap` bytes into `buf`; 0 means end of stream; an Error aborts the upload.
using ReadFn = std::function<Result<std::size_t>(char* buf, std::size_t cap)>;

// Thread-safe: every method only touches the file system, and every write lands by rename.
class ArtifactStore {
 public:
  explicit ArtifactStore(std::filesystem::path root);

  const std::filesystem::path& root() const { return root_; }

  Result<ArtifactInfo> put(std::string_view bytes);
  // Copies a file into the store (e.g. the maintenance ISO named in config).
  Result<ArtifactInfo> put_file(const std::filesystem::path& source,
                                std::optional<std::string> expected_sha256 = std::nullopt);
  // Streams an upload to disk, hashing on the way. `expected_sha256` may be "<hex>" or
  // "sha256:<hex>"; a mismatch is invalid_input, more than `max_bytes` is too_large, and in
  // both cases nothing is left behind.
  Result<ArtifactInfo> put_stream(const ReadFn& read,
                                  std::optional<std::string> expected_sha256,
                                  std::uint64_t max_bytes);
  // Registers a composite (the base ISO is read, never copied). Its id is composite_id() of
  // its segments: the bytes parts are hashed as they are stored, a region of a stored artifact
  // is hashed once and its digest kept (regions/), so a single-ISO job costs its own bytes.
  Result<ArtifactInfo> put_composite(const std::vector<CompositePart>& parts);
  // Reads a composite's bytes and checks them against its id (every segment's digest and the
  // id formula). A test and a tool's check; the controller never needs it.
  Status verify_composite(std::string_view id) const;

  // Plain or composite.
  bool exists(std::string_view sha256) const;
  Result<ArtifactInfo> stat(std::string_view sha256) const;
  Result<std::uint64_t> size(std::string_view sha256) const;
  // Path of a plain artifact's blob; nullopt for unknown or composite ids.
  std::optional<std::filesystem::path> path_of(std::string_view sha256) const;
  Result<CompositeManifest> composite(std::string_view sha256) const;

  // Removes plain and composite artifacts that are neither in `referenced` (nor needed by a
  // referenced composite) nor registered within `retention` of `now`; also stale temp files.
  Result<GcReport> gc(const std::set<std::string>& referenced, std::chrono::seconds retention,
                      std::chrono::system_clock::time_point now = std::chrono::system_clock::now());

  // Where a plain artifact with this id lives (whether or not it exists). For tooling and tests.
  std::filesystem::path blob_path(std::string_view sha256) const;
  std::filesystem::path manifest_path(std::string_view sha256) const;

 private:
  // SHA-256 of bytes [offset, offset + length) of a plain artifact, hashed once and kept in
  // regions/ (removed by gc with the artifact).
  Result<std::string> region_digest(const std::string& sha256, std::uint64_t offset, std::uint64_t length) const;
  std::filesystem::path root_;
};

// "sha256:<hex>" or "<hex>" (any case) → lowercase hex; nullopt when not a sha256.
std::optional<std::string> normalize_sha256(std::string_view digest);

}  // namespace provisioner::artifacts
