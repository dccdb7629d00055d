// provisioner-controller: wires the store, job service and HTTP API together and serves
// until SIGINT/SIGTERM.
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <filesystem>
#include <iostream>
#include <memory>
#include <stop_token>
#include <tuple>

#include "common/atomic_file.hpp"
#include "common/clock.hpp"
#include "common/crypto.hpp"
#include "controller/api/api_handler.hpp"
#include "controller/api/events_route.hpp"
#include "controller/api/http_server.hpp"
#include "controller/artifacts/artifact_server.hpp"
#include "controller/artifacts/artifact_store.hpp"
#include "controller/artifacts/upload_service.hpp"
#include "controller/config/config.hpp"
#include "controller/fleets/fleet_service.hpp"
#include "controller/iso/job_media.hpp"
#include "controller/iso/maintenance_iso.hpp"
#include "controller/jobs/bmc_driver.hpp"
#include "controller/jobs/reconciler.hpp"
#include "controller/redfish/redfish_client.hpp"
#include "controller/registry/recipe_catalog.hpp"
#include "controller/registry/registry_service.hpp"
#include "controller/registry/registry_store.hpp"
#include "controller/jobs/job_service.hpp"
#include "controller/logging/logger.hpp"
#include "controller/metrics/metrics.hpp"
#include "controller/nodes/node_service.hpp"
#include "controller/pxe/boot_service.hpp"
#include "controller/pxe/dnsmasq.hpp"
#include "controller/servers/server_service.hpp"
#include "controller/store/sql_connection.hpp"
#include "controller/store/sql_store.hpp"

using namespace provisioner;

namespace {

// The key that seals per-job secrets at rest. Created once, readable by the owner only.
Result<std::string> load_or_create_secret_key(const std::filesystem::path& file) {
  if (std::filesystem::exists(file)) {
    auto bytes = read_file(file);
    if (!bytes) return bytes.error();
    if (bytes->size() != 32) return make_error(ErrorKind::internal, file.string() + " must hold exactly 32 bytes");
    return bytes;
  }
  auto key = crypto::random_bytes(32);
  if (auto s = write_file_atomically(file, key, 0600); !s) return s.error();
  return key;
}

std::pair<std::string, std::uint16_t> split_host_port(const std::string& listen) {
  auto colon = listen.rfind(':');
  if (colon == std::string::npos) return {listen, 0};
  return {listen.substr(0, colon), static_cast<std::uint16_t>(std::stoi(listen.substr(colon + 1)))};
}

int run(const ControllerConfig& config) {
  Logger log(config.log_format == "json" ? Logger::Format::json : Logger::Format::text, config.log_level,
             config.log_file);
  std::error_code ec;
  std::filesystem::create_directories(config.data_dir, ec);
  ::chmod(config.data_dir.c_str(), 0700);
  auto key = load_or_create_secret_key(config.data_dir / "secret.key");
  if (!key) {
    log.error("cannot load the secret key", {{"error", key.error().message}});
    return 1;
  }
  auto store = config.database_url.empty() ? SqlStore::open(config.data_dir / "provisioner.db")
                                           : SqlStore::open(postgres_database(config.database_url));
  if (!store) {
    log.error("cannot open the store", {{"error", store.error().message}});
    return 1;
  }
  SystemClock clock;
  Metrics metrics;
  artifacts::ArtifactStore artifact_store(config.data_dir / "artifacts");
  MaintenanceIso maintenance(**store, artifact_store);
  if (config.maintenance_iso) {
    auto sha = maintenance.register_file(*config.maintenance_iso, config.data_dir / "maintenance-iso.json");
    if (!sha) {
      log.error("cannot register the maintenance ISO", {{"error", sha.error().message}});
      return 1;
    }
    log.info("maintenance ISO registered", {{"path", config.maintenance_iso->string()}, {"sha256", *sha}});
  }
  auto [artifact_host, artifact_port] = split_host_port(config.artifacts_listen);
  artifacts::ArtifactServerOptions artifact_options;
  artifact_options.host = artifact_host;
  artifact_options.port = artifact_port;
  artifact_options.threads = config.artifacts_threads;
  artifact_options.max_connections = static_cast<std::size_t>(config.artifacts_max_connections);
  artifact_options.max_connections_per_client = static_cast<std::size_t>(config.artifacts_max_connections_per_client);
  artifact_options.head_timeout = std::chrono::milliseconds(config.artifacts_head_timeout_ms);
  artifact_options.keepalive_timeout = std::chrono::milliseconds(config.artifacts_keepalive_timeout_ms);
  // ISOs for BMCs (some check the name), the OS images recipes point at, the network boot kernel.
  artifact_options.name_suffixes = {".iso", ".img", "vmlinuz", ".efi", ".raw", ".qcow2", ".tar", ".tar.gz", ".tgz", ".tar.xz", ".tar.zst"};
  if (config.artifacts_tls_cert)
    artifact_options.tls = artifacts::TlsOptions{config.artifacts_tls_cert->string(),
                                                 config.artifacts_tls_key.value_or(*config.artifacts_tls_cert).string(),
                                                 config.artifacts_tls_min_version};
  artifacts::ArtifactServer artifact_server(artifact_store, artifact_options);
  JobMediaBuilder media(artifact_store, maintenance, JobMediaOptions{config.artifacts_public_url});
  ServerService servers(**store, clock, log, *key);
  // The OCI registry: blobs in the artifact store's folder, so the two share one GC (under
  // the registry's lock: no manifest lands between its marking and the sweep).
  registry::RegistryStore registry_store(config.data_dir / "registry", config.data_dir / "artifacts",
                                         static_cast<std::uint64_t>(config.registry_max_manifest_bytes),
                                         std::chrono::seconds(config.registry_gc_grace_seconds));
  if (config.registry_enabled) {
    if (auto opened = registry_store.open(); !opened) {
      log.error("cannot open the registry", {{"error", opened.error().message}});
      return 1;
    }
  }
  registry::RecipeCatalog recipes(registry_store, *key);
  JobServiceOptions job_options{config.recipes_dir, config.public_url, config.webhook_max_skew_seconds};
  if (config.registry_enabled) job_options.named_recipes = &recipes;
  job_options.profile_for_labels = [profiles = config.pxe_profiles](const nlohmann::json& labels) -> std::optional<std::string> {
    for (const auto& p : profiles) {
      bool all = true;
      for (const auto& [k, v] : p.match) all = all && labels.contains(k) && labels[k] == v;
      if (all) return p.recipe_ref;
    }
    return std::nullopt;
  };
  JobService jobs(**store, servers, clock, log, metrics, *key, job_options);
  // Jobs stored by a version that kept recipe secrets in clear get them sealed now.
  if (auto sealed = jobs.seal_stored_recipes(); !sealed) {
    log.error("cannot seal stored recipes", {{"error", sealed.error().message}});
    return 1;
  } else if (*sealed > 0) {
    log.info("sealed the secrets of recipes stored in clear", {{"jobs", std::to_string(*sealed)}});
  }
  // Nodes and the network boot path: the maintenance OS as kernel + initrd artifacts (the
  // artifact server hands them to iPXE like ISOs to BMCs).
  NodeService nodes(**store, clock, log);
  jobs.set_nodes(&nodes);
  BootOptions boot_options{config.public_url, config.pxe_discover, std::nullopt, std::nullopt, config.pxe_kernel_args};
  std::set<std::string> pinned;
  for (auto [file, slot, name] : {std::tuple{config.pxe_kernel, &boot_options.kernel, "maintenance.vmlinuz"},
                                  std::tuple{config.pxe_initrd, &boot_options.initrd, "maintenance-initrd.img"}}) {
    if (!file) continue;
    auto info = artifact_store.put_file(*file);
    if (!info) {
      log.error("cannot register a network boot file", {{"path", file->string()}, {"error", info.error().message}});
      return 1;
    }
    *slot = BootFile{info->sha256, media.url_of(info->sha256, name)};
    pinned.insert(info->sha256);
    log.info("network boot file registered", {{"path", file->string()}, {"sha256", info->sha256}});
  }
  boot_options.inspect_token = [inspect_key = crypto::hmac_sha256_hex(*key, "inspect-token-v1")](const std::string& node,
                                                                                               const std::string& nonce) {
    return crypto::hmac_sha256_hex(inspect_key, node + "/" + nonce);
  };
  BootService boot(**store, nodes, clock, log, boot_options);
  // DHCP/TFTP for the network boot path: a supervised dnsmasq, reloaded when nodes change.
  std::unique_ptr<DnsmasqSupervisor> dnsmasq;
  if (config.pxe_enabled && config.pxe_dhcp != "off") {
    DnsmasqOptions d;
    d.binary = config.pxe_dnsmasq;
    d.ipxe_dir = config.pxe_ipxe_dir;
    d.arm64_efi = config.pxe_arm64_efi;
    d.rpi_firmware = config.pxe_rpi_firmware;
    d.dhcp.mode = config.pxe_dhcp;
    d.dhcp.interface = config.pxe_interface;
    d.dhcp.subnet = config.pxe_subnet;
    d.dhcp.range_start = config.pxe_range_start;
    d.dhcp.range_end = config.pxe_range_end;
    d.dhcp.netmask = config.pxe_netmask;
    d.dhcp.boot_script_url = config.public_url + "/boot/boot.ipxe";
    d.dhcp.discover = config.pxe_discover != "off";
    d.dhcp.arm64 = config.pxe_arm64_efi.has_value();
    d.dhcp.dir = config.data_dir / "pxe";
    if (config.pxe_dhcp == "full") {
      // UEFI HTTP Boot clients fetch ipxe.efi by URL from the artifact server.
      auto efi = artifact_store.put_file(config.pxe_ipxe_dir / "ipxe.efi");
      if (!efi) {
        log.error("cannot register ipxe.efi for HTTP boot", {{"error", efi.error().message}});
        return 1;
      }
      pinned.insert(efi->sha256);
      d.dhcp.http_boot_url = media.url_of(efi->sha256, "ipxe.efi");
    }
    dnsmasq = std::make_unique<DnsmasqSupervisor>(
        d, [&nodes] { return nodes.all(); }, [&boot] { return boot.rpi_boots(); }, log);
    nodes.on_change([&dnsmasq] { dnsmasq->nodes_changed(); });
  }

  ReconcilerOptions reconcile;
  reconcile.pinned = pinned;
  reconcile.tick = std::chrono::milliseconds(config.reconcile_tick_ms);
  reconcile.idle_recheck = std::chrono::milliseconds(config.idle_recheck_ms);
  reconcile.boot_timeout = std::chrono::seconds(config.boot_timeout_seconds);
  reconcile.install_timeout = std::chrono::seconds(config.install_timeout_seconds);
  reconcile.gc_interval = std::chrono::seconds(config.gc_interval_seconds);
  reconcile.workers = config.reconcile_workers;
  reconcile.artifact_retention = std::chrono::seconds(config.artifact_retention_seconds);
  if (config.registry_enabled) {
    reconcile.gc = [&registry_store, &artifact_store](const std::set<std::string>& roots, std::chrono::seconds keep) {
      return registry_store.collect(roots, keep, [&artifact_store](const std::set<std::string>& all, std::chrono::seconds k) {
        return artifact_store.gc(all, k);
      });
    };
  }
  redfish::RealSleeper sleeper;
  // Requested at SIGTERM/SIGINT: every BMC wait (Retry-After, task monitors, power polling)
  // ends at once and no new Redfish request goes out, so the reconciler's workers return from
  // their steps and the process exits promptly. Jobs keep their persisted phases; the next
  // start resumes them.
  std::stop_source shutdown;
  redfish::RedfishContext redfish(clock, sleeper, config.redfish, &log, shutdown.get_token());
  BmcJobDriver bmc(**store, jobs, servers, media, redfish, clock, log);
  JobReconciler reconciler(**store, jobs, media, artifact_store, maintenance, &bmc, clock, log, reconcile);
  jobs.on_change([&reconciler](const std::string& id) { reconciler.wake(id); });
  artifacts::UploadService uploads(artifact_store, config.artifacts_public_url, config.max_upload_bytes,
                                   [&maintenance](const std::string& sha) { return maintenance.set_current(sha); });
  TokenAuthenticator auth(config.tokens);
  ApiHandler handler(jobs, servers, uploads, artifact_store, **store, metrics, auth, log,
                     config.registry_enabled ? &recipes : nullptr);
  if (config.pxe_enabled) handler.set_network_boot(&nodes, &boot);
  FleetService fleets(**store, jobs, clock, log, *key);
  handler.set_fleets(&fleets);
  EventsOptions events_options;
  events_options.heartbeat = std::chrono::milliseconds(config.api_events_heartbeat_ms);
  EventsRoute events(**store, auth, log, events_options);
  events.set_metrics(&metrics);
  // Every committed change wakes the event streams and the fleet runner (a notify each: the
  // listener runs inside the store's write lock and must not read the store).
  (*store)->on_events_written([&events, &fleets] {
    events.notify();
    fleets.wake();
  });
  registry::RegistryOptions registry_options;
  // Empty: the token endpoint at the address the client used (a CI runner and a machine may
  // reach the controller by different addresses).
  registry_options.realm = config.registry_realm;
  registry_options.anonymous_pull = config.registry_anonymous_pull;
  registry_options.token_ttl = std::chrono::seconds(config.registry_token_ttl_seconds);
  registry_options.max_blob_bytes = static_cast<std::uint64_t>(config.registry_max_blob_bytes);
  registry::RegistryService registry(registry_store, auth, log, crypto::hmac_sha256_hex(*key, "registry-token-v1"),
                                     registry_options, [&reconciler] { return reconciler.collect_garbage(); });
  registry.set_recipes(&recipes);
  registry.set_metrics(&metrics);
  if (config.registry_enabled)
    jobs.set_registry_pull_token([&registry](const std::string& job, const std::string& repo, std::int64_t until) {
      return registry.job_pull_token(job, repo, until);
    });
  NativeRouteList native_routes;
  native_routes.add(&events);
  if (config.registry_enabled) native_routes.add(&registry);
  HttpServer server(handler, log,
                    HttpServerOptions{config.listen, config.tls_cert, config.tls_key, config.max_body_bytes,
                                      config.http_threads, static_cast<std::size_t>(config.api_max_head_bytes),
                                      std::chrono::milliseconds(config.api_head_timeout_ms),
                                      std::chrono::milliseconds(config.api_idle_timeout_ms),
                                      static_cast<std::size_t>(config.api_max_connections),
                                      static_cast<std::size_t>(config.api_max_connections_per_client),
                                      &native_routes});

  // Block the signals before any thread starts so only sigwait below sees them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  auto bound = artifact_server.start();
  if (!bound) {
    log.error("cannot start the artifact server", {{"error", bound.error().message}});
    return 1;
  }
  if (auto s = server.start(); !s) {
    log.error("cannot start the HTTP server", {{"error", s.error().message}});
    return 1;
  }
  // Before the reconciler's first pass: the jobs of a fleet canceled just before a stop are
  // canceled first, never started again.
  fleets.finish_cancels();
  reconciler.start();
  fleets.start();
  if (dnsmasq) {
    if (auto s = dnsmasq->start(); !s) {
      log.error("cannot start dnsmasq", {{"error", s.error().message}});
      events.stop();
      server.stop();
      fleets.stop();
      reconciler.stop();
      artifact_server.stop();
      return 1;
    }
  }
  log.info("controller listening", {{"url", server.base_url()},
                                    {"artifacts_url", config.artifacts_public_url},
                                    {"max_connections", std::to_string(server.max_connections())},
                                    {"artifacts_max_connections", std::to_string(artifact_server.max_connections())},
                                    {"data_dir", config.data_dir.string()},
                                    {"store", (*store)->describe()},
                                    {"api_users", std::to_string(config.tokens.size())}});
  int sig = 0;
  sigwait(&signals, &sig);
  log.info("controller stopping", {{"signal", std::to_string(sig)}});
  shutdown.request_stop();
  if (dnsmasq) dnsmasq->stop();
  events.stop();
  server.stop();
  fleets.stop();
  reconciler.stop();
  artifact_server.stop();
  // Nothing writes any more; the listener's targets are destroyed before the store.
  (*store)->on_events_written(nullptr);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // Hundreds of BMC connections, artifact downloads and API clients at once: raise the open
  // file limit to what the system allows this process.
  if (rlimit files{}; ::getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
    files.rlim_cur = files.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &files);
  }
  auto parsed = parse_command_line(argc, argv);
  if (auto* exit = std::get_if<ExitWith>(&parsed)) {
    (exit->code == 0 ? std::cout : std::cerr) << exit->output;
    return exit->code;
  }
  return run(std::get<RunController>(parsed).config);
}
