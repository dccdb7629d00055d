// The job service on the in-memory store with a manual clock: creation, cancel and the
// webhook's authentication and state changes, without a process, a socket or a file.
#include <gtest/gtest.h>

#include <string>

#include "common/webhook.hpp"
#include "tests/integration/controller/test_jobs.hpp"
#include "tests/support/job_service_harness.hpp"

using namespace provisioner;

namespace {

class JobServiceTest : public testing::Test, protected test::JobServiceHarness {
 protected:

  std::string create(const std::string& serial = "SN-1") {
    auto made = jobs.create(test::job_body(serial));
    EXPECT_TRUE(made.ok()) << (made.ok() ? "" : made.error().message);
    return made.ok() ? (*made)["id"].get<std::string>() : "";
  }

  // A report signed the way the dispatcher signs it, at the clock's "now" unless told.
  Result<nlohmann::json> report(const std::string& id, const std::string& body, const std::string& serial = "SN-1",
                                std::int64_t skew_seconds = 0, std::string key = "") {
    if (key.empty()) key = *jobs.webhook_key(record(id));
    auto ts = clock.now_seconds() + skew_seconds;
    return jobs.accept_webhook(serial, std::to_string(ts), sign_webhook(key, ts, body), body);
  }

};

std::string body(const std::string& id, const std::string& status, const std::string& extra = "") {
  return R"({"job_id":")" + id + R"(","status":")" + status + "\"" + extra + "}";
}

}  // namespace

TEST_F(JobServiceTest, ANewJobIsQueuedWithItsKeySealed) {
  auto id = create();
  auto j = record(id);
  EXPECT_EQ(j.status, JobStatus::queued);
  EXPECT_EQ(j.server_serial, "SN-1");
  auto key = jobs.webhook_key(j);
  ASSERT_TRUE(key.ok());
  EXPECT_EQ(j.webhook_key_sealed.find(*key), std::string::npos) << "the webhook key is stored sealed";
  auto bad = jobs.create(R"({"server":{"serial":"SN-2"},"recipe":{"task_target":7}})");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().kind, ErrorKind::invalid_input);
  EXPECT_FALSE(bad.error().fields.empty());
}

TEST_F(JobServiceTest, CancelIsIdempotentAndRefusedOnceTerminal) {
  auto id = create();
  ASSERT_TRUE(jobs.cancel(id).ok());
  EXPECT_EQ(record(id).status, JobStatus::canceled);
  ASSERT_TRUE(jobs.cancel(id).ok()) << "canceling a canceled job answers its view";
  auto other = create("SN-2");
  auto j = record(other);
  ASSERT_TRUE(*jobs.transition(j, JobStatus::queued, JobStatus::failed, {}, "test"));
  ASSERT_TRUE(*jobs.transition(record(other), JobStatus::failed, JobStatus::complete, {}, "test"));
  auto refused = jobs.cancel(other);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().kind, ErrorKind::conflict);
  EXPECT_EQ(jobs.cancel("job_missing").error().kind, ErrorKind::not_found);
}

TEST_F(JobServiceTest, TheStatusTableIsEnforcedBeforeTheStore) {
  auto id = create();
  auto illegal = jobs.transition(record(id), JobStatus::queued, JobStatus::complete, {}, "skip");
  ASSERT_FALSE(illegal.ok());
  EXPECT_EQ(illegal.error().kind, ErrorKind::conflict);
  EXPECT_EQ(record(id).status, JobStatus::queued);
  EXPECT_FALSE(*jobs.transition(record(id), JobStatus::provisioning, JobStatus::failed, {}, "stale"))
      << "a stale expectation loses the compare-and-swap";
}

TEST_F(JobServiceTest, ReportsMoveTheJobAndRecordItsSteps) {
  auto id = create();
  auto running = report(id, body(id, "running", R"(,"step":"partition.service")"));
  ASSERT_TRUE(running.ok()) << running.error().message;
  EXPECT_EQ(record(id).status, JobStatus::provisioning) << "a report from a booted machine starts a queued job";
  EXPECT_EQ(phases(id), (std::vector<std::string>{"maint_booted", "step:partition.service"}));
  clock.advance(1000);
  auto done = report(id, body(id, "success"));
  ASSERT_TRUE(done.ok()) << done.error().message;
  EXPECT_EQ(record(id).status, JobStatus::succeeded);
  clock.advance(1000);
  EXPECT_TRUE(report(id, body(id, "success")).ok()) << "a repeated outcome is accepted";
  clock.advance(1000);
  auto contradicting = report(id, body(id, "failed", R"(,"failed_step":"image.service")"));
  ASSERT_FALSE(contradicting.ok());
  EXPECT_EQ(contradicting.error().kind, ErrorKind::conflict);
  EXPECT_EQ(record(id).status, JobStatus::succeeded);
}

TEST_F(JobServiceTest, AFailedReportNamesTheStep) {
  auto id = create();
  ASSERT_TRUE(report(id, body(id, "running")).ok());
  clock.advance(1000);
  ASSERT_TRUE(report(id, body(id, "failed", R"(,"failed_step":"image-linux.service","log_tail":"no space")")).ok());
  auto j = record(id);
  EXPECT_EQ(j.status, JobStatus::failed);
  EXPECT_EQ(j.failed_step, "image-linux.service");
}

TEST_F(JobServiceTest, WebhookAuthenticationRefusesForgedStaleAndReplayedReports) {
  auto id = create();
  auto b = body(id, "running");
  auto ts = clock.now_seconds();
  auto key = *jobs.webhook_key(record(id));
  auto sig = sign_webhook(key, ts, b);
  ASSERT_TRUE(jobs.accept_webhook("SN-1", std::to_string(ts), sig, b).ok());
  auto replay = jobs.accept_webhook("SN-1", std::to_string(ts), sig, b);
  ASSERT_FALSE(replay.ok());
  EXPECT_EQ(replay.error().kind, ErrorKind::conflict);

  EXPECT_EQ(report(id, b, "SN-1", -301).error().kind, ErrorKind::unauthorized) << "stale";
  EXPECT_EQ(report(id, b, "SN-1", 301).error().kind, ErrorKind::unauthorized) << "from the future";
  EXPECT_EQ(report(id, b, "SN-OTHER").error().kind, ErrorKind::unauthorized) << "another machine's serial";
  EXPECT_EQ(report(id, b, "SN-1", 0, std::string(32, 'x')).error().kind, ErrorKind::unauthorized) << "wrong key";
  EXPECT_EQ(jobs.accept_webhook("SN-1", "", sig, b).error().kind, ErrorKind::unauthorized);
  EXPECT_EQ(jobs.accept_webhook("SN-1", "12x", sig, b).error().kind, ErrorKind::unauthorized);
  auto unknown = body("job_unknown", "running");
  EXPECT_EQ(jobs.accept_webhook("SN-1", std::to_string(ts), sign_webhook(key, ts, unknown), unknown).error().kind,
            ErrorKind::unauthorized)
      << "an unknown job answers like a bad signature";
}

TEST_F(JobServiceTest, AReportAfterCancelConflictsAndChangesNothing) {
  auto id = create();
  ASSERT_TRUE(jobs.cancel(id).ok());
  auto late = report(id, body(id, "success"));
  ASSERT_FALSE(late.ok());
  EXPECT_EQ(late.error().kind, ErrorKind::conflict);
  EXPECT_EQ(record(id).status, JobStatus::canceled);
}

TEST_F(JobServiceTest, AStoreFailureWhileApplyingIsAnErrorNotASilentSuccess) {
  auto id = create();
  auto b = body(id, "running", R"(,"step":"partition.service")");
  auto ts = clock.now_seconds();
  auto key = *jobs.webhook_key(record(id));
  store.fail_writes(true);
  auto r = jobs.accept_webhook("SN-1", std::to_string(ts), sign_webhook(key, ts, b), b);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::internal);
  store.fail_writes(false);
  EXPECT_EQ(record(id).status, JobStatus::queued);
  EXPECT_TRUE(phases(id).empty());
}
