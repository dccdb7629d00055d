#include "controller/api/http_server.hpp"

#include <atomic>
#include <exception>
#include <functional>
#include <stdexcept>
#include <mutex>
#include <thread>
#include <vector>

#include <cpprest/http_listener.h>
#include <cpprest/streams.h>
#include <cpprest/uri.h>
#include <pplx/threadpool.h>

#include "controller/api/api_handler.hpp"
#include "controller/api/front_guard.hpp"
#include "controller/logging/logger.hpp"

namespace provisioner {

using web::http::http_request;
using web::http::http_response;
using web::http::experimental::listener::http_listener;
using web::http::experimental::listener::http_listener_config;

namespace {

// The request line and headers as the handler sees them; the body is added by the caller.
ApiRequest to_api_request(const http_request& request) {
  ApiRequest api;
  api.method = request.method();
  const auto& uri = request.request_uri();
  api.path = web::uri::decode(uri.path());
  for (const auto& [k, v] : web::uri::split_query(uri.query())) api.query[web::uri::decode(k)] = web::uri::decode(v);
  auto headers = request.headers();
  api.header = [headers](const std::string& name) {
    auto it = headers.find(name);
    return it == headers.end() ? std::string() : it->second;
  };
  return api;
}

constexpr std::size_t kMaxConcurrentUploads = 4;
constexpr std::size_t kBodyReadPiece = 64 * 1024;

// cpprest's asio listener calls us as soon as the request head is parsed and keeps reading
// the body in the background into an unbounded buffer; it sends no answer before the whole
// body has arrived. Closing that buffer's write side with an error makes cpprest's next write
// into it fail inside its own read chain: cpprest then completes the body with the error,
// issues no further read, sends the answer, and with `Connection: close` shuts the connection.
// (Completing the body from here instead raced with a read cpprest had in flight on another
// thread: ASan caught the listener dying in epoll_reactor::start_op, 2 runs in 8.) The cost: a
// single chunk is still buffered whole before cpprest hands it on, so a refusal lands at the
// next chunk boundary.
bool body_pending(const http_request& request) {
  return !pplx::create_task(request._get_impl()->_get_data_available()).is_done();
}

void stop_reading_body(const http_request& request) {
  auto buffer = request.body().streambuf();
  (void)buffer.close(std::ios_base::out, std::make_exception_ptr(std::runtime_error("request refused before its body")));
}

// Reads a body piece by piece into a string, stopping as soon as it passes `limit`, so no
// request makes the edge hold more than `limit` + one piece of it.
class BoundedBodyReader : public std::enable_shared_from_this<BoundedBodyReader> {
 public:
  enum class Outcome { complete, too_large, broken };
  using Done = std::function<void(Outcome, std::string)>;

  BoundedBodyReader(http_request request, std::size_t limit, Done done)
      : request_(std::move(request)), body_stream_(request_.body().streambuf()), limit_(limit), done_(std::move(done)) {}

  void read_next() {
    auto self = shared_from_this();
    piece_.resize(std::min(kBodyReadPiece, limit_ + 1 - body_.size()));
    body_stream_.getn(reinterpret_cast<std::uint8_t*>(piece_.data()), piece_.size())
        .then([self](pplx::task<std::size_t> read) {
          std::size_t n = 0;
          try {
            n = read.get();
          } catch (const std::exception&) {
            self->done_(Outcome::broken, {});
            return;
          }
          if (n == 0) {
            self->finish();
            return;
          }
          self->body_.append(self->piece_.data(), n);
          if (self->body_.size() > self->limit_) {
            self->done_(Outcome::too_large, {});
            return;
          }
          self->read_next();
        });
  }

 private:
  // The body stream reads as ended also when the client broke off: the request's completion
  // tells which.
  void finish() {
    auto self = shared_from_this();
    pplx::create_task(request_._get_impl()->_get_data_available()).then([self](pplx::task<utility::size64_t> t) {
      try {
        t.get();
      } catch (const std::exception&) {
        self->done_(Outcome::broken, {});
        return;
      }
      self->done_(Outcome::complete, std::move(self->body_));
    });
  }

  http_request request_;  // keeps the body stream's owner alive while reading
  concurrency::streams::streambuf<std::uint8_t> body_stream_;
  std::size_t limit_;
  Done done_;
  std::string body_;
  std::string piece_;
};

}  // namespace

struct HttpServer::Impl {
  ApiHandler& handler;
  const Logger& log;
  HttpServerOptions options;
  std::unique_ptr<http_listener> listener = nullptr;
  std::unique_ptr<FrontGuard> guard = nullptr;
  // Uploads read their body on threads of their own: blocking a pool thread on a slow
  // client would starve the (one per core) pool that also receives the bytes.
  struct Upload {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };
  std::mutex uploads_mutex{};
  std::vector<Upload> uploads{};
  std::atomic<std::size_t> active_uploads{0};

  // Joins finished upload threads so their stacks are returned (caller holds uploads_mutex).
  void reap_uploads() {
    for (auto it = uploads.begin(); it != uploads.end();) {
      if (it->done->load()) {
        it->thread.join();
        it = uploads.erase(it);
      } else {
        ++it;
      }
    }
  }

  void reply(http_request& request, const ApiResponse& r, bool close = false) {
    http_response response(static_cast<web::http::status_code>(r.status));
    for (const auto& [k, v] : r.headers) response.headers().add(k, v);
    if (close) response.headers().add("Connection", "close");
    response.set_body(r.body, r.content_type);
    request.reply(response).then([](pplx::task<void> t) {
      try {
        t.get();
      } catch (...) {  // the client went away; nothing to do
      }
    });
  }

  // Answers without reading (the rest of) the body: see stop_reading_body. A body of a
  // declared length within max_body_bytes is still read (that much is bounded): shutting the
  // connection on unread bytes makes the kernel reset it, and the client may lose the answer.
  void refuse(http_request& request, const ApiResponse& r) {
    const auto& headers = request.headers();
    bool bounded = !headers.has(web::http::header_names::transfer_encoding) &&
                   headers.content_length() <= options.max_body_bytes;
    bool stop = body_pending(request) && !bounded;
    if (stop) stop_reading_body(request);
    reply(request, r, stop);
  }

  void refuse_too_large(http_request& request, const std::string& path, std::uint64_t limit,
                        std::chrono::steady_clock::time_point started) {
    handler.count(request.method(), path, 413, std::chrono::steady_clock::now() - started);
    refuse(request, ApiHandler::error_response(413, "request body larger than " + std::to_string(limit) + " bytes"));
  }

  void serve_upload(http_request request) {
    if (active_uploads.fetch_add(1) >= kMaxConcurrentUploads) {
      --active_uploads;
      auto r = ApiHandler::error_response(503, "too many uploads at once; retry later");
      r.headers.push_back({"Retry-After", "5"});
      refuse(request, r);
      return;
    }
    std::lock_guard lock(uploads_mutex);
    reap_uploads();
    auto done = std::make_shared<std::atomic<bool>>(false);
    uploads.push_back({std::thread([this, request, done]() mutable {
      ApiRequest api = to_api_request(request);
      auto body = request.body().streambuf();
      api.read_body = [body, request](char* out, std::size_t cap) mutable -> Result<std::size_t> {
        try {
          auto n = body.getn(reinterpret_cast<std::uint8_t*>(out), cap).get();
          // The stream also ends when the client broke off: the request's completion tells which.
          if (n == 0) pplx::create_task(request._get_impl()->_get_data_available()).get();
          return n;
        } catch (const std::exception& e) {
          return make_error(ErrorKind::invalid_input, std::string("the upload was cut off: ") + e.what());
        }
      };
      // An upload refused half-way (over its limit, a bad digest) must not wait for the rest.
      refuse(request, handler.handle(api));
      --active_uploads;
      done->store(true);
    }), done});
  }

  void serve(http_request request) {
    auto started = std::chrono::steady_clock::now();
    ApiRequest head = to_api_request(request);
    // Authentication and routing are decided on the head alone: no body is read for a
    // request that would be refused anyway.
    if (auto refusal = handler.refuse_early(head)) {
      refuse(request, *refusal);
      return;
    }
    bool streams = handler.streams_body(head.method, head.path);
    std::uint64_t limit = streams ? handler.max_streamed_body() : options.max_body_bytes;
    if (request.headers().content_length() > limit) {  // refuse an oversize body before reading it
      refuse_too_large(request, head.path, limit, started);
      return;
    }
    if (streams) {
      serve_upload(std::move(request));
      return;
    }
    // Chunked bodies carry no length up front: the limit holds while reading.
    auto reader = std::make_shared<BoundedBodyReader>(
        request, options.max_body_bytes,
        [this, request, head = std::move(head), started](BoundedBodyReader::Outcome outcome,
                                                          std::string body) mutable {
          switch (outcome) {
            case BoundedBodyReader::Outcome::too_large:
              refuse_too_large(request, head.path, options.max_body_bytes, started);
              return;
            case BoundedBodyReader::Outcome::broken:
              refuse(request, ApiHandler::error_response(400, "could not read the request body"));
              return;
            case BoundedBodyReader::Outcome::complete:
              head.body = std::move(body);
              reply(request, handler.handle(head));
              return;
          }
        });
    reader->read_next();
  }
};

HttpServer::HttpServer(ApiHandler& handler, const Logger& log, HttpServerOptions options)
    : impl_(new Impl{handler, log, std::move(options)}) {}

HttpServer::~HttpServer() { stop(); }

std::string HttpServer::base_url() const {
  return std::string(impl_->options.tls_cert ? "https://" : "http://") + impl_->options.listen;
}

Status HttpServer::start() {
  try {
    crossplat::threadpool::initialize_with_threads(static_cast<std::size_t>(impl_->options.threads));
  } catch (...) {  // already initialised by an earlier server in this process
  }
  // The library listens on a loopback port only the guard talks to; the guard owns the
  // public address (and its TLS).
  std::string why;
  for (int attempt = 0; attempt < 5 && !impl_->listener; ++attempt) {
    auto port = free_loopback_port();
    if (!port) return port.error();
    try {
      impl_->listener =
          std::make_unique<http_listener>(web::uri("http://127.0.0.1:" + std::to_string(*port) + "/"), http_listener_config{});
      impl_->listener->support([this](http_request request) { impl_->serve(std::move(request)); });
      impl_->listener->open().wait();
      FrontGuardOptions edge;
      edge.listen = impl_->options.listen;
      edge.tls_cert = impl_->options.tls_cert;
      edge.tls_key = impl_->options.tls_key;
      edge.max_head_bytes = impl_->options.max_head_bytes;
      edge.head_timeout = impl_->options.head_timeout;
      edge.idle_timeout = impl_->options.idle_timeout;
      edge.max_connections = impl_->options.max_connections;
      edge.max_connections_per_client = impl_->options.max_connections_per_client;
      edge.native = impl_->options.native;
      impl_->guard = std::make_unique<FrontGuard>(impl_->log, std::move(edge));
      if (auto bound = impl_->guard->start(*port); !bound) {
        impl_->guard.reset();
        try {
          impl_->listener->close().wait();
        } catch (...) {
        }
        impl_->listener.reset();
        return bound.error();
      }
    } catch (const std::exception& e) {  // the port was taken in between: another one
      why = e.what();
      impl_->listener.reset();
    }
  }
  if (!impl_->listener)
    return make_error(ErrorKind::unavailable, "cannot start the HTTP library on a loopback port: " + why);
  return Ok{};
}

std::size_t HttpServer::max_connections() const { return impl_->guard ? impl_->guard->max_connections() : 0; }

void HttpServer::stop() {
  if (impl_->guard) impl_->guard->stop();  // no new requests; open connections end
  if (!impl_->listener) return;
  try {
    impl_->listener->close().wait();
  } catch (...) {
  }
  std::vector<Impl::Upload> uploads;
  {
    std::lock_guard lock(impl_->uploads_mutex);
    uploads.swap(impl_->uploads);
  }
  for (auto& u : uploads) u.thread.join();  // closing the listener ended their bodies
  impl_->listener.reset();
  impl_->guard.reset();
}

}  // namespace provisioner
