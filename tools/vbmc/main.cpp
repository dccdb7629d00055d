// provisioner-vbmc: a Redfish BMC on 127.0.0.1 in front of QEMU machines, so the provisioner
// can be tried (and tested end to end) without hardware. See tools/vbmc/README.md.
#include <signal.h>

#include <cstdlib>
#include <fstream>
#include <iostream>

#include <CLI/CLI.hpp>

#include "controller/logging/logger.hpp"
#include "tools/vbmc/virtual_bmc.hpp"

using namespace provisioner;
using namespace provisioner::vbmc;

namespace {

std::string read_secret_file(const std::string& path) {
  std::ifstream in(path);
  std::string s;
  std::getline(in, s);
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"provisioner-vbmc: Redfish virtual BMC in front of QEMU machines"};
  std::string config_file, listen, state_dir, username, password_file, accel, log_level, log_format;
  std::vector<std::string> machine_ids;
  std::string firmware;
  int memory_mb = 0;
  app.add_option("-c,--config", config_file, "TOML (or .json) config file")->check(CLI::ExistingFile);
  app.add_option("--listen", listen, "127.0.0.1:<port> (loopback only; port 0 = any)");
  app.add_option("--state-dir", state_dir, "disks, OVMF vars, media cache, QMP sockets, QEMU logs");
  app.add_option("--username", username, "Redfish user name (default admin)");
  app.add_option("--password-file", password_file,
                 "file whose first line is the Redfish password (or env PROVISIONER_VBMC_PASSWORD)")
      ->check(CLI::ExistingFile);
  app.add_option("--accel", accel, "auto | kvm | tcg");
  app.add_option("--machine", machine_ids, "add a machine with this id and default settings (repeatable)");
  app.add_option("--firmware", firmware, "bios | uefi for machines added with --machine");
  app.add_option("--memory-mb", memory_mb, "memory for machines added with --machine");
  app.add_option("--log-level", log_level, "debug | info | warn | error");
  app.add_option("--log-format", log_format, "text | json");
  CLI11_PARSE(app, argc, argv);

  VbmcConfig config;
  if (!config_file.empty()) {
    auto c = load_config(config_file);
    if (!c) {
      std::cerr << "provisioner-vbmc: " << c.error().message << "\n";
      return 2;
    }
    config = std::move(*c);
  }
  // Flags override the file.
  if (!listen.empty()) config.listen = listen;
  if (!state_dir.empty()) config.state_dir = state_dir;
  if (!username.empty()) config.username = username;
  if (!accel.empty()) config.accel = accel;
  if (!log_level.empty()) config.log_level = log_level;
  if (!log_format.empty()) config.log_format = log_format;
  if (!password_file.empty()) config.password = read_secret_file(password_file);
  if (const char* env = std::getenv("PROVISIONER_VBMC_PASSWORD"); env && *env && password_file.empty())
    config.password = env;
  for (const auto& id : machine_ids) {
    MachineConfig m;
    m.id = id;
    if (!firmware.empty()) m.firmware = firmware;
    if (memory_mb > 0) m.memory_mb = memory_mb;
    config.machines.push_back(m);
  }
  if (config.state_dir.empty()) config.state_dir = "vbmc-state";
  if (auto s = finish_config(config); !s) {
    std::cerr << "provisioner-vbmc: " << s.error().message << "\n";
    return 2;
  }

  // Signals are taken synchronously below; block them before any thread starts so none of
  // the worker threads is picked to run a handler.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  Logger logger(config.log_format == "json" ? Logger::Format::json : Logger::Format::text, config.log_level);
  auto vbmc = VirtualBmc::create(config, logger);
  if (!vbmc) {
    logger.error("virtual BMC not created", {{"error", vbmc.error().message}});
    return 1;
  }
  auto port = (*vbmc)->start();
  if (!port) {
    logger.error("virtual BMC not started", {{"error", port.error().message}});
    return 1;
  }
  std::cout << "provisioner-vbmc listening on " << (*vbmc)->address() << std::endl;
  int sig = 0;
  sigwait(&set, &sig);
  logger.info("stopping; powering machines off", {{"signal", std::to_string(sig)}});
  vbmc->reset();
  return 0;
}
