#pragma once
// The request side of the artifact server without sockets, so it can be unit-tested and
// fuzzed: the request head (request line and the headers the server acts on) and the route
// from a request target to an artifact.
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace provisioner::artifacts {

// A parsed request head. The views point into the text given to parse_request_head.
struct RequestHead {
  std::string_view method;
  std::string_view target;
  int minor = 1;                     // HTTP/1.<minor>: 0 or 1
  std::optional<std::string> range;  // repeated Range headers, joined by commas
  std::optional<std::string_view> if_range, if_none_match, if_modified_since;
  bool close = false;       // Connection: close
  bool keep_alive = false;  // Connection: keep-alive
  bool has_body = false;    // a Content-Length other than 0, or a Transfer-Encoding
};

// `head` is everything before the blank line that ends the head. nullopt: answer 400
// (no request line, an unknown HTTP version, obsolete line folding, a malformed header).
std::optional<RequestHead> parse_request_head(std::string_view head);

// Where a request target points: /artifacts/<sha256>/<name>.
struct ArtifactRoute {
  int status = 0;  // 0 when found; else 400 (malformed, traversal) or 404 (no such URL)
  std::string sha256;
  std::string name;  // percent-decoded
};

// Takes origin-form and absolute-form targets (http://host/...); query and fragment are
// ignored. Any "." / ".." segment or encoded slash is a 400 before anything else. `name` must
// end in one of `name_suffixes` (case-insensitive): some BMCs insist on ".iso".
ArtifactRoute route_artifact_target(std::string_view target, const std::vector<std::string>& name_suffixes);

// ASCII helpers the HTTP pieces share.
bool iequals(std::string_view a, std::string_view b);
bool iends_with(std::string_view s, std::string_view suffix);
std::string_view trim_ows(std::string_view s);  // optional whitespace: spaces and tabs

}  // namespace provisioner::artifacts
