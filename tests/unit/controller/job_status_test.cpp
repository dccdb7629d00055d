#include <gtest/gtest.h>

#include <set>

#include "controller/jobs/job_phase.hpp"
#include "controller/jobs/job_status.hpp"

using namespace provisioner;

TEST(JobStatus, TheTableAllowsTheDocumentedFlowOnly) {
  const std::vector<JobStatus> all = {JobStatus::queued,    JobStatus::provisioning, JobStatus::succeeded,
                                      JobStatus::failed,    JobStatus::complete,     JobStatus::canceled};
  int allowed = 0;
  for (auto from : all)
    for (auto to : all) allowed += is_transition_allowed(from, to);
  EXPECT_EQ(allowed, static_cast<int>(kJobTransitions.size()));
  EXPECT_TRUE(is_transition_allowed(JobStatus::queued, JobStatus::provisioning));
  EXPECT_TRUE(is_transition_allowed(JobStatus::provisioning, JobStatus::failed));
  EXPECT_TRUE(is_transition_allowed(JobStatus::succeeded, JobStatus::complete));
  EXPECT_FALSE(is_transition_allowed(JobStatus::complete, JobStatus::queued));
  EXPECT_FALSE(is_transition_allowed(JobStatus::succeeded, JobStatus::failed));
  EXPECT_FALSE(is_transition_allowed(JobStatus::canceled, JobStatus::provisioning));
  EXPECT_FALSE(is_transition_allowed(JobStatus::queued, JobStatus::succeeded)) << "must pass through provisioning";
  for (auto s : all) {
    EXPECT_FALSE(is_transition_allowed(s, s));
    EXPECT_EQ(parse_job_status(to_string(s)), s);
    if (is_terminal(s)) {
      for (auto to : all) EXPECT_FALSE(is_transition_allowed(s, to)) << to_string(s);
    }
  }
  EXPECT_FALSE(parse_job_status("done"));
}

TEST(JobPhaseTable, NamesAreUniqueAndRoundTrip) {
  std::set<std::string_view> names;
  for (const auto& info : kJobPhases) {
    EXPECT_TRUE(names.insert(info.name).second) << info.name;
    EXPECT_EQ(parse_job_phase(info.name), info.phase);
    EXPECT_EQ(to_string(info.phase), info.name);
    EXPECT_FALSE(info.name.starts_with(kStepPhasePrefix)) << "step:<unit> is not a table phase";
  }
  EXPECT_EQ(step_phase("partition.service"), "step:partition.service");
  EXPECT_FALSE(parse_job_phase("step:partition.service"));
  // The intents: recorded before the action, only while the job allows it.
  for (auto p : {JobPhase::media_requested, JobPhase::reset_issued, JobPhase::disk_reset_issued})
    EXPECT_TRUE(kJobPhases[static_cast<std::size_t>(p)].intent) << to_string(p);
  for (std::size_t i = 0; i < kJobPhases.size(); ++i) EXPECT_EQ(static_cast<std::size_t>(kJobPhases[i].phase), i);
}
