// 1,000 jobs against mock BMCs on loopback that add 100 ms to every call: the time from the
// first submission until every server has been reset into its maintenance OS, and the
// controller's peak RSS. Goals: ≤ 30 s, ≤ 200 MB.
//   jobs_bench [--jobs N] [--delay-ms D] [--workers W] [--max-requests R] [--tls 1]
// --tls 1: the mock BMCs speak HTTPS with a self-signed certificate (verify_tls = false in the
// server records), so the TLS handshakes per job show.
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>

#include "tests/integration/controller/iso_tools.hpp"
#include "tests/support/controller_process.hpp"
#include "tests/support/mock_bmc.hpp"

using namespace provisioner::test;

namespace {

long peak_rss_kib(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::stol(line.substr(6));
  return -1;
}

}  // namespace

int main(int argc, char** argv) {
  int jobs = 1000, delay_ms = 100, workers = 256, max_requests = 512, tls = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    int v = std::atoi(argv[i + 1]);
    if (a == "--jobs") jobs = v;
    else if (a == "--delay-ms") delay_ms = v;
    else if (a == "--workers") workers = v;
    else if (a == "--max-requests") max_requests = v;
    else if (a == "--tls") tls = v;
  }
  rlimit fds{65536, 65536};
  setrlimit(RLIMIT_NOFILE, &fds);  // a thousand mock BMCs and their connections

  TempDir tmp;
  auto base = make_maintenance_iso(tmp.path());
  auto cert = tmp.path() / "cert.pem", key = tmp.path() / "key.pem";
  if (tls) {
    std::string cmd = "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=mock-bmc"
                      " -addext subjectAltName=IP:127.0.0.1 -keyout " + key.string() + " -out " + cert.string() +
                      " 2>/dev/null";
    if (std::system(cmd.c_str()) != 0) {
      std::fprintf(stderr, "openssl req failed\n");
      return 2;
    }
  }
  std::vector<std::unique_ptr<MockBmc>> bmcs;
  for (int i = 0; i < jobs; ++i) {
    MockBmcOptions o;
    if (tls) {
      o.tls_cert_file = cert.string();
      o.tls_key_file = key.string();
    }
    o.serial = "BENCH" + std::to_string(100000 + i);
    bmcs.push_back(std::make_unique<MockBmc>(o));
    bmcs.back()->set_hook([delay_ms](const RecordedRequest&, int) { return MockAction::delay(delay_ms); });
  }
  ControllerProcess controller("[reconciler]\ntick_ms = 100\nworkers = " + std::to_string(workers) +
                                   "\n[redfish]\nmax_concurrent_requests = " + std::to_string(max_requests) +
                                   "\npower_poll_ms = 200\n",
                               "text", "maintenance_iso = \"" + base.string() + "\"\n");
  controller.start();
  std::printf("%d mock BMCs over %s (+%d ms per call), controller with %d reconciler workers, %d Redfish requests in flight\n",
              jobs, tls ? "HTTPS" : "HTTP", delay_ms, workers, max_requests);

  auto started = std::chrono::steady_clock::now();
  std::vector<std::thread> submitters;
  std::atomic<int> failed_posts{0};
  for (int t = 0; t < 8; ++t)
    submitters.emplace_back([&, t] {
      for (int i = t; i < jobs; i += 8) {
        nlohmann::json body{{"server",
                             {{"serial", "BENCH" + std::to_string(100000 + i)},
                              {"bmc", {{"address", bmcs[i]->address()}, {"username", "admin"},
                                       {"password", "mock-bmc-password"}, {"verify_tls", false}}}}},
                            {"recipe_ref", "debian-12"}};
        if (controller.post("/api/v1/jobs", body.dump()).status != 201) ++failed_posts;
      }
    });
  for (auto& t : submitters) t.join();
  auto submitted = std::chrono::steady_clock::now();

  int reset = 0;
  auto deadline = started + std::chrono::seconds(600);
  while (std::chrono::steady_clock::now() < deadline) {
    reset = 0;
    for (const auto& b : bmcs) reset += !b->resets().empty();
    if (reset == jobs) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  auto finished = std::chrono::steady_clock::now();
  auto secs = [](auto d) { return std::chrono::duration<double>(d).count(); };
  long requests = 0, connections = 0, handshakes = 0;
  for (const auto& b : bmcs) {
    requests += static_cast<long>(b->requests().size());
    auto c = b->counters();
    connections += c.connections;
    handshakes += c.handshakes;
  }
  std::printf("submitted %d jobs in %.2f s (%d failed)\n", jobs, secs(submitted - started), failed_posts.load());
  std::printf("every reset issued after %.2f s (%d/%d servers reset), %ld Redfish requests (%.1f per job)\n",
              secs(finished - started), reset, jobs, requests, static_cast<double>(requests) / jobs);
  std::printf("%ld TCP connections accepted by the BMCs (%.1f per job), %ld TLS handshakes\n", connections,
              static_cast<double>(connections) / jobs, handshakes);
  std::printf("controller peak RSS %.1f MB\n", peak_rss_kib(controller.pid()) / 1024.0);
  return reset == jobs ? 0 : 1;
}
