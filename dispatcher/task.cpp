#include "dispatcher/task.hpp"

#include "common/atomic_file.hpp"
#include "common/json_schema.hpp"
#include "common/recipe.hpp"

namespace provisioner::dispatcher {

namespace fs = std::filesystem;

bool has_task_marker(const fs::path& root) {
  auto marker = read_file(root / std::string(kTaskMarkerName));
  if (!marker) return false;
  std::string_view text = *marker;
  auto first = text.substr(0, text.find('\n'));
  return first == kTaskMarkerFirstLine;
}

Result<Task> read_task_job(const fs::path& root) {
  auto bad = [](std::string why) { return make_error(ErrorKind::invalid_input, std::move(why)); };
  auto marker = read_file(root / std::string(kTaskMarkerName));
  if (!marker) return bad("no task marker on the medium");
  if (!has_task_marker(root)) return bad("task marker of an unknown format version");

  auto job_text = read_file(root / "job.json");
  if (!job_text) return bad("no job.json on the task medium");
  auto job = parse_json(*job_text);
  if (!job || !job->is_object()) return bad("job.json is not a JSON object");
  Task task;
  task.root = root;
  auto str = [&](const char* key) -> std::string {
    auto it = job->find(key);
    return it != job->end() && it->is_string() ? it->get<std::string>() : std::string();
  };
  task.job_id = str("id");
  task.webhook_url = str("webhook_url");
  task.signing_key = str("signing_key");
  task.signing_key_id = str("signing_key_id");
  if (auto ra = job->find("registry_auth"); ra != job->end() && ra->is_object())
    for (const auto& [host, token] : ra->items())
      if (token.is_string()) task.registry_auth[host] = token.get<std::string>();
  if (auto after = job->find("after_success"); after != job->end()) {
    if (!after->is_string() || *after != "reboot") return bad("job.json after_success must be \"reboot\"");
    task.reboot_after_success = true;
  }
  if (task.job_id.empty()) return bad("job.json has no id");
  if (task.webhook_url.empty()) return bad("job.json has no webhook_url");
  if (task.signing_key.empty()) return bad("job.json has no signing_key");
  // The marker repeats the job id; a mismatch means a medium assembled from two jobs.
  auto pos = marker->find("\njob_id=");
  if (pos != std::string::npos) {
    auto value = marker->substr(pos + 8);
    value = value.substr(0, value.find('\n'));
    if (value != task.job_id) return bad("marker job_id differs from job.json id");
  }

  return task;
}

Result<Task> read_task(const fs::path& root) {
  auto bad = [](std::string why) { return make_error(ErrorKind::invalid_input, std::move(why)); };
  auto job = read_task_job(root);
  if (!job) return job;
  Task task = std::move(*job);
  auto schema_text = read_file(root / "recipe.schema.json");
  if (!schema_text) return bad("no recipe.schema.json on the task medium");
  auto recipe_text = read_file(root / "recipe.json");
  if (!recipe_text) return bad("no recipe.json on the task medium");
  try {
    RecipeValidator validator(*schema_text);
    auto recipe = validator.parse(*recipe_text);
    if (!recipe) {
      std::string why = "recipe does not match its schema: " + recipe.error().message;
      for (const auto& f : recipe.error().fields) why += "; " + f.path + ": " + f.message;
      return bad(why);
    }
    task.recipe = std::move(*recipe);
  } catch (const std::exception& e) {
    return bad(std::string("recipe.schema.json is not a usable schema: ") + e.what());
  }
  return task;
}

}  // namespace provisioner::dispatcher
