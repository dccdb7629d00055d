#include "controller/metrics/metrics.hpp"

#include <sstream>

namespace provisioner {

namespace {
constexpr std::string_view kOther = "other";
}

std::string Metrics::escape_label_value(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

void Metrics::declare_routes(const std::vector<std::string>& route_templates) {
  std::lock_guard lock(mutex_);
  routes_.insert(route_templates.begin(), route_templates.end());
}

void Metrics::count_request(const std::string& method, const std::string& route, int status, double seconds) {
  bool known_method = false;
  for (auto m : kHttpMethods) known_method |= m == method;
  // A status outside 100..599 is no HTTP status: keep it from minting series too.
  if (status < 100 || status > 599) status = 0;
  std::lock_guard lock(mutex_);
  std::string route_label(routes_.count(route) ? std::string_view(route) : kOther);
  ++requests_[{known_method ? method : std::string(kOther), route_label, status}];
  auto& h = latency_[route_label];
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
  for (const auto& [status, n] : jobs_by_status) out << "provisioner_jobs{status=\"" << escape_label_value(status) << "\"} " << n << "\n";
  std::lock_guard lock(mutex_);
  out << "# HELP provisioner_job_transitions_total Job status transitions applied.\n"
         "# TYPE provisioner_job_transitions_total counter\n";
  for (const auto& [k, n] : transitions_)
    out << "provisioner_job_transitions_total{from=\"" << escape_label_value(k.first) << "\",to=\"" << escape_label_value(k.second) << "\"} " << n << "\n";
  out << "# HELP provisioner_http_requests_total HTTP requests answered.\n"
         "# TYPE provisioner_http_requests_total counter\n";
  for (const auto& [k, n] : requests_)
    out << "provisioner_http_requests_total{method=\"" << escape_label_value(std::get<0>(k)) << "\",route=\"" << escape_label_value(std::get<1>(k))
        << "\",code=\"" << std::get<2>(k) << "\"} " << n << "\n";
  out << "# HELP provisioner_http_request_duration_seconds Time to answer an HTTP request.\n"
         "# TYPE provisioner_http_request_duration_seconds histogram\n";
  for (const auto& [route_label, h] : latency_) {
    auto route = escape_label_value(route_label);
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
