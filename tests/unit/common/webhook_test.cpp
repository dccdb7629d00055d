#include <gtest/gtest.h>

#include "common/webhook.hpp"

using namespace provisioner;

TEST(Webhook, SignatureIsHmacOverTimestampDotBody) {
  // RFC-style check against an independently computed value (openssl dgst -sha256 -hmac key).
  EXPECT_EQ(sign_webhook("key", 1700000000, "{}"),
            "sha256=9d713ed406bb7076d4123f0dc2c39d2df5c654ed4b0cd56b52c8b4c940bd63ae")
      << "recompute with: printf '1700000000.{}' | openssl dgst -sha256 -hmac key";
}

TEST(Webhook, SignatureMatchesOnlyTheSameInputs) {
  auto sig = sign_webhook("k1", 10, "body");
  EXPECT_TRUE(webhook_signature_matches("k1", 10, "body", sig));
  EXPECT_FALSE(webhook_signature_matches("k2", 10, "body", sig));
  EXPECT_FALSE(webhook_signature_matches("k1", 11, "body", sig));
  EXPECT_FALSE(webhook_signature_matches("k1", 10, "body ", sig));
  EXPECT_FALSE(webhook_signature_matches("k1", 10, "body", "sha256=00"));
}

TEST(Webhook, ParsesAReport) {
  auto r = parse_webhook_report(R"({"job_id":"job_1","status":"failed","failed_step":"partition.service","progress":40})");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->failed_step, "partition.service");
  EXPECT_EQ(r->progress, 40);
  auto back = parse_webhook_report(to_json(*r));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->job_id, "job_1");
}

TEST(Webhook, RefusesBadReports) {
  EXPECT_FALSE(parse_webhook_report("not json").ok());
  EXPECT_FALSE(parse_webhook_report(R"({"job_id":"j","status":"done"})").ok());
  EXPECT_FALSE(parse_webhook_report(R"({"job_id":"j","status":"failed"})").ok());  // names no step
  EXPECT_FALSE(parse_webhook_report(R"({"job_id":"../x","status":"running"})").ok());
  EXPECT_FALSE(parse_webhook_report(R"({"status":"running"})").ok());
}

TEST(Webhook, TimestampsAreDigitsOnly) {
  EXPECT_EQ(parse_unix_timestamp("1700000000"), 1700000000);
  EXPECT_FALSE(parse_unix_timestamp("-1"));
  EXPECT_FALSE(parse_unix_timestamp("1e9"));
  EXPECT_FALSE(parse_unix_timestamp(""));
  EXPECT_FALSE(parse_unix_timestamp("99999999999999999999"));
}
