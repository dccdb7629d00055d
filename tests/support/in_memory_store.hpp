#pragma once
// An in-memory Store for unit tests of the job service, the reconciler and the BMC driver:
// the same contract as SqlStore (compare-and-swap transitions, phases recorded once,
// intents only in the expected status, events in order), no file, no SQL. Its behaviour is
// pinned against SqlStore by tests/unit/controller/store_contract_test.cpp.
#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "controller/store/store.hpp"

namespace provisioner::test {

class InMemoryStore final : public Store {
 public:
  Status insert_job(const JobRecord& job) override;
  Result<std::optional<JobRecord>> get_job(const std::string& id) override;
  Result<std::vector<JobRecord>> list_jobs(const JobFilter& filter) override;
  Result<bool> transition_job(const std::string& id, JobStatus expected, JobStatus next,
                              const JobChanges& changes, const std::string& detail, std::int64_t now_ms) override;
  Result<bool> update_job_recipe(const std::string& id, const nlohmann::json& recipe, std::int64_t now_ms) override;
  Status flush_rewrites() override;
  Result<bool> withdraw_phase(const std::string& id, const std::string& phase, const std::string& detail,
                              std::int64_t now_ms) override;
  Result<bool> record_phase(const std::string& id, const std::string& phase, const std::string& detail,
                            std::int64_t now_ms) override;
  Result<bool> record_phase_if_status(const std::string& id, const std::string& phase, JobStatus expected_status,
                                      const std::string& detail, std::int64_t now_ms) override;
  Result<std::vector<JobEvent>> job_events(const std::string& id) override;
  Result<bool> set_job_media(const std::string& id, JobStatus expected_status, const nlohmann::json& media,
                             std::int64_t now_ms) override;
  Result<std::vector<std::string>> job_ids_to_reconcile(int limit) override;
  Result<std::vector<nlohmann::json>> media_in_use() override;
  Result<bool> remember_webhook(const std::string& signature, std::int64_t now_ms, std::int64_t expires_ms) override;
  Result<std::map<std::string, std::int64_t>> count_jobs_by_status() override;
  Result<std::optional<std::string>> get_setting(const std::string& key) override;
  Status set_setting(const std::string& key, const std::string& value) override;
  Status insert_server(const ServerRecord& server) override;
  Result<std::optional<ServerRecord>> get_server(const std::string& id) override;
  Result<std::vector<ServerRecord>> list_servers(const std::optional<std::string>& after_id, int limit) override;
  Result<bool> update_server(const ServerRecord& server, std::int64_t expected_updated_ms) override;
  Result<bool> delete_server(const std::string& id) override;
  Result<std::int64_t> count_unfinished_jobs(const std::string& serial) override;
  Status insert_node(const NodeRecord& node, const std::string& actor, const std::string& detail) override;
  Result<std::optional<NodeRecord>> get_node(const std::string& id) override;
  Result<std::optional<NodeRecord>> find_node(const std::string& key) override;
  Result<std::vector<NodeRecord>> list_nodes(const std::optional<std::string>& after_id, int limit) override;
  Result<bool> update_node(const NodeRecord& node, std::int64_t expected_updated_ms) override;
  Result<bool> transition_node(const NodeRecord& node, NodeState expected, std::int64_t expected_updated_ms,
                               const std::string& actor, const std::string& detail) override;
  Result<std::vector<NodeEvent>> node_events(const std::string& id) override;
  Result<bool> delete_node(const std::string& id) override;
  Status insert_fleet(const FleetRecord& fleet, const std::vector<FleetMember>& members) override;
  Result<std::optional<FleetRecord>> get_fleet(const std::string& id) override;
  Result<std::vector<FleetRecord>> list_fleets(const FleetFilter& filter) override;
  Result<std::vector<std::string>> active_fleet_ids() override;
  Result<bool> transition_fleet(const std::string& id, FleetStatus expected, FleetStatus next,
                                const std::string& reason, std::int64_t now_ms) override;
  Result<bool> set_fleet_reason(const std::string& id, const std::string& reason, std::int64_t now_ms) override;
  Result<std::vector<FleetMember>> fleet_members(const std::string& id, const FleetMemberQuery& query = {}) override;
  Result<std::vector<FleetCountRow>> fleet_counts(const std::string& id) override;
  Result<bool> insert_fleet_job(const JobRecord& job, const std::string& fleet_id, int position) override;
  Result<std::vector<EventRecord>> events_after(std::int64_t after_seq, const EventFilter& filter, int limit) override;
  Result<std::int64_t> last_event_seq() override;

  // For tests that stage a store failure: every call fails with ErrorKind::internal while set.
  void fail_writes(bool fail);

  // How often job_events() was called: how often something looked at a job's history.
  std::atomic<long> job_event_reads{0};

 private:
  bool has_phase(const std::string& id, const std::string& phase) const;
  Result<bool> add_phase(const std::string& id, const std::string& phase, const JobStatus* expected_status,
                         const std::string& detail, std::int64_t now_ms);
  void add_event(const std::string& id, std::string kind, std::string name, std::string from, std::string detail,
                 std::int64_t at_ms);

  mutable std::mutex mutex_;
  bool fail_writes_ = false;
  std::int64_t next_seq_ = 1;
  std::int64_t next_event_seq_ = 1;
  std::map<std::string, JobRecord> jobs_;
  std::map<std::string, std::vector<JobEvent>> events_;
  std::map<std::string, std::set<std::string>> phases_;
  std::map<std::string, std::int64_t> webhook_signatures_;  // signature → expires_ms
  std::map<std::string, std::string> settings_;
  std::map<std::string, ServerRecord> servers_;
  // A key another node holds, if `node` would take one.
  std::optional<std::string> node_key_clash(const NodeRecord& node) const;
  std::map<std::string, NodeRecord> nodes_;
  std::map<std::string, std::vector<NodeEvent>> node_events_;
  std::int64_t next_node_event_seq_ = 1;
  static std::string text_of(const nlohmann::json& record, const char* key);
  void stream_push(EventRecord event);  // under mutex_
  std::vector<EventRecord> stream_;     // seq = index + 1
  std::map<std::string, FleetRecord> fleets_;
  std::map<std::string, std::vector<FleetMember>> fleet_members_;
  std::int64_t next_fleet_seq_ = 1;
};

}  // namespace provisioner::test
