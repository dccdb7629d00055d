#pragma once
// The HTTP layer under the Redfish client: one blocking request per call on a fresh
// connection. Kept behind a tiny interface so the client logic can be tested against a fake
// and so cpprestsdk/OpenSSL never leak into the controller's other headers.
#include <chrono>
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
  enum class Kind { connect, timeout, reset, tls, protocol } kind = Kind::connect;
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
};

struct Endpoint {
  bool https = true;
  std::string host;  // IP literal (preferred) or name
  std::uint16_t port = 443;
  std::string host_header() const;
};

// Parses "10.0.0.5", "10.0.0.5:8443", "https://bmc-1", "http://127.0.0.1:9000/". A bare
// address means HTTPS, which is what every production BMC speaks.
bool parse_endpoint(const std::string& address, Endpoint& out, std::string& error);

class HttpTransport {
 public:
  virtual ~HttpTransport() = default;
  virtual TransportResult send(const HttpRequest& request, std::chrono::milliseconds timeout) = 0;
};

// Own blocking HTTP/1.1 client over POSIX sockets + OpenSSL rather than cpprestsdk's
// http_client: we need `Connection: close` on every request (several BMCs wedge on
// long-lived keep-alive connections), a hard deadline covering connect+TLS+whole answer,
// per-BMC verify/CA settings with old TLS versions allowed, and an exact view of TCP resets
// vs timeouts for the retry policy. cpprest pools connections and hides those distinctions.
std::unique_ptr<HttpTransport> make_socket_transport(Endpoint endpoint, TlsSettings tls,
                                                     std::chrono::milliseconds connect_timeout);

}  // namespace provisioner::redfish
