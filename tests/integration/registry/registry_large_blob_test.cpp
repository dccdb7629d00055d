// A blob over 10 GiB pushed and pulled through the controller's registry, streamed both ways
// (never held in memory): a sparse image, zeros with random bytes near its end.
#include <gtest/gtest.h>

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <iostream>

#include "common/crypto.hpp"
#include "controller/registry/oci_digest.hpp"
#include "tests/support/controller_process.hpp"

using namespace provisioner;
using namespace provisioner::test;

namespace {

constexpr std::uint64_t kSize = (10ull << 30) + (3ull << 20);  // 10 GiB + 3 MiB
constexpr std::uint64_t kTail = 1ull << 20;                      // random bytes at the end

int connect_to(std::uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) throw std::runtime_error("connect");
  return fd;
}

bool send_all(int fd, const char* p, std::size_t n) {
  while (n > 0) {
    ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w <= 0) return false;
    p += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

// Reads a response head; returns it and leaves what followed it in `rest`.
std::string read_head(int fd, std::string& rest) {
  std::string buf;
  char tmp[65536];
  while (buf.find("\r\n\r\n") == std::string::npos) {
    ssize_t r = ::recv(fd, tmp, sizeof tmp, 0);
    if (r <= 0) throw std::runtime_error("connection closed before the head: " + buf);
    buf.append(tmp, static_cast<std::size_t>(r));
  }
  auto end = buf.find("\r\n\r\n") + 4;
  rest = buf.substr(end);
  return buf.substr(0, end);
}

}  // namespace

TEST(RegistryLargeBlob, PushesAndPullsOverTenGiBStreamed) {
  ControllerProcess controller;
  controller.start();
  auto auth = std::string("Authorization: Bearer ") + ControllerProcess::kCiToken + "\r\n";
  auto start = http_request(controller.port(), "POST", "/v2/images/disk/blobs/uploads/",
                            {{"Authorization", std::string("Bearer ") + ControllerProcess::kCiToken}});
  ASSERT_EQ(start.status, 202) << start.body;
  auto location = start.header("location");

  // Push: one PATCH streamed from a generator, hashed on the way.
  std::string tail = crypto::random_bytes(kTail);
  registry::Hasher hash("sha256");
  {
    int fd = connect_to(controller.port());
    std::string head = "PATCH " + location + " HTTP/1.1\r\nHost: x\r\n" + auth +
                       "Content-Type: application/octet-stream\r\nContent-Length: " + std::to_string(kSize) + "\r\n\r\n";
    ASSERT_TRUE(send_all(fd, head.data(), head.size()));
    std::string zeros(4 << 20, '\0');
    std::uint64_t sent = 0;
    while (sent < kSize - kTail) {
      auto n = std::min<std::uint64_t>(zeros.size(), kSize - kTail - sent);
      hash.update(zeros.data(), n);
      ASSERT_TRUE(send_all(fd, zeros.data(), n)) << "at " << sent;
      sent += n;
    }
    hash.update(tail);
    ASSERT_TRUE(send_all(fd, tail.data(), tail.size()));
    std::string rest;
    auto answer = read_head(fd, rest);
    ::close(fd);
    ASSERT_TRUE(answer.starts_with("HTTP/1.1 202")) << answer;
    EXPECT_NE(answer.find("Range: 0-" + std::to_string(kSize - 1)), std::string::npos) << answer;
  }
  auto digest = hash.finish().str();
  auto done = http_request(controller.port(), "PUT", location + "?digest=" + digest,
                           {{"Authorization", std::string("Bearer ") + ControllerProcess::kCiToken}});
  ASSERT_EQ(done.status, 201) << done.body;

  // Stored sparse: the zeros take no room.
  auto blob = controller.data_dir() / "artifacts" / "sha256" / digest.substr(7);
  struct stat st{};
  ASSERT_EQ(::stat(blob.c_str(), &st), 0);
  EXPECT_EQ(static_cast<std::uint64_t>(st.st_size), kSize);
  EXPECT_LT(static_cast<std::uint64_t>(st.st_blocks) * 512, 64ull << 20);

  Headers op{{"Authorization", std::string("Bearer ") + ControllerProcess::kOperatorToken}};
  auto head = http_request(controller.port(), "HEAD", "/v2/images/disk/blobs/" + digest, op);
  EXPECT_EQ(head.header("content-length"), std::to_string(kSize));
  // A Range near the end: the last zeros and the start of the random tail.
  auto first = kSize - kTail - 16;
  Headers ranged = op;
  ranged.push_back({"Range", "bytes=" + std::to_string(first) + "-" + std::to_string(first + 16 + 4095)});
  auto near_end = http_request(controller.port(), "GET", "/v2/images/disk/blobs/" + digest, ranged);
  ASSERT_EQ(near_end.status, 206);
  ASSERT_EQ(near_end.body.size(), 16u + 4096u);
  EXPECT_TRUE(near_end.body == std::string(16, '\0') + tail.substr(0, 4096));

  // Pull the whole blob, hashing it as it arrives (never held whole).
  int fd = connect_to(controller.port());
  std::string get = "GET /v2/images/disk/blobs/" + digest + " HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                    ControllerProcess::kOperatorToken + "\r\nConnection: close\r\n\r\n";
  ASSERT_TRUE(send_all(fd, get.data(), get.size()));
  std::string rest;
  auto answer = read_head(fd, rest);
  ASSERT_TRUE(answer.starts_with("HTTP/1.1 200")) << answer;
  registry::Hasher pulled("sha256");
  pulled.update(rest);
  std::uint64_t got = rest.size();
  std::string buf(4 << 20, '\0');
  for (;;) {
    ssize_t r = ::recv(fd, buf.data(), buf.size(), 0);
    if (r <= 0) break;
    pulled.update(buf.data(), static_cast<std::size_t>(r));
    got += static_cast<std::uint64_t>(r);
  }
  ::close(fd);
  EXPECT_EQ(got, kSize);
  EXPECT_EQ(pulled.finish().str(), digest);

  // Streamed, never held: the controller's peak resident memory stayed small.
  std::ifstream status("/proc/" + std::to_string(controller.pid()) + "/status");
  std::string line;
  long peak_kib = -1;
  while (std::getline(status, line))
    if (line.starts_with("VmHWM:")) peak_kib = std::stol(line.substr(6));
  ASSERT_GT(peak_kib, 0);
  EXPECT_LT(peak_kib, 256 * 1024) << "peak RSS " << peak_kib << " KiB";
  std::cout << "controller peak RSS after 2 x " << kSize << " bytes: " << peak_kib / 1024 << " MiB\n";
}
