// Config precedence: defaults < file < environment < flags; unknown keys are errors.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>

#include "controller/config/config.hpp"
#include "tests/support/controller_process.hpp"
#include "tests/unit/controller/command_line.hpp"

using namespace provisioner;

namespace {
const char* kHash = test::kTestTokenHash;
using test::parse;
}  // namespace

TEST(Config, FileThenEnvironmentThenFlags) {
  test::TempDir dir;
  auto file = dir.path() / "c.toml";
  std::ofstream(file) << "listen = \"127.0.0.1:9001\"\ndata_dir = \"/tmp/a\"\nmax_body_bytes = 2048\n"
                         "[[tokens]]\nname = \"ci\"\nrole = \"ci\"\nsha256 = \"" << kHash << "\"\n";
  auto r = parse({"--config", file.string()});
  ASSERT_TRUE(std::holds_alternative<RunController>(r)) << std::get<ExitWith>(r).output;
  auto c = std::get<RunController>(r).config;
  EXPECT_EQ(c.listen, "127.0.0.1:9001");
  EXPECT_EQ(c.max_body_bytes, 2048u);
  EXPECT_EQ(c.public_url, "http://127.0.0.1:9001");
  EXPECT_EQ(c.recipes_dir, std::filesystem::path("/tmp/a") / "recipes");
  ASSERT_EQ(c.tokens.size(), 1u);
  EXPECT_EQ(c.tokens[0].role, Role::ci);

  ::setenv("PROVISIONER_LISTEN", "127.0.0.1:9002", 1);
  c = std::get<RunController>(parse({"--config", file.string()})).config;
  EXPECT_EQ(c.listen, "127.0.0.1:9002");
  c = std::get<RunController>(parse({"--config", file.string(), "--listen", "127.0.0.1:9003"})).config;
  EXPECT_EQ(c.listen, "127.0.0.1:9003");
  ::unsetenv("PROVISIONER_LISTEN");
}

TEST(Config, MistakesAreReported) {
  test::TempDir dir;
  auto file = dir.path() / "c.toml";
  std::ofstream(file) << "listen = \"127.0.0.1:1\"\nlisten_port = 3\n";
  auto r = parse({"--config", file.string(), "--admin-token-sha256", kHash});
  ASSERT_TRUE(std::holds_alternative<ExitWith>(r));
  EXPECT_NE(std::get<ExitWith>(r).output.find("listen_port"), std::string::npos);

  std::ofstream(file) << "[[tokens]]\nrole = \"root\"\nsha256 = \"" << kHash << "\"\n";
  EXPECT_TRUE(std::holds_alternative<ExitWith>(parse({"--config", file.string()})));
  std::ofstream(file) << "[[tokens]]\nrole = \"admin\"\nsha256 = \"plaintext-token\"\n";
  EXPECT_TRUE(std::holds_alternative<ExitWith>(parse({"--config", file.string()})));
  EXPECT_TRUE(std::holds_alternative<ExitWith>(parse({}))) << "no tokens at all";
  EXPECT_TRUE(std::holds_alternative<ExitWith>(parse({"--admin-token-sha256", kHash, "--log-format", "xml"})));
}
