// GET /api/v1/events through the real controller: Server-Sent Events of job, node and fleet
// changes read from the store, resumable with Last-Event-ID, filtered, with heartbeats, and a
// stuck consumer that slows nothing.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "tests/integration/controller/test_jobs.hpp"
#include "tests/support/controller_process.hpp"

using namespace provisioner;
using namespace provisioner::test;

namespace {

struct SseEvent {
  std::string id, event;
  nlohmann::json data;
};

// A plain socket reading an event stream: what a browser's fetch or curl -N does.
class SseClient {
 public:
  SseClient(std::uint16_t port, const std::string& target, const std::string& token,
            const std::string& extra_headers = "") {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) throw std::runtime_error("connect");
    std::string req = "GET " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n";
    if (!token.empty()) req += "Authorization: Bearer " + token + "\r\n";
    req += extra_headers + "\r\n";
    ::send(fd_, req.data(), req.size(), MSG_NOSIGNAL);
  }
  ~SseClient() { ::close(fd_); }

  // Reads until the head has arrived; its status.
  int status(int timeout_ms = 5000) {
    while (in_.find("\r\n\r\n") == std::string::npos)
      if (!fill(timeout_ms)) return 0;
    auto head_end = in_.find("\r\n\r\n");
    head_ = in_.substr(0, head_end);
    in_.erase(0, head_end + 4);
    return std::stoi(head_.substr(9, 3));
  }
  const std::string& head() const { return head_; }
  std::string body_so_far() const { return in_; }

  // The next event (comments are counted, not returned); nullopt on timeout or close.
  std::optional<SseEvent> next(int timeout_ms = 10000) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    for (;;) {
      auto end = in_.find("\n\n");
      while (end != std::string::npos) {
        auto block = in_.substr(0, end);
        in_.erase(0, end + 2);
        SseEvent e;
        bool any = false;
        std::size_t start = 0;
        while (start < block.size()) {
          auto nl = block.find('\n', start);
          auto line = block.substr(start, nl == std::string::npos ? std::string::npos : nl - start);
          start = nl == std::string::npos ? block.size() : nl + 1;
          if (line.starts_with(":")) ++comments;
          else if (line.starts_with("id: ")) e.id = line.substr(4), any = true;
          else if (line.starts_with("event: ")) e.event = line.substr(7), any = true;
          else if (line.starts_with("data: ")) e.data = nlohmann::json::parse(line.substr(6)), any = true;
        }
        if (any && !e.id.empty()) return e;
        end = in_.find("\n\n");
      }
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0 || !fill(static_cast<int>(left.count()))) return std::nullopt;
    }
  }

  // Events until one matches, or nullopt.
  template <typename F>
  std::optional<SseEvent> until(F match, int timeout_ms = 15000) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    for (;;) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return std::nullopt;
      auto e = next(static_cast<int>(left.count()));
      if (!e) return std::nullopt;
      seen.push_back(*e);
      if (match(*e)) return e;
    }
  }

  bool closed_by_peer(int timeout_ms) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (std::chrono::steady_clock::now() < deadline) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 100) > 0) {
        char buf[4096];
        auto n = ::recv(fd_, buf, sizeof buf, 0);
        if (n <= 0) return true;
        in_.append(buf, static_cast<std::size_t>(n));
      }
    }
    return false;
  }

  int comments = 0;
  std::vector<SseEvent> seen;

 private:
  bool fill(int timeout_ms) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, timeout_ms) <= 0) return false;
    char buf[16384];
    auto n = ::recv(fd_, buf, sizeof buf, 0);
    if (n <= 0) return false;
    in_.append(buf, static_cast<std::size_t>(n));
    return true;
  }
  int fd_ = -1;
  std::string in_, head_;
};

}  // namespace

class Events : public testing::Test {
 protected:
  void SetUp() override {
    controller = std::make_unique<ControllerProcess>("[api]\nevents_heartbeat_ms = 300\n");
    controller->start();
  }
  std::string submit(const std::string& serial) {
    auto r = controller->post("/api/v1/jobs", job_body(serial));
    EXPECT_EQ(r.status, 201) << r.body;
    return r.json()["id"];
  }
  std::unique_ptr<ControllerProcess> controller;
};

TEST_F(Events, JobChangesStreamInOrderWithIdsAndAResumeGetsExactlyWhatFollowed) {
  SseClient stream(controller->port(), "/api/v1/events", ControllerProcess::kAuditorToken);
  ASSERT_EQ(stream.status(), 200);
  EXPECT_NE(stream.head().find("Content-Type: text/event-stream"), std::string::npos) << stream.head();
  auto id = submit("SN-EVENTS-1");
  auto created = stream.until([&](const SseEvent& e) { return e.data.value("job_id", "") == id; });
  ASSERT_TRUE(created);
  EXPECT_EQ(created->event, "job");
  EXPECT_EQ(created->data["name"], "queued");
  EXPECT_EQ(created->data["serial"], "SN-EVENTS-1");
  auto provisioning = stream.until([&](const SseEvent& e) { return e.data.value("name", "") == "provisioning"; });
  ASSERT_TRUE(provisioning);
  EXPECT_EQ(provisioning->data["from"], "queued");
  EXPECT_GT(std::stoll(provisioning->id), std::stoll(created->id));

  // Everything after the `created` event, from the store, on a new connection.
  ASSERT_EQ(controller->post("/api/v1/jobs/" + id + "/cancel", "").status, 200);
  auto canceled = stream.until([&](const SseEvent& e) { return e.data.value("name", "") == "canceled"; });
  ASSERT_TRUE(canceled);
  SseClient resumed(controller->port(), "/api/v1/events", ControllerProcess::kAuditorToken,
                    "Last-Event-ID: " + created->id + "\r\n");
  ASSERT_EQ(resumed.status(), 200);
  auto again = resumed.until([&](const SseEvent& e) { return e.id == canceled->id; });
  ASSERT_TRUE(again);
  // The same events, the same ids, none repeated, none missing.
  std::vector<std::string> first, second;
  bool after = false;
  for (const auto& e : stream.seen) {
    if (after) first.push_back(e.id);
    if (e.id == created->id) after = true;
  }
  for (const auto& e : resumed.seen) second.push_back(e.id);
  EXPECT_EQ(first, second);
}

TEST_F(Events, AJobFilterSeesOnlyThatJobAndIdleStreamsGetHeartbeats) {
  auto a = submit("SN-EVENTS-A");
  SseClient nobody(controller->port(), "/api/v1/events?job=placeholder", ControllerProcess::kAdminToken);
  ASSERT_EQ(nobody.status(), 200);
  auto b = submit("SN-EVENTS-B");
  SseClient stream(controller->port(), "/api/v1/events?job=" + b + "&last_event_id=0", ControllerProcess::kAdminToken);
  ASSERT_EQ(stream.status(), 200);
  ASSERT_EQ(controller->post("/api/v1/jobs/" + a + "/cancel", "").status, 200);
  ASSERT_EQ(controller->post("/api/v1/jobs/" + b + "/cancel", "").status, 200);
  ASSERT_TRUE(stream.until([&](const SseEvent& e) { return e.data.value("name", "") == "canceled"; }));
  for (const auto& e : stream.seen) EXPECT_EQ(e.data["job_id"], b) << e.data.dump();
  // From 0: the job's whole history, its creation first.
  ASSERT_FALSE(stream.seen.empty());
  EXPECT_EQ(stream.seen.front().data["name"], "queued");
  // Nothing for a job that does not exist; heartbeats keep the stream alive.
  EXPECT_FALSE(nobody.next(1500));
  EXPECT_GE(nobody.comments, 2);
}

TEST_F(Events, TheStreamNeedsATokenAndRefusesBadParametersBeforeStreaming) {
  SseClient anonymous(controller->port(), "/api/v1/events", "");
  EXPECT_EQ(anonymous.status(), 401);
  SseClient wrong(controller->port(), "/api/v1/events", "not-a-token");
  EXPECT_EQ(wrong.status(), 401);
  SseClient bad_id(controller->port(), "/api/v1/events", ControllerProcess::kAdminToken, "Last-Event-ID: soon\r\n");
  EXPECT_EQ(bad_id.status(), 400);
  EXPECT_NE(bad_id.body_so_far().find("Last-Event-ID"), std::string::npos) << bad_id.body_so_far();
  SseClient unknown(controller->port(), "/api/v1/events?jobs=x", ControllerProcess::kAdminToken);
  EXPECT_EQ(unknown.status(), 400);
}

TEST_F(Events, AConsumerThatReadsNothingSlowsNothingElse) {
  // A stream opened and never read, while many changes are written: the API goes on answering,
  // and the other stream gets every event.
  SseClient stuck(controller->port(), "/api/v1/events", ControllerProcess::kAdminToken);
  SseClient live(controller->port(), "/api/v1/events", ControllerProcess::kAdminToken);
  ASSERT_EQ(live.status(), 200);
  std::vector<std::string> ids;
  for (int i = 0; i < 60; ++i) ids.push_back(submit("SN-FLOOD-" + std::to_string(i)));
  for (const auto& id : ids) ASSERT_EQ(controller->post("/api/v1/jobs/" + id + "/cancel", "").status, 200);
  std::set<std::string> canceled;
  ASSERT_TRUE(live.until([&](const SseEvent& e) {
    if (e.data.value("name", "") == "canceled") canceled.insert(e.data["job_id"].get<std::string>());
    return canceled.size() == ids.size();
  }, 30000));
  EXPECT_EQ(controller->get("/healthz").status, 200);
}

TEST_F(Events, FleetChangesAreOnTheStreamFilteredByFleet) {
  auto server = controller->post("/api/v1/servers", R"({"serial":"SN-EV-FLEET","bmc":{"address":"http://127.0.0.1:1"}})");
  ASSERT_EQ(server.status, 201) << server.body;
  SseClient all(controller->port(), "/api/v1/events", ControllerProcess::kAdminToken);
  ASSERT_EQ(all.status(), 200);
  auto fleet = controller->post("/api/v1/fleets", nlohmann::json{{"servers", {server.json()["id"]}},
                                                                 {"recipe", linux_recipe()}}.dump());
  ASSERT_EQ(fleet.status, 201) << fleet.body;
  auto fleet_id = fleet.json()["id"].get<std::string>();
  auto created = all.until([&](const SseEvent& e) { return e.event == "fleet" && e.data["kind"] == "created"; });
  ASSERT_TRUE(created);
  EXPECT_EQ(created->data["fleet_id"], fleet_id);
  // The fleet's job carries the fleet id, so ?fleet= follows the jobs too.
  SseClient by_fleet(controller->port(), "/api/v1/events?fleet=" + fleet_id + "&last_event_id=0",
                     ControllerProcess::kAdminToken);
  ASSERT_EQ(by_fleet.status(), 200);
  auto job_event = by_fleet.until([&](const SseEvent& e) { return e.event == "job"; });
  ASSERT_TRUE(job_event);
  ASSERT_EQ(controller->post("/api/v1/fleets/" + fleet_id + "/cancel", "").status, 200);
  ASSERT_TRUE(by_fleet.until([&](const SseEvent& e) { return e.event == "fleet" && e.data.value("name", "") == "canceled"; }));
  for (const auto& e : by_fleet.seen) EXPECT_EQ(e.data["fleet_id"], fleet_id) << e.data.dump();
}
