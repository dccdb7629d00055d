#pragma once
// Fleet statuses and the table of legal moves, in the style of job_status.hpp. Every change
// goes through FleetService, which checks this table and compares-and-swaps in the store.
#include <array>
#include <optional>
#include <string_view>

namespace provisioner {

enum class FleetStatus { running, paused, succeeded, failed, canceled };

struct FleetTransition {
  FleetStatus from;
  FleetStatus to;
  std::string_view why;
};

inline constexpr std::array<FleetTransition, 8> kFleetTransitions = {{
    {FleetStatus::running, FleetStatus::paused, "an operator paused it: no new launches, running jobs go on"},
    {FleetStatus::paused, FleetStatus::running, "an operator resumed it"},
    {FleetStatus::running, FleetStatus::succeeded, "every member's job ended and the failures stayed within the budget"},
    {FleetStatus::paused, FleetStatus::succeeded, "paused after its last launch, and every job ended within the budget"},
    {FleetStatus::running, FleetStatus::failed, "a canary failed or the failure budget was exceeded, and no job is left running"},
    {FleetStatus::paused, FleetStatus::failed, "the budget was exceeded while paused, and no job is left running"},
    {FleetStatus::running, FleetStatus::canceled, "an operator canceled it: no new launches, running jobs canceled"},
    {FleetStatus::paused, FleetStatus::canceled, "an operator canceled it while paused"},
}};

constexpr bool is_fleet_transition_allowed(FleetStatus from, FleetStatus to) {
  for (const auto& t : kFleetTransitions)
    if (t.from == from && t.to == to) return true;
  return false;
}

constexpr bool is_terminal(FleetStatus s) {
  return s == FleetStatus::succeeded || s == FleetStatus::failed || s == FleetStatus::canceled;
}

constexpr std::string_view to_string(FleetStatus s) {
  switch (s) {
    case FleetStatus::running: return "running";
    case FleetStatus::paused: return "paused";
    case FleetStatus::succeeded: return "succeeded";
    case FleetStatus::failed: return "failed";
    case FleetStatus::canceled: return "canceled";
  }
  return "unknown";
}

constexpr std::optional<FleetStatus> parse_fleet_status(std::string_view s) {
  for (auto st : {FleetStatus::running, FleetStatus::paused, FleetStatus::succeeded, FleetStatus::failed,
                  FleetStatus::canceled})
    if (to_string(st) == s) return st;
  return std::nullopt;
}

}  // namespace provisioner
