#pragma once
// The phases a job records inside `provisioning` and after it, in one table: what each means,
// and whether it is a fact (recorded after it happened) or an intent (recorded before it is
// done, only while the job is in the status that allows it, so a cancel that committed first
// means it is never done; see Store::record_phase_if_status). Each is recorded at most once.
// Besides these, a job records `step:<unit>` for every step its maintenance OS reports.
#include <array>
#include <optional>
#include <string>
#include <string_view>

namespace provisioner {

enum class JobPhase {
  iso_built,
  media_requested,
  media_inserted,
  media_fallback_single_iso,
  boot_set,
  reset_issued,
  netboot_served,
  maint_booted,
  disk_reset_issued,
  cleanup_failed,
  cleanup_done,
};

struct JobPhaseInfo {
  JobPhase phase;
  std::string_view name;  // as stored and as the API shows it
  bool intent;            // recorded before the action, only in the allowing status
  std::string_view meaning;
};

inline constexpr std::array<JobPhaseInfo, 11> kJobPhases = {{
    {JobPhase::iso_built, "iso_built", false, "the task media were built and recorded"},
    {JobPhase::media_requested, "media_requested", true, "about to insert media (cleanup ejects from here on)"},
    {JobPhase::media_inserted, "media_inserted", false, "the BMC holds the job's media"},
    {JobPhase::media_fallback_single_iso, "media_fallback:single-iso", false,
     "the BMC refused a second medium: the job switched to one ISO"},
    {JobPhase::boot_set, "boot_set", false, "the one-time boot override points at the virtual CD"},
    {JobPhase::reset_issued, "reset_issued", true, "about to reset into the maintenance OS (never sent twice)"},
    {JobPhase::netboot_served, "netboot_served", true,
     "a node's network boot was answered with the maintenance OS and this job's task (pxe)"},
    {JobPhase::maint_booted, "maint_booted", false, "the maintenance OS reported"},
    {JobPhase::disk_reset_issued, "disk_reset_issued", true, "about to reset into the installed system"},
    {JobPhase::cleanup_failed, "cleanup_failed", false, "cleanup gave up: media may still be inserted"},
    {JobPhase::cleanup_done, "cleanup_done", false, "media ejected and boot restored (or nothing to undo)"},
}};

constexpr std::string_view to_string(JobPhase p) {
  for (const auto& info : kJobPhases)
    if (info.phase == p) return info.name;
  return "unknown";
}

inline std::string phase_name(JobPhase p) { return std::string(to_string(p)); }

constexpr std::optional<JobPhase> parse_job_phase(std::string_view name) {
  for (const auto& info : kJobPhases)
    if (info.name == name) return info.phase;
  return std::nullopt;
}

inline constexpr std::string_view kStepPhasePrefix = "step:";
inline std::string step_phase(std::string_view unit) { return std::string(kStepPhasePrefix) + std::string(unit); }

}  // namespace provisioner
