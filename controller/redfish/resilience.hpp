#pragma once
// The parts of the Redfish client that decide *when* to try again: backoff, Retry-After,
// a per-BMC circuit breaker, and the limits on concurrency. All time goes through a Clock
// and a Sleeper so tests run the real policy in milliseconds.
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <thread>

#include "common/clock.hpp"
#include "common/stop.hpp"

namespace provisioner::redfish {

class Sleeper {
 public:
  virtual ~Sleeper() = default;
  virtual void sleep_ms(std::int64_t ms) = 0;
  // The client's waits (Retry-After, task monitors, power polling, insert retries) go
  // through this: like sleep_ms, but false, and at once, when `stop` is requested (shutdown,
  // the job canceled). This default suits virtual-time sleepers in tests, whose sleep_ms
  // returns quickly anyway: it looks at the token before and after sleeping.
  virtual bool wait_ms(std::int64_t ms, const std::stop_token& stop) {
    if (stop.stop_requested()) return false;
    sleep_ms(ms);
    return !stop.stop_requested();
  }
};

class RealSleeper final : public Sleeper {
 public:
  void sleep_ms(std::int64_t ms) override {
    if (ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  }
  bool wait_ms(std::int64_t ms, const std::stop_token& stop) override {
    return sleep_unless_stopped(std::chrono::milliseconds(ms), stop);
  }
};

// Exponential backoff with a cap: base, 2*base, 4*base ... <= cap. No jitter on purpose:
// one controller talks to each BMC, so there is no thundering herd to spread, and
// deterministic delays keep the recorded sequences in tests exact.
std::int64_t backoff_delay_ms(int attempt, std::int64_t base_ms, std::int64_t cap_ms);

// Retry-After as delta-seconds (what BMCs send) or an HTTP-date; nullopt when absent/unparseable.
// The result is clamped to [0, cap_ms].
std::optional<std::int64_t> parse_retry_after_ms(const std::string& value, std::int64_t now_unix_ms,
                                                 std::int64_t cap_ms);

// Per-BMC breaker. Closed: calls pass, consecutive failures counted. After `threshold`
// failures it opens for `open_ms`: calls fail fast, so a dead BMC stops being hammered and
// stops tying up threads. Then half-open: one trial call; success closes, failure re-opens.
class CircuitBreaker {
 public:
  enum class State { closed, open, half_open };
  CircuitBreaker(const Clock& clock, int threshold, std::int64_t open_ms)
      : clock_(clock), threshold_(threshold), open_ms_(open_ms) {}

  // True when a call may go out now. In half-open, only one caller gets true until it reports.
  bool allow();
  void record_success();
  void record_failure();
  State state() const;
  std::int64_t retry_in_ms() const;  // how long until the next trial while open

 private:
  const Clock& clock_;
  const int threshold_;
  const std::int64_t open_ms_;
  mutable std::mutex mu_;
  State state_ = State::closed;
  int failures_ = 0;
  std::int64_t opened_at_ = 0;
  bool trial_in_flight_ = false;
};

// Counting semaphore: caps requests in flight across every BMC (sockets, threads).
class ConcurrencyLimiter {
 public:
  explicit ConcurrencyLimiter(int limit) : free_(limit < 1 ? 1 : limit) {}
  void acquire();
  void release();
  class Guard {
   public:
    explicit Guard(ConcurrencyLimiter& l) : l_(l) { l_.acquire(); }
    ~Guard() { l_.release(); }
    Guard(const Guard&) = delete;
    Guard& operator=(const Guard&) = delete;

   private:
    ConcurrencyLimiter& l_;
  };

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int free_;
};

// Shared per-BMC state keyed by address: the "one operation at a time" mutex and the
// breaker. Entries live as long as the registry; a fleet is thousands, not millions.
class BmcRegistry {
 public:
  struct Entry {
    Entry(const Clock& clock, int threshold, std::int64_t open_ms) : breaker(clock, threshold, open_ms) {}
    std::mutex operation;  // held for a whole BmcClient operation
    CircuitBreaker breaker;
  };
  BmcRegistry(const Clock& clock, int breaker_threshold, std::int64_t breaker_open_ms)
      : clock_(clock), threshold_(breaker_threshold), open_ms_(breaker_open_ms) {}
  Entry& get(const std::string& address);

 private:
  const Clock& clock_;
  int threshold_;
  std::int64_t open_ms_;
  std::mutex mu_;
  std::map<std::string, std::unique_ptr<Entry>> entries_;
};

}  // namespace provisioner::redfish
