// POST /api/v1/artifacts: streamed uploads checked against the client's digest.
#include <gtest/gtest.h>

#include "common/crypto.hpp"
#include "tests/integration/controller/test_jobs.hpp"
#include "tests/support/controller_process.hpp"

using namespace provisioner;
using namespace provisioner::test;

namespace {
HttpResponse upload(const ControllerProcess& c, const std::string& query, const std::string& body,
                    const char* token = ControllerProcess::kCiToken) {
  Headers h{{"Content-Type", "application/octet-stream"}};
  if (token) h.push_back({"Authorization", std::string("Bearer ") + token});
  return http_request(c.port(), "POST", "/api/v1/artifacts" + query, h, body);
}
}  // namespace

TEST(Upload, StoresWhatTheDigestNamesAndServesIt) {
  ControllerProcess controller("", "text", "max_upload_bytes = 67108864\n");
  controller.start();
  // Larger than the API's 1 MiB body limit: uploads stream past it.
  std::string body = crypto::random_bytes(8 << 20);
  auto sha = crypto::sha256_hex(body);
  auto r = upload(controller, "?digest=sha256:" + sha + "&name=rootfs.iso", body);
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(r.json()["sha256"], sha);
  EXPECT_EQ(r.json()["size"], body.size());
  EXPECT_TRUE(r.json()["url"].get<std::string>().ends_with("/artifacts/" + sha + "/rootfs.iso"));
  auto got = http_request(controller.artifacts_port(), "GET", "/artifacts/" + sha + "/rootfs.iso");
  ASSERT_EQ(got.status, 200);
  EXPECT_TRUE(got.body == body);
  // OS images for recipes are served under their own suffixes too.
  ASSERT_EQ(upload(controller, "?digest=sha256:" + sha + "&name=rootfs.tar.zst", body).status, 201);
  EXPECT_EQ(http_request(controller.artifacts_port(), "HEAD", "/artifacts/" + sha + "/rootfs.tar.zst").status, 200);
  EXPECT_EQ(http_request(controller.artifacts_port(), "HEAD", "/artifacts/" + sha + "/rootfs.exe").status, 404);
  auto again = upload(controller, "?digest=sha256:" + sha, body);
  EXPECT_EQ(again.status, 201);
  EXPECT_EQ(again.json()["reused"], true);
}

TEST(Upload, RefusesWrongDigestsSizesAndCallers) {
  ControllerProcess controller("", "text", "max_upload_bytes = 65536\n");
  controller.start();
  std::string body(1000, 'x');
  auto wrong = upload(controller, "?digest=sha256:" + crypto::sha256_hex("other"), body);
  EXPECT_EQ(wrong.status, 400) << wrong.body;
  EXPECT_EQ(upload(controller, "", body).json()["fields"][0]["path"], "digest");
  EXPECT_EQ(upload(controller, "?digest=md5:abc", body).status, 400);
  EXPECT_EQ(upload(controller, "?digest=sha256:" + crypto::sha256_hex(body) + "&name=../x", body).status, 400);
  std::string big(70000, 'y');
  EXPECT_EQ(upload(controller, "?digest=sha256:" + crypto::sha256_hex(big), big).status, 413);
  EXPECT_EQ(upload(controller, "?digest=sha256:" + crypto::sha256_hex(body), body, nullptr).status, 401);
  EXPECT_EQ(upload(controller, "?digest=sha256:" + crypto::sha256_hex(body), body, ControllerProcess::kAuditorToken)
                .status,
            403);
  // Nothing half-written was kept: the one good upload is all the store holds.
  EXPECT_EQ(http_request(controller.artifacts_port(), "HEAD",
                         "/artifacts/" + crypto::sha256_hex(body) + "/artifact.iso")
                .status,
            404);
}

TEST(Upload, AnUploadedMaintenanceIsoIsUsedByTheNextJob) {
  ControllerProcess controller;
  controller.start();
  std::string iso = crypto::random_bytes(256 * 1024);  // content does not matter in dual-cd mode
  auto sha = crypto::sha256_hex(iso);
  auto r = upload(controller, "?digest=sha256:" + sha + "&purpose=maintenance-iso", iso, ControllerProcess::kAdminToken);
  ASSERT_EQ(r.status, 201) << r.body;
  auto id = controller.post("/api/v1/jobs", job_body()).json()["id"].get<std::string>();
  auto job = controller.wait_for_status(id, "provisioning");
  EXPECT_EQ(job["media"]["boot_iso"]["sha256"], sha);
  EXPECT_EQ(upload(controller, "?digest=sha256:" + sha + "&purpose=firmware", iso).status, 400);
}
