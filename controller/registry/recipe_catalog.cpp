#include "controller/registry/recipe_catalog.hpp"

#include "common/atomic_file.hpp"
#include "controller/registry/oci_route.hpp"

namespace provisioner::registry {

using nlohmann::json;

namespace {

constexpr std::string_view kEmptyConfig = "{}";
constexpr std::uint64_t kMaxRecipeBytes = 4 << 20;

std::string repo_of(const std::string& name) { return std::string(kRecipeRepoPrefix) + name; }

Error to_error(const RegistryError& e, const std::string& what) {
  switch (e.code) {
    case RegistryErrorCode::tag_exists: return make_error(ErrorKind::conflict, what + ": " + e.message);
    case RegistryErrorCode::manifest_unknown:
    case RegistryErrorCode::name_unknown:
    case RegistryErrorCode::blob_unknown: return make_error(ErrorKind::not_found, "no such recipe: " + what);
    case RegistryErrorCode::manifest_invalid:
    case RegistryErrorCode::manifest_blob_unknown: return make_error(ErrorKind::invalid_input, what + ": " + e.message);
    default: return make_error(ErrorKind::internal, what + ": " + e.message);
  }
}

std::string manifest_for(const Digest& layer, std::uint64_t layer_size, const std::string& name,
                         const std::string& version) {
  json m = {{"schemaVersion", 2},
            {"mediaType", kOciManifest},
            {"artifactType", kRecipeMediaType},
            {"config", {{"mediaType", kOciEmptyJson}, {"digest", digest_of(kEmptyConfig).str()}, {"size", 2}}},
            {"layers", json::array({{{"mediaType", kRecipeMediaType}, {"digest", layer.str()}, {"size", layer_size}}})},
            {"annotations", {{"org.opencontainers.image.title", name}, {"org.opencontainers.image.version", version}}}};
  return m.dump();
}

artifacts::ReadFn reader(const std::string& bytes) {
  auto pos = std::make_shared<std::size_t>(0);
  return [&bytes, pos](char* buf, std::size_t cap) -> Result<std::size_t> {
    auto n = std::min(cap, bytes.size() - *pos);
    std::memcpy(buf, bytes.data() + *pos, n);
    *pos += n;
    return n;
  };
}

}  // namespace

RecipeCatalog::RecipeCatalog(RegistryStore& store, std::string secret_key)
    : store_(store), key_(std::move(secret_key)) {}

bool RecipeCatalog::valid_name(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-')) return false;
  return valid_repository_name(std::string(kRecipeRepoPrefix) + std::string(name));
}

bool RecipeCatalog::valid_version(std::string_view v) { return valid_tag(v) && v != "latest"; }

RResult<json> RecipeCatalog::layer_recipe(const std::string& repo, const std::string& manifest_bytes) const {
  auto m = parse_manifest(manifest_bytes, std::nullopt);
  if (!m) return RegistryError{RegistryErrorCode::manifest_invalid, m.error().message};
  if (m->artifact_type != kRecipeMediaType)
    return RegistryError{RegistryErrorCode::manifest_invalid,
                         "artifactType: a recipe is an artifact of type " + std::string(kRecipeMediaType)};
  if (m->blobs.size() != 2 || m->blobs[1].media_type != kRecipeMediaType)
    return RegistryError{RegistryErrorCode::manifest_invalid,
                         "layers: a recipe artifact has exactly one layer of type " + std::string(kRecipeMediaType)};
  const auto& layer = m->blobs[1];
  if (layer.size > kMaxRecipeBytes)
    return RegistryError{RegistryErrorCode::manifest_invalid, "layers[0].size: a recipe is at most 4 MiB"};
  auto blob = store_.blob(repo, layer.digest);
  if (!blob) return RegistryError{RegistryErrorCode::manifest_blob_unknown, "layers[0]: blob unknown to the repository"};
  // What is stored, not what the manifest says, bounds the read (a sparse blob is cheap to push).
  if (blob->size != layer.size || blob->size > kMaxRecipeBytes)
    return RegistryError{RegistryErrorCode::manifest_invalid, "layers[0].size: does not match the blob, or over 4 MiB"};
  auto text = read_file(blob->path);
  if (!text) return RegistryError{RegistryErrorCode::internal, text.error().message};
  json doc = json::parse(*text, nullptr, false);
  if (doc.is_discarded() || !doc.is_object())
    return RegistryError{RegistryErrorCode::manifest_invalid, "layers[0]: the recipe is not a JSON object"};
  return doc;
}

Result<NamedRecipes::Stored> RecipeCatalog::get(const std::string& name, const std::string& ref) const {
  auto what = name + "@" + ref;
  if (!valid_name(name)) return make_error(ErrorKind::invalid_input, "bad recipe name", {{"/name", "not a recipe name"}});
  if (ref.find(':') != std::string::npos ? !parse_digest(ref) : !valid_tag(ref))
    return make_error(ErrorKind::invalid_input, "bad recipe reference", {{"/version", "not a version or a sha256 digest"}});
  auto repo = repo_of(name);
  auto got = store_.get_manifest(repo, ref);
  if (auto* e = std::get_if<RegistryError>(&got)) return to_error(*e, what);
  const auto& manifest = std::get<StoredManifest>(got);
  auto stored = layer_recipe(repo, manifest.bytes);
  if (auto* e = std::get_if<RegistryError>(&stored)) return to_error(*e, what);
  auto recipe = open_recipe_secrets(std::get<json>(stored), key_);
  if (!recipe) return recipe.error();
  Stored out{name, ref, manifest.digest.str(), std::move(*recipe), false};
  auto doc = json::parse(manifest.bytes, nullptr, false);
  if (doc.is_object() && doc.contains("annotations") && doc["annotations"].is_object())
    out.version = doc["annotations"].value("org.opencontainers.image.version", ref);
  return out;
}

Result<NamedRecipes::Stored> RecipeCatalog::put(const std::string& name, const std::string& version,
                                                const json& recipe) {
  if (!valid_name(name)) return make_error(ErrorKind::invalid_input, "bad recipe name", {{"/name", "not a recipe name"}});
  if (!valid_version(version))
    return make_error(ErrorKind::invalid_input, "bad recipe version",
                      {{"/version", "a version is [A-Za-z0-9_][A-Za-z0-9._-]{0,127}, and not 'latest'"}});
  if (auto errors = validator_.validate(recipe); !errors.empty())
    return make_error(ErrorKind::invalid_input, "recipe is not valid", std::move(errors));
  auto same_or_conflict = [&]() -> Result<Stored> {
    auto existing = get(name, version);
    if (!existing) return existing.error();
    if (existing->recipe != recipe)
      return make_error(ErrorKind::conflict, "recipe " + name + "@" + version +
                                                 " already exists with other content: versions are immutable");
    return existing;
  };
  if (auto existing = get(name, version); existing || existing.error().kind != ErrorKind::not_found)
    return same_or_conflict();

  auto repo = repo_of(name);
  auto bytes = seal_recipe_secrets(recipe, key_).dump();  // never in clear at rest
  std::string config(kEmptyConfig);
  for (const auto* blob : {&config, &bytes}) {
    auto put = store_.put_blob(repo, digest_of(*blob), reader(*blob), kMaxRecipeBytes);
    if (auto* e = std::get_if<RegistryError>(&put)) return to_error(*e, name + "@" + version);
  }
  auto manifest = manifest_for(digest_of(bytes), bytes.size(), name, version);
  auto put = store_.put_manifest(repo, version, manifest, kOciManifest, /*immutable_tag=*/true);
  if (auto* e = std::get_if<RegistryError>(&put)) {
    if (e->code == RegistryErrorCode::tag_exists) return same_or_conflict();  // another writer won the race
    return to_error(*e, name + "@" + version);
  }
  (void)store_.put_manifest(repo, "latest", manifest, kOciManifest);  // best effort: the version stands
  return Stored{name, version, std::get<ManifestPut>(put).digest.str(), recipe, true};
}

Result<std::vector<std::string>> RecipeCatalog::versions(const std::string& name) const {
  if (!valid_name(name)) return make_error(ErrorKind::invalid_input, "bad recipe name", {{"/name", "not a recipe name"}});
  auto tags = store_.tags(repo_of(name));
  if (!tags) return make_error(ErrorKind::not_found, "no such recipe: " + name);
  std::erase(*tags, std::string("latest"));
  return std::move(*tags);
}

Status RecipeCatalog::remove(const std::string& name, const std::string& version) {
  if (!valid_name(name) || !valid_version(version))
    return make_error(ErrorKind::invalid_input, "bad recipe reference", {{"/version", "not a recipe version"}});
  auto repo = repo_of(name);
  auto target = store_.get_manifest(repo, version);
  if (auto* e = std::get_if<RegistryError>(&target)) return to_error(*e, name + "@" + version);
  auto latest = store_.get_manifest(repo, "latest");
  auto removed = store_.delete_manifest(repo, version);
  if (auto* e = std::get_if<RegistryError>(&removed)) return to_error(*e, name + "@" + version);
  const auto& digest = std::get<StoredManifest>(target).digest;
  // `latest` no longer names a removed version; and the version's digest no longer resolves
  // unless another version is the very same artifact.
  if (auto* l = std::get_if<StoredManifest>(&latest); l && l->digest == digest)
    (void)store_.delete_manifest(repo, "latest");
  bool still_named = false;
  if (auto tags = store_.tags(repo))
    for (const auto& t : *tags)
      if (auto m = store_.get_manifest(repo, t); std::holds_alternative<StoredManifest>(m) &&
                                                 std::get<StoredManifest>(m).digest == digest)
        still_named = true;
  if (!still_named) (void)store_.delete_manifest(repo, digest.str());
  return Ok{};
}

std::optional<RegistryError> RecipeCatalog::check_push(const std::string& repo, const std::string& reference,
                                                       const std::string& manifest_bytes) const {
  auto name = repo.substr(kRecipeRepoPrefix.size());
  if (!valid_name(name)) return RegistryError{RegistryErrorCode::manifest_invalid, "not a recipe name: " + name};
  if (reference.find(':') == std::string::npos && !valid_version(reference))
    return RegistryError{RegistryErrorCode::manifest_invalid, "tag: 'latest' is set by the controller, push a version"};
  auto stored = layer_recipe(repo, manifest_bytes);
  if (auto* e = std::get_if<RegistryError>(&stored)) return *e;
  const auto& recipe = std::get<json>(stored);
  if (auto errors = validator_.validate(recipe); !errors.empty())
    return RegistryError{RegistryErrorCode::manifest_invalid,
                         "recipe " + errors.front().path + ": " + errors.front().message};
  if (seal_recipe_secrets(recipe, key_) != recipe) {
    // Its layer is already stored (blobs come before manifests): it must not stay readable.
    if (auto m = parse_manifest(manifest_bytes, std::nullopt); m && m->blobs.size() == 2)
      (void)store_.discard_blob(repo, m->blobs[1].digest);
    return RegistryError{RegistryErrorCode::manifest_invalid,
                         "the recipe carries secrets in clear (its layer was deleted): store it with PUT "
                         "/api/v1/recipes/" + name + "/<version>, which seals them at rest"};
  }
  return std::nullopt;
}

void RecipeCatalog::pushed(const std::string& repo, const std::string& reference, const std::string& manifest_bytes) {
  if (reference.find(':') != std::string::npos) return;  // pushed by digest: no version to name
  (void)store_.put_manifest(repo, "latest", manifest_bytes, kOciManifest);
}

}  // namespace provisioner::registry
