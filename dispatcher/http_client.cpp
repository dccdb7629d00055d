#include "dispatcher/http_client.hpp"

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <ctime>
#include <memory>
#include <optional>

namespace provisioner::dispatcher {

std::string Url::host_header() const {
  std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  bool default_port = (scheme == "http" && port == 80) || (scheme == "https" && port == 443);
  return default_port ? h : h + ":" + std::to_string(port);
}

Result<Url> parse_url(std::string_view text) {
  Url url;
  auto sep = text.find("://");
  if (sep == std::string_view::npos) return make_error(ErrorKind::invalid_input, "URL without scheme");
  url.scheme = std::string(text.substr(0, sep));
  std::transform(url.scheme.begin(), url.scheme.end(), url.scheme.begin(), ::tolower);
  if (url.scheme != "http" && url.scheme != "https")
    return make_error(ErrorKind::invalid_input, "unsupported URL scheme " + url.scheme);
  auto rest = text.substr(sep + 3);
  auto slash = rest.find_first_of("/?");
  auto authority = rest.substr(0, slash);
  url.target = slash == std::string_view::npos ? "/" : std::string(rest.substr(slash));
  if (url.target.front() == '?') url.target = "/" + url.target;
  if (authority.find('@') != std::string_view::npos)
    return make_error(ErrorKind::invalid_input, "credentials in URLs are not supported");
  std::string_view port_text;
  if (!authority.empty() && authority.front() == '[') {
    auto close = authority.find(']');
    if (close == std::string_view::npos) return make_error(ErrorKind::invalid_input, "bad IPv6 literal");
    url.host = std::string(authority.substr(1, close - 1));
    auto after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return make_error(ErrorKind::invalid_input, "bad authority");
      port_text = after.substr(1);
    }
  } else {
    auto colon = authority.rfind(':');
    url.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) port_text = authority.substr(colon + 1);
  }
  if (url.host.empty()) return make_error(ErrorKind::invalid_input, "URL without host");
  url.port = url.scheme == "https" ? 443 : 80;
  if (!port_text.empty()) {
    unsigned v = 0;
    auto [p, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), v);
    if (ec != std::errc{} || p != port_text.data() + port_text.size() || v == 0 || v > 65535)
      return make_error(ErrorKind::invalid_input, "bad port in URL");
    url.port = static_cast<std::uint16_t>(v);
  }
  return url;
}

std::string HttpResponse::header(const std::string& lower_name) const {
  auto it = headers.find(lower_name);
  return it == headers.end() ? std::string() : it->second;
}

namespace {

Error unavailable(const std::string& what) { return make_error(ErrorKind::unavailable, what); }

struct FdCloser {
  int fd = -1;
  ~FdCloser() {
    if (fd >= 0) ::close(fd);
  }
};

Result<int> connect_tcp(const Url& url, int timeout_ms) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_family = AF_UNSPEC;
  addrinfo* res = nullptr;
  auto port = std::to_string(url.port);
  int rc = ::getaddrinfo(url.host.c_str(), port.c_str(), &hints, &res);
  if (rc != 0) return unavailable("cannot resolve " + url.host + ": " + ::gai_strerror(rc));
  std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> guard(res, ::freeaddrinfo);
  std::string last = "no address";
  for (auto* ai = res; ai; ai = ai->ai_next) {
    int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
    if (fd < 0) continue;
    if (::connect(fd, ai->ai_addr, ai->ai_addrlen) != 0 && errno != EINPROGRESS) {
      last = std::strerror(errno);
      ::close(fd);
      continue;
    }
    pollfd p{fd, POLLOUT, 0};
    int n = ::poll(&p, 1, timeout_ms);
    int err = 0;
    socklen_t len = sizeof err;
    if (n <= 0 || ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
      last = n == 0 ? "connect timed out" : std::strerror(err ? err : errno);
      ::close(fd);
      continue;
    }
    // Blocking from here on, bounded by socket timeouts: simpler with OpenSSL than poll loops.
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    return fd;
  }
  return unavailable("cannot connect to " + url.host_header() + ": " + last);
}

// One connection, plain or TLS, behind two calls.
class Stream {
 public:
  explicit Stream(int fd) : fd_(fd) {}
  ~Stream() {
    if (ssl_) {
      SSL_shutdown(ssl_);
      SSL_free(ssl_);
    }
    if (ctx_) SSL_CTX_free(ctx_);
  }
  Status start_tls(const std::string& host) {
    ctx_ = SSL_CTX_new(TLS_client_method());
    if (!ctx_) return unavailable("TLS context");
    SSL_CTX_set_min_proto_version(ctx_, TLS1_2_VERSION);
    SSL_CTX_set_default_verify_paths(ctx_);
    SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER, nullptr);
    ssl_ = SSL_new(ctx_);
    SSL_set_fd(ssl_, fd_);
    SSL_set_tlsext_host_name(ssl_, host.c_str());
    X509_VERIFY_PARAM* param = SSL_get0_param(ssl_);
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    // An IP literal is checked against the certificate's IP SANs, a name against its DNS names.
    bool is_ip = X509_VERIFY_PARAM_set1_ip_asc(param, host.c_str()) == 1;
    if (!is_ip && X509_VERIFY_PARAM_set1_host(param, host.c_str(), 0) != 1) return unavailable("TLS host name");
    if (SSL_connect(ssl_) != 1) {
      char buf[256];
      ERR_error_string_n(ERR_get_error(), buf, sizeof buf);
      return unavailable(std::string("TLS handshake with ") + host + " failed: " + buf);
    }
    return Ok{};
  }
  Status write_all(std::string_view data) {
    while (!data.empty()) {
      ssize_t n = ssl_ ? SSL_write(ssl_, data.data(), static_cast<int>(data.size()))
                       : ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n < 0 && !ssl_ && errno == EINTR) continue;
      if (n <= 0) return unavailable("write failed");
      data.remove_prefix(static_cast<std::size_t>(n));
    }
    return Ok{};
  }
  // >0 bytes read, 0 at end of stream, <0 on error/timeout.
  ssize_t read_some(char* buf, std::size_t len) {
    for (;;) {
      ssize_t n = ssl_ ? SSL_read(ssl_, buf, static_cast<int>(len)) : ::recv(fd_, buf, len, 0);
      if (n < 0 && !ssl_ && errno == EINTR) continue;
      if (ssl_ && n <= 0) {
        int e = SSL_get_error(ssl_, static_cast<int>(n));
        return e == SSL_ERROR_ZERO_RETURN ? 0 : -1;
      }
      return n;
    }
  }

 private:
  int fd_;
  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
};

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

// Decodes a chunked body; nullopt when it is malformed or incomplete.
std::optional<std::string> dechunk(std::string_view in) {
  std::string out;
  for (;;) {
    auto eol = in.find("\r\n");
    if (eol == std::string_view::npos) return std::nullopt;
    auto size_text = in.substr(0, eol);
    size_text = size_text.substr(0, size_text.find(';'));
    std::size_t size = 0;
    auto [p, ec] = std::from_chars(size_text.data(), size_text.data() + size_text.size(), size, 16);
    if (ec != std::errc{} || size_text.empty()) return std::nullopt;
    in.remove_prefix(eol + 2);
    if (size == 0) return out;
    if (in.size() < size + 2) return std::nullopt;
    out.append(in.substr(0, size));
    in.remove_prefix(size + 2);
  }
}

}  // namespace

Result<HttpResponse> http_request(const HttpRequest& request) {
  auto url = parse_url(request.url);
  if (!url) return url.error();
  auto fd = connect_tcp(*url, request.timeout_ms);
  if (!fd) return fd.error();
  FdCloser closer{*fd};
  Stream stream(*fd);
  if (url->scheme == "https") {
    auto tls = stream.start_tls(url->host);
    if (!tls) return tls.error();
  }
  std::string head = request.method + " " + url->target + " HTTP/1.1\r\nHost: " + url->host_header() +
                     "\r\nConnection: close\r\nUser-Agent: provisioner-dispatcher\r\n";
  bool has_length = false;
  for (const auto& [k, v] : request.headers) {
    if (lower(k) == "content-length") has_length = true;
    head += k + ": " + v + "\r\n";
  }
  if (!has_length && (!request.body.empty() || request.method == "POST" || request.method == "PUT"))
    head += "Content-Length: " + std::to_string(request.body.size()) + "\r\n";
  head += "\r\n";
  if (auto w = stream.write_all(head); !w) return w.error();
  if (auto w = stream.write_all(request.body); !w) return w.error();

  // Read the whole answer: the server closes the connection (we asked it to).
  std::string raw;
  char buf[65536];
  std::size_t header_end = std::string::npos;
  std::optional<std::size_t> content_length;
  bool chunked = false;
  HttpResponse response;
  for (;;) {
    ssize_t n = stream.read_some(buf, sizeof buf);
    if (n < 0) return unavailable("read from " + url->host_header() + " failed or timed out");
    if (n == 0) break;
    raw.append(buf, static_cast<std::size_t>(n));
    if (raw.size() > request.max_response_bytes + 65536)
      return make_error(ErrorKind::too_large, "response larger than allowed");
    if (header_end == std::string::npos) {
      header_end = raw.find("\r\n\r\n");
      if (header_end == std::string::npos) continue;
      std::string_view h(raw.data(), header_end);
      auto first = h.find("\r\n");
      auto status_line = h.substr(0, first);
      if (status_line.size() < 12 || status_line.substr(0, 5) != "HTTP/")
        return make_error(ErrorKind::internal, "malformed HTTP status line");
      auto sp = status_line.find(' ');
      auto code = status_line.substr(sp + 1, 3);
      std::from_chars(code.data(), code.data() + code.size(), response.status);
      std::size_t pos = first == std::string_view::npos ? h.size() : first + 2;
      while (pos < h.size()) {
        auto eol = h.find("\r\n", pos);
        auto line = h.substr(pos, eol == std::string_view::npos ? std::string_view::npos : eol - pos);
        auto colon = line.find(':');
        if (colon != std::string_view::npos)
          response.headers[lower(std::string(line.substr(0, colon)))] = std::string(trim(line.substr(colon + 1)));
        if (eol == std::string_view::npos) break;
        pos = eol + 2;
      }
      chunked = lower(response.header("transfer-encoding")).find("chunked") != std::string::npos;
      if (!chunked && !response.header("content-length").empty()) {
        std::size_t len = 0;
        auto cl = response.header("content-length");
        auto [p, ec] = std::from_chars(cl.data(), cl.data() + cl.size(), len);
        if (ec != std::errc{}) return make_error(ErrorKind::internal, "bad Content-Length");
        if (len > request.max_response_bytes) return make_error(ErrorKind::too_large, "response larger than allowed");
        content_length = len;
      }
      if (request.method == "HEAD" || response.status == 204 || response.status == 304) content_length = 0;
    }
    if (content_length && raw.size() - header_end - 4 >= *content_length) break;
  }
  if (header_end == std::string::npos) return make_error(ErrorKind::unavailable, "connection closed before the response head");
  std::string_view body(raw.data() + header_end + 4, raw.size() - header_end - 4);
  if (chunked) {
    auto decoded = dechunk(body);
    if (!decoded) return make_error(ErrorKind::unavailable, "truncated chunked body");
    response.body = std::move(*decoded);
  } else if (content_length) {
    if (body.size() < *content_length) return make_error(ErrorKind::unavailable, "truncated body");
    response.body = std::string(body.substr(0, *content_length));
  } else {
    response.body = std::string(body);
  }
  return response;
}

std::int64_t parse_http_date(std::string_view text) {
  std::string s(text);
  std::tm tm{};
  const char* end = ::strptime(s.c_str(), "%a, %d %b %Y %H:%M:%S GMT", &tm);
  if (!end || *end != '\0') return -1;
  return static_cast<std::int64_t>(::timegm(&tm));
}

}  // namespace provisioner::dispatcher
