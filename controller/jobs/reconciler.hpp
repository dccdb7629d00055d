#pragma once
// The job reconciler: on start-up and on every tick it drives each unfinished job one step
// from its persisted phase. Every step is idempotent and recorded in the store before the
// next one starts, so a restarted controller simply carries on.
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "common/clock.hpp"
#include "common/result.hpp"
#include "controller/store/store.hpp"

namespace provisioner {

class JobMediaBuilder;
class MaintenanceIso;
class JobService;
class Logger;
namespace artifacts {
class ArtifactStore;
}

struct ReconcilerOptions {
  std::chrono::milliseconds tick{500};
  int batch = 500;                                     // jobs looked at per tick
  std::chrono::seconds boot_timeout{1800};             // provisioning → maintenance OS reports
  std::chrono::seconds install_timeout{4 * 3600};      // maintenance OS booted → outcome
  std::chrono::seconds gc_interval{600};
  std::chrono::seconds artifact_retention{24 * 3600};  // unreferenced artifacts kept this long
};

class JobReconciler {
 public:
  JobReconciler(Store& store, JobService& jobs, const JobMediaBuilder& media, artifacts::ArtifactStore& artifacts,
                const MaintenanceIso& maintenance, const Clock& clock, const Logger& log, ReconcilerOptions options);
  ~JobReconciler();

  void start();
  void stop();
  void wake();  // a new job or report arrived: reconcile now rather than at the next tick

  // One pass over every unfinished job (what each tick runs).
  void reconcile_once();
  // Removes artifacts no unfinished job needs, older than the retention.
  Status collect_garbage();

 private:
  void drive(const JobRecord& job);
  void build_media(const JobRecord& job);
  void check_timeouts(const JobRecord& job);
  void clean_up(const JobRecord& job);

  Store& store_;
  JobService& jobs_;
  const JobMediaBuilder& media_;
  artifacts::ArtifactStore& artifacts_;
  const MaintenanceIso& maintenance_;
  const Clock& clock_;
  const Logger& log_;
  ReconcilerOptions options_;

  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  bool woken_ = false;
  std::thread thread_;
  std::int64_t last_gc_ms_ = 0;
};

}  // namespace provisioner
