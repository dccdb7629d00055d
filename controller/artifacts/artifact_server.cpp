#include "controller/artifacts/artifact_server.hpp"

#include "controller/artifacts/connection_admission.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <mutex>
#include <unordered_map>

#include "common/crypto.hpp"
#include "controller/artifacts/http_range.hpp"
#include "controller/artifacts/http_request.hpp"

namespace provisioner::artifacts {
namespace {

using Clock = std::chrono::steady_clock;

constexpr std::size_t kReadChunk = 16 * 1024;
constexpr std::size_t kTlsBuffer = 256 * 1024;
// One sendfile call is capped below 2 GiB by the kernel anyway; smaller keeps loops fair.
constexpr std::uint64_t kSendfileChunk = 1 << 30;

// One contiguous run of bytes to send: from memory (fd < 0) or a file region.
struct Piece {
  std::string mem;
  int fd = -1;
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
  std::uint64_t size() const { return fd < 0 ? mem.size() : length; }
};

// What a URL resolves to: file regions whose concatenation is the representation.
struct Source {
  struct Extent {
    int fd;
    std::uint64_t offset;
    std::uint64_t length;
  };
  std::vector<int> fds;  // owned
  std::vector<Extent> extents;
  std::uint64_t size = 0;
  std::chrono::system_clock::time_point mtime;
  Source() = default;
  Source(Source&& o) noexcept
      : fds(std::move(o.fds)), extents(std::move(o.extents)), size(o.size), mtime(o.mtime) {
    o.fds.clear();
  }
  Source& operator=(Source&&) = delete;
  ~Source() {
    for (int fd : fds) ::close(fd);
  }
  std::vector<int> take_fds() { return std::exchange(fds, {}); }

  void append(std::uint64_t first, std::uint64_t last, std::vector<Piece>& out) const {
    std::uint64_t base = 0, end = last + 1;
    for (const auto& e : extents) {
      std::uint64_t e_end = base + e.length;
      if (e_end > first && base < end) {
        std::uint64_t from = std::max(first, base), to = std::min(end, e_end);
        Piece p;
        p.fd = e.fd;
        p.offset = e.offset + (from - base);
        p.length = to - from;
        out.push_back(std::move(p));
      }
      base = e_end;
      if (base >= end) break;
    }
  }
};

std::chrono::system_clock::time_point mtime_of(const struct stat& st) {
  return std::chrono::system_clock::time_point(std::chrono::seconds(st.st_mtim.tv_sec));
}

enum class Io { progress, want_read, want_write, eof, error, yield };

// Bytes one connection may send per turn before the loop serves the others (a fast reader on
// loopback would otherwise keep one connection writable for the whole of a large file).
constexpr std::uint64_t kWriteBudget = 4 << 20;

struct Conn {
  int fd = -1;
  SSL* ssl = nullptr;
  enum class State { reading, writing } state = State::reading;
  std::string in;
  std::vector<Piece> out;
  std::size_t piece = 0;
  std::uint64_t piece_done = 0;
  std::vector<int> files;  // fds the current response reads from
  bool close_after = false;
  std::string client;  // the peer's address bytes: the key of the per-address count
  // Reading: the connection is dropped at `deadline`. With head_started it is the head
  // deadline (accept or the request's first byte + head_timeout), else the keep-alive bound.
  bool head_started = true;
  Clock::time_point deadline;
  // Writing: the last time bytes went out (stall_timeout counts from here).
  Clock::time_point last_progress;
  // TLS: file bytes staged for SSL_write (sendfile cannot encrypt).
  std::vector<char> tls_buf;
  std::size_t tls_pos = 0, tls_len = 0;

  void finish_response() {
    for (int f : files) ::close(f);
    files.clear();
    out.clear();
    piece = 0;
    piece_done = 0;
    tls_pos = tls_len = 0;
  }
  ~Conn() {
    finish_response();
    if (ssl) {
      SSL_shutdown(ssl);
      SSL_free(ssl);
    }
    if (fd >= 0) ::close(fd);
  }

  Io tls_result(int r) {
    switch (SSL_get_error(ssl, r)) {
      case SSL_ERROR_WANT_READ: return Io::want_read;
      case SSL_ERROR_WANT_WRITE: return Io::want_write;
      case SSL_ERROR_ZERO_RETURN: return Io::eof;
      default: return Io::error;
    }
  }

  Io read_some() {
    char buf[kReadChunk];
    if (ssl) {
      ERR_clear_error();
      int r = SSL_read(ssl, buf, sizeof buf);
      if (r > 0) {
        in.append(buf, static_cast<std::size_t>(r));
        return Io::progress;
      }
      return tls_result(r);
    }
    for (;;) {
      ssize_t r = ::recv(fd, buf, sizeof buf, 0);
      if (r > 0) {
        in.append(buf, static_cast<std::size_t>(r));
        return Io::progress;
      }
      if (r == 0) return Io::eof;
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return Io::want_read;
      return Io::error;
    }
  }

  Io write_mem(const char* p, std::size_t n, bool more, std::size_t& written) {
    if (ssl) {
      ERR_clear_error();
      int r = SSL_write(ssl, p, static_cast<int>(std::min<std::size_t>(n, INT32_MAX)));
      if (r > 0) {
        written = static_cast<std::size_t>(r);
        return Io::progress;
      }
      return tls_result(r);
    }
    for (;;) {
      ssize_t r = ::send(fd, p, n, MSG_NOSIGNAL | (more ? MSG_MORE : 0));
      if (r >= 0) {
        written = static_cast<std::size_t>(r);
        return Io::progress;
      }
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return Io::want_write;
      return Io::error;
    }
  }

  Io write_file(int file, std::uint64_t offset, std::uint64_t length, std::uint64_t& written) {
    if (ssl) {
      if (tls_pos == tls_len) {
        if (tls_buf.empty()) tls_buf.resize(kTlsBuffer);
        ssize_t r;
        do {
          r = ::pread(file, tls_buf.data(), std::min<std::uint64_t>(length, tls_buf.size()),
                      static_cast<off_t>(offset));
        } while (r < 0 && errno == EINTR);
        if (r <= 0) return Io::error;  // 0: the file shrank under us
        tls_pos = 0;
        tls_len = static_cast<std::size_t>(r);
      }
      std::size_t w = 0;
      Io io = write_mem(tls_buf.data() + tls_pos, tls_len - tls_pos, true, w);
      if (io != Io::progress) return io;
      tls_pos += w;
      written = w;
      return Io::progress;
    }
    for (;;) {
      off_t off = static_cast<off_t>(offset);
      ssize_t r = ::sendfile(fd, file, &off, std::min(length, kSendfileChunk));
      if (r > 0) {
        written = static_cast<std::uint64_t>(r);
        return Io::progress;
      }
      if (r == 0) return Io::error;  // the file is shorter than it said
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return Io::want_write;
      return Io::error;
    }
  }

  // Sends what is queued; Io::progress means the response is complete.
  Io write_some() {
    std::uint64_t budget = kWriteBudget;
    while (piece < out.size()) {
      if (budget == 0) return Io::yield;
      const Piece& p = out[piece];
      bool more = piece + 1 < out.size();
      if (p.fd < 0) {
        std::size_t w = 0;
        Io io = write_mem(p.mem.data() + piece_done, p.mem.size() - piece_done, more, w);
        if (io != Io::progress) return io;
        piece_done += w;
        budget -= std::min<std::uint64_t>(budget, w);
      } else {
        std::uint64_t w = 0;
        Io io = write_file(p.fd, p.offset + piece_done, p.length - piece_done, w);
        if (io != Io::progress) return io;
        piece_done += w;
        budget -= std::min<std::uint64_t>(budget, w);
      }
      last_progress = Clock::now();
      if (piece_done == p.size()) {
        ++piece;
        piece_done = 0;
      }
    }
    return Io::progress;
  }
};

}  // namespace

struct ArtifactServer::Impl {
  const ArtifactStore& store;
  const ArtifactServerOptions& opt;
  int listen_fd = -1;
  SSL_CTX* ssl_ctx = nullptr;
  std::string boundary;
  std::atomic<bool> stopping{false};
  // Connections open in total and per client address, shared by the loops.
  ConnectionAdmission admission;
  // Held open so that, when the process is out of descriptors, one can be freed to accept a
  // pending connection and refuse it instead of leaving the listener spinning on EMFILE.
  std::atomic<int> spare_fd{-1};

  struct Loop {
    int ep = -1;
    int wake = -1;
    std::thread thread;
    std::unordered_map<Conn*, std::unique_ptr<Conn>> conns;
    // Connections that yielded with work left: edge-triggered epoll will not report them again.
    std::vector<Conn*> ready;
  };
  std::vector<std::unique_ptr<Loop>> loops;

  Impl(const ArtifactStore& s, const ArtifactServerOptions& o) : store(s), opt(o) {}
  ~Impl() {
    if (listen_fd >= 0) ::close(listen_fd);
    if (int spare = spare_fd.exchange(-1); spare >= 0) ::close(spare);
    for (auto& l : loops) {
      if (l->ep >= 0) ::close(l->ep);
      if (l->wake >= 0) ::close(l->wake);
    }
    if (ssl_ctx) SSL_CTX_free(ssl_ctx);
  }

  // ---- event loop -------------------------------------------------------------------------

  void run(Loop& loop) {
    // sendfile(2) and OpenSSL's socket writes raise SIGPIPE on a reset peer and no flag turns
    // that off; blocking it in our own threads turns it into EPIPE without touching the
    // process-wide disposition.
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);

    auto shortest = std::min({opt.head_timeout, opt.keepalive_timeout, opt.stall_timeout});
    auto sweep_every = std::clamp(shortest / 4, std::chrono::milliseconds(10), std::chrono::milliseconds(250));
    auto next_sweep = Clock::now() + sweep_every;
    epoll_event events[128];
    while (!stopping.load(std::memory_order_relaxed)) {
      int n = ::epoll_wait(loop.ep, events, 128,
                           loop.ready.empty() ? static_cast<int>(sweep_every.count()) : 0);
      if (!loop.ready.empty()) {
        auto again = std::exchange(loop.ready, {});
        for (auto* c : again)
          if (loop.conns.count(c)) drive(loop, c);
      }
      for (int i = 0; i < n; ++i) {
        void* tag = events[i].data.ptr;
        if (tag == &listen_fd) {
          accept_some(loop);
        } else if (tag == &loop.wake) {
          std::uint64_t v;
          [[maybe_unused]] auto r = ::read(loop.wake, &v, sizeof v);
        } else {
          auto* c = static_cast<Conn*>(tag);
          if (events[i].events & EPOLLERR) {
            close_conn(loop, c);
          } else {
            drive(loop, c);
          }
        }
      }
      auto now = Clock::now();
      if (now >= next_sweep) {
        next_sweep = now + sweep_every;
        sweep(loop, now);
      }
    }
    std::vector<Conn*> all;
    for (auto& [c, owned] : loop.conns) all.push_back(c);
    for (auto* c : all) close_conn(loop, c);
  }

  // A clear answer for a connection over a cap, then close. Whatever the client already sent
  // is read first so that closing does not turn into a reset that destroys the answer; over
  // TLS there is no handshake to answer in, so the connection is only closed.
  void refuse(int fd, std::string_view why) const {
    if (!ssl_ctx) {
      char sink[4096];
      [[maybe_unused]] auto r = ::recv(fd, sink, sizeof sink, MSG_DONTWAIT);
      std::string body = "503 Service Unavailable: " + std::string(why) + "\n";
      std::string msg = "HTTP/1.1 503 Service Unavailable\r\nServer: provisioner\r\nRetry-After: 1\r\n"
                        "Content-Type: text/plain; charset=utf-8\r\nContent-Length: " +
                        std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
      [[maybe_unused]] auto w = ::send(fd, msg.data(), msg.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    }
    ::close(fd);
  }

  void accept_some(Loop& loop) {
    for (int i = 0; i < 64; ++i) {
      sockaddr_storage peer{};
      socklen_t peer_len = sizeof peer;
      int fd = ::accept4(listen_fd, reinterpret_cast<sockaddr*>(&peer), &peer_len, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EMFILE || errno == ENFILE) shed_one();
        return;  // EAGAIN (another loop took it) or a transient error
      }
      std::string client = ConnectionAdmission::client_key(peer);
      if (const char* why = admission.admit(client, "the artifact server is at its connection limit")) {
        refuse(fd, why);
        continue;
      }
      int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      auto c = std::make_unique<Conn>();
      c->fd = fd;
      c->client = std::move(client);
      c->deadline = Clock::now() + opt.head_timeout;  // the first request's head, from accept
      if (ssl_ctx) {
        c->ssl = SSL_new(ssl_ctx);
        if (!c->ssl) {  // ~Conn closes fd
          admission.release(c->client);
          continue;
        }
        SSL_set_fd(c->ssl, fd);
        SSL_set_accept_state(c->ssl);
      }
      // Edge-triggered for both directions, registered once: drive() always works until
      // EAGAIN, so no epoll_ctl per request (that churn costs measurable throughput).
      epoll_event ev{};
      ev.events = EPOLLIN | EPOLLOUT | EPOLLET;
      ev.data.ptr = c.get();
      if (::epoll_ctl(loop.ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
        admission.release(c->client);
        continue;
      }
      Conn* raw = c.get();
      loop.conns.emplace(raw, std::move(c));
    }
  }

  // Out of descriptors: free the spare one, accept a pending connection, refuse it, take the
  // spare back. Without this the level-triggered listener would wake every loop forever.
  void shed_one() {
    int spare = spare_fd.exchange(-1);
    if (spare < 0) return;
    ::close(spare);
    int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) refuse(fd, "the artifact server is out of file descriptors");
    spare_fd.store(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  }

  void close_conn(Loop& loop, Conn* c) {
    ::epoll_ctl(loop.ep, EPOLL_CTL_DEL, c->fd, nullptr);
    auto it = loop.conns.find(c);
    if (it == loop.conns.end()) return;
    admission.release(c->client);
    loop.conns.erase(it);
  }

  // Drops the connections past their bound: a request head not complete by its deadline (408
  // when part of one arrived), a keep-alive connection idle too long, a response that stalled.
  void sweep(Loop& loop, Clock::time_point now) {
    std::vector<Conn*> expired;
    for (auto& [c, owned] : loop.conns) {
      bool over = c->state == Conn::State::reading ? now >= c->deadline
                                                   : now - c->last_progress > opt.stall_timeout;
      if (over) expired.push_back(c);
    }
    for (auto* c : expired) {
      if (c->state == Conn::State::reading && c->head_started && !c->in.empty() && !c->ssl) {
        static constexpr std::string_view timeout =
            "HTTP/1.1 408 Request Timeout\r\nServer: provisioner\r\nContent-Type: text/plain; charset=utf-8\r\n"
            "Content-Length: 20\r\nConnection: close\r\n\r\n408 Request Timeout\n";
        [[maybe_unused]] auto w = ::send(c->fd, timeout.data(), timeout.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      }
      close_conn(loop, c);
    }
  }

  // After a response on a keep-alive connection: a pipelined request already begun is held to
  // the head deadline from now; otherwise the connection may idle up to keepalive_timeout.
  void await_next_request(Conn& c) const {
    c.state = Conn::State::reading;
    c.head_started = !c.in.empty();
    c.deadline = Clock::now() + (c.head_started ? opt.head_timeout : opt.keepalive_timeout);
  }

  void drive(Loop& loop, Conn* c) {
    for (int guard = 0; guard < 64; ++guard) {
      if (c->state == Conn::State::writing) {
        Io io = c->write_some();
        if (io == Io::want_read || io == Io::want_write) return;  // the next edge resumes us
        if (io == Io::yield) return loop.ready.push_back(c);
        if (io != Io::progress) return close_conn(loop, c);
        c->finish_response();
        if (c->close_after) return close_conn(loop, c);
        await_next_request(*c);
      }
      if (parse_and_respond(*c)) continue;
      Io io = c->read_some();
      if (io == Io::progress) {
        // The next request's first byte: its head deadline starts now and nothing extends it.
        if (!c->head_started && !c->in.empty()) {
          c->head_started = true;
          c->deadline = Clock::now() + opt.head_timeout;
        }
        continue;
      }
      if (io == Io::want_read || io == Io::want_write) return;
      return close_conn(loop, c);  // eof (a partial request at eof is dropped) or error
    }
    // Many pipelined requests: yield to other connections, resume on the next iteration.
    loop.ready.push_back(c);
  }

  // ---- HTTP -------------------------------------------------------------------------------

  // True when a response was queued (state → writing).
  bool parse_and_respond(Conn& c) {
    auto end = c.in.find("\r\n\r\n");
    if (end == std::string::npos) {
      if (c.in.size() > opt.max_header_bytes) {
        error_response(c, 431, "Request Header Fields Too Large", true, nullptr);
        c.in.clear();
        return true;
      }
      return false;
    }
    if (end + 4 > opt.max_header_bytes) {
      error_response(c, 431, "Request Header Fields Too Large", true, nullptr);
      c.in.clear();
      return true;
    }
    std::string head = c.in.substr(0, end);
    c.in.erase(0, end + 4);
    auto req = parse_request_head(head);
    if (!req) {
      error_response(c, 400, "Bad Request", true, nullptr);
      return true;
    }
    respond(c, *req);
    return true;
  }

  void queue(Conn& c, int status, std::string_view reason, std::vector<std::string> headers,
             std::vector<Piece> body, std::optional<std::uint64_t> content_length, bool close) {
    c.close_after = c.close_after || close;
    std::string h;
    h.reserve(512);
    h += "HTTP/1.1 ";
    h += std::to_string(status);
    h += ' ';
    h += reason;
    h += "\r\nServer: provisioner\r\nDate: ";
    h += http_date(std::chrono::system_clock::now());
    h += "\r\n";
    for (const auto& x : headers) {
      h += x;
      h += "\r\n";
    }
    if (content_length) {
      h += "Content-Length: ";
      h += std::to_string(*content_length);
      h += "\r\n";
    }
    h += c.close_after ? "Connection: close\r\n\r\n" : "\r\n";
    Piece head;
    head.mem = std::move(h);
    c.out.clear();
    c.out.push_back(std::move(head));
    for (auto& p : body) c.out.push_back(std::move(p));
    c.piece = 0;
    c.piece_done = 0;
    c.state = Conn::State::writing;
    c.last_progress = Clock::now();
  }

  void error_response(Conn& c, int status, std::string_view reason, bool close,
                      const RequestHead* req, std::vector<std::string> headers = {}) {
    std::string text = std::to_string(status) + " " + std::string(reason) + "\n";
    std::vector<Piece> body;
    bool head_only = req && req->method == "HEAD";
    if (!head_only) {
      Piece p;
      p.mem = text;
      body.push_back(std::move(p));
    }
    headers.emplace_back("Content-Type: text/plain; charset=utf-8");
    queue(c, status, reason, std::move(headers), std::move(body), text.size(), close);
  }

  // Opens the artifact's files for this response. 404 when unknown, 500 when broken.
  int open_source(const std::string& sha, Source& src) const {
    auto blob = store.blob_path(sha);
    int fd = ::open(blob.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
      src.fds.push_back(fd);
      struct stat st {};
      if (::fstat(fd, &st) != 0) return 500;
      src.size = static_cast<std::uint64_t>(st.st_size);
      src.mtime = mtime_of(st);
      if (src.size > 0) src.extents.push_back({fd, 0, src.size});
      return 0;
    }
    if (errno != ENOENT) return 500;
    auto m = store.composite(sha);
    if (!m) return m.error().kind == ErrorKind::not_found ? 404 : 500;
    struct stat mst {};
    if (::stat(store.manifest_path(sha).c_str(), &mst) != 0) return 404;  // collected meanwhile
    src.mtime = mtime_of(mst);
    std::map<std::string, std::pair<int, std::uint64_t>> opened;  // sha → fd, size
    for (const auto& seg : m->segments) {
      auto it = opened.find(seg.sha256);
      if (it == opened.end()) {
        int sfd = ::open(store.blob_path(seg.sha256).c_str(), O_RDONLY | O_CLOEXEC);
        if (sfd < 0) return 500;  // a composite whose parts are gone is a broken store
        src.fds.push_back(sfd);
        struct stat st {};
        if (::fstat(sfd, &st) != 0) return 500;
        it = opened.emplace(seg.sha256, std::make_pair(sfd, static_cast<std::uint64_t>(st.st_size))).first;
      }
      auto [sfd, ssize] = it->second;
      if (seg.offset > ssize || seg.length > ssize - seg.offset) return 500;
      src.extents.push_back({sfd, seg.offset, seg.length});
    }
    src.size = m->size;
    return 0;
  }

  void respond(Conn& c, const RequestHead& req) {
    bool close = req.close || (req.minor == 0 && !req.keep_alive) || req.has_body;
    bool head_only = req.method == "HEAD";
    if (req.method != "GET" && !head_only) {
      error_response(c, 405, "Method Not Allowed", close, &req, {"Allow: GET, HEAD"});
      return;
    }
    auto route = route_artifact_target(req.target, opt.name_suffixes);
    if (route.status != 0) {
      error_response(c, route.status, route.status == 400 ? "Bad Request" : "Not Found", close, &req);
      return;
    }
    const std::string& sha = route.sha256;
    const std::string& name = route.name;
    Source src;
    if (int status = open_source(sha, src); status != 0) {
      error_response(c, status, status == 404 ? "Not Found" : "Internal Server Error", close, &req);
      return;
    }

    const std::string etag = "\"" + sha + "\"";
    const std::string last_modified = http_date(src.mtime);
    const char* type = iends_with(name, ".iso") ? "application/x-iso9660-image"
                                                : "application/octet-stream";
    std::vector<std::string> headers{"ETag: " + etag, "Last-Modified: " + last_modified,
                                     "Accept-Ranges: bytes"};
    if (!close && req.minor == 0) headers.emplace_back("Connection: keep-alive");

    // RFC 9110 §13.2.2: If-None-Match first, If-Modified-Since only without it.
    bool not_modified = false;
    if (req.if_none_match) {
      not_modified = etag_list_matches(*req.if_none_match, etag);
    } else if (req.if_modified_since) {
      auto since = parse_http_date(*req.if_modified_since);
      not_modified = since && src.mtime <= *since;
    }
    if (not_modified) {
      // A 304 carries no body and, by RFC 9110 §8.6, no Content-Length of the full body.
      queue(c, 304, "Not Modified", std::move(headers), {}, std::nullopt, close);
      return;
    }

    std::optional<std::string_view> range;
    if (req.range) range = *req.range;
    if (range && req.if_range) {
      auto v = *req.if_range;
      bool fresh = v.starts_with("\"") ? v == etag : (parse_http_date(v) == src.mtime);
      if (!fresh) range.reset();
    }
    auto res = evaluate_range(range, src.size);
    std::vector<Piece> body;
    switch (res.outcome) {
      case RangeResolution::Outcome::full: {
        headers.emplace_back(std::string("Content-Type: ") + type);
        if (!head_only && src.size > 0) src.append(0, src.size - 1, body);
        c.files = src.take_fds();
        queue(c, 200, "OK", std::move(headers), std::move(body), src.size, close);
        return;
      }
      case RangeResolution::Outcome::unsatisfiable: {
        headers.emplace_back("Content-Range: bytes */" + std::to_string(src.size));
        headers.emplace_back("Content-Type: text/plain; charset=utf-8");
        queue(c, 416, "Range Not Satisfiable", std::move(headers), {}, 0, close);
        return;
      }
      case RangeResolution::Outcome::partial: break;
    }
    const std::string total = "/" + std::to_string(src.size);
    if (res.ranges.size() == 1) {
      const auto& r = res.ranges.front();
      headers.emplace_back(std::string("Content-Type: ") + type);
      headers.emplace_back("Content-Range: bytes " + std::to_string(r.first) + "-" +
                           std::to_string(r.last) + total);
      if (!head_only) src.append(r.first, r.last, body);
      c.files = src.take_fds();
      queue(c, 206, "Partial Content", std::move(headers), std::move(body), r.length(), close);
      return;
    }
    // multipart/byteranges: the length is known exactly before the first byte goes out.
    std::uint64_t length = 0;
    for (const auto& r : res.ranges) {
      Piece part;
      part.mem = "\r\n--" + boundary + "\r\nContent-Type: " + type + "\r\nContent-Range: bytes " +
                 std::to_string(r.first) + "-" + std::to_string(r.last) + total + "\r\n\r\n";
      length += part.mem.size() + r.length();
      if (!head_only) {
        body.push_back(std::move(part));
        src.append(r.first, r.last, body);
      }
    }
    Piece closing;
    closing.mem = "\r\n--" + boundary + "--\r\n";
    length += closing.mem.size();
    if (!head_only) body.push_back(std::move(closing));
    headers.emplace_back("Content-Type: multipart/byteranges; boundary=" + boundary);
    c.files = src.take_fds();
    queue(c, 206, "Partial Content", std::move(headers), std::move(body), length, close);
  }

  // ---- setup ------------------------------------------------------------------------------

  Status setup_tls(const TlsOptions& tls) {
    ssl_ctx = SSL_CTX_new(TLS_server_method());
    if (!ssl_ctx) return make_error(ErrorKind::internal, "SSL_CTX_new failed");
    int min = TLS1_2_VERSION;
    if (tls.min_version == "TLSv1") min = TLS1_VERSION;
    else if (tls.min_version == "TLSv1.1") min = TLS1_1_VERSION;
    else if (tls.min_version == "TLSv1.2") min = TLS1_2_VERSION;
    else if (tls.min_version == "TLSv1.3") min = TLS1_3_VERSION;
    else return make_error(ErrorKind::invalid_input, "tls min_version: " + tls.min_version);
    SSL_CTX_set_min_proto_version(ssl_ctx, min);
    if (min < TLS1_2_VERSION) {
      // OpenSSL 3 refuses TLS < 1.2 at the default security level.
      SSL_CTX_set_security_level(ssl_ctx, 0);
      SSL_CTX_set_cipher_list(ssl_ctx, "DEFAULT:@SECLEVEL=0");
    }
    SSL_CTX_set_mode(ssl_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (SSL_CTX_use_certificate_chain_file(ssl_ctx, tls.cert_file.c_str()) != 1)
      return make_error(ErrorKind::invalid_input, "cannot load TLS certificate " + tls.cert_file);
    if (SSL_CTX_use_PrivateKey_file(ssl_ctx, tls.key_file.c_str(), SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ssl_ctx) != 1)
      return make_error(ErrorKind::invalid_input, "cannot load TLS key (path given in config)");
    return Ok{};
  }

  Result<std::uint16_t> listen_on() {
    sockaddr_storage addr{};
    socklen_t len = 0;
    auto* v4 = reinterpret_cast<sockaddr_in*>(&addr);
    auto* v6 = reinterpret_cast<sockaddr_in6*>(&addr);
    std::string host = opt.host;
    if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    if (::inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
      v4->sin_family = AF_INET;
      v4->sin_port = htons(opt.port);
      len = sizeof *v4;
    } else if (::inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
      v6->sin6_family = AF_INET6;
      v6->sin6_port = htons(opt.port);
      len = sizeof *v6;
    } else {
      return make_error(ErrorKind::invalid_input, "artifact server host must be an IP address: " + opt.host);
    }
    listen_fd = ::socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (listen_fd < 0) return make_error(ErrorKind::internal, std::string("socket: ") + std::strerror(errno));
    int one = 1;
    ::setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(listen_fd, reinterpret_cast<sockaddr*>(&addr), len) != 0)
      return make_error(ErrorKind::unavailable, "bind " + opt.host + ":" + std::to_string(opt.port) +
                                                    ": " + std::strerror(errno));
    // The kernel's maximum backlog: a burst of connections must wait in the queue, not be
    // dropped into SYN retries that cost their clients a second each.
    if (::listen(listen_fd, SOMAXCONN) != 0)
      return make_error(ErrorKind::internal, std::string("listen: ") + std::strerror(errno));
    sockaddr_storage bound{};
    socklen_t blen = sizeof bound;
    ::getsockname(listen_fd, reinterpret_cast<sockaddr*>(&bound), &blen);
    return ntohs(bound.ss_family == AF_INET ? reinterpret_cast<sockaddr_in*>(&bound)->sin_port
                                            : reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port);
  }
};

ArtifactServer::ArtifactServer(const ArtifactStore& store, ArtifactServerOptions options)
    : store_(store), options_(std::move(options)) {}

ArtifactServer::~ArtifactServer() { stop(); }

std::size_t connection_cap(std::uint64_t nofile) {
  const std::uint64_t headroom = std::clamp<std::uint64_t>(nofile / 4, 256, 4096);
  const std::uint64_t left = nofile > headroom ? nofile - headroom : 0;
  return static_cast<std::size_t>(std::clamp<std::uint64_t>(left / 2, 8, 32768));
}

std::string ArtifactServer::url_path(std::string_view sha256, std::string_view name) {
  return "/artifacts/" + std::string(sha256) + "/" + std::string(name);
}

Result<std::uint16_t> ArtifactServer::start() {
  if (impl_) return make_error(ErrorKind::conflict, "artifact server already started");
  if (options_.threads < 1 || options_.max_header_bytes < 256 || options_.name_suffixes.empty() ||
      options_.head_timeout.count() <= 0 || options_.keepalive_timeout.count() <= 0 ||
      options_.stall_timeout.count() <= 0)
    return make_error(ErrorKind::invalid_input, "artifact server options out of range");
  auto impl = std::make_unique<Impl>(store_, options_);
  // The controller raises its soft open-file limit at start-up (main.cpp); read it now.
  rlimit files{};
  std::uint64_t nofile = ::getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur != RLIM_INFINITY
                             ? files.rlim_cur
                             : 1u << 20;
  std::size_t cap = connection_cap(nofile);
  if (options_.max_connections > 0) cap = std::min(cap, options_.max_connections);
  impl->admission.configure(cap, options_.max_connections_per_client);
  impl->spare_fd.store(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  impl->boundary = "provisioner-" + crypto::random_token(12);
  if (options_.tls) {
    if (auto s = impl->setup_tls(*options_.tls); !s) return s.error();
  }
  auto port = impl->listen_on();
  if (!port) return port.error();
  for (int i = 0; i < options_.threads; ++i) {
    auto loop = std::make_unique<Impl::Loop>();
    loop->ep = ::epoll_create1(EPOLL_CLOEXEC);
    loop->wake = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (loop->ep < 0 || loop->wake < 0)
      return make_error(ErrorKind::internal, std::string("epoll: ") + std::strerror(errno));
    epoll_event ev{};
    // EPOLLEXCLUSIVE: one loop wakes per incoming connection instead of all of them.
    ev.events = EPOLLIN | EPOLLEXCLUSIVE;
    ev.data.ptr = &impl->listen_fd;
    if (::epoll_ctl(loop->ep, EPOLL_CTL_ADD, impl->listen_fd, &ev) != 0)
      return make_error(ErrorKind::internal, std::string("epoll_ctl: ") + std::strerror(errno));
    ev.events = EPOLLIN;
    ev.data.ptr = &loop->wake;
    ::epoll_ctl(loop->ep, EPOLL_CTL_ADD, loop->wake, &ev);
    impl->loops.push_back(std::move(loop));
  }
  for (auto& loop : impl->loops) {
    Impl::Loop* l = loop.get();
    Impl* im = impl.get();
    l->thread = std::thread([im, l] { im->run(*l); });
  }
  max_connections_ = impl->admission.cap();
  impl_ = std::move(impl);
  port_ = *port;
  return port_;
}

void ArtifactServer::stop() {
  if (!impl_) return;
  impl_->stopping.store(true);
  for (auto& l : impl_->loops) {
    std::uint64_t one = 1;
    [[maybe_unused]] auto r = ::write(l->wake, &one, sizeof one);
  }
  for (auto& l : impl_->loops)
    if (l->thread.joinable()) l->thread.join();
  impl_.reset();
}

}  // namespace provisioner::artifacts
