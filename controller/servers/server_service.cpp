#include "controller/servers/server_service.hpp"

#include "common/crypto.hpp"
#include "common/list_limit.hpp"
#include "common/recipe.hpp"
#include "common/redact.hpp"
#include "controller/logging/logger.hpp"
#include "controller/redfish/vendor_profile.hpp"

namespace provisioner {

namespace {

constexpr const char* kSealedPassword = "password_sealed";

bool is_server_id(const std::string& id) {
  return id.size() == 20 && id.rfind("srv_", 0) == 0 &&
         id.find_first_not_of("0123456789abcdef", 4) == std::string::npos;
}

std::vector<FieldError> prefixed(const std::string& prefix, std::vector<FieldError> errors) {
  for (auto& e : errors) e.path = prefix + e.path;
  return errors;
}

}  // namespace

ServerService::ServerService(Store& store, const Clock& clock, const Logger& log, std::string secret_key)
    : store_(store), clock_(clock), log_(log), secret_key_(std::move(secret_key)), schema_(server_schema_text()) {}

Result<nlohmann::json> ServerService::check_and_seal(nlohmann::json record, const std::string& prefix) const {
  // A sealed password may come from the stored record being patched; it is not client input.
  std::optional<std::string> sealed;
  if (record.contains("bmc") && record["bmc"].is_object() && record["bmc"].contains(kSealedPassword)) {
    sealed = record["bmc"][kSealedPassword].get<std::string>();
    record["bmc"].erase(kSealedPassword);
  }
  auto errors = schema_.validate(record);
  if (errors.empty() && !record.contains("serial")) errors.push_back({"/serial", "a server needs a serial number"});
  if (!errors.empty())
    return make_error(ErrorKind::invalid_input, "server is not valid", prefixed(prefix, std::move(errors)));
  if (record.contains("bmc")) {
    if (record["bmc"].contains("password")) {
      record["bmc"][kSealedPassword] = crypto::seal(secret_key_, record["bmc"]["password"].get<std::string>());
      record["bmc"].erase("password");
    } else if (sealed) {
      record["bmc"][kSealedPassword] = *sealed;
    }
  }
  return record;
}

nlohmann::json ServerService::view(const nlohmann::json& record) {
  nlohmann::json out = record;
  if (out.contains("bmc") && out["bmc"].contains(kSealedPassword)) {
    out["bmc"].erase(kSealedPassword);
    out["bmc"]["password"] = kRedacted;
  }
  // The TLS policy the Redfish client will use, whether the record or its profile chose it.
  if (out.contains("bmc") && out["bmc"].is_object())
    out["bmc"]["tls"] = redfish::effective_tls(out["bmc"].value("tls", ""), out["bmc"].value("profile", "auto"));
  return redact(out);
}

std::optional<std::string> ServerService::bmc_password(const nlohmann::json& snapshot) const {
  if (!snapshot.contains("bmc") || !snapshot["bmc"].contains(kSealedPassword)) return std::nullopt;
  return crypto::open(secret_key_, snapshot["bmc"][kSealedPassword].get<std::string>());
}

namespace {
nlohmann::json with_meta(const ServerRecord& r) {
  auto record = r.record;
  record["id"] = r.id;
  record["created_at"] = format_rfc3339_ms(r.created_ms);
  record["updated_at"] = format_rfc3339_ms(r.updated_ms);
  return record;
}
}  // namespace

Result<nlohmann::json> ServerService::create(std::string_view body) {
  auto doc = parse_json(body);
  if (!doc) return doc.error();
  if (!doc->is_object()) return make_error(ErrorKind::invalid_input, "server is not valid", {{"", "expected an object"}});
  auto record = check_and_seal(std::move(*doc), "");
  if (!record) return record.error();
  ServerRecord r;
  r.id = "srv_" + crypto::random_token(8);
  r.serial = (*record)["serial"].get<std::string>();
  r.record = *record;
  r.created_ms = r.updated_ms = clock_.now_ms();
  if (auto s = store_.insert_server(r); !s) return s.error();
  log_.info("server registered", {{"server_id", r.id}, {"serial", r.serial}});
  return view(with_meta(r));
}

Result<nlohmann::json> ServerService::get(const std::string& id) {
  auto r = store_.get_server(id);
  if (!r) return r.error();
  if (!*r) return make_error(ErrorKind::not_found, "no server " + id);
  return view(with_meta(**r));
}

Result<nlohmann::json> ServerService::list(const std::optional<std::string>& cursor,
                                           const std::optional<std::string>& limit_text) {
  int limit = 100;
  if (limit_text) {
    auto parsed = parse_list_limit(*limit_text, 500);
    if (!parsed) return make_error(ErrorKind::invalid_input, "bad query", {{"limit", "must be an integer from 1 to 500"}});
    limit = *parsed;
  }
  if (cursor && !is_server_id(*cursor))
    return make_error(ErrorKind::invalid_input, "bad query", {{"cursor", "not a cursor from this API"}});
  auto rows = store_.list_servers(cursor, limit + 1);
  if (!rows) return rows.error();
  bool more = static_cast<int>(rows->size()) > limit;
  if (more) rows->pop_back();
  nlohmann::json items = nlohmann::json::array();
  for (const auto& r : *rows) items.push_back(view(with_meta(r)));
  nlohmann::json out{{"servers", std::move(items)}};
  out["next_cursor"] = more ? nlohmann::json(rows->back().id) : nlohmann::json();
  return out;
}

Result<nlohmann::json> ServerService::patch(const std::string& id, std::string_view body) {
  auto patch = parse_json(body);
  if (!patch) return patch.error();
  if (!patch->is_object())
    return make_error(ErrorKind::invalid_input, "server patch is not valid", {{"", "expected a JSON merge patch object"}});
  for (int attempt = 0; attempt < 5; ++attempt) {
    auto current = store_.get_server(id);
    if (!current) return current.error();
    if (!*current) return make_error(ErrorKind::not_found, "no server " + id);
    auto record = (*current)->record;
    // A new address without a new password must not keep sending the old one elsewhere.
    bool new_address = patch->contains("bmc") && (*patch)["bmc"].is_object() && (*patch)["bmc"].contains("address");
    record.merge_patch(*patch);
    if (new_address && !(*patch)["bmc"].contains("password") && record.contains("bmc"))
      record["bmc"].erase(kSealedPassword);
    auto checked = check_and_seal(std::move(record), "");
    if (!checked) return checked.error();
    ServerRecord updated = **current;
    updated.serial = (*checked)["serial"].get<std::string>();
    updated.record = *checked;
    updated.updated_ms = std::max(clock_.now_ms(), (*current)->updated_ms + 1);
    auto applied = store_.update_server(updated, (*current)->updated_ms);
    if (!applied) return applied.error();
    if (*applied) {
      log_.info("server updated", {{"server_id", id}, {"serial", updated.serial}});
      return view(with_meta(updated));
    }
  }
  return make_error(ErrorKind::conflict, "server " + id + " keeps changing; try again");
}

Status ServerService::remove(const std::string& id) {
  auto current = store_.get_server(id);
  if (!current) return current.error();
  if (!*current) return make_error(ErrorKind::not_found, "no server " + id);
  auto busy = store_.count_unfinished_jobs((*current)->serial);
  if (!busy) return busy.error();
  if (*busy > 0)
    return make_error(ErrorKind::conflict, "server " + id + " has " + std::to_string(*busy) + " unfinished job(s)");
  auto deleted = store_.delete_server(id);
  if (!deleted) return deleted.error();
  log_.info("server removed", {{"server_id", id}, {"serial", (*current)->serial}});
  return Ok{};
}

Result<nlohmann::json> ServerService::resolve_for_job(const nlohmann::json& server, const std::string& prefix) {
  if (!server.is_object())
    return make_error(ErrorKind::invalid_input, "server is not valid", {{prefix, "expected an object"}});
  if (server.contains("id")) {
    if (server.size() != 1)
      return make_error(ErrorKind::invalid_input, "server is not valid",
                        {{prefix, "a server reference carries only its id"}});
    if (!server["id"].is_string() || !is_server_id(server["id"].get<std::string>()))
      return make_error(ErrorKind::invalid_input, "server is not valid", {{prefix + "/id", "not a server id"}});
    auto r = store_.get_server(server["id"].get<std::string>());
    if (!r) return r.error();
    if (!*r)
      return make_error(ErrorKind::invalid_input, "unknown server", {{prefix + "/id", "no such server"}});
    auto snapshot = (*r)->record;
    snapshot["id"] = (*r)->id;
    return snapshot;
  }
  return check_and_seal(server, prefix);
}

}  // namespace provisioner
