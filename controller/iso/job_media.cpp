#include "controller/iso/job_media.hpp"

#include "controller/artifacts/artifact_server.hpp"
#include "controller/artifacts/artifact_store.hpp"
#include "controller/iso/maintenance_iso.hpp"

namespace provisioner {

namespace {
nlohmann::json ref_json(const std::optional<MediaRef>& r) {
  return r ? nlohmann::json{{"sha256", r->sha256}, {"url", r->url}} : nlohmann::json();
}
std::optional<MediaRef> ref_from(const nlohmann::json& j, const char* key) {
  if (!j.contains(key) || !j[key].is_object()) return std::nullopt;
  return MediaRef{j[key].value("sha256", ""), j[key].value("url", "")};
}
}  // namespace

nlohmann::json JobMedia::to_json() const {
  return {{"mode", mode}, {"boot_iso", ref_json(boot_iso)}, {"task_iso", ref_json(task_iso)}};
}

JobMedia JobMedia::from_json(const nlohmann::json& j) {
  JobMedia m;
  m.mode = j.value("mode", "");
  m.boot_iso = ref_from(j, "boot_iso");
  m.task_iso = ref_from(j, "task_iso");
  return m;
}

std::string media_mode_for(const nlohmann::json& recipe, const nlohmann::json& server) {
  // A node without a BMC boots from the network, whatever the recipe prefers.
  if (server.contains("node_id") && !server.contains("bmc")) return "pxe";
  if (recipe.contains("media_mode")) return recipe["media_mode"].get<std::string>();
  if (server.contains("media_mode")) return server["media_mode"].get<std::string>();
  return "dual-cd";
}

JobMediaBuilder::JobMediaBuilder(artifacts::ArtifactStore& store, const MaintenanceIso& maintenance,
                                 JobMediaOptions options)
    : store_(store), maintenance_(maintenance), options_(std::move(options)) {
  while (!options_.artifact_base_url.empty() && options_.artifact_base_url.back() == '/')
    options_.artifact_base_url.pop_back();
}

std::string JobMediaBuilder::url_of(const std::string& sha256, const std::string& name) const {
  return options_.artifact_base_url + artifacts::ArtifactServer::url_path(sha256, name);
}

Result<JobMedia> JobMediaBuilder::build(const iso::TaskIsoInputs& inputs, const std::string& mode) const {
  JobMedia media;
  media.mode = mode;
  std::optional<std::string> base_path;
  auto maintenance_sha = maintenance_.current();
  if (maintenance_sha) {
    auto p = store_.path_of(*maintenance_sha);
    if (!p) return make_error(ErrorKind::unavailable, "the maintenance ISO artifact is missing from the store");
    base_path = p->string();
  }

  if (mode == "single-iso") {
    // One medium: the maintenance ISO plus the task as an appended session, stored as a
    // composite of the shared base file and the small per-job parts.
    if (!base_path)
      return make_error(ErrorKind::unavailable,
                        "single-iso mode needs a maintenance ISO ([artifacts] maintenance_iso, or an upload)");
    auto overlay = iso::build_single_iso_overlay(*base_path, inputs);
    if (!overlay) return overlay.error();
    std::vector<artifacts::CompositePart> parts;
    for (auto& seg : overlay->segments) {
      if (seg.kind == iso::IsoSegment::Kind::base_file)
        parts.push_back(artifacts::CompositePart::region(*maintenance_sha, seg.offset, seg.length));
      else
        parts.push_back(artifacts::CompositePart::bytes(std::move(seg.data)));
    }
    auto stored = store_.put_composite(parts);
    if (!stored) return stored.error();
    media.boot_iso = MediaRef{stored->sha256, url_of(stored->sha256, "boot.iso")};
    return media;
  }

  auto image = iso::build_task_iso(inputs);
  if (!image) return image.error();
  auto stored = store_.put(*image);
  if (!stored) return stored.error();
  media.task_iso = MediaRef{stored->sha256, url_of(stored->sha256, "task.iso")};
  if (maintenance_sha) media.boot_iso = MediaRef{*maintenance_sha, url_of(*maintenance_sha, "maintenance.iso")};
  return media;
}

}  // namespace provisioner
