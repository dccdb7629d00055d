#pragma once
// Node lifecycle states and the table of legal transitions, in the style of job_status.hpp.
// Every state change goes through NodeService::transition, which checks this table and then
// compares-and-swaps in the store (with an event that says who and why).
//
// A node is a machine that boots from the network (PXE/iPXE, Raspberry Pi). Its state is what
// the boot endpoints and the DHCP server answer it: only `pending` (with a job) ever installs.
#include <array>
#include <optional>
#include <string_view>

namespace provisioner {

enum class NodeState { discovered, pending, installing, installed, active, retired };

struct NodeTransition {
  NodeState from;
  NodeState to;
  std::string_view why;
  bool explicit_request;  // only on an operator's request (PATCH state, a job for the node)
};

inline constexpr std::array<NodeTransition, 13> kNodeTransitions = {{
    {NodeState::discovered, NodeState::pending, "a job was submitted for the node", true},
    {NodeState::pending, NodeState::installing, "the node network-booted and was handed its task", false},
    {NodeState::pending, NodeState::discovered, "its job was canceled or failed before the node booted", false},
    {NodeState::installing, NodeState::installed, "its job succeeded", false},
    {NodeState::installing, NodeState::discovered, "its job failed or was canceled: the next boot does not install", false},
    {NodeState::installed, NodeState::active, "an operator put it in service", true},
    {NodeState::active, NodeState::installed, "an operator took it out of service", true},
    // reprovision: the only way back to an install, and only on an explicit request.
    {NodeState::installed, NodeState::pending, "reprovision: an operator asked for a new install", true},
    {NodeState::active, NodeState::pending, "reprovision: an operator asked for a new install", true},
    {NodeState::discovered, NodeState::retired, "decommissioned", true},
    {NodeState::installed, NodeState::retired, "decommissioned", true},
    {NodeState::active, NodeState::retired, "decommissioned", true},
    {NodeState::retired, NodeState::discovered, "re-enrolled by an operator", true},
}};

constexpr const NodeTransition* find_node_transition(NodeState from, NodeState to) {
  for (const auto& t : kNodeTransitions)
    if (t.from == from && t.to == to) return &t;
  return nullptr;
}

constexpr std::string_view to_string(NodeState s) {
  switch (s) {
    case NodeState::discovered: return "discovered";
    case NodeState::pending: return "pending";
    case NodeState::installing: return "installing";
    case NodeState::installed: return "installed";
    case NodeState::active: return "active";
    case NodeState::retired: return "retired";
  }
  return "unknown";
}

constexpr std::optional<NodeState> parse_node_state(std::string_view s) {
  for (auto st : {NodeState::discovered, NodeState::pending, NodeState::installing, NodeState::installed,
                  NodeState::active, NodeState::retired})
    if (to_string(st) == s) return st;
  return std::nullopt;
}

// States whose machines get a PXE answer at all (provisioning-only DHCP): the others boot
// their disk without ever seeing an offer.
constexpr bool gets_pxe_offer(NodeState s) {
  return s == NodeState::discovered || s == NodeState::pending || s == NodeState::installing;
}

}  // namespace provisioner
