#include "controller/registry/oci_manifest.hpp"

namespace provisioner::registry {
namespace {

using nlohmann::json;

Error invalid(std::string why) { return make_error(ErrorKind::invalid_input, std::move(why)); }

bool nondistributable(std::string_view media_type) {
  return media_type.starts_with("application/vnd.oci.image.layer.nondistributable.") ||
         media_type.starts_with("application/vnd.docker.image.rootfs.foreign.");
}

// RFC 6838 type/subtype, loosely: the spec says registries must not reject unknown ones.
bool plausible_media_type(std::string_view t) {
  auto slash = t.find('/');
  if (slash == std::string_view::npos || slash == 0 || slash + 1 == t.size() || t.size() > 255) return false;
  for (char c : t)
    if (static_cast<unsigned char>(c) <= 0x20 || static_cast<unsigned char>(c) >= 0x7f) return false;
  return true;
}

// `annotations` (when present) must map strings to strings; `prefix` is "" or "<path>.".
Result<json> annotations_at(const json& j, const std::string& prefix) {
  auto an = j.find("annotations");
  if (an == j.end()) return json();
  if (!an->is_object()) return invalid(prefix + "annotations: must be an object");
  for (const auto& [k, v] : an->items())
    if (!v.is_string()) return invalid(prefix + "annotations." + k + ": must be a string");
  return *an;
}

Result<Descriptor> descriptor(const json& j, const std::string& path) {
  if (!j.is_object()) return invalid(path + ": must be an object");
  Descriptor d;
  auto mt = j.find("mediaType");
  if (mt == j.end() || !mt->is_string() || !plausible_media_type(mt->get_ref<const std::string&>()))
    return invalid(path + ".mediaType: must be a media type");
  d.media_type = *mt;
  auto dg = j.find("digest");
  if (dg == j.end() || !dg->is_string()) return invalid(path + ".digest: required");
  auto parsed = parse_digest(dg->get_ref<const std::string&>());
  if (!parsed) return invalid(path + ".digest: not a sha256 or sha512 digest");
  d.digest = *parsed;
  auto sz = j.find("size");
  // The parser stores every non-negative integer as unsigned.
  if (sz == j.end() || !sz->is_number_unsigned()) return invalid(path + ".size: must be a non-negative integer");
  d.size = sz->get<std::uint64_t>();
  if (auto at = j.find("artifactType"); at != j.end()) {
    if (!at->is_string()) return invalid(path + ".artifactType: must be a string");
    d.artifact_type = at->get<std::string>();
  }
  auto annotations = annotations_at(j, path + ".");
  if (!annotations) return annotations.error();
  d.annotations = std::move(*annotations);
  if (auto urls = j.find("urls"); urls != j.end()) {
    if (!urls->is_array()) return invalid(path + ".urls: must be an array");
    d.foreign = nondistributable(d.media_type) && !urls->empty();
  }
  return d;
}

}  // namespace

json Descriptor::to_json() const {
  json j = {{"mediaType", media_type}, {"digest", digest.str()}, {"size", size}};
  if (artifact_type) j["artifactType"] = *artifact_type;
  if (annotations.is_object() && !annotations.empty()) j["annotations"] = annotations;
  return j;
}

bool is_manifest_media_type(std::string_view t) {
  return t == kOciManifest || t == kOciIndex || t == kDockerManifest || t == kDockerList;
}

Result<ParsedManifest> parse_manifest(std::string_view bytes, std::optional<std::string_view> content_type) {
  json doc = json::parse(bytes, nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) return invalid("manifest: not a JSON object");
  ParsedManifest m;
  std::optional<std::string> field;
  if (auto mt = doc.find("mediaType"); mt != doc.end()) {
    if (!mt->is_string()) return invalid("mediaType: must be a string");
    field = mt->get<std::string>();
  }
  if (content_type && !content_type->empty()) {
    m.media_type = std::string(*content_type);
    // The spec: a mediaType field, when present, must match the Content-Type.
    if (field && *field != m.media_type) return invalid("mediaType: does not match the Content-Type " + m.media_type);
  } else if (field) {
    m.media_type = *field;
  } else {
    // OCI 1.0 manifests may omit mediaType: tell image from index by their fields.
    m.media_type = std::string(doc.contains("manifests") ? kOciIndex : kOciManifest);
  }
  if (!is_manifest_media_type(m.media_type)) return invalid("unsupported manifest media type " + m.media_type);
  auto sv = doc.find("schemaVersion");
  if (sv == doc.end() || !sv->is_number_integer() || sv->get<std::int64_t>() != 2)
    return invalid("schemaVersion: must be 2");
  m.kind = (m.media_type == kOciIndex || m.media_type == kDockerList) ? ParsedManifest::Kind::index
                                                                       : ParsedManifest::Kind::image;
  if (m.kind == ParsedManifest::Kind::image) {
    auto cfg = doc.find("config");
    if (cfg == doc.end()) return invalid("config: required");
    auto c = descriptor(*cfg, "config");
    if (!c) return c.error();
    m.blobs.push_back(std::move(*c));
    auto layers = doc.find("layers");
    if (layers == doc.end() || !layers->is_array()) return invalid("layers: must be an array");
    for (std::size_t i = 0; i < layers->size(); ++i) {
      auto l = descriptor((*layers)[i], "layers[" + std::to_string(i) + "]");
      if (!l) return l.error();
      m.blobs.push_back(std::move(*l));
    }
    if (m.media_type == kDockerManifest && m.blobs.size() < 2) return invalid("layers: a Docker image needs one");
  } else {
    auto list = doc.find("manifests");
    if (list == doc.end() || !list->is_array()) return invalid("manifests: must be an array");
    for (std::size_t i = 0; i < list->size(); ++i) {
      auto d = descriptor((*list)[i], "manifests[" + std::to_string(i) + "]");
      if (!d) return d.error();
      m.manifests.push_back(std::move(*d));
    }
  }
  if (auto at = doc.find("artifactType"); at != doc.end()) {
    if (!at->is_string() || !plausible_media_type(at->get_ref<const std::string&>()))
      return invalid("artifactType: must be a media type");
    m.artifact_type = at->get<std::string>();
  } else if (m.kind == ParsedManifest::Kind::image && m.media_type == kOciManifest) {
    m.artifact_type = m.blobs.front().media_type;  // the referrers API's fallback
  }
  if (auto sub = doc.find("subject"); sub != doc.end()) {
    auto s = descriptor(*sub, "subject");
    if (!s) return s.error();
    m.subject = std::move(*s);
  }
  auto annotations = annotations_at(doc, "");
  if (!annotations) return annotations.error();
  m.annotations = std::move(*annotations);
  return m;
}

}  // namespace provisioner::registry
