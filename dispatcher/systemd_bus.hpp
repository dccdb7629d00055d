#pragma once
// The dispatcher's view of systemd over D-Bus (sd-bus): start a unit and follow its job to
// the end. The bus address is a parameter so tests can point it at a private dbus-daemon
// with a fake Manager object.
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "common/result.hpp"

struct sd_bus;

namespace provisioner::dispatcher {

// The result the dispatcher reports itself when its deadline passes before systemd's job ends.
inline constexpr std::string_view kDispatcherTimeout = "dispatcher-timeout";

struct JobOutcome {
  std::string unit;
  std::string result;  // systemd's: done, canceled, timeout, failed, dependency, skipped
  bool ok() const { return result == "done"; }
};

class SystemdManager {
 public:
  // nullopt: the system bus. Otherwise a D-Bus address ("unix:path=/tmp/x").
  static Result<std::unique_ptr<SystemdManager>> connect(const std::optional<std::string>& address);
  ~SystemdManager();
  SystemdManager(const SystemdManager&) = delete;
  SystemdManager& operator=(const SystemdManager&) = delete;

  // StartUnit(name, mode) and wait for that job's JobRemoved signal, or until deadline_ms
  // (unix ms; then the result is kDispatcherTimeout). Bus failures are `unavailable`. `on_job_removed` sees every job that finishes meanwhile
  // (the steps pulled in by a target), for progress lines in the journal.
  // The unit's ActiveState ("failed", "inactive", ...). not_found when systemd has no such unit.
  Result<std::string> active_state(const std::string& unit);

  Result<JobOutcome> start_unit_and_wait(const std::string& unit, const std::string& mode, std::int64_t deadline_ms,
                                         const std::function<void(const JobOutcome&)>& on_job_removed = {});

 private:
  explicit SystemdManager(sd_bus* bus) : bus_(bus) {}
  sd_bus* bus_;
};

}  // namespace provisioner::dispatcher
