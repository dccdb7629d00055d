#pragma once
// One BMC's Redfish session, under the BMC client's operations (redfish_client.cpp): the
// transport, authentication (a session, or basic auth when sessions fail), the retry policy of
// every call, task monitors, stopping, and logging. Internal to controller/redfish.
#include <atomic>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/stop.hpp"
#include "controller/logging/logger.hpp"
#include "controller/redfish/http_transport.hpp"
#include "controller/redfish/redfish_client.hpp"
#include "controller/redfish/redfish_parse.hpp"

namespace provisioner::redfish {

using nlohmann::json;

inline constexpr const char* kFailurePath = "/redfish/failure";

// An Error carrying its FailureCode (and the URL's credentials redacted).
Error fail(FailureCode code, const std::string& message);

// An answer from the BMC, parsed when it is JSON.
struct Reply {
  int status = 0;
  HttpResponse http;
  json body;
  bool ok() const { return status >= 200 && status < 300; }
};

struct CallOptions {
  std::string if_match;
  bool follow_task = true;  // 202 + Location: poll the task monitor to the end
  bool with_auth = true;
  bool stoppable = true;    // false: only the controller's shutdown keeps it from being sent
  bool acts = false;        // it changes the machine (a reset): note whether it may have gone out
};

inline bool is_idempotent(const std::string& method) { return method == "GET" || method == "HEAD"; }

class RedfishSession {
 public:
  RedfishSession(RedfishContext& c, BmcEndpoint e, std::vector<std::pair<std::string, std::string>> lc,
                 std::stop_token st);

  RedfishContext& ctx;
  const RedfishOptions& opt;
  BmcEndpoint ep;
  BmcRegistry::Entry& bmc;
  std::vector<std::pair<std::string, std::string>> log_context;  // job_id, serial
  Endpoint net;
  std::string endpoint_error;
  struct RaiseFlag {
    std::atomic<bool>* flag;
    void operator()() const noexcept { flag->store(true); }
  };
  std::atomic<bool> shutdown_flag{false};  // declared before the transport: it outlives it
  std::optional<std::stop_callback<RaiseFlag>> on_shutdown;
  std::unique_ptr<HttpTransport> transport;

  // Session state. `basic` after sessions failed once: HTTP basic for the rest of our life.
  bool root_loaded = false;
  json root;
  bool login_tried = false;
  bool basic = false;
  std::string token, session_uri;

  std::string op = "redfish";  // the operation in progress, for errors and logs
  // Requests other than GET/HEAD this session has started: a document read before the last
  // of them may be out of date (BmcClient reuses a System read only while this is unchanged).
  std::uint64_t writes = 0;
  // A request marked CallOptions::acts got an answer or left with its bytes on the wire, so
  // the BMC may have acted on it (power_cycle clears it first).
  bool action_maybe_sent = false;

  // ---------------------------------------------------------------- stopping
  // Stopped when the controller shuts down or the client's own token (the job's) is requested.
  std::optional<StopEither> stop;
  std::stop_token own_stop;

  void set_stop(std::stop_token st) {
    stop.reset();  // waits for a callback running on another thread before the source goes
    own_stop = std::move(st);
    stop.emplace(ctx.shutdown(), own_stop);
  }
  bool stopped() const { return stop->stop_requested(); }

  Error stopped_error(const std::string& what) const;

  // Every wait of an operation: false (and the operation gives up) once stopped.
  bool pause(std::int64_t ms) { return ctx.sleeper().wait_ms(ms, stop->token()); }

  // ---------------------------------------------------------------- logging
  void log(int level, std::string_view msg, LogFields fields = {}) const;

  std::string where(const std::string& method, const std::string& path) const {
    return "BMC " + ep.address + ": " + op + ": " + method + " " + path;
  }

  Error answer_error(const std::string& method, const std::string& path, const Reply& r,
                     FailureCode code = FailureCode::bmc_error) const;

  // ---------------------------------------------------------------- one exchange
  Result<Reply> exchange(const std::string& method, const std::string& path, const std::optional<json>& body,
                         const CallOptions& co);

  static bool has_field(const Error& e, const char* path, const char* value) {
    for (const auto& f : e.fields)
      if (f.path == path) return f.message == value;
    return false;
  }
  static bool sent_of(const Error& e) { return has_field(e, "/redfish/sent", "true"); }

  std::string basic_auth() const;

  std::int64_t retry_after(const Reply& r, std::int64_t fallback) const;

  // ---------------------------------------------------------------- call with policy
  // Retries: GET/HEAD on 5xx and on connection errors; any method on 429 (not processed),
  // on known "not ready" answers, and on connection errors before the request was written.
  // One re-login on 401 with a session. 202 + Location is followed to the end.
  Result<Reply> call(const std::string& method, const std::string& path, const std::optional<json>& body = std::nullopt,
                     CallOptions co = {});

  Result<Reply> follow_task(const std::string& method, const std::string& path, Reply accepted);

  // ---------------------------------------------------------------- session
  // Set while the root or a session is being fetched, so call() does not recurse into auth.
  bool authing = false;

  Status load_root();

  Status ensure_auth();

  void logout();

  // GET of a JSON resource: 404 is not_found, anything but a 2xx object an error.
  Result<json> get_json(const std::string& path, std::string* etag = nullptr);
};

}  // namespace provisioner::redfish
