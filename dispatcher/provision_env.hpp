#pragma once
// What the dispatcher hands to the step units: files under /run/provision/ (the contract in
// ARCHITECTURE.md). Units read only these, never the task medium, so a step behaves the same
// whichever way the task arrived.
#include <filesystem>
#include <map>
#include <string>
#include <string_view>

#include "common/result.hpp"
#include "dispatcher/task.hpp"

namespace provisioner::dispatcher {

// 'value' with every ' written as '\'' — read back the same by bash `source` and by systemd
// EnvironmentFile=.
std::string shell_quote(std::string_view value);

// Parses KEY=value lines as written by write_run_files (single-quoted, '\'' escapes, plain
// words, # comments). Not a shell: no expansion of any kind.
Result<std::map<std::string, std::string>> parse_env_text(std::string_view text);

// recipe.env: every scalar a step needs, always all keys (empty when the recipe lacks one),
// so scripts under `set -u` never trip on a missing variable.
std::string recipe_env_text(const Task& task);

// layout.json: {"disk", "boot_mode", "partitions": [...]}; the recipe's partition_layout, or
// the default (ESP 512 MiB + ext4 root) when it has none.
std::string layout_json_text(const Task& task);

// registry-auth.json (mode 0600), the containers-auth.json the image step hands skopeo:
// the controller-issued token for its own registry (job.json), and `secrets.registry_auth`
// ("user:password") for the registry of image.oci. Empty when there is neither.
std::string registry_auth_json_text(const Task& task);

// webhook.env (mode 0600): WEBHOOK_URL, WEBHOOK_KEY, WEBHOOK_KEY_ID, JOB_ID.
std::string webhook_env_text(const Task& task);

// Writes everything under run_dir, each file atomically: recipe.env, layout.json, recipe.json,
// webhook.env (0600), secrets.env (0600), registry-auth.json (0600, when any), user-data, meta-data, network-config, unattend.xml,
// ks.cfg (those present on the medium or in the recipe), files/<name> (recipe files[]).
Status write_run_files(const Task& task, const std::filesystem::path& run_dir);

struct WebhookConfig {
  std::string url;
  std::string key;  // secret
  std::string key_id;
  std::string job_id;
};
Result<WebhookConfig> read_webhook_env(const std::filesystem::path& run_dir);

}  // namespace provisioner::dispatcher
