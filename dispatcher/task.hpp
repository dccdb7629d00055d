#pragma once
// A task as read from a mounted task medium (layout: controller/iso/README.md).
#include <filesystem>
#include <map>
#include <string>

#include <nlohmann/json.hpp>

#include "common/result.hpp"

namespace provisioner::dispatcher {

// Mirrors controller/iso/task_iso.hpp (the dispatcher must not link controller code).
inline constexpr std::string_view kTaskVolumeLabel = "CIDATA";
inline constexpr std::string_view kTaskMarkerName = "provisioner-task";
inline constexpr std::string_view kTaskMarkerFirstLine = "provisioner-task-iso 1";

struct Task {
  std::filesystem::path root;  // where the medium is mounted (read-only)
  std::string job_id;
  std::string webhook_url;     // POST target, already ends in /status-webhook/<serial>
  std::string signing_key;     // secret: never logged
  std::string signing_key_id;
  nlohmann::json recipe;
  // Registry credentials the controller issued for this job (job.json "registry_auth":
  // {"host:port": "<token>"}): secrets, never logged.
  std::map<std::string, std::string> registry_auth;
  // job.json "after_success": "reboot": no BMC will reset this machine (it booted from the
  // network), so the maintenance OS reboots itself once its success report is delivered.
  bool reboot_after_success = false;
};

// True when `root` holds the marker with a first line we understand.
bool has_task_marker(const std::filesystem::path& root);

// Reads marker, job.json and recipe.json and validates the recipe against the schema carried
// on the medium (/recipe.schema.json). Errors are invalid_input with a reason that never
// contains the key.
Result<Task> read_task(const std::filesystem::path& root);

// Only marker + job.json (recipe left null): enough to report a bad recipe to the controller.
Result<Task> read_task_job(const std::filesystem::path& root);

}  // namespace provisioner::dispatcher
