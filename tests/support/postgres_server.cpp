#include "tests/support/postgres_server.hpp"

#include <unistd.h>

#include <stdexcept>

#include "tests/support/netns_lab.hpp"

namespace provisioner::test {

namespace {
const char* kBin = "/usr/lib/postgresql/15/bin/";
}

std::string PostgresServer::run(const std::string& tool, const std::string& args, int& status) const {
  auto r = shell(as_user_ + kBin + tool + " " + args);
  status = r.status;
  return r.output;
}

std::unique_ptr<PostgresServer> PostgresServer::start(std::string& why, const std::string& settings) {
  if (::access((std::string(kBin) + "initdb").c_str(), X_OK) != 0) {
    why = "PostgreSQL 15 is not installed (postgresql-15, scripts/install-deps)";
    return nullptr;
  }
  std::unique_ptr<PostgresServer> s(new PostgresServer());
  if (::geteuid() == 0) {
    s->as_user_ = "runuser -u postgres -- ";
    shell_must("chown postgres " + s->dir().string());
  }
  const auto data = (s->dir() / "data").string();
  int status = 0;
  auto out = s->run("initdb", "-D " + data + " -A trust -U postgres --no-sync -E UTF8 --locale=C.UTF-8", status);
  if (status != 0) {
    why = "initdb failed: " + out;
    return nullptr;
  }
  // Only the socket in the test's own directory.
  out = s->run("pg_ctl", "-D " + data + " -l " + (s->dir() / "server.log").string() +
                              " -w -o \"-c listen_addresses='' -k " + s->dir().string() +
                              " -c max_connections=200 " + settings + "\" start",
               status);
  if (status != 0) {
    why = "the PostgreSQL server did not start: " + out + shell("cat " + (s->dir() / "server.log").string()).output;
    return nullptr;
  }
  return s;
}

PostgresServer::~PostgresServer() {
  int status = 0;
  run("pg_ctl", "-D " + (dir() / "data").string() + " -m immediate -w stop", status);
}

std::string PostgresServer::url(const std::string& database) const {
  return "postgresql:///" + database + "?host=" + dir().string() + "&user=postgres";
}

std::string PostgresServer::create_database(const std::string& name) {
  int status = 0;
  auto out = run("createdb", "-h " + dir().string() + " -U postgres " + name, status);
  if (status != 0) throw std::runtime_error("createdb " + name + ": " + out);
  return url(name);
}

}  // namespace provisioner::test
