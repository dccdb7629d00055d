// A job's media through the whole controller: the reconciler builds the task ISO into the
// artifact store, the artifact server serves it, and real tools read what a BMC would get.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <thread>

#include "common/atomic_file.hpp"
#include "common/crypto.hpp"
#include "tests/integration/controller/iso_tools.hpp"
#include "tests/integration/controller/test_jobs.hpp"
#include "tests/support/controller_process.hpp"

using namespace provisioner;
using namespace provisioner::test;

namespace {

// The artifact URL → a local file, fetched the way a BMC does (curl, plain HTTP GET).
std::string download(const std::string& url, const std::filesystem::path& to) {
  return run("curl -sS -f -o '" + to.string() + "' -w '%{http_code}' '" + url + "'");
}

}  // namespace

TEST(JobMedia, TaskIsoIsServedAndReadableByRealTools) {
  ControllerProcess controller;
  controller.start();
  auto created = controller.post("/api/v1/jobs", job_body("SN-ISO"));
  ASSERT_EQ(created.status, 201) << created.body;
  auto id = created.json()["id"].get<std::string>();
  auto job = controller.wait_for_status(id, "provisioning");
  auto url = job["media"]["task_iso"]["url"].get<std::string>();
  auto sha = job["media"]["task_iso"]["sha256"].get<std::string>();
  EXPECT_EQ(url, "http://127.0.0.1:" + std::to_string(controller.artifacts_port()) + "/artifacts/" + sha + "/task.iso");
  EXPECT_TRUE(job["media"]["boot_iso"].is_null()) << "no maintenance ISO configured";

  TempDir tmp;
  auto iso = tmp.path() / "task.iso";
  ASSERT_EQ(download(url, iso), "200");
  auto bytes = read_file(iso);
  ASSERT_TRUE(bytes.ok());
  EXPECT_EQ(crypto::sha256_hex(*bytes), sha) << "the URL names the content";

  EXPECT_NE(run("blkid -o value -s LABEL '" + iso.string() + "'").find("CIDATA"), std::string::npos);
  auto listing = run("xorriso -indev '" + iso.string() + "' -ls / 2>/dev/null");
  for (const char* f : {"recipe.json", "recipe.schema.json", "job.json", "provisioner-task"})
    EXPECT_NE(listing.find(f), std::string::npos) << f << " missing: " << listing;
  auto job_json = nlohmann::json::parse(run("isoinfo -R -i '" + iso.string() + "' -x /job.json"));
  EXPECT_EQ(job_json["id"], id);
  EXPECT_EQ(job_json["serial"], "SN-ISO");
  EXPECT_EQ(job_json["webhook_url"], "http://127.0.0.1:" + std::to_string(controller.port()) +
                                         "/api/v1/status-webhook/SN-ISO");
  EXPECT_EQ(job_json["signing_key"], controller.webhook_key(id)) << "the dispatcher signs with this key";
  auto recipe = nlohmann::json::parse(run("isoinfo -R -i '" + iso.string() + "' -x /recipe.json"));
  EXPECT_EQ(recipe["hostname"], "node-1");

  // A BMC's first request is often HEAD, then Range reads.
  auto head = http_request(controller.artifacts_port(), "HEAD", "/artifacts/" + sha + "/task.iso");
  EXPECT_EQ(head.status, 200);
  EXPECT_EQ(head.header("Content-Length"), std::to_string(bytes->size()));
  auto range = http_request(controller.artifacts_port(), "GET", "/artifacts/" + sha + "/task.iso",
                            {{"Range", "bytes=32768-32775"}});
  EXPECT_EQ(range.status, 206);
  EXPECT_EQ(range.body, bytes->substr(32768, 8));
}

TEST(JobMedia, IsoLimitsAreCheckedAtSubmission) {
  ControllerProcess controller;
  controller.start();
  auto recipe = linux_recipe();
  recipe["files"] = nlohmann::json::array({{{"name", "a/b/c/d/e/f/g/too-deep.txt"}, {"content", "x"}}});
  auto r = controller.post("/api/v1/jobs", job_body("SN-1", recipe));
  ASSERT_EQ(r.status, 400) << r.body;
  EXPECT_EQ(r.json()["fields"][0]["path"], "/recipe/files/0/name");
}

TEST(JobMedia, SingleIsoIsTheMaintenanceIsoPlusTheTaskSession) {
  TempDir tmp;
  auto base = make_maintenance_iso(tmp.path());
  ASSERT_TRUE(std::filesystem::exists(base));
  ControllerProcess controller("", "text", "maintenance_iso = \"" + base.string() + "\"\n");
  controller.start();

  auto recipe = linux_recipe();
  recipe["media_mode"] = "single-iso";
  auto id = controller.post("/api/v1/jobs", job_body("SN-SINGLE", recipe)).json()["id"].get<std::string>();
  auto job = controller.wait_for_status(id, "provisioning");
  ASSERT_TRUE(job["media"]["task_iso"].is_null());
  auto url = job["media"]["boot_iso"]["url"].get<std::string>();
  EXPECT_TRUE(url.ends_with("/boot.iso"));

  auto single = tmp.path() / "single.iso";
  ASSERT_EQ(download(url, single), "200");
  // Boots like the base: the same El Torito boot images at the same blocks, the same label.
  // (The appended session carries its own copy of the boot catalog, so only its LBA differs.)
  auto torito = [](const std::filesystem::path& p) {
    return run("xorriso -indev '" + p.string() + "' -report_el_torito plain 2>/dev/null | grep -E 'boot img|img path'");
  };
  EXPECT_FALSE(torito(base).empty());
  EXPECT_EQ(torito(single), torito(base));
  EXPECT_EQ(run("blkid -o value -s LABEL '" + single.string() + "'"), "MAINT_OS\n");
  // And shows the task.
  auto job_json = nlohmann::json::parse(run("isoinfo -R -i '" + single.string() + "' -x /job.json"));
  EXPECT_EQ(job_json["id"], id);
  EXPECT_NE(run("isoinfo -R -i '" + single.string() + "' -x /README.txt").find("maintenance OS"), std::string::npos);
  // The per-job ISO is a composite: the base was not copied.
  EXPECT_LT(std::filesystem::file_size(base) * 1.5,
            static_cast<double>(std::filesystem::file_size(base) + std::filesystem::file_size(single)));
}

TEST(JobMedia, DualCdHandsOutTheMaintenanceIso) {
  TempDir tmp;
  auto base = make_maintenance_iso(tmp.path());
  ControllerProcess controller("", "text", "maintenance_iso = \"" + base.string() + "\"\n");
  controller.start();
  auto id = controller.post("/api/v1/jobs", job_body("SN-DUAL")).json()["id"].get<std::string>();
  auto job = controller.wait_for_status(id, "provisioning");
  auto sha = job["media"]["boot_iso"]["sha256"].get<std::string>();
  EXPECT_EQ(sha, crypto::sha256_hex(*read_file(base)));
  auto head = http_request(controller.artifacts_port(), "HEAD", "/artifacts/" + sha + "/maintenance.iso");
  EXPECT_EQ(head.status, 200);
  EXPECT_EQ(head.header("Content-Length"), std::to_string(std::filesystem::file_size(base)));
  EXPECT_FALSE(job["media"]["task_iso"].is_null());
}

TEST(JobMedia, FinishedJobsMediaIsCollected) {
  TempDir tmp;
  auto base = make_maintenance_iso(tmp.path());
  ControllerProcess controller("", "text",
                               "maintenance_iso = \"" + base.string() + "\"\nretention_seconds = 0\n");
  controller.start();
  auto keep = controller.post("/api/v1/jobs", job_body("SN-KEEP")).json()["id"].get<std::string>();
  auto drop = controller.post("/api/v1/jobs", job_body("SN-DROP")).json()["id"].get<std::string>();
  auto kept = controller.wait_for_status(keep, "provisioning")["media"];
  auto dropped = controller.wait_for_status(drop, "provisioning")["media"];
  auto target = [](const nlohmann::json& ref, const char* name) {
    return "/artifacts/" + ref["sha256"].get<std::string>() + "/" + name;
  };
  ASSERT_EQ(http_request(controller.artifacts_port(), "HEAD", target(dropped["task_iso"], "task.iso")).status, 200);
  controller.post("/api/v1/jobs/" + drop + "/cancel", "");
  controller.restart();  // garbage collection runs at start-up, then every gc_interval_seconds
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  int status = 200;
  while (status == 200 && std::chrono::steady_clock::now() < deadline) {
    status = http_request(controller.artifacts_port(), "HEAD", target(dropped["task_iso"], "task.iso")).status;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(status, 404) << "the canceled job's task ISO should be collected; log:\n" << controller.log_text();
  EXPECT_EQ(http_request(controller.artifacts_port(), "HEAD", target(kept["task_iso"], "task.iso")).status, 200);
  EXPECT_EQ(http_request(controller.artifacts_port(), "HEAD", target(kept["boot_iso"], "maintenance.iso")).status, 200)
      << "the maintenance ISO is pinned";
}
