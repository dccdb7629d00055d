// GET /metrics: HTTP labels come from fixed sets and every label value is escaped, so no
// client can mint series or break the Prometheus text format.
#include <gtest/gtest.h>

#include "controller/metrics/metrics.hpp"

using provisioner::Metrics;

namespace {
bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }
}  // namespace

TEST(Metrics, UnknownMethodsAndPathsAreCountedAsOther) {
  Metrics m;
  m.count_request("BREW", "/etc/\"passwd\"\nx", 404, 0.001);
  m.count_request("GET", "/api/v1/jobs/job_123", 404, 0.001);  // a path, not a route template
  auto text = m.render({});
  EXPECT_TRUE(contains(text, "provisioner_http_requests_total{method=\"other\",route=\"other\",code=\"404\"} 1"))
      << text;
  EXPECT_TRUE(contains(text, "provisioner_http_requests_total{method=\"GET\",route=\"other\",code=\"404\"} 1"))
      << text;
  EXPECT_FALSE(contains(text, "BREW")) << text;
  EXPECT_FALSE(contains(text, "passwd")) << text;
  EXPECT_FALSE(contains(text, "job_123")) << text;
}

TEST(Metrics, DeclaredRouteTemplatesAreTheirOwnLabel) {
  Metrics m;
  m.declare_routes({"/api/v1/jobs", "/api/v1/jobs/{id}"});
  m.count_request("GET", "/api/v1/jobs/{id}", 200, 0.001);
  m.count_request("GET", "/api/v1/jobs/{id}", 200, 0.001);
  m.count_request("DELETE", "/api/v1/jobs", 405, 0.001);
  auto text = m.render({});
  EXPECT_TRUE(contains(text, "{method=\"GET\",route=\"/api/v1/jobs/{id}\",code=\"200\"} 2")) << text;
  EXPECT_TRUE(contains(text, "{method=\"DELETE\",route=\"/api/v1/jobs\",code=\"405\"} 1")) << text;
  EXPECT_TRUE(contains(text, "provisioner_http_request_duration_seconds_count{route=\"/api/v1/jobs/{id}\"} 2"))
      << text;
}

TEST(Metrics, LabelValuesAreEscaped) {
  Metrics m;
  m.count_transition("a\"b", "c\\d\ne");
  auto text = m.render({{"odd\"status\n", 1}});
  EXPECT_TRUE(contains(text, R"(provisioner_job_transitions_total{from="a\"b",to="c\\d\ne"} 1)")) << text;
  EXPECT_TRUE(contains(text, R"(provisioner_jobs{status="odd\"status\n"} 1)")) << text;
  // Every sample is one line: no raw newline inside a label.
  for (std::size_t start = 0, end; (end = text.find('\n', start)) != std::string::npos; start = end + 1) {
    auto line = text.substr(start, end - start);
    if (line.empty() || line[0] == '#') continue;
    EXPECT_NE(line.find("} "), std::string::npos) << "a sample line cut short: " << line;
  }
  EXPECT_EQ(Metrics::escape_label_value("plain"), "plain");
  EXPECT_EQ(Metrics::escape_label_value("\\\"\n"), R"(\\\"\n)");
}
