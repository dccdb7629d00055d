// dhcp_probe: a DHCP client for the network tests. It speaks the protocol a PXE ROM speaks
// (RFC 2131 DISCOVER with options 60, 77, 93, 97; the proxy-DHCP REQUEST to port 4011 of
// the PXE spec) to whatever servers answer on the interface, and prints every reply as one
// JSON line, so a test can check what a BIOS, UEFI, iPXE or Raspberry Pi client is told.
//
//   dhcp_probe --interface IF --mac MAC [--arch N] [--vendor-class S] [--user-class S]
//              [--uuid U] [--wait-ms N] [--pxe --ciaddr IP]
//              [--request-4011 SERVER_IP [--ciaddr IP] [--boot-item 0x8000]]
// --pxe follows the whole sequence (proxy offer, then the boot menu's item from port 4011
// with the address the client holds) and prints {"pxe", "boot_file", "next_server", …} last.
//
// It binds port 68 on the interface (SO_BINDTODEVICE), so run it inside the client's network
// namespace, one at a time per namespace.
#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace {

constexpr std::uint8_t kMagic[4] = {99, 130, 83, 99};

struct Args {
  std::string interface, mac, vendor_class, user_class, uuid, request_4011;
  int boot_item = -1;
  std::string ciaddr;  // the client's address, for the port 4011 request
  bool pxe = false;    // --pxe: follow the PXE sequence and print a summary line last  // PXE boot server type chosen from the menu (option 43, sub-option 71)
  int arch = -1;
  int wait_ms = 3000;
};

bool parse_mac(const std::string& text, std::uint8_t out[6]) {
  unsigned v[6];
  if (std::sscanf(text.c_str(), "%x:%x:%x:%x:%x:%x", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5]) != 6) return false;
  for (int i = 0; i < 6; ++i) out[i] = static_cast<std::uint8_t>(v[i]);
  return true;
}

void put_option(std::vector<std::uint8_t>& p, std::uint8_t code, const std::vector<std::uint8_t>& value) {
  p.push_back(code);
  p.push_back(static_cast<std::uint8_t>(value.size()));
  p.insert(p.end(), value.begin(), value.end());
}

std::vector<std::uint8_t> bytes(const std::string& s) { return {s.begin(), s.end()}; }

std::vector<std::uint8_t> packet(const Args& a, const std::uint8_t mac[6], std::uint8_t type, std::uint32_t xid,
                                 std::uint32_t ciaddr) {
  std::vector<std::uint8_t> p(240, 0);
  p[0] = 1;  // BOOTREQUEST
  p[1] = 1;  // Ethernet
  p[2] = 6;
  std::memcpy(&p[4], &xid, 4);
  p[10] = 0x80;  // broadcast flag: answer where a client without an address hears it
  std::memcpy(&p[12], &ciaddr, 4);
  std::memcpy(&p[28], mac, 6);
  std::memcpy(&p[236], kMagic, 4);
  put_option(p, 53, {type});
  if (a.arch >= 0) put_option(p, 93, {static_cast<std::uint8_t>(a.arch >> 8), static_cast<std::uint8_t>(a.arch & 0xff)});
  if (a.arch >= 0) put_option(p, 94, {1, 3, 0});  // client NDI: UNDI 3.0
  if (!a.vendor_class.empty()) put_option(p, 60, bytes(a.vendor_class));
  if (!a.user_class.empty()) put_option(p, 77, bytes(a.user_class));
  if (!a.uuid.empty()) {
    std::vector<std::uint8_t> guid{0};
    for (std::size_t i = 0; i + 1 < a.uuid.size();) {
      if (a.uuid[i] == '-') {
        ++i;
        continue;
      }
      guid.push_back(static_cast<std::uint8_t>(std::stoi(a.uuid.substr(i, 2), nullptr, 16)));
      i += 2;
    }
    put_option(p, 97, guid);
  }
  if (a.boot_item >= 0)
    put_option(p, 43, {71, 4, static_cast<std::uint8_t>(a.boot_item >> 8), static_cast<std::uint8_t>(a.boot_item & 0xff), 0, 0, 255});
  put_option(p, 55, {1, 3, 43, 60, 66, 67, 97});  // parameters wanted
  p.push_back(255);
  return p;
}

std::string hex(const std::uint8_t* p, std::size_t n) {
  static const char* d = "0123456789abcdef";
  std::string s;
  for (std::size_t i = 0; i < n; ++i) {
    s += d[p[i] >> 4];
    s += d[p[i] & 15];
  }
  return s;
}

std::string ip(const std::uint8_t* p) {
  char buf[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, p, buf, sizeof buf);
  return buf;
}

std::string text_or_hex(const std::uint8_t* p, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i)
    if (p[i] < 0x20 || p[i] > 0x7e) return "hex:" + hex(p, n);
  return std::string(reinterpret_cast<const char*>(p), n);
}

nlohmann::json describe(const std::uint8_t* p, std::size_t n, const sockaddr_in& from, std::uint32_t xid) {
  if (n < 240 || p[0] != 2 || std::memcmp(p + 236, kMagic, 4) != 0) return nullptr;
  std::uint32_t got;
  std::memcpy(&got, p + 4, 4);
  if (got != xid) return nullptr;
  nlohmann::json out{{"from", ip(reinterpret_cast<const std::uint8_t*>(&from.sin_addr))},
                     {"from_port", ntohs(from.sin_port)},
                     {"yiaddr", ip(p + 16)},
                     {"siaddr", ip(p + 20)},
                     {"sname", std::string(reinterpret_cast<const char*>(p + 44), strnlen(reinterpret_cast<const char*>(p + 44), 64))},
                     {"file", std::string(reinterpret_cast<const char*>(p + 108), strnlen(reinterpret_cast<const char*>(p + 108), 128))}};
  nlohmann::json options = nlohmann::json::object();
  for (std::size_t i = 240; i < n;) {
    std::uint8_t code = p[i++];
    if (code == 0) continue;
    if (code == 255 || i >= n) break;
    std::size_t len = p[i++];
    if (i + len > n) break;
    const std::uint8_t* v = p + i;
    std::string key = std::to_string(code);
    if (code == 53) out["type"] = v[0] == 2 ? "offer" : v[0] == 5 ? "ack" : v[0] == 6 ? "nak" : std::to_string(v[0]);
    else if (code == 54 || code == 1 || code == 3) options[key] = len == 4 ? ip(v) : hex(v, len);
    else options[key] = text_or_hex(v, len);
    i += len;
  }
  // The boot file: the `file` field, or option 67 (what dnsmasq sends PXE clients in full
  // DHCP), without its trailing NUL.
  std::string boot = out["file"];
  if (boot.empty() && options.contains("67")) {
    auto v = options["67"].get<std::string>();
    if (v.rfind("hex:", 0) == 0) {
      std::string bytes;
      for (std::size_t i = 4; i + 1 < v.size(); i += 2) bytes += static_cast<char>(std::stoi(v.substr(i, 2), nullptr, 16));
      while (!bytes.empty() && bytes.back() == '\0') bytes.pop_back();
      v = bytes;
    }
    boot = v;
  }
  out["boot_file"] = boot;
  out["options"] = std::move(options);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; i += 2) {
    std::string k = argv[i];
    if (k == "--pxe") {
      a.pxe = true;
      --i;
      continue;
    }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "dhcp_probe: %s needs a value\n", k.c_str());
      return 2;
    }
    std::string v = argv[i + 1];
    if (k == "--interface") a.interface = v;
    else if (k == "--mac") a.mac = v;
    else if (k == "--arch") a.arch = std::stoi(v);
    else if (k == "--vendor-class") a.vendor_class = v;
    else if (k == "--user-class") a.user_class = v;
    else if (k == "--uuid") a.uuid = v;
    else if (k == "--wait-ms") a.wait_ms = std::stoi(v);
    else if (k == "--request-4011") a.request_4011 = v;
    else if (k == "--boot-item") a.boot_item = std::stoi(v, nullptr, 0);
    else if (k == "--ciaddr") a.ciaddr = v;
    else {
      std::fprintf(stderr, "dhcp_probe: unknown option %s\n", k.c_str());
      return 2;
    }
  }
  std::uint8_t mac[6];
  if (a.interface.empty() || !parse_mac(a.mac, mac)) {
    std::fprintf(stderr, "dhcp_probe: --interface and --mac are required\n");
    return 2;
  }
  int fd = ::socket(AF_INET, SOCK_DGRAM, 0);
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_BROADCAST, &one, sizeof one);
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, a.interface.c_str(), static_cast<socklen_t>(a.interface.size())) != 0) {
    std::perror("dhcp_probe: SO_BINDTODEVICE");
    return 1;
  }
  sockaddr_in local{};
  local.sin_family = AF_INET;
  local.sin_port = htons(68);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&local), sizeof local) != 0) {
    std::perror("dhcp_probe: bind :68");
    return 1;
  }
  std::uint32_t xid = static_cast<std::uint32_t>(::getpid()) * 2654435761u;
  auto send_to = [&](const std::vector<std::uint8_t>& p, const std::string& addr, int port) {
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(static_cast<std::uint16_t>(port));
    inet_pton(AF_INET, addr.c_str(), &to.sin_addr);
    if (::sendto(fd, p.data(), p.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to) < 0) {
      std::perror("dhcp_probe: sendto");
      return false;
    }
    return true;
  };
  auto collect = [&](int wait_ms) {
    std::vector<nlohmann::json> replies;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(wait_ms);
    std::uint8_t buf[1500];
    for (;;) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
      if (left <= 0) break;
      pollfd pfd{fd, POLLIN, 0};
      if (::poll(&pfd, 1, static_cast<int>(left)) <= 0) continue;
      sockaddr_in from{};
      socklen_t flen = sizeof from;
      auto n = ::recvfrom(fd, buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &flen);
      if (n <= 0) continue;
      auto j = describe(buf, static_cast<std::size_t>(n), from, xid);
      if (j.is_null()) continue;
      std::printf("%s\n", j.dump().c_str());
      std::fflush(stdout);
      replies.push_back(std::move(j));
    }
    return replies;
  };
  std::uint32_t ci = 0;
  if (!a.ciaddr.empty()) inet_pton(AF_INET, a.ciaddr.c_str(), &ci);
  if (!a.request_4011.empty()) {
    // One PXE boot server request: a REQUEST to port 4011, as a ROM sends it once it has an
    // address.
    if (!send_to(packet(a, mac, 3, xid, ci), a.request_4011, 4011)) return 1;
    collect(a.wait_ms);
    return 0;
  }
  if (!send_to(packet(a, mac, 1, xid, 0), "255.255.255.255", 67)) return 1;
  auto replies = collect(a.wait_ms);
  if (!a.pxe) return 0;
  // --pxe: what a PXE ROM would boot. The proxy offer (option 60 "PXEClient", no address)
  // either names the file, or carries a boot menu (option 43) whose first item the ROM asks
  // the boot server for on port 4011.
  nlohmann::json summary{{"pxe", false}};
  for (const auto& r : replies) {
    auto opts = r["options"];
    if (r["yiaddr"] != "0.0.0.0") summary["lease"] = r["yiaddr"];
    if (opts.value("60", "") != "PXEClient" && opts.value("60", "") != "HTTPClient") continue;
    summary["pxe"] = true;
    summary["proxy"] = r["from"];
    summary["next_server"] = r["siaddr"];
    summary["vendor_class"] = opts["60"];
    if (opts.contains("43")) summary["option43"] = opts["43"];
    if (!r["boot_file"].get<std::string>().empty()) summary["boot_file"] = r["boot_file"];
  }
  if (summary["pxe"] == true && !summary.contains("boot_file") && !a.ciaddr.empty()) {
    // Sub-option 9 (boot menu): items of type (2 bytes), length, description.
    std::string o43 = summary.value("option43", "");
    std::vector<std::uint8_t> v;
    if (o43.rfind("hex:", 0) == 0)
      for (std::size_t i = 4; i + 1 < o43.size(); i += 2) v.push_back(static_cast<std::uint8_t>(std::stoi(o43.substr(i, 2), nullptr, 16)));
    for (std::size_t i = 0; i + 1 < v.size();) {
      std::uint8_t code = v[i], len = v[i + 1];
      if (code == 255) break;
      if (code == 9 && len >= 3) a.boot_item = (v[i + 2] << 8) | v[i + 3];
      i += 2 + len;
    }
    xid += 1;
    if (!send_to(packet(a, mac, 3, xid, ci), summary["proxy"].get<std::string>(), 4011)) return 1;
    for (const auto& r : collect(a.wait_ms)) {
      if (!r["boot_file"].get<std::string>().empty()) summary["boot_file"] = r["boot_file"];
      summary["next_server"] = r["siaddr"];
    }
  }
  std::printf("%s\n", summary.dump().c_str());
  return 0;
}
