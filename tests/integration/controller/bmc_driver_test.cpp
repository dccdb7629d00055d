// The BMC driver in-process, on the in-memory store and a manual clock, against the mock BMC
// over real HTTP on 127.0.0.1: each persisted phase, idempotence on repeat, a cancel that
// committed first, backoff measured on the injected clock, and cleanup's single disk reset.
#include <gtest/gtest.h>

#include <memory>

#include "controller/artifacts/artifact_store.hpp"
#include "controller/iso/job_media.hpp"
#include "controller/iso/maintenance_iso.hpp"
#include "controller/jobs/bmc_driver.hpp"
#include "controller/jobs/job_service.hpp"
#include "controller/logging/logger.hpp"
#include "controller/metrics/metrics.hpp"
#include "controller/redfish/redfish_client.hpp"
#include "controller/servers/server_service.hpp"
#include "tests/integration/controller/test_jobs.hpp"
#include "tests/support/controller_process.hpp"
#include "tests/support/job_service_harness.hpp"
#include "tests/support/mock_bmc.hpp"

using namespace provisioner;
using namespace provisioner::test;

namespace {

// Every Redfish pause moves the manual clock instead of sleeping.
class ClockSleeper final : public redfish::Sleeper {
 public:
  explicit ClockSleeper(ManualClock& clock) : clock_(clock) {}
  void sleep_ms(std::int64_t ms) override { clock_.advance(ms); }

 private:
  ManualClock& clock_;
};

redfish::RedfishOptions fast_redfish() {
  redfish::RedfishOptions o;
  o.request_timeout_ms = 5000;
  o.get_attempts = 2;
  o.power_poll_ms = 10;
  o.retry_base_ms = 10;
  o.retry_cap_ms = 20;
  o.insert_retry_delay_ms = 10;
  o.not_ready_delay_ms = 10;
  o.task_poll_ms = 10;
  return o;
}

int count(const std::vector<RecordedRequest>& requests, const std::string& method, const std::string& suffix) {
  int n = 0;
  for (const auto& r : requests) n += r.method == method && r.path.ends_with(suffix);
  return n;
}

}  // namespace

class BmcDriverTest : public testing::Test, protected JobServiceHarness {
 protected:
  BmcDriverTest()
      : artifacts(tmp.path() / "artifacts"),
        maintenance(store, artifacts),
        media(artifacts, maintenance, JobMediaOptions{"http://127.0.0.1:1"}),
        sleeper(clock),
        redfish(clock, sleeper, fast_redfish(), &log),
        driver(store, jobs, servers, media, redfish, clock, log) {
    auto iso = artifacts.put(std::string(64 * 2048, '\0'));  // stands in for the maintenance ISO
    EXPECT_TRUE(iso.ok());
    EXPECT_TRUE(maintenance.set_current(iso->sha256).ok());
  }

  // A job as the reconciler leaves it: media built and recorded, status provisioning.
  std::string provisioning_job() {
    nlohmann::json body{{"server",
                         {{"serial", "MOCK0001"},
                          {"bmc", {{"address", bmc.address()}, {"username", "admin"}, {"password", "mock-bmc-password"}}}}},
                        {"recipe", linux_recipe()}};
    auto made = jobs.create(body.dump());
    EXPECT_TRUE(made.ok()) << (made.ok() ? "" : made.error().message);
    std::string id = (*made)["id"];
    auto inputs = jobs.task_inputs(record(id));
    EXPECT_TRUE(inputs.ok());
    auto built = media.build(*inputs, "dual-cd");
    EXPECT_TRUE(built.ok()) << (built.ok() ? "" : built.error().message);
    EXPECT_TRUE(*store.set_job_media(id, JobStatus::queued, built->to_json(), clock.now_ms()));
    EXPECT_TRUE(*jobs.transition(record(id), JobStatus::queued, JobStatus::provisioning, {}, "media ready"));
    return id;
  }

  TempDir tmp;
  artifacts::ArtifactStore artifacts;
  MaintenanceIso maintenance;
  JobMediaBuilder media;
  ClockSleeper sleeper;
  MockBmc bmc;
  redfish::RedfishContext redfish;
  BmcJobDriver driver;
};

TEST_F(BmcDriverTest, DrivesEachPhaseOnceAndNeverResetsTwice) {
  auto id = provisioning_job();
  driver.advance(record(id));
  EXPECT_EQ(phases(id), (std::vector<std::string>{"media_requested", "media_inserted", "boot_set", "reset_issued"}));
  EXPECT_EQ(bmc.resets().size(), 1u);
  EXPECT_TRUE(bmc.slot_image("CD1").ends_with("/maintenance.iso") || bmc.slot_image("CD2").ends_with("/maintenance.iso"));
  bmc.clear_requests();
  driver.advance(record(id));
  driver.advance(record(id));
  EXPECT_EQ(bmc.resets().size(), 1u) << "a repeated pass after the reset sends nothing";
  EXPECT_TRUE(bmc.requests().empty()) << "nothing left for the BMC until the outcome";
}

TEST_F(BmcDriverTest, AJobCanceledBeforeTheDriverActsTouchesNoBmc) {
  auto id = provisioning_job();
  auto stale = record(id);  // what a worker read just before the cancel committed
  ASSERT_TRUE(jobs.cancel(id).ok());
  driver.advance(stale);
  EXPECT_EQ(count(bmc.requests(), "POST", "InsertMedia"), 0);
  EXPECT_TRUE(bmc.resets().empty());
  EXPECT_TRUE(phases(id).empty());
  EXPECT_TRUE(driver.clean_up(record(id), false)) << "nothing was asked of the BMC: nothing to undo";
  EXPECT_TRUE(bmc.requests().empty());
}

TEST_F(BmcDriverTest, AnUnavailableBmcIsRetriedOnTheInjectedClock) {
  auto id = provisioning_job();
  bmc.set_hook([](const RecordedRequest&, int) { return MockAction::respond(503); });
  driver.advance(record(id));
  EXPECT_EQ(record(id).status, JobStatus::provisioning) << "a 503 is worth retrying";
  auto asked = bmc.requests().size();
  EXPECT_GT(asked, 0u);
  driver.advance(record(id));
  EXPECT_EQ(bmc.requests().size(), asked) << "backing off: no request before the delay has passed";
  bmc.set_hook(nullptr);
  clock.advance(60'000);
  driver.advance(record(id));
  EXPECT_EQ(bmc.resets().size(), 1u) << "after the backoff the job goes on";
  EXPECT_TRUE(record(id).error.empty());
}

TEST_F(BmcDriverTest, WrongCredentialsFailTheJobAtTheStepThatNeedsThem) {
  nlohmann::json body{{"server",
                       {{"serial", "MOCK0001"},
                        {"bmc", {{"address", bmc.address()}, {"username", "admin"}, {"password", "wrong-9d1e"}}}}},
                      {"recipe", linux_recipe()}};
  auto made = jobs.create(body.dump());
  ASSERT_TRUE(made.ok());
  std::string id = (*made)["id"];
  auto built = media.build(*jobs.task_inputs(record(id)), "dual-cd");
  ASSERT_TRUE(built.ok());
  ASSERT_TRUE(*store.set_job_media(id, JobStatus::queued, built->to_json(), clock.now_ms()));
  ASSERT_TRUE(*jobs.transition(record(id), JobStatus::queued, JobStatus::provisioning, {}, ""));
  driver.advance(record(id));
  auto j = record(id);
  EXPECT_EQ(j.status, JobStatus::failed);
  EXPECT_EQ(j.error.rfind("media_inserted: ", 0), 0u) << j.error;
  EXPECT_EQ(j.error.find("wrong-9d1e"), std::string::npos);
  EXPECT_TRUE(bmc.resets().empty());
}

TEST_F(BmcDriverTest, CleanupEjectsAndResetsIntoTheDiskOnce) {
  auto id = provisioning_job();
  driver.advance(record(id));
  ASSERT_EQ(bmc.resets().size(), 1u);
  ASSERT_TRUE(*jobs.transition(record(id), JobStatus::provisioning, JobStatus::succeeded, {}, "reported"));
  EXPECT_TRUE(driver.clean_up(record(id), true));
  EXPECT_EQ(bmc.slot_image("CD1"), "");
  EXPECT_EQ(bmc.slot_image("CD2"), "");
  EXPECT_EQ(bmc.boot().target, "Hdd");
  EXPECT_EQ(bmc.resets().size(), 2u) << "one reset into the installed system";
  EXPECT_TRUE(driver.clean_up(record(id), true));
  EXPECT_EQ(bmc.resets().size(), 2u) << "cleanup repeated after a crash resets nothing more";
}
