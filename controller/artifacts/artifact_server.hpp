#pragma once
// The HTTP(S) server BMCs and iPXE download artifacts from:
//   GET|HEAD /artifacts/<sha256>/<name>.iso
// Plain and composite artifacts alike, with Range (single, open, suffix, multi-range),
// exact Content-Length (never chunked), ETag "<sha256>", Last-Modified, If-None-Match,
// If-Modified-Since and If-Range. File bytes go out with sendfile(2) on plain HTTP and are
// never loaded whole into memory.
//
// It is a small epoll server of its own rather than part of the cpprestsdk API: ISO streaming
// to many BMCs at once needs zero-copy and does not need routing, JSON or auth (the URL names
// immutable content by its hash). Run a second instance with `tls` set for HTTPS.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/result.hpp"
#include "controller/artifacts/artifact_store.hpp"

namespace provisioner::artifacts {

struct TlsOptions {
  std::string cert_file;  // PEM, may hold the chain
  std::string key_file;   // PEM
  // "TLSv1", "TLSv1.1", "TLSv1.2" or "TLSv1.3". Old BMCs may only speak TLS 1.0/1.1; choosing
  // them also lowers OpenSSL's security level so their cipher suites are offered.
  std::string min_version = "TLSv1.2";
};

struct ArtifactServerOptions {
  std::string host = "127.0.0.1";  // an IP address: BMC DNS is often broken
  std::uint16_t port = 0;          // 0: let the kernel choose; start() returns it
  int threads = 2;                 // event loops
  std::size_t max_connections = 512;
  std::size_t max_header_bytes = 16 * 1024;
  std::chrono::milliseconds idle_timeout{60'000};
  // Some BMCs validate the file name; URLs the controller hands out end in ".iso".
  std::vector<std::string> name_suffixes{".iso"};
  std::optional<TlsOptions> tls;
};

class ArtifactServer {
 public:
  ArtifactServer(const ArtifactStore& store, ArtifactServerOptions options);
  ~ArtifactServer();  // stops
  ArtifactServer(const ArtifactServer&) = delete;
  ArtifactServer& operator=(const ArtifactServer&) = delete;

  // Binds, listens and starts the event loops; returns the bound port.
  Result<std::uint16_t> start();
  // Closes every connection and joins the threads. Idempotent.
  void stop();
  std::uint16_t port() const { return port_; }

  // "/artifacts/<sha256>/<name>": the path to put after "http://<ip>:<port>".
  static std::string url_path(std::string_view sha256, std::string_view name);

  struct Impl;

 private:
  const ArtifactStore& store_;
  ArtifactServerOptions options_;
  std::uint16_t port_ = 0;
  std::unique_ptr<Impl> impl_;
};

}  // namespace provisioner::artifacts
