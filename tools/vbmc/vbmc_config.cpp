#include "tools/vbmc/vbmc_config.hpp"

#include <arpa/inet.h>

#include <fstream>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>
#include <toml++/toml.h>

#include "common/crypto.hpp"

namespace provisioner::vbmc {

using nlohmann::json;

namespace {

Error bad(const std::string& where, const std::string& message) {
  return make_error(ErrorKind::invalid_input, where + ": " + message);
}

Status unknown_keys(const json& obj, const std::set<std::string>& known, const std::string& where) {
  for (auto it = obj.begin(); it != obj.end(); ++it)
    if (!known.count(it.key())) return bad(where, "unknown key '" + it.key() + "'");
  return Ok{};
}

template <typename T>
Status read(const json& obj, const char* key, T& out, const std::string& where) {
  if (!obj.contains(key)) return Ok{};
  try {
    out = obj.at(key).get<T>();
  } catch (const json::exception&) {
    return bad(where, std::string("'") + key + "' has the wrong type");
  }
  return Ok{};
}

Status read_path(const json& obj, const char* key, std::filesystem::path& out, const std::string& where) {
  std::string s;
  if (auto r = read(obj, key, s, where); !r) return r;
  if (obj.contains(key)) out = s;
  return Ok{};
}

Result<MachineConfig> parse_machine(const json& m, const std::string& where) {
  if (!m.is_object()) return bad(where, "a machine must be a table/object");
  if (auto s = unknown_keys(m, {"id", "serial", "memory_mb", "cpus", "disk", "disk_size", "disk_bus", "firmware",
                                "cd_drives", "usb", "console_log", "mac", "net_options", "extra_args"},
                            where);
      !s)
    return s.error();
  MachineConfig c;
  Status s = Ok{};
  if (!(s = read(m, "id", c.id, where)) || !(s = read(m, "serial", c.serial, where)) ||
      !(s = read(m, "memory_mb", c.memory_mb, where)) || !(s = read(m, "cpus", c.cpus, where)) ||
      !(s = read_path(m, "disk", c.disk, where)) || !(s = read(m, "disk_size", c.disk_size, where)) ||
      !(s = read(m, "disk_bus", c.disk_bus, where)) || !(s = read(m, "firmware", c.firmware, where)) ||
      !(s = read(m, "cd_drives", c.cd_drives, where)) || !(s = read(m, "usb", c.usb, where)) ||
      !(s = read_path(m, "console_log", c.console_log, where)) || !(s = read(m, "mac", c.mac, where)) ||
      !(s = read(m, "net_options", c.net_options, where)) || !(s = read(m, "extra_args", c.extra_args, where)))
    return s.error();
  return c;
}

Result<VbmcConfig> from_json(const json& j, const std::string& where) {
  if (!j.is_object()) return bad(where, "the document must be an object");
  if (auto s = unknown_keys(j, {"listen", "username", "password", "state_dir", "qemu_binary", "qemu_img", "accel",
                                "ovmf_code", "ovmf_vars", "graceful_timeout_s", "once_settle_ms", "media_chunk_bytes", "log_level",
                                "log_format", "machine", "machines"},
                            where);
      !s)
    return s.error();
  VbmcConfig c;
  Status s = Ok{};
  if (!(s = read(j, "listen", c.listen, where)) || !(s = read(j, "username", c.username, where)) ||
      !(s = read(j, "password", c.password, where)) || !(s = read_path(j, "state_dir", c.state_dir, where)) ||
      !(s = read(j, "qemu_binary", c.qemu_binary, where)) || !(s = read(j, "qemu_img", c.qemu_img, where)) ||
      !(s = read(j, "accel", c.accel, where)) || !(s = read_path(j, "ovmf_code", c.ovmf_code, where)) ||
      !(s = read_path(j, "ovmf_vars", c.ovmf_vars, where)) ||
      !(s = read(j, "graceful_timeout_s", c.graceful_timeout_s, where)) ||
      !(s = read(j, "once_settle_ms", c.once_settle_ms, where)) ||
      !(s = read(j, "media_chunk_bytes", c.media_chunk_bytes, where)) ||
      !(s = read(j, "log_level", c.log_level, where)) || !(s = read(j, "log_format", c.log_format, where)))
    return s.error();
  for (const char* key : {"machine", "machines"}) {
    if (!j.contains(key)) continue;
    if (!j[key].is_array()) return bad(where, std::string("'") + key + "' must be an array of machines");
    int n = 0;
    for (const auto& m : j[key]) {
      auto mc = parse_machine(m, where + " machine[" + std::to_string(n++) + "]");
      if (!mc) return mc.error();
      c.machines.push_back(std::move(*mc));
    }
  }
  return c;
}

}  // namespace

Result<VbmcConfig> parse_config_json(const std::string& text, const std::string& where) {
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded()) return bad(where, "not valid JSON");
  return from_json(j, where);
}

Result<VbmcConfig> parse_config_toml(const std::string& text, const std::string& where) {
  toml::table t;
  try {
    t = toml::parse(text, where);
  } catch (const toml::parse_error& e) {
    std::ostringstream msg;
    msg << e.description() << " at line " << e.source().begin.line;
    return bad(where, msg.str());
  }
  // One model, one validator: the TOML document goes through the JSON reader.
  std::ostringstream out;
  out << toml::json_formatter{t};
  return parse_config_json(out.str(), where);
}

Result<VbmcConfig> load_config(const std::filesystem::path& file) {
  std::ifstream in(file);
  if (!in) return make_error(ErrorKind::invalid_input, "config " + file.string() + ": cannot read");
  std::stringstream ss;
  ss << in.rdbuf();
  std::string where = "config " + file.string();
  if (file.extension() == ".json") return parse_config_json(ss.str(), where);
  return parse_config_toml(ss.str(), where);
}

std::string service_uuid(const VbmcConfig& config) {
  std::string name = "provisioner-vbmc\n" + std::filesystem::absolute(config.state_dir).lexically_normal().string();
  for (const auto& m : config.machines) name += "\n" + m.id;
  std::string b = crypto::sha256(name).substr(0, 16);
  b[6] = static_cast<char>((b[6] & 0x0f) | 0x80);  // version 8
  b[8] = static_cast<char>((b[8] & 0x3f) | 0x80);  // RFC 9562 variant
  std::string hex = crypto::to_hex(b);
  return hex.substr(0, 8) + "-" + hex.substr(8, 4) + "-" + hex.substr(12, 4) + "-" + hex.substr(16, 4) + "-" +
         hex.substr(20);
}

Status parse_listen(const std::string& listen, std::string& host, std::uint16_t& port) {
  auto colon = listen.rfind(':');
  if (colon == std::string::npos) return bad("listen", "expected 127.0.0.1:<port>");
  host = listen.substr(0, colon);
  int p = 0;
  try {
    p = std::stoi(listen.substr(colon + 1));
  } catch (const std::exception&) {
    return bad("listen", "bad port in '" + listen + "'");
  }
  if (p < 0 || p > 65535) return bad("listen", "bad port in '" + listen + "'");
  in_addr a{};
  if (inet_pton(AF_INET, host.c_str(), &a) != 1 || (ntohl(a.s_addr) >> 24) != 127)
    return bad("listen", "only loopback addresses (127.0.0.0/8) are allowed, got '" + host + "'");
  port = static_cast<std::uint16_t>(p);
  return Ok{};
}

Status finish_config(VbmcConfig& c) {
  std::string host;
  std::uint16_t port = 0;
  if (auto s = parse_listen(c.listen, host, port); !s) return s;
  if (c.password.empty()) return bad("config", "password is required (PROVISIONER_VBMC_PASSWORD or password =)");
  if (c.username.empty()) return bad("config", "username is required");
  if (c.state_dir.empty()) return bad("config", "state_dir is required");
  if (c.accel != "auto" && c.accel != "kvm" && c.accel != "tcg") return bad("config", "accel must be auto|kvm|tcg");
  if (c.once_settle_ms < 0) return bad("config", "once_settle_ms must not be negative");
  if (c.media_chunk_bytes < 4096) return bad("config", "media_chunk_bytes too small");
  if (c.machines.empty()) return bad("config", "no machine defined");
  std::set<std::string> ids;
  int n = 0;
  for (auto& m : c.machines) {
    ++n;
    if (m.id.empty()) m.id = "vm" + std::to_string(n);
    std::string where = "machine " + m.id;
    if (m.id.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.") != std::string::npos)
      return bad(where, "id may hold only letters, digits, '-', '_' and '.'");
    if (!ids.insert(m.id).second) return bad(where, "duplicate machine id");
    if (m.serial.empty()) m.serial = "VBMC-" + m.id;
    if (m.memory_mb < 16 || m.memory_mb > 1 << 20) return bad(where, "memory_mb out of range");
    if (m.cpus < 1 || m.cpus > 64) return bad(where, "cpus out of range");
    if (m.firmware != "bios" && m.firmware != "uefi") return bad(where, "firmware must be bios|uefi");
    if (m.disk_bus != "virtio" && m.disk_bus != "sata") return bad(where, "disk_bus must be virtio|sata");
    if (m.cd_drives < 0 || m.cd_drives > 4) return bad(where, "cd_drives must be 0..4");
    std::filesystem::path dir = c.state_dir / "machines" / m.id;
    if (m.disk.empty()) m.disk = dir / "disk.qcow2";
    if (m.console_log.empty()) m.console_log = dir / "console.log";
    if (m.mac.empty()) {
      // Stable per id, locally administered (52:54:00 is QEMU's prefix).
      unsigned h = 2166136261u;
      for (unsigned char ch : m.id) h = (h ^ ch) * 16777619u;
      char buf[32];
      std::snprintf(buf, sizeof buf, "52:54:00:%02x:%02x:%02x", (h >> 16) & 0xff, (h >> 8) & 0xff, h & 0xff);
      m.mac = buf;
    }
  }
  return Ok{};
}

}  // namespace provisioner::vbmc
