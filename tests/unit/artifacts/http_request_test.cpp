#include "controller/artifacts/http_request.hpp"

#include <gtest/gtest.h>

namespace provisioner::artifacts {
namespace {

const std::string kSha(64, 'a');
const std::vector<std::string> kIso{".iso"};

TEST(RequestHead, ReadsTheLineAndTheHeadersTheServerActsOn) {
  auto req = parse_request_head(
      "GET /artifacts/x/y.iso HTTP/1.0\r\nrange: bytes=0-1\r\nRANGE: -5\r\nIf-None-Match: \"e\"\r\n"
      "Connection: Keep-Alive, Upgrade\r\nContent-Length: 0");
  ASSERT_TRUE(req);
  EXPECT_EQ(req->method, "GET");
  EXPECT_EQ(req->target, "/artifacts/x/y.iso");
  EXPECT_EQ(req->minor, 0);
  EXPECT_EQ(req->range, "bytes=0-1,-5") << "repeated list headers combine";
  EXPECT_EQ(req->if_none_match, "\"e\"");
  EXPECT_TRUE(req->keep_alive);
  EXPECT_FALSE(req->close);
  EXPECT_FALSE(req->has_body);
}

TEST(RequestHead, MalformedHeadsAreRefused) {
  for (const char* bad : {"", "GET", "GET /", "GET / HTTP/2", "GET  HTTP/1.1", "GET / HTTP/1.1\r\n folded",
                          "GET / HTTP/1.1\r\nno-colon", "GET / HTTP/1.1\r\n: empty-name",
                          "GET / HTTP/1.1\r\nbad name: x"})
    EXPECT_FALSE(parse_request_head(bad)) << bad;
  EXPECT_TRUE(parse_request_head("POST / HTTP/1.1\r\nTransfer-Encoding: chunked")->has_body);
}

TEST(ArtifactRoute, OriginAndAbsoluteForm) {
  auto r = route_artifact_target("/artifacts/" + kSha + "/task.ISO?cache=no#x", kIso);
  EXPECT_EQ(r.status, 0);
  EXPECT_EQ(r.sha256, kSha);
  EXPECT_EQ(r.name, "task.ISO");
  r = route_artifact_target("http://10.0.2.2:8081/artifacts/" + kSha + "/my%20task.iso", kIso);
  EXPECT_EQ(r.status, 0);
  EXPECT_EQ(r.name, "my task.iso");
}

TEST(ArtifactRoute, TraversalIs400AndEverythingElseUnknownIs404) {
  for (const std::string& bad : std::vector<std::string>{"/artifacts/../etc/passwd", "/artifacts/%2e%2e/" + kSha + "/a.iso",
                                 "/artifacts/" + kSha + "/a%2fb.iso", "/artifacts/" + kSha + "/a%5cb.iso",
                                 "/artifacts/" + kSha + "/a%00.iso", "/artifacts/" + kSha + "/a%0a.iso",
                                 "/artifacts/" + kSha + "/%zz.iso", "no-slash", ""})
    EXPECT_EQ(route_artifact_target(bad, kIso).status, 400) << bad;
  for (const std::string& unknown : std::vector<std::string>{"/", "/artifacts/" + kSha, "/artifacts/" + kSha + "/a.img",
                                     "/artifacts/" + kSha + "/.iso", "/artifacts/ABC/a.iso",
                                     "/other/" + kSha + "/a.iso", "/artifacts/" + kSha + "/a.iso/more",
                                     "http://host-without-path"})
    EXPECT_EQ(route_artifact_target(unknown, kIso).status, 404) << unknown;
}

}  // namespace
}  // namespace provisioner::artifacts
