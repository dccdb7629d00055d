#pragma once
// A Redfish BMC on 127.0.0.1 for tests: service root, sessions, one System with Boot and a
// Reset action, one Manager, VirtualMedia slots with InsertMedia/EjectMedia, task monitors.
// Resources carry ETags and honour If-Match. Every request is recorded (secrets redacted),
// and a per-request hook can delay, answer anything, or reset the TCP connection. Its own
// tiny HTTP server over raw sockets: a TCP reset cannot be scripted through a library.
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace provisioner::test {

struct MockSlotSpec {
  std::string id;
  std::vector<std::string> media_types;
};

struct MockBmcOptions {
  std::string username = "admin";
  std::string password = "mock-bmc-password";
  std::string vendor = "Mock";            // ServiceRoot.Vendor
  std::string manufacturer = "MockCorp";  // System.Manufacturer
  std::string model = "Mock Server 1";
  std::string firmware = "1.00";          // Manager.FirmwareVersion
  std::string system_id = "1";
  std::string serial = "MOCK0001";
  std::string manager_id = "BMC";
  bool sessions = true;                   // SessionService usable (false: 405, basic auth only)
  bool vm_under_manager = false;          // VirtualMedia only under the Manager (else under the System)
  std::vector<MockSlotSpec> slots = {{"CD1", {"CD", "DVD"}}, {"CD2", {"CD", "DVD"}}, {"USB1", {"USBStick"}}};
  bool media_actions = true;              // InsertMedia/EjectMedia advertised; false: PATCH only
  bool refuse_second_medium = false;      // insert while another slot holds media -> 400
  bool eject_empty_fails = false;         // eject of a slot with nothing inserted -> 400
  bool require_transfer_protocol = false; // InsertMedia without TransferProtocolType -> 400
  bool ignore_once = false;               // BootSourceOverrideEnabled=Once is dropped (reads Disabled)
  bool reset_mode_on_target_change = false;  // PATCHing the target sets the mode to Legacy
  bool weak_etags = false;                // ETags W/"n", compared strongly for If-Match
  bool settings_object = false;           // Boot PATCH only via @Redfish.Settings; applied at reset
  bool async_actions = false;             // actions answer 202 + task monitor
  // Dell iDRAC: the Manager offers the OEM ImportSystemConfiguration action; an import of
  // ServerBoot.1#BootOnce=Enabled + FirstBootDevice=VCD-DVD (a 202 job) makes the next boot
  // one from the virtual CD, recorded as boot_target "VirtualCd".
  bool dell_oem_import = false;
  int task_polls = 2;                     // monitor answers 202 this many times before done
  int task_retry_after_s = 1;
  bool ignore_graceful = false;           // GracefulShutdown/Restart accepted, nothing happens
  int power_lag_reads = 0;                // PowerState shows the old value for N System reads
  bool fetch_media = false;               // HEAD + Range GET of http:// media URLs on insert
  std::string tls_cert_file, tls_key_file;  // both set: speak HTTPS (address() says https://)
  // TLS versions offered, e.g. "TLSv1.1" for both: an old iLO/iDRAC that speaks TLS 1.1 only
  // (the mock then also allows SECLEVEL=0 ciphers, as OpenSSL 3 refuses TLS < 1.2 otherwise).
  std::string tls_min_version, tls_max_version;  // "" = OpenSSL's default
  std::string bind_address = "127.0.0.1";   // or "::1" (IPv6 loopback); loopback only
  bool keep_alive = true;                   // HTTP/1.1 persistent connections unless the client says close
  std::string power_state = "On";
  std::string boot_mode = "UEFI";
  std::vector<std::string> reset_types = {"On", "ForceOff", "ForceRestart", "GracefulRestart", "GracefulShutdown"};
  std::vector<std::string> boot_targets = {"None", "Pxe", "Cd", "Hdd", "UsbCd", "BiosSetup"};
};

// Some blade enclosures: the one virtual-media slot is attached to the host over USB (its
// MediaTypes include USBStick next to CD and DVD), and the boot override offers Usb but no
// Cd: the virtual CD boots as Usb there.
inline MockBmcOptions usb_attached_blade_options() {
  MockBmcOptions o;
  o.model = "Mock Blade 1";
  o.slots = {{"RemovableMedia1", {"CD", "DVD", "USBStick"}}};
  o.boot_targets = {"None", "Pxe", "Hdd", "Usb", "BiosSetup"};
  return o;
}

struct RecordedRequest {
  std::string method;
  std::string path;
  std::map<std::string, std::string> headers;  // lower-cased; Authorization/X-Auth-Token "<redacted>"
  std::string body;                            // Password values "<redacted>"
  int status = 0;                              // what we answered; -1 = connection reset/closed
  std::string header(const std::string& lower_name) const {
    auto it = headers.find(lower_name);
    return it == headers.end() ? std::string() : it->second;
  }
};

struct MockAction {
  enum class Kind { pass, respond, reset_connection } kind = Kind::pass;
  int delay_ms = 0;         // before handling, for every kind
  int answer_delay_ms = 0;  // after handling (the BMC did it, the answer is late)
  int status = 0;
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;

  static MockAction pass() { return {}; }
  static MockAction delay(int ms) {
    MockAction a;
    a.delay_ms = ms;
    return a;
  }
  static MockAction slow_answer(int ms) {
    MockAction a;
    a.answer_delay_ms = ms;
    return a;
  }
  static MockAction respond(int status, std::string body = "",
                            std::vector<std::pair<std::string, std::string>> headers = {}) {
    MockAction a;
    a.kind = Kind::respond;
    a.status = status;
    a.body = std::move(body);
    a.headers = std::move(headers);
    return a;
  }
  static MockAction reset() {
    MockAction a;
    a.kind = Kind::reset_connection;
    return a;
  }
};

struct MockBoot {
  std::string target, enabled, mode;
};

// One boot of the machine: where it booted from and what media were inserted then.
struct MockBootEvent {
  std::string reset_type;
  std::string boot_target;  // effective override target, "Hdd" when none, "VirtualCd" (Dell OEM)
  std::vector<std::string> media;
  // The override reached an inserted virtual medium: Cd/UsbCd/VirtualCd and a CD/DVD slot
  // holding one, or Usb and a USB-attached slot (MediaTypes with USBStick) holding one.
  bool from_virtual_media = false;
};

struct MockMediaFetch {
  std::string url;
  int head_status = 0;
  int range_status = 0;
};

class MockBmc {
 public:
  // The hook sees each request before it is handled (called without the mock's lock held,
  // so it may call the mock). `n` counts requests from 0.
  using Hook = std::function<MockAction(const RecordedRequest& request, int n)>;

  explicit MockBmc(MockBmcOptions options = {});
  ~MockBmc();
  MockBmc(const MockBmc&) = delete;
  MockBmc& operator=(const MockBmc&) = delete;

  std::uint16_t port() const { return port_; }
  std::string address() const {
    std::string host = bind_address_.find(':') != std::string::npos ? "[" + bind_address_ + "]" : bind_address_;
    return std::string(tls_ ? "https" : "http") + "://" + host + ":" + std::to_string(port_);
  }

  // Transport counters since construction (or reset_counters): TCP connections accepted,
  // TLS handshakes completed (full + resumed), resumed ones alone, requests read.
  struct Counters {
    int connections = 0, handshakes = 0, resumed = 0, failed_handshakes = 0, requests = 0;
  };
  Counters counters() const;
  void reset_counters();
  // Closes every open client connection (what a BMC does to idle keep-alive connections).
  void drop_connections();
  // The TLS version of the last completed handshake ("TLSv1.1", "TLSv1.3"; "" for none).
  std::string last_tls_version() const;

  void set_hook(Hook hook);
  void update_options(const std::function<void(MockBmcOptions&)>& change);

  std::vector<RecordedRequest> requests() const;
  std::size_t request_count() const;  // requests().size() without the copy (benchmarks poll it)
  // "GET /redfish/v1/Systems/1 200" per request, for sequence assertions.
  std::vector<std::string> sequence() const;
  void clear_requests();

  void expire_sessions();  // every token becomes invalid (next use answers 401)
  int live_sessions() const;
  void bump_etag(const std::string& path);  // someone else changed the resource

  // Resource state.
  std::string slot_image(const std::string& slot_id) const;
  bool slot_inserted(const std::string& slot_id) const;
  void set_slot(const std::string& slot_id, const std::string& image, bool inserted);
  MockBoot boot() const;
  void set_boot(const MockBoot& boot);
  std::string power_state() const;
  std::vector<std::string> resets() const;  // ResetType values applied, in order
  std::size_t reset_count() const;
  std::vector<MockBootEvent> boots() const;
  std::vector<MockMediaFetch> media_fetches() const;

  std::string system_path() const;
  std::string vm_collection_path() const;
  std::string slot_path(const std::string& slot_id) const;

 private:
  struct Slot {
    MockSlotSpec spec;
    std::string image;
    bool inserted = false;
    bool write_protected = true;
    int etag = 1;
  };
  struct Task {
    int polls_left = 0;
    std::function<std::pair<int, std::string>()> effect;  // runs once, under the lock
    bool done = false;
    int result_status = 200;
    std::string result_body;
  };
  struct Answer {
    int status = 200;
    std::string body;
    std::vector<std::pair<std::string, std::string>> headers;
  };

  void accept_loop();
  void serve(int fd);
  bool sleep_unless_stopped(int ms);
  Answer handle(const RecordedRequest& req, const std::string& raw_body, const std::map<std::string, std::string>& headers);
  bool authorized(const std::map<std::string, std::string>& headers) const;
  Answer get_resource(const std::string& path);
  Answer system_json();
  Answer slot_json(Slot& s);
  Answer insert(Slot& s, const std::string& body, bool via_patch);
  Answer eject(Slot& s);
  Answer patch_boot(const std::string& body, const std::string& if_match, bool settings);
  Answer reset(const std::string& body);
  Answer import_system_configuration(const std::string& body);
  Answer maybe_async(std::function<std::pair<int, std::string>()> effect);
  std::pair<int, std::string> apply_reset(const std::string& type);
  Slot* find_slot(const std::string& id);
  std::string etag_of(int n) const;
  bool etag_matches(const std::string& if_match, int n) const;
  static std::string error_body(const std::string& id, const std::string& message);

  mutable std::mutex mu_;
  MockBmcOptions opt_;
  std::vector<Slot> slots_;
  MockBoot boot_;
  MockBoot pending_boot_;  // settings object
  bool oem_virtual_cd_once_ = false;  // Dell OEM one-time boot from the virtual CD, pending
  std::string power_;
  std::string lagging_power_;
  int lag_reads_left_ = 0;
  int system_etag_ = 1;
  int settings_etag_ = 1;
  std::map<std::string, int> sessions_;  // token -> session number
  int next_session_ = 1;
  std::map<int, Task> tasks_;
  int next_task_ = 1;
  std::vector<RecordedRequest> log_;
  std::vector<std::string> resets_;
  std::vector<MockBootEvent> boots_;
  std::vector<MockMediaFetch> fetches_;
  Hook hook_;

  void* tls_ = nullptr;  // SSL_CTX*, kept out of this header
  int listen_fd_ = -1;
  std::uint16_t port_ = 0;
  bool stopping_ = false;
  std::condition_variable stop_cv_;
  std::thread acceptor_;
  struct Worker {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };
  std::vector<Worker> workers_;
  std::vector<int> open_fds_;
  std::string bind_address_;
  Counters counters_;
  std::string last_tls_version_;
};

}  // namespace provisioner::test
