// The OpenAPI document and the route table must agree both ways.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>

#include <nlohmann/json.hpp>

#include "controller/api/api_handler.hpp"

using namespace provisioner;

namespace {
std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}
}  // namespace

TEST(OpenApi, EveryRouteIsDocumentedAndEveryDocumentedRouteExists) {
  std::ifstream in(std::string(PROVISIONER_SCHEMAS_DIR) + "/openapi.json");
  auto doc = nlohmann::json::parse(in);
  EXPECT_EQ(doc["openapi"].get<std::string>().substr(0, 2), "3.");
  std::set<std::pair<std::string, std::string>> routes, documented;
  for (const auto& r : api_routes()) {
    routes.insert({lower(r.method), r.pattern});
    ASSERT_TRUE(doc["paths"].contains(r.pattern)) << r.pattern << " is missing from schemas/openapi.json";
    EXPECT_TRUE(doc["paths"][r.pattern].contains(lower(r.method)))
        << r.method << " " << r.pattern << " is missing from schemas/openapi.json";
    const auto& op = doc["paths"][r.pattern][lower(r.method)];
    bool needs_token = r.permission != Permission::open && r.permission != Permission::webhook;
    if (needs_token) {
      EXPECT_TRUE(op["responses"].contains("401")) << r.pattern << " should document 401";
    }
    if (r.permission == Permission::submit || r.permission == Permission::operate)
      EXPECT_TRUE(op["responses"].contains("403")) << r.pattern << " should document 403";
  }
  for (const auto& [path, item] : doc["paths"].items())
    for (const auto& [method, op] : item.items()) documented.insert({method, path});
  EXPECT_EQ(routes, documented);
}
