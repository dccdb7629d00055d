#pragma once
// The small HTTP pieces the artifact server needs, kept apart so they can be unit-tested and
// fuzzed without sockets: the Range header (RFC 9110 §14) and IMF-fixdate.
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace provisioner::artifacts {

// A range as written by the client, before the representation size is known.
struct RangeSpec {
  enum class Kind { closed, open, suffix };  // a-b, a-, -n
  Kind kind = Kind::closed;
  std::uint64_t first = 0;  // closed/open: first byte; suffix: unused
  std::uint64_t last = 0;   // closed: last byte; suffix: the length N
  bool operator==(const RangeSpec&) const = default;
};

// A satisfiable range resolved against a size: bytes [first, last] inclusive.
struct ByteRange {
  std::uint64_t first = 0;
  std::uint64_t last = 0;
  std::uint64_t length() const { return last - first + 1; }
  bool operator==(const ByteRange&) const = default;
};

// Ranges beyond this count are ignored (full 200 answer) instead of served: a request of
// thousands of overlapping ranges is an amplification attack, not a BMC.
constexpr std::size_t kMaxRanges = 64;

// Parses `bytes=...`. nullopt when the header is malformed (wrong unit, first > last, junk,
// too many ranges): the caller must then ignore it and send 200. Numbers too large for 64
// bits saturate, which resolves correctly (a huge `last` clamps, a huge `first` is past EOF).
std::optional<std::vector<RangeSpec>> parse_range_header(std::string_view value);

struct RangeResolution {
  enum class Outcome { full, partial, unsatisfiable };
  Outcome outcome = Outcome::full;
  std::vector<ByteRange> ranges;  // partial only, in the order asked
};

// Resolves parsed specs against `size`: satisfiable ones are kept (clamped), the rest dropped;
// none left → unsatisfiable (416).
RangeResolution resolve_ranges(const std::vector<RangeSpec>& specs, std::uint64_t size);

// Convenience: header value (or nullopt when absent) → what to send.
RangeResolution evaluate_range(std::optional<std::string_view> header, std::uint64_t size);

// IMF-fixdate, e.g. "Sun, 06 Nov 1994 08:49:37 GMT".
std::string http_date(std::chrono::system_clock::time_point t);
// Accepts IMF-fixdate (the only form we need to compare exactly); nullopt otherwise.
std::optional<std::chrono::system_clock::time_point> parse_http_date(std::string_view s);

// True when an If-None-Match / If-Range entity-tag list contains `etag` (with quotes) or "*"
// (If-None-Match uses weak comparison, so W/ prefixes match too).
bool etag_list_matches(std::string_view header, std::string_view etag);

}  // namespace provisioner::artifacts
