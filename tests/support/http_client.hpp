#pragma once
// A deliberately small blocking HTTP/1.1 client over POSIX sockets, so tests see the wire
// exactly (status, headers, raw bytes) and can also send malformed requests.
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace provisioner::test {

using Headers = std::vector<std::pair<std::string, std::string>>;

struct HttpResponse {
  int status = 0;
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;
  std::string header(const std::string& name) const;
  nlohmann::json json() const;
};

// One request on a fresh connection (Connection: close). Throws on socket errors.
HttpResponse http_request(std::uint16_t port, const std::string& method, const std::string& target,
                          const Headers& headers = {}, const std::string& body = "",
                          const std::string& host = "127.0.0.1");

// Sends `raw` as is and returns everything read until the server closes.
std::string raw_exchange(std::uint16_t port, const std::string& raw, const std::string& host = "127.0.0.1");

// Parses a raw response (status line, headers, body by Content-Length or to the end).
HttpResponse parse_response(const std::string& raw);

// Whether something accepts TCP connections on the port (connects, then closes at once).
bool accepts_connections(std::uint16_t port, const std::string& host = "127.0.0.1");

// A port nobody listens on right now.
std::uint16_t free_port();

}  // namespace provisioner::test
