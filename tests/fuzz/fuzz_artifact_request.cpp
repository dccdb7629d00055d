// The artifact server's request side on arbitrary bytes: request head, route, Range, dates.
// BMCs and anything else on the management network reach this parser; besides not crashing,
// it must never route outside /artifacts/<sha256>/<name> nor serve bytes outside the file.
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string_view>

#include "controller/artifacts/http_range.hpp"
#include "controller/artifacts/http_request.hpp"

using namespace provisioner::artifacts;

namespace {

void check(bool ok) {
  if (!ok) __builtin_trap();
}

void check_route(std::string_view target) {
  static const std::vector<std::string> suffixes{".iso", ".img"};
  auto route = route_artifact_target(target, suffixes);
  if (route.status != 0) {
    check(route.status == 400 || route.status == 404);
    return;
  }
  check(route.sha256.size() == 64);
  check(route.name.find('/') == std::string::npos && route.name.find("..") == std::string::npos);
  check(iends_with(route.name, ".iso") || iends_with(route.name, ".img"));
}

void check_ranges(std::string_view header) {
  for (std::uint64_t size : {std::uint64_t{0}, std::uint64_t{1}, std::uint64_t{4096},
                             std::numeric_limits<std::uint64_t>::max()}) {
    auto res = evaluate_range(header, size);
    if (res.outcome != RangeResolution::Outcome::partial) {
      check(res.ranges.empty());
      continue;
    }
    check(!res.ranges.empty() && res.ranges.size() <= kMaxRanges);
    for (const auto& r : res.ranges) check(r.first <= r.last && r.last < size);
  }
}

void check_date(std::string_view text) {
  auto t = parse_http_date(text);
  if (!t) return;
  auto again = parse_http_date(http_date(*t));  // what we parse, we can also write
  check(again && *again == *t);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  check_route(text.substr(0, text.find('\n')));
  auto req = parse_request_head(text);
  if (!req) return 0;
  check(req->minor == 0 || req->minor == 1);
  check_route(req->target);
  if (req->range) check_ranges(*req->range);
  if (req->if_none_match) (void)etag_list_matches(*req->if_none_match, "\"0123\"");
  if (req->if_modified_since) check_date(*req->if_modified_since);
  if (req->if_range) check_date(*req->if_range);
  return 0;
}
