// GET /api/v1/jobs?cursor=...: a cursor that does not fit a seq (huge, zero, not hex) is a
// 400 naming `cursor`, decoded without signed overflow.
#include <gtest/gtest.h>

#include "common/clock.hpp"
#include "controller/jobs/job_service.hpp"
#include "controller/logging/logger.hpp"
#include "controller/metrics/metrics.hpp"
#include "controller/servers/server_service.hpp"
#include "controller/store/sql_store.hpp"
#include "tests/support/controller_process.hpp"

using namespace provisioner;

namespace {

struct Jobs {
  test::TempDir dir;
  std::unique_ptr<SqlStore> store;
  SystemClock clock;
  Logger log{Logger::Format::text, "error"};
  Metrics metrics;
  std::string key = std::string(32, 'k');
  std::unique_ptr<ServerService> servers;
  std::unique_ptr<JobService> jobs;

  Jobs() {
    auto opened = SqlStore::open(dir.path() / "p.db");
    if (!opened) throw std::runtime_error(opened.error().message);
    store = std::move(*opened);
    servers = std::make_unique<ServerService>(*store, clock, log, key);
    jobs = std::make_unique<JobService>(*store, *servers, clock, log, metrics, key,
                                        JobServiceOptions{dir.path(), "http://127.0.0.1:1"});
  }

  Result<nlohmann::json> list_from(const std::string& cursor) {
    JobListQuery q;
    q.cursor = cursor;
    return jobs->list(q);
  }
};

bool names_cursor(const Error& e) {
  for (const auto& f : e.fields)
    if (f.path == "cursor") return true;
  return false;
}

}  // namespace

TEST(JobListCursor, OutOfRangeCursorsAre400NamingCursor) {
  Jobs j;
  for (const char* bad : {"cffffffffffffffff", "c8000000000000000", "c7fffffffffffffff0", "c0", "c", "c-1", "cG",
                          "x10"}) {
    auto r = j.list_from(bad);
    ASSERT_FALSE(r) << bad << " was accepted: " << r->dump();
    EXPECT_EQ(r.error().kind, ErrorKind::invalid_input) << bad;
    EXPECT_TRUE(names_cursor(r.error())) << bad << ": " << r.error().message;
  }
}

TEST(JobListCursor, CursorsUpToInt64MaxAreAccepted) {
  Jobs j;
  for (const char* good : {"c1", "c7fffffffffffffff", "cabc"}) {
    auto r = j.list_from(good);
    ASSERT_TRUE(r) << good << ": " << r.error().message;
    EXPECT_TRUE((*r)["jobs"].empty());
  }
}
