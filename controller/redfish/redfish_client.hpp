#pragma once
// Redfish client for one BMC at a time: discovery, sessions, virtual media, boot override,
// power. Every operation is idempotent, so the job reconciler may repeat a step after a
// crash: insert checks what is already inserted, boot reads back, cleanup tolerates
// "nothing to eject". Errors say which BMC call failed and why, never with a secret in it.
#include <cstdint>
#include <memory>
#include <stop_token>
#include <string>
#include <utility>
#include <vector>

#include "common/clock.hpp"
#include "common/result.hpp"
#include "controller/redfish/resilience.hpp"
#include "controller/redfish/vendor_profile.hpp"

namespace provisioner {
class Logger;
}

namespace provisioner::redfish {

struct BmcEndpoint {
  std::string address;  // "10.0.0.5", "10.0.0.5:8443", "https://bmc", "http://127.0.0.1:9000"
  std::string username, password;
  bool verify_tls = true;
  std::string ca_file;            // PEM; empty = system trust store
  std::string profile = "auto";   // auto | generic | dell-idrac | hpe-ilo | supermicro | lenovo-xcc | openbmc
                                  // | dell-idrac-legacy | hpe-ilo-legacy (never chosen by auto)
  std::string tls;                // "" (the profile decides: modern unless *-legacy) | modern | legacy
  std::string system_id, serial;  // pick the System when the BMC has several
};

enum class MediaKind { cd, usb };
enum class BootMode { keep, uefi, legacy };

struct VirtualMediaSlot {
  std::string uri, id;
  std::vector<std::string> media_types;
  std::string image;                // "" when none
  int inserted = -1;                // -1 unknown (property absent), 0 false, 1 true
  std::string connected_via;        // NotConnected = empty, whatever Image says
  bool under_manager = false;
  std::string insert_target, eject_target;  // action URIs; "" = no action (PATCH fallback)
  std::string etag;
  bool holds_media() const;         // what the BMC considers mounted
  bool shows_anything() const;      // holds media, or a leftover Image string
  bool accepts(MediaKind kind) const;
  bool holds(const std::string& url) const;
};

struct BmcFacts {
  std::string profile;  // the chosen vendor profile's name
  std::string system_uri, system_id, serial, manufacturer, model;
  std::string vendor, firmware;  // ServiceRoot.Vendor, first Manager's FirmwareVersion
  std::vector<std::string> manager_uris;
  std::string power_state;
  std::vector<std::string> reset_types;   // ResetType@Redfish.AllowableValues
  std::vector<std::string> boot_targets;  // BootSourceOverrideTarget@Redfish.AllowableValues
  std::string boot_mode;                  // BootSourceOverrideMode, "" when not reported
  std::vector<VirtualMediaSlot> slots;    // under the System first, then under Managers
  int max_media = 0;                      // from the profile: 0 = unknown, 1 = single medium only
  // Dell iDRAC: the Manager's OEM ImportSystemConfiguration action and that Manager's Id (the
  // component FQDD the import addresses); "" when the BMC has none.
  std::string oem_import_uri, oem_import_manager_id;
  // The System's ComputerSystem.Reset target, read at discovery: the topology does not change
  // within a job, so a reset needs no GET of the System first ("" when not advertised).
  std::string reset_target;
};

struct MediaRequest {
  std::string url;
  MediaKind kind = MediaKind::cd;
};

struct InsertResult {
  std::string url;
  std::string slot_uri;
  bool already_present = false;  // no BMC call was needed
};

struct BootResult {
  std::string target;   // Cd, UsbCd, or VCD-DVD when set through Dell's OEM import
  std::string enabled;  // Once, or Continuous when the BMC ignores Once (cleanup clears it)
  std::string mode;     // UEFI, Legacy or "" (not reported)
  int patches = 0;      // 0 = already set (idempotent repeat)
};

struct ResetResult {
  std::vector<std::string> issued;  // e.g. {"ForceRestart"} or {"ForceOff","On"}
  std::string power_state;          // as last polled
};

struct CleanupOptions {
  enum class BootRestore { none, hdd_once, clear_override } boot = BootRestore::hdd_once;
  bool reset = false;  // power cycle after ejecting (a job that must boot its disk now)
};

// Why an operation failed, for callers that act on it (fields[0] of the Error carries it).
enum class FailureCode {
  none,
  second_medium_refused,  // the BMC will not hold another medium: fall back to single-iso
  circuit_open,           // BMC failing repeatedly; not contacted this time
  auth_failed,
  transport,              // no HTTP answer (connect, timeout, reset)
  bmc_error,              // the BMC answered with an error status
  not_found,              // no System / slot / action where expected
  timeout,                // a task or power transition did not finish in time
  invalid_input,
  // Stopped before it finished: the controller is shutting down or the job was canceled. A
  // wait ended early and nothing more was sent; the BMC is where the last answer left it.
  canceled,
};
FailureCode failure_code(const Error& error);
// A failed power_cycle_into_boot that sent no reset request at all (it stopped before one
// went out): the caller may withdraw its recorded intent and reset later.
bool reset_not_sent(const Error& error);
const char* failure_code_name(FailureCode code);

struct RedfishOptions {
  std::int64_t connect_timeout_ms = 5'000;
  std::int64_t request_timeout_ms = 30'000;
  int get_attempts = 10;                 // GET on 5xx / connection errors: 10 x ~3 s
  std::int64_t retry_base_ms = 1'000;
  std::int64_t retry_cap_ms = 3'000;
  int not_ready_attempts = 6;            // SYS518, InvalidOperationForSystemState, ...
  std::int64_t not_ready_delay_ms = 5'000;
  int rate_limit_attempts = 6;           // 429
  std::int64_t max_retry_after_ms = 60'000;
  std::int64_t insert_retry_delay_ms = 3'000;
  std::int64_t task_poll_ms = 1'000;     // when a task monitor sends no Retry-After
  std::int64_t task_timeout_ms = 600'000;
  std::int64_t power_poll_ms = 2'000;
  std::int64_t power_timeout_ms = 300'000;
  std::int64_t graceful_timeout_ms = 120'000;
  bool prefer_graceful_restart = false;  // GracefulShutdown, wait, then force (or per profile)
  int boot_reapply_attempts = 3;
  int breaker_threshold = 8;
  std::int64_t breaker_open_ms = 60'000;
  int max_concurrent_requests = 512;     // requests in flight across all BMCs (bench/jobs/run.sh)
};

// One per controller: the global concurrency limit, per-BMC locks and breakers, time, and
// the shutdown token (requested: every client's waits end at once and it sends nothing new).
// Must outlive every BmcClient made from it.
class RedfishContext {
 public:
  RedfishContext(const Clock& clock, Sleeper& sleeper, RedfishOptions options = {}, const Logger* logger = nullptr,
                 std::stop_token shutdown = {});
  const Clock& clock() const { return clock_; }
  const std::stop_token& shutdown() const { return shutdown_; }
  Sleeper& sleeper() { return sleeper_; }
  const RedfishOptions& options() const { return options_; }
  const Logger* logger() const { return logger_; }
  ConcurrencyLimiter& limiter() { return limiter_; }
  BmcRegistry& registry() { return registry_; }

 private:
  const Clock& clock_;
  Sleeper& sleeper_;
  RedfishOptions options_;
  const Logger* logger_;
  ConcurrencyLimiter limiter_;
  BmcRegistry registry_;
  std::stop_token shutdown_;
};

// What discovery found that a BMC's topology cannot change between the phases of one job:
// the System's and Managers' URIs and actions, the virtual media slots and their actions, the
// vendor profile, how to log in. Opaque; see BmcClient::reuse_topology.
struct BmcTopology;

// Owns the connection settings, session and discovery cache for one BMC. Operations on the
// same BMC address are serialised across all clients of one context. Not copyable.
//
// Stopping: when the context's shutdown or this client's `stop` token is requested, a wait
// in progress (Retry-After, a task monitor, power polling, an insert retry) ends at once, no
// further request is sent, and the operation fails with FailureCode::canceled. A request
// already on the wire is not aborted (it ends within request_timeout_ms).
class BmcClient {
 public:
  // `log_context` goes on every log line (job_id, serial): the logger redacts by name anyway.
  BmcClient(RedfishContext& context, BmcEndpoint endpoint,
            std::vector<std::pair<std::string, std::string>> log_context = {}, std::stop_token stop = {});
  ~BmcClient();  // deletes the session, if one was created
  BmcClient(const BmcClient&) = delete;
  BmcClient& operator=(const BmcClient&) = delete;

  // Service root, System (by id/serial), Managers, VirtualMedia slots, profile, power.
  Result<BmcFacts> discover();
  // Makes exactly `media` inserted: already-present ones are left alone, stale media from
  // earlier jobs are ejected, each new one goes into a free slot of its kind (eject first).
  // A BMC that will not take another medium yields FailureCode::second_medium_refused.
  Result<std::vector<InsertResult>> insert_media(const std::vector<MediaRequest>& media);
  // Boot override to the virtual CD for the next boot, read back and re-applied when the
  // BMC changed the mode or ignored Once.
  Result<BootResult> set_boot_once_cd(BootMode mode);
  // Restart into the override: On when off; otherwise a restart from the allowable values.
  // Never issues a reset twice within one call.
  Result<ResetResult> power_cycle_into_boot();
  // Ejects every slot holding one of `inserted_urls` (under Systems and Managers), restores
  // boot to disk, resets when asked. Repeating it is harmless.
  Status cleanup(const std::vector<std::string>& inserted_urls, CleanupOptions options = {});
  Result<std::string> power_state();
  // Replaces the token given at construction, between operations (default: only the
  // context's shutdown stops this client). E.g. a job's reset, once recorded, must be sent
  // even when the job is canceled a moment later.
  void set_stop(std::stop_token stop);
  // Starts from what an earlier client of the same BMC discovered for the same job
  // (topology()), instead of discovering again: no service root, Systems, Manager or
  // VirtualMedia collection GETs; each known slot is read again (its contents change). A
  // known slot that is gone (404) means the topology changed after all: the client then
  // discovers afresh. Ignored when it was discovered for another address or System.
  void reuse_topology(std::shared_ptr<const BmcTopology> known);
  // What this client's discovery found or reused (null before either).
  std::shared_ptr<const BmcTopology> topology() const;
  // Ends the session now (the destructor does it otherwise). Not stopped by the client's own
  // token (a canceled job still gives its session back); skipped once the controller stops.
  void logout();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace provisioner::redfish
