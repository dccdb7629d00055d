#pragma once
// The HTTP edge: the only place that includes cpprestsdk server headers. The public socket
// belongs to the FrontGuard (front_guard.hpp), which passes bounded, well-framed requests on
// to the library listening on a loopback port.
#include <chrono>
#include <cstddef>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "common/result.hpp"

namespace provisioner {

class ApiHandler;
class Logger;

struct HttpServerOptions {
  std::string listen = "127.0.0.1:8080";  // host:port
  std::optional<std::filesystem::path> tls_cert;
  std::optional<std::filesystem::path> tls_key;
  std::size_t max_body_bytes = 1 << 20;
  int threads = 8;  // the HTTP library's worker pool (set once per process)
  // The edge in front of the library (front_guard.hpp).
  std::size_t max_head_bytes = 64 * 1024;
  std::chrono::milliseconds head_timeout{10'000};
  std::chrono::milliseconds idle_timeout{60'000};
  std::size_t max_connections = 0;
  std::size_t max_connections_per_client = 256;
  // Routes the edge serves itself (the OCI registry at /v2/); not owned, may be null.
  class NativeRoutes* native = nullptr;
};

class HttpServer {
 public:
  HttpServer(ApiHandler& handler, const Logger& log, HttpServerOptions options);
  ~HttpServer();
  Status start();
  void stop();
  std::string base_url() const;  // http(s)://host:port
  std::size_t max_connections() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace provisioner
