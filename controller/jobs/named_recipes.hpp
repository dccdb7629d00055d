#pragma once
// Named, versioned recipes (PUT/GET/DELETE /api/v1/recipes/{name}/{version}, and `recipe_ref`
// "name@version" or "name@sha256:<hex>" in jobs). The registry implements it: a version is an
// OCI artifact in the repository `recipes/<name>` (registry/recipe_catalog.hpp).
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/result.hpp"

namespace provisioner {

class NamedRecipes {
 public:
  struct Stored {
    std::string name;
    std::string version;  // as asked ("latest" resolved to the version it names, when known)
    std::string digest;   // of the artifact's manifest: what "name@sha256:..." names
    nlohmann::json recipe;  // as submitted: secrets in clear (the caller redacts or seals)
    bool created = false;   // put(): false when this very recipe was already that version
  };
  virtual ~NamedRecipes() = default;
  // Validated against the recipe schema; a version is immutable once written (conflict when
  // the same version is put with other content). `latest` then names it.
  virtual Result<Stored> put(const std::string& name, const std::string& version, const nlohmann::json& recipe) = 0;
  // `ref`: a version, "latest", or "sha256:<hex>" (a manifest digest).
  virtual Result<Stored> get(const std::string& name, const std::string& ref) const = 0;
  virtual Result<std::vector<std::string>> versions(const std::string& name) const = 0;
  virtual Status remove(const std::string& name, const std::string& version) = 0;
};

}  // namespace provisioner
