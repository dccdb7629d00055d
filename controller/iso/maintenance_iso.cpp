#include "controller/iso/maintenance_iso.hpp"

#include <nlohmann/json.hpp>

#include "common/atomic_file.hpp"
#include "controller/artifacts/artifact_store.hpp"
#include "controller/store/store.hpp"

namespace provisioner {

namespace {
constexpr const char* kSetting = "maintenance_iso_sha256";
}

MaintenanceIso::MaintenanceIso(Store& store, artifacts::ArtifactStore& artifacts)
    : store_(store), artifacts_(artifacts) {}

Result<std::string> MaintenanceIso::register_file(const std::filesystem::path& iso,
                                                  const std::filesystem::path& cache_file) {
  std::error_code ec;
  auto size = std::filesystem::file_size(iso, ec);
  if (ec) return make_error(ErrorKind::not_found, "maintenance ISO " + iso.string() + ": " + ec.message());
  auto mtime = std::filesystem::last_write_time(iso, ec).time_since_epoch().count();
  nlohmann::json key{{"path", std::filesystem::absolute(iso).string()}, {"size", size}, {"mtime", mtime}};
  std::string sha;
  if (auto cached = read_file(cache_file); cached) {
    auto j = nlohmann::json::parse(*cached, nullptr, false);
    if (j.is_object() && j.value("key", nlohmann::json()) == key && artifacts_.exists(j.value("sha256", "")))
      sha = j["sha256"].get<std::string>();
  }
  if (sha.empty()) {
    auto info = artifacts_.put_file(iso);
    if (!info) return info.error();
    sha = info->sha256;
    // The cache only saves the next start a re-hash; without it the ISO is still right.
    (void)write_file_atomically(cache_file, nlohmann::json{{"key", key}, {"sha256", sha}}.dump());
  }
  if (auto s = set_current(sha); !s) return s.error();
  return sha;
}

Status MaintenanceIso::set_current(const std::string& sha256) {
  if (!artifacts_.exists(sha256)) return make_error(ErrorKind::not_found, "no artifact " + sha256);
  return store_.set_setting(kSetting, sha256);
}

std::optional<std::string> MaintenanceIso::current() const {
  auto v = store_.get_setting(kSetting);
  if (!v || !*v || !artifacts_.exists(**v)) return std::nullopt;
  return **v;
}

}  // namespace provisioner
