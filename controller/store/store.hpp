#pragma once
// The Store interface: everything the controller persists. SQLite is the embedded default;
// SQL stays portable so a PostgreSQL backend can follow.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/result.hpp"

namespace provisioner {

struct JobRecord {
  std::string id;
  std::int64_t seq = 0;            // insertion order; pagination cursor
  std::string status;              // see jobs/job_status.hpp
  std::string phase;               // last phase reached inside `provisioning`
  std::string server_serial;
  std::string server_json;         // server reference or inline BMC; secrets sealed
  std::string recipe_json;
  std::string webhook_key_sealed;  // per-job HMAC key, sealed with the controller key
  std::string failed_step;
  std::string error;
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
  std::optional<std::string> status;
  std::optional<std::string> server_serial;
  std::optional<std::int64_t> before_seq;  // newest first: only jobs with seq < before_seq
  int limit = 50;
};

// Fields a transition may set along with the status.
struct JobChanges {
  std::optional<std::string> failed_step;
  std::optional<std::string> error;
};

class Store {
 public:
  virtual ~Store() = default;

  virtual Status insert_job(const JobRecord& job) = 0;
  virtual Result<std::optional<JobRecord>> get_job(const std::string& id) = 0;
  virtual Result<std::vector<JobRecord>> list_jobs(const JobFilter& filter) = 0;

  // Compare-and-swap: moves the job from `expected` to `next` and appends a transition event,
  // in one transaction. false (and nothing written) when the job is not in `expected`.
  virtual Result<bool> transition_job(const std::string& id, const std::string& expected, const std::string& next,
                                      const JobChanges& changes, const std::string& detail, std::int64_t now_ms) = 0;

  // Records a phase once: false when the job already has it (a duplicate is never applied).
  virtual Result<bool> record_phase(const std::string& id, const std::string& phase, const std::string& detail,
                                    std::int64_t now_ms) = 0;

  virtual Result<std::vector<JobEvent>> job_events(const std::string& id) = 0;

  // Remembers a webhook signature until `expires_ms`; false when it was already seen (replay).
  virtual Result<bool> remember_webhook(const std::string& signature, std::int64_t now_ms, std::int64_t expires_ms) = 0;

  virtual Result<std::map<std::string, std::int64_t>> count_jobs_by_status() = 0;
};

}  // namespace provisioner
