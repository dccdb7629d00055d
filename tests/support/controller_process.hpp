#pragma once
// Runs the real provisioner-controller binary on 127.0.0.1 with a private data dir and known
// tokens, so integration tests talk to it over real sockets and can kill and restart it.
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>

#include "tests/support/http_client.hpp"

namespace provisioner::test {

// A temporary directory removed with everything in it on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

class ControllerProcess {
 public:
  // Known tokens, one per role; only their hashes go into the config.
  static constexpr const char* kAdminToken = "test-admin-token-5d1f0c7e9a";
  static constexpr const char* kOperatorToken = "test-operator-token-83be21aa";
  static constexpr const char* kAuditorToken = "test-auditor-token-0b9c44d2";
  static constexpr const char* kCiToken = "test-ci-token-71a5e9f3c0";

  // `extra_toml` is added to the generated config's top level, `artifacts_toml` inside its
  // [artifacts] table. `listen_host`: what the API and the artifact server bind (0.0.0.0
  // only inside a network namespace the test made, where every address is private).
  explicit ControllerProcess(std::string extra_toml = "", std::string log_format = "text",
                             std::string artifacts_toml = "", std::string listen_host = "127.0.0.1");
  ~ControllerProcess();

  void start();               // returns once /healthz answers (or the port accepts, with TLS)
  void use_tls() { tls_ = true; }
  void kill(int signal = 9);  // and reap
  // Sends `signal` and waits up to `patience` for the process to exit. The time it took when
  // it did (and its exit status in `status`); nullopt when it did not (it is SIGKILLed then).
  std::optional<std::chrono::milliseconds> stop(int signal, std::chrono::milliseconds patience,
                                                int* status = nullptr);
  void restart() { kill(); start(); }
  bool running() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }

  std::uint16_t port() const { return port_; }
  std::uint16_t artifacts_port() const { return artifacts_port_; }

  // Polls GET /api/v1/jobs/{id} until its status is `status` (throws after `seconds`).
  nlohmann::json wait_for_status(const std::string& job_id, const std::string& status, int seconds = 20) const;
  const std::filesystem::path& data_dir() const { return data_dir_; }
  std::filesystem::path log_file() const { return dir_.path() / "controller.log"; }
  std::string log_text() const;

  HttpResponse get(const std::string& target, const char* token = kAdminToken) const;
  HttpResponse post(const std::string& target, const std::string& body, const char* token = kAdminToken,
                    Headers extra = {}) const;

  // The per-job webhook key, read the way the task ISO gets it: unsealed from the store with
  // the controller's key file.
  std::string webhook_key(const std::string& job_id) const;
  // Every job's id and webhook key by its server's serial (the newest job of each), read in
  // one look at the database: what a benchmark's simulated machines need by the thousand.
  struct JobKey {
    std::string job_id;
    std::string key;
  };
  std::map<std::string, JobKey> job_keys_by_serial() const;

 private:
  TempDir dir_;
  std::filesystem::path data_dir_;
  std::uint16_t port_ = 0;
  std::uint16_t artifacts_port_ = 0;
  pid_t pid_ = -1;
  bool tls_ = false;
  std::string database_url_;  // empty: SQLite in the data dir
};

}  // namespace provisioner::test
