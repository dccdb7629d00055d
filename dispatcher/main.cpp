// provisioner-dispatcher: runs inside the maintenance OS. See README.md for usage and exit codes.
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "dispatcher/dispatcher.hpp"
#include "dispatcher/cmdline.hpp"
#include "dispatcher/inventory.hpp"
#include "common/atomic_file.hpp"

using namespace provisioner;
using namespace provisioner::dispatcher;

namespace {

void usage() {
  std::cerr << "usage:\n"
               "  provisioner-dispatcher [run] [--cmdline FILE] [--by-label DIR] [--run-dir DIR]\n"
               "      [--mount-dir DIR] [--download-dir DIR] [--blkid PATH|''] [--bus ADDRESS] [--wait SECONDS]\n"
               "  provisioner-dispatcher report --status running|success|failed [--unit UNIT] [--run-dir DIR]\n"
               "      [--deadline SECONDS] [--no-journal]\n"
               "  provisioner-dispatcher flush [--run-dir DIR] [--deadline SECONDS]\n";
}

std::string env_or(const char* name, std::string fallback = {}) {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  std::string command = "run";
  if (!args.empty() && args[0].rfind("--", 0) != 0) {
    command = args[0];
    args.erase(args.begin());
  }
  RunOptions run;
  ReportOptions report;
  std::int64_t flush_deadline_s = 900;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= args.size()) {
        std::cerr << a << " needs a value\n";
        std::exit(kExitUsage);
      }
      return args[++i];
    };
    auto seconds = [&]() -> std::int64_t {
      auto v = value();
      try {
        return std::stoll(v);
      } catch (...) {
        std::cerr << a << ": not a number\n";
        std::exit(kExitUsage);
      }
    };
    if (a == "--cmdline") run.discovery.cmdline_file = value();
    else if (a == "--by-label") run.discovery.by_label_dir = value();
    else if (a == "--run-dir") run.run_dir = report.run_dir = value();
    else if (a == "--mount-dir") run.discovery.mount_dir = value();
    else if (a == "--download-dir") run.discovery.download_dir = value();
    else if (a == "--blkid") run.discovery.blkid = value();
    else if (a == "--bus") run.bus_address = value();
    else if (a == "--wait") run.discover_wait_ms = seconds() * 1000;
    else if (a == "--status") report.status = value();
    else if (a == "--unit") report.unit = value();
    else if (a == "--deadline") report.delivery_ms = (flush_deadline_s = seconds()) * 1000;
    else if (a == "--no-journal") report.with_journal = false;
    else if (a == "-h" || a == "--help") {
      usage();
      return kExitOk;
    } else {
      std::cerr << "unknown argument " << a << "\n";
      usage();
      return kExitUsage;
    }
  }
  SystemClock clock;
  SleepFn sleep = [](std::int64_t ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); };

  if (command == "run") {
    // A network boot for inspection: report what this machine has, then boot its disk.
    if (auto text = read_file(run.discovery.cmdline_file)) {
      auto opts = provision_options(parse_kernel_cmdline(*text));
      if (opts.inspect_url) {
        InspectOptions inspect;
        inspect.url = *opts.inspect_url;
        inspect.token = opts.inspect_token.value_or("");
        return run_inspect(inspect, clock, sleep);
      }
    }
    SystemMounter mounter;
    return run_dispatcher(run, mounter, clock, sleep);
  }
  if (command == "report") {
    // OnFailure= handlers get the failed unit in MONITOR_UNIT (systemd >= 251).
    if (report.unit.empty()) report.unit = env_or("MONITOR_UNIT");
    if (report.status.empty() || report.unit.empty()) {
      usage();
      return kExitUsage;
    }
    std::string monitor;
    for (const char* k : {"MONITOR_SERVICE_RESULT", "MONITOR_EXIT_CODE", "MONITOR_EXIT_STATUS"})
      if (auto v = env_or(k); !v.empty()) monitor += std::string(k) + "=" + v + " ";
    if (!monitor.empty()) report.extra_log = monitor + "\n";
    return run_report(report, clock, sleep);
  }
  if (command == "flush") return run_flush(report.run_dir, flush_deadline_s * 1000, clock, sleep);
  usage();
  return kExitUsage;
}
