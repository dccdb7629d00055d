#include "controller/registry/oci_route.hpp"

namespace provisioner::registry {
namespace {

bool alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }

// One path component: [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*
bool valid_component(std::string_view c) {
  std::size_t i = 0, n = c.size();
  if (n == 0 || !alnum(c[0])) return false;
  while (i < n) {
    while (i < n && alnum(c[i])) ++i;
    if (i == n) return true;
    // a separator, then at least one alphanumeric
    if (c[i] == '.') {
      ++i;
    } else if (c[i] == '_') {
      ++i;
      if (i < n && c[i] == '_') ++i;
    } else if (c[i] == '-') {
      while (i < n && c[i] == '-') ++i;
    } else {
      return false;
    }
    if (i == n || !alnum(c[i])) return false;
  }
  return true;
}

int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '+') {
      out += ' ';
    } else if (s[i] == '%' && i + 2 < s.size() && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
      out += static_cast<char>(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

}  // namespace

bool valid_repository_name(std::string_view name) {
  if (name.empty() || name.size() > 255) return false;
  std::size_t start = 0;
  for (;;) {
    auto slash = name.find('/', start);
    auto comp = name.substr(start, slash == std::string_view::npos ? std::string_view::npos : slash - start);
    if (!valid_component(comp)) return false;
    if (slash == std::string_view::npos) return true;
    start = slash + 1;
  }
}

bool valid_tag(std::string_view tag) {
  if (tag.empty() || tag.size() > 128) return false;
  auto word = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
  };
  if (!word(tag[0])) return false;
  for (char c : tag.substr(1))
    if (!word(c) && c != '.' && c != '-') return false;
  return true;
}

Route parse_route(std::string_view path) {
  Route r;
  if (path == "/v2" || path == "/v2/") {
    r.kind = Route::Kind::base;
    return r;
  }
  if (!path.starts_with("/v2/")) return r;
  auto rest = path.substr(4);
  if (rest == "token") return Route{Route::Kind::token, {}, {}};
  if (rest == "_catalog") return Route{Route::Kind::catalog, {}, {}};
  if (rest == "_gc") return Route{Route::Kind::gc, {}, {}};

  // Split into components; the endpoint is recognised from the end, the name is the rest.
  std::vector<std::string_view> parts;
  std::size_t start = 0;
  for (;;) {
    auto slash = rest.find('/', start);
    parts.push_back(rest.substr(start, slash == std::string_view::npos ? std::string_view::npos : slash - start));
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  auto n = parts.size();
  auto name_of = [&](std::size_t count) {
    // the first `count` components, joined back (they are contiguous in `rest`)
    std::size_t len = 0;
    for (std::size_t i = 0; i < count; ++i) len += parts[i].size() + (i ? 1 : 0);
    return std::string(rest.substr(0, len));
  };
  auto finish = [&](Route::Kind kind, std::size_t name_parts, std::string_view ref) {
    Route out{kind, name_of(name_parts), std::string(ref)};
    if (!valid_repository_name(out.name)) out.kind = Route::Kind::bad_name;
    return out;
  };
  if (n >= 3 && parts[n - 3] == "blobs" && parts[n - 2] == "uploads")
    return parts[n - 1].empty() ? finish(Route::Kind::upload_start, n - 3, {})
                                : finish(Route::Kind::upload, n - 3, parts[n - 1]);
  if (n >= 3 && parts[n - 2] == "blobs" && parts[n - 1] == "uploads")
    return finish(Route::Kind::upload_start, n - 2, {});
  if (n >= 3 && parts[n - 2] == "blobs" && !parts[n - 1].empty())
    return finish(Route::Kind::blob, n - 2, parts[n - 1]);
  if (n >= 3 && parts[n - 2] == "manifests" && !parts[n - 1].empty())
    return finish(Route::Kind::manifest, n - 2, parts[n - 1]);
  if (n >= 3 && parts[n - 2] == "tags" && parts[n - 1] == "list") return finish(Route::Kind::tags, n - 2, {});
  if (n >= 3 && parts[n - 2] == "referrers" && !parts[n - 1].empty())
    return finish(Route::Kind::referrers, n - 2, parts[n - 1]);
  return r;
}

std::vector<std::pair<std::string, std::string>> parse_query(std::string_view query) {
  std::vector<std::pair<std::string, std::string>> out;
  std::size_t start = 0;
  while (start <= query.size() && !query.empty()) {
    auto amp = query.find('&', start);
    auto item = query.substr(start, amp == std::string_view::npos ? std::string_view::npos : amp - start);
    if (!item.empty()) {
      auto eq = item.find('=');
      if (eq == std::string_view::npos)
        out.emplace_back(decode(item), "");
      else
        out.emplace_back(decode(item.substr(0, eq)), decode(item.substr(eq + 1)));
    }
    if (amp == std::string_view::npos) break;
    start = amp + 1;
  }
  return out;
}

std::optional<std::string> query_value(const std::vector<std::pair<std::string, std::string>>& q,
                                       std::string_view name) {
  for (const auto& [k, v] : q)
    if (k == name) return v;
  return std::nullopt;
}

}  // namespace provisioner::registry
