#pragma once
// What a virtual BMC serves: the listen address, the Redfish credentials and one QEMU
// machine definition per System. Read from TOML (or JSON) and completed with defaults that
// make a machine runnable with nothing but a state directory.
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "common/result.hpp"

namespace provisioner::vbmc {

struct MachineConfig {
  std::string id;                  // the System / Manager id in Redfish URLs
  std::string serial;              // SMBIOS type 1 serial and Redfish SerialNumber
  int memory_mb = 1024;
  int cpus = 1;
  std::filesystem::path disk;      // qcow2; created with `disk_size` when missing
  std::string disk_size = "8G";    // qemu-img size syntax
  std::string disk_bus = "virtio"; // virtio (/dev/vda) | sata (/dev/sda)
  std::string firmware = "bios";   // bios (SeaBIOS) | uefi (OVMF, per-VM copy of the vars)
  int cd_drives = 2;               // slots CD1..CDn
  bool usb = true;                 // slot USB1 (a removable USB stick)
  std::filesystem::path console_log;  // serial console, appended across power cycles
  std::string mac;                 // empty: derived from the id
  std::string net_options;         // appended to "-netdev user,id=net0," (tftp=, bootfile=, hostfwd=)
  std::vector<std::string> extra_args;  // appended to the QEMU command line as is
};

struct VbmcConfig {
  std::string listen = "127.0.0.1:8000";  // loopback only: the vbmc is a local tool
  std::string username = "admin";
  std::string password;                    // required; never logged
  std::filesystem::path state_dir;         // sockets, OVMF vars, media cache, QEMU logs
  std::string qemu_binary = "qemu-system-x86_64";
  std::string qemu_img = "qemu-img";
  std::string accel = "auto";              // auto (KVM when a probe boots firmware) | kvm | tcg
  std::filesystem::path ovmf_code = "/usr/share/OVMF/OVMF_CODE.fd";
  std::filesystem::path ovmf_vars = "/usr/share/OVMF/OVMF_VARS.fd";
  int graceful_timeout_s = 120;            // GracefulRestart: how long the guest may take to power off
  int once_settle_ms = 10'000;             // a Once override is consumed this long after the last reset
  std::int64_t media_chunk_bytes = 8 << 20;  // Range GET size when fetching media
  std::string log_level = "info";
  std::string log_format = "text";
  std::vector<MachineConfig> machines;
};

// TOML, or JSON when the file name ends in ".json". Unknown keys are errors (typos would
// otherwise silently give a different machine).
Result<VbmcConfig> load_config(const std::filesystem::path& file);
Result<VbmcConfig> parse_config_toml(const std::string& text, const std::string& where = "config");
Result<VbmcConfig> parse_config_json(const std::string& text, const std::string& where = "config");

// Fills defaults (serial, disk, console log, MAC under state_dir) and checks the rest:
// loopback listen address, a password, unique ids, sane sizes.
Status finish_config(VbmcConfig& config);

// The ServiceRoot UUID: name-based (RFC 9562 version 8, SHA-256) on the state directory and
// the machine ids, so the same vbmc answers the same UUID across restarts and two vbmcs on one
// host (they need distinct state directories) answer different ones.
std::string service_uuid(const VbmcConfig& config);

// "127.0.0.1:8000" -> host, port. Only 127.0.0.0/8 is accepted.
Status parse_listen(const std::string& listen, std::string& host, std::uint16_t& port);

}  // namespace provisioner::vbmc
