#include "tests/support/mock_bmc.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include <algorithm>
#include <chrono>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "common/crypto.hpp"
#include "tests/support/http_client.hpp"
// The same header-line reading as the virtual BMC, the other Redfish server of this project.
#include "tools/vbmc/http_text.hpp"

namespace provisioner::test {

using nlohmann::json;

namespace {

const char* reason(int status) {
  switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 412: return "Precondition Failed";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Status";
  }
}

bool send_all(int fd, const std::string& data) {
  std::size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return false;
    off += static_cast<std::size_t>(n);
  }
  return true;
}

json odata(const std::string& path) { return json{{"@odata.id", path}}; }

json members(const std::vector<std::string>& paths) {
  json m = json::array();
  for (const auto& p : paths) m.push_back(odata(p));
  return m;
}

// http://127.0.0.1:1234/x.iso -> (host, port, target)
bool split_http_url(const std::string& url, std::string& host, std::uint16_t& port, std::string& target) {
  if (url.rfind("http://", 0) != 0) return false;
  std::string rest = url.substr(7);
  auto slash = rest.find('/');
  std::string authority = rest.substr(0, slash);
  target = slash == std::string::npos ? "/" : rest.substr(slash);
  auto colon = authority.find(':');
  host = authority.substr(0, colon);
  port = colon == std::string::npos ? 80 : static_cast<std::uint16_t>(std::stoi(authority.substr(colon + 1)));
  return true;
}

}  // namespace

MockBmc::MockBmc(MockBmcOptions options) : opt_(std::move(options)) {
  for (const auto& s : opt_.slots) slots_.push_back(Slot{s, "", false, true, 1});
  boot_ = {"None", "Disabled", opt_.boot_mode};
  pending_boot_ = boot_;
  power_ = opt_.power_state;
  if (!opt_.tls_cert_file.empty() && !opt_.tls_key_file.empty()) {
    SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx || SSL_CTX_use_certificate_chain_file(ctx, opt_.tls_cert_file.c_str()) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, opt_.tls_key_file.c_str(), SSL_FILETYPE_PEM) != 1)
      throw std::runtime_error("mock bmc: cannot load TLS certificate/key");
    auto version = [](const std::string& v) -> int {
      if (v.empty()) return 0;
      if (v == "TLSv1") return TLS1_VERSION;
      if (v == "TLSv1.1") return TLS1_1_VERSION;
      if (v == "TLSv1.2") return TLS1_2_VERSION;
      if (v == "TLSv1.3") return TLS1_3_VERSION;
      throw std::runtime_error("mock bmc: unknown TLS version " + v);
    };
    int min = version(opt_.tls_min_version), max = version(opt_.tls_max_version);
    if (min) SSL_CTX_set_min_proto_version(ctx, min);
    if (max) SSL_CTX_set_max_proto_version(ctx, max);
    // OpenSSL 3 refuses TLS 1.0/1.1 below security level 0, on the server side too.
    if ((min && min < TLS1_2_VERSION) || (max && max < TLS1_2_VERSION)) SSL_CTX_set_cipher_list(ctx, "DEFAULT:@SECLEVEL=0");
    // Session resumption (IDs and tickets) is on by default; give it an id context.
    static const unsigned char kSid[] = "mock-bmc";
    SSL_CTX_set_session_id_context(ctx, kSid, sizeof kSid - 1);
    tls_ = ctx;
  }

  bind_address_ = opt_.bind_address;
  bool v6 = bind_address_.find(':') != std::string::npos;
  if (v6 ? bind_address_ != "::1" : bind_address_.rfind("127.", 0) != 0)
    throw std::runtime_error("mock bmc: bind address must be loopback: " + bind_address_);
  listen_fd_ = ::socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0) throw std::runtime_error("mock bmc: socket failed");
  int one = 1;
  ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_storage ss{};
  socklen_t len = 0;
  if (v6) {
    auto* a6 = reinterpret_cast<sockaddr_in6*>(&ss);
    a6->sin6_family = AF_INET6;
    a6->sin6_addr = in6addr_loopback;
    ::setsockopt(listen_fd_, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    len = sizeof *a6;
  } else {
    auto* a4 = reinterpret_cast<sockaddr_in*>(&ss);
    a4->sin_family = AF_INET;
    if (::inet_pton(AF_INET, bind_address_.c_str(), &a4->sin_addr) != 1)
      throw std::runtime_error("mock bmc: bad bind address " + bind_address_);
    len = sizeof *a4;
  }
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&ss), len) != 0 || ::listen(listen_fd_, 128) != 0)
    throw std::runtime_error("mock bmc: bind/listen failed");
  ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&ss), &len);
  port_ = ntohs(v6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  acceptor_ = std::thread([this] { accept_loop(); });
}

MockBmc::~MockBmc() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    for (int fd : open_fds_) ::shutdown(fd, SHUT_RDWR);
  }
  stop_cv_.notify_all();
  ::shutdown(listen_fd_, SHUT_RDWR);
  acceptor_.join();
  ::close(listen_fd_);
  for (auto& w : workers_) w.thread.join();
  if (tls_) SSL_CTX_free(static_cast<SSL_CTX*>(tls_));
}

void MockBmc::accept_loop() {
  for (;;) {
    pollfd p{listen_fd_, POLLIN, 0};
    // The destructor shuts the socket down, which wakes this poll: the timeout is only a
    // safety net (10,000 mocks waking 10 times a second would eat a core of a benchmark).
    int r = ::poll(&p, 1, 1000);
    {
      std::lock_guard lock(mu_);
      if (stopping_) return;
    }
    if (r <= 0) continue;
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    std::lock_guard lock(mu_);
    if (stopping_) {
      ::close(fd);
      return;
    }
    // Reap finished workers so long runs (benchmarks) do not pile up thread stacks.
    for (auto it = workers_.begin(); it != workers_.end();) {
      if (*it->done) {
        it->thread.join();
        it = workers_.erase(it);
      } else {
        ++it;
      }
    }
    open_fds_.push_back(fd);
    ++counters_.connections;
    auto done = std::make_shared<std::atomic<bool>>(false);
    workers_.push_back(Worker{std::thread([this, fd, done] {
                                serve(fd);
                                *done = true;
                              }),
                              done});
  }
}

bool MockBmc::sleep_unless_stopped(int ms) {
  std::unique_lock lock(mu_);
  return !stop_cv_.wait_for(lock, std::chrono::milliseconds(ms), [&] { return stopping_; });
}

void MockBmc::serve(int fd) {
  // OpenSSL writes with plain write(): a client that hung up must not kill the test process
  // with SIGPIPE (blocked here, the write fails with EPIPE instead).
  sigset_t pipe;
  sigemptyset(&pipe);
  sigaddset(&pipe, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe, nullptr);
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  SSL* ssl = nullptr;
  if (tls_) {
    ssl = SSL_new(static_cast<SSL_CTX*>(tls_));
    SSL_set_fd(ssl, fd);
    if (SSL_accept(ssl) != 1) {  // e.g. the client refused our certificate
      SSL_free(ssl);
      std::lock_guard lock(mu_);
      ++counters_.failed_handshakes;
      open_fds_.erase(std::remove(open_fds_.begin(), open_fds_.end(), fd), open_fds_.end());
      ::close(fd);
      return;
    }
    std::lock_guard lock(mu_);
    ++counters_.handshakes;
    if (SSL_session_reused(ssl)) ++counters_.resumed;
    last_tls_version_ = SSL_get_version(ssl);
  }
  auto rd = [&](char* b, std::size_t n) -> long {
    return ssl ? SSL_read(ssl, b, static_cast<int>(n)) : static_cast<long>(::recv(fd, b, n, 0));
  };
  auto finish = [&](bool rst) {
    if (ssl) {
      if (!rst) SSL_shutdown(ssl);
      SSL_free(ssl);
    }
    if (rst) {
      linger l{1, 0};  // close with RST instead of FIN
      ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    }
    std::lock_guard lock(mu_);
    open_fds_.erase(std::remove(open_fds_.begin(), open_fds_.end(), fd), open_fds_.end());
    ::close(fd);
  };
  std::string buf;
  char tmp[8192];
  // One request after the other on this connection (HTTP/1.1 keep-alive) until the client
  // asks to close, the options say close, or the connection goes idle for 10 s.
  for (;;) {
    std::size_t he;
    while ((he = buf.find("\r\n\r\n")) == std::string::npos) {
      long n = rd(tmp, sizeof tmp);
      if (n <= 0) return finish(false);
      buf.append(tmp, static_cast<std::size_t>(n));
    }
    std::string head = buf.substr(0, he);
    std::string body = buf.substr(he + 4);
    RecordedRequest rec;
    std::map<std::string, std::string> headers;
    {
      auto le = head.find("\r\n");
      std::string line = head.substr(0, le);
      auto sp1 = line.find(' '), sp2 = line.rfind(' ');
      rec.method = line.substr(0, sp1);
      rec.path = line.substr(sp1 + 1, sp2 - sp1 - 1);
      headers = vbmc::parse_header_lines(head, le == std::string::npos ? head.size() : le + 2);
    }
    std::size_t want = headers.count("content-length") ? std::stoul(headers["content-length"]) : 0;
    while (body.size() < want) {
      long n = rd(tmp, sizeof tmp);
      if (n <= 0) return finish(false);
      body.append(tmp, static_cast<std::size_t>(n));
    }
    std::string rest = body.substr(want);
    body.resize(want);
    bool keep_alive;
    {
      std::lock_guard lock(mu_);
      keep_alive = opt_.keep_alive;
    }
    if (headers.count("connection") && vbmc::lower(headers["connection"]).find("close") != std::string::npos)
      keep_alive = false;

    rec.headers = headers;
    for (const char* secret : {"authorization", "x-auth-token"})
      if (rec.headers.count(secret)) rec.headers[secret] = "<redacted>";
    rec.body = body;
    {
      json j = json::parse(body, nullptr, false);
      if (j.is_object() && j.contains("Password")) {
        j["Password"] = "<redacted>";
        rec.body = j.dump();
      }
    }

    int index;
    Hook hook;
    {
      std::lock_guard lock(mu_);
      index = static_cast<int>(log_.size());
      log_.push_back(rec);
      ++counters_.requests;
      hook = hook_;
    }
    MockAction action = hook ? hook(rec, index) : MockAction::pass();
    auto set_status = [&](int status) {
      std::lock_guard lock(mu_);
      log_[index].status = status;
    };
    if (action.delay_ms > 0 && !sleep_unless_stopped(action.delay_ms)) return finish(true);
    if (action.kind == MockAction::Kind::reset_connection) {
      set_status(-1);
      return finish(true);
    }

    Answer answer;
    if (action.kind == MockAction::Kind::respond) {
      answer = {action.status, action.body, action.headers};
    } else {
      // Media fetch happens outside the lock: the URL may point anywhere (even back at us).
      bool fetch = false;
      std::string image;
      {
        std::lock_guard lock(mu_);
        fetch = opt_.fetch_media;
      }
      if (fetch && (rec.path.find("InsertMedia") != std::string::npos || rec.method == "PATCH")) {
        json j = json::parse(body, nullptr, false);
        if (j.is_object() && j.contains("Image") && j["Image"].is_string()) image = j["Image"].get<std::string>();
      }
      if (!image.empty()) {
        MockMediaFetch f{image, 0, 0};
        std::string host, target;
        std::uint16_t port = 0;
        if (split_http_url(image, host, port, target)) {
          try {
            f.head_status = http_request(port, "HEAD", target, {}, "", host).status;
            f.range_status = http_request(port, "GET", target, {{"Range", "bytes=0-2047"}}, "", host).status;
          } catch (const std::exception&) {
          }
        }
        std::lock_guard lock(mu_);
        fetches_.push_back(f);
      }
      std::lock_guard lock(mu_);
      answer = handle(rec, body, headers);
    }
    set_status(answer.status);
    if (action.answer_delay_ms > 0 && !sleep_unless_stopped(action.answer_delay_ms)) return finish(true);
    std::string out = "HTTP/1.1 " + std::to_string(answer.status) + " " + reason(answer.status) + "\r\n";
    bool has_type = false;
    for (const auto& [k, v] : answer.headers) {
      out += k + ": " + v + "\r\n";
      if (vbmc::lower(k) == "content-type") has_type = true;
    }
    if (!has_type && !answer.body.empty()) out += "Content-Type: application/json\r\n";
    out += std::string("OData-Version: 4.0\r\n") + (keep_alive ? "" : "Connection: close\r\n") +
           "Content-Length: " + std::to_string(answer.body.size()) + "\r\n\r\n";
    if (rec.method != "HEAD") out += answer.body;
    if (keep_alive) {
      bool written = ssl ? SSL_write(ssl, out.data(), static_cast<int>(out.size())) == static_cast<int>(out.size())
                         : send_all(fd, out);
      if (!written) return finish(false);
      buf = std::move(rest);
      continue;
    }
    if (ssl) {
      SSL_write(ssl, out.data(), static_cast<int>(out.size()));
      return finish(false);
    }
    send_all(fd, out);
    ::shutdown(fd, SHUT_WR);
    // Drain briefly so the client reads everything before we close (no RST on unread data).
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 200) > 0) (void)::recv(fd, tmp, sizeof tmp, 0);
    return finish(false);
  }
}

// ------------------------------------------------------------------ Redfish model

std::string MockBmc::error_body(const std::string& id, const std::string& message) {
  return json{{"error",
               {{"code", "Base.1.8.GeneralError"},
                {"message", "A general error has occurred. See ExtendedInfo for more information."},
                {"@Message.ExtendedInfo", json::array({{{"MessageId", id}, {"Message", message}}})}}}}
      .dump();
}

std::string MockBmc::etag_of(int n) const {
  std::string e = "\"";  // piecewise: GCC 12 -Wrestrict false positive on "x" + to_string()
  e.append(std::to_string(n)).append("\"");
  return opt_.weak_etags ? std::string("W/").append(e) : e;
}

bool MockBmc::etag_matches(const std::string& if_match, int n) const {
  if (if_match.empty() || if_match == "*") return true;
  // Strong comparison (RFC 9110 If-Match): a weak tag never matches.
  return if_match == "\"" + std::to_string(n) + "\"";
}

std::string MockBmc::system_path() const { return "/redfish/v1/Systems/" + opt_.system_id; }

std::string MockBmc::vm_collection_path() const {
  return opt_.vm_under_manager ? "/redfish/v1/Managers/" + opt_.manager_id + "/VirtualMedia"
                               : system_path() + "/VirtualMedia";
}

std::string MockBmc::slot_path(const std::string& slot_id) const { return vm_collection_path() + "/" + slot_id; }

MockBmc::Slot* MockBmc::find_slot(const std::string& id) {
  for (auto& s : slots_)
    if (s.spec.id == id) return &s;
  return nullptr;
}

bool MockBmc::authorized(const std::map<std::string, std::string>& headers) const {
  auto tok = headers.find("x-auth-token");
  if (tok != headers.end() && sessions_.count(tok->second)) return true;
  auto auth = headers.find("authorization");
  if (auth == headers.end()) return false;
  // Basic base64(user:password)
  const std::string& v = auth->second;
  if (v.rfind("Basic ", 0) != 0) return false;
  return crypto::base64_decode(std::string_view(v).substr(6)) == opt_.username + ":" + opt_.password;
}

MockBmc::Answer MockBmc::handle(const RecordedRequest& req, const std::string& body,
                                const std::map<std::string, std::string>& headers) {
  std::string path = req.path;
  if (path.size() > 1 && path.back() == '/') path.pop_back();
  const std::string& m = req.method;
  const std::string sessions = "/redfish/v1/SessionService/Sessions";

  if (path == "/redfish/v1" && m == "GET") {
    json root = {{"@odata.id", "/redfish/v1/"},
                 {"@odata.type", "#ServiceRoot.v1_5_0.ServiceRoot"},
                 {"Id", "RootService"},
                 {"RedfishVersion", "1.6.0"},
                 {"Vendor", opt_.vendor},
                 {"Product", opt_.model},
                 {"Systems", odata("/redfish/v1/Systems")},
                 {"Managers", odata("/redfish/v1/Managers")},
                 {"SessionService", odata("/redfish/v1/SessionService")},
                 {"TaskService", odata("/redfish/v1/TaskService")},
                 {"Links", {{"Sessions", odata(sessions)}}}};
    return {200, root.dump(), {}};
  }
  if (path == sessions && m == "POST") {
    if (!opt_.sessions) return {405, error_body("Base.1.8.ActionNotSupported", "Sessions are disabled"), {}};
    json j = json::parse(body, nullptr, false);
    if (!j.is_object() || j.value("UserName", "") != opt_.username || j.value("Password", "") != opt_.password)
      return {401, error_body("Base.1.8.NoValidSession", "Invalid credentials"), {}};
    int n = next_session_++;
    std::string token = "mock-token-" + std::to_string(n) + "-" + std::to_string(port_);
    sessions_[token] = n;
    std::string loc = sessions + "/" + std::to_string(n);
    return {201, json{{"@odata.id", loc}, {"Id", std::to_string(n)}, {"UserName", opt_.username}}.dump(),
            {{"X-Auth-Token", token}, {"Location", loc}}};
  }
  if (!authorized(headers)) return {401, error_body("Base.1.8.NoValidSession", "Authentication required"), {}};

  if (path.rfind(sessions + "/", 0) == 0 && m == "DELETE") {
    int n = std::atoi(path.substr(sessions.size() + 1).c_str());
    for (auto it = sessions_.begin(); it != sessions_.end(); ++it)
      if (it->second == n) {
        sessions_.erase(it);
        return {204, "", {}};
      }
    return {404, error_body("Base.1.8.ResourceMissingAtURI", "No such session"), {}};
  }
  if (path.rfind("/redfish/v1/TaskService/TaskMonitors/", 0) == 0 && m == "GET") {
    int n = std::atoi(path.substr(path.find_last_of('/') + 1).c_str());
    auto it = tasks_.find(n);
    if (it == tasks_.end()) return {404, error_body("Base.1.8.ResourceMissingAtURI", "No such task"), {}};
    Task& t = it->second;
    if (!t.done && t.polls_left-- > 0) {
      json task = {{"@odata.id", "/redfish/v1/TaskService/Tasks/" + std::to_string(n)},
                   {"Id", std::to_string(n)},
                   {"TaskState", "Running"},
                   {"TaskStatus", "OK"}};
      return {202, task.dump(), {{"Location", path}, {"Retry-After", std::to_string(opt_.task_retry_after_s)}}};
    }
    if (!t.done) {
      auto [status, text] = t.effect();
      t.done = true;
      bool ok = status < 300;
      json task = {{"@odata.id", "/redfish/v1/TaskService/Tasks/" + std::to_string(n)},
                   {"Id", std::to_string(n)},
                   {"TaskState", ok ? "Completed" : "Exception"},
                   {"TaskStatus", ok ? "OK" : "Critical"},
                   {"Messages", json::array({{{"MessageId", ok ? "Base.1.8.Success" : "Base.1.8.GeneralError"},
                                              {"Message", text}}})}};
      t.result_status = 200;
      t.result_body = task.dump();
    }
    return {t.result_status, t.result_body, {}};
  }
  if (m == "GET") return get_resource(path);

  const std::string sys = system_path();
  if (path == sys && m == "PATCH") return patch_boot(body, headers.count("if-match") ? headers.at("if-match") : "", false);
  if (path == sys + "/Settings" && opt_.settings_object && m == "PATCH")
    return patch_boot(body, headers.count("if-match") ? headers.at("if-match") : "", true);
  if (path == sys + "/Actions/ComputerSystem.Reset" && m == "POST") return reset(body);
  if (opt_.dell_oem_import && m == "POST" &&
      path == "/redfish/v1/Managers/" + opt_.manager_id + "/Actions/Oem/EID_674_Manager.ImportSystemConfiguration")
    return import_system_configuration(body);

  std::string vm = vm_collection_path() + "/";
  if (path.rfind(vm, 0) == 0) {
    std::string rest = path.substr(vm.size());
    std::string id = rest.substr(0, rest.find('/'));
    Slot* s = find_slot(id);
    if (!s) return {404, error_body("Base.1.8.ResourceMissingAtURI", "No such slot"), {}};
    if (rest == id && m == "PATCH") {
      if (!etag_matches(headers.count("if-match") ? headers.at("if-match") : "", s->etag))
        return {412, error_body("Base.1.8.PreconditionFailed", "ETag does not match"), {}};
      json j = json::parse(body, nullptr, false);
      if (!j.is_object()) return {400, error_body("Base.1.8.MalformedJSON", "Bad JSON"), {}};
      if (j.contains("Image") && j["Image"].is_string()) return insert(*s, body, true);
      if ((j.contains("Image") && j["Image"].is_null()) || (j.contains("Inserted") && j["Inserted"] == false))
        return eject(*s);
      return {400, error_body("Base.1.8.PropertyUnknown", "Nothing to change"), {}};
    }
    if (opt_.media_actions && m == "POST" && rest == id + "/Actions/VirtualMedia.InsertMedia") {
      Slot* sp = s;
      std::string b = body;
      if (!opt_.async_actions) return insert(*sp, b, false);
      // Validate now, apply when the task completes.
      return maybe_async([this, sp, b] {
        Answer a = insert(*sp, b, false);
        return std::make_pair(a.status, a.status < 300 ? std::string("Inserted") : a.body);
      });
    }
    if (opt_.media_actions && m == "POST" && rest == id + "/Actions/VirtualMedia.EjectMedia") {
      Slot* sp = s;
      if (!opt_.async_actions) return eject(*sp);
      return maybe_async([this, sp] {
        Answer a = eject(*sp);
        return std::make_pair(a.status, a.status < 300 ? std::string("Ejected") : a.body);
      });
    }
    return {405, error_body("Base.1.8.ActionNotSupported", "Not supported on this resource"), {}};
  }
  return {404, error_body("Base.1.8.ResourceMissingAtURI", "No resource at " + path), {}};
}

MockBmc::Answer MockBmc::get_resource(const std::string& path) {
  const std::string sys = system_path();
  const std::string mgr = "/redfish/v1/Managers/" + opt_.manager_id;
  if (path == "/redfish/v1/Systems")
    return {200, json{{"@odata.id", path}, {"Members", members({sys})}, {"Members@odata.count", 1}}.dump(), {}};
  if (path == "/redfish/v1/Managers")
    return {200, json{{"@odata.id", path}, {"Members", members({mgr})}, {"Members@odata.count", 1}}.dump(), {}};
  if (path == "/redfish/v1/SessionService")
    return {200, json{{"@odata.id", path}, {"Sessions", odata("/redfish/v1/SessionService/Sessions")}}.dump(), {}};
  if (path == sys) return system_json();
  if (path == sys + "/Settings" && opt_.settings_object) {
    json j = {{"@odata.id", path},
              {"Boot",
               {{"BootSourceOverrideTarget", pending_boot_.target},
                {"BootSourceOverrideEnabled", pending_boot_.enabled},
                {"BootSourceOverrideMode", pending_boot_.mode}}}};
    return {200, j.dump(), {{"ETag", etag_of(settings_etag_)}}};
  }
  if (path == mgr) {
    json j = {{"@odata.id", mgr},
              {"Id", opt_.manager_id},
              {"ManagerType", "BMC"},
              {"Model", opt_.vendor + " BMC"},
              {"FirmwareVersion", opt_.firmware},
              {"Links", {{"ManagerForServers", members({sys})}}}};
    if (opt_.vm_under_manager) j["VirtualMedia"] = odata(vm_collection_path());
    if (opt_.dell_oem_import)
      j["Actions"] = {{"Oem",
                       {{"#OemManager.v1_4_0.OemManager#OemManager.ImportSystemConfiguration",
                         {{"target", mgr + "/Actions/Oem/EID_674_Manager.ImportSystemConfiguration"}}}}}};
    return {200, j.dump(), {}};
  }
  if (path == vm_collection_path()) {
    std::vector<std::string> ids;
    for (const auto& s : slots_) ids.push_back(slot_path(s.spec.id));
    return {200, json{{"@odata.id", path}, {"Members", members(ids)}}.dump(), {}};
  }
  std::string vm = vm_collection_path() + "/";
  if (path.rfind(vm, 0) == 0) {
    Slot* s = find_slot(path.substr(vm.size()));
    if (s) return slot_json(*s);
  }
  return {404, error_body("Base.1.8.ResourceMissingAtURI", "No resource at " + path), {}};
}

MockBmc::Answer MockBmc::system_json() {
  const std::string sys = system_path();
  std::string shown = power_;
  if (lag_reads_left_ > 0) {
    --lag_reads_left_;
    shown = lagging_power_;
  }
  json j = {{"@odata.id", sys},
            {"@odata.type", "#ComputerSystem.v1_10_0.ComputerSystem"},
            {"Id", opt_.system_id},
            {"SerialNumber", opt_.serial},
            {"Manufacturer", opt_.manufacturer},
            {"Model", opt_.model},
            {"PowerState", shown},
            {"Boot",
             {{"BootSourceOverrideTarget", boot_.target},
              {"BootSourceOverrideEnabled", boot_.enabled},
              {"BootSourceOverrideMode", boot_.mode},
              {"BootSourceOverrideTarget@Redfish.AllowableValues", opt_.boot_targets}}},
            {"Actions",
             {{"#ComputerSystem.Reset",
               {{"target", sys + "/Actions/ComputerSystem.Reset"},
                {"ResetType@Redfish.AllowableValues", opt_.reset_types}}}}},
            {"Links", {{"ManagedBy", members({"/redfish/v1/Managers/" + opt_.manager_id})}}}};
  if (!opt_.vm_under_manager) j["VirtualMedia"] = odata(vm_collection_path());
  if (opt_.settings_object) j["@Redfish.Settings"] = {{"SettingsObject", odata(sys + "/Settings")}};
  return {200, j.dump(), {{"ETag", etag_of(system_etag_)}}};
}

MockBmc::Answer MockBmc::slot_json(Slot& s) {
  std::string p = slot_path(s.spec.id);
  json j = {{"@odata.id", p},
            {"Id", s.spec.id},
            {"Name", "Virtual " + s.spec.id},
            {"MediaTypes", s.spec.media_types},
            {"Image", s.image.empty() ? json(nullptr) : json(s.image)},
            {"Inserted", s.inserted},
            {"WriteProtected", s.write_protected},
            {"ConnectedVia", s.inserted ? "URI" : "NotConnected"}};
  if (opt_.media_actions)
    j["Actions"] = {{"#VirtualMedia.InsertMedia", {{"target", p + "/Actions/VirtualMedia.InsertMedia"}}},
                    {"#VirtualMedia.EjectMedia", {{"target", p + "/Actions/VirtualMedia.EjectMedia"}}}};
  return {200, j.dump(), {{"ETag", etag_of(s.etag)}}};
}

MockBmc::Answer MockBmc::insert(Slot& s, const std::string& body, bool via_patch) {
  json j = json::parse(body, nullptr, false);
  if (!j.is_object() || !j.contains("Image") || !j["Image"].is_string())
    return {400, error_body("Base.1.8.PropertyMissing", "The property Image is a required property"), {}};
  if (opt_.require_transfer_protocol && !j.contains("TransferProtocolType"))
    return {400, error_body("Base.1.8.ActionParameterMissing",
                            "The action requires the parameter TransferProtocolType"), {}};
  if (opt_.refuse_second_medium)
    for (const auto& other : slots_)
      if (&other != &s && other.inserted)
        return {400, error_body("IDRAC.2.8.VRM0021", "Virtual Media is already connected to another device"), {}};
  if (s.inserted && s.image != j["Image"].get<std::string>())
    return {500, error_body("Base.1.8.InternalError", "Slot busy: eject first"), {}};
  s.image = j["Image"].get<std::string>();
  s.inserted = true;
  if (j.contains("WriteProtected") && j["WriteProtected"].is_boolean()) s.write_protected = j["WriteProtected"];
  ++s.etag;
  return {204, "", {}};
}

MockBmc::Answer MockBmc::eject(Slot& s) {
  if (!s.inserted && opt_.eject_empty_fails)
    return {400, error_body("Base.1.8.ActionNotSupported", "No Virtual Media devices are currently connected"), {}};
  s.image.clear();
  s.inserted = false;
  ++s.etag;
  return {204, "", {}};
}

MockBmc::Answer MockBmc::patch_boot(const std::string& body, const std::string& if_match, bool settings) {
  if (!settings && opt_.settings_object)
    return {400, error_body("Base.1.8.PropertyNotWritable", "Boot is changed through the settings object"), {}};
  if (!etag_matches(if_match, settings ? settings_etag_ : system_etag_))
    return {412, error_body("Base.1.8.PreconditionFailed", "ETag does not match"), {}};
  json j = json::parse(body, nullptr, false);
  if (!j.is_object() || !j.contains("Boot") || !j["Boot"].is_object())
    return {400, error_body("Base.1.8.MalformedJSON", "Boot object required"), {}};
  const json& b = j["Boot"];
  MockBoot& target = settings ? pending_boot_ : boot_;
  bool target_changed = false;
  if (b.contains("BootSourceOverrideTarget")) {
    std::string t = b["BootSourceOverrideTarget"].get<std::string>();
    if (std::find(opt_.boot_targets.begin(), opt_.boot_targets.end(), t) == opt_.boot_targets.end())
      return {400, error_body("Base.1.8.PropertyValueNotInList", "BootSourceOverrideTarget " + t + " not allowed"), {}};
    target_changed = t != target.target;
    target.target = t;
  }
  if (b.contains("BootSourceOverrideEnabled")) {
    std::string e = b["BootSourceOverrideEnabled"].get<std::string>();
    target.enabled = (e == "Once" && opt_.ignore_once) ? "Disabled" : e;
  }
  if (target_changed && opt_.reset_mode_on_target_change) {
    target.mode = "Legacy";  // the device change drops the mode, whatever was sent with it
  } else if (b.contains("BootSourceOverrideMode")) {
    target.mode = b["BootSourceOverrideMode"].get<std::string>();
  }
  if (settings) ++settings_etag_;
  else ++system_etag_;
  return {204, "", {}};
}

MockBmc::Answer MockBmc::maybe_async(std::function<std::pair<int, std::string>()> effect) {
  int n = next_task_++;
  tasks_[n] = Task{opt_.task_polls, std::move(effect), false, 200, ""};
  std::string monitor = "/redfish/v1/TaskService/TaskMonitors/" + std::to_string(n);
  json task = {{"@odata.id", "/redfish/v1/TaskService/Tasks/" + std::to_string(n)}, {"TaskState", "New"}};
  return {202, task.dump(), {{"Location", monitor}, {"Retry-After", std::to_string(opt_.task_retry_after_s)}}};
}

MockBmc::Answer MockBmc::reset(const std::string& body) {
  json j = json::parse(body, nullptr, false);
  std::string type = j.is_object() ? j.value("ResetType", "") : "";
  if (std::find(opt_.reset_types.begin(), opt_.reset_types.end(), type) == opt_.reset_types.end())
    return {400, error_body("Base.1.8.ActionParameterNotSupported", "ResetType " + type + " not allowed"), {}};
  if (opt_.async_actions) return maybe_async([this, type] { return apply_reset(type); });
  auto [status, text] = apply_reset(type);
  return {status, status < 300 ? "" : error_body("Base.1.8.GeneralError", text), {}};
}

MockBmc::Answer MockBmc::import_system_configuration(const std::string& body) {
  json j = json::parse(body, nullptr, false);
  if (!j.is_object() || !j.contains("ShareParameters") || !j["ShareParameters"].is_object() ||
      !j.contains("ImportBuffer") || !j["ImportBuffer"].is_string())
    return {400, error_body("Base.1.8.ActionParameterMissing", "ShareParameters and ImportBuffer are required"), {}};
  std::string buffer = j["ImportBuffer"];
  auto has = [&](const std::string& part) { return buffer.find(part) != std::string::npos; };
  if (!has("<Component FQDD=\"" + opt_.manager_id + "\">") ||
      !has("<Attribute Name=\"ServerBoot.1#BootOnce\">Enabled</Attribute>") ||
      !has("<Attribute Name=\"ServerBoot.1#FirstBootDevice\">VCD-DVD</Attribute>"))
    return {400, error_body("Base.1.8.PropertyValueNotInList", "unexpected system configuration"), {}};
  // iDRAC runs every import as a job.
  return maybe_async([this] {
    oem_virtual_cd_once_ = true;
    return std::make_pair(200, std::string("Successfully imported and applied Server Configuration Profile."));
  });
}

std::pair<int, std::string> MockBmc::apply_reset(const std::string& type) {
  std::string before = power_;
  bool boots = false;
  if (opt_.ignore_graceful && (type == "GracefulShutdown" || type == "GracefulRestart")) {
    resets_.push_back(type);  // the OS ignored the ACPI request
    return {204, "Reset " + type};
  }
  if (type == "On") {
    boots = power_ == "Off";
    power_ = "On";
  } else if (type == "ForceOff" || type == "GracefulShutdown") {
    power_ = "Off";
  } else if (type == "ForceRestart" || type == "GracefulRestart" || type == "PowerCycle") {
    boots = true;
    power_ = "On";
  } else if (type == "PushPowerButton") {
    boots = power_ == "Off";
    power_ = power_ == "Off" ? "On" : "Off";
  }
  resets_.push_back(type);
  if (boots) {
    if (opt_.settings_object) boot_ = pending_boot_;  // pending settings apply at reset
    MockBootEvent ev;
    ev.reset_type = type;
    ev.boot_target = boot_.enabled == "Disabled" ? "Hdd" : boot_.target;
    if (oem_virtual_cd_once_) {
      ev.boot_target = "VirtualCd";  // the OEM one-time boot wins over the standard override
      oem_virtual_cd_once_ = false;
    }
    auto listed = [](const Slot& s, const char* type) {
      const auto& t = s.spec.media_types;
      return std::find(t.begin(), t.end(), type) != t.end();
    };
    for (const auto& s : slots_) {
      if (!s.inserted) continue;
      ev.media.push_back(s.image);
      if ((ev.boot_target == "Cd" || ev.boot_target == "UsbCd" || ev.boot_target == "VirtualCd") &&
          (listed(s, "CD") || listed(s, "DVD")))
        ev.from_virtual_media = true;
      if (ev.boot_target == "Usb" && listed(s, "USBStick")) ev.from_virtual_media = true;
    }
    boots_.push_back(ev);
    if (boot_.enabled == "Once") {
      boot_.enabled = "Disabled";  // a one-time override is consumed by the boot
      ++system_etag_;
    }
  }
  if (opt_.power_lag_reads > 0 && before != power_) {
    lagging_power_ = before;
    lag_reads_left_ = opt_.power_lag_reads;
  }
  return {204, "Reset " + type};
}

// ------------------------------------------------------------------ test-facing accessors

void MockBmc::set_hook(Hook hook) {
  std::lock_guard lock(mu_);
  hook_ = std::move(hook);
}

void MockBmc::update_options(const std::function<void(MockBmcOptions&)>& change) {
  std::lock_guard lock(mu_);
  change(opt_);
}

std::vector<RecordedRequest> MockBmc::requests() const {
  std::lock_guard lock(mu_);
  return log_;
}

std::size_t MockBmc::request_count() const {
  std::lock_guard lock(mu_);
  return log_.size();
}

std::vector<std::string> MockBmc::sequence() const {
  std::lock_guard lock(mu_);
  std::vector<std::string> out;
  for (const auto& r : log_) out.push_back(r.method + " " + r.path + " " + std::to_string(r.status));
  return out;
}

MockBmc::Counters MockBmc::counters() const {
  std::lock_guard lock(mu_);
  return counters_;
}

void MockBmc::reset_counters() {
  std::lock_guard lock(mu_);
  counters_ = {};
}

void MockBmc::drop_connections() {
  std::lock_guard lock(mu_);
  for (int fd : open_fds_) ::shutdown(fd, SHUT_RDWR);
}

std::string MockBmc::last_tls_version() const {
  std::lock_guard lock(mu_);
  return last_tls_version_;
}

void MockBmc::clear_requests() {
  std::lock_guard lock(mu_);
  log_.clear();
}

void MockBmc::expire_sessions() {
  std::lock_guard lock(mu_);
  sessions_.clear();
}

int MockBmc::live_sessions() const {
  std::lock_guard lock(mu_);
  return static_cast<int>(sessions_.size());
}

void MockBmc::bump_etag(const std::string& path) {
  std::lock_guard lock(mu_);
  if (path == system_path()) ++system_etag_;
  for (auto& s : slots_)
    if (slot_path(s.spec.id) == path) ++s.etag;
}

std::string MockBmc::slot_image(const std::string& slot_id) const {
  std::lock_guard lock(mu_);
  for (const auto& s : slots_)
    if (s.spec.id == slot_id) return s.image;
  return {};
}

bool MockBmc::slot_inserted(const std::string& slot_id) const {
  std::lock_guard lock(mu_);
  for (const auto& s : slots_)
    if (s.spec.id == slot_id) return s.inserted;
  return false;
}

void MockBmc::set_slot(const std::string& slot_id, const std::string& image, bool inserted) {
  std::lock_guard lock(mu_);
  if (Slot* s = find_slot(slot_id)) {
    s->image = image;
    s->inserted = inserted;
    ++s->etag;
  }
}

MockBoot MockBmc::boot() const {
  std::lock_guard lock(mu_);
  return boot_;
}

void MockBmc::set_boot(const MockBoot& boot) {
  std::lock_guard lock(mu_);
  boot_ = boot;
  pending_boot_ = boot;
  ++system_etag_;
}

std::string MockBmc::power_state() const {
  std::lock_guard lock(mu_);
  return power_;
}

std::vector<std::string> MockBmc::resets() const {
  std::lock_guard lock(mu_);
  return resets_;
}

std::size_t MockBmc::reset_count() const {
  std::lock_guard lock(mu_);
  return resets_.size();
}

std::vector<MockBootEvent> MockBmc::boots() const {
  std::lock_guard lock(mu_);
  return boots_;
}

std::vector<MockMediaFetch> MockBmc::media_fetches() const {
  std::lock_guard lock(mu_);
  return fetches_;
}

}  // namespace provisioner::test
