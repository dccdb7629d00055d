#pragma once
// The job reconciler: on start-up and on every tick it drives each unfinished job one step
// from its persisted phase. Every step is idempotent and recorded in the store before the
// next one starts, so a restarted controller simply carries on. Jobs run on a pool of
// workers: a slow BMC delays its own job, never the others.
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/clock.hpp"
#include "common/result.hpp"
#include "controller/store/store.hpp"

namespace provisioner {

class BmcJobDriver;
class JobMediaBuilder;
class JobService;
class Logger;
class MaintenanceIso;
namespace artifacts {
class ArtifactStore;
struct GcReport;
}

struct ReconcilerOptions {
  std::chrono::milliseconds tick{500};                 // how often every unfinished job is looked at
  std::chrono::milliseconds idle_recheck{5000};        // a job that had nothing to do waits this long
  int batch = 100000;                                  // job ids listed per tick (cheap: ids only)
  int workers = 256;                                   // jobs driven at once
  std::chrono::seconds boot_timeout{1800};             // reset (or provisioning) → maintenance OS reports
  std::chrono::seconds install_timeout{4 * 3600};      // maintenance OS booted → outcome
  std::chrono::seconds gc_interval{600};
  std::chrono::seconds artifact_retention{24 * 3600};  // unreferenced artifacts kept this long
  // How the sweep runs over the roots the jobs need (default: the artifact store's gc). The
  // registry wraps it to add what it references, under its lock (registry_store.hpp).
  std::function<Result<artifacts::GcReport>(const std::set<std::string>&, std::chrono::seconds)> gc;
  // Artifacts kept whatever the jobs need (the network boot kernel and initrd).
  std::set<std::string> pinned;
};

class JobReconciler {
 public:
  // `bmc` may be null: then jobs are only driven by their machines' reports (PXE).
  JobReconciler(Store& store, JobService& jobs, const JobMediaBuilder& media, artifacts::ArtifactStore& artifacts,
                const MaintenanceIso& maintenance, BmcJobDriver* bmc, const Clock& clock, const Logger& log,
                ReconcilerOptions options);
  ~JobReconciler();

  void start();
  void stop();
  // A job was created or changed (a report, a cancel): drive it now, not at the next tick.
  // A job that left provisioning has its BMC step in progress stopped first.
  void wake(const std::string& job_id);

  // Hands every unfinished job not already being driven (and not resting) to the workers.
  void reconcile_once();
  // Removes artifacts no unfinished job needs, older than the retention.
  Result<artifacts::GcReport> collect_garbage();

 private:
  void work();
  // Returns when the job next needs a look if nothing wakes it (unix ms), 0 when unknown
  // (then it rests idle_recheck).
  std::int64_t drive(const JobRecord& job);
  void build_media(const JobRecord& job);
  // True when it failed the job. Otherwise `deadline` is when the job waiting for its machine
  // times out (0 when it does not wait for its machine yet).
  bool check_timeouts(const JobRecord& job, std::int64_t& deadline);
  void clean_up(const JobRecord& job);

  Store& store_;
  JobService& jobs_;
  const JobMediaBuilder& media_;
  artifacts::ArtifactStore& artifacts_;
  const MaintenanceIso& maintenance_;
  BmcJobDriver* bmc_;
  const Clock& clock_;
  const Logger& log_;
  ReconcilerOptions options_;

  std::mutex mutex_;
  std::condition_variable wake_;      // the ticker
  std::condition_variable work_cv_;   // the workers
  bool stopping_ = false;
  std::deque<std::string> queue_;     // job ids
  std::set<std::string> in_flight_;   // queued or being driven
  std::set<std::string> rewake_;      // changed while being driven: drive once more
  // Jobs that had nothing to do rest until then (unix ms): a fleet waiting for its machines'
  // reports must not cost a full pass of work on every tick. One that waits for its machine
  // (reset, or network boot answered) rests until its boot or install deadline, at most
  // kMaxMachineWait: its report, a cancel or any change wakes it at once.
  std::map<std::string, std::int64_t> resting_until_;
  static constexpr std::int64_t kMaxMachineWait = 60'000;
  std::thread ticker_;
  std::vector<std::thread> workers_;
  std::int64_t last_gc_ms_ = 0;
};

}  // namespace provisioner
