#include "dispatcher/inventory.hpp"

#include <algorithm>
#include <charconv>
#include <climits>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>

#include "dispatcher/http_client.hpp"

namespace provisioner::dispatcher {

namespace fs = std::filesystem;

namespace {

std::string read_trimmed(const fs::path& p) {
  std::ifstream in(p);
  if (!in) return "";
  std::stringstream s;
  s << in.rdbuf();
  auto t = s.str();
  while (!t.empty() && (t.back() == '\n' || t.back() == ' ' || t.back() == '\0')) t.pop_back();
  auto start = t.find_first_not_of(' ');
  return start == std::string::npos ? "" : t.substr(start);
}

void say(const std::string& text) { std::cerr << "provisioner-dispatcher: " << text << std::endl; }

}  // namespace

nlohmann::json collect_inventory(const fs::path& root) {
  nlohmann::json out = nlohmann::json::object();
  // CPUs: logical processors as the kernel lists them.
  {
    std::ifstream cpuinfo(root / "proc/cpuinfo");
    int cpus = 0;
    std::string model;
    for (std::string line; std::getline(cpuinfo, line);) {
      if (line.rfind("processor", 0) == 0) ++cpus;
      if (model.empty() && line.rfind("model name", 0) == 0 && line.find(':') != std::string::npos) {
        model = line.substr(line.find(':') + 1);
        model.erase(0, model.find_first_not_of(" \t") == std::string::npos ? model.size() : model.find_first_not_of(" \t"));
      }
    }
    out["cpus"] = cpus;
    if (!model.empty()) out["cpu_model"] = model;
  }
  {
    std::ifstream meminfo(root / "proc/meminfo");
    for (std::string line; std::getline(meminfo, line);)
      if (line.rfind("MemTotal:", 0) == 0) {
        std::istringstream in(line.substr(9));
        std::int64_t kib = 0;
        in >> kib;
        out["memory_bytes"] = kib * 1024;
      }
  }
  nlohmann::json disks = nlohmann::json::array();
  std::error_code ec;
  std::vector<fs::path> blocks;
  for (const auto& e : fs::directory_iterator(root / "sys/block", ec)) blocks.push_back(e.path());
  std::sort(blocks.begin(), blocks.end());
  for (const auto& b : blocks) {
    auto name = b.filename().string();
    if (name.rfind("loop", 0) == 0 || name.rfind("ram", 0) == 0 || name.rfind("zram", 0) == 0 || name.rfind("sr", 0) == 0 ||
        name.rfind("dm-", 0) == 0 || name.rfind("md", 0) == 0 || name.rfind("nbd", 0) == 0)
      continue;
    nlohmann::json d{{"name", name}};
    std::int64_t sectors = 0;
    auto size_text = read_trimmed(b / "size");
    auto [end, ec2] = std::from_chars(size_text.data(), size_text.data() + size_text.size(), sectors);
    if (ec2 != std::errc() || sectors < 0 || sectors > (INT64_MAX / 512)) sectors = 0;
    d["size_bytes"] = sectors * 512;
    if (auto m = read_trimmed(b / "device/model"); !m.empty()) d["model"] = m;
    auto serial = read_trimmed(b / "device/serial");
    if (serial.empty()) serial = read_trimmed(b / "serial");  // virtio-blk
    if (!serial.empty()) d["serial"] = serial;
    d["rotational"] = read_trimmed(b / "queue/rotational") == "1";
    disks.push_back(std::move(d));
  }
  out["disks"] = std::move(disks);
  nlohmann::json nics = nlohmann::json::array();
  std::vector<fs::path> links;
  for (const auto& e : fs::directory_iterator(root / "sys/class/net", ec)) links.push_back(e.path());
  std::sort(links.begin(), links.end());
  for (const auto& l : links) {
    // Physical Ethernet NICs: a device behind them (lo, bridges, veths and tunnels have none)
    // and ARPHRD_ETHER (1; InfiniBand's 20-byte addresses are no MAC).
    if (!fs::exists(l / "device") || read_trimmed(l / "type") != "1") continue;
    auto mac = read_trimmed(l / "address");
    if (mac.empty()) continue;
    nics.push_back({{"name", l.filename().string()}, {"mac", mac}});
  }
  out["nics"] = std::move(nics);
  nlohmann::json smbios = nlohmann::json::object();
  for (auto [key, file] : {std::pair{"serial", "product_serial"}, {"uuid", "product_uuid"}, {"vendor", "sys_vendor"},
                           {"product", "product_name"}})
    if (auto v = read_trimmed(root / "sys/class/dmi/id" / file); !v.empty()) smbios[key] = v;
  out["smbios"] = std::move(smbios);
  return out;
}

int run_inspect(const InspectOptions& options, const Clock& clock, const SleepFn& sleep) {
  auto inventory = collect_inventory(options.root);
  say("inspection: " + std::to_string(inventory["cpus"].get<int>()) + " CPUs, " +
      std::to_string(inventory["disks"].size()) + " disks, " + std::to_string(inventory["nics"].size()) + " NICs");
  const auto give_up = clock.now_ms() + options.deadline_ms;
  std::int64_t pause = 1000;
  for (;;) {
    HttpRequest req;
    req.method = "POST";
    req.url = options.url;
    req.headers = {{"Content-Type", "application/json"}, {"Authorization", "Bearer " + options.token}};
    // Firmware strings (DMI, disk models) need not be UTF-8.
    req.body = inventory.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    req.timeout_ms = 20000;
    auto r = http_request(req);
    if (r && r->status / 100 == 2) break;
    if (r && r->status / 100 == 4) {
      // Refused (a used or expired token, a bad report): trying again changes nothing.
      say("inspection report refused: HTTP " + std::to_string(r->status) + " " + r->body.substr(0, 300));
      return 3;
    }
    if (clock.now_ms() >= give_up) {
      say("inspection report not delivered: " + (r ? "HTTP " + std::to_string(r->status) : r.error().message));
      return 2;
    }
    sleep(pause);
    pause = std::min<std::int64_t>(pause * 2, 15000);
  }
  say("inspection reported; rebooting");
  return std::system(options.reboot_command.c_str()) == 0 ? 0 : 4;
}

}  // namespace provisioner::dispatcher
