// Runs the controller with known secrets, exercises every route that touches them, then
// searches the whole log and every API answer: no secret may appear.
#include <gtest/gtest.h>

#include "common/atomic_file.hpp"
#include "tests/integration/controller/test_jobs.hpp"
#include "tests/integration/controller/webhook_signer.hpp"

using namespace provisioner::test;

namespace {
const std::string kBmcPassword = "Bmc-P4ss-7c1e9d";
const std::string kRecipeSecret = "recipe-secret-52ad0b";
const std::string kUserPassword = "cloudinit-pw-9e3f11";
}  // namespace

class Secrets : public testing::TestWithParam<const char*> {};

TEST_P(Secrets, NeverInLogsOrAnswers) {
  ControllerProcess controller("", GetParam());
  controller.start();
  auto recipe = linux_recipe();
  recipe["secrets"] = {{"db_password", kRecipeSecret}};
  recipe["user_data"] = "#cloud-config\nchpasswd:\n  password: " + kUserPassword + "\n";
  nlohmann::json body{{"server",
                       {{"serial", "SN-SECRET"},
                        {"bmc", {{"address", "https://127.0.0.1:1"}, {"username", "root"}, {"password", kBmcPassword}}}}},
                      {"recipe", recipe}};
  std::vector<std::string> answers;
  auto created = controller.post("/api/v1/jobs", body.dump());
  ASSERT_EQ(created.status, 201) << created.body;
  answers.push_back(created.body);
  auto id = created.json()["id"].get<std::string>();
  auto key = controller.webhook_key(id);

  answers.push_back(controller.get("/api/v1/jobs/" + id).body);
  answers.push_back(controller.get("/api/v1/jobs").body);
  answers.push_back(controller.get("/metrics").body);
  answers.push_back(controller.get("/api/v1/jobs", "wrong-token-value-1234").body);
  answers.push_back(send_webhook(controller, "SN-SECRET", key, R"({"job_id":")" + id + R"(","status":"running"})").body);
  answers.push_back(send_webhook(controller, "SN-SECRET", "forged-key", R"({"job_id":")" + id + R"(","status":"running"})").body);
  answers.push_back(send_webhook(controller, "SN-SECRET", key,
                                 R"({"job_id":")" + id + R"(","status":"failed","failed_step":"a.service"})").body);
  controller.restart();
  answers.push_back(controller.get("/api/v1/jobs/" + id).body);
  controller.kill(SIGTERM);

  auto log = controller.log_text();
  ASSERT_NE(log.find(id), std::string::npos) << "the log should talk about the job:\n" << log;
  ASSERT_NE(log.find("SN-SECRET"), std::string::npos) << "job lines carry the serial";
  for (const std::string& secret :
       {kBmcPassword, kRecipeSecret, kUserPassword, key, std::string(ControllerProcess::kAdminToken),
        std::string(ControllerProcess::kOperatorToken), std::string(ControllerProcess::kAuditorToken),
        std::string(ControllerProcess::kCiToken), std::string("wrong-token-value-1234")}) {
    EXPECT_EQ(log.find(secret), std::string::npos) << "secret in the log: " << secret;
    for (const auto& a : answers) EXPECT_EQ(a.find(secret), std::string::npos) << "secret in an answer: " << a;
  }
  // The database holds the BMC password and the recipe's secrets sealed, not in clear.
  auto db = provisioner::read_file(controller.data_dir() / "provisioner.db");
  ASSERT_TRUE(db.ok());
  for (const std::string& secret : {kBmcPassword, kRecipeSecret, kUserPassword})
    EXPECT_EQ(db->find(secret), std::string::npos) << "in clear in the database: " << secret;
}

INSTANTIATE_TEST_SUITE_P(LogFormats, Secrets, testing::Values("text", "json"));
