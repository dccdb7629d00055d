#include "controller/jobs/bmc_driver.hpp"

#include "controller/iso/job_media.hpp"
#include "controller/jobs/job_phase.hpp"
#include "controller/jobs/job_service.hpp"
#include "controller/logging/logger.hpp"
#include "controller/redfish/redfish_client.hpp"
#include "controller/servers/server_service.hpp"

namespace provisioner {

namespace {

// Whether the job has the phase now: recorded, and not withdrawn since (Store::withdraw_phase).
bool has_phase(const std::vector<JobEvent>& events, JobPhase phase) {
  bool has = false;
  for (const auto& e : events)
    if (e.name == to_string(phase)) {
      if (e.kind == "phase") has = true;
      if (e.kind == "phase_withdrawn") has = false;
    }
  return has;
}

// Failures that will not go away by asking again.
bool is_permanent(redfish::FailureCode code) {
  using redfish::FailureCode;
  return code == FailureCode::auth_failed || code == FailureCode::not_found || code == FailureCode::invalid_input;
}

std::vector<redfish::MediaRequest> media_requests(const JobMedia& media) {
  std::vector<redfish::MediaRequest> out;
  if (media.boot_iso) out.push_back({media.boot_iso->url, redfish::MediaKind::cd});
  if (media.task_iso && (media.mode == "dual-cd" || media.mode == "cd-usb"))
    out.push_back({media.task_iso->url, media.mode == "cd-usb" ? redfish::MediaKind::usb : redfish::MediaKind::cd});
  return out;
}

redfish::BootMode boot_mode_of(const nlohmann::json& recipe) {
  auto mode = recipe.value("boot_mode", "");
  if (mode == "uefi") return redfish::BootMode::uefi;
  if (mode == "bios") return redfish::BootMode::legacy;
  return redfish::BootMode::keep;
}

}  // namespace

BmcJobDriver::BmcJobDriver(Store& store, JobService& jobs, ServerService& servers, const JobMediaBuilder& media,
                           redfish::RedfishContext& redfish, const Clock& clock, const Logger& log)
    : store_(store), jobs_(jobs), servers_(servers), media_(media), redfish_(redfish), clock_(clock), log_(log) {}

bool BmcJobDriver::has_bmc(const JobRecord& job) {
  const auto& server = job.server;
  return server.contains("bmc") && server.at("bmc").contains("address");
}

std::optional<redfish::BmcEndpoint> BmcJobDriver::endpoint(const JobRecord& job) const {
  const auto& server = job.server;
  if (!server.contains("bmc")) return std::nullopt;
  const auto& bmc = server.at("bmc");
  redfish::BmcEndpoint e;
  e.address = bmc.value("address", "");
  e.username = bmc.value("username", "");
  e.password = servers_.bmc_password(server).value_or("");
  e.verify_tls = bmc.value("verify_tls", true);
  e.ca_file = bmc.value("ca_file", "");
  e.profile = bmc.value("profile", "auto");
  e.tls = bmc.value("tls", "");  // "" = the profile decides (modern unless *-legacy)
  e.system_id = bmc.value("system_id", "");
  e.serial = job.server_serial;
  return e;
}

bool BmcJobDriver::backing_off(const std::string& job_id) {
  std::lock_guard lock(backoff_mutex_);
  auto it = backoff_.find(job_id);
  return it != backoff_.end() && clock_.now_ms() < it->second.next_ms;
}

void BmcJobDriver::back_off(const std::string& job_id) {
  std::lock_guard lock(backoff_mutex_);
  auto& b = backoff_[job_id];
  b.delay_ms = std::min<std::int64_t>(b.delay_ms == 0 ? 1000 : b.delay_ms * 2, 60'000);
  b.next_ms = clock_.now_ms() + b.delay_ms;
}

void BmcJobDriver::fail(const JobRecord& job, const std::string& phase, const Error& error) {
  log_.error("BMC step failed for good", Logger::job_fields(job.id, job.server_serial,
                                                            {{"phase", phase}, {"error", error.message}}));
  auto failed = jobs_.transition(job, JobStatus::provisioning, JobStatus::failed,
                                 JobChanges{std::nullopt, phase + ": " + error.message}, phase + " failed");
  if (!failed) log_store_error(log_, job, "mark the job failed", failed.error());
}

std::stop_token BmcJobDriver::begin_step(const std::string& job_id) {
  std::lock_guard lock(steps_mutex_);
  return steps_[job_id].get_token();
}

void BmcJobDriver::end_step(const std::string& job_id) {
  std::lock_guard lock(steps_mutex_);
  steps_.erase(job_id);
}

void BmcJobDriver::job_changed(const std::string& job_id) {
  {
    std::lock_guard lock(steps_mutex_);
    if (!steps_.contains(job_id)) return;
  }
  auto job = store_.get_job(job_id);
  if (!job || !*job || (*job)->status == JobStatus::provisioning) return;
  std::lock_guard lock(steps_mutex_);
  if (auto it = steps_.find(job_id); it != steps_.end()) it->second.request_stop();
}

std::shared_ptr<const redfish::BmcTopology> BmcJobDriver::known_topology(const std::string& job_id) {
  std::lock_guard lock(topology_mutex_);
  auto it = topology_.find(job_id);
  return it == topology_.end() ? nullptr : it->second;
}

void BmcJobDriver::keep_topology(const std::string& job_id, std::shared_ptr<const redfish::BmcTopology> topology) {
  if (!topology) return;
  std::lock_guard lock(topology_mutex_);
  if (topology_.size() >= 100'000 && !topology_.contains(job_id)) topology_.clear();  // a cache: bounded
  topology_[job_id] = std::move(topology);
}

void BmcJobDriver::forget_topology(const std::string& job_id) {
  std::lock_guard lock(topology_mutex_);
  topology_.erase(job_id);
}

void BmcJobDriver::advance(const JobRecord& job) {
  if (backing_off(job.id)) return;
  // Registered before the status is read again: a cancel before this point is seen here, one
  // after it stops the step's waits through job_changed().
  auto stop = begin_step(job.id);
  struct EndStep {
    BmcJobDriver& d;
    const std::string& id;
    ~EndStep() { d.end_step(id); }
  } end_step_guard{*this, job.id};
  if (auto now = store_.get_job(job.id); !now || !*now || (*now)->status != JobStatus::provisioning) return;
  auto events = store_.job_events(job.id);
  if (!events) return;
  if (has_phase(*events, JobPhase::reset_issued)) return;  // nothing left for the BMC until the outcome
  auto ep = endpoint(job);
  if (!ep) return;
  auto media = JobMedia::from_json(job.media);
  const auto& recipe = job.recipe;
  auto fields = [&](LogFields extra = {}) { return Logger::job_fields(job.id, job.server_serial, std::move(extra)); };
  if (!media.boot_iso) {
    fail(job, phase_name(JobPhase::media_inserted),
         make_error(ErrorKind::unavailable, "no maintenance ISO to boot ([artifacts] maintenance_iso, or an upload)"));
    return;
  }

  redfish::BmcClient bmc(redfish_, *ep, {{"job_id", job.id}, {"serial", job.server_serial}}, stop);
  auto known = known_topology(job.id);
  bmc.reuse_topology(known);
  struct KeepTopology {  // what this step found, the next one starts from
    BmcJobDriver& d;
    const std::string& id;
    redfish::BmcClient& c;
    bool drop = false;
    ~KeepTopology() { drop ? d.forget_topology(id) : d.keep_topology(id, c.topology()); }
  } keep{*this, job.id, bmc};
  auto transient = [&](const std::string& phase, const Error& e) {
    if (redfish::failure_code(e) == redfish::FailureCode::canceled)  // shutdown or cancel: the phases stand
      return log_.info("BMC step stopped", fields({{"phase", phase}, {"reason", e.message}}));
    if (known) {
      // It started from a known topology, which may be what is wrong now: the retry
      // discovers the BMC afresh, and only a failure then counts as permanent.
      keep.drop = true;
      log_.warn("BMC step will be retried with a fresh discovery", fields({{"phase", phase}, {"error", e.message}}));
      return back_off(job.id);
    }
    if (is_permanent(redfish::failure_code(e))) return fail(job, phase, e);
    log_.warn("BMC step will be retried", fields({{"phase", phase}, {"error", e.message}}));
    back_off(job.id);
  };

  if (!has_phase(*events, JobPhase::media_inserted)) {
    // The intent, recorded only while the job still provisions: a cancel committed before it
    // means nothing is ever inserted, and once it is recorded cleanup ejects whatever part of
    // the media made it in (an insert can fail half-way, one slot done).
    if (!has_phase(*events, JobPhase::media_requested)) {
      auto requested = store_.record_phase_if_status(job.id, phase_name(JobPhase::media_requested), JobStatus::provisioning, "", clock_.now_ms());
      if (!requested) return log_store_error(log_, job, "record media_requested", requested.error());
      if (!*requested) return;  // canceled (or failed) meanwhile
    }
    auto inserted = bmc.insert_media(media_requests(media));
    if (!inserted && redfish::failure_code(inserted.error()) == redfish::FailureCode::second_medium_refused &&
        media.mode != "single-iso") {
      // Many BMCs hold one medium only: rebuild this job as one ISO and insert that instead.
      auto inputs = jobs_.task_inputs(job);
      auto single = inputs ? media_.build(*inputs, "single-iso") : Result<JobMedia>(inputs.error());
      if (!single) return fail(job, phase_name(JobPhase::media_inserted), single.error());
      // Saved before it is inserted, so cleanup knows which ISO to eject. Not saved (the job
      // was canceled meanwhile, or the store failed): insert nothing.
      auto saved = store_.set_job_media(job.id, JobStatus::provisioning, single->to_json(), clock_.now_ms());
      if (!saved) return log_store_error(log_, job, "save the single-iso media", saved.error());
      if (!*saved) return;
      if (auto r = store_.record_phase(job.id, phase_name(JobPhase::media_fallback_single_iso), inserted.error().message, clock_.now_ms()); !r)
        log_store_error(log_, job, "record media_fallback:single-iso", r.error());
      log_.warn("BMC refused a second medium: switched the job to single-iso", fields({{"reason", inserted.error().message}}));
      media = *single;
      inserted = bmc.insert_media(media_requests(media));
    }
    if (!inserted) return transient(phase_name(JobPhase::media_inserted), inserted.error());
    std::string urls;
    for (const auto& r : *inserted) urls += (urls.empty() ? "" : " ") + r.url;
    // Unrecorded, the next pass inserts again: insert_media leaves an already inserted URL alone.
    if (auto r = store_.record_phase(job.id, phase_name(JobPhase::media_inserted), urls, clock_.now_ms()); !r)
      return log_store_error(log_, job, "record media_inserted", r.error());
  }
  if (!has_phase(*events, JobPhase::boot_set)) {
    auto boot = bmc.set_boot_once_cd(boot_mode_of(recipe));
    if (!boot) return transient(phase_name(JobPhase::boot_set), boot.error());
    auto detail = boot->target + "/" + boot->enabled + (boot->mode.empty() ? "" : "/" + boot->mode);
    if (auto r = store_.record_phase(job.id, phase_name(JobPhase::boot_set), detail, clock_.now_ms()); !r)
      return log_store_error(log_, job, "record boot_set", r.error());
  }
  // Recorded before it is sent: after a crash here the reset is never repeated (the boot
  // timeout then fails the job instead of power-cycling a machine twice). Recorded only while
  // the job still provisions, in the same compare-and-swap: a cancel that committed first wins
  // and no reset is sent; a cancel that comes after finds the reset recorded, and cleanup
  // follows the one reset.
  auto first = store_.record_phase_if_status(job.id, phase_name(JobPhase::reset_issued), JobStatus::provisioning, "", clock_.now_ms());
  if (!first) return log_store_error(log_, job, "record reset_issued", first.error());
  if (!*first) return;
  // Recorded: the cancel lost the race, the reset goes out once (only a shutdown stops it now).
  bmc.set_stop({});
  auto reset = bmc.power_cycle_into_boot();
  if (!reset && redfish::failure_code(reset.error()) == redfish::FailureCode::canceled) {
    // Stopping (only a shutdown stops this step now). When no reset request went out, the
    // intent is withdrawn: the next start records it again and resets, instead of waiting
    // for a boot that was never started and failing the job at the boot timeout.
    if (redfish::reset_not_sent(reset.error())) {
      auto withdrawn = store_.withdraw_phase(job.id, phase_name(JobPhase::reset_issued),
                                             "the controller stopped before the reset was sent", clock_.now_ms());
      if (!withdrawn) log_store_error(log_, job, "withdraw reset_issued", withdrawn.error());
      log_.warn("controller stopping before the reset was sent: withdrawn, the next start resets",
                fields({{"reason", reset.error().message}}));
      return;
    }
    log_.warn("controller stopping during the reset step", fields({{"reason", reset.error().message}}));
    return;
  }
  if (!reset) {
    fail(job, phase_name(JobPhase::reset_issued), reset.error());
    return;
  }
  std::string issued;
  for (const auto& r : reset->issued) issued += (issued.empty() ? "" : "+") + r;
  log_.info("server reset into the maintenance OS", fields({{"reset", issued}, {"power", reset->power_state}}));
  std::lock_guard lock(backoff_mutex_);
  backoff_.erase(job.id);
}

bool BmcJobDriver::clean_up(const JobRecord& job, bool boot_disk_now) {
  if (backing_off(job.id)) return false;
  auto ep = endpoint(job);
  if (!ep) return true;
  auto events = store_.job_events(job.id);
  if (!events) return false;
  if (!has_phase(*events, JobPhase::media_requested) && !has_phase(*events, JobPhase::media_inserted) &&
      !has_phase(*events, JobPhase::reset_issued)) {
    forget_topology(job.id);
    return true;  // the BMC was never asked for anything: nothing to undo
  }
  auto media = JobMedia::from_json(job.media);
  std::vector<std::string> urls;
  for (const auto& r : media_requests(media)) urls.push_back(r.url);
  redfish::BmcClient bmc(redfish_, *ep, {{"job_id", job.id}, {"serial", job.server_serial}});
  auto known = known_topology(job.id);
  bmc.reuse_topology(known);
  redfish::CleanupOptions options;
  options.boot = redfish::CleanupOptions::BootRestore::hdd_once;
  options.reset = false;  // below, once only
  auto done = bmc.cleanup(urls, options);
  if (done && boot_disk_now) {
    // Into the installed system. Recorded before it is sent, like the first reset: a crash
    // between the two must not power-cycle a machine that is already booting its disk.
    auto first = store_.record_phase_if_status(job.id, phase_name(JobPhase::disk_reset_issued), JobStatus::succeeded, "", clock_.now_ms());
    if (!first) return false;
    if (*first) {
      auto reset = bmc.power_cycle_into_boot();
      if (!reset && redfish::failure_code(reset.error()) == redfish::FailureCode::canceled &&
          redfish::reset_not_sent(reset.error())) {
        // Stopping before the reset went out: withdrawn, so the next start boots the disk.
        auto withdrawn = store_.withdraw_phase(job.id, phase_name(JobPhase::disk_reset_issued),
                                               "the controller stopped before the reset was sent", clock_.now_ms());
        if (!withdrawn) log_store_error(log_, job, "withdraw disk_reset_issued", withdrawn.error());
        return false;
      }
      if (!reset) {
        log_.error("reset into the installed system failed", Logger::job_fields(job.id, job.server_serial,
                                                                                {{"error", reset.error().message}}));
        if (auto r = store_.record_phase(job.id, phase_name(JobPhase::cleanup_failed), reset.error().message, clock_.now_ms()); !r)
          log_store_error(log_, job, "record cleanup_failed", r.error());
      }
    }
  }
  if (done) {
    forget_topology(job.id);  // the job's BMC work is over
    std::lock_guard lock(backoff_mutex_);
    backoff_.erase(job.id);
    return true;
  }
  auto fields = Logger::job_fields(job.id, job.server_serial, {{"error", done.error().message}});
  if (known) {  // perhaps out of date: the retry discovers afresh, and only its failure counts
    forget_topology(job.id);
    log_.warn("cleanup will be retried with a fresh discovery", fields);
    back_off(job.id);
    return false;
  }
  keep_topology(job.id, bmc.topology());
  if (is_permanent(redfish::failure_code(done.error()))) {
    forget_topology(job.id);
    log_.error("cleanup failed for good: media may still be inserted", fields);
    if (auto r = store_.record_phase(job.id, phase_name(JobPhase::cleanup_failed), done.error().message, clock_.now_ms()); !r)
      log_store_error(log_, job, "record cleanup_failed", r.error());
    return true;
  }
  log_.warn("cleanup will be retried", fields);
  back_off(job.id);
  return false;
}

}  // namespace provisioner
