#pragma once
// The whole virtual BMC: machines from the config, the Redfish model over them, the HTTP
// server in front. main.cpp and the tests both build one of these.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/result.hpp"
#include "tools/vbmc/vbmc_config.hpp"

namespace provisioner {
class Logger;
}

namespace provisioner::vbmc {

class QemuMachine;
class RedfishService;
class HttpServer;

class VirtualBmc {
 public:
  // `config` must have passed finish_config(). Resolves accel=auto with a KVM probe.
  static Result<std::unique_ptr<VirtualBmc>> create(VbmcConfig config, const Logger& logger);
  ~VirtualBmc();  // stops serving, then powers every machine off

  // Listens on config.listen; returns the bound port (config port 0 = any free port).
  Result<std::uint16_t> start();
  std::string address() const;  // "http://127.0.0.1:<port>"
  std::string accel() const { return accel_; }
  QemuMachine* machine(const std::string& id) const;
  const VbmcConfig& config() const { return config_; }

 private:
  VirtualBmc(VbmcConfig config, const Logger& logger);
  VbmcConfig config_;
  const Logger& log_;
  std::string accel_;
  std::string host_;
  std::uint16_t port_ = 0;
  std::vector<std::unique_ptr<QemuMachine>> machines_;
  std::unique_ptr<RedfishService> service_;
  std::unique_ptr<HttpServer> server_;
};

}  // namespace provisioner::vbmc
