#pragma once
// The maintenance ISO servers boot into: registered from a path in the config, or uploaded
// through POST /api/v1/artifacts?purpose=maintenance-iso. The current one is a store setting,
// so every job started afterwards uses it and garbage collection never removes it.
#include <filesystem>
#include <optional>
#include <string>

#include "common/result.hpp"

namespace provisioner {

class Store;
namespace artifacts {
class ArtifactStore;
}

class MaintenanceIso {
 public:
  MaintenanceIso(Store& store, artifacts::ArtifactStore& artifacts);

  // Hashing a 1 GiB ISO takes seconds, so its digest is remembered against (path, size,
  // mtime) in `cache_file` and reused at restart. Returns the sha256 and makes it current.
  Result<std::string> register_file(const std::filesystem::path& iso, const std::filesystem::path& cache_file);
  // Makes an artifact already in the store the current maintenance ISO.
  Status set_current(const std::string& sha256);
  std::optional<std::string> current() const;

 private:
  Store& store_;
  artifacts::ArtifactStore& artifacts_;
};

}  // namespace provisioner
