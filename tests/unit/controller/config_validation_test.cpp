// Every config key's type and range is checked at start-up, from the file, the environment or
// a flag alike: a bad value is an error naming the key, never a silent default or a crash.
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

// The start-up error for a config file with `toml` in it (and a token), or "" when it starts.
std::string error_for(const std::string& toml, std::vector<std::string> extra_args = {}) {
  test::TempDir dir;
  auto file = dir.path() / "c.toml";
  std::ofstream(file) << toml;
  std::vector<std::string> args{"--config", file.string(), "--admin-token-sha256", kHash};
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  auto r = parse(args);
  return std::holds_alternative<ExitWith>(r) ? std::get<ExitWith>(r).output : std::string();
}

struct BadValue {
  const char* toml;
  const char* message;  // must appear in the error
};

}  // namespace

TEST(ConfigValidation, BadValuesNameTheirKey) {
  const BadValue cases[] = {
      {"max_body_bytes = -1\n", "max_body_bytes: must be an integer from 1024 up to 1073741824, got -1"},
      {"max_body_bytes = 0\n", "max_body_bytes: must be"},
      {"max_body_bytes = \"1MB\"\n", "max_body_bytes: must be an integer, got the string \"1MB\""},
      {"max_body_bytes = 1.5\n", "max_body_bytes: must be an integer"},
      {"http_threads = 0\n", "http_threads: must be"},
      {"listen = \"127.0.0.1\"\n", "listen: must be host:port"},
      {"listen = \"127.0.0.1:99999\"\n", "listen: must be host:port"},
      {"listen = 8080\n", "listen: must be a string"},
      {"[artifacts]\nlisten = \"not-an-address\"\n", "artifacts.listen: must be IP:port"},
      {"[artifacts]\nlisten = \"localhost:8081\"\n", "artifacts.listen: must be IP:port"},
      {"[artifacts]\nlisten = \"127.0.0.1:http\"\n", "artifacts.listen: must be IP:port"},
      {"[artifacts]\nthreads = -2\n", "artifacts.threads: must be"},
      {"[artifacts]\nmax_upload_bytes = -1\n", "artifacts.max_upload_bytes: must be a positive integer"},
      {"[artifacts]\nretention_seconds = -1\n", "artifacts.retention_seconds: must be a non-negative integer"},
      {"[api]\nhead_timeout_ms = 0\n", "api.head_timeout_ms: must be an integer from 100"},
      {"[api]\nmax_head_bytes = 10\n", "api.max_head_bytes: must be an integer from 1024"},
      {"[api]\nmax_connections_per_client = -1\n", "api.max_connections_per_client: must be a non-negative"},
      {"[api]\nhead_timeout = 5\n", "unknown key 'head_timeout'"},
      {"[log]\nlevel = \"verbose\"\n", "log.level: must be one of debug info warn error, got 'verbose'"},
      {"[log]\nformat = \"xml\"\n", "log.format: must be one of text json"},
      {"log = \"debug\"\n", "log: must be a table"},
      {"[webhook]\nmax_skew_seconds = -300\n", "webhook.max_skew_seconds: must be"},
      {"[reconciler]\nworkers = 0\n", "reconciler.workers: must be"},
      {"[reconciler]\ntick_ms = 5\n", "reconciler.tick_ms: must be an integer from 10"},
      {"[redfish]\nrequest_timeout_ms = -5\n", "redfish.request_timeout_ms: must be"},
      {"[redfish]\nget_attempts = 0\n", "redfish.get_attempts: must be"},
      {"[redfish]\nprefer_graceful_restart = \"yes\"\n", "redfish.prefer_graceful_restart: must be true or false"},
      {"[[tokens]]\nrole = \"root\"\nsha256 = \"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"\n",
       "tokens[0].role"},
  };
  for (const auto& c : cases) {
    auto error = error_for(c.toml);
    EXPECT_NE(error.find(c.message), std::string::npos) << c.toml << "-> " << (error.empty() ? "(started)" : error);
  }
}

TEST(ConfigValidation, FlagsAndEnvironmentAreCheckedTheSameWay) {
  EXPECT_NE(error_for("", {"--max-body-bytes", "-1"}).find("max_body_bytes: must be"), std::string::npos);
  EXPECT_NE(error_for("", {"--artifacts-listen", "nowhere"}).find("artifacts.listen"), std::string::npos);
  EXPECT_NE(error_for("", {"--listen", "127.0.0.1:0"}).find("listen (--listen): must be"), std::string::npos);
  EXPECT_NE(error_for("", {"--log-level", "loud"}).find("log.level"), std::string::npos);
  ::setenv("PROVISIONER_HTTP_THREADS", "0", 1);
  auto error = error_for("");
  ::unsetenv("PROVISIONER_HTTP_THREADS");
  EXPECT_NE(error.find("http_threads: must be"), std::string::npos) << error;
}

TEST(ConfigValidation, GoodValuesAreKept) {
  auto file_toml =
      "listen = \"127.0.0.1:9000\"\nmax_body_bytes = 4096\n[artifacts]\nlisten = \"[::1]:9001\"\nthreads = 3\n"
      "max_upload_bytes = 1048576\n[log]\nlevel = \"warn\"\n[redfish]\nrequest_timeout_ms = 1500\n"
      "prefer_graceful_restart = false\n";
  test::TempDir dir;
  auto file = dir.path() / "c.toml";
  std::ofstream(file) << file_toml;
  auto r = parse({"--config", file.string(), "--admin-token-sha256", kHash});
  ASSERT_TRUE(std::holds_alternative<RunController>(r)) << std::get<ExitWith>(r).output;
  const auto& c = std::get<RunController>(r).config;
  EXPECT_EQ(c.listen, "127.0.0.1:9000");
  EXPECT_EQ(c.max_body_bytes, 4096u);
  EXPECT_EQ(c.artifacts_listen, "[::1]:9001");
  EXPECT_EQ(c.artifacts_threads, 3);
  EXPECT_EQ(c.max_upload_bytes, 1048576u);
  EXPECT_EQ(c.log_level, "warn");
  EXPECT_EQ(c.redfish.request_timeout_ms, 1500);
  EXPECT_FALSE(c.redfish.prefer_graceful_restart);
}
