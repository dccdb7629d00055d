#pragma once
// The vbmc's HTTP/1.1 front: loopback only, one thread per connection, one request per
// connection (answers carry Connection: close, as several real BMCs do). Small on purpose:
// the Redfish client under test talks plain HTTP/1.1 with Content-Length bodies.
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/result.hpp"

namespace provisioner::vbmc {

struct HttpRequest {
  std::string method, path;  // path without the query string
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;
  std::string header(const std::string& lower_name) const {
    auto it = headers.find(lower_name);
    return it == headers.end() ? std::string() : it->second;
  }
};

struct HttpAnswer {
  int status = 200;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
};

class HttpServer {
 public:
  using Handler = std::function<HttpAnswer(const HttpRequest&)>;
  explicit HttpServer(Handler handler);
  ~HttpServer();  // stops
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds host:port (port 0 = any free one) and starts accepting; returns the bound port.
  Result<std::uint16_t> start(const std::string& host, std::uint16_t port);
  void stop();

 private:
  void accept_loop();
  void serve(int fd);

  Handler handler_;
  int listen_fd_ = -1;
  std::atomic<bool> stopping_{false};
  std::thread acceptor_;
  std::mutex mu_;
  std::vector<int> open_fds_;
  std::atomic<int> active_{0};
};

}  // namespace provisioner::vbmc
