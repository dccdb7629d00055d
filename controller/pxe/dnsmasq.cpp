#include "controller/pxe/dnsmasq.hpp"

#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <chrono>
#include <set>
#include <sstream>

#include "common/atomic_file.hpp"
#include "controller/logging/logger.hpp"

namespace provisioner {

namespace fs = std::filesystem;

namespace {

// Raspberry Pi Foundation / Raspberry Pi Trading OUIs: a Pi asks like a BIOS PC (arch 0).
constexpr std::array<const char*, 6> kRpiOuis = {"b8:27:eb", "dc:a6:32", "e4:5f:01", "28:cd:c1", "d8:3a:dd", "2c:cf:67"};

// A value that goes into a dnsmasq line: no separator, quote or line break can change it.
bool safe_value(const std::string& v) {
  return !v.empty() && v.find_first_of(",\"'\n\r\t #") == std::string::npos;
}

}  // namespace

std::string dnsmasq_config(const DhcpOptions& o) {
  std::ostringstream c;
  const bool proxy = o.mode == "proxy";
  c << "# Written by provisioner-controller at every start; do not edit (controller/pxe/dnsmasq.hpp).\n"
    << "port=0\n"  // DHCP and TFTP only: no DNS
    << "interface=" << o.interface << "\n"
    << "bind-interfaces\n"
    << "except-interface=lo\n";
  if (!o.user.empty()) c << "user=" << o.user << "\n";
  if (proxy) c << "dhcp-range=" << o.subnet << ",proxy\n";
  else c << "dhcp-range=" << o.range_start << "," << o.range_end << "," << o.netmask << ",1h\n";
  c << "dhcp-leasefile=" << (o.dir / "leases").string() << "\n"
    << "dhcp-hostsfile=" << (o.dir / "hosts").string() << "\n"
    << "log-facility=" << (o.dir / "dnsmasq.log").string() << "\n"
    << "log-dhcp\n"
    << "enable-tftp\n"
    << "tftp-root=" << (o.dir / "tftp").string() << "\n"
    // A Pi asks for tsize, aborts, and asks again: dnsmasq answers the option and does not
    // mind the abort. No file outside the root, no upload; only world-readable files.
    << "tftp-secure\n";
  // Who may boot: nodes in the host list carry `provision` or `noboot`; unknown MACs boot
  // only while discovery is on.
  if (proxy) {
    c << "dhcp-ignore=tag:noboot\n";
    if (!o.discover) c << "dhcp-ignore=tag:!known\n";
  }
  c << (o.discover ? "tag-if=set:boot,tag:!noboot\n" : "tag-if=set:boot,tag:known,tag:!noboot\n")
    << "dhcp-userclass=set:ipxe,iPXE\n"
    << "dhcp-match=set:ipxe,175\n";
  for (const char* oui : kRpiOuis) c << "dhcp-mac=set:rpi," << oui << ":*:*:*\n";
  c << "tag-if=set:rom,tag:boot,tag:!ipxe,tag:!rpi\n"
    << "tag-if=set:ipxeboot,tag:boot,tag:ipxe\n"
    << "tag-if=set:rpiboot,tag:boot,tag:rpi,tag:!ipxe\n";
  if (proxy) {
    c << "pxe-service=tag:rom,x86PC,\"provisioner: iPXE\",undionly.kpxe\n"
      << "pxe-service=tag:rom,X86-64_EFI,\"provisioner: iPXE\",ipxe.efi\n"
      << "pxe-service=tag:rom,BC_EFI,\"provisioner: iPXE\",ipxe.efi\n";
    if (o.arm64) c << "pxe-service=tag:rom,ARM64_EFI,\"provisioner: iPXE\",ipxe-arm64.efi\n";
    for (const char* csa : {"x86PC", "X86-64_EFI", "BC_EFI"})
      c << "pxe-service=tag:ipxeboot," << csa << ",\"provisioner\"," << o.boot_script_url << "\n";
    if (o.arm64) c << "pxe-service=tag:ipxeboot,ARM64_EFI,\"provisioner\"," << o.boot_script_url << "\n";
  } else {
    c << "dhcp-match=set:efi64,option:client-arch,7\n"
      << "dhcp-match=set:efi64,option:client-arch,9\n"
      << "dhcp-match=set:arm64,option:client-arch,11\n"
      << "dhcp-vendorclass=set:pxeclient,PXEClient\n"
      << "dhcp-vendorclass=set:httpclient,HTTPClient\n"
      << "tag-if=set:romboot,tag:rom,tag:pxeclient\n"
      << "dhcp-boot=tag:ipxeboot," << o.boot_script_url << "\n"
      << "dhcp-boot=tag:romboot,tag:efi64,ipxe.efi\n";
    if (o.arm64) c << "dhcp-boot=tag:romboot,tag:arm64,ipxe-arm64.efi\n";
    c << "dhcp-boot=tag:romboot,tag:!efi64,tag:!arm64,undionly.kpxe\n";
    if (!o.http_boot_url.empty())
      c << "tag-if=set:httpboot,tag:boot,tag:httpclient,tag:!ipxe\n"
        << "dhcp-boot=tag:httpboot," << o.http_boot_url << "\n"
        << "dhcp-option-force=tag:httpboot,60,HTTPClient\n";
  }
  // Raspberry Pi: option 43 with "Raspberry Pi Boot" (a PXE menu entry), files by TFTP.
  c << "pxe-service=tag:rpiboot,0,\"Raspberry Pi Boot\"\n";
  return c.str();
}

std::string dnsmasq_hosts(const std::vector<NodeRecord>& nodes) {
  std::set<std::string> lines;
  for (const auto& n : nodes) {
    auto macs = n.record.find("macs");
    if (macs == n.record.end() || !macs->is_array()) continue;
    bool rpi = n.record.contains("rpi_serial") || n.record.value("platform", "") == "rpi";
    std::string tags = gets_pxe_offer(n.state) ? ",set:provision" : ",set:noboot";
    if (rpi) tags += ",set:rpi";
    for (const auto& m : *macs)
      if (m.is_string()) lines.insert(m.get<std::string>() + tags);
  }
  std::string out;
  for (const auto& l : lines) out += l + "\n";
  return out;
}

DnsmasqSupervisor::DnsmasqSupervisor(DnsmasqOptions options, std::function<Result<std::vector<NodeRecord>>()> nodes,
                                     std::function<std::vector<RpiBoot>()> rpi, const Logger& log)
    : options_(std::move(options)), nodes_(std::move(nodes)), rpi_(std::move(rpi)), log_(log) {}

DnsmasqSupervisor::~DnsmasqSupervisor() { stop(); }

pid_t DnsmasqSupervisor::pid() const {
  std::lock_guard lock(mutex_);
  return pid_;
}

int DnsmasqSupervisor::restarts() const {
  std::lock_guard lock(mutex_);
  return restarts_;
}

Status DnsmasqSupervisor::prepare_tftp() {
  std::error_code ec;
  fs::create_directories(options_.dhcp.dir / "tftp", ec);
  if (ec) return make_error(ErrorKind::unavailable, "cannot create " + (options_.dhcp.dir / "tftp").string() + ": " + ec.message());
  std::vector<std::pair<fs::path, std::string>> files = {{options_.ipxe_dir / "undionly.kpxe", "undionly.kpxe"},
                                                          {options_.ipxe_dir / "ipxe.efi", "ipxe.efi"}};
  if (options_.arm64_efi) files.emplace_back(*options_.arm64_efi, "ipxe-arm64.efi");
  for (const auto& [from, name] : files) {
    auto bytes = read_file(from);
    if (!bytes) return make_error(ErrorKind::unavailable, "network boot: cannot read " + from.string() + " (Debian package ipxe)");
    if (auto w = write_file_atomically(options_.dhcp.dir / "tftp" / name, *bytes, 0644); !w) return w.error();
  }
  return Ok{};
}

Status DnsmasqSupervisor::check(const std::string& config, const std::string& hosts) const {
  // --test does not read dhcp-hostsfile: the host lines go inline as dhcp-host=.
  std::string text = config;
  std::istringstream lines(hosts);
  for (std::string line; std::getline(lines, line);)
    if (!line.empty()) text += "dhcp-host=" + line + "\n";
  auto file = options_.dhcp.dir / "check.conf";
  if (auto w = write_file_atomically(file, text, 0600); !w) return w.error();
  std::string command = options_.binary + " --test --conf-file=" + file.string() + " 2>&1";
  FILE* p = ::popen(command.c_str(), "r");
  if (!p) return make_error(ErrorKind::unavailable, "cannot run " + options_.binary);
  std::string output;
  char buf[512];
  while (auto n = std::fread(buf, 1, sizeof buf, p)) output.append(buf, n);
  int rc = ::pclose(p);
  if (rc != 0) {
    while (!output.empty() && (output.back() == '\n' || output.back() == '\r')) output.pop_back();
    return make_error(ErrorKind::invalid_input, "dnsmasq --test refused the configuration: " + output);
  }
  return Ok{};
}

Status DnsmasqSupervisor::start() {
  auto& d = options_.dhcp;
  for (const auto& [what, value] : {std::pair{"interface", d.interface}, {"boot script URL", d.boot_script_url}})
    if (!safe_value(value)) return make_error(ErrorKind::invalid_input, std::string("network boot: bad ") + what + " '" + value + "'");
  if (!d.http_boot_url.empty() && !safe_value(d.http_boot_url))
    return make_error(ErrorKind::invalid_input, "network boot: bad HTTP boot URL '" + d.http_boot_url + "'");
  if (d.user.empty())
    if (auto* pw = ::getpwuid(::geteuid())) d.user = pw->pw_name;  // it reads our files after dropping root
  std::error_code ec;
  fs::create_directories(d.dir, ec);
  ::chmod(d.dir.c_str(), 0755);
  if (auto t = prepare_tftp(); !t) return t;
  config_ = dnsmasq_config(d);
  auto nodes = nodes_();
  if (!nodes) return nodes.error();
  hosts_ = dnsmasq_hosts(*nodes);
  if (auto c = check(config_, hosts_); !c) return c;
  if (auto w = write_file_atomically(d.dir / "dnsmasq.conf", config_, 0644); !w) return w.error();
  if (auto w = write_file_atomically(d.dir / "hosts", hosts_, 0644); !w) return w.error();
  {
    std::lock_guard lock(mutex_);
    stopping_ = false;
    if (auto s = spawn(); !s) return s;
  }
  refresh();  // the Pi folders
  watcher_ = std::thread([this] { watch(); });
  log_.info("dnsmasq started", {{"mode", d.mode}, {"interface", d.interface}, {"config", (d.dir / "dnsmasq.conf").string()},
                                {"log", (d.dir / "dnsmasq.log").string()}});
  return Ok{};
}

// Under mutex_.
Status DnsmasqSupervisor::spawn() {
  // The binary's path, found before the fork (a PATH search is no async-signal-safe call).
  std::string binary = options_.binary;
  if (binary.find('/') == std::string::npos) {
    std::string path = std::getenv("PATH") ? std::getenv("PATH") : "/usr/sbin:/usr/bin:/sbin:/bin";
    std::string found;
    for (std::size_t start = 0; start <= path.size();) {
      auto end = path.find(':', start);
      if (end == std::string::npos) end = path.size();
      auto candidate = path.substr(start, end - start) + "/" + binary;
      if (end > start && ::access(candidate.c_str(), X_OK) == 0) {
        found = candidate;
        break;
      }
      start = end + 1;
    }
    if (found.empty()) return make_error(ErrorKind::unavailable, "no " + binary + " on PATH (Debian package dnsmasq-base)");
    binary = found;
  }
  std::string conf = "--conf-file=" + (options_.dhcp.dir / "dnsmasq.conf").string();
  std::vector<std::string> args = {options_.binary, "--keep-in-foreground", conf};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  int log_fd = ::open((options_.dhcp.dir / "dnsmasq.log").c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) {
    if (log_fd >= 0) ::close(log_fd);
    return make_error(ErrorKind::unavailable, "cannot fork dnsmasq");
  }
  if (pid == 0) {
    // The guardian: it dies with the controller (PR_SET_PDEATHSIG, even for a SIGKILLed
    // controller) and takes dnsmasq with it, so no orphan keeps the DHCP port. dnsmasq cannot
    // be its own guardian: dropping its privileges clears the parent-death signal. It passes
    // SIGHUP and SIGTERM on, and exits as dnsmasq did. Only async-signal-safe calls here.
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) ::_exit(1);
    ::setpgid(0, 0);  // its own group, dnsmasq in it: the controller can end both at once
    sigset_t forwarded;
    sigemptyset(&forwarded);
    for (int sig : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&forwarded, sig);
    ::sigprocmask(SIG_SETMASK, &forwarded, nullptr);
    int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, 0);
    if (log_fd >= 0) {
      ::dup2(log_fd, 1);
      ::dup2(log_fd, 2);
    }
    pid_t child = ::fork();
    if (child < 0) ::_exit(126);
    if (child == 0) {
      sigset_t none;
      sigemptyset(&none);
      ::sigprocmask(SIG_SETMASK, &none, nullptr);
      ::execv(binary.c_str(), argv.data());
      ::_exit(127);
    }
    for (;;) {
      int status = 0;
      if (::waitpid(child, &status, WNOHANG) == child)
        ::_exit(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
      timespec tick{0, 200'000'000};
      siginfo_t info;
      int sig = ::sigtimedwait(&forwarded, &info, &tick);
      if (sig == SIGHUP) ::kill(child, SIGHUP);
      if (sig == SIGTERM || sig == SIGINT) {
        ::kill(child, SIGTERM);
        ::waitpid(child, &status, 0);
        ::_exit(0);
      }
    }
  }
  if (log_fd >= 0) ::close(log_fd);
  pid_ = pid;
  return Ok{};
}

void DnsmasqSupervisor::nodes_changed() {
  // No lock: API and reconciler threads must never wait behind a restart. The watcher wakes
  // at least every 200 ms, so a notify it misses costs that much at most.
  dirty_ = true;
  wake_.notify_all();
}

void DnsmasqSupervisor::refresh() {
  auto nodes = nodes_();
  if (!nodes) {
    log_.warn("dnsmasq: cannot list the nodes", {{"error", nodes.error().message}});
    return;
  }
  auto hosts = dnsmasq_hosts(*nodes);
  // Pi folders: <serial>/ with the firmware files and this job's config.txt and cmdline.txt,
  // only while its node has a job to boot; a folder that is gone means "nothing to boot".
  auto tftp = options_.dhcp.dir / "tftp";
  std::vector<std::string> served;
  for (const auto& pi : rpi_ ? rpi_() : std::vector<RpiBoot>{}) {
    if (pi.serial.size() != 8 || pi.serial.find_first_not_of("0123456789abcdef") != std::string::npos) continue;
    served.push_back(pi.serial);
    auto dir = tftp / pi.serial;
    auto cmdline = read_file(dir / "cmdline.txt");
    if (cmdline && *cmdline == pi.cmdline + "\n") continue;  // up to date
    std::error_code ec;
    auto staging = tftp / (".staging-" + pi.serial);
    fs::remove_all(staging, ec);
    fs::create_directories(staging, ec);
    if (options_.rpi_firmware)
      fs::copy(*options_.rpi_firmware, staging, fs::copy_options::recursive | fs::copy_options::overwrite_existing, ec);
    if (ec) {
      log_.error("dnsmasq: cannot stage the Raspberry Pi firmware", {{"serial", pi.serial}, {"error", ec.message()}});
      continue;
    }
    auto config_txt = std::string("# provisioner: the maintenance OS, booted over the network\n"
                                  "arm_64bit=1\nenable_uart=1\nkernel=kernel8.img\ninitramfs initrd.img followkernel\n");
    if (!write_file_atomically(staging / "config.txt", config_txt, 0644) ||
        !write_file_atomically(staging / "cmdline.txt", pi.cmdline + "\n", 0644))
      continue;
    fs::remove_all(dir, ec);
    fs::rename(staging, dir, ec);
    if (ec) log_.error("dnsmasq: cannot publish the Raspberry Pi folder", {{"serial", pi.serial}, {"error", ec.message()}});
  }
  for (const auto& old : rpi_served_)
    if (std::find(served.begin(), served.end(), old) == served.end()) {
      std::error_code ec;
      fs::remove_all(tftp / old, ec);
    }
  rpi_served_ = served;

  {
    std::lock_guard lock(mutex_);
    if (hosts == hosts_) return;
  }
  // dnsmasq --test runs outside the lock (the watcher is the only caller after start).
  if (auto c = check(config_, hosts); !c) {
    log_.error("dnsmasq: the new host list was refused; keeping the last one", {{"error", c.error().message}});
    return;
  }
  std::lock_guard lock(mutex_);
  if (auto w = write_file_atomically(options_.dhcp.dir / "hosts", hosts, 0644); !w) {
    log_.error("dnsmasq: cannot write the host list", {{"error", w.error().message}});
    return;
  }
  hosts_ = std::move(hosts);
  if (pid_ <= 0) return;  // the watcher starts it with the new list
  if (options_.dhcp.mode != "proxy") {
    ::kill(pid_, SIGHUP);  // dnsmasq re-reads dhcp-hostsfile
    return;
  }
  // Proxy mode: dnsmasq 2.90 (Debian 12) crashes on a SIGHUP once it has answered a host of
  // its dhcp-hostsfile (a use-after-free; see controller/pxe/README.md). A proxy holds no
  // leases, so a restart loses nothing: the new list is applied by one.
  end_child(std::chrono::milliseconds(1000));
  if (auto s = spawn(); !s) log_.error("dnsmasq: cannot restart with the new host list", {{"error", s.error().message}});
  else log_.debug("dnsmasq restarted with the new host list", {{"pid", std::to_string(pid_)}});
}

void DnsmasqSupervisor::watch() {
  auto next_refresh = std::chrono::steady_clock::now() + options_.refresh;
  auto backoff = std::chrono::milliseconds(500);
  std::chrono::steady_clock::time_point restart_at{};
  for (;;) {
    bool do_refresh = false;
    {
      std::unique_lock lock(mutex_);
      wake_.wait_for(lock, std::chrono::milliseconds(200), [this] { return stopping_ || dirty_; });
      if (stopping_) return;
      if (pid_ > 0) {
        int status = 0;
        if (::waitpid(pid_, &status, WNOHANG) == pid_) {
          // The guardian exits as dnsmasq did: 128 + N for a signal.
          int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
          log_.warn("dnsmasq exited; restarting it",
                    {{"status", code > 128 ? "signal " + std::to_string(code - 128) : "exit " + std::to_string(code)},
                     {"log", (options_.dhcp.dir / "dnsmasq.log").string()}});
          ::killpg(pid_, SIGKILL);  // whatever of its group is left (a guardian that crashed)
          pid_ = -1;
          restart_at = std::chrono::steady_clock::now() + backoff;
          backoff = std::min(backoff * 2, std::chrono::milliseconds(30'000));
        }
      }
      if (pid_ < 0 && std::chrono::steady_clock::now() >= restart_at) {
        if (auto s = spawn(); s) ++restarts_;
        else log_.error("dnsmasq: cannot restart", {{"error", s.error().message}});
      }
      if (pid_ > 0 && std::chrono::steady_clock::now() - restart_at > std::chrono::seconds(60))
        backoff = std::chrono::milliseconds(500);  // it stayed up: the next death restarts fast again
      if (dirty_ || std::chrono::steady_clock::now() >= next_refresh) {
        dirty_ = false;
        do_refresh = true;
      }
    }
    if (do_refresh) {
      refresh();
      next_refresh = std::chrono::steady_clock::now() + options_.refresh;
    }
  }
}

void DnsmasqSupervisor::stop() {
  {
    std::lock_guard lock(mutex_);
    if (stopping_ && pid_ < 0 && !watcher_.joinable()) return;
    stopping_ = true;
  }
  wake_.notify_all();
  if (watcher_.joinable()) watcher_.join();
  std::lock_guard lock(mutex_);
  end_child(std::chrono::milliseconds(5000));
}

// Under mutex_. SIGTERM to the guardian (it ends dnsmasq and exits), then SIGKILL to its
// whole process group (dnsmasq included) when it does not go within `patience`. Reaped once:
// no signal ever goes to a reused pid.
void DnsmasqSupervisor::end_child(std::chrono::milliseconds patience) {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGTERM);
  for (auto waited = std::chrono::milliseconds(0); waited < patience; waited += std::chrono::milliseconds(20)) {
    if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {
      ::killpg(pid_, SIGKILL);  // a dnsmasq its guardian could not end (the group outlives its leader)
      pid_ = -1;
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ::killpg(pid_, SIGKILL);
  ::waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

}  // namespace provisioner
