#pragma once
// The server registry: machines the controller provisions, with their BMC credentials
// sealed at rest. Jobs reference a server by id or carry one inline (resolve_for_job).
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "common/clock.hpp"
#include "common/json_schema.hpp"
#include "common/result.hpp"
#include "controller/store/store.hpp"

namespace provisioner {

class Logger;

class ServerService {
 public:
  ServerService(Store& store, const Clock& clock, const Logger& log, std::string secret_key);

  Result<nlohmann::json> create(std::string_view body);
  Result<nlohmann::json> get(const std::string& id);
  Result<nlohmann::json> list(const std::optional<std::string>& cursor, const std::optional<std::string>& limit);
  // JSON merge patch (RFC 7396) on the record; `null` removes a field.
  Result<nlohmann::json> patch(const std::string& id, std::string_view body);
  // Refused (409) while the server has unfinished jobs.
  Status remove(const std::string& id);

  // The job's `server` member → the snapshot a job stores: a referenced record, or an inline
  // one validated like a record (serial required). Passwords come back sealed. Errors carry
  // paths under `path_prefix`.
  Result<nlohmann::json> resolve_for_job(const nlohmann::json& server, const std::string& path_prefix);

  // The BMC password of a stored snapshot, unsealed (for the Redfish client only).
  std::optional<std::string> bmc_password(const nlohmann::json& snapshot) const;

  // Redacted view of a stored record or snapshot, fit for an API answer.
  static nlohmann::json view(const nlohmann::json& record);

 private:
  // Validates a record and seals its password; errors are prefixed.
  Result<nlohmann::json> check_and_seal(nlohmann::json record, const std::string& path_prefix) const;

  Store& store_;
  const Clock& clock_;
  const Logger& log_;
  std::string secret_key_;
  JsonSchema schema_;
};

}  // namespace provisioner
