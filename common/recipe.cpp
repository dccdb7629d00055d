#include "common/recipe.hpp"

#include <set>

#include <nlohmann/json.hpp>

#include "common/crypto.hpp"

namespace provisioner {

namespace embedded {
extern const std::string_view recipe_schema;
extern const std::string_view webhook_schema;
extern const std::string_view job_request_schema;
extern const std::string_view server_schema;
}  // namespace embedded

std::string_view recipe_schema_text() { return embedded::recipe_schema; }
std::string_view webhook_schema_text() { return embedded::webhook_schema; }
std::string_view job_request_schema_text() { return embedded::job_request_schema; }
std::string_view server_schema_text() { return embedded::server_schema; }

bool is_safe_relative_name(std::string_view name, std::string* why) {
  auto refuse = [&](const char* reason) {
    if (why) *why = reason;
    return false;
  };
  if (name.empty()) return refuse("empty name");
  if (name.size() > 200) return refuse("name longer than 200 characters");
  if (name.front() == '/') return refuse("absolute paths are not allowed");
  std::size_t start = 0;
  while (start <= name.size()) {
    auto end = name.find('/', start);
    if (end == std::string_view::npos) end = name.size();
    auto part = name.substr(start, end - start);
    if (part.empty()) return refuse("empty path component");
    if (part == "." || part == "..") return refuse("'.' and '..' path components are not allowed");
    if (part.size() > 64) return refuse("path component longer than 64 characters");
    start = end + 1;
  }
  for (char c : name)
    if (static_cast<unsigned char>(c) < 0x20 || c == '\\') return refuse("control characters and backslashes are not allowed");
  return true;
}

RecipeValidator::RecipeValidator() : schema_(recipe_schema_text()) {}
RecipeValidator::RecipeValidator(std::string_view schema_text) : schema_(schema_text) {}

std::vector<FieldError> RecipeValidator::validate(const nlohmann::json& recipe) const {
  auto errors = schema_.validate(recipe);
  if (!errors.empty()) return errors;

  // Rules beyond the schema.
  if (auto it = recipe.find("partition_layout"); it != recipe.end()) {
    std::set<std::string> labels;
    const auto& parts = *it;
    for (std::size_t i = 0; i < parts.size(); ++i) {
      const auto& p = parts[i];
      std::string base = "/partition_layout/" + std::to_string(i);
      if (p.value("size", "") == "rest" && i + 1 != parts.size())
        errors.push_back({base + "/size", "only the last partition can take the rest of the disk"});
      if (p.contains("label") && !labels.insert(p["label"].get<std::string>()).second)
        errors.push_back({base + "/label", "duplicate partition label"});
    }
  }
  if (auto it = recipe.find("files"); it != recipe.end()) {
    std::set<std::string> names;
    for (std::size_t i = 0; i < it->size(); ++i) {
      std::string name = (*it)[i]["name"].get<std::string>(), why;
      std::string path = "/files/" + std::to_string(i) + "/name";
      if (!is_safe_relative_name(name, &why)) errors.push_back({path, why});
      else if (!names.insert(name).second) errors.push_back({path, "duplicate file name"});
    }
  }
  if (recipe.value("boot_mode", "") == "uefi" && recipe.contains("partition_layout")) {
    bool has_esp = false;
    for (const auto& p : recipe["partition_layout"])
      has_esp |= p["type_guid"].get<std::string>() == "c12a7328-f81f-11d2-ba4b-00a0c93ec93b" ||
                 p["type_guid"].get<std::string>() == "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
    if (!has_esp)
      errors.push_back({"/partition_layout", "boot_mode uefi needs an EFI system partition "
                                             "(type_guid c12a7328-f81f-11d2-ba4b-00a0c93ec93b)"});
  }
  return errors;
}

Result<nlohmann::json> RecipeValidator::parse(std::string_view text) const {
  auto doc = parse_json(text);
  if (!doc) return doc.error();
  auto errors = validate(*doc);
  if (!errors.empty()) return make_error(ErrorKind::invalid_input, "recipe is not valid", std::move(errors));
  return doc;
}

namespace {

constexpr const char* kSealedMember = "sealed";

struct SecretValue {
  nlohmann::json* value;
  std::string path;  // JSON pointer, for error messages
};

// Every secret-bearing value of a recipe (submitted or stored), in a fixed order.
std::vector<SecretValue> secret_values(nlohmann::json& recipe) {
  std::vector<SecretValue> out;
  if (!recipe.is_object()) return out;
  if (auto it = recipe.find("secrets"); it != recipe.end() && it->is_object())
    for (auto& [name, value] : it->items()) out.push_back({&value, "/secrets/" + name});
  for (auto doc : kSecretDocuments)
    if (auto it = recipe.find(std::string(doc)); it != recipe.end()) out.push_back({&*it, "/" + std::string(doc)});
  return out;
}

}  // namespace

bool is_sealed_value(const nlohmann::json& value) {
  return value.is_object() && value.size() == 1 && value.contains(kSealedMember);
}

nlohmann::json seal_recipe_secrets(nlohmann::json recipe, std::string_view key) {
  for (auto& [value, path] : secret_values(recipe))
    if (value->is_string()) *value = nlohmann::json{{kSealedMember, crypto::seal(key, value->get_ref<const std::string&>())}};
  return recipe;
}

Result<nlohmann::json> open_recipe_secrets(nlohmann::json stored, std::string_view key) {
  for (auto& [value, path] : secret_values(stored)) {
    if (!is_sealed_value(*value)) continue;  // plain: stored by a version that did not seal
    const auto& blob = (*value)[kSealedMember];
    auto plain = blob.is_string() ? crypto::open(key, blob.get_ref<const std::string&>()) : std::nullopt;
    if (!plain)
      return make_error(ErrorKind::internal,
                        "the recipe's " + path + " cannot be unsealed (wrong secret key, or the stored job was altered)");
    *value = std::move(*plain);
  }
  return stored;
}

}  // namespace provisioner
