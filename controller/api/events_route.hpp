#pragma once
// GET /api/v1/events: Server-Sent Events of every job, node and fleet change, read from the
// store's event table (Store::events_after). The edge serves it itself (native_route.hpp), on
// the connection's own thread, so a stream never holds an HTTP-library worker.
//
// - `id:` is the event's seq in the store; a client that reconnects with Last-Event-ID (or
//   ?last_event_id=) gets everything after it, from the store, nothing lost or repeated.
//   Without one, the stream starts at the newest event.
// - Filters: ?job=, ?fleet=, ?node= (all that are given must match).
// - A heartbeat comment every `heartbeat` keeps proxies from closing an idle stream.
// - A slow consumer never slows the controller: each stream pulls from the store at its own
//   pace, and what waits for it is bounded by its socket's send buffer and one batch. A client
//   that takes no bytes for the edge's idle timeout is dropped; it resumes with Last-Event-ID,
//   and the store still has every event it missed.
// - Authenticated like the rest of the API (a bearer token with read rights): 401 before
//   anything else is sent.
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>

#include "controller/api/native_route.hpp"

namespace provisioner {

class Logger;
class Metrics;
class Store;
class TokenAuthenticator;

struct EventsOptions {
  std::chrono::milliseconds heartbeat{15'000};
  int batch = 500;
};

class EventsRoute final : public NativeRoutes {
 public:
  EventsRoute(Store& store, const TokenAuthenticator& auth, const Logger& log, EventsOptions options = {});

  bool handles(std::string_view path) const override { return path == "/api/v1/events"; }
  bool serve(const NativeRequest& request, NativeExchange& exchange) override;

  void set_metrics(Metrics* metrics) { metrics_ = metrics; }
  // New events were committed (the store's listener): every stream looks.
  void notify();
  // Ends every stream (at shutdown).
  void stop();

 private:
  bool stream(const NativeRequest& request, NativeExchange& exchange, int& status);

  Store& store_;
  const TokenAuthenticator& auth_;
  const Logger& log_;
  EventsOptions options_;
  Metrics* metrics_ = nullptr;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::uint64_t generation_ = 0;
  bool stopping_ = false;
};

}  // namespace provisioner
