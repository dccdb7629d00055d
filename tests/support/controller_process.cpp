#include "tests/support/controller_process.hpp"

#include <array>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "common/atomic_file.hpp"
#include "common/crypto.hpp"
#include "controller/store/sql_connection.hpp"

namespace provisioner::test {

TempDir::TempDir() {
  std::string tmpl = (std::filesystem::temp_directory_path() / "provisioner-test-XXXXXX").string();
  if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

ControllerProcess::ControllerProcess(std::string extra_toml, std::string log_format, std::string artifacts_toml,
                                     std::string listen_host)
    : data_dir_(dir_.path() / "data"), port_(free_port()), artifacts_port_(free_port()) {
  // A controller on PostgreSQL names its database at the config's top level.
  if (auto at = extra_toml.find("database_url = \""); at != std::string::npos) {
    auto start = at + 16;
    database_url_ = extra_toml.substr(start, extra_toml.find('"', start) - start);
  }
  std::ostringstream config;
  config << "listen = \"" << listen_host << ":" << port_ << "\"\n"
         << "data_dir = \"" << data_dir_.string() << "\"\n"
         << "recipes_dir = \"" << PROVISIONER_SOURCE_DIR << "/recipes\"\n"
         << extra_toml << "\n"
         << "[log]\nformat = \"" << log_format << "\"\nlevel = \"debug\"\n"
         << "[artifacts]\nlisten = \"" << listen_host << ":" << artifacts_port_ << "\"\n"
         << artifacts_toml << "\n";
  // A fast tick keeps tests quick; a caller with a [reconciler] table of its own sets it there.
  if (extra_toml.find("[reconciler]") == std::string::npos)
    config << "[reconciler]\ntick_ms = 50\nidle_recheck_ms = 100\n";
  for (auto [name, role, token] : {std::tuple{"admin", "admin", kAdminToken},
                                   std::tuple{"operator", "operator", kOperatorToken},
                                   std::tuple{"auditor", "auditor", kAuditorToken}, std::tuple{"ci", "ci", kCiToken}})
    config << "[[tokens]]\nname = \"" << name << "\"\nrole = \"" << role << "\"\nsha256 = \""
           << crypto::sha256_hex(token) << "\"\n";
  std::ofstream(dir_.path() / "controller.toml") << config.str();
}

ControllerProcess::~ControllerProcess() {
  if (running()) kill(SIGTERM);
}

void ControllerProcess::start() {
  std::string bin = PROVISIONER_CONTROLLER_BIN, config = (dir_.path() / "controller.toml").string();
  std::string log = log_file().string();
  pid_ = ::fork();
  if (pid_ == 0) {
    int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    ::execl(bin.c_str(), bin.c_str(), "--config", config.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      std::string how = WIFSIGNALED(status) ? "killed by signal " + std::to_string(WTERMSIG(status))
                                            : "exit status " + std::to_string(WEXITSTATUS(status));
      throw std::runtime_error("controller exited at start-up (" + how + "); log:\n" + log_text());
    }
    try {
      if (tls_ ? accepts_connections(port_) : http_request(port_, "GET", "/healthz").status == 200) return;
    } catch (const std::exception&) {
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  throw std::runtime_error("controller did not answer /healthz within 20 s; log:\n" + log_text());
}

void ControllerProcess::kill(int signal) {
  if (pid_ <= 0) return;
  ::kill(pid_, signal);
  int status = 0;
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
}

std::optional<std::chrono::milliseconds> ControllerProcess::stop(int signal, std::chrono::milliseconds patience,
                                                                int* status) {
  if (pid_ <= 0) return std::chrono::milliseconds(0);
  auto sent = std::chrono::steady_clock::now();
  ::kill(pid_, signal);
  int st = 0;
  while (std::chrono::steady_clock::now() - sent < patience) {
    if (::waitpid(pid_, &st, WNOHANG) == pid_) {
      pid_ = -1;
      if (status) *status = st;
      return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - sent);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  kill(SIGKILL);
  return std::nullopt;
}

std::string ControllerProcess::log_text() const {
  auto text = read_file(log_file());
  return text ? *text : std::string();
}

HttpResponse ControllerProcess::get(const std::string& target, const char* token) const {
  Headers h;
  if (token) h.push_back({"Authorization", std::string("Bearer ") + token});
  return http_request(port_, "GET", target, h);
}

HttpResponse ControllerProcess::post(const std::string& target, const std::string& body, const char* token,
                                     Headers extra) const {
  Headers h = std::move(extra);
  h.push_back({"Content-Type", "application/json"});
  if (token) h.push_back({"Authorization", std::string("Bearer ") + token});
  return http_request(port_, "POST", target, h, body);
}

nlohmann::json ControllerProcess::wait_for_status(const std::string& job_id, const std::string& status,
                                                 int seconds) const {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  nlohmann::json job;
  while (std::chrono::steady_clock::now() < deadline) {
    job = get("/api/v1/jobs/" + job_id).json();
    if (job.value("status", "") == status) return job;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  throw std::runtime_error("job " + job_id + " did not reach " + status + ": " + job.dump());
}

namespace {

// Every job's (id, server serial, webhook key unsealed) the query selects, read beside the
// running controller: from its SQLite file, or from its PostgreSQL database.
std::vector<std::array<std::string, 3>> read_job_keys(const std::filesystem::path& data_dir,
                                                      const std::string& database_url, const char* sql,
                                                      const std::string& bound) {
  auto key = read_file(data_dir / "secret.key");
  if (!key) throw std::runtime_error("no secret.key");
  auto database = database_url.empty() ? sqlite_database((data_dir / "provisioner.db").string())
                                       : postgres_database(database_url);
  auto db = database->open_reader();
  if (!db) throw std::runtime_error("cannot open the controller's database: " + db.error().message);
  auto st = (*db)->prepare(sql);
  if (!st) throw std::runtime_error(st.error().message);
  if (!bound.empty()) (*st)->bind_text(1, bound);
  std::vector<std::array<std::string, 3>> out;
  while ((*st)->step() == Step::row) {
    auto text = [&](int i) { return (*st)->text(i); };
    auto opened = crypto::open(*key, text(2));
    if (!opened) throw std::runtime_error("cannot unseal the webhook key of " + text(0));
    out.push_back({text(0), text(1), *opened});
  }
  return out;
}

}  // namespace

std::string ControllerProcess::webhook_key(const std::string& job_id) const {
  auto rows = read_job_keys(data_dir_, database_url_, "SELECT id, server_serial, webhook_key_sealed FROM jobs WHERE id = ?", job_id);
  if (rows.empty()) throw std::runtime_error("cannot unseal the webhook key of " + job_id);
  return rows.front()[2];
}

std::map<std::string, ControllerProcess::JobKey> ControllerProcess::job_keys_by_serial() const {
  std::map<std::string, JobKey> out;
  for (auto& [id, serial, key] :
       read_job_keys(data_dir_, database_url_, "SELECT id, server_serial, webhook_key_sealed FROM jobs ORDER BY seq", ""))
    out[serial] = JobKey{id, key};
  return out;
}

}  // namespace provisioner::test
