#include "tools/vbmc/http_server.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>

#include "tools/vbmc/http_text.hpp"

namespace provisioner::vbmc {

namespace {

constexpr std::size_t kMaxHeader = 32 * 1024;
constexpr std::size_t kMaxBody = 1024 * 1024;

const char* reason(int status) {
  switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 412: return "Precondition Failed";
    case 413: return "Payload Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Status";
  }
}

bool send_all(int fd, const std::string& data) {
  std::size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    off += static_cast<std::size_t>(n);
  }
  return true;
}

}  // namespace

HttpServer::HttpServer(Handler handler) : handler_(std::move(handler)) {}

HttpServer::~HttpServer() { stop(); }

Result<std::uint16_t> HttpServer::start(const std::string& host, std::uint16_t port) {
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0) return make_error(ErrorKind::internal, "socket() failed");
  int one = 1;
  ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  if (::inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1)
    return make_error(ErrorKind::invalid_input, "bad listen address " + host);
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(listen_fd_, 128) != 0) {
    ::close(listen_fd_);
    listen_fd_ = -1;
    return make_error(ErrorKind::unavailable, "cannot listen on " + host + ":" + std::to_string(port));
  }
  socklen_t len = sizeof addr;
  ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  acceptor_ = std::thread([this] { accept_loop(); });
  return static_cast<std::uint16_t>(ntohs(addr.sin_port));
}

void HttpServer::stop() {
  if (stopping_.exchange(true)) return;
  if (listen_fd_ >= 0) ::shutdown(listen_fd_, SHUT_RDWR);
  if (acceptor_.joinable()) acceptor_.join();
  {
    std::lock_guard lock(mu_);
    for (int fd : open_fds_) ::shutdown(fd, SHUT_RDWR);
  }
  // Connection threads are detached; wait for them so the handler's owner may go away.
  while (active_.load() > 0) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  if (listen_fd_ >= 0) ::close(listen_fd_);
  listen_fd_ = -1;
}

void HttpServer::accept_loop() {
  while (!stopping_) {
    pollfd p{listen_fd_, POLLIN, 0};
    if (::poll(&p, 1, 200) <= 0) continue;
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    {
      std::lock_guard lock(mu_);
      if (stopping_) {
        ::close(fd);
        break;
      }
      open_fds_.push_back(fd);
      ++active_;
    }
    std::thread([this, fd] {
      serve(fd);
      {
        std::lock_guard lock(mu_);
        open_fds_.erase(std::remove(open_fds_.begin(), open_fds_.end(), fd), open_fds_.end());
        ::close(fd);
      }
      --active_;  // the last touch of `this`: stop() may return (and free us) right after
    }).detach();
  }
}

void HttpServer::serve(int fd) {
  timeval tv{30, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string buf;
  char tmp[8192];
  std::size_t he;
  while ((he = buf.find("\r\n\r\n")) == std::string::npos) {
    if (buf.size() > kMaxHeader) return;
    ssize_t n = ::recv(fd, tmp, sizeof tmp, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    buf.append(tmp, static_cast<std::size_t>(n));
  }
  HttpRequest req;
  std::string head = buf.substr(0, he);
  req.body = buf.substr(he + 4);
  auto le = head.find("\r\n");
  std::string line = head.substr(0, le);
  auto sp1 = line.find(' '), sp2 = line.rfind(' ');
  if (sp1 == std::string::npos || sp2 == sp1) return;
  req.method = line.substr(0, sp1);
  req.path = line.substr(sp1 + 1, sp2 - sp1 - 1);
  req.path = req.path.substr(0, req.path.find('?'));
  req.headers = parse_header_lines(head, le == std::string::npos ? head.size() : le + 2);
  HttpAnswer answer;
  std::size_t want = 0;
  if (!req.header("content-length").empty()) want = std::strtoull(req.header("content-length").c_str(), nullptr, 10);
  if (want > kMaxBody) {
    answer = {413, {}, ""};
  } else {
    while (req.body.size() < want) {
      ssize_t n = ::recv(fd, tmp, sizeof tmp, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return;
      req.body.append(tmp, static_cast<std::size_t>(n));
    }
    req.body.resize(want);
    answer = handler_(req);
  }
  std::string out = "HTTP/1.1 " + std::to_string(answer.status) + " " + reason(answer.status) + "\r\n";
  bool has_type = false;
  for (const auto& [k, v] : answer.headers) {
    out += k + ": " + v + "\r\n";
    if (lower(k) == "content-type") has_type = true;
  }
  if (!has_type && !answer.body.empty()) out += "Content-Type: application/json; charset=utf-8\r\n";
  out += "OData-Version: 4.0\r\nConnection: close\r\nContent-Length: " + std::to_string(answer.body.size()) + "\r\n\r\n";
  if (req.method != "HEAD") out += answer.body;
  send_all(fd, out);
  ::shutdown(fd, SHUT_WR);
  // Let the client read everything before close (no RST on unread request bytes).
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, 200) > 0) (void)::recv(fd, tmp, sizeof tmp, 0);
}

}  // namespace provisioner::vbmc
