// Recipe secrets at rest: what the controller stores instead of secrets{} values and the
// documents that may carry a password anywhere (user_data, network_config, ks_cfg,
// unattend_xml), and how it gets them back for the task ISO.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "common/crypto.hpp"
#include "common/recipe.hpp"
#include "common/redact.hpp"

using namespace provisioner;

namespace {

const std::string kKey(32, '\x5a');
const std::string kOtherKey(32, '\xa5');

nlohmann::json recipe_with_secrets() {
  return nlohmann::json::parse(R"({
    "task_target": "provision-linux.target",
    "target_disk": "/dev/vda",
    "hostname": "node-1",
    "meta_data": "local-hostname: node-1\n",
    "secrets": {"db_password": "s3cret-db-1a2b", "api": "s3cret-api-3c4d"},
    "user_data": "#cloud-config\nruncmd:\n  - echo 'root:ud-pw-5e6f' | chpasswd\n",
    "network_config": "version: 2\nwifis: {wlan0: {access-points: {lab: {password: nc-pw-7a8b}}}}\n",
    "ks_cfg": "user --name=ops --password ks-pw-9c0d --plaintext\n",
    "unattend_xml": "<unattend><Run>net user x ux-pw-1e2f</Run></unattend>\n"
  })");
}

const char* kPlaintexts[] = {"s3cret-db-1a2b", "s3cret-api-3c4d", "ud-pw-5e6f", "nc-pw-7a8b", "ks-pw-9c0d", "ux-pw-1e2f"};

}  // namespace

TEST(RecipeSecrets, SealKeepsTheShapeAndHidesEveryValue) {
  auto recipe = recipe_with_secrets();
  auto sealed = seal_recipe_secrets(recipe, kKey);
  auto text = sealed.dump();
  for (const char* s : kPlaintexts) EXPECT_EQ(text.find(s), std::string::npos) << s;
  // Everything else is stored as it was, and the secret names stay.
  EXPECT_EQ(sealed["hostname"], "node-1");
  EXPECT_EQ(sealed["meta_data"], recipe["meta_data"]);
  EXPECT_EQ(sealed["task_target"], recipe["task_target"]);
  ASSERT_TRUE(sealed["secrets"].is_object());
  EXPECT_EQ(sealed["secrets"].size(), 2u);
  EXPECT_TRUE(is_sealed_value(sealed["secrets"]["db_password"]));
  for (const char* doc : {"user_data", "network_config", "ks_cfg", "unattend_xml"})
    EXPECT_TRUE(is_sealed_value(sealed[doc])) << doc;
  EXPECT_FALSE(is_sealed_value(recipe["user_data"]));
  // The blob is the controller's ordinary AES-256-GCM seal.
  EXPECT_EQ(crypto::open(kKey, sealed["user_data"]["sealed"].get<std::string>()), recipe["user_data"]);
}

TEST(RecipeSecrets, OpenGivesBackExactlyWhatWasSealed) {
  auto recipe = recipe_with_secrets();
  auto first = seal_recipe_secrets(recipe, kKey), second = seal_recipe_secrets(recipe, kKey);
  EXPECT_NE(first, second) << "a fresh nonce per seal";
  for (const auto& sealed : {first, second}) {
    auto opened = open_recipe_secrets(nlohmann::json::parse(sealed.dump()), kKey);
    ASSERT_TRUE(opened.ok()) << opened.error().message;
    EXPECT_EQ(*opened, recipe);
    EXPECT_EQ(opened->dump(), recipe.dump()) << "the task ISO's recipe.json must be byte-identical";
  }
}

TEST(RecipeSecrets, RecipeWithoutSecretsIsStoredAsIs) {
  auto recipe = nlohmann::json::parse(R"({"task_target": "t", "target_disk": "/dev/vda", "secrets": {}})");
  EXPECT_EQ(seal_recipe_secrets(recipe, kKey), recipe);
  auto opened = open_recipe_secrets(recipe, kKey);
  ASSERT_TRUE(opened.ok());
  EXPECT_EQ(*opened, recipe);
}

TEST(RecipeSecrets, PlainRecipeOfAnOlderVersionOpensUnchanged) {
  auto recipe = recipe_with_secrets();
  auto opened = open_recipe_secrets(recipe, kKey);
  ASSERT_TRUE(opened.ok()) << opened.error().message;
  EXPECT_EQ(*opened, recipe);
  // Mixed (one value sealed, the rest plain) opens too.
  auto mixed = recipe;
  mixed["ks_cfg"] = seal_recipe_secrets(recipe, kKey)["ks_cfg"];
  auto mixed_opened = open_recipe_secrets(mixed, kKey);
  ASSERT_TRUE(mixed_opened.ok());
  EXPECT_EQ(*mixed_opened, recipe);
}

TEST(RecipeSecrets, WrongKeyFailsClearlyNamingTheField) {
  auto sealed = seal_recipe_secrets(recipe_with_secrets(), kKey);
  auto opened = open_recipe_secrets(sealed, kOtherKey);
  ASSERT_FALSE(opened.ok());
  EXPECT_EQ(opened.error().kind, ErrorKind::internal);
  const auto& message = opened.error().message;
  EXPECT_NE(message.find("cannot be unsealed"), std::string::npos) << message;
  EXPECT_NE(message.find("secret key"), std::string::npos) << message;
  bool names_a_field = false;
  for (const char* field : {"/secrets/api", "/secrets/db_password", "/user_data", "/network_config", "/ks_cfg",
                            "/unattend_xml"})
    names_a_field |= message.find(field) != std::string::npos;
  EXPECT_TRUE(names_a_field) << message;
  for (const char* s : kPlaintexts) EXPECT_EQ(message.find(s), std::string::npos);
  EXPECT_EQ(message.find(sealed["ks_cfg"]["sealed"].get<std::string>()), std::string::npos)
      << "nor the blob";
}

TEST(RecipeSecrets, TamperedOrMalformedBlobIsRefused) {
  auto sealed = seal_recipe_secrets(recipe_with_secrets(), kKey);
  auto blob = sealed["secrets"]["db_password"]["sealed"].get<std::string>();
  blob[30] = blob[30] == '0' ? '1' : '0';
  auto tampered = sealed;
  tampered["secrets"]["db_password"]["sealed"] = blob;
  auto opened = open_recipe_secrets(tampered, kKey);
  ASSERT_FALSE(opened.ok());
  EXPECT_NE(opened.error().message.find("/secrets/db_password"), std::string::npos) << opened.error().message;

  auto malformed = sealed;
  malformed["user_data"] = nlohmann::json{{"sealed", 42}};
  auto bad = open_recipe_secrets(malformed, kKey);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("/user_data"), std::string::npos) << bad.error().message;
}

TEST(RecipeSecrets, RedactionHidesSealedAndPlainSecretDocuments) {
  auto recipe = recipe_with_secrets();
  for (const auto& doc : {recipe, seal_recipe_secrets(recipe, kKey)}) {
    auto shown = redact(doc);
    auto text = shown.dump();
    for (const char* s : kPlaintexts) EXPECT_EQ(text.find(s), std::string::npos) << s << " in " << text;
    EXPECT_EQ(text.find("\"sealed\""), std::string::npos) << "no blob in an answer: " << text;
    EXPECT_EQ(shown["secrets"]["db_password"], "<redacted>");
    for (const char* d : {"user_data", "network_config", "ks_cfg", "unattend_xml"}) EXPECT_EQ(shown[d], "<redacted>") << d;
    EXPECT_EQ(shown["hostname"], "node-1");
  }
}
