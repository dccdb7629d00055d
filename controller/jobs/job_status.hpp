#pragma once
// Job statuses and the table of legal transitions. Every status change goes through
// JobService::transition, which checks this table and then compares-and-swaps in the store.
#include <array>
#include <optional>
#include <string_view>

namespace provisioner {

enum class JobStatus { queued, provisioning, succeeded, failed, complete, canceled };

struct JobTransition {
  JobStatus from;
  JobStatus to;
  std::string_view why;  // what drives it
};

inline constexpr std::array<JobTransition, 8> kJobTransitions = {{
    {JobStatus::queued, JobStatus::provisioning, "the reconciler started the job, or its maintenance OS reported"},
    {JobStatus::queued, JobStatus::failed, "the job's media could not be built (task ISO, single-ISO composite)"},
    {JobStatus::queued, JobStatus::canceled, "canceled before it started"},
    {JobStatus::provisioning, JobStatus::succeeded, "the maintenance OS reported success"},
    {JobStatus::provisioning, JobStatus::failed, "a step failed or a phase timed out"},
    {JobStatus::provisioning, JobStatus::canceled, "canceled while provisioning"},
    {JobStatus::succeeded, JobStatus::complete, "cleanup done: media ejected, boot from disk"},
    {JobStatus::failed, JobStatus::complete, "cleanup done after a failure"},
}};

constexpr bool is_transition_allowed(JobStatus from, JobStatus to) {
  for (const auto& t : kJobTransitions)
    if (t.from == from && t.to == to) return true;
  return false;
}

constexpr bool is_terminal(JobStatus s) { return s == JobStatus::complete || s == JobStatus::canceled; }

constexpr std::string_view to_string(JobStatus s) {
  switch (s) {
    case JobStatus::queued: return "queued";
    case JobStatus::provisioning: return "provisioning";
    case JobStatus::succeeded: return "succeeded";
    case JobStatus::failed: return "failed";
    case JobStatus::complete: return "complete";
    case JobStatus::canceled: return "canceled";
  }
  return "unknown";
}

constexpr std::optional<JobStatus> parse_job_status(std::string_view s) {
  for (auto st : {JobStatus::queued, JobStatus::provisioning, JobStatus::succeeded, JobStatus::failed,
                  JobStatus::complete, JobStatus::canceled})
    if (to_string(st) == s) return st;
  return std::nullopt;
}

}  // namespace provisioner
