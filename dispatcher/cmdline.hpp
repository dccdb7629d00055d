#pragma once
// The kernel command line as the dispatcher sees it: the `provision.*` keys that tell it
// where its task is when no task medium is attached (PXE path, network mode).
#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace provisioner::dispatcher {

// Splits a kernel command line into key → value. Quoting follows the kernel: double quotes
// group spaces ("a=b c" or a="b c"), the quotes themselves are dropped. A bare word maps to
// "". A repeated key keeps its last value, as the kernel's own parameters do.
std::map<std::string, std::string> parse_kernel_cmdline(std::string_view text);

struct ProvisionCmdline {
  std::optional<std::string> task_url;     // provision.task=<URL of the task ISO>
  std::optional<std::string> task_sha256;  // provision.sha256=<hex> (required with task_url)
  std::optional<std::string> controller;   // provision.controller=<base URL>
  std::optional<std::string> serial;       // provision.serial=<serial> (overrides DMI)
  // Inspection (a network boot with [pxe] discover = "inspect"): report the inventory here,
  // with this token, then reboot. No task.
  std::optional<std::string> inspect_url;    // provision.inspect=<URL>
  std::optional<std::string> inspect_token;  // provision.inspect_token=<token>
};

ProvisionCmdline provision_options(const std::map<std::string, std::string>& cmdline);

}  // namespace provisioner::dispatcher
