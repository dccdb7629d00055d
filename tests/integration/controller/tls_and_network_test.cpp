// HTTPS on the API and the artifact server, and the network media mode's task-by-serial.
#include <gtest/gtest.h>

#include <thread>

#include "common/atomic_file.hpp"
#include "common/crypto.hpp"
#include "tests/integration/controller/iso_tools.hpp"
#include "tests/integration/controller/test_jobs.hpp"
#include "tests/integration/controller/webhook_signer.hpp"
#include "tests/support/controller_process.hpp"

using namespace provisioner;
using namespace provisioner::test;

TEST(Tls, ApiAndArtifactsServeHttps) {
  TempDir tmp;
  auto cert = tmp.path() / "cert.pem", key = tmp.path() / "key.pem";
  run("openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 "
      "-keyout '" + key.string() + "' -out '" + cert.string() + "' 2>/dev/null");
  ASSERT_TRUE(std::filesystem::exists(cert));
  ControllerProcess controller("[tls]\ncert = \"" + cert.string() + "\"\nkey = \"" + key.string() + "\"\n", "text",
                               "tls_cert = \"" + cert.string() + "\"\ntls_key = \"" + key.string() + "\"\n");
  controller.use_tls();
  controller.start();
  auto base = "https://127.0.0.1:" + std::to_string(controller.port());
  auto curl = "curl -sS --cacert '" + cert.string() + "' -o /dev/null -w '%{http_code}' ";
  EXPECT_EQ(run(curl + base + "/healthz"), "200");
  EXPECT_EQ(run(curl + "-H 'Authorization: Bearer " + ControllerProcess::kAdminToken + "' " + base + "/api/v1/jobs"),
            "200");
  EXPECT_EQ(run(curl + base + "/api/v1/jobs"), "401");
  // Plain HTTP on the TLS port gets nothing useful.
  EXPECT_NE(run("curl -sS -m 2 -o /dev/null -w '%{http_code}' http://127.0.0.1:" + std::to_string(controller.port()) +
                "/healthz 2>/dev/null"),
            "200");

  auto id = run("curl -sS --cacert '" + cert.string() + "' -H 'Authorization: Bearer " +
                ControllerProcess::kAdminToken + "' -d '" + job_body() + "' " + base + "/api/v1/jobs");
  auto job_id = nlohmann::json::parse(id)["id"].get<std::string>();
  std::string url;
  for (int i = 0; i < 200 && url.empty(); ++i) {
    auto job = nlohmann::json::parse(run("curl -sS --cacert '" + cert.string() + "' -H 'Authorization: Bearer " +
                                         ControllerProcess::kAdminToken + "' " + base + "/api/v1/jobs/" + job_id));
    if (job["media"].is_object()) url = job["media"]["task_iso"]["url"];
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_EQ(url.rfind("https://", 0), 0u) << url;
  EXPECT_EQ(run("curl -sS --cacert '" + cert.string() + "' -o /dev/null -w '%{http_code}' -r 0-2047 '" + url + "'"),
            "206");
}

TEST(NetworkMode, TheMachineGetsItsTaskBySerialOnlyWhileItNeedsIt) {
  ControllerProcess controller;
  controller.start();
  EXPECT_EQ(controller.get("/api/v1/tasks/by-serial/SN-NET", nullptr).status, 404);

  auto recipe = linux_recipe();
  recipe["media_mode"] = "network";
  auto id = controller.post("/api/v1/jobs", job_body("SN-NET", recipe)).json()["id"].get<std::string>();
  auto job = controller.wait_for_status(id, "provisioning");
  auto r = controller.get("/api/v1/tasks/by-serial/SN-NET", nullptr);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("Content-Type"), "application/octet-stream");
  EXPECT_EQ(crypto::sha256_hex(r.body), job["media"]["task_iso"]["sha256"]) << "the job's own task ISO";

  // Other modes never hand a task out by serial.
  controller.post("/api/v1/jobs", job_body("SN-CD"));
  EXPECT_EQ(controller.get("/api/v1/tasks/by-serial/SN-CD", nullptr).status, 404);

  // Once the maintenance OS reports, the task is no longer handed out.
  auto report = send_webhook(controller, "SN-NET", controller.webhook_key(id),
                             R"({"job_id":")" + id + R"(","status":"running"})");
  ASSERT_EQ(report.status, 200);
  EXPECT_EQ(controller.get("/api/v1/tasks/by-serial/SN-NET", nullptr).status, 404);
}
