#pragma once
// The job service: what the API does with jobs. Validates requests, persists jobs, applies
// status changes (table-checked, compare-and-swap) and authenticates status webhooks.
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "common/clock.hpp"
#include "common/json_schema.hpp"
#include "common/recipe.hpp"
#include "common/result.hpp"
#include "common/webhook.hpp"
#include "controller/iso/task_iso.hpp"
#include "controller/jobs/job_status.hpp"
#include "controller/store/store.hpp"

namespace provisioner {

class Logger;
class Metrics;
class NamedRecipes;
class NodeService;
class ServerService;

struct JobServiceOptions {
  std::filesystem::path recipes_dir;  // where recipe_ref names are looked up (<name>.json)
  std::string public_url;             // base URL the maintenance OS reaches the controller at
  int webhook_max_skew_seconds = 300;
  int max_list_limit = 500;
  // "name@version", "name@sha256:<hex>", and plain names not in recipes_dir ("name@latest");
  // null when the registry is off.
  NamedRecipes* named_recipes = nullptr;
  // A pull token for one repository of the controller's own registry, valid until `expires_s`
  // (registry tokens are deterministic: a rebuilt task ISO has the same bytes). Set when the
  // registry is on; a job whose image.oci names this controller gets one in its job.json.
  std::function<std::string(const std::string& job_id, const std::string& repository, std::int64_t expires_s)>
      registry_pull_token;
  // Profiles by label: the recipe_ref for a node's job when neither the job nor the node names
  // one (nullopt: none matches).
  std::function<std::optional<std::string>(const nlohmann::json& labels)> profile_for_labels;
};

struct JobListQuery {
  std::optional<std::string> status;
  std::optional<std::string> server;
  std::optional<std::string> cursor;
  std::optional<std::string> limit;
};

// Logs a store failure that the caller cannot act on now; the job keeps its persisted state
// and the next reconciler pass retries from there.
void log_store_error(const Logger& log, const JobRecord& job, std::string_view what, const Error& error);

class JobService {
 public:
  // `secret_key`: 32 bytes sealing per-job secrets (webhook key, BMC password, the recipe's
  // secrets and secret-bearing documents) at rest.
  JobService(Store& store, ServerService& servers, const Clock& clock, const Logger& log, Metrics& metrics,
             std::string secret_key, JobServiceOptions options);

  // POST /jobs body → the new job (status queued). Errors carry every bad field.
  Result<nlohmann::json> create(std::string_view body);
  // Everything create checks, nothing stored (a fleet checks its request this way).
  Status check_request(nlohmann::json request);
  // A fleet member's job: stored only while the fleet is running and the member has no job
  // yet, in one transaction (nullopt: it was launched already, or the fleet stopped).
  struct FleetLaunch {
    std::string fleet_id;
    int position = 0;
  };
  Result<std::optional<nlohmann::json>> create_in_fleet(nlohmann::json request, const FleetLaunch& launch);
  Result<nlohmann::json> get(const std::string& id);
  Result<nlohmann::json> list(const JobListQuery& query);
  Result<nlohmann::json> cancel(const std::string& id);
  // Seals the recipe secrets of jobs an older version stored in clear (run at start-up, before
  // the reconciler). Returns how many recipes it rewrote.
  Result<std::size_t> seal_stored_recipes();

  // POST /status-webhook/{serial}. Authenticated by the per-job HMAC key.
  Result<nlohmann::json> accept_webhook(const std::string& serial, std::string_view timestamp_header,
                                        std::string_view signature_header, std::string_view body);

  // Moves a job along the status table; false when it is no longer in `from`.
  Result<bool> transition(const JobRecord& job, JobStatus from, JobStatus to, const JobChanges& changes,
                          const std::string& detail);

  // The per-job webhook key, for the task ISO only (never for an API answer or a log line).
  Result<std::string> webhook_key(const JobRecord& job) const;

  std::string webhook_url(const std::string& serial) const;

  // Called after a new job or an applied report, so the reconciler acts without waiting for
  // its next tick.
  void on_change(std::function<void(const std::string& job_id)> callback) { on_change_ = std::move(callback); }
  // Set once at start-up: jobs may then target nodes ({"node": {"id"}}), booted over PXE.
  void set_nodes(NodeService* nodes) { nodes_ = nodes; }
  // Set once at start-up, before any job is built (the registry is made after the jobs).
  void set_registry_pull_token(decltype(JobServiceOptions::registry_pull_token) issue) {
    options_.registry_pull_token = std::move(issue);
  }

  // The job a machine asking by serial number should run (network media mode): provisioning,
  // network mode, and its maintenance OS not booted yet. A serial number can be guessed and a
  // task ISO carries the job's signing key, so nothing else is ever handed out this way.
  Result<JobRecord> network_task_for_serial(const std::string& serial);

  // What the job's task ISO carries: the recipe (its secrets unsealed) and job.json (id,
  // serial, webhook URL, key). Never for an API answer or a log line.
  Result<iso::TaskIsoInputs> task_inputs(const JobRecord& job) const;

  Result<JobRecord> load(const std::string& id);

  // A recipe_ref → the recipe it names now (recipes_dir, or the named recipes); errors carry
  // the path /recipe_ref. A fleet pins its recipe this way, once, for all its members.
  Result<nlohmann::json> load_recipe_ref(const std::string& name) const;

 private:
  // A report whose timestamp, signature and freshness were checked: what apply_report takes.
  struct AuthenticatedReport {
    JobRecord job;
    WebhookReport report;
  };
  Result<AuthenticatedReport> authenticate_webhook(const std::string& serial, std::string_view timestamp_header,
                                                   std::string_view signature_header, std::string_view body);
  // Applies an authenticated report to its job: a status change or phases, retried against
  // concurrent changes; a repeated outcome is accepted, a contradicting one conflicts.
  Result<nlohmann::json> apply_report(JobRecord job, const WebhookReport& report);
  Result<std::optional<nlohmann::json>> create_job(nlohmann::json request, const FleetLaunch* launch, bool dry_run);
  // Whether a node may be given a new job now (409 with the reason when not).
  Status node_accepts_job(const NodeRecord& node, bool reprovision) const;
  // A node's job ended: the node follows (installed, or back to discovered).
  void node_job_ended(const JobRecord& job, JobStatus outcome);
  void node_job_booted(const JobRecord& job);
  Result<nlohmann::json> view(const JobRecord& job);

  Store& store_;
  ServerService& servers_;
  const Clock& clock_;
  const Logger& log_;
  Metrics& metrics_;
  std::string secret_key_;
  JobServiceOptions options_;
  std::function<void(const std::string&)> on_change_;
  NodeService* nodes_ = nullptr;
  JsonSchema request_schema_;
  RecipeValidator recipe_validator_;
};

}  // namespace provisioner
