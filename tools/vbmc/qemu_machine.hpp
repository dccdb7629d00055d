#pragma once
// One QEMU machine behind the virtual BMC: the process (power), its removable drives
// (virtual media) and its boot order (boot override), all driven through QMP.
//
// Power: "On" starts QEMU (the vbmc owns the process), ForceOff quits/kills it, ForceRestart
// is system_reset, GracefulShutdown is an ACPI power button press (the guest decides),
// GracefulRestart is the same press followed by a start once the guest has powered off.
//
// Boot override: BootSourceOverrideTarget maps to `bootindex` values on the devices (qom-set
// at run time, on the command line at start). QEMU rebuilds the firmware's boot order from
// bootindex at every machine reset, so Once is real: the override is applied at once; when a
// boot begins (a reset we issue, a guest RESET event, or a fresh start of QEMU) the override
// is "in use", and once no further reset has followed for `once_settle` the vbmc puts the
// disk first again and reports Enabled=Disabled. The settle time exists because firmware
// resets the machine itself early in POST (SeaBIOS twice right after system_reset, OVMF after
// first-boot memory map changes): consuming Once at the first RESET would let those firmware
// resets boot the disk. The boot in progress keeps the override, because the firmware reads
// the order QEMU captured at its last reset.
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/result.hpp"
#include "tools/vbmc/media_fetcher.hpp"
#include "tools/vbmc/vbmc_config.hpp"

namespace provisioner {
class Logger;
}

namespace provisioner::vbmc {

class QmpClient;

// What every machine of one vbmc shares.
struct MachineRuntime {
  std::string qemu_binary = "qemu-system-x86_64";
  std::string qemu_img = "qemu-img";
  std::string accel = "tcg";  // resolved: kvm | tcg
  std::filesystem::path ovmf_code, ovmf_vars;
  std::filesystem::path state_dir;  // this machine's own directory
  std::filesystem::path media_cache;
  std::int64_t media_chunk_bytes = 8 << 20;
  std::chrono::seconds graceful_timeout{120};
  std::chrono::milliseconds once_settle{10'000};  // see the class comment
};

struct MediaSlotState {
  std::string id;                        // CD1, CD2, USB1
  std::vector<std::string> media_types;  // {"CD","DVD"} or {"USBStick"}
  std::string device;                    // QEMU qdev id: cd0, cd1, usb0
  std::string image;                     // the URL, "" when empty
  std::filesystem::path file;            // the cached copy QEMU reads
  bool inserted = false;
  bool write_protected = true;
  std::uint64_t generation = 0;          // bumped on every change (ETags)
};

struct BootOverride {
  std::string target = "None";       // None | Pxe | Cd | Hdd | Usb | UsbCd
  std::string enabled = "Disabled";  // Disabled | Once | Continuous
};

class QemuMachine {
 public:
  QemuMachine(MachineConfig config, MachineRuntime runtime, const Logger& logger);
  ~QemuMachine();  // powers the machine off (QEMU never outlives its BMC)
  QemuMachine(const QemuMachine&) = delete;
  QemuMachine& operator=(const QemuMachine&) = delete;

  const MachineConfig& config() const { return config_; }
  std::string boot_mode() const { return config_.firmware == "uefi" ? "UEFI" : "Legacy"; }
  static const std::vector<std::string>& boot_targets();
  static const std::vector<std::string>& reset_types();

  // "On" | "Off" (| "PoweringOn" while QEMU starts).
  std::string power_state() const;
  // One of reset_types(). Errors: invalid_input for unknown types, unavailable when QEMU fails.
  Status reset(const std::string& type);

  std::vector<MediaSlotState> slots() const;
  // Fetches the URL into the cache (without holding the machine lock), then puts it in the
  // drive. Errors: not_found (slot), invalid_input (URL), unavailable (fetch), conflict (busy).
  Status insert_media(const std::string& slot_id, const std::string& url, bool write_protected);
  Status eject_media(const std::string& slot_id);

  BootOverride boot() const;
  std::uint64_t boot_generation() const;  // bumped when boot or power changes (System ETag)
  Status set_boot(const BootOverride& wanted);

  // Machine resets since the vbmc started (starts, our resets, guest and firmware resets).
  int boot_count() const;
  // Raw QMP for tests and diagnostics; unavailable when QEMU is not running.
  Result<nlohmann::json> qmp(const std::string& command, const nlohmann::json& arguments = nullptr);

 private:
  struct Event {
    nlohmann::json body;  // a QMP event
  };

  void worker_loop();
  void on_qmp_event(const nlohmann::json& event);
  Status ensure_disk();
  Status start_locked();
  Status stop_locked(bool graceful_wait);
  void reap_locked();
  bool running_locked() const;
  std::vector<std::string> command_line() const;
  // bootindex per device for a target (disk0, cd0.., usb0, nic0).
  std::vector<std::pair<std::string, int>> boot_order(const std::string& target) const;
  std::string effective_target() const;
  Status apply_boot_order_locked(const std::string& target);
  void boot_began_locked(const std::string& why);
  void consume_once_locked();
  MediaSlotState* find_slot(const std::string& id);

  MachineConfig config_;
  MachineRuntime rt_;
  const Logger& log_;
  MediaFetcher fetcher_;

  mutable std::mutex mu_;  // everything below
  std::vector<MediaSlotState> slots_;
  BootOverride boot_;
  std::uint64_t boot_generation_ = 1;
  int boot_count_ = 0;
  pid_t pid_ = -1;
  std::unique_ptr<QmpClient> qmp_;
  std::chrono::steady_clock::time_point restart_after_powerdown_deadline_{};
  bool restart_after_powerdown_ = false;
  // Set while a Once override is in use by a boot: the time of that boot's last reset.
  std::optional<std::chrono::steady_clock::time_point> once_in_use_since_;

  struct Spawner;  // forks QEMU from one long-lived thread (see qemu_machine.cpp)
  std::unique_ptr<Spawner> spawner_;

  std::mutex events_mu_;
  std::condition_variable events_cv_;
  std::deque<Event> events_;
  bool stopping_ = false;
  std::thread worker_;
};

// True when /dev/kvm can really run a guest here. An openable /dev/kvm that fails as soon as
// the guest enters long mode ("KVM internal error") is common in nested VMs, and SeaBIOS
// alone never leaves 32-bit mode, so the probe boots OVMF (64-bit DXE) under KVM and waits
// for its boot manager on the serial port; without OVMF it falls back to SeaBIOS reaching
// its boot menu (a weaker test).
bool kvm_boots(const std::string& qemu_binary, const std::filesystem::path& ovmf_code,
               const std::filesystem::path& scratch_dir);

}  // namespace provisioner::vbmc
