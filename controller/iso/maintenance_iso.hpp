#pragma once
// Registers the maintenance ISO named in the config as an artifact. Hashing a 1 GiB ISO takes
// seconds, so the digest is remembered against (path, size, mtime) and reused at restart.
#include <filesystem>
#include <string>

#include "common/result.hpp"

namespace provisioner {

namespace artifacts {
class ArtifactStore;
}

// Returns the sha256 of the registered ISO.
Result<std::string> register_maintenance_iso(artifacts::ArtifactStore& store, const std::filesystem::path& iso,
                                             const std::filesystem::path& cache_file);

}  // namespace provisioner
