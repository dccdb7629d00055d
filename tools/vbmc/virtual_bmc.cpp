#include "tools/vbmc/virtual_bmc.hpp"

#include "controller/logging/logger.hpp"
#include "tools/vbmc/http_server.hpp"
#include "tools/vbmc/qemu_machine.hpp"
#include "tools/vbmc/redfish_service.hpp"

namespace provisioner::vbmc {

VirtualBmc::VirtualBmc(VbmcConfig config, const Logger& logger) : config_(std::move(config)), log_(logger) {}

Result<std::unique_ptr<VirtualBmc>> VirtualBmc::create(VbmcConfig config, const Logger& logger) {
  std::unique_ptr<VirtualBmc> v(new VirtualBmc(std::move(config), logger));
  const VbmcConfig& c = v->config_;
  std::error_code ec;
  std::filesystem::create_directories(c.state_dir, ec);
  if (ec) return make_error(ErrorKind::unavailable, "cannot create state_dir " + c.state_dir.string() + ": " + ec.message());
  v->accel_ = c.accel;
  if (c.accel == "auto") v->accel_ = kvm_boots(c.qemu_binary, c.ovmf_code, c.state_dir) ? "kvm" : "tcg";
  logger.info("accelerator chosen", {{"accel", v->accel_}, {"configured", c.accel}});
  for (const auto& m : c.machines) {
    if (m.firmware == "uefi" && (!std::filesystem::exists(c.ovmf_code) || !std::filesystem::exists(c.ovmf_vars)))
      return make_error(ErrorKind::invalid_input, "machine " + m.id + ": UEFI needs " + c.ovmf_code.string() + " and " +
                                                      c.ovmf_vars.string() + " (Debian package ovmf)");
    MachineRuntime rt;
    rt.qemu_binary = c.qemu_binary;
    rt.qemu_img = c.qemu_img;
    rt.accel = v->accel_;
    rt.ovmf_code = c.ovmf_code;
    rt.ovmf_vars = c.ovmf_vars;
    rt.state_dir = c.state_dir / "machines" / m.id;
    rt.media_cache = c.state_dir / "media-cache";
    rt.media_chunk_bytes = c.media_chunk_bytes;
    rt.graceful_timeout = std::chrono::seconds(c.graceful_timeout_s);
    rt.once_settle = std::chrono::milliseconds(c.once_settle_ms);
    v->machines_.push_back(std::make_unique<QemuMachine>(m, rt, logger));
  }
  std::vector<QemuMachine*> ptrs;
  for (auto& m : v->machines_) ptrs.push_back(m.get());
  v->service_ = std::make_unique<RedfishService>(ptrs, Credentials{c.username, c.password}, service_uuid(c), logger);
  return v;
}

VirtualBmc::~VirtualBmc() {
  if (server_) server_->stop();
  server_.reset();
  service_.reset();
  machines_.clear();  // each powers its QEMU off
}

Result<std::uint16_t> VirtualBmc::start() {
  std::uint16_t port = 0;
  if (auto s = parse_listen(config_.listen, host_, port); !s) return s.error();
  server_ = std::make_unique<HttpServer>([this](const HttpRequest& r) { return service_->handle(r); });
  auto p = server_->start(host_, port);
  if (!p) return p.error();
  port_ = *p;
  log_.info("virtual BMC listening", {{"address", address()}, {"machines", std::to_string(machines_.size())}});
  return port_;
}

std::string VirtualBmc::address() const { return "http://" + host_ + ":" + std::to_string(port_); }

QemuMachine* VirtualBmc::machine(const std::string& id) const {
  for (const auto& m : machines_)
    if (m->config().id == id) return m.get();
  return nullptr;
}

}  // namespace provisioner::vbmc
