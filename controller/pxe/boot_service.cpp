#include "controller/pxe/boot_service.hpp"

#include <algorithm>

#include "common/crypto.hpp"
#include "controller/jobs/job_phase.hpp"
#include "controller/logging/logger.hpp"
#include "controller/nodes/node_service.hpp"
#include "controller/store/store.hpp"

namespace provisioner {

namespace {

// An install or an inspection goes only to a MAC the node's record holds: a UUID or serial
// number in a request is easily claimed by anyone on the network, a MAC on the wire less so.
bool has_mac(const NodeRecord& node, const std::string& mac) {
  auto macs = node.record.value("macs", nlohmann::json::array());
  return std::find(macs.begin(), macs.end(), mac) != macs.end();
}

std::string query_or_empty(const std::map<std::string, std::string>& q, const char* key) {
  auto it = q.find(key);
  return it == q.end() ? std::string() : it->second;
}

}  // namespace

BootService::BootService(Store& store, NodeService& nodes, const Clock& clock, const Logger& log,
                         BootOptions options)
    : store_(store), nodes_(nodes), clock_(clock), log_(log), options_(std::move(options)) {
  while (!options_.public_url.empty() && options_.public_url.back() == '/') options_.public_url.pop_back();
}

std::string BootService::chain_script() const {
  // ${mac:hexhyp} keeps the URL free of ':'; ${serial:uristring} escapes what firmware puts
  // there. iPXE fills ${uuid} from SMBIOS.
  return "#!ipxe\n"
         "chain " + options_.public_url +
         "/boot/ipxe?mac=${mac:hexhyp}&uuid=${uuid}&serial=${serial:uristring}&arch=${buildarch}&platform=${platform}\n";
}

std::string BootService::local_boot(const BootIdentity& who, const std::string& why) const {
  std::string script = "#!ipxe\necho provisioner: " + why + ": booting from the local disk\n";
  // UEFI: leave iPXE so the firmware goes on to its next boot entry. BIOS: boot the first disk.
  if (who.platform == "efi") return script + "exit\n";
  return script + "sanboot --no-describe --drive 0x80 || exit\n";
}

Result<std::string> BootService::script_for(const std::map<std::string, std::string>& query) {
  for (const auto& [key, value] : query)
    if (key != "mac" && key != "uuid" && key != "serial" && key != "arch" && key != "platform")
      return make_error(ErrorKind::invalid_input, "bad boot request", {{key, "unknown parameter"}});
  auto who = parse_boot_identity(query_or_empty(query, "mac"), query_or_empty(query, "uuid"),
                                 query_or_empty(query, "serial"), query_or_empty(query, "arch"),
                                 query_or_empty(query, "platform"));
  if (!who) return who.error();
  auto node = nodes_.identify(*who);
  if (!node) return node.error();
  if (!*node) {
    if (options_.discover == "off") return local_boot(*who, "unknown machine");
    auto registered = nodes_.register_discovered(*who);
    if (!registered) return registered.error();
    if (options_.discover == "inspect") return inspect(*registered, *who);
    return local_boot(*who, "discovered as " + registered->id);
  }
  if (options_.discover == "inspect" && (**node).state == NodeState::discovered && !(**node).record.contains("inventory"))
    return inspect(**node, *who);
  return answer_node(**node, *who);
}

Result<std::string> BootService::inspect(const NodeRecord& node, const BootIdentity& who) {
  if (!options_.kernel || !options_.initrd || !options_.inspect_token)
    return local_boot(who, "the controller has no network boot files for an inspection");
  if (!has_mac(node, who.mac)) return local_boot(who, "node " + node.id + " does not list " + who.mac);
  // One open inspection per node: a nonce on the record, kept until its report arrives (a
  // machine that reboots before reporting gets the same token again).
  std::string nonce = node.record.value("/inspection/nonce"_json_pointer, std::string());
  if (nonce.empty()) {
    nonce = crypto::random_token(16);
    auto updated = nodes_.update_kept(node.id, {{"inspection", {{"nonce", nonce}, {"issued_at", format_rfc3339_ms(clock_.now_ms())}}}});
    if (!updated) return updated.error();
  }
  log_.info("network boot: inspecting", {{"node", node.id}, {"mac", who.mac}});
  return "#!ipxe\n"
         "echo provisioner: node " + node.id + ": inspection\n"
         "kernel " + options_.kernel->url + " initrd=initrd.img " + options_.kernel_args +
         " provision.inspect=" + options_.public_url + "/api/v1/nodes/" + node.id + "/inventory provision.inspect_token=" +
         options_.inspect_token(node.id, nonce) + "\n"
         "initrd --name initrd.img " + options_.initrd->url + "\n"
         "boot\n";
}

Result<std::string> BootService::answer_node(const NodeRecord& node, const BootIdentity& who) {
  const auto state = node.state;
  if (state != NodeState::pending && state != NodeState::installing)
    return local_boot(who, "node " + node.id + " is " + std::string(to_string(state)));
  if (!has_mac(node, who.mac)) return local_boot(who, "node " + node.id + " does not list " + who.mac);
  auto job_id = node.record.value("job_id", "");
  auto job = store_.get_job(job_id);
  if (!job) return job.error();
  if (!*job || (**job).server.value("node_id", "") != node.id)
    return local_boot(who, "node " + node.id + " has no job");
  const auto& j = **job;
  if (j.status == JobStatus::queued)
    // The task ISO is being built (a second or so): ask again shortly, still no install.
    return "#!ipxe\necho provisioner: job " + j.id + " is being prepared\nsleep 3\nchain " + options_.public_url +
           "/boot/ipxe?mac=${mac:hexhyp}&uuid=${uuid}&serial=${serial:uristring}&arch=${buildarch}&platform=${platform}\n";
  if (j.status != JobStatus::provisioning) return local_boot(who, "job " + j.id + " is " + std::string(to_string(j.status)));
  // A node with a BMC runs its job from virtual media: its network boot is not the way in.
  if (j.media.value("mode", "") != "pxe") return local_boot(who, "job " + j.id + " boots from virtual media");
  auto task = j.media.value("task_iso", nlohmann::json::object());
  if (!task.contains("url") || !task.contains("sha256") || !options_.kernel || !options_.initrd) {
    log_.error("cannot answer a network boot: no maintenance kernel/initrd ([pxe] kernel, initrd) or no task ISO",
               Logger::job_fields(j.id, j.server_serial));
    return local_boot(who, "the controller has no network boot files");
  }
  // The task is handed out only until the maintenance OS reports (as tasks/by-serial): it
  // carries the job's signing key. A machine that reboots after that boots its disk, and the
  // job's install timeout decides.
  auto events = store_.job_events(j.id);
  if (!events) return events.error();
  for (const auto& e : *events)
    if (e.kind == "phase" && e.name == phase_name(JobPhase::maint_booted))
      return local_boot(who, "job " + j.id + " is running in its maintenance OS");
  // The intent is recorded first and only while the job is provisioning: a cancel that won
  // means local boot.
  auto recorded = store_.record_phase_if_status(j.id, phase_name(JobPhase::netboot_served), JobStatus::provisioning,
                                                who.mac + " " + who.platform, clock_.now_ms());
  if (!recorded) return recorded.error();
  if (!*recorded) {
    auto fresh = store_.get_job(j.id);
    if (!fresh) return fresh.error();
    if (!*fresh || (**fresh).status != JobStatus::provisioning)
      return local_boot(who, "job " + j.id + " ended");
    // Served before (the node rebooted before its maintenance OS reported): the same task again.
  }
  if (state == NodeState::pending) {
    auto moved = nodes_.transition(node, NodeState::installing, {{"last_boot", {{"mac", who.mac}, {"platform", who.platform},
                                                                               {"arch", who.arch}}}},
                                   "boot", "network boot answered with job " + j.id);
    if (!moved) return moved.error();
    if (!*moved) {
      // Something changed the node first (a cancel sent it back to discovered, a new job):
      // serve only if it is now installing this very job.
      auto now = nodes_.load(node.id);
      if (!now) return now.error();
      if (now->state != NodeState::installing || now->record.value("job_id", "") != j.id) {
        (void)store_.withdraw_phase(j.id, phase_name(JobPhase::netboot_served), "the node changed first", clock_.now_ms());
        return local_boot(who, "node " + node.id + " changed meanwhile");
      }
    }
  }
  log_.info("network boot: installing", Logger::job_fields(j.id, j.server_serial, {{"node", node.id}, {"mac", who.mac}}));
  const auto& kernel = *options_.kernel;
  const auto& initrd = *options_.initrd;
  return "#!ipxe\n"
         "echo provisioner: node " + node.id + ": job " + j.id + "\n"
         "kernel " + kernel.url + " initrd=initrd.img " + options_.kernel_args +
         " provision.task=" + task["url"].get<std::string>() + " provision.sha256=" + task["sha256"].get<std::string>() + "\n"
         "initrd --name initrd.img " + initrd.url + "\n"
         "boot\n";
}

std::vector<RpiBoot> BootService::rpi_boots() {
  std::vector<RpiBoot> out;
  auto nodes = nodes_.all();
  if (!nodes) return out;
  for (const auto& node : *nodes) {
    if (!node.record.contains("rpi_serial")) continue;
    if (node.state != NodeState::pending && node.state != NodeState::installing) continue;
    auto job = store_.get_job(node.record.value("job_id", ""));
    if (!job || !*job || (**job).status != JobStatus::provisioning) continue;
    auto task = (**job).media.value("task_iso", nlohmann::json::object());
    if (!task.contains("url") || !task.contains("sha256")) continue;
    out.push_back(RpiBoot{node.record["rpi_serial"].get<std::string>(),
                          options_.rpi_kernel_args + " provision.task=" + task["url"].get<std::string>() +
                              " provision.sha256=" + task["sha256"].get<std::string>()});
  }
  return out;
}

}  // namespace provisioner
