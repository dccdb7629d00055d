#include "dispatcher/http_client.hpp"

#include <curl/curl.h>

#include "common/curl_handles.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <ctime>
#include <memory>
#include <mutex>

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

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r' || s.back() == '\n'))
    s.remove_suffix(1);
  return s;
}

// What the callbacks fill in while the transfer runs.
struct Transfer {
  HttpResponse response;
  std::size_t max_body = 0;
  bool too_large = false;
};

std::size_t on_body(char* data, std::size_t size, std::size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  std::size_t len = size * n;
  if (t->response.body.size() + len > t->max_body) {
    t->too_large = true;
    return 0;  // aborts the transfer with CURLE_WRITE_ERROR
  }
  t->response.body.append(data, len);
  return len;
}

std::size_t on_header(char* data, std::size_t size, std::size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  std::size_t len = size * n;
  std::string_view line(data, len);
  if (line.substr(0, 5) == "HTTP/") {
    // A new response head (after a 100 Continue, say): only the last one counts.
    t->response.headers.clear();
    return len;
  }
  auto colon = line.find(':');
  if (colon != std::string_view::npos)
    t->response.headers[lower(std::string(line.substr(0, colon)))] = std::string(trim(line.substr(colon + 1)));
  return len;
}

}  // namespace

Result<HttpResponse> http_request(const HttpRequest& request) {
  auto url = parse_url(request.url);  // the same rules as ever: http(s) only, no credentials
  if (!url) return url.error();
  if (request.timeout_ms <= 0) return make_error(ErrorKind::invalid_input, "timeout_ms must be positive");
  curl::global_init_once();
  curl::EasyPtr easy(curl_easy_init());
  if (!easy) return make_error(ErrorKind::internal, "curl_easy_init failed");
  CURL* c = easy.get();
  Transfer t;
  t.max_body = request.max_response_bytes;
  char errbuf[CURL_ERROR_SIZE] = {0};

  curl::SlistPtr headers;
  auto add_header = [&](const std::string& line) {
    curl_slist* l = curl_slist_append(headers.get(), line.c_str());
    if (l) {
      (void)headers.release();  // curl_slist_append returns the same list, now longer
      headers.reset(l);
    }
  };
  for (const auto& [k, v] : request.headers) add_header(k + ": " + v);
  add_header("Expect:");  // no 100-continue round trip for larger webhook bodies

  curl_easy_setopt(c, CURLOPT_URL, request.url.c_str());
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(c, CURLOPT_USERAGENT, "provisioner-dispatcher");
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers.get());
  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
  // One deadline for the whole exchange: resolve, connect, TLS, request and every byte of the
  // answer. A server that trickles its answer cannot hold the dispatcher past it.
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(request.timeout_ms));
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(request.timeout_ms));
  // TLS 1.2 or newer, peer and host name verified against the system trust store (libcurl's
  // defaults; said here so nobody turns them off by accident).
  curl_easy_setopt(c, CURLOPT_SSLVERSION, static_cast<long>(CURL_SSLVERSION_TLSv1_2));
  curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
  curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
  curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, static_cast<curl_off_t>(request.max_response_bytes));
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, &on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &t);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, &on_header);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &t);

  const std::string& m = request.method;
  if (m == "HEAD") {
    curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
  } else if (m == "GET" && request.body.empty()) {
    curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
  } else {
    // Any method with a body (POST, PUT, ...): Content-Length is always sent, also for an
    // empty body, as the controller expects for POST.
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(request.body.size()));
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, request.body.data());
    if (m != "POST") curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, m.c_str());
  }

  CURLcode rc = curl_easy_perform(c);
  if (t.too_large || rc == CURLE_FILESIZE_EXCEEDED)
    return make_error(ErrorKind::too_large, "response larger than allowed");
  if (rc != CURLE_OK) {
    std::string what = errbuf[0] ? std::string(errbuf) : std::string(curl_easy_strerror(rc));
    std::string where = request.method + " " + url->scheme + "://" + url->host_header();
    switch (rc) {
      case CURLE_URL_MALFORMAT:
      case CURLE_UNSUPPORTED_PROTOCOL:
        return make_error(ErrorKind::invalid_input, where + ": " + what);
      case CURLE_OPERATION_TIMEDOUT:
        return make_error(ErrorKind::unavailable, where + ": no complete answer within " +
                                                      std::to_string(request.timeout_ms) + " ms (" + what + ")");
      case CURLE_WEIRD_SERVER_REPLY:
        return make_error(ErrorKind::internal, where + ": malformed response (" + what + ")");
      default:
        return make_error(ErrorKind::unavailable, where + " failed: " + what);
    }
  }
  long status = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  t.response.status = static_cast<int>(status);
  return std::move(t.response);
}

std::int64_t parse_http_date(std::string_view text) {
  std::string s(text);
  std::tm tm{};
  const char* end = ::strptime(s.c_str(), "%a, %d %b %Y %H:%M:%S GMT", &tm);
  if (!end || *end != '\0') return -1;
  return static_cast<std::int64_t>(::timegm(&tm));
}

}  // namespace provisioner::dispatcher
