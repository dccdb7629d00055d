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

TEST(Config, ThePxeSectionIsReadAndItsMistakesNameTheKey) {
  test::TempDir dir;
  auto file = dir.path() / "c.toml";
  std::ofstream(file) << "[pxe]\nenabled = true\ndiscover = \"inspect\"\ndhcp = \"proxy\"\ninterface = \"br0\"\n"
                         "subnet = \"10.0.0.0\"\nkernel = \"/srv/vmlinuz\"\ninitrd = \"/srv/initrd.img\"\n"
                         "kernel_args = \"console=ttyS0\"\narm64_efi = \"/srv/a.efi\"\n";
  auto r = parse({"--config", file.string(), "--admin-token-sha256", kHash});
  ASSERT_TRUE(std::holds_alternative<RunController>(r)) << std::get<ExitWith>(r).output;
  auto c = std::get<RunController>(r).config;
  EXPECT_TRUE(c.pxe_enabled);
  EXPECT_EQ(c.pxe_discover, "inspect");
  EXPECT_EQ(c.pxe_dhcp, "proxy");
  EXPECT_EQ(c.pxe_interface, "br0");
  EXPECT_EQ(*c.pxe_kernel, "/srv/vmlinuz");
  EXPECT_EQ(*c.pxe_arm64_efi, "/srv/a.efi");
  struct Bad {
    std::string toml, key;
  };
  for (const auto& b : std::vector<Bad>{
           {"[pxe]\ndiscover = \"always\"\n", "pxe.discover"},
           {"[pxe]\ndhcp = \"relay\"\n", "pxe.dhcp"},
           {"[pxe]\nenabled = true\nsubnet = \"10.0.0.0\"\n", "pxe.interface"},  // proxy by default: it needs one
           {"[pxe]\nenabled = true\ndhcp = \"proxy\"\ninterface = \"br0,eth0\"\nsubnet = \"10.0.0.0\"\n", "pxe.interface"},
           {"[pxe]\nenabled = true\ndhcp = \"proxy\"\ninterface = \"br0\"\nsubnet = \"ten\"\n", "pxe.subnet"},
           {"[pxe]\nenabled = true\ndhcp = \"full\"\ninterface = \"br0\"\nrange_start = \"10.0.0.1\"\n", "pxe.range_start"},
           {"[pxe]\nkernel_args = \"a\\nb\"\n", "pxe.kernel_args"},
           {"[pxe]\ntftp_root = \"/x\"\n", "tftp_root"}}) {
    std::ofstream(file) << b.toml;
    auto bad = parse({"--config", file.string(), "--admin-token-sha256", kHash});
    ASSERT_TRUE(std::holds_alternative<ExitWith>(bad)) << b.toml;
    EXPECT_NE(std::get<ExitWith>(bad).output.find(b.key), std::string::npos) << b.toml << " → " << std::get<ExitWith>(bad).output;
  }
}
