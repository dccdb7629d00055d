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

// A copy of `doc` with every secret-named value replaced by "<redacted>", and secrets inside
// known free-text fields (cloud-init user-data, kickstart, unattend.xml) masked too.
nlohmann::json redact(const nlohmann::json& doc);

// Masks `key: value` lines whose key is secret-named, kickstart rootpw/--password, and
// <...Password> XML elements.
std::string redact_text(std::string_view text);

}  // namespace provisioner
