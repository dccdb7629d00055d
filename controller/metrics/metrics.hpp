#pragma once
// Counters and histograms rendered in the Prometheus text format for GET /metrics.
#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <tuple>

namespace provisioner {

class Metrics {
 public:
  void count_request(const std::string& method, const std::string& route, int status, double seconds);
  void count_transition(const std::string& from, const std::string& to);

  // `jobs_by_status` comes from the store at scrape time, so it is never stale.
  std::string render(const std::map<std::string, std::int64_t>& jobs_by_status) const;

 private:
  static constexpr std::array<double, 12> kBuckets = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                      0.05,   0.1,   0.25,   0.5,   1.0,  2.5};
  struct Histogram {
    std::array<std::uint64_t, kBuckets.size()> buckets{};
    std::uint64_t count = 0;
    double sum = 0;
  };
  mutable std::mutex mutex_;
  std::map<std::tuple<std::string, std::string, int>, std::uint64_t> requests_;
  std::map<std::string, Histogram> latency_;  // by route
  std::map<std::pair<std::string, std::string>, std::uint64_t> transitions_;
};

}  // namespace provisioner
