// The sd-bus code against a private dbus-daemon and a fake systemd Manager, and the whole
// `run`/`report` flow of the dispatcher on a fake root.
#include <gtest/gtest.h>

#include "common/webhook.hpp"
#include "dispatcher/dispatcher.hpp"
#include "dispatcher/systemd_bus.hpp"
#include "test_support.hpp"

using namespace provisioner;
using namespace provisioner::dispatcher;
using namespace provisioner::dispatcher::testing;

namespace {

std::int64_t wall_ms() { return SystemClock().now_ms(); }

#define REQUIRE_BUS(bus)                                                          \
  if ((bus).address().empty()) GTEST_SKIP() << "dbus-daemon could not be started"

const std::map<std::string, FakeSystemd::Plan> kPlans = {
    {"provision-linux.target",
     {{{"provision-partition.service", "done"}, {"provision-image-linux.service", "done"}}, "done", false}},
    {"broken.target", {{{"provision-partition.service", "failed"}}, "dependency", false}},
    {"slow.target", {{}, "done", true}},
};

}  // namespace

TEST(SystemdBus, StartsAUnitAndFollowsItsJob) {
  PrivateBus bus;
  REQUIRE_BUS(bus);
  FakeSystemd systemd(bus.address(), kPlans);
  ASSERT_TRUE(systemd.ok());
  auto manager = SystemdManager::connect(bus.address());
  ASSERT_TRUE(manager.ok()) << manager.error().message;
  std::vector<std::string> seen;
  auto outcome = (*manager)->start_unit_and_wait("provision-linux.target", "replace", wall_ms() + 10000,
                                                 [&](const JobOutcome& j) { seen.push_back(j.unit + "=" + j.result); });
  ASSERT_TRUE(outcome.ok()) << outcome.error().message;
  EXPECT_TRUE(outcome->ok());
  EXPECT_EQ(outcome->unit, "provision-linux.target");
  EXPECT_EQ(seen, (std::vector<std::string>{"provision-partition.service=done", "provision-image-linux.service=done",
                                            "provision-linux.target=done"}));
  EXPECT_GE(systemd.subscribed(), 1);
}

TEST(SystemdBus, ReportsFailureTimeoutAndUnknownUnits) {
  PrivateBus bus;
  REQUIRE_BUS(bus);
  FakeSystemd systemd(bus.address(), kPlans);
  auto manager = SystemdManager::connect(bus.address());
  ASSERT_TRUE(manager.ok());
  auto failed = (*manager)->start_unit_and_wait("broken.target", "replace", wall_ms() + 10000);
  ASSERT_TRUE(failed.ok());
  EXPECT_FALSE(failed->ok());
  EXPECT_EQ(failed->result, "dependency");

  auto slow = (*manager)->start_unit_and_wait("slow.target", "replace", wall_ms() + 300);
  ASSERT_TRUE(slow.ok());
  EXPECT_EQ(slow->result, kDispatcherTimeout);

  auto missing = (*manager)->start_unit_and_wait("nope.target", "replace", wall_ms() + 10000);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message.find("not found"), std::string::npos);
}

namespace {

const std::string kKey = "job-key-for-run-test";

struct RunFixture {
  TempDir t;
  SystemClock clock;
  FakeMounter mounter;
  RunOptions options;
  std::mutex mu;
  std::vector<WebhookReport> reports;
  std::vector<std::string> raw_bodies;
  TestHttpServer controller{[this](const TestRequest& r) {
    auto ts = parse_unix_timestamp(r.headers.at("x-provisioner-timestamp"));
    if (!ts || !webhook_signature_matches(kKey, *ts, r.body, r.headers.at("x-provisioner-signature")))
      return TestResponse{401, ""};
    std::lock_guard lock(mu);
    reports.push_back(*parse_webhook_report(r.body));
    raw_bodies.push_back(r.body);
    return TestResponse{200, "{}"};
  }};
  std::string run_address;

  explicit RunFixture(const std::string& bus_address, const std::string& target = "provision-linux.target") {
    options.discovery.cmdline_file = t.path / "proc/cmdline";
    options.discovery.by_label_dir = t.path / "dev/disk/by-label";
    options.discovery.mount_dir = t.path / "run/provision-task";
    options.discovery.download_dir = t.path / "run/provision-download";
    options.discovery.serial_files = {};
    options.discovery.blkid = "";
    options.run_dir = t.path / "run/provision";
    options.bus_address = bus_address;
    options.discover_wait_ms = 0;
    options.failure_report_grace_ms = 200;
    spit(options.discovery.cmdline_file, "ro\n");
    auto recipe = debian_recipe();
    recipe["task_target"] = target;
    auto medium = t.path / "media/task";
    write_task_medium(medium, "job-42", controller.url("/api/v1/status-webhook/SER1"), kKey, recipe);
    auto dev = t.path / "dev/sr1";
    spit(dev, "");
    mounter.devices[fs::canonical(dev).string()] = medium;
    fs::create_directories(options.discovery.by_label_dir);
    fs::create_symlink("../../sr1", options.discovery.by_label_dir / "CIDATA");
  }
  int run() {
    return run_dispatcher(options, mounter, clock,
                          [](std::int64_t ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); });
  }
};

}  // namespace

TEST(DispatcherRun, FindsTaskWritesRunFilesReportsRunningAndStartsTheTarget) {
  PrivateBus bus;
  REQUIRE_BUS(bus);
  FakeSystemd systemd(bus.address(), kPlans);
  RunFixture f(bus.address());
  EXPECT_EQ(f.run(), kExitOk);
  EXPECT_EQ(systemd.started(), std::vector<std::string>{"provision-linux.target"});
  ASSERT_EQ(f.reports.size(), 1u);
  EXPECT_EQ(f.reports[0].status, "running");
  EXPECT_EQ(f.reports[0].job_id, "job-42");
  EXPECT_EQ(f.reports[0].step, "provision-linux.target");
  for (const char* file : {"recipe.env", "layout.json", "webhook.env", "user-data", "meta-data"})
    EXPECT_TRUE(fs::exists(f.options.run_dir / file)) << file;
  for (const auto& body : f.raw_bodies) EXPECT_EQ(body.find(kKey), std::string::npos);
}

TEST(DispatcherRun, ReportsATargetFailureNobodyElseReported) {
  PrivateBus bus;
  REQUIRE_BUS(bus);
  FakeSystemd systemd(bus.address(), kPlans);
  RunFixture f(bus.address(), "broken.target");
  EXPECT_EQ(f.run(), kExitTargetFailed);
  ASSERT_EQ(f.reports.size(), 2u);
  EXPECT_EQ(f.reports[1].status, "failed");
  EXPECT_EQ(f.reports[1].failed_step, "broken.target");
  EXPECT_NE(f.reports[1].log_tail.find("dependency"), std::string::npos);
}

TEST(DispatcherRun, DistinctExitCodesForMissingAndBadTasks) {
  PrivateBus bus;
  REQUIRE_BUS(bus);
  RunFixture f(bus.address());
  fs::remove(f.options.discovery.by_label_dir / "CIDATA");
  EXPECT_EQ(f.run(), kExitNoTask);

  RunFixture g(bus.address());
  auto recipe = debian_recipe();
  recipe["task_target"] = "not a target";
  spit(g.t.path / "media/task/recipe.json", recipe.dump());
  EXPECT_EQ(g.run(), kExitBadTask);
  // The bad recipe is reported to the controller with the job's key.
  ASSERT_EQ(g.reports.size(), 1u);
  EXPECT_EQ(g.reports[0].status, "failed");
  EXPECT_NE(g.reports[0].log_tail.find("/task_target"), std::string::npos);

  // No D-Bus at that address: the task is fine, the bus is not.
  RunFixture h("unix:path=" + (f.t.path / "no-such-socket").string());
  EXPECT_EQ(h.run(), kExitBus);
}

TEST(DispatcherReport, SignsWithTheJobKeyAndMarksTheOutcome) {
  PrivateBus bus;
  REQUIRE_BUS(bus);
  FakeSystemd systemd(bus.address(), kPlans);
  RunFixture f(bus.address());
  ASSERT_EQ(f.run(), kExitOk);
  SystemClock clock;
  auto sleep = [](std::int64_t ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); };
  ReportOptions r;
  r.run_dir = f.options.run_dir;
  r.status = "failed";
  r.unit = "provision-partition.service";
  r.with_journal = false;
  r.check_unit_state = false;
  r.extra_log = "MONITOR_SERVICE_RESULT=exit-code\n";
  EXPECT_EQ(run_report(r, clock, sleep), kExitOk);
  ASSERT_EQ(f.reports.size(), 2u);
  EXPECT_EQ(f.reports[1].status, "failed");
  EXPECT_EQ(f.reports[1].failed_step, "provision-partition.service");
  EXPECT_EQ(f.reports[1].log_tail, "MONITOR_SERVICE_RESULT=exit-code\n");
  EXPECT_NE(slurp(f.options.run_dir / "final-status").find("STATUS=failed"), std::string::npos);

  r.status = "success";
  r.unit = "provision-linux.target";
  EXPECT_EQ(run_report(r, clock, sleep), kExitOk);
  EXPECT_EQ(f.reports.back().progress.value_or(-1), 100);

  r.run_dir = f.t.path / "elsewhere";
  EXPECT_EQ(run_report(r, clock, sleep), kExitNoWebhookConfig);
  r.status = "done";
  EXPECT_EQ(run_report(r, clock, sleep), kExitUsage);
}

TEST(DispatcherReport, SkipsUnitsThatOnlyMissedAFailedDependency) {
  PrivateBus bus;
  REQUIRE_BUS(bus);
  FakeSystemd systemd(bus.address(), kPlans,
                      {{"provision-image-linux.service", "failed"}, {"provision-config-drive.service", "inactive"}});
  ASSERT_TRUE(systemd.ok());
  auto manager = SystemdManager::connect(bus.address());
  ASSERT_TRUE(manager.ok());
  EXPECT_EQ(*(*manager)->active_state("provision-image-linux.service"), "failed");
  EXPECT_EQ((*manager)->active_state("nope.service").error().kind, ErrorKind::not_found);

  RunFixture f(bus.address());
  ASSERT_EQ(f.run(), kExitOk);
  SystemClock clock;
  auto sleep = [](std::int64_t ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); };
  ReportOptions r;
  r.run_dir = f.options.run_dir;
  r.status = "failed";
  r.with_journal = false;
  r.bus_address = bus.address();
  r.unit = "provision-config-drive.service";  // dependency fallout: not reported
  EXPECT_EQ(run_report(r, clock, sleep), kExitOk);
  r.unit = "provision-image-linux.service";  // the real failure
  EXPECT_EQ(run_report(r, clock, sleep), kExitOk);
  ASSERT_EQ(f.reports.size(), 2u);  // running + one failure
  EXPECT_EQ(f.reports[1].failed_step, "provision-image-linux.service");
}
