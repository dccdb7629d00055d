// Hostile clients against the real controller: a multi-GB chunked body is refused before it
// is read (no token: 401; a token: 413 once past max_body_bytes) without the controller's
// memory following the bytes sent, and half-open connections do not lock others out.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <future>
#include <string>
#include <vector>

#include "tests/support/controller_process.hpp"

using namespace provisioner::test;

namespace {

// The resident set of a process, from /proc/<pid>/status, in bytes.
std::uint64_t resident_bytes(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stoull(line.substr(6)) * 1024;
  throw std::runtime_error("no VmRSS for pid " + std::to_string(pid));
}

// A TCP connection to 127.0.0.1:port from the source address `from` (127.0.0.0/8 only).
int connect_from(const char* from, std::uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error("socket failed");
  sockaddr_in src{};
  src.sin_family = AF_INET;
  ::inet_pton(AF_INET, from, &src.sin_addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&src), sizeof src) != 0) {
    ::close(fd);
    throw std::runtime_error(std::string("cannot bind to ") + from);
  }
  sockaddr_in dst{};
  dst.sin_family = AF_INET;
  dst.sin_port = htons(port);
  ::inet_pton(AF_INET, "127.0.0.1", &dst.sin_addr);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&dst), sizeof dst) != 0) {
    ::close(fd);
    throw std::runtime_error("connect failed");
  }
  return fd;
}

struct FloodResult {
  std::string response;             // what the server said (empty: nothing)
  std::uint64_t sent = 0;           // body bytes the server took before answering or closing
  std::uint64_t peak_resident = 0;  // the controller's largest RSS seen while sending
};

// Sends `prefix`, then `piece` over and over, until the server answers or closes,
// `max_bytes` are sent, or `max_time` has passed (the probe is bounded).
FloodResult flood(const ControllerProcess& controller, const std::string& prefix, const std::string& piece,
                  std::uint64_t max_bytes, std::chrono::seconds max_time) {
  int fd = connect_from("127.0.0.1", controller.port());
  ::send(fd, prefix.data(), prefix.size(), MSG_NOSIGNAL);
  FloodResult r;
  std::size_t offset = 0;  // into `piece`
  auto deadline = std::chrono::steady_clock::now() + max_time;
  std::uint64_t next_sample = 0;
  char buf[4096];
  while (r.sent < max_bytes && std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd, POLLIN | POLLOUT, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    if (p.revents & (POLLIN | POLLERR | POLLHUP)) {
      ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n > 0) r.response.append(buf, static_cast<std::size_t>(n));
      break;  // answered or closed: stop sending
    }
    ssize_t n = ::send(fd, piece.data() + offset, piece.size() - offset, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) continue;
    if (n <= 0) break;
    offset = (offset + static_cast<std::size_t>(n)) % piece.size();
    r.sent += static_cast<std::uint64_t>(n);
    if (r.sent >= next_sample) {
      r.peak_resident = std::max(r.peak_resident, resident_bytes(controller.pid()));
      next_sample = r.sent + (16u << 20);
    }
  }
  // The rest of the answer, if one came.
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (!r.response.empty())
    while (r.response.find("\r\n\r\n") == std::string::npos) {
      ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) break;
      r.response.append(buf, static_cast<std::size_t>(n));
    }
  ::close(fd);
  r.peak_resident = std::max(r.peak_resident, resident_bytes(controller.pid()));
  return r;
}

std::string chunked_head(const std::string& target, const char* token) {
  std::string head = "POST " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     "Transfer-Encoding: chunked\r\n";
  if (token) head += std::string("Authorization: Bearer ") + token + "\r\n";
  return head + "\r\n";
}

constexpr std::uint64_t kFloodBytes = 3ull << 30;  // multi-GB
#ifdef PROVISIONER_SANITIZED_CONTROLLER
// A sanitizer's shadow memory multiplies what a buffer costs (ThreadSanitizer: a 10 MiB read
// showed as ~50 MiB of RSS). Still far below the gigabytes an unbounded read takes.
constexpr std::uint64_t kMaxGrowth = 256ull << 20;
#else
constexpr std::uint64_t kMaxGrowth = 32ull << 20;
#endif
// What the kernel's socket buffers may hold between the answer and our noticing it.
constexpr std::uint64_t kPromptBytes = 64ull << 20;

// The controller answers `status` promptly, its memory does not follow the bytes sent, and
// it serves another client meanwhile and afterwards. The answer must arrive even though the
// client is still sending: the edge reads on for a moment after answering (a lingering
// close), so its kernel does not reset the connection under the answer. (Before the edge,
// this probe lost the answer to such a reset now and then and had to be repeated.)
void expect_refused_promptly(ControllerProcess& controller, const std::string& prefix, const std::string& piece,
                             int status) {
  auto before = resident_bytes(controller.pid());
  // Another client is served while the flood runs.
  auto other = std::async(std::launch::async, [&controller] { return controller.get("/api/v1/jobs").status; });
  auto r = flood(controller, prefix, piece, kFloodBytes, std::chrono::seconds(60));
  EXPECT_EQ(other.get(), 200);
  ASSERT_FALSE(r.response.empty()) << "no answer after " << (r.sent >> 20) << " MiB; RSS went from "
                                   << (before >> 20) << " MiB to " << (r.peak_resident >> 20) << " MiB";
  EXPECT_EQ(parse_response(r.response).status, status) << r.response;
  EXPECT_NE(r.response.find("Connection: close"), std::string::npos) << r.response;
  EXPECT_LT(r.sent, kPromptBytes) << "the server read " << (r.sent >> 20) << " MiB before answering";
  EXPECT_LT(r.peak_resident, before + kMaxGrowth)
      << "RSS went from " << (before >> 20) << " MiB to " << (r.peak_resident >> 20) << " MiB";
  // Still serving afterwards, and its memory did not stay up.
  EXPECT_EQ(controller.get("/healthz", nullptr).status, 200);
  EXPECT_LT(resident_bytes(controller.pid()), before + kMaxGrowth);
}

void expect_refused_promptly(const char* token, int status, const std::string& target = "/api/v1/jobs") {
  ControllerProcess controller;
  controller.start();
  expect_refused_promptly(controller, chunked_head(target, token), "10000\r\n" + std::string(0x10000, '{') + "\r\n",
                          status);
}

// Sends `bytes` from `from` and reads until the server closes or `patience` passes between
// two reads: everything the server said on that connection.
std::string exchange_raw(const ControllerProcess& controller, const std::string& bytes, const char* from = "127.0.0.1",
                         long patience_s = 5) {
  int fd = connect_from(from, controller.port());
  timeval tv{patience_s, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
  std::string response;
  char buf[4096];
  for (;;) {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    response.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return response;
}

// What a raw request gets: the first answer on the connection.
HttpResponse raw_exchange(const ControllerProcess& controller, const std::string& bytes) {
  return parse_response(exchange_raw(controller, bytes));
}

}  // namespace

TEST(HostileClients, ChunkedFloodWithoutTokenIs401BeforeAnyBody) {
  expect_refused_promptly(nullptr, 401);
}

TEST(HostileClients, ChunkedFloodWithWrongTokenIs401BeforeAnyBody) {
  expect_refused_promptly("not-a-token", 401);
}

TEST(HostileClients, ChunkedFloodWithTokenIs413OncePastTheLimit) {
  expect_refused_promptly(ControllerProcess::kAdminToken, 413);
}

TEST(HostileClients, ChunkedFloodOnTheWebhookWithoutSignatureIs401) {
  // The webhook carries no token but an HMAC over its body: without the headers, no body.
  expect_refused_promptly(nullptr, 401, "/api/v1/status-webhook/SN-1");
}

TEST(HostileClients, ChunkedFloodOnUploadsWithoutTokenIs401) {
  // Uploads stream their body (up to max_upload_bytes): without a token none of it is read.
  ControllerProcess controller;
  controller.start();
  auto before = resident_bytes(controller.pid());
  int fd = connect_from("127.0.0.1", controller.port());
  std::string head = "POST /api/v1/artifacts?name=x.iso HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n";
  ::send(fd, head.data(), head.size(), MSG_NOSIGNAL);
  const std::string piece = "10000\r\n" + std::string(0x10000, 'x') + "\r\n";
  std::uint64_t sent = 0;
  std::string response;
  char buf[4096];
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (sent < kFloodBytes && std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd, POLLIN | POLLOUT, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    if (p.revents & (POLLIN | POLLERR | POLLHUP)) {
      ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n > 0) response.append(buf, static_cast<std::size_t>(n));
      break;
    }
    ssize_t n = ::send(fd, piece.data(), piece.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) continue;
    if (n <= 0) break;
    sent += static_cast<std::uint64_t>(n);
  }
  ::close(fd);
  ASSERT_FALSE(response.empty()) << "no answer after " << (sent >> 20) << " MiB";
  EXPECT_EQ(response.rfind("HTTP/1.1 401", 0), 0u) << response;
  EXPECT_LT(sent, kPromptBytes);
  EXPECT_LT(resident_bytes(controller.pid()), before + kMaxGrowth);
}

TEST(HostileClients, OneHugeChunkWithoutTokenIs401WithoutBufferingIt) {
  // One 2 GiB chunk: the HTTP library reads a chunk whole before the handler may refuse it;
  // the edge re-frames it into 64 KiB pieces, so the refusal comes at the first of them.
  ControllerProcess controller;
  controller.start();
  expect_refused_promptly(controller, chunked_head("/api/v1/jobs", nullptr) + "80000000\r\n",
                          std::string(0x10000, '{'), 401);
}

TEST(HostileClients, OneHugeChunkWithTokenIs413OncePastTheLimit) {
  ControllerProcess controller;
  controller.start();
  expect_refused_promptly(controller, chunked_head("/api/v1/jobs", ControllerProcess::kAdminToken) + "80000000\r\n",
                          std::string(0x10000, '{'), 413);
}

TEST(HostileClients, AHeadThatNeverEndsIs431) {
  // One header line that goes on for gigabytes: refused once past [api] max_head_bytes.
  ControllerProcess controller;
  controller.start();
  expect_refused_promptly(controller, "GET /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Long: ",
                          std::string(0x10000, 'a'), 431);
}

TEST(HostileClients, AHeadTricklingInPastItsDeadlineIs408) {
  ControllerProcess controller("[api]\nhead_timeout_ms = 500\n");
  controller.start();
  int fd = connect_from("127.0.0.1", controller.port());
  auto started = std::chrono::steady_clock::now();
  std::string line = "GET /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n";
  ::send(fd, line.data(), line.size(), MSG_NOSIGNAL);
  std::string response;
  char buf[4096];
  // A byte every 100 ms keeps the connection busy but does not extend the deadline.
  while (std::chrono::steady_clock::now() - started < std::chrono::seconds(5)) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 100) > 0) {
      ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) break;
      response.append(buf, static_cast<std::size_t>(n));
      continue;
    }
    ::send(fd, "X", 1, MSG_NOSIGNAL);
  }
  auto took = std::chrono::steady_clock::now() - started;
  ::close(fd);
  EXPECT_EQ(parse_response(response).status, 408) << response;
  EXPECT_LT(took, std::chrono::seconds(3));
}

TEST(HostileClients, AmbiguousFramingNeverReachesTheApi) {
  // Request smuggling: a head two parsers could frame differently is refused at the edge.
  ControllerProcess controller;
  controller.start();
  std::string auth = std::string("Authorization: Bearer ") + ControllerProcess::kAdminToken + "\r\n";
  EXPECT_EQ(raw_exchange(controller, "POST /api/v1/jobs HTTP/1.1\r\nHost: a\r\n" + auth +
                                         "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
                .status,
            400);
  EXPECT_EQ(raw_exchange(controller, "POST /api/v1/jobs HTTP/1.1\r\nHost: a\r\n" + auth +
                                         "Transfer-Encoding: gzip\r\n\r\n")
                .status,
            501);
  EXPECT_EQ(raw_exchange(controller, "GET /healthz HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n folded\r\n\r\n").status, 400);
  EXPECT_EQ(raw_exchange(controller, "POST /api/v1/jobs HTTP/1.1\r\nHost: a\r\n" + auth +
                                         "Transfer-Encoding: chunked\r\n\r\nzz\r\n")
                .status,
            400)
      << "a malformed chunk size";
  // A well-framed chunked request with small chunks and a trailer still works.
  auto ok = raw_exchange(controller, "GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n"
                                     "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n");
  EXPECT_EQ(ok.status, 200) << ok.body;
}

TEST(HostileClients, PipelinedRequestsAreAnsweredInOrder) {
  ControllerProcess controller;
  controller.start();
  auto response = exchange_raw(controller, "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\nGET /api/v1/jobs HTTP/1.1\r\n"
                                           "Host: a\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(response.rfind("HTTP/1.1 200", 0), 0u) << response;
  EXPECT_NE(response.find("HTTP/1.1 401", 1), std::string::npos) << "the second answer (no token) follows:\n" << response;
}

TEST(HostileClients, HalfOpenConnectionsDoNotLockOthersOut) {
  // 2,000 connections that sent a request line and never finish their headers.
  rlimit files{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &files), 0);
  if (files.rlim_cur < 2200) {
    files.rlim_cur = std::min<rlim_t>(files.rlim_max, 4096);
    ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &files), 0);
  }
  ASSERT_GE(files.rlim_cur, 2200u) << "the fd limit is too low for this probe";
  ControllerProcess controller;
  controller.start();
  std::vector<int> idle;
  const std::string line = "GET /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n";
  for (int i = 0; i < 2000; ++i) {
    int fd = connect_from("127.0.0.1", controller.port());
    ::send(fd, line.data(), line.size(), MSG_NOSIGNAL);
    idle.push_back(fd);
  }
  // A request from another address is answered within 1 s (the bound). An
  // instrumented controller with 2,000 threads, beside other tests on 2 cores, gets 3 s: the
  // probe is for a lock-out (no answer at all), not for the sanitizer's speed.
#ifdef PROVISIONER_SANITIZED_CONTROLLER
  constexpr int kBound = 3;
#else
  constexpr int kBound = 1;
#endif
  auto started = std::chrono::steady_clock::now();
  auto response = exchange_raw(controller, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
                               "127.0.0.2", kBound);
  auto took = std::chrono::steady_clock::now() - started;
  for (int i : idle) ::close(i);
  ASSERT_FALSE(response.empty()) << "no answer within " << kBound << " s";
  EXPECT_EQ(parse_response(response).status, 200) << response;
  EXPECT_LT(took, std::chrono::seconds(kBound));
}
