#pragma once
// The cursor of a newest-first list (jobs, fleets): opaque to clients, "c" + hex of the last
// seq seen. A seq is positive: a cursor past INT64_MAX or of zero came from no page of this API.
#include <cstdint>
#include <optional>
#include <sstream>
#include <string>

namespace provisioner {

inline std::string encode_cursor(std::int64_t seq) {
  std::ostringstream out;
  out << "c" << std::hex << seq;
  return out.str();
}

inline std::optional<std::int64_t> decode_cursor(const std::string& cursor) {
  if (cursor.size() < 2 || cursor.size() > 17 || cursor[0] != 'c') return std::nullopt;
  std::int64_t v = 0;
  for (std::size_t i = 1; i < cursor.size(); ++i) {
    char c = cursor[i];
    int d = (c >= '0' && c <= '9') ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
    if (d < 0 || v > (INT64_MAX - d) / 16) return std::nullopt;
    v = v * 16 + d;
  }
  if (v < 1) return std::nullopt;
  return v;
}

}  // namespace provisioner
