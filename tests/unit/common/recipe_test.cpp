#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "common/recipe.hpp"

using provisioner::FieldError;
using provisioner::RecipeValidator;

namespace {

nlohmann::json good_recipe() {
  return nlohmann::json::parse(R"({
    "task_target": "provision-linux.target",
    "target_disk": "/dev/vda",
    "image": {"url": "http://10.0.2.2:8080/artifacts/x/rootfs.tar", "digest": "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"},
    "boot_mode": "uefi",
    "hostname": "node-01.lab",
    "partition_layout": [
      {"size": "512MiB", "type_guid": "c12a7328-f81f-11d2-ba4b-00a0c93ec93b", "format": "vfat", "label": "ESP"},
      {"size": "rest", "type_guid": "0fc63daf-8483-4772-8e79-3d69d8477de4", "format": "ext4", "label": "root"}
    ],
    "files": [{"name": "scripts/post.sh", "content": "echo hi"}]
  })");
}

std::vector<std::string> paths(const std::vector<FieldError>& errors) {
  std::vector<std::string> out;
  for (const auto& e : errors) out.push_back(e.path);
  return out;
}

bool has_path(const std::vector<FieldError>& errors, const std::string& path) {
  for (const auto& e : errors)
    if (e.path == path) return true;
  return false;
}

}  // namespace

TEST(RecipeValidator, AcceptsAGoodRecipe) {
  RecipeValidator v;
  auto errors = v.validate(good_recipe());
  EXPECT_TRUE(errors.empty()) << testing::PrintToString(paths(errors));
}

struct BadCase {
  const char* name;
  const char* json_patch;  // applied with merge_patch onto the good recipe
  const char* path;
};

class RecipeBadInput : public testing::TestWithParam<BadCase> {};

TEST_P(RecipeBadInput, ReportsTheFieldPath) {
  auto recipe = good_recipe();
  recipe.merge_patch(nlohmann::json::parse(GetParam().json_patch));
  auto errors = RecipeValidator().validate(recipe);
  EXPECT_TRUE(has_path(errors, GetParam().path)) << "got " << testing::PrintToString(paths(errors));
}

INSTANTIATE_TEST_SUITE_P(
    Cases, RecipeBadInput,
    testing::Values(BadCase{"missing_target", R"({"task_target": null})", "/task_target"},
                    BadCase{"target_not_target", R"({"task_target": "reboot.service"})", "/task_target"},
                    BadCase{"disk_not_dev", R"({"target_disk": "sda"})", "/target_disk"},
                    BadCase{"digest_bad", R"({"image": {"digest": "md5:abc"}})", "/image/digest"},
                    BadCase{"unknown_field", R"({"colour": "red"})", "/colour"},
                    BadCase{"bad_boot_mode", R"({"boot_mode": "coreboot"})", "/boot_mode"},
                    BadCase{"bad_media_mode", R"({"media_mode": "floppy"})", "/media_mode"},
                    BadCase{"hostname_bad", R"({"hostname": "-bad-"})", "/hostname"},
                    BadCase{"hostname_huge", R"({"hostname": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"})", "/hostname"},
                    BadCase{"firmware_not_url", R"({"firmware_url": "ftp://x"})", "/firmware_url"},
                    BadCase{"user_data_not_string", R"({"user_data": 42})", "/user_data"}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(RecipeValidator, PartitionErrorsPointIntoTheArray) {
  auto recipe = good_recipe();
  recipe["partition_layout"][1]["size"] = "lots";
  recipe["partition_layout"][0]["format"] = "ntfs";
  auto errors = RecipeValidator().validate(recipe);
  EXPECT_TRUE(has_path(errors, "/partition_layout/1/size")) << testing::PrintToString(paths(errors));
  EXPECT_TRUE(has_path(errors, "/partition_layout/0/format")) << testing::PrintToString(paths(errors));
}

TEST(RecipeValidator, RestMustBeLastAndLabelsUnique) {
  auto recipe = good_recipe();
  recipe["partition_layout"][0]["size"] = "rest";
  recipe["partition_layout"][1]["label"] = "ESP";
  auto errors = RecipeValidator().validate(recipe);
  EXPECT_TRUE(has_path(errors, "/partition_layout/0/size"));
  EXPECT_TRUE(has_path(errors, "/partition_layout/1/label"));
}

TEST(RecipeValidator, UefiNeedsAnEsp) {
  auto recipe = good_recipe();
  recipe["partition_layout"].erase(0);
  EXPECT_TRUE(has_path(RecipeValidator().validate(recipe), "/partition_layout"));
}

TEST(RecipeValidator, RefusesPathTraversalInFileNames) {
  for (const char* name : {"../etc/passwd", "/etc/passwd", "a/../../b", "a//b", "./x"}) {
    auto recipe = good_recipe();
    recipe["files"][0]["name"] = name;
    EXPECT_TRUE(has_path(RecipeValidator().validate(recipe), "/files/0/name")) << name;
  }
}

TEST(RecipeValidator, ImageNeedsOciOrUrlWithDigest) {
  auto recipe = good_recipe();
  recipe["image"] = {{"url", "http://x/y"}};
  EXPECT_FALSE(RecipeValidator().validate(recipe).empty());
  recipe["image"] = {{"oci", "registry.local:5000/os/debian:12"}};
  EXPECT_TRUE(RecipeValidator().validate(recipe).empty());
}

TEST(RecipeValidator, ParseReportsMalformedJson) {
  auto r = RecipeValidator().parse("{\"task_target\": ");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, provisioner::ErrorKind::invalid_input);
}

TEST(RecipeValidator, DeepNestingIsRefusedWithoutRecursion) {
  std::string deep(100000, '[');
  auto r = provisioner::parse_json(deep);
  ASSERT_FALSE(r.ok());
}

TEST(RecipeValidator, LongPatternedStringsNeverReachTheRegexEngine) {
  auto recipe = good_recipe();
  recipe["target_disk"] = "/dev/" + std::string(2'000'000, 'a');  // would overflow std::regex's stack
  EXPECT_TRUE(has_path(RecipeValidator().validate(recipe), "/target_disk"));
}

TEST(SafeNames, AcceptsPlainRelativeNames) {
  EXPECT_TRUE(provisioner::is_safe_relative_name("a/b.c"));
  EXPECT_FALSE(provisioner::is_safe_relative_name(""));
  EXPECT_FALSE(provisioner::is_safe_relative_name("a/"));
  EXPECT_FALSE(provisioner::is_safe_relative_name("a\\b"));
}
