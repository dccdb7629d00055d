#pragma once
// The HTTP layer under the Redfish client: one blocking request per call, over libcurl, with
// connections and TLS sessions reused per BMC. Kept behind a tiny interface so the client
// logic can be tested against a fake and so curl.h never leaks into other headers.
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace provisioner::redfish {

struct HttpRequest {
  std::string method;  // GET, POST, PATCH, DELETE, HEAD
  std::string target;  // origin-form path, e.g. /redfish/v1/Systems/1
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
};

struct HttpResponse {
  int status = 0;
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;
  std::string header(const std::string& lower_name) const {
    auto it = headers.find(lower_name);
    return it == headers.end() ? std::string() : it->second;
  }
};

// Why a request produced no HTTP answer. `sent` tells the caller whether the BMC may have
// acted on it: a reset after the request was written is ambiguous for non-idempotent calls.
struct TransportFailure {
  // aborted: the caller's stop flag turned true mid-request (shutdown): do not retry now.
  enum class Kind { connect, timeout, reset, tls, protocol, aborted } kind = Kind::connect;
  bool sent = false;
  std::string detail;
};

struct TransportResult {
  bool ok = false;
  HttpResponse response;    // when ok
  TransportFailure failure;  // when !ok
};

struct TlsSettings {
  bool verify = true;       // most BMCs ship self-signed certificates: per-BMC switch
  std::string ca_file;      // PEM bundle; empty = system default paths
  // false (modern): TLS >= 1.2 with the system's default ciphers. true: TLS 1.0/1.1 and
  // SECLEVEL=0 ciphers too, for old iLO/iDRAC firmware; only when a server record or vendor
  // profile asks for it explicitly.
  bool legacy = false;
};

struct Endpoint {
  bool https = true;
  std::string host;  // IP literal (preferred; IPv6 without brackets) or name
  std::uint16_t port = 443;
  std::string host_header() const;  // "[fd00::10]:8443", "10.0.0.5" (default port omitted)
  std::string url(const std::string& target) const;  // scheme://host_header + target
  bool loopback() const;  // 127.0.0.0/8, ::1, localhost
};

// Parses "10.0.0.5", "10.0.0.5:8443", "https://bmc-1", "http://127.0.0.1:9000/", IPv6 as
// "fd00::10", "[fd00::10]:8443" or "https://[fd00::10]". A bare address means HTTPS, which is
// what every production BMC speaks.
bool parse_endpoint(const std::string& address, Endpoint& out, std::string& error);

class HttpTransport {
 public:
  virtual ~HttpTransport() = default;
  virtual TransportResult send(const HttpRequest& request, std::chrono::milliseconds timeout) = 0;
  // false: `Connection: close` on every request from now on (a vendor profile that wedges on
  // long keep-alive connections).
  virtual void set_keep_alive(bool keep_alive) { (void)keep_alive; }
};

struct TransportOptions {
  TlsSettings tls;
  std::chrono::milliseconds connect_timeout{5'000};  // capped by each request's own deadline
  bool keep_alive = true;
  // When it turns true, a request in flight ends within ~100 ms as Kind::aborted. Must outlive
  // the transport. nullptr = never.
  const std::atomic<bool>* stop = nullptr;
};

// libcurl (HTTP/1.1 only). Every transport for the same endpoint and TLS settings shares one
// pool of connections (keep-alive) and one TLS session cache, process-wide and thread-safe, so
// the job driver's short-lived clients still reuse the connection of the previous step. The
// deadline covers connect + TLS + the whole answer. A request that is not idempotent is never
// sent twice: libcurl's silent retry on a reused connection that died is refused for it (the
// failure says `sent`, the client checks the BMC's state instead). Proxies: libcurl reads
// http_proxy / https_proxy / all_proxy / no_proxy itself; loopback BMC addresses never go
// through a proxy. libcurl's verbose/debug output is never enabled (it would print headers,
// and with them tokens and basic credentials).
std::unique_ptr<HttpTransport> make_curl_transport(Endpoint endpoint, TransportOptions options);


}  // namespace provisioner::redfish
