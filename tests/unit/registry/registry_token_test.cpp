// Registry tokens: signed, expiring, and carrying only what they were issued for.
#include <gtest/gtest.h>

#include "controller/api/auth.hpp"
#include "controller/logging/logger.hpp"
#include "controller/registry/registry_service.hpp"
#include "controller/registry/registry_store.hpp"
#include "tests/support/controller_process.hpp"

using namespace provisioner;
using namespace provisioner::registry;

TEST(RegistryToken, RoundTripsAndRejectsTamperingAndExpiry) {
  test::TempDir dir;
  RegistryStore store(dir.path() / "r", dir.path() / "a");
  TokenAuthenticator auth({});
  Logger log(Logger::Format::text, "error");
  RegistryOptions options;
  options.token_ttl = std::chrono::seconds(60);
  RegistryService service(store, auth, log, "key-one", options);
  RegistryService other(store, auth, log, "key-two", options);
  RegistryService::Identity who{"ci-bot", Role::ci, false, false, {}};
  auto token = service.issue_token(who, {{"repository", "app", {Action::pull, Action::push}}}, 1000);
  auto back = service.verify_token(token, 1000);
  ASSERT_TRUE(back);
  EXPECT_EQ(back->name, "ci-bot");
  EXPECT_EQ(back->role, Role::ci);
  EXPECT_TRUE(back->scoped);
  ASSERT_EQ(back->grants.size(), 1u);
  EXPECT_EQ(back->grants[0].name, "app");
  EXPECT_EQ(back->grants[0].actions, (std::vector<Action>{Action::pull, Action::push}));
  EXPECT_FALSE(service.verify_token(token, 1060));  // expired
  EXPECT_FALSE(other.verify_token(token, 1000));    // another controller key
  auto tampered = token;
  tampered[10] = tampered[10] == 'a' ? 'b' : 'a';
  EXPECT_FALSE(service.verify_token(tampered, 1000));
  EXPECT_FALSE(service.verify_token("pvr1.", 1000));
  EXPECT_FALSE(service.verify_token("not a token", 1000));
}

TEST(RegistryToken, RolesMapToActions) {
  EXPECT_TRUE(role_may(Role::ci, Action::push));
  EXPECT_TRUE(role_may(Role::ci, Action::pull));
  EXPECT_FALSE(role_may(Role::ci, Action::del));
  EXPECT_TRUE(role_may(Role::operator_, Action::pull));
  EXPECT_FALSE(role_may(Role::operator_, Action::push));
  EXPECT_FALSE(role_may(Role::auditor, Action::pull));
  EXPECT_TRUE(role_may(Role::auditor, Action::list));
  EXPECT_TRUE(role_may(Role::admin, Action::del));
}
