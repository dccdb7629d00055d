#include "controller/iso/maintenance_iso.hpp"

#include <nlohmann/json.hpp>

#include "common/atomic_file.hpp"
#include "controller/artifacts/artifact_store.hpp"

namespace provisioner {

Result<std::string> register_maintenance_iso(artifacts::ArtifactStore& store, const std::filesystem::path& iso,
                                             const std::filesystem::path& cache_file) {
  std::error_code ec;
  auto size = std::filesystem::file_size(iso, ec);
  if (ec) return make_error(ErrorKind::not_found, "maintenance ISO " + iso.string() + ": " + ec.message());
  auto mtime = std::filesystem::last_write_time(iso, ec).time_since_epoch().count();
  nlohmann::json key{{"path", std::filesystem::absolute(iso).string()}, {"size", size}, {"mtime", mtime}};
  if (auto cached = read_file(cache_file); cached) {
    auto j = nlohmann::json::parse(*cached, nullptr, false);
    if (j.is_object() && j.value("key", nlohmann::json()) == key && store.exists(j.value("sha256", "")))
      return j["sha256"].get<std::string>();
  }
  auto info = store.put_file(iso);
  if (!info) return info.error();
  write_file_atomically(cache_file, nlohmann::json{{"key", key}, {"sha256", info->sha256}}.dump());
  return info->sha256;
}

}  // namespace provisioner
