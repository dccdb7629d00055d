#include "controller/redfish/http_transport.hpp"

#include <arpa/inet.h>
#include <sys/resource.h>

#include <curl/curl.h>

#include "common/curl_handles.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <mutex>

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

constexpr std::size_t kMaxBody = 64u << 20;
constexpr std::size_t kMaxHeaders = 1u << 20;
// How long an idle connection may wait for its next request: a GET can afford a connection
// the BMC closed meanwhile (libcurl notices and reconnects), anything else gets one that was
// busy a moment ago, so the race "BMC closes the idle connection as we write" stays rare.
constexpr long kMaxIdleSecondsIdempotent = 30;
constexpr long kMaxIdleSecondsOther = 2;
constexpr auto kParkedMax = std::chrono::seconds(60);  // parked handles older than this are closed

// Parked connections across all BMCs: bounded by the fd limit, so 10,000 BMCs cannot pin
// 10,000 idle sockets.
std::size_t max_parked() {
  static const std::size_t cap = [] {
    rlimit r{};
    std::size_t fds = ::getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur != RLIM_INFINITY ? r.rlim_cur : 4096;
    return std::clamp<std::size_t>(fds / 4, 16, 4096);
  }();
  return cap;
}

// One easy handle in its own multi handle: the multi holds the connection cache, and lets
// send() wake every 50 ms to look at the stop flag (curl_easy_perform would sleep up to 1 s).
struct Handle {
  CURLM* multi = nullptr;
  CURL* easy = nullptr;
  Clock::time_point parked;
  Handle() : multi(curl_multi_init()), easy(curl_easy_init()) {}
  ~Handle() {
    if (easy) curl_easy_cleanup(easy);
    if (multi) curl_multi_cleanup(multi);
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
};

std::atomic<std::size_t> g_parked{0};

// Everything shared by the transports of one endpoint + TLS settings.
class Pool {
 public:
  Pool() {
    share_ = curl_share_init();
    curl_share_setopt(share_, CURLSHOPT_LOCKFUNC, &Pool::lock);
    curl_share_setopt(share_, CURLSHOPT_UNLOCKFUNC, &Pool::unlock);
    curl_share_setopt(share_, CURLSHOPT_USERDATA, this);
    curl_share_setopt(share_, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
    curl_share_setopt(share_, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
  }
  ~Pool() {
    idle_.clear();
    curl_share_cleanup(share_);
  }
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;

  CURLSH* share() const { return share_; }

  std::unique_ptr<Handle> acquire() {
    std::lock_guard lock(mu_);
    auto now = Clock::now();
    while (!idle_.empty()) {
      auto h = std::move(idle_.back());
      idle_.pop_back();
      --g_parked;
      if (now - h->parked < kParkedMax) return h;
    }
    return std::make_unique<Handle>();
  }

  // Parks the handle (and the connection it holds) for the next request, or closes it when
  // the process already parks enough.
  void release(std::unique_ptr<Handle> h, bool reusable) {
    if (!reusable || g_parked.load() >= max_parked()) return;
    h->parked = Clock::now();
    std::lock_guard lock(mu_);
    if (idle_.size() >= 4) return;  // one BMC client at a time is the rule; a few spare
    idle_.push_back(std::move(h));
    ++g_parked;
  }

  std::size_t idle() const {
    std::lock_guard lock(mu_);
    return idle_.size();
  }

 private:
  static void lock(CURL*, curl_lock_data data, curl_lock_access, void* self) {
    static_cast<Pool*>(self)->locks_[index(data)].lock();
  }
  static void unlock(CURL*, curl_lock_data data, void* self) { static_cast<Pool*>(self)->locks_[index(data)].unlock(); }
  static std::size_t index(curl_lock_data d) { return static_cast<std::size_t>(d) % kLocks; }

  static constexpr std::size_t kLocks = CURL_LOCK_DATA_LAST;
  CURLSH* share_ = nullptr;
  std::mutex locks_[kLocks];
  mutable std::mutex mu_;
  std::vector<std::unique_ptr<Handle>> idle_;
};

class PoolRegistry {
 public:
  std::shared_ptr<Pool> get(const std::string& key) {
    std::lock_guard lock(mu_);
    auto& p = pools_[key];
    if (!p) {
      // Forget pools nobody uses once there are many (a TLS session cache and DNS entries each).
      if (pools_.size() > 8192)
        for (auto it = pools_.begin(); it != pools_.end();)
          it = it->second && it->second.use_count() == 1 && it->first != key ? pools_.erase(it) : std::next(it);
      p = std::make_shared<Pool>();
    }
    return p;
  }

 private:
  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<Pool>> pools_;
};

PoolRegistry& registry() {
  static auto* r = new PoolRegistry();  // never destroyed: transports may outlive static teardown
  return *r;
}

// Per-request state the callbacks write into.
struct Exchange {
  HttpResponse* response = nullptr;
  std::size_t header_bytes = 0;
  bool too_large = false;
  int attempts = 0;           // connections the request was about to be written on
  bool idempotent = true;
  bool refused_resend = false;

  static std::size_t on_header(char* data, std::size_t size, std::size_t n, void* self) {
    auto* x = static_cast<Exchange*>(self);
    std::size_t len = size * n;
    x->header_bytes += len;
    if (x->header_bytes > kMaxHeaders) {
      x->too_large = true;
      return 0;
    }
    std::string line(data, len);
    if (line.rfind("HTTP/", 0) == 0) {  // a new status line (after 100 Continue): start over
      x->response->headers.clear();
      return len;
    }
    auto colon = line.find(':');
    if (colon != std::string::npos)
      x->response->headers[lower(trim(line.substr(0, colon)))] = trim(line.substr(colon + 1));
    return len;
  }

  static std::size_t on_body(char* data, std::size_t size, std::size_t n, void* self) {
    auto* x = static_cast<Exchange*>(self);
    std::size_t len = size * n;
    if (x->response->body.size() + len > kMaxBody) {
      x->too_large = true;
      return 0;
    }
    x->response->body.append(data, len);
    return len;
  }

  // Called once per connection the request is about to be written on. A second call means
  // libcurl retries on a fresh connection because the reused one died: fine for GET/HEAD,
  // refused for anything else (the BMC may have acted on the first copy).
  static int on_prereq(void* self, char*, char*, int, int) {
    auto* x = static_cast<Exchange*>(self);
    if (++x->attempts > 1 && !x->idempotent) {
      x->refused_resend = true;
      return CURL_PREREQFUNC_ABORT;
    }
    return CURL_PREREQFUNC_OK;
  }
};

class CurlTransport final : public HttpTransport {
 public:
  CurlTransport(Endpoint endpoint, TransportOptions options)
      : endpoint_(std::move(endpoint)), options_(std::move(options)), keep_alive_(options_.keep_alive) {
    curl::global_init_once();
    std::string key = endpoint_.url("") + "|verify=" + (options_.tls.verify ? "1" : "0") +
                      "|ca=" + options_.tls.ca_file + "|tls=" + (options_.tls.legacy ? "legacy" : "modern");
    pool_ = registry().get(key);
  }

  void set_keep_alive(bool keep_alive) override { keep_alive_ = keep_alive; }

  TransportResult send(const HttpRequest& request, std::chrono::milliseconds timeout) override {
    TransportResult result;
    if (options_.stop && options_.stop->load()) {
      result.failure = {TransportFailure::Kind::aborted, false, "request not sent: shutting down"};
      return result;
    }
    std::unique_ptr<Handle> handle;
    {
      std::lock_guard lock(own_mutex_);
      handle = std::move(own_);
    }
    if (!handle) handle = pool_->acquire();
    if (!handle->multi || !handle->easy) {
      result.failure = {TransportFailure::Kind::protocol, false, "cannot create an HTTP client handle"};
      return result;
    }
    CURL* e = handle->easy;
    curl_easy_reset(e);  // keeps the connection cache, drops every option of the last request

    Exchange x;
    x.response = &result.response;
    x.idempotent = request.method == "GET" || request.method == "HEAD";
    char errbuf[CURL_ERROR_SIZE] = {0};
    std::string url = endpoint_.url(request.target);
    bool keep_alive = keep_alive_.load();

    curl_easy_setopt(e, CURLOPT_SHARE, pool_->share());
    curl_easy_setopt(e, CURLOPT_URL, url.c_str());
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(e, CURLOPT_PATH_AS_IS, 1L);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_VERBOSE, 0L);  // never: it would print credentials
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, static_cast<long>(std::max<long long>(1, timeout.count())));
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
                     static_cast<long>(std::max<long long>(1, std::min(timeout, options_.connect_timeout).count())));
    curl_easy_setopt(e, CURLOPT_MAXAGE_CONN, x.idempotent ? kMaxIdleSecondsIdempotent : kMaxIdleSecondsOther);
    if (!keep_alive) {  // one connection per request, as such BMCs were always talked to
      curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, 1L);
      curl_easy_setopt(e, CURLOPT_FORBID_REUSE, 1L);
    }
    if (endpoint_.loopback()) curl_easy_setopt(e, CURLOPT_PROXY, "");  // never via a proxy
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, &Exchange::on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, &x);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, &Exchange::on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &x);
    curl_easy_setopt(e, CURLOPT_PREREQFUNCTION, &Exchange::on_prereq);
    curl_easy_setopt(e, CURLOPT_PREREQDATA, &x);

    if (endpoint_.https) {
      curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, options_.tls.verify ? 1L : 0L);
      curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, options_.tls.verify ? 2L : 0L);
      if (!options_.tls.ca_file.empty()) curl_easy_setopt(e, CURLOPT_CAINFO, options_.tls.ca_file.c_str());
      if (options_.tls.legacy) {
        // Old BMC firmware: TLS 1.0/1.1 and the ciphers OpenSSL 3 only allows at level 0.
        curl_easy_setopt(e, CURLOPT_SSLVERSION, static_cast<long>(CURL_SSLVERSION_TLSv1_0));
        curl_easy_setopt(e, CURLOPT_SSL_CIPHER_LIST, "DEFAULT:@SECLEVEL=0");
      } else {
        curl_easy_setopt(e, CURLOPT_SSLVERSION, static_cast<long>(CURL_SSLVERSION_TLSv1_2));
      }
    }

    // Method and body. Only what the request says goes out: no form Content-Type of
    // libcurl's, no Expect: 100-continue, an explicit Content-Length on every POST/PATCH/PUT.
    bool has_type = false;
    curl::SlistPtr headers;
    auto add = [&](const std::string& line) {
      curl_slist* next = curl_slist_append(headers.get(), line.c_str());
      if (next) {
        (void)headers.release();
        headers.reset(next);
      }
    };
    for (const auto& [k, v] : request.headers) {
      std::string lk = lower(k);
      if (lk == "content-length" || lk == "host" || lk == "connection") continue;  // libcurl's business
      if (lk == "content-type") has_type = true;
      add(k + ": " + v);
    }
    bool with_body = !request.body.empty() || request.method == "POST" || request.method == "PATCH" ||
                     request.method == "PUT";
    if (request.method == "GET") {
      curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    } else if (request.method == "HEAD") {
      curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else {
      if (request.method != "POST") curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, request.method.c_str());
      if (with_body) {
        curl_easy_setopt(e, CURLOPT_POST, 1L);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(request.body.size()));
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, request.body.data());
        if (!has_type) add("Content-Type:");  // drops libcurl's form type
        add("Expect:");
      }
    }
    if (!keep_alive) add("Connection: close");
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, headers.get());

    bool aborted = false;
    CURLcode rc = run(*handle, aborted);
    long status = 0;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    long os_errno = 0;
    curl_easy_getinfo(e, CURLINFO_OS_ERRNO, &os_errno);
    // The handle keeps its connection only after a complete exchange.
    bool done = !aborted && rc == CURLE_OK;
    curl_easy_reset(e);  // no pointer into this call's locals survives it
    if (done && keep_alive) {
      // Kept for this transport's next request (its client's next step a moment later) and
      // only parked in the pool when the transport ends: the process-wide cap on parked
      // connections, filled by thousands of BMCs waiting for their installs, never makes a
      // live client reconnect for each request.
      std::lock_guard lock(own_mutex_);
      if (!own_) own_ = std::move(handle);
    }
    if (handle) pool_->release(std::move(handle), done && keep_alive);

    if (done) {
      result.ok = true;
      result.response.status = static_cast<int>(status);
      return result;
    }
    result.response = {};
    result.failure = classify(rc, aborted, x, errbuf, static_cast<int>(os_errno));
    return result;
  }

 private:
  // Drives one transfer, waking at least every 50 ms to look at the stop flag.
  CURLcode run(Handle& h, bool& aborted) {
    if (curl_multi_add_handle(h.multi, h.easy) != CURLM_OK) return CURLE_FAILED_INIT;
    CURLcode rc = CURLE_OK;
    for (;;) {
      int running = 0;
      if (curl_multi_perform(h.multi, &running) != CURLM_OK) {
        rc = CURLE_FAILED_INIT;
        break;
      }
      bool finished = false;
      int queued = 0;
      while (CURLMsg* m = curl_multi_info_read(h.multi, &queued)) {
        if (m->msg == CURLMSG_DONE && m->easy_handle == h.easy) {
          rc = m->data.result;
          finished = true;
        }
      }
      if (finished) break;
      if (options_.stop && options_.stop->load()) {
        aborted = true;
        break;
      }
      curl_multi_poll(h.multi, nullptr, 0, options_.stop ? 50 : 1000, nullptr);
    }
    curl_multi_remove_handle(h.multi, h.easy);  // mid-transfer: the connection is closed
    return rc;
  }

  TransportFailure classify(CURLcode rc, bool aborted, const Exchange& x, const char* errbuf, int os_errno) const {
    using Kind = TransportFailure::Kind;
    bool written = x.attempts > 0;  // the request was (being) written on some connection
    std::string why = errbuf[0] ? errbuf : curl_easy_strerror(rc);
    if (aborted) return {Kind::aborted, written, "request aborted: shutting down"};
    if (x.refused_resend)
      return {Kind::reset, true, "connection lost before the answer (reused connection closed by the BMC)"};
    if (x.too_large) return {Kind::protocol, true, "answer too large"};
    switch (rc) {
      case CURLE_COULDNT_RESOLVE_HOST:
        return {Kind::connect, false, "cannot resolve host: " + why};
      case CURLE_COULDNT_CONNECT:
        return {Kind::connect, false, "connect: " + (os_errno ? std::string(std::strerror(os_errno)) : why)};
      case CURLE_OPERATION_TIMEDOUT:
        return {Kind::timeout, written, written ? "no answer before the deadline" : "connect timed out"};
      case CURLE_PEER_FAILED_VERIFICATION:
      case CURLE_SSL_CACERT_BADFILE:
      case CURLE_SSL_ISSUER_ERROR:
      case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
      case CURLE_SSL_INVALIDCERTSTATUS:
        return {Kind::tls, false, "certificate verification failed: " + why};
      case CURLE_SSL_CONNECT_ERROR:
      case CURLE_SSL_CIPHER:
      case CURLE_SSL_CERTPROBLEM:
      case CURLE_SSL_ENGINE_INITFAILED:
      case CURLE_SSL_ENGINE_NOTFOUND:
      case CURLE_SSL_ENGINE_SETFAILED:
        return {Kind::tls, false,
                "TLS handshake failed: " + why +
                    (options_.tls.legacy ? std::string()
                                         : std::string("; TLS >= 1.2 is required unless the server's bmc.tls is "
                                                       "\"legacy\" (old iLO/iDRAC firmware)"))};
      case CURLE_SEND_ERROR:
        return {Kind::reset, true, "send: " + (os_errno ? std::string(std::strerror(os_errno)) : why)};
      case CURLE_RECV_ERROR:
        return {Kind::reset, true, "recv: " + (os_errno ? std::string(std::strerror(os_errno)) : why)};
      case CURLE_GOT_NOTHING:
        return {Kind::reset, true, "connection closed before the answer"};
      case CURLE_PARTIAL_FILE:
        return {Kind::reset, true, "connection closed mid-answer"};
      default:
        return {Kind::protocol, written, why};
    }
  }

  Endpoint endpoint_;
  TransportOptions options_;
  std::atomic<bool> keep_alive_;
  std::shared_ptr<Pool> pool_;
  std::mutex own_mutex_;
  std::unique_ptr<Handle> own_;  // the connection of this transport's last request

 public:
  ~CurlTransport() override {
    if (own_) pool_->release(std::move(own_), true);
  }
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

std::string Endpoint::url(const std::string& target) const {
  std::string u = https ? "https://" : "http://";
  u.append(host_header()).append(target);
  return u;
}

bool Endpoint::loopback() const {
  in_addr a4{};
  if (::inet_pton(AF_INET, host.c_str(), &a4) == 1) return (ntohl(a4.s_addr) >> 24) == 127;
  in6_addr a6{};
  if (::inet_pton(AF_INET6, host.c_str(), &a6) == 1) return IN6_IS_ADDR_LOOPBACK(&a6);
  return lower(host) == "localhost";
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
    if (close + 1 < a.size()) {
      if (a[close + 1] != ':' || close + 2 >= a.size()) {
        error = "bad port in BMC address";
        return false;
      }
      port = a.substr(close + 2);
    }
    in6_addr a6{};
    if (::inet_pton(AF_INET6, host.c_str(), &a6) != 1) {
      error = "bad IPv6 literal in BMC address";
      return false;
    }
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

std::unique_ptr<HttpTransport> make_curl_transport(Endpoint endpoint, TransportOptions options) {
  return std::make_unique<CurlTransport>(std::move(endpoint), std::move(options));
}

}  // namespace provisioner::redfish
