#pragma once
// The status webhook contract between dispatcher and controller (ARCHITECTURE.md, Contracts).
// The body is JSON (schemas/webhook.schema.json); the request carries
//   X-Provisioner-Timestamp: <unix seconds>
//   X-Provisioner-Signature: sha256=<hex HMAC-SHA256 over "<timestamp>.<body>" with the job key>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/result.hpp"

namespace provisioner {

inline constexpr std::string_view kWebhookTimestampHeader = "X-Provisioner-Timestamp";
inline constexpr std::string_view kWebhookSignatureHeader = "X-Provisioner-Signature";

struct WebhookReport {
  std::string job_id;
  std::string status;       // running | success | failed
  std::string step;         // the unit now running or just finished
  std::string failed_step;  // the unit that failed (status failed)
  std::optional<int> progress;
  std::string log_tail;
};

Result<WebhookReport> parse_webhook_report(std::string_view body);
std::string to_json(const WebhookReport& report);

// "sha256=<hex>" for the given key, timestamp and exact body bytes.
std::string sign_webhook(std::string_view key, std::int64_t timestamp, std::string_view body);

// Checks the signature header against the expected one in constant time.
bool webhook_signature_matches(std::string_view key, std::int64_t timestamp, std::string_view body,
                               std::string_view signature_header);

// Decimal unix seconds, nothing else; nullopt otherwise.
std::optional<std::int64_t> parse_unix_timestamp(std::string_view text);

}  // namespace provisioner
