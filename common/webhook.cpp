#include "common/webhook.hpp"

#include <nlohmann/json.hpp>

#include "common/crypto.hpp"
#include "common/json_schema.hpp"
#include "common/recipe.hpp"

namespace provisioner {

Result<WebhookReport> parse_webhook_report(std::string_view body) {
  static const JsonSchema schema(webhook_schema_text());
  auto doc = parse_json(body, 8);
  if (!doc) return doc.error();
  if (auto errors = schema.validate(*doc); !errors.empty())
    return make_error(ErrorKind::invalid_input, "webhook body is not valid", std::move(errors));
  const auto& j = *doc;
  WebhookReport r;
  r.job_id = j.at("job_id").get<std::string>();
  r.status = j.at("status").get<std::string>();
  r.step = j.value("step", "");
  r.failed_step = j.value("failed_step", "");
  if (j.contains("progress")) r.progress = j["progress"].get<int>();
  r.log_tail = j.value("log_tail", "");
  if (r.status == "failed" && r.failed_step.empty())
    return make_error(ErrorKind::invalid_input, "webhook body is not valid",
                      {{"/failed_step", "a failed report must name the failed step"}});
  return r;
}

std::string to_json(const WebhookReport& r) {
  nlohmann::json j{{"job_id", r.job_id}, {"status", r.status}};
  if (!r.step.empty()) j["step"] = r.step;
  if (!r.failed_step.empty()) j["failed_step"] = r.failed_step;
  if (r.progress) j["progress"] = *r.progress;
  if (!r.log_tail.empty()) j["log_tail"] = r.log_tail;
  return j.dump();
}

std::string sign_webhook(std::string_view key, std::int64_t timestamp, std::string_view body) {
  std::string data = std::to_string(timestamp);
  data += '.';
  data.append(body);
  return "sha256=" + crypto::hmac_sha256_hex(key, data);
}

bool webhook_signature_matches(std::string_view key, std::int64_t timestamp, std::string_view body,
                               std::string_view signature_header) {
  return crypto::constant_time_equal(sign_webhook(key, timestamp, body), signature_header);
}

std::optional<std::int64_t> parse_unix_timestamp(std::string_view text) {
  if (text.empty() || text.size() > 12) return std::nullopt;
  std::int64_t v = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + (c - '0');
  }
  return v;
}

}  // namespace provisioner
