#include "tools/vbmc/redfish_service.hpp"

#include <algorithm>

#include <nlohmann/json.hpp>

#include "common/crypto.hpp"
#include "controller/logging/logger.hpp"
#include "tools/vbmc/qemu_machine.hpp"

namespace provisioner::vbmc {

using nlohmann::json;

namespace {

constexpr std::size_t kMaxSessions = 64;  // oldest dropped beyond this, like most BMCs
const std::string kRoot = "/redfish/v1";
const std::string kSessions = "/redfish/v1/SessionService/Sessions";

json odata(const std::string& path) { return json{{"@odata.id", path}}; }

std::string etag_of(const std::string& body) {
  std::string e = "\"";  // piecewise: GCC 12 -Wrestrict false positive on "x" + string
  e.append(crypto::sha256_hex(body), 0, 16).append("\"");
  return e;
}

HttpAnswer ok_json(const json& j, bool with_etag = false) {
  HttpAnswer a{200, {}, j.dump()};
  if (with_etag) a.headers.emplace_back("ETag", etag_of(a.body));
  return a;
}

HttpAnswer error(int status, const std::string& id, const std::string& message) {
  json j = {{"error",
             {{"code", id},
              {"message", message},
              {"@Message.ExtendedInfo",
               json::array({{{"@odata.type", "#Message.v1_1_1.Message"},
                             {"MessageId", id},
                             {"Message", message},
                             {"Severity", status >= 500 ? "Critical" : "Warning"}}})}}}};
  return HttpAnswer{status, {}, j.dump()};
}

HttpAnswer from_error(const Error& e) {
  switch (e.kind) {
    case ErrorKind::invalid_input: return error(400, "Base.1.8.PropertyValueNotInList", e.message);
    case ErrorKind::not_found: return error(404, "Base.1.8.ResourceMissingAtURI", e.message);
    case ErrorKind::conflict: return error(409, "Base.1.8.ResourceInUse", e.message);
    default: return error(500, "Base.1.8.InternalError", e.message);
  }
}

HttpAnswer no_content() { return HttpAnswer{204, {}, ""}; }

std::vector<std::string> split_path(const std::string& p) {
  std::vector<std::string> out;
  std::size_t pos = 0;
  while (pos < p.size()) {
    auto e = p.find('/', pos);
    if (e == std::string::npos) e = p.size();
    if (e > pos) out.push_back(p.substr(pos, e - pos));
    pos = e + 1;
  }
  return out;
}

}  // namespace

RedfishService::RedfishService(std::vector<QemuMachine*> machines, Credentials credentials, const Logger& logger)
    : machines_(std::move(machines)), credentials_(std::move(credentials)), log_(logger) {}

int RedfishService::live_sessions() const {
  std::lock_guard lock(mu_);
  return static_cast<int>(sessions_.size());
}

QemuMachine* RedfishService::machine(const std::string& id) const {
  for (auto* m : machines_)
    if (m->config().id == id) return m;
  return nullptr;
}

bool RedfishService::authorized(const HttpRequest& r) const {
  std::string token = r.header("x-auth-token");
  if (!token.empty()) {
    std::lock_guard lock(mu_);
    for (const auto& s : sessions_)
      if (crypto::constant_time_equal(s.token, token)) return true;
    return false;
  }
  std::string auth = r.header("authorization");
  if (auth.rfind("Basic ", 0) != 0) return false;
  auto pair = crypto::base64_decode(std::string_view(auth).substr(6));
  return pair && crypto::constant_time_equal(*pair, credentials_.username + ":" + credentials_.password);
}

HttpAnswer RedfishService::handle(const HttpRequest& request) {
  std::string path = request.path;
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  HttpAnswer a;
  try {
    a = route(request, path);
  } catch (const std::exception& e) {
    a = error(500, "Base.1.8.InternalError", std::string("internal error: ") + e.what());
  }
  // Never the body: it may carry a password (session login).
  log_.debug("redfish request", {{"method", request.method}, {"path", path}, {"status", std::to_string(a.status)}});
  return a;
}

HttpAnswer RedfishService::route(const HttpRequest& r, const std::string& path) {
  const std::string& m = r.method;
  if (path == "/redfish" && m == "GET") return ok_json({{"v1", "/redfish/v1/"}});
  if (path == kRoot && m == "GET") {
    return ok_json({{"@odata.id", "/redfish/v1/"},
                    {"@odata.type", "#ServiceRoot.v1_5_0.ServiceRoot"},
                    {"Id", "RootService"},
                    {"Name", "provisioner virtual BMC"},
                    {"RedfishVersion", "1.8.0"},
                    {"Vendor", "provisioner"},
                    {"Product", "provisioner-vbmc"},
                    {"Systems", odata(kRoot + "/Systems")},
                    {"Managers", odata(kRoot + "/Managers")},
                    {"SessionService", odata(kRoot + "/SessionService")},
                    {"Links", {{"Sessions", odata(kSessions)}}}});
  }
  if (path == kSessions && m == "POST") return create_session(r);
  if (!authorized(r)) return error(401, "Base.1.8.NoValidSession", "Authentication required");

  if (path == kRoot + "/SessionService" && m == "GET")
    return ok_json({{"@odata.id", path},
                    {"@odata.type", "#SessionService.v1_1_8.SessionService"},
                    {"Id", "SessionService"},
                    {"ServiceEnabled", true},
                    {"Sessions", odata(kSessions)}});
  if (path == kSessions && m == "GET") {
    std::lock_guard lock(mu_);
    json members = json::array();
    for (const auto& s : sessions_) members.push_back(odata(kSessions + "/" + s.id));
    return ok_json({{"@odata.id", path}, {"Members", members}, {"Members@odata.count", members.size()}});
  }
  if (path.rfind(kSessions + "/", 0) == 0) {
    std::string id = path.substr(kSessions.size() + 1);
    std::lock_guard lock(mu_);
    auto it = std::find_if(sessions_.begin(), sessions_.end(), [&](const Session& s) { return s.id == id; });
    if (it == sessions_.end()) return error(404, "Base.1.8.ResourceMissingAtURI", "No session " + id);
    if (m == "DELETE") {
      sessions_.erase(it);
      return no_content();
    }
    if (m == "GET") return ok_json({{"@odata.id", path}, {"Id", id}, {"UserName", credentials_.username}});
    return error(405, "Base.1.8.ActionNotSupported", "Not allowed on a session");
  }

  auto parts = split_path(path);  // redfish v1 Systems {id} ...
  if (parts.size() < 3 || parts[0] != "redfish" || parts[1] != "v1")
    return error(404, "Base.1.8.ResourceMissingAtURI", "No resource at " + path);
  const std::string& kind = parts[2];
  if ((kind == "Systems" || kind == "Managers") && parts.size() == 3) {
    if (m != "GET") return error(405, "Base.1.8.ActionNotSupported", "Collections are read-only");
    json members = json::array();
    for (auto* mach : machines_) members.push_back(odata(kRoot + "/" + kind + "/" + mach->config().id));
    return ok_json({{"@odata.id", path},
                    {"@odata.type", kind == "Systems" ? "#ComputerSystemCollection.ComputerSystemCollection"
                                                      : "#ManagerCollection.ManagerCollection"},
                    {"Members", members},
                    {"Members@odata.count", members.size()}});
  }
  if (kind != "Systems" && kind != "Managers") return error(404, "Base.1.8.ResourceMissingAtURI", "No resource at " + path);
  QemuMachine* mach = machine(parts[3]);
  if (!mach) return error(404, "Base.1.8.ResourceMissingAtURI", "No resource at " + path);

  if (kind == "Systems") {
    if (parts.size() == 4) {
      if (m == "GET") return system_get(*mach);
      if (m == "PATCH") return system_patch(*mach, r);
      return error(405, "Base.1.8.ActionNotSupported", "Only GET and PATCH on a System");
    }
    if (parts.size() == 6 && parts[4] == "Actions" && parts[5] == "ComputerSystem.Reset") {
      if (m != "POST") return error(405, "Base.1.8.ActionNotSupported", "Actions are POSTed");
      return reset(*mach, r);
    }
    return error(404, "Base.1.8.ResourceMissingAtURI", "No resource at " + path);
  }
  // Managers/{id}[/VirtualMedia[/{slot}[/Actions/VirtualMedia.X]]]
  if (parts.size() == 4) {
    if (m == "GET") return manager_get(*mach);
    return error(405, "Base.1.8.ActionNotSupported", "Managers are read-only here");
  }
  if (parts[4] != "VirtualMedia") return error(404, "Base.1.8.ResourceMissingAtURI", "No resource at " + path);
  if (parts.size() == 5) {
    if (m == "GET") return media_collection(*mach);
    return error(405, "Base.1.8.ActionNotSupported", "Collections are read-only");
  }
  const std::string& slot = parts[5];
  if (parts.size() == 6) {
    if (m == "GET") return slot_get(*mach, slot);
    if (m == "PATCH") {
      // PATCH {"Image": url, "Inserted": true} inserts; {"Image": null} / Inserted false ejects.
      auto cur = slot_get(*mach, slot);
      if (cur.status != 200) return cur;
      std::string if_match = r.header("if-match");
      std::string etag = etag_of(cur.body);
      if (!if_match.empty() && if_match != "*" && if_match != etag)
        return error(412, "Base.1.8.PreconditionFailed", "ETag does not match the resource");
      json j = json::parse(r.body, nullptr, false);
      if (!j.is_object()) return error(400, "Base.1.8.MalformedJSON", "Body is not a JSON object");
      if (j.contains("Image") && j["Image"].is_string() && j.value("Inserted", true))
        return slot_insert(*mach, slot, r, true);
      if ((j.contains("Image") && j["Image"].is_null()) || (j.contains("Inserted") && j["Inserted"] == false))
        return slot_eject(*mach, slot);
      return error(400, "Base.1.8.PropertyMissing", "Set Image (and Inserted) to insert, Image null to eject");
    }
    return error(405, "Base.1.8.ActionNotSupported", "Only GET and PATCH on a slot");
  }
  if (parts.size() == 8 && parts[6] == "Actions") {
    if (m != "POST") return error(405, "Base.1.8.ActionNotSupported", "Actions are POSTed");
    if (parts[7] == "VirtualMedia.InsertMedia") return slot_insert(*mach, slot, r, false);
    if (parts[7] == "VirtualMedia.EjectMedia") return slot_eject(*mach, slot);
  }
  return error(404, "Base.1.8.ResourceMissingAtURI", "No resource at " + path);
}

HttpAnswer RedfishService::create_session(const HttpRequest& r) {
  json j = json::parse(r.body, nullptr, false);
  if (!j.is_object() || !j.contains("UserName") || !j.contains("Password") || !j["UserName"].is_string() ||
      !j["Password"].is_string())
    return error(400, "Base.1.8.PropertyMissing", "UserName and Password are required");
  bool user_ok = crypto::constant_time_equal(j["UserName"].get<std::string>(), credentials_.username);
  bool pass_ok = crypto::constant_time_equal(j["Password"].get<std::string>(), credentials_.password);
  if (!user_ok || !pass_ok) {
    log_.warn("session login refused", {{"user", j["UserName"].get<std::string>()}});
    return error(401, "Base.1.8.NoValidSession", "Invalid username or password");
  }
  Session s;
  {
    std::lock_guard lock(mu_);
    s.id = std::to_string(next_session_++);
    s.token = crypto::random_token(16);
    sessions_.push_back(s);
    if (sessions_.size() > kMaxSessions) sessions_.erase(sessions_.begin());
  }
  std::string loc = kSessions + "/" + s.id;
  HttpAnswer a{201, {{"X-Auth-Token", s.token}, {"Location", loc}},
               json{{"@odata.id", loc}, {"@odata.type", "#Session.v1_3_0.Session"}, {"Id", s.id},
                    {"UserName", credentials_.username}}
                   .dump()};
  return a;
}

HttpAnswer RedfishService::system_get(QemuMachine& m) {
  const auto& c = m.config();
  std::string sys = kRoot + "/Systems/" + c.id;
  BootOverride boot = m.boot();
  json j = {{"@odata.id", sys},
            {"@odata.type", "#ComputerSystem.v1_13_0.ComputerSystem"},
            {"Id", c.id},
            {"Name", c.id},
            {"SystemType", "Virtual"},
            {"Manufacturer", "QEMU"},
            {"Model", "Standard PC (Q35 + ICH9, 2009)"},
            {"SerialNumber", c.serial},
            {"PowerState", m.power_state()},
            {"Status", {{"State", "Enabled"}, {"Health", "OK"}}},
            {"MemorySummary", {{"TotalSystemMemoryGiB", c.memory_mb / 1024.0}}},
            {"ProcessorSummary", {{"Count", c.cpus}}},
            {"Boot",
             {{"BootSourceOverrideTarget", boot.target},
              {"BootSourceOverrideEnabled", boot.enabled},
              {"BootSourceOverrideMode", m.boot_mode()},
              {"BootSourceOverrideTarget@Redfish.AllowableValues", QemuMachine::boot_targets()},
              {"BootSourceOverrideEnabled@Redfish.AllowableValues", {"Disabled", "Once", "Continuous"}},
              {"BootSourceOverrideMode@Redfish.AllowableValues", {m.boot_mode()}}}},
            {"Actions",
             {{"#ComputerSystem.Reset",
               {{"target", sys + "/Actions/ComputerSystem.Reset"},
                {"ResetType@Redfish.AllowableValues", QemuMachine::reset_types()}}}}},
            {"Links", {{"ManagedBy", json::array({odata(kRoot + "/Managers/" + c.id)})}}}};
  return ok_json(j, true);
}

HttpAnswer RedfishService::system_patch(QemuMachine& m, const HttpRequest& r) {
  std::string if_match = r.header("if-match");
  if (!if_match.empty() && if_match != "*") {
    auto cur = system_get(m);
    if (if_match != etag_of(cur.body))
      return error(412, "Base.1.8.PreconditionFailed", "ETag does not match the resource");
  }
  json j = json::parse(r.body, nullptr, false);
  if (!j.is_object()) return error(400, "Base.1.8.MalformedJSON", "Body is not a JSON object");
  for (auto it = j.begin(); it != j.end(); ++it)
    if (it.key() != "Boot" && it.key().rfind("@odata", 0) != 0)
      return error(400, "Base.1.8.PropertyNotWritable", "Property " + it.key() + " is read-only");
  if (!j.contains("Boot") || !j["Boot"].is_object()) return error(400, "Base.1.8.PropertyMissing", "Boot object required");
  const json& b = j["Boot"];
  BootOverride want = m.boot();
  for (auto it = b.begin(); it != b.end(); ++it) {
    const std::string& k = it.key();
    if (!it->is_string()) return error(400, "Base.1.8.PropertyValueTypeError", "Boot." + k + " must be a string");
    std::string v = it->get<std::string>();
    if (k == "BootSourceOverrideTarget") {
      want.target = v;
    } else if (k == "BootSourceOverrideEnabled") {
      want.enabled = v;
    } else if (k == "BootSourceOverrideMode") {
      if (v != m.boot_mode())
        return error(400, "Base.1.8.PropertyValueNotInList",
                     "BootSourceOverrideMode " + v + " is not possible: the machine runs " + m.config().firmware +
                         " firmware (" + m.boot_mode() + ")");
    } else {
      return error(400, "Base.1.8.PropertyNotWritable", "Boot." + k + " cannot be changed");
    }
  }
  if (auto s = m.set_boot(want); !s) return from_error(s.error());
  return no_content();
}

HttpAnswer RedfishService::reset(QemuMachine& m, const HttpRequest& r) {
  json j = json::parse(r.body, nullptr, false);
  if (!j.is_object() || !j.contains("ResetType") || !j["ResetType"].is_string())
    return error(400, "Base.1.8.ActionParameterMissing", "ResetType is required");
  std::string type = j["ResetType"].get<std::string>();
  const auto& allowed = QemuMachine::reset_types();
  if (std::find(allowed.begin(), allowed.end(), type) == allowed.end())
    return error(400, "Base.1.8.ActionParameterNotSupported", "ResetType " + type + " is not supported");
  if (auto s = m.reset(type); !s) return from_error(s.error());
  return no_content();
}

HttpAnswer RedfishService::manager_get(QemuMachine& m) {
  const auto& c = m.config();
  std::string mgr = kRoot + "/Managers/" + c.id;
  json j = {{"@odata.id", mgr},
            {"@odata.type", "#Manager.v1_10_0.Manager"},
            {"Id", c.id},
            {"Name", "Virtual BMC for " + c.id},
            {"ManagerType", "BMC"},
            {"Model", "provisioner-vbmc"},
            {"FirmwareVersion", "provisioner-vbmc 0.1.0"},
            {"Status", {{"State", "Enabled"}, {"Health", "OK"}}},
            {"VirtualMedia", odata(mgr + "/VirtualMedia")},
            {"Links", {{"ManagerForServers", json::array({odata(kRoot + "/Systems/" + c.id)})}}}};
  return ok_json(j, true);
}

HttpAnswer RedfishService::media_collection(QemuMachine& m) {
  std::string base = kRoot + "/Managers/" + m.config().id + "/VirtualMedia";
  json members = json::array();
  for (const auto& s : m.slots()) members.push_back(odata(base + "/" + s.id));
  return ok_json({{"@odata.id", base},
                  {"@odata.type", "#VirtualMediaCollection.VirtualMediaCollection"},
                  {"Name", "Virtual Media"},
                  {"Members", members},
                  {"Members@odata.count", members.size()}});
}

HttpAnswer RedfishService::slot_get(QemuMachine& m, const std::string& slot) {
  std::string p = kRoot + "/Managers/" + m.config().id + "/VirtualMedia/" + slot;
  for (const auto& s : m.slots()) {
    if (s.id != slot) continue;
    json j = {{"@odata.id", p},
              {"@odata.type", "#VirtualMedia.v1_3_0.VirtualMedia"},
              {"Id", s.id},
              {"Name", "Virtual " + s.id},
              {"MediaTypes", s.media_types},
              {"Image", s.inserted ? json(s.image) : json(nullptr)},
              {"ImageName", s.inserted ? json(s.image.substr(s.image.find_last_of('/') + 1)) : json(nullptr)},
              {"Inserted", s.inserted},
              {"WriteProtected", s.write_protected},
              {"ConnectedVia", s.inserted ? "URI" : "NotConnected"},
              {"TransferProtocolType", s.inserted ? json("HTTP") : json(nullptr)},
              {"Actions",
               {{"#VirtualMedia.InsertMedia", {{"target", p + "/Actions/VirtualMedia.InsertMedia"}}},
                {"#VirtualMedia.EjectMedia", {{"target", p + "/Actions/VirtualMedia.EjectMedia"}}}}}};
    return ok_json(j, true);
  }
  return error(404, "Base.1.8.ResourceMissingAtURI", "No resource at " + p);
}

HttpAnswer RedfishService::slot_insert(QemuMachine& m, const std::string& slot, const HttpRequest& r, bool via_patch) {
  json j = json::parse(r.body, nullptr, false);
  if (!j.is_object() || !j.contains("Image") || !j["Image"].is_string())
    return error(400, "Base.1.8.PropertyMissing", "The property Image is a required property");
  std::string url = j["Image"].get<std::string>();
  if (j.contains("TransferProtocolType") && j["TransferProtocolType"].is_string()) {
    std::string t = j["TransferProtocolType"].get<std::string>();
    std::string scheme = url.substr(0, url.find(':'));
    std::transform(scheme.begin(), scheme.end(), scheme.begin(), [](unsigned char c) { return std::toupper(c); });
    if (t != scheme)
      return error(400, "Base.1.8.ActionParameterValueConflict",
                   "TransferProtocolType " + t + " does not match the Image URL scheme");
  }
  bool write_protected = !j.contains("WriteProtected") || !j["WriteProtected"].is_boolean() || j["WriteProtected"].get<bool>();
  auto s = m.insert_media(slot, url, write_protected);
  if (!s) {
    if (s.error().kind == ErrorKind::unavailable)  // the BMC could not fetch the image
      return error(400, "Base.1.8.ActionParameterValueFormatError",
                   "The image could not be fetched: " + s.error().message);
    return from_error(s.error());
  }
  (void)via_patch;
  return no_content();
}

HttpAnswer RedfishService::slot_eject(QemuMachine& m, const std::string& slot) {
  if (auto s = m.eject_media(slot); !s) return from_error(s.error());
  return no_content();
}

}  // namespace provisioner::vbmc
