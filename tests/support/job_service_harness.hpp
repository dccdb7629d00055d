#pragma once
// A job service on the in-memory store and a manual clock, for in-process tests of the job
// service and of what drives jobs (the BMC driver, the reconciler).
#include <string>
#include <vector>

#include "controller/jobs/job_service.hpp"
#include "controller/logging/logger.hpp"
#include "controller/metrics/metrics.hpp"
#include "controller/servers/server_service.hpp"
#include "tests/support/in_memory_store.hpp"
#include "tests/support/manual_clock.hpp"

namespace provisioner::test {

struct JobServiceHarness {
  explicit JobServiceHarness(std::string secret_key = std::string(32, '\x42'))
      : log(Logger::Format::text, "error"),
        servers(store, clock, log, secret_key),
        jobs(store, servers, clock, log, metrics, secret_key,
             JobServiceOptions{"/nonexistent-recipes", "http://127.0.0.1:1", 300, 500}) {}

  JobRecord record(const std::string& id) { return **store.get_job(id); }

  std::vector<std::string> phases(const std::string& id) {
    std::vector<std::string> out;
    auto events = store.job_events(id);  // named: a range-for over *temporary would dangle
    for (const auto& e : *events)
      if (e.kind == "phase") out.push_back(e.name);
    return out;
  }

  InMemoryStore store;
  ManualClock clock;
  Logger log;
  Metrics metrics;
  ServerService servers;
  JobService jobs;
};

}  // namespace provisioner::test
