#include "controller/config/config.hpp"

#include <arpa/inet.h>

#include <cstdlib>
#include <iostream>
#include <set>
#include <sstream>

#include <CLI/CLI.hpp>
#include <toml++/toml.h>

#include "common/crypto.hpp"

namespace provisioner {

namespace {

// Every numeric key with its range: the one place a size, count or duration is checked,
// whether it came from the config file, the environment or a flag.
struct IntRange {
  const char* key;  // as written in the config file
  std::int64_t min, max;
};
constexpr std::int64_t kDay = 24 * 3600;
constexpr std::int64_t kDayMs = kDay * 1000;
const std::vector<IntRange>& int_ranges() {
  static const std::vector<IntRange> ranges = {
      {"max_body_bytes", 1024, std::int64_t{1} << 30},
      {"http_threads", 1, 256},
      // The API edge's limits against hostile clients (0: derived from the fd limit / off).
      {"api.max_head_bytes", 1024, 1 << 20},
      {"api.head_timeout_ms", 100, 600'000},
      {"api.idle_timeout_ms", 100, 3'600'000},
      {"api.events_heartbeat_ms", 100, 3'600'000},
      {"api.max_connections", 0, 1 << 20},
      {"api.max_connections_per_client", 0, 1 << 20},
      {"webhook.max_skew_seconds", 1, kDay},
      {"artifacts.threads", 1, 256},
      {"artifacts.retention_seconds", 0, 3650 * kDay},  // 0: collect as soon as unused
      {"artifacts.max_upload_bytes", 1, std::int64_t{1} << 50},
      // The artifact server's limits against hostile clients (0: derived from the fd limit / off).
      {"artifacts.max_connections", 0, 1 << 20},
      {"artifacts.max_connections_per_client", 0, 1 << 20},
      {"artifacts.head_timeout_ms", 100, 600'000},
      {"artifacts.keepalive_timeout_ms", 100, 3'600'000},
      {"registry.token_ttl_seconds", 10, kDay},
      {"registry.max_blob_bytes", 1, std::int64_t{1} << 50},
      {"registry.max_manifest_bytes", 1024, 64 << 20},
      {"registry.gc_grace_seconds", 1, 30 * kDay},
      {"reconciler.tick_ms", 10, 60'000},
      {"reconciler.idle_recheck_ms", 10, kDayMs},
      {"reconciler.boot_timeout_seconds", 1, 30 * kDay},
      {"reconciler.install_timeout_seconds", 1, 30 * kDay},
      {"reconciler.gc_interval_seconds", 1, 30 * kDay},
      {"reconciler.workers", 1, 4096},
      {"redfish.connect_timeout_ms", 1, kDayMs},
      {"redfish.request_timeout_ms", 1, kDayMs},
      {"redfish.retry_base_ms", 1, kDayMs},
      {"redfish.retry_cap_ms", 1, kDayMs},
      {"redfish.not_ready_delay_ms", 1, kDayMs},
      {"redfish.max_retry_after_ms", 1, kDayMs},
      {"redfish.insert_retry_delay_ms", 1, kDayMs},
      {"redfish.task_poll_ms", 1, kDayMs},
      {"redfish.task_timeout_ms", 1, kDayMs},
      {"redfish.power_poll_ms", 1, kDayMs},
      {"redfish.power_timeout_ms", 1, kDayMs},
      {"redfish.graceful_timeout_ms", 1, kDayMs},
      {"redfish.breaker_open_ms", 1, kDayMs},
      {"redfish.get_attempts", 1, 1000},
      {"redfish.not_ready_attempts", 1, 1000},
      {"redfish.rate_limit_attempts", 1, 1000},
      {"redfish.boot_reapply_attempts", 0, 1000},
      {"redfish.breaker_threshold", 1, 1000},
      {"redfish.max_concurrent_requests", 1, 65536},
  };
  return ranges;
}

Error bad_value(const std::string& key, const std::string& must, const std::string& got) {
  return make_error(ErrorKind::invalid_input, key + ": must be " + must + ", got " + got);
}

Status check_int(const std::string& key, std::int64_t value) {
  for (const auto& r : int_ranges()) {
    if (key != r.key) continue;
    if (value < r.min || value > r.max) {
      std::string must = r.min == 1   ? "a positive integer"
                         : r.min == 0 ? "a non-negative integer"
                                      : "an integer from " + std::to_string(r.min);
      must += " up to " + std::to_string(r.max);
      return bad_value(key, must, std::to_string(value));
    }
    return Ok{};
  }
  return make_error(ErrorKind::internal, "no range declared for " + key);
}

// "host:port" with a port 1..65535; `ip_only`: the host must be an IPv4 or [IPv6] literal.
Status check_listen(const std::string& key, const std::string& value, bool ip_only) {
  auto must = std::string(ip_only ? "IP" : "host") + ":port with a port from 1 to 65535";
  auto colon = value.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == value.size())
    return bad_value(key, must, "'" + value + "'");
  std::string host = value.substr(0, colon), port = value.substr(colon + 1);
  if (port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos || std::stoi(port) < 1 ||
      std::stoi(port) > 65535)
    return bad_value(key, must, "'" + value + "'");
  if (host.find_first_of(" /\t") != std::string::npos) return bad_value(key, must, "'" + value + "'");
  if (ip_only) {
    in6_addr any{};
    bool v6 = host.size() > 2 && host.front() == '[' && host.back() == ']' &&
              ::inet_pton(AF_INET6, host.substr(1, host.size() - 2).c_str(), &any) == 1;
    if (!v6 && ::inet_pton(AF_INET, host.c_str(), &any) != 1) return bad_value(key, must, "'" + value + "'");
  }
  return Ok{};
}

Status check_choice(const std::string& key, const std::string& value, const std::vector<std::string>& choices) {
  for (const auto& c : choices)
    if (value == c) return Ok{};
  std::string must = "one of";
  for (const auto& c : choices) must += " " + c;
  return bad_value(key, must, "'" + value + "'");
}

std::string describe(const toml::node& node) {
  switch (node.type()) {
    case toml::node_type::table: return "a table";
    case toml::node_type::array: return "an array";
    case toml::node_type::string: return "the string \"" + *node.value<std::string>() + "\"";
    case toml::node_type::floating_point: return "the number " + std::to_string(*node.value<double>());
    case toml::node_type::integer: return std::to_string(*node.value<std::int64_t>());
    case toml::node_type::boolean: return *node.value<bool>() ? "true" : "false";
    default: return "a date or time";
  }
}

// Reads the keys of one TOML table, each with its type checked; a wrong type or range is an
// error naming the key ("artifacts.listen"), never a silently kept default.
class TableReader {
 public:
  TableReader(const toml::table& table, std::string prefix) : table_(table), prefix_(std::move(prefix)) {}

  std::string name(const char* key) const { return prefix_.empty() ? key : prefix_ + "." + key; }

  Status string(const char* key, std::string& out) {
    const auto* node = table_.get(key);
    if (!node) return Ok{};
    auto v = node->value<std::string>();
    if (!node->is_string() || !v) return bad_value(name(key), "a string", describe(*node));
    out = *v;
    return Ok{};
  }
  Status path(const char* key, std::filesystem::path& out) {
    std::string text;
    if (auto s = string(key, text); !s) return s;
    if (table_.get(key)) {
      if (text.empty()) return bad_value(name(key), "a non-empty path", "''");
      out = text;
    }
    return Ok{};
  }
  Status path(const char* key, std::optional<std::filesystem::path>& out) {
    std::filesystem::path p;
    if (auto s = path(key, p); !s) return s;
    if (table_.get(key)) out = p;
    return Ok{};
  }
  Status listen(const char* key, std::string& out, bool ip_only) {
    std::string text = out;
    if (auto s = string(key, text); !s) return s;
    if (!table_.get(key)) return Ok{};
    if (auto s = check_listen(name(key), text, ip_only); !s) return s;
    out = text;
    return Ok{};
  }
  Status choice(const char* key, std::string& out, const std::vector<std::string>& choices) {
    std::string text = out;
    if (auto s = string(key, text); !s) return s;
    if (!table_.get(key)) return Ok{};
    if (auto s = check_choice(name(key), text, choices); !s) return s;
    out = text;
    return Ok{};
  }
  template <typename T>
  Status integer(const char* key, T& out) {
    const auto* node = table_.get(key);
    if (!node) return Ok{};
    if (!node->is_integer()) return bad_value(name(key), "an integer", describe(*node));
    auto v = *node->value<std::int64_t>();
    if (auto s = check_int(name(key), v); !s) return s;
    out = static_cast<T>(v);
    return Ok{};
  }
  Status boolean(const char* key, bool& out) {
    const auto* node = table_.get(key);
    if (!node) return Ok{};
    if (!node->is_boolean()) return bad_value(name(key), "true or false", describe(*node));
    out = *node->value<bool>();
    return Ok{};
  }
  const toml::table* table(const char* key, Status& status) {
    const auto* node = table_.get(key);
    if (!node) return nullptr;
    if (!node->is_table()) status = bad_value(name(key), "a table", describe(*node));
    return node->as_table();
  }

 private:
  const toml::table& table_;
  std::string prefix_;
};

Status unknown_keys(const toml::table& table, const std::set<std::string>& known, const std::string& where) {
  for (const auto& [key, value] : table)
    if (!known.count(std::string(key.str())))
      return make_error(ErrorKind::invalid_input, "unknown key '" + std::string(key.str()) + "' in " + where);
  return Ok{};
}

// Runs each read in turn and stops at the first error.
#define PROVISIONER_TRY(expr)      \
  do {                             \
    if (auto s_ = (expr); !s_) return s_; \
  } while (0)

// Empty (SQLite) or a PostgreSQL URL; never echoed back (it may hold a password).
Status check_database_url(const std::string& what, const std::string& url) {
  if (url.empty() || url.rfind("postgresql://", 0) == 0 || url.rfind("postgres://", 0) == 0) return Ok{};
  return make_error(ErrorKind::invalid_input, what + ": must be a postgresql:// URL (or empty for SQLite)");
}

Status read_top(const toml::table& t, ControllerConfig& c) {
  TableReader top(t, "");
  PROVISIONER_TRY(top.listen("listen", c.listen, false));
  PROVISIONER_TRY(top.path("data_dir", c.data_dir));
  PROVISIONER_TRY(top.string("public_url", c.public_url));
  PROVISIONER_TRY(top.string("database_url", c.database_url));
  PROVISIONER_TRY(check_database_url("database_url", c.database_url));
  PROVISIONER_TRY(top.path("recipes_dir", c.recipes_dir));
  PROVISIONER_TRY(top.integer("max_body_bytes", c.max_body_bytes));
  PROVISIONER_TRY(top.integer("http_threads", c.http_threads));
  return Ok{};
}

Status read_log(const toml::table& log, const std::string& where, ControllerConfig& c) {
  PROVISIONER_TRY(unknown_keys(log, {"format", "level", "file"}, where + " [log]"));
  TableReader r(log, "log");
  PROVISIONER_TRY(r.choice("format", c.log_format, {"text", "json"}));
  PROVISIONER_TRY(r.choice("level", c.log_level, {"debug", "info", "warn", "error"}));
  PROVISIONER_TRY(r.path("file", c.log_file));
  return Ok{};
}

Status read_tls(const toml::table& tls, const std::string& where, ControllerConfig& c) {
  PROVISIONER_TRY(unknown_keys(tls, {"cert", "key"}, where + " [tls]"));
  TableReader r(tls, "tls");
  PROVISIONER_TRY(r.path("cert", c.tls_cert));
  PROVISIONER_TRY(r.path("key", c.tls_key));
  return Ok{};
}

Status read_artifacts(const toml::table& a, const std::string& where, ControllerConfig& c) {
  PROVISIONER_TRY(unknown_keys(a, {"listen", "public_url", "threads", "maintenance_iso", "retention_seconds",
                                    "max_upload_bytes", "tls_cert", "tls_key", "tls_min_version", "max_connections",
                                    "max_connections_per_client", "head_timeout_ms", "keepalive_timeout_ms"},
                               where + " [artifacts]"));
  TableReader r(a, "artifacts");
  PROVISIONER_TRY(r.listen("listen", c.artifacts_listen, true));
  PROVISIONER_TRY(r.string("public_url", c.artifacts_public_url));
  PROVISIONER_TRY(r.integer("threads", c.artifacts_threads));
  PROVISIONER_TRY(r.path("maintenance_iso", c.maintenance_iso));
  PROVISIONER_TRY(r.integer("retention_seconds", c.artifact_retention_seconds));
  PROVISIONER_TRY(r.integer("max_upload_bytes", c.max_upload_bytes));
  PROVISIONER_TRY(r.path("tls_cert", c.artifacts_tls_cert));
  PROVISIONER_TRY(r.path("tls_key", c.artifacts_tls_key));
  PROVISIONER_TRY(r.string("tls_min_version", c.artifacts_tls_min_version));
  PROVISIONER_TRY(r.integer("max_connections", c.artifacts_max_connections));
  PROVISIONER_TRY(r.integer("max_connections_per_client", c.artifacts_max_connections_per_client));
  PROVISIONER_TRY(r.integer("head_timeout_ms", c.artifacts_head_timeout_ms));
  PROVISIONER_TRY(r.integer("keepalive_timeout_ms", c.artifacts_keepalive_timeout_ms));
  return Ok{};
}

// [api]: the edge's limits, all integers, named as in ControllerConfig without the prefix.
Status read_api(const toml::table& a, const std::string& where, ControllerConfig& c) {
  const std::vector<std::pair<const char*, std::int64_t*>> keys = {
      {"max_head_bytes", &c.api_max_head_bytes},   {"head_timeout_ms", &c.api_head_timeout_ms},
      {"idle_timeout_ms", &c.api_idle_timeout_ms}, {"max_connections", &c.api_max_connections},
      {"max_connections_per_client", &c.api_max_connections_per_client},
      {"events_heartbeat_ms", &c.api_events_heartbeat_ms}};
  std::set<std::string> known;
  for (const auto& [k, p] : keys) known.insert(k);
  PROVISIONER_TRY(unknown_keys(a, known, where + " [api]"));
  TableReader r(a, "api");
  for (const auto& [k, p] : keys) PROVISIONER_TRY(r.integer(k, *p));
  return Ok{};
}

Status read_registry(const toml::table& t, const std::string& where, ControllerConfig& c) {
  PROVISIONER_TRY(unknown_keys(t, {"enabled", "anonymous_pull", "realm", "token_ttl_seconds", "max_blob_bytes",
                                    "max_manifest_bytes", "gc_grace_seconds"},
                               where + " [registry]"));
  TableReader r(t, "registry");
  PROVISIONER_TRY(r.boolean("enabled", c.registry_enabled));
  PROVISIONER_TRY(r.boolean("anonymous_pull", c.registry_anonymous_pull));
  PROVISIONER_TRY(r.string("realm", c.registry_realm));
  PROVISIONER_TRY(r.integer("token_ttl_seconds", c.registry_token_ttl_seconds));
  PROVISIONER_TRY(r.integer("max_blob_bytes", c.registry_max_blob_bytes));
  PROVISIONER_TRY(r.integer("max_manifest_bytes", c.registry_max_manifest_bytes));
  PROVISIONER_TRY(r.integer("gc_grace_seconds", c.registry_gc_grace_seconds));
  return Ok{};
}

Status read_pxe(const toml::table& t, const std::string& where, ControllerConfig& c) {
  PROVISIONER_TRY(unknown_keys(t, {"enabled", "discover", "kernel", "initrd", "kernel_args", "dhcp", "interface", "subnet",
                                    "range_start", "range_end", "netmask", "dnsmasq", "ipxe_dir", "arm64_efi",
                                    "rpi_firmware", "profiles"},
                               where + " [pxe]"));
  TableReader r(t, "pxe");
  PROVISIONER_TRY(r.boolean("enabled", c.pxe_enabled));
  PROVISIONER_TRY(r.choice("discover", c.pxe_discover, {"off", "register", "inspect"}));
  PROVISIONER_TRY(r.path("kernel", c.pxe_kernel));
  PROVISIONER_TRY(r.path("initrd", c.pxe_initrd));
  PROVISIONER_TRY(r.string("kernel_args", c.pxe_kernel_args));
  PROVISIONER_TRY(r.choice("dhcp", c.pxe_dhcp, {"off", "proxy", "full"}));
  PROVISIONER_TRY(r.string("interface", c.pxe_interface));
  PROVISIONER_TRY(r.string("subnet", c.pxe_subnet));
  PROVISIONER_TRY(r.string("range_start", c.pxe_range_start));
  PROVISIONER_TRY(r.string("range_end", c.pxe_range_end));
  PROVISIONER_TRY(r.string("netmask", c.pxe_netmask));
  PROVISIONER_TRY(r.string("dnsmasq", c.pxe_dnsmasq));
  PROVISIONER_TRY(r.path("ipxe_dir", c.pxe_ipxe_dir));
  PROVISIONER_TRY(r.path("arm64_efi", c.pxe_arm64_efi));
  PROVISIONER_TRY(r.path("rpi_firmware", c.pxe_rpi_firmware));
  if (const auto* node = t.get("profiles")) {
    const auto* list = node->as_array();
    if (!list) return bad_value("pxe.profiles", "an array of tables ([[pxe.profiles]])", describe(*node));
    for (std::size_t i = 0; i < list->size(); ++i) {
      std::string at = "pxe.profiles[" + std::to_string(i) + "]";
      const auto* entry = (*list)[i].as_table();
      if (!entry) return bad_value(at, "a table", describe((*list)[i]));
      PROVISIONER_TRY(unknown_keys(*entry, {"match", "recipe_ref"}, where + " " + at));
      ControllerConfig::PxeProfile profile;
      PROVISIONER_TRY(TableReader(*entry, at).string("recipe_ref", profile.recipe_ref));
      if (profile.recipe_ref.empty()) return bad_value(at + ".recipe_ref", "a recipe name (name, name@version)", "nothing");
      const auto* match = entry->get("match");
      if (!match || !match->as_table() || match->as_table()->empty())
        return bad_value(at + ".match", "a table of labels ({role = \"web\"})", match ? describe(*match) : "nothing");
      for (const auto& [k, v] : *match->as_table()) {
        if (!v.is_string()) return bad_value(at + ".match." + std::string(k.str()), "a string", describe(v));
        profile.match.emplace_back(std::string(k.str()), *v.value<std::string>());
      }
      c.pxe_profiles.push_back(std::move(profile));
    }
  }
  // What dnsmasq would otherwise refuse at start, said here with the key's name.
  auto ipv4 = [](const std::string& text) {
    in_addr a{};
    return inet_pton(AF_INET, text.c_str(), &a) == 1;
  };
  if (c.pxe_kernel_args.find_first_of("\n\r") != std::string::npos)
    return bad_value("pxe.kernel_args", "one line", "a line break");
  if (c.pxe_enabled && c.pxe_dhcp != "off") {
    if (c.pxe_interface.empty() || c.pxe_interface.size() > 15 ||
        c.pxe_interface.find_first_of(" /,\n=") != std::string::npos)
      return bad_value("pxe.interface", "an interface name (dhcp = " + c.pxe_dhcp + " needs one)", "'" + c.pxe_interface + "'");
    if (c.pxe_dhcp == "proxy" && !ipv4(c.pxe_subnet))
      return bad_value("pxe.subnet", "the IPv4 network address proxy-DHCP serves", "'" + c.pxe_subnet + "'");
    if (c.pxe_dhcp == "full" && (!ipv4(c.pxe_range_start) || !ipv4(c.pxe_range_end) || !ipv4(c.pxe_netmask)))
      return bad_value("pxe.range_start", "IPv4 addresses in range_start, range_end and netmask (dhcp = full)",
                       "'" + c.pxe_range_start + "'..'" + c.pxe_range_end + "'");
  }
  return Ok{};
}

Status read_reconciler(const toml::table& t, const std::string& where, ControllerConfig& c) {
  PROVISIONER_TRY(unknown_keys(t, {"tick_ms", "boot_timeout_seconds", "install_timeout_seconds", "gc_interval_seconds",
                                    "workers", "idle_recheck_ms"},
                               where + " [reconciler]"));
  TableReader r(t, "reconciler");
  PROVISIONER_TRY(r.integer("tick_ms", c.reconcile_tick_ms));
  PROVISIONER_TRY(r.integer("boot_timeout_seconds", c.boot_timeout_seconds));
  PROVISIONER_TRY(r.integer("install_timeout_seconds", c.install_timeout_seconds));
  PROVISIONER_TRY(r.integer("gc_interval_seconds", c.gc_interval_seconds));
  PROVISIONER_TRY(r.integer("workers", c.reconcile_workers));
  PROVISIONER_TRY(r.integer("idle_recheck_ms", c.idle_recheck_ms));
  return Ok{};
}

Status read_redfish(const toml::table& rf, const std::string& where, ControllerConfig& c) {
  // Every knob in milliseconds or counts, named as in RedfishOptions.
  auto& o = c.redfish;
  const std::vector<std::pair<const char*, std::int64_t*>> ms = {
      {"connect_timeout_ms", &o.connect_timeout_ms}, {"request_timeout_ms", &o.request_timeout_ms},
      {"retry_base_ms", &o.retry_base_ms},           {"retry_cap_ms", &o.retry_cap_ms},
      {"not_ready_delay_ms", &o.not_ready_delay_ms}, {"max_retry_after_ms", &o.max_retry_after_ms},
      {"insert_retry_delay_ms", &o.insert_retry_delay_ms}, {"task_poll_ms", &o.task_poll_ms},
      {"task_timeout_ms", &o.task_timeout_ms},       {"power_poll_ms", &o.power_poll_ms},
      {"power_timeout_ms", &o.power_timeout_ms},     {"graceful_timeout_ms", &o.graceful_timeout_ms},
      {"breaker_open_ms", &o.breaker_open_ms}};
  const std::vector<std::pair<const char*, int*>> counts = {
      {"get_attempts", &o.get_attempts},         {"not_ready_attempts", &o.not_ready_attempts},
      {"rate_limit_attempts", &o.rate_limit_attempts}, {"boot_reapply_attempts", &o.boot_reapply_attempts},
      {"breaker_threshold", &o.breaker_threshold}, {"max_concurrent_requests", &o.max_concurrent_requests}};
  std::set<std::string> known{"prefer_graceful_restart"};
  for (const auto& [k, p] : ms) known.insert(k);
  for (const auto& [k, p] : counts) known.insert(k);
  PROVISIONER_TRY(unknown_keys(rf, known, where + " [redfish]"));
  TableReader r(rf, "redfish");
  for (const auto& [k, p] : ms) PROVISIONER_TRY(r.integer(k, *p));
  for (const auto& [k, p] : counts) PROVISIONER_TRY(r.integer(k, *p));
  PROVISIONER_TRY(r.boolean("prefer_graceful_restart", o.prefer_graceful_restart));
  return Ok{};
}

Status read_tokens(const toml::array& tokens, const std::string& where, ControllerConfig& c) {
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    auto* entry = tokens[i].as_table();
    std::string at = "tokens[" + std::to_string(i) + "]";
    if (!entry) return make_error(ErrorKind::invalid_input, where + ": " + at + " is not a table");
    PROVISIONER_TRY(unknown_keys(*entry, {"name", "role", "sha256"}, where + " " + at));
    TableReader r(*entry, at);
    ApiToken token;
    token.name = "token-" + std::to_string(i);
    std::string role;
    PROVISIONER_TRY(r.string("name", token.name));
    PROVISIONER_TRY(r.string("role", role));
    PROVISIONER_TRY(r.string("sha256", token.sha256_hex));
    auto parsed = parse_role(role);
    if (!parsed) return bad_value(at + ".role", "admin, operator, auditor or ci", "'" + role + "'");
    token.role = *parsed;
    if (!crypto::is_sha256_hex(token.sha256_hex))
      return make_error(ErrorKind::invalid_input,
                        at + ".sha256: must be the 64-hex SHA-256 of the token (provisioner-controller hash-token)");
    c.tokens.push_back(std::move(token));
  }
  return Ok{};
}

Status read_file_tables(const toml::table& t, const std::string& where, ControllerConfig& c) {
  PROVISIONER_TRY(unknown_keys(t, {"listen", "data_dir", "database_url", "public_url", "recipes_dir", "max_body_bytes",
                                   "http_threads", "log", "tls", "api", "webhook", "tokens", "artifacts",
                                   "reconciler", "redfish", "registry", "pxe"},
                               where));
  PROVISIONER_TRY(read_top(t, c));
  TableReader top(t, "");
  Status shape = Ok{};
  if (const auto* log = top.table("log", shape)) PROVISIONER_TRY(read_log(*log, where, c));
  if (const auto* tls = top.table("tls", shape)) PROVISIONER_TRY(read_tls(*tls, where, c));
  if (const auto* hook = top.table("webhook", shape)) {
    PROVISIONER_TRY(unknown_keys(*hook, {"max_skew_seconds"}, where + " [webhook]"));
    PROVISIONER_TRY(TableReader(*hook, "webhook").integer("max_skew_seconds", c.webhook_max_skew_seconds));
  }
  if (const auto* a = top.table("api", shape)) PROVISIONER_TRY(read_api(*a, where, c));
  if (const auto* a = top.table("artifacts", shape)) PROVISIONER_TRY(read_artifacts(*a, where, c));
  if (const auto* r = top.table("reconciler", shape)) PROVISIONER_TRY(read_reconciler(*r, where, c));
  if (const auto* rf = top.table("redfish", shape)) PROVISIONER_TRY(read_redfish(*rf, where, c));
  if (const auto* rg = top.table("registry", shape)) PROVISIONER_TRY(read_registry(*rg, where, c));
  if (const auto* px = top.table("pxe", shape)) PROVISIONER_TRY(read_pxe(*px, where, c));
  if (!shape) return shape;
  if (const auto* node = t.get("tokens")) {
    if (!node->is_array()) return bad_value("tokens", "an array of tables ([[tokens]])", describe(*node));
    PROVISIONER_TRY(read_tokens(*node->as_array(), where, c));
  }
  return Ok{};
}

}  // namespace

Status apply_config_file(const std::filesystem::path& file, ControllerConfig& c) {
  toml::table t;
  try {
    t = toml::parse_file(file.string());
  } catch (const toml::parse_error& e) {
    std::ostringstream msg;
    msg << "config " << file.string() << ": " << e.description() << " at line " << e.source().begin.line;
    return make_error(ErrorKind::invalid_input, msg.str());
  }
  const std::string where = "config " + file.string();
  auto s = read_file_tables(t, where, c);
  if (!s && s.error().message.rfind("unknown key", 0) != 0 && s.error().message.rfind(where, 0) != 0)
    return make_error(ErrorKind::invalid_input, where + ": " + s.error().message);
  return s;
}

std::variant<RunController, ExitWith> parse_command_line(int argc, char** argv) {
  CLI::App app{"provisioner-controller: bare-metal provisioning controller"};
  app.set_version_flag("--version", "provisioner-controller 0.1.0");
  std::string config_file, listen, data_dir, database_url, public_url, recipes_dir, tls_cert, tls_key, log_format, log_level,
      log_file, admin_hash, artifacts_listen, artifacts_public_url, maintenance_iso;
  std::int64_t max_body = 0, threads = 0;  // signed: a negative value is reported, not wrapped
  app.add_option("-c,--config", config_file, "TOML config file")->envname("PROVISIONER_CONFIG");
  auto* o_listen = app.add_option("--listen", listen, "host:port to listen on")->envname("PROVISIONER_LISTEN");
  auto* o_data = app.add_option("--data-dir", data_dir, "where the database and artifacts live")
                     ->envname("PROVISIONER_DATA_DIR");
  auto* o_database = app.add_option("--database-url", database_url,
                                    "postgresql://… to share one PostgreSQL database (default: SQLite in the data dir)")
                         ->envname("PROVISIONER_DATABASE_URL");
  auto* o_public = app.add_option("--public-url", public_url, "URL machines reach the controller at")
                       ->envname("PROVISIONER_PUBLIC_URL");
  auto* o_recipes = app.add_option("--recipes-dir", recipes_dir, "where recipe_ref names are looked up")
                        ->envname("PROVISIONER_RECIPES_DIR");
  auto* o_cert = app.add_option("--tls-cert", tls_cert, "PEM certificate chain: serve HTTPS")
                     ->envname("PROVISIONER_TLS_CERT");
  auto* o_key = app.add_option("--tls-key", tls_key, "PEM private key")->envname("PROVISIONER_TLS_KEY");
  auto* o_format = app.add_option("--log-format", log_format, "text or json (JSON lines)")
                       ->envname("PROVISIONER_LOG_FORMAT");
  auto* o_level = app.add_option("--log-level", log_level, "debug, info, warn or error")
                      ->envname("PROVISIONER_LOG_LEVEL");
  auto* o_logfile = app.add_option("--log-file", log_file, "log to this file instead of stderr")
                        ->envname("PROVISIONER_LOG_FILE");
  auto* o_body = app.add_option("--max-body-bytes", max_body, "largest request body accepted (413 above)")
                     ->envname("PROVISIONER_MAX_BODY_BYTES");
  auto* o_threads = app.add_option("--http-threads", threads, "HTTP worker threads")->envname("PROVISIONER_HTTP_THREADS");
  auto* o_admin = app.add_option("--admin-token-sha256", admin_hash, "SHA-256 (hex) of an extra admin token")
                      ->envname("PROVISIONER_ADMIN_TOKEN_SHA256");

  auto* o_alisten = app.add_option("--artifacts-listen", artifacts_listen, "IP:port the ISO server listens on")
                        ->envname("PROVISIONER_ARTIFACTS_LISTEN");
  auto* o_aurl = app.add_option("--artifacts-public-url", artifacts_public_url, "URL BMCs fetch ISOs from")
                     ->envname("PROVISIONER_ARTIFACTS_PUBLIC_URL");
  auto* o_maint = app.add_option("--maintenance-iso", maintenance_iso, "the maintenance OS ISO to boot servers into")
                      ->envname("PROVISIONER_MAINTENANCE_ISO");

  auto* hash = app.add_subcommand("hash-token", "print the SHA-256 to put in the config for a token read from stdin");
  auto* generate = app.add_subcommand("generate-token", "print a new random token");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    std::ostringstream out, err;
    int code = app.exit(e, out, err);
    return ExitWith{code, out.str() + err.str()};
  }
  if (*generate) return ExitWith{0, crypto::random_token(32) + "\n"};
  if (*hash) {
    std::string token;
    std::getline(std::cin, token);
    if (token.empty()) return ExitWith{2, "hash-token: no token on stdin\n"};
    return ExitWith{0, crypto::sha256_hex(token) + "\n"};
  }

  ControllerConfig c;
  if (!config_file.empty())
    if (auto s = apply_config_file(config_file, c); !s) return ExitWith{2, s.error().message + "\n"};
  // Flags and environment variables go through the same checks as the file's keys.
  auto failed = [](const Status& s) { return ExitWith{2, s.error().message + "\n"}; };
  if (*o_listen) {
    if (auto s = check_listen("listen (--listen)", listen, false); !s) return failed(s);
    c.listen = listen;
  }
  if (*o_data) c.data_dir = data_dir;
  if (*o_database) {
    if (auto s = check_database_url("database_url (--database-url)", database_url); !s) return failed(s);
    c.database_url = database_url;
  }
  if (*o_public) c.public_url = public_url;
  if (*o_recipes) c.recipes_dir = recipes_dir;
  if (*o_cert) c.tls_cert = tls_cert;
  if (*o_key) c.tls_key = tls_key;
  if (*o_format) {
    if (auto s = check_choice("log.format (--log-format)", log_format, {"text", "json"}); !s) return failed(s);
    c.log_format = log_format;
  }
  if (*o_level) {
    if (auto s = check_choice("log.level (--log-level)", log_level, {"debug", "info", "warn", "error"}); !s)
      return failed(s);
    c.log_level = log_level;
  }
  if (*o_logfile) c.log_file = log_file;
  if (*o_body) {
    if (auto s = check_int("max_body_bytes", max_body); !s) return failed(s);
    c.max_body_bytes = static_cast<std::size_t>(max_body);
  }
  if (*o_threads) {
    if (auto s = check_int("http_threads", threads); !s) return failed(s);
    c.http_threads = static_cast<int>(threads);
  }
  if (*o_alisten) {
    if (auto s = check_listen("artifacts.listen (--artifacts-listen)", artifacts_listen, true); !s) return failed(s);
    c.artifacts_listen = artifacts_listen;
  }
  if (*o_aurl) c.artifacts_public_url = artifacts_public_url;
  if (*o_maint) c.maintenance_iso = maintenance_iso;
  if (*o_admin) {
    if (!crypto::is_sha256_hex(admin_hash)) return ExitWith{2, "--admin-token-sha256 must be 64 lowercase hex digits\n"};
    c.tokens.push_back(ApiToken{"admin-from-flag", Role::admin, admin_hash});
  }
  if (c.public_url.empty()) c.public_url = std::string(c.tls_cert ? "https://" : "http://") + c.listen;
  while (!c.public_url.empty() && c.public_url.back() == '/') c.public_url.pop_back();
  if (c.recipes_dir.empty()) c.recipes_dir = c.data_dir / "recipes";
  if (c.artifacts_public_url.empty())
    c.artifacts_public_url = std::string(c.artifacts_tls_cert ? "https://" : "http://") + c.artifacts_listen;
  if (c.tls_key && !c.tls_cert) return ExitWith{2, "--tls-key needs --tls-cert\n"};
  if (c.tokens.empty())
    return ExitWith{2, "no API tokens configured: add [[tokens]] to the config or pass --admin-token-sha256 "
                       "(see README.md)\n"};
  return RunController{std::move(c)};
}

}  // namespace provisioner
