#pragma once
// Time as a dependency, so tests can drive it (ARCHITECTURE.md: no hidden global time).
#include <chrono>
#include <cstdint>
#include <string>

namespace provisioner {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual std::int64_t now_ms() const = 0;  // unix milliseconds
  std::int64_t now_seconds() const { return now_ms() / 1000; }
};

class SystemClock final : public Clock {
 public:
  std::int64_t now_ms() const override {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
};

// "2026-11-21T09:56:04.123Z"
std::string format_rfc3339_ms(std::int64_t unix_ms);

}  // namespace provisioner
