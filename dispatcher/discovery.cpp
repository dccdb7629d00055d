#include "dispatcher/discovery.hpp"

#include <fcntl.h>
#include <linux/loop.h>
#include <spawn.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <cstring>
#include <functional>
#include <iostream>
#include <set>

#include "common/atomic_file.hpp"
#include "common/crypto.hpp"
#include "dispatcher/cmdline.hpp"
#include "dispatcher/http_client.hpp"

extern char** environ;

namespace provisioner::dispatcher {

namespace fs = std::filesystem;

// ---- mounting ---------------------------------------------------------------------------

Status SystemMounter::mount_device(const fs::path& device, const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  const unsigned long flags = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC;
  int last = 0;
  for (const char* type : {"iso9660", "udf", "vfat"}) {
    if (::mount(device.c_str(), dir.c_str(), type, flags, nullptr) == 0) return Ok{};
    last = errno;
  }
  return make_error(ErrorKind::internal, "cannot mount " + device.string() + ": " + std::strerror(last));
}

Status SystemMounter::mount_image(const fs::path& file, const fs::path& dir) {
  int ctl = ::open("/dev/loop-control", O_RDWR | O_CLOEXEC);
  if (ctl < 0) return make_error(ErrorKind::internal, std::string("cannot open /dev/loop-control: ") + std::strerror(errno));
  int n = ::ioctl(ctl, LOOP_CTL_GET_FREE);
  ::close(ctl);
  if (n < 0) return make_error(ErrorKind::internal, std::string("no free loop device: ") + std::strerror(errno));
  auto loop = "/dev/loop" + std::to_string(n);
  int backing = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (backing < 0) return make_error(ErrorKind::internal, "cannot open " + file.string());
  int lfd = ::open(loop.c_str(), O_RDONLY | O_CLOEXEC);
  if (lfd < 0) {
    ::close(backing);
    return make_error(ErrorKind::internal, "cannot open " + loop);
  }
  loop_info64 info{};
  info.lo_flags = LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR;
  std::strncpy(reinterpret_cast<char*>(info.lo_file_name), file.c_str(), LO_NAME_SIZE - 1);
  int rc = ::ioctl(lfd, LOOP_SET_FD, backing);
  if (rc == 0) rc = ::ioctl(lfd, LOOP_SET_STATUS64, &info);
  int err = errno;
  ::close(backing);
  if (rc != 0) {
    ::ioctl(lfd, LOOP_CLR_FD, 0);
    ::close(lfd);
    return make_error(ErrorKind::internal, "cannot attach " + file.string() + " to " + loop + ": " + std::strerror(err));
  }
  auto mounted = mount_device(loop, dir);
  // With autoclear the device detaches when the last user goes: after umount, or right now
  // when the mount failed.
  ::close(lfd);
  return mounted;
}

void SystemMounter::unmount(const fs::path& dir) { ::umount2(dir.c_str(), MNT_DETACH); }

// ---- helpers -----------------------------------------------------------------------------

std::vector<std::string> blkid_devices(const std::string& blkid, const std::string& token) {
  std::vector<std::string> out;
  if (blkid.empty()) return out;
  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0) return out;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, pipefd[1], 1);
  posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
  std::vector<std::string> args = {blkid, "-c", "/dev/null", "-o", "device", "-t", token};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  int rc = ::posix_spawnp(&pid, blkid.c_str(), &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  ::close(pipefd[1]);
  std::string text;
  if (rc == 0) {
    char buf[4096];
    ssize_t n;
    while ((n = ::read(pipefd[0], buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR))
      if (n > 0) text.append(buf, static_cast<std::size_t>(n));
    int status = 0;
    ::waitpid(pid, &status, 0);
  }
  ::close(pipefd[0]);
  std::size_t pos = 0;
  while (pos < text.size()) {
    auto eol = text.find('\n', pos);
    auto lineview = text.substr(pos, eol == std::string::npos ? std::string::npos : eol - pos);
    if (!lineview.empty()) out.push_back(lineview);
    if (eol == std::string::npos) break;
    pos = eol + 1;
  }
  return out;
}

std::string machine_serial(const DiscoveryPaths& paths) {
  auto cmdline = read_file(paths.cmdline_file);
  if (cmdline) {
    auto opts = provision_options(parse_kernel_cmdline(*cmdline));
    if (opts.serial) return *opts.serial;
  }
  for (const auto& f : paths.serial_files) {
    auto text = read_file(f);
    if (!text) continue;
    std::string s = *text;
    while (!s.empty() && (s.back() == '\0' || std::isspace(static_cast<unsigned char>(s.back())))) s.pop_back();
    if (!s.empty()) return s;
  }
  return {};
}

namespace {

// Mounts, checks the marker, reads the task; unmounts again unless it is ours.
Result<Task> try_medium(Mounter& mounter, const fs::path& dir, const std::function<Status()>& mount) {
  if (auto m = mount(); !m) return m.error();
  if (!has_task_marker(dir)) {
    mounter.unmount(dir);
    return make_error(ErrorKind::not_found, "no task marker");
  }
  auto task = read_task(dir);
  // A bad task stays mounted too: the caller may still report it with job.json's key.
  return task;
}

// Downloads a task ISO into download_dir/task.iso (atomically) and returns its bytes' sha256.
Result<fs::path> download(const DiscoveryPaths& paths, const std::string& url, std::string* sha256_hex) {
  HttpRequest req;
  req.url = url;
  req.timeout_ms = paths.http_timeout_ms;
  req.max_response_bytes = 64u << 20;  // a task ISO is < 17 MiB by the controller's limits
  auto resp = http_request(req);
  if (!resp) return resp.error();
  if (resp->status == 404) return make_error(ErrorKind::not_found, "no task at " + url);
  if (resp->status != 200)
    return make_error(ErrorKind::unavailable, "GET " + url + " answered " + std::to_string(resp->status));
  *sha256_hex = crypto::sha256_hex(resp->body);
  auto file = paths.download_dir / "task.iso";
  std::error_code ec;
  fs::create_directories(paths.download_dir, ec);
  if (auto w = write_file_atomically(file, resp->body, 0600); !w) return w.error();
  return file;
}

}  // namespace

Result<DiscoveredTask> discover_task_once(const DiscoveryPaths& paths, Mounter& mounter) {
  const fs::path& dir = paths.mount_dir;
  std::error_code ec;
  fs::create_directories(dir, ec);
  std::set<std::string> tried;
  Error last = make_error(ErrorKind::not_found, "no task medium, no provision.task= and no provision.controller=");

  auto try_device = [&](const std::string& device, const std::string& how) -> std::optional<Result<DiscoveredTask>> {
    fs::path dev = device;
    if (fs::exists(dev, ec)) dev = fs::canonical(dev, ec);
    if (!tried.insert(dev.string()).second) return std::nullopt;
    auto task = try_medium(mounter, dir, [&] { return mounter.mount_device(dev, dir); });
    if (task) return DiscoveredTask{std::move(*task), how + ":" + dev.string()};
    if (task.error().kind == ErrorKind::not_found) return std::nullopt;  // someone else's CIDATA
    if (task.error().kind == ErrorKind::internal) {
      std::cerr << "dispatcher: " << task.error().message << "\n";
      last = task.error();
      return std::nullopt;
    }
    return Result<DiscoveredTask>(task.error());
  };

  // 1. by label, as udev names it
  for (const char* label : {"CIDATA", "cidata"}) {
    auto link = paths.by_label_dir / label;
    if (fs::exists(fs::symlink_status(link, ec))) {
      if (auto r = try_device(link.string(), "label")) return std::move(*r);
    }
  }
  // 2. blkid: udev may not have run (early boot), and single-ISO keeps the maintenance label.
  for (const char* token : {"LABEL=CIDATA", "LABEL=cidata", "TYPE=iso9660"}) {
    for (const auto& dev : blkid_devices(paths.blkid, token))
      if (auto r = try_device(dev, "blkid")) return std::move(*r);
  }

  auto cmdline_text = read_file(paths.cmdline_file);
  auto opts = provision_options(parse_kernel_cmdline(cmdline_text ? *cmdline_text : std::string()));
  // 3. PXE: the task ISO by URL, pinned by its sha256 (the URL alone proves nothing).
  if (opts.task_url) {
    if (!opts.task_sha256)
      return make_error(ErrorKind::invalid_input, "provision.task= without provision.sha256=: refusing an unverified task");
    std::string got;
    auto file = download(paths, *opts.task_url, &got);
    if (!file) return file.error();
    std::string want = *opts.task_sha256;
    if (want.rfind("sha256:", 0) == 0) want = want.substr(7);
    std::transform(want.begin(), want.end(), want.begin(), ::tolower);
    if (!crypto::constant_time_equal(got, want))
      return make_error(ErrorKind::conflict, "task ISO from " + *opts.task_url + " has sha256 " + got + ", expected " + want);
    auto task = try_medium(mounter, dir, [&] { return mounter.mount_image(*file, dir); });
    if (!task) return task.error().kind == ErrorKind::not_found
                          ? make_error(ErrorKind::invalid_input, "downloaded task ISO has no task marker")
                          : task.error();
    return DiscoveredTask{std::move(*task), "cmdline:" + *opts.task_url};
  }
  // 4. network mode: ask the controller by serial number.
  if (opts.controller) {
    auto serial = machine_serial(paths);
    if (serial.empty()) return make_error(ErrorKind::not_found, "provision.controller= set but no serial number known");
    std::string base = *opts.controller;
    while (!base.empty() && base.back() == '/') base.pop_back();
    std::string url = base + "/api/v1/tasks/by-serial/" + serial;
    std::string got;
    auto file = download(paths, url, &got);
    if (!file) return file.error();
    auto task = try_medium(mounter, dir, [&] { return mounter.mount_image(*file, dir); });
    if (!task) return task.error().kind == ErrorKind::not_found
                          ? make_error(ErrorKind::invalid_input, "task ISO from the controller has no task marker")
                          : task.error();
    return DiscoveredTask{std::move(*task), "controller:" + url};
  }
  return last;
}

}  // namespace provisioner::dispatcher
