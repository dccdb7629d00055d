#pragma once
// Sends status webhooks the way the dispatcher does: signed with the job's key.
#include <ctime>
#include <string>

#include "common/webhook.hpp"
#include "tests/support/controller_process.hpp"

namespace provisioner::test {

inline HttpResponse send_webhook(const ControllerProcess& c, const std::string& serial, const std::string& key,
                                 const std::string& body, std::int64_t timestamp = std::time(nullptr)) {
  return http_request(c.port(), "POST", "/api/v1/status-webhook/" + serial,
                      {{"Content-Type", "application/json"},
                       {std::string(kWebhookTimestampHeader), std::to_string(timestamp)},
                       {std::string(kWebhookSignatureHeader), sign_webhook(key, timestamp, body)}},
                      body);
}

}  // namespace provisioner::test
