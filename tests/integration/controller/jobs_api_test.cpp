// Create, get, list and cancel over the real HTTP API of a real controller process.
#include <gtest/gtest.h>

#include <set>

#include "tests/integration/controller/test_jobs.hpp"
#include "tests/support/controller_process.hpp"

using namespace provisioner::test;

class JobsApi : public testing::Test {
 protected:
  void SetUp() override { controller.start(); }
  ControllerProcess controller;
};

TEST_F(JobsApi, CreateAnswers201WithLocationAndAQueuedJob) {
  auto r = controller.post("/api/v1/jobs", job_body());
  ASSERT_EQ(r.status, 201) << r.body;
  auto job = r.json();
  EXPECT_EQ(job["status"], "queued");
  EXPECT_EQ(r.header("Location"), "/api/v1/jobs/" + job["id"].get<std::string>());
  EXPECT_EQ(r.header("Content-Type").rfind("application/json", 0), 0u);
  EXPECT_FALSE(r.header("Transfer-Encoding") == "chunked");
}

TEST_F(JobsApi, GetReturnsTheJobWithHistoryAndTimestamps) {
  auto id = controller.post("/api/v1/jobs", job_body()).json()["id"].get<std::string>();
  controller.wait_for_status(id, "provisioning");
  auto r = controller.get("/api/v1/jobs/" + id, ControllerProcess::kAuditorToken);
  ASSERT_EQ(r.status, 200) << r.body;
  auto job = r.json();
  EXPECT_EQ(job["id"], id);
  EXPECT_EQ(job["server"]["serial"], "SN-0001");
  EXPECT_EQ(job["recipe"]["task_target"], "provision-linux.target");
  ASSERT_EQ(job["history"].size(), 2u);
  EXPECT_EQ(job["history"][0]["name"], "queued");
  EXPECT_EQ(job["history"][1]["name"], "provisioning");
  ASSERT_EQ(job["phases"].size(), 1u);
  EXPECT_EQ(job["phases"][0]["name"], "iso_built");
  EXPECT_EQ(job["media"]["mode"], "dual-cd");
  EXPECT_TRUE(job["media"]["task_iso"]["url"].get<std::string>().ends_with("/task.iso"));
  EXPECT_TRUE(job["failed_step"].is_null());
  EXPECT_EQ(job["created_at"].get<std::string>().back(), 'Z');
  EXPECT_EQ(controller.get("/api/v1/jobs/job_nope").status, 404);
}

TEST_F(JobsApi, RecipeRefLoadsANamedRecipe) {
  auto r = controller.post("/api/v1/jobs", R"({"server":{"serial":"SN-9"},"recipe_ref":"debian-12"})");
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(r.json()["recipe"]["name"], "debian-12");
}

TEST_F(JobsApi, ListPagesNewestFirstWithFilters) {
  std::vector<std::string> ids;
  for (int i = 0; i < 7; ++i)
    ids.push_back(controller.post("/api/v1/jobs", job_body(i % 2 ? "SN-ODD" : "SN-EVEN")).json()["id"]);
  std::vector<std::string> seen;
  std::string cursor;
  int pages = 0;
  do {
    auto r = controller.get("/api/v1/jobs?limit=3" + (cursor.empty() ? "" : "&cursor=" + cursor));
    ASSERT_EQ(r.status, 200) << r.body;
    auto page = r.json();
    for (const auto& j : page["jobs"]) seen.push_back(j["id"]);
    cursor = page["next_cursor"].is_null() ? "" : page["next_cursor"].get<std::string>();
    ++pages;
  } while (!cursor.empty() && pages < 10);
  EXPECT_EQ(pages, 3);
  std::vector<std::string> newest_first(ids.rbegin(), ids.rend());
  EXPECT_EQ(seen, newest_first);

  auto odd = controller.get("/api/v1/jobs?server=SN-ODD").json()["jobs"];
  EXPECT_EQ(odd.size(), 3u);
  for (const auto& j : odd) EXPECT_EQ(j["serial"], "SN-ODD");

  controller.post("/api/v1/jobs/" + ids[0] + "/cancel", "");
  auto canceled = controller.get("/api/v1/jobs?status=canceled").json()["jobs"];
  ASSERT_EQ(canceled.size(), 1u);
  EXPECT_EQ(canceled[0]["id"], ids[0]);
}

TEST_F(JobsApi, CancelIsRecordedOnceAndRefusedWhenTerminal) {
  auto id = controller.post("/api/v1/jobs", job_body()).json()["id"].get<std::string>();
  auto r = controller.post("/api/v1/jobs/" + id + "/cancel", "", ControllerProcess::kOperatorToken);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json()["status"], "canceled");
  auto again = controller.post("/api/v1/jobs/" + id + "/cancel", "");
  EXPECT_EQ(again.status, 200);
  auto job = again.json();
  int cancels = 0;
  for (const auto& e : job["history"]) cancels += e["name"] == "canceled";
  EXPECT_EQ(cancels, 1) << "a repeated cancel must not add a transition";
  EXPECT_EQ(job["outcome"], "canceled");
  EXPECT_EQ(controller.post("/api/v1/jobs/job_nope/cancel", "").status, 404);
}

TEST_F(JobsApi, ConcurrentCreatesAllLandWithDistinctIds) {
  std::vector<std::thread> threads;
  std::mutex m;
  std::set<std::string> ids;
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 10; ++i) {
        auto r = controller.post("/api/v1/jobs", job_body());
        std::lock_guard lock(m);
        if (r.status == 201) ids.insert(r.json()["id"].get<std::string>());
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(ids.size(), 80u);
  EXPECT_EQ(controller.get("/api/v1/jobs?limit=500").json()["jobs"].size(), 80u);
}

TEST_F(JobsApi, HealthAndMetrics) {
  EXPECT_EQ(controller.get("/healthz", nullptr).status, 200);
  auto id = controller.post("/api/v1/jobs", job_body()).json()["id"].get<std::string>();
  controller.wait_for_status(id, "provisioning");
  auto m = controller.get("/metrics", ControllerProcess::kAuditorToken);
  ASSERT_EQ(m.status, 200);
  EXPECT_NE(m.body.find("provisioner_jobs{status=\"provisioning\"} 1"), std::string::npos) << m.body;
  EXPECT_NE(m.body.find("provisioner_job_transitions_total{from=\"queued\",to=\"provisioning\"} 1"),
            std::string::npos);
  EXPECT_NE(m.body.find("provisioner_job_transitions_total{from=\"\",to=\"queued\"} 1"), std::string::npos);
  EXPECT_NE(m.body.find("provisioner_http_requests_total{method=\"POST\",route=\"/api/v1/jobs\",code=\"201\"} 1"),
            std::string::npos);
  EXPECT_NE(m.body.find("provisioner_http_request_duration_seconds_bucket{route=\"/api/v1/jobs\",le=\"+Inf\"}"),
            std::string::npos);
}

TEST_F(JobsApi, ServesTheOpenApiDocument) {
  auto r = controller.get("/api/v1/openapi.json", nullptr);
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.json()["openapi"].get<std::string>().rfind("3.", 0), 0u);
}
