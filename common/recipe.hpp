#pragma once
// The recipe model: what a job installs. A recipe is JSON checked against
// schemas/recipe.schema.json plus the rules a schema cannot say (unique labels, safe names).
#include <array>
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

// ---- Secrets at rest ----------------------------------------------------------------------
// The controller stores a recipe with every value of `secrets` and every document that may
// carry a password anywhere in its text (these four) sealed; only the task ISO gets them back.
inline constexpr std::array<std::string_view, 4> kSecretDocuments = {"user_data", "network_config", "ks_cfg",
                                                                     "unattend_xml"};

// A sealed value: {"sealed": "<crypto::seal hex>"}. The schema allows only strings where one
// stands, so a stored value is either sealed (this object) or plain (a string).
bool is_sealed_value(const nlohmann::json& value);

// The recipe as stored: same shape, those values replaced by sealed ones (AES-256-GCM with
// the 32-byte `key`, a fresh nonce each time). Values already sealed are kept.
nlohmann::json seal_recipe_secrets(nlohmann::json recipe, std::string_view key);

// The recipe as submitted, from its stored form. Plain strings (a job stored by a version
// that did not seal) are taken as they are. A value that cannot be opened (another key,
// tampered, malformed) is an internal error naming its field, never its content.
Result<nlohmann::json> open_recipe_secrets(nlohmann::json stored, std::string_view key);

}  // namespace provisioner
