#include "controller/metrics/metrics.hpp"

#include <sstream>

namespace provisioner {

void Metrics::count_request(const std::string& method, const std::string& route, int status, double seconds) {
  std::lock_guard lock(mutex_);
  ++requests_[{method, route, status}];
  auto& h = latency_[route];
  for (std::size_t i = 0; i < kBuckets.size(); ++i)
    if (seconds <= kBuckets[i]) ++h.buckets[i];
  ++h.count;
  h.sum += seconds;
}

void Metrics::count_transition(const std::string& from, const std::string& to) {
  std::lock_guard lock(mutex_);
  ++transitions_[{from, to}];
}

std::string Metrics::render(const std::map<std::string, std::int64_t>& jobs_by_status) const {
  std::ostringstream out;
  out << "# HELP provisioner_jobs Jobs by current status.\n# TYPE provisioner_jobs gauge\n";
  for (const auto& [status, n] : jobs_by_status) out << "provisioner_jobs{status=\"" << status << "\"} " << n << "\n";
  std::lock_guard lock(mutex_);
  out << "# HELP provisioner_job_transitions_total Job status transitions applied.\n"
         "# TYPE provisioner_job_transitions_total counter\n";
  for (const auto& [k, n] : transitions_)
    out << "provisioner_job_transitions_total{from=\"" << k.first << "\",to=\"" << k.second << "\"} " << n << "\n";
  out << "# HELP provisioner_http_requests_total HTTP requests answered.\n"
         "# TYPE provisioner_http_requests_total counter\n";
  for (const auto& [k, n] : requests_)
    out << "provisioner_http_requests_total{method=\"" << std::get<0>(k) << "\",route=\"" << std::get<1>(k)
        << "\",code=\"" << std::get<2>(k) << "\"} " << n << "\n";
  out << "# HELP provisioner_http_request_duration_seconds Time to answer an HTTP request.\n"
         "# TYPE provisioner_http_request_duration_seconds histogram\n";
  for (const auto& [route, h] : latency_) {
    for (std::size_t i = 0; i < kBuckets.size(); ++i)
      out << "provisioner_http_request_duration_seconds_bucket{route=\"" << route << "\",le=\"" << kBuckets[i]
          << "\"} " << h.buckets[i] << "\n";
    out << "provisioner_http_request_duration_seconds_bucket{route=\"" << route << "\",le=\"+Inf\"} " << h.count
        << "\n";
    out << "provisioner_http_request_duration_seconds_sum{route=\"" << route << "\"} " << h.sum << "\n";
    out << "provisioner_http_request_duration_seconds_count{route=\"" << route << "\"} " << h.count << "\n";
  }
  return out.str();
}

}  // namespace provisioner
