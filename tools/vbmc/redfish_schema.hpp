#pragma once
// The DMTF schema types the virtual BMC serves, in one table: each resource's @odata.type and
// @odata.context come from it, and so does the CSDL document at /redfish/v1/$metadata, so
// the two cannot disagree about which namespaces the service uses.
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace provisioner::vbmc {

struct SchemaType {
  const char* ns;       // "ComputerSystem" (the DMTF schema file is <ns>_v1.xml)
  const char* version;  // "v1_13_0"; "" for collections and other unversioned namespaces
  const char* entity;   // "ComputerSystem"

  std::string odata_type() const;     // "#ComputerSystem.v1_13_0.ComputerSystem"
  std::string odata_context() const;  // "/redfish/v1/$metadata#ComputerSystem.ComputerSystem"
  std::string versioned_ns() const;   // "ComputerSystem.v1_13_0" ("ComputerSystemCollection")
};

namespace schema {
extern const SchemaType service_root, session_service, session_collection, session, system_collection, system,
    manager_collection, manager, virtual_media_collection, virtual_media, message;
}

// {"@odata.context", "@odata.id", "@odata.type"} of a resource of `type` at `path`.
nlohmann::json resource_header(const SchemaType& type, const std::string& path);

// The CSDL (OData $metadata) document: one edmx:Reference per schema in the table above, plus
// RedfishExtensions (@Redfish.AllowableValues), and the Service entity container.
std::string metadata_document();

// The OData service document (/redfish/v1/odata): the top-level singletons.
nlohmann::json odata_service_document();

}  // namespace provisioner::vbmc
