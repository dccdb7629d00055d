#pragma once
// Redaction by field name: what API answers and log lines do to secrets before showing data.
#include <string>
#include <string_view>

#include <nlohmann/json_fwd.hpp>

namespace provisioner {

inline constexpr std::string_view kRedacted = "<redacted>";

// True for names that hold secrets: password, passwd, secret, token, key (but not
// public keys), credential(s), authorization.
bool is_secret_field(std::string_view name);

// A copy of `doc` with every secret-named value and every sealed value replaced by
// "<redacted>"; the documents that may carry a password anywhere (kSecretDocuments:
// user_data, network_config, ks_cfg, unattend_xml) are replaced whole, and meta_data goes
// through redact_text.
nlohmann::json redact(const nlohmann::json& doc);

// Masks `key: value` lines whose key is secret-named, kickstart rootpw/--password, and
// <...Password> XML elements.
std::string redact_text(std::string_view text);

}  // namespace provisioner
