#include "tools/vbmc/media_fetcher.hpp"

#include <fcntl.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <map>

#include "common/crypto.hpp"
#include "controller/logging/logger.hpp"
#include "tools/vbmc/http_text.hpp"

namespace provisioner::vbmc {

namespace {

constexpr int kIoTimeoutSeconds = 30;
constexpr int kMaxRedirects = 5;

// The query string may carry a token: never put it in a log line or error.
std::string without_query(const std::string& url) { return url.substr(0, url.find('?')); }

struct Head {
  int status = 0;
  std::map<std::string, std::string> headers;
  std::string header(const std::string& n) const {
    auto it = headers.find(n);
    return it == headers.end() ? std::string() : it->second;
  }
};

class Connection {
 public:
  ~Connection() {
    if (fd_ >= 0) ::close(fd_);
  }
  Status open(const HttpUrl& u) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    if (::getaddrinfo(u.host.c_str(), std::to_string(u.port).c_str(), &hints, &res) != 0 || !res)
      return make_error(ErrorKind::unavailable, "cannot resolve " + u.host);
    for (addrinfo* a = res; a; a = a->ai_next) {
      fd_ = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
      if (fd_ < 0) continue;
      timeval tv{kIoTimeoutSeconds, 0};
      ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
      if (::connect(fd_, a->ai_addr, a->ai_addrlen) == 0) break;
      ::close(fd_);
      fd_ = -1;
    }
    ::freeaddrinfo(res);
    if (fd_ < 0) return make_error(ErrorKind::unavailable, "cannot connect to " + u.host + ":" + std::to_string(u.port));
    return Ok{};
  }
  Status send_request(const std::string& method, const HttpUrl& u, const std::string& extra_headers) {
    std::string req = method + " " + u.target + " HTTP/1.1\r\nHost: " + u.host + ":" + std::to_string(u.port) +
                      "\r\nUser-Agent: provisioner-vbmc/1\r\nAccept: */*\r\nAccept-Encoding: identity\r\n" +
                      extra_headers + "Connection: close\r\n\r\n";
    std::size_t off = 0;
    while (off < req.size()) {
      ssize_t n = ::send(fd_, req.data() + off, req.size() - off, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return make_error(ErrorKind::unavailable, "send failed");
      off += static_cast<std::size_t>(n);
    }
    return Ok{};
  }
  Result<Head> read_head() {
    std::size_t end;
    while ((end = buf_.find("\r\n\r\n")) == std::string::npos) {
      if (buf_.size() > 64 * 1024) return make_error(ErrorKind::unavailable, "answer header too large");
      if (auto s = fill(); !s) return s.error();
    }
    std::string head = buf_.substr(0, end);
    buf_.erase(0, end + 4);
    Head h;
    auto le = head.find("\r\n");
    std::string status_line = head.substr(0, le);
    auto sp = status_line.find(' ');
    if (sp == std::string::npos || status_line.rfind("HTTP/", 0) != 0)
      return make_error(ErrorKind::unavailable, "not an HTTP answer");
    h.status = std::atoi(status_line.c_str() + sp + 1);
    h.headers = parse_header_lines(head, le == std::string::npos ? head.size() : le + 2);
    return h;
  }
  // Streams exactly `length` body bytes to `out` at `offset`.
  Status copy_body(int out, std::uint64_t offset, std::uint64_t length) {
    std::uint64_t done = 0;
    auto flush = [&](const char* data, std::size_t n) -> Status {
      std::size_t w = 0;
      while (w < n) {
        ssize_t k = ::pwrite(out, data + w, n - w, static_cast<off_t>(offset + done + w));
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return make_error(ErrorKind::internal, std::string("cache write failed: ") + std::strerror(errno));
        w += static_cast<std::size_t>(k);
      }
      done += n;
      return Ok{};
    };
    if (!buf_.empty()) {
      std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(buf_.size(), length));
      if (auto s = flush(buf_.data(), n); !s) return s;
      buf_.clear();
    }
    std::string tmp(1 << 20, '\0');
    while (done < length) {
      std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(tmp.size(), length - done));
      ssize_t n = ::recv(fd_, tmp.data(), want, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return make_error(ErrorKind::unavailable, "connection ended mid-body");
      if (auto s = flush(tmp.data(), static_cast<std::size_t>(n)); !s) return s;
    }
    return Ok{};
  }

 private:
  Status fill() {
    char tmp[16384];
    for (;;) {
      ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return make_error(ErrorKind::unavailable, n == 0 ? "connection closed" : "receive timed out");
      buf_.append(tmp, static_cast<std::size_t>(n));
      return Ok{};
    }
  }
  int fd_ = -1;
  std::string buf_;
};

Error fetch_error(const std::string& url, const std::string& what) {
  return make_error(ErrorKind::unavailable, "fetching " + without_query(url) + ": " + what);
}

}  // namespace

bool parse_http_url(const std::string& url, HttpUrl& out) {
  if (url.rfind("http://", 0) != 0) return false;
  std::string rest = url.substr(7);
  auto slash = rest.find('/');
  std::string authority = rest.substr(0, slash);
  out.target = slash == std::string::npos ? "/" : rest.substr(slash);
  if (authority.empty() || authority.find('@') != std::string::npos) return false;
  if (authority.front() == '[') {  // [v6]:port
    auto close = authority.find(']');
    if (close == std::string::npos) return false;
    out.host = authority.substr(1, close - 1);
    authority = authority.substr(close + 1);
    if (!authority.empty() && authority.front() != ':') return false;
    out.port = authority.empty() ? 80 : static_cast<std::uint16_t>(std::atoi(authority.c_str() + 1));
    return out.port != 0;
  }
  auto colon = authority.find(':');
  out.host = authority.substr(0, colon);
  out.port = colon == std::string::npos ? 80 : static_cast<std::uint16_t>(std::atoi(authority.c_str() + colon + 1));
  return !out.host.empty() && out.port != 0;
}

MediaFetcher::MediaFetcher(std::filesystem::path cache_dir, std::int64_t chunk_bytes, const Logger* logger)
    : cache_dir_(std::move(cache_dir)), chunk_bytes_(chunk_bytes), logger_(logger) {}

Result<FetchedMedia> MediaFetcher::fetch(const std::string& original_url) const {
  std::string url = original_url;
  HttpUrl u;
  Head head;
  // 1. HEAD, following redirects: size and validators.
  for (int hop = 0;; ++hop) {
    if (url.rfind("https://", 0) == 0) return fetch_error(url, "https is not supported by this virtual BMC");
    if (!parse_http_url(url, u)) return fetch_error(url, "not an http:// URL");
    Connection c;
    if (auto s = c.open(u); !s) return fetch_error(url, s.error().message);
    if (auto s = c.send_request("HEAD", u, ""); !s) return fetch_error(url, s.error().message);
    auto h = c.read_head();
    if (!h) return fetch_error(url, h.error().message);
    head = *h;
    if (head.status >= 300 && head.status < 400 && !head.header("location").empty() && hop < kMaxRedirects) {
      std::string loc = head.header("location");
      if (loc.front() == '/') loc = "http://" + u.host + ":" + std::to_string(u.port) + loc;
      url = loc;
      continue;
    }
    break;
  }
  if (head.status != 200) return fetch_error(url, "HEAD answered " + std::to_string(head.status));
  std::string len = head.header("content-length");
  if (len.empty()) return fetch_error(url, "HEAD gave no Content-Length");
  std::uint64_t size = std::strtoull(len.c_str(), nullptr, 10);
  std::string etag = head.header("etag"), modified = head.header("last-modified");
  bool validated = !etag.empty() || !modified.empty();
  std::string key = crypto::sha256_hex(original_url + "\n" + etag + "\n" + modified + "\n" + std::to_string(size));
  std::filesystem::path file = cache_dir_ / (key.substr(0, 32) + ".img");
  std::error_code ec;
  std::filesystem::create_directories(cache_dir_, ec);
  if (validated && std::filesystem::exists(file, ec) && std::filesystem::file_size(file, ec) == size) {
    if (logger_) logger_->info("media cache hit", {{"url", without_query(original_url)}, {"bytes", std::to_string(size)}});
    return FetchedMedia{file, size, true, 0};
  }

  // 2. Range GETs into a temporary file, renamed into place when complete.
  std::filesystem::path tmp = cache_dir_ / (".tmp-" + crypto::random_token(8));
  int fd = ::open(tmp.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644);
  if (fd < 0) return fetch_error(url, "cannot create cache file " + tmp.string());
  struct Cleanup {
    int fd;
    std::filesystem::path tmp;
    bool keep = false;
    ~Cleanup() {
      ::close(fd);
      if (!keep) {
        std::error_code e;
        std::filesystem::remove(tmp, e);
      }
    }
  } cleanup{fd, tmp};
  FetchedMedia out{file, size, false, 0};
  std::uint64_t offset = 0;
  const std::uint64_t chunk = static_cast<std::uint64_t>(chunk_bytes_);
  while (offset < size) {
    std::uint64_t last = std::min(size, offset + chunk) - 1;
    Connection c;
    if (auto s = c.open(u); !s) return fetch_error(url, s.error().message);
    std::string range = "Range: bytes=" + std::to_string(offset) + "-" + std::to_string(last) + "\r\n";
    if (!etag.empty() && etag.rfind("W/", 0) != 0) range += "If-Range: " + etag + "\r\n";
    if (auto s = c.send_request("GET", u, range); !s) return fetch_error(url, s.error().message);
    auto h = c.read_head();
    if (!h) return fetch_error(url, h.error().message);
    ++out.range_requests;
    if (h->status == 200 && offset == 0) {
      // A server without Range support: take the whole body in one go.
      if (auto s = c.copy_body(fd, 0, size); !s) return fetch_error(url, s.error().message);
      offset = size;
      break;
    }
    if (h->status != 206)
      return fetch_error(url, "Range GET answered " + std::to_string(h->status) + (h->status == 200 ? " (the file changed?)" : ""));
    std::string cr = h->header("content-range");  // bytes a-b/n
    std::uint64_t a = 0, b = 0;
    if (std::sscanf(cr.c_str(), "bytes %lu-%lu", &a, &b) != 2 || a != offset || b > last)
      return fetch_error(url, "unexpected Content-Range '" + cr + "'");
    if (auto s = c.copy_body(fd, offset, b - a + 1); !s) return fetch_error(url, s.error().message);
    offset = b + 1;
  }
  if (::fsync(fd) != 0) return fetch_error(url, "cache fsync failed");
  std::filesystem::rename(tmp, file, ec);
  if (ec) return fetch_error(url, "cache rename failed: " + ec.message());
  cleanup.keep = true;
  if (logger_)
    logger_->info("media fetched", {{"url", without_query(original_url)},
                                    {"bytes", std::to_string(size)},
                                    {"range_requests", std::to_string(out.range_requests)}});
  return out;
}

}  // namespace provisioner::vbmc
