#pragma once
// The virtual-media half of the reconciler: drives one job's server through its BMC, one
// persisted phase at a time (media_requested → media_inserted → boot_set → reset_issued), and
// undoes it all at the end (eject, boot from disk). Every call is safe to repeat after a crash; a reset is
// recorded before it is sent and never sent twice for one job.
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>

#include <nlohmann/json.hpp>

#include "common/clock.hpp"
#include "common/result.hpp"
#include "controller/store/store.hpp"

namespace provisioner {

class JobMediaBuilder;
class JobService;
class Logger;
class ServerService;
namespace redfish {
class RedfishContext;
struct BmcEndpoint;
struct BmcTopology;
}  // namespace redfish

class BmcJobDriver {
 public:
  BmcJobDriver(Store& store, JobService& jobs, ServerService& servers, const JobMediaBuilder& media,
               redfish::RedfishContext& redfish, const Clock& clock, const Logger& log);

  static bool has_bmc(const JobRecord& job);

  // A provisioning job: performs the phases it has not reached yet.
  void advance(const JobRecord& job);

  // A finished job: ejects what the job inserted and restores boot from disk (and resets
  // into the installed system when `boot_disk_now`). true once cleanup is over (done, or
  // given up on a permanent error); false means "try again on a later pass".
  bool clean_up(const JobRecord& job, bool boot_disk_now);

  // The job changed (a cancel, a report): when it is no longer provisioning, its BMC step in
  // progress stops at once (its waits end, nothing more is sent, no reset goes out).
  void job_changed(const std::string& job_id);

 private:
  std::stop_token begin_step(const std::string& job_id);
  void end_step(const std::string& job_id);
  std::optional<redfish::BmcEndpoint> endpoint(const JobRecord& job) const;
  bool backing_off(const std::string& job_id);
  void back_off(const std::string& job_id);
  void fail(const JobRecord& job, const std::string& phase, const Error& error);

  Store& store_;
  JobService& jobs_;
  ServerService& servers_;
  const JobMediaBuilder& media_;
  redfish::RedfishContext& redfish_;
  const Clock& clock_;
  const Logger& log_;

  // Transient BMC failures are retried on later passes with growing pauses (in memory: a
  // restarted controller simply tries again at once).
  struct Backoff {
    std::int64_t next_ms = 0;
    std::int64_t delay_ms = 0;
  };
  std::mutex backoff_mutex_;
  std::map<std::string, Backoff> backoff_;

  // Each job's BMC topology as its last step found it: the next step (the cleanup after the
  // install, a retry) starts from it instead of discovering the BMC again. In memory: a
  // restarted controller discovers once more. Dropped when the job's BMC work is over, and
  // when a step that started from it fails (the retry discovers afresh, and only then is a
  // failure taken as permanent).
  std::shared_ptr<const redfish::BmcTopology> known_topology(const std::string& job_id);
  void keep_topology(const std::string& job_id, std::shared_ptr<const redfish::BmcTopology> topology);
  void forget_topology(const std::string& job_id);
  std::mutex topology_mutex_;
  std::map<std::string, std::shared_ptr<const redfish::BmcTopology>> topology_;

  // The stop of each job's BMC step in progress (advance), requested by job_changed.
  std::mutex steps_mutex_;
  std::map<std::string, std::stop_source> steps_;
};

}  // namespace provisioner
