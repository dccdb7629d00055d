// Artifact serving throughput: 64 keep-alive clients, each issuing 1 MiB Range GETs at random
// offsets of a 1 GiB file of real random bytes, against our ArtifactServer and against nginx
// (started here on 127.0.0.1 with a generated config, never the system service) serving the
// same file in the same run. Prints GB/s for each and the ratio (goal: >= 0.8x nginx).
//
// Usage: artifacts_bench [--seconds 5] [--rounds 2] [--clients 64] [--range-bytes 1048576]
//                        [--server-threads 2] [--work-dir /tmp/provisioner-bench-artifacts]
//                        [--nginx /usr/sbin/nginx]
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "controller/artifacts/artifact_server.hpp"
#include "controller/artifacts/artifact_store.hpp"

namespace fs = std::filesystem;
using namespace provisioner::artifacts;
using Clock = std::chrono::steady_clock;

namespace {

struct Options {
  double seconds = 5;
  int rounds = 2;
  int clients = 64;
  std::uint64_t range_bytes = 1 << 20;
  int server_threads = 2;
  std::uint64_t file_bytes = 1ull << 30;
  fs::path work_dir = "/tmp/provisioner-bench-artifacts";
  std::string nginx = "/usr/sbin/nginx";
};

[[noreturn]] void die(const std::string& msg) {
  std::cerr << "artifacts_bench: " << msg << "\n";
  std::exit(1);
}

// Real random bytes (not sparse, not compressible), written once and cached across runs.
std::string prepare_file(const Options& o, ArtifactStore& store) {
  auto marker = o.work_dir / "bench.sha256";
  if (std::ifstream in(marker); in) {
    std::string sha;
    in >> sha;
    auto p = store.path_of(sha);
    std::error_code ec;
    if (p && fs::file_size(*p, ec) == o.file_bytes) return sha;
  }
  std::cerr << "writing " << (o.file_bytes >> 20) << " MiB of random bytes (cached for next runs)...\n";
  auto src = o.work_dir / "source.bin";
  {
    std::ofstream out(src, std::ios::binary | std::ios::trunc);
    std::mt19937_64 gen(20240601);
    std::vector<std::uint64_t> buf(1 << 19);  // 4 MiB
    for (std::uint64_t done = 0; done < o.file_bytes; done += buf.size() * 8) {
      for (auto& w : buf) w = gen();
      out.write(reinterpret_cast<const char*>(buf.data()),
                static_cast<std::streamsize>(std::min<std::uint64_t>(buf.size() * 8, o.file_bytes - done)));
    }
    if (!out) die("cannot write " + src.string());
  }
  auto info = store.put_file(src);
  fs::remove(src);
  if (!info) die("put_file: " + info.error().message);
  std::ofstream(marker) << info->sha256 << "\n";
  return info->sha256;
}

void warm_page_cache(const fs::path& p) {
  int fd = ::open(p.c_str(), O_RDONLY);
  if (fd < 0) die("open " + p.string());
  std::vector<char> buf(4 << 20);
  while (::read(fd, buf.data(), buf.size()) > 0) {
  }
  ::close(fd);
}

std::uint16_t free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

int connect_to(std::uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  timeval tv{2, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

class Nginx {
 public:
  Nginx(const Options& o, const fs::path& file) {
    char tmpl[] = "/tmp/provisioner-bench-nginx-XXXXXX";
    if (!::mkdtemp(tmpl)) die("mkdtemp");
    dir_ = tmpl;
    fs::create_directories(dir_ / "www");
    fs::permissions(dir_, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                              fs::perms::others_read | fs::perms::others_exec);
    fs::create_symlink(file, dir_ / "www" / "bench.iso");
    port_ = free_port();
    std::ofstream conf(dir_ / "nginx.conf");
    // Tuned the way one would deploy nginx for this: sendfile, keep-alive, no access log,
    // as many workers as our server has event loops.
    conf << "worker_processes " << o.server_threads << ";\n"
         << "pid " << (dir_ / "nginx.pid").string() << ";\n"
         << "error_log " << (dir_ / "error.log").string() << " warn;\n"
         << "events { worker_connections 4096; }\n"
         << "http {\n"
         << "  access_log off;\n"
         << "  sendfile on;\n  tcp_nopush on;\n  tcp_nodelay on;\n"
         << "  keepalive_requests 1000000;\n  keepalive_timeout 120s;\n"
         << "  client_body_temp_path " << (dir_ / "body").string() << ";\n"
         << "  types { application/x-iso9660-image iso; }\n"
         << "  server {\n    listen 127.0.0.1:" << port_ << ";\n"
         << "    root " << (dir_ / "www").string() << ";\n  }\n}\n";
    conf.close();
    pid_ = ::fork();
    if (pid_ == 0) {
      ::execl(o.nginx.c_str(), o.nginx.c_str(), "-p", dir_.c_str(), "-e",
              (dir_ / "error.log").c_str(), "-c", (dir_ / "nginx.conf").c_str(), "-g",
              "daemon off;", static_cast<char*>(nullptr));
      std::perror("exec nginx");
      ::_exit(127);
    }
    for (int i = 0; i < 100; ++i) {
      int fd = connect_to(port_);
      if (fd >= 0) {
        ::close(fd);
        return;
      }
      int st;
      if (::waitpid(pid_, &st, WNOHANG) == pid_) {
        pid_ = -1;
        die("nginx exited at start-up; see " + (dir_ / "error.log").string());
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    die("nginx did not start listening");
  }
  ~Nginx() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      ::waitpid(pid_, nullptr, 0);
    }
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::uint16_t port() const { return port_; }

 private:
  fs::path dir_;
  std::uint16_t port_ = 0;
  pid_t pid_ = -1;
};

struct LoadResult {
  std::uint64_t bytes = 0;
  std::uint64_t requests = 0;
  std::uint64_t errors = 0;
  double seconds = 0;
};

// One client: a keep-alive connection doing Range GETs back to back until the deadline.
// Bodies are discarded with MSG_TRUNC so the client spends as little CPU as possible on the
// 2-core machine the servers share with it; both servers get the same client.
void client_loop(const Options& o, std::uint16_t port, const std::string& path, unsigned seed,
                 Clock::time_point deadline, std::atomic<std::uint64_t>& bytes,
                 std::atomic<std::uint64_t>& requests, std::atomic<std::uint64_t>& errors) {
  std::mt19937_64 gen(seed);
  std::uniform_int_distribution<std::uint64_t> offset(0, o.file_bytes - o.range_bytes);
  std::vector<char> buf(1 << 20);
  std::uint64_t my_bytes = 0, my_requests = 0, my_errors = 0;
  int fd = -1;
  while (Clock::now() < deadline) {
    if (fd < 0 && (fd = connect_to(port)) < 0) {
      ++my_errors;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      continue;
    }
    std::uint64_t a = offset(gen);
    std::string req = "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nRange: bytes=" +
                      std::to_string(a) + "-" + std::to_string(a + o.range_bytes - 1) + "\r\n\r\n";
    bool ok = ::send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size());
    std::size_t have = 0, header_end = std::string::npos;
    while (ok && header_end == std::string::npos) {
      ssize_t n = ::recv(fd, buf.data() + have, 65536, 0);
      if (n <= 0) {
        ok = false;
        break;
      }
      have += static_cast<std::size_t>(n);
      std::string_view v(buf.data(), have);
      header_end = v.find("\r\n\r\n");
      if (header_end == std::string::npos && have > 60000) ok = false;
    }
    std::uint64_t length = 0;
    if (ok) {
      std::string_view head(buf.data(), header_end);
      auto cl = head.find("Content-Length: ");
      ok = head.substr(9, 3) == "206" && cl != std::string_view::npos;
      if (ok) length = std::stoull(std::string(head.substr(cl + 16, 20)));
      ok = ok && length == o.range_bytes;
    }
    if (ok) {
      std::uint64_t got = have - (header_end + 4);
      my_bytes += got;
      while (got < length) {
        ssize_t n = ::recv(fd, buf.data(), std::min<std::uint64_t>(length - got, buf.size()), MSG_TRUNC);
        if (n <= 0) {
          ok = false;
          break;
        }
        got += static_cast<std::uint64_t>(n);
        my_bytes += static_cast<std::uint64_t>(n);
        if (Clock::now() >= deadline) break;
      }
      if (ok && got == length) ++my_requests;
      if (got < length) {  // stopped mid-body at the deadline: the connection is spent
        ::close(fd);
        fd = -1;
      }
    }
    if (!ok) {
      if (Clock::now() < deadline) ++my_errors;
      if (fd >= 0) ::close(fd);
      fd = -1;
    }
  }
  if (fd >= 0) ::close(fd);
  bytes += my_bytes;
  requests += my_requests;
  errors += my_errors;
}

LoadResult load(const Options& o, std::uint16_t port, const std::string& path, unsigned seed) {
  std::atomic<std::uint64_t> bytes{0}, requests{0}, errors{0};
  auto start = Clock::now();
  auto deadline = start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.seconds));
  std::vector<std::thread> threads;
  for (int i = 0; i < o.clients; ++i)
    threads.emplace_back(client_loop, std::cref(o), port, std::cref(path), seed * 1000 + i, deadline,
                         std::ref(bytes), std::ref(requests), std::ref(errors));
  for (auto& t : threads) t.join();
  return {bytes.load(), requests.load(), errors.load(),
          std::chrono::duration<double>(std::max(Clock::now(), deadline) - start).count()};
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) die("missing value for " + a);
      return argv[++i];
    };
    if (a == "--seconds") o.seconds = std::stod(next());
    else if (a == "--rounds") o.rounds = std::stoi(next());
    else if (a == "--clients") o.clients = std::stoi(next());
    else if (a == "--range-bytes") o.range_bytes = std::stoull(next());
    else if (a == "--server-threads") o.server_threads = std::stoi(next());
    else if (a == "--work-dir") o.work_dir = next();
    else if (a == "--nginx") o.nginx = next();
    else die("unknown option " + a);
  }
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  ::signal(SIGPIPE, SIG_IGN);
  Options o = parse(argc, argv);
  fs::create_directories(o.work_dir);
  ArtifactStore store(o.work_dir / "store");
  std::string sha = prepare_file(o, store);
  auto file = *store.path_of(sha);
  warm_page_cache(file);

  // Registering a single-ISO composite hashes the served bytes once (the base is read, not
  // copied): its cost per job is worth knowing next to the serving figures.
  auto t0 = Clock::now();
  auto comp = store.put_composite({CompositePart::bytes(std::string(65536, 'h')),
                                   CompositePart::region(sha, 65536, o.file_bytes - 65536),
                                   CompositePart::bytes("per-job session " + std::to_string(::getpid()))});
  double composite_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  if (!comp) die("put_composite: " + comp.error().message);

  ArtifactServerOptions so;
  so.threads = o.server_threads;
  // The connection cap comes from the open-file limit, as in the controller; all clients are
  // on 127.0.0.1, so the per-address cap must admit every one of them.
  so.max_connections_per_client = static_cast<std::size_t>(o.clients);
  ArtifactServer ours(store, so);
  auto port = ours.start();
  if (!port) die("start: " + port.error().message);
  Nginx nginx(o, file);

  const std::string our_path = ArtifactServer::url_path(sha, "bench.iso");
  LoadResult mine, theirs;
  auto add = [](LoadResult& sum, const LoadResult& r) {
    sum.bytes += r.bytes;
    sum.requests += r.requests;
    sum.errors += r.errors;
    sum.seconds += r.seconds;
  };
  auto gbps = [](const LoadResult& r) { return r.bytes / r.seconds / 1e9; };
  for (int round = 0; round < o.rounds; ++round) {
    // Alternate who goes first so neither always runs on a hotter or colder machine.
    bool ours_first = round % 2 == 0;
    for (int k = 0; k < 2; ++k) {
      bool is_ours = (k == 0) == ours_first;
      auto r = is_ours ? load(o, *port, our_path, round * 2 + k + 1)
                       : load(o, nginx.port(), "/bench.iso", round * 2 + k + 1);
      std::printf("  round %d %-11s %6.2f GB/s  %7.0f req/s  errors %llu\n", round + 1,
                  is_ours ? "provisioner" : "nginx", gbps(r), r.requests / r.seconds,
                  static_cast<unsigned long long>(r.errors));
      add(is_ours ? mine : theirs, r);
    }
  }
  ours.stop();
  // Drop this run's composite, keep the cached file.
  if (auto gc = store.gc({sha}, std::chrono::seconds(0)); !gc)
    std::cerr << "artifacts_bench: gc: " << gc.error().message << "\n";
  std::printf("artifacts bench: %llu MiB file of random bytes, %d clients, %llu KiB random Range GETs, "
              "%d x %.1f s per server, %d server threads / nginx workers, %u cores\n",
              static_cast<unsigned long long>(o.file_bytes >> 20), o.clients,
              static_cast<unsigned long long>(o.range_bytes >> 10), o.rounds, o.seconds,
              o.server_threads, std::thread::hardware_concurrency());
  std::printf("provisioner: %.2f GB/s (%.0f req/s, %llu errors)\n", gbps(mine),
              mine.requests / mine.seconds, static_cast<unsigned long long>(mine.errors));
  std::printf("nginx:       %.2f GB/s (%.0f req/s, %llu errors)\n", gbps(theirs),
              theirs.requests / theirs.seconds, static_cast<unsigned long long>(theirs.errors));
  std::printf("ratio provisioner/nginx: %.2f (goal >= 0.80)\n", gbps(mine) / gbps(theirs));
  std::printf("composite registration over the %llu MiB base: %.0f ms\n",
              static_cast<unsigned long long>(o.file_bytes >> 20), composite_ms);
  return 0;
}
