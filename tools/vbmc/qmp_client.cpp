#include "tools/vbmc/qmp_client.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

namespace provisioner::vbmc {

using nlohmann::json;

namespace {

bool write_all(int fd, const std::string& data) {
  std::size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    off += static_cast<std::size_t>(n);
  }
  return true;
}

// Reads one '\n'-terminated line with a deadline; used only before the reader thread runs.
bool read_line(int fd, std::string& buf, std::string& line, std::chrono::steady_clock::time_point deadline) {
  for (;;) {
    auto nl = buf.find('\n');
    if (nl != std::string::npos) {
      line = buf.substr(0, nl);
      buf.erase(0, nl + 1);
      return true;
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) return false;
    char tmp[4096];
    ssize_t n = ::recv(fd, tmp, sizeof tmp, 0);
    if (n <= 0) return false;
    buf.append(tmp, static_cast<std::size_t>(n));
  }
}

}  // namespace

Result<std::unique_ptr<QmpClient>> QmpClient::connect(const std::filesystem::path& socket_path,
                                                     std::chrono::milliseconds timeout, EventHandler on_event) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::string p = socket_path.string();
  if (p.size() >= sizeof addr.sun_path)
    return make_error(ErrorKind::invalid_input, "QMP socket path too long: " + p);
  std::memcpy(addr.sun_path, p.c_str(), p.size() + 1);
  int fd = -1;
  for (;;) {
    fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return make_error(ErrorKind::internal, "QMP: socket() failed");
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) break;
    ::close(fd);
    fd = -1;
    // QEMU creates the socket a moment after it starts: poll until it is there.
    if (std::chrono::steady_clock::now() >= deadline)
      return make_error(ErrorKind::unavailable, "QMP: cannot connect to " + p);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::string buf, line;
  if (!read_line(fd, buf, line, deadline) || line.find("\"QMP\"") == std::string::npos) {
    ::close(fd);
    return make_error(ErrorKind::unavailable, "QMP: no greeting on " + p);
  }
  if (!write_all(fd, "{\"execute\":\"qmp_capabilities\"}\n")) {
    ::close(fd);
    return make_error(ErrorKind::unavailable, "QMP: write failed on " + p);
  }
  for (;;) {
    if (!read_line(fd, buf, line, deadline)) {
      ::close(fd);
      return make_error(ErrorKind::unavailable, "QMP: no answer to qmp_capabilities on " + p);
    }
    json j = json::parse(line, nullptr, false);
    if (j.is_object() && j.contains("return")) break;
    if (j.is_object() && j.contains("error")) {
      ::close(fd);
      return make_error(ErrorKind::unavailable, "QMP: qmp_capabilities refused on " + p);
    }
    // An early event: nothing has subscribed yet, and none matters before we are connected.
  }
  std::unique_ptr<QmpClient> c(new QmpClient(fd, std::move(on_event)));
  // Bytes already buffered after the capabilities answer would be lost: only events can be
  // there, and we have not issued a command yet, so dropping them is harmless.
  return c;
}

QmpClient::QmpClient(int fd, EventHandler on_event) : fd_(fd), on_event_(std::move(on_event)) {
  reader_ = std::thread([this] { read_loop(); });
}

QmpClient::~QmpClient() {
  ::shutdown(fd_, SHUT_RDWR);
  reader_.join();
  ::close(fd_);
}

bool QmpClient::connected() const {
  std::lock_guard lock(mu_);
  return !closed_;
}

void QmpClient::read_loop() {
  std::string buf;
  char tmp[8192];
  for (;;) {
    ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    buf.append(tmp, static_cast<std::size_t>(n));
    std::size_t nl;
    while ((nl = buf.find('\n')) != std::string::npos) {
      std::string line = buf.substr(0, nl);
      buf.erase(0, nl + 1);
      json j = json::parse(line, nullptr, false);
      if (!j.is_object()) continue;
      if (j.contains("event")) {
        if (on_event_) on_event_(j);
        continue;
      }
      if (j.contains("id") && j["id"].is_number_integer()) {
        auto id = j["id"].get<std::int64_t>();  // before the move below
        std::lock_guard lock(mu_);
        answers_[id] = std::move(j);
        cv_.notify_all();
      }
    }
  }
  std::lock_guard lock(mu_);
  closed_ = true;
  cv_.notify_all();
}

Result<json> QmpClient::execute(const std::string& command, const json& arguments, std::chrono::milliseconds timeout) {
  std::int64_t id;
  {
    std::lock_guard lock(mu_);
    if (closed_) return make_error(ErrorKind::unavailable, "QMP: connection closed (" + command + ")");
    id = next_id_++;
  }
  json req = {{"execute", command}, {"id", id}};
  if (!arguments.is_null()) req["arguments"] = arguments;
  {
    std::lock_guard lock(write_mu_);
    if (!write_all(fd_, req.dump() + "\n"))
      return make_error(ErrorKind::unavailable, "QMP: write failed (" + command + ")");
  }
  std::unique_lock lock(mu_);
  if (!cv_.wait_for(lock, timeout, [&] { return answers_.count(id) || closed_; }))
    return make_error(ErrorKind::unavailable, "QMP: no answer to " + command + " in time");
  auto it = answers_.find(id);
  if (it == answers_.end()) return make_error(ErrorKind::unavailable, "QMP: connection closed during " + command);
  json answer = std::move(it->second);
  answers_.erase(it);
  if (answer.contains("error")) {
    const json& e = answer["error"];
    return make_error(ErrorKind::conflict, "QMP " + command + ": " + e.value("class", "Error") + ": " +
                                               e.value("desc", "failed"));
  }
  return answer.value("return", json::object());
}

}  // namespace provisioner::vbmc
