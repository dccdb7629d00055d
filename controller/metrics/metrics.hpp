#pragma once
// Counters and histograms rendered in the Prometheus text format for GET /metrics.
#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

namespace provisioner {

class Metrics {
 public:
  // The HTTP label values come from fixed sets, so a client cannot grow the series without
  // bound: a method outside kHttpMethods and a route not declared here are counted as `other`.
  static constexpr std::array<std::string_view, 7> kHttpMethods = {"GET",    "HEAD",    "POST", "PUT",
                                                                   "PATCH",  "DELETE",  "OPTIONS"};
  void declare_routes(const std::vector<std::string>& route_templates);  // "/api/v1/jobs/{id}"

  void count_request(const std::string& method, const std::string& route, int status, double seconds);
  void count_transition(const std::string& from, const std::string& to);

  // `jobs_by_status` comes from the store at scrape time, so it is never stale.
  std::string render(const std::map<std::string, std::int64_t>& jobs_by_status) const;

  // A label value as the text format needs it: backslash, double quote and newline escaped.
  static std::string escape_label_value(std::string_view value);

 private:
  static constexpr std::array<double, 12> kBuckets = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                      0.05,   0.1,   0.25,   0.5,   1.0,  2.5};
  struct Histogram {
    std::array<std::uint64_t, kBuckets.size()> buckets{};
    std::uint64_t count = 0;
    double sum = 0;
  };
  mutable std::mutex mutex_;
  std::set<std::string, std::less<>> routes_;  // declared route templates
  std::map<std::tuple<std::string, std::string, int>, std::uint64_t> requests_;
  std::map<std::string, Histogram> latency_;  // by route
  std::map<std::pair<std::string, std::string>, std::uint64_t> transitions_;
};

}  // namespace provisioner
