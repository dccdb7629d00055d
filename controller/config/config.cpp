#include "controller/config/config.hpp"

#include <cstdlib>
#include <iostream>
#include <set>
#include <sstream>

#include <CLI/CLI.hpp>
#include <toml++/toml.h>

#include "common/crypto.hpp"

namespace provisioner {

namespace {

Status unknown_keys(const toml::table& table, const std::set<std::string>& known, const std::string& where) {
  for (const auto& [key, value] : table)
    if (!known.count(std::string(key.str())))
      return make_error(ErrorKind::invalid_input, "unknown key '" + std::string(key.str()) + "' in " + where);
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
  if (auto s = unknown_keys(t, {"listen", "data_dir", "public_url", "recipes_dir", "max_body_bytes", "http_threads",
                                "log", "tls", "webhook", "tokens", "artifacts", "reconciler", "redfish"},
                            where);
      !s)
    return s;
  if (auto v = t["listen"].value<std::string>()) c.listen = *v;
  if (auto v = t["data_dir"].value<std::string>()) c.data_dir = *v;
  if (auto v = t["public_url"].value<std::string>()) c.public_url = *v;
  if (auto v = t["recipes_dir"].value<std::string>()) c.recipes_dir = *v;
  if (auto v = t["max_body_bytes"].value<std::int64_t>()) c.max_body_bytes = static_cast<std::size_t>(*v);
  if (auto v = t["http_threads"].value<std::int64_t>()) c.http_threads = static_cast<int>(*v);
  if (auto* log = t["log"].as_table()) {
    if (auto s = unknown_keys(*log, {"format", "level", "file"}, where + " [log]"); !s) return s;
    if (auto v = (*log)["format"].value<std::string>()) c.log_format = *v;
    if (auto v = (*log)["level"].value<std::string>()) c.log_level = *v;
    if (auto v = (*log)["file"].value<std::string>()) c.log_file = *v;
  }
  if (auto* tls = t["tls"].as_table()) {
    if (auto s = unknown_keys(*tls, {"cert", "key"}, where + " [tls]"); !s) return s;
    if (auto v = (*tls)["cert"].value<std::string>()) c.tls_cert = *v;
    if (auto v = (*tls)["key"].value<std::string>()) c.tls_key = *v;
  }
  if (auto* hook = t["webhook"].as_table()) {
    if (auto s = unknown_keys(*hook, {"max_skew_seconds"}, where + " [webhook]"); !s) return s;
    if (auto v = (*hook)["max_skew_seconds"].value<std::int64_t>()) c.webhook_max_skew_seconds = static_cast<int>(*v);
  }
  if (auto* a = t["artifacts"].as_table()) {
    if (auto s = unknown_keys(*a, {"listen", "public_url", "threads", "maintenance_iso", "retention_seconds",
                                   "max_upload_bytes", "tls_cert", "tls_key", "tls_min_version",
                                   "max_connections", "max_connections_per_client", "head_timeout_ms",
                                   "keepalive_timeout_ms"},
                              where + " [artifacts]");
        !s)
      return s;
    // The artifact server's limits against hostile clients: integers in range, or an error
    // naming the key (a limit silently ignored or turned off is what they exploit).
    const struct {
      const char* key;
      std::int64_t min, max;
      std::int64_t* into;
    } limits[] = {{"max_connections", 0, 1 << 20, &c.artifacts_max_connections},
                  {"max_connections_per_client", 0, 1 << 20, &c.artifacts_max_connections_per_client},
                  {"head_timeout_ms", 100, 600'000, &c.artifacts_head_timeout_ms},
                  {"keepalive_timeout_ms", 100, 3'600'000, &c.artifacts_keepalive_timeout_ms}};
    for (const auto& l : limits) {
      const toml::node* n = a->get(l.key);
      if (!n) continue;
      auto v = n->value_exact<std::int64_t>();
      if (!v || *v < l.min || *v > l.max)
        return make_error(ErrorKind::invalid_input, where + " [artifacts] " + l.key + ": must be an integer from " +
                                                        std::to_string(l.min) + " to " + std::to_string(l.max));
      *l.into = *v;
    }
    if (auto v = (*a)["listen"].value<std::string>()) c.artifacts_listen = *v;
    if (auto v = (*a)["public_url"].value<std::string>()) c.artifacts_public_url = *v;
    if (auto v = (*a)["threads"].value<std::int64_t>()) c.artifacts_threads = static_cast<int>(*v);
    if (auto v = (*a)["maintenance_iso"].value<std::string>()) c.maintenance_iso = *v;
    if (auto v = (*a)["retention_seconds"].value<std::int64_t>()) c.artifact_retention_seconds = *v;
    if (auto v = (*a)["max_upload_bytes"].value<std::int64_t>()) c.max_upload_bytes = static_cast<std::uint64_t>(*v);
    if (auto v = (*a)["tls_cert"].value<std::string>()) c.artifacts_tls_cert = *v;
    if (auto v = (*a)["tls_key"].value<std::string>()) c.artifacts_tls_key = *v;
    if (auto v = (*a)["tls_min_version"].value<std::string>()) c.artifacts_tls_min_version = *v;
  }
  if (auto* r = t["reconciler"].as_table()) {
    if (auto s = unknown_keys(*r, {"tick_ms", "boot_timeout_seconds", "install_timeout_seconds", "gc_interval_seconds",
                                   "workers", "idle_recheck_ms"},
                              where + " [reconciler]");
        !s)
      return s;
    if (auto v = (*r)["tick_ms"].value<std::int64_t>()) c.reconcile_tick_ms = static_cast<int>(*v);
    if (auto v = (*r)["boot_timeout_seconds"].value<std::int64_t>()) c.boot_timeout_seconds = static_cast<int>(*v);
    if (auto v = (*r)["install_timeout_seconds"].value<std::int64_t>()) c.install_timeout_seconds = static_cast<int>(*v);
    if (auto v = (*r)["gc_interval_seconds"].value<std::int64_t>()) c.gc_interval_seconds = static_cast<int>(*v);
    if (auto v = (*r)["workers"].value<std::int64_t>()) c.reconcile_workers = static_cast<int>(*v);
    if (auto v = (*r)["idle_recheck_ms"].value<std::int64_t>()) c.idle_recheck_ms = static_cast<int>(*v);
  }
  if (auto* rf = t["redfish"].as_table()) {
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
    if (auto s = unknown_keys(*rf, known, where + " [redfish]"); !s) return s;
    for (const auto& [k, p] : ms)
      if (auto v = (*rf)[k].value<std::int64_t>()) *p = *v;
    for (const auto& [k, p] : counts)
      if (auto v = (*rf)[k].value<std::int64_t>()) *p = static_cast<int>(*v);
    if (auto v = (*rf)["prefer_graceful_restart"].value<bool>()) o.prefer_graceful_restart = *v;
  }
  if (auto* tokens = t["tokens"].as_array()) {
    for (std::size_t i = 0; i < tokens->size(); ++i) {
      auto* entry = (*tokens)[i].as_table();
      std::string at = where + " tokens[" + std::to_string(i) + "]";
      if (!entry) return make_error(ErrorKind::invalid_input, at + " is not a table");
      if (auto s = unknown_keys(*entry, {"name", "role", "sha256"}, at); !s) return s;
      ApiToken token;
      token.name = (*entry)["name"].value_or(std::string("token-") + std::to_string(i));
      auto role = parse_role((*entry)["role"].value_or(std::string()));
      if (!role) return make_error(ErrorKind::invalid_input, at + ": role must be admin, operator, auditor or ci");
      token.role = *role;
      token.sha256_hex = (*entry)["sha256"].value_or(std::string());
      if (!crypto::is_sha256_hex(token.sha256_hex))
        return make_error(ErrorKind::invalid_input,
                          at + ": sha256 must be the 64-hex SHA-256 of the token (provisioner-controller hash-token)");
      c.tokens.push_back(std::move(token));
    }
  }
  return Ok{};
}

std::variant<RunController, ExitWith> parse_command_line(int argc, char** argv) {
  CLI::App app{"provisioner-controller: bare-metal provisioning controller"};
  app.set_version_flag("--version", "provisioner-controller 0.1.0");
  std::string config_file, listen, data_dir, public_url, recipes_dir, tls_cert, tls_key, log_format, log_level,
      log_file, admin_hash, artifacts_listen, artifacts_public_url, maintenance_iso;
  std::size_t max_body = 0;
  int threads = 0;
  app.add_option("-c,--config", config_file, "TOML config file")->envname("PROVISIONER_CONFIG");
  auto* o_listen = app.add_option("--listen", listen, "host:port to listen on")->envname("PROVISIONER_LISTEN");
  auto* o_data = app.add_option("--data-dir", data_dir, "where the database and artifacts live")
                     ->envname("PROVISIONER_DATA_DIR");
  auto* o_public = app.add_option("--public-url", public_url, "URL machines reach the controller at")
                       ->envname("PROVISIONER_PUBLIC_URL");
  auto* o_recipes = app.add_option("--recipes-dir", recipes_dir, "where recipe_ref names are looked up")
                        ->envname("PROVISIONER_RECIPES_DIR");
  auto* o_cert = app.add_option("--tls-cert", tls_cert, "PEM certificate chain: serve HTTPS")
                     ->envname("PROVISIONER_TLS_CERT");
  auto* o_key = app.add_option("--tls-key", tls_key, "PEM private key")->envname("PROVISIONER_TLS_KEY");
  auto* o_format = app.add_option("--log-format", log_format, "text or json (JSON lines)")
                       ->envname("PROVISIONER_LOG_FORMAT")
                       ->check(CLI::IsMember({"text", "json"}));
  auto* o_level = app.add_option("--log-level", log_level, "debug, info, warn or error")
                      ->envname("PROVISIONER_LOG_LEVEL")
                      ->check(CLI::IsMember({"debug", "info", "warn", "error"}));
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
  if (*o_listen) c.listen = listen;
  if (*o_data) c.data_dir = data_dir;
  if (*o_public) c.public_url = public_url;
  if (*o_recipes) c.recipes_dir = recipes_dir;
  if (*o_cert) c.tls_cert = tls_cert;
  if (*o_key) c.tls_key = tls_key;
  if (*o_format) c.log_format = log_format;
  if (*o_level) c.log_level = log_level;
  if (*o_logfile) c.log_file = log_file;
  if (*o_body) c.max_body_bytes = max_body;
  if (*o_threads) c.http_threads = threads;
  if (*o_alisten) c.artifacts_listen = artifacts_listen;
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
  if (c.reconcile_tick_ms < 10) return ExitWith{2, "reconciler tick_ms must be at least 10\n"};
  if (c.tls_key && !c.tls_cert) return ExitWith{2, "--tls-key needs --tls-cert\n"};
  if (c.max_body_bytes < 1024) return ExitWith{2, "max_body_bytes must be at least 1024\n"};
  if (c.http_threads < 1 || c.http_threads > 256) return ExitWith{2, "http_threads must be 1..256\n"};
  if (c.tokens.empty())
    return ExitWith{2, "no API tokens configured: add [[tokens]] to the config or pass --admin-token-sha256 "
                       "(see README.md)\n"};
  return RunController{std::move(c)};
}

}  // namespace provisioner
