#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "common/redact.hpp"

using namespace provisioner;

TEST(Redact, SecretNamedFieldsAreMasked) {
  auto doc = nlohmann::json::parse(
      R"({"bmc":{"username":"root","password":"calvin"},"secrets":{"db":"s3cret"},"api_token":"t","ssh_public_key":"ssh-ed25519 AAAA","hostname":"h"})");
  auto out = redact(doc);
  EXPECT_EQ(out["bmc"]["password"], "<redacted>");
  EXPECT_EQ(out["bmc"]["username"], "root");
  EXPECT_EQ(out["secrets"]["db"], "<redacted>");
  EXPECT_EQ(out["api_token"], "<redacted>");
  EXPECT_EQ(out["ssh_public_key"], "ssh-ed25519 AAAA");
  EXPECT_EQ(out["hostname"], "h");
  EXPECT_EQ(out.dump().find("calvin"), std::string::npos);
}

TEST(Redact, FreeTextSecretsAreMasked) {
  auto user_data = "#cloud-config\nusers:\n  - name: ops\n    passwd: $6$hash\n    plain_text_passwd: hunter2\nchpasswd:\n  password: hunter3\n";
  auto out = redact_text(user_data);
  for (const char* s : {"$6$hash", "hunter2", "hunter3"}) EXPECT_EQ(out.find(s), std::string::npos) << s;
  EXPECT_NE(out.find("name: ops"), std::string::npos);

  auto ks = redact_text("rootpw --plaintext toor\nuser --name=a --password=letmein --plaintext\n");
  EXPECT_EQ(ks.find("toor"), std::string::npos);
  EXPECT_EQ(ks.find("letmein"), std::string::npos);
  EXPECT_NE(ks.find("--plaintext"), std::string::npos);

  auto xml = redact_text("<AdministratorPassword><Value>Adm1n!</Value><PlainText>true</PlainText></AdministratorPassword><x/>");
  EXPECT_EQ(xml.find("Adm1n!"), std::string::npos);
  EXPECT_NE(xml.find("<x/>"), std::string::npos);
}

TEST(Redact, SecretBearingDocumentsAreHiddenWholeMetaDataGoesThroughTextRedaction) {
  // A password the line-based mask does not recognise (a shell command) must not show either.
  auto doc = nlohmann::json{{"user_data", "runcmd:\n  - echo 'root:x1y2z3' | chpasswd\n"},
                            {"ks_cfg", "user --name=a --password x1y2z3\n"},
                            {"meta_data", "local-hostname: n1\napi_token: x1y2z3\n"}};
  auto out = redact(doc);
  EXPECT_EQ(out.dump().find("x1y2z3"), std::string::npos) << out.dump();
  EXPECT_EQ(out["user_data"], "<redacted>");
  EXPECT_EQ(out["ks_cfg"], "<redacted>");
  EXPECT_NE(out["meta_data"].get<std::string>().find("local-hostname: n1"), std::string::npos);
}
