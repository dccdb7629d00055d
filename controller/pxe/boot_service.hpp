#pragma once
// The network boot endpoints: what a machine that boots over PXE/iPXE is told to do. The
// answer depends only on the node's state and its job, and is never an install the node was
// not given explicitly (a job for it, or a reprovision):
//   unknown               → registered as discovered (when discovery is on), local boot
//   pending, job ready    → the maintenance kernel + initrd with provision.task=<the job's task
//                           ISO URL> provision.sha256=<digest>; the node becomes installing
//   installing, job still provisioning (it rebooted mid-install) → the same again
//   everything else       → local boot (BIOS: sanboot the first disk; UEFI: exit to firmware)
// The endpoints are unauthenticated (firmware has no token), so an answer reveals nothing but
// the script the asking machine is entitled to: no recipe, no secret, no other node's data.
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "controller/pxe/dnsmasq.hpp"

#include "common/clock.hpp"
#include "common/result.hpp"

namespace provisioner {

class Logger;
class NodeService;
class Store;
struct BootIdentity;
struct NodeRecord;

struct BootFile {
  std::string sha256;
  std::string url;
};

struct BootOptions {
  std::string public_url;             // where nodes reach the API: "http://10.0.0.1:8080"
  std::string discover = "register";  // off: unknown machines are only told to boot locally;
                                      // inspect: the maintenance OS reports their inventory first
  std::optional<BootFile> kernel;     // the maintenance OS as kernel + initrd (artifacts)
  std::optional<BootFile> initrd;
  std::string kernel_args = "console=tty0 console=ttyS0,115200";
  std::string rpi_kernel_args = "console=serial0,115200 console=tty1";
  // The token an inspection boot reports with: derived from a secret, the node and the
  // inspection's nonce (so it is never stored, and a new inspection gets a new one).
  std::function<std::string(const std::string& node_id, const std::string& nonce)> inspect_token;
};

class BootService {
 public:
  BootService(Store& store, NodeService& nodes, const Clock& clock, const Logger& log,
              BootOptions options);

  // GET /boot/boot.ipxe: what DHCP hands to iPXE; it chains to /boot/ipxe with the machine's
  // identity.
  std::string chain_script() const;

  // GET /boot/ipxe?mac=&uuid=&serial=&arch=&platform=. A malformed identity is a 400 and
  // registers nothing.
  Result<std::string> script_for(const std::map<std::string, std::string>& query);

  const BootOptions& options() const { return options_; }

  // The Raspberry Pi folders to serve now: nodes with rpi_serial, pending or installing,
  // whose job is provisioning with its task ISO built. cmdline.txt carries the same
  // provision.task= and provision.sha256= as the iPXE answer.
  std::vector<RpiBoot> rpi_boots();

 private:
  std::string local_boot(const BootIdentity& who, const std::string& why) const;
  Result<std::string> answer_node(const NodeRecord& node, const BootIdentity& who);
  // The maintenance OS in inspection mode, for a discovered node without an inventory.
  Result<std::string> inspect(const NodeRecord& node, const BootIdentity& who);

  Store& store_;
  NodeService& nodes_;
  const Clock& clock_;
  const Logger& log_;
  BootOptions options_;
};

}  // namespace provisioner
