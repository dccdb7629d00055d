#pragma once
// A clock the test moves by hand.
#include <atomic>
#include <cstdint>

#include "common/clock.hpp"

namespace provisioner::test {

class ManualClock final : public Clock {
 public:
  explicit ManualClock(std::int64_t start_ms = 1'800'000'000'000) : now_(start_ms) {}
  std::int64_t now_ms() const override { return now_.load(); }
  void advance(std::int64_t ms) { now_ += ms; }

 private:
  std::atomic<std::int64_t> now_;
};

}  // namespace provisioner::test
