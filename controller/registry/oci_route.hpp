#pragma once
// Socket-free parsing of OCI distribution-spec v1.1 request targets under /v2/: which
// endpoint, repository name, reference, digest or upload id. Unit-tested and fuzzed.
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace provisioner::registry {

struct Route {
  enum class Kind {
    base,          // /v2/
    token,         // /v2/token (the token endpoint of the auth flow)
    catalog,       // /v2/_catalog
    blob,          // /v2/<name>/blobs/<digest>
    upload_start,  // /v2/<name>/blobs/uploads/
    upload,        // /v2/<name>/blobs/uploads/<id>
    manifest,      // /v2/<name>/manifests/<reference>
    tags,          // /v2/<name>/tags/list
    referrers,     // /v2/<name>/referrers/<digest>
    gc,            // /v2/_gc (admin: collect unreferenced blobs)
    not_found,     // under /v2/ but no such endpoint
    bad_name,      // an endpoint whose repository name is invalid (NAME_INVALID)
  };
  Kind kind = Kind::not_found;
  std::string name;       // repository
  std::string reference;  // tag or digest (manifest), digest (blob, referrers), id (upload)
};

// `path` is the target's path without the query, e.g. "/v2/library/debian/manifests/12".
Route parse_route(std::string_view path);

// [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*, at most 255 chars.
bool valid_repository_name(std::string_view name);
// [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}
bool valid_tag(std::string_view tag);

// Query parameters in order, percent-decoded ('+' as space); repeated names kept.
std::vector<std::pair<std::string, std::string>> parse_query(std::string_view query);
std::optional<std::string> query_value(const std::vector<std::pair<std::string, std::string>>& q,
                                       std::string_view name);

}  // namespace provisioner::registry
