#include "tests/support/http_client.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <mutex>
#include <random>
#include <stdexcept>

namespace provisioner::test {

namespace {

int connect_to(const std::string& host, std::uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error("socket failed");
  timeval tv{30, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  ::inet_pton(AF_INET, host.c_str(), &addr.sin_addr);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    throw std::runtime_error("connect to " + host + ":" + std::to_string(port) + " failed");
  }
  return fd;
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

}  // namespace

std::string HttpResponse::header(const std::string& name) const {
  auto it = headers.find(lower(name));
  return it == headers.end() ? std::string() : it->second;
}

nlohmann::json HttpResponse::json() const { return nlohmann::json::parse(body); }

std::string raw_exchange(std::uint16_t port, const std::string& raw, const std::string& host) {
  int fd = connect_to(host, port);
  std::size_t sent = 0;
  while (sent < raw.size()) {
    ssize_t n = ::send(fd, raw.data() + sent, raw.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;  // the server may close early (413): read what it said
    sent += static_cast<std::size_t>(n);
  }
  ::shutdown(fd, SHUT_WR);
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return out;
}

HttpResponse parse_response(const std::string& raw) {
  HttpResponse r;
  auto head_end = raw.find("\r\n\r\n");
  if (head_end == std::string::npos) throw std::runtime_error("no complete response: " + raw.substr(0, 200));
  std::string head = raw.substr(0, head_end);
  auto line_end = head.find("\r\n");
  std::string status_line = head.substr(0, line_end);
  auto sp = status_line.find(' ');
  r.status = std::stoi(status_line.substr(sp + 1, 3));
  std::size_t pos = line_end == std::string::npos ? head.size() : line_end + 2;
  while (pos < head.size()) {
    auto end = head.find("\r\n", pos);
    if (end == std::string::npos) end = head.size();
    std::string line = head.substr(pos, end - pos);
    auto colon = line.find(':');
    if (colon != std::string::npos) {
      std::string value = line.substr(colon + 1);
      value.erase(0, value.find_first_not_of(' '));
      r.headers[lower(line.substr(0, colon))] = value;
    }
    pos = end + 2;
  }
  r.body = raw.substr(head_end + 4);
  if (auto cl = r.headers.find("content-length"); cl != r.headers.end())
    r.body.resize(std::min<std::size_t>(r.body.size(), std::stoull(cl->second)));
  return r;
}

HttpResponse http_request(std::uint16_t port, const std::string& method, const std::string& target,
                          const Headers& headers, const std::string& body, const std::string& host) {
  std::string req = method + " " + target + " HTTP/1.1\r\nHost: " + host + ":" + std::to_string(port) +
                    "\r\nConnection: close\r\n";
  bool has_length = false;
  for (const auto& [k, v] : headers) {
    req += k + ": " + v + "\r\n";
    has_length |= lower(k) == "content-length" || lower(k) == "transfer-encoding";
  }
  if (!has_length && (!body.empty() || method == "POST" || method == "PUT" || method == "PATCH"))
    req += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  req += "\r\n" + body;
  return parse_response(raw_exchange(port, req, host));
}

bool accepts_connections(std::uint16_t port, const std::string& host) {
  try {
    ::close(connect_to(host, port));
    return true;
  } catch (const std::exception&) {
    return false;
  }
}

// A port the test's server binds later, in another process. Not one the kernel hands out:
// an ephemeral port stays free only until the next outgoing connection takes it, and tests
// that open thousands of connections (floods, a thousand BMCs) made a controller's later bind
// fail now and then. So: a random port below the kernel's ephemeral range, checked free.
namespace {
// Test processes run side by side (ctest -j2) and each picks ports that a controller it starts
// binds only later: two processes could pick the same one in that window. A port is taken only
// with an flock on /tmp/provisioner-test-ports/<port>, held until this process exits.
bool reserve_for_this_process(std::uint16_t port) {
  const char* dir = "/tmp/provisioner-test-ports";
  ::mkdir(dir, 01777);
  ::chmod(dir, 01777);
  int fd = ::open((std::string(dir) + "/" + std::to_string(port)).c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0666);
  if (fd < 0) return true;  // no place for locks: fall back to the bind check alone
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    ::close(fd);
    return false;  // another live test process holds it
  }
  return true;  // fd stays open (and locked) for the life of the process
}
}  // namespace

std::uint16_t free_port() {
  int ephemeral_low = 32768;
  if (std::ifstream range("/proc/sys/net/ipv4/ip_local_port_range"); range) range >> ephemeral_low;
  static std::mutex mu;
  static std::mt19937 rng(static_cast<std::uint32_t>(::getpid()) * 2654435761u ^
                          static_cast<std::uint32_t>(std::chrono::steady_clock::now().time_since_epoch().count()));
  std::lock_guard lock(mu);
  std::uniform_int_distribution<int> pick(10000, std::max(10001, ephemeral_low - 1));
  for (int attempt = 0; attempt < 200; ++attempt) {
    auto port = static_cast<std::uint16_t>(pick(rng));
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(port);
    bool free = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    ::close(fd);
    if (free && reserve_for_this_process(port)) return port;
  }
  throw std::runtime_error("no free port below the ephemeral range");
}

}  // namespace provisioner::test
