// The Redfish client against the mock BMC over real HTTP on 127.0.0.1: one test per fault a
// real BMC throws at us, each asserting the outcome AND the request sequence the BMC saw.
// Time is virtual: the sleeper records every requested delay, advances the clock by it and
// really sleeps 1/200 of it, so the real retry policy runs in milliseconds.
#include <gtest/gtest.h>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <optional>
#include <atomic>
#include <chrono>
#include <fstream>
#include <mutex>
#include <numeric>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "controller/logging/logger.hpp"
#include "controller/redfish/http_transport.hpp"
#include "controller/redfish/redfish_client.hpp"
#include "tests/support/controller_process.hpp"
#include "tests/support/mock_bmc.hpp"

namespace provisioner::redfish {
namespace {

using test::MockAction;
using test::MockBmc;
using test::MockBmcOptions;
using test::RecordedRequest;

class TestTime final : public Clock, public Sleeper {
 public:
  std::int64_t now_ms() const override { return real_.now_ms() + offset_.load(); }
  void sleep_ms(std::int64_t ms) override {
    {
      std::lock_guard lock(mu_);
      sleeps_.push_back(ms);
    }
    offset_ += ms;
    std::this_thread::sleep_for(std::chrono::microseconds(ms * 5));
  }
  std::vector<std::int64_t> sleeps() const {
    std::lock_guard lock(mu_);
    return sleeps_;
  }

 private:
  SystemClock real_;
  std::atomic<std::int64_t> offset_{0};
  mutable std::mutex mu_;
  std::vector<std::int64_t> sleeps_;
};

const std::string kMaint = "http://10.9.8.7:8080/artifacts/maintenance.iso";
const std::string kTask = "http://10.9.8.7:8080/artifacts/task-0001.iso";

RedfishOptions fast_options() {
  RedfishOptions o;
  o.connect_timeout_ms = 1000;
  o.request_timeout_ms = 2000;
  return o;
}

// Calls that change something (everything but GET), as "METHOD path status".
std::vector<std::string> mutations(const MockBmc& bmc) {
  std::vector<std::string> out;
  for (const auto& s : bmc.sequence())
    if (s.rfind("GET ", 0) != 0) out.push_back(s);
  return out;
}

std::vector<RecordedRequest> matching(const MockBmc& bmc, const std::string& method, const std::string& path_part) {
  std::vector<RecordedRequest> out;
  for (const auto& r : bmc.requests())
    if (r.method == method && r.path.find(path_part) != std::string::npos) out.push_back(r);
  return out;
}

std::string dump(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += "  " + x + "\n";
  return s;
}

struct Rig {
  explicit Rig(MockBmcOptions o = {}, RedfishOptions ro = fast_options())
      : bmc(std::move(o)), ctx(time, time, ro) {}
  BmcEndpoint endpoint(const std::string& profile = "auto") const {
    BmcEndpoint e;
    e.address = bmc.address();
    e.username = "admin";
    e.password = "mock-bmc-password";
    e.verify_tls = false;
    e.profile = profile;
    return e;
  }
  MockBmc bmc;
  TestTime time;
  RedfishContext ctx;
};

// One virtual CD slot, as an iDRAC has.
MockBmcOptions single_cd() {
  MockBmcOptions o;
  o.slots = {{"CD1", {"CD", "DVD"}}};
  return o;
}

const std::string kSessions = "POST /redfish/v1/SessionService/Sessions 201";
const std::string kSys = "/redfish/v1/Systems/1";
const std::string kVm = "/redfish/v1/Systems/1/VirtualMedia";

std::string insert_of(const std::string& slot, int status, const std::string& vm = kVm) {
  return "POST " + vm + "/" + slot + "/Actions/VirtualMedia.InsertMedia " + std::to_string(status);
}
std::string eject_of(const std::string& slot, int status, const std::string& vm = kVm) {
  return "POST " + vm + "/" + slot + "/Actions/VirtualMedia.EjectMedia " + std::to_string(status);
}

// ------------------------------------------------------------------ happy paths

TEST(RedfishFlow, HappyPathDualCd) {
  Rig rig;
  {
    BmcClient client(rig.ctx, rig.endpoint());
    auto facts = client.discover();
    ASSERT_TRUE(facts) << facts.error().message;
    EXPECT_EQ(facts->profile, "generic");
    EXPECT_EQ(facts->system_uri, kSys);
    EXPECT_EQ(facts->serial, "MOCK0001");
    ASSERT_EQ(facts->manager_uris, std::vector<std::string>{"/redfish/v1/Managers/BMC"});
    EXPECT_EQ(facts->slots.size(), 3u);
    EXPECT_EQ(facts->power_state, "On");

    auto ins = client.insert_media({{kMaint, MediaKind::cd}, {kTask, MediaKind::cd}});
    ASSERT_TRUE(ins) << ins.error().message;
    EXPECT_EQ((*ins)[0].slot_uri, kVm + "/CD1");
    EXPECT_EQ((*ins)[1].slot_uri, kVm + "/CD2");
    auto boot = client.set_boot_once_cd(BootMode::uefi);
    ASSERT_TRUE(boot) << boot.error().message;
    EXPECT_EQ(boot->target, "Cd");
    EXPECT_EQ(boot->enabled, "Once");
    EXPECT_EQ(boot->mode, "UEFI");
    auto reset = client.power_cycle_into_boot();
    ASSERT_TRUE(reset) << reset.error().message;
    EXPECT_EQ(reset->issued, std::vector<std::string>{"ForceRestart"});
    ASSERT_EQ(rig.bmc.boots().size(), 1u);
    EXPECT_EQ(rig.bmc.boots()[0].boot_target, "Cd");
    EXPECT_EQ(rig.bmc.boots()[0].media, (std::vector<std::string>{kMaint, kTask}));

    ASSERT_TRUE(client.cleanup({kMaint, kTask}));
    EXPECT_FALSE(rig.bmc.slot_inserted("CD1"));
    EXPECT_FALSE(rig.bmc.slot_inserted("CD2"));
    EXPECT_EQ(rig.bmc.boot().target, "Hdd");
    EXPECT_EQ(rig.bmc.boot().enabled, "Once");
  }
  EXPECT_EQ(rig.bmc.live_sessions(), 0);
  std::vector<std::string> want = {kSessions,
                                   insert_of("CD1", 204),
                                   insert_of("CD2", 204),
                                   "PATCH " + kSys + " 204",
                                   "POST " + kSys + "/Actions/ComputerSystem.Reset 204",
                                   eject_of("CD1", 204),
                                   eject_of("CD2", 204),
                                   "PATCH " + kSys + " 204",
                                   "DELETE /redfish/v1/SessionService/Sessions/1 204"};
  EXPECT_EQ(mutations(rig.bmc), want) << dump(rig.bmc.sequence());

  // Headers every request carries; secrets never recorded in the clear.
  for (const auto& r : rig.bmc.requests()) {
    EXPECT_EQ(r.header("odata-version"), "4.0") << r.path;
    EXPECT_EQ(r.header("accept-encoding"), "identity") << r.path;
    EXPECT_EQ(r.header("connection"), "") << "keep-alive (HTTP/1.1 default): " << r.path;
    EXPECT_EQ(r.header("authorization"), "") << "session auth, no basic: " << r.path;
    EXPECT_EQ(r.body.find("mock-bmc-password"), std::string::npos);
  }
  auto patch = matching(rig.bmc, "PATCH", kSys);
  ASSERT_EQ(patch.size(), 2u);
  EXPECT_FALSE(patch[0].header("if-match").empty());
  auto body = nlohmann::json::parse(patch[0].body);
  EXPECT_EQ(body["Boot"]["BootSourceOverrideTarget"], "Cd");
  EXPECT_EQ(body["Boot"]["BootSourceOverrideEnabled"], "Once");
  EXPECT_FALSE(body["Boot"].contains("BootSourceOverrideMode")) << "mode already UEFI: not sent";
  auto insert = matching(rig.bmc, "POST", "InsertMedia");
  EXPECT_EQ(nlohmann::json::parse(insert[0].body), (nlohmann::json{{"Image", kMaint}}))
      << "no Inserted/WriteProtected unless needed";
  auto eject = matching(rig.bmc, "POST", "EjectMedia");
  EXPECT_EQ(eject[0].body, "") << "EjectMedia with no body first";
}

// The reset step reads the power state from the read-back that verified the boot override
// (nothing was sent in between, a moment ago): one GET of the System between the PATCH and
// the reset. A read-back older than a second is not trusted: the System is read again.
TEST(RedfishFlow, TheResetTrustsOnlyAFreshReadBackOfTheSystem) {
  for (bool stale : {false, true}) {
    Rig rig;
    BmcClient client(rig.ctx, rig.endpoint());
    ASSERT_TRUE(client.insert_media({{kMaint, MediaKind::cd}}));
    ASSERT_TRUE(client.set_boot_once_cd(BootMode::keep));
    if (stale) rig.time.sleep_ms(1500);
    rig.bmc.clear_requests();
    ASSERT_TRUE(client.power_cycle_into_boot());
    std::vector<std::string> want = {"POST " + kSys + "/Actions/ComputerSystem.Reset 204", "GET " + kSys + " 200"};
    if (stale) want.insert(want.begin(), "GET " + kSys + " 200");
    EXPECT_EQ(rig.bmc.sequence(), want) << (stale ? "stale read-back\n" : "fresh read-back\n") << dump(rig.bmc.sequence());
  }
}

// The cleanup after the install starts from the topology the boot half discovered: it logs
// in and reads the slot it ejects, and reads no service root, Systems, Manager or
// VirtualMedia collection again.
TEST(RedfishFlow, ACleanupFromAKnownTopologyDiscoversNothingAgain) {
  Rig rig(single_cd());
  std::shared_ptr<const BmcTopology> known;
  {
    BmcClient boot(rig.ctx, rig.endpoint());
    ASSERT_TRUE(boot.insert_media({{kMaint, MediaKind::cd}}));
    ASSERT_TRUE(boot.set_boot_once_cd(BootMode::keep));
    ASSERT_TRUE(boot.power_cycle_into_boot());
    known = boot.topology();
  }
  ASSERT_NE(known, nullptr);
  rig.bmc.clear_requests();
  {
    BmcClient cleanup(rig.ctx, rig.endpoint());
    cleanup.reuse_topology(known);
    ASSERT_TRUE(cleanup.cleanup({kMaint}));
  }
  EXPECT_FALSE(rig.bmc.slot_inserted("CD1"));
  EXPECT_EQ(rig.bmc.boot().target, "Hdd");
  std::vector<std::string> want = {kSessions,
                                   "GET " + kVm + "/CD1 200",
                                   eject_of("CD1", 204),
                                   "GET " + kSys + " 200",
                                   "PATCH " + kSys + " 204",
                                   "DELETE /redfish/v1/SessionService/Sessions/2 204"};
  EXPECT_EQ(rig.bmc.sequence(), want) << dump(rig.bmc.sequence());
}

// A known slot that is gone (the BMC's firmware changed under the job) means the topology is
// out of date: the client discovers the BMC again and ejects from what it finds now. One
// that was discovered for another BMC is not used at all.
TEST(RedfishFlow, AnOutOfDateOrForeignTopologyIsDiscoveredAgain) {
  Rig rig(single_cd());
  std::shared_ptr<const BmcTopology> known;
  {
    BmcClient boot(rig.ctx, rig.endpoint());
    ASSERT_TRUE(boot.insert_media({{kMaint, MediaKind::cd}}));
    known = boot.topology();
  }
  auto gone = std::make_shared<std::atomic<int>>(1);  // the first read of the slot: 404
  rig.bmc.set_hook([gone](const RecordedRequest& r, int) {
    if (r.method == "GET" && r.path == kVm + "/CD1" && gone->fetch_sub(1) > 0)
      return MockAction::respond(404, R"({"error":{"code":"Base.1.8.ResourceMissingAtURI"}})");
    return MockAction::pass();
  });
  rig.bmc.clear_requests();
  {
    BmcClient cleanup(rig.ctx, rig.endpoint());
    cleanup.reuse_topology(known);
    auto done = cleanup.cleanup({kMaint});
    ASSERT_TRUE(done) << done.error().message;
  }
  EXPECT_FALSE(rig.bmc.slot_inserted("CD1"));
  auto seq = rig.bmc.sequence();
  ASSERT_GE(seq.size(), 4u) << dump(seq);
  EXPECT_EQ(seq[1], "GET " + kVm + "/CD1 404") << dump(seq);
  EXPECT_EQ(seq[2], "GET /redfish/v1/ 200") << "discovered again\n" << dump(seq);
  EXPECT_NE(std::find(seq.begin(), seq.end(), "GET " + kVm + " 200"), seq.end()) << dump(seq);

  // Another BMC's topology: ignored, this client discovers its own.
  MockBmc other(single_cd());
  BmcEndpoint e = rig.endpoint();
  e.address = other.address();
  BmcClient foreign(rig.ctx, e);
  foreign.reuse_topology(known);
  ASSERT_TRUE(foreign.insert_media({{kMaint, MediaKind::cd}}));
  EXPECT_EQ(other.sequence().front(), "GET /redfish/v1/ 200") << dump(other.sequence());
}

TEST(RedfishFlow, HappyPathCdUsb) {
  Rig rig;
  BmcClient client(rig.ctx, rig.endpoint());
  auto ins = client.insert_media({{kMaint, MediaKind::cd}, {kTask, MediaKind::usb}});
  ASSERT_TRUE(ins) << ins.error().message;
  EXPECT_EQ((*ins)[1].slot_uri, kVm + "/USB1");
  EXPECT_EQ(rig.bmc.slot_image("CD1"), kMaint);
  EXPECT_EQ(rig.bmc.slot_image("USB1"), kTask);
  EXPECT_FALSE(rig.bmc.slot_inserted("CD2"));
  EXPECT_EQ(mutations(rig.bmc), (std::vector<std::string>{kSessions, insert_of("CD1", 204), insert_of("USB1", 204)}));
  ASSERT_TRUE(client.cleanup({kMaint, kTask}));
  EXPECT_FALSE(rig.bmc.slot_inserted("USB1"));
}

TEST(RedfishFlow, RepeatedStepsAreIdempotent) {
  Rig rig;
  BmcClient client(rig.ctx, rig.endpoint());
  ASSERT_TRUE(client.insert_media({{kMaint, MediaKind::cd}, {kTask, MediaKind::cd}}));
  ASSERT_TRUE(client.set_boot_once_cd(BootMode::uefi));
  auto before = mutations(rig.bmc).size();
  auto again = client.insert_media({{kMaint, MediaKind::cd}, {kTask, MediaKind::cd}});
  ASSERT_TRUE(again);
  EXPECT_TRUE((*again)[0].already_present);
  EXPECT_TRUE((*again)[1].already_present);
  auto boot = client.set_boot_once_cd(BootMode::uefi);
  ASSERT_TRUE(boot);
  EXPECT_EQ(boot->patches, 0);
  EXPECT_EQ(mutations(rig.bmc).size(), before) << dump(rig.bmc.sequence());
  ASSERT_TRUE(client.cleanup({kMaint, kTask}));
  auto after_cleanup = mutations(rig.bmc).size();
  ASSERT_TRUE(client.cleanup({kMaint, kTask}));
  EXPECT_EQ(mutations(rig.bmc).size(), after_cleanup) << "second cleanup: nothing left to do";
}

// ------------------------------------------------------------------ faults

TEST(RedfishFaults, ServerErrorBurstIsRetriedForGet) {
  Rig rig;
  std::atomic<int> failures{0};
  rig.bmc.set_hook([&](const RecordedRequest& r, int) {
    if (r.method == "GET" && r.path == kSys && failures < 3) {
      ++failures;
      return MockAction::respond(503, R"({"error":{"message":"busy"}})");
    }
    return MockAction::pass();
  });
  BmcClient client(rig.ctx, rig.endpoint());
  auto facts = client.discover();
  ASSERT_TRUE(facts) << facts.error().message;
  auto seq = rig.bmc.sequence();
  std::vector<std::string> sys_gets;
  for (const auto& s : seq)
    if (s.rfind("GET " + kSys + " ", 0) == 0) sys_gets.push_back(s);
  ASSERT_GE(sys_gets.size(), 4u);
  EXPECT_EQ(std::vector<std::string>(sys_gets.begin(), sys_gets.begin() + 4),
            (std::vector<std::string>{"GET " + kSys + " 503", "GET " + kSys + " 503", "GET " + kSys + " 503",
                                      "GET " + kSys + " 200"}));
  EXPECT_EQ(rig.time.sleeps(), (std::vector<std::int64_t>{1000, 2000, 3000})) << "backoff, capped";
}

TEST(RedfishFaults, ServerErrorOnInsertIsRetriedThreeTimes) {
  Rig rig;
  std::atomic<int> failures{0};
  rig.bmc.set_hook([&](const RecordedRequest& r, int) {
    if (r.path.find("CD1/Actions/VirtualMedia.InsertMedia") != std::string::npos && failures < 2) {
      ++failures;
      return MockAction::respond(500, R"({"error":{"message":"still ejecting"}})");
    }
    return MockAction::pass();
  });
  BmcClient client(rig.ctx, rig.endpoint());
  auto ins = client.insert_media({{kMaint, MediaKind::cd}});
  ASSERT_TRUE(ins) << ins.error().message;
  EXPECT_EQ(mutations(rig.bmc),
            (std::vector<std::string>{kSessions, insert_of("CD1", 500), insert_of("CD1", 500), insert_of("CD1", 204)}));
  EXPECT_EQ(rig.time.sleeps(), (std::vector<std::int64_t>{3000, 3000}));
}

TEST(RedfishFaults, PersistentFailureOpensTheCircuitBreaker) {
  RedfishOptions ro = fast_options();
  ro.breaker_threshold = 4;
  ro.get_attempts = 10;
  Rig rig({}, ro);
  rig.bmc.set_hook([&](const RecordedRequest& r, int) {
    if (r.method == "GET" && r.path == kSys) return MockAction::respond(503);
    return MockAction::pass();
  });
  BmcClient client(rig.ctx, rig.endpoint());
  auto facts = client.discover();
  ASSERT_FALSE(facts);
  EXPECT_EQ(failure_code(facts.error()), FailureCode::circuit_open) << facts.error().message;
  EXPECT_NE(facts.error().message.find("BMC " + rig.bmc.address()), std::string::npos);
  auto count_sys = [&] {
    auto s = rig.bmc.sequence();
    return std::count(s.begin(), s.end(), "GET " + kSys + " 503");
  };
  EXPECT_EQ(count_sys(), 4) << "stops after the threshold instead of 10 attempts";
  // While open, nothing reaches the BMC.
  auto before = rig.bmc.requests().size();
  auto again = client.power_state();
  ASSERT_FALSE(again);
  EXPECT_EQ(failure_code(again.error()), FailureCode::circuit_open);
  EXPECT_EQ(rig.bmc.requests().size(), before);
  // Another BMC in the same context is unaffected.
  MockBmc other;
  BmcEndpoint e = rig.endpoint();
  e.address = other.address();
  BmcClient other_client(rig.ctx, e);
  EXPECT_TRUE(other_client.discover());
  // After the open period a trial call goes out; the BMC recovered, the breaker closes.
  rig.bmc.set_hook(nullptr);
  rig.time.sleep_ms(ro.breaker_open_ms);
  EXPECT_TRUE(client.power_state());
}

TEST(RedfishFaults, RateLimitHonoursRetryAfter) {
  Rig rig;
  std::atomic<int> limited{0};
  rig.bmc.set_hook([&](const RecordedRequest& r, int) {
    if (r.path.find("InsertMedia") != std::string::npos && limited < 2) {
      ++limited;
      return MockAction::respond(429, "", {{"Retry-After", "7"}});
    }
    return MockAction::pass();
  });
  BmcClient client(rig.ctx, rig.endpoint());
  auto ins = client.insert_media({{kMaint, MediaKind::cd}});
  ASSERT_TRUE(ins) << ins.error().message;
  EXPECT_EQ(mutations(rig.bmc),
            (std::vector<std::string>{kSessions, insert_of("CD1", 429), insert_of("CD1", 429), insert_of("CD1", 204)}));
  EXPECT_EQ(rig.time.sleeps(), (std::vector<std::int64_t>{7000, 7000}));
}

TEST(RedfishFaults, AnswersSlowerThanTheTimeout) {
  RedfishOptions ro = fast_options();
  ro.request_timeout_ms = 150;
  Rig rig({}, ro);
  std::atomic<int> slow_gets{0}, slow_posts{0};
  rig.bmc.set_hook([&](const RecordedRequest& r, int) {
    if (r.method == "GET" && r.path == kSys && slow_gets < 2) {
      ++slow_gets;
      return MockAction::delay(600);
    }
    // The BMC does the insert but answers too late: the client must look, not re-insert.
    if (r.path.find("CD1/Actions/VirtualMedia.InsertMedia") != std::string::npos && slow_posts < 1) {
      ++slow_posts;
      return MockAction::slow_answer(600);
    }
    return MockAction::pass();
  });
  BmcClient client(rig.ctx, rig.endpoint());
  auto t0 = std::chrono::steady_clock::now();
  auto ins = client.insert_media({{kMaint, MediaKind::cd}});
  ASSERT_TRUE(ins) << ins.error().message;
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(ms, 1500) << "timeouts cut the waits short";
  EXPECT_EQ(slow_gets.load(), 2);
  auto inserts = matching(rig.bmc, "POST", "InsertMedia");
  EXPECT_EQ(inserts.size(), 1u) << "timed-out insert verified by reading the slot, not repeated";
  EXPECT_EQ(rig.bmc.slot_image("CD1"), kMaint);
  // The read-back came after the timed-out POST.
  auto seq = rig.bmc.sequence();
  auto post = std::find_if(seq.begin(), seq.end(), [](const std::string& s) { return s.find("InsertMedia") != std::string::npos; });
  ASSERT_NE(post, seq.end());
  ASSERT_NE(post + 1, seq.end());
  EXPECT_EQ(*(post + 1), "GET " + kVm + "/CD1 200");
}

TEST(RedfishFaults, TcpResetsAreRetried) {
  Rig rig;
  std::atomic<int> resets{0}, post_resets{0};
  rig.bmc.set_hook([&](const RecordedRequest& r, int) {
    if (r.method == "GET" && r.path == kVm && resets < 2) {
      ++resets;
      return MockAction::reset();
    }
    if (r.path.find("InsertMedia") != std::string::npos && post_resets < 1) {
      ++post_resets;
      return MockAction::reset();  // before doing anything
    }
    return MockAction::pass();
  });
  BmcClient client(rig.ctx, rig.endpoint());
  auto ins = client.insert_media({{kMaint, MediaKind::cd}});
  ASSERT_TRUE(ins) << ins.error().message;
  auto seq = rig.bmc.sequence();
  EXPECT_EQ(std::count(seq.begin(), seq.end(), "GET " + kVm + " -1"), 2);
  EXPECT_EQ(mutations(rig.bmc), (std::vector<std::string>{kSessions, insert_of("CD1", -1), insert_of("CD1", 204)}));
  // Between the reset insert and the retry: the client looked at the slot.
  auto first = std::find(seq.begin(), seq.end(), insert_of("CD1", -1));
  EXPECT_EQ(*(first + 1), "GET " + kVm + "/CD1 200");
}

TEST(RedfishFaults, SessionExpiryMidFlowLogsInOnceAndReplays) {
  Rig rig;
  std::atomic<bool> expired{false};
  rig.bmc.set_hook([&](const RecordedRequest& r, int) {
    if (r.method == "PATCH" && !expired.exchange(true)) rig.bmc.expire_sessions();
    return MockAction::pass();
  });
  BmcClient client(rig.ctx, rig.endpoint());
  ASSERT_TRUE(client.insert_media({{kMaint, MediaKind::cd}}));
  auto boot = client.set_boot_once_cd(BootMode::uefi);
  ASSERT_TRUE(boot) << boot.error().message;
  EXPECT_EQ(rig.bmc.boot().target, "Cd");
  EXPECT_EQ(mutations(rig.bmc), (std::vector<std::string>{kSessions, insert_of("CD1", 204), "PATCH " + kSys + " 401",
                                                          "POST /redfish/v1/SessionService/Sessions 201",
                                                          "PATCH " + kSys + " 204"}));
}

TEST(RedfishFaults, UnreachableDuringLoginDoesNotDowngradeToBasic) {
  Rig rig;
  std::atomic<bool> down{true};
  rig.bmc.set_hook([&](const RecordedRequest& r, int) {
    if (down && r.path == "/redfish/v1/SessionService/Sessions") return MockAction::reset();
    return MockAction::pass();
  });
  BmcClient client(rig.ctx, rig.endpoint());
  auto first = client.discover();
  ASSERT_FALSE(first);
  EXPECT_EQ(failure_code(first.error()), FailureCode::transport) << first.error().message;
  down = false;
  auto second = client.discover();
  ASSERT_TRUE(second) << second.error().message;
  for (const auto& r : matching(rig.bmc, "GET", "/redfish/v1/Systems")) EXPECT_EQ(r.header("authorization"), "");
  EXPECT_EQ(matching(rig.bmc, "POST", "/Sessions").back().status, 201);
}

TEST(RedfishFaults, BadCredentialsFailWithoutLeakingThem) {
  Rig rig;
  BmcEndpoint e = rig.endpoint();
  e.password = "wrong-password-XYZ";
  test::TempDir dir;
  auto log_path = dir.path() / "redfish.log";
  {
    Logger logger(Logger::Format::json, "debug", log_path);
    RedfishContext ctx(rig.time, rig.time, fast_options(), &logger);
    BmcClient client(ctx, e, Logger::job_fields("job-42", "MOCK0001"));
    auto facts = client.discover();
    ASSERT_FALSE(facts);
    EXPECT_EQ(failure_code(facts.error()), FailureCode::auth_failed);
    EXPECT_EQ(facts.error().message.find("wrong-password-XYZ"), std::string::npos);
    EXPECT_NE(facts.error().message.find("401"), std::string::npos) << facts.error().message;
  }
  // Session refused -> basic fallback -> 401 -> stop (no loop).
  EXPECT_EQ(mutations(rig.bmc), (std::vector<std::string>{"POST /redfish/v1/SessionService/Sessions 401"}));
  std::ifstream in(log_path);
  std::stringstream ss;
  ss << in.rdbuf();
  EXPECT_EQ(ss.str().find("wrong-password-XYZ"), std::string::npos);
  EXPECT_NE(ss.str().find("session login failed"), std::string::npos);
  EXPECT_NE(ss.str().find("job-42"), std::string::npos) << "log lines carry the job";
}

TEST(RedfishFaults, NoSessionServiceFallsBackToBasicAuth) {
  MockBmcOptions o;
  o.sessions = false;
  Rig rig(o);
  BmcClient client(rig.ctx, rig.endpoint());
  ASSERT_TRUE(client.insert_media({{kMaint, MediaKind::cd}}));
  auto reqs = matching(rig.bmc, "POST", "InsertMedia");
  ASSERT_EQ(reqs.size(), 1u);
  EXPECT_EQ(reqs[0].header("authorization"), "<redacted>");
  EXPECT_EQ(mutations(rig.bmc), (std::vector<std::string>{"POST /redfish/v1/SessionService/Sessions 405",
                                                          insert_of("CD1", 204)}));
}

TEST(RedfishFaults, StaleEtagFallsBackToNoIfMatch) {
  Rig rig;
  std::atomic<bool> bumped{false};
  rig.bmc.set_hook([&](const RecordedRequest& r, int) {
    if (r.method == "PATCH" && !bumped.exchange(true)) rig.bmc.bump_etag(kSys);  // someone else changed it
    return MockAction::pass();
  });
  BmcClient client(rig.ctx, rig.endpoint());
  ASSERT_TRUE(client.set_boot_once_cd(BootMode::uefi));
  auto patches = matching(rig.bmc, "PATCH", kSys);
  ASSERT_EQ(patches.size(), 2u);
  EXPECT_EQ(patches[0].status, 412);
  EXPECT_EQ(patches[0].header("if-match"), "\"1\"");
  EXPECT_EQ(patches[1].status, 204);
  EXPECT_EQ(patches[1].header("if-match"), "");
  EXPECT_EQ(rig.bmc.boot().target, "Cd");
}

TEST(RedfishFaults, WeakEtagIsRetriedStrong) {
  MockBmcOptions o;
  o.weak_etags = true;
  Rig rig(o);
  BmcClient client(rig.ctx, rig.endpoint());
  ASSERT_TRUE(client.set_boot_once_cd(BootMode::uefi));
  auto patches = matching(rig.bmc, "PATCH", kSys);
  ASSERT_EQ(patches.size(), 2u);
  EXPECT_EQ(patches[0].header("if-match"), "W/\"1\"");
  EXPECT_EQ(patches[0].status, 412);
  EXPECT_EQ(patches[1].header("if-match"), "\"1\"");
  EXPECT_EQ(patches[1].status, 204);
}

TEST(RedfishFaults, MediaAlreadyInsertedIsLeftAlone) {
  Rig rig;
  rig.bmc.set_slot("CD2", kMaint, true);                          // ours, from before a crash
  rig.bmc.set_slot("CD1", "http://old/previous-job.iso", true);  // stale, from another job
  BmcClient client(rig.ctx, rig.endpoint());
  auto ins = client.insert_media({{kMaint, MediaKind::cd}, {kTask, MediaKind::cd}});
  ASSERT_TRUE(ins) << ins.error().message;
  EXPECT_TRUE((*ins)[0].already_present);
  EXPECT_EQ((*ins)[0].slot_uri, kVm + "/CD2");
  EXPECT_FALSE((*ins)[1].already_present);
  EXPECT_EQ(rig.bmc.slot_image("CD1"), kTask);
  EXPECT_EQ(mutations(rig.bmc), (std::vector<std::string>{kSessions, eject_of("CD1", 204), insert_of("CD1", 204)}));
}

TEST(RedfishFaults, EjectOfEmptySlotFailingCountsAsEjected) {
  MockBmcOptions o;
  o.eject_empty_fails = true;
  Rig rig(o);
  rig.bmc.set_slot("CD1", "http://old/leftover.iso", false);  // Image left behind, not connected
  BmcClient client(rig.ctx, rig.endpoint());
  auto ins = client.insert_media({{kMaint, MediaKind::cd}});
  ASSERT_TRUE(ins) << ins.error().message;
  EXPECT_EQ(rig.bmc.slot_image("CD1"), kMaint);
  // No body -> 400 -> {} -> 400 -> read back: empty -> insert.
  EXPECT_EQ(mutations(rig.bmc),
            (std::vector<std::string>{kSessions, eject_of("CD1", 400), eject_of("CD1", 400), insert_of("CD1", 204)}));
  auto ejects = matching(rig.bmc, "POST", "EjectMedia");
  EXPECT_EQ(ejects[0].body, "");
  EXPECT_EQ(ejects[1].body, "{}");
}

TEST(RedfishFaults, IloProfileEjectsBeforeEveryInsertWithJsonBody) {
  MockBmcOptions o;
  o.eject_empty_fails = true;
  o.vendor = "HPE";
  o.manufacturer = "HPE";
  Rig rig(o);
  BmcClient client(rig.ctx, rig.endpoint());
  auto facts = client.discover();
  ASSERT_TRUE(facts);
  EXPECT_EQ(facts->profile, "hpe-ilo");
  ASSERT_TRUE(client.insert_media({{kMaint, MediaKind::cd}}));
  EXPECT_EQ(mutations(rig.bmc), (std::vector<std::string>{kSessions, eject_of("CD1", 400), insert_of("CD1", 204)}));
  EXPECT_EQ(matching(rig.bmc, "POST", "EjectMedia")[0].body, "{}");
}

TEST(RedfishFaults, VirtualMediaOnlyUnderManagers) {
  MockBmcOptions o;
  o.vm_under_manager = true;
  Rig rig(o);
  const std::string vm = "/redfish/v1/Managers/BMC/VirtualMedia";
  BmcClient client(rig.ctx, rig.endpoint());
  auto facts = client.discover();
  ASSERT_TRUE(facts) << facts.error().message;
  ASSERT_EQ(facts->slots.size(), 3u);
  EXPECT_TRUE(facts->slots[0].under_manager);
  ASSERT_TRUE(client.insert_media({{kMaint, MediaKind::cd}, {kTask, MediaKind::cd}}));
  ASSERT_TRUE(client.cleanup({kMaint, kTask}));
  EXPECT_EQ(mutations(rig.bmc),
            (std::vector<std::string>{kSessions, insert_of("CD1", 204, vm), insert_of("CD2", 204, vm),
                                      eject_of("CD1", 204, vm), eject_of("CD2", 204, vm), "PATCH " + kSys + " 204"}));
  // Discovery followed the System's Links.ManagedBy, never a vendor path.
  auto seq = rig.bmc.sequence();
  EXPECT_NE(std::find(seq.begin(), seq.end(), "GET /redfish/v1/Managers/BMC 200"), seq.end());
  EXPECT_EQ(std::find(seq.begin(), seq.end(), "GET " + kVm + " 404"), seq.end());
}

TEST(RedfishFaults, NoInsertMediaActionUsesPatch) {
  MockBmcOptions o;
  o.media_actions = false;
  Rig rig(o);
  BmcClient client(rig.ctx, rig.endpoint());
  ASSERT_TRUE(client.insert_media({{kMaint, MediaKind::cd}}));
  ASSERT_TRUE(client.cleanup({kMaint}, {CleanupOptions::BootRestore::none, false}));
  EXPECT_EQ(mutations(rig.bmc), (std::vector<std::string>{kSessions, "PATCH " + kVm + "/CD1 204", "PATCH " + kVm + "/CD1 204"}));
  auto patches = matching(rig.bmc, "PATCH", "/CD1");
  EXPECT_EQ(nlohmann::json::parse(patches[0].body),
            (nlohmann::json{{"Image", kMaint}, {"Inserted", true}, {"WriteProtected", true}}));
  EXPECT_EQ(patches[0].header("if-match"), "\"1\"");
  EXPECT_EQ(nlohmann::json::parse(patches[1].body), (nlohmann::json{{"Image", nullptr}, {"Inserted", false}}));
}

TEST(RedfishFaults, TransferProtocolTypeDemandedIsAdded) {
  MockBmcOptions o;
  o.require_transfer_protocol = true;
  Rig rig(o);
  BmcClient client(rig.ctx, rig.endpoint());
  ASSERT_TRUE(client.insert_media({{kMaint, MediaKind::cd}}));
  auto inserts = matching(rig.bmc, "POST", "InsertMedia");
  ASSERT_EQ(inserts.size(), 2u);
  EXPECT_EQ(inserts[0].status, 400);
  EXPECT_EQ(nlohmann::json::parse(inserts[1].body)["TransferProtocolType"], "HTTP");
}

TEST(RedfishFaults, SecondMediumRefusedIsADistinctError) {
  MockBmcOptions o;
  o.refuse_second_medium = true;
  Rig rig(o);
  BmcClient client(rig.ctx, rig.endpoint());
  auto ins = client.insert_media({{kMaint, MediaKind::cd}, {kTask, MediaKind::cd}});
  ASSERT_FALSE(ins);
  EXPECT_EQ(failure_code(ins.error()), FailureCode::second_medium_refused) << ins.error().message;
  EXPECT_NE(ins.error().message.find("VRM0021"), std::string::npos) << "says why: " << ins.error().message;
  EXPECT_EQ(mutations(rig.bmc), (std::vector<std::string>{kSessions, insert_of("CD1", 204), insert_of("CD2", 400)}));
  // The reconciler falls back to single-iso: the half-done dual insert is cleaned up by it.
  const std::string single = "http://10.9.8.7:8080/artifacts/single-0001.iso";
  auto one = client.insert_media({{single, MediaKind::cd}});
  ASSERT_TRUE(one) << one.error().message;
  EXPECT_EQ(rig.bmc.slot_image("CD1"), single);
  EXPECT_FALSE(rig.bmc.slot_inserted("CD2"));
}

TEST(RedfishFaults, DellProfileRefusesSecondMediumWithoutAsking) {
  MockBmcOptions o;
  o.vendor = "Dell";
  o.manufacturer = "Dell Inc.";
  Rig rig(o);
  BmcClient client(rig.ctx, rig.endpoint());
  auto ins = client.insert_media({{kMaint, MediaKind::cd}, {kTask, MediaKind::usb}});
  ASSERT_FALSE(ins);
  EXPECT_EQ(failure_code(ins.error()), FailureCode::second_medium_refused);
  EXPECT_NE(ins.error().message.find("dell-idrac"), std::string::npos);
  EXPECT_EQ(mutations(rig.bmc), std::vector<std::string>{kSessions});
}

TEST(RedfishFaults, OnceIgnoredFallsBackToContinuous) {
  MockBmcOptions o;
  o.ignore_once = true;
  Rig rig(o);
  BmcClient client(rig.ctx, rig.endpoint());
  ASSERT_TRUE(client.insert_media({{kMaint, MediaKind::cd}}));
  auto boot = client.set_boot_once_cd(BootMode::uefi);
  ASSERT_TRUE(boot) << boot.error().message;
  EXPECT_EQ(boot->enabled, "Continuous");
  EXPECT_EQ(boot->patches, 2);
  auto patches = matching(rig.bmc, "PATCH", kSys);
  ASSERT_EQ(patches.size(), 2u);
  EXPECT_EQ(nlohmann::json::parse(patches[1].body)["Boot"]["BootSourceOverrideEnabled"], "Continuous");
  ASSERT_TRUE(client.power_cycle_into_boot());
  EXPECT_EQ(rig.bmc.boots().back().boot_target, "Cd");
  // Continuous stays until cleanup puts the disk back.
  ASSERT_TRUE(client.cleanup({kMaint}));
  EXPECT_EQ(rig.bmc.boot().target, "Hdd");
}

TEST(RedfishFaults, BootModeResetOnPatchIsReapplied) {
  MockBmcOptions o;
  o.reset_mode_on_target_change = true;
  Rig rig(o);
  BmcClient client(rig.ctx, rig.endpoint());
  auto boot = client.set_boot_once_cd(BootMode::uefi);
  ASSERT_TRUE(boot) << boot.error().message;
  EXPECT_EQ(boot->mode, "UEFI");
  EXPECT_EQ(boot->patches, 2);
  EXPECT_EQ(rig.bmc.boot().mode, "UEFI");
  EXPECT_EQ(rig.bmc.boot().target, "Cd");
  auto patches = matching(rig.bmc, "PATCH", kSys);
  ASSERT_EQ(patches.size(), 2u);
  EXPECT_EQ(nlohmann::json::parse(patches[1].body), (nlohmann::json{{"Boot", {{"BootSourceOverrideMode", "UEFI"}}}}));
  // PATCH, read back, PATCH the mode alone, read back.
  auto seq = rig.bmc.sequence();
  auto first = std::find(seq.begin(), seq.end(), "PATCH " + kSys + " 204");
  ASSERT_NE(first, seq.end());
  EXPECT_EQ(*(first + 1), "GET " + kSys + " 200");
  EXPECT_EQ(*(first + 2), "PATCH " + kSys + " 204");
  EXPECT_EQ(*(first + 3), "GET " + kSys + " 200");
}

TEST(RedfishFaults, AcceptedWithTaskMonitorIsPolled) {
  MockBmcOptions o;
  o.async_actions = true;
  o.task_polls = 2;
  o.task_retry_after_s = 4;
  Rig rig(o);
  BmcClient client(rig.ctx, rig.endpoint());
  ASSERT_TRUE(client.insert_media({{kMaint, MediaKind::cd}}));
  EXPECT_EQ(rig.bmc.slot_image("CD1"), kMaint);
  EXPECT_EQ(mutations(rig.bmc), (std::vector<std::string>{kSessions, insert_of("CD1", 202)}));
  std::vector<std::string> monitor;
  for (const auto& s : rig.bmc.sequence())
    if (s.find("TaskMonitors") != std::string::npos) monitor.push_back(s);
  EXPECT_EQ(monitor, (std::vector<std::string>{"GET /redfish/v1/TaskService/TaskMonitors/1 202",
                                               "GET /redfish/v1/TaskService/TaskMonitors/1 202",
                                               "GET /redfish/v1/TaskService/TaskMonitors/1 200"}));
  EXPECT_EQ(rig.time.sleeps(), (std::vector<std::int64_t>{4000, 4000, 4000})) << "Retry-After honoured";
  auto reset = client.power_cycle_into_boot();
  ASSERT_TRUE(reset) << reset.error().message;
  EXPECT_EQ(rig.bmc.resets(), std::vector<std::string>{"ForceRestart"});
}

TEST(RedfishFaults, FailedTaskIsAnError) {
  MockBmcOptions o;
  o.async_actions = true;
  o.task_polls = 1;
  o.refuse_second_medium = true;
  Rig rig(o);
  rig.bmc.set_slot("CD1", kMaint, true);
  BmcClient client(rig.ctx, rig.endpoint());
  auto ins = client.insert_media({{kMaint, MediaKind::cd}, {kTask, MediaKind::cd}});
  ASSERT_FALSE(ins);
  EXPECT_EQ(failure_code(ins.error()), FailureCode::second_medium_refused) << ins.error().message;
}

// ------------------------------------------------------------------ power, settings, limits

TEST(RedfishPower, OffMachineIsPoweredOnAndPolled) {
  MockBmcOptions o;
  o.power_state = "Off";
  o.power_lag_reads = 2;
  Rig rig(o);
  BmcClient client(rig.ctx, rig.endpoint());
  auto r = client.power_cycle_into_boot();
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->issued, std::vector<std::string>{"On"});
  EXPECT_EQ(r->power_state, "On");
  EXPECT_EQ(rig.time.sleeps().size(), 2u) << "polled PowerState until On";
}

TEST(RedfishPower, WithoutForceRestartUsesForceOffThenOn) {
  MockBmcOptions o;
  o.reset_types = {"On", "ForceOff"};
  o.power_lag_reads = 1;
  Rig rig(o);
  BmcClient client(rig.ctx, rig.endpoint());
  auto r = client.power_cycle_into_boot();
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->issued, (std::vector<std::string>{"ForceOff", "On"}));
  EXPECT_EQ(rig.bmc.resets(), (std::vector<std::string>{"ForceOff", "On"}));
  EXPECT_EQ(rig.bmc.power_state(), "On");
}

TEST(RedfishPower, GracefulShutdownTimesOutThenForces) {
  MockBmcOptions o;
  o.ignore_graceful = true;
  RedfishOptions ro = fast_options();
  ro.prefer_graceful_restart = true;
  ro.graceful_timeout_ms = 10'000;
  ro.power_poll_ms = 2'000;
  Rig rig(o, ro);
  BmcClient client(rig.ctx, rig.endpoint());
  auto r = client.power_cycle_into_boot();
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->issued, (std::vector<std::string>{"GracefulShutdown", "ForceOff", "On"}));
  EXPECT_EQ(rig.bmc.resets(), (std::vector<std::string>{"GracefulShutdown", "ForceOff", "On"}));
  auto sleeps = rig.time.sleeps();
  EXPECT_EQ(std::accumulate(sleeps.begin(), sleeps.end(), std::int64_t{0}), 10'000) << "waited the graceful timeout";
  EXPECT_EQ(rig.bmc.power_state(), "On");
}

TEST(RedfishPower, ResetIsNeverRepeatedAfterAnAmbiguousFailure) {
  RedfishOptions ro = fast_options();
  ro.request_timeout_ms = 150;
  Rig rig({}, ro);
  rig.bmc.set_hook([&](const RecordedRequest& r, int) {
    if (r.path.find("ComputerSystem.Reset") != std::string::npos) return MockAction::delay(500);
    return MockAction::pass();
  });
  BmcClient client(rig.ctx, rig.endpoint());
  auto r = client.power_cycle_into_boot();
  ASSERT_FALSE(r);
  EXPECT_EQ(failure_code(r.error()), FailureCode::transport);
  EXPECT_EQ(matching(rig.bmc, "POST", "ComputerSystem.Reset").size(), 1u);
}

TEST(RedfishBoot, SettingsObjectIsPatchedAndReadBack) {
  MockBmcOptions o;
  o.settings_object = true;
  Rig rig(o);
  BmcClient client(rig.ctx, rig.endpoint());
  auto boot = client.set_boot_once_cd(BootMode::uefi);
  ASSERT_TRUE(boot) << boot.error().message;
  EXPECT_EQ(mutations(rig.bmc), (std::vector<std::string>{kSessions, "PATCH " + kSys + "/Settings 204"}));
  ASSERT_TRUE(client.power_cycle_into_boot());
  EXPECT_EQ(rig.bmc.boots().back().boot_target, "Cd") << "pending settings applied at reset";
}

TEST(RedfishBoot, SupermicroProfileUsesUsbCdAndAlwaysSendsEnabled) {
  MockBmcOptions o;
  o.vendor = "Supermicro";
  o.manufacturer = "Supermicro";
  Rig rig(o);
  rig.bmc.set_boot({"None", "Once", "UEFI"});
  BmcClient client(rig.ctx, rig.endpoint());
  auto boot = client.set_boot_once_cd(BootMode::keep);
  ASSERT_TRUE(boot) << boot.error().message;
  EXPECT_EQ(boot->target, "UsbCd");
  auto body = nlohmann::json::parse(matching(rig.bmc, "PATCH", kSys)[0].body);
  EXPECT_EQ(body["Boot"]["BootSourceOverrideEnabled"], "Once") << "sent although unchanged";
}

// Blade enclosures whose one virtual-media slot is USB-attached offer Usb, not Cd: the virtual
// CD boots as Usb there (the exact PATCH), and the machine boots the inserted medium.
TEST(RedfishBoot, UsbAttachedVirtualMediaWithoutACdTargetBootsUsb) {
  Rig rig(test::usb_attached_blade_options());
  BmcClient client(rig.ctx, rig.endpoint());
  auto ins = client.insert_media({{kMaint, MediaKind::cd}});
  ASSERT_TRUE(ins) << ins.error().message;
  EXPECT_EQ((*ins)[0].slot_uri, kVm + "/RemovableMedia1");
  auto boot = client.set_boot_once_cd(BootMode::keep);
  ASSERT_TRUE(boot) << boot.error().message;
  EXPECT_EQ(boot->target, "Usb");
  EXPECT_EQ(boot->enabled, "Once");
  auto patches = matching(rig.bmc, "PATCH", kSys);
  ASSERT_EQ(patches.size(), 1u) << dump(rig.bmc.sequence());
  EXPECT_EQ(patches[0].body, R"({"Boot":{"BootSourceOverrideEnabled":"Once","BootSourceOverrideTarget":"Usb"}})");
  ASSERT_TRUE(client.power_cycle_into_boot());
  ASSERT_EQ(rig.bmc.boots().size(), 1u);
  EXPECT_EQ(rig.bmc.boots()[0].boot_target, "Usb");
  EXPECT_TRUE(rig.bmc.boots()[0].from_virtual_media);
  EXPECT_EQ(rig.bmc.boots()[0].media, std::vector<std::string>{kMaint});
}

// Usb is only right when the slot holding the boot medium is USB-attached: a CD-only slot
// without a Cd target is an error naming the targets, and Cd stays first wherever it is offered.
TEST(RedfishBoot, UsbIsChosenOnlyForAUsbAttachedSlotAndOnlyWithoutCd) {
  {
    MockBmcOptions o = test::usb_attached_blade_options();
    o.slots = {{"CD1", {"CD", "DVD"}}, {"USB1", {"USBStick"}}};
    Rig rig(o);
    BmcClient client(rig.ctx, rig.endpoint());
    ASSERT_TRUE(client.insert_media({{kMaint, MediaKind::cd}, {kTask, MediaKind::usb}}));
    auto boot = client.set_boot_once_cd(BootMode::keep);
    ASSERT_FALSE(boot) << "booted " << boot->target << ": the USB stick holds the task ISO, not the boot medium";
    EXPECT_EQ(failure_code(boot.error()), FailureCode::not_found);
    EXPECT_NE(boot.error().message.find("Cd"), std::string::npos) << boot.error().message;
    EXPECT_TRUE(matching(rig.bmc, "PATCH", kSys).empty());
  }
  {
    MockBmcOptions o = test::usb_attached_blade_options();
    o.boot_targets = {"None", "Pxe", "Cd", "Hdd", "Usb"};
    Rig rig(o);
    BmcClient client(rig.ctx, rig.endpoint());
    ASSERT_TRUE(client.insert_media({{kMaint, MediaKind::cd}}));
    auto boot = client.set_boot_once_cd(BootMode::keep);
    ASSERT_TRUE(boot) << boot.error().message;
    EXPECT_EQ(boot->target, "Cd");
  }
}

MockBmcOptions idrac_with_oem_import() {
  MockBmcOptions o;
  o.vendor = "Dell";
  o.manufacturer = "Dell Inc.";
  o.manager_id = "iDRAC.Embedded.1";
  o.dell_oem_import = true;
  o.task_retry_after_s = 0;
  return o;
}

TEST(RedfishBoot, DellBootsTheVirtualCdThroughTheOemImport) {
  Rig rig(idrac_with_oem_import());
  BmcClient client(rig.ctx, rig.endpoint());
  ASSERT_TRUE(client.insert_media({{kMaint, MediaKind::cd}}));
  auto boot = client.set_boot_once_cd(BootMode::uefi);
  ASSERT_TRUE(boot) << boot.error().message;
  EXPECT_EQ(boot->target, "VCD-DVD");
  EXPECT_EQ(boot->enabled, "Once");
  const std::string import = "/redfish/v1/Managers/iDRAC.Embedded.1/Actions/Oem/EID_674_Manager.ImportSystemConfiguration";
  auto posts = matching(rig.bmc, "POST", import);
  ASSERT_EQ(posts.size(), 1u);
  auto body = nlohmann::json::parse(posts[0].body);
  EXPECT_EQ(body["ShareParameters"]["Target"], "ALL");
  EXPECT_EQ(body["ImportBuffer"],
            "<SystemConfiguration><Component FQDD=\"iDRAC.Embedded.1\">"
            "<Attribute Name=\"ServerBoot.1#BootOnce\">Enabled</Attribute>"
            "<Attribute Name=\"ServerBoot.1#FirstBootDevice\">VCD-DVD</Attribute>"
            "</Component></SystemConfiguration>");
  EXPECT_TRUE(matching(rig.bmc, "PATCH", kSys).empty()) << "no standard override: Cd may be a physical drive";
  EXPECT_FALSE(matching(rig.bmc, "GET", "/redfish/v1/TaskService/TaskMonitors/").empty()) << "the import job is followed";
  ASSERT_TRUE(client.power_cycle_into_boot());
  ASSERT_EQ(rig.bmc.boots().size(), 1u);
  EXPECT_EQ(rig.bmc.boots()[0].boot_target, "VirtualCd");
  EXPECT_EQ(rig.bmc.boots()[0].media, std::vector<std::string>{kMaint});
}

TEST(RedfishBoot, DellOemImportRefusedFallsBackToTheStandardOverride) {
  Rig rig(idrac_with_oem_import());
  rig.bmc.set_hook([](const RecordedRequest& r, int) {
    return r.path.find("ImportSystemConfiguration") != std::string::npos
               ? MockAction::respond(400, R"({"error":{"code":"Base.1.8.ActionNotSupported","message":"old firmware"}})")
               : MockAction::pass();
  });
  BmcClient client(rig.ctx, rig.endpoint());
  auto boot = client.set_boot_once_cd(BootMode::keep);
  ASSERT_TRUE(boot) << boot.error().message;
  EXPECT_EQ(boot->target, "Cd");
  EXPECT_EQ(matching(rig.bmc, "PATCH", kSys).size(), 1u);
  ASSERT_TRUE(client.power_cycle_into_boot());
  EXPECT_EQ(rig.bmc.boots().back().boot_target, "Cd");
}

// ------------------------------------------------------------------ stopping (shutdown, cancel)

// Real time: every wait is as long as the BMC asks, so only a stop can end it early.
struct RealTimeRig {
  explicit RealTimeRig(MockBmcOptions o = {}, RedfishOptions ro = fast_options())
      : bmc(std::move(o)), ctx(clock, sleeper, ro, nullptr, shutdown.get_token()) {}
  BmcEndpoint endpoint() const {
    BmcEndpoint e;
    e.address = bmc.address();
    e.username = "admin";
    e.password = "mock-bmc-password";
    return e;
  }
  MockBmc bmc;
  SystemClock clock;
  RealSleeper sleeper;
  std::stop_source shutdown;
  RedfishContext ctx;
};

// Requests a stop once the BMC has answered `line` ("METHOD path status"); records when.
struct StopWhen {
  StopWhen(const MockBmc& bmc, std::string line, std::stop_source source)
      : thread([&bmc, line = std::move(line), source, this](std::stop_token quit) mutable {
          while (!quit.stop_requested()) {
            auto seq = bmc.sequence();
            if (std::find(seq.begin(), seq.end(), line) != seq.end()) {
              at = std::chrono::steady_clock::now();
              source.request_stop();
              return;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
          }
        }) {}
  std::chrono::milliseconds since() const {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - at);
  }
  std::chrono::steady_clock::time_point at;
  std::jthread thread;  // last: started once `at` exists
};

TEST(RedfishStop, CancelEndsARetryAfterWaitAtOnceAndSendsNothingMore) {
  RealTimeRig rig;
  rig.bmc.set_hook([](const RecordedRequest& r, int) {
    return r.method == "PATCH" && r.path == kSys ? MockAction::respond(429, "", {{"Retry-After", "60"}})
                                                 : MockAction::pass();
  });
  std::stop_source job;
  {
    BmcClient client(rig.ctx, rig.endpoint(), {}, job.get_token());
    StopWhen stop(rig.bmc, "PATCH " + kSys + " 429", job);
    auto boot = client.set_boot_once_cd(BootMode::keep);
    auto took = stop.since();
    stop.thread.join();
    ASSERT_FALSE(boot);
    EXPECT_EQ(failure_code(boot.error()), FailureCode::canceled) << boot.error().message;
    EXPECT_LE(took.count(), 5000) << "the 60 s Retry-After wait went on after the cancel";
    EXPECT_EQ(mutations(rig.bmc), (std::vector<std::string>{kSessions, "PATCH " + kSys + " 429"}))
        << dump(rig.bmc.sequence());
    auto again = client.power_cycle_into_boot();
    ASSERT_FALSE(again);
    EXPECT_EQ(failure_code(again.error()), FailureCode::canceled);
    EXPECT_TRUE(rig.bmc.resets().empty()) << "a canceled client sent a reset";
  }
  EXPECT_EQ(rig.bmc.live_sessions(), 0) << "a canceled job still gives its session back";
}

TEST(RedfishStop, ShutdownEndsATaskMonitorWait) {
  MockBmcOptions o;
  o.async_actions = true;
  o.task_retry_after_s = 60;
  RealTimeRig rig(o);
  {
    BmcClient client(rig.ctx, rig.endpoint());
    StopWhen stop(rig.bmc, insert_of("CD1", 202), rig.shutdown);
    auto ins = client.insert_media({{kMaint, MediaKind::cd}});
    auto took = stop.since();
    stop.thread.join();
    ASSERT_FALSE(ins);
    EXPECT_EQ(failure_code(ins.error()), FailureCode::canceled) << ins.error().message;
    EXPECT_LE(took.count(), 5000) << "the task monitor's Retry-After: 60 went on after the shutdown";
  }
  EXPECT_TRUE(matching(rig.bmc, "GET", "/TaskService/").empty()) << "no poll after the stop";
  EXPECT_EQ(mutations(rig.bmc), (std::vector<std::string>{kSessions, insert_of("CD1", 202)}))
      << "a stopping controller does not wait for a session delete either";
}

TEST(RedfishStop, ShutdownEndsPowerPollingAfterExactlyOneReset) {
  MockBmcOptions o;
  o.power_state = "Off";
  o.power_lag_reads = 1000;  // PowerState keeps showing Off
  RedfishOptions ro = fast_options();
  ro.power_poll_ms = 60'000;
  RealTimeRig rig(o, ro);
  BmcClient client(rig.ctx, rig.endpoint());
  StopWhen stop(rig.bmc, "POST " + kSys + "/Actions/ComputerSystem.Reset 204", rig.shutdown);
  auto r = client.power_cycle_into_boot();
  auto took = stop.since();
  stop.thread.join();
  ASSERT_FALSE(r);
  EXPECT_EQ(failure_code(r.error()), FailureCode::canceled) << r.error().message;
  EXPECT_LE(took.count(), 5000) << "power polling went on after the shutdown";
  EXPECT_EQ(rig.bmc.resets(), std::vector<std::string>{"On"});
}

TEST(RedfishStop, NothingIsSentOnceStopped) {
  RealTimeRig rig;
  rig.shutdown.request_stop();
  BmcClient client(rig.ctx, rig.endpoint());
  auto f = client.discover();
  ASSERT_FALSE(f);
  EXPECT_EQ(failure_code(f.error()), FailureCode::canceled);
  EXPECT_NE(f.error().message.find("not sent"), std::string::npos) << f.error().message;
  EXPECT_TRUE(rig.bmc.requests().empty());
}

TEST(RedfishLimits, OneOperationAtATimePerBmcAndAGlobalCap) {
  RedfishOptions ro = fast_options();
  ro.max_concurrent_requests = 2;
  TestTime time;
  RedfishContext ctx(time, time, ro);
  std::atomic<int> global{0}, global_max{0};
  std::vector<std::unique_ptr<MockBmc>> bmcs;
  std::vector<std::unique_ptr<std::atomic<int>>> per(3), per_max(3);
  for (int i = 0; i < 3; ++i) {
    per[i] = std::make_unique<std::atomic<int>>(0);
    per_max[i] = std::make_unique<std::atomic<int>>(0);
    bmcs.push_back(std::make_unique<MockBmc>());
    auto* p = per[i].get();
    auto* pm = per_max[i].get();
    bmcs.back()->set_hook([&, p, pm](const RecordedRequest&, int) {
      int g = ++global, l = ++*p;
      for (int m = global_max; g > m && !global_max.compare_exchange_weak(m, g);) {
      }
      for (int m = *pm; l > m && !pm->compare_exchange_weak(m, l);) {
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      --global;
      --*p;
      return MockAction::pass();
    });
  }
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 2; ++j)  // two clients (e.g. two jobs' steps) per BMC
      threads.emplace_back([&, i] {
        BmcEndpoint e;
        e.address = bmcs[i]->address();
        e.username = "admin";
        e.password = "mock-bmc-password";
        BmcClient c(ctx, e);
        if (c.insert_media({{kMaint, MediaKind::cd}})) ++ok;
      });
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 6);
  EXPECT_LE(global_max.load(), 2);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(per_max[i]->load(), 1) << "BMC " << i;
}

TEST(RedfishMedia, MockFetchesMediaLikeARealBmc) {
  // A tiny origin for the ISO: another mock answers 404 for unknown paths, which is enough
  // to show the HEAD + Range GET a real BMC sends.
  MockBmcOptions o;
  o.fetch_media = true;
  Rig rig(o);
  MockBmc origin;
  std::string url = "http://127.0.0.1:" + std::to_string(origin.port()) + "/artifacts/maintenance.iso";
  BmcClient client(rig.ctx, rig.endpoint());
  ASSERT_TRUE(client.insert_media({{url, MediaKind::cd}}));
  auto fetches = rig.bmc.media_fetches();
  ASSERT_EQ(fetches.size(), 1u);
  EXPECT_EQ(origin.sequence(), (std::vector<std::string>{"HEAD /artifacts/maintenance.iso 401",
                                                         "GET /artifacts/maintenance.iso 401"}));
  EXPECT_EQ(origin.requests()[1].header("range"), "bytes=0-2047");
}

// Self-signed certificate for 127.0.0.1 (SAN IP), written as cert.pem + key.pem.
void make_certificate(const std::filesystem::path& dir) {
  EVP_PKEY* key = EVP_EC_gen("P-256");
  X509* x = X509_new();
  ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
  X509_gmtime_adj(X509_getm_notBefore(x), -60);
  X509_gmtime_adj(X509_getm_notAfter(x), 3600);
  X509_set_pubkey(x, key);
  X509_NAME* name = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>("mock-bmc"), -1, -1, 0);
  X509_set_issuer_name(x, name);
  X509V3_CTX v3;
  X509V3_set_ctx_nodb(&v3);
  X509V3_set_ctx(&v3, x, x, nullptr, nullptr, 0);
  X509_EXTENSION* san = X509V3_EXT_conf_nid(nullptr, &v3, NID_subject_alt_name, "IP:127.0.0.1");
  X509_add_ext(x, san, -1);
  X509_EXTENSION_free(san);
  X509_sign(x, key, EVP_sha256());
  FILE* f = std::fopen((dir / "key.pem").c_str(), "w");
  PEM_write_PrivateKey(f, key, nullptr, nullptr, 0, nullptr, nullptr);
  std::fclose(f);
  f = std::fopen((dir / "cert.pem").c_str(), "w");
  PEM_write_X509(f, x);
  std::fclose(f);
  X509_free(x);
  EVP_PKEY_free(key);
}

TEST(RedfishTls, VerificationIsPerBmcWithOptionalCaFile) {
  test::TempDir dir;
  make_certificate(dir.path());
  MockBmcOptions o;
  o.tls_cert_file = (dir.path() / "cert.pem").string();
  o.tls_key_file = (dir.path() / "key.pem").string();
  Rig rig(o);
  ASSERT_EQ(rig.bmc.address().rfind("https://", 0), 0u);

  BmcEndpoint off = rig.endpoint();
  off.verify_tls = false;  // the usual self-signed BMC
  BmcClient c1(rig.ctx, off);
  auto f1 = c1.discover();
  ASSERT_TRUE(f1) << f1.error().message;

  // Verification on, system trust store: refused, once (no retry storm), and it says why.
  BmcEndpoint on = rig.endpoint();
  on.verify_tls = true;
  auto before = rig.bmc.requests().size();
  BmcClient c2(rig.ctx, on);
  auto f2 = c2.discover();
  ASSERT_FALSE(f2);
  EXPECT_EQ(failure_code(f2.error()), FailureCode::transport);
  EXPECT_NE(f2.error().message.find("certificate verification failed"), std::string::npos) << f2.error().message;
  EXPECT_EQ(rig.bmc.requests().size(), before) << "no request got through";
  EXPECT_TRUE(rig.time.sleeps().empty()) << "not retried";

  // Verification on with the BMC's CA file: accepted.
  BmcEndpoint pinned = on;
  pinned.ca_file = o.tls_cert_file;
  BmcClient c3(rig.ctx, pinned);
  auto f3 = c3.discover();
  ASSERT_TRUE(f3) << f3.error().message;
  ASSERT_TRUE(c3.insert_media({{kMaint, MediaKind::cd}}));
}

TEST(RedfishErrors, UnknownSystemAndBadAddress) {
  Rig rig;
  BmcEndpoint e = rig.endpoint();
  e.serial = "NOPE";
  BmcClient client(rig.ctx, e);
  auto f = client.discover();
  ASSERT_FALSE(f);
  EXPECT_EQ(failure_code(f.error()), FailureCode::not_found);
  EXPECT_NE(f.error().message.find("NOPE"), std::string::npos);

  BmcEndpoint bad = rig.endpoint();
  bad.address = "ftp://x";
  BmcClient c2(rig.ctx, bad);
  auto g = c2.discover();
  ASSERT_FALSE(g);
  EXPECT_EQ(failure_code(g.error()), FailureCode::invalid_input);

  BmcEndpoint down = rig.endpoint();
  down.address = "http://127.0.0.1:" + std::to_string(test::free_port());
  BmcClient c3(rig.ctx, down);
  auto h = c3.discover();
  ASSERT_FALSE(h);
  // Ten refused connects trip the breaker (threshold 8) on the way: the error says both.
  EXPECT_EQ(failure_code(h.error()), FailureCode::circuit_open) << h.error().message;
  EXPECT_NE(h.error().message.find("Connection refused"), std::string::npos) << h.error().message;
}


// ------------------------------------------------------------------ transport: reuse, TLS policy, IPv6, proxies

struct HttpsRig {
  explicit HttpsRig(MockBmcOptions o = {}) : rig((configure(o), o)) {}
  MockBmcOptions& configure(MockBmcOptions& o) {
    make_certificate(dir.path());
    o.tls_cert_file = (dir.path() / "cert.pem").string();
    o.tls_key_file = (dir.path() / "key.pem").string();
    return o;
  }
  test::TempDir dir;
  Rig rig;
};

// One job's whole BMC sequence as the job driver runs it: one client for insert + boot +
// reset, later another for cleanup, with the BMC closing the idle connection in between
// (the maintenance OS boots for minutes). Prints the figures for the issue's closing note.
TEST(RedfishTransport, OneJobReusesItsConnectionAndResumesItsTlsSession) {
  HttpsRig h;
  Rig& rig = h.rig;
  {
    BmcClient c(rig.ctx, rig.endpoint());
    ASSERT_TRUE(c.insert_media({{kMaint, MediaKind::cd}, {kTask, MediaKind::cd}}));
    ASSERT_TRUE(c.set_boot_once_cd(BootMode::uefi));
    ASSERT_TRUE(c.power_cycle_into_boot());
  }
  auto steps = rig.bmc.counters();
  rig.bmc.drop_connections();
  {
    BmcClient c(rig.ctx, rig.endpoint());
    ASSERT_TRUE(c.cleanup({kMaint, kTask}));
  }
  auto all = rig.bmc.counters();
  std::printf("one job's BMC sequence over HTTPS: %d requests, %d TCP connections, %d TLS handshakes (%d resumed); "
              "insert+boot+reset alone: %d requests, %d connections\n",
              all.requests, all.connections, all.handshakes, all.resumed, steps.requests, steps.connections);
  EXPECT_GE(all.requests, 15);
  EXPECT_EQ(steps.connections, 1) << "insert, boot and reset share one connection";
  EXPECT_EQ(all.connections, 2) << "the cleanup step reconnects once after the BMC dropped the idle connection";
  EXPECT_EQ(all.handshakes, 2);
  EXPECT_EQ(all.resumed, 1) << "the second handshake resumes the first TLS session";
}

TEST(RedfishTls, Tls11OnlyBmcIsRefusedByDefault) {
  MockBmcOptions o;
  o.tls_min_version = o.tls_max_version = "TLSv1.1";  // old iLO/iDRAC firmware
  HttpsRig h(o);
  Rig& rig = h.rig;
  BmcClient c(rig.ctx, rig.endpoint());
  auto f = c.discover();
  ASSERT_FALSE(f) << "TLS 1.1 accepted without an explicit opt-in";
  EXPECT_EQ(failure_code(f.error()), FailureCode::transport);
  EXPECT_NE(f.error().message.find("legacy"), std::string::npos) << "says how to opt in: " << f.error().message;
  EXPECT_TRUE(rig.bmc.requests().empty());
  EXPECT_TRUE(rig.time.sleeps().empty()) << "a refused handshake is not retried";
  EXPECT_EQ(rig.bmc.counters().handshakes, 0);
}

bool ipv6_loopback() {
  int fd = ::socket(AF_INET6, SOCK_STREAM, 0);
  if (fd < 0) return false;
  sockaddr_in6 a{};
  a.sin6_family = AF_INET6;
  a.sin6_addr = in6addr_loopback;
  bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return ok;
}

TEST(RedfishTransport, BmcOnIpv6Loopback) {
  if (!ipv6_loopback()) GTEST_SKIP() << "no IPv6 loopback on this machine";
  for (bool https : {false, true}) {
    MockBmcOptions o;
    o.bind_address = "::1";
    std::optional<HttpsRig> tls;
    std::optional<Rig> plain;
    if (https) tls.emplace(o);
    else plain.emplace(o);
    Rig& rig = https ? tls->rig : *plain;
    ASSERT_EQ(rig.bmc.address(), std::string(https ? "https" : "http") + "://[::1]:" + std::to_string(rig.bmc.port()));
    BmcClient c(rig.ctx, rig.endpoint());
    ASSERT_TRUE(c.insert_media({{kMaint, MediaKind::cd}})) << rig.bmc.address();
    EXPECT_EQ(rig.bmc.slot_image("CD1"), kMaint);
    EXPECT_EQ(rig.bmc.requests().front().header("host"), "[::1]:" + std::to_string(rig.bmc.port()));
  }
}

// Sets environment variables for one scope and restores them after.
class ScopedEnv {
 public:
  void set(const char* name, const char* value) {
    const char* old = std::getenv(name);
    saved_.emplace_back(name, old ? std::optional<std::string>(old) : std::nullopt);
    if (value) ::setenv(name, value, 1);
    else ::unsetenv(name);
  }
  ~ScopedEnv() {
    for (auto it = saved_.rbegin(); it != saved_.rend(); ++it) {
      if (it->second) ::setenv(it->first.c_str(), it->second->c_str(), 1);
      else ::unsetenv(it->first.c_str());
    }
  }

 private:
  std::vector<std::pair<std::string, std::optional<std::string>>> saved_;
};

TEST(RedfishProxy, LoopbackBmcsNeverGoThroughAProxy) {
  // A proxy nobody listens on: a request routed through it would fail.
  std::string dead = "http://127.0.0.1:" + std::to_string(test::free_port());
  ScopedEnv env;
  for (const char* v : {"http_proxy", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"}) env.set(v, dead.c_str());
  for (const char* v : {"no_proxy", "NO_PROXY"}) env.set(v, nullptr);
  Rig rig;
  BmcClient c(rig.ctx, rig.endpoint());
  auto f = c.discover();
  ASSERT_TRUE(f) << f.error().message;
  HttpsRig h;
  BmcClient c2(h.rig.ctx, h.rig.endpoint());
  auto f2 = c2.discover();
  ASSERT_TRUE(f2) << f2.error().message;
}


TEST(RedfishTls, Tls11OnlyBmcIsAcceptedWhenLegacyIsOptedIn) {
  MockBmcOptions o;
  o.tls_min_version = o.tls_max_version = "TLSv1.1";
  HttpsRig h(o);
  Rig& rig = h.rig;
  // The server record opts in.
  BmcEndpoint record = rig.endpoint();
  record.tls = "legacy";
  {
    BmcClient c(rig.ctx, record);
    auto f = c.discover();
    ASSERT_TRUE(f) << f.error().message;
  }
  EXPECT_EQ(rig.bmc.last_tls_version(), "TLSv1.1");
  // A legacy vendor profile opts in, and talks to the BMC as before: one connection per request.
  rig.bmc.clear_requests();
  rig.bmc.reset_counters();
  {
    BmcClient c(rig.ctx, rig.endpoint("hpe-ilo-legacy"));
    auto f = c.discover();
    ASSERT_TRUE(f) << f.error().message;
    EXPECT_EQ(f->profile, "hpe-ilo-legacy");
  }
  auto counters = rig.bmc.counters();
  EXPECT_GT(counters.requests, 3);
  EXPECT_EQ(counters.connections, counters.requests) << "keep-alive opted out by the profile";
  for (const auto& r : rig.bmc.requests()) EXPECT_EQ(r.header("connection"), "close") << r.path;
  // The record's "modern" beats the profile.
  BmcEndpoint modern = rig.endpoint("hpe-ilo-legacy");
  modern.tls = "modern";
  BmcClient c(rig.ctx, modern);
  EXPECT_FALSE(c.discover());
}

TEST(RedfishTransport, StopFlagAbortsARequestInFlightPromptly) {
  Rig rig;
  rig.bmc.set_hook([](const RecordedRequest&, int) { return MockAction::delay(5000); });
  Endpoint ep;
  std::string err;
  ASSERT_TRUE(parse_endpoint(rig.bmc.address(), ep, err)) << err;
  std::atomic<bool> stop{false};
  TransportOptions o;
  o.stop = &stop;
  auto transport = make_curl_transport(ep, o);
  std::atomic<std::int64_t> stopped_at{0};
  auto now_us = [] {
    return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
  };
  std::thread stopper([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    stopped_at = now_us();
    stop = true;
  });
  auto r = transport->send(HttpRequest{"GET", "/redfish/v1/", {}, ""}, std::chrono::seconds(10));
  auto ended = now_us();
  stopper.join();
  ASSERT_FALSE(r.ok);
  EXPECT_EQ(r.failure.kind, TransportFailure::Kind::aborted) << r.failure.detail;
  EXPECT_TRUE(r.failure.sent);
  EXPECT_LT(ended - stopped_at.load(), 250'000) << "aborted within ~100 ms of the stop (50 ms poll)";
  EXPECT_EQ(rig.bmc.requests().size(), 1u);
  // Once stopped, nothing more goes out.
  auto again = transport->send(HttpRequest{"GET", "/redfish/v1/", {}, ""}, std::chrono::seconds(10));
  EXPECT_EQ(again.failure.kind, TransportFailure::Kind::aborted);
  EXPECT_FALSE(again.failure.sent);
  EXPECT_EQ(rig.bmc.requests().size(), 1u);
}

TEST(RedfishProxy, OtherAddressesGoThroughTheProxyFromTheEnvironment) {
  MockBmc proxy;  // on 127.0.0.1: records the request a proxy receives, answers 404
  ScopedEnv env;
  env.set("http_proxy", proxy.address().c_str());
  for (const char* v : {"no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"}) env.set(v, nullptr);
  TestTime time;
  RedfishContext ctx(time, time, fast_options());
  BmcEndpoint e;
  // TEST-NET-1 (RFC 5737): never contacted, the request goes to the proxy on loopback only.
  e.address = "http://192.0.2.10:8000";
  e.username = "admin";
  e.password = "mock-bmc-password";
  BmcClient c(ctx, e);
  EXPECT_FALSE(c.discover());
  auto seen = proxy.requests();
  ASSERT_FALSE(seen.empty());
  EXPECT_EQ(seen.front().path, "http://192.0.2.10:8000/redfish/v1/");
  EXPECT_EQ(seen.front().header("host"), "192.0.2.10:8000");
}

// A shutdown also ends a request already on the wire: the transport's stop flag is raised by
// the controller's shutdown token, so a BMC that takes its time cannot hold the controller up
// to the request deadline.
TEST(RedfishStop, ShutdownCutsOffARequestOnTheWire) {
  RedfishOptions ro = fast_options();
  ro.request_timeout_ms = 30'000;
  RealTimeRig rig({}, ro);
  rig.bmc.set_hook([](const RecordedRequest& r, int) {
    return r.method == "PATCH" && r.path == kSys ? MockAction::delay(6000) : MockAction::pass();
  });
  BmcClient client(rig.ctx, rig.endpoint());
  std::jthread stopper([&rig](std::stop_token quit) {
    // Once the PATCH is on the wire (the mock records it before its delay), stop.
    while (!quit.stop_requested()) {
      for (const auto& r : rig.bmc.requests())
        if (r.method == "PATCH") {
          rig.shutdown.request_stop();
          return;
        }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  });
  auto started = std::chrono::steady_clock::now();
  auto boot = client.set_boot_once_cd(BootMode::keep);
  auto took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started);
  ASSERT_FALSE(boot);
  EXPECT_EQ(failure_code(boot.error()), FailureCode::canceled) << boot.error().message;
  EXPECT_LT(took.count(), 3000) << "the request ran on after the shutdown: " << boot.error().message;
}

}  // namespace
}  // namespace provisioner::redfish
