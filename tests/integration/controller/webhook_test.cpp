// The status webhook: per-job HMAC, freshness, replay protection, idempotent outcomes.
#include <gtest/gtest.h>

#include "tests/integration/controller/test_jobs.hpp"
#include "tests/integration/controller/webhook_signer.hpp"

using namespace provisioner;
using namespace provisioner::test;

class Webhook : public testing::Test {
 protected:
  void SetUp() override {
    controller.start();
    id = controller.post("/api/v1/jobs", job_body("SN-HOOK")).json()["id"].get<std::string>();
    key = controller.webhook_key(id);
    controller.wait_for_status(id, "provisioning");  // media built: the machine could boot now
  }
  std::string report(const std::string& status, const std::string& extra = "") {
    return R"({"job_id":")" + id + R"(","status":")" + status + "\"" + extra + "}";
  }
  nlohmann::json job() { return controller.get("/api/v1/jobs/" + id).json(); }

  ControllerProcess controller;
  std::string id, key;
};

TEST_F(Webhook, GoodReportsDriveTheJob) {
  auto r = send_webhook(controller, "SN-HOOK", key, report("running", R"(,"step":"partition.service")"));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json()["status"], "provisioning");
  auto j = job();
  EXPECT_EQ(j["status"], "provisioning");
  ASSERT_EQ(j["phases"].size(), 3u);
  EXPECT_EQ(j["phases"][0]["name"], "iso_built");
  EXPECT_EQ(j["phases"][1]["name"], "maint_booted");
  EXPECT_EQ(j["phases"][2]["name"], "step:partition.service");

  r = send_webhook(controller, "SN-HOOK", key, report("success"));
  ASSERT_EQ(r.status, 200) << r.body;
  // No BMC to clean up after: the reconciler completes the job right away.
  auto done = controller.wait_for_status(id, "complete");
  EXPECT_EQ(done["outcome"], "succeeded");
  EXPECT_EQ(done["phases"].back()["name"], "cleanup_done");
}

TEST_F(Webhook, FailureRecordsTheStep) {
  send_webhook(controller, "SN-HOOK", key, report("running"));
  auto r = send_webhook(controller, "SN-HOOK", key,
                        report("failed", R"(,"failed_step":"image-linux.service","log_tail":"no space left")"));
  ASSERT_EQ(r.status, 200) << r.body;
  auto j = controller.wait_for_status(id, "complete");
  EXPECT_EQ(j["outcome"], "failed");
  EXPECT_EQ(j["failed_step"], "image-linux.service");
  bool detail = false;
  for (const auto& e : j["history"]) detail |= e["name"] == "failed" && e["detail"] == "no space left";
  EXPECT_TRUE(detail) << j.dump();
}

TEST_F(Webhook, ForgedRequestsAreRefused) {
  EXPECT_EQ(send_webhook(controller, "SN-HOOK", "not-the-key", report("success")).status, 401);
  EXPECT_EQ(send_webhook(controller, "SN-OTHER", key, report("success")).status, 401) << "wrong serial";
  // Body changed after signing.
  auto ts = std::time(nullptr);
  auto sig = sign_webhook(key, ts, report("running"));
  auto r = http_request(controller.port(), "POST", "/api/v1/status-webhook/SN-HOOK",
                        {{"X-Provisioner-Timestamp", std::to_string(ts)}, {"X-Provisioner-Signature", sig}},
                        report("success"));
  EXPECT_EQ(r.status, 401);
  // No signature at all.
  EXPECT_EQ(http_request(controller.port(), "POST", "/api/v1/status-webhook/SN-HOOK", {}, report("success")).status, 401);
  EXPECT_EQ(job()["outcome"], nullptr);
}

TEST_F(Webhook, StaleAndFutureTimestampsAreRefused) {
  auto now = std::time(nullptr);
  EXPECT_EQ(send_webhook(controller, "SN-HOOK", key, report("success"), now - 3600).status, 401);
  EXPECT_EQ(send_webhook(controller, "SN-HOOK", key, report("success"), now + 3600).status, 401);
  EXPECT_EQ(job()["outcome"], nullptr);
}

TEST_F(Webhook, ReplayIsRefused) {
  auto ts = std::time(nullptr);
  auto body = report("running");
  ASSERT_EQ(send_webhook(controller, "SN-HOOK", key, body, ts).status, 200);
  auto replay = send_webhook(controller, "SN-HOOK", key, body, ts);
  EXPECT_EQ(replay.status, 409) << replay.body;
  // Still refused after a restart: seen signatures are stored, not held in memory.
  controller.restart();
  EXPECT_EQ(send_webhook(controller, "SN-HOOK", key, body, ts).status, 409);
}

TEST_F(Webhook, DuplicateSuccessIsIdempotent) {
  ASSERT_EQ(send_webhook(controller, "SN-HOOK", key, report("success")).status, 200);
  auto first = controller.wait_for_status(id, "complete");
  auto again = send_webhook(controller, "SN-HOOK", key, report("success"), std::time(nullptr) + 1);
  ASSERT_EQ(again.status, 200) << again.body;
  EXPECT_EQ(again.json()["applied"], false);
  EXPECT_EQ(job()["history"], first["history"]) << "a duplicate success must not add a transition";
  // A contradicting outcome is a conflict, not a change.
  EXPECT_EQ(send_webhook(controller, "SN-HOOK", key, report("failed", R"(,"failed_step":"x.service")"),
                         std::time(nullptr) + 2)
                .status,
            409);
  EXPECT_EQ(job()["outcome"], "succeeded");
}

TEST_F(Webhook, CanceledJobsRefuseReports) {
  controller.post("/api/v1/jobs/" + id + "/cancel", "");
  EXPECT_EQ(send_webhook(controller, "SN-HOOK", key, report("success")).status, 409);
  EXPECT_EQ(job()["status"], "canceled");
}

TEST_F(Webhook, MalformedBodiesAnswer400) {
  EXPECT_EQ(send_webhook(controller, "SN-HOOK", key, "{not json").status, 400);
  EXPECT_EQ(send_webhook(controller, "SN-HOOK", key, R"({"job_id":"x","status":"weird"})").status, 400);
}
