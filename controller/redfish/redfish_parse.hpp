#pragma once
// Pure helpers over Redfish JSON and HTTP details; no I/O, so unit tests cover them directly.
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "controller/redfish/redfish_client.hpp"

namespace provisioner::redfish {

// j[key]["@odata.id"] as a path, or "".
std::string odata_link(const nlohmann::json& j, const char* key);
// Every Members[*]["@odata.id"] of a collection.
std::vector<std::string> collection_members(const nlohmann::json& collection);
// "https://10.0.0.5/redfish/v1/x" -> "/redfish/v1/x"; paths pass through.
std::string path_of(const std::string& uri);
// The human part of a Redfish error body: MessageIds and Messages of @Message.ExtendedInfo
// and error.message, joined and shortened. Plain text bodies are shortened as is.
std::string bmc_message(const std::string& body);
// The BMC is busy rather than refusing: iDRAC SYS518, iLO InvalidOperationForSystemState,
// POST in progress... these may come as 400/409/5xx and deserve a retry.
bool is_not_ready_answer(int status, const std::string& body);
bool mentions(const std::string& body, const std::string& needle);  // case-insensitive
bool is_weak_etag(const std::string& etag);
std::string strong_etag(const std::string& etag);  // W/"x" -> "x"
// userinfo stripped from URLs ("http://u:p@h/x" -> "http://h/x") so errors never carry it.
std::string redact_url(const std::string& url);
std::string url_scheme_upper(const std::string& url);  // "HTTP", "HTTPS", "NFS", ...

VirtualMediaSlot parse_slot(const std::string& uri, const nlohmann::json& j, const std::string& etag,
                            bool under_manager);
// ResetType allowable values from the Reset action; empty when the BMC lists none.
std::vector<std::string> allowable_reset_types(const nlohmann::json& system);
std::vector<std::string> string_array(const nlohmann::json& j, const char* key);
bool contains(const std::vector<std::string>& values, const std::string& v);

}  // namespace provisioner::redfish
