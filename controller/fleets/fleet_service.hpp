#pragma once
// Fleet runs: one recipe over many servers, launched through gates. The first `canary`
// members run alone; the rest start only once every canary succeeded. Never more than
// `max_parallel` of a fleet's jobs are unfinished at once. Once more than `max_failures` have
// failed (or a canary failed), nothing more is launched, the running jobs finish, and the
// fleet ends `failed` with the reason.
//
// Everything a pass decides from is in the store (members, their jobs): a controller killed
// mid-run resumes where it was. A member is launched in the same transaction that names its
// job (Store::insert_fleet_job), so no server is launched twice, and nothing is launched once
// the fleet is paused or canceled, whatever races.
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "common/clock.hpp"
#include "common/json_schema.hpp"
#include "common/result.hpp"
#include "controller/store/store.hpp"

namespace provisioner {

class JobService;
class Logger;

struct FleetListQuery {
  std::optional<std::string> status;
  std::optional<std::string> cursor;
  std::optional<std::string> limit;
};

// How a fleet's members stand, from the store (the view and the gates use the same counts).
struct FleetCounts {
  int total = 0;
  int not_launched = 0;
  int in_flight = 0;  // launched, job not complete or canceled yet (its BMC is still in use)
  int succeeded = 0;  // outcome succeeded
  int failed = 0;     // outcome failed or canceled
  int failure_budget = 0;
  std::map<std::string, int> by_status;  // job status → members ("not_launched" for the rest)
};

class FleetService {
 public:
  FleetService(Store& store, JobService& jobs, const Clock& clock, const Logger& log, std::string secret_key,
               int max_list_limit = 500);
  ~FleetService();

  Result<nlohmann::json> create(std::string_view body, const std::string& actor);
  Result<nlohmann::json> get(const std::string& id);
  Result<nlohmann::json> list(const FleetListQuery& query);
  // Stops launching and cancels the running jobs (media ejected by their cleanup; no reset).
  Result<nlohmann::json> cancel(const std::string& id, const std::string& actor);
  Result<nlohmann::json> pause(const std::string& id, const std::string& actor);
  Result<nlohmann::json> resume(const std::string& id, const std::string& actor);

  // One pass over every unfinished fleet: launch what the gates allow, end what has ended.
  void run_once();
  // Cancels the running jobs of canceled fleets (a controller that stopped between the
  // fleet's cancel and its jobs' cancels finishes the job at start-up).
  void finish_cancels();

  // A thread that runs a pass every `interval`, and at once after wake().
  void start(std::chrono::milliseconds interval = std::chrono::milliseconds(500));
  void stop();
  void wake();

 private:
  Result<FleetRecord> load(const std::string& id);
  Result<nlohmann::json> view(const FleetRecord& fleet, bool with_members);
  Result<nlohmann::json> move(const std::string& id, FleetStatus to, const std::string& actor);
  void cancel_running_jobs(const FleetRecord& fleet);
  Status drive(const std::string& id);
  Result<std::string> stop_reason(const std::string& id, const FleetCounts& counts,
                                  const std::vector<FleetMember>& canary_members);

  Store& store_;
  JobService& jobs_;
  const Clock& clock_;
  const Logger& log_;
  std::string secret_key_;
  int max_list_limit_;
  JsonSchema schema_;
  std::mutex pass_mutex_;  // one pass at a time

  std::mutex wake_mutex_;
  std::condition_variable wake_cv_;
  bool woken_ = false;
  bool stopping_ = false;
  std::thread thread_;
};

// The counts the gates and views use, from the store's grouped rows.
FleetCounts count_fleet(const FleetRecord& fleet, const std::vector<FleetCountRow>& rows);

}  // namespace provisioner
