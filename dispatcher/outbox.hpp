#pragma once
// Durable webhook delivery. A report is first spooled as a file under the outbox directory
// (/run/provision/outbox), then delivered oldest first. Every attempt is signed afresh with
// the current timestamp, because the controller refuses a signature it has seen (409) and a
// timestamp outside its skew window (401). The controller's Date header corrects a wrong
// maintenance-OS clock (no NTP at boot is common).
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>

#include "common/clock.hpp"
#include "common/result.hpp"
#include "common/webhook.hpp"
#include "dispatcher/provision_env.hpp"

namespace provisioner::dispatcher {

struct RetryPolicy {
  std::int64_t initial_backoff_ms = 1000;
  std::int64_t max_backoff_ms = 30000;
  int request_timeout_ms = 10000;
};

struct FlushOutcome {
  int delivered = 0;
  int rejected = 0;  // answered 4xx other than 401/408/429: kept under outbox/rejected/
  int pending = 0;   // still spooled when flush returned (the deadline came)
};

class WebhookOutbox {
 public:
  using SleepFn = std::function<void(std::int64_t ms)>;
  WebhookOutbox(std::filesystem::path dir, WebhookConfig config, const Clock& clock, SleepFn sleep,
                RetryPolicy policy = {});

  // Spools the report (atomically) and returns the spool file.
  Result<std::filesystem::path> enqueue(const WebhookReport& report);

  // Delivers spooled reports in order until none is left or `deadline_ms` (unix ms) passes.
  // The deadline is overall: no attempt starts after it and each attempt's HTTP deadline is
  // min(request_timeout_ms, time left), so flush returns by then (plus the clock's rounding).
  // Only one process flushes at a time (flock on outbox/.lock); others wait for it, until the
  // deadline: a flusher that cannot get the lock by then sends nothing (all stays pending).
  FlushOutcome flush(std::int64_t deadline_ms);

  std::int64_t clock_offset_seconds() const { return offset_s_; }

 private:
  enum class Attempt { delivered, rejected, retry };
  Attempt deliver_once(const std::string& body, int timeout_ms);

  std::filesystem::path dir_;
  WebhookConfig config_;
  const Clock& clock_;
  SleepFn sleep_;
  RetryPolicy policy_;
  std::int64_t offset_s_ = 0;  // controller time minus ours, learned from Date headers
};

}  // namespace provisioner::dispatcher
