// Webhook body parser, timestamp parser and signature check on arbitrary bytes.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "common/webhook.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto report = provisioner::parse_webhook_report(text);
  if (report) (void)provisioner::parse_webhook_report(provisioner::to_json(*report));
  auto split = text.find('\n');
  auto head = text.substr(0, split);
  (void)provisioner::parse_unix_timestamp(head);
  (void)provisioner::webhook_signature_matches("key", 1, text, head);
  return 0;
}
