#include "controller/jobs/job_service.hpp"
#include "controller/jobs/named_recipes.hpp"

#include <fstream>
#include <sstream>

#include "common/crypto.hpp"
#include "common/list_cursor.hpp"
#include "common/list_limit.hpp"
#include "common/redact.hpp"
#include "common/webhook.hpp"
#include "controller/jobs/job_phase.hpp"
#include "controller/logging/logger.hpp"
#include "controller/metrics/metrics.hpp"
#include "controller/nodes/node_service.hpp"
#include "controller/servers/server_service.hpp"

namespace provisioner {

namespace {

std::string new_job_id() { return "job_" + crypto::random_token(8); }

std::vector<FieldError> prefixed(const std::string& prefix, std::vector<FieldError> errors) {
  for (auto& e : errors) e.path = prefix + e.path;
  return errors;
}

}  // namespace

JobService::JobService(Store& store, ServerService& servers, const Clock& clock, const Logger& log, Metrics& metrics,
                       std::string secret_key, JobServiceOptions options)
    : store_(store),
      servers_(servers),
      clock_(clock),
      log_(log),
      metrics_(metrics),
      secret_key_(std::move(secret_key)),
      options_(std::move(options)),
      request_schema_(job_request_schema_text()) {}

std::string JobService::webhook_url(const std::string& serial) const {
  return options_.public_url + "/api/v1/status-webhook/" + serial;
}

Result<nlohmann::json> JobService::load_recipe_ref(const std::string& ref) const {
  // "name@version" / "name@sha256:<hex>": a named recipe in the registry.
  auto at = ref.find('@');
  std::string name = ref.substr(0, at);
  auto named = [&](const std::string& version) -> Result<nlohmann::json> {
    if (!options_.named_recipes)
      return make_error(ErrorKind::invalid_input, "unknown recipe_ref",
                        {{"/recipe_ref", "named recipes need the registry ([registry] enabled)"}});
    auto got = options_.named_recipes->get(name, version);
    if (got) return std::move(got->recipe);
    if (got.error().kind == ErrorKind::not_found || got.error().kind == ErrorKind::invalid_input)
      return make_error(ErrorKind::invalid_input, "unknown recipe_ref",
                        {{"/recipe_ref", "no recipe '" + name + "' at '" + version + "'"}});
    return got.error();
  };
  if (at != std::string::npos) return named(ref.substr(at + 1));
  // The schema already limits the name to [a-z0-9._-]; refuse dot-only names as well.
  if (name.find("..") != std::string::npos)
    return make_error(ErrorKind::invalid_input, "bad recipe_ref", {{"/recipe_ref", "not a recipe name"}});
  auto path = options_.recipes_dir / (name + ".json");
  std::ifstream in(path, std::ios::binary);
  if (!in && options_.named_recipes) return named("latest");
  if (!in)
    return make_error(ErrorKind::invalid_input, "unknown recipe_ref",
                      {{"/recipe_ref", "no recipe named '" + name + "'"}});
  std::stringstream text;
  text << in.rdbuf();
  auto doc = parse_json(text.str());
  if (!doc || !doc->is_object())
    return make_error(ErrorKind::invalid_input, "stored recipe is not a JSON object",
                      {{"/recipe_ref", "recipe '" + name + "' is not valid JSON"}});
  return doc;
}

Result<nlohmann::json> JobService::create(std::string_view body) {
  auto parsed = parse_json(body);
  if (!parsed) return parsed.error();
  auto made = create_job(std::move(*parsed), nullptr, false);
  if (!made) return made.error();
  return std::move(**made);
}

Status JobService::check_request(nlohmann::json request) {
  auto made = create_job(std::move(request), nullptr, true);
  if (!made) return made.error();
  return Ok{};
}

Result<std::optional<nlohmann::json>> JobService::create_in_fleet(nlohmann::json request, const FleetLaunch& launch) {
  return create_job(std::move(request), &launch, false);
}

Result<std::optional<nlohmann::json>> JobService::create_job(nlohmann::json request_doc, const FleetLaunch* launch,
                                                             bool dry_run) {
  auto* request = &request_doc;
  // A fleet's launch is made here from the fleet's pinned recipe, which was checked like this
  // request when the fleet was created: only the server differs, and resolving it checks it.
  const bool checked_by_fleet = launch != nullptr;
  if (auto errors = checked_by_fleet ? std::vector<FieldError>{} : request_schema_.validate(*request); !errors.empty())
    return make_error(ErrorKind::invalid_input, "job request is not valid", std::move(errors));

  // The target: a server (BMC or inline) or a node (network boot), exactly one.
  const bool to_node = request->contains("node");
  if (to_node == request->contains("server"))
    return make_error(ErrorKind::invalid_input, "job request is not valid",
                      {{"/server", to_node ? "give a server or a node, not both" : "required (or a node)"}});
  if (request->contains("reprovision") && !to_node)
    return make_error(ErrorKind::invalid_input, "job request is not valid",
                      {{"/reprovision", "only for a node's job"}});
  std::optional<NodeRecord> node;
  if (to_node) {
    if (!nodes_) return make_error(ErrorKind::invalid_input, "job request is not valid", {{"/node", "nodes are off"}});
    auto id = (*request)["/node/id"_json_pointer].get<std::string>();
    auto loaded = nodes_->load(id);
    if (!loaded && loaded.error().kind == ErrorKind::not_found)
      return make_error(ErrorKind::invalid_input, "job request is not valid", {{"/node/id", "no node " + id}});
    if (!loaded) return loaded.error();
    if (dry_run) {
      node = std::move(*loaded);
    } else {
      auto released = nodes_->release_if_stale(*loaded, "api");
      if (!released) return released.error();
      node = std::move(*released);
    }
    if (auto refused = node_accepts_job(*node, request->value("reprovision", false)); !refused) return refused.error();
  }

  nlohmann::json recipe;
  if (!request->contains("recipe_ref") && !request->contains("recipe")) {
    // A node's job may use the node's own recipe_ref (its profile by MAC), else the first
    // profile whose labels the node carries.
    std::optional<std::string> profile;
    if (node && node->record.contains("recipe_ref")) profile = node->record["recipe_ref"].get<std::string>();
    else if (node && options_.profile_for_labels)
      profile = options_.profile_for_labels(node->record.value("labels", nlohmann::json::object()));
    if (!profile)
      return make_error(ErrorKind::invalid_input, "job request is not valid",
                        {{"/recipe", node ? "required: recipe or recipe_ref (the node has no recipe_ref, and no profile matches its labels)"
                                          : "required: recipe or recipe_ref"}});
    (*request)["recipe_ref"] = *profile;
  }
  if (request->contains("recipe_ref")) {
    auto loaded = load_recipe_ref((*request)["recipe_ref"].get<std::string>());
    if (!loaded) return loaded.error();
    recipe = std::move(*loaded);
  } else {
    recipe = (*request)["recipe"];
  }
  if (auto errors = checked_by_fleet ? std::vector<FieldError>{} : recipe_validator_.validate(recipe); !errors.empty())
    return make_error(ErrorKind::invalid_input, "recipe is not valid", prefixed("/recipe", std::move(errors)));
  // What the task ISO adds to the schema (total size, name depth and clashes) is checked now,
  // so a job that cannot be built is refused at the door.
  if (auto ok = checked_by_fleet ? Status(Ok{}) : iso::check_task_iso_inputs({"job_check", recipe, {{"id", "job_check"}}}); !ok) {
    auto e = ok.error();
    if (e.kind == ErrorKind::too_large) e.kind = ErrorKind::invalid_input;
    return e;
  }

  // The job keeps a snapshot of its server (password sealed), so later edits of the record
  // cannot change a job half-way.
  nlohmann::json server;
  if (node && node->record.contains("server_id")) {
    // The same machine has a BMC (a server record): its job goes through virtual media, and
    // the node follows it.
    auto resolved = servers_.resolve_for_job({{"id", node->record["server_id"]}}, "/node");
    if (!resolved) return resolved.error();
    server = std::move(*resolved);
    server["node_id"] = node->id;
  } else if (node) {
    // A node is booted over the network: no BMC, the task by PXE. Its webhooks name the
    // node id (a serial number from firmware is not always set, nor unique).
    server = {{"serial", node->id}, {"node_id", node->id}, {"media_mode", "pxe"}};
    for (const char* key : {"macs", "name", "labels"})
      if (node->record.contains(key)) server[key] = node->record[key];
  } else {
    auto resolved = servers_.resolve_for_job((*request)["server"], "/server");
    if (!resolved) return resolved.error();
    server = std::move(*resolved);
  }

  JobRecord job;
  job.status = JobStatus::queued;
  job.server_serial = server["serial"].get<std::string>();
  job.server = server;
  // Secrets and the documents that may carry passwords are stored sealed; task_inputs opens
  // them for the task ISO, the only place that needs them in clear.
  job.recipe = seal_recipe_secrets(recipe, secret_key_);
  job.webhook_key_sealed = crypto::seal(secret_key_, crypto::random_token(32));
  job.created_ms = job.updated_ms = clock_.now_ms();
  if (server.contains("node_id") && server["node_id"].is_string()) job.node_id = server["node_id"].get<std::string>();
  if (dry_run) return std::optional<nlohmann::json>();
  if (launch) job.fleet_id = launch->fleet_id;
  for (int attempt = 0;; ++attempt) {
    job.id = new_job_id();
    if (launch) {
      // The member is claimed in the job's own transaction: launched at most once.
      auto inserted = store_.insert_fleet_job(job, launch->fleet_id, launch->position);
      if (inserted && !*inserted) return std::optional<nlohmann::json>();
      if (inserted) break;
      if (inserted.error().kind != ErrorKind::conflict || attempt == 3) return inserted.error();
      continue;
    }
    auto inserted = store_.insert_job(job);
    if (inserted) break;
    if (inserted.error().kind != ErrorKind::conflict || attempt == 3) return inserted.error();
  }
  if (node) {
    // The node is pending from here: its next network boot runs this job. A node that moved
    // meanwhile (another job won) refuses this one, and the job is canceled unstarted.
    auto moved = nodes_->transition(*node, NodeState::pending, {{"job_id", job.id}}, "api",
                                    "job " + job.id + (node->state == NodeState::discovered ? "" : " (reprovision)"));
    if (!moved || !*moved) {
      // Cancel it from whatever status it reached meanwhile (the reconciler may have started it).
      for (int attempt = 0; attempt < 5; ++attempt) {
        auto now = load(job.id);
        if (!now || !is_transition_allowed(now->status, JobStatus::canceled)) break;
        auto undone = store_.transition_job(job.id, now->status, JobStatus::canceled, {},
                                            "the node changed before the job could claim it", clock_.now_ms());
        if (!undone) log_store_error(log_, job, "cancel the unclaimed job", undone.error());
        if (!undone || *undone) break;
      }
      if (!moved) return moved.error();
      return make_error(ErrorKind::conflict, "node " + node->id + " changed meanwhile; try again");
    }
  }
  metrics_.count_transition("", std::string(to_string(job.status)));
  log_.info("job created", Logger::job_fields(job.id, job.server_serial,
                                              {{"task_target", recipe.value("task_target", "")}}));
  if (on_change_) on_change_(job.id);
  // A fleet's launcher needs only the id: no read back of the job it just wrote.
  if (launch) return std::optional<nlohmann::json>(nlohmann::json{{"id", job.id}});
  auto stored = store_.get_job(job.id);
  if (!stored) return stored.error();
  auto shown = view(**stored);
  if (!shown) return shown.error();
  return std::optional<nlohmann::json>(std::move(*shown));
}

Result<JobRecord> JobService::load(const std::string& id) {
  auto job = store_.get_job(id);
  if (!job) return job.error();
  if (!*job) return make_error(ErrorKind::not_found, "no job " + id);
  return std::move(**job);
}

Result<nlohmann::json> JobService::view(const JobRecord& job) {
  auto events = store_.job_events(job.id);
  if (!events) return events.error();
  nlohmann::json phases = nlohmann::json::array(), history = nlohmann::json::array();
  for (const auto& e : *events) {
    nlohmann::json entry{{"name", e.name}, {"at", format_rfc3339_ms(e.at_ms)}};
    if (!e.detail.empty()) entry["detail"] = e.detail;
    if (e.kind == "phase") {
      phases.push_back(std::move(entry));
    } else if (e.kind == "phase_withdrawn") {
      // The intent is gone from the phases (its last entry of that name); the history says why.
      for (auto it = phases.end(); it != phases.begin();) {
        --it;
        if ((*it)["name"] == e.name) {
          phases.erase(it);
          break;
        }
      }
      entry["name"] = "phase_withdrawn";
      entry["detail"] = e.name + (e.detail.empty() ? "" : ": " + e.detail);
      history.push_back(std::move(entry));
    } else {
      if (!e.from.empty()) entry["from"] = e.from;
      history.push_back(std::move(entry));
    }
  }
  nlohmann::json out{{"id", job.id},
                     {"status", std::string(to_string(job.status))},
                     {"phase", job.phase},
                     {"server", ServerService::view(job.server)},
                     {"recipe", redact(job.recipe)},
                     {"phases", std::move(phases)},
                     {"history", std::move(history)},
                     {"created_at", format_rfc3339_ms(job.created_ms)},
                     {"updated_at", format_rfc3339_ms(job.updated_ms)}};
  // Once complete, the outcome is still what users ask first: the last of succeeded/failed.
  std::string outcome;
  for (const auto& e : out["history"])
    if (e["name"] == "succeeded" || e["name"] == "failed" || e["name"] == "canceled") outcome = e["name"];
  out["outcome"] = outcome.empty() ? nlohmann::json() : nlohmann::json(outcome);
  auto media = job.media;
  out["media"] = media.empty() ? nlohmann::json() : media;
  out["failed_step"] = job.failed_step.empty() ? nlohmann::json() : nlohmann::json(job.failed_step);
  out["error"] = job.error.empty() ? nlohmann::json() : nlohmann::json(job.error);
  return out;
}

Result<nlohmann::json> JobService::get(const std::string& id) {
  auto job = load(id);
  if (!job) return job.error();
  return view(*job);
}

Result<nlohmann::json> JobService::list(const JobListQuery& q) {
  JobFilter filter;
  std::vector<FieldError> errors;
  if (q.status) {
    filter.status = parse_job_status(*q.status);
    if (!filter.status) errors.push_back({"status", "unknown status '" + *q.status + "'"});
  }
  if (q.server) filter.server_serial = q.server;
  if (q.cursor) {
    filter.before_seq = decode_cursor(*q.cursor);
    if (!filter.before_seq) errors.push_back({"cursor", "not a cursor from this API"});
  }
  if (q.limit) {
    auto limit = parse_list_limit(*q.limit, options_.max_list_limit);
    if (!limit) errors.push_back({"limit", "must be an integer from 1 to " + std::to_string(options_.max_list_limit)});
    filter.limit = limit.value_or(0);
  }
  if (!errors.empty()) return make_error(ErrorKind::invalid_input, "bad query", std::move(errors));

  // One row more than asked tells whether another page exists.
  int asked = filter.limit;
  filter.limit = asked + 1;
  auto jobs = store_.list_jobs(filter);
  if (!jobs) return jobs.error();
  nlohmann::json items = nlohmann::json::array();
  bool more = static_cast<int>(jobs->size()) > asked;
  if (more) jobs->pop_back();
  for (const auto& j : *jobs) {
    nlohmann::json item{{"id", j.id},
                        {"status", std::string(to_string(j.status))},
                        {"phase", j.phase},
                        {"serial", j.server_serial},
                        {"created_at", format_rfc3339_ms(j.created_ms)},
                        {"updated_at", format_rfc3339_ms(j.updated_ms)}};
    if (!j.failed_step.empty()) item["failed_step"] = j.failed_step;
    items.push_back(std::move(item));
  }
  nlohmann::json out{{"jobs", std::move(items)}};
  out["next_cursor"] = more ? nlohmann::json(encode_cursor(jobs->back().seq)) : nlohmann::json();
  return out;
}

void log_store_error(const Logger& log, const JobRecord& job, std::string_view what, const Error& error) {
  log.error("store write failed", Logger::job_fields(job.id, job.server_serial,
                                                     {{"what", std::string(what)}, {"error", error.message}}));
}

Result<bool> JobService::transition(const JobRecord& job, JobStatus from, JobStatus to, const JobChanges& changes,
                                    const std::string& detail) {
  if (!is_transition_allowed(from, to))
    return make_error(ErrorKind::conflict, "a " + std::string(to_string(from)) + " job cannot become " +
                                               std::string(to_string(to)));
  auto applied = store_.transition_job(job.id, from, to, changes,
                                       detail, clock_.now_ms());
  if (!applied) return applied.error();
  if (*applied) {
    metrics_.count_transition(std::string(to_string(from)), std::string(to_string(to)));
    log_.info("job status changed", Logger::job_fields(job.id, job.server_serial,
                                                       {{"from", std::string(to_string(from))},
                                                        {"to", std::string(to_string(to))},
                                                        {"detail", detail}}));
    if (job.server.contains("node_id") && (to == JobStatus::succeeded || to == JobStatus::failed || to == JobStatus::canceled))
      node_job_ended(job, to);
  }
  return applied;
}

Status JobService::node_accepts_job(const NodeRecord& node, bool reprovision) const {
  auto state = std::string(to_string(node.state));
  switch (node.state) {
    case NodeState::discovered: return Ok{};
    case NodeState::installed:
    case NodeState::active:
      if (reprovision) return Ok{};
      return make_error(ErrorKind::conflict, "node " + node.id + " is " + state +
                                                 ": installing over it needs \"reprovision\": true");
    case NodeState::pending:
    case NodeState::installing:
      return make_error(ErrorKind::conflict, "node " + node.id + " is " + state + " with job " +
                                                 node.record.value("job_id", "") + "; cancel it first");
    case NodeState::retired:
      return make_error(ErrorKind::conflict, "node " + node.id + " is retired: re-enroll it (state discovered) first");
  }
  return make_error(ErrorKind::conflict, "node " + node.id + " is " + state);
}

void JobService::node_job_booted(const JobRecord& job) {
  // A node that booted without asking /boot/ipxe (a Raspberry Pi reads its task from TFTP):
  // its maintenance OS reporting is what makes it installing.
  for (int attempt = 0; attempt < 5 && nodes_; ++attempt) {
    auto node = nodes_->load(job.server["node_id"].get<std::string>());
    if (!node || node->state != NodeState::pending || node->record.value("job_id", "") != job.id) return;
    auto moved = nodes_->transition(*node, NodeState::installing, nlohmann::json::object(), "job:" + job.id,
                                    "its maintenance OS reported");
    if (!moved) {
      log_.error("cannot move the job's node", Logger::job_fields(job.id, job.server_serial, {{"error", moved.error().message}}));
      return;
    }
    if (*moved) return;
  }
}

void JobService::node_job_ended(const JobRecord& job, JobStatus outcome) {
  // The node follows its job: installed on success; on a failure or a cancel, back to
  // discovered, so that its next boot is a local one (never a second install by itself).
  auto id = job.server["node_id"].get<std::string>();
  for (int attempt = 0; attempt < 5; ++attempt) {
    auto node = nodes_ ? nodes_->load(id) : Result<NodeRecord>(make_error(ErrorKind::not_found, "nodes are off"));
    if (!node) {
      log_.warn("the job's node is gone", Logger::job_fields(job.id, job.server_serial, {{"node", id}}));
      return;
    }
    if (node->record.value("job_id", "") != job.id) return;  // another job owns it now
    NodeState to = outcome == JobStatus::succeeded ? NodeState::installed : NodeState::discovered;
    if (node->state != NodeState::pending && node->state != NodeState::installing) return;
    if (to == NodeState::installed && node->state != NodeState::installing) to = NodeState::discovered;
    nlohmann::json changes{{"job_id", nullptr},
                           {"last_job", {{"id", job.id}, {"outcome", std::string(to_string(outcome))}}}};
    auto moved = nodes_->transition(*node, to, changes, "job:" + job.id, "job " + std::string(to_string(outcome)));
    if (!moved) {
      log_.error("cannot move the job's node", Logger::job_fields(job.id, job.server_serial, {{"error", moved.error().message}}));
      return;
    }
    if (*moved) return;
  }
}

Result<nlohmann::json> JobService::cancel(const std::string& id) {
  // Retry when a concurrent change wins the compare-and-swap, re-reading the status.
  for (int attempt = 0; attempt < 5; ++attempt) {
    auto job = load(id);
    if (!job) return job.error();
    auto status = job->status;
    if (status == JobStatus::canceled) return view(*job);
    if (!is_transition_allowed(status, JobStatus::canceled))
      return make_error(ErrorKind::conflict, "job " + id + " is " + std::string(to_string(status)) + " and can no longer be canceled");
    auto applied = transition(*job, status, JobStatus::canceled, {}, "canceled through the API");
    if (!applied) return applied.error();
    if (*applied) {
      if (on_change_) on_change_(id);
      return get(id);
    }
  }
  return make_error(ErrorKind::conflict, "job " + id + " keeps changing; try again");
}

Result<std::size_t> JobService::seal_stored_recipes() {
  std::size_t rewritten = 0;
  JobFilter page;
  page.limit = 500;
  for (;;) {
    auto jobs = store_.list_jobs(page);
    if (!jobs) return jobs.error();
    for (const auto& job : *jobs) {
      auto sealed = seal_recipe_secrets(job.recipe, secret_key_);  // values already sealed are kept
      if (sealed == job.recipe) continue;
      auto updated = store_.update_job_recipe(job.id, sealed, clock_.now_ms());
      if (!updated) return updated.error();
      rewritten += *updated;
    }
    if (jobs->size() < static_cast<std::size_t>(page.limit)) break;
    page.before_seq = jobs->back().seq;
  }
  if (rewritten > 0)
    if (auto flushed = store_.flush_rewrites(); !flushed) return flushed.error();
  return rewritten;
}

Result<JobRecord> JobService::network_task_for_serial(const std::string& serial) {
  JobFilter filter;
  filter.status = JobStatus::provisioning;
  filter.server_serial = serial;
  filter.limit = 1;
  auto jobs = store_.list_jobs(filter);
  if (!jobs) return jobs.error();
  if (jobs->empty()) return make_error(ErrorKind::not_found, "no task for " + serial + " yet");
  const auto& job = jobs->front();
  auto media = job.media;
  if (media.value("mode", "") != "network") return make_error(ErrorKind::not_found, "no task for " + serial + " yet");
  auto events = store_.job_events(job.id);
  if (!events) return events.error();
  for (const auto& e : *events)
    if (e.kind == "phase" && e.name == to_string(JobPhase::maint_booted))
      return make_error(ErrorKind::not_found, "no task for " + serial + " yet");
  log_.info("task handed out by serial", Logger::job_fields(job.id, serial));
  return job;
}

Result<iso::TaskIsoInputs> JobService::task_inputs(const JobRecord& job) const {
  auto key = webhook_key(job);
  if (!key) return key.error();
  nlohmann::json job_json{{"id", job.id},
                          {"serial", job.server_serial},
                          {"webhook_url", webhook_url(job.server_serial)},
                          {"controller_url", options_.public_url},
                          {"signing_key_id", job.id + "/v1"},
                          {"signing_key", *key}};
  // A node booted from the network has no BMC to reset it into the installed system: its
  // maintenance OS reboots itself once the success report is delivered.
  if (job.server.contains("node_id") && !job.server.contains("bmc")) job_json["after_success"] = "reboot";
  auto recipe = open_recipe_secrets(job.recipe, secret_key_);
  if (!recipe) return recipe.error();
  // An image in this controller's own registry: the job gets a pull token for that repository
  // only, valid for two days from the job's creation (deterministic, like the whole task ISO).
  if (options_.registry_pull_token && recipe->contains("/image/oci"_json_pointer)) {
    auto ref = recipe->at("/image/oci"_json_pointer).get<std::string>();
    auto own = options_.public_url.substr(options_.public_url.find("://") == std::string::npos
                                              ? 0
                                              : options_.public_url.find("://") + 3);
    own = own.substr(0, own.find('/'));
    auto slash = ref.find('/');
    if (!own.empty() && slash != std::string::npos && ref.substr(0, slash) == own) {
      auto repo = ref.substr(slash + 1);
      repo = repo.substr(0, repo.find('@'));
      if (auto colon = repo.rfind(':'); colon != std::string::npos) repo = repo.substr(0, colon);
      auto expires = job.created_ms / 1000 + 2 * 24 * 3600;
      job_json["registry_auth"] = {{own, options_.registry_pull_token(job.id, repo, expires)}};
    }
  }
  return iso::TaskIsoInputs{job.id, std::move(*recipe), std::move(job_json)};
}

Result<std::string> JobService::webhook_key(const JobRecord& job) const {
  auto key = crypto::open(secret_key_, job.webhook_key_sealed);
  if (!key) return make_error(ErrorKind::internal, "the job's webhook key cannot be unsealed (wrong secret key?)");
  return *key;
}

Result<nlohmann::json> JobService::accept_webhook(const std::string& serial, std::string_view timestamp_header,
                                                  std::string_view signature_header, std::string_view body) {
  auto report = authenticate_webhook(serial, timestamp_header, signature_header, body);
  if (!report) return report.error();
  return apply_report(std::move(report->job), report->report);
}

Result<JobService::AuthenticatedReport> JobService::authenticate_webhook(const std::string& serial,
                                                                         std::string_view timestamp_header,
                                                                         std::string_view signature_header,
                                                                         std::string_view body) {
  if (timestamp_header.empty() || signature_header.empty())
    return make_error(ErrorKind::unauthorized, "missing " + std::string(kWebhookTimestampHeader) + " or " +
                                                   std::string(kWebhookSignatureHeader));
  auto ts = parse_unix_timestamp(timestamp_header);
  if (!ts) return make_error(ErrorKind::unauthorized, "bad timestamp");
  auto now = clock_.now_seconds();
  if (*ts < now - options_.webhook_max_skew_seconds || *ts > now + options_.webhook_max_skew_seconds)
    return make_error(ErrorKind::unauthorized, "stale timestamp");

  auto report = parse_webhook_report(body);
  if (!report) return report.error();
  auto found = store_.get_job(report->job_id);
  if (!found) return found.error();
  // Same answer for an unknown job and a wrong serial: a forger learns nothing.
  if (!*found || (*found)->server_serial != serial) return make_error(ErrorKind::unauthorized, "bad signature");
  JobRecord job = std::move(**found);
  auto key = webhook_key(job);
  if (!key) return key.error();
  if (!webhook_signature_matches(*key, *ts, body, signature_header)) {
    log_.warn("webhook with a bad signature", Logger::job_fields(job.id, serial));
    return make_error(ErrorKind::unauthorized, "bad signature");
  }
  auto fresh = store_.remember_webhook(std::string(signature_header), clock_.now_ms(),
                                       (now + 2 * options_.webhook_max_skew_seconds + 1) * 1000);
  if (!fresh) return fresh.error();
  if (!*fresh) {
    log_.warn("webhook replayed", Logger::job_fields(job.id, serial));
    return make_error(ErrorKind::conflict, "replayed webhook");
  }
  return AuthenticatedReport{std::move(job), std::move(*report)};
}

Result<nlohmann::json> JobService::apply_report(JobRecord job, const WebhookReport& report) {
  auto fields = Logger::job_fields(job.id, job.server_serial, {{"report", report.status}, {"step", report.step}});
  log_.info("webhook accepted", fields);
  bool applied = false;
  for (int attempt = 0; attempt < 5; ++attempt) {
    auto status = job.status;
    Result<bool> moved = false;
    if (status == JobStatus::queued) {
      // The maintenance OS booted before the reconciler recorded the start (PXE, or a fast BMC).
      moved = transition(job, JobStatus::queued, JobStatus::provisioning, {}, "maintenance OS reported");
    } else if (status == JobStatus::provisioning) {
      if (report.status == "running") {
        auto p = store_.record_phase(job.id, phase_name(JobPhase::maint_booted), "", clock_.now_ms());
        if (!p) return p.error();
        applied |= *p;
        if (*p && job.server.contains("node_id")) node_job_booted(job);
        if (!report.step.empty()) {
          auto s = store_.record_phase(job.id, step_phase(report.step), "", clock_.now_ms());
          if (!s) return s.error();
          applied |= *s;
        }
        break;
      }
      if (report.status == "success") {
        moved = transition(job, status, JobStatus::succeeded, {}, "maintenance OS reported success");
      } else {
        std::string tail = report.log_tail.substr(0, 2000);
        moved = transition(job, status, JobStatus::failed,
                           JobChanges{report.failed_step, "step " + report.failed_step + " failed"}, tail);
      }
      if (moved && *moved) {
        applied = true;
        break;
      }
    } else {
      // Already past provisioning: a repeated report of the same outcome is fine, anything
      // else conflicts. A complete job's outcome is the last succeeded/failed it went through.
      auto outcome = status;
      if (status == JobStatus::complete) {
        auto events = store_.job_events(job.id);
        if (!events) return events.error();
        for (const auto& e : *events)
          if (e.kind == "transition" && (e.name == "succeeded" || e.name == "failed"))
            outcome = *parse_job_status(e.name);
      }
      bool same = (report.status == "success" && outcome == JobStatus::succeeded) ||
                  (report.status == "failed" && outcome == JobStatus::failed) ||
                  (report.status == "running" && outcome != JobStatus::canceled);
      if (!same) return make_error(ErrorKind::conflict, "job " + job.id + " is " + std::string(to_string(job.status)));
      break;
    }
    if (!moved) return moved.error();
    if (*moved) applied = true;
    auto again = load(job.id);  // re-read and apply the rest against the new status
    if (!again) return again.error();
    job = std::move(*again);
  }
  if (applied && on_change_) on_change_(job.id);
  auto current = load(job.id);
  if (!current) return current.error();
  return nlohmann::json{{"job_id", job.id}, {"status", std::string(to_string(current->status))}, {"applied", applied}};
}

}  // namespace provisioner
