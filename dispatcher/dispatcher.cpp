#include "dispatcher/dispatcher.hpp"

#include <iostream>

#include "common/atomic_file.hpp"
#include "common/webhook.hpp"
#include "dispatcher/journal_tail.hpp"
#include "dispatcher/outbox.hpp"
#include "dispatcher/provision_env.hpp"
#include "dispatcher/systemd_bus.hpp"

namespace provisioner::dispatcher {

namespace fs = std::filesystem;

namespace {

// Plain lines on stderr: the journal adds time and unit. Never a key or a secret here.
void say(const std::string& line) { std::cerr << "provisioner-dispatcher: " << line << "\n" << std::flush; }

WebhookConfig webhook_config(const Task& task) {
  return {task.webhook_url, task.signing_key, task.signing_key_id, task.job_id};
}

// Spools a report and tries to deliver it until `delivery_ms` from now.
FlushOutcome send(const fs::path& run_dir, const WebhookConfig& config, const WebhookReport& report,
                  std::int64_t delivery_ms, const Clock& clock, const SleepFn& sleep) {
  WebhookOutbox outbox(run_dir / "outbox", config, clock, sleep);
  if (auto spooled = outbox.enqueue(report); !spooled) {
    say("cannot spool the report: " + spooled.error().message);
  }
  return outbox.flush(clock.now_ms() + delivery_ms);
}

void mark_final(const fs::path& run_dir, const std::string& status, const std::string& unit) {
  std::error_code ec;
  fs::create_directories(run_dir, ec);
  // The marker only stops a second report of the same end; the report itself still goes out.
  if (auto s = write_file_atomically(run_dir / "final-status", "STATUS=" + status + "\nUNIT=" + unit + "\n", 0644); !s)
    say("cannot write " + (run_dir / "final-status").string() + ": " + s.error().message);
}

int exit_for_discovery(const Error& e) {
  switch (e.kind) {
    case ErrorKind::not_found: return kExitNoTask;
    case ErrorKind::invalid_input: return kExitBadTask;
    case ErrorKind::conflict:
    case ErrorKind::unavailable:
    case ErrorKind::too_large: return kExitDownload;
    default: return kExitMount;
  }
}

}  // namespace

int run_dispatcher(const RunOptions& options, Mounter& mounter, const Clock& clock, const SleepFn& sleep) {
  const std::int64_t give_up = clock.now_ms() + options.discover_wait_ms;
  Result<DiscoveredTask> found = make_error(ErrorKind::not_found, "not searched yet");
  for (;;) {
    found = discover_task_once(options.discovery, mounter);
    if (found) break;
    auto kind = found.error().kind;
    bool transient = kind == ErrorKind::not_found || kind == ErrorKind::unavailable || kind == ErrorKind::internal;
    if (!transient || clock.now_ms() >= give_up) break;
    say("no task yet (" + found.error().message + "); retrying");
    sleep(options.discover_retry_ms);
  }
  if (!found) {
    say("no usable task: " + found.error().message);
    // A task whose recipe is bad still carries the job's key: tell the controller why.
    if (found.error().kind == ErrorKind::invalid_input) {
      auto job = read_task_job(options.discovery.mount_dir);
      if (job) {
        WebhookReport r{job->job_id, "failed", "provisioner-dispatcher", "provisioner-dispatcher", std::nullopt,
                        found.error().message.substr(0, 4000)};
        mark_final(options.run_dir, "failed", "provisioner-dispatcher");
        send(options.run_dir, webhook_config(*job), r, options.running_delivery_ms, clock, sleep);
      }
    }
    return exit_for_discovery(found.error());
  }
  const Task& task = found->task;
  say("task for job " + task.job_id + " from " + found->source);

  if (auto w = write_run_files(task, options.run_dir); !w) {
    say("cannot write " + options.run_dir.string() + ": " + w.error().message);
    WebhookReport r{task.job_id, "failed", "provisioner-dispatcher", "provisioner-dispatcher", std::nullopt,
                    "cannot write run files: " + w.error().message};
    send(options.run_dir, webhook_config(task), r, options.running_delivery_ms, clock, sleep);
    return kExitWriteRun;
  }
  std::error_code ec;
  fs::remove(options.run_dir / "final-status", ec);  // a fresh run has no outcome yet

  const std::string target = task.recipe["task_target"].get<std::string>();
  WebhookReport running{task.job_id, "running", target, "", 0, ""};
  auto sent = send(options.run_dir, webhook_config(task), running, options.running_delivery_ms, clock, sleep);
  if (sent.pending > 0) say("controller not reachable yet; the running report stays spooled");

  auto manager = SystemdManager::connect(options.bus_address);
  if (!manager) {
    say(manager.error().message);
    return kExitBus;
  }
  std::int64_t timeout_s = options.default_install_timeout_s;
  if (task.recipe.contains("/timeouts/install"_json_pointer))
    timeout_s = task.recipe.at("/timeouts/install"_json_pointer).get<std::int64_t>();
  say("starting " + target);
  auto outcome = (*manager)->start_unit_and_wait(target, options.start_mode, clock.now_ms() + timeout_s * 1000,
                                                 [](const JobOutcome& job) {
                                                   say("job for " + job.unit + " finished: " + job.result);
                                                 });
  if (!outcome) {
    say(outcome.error().message);
    WebhookReport r{task.job_id, "failed", target, target, std::nullopt, outcome.error().message};
    mark_final(options.run_dir, "failed", target);
    send(options.run_dir, webhook_config(task), r, options.running_delivery_ms, clock, sleep);
    return kExitBus;
  }
  if (outcome->ok()) {
    say(target + " reached");
    return kExitOk;
  }
  // The failing step's OnFailure= handler normally reports (with the step's name and log).
  // When none did — a unit missing, a dependency without a handler, our own timeout — report
  // the target's failure so the controller never waits forever.
  const std::int64_t grace_end = clock.now_ms() + options.failure_report_grace_ms;
  while (!fs::exists(options.run_dir / "final-status", ec) && clock.now_ms() < grace_end) sleep(500);
  if (!fs::exists(options.run_dir / "final-status", ec)) {
    std::string why = target + " ended with result " + outcome->result;
    WebhookReport r{task.job_id, "failed", target, target, std::nullopt, why};
    mark_final(options.run_dir, "failed", target);
    send(options.run_dir, webhook_config(task), r, options.running_delivery_ms, clock, sleep);
  }
  say(target + " failed: " + outcome->result);
  return outcome->result == kDispatcherTimeout ? kExitTargetTimeout : kExitTargetFailed;
}

int run_report(const ReportOptions& options, const Clock& clock, const SleepFn& sleep) {
  if (options.status != "running" && options.status != "success" && options.status != "failed") {
    say("--status must be running, success or failed");
    return kExitUsage;
  }
  auto config = read_webhook_env(options.run_dir);
  if (!config) {
    say("cannot report: " + config.error().message);
    return kExitNoWebhookConfig;
  }
  if (options.status == "failed" && options.check_unit_state && options.unit.find('.') != std::string::npos) {
    if (auto manager = SystemdManager::connect(options.bus_address)) {
      auto state = (*manager)->active_state(options.unit);
      if (state && *state != "failed") {
        say(options.unit + " is " + *state + ", not failed: it only missed a failed dependency; not reported");
        return kExitOk;
      }
    }
  }
  WebhookReport report;
  report.job_id = config->job_id;
  report.status = options.status;
  report.step = options.unit;
  if (options.status == "success") report.progress = 100;
  if (options.status == "failed") {
    report.failed_step = options.unit;
    std::string tail = options.with_journal ? journal_tail(options.unit, 40, 8192, options.journal_dir) : "";
    report.log_tail = options.extra_log + tail;
    if (report.log_tail.size() > 12000) {
      std::size_t cut = report.log_tail.size() - 12000;
      while (cut < report.log_tail.size() && (static_cast<unsigned char>(report.log_tail[cut]) & 0xC0) == 0x80) ++cut;
      report.log_tail.erase(0, cut);
    }
  }
  if (options.status != "running") mark_final(options.run_dir, options.status, options.unit);
  auto out = send(options.run_dir, *config, report, options.delivery_ms, clock, sleep);
  say("report " + options.status + " for " + options.unit + ": delivered " + std::to_string(out.delivered) +
      ", rejected " + std::to_string(out.rejected) + ", pending " + std::to_string(out.pending));
  // The controller took the success: what provision-reboot-after-success.service waits for.
  // A rejected report (clock skew, a job the controller no longer runs) is no success: a
  // network-booted machine that rebooted then would be handed its install again.
  if (options.status == "success" && out.delivered > 0 && out.rejected == 0 && out.pending == 0) {
    if (auto s = write_file_atomically(options.run_dir / "success-delivered", "", 0644); !s)
      say("cannot write " + (options.run_dir / "success-delivered").string() + ": " + s.error().message);
  }
  return out.pending > 0 ? kExitUndelivered : kExitOk;
}

int run_flush(const fs::path& run_dir, std::int64_t delivery_ms, const Clock& clock, const SleepFn& sleep) {
  auto config = read_webhook_env(run_dir);
  if (!config) {
    say("cannot flush: " + config.error().message);
    return kExitNoWebhookConfig;
  }
  WebhookOutbox outbox(run_dir / "outbox", *config, clock, sleep);
  auto out = outbox.flush(clock.now_ms() + delivery_ms);
  return out.pending > 0 ? kExitUndelivered : kExitOk;
}

}  // namespace provisioner::dispatcher
