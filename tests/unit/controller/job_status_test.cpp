#include <gtest/gtest.h>

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
