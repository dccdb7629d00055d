// One fleet over N servers on mock BMCs (HTTPS with a self-signed certificate, +D ms on every
// Redfish call), in single-iso media mode (a BMC with one virtual CD slot: Dell iDRAC and its
// kind), max_parallel N. A simulated maintenance OS reports success a fixed install time after
// its server was reset. Meanwhile a steady load of API GETs measures the API's latency.
//   fleet_bench [--servers N] [--delay-ms D] [--install-s S] [--api-rps R] [--tls 0|1]
//               [--mode single-iso|dual-cd] [--base-mib M] [--workers W]
// Figures: time until every reset is issued, Redfish requests and TLS handshakes per job, time
// until every job is complete after the install time, the controller's peak RSS, API GET p50
// and p99 under R req/s, the fleet's own view at the end. --base-mib pads the maintenance ISO
// (what a single-ISO job composes with its task) to show what its size costs.
// N above 2,000: the mock BMCs spread over 127.0.x.y addresses (a port range per address).
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "tests/integration/controller/iso_tools.hpp"
#include "tests/integration/controller/webhook_signer.hpp"
#include "tests/support/controller_process.hpp"
#include "tests/support/mock_bmc.hpp"
#include "tests/support/postgres_server.hpp"

using namespace provisioner;
using namespace provisioner::test;
using Clock = std::chrono::steady_clock;

namespace {

long status_kib(pid_t pid, const char* field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(field, 0) == 0) return std::stol(line.substr(std::string(field).size()));
  return -1;
}

double secs(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

}  // namespace

int main(int argc, char** argv) {
  int servers = 1000, delay_ms = 100, install_s = 20, api_rps = 200, tls = 1, base_mib = 0, workers = 256;  // the controller's default workers
  std::string mode = "single-iso", store = "sqlite";
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i], v = argv[i + 1];
    if (a == "--servers") servers = std::stoi(v);
    else if (a == "--delay-ms") delay_ms = std::stoi(v);
    else if (a == "--install-s") install_s = std::stoi(v);
    else if (a == "--api-rps") api_rps = std::stoi(v);
    else if (a == "--tls") tls = std::stoi(v);
    else if (a == "--mode") mode = v;
    else if (a == "--base-mib") base_mib = std::stoi(v);
    else if (a == "--workers") workers = std::stoi(v);
    else if (a == "--store") store = v;
  }
  rlimit fds{1 << 20, 1 << 20};
  if (setrlimit(RLIMIT_NOFILE, &fds) != 0) {
    fds = {65536, 65536};
    setrlimit(RLIMIT_NOFILE, &fds);
  }

  TempDir tmp;
  auto base = make_maintenance_iso(tmp.path());
  if (base_mib > 0) {
    // A large maintenance ISO: the same boot files plus a payload of the given size.
    auto root = tmp.path() / "maint-root";
    std::ofstream(root / "payload.bin", std::ios::binary).seekp((std::int64_t(base_mib) << 20) - 1) << '\0';
    run("xorriso -as mkisofs -quiet -R -J -V MAINT_OS -b boot/bios.img -no-emul-boot -boot-load-size 4 "
        "-eltorito-alt-boot -e boot/efi.img -no-emul-boot -o '" + base.string() + "' '" + root.string() + "' 2>&1");
  }
  auto cert = tmp.path() / "cert.pem", key = tmp.path() / "key.pem";
  if (tls) {
    std::string cmd = "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=mock-bmc"
                      " -addext subjectAltName=IP:127.0.0.1 -keyout " + key.string() + " -out " + cert.string() +
                      " 2>/dev/null";
    if (std::system(cmd.c_str()) != 0) return 2;
  }
  auto serial = [](int i) { return "FLT" + std::to_string(1000000 + i); };
  std::vector<std::unique_ptr<MockBmc>> bmcs;
  auto made = Clock::now();
  for (int i = 0; i < servers; ++i) {
    MockBmcOptions o;
    if (tls) o.tls_cert_file = cert.string(), o.tls_key_file = key.string();
    o.serial = serial(i);
    if (mode == "single-iso") o.slots = {{"CD1", {"CD", "DVD"}}};  // one virtual CD, as an iDRAC has
    if (servers > 2000) o.bind_address = "127.0." + std::to_string(1 + i / 250) + "." + std::to_string(1 + i % 250);
    bmcs.push_back(std::make_unique<MockBmc>(o));
    bmcs.back()->set_hook([delay_ms](const RecordedRequest&, int) { return MockAction::delay(delay_ms); });
  }
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // progress lines as they come
  std::printf("%d mock BMCs over %s (+%d ms per Redfish call) up in %.1f s; media mode %s; maintenance ISO %d MiB\n",
              servers, tls ? "HTTPS" : "HTTP", delay_ms, secs(Clock::now() - made), mode.c_str(), base_mib);

  // Info, as a site runs it: the test harness's debug level logs every Redfish request.
  ::setenv("PROVISIONER_LOG_LEVEL", "info", 1);
  // --store postgres: a PostgreSQL 15 server of its own, durable as SQLite's WAL with
  // synchronous=NORMAL is (fsync on; a commit survives the controller's crash, not the
  // machine's power: synchronous_commit off).
  std::unique_ptr<PostgresServer> postgres;
  std::string database;
  if (store == "postgres") {
    std::string why;
    postgres = PostgresServer::start(why, "-c synchronous_commit=off -c shared_buffers=256MB");
    if (!postgres) {
      std::fprintf(stderr, "%s\n", why.c_str());
      return 2;
    }
    database = "database_url = \"" + postgres->create_database("provisioner") + "\"\n";
  }
  std::printf("store: %s\n", store.c_str());
  ControllerProcess controller(database + "[reconciler]\ntick_ms = 100\nworkers = " + std::to_string(workers) +
                                   "\n[redfish]\nmax_concurrent_requests = 1024\npower_poll_ms = 200\n",
                               "text", "maintenance_iso = \"" + base.string() + "\"\n");
  controller.start();

  // The servers, registered as an operator would.
  std::vector<std::string> ids(static_cast<std::size_t>(servers));
  {
    std::vector<std::thread> t;
    for (int k = 0; k < 8; ++k)
      t.emplace_back([&, k] {
        for (int i = k; i < servers; i += 8) {
          nlohmann::json record{{"serial", serial(i)}, {"media_mode", mode}, {"labels", {{"rack", "r" + std::to_string(i / 40)}}},
                                {"bmc", {{"address", bmcs[i]->address()}, {"username", "admin"},
                                         {"password", "mock-bmc-password"}, {"verify_tls", false}}}};
          auto r = controller.post("/api/v1/servers", record.dump());
          if (r.status != 201) {
            std::fprintf(stderr, "server %d: %d %s\n", i, r.status, r.body.c_str());
            std::exit(2);
          }
          ids[static_cast<std::size_t>(i)] = r.json()["id"];
        }
      });
    for (auto& x : t) x.join();
  }

  // A steady API load: GET a job or the fleet, api_rps a second, latency recorded.
  std::atomic<bool> stop{false};
  std::mutex lat_mutex;
  std::vector<double> latencies;
  std::vector<std::pair<Clock::time_point, double>> timed;  // (sent at, ms): split by phase
  std::string fleet_id;
  std::mutex fleet_mutex;
  std::thread load([&] {
    if (api_rps <= 0) return;
    auto next = Clock::now();
    auto period = std::chrono::nanoseconds(1'000'000'000 / api_rps);
    std::vector<std::thread> inflight;
    std::atomic<int> running{0};
    int n = 0;
    while (!stop) {
      next += period;
      std::this_thread::sleep_until(next);
      std::string target = "/api/v1/servers/" + ids[static_cast<std::size_t>(n++ % servers)];
      {
        std::lock_guard l(fleet_mutex);
        if (!fleet_id.empty() && n % 4 == 0) target = "/api/v1/fleets?limit=5";
      }
      if (running > 64) continue;  // never a backlog of our own making
      ++running;
      std::thread([&, target] {
        auto t0 = Clock::now();
        auto r = controller.get(target);
        double ms = secs(Clock::now() - t0) * 1000;
        if (r.status == 200) {
          std::lock_guard l(lat_mutex);
          latencies.push_back(ms);
          timed.emplace_back(t0, ms);
        }
        --running;
      }).detach();
    }
    while (running > 0) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  });

  auto started = Clock::now();
  // recipes/debian-12.json in the chosen media mode.
  nlohmann::json recipe = nlohmann::json::parse(std::ifstream(std::string(PROVISIONER_SOURCE_DIR) + "/recipes/debian-12.json"));
  recipe["media_mode"] = mode;
  auto created = controller.post("/api/v1/fleets", nlohmann::json{{"servers", ids}, {"recipe", recipe},
                                                                  {"max_parallel", servers}, {"name", "bench"}}.dump());
  if (created.status != 201) {
    std::fprintf(stderr, "fleet: %d %s\n", created.status, created.body.c_str());
    return 2;
  }
  {
    std::lock_guard l(fleet_mutex);
    fleet_id = created.json()["id"];
  }

  // The simulated maintenance OS: install_s after its server's reset, each reports success.
  // Its job id and webhook key come from the controller's database (a real one reads them
  // from its task ISO), all at once and at most once a second; the reports go out from a
  // small pool, as many machines would send them.
  std::vector<Clock::time_point> reset_at(static_cast<std::size_t>(servers));
  std::vector<bool> reset(static_cast<std::size_t>(servers), false), reported(static_cast<std::size_t>(servers), false);
  int resets = 0;
  long requests_at_reset = 0;  // Redfish requests until every server was reset (the boot half)
  Clock::time_point all_reset{}, keys_read{};
  std::map<std::string, ControllerProcess::JobKey> keys;  // serial → its job
  std::mutex out_mutex;
  std::condition_variable out_cv;
  std::deque<std::pair<std::string, ControllerProcess::JobKey>> outbox;
  std::atomic<int> sent{0};
  bool senders_stop = false;
  std::vector<std::thread> senders;
  for (int k = 0; k < 8; ++k)
    senders.emplace_back([&] {
      for (;;) {
        std::pair<std::string, ControllerProcess::JobKey> item;
        {
          std::unique_lock l(out_mutex);
          out_cv.wait(l, [&] { return senders_stop || !outbox.empty(); });
          if (outbox.empty()) return;
          item = std::move(outbox.front());
          outbox.pop_front();
        }
        auto body = R"({"job_id":")" + item.second.job_id + R"(","status":"success"})";
        auto r = send_webhook(controller, item.first, item.second.key, body);
        if (r.status != 200) std::fprintf(stderr, "webhook %s: %d %s\n", item.first.c_str(), r.status, r.body.c_str());
        ++sent;
      }
    });
  auto deadline = started + std::chrono::seconds(3600);
  auto progress = Clock::now();
  while (Clock::now() < deadline && sent < servers) {
    for (int i = 0; i < servers; ++i) {
      auto u = static_cast<std::size_t>(i);
      if (!reset[u] && bmcs[u]->reset_count() > 0) {
        reset[u] = true;
        reset_at[u] = Clock::now();
        if (++resets == servers) {
          all_reset = Clock::now();
          for (const auto& b : bmcs) requests_at_reset += static_cast<long>(b->request_count());
        }
      }
    }
    if (Clock::now() - progress >= std::chrono::seconds(10)) {
      std::printf("  %.0f s: %d reset, %d reported\n", secs(Clock::now() - started), resets, sent.load());
      progress = Clock::now();
    }
    bool due = false, unknown = false;  // a report is due; one of them for a job whose key we lack
    for (int i = 0; i < servers && !unknown; ++i) {
      auto u = static_cast<std::size_t>(i);
      if (reset[u] && !reported[u] && Clock::now() - reset_at[u] >= std::chrono::seconds(install_s)) {
        due = true;
        unknown = !keys.contains(serial(i));
      }
    }
    if (unknown && Clock::now() - keys_read >= std::chrono::seconds(1)) {
      keys = controller.job_keys_by_serial();
      keys_read = Clock::now();
    }
    for (int i = 0; i < servers && due; ++i) {
      auto u = static_cast<std::size_t>(i);
      if (!reset[u] || reported[u] || Clock::now() - reset_at[u] < std::chrono::seconds(install_s)) continue;
      auto job = keys.find(serial(i));
      if (job == keys.end()) continue;
      {
        std::lock_guard l(out_mutex);
        outbox.emplace_back(serial(i), job->second);
      }
      out_cv.notify_one();
      reported[u] = true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  {
    std::lock_guard l(out_mutex);
    senders_stop = true;
  }
  out_cv.notify_all();
  for (auto& t : senders) t.join();
  auto last_report = Clock::now();
  nlohmann::json f;
  while (Clock::now() < deadline) {
    f = controller.get("/api/v1/fleets?limit=1").json()["fleets"][0];  // the counts, not every member
    if (f["status"] != "running") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  auto ended = Clock::now();
  stop = true;
  load.join();

  long requests = 0, connections = 0, handshakes = 0, resumed = 0;
  for (const auto& b : bmcs) {
    requests += static_cast<long>(b->requests().size());
    auto c = b->counters();
    connections += c.connections;
    handshakes += c.handshakes;
    resumed += c.resumed;
  }
  std::sort(latencies.begin(), latencies.end());
  auto pct = [&](double p) { return latencies.empty() ? 0.0 : latencies[static_cast<std::size_t>(p * (latencies.size() - 1))]; };
  std::printf("every reset issued after %.2f s (%d/%d)\n", resets == servers ? secs(all_reset - started) : -1.0, resets, servers);
  std::printf("Redfish requests per job until its reset: %.1f\n", static_cast<double>(requests_at_reset) / servers);
  std::printf("Redfish requests per job, whole job (boot, report, eject, boot from disk): %.1f (%ld); TCP connections per job %.2f; TLS handshakes per job %.2f (%ld resumed)\n",
              static_cast<double>(requests) / servers, requests, static_cast<double>(connections) / servers,
              static_cast<double>(handshakes) / servers, resumed);
  std::printf("every job complete %.2f s after the last report (fleet %s: %s)\n", secs(ended - last_report),
              f.value("status", "?").c_str(), f["counts"].dump().c_str());
  std::printf("fleet from creation to its end: %.2f s (install time %d s)\n", secs(ended - started), install_s);
  std::printf("controller peak RSS %.1f MB\n", status_kib(controller.pid(), "VmHWM:") / 1024.0);
  std::printf("API GET under %d req/s: %zu answered, p50 %.1f ms, p99 %.1f ms, max %.1f ms\n", api_rps, latencies.size(),
              pct(0.5), pct(0.99), latencies.empty() ? 0.0 : latencies.back());
  // The same, split: while the fleet launches (until every reset), and while it waits for the
  // installs and then cleans up.
  for (int phase = 0; phase < 2; ++phase) {
    std::vector<double> part;
    for (const auto& [at, ms] : timed)
      if ((at < all_reset) == (phase == 0)) part.push_back(ms);
    std::sort(part.begin(), part.end());
    auto p = [&](double q) { return part.empty() ? 0.0 : part[static_cast<std::size_t>(q * (part.size() - 1))]; };
    std::printf("  %s: %zu answered, p50 %.1f ms, p99 %.1f ms\n", phase == 0 ? "until every reset" : "after", part.size(),
                p(0.5), p(0.99));
  }
  if (std::getenv("FLEET_BENCH_SEQUENCE")) {  // what one BMC saw, in order
    for (const auto& line : bmcs[0]->sequence()) std::printf("  %s\n", line.c_str());
  }
  return f.value("status", "") == "succeeded" ? 0 : 1;
}
