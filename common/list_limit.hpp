#pragma once
// The `limit` query of a list route: an integer from 1 to `max`, or nullopt (the caller
// answers 400 naming the parameter). One parser for every list (jobs, servers, nodes).
#include <charconv>
#include <optional>
#include <string_view>

namespace provisioner {

inline std::optional<int> parse_list_limit(std::string_view text, int max) {
  int value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value < 1 || value > max) return std::nullopt;
  return value;
}

}  // namespace provisioner
