// One job per BMC fault, through the controller process: how the job ends, and the fault's
// trace in the requests the mock BMC recorded. (tests/integration/redfish covers the same
// faults request by request at the client level.)
#include <gtest/gtest.h>

#include <atomic>
#include <functional>
#include <thread>

#include "common/atomic_file.hpp"
#include "common/crypto.hpp"
#include "tests/integration/controller/iso_tools.hpp"
#include "tests/integration/controller/test_jobs.hpp"
#include "tests/integration/controller/webhook_signer.hpp"
#include "tests/support/controller_process.hpp"
#include "tests/support/mock_bmc.hpp"

using namespace provisioner;
using namespace provisioner::test;

namespace {

struct Fault {
  const char* name;
  std::function<void(MockBmcOptions&)> options;
  // Installed before the job starts; may look at the request and its index.
  std::function<MockBmc::Hook(std::shared_ptr<std::atomic<int>>)> hook;
  std::function<void(nlohmann::json&)> recipe;
  // Checks the recorded sequence ("METHOD path status") and the mock's end state.
  std::function<void(const std::vector<std::string>&, MockBmc&, const nlohmann::json& job)> check;
  std::string redfish_extra = {};  // appended to the [redfish] config section
};

bool any(const std::vector<std::string>& seq, const std::function<bool(const std::string&)>& pred) {
  return std::any_of(seq.begin(), seq.end(), pred);
}
int count(const std::vector<std::string>& seq, const std::function<bool(const std::string&)>& pred) {
  return static_cast<int>(std::count_if(seq.begin(), seq.end(), pred));
}
bool has(const std::string& s, const char* part) { return s.find(part) != std::string::npos; }
bool ends(const std::string& s, const char* tail) { return s.ends_with(tail); }

MockBmc::Hook first_n(std::shared_ptr<std::atomic<int>> n, int times, std::function<bool(const RecordedRequest&)> match,
                      MockAction action) {
  return [n, times, match, action](const RecordedRequest& r, int) {
    if (match(r) && n->fetch_add(1) < times) return action;
    return MockAction::pass();
  };
}

std::vector<Fault> faults() {
  return {
      {"ServerErrorBurst", nullptr,
       [](auto n) {
         return first_n(n, 3, [](const RecordedRequest& r) { return r.method == "GET" && ends(r.path, "/Systems/1"); },
                        MockAction::respond(503));
       },
       nullptr,
       [](const auto& seq, MockBmc&, const auto&) {
         EXPECT_EQ(count(seq, [](auto& s) { return has(s, "/Systems/1 503"); }), 3);
         EXPECT_TRUE(any(seq, [](auto& s) { return s == "GET /redfish/v1/Systems/1 200"; }));
       }},
      {"RateLimitWithRetryAfter", nullptr,
       [](auto n) {
         return first_n(n, 1, [](const RecordedRequest& r) { return has(r.path, "InsertMedia"); },
                        MockAction::respond(429, "", {{"Retry-After", "1"}}));
       },
       nullptr,
       [](const auto& seq, MockBmc&, const auto&) {
         EXPECT_EQ(count(seq, [](auto& s) { return has(s, "InsertMedia 429"); }), 1);
         EXPECT_GE(count(seq, [](auto& s) { return has(s, "InsertMedia 204") || has(s, "InsertMedia 200"); }), 2);
       }},
      {"AnswersSlowerThanTheTimeout", nullptr,
       [](auto n) {
         return first_n(n, 2, [](const RecordedRequest& r) { return r.method == "GET" && ends(r.path, "/Systems/1"); },
                        MockAction::delay(1500));
       },
       nullptr,
       [](const auto& seq, MockBmc&, const auto&) {
         EXPECT_GE(count(seq, [](auto& s) { return has(s, "GET /redfish/v1/Systems/1 "); }), 3) << "retried after timeouts";
       },
       "request_timeout_ms = 500\n"},
      {"TcpResets", nullptr,
       [](auto n) { return first_n(n, 2, [](const RecordedRequest& r) { return r.method == "GET"; }, MockAction::reset()); },
       nullptr,
       [](const auto& seq, MockBmc&, const auto&) {
         EXPECT_EQ(count(seq, [](auto& s) { return ends(s, " -1"); }), 2) << "two connections reset";
       }},
      {"SessionExpiresMidJob", nullptr,
       [](auto n) {
         // The BMC forgets the session at the first insert: 401 once, then the client logs in again.
         return first_n(n, 1, [](const RecordedRequest& r) { return has(r.path, "InsertMedia"); },
                        MockAction::respond(401));
       },
       nullptr,
       [](const auto& seq, MockBmc&, const nlohmann::json&) {
         EXPECT_EQ(count(seq, [](auto& s) { return has(s, "POST /redfish/v1/SessionService/Sessions 201"); }), 2 + 1)
             << "one login per BmcClient (steps, cleanup) plus one re-login after the 401";
         auto at = std::find(seq.begin(), seq.end(),
                             "POST /redfish/v1/Systems/1/VirtualMedia/CD1/Actions/VirtualMedia.InsertMedia 401");
         ASSERT_NE(at, seq.end());
         EXPECT_EQ(*(at + 1), "POST /redfish/v1/SessionService/Sessions 201") << "re-login right after the 401";
       }},
      {"StaleEtag", nullptr,
       [](auto n) {
         return first_n(n, 1, [](const RecordedRequest& r) { return r.method == "PATCH" && ends(r.path, "/Systems/1"); },
                        MockAction::respond(412));
       },
       nullptr,
       [](const auto& seq, MockBmc&, const auto&) {
         EXPECT_TRUE(any(seq, [](auto& s) { return s == "PATCH /redfish/v1/Systems/1 412"; }));
         EXPECT_TRUE(any(seq, [](auto& s) { return s == "PATCH /redfish/v1/Systems/1 200" || s == "PATCH /redfish/v1/Systems/1 204"; }));
       }},
      {"MediaAlreadyInserted", nullptr, nullptr, nullptr,
       [](const auto& seq, MockBmc&, const auto&) {
         EXPECT_EQ(count(seq, [](auto& s) { return has(s, "/CD1/Actions/VirtualMedia.InsertMedia"); }), 0)
             << "CD1 already held the maintenance ISO";
       }},
      {"EjectOfEmptySlotFails", [](MockBmcOptions& o) { o.eject_empty_fails = true; }, nullptr, nullptr,
       [](const auto&, MockBmc& bmc, const auto&) { EXPECT_EQ(bmc.slot_image("CD1") + bmc.slot_image("CD2"), ""); }},
      {"VirtualMediaOnlyUnderManagers", [](MockBmcOptions& o) { o.vm_under_manager = true; }, nullptr, nullptr,
       [](const auto& seq, MockBmc&, const auto&) {
         EXPECT_TRUE(any(seq, [](auto& s) { return has(s, "/Managers/BMC/VirtualMedia/CD1/Actions/VirtualMedia.InsertMedia"); }));
       }},
      {"NoInsertMediaAction", [](MockBmcOptions& o) { o.media_actions = false; }, nullptr, nullptr,
       [](const auto& seq, MockBmc&, const auto&) {
         EXPECT_FALSE(any(seq, [](auto& s) { return has(s, "InsertMedia"); }));
         EXPECT_GE(count(seq, [](auto& s) { return s.rfind("PATCH /redfish/v1/Systems/1/VirtualMedia/", 0) == 0; }), 2);
       }},
      {"SecondMediumRefused", [](MockBmcOptions& o) { o.refuse_second_medium = true; }, nullptr, nullptr,
       [](const auto& seq, MockBmc& bmc, const nlohmann::json& job) {
         EXPECT_EQ(job["media"]["mode"], "single-iso");
         EXPECT_TRUE(any(seq, [](auto& s) { return has(s, "InsertMedia 400"); }));
         EXPECT_EQ(bmc.boots()[0].media.size(), 1u);
       }},
      {"OnceIgnored", [](MockBmcOptions& o) { o.ignore_once = true; }, nullptr, nullptr,
       [](const auto&, MockBmc& bmc, const auto&) {
         ASSERT_EQ(bmc.boots().size(), 2u);
         EXPECT_EQ(bmc.boots()[0].boot_target, "Cd");
         EXPECT_EQ(bmc.boots()[1].boot_target, "Hdd") << "a Continuous override must be undone at cleanup";
       }},
      {"BootModeResetOnPatch", [](MockBmcOptions& o) { o.reset_mode_on_target_change = true; }, nullptr,
       [](nlohmann::json& r) {
         r["boot_mode"] = "uefi";
         r["partition_layout"] = nlohmann::json::parse(
             R"([{"size":"256MiB","type_guid":"c12a7328-f81f-11d2-ba4b-00a0c93ec93b","format":"vfat"},
                 {"size":"rest","type_guid":"0fc63daf-8483-4772-8e79-3d69d8477de4","format":"ext4"}])");
       },
       [](const auto& seq, MockBmc& bmc, const nlohmann::json& job) {
         EXPECT_GE(count(seq, [](auto& s) { return has(s, "PATCH /redfish/v1/Systems/1 "); }), 2) << "re-applied";
         EXPECT_EQ(bmc.boots()[0].boot_target, "Cd");
         bool uefi = false;
         for (const auto& p : job["phases"]) uefi |= p["name"] == "boot_set" && has(p["detail"].get<std::string>(), "UEFI");
         EXPECT_TRUE(uefi) << job.dump();
       }},
      {"DellVirtualCdViaOemImport",
       [](MockBmcOptions& o) {
         o.vendor = "Dell";
         o.manufacturer = "Dell Inc.";
         o.manager_id = "iDRAC.Embedded.1";
         o.dell_oem_import = true;
         o.task_retry_after_s = 0;
       },
       nullptr, nullptr,
       [](const auto& seq, MockBmc& bmc, const nlohmann::json& job) {
         EXPECT_EQ(job["media"]["mode"], "single-iso") << "iDRAC takes one medium";
         EXPECT_TRUE(any(seq, [](auto& s) { return has(s, "EID_674_Manager.ImportSystemConfiguration 202"); }));
         ASSERT_EQ(bmc.boots().size(), 2u);
         EXPECT_EQ(bmc.boots()[0].boot_target, "VirtualCd");
         EXPECT_EQ(bmc.boots()[1].boot_target, "Hdd");
       }},
      {"AcceptedWithTaskMonitor", [](MockBmcOptions& o) { o.async_actions = true; o.task_retry_after_s = 0; }, nullptr,
       nullptr,
       [](const auto& seq, MockBmc&, const auto&) {
         EXPECT_TRUE(any(seq, [](auto& s) { return has(s, "InsertMedia 202"); }));
         EXPECT_TRUE(any(seq, [](auto& s) { return s.rfind("GET /redfish/v1/TaskService/", 0) == 0; }));
       }},
  };
}

}  // namespace

class BmcFault : public testing::TestWithParam<Fault> {};

TEST_P(BmcFault, JobStillSucceeds) {
  const auto& f = GetParam();
  TempDir tmp;
  auto base = make_maintenance_iso(tmp.path());
  MockBmcOptions options;
  if (f.options) options = (f.options(options), options);
  MockBmc bmc(options);
  ControllerProcess controller(
      "[redfish]\npower_poll_ms = 20\nretry_base_ms = 20\nretry_cap_ms = 50\ninsert_retry_delay_ms = 20\n"
      "not_ready_delay_ms = 20\ntask_poll_ms = 20\nbreaker_open_ms = 300\n" + f.redfish_extra,
      "text", "maintenance_iso = \"" + base.string() + "\"\n");
  controller.start();
  if (std::string(f.name) == "MediaAlreadyInserted") {
    auto sha = crypto::sha256_hex(*read_file(base));
    bmc.set_slot("CD1", "http://127.0.0.1:" + std::to_string(controller.artifacts_port()) + "/artifacts/" + sha +
                            "/maintenance.iso",
                 true);
  }
  if (f.hook) bmc.set_hook(f.hook(std::make_shared<std::atomic<int>>(0)));

  auto recipe = linux_recipe();
  if (f.recipe) f.recipe(recipe);
  nlohmann::json body{{"server",
                       {{"serial", "MOCK0001"},
                        {"bmc", {{"address", bmc.address()}, {"username", "admin"}, {"password", "mock-bmc-password"}}}}},
                      {"recipe", recipe}};
  auto id = controller.post("/api/v1/jobs", body.dump()).json()["id"].get<std::string>();
  // Play the machine: once it booted the CD, report success.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (bmc.boots().empty() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_FALSE(bmc.boots().empty()) << controller.get("/api/v1/jobs/" + id).body << "\n" << controller.log_text();
  auto key = controller.webhook_key(id);
  ASSERT_EQ(send_webhook(controller, "MOCK0001", key, R"({"job_id":")" + id + R"(","status":"running"})").status, 200);
  ASSERT_EQ(send_webhook(controller, "MOCK0001", key, R"({"job_id":")" + id + R"(","status":"success"})").status, 200);
  auto job = controller.wait_for_status(id, "complete", 60);
  EXPECT_EQ(job["outcome"], "succeeded") << job.dump();
  EXPECT_EQ(bmc.resets().size(), 2u) << "one reset into the maintenance OS, one into the disk";
  EXPECT_EQ(bmc.slot_image("CD1") + bmc.slot_image("CD2") + bmc.slot_image("USB1"), "") << "media left inserted";
  f.check(bmc.sequence(), bmc, job);
  if (HasFailure())
    for (const auto& line : bmc.sequence()) std::printf("  %s\n", line.c_str());
}

INSTANTIATE_TEST_SUITE_P(Faults, BmcFault, testing::ValuesIn(faults()),
                         [](const auto& info) { return std::string(info.param.name); });
