// The virtual BMC's Redfish protocol (DMTF DSP0266) over real HTTP, without booting anything:
// QEMU only starts on a power-on, so a vbmc with one machine definition serves every resource
// here with no QEMU process at all. What a real BMC's Redfish service does, checked on the
// wire: $metadata and the OData service document, identity properties on every resource,
// Allow and HEAD, 405 vs 404, the Basic challenge on 401, the session login answer,
// OData-Version and a stable ServiceRoot UUID.
#include <algorithm>
#include <deque>
#include <filesystem>
#include <memory>
#include <regex>
#include <set>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/crypto.hpp"
#include "controller/logging/logger.hpp"
#include "tests/support/http_client.hpp"
#include "tools/vbmc/vbmc_config.hpp"
#include "tools/vbmc/virtual_bmc.hpp"

namespace fs = std::filesystem;
using nlohmann::json;
using provisioner::test::Headers;
using provisioner::test::http_request;
using provisioner::test::HttpResponse;

namespace provisioner::vbmc {
namespace {

constexpr const char* kPassword = "protocol-test-password";

std::string basic_auth(const std::string& user, const std::string& pass) {
  return "Basic " + crypto::base64_encode(user + ":" + pass);
}

std::set<std::string> allow_set(const std::string& header) {
  std::set<std::string> out;
  std::size_t pos = 0;
  while (pos <= header.size()) {
    auto e = header.find(',', pos);
    if (e == std::string::npos) e = header.size();
    std::string m = header.substr(pos, e - pos);
    m.erase(0, m.find_first_not_of(' '));
    m.erase(m.find_last_not_of(' ') + 1);
    if (!m.empty()) out.insert(m);
    pos = e + 1;
  }
  return out;
}

std::string without_trailing_slash(std::string p) {
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  return p;
}

// Every "@odata.id" anywhere in a body.
void collect_ids(const json& j, std::vector<std::string>& out) {
  if (j.is_object()) {
    for (auto it = j.begin(); it != j.end(); ++it) {
      if (it.key() == "@odata.id" && it->is_string()) out.push_back(it->get<std::string>());
      else collect_ids(*it, out);
    }
  } else if (j.is_array()) {
    for (const auto& e : j) collect_ids(e, out);
  }
}

// The namespaces a CSDL document includes (<edmx:Include Namespace="..."/>).
std::set<std::string> included_namespaces(const std::string& xml) {
  std::set<std::string> out;
  std::regex re(R"re(<edmx:Include\s+Namespace="([^"]+)")re");
  for (auto it = std::sregex_iterator(xml.begin(), xml.end(), re); it != std::sregex_iterator(); ++it)
    out.insert((*it)[1].str());
  return out;
}

class RedfishProtocolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("vbmc-proto-" + crypto::random_token(6));
    fs::create_directories(dir_);
    logger_ = std::make_unique<Logger>(Logger::Format::text, "warn");
    start(config());
  }

  void TearDown() override {
    vbmc_.reset();
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  VbmcConfig config(const std::string& state = "state") {
    VbmcConfig c;
    c.listen = "127.0.0.1:0";
    c.password = kPassword;
    c.state_dir = dir_ / state;
    c.accel = "tcg";  // no KVM probe: nothing is started until a power-on
    MachineConfig m;
    m.id = "vm1";
    m.memory_mb = 128;
    m.disk_size = "32M";
    c.machines.push_back(m);
    return c;
  }

  void start(VbmcConfig c) {
    ASSERT_TRUE(finish_config(c));
    auto v = VirtualBmc::create(c, *logger_);
    ASSERT_TRUE(v) << v.error().message;
    vbmc_ = std::move(*v);
    auto p = vbmc_->start();
    ASSERT_TRUE(p) << p.error().message;
    port_ = *p;
  }

  HttpResponse call(const std::string& method, const std::string& path, Headers extra = {},
                    const std::string& body = "") {
    Headers h = {{"Authorization", basic_auth("admin", kPassword)}};
    if (!body.empty()) h.emplace_back("Content-Type", "application/json");
    h.insert(h.end(), extra.begin(), extra.end());
    return http_request(port_, method, path, h, body);
  }

  HttpResponse login() {
    return http_request(port_, "POST", "/redfish/v1/SessionService/Sessions", {{"Content-Type", "application/json"}},
                        json{{"UserName", "admin"}, {"Password", kPassword}}.dump());
  }

  fs::path dir_;
  std::unique_ptr<Logger> logger_;
  std::unique_ptr<VirtualBmc> vbmc_;
  std::uint16_t port_ = 0;
};

// Everything reachable from the root by @odata.id links: identity properties, @odata.context,
// an Allow header listing GET and HEAD, and a HEAD that answers like the GET without a body.
TEST_F(RedfishProtocolTest, EveryResourceCarriesItsIdentityAllowAndAnswersHead) {
  ASSERT_EQ(login().status, 201);  // so that Sessions has a member to visit
  std::string metadata = http_request(port_, "GET", "/redfish/v1/$metadata").body;
  std::set<std::string> namespaces = included_namespaces(metadata);
  std::regex type_re(R"(^#([A-Za-z]+)(\.v\d+_\d+_\d+)?\.([A-Za-z]+)$)");

  std::deque<std::string> todo = {"/redfish/v1/"};
  std::set<std::string> seen;
  while (!todo.empty() && seen.size() < 100) {
    std::string uri = todo.front();
    todo.pop_front();
    if (!seen.insert(without_trailing_slash(uri)).second) continue;
    SCOPED_TRACE(uri);
    auto get = call("GET", uri);
    ASSERT_EQ(get.status, 200) << get.body;
    json j = get.json();
    EXPECT_EQ(without_trailing_slash(j.value("@odata.id", "")), without_trailing_slash(uri));
    std::string type = j.value("@odata.type", "");
    std::smatch m;
    ASSERT_TRUE(std::regex_match(type, m, type_re)) << "@odata.type " << type;
    std::string ns = m[1].str(), version = m[2].str(), entity = m[3].str();
    bool collection = entity.size() > 10 && entity.compare(entity.size() - 10, 10, "Collection") == 0;
    EXPECT_TRUE(j.contains("Name") && j["Name"].is_string() && !j["Name"].get<std::string>().empty());
    if (collection) {
      EXPECT_TRUE(version.empty()) << "collections are unversioned";
      EXPECT_TRUE(j.contains("Members") && j["Members"].is_array());
      EXPECT_EQ(j.value("Members@odata.count", -1), static_cast<int>(j["Members"].size()));
      // DMTF's collection schemas have additionalProperties false and no Id property.
      EXPECT_FALSE(j.contains("Id"));
    } else {
      EXPECT_FALSE(version.empty()) << "resources name their schema version";
      EXPECT_TRUE(j.contains("Id") && j["Id"].is_string() && !j["Id"].get<std::string>().empty());
      if (uri != "/redfish/v1/") {
        EXPECT_EQ(j["Id"], uri.substr(uri.find_last_of('/') + 1));
      }
    }
    EXPECT_EQ(j.value("@odata.context", ""), "/redfish/v1/$metadata#" + ns + "." + entity);
    EXPECT_TRUE(namespaces.count(ns)) << ns << " not in $metadata";
    if (!version.empty()) {
      EXPECT_TRUE(namespaces.count(ns + version)) << ns + version << " not in $metadata";
    }

    auto allow = allow_set(get.header("allow"));
    EXPECT_TRUE(allow.count("GET") && allow.count("HEAD")) << "Allow: " << get.header("allow");

    auto head = call("HEAD", uri);
    EXPECT_EQ(head.status, 200);
    EXPECT_TRUE(head.body.empty());
    EXPECT_EQ(head.header("content-length"), std::to_string(get.body.size()));
    EXPECT_EQ(head.header("allow"), get.header("allow"));
    EXPECT_EQ(head.header("etag"), get.header("etag"));
    EXPECT_EQ(head.header("odata-version"), "4.0");

    std::vector<std::string> links;
    collect_ids(j, links);
    for (auto& l : links)
      if (!seen.count(without_trailing_slash(l))) todo.push_back(l);
  }
  // Root, SessionService, Sessions + one, Systems + vm1, Managers + vm1, VirtualMedia + 3 slots.
  EXPECT_GE(seen.size(), 12u);
  EXPECT_TRUE(seen.count("/redfish/v1/Managers/vm1/VirtualMedia/USB1"));
}

TEST_F(RedfishProtocolTest, AllowHeadersNameTheWritableMethods) {
  auto sys = call("GET", "/redfish/v1/Systems/vm1");
  EXPECT_EQ(allow_set(sys.header("allow")), (std::set<std::string>{"GET", "HEAD", "PATCH"}));
  auto slot = call("GET", "/redfish/v1/Managers/vm1/VirtualMedia/CD1");
  EXPECT_EQ(allow_set(slot.header("allow")), (std::set<std::string>{"GET", "HEAD", "PATCH"}));
  auto sessions = call("GET", "/redfish/v1/SessionService/Sessions");
  EXPECT_EQ(allow_set(sessions.header("allow")), (std::set<std::string>{"GET", "HEAD", "POST"}));
  auto s = login();
  ASSERT_EQ(s.status, 201);
  auto session = call("GET", s.header("location"));
  EXPECT_EQ(allow_set(session.header("allow")), (std::set<std::string>{"GET", "HEAD", "DELETE"}));
  auto root = call("GET", "/redfish/v1/");
  EXPECT_EQ(allow_set(root.header("allow")), (std::set<std::string>{"GET", "HEAD"}));
}

TEST_F(RedfishProtocolTest, UnsupportedMethodsAre405WithAllowAndUnknownUrisAre404) {
  auto s = login();
  ASSERT_EQ(s.status, 201);
  struct Case {
    std::string method, path;
    std::set<std::string> allow;
  };
  const std::vector<Case> cases = {
      {"POST", "/redfish/v1/", {"GET", "HEAD"}},
      {"PATCH", "/redfish/v1/", {"GET", "HEAD"}},
      {"DELETE", "/redfish/v1/Systems", {"GET", "HEAD"}},
      {"POST", "/redfish/v1/Systems", {"GET", "HEAD"}},
      {"DELETE", "/redfish/v1/Systems/vm1", {"GET", "HEAD", "PATCH"}},
      {"PUT", "/redfish/v1/Systems/vm1", {"GET", "HEAD", "PATCH"}},
      {"GET", "/redfish/v1/Systems/vm1/Actions/ComputerSystem.Reset", {"POST"}},
      {"HEAD", "/redfish/v1/Systems/vm1/Actions/ComputerSystem.Reset", {"POST"}},
      {"PATCH", "/redfish/v1/Managers/vm1", {"GET", "HEAD"}},
      {"POST", "/redfish/v1/Managers/vm1/VirtualMedia", {"GET", "HEAD"}},
      {"DELETE", "/redfish/v1/Managers/vm1/VirtualMedia/CD1", {"GET", "HEAD", "PATCH"}},
      {"GET", "/redfish/v1/Managers/vm1/VirtualMedia/CD1/Actions/VirtualMedia.InsertMedia", {"POST"}},
      {"PUT", "/redfish/v1/Managers/vm1/VirtualMedia/CD1/Actions/VirtualMedia.EjectMedia", {"POST"}},
      {"PATCH", "/redfish/v1/SessionService", {"GET", "HEAD"}},
      {"DELETE", "/redfish/v1/SessionService/Sessions", {"GET", "HEAD", "POST"}},
      {"PATCH", s.header("location"), {"GET", "HEAD", "DELETE"}},
      {"POST", "/redfish/v1/$metadata", {"GET", "HEAD"}},
      {"DELETE", "/redfish/v1/odata", {"GET", "HEAD"}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.method + " " + c.path);
    auto r = call(c.method, c.path, {}, c.method == "GET" || c.method == "HEAD" ? "" : "{}");
    EXPECT_EQ(r.status, 405);
    EXPECT_EQ(allow_set(r.header("allow")), c.allow) << "Allow: " << r.header("allow");
    if (c.method != "HEAD") {
      EXPECT_TRUE(r.json().contains("error")) << r.body;
    }
  }
  // Unknown URIs are 404 whatever the method (nothing there to have an Allow list).
  const std::vector<std::pair<std::string, std::string>> missing = {
      {"GET", "/redfish/v1/Chassis"},
      {"DELETE", "/redfish/v1/Systems/nope"},
      {"GET", "/redfish/v1/Systems/vm1/Bios"},
      {"POST", "/redfish/v1/Systems/vm1/Actions/ComputerSystem.Explode"},
      {"GET", "/redfish/v1/Managers/vm1/VirtualMedia/CD9"},
      {"PATCH", "/redfish/v1/Managers/vm1/VirtualMedia/CD9"},
      {"GET", "/redfish/v1/SessionService/Sessions/999999"},
      {"HEAD", "/redfish/v1/Systems/nope"},
  };
  for (const auto& [method, path] : missing) {
    SCOPED_TRACE(method + " " + path);
    auto r = call(method, path, {}, method == "GET" || method == "HEAD" ? "" : "{}");
    EXPECT_EQ(r.status, 404);
    EXPECT_TRUE(r.header("allow").empty());
  }
}

TEST_F(RedfishProtocolTest, UnauthorizedAnswersCarryABasicChallenge) {
  std::regex challenge(R"(^Basic realm="[^"]+".*)");
  const std::vector<Headers> bad = {
      {},
      {{"Authorization", basic_auth("admin", "wrong")}},
      {{"Authorization", "Bearer nothing"}},
      {{"X-Auth-Token", "not-a-session"}},
  };
  for (const auto& h : bad) {
    for (const std::string method : {"GET", "HEAD"}) {
      auto r = http_request(port_, method, "/redfish/v1/Systems/vm1", h);
      EXPECT_EQ(r.status, 401) << method;
      EXPECT_TRUE(std::regex_match(r.header("www-authenticate"), challenge)) << r.header("www-authenticate");
    }
  }
  auto refused = http_request(port_, "POST", "/redfish/v1/SessionService/Sessions", {{"Content-Type", "application/json"}},
                              json{{"UserName", "admin"}, {"Password", "nope"}}.dump());
  EXPECT_EQ(refused.status, 401);
  EXPECT_TRUE(std::regex_match(refused.header("www-authenticate"), challenge));
  // What DSP0266 makes public stays public, GET and HEAD alike.
  for (const std::string path : {"/redfish", "/redfish/v1/", "/redfish/v1/$metadata", "/redfish/v1/odata"}) {
    EXPECT_EQ(http_request(port_, "GET", path).status, 200) << path;
    EXPECT_EQ(http_request(port_, "HEAD", path).status, 200) << path;
  }
}

TEST_F(RedfishProtocolTest, MetadataIsCsdlNamingTheSchemaNamespacesInUse) {
  auto r = http_request(port_, "GET", "/redfish/v1/$metadata");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.header("content-type").rfind("application/xml", 0), 0u) << r.header("content-type");
  EXPECT_EQ(r.header("odata-version"), "4.0");
  const std::string& x = r.body;
  EXPECT_EQ(x.rfind("<?xml version=\"1.0\" encoding=\"UTF-8\"?>", 0), 0u);
  EXPECT_NE(x.find("<edmx:Edmx xmlns:edmx=\"http://docs.oasis-open.org/odata/ns/edmx\" Version=\"4.0\">"),
            std::string::npos);
  EXPECT_NE(x.find("</edmx:Edmx>"), std::string::npos);
  // Each namespace family comes from its DMTF schema file.
  std::regex ref_re(R"(<edmx:Reference Uri="http://redfish\.dmtf\.org/schemas/v1/([A-Za-z]+)_v1\.xml">)");
  std::set<std::string> files;
  for (auto it = std::sregex_iterator(x.begin(), x.end(), ref_re); it != std::sregex_iterator(); ++it)
    files.insert((*it)[1].str());
  auto ns = included_namespaces(x);
  for (const std::string n : {"ServiceRoot", "ComputerSystem", "ComputerSystemCollection", "Manager",
                              "ManagerCollection", "VirtualMedia", "VirtualMediaCollection", "SessionService",
                              "Session", "SessionCollection", "Message"}) {
    EXPECT_TRUE(ns.count(n)) << n;
    EXPECT_TRUE(files.count(n)) << n;
  }
  EXPECT_TRUE(ns.count("RedfishExtensions.v1_0_0"));  // @Redfish.AllowableValues
  // The entity container extends the ServiceRoot version the root announces.
  std::string root_type = http_request(port_, "GET", "/redfish/v1/").json()["@odata.type"];  // #ServiceRoot.vX.ServiceRoot
  std::string root_ns = root_type.substr(1, root_type.rfind('.') - 1);
  EXPECT_TRUE(ns.count(root_ns)) << root_ns;
  EXPECT_NE(x.find("<EntityContainer Name=\"Service\" Extends=\"" + root_ns + ".ServiceContainer\"/>"),
            std::string::npos);
  // Opening and closing tags balance (a cheap well-formedness check without an XML parser).
  auto count = [&](const std::string& s) {
    std::size_t n = 0;
    for (auto p = x.find(s); p != std::string::npos; p = x.find(s, p + 1)) ++n;
    return n;
  };
  EXPECT_EQ(count("<edmx:Reference "), count("</edmx:Reference>"));
  EXPECT_EQ(count("<edmx:DataServices>"), 1u);
  EXPECT_EQ(count("</edmx:DataServices>"), 1u);
}

TEST_F(RedfishProtocolTest, ODataServiceDocumentListsTheTopLevelResources) {
  auto r = http_request(port_, "GET", "/redfish/v1/odata");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.header("content-type").rfind("application/json", 0), 0u);
  json j = r.json();
  EXPECT_EQ(j["@odata.context"], "/redfish/v1/$metadata");
  ASSERT_TRUE(j["value"].is_array());
  std::map<std::string, std::string> urls;
  for (const auto& v : j["value"]) {
    EXPECT_EQ(v["kind"], "Singleton");
    urls[v["name"]] = v["url"];
  }
  EXPECT_EQ(urls["Service"], "/redfish/v1/");
  EXPECT_EQ(urls["Systems"], "/redfish/v1/Systems");
  EXPECT_EQ(urls["Managers"], "/redfish/v1/Managers");
  EXPECT_EQ(urls["SessionService"], "/redfish/v1/SessionService");
  EXPECT_EQ(urls["Sessions"], "/redfish/v1/SessionService/Sessions");
  for (const auto& [name, url] : urls) EXPECT_EQ(call("GET", url).status, 200) << name;
}

TEST_F(RedfishProtocolTest, SessionLoginAnswersTheSessionResource) {
  auto s = login();
  ASSERT_EQ(s.status, 201);
  std::string token = s.header("x-auth-token"), loc = s.header("location");
  ASSERT_FALSE(token.empty());
  ASSERT_EQ(loc.rfind("/redfish/v1/SessionService/Sessions/", 0), 0u) << loc;
  json body = s.json();
  EXPECT_EQ(body["@odata.id"], loc);
  EXPECT_EQ(body["@odata.type"].get<std::string>().rfind("#Session.v1_", 0), 0u);
  EXPECT_EQ(body["Id"], loc.substr(loc.find_last_of('/') + 1));
  EXPECT_TRUE(body.contains("Name"));
  EXPECT_EQ(body["UserName"], "admin");
  EXPECT_TRUE(body.contains("Password") && body["Password"].is_null());  // DSP0266: null in answers
  EXPECT_EQ(s.body.find(kPassword), std::string::npos);
  EXPECT_EQ(s.body.find(token), std::string::npos);
  // The body is the Session resource itself: what a GET of Location returns.
  auto get = http_request(port_, "GET", loc, {{"X-Auth-Token", token}});
  ASSERT_EQ(get.status, 200);
  EXPECT_EQ(get.json(), body);
}

TEST_F(RedfishProtocolTest, ODataVersionIsAnsweredAndUnsupportedVersionsAre412) {
  for (const std::string path : {"/redfish/v1/", "/redfish/v1/Systems/vm1", "/redfish/v1/$metadata"}) {
    auto ok = call("GET", path, {{"OData-Version", "4.0"}});
    EXPECT_EQ(ok.status, 200) << path;
    EXPECT_EQ(ok.header("odata-version"), "4.0");
    auto bad = call("GET", path, {{"OData-Version", "5.0"}});
    EXPECT_EQ(bad.status, 412) << path;
    EXPECT_EQ(bad.header("odata-version"), "4.0");
    EXPECT_TRUE(bad.json().contains("error")) << bad.body;
  }
  auto errors = call("GET", "/redfish/v1/Systems/nope");  // errors carry it too
  EXPECT_EQ(errors.header("odata-version"), "4.0");
  // A refused request changes nothing: no session is created.
  auto before = call("GET", "/redfish/v1/SessionService/Sessions").json()["Members@odata.count"];
  auto refused = http_request(port_, "POST", "/redfish/v1/SessionService/Sessions",
                              {{"Content-Type", "application/json"}, {"OData-Version", "5.0"}},
                              json{{"UserName", "admin"}, {"Password", kPassword}}.dump());
  EXPECT_EQ(refused.status, 412);
  EXPECT_TRUE(refused.header("x-auth-token").empty());
  EXPECT_EQ(call("GET", "/redfish/v1/SessionService/Sessions").json()["Members@odata.count"], before);
}

TEST_F(RedfishProtocolTest, ServiceRootUuidIsStablePerConfig) {
  std::regex uuid_re("^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$");
  std::string first = http_request(port_, "GET", "/redfish/v1/").json().value("UUID", "");
  EXPECT_TRUE(std::regex_match(first, uuid_re)) << first;
  vbmc_.reset();
  start(config());  // same config, new process state, new port
  EXPECT_EQ(http_request(port_, "GET", "/redfish/v1/").json().value("UUID", ""), first);
  vbmc_.reset();
  start(config("other-state"));  // another vbmc on the same host
  std::string other = http_request(port_, "GET", "/redfish/v1/").json().value("UUID", "");
  EXPECT_TRUE(std::regex_match(other, uuid_re)) << other;
  EXPECT_NE(other, first);
}

}  // namespace
}  // namespace provisioner::vbmc
