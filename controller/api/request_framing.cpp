#include "controller/api/request_framing.hpp"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <optional>
#include <string>

namespace provisioner {

namespace {

bool is_tchar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || std::strchr("!#$%&'*+-.^_`|~", c) != nullptr;
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() &&
         std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) { return std::tolower(x) == std::tolower(y); });
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

}  // namespace

std::variant<Framing, EdgeRefusal> check_request_head(std::string_view head) {
  for (std::size_t i = 0; i < head.size(); ++i) {
    char c = head[i];
    if (c == '\0') return EdgeRefusal{400, "Bad Request", "NUL byte in the request head"};
    if (c == '\r' && (i + 1 == head.size() || head[i + 1] != '\n'))
      return EdgeRefusal{400, "Bad Request", "bare CR in the request head"};
    if (c == '\n' && (i == 0 || head[i - 1] != '\r'))
      return EdgeRefusal{400, "Bad Request", "bare LF in the request head"};
  }
  auto eol = head.find("\r\n");
  std::string_view line = head.substr(0, eol);
  auto sp1 = line.find(' '), sp2 = line.rfind(' ');
  if (sp1 == std::string_view::npos || sp1 == sp2 || sp1 == 0) return EdgeRefusal{400, "Bad Request", "malformed request line"};
  std::string_view method = line.substr(0, sp1), target = line.substr(sp1 + 1, sp2 - sp1 - 1),
                   version = line.substr(sp2 + 1);
  if (!std::all_of(method.begin(), method.end(), is_tchar) || target.empty() ||
      target.find_first_of(" \t") != std::string_view::npos)
    return EdgeRefusal{400, "Bad Request", "malformed request line"};
  if (version.rfind("HTTP/", 0) != 0) return EdgeRefusal{400, "Bad Request", "malformed request line"};
  if (version != "HTTP/1.1" && version != "HTTP/1.0")
    return EdgeRefusal{505, "HTTP Version Not Supported", "only HTTP/1.0 and HTTP/1.1 are spoken here"};
  std::optional<std::string_view> content_length;
  bool chunked = false, other_coding = false, has_te = false;
  std::size_t pos = eol + 2;
  while (pos < head.size()) {
    auto end = head.find("\r\n", pos);
    std::string_view field = head.substr(pos, end - pos);
    pos = end + 2;
    if (field.empty()) break;  // the blank line ending the head
    if (field.front() == ' ' || field.front() == '\t')
      return EdgeRefusal{400, "Bad Request", "obsolete line folding in a header"};
    auto colon = field.find(':');
    if (colon == std::string_view::npos || colon == 0) return EdgeRefusal{400, "Bad Request", "malformed header line"};
    std::string_view name = field.substr(0, colon), value = trim(field.substr(colon + 1));
    if (!std::all_of(name.begin(), name.end(), is_tchar)) return EdgeRefusal{400, "Bad Request", "malformed header name"};
    for (char c : value)
      if (static_cast<unsigned char>(c) < 0x20 && c != '\t')
        return EdgeRefusal{400, "Bad Request", "control character in a header value"};
    if (iequals(name, "Content-Length")) {
      if (value.empty() || value.size() > 18 || value.find_first_not_of("0123456789") != std::string_view::npos)
        return EdgeRefusal{400, "Bad Request", "malformed Content-Length"};
      if (content_length && *content_length != value)
        return EdgeRefusal{400, "Bad Request", "conflicting Content-Length headers"};
      content_length = value;
    } else if (iequals(name, "Transfer-Encoding")) {
      has_te = true;
      std::size_t start = 0;
      while (start <= value.size()) {
        auto comma = value.find(',', start);
        auto coding = trim(value.substr(start, comma == std::string_view::npos ? std::string_view::npos : comma - start));
        if (!coding.empty()) {
          // "chunked" must be the last coding and appear once; no other coding is supported.
          if (chunked || !iequals(coding, "chunked")) other_coding = true;
          chunked = chunked || iequals(coding, "chunked");
        }
        if (comma == std::string_view::npos) break;
        start = comma + 1;
      }
    }
  }
  if (has_te && content_length)
    return EdgeRefusal{400, "Bad Request", "both Content-Length and Transfer-Encoding"};
  if (has_te && version == "HTTP/1.0") return EdgeRefusal{400, "Bad Request", "Transfer-Encoding in an HTTP/1.0 request"};
  if (has_te && (other_coding || !chunked))
    return EdgeRefusal{501, "Not Implemented", "only the chunked transfer coding is supported"};
  Framing f;
  if (chunked) {
    f.kind = Framing::kChunked;
  } else if (content_length) {
    f.kind = Framing::kLength;
    f.length = std::stoull(std::string(*content_length));
    if (f.length == 0) f.kind = Framing::kNone;
  }
  return f;
}

std::optional<std::uint64_t> parse_chunk_size(std::string_view line) {
  std::size_t digits = 0;
  std::uint64_t size = 0;
  while (digits < line.size() && std::isxdigit(static_cast<unsigned char>(line[digits]))) {
    if (digits == 15) return std::nullopt;  // past 2^60: nobody sends that honestly
    char c = static_cast<char>(std::tolower(line[digits]));
    size = size * 16 + static_cast<std::uint64_t>(c <= '9' ? c - '0' : c - 'a' + 10);
    ++digits;
  }
  if (digits == 0) return std::nullopt;
  auto rest = trim(line.substr(digits));
  if (!rest.empty() && rest.front() != ';') return std::nullopt;
  for (char c : rest)
    if (static_cast<unsigned char>(c) < 0x20 && c != '\t') return std::nullopt;
  return size;
}

void ResponseTracker::expect(bool head_request) {
  head_request_ = head_request;
  pending_ = true;
}

void ResponseTracker::complete() {
  pending_ = false;
  state_ = State::head;
}

void ResponseTracker::feed(std::string_view bytes) {
  constexpr std::size_t kMaxResponseHead = 64 * 1024;
  if (state_ == State::until_close) return;
  buf_.append(bytes);
  std::size_t pos = 0;  // parsed up to here
  auto take_line = [&](std::string_view& line) {
    auto end = buf_.find("\r\n", pos);
    if (end == std::string::npos) return false;
    line = std::string_view(buf_).substr(pos, end - pos);
    pos = end + 2;
    return true;
  };
  // Skips up to `remaining_` body bytes; true when all of them are now behind.
  auto skip = [&] {
    auto n = std::min<std::uint64_t>(remaining_, buf_.size() - pos);
    pos += n;
    remaining_ -= n;
    return remaining_ == 0;
  };
  for (bool more = true; more && pos <= buf_.size();) {
    switch (state_) {
      case State::head: {
        auto end = buf_.find("\r\n\r\n", pos);
        if (end == std::string::npos) {
          if (buf_.size() - pos > kMaxResponseHead) state_ = State::until_close;  // not HTTP as expected
          more = false;
          break;
        }
        std::string head = buf_.substr(pos, end + 4 - pos);
        pos = end + 4;
        for (auto& c : head) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        int status = head.size() > 12 ? std::atoi(head.c_str() + 9) : 0;
        if (status >= 100 && status < 200 && status != 101) break;  // interim: the answer follows
        bool chunked = false;
        std::optional<std::uint64_t> length;
        std::size_t at = head.find("\r\n");
        while (at != std::string::npos && at + 2 < head.size()) {
          auto eol = head.find("\r\n", at + 2);
          std::string_view field = std::string_view(head).substr(at + 2, eol - at - 2);
          at = eol;
          auto colon = field.find(':');
          if (colon == std::string_view::npos) continue;
          auto name = field.substr(0, colon), value = trim(field.substr(colon + 1));
          if (name == "transfer-encoding" && value.find("chunked") != std::string_view::npos) chunked = true;
          if (name == "content-length" && !value.empty() &&
              value.find_first_not_of("0123456789") == std::string_view::npos && value.size() < 19)
            length = std::stoull(std::string(value));
        }
        if (!pending_) {  // an answer nothing asked for: follow it no further
          state_ = State::until_close;
        } else if (head_request_ || status == 204 || status == 304) {
          complete();
        } else if (chunked) {
          state_ = State::chunk_line;
        } else if (length) {
          remaining_ = *length;
          state_ = State::length;
          if (remaining_ == 0) complete();
        } else {
          state_ = State::until_close;  // the answer ends when the library closes
        }
        break;
      }
      case State::length:
        if (skip()) complete();
        else more = false;
        break;
      case State::chunk_line: {
        std::string_view line;
        if (!take_line(line)) {
          more = false;
          break;
        }
        auto size = parse_chunk_size(line);
        if (!size) state_ = State::until_close;
        else if (*size == 0) state_ = State::trailers;
        else {
          remaining_ = *size;
          state_ = State::chunk_data;
        }
        break;
      }
      case State::chunk_data:
        if (skip()) {
          remaining_ = 2;  // the CRLF after the data
          state_ = State::chunk_crlf;
        } else {
          more = false;
        }
        break;
      case State::chunk_crlf: {
        if (skip()) state_ = State::chunk_line;
        else more = false;
        break;
      }
      case State::trailers: {
        std::string_view line;
        if (!take_line(line)) {
          more = false;
          break;
        }
        if (line.empty()) complete();
        break;
      }
      case State::until_close: more = false; break;
    }
    if (pos == buf_.size()) more = false;
  }
  buf_.erase(0, std::min(pos, buf_.size()));
  if (state_ == State::until_close) buf_.clear();
}

}  // namespace provisioner
