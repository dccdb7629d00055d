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
  // Limits against clients that open connections and never finish a request (a few hostile
  // clients must not lock a rack of BMCs out of their media). A connection over either cap is
  // answered "503 Service Unavailable" with Retry-After and closed at once.
  //   max_connections: 0 = connection_cap(the process's RLIMIT_NOFILE soft limit at start());
  //   a value above that is lowered to it (past it accept(2) would fail with EMFILE).
  std::size_t max_connections = 0;
  //   per client IP address (exact address, v4 or v6); 0 = no per-address cap.
  std::size_t max_connections_per_client = 64;
  std::size_t max_header_bytes = 16 * 1024;
  // Time to receive a whole request head: from accept for the first request of a connection
  // (the TLS handshake included), from the first byte of each later request on a keep-alive
  // connection. Bytes arriving slowly do not extend it. Past it: 408 and close.
  std::chrono::milliseconds head_timeout{5'000};
  // An idle keep-alive connection between two requests (no byte of the next one yet).
  std::chrono::milliseconds keepalive_timeout{30'000};
  // A response that makes no progress at all for this long (the client stopped reading). A
  // slow reader that keeps reading is never cut, however long the transfer takes.
  std::chrono::milliseconds stall_timeout{60'000};
  // Some BMCs validate the file name; URLs the controller hands out end in ".iso".
  std::vector<std::string> name_suffixes{".iso"};
  std::optional<TlsOptions> tls;
};

// The connection cap for an open-file limit: what is left after headroom for everything else
// in the process (artifact store, SQLite, the API, Redfish clients), halved because every
// response also holds the files it reads; within [8, 32768].
std::size_t connection_cap(std::uint64_t nofile);

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
  // The connection cap in force (after start(): resolved against RLIMIT_NOFILE).
  std::size_t max_connections() const { return max_connections_; }

  // "/artifacts/<sha256>/<name>": the path to put after "http://<ip>:<port>".
  static std::string url_path(std::string_view sha256, std::string_view name);

  struct Impl;

 private:
  const ArtifactStore& store_;
  ArtifactServerOptions options_;
  std::uint16_t port_ = 0;
  std::size_t max_connections_ = 0;
  std::unique_ptr<Impl> impl_;
};

}  // namespace provisioner::artifacts
