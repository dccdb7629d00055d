// The network boot path on a real DHCP/TFTP network, not QEMU's built-in TFTP.
//
// The test process moves into a network namespace of its own (tests/support/netns_lab.hpp):
// a bridge br0 (10.77.0.1/24), the site's DHCP server in a namespace of its own, and a client
// namespace for the machines: busybox udhcpc (a real DHCP client), dhcp_probe (the DHCP
// exchange of a PXE ROM: DISCOVER, proxy offer, boot server request on 4011) and tftp-hpa's
// client.
// The controller listens beside br0 with its supervised dnsmasq in proxy mode. Every address
// exists only inside these namespaces, IPv6 is off in all of them (no multicast), and there
// is no route out.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <thread>

#include "common/atomic_file.hpp"
#include "tests/integration/controller/test_jobs.hpp"
#include "tests/integration/controller/webhook_signer.hpp"
#include "tests/support/controller_process.hpp"
#include "tests/support/netns_lab.hpp"

using namespace provisioner;
using namespace provisioner::test;

namespace {

// The lab, once per test process (it moves the process into its own network namespace).
class Lab : public testing::Environment {
 public:
  static inline std::unique_ptr<NetnsLab> lab;
  static inline std::string why_not;
  void SetUp() override {
    if (shell("command -v tftp").status != 0) {
      why_not = "needs tftp (tftp-hpa, scripts/install-deps)";
      return;
    }
    lab = NetnsLab::enter(why_not);
  }
  void TearDown() override { lab.reset(); }
};

[[maybe_unused]] testing::Environment* const lab_environment = testing::AddGlobalTestEnvironment(new Lab);

ShellRun sh(const std::string& command) { return shell(command); }
void must(const std::string& command) { shell_must(command); }

const char* kBiosVendor = "PXEClient:Arch:00000:UNDI:002001";
const char* kUefiVendor = "PXEClient:Arch:00007:UNDI:003016";

std::string decode_hex(const std::string& text) {
  std::string out;
  if (text.rfind("hex:", 0) != 0) return text;
  for (std::size_t i = 4; i + 1 < text.size(); i += 2) out += static_cast<char>(std::stoi(text.substr(i, 2), nullptr, 16));
  return out;
}

class PxeNetwork : public testing::Test {
 protected:
  void SetUp() override {
    if (!Lab::lab) GTEST_SKIP() << Lab::why_not;
    client = Lab::lab->client();
    std::ofstream(files.path() / "vmlinuz") << "stand-in kernel";
    std::ofstream(files.path() / "initrd.img") << "stand-in initrd";
    auto fw = files.path() / "rpi-firmware";
    std::filesystem::create_directories(fw / "overlays");
    for (const char* f : {"start4.elf", "fixup4.dat", "bcm2711-rpi-4-b.dtb", "kernel8.img", "initrd.img", "overlays/vc4-kms-v3d.dtbo"})
      std::ofstream(fw / f) << "stand-in " << f << "\n";
  }

  void start_controller(const std::string& pxe_extra = "",
                        const std::string& dhcp = "dhcp = \"proxy\"\nsubnet = \"10.77.0.0\"\n") {
    // Ports first (the config names them), then the controller, listening beside br0.
    controller = std::make_unique<ControllerProcess>("", "text", "", "0.0.0.0");
    std::string extra = "public_url = \"http://10.77.0.1:" + std::to_string(controller->port()) + "\"\n" +
                        "[pxe]\nenabled = true\ninterface = \"br0\"\n" + dhcp +
                        "kernel = \"" + (files.path() / "vmlinuz").string() + "\"\n"
                        "initrd = \"" + (files.path() / "initrd.img").string() + "\"\n"
                        "rpi_firmware = \"" + (files.path() / "rpi-firmware").string() + "\"\n" + pxe_extra;
    rewrite_config(extra);
    controller->start();
    // dnsmasq is up once its log says so (it binds before it logs "started").
    for (int i = 0; i < 100 && dnsmasq_pid() <= 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    ASSERT_GT(dnsmasq_pid(), 0) << controller->log_text();
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
  }

  // The generated config with the controller's own ports, plus `extra`.
  void rewrite_config(const std::string& extra) {
    auto file = controller->data_dir().parent_path() / "controller.toml";
    auto text = *read_file(file);
    auto artifacts = text.find("[artifacts]\n");
    text.insert(artifacts + 12, "public_url = \"http://10.77.0.1:" + std::to_string(controller->artifacts_port()) + "\"\n");
    auto log = text.find("[log]");
    text.insert(log, extra + "\n");
    std::ofstream(file) << text;
  }

  // dnsmasq itself (it runs under a guardian process the controller forks).
  pid_t dnsmasq_pid() {
    auto r = sh("pgrep -f -- '--conf-file=" + (controller->data_dir() / "pxe/dnsmasq.conf").string() + "'");
    return r.status == 0 ? std::stoi(r.output) : -1;
  }

  void set_client_mac(const std::string& mac) {
    must("ip -n " + client + " link set c1 down && ip -n " + client + " link set c1 address " + mac + " && ip -n " +
         client + " addr flush dev c1 && ip -n " + client + " link set c1 up");
  }

  // A real DHCP client takes an address from the site's server.
  std::string take_lease() {
    auto ip = Lab::lab->take_lease();
    EXPECT_FALSE(ip.empty()) << "no lease from the site's DHCP server";
    return ip;
  }

  // What a PXE ROM with this identity is told (dhcp_probe's summary line).
  nlohmann::json pxe(const std::string& mac, int arch, const std::string& vendor, const std::string& user_class = "",
                     const std::string& ciaddr = "") {
    std::string cmd = "ip netns exec " + client + " " + std::string(PROVISIONER_DHCP_PROBE) + " --interface c1 --mac " +
                      mac + " --arch " + std::to_string(arch) + " --vendor-class " + vendor + " --wait-ms 1500 --pxe";
    if (!user_class.empty()) cmd += " --user-class " + user_class;
    if (!ciaddr.empty()) cmd += " --ciaddr " + ciaddr;
    auto r = sh(cmd);
    // The summary is the last line.
    auto start = r.output.rfind("\n{");
    auto last = start == std::string::npos ? r.output : r.output.substr(start + 1);
    auto j = nlohmann::json::parse(last, nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << r.output;
    return j;
  }

  // Every DHCP reply to one DISCOVER (dhcp_probe without --pxe).
  // (Full DHCP pings an address before it offers it: the first offer takes a few seconds.)
  std::vector<nlohmann::json> offers(const std::string& mac, int arch, const std::string& vendor,
                                     const std::string& user_class = "") {
    std::string cmd = "ip netns exec " + client + " " + std::string(PROVISIONER_DHCP_PROBE) + " --interface c1 --mac " +
                      mac + " --arch " + std::to_string(arch) + " --vendor-class " + vendor + " --wait-ms 4000";
    if (!user_class.empty()) cmd += " --user-class " + user_class;
    std::vector<nlohmann::json> out;
    std::istringstream lines(sh(cmd).output);
    for (std::string line; std::getline(lines, line);)
      if (auto j = nlohmann::json::parse(line, nullptr, false); !j.is_discarded()) out.push_back(j);
    return out;
  }
  // The controller's reply among them (null when it sent none).
  nlohmann::json ours(const std::vector<nlohmann::json>& replies) {
    for (const auto& r : replies)
      if (r["from"] == "10.77.0.1") return r;
    return nullptr;
  }

  // tftp-hpa's client, from the client namespace.
  std::optional<std::string> tftp_get(const std::string& path) {
    auto local = Lab::lab->dir() / "tftp-out";
    std::filesystem::remove(local);
    auto r = sh("ip netns exec " + client + " tftp -m binary 10.77.0.1 -c get " + path + " " + local.string());
    auto bytes = read_file(local);
    // tftp-hpa exits 0 whatever happened; anything it says is an error.
    if (r.status != 0 || !bytes || !r.output.empty()) return std::nullopt;
    return *bytes;
  }

  std::string create_node(const nlohmann::json& record) {
    auto r = controller->post("/api/v1/nodes", record.dump());
    EXPECT_EQ(r.status, 201) << r.body;
    return r.json().value("id", "");
  }

  // Drives a node through a successful install over the API (the boot request, the reports).
  void install(const std::string& node_id, const std::string& mac) {
    auto r = controller->post("/api/v1/jobs", nlohmann::json{{"node", {{"id", node_id}}}, {"recipe", linux_recipe()}}.dump());
    ASSERT_EQ(r.status, 201) << r.body;
    std::string job = r.json()["id"];
    controller->wait_for_status(job, "provisioning");
    ASSERT_NE(http_request(controller->port(), "GET", "/boot/ipxe?mac=" + mac).body.find("kernel"), std::string::npos);
    for (const char* status : {"running", "success"}) {
      auto body = nlohmann::json{{"job_id", job}, {"status", status}, {"step", "provision-linux.target"}}.dump();
      ASSERT_EQ(send_webhook(*controller, node_id, controller->webhook_key(job), body).status, 200);
    }
    controller->wait_for_status(job, "complete");
  }

  // Polls until `pred` holds (the host list reloads within the supervisor's refresh).
  template <typename F>
  bool eventually(F pred, int seconds = 8) {
    for (int i = 0; i < seconds * 4; ++i) {
      if (pred()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
    }
    return pred();
  }

  TempDir files;
  std::string client;
  std::unique_ptr<ControllerProcess> controller;
};

}  // namespace

TEST_F(PxeNetwork, RomsGetTheirIpxeBinaryAndIpxeGetsTheBootScriptBesideTheSitesDhcpServer) {
  start_controller();
  set_client_mac("52:54:00:aa:bb:01");
  auto ip = take_lease();
  ASSERT_EQ(ip.rfind("10.77.0.1", 0), 0u) << "an address from the site's range: " << ip;
  ASSERT_NE(ip, "10.77.0.1");

  auto bios = pxe("52:54:00:aa:bb:01", 0, kBiosVendor, "", ip);
  EXPECT_EQ(bios["pxe"], true) << bios;
  EXPECT_EQ(bios.value("boot_file", ""), "undionly.kpxe") << bios;
  EXPECT_EQ(bios["next_server"], "10.77.0.1");
  EXPECT_EQ(bios["proxy"], "10.77.0.1");
  EXPECT_TRUE(bios.contains("lease")) << "the site's server still offers the address: " << bios;

  auto uefi = pxe("52:54:00:aa:bb:01", 7, kUefiVendor, "", ip);
  EXPECT_EQ(uefi.value("boot_file", ""), "ipxe.efi") << uefi;
  auto uefi9 = pxe("52:54:00:aa:bb:01", 9, "PXEClient:Arch:00009:UNDI:003016", "", ip);
  EXPECT_EQ(uefi9.value("boot_file", ""), "ipxe.efi") << uefi9;

  // iPXE itself (user class iPXE) gets the HTTP script: no chain loop.
  std::string script_url = "http://10.77.0.1:" + std::to_string(controller->port()) + "/boot/boot.ipxe";
  EXPECT_EQ(pxe("52:54:00:aa:bb:01", 0, kBiosVendor, "iPXE", ip).value("boot_file", ""), script_url);
  EXPECT_EQ(pxe("52:54:00:aa:bb:01", 7, kUefiVendor, "iPXE", ip).value("boot_file", ""), script_url);

  // The files, by TFTP from the controller's dnsmasq, are Debian's iPXE builds.
  auto undionly = tftp_get("undionly.kpxe");
  ASSERT_TRUE(undionly.has_value());
  EXPECT_EQ(*undionly, *read_file("/usr/lib/ipxe/undionly.kpxe"));
  auto efi = tftp_get("ipxe.efi");
  ASSERT_TRUE(efi.has_value());
  EXPECT_EQ(*efi, *read_file("/usr/lib/ipxe/ipxe.efi"));
  EXPECT_FALSE(tftp_get("../../etc/passwd").has_value());
  // The script, over HTTP from the client's network.
  auto script = sh("ip netns exec " + client + " busybox wget -q -O - " + script_url);
  EXPECT_NE(script.output.find("chain http://10.77.0.1:"), std::string::npos) << script.output;
  // And what the controller wrote passes dnsmasq's own check.
  EXPECT_EQ(sh("dnsmasq --test --conf-file=" + (controller->data_dir() / "pxe/dnsmasq.conf").string()).status, 0);
}

TEST_F(PxeNetwork, InstalledAndActiveNodesGetNoPxeOfferAtAll) {
  start_controller();
  const std::string mac = "52:54:00:aa:bb:02";
  set_client_mac(mac);
  auto ip = take_lease();
  auto id = create_node({{"macs", {mac}}});
  EXPECT_TRUE(eventually([&] { return pxe(mac, 0, kBiosVendor, "", ip)["pxe"] == true; })) << "discovered: answered";

  install(id, "52-54-00-aa-bb-02");
  ASSERT_EQ(controller->get("/api/v1/nodes/" + id).json()["state"], "installed");
  EXPECT_TRUE(eventually([&] { return pxe(mac, 0, kBiosVendor, "", ip)["pxe"] == false; })) << "installed: no offer";
  auto quiet = pxe(mac, 7, kUefiVendor, "", ip);
  EXPECT_EQ(quiet["pxe"], false) << quiet;
  EXPECT_TRUE(quiet.contains("lease")) << "the site's server still gives it its address: " << quiet;
  EXPECT_EQ(pxe(mac, 0, kBiosVendor, "iPXE", ip)["pxe"], false);
  auto hosts = *read_file(controller->data_dir() / "pxe/hosts");
  EXPECT_NE(hosts.find(mac + ",set:noboot"), std::string::npos) << hosts;

  auto active = http_request(controller->port(), "PATCH", "/api/v1/nodes/" + id + "/state",
                             {{"Authorization", std::string("Bearer ") + ControllerProcess::kAdminToken}},
                             R"({"state": "active"})");
  ASSERT_EQ(active.status, 200) << active.body;
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  EXPECT_EQ(pxe(mac, 0, kBiosVendor, "", ip)["pxe"], false) << "active: no offer";
  // Another machine, unknown, is still answered while discovery is on.
  EXPECT_TRUE(eventually([&] { return pxe("52:54:00:aa:bb:03", 0, kBiosVendor, "", ip)["pxe"] == true; }));
}

TEST_F(PxeNetwork, WithDiscoveryOffOnlyKnownNodesAreAnswered) {
  start_controller("discover = \"off\"\n");
  const std::string known = "52:54:00:aa:bb:04", stranger = "52:54:00:aa:bb:05";
  set_client_mac(known);
  auto ip = take_lease();
  EXPECT_EQ(pxe(stranger, 0, kBiosVendor, "", ip)["pxe"], false);
  create_node({{"macs", {known}}});
  EXPECT_TRUE(eventually([&] { return pxe(known, 0, kBiosVendor, "", ip)["pxe"] == true; }));
  EXPECT_EQ(pxe(stranger, 7, kUefiVendor, "", ip)["pxe"], false);
  // And its boot request registers nobody.
  EXPECT_EQ(http_request(controller->port(), "GET", "/boot/ipxe?mac=52-54-00-aa-bb-05").status, 200);
  EXPECT_EQ(controller->get("/api/v1/nodes").json()["nodes"].size(), 1u);
}

TEST_F(PxeNetwork, ARaspberryPiGetsOption43AndReadsItsFolderOnlyWhileItHasAJob) {
  start_controller();
  const std::string mac = "dc:a6:32:12:34:56";
  set_client_mac(mac);
  take_lease();  // the site's server gives the Pi its address; ours only the boot answer
  auto id = create_node({{"macs", {mac}}, {"rpi_serial", "1a2b3c4d"}});
  // The host list changed: dnsmasq applies it (a restart in proxy mode) within a moment.
  nlohmann::json offer;
  EXPECT_TRUE(eventually([&] { return (offer = pxe(mac, 0, kBiosVendor))["pxe"] == true; })) << offer;
  EXPECT_NE(decode_hex(offer.value("option43", "")).find("Raspberry Pi Boot"), std::string::npos) << offer;
  EXPECT_FALSE(tftp_get("1a2b3c4d/start4.elf").has_value()) << "no job: nothing to boot";

  auto r = controller->post("/api/v1/jobs", nlohmann::json{{"node", {{"id", id}}}, {"recipe", linux_recipe()}}.dump());
  ASSERT_EQ(r.status, 201) << r.body;
  std::string job = r.json()["id"];
  controller->wait_for_status(job, "provisioning");
  ASSERT_TRUE(eventually([&] { return tftp_get("1a2b3c4d/start4.elf").has_value(); }))
      << sh("ls -laR " + (controller->data_dir() / "pxe/tftp").string()).output << controller->log_text();
  EXPECT_EQ(*tftp_get("1a2b3c4d/start4.elf"), "stand-in start4.elf\n");
  EXPECT_EQ(*tftp_get("1a2b3c4d/overlays/vc4-kms-v3d.dtbo"), "stand-in overlays/vc4-kms-v3d.dtbo\n");
  auto cmdline = tftp_get("1a2b3c4d/cmdline.txt");
  ASSERT_TRUE(cmdline.has_value());
  auto view = controller->get("/api/v1/jobs/" + job).json();
  std::string task_url = view["media"]["task_iso"]["url"], task_sha = view["media"]["task_iso"]["sha256"];
  EXPECT_NE(cmdline->find("provision.task=" + task_url + " provision.sha256=" + task_sha), std::string::npos) << *cmdline;
  EXPECT_EQ(task_url.rfind("http://10.77.0.1:", 0), 0u) << task_url;
  auto config_txt = tftp_get("1a2b3c4d/config.txt");
  ASSERT_TRUE(config_txt.has_value());
  EXPECT_NE(config_txt->find("initramfs initrd.img"), std::string::npos);

  // The Pi's quirk: it asks for the file's size (tsize), aborts, then asks again.
  int fd = ::socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(69);
  inet_pton(AF_INET, "10.77.0.1", &to.sin_addr);
  auto rrq = [&] {
    std::string req = std::string("\0\1", 2) + "1a2b3c4d/start4.elf" + std::string("\0", 1) + "octet" + std::string("\0", 1) +
                      "tsize" + std::string("\0", 1) + "0" + std::string("\0", 1);
    ::sendto(fd, req.data(), req.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to);
    char buf[1024];
    sockaddr_in from{};
    socklen_t flen = sizeof from;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 2000) <= 0) return std::make_pair(std::string(), from);
    auto n = ::recvfrom(fd, buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &flen);
    return std::make_pair(std::string(buf, n > 0 ? static_cast<std::size_t>(n) : 0), from);
  };
  auto [oack, server] = rrq();
  ASSERT_GE(oack.size(), 2u);
  EXPECT_EQ(oack[1], '\6') << "an OACK";
  EXPECT_NE(oack.find(std::string("tsize\0", 6) + std::to_string(std::string("stand-in start4.elf\n").size())), std::string::npos);
  std::string abort = std::string("\0\5\0\0", 4) + "abort" + std::string("\0", 1);
  ::sendto(fd, abort.data(), abort.size(), 0, reinterpret_cast<sockaddr*>(&server), sizeof server);
  ::close(fd);
  EXPECT_EQ(*tftp_get("1a2b3c4d/start4.elf"), "stand-in start4.elf\n") << "and the second request is served";

  // Installed: the folder is gone and no offer comes.
  for (const char* status : {"running", "success"}) {
    auto body = nlohmann::json{{"job_id", job}, {"status", status}, {"step", "provision-linux.target"}}.dump();
    ASSERT_EQ(send_webhook(*controller, id, controller->webhook_key(job), body).status, 200);
  }
  controller->wait_for_status(job, "complete");
  EXPECT_EQ(controller->get("/api/v1/nodes/" + id).json()["state"], "installed");
  EXPECT_TRUE(eventually([&] { return !tftp_get("1a2b3c4d/start4.elf").has_value(); }));
  EXPECT_TRUE(eventually([&] { return pxe(mac, 0, kBiosVendor)["pxe"] == false; }));
}

TEST_F(PxeNetwork, DnsmasqIsRestartedWhenItDiesAndEndsWithTheController) {
  start_controller();
  set_client_mac("52:54:00:aa:bb:06");
  auto ip = take_lease();
  // The lease made the controller discover the client, and in proxy mode a new host list
  // restarts dnsmasq (controller/pxe/README.md): the pid is taken once it has stayed the same
  // for half a second (never kill(-1), never a pid that is ending anyway).
  pid_t first = -1;
  ASSERT_TRUE(eventually([&] {
    auto before = dnsmasq_pid();
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    return before > 0 && dnsmasq_pid() == before && (first = before) > 0;
  }, 10)) << controller->log_text();
  ASSERT_EQ(::kill(first, SIGKILL), 0);
  EXPECT_TRUE(eventually([&] { return dnsmasq_pid() > 0 && dnsmasq_pid() != first; }, 10)) << controller->log_text();
  nlohmann::json answer;
  EXPECT_TRUE(eventually([&] {
    answer = pxe("52:54:00:aa:bb:06", 0, kBiosVendor, "", ip);
    return answer.value("boot_file", "") == "undionly.kpxe";
  }, 5)) << answer << "\n" << controller->log_text() << *read_file(controller->data_dir() / "pxe/dnsmasq.log");
  EXPECT_NE(controller->log_text().find("dnsmasq exited; restarting it"), std::string::npos);

  // A controller that is killed takes its dnsmasq with it: no orphan keeps the DHCP port.
  auto second = dnsmasq_pid();
  controller->kill(SIGKILL);
  // Gone, or a zombie nobody reaps (its parent is dead; this container's init may not reap).
  auto gone = [&] {
    auto stat = read_file("/proc/" + std::to_string(second) + "/stat");
    return !stat || stat->find(") Z ") != std::string::npos;
  };
  EXPECT_TRUE(eventually(gone, 5)) << "dnsmasq " << second << " outlived the controller";
  EXPECT_EQ(pxe("52:54:00:aa:bb:06", 0, kBiosVendor, "", ip)["pxe"], false);
}

TEST_F(PxeNetwork, FullDhcpLeasesItsOwnRangeAndAnswersUefiHttpBootWithAUrl) {
  start_controller("", "dhcp = \"full\"\nrange_start = \"10.77.0.200\"\nrange_end = \"10.77.0.210\"\n");
  const std::string mac = "52:54:00:aa:bb:10";
  set_client_mac(mac);
  // The first DISCOVER after the link came up may be lost (a DHCP client retries, so does this).
  nlohmann::json uefi;
  ASSERT_TRUE(eventually([&] { return !(uefi = ours(offers(mac, 7, kUefiVendor))).is_null(); }, 20))
      << "no offer from the controller's dnsmasq:\n" << *read_file(controller->data_dir() / "pxe/dnsmasq.log")
      << controller->log_text();
  EXPECT_EQ(uefi["yiaddr"].get<std::string>().rfind("10.77.0.2", 0), 0u) << uefi;  // .200–.210
  EXPECT_EQ(uefi["boot_file"], "ipxe.efi") << uefi;
  EXPECT_EQ(uefi["siaddr"], "10.77.0.1");
  EXPECT_EQ(ours(offers(mac, 0, kBiosVendor))["boot_file"], "undionly.kpxe");
  EXPECT_EQ(ours(offers(mac, 0, kBiosVendor, "iPXE"))["boot_file"],
            "http://10.77.0.1:" + std::to_string(controller->port()) + "/boot/boot.ipxe");
  // UEFI HTTP Boot: an absolute URL, and option 60 "HTTPClient" so the firmware takes it.
  auto http = ours(offers(mac, 16, "HTTPClient:Arch:00016:UNDI:003001"));
  ASSERT_FALSE(http.is_null());
  std::string url = http["boot_file"];
  EXPECT_EQ(url.rfind("http://10.77.0.1:" + std::to_string(controller->artifacts_port()) + "/artifacts/", 0), 0u) << http;
  EXPECT_EQ(http["options"].value("60", ""), "HTTPClient") << http;
  auto efi = http_request(controller->artifacts_port(), "GET", url.substr(url.find("/artifacts/")), {}, "", "10.77.0.1");
  EXPECT_EQ(efi.status, 200);
  EXPECT_EQ(efi.body, *read_file("/usr/lib/ipxe/ipxe.efi"));

  // An installed node still gets its address here, and nothing to boot.
  auto id = create_node({{"macs", {mac}}});
  install(id, "52-54-00-aa-bb-10");
  nlohmann::json quiet;
  EXPECT_TRUE(eventually([&] {
    quiet = ours(offers(mac, 7, kUefiVendor));
    return !quiet.is_null() && quiet["boot_file"] == "";
  })) << quiet;
  EXPECT_EQ(quiet["yiaddr"].get<std::string>().rfind("10.77.0.2", 0), 0u) << quiet;
  EXPECT_EQ(quiet["sname"], "") << quiet;
}
