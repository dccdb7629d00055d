#pragma once
// Routes the API edge (front_guard.hpp) serves itself instead of passing them on to the HTTP
// library: the OCI registry at /v2/, whose blob uploads and downloads run to tens of GiB and
// must stream (the library buffers bodies in user space and has no sendfile).
//
// The edge has already checked the request head and its framing (request_framing.hpp); a
// handler reads the body through the exchange (de-chunked, with the edge's idle timeout) and
// writes its whole answer itself.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.hpp"
#include "controller/api/request_framing.hpp"

namespace provisioner {

struct NativeRequest {
  std::string_view method;
  std::string_view target;  // as sent (origin form, or absolute form)
  std::string_view head;    // the whole head, through its final CRLF CRLF
  Framing framing;
  bool tls = false;
  std::string client;  // the peer's address (no port)

  // The first value of a header (case-insensitive name), trimmed; nullopt when absent.
  std::optional<std::string_view> header(std::string_view name) const;
  std::string_view path() const;   // the target's path (absolute form reduced), no query
  std::string_view query() const;  // after '?', or empty
};

// The connection, blocking, with the edge's timeouts and its stop event.
class NativeExchange {
 public:
  virtual ~NativeExchange() = default;
  // Body bytes, de-chunked; 0 once the body has ended. An error: the client went away, sent
  // a malformed chunk, or made no progress for the idle timeout (the connection is then
  // closed after the answer). Sends "100 Continue" first when the client asked for it.
  virtual Result<std::size_t> read_body(char* buf, std::size_t cap) = 0;
  virtual bool body_complete() const = 0;
  // False when the client is gone or stopped reading for the idle timeout.
  virtual bool write(std::string_view bytes) = 0;
  // File bytes: sendfile(2) on plain HTTP, read and written through TLS otherwise.
  virtual bool write_file(int fd, std::uint64_t offset, std::uint64_t length) = 0;
};

class NativeRoutes {
 public:
  virtual ~NativeRoutes() = default;
  virtual bool handles(std::string_view path) const = 0;
  // Serves one request. True: the answer was framed by its length and the connection may
  // carry another request (the edge closes it anyway when the body was not read to its end).
  virtual bool serve(const NativeRequest& request, NativeExchange& exchange) = 0;
};

// Several native routes behind one edge (the registry, the event stream): the first that
// handles a path serves it. The routes are not owned.
class NativeRouteList final : public NativeRoutes {
 public:
  void add(NativeRoutes* routes) {
    if (routes) routes_.push_back(routes);
  }
  bool empty() const { return routes_.empty(); }
  bool handles(std::string_view path) const override {
    for (auto* r : routes_)
      if (r->handles(path)) return true;
    return false;
  }
  bool serve(const NativeRequest& request, NativeExchange& exchange) override {
    for (auto* r : routes_)
      if (r->handles(request.path())) return r->serve(request, exchange);
    return false;
  }

 private:
  std::vector<NativeRoutes*> routes_;
};

}  // namespace provisioner
