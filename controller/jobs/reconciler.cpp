#include "controller/jobs/reconciler.hpp"

#include <sys/resource.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "controller/artifacts/artifact_store.hpp"
#include "controller/iso/job_media.hpp"
#include "controller/iso/maintenance_iso.hpp"
#include "controller/jobs/bmc_driver.hpp"
#include "controller/jobs/job_service.hpp"
#include "controller/jobs/job_phase.hpp"
#include "controller/logging/logger.hpp"

namespace provisioner {

JobReconciler::JobReconciler(Store& store, JobService& jobs, const JobMediaBuilder& media,
                             artifacts::ArtifactStore& artifacts, const MaintenanceIso& maintenance, BmcJobDriver* bmc,
                             const Clock& clock, const Logger& log, ReconcilerOptions options)
    : store_(store),
      jobs_(jobs),
      media_(media),
      artifacts_(artifacts),
      maintenance_(maintenance),
      bmc_(bmc),
      clock_(clock),
      log_(log),
      options_(std::move(options)) {}

JobReconciler::~JobReconciler() { stop(); }

void JobReconciler::start() {
  for (int i = 0; i < options_.workers; ++i) workers_.emplace_back([this] { work(); });
  ticker_ = std::thread([this] {
    mark_store_background_thread();
    std::unique_lock lock(mutex_);
    while (!stopping_) {
      lock.unlock();
      try {
        reconcile_once();
        if (clock_.now_ms() - last_gc_ms_ >= std::chrono::milliseconds(options_.gc_interval).count()) {
          last_gc_ms_ = clock_.now_ms();
          if (auto s = collect_garbage(); !s) log_.warn("artifact garbage collection failed", {{"error", s.error().message}});
        }
      } catch (const std::exception& e) {
        log_.error("reconciler pass failed", {{"error", e.what()}});
      }
      lock.lock();
      wake_.wait_for(lock, options_.tick, [this] { return stopping_; });
    }
  });
}

void JobReconciler::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    queue_.clear();
  }
  wake_.notify_all();
  work_cv_.notify_all();
  if (ticker_.joinable()) ticker_.join();
  for (auto& w : workers_)
    if (w.joinable()) w.join();
  workers_.clear();
}

void JobReconciler::wake(const std::string& job_id) {
  if (bmc_) bmc_->job_changed(job_id);  // a canceled job's BMC step stops waiting now
  std::lock_guard lock(mutex_);
  resting_until_.erase(job_id);
  if (in_flight_.insert(job_id).second) queue_.push_back(job_id);
  else rewake_.insert(job_id);  // a worker holds it now: it goes round again when done
  work_cv_.notify_one();
}

void JobReconciler::reconcile_once() {
  auto ids = store_.job_ids_to_reconcile(options_.batch);
  if (!ids) {
    log_.error("cannot list jobs to reconcile", {{"error", ids.error().message}});
    return;
  }
  auto now = clock_.now_ms();
  std::lock_guard lock(mutex_);
  std::map<std::string, std::int64_t> still_resting;
  for (auto& id : *ids) {
    if (auto r = resting_until_.find(id); r != resting_until_.end() && r->second > now) {
      still_resting.insert(*r);
      continue;
    }
    if (in_flight_.insert(id).second) queue_.push_back(std::move(id));
  }
  resting_until_.swap(still_resting);  // finished jobs drop out here
  work_cv_.notify_all();
}

void JobReconciler::work() {
  // Background work yields to the API: a burst of submissions must not wait behind the
  // ISO builds it causes (nice +5 for this thread only; Linux schedules threads separately).
  ::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), 5);
  mark_store_background_thread();  // and its reads leave some connections to the API
  std::unique_lock lock(mutex_);
  while (true) {
    work_cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
    if (stopping_) return;
    std::string id = std::move(queue_.front());
    queue_.pop_front();
    lock.unlock();
    bool idle = false;
    std::int64_t next_look = 0;
    try {
      auto job = store_.get_job(id);
      if (job && *job) {
        next_look = drive(**job);
        // Nothing changed: the job waits for its machine or its BMC backoff; look again later.
        auto after = store_.get_job(id);
        idle = after && *after && (*after)->updated_ms == (**job).updated_ms && (*after)->status == (**job).status;
      }
    } catch (const std::exception& e) {
      log_.error("reconciling a job failed", {{"job_id", id}, {"error", e.what()}});
    }
    lock.lock();
    if (rewake_.erase(id)) {
      queue_.push_back(id);  // stays in flight
      continue;
    }
    in_flight_.erase(id);
    if (idle) {
      auto now = clock_.now_ms(), recheck = now + std::chrono::milliseconds(options_.idle_recheck).count();
      // Waiting for its machine: nothing to do before the deadline (a few ms past it, so the
      // look finds it passed), unless something wakes it.
      resting_until_[id] = next_look > 0 ? std::max(recheck, std::min(next_look + 10, now + kMaxMachineWait)) : recheck;
    }
  }
}

std::int64_t JobReconciler::drive(const JobRecord& job) {
  auto status = job.status;
  switch (status) {
    case JobStatus::queued: {
      build_media(job);
      auto fresh = store_.get_job(job.id);  // media ready: go straight on to the BMC steps
      if (fresh && *fresh && (*fresh)->status == JobStatus::provisioning) return drive(**fresh);
      return 0;
    }
    case JobStatus::provisioning: {
      std::int64_t deadline = 0;
      if (check_timeouts(job, deadline)) return 0;
      if (bmc_ && BmcJobDriver::has_bmc(job)) bmc_->advance(job);
      return deadline;
    }
    case JobStatus::succeeded:
    case JobStatus::failed:
    case JobStatus::canceled: clean_up(job); return 0;
    case JobStatus::complete: return 0;
  }
  return 0;
}

void JobReconciler::build_media(const JobRecord& job) {
  auto fields = Logger::job_fields(job.id, job.server_serial);
  auto inputs = jobs_.task_inputs(job);
  Result<JobMedia> media = inputs ? media_.build(*inputs, media_mode_for(job.recipe,
                                                                         job.server))
                                  : Result<JobMedia>(inputs.error());
  if (!media) {
    // A media problem does not go away by itself: fail the job with the reason.
    log_.error("cannot build the job's media", Logger::job_fields(job.id, job.server_serial,
                                                                  {{"error", media.error().message}}));
    auto failed = jobs_.transition(job, JobStatus::queued, JobStatus::failed,
                                   JobChanges{std::nullopt, "task media: " + media.error().message}, "iso_built failed");
    if (!failed) log_store_error(log_, job, "mark the job failed", failed.error());
    return;
  }
  auto recorded = store_.set_job_media(job.id, JobStatus::queued, media->to_json(), clock_.now_ms());
  if (!recorded || !*recorded) return;  // canceled meanwhile: the next pass cleans up
  std::string detail = media->boot_iso ? media->boot_iso->sha256 : "";
  if (media->task_iso) detail = media->task_iso->sha256;
  if (auto p = store_.record_phase(job.id, phase_name(JobPhase::iso_built), detail, clock_.now_ms()); !p)
    return log_store_error(log_, job, "record iso_built", p.error());  // the next pass builds the same bytes again
  log_.info("task media built", Logger::job_fields(job.id, job.server_serial,
                                                   {{"mode", media->mode}, {"sha256", detail}}));
  if (auto t = jobs_.transition(job, JobStatus::queued, JobStatus::provisioning, {}, "media ready"); !t)
    log_store_error(log_, job, "start provisioning", t.error());
}

bool JobReconciler::check_timeouts(const JobRecord& job, std::int64_t& deadline) {
  deadline = 0;
  auto events = store_.job_events(job.id);
  if (!events) return false;
  std::int64_t started = 0, booted = 0;
  bool machine_started = false;  // reset, or its network boot answered: the machine's turn
  // A node's job waits for the node to boot, which may be any time (someone powers it on):
  // its boot clock starts when its network boot is answered.
  const bool network_boot = job.media.value("mode", "") == "pxe";
  for (const auto& e : *events) {
    if (e.kind == "transition" && e.name == "provisioning" && !network_boot) started = e.at_ms;
    const bool machine_phase = e.name == to_string(JobPhase::reset_issued) || e.name == to_string(JobPhase::netboot_served);
    if (e.kind == "phase" && machine_phase) {
      started = e.at_ms;  // the clock restarts at the reset
      machine_started = true;
    }
    if (e.kind == "phase_withdrawn" && machine_phase) machine_started = false;
    if (e.kind == "phase" && e.name == to_string(JobPhase::maint_booted)) booted = e.at_ms;
  }
  auto recipe = job.recipe;
  auto limit = [&](const char* key, std::chrono::seconds fallback) {
    auto t = recipe.value("timeouts", nlohmann::json::object());
    return t.contains(key) ? t[key].get<std::int64_t>() * 1000 : std::chrono::milliseconds(fallback).count();
  };
  auto now = clock_.now_ms();
  std::string why;
  if (booted == 0 && started > 0 && now - started > limit("boot", options_.boot_timeout))
    why = "the maintenance OS did not report within " + std::to_string(limit("boot", options_.boot_timeout) / 1000) + " s";
  else if (booted > 0 && now - booted > limit("install", options_.install_timeout))
    why = "the installation did not finish within " + std::to_string(limit("install", options_.install_timeout) / 1000) + " s";
  if (why.empty()) {
    if (booted > 0) deadline = booted + limit("install", options_.install_timeout);
    else if (machine_started) deadline = started + limit("boot", options_.boot_timeout);
    return false;
  }
  log_.warn("job timed out", Logger::job_fields(job.id, job.server_serial, {{"reason", why}}));
  auto failed = jobs_.transition(job, JobStatus::provisioning, JobStatus::failed, JobChanges{std::nullopt, why}, "timeout");
  if (!failed) log_store_error(log_, job, "mark the job timed out", failed.error());
  return true;
}

void JobReconciler::clean_up(const JobRecord& job) {
  auto status = job.status;
  // Eject, boot from disk, and on success reset into the installed system. A server without
  // a BMC has nothing to undo.
  if (bmc_ && BmcJobDriver::has_bmc(job) && !bmc_->clean_up(job, status == JobStatus::succeeded)) return;
  auto first = store_.record_phase(job.id, phase_name(JobPhase::cleanup_done), "", clock_.now_ms());
  if (!first) return;
  if (status == JobStatus::succeeded || status == JobStatus::failed)
    if (auto t = jobs_.transition(job, status, JobStatus::complete, {}, "cleanup done"); !t)
      log_store_error(log_, job, "complete the job", t.error());
}

Result<artifacts::GcReport> JobReconciler::collect_garbage() {
  auto in_use = store_.media_in_use();
  if (!in_use) return in_use.error();
  std::set<std::string> referenced;
  if (auto current = maintenance_.current()) referenced.insert(*current);  // what the next job boots
  referenced.insert(options_.pinned.begin(), options_.pinned.end());
  for (const auto& stored : *in_use) {
    auto media = JobMedia::from_json(stored);
    if (media.boot_iso) referenced.insert(media.boot_iso->sha256);
    if (media.task_iso) referenced.insert(media.task_iso->sha256);
  }
  auto report = options_.gc ? options_.gc(referenced, options_.artifact_retention)
                            : artifacts_.gc(referenced, options_.artifact_retention);
  if (!report) return report.error();
  if (report->removed > 0)
    log_.info("artifacts collected", {{"removed", std::to_string(report->removed)},
                                      {"bytes_freed", std::to_string(report->bytes_freed)},
                                      {"kept", std::to_string(report->kept)}});
  return report;
}

}  // namespace provisioner
