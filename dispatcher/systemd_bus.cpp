#include "dispatcher/systemd_bus.hpp"

#include <systemd/sd-bus.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace provisioner::dispatcher {

namespace {

constexpr const char* kService = "org.freedesktop.systemd1";
constexpr const char* kPath = "/org/freedesktop/systemd1";
constexpr const char* kManager = "org.freedesktop.systemd1.Manager";

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

Error bus_error(const std::string& what, int r, const sd_bus_error* e = nullptr) {
  std::string msg = what + ": " + (e && e->message ? e->message : std::strerror(-r));
  return make_error(ErrorKind::unavailable, msg);
}

struct RemovedJob {
  std::string path;
  JobOutcome outcome;
};

struct Watch {
  std::vector<RemovedJob> removed;
};

int on_job_removed(sd_bus_message* m, void* userdata, sd_bus_error*) {
  auto* watch = static_cast<Watch*>(userdata);
  uint32_t id = 0;
  const char *path = nullptr, *unit = nullptr, *result = nullptr;
  if (sd_bus_message_read(m, "uoss", &id, &path, &unit, &result) < 0) return 0;
  watch->removed.push_back({path, {unit, result}});
  return 0;
}

}  // namespace

Result<std::unique_ptr<SystemdManager>> SystemdManager::connect(const std::optional<std::string>& address) {
  sd_bus* bus = nullptr;
  int r = 0;
  if (!address) {
    r = sd_bus_open_system(&bus);
    if (r < 0) return bus_error("cannot connect to the system bus", r);
  } else {
    r = sd_bus_new(&bus);
    if (r >= 0) r = sd_bus_set_address(bus, address->c_str());
    if (r >= 0) r = sd_bus_set_bus_client(bus, 1);
    if (r >= 0) r = sd_bus_start(bus);
    if (r < 0) {
      sd_bus_unref(bus);
      return bus_error("cannot connect to " + *address, r);
    }
  }
  return std::unique_ptr<SystemdManager>(new SystemdManager(bus));
}

SystemdManager::~SystemdManager() { sd_bus_flush_close_unref(bus_); }

Result<std::string> SystemdManager::active_state(const std::string& unit) {
  sd_bus_error error = SD_BUS_ERROR_NULL;
  sd_bus_message* reply = nullptr;
  int r = sd_bus_call_method(bus_, kService, kPath, kManager, "GetUnit", &error, &reply, "s", unit.c_str());
  if (r < 0) {
    bool missing = sd_bus_error_has_name(&error, "org.freedesktop.systemd1.NoSuchUnit");
    auto e = missing ? make_error(ErrorKind::not_found, "no unit " + unit) : bus_error("GetUnit " + unit, r, &error);
    sd_bus_error_free(&error);
    return e;
  }
  const char* path = nullptr;
  r = sd_bus_message_read(reply, "o", &path);
  std::string unit_path = r >= 0 ? path : "";
  sd_bus_message_unref(reply);
  if (r < 0) return bus_error("GetUnit reply", r);
  char* state = nullptr;
  r = sd_bus_get_property_string(bus_, kService, unit_path.c_str(), "org.freedesktop.systemd1.Unit", "ActiveState",
                                 &error, &state);
  if (r < 0) {
    auto e = bus_error("ActiveState of " + unit, r, &error);
    sd_bus_error_free(&error);
    return e;
  }
  std::string out = state;
  std::free(state);
  return out;
}

Result<JobOutcome> SystemdManager::start_unit_and_wait(const std::string& unit, const std::string& mode,
                                                       std::int64_t deadline_ms,
                                                       const std::function<void(const JobOutcome&)>& on_removed) {
  Watch watch;
  sd_bus_slot* slot = nullptr;
  // Match before StartUnit: a job that ends at once must not slip past us.
  int r = sd_bus_match_signal(bus_, &slot, kService, kPath, kManager, "JobRemoved", on_job_removed, &watch);
  if (r < 0) return bus_error("cannot watch JobRemoved", r);
  struct SlotGuard {
    sd_bus_slot* s;
    ~SlotGuard() { sd_bus_slot_unref(s); }
  } guard{slot};

  sd_bus_error error = SD_BUS_ERROR_NULL;
  // Without Subscribe() systemd sends job signals only to clients it already tracks.
  r = sd_bus_call_method(bus_, kService, kPath, kManager, "Subscribe", &error, nullptr, "");
  sd_bus_error_free(&error);  // already subscribed is fine

  sd_bus_message* reply = nullptr;
  r = sd_bus_call_method(bus_, kService, kPath, kManager, "StartUnit", &error, &reply, "ss", unit.c_str(),
                         mode.c_str());
  if (r < 0) {
    auto e = bus_error("StartUnit " + unit, r, &error);
    sd_bus_error_free(&error);
    return e;
  }
  const char* job_path_c = nullptr;
  r = sd_bus_message_read(reply, "o", &job_path_c);
  std::string job_path = r >= 0 ? job_path_c : "";
  sd_bus_message_unref(reply);
  if (r < 0) return bus_error("StartUnit reply", r);

  std::size_t seen = 0;
  for (;;) {
    for (; seen < watch.removed.size(); ++seen) {
      const auto& job = watch.removed[seen];
      if (on_removed) on_removed(job.outcome);
      if (job.path == job_path) return job.outcome;
    }
    r = sd_bus_process(bus_, nullptr);
    if (r < 0) return bus_error("bus processing", r);
    if (r > 0) continue;  // more may be queued
    std::int64_t left = deadline_ms - now_ms();
    if (left <= 0) return JobOutcome{unit, std::string(kDispatcherTimeout)};
    r = sd_bus_wait(bus_, static_cast<uint64_t>(std::min<std::int64_t>(left, 1000)) * 1000);
    if (r < 0) return bus_error("bus wait", r);
  }
}

}  // namespace provisioner::dispatcher
