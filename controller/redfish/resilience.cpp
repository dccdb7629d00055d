#include "controller/redfish/resilience.hpp"

#include <algorithm>
#include <cctype>
#include <ctime>

namespace provisioner::redfish {

std::int64_t backoff_delay_ms(int attempt, std::int64_t base_ms, std::int64_t cap_ms) {
  if (attempt < 0) attempt = 0;
  std::int64_t d = base_ms;
  for (int i = 0; i < attempt && d < cap_ms; ++i) d *= 2;
  return std::min(d, cap_ms);
}

std::optional<std::int64_t> parse_retry_after_ms(const std::string& value, std::int64_t now_unix_ms,
                                                 std::int64_t cap_ms) {
  std::string v;
  for (char c : value)
    if (!std::isspace(static_cast<unsigned char>(c)) || !v.empty()) v += c;
  while (!v.empty() && std::isspace(static_cast<unsigned char>(v.back()))) v.pop_back();
  if (v.empty()) return std::nullopt;
  if (std::all_of(v.begin(), v.end(), [](unsigned char c) { return std::isdigit(c); })) {
    if (v.size() > 9) return cap_ms;
    return std::clamp<std::int64_t>(std::stoll(v) * 1000, 0, cap_ms);
  }
  std::tm tm{};
  // IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT"
  if (!strptime(v.c_str(), "%a, %d %b %Y %H:%M:%S GMT", &tm)) return std::nullopt;
  std::int64_t at = static_cast<std::int64_t>(timegm(&tm)) * 1000;
  return std::clamp<std::int64_t>(at - now_unix_ms, 0, cap_ms);
}

bool CircuitBreaker::allow() {
  std::lock_guard lock(mu_);
  if (state_ == State::closed) return true;
  if (state_ == State::open) {
    if (clock_.now_ms() - opened_at_ < open_ms_) return false;
    state_ = State::half_open;
    trial_in_flight_ = false;
  }
  if (trial_in_flight_) return false;
  trial_in_flight_ = true;
  return true;
}

void CircuitBreaker::record_success() {
  std::lock_guard lock(mu_);
  state_ = State::closed;
  failures_ = 0;
  trial_in_flight_ = false;
}

void CircuitBreaker::record_failure() {
  std::lock_guard lock(mu_);
  trial_in_flight_ = false;
  if (state_ == State::half_open) {
    state_ = State::open;
    opened_at_ = clock_.now_ms();
    return;
  }
  if (++failures_ >= threshold_ && state_ == State::closed) {
    state_ = State::open;
    opened_at_ = clock_.now_ms();
  }
}

CircuitBreaker::State CircuitBreaker::state() const {
  std::lock_guard lock(mu_);
  if (state_ == State::open && clock_.now_ms() - opened_at_ >= open_ms_) return State::half_open;
  return state_;
}

std::int64_t CircuitBreaker::retry_in_ms() const {
  std::lock_guard lock(mu_);
  if (state_ != State::open) return 0;
  return std::max<std::int64_t>(0, open_ms_ - (clock_.now_ms() - opened_at_));
}

void ConcurrencyLimiter::acquire() {
  std::unique_lock lock(mu_);
  cv_.wait(lock, [&] { return free_ > 0; });
  --free_;
}

void ConcurrencyLimiter::release() {
  {
    std::lock_guard lock(mu_);
    ++free_;
  }
  cv_.notify_one();
}

BmcRegistry::Entry& BmcRegistry::get(const std::string& address) {
  std::lock_guard lock(mu_);
  auto& e = entries_[address];
  if (!e) e = std::make_unique<Entry>(clock_, threshold_, open_ms_);
  return *e;
}

}  // namespace provisioner::redfish
