#pragma once
// The recipe model: what a job installs. A recipe is JSON checked against
// schemas/recipe.schema.json plus the rules a schema cannot say (unique labels, safe names).
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "common/json_schema.hpp"
#include "common/result.hpp"

namespace provisioner {

// The schema compiled into every binary (the task ISO carries the same text).
std::string_view recipe_schema_text();
std::string_view webhook_schema_text();
std::string_view job_request_schema_text();
std::string_view server_schema_text();

class RecipeValidator {
 public:
  RecipeValidator();                                   // the embedded schema
  explicit RecipeValidator(std::string_view schema_text);

  // Every problem found, each with a JSON-pointer path; empty when the recipe is good.
  std::vector<FieldError> validate(const nlohmann::json& recipe) const;

  // Parse + validate in one step; an error carries every field problem.
  Result<nlohmann::json> parse(std::string_view text) const;

 private:
  JsonSchema schema_;
};

// A relative file name safe to place on an ISO or a disk: no absolute path, no "." or ".."
// component, no empty component. `why` explains a refusal.
bool is_safe_relative_name(std::string_view name, std::string* why = nullptr);

}  // namespace provisioner
