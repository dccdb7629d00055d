#pragma once
// A small blocking HTTP client over libcurl (the maintenance OS's own, linked shared): plain
// HTTP or HTTPS (TLS >= 1.2, peer and host name verified against the system trust store), one
// overall deadline per request. Enough for webhooks, task downloads and the by-serial lookup;
// the dispatcher needs nothing more and must not pull in the controller's HTTP stack. curl.h
// stays in the .cpp.
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/result.hpp"

namespace provisioner::dispatcher {

struct Url {
  std::string scheme;  // http | https
  std::string host;    // without brackets for IPv6 literals
  std::uint16_t port = 0;
  std::string target;  // path + query, at least "/"
  std::string host_header() const;  // host[:port] as it goes into Host:
};

Result<Url> parse_url(std::string_view text);

struct HttpRequest {
  std::string method = "GET";
  std::string url;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  // Overall deadline: resolve + connect + TLS + sending + the whole answer, not per read.
  int timeout_ms = 30000;
  std::size_t max_response_bytes = 256u << 20;  // a task ISO is far smaller
};

struct HttpResponse {
  int status = 0;
  std::map<std::string, std::string> headers;  // names lowercased
  std::string body;
  std::string header(const std::string& lower_name) const;
};

// Errors: unavailable (resolve/connect/TLS/IO/deadline passed), invalid_input (bad URL or
// timeout), too_large (response above max_response_bytes), internal (malformed response).
// Redirects are not followed. HTTP(S) proxies from the standard environment variables
// (http_proxy, https_proxy, no_proxy) apply, as libcurl reads them.
Result<HttpResponse> http_request(const HttpRequest& request);

// Parses an HTTP-date (RFC 9110 IMF-fixdate, "Sun, 06 Nov 1994 08:49:37 GMT") into unix
// seconds; -1 when it is not one.
std::int64_t parse_http_date(std::string_view text);

}  // namespace provisioner::dispatcher
