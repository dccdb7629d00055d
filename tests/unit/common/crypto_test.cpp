#include <gtest/gtest.h>

#include "common/crypto.hpp"

using namespace provisioner::crypto;

TEST(Crypto, Sha256OfKnownInput) {
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(Crypto, HexRoundTrip) {
  std::string bytes("\x00\x01\xfe\xff", 4);
  EXPECT_EQ(to_hex(bytes), "0001feff");
  EXPECT_EQ(from_hex("0001FEff"), bytes);
  EXPECT_FALSE(from_hex("abc"));
  EXPECT_FALSE(from_hex("zz"));
}

TEST(Crypto, Base64Rfc4648Vectors) {
  const std::pair<const char*, const char*> vectors[] = {{"", ""},         {"f", "Zg=="},         {"fo", "Zm8="},
                                                         {"foo", "Zm9v"},  {"foob", "Zm9vYg=="},  {"fooba", "Zm9vYmE="},
                                                         {"foobar", "Zm9vYmFy"}};
  for (const auto& [plain, encoded] : vectors) {
    EXPECT_EQ(base64_encode(plain), encoded);
    EXPECT_EQ(base64_decode(encoded), plain) << encoded;
  }
  EXPECT_EQ(base64_decode(base64_encode(std::string("a\0\xff:b", 5))), std::string("a\0\xff:b", 5));
  for (const char* bad : {"Zg=", "Zm9v!A==", "Zm 9v", "Z===", "=Zm9"}) EXPECT_FALSE(base64_decode(bad)) << bad;
}

TEST(Crypto, SealOpensOnlyWithTheKeyAndUntampered) {
  std::string key = random_bytes(32), other = random_bytes(32);
  auto sealed = seal(key, "bmc-password");
  EXPECT_EQ(sealed.find("bmc-password"), std::string::npos);
  EXPECT_EQ(open(key, sealed), "bmc-password");
  EXPECT_FALSE(open(other, sealed));
  std::string tampered = sealed;
  tampered[30] = tampered[30] == 'a' ? 'b' : 'a';
  EXPECT_FALSE(open(key, tampered));
  EXPECT_NE(seal(key, "x"), seal(key, "x")) << "nonces must differ";
}

TEST(Crypto, ConstantTimeEqual) {
  EXPECT_TRUE(constant_time_equal("abc", "abc"));
  EXPECT_FALSE(constant_time_equal("abc", "abd"));
  EXPECT_FALSE(constant_time_equal("abc", "ab"));
}
