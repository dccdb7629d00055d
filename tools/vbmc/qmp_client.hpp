#pragma once
// A QMP (QEMU Machine Protocol) connection over a unix socket. Commands are synchronous for
// the caller; a reader thread matches answers by "id" and hands asynchronous events (RESET,
// SHUTDOWN, ...) to a callback, so an event can never be mistaken for a command's answer.
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "common/result.hpp"

namespace provisioner::vbmc {

class QmpClient {
 public:
  // Called on the reader thread: must not call execute() (queue the work instead).
  using EventHandler = std::function<void(const nlohmann::json& event)>;

  // Connects (retrying until `timeout` while QEMU creates the socket), reads the greeting
  // and negotiates capabilities.
  static Result<std::unique_ptr<QmpClient>> connect(const std::filesystem::path& socket,
                                                    std::chrono::milliseconds timeout, EventHandler on_event);
  ~QmpClient();
  QmpClient(const QmpClient&) = delete;
  QmpClient& operator=(const QmpClient&) = delete;

  // {"execute": command, "arguments": arguments} -> the "return" value, or the QMP error's
  // class and description as an Error.
  Result<nlohmann::json> execute(const std::string& command, const nlohmann::json& arguments = nullptr,
                                 std::chrono::milliseconds timeout = std::chrono::seconds(10));
  bool connected() const;

 private:
  QmpClient(int fd, EventHandler on_event);
  void read_loop();

  int fd_;
  EventHandler on_event_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::int64_t, nlohmann::json> answers_;
  std::int64_t next_id_ = 1;
  bool closed_ = false;
  std::mutex write_mu_;
  std::thread reader_;
};

}  // namespace provisioner::vbmc
