#include "controller/redfish/redfish_session.hpp"

#include "common/crypto.hpp"
#include "controller/logging/logger.hpp"

// The session's state lives in the header (the operations in redfish_client.cpp use it);
// the protocol machinery is here.

namespace provisioner::redfish {

Error fail(FailureCode code, const std::string& message) {
  ErrorKind kind = ErrorKind::unavailable;
  switch (code) {
    case FailureCode::invalid_input:
      kind = ErrorKind::invalid_input;
      break;
    case FailureCode::not_found:
      kind = ErrorKind::not_found;
      break;
    case FailureCode::second_medium_refused:
      kind = ErrorKind::conflict;
      break;
    case FailureCode::auth_failed:
      kind = ErrorKind::unauthorized;
      break;
    default:
      break;
  }
  return make_error(kind, redact_url(message), {FieldError{kFailurePath, failure_code_name(code)}});
}

RedfishSession::RedfishSession(RedfishContext& c, BmcEndpoint e, std::vector<std::pair<std::string, std::string>> lc,
                               std::stop_token st)
    : ctx(c), opt(c.options()), ep(std::move(e)), bmc(c.registry().get(ep.address)), log_context(std::move(lc)) {
  set_stop(std::move(st));
  std::string err;
  if (!parse_endpoint(ep.address, net, err)) {
    endpoint_error = err;
  } else {
    TransportOptions to;
    to.tls = TlsSettings{ep.verify_tls, ep.ca_file, effective_tls(ep.tls, ep.profile) == "legacy"};
    to.connect_timeout = std::chrono::milliseconds(opt.connect_timeout_ms);
    auto forced = profile_by_name(ep.profile);
    to.keep_alive = !forced || forced->keep_alive;
    // A shutdown also ends a request on the wire (a slow BMC must not hold the controller
    // up to its request deadline). A job's cancel only stops what comes after: the request
    // in flight is bounded by its own deadline.
    on_shutdown.emplace(ctx.shutdown(), RaiseFlag{&shutdown_flag});
    to.stop = &shutdown_flag;
    transport = make_curl_transport(net, to);
  }
}

std::string RedfishSession::basic_auth() const {
  return "Basic " + crypto::base64_encode(ep.username + ":" + ep.password);
}

Error RedfishSession::stopped_error(const std::string& what) const {
  const char* why = ctx.shutdown().stop_requested() ? "the controller is stopping" : "the job was canceled or changed";
  log(1, "BMC operation stopped", {{"at", what}, {"reason", why}});
  return fail(FailureCode::canceled, what + ": stopped, " + why);
}

void RedfishSession::log(int level, std::string_view msg, LogFields fields) const {
  const Logger* l = ctx.logger();
  if (!l) return;
  fields.insert(fields.begin(), {"op", op});
  fields.insert(fields.begin(), {"bmc", ep.address});
  fields.insert(fields.begin(), log_context.begin(), log_context.end());
  if (level == 0)
    l->debug(msg, fields);
  else if (level == 1)
    l->info(msg, fields);
  else if (level == 2)
    l->warn(msg, fields);
  else
    l->error(msg, fields);
}

Error RedfishSession::answer_error(const std::string& method, const std::string& path, const Reply& r,
                                   FailureCode code) const {
  std::string m = bmc_message(r.http.body);
  return fail(code, where(method, path) + " answered " + std::to_string(r.status) + (m.empty() ? "" : ": " + m));
}

Result<Reply> RedfishSession::exchange(const std::string& method, const std::string& path,
                                       const std::optional<json>& body, const CallOptions& co) {
  if (!transport) return fail(FailureCode::invalid_input, "BMC address invalid: " + endpoint_error);
  if (co.stoppable ? stopped() : ctx.shutdown().stop_requested())
    return stopped_error(where(method, path) + " not sent");
  if (!bmc.breaker.allow())
    return fail(FailureCode::circuit_open, where(method, path) + " not sent: BMC failed repeatedly, next try in " +
                                               std::to_string(bmc.breaker.retry_in_ms() / 1000) + " s");
  HttpRequest req;
  req.method = method;
  req.target = path;
  req.headers = {{"OData-Version", "4.0"},
                 {"Accept", "application/json"},
                 // identity: compression makes some BMCs hand out weak ETags
                 {"Accept-Encoding", "identity"},
                 {"User-Agent", "provisioner-redfish/1"}};
  if (body) {
    req.body = body->dump();
    req.headers.emplace_back("Content-Type", "application/json");
  }
  if (co.with_auth) {
    if (!token.empty())
      req.headers.emplace_back("X-Auth-Token", token);
    else if (basic)
      req.headers.emplace_back("Authorization", basic_auth());
  }
  if (!co.if_match.empty()) req.headers.emplace_back("If-Match", co.if_match);

  TransportResult tr;
  {
    ConcurrencyLimiter::Guard g(ctx.limiter());
    tr = transport->send(req, std::chrono::milliseconds(opt.request_timeout_ms));
  }
  if (co.acts && (tr.ok || tr.failure.sent)) action_maybe_sent = true;
  if (!tr.ok) {
    if (tr.failure.kind == TransportFailure::Kind::aborted && ctx.shutdown().stop_requested())
      return stopped_error(where(method, path) + (tr.failure.sent ? " cut off on the wire" : " not sent"));
    if (tr.failure.kind != TransportFailure::Kind::aborted) bmc.breaker.record_failure();
    log(0, "redfish request failed", {{"method", method}, {"path", path}, {"error", tr.failure.detail}});
    Error e = fail(FailureCode::transport, where(method, path) + " failed: " + tr.failure.detail);
    // Remember whether the BMC may have seen the request (callers verify state then).
    e.fields.push_back({"/redfish/sent", tr.failure.sent ? "true" : "false"});
    if (tr.failure.kind == TransportFailure::Kind::tls) e.fields.push_back({"/redfish/tls", "true"});
    if (tr.failure.kind == TransportFailure::Kind::aborted) e.fields.push_back({"/redfish/aborted", "true"});
    return e;
  }
  if (tr.response.status >= 500)
    bmc.breaker.record_failure();
  else
    bmc.breaker.record_success();
  Reply r;
  r.status = tr.response.status;
  r.http = std::move(tr.response);
  if (!r.http.body.empty()) {
    r.body = json::parse(r.http.body, nullptr, false);
    if (r.body.is_discarded()) r.body = nullptr;
  }
  log(0, "redfish request", {{"method", method}, {"path", path}, {"status", std::to_string(r.status)}});
  return r;
}

std::int64_t RedfishSession::retry_after(const Reply& r, std::int64_t fallback) const {
  auto v = parse_retry_after_ms(r.http.header("retry-after"), ctx.clock().now_ms(), opt.max_retry_after_ms);
  return v ? *v : fallback;
}

Result<Reply> RedfishSession::call(const std::string& method, const std::string& path, const std::optional<json>& body,
                                   CallOptions co) {
  if (co.with_auth && !authing) {
    auto a = ensure_auth();
    if (!a) return a.error();
  }
  int transient = 0, limited = 0, not_ready = 0;
  bool relogged = false;
  std::string last_cause;  // shown when the breaker opens in the middle of our retries
  if (!is_idempotent(method)) ++writes;
  for (;;) {
    auto r = exchange(method, path, body, co);
    if (!r) {
      FailureCode code = failure_code(r.error());
      if (code == FailureCode::circuit_open && !last_cause.empty()) {
        Error e = r.error();
        e.message += " (last answer: " + last_cause + ")";
        return e;
      }
      last_cause = r.error().message.substr(r.error().message.rfind(": ") + 2);
      // A refused certificate stays refused: retrying only hammers the BMC.
      bool may_retry = code == FailureCode::transport && !has_field(r.error(), "/redfish/tls", "true") &&
                       !has_field(r.error(), "/redfish/aborted", "true") &&
                       (is_idempotent(method) || !sent_of(r.error()));
      if (may_retry && ++transient < opt.get_attempts) {
        if (!pause(backoff_delay_ms(transient - 1, opt.retry_base_ms, opt.retry_cap_ms)))
          return stopped_error(where(method, path) + " retry");
        continue;
      }
      return r.error();
    }
    Reply& rep = *r;
    last_cause = std::to_string(rep.status);
    if (rep.status == 401 && co.with_auth && !relogged && !token.empty()) {
      // Session expired or was dropped by the BMC: log in again once and replay.
      log(1, "session rejected; logging in again", {{"path", path}});
      relogged = true;
      token.clear();
      session_uri.clear();
      login_tried = false;
      auto a = ensure_auth();
      if (!a) return a.error();
      continue;
    }
    if (rep.status == 401 || rep.status == 403) {
      return answer_error(method, path, rep, FailureCode::auth_failed);
    }
    if (rep.status == 429 && ++limited < opt.rate_limit_attempts) {
      if (!pause(retry_after(rep, backoff_delay_ms(limited - 1, opt.retry_base_ms, opt.retry_cap_ms))))
        return stopped_error(where(method, path) + " Retry-After wait");
      continue;
    }
    if (is_not_ready_answer(rep.status, rep.http.body) && ++not_ready < opt.not_ready_attempts) {
      log(1, "BMC not ready; retrying", {{"path", path}, {"status", std::to_string(rep.status)}});
      if (!pause(retry_after(rep, opt.not_ready_delay_ms)))
        return stopped_error(where(method, path) + " not-ready wait");
      continue;
    }
    if (rep.status >= 500 && is_idempotent(method) && ++transient < opt.get_attempts) {
      if (!pause(retry_after(rep, backoff_delay_ms(transient - 1, opt.retry_base_ms, opt.retry_cap_ms))))
        return stopped_error(where(method, path) + " retry wait");
      continue;
    }
    if (rep.status == 202 && co.follow_task) return follow_task(method, path, std::move(rep));
    return std::move(rep);
  }
}

Result<Reply> RedfishSession::follow_task(const std::string& method, const std::string& path, Reply accepted) {
  std::string monitor = path_of(accepted.http.header("location"));
  if (monitor.empty() && accepted.body.is_object()) monitor = path_of(accepted.body.value("@odata.id", ""));
  if (monitor.empty()) return accepted;  // accepted, nothing to watch
  std::int64_t deadline = ctx.clock().now_ms() + opt.task_timeout_ms;
  std::int64_t delay = retry_after(accepted, opt.task_poll_ms);
  for (;;) {
    if (ctx.clock().now_ms() >= deadline)
      return fail(FailureCode::timeout, where(method, path) + ": task " + monitor + " did not finish in time");
    if (!pause(delay)) return stopped_error(where(method, path) + ": waiting for task " + monitor);
    auto p = call("GET", monitor, std::nullopt, CallOptions{{}, false, true});
    if (!p) return p.error();
    if (p->status == 202) {
      delay = retry_after(*p, opt.task_poll_ms);
      continue;
    }
    if (!p->ok()) {
      Error e = answer_error("GET", monitor, *p);
      e.message = where(method, path) + ": task monitor failed: " + e.message;
      return e;
    }
    if (p->body.is_object() && p->body.contains("TaskState")) {
      std::string state = p->body.value("TaskState", "");
      if (state == "Completed") {
        if (p->body.value("TaskStatus", "OK") == "Critical")
          return fail(FailureCode::bmc_error, where(method, path) + ": task failed: " + bmc_message(p->http.body));
        return p;
      }
      if (state == "Exception" || state == "Killed" || state == "Cancelled")
        return fail(FailureCode::bmc_error,
                    where(method, path) + ": task ended " + state + ": " + bmc_message(p->http.body));
      delay = retry_after(*p, opt.task_poll_ms);
      continue;
    }
    return p;  // the monitor now answers with the operation's result
  }
}

Status RedfishSession::load_root() {
  if (root_loaded) return Ok{};
  authing = true;
  struct Reset {
    bool& b;
    ~Reset() { b = false; }
  } reset{authing};
  // The service root is readable without credentials by spec; some BMCs want them anyway.
  auto r = call("GET", "/redfish/v1/", std::nullopt, CallOptions{{}, true, false});
  if (!r) return r.error();
  if (r->status == 401 || r->status == 403) {
    basic = true;
    r = call("GET", "/redfish/v1/", std::nullopt, CallOptions{{}, true, true});
    if (!r) return r.error();
  }
  if (!r->ok() || !r->body.is_object()) return answer_error("GET", "/redfish/v1/", *r);
  root = r->body;
  root_loaded = true;
  return Ok{};
}

Status RedfishSession::ensure_auth() {
  if (auto s = load_root(); !s) return s;
  if (!token.empty() || basic || login_tried) return Ok{};
  login_tried = true;
  std::string sessions = odata_link(root.value("Links", json::object()), "Sessions");
  if (sessions.empty()) {
    std::string svc = odata_link(root, "SessionService");
    sessions = svc.empty() ? "/redfish/v1/SessionService/Sessions" : svc + "/Sessions";
  }
  json creds = {{"UserName", ep.username}, {"Password", ep.password}};
  auto r = call("POST", sessions, creds, CallOptions{{}, false, false});
  if (r && r->ok() && !r->http.header("x-auth-token").empty()) {
    token = r->http.header("x-auth-token");
    session_uri = path_of(r->http.header("location"));
    if (session_uri.empty() && r->body.is_object()) session_uri = path_of(r->body.value("@odata.id", ""));
    return Ok{};
  }
  if (!r && (failure_code(r.error()) == FailureCode::circuit_open ||
             failure_code(r.error()) == FailureCode::transport || failure_code(r.error()) == FailureCode::canceled)) {
    login_tried = false;  // the BMC was not reachable: says nothing about sessions, try again next time
    return r.error();
  }
  // Sessions unsupported or broken on this BMC: basic auth still works on all we know.
  log(2, "session login failed; using basic auth",
      {{"status", r ? std::to_string(r->status) : std::string("no answer")}});
  basic = true;
  return Ok{};
}

void RedfishSession::logout() {
  if (token.empty() || session_uri.empty()) {
    token.clear();
    return;
  }
  // A canceled job still gives its session back (BMCs have few); a stopping controller does
  // not wait for a slow BMC: the session expires there.
  if (!ctx.shutdown().stop_requested()) {
    auto r = exchange("DELETE", session_uri, std::nullopt, CallOptions{{}, true, true, false});
    if (!r || !r->ok()) log(2, "session delete failed", {{"path", session_uri}});
  }
  token.clear();
  session_uri.clear();
  login_tried = false;
}

Result<json> RedfishSession::get_json(const std::string& path, std::string* etag) {
  auto r = call("GET", path);
  if (!r) return r.error();
  if (r->status == 404) return answer_error("GET", path, *r, FailureCode::not_found);
  if (!r->ok() || !r->body.is_object()) return answer_error("GET", path, *r);
  if (etag) {
    *etag = r->http.header("etag");
    if (etag->empty()) *etag = r->body.value("@odata.etag", "");
  }
  return std::move(r->body);
}

}  // namespace provisioner::redfish
