#pragma once
// The node registry: machines that boot from the network (PXE/iPXE, Raspberry Pi). Records
// are validated by schemas/node.schema.json with their identifiers normalised (MACs lower
// case with colons, UUIDs lower case), and every state change goes through transition(),
// which checks kNodeTransitions and compares-and-swaps in the store with an event.
#include <functional>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "common/clock.hpp"
#include "common/json_schema.hpp"
#include "common/result.hpp"
#include "controller/store/store.hpp"

namespace provisioner {

class Logger;

// What a boot request says about the machine, checked: a malformed value is an error, never
// an identifier. Placeholders firmware ships (an all-zero UUID, "To Be Filled By O.E.M.")
// are no identifier at all.
struct BootIdentity {
  std::string mac;                    // normalised; always present
  std::optional<std::string> uuid;    // normalised
  std::optional<std::string> serial;
  std::string arch;                   // iPXE ${buildarch}: i386, x86_64, arm64, arm32; "" unknown
  std::string platform;               // iPXE ${platform}: pcbios, efi; "" unknown
};

// Parses the query of a boot request (mac required; uuid, serial, arch, platform optional).
// Errors name the parameter.
Result<BootIdentity> parse_boot_identity(const std::string& mac, const std::string& uuid, const std::string& serial,
                                         const std::string& arch, const std::string& platform);
// "52-54-00-AB-CD-EF" → "52:54:00:ab:cd:ef"; nullopt when not a MAC.
std::optional<std::string> normalise_mac(const std::string& text);

class NodeService {
 public:
  NodeService(Store& store, const Clock& clock, const Logger& log);

  // The API. `actor` names who asked ("api:<role>").
  Result<nlohmann::json> create(std::string_view body, const std::string& actor);
  Result<nlohmann::json> get(const std::string& id);
  Result<nlohmann::json> list(const std::optional<std::string>& state, const std::optional<std::string>& cursor,
                              const std::optional<std::string>& limit);
  // JSON merge patch on the record (identity, name, labels, recipe_ref); never the state.
  Result<nlohmann::json> patch(const std::string& id, std::string_view body);
  // Refused (409) while the node has a job in flight (pending, installing).
  Status remove(const std::string& id);
  // PATCH /nodes/{id}/state {"state", "reason"}: the operator's moves (active, installed,
  // retired, discovered). `pending` is a job: JobService::create_for_node.
  Result<nlohmann::json> set_state(const std::string& id, std::string_view body, const std::string& actor);

  // Boot requests.
  Result<std::optional<NodeRecord>> identify(const BootIdentity& who);
  // Registers an unknown machine as discovered (what it told us: MAC, UUID, serial, platform).
  Result<NodeRecord> register_discovered(const BootIdentity& who);

  Result<NodeRecord> load(const std::string& id);
  // Moves a node along kNodeTransitions, merging `changes` into its record (null removes a
  // member) in the same compare-and-swap. false when the node is no longer in node.state;
  // an illegal move is a conflict.
  Result<bool> transition(const NodeRecord& node, NodeState to, const nlohmann::json& changes,
                          const std::string& actor, const std::string& detail);

  // Merges controller-kept members (inspection, last_boot, …) into a node's record, never
  // its state (compare-and-swap on updated_ms, retried).
  Result<NodeRecord> update_kept(const std::string& id, const nlohmann::json& changes);

  // POST /nodes/{id}/inventory from an inspection boot: `authorization` must be "Bearer
  // <the token of the node's open inspection>" (401 otherwise, before the body is looked at);
  // the inspection closes with it, so the same token never reports twice (401). The inventory is stored on the
  // node, and its MACs, SMBIOS serial and UUID join the node's identifiers where no other node
  // has them.
  Result<nlohmann::json> accept_inventory(const std::string& id, std::string_view authorization, std::string_view body,
                                          const std::function<std::string(const std::string& node_id,
                                                                          const std::string& nonce)>& token_for);

  // Whether a pending or installing node's job is still running (queued or provisioning).
  // false for a node whose job ended without the node following it (a crash between the
  // two, a job that failed before it claimed the node): such a node may be released.
  Result<bool> job_in_flight(const NodeRecord& node);
  // A pending or installing node whose job is no longer in flight goes back to discovered;
  // returns the node as it is now.
  Result<NodeRecord> release_if_stale(const NodeRecord& node, const std::string& actor);

  // Every node, for the DHCP host list.
  Result<std::vector<NodeRecord>> all();

  static nlohmann::json view(const NodeRecord& node);

  // Called after any change to a node (the DHCP host list follows).
  void on_change(std::function<void()> callback) { on_change_ = std::move(callback); }

 private:
  Result<nlohmann::json> check(nlohmann::json record) const;
  void changed() const {
    if (on_change_) on_change_();
  }

  Store& store_;
  const Clock& clock_;
  const Logger& log_;
  JsonSchema schema_;
  std::function<void()> on_change_;
};

}  // namespace provisioner
