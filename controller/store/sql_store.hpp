#pragma once
#include <filesystem>
#include <memory>

#include "controller/store/store.hpp"

namespace provisioner {

class SqlDatabase;

// The store on a SQL database: SQLite (the embedded default: WAL, foreign keys) or
// PostgreSQL (several controllers on one database), through SqlDatabase. Embedded migrations,
// one writer connection per process guarded by a lock (SQLite serialises writers anyway;
// PostgreSQL's serializable transactions are retried when they race another controller's)
// and a bounded pool of read connections, so reads never wait behind a write.
class SqlStore final : public Store {
 public:
  static Result<std::unique_ptr<SqlStore>> open(const std::filesystem::path& sqlite_file);
  static Result<std::unique_ptr<SqlStore>> open(std::unique_ptr<SqlDatabase> database);
  ~SqlStore() override;

  Status insert_job(const JobRecord& job) override;
  Result<std::optional<JobRecord>> get_job(const std::string& id) override;
  Result<std::vector<JobRecord>> list_jobs(const JobFilter& filter) override;
  Result<bool> transition_job(const std::string& id, JobStatus expected, JobStatus next,
                              const JobChanges& changes, const std::string& detail, std::int64_t now_ms) override;
  Result<bool> record_phase(const std::string& id, const std::string& phase, const std::string& detail,
                            std::int64_t now_ms) override;
  Result<bool> update_job_recipe(const std::string& id, const nlohmann::json& recipe, std::int64_t now_ms) override;
  Status flush_rewrites() override;
  Result<bool> withdraw_phase(const std::string& id, const std::string& phase, const std::string& detail,
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

  int schema_version();
  std::string describe() const;  // the file, or the PostgreSQL database (never a password)

 private:
  Result<bool> record_phase_when(const std::string& id, const std::string& phase,
                                 const std::optional<std::string>& expected_status, const std::string& detail,
                                 std::int64_t now_ms);
  struct Impl;
  explicit SqlStore(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace provisioner
