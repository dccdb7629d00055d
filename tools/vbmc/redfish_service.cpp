#include "tools/vbmc/redfish_service.hpp"

#include <algorithm>
#include <optional>

#include "common/crypto.hpp"
#include "controller/logging/logger.hpp"
#include "tools/vbmc/qemu_machine.hpp"
#include "tools/vbmc/redfish_schema.hpp"

namespace provisioner::vbmc {

using nlohmann::json;

namespace {

constexpr std::size_t kMaxSessions = 64;  // oldest dropped beyond this, like most BMCs
const std::string kRoot = "/redfish/v1";
const std::string kSessions = "/redfish/v1/SessionService/Sessions";
const char* const kODataVersion = "4.0";  // the only OData version served (DSP0266)
const char* const kChallenge = "Basic realm=\"provisioner-vbmc\", charset=\"UTF-8\"";

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
               json::array({{{"@odata.type", schema::message.odata_type()},
                             {"MessageId", id},
                             {"Message", message},
                             {"Severity", status >= 500 ? "Critical" : "Warning"}}})}}}};
  return HttpAnswer{status, {}, j.dump()};
}

HttpAnswer not_found(const std::string& path) {
  return error(404, "Base.1.8.ResourceMissingAtURI", "No resource at " + path);
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

// 412 when the request's If-Match names another version of the resource (`current` body).
std::optional<HttpAnswer> if_match_fails(const HttpRequest& r, const std::string& current) {
  std::string if_match = r.header("if-match");
  if (if_match.empty() || if_match == "*" || if_match == etag_of(current)) return std::nullopt;
  return error(412, "Base.1.8.PreconditionFailed", "ETag does not match the resource");
}

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

bool matches(const std::vector<std::string>& pattern, const std::vector<std::string>& parts) {
  if (pattern.size() != parts.size()) return false;
  for (std::size_t i = 0; i < parts.size(); ++i)
    if (pattern[i].front() != '{' && pattern[i] != parts[i]) return false;
  return true;
}

}  // namespace

RedfishService::RedfishService(std::vector<QemuMachine*> machines, Credentials credentials, std::string uuid,
                               const Logger& logger)
    : machines_(std::move(machines)), credentials_(std::move(credentials)), uuid_(std::move(uuid)), log_(logger) {}

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

// ---- routing ---------------------------------------------------------------------------

const std::vector<RedfishService::Route>& RedfishService::routes() {
  using S = RedfishService;
  const std::vector<std::string> sys = {"redfish", "v1", "Systems", "{machine}"};
  const std::vector<std::string> slot = {"redfish", "v1", "Managers", "{machine}", "VirtualMedia", "{slot}"};
  auto under = [](std::vector<std::string> base, std::initializer_list<const char*> more) {
    for (const char* m : more) base.emplace_back(m);
    return base;
  };
  static const std::vector<Route> table = {
      {{"redfish"}, {{"GET", &S::get_versions, true}}},
      {{"redfish", "v1"}, {{"GET", &S::get_service_root, true}}},
      {{"redfish", "v1", "$metadata"}, {{"GET", &S::get_metadata, true}}},
      {{"redfish", "v1", "odata"}, {{"GET", &S::get_odata, true}}},
      {{"redfish", "v1", "SessionService"}, {{"GET", &S::get_session_service, false}}},
      {{"redfish", "v1", "SessionService", "Sessions"},
       {{"GET", &S::get_sessions, false}, {"POST", &S::post_session, true}}},
      {{"redfish", "v1", "SessionService", "Sessions", "{session}"},
       {{"GET", &S::get_session, false}, {"DELETE", &S::delete_session, false}}},
      {{"redfish", "v1", "Systems"}, {{"GET", &S::get_systems, false}}},
      {sys, {{"GET", &S::get_system, false}, {"PATCH", &S::patch_system, false}}},
      {under(sys, {"Actions", "ComputerSystem.Reset"}), {{"POST", &S::post_reset, false}}},
      {{"redfish", "v1", "Managers"}, {{"GET", &S::get_managers, false}}},
      {{"redfish", "v1", "Managers", "{machine}"}, {{"GET", &S::get_manager, false}}},
      {{"redfish", "v1", "Managers", "{machine}", "VirtualMedia"}, {{"GET", &S::get_media_collection, false}}},
      {slot, {{"GET", &S::get_slot, false}, {"PATCH", &S::patch_slot, false}}},
      {under(slot, {"Actions", "VirtualMedia.InsertMedia"}), {{"POST", &S::post_insert_media, false}}},
      {under(slot, {"Actions", "VirtualMedia.EjectMedia"}), {{"POST", &S::post_eject_media, false}}},
  };
  return table;
}

std::string RedfishService::allow_header(const Route& route) {
  std::string out;
  for (const auto& m : route.methods) {
    if (!out.empty()) out += ", ";
    out += m.name;
    if (std::string(m.name) == "GET") out += ", HEAD";
  }
  return out;
}

bool RedfishService::resolve(const Route& route, const std::vector<std::string>& parts, Target& t) const {
  for (std::size_t i = 0; i < parts.size(); ++i) {
    const std::string& p = route.pattern[i];
    if (p == "{machine}") {
      t.machine = machine(parts[i]);
      if (!t.machine) return false;
    } else if (p == "{slot}") {
      auto slots = t.machine->slots();
      if (std::none_of(slots.begin(), slots.end(), [&](const MediaSlotState& s) { return s.id == parts[i]; }))
        return false;
      t.slot = parts[i];
    } else if (p == "{session}") {
      std::lock_guard lock(mu_);
      if (std::none_of(sessions_.begin(), sessions_.end(), [&](const Session& s) { return s.id == parts[i]; }))
        return false;
      t.session = parts[i];
    }
  }
  return true;
}

HttpAnswer RedfishService::handle(const HttpRequest& request) {
  std::string path = request.path;
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  HttpAnswer a;
  try {
    a = dispatch(request, path);
  } catch (const std::exception& e) {
    a = error(500, "Base.1.8.InternalError", std::string("internal error: ") + e.what());
  }
  if (a.status == 401) a.headers.emplace_back("WWW-Authenticate", kChallenge);
  // Never the body: it may carry a password (session login).
  log_.debug("redfish request", {{"method", request.method}, {"path", path}, {"status", std::to_string(a.status)}});
  return a;
}

HttpAnswer RedfishService::dispatch(const HttpRequest& r, const std::string& path) {
  // DSP0266: a request naming an OData version the service does not support is refused.
  if (std::string v = r.header("odata-version"); !v.empty() && v != kODataVersion)
    return error(412, "Base.1.8.PreconditionFailed",
                 "OData-Version " + v + " is not supported; this service implements " + kODataVersion);
  auto parts = split_path(path);
  const Route* route = nullptr;
  for (const auto& candidate : routes())
    if (matches(candidate.pattern, parts)) route = &candidate;
  const std::string method = r.method == "HEAD" ? "GET" : r.method;  // HEAD: GET, body dropped by the server
  const Method* handler = nullptr;
  if (route)
    for (const auto& m : route->methods)
      if (method == m.name) handler = &m;

  if (!(handler && handler->is_public) && !authorized(r))
    return error(401, "Base.1.8.NoValidSession", "Authentication required");
  Target target;
  target.path = path;
  if (!route || !resolve(*route, parts, target)) return not_found(path);
  if (!handler) {
    HttpAnswer a = error(405, "Base.1.8.ActionNotSupported", r.method + " is not supported on " + path);
    a.headers.emplace_back("Allow", allow_header(*route));
    return a;
  }
  HttpAnswer a = (this->*(handler->handler))(r, target);
  if (method == "GET" && a.status == 200) a.headers.emplace_back("Allow", allow_header(*route));
  return a;
}

// ---- service root, $metadata, odata ------------------------------------------------------

HttpAnswer RedfishService::get_versions(const HttpRequest&, const Target&) {
  return ok_json({{"v1", "/redfish/v1/"}});
}

HttpAnswer RedfishService::get_service_root(const HttpRequest&, const Target&) {
  json j = resource_header(schema::service_root, "/redfish/v1/");
  j.update({{"Id", "RootService"},
            {"Name", "provisioner virtual BMC"},
            {"RedfishVersion", "1.8.0"},
            {"UUID", uuid_},
            {"Vendor", "provisioner"},
            {"Product", "provisioner-vbmc"},
            {"Systems", odata(kRoot + "/Systems")},
            {"Managers", odata(kRoot + "/Managers")},
            {"SessionService", odata(kRoot + "/SessionService")},
            {"Links", {{"Sessions", odata(kSessions)}}}});
  return ok_json(j);
}

HttpAnswer RedfishService::get_metadata(const HttpRequest&, const Target&) {
  return HttpAnswer{200, {{"Content-Type", "application/xml"}}, metadata_document()};
}

HttpAnswer RedfishService::get_odata(const HttpRequest&, const Target&) { return ok_json(odata_service_document()); }

json RedfishService::collection_json(const SchemaType& type, const std::string& path, const std::string& name,
                                     const std::vector<std::string>& member_paths) const {
  json members = json::array();
  for (const auto& p : member_paths) members.push_back(odata(p));
  json j = resource_header(type, path);
  j.update({{"Name", name}, {"Members", members}, {"Members@odata.count", members.size()}});
  return j;
}

// ---- sessions -----------------------------------------------------------------------------

HttpAnswer RedfishService::get_session_service(const HttpRequest&, const Target& t) {
  json j = resource_header(schema::session_service, t.path);
  j.update({{"Id", "SessionService"},
            {"Name", "Session Service"},
            {"ServiceEnabled", true},
            {"Sessions", odata(kSessions)}});
  return ok_json(j);
}

HttpAnswer RedfishService::get_sessions(const HttpRequest&, const Target& t) {
  std::vector<std::string> ids;
  {
    std::lock_guard lock(mu_);
    for (const auto& s : sessions_) ids.push_back(kSessions + "/" + s.id);
  }
  return ok_json(collection_json(schema::session_collection, t.path, "Session Collection", ids));
}

json RedfishService::session_json(const std::string& id) const {
  json j = resource_header(schema::session, kSessions + "/" + id);
  j.update({{"Id", id},
            {"Name", "User Session"},
            {"Description", "Redfish session of " + credentials_.username},
            {"UserName", credentials_.username},
            {"Password", nullptr}});  // DSP0266: always null in answers
  return j;
}

HttpAnswer RedfishService::post_session(const HttpRequest& r, const Target&) {
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
  // DSP0266: 201, Location of the new session, X-Auth-Token, and the Session resource as body.
  std::string loc = kSessions + "/" + s.id;
  return HttpAnswer{201, {{"X-Auth-Token", s.token}, {"Location", loc}}, session_json(s.id).dump()};
}

HttpAnswer RedfishService::get_session(const HttpRequest&, const Target& t) { return ok_json(session_json(t.session)); }

HttpAnswer RedfishService::delete_session(const HttpRequest&, const Target& t) {
  std::lock_guard lock(mu_);
  auto it = std::find_if(sessions_.begin(), sessions_.end(), [&](const Session& s) { return s.id == t.session; });
  if (it == sessions_.end()) return not_found(t.path);  // deleted meanwhile
  sessions_.erase(it);
  return no_content();
}

// ---- systems ------------------------------------------------------------------------------

HttpAnswer RedfishService::get_systems(const HttpRequest&, const Target& t) {
  std::vector<std::string> ids;
  for (auto* m : machines_) ids.push_back(kRoot + "/Systems/" + m->config().id);
  return ok_json(collection_json(schema::system_collection, t.path, "Computer System Collection", ids));
}

json RedfishService::system_json(QemuMachine& m) const {
  const auto& c = m.config();
  std::string sys = kRoot + "/Systems/" + c.id;
  BootOverride boot = m.boot();
  json j = resource_header(schema::system, sys);
  j.update({{"Id", c.id},
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
            {"Links", {{"ManagedBy", json::array({odata(kRoot + "/Managers/" + c.id)})}}}});
  return j;
}

HttpAnswer RedfishService::get_system(const HttpRequest&, const Target& t) {
  return ok_json(system_json(*t.machine), true);
}

namespace {

// The Boot object of a System PATCH applied to `want`; an error answer when it asks for
// something this machine cannot do.
std::optional<HttpAnswer> apply_boot_patch(const QemuMachine& m, const json& b, BootOverride& want) {
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
  return std::nullopt;
}

}  // namespace

HttpAnswer RedfishService::patch_system(const HttpRequest& r, const Target& t) {
  QemuMachine& m = *t.machine;
  if (auto refused = if_match_fails(r, system_json(m).dump())) return *refused;
  json j = json::parse(r.body, nullptr, false);
  if (!j.is_object()) return error(400, "Base.1.8.MalformedJSON", "Body is not a JSON object");
  for (auto it = j.begin(); it != j.end(); ++it)
    if (it.key() != "Boot" && it.key().rfind("@odata", 0) != 0)
      return error(400, "Base.1.8.PropertyNotWritable", "Property " + it.key() + " is read-only");
  if (!j.contains("Boot") || !j["Boot"].is_object()) return error(400, "Base.1.8.PropertyMissing", "Boot object required");
  BootOverride want = m.boot();
  if (auto refused = apply_boot_patch(m, j["Boot"], want)) return *refused;
  if (auto s = m.set_boot(want); !s) return from_error(s.error());
  return no_content();
}

HttpAnswer RedfishService::post_reset(const HttpRequest& r, const Target& t) {
  json j = json::parse(r.body, nullptr, false);
  if (!j.is_object() || !j.contains("ResetType") || !j["ResetType"].is_string())
    return error(400, "Base.1.8.ActionParameterMissing", "ResetType is required");
  std::string type = j["ResetType"].get<std::string>();
  const auto& allowed = QemuMachine::reset_types();
  if (std::find(allowed.begin(), allowed.end(), type) == allowed.end())
    return error(400, "Base.1.8.ActionParameterNotSupported", "ResetType " + type + " is not supported");
  if (auto s = t.machine->reset(type); !s) return from_error(s.error());
  return no_content();
}

// ---- managers and virtual media -----------------------------------------------------------

HttpAnswer RedfishService::get_managers(const HttpRequest&, const Target& t) {
  std::vector<std::string> ids;
  for (auto* m : machines_) ids.push_back(kRoot + "/Managers/" + m->config().id);
  return ok_json(collection_json(schema::manager_collection, t.path, "Manager Collection", ids));
}

HttpAnswer RedfishService::get_manager(const HttpRequest&, const Target& t) {
  const auto& c = t.machine->config();
  std::string mgr = kRoot + "/Managers/" + c.id;
  json j = resource_header(schema::manager, mgr);
  j.update({{"Id", c.id},
            {"Name", "Virtual BMC for " + c.id},
            {"ManagerType", "BMC"},
            {"Model", "provisioner-vbmc"},
            {"FirmwareVersion", "provisioner-vbmc 0.1.0"},
            {"Status", {{"State", "Enabled"}, {"Health", "OK"}}},
            {"VirtualMedia", odata(mgr + "/VirtualMedia")},
            {"Links", {{"ManagerForServers", json::array({odata(kRoot + "/Systems/" + c.id)})}}}});
  return ok_json(j, true);
}

HttpAnswer RedfishService::get_media_collection(const HttpRequest&, const Target& t) {
  std::vector<std::string> ids;
  for (const auto& s : t.machine->slots()) ids.push_back(t.path + "/" + s.id);
  return ok_json(collection_json(schema::virtual_media_collection, t.path, "Virtual Media", ids));
}

json RedfishService::slot_json(QemuMachine& m, const std::string& slot) const {
  std::string p = kRoot + "/Managers/" + m.config().id + "/VirtualMedia/" + slot;
  for (const auto& s : m.slots()) {
    if (s.id != slot) continue;
    json j = resource_header(schema::virtual_media, p);
    j.update({{"Id", s.id},
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
                {"#VirtualMedia.EjectMedia", {{"target", p + "/Actions/VirtualMedia.EjectMedia"}}}}}});
    return j;
  }
  return nullptr;  // the slot went away (it cannot: slots are fixed by the machine config)
}

HttpAnswer RedfishService::get_slot(const HttpRequest&, const Target& t) {
  json j = slot_json(*t.machine, t.slot);
  if (j.is_null()) return not_found(t.path);
  return ok_json(j, true);
}

// PATCH {"Image": url, "Inserted": true} inserts; {"Image": null} / Inserted false ejects.
HttpAnswer RedfishService::patch_slot(const HttpRequest& r, const Target& t) {
  json cur = slot_json(*t.machine, t.slot);
  if (cur.is_null()) return not_found(t.path);
  if (auto refused = if_match_fails(r, cur.dump())) return *refused;
  json j = json::parse(r.body, nullptr, false);
  if (!j.is_object()) return error(400, "Base.1.8.MalformedJSON", "Body is not a JSON object");
  if (j.contains("Image") && j["Image"].is_string() && j.value("Inserted", true))
    return insert_media(*t.machine, t.slot, j);
  if ((j.contains("Image") && j["Image"].is_null()) || (j.contains("Inserted") && j["Inserted"] == false))
    return post_eject_media(r, t);
  return error(400, "Base.1.8.PropertyMissing", "Set Image (and Inserted) to insert, Image null to eject");
}

HttpAnswer RedfishService::post_insert_media(const HttpRequest& r, const Target& t) {
  return insert_media(*t.machine, t.slot, json::parse(r.body, nullptr, false));
}

HttpAnswer RedfishService::insert_media(QemuMachine& m, const std::string& slot, const json& j) {
  if (!j.is_object() || !j.contains("Image") || !j["Image"].is_string())
    return error(400, "Base.1.8.PropertyMissing", "The property Image is a required property");
  std::string url = j["Image"].get<std::string>();
  if (j.contains("TransferProtocolType") && j["TransferProtocolType"].is_string()) {
    std::string type = j["TransferProtocolType"].get<std::string>();
    std::string scheme = url.substr(0, url.find(':'));
    std::transform(scheme.begin(), scheme.end(), scheme.begin(), [](unsigned char c) { return std::toupper(c); });
    if (type != scheme)
      return error(400, "Base.1.8.ActionParameterValueConflict",
                   "TransferProtocolType " + type + " does not match the Image URL scheme");
  }
  bool write_protected = !j.contains("WriteProtected") || !j["WriteProtected"].is_boolean() || j["WriteProtected"].get<bool>();
  auto s = m.insert_media(slot, url, write_protected);
  if (!s) {
    if (s.error().kind == ErrorKind::unavailable)  // the BMC could not fetch the image
      return error(400, "Base.1.8.ActionParameterValueFormatError",
                   "The image could not be fetched: " + s.error().message);
    return from_error(s.error());
  }
  return no_content();
}

HttpAnswer RedfishService::post_eject_media(const HttpRequest&, const Target& t) {
  if (auto s = t.machine->eject_media(t.slot); !s) return from_error(s.error());
  return no_content();
}

}  // namespace provisioner::vbmc
