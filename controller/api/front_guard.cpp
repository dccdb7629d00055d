#include "controller/api/front_guard.hpp"

#include "controller/api/native_route.hpp"
#include "controller/api/request_framing.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <string_view>
#include <thread>
#include <variant>

#include "controller/artifacts/artifact_server.hpp"  // connection_cap
#include "controller/artifacts/connection_admission.hpp"
#include "controller/artifacts/http_request.hpp"  // iequals, trim_ows
#include "controller/logging/logger.hpp"

namespace provisioner {

using artifacts::ConnectionAdmission;

namespace {

using Clock = std::chrono::steady_clock;

constexpr std::size_t kPiece = 64 * 1024;        // the largest chunk passed on to the library
constexpr std::size_t kBufferCap = 128 * 1024;   // bytes held per direction before reading stops
constexpr std::size_t kMaxChunkLine = 4096;      // chunk size + extensions
constexpr auto kLingerTotal = std::chrono::milliseconds(2000);
constexpr std::size_t kThreadStack = 1 << 20;    // per connection; the frames are small, buffers on the heap

// A byte queue consumed from the front without moving the rest on every write.
class Bytes {
 public:
  std::size_t size() const { return data_.size() - off_; }
  bool empty() const { return size() == 0; }
  const char* data() const { return data_.data() + off_; }
  void append(std::string_view s) { data_.append(s); }
  void consume(std::size_t n) {
    off_ += n;
    if (off_ == data_.size()) {
      data_.clear();
      off_ = 0;
    } else if (off_ > 64 * 1024 && off_ > data_.size() / 2) {
      data_.erase(0, off_);
      off_ = 0;
    }
  }
  std::string_view view() const { return {data(), size()}; }

 private:
  std::string data_;
  std::size_t off_ = 0;
};

// An answer of the guard's own (the request never reached the API), always closing.
std::string canned(int status, std::string_view reason, std::string_view why) {
  std::string body = R"({"error":")" + std::string(why) + "\"}";
  return "HTTP/1.1 " + std::to_string(status) + " " + std::string(reason) +
         "\r\nServer: provisioner\r\nContent-Type: application/json\r\nContent-Length: " +
         std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
}

}  // namespace

namespace {

std::string hex(std::size_t n) {
  char buf[24];
  int len = std::snprintf(buf, sizeof buf, "%zx", n);
  return std::string(buf, static_cast<std::size_t>(len));
}

void set_nonblocking(int fd) { ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK); }

}  // namespace

struct FrontGuard::Impl {
  Impl(const Logger& l, FrontGuardOptions o) : log(l), opt(std::move(o)) {}
  const Logger& log;
  FrontGuardOptions opt;
  std::uint16_t backend_port = 0;
  int listen_fd = -1;
  int stop_fd = -1;  // an eventfd: readable once stop() began, wakes every poll
  SSL_CTX* ssl_ctx = nullptr;
  std::thread acceptor;
  std::atomic<bool> stopping{false};

  ConnectionAdmission admission;
  std::mutex mutex;  // for `idle`
  std::condition_variable idle;
  int spare_fd = -1;

  ~Impl() {
    if (ssl_ctx) SSL_CTX_free(ssl_ctx);
    if (listen_fd >= 0) ::close(listen_fd);
    if (stop_fd >= 0) ::close(stop_fd);
    if (spare_fd >= 0) ::close(spare_fd);
  }

  // Under `mutex`, so that stop() cannot see the count reach zero and destroy `idle` while
  // this thread is still notifying it (TSan caught that).
  void release(const std::string& client) {
    std::lock_guard lock(mutex);
    if (admission.release(client) == 0) idle.notify_all();
  }

  // Over a cap: a clear 503 (plain HTTP; TLS has no handshake to answer in), then close.
  void refuse_connection(int fd, const char* why) const {
    if (!ssl_ctx) {
      char sink[4096];
      [[maybe_unused]] auto r = ::recv(fd, sink, sizeof sink, MSG_DONTWAIT);
      auto msg = canned(503, "Service Unavailable", why);
      [[maybe_unused]] auto w = ::send(fd, msg.data(), msg.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    }
    ::close(fd);
  }

  Status load_tls() {
    ssl_ctx = SSL_CTX_new(TLS_server_method());
    if (!ssl_ctx) return make_error(ErrorKind::internal, "cannot create a TLS context");
    SSL_CTX_set_min_proto_version(ssl_ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ssl_ctx, SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_mode(ssl_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    auto cert = opt.tls_cert->string(), key = opt.tls_key.value_or(*opt.tls_cert).string();
    if (SSL_CTX_use_certificate_chain_file(ssl_ctx, cert.c_str()) != 1)
      return make_error(ErrorKind::invalid_input, "cannot load the API's TLS certificate " + cert);
    if (SSL_CTX_use_PrivateKey_file(ssl_ctx, key.c_str(), SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ssl_ctx) != 1)
      return make_error(ErrorKind::invalid_input, "cannot load the API's TLS key (path given in config)");
    return Ok{};
  }

  Result<std::uint16_t> listen_on() {
    auto colon = opt.listen.rfind(':');
    if (colon == std::string::npos) return make_error(ErrorKind::invalid_input, "listen must be host:port");
    std::string host = opt.listen.substr(0, colon), port = opt.listen.substr(colon + 1);
    if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    addrinfo* found = nullptr;
    if (int rc = ::getaddrinfo(host.empty() ? nullptr : host.c_str(), port.c_str(), &hints, &found); rc != 0)
      return make_error(ErrorKind::invalid_input, "cannot resolve " + opt.listen + ": " + ::gai_strerror(rc));
    std::string why = "no address";
    for (auto* a = found; a; a = a->ai_next) {
      int fd = ::socket(a->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (fd < 0) continue;
      int one = 1;
      ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
      if (::bind(fd, a->ai_addr, a->ai_addrlen) == 0 && ::listen(fd, SOMAXCONN) == 0) {
        listen_fd = fd;
        break;
      }
      why = std::strerror(errno);
      ::close(fd);
    }
    ::freeaddrinfo(found);
    if (listen_fd < 0) return make_error(ErrorKind::unavailable, "cannot listen on " + opt.listen + ": " + why);
    sockaddr_storage bound{};
    socklen_t len = sizeof bound;
    ::getsockname(listen_fd, reinterpret_cast<sockaddr*>(&bound), &len);
    return ntohs(bound.ss_family == AF_INET ? reinterpret_cast<sockaddr_in*>(&bound)->sin_port
                                            : reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port);
  }

  void accept_loop() {
    while (!stopping.load()) {
      pollfd p[2] = {{listen_fd, POLLIN, 0}, {stop_fd, POLLIN, 0}};
      if (::poll(p, 2, -1) < 0) continue;
      if (p[1].revents) return;
      sockaddr_storage peer{};
      socklen_t len = sizeof peer;
      int fd = ::accept4(listen_fd, reinterpret_cast<sockaddr*>(&peer), &len, SOCK_CLOEXEC);
      if (fd < 0) {
        if ((errno == EMFILE || errno == ENFILE) && spare_fd >= 0) {
          // Out of descriptors: free the spare, accept and refuse one, take the spare back.
          ::close(spare_fd);
          int victim = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
          if (victim >= 0) refuse_connection(victim, "the API is out of file descriptors");
          spare_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
        }
        continue;
      }
      std::string client = ConnectionAdmission::client_key(peer);
      if (const char* why = admission.admit(client, "the API is at its connection limit")) {
        refuse_connection(fd, why);
        continue;
      }
      auto* job = new ConnJob{this, fd, std::move(client)};
      pthread_attr_t attr;
      pthread_attr_init(&attr);
      pthread_attr_setstacksize(&attr, kThreadStack);
      pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
      pthread_t thread;
      if (pthread_create(&thread, &attr, &Impl::conn_main, job) != 0) {
        release(job->client);
        ::close(fd);
        delete job;
      }
      pthread_attr_destroy(&attr);
    }
  }

  struct ConnJob {
    Impl* impl;
    int fd;
    std::string client;
  };

  static void* conn_main(void* arg) {
    std::unique_ptr<ConnJob> job(static_cast<ConnJob*>(arg));
    sigset_t set;  // OpenSSL's socket writes raise SIGPIPE on a reset peer: make it EPIPE
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    {
      Connection c(*job->impl, job->fd);
      c.run();
    }
    job->impl->release(job->client);
    return nullptr;
  }

  // One client connection and its connection to the library, on a thread of its own.
  class Connection {
   public:
    Connection(Impl& impl, int fd) : impl_(impl), opt_(impl.opt), client_(fd) {
      int one = 1;
      ::setsockopt(client_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      set_nonblocking(client_);
    }
    ~Connection() {
      if (ssl_) SSL_free(ssl_);
      if (backend_ >= 0) ::close(backend_);
      ::close(client_);
    }

    void run() {
      auto now = Clock::now();
      head_deadline_ = now + opt_.head_timeout;  // the first request's head counts from accept
      head_started_ = true;
      last_progress_ = now;
      if (impl_.ssl_ctx && !handshake()) return;
      for (;;) {
        advance();
        if (finished()) break;
        if (!wait_and_move()) return;  // stop, a timeout, or a broken client connection
      }
      linger();
    }

   private:
    enum class Parse { head, length_body, chunk_line, chunk_data, chunk_end, trailers, stopped };

    bool handshake() {
      ssl_ = SSL_new(impl_.ssl_ctx);
      if (!ssl_) return false;
      SSL_set_fd(ssl_, client_);
      for (;;) {
        ERR_clear_error();
        int r = SSL_accept(ssl_);
        if (r == 1) return true;
        short events;
        switch (SSL_get_error(ssl_, r)) {
          case SSL_ERROR_WANT_READ: events = POLLIN; break;
          case SSL_ERROR_WANT_WRITE: events = POLLOUT; break;
          default: return false;
        }
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(head_deadline_ - Clock::now()).count();
        if (left <= 0) return false;
        pollfd p[2] = {{client_, events, 0}, {impl_.stop_fd, POLLIN, 0}};
        if (::poll(p, 2, static_cast<int>(left)) <= 0 || p[1].revents) return false;
      }
    }

    // Refuses at a request boundary (earlier answers may still be on their way: they go
    // first) or in the middle of a body (the library's side is cut off at once).
    void refuse(const EdgeRefusal& r, bool mid_request) {
      refusal_ = canned(r.status, r.reason, r.why);
      parse_ = Parse::stopped;
      if (mid_request && backend_ >= 0) {
        ::close(backend_);
        backend_ = -1;
        backend_eof_ = true;
        to_backend_ = Bytes();
      }
      if (r.status != 408)
        impl_.log.debug("API request refused at the edge", {{"status", std::to_string(r.status)}, {"why", r.why}});
    }

    bool connect_backend() {
      if (backend_ >= 0) return true;
      int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (fd < 0) return false;
      sockaddr_in addr{};
      addr.sin_family = AF_INET;
      addr.sin_port = htons(impl_.backend_port);
      addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
        ::close(fd);
        return false;
      }
      int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      set_nonblocking(fd);
      backend_ = fd;
      return true;
    }

    std::size_t backend_room() const {
      return to_backend_.size() >= kBufferCap ? 0 : kBufferCap - to_backend_.size();
    }

    // Moves what the client sent, as far as it is complete, into what goes to the library.
    void advance() {
      for (;;) {
        switch (parse_) {
          case Parse::head: {
            std::size_t skip = 0;  // empty lines between requests are allowed and dropped
            while (in_.size() >= skip + 2 && in_.compare(skip, 2, "\r\n") == 0) skip += 2;
            in_.erase(0, skip);
            if (in_.empty()) return;
            if (backend_eof_) {  // the library closed the connection: no request after that
              parse_ = Parse::stopped;
              return;
            }
            // One request at a time: the library never answers a pipelined second one.
            if (answer_.pending()) return;
            // A TLS ClientHello on the plain port: say so at once instead of waiting out the
            // head timeout (registry clients try HTTPS first, then fall back to HTTP).
            if (!ssl_ && in_.front() == '\x16') {
              refuse({400, "Bad Request", "this port speaks plain HTTP, not TLS"}, false);
              return;
            }
            if (!head_started_) {
              head_started_ = true;
              head_deadline_ = Clock::now() + opt_.head_timeout;
            }
            auto end = in_.find("\r\n\r\n");
            if (end == std::string::npos || end + 4 > opt_.max_head_bytes) {
              if (in_.size() > opt_.max_head_bytes || (end != std::string::npos))
                refuse({431, "Request Header Fields Too Large", "request head too large"}, false);
              return;
            }
            auto checked = check_request_head(std::string_view(in_).substr(0, end + 4));
            if (auto* r = std::get_if<EdgeRefusal>(&checked)) {
              refuse(*r, false);
              return;
            }
            if (opt_.native && opt_.native->handles(target_path(std::string_view(in_).substr(0, end)))) {
              // Answers before it go out first; then the route has the connection to itself.
              if (!to_client_.empty() || answer_.pending()) return;
              if (!serve_native(end + 4, std::get<Framing>(checked))) {
                parse_ = Parse::stopped;
                last_queued_ = true;  // close (lingering) once everything is out
                return;
              }
              head_started_ = false;
              break;
            }
            if (!connect_backend()) {
              refuse({502, "Bad Gateway", "the API is not reachable behind its edge"}, false);
              return;
            }
            to_backend_.append(std::string_view(in_).substr(0, end + 4));
            answer_.expect(in_.compare(0, 5, "HEAD ") == 0);
            in_.erase(0, end + 4);
            head_started_ = false;
            const auto& f = std::get<Framing>(checked);
            if (f.kind == Framing::kLength) {
              parse_ = Parse::length_body;
              remaining_ = f.length;
            } else if (f.kind == Framing::kChunked) {
              parse_ = Parse::chunk_line;
            }
            break;
          }
          case Parse::length_body: {
            std::size_t n = std::min<std::uint64_t>({in_.size(), remaining_, backend_room()});
            if (n == 0) return;
            to_backend_.append(std::string_view(in_).substr(0, n));
            in_.erase(0, n);
            remaining_ -= n;
            if (remaining_ == 0) parse_ = Parse::head;
            break;
          }
          case Parse::chunk_line: {
            auto end = in_.find("\r\n");
            if (end == std::string::npos || end > kMaxChunkLine) {
              if (in_.size() > kMaxChunkLine) refuse({400, "Bad Request", "chunk size line too long"}, true);
              return;
            }
            auto size = parse_chunk_size(std::string_view(in_).substr(0, end));
            if (!size) {
              refuse({400, "Bad Request", "malformed chunk size"}, true);
              return;
            }
            in_.erase(0, end + 2);
            if (*size == 0) {
              parse_ = Parse::trailers;
              trailer_bytes_ = 0;
            } else {
              parse_ = Parse::chunk_data;
              remaining_ = *size;
            }
            break;
          }
          case Parse::chunk_data: {
            // Re-framed into pieces of at most kPiece: the library buffers a chunk whole.
            std::size_t room = backend_room();
            if (room <= 32) return;
            std::size_t n = std::min<std::uint64_t>({in_.size(), remaining_, kPiece, room - 32});
            if (n == 0) return;
            to_backend_.append(hex(n) + "\r\n");
            to_backend_.append(std::string_view(in_).substr(0, n));
            to_backend_.append("\r\n");
            in_.erase(0, n);
            remaining_ -= n;
            if (remaining_ == 0) parse_ = Parse::chunk_end;
            break;
          }
          case Parse::chunk_end:
            if (in_.size() < 2) return;
            if (in_.compare(0, 2, "\r\n") != 0) {
              refuse({400, "Bad Request", "chunk data longer than its size"}, true);
              return;
            }
            in_.erase(0, 2);
            parse_ = Parse::chunk_line;
            break;
          case Parse::trailers: {
            // Trailer fields are dropped (a proxy may); their size is bounded like a head's.
            auto end = in_.find("\r\n");
            if (end == std::string::npos) {
              if (trailer_bytes_ + in_.size() > opt_.max_head_bytes)
                refuse({431, "Request Header Fields Too Large", "chunked trailers too large"}, true);
              return;
            }
            trailer_bytes_ += end + 2;
            if (trailer_bytes_ > opt_.max_head_bytes) {
              refuse({431, "Request Header Fields Too Large", "chunked trailers too large"}, true);
              return;
            }
            bool last = end == 0;
            in_.erase(0, end + 2);
            if (last) {
              to_backend_.append("0\r\n\r\n");
              parse_ = Parse::head;
            }
            break;
          }
          case Parse::stopped: return;
        }
      }
    }

    // The path of a request line's target (absolute form reduced), without its query.
    static std::string_view target_path(std::string_view head) {
      auto line = head.substr(0, head.find("\r\n"));
      auto sp1 = line.find(' ');
      if (sp1 == std::string_view::npos) return {};
      auto target = line.substr(sp1 + 1, line.rfind(' ') - sp1 - 1);
      return NativeRequest{{}, target, {}, {}, false, {}}.path();
    }

    // One request to a native route, served here on this thread. False: close afterwards.
    bool serve_native(std::size_t head_len, Framing framing) {
      std::string head = in_.substr(0, head_len);
      in_.erase(0, head_len);
      auto line_end = head.find("\r\n");
      auto line = std::string_view(head).substr(0, line_end);
      auto sp1 = line.find(' '), sp2 = line.rfind(' ');
      NativeRequest req;
      req.method = line.substr(0, sp1);
      req.target = line.substr(sp1 + 1, sp2 - sp1 - 1);
      req.head = head;
      req.framing = framing;
      req.tls = ssl_ != nullptr;
      req.client = client_address();
      Exchange ex(*this, framing, req.header("expect").has_value() &&
                                      artifacts::iequals(*req.header("expect"), "100-continue"));
      bool keep = opt_.native->serve(req, ex);
      last_progress_ = Clock::now();
      bool http10 = line.ends_with("HTTP/1.0");
      auto conn = req.header("connection");
      bool close = conn && artifacts::iequals(*conn, "close");
      return keep && !ex.broken() && ex.body_complete() && !http10 && !close;
    }

    std::string client_address() const {
      sockaddr_storage peer{};
      socklen_t len = sizeof peer;
      if (::getpeername(client_, reinterpret_cast<sockaddr*>(&peer), &len) != 0) return {};
      return ConnectionAdmission::client_key(peer);
    }

    // Waits until the client socket is ready for `events`; false at stop, a timeout or an error.
    bool wait_client(short events) {
      pollfd p[2] = {{client_, events, 0}, {impl_.stop_fd, POLLIN, 0}};
      int r = ::poll(p, 2, static_cast<int>(opt_.idle_timeout.count()));
      if (r <= 0 || p[1].revents) return false;
      return (p[0].revents & (events | POLLHUP | POLLERR)) != 0;
    }

    // Blocking reads and writes for a native route, over plain TCP or TLS.
    bool fill_blocking() {  // appends at least one byte to in_, or false
      char buf[64 * 1024];
      auto n = read_into(buf, sizeof buf);
      in_.append(buf, n);
      return n > 0;
    }

    std::size_t read_into(char* buf, std::size_t cap) {  // at least one byte, or 0: gone
      cap = std::min<std::size_t>(cap, INT32_MAX);
      for (;;) {
        if (ssl_) {
          ERR_clear_error();
          int r = SSL_read(ssl_, buf, static_cast<int>(cap));
          if (r > 0) return static_cast<std::size_t>(r);
          int e = SSL_get_error(ssl_, r);
          if (e == SSL_ERROR_WANT_READ) {
            if (!wait_client(POLLIN)) return 0;
            continue;
          }
          if (e == SSL_ERROR_WANT_WRITE) {
            if (!wait_client(POLLOUT)) return 0;
            continue;
          }
          client_eof_ = true;
          return 0;
        }
        ssize_t r = ::recv(client_, buf, cap, 0);
        if (r > 0) return static_cast<std::size_t>(r);
        if (r == 0) {
          client_eof_ = true;
          return 0;
        }
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) return 0;
        if (!wait_client(POLLIN)) return 0;
      }
    }

    bool write_blocking(const char* p, std::size_t n) {
      while (n > 0) {
        if (ssl_) {
          ERR_clear_error();
          int r = SSL_write(ssl_, p, static_cast<int>(std::min<std::size_t>(n, 1 << 20)));
          if (r > 0) {
            p += r;
            n -= static_cast<std::size_t>(r);
            continue;
          }
          int e = SSL_get_error(ssl_, r);
          if (e == SSL_ERROR_WANT_WRITE ? wait_client(POLLOUT) : e == SSL_ERROR_WANT_READ ? wait_client(POLLIN) : false)
            continue;
          return false;
        }
        ssize_t r = ::send(client_, p, n, MSG_NOSIGNAL);
        if (r > 0) {
          p += r;
          n -= static_cast<std::size_t>(r);
          continue;
        }
        if (r < 0 && errno == EINTR) continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && wait_client(POLLOUT)) continue;
        return false;
      }
      return true;
    }

    class Exchange final : public NativeExchange {
     public:
      Exchange(Connection& c, Framing f, bool expect_continue)
          : c_(c), framing_(f), continue_(expect_continue) {
        if (f.kind == Framing::kLength) remaining_ = f.length;
        state_ = f.kind == Framing::kChunked ? State::chunk_line : f.length > 0 ? State::data : State::done;
      }
      bool broken() const { return broken_; }
      bool body_complete() const override { return state_ == State::done; }

      Result<std::size_t> read_body(char* buf, std::size_t cap) override {
        if (broken_) return make_error(ErrorKind::unavailable, "the connection is broken");
        if (continue_ && state_ != State::done) {
          continue_ = false;
          static constexpr std::string_view k100 = "HTTP/1.1 100 Continue\r\n\r\n";
          if (!write(k100)) return fail("the client went away");
        }
        for (;;) {
          auto& in = c_.in_;
          switch (state_) {
            case State::done: return std::size_t{0};
            case State::data: {
              if (in.empty()) {
                // Straight into the caller's buffer: a large upload is copied once, not twice.
                auto n = c_.read_into(buf, std::min<std::uint64_t>(remaining_, cap));
                if (n == 0) return fail("the client stopped sending the body");
                remaining_ -= n;
                if (remaining_ == 0) state_ = framing_.kind == Framing::kChunked ? State::chunk_crlf : State::done;
                return n;
              }
              std::size_t n = std::min<std::uint64_t>({in.size(), remaining_, cap});
              std::memcpy(buf, in.data(), n);
              in.erase(0, n);
              remaining_ -= n;
              if (remaining_ == 0) state_ = framing_.kind == Framing::kChunked ? State::chunk_crlf : State::done;
              return n;
            }
            case State::chunk_line: {
              auto end = in.find("\r\n");
              if (end == std::string::npos) {
                if (in.size() > kMaxChunkLine) return fail("chunk size line too long");
                if (!c_.fill_blocking()) return fail("the client stopped sending the body");
                continue;
              }
              auto size = parse_chunk_size(std::string_view(in).substr(0, end));
              if (!size) return fail("malformed chunk size");
              in.erase(0, end + 2);
              if (*size == 0) {
                state_ = State::trailers;
              } else {
                remaining_ = *size;
                state_ = State::data;
              }
              continue;
            }
            case State::chunk_crlf:
              if (in.size() < 2 && !c_.fill_blocking()) return fail("the client stopped sending the body");
              if (in.size() < 2) continue;
              if (in.compare(0, 2, "\r\n") != 0) return fail("chunk data longer than its size");
              in.erase(0, 2);
              state_ = State::chunk_line;
              continue;
            case State::trailers: {
              auto end = in.find("\r\n");
              if (end == std::string::npos) {
                if (trailer_bytes_ + in.size() > c_.opt_.max_head_bytes) return fail("chunked trailers too large");
                if (!c_.fill_blocking()) return fail("the client stopped sending the body");
                continue;
              }
              trailer_bytes_ += end + 2;
              if (trailer_bytes_ > c_.opt_.max_head_bytes) return fail("chunked trailers too large");
              bool last = end == 0;
              in.erase(0, end + 2);
              if (last) state_ = State::done;
              continue;
            }
          }
        }
      }

      bool write(std::string_view bytes) override {
        if (broken_) return false;
        if (!c_.write_blocking(bytes.data(), bytes.size())) broken_ = true;
        return !broken_;
      }

      bool write_file(int fd, std::uint64_t offset, std::uint64_t length) override {
        if (broken_) return false;
        if (c_.ssl_) {
          std::string buf(std::min<std::uint64_t>(length, 256 * 1024), '\0');
          while (length > 0) {
            ssize_t r = ::pread(fd, buf.data(), std::min<std::uint64_t>(length, buf.size()), static_cast<off_t>(offset));
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0 || !write(std::string_view(buf.data(), static_cast<std::size_t>(r)))) return broken_ = true, false;
            offset += static_cast<std::uint64_t>(r);
            length -= static_cast<std::uint64_t>(r);
          }
          return true;
        }
        auto off = static_cast<off_t>(offset);
        while (length > 0) {
          ssize_t r = ::sendfile(c_.client_, fd, &off, std::min<std::uint64_t>(length, 1u << 30));
          if (r > 0) {
            length -= static_cast<std::uint64_t>(r);
            continue;
          }
          if (r < 0 && errno == EINTR) continue;
          if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && c_.wait_client(POLLOUT)) continue;
          return broken_ = true, false;  // r == 0: the file is shorter than it was said to be
        }
        return true;
      }

     private:
      enum class State { data, chunk_line, chunk_crlf, trailers, done };
      Error fail(const char* why) {
        broken_ = true;
        return make_error(ErrorKind::unavailable, why);
      }
      Connection& c_;
      Framing framing_;
      bool continue_;
      State state_;
      std::uint64_t remaining_ = 0;
      std::size_t trailer_bytes_ = 0;
      bool broken_ = false;
    };

    // True when nothing more will be exchanged (what is queued for the client was sent).
    bool finished() {
      if (!to_client_.empty()) return false;
      if (last_queued_) return true;
      if (refusal_) {
        if (backend_ >= 0) return false;  // the library's answers to earlier requests go first
        to_client_.append(*refusal_);
        refusal_.reset();
        last_queued_ = true;
        return false;
      }
      if (backend_eof_) return true;  // the library closed: its last answer is out
      if (client_eof_ && backend_ < 0) return true;
      return false;
    }

    bool want_client_read() const {
      if (client_eof_ || parse_ == Parse::stopped) return false;
      std::size_t limit = parse_ == Parse::head || parse_ == Parse::trailers ? opt_.max_head_bytes + 1 : kPiece;
      return in_.size() < limit && backend_room() > 0;
    }

    // One poll over both sides, then every move it allows. False: give up on the connection.
    bool wait_and_move() {
      // Write what is queued before waiting: a socket is nearly always writable, and a poll
      // just to learn that costs a wake-up per request (measured: bench/api/run.sh).
      if (backend_ >= 0 && !to_backend_.empty()) write_backend_some();
      if (!to_client_.empty() && !tls_write_wants_read_ && !write_client_some()) return false;
      if (finished()) return true;  // the caller sees it too and lingers
      auto now = Clock::now();
      // The library's side, half-closed once the client's side has nothing more to send.
      bool drain_to_backend = (client_eof_ || (parse_ == Parse::stopped && !backend_eof_)) && backend_ >= 0;
      if (drain_to_backend && to_backend_.empty() && !backend_shut_) {
        ::shutdown(backend_, SHUT_WR);
        backend_shut_ = true;
      }
      bool read_client = want_client_read();
      bool pending_tls = read_client && ssl_ && SSL_pending(ssl_) > 0;
      pollfd p[3];
      nfds_t n = 0;
      p[n++] = {impl_.stop_fd, POLLIN, 0};
      short ce = 0;
      if (read_client || tls_write_wants_read_) ce |= POLLIN;
      if (!to_client_.empty() || tls_read_wants_write_) ce |= POLLOUT;
      p[n++] = {ce ? client_ : -1, ce, 0};  // -1: not waited on (a reset peer would spin poll)
      int bi = -1;
      if (backend_ >= 0) {
        short be = 0;
        if (!backend_eof_ && to_client_.size() < kBufferCap) be |= POLLIN;
        if (!to_backend_.empty()) be |= POLLOUT;
        bi = static_cast<int>(n);
        p[n++] = {be ? backend_ : -1, be, 0};
      }
      auto deadline = last_progress_ + opt_.idle_timeout;
      bool head_clock = parse_ == Parse::head && head_started_;
      if (head_clock) deadline = std::min(deadline, head_deadline_);
      if (now >= deadline) {
        if (head_clock && now >= head_deadline_ && !in_.empty()) {
          refuse({408, "Request Timeout", "the request head did not arrive in time"}, false);
          return true;
        }
        return false;  // idle, or no byte of a first request: just close
      }
      auto wait_ms = std::chrono::ceil<std::chrono::milliseconds>(deadline - now).count();
      int ready = ::poll(p, n, pending_tls ? 0 : static_cast<int>(std::min<long long>(wait_ms, 1000)));
      if (ready < 0 && errno != EINTR) return false;
      if (p[0].revents) return false;  // stopping

      // Client -> us.
      if (read_client && (pending_tls || (p[1].revents & (POLLIN | POLLHUP | POLLERR)) || tls_write_wants_read_)) {
        if (!read_client_some()) return false;
      }
      // Us -> client.
      if (!to_client_.empty() && (p[1].revents & (POLLOUT | POLLERR | POLLHUP) || tls_read_wants_write_ || ssl_)) {
        if (!write_client_some()) return false;
      }
      if (bi >= 0 && backend_ >= 0) {
        if (p[bi].revents & (POLLIN | POLLHUP | POLLERR)) read_backend_some();
        if (backend_ >= 0 && !to_backend_.empty() && (p[bi].revents & (POLLOUT | POLLERR | POLLHUP)))
          write_backend_some();
      }
      return true;
    }

    bool read_client_some() {
      char buf[16 * 1024];
      std::size_t limit = std::min(sizeof buf, kBufferCap);
      if (ssl_) {
        tls_read_wants_write_ = false;
        ERR_clear_error();
        int r = SSL_read(ssl_, buf, static_cast<int>(limit));
        if (r > 0) {
          in_.append(buf, static_cast<std::size_t>(r));
          last_progress_ = Clock::now();
          return true;
        }
        switch (SSL_get_error(ssl_, r)) {
          case SSL_ERROR_WANT_READ: return true;
          case SSL_ERROR_WANT_WRITE: tls_read_wants_write_ = true; return true;
          case SSL_ERROR_ZERO_RETURN: client_eof_ = true; return true;
          default: client_eof_ = true; return true;  // a truncated TLS stream ends like EOF
        }
      }
      ssize_t r = ::recv(client_, buf, limit, 0);
      if (r > 0) {
        in_.append(buf, static_cast<std::size_t>(r));
        last_progress_ = Clock::now();
        return true;
      }
      if (r == 0) {
        client_eof_ = true;
        return true;
      }
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return true;
      return false;  // reset
    }

    bool write_client_some() {
      if (ssl_) {
        tls_write_wants_read_ = false;
        ERR_clear_error();
        int r = SSL_write(ssl_, to_client_.data(), static_cast<int>(std::min<std::size_t>(to_client_.size(), INT32_MAX)));
        if (r > 0) {
          to_client_.consume(static_cast<std::size_t>(r));
          last_progress_ = Clock::now();
          return true;
        }
        switch (SSL_get_error(ssl_, r)) {
          case SSL_ERROR_WANT_WRITE: return true;
          case SSL_ERROR_WANT_READ: tls_write_wants_read_ = true; return true;
          default: return false;
        }
      }
      ssize_t r = ::send(client_, to_client_.data(), to_client_.size(), MSG_NOSIGNAL);
      if (r > 0) {
        to_client_.consume(static_cast<std::size_t>(r));
        last_progress_ = Clock::now();
        return true;
      }
      return r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR);
    }

    void read_backend_some() {
      char buf[16 * 1024];
      ssize_t r = ::recv(backend_, buf, sizeof buf, 0);
      if (r > 0) {
        to_client_.append(std::string_view(buf, static_cast<std::size_t>(r)));
        answer_.feed(std::string_view(buf, static_cast<std::size_t>(r)));
        last_progress_ = Clock::now();
        return;
      }
      if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
      backend_eof_ = true;  // closed, or reset after its last answer: what arrived is sent on
      ::close(backend_);
      backend_ = -1;
      to_backend_ = Bytes();
    }

    void write_backend_some() {
      ssize_t r = ::send(backend_, to_backend_.data(), to_backend_.size(), MSG_NOSIGNAL);
      if (r > 0) {
        to_backend_.consume(static_cast<std::size_t>(r));
        last_progress_ = Clock::now();
        return;
      }
      if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
      // The library closed its side (it refused and stopped reading): its answer, if any,
      // is read next; nothing more goes to it.
      to_backend_ = Bytes();
      parse_ = Parse::stopped;
      if (!backend_shut_) {
        ::shutdown(backend_, SHUT_WR);
        backend_shut_ = true;
      }
    }

    // After the last answer: say we are done sending, then read and drop what the client
    // still sends for a moment, so that closing does not reset the connection under the
    // answer (a client still sending a body has not read it yet).
    void linger() {
      if (ssl_) {
        ERR_clear_error();
        SSL_shutdown(ssl_);
      }
      ::shutdown(client_, SHUT_WR);
      auto until = Clock::now() + kLingerTotal;
      char sink[16 * 1024];
      for (;;) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now()).count();
        if (left <= 0) return;
        pollfd p[2] = {{client_, POLLIN, 0}, {impl_.stop_fd, POLLIN, 0}};
        if (::poll(p, 2, static_cast<int>(left)) <= 0 || p[1].revents) return;
        ssize_t r = ::recv(client_, sink, sizeof sink, 0);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) return;
      }
    }

    Impl& impl_;
    const FrontGuardOptions& opt_;
    int client_;
    int backend_ = -1;
    SSL* ssl_ = nullptr;
    bool tls_read_wants_write_ = false, tls_write_wants_read_ = false;
    std::string in_;
    Bytes to_backend_, to_client_;
    Parse parse_ = Parse::head;
    std::uint64_t remaining_ = 0;
    std::size_t trailer_bytes_ = 0;
    bool head_started_ = false;
    Clock::time_point head_deadline_, last_progress_;
    bool client_eof_ = false, backend_eof_ = false, backend_shut_ = false;
    std::optional<std::string> refusal_;
    bool last_queued_ = false;  // the refusal is queued: close once it is out
    ResponseTracker answer_;    // the library's answer to the request in flight
  };
};

FrontGuard::FrontGuard(const Logger& log, FrontGuardOptions options)
    : impl_(std::make_unique<Impl>(log, std::move(options))) {}

FrontGuard::~FrontGuard() { stop(); }

std::size_t FrontGuard::max_connections() const { return impl_->admission.cap(); }

Result<std::uint16_t> FrontGuard::start(std::uint16_t backend_port) {
  auto& d = *impl_;
  if (d.listen_fd >= 0) return make_error(ErrorKind::conflict, "the API edge is already started");
  if (d.opt.max_head_bytes < 1024 || d.opt.head_timeout.count() <= 0 || d.opt.idle_timeout.count() <= 0)
    return make_error(ErrorKind::invalid_input, "API edge options out of range");
  d.backend_port = backend_port;
  rlimit files{};
  ::getrlimit(RLIMIT_NOFILE, &files);
  std::size_t from_limit = artifacts::connection_cap(files.rlim_cur);
  d.admission.configure(d.opt.max_connections == 0 ? from_limit : std::min(d.opt.max_connections, from_limit),
                        d.opt.max_connections_per_client);
  if (d.opt.tls_cert)
    if (auto loaded = d.load_tls(); !loaded) return loaded.error();
  d.stop_fd = ::eventfd(0, EFD_CLOEXEC);
  if (d.stop_fd < 0) return make_error(ErrorKind::internal, "eventfd failed");
  d.spare_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  auto port = d.listen_on();
  if (!port) return port.error();
  d.acceptor = std::thread([&d] { d.accept_loop(); });
  return *port;
}

void FrontGuard::stop() {
  auto& d = *impl_;
  if (d.stopping.exchange(true) || d.stop_fd < 0) return;
  std::uint64_t one = 1;
  [[maybe_unused]] auto w = ::write(d.stop_fd, &one, sizeof one);
  if (d.acceptor.joinable()) d.acceptor.join();
  std::unique_lock lock(d.mutex);
  d.idle.wait(lock, [&d] { return d.admission.active() == 0; });
}

std::optional<std::string_view> NativeRequest::header(std::string_view name) const {
  auto rest = head.substr(std::min(head.size(), head.find("\r\n") + 2));
  while (!rest.empty()) {
    auto eol = rest.find("\r\n");
    auto line = rest.substr(0, eol);
    if (line.empty()) break;
    auto colon = line.find(':');
    if (colon != std::string_view::npos && artifacts::iequals(line.substr(0, colon), name))
      return artifacts::trim_ows(line.substr(colon + 1));
    if (eol == std::string_view::npos) break;
    rest.remove_prefix(eol + 2);
  }
  return std::nullopt;
}

std::string_view NativeRequest::path() const {
  auto t = target;
  if (auto scheme = t.find("://"); scheme != std::string_view::npos && t.front() != '/') {
    auto slash = t.find('/', scheme + 3);
    t = slash == std::string_view::npos ? std::string_view("/") : t.substr(slash);
  }
  return t.substr(0, t.find_first_of("?#"));
}

std::string_view NativeRequest::query() const {
  auto q = target.find('?');
  if (q == std::string_view::npos) return {};
  auto rest = target.substr(q + 1);
  return rest.substr(0, rest.find('#'));
}

Result<std::uint16_t> free_loopback_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return make_error(ErrorKind::internal, "socket failed");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ::close(fd);
    return make_error(ErrorKind::unavailable, std::string("no free loopback port: ") + std::strerror(errno));
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

}  // namespace provisioner
