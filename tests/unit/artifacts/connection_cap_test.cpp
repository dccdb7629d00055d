// How the artifact server's connection cap follows the process's open-file limit.
#include <gtest/gtest.h>

#include "controller/artifacts/artifact_server.hpp"

namespace provisioner::artifacts {
namespace {

TEST(ConnectionCap, LeavesHeadroomAndRoomForEachResponsesFiles) {
  // The soft limit Debian starts processes with: a quarter kept back, the rest halved.
  EXPECT_EQ(connection_cap(1024), (1024u - 256u) / 2);
  // What the controller raises itself to on a typical host (hard limit 20,000 here, often
  // 524,288 or 1,048,576 under systemd): at most 4,096 kept back.
  EXPECT_EQ(connection_cap(20000), (20000u - 4096u) / 2);
  EXPECT_GT(connection_cap(20000), 2000u * 3);  // the outsider's 900 and the tests' 2,000 fit easily
  EXPECT_EQ(connection_cap(65536), (65536u - 4096u) / 2);
}

TEST(ConnectionCap, IsBoundedBothWays) {
  EXPECT_EQ(connection_cap(0), 8u);
  EXPECT_EQ(connection_cap(256), 8u);     // absurdly low limits still serve a few BMCs
  EXPECT_EQ(connection_cap(1ull << 20), 32768u);  // and a huge one does not invite unbounded memory
  EXPECT_EQ(connection_cap(~0ull), 32768u);
  for (std::uint64_t n = 1024; n <= (1u << 16); n *= 2) {
    EXPECT_LT(connection_cap(n), n / 2) << n;  // never more than half the descriptors
    EXPECT_LE(connection_cap(n), connection_cap(n * 2)) << n;
  }
}

}  // namespace
}  // namespace provisioner::artifacts
