#pragma once
// The embedded OCI registry: the distribution-spec v1.1 HTTP API at /v2/, served by the API
// edge itself (native_route.hpp) so blobs stream both ways (sendfile out, straight to disk
// in) whatever their size.
//
// Auth is the flow registry clients expect (skopeo, podman, buildah, oras, docker): a request
// without credentials gets `401` and `WWW-Authenticate: Bearer realm=".../v2/token",
// service=...,scope=...`; the client asks the token endpoint with HTTP Basic (the password is
// an API token; the user name is not checked) and gets a short-lived registry token, HMAC
// signed, granting what it asked for as far as the API token's role allows. An API token also
// works directly (`Authorization: Bearer <api token>`, or Basic). Roles: `ci` pushes and
// pulls, `operator` pulls, `auditor` lists, `admin` does all and deletes.
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.hpp"
#include "controller/api/auth.hpp"
#include "controller/api/native_route.hpp"
#include "controller/artifacts/artifact_store.hpp"

namespace provisioner {

class Logger;
class Metrics;

namespace registry {

class RegistryStore;
class RecipeCatalog;

struct RegistryOptions {
  // The token endpoint as clients reach it, e.g. "http://127.0.0.1:8080/v2/token".
  // Empty: built from the request's Host header and scheme.
  std::string realm;
  std::string service = "provisioner";
  bool anonymous_pull = false;
  std::chrono::seconds token_ttl{900};
  std::uint64_t max_blob_bytes = 1ull << 40;
};

// What a request may do, from its credentials.
enum class Action { pull, push, del, list };

class RegistryService final : public NativeRoutes {
 public:
  // `token_key` signs registry tokens (derived from the controller's secret key); `run_gc`
  // runs a garbage collection (POST /v2/_gc, admin).
  RegistryService(RegistryStore& store, const TokenAuthenticator& auth, const Logger& log, std::string token_key,
                  RegistryOptions options, std::function<Result<artifacts::GcReport>()> run_gc = {});

  // Pushes into recipes/<name> are checked as named recipes (recipe_catalog.hpp).
  void set_recipes(RecipeCatalog* recipes) { recipes_ = recipes; }
  // Requests counted in GET /metrics by route template ("/v2/{name}/blobs/{digest}").
  void set_metrics(Metrics* metrics);

  bool handles(std::string_view path) const override;
  bool serve(const NativeRequest& request, NativeExchange& exchange) override;

  struct Grant {
    std::string type;  // "repository" | "registry"
    std::string name;
    std::vector<Action> actions;
  };
  struct Identity {
    std::string name;
    Role role = Role::auditor;
    bool scoped = false;        // a registry token: only `grants` apply
    bool anonymous = false;     // issued without credentials (anonymous pull)
    std::int64_t expires_s = 0; // a registry token's expiry: one issued from it never outlives it
    std::vector<Grant> grants;  // registry tokens
  };

  // Registry tokens: issued at `now_s` for the configured TTL, or until `expires_s`. Same
  // inputs, same token (the task ISO that carries a job's pull token is deterministic).
  std::string issue_token(const Identity& who, const std::vector<Grant>& grants, std::int64_t now_s) const;
  std::string issue_token_until(const Identity& who, const std::vector<Grant>& grants, std::int64_t expires_s) const;
  // A job's pull token for one repository (JobServiceOptions::registry_pull_token).
  std::string job_pull_token(const std::string& job_id, const std::string& repository, std::int64_t expires_s) const;
  std::optional<Identity> verify_token(std::string_view token, std::int64_t now_s) const;

 private:
  struct Call;
  bool dispatch(Call& call);
  RegistryStore& store_;
  const TokenAuthenticator& auth_;
  const Logger& log_;
  std::string token_key_;
  RegistryOptions options_;
  std::function<Result<artifacts::GcReport>()> run_gc_;
  RecipeCatalog* recipes_ = nullptr;
  Metrics* metrics_ = nullptr;
};

bool role_may(Role role, Action action);

}  // namespace registry
}  // namespace provisioner
