#pragma once
// Test helpers for the dispatcher: a tiny HTTP server on 127.0.0.1, a fake mounter that
// "mounts" by copying a directory, a fake task medium, a manual clock, and a private D-Bus
// daemon with a fake systemd Manager object.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <systemd/sd-bus.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/support/manual_clock.hpp"
#include "common/clock.hpp"
#include "common/crypto.hpp"
#include "dispatcher/discovery.hpp"

extern char** environ;

namespace provisioner::dispatcher::testing {

namespace fs = std::filesystem;

inline std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline void spit(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << text;
}

// A fresh directory under the build tree's temp area, removed at the end.
struct TempDir {
  fs::path path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "dispatcher-test-XXXXXX").string();
    path = ::mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

using provisioner::test::ManualClock;

// ---- HTTP server ---------------------------------------------------------------------------

struct TestRequest {
  std::string method, target, body;
  std::map<std::string, std::string> headers;  // lowercased names
};
struct TestResponse {
  TestResponse(int s = 200, std::string b = {}, std::vector<std::pair<std::string, std::string>> h = {})
      : status(s), body(std::move(b)), headers(std::move(h)) {}
  int status;
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
};

class TestHttpServer {
 public:
  using Handler = std::function<TestResponse(const TestRequest&)>;
  explicit TestHttpServer(Handler handler) : handler_(std::move(handler)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    ::listen(fd_, 16);
    socklen_t len = sizeof addr;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { loop(); });
  }
  ~TestHttpServer() {
    stop_ = true;
    thread_.join();
    ::close(fd_);
  }
  std::string url(const std::string& path = "") const { return "http://127.0.0.1:" + std::to_string(port_) + path; }
  std::vector<TestRequest> requests() const {
    std::lock_guard lock(mu_);
    return requests_;
  }

 private:
  void loop() {
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      serve(c);
      ::close(c);
    }
  }
  void serve(int c) {
    std::string raw;
    char buf[8192];
    std::size_t head_end = std::string::npos, need = 0;
    for (;;) {
      pollfd p{c, POLLIN, 0};
      if (::poll(&p, 1, 2000) <= 0) return;
      ssize_t n = ::recv(c, buf, sizeof buf, 0);
      if (n <= 0) return;
      raw.append(buf, static_cast<std::size_t>(n));
      if (head_end == std::string::npos && (head_end = raw.find("\r\n\r\n")) != std::string::npos) {
        auto cl = lower(raw.substr(0, head_end)).find("content-length:");
        if (cl != std::string::npos) need = std::stoul(raw.substr(cl + 15));
      }
      if (head_end != std::string::npos && raw.size() >= head_end + 4 + need) break;
    }
    TestRequest req;
    std::istringstream head(raw.substr(0, head_end));
    std::string line;
    std::getline(head, line);
    std::istringstream first(line);
    first >> req.method >> req.target;
    while (std::getline(head, line)) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      auto colon = line.find(':');
      if (colon == std::string::npos) continue;
      auto v = line.substr(colon + 1);
      while (!v.empty() && v.front() == ' ') v.erase(0, 1);
      req.headers[lower(line.substr(0, colon))] = v;
    }
    req.body = raw.substr(head_end + 4, need);
    {
      std::lock_guard lock(mu_);
      requests_.push_back(req);
    }
    TestResponse resp = handler_(req);
    std::string out = "HTTP/1.1 " + std::to_string(resp.status) + " X\r\nContent-Length: " +
                      std::to_string(resp.body.size()) + "\r\nConnection: close\r\n";
    for (auto& [k, v] : resp.headers) out += k + ": " + v + "\r\n";
    out += "\r\n" + resp.body;
    ::send(c, out.data(), out.size(), MSG_NOSIGNAL);
  }
  static std::string lower(std::string s) {
    for (auto& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    return s;
  }

  Handler handler_;
  int fd_ = -1;
  std::uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  mutable std::mutex mu_;
  std::vector<TestRequest> requests_;
};

// Answers every request with a 200 head announcing `body_bytes`, then sends the body one byte
// every `gap_ms`: each read succeeds long before any per-read timeout, so only an overall
// deadline ends the exchange early. Counts the requests it saw.
class TrickleServer {
 public:
  TrickleServer(int body_bytes, int gap_ms) : body_bytes_(body_bytes), gap_ms_(gap_ms) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    ::listen(fd_, 16);
    socklen_t len = sizeof addr;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { loop(); });
  }
  ~TrickleServer() {
    stop_ = true;
    thread_.join();
    ::close(fd_);
  }
  std::string url(const std::string& path = "/") const { return "http://127.0.0.1:" + std::to_string(port_) + path; }
  int requests() const { return requests_; }

 private:
  void loop() {
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      std::string raw;
      char buf[4096];
      while (raw.find("\r\n\r\n") == std::string::npos && !stop_) {
        pollfd q{c, POLLIN, 0};
        if (::poll(&q, 1, 50) <= 0) continue;
        ssize_t n = ::recv(c, buf, sizeof buf, 0);
        if (n <= 0) break;
        raw.append(buf, static_cast<std::size_t>(n));
      }
      ++requests_;
      std::string head = "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(body_bytes_) + "\r\n\r\n";
      bool ok = ::send(c, head.data(), head.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(head.size());
      for (int i = 0; ok && i < body_bytes_ && !stop_; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(gap_ms_));
        ok = ::send(c, "x", 1, MSG_NOSIGNAL) == 1;
      }
      ::close(c);
    }
  }

  int body_bytes_, gap_ms_;
  int fd_ = -1;
  std::uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> requests_{0};
  std::thread thread_;
};

// ---- fake mounting and task media --------------------------------------------------------

class FakeMounter final : public Mounter {
 public:
  std::map<std::string, fs::path> devices;  // device path → directory with the medium's files
  fs::path image_source;                    // what any image file "contains"
  std::vector<fs::path> mounted_images;
  Status mount_device(const fs::path& device, const fs::path& dir) override {
    auto it = devices.find(device.string());
    if (it == devices.end()) return make_error(ErrorKind::internal, "fake: no such device " + device.string());
    return copy_into(it->second, dir);
  }
  Status mount_image(const fs::path& file, const fs::path& dir) override {
    mounted_images.push_back(file);
    return copy_into(image_source, dir);
  }
  void unmount(const fs::path& dir) override {
    std::error_code ec;
    for (auto& e : fs::directory_iterator(dir, ec)) fs::remove_all(e.path(), ec);
  }

 private:
  Status copy_into(const fs::path& from, const fs::path& dir) {
    unmount(dir);
    std::error_code ec;
    fs::create_directories(dir, ec);
    fs::copy(from, dir, fs::copy_options::recursive | fs::copy_options::overwrite_existing, ec);
    if (ec) return make_error(ErrorKind::internal, ec.message());
    return Ok{};
  }
};

inline nlohmann::json debian_recipe() {
  return nlohmann::json::parse(slurp(fs::path(PROVISIONER_SOURCE_DIR) / "recipes/debian-12.json"));
}

// Writes a task medium as controller/iso lays it out.
inline void write_task_medium(const fs::path& dir, const std::string& job_id, const std::string& webhook_url,
                              const std::string& key, const nlohmann::json& recipe) {
  spit(dir / "provisioner-task", "provisioner-task-iso 1\njob_id=" + job_id + "\n");
  spit(dir / "job.json", nlohmann::json{{"id", job_id},
                                        {"webhook_url", webhook_url},
                                        {"signing_key_id", "k1"},
                                        {"signing_key", key}}
                             .dump());
  spit(dir / "recipe.json", recipe.dump(2));
  spit(dir / "recipe.schema.json", slurp(fs::path(PROVISIONER_SOURCE_DIR) / "schemas/recipe.schema.json"));
  if (recipe.contains("user_data")) {
    spit(dir / "user-data", recipe["user_data"].get<std::string>());
    spit(dir / "meta-data", "instance-id: " + job_id + "\n");
  }
}

// ---- private D-Bus with a fake systemd -----------------------------------------------------

// dbus-daemon --session on a private socket, killed at the end of the test.
class PrivateBus {
 public:
  PrivateBus() {
    int out[2];
    if (::pipe2(out, O_CLOEXEC) != 0) return;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    const char* argv[] = {"dbus-daemon", "--session", "--nofork", "--nopidfile", "--print-address=1", nullptr};
    if (::posix_spawnp(&pid_, "dbus-daemon", &fa, nullptr, const_cast<char**>(argv), environ) != 0) pid_ = -1;
    posix_spawn_file_actions_destroy(&fa);
    ::close(out[1]);
    char c;
    while (pid_ > 0) {
      pollfd p{out[0], POLLIN, 0};
      if (::poll(&p, 1, 5000) <= 0 || ::read(out[0], &c, 1) != 1 || c == '\n') break;
      address_.push_back(c);
    }
    ::close(out[0]);
  }
  ~PrivateBus() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  const std::string& address() const { return address_; }

 private:
  pid_t pid_ = -1;
  std::string address_;
};

// Owns org.freedesktop.systemd1 on the private bus and implements the Manager calls the
// dispatcher makes: Subscribe, and StartUnit which answers a job path and then emits
// JobRemoved for each configured dependency and the unit itself.
class FakeSystemd {
 public:
  struct Plan {
    std::vector<std::pair<std::string, std::string>> steps;  // (unit, result) before the unit
    std::string result = "done";
    bool never_finish = false;
  };
  FakeSystemd(const std::string& address, std::map<std::string, Plan> plans,
              std::map<std::string, std::string> states = {})
      : plans_(std::move(plans)), states_(std::move(states)) {
    sd_bus_new(&bus_);
    sd_bus_set_address(bus_, address.c_str());
    sd_bus_set_bus_client(bus_, 1);
    ok_ = sd_bus_start(bus_) >= 0 && sd_bus_request_name(bus_, "org.freedesktop.systemd1", 0) >= 0 &&
          sd_bus_add_object_vtable(bus_, nullptr, "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager",
                                   vtable(), this) >= 0;
    // One Unit object per unit with a known ActiveState.
    for (const auto& [unit, state] : states_) {
      unit_paths_[unit] = "/org/freedesktop/systemd1/unit/u" + std::to_string(unit_paths_.size());
      ok_ = ok_ && sd_bus_add_object_vtable(bus_, nullptr, unit_paths_[unit].c_str(), "org.freedesktop.systemd1.Unit",
                                            unit_vtable(), &states_.at(unit)) >= 0;
    }
    thread_ = std::thread([this] {
      while (!stop_) {
        int r = sd_bus_process(bus_, nullptr);
        if (r > 0) continue;
        sd_bus_wait(bus_, 50000);
      }
    });
  }
  ~FakeSystemd() {
    stop_ = true;
    thread_.join();
    sd_bus_flush_close_unref(bus_);
  }
  bool ok() const { return ok_; }
  std::vector<std::string> started() const {
    std::lock_guard lock(mu_);
    return started_;
  }
  int subscribed() const { return subscribed_; }

 private:
  static const sd_bus_vtable* vtable() {
    static const sd_bus_vtable table[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_METHOD("Subscribe", "", "", &FakeSystemd::on_subscribe, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD("StartUnit", "ss", "o", &FakeSystemd::on_start_unit, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD("GetUnit", "s", "o", &FakeSystemd::on_get_unit, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_SIGNAL("JobRemoved", "uoss", 0),
        SD_BUS_VTABLE_END};
    return table;
  }
  static const sd_bus_vtable* unit_vtable() {
    static const sd_bus_vtable table[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("ActiveState", "s", &FakeSystemd::get_state, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_VTABLE_END};
    return table;
  }
  static int get_state(sd_bus*, const char*, const char*, const char*, sd_bus_message* reply, void* userdata,
                       sd_bus_error*) {
    return sd_bus_message_append(reply, "s", static_cast<std::string*>(userdata)->c_str());
  }
  static int on_get_unit(sd_bus_message* m, void* userdata, sd_bus_error* error) {
    auto* self = static_cast<FakeSystemd*>(userdata);
    const char* unit = nullptr;
    int r = sd_bus_message_read(m, "s", &unit);
    if (r < 0) return r;
    auto it = self->unit_paths_.find(unit);
    if (it == self->unit_paths_.end())
      return sd_bus_error_setf(error, "org.freedesktop.systemd1.NoSuchUnit", "Unit %s not loaded.", unit);
    return sd_bus_reply_method_return(m, "o", it->second.c_str());
  }
  static int on_subscribe(sd_bus_message* m, void* self, sd_bus_error*) {
    ++static_cast<FakeSystemd*>(self)->subscribed_;
    return sd_bus_reply_method_return(m, "");
  }
  static int on_start_unit(sd_bus_message* m, void* userdata, sd_bus_error* error) {
    auto* self = static_cast<FakeSystemd*>(userdata);
    const char *unit = nullptr, *mode = nullptr;
    int r = sd_bus_message_read(m, "ss", &unit, &mode);
    if (r < 0) return r;
    {
      std::lock_guard lock(self->mu_);
      self->started_.push_back(unit);
    }
    auto it = self->plans_.find(unit);
    if (it == self->plans_.end())
      return sd_bus_error_setf(error, "org.freedesktop.systemd1.NoSuchUnit", "Unit %s not found.", unit);
    std::uint32_t id = ++self->next_job_;
    std::string path = "/org/freedesktop/systemd1/job/" + std::to_string(id);
    r = sd_bus_reply_method_return(m, "o", path.c_str());
    if (r < 0) return r;
    for (const auto& [step, result] : it->second.steps) {
      std::uint32_t sid = ++self->next_job_;
      std::string spath = "/org/freedesktop/systemd1/job/" + std::to_string(sid);
      sd_bus_emit_signal(self->bus_, "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager", "JobRemoved",
                         "uoss", sid, spath.c_str(), step.c_str(), result.c_str());
    }
    if (!it->second.never_finish)
      sd_bus_emit_signal(self->bus_, "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager", "JobRemoved",
                         "uoss", id, path.c_str(), unit, it->second.result.c_str());
    return 1;
  }

  sd_bus* bus_ = nullptr;
  bool ok_ = false;
  std::map<std::string, Plan> plans_;
  std::map<std::string, std::string> states_;
  std::map<std::string, std::string> unit_paths_;
  std::atomic<bool> stop_{false};
  std::atomic<int> subscribed_{0};
  std::atomic<std::uint32_t> next_job_{0};
  mutable std::mutex mu_;
  std::vector<std::string> started_;
  std::thread thread_;
};

}  // namespace provisioner::dispatcher::testing
