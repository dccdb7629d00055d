#include "controller/redfish/redfish_client.hpp"

#include "controller/redfish/redfish_session.hpp"

#include <algorithm>
#include <cctype>
#include <mutex>
#include <atomic>
#include <optional>

#include <nlohmann/json.hpp>

#include "common/crypto.hpp"
#include "controller/logging/logger.hpp"
#include "controller/redfish/http_transport.hpp"
#include "controller/redfish/redfish_parse.hpp"

namespace provisioner::redfish {

using nlohmann::json;


const char* failure_code_name(FailureCode code) {
  switch (code) {
    case FailureCode::none: return "none";
    case FailureCode::second_medium_refused: return "second_medium_refused";
    case FailureCode::circuit_open: return "circuit_open";
    case FailureCode::auth_failed: return "auth_failed";
    case FailureCode::transport: return "transport";
    case FailureCode::bmc_error: return "bmc_error";
    case FailureCode::not_found: return "not_found";
    case FailureCode::timeout: return "timeout";
    case FailureCode::invalid_input: return "invalid_input";
    case FailureCode::canceled: return "canceled";
  }
  return "none";
}

FailureCode failure_code(const Error& error) {
  for (const auto& f : error.fields) {
    if (f.path != kFailurePath) continue;
    for (auto c : {FailureCode::second_medium_refused, FailureCode::circuit_open, FailureCode::auth_failed,
                   FailureCode::transport, FailureCode::bmc_error, FailureCode::not_found, FailureCode::timeout,
                   FailureCode::invalid_input, FailureCode::canceled})
      if (f.message == failure_code_name(c)) return c;
  }
  return FailureCode::none;
}

RedfishContext::RedfishContext(const Clock& clock, Sleeper& sleeper, RedfishOptions options, const Logger* logger,
                               std::stop_token shutdown)
    : clock_(clock),
      sleeper_(sleeper),
      options_(options),
      logger_(logger),
      limiter_(options.max_concurrent_requests),
      registry_(clock, options.breaker_threshold, options.breaker_open_ms),
      shutdown_(std::move(shutdown)) {}

struct BmcTopology {
  std::string address, system_id, serial;  // the endpoint it was discovered for
  json root;                               // the service root's login links only
  bool basic = false;                      // sessions failed: HTTP basic
  BmcFacts facts;                          // slot contents and power as they were then
  VendorProfile profile;
  std::vector<std::pair<std::string, bool>> vm_collections;
};

// The BMC operations (discovery, virtual media, boot override, power, cleanup) over one
// Redfish session (redfish_session.hpp: transport, auth, call policy, stopping, logging).
struct BmcClient::Impl : RedfishSession {
  using RedfishSession::RedfishSession;

  std::optional<BmcFacts> facts;
  VendorProfile profile;

  // ---------------------------------------------------------------- discovery
  Result<std::vector<VirtualMediaSlot>> read_slots(const std::string& collection, bool under_manager) {
    std::vector<VirtualMediaSlot> out;
    auto c = get_json(collection);
    if (!c) return c.error();
    for (const auto& m : collection_members(*c)) {
      std::string etag;
      auto s = get_json(m, &etag);
      if (!s) return s.error();
      out.push_back(parse_slot(m, *s, etag, under_manager));
    }
    return out;
  }

  Result<VirtualMediaSlot> read_slot(const VirtualMediaSlot& slot) {
    std::string etag;
    auto s = get_json(slot.uri, &etag);
    if (!s) return s.error();
    return parse_slot(slot.uri, *s, etag, slot.under_manager);
  }

  // VirtualMedia collections found at discovery: (path, under a Manager). Re-reading only
  // these keeps every later step to a few GETs (BMCs are slow; 100 ms a call is common).
  std::vector<std::pair<std::string, bool>> vm_collections;

  void find_vm_collections(const json& system, const std::vector<json>& managers) {
    vm_collections.clear();
    std::string vm = odata_link(system, "VirtualMedia");
    if (!vm.empty()) vm_collections.emplace_back(vm, false);  // the System first
    for (const auto& m : managers) {
      std::string mvm = odata_link(m, "VirtualMedia");
      if (!mvm.empty() && mvm != vm) vm_collections.emplace_back(mvm, true);
    }
  }

  Status refresh_slots(BmcFacts& f) {
    f.slots.clear();
    for (const auto& [path, under_manager] : vm_collections) {
      auto s = read_slots(path, under_manager);
      if (!s) return s.error();
      for (auto& slot : *s)
        if (std::none_of(f.slots.begin(), f.slots.end(), [&](const auto& x) { return x.uri == slot.uri; }))
          f.slots.push_back(std::move(slot));
    }
    return Ok{};
  }

  Result<std::string> find_system() {
    std::string systems = odata_link(root, "Systems");
    if (systems.empty()) return fail(FailureCode::not_found, where("GET", "/redfish/v1/") + ": no Systems collection");
    auto c = get_json(systems);
    if (!c) return c.error();
    auto members = collection_members(*c);
    if (members.empty()) return fail(FailureCode::not_found, where("GET", systems) + ": no System");
    if (!ep.system_id.empty()) {
      for (const auto& m : members)
        if (m.substr(m.find_last_of('/') + 1) == ep.system_id) return m;
    }
    if (!ep.serial.empty() || !ep.system_id.empty()) {
      for (const auto& m : members) {
        std::string etag;
        auto asked = ctx.clock().now_ms();
        auto s = get_json(m, &etag);
        if (!s) return s.error();
        if ((!ep.serial.empty() && s->value("SerialNumber", "") == ep.serial) ||
            (!ep.system_id.empty() && s->value("Id", "") == ep.system_id)) {
          remember_system(*s, etag, m, asked);  // discovery uses it instead of reading it again
          found_system = std::move(*s);
          return m;
        }
      }
      return fail(FailureCode::not_found, where("GET", systems) + ": no System with id '" + ep.system_id +
                                              "' / serial '" + ep.serial + "'");
    }
    if (members.size() > 1)
      return fail(FailureCode::invalid_input,
                  where("GET", systems) + ": several Systems; give the server a system id or serial");
    return members.front();
  }

  // The System document find_system() read while matching the serial, if it did.
  std::optional<json> found_system;

  // The System as this client last read it. Reused (instead of another GET) only within
  // kSystemReuseMs of asking for it and while this client has sent nothing that changes anything
  // since (RedfishSession::writes): e.g. the reset step reads the power state and reset types
  // from the read-back that just verified the boot override.
  static constexpr std::int64_t kSystemReuseMs = 1000;
  struct SystemRead {
    json body;
    std::string etag, uri;
    std::int64_t at_ms = 0;
    std::uint64_t writes = 0;
  };
  std::optional<SystemRead> last_system;

  void remember_system(const json& body, const std::string& etag, const std::string& uri, std::int64_t asked_ms) {
    last_system = SystemRead{body, etag, uri, asked_ms, writes};
  }

  // GET of the System (facts->system_uri, or `uri` during discovery), remembered.
  Result<json> read_system(std::string* etag = nullptr, std::string uri = {}) {
    if (uri.empty()) uri = facts ? facts->system_uri : "";
    std::string tag;
    auto asked = ctx.clock().now_ms();
    auto sys = get_json(uri, &tag);
    if (!sys) return sys.error();
    remember_system(*sys, tag, uri, asked);
    if (etag) *etag = tag;
    return sys;
  }

  // The System read a moment ago when nothing has been sent since, else a fresh GET.
  Result<json> recent_system(std::string* etag = nullptr) {
    const auto& uri = facts->system_uri;
    if (last_system && (last_system->uri.empty() || last_system->uri == uri) && last_system->writes == writes &&
        ctx.clock().now_ms() - last_system->at_ms <= kSystemReuseMs) {
      if (etag) *etag = last_system->etag;
      return last_system->body;
    }
    return read_system(etag);
  }

  std::shared_ptr<const BmcTopology> known;  // to start from (reuse_topology), once
  std::shared_ptr<const BmcTopology> found;  // what this client knows (topology())

  // Starts from a known topology: log in, read each known slot. not_found: it is out of date.
  Result<BmcFacts> adopt(const BmcTopology& k) {
    if (!root_loaded) {
      root = k.root;
      root_loaded = true;
    }
    if (k.basic) basic = true;
    if (auto s = ensure_auth(); !s) return s.error();
    BmcFacts f = k.facts;
    for (auto& slot : f.slots) {
      auto now = read_slot(slot);
      if (!now) return now.error();
      slot = *now;
    }
    profile = k.profile;
    transport->set_keep_alive(profile.keep_alive);
    vm_collections = k.vm_collections;
    facts = f;
    found = std::make_shared<const BmcTopology>(k);
    return f;
  }

  Result<BmcFacts> discover_locked(bool force = false) {
    if (facts && !force) return *facts;
    if (auto k = std::exchange(known, nullptr); k && !force) {
      auto f = adopt(*k);
      if (f || failure_code(f.error()) != FailureCode::not_found) return f;
      log(1, "the BMC's known topology is out of date; discovering again", {{"error", f.error().message}});
      root_loaded = false;  // read the service root too
    }
    if (auto s = ensure_auth(); !s) return s.error();
    BmcFacts f;
    found_system.reset();
    auto sys_uri = find_system();
    if (!sys_uri) return sys_uri.error();
    f.system_uri = *sys_uri;
    Result<json> sys = found_system ? Result<json>(std::move(*found_system)) : read_system(nullptr, f.system_uri);
    found_system.reset();
    if (!sys) return sys.error();
    if (sys->contains("Actions") && (*sys)["Actions"].is_object() && (*sys)["Actions"].contains("#ComputerSystem.Reset") &&
        (*sys)["Actions"]["#ComputerSystem.Reset"].is_object())
      f.reset_target = path_of((*sys)["Actions"]["#ComputerSystem.Reset"].value("target", ""));
    f.system_id = sys->value("Id", "");
    f.serial = sys->value("SerialNumber", "");
    f.manufacturer = sys->value("Manufacturer", "");
    f.model = sys->value("Model", "");
    f.power_state = sys->value("PowerState", "");
    f.reset_types = allowable_reset_types(*sys);
    json boot = sys->value("Boot", json::object());
    f.boot_targets = string_array(boot, "BootSourceOverrideTarget@Redfish.AllowableValues");
    f.boot_mode = boot.value("BootSourceOverrideMode", "");
    f.vendor = root.value("Vendor", "");
    // The Manager: Links.ManagedBy, fallback Links.Managers (older firmware).
    json links = sys->value("Links", json::object());
    for (const char* key : {"ManagedBy", "Managers"}) {
      if (!f.manager_uris.empty()) break;
      if (links.contains(key) && links[key].is_array())
        for (const auto& m : links[key])
          if (m.is_object() && m.contains("@odata.id")) f.manager_uris.push_back(path_of(m["@odata.id"].get<std::string>()));
    }
    if (f.manager_uris.empty()) {
      // No link at all: a single Manager in the collection is ours.
      std::string mc = odata_link(root, "Managers");
      if (!mc.empty()) {
        auto c = get_json(mc);
        if (c && collection_members(*c).size() == 1) f.manager_uris = collection_members(*c);
      }
    }
    BmcIdentity id{f.vendor, root.value("Product", ""), f.manufacturer, f.model, "", ""};
    std::vector<json> managers;
    for (const auto& uri : f.manager_uris) {
      auto m = get_json(uri);
      if (!m) return m.error();
      managers.push_back(std::move(*m));
    }
    if (!managers.empty()) {
      f.firmware = managers.front().value("FirmwareVersion", "");
      id.manager_model = managers.front().value("Model", "");
      id.firmware = f.firmware;
    }
    if (ep.profile.empty() || ep.profile == "auto") {
      profile = select_profile(id);
    } else {
      auto p = profile_by_name(ep.profile);
      if (!p) return fail(FailureCode::invalid_input, "BMC " + ep.address + ": unknown vendor profile '" + ep.profile + "'");
      profile = *p;
    }
    f.profile = profile.name;
    f.max_media = profile.max_media;
    transport->set_keep_alive(profile.keep_alive);
    find_oem_import(managers, f);
    find_vm_collections(*sys, managers);
    if (auto s = refresh_slots(f); !s) return s.error();
    log(1, "BMC discovered", {{"system", f.system_uri}, {"profile", f.profile}, {"slots", std::to_string(f.slots.size())}});
    facts = f;
    auto t = std::make_shared<BmcTopology>();
    t->address = ep.address, t->system_id = ep.system_id, t->serial = ep.serial;
    for (const char* key : {"Links", "SessionService"})  // what logging in reads
      if (root.contains(key)) t->root[key] = root[key];
    t->basic = basic;
    t->facts = f;
    t->profile = profile;
    t->vm_collections = vm_collections;
    found = std::move(t);
    return f;
  }

  Status refresh_slots_locked() { return refresh_slots(*facts); }

  // Dell advertises it as Actions.Oem["#OemManager.v1_x_x.OemManager#OemManager.ImportSystemConfiguration"]
  // (older firmware: "...#EID_674_Manager.ImportSystemConfiguration"): match the name's end.
  static void find_oem_import(const std::vector<json>& managers, BmcFacts& f) {
    for (const auto& m : managers) {
      auto actions = m.find("Actions");
      if (actions == m.end() || !actions->is_object()) continue;
      auto oem = actions->find("Oem");
      if (oem == actions->end() || !oem->is_object()) continue;
      for (auto it = oem->begin(); it != oem->end(); ++it) {
        if (!it.key().ends_with("ImportSystemConfiguration") || !it->is_object() || !it->contains("target") ||
            !(*it)["target"].is_string())
          continue;
        f.oem_import_uri = path_of((*it)["target"].get<std::string>());
        f.oem_import_manager_id = m.value("Id", "");
        return;
      }
    }
  }

  // ---------------------------------------------------------------- PATCH with ETags
  // If-Match with the ETag we read; on 412 the weak ETag made strong, then none at all
  // (BMCs that emit weak ETags but compare strongly, or that change ETags on every read).
  // 428 (If-Match required) gets a fresh ETag once.
  Result<Reply> patch(const std::string& path, const json& body, std::string etag) {
    auto r = call("PATCH", path, body, CallOptions{etag});
    if (!r) return r;
    if (r->status == 412 && !etag.empty()) {
      if (is_weak_etag(etag)) {
        log(1, "412 with weak ETag; retrying with it strong", {{"path", path}});
        r = call("PATCH", path, body, CallOptions{strong_etag(etag)});
        if (!r || r->status != 412) return r;
      }
      log(1, "412 on ETag; retrying without If-Match", {{"path", path}});
      r = call("PATCH", path, body, CallOptions{});
    } else if (r->status == 428) {
      std::string fresh;
      auto g = get_json(path, &fresh);
      if (!g) return g.error();
      if (!fresh.empty()) r = call("PATCH", path, body, CallOptions{fresh});
    }
    return r;
  }

  // ---------------------------------------------------------------- virtual media
  Status eject(const VirtualMediaSlot& slot) {
    Result<Reply> r = fail(FailureCode::bmc_error, "unreachable");
    std::string path;
    if (!slot.eject_target.empty()) {
      path = slot.eject_target;
      bool with_object = profile.eject_with_empty_object;
      for (int attempt = 0;; ++attempt) {
        r = call("POST", path, with_object ? std::optional<json>(json::object()) : std::nullopt);
        if (r && (r->status == 400 || r->status == 415) && !with_object) {
          with_object = true;  // "no body" rejected: some BMCs want {}
          continue;
        }
        if (r && r->status >= 500 && attempt + 1 < profile.insert_retries_on_5xx) {
          if (!pause(opt.insert_retry_delay_ms)) return stopped_error("BMC " + ep.address + ": " + op + ": eject retry");
          continue;
        }
        break;
      }
    } else {
      path = slot.uri;
      r = patch(slot.uri, json{{"Image", nullptr}, {"Inserted", false}}, slot.etag);
    }
    if (r && r->ok()) return Ok{};
    // Ejecting an empty slot fails on some BMCs: what matters is that nothing is inserted.
    auto now = read_slot(slot);
    if (now && !now->holds_media()) {
      log(1, "eject failed but slot is empty; treating as ejected", {{"slot", slot.uri}});
      return Ok{};
    }
    if (!r) return r.error();
    return answer_error(slot.eject_target.empty() ? "PATCH" : "POST", path, *r);
  }

  // Inserts `url` into `slot`. Returns the BMC's answer error (4xx) unchanged so the caller
  // can tell a refused second medium from other failures.
  Status insert(const VirtualMediaSlot& slot, const std::string& url) {
    bool action = !slot.insert_target.empty();
    json body = {{"Image", url}};
    if (action) {
      if (profile.insert_sends_inserted_fields) {
        body["Inserted"] = true;
        body["WriteProtected"] = true;
      }
    } else {
      if (profile.patch_sends_inserted) body["Inserted"] = true;
      body["WriteProtected"] = true;
    }
    if (profile.insert_sends_transfer_protocol) body["TransferProtocolType"] = url_scheme_upper(url);
    bool tried_protocol = body.contains("TransferProtocolType"), tried_method = false;
    int server_errors = 0;
    std::string etag = slot.etag;
    for (;;) {
      Result<Reply> r = action ? call("POST", slot.insert_target, body) : patch(slot.uri, body, etag);
      std::string path = action ? slot.insert_target : slot.uri;
      const char* method = action ? "POST" : "PATCH";
      if (!r) {
        // The connection broke after sending: the BMC may have done it. Look, don't guess.
        // An empty slot afterwards means it did not happen: inserting again is safe.
        if (failure_code(r.error()) == FailureCode::transport) {
          auto now = read_slot(slot);
          if (now && now->holds(url)) return Ok{};
          if (now && !now->holds_media() && ++server_errors < profile.insert_retries_on_5xx) {
            if (!pause(opt.insert_retry_delay_ms))
              return stopped_error("BMC " + ep.address + ": " + op + ": insert retry");
            continue;
          }
        }
        return r.error();
      }
      if (r->ok()) return Ok{};
      const std::string& text = r->http.body;
      if (r->status >= 400 && r->status < 500 && !tried_protocol && mentions(text, "TransferProtocolType")) {
        tried_protocol = true;
        body["TransferProtocolType"] = url_scheme_upper(url);
        continue;
      }
      if (r->status >= 400 && r->status < 500 && !tried_method && mentions(text, "TransferMethod")) {
        tried_method = true;
        body["TransferMethod"] = "Stream";
        continue;
      }
      if (r->status >= 500 && ++server_errors < profile.insert_retries_on_5xx) {
        // Dell may still be ejecting the previous image.
        if (!pause(opt.insert_retry_delay_ms)) return stopped_error("BMC " + ep.address + ": " + op + ": insert retry");
        continue;
      }
      if (action && (r->status == 405 || r->status == 404 || r->status == 501)) {
        // The action is advertised but not implemented: the PATCH fallback.
        log(1, "InsertMedia not usable; falling back to PATCH", {{"slot", slot.uri}});
        action = false;
        body.erase("Inserted");
        if (profile.patch_sends_inserted) body["Inserted"] = true;
        body["WriteProtected"] = true;
        continue;
      }
      return answer_error(method, path, *r);
    }
  }

  // Discovery (when this client has not run it yet) or a fresh read of the slots: either way
  // the slots are current, and never read twice in a row.
  Status discover_with_fresh_slots() {
    bool had_facts = facts.has_value();
    auto f = discover_locked();
    if (!f) return f.error();
    if (had_facts)
      if (auto s = refresh_slots_locked(); !s) return s.error();
    return Ok{};
  }

  Result<std::vector<InsertResult>> insert_media(const std::vector<MediaRequest>& media) {
    op = "insert_media";
    if (auto s = discover_with_fresh_slots(); !s) return s.error();
    auto& slots = facts->slots;
    if (profile.max_media > 0 && static_cast<int>(media.size()) > profile.max_media)
      return fail(FailureCode::second_medium_refused,
                  "BMC " + ep.address + ": profile " + profile.name + " holds only " +
                      std::to_string(profile.max_media) + " virtual medium");
    std::vector<InsertResult> out(media.size());
    std::vector<int> slot_of(media.size(), -1);
    std::vector<bool> taken(slots.size(), false);
    // 1. Already there (a repeated step after a crash): nothing to do.
    for (std::size_t i = 0; i < media.size(); ++i)
      for (std::size_t s = 0; s < slots.size(); ++s)
        if (!taken[s] && slots[s].accepts(media[i].kind) && slots[s].holds(media[i].url)) {
          taken[s] = true;
          slot_of[i] = static_cast<int>(s);
          out[i] = {media[i].url, slots[s].uri, true};
          break;
        }
    // 2. Stale media from earlier jobs: eject, or the BMC refuses ours / boots theirs.
    for (std::size_t s = 0; s < slots.size(); ++s) {
      if (taken[s] || !slots[s].holds_media()) continue;
      log(1, "ejecting stale medium", {{"slot", slots[s].uri}, {"image", redact_url(slots[s].image)}});
      if (auto e = eject(slots[s]); !e) return e.error();
      slots[s].inserted = 0;
      slots[s].image.clear();
    }
    // 3. Insert the rest into free slots of their kind; slots with the action first.
    int held = static_cast<int>(std::count(taken.begin(), taken.end(), true));
    for (std::size_t i = 0; i < media.size(); ++i) {
      if (slot_of[i] >= 0) continue;
      std::vector<std::size_t> candidates;
      for (int pass = 0; pass < 2; ++pass)
        for (std::size_t s = 0; s < slots.size(); ++s)
          if (!taken[s] && slots[s].accepts(media[i].kind) && (slots[s].insert_target.empty() == (pass == 1)))
            candidates.push_back(s);
      const char* kind = media[i].kind == MediaKind::cd ? "CD" : "USB/removable";
      if (candidates.empty()) {
        if (held > 0)
          return fail(FailureCode::second_medium_refused,
                      "BMC " + ep.address + ": no free " + kind + " virtual media slot for a second medium");
        return fail(FailureCode::not_found, "BMC " + ep.address + ": no " + std::string(kind) + " virtual media slot");
      }
      Error last = fail(FailureCode::bmc_error, "no slot accepted the medium");
      bool done = false;
      for (std::size_t s : candidates) {
        const VirtualMediaSlot& slot = slots[s];
        if (slot.shows_anything() || profile.eject_before_insert_always) {
          if (auto e = eject(slot); !e) return e.error();
        }
        auto ins = insert(slot, media[i].url);
        if (ins) {
          taken[s] = true;
          slot_of[i] = static_cast<int>(s);
          out[i] = {media[i].url, slot.uri, false};
          ++held;
          done = true;
          break;
        }
        last = ins.error();
        // Only BMC refusals (4xx) move us to the next slot; transport trouble stops here.
        if (failure_code(last) != FailureCode::bmc_error) return last;
        log(2, "slot refused the medium", {{"slot", slot.uri}, {"error", last.message}});
      }
      if (!done) {
        if (held > 0)
          return fail(FailureCode::second_medium_refused,
                      "BMC " + ep.address + " refused a second virtual medium: " + last.message);
        return last;
      }
    }
    // 4. Read back: a 204 is not proof.
    for (std::size_t i = 0; i < media.size(); ++i) {
      if (out[i].already_present) continue;
      auto now = read_slot(slots[slot_of[i]]);
      if (!now) return now.error();
      if (!now->holds(media[i].url))
        return fail(FailureCode::bmc_error, "BMC " + ep.address + ": " + op + ": slot " + now->uri +
                                                " does not show the medium after insert");
      slots[slot_of[i]] = *now;
    }
    return out;
  }

  // ---------------------------------------------------------------- boot override
  struct BootView {
    std::string patch_uri;  // the System or its @Redfish.Settings object
    std::string etag;
    json boot;
  };

  Result<BootView> read_boot() {
    BootView v;
    auto sys = recent_system(&v.etag);
    if (!sys) return sys.error();
    v.patch_uri = facts->system_uri;
    v.boot = sys->value("Boot", json::object());
    // Pending-settings BMCs: PATCH (and read back) the settings object instead.
    if (sys->contains("@Redfish.Settings") && (*sys)["@Redfish.Settings"].is_object()) {
      std::string settings = odata_link((*sys)["@Redfish.Settings"], "SettingsObject");
      if (!settings.empty() && settings != facts->system_uri) {
        auto sj = get_json(settings, &v.etag);
        if (!sj) return sj.error();
        v.patch_uri = settings;
        json pending = sj->value("Boot", json::object());
        for (auto it = pending.begin(); it != pending.end(); ++it) v.boot[it.key()] = it.value();
      }
    }
    return v;
  }

  // The slot holding the boot medium (a CD-kind one) is attached to the host over USB: its
  // MediaTypes list USBStick. Before anything is inserted: any slot a CD would go into.
  bool boot_medium_usb_attached() const {
    auto usb = [](const VirtualMediaSlot& slot) {
      return std::any_of(slot.media_types.begin(), slot.media_types.end(), [](std::string t) {
        std::transform(t.begin(), t.end(), t.begin(), [](unsigned char c) { return std::tolower(c); });
        return t == "usbstick";
      });
    };
    bool held = false, held_usb = false, any_usb = false;
    for (const auto& slot : facts->slots) {
      if (!slot.accepts(MediaKind::cd)) continue;
      any_usb |= usb(slot);
      if (slot.holds_media()) {
        held = true;
        held_usb |= usb(slot);
      }
    }
    return held ? held_usb : any_usb;
  }

  // `usb_attached`: the virtual CD sits in a USB-attached slot, so when the BMC offers none of
  // `wanted_targets` but Usb, Usb boots it (some blade enclosures).
  Result<BootResult> set_boot(const std::vector<std::string>& wanted_targets, std::string enabled, BootMode mode,
                              bool usb_attached = false) {
    auto v = read_boot();
    if (!v) return v.error();
    auto allowed = string_array(v->boot, "BootSourceOverrideTarget@Redfish.AllowableValues");
    std::string target = wanted_targets.back();  // nothing advertised: the profile's last resort
    if (!allowed.empty()) {
      auto it = std::find_if(wanted_targets.begin(), wanted_targets.end(),
                             [&](const std::string& t) { return contains(allowed, t); });
      if (it != wanted_targets.end()) {
        target = *it;
      } else if (usb_attached && contains(allowed, "Usb")) {
        target = "Usb";
        log(1, "no CD boot target; the virtual media slot is USB-attached: booting Usb");
      } else {
        std::string wanted, offered;
        for (const auto& t : wanted_targets) wanted += (wanted.empty() ? "" : ", ") + t;
        for (const auto& t : allowed) offered += (offered.empty() ? "" : ", ") + t;
        return fail(FailureCode::not_found, "BMC " + ep.address + ": " + op + ": boot target " + wanted +
                                                (usb_attached ? " (or Usb)" : "") +
                                                " not in BootSourceOverrideTarget allowable values (" + offered + ")");
      }
    }
    std::string want_mode = mode == BootMode::uefi ? "UEFI" : mode == BootMode::legacy ? "Legacy" : "";
    BootResult res{target, enabled, "", 0};
    bool tried_continuous = enabled != "Once";
    for (int round = 0;; ++round) {
      std::string cur_target = v->boot.value("BootSourceOverrideTarget", "");
      std::string cur_enabled = v->boot.value("BootSourceOverrideEnabled", "");
      std::string cur_mode = v->boot.value("BootSourceOverrideMode", "");
      res.mode = cur_mode;
      json b = json::object();
      if (cur_target != target) b["BootSourceOverrideTarget"] = target;
      if (cur_enabled != enabled || profile.always_send_enabled) b["BootSourceOverrideEnabled"] = enabled;
      bool mode_wrong = !want_mode.empty() && cur_mode != want_mode;
      if (mode_wrong) b["BootSourceOverrideMode"] = want_mode;
      bool needed = b.contains("BootSourceOverrideTarget") || cur_enabled != enabled || mode_wrong;
      if (!needed) {
        res.enabled = enabled;
        return res;
      }
      if (round > 0 && round >= opt.boot_reapply_attempts) {
        // The BMC keeps changing something back. Once ignored -> try Continuous first.
        return fail(FailureCode::bmc_error, "BMC " + ep.address + ": " + op + ": boot override did not stick (target " +
                                                cur_target + ", enabled " + cur_enabled + ", mode " + cur_mode + ")");
      }
      if (round > 0 && cur_target == target && cur_enabled != enabled && enabled == "Once" && !tried_continuous) {
        // Read back shows Once was dropped: this BMC ignores Once. Continuous gets us the
        // boot; cleanup restores boot to disk.
        log(2, "BMC ignored Once; using Continuous", {{"enabled", cur_enabled}});
        tried_continuous = true;
        enabled = "Continuous";
        res.enabled = enabled;
        b = {{"BootSourceOverrideEnabled", enabled}};
        b["BootSourceOverrideTarget"] = target;
      } else if (round > 0 && cur_target == target && mode_wrong) {
        // Some BMCs reset the mode to Legacy when the device changes: re-apply the mode alone.
        log(1, "BMC changed the boot mode; re-applying", {{"mode", cur_mode}});
        b = {{"BootSourceOverrideMode", want_mode}};
        if (profile.always_send_enabled) b["BootSourceOverrideEnabled"] = enabled;
      }
      auto r = patch(v->patch_uri, json{{"Boot", b}}, v->etag);
      if (!r) return r.error();
      if (!r->ok()) return answer_error("PATCH", v->patch_uri, *r);
      ++res.patches;
      v = read_boot();
      if (!v) return v.error();
    }
  }

  // Dell iDRAC: one-time boot from the virtual CD through the OEM configuration import (the
  // way Ironic's idrac-redfish-virtual-media boot interface does it). The import touches only
  // the iDRAC component, so it needs no host reboot; iDRAC runs it as a job, followed to the
  // end by call(). The BIOS boot mode is left as it is: the maintenance ISO boots either way.
  Result<BootResult> set_boot_via_oem_import() {
    std::string fqdd = facts->oem_import_manager_id.empty() ? "iDRAC.Embedded.1" : facts->oem_import_manager_id;
    std::string buffer = "<SystemConfiguration><Component FQDD=\"" + fqdd + "\">"
                         "<Attribute Name=\"ServerBoot.1#BootOnce\">Enabled</Attribute>"
                         "<Attribute Name=\"ServerBoot.1#FirstBootDevice\">VCD-DVD</Attribute>"
                         "</Component></SystemConfiguration>";
    json body = {{"ShareParameters", {{"Target", "ALL"}}}, {"ImportBuffer", buffer}};
    auto r = call("POST", facts->oem_import_uri, body);
    if (!r) return r.error();
    if (!r->ok()) return answer_error("POST", facts->oem_import_uri, *r);
    return BootResult{"VCD-DVD", "Once", facts->boot_mode, 1};
  }

  Result<BootResult> set_boot_once_cd(BootMode mode) {
    if (profile.virtual_cd_via_oem_import && !facts->oem_import_uri.empty()) {
      auto r = set_boot_via_oem_import();
      if (r || failure_code(r.error()) == FailureCode::canceled) return r;
      // Older firmware, or an import the BMC refused: the standard override still works on
      // many of them.
      log(2, "OEM boot import failed; using the standard boot override", {{"error", r.error().message}});
    }
    return set_boot(profile.cd_boot_targets, profile.once_unreliable ? "Continuous" : "Once", mode,
                    boot_medium_usb_attached());
  }

  // ---------------------------------------------------------------- power
  Result<std::string> read_power() {
    auto sys = read_system();  // polled: always a fresh GET
    if (!sys) return sys.error();
    facts->power_state = sys->value("PowerState", "");
    return facts->power_state;
  }

  Status wait_power(const std::string& want, std::int64_t timeout_ms) {
    std::int64_t deadline = ctx.clock().now_ms() + timeout_ms;
    for (;;) {
      auto p = read_power();
      if (!p) return p.error();
      if (*p == want) return Ok{};
      if (ctx.clock().now_ms() >= deadline)
        return fail(FailureCode::timeout,
                    "BMC " + ep.address + ": " + op + ": PowerState still " + *p + ", expected " + want);
      if (!pause(opt.power_poll_ms))
        return stopped_error("BMC " + ep.address + ": " + op + ": waiting for PowerState " + want);
    }
  }

  // Never retried after it may have reached the BMC: a second reset is worse than an error.
  Status post_reset(const std::string& type) {
    std::string target = facts->reset_target;
    if (target.empty()) {  // not advertised at discovery: look again (it may be now)
      auto sys = get_json(facts->system_uri);
      if (!sys) return sys.error();
      if (sys->contains("Actions") && (*sys)["Actions"].contains("#ComputerSystem.Reset"))
        target = path_of((*sys)["Actions"]["#ComputerSystem.Reset"].value("target", ""));
    }
    if (target.empty())
      return fail(FailureCode::not_found, "BMC " + ep.address + ": " + op + ": System has no Reset action");
    CallOptions co;
    co.acts = true;
    auto r = call("POST", target, json{{"ResetType", type}}, co);
    if (!r) return r.error();
    if (!r->ok()) return answer_error("POST", target + " (" + type + ")", *r);
    log(1, "reset issued", {{"reset_type", type}});
    return Ok{};
  }

  Result<ResetResult> power_cycle() {
    op = "power_cycle";
    action_maybe_sent = false;
    auto f = discover_locked();
    if (!f) return f.error();
    auto sys = recent_system();  // e.g. the read-back of the boot override just set
    if (!sys) return sys.error();
    auto allowed = allowable_reset_types(*sys);
    if (allowed.empty()) allowed = {"On", "ForceOff", "ForceRestart", "GracefulRestart", "GracefulShutdown"};
    auto can = [&](const char* t) { return contains(allowed, t); };
    std::string state = sys->value("PowerState", "");
    ResetResult res;
    auto issue = [&](const std::string& t) -> Status {
      auto s = post_reset(t);
      if (s) res.issued.push_back(t);
      return s;
    };
    auto off_then_on = [&](bool graceful) -> Status {
      if (graceful) {
        if (auto s = issue("GracefulShutdown"); !s) return s;
        auto off = wait_power("Off", opt.graceful_timeout_ms);
        if (off || failure_code(off.error()) == FailureCode::canceled) return off;
        log(2, "graceful shutdown timed out; forcing off");
      }
      if (auto s = issue("ForceOff"); !s) return s;
      return wait_power("Off", opt.power_timeout_ms);
    };
    if (state == "Off" || state == "PoweringOff") {
      if (state == "PoweringOff")
        if (auto s = wait_power("Off", opt.power_timeout_ms); !s) return s.error();
      if (auto s = issue(can("On") ? "On" : "PushPowerButton"); !s) return s.error();
    } else if ((profile.prefer_graceful_restart || opt.prefer_graceful_restart) && can("GracefulShutdown") &&
               can("On")) {
      if (auto s = off_then_on(true); !s) return s.error();
      if (auto s = issue("On"); !s) return s.error();
    } else if (can("ForceRestart")) {
      if (auto s = issue("ForceRestart"); !s) return s.error();
    } else if (can("PowerCycle")) {
      if (auto s = issue("PowerCycle"); !s) return s.error();
    } else if (can("ForceOff") && can("On")) {
      if (auto s = off_then_on(false); !s) return s.error();
      if (auto s = issue("On"); !s) return s.error();
    } else if (can("GracefulRestart")) {
      if (auto s = issue("GracefulRestart"); !s) return s.error();
    } else {
      return fail(FailureCode::not_found, "BMC " + ep.address + ": " + op + ": no usable ResetType in allowable values");
    }
    if (auto s = wait_power("On", opt.power_timeout_ms); !s) return s.error();
    res.power_state = facts->power_state;
    return res;
  }

  // ---------------------------------------------------------------- cleanup
  Status cleanup(const std::vector<std::string>& urls, const CleanupOptions& o) {
    op = "cleanup";
    if (auto s = discover_with_fresh_slots(); !s) return s.error();
    std::vector<std::string> problems;
    for (const auto& slot : facts->slots) {
      bool ours = std::any_of(urls.begin(), urls.end(), [&](const std::string& u) { return slot.holds(u); });
      if (!ours) continue;
      if (auto e = eject(slot); !e) problems.push_back(e.error().message);
    }
    if (o.boot != CleanupOptions::BootRestore::none) {
      auto v = read_boot();
      if (!v) {
        problems.push_back(v.error().message);
      } else {
        auto allowed = string_array(v->boot, "BootSourceOverrideTarget@Redfish.AllowableValues");
        std::string cur_target = v->boot.value("BootSourceOverrideTarget", "");
        std::string cur_enabled = v->boot.value("BootSourceOverrideEnabled", "");
        bool hdd = o.boot == CleanupOptions::BootRestore::hdd_once && (allowed.empty() || contains(allowed, "Hdd"));
        json b;
        if (hdd && !(cur_target == "Hdd" && cur_enabled == "Once"))
          b = {{"BootSourceOverrideTarget", "Hdd"}, {"BootSourceOverrideEnabled", "Once"}};
        else if (!hdd && cur_enabled != "Disabled" && !cur_enabled.empty())
          b = {{"BootSourceOverrideEnabled", "Disabled"}};
        if (!b.is_null()) {
          auto r = patch(v->patch_uri, json{{"Boot", b}}, v->etag);
          if (!r) problems.push_back(r.error().message);
          else if (!r->ok()) problems.push_back(answer_error("PATCH", v->patch_uri, *r).message);
        }
      }
    }
    if (o.reset && problems.empty()) {
      auto r = power_cycle();
      op = "cleanup";
      if (!r) problems.push_back(r.error().message);
    }
    if (problems.empty()) return Ok{};
    std::string msg;
    for (const auto& p : problems) msg += (msg.empty() ? "" : " | ") + p;
    return fail(FailureCode::bmc_error, msg);
  }
};

BmcClient::BmcClient(RedfishContext& context, BmcEndpoint endpoint,
                     std::vector<std::pair<std::string, std::string>> log_context, std::stop_token stop)
    : impl_(std::make_unique<Impl>(context, std::move(endpoint), std::move(log_context), std::move(stop))) {}

BmcClient::~BmcClient() { logout(); }

Result<BmcFacts> BmcClient::discover() {
  std::lock_guard lock(impl_->bmc.operation);
  impl_->op = "discover";
  return impl_->discover_locked(true);
}

Result<std::vector<InsertResult>> BmcClient::insert_media(const std::vector<MediaRequest>& media) {
  std::lock_guard lock(impl_->bmc.operation);
  return impl_->insert_media(media);
}

Result<BootResult> BmcClient::set_boot_once_cd(BootMode mode) {
  std::lock_guard lock(impl_->bmc.operation);
  impl_->op = "set_boot";
  auto f = impl_->discover_locked();
  if (!f) return f.error();
  return impl_->set_boot_once_cd(mode);
}

Result<ResetResult> BmcClient::power_cycle_into_boot() {
  std::lock_guard lock(impl_->bmc.operation);
  auto r = impl_->power_cycle();
  if (r || impl_->action_maybe_sent) return r;
  Error e = r.error();
  e.fields.push_back({"/redfish/reset_sent", "false"});
  return e;
}

bool reset_not_sent(const Error& error) {
  for (const auto& f : error.fields)
    if (f.path == "/redfish/reset_sent") return f.message == "false";
  return false;
}

Status BmcClient::cleanup(const std::vector<std::string>& inserted_urls, CleanupOptions options) {
  std::lock_guard lock(impl_->bmc.operation);
  return impl_->cleanup(inserted_urls, options);
}

Result<std::string> BmcClient::power_state() {
  std::lock_guard lock(impl_->bmc.operation);
  impl_->op = "power_state";
  auto f = impl_->discover_locked();
  if (!f) return f.error();
  return impl_->read_power();
}

void BmcClient::set_stop(std::stop_token stop) { impl_->set_stop(std::move(stop)); }

// Both touch this client's own fields only, between its operations (one thread uses a client).
void BmcClient::reuse_topology(std::shared_ptr<const BmcTopology> known) {
  const auto& ep = impl_->ep;
  if (known && (known->address != ep.address || known->system_id != ep.system_id || known->serial != ep.serial)) return;
  impl_->known = std::move(known);
}

std::shared_ptr<const BmcTopology> BmcClient::topology() const {
  return impl_->found;
}

void BmcClient::logout() {
  if (!impl_) return;
  std::lock_guard lock(impl_->bmc.operation);
  impl_->logout();
}

}  // namespace provisioner::redfish
