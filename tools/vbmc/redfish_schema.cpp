#include "tools/vbmc/redfish_schema.hpp"

namespace provisioner::vbmc {

using nlohmann::json;

std::string SchemaType::odata_type() const { return "#" + versioned_ns() + "." + entity; }

std::string SchemaType::odata_context() const {
  return std::string("/redfish/v1/$metadata#") + ns + "." + entity;
}

std::string SchemaType::versioned_ns() const {
  std::string out = ns;
  if (*version) out.append(".").append(version);
  return out;
}

namespace schema {
const SchemaType service_root{"ServiceRoot", "v1_5_0", "ServiceRoot"};
const SchemaType session_service{"SessionService", "v1_1_8", "SessionService"};
const SchemaType session_collection{"SessionCollection", "", "SessionCollection"};
const SchemaType session{"Session", "v1_3_0", "Session"};
const SchemaType system_collection{"ComputerSystemCollection", "", "ComputerSystemCollection"};
const SchemaType system{"ComputerSystem", "v1_13_0", "ComputerSystem"};
const SchemaType manager_collection{"ManagerCollection", "", "ManagerCollection"};
const SchemaType manager{"Manager", "v1_10_0", "Manager"};
const SchemaType virtual_media_collection{"VirtualMediaCollection", "", "VirtualMediaCollection"};
const SchemaType virtual_media{"VirtualMedia", "v1_3_0", "VirtualMedia"};
const SchemaType message{"Message", "v1_1_1", "Message"};  // in error bodies
}  // namespace schema

namespace {

const std::vector<const SchemaType*>& all_types() {
  static const std::vector<const SchemaType*> types = {
      &schema::service_root,       &schema::session_service,   &schema::session_collection,
      &schema::session,            &schema::system_collection, &schema::system,
      &schema::manager_collection, &schema::manager,           &schema::virtual_media_collection,
      &schema::virtual_media,      &schema::message};
  return types;
}

struct Include {
  std::string ns, alias;
};

std::string reference(const std::string& file, const std::vector<Include>& includes) {
  std::string out = "  <edmx:Reference Uri=\"http://redfish.dmtf.org/schemas/v1/" + file + "_v1.xml\">\n";
  for (const auto& i : includes) {
    out += "    <edmx:Include Namespace=\"" + i.ns + "\"";
    if (!i.alias.empty()) out += " Alias=\"" + i.alias + "\"";
    out += "/>\n";
  }
  return out + "  </edmx:Reference>\n";
}

}  // namespace

json resource_header(const SchemaType& type, const std::string& path) {
  return {{"@odata.context", type.odata_context()}, {"@odata.id", path}, {"@odata.type", type.odata_type()}};
}

std::string metadata_document() {
  std::string x =
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
      "<edmx:Edmx xmlns:edmx=\"http://docs.oasis-open.org/odata/ns/edmx\" Version=\"4.0\">\n";
  for (const SchemaType* t : all_types()) {
    std::vector<Include> includes = {{t->ns, ""}};
    if (*t->version) includes.push_back({t->versioned_ns(), ""});
    x += reference(t->ns, includes);
  }
  x += reference("RedfishExtensions", {{"RedfishExtensions.v1_0_0", "Redfish"}});
  x += "  <edmx:DataServices>\n"
       "    <Schema xmlns=\"http://docs.oasis-open.org/odata/ns/edm\" Namespace=\"Service\">\n"
       "      <EntityContainer Name=\"Service\" Extends=\"" +
       schema::service_root.versioned_ns() +
       ".ServiceContainer\"/>\n"
       "    </Schema>\n"
       "  </edmx:DataServices>\n"
       "</edmx:Edmx>\n";
  return x;
}

json odata_service_document() {
  json value = json::array();
  auto singleton = [&](const char* name, const char* url) {
    value.push_back({{"name", name}, {"kind", "Singleton"}, {"url", url}});
  };
  singleton("Service", "/redfish/v1/");
  singleton("Systems", "/redfish/v1/Systems");
  singleton("Managers", "/redfish/v1/Managers");
  singleton("SessionService", "/redfish/v1/SessionService");
  singleton("Sessions", "/redfish/v1/SessionService/Sessions");
  return {{"@odata.context", "/redfish/v1/$metadata"}, {"value", value}};
}

}  // namespace provisioner::vbmc
