// Named recipes: PUT/GET/DELETE /api/v1/recipes/{name}/{version}, recipes pushed over /v2/
// as OCI artifacts, both usable as recipe_ref in jobs; versions immutable, secrets sealed.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "common/atomic_file.hpp"
#include "common/crypto.hpp"
#include "controller/registry/oci_digest.hpp"
#include "tests/integration/controller/test_jobs.hpp"
#include "tests/support/controller_process.hpp"

using namespace provisioner;
using namespace provisioner::test;
namespace fs = std::filesystem;

namespace {

constexpr const char* kRecipeType = "application/vnd.provisioner.recipe.v1+json";

Headers auth(const char* token, Headers more = {}) {
  more.push_back({"Authorization", std::string("Bearer ") + token});
  return more;
}

struct NamedRecipes : ::testing::Test {
  void SetUp() override { controller.start(); }
  HttpResponse put(const std::string& path, const nlohmann::json& recipe, const char* token = ControllerProcess::kCiToken) {
    return http_request(controller.port(), "PUT", path, auth(token, {{"Content-Type", "application/json"}}), recipe.dump());
  }
  HttpResponse get(const std::string& path, const char* token = ControllerProcess::kOperatorToken) {
    return http_request(controller.port(), "GET", path, auth(token));
  }
  HttpResponse submit(const std::string& recipe_ref) {
    nlohmann::json body = {{"server", {{"serial", "SN-" + crypto::random_token(4)}}}, {"recipe_ref", recipe_ref}};
    return controller.post("/api/v1/jobs", body.dump(), ControllerProcess::kCiToken);
  }
  // An OCI push of a recipe artifact, as oras does it: config blob, layer blob, manifest.
  HttpResponse push_artifact(const std::string& name, const std::string& tag, const std::string& recipe_bytes) {
    auto blob = [&](const std::string& bytes) {
      auto d = registry::digest_of(bytes).str();
      auto r = http_request(controller.port(), "POST", "/v2/recipes/" + name + "/blobs/uploads/?digest=" + d,
                            auth(ControllerProcess::kCiToken), bytes);
      EXPECT_EQ(r.status, 201) << r.body;
      return d;
    };
    auto config = blob("{}");
    auto layer = blob(recipe_bytes);
    nlohmann::json manifest = {
        {"schemaVersion", 2},
        {"mediaType", "application/vnd.oci.image.manifest.v1+json"},
        {"artifactType", kRecipeType},
        {"config", {{"mediaType", "application/vnd.oci.empty.v1+json"}, {"digest", config}, {"size", 2}}},
        {"layers", nlohmann::json::array({{{"mediaType", kRecipeType}, {"digest", layer}, {"size", recipe_bytes.size()}}})}};
    return http_request(controller.port(), "PUT", "/v2/recipes/" + name + "/manifests/" + tag,
                        auth(ControllerProcess::kCiToken, {{"Content-Type", "application/vnd.oci.image.manifest.v1+json"}}),
                        manifest.dump());
  }
  ControllerProcess controller;
};

}  // namespace

TEST_F(NamedRecipes, VersionsAreImmutableAndLatestFollowsTheNewest) {
  auto v1 = linux_recipe();
  auto created = put("/api/v1/recipes/debian/1.0", v1);
  ASSERT_EQ(created.status, 201) << created.body;
  EXPECT_EQ(created.json()["recipe_ref"], "debian@1.0");
  auto digest = created.json()["digest"].get<std::string>();
  EXPECT_TRUE(digest.starts_with("sha256:"));
  EXPECT_EQ(created.header("location"), "/api/v1/recipes/debian/1.0");
  // The same recipe again: fine, nothing changes. Other content under the same version: 409.
  auto again = put("/api/v1/recipes/debian/1.0", v1);
  EXPECT_EQ(again.status, 200) << again.body;
  EXPECT_EQ(again.json()["digest"], digest);
  auto v2 = v1;
  v2["hostname"] = "node-2";
  EXPECT_EQ(put("/api/v1/recipes/debian/1.0", v2).status, 409);
  ASSERT_EQ(put("/api/v1/recipes/debian/2.0", v2).status, 201);

  auto got = get("/api/v1/recipes/debian/1.0");
  ASSERT_EQ(got.status, 200) << got.body;
  EXPECT_EQ(got.json()["recipe"]["hostname"], "node-1");
  EXPECT_EQ(get("/api/v1/recipes/debian/latest").json()["recipe"]["hostname"], "node-2");
  EXPECT_EQ(get("/api/v1/recipes/debian/" + digest).json()["recipe"]["hostname"], "node-1");
  EXPECT_EQ(get("/api/v1/recipes/debian").json()["versions"], nlohmann::json::array({"1.0", "2.0"}));
  EXPECT_EQ(get("/api/v1/recipes/debian/9.9").status, 404);
  EXPECT_EQ(get("/api/v1/recipes/nothing").status, 404);

  // Bad input: a field path for an invalid recipe, bad names and versions, 'latest' reserved.
  auto bad = v1;
  bad.erase("task_target");
  auto invalid = put("/api/v1/recipes/debian/3.0", bad);
  EXPECT_EQ(invalid.status, 400);
  EXPECT_NE(invalid.body.find("task_target"), std::string::npos) << invalid.body;
  EXPECT_EQ(put("/api/v1/recipes/debian/latest", v1).status, 400);
  EXPECT_EQ(put("/api/v1/recipes/Bad_Name/1", v1).status, 400);
  EXPECT_EQ(put("/api/v1/recipes/debian/1.0", v1, ControllerProcess::kAuditorToken).status, 403);
  EXPECT_EQ(http_request(controller.port(), "PUT", "/api/v1/recipes/debian/1.0", {}, v1.dump()).status, 401);

  // Removing the version 'latest' names takes 'latest' away too.
  EXPECT_EQ(http_request(controller.port(), "DELETE", "/api/v1/recipes/debian/2.0", auth(ControllerProcess::kCiToken)).status, 403);
  auto v2_digest = get("/api/v1/recipes/debian/2.0").json()["digest"].get<std::string>();
  EXPECT_EQ(http_request(controller.port(), "DELETE", "/api/v1/recipes/debian/2.0", auth(ControllerProcess::kOperatorToken)).status, 204);
  EXPECT_EQ(get("/api/v1/recipes/debian/latest").status, 404);
  EXPECT_EQ(get("/api/v1/recipes/debian/" + v2_digest).status, 404);  // nor by its digest
  EXPECT_EQ(get("/api/v1/recipes/debian").json()["versions"], nlohmann::json::array({"1.0"}));
}

TEST_F(NamedRecipes, JobsUseThemByVersionDigestAndName) {
  auto v1 = linux_recipe();
  auto created = put("/api/v1/recipes/web/1.0", v1);
  ASSERT_EQ(created.status, 201);
  auto v2 = v1;
  v2["hostname"] = "web-2";
  ASSERT_EQ(put("/api/v1/recipes/web/2.0", v2).status, 201);
  auto by_version = submit("web@1.0");
  ASSERT_EQ(by_version.status, 201) << by_version.body;
  EXPECT_EQ(by_version.json()["recipe"]["hostname"], "node-1");
  auto by_digest = submit("web@" + created.json()["digest"].get<std::string>());
  ASSERT_EQ(by_digest.status, 201) << by_digest.body;
  EXPECT_EQ(by_digest.json()["recipe"]["hostname"], "node-1");
  auto by_name = submit("web");  // not in recipes_dir: the named recipe's latest
  ASSERT_EQ(by_name.status, 201) << by_name.body;
  EXPECT_EQ(by_name.json()["recipe"]["hostname"], "web-2");
  auto from_dir = submit("debian-12");  // recipes_dir still comes first
  EXPECT_EQ(from_dir.status, 201) << from_dir.body;
  auto unknown = submit("web@7.0");
  EXPECT_EQ(unknown.status, 400);
  EXPECT_NE(unknown.body.find("/recipe_ref"), std::string::npos) << unknown.body;
  EXPECT_EQ(submit("web@sha256:" + std::string(64, '0')).status, 400);
  EXPECT_EQ(submit("web@bad tag").status, 400);
}

TEST_F(NamedRecipes, SecretsAreSealedAtRestAndRedactedInAnswers) {
  auto recipe = linux_recipe();
  recipe["secrets"] = {{"root_password", "correct-horse-battery-staple"}};
  recipe["user_data"] = "#cloud-config\npassword: hunter2-in-user-data\n";
  auto created = put("/api/v1/recipes/secret/1", recipe);
  ASSERT_EQ(created.status, 201) << created.body;
  auto got = get("/api/v1/recipes/secret/1");
  ASSERT_EQ(got.status, 200);
  EXPECT_EQ(got.body.find("correct-horse"), std::string::npos) << got.body;
  EXPECT_EQ(got.body.find("hunter2"), std::string::npos) << got.body;
  // Nothing under the data dir holds them in clear (blobs, registry state, database).
  for (const auto& e : fs::recursive_directory_iterator(controller.data_dir())) {
    if (!e.is_regular_file()) continue;
    auto text = read_file(e.path());
    ASSERT_TRUE(text);
    EXPECT_EQ(text->find("correct-horse"), std::string::npos) << e.path();
    EXPECT_EQ(text->find("hunter2"), std::string::npos) << e.path();
  }
  // A job made from it gets the secrets back in its task, and its answer redacts them.
  auto job = submit("secret@1");
  ASSERT_EQ(job.status, 201) << job.body;
  EXPECT_EQ(job.body.find("correct-horse"), std::string::npos);
  EXPECT_EQ(controller.log_text().find("correct-horse"), std::string::npos);
}

TEST_F(NamedRecipes, PushedAsOciArtifactsAndCheckedTheSameWay) {
  auto recipe = linux_recipe();
  recipe["hostname"] = "pushed";
  auto pushed = push_artifact("edge", "1.0", recipe.dump());
  ASSERT_EQ(pushed.status, 201) << pushed.body;
  auto got = get("/api/v1/recipes/edge/1.0");
  ASSERT_EQ(got.status, 200) << got.body;
  EXPECT_EQ(got.json()["recipe"]["hostname"], "pushed");
  EXPECT_EQ(got.json()["digest"], pushed.header("docker-content-digest"));
  EXPECT_EQ(get("/api/v1/recipes/edge/latest").json()["recipe"]["hostname"], "pushed");
  auto job = submit("edge@1.0");
  EXPECT_EQ(job.status, 201) << job.body;

  // Immutable over /v2/ too; 'latest' is the controller's; invalid recipes and clear secrets refused.
  auto other = recipe;
  other["hostname"] = "changed";
  auto moved = push_artifact("edge", "1.0", other.dump());
  EXPECT_EQ(moved.status, 409) << moved.body;
  EXPECT_EQ(push_artifact("edge", "latest", other.dump()).status, 400);
  auto invalid = recipe;
  invalid.erase("target_disk");
  auto refused = push_artifact("edge", "2.0", invalid.dump());
  EXPECT_EQ(refused.status, 400);
  EXPECT_NE(refused.body.find("MANIFEST_INVALID"), std::string::npos);
  auto with_secret = recipe;
  with_secret["secrets"] = {{"token", "in-clear"}};
  auto clear = push_artifact("edge", "3.0", with_secret.dump());
  EXPECT_EQ(clear.status, 400);
  EXPECT_NE(clear.body.find("PUT /api/v1/recipes/edge"), std::string::npos) << clear.body;
  // Its layer, already uploaded, is gone: not pullable, not on disk.
  auto layer = registry::digest_of(with_secret.dump());
  EXPECT_EQ(http_request(controller.port(), "GET", "/v2/recipes/edge/blobs/" + layer.str(),
                         auth(ControllerProcess::kOperatorToken)).status, 404);
  EXPECT_FALSE(fs::exists(controller.data_dir() / "artifacts" / "sha256" / layer.hex));
  EXPECT_EQ(push_artifact("edge", "4.0", "not json").status, 400);
  EXPECT_EQ(get("/api/v1/recipes/edge").json()["versions"], nlohmann::json::array({"1.0"}));
  // And the API's versions are pullable artifacts.
  auto manifest = http_request(controller.port(), "GET", "/v2/recipes/edge/manifests/1.0", auth(ControllerProcess::kOperatorToken));
  ASSERT_EQ(manifest.status, 200);
  EXPECT_EQ(manifest.json()["artifactType"], kRecipeType);
}
