#include "tools/vbmc/media_fetcher.hpp"

#include <curl/curl.h>

#include "common/curl_handles.hpp"
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>

#include "common/crypto.hpp"
#include "controller/logging/logger.hpp"
#include "tools/vbmc/http_text.hpp"

namespace provisioner::vbmc {

namespace {

constexpr long kConnectTimeoutSeconds = 30;
constexpr long kStallSeconds = 30;  // less than a byte a second for this long: the server is gone
constexpr long kMaxRedirects = 5;

// The query string may carry a token: never put it in a log line or error.
std::string without_query(const std::string& url) { return url.substr(0, url.find('?')); }

Error fetch_error(const std::string& url, const std::string& what) {
  return make_error(ErrorKind::unavailable, "fetching " + without_query(url) + ": " + what);
}

// One answer's head: the last one of a redirect chain (each hop starts a new status line).
struct Head {
  std::map<std::string, std::string> headers;
  std::string header(const std::string& n) const {
    auto it = headers.find(n);
    return it == headers.end() ? std::string() : it->second;
  }
};

std::size_t on_header(char* data, std::size_t size, std::size_t n, void* user) {
  auto* h = static_cast<Head*>(user);
  std::string line(data, size * n);
  if (line.rfind("HTTP/", 0) == 0) {
    h->headers.clear();
  } else if (auto c = line.find(':'); c != std::string::npos) {
    h->headers[lower(trim(line.substr(0, c)))] = trim(line.substr(c + 1));
  }
  return size * n;
}

// A Range GET's body goes straight into the cache file at its offset; never more than asked.
struct BodySink {
  int fd = -1;
  std::uint64_t offset = 0;
  std::uint64_t expected = 0;  // bytes this answer may carry
  std::uint64_t written = 0;
  std::string error;
};

std::size_t on_body(char* data, std::size_t size, std::size_t n, void* user) {
  auto* s = static_cast<BodySink*>(user);
  std::size_t len = size * n;
  if (s->written + len > s->expected) {
    s->error = "the answer is longer than the range asked for";
    return 0;
  }
  std::size_t w = 0;
  while (w < len) {
    ssize_t k = ::pwrite(s->fd, data + w, len - w, static_cast<off_t>(s->offset + s->written + w));
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) {
      s->error = std::string("cache write failed: ") + std::strerror(errno);
      return 0;
    }
    w += static_cast<std::size_t>(k);
  }
  s->written += len;
  return len;
}

// One libcurl handle per fetch: the HEAD and every Range GET reuse its connection (keep-alive)
// when the server allows, as a BMC's media client does.
class Client {
 public:
  Client() {
    curl::global_init_once();
    easy_.reset(curl_easy_init());
  }
  bool ok() const { return easy_ != nullptr; }

  // HEAD, following redirects (http only, at most kMaxRedirects). Returns the status; the
  // head lands in `head`, the final URL in `final_url`.
  Result<long> head(const std::string& url, Head& head, std::string& final_url) {
    setup(url, nullptr);
    curl_easy_setopt(c(), CURLOPT_NOBODY, 1L);
    curl_easy_setopt(c(), CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(c(), CURLOPT_MAXREDIRS, kMaxRedirects);
    curl_easy_setopt(c(), CURLOPT_HEADERFUNCTION, &on_header);
    curl_easy_setopt(c(), CURLOPT_HEADERDATA, &head);
    auto status = perform();
    char* effective = nullptr;
    curl_easy_getinfo(c(), CURLINFO_EFFECTIVE_URL, &effective);
    final_url = effective ? effective : url;
    return status;
  }

  // GET of bytes [first, last] into `sink` (extra request headers in `headers`).
  Result<long> range_get(const std::string& url, const std::string& range, const std::string& if_range, Head& head,
                         BodySink& sink) {
    curl::SlistPtr extra;
    if (!if_range.empty()) extra.reset(curl_slist_append(nullptr, ("If-Range: " + if_range).c_str()));
    setup(url, extra.get());
    curl_easy_setopt(c(), CURLOPT_NOBODY, 0L);
    curl_easy_setopt(c(), CURLOPT_HTTPGET, 1L);
    curl_easy_setopt(c(), CURLOPT_FOLLOWLOCATION, 0L);  // the HEAD resolved the URL already
    curl_easy_setopt(c(), CURLOPT_RANGE, range.c_str());
    curl_easy_setopt(c(), CURLOPT_HEADERFUNCTION, &on_header);
    curl_easy_setopt(c(), CURLOPT_HEADERDATA, &head);
    curl_easy_setopt(c(), CURLOPT_WRITEFUNCTION, &on_body);
    curl_easy_setopt(c(), CURLOPT_WRITEDATA, &sink);
    auto status = perform();
    curl_easy_setopt(c(), CURLOPT_RANGE, nullptr);
    curl_easy_setopt(c(), CURLOPT_HTTPHEADER, nullptr);  // `extra` goes away now
    if (!status && !sink.error.empty()) return make_error(ErrorKind::unavailable, sink.error);
    return status;
  }

 private:
  CURL* c() { return easy_.get(); }
  void setup(const std::string& url, curl_slist* extra) {
    // Accept-Encoding: identity, as before: a medium is served byte for byte, never compressed.
    base_headers_.reset(curl_slist_append(nullptr, "Accept-Encoding: identity"));
    curl_slist* list = base_headers_.get();
    for (curl_slist* e = extra; e; e = e->next) list = curl_slist_append(list, e->data);
    curl_easy_setopt(c(), CURLOPT_URL, url.c_str());
    curl_easy_setopt(c(), CURLOPT_PROTOCOLS_STR, "http");
    curl_easy_setopt(c(), CURLOPT_REDIR_PROTOCOLS_STR, "http");
    curl_easy_setopt(c(), CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c(), CURLOPT_USERAGENT, "provisioner-vbmc/1");
    curl_easy_setopt(c(), CURLOPT_HTTPHEADER, base_headers_.get());
    curl_easy_setopt(c(), CURLOPT_ERRORBUFFER, errbuf_);
    curl_easy_setopt(c(), CURLOPT_CONNECTTIMEOUT, kConnectTimeoutSeconds);
    curl_easy_setopt(c(), CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(c(), CURLOPT_LOW_SPEED_TIME, kStallSeconds);
    errbuf_[0] = '\0';
  }
  Result<long> perform() {
    CURLcode rc = curl_easy_perform(c());
    if (rc != CURLE_OK) {
      if (rc == CURLE_WRITE_ERROR) return make_error(ErrorKind::unavailable, "write aborted");
      return make_error(ErrorKind::unavailable, errbuf_[0] ? std::string(errbuf_) : curl_easy_strerror(rc));
    }
    long status = 0;
    curl_easy_getinfo(c(), CURLINFO_RESPONSE_CODE, &status);
    return status;
  }

  curl::EasyPtr easy_;
  curl::SlistPtr base_headers_;
  char errbuf_[CURL_ERROR_SIZE] = {0};
};

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
  if (original_url.rfind("https://", 0) == 0)
    return fetch_error(original_url, "https is not supported by this virtual BMC");
  HttpUrl u;
  if (!parse_http_url(original_url, u)) return fetch_error(original_url, "not an http:// URL");
  Client client;
  if (!client.ok()) return fetch_error(original_url, "cannot create an HTTP client");

  // 1. HEAD, following redirects: size and validators.
  Head head;
  std::string url;
  auto status = client.head(original_url, head, url);
  if (!status) return fetch_error(original_url, status.error().message);
  if (*status != 200) return fetch_error(url, "HEAD answered " + std::to_string(*status));
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
  // A weak ETag cannot validate a range (RFC 9110 13.1.5).
  std::string if_range = !etag.empty() && etag.rfind("W/", 0) != 0 ? etag : std::string();
  while (offset < size) {
    std::uint64_t last = std::min(size, offset + chunk) - 1;
    Head h;
    // Until the status is known the answer may be the whole file (200 at offset 0).
    BodySink sink{fd, offset, offset == 0 ? size : last - offset + 1, 0, {}};
    auto got = client.range_get(url, std::to_string(offset) + "-" + std::to_string(last), if_range, h, sink);
    ++out.range_requests;
    if (!got) return fetch_error(url, got.error().message);
    if (*got == 200 && offset == 0) {
      // A server without Range support: the whole body came in one go.
      if (sink.written != size) return fetch_error(url, "connection ended mid-body");
      offset = size;
      break;
    }
    if (*got != 206)
      return fetch_error(url, "Range GET answered " + std::to_string(*got) + (*got == 200 ? " (the file changed?)" : ""));
    std::string cr = h.header("content-range");  // bytes a-b/n
    unsigned long long a = 0, b = 0;
    if (std::sscanf(cr.c_str(), "bytes %llu-%llu", &a, &b) != 2 || a != offset || b > last || b < a)
      return fetch_error(url, "unexpected Content-Range '" + cr + "'");
    if (sink.written != b - a + 1) return fetch_error(url, "connection ended mid-body");
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
