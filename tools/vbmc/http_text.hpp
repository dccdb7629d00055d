#pragma once
// The text parts of HTTP/1.1 that the vbmc's server (requests) and its media fetcher
// (answers) both read: header lines after the start line.
#include <algorithm>
#include <cctype>
#include <map>
#include <string>

namespace provisioner::vbmc {

inline std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

inline std::string trim(const std::string& s) {
  auto b = s.find_first_not_of(" \t\r\n");
  auto e = s.find_last_not_of(" \t\r\n");
  return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
}

// "Name: value" lines of `head` from `pos` on, names lower-cased, values trimmed.
inline std::map<std::string, std::string> parse_header_lines(const std::string& head, std::size_t pos) {
  std::map<std::string, std::string> headers;
  while (pos < head.size()) {
    auto e = head.find("\r\n", pos);
    if (e == std::string::npos) e = head.size();
    std::string line = head.substr(pos, e - pos);
    auto c = line.find(':');
    if (c != std::string::npos) headers[lower(trim(line.substr(0, c)))] = trim(line.substr(c + 1));
    pos = e + 2;
  }
  return headers;
}

}  // namespace provisioner::vbmc
