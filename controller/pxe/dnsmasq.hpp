#pragma once
// The controller's DHCP/TFTP server: a dnsmasq child it configures, starts, restarts when it
// dies, reloads when nodes change, and stops on shutdown.
//
// What dnsmasq answers (tags in dnsmasq_config):
//   - a PXE ROM (no iPXE user class): the iPXE binary for its architecture over TFTP
//     (option 93: BIOS → undionly.kpxe, x86-64 UEFI → ipxe.efi, arm64 → ipxe-arm64.efi);
//   - iPXE (user class "iPXE" or option 175): the HTTP boot script, so no chain loop;
//   - a UEFI HTTP Boot client (vendor class HTTPClient; full DHCP only): ipxe.efi by URL;
//   - a Raspberry Pi (its OUIs, or a node with rpi_serial): option 43 "Raspberry Pi Boot",
//     and a TFTP folder <rpi_serial>/ that exists only while its node has a job to run;
//   - provisioning-only: only MACs of nodes that are discovered, pending or installing get
//     any PXE answer (unknown MACs too, while discovery is on); installed, active and retired
//     nodes get no PXE offer at all (proxy mode ignores them; full mode gives them an
//     address and nothing to boot).
// Every file it writes passes `dnsmasq --test` first (with the host list inline, since
// --test does not read dhcp-hostsfile).
#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/result.hpp"
#include "controller/store/store.hpp"

namespace provisioner {

class Logger;

struct DhcpOptions {
  std::string mode = "proxy";  // proxy | full
  std::string interface;
  std::string subnet;                                           // proxy: the network served
  std::string range_start, range_end, netmask = "255.255.255.0";  // full
  std::string boot_script_url;    // what iPXE is handed: <public_url>/boot/boot.ipxe
  std::string http_boot_url;      // UEFI HTTP Boot: ipxe.efi over HTTP ("" = not offered)
  bool discover = true;           // unknown MACs get PXE answers
  bool arm64 = false;             // the TFTP root holds ipxe-arm64.efi
  std::filesystem::path dir;      // dnsmasq.conf, hosts, leases, tftp/, dnsmasq.log
  std::string user;               // the user dnsmasq runs as ("" = dnsmasq's default)
};

// The Pi folders TFTP serves: one per node with rpi_serial and a job to boot.
struct RpiBoot {
  std::string serial;   // 8 hex digits, the folder name
  std::string cmdline;  // cmdline.txt
};

// Pure: the configuration and the host list (one `mac,set:…` line per MAC, sorted).
std::string dnsmasq_config(const DhcpOptions& options);
std::string dnsmasq_hosts(const std::vector<NodeRecord>& nodes);

struct DnsmasqOptions {
  std::string binary = "dnsmasq";
  DhcpOptions dhcp;
  std::filesystem::path ipxe_dir = "/usr/lib/ipxe";
  std::optional<std::filesystem::path> arm64_efi;
  std::optional<std::filesystem::path> rpi_firmware;
  std::chrono::milliseconds refresh{2000};  // the host list is rebuilt at least this often
};

class DnsmasqSupervisor {
 public:
  // `nodes`: every node; `rpi`: the Pi folders to serve now.
  DnsmasqSupervisor(DnsmasqOptions options, std::function<Result<std::vector<NodeRecord>>()> nodes,
                    std::function<std::vector<RpiBoot>()> rpi, const Logger& log);
  ~DnsmasqSupervisor();

  // Writes the TFTP root, the config and the host list (each checked with --test), starts
  // dnsmasq and the thread that watches it.
  Status start();
  // Rebuild the host list (and Pi folders) now; a change reloads dnsmasq (SIGHUP; a
  // restart in proxy mode, where dnsmasq 2.90 crashes on SIGHUP).
  void nodes_changed();
  void stop();

  // The guardian process in front of dnsmasq (see spawn()).
  pid_t pid() const;
  int restarts() const;

 private:
  Status prepare_tftp();
  Status check(const std::string& config, const std::string& hosts) const;
  Status spawn();
  void end_child(std::chrono::milliseconds patience);
  void refresh();
  void watch();

  DnsmasqOptions options_;
  std::function<Result<std::vector<NodeRecord>>()> nodes_;
  std::function<std::vector<RpiBoot>()> rpi_;
  const Logger& log_;
  std::string config_;
  std::string hosts_;
  std::vector<std::string> rpi_served_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::atomic<bool> dirty_{false};
  pid_t pid_ = -1;
  int restarts_ = 0;
  std::thread watcher_;
};

}  // namespace provisioner
