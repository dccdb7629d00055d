#pragma once
// Finding the task: the same search in every media mode (ARCHITECTURE.md, Media modes), so
// one maintenance image serves them all:
//   1. /dev/disk/by-label/CIDATA (or cidata) holding the task marker  (dual-cd, cd-usb)
//   2. blkid: LABEL=CIDATA / cidata, then any iso9660 device with the marker (single-iso)
//   3. provision.task=<URL> + provision.sha256=<hex> on the kernel command line (PXE)
//   4. provision.controller=<URL>: GET <URL>/api/v1/tasks/by-serial/<serial> (network)
// Every path is configurable so tests run on a fake root.
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "common/result.hpp"
#include "dispatcher/task.hpp"

namespace provisioner::dispatcher {

struct DiscoveryPaths {
  std::filesystem::path cmdline_file = "/proc/cmdline";
  std::filesystem::path by_label_dir = "/dev/disk/by-label";
  std::filesystem::path mount_dir = "/run/provision-task";        // the medium, read-only
  std::filesystem::path download_dir = "/run/provision-download";  // fetched task ISOs
  std::vector<std::filesystem::path> serial_files = {"/sys/class/dmi/id/product_serial",
                                                     "/sys/firmware/devicetree/base/serial-number"};
  std::string blkid = "blkid";  // empty: skip the blkid scan
  // Overall deadline of one task download or by-serial lookup (the whole ISO, up to 64 MiB):
  // generous, as it is no longer a per-read timeout; a failed try is retried within --wait.
  int http_timeout_ms = 120000;
};

// Mounting is the one privileged act; tests substitute a fake.
class Mounter {
 public:
  virtual ~Mounter() = default;
  virtual Status mount_device(const std::filesystem::path& device, const std::filesystem::path& dir) = 0;
  virtual Status mount_image(const std::filesystem::path& file, const std::filesystem::path& dir) = 0;
  virtual void unmount(const std::filesystem::path& dir) = 0;
};

// mount(2) read-only (iso9660, then udf, then vfat); images through a free loop device with
// autoclear, so unmounting also frees the loop device.
class SystemMounter final : public Mounter {
 public:
  Status mount_device(const std::filesystem::path& device, const std::filesystem::path& dir) override;
  Status mount_image(const std::filesystem::path& file, const std::filesystem::path& dir) override;
  void unmount(const std::filesystem::path& dir) override;
};

struct DiscoveredTask {
  Task task;
  std::string source;  // "label:/dev/sr1", "blkid:/dev/sr0", "cmdline:<url>", "controller:<url>"
};

// One pass over the four sources. Error kinds:
//   not_found    nothing anywhere (yet): devices may still appear, try again later
//   unavailable  a download failed: try again later
//   conflict     downloaded task ISO does not match provision.sha256 (fatal)
//   invalid_input  the task on the medium is unusable (fatal), or provision.task without sha256
//   internal     a mount failed
// The task medium stays mounted at paths.mount_dir on success.
Result<DiscoveredTask> discover_task_once(const DiscoveryPaths& paths, Mounter& mounter);

// The machine's serial: provision.serial= on the command line, else the first non-empty of
// paths.serial_files (trailing NULs and whitespace removed). Empty when none.
std::string machine_serial(const DiscoveryPaths& paths);

// Output lines of `blkid -o device -t <token>`; empty when blkid is absent or finds nothing.
std::vector<std::string> blkid_devices(const std::string& blkid, const std::string& token);

}  // namespace provisioner::dispatcher
