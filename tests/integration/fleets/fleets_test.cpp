// Fleet runs through the real controller against mock BMCs that speak Redfish: the canary
// gate, the parallelism cap, the failure budget, pause/resume, cancel (no reset after it),
// bad input, and a SIGKILL mid-run (no server launched twice, the gates still hold).
#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <set>
#include <thread>

#include "tests/integration/controller/iso_tools.hpp"
#include "tests/integration/controller/test_jobs.hpp"
#include "tests/integration/controller/webhook_signer.hpp"
#include "tests/support/controller_process.hpp"
#include "tests/support/mock_bmc.hpp"

using namespace provisioner;
using namespace provisioner::test;

namespace {


bool has_phase(const nlohmann::json& job, const std::string& phase) {
  for (const auto& p : job["phases"])
    if (p["name"] == phase) return true;
  return false;
}

}  // namespace

class Fleets : public testing::Test {
 protected:
  void SetUp() override { base = make_maintenance_iso(tmp.path()); }

  void start(int servers) {
    for (int i = 0; i < servers; ++i) {
      MockBmcOptions options;
      options.serial = serial(i);
      bmcs.push_back(std::make_unique<MockBmc>(options));
    }
    controller = std::make_unique<ControllerProcess>(kFastRedfishToml, "text",
                                                     "maintenance_iso = \"" + base.string() + "\"\n");
    controller->start();
    for (int i = 0; i < servers; ++i) {
      nlohmann::json record{{"serial", serial(i)},
                            {"labels", {{"rack", i % 2 == 0 ? "r1" : "r2"}, {"role", "worker"}}},
                            {"bmc", {{"address", bmcs[i]->address()}, {"username", "admin"}, {"password", "mock-bmc-password"}}}};
      auto r = controller->post("/api/v1/servers", record.dump());
      ASSERT_EQ(r.status, 201) << r.body;
      ids.push_back(r.json()["id"]);
    }
  }

  static std::string serial(int i) { return "FLEET" + std::to_string(1000 + i); }

  std::string create(nlohmann::json body) {
    if (!body.contains("recipe") && !body.contains("recipe_ref")) body["recipe"] = linux_recipe();
    auto r = controller->post("/api/v1/fleets", body.dump());
    EXPECT_EQ(r.status, 201) << r.body;
    EXPECT_EQ(r.headers["location"], "/api/v1/fleets/" + r.json().value("id", ""));
    return r.json().value("id", "");
  }

  nlohmann::json fleet(const std::string& id) {
    auto r = controller->get("/api/v1/fleets/" + id);
    EXPECT_EQ(r.status, 200) << r.body;
    return r.json();
  }

  // Polls until `done(fleet)`, checking on every look that the fleet never has more than
  // `max_in_flight` unfinished jobs.
  template <typename F>
  nlohmann::json wait_fleet(const std::string& id, F done, int max_in_flight, int seconds = 30) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
    nlohmann::json f;
    while (std::chrono::steady_clock::now() < deadline) {
      f = fleet(id);
      EXPECT_LE(f["counts"]["in_flight"].get<int>(), max_in_flight) << f.dump();
      if (done(f)) return f;
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
    ADD_FAILURE() << "fleet never got there: " << f.dump() << "\n" << controller->log_text();
    return f;
  }

  struct Booted {
    int member;  // position in the fleet
    std::string job_id, serial;
  };
  // The members whose job has reset its server into the maintenance OS, not yet reported.
  std::vector<Booted> booted(const nlohmann::json& f) {
    std::vector<Booted> out;
    for (std::size_t i = 0; i < f["members"].size(); ++i) {
      const auto& m = f["members"][i];
      if (m["status"] != "provisioning" || reported.count(m["job_id"].get<std::string>())) continue;
      auto job = controller->get("/api/v1/jobs/" + m["job_id"].get<std::string>()).json();
      if (has_phase(job, "reset_issued")) out.push_back({static_cast<int>(i), m["job_id"], m["serial"]});
    }
    return out;
  }

  void report(const Booted& b, bool success) {
    std::string body = success ? R"({"job_id":")" + b.job_id + R"(","status":"success"})"
                               : R"({"job_id":")" + b.job_id + R"(","status":"failed","failed_step":"provision-image-linux.service","log_tail":"image digest mismatch"})";
    auto r = send_webhook(*controller, b.serial, controller->webhook_key(b.job_id), body);
    ASSERT_EQ(r.status, 200) << r.body;
    reported.insert(b.job_id);
  }

  int index_of(const std::string& s) const {
    for (int i = 0; i < static_cast<int>(bmcs.size()); ++i)
      if (serial(i) == s) return i;
    return -1;
  }

  // Reports every booted member (success unless `fail` says otherwise) until the fleet ends.
  nlohmann::json drive_to_end(const std::string& id, int max_in_flight, const std::set<int>& fail = {}) {
    return wait_fleet(
        id,
        [&](const nlohmann::json& f) {
          if (f["status"] != "running" && f["status"] != "paused") return true;
          for (const auto& b : booted(f)) report(b, !fail.count(b.member));
          return false;
        },
        max_in_flight, 60);
  }

  int resets_into_cd(int member) {
    int n = 0;
    for (const auto& b : bmcs[member]->boots()) n += b.boot_target == "Cd";
    return n;
  }

  TempDir tmp;
  std::filesystem::path base;
  std::vector<std::unique_ptr<MockBmc>> bmcs;
  std::vector<std::string> ids;
  std::set<std::string> reported;
  std::unique_ptr<ControllerProcess> controller;
};

TEST_F(Fleets, TheCanaryRunsAloneThenTheRestNeverMoreThanMaxParallelAtOnce) {
  start(6);
  auto id = create({{"servers", ids}, {"canary", 1}, {"max_parallel", 2}, {"name", "rollout"}});
  // Only the canary is launched while it runs.
  auto f = wait_fleet(id, [&](const nlohmann::json& f) { return !booted(f).empty(); }, 1);
  EXPECT_EQ(f["counts"]["not_launched"], 5) << f.dump();
  EXPECT_TRUE(f["members"][0]["canary"].get<bool>());
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));  // several fleet passes
  f = fleet(id);
  EXPECT_EQ(f["counts"]["not_launched"], 5) << "launched past an unfinished canary: " << f.dump();

  f = drive_to_end(id, 2);
  EXPECT_EQ(f["status"], "succeeded") << f.dump();
  EXPECT_EQ(f["counts"]["succeeded"], 6);
  EXPECT_EQ(f["counts"]["by_status"]["complete"], 6);
  EXPECT_TRUE(f["reason"].is_null());
  for (int i = 0; i < 6; ++i) EXPECT_EQ(resets_into_cd(i), 1) << "server " << i;
  // The jobs say which fleet launched them; the list shows the fleet.
  auto listed = controller->get("/api/v1/fleets?status=succeeded").json();
  ASSERT_EQ(listed["fleets"].size(), 1u);
  EXPECT_EQ(listed["fleets"][0]["id"], id);
  EXPECT_EQ(listed["fleets"][0]["name"], "rollout");
  EXPECT_FALSE(listed["fleets"][0].contains("members"));
}

TEST_F(Fleets, AFailedCanaryStopsTheFleetBeforeAnyOtherServerIsTouched) {
  start(3);
  auto id = create({{"servers", ids}, {"canary", 1}, {"max_parallel", 3}, {"max_failures", 2}});
  auto f = drive_to_end(id, 1, {0});
  EXPECT_EQ(f["status"], "failed");
  EXPECT_NE(f["reason"].get<std::string>().find("canary " + serial(0)), std::string::npos) << f.dump();
  EXPECT_NE(f["reason"].get<std::string>().find("provision-image-linux.service"), std::string::npos) << f.dump();
  EXPECT_EQ(f["counts"]["not_launched"], 2);
  EXPECT_TRUE(bmcs[1]->boots().empty());
  EXPECT_TRUE(bmcs[2]->boots().empty());
}

TEST_F(Fleets, PastTheFailureBudgetNothingMoreIsLaunchedAndTheFleetFailsWithTheReason) {
  start(5);
  auto id = create({{"servers", ids}, {"max_parallel", 1}, {"max_failures", "20%"}});  // 20% of 5: one
  auto f = drive_to_end(id, 1, {0, 1});
  EXPECT_EQ(f["status"], "failed");
  EXPECT_EQ(f["counts"]["failure_budget"], 1);
  EXPECT_EQ(f["counts"]["failed"], 2);
  EXPECT_EQ(f["counts"]["not_launched"], 3);
  EXPECT_NE(f["reason"].get<std::string>().find("2 failures exceed the budget of 1"), std::string::npos) << f.dump();
  EXPECT_EQ(f["members"][1]["failed_step"], "provision-image-linux.service");
  for (int i = 2; i < 5; ++i) EXPECT_TRUE(bmcs[i]->boots().empty()) << "server " << i;
}

TEST_F(Fleets, ASelectorPicksServersByLabelAndPauseHoldsLaunchesUntilResume) {
  start(4);
  auto id = create({{"selector", {{"labels", {{"rack", "r1"}}}}}, {"max_parallel", 1}});
  auto f = fleet(id);
  ASSERT_EQ(f["members"].size(), 2u);  // servers 0 and 2 (in server id order)
  std::set<std::string> picked{f["members"][0]["serial"], f["members"][1]["serial"]};
  EXPECT_EQ(picked, (std::set<std::string>{serial(0), serial(2)}));
  const int first = index_of(f["members"][0]["serial"]), second = index_of(f["members"][1]["serial"]);

  f = wait_fleet(id, [&](const nlohmann::json& f) { return !booted(f).empty(); }, 1);
  auto paused = controller->post("/api/v1/fleets/" + id + "/pause", "");
  ASSERT_EQ(paused.status, 200) << paused.body;
  EXPECT_EQ(paused.json()["status"], "paused");
  for (const auto& b : booted(f)) report(b, true);
  wait_fleet(id, [&](const nlohmann::json& f) { return f["counts"]["succeeded"] == 1 && f["counts"]["in_flight"] == 0; }, 1);
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));
  f = fleet(id);
  EXPECT_EQ(f["status"], "paused");
  EXPECT_EQ(f["counts"]["not_launched"], 1) << "launched while paused: " << f.dump();
  EXPECT_EQ(resets_into_cd(first), 1);
  EXPECT_TRUE(bmcs[second]->boots().empty());

  ASSERT_EQ(controller->post("/api/v1/fleets/" + id + "/resume", "").json()["status"], "running");
  f = wait_fleet(id, [&](const nlohmann::json& f) {
    for (const auto& b : booted(f)) report(b, true);
    return f["status"] == "succeeded";
  }, 1);
  EXPECT_EQ(f["counts"]["succeeded"], 2);
  EXPECT_TRUE(bmcs[1]->boots().empty());
  EXPECT_TRUE(bmcs[3]->boots().empty());
}

TEST_F(Fleets, CancelStopsLaunchingAndCancelsRunningJobsWithoutAnotherReset) {
  start(4);
  auto id = create({{"servers", ids}, {"max_parallel", 2}});
  wait_fleet(id, [&](const nlohmann::json& f) { return booted(f).size() == 2; }, 2);
  auto canceled = controller->post("/api/v1/fleets/" + id + "/cancel", "", ControllerProcess::kOperatorToken);
  ASSERT_EQ(canceled.status, 200) << canceled.body;
  EXPECT_EQ(canceled.json()["status"], "canceled");
  EXPECT_NE(canceled.json()["reason"].get<std::string>().find("canceled by"), std::string::npos);
  for (int i = 0; i < 2; ++i) {
    auto job = controller->wait_for_status(fleet(id)["members"][i]["job_id"], "canceled");
    // Cleanup ejects the media; the machine is never reset after the cancel.
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (!has_phase(controller->get("/api/v1/jobs/" + job["id"].get<std::string>()).json(), "cleanup_done") &&
           std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
    EXPECT_EQ(bmcs[i]->boots().size(), 1u) << "server " << i << " was reset after the cancel";
    EXPECT_EQ(bmcs[i]->slot_image("CD1"), "");
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));
  auto f = fleet(id);
  EXPECT_EQ(f["counts"]["not_launched"], 2);
  EXPECT_TRUE(bmcs[2]->boots().empty());
  // A canceled fleet stays canceled.
  EXPECT_EQ(controller->post("/api/v1/fleets/" + id + "/resume", "").status, 409);
  EXPECT_EQ(controller->post("/api/v1/fleets/" + id + "/cancel", "").status, 200);  // repeated: same answer
}

TEST_F(Fleets, ASigkilledControllerResumesTheFleetWithoutLaunchingAnyServerTwice) {
  start(4);
  auto id = create({{"servers", ids}, {"max_parallel", 2}});
  auto f = wait_fleet(id, [&](const nlohmann::json& f) { return booted(f).size() == 2; }, 2);
  controller->kill(SIGKILL);
  controller->start();
  f = fleet(id);
  EXPECT_EQ(f["status"], "running");
  EXPECT_EQ(f["counts"]["not_launched"], 2) << f.dump();
  f = drive_to_end(id, 2);
  EXPECT_EQ(f["status"], "succeeded") << f.dump();
  std::set<std::string> jobs;
  for (const auto& m : f["members"]) jobs.insert(m["job_id"].get<std::string>());
  EXPECT_EQ(jobs.size(), 4u);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(resets_into_cd(i), 1) << "server " << i << " launched twice";
  auto all = controller->get("/api/v1/jobs?limit=50").json();
  EXPECT_EQ(all["jobs"].size(), 4u) << "a member got a second job";
}

TEST_F(Fleets, BadRequestsAreRefusedWithTheFieldPathAndCreateNothing) {
  start(2);
  auto post = [&](const nlohmann::json& body, const char* token = ControllerProcess::kAdminToken) {
    return controller->post("/api/v1/fleets", body.dump(), token);
  };
  auto path_of = [](const HttpResponse& r) {
    auto j = nlohmann::json::parse(r.body, nullptr, false);
    return j.is_object() && j.contains("fields") && !j["fields"].empty() ? j["fields"][0]["path"].get<std::string>() : "";
  };
  auto r = post({{"servers", {ids[0], "srv_doesnotexist"}}, {"recipe", linux_recipe()}});
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(path_of(r), "/servers/1") << r.body;
  r = post({{"selector", {{"labels", {{"rack", "r9"}}}}}, {"recipe", linux_recipe()}});
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(path_of(r), "/selector/labels") << r.body;
  r = post({{"servers", ids}, {"recipe", linux_recipe()}, {"max_failures", "150%"}});
  EXPECT_EQ(r.status, 400) << r.body;
  r = post({{"servers", ids}, {"recipe", linux_recipe()}, {"max_parallel", 0}});
  EXPECT_EQ(r.status, 400) << r.body;
  // Counts past what an int holds are refused, not wrapped into a gate that does nothing.
  r = post({{"servers", ids}, {"recipe", linux_recipe()}, {"canary", 2147483648LL}});
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(path_of(r), "/canary") << r.body;
  r = post({{"servers", ids}, {"recipe", linux_recipe()}, {"max_failures", 18446744073709551615ULL}});
  EXPECT_EQ(r.status, 400) << r.body;
  r = post({{"servers", ids}});
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(path_of(r), "/recipe") << r.body;
  auto bad_recipe = linux_recipe();
  bad_recipe.erase("target_disk");
  r = post({{"servers", ids}, {"recipe", bad_recipe}});
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(path_of(r).rfind("/recipe", 0), 0u) << r.body;
  r = post({{"servers", ids}, {"recipe", linux_recipe()}}, ControllerProcess::kAuditorToken);
  EXPECT_EQ(r.status, 403) << r.body;
  EXPECT_EQ(controller->post("/api/v1/fleets", "{}", "not-a-token").status, 401);
  EXPECT_EQ(controller->get("/api/v1/fleets?status=bogus").status, 400);
  EXPECT_EQ(controller->get("/api/v1/fleets/flt_0000000000000000").status, 404);
  EXPECT_EQ(controller->post("/api/v1/fleets/flt_0000000000000000/pause", "").status, 404);
  EXPECT_EQ(controller->get("/api/v1/fleets").json()["fleets"].size(), 0u);
  EXPECT_EQ(controller->get("/api/v1/jobs").json()["jobs"].size(), 0u);
}
