#include "controller/api/http_server.hpp"

#include <atomic>
#include <mutex>
#include <thread>
#include <vector>

#include <boost/asio/ssl.hpp>
#include <cpprest/http_listener.h>
#include <cpprest/uri.h>
#include <pplx/threadpool.h>

#include "controller/api/api_handler.hpp"
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

}  // namespace

struct HttpServer::Impl {
  ApiHandler& handler;
  const Logger& log;
  HttpServerOptions options;
  std::unique_ptr<http_listener> listener;
  // Uploads read their body on threads of their own: blocking a pool thread on a slow
  // client would starve the (one per core) pool that also receives the bytes.
  struct Upload {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };
  std::mutex uploads_mutex;
  std::vector<Upload> uploads;
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

  void serve_upload(http_request request) {
    auto method = request.method();
    auto started = std::chrono::steady_clock::now();
    if (request.headers().content_length() > handler.max_streamed_body()) {
      handler.count(method, "oversize", 413, std::chrono::steady_clock::now() - started);
      reply(request, ApiHandler::error_response(413, "upload larger than " +
                                                         std::to_string(handler.max_streamed_body()) + " bytes"),
            true);
      return;
    }
    if (active_uploads.fetch_add(1) >= kMaxConcurrentUploads) {
      --active_uploads;
      auto r = ApiHandler::error_response(503, "too many uploads at once; retry later");
      r.headers.push_back({"Retry-After", "5"});
      reply(request, r, true);
      return;
    }
    std::lock_guard lock(uploads_mutex);
    reap_uploads();
    auto done = std::make_shared<std::atomic<bool>>(false);
    uploads.push_back({std::thread([this, request, done]() mutable {
      ApiRequest api = to_api_request(request);
      auto body = request.body().streambuf();
      api.read_body = [body](char* out, std::size_t cap) mutable -> Result<std::size_t> {
        try {
          return body.getn(reinterpret_cast<std::uint8_t*>(out), cap).get();
        } catch (const std::exception& e) {
          return make_error(ErrorKind::invalid_input, std::string("the upload was cut off: ") + e.what());
        }
      };
      reply(request, handler.handle(api));
      --active_uploads;
      done->store(true);
    }), done});
  }

  void serve(http_request request) {
    auto method = request.method();
    auto started = std::chrono::steady_clock::now();
    if (handler.streams_body(method, web::uri::decode(request.request_uri().path()))) {
      serve_upload(std::move(request));
      return;
    }
    // Refuse an oversize body before reading it.
    auto declared = request.headers().content_length();
    if (declared > options.max_body_bytes) {
      auto r = ApiHandler::error_response(413, "request body larger than " + std::to_string(options.max_body_bytes) +
                                                   " bytes");
      handler.count(method, "oversize", 413, std::chrono::steady_clock::now() - started);
      reply(request, r, true);
      return;
    }
    request.extract_vector().then([this, request, method, started](pplx::task<std::vector<unsigned char>> body_task) mutable {
      std::vector<unsigned char> body;
      try {
        body = body_task.get();
      } catch (const std::exception& e) {
        reply(request, ApiHandler::error_response(400, "could not read the request body"), true);
        return;
      }
      if (body.size() > options.max_body_bytes) {  // chunked bodies carry no length up front
        handler.count(method, "oversize", 413, std::chrono::steady_clock::now() - started);
        reply(request, ApiHandler::error_response(413, "request body larger than " +
                                                           std::to_string(options.max_body_bytes) + " bytes"),
              true);
        return;
      }
      ApiRequest api = to_api_request(request);
      api.body.assign(body.begin(), body.end());
      reply(request, handler.handle(api));
    });
  }
};

HttpServer::HttpServer(ApiHandler& handler, const Logger& log, HttpServerOptions options)
    : impl_(new Impl{handler, log, std::move(options), nullptr}) {}

HttpServer::~HttpServer() { stop(); }

std::string HttpServer::base_url() const {
  return std::string(impl_->options.tls_cert ? "https://" : "http://") + impl_->options.listen;
}

Status HttpServer::start() {
  try {
    crossplat::threadpool::initialize_with_threads(static_cast<std::size_t>(impl_->options.threads));
  } catch (...) {  // already initialised by an earlier server in this process
  }
  http_listener_config config;
  if (impl_->options.tls_cert) {
    auto cert = impl_->options.tls_cert->string();
    auto key = impl_->options.tls_key.value_or(*impl_->options.tls_cert).string();
    config.set_ssl_context_callback([cert, key](boost::asio::ssl::context& ctx) {
      ctx.set_options(boost::asio::ssl::context::default_workarounds | boost::asio::ssl::context::no_sslv2 |
                      boost::asio::ssl::context::no_sslv3 | boost::asio::ssl::context::no_tlsv1 |
                      boost::asio::ssl::context::no_tlsv1_1);
      ctx.use_certificate_chain_file(cert);
      ctx.use_private_key_file(key, boost::asio::ssl::context::pem);
    });
  }
  try {
    impl_->listener = std::make_unique<http_listener>(web::uri(base_url() + "/"), config);
    impl_->listener->support([this](http_request request) { impl_->serve(std::move(request)); });
    impl_->listener->open().wait();
  } catch (const std::exception& e) {
    impl_->listener.reset();
    return make_error(ErrorKind::unavailable, "cannot listen on " + impl_->options.listen + ": " + e.what());
  }
  return Ok{};
}

void HttpServer::stop() {
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
}

}  // namespace provisioner
