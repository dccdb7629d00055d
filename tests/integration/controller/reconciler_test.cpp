// The reconciler in-process, on the in-memory store and a manual clock: media built once and
// the job started, the boot and install timeouts measured on the injected clock, cleanup to
// complete, a canceled job cleaned up once, and garbage collection of what no job needs.
// Network-mode jobs (no BMC): what drives a BMC is bmc_driver_test.cpp.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "controller/artifacts/artifact_store.hpp"
#include "controller/iso/job_media.hpp"
#include "controller/iso/maintenance_iso.hpp"
#include "controller/jobs/job_service.hpp"
#include "controller/jobs/reconciler.hpp"
#include "tests/integration/controller/test_jobs.hpp"
#include "tests/support/controller_process.hpp"
#include "tests/support/job_service_harness.hpp"

using namespace provisioner;
using namespace provisioner::test;
using namespace std::chrono_literals;

class ReconcilerTest : public testing::Test, protected JobServiceHarness {
 protected:
  ReconcilerTest()
      : artifacts(tmp.path() / "artifacts"),
        maintenance(store, artifacts),
        media(artifacts, maintenance, JobMediaOptions{"http://127.0.0.1:1"}),
        reconciler(store, jobs, media, artifacts, maintenance, nullptr, clock, log, options()) {
    auto iso = artifacts.put(std::string(64 * 2048, '\0'));  // stands in for the maintenance ISO
    EXPECT_TRUE(iso.ok());
    EXPECT_TRUE(maintenance.set_current(iso->sha256).ok());
    jobs.on_change([this](const std::string& id) { reconciler.wake(id); });  // as main.cpp wires it
    reconciler.start();
  }
  ~ReconcilerTest() override { reconciler.stop(); }

  static ReconcilerOptions options() {
    ReconcilerOptions o;
    o.tick = std::chrono::hours(1);  // passes only when the test asks (reconcile_once) or a job wakes
    o.idle_recheck = 10s;
    o.boot_timeout = 600s;
    o.install_timeout = 3600s;
    o.workers = 4;
    o.artifact_retention = 0s;  // collected as soon as no unfinished job needs them
    return o;
  }

  std::string create(const std::string& serial = "SN-0001") {
    auto made = jobs.create(job_body(serial));
    EXPECT_TRUE(made.ok()) << (made.ok() ? "" : made.error().message);
    return made.ok() ? (*made)["id"].get<std::string>() : "";
  }

  // Runs passes (the workers are real threads) until `pred` holds, for at most 5 s of real time.
  template <typename Pred>
  bool settles(Pred pred) {
    auto deadline = std::chrono::steady_clock::now() + 5s;
    while (std::chrono::steady_clock::now() < deadline) {
      reconciler.reconcile_once();
      if (pred()) return true;
      std::this_thread::sleep_for(10ms);
    }
    return pred();
  }

  std::string status(const std::string& id) { return std::string(to_string(record(id).status)); }

  // settles(), moving the manual clock past the idle rest at each pass: the worker that made
  // the job provisioning may set the job's rest (now + 10 s) only after the test's advance,
  // and then a single advance would leave it resting forever.
  template <typename Pred>
  bool settles_over_time(Pred pred) {
    return settles([&] {
      if (pred()) return true;
      clock.advance(11'000);
      return false;
    });
  }

  TempDir tmp;
  artifacts::ArtifactStore artifacts;
  MaintenanceIso maintenance;
  JobMediaBuilder media;
  JobReconciler reconciler;
};

TEST_F(ReconcilerTest, AQueuedJobGetsItsMediaOnceAndStartsProvisioning) {
  auto id = create();
  ASSERT_TRUE(settles([&] { return status(id) == "provisioning"; })) << status(id);
  auto job = record(id);
  EXPECT_EQ(job.phase, "iso_built");
  auto task = job.media["task_iso"];
  ASSERT_TRUE(task.is_object()) << job.media.dump();
  EXPECT_TRUE(artifacts.exists(task["sha256"].get<std::string>()));
  // More passes change nothing: the media are built once.
  for (int i = 0; i < 5; ++i) reconciler.reconcile_once();
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(record(id).media, job.media);
  auto names = phases(id);
  EXPECT_EQ(std::count(names.begin(), names.end(), "iso_built"), 1);
}

TEST_F(ReconcilerTest, TheBootTimeoutIsMeasuredOnTheClockAndFailsTheJob) {
  auto id = create();
  ASSERT_TRUE(settles([&] { return status(id) == "provisioning"; }));
  clock.advance(610'000);  // past the 600 s boot timeout (and the job's 10 s rest)
  ASSERT_TRUE(settles_over_time([&] { return status(id) != "provisioning"; })) << status(id);
  auto job = record(id);
  EXPECT_TRUE(job.status == JobStatus::failed || job.status == JobStatus::complete) << to_string(job.status);
  EXPECT_NE(job.error.find("did not report within 600 s"), std::string::npos) << job.error;
}

TEST_F(ReconcilerTest, NoTimeoutBeforeItsTime) {
  auto id = create();
  ASSERT_TRUE(settles([&] { return status(id) == "provisioning"; }));
  clock.advance(590'000);  // 10 s short of the boot timeout, past the idle recheck
  for (int i = 0; i < 20; ++i) {
    reconciler.reconcile_once();
    std::this_thread::sleep_for(5ms);
  }
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(status(id), "provisioning");
}

// A job whose machine was reset waits for its report: nothing to do before its boot deadline,
// so it rests past the idle recheck (up to a minute at a time; a report wakes it at once),
// and still fails when the deadline passes.
TEST_F(ReconcilerTest, AJobWaitingForItsMachineRestsUntilItsDeadline) {
  auto id = create();
  ASSERT_TRUE(settles([&] { return status(id) == "provisioning"; }));
  std::this_thread::sleep_for(100ms);  // the worker that started it has set its idle rest
  ASSERT_TRUE(*store.record_phase(id, "reset_issued", "", clock.now_ms()));
  auto looked = store.job_event_reads.load();
  for (int i = 0; i < 3; ++i) {  // past the idle rest: a look, which finds it waiting for its machine
    clock.advance(11'000);
    reconciler.reconcile_once();
    std::this_thread::sleep_for(100ms);
  }
  ASSERT_GT(store.job_event_reads.load(), looked) << "not looked at after its idle rest";
  looked = store.job_event_reads.load();
  clock.advance(25'000);  // idle rechecks later, within the minute since that look
  for (int i = 0; i < 20; ++i) {
    reconciler.reconcile_once();
    std::this_thread::sleep_for(5ms);
  }
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(store.job_event_reads.load(), looked) << "a job waiting for its machine was looked at again";
  clock.advance(600'000);  // past the boot deadline
  ASSERT_TRUE(settles_over_time([&] { return status(id) != "provisioning"; })) << status(id);
  EXPECT_NE(record(id).error.find("did not report within 600 s"), std::string::npos) << record(id).error;
}

TEST_F(ReconcilerTest, AFailedJobIsCleanedUpToComplete) {
  auto id = create();
  ASSERT_TRUE(settles([&] { return status(id) == "provisioning"; }));
  clock.advance(601'000);
  ASSERT_TRUE(settles_over_time([&] { return status(id) == "complete"; })) << status(id);
  auto names = phases(id);
  EXPECT_EQ(std::count(names.begin(), names.end(), "cleanup_done"), 1);
  auto history = store.job_events(id);
  std::vector<std::string> statuses;
  for (const auto& e : *history)
    if (e.kind == "transition") statuses.push_back(e.name);
  EXPECT_EQ(statuses, (std::vector<std::string>{"queued", "provisioning", "failed", "complete"}));
}

TEST_F(ReconcilerTest, ACanceledJobIsCleanedUpOnceAndStaysCanceled) {
  auto id = create();
  ASSERT_TRUE(settles([&] { return status(id) == "provisioning"; }));
  ASSERT_TRUE(jobs.cancel(id).ok());
  ASSERT_TRUE(settles([&] {
    auto names = phases(id);
    return std::count(names.begin(), names.end(), "cleanup_done") == 1;
  }));
  for (int i = 0; i < 5; ++i) reconciler.reconcile_once();
  std::this_thread::sleep_for(50ms);
  auto names = phases(id);
  EXPECT_EQ(std::count(names.begin(), names.end(), "cleanup_done"), 1);
  EXPECT_EQ(status(id), "canceled");
  auto left = store.job_ids_to_reconcile(100);
  ASSERT_TRUE(left.ok());
  EXPECT_TRUE(left->empty()) << "nothing left to do";
}

TEST_F(ReconcilerTest, GarbageCollectionKeepsWhatUnfinishedJobsNeed) {
  auto keep = create("SN-KEEP");
  auto drop = create("SN-DROP");
  ASSERT_TRUE(settles([&] { return status(keep) == "provisioning" && status(drop) == "provisioning"; }));
  auto sha = [&](const std::string& id) {
    return record(id).media["task_iso"]["sha256"].get<std::string>();
  };
  std::string kept = sha(keep), dropped = sha(drop);
  ASSERT_TRUE(jobs.cancel(drop).ok());
  ASSERT_TRUE(reconciler.collect_garbage().ok());
  EXPECT_TRUE(artifacts.exists(kept));
  ASSERT_TRUE(maintenance.current().has_value());
  EXPECT_TRUE(artifacts.exists(*maintenance.current())) << "the maintenance ISO is always kept";
  EXPECT_FALSE(artifacts.exists(dropped)) << "the canceled job's task ISO is no longer needed";
}
