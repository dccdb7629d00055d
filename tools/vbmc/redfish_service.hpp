#pragma once
// The Redfish resource model of the virtual BMC, independent of the socket layer:
// ServiceRoot, SessionService (X-Auth-Token) and basic auth, one ComputerSystem and one
// Manager per QEMU machine, VirtualMedia under the Manager. Resources carry ETags (a hash of
// their body) and PATCHes honour If-Match.
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "tools/vbmc/http_server.hpp"

namespace provisioner {
class Logger;
}

namespace provisioner::vbmc {

class QemuMachine;

struct Credentials {
  std::string username, password;
};

class RedfishService {
 public:
  RedfishService(std::vector<QemuMachine*> machines, Credentials credentials, const Logger& logger);
  HttpAnswer handle(const HttpRequest& request);
  int live_sessions() const;

 private:
  struct Session {
    std::string id, token;
  };
  bool authorized(const HttpRequest& request) const;
  QemuMachine* machine(const std::string& id) const;
  HttpAnswer route(const HttpRequest& request, const std::string& path);
  HttpAnswer create_session(const HttpRequest& request);
  HttpAnswer system_get(QemuMachine& m);
  HttpAnswer system_patch(QemuMachine& m, const HttpRequest& request);
  HttpAnswer reset(QemuMachine& m, const HttpRequest& request);
  HttpAnswer manager_get(QemuMachine& m);
  HttpAnswer media_collection(QemuMachine& m);
  HttpAnswer slot_get(QemuMachine& m, const std::string& slot);
  HttpAnswer slot_insert(QemuMachine& m, const std::string& slot, const HttpRequest& request, bool via_patch);
  HttpAnswer slot_eject(QemuMachine& m, const std::string& slot);

  std::vector<QemuMachine*> machines_;
  Credentials credentials_;
  const Logger& log_;
  mutable std::mutex mu_;
  std::vector<Session> sessions_;  // oldest first
  std::uint64_t next_session_ = 1;
};

}  // namespace provisioner::vbmc
