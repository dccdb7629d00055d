#include "common/redact.hpp"

#include <algorithm>
#include <array>
#include <cctype>

#include <nlohmann/json.hpp>

#include "common/recipe.hpp"

namespace provisioner {

namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return std::tolower(c); });
  return out;
}

bool contains(const std::string& s, std::string_view needle) { return s.find(needle) != std::string::npos; }

// Masks the inner text of every element whose tag name contains "password" (unattend.xml).
std::string redact_xml_passwords(std::string text) {
  std::string low = lower(text);
  std::size_t pos = 0;
  while ((pos = low.find('<', pos)) != std::string::npos) {
    auto close = low.find('>', pos);
    if (close == std::string::npos) break;
    std::string tag = low.substr(pos + 1, close - pos - 1);
    if (!tag.empty() && tag[0] != '/' && tag.back() != '/' && contains(tag, "password")) {
      std::string name = tag.substr(0, tag.find_first_of(" \t\r\n"));
      auto end = low.find("</" + name, close);
      if (end == std::string::npos) break;
      text.replace(close + 1, end - close - 1, kRedacted);
      low.replace(close + 1, end - close - 1, kRedacted);
      pos = close + 1 + kRedacted.size();
      continue;
    }
    pos = close;
  }
  return text;
}

bool is_secret_document(std::string_view name) {
  for (auto doc : kSecretDocuments)
    if (name == doc) return true;
  return false;
}

}  // namespace

bool is_secret_field(std::string_view name) {
  std::string n = lower(name);
  if (contains(n, "public") || n == "ssh_authorized_keys" || n == "key_id" || n == "signing_key_id") return false;
  static constexpr std::array<std::string_view, 8> markers = {
      "password", "passwd", "secret", "token", "credential", "authorization", "private", "apikey"};
  for (auto m : markers)
    if (contains(n, m)) return true;
  return n == "key" || n.ends_with("_key") || n.ends_with("-key") || contains(n, "api_key");
}

std::string redact_text(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  std::size_t start = 0;
  while (start < text.size()) {
    auto end = text.find('\n', start);
    std::string_view line = text.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start);
    std::string low = lower(line);
    auto first = low.find_first_not_of(" \t-");
    std::string redacted(line);
    if (first != std::string::npos) {
      std::string_view rest = std::string_view(low).substr(first);
      auto colon = rest.find(':');
      if (rest.rfind("rootpw", 0) == 0) {
        redacted = std::string(line.substr(0, first)) + "rootpw " + std::string(kRedacted);
      } else if (auto p = low.find("--password="); p != std::string::npos) {
        auto stop = low.find_first_of(" \t", p);
        redacted = std::string(line.substr(0, p + 11)) + std::string(kRedacted) +
                   (stop == std::string::npos ? "" : std::string(line.substr(stop)));
      } else if (colon != std::string::npos && colon > 0 &&
                 is_secret_field(std::string(rest.substr(0, colon))) && colon + 1 < rest.size()) {
        redacted = std::string(line.substr(0, first + colon + 1)) + " " + std::string(kRedacted);
      }
    }
    out += redacted;
    if (end == std::string_view::npos) break;
    out += '\n';
    start = end + 1;
  }
  return redact_xml_passwords(std::move(out));
}

nlohmann::json redact(const nlohmann::json& doc) {
  if (doc.is_object()) {
    nlohmann::json out = nlohmann::json::object();
    for (auto it = doc.begin(); it != doc.end(); ++it) {
      if (is_secret_document(it.key()) && !it.value().is_null()) {
        // A password may sit anywhere in these (a runcmd line, a kickstart option, any XML
        // element): no line-based mask can promise to find it, so none of the text is shown.
        out[it.key()] = kRedacted;
      } else if (is_sealed_value(it.value())) {
        out[it.key()] = kRedacted;
      } else if (is_secret_field(it.key()) && !it.value().is_null()) {
        if (it.value().is_object()) {
          nlohmann::json masked = nlohmann::json::object();
          for (auto m = it.value().begin(); m != it.value().end(); ++m) masked[m.key()] = kRedacted;
          out[it.key()] = std::move(masked);
        } else {
          out[it.key()] = kRedacted;
        }
      } else if (it.value().is_string() && it.key() == "meta_data") {
        out[it.key()] = redact_text(it.value().get<std::string>());
      } else {
        out[it.key()] = redact(it.value());
      }
    }
    return out;
  }
  if (doc.is_array()) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& v : doc) out.push_back(redact(v));
    return out;
  }
  return doc;
}

}  // namespace provisioner
