#include "controller/nodes/node_service.hpp"

#include <algorithm>
#include <cctype>

#include "common/crypto.hpp"
#include "common/list_limit.hpp"
#include "common/redact.hpp"
#include "controller/logging/logger.hpp"
#include "controller/nodes/node_identity.hpp"

namespace provisioner {

namespace embedded {
extern const std::string_view node_schema;
}

namespace {

bool is_node_id(const std::string& id) {
  return id.size() == 21 && id.rfind("node_", 0) == 0 &&
         id.find_first_not_of("0123456789abcdef", 5) == std::string::npos;
}

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool is_uuid(const std::string& s) {
  if (s.size() != 36) return false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash ? s[i] != '-' : !std::isxdigit(static_cast<unsigned char>(s[i]))) return false;
  }
  return true;
}

// Serial numbers firmware ships when nobody set one: never an identifier.
bool placeholder_serial(const std::string& s) {
  static const char* kPlaceholders[] = {"to be filled by o.e.m.", "not specified", "default string", "none", "0",
                                        "system serial number", "not applicable", "n/a", "123456789"};
  auto l = lower(s);
  return std::any_of(std::begin(kPlaceholders), std::end(kPlaceholders), [&](const char* p) { return l == p; });
}

}  // namespace

std::optional<std::string> normalise_mac(const std::string& text) {
  if (text.size() != 17) return std::nullopt;
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (i % 3 == 2) {
      if (c != ':' && c != '-') return std::nullopt;
      out += ':';
    } else {
      if (!std::isxdigit(static_cast<unsigned char>(c))) return std::nullopt;
      out += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
  }
  return out;
}

Result<BootIdentity> parse_boot_identity(const std::string& mac, const std::string& uuid, const std::string& serial,
                                         const std::string& arch, const std::string& platform) {
  std::vector<FieldError> errors;
  BootIdentity who;
  if (auto m = normalise_mac(mac)) who.mac = *m;
  else errors.push_back({"mac", mac.empty() ? "required" : "not a MAC address (aa:bb:cc:dd:ee:ff)"});
  if (!uuid.empty()) {
    if (!is_uuid(uuid)) errors.push_back({"uuid", "not a UUID (8-4-4-4-12 hex digits)"});
    else if (auto l = lower(uuid); l != "00000000-0000-0000-0000-000000000000" && l != "ffffffff-ffff-ffff-ffff-ffffffffffff")
      who.uuid = l;
  }
  if (!serial.empty()) {
    // Firmware puts spaces in placeholders ("To Be Filled By O.E.M."); anything else outside
    // this set is not a serial number.
    bool ok = serial.size() <= 64 && std::all_of(serial.begin(), serial.end(), [](char c) {
      return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-' || c == ' ' || c == '/';
    });
    if (!ok) errors.push_back({"serial", "not a serial number (letters, digits, . _ - / space; at most 64)"});
    else if (!placeholder_serial(serial) && serial.find_first_of(" /") == std::string::npos) who.serial = serial;
  }
  static const char* kArchs[] = {"i386", "x86_64", "arm64", "arm32", "riscv64"};
  if (!arch.empty() && std::none_of(std::begin(kArchs), std::end(kArchs), [&](const char* a) { return arch == a; }))
    errors.push_back({"arch", "not an iPXE build architecture (i386, x86_64, arm64, arm32, riscv64)"});
  else who.arch = arch;
  if (!platform.empty() && platform != "pcbios" && platform != "efi")
    errors.push_back({"platform", "not an iPXE platform (pcbios, efi)"});
  else who.platform = platform;
  if (!errors.empty()) return make_error(ErrorKind::invalid_input, "bad boot request", std::move(errors));
  return who;
}

NodeService::NodeService(Store& store, const Clock& clock, const Logger& log)
    : store_(store), clock_(clock), log_(log), schema_(embedded::node_schema) {}

Result<nlohmann::json> NodeService::check(nlohmann::json record) const {
  if (!record.is_object())
    return make_error(ErrorKind::invalid_input, "node is not valid", {{"", "expected a JSON object"}});
  // Members the controller keeps on the record are not client input; they survive a patch.
  nlohmann::json kept = nlohmann::json::object();
  for (const char* key : {"job_id", "inventory", "last_boot", "last_job", "inspection"})
    if (record.contains(key)) {
      kept[key] = record[key];
      record.erase(key);
    }
  auto errors = schema_.validate(record);
  if (errors.empty() && !record.contains("macs") && !record.contains("uuid") && !record.contains("serial"))
    errors.push_back({"/macs", "a node needs at least one identifier: macs, uuid or serial"});
  if (!errors.empty()) return make_error(ErrorKind::invalid_input, "node is not valid", std::move(errors));
  if (record.contains("macs")) {
    nlohmann::json macs = nlohmann::json::array();
    for (const auto& m : record["macs"]) {
      auto n = *normalise_mac(m.get<std::string>());
      if (std::find(macs.begin(), macs.end(), n) != macs.end())
        return make_error(ErrorKind::invalid_input, "node is not valid", {{"/macs", "lists " + n + " twice"}});
      macs.push_back(n);
    }
    record["macs"] = std::move(macs);
  }
  if (record.contains("uuid")) record["uuid"] = lower(record["uuid"].get<std::string>());
  record.update(kept);
  return record;
}

nlohmann::json NodeService::view(const NodeRecord& node) {
  nlohmann::json out = node.record;
  out["id"] = node.id;
  out["state"] = std::string(to_string(node.state));
  out["created_at"] = format_rfc3339_ms(node.created_ms);
  out["updated_at"] = format_rfc3339_ms(node.updated_ms);
  if (out.contains("inspection")) out["inspection"] = {{"open", true}};  // its nonce makes the token: never shown
  return redact(out);
}

Result<nlohmann::json> NodeService::create(std::string_view body, const std::string& actor) {
  auto doc = parse_json(body);
  if (!doc) return doc.error();
  auto record = check(std::move(*doc));
  if (!record) return record.error();
  for (const char* key : {"job_id", "inventory", "last_boot", "last_job", "inspection"}) record->erase(key);
  NodeRecord node;
  node.state = NodeState::discovered;
  node.record = std::move(*record);
  node.created_ms = node.updated_ms = clock_.now_ms();
  for (int attempt = 0;; ++attempt) {
    node.id = "node_" + crypto::random_token(8);
    auto inserted = store_.insert_node(node, actor, "registered through the API");
    if (inserted) break;
    // A clash of an identifier is the client's conflict; of the id, try another.
    if (inserted.error().kind != ErrorKind::conflict || inserted.error().message.find("another node") != std::string::npos ||
        attempt == 3)
      return inserted.error();
  }
  log_.info("node registered", {{"node", node.id}, {"by", actor}});
  changed();
  return view(node);
}

Result<NodeRecord> NodeService::load(const std::string& id) {
  if (!is_node_id(id)) return make_error(ErrorKind::not_found, "no node " + id);
  auto node = store_.get_node(id);
  if (!node) return node.error();
  if (!*node) return make_error(ErrorKind::not_found, "no node " + id);
  return std::move(**node);
}

Result<nlohmann::json> NodeService::get(const std::string& id) {
  auto node = load(id);
  if (!node) return node.error();
  auto events = store_.node_events(id);
  if (!events) return events.error();
  auto out = view(*node);
  nlohmann::json history = nlohmann::json::array();
  for (const auto& e : *events) {
    nlohmann::json entry{{"to", e.to}, {"by", e.actor}, {"at", format_rfc3339_ms(e.at_ms)}};
    if (!e.from.empty()) entry["from"] = e.from;
    if (!e.detail.empty()) entry["detail"] = e.detail;
    history.push_back(std::move(entry));
  }
  out["history"] = std::move(history);
  return out;
}

Result<nlohmann::json> NodeService::list(const std::optional<std::string>& state,
                                         const std::optional<std::string>& cursor,
                                         const std::optional<std::string>& limit_text) {
  int limit = 100;
  if (limit_text) {
    auto parsed = parse_list_limit(*limit_text, 500);
    if (!parsed) return make_error(ErrorKind::invalid_input, "bad query", {{"limit", "must be an integer from 1 to 500"}});
    limit = *parsed;
  }
  std::optional<NodeState> want;
  if (state) {
    want = parse_node_state(*state);
    if (!want)
      return make_error(ErrorKind::invalid_input, "bad query",
                        {{"state", "one of discovered, pending, installing, installed, active, retired"}});
  }
  if (cursor && !is_node_id(*cursor))
    return make_error(ErrorKind::invalid_input, "bad query", {{"cursor", "not a cursor from this API"}});
  // A state filter scans pages until it has `limit` matches (nodes number in the thousands).
  nlohmann::json items = nlohmann::json::array();
  std::optional<std::string> after = cursor, next;
  for (;;) {
    auto rows = store_.list_nodes(after, 500);
    if (!rows) return rows.error();
    for (const auto& r : *rows) {
      if (want && r.state != *want) continue;
      if (static_cast<int>(items.size()) == limit) {
        next = items.back()["id"].get<std::string>();
        break;
      }
      items.push_back(view(r));
    }
    if (next || rows->size() < 500) break;
    after = rows->back().id;
  }
  return nlohmann::json{{"nodes", std::move(items)}, {"next_cursor", next ? nlohmann::json(*next) : nlohmann::json()}};
}

Result<nlohmann::json> NodeService::patch(const std::string& id, std::string_view body) {
  auto patch = parse_json(body);
  if (!patch) return patch.error();
  if (!patch->is_object())
    return make_error(ErrorKind::invalid_input, "node patch is not valid", {{"", "expected a JSON merge patch object"}});
  for (const char* key : {"state", "id", "job_id", "inventory", "last_boot", "last_job", "inspection", "created_at",
                          "updated_at", "history"})
    if (patch->contains(key))
      return make_error(ErrorKind::invalid_input, "node patch is not valid",
                        {{std::string("/") + key, std::string(key) == "state"
                                                       ? "the state moves through PATCH /api/v1/nodes/{id}/state"
                                                       : "kept by the controller; not patchable"}});
  for (int attempt = 0; attempt < 5; ++attempt) {
    auto node = load(id);
    if (!node) return node.error();
    auto record = node->record;
    record.merge_patch(*patch);
    auto checked = check(std::move(record));
    if (!checked) return checked.error();
    auto expected = node->updated_ms;
    node->record = std::move(*checked);
    node->updated_ms = std::max(clock_.now_ms(), expected + 1);
    auto updated = store_.update_node(*node, expected);
    if (!updated) return updated.error();
    if (*updated) {
      changed();
      return view(*node);
    }
  }
  return make_error(ErrorKind::conflict, "node " + id + " kept changing; try again");
}

Result<bool> NodeService::job_in_flight(const NodeRecord& node) {
  if (node.state != NodeState::pending && node.state != NodeState::installing) return false;
  auto job = store_.get_job(node.record.value("job_id", ""));
  if (!job) return job.error();
  return *job && ((**job).status == JobStatus::queued || (**job).status == JobStatus::provisioning);
}

Result<NodeRecord> NodeService::release_if_stale(const NodeRecord& node, const std::string& actor) {
  auto in_flight = job_in_flight(node);
  if (!in_flight) return in_flight.error();
  if (*in_flight || (node.state != NodeState::pending && node.state != NodeState::installing)) return node;
  auto moved = transition(node, NodeState::discovered, {{"job_id", nullptr}}, actor,
                          "released: its job " + node.record.value("job_id", "") + " had ended");
  if (!moved) return moved.error();
  return load(node.id);
}

Status NodeService::remove(const std::string& id) {
  auto loaded = load(id);
  if (!loaded) return loaded.error();
  auto node = release_if_stale(*loaded, "api");
  if (!node) return node.error();
  if (node->state == NodeState::pending || node->state == NodeState::installing)
    return make_error(ErrorKind::conflict, "node " + id + " is " + std::string(to_string(node->state)) +
                                               ": cancel its job " + node->record.value("job_id", "") + " first");
  auto removed = store_.delete_node(id);
  if (!removed) return removed.error();
  if (!*removed) return make_error(ErrorKind::not_found, "no node " + id);
  log_.info("node removed", {{"node", id}});
  changed();
  return Ok{};
}

Result<bool> NodeService::transition(const NodeRecord& node, NodeState to, const nlohmann::json& changes,
                                     const std::string& actor, const std::string& detail) {
  if (!find_node_transition(node.state, to))
    return make_error(ErrorKind::conflict, "node " + node.id + " cannot go from " + std::string(to_string(node.state)) +
                                               " to " + std::string(to_string(to)));
  NodeRecord next = node;
  next.state = to;
  next.record.merge_patch(changes);
  next.record.erase("inspection");  // an open inspection ends with any move
  next.updated_ms = std::max(clock_.now_ms(), node.updated_ms + 1);
  auto moved = store_.transition_node(next, node.state, node.updated_ms, actor, detail);
  if (!moved) return moved.error();
  if (*moved) {
    log_.info("node state changed", {{"node", node.id}, {"from", std::string(to_string(node.state))},
                                     {"to", std::string(to_string(to))}, {"by", actor}});
    changed();
  }
  return *moved;
}

Result<nlohmann::json> NodeService::set_state(const std::string& id, std::string_view body, const std::string& actor) {
  auto doc = parse_json(body);
  if (!doc) return doc.error();
  if (!doc->is_object() || !doc->contains("state") || !(*doc)["state"].is_string())
    return make_error(ErrorKind::invalid_input, "state change is not valid", {{"/state", "required: the new state"}});
  for (const auto& [key, value] : doc->items())
    if (key != "state" && key != "reason")
      return make_error(ErrorKind::invalid_input, "state change is not valid", {{"/" + key, "unknown member"}});
  if (doc->contains("reason") && (!(*doc)["reason"].is_string() || (*doc)["reason"].get<std::string>().size() > 500))
    return make_error(ErrorKind::invalid_input, "state change is not valid", {{"/reason", "a string of at most 500 characters"}});
  auto to = parse_node_state((*doc)["state"].get<std::string>());
  if (!to)
    return make_error(ErrorKind::invalid_input, "state change is not valid",
                      {{"/state", "one of discovered, pending, installing, installed, active, retired"}});
  auto loaded = load(id);
  if (!loaded) return loaded.error();
  auto node = release_if_stale(*loaded, actor);
  if (!node) return node.error();
  auto rule = find_node_transition(node->state, *to);
  if (!rule || !rule->explicit_request)
    return make_error(ErrorKind::conflict, "node " + id + " is " + std::string(to_string(node->state)) +
                                               ": an operator cannot move it to " + std::string(to_string(*to)));
  std::string reason = doc->value("reason", std::string(rule->why));
  auto moved = transition(*node, *to, nlohmann::json::object(), actor, reason);
  if (!moved) return moved.error();
  if (!*moved) return make_error(ErrorKind::conflict, "node " + id + " changed meanwhile; try again");
  return get(id);
}

Result<std::optional<NodeRecord>> NodeService::identify(const BootIdentity& who) {
  std::vector<std::string> keys{"mac:" + who.mac};
  if (who.uuid) keys.push_back("uuid:" + *who.uuid);
  if (who.serial) keys.push_back("serial:" + *who.serial);
  for (const auto& key : keys) {
    auto found = store_.find_node(key);
    if (!found) return found.error();
    if (*found) return found;
  }
  return std::optional<NodeRecord>();
}

Result<NodeRecord> NodeService::register_discovered(const BootIdentity& who) {
  NodeRecord node;
  node.state = NodeState::discovered;
  // Only the MAC becomes an identifier: anyone can claim a UUID or serial number in a boot
  // request, and a unique key squatted that way would lock the real machine out. What it
  // said is kept as a report (an inspection or an operator confirms it).
  node.record = {{"macs", {who.mac}}};
  nlohmann::json reported = nlohmann::json::object();
  if (who.uuid) reported["uuid"] = *who.uuid;
  if (who.serial) reported["serial"] = *who.serial;
  if (!reported.empty()) node.record["last_boot"] = {{"reported", reported}};
  if (who.platform == "pcbios" || who.platform == "efi") node.record["platform"] = who.platform;
  node.created_ms = node.updated_ms = clock_.now_ms();
  for (int attempt = 0;; ++attempt) {
    node.id = "node_" + crypto::random_token(8);
    auto inserted = store_.insert_node(node, "discovery", "first network boot request");
    if (inserted) break;
    if (inserted.error().kind != ErrorKind::conflict || attempt == 3) return inserted.error();
    // Two boot requests of one machine at once: the other registered it.
    auto again = identify(who);
    if (again && *again) return std::move(**again);
  }
  log_.info("node discovered", {{"node", node.id}, {"mac", who.mac}});
  changed();
  return node;
}

Result<NodeRecord> NodeService::update_kept(const std::string& id, const nlohmann::json& changes) {
  for (int attempt = 0; attempt < 5; ++attempt) {
    auto node = load(id);
    if (!node) return node.error();
    auto expected = node->updated_ms;
    node->record.merge_patch(changes);
    node->updated_ms = std::max(clock_.now_ms(), expected + 1);
    auto updated = store_.update_node(*node, expected);
    if (!updated) return updated.error();
    if (*updated) return std::move(*node);
  }
  return make_error(ErrorKind::conflict, "node " + id + " kept changing; try again");
}

Result<nlohmann::json> NodeService::accept_inventory(
    const std::string& id, std::string_view authorization, std::string_view body,
    const std::function<std::string(const std::string&, const std::string&)>& token_for) {
  auto node = load(id);
  if (!node) return node.error();
  auto open = node->record.value("inspection", nlohmann::json::object());
  const std::string prefix = "Bearer ";
  // Only a discovered node has an open inspection (any move closes it).
  if (node->state != NodeState::discovered || !open.is_object() || !open.contains("nonce") || !open["nonce"].is_string() ||
      !token_for || authorization.substr(0, prefix.size()) != prefix ||
      !crypto::constant_time_equal(authorization.substr(prefix.size()), token_for(id, open["nonce"].get<std::string>()))) {
    // A used token (the inspection closed) is a conflict only for the right token's holder;
    // anyone else learns nothing.
    return make_error(ErrorKind::unauthorized, "no open inspection for this token");
  }
  auto doc = parse_json(body);
  if (!doc) return doc.error();
  std::vector<FieldError> errors;
  auto count = [&](const char* key) {
    if (!doc->contains(key) || !(*doc)[key].is_number_integer() || (*doc)[key].get<std::int64_t>() < 0)
      errors.push_back({std::string("/") + key, "a non-negative integer"});
  };
  if (!doc->is_object()) return make_error(ErrorKind::invalid_input, "inventory is not valid", {{"", "expected an object"}});
  count("cpus");
  count("memory_bytes");
  for (const char* key : {"disks", "nics"})
    if (!doc->contains(key) || !(*doc)[key].is_array() || (*doc)[key].size() > 256)
      errors.push_back({std::string("/") + key, "an array (at most 256)"});
  nlohmann::json macs = node->record.value("macs", nlohmann::json::array());
  if (doc->contains("nics") && (*doc)["nics"].is_array() && (*doc)["nics"].size() <= 256)
    for (std::size_t i = 0; i < (*doc)["nics"].size(); ++i) {
      const auto& nic = (*doc)["nics"][i];
      if (!nic.is_object()) {
        errors.push_back({"/nics/" + std::to_string(i), "an object {name, mac}"});
        continue;
      }
      // A NIC that is not Ethernet (InfiniBand's 20-byte address) stays in the inventory but
      // is no identifier.
      auto mac = nic.contains("mac") && nic["mac"].is_string() ? normalise_mac(nic["mac"].get<std::string>()) : std::nullopt;
      if (!mac) continue;
      if (std::find(macs.begin(), macs.end(), *mac) != macs.end()) continue;
      auto other = store_.find_node("mac:" + *mac);
      if (other && !*other && macs.size() < 16) macs.push_back(*mac);  // another node's MAC stays its own
    }
  if (!errors.empty()) return make_error(ErrorKind::invalid_input, "inventory is not valid", std::move(errors));
  nlohmann::json changes{{"inventory", *doc}, {"inspection", nullptr}, {"macs", macs}};
  changes["inventory"]["reported_at"] = format_rfc3339_ms(clock_.now_ms());
  auto smbios = doc->contains("smbios") ? (*doc)["smbios"] : nlohmann::json::object();
  auto text = [&](const char* key) {
    return smbios.is_object() && smbios.contains(key) && smbios[key].is_string() ? smbios[key].get<std::string>() : std::string();
  };
  if (smbios.is_object()) {
    auto who = parse_boot_identity(macs.empty() ? "00:00:00:00:00:00" : macs[0].get<std::string>(), text("uuid"),
                                   text("serial"), "", "");
    auto free = [&](const std::string& key) {
      auto other = store_.find_node(key);
      return other && (!*other || (**other).id == id);
    };
    if (who && who->uuid && !node->record.contains("uuid") && free("uuid:" + *who->uuid)) changes["uuid"] = *who->uuid;
    if (who && who->serial && !node->record.contains("serial") && free("serial:" + *who->serial)) changes["serial"] = *who->serial;
  }
  // Compare-and-swap against the node as read: a second report with the same token finds the
  // inspection closed.
  auto expected = node->updated_ms;
  node->record.merge_patch(changes);
  node->updated_ms = std::max(clock_.now_ms(), expected + 1);
  auto updated = store_.update_node(*node, expected);
  if (!updated) return updated.error();
  if (!*updated) return make_error(ErrorKind::conflict, "node " + id + " changed meanwhile; the inspection stays open");
  log_.info("node inspected", {{"node", id}, {"cpus", std::to_string((*doc)["cpus"].get<std::int64_t>())},
                               {"disks", std::to_string((*doc)["disks"].size())}});
  changed();
  // The reporter learns nothing of the node's record (labels, recipe_ref, server).
  return nlohmann::json{{"accepted", true}, {"node", id}};
}

Result<std::vector<NodeRecord>> NodeService::all() {
  std::vector<NodeRecord> out;
  std::optional<std::string> after;
  for (;;) {
    auto rows = store_.list_nodes(after, 500);
    if (!rows) return rows.error();
    for (auto& r : *rows) out.push_back(std::move(r));
    if (rows->size() < 500) return out;
    after = out.back().id;
  }
}

}  // namespace provisioner
