#pragma once
// The API's front guard: owns the public API socket and passes only well-framed, bounded
// requests on to the HTTP library (cpprestsdk) listening on a loopback port behind it.
//
// cpprestsdk buffers whatever a client sends before the handler can refuse it: a request head
// that never ends, or one chunk of a chunked body (a single 2 GiB chunk is read whole, even
// with no token at all). The guard is the part that reads from the network:
//   - a request head must arrive whole within head_timeout and fit in max_head_bytes
//     (else 408 / 431, then close);
//   - the framing is checked strictly (one Content-Length or `Transfer-Encoding: chunked`,
//     never both, no line folding), so the guard and the library cannot disagree on where a
//     request ends;
//   - a chunked body is re-framed into chunks of at most 64 KiB, so the library never holds
//     more than one such piece before the handler sees it and can refuse (401/413);
//   - reads follow writes (a bounded buffer each way): a client sends only as fast as the
//     library takes it;
//   - answers are followed by a lingering close: the guard reads what the client still sends
//     for a moment instead of closing on unread bytes, so its kernel does not reset the
//     connection and destroy the answer on the way;
//   - a cap on connections (from the open-file limit) and per client address.
// TLS for the API ends here (OpenSSL); the hop to the library is plain HTTP on 127.0.0.1.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "common/result.hpp"

namespace provisioner {

class Logger;
class NativeRoutes;

struct FrontGuardOptions {
  std::string listen = "127.0.0.1:8080";  // host:port (a name, an IPv4 or an [IPv6] literal)
  std::optional<std::filesystem::path> tls_cert;
  std::optional<std::filesystem::path> tls_key;
  std::size_t max_head_bytes = 64 * 1024;  // request line + headers (and a chunked body's trailers)
  // From accept (TLS handshake included) or a request's first byte, to its last header line.
  std::chrono::milliseconds head_timeout{10'000};
  // Keep-alive idle between requests, and a body or an answer that makes no progress at all.
  std::chrono::milliseconds idle_timeout{60'000};
  // 0 = from the process's open-file limit (each connection takes two descriptors).
  std::size_t max_connections = 0;
  std::size_t max_connections_per_client = 256;  // 0 = no per-address cap
  // Routes the edge serves itself, streaming (native_route.hpp: the registry); not owned.
  NativeRoutes* native = nullptr;
};

class FrontGuard {
 public:
  FrontGuard(const Logger& log, FrontGuardOptions options);
  ~FrontGuard();  // stops
  FrontGuard(const FrontGuard&) = delete;
  FrontGuard& operator=(const FrontGuard&) = delete;

  // Binds the public address and starts accepting; requests go to 127.0.0.1:backend_port.
  Result<std::uint16_t> start(std::uint16_t backend_port);
  // Stops accepting, ends every connection, joins the threads. Idempotent.
  void stop();
  std::size_t max_connections() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// A free TCP port on 127.0.0.1 right now (bound and released: the caller binds it next).
Result<std::uint16_t> free_loopback_port();

}  // namespace provisioner
