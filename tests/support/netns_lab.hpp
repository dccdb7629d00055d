#pragma once
// A private network for the PXE tests. enter() moves the calling process into a new network
// namespace (call it before any thread starts: threads and children made later inherit it)
// with a bridge br0 at 10.77.0.1/24, and joins two more namespaces to it by veth pairs:
//   site   — the site's DHCP server: a plain dnsmasq on 10.77.0.2 handing out .100–.150;
//   client — an empty machine-side namespace (interface c1) for DHCP/TFTP clients.
// Every address exists only inside these namespaces, IPv6 is off in all of them (no router
// solicitation, no multicast), and there is no route out. The destructor stops the site's
// server and deletes the namespaces.
#include <sys/types.h>

#include <filesystem>
#include <memory>
#include <string>

#include "tests/support/controller_process.hpp"

namespace provisioner::test {

struct ShellRun {
  int status;
  std::string output;  // stdout and stderr
};
ShellRun shell(const std::string& command);
// Throws with the command's output when it fails.
void shell_must(const std::string& command);

class NetnsLab {
 public:
  // nullptr and `why` when this machine cannot (not root, a tool missing, unshare refused).
  static std::unique_ptr<NetnsLab> enter(std::string& why);
  ~NetnsLab();

  const std::string& site() const { return site_; }
  const std::string& client() const { return client_; }
  const std::filesystem::path& dir() const { return dir_.path(); }

  // A tap device on br0 for a QEMU machine.
  void add_tap(const std::string& name);
  // busybox udhcpc in the client namespace takes an address from the site's server and sets
  // it on c1; returns it ("" when none came).
  std::string take_lease();

  static constexpr const char* kBridgeAddress = "10.77.0.1";

 private:
  NetnsLab();
  void build();
  TempDir dir_;
  std::string site_, client_;
  pid_t site_dhcp_ = -1;
};

}  // namespace provisioner::test
