#include "tests/support/in_memory_store.hpp"

#include <algorithm>
#include <climits>

#include "controller/nodes/node_identity.hpp"

namespace provisioner::test {

namespace {
Error write_refused() { return make_error(ErrorKind::internal, "in-memory store: writes fail (staged by the test)"); }
bool unfinished(JobStatus status) { return !is_terminal(status); }
}  // namespace

void InMemoryStore::fail_writes(bool fail) {
  std::lock_guard lock(mutex_);
  fail_writes_ = fail;
}

void InMemoryStore::add_event(const std::string& id, std::string kind, std::string name, std::string from,
                              std::string detail, std::int64_t at_ms) {
  if (auto job = jobs_.find(id); job != jobs_.end())
    stream_push({0, "job", kind, name, from, detail, id, job->second.fleet_id, job->second.node_id,
                 job->second.server_serial, at_ms});
  events_[id].push_back(JobEvent{next_event_seq_++, std::move(kind), std::move(name), std::move(from),
                                 std::move(detail), at_ms});
}

Status InMemoryStore::insert_job(const JobRecord& job) {
  std::lock_guard lock(mutex_);
  if (fail_writes_) return write_refused();
  if (jobs_.count(job.id)) return make_error(ErrorKind::conflict, "job " + job.id + " already exists");
  JobRecord stored = job;
  stored.seq = next_seq_++;
  jobs_[job.id] = stored;
  add_event(job.id, "transition", std::string(to_string(job.status)), "", "created", job.created_ms);
  return Ok{};
}

Result<std::optional<JobRecord>> InMemoryStore::get_job(const std::string& id) {
  std::lock_guard lock(mutex_);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return std::optional<JobRecord>();
  return std::optional<JobRecord>(it->second);
}

Result<std::vector<JobRecord>> InMemoryStore::list_jobs(const JobFilter& filter) {
  std::lock_guard lock(mutex_);
  std::vector<JobRecord> out;
  for (const auto& [id, j] : jobs_) {
    if (j.seq >= filter.before_seq.value_or(INT64_MAX)) continue;
    if (filter.status && j.status != *filter.status) continue;
    if (filter.server_serial && j.server_serial != *filter.server_serial) continue;
    out.push_back(j);
  }
  std::sort(out.begin(), out.end(), [](const JobRecord& a, const JobRecord& b) { return a.seq > b.seq; });
  if (out.size() > static_cast<std::size_t>(std::max(filter.limit, 0))) out.resize(static_cast<std::size_t>(filter.limit));
  return out;
}

Result<bool> InMemoryStore::transition_job(const std::string& id, JobStatus expected, JobStatus next,
                                           const JobChanges& changes, const std::string& detail, std::int64_t now_ms) {
  std::lock_guard lock(mutex_);
  if (fail_writes_) return write_refused();
  auto it = jobs_.find(id);
  if (it == jobs_.end() || it->second.status != expected) return false;
  it->second.status = next;
  it->second.updated_ms = now_ms;
  if (changes.failed_step) it->second.failed_step = *changes.failed_step;
  if (changes.error) it->second.error = *changes.error;
  add_event(id, "transition", std::string(to_string(next)), std::string(to_string(expected)), detail, now_ms);
  return true;
}

bool InMemoryStore::has_phase(const std::string& id, const std::string& phase) const {
  auto it = phases_.find(id);
  return it != phases_.end() && it->second.count(phase);
}

Result<bool> InMemoryStore::add_phase(const std::string& id, const std::string& phase,
                                      const JobStatus* expected_status, const std::string& detail,
                                      std::int64_t now_ms) {
  std::lock_guard lock(mutex_);
  if (fail_writes_) return write_refused();
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return false;
  if (expected_status && it->second.status != *expected_status) return false;
  if (!phases_[id].insert(phase).second) return false;
  it->second.phase = phase;
  it->second.updated_ms = now_ms;
  add_event(id, "phase", phase, "", detail, now_ms);
  return true;
}

Result<bool> InMemoryStore::record_phase(const std::string& id, const std::string& phase, const std::string& detail,
                                         std::int64_t now_ms) {
  return add_phase(id, phase, nullptr, detail, now_ms);
}

Result<bool> InMemoryStore::record_phase_if_status(const std::string& id, const std::string& phase,
                                                   JobStatus expected_status, const std::string& detail,
                                                   std::int64_t now_ms) {
  return add_phase(id, phase, &expected_status, detail, now_ms);
}

Result<bool> InMemoryStore::update_job_recipe(const std::string& id, const nlohmann::json& recipe,
                                              std::int64_t now_ms) {
  std::lock_guard lock(mutex_);
  if (fail_writes_) return write_refused();
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return false;
  it->second.recipe = recipe;
  it->second.updated_ms = now_ms;
  return true;
}

Status InMemoryStore::flush_rewrites() { return Ok{}; }

Result<bool> InMemoryStore::withdraw_phase(const std::string& id, const std::string& phase, const std::string& detail,
                                           std::int64_t now_ms) {
  std::lock_guard lock(mutex_);
  if (fail_writes_) return write_refused();
  auto it = jobs_.find(id);
  if (it == jobs_.end() || !phases_[id].erase(phase)) return false;
  // The job's current phase is its latest remaining one.
  std::string latest;
  for (const auto& e : events_[id])
    if (e.kind == "phase" && phases_[id].count(e.name)) latest = e.name;
  it->second.phase = latest;
  it->second.updated_ms = now_ms;
  add_event(id, "phase_withdrawn", phase, "", detail, now_ms);
  return true;
}

Result<std::vector<JobEvent>> InMemoryStore::job_events(const std::string& id) {
  ++job_event_reads;
  std::lock_guard lock(mutex_);
  auto it = events_.find(id);
  return it == events_.end() ? std::vector<JobEvent>() : it->second;
}

Result<bool> InMemoryStore::set_job_media(const std::string& id, JobStatus expected_status,
                                          const nlohmann::json& media, std::int64_t now_ms) {
  if (!media.is_object()) return make_error(ErrorKind::invalid_input, "a job's media must be a JSON object");
  std::lock_guard lock(mutex_);
  if (fail_writes_) return write_refused();
  auto it = jobs_.find(id);
  if (it == jobs_.end() || it->second.status != expected_status) return false;
  it->second.media = media;
  it->second.updated_ms = now_ms;
  return true;
}

Result<std::vector<std::string>> InMemoryStore::job_ids_to_reconcile(int limit) {
  std::lock_guard lock(mutex_);
  std::vector<const JobRecord*> todo;
  for (const auto& [id, j] : jobs_)
    if (unfinished(j.status) || (j.status == JobStatus::canceled && !has_phase(id, "cleanup_done"))) todo.push_back(&j);
  std::sort(todo.begin(), todo.end(), [](const JobRecord* a, const JobRecord* b) { return a->seq < b->seq; });
  std::vector<std::string> out;
  for (const auto* j : todo) {
    if (out.size() >= static_cast<std::size_t>(std::max(limit, 0))) break;
    out.push_back(j->id);
  }
  return out;
}

Result<std::vector<nlohmann::json>> InMemoryStore::media_in_use() {
  std::lock_guard lock(mutex_);
  std::vector<nlohmann::json> out;
  for (const auto& [id, j] : jobs_)
    if (unfinished(j.status)) out.push_back(j.media);
  return out;
}

Result<bool> InMemoryStore::remember_webhook(const std::string& signature, std::int64_t now_ms,
                                             std::int64_t expires_ms) {
  std::lock_guard lock(mutex_);
  if (fail_writes_) return write_refused();
  std::erase_if(webhook_signatures_, [&](const auto& s) { return s.second < now_ms; });
  return webhook_signatures_.emplace(signature, expires_ms).second;
}

Result<std::map<std::string, std::int64_t>> InMemoryStore::count_jobs_by_status() {
  std::lock_guard lock(mutex_);
  std::map<std::string, std::int64_t> out;
  for (const auto& [id, j] : jobs_) ++out[std::string(to_string(j.status))];
  return out;
}

Result<std::optional<std::string>> InMemoryStore::get_setting(const std::string& key) {
  std::lock_guard lock(mutex_);
  auto it = settings_.find(key);
  if (it == settings_.end()) return std::optional<std::string>();
  return std::optional<std::string>(it->second);
}

Status InMemoryStore::set_setting(const std::string& key, const std::string& value) {
  std::lock_guard lock(mutex_);
  if (fail_writes_) return write_refused();
  settings_[key] = value;
  return Ok{};
}

Status InMemoryStore::insert_server(const ServerRecord& server) {
  std::lock_guard lock(mutex_);
  if (fail_writes_) return write_refused();
  for (const auto& [id, s] : servers_)
    if (id == server.id || s.serial == server.serial)
      return make_error(ErrorKind::conflict, "a server with serial " + server.serial + " exists");
  servers_[server.id] = server;
  return Ok{};
}

Result<std::optional<ServerRecord>> InMemoryStore::get_server(const std::string& id) {
  std::lock_guard lock(mutex_);
  auto it = servers_.find(id);
  if (it == servers_.end()) return std::optional<ServerRecord>();
  return std::optional<ServerRecord>(it->second);
}

Result<std::vector<ServerRecord>> InMemoryStore::list_servers(const std::optional<std::string>& after_id, int limit) {
  std::lock_guard lock(mutex_);
  std::vector<ServerRecord> out;
  for (auto it = after_id ? servers_.upper_bound(*after_id) : servers_.begin();
       it != servers_.end() && out.size() < static_cast<std::size_t>(std::max(limit, 0)); ++it)
    out.push_back(it->second);
  return out;
}

Result<bool> InMemoryStore::update_server(const ServerRecord& server, std::int64_t expected_updated_ms) {
  std::lock_guard lock(mutex_);
  if (fail_writes_) return write_refused();
  auto it = servers_.find(server.id);
  if (it == servers_.end() || it->second.updated_ms != expected_updated_ms) return false;
  for (const auto& [id, s] : servers_)
    if (id != server.id && s.serial == server.serial)
      return make_error(ErrorKind::conflict, "a server with serial " + server.serial + " exists");
  it->second = server;
  return true;
}

Result<bool> InMemoryStore::delete_server(const std::string& id) {
  std::lock_guard lock(mutex_);
  if (fail_writes_) return write_refused();
  return servers_.erase(id) == 1;
}

Result<std::int64_t> InMemoryStore::count_unfinished_jobs(const std::string& serial) {
  std::lock_guard lock(mutex_);
  std::int64_t n = 0;
  for (const auto& [id, j] : jobs_)
    if (j.server_serial == serial && unfinished(j.status)) ++n;
  return n;
}

std::optional<std::string> InMemoryStore::node_key_clash(const NodeRecord& node) const {
  auto mine = node_identity_keys(node.record);
  for (const auto& [id, other] : nodes_) {
    if (id == node.id) continue;
    for (const auto& key : node_identity_keys(other.record))
      if (std::find(mine.begin(), mine.end(), key) != mine.end()) return key;
  }
  return std::nullopt;
}

Status InMemoryStore::insert_node(const NodeRecord& node, const std::string& actor, const std::string& detail) {
  std::lock_guard lock(mutex_);
  if (fail_writes_) return write_refused();
  if (nodes_.count(node.id)) return make_error(ErrorKind::conflict, "a node " + node.id + " exists");
  if (auto key = node_key_clash(node)) return make_error(ErrorKind::conflict, "another node has " + *key);
  nodes_[node.id] = node;
  node_events_[node.id].push_back(
      NodeEvent{next_node_event_seq_++, "", std::string(to_string(node.state)), actor, detail, node.created_ms});
  stream_push({0, "node", "created", std::string(to_string(node.state)), "", detail, text_of(node.record, "job_id"), "",
               node.id, text_of(node.record, "serial"), node.created_ms});
  return Ok{};
}

Result<std::optional<NodeRecord>> InMemoryStore::get_node(const std::string& id) {
  std::lock_guard lock(mutex_);
  auto it = nodes_.find(id);
  if (it == nodes_.end()) return std::optional<NodeRecord>();
  return std::optional<NodeRecord>(it->second);
}

Result<std::optional<NodeRecord>> InMemoryStore::find_node(const std::string& key) {
  std::lock_guard lock(mutex_);
  for (const auto& [id, node] : nodes_) {
    auto keys = node_identity_keys(node.record);
    if (std::find(keys.begin(), keys.end(), key) != keys.end()) return std::optional<NodeRecord>(node);
  }
  return std::optional<NodeRecord>();
}

Result<std::vector<NodeRecord>> InMemoryStore::list_nodes(const std::optional<std::string>& after_id, int limit) {
  std::lock_guard lock(mutex_);
  std::vector<NodeRecord> out;
  for (auto it = nodes_.upper_bound(after_id.value_or("")); it != nodes_.end() && static_cast<int>(out.size()) < limit; ++it)
    out.push_back(it->second);
  return out;
}

Result<bool> InMemoryStore::update_node(const NodeRecord& node, std::int64_t expected_updated_ms) {
  std::lock_guard lock(mutex_);
  if (fail_writes_) return write_refused();
  auto it = nodes_.find(node.id);
  if (it == nodes_.end() || it->second.updated_ms != expected_updated_ms) return false;
  if (auto key = node_key_clash(node)) return make_error(ErrorKind::conflict, "another node has " + *key);
  auto state = it->second.state;  // never changed here
  it->second = node;
  it->second.state = state;
  return true;
}

Result<bool> InMemoryStore::transition_node(const NodeRecord& node, NodeState expected, std::int64_t expected_updated_ms,
                                            const std::string& actor, const std::string& detail) {
  std::lock_guard lock(mutex_);
  if (fail_writes_) return write_refused();
  auto it = nodes_.find(node.id);
  if (it == nodes_.end() || it->second.state != expected || it->second.updated_ms != expected_updated_ms) return false;
  if (auto key = node_key_clash(node)) return make_error(ErrorKind::conflict, "another node has " + *key);
  auto created = it->second.created_ms;
  it->second = node;
  it->second.created_ms = created;
  node_events_[node.id].push_back(NodeEvent{next_node_event_seq_++, std::string(to_string(expected)),
                                            std::string(to_string(node.state)), actor, detail, node.updated_ms});
  stream_push({0, "node", "transition", std::string(to_string(node.state)), std::string(to_string(expected)), detail,
               text_of(node.record, "job_id"), "", node.id, text_of(node.record, "serial"), node.updated_ms});
  return true;
}

Result<std::vector<NodeEvent>> InMemoryStore::node_events(const std::string& id) {
  std::lock_guard lock(mutex_);
  auto it = node_events_.find(id);
  if (it == node_events_.end()) return std::vector<NodeEvent>();
  return it->second;
}

Result<bool> InMemoryStore::delete_node(const std::string& id) {
  std::lock_guard lock(mutex_);
  if (fail_writes_) return write_refused();
  node_events_.erase(id);
  return nodes_.erase(id) == 1;
}

std::string InMemoryStore::text_of(const nlohmann::json& record, const char* key) {
  auto it = record.find(key);
  return it != record.end() && it->is_string() ? it->get<std::string>() : std::string();
}

void InMemoryStore::stream_push(EventRecord event) {
  event.seq = static_cast<std::int64_t>(stream_.size()) + 1;
  stream_.push_back(std::move(event));
  events_written();
}

Status InMemoryStore::insert_fleet(const FleetRecord& fleet, const std::vector<FleetMember>& members) {
  std::lock_guard lock(mutex_);
  if (fail_writes_) return write_refused();
  if (fleets_.count(fleet.id)) return make_error(ErrorKind::conflict, "fleet " + fleet.id + " already exists");
  auto& f = fleets_[fleet.id];
  f = fleet;
  f.seq = next_fleet_seq_++;
  auto& mine = fleet_members_[fleet.id];
  for (const auto& m : members) mine.push_back(FleetMember{m.position, m.server_id, m.serial, "", {}, {}, {}, {}, {}});
  stream_push({0, "fleet", "created", std::string(to_string(fleet.status)), "",
               std::to_string(members.size()) + " servers", "", fleet.id, "", "", fleet.created_ms});
  return Ok{};
}

Result<std::optional<FleetRecord>> InMemoryStore::get_fleet(const std::string& id) {
  std::lock_guard lock(mutex_);
  auto it = fleets_.find(id);
  if (it == fleets_.end()) return std::optional<FleetRecord>();
  return std::optional<FleetRecord>(it->second);
}

Result<std::vector<FleetRecord>> InMemoryStore::list_fleets(const FleetFilter& filter) {
  std::lock_guard lock(mutex_);
  std::vector<FleetRecord> out;
  for (const auto& [id, f] : fleets_)
    if (f.seq < filter.before_seq.value_or(INT64_MAX) && (!filter.status || f.status == *filter.status)) out.push_back(f);
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.seq > b.seq; });
  if (static_cast<int>(out.size()) > filter.limit) out.resize(static_cast<std::size_t>(filter.limit));
  return out;
}

Result<std::vector<std::string>> InMemoryStore::active_fleet_ids() {
  std::lock_guard lock(mutex_);
  std::vector<std::pair<std::int64_t, std::string>> active;
  for (const auto& [id, f] : fleets_)
    if (!is_terminal(f.status)) active.emplace_back(f.seq, id);
  std::sort(active.begin(), active.end());
  std::vector<std::string> out;
  for (auto& [seq, id] : active) out.push_back(id);
  return out;
}

Result<bool> InMemoryStore::transition_fleet(const std::string& id, FleetStatus expected, FleetStatus next,
                                             const std::string& reason, std::int64_t now_ms) {
  std::lock_guard lock(mutex_);
  if (fail_writes_) return write_refused();
  auto it = fleets_.find(id);
  if (it == fleets_.end() || it->second.status != expected) return false;
  it->second.status = next;
  if (!reason.empty()) it->second.reason = reason;
  it->second.updated_ms = now_ms;
  stream_push({0, "fleet", "transition", std::string(to_string(next)), std::string(to_string(expected)), reason, "", id,
               "", "", now_ms});
  return true;
}

Result<bool> InMemoryStore::set_fleet_reason(const std::string& id, const std::string& reason, std::int64_t now_ms) {
  std::lock_guard lock(mutex_);
  if (fail_writes_) return write_refused();
  auto it = fleets_.find(id);
  if (it == fleets_.end() || !it->second.reason.empty()) return false;
  it->second.reason = reason;
  it->second.updated_ms = now_ms;
  stream_push({0, "fleet", "stopped_launching", "", "", reason, "", id, "", "", now_ms});
  return true;
}

Result<std::vector<FleetMember>> InMemoryStore::fleet_members(const std::string& id, const FleetMemberQuery& q) {
  std::lock_guard lock(mutex_);
  auto it = fleet_members_.find(id);
  if (it == fleet_members_.end()) return std::vector<FleetMember>();
  std::vector<FleetMember> out;
  for (auto m : it->second) {
    if (m.position >= q.below_position || (q.unlaunched_only && !m.job_id.empty())) continue;
    if (auto job = jobs_.find(m.job_id); job != jobs_.end()) {
      m.job_status = job->second.status;
      m.job_phase = job->second.phase;
      m.job_failed_step = job->second.failed_step;
      m.job_error = job->second.error;
      for (const auto& e : events_[m.job_id])
        if (e.kind == "transition" && (e.name == "succeeded" || e.name == "failed" || e.name == "canceled"))
          m.job_outcome = e.name;
    }
    if (q.failed_only && m.job_outcome != "failed" && m.job_outcome != "canceled") continue;
    if (q.limit >= 0 && static_cast<int>(out.size()) >= q.limit) break;
    out.push_back(std::move(m));
  }
  return out;
}

Result<std::vector<FleetCountRow>> InMemoryStore::fleet_counts(const std::string& id) {
  auto members = fleet_members(id);
  if (!members) return members.error();
  std::vector<FleetCountRow> out;
  for (const auto& m : *members) {
    auto row = std::find_if(out.begin(), out.end(), [&](const FleetCountRow& r) {
      return r.launched == !m.job_id.empty() && r.job_status == m.job_status && r.outcome == m.job_outcome;
    });
    if (row == out.end()) row = out.insert(out.end(), FleetCountRow{!m.job_id.empty(), m.job_status, m.job_outcome, 0});
    ++row->count;
  }
  return out;
}

Result<bool> InMemoryStore::insert_fleet_job(const JobRecord& job, const std::string& fleet_id, int position) {
  std::lock_guard lock(mutex_);
  if (fail_writes_) return write_refused();
  auto fleet = fleets_.find(fleet_id);
  if (fleet == fleets_.end() || fleet->second.status != FleetStatus::running || !fleet->second.reason.empty()) return false;
  auto& members = fleet_members_[fleet_id];
  auto m = std::find_if(members.begin(), members.end(), [&](const auto& x) { return x.position == position; });
  if (m == members.end() || !m->job_id.empty()) return false;
  if (jobs_.count(job.id)) return make_error(ErrorKind::conflict, "job " + job.id + " already exists");
  m->job_id = job.id;
  auto& j = jobs_[job.id];
  j = job;
  j.seq = next_seq_++;
  add_event(job.id, "transition", std::string(to_string(job.status)), "", "created", job.created_ms);
  return true;
}

Result<std::vector<EventRecord>> InMemoryStore::events_after(std::int64_t after_seq, const EventFilter& f, int limit) {
  std::lock_guard lock(mutex_);
  std::vector<EventRecord> out;
  for (auto i = static_cast<std::size_t>(std::max<std::int64_t>(after_seq, 0)); i < stream_.size(); ++i) {
    const auto& e = stream_[i];
    if ((f.job && e.job_id != *f.job) || (f.fleet && e.fleet_id != *f.fleet) || (f.node && e.node_id != *f.node)) continue;
    out.push_back(e);
    if (static_cast<int>(out.size()) >= limit) break;
  }
  return out;
}

Result<std::int64_t> InMemoryStore::last_event_seq() {
  std::lock_guard lock(mutex_);
  return static_cast<std::int64_t>(stream_.size());
}

}  // namespace provisioner::test
