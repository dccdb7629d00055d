#pragma once
// The controller's configuration: defaults, then the TOML config file, then environment
// variables (PROVISIONER_*), then command-line flags — each later source wins.
#include <algorithm>
#include <cstddef>
#include <thread>
#include <filesystem>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "common/result.hpp"
#include "controller/api/auth.hpp"
#include "controller/redfish/redfish_client.hpp"

namespace provisioner {

struct ControllerConfig {
  std::string listen = "127.0.0.1:8080";
  std::filesystem::path data_dir = "./var";
  // postgresql://… (or postgres://…): the store is on that PostgreSQL database, which several
  // controllers may share; empty: embedded SQLite in <data_dir>/provisioner.db. A password in
  // it (or PGPASSWORD, ~/.pgpass) is never logged.
  std::string database_url;
  std::string public_url;                 // default: http(s)://<listen>
  std::filesystem::path recipes_dir;      // default: <data_dir>/recipes
  std::optional<std::filesystem::path> tls_cert;
  std::optional<std::filesystem::path> tls_key;
  std::size_t max_body_bytes = 1 << 20;
  // The HTTP library's worker pool. One per core measured best: more threads only add
  // context switches and a long latency tail (bench/api/run.sh).
  int http_threads = std::max(2, static_cast<int>(std::thread::hardware_concurrency()));
  // The API edge (controller/api/front_guard.hpp) against hostile clients ([api]):
  // max_connections 0 = from the open-file limit; per_client 0 = no per-address cap.
  std::int64_t api_max_head_bytes = 64 * 1024;
  std::int64_t api_head_timeout_ms = 10'000;
  std::int64_t api_idle_timeout_ms = 60'000;
  std::int64_t api_max_connections = 0;
  std::int64_t api_max_connections_per_client = 256;
  // A comment line on an idle event stream (GET /api/v1/events) so proxies keep it open.
  std::int64_t api_events_heartbeat_ms = 15'000;
  std::string log_format = "text";        // text | json
  std::string log_level = "info";
  std::optional<std::filesystem::path> log_file;
  int webhook_max_skew_seconds = 300;
  std::vector<ApiToken> tokens;

  // Artifact serving (task and maintenance ISOs) on its own port: BMCs stream whole ISOs
  // with Range requests, which a dedicated sendfile server does far better than the API's.
  std::string artifacts_listen = "127.0.0.1:8081";  // an IP address: BMC DNS is often broken
  std::string artifacts_public_url;                  // default: http(s)://<artifacts_listen>
  int artifacts_threads = 2;
  std::optional<std::filesystem::path> maintenance_iso;  // registered as an artifact at start
  // HTTPS for BMCs that want it; old BMCs may speak only TLS 1.0/1.1 ("TLSv1").
  std::optional<std::filesystem::path> artifacts_tls_cert, artifacts_tls_key;
  std::string artifacts_tls_min_version = "TLSv1.2";
  // Limits against hostile clients, as in artifacts::ArtifactServerOptions (same defaults):
  // max_connections 0 = from the open-file limit; per_client 0 = no per-address cap.
  std::int64_t artifacts_max_connections = 0;
  std::int64_t artifacts_max_connections_per_client = 64;
  std::int64_t artifacts_head_timeout_ms = 5'000;
  std::int64_t artifacts_keepalive_timeout_ms = 30'000;
  std::int64_t artifact_retention_seconds = 24 * 3600;
  std::uint64_t max_upload_bytes = 16ull << 30;

  // The embedded OCI registry at /v2/ on the API's address ([registry]).
  bool registry_enabled = true;
  bool registry_anonymous_pull = false;  // unauthenticated pulls (and tag lists)
  std::string registry_realm;            // token endpoint URL; default: /v2/token at the request's Host
  std::int64_t registry_token_ttl_seconds = 900;
  std::int64_t registry_max_blob_bytes = std::int64_t{1} << 40;
  std::int64_t registry_max_manifest_bytes = 4 << 20;
  // A blob pushed within this is never garbage-collected (its manifest may be on its way).
  std::int64_t registry_gc_grace_seconds = 3600;

  // The network boot path ([pxe]): nodes, /boot/*, and a supervised dnsmasq.
  bool pxe_enabled = false;
  // What an unknown machine's boot request does: off (local boot), register (as discovered,
  // then local boot), inspect (registered, then the maintenance OS reports its inventory).
  std::string pxe_discover = "register";
  std::optional<std::filesystem::path> pxe_kernel, pxe_initrd;  // the maintenance OS as kernel + initrd
  std::string pxe_kernel_args = "console=tty0 console=ttyS0,115200";
  // DHCP: proxy (dnsmasq answers PXE beside the site's DHCP server; the default), full
  // (dnsmasq hands out addresses from a range too), off (the site's DHCP server points
  // machines at our boot script itself).
  std::string pxe_dhcp = "proxy";
  std::string pxe_interface;               // the interface dnsmasq serves (required unless dhcp = off)
  std::string pxe_subnet;                  // proxy: the network address served ("10.0.0.0")
  std::string pxe_range_start, pxe_range_end, pxe_netmask = "255.255.255.0";  // full
  std::string pxe_dnsmasq = "dnsmasq";     // the binary
  std::filesystem::path pxe_ipxe_dir = "/usr/lib/ipxe";  // undionly.kpxe, ipxe.efi (Debian's ipxe)
  std::optional<std::filesystem::path> pxe_arm64_efi;    // an arm64 iPXE EFI binary, where one is at hand
  std::optional<std::filesystem::path> pxe_rpi_firmware;  // Raspberry Pi firmware files (start4.elf, …)
  // Profiles by label ([[pxe.profiles]] match = {role = "web"}, recipe_ref = "web@1"): the
  // recipe a node's job uses when neither the job nor the node names one. First match wins.
  struct PxeProfile {
    std::vector<std::pair<std::string, std::string>> match;
    std::string recipe_ref;
  };
  std::vector<PxeProfile> pxe_profiles;

  // Reconciler timing.
  int reconcile_tick_ms = 500;
  int idle_recheck_ms = 5000;
  int boot_timeout_seconds = 1800;
  int install_timeout_seconds = 4 * 3600;
  int gc_interval_seconds = 600;
  int reconcile_workers = 256;  // BMC calls wait on the network, not the CPU: bench/jobs/run.sh

  // Redfish client timing and limits ([redfish] in the config file).
  redfish::RedfishOptions redfish;
};

// What the command line asked for: run the controller, or print something and exit.
struct RunController {
  ControllerConfig config;
};
struct ExitWith {
  int code;
  std::string output;  // printed to stdout (code 0) or stderr
};

std::variant<RunController, ExitWith> parse_command_line(int argc, char** argv);

// Reads a TOML config file into `config` (keys it does not know are errors: typos must not
// pass silently).
Status apply_config_file(const std::filesystem::path& file, ControllerConfig& config);

}  // namespace provisioner
