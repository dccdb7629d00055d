#pragma once
// Named recipes as OCI artifacts in the registry: version `v` of recipe `name` is the tag `v`
// of the repository `recipes/<name>`, an artifact manifest (artifactType kRecipeMediaType)
// with the empty config and one layer, the recipe JSON. The API (PUT /api/v1/recipes/...) and
// OCI pushes (oras and the like) land in the same place and are checked the same way: the
// recipe schema, immutable versions, `latest` moved to the newest version by the controller.
//
// Secrets at rest: the API path seals the recipe's secrets (recipe.hpp) before storing it, so
// the stored layer never holds them in clear. An OCI push cannot be rewritten (its digest is
// its content), so a pushed recipe that carries secrets in clear is refused.
#include <optional>
#include <string>
#include <string_view>

#include "common/recipe.hpp"
#include "controller/jobs/named_recipes.hpp"
#include "controller/registry/registry_store.hpp"

namespace provisioner::registry {

inline constexpr std::string_view kRecipeMediaType = "application/vnd.provisioner.recipe.v1+json";
inline constexpr std::string_view kRecipeRepoPrefix = "recipes/";

class RecipeCatalog final : public NamedRecipes {
 public:
  RecipeCatalog(RegistryStore& store, std::string secret_key);

  Result<Stored> put(const std::string& name, const std::string& version, const nlohmann::json& recipe) override;
  Result<Stored> get(const std::string& name, const std::string& ref) const override;
  Result<std::vector<std::string>> versions(const std::string& name) const override;
  Status remove(const std::string& name, const std::string& version) override;

  // For manifests pushed over /v2/ into recipes/<name>: refuses (MANIFEST_INVALID, or
  // tag_exists) what put() would refuse. Called before the store takes the manifest. A layer
  // refused for secrets in clear is deleted (unless something else holds the same bytes).
  std::optional<RegistryError> check_push(const std::string& repo, const std::string& reference,
                                          const std::string& manifest_bytes) const;
  // After a pushed version landed: `latest` names it.
  void pushed(const std::string& repo, const std::string& reference, const std::string& manifest_bytes);

  static bool valid_name(std::string_view name);     // [a-z0-9][a-z0-9._-]*, at most 64
  static bool valid_version(std::string_view v);     // a tag, not "latest"

 private:
  // The recipe (stored form) a manifest's layer holds; errors as the registry's.
  RResult<nlohmann::json> layer_recipe(const std::string& repo, const std::string& manifest_bytes) const;
  RegistryStore& store_;
  std::string key_;
  RecipeValidator validator_;
};

}  // namespace provisioner::registry
