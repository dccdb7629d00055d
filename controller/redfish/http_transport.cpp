#include "controller/redfish/http_transport.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace provisioner::redfish {

namespace {

using Clock = std::chrono::steady_clock;

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

std::string trim(std::string s) {
  auto b = s.find_first_not_of(" \t\r\n");
  auto e = s.find_last_not_of(" \t\r\n");
  return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
}

int remaining_ms(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left <= 0 ? 0 : static_cast<int>(std::min<long long>(left, 1 << 30));
}

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

struct SslDeleter {
  void operator()(SSL* s) const { SSL_free(s); }
  void operator()(SSL_CTX* c) const { SSL_CTX_free(c); }
};

// One connection: plain or TLS, always non-blocking, every wait bounded by `deadline`.
class Connection {
 public:
  Connection(int fd, SSL* ssl, Clock::time_point deadline) : fd_(fd), ssl_(ssl), deadline_(deadline) {}

  // Returns false with `failure` filled in.
  bool write_all(const std::string& data, TransportFailure& failure) {
    std::size_t off = 0;
    while (off < data.size()) {
      int n;
      if (ssl_) {
        n = SSL_write(ssl_, data.data() + off, static_cast<int>(data.size() - off));
        if (n <= 0) {
          int err = SSL_get_error(ssl_, n);
          if (!wait_ssl(err, failure)) return false;
          continue;
        }
      } else {
        ssize_t w = ::send(fd_, data.data() + off, data.size() - off, MSG_NOSIGNAL);
        if (w < 0) {
          if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
            if (!wait(POLLOUT, failure)) return false;
            continue;
          }
          failure = {TransportFailure::Kind::reset, off > 0, std::string("send: ") + std::strerror(errno)};
          return false;
        }
        n = static_cast<int>(w);
      }
      off += static_cast<std::size_t>(n);
    }
    return true;
  }

  // Reads some bytes; 0 = orderly EOF, -1 = failure.
  long read_some(char* buf, std::size_t cap, TransportFailure& failure) {
    for (;;) {
      if (ssl_) {
        int n = SSL_read(ssl_, buf, static_cast<int>(cap));
        if (n > 0) return n;
        int err = SSL_get_error(ssl_, n);
        if (err == SSL_ERROR_ZERO_RETURN) return 0;
        if (err == SSL_ERROR_SYSCALL && ERR_peek_error() == 0 && errno == 0) return 0;  // EOF without close_notify
        if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
          if (!wait_ssl(err, failure)) return -1;
          continue;
        }
        failure = {TransportFailure::Kind::reset, true, "TLS read failed"};
        return -1;
      }
      ssize_t n = ::recv(fd_, buf, cap, 0);
      if (n >= 0) return n;
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
        if (!wait(POLLIN, failure)) return -1;
        continue;
      }
      failure = {TransportFailure::Kind::reset, true, std::string("recv: ") + std::strerror(errno)};
      return -1;
    }
  }

  bool wait(short events, TransportFailure& failure) {
    pollfd p{fd_, events, 0};
    int ms = remaining_ms(deadline_);
    if (ms == 0 || ::poll(&p, 1, ms) == 0) {
      failure = {TransportFailure::Kind::timeout, true, "no answer before the deadline"};
      return false;
    }
    return true;
  }

  bool wait_ssl(int err, TransportFailure& failure) {
    if (err == SSL_ERROR_WANT_READ) return wait(POLLIN, failure);
    if (err == SSL_ERROR_WANT_WRITE) return wait(POLLOUT, failure);
    failure = {TransportFailure::Kind::reset, true, "TLS connection failed"};
    return false;
  }

 private:
  int fd_;
  SSL* ssl_;
  Clock::time_point deadline_;
};

// Reads one response: status line, headers, then the body by Content-Length, chunked
// encoding, or up to EOF (we always send Connection: close).
bool read_response(Connection& conn, bool head_request, HttpResponse& out, TransportFailure& failure) {
  std::string buf;
  char tmp[16384];
  std::size_t header_end = std::string::npos;
  while ((header_end = buf.find("\r\n\r\n")) == std::string::npos) {
    long n = conn.read_some(tmp, sizeof tmp, failure);
    if (n < 0) return false;
    if (n == 0) {
      failure = {TransportFailure::Kind::reset, true, "connection closed before the answer"};
      return false;
    }
    buf.append(tmp, static_cast<std::size_t>(n));
    if (buf.size() > (1u << 20)) {
      failure = {TransportFailure::Kind::protocol, true, "answer headers too large"};
      return false;
    }
  }
  std::string head = buf.substr(0, header_end);
  std::string rest = buf.substr(header_end + 4);
  auto line_end = head.find("\r\n");
  std::string status_line = head.substr(0, line_end);
  if (status_line.rfind("HTTP/1.", 0) != 0 || status_line.size() < 12) {
    failure = {TransportFailure::Kind::protocol, true, "not an HTTP answer"};
    return false;
  }
  out.status = std::atoi(status_line.c_str() + 9);
  std::size_t pos = line_end == std::string::npos ? head.size() : line_end + 2;
  while (pos < head.size()) {
    auto e = head.find("\r\n", pos);
    if (e == std::string::npos) e = head.size();
    std::string line = head.substr(pos, e - pos);
    auto colon = line.find(':');
    if (colon != std::string::npos) out.headers[lower(trim(line.substr(0, colon)))] = trim(line.substr(colon + 1));
    pos = e + 2;
  }
  if (head_request || out.status == 204 || out.status == 304 || out.status / 100 == 1) return true;

  auto read_more = [&](std::string& into) -> long {
    long n = conn.read_some(tmp, sizeof tmp, failure);
    if (n > 0) into.append(tmp, static_cast<std::size_t>(n));
    return n;
  };
  const std::size_t kMaxBody = 64u << 20;
  if (lower(out.header("transfer-encoding")).find("chunked") != std::string::npos) {
    std::string body;
    for (;;) {
      std::size_t le;
      while ((le = rest.find("\r\n")) == std::string::npos) {
        long n = read_more(rest);
        if (n <= 0) {
          if (n == 0) failure = {TransportFailure::Kind::protocol, true, "truncated chunked answer"};
          return false;
        }
      }
      std::size_t size = std::strtoul(rest.substr(0, le).c_str(), nullptr, 16);
      rest.erase(0, le + 2);
      if (size == 0) break;  // trailers ignored: connection closes anyway
      while (rest.size() < size + 2) {
        long n = read_more(rest);
        if (n <= 0) {
          if (n == 0) failure = {TransportFailure::Kind::protocol, true, "truncated chunk"};
          return false;
        }
      }
      body.append(rest, 0, size);
      rest.erase(0, size + 2);
      if (body.size() > kMaxBody) {
        failure = {TransportFailure::Kind::protocol, true, "answer too large"};
        return false;
      }
    }
    out.body = std::move(body);
    return true;
  }
  std::string cl = out.header("content-length");
  if (!cl.empty()) {
    std::size_t want = std::strtoull(cl.c_str(), nullptr, 10);
    if (want > kMaxBody) {
      failure = {TransportFailure::Kind::protocol, true, "answer too large"};
      return false;
    }
    while (rest.size() < want) {
      long n = read_more(rest);
      if (n <= 0) {
        if (n == 0) failure = {TransportFailure::Kind::reset, true, "connection closed mid-answer"};
        return false;
      }
    }
    rest.resize(want);
    out.body = std::move(rest);
    return true;
  }
  for (;;) {
    long n = read_more(rest);
    if (n < 0) return false;
    if (n == 0) break;
    if (rest.size() > kMaxBody) {
      failure = {TransportFailure::Kind::protocol, true, "answer too large"};
      return false;
    }
  }
  out.body = std::move(rest);
  return true;
}

class SocketTransport final : public HttpTransport {
 public:
  SocketTransport(Endpoint endpoint, TlsSettings tls, std::chrono::milliseconds connect_timeout)
      : endpoint_(std::move(endpoint)), tls_(std::move(tls)), connect_timeout_(connect_timeout) {
    if (endpoint_.https) init_tls();
  }

  TransportResult send(const HttpRequest& request, std::chrono::milliseconds timeout) override {
    TransportResult result;
    auto deadline = Clock::now() + timeout;
    if (endpoint_.https && !ctx_) {
      result.failure = {TransportFailure::Kind::tls, false, tls_error_};
      return result;
    }
    Fd sock;
    if (!connect(sock, std::min(deadline, Clock::now() + connect_timeout_), result.failure)) return result;

    std::unique_ptr<SSL, SslDeleter> ssl;
    if (endpoint_.https) {
      ssl.reset(SSL_new(ctx_.get()));
      SSL_set_fd(ssl.get(), sock.fd);
      if (!is_ip_literal(endpoint_.host)) SSL_set_tlsext_host_name(ssl.get(), endpoint_.host.c_str());
      if (tls_.verify) {
        X509_VERIFY_PARAM* param = SSL_get0_param(ssl.get());
        if (is_ip_literal(endpoint_.host))
          X509_VERIFY_PARAM_set1_ip_asc(param, endpoint_.host.c_str());
        else
          X509_VERIFY_PARAM_set1_host(param, endpoint_.host.c_str(), 0);
      }
      Connection hs(sock.fd, nullptr, deadline);
      for (;;) {
        ERR_clear_error();
        int r = SSL_connect(ssl.get());
        if (r == 1) break;
        int err = SSL_get_error(ssl.get(), r);
        if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
          if (!hs.wait(err == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, result.failure)) {
            result.failure.sent = false;
            return result;
          }
          continue;
        }
        long vr = SSL_get_verify_result(ssl.get());
        std::string why = vr != X509_V_OK ? std::string("certificate verification failed: ") +
                                                X509_verify_cert_error_string(vr)
                                          : "TLS handshake failed";
        result.failure = {TransportFailure::Kind::tls, false, why};
        return result;
      }
    }
    Connection conn(sock.fd, ssl.get(), deadline);

    std::string wire = request.method + " " + request.target + " HTTP/1.1\r\nHost: " + endpoint_.host_header() + "\r\n";
    bool has_length = false;
    for (const auto& [k, v] : request.headers) {
      wire += k + ": " + v + "\r\n";
      if (lower(k) == "content-length") has_length = true;
    }
    wire += "Connection: close\r\n";
    if (!has_length && (!request.body.empty() || request.method == "POST" || request.method == "PATCH" ||
                        request.method == "PUT"))
      wire += "Content-Length: " + std::to_string(request.body.size()) + "\r\n";
    wire += "\r\n";
    wire += request.body;
    if (!conn.write_all(wire, result.failure)) return result;
    if (!read_response(conn, request.method == "HEAD", result.response, result.failure)) {
      result.failure.sent = true;
      return result;
    }
    result.ok = true;
    return result;
  }

 private:
  static bool is_ip_literal(const std::string& host) {
    in6_addr a6;
    in_addr a4;
    return ::inet_pton(AF_INET, host.c_str(), &a4) == 1 || ::inet_pton(AF_INET6, host.c_str(), &a6) == 1;
  }

  void init_tls() {
    ctx_.reset(SSL_CTX_new(TLS_client_method()));
    if (!ctx_) {
      tls_error_ = "cannot create TLS context";
      return;
    }
    // BMCs in the field still speak TLS 1.0/1.1 with old ciphers; allow them.
    SSL_CTX_set_min_proto_version(ctx_.get(), TLS1_VERSION);
    SSL_CTX_set_cipher_list(ctx_.get(), "DEFAULT:@SECLEVEL=0");
    if (tls_.verify) {
      SSL_CTX_set_verify(ctx_.get(), SSL_VERIFY_PEER, nullptr);
      int ok = tls_.ca_file.empty() ? SSL_CTX_set_default_verify_paths(ctx_.get())
                                    : SSL_CTX_load_verify_locations(ctx_.get(), tls_.ca_file.c_str(), nullptr);
      if (ok != 1) {
        tls_error_ = "cannot load CA file";
        ctx_.reset();
      }
    } else {
      SSL_CTX_set_verify(ctx_.get(), SSL_VERIFY_NONE, nullptr);
    }
  }

  bool connect(Fd& sock, Clock::time_point deadline, TransportFailure& failure) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    std::string port = std::to_string(endpoint_.port);
    int rc = ::getaddrinfo(endpoint_.host.c_str(), port.c_str(), &hints, &res);
    if (rc != 0 || !res) {
      failure = {TransportFailure::Kind::connect, false, std::string("cannot resolve host: ") + gai_strerror(rc)};
      return false;
    }
    std::string last = "no address";
    for (addrinfo* ai = res; ai; ai = ai->ai_next) {
      int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
      if (fd < 0) continue;
      int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      if (::connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
        sock.fd = fd;
        break;
      }
      if (errno != EINPROGRESS) {
        last = std::strerror(errno);
        ::close(fd);
        continue;
      }
      pollfd p{fd, POLLOUT, 0};
      int ms = remaining_ms(deadline);
      if (ms == 0 || ::poll(&p, 1, ms) <= 0) {
        last = "connect timed out";
        ::close(fd);
        continue;
      }
      int err = 0;
      socklen_t len = sizeof err;
      ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
      if (err != 0) {
        last = std::strerror(err);
        ::close(fd);
        continue;
      }
      sock.fd = fd;
      break;
    }
    ::freeaddrinfo(res);
    if (sock.fd < 0) {
      failure = {last == "connect timed out" ? TransportFailure::Kind::timeout : TransportFailure::Kind::connect, false,
                 "connect: " + last};
      return false;
    }
    return true;
  }

  Endpoint endpoint_;
  TlsSettings tls_;
  std::chrono::milliseconds connect_timeout_;
  std::unique_ptr<SSL_CTX, SslDeleter> ctx_;
  std::string tls_error_;
};

}  // namespace

std::string Endpoint::host_header() const {
  std::string h;
  // Built piecewise: `"x" + std::to_string(..)` trips a GCC 12 -Wrestrict false positive.
  if (host.find(':') != std::string::npos) {  // IPv6 literal
    h.append("[").append(host).append("]");
  } else {
    h = host;
  }
  if ((https && port != 443) || (!https && port != 80)) h.append(":").append(std::to_string(port));
  return h;
}

bool parse_endpoint(const std::string& address, Endpoint& out, std::string& error) {
  std::string a = trim(address);
  Endpoint e;
  if (a.rfind("https://", 0) == 0) {
    a = a.substr(8);
  } else if (a.rfind("http://", 0) == 0) {
    e.https = false;
    e.port = 80;
    a = a.substr(7);
  } else if (a.find("://") != std::string::npos) {
    error = "unsupported scheme in BMC address";
    return false;
  }
  auto slash = a.find('/');
  if (slash != std::string::npos) a = a.substr(0, slash);
  if (a.find('@') != std::string::npos) {
    error = "BMC address must not carry credentials";
    return false;
  }
  std::string host = a, port;
  if (!a.empty() && a[0] == '[') {
    auto close = a.find(']');
    if (close == std::string::npos) {
      error = "bad IPv6 literal in BMC address";
      return false;
    }
    host = a.substr(1, close - 1);
    if (close + 1 < a.size() && a[close + 1] == ':') port = a.substr(close + 2);
  } else if (std::count(a.begin(), a.end(), ':') == 1) {
    host = a.substr(0, a.find(':'));
    port = a.substr(a.find(':') + 1);
  }
  if (host.empty()) {
    error = "BMC address has no host";
    return false;
  }
  if (!port.empty()) {
    char* end = nullptr;
    long p = std::strtol(port.c_str(), &end, 10);
    if (*end != '\0' || p <= 0 || p > 65535) {
      error = "bad port in BMC address";
      return false;
    }
    e.port = static_cast<std::uint16_t>(p);
  }
  e.host = host;
  out = e;
  return true;
}

std::unique_ptr<HttpTransport> make_socket_transport(Endpoint endpoint, TlsSettings tls,
                                                     std::chrono::milliseconds connect_timeout) {
  return std::make_unique<SocketTransport>(std::move(endpoint), std::move(tls), connect_timeout);
}

}  // namespace provisioner::redfish
