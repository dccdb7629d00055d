#pragma once
// A minimal stored job for store tests.
#include <string>

#include "controller/store/store.hpp"

namespace provisioner::test {

inline JobRecord queued_job_record(const std::string& id, const std::string& serial = "SN") {
  JobRecord j;
  j.id = id;
  j.status = JobStatus::queued;
  j.server_serial = serial;
  j.server = {{"serial", serial}};
  j.recipe = nlohmann::json::object();
  j.webhook_key_sealed = "00";
  j.created_ms = j.updated_ms = 1000;
  return j;
}

}  // namespace provisioner::test
