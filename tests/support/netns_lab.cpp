#include "tests/support/netns_lab.hpp"

#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <stdexcept>

#include "common/atomic_file.hpp"

namespace provisioner::test {

ShellRun shell(const std::string& command) {
  FILE* p = ::popen((command + " 2>&1").c_str(), "r");
  if (!p) return {-1, "popen failed"};
  std::string out;
  char buf[4096];
  while (auto n = std::fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  int rc = ::pclose(p);
  return {WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, out};
}

void shell_must(const std::string& command) {
  auto r = shell(command);
  if (r.status != 0) throw std::runtime_error(command + " → " + std::to_string(r.status) + ": " + r.output);
}

namespace {
void write_proc(const char* path, const char* value) { std::ofstream(path) << value; }
}  // namespace

NetnsLab::NetnsLab() : site_("pxs-" + std::to_string(::getpid())), client_("pxc-" + std::to_string(::getpid())) {}

std::unique_ptr<NetnsLab> NetnsLab::enter(std::string& why) {
  if (::geteuid() != 0) {
    why = "needs root (network namespaces)";
    return nullptr;
  }
  for (const char* tool : {"ip", "dnsmasq", "busybox"})
    if (shell(std::string("command -v ") + tool).status != 0) {
      why = std::string("needs ") + tool + " (scripts/install-deps)";
      return nullptr;
    }
  if (::unshare(CLONE_NEWNET) != 0) {
    why = "unshare(CLONE_NEWNET) failed";
    return nullptr;
  }
  std::unique_ptr<NetnsLab> lab(new NetnsLab());
  try {
    lab->build();
  } catch (const std::exception& e) {
    why = e.what();
    return nullptr;
  }
  return lab;
}

void NetnsLab::build() {
  write_proc("/proc/sys/net/ipv6/conf/all/disable_ipv6", "1");
  write_proc("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1");
  shell_must("ip link set lo up");
  for (const auto& ns : {site_, client_}) {
    shell_must("ip netns add " + ns);
    shell_must("ip netns exec " + ns + " sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1");
    shell_must("ip -n " + ns + " link set lo up");
  }
  shell_must("ip link add br0 type bridge && ip addr add 10.77.0.1/24 dev br0 && ip link set br0 up");
  shell_must("ip link add s0 type veth peer name s1 netns " + site_);
  shell_must("ip link add c0 type veth peer name c1 netns " + client_);
  shell_must("ip link set s0 master br0 up && ip link set c0 master br0 up");
  shell_must("ip -n " + site_ + " addr add 10.77.0.2/24 dev s1 && ip -n " + site_ + " link set s1 up");
  shell_must("ip -n " + client_ + " link set c1 up");
  // The site's DHCP server: addresses only, no PXE.
  std::string leases = "--dhcp-leasefile=" + (dir() / "site.leases").string();
  std::string log = "--log-facility=" + (dir() / "site-dhcp.log").string();
  site_dhcp_ = ::fork();
  if (site_dhcp_ == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);  // `ip netns exec` execs dnsmasq: the signal carries over
    ::execlp("ip", "ip", "netns", "exec", site_.c_str(), "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null",
             "--no-resolv", "--no-hosts", "--port=0", "--interface=s1", "--bind-interfaces", "--user=root",
             "--dhcp-range=10.77.0.100,10.77.0.150,255.255.255.0,10m", leases.c_str(), "--pid-file=", log.c_str(),
             "--log-dhcp", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  std::ofstream(dir() / "udhcpc.sh") << "#!/bin/sh\n"
                                        "[ \"$1\" = bound ] || exit 0\n"
                                        "ip addr flush dev \"$interface\"\n"
                                        "ip addr add \"$ip/$mask\" dev \"$interface\"\n"
                                        "echo \"$ip\" > \"$(dirname \"$0\")/lease\"\n";
  shell_must("chmod 755 " + (dir() / "udhcpc.sh").string());
}

NetnsLab::~NetnsLab() {
  if (site_dhcp_ > 0) {
    ::kill(site_dhcp_, SIGTERM);
    ::waitpid(site_dhcp_, nullptr, 0);
  }
  for (const auto& ns : {site_, client_}) (void)shell("ip netns del " + ns);
}

void NetnsLab::add_tap(const std::string& name) {
  shell_must("ip tuntap add dev " + name + " mode tap && ip link set " + name + " master br0 up");
}

std::string NetnsLab::take_lease() {
  std::filesystem::remove(dir() / "lease");
  (void)shell("ip netns exec " + client_ + " busybox udhcpc -i c1 -n -q -f -t 5 -T 1 -s " + (dir() / "udhcpc.sh").string());
  auto lease = read_file(dir() / "lease");
  std::string ip = lease ? *lease : "";
  while (!ip.empty() && ip.back() == '\n') ip.pop_back();
  return ip;
}

}  // namespace provisioner::test
