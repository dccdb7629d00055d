#include "controller/registry/registry_service.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <ctime>

#include <nlohmann/json.hpp>

#include "common/crypto.hpp"
#include "controller/artifacts/http_range.hpp"
#include "controller/artifacts/http_request.hpp"
#include "controller/logging/logger.hpp"
#include "controller/metrics/metrics.hpp"
#include "controller/registry/oci_route.hpp"
#include "controller/registry/recipe_catalog.hpp"
#include "controller/registry/registry_store.hpp"

namespace provisioner::registry {

using nlohmann::json;
using artifacts::iequals;

namespace {

constexpr std::string_view kTokenPrefix = "pvr1.";

std::string_view action_name(Action a) {
  switch (a) {
    case Action::pull: return "pull";
    case Action::push: return "push";
    case Action::del: return "delete";
    case Action::list: return "list";
  }
  return "";
}

std::optional<Action> parse_action(std::string_view s) {
  if (s == "pull") return Action::pull;
  if (s == "push") return Action::push;
  if (s == "delete") return Action::del;
  if (s == "list" || s == "*") return Action::list;
  return std::nullopt;
}

const char* reason_phrase(int status) {
  switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Payload Too Large";
    case 409: return "Conflict";
    case 416: return "Range Not Satisfiable";
    case 500: return "Internal Server Error";
    default: return "Unknown";
  }
}

std::string_view code_name(RegistryErrorCode c) {
  switch (c) {
    case RegistryErrorCode::blob_unknown: return "BLOB_UNKNOWN";
    case RegistryErrorCode::blob_upload_invalid: return "BLOB_UPLOAD_INVALID";
    case RegistryErrorCode::blob_upload_unknown: return "BLOB_UPLOAD_UNKNOWN";
    case RegistryErrorCode::digest_invalid: return "DIGEST_INVALID";
    case RegistryErrorCode::manifest_blob_unknown: return "MANIFEST_BLOB_UNKNOWN";
    case RegistryErrorCode::manifest_invalid: return "MANIFEST_INVALID";
    case RegistryErrorCode::manifest_unknown: return "MANIFEST_UNKNOWN";
    case RegistryErrorCode::manifest_too_large: return "SIZE_INVALID";
    case RegistryErrorCode::name_unknown: return "NAME_UNKNOWN";
    case RegistryErrorCode::size_invalid: return "SIZE_INVALID";
    case RegistryErrorCode::range_invalid: return "BLOB_UPLOAD_INVALID";
    case RegistryErrorCode::tag_exists: return "DENIED";
    case RegistryErrorCode::internal: return "UNKNOWN";
  }
  return "UNKNOWN";
}

int code_status(RegistryErrorCode c) {
  switch (c) {
    case RegistryErrorCode::blob_unknown:
    case RegistryErrorCode::blob_upload_unknown:
    case RegistryErrorCode::manifest_unknown:
    case RegistryErrorCode::name_unknown: return 404;
    case RegistryErrorCode::manifest_too_large:
    case RegistryErrorCode::size_invalid: return 413;
    case RegistryErrorCode::range_invalid: return 416;
    case RegistryErrorCode::tag_exists: return 409;
    case RegistryErrorCode::internal: return 500;
    default: return 400;
  }
}

// "a-b" or "bytes a-b" → [a, b].
std::optional<std::pair<std::uint64_t, std::uint64_t>> parse_content_range(std::string_view v) {
  if (v.starts_with("bytes ")) v.remove_prefix(6);
  auto dash = v.find('-');
  if (dash == std::string_view::npos || dash == 0 || dash + 1 == v.size()) return std::nullopt;
  auto num = [](std::string_view s) -> std::optional<std::uint64_t> {
    if (s.empty() || s.size() > 19) return std::nullopt;
    std::uint64_t n = 0;
    for (char c : s) {
      if (c < '0' || c > '9') return std::nullopt;
      n = n * 10 + static_cast<std::uint64_t>(c - '0');
    }
    return n;
  };
  auto a = num(v.substr(0, dash)), b = num(v.substr(dash + 1));
  if (!a || !b || *b < *a) return std::nullopt;
  return std::pair{*a, *b};
}

// One page of a sorted list (`_catalog`, tags/list): the entries after `last`, at most `n`,
// and the Link header to the next page when there is one.
struct Page {
  std::vector<std::string> entries;
  std::vector<std::pair<std::string, std::string>> headers;
};
Page paginate(const std::vector<std::string>& sorted, const std::optional<std::string>& n_param,
              const std::optional<std::string>& last, const std::string& path) {
  Page page;
  std::size_t n = SIZE_MAX;
  if (n_param) n = static_cast<std::size_t>(std::strtoull(n_param->c_str(), nullptr, 10));
  bool more = false;
  for (const auto& e : sorted) {
    if (last && e <= *last) continue;
    if (page.entries.size() == n) {
      more = true;
      break;
    }
    page.entries.push_back(e);
  }
  if (more && !page.entries.empty())
    page.headers.emplace_back("Link", "<" + path + "?n=" + std::to_string(n) + "&last=" + page.entries.back() +
                                          ">; rel=\"next\"");
  return page;
}

std::string upload_range(std::uint64_t offset) {
  return "0-" + std::to_string(offset == 0 ? 0 : offset - 1);
}

std::string route_template(Route::Kind kind) {
  using K = Route::Kind;
  switch (kind) {
    case K::base: return "/v2/";
    case K::token: return "/v2/token";
    case K::catalog: return "/v2/_catalog";
    case K::gc: return "/v2/_gc";
    case K::blob: return "/v2/{name}/blobs/{digest}";
    case K::upload_start: return "/v2/{name}/blobs/uploads/";
    case K::upload: return "/v2/{name}/blobs/uploads/{id}";
    case K::manifest: return "/v2/{name}/manifests/{reference}";
    case K::tags: return "/v2/{name}/tags/list";
    case K::referrers: return "/v2/{name}/referrers/{digest}";
    default: return "other";
  }
}

}  // namespace

bool role_may(Role role, Action action) {
  switch (action) {
    case Action::pull: return role == Role::admin || role == Role::ci || role == Role::operator_;
    case Action::push: return role == Role::admin || role == Role::ci;
    case Action::del: return role == Role::admin;
    case Action::list: return true;  // every role may list (the auditor only that)
  }
  return false;
}

// One request being served.
struct RegistryService::Call {
  const NativeRequest& req;
  NativeExchange& ex;
  Route route;
  std::vector<std::pair<std::string, std::string>> query;
  std::optional<Identity> who;
  bool credentials_bad = false;  // credentials were sent and are wrong
  bool head = false;
  int status = 0;  // of the answer sent

  // Sends a whole answer. `body` is not sent for HEAD (its length still is).
  bool send(int status, std::vector<std::pair<std::string, std::string>> headers, std::string_view body = {},
            std::string_view content_type = "application/json") {
    this->status = status;
    std::string out = "HTTP/1.1 " + std::to_string(status) + " " + reason_phrase(status) + "\r\n";
    out += "Server: provisioner\r\nDocker-Distribution-API-Version: registry/2.0\r\n";
    bool has_length = false;  // set by the caller for file bodies sent after the head
    for (const auto& [k, v] : headers) {
      out += k + ": " + v + "\r\n";
      if (iequals(k, "content-length")) has_length = true;
    }
    if (!body.empty() || has_length || status == 200) out += "Content-Type: " + std::string(content_type) + "\r\n";
    if (!has_length) out += "Content-Length: " + std::to_string(body.size()) + "\r\n";
    // Answered before its body was read (401, 413, 416...): the edge closes the connection.
    if (!ex.body_complete()) out += "Connection: close\r\n";
    out += "\r\n";
    if (!head) out += body;
    return ex.write(out);
  }

  bool error(int status, std::string_view code, std::string_view message,
             std::vector<std::pair<std::string, std::string>> headers = {}) {
    json body = {{"errors", json::array({{{"code", code}, {"message", message}}})}};
    return send(status, std::move(headers), body.dump());
  }
  bool error(const RegistryError& e, std::vector<std::pair<std::string, std::string>> headers = {}) {
    return error(code_status(e.code), code_name(e.code), e.message, std::move(headers));
  }
  std::optional<std::string> param(std::string_view name) const { return query_value(query, name); }
};

RegistryService::RegistryService(RegistryStore& store, const TokenAuthenticator& auth, const Logger& log,
                                 std::string token_key, RegistryOptions options,
                                 std::function<Result<artifacts::GcReport>()> run_gc)
    : store_(store), auth_(auth), log_(log), token_key_(std::move(token_key)), options_(std::move(options)),
      run_gc_(std::move(run_gc)) {}

void RegistryService::set_metrics(Metrics* metrics) {
  metrics_ = metrics;
  if (!metrics_) return;
  std::vector<std::string> templates;
  using K = Route::Kind;
  for (auto k : {K::base, K::token, K::catalog, K::gc, K::blob, K::upload_start, K::upload, K::manifest, K::tags,
                 K::referrers})
    templates.push_back(route_template(k));
  metrics_->declare_routes(templates);
}

bool RegistryService::handles(std::string_view path) const { return path == "/v2" || path.starts_with("/v2/"); }

std::string RegistryService::issue_token(const Identity& who, const std::vector<Grant>& grants,
                                         std::int64_t now_s) const {
  return issue_token_until(who, grants, now_s + options_.token_ttl.count());
}

std::string RegistryService::job_pull_token(const std::string& job_id, const std::string& repository,
                                            std::int64_t expires_s) const {
  return issue_token_until(Identity{"job:" + job_id, Role::operator_, true, false, 0, {}},
                           {Grant{"repository", repository, {Action::pull}}}, expires_s);
}

std::string RegistryService::issue_token_until(const Identity& who, const std::vector<Grant>& grants,
                                               std::int64_t expires_s) const {
  json access = json::array();
  for (const auto& g : grants) {
    json actions = json::array();
    for (auto a : g.actions) actions.push_back(action_name(a));
    access.push_back({{"type", g.type}, {"name", g.name}, {"actions", actions}});
  }
  json payload = {{"sub", who.name}, {"role", to_string(who.role)}, {"exp", expires_s}, {"access", access}};
  if (who.anonymous) payload["anonymous"] = true;
  auto encoded = crypto::to_hex(payload.dump());
  return std::string(kTokenPrefix) + encoded + "." + crypto::hmac_sha256_hex(token_key_, encoded);
}

std::optional<RegistryService::Identity> RegistryService::verify_token(std::string_view token, std::int64_t now_s) const {
  if (!token.starts_with(kTokenPrefix)) return std::nullopt;
  token.remove_prefix(kTokenPrefix.size());
  auto dot = token.find('.');
  if (dot == std::string_view::npos) return std::nullopt;
  auto encoded = token.substr(0, dot), mac = token.substr(dot + 1);
  if (!crypto::constant_time_equal(mac, crypto::hmac_sha256_hex(token_key_, encoded))) return std::nullopt;
  auto text = crypto::from_hex(encoded);
  if (!text) return std::nullopt;
  json p = json::parse(*text, nullptr, false);
  if (p.is_discarded() || !p.is_object() || !p.contains("exp") || !p["exp"].is_number_integer()) return std::nullopt;
  if (p["exp"].get<std::int64_t>() <= now_s) return std::nullopt;
  auto role = parse_role(p.value("role", ""));
  if (!role) return std::nullopt;
  Identity who{p.value("sub", ""), *role, true, p.value("anonymous", false), p["exp"].get<std::int64_t>(), {}};
  const json access = p.value("access", json::array());
  for (const auto& a : access) {
    if (!a.is_object()) continue;
    Grant g{a.value("type", ""), a.value("name", ""), {}};
    const json actions = a.value("actions", json::array());
    for (const auto& act : actions)
      if (act.is_string())
        if (auto parsed = parse_action(act.get<std::string>())) g.actions.push_back(*parsed);
    who.grants.push_back(std::move(g));
  }
  return who;
}

bool RegistryService::serve(const NativeRequest& request, NativeExchange& exchange) {
  Call call{request, exchange, parse_route(request.path()), parse_query(request.query()), {}, false,
            request.method == "HEAD"};
  // Credentials: a registry token, an API token as a bearer token, or Basic with an API token
  // as the password. Never logged.
  if (auto authz = request.header("authorization")) {
    auto now_s = static_cast<std::int64_t>(std::time(nullptr));
    if (authz->size() > 7 && iequals(authz->substr(0, 7), "bearer ")) {
      auto token = artifacts::trim_ows(authz->substr(7));
      if (token.starts_with(kTokenPrefix)) {
        call.who = verify_token(token, now_s);
      } else if (auto t = auth_.authenticate("Bearer " + std::string(token))) {
        call.who = Identity{t->name, t->role, false, false, 0, {}};
      }
    } else if (authz->size() > 6 && iequals(authz->substr(0, 6), "basic ")) {
      auto decoded = crypto::base64_decode(artifacts::trim_ows(authz->substr(6)));
      if (decoded) {
        auto colon = decoded->find(':');
        auto password = colon == std::string::npos ? *decoded : decoded->substr(colon + 1);
        if (password.starts_with(kTokenPrefix))  // a job's pull token, from its authfile
          call.who = verify_token(password, now_s);
        else if (auto t = auth_.authenticate("Bearer " + password))
          call.who = Identity{t->name, t->role, false, false, 0, {}};
      }
    }
    call.credentials_bad = !call.who;
  }
  auto started = std::chrono::steady_clock::now();
  bool keep = dispatch(call);
  if (metrics_)
    metrics_->count_request(std::string(request.method), route_template(call.route.kind), call.status,
                            std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
  return keep;
}

bool RegistryService::dispatch(Call& c) {
  const auto& m = c.req.method;
  using K = Route::Kind;

  auto realm = [&] {
    if (!options_.realm.empty()) return options_.realm;
    // The Host the client used, when it is a plain host[:port] (never reflect anything else).
    std::string host(c.req.header("host").value_or(""));
    bool plain = !host.empty() && host.size() <= 255 && std::all_of(host.begin(), host.end(), [](char ch) {
      return std::isalnum(static_cast<unsigned char>(ch)) || ch == '.' || ch == '-' || ch == ':' || ch == '[' || ch == ']';
    });
    if (!plain) host = "localhost";
    return std::string(c.req.tls ? "https://" : "http://") + host + "/v2/token";
  };
  auto challenge = [&](std::string_view scope) {
    std::string v = "Bearer realm=\"" + realm() + "\",service=\"" + options_.service + "\"";
    if (!scope.empty()) v += ",scope=\"" + std::string(scope) + "\"";
    return std::pair<std::string, std::string>{"WWW-Authenticate", v};
  };
  // May this request do `action` on `repo` ("" = the registry itself)? Answers 401/403 if not.
  auto allowed = [&](Action action, const std::string& repo, bool answer = true) {
    std::string scope = repo.empty() ? "registry:catalog:*"
                                     : "repository:" + repo + ":" +
                                           (action == Action::push ? "pull,push" : std::string(action_name(action)));
    if (!c.who) {
      if (options_.anonymous_pull && !c.credentials_bad && action == Action::pull) return true;
      if (answer)
        c.error(401, "UNAUTHORIZED", c.credentials_bad ? "invalid credentials" : "authentication required",
                {challenge(scope)});
      return false;
    }
    if (c.who->anonymous ? !(options_.anonymous_pull && action == Action::pull) : !role_may(c.who->role, action)) {
      if (answer) c.error(403, "DENIED", "the token's role may not " + std::string(action_name(action)));
      return false;
    }
    if (!c.who->scoped) return true;
    for (const auto& g : c.who->grants) {
      bool target = repo.empty() ? g.type == "registry" && g.name == "catalog" : g.type == "repository" && g.name == repo;
      if (target && std::find(g.actions.begin(), g.actions.end(), action) != g.actions.end()) return true;
    }
    // The role allows it but this token was not issued for it: the client gets a new one.
    if (answer) c.error(401, "UNAUTHORIZED", "the token does not grant this", {challenge(scope)});
    return false;
  };
  auto method_not_allowed = [&] { return c.error(405, "UNSUPPORTED", "method not allowed here"); };
  auto read_fn = [&c](char* buf, std::size_t cap) { return c.ex.read_body(buf, cap); };
  auto has_body = [&] {
    return c.req.framing.kind == Framing::kChunked || (c.req.framing.kind == Framing::kLength && c.req.framing.length > 0);
  };
  const auto& name = c.route.name;
  auto location = [&](std::string_view tail) { return std::pair<std::string, std::string>{"Location", "/v2/" + name + std::string(tail)}; };

  switch (c.route.kind) {
    case K::base:
      if (m != "GET" && m != "HEAD") return method_not_allowed();
      if (!c.who && !(options_.anonymous_pull && !c.credentials_bad)) {
        c.error(401, "UNAUTHORIZED", c.credentials_bad ? "invalid credentials" : "authentication required",
                {challenge("")});
        return true;
      }
      return c.send(200, {}, "{}");

    case K::token: {
      if (m != "GET") return method_not_allowed();
      if (c.credentials_bad || (!c.who && !options_.anonymous_pull)) {
        c.error(401, "UNAUTHORIZED", c.credentials_bad ? "invalid credentials" : "authentication required",
                {{"WWW-Authenticate", "Basic realm=\"" + options_.service + "\""}});
        return true;
      }
      Identity who = c.who.value_or(Identity{"anonymous", Role::auditor, true, true, 0, {}});
      std::vector<Grant> grants;
      for (const auto& [k, v] : c.query) {
        if (k != "scope") continue;
        // Several scopes may share one parameter, separated by spaces.
        std::size_t start = 0;
        while (start < v.size()) {
          auto sp = v.find(' ', start);
          auto scope = v.substr(start, sp == std::string::npos ? std::string::npos : sp - start);
          start = sp == std::string::npos ? v.size() : sp + 1;
          auto first = scope.find(':'), last = scope.rfind(':');
          if (first == std::string::npos || first == last) continue;
          Grant g{scope.substr(0, first), scope.substr(first + 1, last - first - 1), {}};
          if (g.type != "repository" && !(g.type == "registry" && g.name == "catalog")) continue;
          auto actions = scope.substr(last + 1);
          std::size_t a = 0;
          while (a <= actions.size()) {
            auto comma = actions.find(',', a);
            auto act = parse_action(actions.substr(a, comma == std::string::npos ? std::string::npos : comma - a));
            a = comma == std::string::npos ? actions.size() + 1 : comma + 1;
            if (!act) continue;
            bool ok = c.who ? role_may(who.role, *act) : *act == Action::pull;
            if (ok && std::find(g.actions.begin(), g.actions.end(), *act) == g.actions.end()) g.actions.push_back(*act);
          }
          if (c.who && g.type == "repository" && role_may(who.role, Action::list)) g.actions.push_back(Action::list);
          if (!g.actions.empty()) grants.push_back(std::move(g));
        }
      }
      auto now_s = static_cast<std::int64_t>(std::time(nullptr));
      // A token issued for a registry token carries only what that one granted.
      if (who.scoped && c.who) {
        std::erase_if(grants, [&](Grant& g) {
          std::erase_if(g.actions, [&](Action a) {
            for (const auto& held : c.who->grants)
              if (held.type == g.type && held.name == g.name &&
                  std::find(held.actions.begin(), held.actions.end(), a) != held.actions.end())
                return false;
            return true;
          });
          return g.actions.empty();
        });
      }
      // A token issued from a registry token never outlives it (no renewing a job's token
      // forever); one from an API token lives the configured TTL.
      auto expires = now_s + options_.token_ttl.count();
      if (c.who && c.who->scoped) expires = std::min(expires, c.who->expires_s);
      auto token = issue_token_until(who, grants, expires);
      char issued[32];
      std::time_t t = now_s;
      std::tm tm{};
      gmtime_r(&t, &tm);
      std::strftime(issued, sizeof issued, "%Y-%m-%dT%H:%M:%SZ", &tm);
      json body = {{"token", token}, {"access_token", token}, {"expires_in", expires - now_s},
                   {"issued_at", issued}};
      return c.send(200, {{"Cache-Control", "no-store"}}, body.dump());
    }

    case K::catalog: {
      if (m != "GET") return method_not_allowed();
      if (!allowed(Action::list, "")) return true;
      auto page = paginate(store_.repositories(), c.param("n"), c.param("last"), "/v2/_catalog");
      return c.send(200, std::move(page.headers), json{{"repositories", page.entries}}.dump());
    }

    case K::gc: {
      if (m != "POST") return method_not_allowed();
      if (!c.who) {
        c.error(401, "UNAUTHORIZED", c.credentials_bad ? "invalid credentials" : "authentication required",
                {challenge("")});
        return true;
      }
      // An admin's API token only: a registry token is scoped to repositories, never to GC.
      if (c.who->scoped || c.who->role != Role::admin)
        return c.error(403, "DENIED", "garbage collection needs an admin API token");
      if (!run_gc_) return c.error(405, "UNSUPPORTED", "garbage collection is not available");
      auto report = run_gc_();
      if (!report) return c.error(500, "UNKNOWN", report.error().message);
      log_.info("registry garbage collected", {{"removed", std::to_string(report->removed)},
                                               {"bytes_freed", std::to_string(report->bytes_freed)}});
      return c.send(200, {}, json{{"removed", report->removed}, {"bytes_freed", report->bytes_freed},
                                  {"kept", report->kept}}.dump());
    }

    case K::bad_name: return c.error(400, "NAME_INVALID", "invalid repository name");
    case K::not_found: return c.error(404, "NOT_FOUND", "no such registry endpoint");

    case K::blob: {
      auto digest = parse_digest(c.route.reference);
      if (m == "GET" || m == "HEAD") {
        if (!allowed(Action::pull, name)) return true;
        if (!digest) return c.error(400, "DIGEST_INVALID", "not a valid digest");
        auto info = store_.blob(name, *digest);
        if (!info) return c.error(404, "BLOB_UNKNOWN", "blob unknown to the repository");
        int fd = ::open(info->path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) return c.error(404, "BLOB_UNKNOWN", "blob unknown to the repository");
        struct Close {
          int fd;
          ~Close() { ::close(fd); }
        } close_fd{fd};
        struct stat st{};
        ::fstat(fd, &st);
        auto size = static_cast<std::uint64_t>(st.st_size);
        std::vector<std::pair<std::string, std::string>> h = {
            {"Docker-Content-Digest", digest->str()}, {"ETag", "\"" + digest->str() + "\""}, {"Accept-Ranges", "bytes"}};
        auto range = artifacts::evaluate_range(c.req.header("range"), size);
        if (auto ifr = c.req.header("if-range"); ifr && !artifacts::etag_list_matches(*ifr, "\"" + digest->str() + "\""))
          range = artifacts::RangeResolution{};
        using O = artifacts::RangeResolution::Outcome;
        if (range.outcome == O::unsatisfiable) {
          h.emplace_back("Content-Range", "bytes */" + std::to_string(size));
          return c.error(416, "BLOB_UNKNOWN", "range not satisfiable", std::move(h));
        }
        if (range.outcome == O::full) {
          h.emplace_back("Content-Length", std::to_string(size));
          if (!c.send(200, std::move(h), {}, "application/octet-stream")) return false;
          return c.head || c.ex.write_file(fd, 0, size);
        }
        if (range.ranges.size() == 1) {
          const auto& r = range.ranges.front();
          h.emplace_back("Content-Range", "bytes " + std::to_string(r.first) + "-" + std::to_string(r.last) + "/" +
                                              std::to_string(size));
          h.emplace_back("Content-Length", std::to_string(r.length()));
          if (!c.send(206, std::move(h), {}, "application/octet-stream")) return false;
          return c.head || c.ex.write_file(fd, r.first, r.length());
        }
        // multipart/byteranges with its exact length computed up front.
        std::string boundary = "provisioner-" + digest->hex.substr(0, 16);
        std::vector<std::string> parts;
        std::uint64_t total = 0;
        for (const auto& r : range.ranges) {
          parts.push_back("\r\n--" + boundary + "\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes " +
                          std::to_string(r.first) + "-" + std::to_string(r.last) + "/" + std::to_string(size) +
                          "\r\n\r\n");
          total += parts.back().size() + r.length();
        }
        std::string closing = "\r\n--" + boundary + "--\r\n";
        total += closing.size();
        h.emplace_back("Content-Length", std::to_string(total));
        if (!c.send(206, std::move(h), {}, "multipart/byteranges; boundary=" + boundary)) return false;
        if (c.head) return true;
        for (std::size_t i = 0; i < parts.size(); ++i)
          if (!c.ex.write(parts[i]) || !c.ex.write_file(fd, range.ranges[i].first, range.ranges[i].length()))
            return false;
        return c.ex.write(closing);
      }
      if (m == "DELETE") {
        if (!allowed(Action::del, name)) return true;
        if (!digest) return c.error(400, "DIGEST_INVALID", "not a valid digest");
        if (!store_.unlink_blob(name, *digest)) return c.error(404, "BLOB_UNKNOWN", "blob unknown to the repository");
        return c.send(202, {});
      }
      return method_not_allowed();
    }

    case K::upload_start: {
      if (m != "POST") return method_not_allowed();
      if (!allowed(Action::push, name)) return true;
      if (auto mount = c.param("mount")) {
        auto digest = parse_digest(*mount);
        auto from = c.param("from");
        if (!digest) return c.error(400, "DIGEST_INVALID", "mount: not a valid digest");
        // Mounting reads the source repository: only with pull rights there. Otherwise, as
        // the spec says, an ordinary upload session starts.
        if (from && valid_repository_name(*from) && allowed(Action::pull, *from, false) &&
            store_.mount(name, *from, *digest))
          return c.send(201, {location("/blobs/" + digest->str()), {"Docker-Content-Digest", digest->str()}});
      } else if (auto d = c.param("digest")) {
        auto digest = parse_digest(*d);
        if (!digest) return c.error(400, "DIGEST_INVALID", "digest: not a valid digest");
        auto put = store_.put_blob(name, *digest, read_fn, options_.max_blob_bytes);
        if (auto* e = std::get_if<RegistryError>(&put)) return c.error(*e);
        log_.debug("registry blob pushed", {{"repository", name}, {"digest", digest->str()}});
        return c.send(201, {location("/blobs/" + digest->str()), {"Docker-Content-Digest", digest->str()}});
      }
      auto id = store_.start_upload(name);
      return c.send(202, {location("/blobs/uploads/" + id), {"Range", "0-0"}, {"Docker-Upload-UUID", id}});
    }

    case K::upload: {
      const auto& id = c.route.reference;
      if (!allowed(m == "GET" ? Action::pull : Action::push, name)) return true;
      auto state = store_.upload(name, id);
      if (!state) return c.error(404, "BLOB_UPLOAD_UNKNOWN", "no such upload");
      auto status_headers = [&](std::uint64_t offset) {
        return std::vector<std::pair<std::string, std::string>>{
            location("/blobs/uploads/" + id), {"Range", upload_range(offset)}, {"Docker-Upload-UUID", id}};
      };
      if (m == "GET") return c.send(204, status_headers(state->offset));
      if (m == "DELETE") {
        if (!store_.cancel_upload(name, id)) return c.error(404, "BLOB_UPLOAD_UNKNOWN", "no such upload");
        return c.send(204, {});
      }
      if (m != "PATCH" && m != "PUT") return method_not_allowed();
      // A chunk: Content-Range says where it starts (and ends); it must start where the
      // upload stands (416 otherwise, with the Range the client resumes from).
      std::optional<std::uint64_t> at;
      if (auto cr = c.req.header("content-range")) {
        auto parsed = parse_content_range(*cr);
        if (!parsed) return c.error(400, "BLOB_UPLOAD_INVALID", "Content-Range: malformed");
        if (c.req.framing.kind == Framing::kLength && c.req.framing.length != parsed->second - parsed->first + 1)
          return c.error(400, "BLOB_UPLOAD_INVALID", "Content-Range: does not match Content-Length");
        at = parsed->first;
        if (*at != state->offset) return c.error(416, "BLOB_UPLOAD_INVALID", "chunk out of order", status_headers(state->offset));
      }
      std::optional<Digest> digest;
      if (m == "PUT") {
        auto d = c.param("digest");
        digest = d ? parse_digest(*d) : std::nullopt;
        if (!digest) return c.error(400, "DIGEST_INVALID", "digest: a valid digest is required to finish an upload");
      }
      std::uint64_t offset = state->offset;
      if (m == "PATCH" || has_body()) {
        auto appended = store_.append_upload(name, id, at.value_or(state->offset), read_fn, options_.max_blob_bytes);
        if (auto* e = std::get_if<RegistryError>(&appended)) {
          auto now = store_.upload(name, id);
          return c.error(*e, now ? status_headers(now->offset) : std::vector<std::pair<std::string, std::string>>{});
        }
        offset = std::get<std::uint64_t>(appended);
      }
      if (m == "PATCH") return c.send(202, status_headers(offset));
      auto done = store_.finish_upload(name, id, *digest);
      if (auto* e = std::get_if<RegistryError>(&done)) return c.error(*e);
      log_.debug("registry blob pushed", {{"repository", name}, {"digest", digest->str()}});
      return c.send(201, {location("/blobs/" + digest->str()), {"Docker-Content-Digest", digest->str()}});
    }

    case K::manifest: {
      const auto& ref = c.route.reference;
      if (m == "GET" || m == "HEAD") {
        if (!allowed(Action::pull, name)) return true;
        auto got = store_.get_manifest(name, ref);
        if (auto* e = std::get_if<RegistryError>(&got)) return c.error(*e);
        auto& man = std::get<StoredManifest>(got);
        return c.send(200, {{"Docker-Content-Digest", man.digest.str()}, {"ETag", "\"" + man.digest.str() + "\""}},
                      man.bytes, man.media_type);
      }
      if (m == "PUT") {
        if (!allowed(Action::push, name)) return true;
        // Read whole, bounded: refused while streaming past the limit.
        std::string bytes;
        char buf[64 * 1024];
        for (;;) {
          auto n = c.ex.read_body(buf, sizeof buf);
          if (!n) return false;  // the client went away mid-body
          if (*n == 0) break;
          if (bytes.size() + *n > store_.max_manifest_bytes())
            return c.error(413, "SIZE_INVALID", "the manifest exceeds " + std::to_string(store_.max_manifest_bytes()) + " bytes");
          bytes.append(buf, *n);
        }
        auto ct = c.req.header("content-type");
        std::optional<std::string_view> media;
        if (ct) media = artifacts::trim_ows(ct->substr(0, ct->find(';')));
        bool recipe = recipes_ && name.starts_with(kRecipeRepoPrefix);
        if (recipe)
          if (auto refused = recipes_->check_push(name, ref, bytes)) return c.error(*refused);
        // A recipe version is immutable: its tag never moves once set.
        auto put = store_.put_manifest(name, ref, bytes, media, recipe);
        if (auto* e = std::get_if<RegistryError>(&put)) return c.error(*e);
        if (recipe) recipes_->pushed(name, ref, bytes);
        auto& done = std::get<ManifestPut>(put);
        log_.info("registry manifest pushed", {{"repository", name}, {"reference", ref}, {"digest", done.digest.str()},
                                               {"by", c.who ? c.who->name : ""}});
        std::vector<std::pair<std::string, std::string>> h = {location("/manifests/" + done.digest.str()),
                                                              {"Docker-Content-Digest", done.digest.str()}};
        if (done.subject) h.emplace_back("OCI-Subject", done.subject->str());
        return c.send(201, std::move(h));
      }
      if (m == "DELETE") {
        if (!allowed(Action::del, name)) return true;
        auto del = store_.delete_manifest(name, ref);
        if (auto* e = std::get_if<RegistryError>(&del)) return c.error(*e);
        log_.info("registry manifest deleted", {{"repository", name}, {"reference", ref}, {"by", c.who ? c.who->name : ""}});
        return c.send(202, {});
      }
      return method_not_allowed();
    }

    case K::tags: {
      if (m != "GET") return method_not_allowed();
      // Listing needs `list` (every role) or `pull` (anonymous pull).
      if (!allowed(Action::list, name, false) && !allowed(Action::pull, name)) return true;
      auto all = store_.tags(name);
      if (!all) return c.error(404, "NAME_UNKNOWN", "no such repository");
      auto page = paginate(*all, c.param("n"), c.param("last"), "/v2/" + name + "/tags/list");
      return c.send(200, std::move(page.headers), json{{"name", name}, {"tags", page.entries}}.dump());
    }

    case K::referrers: {
      if (m != "GET") return method_not_allowed();
      if (!allowed(Action::pull, name)) return true;
      auto digest = parse_digest(c.route.reference);
      if (!digest) return c.error(400, "DIGEST_INVALID", "not a valid digest");
      auto filter = c.param("artifactType");
      std::vector<std::pair<std::string, std::string>> headers;
      if (filter) headers.emplace_back("OCI-Filters-Applied", "artifactType");
      return c.send(200, std::move(headers), store_.referrers(name, *digest, filter).dump(), "application/vnd.oci.image.index.v1+json");
    }
  }
  return c.error(404, "NOT_FOUND", "no such registry endpoint");
}

}  // namespace provisioner::registry
