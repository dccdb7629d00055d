#pragma once
// How a node is identified: any one of its MACs, its SMBIOS UUID or its serial number. The
// store keeps one unique key per identifier ("mac:…", "uuid:…", "serial:…"), so two records
// can never claim the same machine. Values here are already normalised (NodeService does it).
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace provisioner {

inline std::vector<std::string> node_identity_keys(const nlohmann::json& record) {
  std::vector<std::string> keys;
  if (auto it = record.find("macs"); it != record.end() && it->is_array())
    for (const auto& m : *it)
      if (m.is_string()) keys.push_back("mac:" + m.get<std::string>());
  if (auto it = record.find("uuid"); it != record.end() && it->is_string()) keys.push_back("uuid:" + it->get<std::string>());
  if (auto it = record.find("serial"); it != record.end() && it->is_string())
    keys.push_back("serial:" + it->get<std::string>());
  return keys;
}

}  // namespace provisioner
