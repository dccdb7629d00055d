#pragma once
// The two jobs of provisioner-dispatcher (exit codes: README.md):
//   run     find the task, check it, write /run/provision/*, report "running", start
//           recipe.task_target and follow it to the end.
//   report  the OnSuccess=/OnFailure= side: sign with the job's key and deliver durably.
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>

#include "common/clock.hpp"
#include "dispatcher/discovery.hpp"

namespace provisioner::dispatcher {

enum ExitCode : int {
  kExitOk = 0,
  kExitUsage = 2,
  kExitNoTask = 10,          // nothing found before the discovery deadline
  kExitBadTask = 11,         // marker/job.json/recipe unusable, or provision.task= without sha256
  kExitDownload = 12,        // task download failed until the deadline, or sha256 mismatch
  kExitMount = 13,           // a task medium was there but could not be mounted
  kExitWriteRun = 14,        // /run/provision could not be written
  kExitBus = 15,             // D-Bus / StartUnit failed
  kExitTargetFailed = 16,    // the target's job ended with a result other than "done"
  kExitTargetTimeout = 17,   // recipe timeouts.install (or the default) passed
  kExitUndelivered = 20,     // report: still spooled when the delivery deadline passed
  kExitNoWebhookConfig = 21, // report: /run/provision/webhook.env missing or unusable
};

using SleepFn = std::function<void(std::int64_t ms)>;

struct RunOptions {
  DiscoveryPaths discovery;
  std::filesystem::path run_dir = "/run/provision";
  std::optional<std::string> bus_address;  // nullopt: the system bus
  std::int64_t discover_wait_ms = 300000;  // virtual media may show up late after boot
  std::int64_t discover_retry_ms = 3000;
  std::int64_t running_delivery_ms = 60000;  // then go on; the report stays spooled
  std::int64_t default_install_timeout_s = 4 * 3600;
  std::int64_t failure_report_grace_ms = 15000;  // wait for OnFailure= handlers to report
  std::string start_mode = "replace";
};

int run_dispatcher(const RunOptions& options, Mounter& mounter, const Clock& clock, const SleepFn& sleep);

struct ReportOptions {
  std::filesystem::path run_dir = "/run/provision";
  std::string status;  // running | success | failed
  std::string unit;    // the unit the report is about (%n / %i / $MONITOR_UNIT)
  std::optional<std::string> journal_dir;  // tests
  bool with_journal = true;
  std::int64_t delivery_ms = 15 * 60 * 1000;
  std::string extra_log;  // prepended to log_tail (MONITOR_* from systemd)
  // systemd (257 seen) also runs OnFailure= handlers of units whose start job merely failed
  // as a dependency of the failed step. Those never ran: their ActiveState is not "failed".
  // Only the unit that really failed is reported; unknown state → report anyway.
  bool check_unit_state = true;
  std::optional<std::string> bus_address;  // nullopt: the system bus
};

int run_report(const ReportOptions& options, const Clock& clock, const SleepFn& sleep);

// Delivers whatever is spooled (e.g. from a timer after the network came back).
int run_flush(const std::filesystem::path& run_dir, std::int64_t delivery_ms, const Clock& clock, const SleepFn& sleep);

}  // namespace provisioner::dispatcher
