// Shutdown and cancel are prompt (issue 10, defect 4): waits inside BMC steps (Retry-After,
// task monitors, power polling) end at once on SIGTERM or when the job is canceled, and
// nothing is lost: a restarted controller drives the jobs on from their persisted phases.
// The real controller process against mock BMCs on 127.0.0.1 that answer slowly on purpose.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "tests/integration/controller/iso_tools.hpp"
#include "tests/integration/controller/test_jobs.hpp"
#include "tests/support/controller_process.hpp"
#include "tests/support/mock_bmc.hpp"

using namespace provisioner;
using namespace provisioner::test;
using namespace std::chrono_literals;

namespace {

// Redfish pauses scaled down, except what the BMCs ask for themselves (Retry-After).
constexpr const char* kFastRedfish =
    "[redfish]\npower_poll_ms = 20\nretry_base_ms = 20\nretry_cap_ms = 50\ninsert_retry_delay_ms = 20\n"
    "not_ready_delay_ms = 20\ntask_poll_ms = 20\nrequest_timeout_ms = 5000\n";

nlohmann::json job_for(const std::string& serial, const MockBmc& bmc) {
  return nlohmann::json{{"server",
                         {{"serial", serial},
                          {"bmc", {{"address", bmc.address()}, {"username", "admin"}, {"password", "mock-bmc-password"}}}}},
                        {"recipe", linux_recipe()}};
}

std::vector<std::string> phase_names(const nlohmann::json& job) {
  std::vector<std::string> out;
  for (const auto& p : job["phases"]) out.push_back(p["name"]);
  return out;
}

bool has(const std::vector<std::string>& v, const std::string& x) { return std::find(v.begin(), v.end(), x) != v.end(); }

template <typename Pred>
bool eventually(std::chrono::milliseconds within, Pred pred, std::chrono::milliseconds step = 20ms) {
  auto deadline = std::chrono::steady_clock::now() + within;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(step);
  }
  return pred();
}

void raise_fd_limit() {
  rlimit fds{};
  if (::getrlimit(RLIMIT_NOFILE, &fds) == 0 && fds.rlim_cur < fds.rlim_max) {
    fds.rlim_cur = fds.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &fds);
  }
}

}  // namespace

// 1,000 jobs, each stuck in its first BMC call: every BMC answers 503 with Retry-After: 60,
// so every job's step sleeps a minute before each of its retries. SIGTERM must end all of
// those waits: the process exits within 5 s, and the next start drives every job on.
TEST(Shutdown, SigtermIsPromptWithAThousandJobsWaitingOnSlowBmcs) {
#ifdef PROVISIONER_SANITIZED_CONTROLLER
  constexpr int kJobs = 200;  // an instrumented controller: same waits, fewer of them
#else
  constexpr int kJobs = 1000;
#endif
  raise_fd_limit();  // a thousand mock BMCs and their connections
  TempDir tmp;
  auto base = make_maintenance_iso(tmp.path());
  auto slow = std::make_shared<std::atomic<bool>>(true);
  auto asked = std::make_shared<std::vector<std::atomic<int>>>(kJobs);
  std::vector<std::unique_ptr<MockBmc>> bmcs;
  for (int i = 0; i < kJobs; ++i) {
    MockBmcOptions o;
    o.serial = "SLOW" + std::to_string(100000 + i);
    bmcs.push_back(std::make_unique<MockBmc>(o));
    bmcs.back()->set_hook([slow, asked, i](const RecordedRequest&, int) {
      ++(*asked)[i];
      return slow->load() ? MockAction::respond(503, "", {{"Retry-After", "60"}}) : MockAction::pass();
    });
  }
  ControllerProcess controller(std::string(kFastRedfish) +
                                   "[reconciler]\ntick_ms = 100\nidle_recheck_ms = 200\nworkers = " +
                                   std::to_string(kJobs) + "\n",
                               "text", "maintenance_iso = \"" + base.string() + "\"\n");
  controller.start();

  std::vector<std::string> ids(kJobs);
  std::vector<std::thread> submitters;
  std::atomic<int> refused{0};
  for (int t = 0; t < 8; ++t)
    submitters.emplace_back([&, t] {
      for (int i = t; i < kJobs; i += 8) {
        try {
          auto r = controller.post("/api/v1/jobs", job_for("SLOW" + std::to_string(100000 + i), *bmcs[i]).dump());
          if (r.status == 201) ids[i] = r.json()["id"];
          else ++refused;
        } catch (const std::exception&) {
          ++refused;  // no answer at all: the controller died (its log says why)
        }
      }
    });
  for (auto& t : submitters) t.join();
  ASSERT_EQ(refused.load(), 0) << controller.log_text().substr(0, 20000);

  // Every job is inside its BMC step, waiting out its BMC's Retry-After.
  auto waiting = [&] {
    int n = 0;
    for (const auto& a : *asked) n += a.load() > 0;
    return n;
  };
  ASSERT_TRUE(eventually(300s, [&] { return waiting() == kJobs; }, 100ms))
      << waiting() << " of " << kJobs << " jobs reached their BMC";

  int status = 0;
  auto took = controller.stop(SIGTERM, 30s, &status);
  ASSERT_TRUE(took.has_value()) << "the controller did not exit within 30 s of SIGTERM";
  EXPECT_LE(took->count(), 5000) << "SIGTERM took " << took->count() << " ms";
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "exit status " << status;
  std::printf("SIGTERM with %d jobs waiting on their BMCs: exited after %lld ms\n", kJobs,
              static_cast<long long>(took->count()));
  auto log = controller.log_text();
  EXPECT_EQ(log.find("BMC step failed for good"), std::string::npos) << "an interrupted wait failed a job";

  // The BMCs recover; the next start drives every job on from where it was.
  slow->store(false);
  controller.start();
  auto reset = [&] {
    int n = 0;
    for (const auto& b : bmcs) n += !b->resets().empty();
    return n;
  };
  ASSERT_TRUE(eventually(300s, [&] { return reset() == kJobs; }, 100ms))
      << reset() << " of " << kJobs << " servers reset after the restart";
  for (int i = 0; i < kJobs; ++i) {
    EXPECT_EQ(bmcs[i]->resets().size(), 1u) << "server " << i;
    auto job = controller.get("/api/v1/jobs/" + ids[i]).json();
    EXPECT_EQ(job["status"], "provisioning") << job.dump();
    auto phases = phase_names(job);
    EXPECT_EQ(std::count(phases.begin(), phases.end(), "iso_built"), 1) << "media built once: " << job.dump();
    if (HasFailure()) break;
  }
}

// The job's boot step is sleeping out a Retry-After: 60 when the job is canceled: the wait
// ends at once (cleanup, which needs the same BMC, is done within seconds, not after the
// minute), and the step sends nothing more, so no reset reaches the server.
TEST(Shutdown, CancelEndsARetryAfterWaitAndNoResetIsSent) {
  TempDir tmp;
  auto base = make_maintenance_iso(tmp.path());
  MockBmc bmc;
  auto limited = std::make_shared<std::atomic<int>>(0);
  bmc.set_hook([limited](const RecordedRequest& r, int) {
    if (r.method == "PATCH" && r.path == "/redfish/v1/Systems/1" && limited->fetch_add(1) == 0)
      return MockAction::respond(429, "", {{"Retry-After", "60"}});
    return MockAction::pass();
  });
  ControllerProcess controller(kFastRedfish, "text", "maintenance_iso = \"" + base.string() + "\"\n");
  controller.start();
  auto created = controller.post("/api/v1/jobs", job_for("MOCK0001", bmc).dump());
  ASSERT_EQ(created.status, 201) << created.body;
  std::string id = created.json()["id"];

  auto saw_429 = [&] {
    auto seq = bmc.sequence();
    return has(seq, "PATCH /redfish/v1/Systems/1 429");
  };
  ASSERT_TRUE(eventually(30s, saw_429)) << controller.log_text();
  auto before_cancel = bmc.requests().size();

  auto canceled = controller.post("/api/v1/jobs/" + id + "/cancel", "");
  ASSERT_EQ(canceled.status, 200) << canceled.body;
  auto at = std::chrono::steady_clock::now();
  nlohmann::json job;
  bool cleaned = eventually(5s, [&] {
    job = controller.get("/api/v1/jobs/" + id).json();
    return has(phase_names(job), "cleanup_done");
  });
  auto took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - at);
  EXPECT_TRUE(cleaned) << "cleanup waited for the Retry-After: " << job.dump();
  std::printf("cancel during a Retry-After: 60 wait: cleanup done after %lld ms\n", static_cast<long long>(took.count()));

  EXPECT_EQ(job["status"], "canceled");
  EXPECT_TRUE(bmc.resets().empty()) << "a canceled job reset its server";
  auto requests = bmc.requests();
  for (std::size_t i = before_cancel; i < requests.size(); ++i) {
    const auto& r = requests[i];
    EXPECT_EQ(r.path.find("ComputerSystem.Reset"), std::string::npos) << r.method << " " << r.path;
    if (r.method == "PATCH" && r.path == "/redfish/v1/Systems/1") {
      EXPECT_EQ(r.body.find("\"Cd\""), std::string::npos) << "the boot step went on after the cancel: " << r.body;
    }
  }
  EXPECT_EQ(bmc.slot_image("CD1") + bmc.slot_image("CD2") + bmc.slot_image("USB1"), "") << "media left inserted";
  if (HasFailure())
    for (const auto& line : bmc.sequence()) std::printf("  %s\n", line.c_str());
}

// SIGTERM after the reset was recorded but before it went out (the BMC is slow to answer the
// read of the System that comes first): no reset request was sent, so the intent is
// withdrawn, and the restarted controller resets the server, once. Before, the recorded
// intent stood: the restarted controller never reset the machine and the job failed at the
// boot timeout.
TEST(Shutdown, SigtermBeforeTheResetWentOutWithdrawsItAndTheNextStartResetsOnce) {
  TempDir tmp;
  auto base = make_maintenance_iso(tmp.path());
  MockBmc bmc;
  ControllerProcess controller(kFastRedfish, "text", "maintenance_iso = \"" + base.string() + "\"\n");
  struct JobId {  // written by the test, read by the mock's threads
    std::mutex mutex;
    std::string id;
    std::string get() {
      std::lock_guard lock(mutex);
      return id;
    }
  };
  auto job_id = std::make_shared<JobId>();
  auto stall = std::make_shared<std::atomic<bool>>(true);
  auto stalled = std::make_shared<std::atomic<int>>(0);
  auto boot_patched = std::make_shared<std::atomic<bool>>(false);
  // Stalls the first read of the System that comes after the controller recorded the reset.
  // The read-back of the boot override before it is slowed past the client's 1 s reuse
  // window, so the reset step reads the power state once more: that is the read stalled.
  bmc.set_hook([&controller, job_id, stall, stalled, boot_patched](const RecordedRequest& r, int) {
    if (r.method == "PATCH" && r.path == "/redfish/v1/Systems/1") boot_patched->store(true);
    if (stall->load() && boot_patched->load() && r.method == "GET" && r.path == "/redfish/v1/Systems/1") {
      auto id = job_id->get();
      if (!id.empty() && has(phase_names(controller.get("/api/v1/jobs/" + id).json()), "reset_issued")) {
        stalled->fetch_add(1);
        return MockAction::delay(8000);
      }
      return MockAction::delay(1200);
    }
    return MockAction::pass();
  });
  controller.start();
  auto created = controller.post("/api/v1/jobs", job_for("MOCK0001", bmc).dump());
  ASSERT_EQ(created.status, 201) << created.body;
  {
    std::lock_guard lock(job_id->mutex);
    job_id->id = created.json()["id"];
  }
  ASSERT_TRUE(eventually(30s, [&] { return stalled->load() > 0; })) << controller.log_text();

  int status = 0;
  auto took = controller.stop(SIGTERM, 10s, &status);
  ASSERT_TRUE(took.has_value()) << "the controller did not exit within 10 s of SIGTERM";
  EXPECT_TRUE(bmc.resets().empty()) << "a reset went out before the SIGTERM";

  stall->store(false);
  controller.start();
  ASSERT_TRUE(eventually(30s, [&] { return !bmc.resets().empty(); }))
      << "the restarted controller never reset the server\n" << controller.log_text();
  std::this_thread::sleep_for(1s);  // a second reset would come now
  EXPECT_EQ(bmc.resets().size(), 1u);
  auto job = controller.get("/api/v1/jobs/" + job_id->get()).json();
  auto phases = phase_names(job);
  EXPECT_EQ(std::count(phases.begin(), phases.end(), "reset_issued"), 1) << job.dump();
  bool withdrawn = false;
  for (const auto& h : job["history"])
    withdrawn = withdrawn || (h["name"] == "phase_withdrawn" &&
                              h["detail"].get<std::string>().rfind("reset_issued", 0) == 0);
  EXPECT_TRUE(withdrawn) << job.dump();
  EXPECT_EQ(job["status"], "provisioning") << job.dump();
}
