#pragma once
// How the API edge (front_guard.hpp) reads request framing: socket-free, unit-tested and
// fuzzed (tests/fuzz/fuzz_request_framing.cpp).
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

namespace provisioner {

// Where a request's body ends, from its head.
struct Framing {
  enum Kind { kNone, kLength, kChunked } kind = kNone;
  std::uint64_t length = 0;  // kLength
};

// An answer of the edge's own: the request never reaches the API.
struct EdgeRefusal {
  int status;
  const char* reason;
  const char* why;  // fixed text, never the client's bytes
};

// The request head (through its final CRLF CRLF), checked strictly: both sides of the edge
// must agree on the framing, so whatever two parsers could read differently is refused
// (request smuggling): bare CR or LF, NUL, line folding, both Content-Length and
// Transfer-Encoding, conflicting lengths, a coding other than chunked.
std::variant<Framing, EdgeRefusal> check_request_head(std::string_view head);

// A chunk-size line without its CRLF: 1 to 15 hex digits, then optional `;` extensions.
// Nullopt: malformed.
std::optional<std::uint64_t> parse_chunk_size(std::string_view line);

// Follows the answers on one connection from the library behind the edge, to tell when the
// one in flight is complete: the edge passes on one request at a time (the library answers a
// pipelined second request never), holding the next until then.
class ResponseTracker {
 public:
  void expect(bool head_request);  // a request was passed on
  bool pending() const { return pending_; }
  // The bytes the library sent, in order, as they arrive.
  void feed(std::string_view bytes);

 private:
  enum class State { head, length, chunk_line, chunk_data, chunk_crlf, trailers, until_close };
  void complete();
  State state_ = State::head;
  std::string buf_;  // bytes not yet parsed
  std::uint64_t remaining_ = 0;
  bool head_request_ = false;
  bool pending_ = false;
};

}  // namespace provisioner
