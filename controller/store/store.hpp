#pragma once
// The Store interface: everything the controller persists. SQLite is the embedded default;
// SQL stays portable so a PostgreSQL backend can follow.
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/result.hpp"
#include "controller/fleets/fleet_status.hpp"
#include "controller/jobs/job_status.hpp"
#include "controller/nodes/node_state.hpp"

namespace provisioner {

struct JobRecord {
  std::string id;
  std::int64_t seq = 0;            // insertion order; pagination cursor
  JobStatus status = JobStatus::queued;  // decoded once, here at the store boundary
  std::string phase;               // last phase reached inside `provisioning`
  std::string server_serial;
  // The stored documents, parsed once when the row is read (a row that does not parse is an
  // error there), never again at each use.
  nlohmann::json server;           // server reference or inline BMC; secrets sealed
  nlohmann::json recipe;           // secrets sealed
  std::string webhook_key_sealed;  // per-job HMAC key, sealed with the controller key
  std::string failed_step;
  std::string error;
  nlohmann::json media = nlohmann::json::object();  // task/boot ISO artifacts (sha256 + URL) once built
  std::string fleet_id;            // the fleet that launched it, or empty
  std::string node_id;             // the node it runs on, or empty
  std::int64_t created_ms = 0;
  std::int64_t updated_ms = 0;
};

struct JobEvent {
  std::int64_t seq = 0;
  std::string kind;    // "transition" | "phase"
  std::string name;    // new status, or phase name
  std::string from;    // previous status (transitions)
  std::string detail;
  std::int64_t at_ms = 0;
};

struct JobFilter {
  std::optional<JobStatus> status;
  std::optional<std::string> server_serial;
  std::optional<std::int64_t> before_seq;  // newest first: only jobs with seq < before_seq
  int limit = 50;
};

// Fields a transition may set along with the status.
struct JobChanges {
  std::optional<std::string> failed_step;
  std::optional<std::string> error;
};

struct ServerRecord {
  std::string id;
  std::string serial;
  nlohmann::json record;  // parsed once when read; secrets sealed
  std::int64_t created_ms = 0;
  std::int64_t updated_ms = 0;
};

// A machine that boots from the network. `record` holds its identity (macs, uuid, serial:
// normalised, each unique across nodes), name, labels, recipe_ref, the job it is running
// (job_id), what inspection found (inventory) and its last boot request.
struct NodeRecord {
  std::string id;
  NodeState state = NodeState::discovered;
  nlohmann::json record = nlohmann::json::object();
  std::int64_t created_ms = 0;
  std::int64_t updated_ms = 0;
};

struct NodeEvent {
  std::int64_t seq = 0;
  std::string from;    // previous state ("" for the registration)
  std::string to;      // new state
  std::string actor;   // who: "api:<role>", "boot", "job:<id>", "discovery"
  std::string detail;
  std::int64_t at_ms = 0;
};

struct FleetRecord {
  std::string id;
  std::int64_t seq = 0;
  FleetStatus status = FleetStatus::running;
  nlohmann::json spec = nlohmann::json::object();  // the request as accepted (recipe sealed)
  std::string reason;  // why it stopped launching, or why it ended
  std::int64_t created_ms = 0;
  std::int64_t updated_ms = 0;
};

// A server in a fleet, with its job (once launched) as it stands now.
struct FleetMember {
  int position = 0;
  std::string server_id;
  std::string serial;
  std::string job_id;                   // empty until launched
  std::optional<JobStatus> job_status;  // read with the member
  std::string job_phase;
  std::string job_outcome;  // the job's last of succeeded/failed/canceled, or empty
  std::string job_failed_step;
  std::string job_error;
};

// Which of a fleet's members fleet_members reads (all, by default), in position order.
struct FleetMemberQuery {
  int below_position = INT32_MAX;  // only positions [0, below_position)
  bool unlaunched_only = false;    // only members without a job yet
  bool failed_only = false;        // only members whose job's outcome is failed or canceled
  int limit = -1;                  // at most this many (-1: no bound)
};

// A fleet's members counted by whether they were launched, their job's status and its outcome:
// the gates and the views count these rows instead of reading every member.
struct FleetCountRow {
  bool launched = false;
  std::optional<JobStatus> job_status;
  std::string outcome;
  int count = 0;
};

struct FleetFilter {
  std::optional<FleetStatus> status;
  std::optional<std::int64_t> before_seq;  // newest first
  int limit = 50;
};

// One change of a job, node or fleet, in the order they were written. The stream's id.
struct EventRecord {
  std::int64_t seq = 0;
  std::string topic;  // "job" | "node" | "fleet"
  std::string kind;   // "transition" | "phase" | "phase_withdrawn" | "created"
  std::string name;   // new status/state, or the phase
  std::string from;
  std::string detail;
  std::string job_id, fleet_id, node_id, serial;
  std::int64_t at_ms = 0;
};

struct EventFilter {
  std::optional<std::string> job, fleet, node;  // any that are set must match
};

// Background work (the reconciler's workers and ticker, the fleet runner) marks its threads:
// a store may then keep some of its read connections for the other threads (the API, the
// webhooks, the boot endpoints), so a busy reconciler never makes an API call wait behind it.
inline thread_local bool store_background_thread = false;
inline void mark_store_background_thread() { store_background_thread = true; }

class Store {
 public:
  virtual ~Store() = default;

  // Called after every commit that wrote an event (set once at start-up, before any write):
  // the event stream and the fleet runner wake on it instead of polling.
  void on_events_written(std::function<void()> listener) { events_listener_ = std::move(listener); }

  virtual Status insert_job(const JobRecord& job) = 0;
  virtual Result<std::optional<JobRecord>> get_job(const std::string& id) = 0;
  virtual Result<std::vector<JobRecord>> list_jobs(const JobFilter& filter) = 0;

  // Compare-and-swap: moves the job from `expected` to `next` and appends a transition event,
  // in one transaction. false (and nothing written) when the job is not in `expected`.
  virtual Result<bool> transition_job(const std::string& id, JobStatus expected, JobStatus next,
                                      const JobChanges& changes, const std::string& detail, std::int64_t now_ms) = 0;

  // Records a phase once: false when the job already has it (a duplicate is never applied).
  virtual Result<bool> record_phase(const std::string& id, const std::string& phase, const std::string& detail,
                                    std::int64_t now_ms) = 0;

  // record_phase, only while the job is in `expected_status`, in the same transaction. For
  // phases that are intents rather than facts (reset_issued: "about to reset"): a cancel that
  // committed first makes it false, and then the action is never taken.
  virtual Result<bool> record_phase_if_status(const std::string& id, const std::string& phase,
                                              JobStatus expected_status, const std::string& detail,
                                              std::int64_t now_ms) = 0;

  // Replaces a job's stored recipe (only to seal what an older version stored in clear: the
  // recipe is otherwise immutable). False when there is no such job.
  virtual Result<bool> update_job_recipe(const std::string& id, const nlohmann::json& recipe, std::int64_t now_ms) = 0;

  // Moves everything written into the main file and empties the log (SQLite: a WAL checkpoint
  // that truncates it), so that bytes a rewrite replaced are nowhere on disk any more.
  virtual Status flush_rewrites() = 0;

  // Takes back an intent recorded with record_phase_if_status whose action was never taken
  // (the controller stopped before the reset went out): the job no longer has the phase, so
  // the next pass records it again and acts; a `phase_withdrawn` event (name: the phase)
  // keeps the history. False when the job does not have the phase.
  virtual Result<bool> withdraw_phase(const std::string& id, const std::string& phase, const std::string& detail,
                                      std::int64_t now_ms) = 0;

  virtual Result<std::vector<JobEvent>> job_events(const std::string& id) = 0;

  // Records the job's media; only while the job is in `expected_status` (compare-and-swap).
  virtual Result<bool> set_job_media(const std::string& id, JobStatus expected_status,
                                     const nlohmann::json& media, std::int64_t now_ms) = 0;

  // Ids of the jobs the reconciler still has work for: every status but complete and
  // canceled, plus canceled jobs whose cleanup has not run. Oldest first. Ids only: the
  // reconciler reads each job fresh when it drives it.
  virtual Result<std::vector<std::string>> job_ids_to_reconcile(int limit) = 0;

  // The media of every job that still needs them (not complete, not canceled).
  virtual Result<std::vector<nlohmann::json>> media_in_use() = 0;

  // Remembers a webhook signature until `expires_ms`; false when it was already seen (replay).
  virtual Result<bool> remember_webhook(const std::string& signature, std::int64_t now_ms, std::int64_t expires_ms) = 0;

  virtual Result<std::map<std::string, std::int64_t>> count_jobs_by_status() = 0;

  virtual Result<std::optional<std::string>> get_setting(const std::string& key) = 0;
  virtual Status set_setting(const std::string& key, const std::string& value) = 0;

  // Servers. A duplicate serial is a conflict.
  virtual Status insert_server(const ServerRecord& server) = 0;
  virtual Result<std::optional<ServerRecord>> get_server(const std::string& id) = 0;
  virtual Result<std::vector<ServerRecord>> list_servers(const std::optional<std::string>& after_id, int limit) = 0;
  // Compare-and-swap on updated_ms: false when someone else changed the record first.
  virtual Result<bool> update_server(const ServerRecord& server, std::int64_t expected_updated_ms) = 0;
  virtual Result<bool> delete_server(const std::string& id) = 0;
  // Jobs for this serial that are not finished (queued, provisioning, succeeded, failed).
  virtual Result<std::int64_t> count_unfinished_jobs(const std::string& serial) = 0;

  // Nodes. Every identifier (node_identity_keys) is unique: an insert or update that would
  // give one to a second node is a conflict, and nothing is written. The first event
  // (from "") records the registration.
  virtual Status insert_node(const NodeRecord& node, const std::string& actor, const std::string& detail) = 0;
  virtual Result<std::optional<NodeRecord>> get_node(const std::string& id) = 0;
  // The node holding an identity key ("mac:aa:bb:…", "uuid:…", "serial:…").
  virtual Result<std::optional<NodeRecord>> find_node(const std::string& key) = 0;
  virtual Result<std::vector<NodeRecord>> list_nodes(const std::optional<std::string>& after_id, int limit) = 0;
  // Compare-and-swap on updated_ms; the state is never changed here (transition_node).
  virtual Result<bool> update_node(const NodeRecord& node, std::int64_t expected_updated_ms) = 0;
  // Compare-and-swap on the state and updated_ms (the record as the caller read it): moves
  // the node from `expected` to node.state, stores node.record, and appends an event, in one
  // transaction. false when it is no longer in `expected` or changed since it was read.
  virtual Result<bool> transition_node(const NodeRecord& node, NodeState expected, std::int64_t expected_updated_ms,
                                       const std::string& actor, const std::string& detail) = 0;
  virtual Result<std::vector<NodeEvent>> node_events(const std::string& id) = 0;
  virtual Result<bool> delete_node(const std::string& id) = 0;

  // Fleets. The members are written with the fleet, in one transaction, with a "created" event.
  virtual Status insert_fleet(const FleetRecord& fleet, const std::vector<FleetMember>& members) = 0;
  virtual Result<std::optional<FleetRecord>> get_fleet(const std::string& id) = 0;
  virtual Result<std::vector<FleetRecord>> list_fleets(const FleetFilter& filter) = 0;
  // Ids of fleets that are not finished (running, paused), oldest first.
  virtual Result<std::vector<std::string>> active_fleet_ids() = 0;
  // Compare-and-swap with an event; false when it is no longer in `expected`.
  virtual Result<bool> transition_fleet(const std::string& id, FleetStatus expected, FleetStatus next,
                                        const std::string& reason, std::int64_t now_ms) = 0;
  // Records why a fleet stopped launching (the first reason stays); false when one was set.
  virtual Result<bool> set_fleet_reason(const std::string& id, const std::string& reason, std::int64_t now_ms) = 0;
  virtual Result<std::vector<FleetMember>> fleet_members(const std::string& id, const FleetMemberQuery& query = {}) = 0;
  virtual Result<std::vector<FleetCountRow>> fleet_counts(const std::string& id) = 0;
  // Inserts a fleet's job and names it on its member, in one transaction, only while the fleet
  // is running, has not stopped launching (no reason set) and the member has no job yet; false (nothing written) otherwise. This is what
  // launches a member at most once, across restarts and racing launchers.
  virtual Result<bool> insert_fleet_job(const JobRecord& job, const std::string& fleet_id, int position) = 0;

  // The event stream: events after `after_seq`, oldest first.
  virtual Result<std::vector<EventRecord>> events_after(std::int64_t after_seq, const EventFilter& filter,
                                                        int limit) = 0;
  virtual Result<std::int64_t> last_event_seq() = 0;

 protected:
  void events_written() const {
    if (events_listener_) events_listener_();
  }

 private:
  std::function<void()> events_listener_;
};

}  // namespace provisioner
