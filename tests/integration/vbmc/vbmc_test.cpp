// The virtual BMC against real QEMU (TCG, tiny machines, no OS): power through QMP, media
// fetched over HTTP from the project's artifact server into QEMU's drives, bootindex boot
// override with real Once semantics, and the controller's own Redfish client end to end.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/clock.hpp"
#include "common/crypto.hpp"
#include "controller/artifacts/artifact_server.hpp"
#include "controller/artifacts/artifact_store.hpp"
#include "controller/logging/logger.hpp"
#include "controller/redfish/redfish_client.hpp"
#include "tests/support/http_client.hpp"
#include "tools/vbmc/media_fetcher.hpp"
#include "tools/vbmc/qemu_machine.hpp"
#include "tools/vbmc/virtual_bmc.hpp"

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using nlohmann::json;
using provisioner::test::Headers;
using provisioner::test::http_request;

namespace provisioner::vbmc {
namespace {

constexpr const char* kPassword = "vbmc-test-password";

std::string basic_auth(const std::string& user, const std::string& pass) {
  return "Basic " + provisioner::crypto::base64_encode(user + ":" + pass);
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A real little ISO when xorriso is there (the CI image has it), else plain bytes: QEMU's CD
// drive does not care what is on the medium.
std::string make_iso(const fs::path& dir, const std::string& label) {
  fs::create_directories(dir / label);
  std::ofstream(dir / label / "hello.txt") << "hello from " << label << "\n";
  fs::path iso = dir / (label + ".iso");
  std::string cmd = "xorriso -as mkisofs -quiet -V " + label + " -o " + iso.string() + " " + (dir / label).string() +
                    " >/dev/null 2>&1";
  if (std::system(cmd.c_str()) == 0 && fs::exists(iso)) return read_file(iso);
  std::string bytes;
  for (int i = 0; i < 300 * 1024 + 17; ++i) bytes.push_back(static_cast<char>((i * 131 + label.size()) & 0xff));
  return bytes;
}

class VbmcTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("vbmc-test-" + crypto::random_token(6));
    fs::create_directories(dir_);
    logger_ = std::make_unique<Logger>(Logger::Format::text, "warn");

    // The media the BMC fetches, served like the controller serves them.
    store_ = std::make_unique<artifacts::ArtifactStore>(dir_ / "artifacts");
    maint_iso_ = make_iso(dir_ / "iso", "MAINT");
    task_iso_ = make_iso(dir_ / "iso", "TASK");
    auto m = store_->put(maint_iso_);
    auto t = store_->put(task_iso_);
    ASSERT_TRUE(m && t);
    artifacts::ArtifactServerOptions ao;
    server_ = std::make_unique<artifacts::ArtifactServer>(*store_, ao);
    auto port = server_->start();
    ASSERT_TRUE(port) << port.error().message;
    std::string base = "http://127.0.0.1:" + std::to_string(*port);
    maint_url_ = base + artifacts::ArtifactServer::url_path(m->sha256, "maintenance.iso");
    task_url_ = base + artifacts::ArtifactServer::url_path(t->sha256, "task.iso");
  }

  void TearDown() override {
    vbmc_.reset();  // powers QEMU off
    server_.reset();
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  VbmcConfig config() {
    VbmcConfig c;
    c.listen = "127.0.0.1:0";
    c.password = kPassword;
    c.state_dir = dir_ / "state";
    c.accel = "tcg";                  // fast enough for firmware only; no probe delay
    c.once_settle_ms = 1500;
    c.media_chunk_bytes = 64 * 1024;  // several Range GETs even for a small ISO
    MachineConfig m;
    m.id = "vm1";
    m.serial = "VBMC-TEST-1";
    m.memory_mb = 128;
    m.disk_size = "32M";
    c.machines.push_back(m);
    return c;
  }

  void start(VbmcConfig c) {
    ASSERT_TRUE(finish_config(c));
    auto v = VirtualBmc::create(c, *logger_);
    ASSERT_TRUE(v) << v.error().message;
    vbmc_ = std::move(*v);
    auto p = vbmc_->start();
    ASSERT_TRUE(p) << p.error().message;
    port_ = *p;
    machine_ = vbmc_->machine("vm1");
    ASSERT_NE(machine_, nullptr);
  }

  test::HttpResponse call(const std::string& method, const std::string& path, const json& body = nullptr,
                          Headers extra = {}) {
    Headers h = {{"Authorization", basic_auth("admin", kPassword)}};
    std::string b;
    if (!body.is_null()) {
      b = body.dump();
      h.emplace_back("Content-Type", "application/json");
    }
    h.insert(h.end(), extra.begin(), extra.end());
    return http_request(port_, method, path, h, b);
  }

  json system() { return call("GET", "/redfish/v1/Systems/vm1").json(); }
  int reset(const std::string& type) {
    return call("POST", "/redfish/v1/Systems/vm1/Actions/ComputerSystem.Reset", {{"ResetType", type}}).status;
  }
  std::string slot_path(const std::string& id) { return "/redfish/v1/Managers/vm1/VirtualMedia/" + id; }

  // bootindex of a QEMU device, through QMP.
  int bootindex(const std::string& dev) {
    auto r = machine_->qmp("qom-get", {{"path", "/machine/peripheral/" + dev}, {"property", "bootindex"}});
    EXPECT_TRUE(r) << (r ? "" : r.error().message);
    return r ? r->get<int>() : -100;
  }

  // query-block entry of a drive ("cd0drv").
  json block(const std::string& drive) {
    auto r = machine_->qmp("query-block");
    EXPECT_TRUE(r);
    if (r)
      for (const auto& b : *r)
        if (b.value("device", "") == drive) return b;
    return json::object();
  }

  template <typename Pred>
  bool eventually(Pred pred, std::chrono::milliseconds timeout = 10s) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      if (pred()) return true;
      std::this_thread::sleep_for(100ms);
    }
    return pred();
  }

  fs::path dir_;
  std::unique_ptr<Logger> logger_;
  std::unique_ptr<artifacts::ArtifactStore> store_;
  std::unique_ptr<artifacts::ArtifactServer> server_;
  std::string maint_iso_, task_iso_, maint_url_, task_url_;
  std::unique_ptr<VirtualBmc> vbmc_;
  std::uint16_t port_ = 0;
  QemuMachine* machine_ = nullptr;
};

TEST_F(VbmcTest, PowerOnStartsQemuAndForceOffStopsIt) {
  start(config());
  json s = system();
  EXPECT_EQ(s["PowerState"], "Off");
  EXPECT_EQ(s["Manufacturer"], "QEMU");
  EXPECT_EQ(s["SerialNumber"], "VBMC-TEST-1");
  EXPECT_EQ(s["Boot"]["BootSourceOverrideMode"], "Legacy");
  EXPECT_FALSE(machine_->qmp("query-status"));  // no process yet

  EXPECT_EQ(reset("On"), 204);
  EXPECT_EQ(system()["PowerState"], "On");
  auto st = machine_->qmp("query-status");
  ASSERT_TRUE(st) << st.error().message;
  EXPECT_EQ((*st)["status"], "running");
  EXPECT_TRUE(fs::exists(dir_ / "state" / "machines" / "vm1" / "disk.qcow2"));  // created on first start

  // The ACPI power button needs an OS to act on it; firmware alone ignores it, as on
  // hardware (the controller then forces the machine off).
  EXPECT_EQ(reset("GracefulShutdown"), 204);
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(system()["PowerState"], "On");

  EXPECT_EQ(reset("ForceOff"), 204);
  EXPECT_EQ(system()["PowerState"], "Off");
  EXPECT_FALSE(machine_->qmp("query-status"));
  EXPECT_EQ(reset("Nmi"), 400);  // not offered
  // ForceRestart of a machine that is off powers it on.
  EXPECT_EQ(reset("ForceRestart"), 204);
  EXPECT_EQ(system()["PowerState"], "On");
}

TEST_F(VbmcTest, InsertFetchesOverHttpIntoTheCdDriveAndEjectRemovesIt) {
  start(config());
  ASSERT_EQ(reset("On"), 204);
  json slot = call("GET", slot_path("CD1")).json();
  EXPECT_EQ(slot["Inserted"], false);
  EXPECT_EQ(slot["ConnectedVia"], "NotConnected");
  EXPECT_EQ(slot["MediaTypes"], json::array({"CD", "DVD"}));

  auto r = call("POST", slot_path("CD1") + "/Actions/VirtualMedia.InsertMedia",
                {{"Image", maint_url_}, {"Inserted", true}, {"WriteProtected", true}});
  ASSERT_EQ(r.status, 204) << r.body;
  slot = call("GET", slot_path("CD1")).json();
  EXPECT_EQ(slot["Image"], maint_url_);
  EXPECT_EQ(slot["Inserted"], true);
  EXPECT_EQ(slot["ConnectedVia"], "URI");

  json b = block("cd0drv");
  ASSERT_TRUE(b.contains("inserted")) << b.dump();
  std::string file = b["inserted"]["file"];
  EXPECT_EQ(read_file(file), maint_iso_);  // the bytes QEMU reads are the served ISO
  EXPECT_TRUE(b["inserted"]["ro"].get<bool>());
  EXPECT_FALSE(block("cd1drv").contains("inserted"));

  r = call("POST", slot_path("CD1") + "/Actions/VirtualMedia.EjectMedia");
  EXPECT_EQ(r.status, 204);
  EXPECT_FALSE(block("cd0drv").contains("inserted"));
  EXPECT_EQ(call("GET", slot_path("CD1")).json()["Inserted"], false);
  // Ejecting an empty slot is fine, like on most BMCs.
  EXPECT_EQ(call("POST", slot_path("CD1") + "/Actions/VirtualMedia.EjectMedia").status, 204);

  // The USB stick slot (cd-usb mode) goes to the USB mass-storage drive.
  r = call("POST", slot_path("USB1") + "/Actions/VirtualMedia.InsertMedia", {{"Image", task_url_}});
  ASSERT_EQ(r.status, 204) << r.body;
  b = block("usb0drv");
  ASSERT_TRUE(b.contains("inserted"));
  EXPECT_EQ(read_file(b["inserted"]["file"].get<std::string>()), task_iso_);

  // A URL the BMC cannot fetch is refused, and nothing is inserted.
  std::string missing = maint_url_.substr(0, maint_url_.find("/artifacts/")) +
                        artifacts::ArtifactServer::url_path(std::string(64, '0'), "missing.iso");
  r = call("POST", slot_path("CD2") + "/Actions/VirtualMedia.InsertMedia", {{"Image", missing}});
  EXPECT_EQ(r.status, 400);
  EXPECT_FALSE(block("cd1drv").contains("inserted"));
}

TEST_F(VbmcTest, MediaFetcherUsesRangeRequestsAndCachesByValidators) {
  MediaFetcher fetcher(dir_ / "cache", 64 * 1024, logger_.get());
  auto f = fetcher.fetch(task_url_);
  ASSERT_TRUE(f) << f.error().message;
  EXPECT_FALSE(f->from_cache);
  EXPECT_EQ(f->size, task_iso_.size());
  EXPECT_EQ(f->range_requests, static_cast<int>((task_iso_.size() + 65535) / 65536));
  EXPECT_EQ(read_file(f->file), task_iso_);
  auto again = fetcher.fetch(task_url_);  // same ETag and size: one HEAD, no GET
  ASSERT_TRUE(again);
  EXPECT_TRUE(again->from_cache);
  EXPECT_EQ(again->range_requests, 0);
  EXPECT_FALSE(fetcher.fetch("ftp://example/x.iso"));
}

TEST_F(VbmcTest, MediaInsertedWhilePoweredOffIsInTheDriveAtPowerOn) {
  start(config());
  auto r = call("POST", slot_path("CD2") + "/Actions/VirtualMedia.InsertMedia", {{"Image", task_url_}});
  ASSERT_EQ(r.status, 204) << r.body;
  ASSERT_EQ(reset("On"), 204);
  json b = block("cd1drv");
  ASSERT_TRUE(b.contains("inserted"));
  EXPECT_EQ(read_file(b["inserted"]["file"].get<std::string>()), task_iso_);
  // PATCH eject (BMCs without the action) works too, with the slot's ETag.
  auto g = call("GET", slot_path("CD2"));
  r = call("PATCH", slot_path("CD2"), {{"Image", nullptr}, {"Inserted", false}}, {{"If-Match", g.header("etag")}});
  EXPECT_EQ(r.status, 204) << r.body;
  EXPECT_FALSE(block("cd1drv").contains("inserted"));
}

TEST_F(VbmcTest, BootOnceCdSetsBootindexAndAResetBringsTheDiskBack) {
  start(config());
  ASSERT_EQ(reset("On"), 204);
  EXPECT_LT(bootindex("disk0"), bootindex("cd0"));  // disk first by default

  auto g = call("GET", "/redfish/v1/Systems/vm1");
  std::string etag = g.header("etag");
  ASSERT_FALSE(etag.empty());
  json once = {{"Boot", {{"BootSourceOverrideTarget", "Cd"}, {"BootSourceOverrideEnabled", "Once"}}}};
  EXPECT_EQ(call("PATCH", "/redfish/v1/Systems/vm1", once, {{"If-Match", "\"stale\""}}).status, 412);
  auto r = call("PATCH", "/redfish/v1/Systems/vm1", once, {{"If-Match", etag}});
  ASSERT_EQ(r.status, 204) << r.body;
  EXPECT_EQ(system()["Boot"]["BootSourceOverrideEnabled"], "Once");
  EXPECT_LT(bootindex("cd0"), bootindex("disk0"));
  EXPECT_LT(bootindex("cd1"), bootindex("disk0"));
  EXPECT_EQ(bootindex("cd0"), 1);

  int boots = machine_->boot_count();
  ASSERT_EQ(reset("ForceRestart"), 204);
  EXPECT_GT(machine_->boot_count(), boots);
  // The boot that just began keeps the override (firmware resets during POST included)...
  EXPECT_EQ(bootindex("cd0"), 1);
  // ...and once it is under way, the disk is first again and Once reads as consumed.
  ASSERT_TRUE(eventually([&] { return system()["Boot"]["BootSourceOverrideEnabled"] == "Disabled"; }));
  EXPECT_EQ(bootindex("disk0"), 1);
  EXPECT_LT(bootindex("disk0"), bootindex("cd0"));

  // Continuous survives resets.
  r = call("PATCH", "/redfish/v1/Systems/vm1",
           {{"Boot", {{"BootSourceOverrideTarget", "Pxe"}, {"BootSourceOverrideEnabled", "Continuous"}}}});
  ASSERT_EQ(r.status, 204);
  EXPECT_EQ(bootindex("nic0"), 1);
  ASSERT_EQ(reset("ForceRestart"), 204);
  std::this_thread::sleep_for(2s);
  EXPECT_EQ(system()["Boot"]["BootSourceOverrideEnabled"], "Continuous");
  EXPECT_EQ(bootindex("nic0"), 1);
  // Disabled: back to the disk at once.
  r = call("PATCH", "/redfish/v1/Systems/vm1", {{"Boot", {{"BootSourceOverrideEnabled", "Disabled"}}}});
  ASSERT_EQ(r.status, 204);
  EXPECT_EQ(bootindex("disk0"), 1);
  // A mode the machine was not started with is refused.
  r = call("PATCH", "/redfish/v1/Systems/vm1", {{"Boot", {{"BootSourceOverrideMode", "UEFI"}}}});
  EXPECT_EQ(r.status, 400);
}

TEST_F(VbmcTest, OnceSetWhilePoweredOffIsUsedByThePowerOnBoot) {
  start(config());
  auto r = call("PATCH", "/redfish/v1/Systems/vm1",
                {{"Boot", {{"BootSourceOverrideTarget", "Cd"}, {"BootSourceOverrideEnabled", "Once"}}}});
  ASSERT_EQ(r.status, 204);
  ASSERT_EQ(reset("On"), 204);
  EXPECT_EQ(bootindex("cd0"), 1);  // on the command line
  ASSERT_TRUE(eventually([&] { return system()["Boot"]["BootSourceOverrideEnabled"] == "Disabled"; }));
  EXPECT_EQ(bootindex("disk0"), 1);
}

TEST_F(VbmcTest, UefiMachineRunsOvmfWithItsOwnVarsAndAutoAccelPicksOne) {
  if (!fs::exists("/usr/share/OVMF/OVMF_CODE.fd")) GTEST_SKIP() << "package ovmf not installed";
  VbmcConfig c = config();
  c.accel = "auto";  // the probe: KVM only when it really runs a 64-bit guest
  c.machines[0].firmware = "uefi";
  start(c);
  EXPECT_TRUE(vbmc_->accel() == "kvm" || vbmc_->accel() == "tcg");
  EXPECT_EQ(system()["Boot"]["BootSourceOverrideMode"], "UEFI");
  ASSERT_EQ(reset("On"), 204);
  EXPECT_EQ(system()["PowerState"], "On");
  EXPECT_TRUE(fs::exists(dir_ / "state" / "machines" / "vm1" / "OVMF_VARS.fd"));
  auto st = machine_->qmp("query-status");
  ASSERT_TRUE(st);
  EXPECT_EQ((*st)["status"], "running");
}

TEST_F(VbmcTest, SessionsAndAuthentication) {
  start(config());
  EXPECT_EQ(http_request(port_, "GET", "/redfish/v1/").status, 200);  // the root is public
  EXPECT_EQ(http_request(port_, "GET", "/redfish/v1/Systems").status, 401);
  EXPECT_EQ(http_request(port_, "GET", "/redfish/v1/Systems", {{"Authorization", basic_auth("admin", "wrong")}}).status,
            401);
  auto s = http_request(port_, "POST", "/redfish/v1/SessionService/Sessions", {{"Content-Type", "application/json"}},
                        json{{"UserName", "admin"}, {"Password", "nope"}}.dump());
  EXPECT_EQ(s.status, 401);
  s = http_request(port_, "POST", "/redfish/v1/SessionService/Sessions", {{"Content-Type", "application/json"}},
                   json{{"UserName", "admin"}, {"Password", kPassword}}.dump());
  ASSERT_EQ(s.status, 201);
  std::string token = s.header("x-auth-token"), loc = s.header("location");
  ASSERT_FALSE(token.empty());
  EXPECT_EQ(http_request(port_, "GET", "/redfish/v1/Systems/vm1", {{"X-Auth-Token", token}}).status, 200);
  EXPECT_EQ(http_request(port_, "DELETE", loc, {{"X-Auth-Token", token}}).status, 204);
  EXPECT_EQ(http_request(port_, "GET", "/redfish/v1/Systems/vm1", {{"X-Auth-Token", token}}).status, 401);
  EXPECT_EQ(call("GET", "/redfish/v1/Systems/nope").status, 404);
}

TEST_F(VbmcTest, ControllerRedfishClientProvisionsThroughIt) {
  start(config());
  SystemClock clock;
  redfish::RealSleeper sleeper;
  redfish::RedfishOptions opt;
  opt.power_poll_ms = 200;
  opt.retry_base_ms = 100;
  opt.retry_cap_ms = 300;
  redfish::RedfishContext ctx(clock, sleeper, opt, logger_.get());
  redfish::BmcEndpoint ep;
  ep.address = vbmc_->address();
  ep.username = "admin";
  ep.password = kPassword;
  ep.profile = "auto";
  {
    redfish::BmcClient client(ctx, ep);
    auto facts = client.discover();
    ASSERT_TRUE(facts) << facts.error().message;
    EXPECT_EQ(facts->profile, "generic");
    EXPECT_EQ(facts->manufacturer, "QEMU");
    EXPECT_EQ(facts->serial, "VBMC-TEST-1");
    EXPECT_EQ(facts->power_state, "Off");
    EXPECT_EQ(facts->slots.size(), 3u);
    EXPECT_EQ(facts->boot_mode, "Legacy");

    auto ins = client.insert_media({{maint_url_, redfish::MediaKind::cd}, {task_url_, redfish::MediaKind::cd}});
    ASSERT_TRUE(ins) << ins.error().message;
    ASSERT_EQ(ins->size(), 2u);
    EXPECT_NE((*ins)[0].slot_uri, (*ins)[1].slot_uri);
    // Repeating the step is a no-op (the reconciler may repeat it after a crash).
    auto again = client.insert_media({{maint_url_, redfish::MediaKind::cd}, {task_url_, redfish::MediaKind::cd}});
    ASSERT_TRUE(again) << again.error().message;
    EXPECT_TRUE((*again)[0].already_present && (*again)[1].already_present);

    auto boot = client.set_boot_once_cd(redfish::BootMode::keep);
    ASSERT_TRUE(boot) << boot.error().message;
    EXPECT_EQ(boot->target, "Cd");
    EXPECT_EQ(boot->enabled, "Once");

    auto cycle = client.power_cycle_into_boot();
    ASSERT_TRUE(cycle) << cycle.error().message;
    EXPECT_EQ(cycle->issued, std::vector<std::string>{"On"});
    EXPECT_EQ(cycle->power_state, "On");
    // The machine is booting from the CD holding the maintenance ISO.
    EXPECT_EQ(bootindex("cd0"), 1);
    json b = block("cd0drv");
    ASSERT_TRUE(b.contains("inserted"));
    EXPECT_EQ(read_file(b["inserted"]["file"].get<std::string>()), maint_iso_);
    ASSERT_TRUE(block("cd1drv").contains("inserted"));

    auto clean = client.cleanup({maint_url_, task_url_}, {redfish::CleanupOptions::BootRestore::hdd_once, true});
    ASSERT_TRUE(clean) << clean.error().message;
    EXPECT_FALSE(block("cd0drv").contains("inserted"));
    EXPECT_FALSE(block("cd1drv").contains("inserted"));
    auto power = client.power_state();
    ASSERT_TRUE(power);
    EXPECT_EQ(*power, "On");
  }
  // The client logged out; the machine boots its disk.
  EXPECT_EQ(bootindex("disk0"), 1);
}

TEST(VbmcConfigTest, TomlAndJsonAndListenRules) {
  auto c = parse_config_toml(R"(
listen = "127.0.0.1:8123"
password = "x"
state_dir = "/tmp/s"
[[machine]]
id = "a"
memory_mb = 256
firmware = "uefi"
[[machine]]
id = "b"
cd_drives = 1
usb = false
)");
  ASSERT_TRUE(c) << c.error().message;
  ASSERT_TRUE(finish_config(*c)) << "defaults";
  ASSERT_EQ(c->machines.size(), 2u);
  EXPECT_EQ(c->machines[0].firmware, "uefi");
  EXPECT_EQ(c->machines[0].serial, "VBMC-a");
  EXPECT_EQ(c->machines[0].disk, fs::path("/tmp/s/machines/a/disk.qcow2"));
  EXPECT_NE(c->machines[0].mac, c->machines[1].mac);
  auto j = parse_config_json(R"({"listen":"0.0.0.0:8000","password":"x","state_dir":"/tmp/s","machines":[{"id":"a"}]})");
  ASSERT_TRUE(j);
  EXPECT_FALSE(finish_config(*j));  // loopback only
  EXPECT_FALSE(parse_config_toml("typo = 1\n"));
  auto nopass = parse_config_toml("state_dir = \"/tmp/s\"\n[[machine]]\nid = \"a\"\n");
  ASSERT_TRUE(nopass);
  EXPECT_FALSE(finish_config(*nopass));
}

// The executable: config file, password from the environment (never on the command line),
// serves Redfish, stops cleanly on SIGTERM.
TEST(VbmcBinaryTest, ServesFromAConfigFileAndStopsOnSigterm) {
  fs::path dir = fs::temp_directory_path() / ("vbmc-bin-" + crypto::random_token(6));
  fs::create_directories(dir);
  std::uint16_t port = test::free_port();
  std::ofstream(dir / "vbmc.toml") << "listen = \"127.0.0.1:" << port << "\"\nstate_dir = \"" << (dir / "state").string()
                                   << "\"\naccel = \"tcg\"\n[[machine]]\nid = \"demo\"\nmemory_mb = 128\n";
  pid_t pid = ::fork();
  if (pid == 0) {
    ::setenv("PROVISIONER_VBMC_PASSWORD", "bin-password", 1);
    int null = ::open("/dev/null", O_WRONLY);
    ::dup2(null, 1);
    ::dup2(null, 2);
    ::execl(PROVISIONER_VBMC_BIN, PROVISIONER_VBMC_BIN, "--config", (dir / "vbmc.toml").c_str(), nullptr);
    ::_exit(127);
  }
  bool up = false;
  for (int i = 0; i < 100 && !up; ++i) {
    up = test::accepts_connections(port);
    if (!up) std::this_thread::sleep_for(50ms);
  }
  ASSERT_TRUE(up);
  auto r = http_request(port, "GET", "/redfish/v1/Systems", {{"Authorization", basic_auth("admin", "bin-password")}});
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.json()["Members"][0]["@odata.id"], "/redfish/v1/Systems/demo");
  ::kill(pid, SIGTERM);
  int st = 0;
  ::waitpid(pid, &st, 0);
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace provisioner::vbmc
