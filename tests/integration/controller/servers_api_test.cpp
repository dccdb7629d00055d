// The server registry over HTTP: CRUD, sealed credentials, jobs by reference.
#include <gtest/gtest.h>

#include "common/atomic_file.hpp"
#include "tests/integration/controller/iso_tools.hpp"
#include "tests/integration/controller/test_jobs.hpp"
#include "tests/support/controller_process.hpp"

using namespace provisioner::test;

namespace {
const std::string kPassword = "iDRAC-pw-0e71c2";

HttpResponse send(const ControllerProcess& c, const std::string& method, const std::string& target,
                  const std::string& body = "", const char* token = ControllerProcess::kAdminToken) {
  return http_request(c.port(), method, target,
                      {{"Authorization", std::string("Bearer ") + token}, {"Content-Type", "application/json"}}, body);
}
}  // namespace

class ServersApi : public testing::Test {
 protected:
  // With a maintenance ISO a job stays provisioning while its (absent) BMC is retried, so a
  // cancel finds it cancelable; without one it would fail at once and wait for cleanup.
  ServersApi() : controller("", "text", "maintenance_iso = \"" + make_maintenance_iso(tmp.path()).string() + "\"\n") {}
  void SetUp() override { controller.start(); }
  std::string create(const std::string& serial = "SN-S1") {
    auto r = send(controller, "POST", "/api/v1/servers",
                  R"({"serial":")" + serial + R"(","name":"rack1-u3","macs":["52:54:00:aa:bb:cc"],"labels":{"rack":"r1"},)"
                  R"("bmc":{"address":"https://127.0.0.1:8443","username":"root","password":")" + kPassword +
                      R"(","verify_tls":false}})");
    EXPECT_EQ(r.status, 201) << r.body;
    return r.json()["id"];
  }
  TempDir tmp;
  ControllerProcess controller;
};

TEST_F(ServersApi, CreateGetListWithThePasswordRedacted) {
  auto id = create();
  auto r = send(controller, "GET", "/api/v1/servers/" + id, "", ControllerProcess::kAuditorToken);
  ASSERT_EQ(r.status, 200);
  auto s = r.json();
  EXPECT_EQ(s["serial"], "SN-S1");
  EXPECT_EQ(s["bmc"]["password"], "<redacted>");
  EXPECT_FALSE(s["bmc"].contains("password_sealed"));
  EXPECT_EQ(r.body.find(kPassword), std::string::npos);
  auto list = send(controller, "GET", "/api/v1/servers").json();
  ASSERT_EQ(list["servers"].size(), 1u);
  EXPECT_EQ(list["servers"][0]["id"], id);
  auto db = provisioner::read_file(controller.data_dir() / "provisioner.db");
  EXPECT_EQ(db->find(kPassword), std::string::npos) << "password stored in clear";
}

TEST_F(ServersApi, DuplicateSerialAndBadRecords) {
  create("SN-DUP");
  EXPECT_EQ(send(controller, "POST", "/api/v1/servers", R"({"serial":"SN-DUP"})").status, 409);
  auto bad = send(controller, "POST", "/api/v1/servers", R"({"serial":"x","bmc":{"address":"telnet://x"}})");
  EXPECT_EQ(bad.status, 400);
  EXPECT_EQ(bad.json()["fields"][0]["path"], "/bmc/address");
  EXPECT_EQ(send(controller, "POST", "/api/v1/servers", R"({"name":"no serial"})").json()["fields"][0]["path"],
            "/serial");
  EXPECT_EQ(send(controller, "GET", "/api/v1/servers/srv_0000000000000000").status, 404);
}

TEST_F(ServersApi, PatchMergesAndKeepsOrDropsThePassword) {
  auto id = create();
  auto r = send(controller, "PATCH", "/api/v1/servers/" + id, R"({"name":"renamed","labels":{"rack":null}})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json()["name"], "renamed");
  EXPECT_FALSE(r.json()["labels"].contains("rack"));
  EXPECT_EQ(r.json()["bmc"]["password"], "<redacted>") << "an unrelated patch keeps the password";
  r = send(controller, "PATCH", "/api/v1/servers/" + id, R"({"bmc":{"address":"https://127.0.0.2"}})");
  EXPECT_FALSE(r.json()["bmc"].contains("password")) << "a new address must not inherit the old password";
  EXPECT_EQ(send(controller, "PATCH", "/api/v1/servers/" + id, R"({"serial":"has space"})").status, 400);
  EXPECT_EQ(send(controller, "PATCH", "/api/v1/servers/" + id, "[]").status, 400);
}

TEST_F(ServersApi, JobsReferenceServersAndBlockTheirDeletion) {
  auto id = create("SN-REF");
  auto job = controller.post("/api/v1/jobs", R"({"server":{"id":")" + id + R"("},"recipe_ref":"debian-12"})");
  ASSERT_EQ(job.status, 201) << job.body;
  EXPECT_EQ(job.json()["server"]["serial"], "SN-REF");
  EXPECT_EQ(job.json()["server"]["bmc"]["password"], "<redacted>");
  EXPECT_EQ(job.body.find(kPassword), std::string::npos);
  EXPECT_EQ(send(controller, "DELETE", "/api/v1/servers/" + id).status, 409) << "unfinished job";
  auto canceled = controller.post("/api/v1/jobs/" + job.json()["id"].get<std::string>() + "/cancel", "");
  ASSERT_EQ(canceled.status, 200) << canceled.body;
  EXPECT_EQ(send(controller, "DELETE", "/api/v1/servers/" + id).status, 204);
  EXPECT_EQ(send(controller, "GET", "/api/v1/servers/" + id).status, 404);

  auto unknown = controller.post("/api/v1/jobs", R"({"server":{"id":"srv_0123456789abcdef"},"recipe_ref":"debian-12"})");
  EXPECT_EQ(unknown.status, 400);
  EXPECT_EQ(unknown.json()["fields"][0]["path"], "/server/id");
  auto mixed = controller.post("/api/v1/jobs", R"({"server":{"id":")" + id + R"(","serial":"x"},"recipe_ref":"debian-12"})");
  EXPECT_EQ(mixed.status, 400);
}

TEST_F(ServersApi, TlsPolicyIsModernUnlessOptedIntoAndShownInTheView) {
  auto id = create("SN-TLS");
  auto r = send(controller, "GET", "/api/v1/servers/" + id);
  EXPECT_EQ(r.json()["bmc"]["tls"], "modern") << "TLS >= 1.2 by default";
  r = send(controller, "PATCH", "/api/v1/servers/" + id, R"({"bmc":{"profile":"hpe-ilo-legacy"}})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json()["bmc"]["tls"], "legacy") << "a legacy profile opts in";
  r = send(controller, "PATCH", "/api/v1/servers/" + id, R"({"bmc":{"tls":"modern"}})");
  EXPECT_EQ(send(controller, "GET", "/api/v1/servers/" + id).json()["bmc"]["tls"], "modern") << "the record wins";
  r = send(controller, "PATCH", "/api/v1/servers/" + id, R"({"bmc":{"profile":"generic","tls":"legacy"}})");
  EXPECT_EQ(send(controller, "GET", "/api/v1/servers/" + id).json()["bmc"]["tls"], "legacy");
  auto bad = send(controller, "PATCH", "/api/v1/servers/" + id, R"({"bmc":{"tls":"tls1.0"}})");
  EXPECT_EQ(bad.status, 400);
  EXPECT_EQ(bad.json()["fields"][0]["path"], "/bmc/tls") << bad.body;
  EXPECT_EQ(send(controller, "GET", "/api/v1/servers/" + id).json()["bmc"]["tls"], "legacy") << "nothing half-written";
}
