#include "controller/artifacts/http_request.hpp"

#include <algorithm>
#include <cctype>

#include "common/crypto.hpp"

namespace provisioner::artifacts {
namespace {

bool has_token(std::string_view list, std::string_view token) {
  while (!list.empty()) {
    auto comma = list.find(',');
    if (iequals(trim_ows(list.substr(0, comma)), token)) return true;
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  return false;
}

std::optional<std::string> percent_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out.push_back(s[i]);
      continue;
    }
    if (i + 2 >= s.size()) return std::nullopt;
    auto byte = crypto::from_hex(s.substr(i + 1, 2));
    if (!byte) return std::nullopt;
    out += *byte;
    i += 2;
  }
  return out;
}

ArtifactRoute refused(int status) {
  ArtifactRoute r;
  r.status = status;
  return r;
}

}  // namespace

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

bool iends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && iequals(s.substr(s.size() - suffix.size()), suffix);
}

std::string_view trim_ows(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

std::optional<RequestHead> parse_request_head(std::string_view head) {
  RequestHead req;
  auto eol = head.find("\r\n");
  auto line = head.substr(0, eol);
  auto sp1 = line.find(' ');
  if (sp1 == std::string_view::npos) return std::nullopt;
  auto sp2 = line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos) return std::nullopt;
  req.method = line.substr(0, sp1);
  req.target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  auto version = line.substr(sp2 + 1);
  if (version == "HTTP/1.1") {
    req.minor = 1;
  } else if (version == "HTTP/1.0") {
    req.minor = 0;
  } else {
    return std::nullopt;
  }
  if (req.method.empty() || req.target.empty()) return std::nullopt;
  std::string_view rest = eol == std::string_view::npos ? std::string_view{} : head.substr(eol + 2);
  while (!rest.empty()) {
    auto e = rest.find("\r\n");
    auto h = rest.substr(0, e);
    rest = e == std::string_view::npos ? std::string_view{} : rest.substr(e + 2);
    if (h.empty()) continue;
    if (h.front() == ' ' || h.front() == '\t') return std::nullopt;  // obsolete line folding
    auto colon = h.find(':');
    if (colon == std::string_view::npos || colon == 0) return std::nullopt;
    auto name = h.substr(0, colon);
    if (name.find_first_of(" \t") != std::string_view::npos) return std::nullopt;
    auto value = trim_ows(h.substr(colon + 1));
    if (iequals(name, "range")) {
      // Repeated list headers combine with commas.
      req.range = req.range ? *req.range + "," + std::string(value) : std::string(value);
    } else if (iequals(name, "if-range")) {
      req.if_range = value;
    } else if (iequals(name, "if-none-match")) {
      req.if_none_match = value;
    } else if (iequals(name, "if-modified-since")) {
      req.if_modified_since = value;
    } else if (iequals(name, "connection")) {
      if (has_token(value, "close")) req.close = true;
      if (has_token(value, "keep-alive")) req.keep_alive = true;
    } else if (iequals(name, "content-length")) {
      if (value != "0") req.has_body = true;
    } else if (iequals(name, "transfer-encoding")) {
      req.has_body = true;
    }
  }
  return req;
}

ArtifactRoute route_artifact_target(std::string_view target, const std::vector<std::string>& name_suffixes) {
  if (target.starts_with("http://") || target.starts_with("https://")) {
    auto scheme_end = target.find("//") + 2;
    auto slash = target.find('/', scheme_end);
    if (slash == std::string_view::npos) return refused(404);
    target.remove_prefix(slash);
  }
  if (target.empty() || target.front() != '/') return refused(400);
  target = target.substr(0, target.find_first_of("?#"));
  // Traversal attempts are answered 400 before anything else, decoded or not.
  std::vector<std::string> parts;
  std::string_view rest = target.substr(1);
  while (true) {
    auto slash = rest.find('/');
    auto decoded = percent_decode(rest.substr(0, slash));
    if (!decoded) return refused(400);
    if (*decoded == ".." || *decoded == "." ||
        decoded->find_first_of(std::string_view("/\\\0", 3)) != std::string::npos ||
        decoded->find("..") != std::string::npos)
      return refused(400);
    parts.push_back(std::move(*decoded));
    if (slash == std::string_view::npos) break;
    rest.remove_prefix(slash + 1);
  }
  if (parts.size() != 3 || parts[0] != "artifacts") return refused(404);
  if (!crypto::is_sha256_hex(parts[1])) return refused(404);
  const auto& n = parts[2];
  if (n.empty() || n.size() > 255) return refused(404);
  if (std::any_of(n.begin(), n.end(), [](char ch) { return static_cast<unsigned char>(ch) < 0x20 || ch == 0x7f; }))
    return refused(400);
  bool suffix_ok = std::any_of(name_suffixes.begin(), name_suffixes.end(),
                               [&](const std::string& s) { return n.size() > s.size() && iends_with(n, s); });
  if (!suffix_ok) return refused(404);
  ArtifactRoute found;
  found.sha256 = std::move(parts[1]);
  found.name = std::move(parts[2]);
  return found;
}

}  // namespace provisioner::artifacts
