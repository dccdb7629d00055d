// Bad requests get 400 with the JSON-pointer path of every bad field; nothing is stored.
#include <gtest/gtest.h>

#include "tests/integration/controller/test_jobs.hpp"
#include "tests/support/controller_process.hpp"

using namespace provisioner::test;

namespace {

struct BadRequest {
  const char* name;
  std::string body;
  const char* path;  // must appear among the reported fields
};

std::string with_recipe(const char* patch) {
  auto recipe = linux_recipe();
  recipe.merge_patch(nlohmann::json::parse(patch));
  return job_body("SN-1", recipe);
}

std::vector<BadRequest> bad_requests() {
  return {
      {"malformed_json", R"({"server": {"serial": "x"}, )", ""},
      {"not_an_object", "[1,2,3]", ""},
      {"missing_server", R"({"recipe_ref": "debian-12"})", "/server"},
      {"bad_serial", R"({"server": {"serial": "a b/c"}, "recipe_ref": "debian-12"})", "/server/serial"},
      {"no_recipe", R"({"server": {"serial": "x"}})", ""},
      {"unknown_recipe_ref", R"({"server": {"serial": "x"}, "recipe_ref": "no-such-recipe"})", "/recipe_ref"},
      {"traversal_recipe_ref", R"({"server": {"serial": "x"}, "recipe_ref": "../../etc/passwd"})", "/recipe_ref"},
      {"bad_bmc_address", R"({"server": {"serial": "x", "bmc": {"address": "ftp://bmc"}}, "recipe_ref": "debian-12"})",
       "/server/bmc/address"},
      {"bad_mac", R"({"server": {"serial": "x", "macs": ["zz:zz"]}, "recipe_ref": "debian-12"})", "/server/macs/0"},
      {"unknown_top_level", R"({"server": {"serial": "x"}, "recipe_ref": "debian-12", "priority": 1})", "/priority"},
      {"recipe_missing_disk", with_recipe(R"({"target_disk": null})"), "/recipe/target_disk"},
      {"recipe_bad_target", with_recipe(R"({"task_target": "x.service"})"), "/recipe/task_target"},
      {"recipe_bad_partition_size", with_recipe(R"({"partition_layout": [{"size": "10 parsecs", "type_guid": "0fc63daf-8483-4772-8e79-3d69d8477de4", "format": "ext4"}]})"),
       "/recipe/partition_layout/0/size"},
      {"recipe_traversal_file", with_recipe(R"({"files": [{"name": "../../boot/x", "content": ""}]})"),
       "/recipe/files/0/name"},
      {"recipe_bad_digest", with_recipe(R"({"image": {"digest": "sha256:xyz"}})"), "/recipe/image/digest"},
  };
}

}  // namespace

TEST(BadInput, EveryKindAnswers400WithThePath) {
  ControllerProcess controller;
  controller.start();
  for (const auto& c : bad_requests()) {
    auto r = controller.post("/api/v1/jobs", c.body);
    EXPECT_EQ(r.status, 400) << c.name << ": " << r.body;
    auto body = r.json();
    EXPECT_TRUE(body.contains("error")) << c.name;
    if (std::string(c.path).empty()) continue;
    bool found = false;
    for (const auto& f : body.value("fields", nlohmann::json::array())) found |= f["path"] == c.path;
    EXPECT_TRUE(found) << c.name << ": expected a field at " << c.path << ", got " << body.dump();
  }
  // Nothing half-made was kept.
  EXPECT_EQ(controller.get("/api/v1/jobs").json()["jobs"].size(), 0u);
}

TEST(BadInput, BadListQueriesAnswer400) {
  ControllerProcess controller;
  controller.start();
  for (const char* q : {"?limit=0", "?limit=abc", "?limit=100000", "?status=exploded", "?cursor=zzz"})
    EXPECT_EQ(controller.get(std::string("/api/v1/jobs") + q).status, 400) << q;
}

TEST(BadInput, OversizeBodiesAnswer413) {
  ControllerProcess controller("max_body_bytes = 4096\n");
  controller.start();
  std::string big(5000, ' ');
  big = job_body() + big;
  auto declared = controller.post("/api/v1/jobs", big);
  EXPECT_EQ(declared.status, 413) << declared.body;

  // A chunked body carries no length up front: refused once read past the limit.
  std::string chunk(6000, ' ');
  char size_hex[16];
  std::snprintf(size_hex, sizeof size_hex, "%zx", chunk.size());
  std::string raw = "POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                    std::string(ControllerProcess::kAdminToken) +
                    "\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + size_hex + "\r\n" + chunk +
                    "\r\n0\r\n\r\n";
  auto chunked = parse_response(raw_exchange(controller.port(), raw));
  EXPECT_EQ(chunked.status, 413) << chunked.body;

  // A body just under the limit is still read and judged on its content.
  EXPECT_EQ(controller.post("/api/v1/jobs", job_body()).status, 201);
}

TEST(BadInput, UnknownRoutesAndMethods) {
  ControllerProcess controller;
  controller.start();
  EXPECT_EQ(controller.get("/api/v1/nothing").status, 404);
  EXPECT_EQ(provisioner::test::http_request(controller.port(), "DELETE", "/api/v1/jobs").status, 405);
}
