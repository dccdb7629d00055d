// The [artifacts] limits in the controller's config file: read, and refused with the key named.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "controller/artifacts/artifact_server.hpp"
#include "controller/config/config.hpp"

namespace provisioner {
namespace {
namespace fs = std::filesystem;

class ArtifactsConfig : public ::testing::Test {
 protected:
  void TearDown() override { fs::remove(file_); }
  Status load(const std::string& artifacts_section, ControllerConfig& c) {
    std::ofstream(file_) << "[artifacts]\n" << artifacts_section;
    return apply_config_file(file_, c);
  }
  fs::path file_ = fs::temp_directory_path() / ("artifacts-config-" + std::to_string(::getpid()) + ".toml");
};

TEST_F(ArtifactsConfig, DefaultsMatchTheServersAndKeysAreRead) {
  ControllerConfig c;
  artifacts::ArtifactServerOptions o;
  EXPECT_EQ(c.artifacts_max_connections, static_cast<std::int64_t>(o.max_connections));
  EXPECT_EQ(c.artifacts_max_connections_per_client, static_cast<std::int64_t>(o.max_connections_per_client));
  EXPECT_EQ(c.artifacts_head_timeout_ms, o.head_timeout.count());
  EXPECT_EQ(c.artifacts_keepalive_timeout_ms, o.keepalive_timeout.count());

  auto s = load("max_connections = 3000\nmax_connections_per_client = 0\nhead_timeout_ms = 2500\n"
                "keepalive_timeout_ms = 10000\n", c);
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_EQ(c.artifacts_max_connections, 3000);
  EXPECT_EQ(c.artifacts_max_connections_per_client, 0);
  EXPECT_EQ(c.artifacts_head_timeout_ms, 2500);
  EXPECT_EQ(c.artifacts_keepalive_timeout_ms, 10000);
}

TEST_F(ArtifactsConfig, BadLimitsNameTheKey) {
  for (const char* bad : {"head_timeout_ms = 0\n", "head_timeout_ms = -5\n", "head_timeout_ms = \"5s\"\n",
                          "head_timeout_ms = 2.5\n", "keepalive_timeout_ms = 0\n", "max_connections = -1\n",
                          "max_connections_per_client = -1\n", "max_connections_per_client = true\n"}) {
    ControllerConfig c;
    auto s = load(bad, c);
    ASSERT_FALSE(s) << bad;
    std::string key(bad, std::string_view(bad).find(' '));
    EXPECT_NE(s.error().message.find("artifacts." + key + ":"), std::string::npos) << s.error().message;
    EXPECT_EQ(c.artifacts_head_timeout_ms, 5000) << "nothing applied from " << bad;
  }
}

}  // namespace
}  // namespace provisioner
