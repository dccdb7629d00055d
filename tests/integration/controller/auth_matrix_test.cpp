// Every route against every caller: no token → 401, a role without the right → 403, the
// right role → neither. Routes come from the controller's own route table.
#include <gtest/gtest.h>

#include "controller/api/api_handler.hpp"
#include "tests/integration/controller/test_jobs.hpp"
#include "tests/support/controller_process.hpp"

using namespace provisioner;
using namespace provisioner::test;

TEST(AuthMatrix, EveryRouteEveryRole) {
  ControllerProcess controller;
  controller.start();
  auto id = controller.post("/api/v1/jobs", job_body()).json()["id"].get<std::string>();

  struct Caller {
    const char* token;
    std::optional<Role> role;
  };
  const std::vector<Caller> callers = {{nullptr, std::nullopt},
                                       {"wrong-token", std::nullopt},
                                       {ControllerProcess::kAdminToken, Role::admin},
                                       {ControllerProcess::kOperatorToken, Role::operator_},
                                       {ControllerProcess::kAuditorToken, Role::auditor},
                                       {ControllerProcess::kCiToken, Role::ci}};
  int checked = 0;
  for (const auto& route : api_routes()) {
    if (route.permission == Permission::webhook) continue;  // HMAC, tested in webhook_test
    std::string target = route.pattern;
    // Every {param} names something that does not exist.
    for (auto p = target.find('{'); p != std::string::npos; p = target.find('{'))
      target.replace(p, target.find('}', p) - p + 1, "unknown_1");
    // The event stream never ends for a caller it admits: a bad parameter makes it answer 400
    // (after the token and role checks, which are what this test is about).
    if (route.pattern == "/api/v1/events") target += "?last_event_id=not-an-id";
    for (const auto& caller : callers) {
      Headers h;
      if (caller.token) h.push_back({"Authorization", std::string("Bearer ") + caller.token});
      // A harmless body: mutating calls by allowed roles get 400/404, not a side effect.
      auto r = http_request(controller.port(), route.method, target, h, route.method == "POST" ? "{}" : "");
      std::string what = route.method + " " + route.pattern + " as " +
                         (caller.role ? std::string(to_string(*caller.role)) : "anonymous");
      if (route.permission == Permission::open) {
        EXPECT_NE(r.status, 401) << what;
        EXPECT_NE(r.status, 403) << what;
      } else if (!caller.role) {
        EXPECT_EQ(r.status, 401) << what;
        EXPECT_EQ(r.header("WWW-Authenticate"), "Bearer") << what;
      } else if (!role_allows(*caller.role, route.permission)) {
        EXPECT_EQ(r.status, 403) << what;
      } else {
        EXPECT_NE(r.status, 401) << what;
        EXPECT_NE(r.status, 403) << what;
      }
      ++checked;
    }
  }
  EXPECT_GE(checked, 40);
  // The matrix itself: auditors read only, CI submits but cannot cancel.
  EXPECT_EQ(controller.post("/api/v1/jobs", job_body(), ControllerProcess::kAuditorToken).status, 403);
  EXPECT_EQ(controller.post("/api/v1/jobs", job_body(), ControllerProcess::kCiToken).status, 201);
  EXPECT_EQ(controller.post("/api/v1/jobs/" + id + "/cancel", "", ControllerProcess::kCiToken).status, 403);
  EXPECT_EQ(controller.post("/api/v1/jobs/" + id + "/cancel", "", ControllerProcess::kAuditorToken).status, 403);
  EXPECT_NE(controller.get("/api/v1/jobs/" + id).json()["status"], "canceled") << "a refused cancel changed the job";
}
