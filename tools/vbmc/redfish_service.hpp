#pragma once
// The Redfish resource model of the virtual BMC, independent of the socket layer:
// ServiceRoot, $metadata and the OData service document, SessionService (X-Auth-Token) and
// basic auth, one ComputerSystem and one Manager per QEMU machine, VirtualMedia under the
// Manager. Systems, Managers and slots carry ETags (a hash of their body) and PATCHes honour If-Match.
//
// Routing is one table (routes()): a URI pattern and, per HTTP method, a small handler and
// whether it is public. The dispatcher applies the protocol rules of DSP0266 once for all:
// OData-Version (412 when unsupported), authentication (401 with a Basic challenge), 404 for
// unknown URIs, 405 with Allow for methods a resource does not support, HEAD as GET without
// the body, and Allow on every GET/HEAD answer.
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tools/vbmc/http_server.hpp"

namespace provisioner {
class Logger;
}

namespace provisioner::vbmc {

class QemuMachine;
struct SchemaType;

struct Credentials {
  std::string username, password;
};

class RedfishService {
 public:
  // `uuid`: the ServiceRoot UUID (service_uuid() of the config: stable per vbmc).
  RedfishService(std::vector<QemuMachine*> machines, Credentials credentials, std::string uuid, const Logger& logger);
  HttpAnswer handle(const HttpRequest& request);
  int live_sessions() const;

 private:
  struct Session {
    std::string id, token;
  };
  // What the placeholders of a matched route name, resolved.
  struct Target {
    std::string path;
    QemuMachine* machine = nullptr;  // {machine}
    std::string slot;                // {slot}
    std::string session;             // {session}
  };
  using Handler = HttpAnswer (RedfishService::*)(const HttpRequest&, const Target&);
  struct Method {
    const char* name;
    Handler handler;
    bool is_public;  // served without credentials (DSP0266: root, $metadata, odata, login)
  };
  struct Route {
    std::vector<std::string> pattern;  // path segments; "{machine}", "{slot}", "{session}" capture
    std::vector<Method> methods;
  };
  static const std::vector<Route>& routes();
  static std::string allow_header(const Route& route);

  HttpAnswer dispatch(const HttpRequest& request, const std::string& path);
  bool resolve(const Route& route, const std::vector<std::string>& parts, Target& target) const;
  bool authorized(const HttpRequest& request) const;
  QemuMachine* machine(const std::string& id) const;

  // Route handlers, one per (resource, method).
  HttpAnswer get_versions(const HttpRequest&, const Target&);
  HttpAnswer get_service_root(const HttpRequest&, const Target&);
  HttpAnswer get_metadata(const HttpRequest&, const Target&);
  HttpAnswer get_odata(const HttpRequest&, const Target&);
  HttpAnswer get_session_service(const HttpRequest&, const Target&);
  HttpAnswer get_sessions(const HttpRequest&, const Target&);
  HttpAnswer post_session(const HttpRequest&, const Target&);
  HttpAnswer get_session(const HttpRequest&, const Target&);
  HttpAnswer delete_session(const HttpRequest&, const Target&);
  HttpAnswer get_systems(const HttpRequest&, const Target&);
  HttpAnswer get_system(const HttpRequest&, const Target&);
  HttpAnswer patch_system(const HttpRequest&, const Target&);
  HttpAnswer post_reset(const HttpRequest&, const Target&);
  HttpAnswer get_managers(const HttpRequest&, const Target&);
  HttpAnswer get_manager(const HttpRequest&, const Target&);
  HttpAnswer get_media_collection(const HttpRequest&, const Target&);
  HttpAnswer get_slot(const HttpRequest&, const Target&);
  HttpAnswer patch_slot(const HttpRequest&, const Target&);
  HttpAnswer post_insert_media(const HttpRequest&, const Target&);
  HttpAnswer post_eject_media(const HttpRequest&, const Target&);

  // Representations (their dump() is what the ETags hash).
  nlohmann::json session_json(const std::string& id) const;
  nlohmann::json system_json(QemuMachine& m) const;
  nlohmann::json slot_json(QemuMachine& m, const std::string& slot) const;
  nlohmann::json collection_json(const SchemaType& type, const std::string& path, const std::string& name,
                                 const std::vector<std::string>& member_paths) const;
  HttpAnswer insert_media(QemuMachine& m, const std::string& slot, const nlohmann::json& body);

  std::vector<QemuMachine*> machines_;
  Credentials credentials_;
  std::string uuid_;
  const Logger& log_;
  mutable std::mutex mu_;
  std::vector<Session> sessions_;  // oldest first
  std::uint64_t next_session_ = 1;
};

}  // namespace provisioner::vbmc
