#pragma once
// A real PostgreSQL 15 server for one test process (Debian's postgresql-15): initdb into a
// temporary directory, listening on a Unix socket in it only (listen_addresses = ''), no
// TCP port at all; stopped and removed by the destructor. As root, the server runs as the
// `postgres` user (it refuses to run as root).
#include <memory>
#include <string>

#include "tests/support/controller_process.hpp"

namespace provisioner::test {

class PostgresServer {
 public:
  // nullptr and `why` when it cannot start (not installed, initdb failed). `settings`: extra
  // server settings ("-c name=value …"); by default fsync is off (tests never pull the power).
  static std::unique_ptr<PostgresServer> start(std::string& why, const std::string& settings = "-c fsync=off");
  ~PostgresServer();

  // A new empty database; its libpq URL ("postgresql:///name?host=<socket dir>&user=postgres").
  std::string create_database(const std::string& name);
  std::string url(const std::string& database) const;
  const std::filesystem::path& dir() const { return dir_.path(); }

 private:
  PostgresServer() = default;
  std::string run(const std::string& tool, const std::string& args, int& status) const;
  TempDir dir_;
  std::string as_user_;  // "runuser -u postgres -- " as root, else ""
};

}  // namespace provisioner::test
