// The API edge's framing checks: what passes on, and what is refused before the library
// behind it could read it differently (request smuggling) or buffer it without bound.
#include <gtest/gtest.h>

#include <string>

#include "controller/api/request_framing.hpp"

using namespace provisioner;

namespace {

std::string head(const std::string& fields, const std::string& line = "POST /api/v1/jobs HTTP/1.1") {
  return line + "\r\nHost: 127.0.0.1\r\n" + fields + "\r\n";
}

int refused(const std::string& h) {
  auto r = check_request_head(h);
  auto* e = std::get_if<EdgeRefusal>(&r);
  return e ? e->status : 0;
}

Framing framing(const std::string& h) {
  auto r = check_request_head(h);
  EXPECT_TRUE(std::holds_alternative<Framing>(r)) << h;
  return std::holds_alternative<Framing>(r) ? std::get<Framing>(r) : Framing{};
}

}  // namespace

TEST(RequestFraming, LengthChunkedOrNone) {
  EXPECT_EQ(framing(head("")).kind, Framing::kNone);
  auto f = framing(head("Content-Length: 42\r\n"));
  EXPECT_EQ(f.kind, Framing::kLength);
  EXPECT_EQ(f.length, 42u);
  EXPECT_EQ(framing(head("Content-Length: 0\r\n")).kind, Framing::kNone);
  EXPECT_EQ(framing(head("transfer-encoding:  Chunked \r\n")).kind, Framing::kChunked);
  EXPECT_EQ(framing(head("Content-Length: 7\r\ncontent-length: 7\r\n")).length, 7u) << "repeated, equal";
  EXPECT_EQ(framing(head("", "GET /healthz HTTP/1.0")).kind, Framing::kNone);
}

TEST(RequestFraming, AmbiguousFramingIsRefused) {
  EXPECT_EQ(refused(head("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n")), 400);
  EXPECT_EQ(refused(head("Content-Length: 5\r\nContent-Length: 6\r\n")), 400);
  EXPECT_EQ(refused(head("Content-Length: 5, 5\r\n")), 400);
  EXPECT_EQ(refused(head("Content-Length: -1\r\n")), 400);
  EXPECT_EQ(refused(head("Content-Length: 99999999999999999999\r\n")), 400);
  EXPECT_EQ(refused(head("Transfer-Encoding: gzip, chunked\r\n")), 501);
  EXPECT_EQ(refused(head("Transfer-Encoding: chunked, chunked\r\n")), 501);
  EXPECT_EQ(refused(head("Transfer-Encoding: identity\r\n")), 501);
  EXPECT_EQ(refused(head("Transfer-Encoding: chunked\r\n", "POST / HTTP/1.0")), 400);
}

TEST(RequestFraming, MalformedHeadsAreRefused) {
  EXPECT_EQ(refused("GET /x HTTP/1.1\nHost: a\r\n\r\n"), 400) << "bare LF";
  EXPECT_EQ(refused("GET /x HTTP/1.1\r\nHost: a\rb\r\n\r\n"), 400) << "bare CR";
  EXPECT_EQ(refused(head("X-A: 1\r\n folded\r\n")), 400) << "obsolete line folding";
  EXPECT_EQ(refused(head("Content-Length : 5\r\n")), 400) << "space before the colon";
  EXPECT_EQ(refused(head(std::string("X-A: a\0b\r\n", 10))), 400) << "NUL";
  EXPECT_EQ(refused(head("NoColon\r\n")), 400);
  EXPECT_EQ(refused("GET  /x HTTP/1.1\r\n\r\n"), 400) << "two spaces";
  EXPECT_EQ(refused("GET /x\r\n\r\n"), 400) << "no version";
  EXPECT_EQ(refused("GET /x HTTP/2.0\r\n\r\n"), 505);
  EXPECT_EQ(refused("G(T /x HTTP/1.1\r\n\r\n"), 400) << "method not a token";
}

TEST(RequestFraming, ChunkSizeLines) {
  EXPECT_EQ(parse_chunk_size("0"), 0u);
  EXPECT_EQ(parse_chunk_size("1a"), 26u);
  EXPECT_EQ(parse_chunk_size("FFFF;name=value"), 65535u);
  EXPECT_EQ(parse_chunk_size("10 ;x"), 16u);
  EXPECT_EQ(parse_chunk_size("80000000"), 0x80000000u) << "2 GiB in one chunk is legal framing";
  EXPECT_FALSE(parse_chunk_size(""));
  EXPECT_FALSE(parse_chunk_size("-1"));
  EXPECT_FALSE(parse_chunk_size("0x10"));
  EXPECT_FALSE(parse_chunk_size("1000000000000000")) << "16 hex digits: past any honest size";
  EXPECT_FALSE(parse_chunk_size("10 garbage"));
}

TEST(ResponseTracker, TellsWhenTheAnswerInFlightIsComplete) {
  ResponseTracker t;
  t.expect(false);
  t.feed("HTTP/1.1 200 OK\r\nContent-Le");
  EXPECT_TRUE(t.pending());
  t.feed("ngth: 5\r\n\r\nabc");
  EXPECT_TRUE(t.pending());
  t.feed("de");
  EXPECT_FALSE(t.pending());

  t.expect(true);  // HEAD: a length but no body
  t.feed("HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n");
  EXPECT_FALSE(t.pending());

  t.expect(false);  // an interim answer, then the final one, chunked, with a trailer
  t.feed("HTTP/1.1 100 Continue\r\n\r\n");
  EXPECT_TRUE(t.pending());
  t.feed("HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab");
  EXPECT_TRUE(t.pending());
  t.feed("c\r\n0\r\nX-T: 1\r\n");
  EXPECT_TRUE(t.pending());
  t.feed("\r\n");
  EXPECT_FALSE(t.pending());

  t.expect(false);  // 204: no body whatever the headers say
  t.feed("HTTP/1.1 204 No Content\r\n\r\n");
  EXPECT_FALSE(t.pending());

  t.expect(false);  // no length: the answer ends with the connection
  t.feed("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: 1\r\n\r\n");
  EXPECT_TRUE(t.pending());
}
