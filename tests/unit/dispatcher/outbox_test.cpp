#include <gtest/gtest.h>

#include <sys/file.h>

#include <chrono>
#include <ctime>
#include <thread>

#include "common/webhook.hpp"
#include "dispatcher/outbox.hpp"
#include "test_support.hpp"

using namespace provisioner;
using namespace provisioner::dispatcher;
using namespace provisioner::dispatcher::testing;

namespace {

const std::string kKey = "per-job-key-0123456789";

// A controller stand-in that checks signatures the way the real one does (common/webhook.hpp),
// refuses a signature it has seen (409), and answers with `status_script` in turn.
struct FakeController {
  std::mutex mu;
  std::vector<std::string> accepted_bodies;
  std::vector<std::string> signatures;
  std::vector<int> script;  // statuses to answer before accepting; empty: accept
  std::int64_t server_offset_s = 0;  // the controller's clock minus the test clock
  const ManualClock* clock = nullptr;
  TestHttpServer server{[this](const TestRequest& r) { return handle(r); }};

  TestResponse handle(const TestRequest& r) {
    std::lock_guard lock(mu);
    auto ts = parse_unix_timestamp(r.headers.at("x-provisioner-timestamp"));
    const auto& sig = r.headers.at("x-provisioner-signature");
    if (!ts || !webhook_signature_matches(kKey, *ts, r.body, sig)) return {401, "bad signature"};
    std::int64_t server_now = clock->now_seconds() + server_offset_s;
    if (*ts < server_now - 30 || *ts > server_now + 30) return {401, "stale", {{"Date", http_date(server_now)}}};
    for (const auto& s : signatures)
      if (s == sig) return {409, "replayed"};
    signatures.push_back(sig);
    if (!script.empty()) {
      int s = script.front();
      script.erase(script.begin());
      return {s, ""};
    }
    accepted_bodies.push_back(r.body);
    return {200, "{}"};
  }
  static std::string http_date(std::int64_t t) {
    std::time_t tt = t;
    std::tm tm{};
    ::gmtime_r(&tt, &tm);
    char buf[64];
    std::strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    return buf;
  }
};

struct Fixture {
  TempDir t;
  ManualClock clock;
  FakeController controller;
  std::vector<std::int64_t> sleeps;
  Fixture() { controller.clock = &clock; }
  WebhookOutbox outbox(const std::string& url) {
    WebhookConfig cfg{url, kKey, "k1", "job-1"};
    return WebhookOutbox(t.path / "outbox", cfg, clock, [this](std::int64_t ms) {
      sleeps.push_back(ms);
      clock.advance(ms);
    });
  }
  static WebhookReport report(const std::string& status) {
    return WebhookReport{"job-1", status, "provision-partition.service", "", std::nullopt, ""};
  }
  std::size_t spooled() {
    std::size_t n = 0;
    for (auto& e : fs::directory_iterator(t.path / "outbox"))
      if (e.path().extension() == ".json") ++n;
    return n;
  }
};

}  // namespace

TEST(Outbox, DeliversSignedReportsInOrder) {
  Fixture f;
  auto box = f.outbox(f.controller.server.url("/api/v1/status-webhook/SER1"));
  ASSERT_TRUE(box.enqueue(Fixture::report("running")).ok());
  f.clock.advance(5);
  ASSERT_TRUE(box.enqueue(Fixture::report("success")).ok());
  auto out = box.flush(f.clock.now_ms() + 60000);
  EXPECT_EQ(out.delivered, 2);
  EXPECT_EQ(out.pending, 0);
  ASSERT_EQ(f.controller.accepted_bodies.size(), 2u);
  EXPECT_EQ(parse_webhook_report(f.controller.accepted_bodies[0])->status, "running");
  EXPECT_EQ(parse_webhook_report(f.controller.accepted_bodies[1])->status, "success");
  EXPECT_EQ(f.spooled(), 0u);
  for (auto& r : f.controller.server.requests())
    EXPECT_EQ(r.target, "/api/v1/status-webhook/SER1");
}

TEST(Outbox, RetriesWithBackoffAndSignsEveryTryAfresh) {
  Fixture f;
  f.controller.script = {503, 502, 500};
  auto box = f.outbox(f.controller.server.url("/hook"));
  ASSERT_TRUE(box.enqueue(Fixture::report("failed")).ok());
  auto out = box.flush(f.clock.now_ms() + 600000);
  EXPECT_EQ(out.delivered, 1);
  EXPECT_EQ(f.controller.accepted_bodies.size(), 1u);
  // Four tries, four different signatures: none was refused as a replay.
  EXPECT_EQ(f.controller.signatures.size(), 4u);
  ASSERT_EQ(f.sleeps.size(), 3u);
  EXPECT_EQ(f.sleeps[0], 1000);
  EXPECT_EQ(f.sleeps[1], 2000);
  EXPECT_EQ(f.sleeps[2], 4000);
}

TEST(Outbox, KeepsTheReportSpooledWhenTheControllerIsDownUntilTheDeadline) {
  Fixture f;
  // A port nobody listens on: bind, note it, close.
  std::string dead_url;
  {
    TestHttpServer gone([](const TestRequest&) { return TestResponse{}; });
    dead_url = gone.url("/hook");
  }
  auto box = f.outbox(dead_url);
  ASSERT_TRUE(box.enqueue(Fixture::report("success")).ok());
  auto out = box.flush(f.clock.now_ms() + 120000);
  EXPECT_EQ(out.delivered, 0);
  EXPECT_EQ(out.pending, 1);
  EXPECT_EQ(f.spooled(), 1u);
  std::int64_t slept = 0;
  for (auto s : f.sleeps) {
    EXPECT_LE(s, 30000);  // capped backoff
    slept += s;
  }
  EXPECT_GE(slept, 120000);

  // Later (network back): a flush of the same spool delivers it.
  auto box2 = f.outbox(f.controller.server.url("/hook"));
  out = box2.flush(f.clock.now_ms() + 1000);
  EXPECT_EQ(out.delivered, 1);
  EXPECT_EQ(f.spooled(), 0u);
}

TEST(Outbox, LearnsTheControllerClockFromDate) {
  Fixture f;
  f.controller.server_offset_s = 3600;  // our clock is an hour behind (no NTP yet)
  auto box = f.outbox(f.controller.server.url("/hook"));
  ASSERT_TRUE(box.enqueue(Fixture::report("running")).ok());
  auto out = box.flush(f.clock.now_ms() + 60000);
  EXPECT_EQ(out.delivered, 1);
  EXPECT_NEAR(static_cast<double>(box.clock_offset_seconds()), 3600.0, 2.0);
}

TEST(Outbox, SetsAsideWhatTheControllerRefuses) {
  Fixture f;
  f.controller.script = {409};
  auto box = f.outbox(f.controller.server.url("/hook"));
  ASSERT_TRUE(box.enqueue(Fixture::report("success")).ok());
  auto out = box.flush(f.clock.now_ms() + 60000);
  EXPECT_EQ(out.rejected, 1);
  EXPECT_EQ(out.pending, 0);
  EXPECT_EQ(f.spooled(), 0u);
  EXPECT_FALSE(fs::is_empty(f.t.path / "outbox/rejected"));
}

TEST(Outbox, SpoolFilesNeverHoldTheKey) {
  Fixture f;
  auto box = f.outbox("http://127.0.0.1:1/hook");
  auto file = box.enqueue(Fixture::report("running"));
  ASSERT_TRUE(file.ok());
  EXPECT_EQ(slurp(*file).find(kKey), std::string::npos);
}

// Defect 10: a controller that accepts the webhook and then trickles its answer held a flush
// (and so `report`, an OnFailure= handler) far past its deadline; each attempt now ends with it.
TEST(Outbox, TheDeadlineBoundsTheWholeLoopEvenWhenTheControllerTrickles) {
  TempDir t;
  SystemClock clock;
  TrickleServer slow(100, 200);  // a 20 s answer
  WebhookConfig cfg{slow.url("/hook"), kKey, "k1", "job-1"};
  WebhookOutbox box(t.path / "outbox", cfg, clock,
                    [](std::int64_t ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); });
  ASSERT_TRUE(box.enqueue(Fixture::report("success")).ok());
  auto started = std::chrono::steady_clock::now();
  auto out = box.flush(clock.now_ms() + 2000);
  auto took = std::chrono::steady_clock::now() - started;
  EXPECT_EQ(out.delivered, 0);
  EXPECT_EQ(out.pending, 1);
  EXPECT_GE(slow.requests(), 1);
  EXPECT_LT(took, std::chrono::seconds(5));  // the deadline (2 s) plus slack
}

TEST(Outbox, SendsNothingAfterTheDeadlineWhileAnotherFlusherHoldsTheLock) {
  Fixture f;
  auto box = f.outbox(f.controller.server.url("/hook"));
  ASSERT_TRUE(box.enqueue(Fixture::report("success")).ok());
  int other = ::open((f.t.path / "outbox/.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  ASSERT_GE(other, 0);
  ASSERT_EQ(::flock(other, LOCK_EX), 0);  // flock locks are per open file: this one blocks box
  auto out = box.flush(f.clock.now_ms() + 1000);
  ::close(other);
  EXPECT_EQ(out.delivered, 0);
  EXPECT_EQ(out.pending, 1);
  EXPECT_TRUE(f.controller.server.requests().empty());
  std::int64_t slept = 0;
  for (auto s : f.sleeps) slept += s;
  EXPECT_EQ(slept, 1000);  // waited for the lock until the deadline, not beyond
}
