#pragma once
// Request bodies shared by the controller's integration tests.
#include <string>

#include <nlohmann/json.hpp>

namespace provisioner::test {

// Redfish pauses scaled down so a BMC flow against the mock BMC runs in well under a second.
inline constexpr const char* kFastRedfishToml =
    "[redfish]\npower_poll_ms = 20\nretry_base_ms = 20\nretry_cap_ms = 50\ninsert_retry_delay_ms = 20\n"
    "not_ready_delay_ms = 20\ntask_poll_ms = 20\nrequest_timeout_ms = 5000\nbreaker_open_ms = 300\n";

inline nlohmann::json linux_recipe() {
  return nlohmann::json::parse(R"({
    "task_target": "provision-linux.target",
    "target_disk": "/dev/vda",
    "boot_mode": "bios",
    "hostname": "node-1",
    "image": {"url": "http://127.0.0.1:1/rootfs.tar", "digest": "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"},
    "partition_layout": [{"size": "rest", "type_guid": "0fc63daf-8483-4772-8e79-3d69d8477de4", "format": "ext4", "label": "root"}]
  })");
}

inline std::string job_body(const std::string& serial = "SN-0001", nlohmann::json recipe = linux_recipe()) {
  return nlohmann::json{{"server", {{"serial", serial}}}, {"recipe", std::move(recipe)}}.dump();
}

}  // namespace provisioner::test
