#include <gtest/gtest.h>

#include "common/crypto.hpp"
#include "controller/api/auth.hpp"

using namespace provisioner;

TEST(Auth, BearerTokensAreMatchedByHash) {
  TokenAuthenticator auth({{"ops", Role::operator_, crypto::sha256_hex("s3cr3t")}});
  auto t = auth.authenticate("Bearer s3cr3t");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->role, Role::operator_);
  EXPECT_FALSE(auth.authenticate("Bearer s3cr3"));
  EXPECT_FALSE(auth.authenticate("Basic s3cr3t"));
  EXPECT_FALSE(auth.authenticate("Bearer "));
  EXPECT_FALSE(auth.authenticate(""));
  EXPECT_FALSE(auth.authenticate("Bearer " + crypto::sha256_hex("s3cr3t"))) << "the hash is not the token";
}

TEST(Auth, RoleMatrix) {
  EXPECT_TRUE(role_allows(Role::auditor, Permission::read));
  EXPECT_FALSE(role_allows(Role::auditor, Permission::submit));
  EXPECT_FALSE(role_allows(Role::auditor, Permission::operate));
  EXPECT_TRUE(role_allows(Role::ci, Permission::submit));
  EXPECT_FALSE(role_allows(Role::ci, Permission::operate));
  EXPECT_TRUE(role_allows(Role::operator_, Permission::operate));
  EXPECT_FALSE(role_allows(Role::operator_, Permission::administer));
  EXPECT_TRUE(role_allows(Role::admin, Permission::administer));
}
