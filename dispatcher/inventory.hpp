#pragma once
// Inspection: what a machine has, read from /proc and /sys, reported to the controller (a
// network boot in [pxe] discover = "inspect" mode). The machine then boots its disk.
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "common/clock.hpp"

namespace provisioner::dispatcher {

using SleepFn = std::function<void(std::int64_t ms)>;

// {"cpus", "memory_bytes", "disks": [{name, size_bytes, model, serial, rotational}],
//  "nics": [{name, mac}], "smbios": {serial, uuid, vendor, product}}. `root` is "/" but for tests.
// Only physical disks and NICs (loop, ram, zram, optical drives, lo and virtual links left out).
nlohmann::json collect_inventory(const std::filesystem::path& root = "/");

struct InspectOptions {
  std::string url;    // provision.inspect
  std::string token;  // provision.inspect_token: a secret, never logged
  std::filesystem::path root = "/";
  std::int64_t deadline_ms = 10 * 60 * 1000;  // keep trying that long (the network may be slow to come)
  std::string reboot_command = "systemctl --no-block reboot";
};

// Collects, POSTs (retrying until the deadline), and reboots once the controller took it.
// 0 on success; non-zero when the report never got through (no reboot then: the machine
// stays up for someone to look).
int run_inspect(const InspectOptions& options, const Clock& clock, const SleepFn& sleep);

}  // namespace provisioner::dispatcher
