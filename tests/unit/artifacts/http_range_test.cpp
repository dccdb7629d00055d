#include "controller/artifacts/http_range.hpp"

#include <gtest/gtest.h>

namespace provisioner::artifacts {
namespace {

using K = RangeSpec::Kind;
using O = RangeResolution::Outcome;

TEST(RangeParse, SingleOpenSuffix) {
  auto r = parse_range_header("bytes=0-499");
  ASSERT_TRUE(r);
  EXPECT_EQ(*r, (std::vector<RangeSpec>{{K::closed, 0, 499}}));
  r = parse_range_header("bytes=9500-");
  ASSERT_TRUE(r);
  EXPECT_EQ(*r, (std::vector<RangeSpec>{{K::open, 9500, 0}}));
  r = parse_range_header("bytes=-500");
  ASSERT_TRUE(r);
  EXPECT_EQ(*r, (std::vector<RangeSpec>{{K::suffix, 0, 500}}));
}

TEST(RangeParse, MultiWithWhitespaceAndEmptyElements) {
  auto r = parse_range_header("  Bytes = 0-0 , ,-1,\t5-  ");
  ASSERT_TRUE(r);
  EXPECT_EQ(*r, (std::vector<RangeSpec>{{K::closed, 0, 0}, {K::suffix, 0, 1}, {K::open, 5, 0}}));
}

TEST(RangeParse, GarbageIsIgnoredNotAnError) {
  for (const char* bad : {"", "bytes", "bytes=", "bytes=,", "items=0-1", "bytes=a-b", "bytes=1-0",
                          "bytes=--1", "bytes=1--2", "bytes=-", "bytes=0-1;2-3", "bytes=+1-2",
                          "bytes=0x10-20", "bytes= 1 2-3", "bytes=0-1,x"}) {
    EXPECT_FALSE(parse_range_header(bad)) << bad;
  }
}

TEST(RangeParse, HugeNumbersSaturateInsteadOfWrapping) {
  auto r = parse_range_header("bytes=0-99999999999999999999999999");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->front().last, UINT64_MAX);
  auto res = resolve_ranges(*r, 100);
  ASSERT_EQ(res.outcome, O::partial);
  EXPECT_EQ(res.ranges.front(), (ByteRange{0, 99}));

  // 2^64 + 1 must not wrap to 1.
  res = evaluate_range("bytes=18446744073709551617-", 100);
  EXPECT_EQ(res.outcome, O::unsatisfiable);
  res = evaluate_range("bytes=-18446744073709551617", 100);
  ASSERT_EQ(res.outcome, O::partial);
  EXPECT_EQ(res.ranges.front(), (ByteRange{0, 99}));
}

TEST(RangeParse, TooManyRangesIsIgnored) {
  std::string h = "bytes=0-0";
  for (std::size_t i = 1; i < kMaxRanges; ++i) h += ",0-0";
  EXPECT_TRUE(parse_range_header(h));
  h += ",0-0";
  EXPECT_FALSE(parse_range_header(h));
}

TEST(RangeResolve, ClampsAndDropsUnsatisfiable) {
  auto res = evaluate_range("bytes=0-9,100-200,95-,-3", 100);
  ASSERT_EQ(res.outcome, O::partial);
  EXPECT_EQ(res.ranges, (std::vector<ByteRange>{{0, 9}, {95, 99}, {97, 99}}));
}

TEST(RangeResolve, Unsatisfiable) {
  EXPECT_EQ(evaluate_range("bytes=100-", 100).outcome, O::unsatisfiable);
  EXPECT_EQ(evaluate_range("bytes=-0", 100).outcome, O::unsatisfiable);
  EXPECT_EQ(evaluate_range("bytes=0-", 0).outcome, O::unsatisfiable);
  EXPECT_EQ(evaluate_range("bytes=-5", 0).outcome, O::unsatisfiable);
}

TEST(RangeResolve, AbsentOrMalformedMeansFull) {
  EXPECT_EQ(evaluate_range(std::nullopt, 100).outcome, O::full);
  EXPECT_EQ(evaluate_range("bytes=5-1", 100).outcome, O::full);
}

TEST(RangeResolve, SuffixLargerThanFileIsWholeFile) {
  auto res = evaluate_range("bytes=-1000", 10);
  ASSERT_EQ(res.outcome, O::partial);
  EXPECT_EQ(res.ranges.front(), (ByteRange{0, 9}));
}

TEST(RangeResolve, SixtyFourBitOffsets) {
  const std::uint64_t size = (5ull << 30) + 123;  // > 4 GiB
  auto res = evaluate_range("bytes=5368709120-", size);
  ASSERT_EQ(res.outcome, O::partial);
  EXPECT_EQ(res.ranges.front(), (ByteRange{5368709120ull, size - 1}));
  EXPECT_EQ(res.ranges.front().length(), 123u);
}

TEST(HttpDate, RoundTrips) {
  auto t = std::chrono::system_clock::from_time_t(784111777);
  EXPECT_EQ(http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
  EXPECT_EQ(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), t);
  EXPECT_FALSE(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"));
  EXPECT_FALSE(parse_http_date("Sun, 06 Foo 1994 08:49:37 GMT"));
}

TEST(HttpDate, YearsTheClockCannotHoldAreUnusableNotUndefined) {
  // Found by fuzz_artifact_request: If-Modified-Since in the year 3988 overflowed the clock.
  EXPECT_FALSE(parse_http_date("Sun, 06 Nov 3988 08:49:37 GMT"));
  EXPECT_FALSE(parse_http_date("Sun, 06 Nov 0001 08:49:37 GMT"));
  EXPECT_TRUE(parse_http_date("Fri, 31 Dec 2200 23:59:59 GMT"));
}

TEST(ETag, ListMatching) {
  EXPECT_TRUE(etag_list_matches("\"a\"", "\"a\""));
  EXPECT_TRUE(etag_list_matches("\"x\", W/\"a\"", "\"a\""));
  EXPECT_TRUE(etag_list_matches("*", "\"a\""));
  EXPECT_FALSE(etag_list_matches("\"b\"", "\"a\""));
  EXPECT_FALSE(etag_list_matches("a", "\"a\""));
}

}  // namespace
}  // namespace provisioner::artifacts
