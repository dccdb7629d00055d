#include "controller/redfish/redfish_parse.hpp"

#include <algorithm>
#include <cctype>

namespace provisioner::redfish {

using nlohmann::json;

namespace {
std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}
std::string shorten(std::string s, std::size_t max = 300) {
  for (char& c : s)
    if (c == '\r' || c == '\n' || c == '\t') c = ' ';
  if (s.size() > max) s = s.substr(0, max) + "...";
  return s;
}
}  // namespace

std::string odata_link(const json& j, const char* key) {
  if (!j.is_object()) return {};
  auto it = j.find(key);
  if (it == j.end() || !it->is_object()) return {};
  auto id = it->find("@odata.id");
  if (id == it->end() || !id->is_string()) return {};
  return path_of(id->get<std::string>());
}

std::vector<std::string> collection_members(const json& collection) {
  std::vector<std::string> out;
  if (!collection.is_object()) return out;
  auto it = collection.find("Members");
  if (it == collection.end() || !it->is_array()) return out;
  for (const auto& m : *it)
    if (m.is_object() && m.contains("@odata.id") && m["@odata.id"].is_string())
      out.push_back(path_of(m["@odata.id"].get<std::string>()));
  return out;
}

std::string path_of(const std::string& uri) {
  auto scheme = uri.find("://");
  if (scheme == std::string::npos) return uri;
  auto slash = uri.find('/', scheme + 3);
  return slash == std::string::npos ? "/" : uri.substr(slash);
}

std::string bmc_message(const std::string& body) {
  if (body.empty()) return {};
  json j = json::parse(body, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return redact_url(shorten(body, 200));
  std::vector<std::string> parts;
  auto collect = [&](const json& infos) {
    if (!infos.is_array()) return;
    for (const auto& info : infos) {
      if (!info.is_object()) continue;
      std::string id = info.value("MessageId", "");
      std::string msg = info.value("Message", "");
      std::string part = id.empty() ? msg : (msg.empty() ? id : id + ": " + msg);
      if (!part.empty()) parts.push_back(part);
    }
  };
  if (j.contains("error") && j["error"].is_object()) {
    const json& e = j["error"];
    if (e.contains("@Message.ExtendedInfo")) collect(e["@Message.ExtendedInfo"]);
    if (parts.empty()) {
      std::string code = e.value("code", ""), msg = e.value("message", "");
      if (!msg.empty() || !code.empty()) parts.push_back(code.empty() ? msg : code + ": " + msg);
    }
  }
  if (parts.empty() && j.contains("@Message.ExtendedInfo")) collect(j["@Message.ExtendedInfo"]);
  if (parts.empty() && j.contains("Messages")) collect(j["Messages"]);  // a Task's messages
  std::string out;
  for (const auto& p : parts) out += (out.empty() ? "" : "; ") + p;
  return redact_url(shorten(out));
}

bool mentions(const std::string& body, const std::string& needle) {
  return lower(body).find(lower(needle)) != std::string::npos;
}

bool is_not_ready_answer(int status, const std::string& body) {
  if (status < 400 || body.empty()) return false;
  static const char* kMarkers[] = {
      "SYS518",                           // iDRAC: job/lifecycle controller busy
      "InvalidOperationForSystemState",   // iLO: not now (POST, power transition)
      "UnableToModifyDuringSystemPOST",   // iLO
      "ServiceTemporarilyUnavailable",    // Base registry
      "SessionLimitExceeded",             // sessions leak on busy BMCs; they age out
      "RAC0508",                          // iDRAC: operation in progress
  };
  for (const char* m : kMarkers)
    if (mentions(body, m)) return true;
  return false;
}

bool is_weak_etag(const std::string& etag) { return etag.rfind("W/", 0) == 0; }

std::string strong_etag(const std::string& etag) { return is_weak_etag(etag) ? etag.substr(2) : etag; }

std::string redact_url(const std::string& text) {
  // Removes "user:pass@" after any "scheme://" in free text.
  std::string out = text;
  std::size_t pos = 0;
  while ((pos = out.find("://", pos)) != std::string::npos) {
    std::size_t start = pos + 3;
    std::size_t end = start;
    while (end < out.size() && out[end] != '/' && out[end] != ' ' && out[end] != '"' && out[end] != '@') ++end;
    if (end < out.size() && out[end] == '@') out.erase(start, end - start + 1);
    pos = start;
  }
  return out;
}

std::string url_scheme_upper(const std::string& url) {
  auto p = url.find("://");
  std::string s = p == std::string::npos ? "HTTP" : url.substr(0, p);
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::toupper(c); });
  return s;
}

std::vector<std::string> string_array(const json& j, const char* key) {
  std::vector<std::string> out;
  if (!j.is_object() || !j.contains(key) || !j[key].is_array()) return out;
  for (const auto& v : j[key])
    if (v.is_string()) out.push_back(v.get<std::string>());
  return out;
}

bool contains(const std::vector<std::string>& values, const std::string& v) {
  return std::find(values.begin(), values.end(), v) != values.end();
}

VirtualMediaSlot parse_slot(const std::string& uri, const json& j, const std::string& etag, bool under_manager) {
  VirtualMediaSlot s;
  s.uri = uri;
  s.etag = etag;
  s.under_manager = under_manager;
  s.id = j.value("Id", uri.substr(uri.find_last_of('/') + 1));
  s.media_types = string_array(j, "MediaTypes");
  if (j.contains("Image") && j["Image"].is_string()) s.image = j["Image"].get<std::string>();
  if (j.contains("Inserted") && j["Inserted"].is_boolean()) s.inserted = j["Inserted"].get<bool>() ? 1 : 0;
  if (j.contains("ConnectedVia") && j["ConnectedVia"].is_string()) s.connected_via = j["ConnectedVia"].get<std::string>();
  if (j.contains("Actions") && j["Actions"].is_object()) {
    const json& a = j["Actions"];
    auto target = [&](const char* name) -> std::string {
      if (!a.contains(name) || !a[name].is_object()) return {};
      return path_of(a[name].value("target", ""));
    };
    s.insert_target = target("#VirtualMedia.InsertMedia");
    s.eject_target = target("#VirtualMedia.EjectMedia");
  }
  return s;
}

std::vector<std::string> allowable_reset_types(const json& system) {
  if (!system.is_object() || !system.contains("Actions")) return {};
  const json& a = system["Actions"];
  if (!a.is_object() || !a.contains("#ComputerSystem.Reset")) return {};
  return string_array(a["#ComputerSystem.Reset"], "ResetType@Redfish.AllowableValues");
}

bool VirtualMediaSlot::holds_media() const {
  if (connected_via == "NotConnected") return false;
  if (inserted >= 0) return inserted == 1;
  return !image.empty();
}

bool VirtualMediaSlot::shows_anything() const { return holds_media() || !image.empty() || inserted == 1; }

bool VirtualMediaSlot::accepts(MediaKind kind) const {
  auto has = [&](const char* t) {
    return std::any_of(media_types.begin(), media_types.end(), [&](const std::string& m) { return lower(m) == lower(t); });
  };
  if (media_types.empty()) {  // some BMCs omit MediaTypes: fall back to the slot's name
    std::string n = lower(id);
    if (kind == MediaKind::cd) return n.find("cd") != std::string::npos || n.find("dvd") != std::string::npos;
    return n.find("usb") != std::string::npos || n.find("removable") != std::string::npos ||
           n.find("floppy") != std::string::npos;
  }
  if (kind == MediaKind::cd) return has("CD") || has("DVD");
  return has("USBStick") || has("RemovableDisk") || has("Floppy");
}

bool VirtualMediaSlot::holds(const std::string& url) const {
  if (!holds_media() || image.empty()) return false;
  if (image == url) return true;
  // Some BMCs report only the file name in Image.
  if (image.find("://") == std::string::npos) {
    auto base = url.substr(url.find_last_of('/') + 1);
    return !base.empty() && image == base;
  }
  return false;
}

}  // namespace provisioner::redfish
