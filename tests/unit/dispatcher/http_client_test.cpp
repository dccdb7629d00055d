// The dispatcher's HTTP client (libcurl) against servers on 127.0.0.1: what it sends, what it
// hands back, its limits and its one overall deadline per request.
#include <gtest/gtest.h>

#include <chrono>

#include "dispatcher/http_client.hpp"
#include "test_support.hpp"

using namespace provisioner;
using namespace provisioner::dispatcher;
using namespace provisioner::dispatcher::testing;

TEST(HttpClient, PostsHeadersAndBodyAndReturnsStatusHeadersAndBody) {
  TestHttpServer server([](const TestRequest& r) {
    return TestResponse{r.method == "POST" ? 201 : 400, "got " + r.body, {{"X-Answer", "  42 "}}};
  });
  HttpRequest req;
  req.method = "POST";
  req.url = server.url("/api/v1/status-webhook/S1?x=1");
  req.headers = {{"Content-Type", "application/json"}, {"X-Provisioner-Timestamp", "123"}};
  req.body = R"({"status":"running"})";
  auto resp = http_request(req);
  ASSERT_TRUE(resp.ok()) << resp.error().message;
  EXPECT_EQ(resp->status, 201);
  EXPECT_EQ(resp->body, std::string("got ") + req.body);
  EXPECT_EQ(resp->header("x-answer"), "42");  // names lowercased, value trimmed
  ASSERT_EQ(server.requests().size(), 1u);
  auto seen = server.requests()[0];
  EXPECT_EQ(seen.target, "/api/v1/status-webhook/S1?x=1");
  EXPECT_EQ(seen.headers["content-type"], "application/json");
  EXPECT_EQ(seen.headers["x-provisioner-timestamp"], "123");
  EXPECT_EQ(seen.headers["content-length"], std::to_string(req.body.size()));
  EXPECT_EQ(seen.headers["user-agent"], "provisioner-dispatcher");
  EXPECT_EQ(seen.headers.count("expect"), 0u);
}

TEST(HttpClient, GetsAndHandsBackErrorStatusesAsAnswers) {
  TestHttpServer server([](const TestRequest& r) {
    return r.target == "/here" ? TestResponse{200, "body"} : TestResponse{404, "no"};
  });
  HttpRequest req;
  req.url = server.url("/here");
  auto ok = http_request(req);
  ASSERT_TRUE(ok.ok()) << ok.error().message;
  EXPECT_EQ(ok->status, 200);
  EXPECT_EQ(ok->body, "body");
  req.url = server.url("/gone");
  auto missing = http_request(req);
  ASSERT_TRUE(missing.ok());
  EXPECT_EQ(missing->status, 404);
  EXPECT_EQ(server.requests()[0].method, "GET");
}

TEST(HttpClient, AnAnswerAboveTheLimitIsTooLarge) {
  TestHttpServer server([](const TestRequest&) { return TestResponse{200, std::string(100000, 'a')}; });
  HttpRequest req;
  req.url = server.url("/big");
  req.max_response_bytes = 1000;
  auto resp = http_request(req);
  ASSERT_FALSE(resp.ok());
  EXPECT_EQ(resp.error().kind, ErrorKind::too_large);
}

TEST(HttpClient, RefusesBadUrlsAndReportsUnreachableServers) {
  HttpRequest req;
  for (const char* bad : {"ftp://127.0.0.1/x", "127.0.0.1/x", "http://user:pw@127.0.0.1/x", "http://127.0.0.1:0/"}) {
    req.url = bad;
    auto resp = http_request(req);
    ASSERT_FALSE(resp.ok()) << bad;
    EXPECT_EQ(resp.error().kind, ErrorKind::invalid_input) << bad;
  }
  std::string dead;
  {
    TestHttpServer gone([](const TestRequest&) { return TestResponse{}; });
    dead = gone.url("/x");
  }
  req.url = dead;
  auto resp = http_request(req);
  ASSERT_FALSE(resp.ok());
  EXPECT_EQ(resp.error().kind, ErrorKind::unavailable);
}

TEST(HttpClient, TlsToAPlainServerFailsAsUnavailable) {
  TestHttpServer server([](const TestRequest&) { return TestResponse{200, "plain"}; });
  HttpRequest req;
  req.url = "https" + server.url("/").substr(4);
  req.timeout_ms = 3000;
  auto resp = http_request(req);
  ASSERT_FALSE(resp.ok());
  EXPECT_EQ(resp.error().kind, ErrorKind::unavailable);
}

// Defect 10: the timeout used to bound connect and each read, so a server sending a byte now
// and then held the dispatcher for as long as it liked. The deadline is overall now.
TEST(HttpClient, TheDeadlineCoversTheWholeAnswerNotEachRead) {
  TrickleServer server(100, 100);  // 100 bytes, one per 100 ms: a 10 s answer
  HttpRequest req;
  req.url = server.url("/task.iso");
  req.timeout_ms = 1000;
  auto started = std::chrono::steady_clock::now();
  auto resp = http_request(req);
  auto took = std::chrono::steady_clock::now() - started;
  ASSERT_FALSE(resp.ok()) << "the whole trickled answer was accepted";
  EXPECT_EQ(resp.error().kind, ErrorKind::unavailable);
  EXPECT_NE(resp.error().message.find("1000 ms"), std::string::npos) << resp.error().message;
  EXPECT_LT(took, std::chrono::seconds(5));  // the bound this test is about: 1 s, plus slack
}
