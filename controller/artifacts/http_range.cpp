#include "controller/artifacts/http_range.hpp"

#include <algorithm>
#include <cctype>
#include <ctime>
#include <limits>

#include "controller/artifacts/http_request.hpp"

namespace provisioner::artifacts {
namespace {

constexpr std::uint64_t kU64Max = std::numeric_limits<std::uint64_t>::max();

// 1*DIGIT, saturating at 2^64-1.
std::optional<std::uint64_t> parse_digits(std::string_view s) {
  if (s.empty()) return std::nullopt;
  std::uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    auto d = static_cast<std::uint64_t>(c - '0');
    v = (v > (kU64Max - d) / 10) ? kU64Max : v * 10 + d;
  }
  return v;
}

}  // namespace

std::optional<std::vector<RangeSpec>> parse_range_header(std::string_view value) {
  value = trim_ows(value);
  auto eq = value.find('=');
  if (eq == std::string_view::npos || !iequals(trim_ows(value.substr(0, eq)), "bytes"))
    return std::nullopt;
  value.remove_prefix(eq + 1);
  std::vector<RangeSpec> out;
  // RFC 9110 list syntax: empty elements (",,") are allowed and skipped.
  while (true) {
    auto comma = value.find(',');
    auto item = trim_ows(value.substr(0, comma));
    if (!item.empty()) {
      if (out.size() == kMaxRanges) return std::nullopt;
      auto dash = item.find('-');
      if (dash == std::string_view::npos) return std::nullopt;
      auto a = item.substr(0, dash), b = item.substr(dash + 1);
      RangeSpec spec;
      if (a.empty()) {
        auto n = parse_digits(b);
        if (!n) return std::nullopt;
        spec = {RangeSpec::Kind::suffix, 0, *n};
      } else {
        auto first = parse_digits(a);
        if (!first) return std::nullopt;
        if (b.empty()) {
          spec = {RangeSpec::Kind::open, *first, 0};
        } else {
          auto last = parse_digits(b);
          if (!last || *last < *first) return std::nullopt;
          spec = {RangeSpec::Kind::closed, *first, *last};
        }
      }
      out.push_back(spec);
    }
    if (comma == std::string_view::npos) break;
    value.remove_prefix(comma + 1);
  }
  if (out.empty()) return std::nullopt;
  return out;
}

RangeResolution resolve_ranges(const std::vector<RangeSpec>& specs, std::uint64_t size) {
  RangeResolution r;
  for (const auto& s : specs) {
    switch (s.kind) {
      case RangeSpec::Kind::closed:
        if (s.first < size) r.ranges.push_back({s.first, std::min(s.last, size - 1)});
        break;
      case RangeSpec::Kind::open:
        if (s.first < size) r.ranges.push_back({s.first, size - 1});
        break;
      case RangeSpec::Kind::suffix:
        if (s.last > 0 && size > 0) r.ranges.push_back({size - std::min(s.last, size), size - 1});
        break;
    }
  }
  r.outcome = r.ranges.empty() ? RangeResolution::Outcome::unsatisfiable
                               : RangeResolution::Outcome::partial;
  return r;
}

RangeResolution evaluate_range(std::optional<std::string_view> header, std::uint64_t size) {
  if (!header) return {};
  auto specs = parse_range_header(*header);
  if (!specs) return {};
  return resolve_ranges(*specs, size);
}

std::string http_date(std::chrono::system_clock::time_point t) {
  std::time_t tt = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  ::gmtime_r(&tt, &tm);
  // strftime's %a/%b follow the C locale only if the process has not changed LC_TIME; spell
  // them out so a localized process still sends valid HTTP dates.
  static constexpr const char* kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                            "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  char buf[40];
  std::snprintf(buf, sizeof buf, "%s, %02d %s %04d %02d:%02d:%02d GMT", kDays[tm.tm_wday],
                tm.tm_mday, kMonths[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
                tm.tm_sec);
  return buf;
}

std::optional<std::chrono::system_clock::time_point> parse_http_date(std::string_view s) {
  s = trim_ows(s);
  // "Sun, 06 Nov 1994 08:49:37 GMT"
  if (s.size() != 29 || s[3] != ',' || s[4] != ' ' || s[7] != ' ' || s[11] != ' ' ||
      s[16] != ' ' || s[19] != ':' || s[22] != ':' || s.substr(25) != " GMT")
    return std::nullopt;
  static constexpr std::string_view kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                 "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  auto num = [&](std::size_t pos, std::size_t len) -> std::optional<int> {
    auto v = parse_digits(s.substr(pos, len));
    if (!v || *v > 9999) return std::nullopt;
    return static_cast<int>(*v);
  };
  auto day = num(5, 2), year = num(12, 4), hh = num(17, 2), mm = num(20, 2), ss = num(23, 2);
  auto mon = std::find(std::begin(kMonths), std::end(kMonths), s.substr(8, 3));
  if (!day || !year || !hh || !mm || !ss || mon == std::end(kMonths)) return std::nullopt;
  if (*day < 1 || *day > 31 || *hh > 23 || *mm > 59 || *ss > 60) return std::nullopt;
  std::tm tm{};
  tm.tm_mday = *day;
  tm.tm_mon = static_cast<int>(mon - std::begin(kMonths));
  tm.tm_year = *year - 1900;
  tm.tm_hour = *hh;
  tm.tm_min = *mm;
  tm.tm_sec = *ss;
  // A four-digit year reaches past what system_clock holds (about 1678 to 2262 in
  // nanoseconds): such a date is treated like any other unusable one, as absent.
  using namespace std::chrono;
  const auto t = static_cast<std::int64_t>(::timegm(&tm));
  const auto lo = duration_cast<seconds>(system_clock::time_point::min().time_since_epoch()).count();
  const auto hi = duration_cast<seconds>(system_clock::time_point::max().time_since_epoch()).count();
  if (t <= lo || t >= hi) return std::nullopt;
  return system_clock::from_time_t(static_cast<std::time_t>(t));
}

bool etag_list_matches(std::string_view header, std::string_view etag) {
  header = trim_ows(header);
  if (header == "*") return true;
  while (!header.empty()) {
    auto comma = header.find(',');
    auto item = trim_ows(header.substr(0, comma));
    if (item.starts_with("W/")) item.remove_prefix(2);
    if (item == etag) return true;
    if (comma == std::string_view::npos) break;
    header.remove_prefix(comma + 1);
  }
  return false;
}

}  // namespace provisioner::artifacts
