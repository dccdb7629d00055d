#include "controller/fleets/fleet_service.hpp"

#include <algorithm>

#include "common/crypto.hpp"
#include "common/list_cursor.hpp"
#include "common/list_limit.hpp"
#include "common/recipe.hpp"
#include "common/redact.hpp"
#include "controller/jobs/job_service.hpp"
#include "controller/logging/logger.hpp"

namespace provisioner {

namespace embedded {
extern const std::string_view fleet_request_schema;
}

namespace {

constexpr int kDefaultMaxParallel = 10;
constexpr int kMaxMembers = 100000;  // the schema's bound on servers, max_parallel and canary
// How long a pass launches before it looks at the failures again: a job launched early in a
// large pass may already have failed. By time, not by count: a re-read costs the whole member
// list, and a fleet of 10,000 re-read every few launches spent its pass reading.
constexpr auto kRecheckEvery = std::chrono::milliseconds(250);

// A member whose job has ended for the gates: its outcome.
bool member_failed(const FleetMember& m) { return m.job_outcome == "failed" || m.job_outcome == "canceled"; }
bool member_succeeded(const FleetMember& m) { return m.job_outcome == "succeeded"; }

// A stored count, clamped to [0, cap] whatever its JSON type (the schema bounds new requests).
int bounded(const nlohmann::json& spec, const char* key, int fallback, int cap) {
  auto it = spec.find(key);
  if (it == spec.end()) return fallback;
  if (it->is_number_unsigned()) return static_cast<int>(std::min<std::uint64_t>(it->get<std::uint64_t>(), cap));
  if (it->is_number_integer()) return static_cast<int>(std::clamp<std::int64_t>(it->get<std::int64_t>(), 0, cap));
  return fallback;
}

int failure_budget(const nlohmann::json& spec, int total) {
  auto it = spec.find("max_failures");
  if (it == spec.end()) return 0;
  if (!it->is_string()) return bounded(spec, "max_failures", 0, INT32_MAX);
  auto text = it->get<std::string>();  // "N%" (schema: 0-100)
  int percent = 0;
  for (char c : text)
    if (c >= '0' && c <= '9') percent = std::min(percent * 10 + (c - '0'), 100);
  return static_cast<int>(static_cast<std::int64_t>(total) * percent / 100);
}

std::string describe_failure(const FleetMember& m) {
  std::string why = m.serial + " (" + m.job_id + ") " + m.job_outcome;
  if (!m.job_failed_step.empty()) why += " at " + m.job_failed_step;
  if (!m.job_error.empty()) why += ": " + m.job_error;
  return why;
}

bool labels_match(const nlohmann::json& record, const nlohmann::json& wanted) {
  auto labels = record.find("labels");
  if (labels == record.end() || !labels->is_object()) return false;
  for (const auto& [k, v] : wanted.items()) {
    auto have = labels->find(k);
    if (have == labels->end() || *have != v) return false;
  }
  return true;
}

}  // namespace

FleetCounts count_fleet(const FleetRecord& fleet, const std::vector<FleetCountRow>& rows) {
  FleetCounts c;
  for (const auto& r : rows) {
    c.total += r.count;
    if (!r.launched) {
      c.not_launched += r.count;
      c.by_status["not_launched"] += r.count;
      continue;
    }
    c.by_status[r.job_status ? std::string(to_string(*r.job_status)) : "unknown"] += r.count;
    // A job the store does not have (cannot happen: it is inserted with its claim) holds a slot.
    if (!r.job_status || !is_terminal(*r.job_status)) c.in_flight += r.count;
    if (r.outcome == "failed" || r.outcome == "canceled") c.failed += r.count;
    if (r.outcome == "succeeded") c.succeeded += r.count;
  }
  c.failure_budget = failure_budget(fleet.spec, c.total);
  return c;
}

FleetService::FleetService(Store& store, JobService& jobs, const Clock& clock, const Logger& log,
                           std::string secret_key, int max_list_limit)
    : store_(store),
      jobs_(jobs),
      clock_(clock),
      log_(log),
      secret_key_(std::move(secret_key)),
      max_list_limit_(max_list_limit),
      schema_(embedded::fleet_request_schema) {}

FleetService::~FleetService() { stop(); }

Result<nlohmann::json> FleetService::create(std::string_view body, const std::string& actor) {
  auto request = parse_json(body);
  if (!request) return request.error();
  if (auto errors = schema_.validate(*request); !errors.empty())
    return make_error(ErrorKind::invalid_input, "fleet request is not valid", std::move(errors));
  if (!request->contains("recipe") && !request->contains("recipe_ref"))
    return make_error(ErrorKind::invalid_input, "fleet request is not valid", {{"/recipe", "required: recipe or recipe_ref"}});

  // The members, fixed now: by id (each must exist), or by labels (at least one must match).
  std::vector<FleetMember> members;
  if (request->contains("servers")) {
    std::vector<FieldError> errors;
    const auto& ids = (*request)["servers"];
    for (std::size_t i = 0; i < ids.size(); ++i) {
      auto id = ids[i].get<std::string>();
      auto server = store_.get_server(id);
      if (!server) return server.error();
      if (!*server) {
        errors.push_back({"/servers/" + std::to_string(i), "no server " + id});
        continue;
      }
      members.push_back(FleetMember{static_cast<int>(i), id, (*server)->serial, "", {}, {}, {}, {}, {}});
    }
    if (!errors.empty()) return make_error(ErrorKind::invalid_input, "fleet request is not valid", std::move(errors));
  } else {
    const auto& wanted = (*request)["/selector/labels"_json_pointer];
    std::optional<std::string> after;
    for (;;) {
      auto page = store_.list_servers(after, 500);
      if (!page) return page.error();
      for (const auto& s : *page)
        if (labels_match(s.record, wanted))
          members.push_back(FleetMember{static_cast<int>(members.size()), s.id, s.serial, "", {}, {}, {}, {}, {}});
      if (page->size() < 500) break;
      after = page->back().id;
    }
    if (members.empty())
      return make_error(ErrorKind::invalid_input, "fleet request is not valid",
                        {{"/selector/labels", "no server carries all of these labels"}});
  }

  // One recipe for every member, pinned now: a named recipe pushed mid-run does not split the fleet.
  nlohmann::json recipe;
  if (request->contains("recipe_ref")) {
    auto loaded = jobs_.load_recipe_ref((*request)["recipe_ref"].get<std::string>());
    if (!loaded) return loaded.error();
    recipe = std::move(*loaded);
  } else {
    recipe = (*request)["recipe"];
  }
  // Everything a job checks, checked once here for the first member (the rest differ only by server).
  if (auto checked = jobs_.check_request({{"server", {{"id", members.front().server_id}}}, {"recipe", recipe}});
      !checked)
    return checked.error();

  FleetRecord fleet;
  fleet.id = "flt_" + crypto::random_token(8);
  fleet.status = FleetStatus::running;
  fleet.spec = {{"max_parallel", bounded(*request, "max_parallel", kDefaultMaxParallel, kMaxMembers)},
                {"canary", bounded(*request, "canary", 0, kMaxMembers)},
                {"max_failures", request->contains("max_failures") ? (*request)["max_failures"] : nlohmann::json(0)},
                {"recipe", seal_recipe_secrets(recipe, secret_key_)},
                {"created_by", actor}};
  for (const char* key : {"name", "recipe_ref", "selector"})
    if (request->contains(key)) fleet.spec[key] = (*request)[key];
  fleet.created_ms = fleet.updated_ms = clock_.now_ms();
  if (auto inserted = store_.insert_fleet(fleet, members); !inserted) return inserted.error();
  log_.info("fleet created", {{"fleet_id", fleet.id},
                              {"servers", std::to_string(members.size())},
                              {"max_parallel", fleet.spec["max_parallel"].dump()},
                              {"canary", fleet.spec["canary"].dump()},
                              {"by", actor}});
  wake();
  return get(fleet.id);
}

Result<FleetRecord> FleetService::load(const std::string& id) {
  auto fleet = store_.get_fleet(id);
  if (!fleet) return fleet.error();
  if (!*fleet) return make_error(ErrorKind::not_found, "no fleet " + id);
  return std::move(**fleet);
}

Result<nlohmann::json> FleetService::view(const FleetRecord& fleet, bool with_members) {
  auto rows = store_.fleet_counts(fleet.id);
  if (!rows) return rows.error();
  auto c = count_fleet(fleet, *rows);
  nlohmann::json spec{{"max_parallel", fleet.spec["max_parallel"]},
                      {"canary", fleet.spec["canary"]},
                      {"max_failures", fleet.spec["max_failures"]}};
  for (const char* key : {"recipe_ref", "selector", "created_by"})
    if (fleet.spec.contains(key)) spec[key] = fleet.spec[key];
  if (!fleet.spec.contains("recipe_ref")) spec["recipe"] = redact(fleet.spec["recipe"]);
  nlohmann::json out{{"id", fleet.id},
                     {"name", fleet.spec.value("name", "")},
                     {"status", std::string(to_string(fleet.status))},
                     {"reason", fleet.reason.empty() ? nlohmann::json() : nlohmann::json(fleet.reason)},
                     {"launching", fleet.status == FleetStatus::running && fleet.reason.empty() && c.not_launched > 0},
                     {"spec", std::move(spec)},
                     {"counts", {{"total", c.total},
                                 {"not_launched", c.not_launched},
                                 {"in_flight", c.in_flight},
                                 {"succeeded", c.succeeded},
                                 {"failed", c.failed},
                                 {"failure_budget", c.failure_budget},
                                 {"by_status", c.by_status}}},
                     {"created_at", format_rfc3339_ms(fleet.created_ms)},
                     {"updated_at", format_rfc3339_ms(fleet.updated_ms)}};
  if (with_members) {
    auto members = store_.fleet_members(fleet.id);
    if (!members) return members.error();
    nlohmann::json list = nlohmann::json::array();
    for (const auto& m : *members) {
      nlohmann::json item{{"server_id", m.server_id},
                          {"serial", m.serial},
                          {"job_id", m.job_id.empty() ? nlohmann::json() : nlohmann::json(m.job_id)},
                          {"status", m.job_status ? nlohmann::json(std::string(to_string(*m.job_status)))
                                                  : nlohmann::json("not_launched")},
                          {"canary", m.position < bounded(fleet.spec, "canary", 0, kMaxMembers)}};
      if (!m.job_phase.empty()) item["phase"] = m.job_phase;
      if (!m.job_outcome.empty()) item["outcome"] = m.job_outcome;
      if (!m.job_failed_step.empty()) item["failed_step"] = m.job_failed_step;
      if (!m.job_error.empty()) item["error"] = m.job_error;
      list.push_back(std::move(item));
    }
    out["members"] = std::move(list);
  }
  return out;
}

Result<nlohmann::json> FleetService::get(const std::string& id) {
  auto fleet = load(id);
  if (!fleet) return fleet.error();
  return view(*fleet, true);
}

Result<nlohmann::json> FleetService::list(const FleetListQuery& q) {
  FleetFilter filter;
  std::vector<FieldError> errors;
  if (q.status) {
    filter.status = parse_fleet_status(*q.status);
    if (!filter.status) errors.push_back({"status", "unknown status '" + *q.status + "'"});
  }
  if (q.cursor) {
    filter.before_seq = decode_cursor(*q.cursor);
    if (!filter.before_seq) errors.push_back({"cursor", "not a cursor from this API"});
  }
  if (q.limit) {
    auto limit = parse_list_limit(*q.limit, max_list_limit_);
    if (!limit) errors.push_back({"limit", "must be an integer from 1 to " + std::to_string(max_list_limit_)});
    filter.limit = limit.value_or(0);
  }
  if (!errors.empty()) return make_error(ErrorKind::invalid_input, "bad query", std::move(errors));
  int asked = filter.limit;
  filter.limit = asked + 1;
  auto fleets = store_.list_fleets(filter);
  if (!fleets) return fleets.error();
  bool more = static_cast<int>(fleets->size()) > asked;
  if (more) fleets->pop_back();
  nlohmann::json items = nlohmann::json::array();
  for (const auto& f : *fleets) {
    auto item = view(f, false);
    if (!item) return item.error();
    items.push_back(std::move(*item));
  }
  nlohmann::json out{{"fleets", std::move(items)}};
  out["next_cursor"] = more ? nlohmann::json(encode_cursor(fleets->back().seq)) : nlohmann::json();
  return out;
}

Result<nlohmann::json> FleetService::move(const std::string& id, FleetStatus to, const std::string& actor) {
  for (int attempt = 0; attempt < 5; ++attempt) {
    auto fleet = load(id);
    if (!fleet) return fleet.error();
    if (fleet->status == to) return view(*fleet, true);  // repeated: same answer
    if (!is_fleet_transition_allowed(fleet->status, to))
      return make_error(ErrorKind::conflict, "fleet " + id + " is " + std::string(to_string(fleet->status)) +
                                                 " and cannot become " + std::string(to_string(to)));
    std::string reason = to == FleetStatus::canceled ? "canceled by " + actor : "";
    auto moved = store_.transition_fleet(id, fleet->status, to, reason, clock_.now_ms());
    if (!moved) return moved.error();
    if (!*moved) continue;  // a pass or another call moved it first: look again
    log_.info("fleet " + std::string(to_string(to)), {{"fleet_id", id}, {"by", actor}});
    auto now = load(id);
    if (!now) return now.error();
    if (to == FleetStatus::canceled) cancel_running_jobs(*now);
    wake();
    return view(*now, true);
  }
  return make_error(ErrorKind::conflict, "fleet " + id + " keeps changing; try again");
}

Result<nlohmann::json> FleetService::cancel(const std::string& id, const std::string& actor) {
  return move(id, FleetStatus::canceled, actor);
}
Result<nlohmann::json> FleetService::pause(const std::string& id, const std::string& actor) {
  return move(id, FleetStatus::paused, actor);
}
Result<nlohmann::json> FleetService::resume(const std::string& id, const std::string& actor) {
  return move(id, FleetStatus::running, actor);
}

void FleetService::cancel_running_jobs(const FleetRecord& fleet) {
  auto members = store_.fleet_members(fleet.id);
  if (!members) {
    log_.error("cannot read a canceled fleet's members", {{"fleet_id", fleet.id}, {"error", members.error().message}});
    return;
  }
  for (const auto& m : *members) {
    if (!m.job_status || (*m.job_status != JobStatus::queued && *m.job_status != JobStatus::provisioning)) continue;
    // A job that reached succeeded/failed meanwhile is finishing its cleanup: let it.
    auto canceled = jobs_.cancel(m.job_id);
    if (!canceled && canceled.error().kind != ErrorKind::conflict)
      log_.error("cannot cancel a fleet's job", {{"fleet_id", fleet.id}, {"job_id", m.job_id},
                                                 {"error", canceled.error().message}});
  }
}

void FleetService::finish_cancels() {
  FleetFilter filter;
  filter.status = FleetStatus::canceled;
  filter.limit = 500;
  for (;;) {
    auto page = store_.list_fleets(filter);
    if (!page) {
      log_.error("cannot list canceled fleets", {{"error", page.error().message}});
      return;
    }
    for (const auto& f : *page) cancel_running_jobs(f);
    if (page->size() < 500) return;
    filter.before_seq = page->back().seq;
  }
}

// The reason a fleet must stop launching (a failed canary, the budget exceeded), or "".
// `canary_members`: positions [0, canaries), read with the counts.
Result<std::string> FleetService::stop_reason(const std::string& id, const FleetCounts& c,
                                              const std::vector<FleetMember>& canary_members) {
  for (const auto& m : canary_members)
    if (member_failed(m)) return "canary " + describe_failure(m);
  if (c.failed <= c.failure_budget) return std::string();
  std::string reason = std::to_string(c.failed) + " failures exceed the budget of " + std::to_string(c.failure_budget);
  FleetMemberQuery first_failed;
  first_failed.failed_only = true;
  first_failed.limit = 1;
  auto failed = store_.fleet_members(id, first_failed);
  if (!failed) return failed.error();
  if (!failed->empty()) reason += "; first: " + describe_failure(failed->front());
  return reason;
}

Status FleetService::drive(const std::string& id) {
  auto fleet = load(id);
  if (!fleet) return fleet.error();
  if (is_terminal(fleet->status)) return Ok{};
  // The gates read counts and the canaries, never every member: a pass over a fleet of
  // 10,000 costs one grouped count.
  FleetCounts c;
  std::vector<FleetMember> canary_members;
  int canaries = 0;
  auto look = [&]() -> Status {
    auto rows = store_.fleet_counts(id);
    if (!rows) return rows.error();
    c = count_fleet(*fleet, *rows);
    canaries = std::min(bounded(fleet->spec, "canary", 0, kMaxMembers), c.total);
    canary_members.clear();
    if (canaries == 0) return Ok{};
    FleetMemberQuery q;
    q.below_position = canaries;
    auto read = store_.fleet_members(id, q);
    if (!read) return read.error();
    canary_members = std::move(*read);
    return Ok{};
  };
  if (auto looked = look(); !looked) return looked;

  // The gates that stop launching for good: a failed canary, then the budget.
  std::string reason = fleet->reason;
  auto stop_launching = [&](const std::string& why) -> Status {
    auto set = store_.set_fleet_reason(id, why, clock_.now_ms());
    if (!set) return set.error();
    log_.warn("fleet stopped launching", {{"fleet_id", id}, {"reason", why}});
    reason = why;
    return Ok{};
  };
  if (reason.empty()) {
    auto why = stop_reason(id, c, canary_members);
    if (!why) return why.error();
    if (!why->empty())
      if (auto s = stop_launching(*why); !s) return s;
  }

  if (!reason.empty()) {
    if (c.in_flight == 0) {
      auto ended = store_.transition_fleet(id, fleet->status, FleetStatus::failed, reason, clock_.now_ms());
      if (!ended) return ended.error();
      if (*ended) log_.warn("fleet failed", {{"fleet_id", id}, {"reason", reason}});
    }
    return Ok{};
  }
  if (c.not_launched == 0) {
    if (c.in_flight == 0) {
      auto ended = store_.transition_fleet(id, fleet->status, FleetStatus::succeeded, "", clock_.now_ms());
      if (!ended) return ended.error();
      if (*ended)
        log_.info("fleet succeeded", {{"fleet_id", id}, {"succeeded", std::to_string(c.succeeded)},
                                      {"failed", std::to_string(c.failed)}});
    }
    return Ok{};
  }
  if (fleet->status != FleetStatus::running) return Ok{};

  // Launch: canaries alone until they all succeeded, then the rest, up to max_parallel.
  int slots = bounded(fleet->spec, "max_parallel", kDefaultMaxParallel, kMaxMembers) - c.in_flight;
  if (slots <= 0) return Ok{};
  int limit_position = c.total;
  for (const auto& m : canary_members)
    if (!member_succeeded(m)) {
      limit_position = canaries;
      break;
    }
  FleetMemberQuery next;
  next.unlaunched_only = true;
  next.below_position = limit_position;
  next.limit = slots;
  auto todo = store_.fleet_members(id, next);
  if (!todo) return todo.error();
  // The pinned recipe was checked when the fleet was created; each launch only opens it.
  auto recipe = open_recipe_secrets(fleet->spec["recipe"], secret_key_);
  if (!recipe) return recipe.error();
  auto looked = std::chrono::steady_clock::now();
  for (const auto& m : *todo) {
    if (slots <= 0) break;
    if (std::chrono::steady_clock::now() - looked >= kRecheckEvery) {
      // Jobs launched earlier in this pass may have failed already: the gates again.
      if (auto again = look(); !again) return again;
      auto why = stop_reason(id, c, canary_members);
      if (!why) return why.error();
      if (!why->empty()) return stop_launching(*why);
      looked = std::chrono::steady_clock::now();
    }
    nlohmann::json request{{"server", {{"id", m.server_id}}}, {"recipe", *recipe}};
    auto made = jobs_.create_in_fleet(std::move(request), JobService::FleetLaunch{id, m.position});
    if (!made) {
      if (made.error().kind == ErrorKind::unavailable || made.error().kind == ErrorKind::internal) return made.error();
      // The member cannot be launched (its server was deleted or changed): that stops the
      // fleet like a failure would, with the reason, instead of skipping it silently.
      std::string why = "cannot launch " + m.serial + ": " + made.error().message;
      for (const auto& f : made.error().fields) why += "; " + f.path + ": " + f.message;
      return stop_launching(why);
    }
    if (!*made) return Ok{};  // paused, canceled or stopped meanwhile, or launched by another pass
    --slots;
    log_.info("fleet launched a job", {{"fleet_id", id}, {"serial", m.serial}, {"job_id", (**made)["id"].get<std::string>()}});
  }
  return Ok{};
}

void FleetService::run_once() {
  std::lock_guard pass(pass_mutex_);
  auto ids = store_.active_fleet_ids();
  if (!ids) {
    log_.error("cannot list fleets", {{"error", ids.error().message}});
    return;
  }
  for (const auto& id : *ids) {
    // One fleet's trouble (a bad stored document) must not stop the others, nor the process.
    try {
      if (auto driven = drive(id); !driven)
        log_.error("fleet pass failed", {{"fleet_id", id}, {"error", driven.error().message}});
    } catch (const std::exception& e) {
      log_.error("fleet pass failed", {{"fleet_id", id}, {"error", e.what()}});
    }
  }
}

void FleetService::start(std::chrono::milliseconds interval) {
  thread_ = std::thread([this, interval] {
    mark_store_background_thread();  // its reads leave some connections to the API
    for (;;) {
      {
        std::unique_lock lock(wake_mutex_);
        wake_cv_.wait_for(lock, interval, [this] { return woken_ || stopping_; });
        if (stopping_) return;
        woken_ = false;
      }
      run_once();
      // Wake-ups come with every commit; a pass at most every 100 ms is enough for the gates.
      std::unique_lock lock(wake_mutex_);
      wake_cv_.wait_for(lock, std::chrono::milliseconds(100), [this] { return stopping_; });
      if (stopping_) return;
    }
  });
}

void FleetService::stop() {
  {
    std::lock_guard lock(wake_mutex_);
    stopping_ = true;
  }
  wake_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void FleetService::wake() {
  {
    std::lock_guard lock(wake_mutex_);
    woken_ = true;
  }
  wake_cv_.notify_one();
}

}  // namespace provisioner
