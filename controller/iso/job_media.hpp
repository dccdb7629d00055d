#pragma once
// Per-job media assembly: builds what a job's server boots from and reads its task from, as
// content-addressed artifacts with the URLs to hand to a BMC or to iPXE.
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "common/result.hpp"
#include "controller/iso/task_iso.hpp"

namespace provisioner {

namespace artifacts {
class ArtifactStore;
}

struct MediaRef {
  std::string sha256;
  std::string url;
};

struct JobMedia {
  std::string mode;                  // dual-cd | cd-usb | single-iso | network | pxe
  std::optional<MediaRef> boot_iso;  // what the server boots: the maintenance ISO, or the single ISO
  std::optional<MediaRef> task_iso;  // the stand-alone task ISO (every mode but single-iso)

  nlohmann::json to_json() const;
  static JobMedia from_json(const nlohmann::json& j);
};

// pxe for a node's job (one without a BMC); else recipe.media_mode, else the server record's media_mode, else dual-cd.
std::string media_mode_for(const nlohmann::json& recipe, const nlohmann::json& server);

class MaintenanceIso;

struct JobMediaOptions {
  std::string artifact_base_url;  // "http://192.0.2.10:8081"
};

class JobMediaBuilder {
 public:
  JobMediaBuilder(artifacts::ArtifactStore& store, const MaintenanceIso& maintenance, JobMediaOptions options);

  // Same inputs → same artifacts (the ISO is deterministic and the store content-addressed),
  // so a build repeated after a crash reuses what the first one stored.
  Result<JobMedia> build(const iso::TaskIsoInputs& inputs, const std::string& mode) const;

  std::string url_of(const std::string& sha256, const std::string& name) const;
  const JobMediaOptions& options() const { return options_; }

 private:
  artifacts::ArtifactStore& store_;
  const MaintenanceIso& maintenance_;
  JobMediaOptions options_;
};

}  // namespace provisioner
