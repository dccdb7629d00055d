// The whole virtual-media flow through the controller process against a mock BMC that
// speaks Redfish over HTTP: insert, boot once, reset, reports, eject, boot from disk.
#include <gtest/gtest.h>

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

#include "tests/integration/controller/iso_tools.hpp"
#include "tests/integration/controller/test_jobs.hpp"
#include "tests/integration/controller/webhook_signer.hpp"
#include "tests/support/controller_process.hpp"
#include "tests/support/mock_bmc.hpp"

using namespace provisioner;
using namespace provisioner::test;

namespace {

std::vector<std::string> phase_names(const nlohmann::json& job) {
  std::vector<std::string> out;
  for (const auto& p : job["phases"]) out.push_back(p["name"]);
  return out;
}

bool has(const std::vector<std::string>& v, const std::string& x) { return std::find(v.begin(), v.end(), x) != v.end(); }

}  // namespace

class BmcFlow : public testing::Test {
 protected:
  void SetUp() override { base = make_maintenance_iso(tmp.path()); }

  void start(MockBmcOptions options = {}) {
    bmc = std::make_unique<MockBmc>(std::move(options));
    controller = std::make_unique<ControllerProcess>(kFastRedfishToml, "text",
                                                     "maintenance_iso = \"" + base.string() + "\"\n");
    controller->start();
  }

  std::string submit(nlohmann::json recipe = linux_recipe(), const std::string& password = "mock-bmc-password") {
    nlohmann::json body{{"server",
                         {{"serial", "MOCK0001"},
                          {"bmc", {{"address", bmc->address()}, {"username", "admin"}, {"password", password}}}}},
                        {"recipe", std::move(recipe)}};
    auto r = controller->post("/api/v1/jobs", body.dump());
    EXPECT_EQ(r.status, 201) << r.body;
    return r.json()["id"];
  }

  nlohmann::json wait_for_phase(const std::string& id, const std::string& phase, int seconds = 20) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
    nlohmann::json job;
    while (std::chrono::steady_clock::now() < deadline) {
      job = controller->get("/api/v1/jobs/" + id).json();
      if (has(phase_names(job), phase)) return job;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ADD_FAILURE() << "no phase " << phase << ": " << job.dump() << "\n" << controller->log_text();
    return job;
  }

  // reset_issued is recorded before the reset is sent (so a crash never sends it twice): the
  // BMC sees the reset a moment after the phase appears.
  nlohmann::json wait_for_reset(const std::string& id) {
    auto job = wait_for_phase(id, "reset_issued");
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (bmc->boots().empty() && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    return job;
  }

  void report(const std::string& id, const std::string& body) {
    auto r = send_webhook(*controller, "MOCK0001", controller->webhook_key(id), body);
    ASSERT_EQ(r.status, 200) << r.body;
  }

  TempDir tmp;
  std::filesystem::path base;
  std::unique_ptr<MockBmc> bmc;
  std::unique_ptr<ControllerProcess> controller;
};

TEST_F(BmcFlow, DualCdFromSubmissionToBootFromDisk) {
  start();
  auto id = submit();
  auto job = wait_for_reset(id);
  EXPECT_EQ(phase_names(job), (std::vector<std::string>{"iso_built", "media_requested", "media_inserted", "boot_set", "reset_issued"}));
  // The machine was reset once, into the CD, with both media inserted.
  ASSERT_EQ(bmc->boots().size(), 1u);
  EXPECT_EQ(bmc->boots()[0].boot_target, "Cd");
  auto media = bmc->boots()[0].media;
  ASSERT_EQ(media.size(), 2u);
  std::sort(media.begin(), media.end());
  EXPECT_TRUE(media[0].ends_with("/maintenance.iso") || media[1].ends_with("/maintenance.iso"));
  EXPECT_TRUE(media[0].ends_with("/task.iso") || media[1].ends_with("/task.iso"));

  // The maintenance OS reports; the controller cleans up and boots the disk.
  report(id, R"({"job_id":")" + id + R"(","status":"running","step":"partition.service"})");
  report(id, R"({"job_id":")" + id + R"(","status":"success"})");
  job = controller->wait_for_status(id, "complete");
  EXPECT_EQ(job["outcome"], "succeeded");
  EXPECT_EQ(phase_names(job), (std::vector<std::string>{"iso_built", "media_requested", "media_inserted", "boot_set", "reset_issued",
                                                        "maint_booted", "step:partition.service", "disk_reset_issued",
                                                        "cleanup_done"}));
  EXPECT_EQ(bmc->slot_image("CD1"), "");
  EXPECT_EQ(bmc->slot_image("CD2"), "");
  ASSERT_EQ(bmc->boots().size(), 2u);
  EXPECT_EQ(bmc->boots()[1].boot_target, "Hdd");
  EXPECT_TRUE(bmc->boots()[1].media.empty()) << "booted back into the ISO";
  EXPECT_EQ(bmc->live_sessions(), 0) << "sessions must be logged out";
  // Discovered once: the cleanup after the install starts from the topology the boot half
  // found (two sessions, one read of the service root and of the VirtualMedia collection).
  auto count = [&](const std::string& line) {
    auto seq = bmc->sequence();
    return std::count(seq.begin(), seq.end(), line);
  };
  EXPECT_EQ(count("POST /redfish/v1/SessionService/Sessions 201"), 2);
  EXPECT_EQ(count("GET /redfish/v1/ 200"), 1);
  EXPECT_EQ(count("GET /redfish/v1/Systems/1/VirtualMedia 200"), 1);
}

TEST_F(BmcFlow, ABmcRefusingASecondMediumGetsOneIso) {
  MockBmcOptions options;
  options.refuse_second_medium = true;
  start(options);
  auto id = submit();
  auto job = wait_for_reset(id);
  EXPECT_TRUE(has(phase_names(job), "media_fallback:single-iso")) << job.dump();
  EXPECT_EQ(job["media"]["mode"], "single-iso");
  ASSERT_EQ(bmc->boots().size(), 1u);
  ASSERT_EQ(bmc->boots()[0].media.size(), 1u);
  EXPECT_TRUE(bmc->boots()[0].media[0].ends_with("/boot.iso"));
}

TEST_F(BmcFlow, AFailedStepEjectsAndLeavesTheMachineBootingItsDisk) {
  start();
  auto id = submit();
  wait_for_reset(id);
  report(id, R"({"job_id":")" + id + R"(","status":"failed","failed_step":"image-linux.service"})");
  auto job = controller->wait_for_status(id, "complete");
  EXPECT_EQ(job["outcome"], "failed");
  EXPECT_EQ(job["failed_step"], "image-linux.service");
  EXPECT_EQ(bmc->slot_image("CD1"), "");
  EXPECT_EQ(bmc->slot_image("CD2"), "");
  EXPECT_EQ(bmc->boot().target, "Hdd") << "the next boot must not be the ISO";
  EXPECT_EQ(bmc->resets().size(), 1u) << "a failed machine is left for the operator, not reset again";
}

TEST_F(BmcFlow, CancelCleansUp) {
  start();
  auto id = submit();
  wait_for_reset(id);
  controller->post("/api/v1/jobs/" + id + "/cancel", "");
  auto job = wait_for_phase(id, "cleanup_done");
  EXPECT_EQ(job["status"], "canceled");
  EXPECT_EQ(bmc->slot_image("CD1"), "");
  EXPECT_EQ(bmc->slot_image("CD2"), "");
}

TEST_F(BmcFlow, WrongCredentialsFailTheJobWithoutLeakingThem) {
  start();
  auto id = submit(linux_recipe(), "not-the-password-81f2");
  auto job = controller->wait_for_status(id, "complete");
  EXPECT_EQ(job["outcome"], "failed");
  EXPECT_EQ(job["error"].get<std::string>().rfind("media_inserted: ", 0), 0u) << job["error"];
  EXPECT_EQ(job.dump().find("not-the-password-81f2"), std::string::npos);
  EXPECT_EQ(controller->log_text().find("not-the-password-81f2"), std::string::npos);
  EXPECT_TRUE(bmc->resets().empty());
}

TEST_F(BmcFlow, TheBmcFetchesMediaFromTheArtifactServer) {
  MockBmcOptions options;
  options.fetch_media = true;
  start(options);
  auto id = submit();
  wait_for_phase(id, "reset_issued");
  auto fetches = bmc->media_fetches();
  ASSERT_EQ(fetches.size(), 2u);
  for (const auto& f : fetches) {
    EXPECT_EQ(f.head_status, 200) << f.url;
    EXPECT_EQ(f.range_status, 206) << f.url;
  }
}

TEST_F(BmcFlow, AnUnavailableBmcIsRetriedUntilItAnswers) {
  MockBmcOptions options;
  start(options);
  bmc->set_hook([](const RecordedRequest&, int) { return MockAction::respond(503); });
  auto id = submit();
  std::this_thread::sleep_for(std::chrono::seconds(2));
  auto job = controller->get("/api/v1/jobs/" + id).json();
  EXPECT_EQ(job["status"], "provisioning") << "a 503 is worth retrying: " << job.dump();
  EXPECT_FALSE(has(phase_names(job), "media_inserted"));
  bmc->set_hook(nullptr);  // the BMC recovers
  wait_for_phase(id, "reset_issued", 90);
}

// Races staged deterministically: the job is canceled from inside the mock BMC, while it
// handles the first request that `when` picks, before that request is answered.
struct StagedCancel {
  std::string id;
  bool happened = false;
};

class BmcCancelRace : public BmcFlow {
 protected:
  StagedCancel submit_and_cancel_when(std::function<bool(const RecordedRequest&)> when) {
    auto canceled = std::make_shared<std::atomic<bool>>(false);
    auto id = std::make_shared<std::string>();
    auto id_mutex = std::make_shared<std::mutex>();
    bmc->set_hook([this, when, canceled, id, id_mutex](const RecordedRequest& r, int) {
      std::lock_guard lock(*id_mutex);
      if (when(r) && !canceled->exchange(true)) {
        auto c = controller->post("/api/v1/jobs/" + *id + "/cancel", "");
        EXPECT_EQ(c.status, 200) << c.body;
      }
      return MockAction::pass();
    });
    {
      std::lock_guard lock(*id_mutex);
      *id = submit();
    }
    auto job = wait_for_phase(*id, "cleanup_done");
    EXPECT_EQ(job["status"], "canceled");
    EXPECT_EQ(bmc->slot_image("CD1"), "") << "an ISO was left inserted";
    EXPECT_EQ(bmc->slot_image("CD2"), "") << "an ISO was left inserted";
    return {*id, canceled->load()};
  }
};

// The cancel lands while the BMC handles the boot override PATCH, just before the reset. It
// wins: reset_issued is recorded only while the job still provisions, so no reset is sent.
TEST_F(BmcCancelRace, ACancelThatWinsTheRaceSendsNoReset) {
  start();
  auto staged = submit_and_cancel_when(
      [](const RecordedRequest& r) { return r.method == "PATCH" && r.path.starts_with("/redfish/v1/Systems/"); });
  ASSERT_TRUE(staged.happened) << "the race was not staged";
  auto job = controller->get("/api/v1/jobs/" + staged.id).json();
  EXPECT_FALSE(has(phase_names(job), "reset_issued")) << job.dump();
  EXPECT_TRUE(bmc->resets().empty()) << "a canceled job reset its server";
}

// The cancel lands while the reset is on the wire. The reset was recorded first, so it is
// sent exactly once; then cleanup runs (media out, boot from disk, no second reset).
TEST_F(BmcCancelRace, ACancelThatLosesTheRaceLetsTheOneResetThroughThenCleansUp) {
  start();
  auto staged = submit_and_cancel_when(
      [](const RecordedRequest& r) { return r.method == "POST" && r.path.ends_with("ComputerSystem.Reset"); });
  ASSERT_TRUE(staged.happened) << "the race was not staged";
  auto job = controller->get("/api/v1/jobs/" + staged.id).json();
  EXPECT_TRUE(has(phase_names(job), "reset_issued")) << job.dump();
  EXPECT_FALSE(has(phase_names(job), "disk_reset_issued")) << job.dump();
  EXPECT_EQ(bmc->boots().size(), 1u) << "the recorded reset is sent once, and nothing after the cancel";
  EXPECT_EQ(bmc->boot().target, "Hdd");
}

// The single-ISO fallback saves the new media before inserting them. A cancel that lands
// while the BMC refuses the second medium makes that save fail: then nothing more is
// inserted (cleanup would not know the new ISO), no reset is sent, and cleanup ejects the
// first medium that did go in.
TEST_F(BmcCancelRace, ACancelDuringTheSingleIsoFallbackLeavesNoMediumBehind) {
  MockBmcOptions options;
  options.refuse_second_medium = true;
  start(options);
  auto inserts = std::make_shared<std::atomic<int>>(0);
  auto staged = submit_and_cancel_when([inserts](const RecordedRequest& r) {
    return r.method == "POST" && r.path.ends_with("InsertMedia") && ++*inserts == 2;
  });
  ASSERT_TRUE(staged.happened) << "the race was not staged";
  EXPECT_TRUE(bmc->resets().empty());
}
