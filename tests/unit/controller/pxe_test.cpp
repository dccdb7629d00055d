// The node lifecycle table, boot request parsing, and the dnsmasq files: every configuration
// the controller can write passes `dnsmasq --test`, host list included.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

#include "controller/nodes/node_service.hpp"
#include "controller/nodes/node_state.hpp"
#include "controller/pxe/dnsmasq.hpp"

using namespace provisioner;

TEST(NodeLifecycle, OnlyTheTableMovesANodeAndOnlyAnOperatorStartsAnInstall) {
  constexpr NodeState all[] = {NodeState::discovered, NodeState::pending, NodeState::installing,
                               NodeState::installed, NodeState::active, NodeState::retired};
  int legal = 0;
  for (auto from : all)
    for (auto to : all)
      if (find_node_transition(from, to)) ++legal;
  EXPECT_EQ(legal, static_cast<int>(kNodeTransitions.size())) << "no duplicate rows";
  // Into pending (an install) only on an explicit request; installing only from pending.
  for (const auto& t : kNodeTransitions) {
    if (t.to == NodeState::pending) EXPECT_TRUE(t.explicit_request) << to_string(t.from);
    if (t.to == NodeState::installing) EXPECT_EQ(t.from, NodeState::pending);
    if (t.to == NodeState::installed && t.from == NodeState::installing) EXPECT_FALSE(t.explicit_request) << "a job's success";
  }
  EXPECT_FALSE(find_node_transition(NodeState::discovered, NodeState::installed));
  EXPECT_FALSE(find_node_transition(NodeState::retired, NodeState::pending)) << "re-enroll first";
  EXPECT_FALSE(find_node_transition(NodeState::installing, NodeState::active));
  EXPECT_FALSE(find_node_transition(NodeState::pending, NodeState::retired)) << "cancel its job first";
  for (auto s : all) EXPECT_EQ(parse_node_state(to_string(s)), s);
  EXPECT_FALSE(parse_node_state("Installed"));
  EXPECT_TRUE(gets_pxe_offer(NodeState::installing));
  EXPECT_FALSE(gets_pxe_offer(NodeState::installed));
  EXPECT_FALSE(gets_pxe_offer(NodeState::active));
  EXPECT_FALSE(gets_pxe_offer(NodeState::retired));
}

TEST(BootIdentity, NormalisesAndRefusesGarbageNamingTheParameter) {
  auto who = parse_boot_identity("52-54-00-AB-CD-EF", "4C4C4544-0000-1000-8000-000000000001", "SER-1", "x86_64", "efi");
  ASSERT_TRUE(who.ok());
  EXPECT_EQ(who->mac, "52:54:00:ab:cd:ef");
  EXPECT_EQ(*who->uuid, "4c4c4544-0000-1000-8000-000000000001");
  EXPECT_EQ(*who->serial, "SER-1");
  auto blank = parse_boot_identity("52:54:00:ab:cd:ef", "00000000-0000-0000-0000-000000000000", "Default string", "", "");
  ASSERT_TRUE(blank.ok());
  EXPECT_FALSE(blank->uuid);
  EXPECT_FALSE(blank->serial);
  static const std::string too_long(65, 'a');
  struct Bad {
    const char *mac, *uuid, *serial, *arch, *platform, *field;
  };
  for (const auto& b : {Bad{"", "", "", "", "", "mac"}, Bad{"52:54:00:ab:cd", "", "", "", "", "mac"},
                        Bad{"52:54:00:ab:cd:zz", "", "", "", "", "mac"}, Bad{"52:54:00:ab:cd:ef", "1234", "", "", "", "uuid"},
                        Bad{"52:54:00:ab:cd:ef", "", "a\"b", "", "", "serial"},
                        Bad{"52:54:00:ab:cd:ef", "", too_long.c_str(), "", "", "serial"},
                        Bad{"52:54:00:ab:cd:ef", "", "", "mips", "", "arch"}, Bad{"52:54:00:ab:cd:ef", "", "", "", "uefi", "platform"}}) {
    auto r = parse_boot_identity(b.mac, b.uuid, b.serial, b.arch, b.platform);
    ASSERT_FALSE(r.ok()) << b.field;
    EXPECT_EQ(r.error().kind, ErrorKind::invalid_input);
    ASSERT_FALSE(r.error().fields.empty());
    EXPECT_EQ(r.error().fields[0].path, b.field);
  }
}

namespace {

NodeRecord node(NodeState state, std::vector<std::string> macs, bool rpi = false) {
  NodeRecord n;
  n.id = "node_0000000000000001";
  n.state = state;
  n.record = {{"macs", macs}};
  if (rpi) n.record["rpi_serial"] = "1a2b3c4d";
  return n;
}

// dnsmasq's own check of a config with the host lines inline (--test skips dhcp-hostsfile).
int dnsmasq_test(const std::string& config, const std::string& hosts, std::string& output) {
  auto file = std::filesystem::temp_directory_path() / ("dnsmasq-test-" + std::to_string(::getpid()) + ".conf");
  std::string text = config;
  std::istringstream lines(hosts);
  for (std::string l; std::getline(lines, l);) text += "dhcp-host=" + l + "\n";
  std::ofstream(file) << text;
  FILE* p = ::popen(("dnsmasq --test --conf-file=" + file.string() + " 2>&1").c_str(), "r");
  char buf[512];
  while (auto n = std::fread(buf, 1, sizeof buf, p)) output.append(buf, n);
  int rc = ::pclose(p);
  std::filesystem::remove(file);
  return rc;
}

}  // namespace

TEST(DnsmasqFiles, TheHostListTagsEveryMacByItsNodesState) {
  auto hosts = dnsmasq_hosts({node(NodeState::installed, {"52:54:00:00:00:02"}), node(NodeState::pending, {"52:54:00:00:00:01"}),
                              node(NodeState::active, {"52:54:00:00:00:03", "52:54:00:00:00:04"}),
                              node(NodeState::discovered, {"dc:a6:32:00:00:05"}, true), node(NodeState::retired, {"52:54:00:00:00:06"})});
  EXPECT_EQ(hosts,
            "52:54:00:00:00:01,set:provision\n"
            "52:54:00:00:00:02,set:noboot\n"
            "52:54:00:00:00:03,set:noboot\n"
            "52:54:00:00:00:04,set:noboot\n"
            "52:54:00:00:00:06,set:noboot\n"
            "dc:a6:32:00:00:05,set:provision,set:rpi\n");
}

TEST(DnsmasqFiles, EveryConfigurationItWritesPassesDnsmasqsOwnCheck) {
  if (std::system("command -v dnsmasq >/dev/null") != 0) GTEST_SKIP() << "dnsmasq not installed (scripts/install-deps)";
  auto hosts = dnsmasq_hosts({node(NodeState::installed, {"52:54:00:00:00:02"}), node(NodeState::pending, {"52:54:00:00:00:01"}),
                              node(NodeState::discovered, {"dc:a6:32:00:00:05"}, true)});
  int checked = 0;
  for (const char* mode : {"proxy", "full"})
    for (bool discover : {true, false})
      for (bool arm64 : {false, true})
        for (const char* http : {"", "http://10.0.0.1:8081/artifacts/ab/ipxe.efi"}) {
          DhcpOptions o;
          o.mode = mode;
          o.interface = "br0";
          o.subnet = "10.0.0.0";
          o.range_start = "10.0.0.100";
          o.range_end = "10.0.0.200";
          o.boot_script_url = "http://10.0.0.1:8080/boot/boot.ipxe";
          o.http_boot_url = http;
          o.discover = discover;
          o.arm64 = arm64;
          o.dir = "/var/lib/provisioner/pxe";
          o.user = "root";
          auto config = dnsmasq_config(o);
          std::string out;
          EXPECT_EQ(dnsmasq_test(config, hosts, out), 0) << mode << " discover=" << discover << " arm64=" << arm64 << "\n"
                                                         << out << "\n" << config;
          ++checked;
          // What each mode must say.
          EXPECT_NE(config.find("pxe-service=tag:rpiboot,0,\"Raspberry Pi Boot\""), std::string::npos);
          EXPECT_EQ(config.find("ipxe-arm64.efi") != std::string::npos, arm64);
          if (std::string(mode) == "proxy") {
            EXPECT_NE(config.find("dhcp-range=10.0.0.0,proxy"), std::string::npos);
            EXPECT_NE(config.find("dhcp-ignore=tag:noboot"), std::string::npos) << "installed nodes: no offer at all";
            EXPECT_EQ(config.find("dhcp-ignore=tag:!known") != std::string::npos, !discover);
            EXPECT_NE(config.find("pxe-service=tag:rom,x86PC,\"provisioner: iPXE\",undionly.kpxe"), std::string::npos);
            EXPECT_NE(config.find("pxe-service=tag:ipxeboot,X86-64_EFI,\"provisioner\",http://10.0.0.1:8080/boot/boot.ipxe"),
                      std::string::npos);
          } else {
            EXPECT_NE(config.find("dhcp-range=10.0.0.100,10.0.0.200,255.255.255.0"), std::string::npos);
            EXPECT_NE(config.find("dhcp-boot=tag:romboot,tag:efi64,ipxe.efi"), std::string::npos);
            EXPECT_EQ(config.find("dhcp-option-force=tag:httpboot,60,HTTPClient") != std::string::npos, *http != '\0');
          }
        }
  EXPECT_EQ(checked, 16);
}
