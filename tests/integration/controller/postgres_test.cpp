// The controller on PostgreSQL (database_url): a real PostgreSQL 15 server this process
// starts (tests/support/postgres_server.hpp), the controller process, a mock BMC over HTTP.
#include <gtest/gtest.h>

#include <chrono>
#include <ctime>
#include <thread>

#include "tests/integration/controller/iso_tools.hpp"
#include "tests/integration/controller/test_jobs.hpp"
#include "tests/integration/controller/webhook_signer.hpp"
#include "tests/support/controller_process.hpp"
#include "tests/support/mock_bmc.hpp"
#include "tests/support/postgres_server.hpp"

using namespace provisioner;
using namespace provisioner::test;

namespace {

// In the URL only, to show it never reaches a log line or an answer (the test server trusts
// its socket and never asks for it).
constexpr const char* kPassword = "pg-password-4c1e9b";

class PostgresController : public testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    server = PostgresServer::start(why);
    ASSERT_NE(server, nullptr) << why;
    server->create_database("provisioner");
    url = "postgresql://postgres:" + std::string(kPassword) + "@/provisioner?host=" + server->dir().string();
    base = make_maintenance_iso(tmp.path());
    bmc = std::make_unique<MockBmc>();
  }

  std::unique_ptr<ControllerProcess> controller_on(const std::string& database_url) {
    return std::make_unique<ControllerProcess>("database_url = \"" + database_url + "\"\n" + kFastRedfishToml, "text",
                                               "maintenance_iso = \"" + base.string() + "\"\n");
  }

  std::string submit(ControllerProcess& c) {
    nlohmann::json body{{"server",
                         {{"serial", "MOCK0001"},
                          {"bmc", {{"address", bmc->address()}, {"username", "admin"}, {"password", "mock-bmc-password"}}}}},
                        {"recipe", linux_recipe()}};
    auto r = c.post("/api/v1/jobs", body.dump());
    EXPECT_EQ(r.status, 201) << r.body;
    return r.json().value("id", "");
  }

  void wait_for_boots(std::size_t n) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (bmc->boots().size() < n && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }

  std::unique_ptr<PostgresServer> server;
  std::string url;
  TempDir tmp;
  std::filesystem::path base;
  std::unique_ptr<MockBmc> bmc;
};

}  // namespace

TEST_F(PostgresController, AJobRunsToTheDiskAcrossAControllerCrashWithOneResetPerPhase) {
  auto controller = controller_on(url);
  controller->start();
  auto id = submit(*controller);
  wait_for_boots(1);
  ASSERT_EQ(bmc->boots().size(), 1u) << controller->log_text();
  EXPECT_EQ(bmc->boots()[0].boot_target, "Cd");

  // SIGKILL while the machine installs: the job and its phases are in PostgreSQL, and the
  // restarted controller neither resets the machine again nor forgets the job.
  controller->kill(SIGKILL);
  controller->start();
  auto job = controller->get("/api/v1/jobs/" + id).json();
  EXPECT_EQ(job["status"], "provisioning") << job;
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  EXPECT_EQ(bmc->boots().size(), 1u) << "a restart must never reset the machine again";

  const auto ts = std::time(nullptr);
  const auto key = controller->webhook_key(id);
  auto running = nlohmann::json{{"job_id", id}, {"status", "running"}, {"step", "partition.service"}}.dump();
  ASSERT_EQ(send_webhook(*controller, "MOCK0001", key, running, ts).status, 200);
  // A replayed report is refused: the signatures seen are in the database too.
  EXPECT_EQ(send_webhook(*controller, "MOCK0001", key, running, ts).status, 409);
  auto success = nlohmann::json{{"job_id", id}, {"status", "success"}}.dump();
  ASSERT_EQ(send_webhook(*controller, "MOCK0001", key, success).status, 200);
  job = controller->wait_for_status(id, "complete");
  EXPECT_EQ(job["outcome"], "succeeded");
  ASSERT_EQ(bmc->boots().size(), 2u);
  EXPECT_EQ(bmc->boots()[1].boot_target, "Hdd");

  // The password in the URL is nowhere: not in the log, not in an answer.
  auto log = controller->log_text();
  EXPECT_NE(log.find("postgresql database 'provisioner'"), std::string::npos) << log;
  EXPECT_EQ(log.find(kPassword), std::string::npos);
  EXPECT_EQ(controller->get("/api/v1/jobs/" + id).body.find(kPassword), std::string::npos);
  EXPECT_EQ(controller->get("/metrics").body.find(kPassword), std::string::npos);
}

TEST_F(PostgresController, ASecondControllerOnTheSameDatabaseRefusesToStart) {
  auto first = controller_on(url);
  first->start();
  // Work is not leased across controllers yet: a second one would drive the same BMCs.
  auto second = controller_on(url);
  EXPECT_THROW(second->start(), std::runtime_error);
  auto log = second->log_text();
  EXPECT_NE(log.find("another controller is using the postgresql database"), std::string::npos) << log;
  EXPECT_EQ(log.find(kPassword), std::string::npos);
  // Once the first is gone (its session with it), the second takes over the same jobs.
  auto id = submit(*first);
  wait_for_boots(1);
  first->kill(SIGKILL);
  second->start();
  EXPECT_EQ(second->get("/api/v1/jobs/" + id).json()["status"], "provisioning");
}

TEST_F(PostgresController, AnUnreachableDatabaseIsAClearErrorWithoutThePassword) {
  auto controller = controller_on("postgresql://postgres:" + std::string(kPassword) + "@/provisioner?host=" +
                                  (tmp.path() / "no-server-here").string());
  EXPECT_THROW(controller->start(), std::runtime_error);
  auto log = controller->log_text();
  EXPECT_NE(log.find("cannot connect to the postgresql database 'provisioner'"), std::string::npos) << log;
  EXPECT_EQ(log.find(kPassword), std::string::npos) << log;
}
