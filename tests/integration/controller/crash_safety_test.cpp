// Kills the controller with SIGKILL at random moments while many jobs run against mock BMCs,
// restarts it each time, and plays the machines (a machine that booted its CD reports
// success). Then: no job lost, every job terminal, and no reset ever sent twice for a phase.
// PROVISIONER_CRASH_JOBS sets the number of jobs (default 50).
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <random>
#include <thread>

#include "tests/integration/controller/iso_tools.hpp"
#include "tests/integration/controller/test_jobs.hpp"
#include "tests/integration/controller/webhook_signer.hpp"
#include "tests/support/controller_process.hpp"
#include "tests/support/mock_bmc.hpp"

using namespace provisioner;
using namespace provisioner::test;

TEST(CrashSafety, SigkillAtRandomPointsLosesNothingAndNeverResetsTwice) {
  const int n = std::getenv("PROVISIONER_CRASH_JOBS") ? std::atoi(std::getenv("PROVISIONER_CRASH_JOBS")) : 50;
  TempDir tmp;
  auto base = make_maintenance_iso(tmp.path());
  std::vector<std::unique_ptr<MockBmc>> bmcs;
  for (int i = 0; i < n; ++i) {
    MockBmcOptions o;
    o.serial = "CRASH" + std::to_string(1000 + i);
    o.power_state = i % 3 ? "On" : "Off";
    bmcs.push_back(std::make_unique<MockBmc>(o));
    // Real BMCs take their time: spread each job's BMC steps over seconds so the kills land
    // inside every phase, not only between jobs.
    auto seed = std::make_shared<std::mt19937>(i);
    auto mutex = std::make_shared<std::mutex>();
    bmcs.back()->set_hook([seed, mutex](const RecordedRequest&, int) {
      std::lock_guard lock(*mutex);
      return MockAction::delay(std::uniform_int_distribution<int>(20, 120)(*seed));
    });
  }
  ControllerProcess controller(
      "[redfish]\npower_poll_ms = 20\nretry_base_ms = 20\nretry_cap_ms = 50\ninsert_retry_delay_ms = 20\n"
      "breaker_open_ms = 200\n",
      "text", "maintenance_iso = \"" + base.string() + "\"\n");
  // A reset recorded but lost in a crash is never resent: such a job ends by its boot timeout.
  controller.start();
  std::vector<std::string> ids;
  for (int i = 0; i < n; ++i) {
    auto recipe = linux_recipe();
    recipe["timeouts"] = {{"boot", 90}};
    nlohmann::json body{{"server",
                         {{"serial", "CRASH" + std::to_string(1000 + i)},
                          {"bmc", {{"address", bmcs[i]->address()}, {"username", "admin"}, {"password", "mock-bmc-password"}}}}},
                        {"recipe", recipe}};
    auto r = controller.post("/api/v1/jobs", body.dump());
    ASSERT_EQ(r.status, 201) << r.body;
    ids.push_back(r.json()["id"]);
  }

  // The storm: n kills (at most 20 s of them) at random moments, then quiet so the jobs can
  // finish. Kills that never stop would only show that nothing completes between them.
  std::atomic<bool> stop{false};
  std::atomic<int> kills{0};
  auto storm_end = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  std::thread killer([&] {
    std::mt19937 rng(std::random_device{}());
    std::uniform_int_distribution<int> pause_ms(20, 400);
    while (!stop && kills < n && std::chrono::steady_clock::now() < storm_end) {
      std::this_thread::sleep_for(std::chrono::milliseconds(pause_ms(rng)));
      if (stop) break;
      controller.kill(SIGKILL);
      ++kills;
      try {
        controller.start();
      } catch (const std::exception& e) {
        ADD_FAILURE() << "restart failed: " << e.what();
        return;
      }
    }
  });

  // The machines: once booted from the CD, the maintenance OS reports running, then success.
  std::vector<int> reported(n, 0);  // 0 nothing, 1 running, 2 success
  std::vector<bool> done(n, false);
  // Each machine installs for a while after booting the CD.
  std::vector<std::chrono::steady_clock::time_point> booted_at(n);
  std::vector<int> install_ms(n);
  std::mt19937 rng(7);
  for (auto& ms : install_ms) ms = std::uniform_int_distribution<int>(0, 1500)(rng);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(240);
  int remaining = n;
  while (remaining > 0 && std::chrono::steady_clock::now() < deadline) {
    for (int i = 0; i < n; ++i) {
      if (done[i]) continue;
      try {
        bool booted_cd = false;
        for (const auto& b : bmcs[i]->boots()) booted_cd |= b.boot_target == "Cd";
        std::string serial = "CRASH" + std::to_string(1000 + i);
        if (booted_cd && booted_at[i] == std::chrono::steady_clock::time_point{})
          booted_at[i] = std::chrono::steady_clock::now();
        bool installed = booted_cd && std::chrono::steady_clock::now() - booted_at[i] >
                                          std::chrono::milliseconds(install_ms[i]);
        if (booted_cd && (reported[i] == 0 || (reported[i] == 1 && installed))) {
          auto key = controller.webhook_key(ids[i]);
          auto status = reported[i] == 0 ? "running" : "success";
          auto r = send_webhook(controller, serial, key, R"({"job_id":")" + ids[i] + R"(","status":")" + status + "\"}");
          if (r.status == 200) ++reported[i];
        }
        auto job = controller.get("/api/v1/jobs/" + ids[i]);
        if (job.status == 200 && job.json()["status"] == "complete") {
          done[i] = true;
          --remaining;
        }
      } catch (const std::exception&) {
        // The controller is down right now: try again on the next round.
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  stop = true;
  killer.join();

  int succeeded = 0, failed = 0;
  for (int i = 0; i < n; ++i) {
    auto r = controller.get("/api/v1/jobs/" + ids[i]);
    ASSERT_EQ(r.status, 200) << "job lost: " << ids[i];
    auto job = r.json();
    EXPECT_EQ(job["status"], "complete") << job.dump();
    (job["outcome"] == "succeeded" ? succeeded : failed)++;
    int cd_boots = 0, disk_boots = 0;
    for (const auto& b : bmcs[i]->boots()) (b.boot_target == "Cd" ? cd_boots : disk_boots)++;
    EXPECT_LE(cd_boots, 1) << "reset into the maintenance OS sent twice for " << ids[i];
    EXPECT_LE(disk_boots, 1) << "reset into the disk sent twice for " << ids[i];
    if (job["outcome"] == "succeeded") {
      EXPECT_EQ(cd_boots, 1) << ids[i];
      EXPECT_EQ(bmcs[i]->slot_image("CD1") + bmcs[i]->slot_image("CD2"), "") << "media left inserted: " << ids[i];
    } else {
      // The one legitimate failure: the reset was recorded, then the crash came before it
      // reached the BMC; it is never resent, so the machine never booted and the job timed out.
      EXPECT_EQ(cd_boots, 0) << "a machine that booted must not fail: " << job.dump();
      EXPECT_NE(job["error"].get<std::string>().find("did not report"), std::string::npos) << job.dump();
    }
  }
  std::printf("crash safety: %d jobs, %d SIGKILLs, %d succeeded, %d failed (reset lost in a crash → boot timeout)\n",
              n, kills.load(), succeeded, failed);
  EXPECT_GE(kills.load(), std::min(n, 20));
  // Losing a reset takes a crash in the instant between recording and sending it: rare.
  EXPECT_GE(succeeded * 10, n * 9) << "most jobs must survive the crashes";
}
