// Jobs live in the SQLite file, not in the process: kill -9 between create and get.
#include <gtest/gtest.h>

#include "tests/integration/controller/test_jobs.hpp"
#include "tests/support/controller_process.hpp"

using namespace provisioner::test;

TEST(Restart, JobSurvivesSigkill) {
  ControllerProcess controller;
  controller.start();
  auto created = controller.post("/api/v1/jobs", job_body("SN-RESTART"));
  ASSERT_EQ(created.status, 201);
  auto id = created.json()["id"].get<std::string>();
  auto before = controller.wait_for_status(id, "provisioning");  // the reconciler is done with it

  controller.kill(SIGKILL);
  EXPECT_THROW(controller.get("/healthz"), std::runtime_error);
  controller.start();

  auto after = controller.get("/api/v1/jobs/" + id);
  ASSERT_EQ(after.status, 200) << after.body;
  EXPECT_EQ(after.json(), before);
  // And the restarted controller keeps working on it.
  EXPECT_EQ(controller.post("/api/v1/jobs/" + id + "/cancel", "").json()["status"], "canceled");
}
