#include <gtest/gtest.h>

#include "common/crypto.hpp"
#include <sys/stat.h>

#include <cstdio>

#include "common/recipe.hpp"
#include "dispatcher/cmdline.hpp"
#include "dispatcher/provision_env.hpp"
#include "test_support.hpp"

using namespace provisioner;
using namespace provisioner::dispatcher;
using namespace provisioner::dispatcher::testing;

TEST(KernelCmdline, SplitsQuotesAndBareWords) {
  auto m = parse_kernel_cmdline(
      "BOOT_IMAGE=/vmlinuz root=live:CDLABEL=MAINT ro quiet \"provision.task=http://c/t?a=b c\" "
      "provision.sha256=abc provision.serial=\"S 1\" provision.sha256=def\n");
  EXPECT_EQ(m["root"], "live:CDLABEL=MAINT");
  EXPECT_EQ(m.count("quiet"), 1u);
  EXPECT_EQ(m["quiet"], "");
  EXPECT_EQ(m["provision.task"], "http://c/t?a=b c");
  EXPECT_EQ(m["provision.serial"], "S 1");
  EXPECT_EQ(m["provision.sha256"], "def");  // last one wins, like the kernel
  auto o = provision_options(m);
  EXPECT_EQ(o.task_url.value_or(""), "http://c/t?a=b c");
  EXPECT_EQ(o.serial.value_or(""), "S 1");
  EXPECT_FALSE(o.controller.has_value());
}

TEST(EnvFile, QuoteRoundTripsThroughParserAndBash) {
  std::string tricky = "it's a \"test\" $HOME `x` \\ \n second line";
  std::string text = "A=" + shell_quote(tricky) + "\nB=" + shell_quote("") + "\n# comment\nC=plain\n";
  auto env = parse_env_text(text);
  ASSERT_TRUE(env.ok());
  EXPECT_EQ((*env)["A"], tricky);
  EXPECT_EQ((*env)["B"], "");
  EXPECT_EQ((*env)["C"], "plain");

  TempDir t;
  spit(t.path / "x.env", text);
  std::string cmd = "bash -c 'source " + (t.path / "x.env").string() + " && printf %s \"$A\"'";
  FILE* p = ::popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[256];
  while (auto n = std::fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  ::pclose(p);
  EXPECT_EQ(out, tricky);
}

TEST(EnvFile, RefusesBadNamesAndOpenQuotes) {
  EXPECT_FALSE(parse_env_text("1A=x\n").ok());
  EXPECT_FALSE(parse_env_text("A='x\n").ok());
  EXPECT_FALSE(parse_env_text("just words\n").ok());
}

namespace {
Task debian_task(const std::string& webhook = "http://127.0.0.1:8080/api/v1/status-webhook/SER1") {
  Task t;
  t.job_id = "job-1";
  t.webhook_url = webhook;
  t.signing_key = "s3cr3t-key";
  t.signing_key_id = "k1";
  t.recipe = debian_recipe();
  return t;
}
}  // namespace

TEST(RecipeEnv, HasEveryKeyAndTheControllerRegistryRule) {
  // The registry rule needs an OCI image; the shipped recipe may point at a URL instead.
  auto oci_task = [](const std::string& webhook) {
    auto t = debian_task(webhook);
    t.recipe["image"] = {{"oci", "127.0.0.1:8080/os/debian-rootfs:12"}, {"format", "rootfs-tar"}};
    return t;
  };
  auto env = parse_env_text(recipe_env_text(oci_task("http://127.0.0.1:8080/api/v1/status-webhook/SER1")));
  ASSERT_TRUE(env.ok());
  EXPECT_EQ((*env)["JOB_ID"], "job-1");
  EXPECT_EQ((*env)["TASK_TARGET"], "provision-linux.target");
  EXPECT_EQ((*env)["TARGET_DISK"], "/dev/vda");
  EXPECT_EQ((*env)["BOOT_MODE"], "uefi");
  EXPECT_EQ((*env)["HOSTNAME"], "debian-node");
  EXPECT_EQ((*env)["IMAGE_OCI"], "127.0.0.1:8080/os/debian-rootfs:12");
  EXPECT_EQ((*env)["IMAGE_FORMAT"], "rootfs-tar");
  for (const char* k : {"IMAGE_URL", "IMAGE_DIGEST", "FIRMWARE_URL", "INSTALL_TIMEOUT"}) {
    ASSERT_EQ(env->count(k), 1u) << k;
    EXPECT_EQ((*env)[k], "") << k;
  }
  // Registry served by the controller over plain HTTP: no TLS verification for it...
  EXPECT_EQ((*env)["REGISTRY_TLS_VERIFY"], "false");
  // ...but any other registry keeps it.
  auto other = parse_env_text(recipe_env_text(oci_task("https://ctl.example:8443/api/v1/status-webhook/S")));
  EXPECT_EQ((*other)["REGISTRY_TLS_VERIFY"], "true");
}

TEST(RegistryAuth, AuthfileFromTheJobsTokenAndTheRecipesSecret) {
  auto t = debian_task();
  EXPECT_EQ(registry_auth_json_text(t), "");  // nothing to authenticate with: no file
  t.recipe["image"] = {{"oci", "registry.example:5000/os/debian:12"}, {"format", "rootfs-tar"}};
  t.recipe["secrets"] = {{"registry_auth", "robot:pa55"}};
  auto third = nlohmann::json::parse(registry_auth_json_text(t));
  EXPECT_EQ(third["auths"]["registry.example:5000"]["auth"], crypto::base64_encode("robot:pa55"));
  // The controller's own token for its registry (job.json), in the same file.
  t.registry_auth["127.0.0.1:8080"] = "pvr1.token";
  auto both = nlohmann::json::parse(registry_auth_json_text(t));
  EXPECT_EQ(both["auths"]["127.0.0.1:8080"]["auth"], crypto::base64_encode("job:pvr1.token"));
  EXPECT_EQ(both["auths"].size(), 2u);
  // Never in the world-readable files.
  EXPECT_EQ(recipe_env_text(t).find("pvr1.token"), std::string::npos);
  EXPECT_EQ(recipe_env_text(t).find("pa55"), std::string::npos);
}

TEST(RecipeEnv, NeverCarriesTheWebhookKey) {
  auto t = debian_task();
  EXPECT_EQ(recipe_env_text(t).find(t.signing_key), std::string::npos);
  EXPECT_EQ(layout_json_text(t).find(t.signing_key), std::string::npos);
}

TEST(Layout, UsesTheRecipeOrTheDefault) {
  auto t = debian_task();
  auto layout = nlohmann::json::parse(layout_json_text(t));
  EXPECT_EQ(layout["disk"], "/dev/vda");
  ASSERT_EQ(layout["partitions"].size(), 2u);
  EXPECT_EQ(layout["partitions"][0]["format"], "vfat");
  t.recipe.erase("partition_layout");
  layout = nlohmann::json::parse(layout_json_text(t));
  ASSERT_EQ(layout["partitions"].size(), 2u);
  EXPECT_EQ(layout["partitions"][1]["mountpoint"], "/");
}

TEST(RunFiles, WritesTheContractWithModesAndNoStaleFiles) {
  TempDir t;
  auto medium = t.path / "medium";
  auto run = t.path / "run";
  auto recipe = debian_recipe();
  recipe["secrets"] = {{"ROOT_PASSWORD", "hunter2"}};
  recipe["files"] = nlohmann::json::array({{{"name", "etc/motd"}, {"content", "hello\n"}, {"mode", "0640"}}});
  recipe["ks_cfg"] = "text\n";
  write_task_medium(medium, "job-1", "http://127.0.0.1:1/x", "s3cr3t-key", recipe);
  spit(run / "unattend.xml", "stale from an earlier task");
  auto task = read_task(medium);
  ASSERT_TRUE(task.ok()) << task.error().message;
  ASSERT_TRUE(write_run_files(*task, run).ok());

  auto mode = [](const fs::path& p) {
    struct stat st{};
    ::stat(p.c_str(), &st);
    return st.st_mode & 07777;
  };
  EXPECT_EQ(mode(run / "webhook.env"), 0600u);
  EXPECT_EQ(mode(run / "secrets.env"), 0600u);
  EXPECT_EQ(mode(run / "recipe.env"), 0644u);
  EXPECT_EQ(mode(run / "files/etc/motd"), 0640u);
  EXPECT_EQ(slurp(run / "files/etc/motd"), "hello\n");
  EXPECT_EQ(slurp(run / "meta-data"), "instance-id: job-1\n");  // the medium's copy
  EXPECT_EQ(slurp(run / "ks.cfg"), "text\n");                   // from the recipe
  EXPECT_TRUE(fs::exists(run / "user-data"));
  EXPECT_TRUE(fs::exists(run / "layout.json"));
  EXPECT_FALSE(fs::exists(run / "unattend.xml"));
  EXPECT_EQ(slurp(run / "recipe.json").find("hunter2"), std::string::npos);
  EXPECT_NE(slurp(run / "secrets.env").find("ROOT_PASSWORD='hunter2'"), std::string::npos);

  EXPECT_FALSE(fs::exists(run / "registry-auth.json"));  // the job has no registry credentials
  auto wh = read_webhook_env(run);
  ASSERT_TRUE(wh.ok());
  EXPECT_EQ(wh->key, "s3cr3t-key");
  EXPECT_EQ(wh->url, "http://127.0.0.1:1/x");
  EXPECT_EQ(wh->job_id, "job-1");
  // No temp files left behind by the atomic writes.
  for (auto& e : fs::recursive_directory_iterator(run))
    EXPECT_EQ(e.path().filename().string().find(".tmp-"), std::string::npos) << e.path();
}

TEST(Recipes, EveryExampleValidatesAgainstTheSchema) {
  RecipeValidator validator(slurp(fs::path(PROVISIONER_SOURCE_DIR) / "schemas/recipe.schema.json"));
  int n = 0;
  for (const auto& e : fs::directory_iterator(fs::path(PROVISIONER_SOURCE_DIR) / "recipes")) {
    if (e.path().extension() != ".json") continue;
    ++n;
    auto r = validator.parse(slurp(e.path()));
    std::string why;
    if (!r.ok())
      for (const auto& f : r.error().fields) why += f.path + ": " + f.message + "; ";
    EXPECT_TRUE(r.ok()) << e.path() << ": " << why;
  }
  EXPECT_GE(n, 5);
}
