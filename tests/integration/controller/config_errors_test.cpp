// The real controller refuses a bad config at start-up: it exits non-zero and its message
// names the key (a bad artifacts.listen used to crash it).
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <fstream>

#include "tests/support/controller_process.hpp"

using namespace provisioner::test;

namespace {

// data_dir cannot be created (under /dev/null): a controller that wrongly accepts the config
// still exits at once instead of serving.
struct Exit {
  int code = -1;  // -1: killed by a signal
  std::string output;
};

Exit run_controller(const std::string& toml) {
  TempDir dir;
  std::ofstream(dir.path() / "c.toml") << toml << "\n[[tokens]]\nname = \"a\"\nrole = \"admin\"\n"
                                       << "sha256 = \"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"\n";
  std::string command = std::string(PROVISIONER_CONTROLLER_BIN) + " --config " + (dir.path() / "c.toml").string() +
                        " 2>&1";
  Exit e;
  FILE* p = ::popen(command.c_str(), "r");
  if (!p) throw std::runtime_error("popen failed");
  std::array<char, 4096> buf{};
  while (std::size_t n = std::fread(buf.data(), 1, buf.size(), p)) e.output.append(buf.data(), n);
  int status = ::pclose(p);
  if (WIFEXITED(status)) e.code = WEXITSTATUS(status);
  return e;
}

}  // namespace

TEST(ConfigErrors, ControllerExitsNamingTheKey) {
  const std::pair<const char*, const char*> cases[] = {
      {"[artifacts]\nlisten = \"not-an-address\"", "artifacts.listen"},
      {"[artifacts]\nlisten = \"127.0.0.1:http\"", "artifacts.listen"},  // crashed in std::stoi
      {"max_body_bytes = -1", "max_body_bytes"},
      {"[log]\nlevel = \"chatty\"", "log.level"},
  };
  for (const auto& [toml, key] : cases) {
    auto e = run_controller(std::string("data_dir = \"/dev/null/provisioner-test\"\n") + toml);
    EXPECT_GT(e.code, 0) << toml << ": " << e.output;
    EXPECT_NE(e.output.find(key), std::string::npos) << toml << ": " << e.output;
  }
}
