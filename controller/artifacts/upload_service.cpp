#include "controller/artifacts/upload_service.hpp"

#include "controller/artifacts/artifact_server.hpp"

namespace provisioner::artifacts {

UploadService::UploadService(ArtifactStore& store, std::string public_base_url, std::uint64_t max_bytes,
                             std::function<Status(const std::string&)> make_maintenance)
    : store_(store),
      base_url_(std::move(public_base_url)),
      max_bytes_(max_bytes),
      make_maintenance_(std::move(make_maintenance)) {}

Result<nlohmann::json> UploadService::upload(const UploadRequest& req) {
  std::vector<FieldError> errors;
  std::optional<std::string> digest;
  if (!req.digest) errors.push_back({"digest", "required: sha256:<64 hex digits> of the body"});
  else if (!(digest = normalize_sha256(*req.digest))) errors.push_back({"digest", "not a sha256 digest"});
  std::string name = req.name.value_or("artifact.iso");
  if (name.empty() || name.size() > 64 || name.find_first_not_of("abcdefghijklmnopqrstuvwxyz"
                                                                 "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") !=
                                              std::string::npos ||
      name.front() == '.')
    errors.push_back({"name", "letters, digits, '.', '_' and '-' only, at most 64"});
  if (req.purpose && *req.purpose != "maintenance-iso")
    errors.push_back({"purpose", "the only purpose is maintenance-iso"});
  if (!errors.empty()) return make_error(ErrorKind::invalid_input, "bad upload", std::move(errors));

  auto stored = store_.put_stream(req.read, digest, max_bytes_);
  if (!stored) return stored.error();
  if (req.purpose)
    if (auto s = make_maintenance_(stored->sha256); !s) return s.error();
  return nlohmann::json{{"sha256", stored->sha256},
                        {"size", stored->size},
                        {"reused", stored->reused},
                        {"url", base_url_ + ArtifactServer::url_path(stored->sha256, name)}};
}

}  // namespace provisioner::artifacts
