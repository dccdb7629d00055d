#pragma once
// The HTTP edge: the only place that includes cpprestsdk server headers.
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
};

class HttpServer {
 public:
  HttpServer(ApiHandler& handler, const Logger& log, HttpServerOptions options);
  ~HttpServer();
  Status start();
  void stop();
  std::string base_url() const;  // http(s)://host:port

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace provisioner
