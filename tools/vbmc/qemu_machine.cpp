#include "tools/vbmc/qemu_machine.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <future>
#include <sstream>

#include "common/crypto.hpp"
#include "controller/logging/logger.hpp"
#include "tools/vbmc/qmp_client.hpp"

namespace provisioner::vbmc {

using nlohmann::json;
using namespace std::chrono_literals;

namespace {

// QEMU option values use ',' as separator; a literal comma is written twice.
std::string qopt(const std::string& v) {
  std::string out;
  for (char c : v) {
    out.push_back(c);
    if (c == ',') out.push_back(',');
  }
  return out;
}

std::string tail_of(const std::filesystem::path& file, std::size_t bytes = 600) {
  std::ifstream in(file, std::ios::binary);
  if (!in) return {};
  in.seekg(0, std::ios::end);
  auto size = static_cast<std::size_t>(in.tellg());
  in.seekg(static_cast<std::streamoff>(size > bytes ? size - bytes : 0));
  std::stringstream ss;
  ss << in.rdbuf();
  std::string s = ss.str();
  std::replace(s.begin(), s.end(), '\n', ' ');
  return s;
}

// fork + exec with stdout/stderr appended to `log`. In the child: own process group (a
// Ctrl-C at the terminal reaches the vbmc, which then powers machines off cleanly) and,
// when `die_with_parent`, SIGTERM once the forking thread is gone.
pid_t spawn(const std::vector<std::string>& argv, const std::filesystem::path& log, bool die_with_parent) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid != 0) return pid;
  // Child: only async-signal-safe calls from here on.
  // The signal mask and ignored dispositions survive exec: the vbmc blocks SIGTERM/SIGINT
  // (it sigwaits for them) and ignores SIGPIPE; QEMU must get them back, or SIGTERM (and
  // the parent-death signal below) would never stop it.
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  ::signal(SIGPIPE, SIG_DFL);
  ::signal(SIGTERM, SIG_DFL);
  ::signal(SIGINT, SIG_DFL);
  ::setpgid(0, 0);
  if (die_with_parent) {
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) ::_exit(127);
  }
  int devnull = ::open("/dev/null", O_RDONLY);
  if (devnull >= 0) ::dup2(devnull, 0);
  int out = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (out >= 0) {
    ::dup2(out, 1);
    ::dup2(out, 2);
  }
  ::execvp(args[0], args.data());
  ::_exit(127);
}

int run_to_end(const std::vector<std::string>& argv, const std::filesystem::path& log) {
  pid_t pid = spawn(argv, log, false);
  if (pid < 0) return -1;
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string uuid_for(const std::string& id) {
  std::string h = crypto::sha256_hex("provisioner-vbmc:" + id);
  h[12] = '4';  // version 4 shape, stable per id
  return h.substr(0, 8) + "-" + h.substr(8, 4) + "-" + h.substr(12, 4) + "-" + h.substr(16, 4) + "-" + h.substr(20, 12);
}

}  // namespace

// PR_SET_PDEATHSIG fires when the *thread* that forked exits, not the process. HTTP requests
// run on short-lived threads, so QEMU is forked here, on one thread that lives as long as
// the machine: QEMU then dies with the vbmc even when the vbmc is SIGKILLed.
struct QemuMachine::Spawner {
  struct Job {
    std::vector<std::string> argv;
    std::filesystem::path log;
    std::promise<pid_t> done;
  };
  std::mutex mu;
  std::condition_variable cv;
  std::deque<Job*> jobs;
  bool stop = false;
  std::thread thread;

  Spawner() {
    thread = std::thread([this] {
      std::unique_lock lock(mu);
      for (;;) {
        cv.wait(lock, [&] { return stop || !jobs.empty(); });
        if (jobs.empty()) return;  // stop requested
        Job* j = jobs.front();
        jobs.pop_front();
        j->done.set_value(spawn(j->argv, j->log, true));
      }
    });
  }
  ~Spawner() {
    {
      std::lock_guard lock(mu);
      stop = true;
    }
    cv.notify_all();
    thread.join();
  }
  pid_t run(std::vector<std::string> argv, std::filesystem::path log) {
    Job j{std::move(argv), std::move(log), {}};
    auto f = j.done.get_future();
    {
      std::lock_guard lock(mu);
      jobs.push_back(&j);
    }
    cv.notify_all();
    return f.get();
  }
};

const std::vector<std::string>& QemuMachine::boot_targets() {
  static const std::vector<std::string> t = {"None", "Pxe", "Cd", "Hdd", "Usb", "UsbCd"};
  return t;
}

const std::vector<std::string>& QemuMachine::reset_types() {
  static const std::vector<std::string> t = {"On", "ForceOff", "ForceRestart", "GracefulRestart", "GracefulShutdown"};
  return t;
}

QemuMachine::QemuMachine(MachineConfig config, MachineRuntime runtime, const Logger& logger)
    : config_(std::move(config)),
      rt_(std::move(runtime)),
      log_(logger),
      fetcher_(rt_.media_cache, rt_.media_chunk_bytes, &logger),
      spawner_(std::make_unique<Spawner>()) {
  for (int i = 0; i < config_.cd_drives; ++i) {
    MediaSlotState s;
    s.id = "CD" + std::to_string(i + 1);
    s.media_types = {"CD", "DVD"};
    s.device = "cd" + std::to_string(i);
    slots_.push_back(s);
  }
  if (config_.usb) {
    MediaSlotState s;
    s.id = "USB1";
    s.media_types = {"USBStick"};
    s.device = "usb0";
    slots_.push_back(s);
  }
  worker_ = std::thread([this] { worker_loop(); });
}

QemuMachine::~QemuMachine() {
  {
    std::lock_guard lock(events_mu_);
    stopping_ = true;
  }
  events_cv_.notify_all();
  worker_.join();
  std::lock_guard lock(mu_);
  if (running_locked()) (void)stop_locked(true);
}

// ------------------------------------------------------------------ events

void QemuMachine::on_qmp_event(const json& event) {
  std::lock_guard lock(events_mu_);
  events_.push_back(Event{event});
  events_cv_.notify_all();
}

void QemuMachine::worker_loop() {
  for (;;) {
    std::deque<Event> batch;
    {
      std::unique_lock lock(events_mu_);
      events_cv_.wait_for(lock, 200ms, [&] { return stopping_ || !events_.empty(); });
      if (stopping_) return;
      batch.swap(events_);
    }
    std::lock_guard lock(mu_);
    for (const auto& e : batch) {
      std::string name = e.body.value("event", "");
      json data = e.body.value("data", json::object());
      if (name == "RESET") {
        // Resets we issue ourselves are accounted for synchronously in reset(); this is the
        // guest rebooting (or firmware resetting) on its own.
        if (data.value("reason", "") == "host-qmp-system-reset") continue;
        boot_began_locked("guest reset");
      } else if (name == "SHUTDOWN") {
        log_.info("guest powered off", {{"machine", config_.id}, {"reason", data.value("reason", "")}});
      }
    }
    reap_locked();
    if (once_in_use_since_ && std::chrono::steady_clock::now() - *once_in_use_since_ >= rt_.once_settle)
      consume_once_locked();
    if (restart_after_powerdown_) {
      if (!running_locked()) {
        restart_after_powerdown_ = false;
        log_.info("GracefulRestart: guest is off; powering on", {{"machine", config_.id}});
        if (auto s = start_locked(); !s)
          log_.error("power on after graceful restart failed", {{"machine", config_.id}, {"error", s.error().message}});
      } else if (std::chrono::steady_clock::now() > restart_after_powerdown_deadline_) {
        restart_after_powerdown_ = false;  // like a real BMC: the OS ignored the request
        log_.warn("GracefulRestart: guest did not power off in time; left running", {{"machine", config_.id}});
      }
    }
  }
}

void QemuMachine::boot_began_locked(const std::string& why) {
  ++boot_count_;
  std::string target = effective_target();
  log_.info("boot began", {{"machine", config_.id}, {"why", why}, {"boot_target", target}});
  // Firmware resets during POST restart the window: the override must survive them.
  if (boot_.enabled == "Once") once_in_use_since_ = std::chrono::steady_clock::now();
}

void QemuMachine::consume_once_locked() {
  once_in_use_since_.reset();
  if (boot_.enabled != "Once") return;
  // The firmware already has this boot's order (captured at its last reset); from the next
  // boot on the machine boots its disk again.
  boot_.enabled = "Disabled";
  ++boot_generation_;
  if (auto s = apply_boot_order_locked("Hdd"); !s)
    log_.error("restoring boot order after a one-time override failed",
               {{"machine", config_.id}, {"error", s.error().message}});
  else
    log_.info("one-time boot override consumed; disk first again", {{"machine", config_.id}});
}

// ------------------------------------------------------------------ process

bool QemuMachine::running_locked() const { return pid_ > 0; }

void QemuMachine::reap_locked() {
  if (pid_ <= 0) return;
  int status = 0;
  pid_t r = ::waitpid(pid_, &status, WNOHANG);
  if (r == pid_ || (r < 0 && errno == ECHILD)) {
    log_.info("QEMU exited", {{"machine", config_.id},
                              {"status", WIFEXITED(status) ? std::to_string(WEXITSTATUS(status))
                                                           : "signal " + std::to_string(WTERMSIG(status))}});
    pid_ = -1;
    qmp_.reset();
    ++boot_generation_;
  }
}

Status QemuMachine::ensure_disk() {
  std::error_code ec;
  std::filesystem::create_directories(rt_.state_dir, ec);
  if (!config_.disk.parent_path().empty()) std::filesystem::create_directories(config_.disk.parent_path(), ec);
  if (!config_.console_log.parent_path().empty())
    std::filesystem::create_directories(config_.console_log.parent_path(), ec);
  if (!std::filesystem::exists(config_.disk)) {
    log_.info("creating disk", {{"machine", config_.id}, {"disk", config_.disk.string()}, {"size", config_.disk_size}});
    int rc = run_to_end({rt_.qemu_img, "create", "-q", "-f", "qcow2", config_.disk.string(), config_.disk_size},
                        rt_.state_dir / "qemu.log");
    if (rc != 0)
      return make_error(ErrorKind::unavailable, "qemu-img create failed for " + config_.disk.string() + ": " +
                                                    tail_of(rt_.state_dir / "qemu.log"));
  }
  if (config_.firmware == "uefi") {
    auto vars = rt_.state_dir / "OVMF_VARS.fd";
    if (!std::filesystem::exists(vars)) {
      std::filesystem::copy_file(rt_.ovmf_vars, vars, ec);
      if (ec) return make_error(ErrorKind::unavailable, "cannot copy " + rt_.ovmf_vars.string() + ": " + ec.message());
    }
  }
  return Ok{};
}

std::vector<std::pair<std::string, int>> QemuMachine::boot_order(const std::string& target) const {
  std::vector<std::string> disk = {"disk0"}, cds, usb, nic = {"nic0"};
  for (const auto& s : slots_) (s.device.rfind("cd", 0) == 0 ? cds : usb).push_back(s.device);
  std::vector<std::vector<std::string>*> groups;
  if (target == "Cd") groups = {&cds, &disk, &usb, &nic};
  else if (target == "Usb" || target == "UsbCd") groups = {&usb, &cds, &disk, &nic};
  else if (target == "Pxe") groups = {&nic, &disk, &cds, &usb};
  else groups = {&disk, &cds, &usb, &nic};  // Hdd, None: the disk, then what a PC tries next
  std::vector<std::pair<std::string, int>> out;
  int n = 1;
  for (auto* g : groups)
    for (const auto& d : *g) out.emplace_back(d, n++);
  return out;
}

std::string QemuMachine::effective_target() const {
  if (boot_.enabled == "Disabled" || boot_.target == "None") return "Hdd";
  return boot_.target;
}

Status QemuMachine::apply_boot_order_locked(const std::string& target) {
  if (!qmp_) return Ok{};  // powered off: the order goes on the command line at start
  auto order = boot_order(target);
  // bootindex values must stay unique at every step: clear all, then set all.
  for (const auto& [dev, idx] : order) {
    auto r = qmp_->execute("qom-set", {{"path", "/machine/peripheral/" + dev}, {"property", "bootindex"}, {"value", -1}});
    if (!r) return r.error();
  }
  for (const auto& [dev, idx] : order) {
    auto r = qmp_->execute("qom-set", {{"path", "/machine/peripheral/" + dev}, {"property", "bootindex"}, {"value", idx}});
    if (!r) return r.error();
  }
  return Ok{};
}

std::vector<std::string> QemuMachine::command_line() const {
  auto order = boot_order(effective_target());
  auto index_of = [&](const std::string& dev) {
    for (const auto& [d, i] : order)
      if (d == dev) return std::to_string(i);
    return std::string("-1");
  };
  std::vector<std::string> a = {rt_.qemu_binary,
                                "-name", "guest=" + qopt(config_.id),
                                "-machine", "q35,accel=" + rt_.accel,
                                "-m", std::to_string(config_.memory_mb),
                                "-smp", std::to_string(config_.cpus),
                                "-display", "none",
                                "-nodefaults", "-no-user-config",
                                "-uuid", uuid_for(config_.id),
                                "-smbios", "type=1,manufacturer=QEMU,product=provisioner-vbmc,serial=" + qopt(config_.serial),
                                "-qmp", "unix:" + qopt((rt_.state_dir / "qmp.sock").string()) + ",server=on,wait=off",
                                // append: the console of every power-on stays in one file
                                "-chardev", "file,id=console0,append=on,path=" + qopt(config_.console_log.string()),
                                "-serial", "chardev:console0"};
  if (rt_.accel == "kvm") a.insert(a.end(), {"-cpu", "host"});
  if (config_.firmware == "uefi") {
    a.insert(a.end(), {"-drive", "if=pflash,format=raw,unit=0,readonly=on,file=" + qopt(rt_.ovmf_code.string()),
                       "-drive", "if=pflash,format=raw,unit=1,file=" + qopt((rt_.state_dir / "OVMF_VARS.fd").string())});
  }
  a.insert(a.end(), {"-drive", "if=none,id=disk0drv,format=qcow2,file=" + qopt(config_.disk.string())});
  if (config_.disk_bus == "sata")
    a.insert(a.end(), {"-device", "ide-hd,drive=disk0drv,id=disk0,bus=ide.2,bootindex=" + index_of("disk0")});
  else
    a.insert(a.end(), {"-device", "virtio-blk-pci,drive=disk0drv,id=disk0,bootindex=" + index_of("disk0")});
  bool xhci = false;
  for (const auto& s : slots_) {
    // Read-only even when empty: a disk device created writable refuses read-only media
    // later, and the cached image is shared by every insert of its URL.
    std::string drive = "if=none,readonly=on,id=" + s.device + "drv";
    if (s.device.rfind("cd", 0) == 0) drive += ",media=cdrom";
    if (s.inserted) drive += ",format=raw,file=" + qopt(s.file.string());
    a.insert(a.end(), {"-drive", drive});
    if (s.device.rfind("cd", 0) == 0) {
      // q35's AHCI ports are ide.0..ide.5; the disk uses ide.2 on sata, CDs take 0, 1, 3, 4.
      int n = std::stoi(s.device.substr(2));
      int port = n < 2 ? n : n + 1;
      a.insert(a.end(), {"-device", "ide-cd,drive=" + s.device + "drv,id=" + s.device + ",bus=ide." +
                                        std::to_string(port) + ",bootindex=" + index_of(s.device)});
    } else {
      if (!xhci) a.insert(a.end(), {"-device", "qemu-xhci,id=xhci"});
      xhci = true;
      a.insert(a.end(), {"-device", "usb-storage,bus=xhci.0,drive=" + s.device + "drv,id=" + s.device +
                                        ",removable=on,bootindex=" + index_of(s.device)});
    }
  }
  std::string netdev = "user,id=net0";
  if (!config_.net_options.empty()) netdev += "," + config_.net_options;
  a.insert(a.end(), {"-netdev", netdev, "-device",
                     "virtio-net-pci,netdev=net0,id=nic0,mac=" + config_.mac + ",bootindex=" + index_of("nic0")});
  a.insert(a.end(), config_.extra_args.begin(), config_.extra_args.end());
  return a;
}

Status QemuMachine::start_locked() {
  if (running_locked()) return Ok{};
  if (auto s = ensure_disk(); !s) return s;
  auto sock = rt_.state_dir / "qmp.sock";
  std::error_code ec;
  std::filesystem::remove(sock, ec);
  auto argv = command_line();
  std::string shown;
  for (const auto& x : argv) shown += (shown.empty() ? "" : " ") + x;
  log_.info("starting QEMU", {{"machine", config_.id}, {"accel", rt_.accel}, {"command", shown}});
  auto qemu_log = rt_.state_dir / "qemu.log";
  pid_t pid = spawner_->run(argv, qemu_log);
  if (pid < 0) return make_error(ErrorKind::unavailable, "cannot fork QEMU");
  pid_ = pid;
  auto c = QmpClient::connect(sock, 15s, [this](const json& e) { on_qmp_event(e); });
  if (!c) {
    ::kill(pid_, SIGKILL);
    int st = 0;
    ::waitpid(pid_, &st, 0);
    pid_ = -1;
    return make_error(ErrorKind::unavailable, "QEMU did not start for " + config_.id + ": " + c.error().message +
                                                  "; qemu.log: " + tail_of(qemu_log));
  }
  qmp_ = std::move(*c);
  ++boot_generation_;
  boot_began_locked("power on");
  return Ok{};
}

Status QemuMachine::stop_locked(bool graceful_wait) {
  if (!running_locked()) return Ok{};
  if (qmp_) (void)qmp_->execute("quit", nullptr, 2s);
  qmp_.reset();
  // Give QEMU a moment to flush the qcow2 and exit; then insist.
  auto deadline = std::chrono::steady_clock::now() + (graceful_wait ? 5s : 3s);
  int status = 0;
  for (;;) {
    pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_ || (r < 0 && errno == ECHILD)) break;
    if (std::chrono::steady_clock::now() > deadline) {
      log_.warn("QEMU did not quit; killing it", {{"machine", config_.id}});
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status, 0);
      break;
    }
    std::this_thread::sleep_for(20ms);
  }
  pid_ = -1;
  ++boot_generation_;
  log_.info("powered off", {{"machine", config_.id}});
  return Ok{};
}

// ------------------------------------------------------------------ Redfish operations

std::string QemuMachine::power_state() const {
  std::lock_guard lock(mu_);
  const_cast<QemuMachine*>(this)->reap_locked();
  if (!running_locked() || !qmp_) return "Off";
  auto st = qmp_->execute("query-status", nullptr, 3s);
  if (!st) return "On";  // the process runs; QMP is momentarily busy
  std::string status = st->value("status", "");
  if (status == "shutdown") return "Off";
  return "On";
}

Status QemuMachine::reset(const std::string& type) {
  if (std::find(reset_types().begin(), reset_types().end(), type) == reset_types().end())
    return make_error(ErrorKind::invalid_input, "ResetType " + type + " is not supported");
  std::lock_guard lock(mu_);
  reap_locked();
  log_.info("reset requested", {{"machine", config_.id}, {"reset_type", type}, {"running", running_locked() ? "yes" : "no"}});
  if (type == "On") return start_locked();
  if (type == "ForceOff") {
    restart_after_powerdown_ = false;
    return stop_locked(false);
  }
  if (type == "ForceRestart") {
    if (!running_locked()) return start_locked();
    auto r = qmp_->execute("system_reset");
    if (!r) return r.error();
    boot_began_locked("ForceRestart");
    return Ok{};
  }
  // Graceful*: the ACPI power button. Nothing happens unless the guest OS handles it,
  // exactly as on a real server.
  if (!running_locked()) return type == "GracefulRestart" ? start_locked() : Status(Ok{});
  auto r = qmp_->execute("system_powerdown");
  if (!r) return r.error();
  if (type == "GracefulRestart") {
    restart_after_powerdown_ = true;
    restart_after_powerdown_deadline_ = std::chrono::steady_clock::now() + rt_.graceful_timeout;
  }
  return Ok{};
}

std::vector<MediaSlotState> QemuMachine::slots() const {
  std::lock_guard lock(mu_);
  return slots_;
}

MediaSlotState* QemuMachine::find_slot(const std::string& id) {
  for (auto& s : slots_)
    if (s.id == id) return &s;
  return nullptr;
}

Status QemuMachine::insert_media(const std::string& slot_id, const std::string& url, bool write_protected) {
  {
    std::lock_guard lock(mu_);
    MediaSlotState* s = find_slot(slot_id);
    if (!s) return make_error(ErrorKind::not_found, "no virtual media slot " + slot_id);
    if (s->inserted && s->image == url) return Ok{};  // idempotent repeat
    if (s->inserted) return make_error(ErrorKind::conflict, "slot " + slot_id + " holds another image: eject first");
  }
  HttpUrl u;
  if (!parse_http_url(url, u) && url.rfind("https://", 0) != 0)
    return make_error(ErrorKind::invalid_input, "Image must be an http:// URL");
  // The download runs without the machine lock: power and boot stay responsive meanwhile.
  auto fetched = fetcher_.fetch(url);
  if (!fetched) return fetched.error();
  std::lock_guard lock(mu_);
  MediaSlotState* s = find_slot(slot_id);
  if (s->inserted && s->image != url)
    return make_error(ErrorKind::conflict, "slot " + slot_id + " was filled meanwhile");
  if (qmp_) {
    // The qdev id QEMU knows the drive by (nested for USB storage).
    std::string qdev = s->device;
    if (auto blocks = qmp_->execute("query-block"); blocks && blocks->is_array())
      for (const auto& b : *blocks)
        if (b.value("device", "") == s->device + "drv") qdev = b.value("qdev", qdev);
    auto r = qmp_->execute("blockdev-change-medium", {{"id", qdev},
                                                      {"filename", fetched->file.string()},
                                                      {"format", "raw"},
                                                      {"read-only-mode", "read-only"}},
                           30s);
    if (!r) return r.error();
  }
  s->image = url;
  s->file = fetched->file;
  s->inserted = true;
  // The cached file is shared by every insert of this URL: the guest never gets to write it.
  s->write_protected = true;
  (void)write_protected;
  ++s->generation;
  log_.info("media inserted", {{"machine", config_.id},
                               {"slot", slot_id},
                               {"url", url.substr(0, url.find('?'))},
                               {"cached", fetched->from_cache ? "yes" : "no"}});
  return Ok{};
}

Status QemuMachine::eject_media(const std::string& slot_id) {
  std::lock_guard lock(mu_);
  MediaSlotState* s = find_slot(slot_id);
  if (!s) return make_error(ErrorKind::not_found, "no virtual media slot " + slot_id);
  if (qmp_ && s->inserted) {
    std::string qdev = s->device;
    if (auto blocks = qmp_->execute("query-block"); blocks && blocks->is_array())
      for (const auto& b : *blocks)
        if (b.value("device", "") == s->device + "drv") qdev = b.value("qdev", qdev);
    // force: a guest that locked the tray cannot keep a BMC from ejecting.
    auto r = qmp_->execute("eject", {{"id", qdev}, {"force", true}});
    if (!r) return r.error();
  }
  bool was = s->inserted;
  s->image.clear();
  s->file.clear();
  s->inserted = false;
  ++s->generation;
  if (was) log_.info("media ejected", {{"machine", config_.id}, {"slot", slot_id}});
  return Ok{};
}

BootOverride QemuMachine::boot() const {
  std::lock_guard lock(mu_);
  return boot_;
}

std::uint64_t QemuMachine::boot_generation() const {
  std::lock_guard lock(mu_);
  return boot_generation_;
}

Status QemuMachine::set_boot(const BootOverride& wanted) {
  if (std::find(boot_targets().begin(), boot_targets().end(), wanted.target) == boot_targets().end())
    return make_error(ErrorKind::invalid_input, "BootSourceOverrideTarget " + wanted.target + " is not supported");
  if (wanted.enabled != "Disabled" && wanted.enabled != "Once" && wanted.enabled != "Continuous")
    return make_error(ErrorKind::invalid_input, "BootSourceOverrideEnabled " + wanted.enabled + " is not supported");
  std::lock_guard lock(mu_);
  BootOverride before = boot_;
  boot_ = wanted;
  once_in_use_since_.reset();  // a new override waits for the next boot
  if (auto s = apply_boot_order_locked(effective_target()); !s) {
    boot_ = before;
    return s;
  }
  ++boot_generation_;
  log_.info("boot override set", {{"machine", config_.id}, {"target", boot_.target}, {"enabled", boot_.enabled}});
  return Ok{};
}

int QemuMachine::boot_count() const {
  std::lock_guard lock(mu_);
  return boot_count_;
}

Result<json> QemuMachine::qmp(const std::string& command, const json& arguments) {
  std::lock_guard lock(mu_);
  if (!qmp_) return make_error(ErrorKind::unavailable, "machine " + config_.id + " is powered off");
  return qmp_->execute(command, arguments);
}

// ------------------------------------------------------------------ KVM probe

bool kvm_boots(const std::string& qemu_binary, const std::filesystem::path& ovmf_code,
               const std::filesystem::path& scratch_dir) {
  if (::access("/dev/kvm", R_OK | W_OK) != 0) return false;
  std::error_code ec;
  std::filesystem::create_directories(scratch_dir, ec);
  auto out = scratch_dir / "kvm-probe.log";
  std::filesystem::remove(out, ec);
  std::vector<std::string> argv = {qemu_binary, "-accel", "kvm", "-machine", "q35", "-m", "128", "-display", "none",
                                   "-nodefaults", "-no-user-config", "-net", "none"};
  if (std::filesystem::exists(ovmf_code)) {
    // OVMF prints "BdsDxe: ..." on the serial port once its 64-bit boot manager runs.
    argv.insert(argv.end(), {"-drive", "if=pflash,format=raw,readonly=on,file=" + qopt(ovmf_code.string()),
                             "-serial", "file:" + out.string()});
  } else {
    // SeaBIOS writes its boot log to the debug console.
    argv.insert(argv.end(), {"-debugcon", "file:" + out.string(), "-global", "isa-debugcon.iobase=0x402"});
  }
  pid_t pid = spawn(argv, scratch_dir / "kvm-probe.stderr", false);
  if (pid < 0) return false;
  bool ok = false;
  auto deadline = std::chrono::steady_clock::now() + 8s;  // a working KVM needs well under 1 s
  while (std::chrono::steady_clock::now() < deadline) {
    int st = 0;
    if (::waitpid(pid, &st, WNOHANG) == pid) {
      pid = -1;
      break;
    }
    std::ifstream in(out);
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string text = ss.str();
    std::ifstream err(scratch_dir / "kvm-probe.stderr");
    std::stringstream es;
    es << err.rdbuf();
    if (es.str().find("KVM internal error") != std::string::npos) break;  // QEMU pauses, does not exit
    if (text.find("BdsDxe") != std::string::npos || text.find("No bootable device") != std::string::npos ||
        text.find("Booting from") != std::string::npos) {
      ok = true;
      break;
    }
    std::this_thread::sleep_for(100ms);
  }
  if (pid > 0) {
    ::kill(pid, SIGKILL);
    int st = 0;
    ::waitpid(pid, &st, 0);
  }
  return ok;
}

}  // namespace provisioner::vbmc
