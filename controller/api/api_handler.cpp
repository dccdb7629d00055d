#include "controller/api/api_handler.hpp"

#include <nlohmann/json.hpp>

#include "common/result.hpp"
#include "common/webhook.hpp"
#include "common/atomic_file.hpp"
#include "controller/artifacts/artifact_store.hpp"
#include "controller/artifacts/upload_service.hpp"
#include "controller/fleets/fleet_service.hpp"
#include "controller/jobs/job_service.hpp"
#include "controller/jobs/named_recipes.hpp"
#include "common/redact.hpp"
#include "controller/logging/logger.hpp"
#include "controller/metrics/metrics.hpp"
#include "controller/nodes/node_service.hpp"
#include "controller/pxe/boot_service.hpp"
#include "controller/servers/server_service.hpp"
#include "controller/store/store.hpp"

namespace provisioner {

namespace embedded {
extern const std::string_view openapi_document;
extern const std::string_view dashboard_html;
extern const std::string_view dashboard_js;
extern const std::string_view dashboard_css;
}

const std::vector<RouteSpec>& api_routes() {
  static const std::vector<RouteSpec> routes = {
      {"GET", "/healthz", Permission::open},
      // The dashboard's static files hold no data: it logs in with a token and reads the API.
      {"GET", "/", Permission::open},
      {"GET", "/ui/app.js", Permission::open},
      {"GET", "/ui/app.css", Permission::open},
      {"GET", "/metrics", Permission::read},
      {"GET", "/api/v1/openapi.json", Permission::open},
      {"GET", "/api/v1/jobs", Permission::read},
      {"POST", "/api/v1/jobs", Permission::submit},
      {"GET", "/api/v1/jobs/{id}", Permission::read},
      {"POST", "/api/v1/jobs/{id}/cancel", Permission::operate},
      {"POST", "/api/v1/status-webhook/{serial}", Permission::webhook},
      {"GET", "/api/v1/fleets", Permission::read},
      {"POST", "/api/v1/fleets", Permission::submit},
      {"GET", "/api/v1/fleets/{id}", Permission::read},
      {"POST", "/api/v1/fleets/{id}/cancel", Permission::operate},
      {"POST", "/api/v1/fleets/{id}/pause", Permission::operate},
      {"POST", "/api/v1/fleets/{id}/resume", Permission::operate},
      // Served by the edge itself, streaming (api/events_route.cpp); listed for the document.
      {"GET", "/api/v1/events", Permission::read},
      {"GET", "/api/v1/servers", Permission::read},
      {"POST", "/api/v1/servers", Permission::operate},
      {"GET", "/api/v1/servers/{id}", Permission::read},
      {"PATCH", "/api/v1/servers/{id}", Permission::operate},
      {"DELETE", "/api/v1/servers/{id}", Permission::operate},
      {"POST", "/api/v1/artifacts", Permission::submit, true},
      {"GET", "/api/v1/artifacts/{sha256}", Permission::read},
      {"GET", "/api/v1/recipes/{name}", Permission::read},
      {"GET", "/api/v1/recipes/{name}/{version}", Permission::read},
      {"PUT", "/api/v1/recipes/{name}/{version}", Permission::submit},
      {"DELETE", "/api/v1/recipes/{name}/{version}", Permission::operate},
      // Machines in network media mode have no token: see JobService::network_task_for_serial.
      {"GET", "/api/v1/tasks/by-serial/{serial}", Permission::open},
      {"GET", "/api/v1/nodes", Permission::read},
      {"POST", "/api/v1/nodes", Permission::operate},
      {"GET", "/api/v1/nodes/{id}", Permission::read},
      {"PATCH", "/api/v1/nodes/{id}", Permission::operate},
      {"DELETE", "/api/v1/nodes/{id}", Permission::operate},
      {"PATCH", "/api/v1/nodes/{id}/state", Permission::operate},
      // An inspection boot's report: authenticated by the inspection's own token (NodeService).
      {"POST", "/api/v1/nodes/{id}/inventory", Permission::open},
      // Firmware has no token: these answer only the asking machine's own boot script.
      {"GET", "/boot/boot.ipxe", Permission::open},
      {"GET", "/boot/ipxe", Permission::open},
  };
  return routes;
}

namespace {

std::vector<std::string> split_path(const std::string& path) {
  std::vector<std::string> parts;
  std::size_t start = 1;
  while (start <= path.size()) {
    auto end = path.find('/', start);
    if (end == std::string::npos) end = path.size();
    parts.push_back(path.substr(start, end - start));
    start = end + 1;
  }
  return parts;
}

// Matches `path` against a pattern, collecting the {placeholders}.
bool match(const std::string& pattern, const std::vector<std::string>& path, std::vector<std::string>& params) {
  auto want = split_path(pattern);
  if (want.size() != path.size()) return false;
  params.clear();
  for (std::size_t i = 0; i < want.size(); ++i) {
    if (want[i].size() > 2 && want[i].front() == '{') {
      if (path[i].empty()) return false;
      params.push_back(path[i]);
    } else if (want[i] != path[i]) {
      return false;
    }
  }
  return true;
}

int status_of(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::invalid_input: return 400;
    case ErrorKind::unauthorized: return 401;
    case ErrorKind::forbidden: return 403;
    case ErrorKind::not_found: return 404;
    case ErrorKind::conflict: return 409;
    case ErrorKind::too_large: return 413;
    case ErrorKind::unavailable: return 503;
    case ErrorKind::internal: return 500;
  }
  return 500;
}

ApiResponse json_response(int status, const nlohmann::json& body) {
  return ApiResponse{status, "application/json", body.dump(), {}};
}

ApiResponse from_error(const Error& e) {
  nlohmann::json body{{"error", e.message}};
  if (!e.fields.empty()) {
    body["fields"] = nlohmann::json::array();
    for (const auto& f : e.fields) body["fields"].push_back({{"path", f.path}, {"message", f.message}});
  }
  auto r = json_response(status_of(e.kind), body);
  if (e.kind == ErrorKind::unauthorized) r.headers.push_back({"WWW-Authenticate", "Bearer"});
  return r;
}

ApiResponse from_result(const Result<nlohmann::json>& r, int ok_status = 200) {
  return r ? json_response(ok_status, *r) : from_error(r.error());
}

std::optional<std::string> query_value(const ApiRequest& req, const char* name) {
  auto it = req.query.find(name);
  if (it == req.query.end()) return std::nullopt;
  return it->second;
}

}  // namespace

ApiHandler::ApiHandler(JobService& jobs, ServerService& servers, artifacts::UploadService& uploads,
                       const artifacts::ArtifactStore& artifacts, Store& store, Metrics& metrics,
                       const TokenAuthenticator& auth, const Logger& log, NamedRecipes* recipes)
    : jobs_(jobs), servers_(servers), uploads_(uploads), artifacts_(artifacts), store_(store), metrics_(metrics), auth_(auth), log_(log),
      recipes_(recipes) {
  std::vector<std::string> patterns;
  for (const auto& r : api_routes()) patterns.push_back(r.pattern);
  metrics_.declare_routes(patterns);
}

const RouteSpec* ApiHandler::find_route(const std::string& method, const std::string& path,
                                        std::vector<std::string>& params, bool& path_known) const {
  auto parts = split_path(path);
  path_known = false;
  for (const auto& r : api_routes()) {
    if (!match(r.pattern, parts, params)) continue;
    path_known = true;
    if (r.method == method) return &r;
  }
  return nullptr;
}

bool ApiHandler::streams_body(const std::string& method, const std::string& path) const {
  std::vector<std::string> params;
  bool path_known = false;
  const auto* route = find_route(method, path, params, path_known);
  return route && route->streams_body;
}

std::uint64_t ApiHandler::max_streamed_body() const { return uploads_.max_bytes(); }

ApiResponse ApiHandler::error_response(int status, const std::string& message) {
  return json_response(status, {{"error", message}});
}

void ApiHandler::count(const std::string& method, const std::string& path, int status,
                       std::chrono::steady_clock::duration took) {
  std::vector<std::string> params;
  bool path_known = false;
  const auto* route = find_route(method, path, params, path_known);
  metrics_.count_request(method, route ? route->pattern : "other", status, std::chrono::duration<double>(took).count());
}

std::optional<ApiResponse> ApiHandler::check_access(const RouteSpec& route, const ApiRequest& req) const {
  if (route.permission == Permission::open) return std::nullopt;
  if (route.permission == Permission::webhook) {
    // The HMAC needs the body; a request without its headers is refused before reading it.
    if (req.header(std::string(kWebhookTimestampHeader)).empty() || req.header(std::string(kWebhookSignatureHeader)).empty())
      return from_error(make_error(ErrorKind::unauthorized, "missing " + std::string(kWebhookTimestampHeader) + " or " +
                                                                std::string(kWebhookSignatureHeader) + " header"));
    return std::nullopt;
  }
  auto token = auth_.authenticate(req.header("Authorization"));
  if (!token) return from_error(make_error(ErrorKind::unauthorized, "a valid bearer token is required"));
  if (!role_allows(token->role, route.permission))
    return from_error(make_error(ErrorKind::forbidden, "role " + std::string(to_string(token->role)) + " may not " +
                                                           route.method + " " + route.pattern));
  return std::nullopt;
}

std::optional<ApiResponse> ApiHandler::refuse_early(const ApiRequest& head) {
  auto started = std::chrono::steady_clock::now();
  std::vector<std::string> params;
  bool path_known = false;
  const auto* route = find_route(head.method, head.path, params, path_known);
  std::optional<ApiResponse> refusal;
  if (!route)
    refusal = path_known ? error_response(405, "method not allowed") : error_response(404, "no such route");
  else
    refusal = check_access(*route, head);
  if (refusal) count(head.method, head.path, refusal->status, std::chrono::steady_clock::now() - started);
  return refusal;
}

ApiResponse ApiHandler::handle(const ApiRequest& request) {
  auto started = std::chrono::steady_clock::now();
  std::vector<std::string> params;
  bool path_known = false;
  const auto* route = find_route(request.method, request.path, params, path_known);
  ApiResponse response;
  if (!route) {
    response = path_known ? error_response(405, "method not allowed") : error_response(404, "no such route");
  } else if (auto refusal = check_access(*route, request)) {
    response = std::move(*refusal);
  } else {
    response = dispatch(*route, params, request);
  }
  metrics_.count_request(request.method, route ? route->pattern : "other", response.status,
                         std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
  return response;
}

ApiResponse ApiHandler::dispatch(const RouteSpec& route, const std::vector<std::string>& params,
                                 const ApiRequest& req) {
  try {
    const auto& p = route.pattern;
    if (p == "/healthz") return json_response(200, {{"status", "ok"}});
    if (p == "/" || p == "/ui/app.js" || p == "/ui/app.css") {
      auto [type, body] = p == "/"            ? std::pair{"text/html; charset=utf-8", embedded::dashboard_html}
                          : p == "/ui/app.js" ? std::pair{"text/javascript; charset=utf-8", embedded::dashboard_js}
                                              : std::pair{"text/css; charset=utf-8", embedded::dashboard_css};
      // Only its own scripts and styles, never framed, never sniffed as another type.
      std::string text(body);
      if (p == "/")
        if (auto at = text.find("{{features}}"); at != std::string::npos)
          text.replace(at, 12, std::string("fleets") + (nodes_ ? " nodes" : ""));
      return ApiResponse{200, type, std::move(text),
                         {{"Content-Security-Policy",
                           "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"},
                          {"X-Content-Type-Options", "nosniff"},
                          {"Referrer-Policy", "no-referrer"},
                          {"Cache-Control", "no-cache"}}};
    }
    if (p == "/api/v1/openapi.json")
      return ApiResponse{200, "application/json", std::string(embedded::openapi_document), {}};
    if (p == "/metrics") {
      auto counts = store_.count_jobs_by_status();
      if (!counts) return from_error(counts.error());
      return ApiResponse{200, "text/plain; version=0.0.4", metrics_.render(*counts), {}};
    }
    if (p == "/api/v1/jobs" && route.method == "GET")
      return from_result(jobs_.list(JobListQuery{query_value(req, "status"), query_value(req, "server"),
                                                 query_value(req, "cursor"), query_value(req, "limit")}));
    if (p == "/api/v1/jobs") {
      auto created = jobs_.create(req.body);
      auto r = from_result(created, 201);
      if (created) r.headers.push_back({"Location", "/api/v1/jobs/" + (*created)["id"].get<std::string>()});
      return r;
    }
    if (p == "/api/v1/jobs/{id}") return from_result(jobs_.get(params[0]));
    if (p == "/api/v1/jobs/{id}/cancel") return from_result(jobs_.cancel(params[0]));
    if (p.starts_with("/api/v1/fleets")) {
      if (!fleets_) return error_response(404, "fleets are off");
      auto token = auth_.authenticate(req.header("Authorization"));
      std::string actor = token ? "api:" + (token->name.empty() ? std::string(to_string(token->role)) : token->name) : "api";
      if (p == "/api/v1/fleets" && route.method == "GET")
        return from_result(fleets_->list(FleetListQuery{query_value(req, "status"), query_value(req, "cursor"),
                                                        query_value(req, "limit")}));
      if (p == "/api/v1/fleets") {
        auto created = fleets_->create(req.body, actor);
        auto r = from_result(created, 201);
        if (created) r.headers.push_back({"Location", "/api/v1/fleets/" + (*created)["id"].get<std::string>()});
        return r;
      }
      if (p == "/api/v1/fleets/{id}") return from_result(fleets_->get(params[0]));
      if (p == "/api/v1/fleets/{id}/cancel") return from_result(fleets_->cancel(params[0], actor));
      if (p == "/api/v1/fleets/{id}/pause") return from_result(fleets_->pause(params[0], actor));
      if (p == "/api/v1/fleets/{id}/resume") return from_result(fleets_->resume(params[0], actor));
    }
    if (p == "/api/v1/servers" && route.method == "GET")
      return from_result(servers_.list(query_value(req, "cursor"), query_value(req, "limit")));
    if (p == "/api/v1/servers") {
      auto created = servers_.create(req.body);
      auto r = from_result(created, 201);
      if (created) r.headers.push_back({"Location", "/api/v1/servers/" + (*created)["id"].get<std::string>()});
      return r;
    }
    if (p == "/api/v1/servers/{id}" && route.method == "GET") return from_result(servers_.get(params[0]));
    if (p == "/api/v1/servers/{id}" && route.method == "PATCH") return from_result(servers_.patch(params[0], req.body));
    if (p == "/api/v1/servers/{id}") {
      auto removed = servers_.remove(params[0]);
      return removed ? ApiResponse{204, "application/json", "", {}} : from_error(removed.error());
    }
    if (p == "/api/v1/artifacts/{sha256}") {
      // What a client needs to check the bytes it downloaded: a plain artifact is its sha256; a
      // composite lists where each segment starts, its length and digest (its id is
      // sha256("provisioner-composite-v2\n" + "<length> <digest>\n" per segment)).
      auto info = artifacts_.stat(params[0]);
      if (!info) return from_error(info.error().kind == ErrorKind::invalid_input
                                       ? make_error(ErrorKind::not_found, "no artifact " + params[0])
                                       : info.error());
      nlohmann::json out{{"sha256", info->sha256}, {"size", info->size}, {"composite", info->composite}};
      if (info->composite) {
        auto m = artifacts_.composite(params[0]);
        if (!m) return from_error(m.error());
        nlohmann::json segments = nlohmann::json::array();
        std::uint64_t start = 0;
        bool v2 = true;
        for (const auto& seg : m->segments) {
          segments.push_back({{"start", start}, {"length", seg.length}, {"digest", seg.digest}});
          v2 = v2 && !seg.digest.empty();
          start += seg.length;
        }
        out["segments"] = std::move(segments);
        out["id_scheme"] = v2 ? "provisioner-composite-v2" : "sha256";
      }
      return json_response(200, out);
    }
    if (p == "/api/v1/artifacts") {
      if (!req.read_body) return error_response(500, "upload without a body stream");
      auto stored = uploads_.upload(artifacts::UploadRequest{query_value(req, "digest"), query_value(req, "name"),
                                                             query_value(req, "purpose"), req.read_body});
      if (stored) log_.info("artifact uploaded", {{"sha256", (*stored)["sha256"]}, {"reused", (*stored)["reused"].dump()}});
      return from_result(stored, 201);
    }
    if (p.starts_with("/api/v1/recipes/")) {
      if (!recipes_) return error_response(404, "named recipes need the registry ([registry] enabled)");
      auto describe = [](const NamedRecipes::Stored& r, bool with_recipe) {
        nlohmann::json out = {{"name", r.name}, {"version", r.version}, {"digest", r.digest},
                              {"recipe_ref", r.name + "@" + r.version}, {"digest_ref", r.name + "@" + r.digest}};
        if (with_recipe) out["recipe"] = redact(r.recipe);  // secrets never leave in an answer
        return out;
      };
      if (p == "/api/v1/recipes/{name}") {
        auto versions = recipes_->versions(params[0]);
        if (!versions) return from_error(versions.error());
        return json_response(200, {{"name", params[0]}, {"versions", *versions}});
      }
      if (route.method == "GET") {
        auto got = recipes_->get(params[0], params[1]);
        return got ? json_response(200, describe(*got, true)) : from_error(got.error());
      }
      if (route.method == "DELETE") {
        auto removed = recipes_->remove(params[0], params[1]);
        if (removed) log_.info("recipe version removed", {{"recipe", params[0] + "@" + params[1]}});
        return removed ? ApiResponse{204, "application/json", "", {}} : from_error(removed.error());
      }
      auto body = parse_json(req.body);
      if (!body) return from_error(body.error());
      auto put = recipes_->put(params[0], params[1], *body);
      if (!put) return from_error(put.error());
      if (put->created) log_.info("recipe version stored", {{"recipe", put->name + "@" + put->version}, {"digest", put->digest}});
      auto r = json_response(put->created ? 201 : 200, describe(*put, false));
      r.headers.push_back({"Location", "/api/v1/recipes/" + put->name + "/" + put->version});
      return r;
    }
    if (p == "/api/v1/tasks/by-serial/{serial}") {
      auto job = jobs_.network_task_for_serial(params[0]);
      if (!job) return from_error(job.error());
      auto media = job->media;
      auto path = artifacts_.path_of(media["task_iso"].value("sha256", ""));
      auto bytes = path ? read_file(*path) : Result<std::string>(make_error(ErrorKind::not_found, "task ISO missing"));
      if (!bytes) return from_error(bytes.error());
      return ApiResponse{200, "application/octet-stream", std::move(*bytes), {{"Cache-Control", "no-store"}}};
    }
    if (p.starts_with("/api/v1/nodes")) {
      if (!nodes_) return error_response(404, "nodes are off");
      auto token = auth_.authenticate(req.header("Authorization"));
      std::string actor = "api:" + std::string(token ? to_string(token->role) : "unknown");
      if (p == "/api/v1/nodes" && route.method == "GET")
        return from_result(nodes_->list(query_value(req, "state"), query_value(req, "cursor"), query_value(req, "limit")));
      if (p == "/api/v1/nodes") {
        auto created = nodes_->create(req.body, actor);
        auto r = from_result(created, 201);
        if (created) r.headers.push_back({"Location", "/api/v1/nodes/" + (*created)["id"].get<std::string>()});
        return r;
      }
      if (p == "/api/v1/nodes/{id}/inventory")
        return from_result(nodes_->accept_inventory(params[0], req.header("Authorization"), req.body,
                                                    boot_ ? boot_->options().inspect_token : nullptr));
      if (p == "/api/v1/nodes/{id}" && route.method == "GET") return from_result(nodes_->get(params[0]));
      if (p == "/api/v1/nodes/{id}" && route.method == "PATCH") return from_result(nodes_->patch(params[0], req.body));
      if (p == "/api/v1/nodes/{id}") {
        auto removed = nodes_->remove(params[0]);
        return removed ? ApiResponse{204, "application/json", "", {}} : from_error(removed.error());
      }
      // PATCH …/state: `pending` is a new install, so it is a job (with the node's recipe_ref);
      // the other moves are the node's own.
      auto body = parse_json(req.body);
      if (body && body->is_object() && body->value("state", "") == "pending") {
        auto node = nodes_->load(params[0]);
        if (!node) return from_error(node.error());
        nlohmann::json request{{"node", {{"id", params[0]}}}, {"reprovision", true}};
        auto created = jobs_.create(request.dump());
        if (!created) return from_error(created.error());
        auto now = nodes_->get(params[0]);
        if (!now) return from_error(now.error());
        auto r = json_response(201, {{"node", *now}, {"job", *created}});
        r.headers.push_back({"Location", "/api/v1/jobs/" + (*created)["id"].get<std::string>()});
        return r;
      }
      return from_result(nodes_->set_state(params[0], req.body, actor));
    }
    if (p == "/boot/boot.ipxe" || p == "/boot/ipxe") {
      if (!boot_) return error_response(404, "network boot is off ([pxe] enabled)");
      if (p == "/boot/boot.ipxe") return ApiResponse{200, "text/plain", boot_->chain_script(), {{"Cache-Control", "no-store"}}};
      auto script = boot_->script_for(req.query);
      if (!script) return from_error(script.error());
      return ApiResponse{200, "text/plain", std::move(*script), {{"Cache-Control", "no-store"}}};
    }
    if (p == "/api/v1/status-webhook/{serial}")
      return from_result(jobs_.accept_webhook(params[0], req.header(std::string(kWebhookTimestampHeader)),
                                              req.header(std::string(kWebhookSignatureHeader)), req.body));
  } catch (const std::exception& e) {
    log_.error("request failed", {{"route", route.pattern}, {"error", e.what()}});
    return error_response(500, "internal error");
  }
  return error_response(404, "no such route");
}

}  // namespace provisioner
