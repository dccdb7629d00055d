#include "controller/api/events_route.hpp"

#include <charconv>
#include <string>

#include <nlohmann/json.hpp>

#include "common/clock.hpp"
#include "common/redact.hpp"
#include "controller/api/auth.hpp"
#include "controller/logging/logger.hpp"
#include "controller/metrics/metrics.hpp"
#include "controller/registry/oci_route.hpp"
#include "controller/store/store.hpp"

namespace provisioner {

namespace {

std::string answer(int status, std::string_view reason, const nlohmann::json& body, std::string_view extra = {}) {
  auto text = body.dump();
  std::string out = "HTTP/1.1 " + std::to_string(status) + " " + std::string(reason) +
                    "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(text.size()) +
                    "\r\nCache-Control: no-store\r\n";
  out += extra;
  out += "\r\n";
  out += text;
  return out;
}

std::optional<std::int64_t> parse_seq(std::string_view text) {
  std::int64_t v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size() || v < 0) return std::nullopt;
  return v;
}

std::string frame(const EventRecord& e) {
  nlohmann::json data{{"id", e.seq}, {"type", e.topic}, {"kind", e.kind}, {"at", format_rfc3339_ms(e.at_ms)}};
  if (!e.name.empty()) data["name"] = e.name;
  if (!e.from.empty()) data["from"] = e.from;
  if (!e.detail.empty()) data["detail"] = redact_text(e.detail);
  if (!e.job_id.empty()) data["job_id"] = e.job_id;
  if (!e.fleet_id.empty()) data["fleet_id"] = e.fleet_id;
  if (!e.node_id.empty()) data["node_id"] = e.node_id;
  if (!e.serial.empty()) data["serial"] = e.serial;
  // One line of JSON: dump() escapes every newline, so the frame cannot be split.
  return "id: " + std::to_string(e.seq) + "\nevent: " + e.topic + "\ndata: " + data.dump() + "\n\n";
}

}  // namespace

EventsRoute::EventsRoute(Store& store, const TokenAuthenticator& auth, const Logger& log, EventsOptions options)
    : store_(store), auth_(auth), log_(log), options_(options) {}

void EventsRoute::notify() {
  {
    std::lock_guard lock(mutex_);
    ++generation_;
  }
  changed_.notify_all();
}

void EventsRoute::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  changed_.notify_all();
}

bool EventsRoute::serve(const NativeRequest& request, NativeExchange& exchange) {
  auto started = std::chrono::steady_clock::now();
  int status = 200;
  bool keep = stream(request, exchange, status);
  if (metrics_)
    metrics_->count_request(std::string(request.method), "/api/v1/events", status,
                            std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
  return keep;
}

bool EventsRoute::stream(const NativeRequest& request, NativeExchange& ex, int& status) {
  if (request.method != "GET") {
    status = 405;
    ex.write(answer(405, "Method Not Allowed", {{"error", "method not allowed"}}, "Allow: GET\r\n"));
    return false;
  }
  // Who asks, before anything else is looked at.
  auto authz = request.header("authorization");
  auto token = authz ? auth_.authenticate(*authz) : std::nullopt;
  if (!token) {
    status = 401;
    ex.write(answer(401, "Unauthorized", {{"error", "a valid bearer token is required"}}, "WWW-Authenticate: Bearer\r\n"));
    return false;
  }
  if (!role_allows(token->role, Permission::read)) {
    status = 403;
    ex.write(answer(403, "Forbidden", {{"error", "role " + std::string(to_string(token->role)) + " may not GET /api/v1/events"}}));
    return false;
  }
  if (!ex.body_complete()) {
    status = 400;
    ex.write(answer(400, "Bad Request", {{"error", "GET /api/v1/events takes no body"}}));
    return false;
  }

  EventFilter filter;
  std::optional<std::string> resume_text;
  nlohmann::json fields = nlohmann::json::array();
  for (const auto& [key, value] : registry::parse_query(request.query())) {
    if (key == "job") filter.job = value;
    else if (key == "fleet") filter.fleet = value;
    else if (key == "node") filter.node = value;
    else if (key == "last_event_id") resume_text = value;
    else fields.push_back({{"path", key}, {"message", "unknown parameter (job, fleet, node, last_event_id)"}});
  }
  if (auto header = request.header("last-event-id")) resume_text = std::string(*header);
  std::optional<std::int64_t> resume;
  if (resume_text) {
    resume = parse_seq(*resume_text);
    if (!resume) fields.push_back({{"path", "Last-Event-ID"}, {"message", "must be an event id from this stream"}});
  }
  if (!fields.empty()) {
    status = 400;
    ex.write(answer(400, "Bad Request", {{"error", "bad query"}, {"fields", fields}}));
    return false;
  }
  std::int64_t last = 0;
  if (resume) {
    last = *resume;
  } else {
    auto head = store_.last_event_seq();
    if (!head) {
      status = 503;
      ex.write(answer(503, "Service Unavailable", {{"error", head.error().message}}));
      return false;
    }
    last = *head;
  }

  // The stream: no length; it ends when either side closes.
  if (!ex.write("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n"
                "X-Accel-Buffering: no\r\nConnection: close\r\n\r\nretry: 2000\n\n"))
    return false;
  log_.debug("event stream opened", {{"client", request.client}, {"by", token->name}, {"from", std::to_string(last)}});
  auto heartbeat_due = std::chrono::steady_clock::now() + options_.heartbeat;
  for (;;) {
    std::uint64_t seen;
    {
      std::lock_guard lock(mutex_);
      if (stopping_) return false;
      seen = generation_;
    }
    auto events = store_.events_after(last, filter, options_.batch);
    if (!events) {
      log_.warn("event stream read failed", {{"error", events.error().message}});
      return false;
    }
    if (!events->empty()) {
      std::string batch;
      for (const auto& e : *events) batch += frame(e);
      if (!ex.write(batch)) return false;  // gone, or took nothing for the idle timeout
      last = events->back().seq;
      if (static_cast<int>(events->size()) == options_.batch) continue;  // more waiting
    }
    std::unique_lock lock(mutex_);
    changed_.wait_until(lock, heartbeat_due, [&] { return stopping_ || generation_ != seen; });
    if (stopping_) return false;
    // Due is due, whatever else woke the stream: a filtered stream on a busy store still beats.
    if (std::chrono::steady_clock::now() >= heartbeat_due) {
      lock.unlock();
      if (!ex.write(": heartbeat\n\n")) return false;
      heartbeat_due = std::chrono::steady_clock::now() + options_.heartbeat;
    }
  }
}

}  // namespace provisioner
