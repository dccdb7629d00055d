// Nodes and the boot endpoints against the real controller over HTTP: the lifecycle table
// (every illegal move a 409), the boot answers for each state, and bad input (400 with the
// field, nothing registered). The DHCP side is in pxe_network_test.cpp.
#include <gtest/gtest.h>

#include <fstream>
#include <thread>

#include "tests/integration/controller/test_jobs.hpp"
#include "tests/integration/controller/webhook_signer.hpp"
#include "tests/support/controller_process.hpp"

using namespace provisioner;
using namespace provisioner::test;

namespace {

HttpResponse call(const ControllerProcess& c, const std::string& method, const std::string& target,
                  const std::string& body = "", const char* token = ControllerProcess::kAdminToken) {
  Headers h{{"Content-Type", "application/json"}};
  if (token) h.push_back({"Authorization", std::string("Bearer ") + token});
  return http_request(c.port(), method, target, h, body);
}

class NodesApi : public testing::Test {
 protected:
  void SetUp() override {
    std::ofstream(files.path() / "vmlinuz") << "stand-in kernel";
    std::ofstream(files.path() / "initrd.img") << "stand-in initrd";
    controller = std::make_unique<ControllerProcess>(
        "[pxe]\nenabled = true\ndhcp = \"off\"\nkernel = \"" + (files.path() / "vmlinuz").string() + "\"\ninitrd = \"" +
        (files.path() / "initrd.img").string() + "\"\nkernel_args = \"console=ttyS0,115200\"\n"
        "[[pxe.profiles]]\nmatch = {role = \"web\", rack = \"r1\"}\nrecipe_ref = \"debian-12\"\n");
    controller->start();
  }

  std::string create_node(const nlohmann::json& record) {
    auto r = call(*controller, "POST", "/api/v1/nodes", record.dump());
    EXPECT_EQ(r.status, 201) << r.body;
    return r.json().value("id", "");
  }
  nlohmann::json node(const std::string& id) { return controller->get("/api/v1/nodes/" + id).json(); }
  HttpResponse boot(const std::string& query) { return http_request(controller->port(), "GET", "/boot/ipxe?" + query); }
  std::string submit(const std::string& node_id, bool reprovision = false) {
    nlohmann::json body{{"node", {{"id", node_id}}}, {"recipe", linux_recipe()}};
    if (reprovision) body["reprovision"] = true;
    auto r = controller->post("/api/v1/jobs", body.dump());
    EXPECT_EQ(r.status, 201) << r.body;
    return r.json().value("id", "");
  }
  void wait_provisioning(const std::string& job) { controller->wait_for_status(job, "provisioning"); }
  void report(const std::string& node_id, const std::string& job, const std::string& status) {
    nlohmann::json body{{"job_id", job}, {"status", status}, {"step", "provision-linux.target"}};
    if (status == "failed") body["failed_step"] = "provision-image-linux.service";
    auto r = send_webhook(*controller, node_id, controller->webhook_key(job), body.dump());
    ASSERT_EQ(r.status, 200) << r.body;
  }

  TempDir files;
  std::unique_ptr<ControllerProcess> controller;
};

}  // namespace

TEST_F(NodesApi, ANodeIsFoundByAnyIdentifierAndNoIdentifierTwice) {
  auto id = create_node({{"macs", {"52-54-00-AA-BB-01"}}, {"serial", "SER1"}, {"labels", {{"rack", "r1"}}}});
  auto n = node(id);
  EXPECT_EQ(n["state"], "discovered");
  EXPECT_EQ(n["macs"][0], "52:54:00:aa:bb:01") << "normalised";
  EXPECT_EQ(n["history"][0]["to"], "discovered");
  EXPECT_EQ(n["history"][0]["by"], "api:admin");

  auto dup = call(*controller, "POST", "/api/v1/nodes", R"({"macs": ["52:54:00:aa:bb:01"]})");
  EXPECT_EQ(dup.status, 409) << dup.body;
  auto dup_serial = call(*controller, "POST", "/api/v1/nodes", R"({"macs": ["52:54:00:aa:bb:02"], "serial": "SER1"})");
  EXPECT_EQ(dup_serial.status, 409) << dup_serial.body;
  EXPECT_EQ(controller->get("/api/v1/nodes").json()["nodes"].size(), 1u) << "nothing of the refused ones stored";

  auto patched = call(*controller, "PATCH", "/api/v1/nodes/" + id, R"({"name": "web-1", "labels": {"rack": null}})");
  ASSERT_EQ(patched.status, 200) << patched.body;
  EXPECT_EQ(patched.json()["name"], "web-1");
  EXPECT_FALSE(patched.json().contains("labels") && patched.json()["labels"].contains("rack"));
  auto state_by_patch = call(*controller, "PATCH", "/api/v1/nodes/" + id, R"({"state": "active"})");
  EXPECT_EQ(state_by_patch.status, 400);
  EXPECT_NE(state_by_patch.body.find("/state"), std::string::npos);

  EXPECT_EQ(controller->get("/api/v1/nodes?state=discovered").json()["nodes"].size(), 1u);
  EXPECT_EQ(controller->get("/api/v1/nodes?state=installed").json()["nodes"].size(), 0u);
  EXPECT_EQ(call(*controller, "DELETE", "/api/v1/nodes/" + id).status, 204);
  EXPECT_EQ(controller->get("/api/v1/nodes/" + id).status, 404);
}

TEST_F(NodesApi, BadInputIsA400WithTheFieldAndRightsAreChecked) {
  struct Case {
    std::string body, path;
  };
  for (const auto& c : std::vector<Case>{{R"({"macs": ["zz:zz:zz:zz:zz:zz"]})", "/macs/0"},
                                         {R"({"uuid": "not-a-uuid"})", "/uuid"},
                                         {R"({"serial": "a b"})", "/serial"},
                                         {R"({"name": "no identifier"})", "/macs"},
                                         {R"({"macs": ["52:54:00:aa:bb:01"], "state": "installed"})", "/state"},
                                         {R"({"macs": ["52:54:00:aa:bb:01", "52-54-00-AA-BB-01"]})", "/macs"}}) {
    auto r = call(*controller, "POST", "/api/v1/nodes", c.body);
    EXPECT_EQ(r.status, 400) << c.body << " → " << r.body;
    EXPECT_NE(r.body.find("\"" + c.path), std::string::npos) << c.body << " → " << r.body;
  }
  EXPECT_EQ(controller->get("/api/v1/nodes").json()["nodes"].size(), 0u);
  EXPECT_EQ(call(*controller, "POST", "/api/v1/nodes", R"({"macs": ["52:54:00:aa:bb:01"]})", nullptr).status, 401);
  EXPECT_EQ(call(*controller, "POST", "/api/v1/nodes", R"({"macs": ["52:54:00:aa:bb:01"]})",
                 ControllerProcess::kAuditorToken).status, 403);
  EXPECT_EQ(controller->get("/api/v1/nodes", ControllerProcess::kAuditorToken).status, 200);
}

TEST_F(NodesApi, TheLifecycleRefusesEveryIllegalMoveWithA409) {
  auto id = create_node({{"macs", {"52:54:00:aa:bb:01"}}});
  auto set = [&](const std::string& state) {
    return call(*controller, "PATCH", "/api/v1/nodes/" + id + "/state", nlohmann::json{{"state", state}}.dump());
  };
  EXPECT_EQ(set("installing").status, 409) << "only a network boot makes a node installing";
  EXPECT_EQ(set("installed").status, 409) << "only a job's success installs";
  EXPECT_EQ(set("active").status, 409);
  EXPECT_EQ(set("bogus").status, 400);
  auto bad = call(*controller, "PATCH", "/api/v1/nodes/" + id + "/state", R"({"state": "retired", "why": "x"})");
  EXPECT_EQ(bad.status, 400);
  auto retired = set("retired");
  ASSERT_EQ(retired.status, 200) << retired.body;
  EXPECT_EQ(retired.json()["state"], "retired");
  EXPECT_EQ(retired.json()["history"].back()["from"], "discovered");
  // A retired node is never installed: a job for it is refused.
  auto job = controller->post("/api/v1/jobs", nlohmann::json{{"node", {{"id", id}}}, {"recipe", linux_recipe()}}.dump());
  EXPECT_EQ(job.status, 409) << job.body;
  EXPECT_EQ(controller->get("/api/v1/jobs").json()["jobs"].size(), 0u) << "no job left behind";
  EXPECT_EQ(set("discovered").status, 200) << "re-enrolled";
}

TEST_F(NodesApi, TheBootAnswerFollowsTheNodeAndItsJobAndNeverInstallsUnasked) {
  const std::string mac = "52-54-00-aa-bb-01", q = "mac=" + mac + "&uuid=&serial=&arch=x86_64&platform=pcbios";
  // Unknown: registered as discovered, told to boot its disk.
  auto first = boot(q);
  ASSERT_EQ(first.status, 200) << first.body;
  EXPECT_NE(first.body.find("sanboot --no-describe --drive 0x80"), std::string::npos) << first.body;
  auto nodes = controller->get("/api/v1/nodes").json()["nodes"];
  ASSERT_EQ(nodes.size(), 1u);
  std::string id = nodes[0]["id"];
  EXPECT_EQ(nodes[0]["state"], "discovered");
  EXPECT_EQ(nodes[0]["platform"], "pcbios");
  EXPECT_EQ(boot(q).body.find("kernel"), std::string::npos) << "a second boot of a discovered node: still local";
  EXPECT_EQ(controller->get("/api/v1/nodes").json()["nodes"].size(), 1u) << "registered once";
  auto uefi = boot("mac=" + mac + "&platform=efi");
  EXPECT_NE(uefi.body.find("\nexit\n"), std::string::npos) << "UEFI leaves iPXE for the next boot entry: " << uefi.body;

  // A job for it: pending; the next boot gets the maintenance kernel with this job's task.
  auto job = submit(id);
  EXPECT_EQ(node(id)["state"], "pending");
  wait_provisioning(job);
  auto install = boot(q);
  ASSERT_EQ(install.status, 200);
  auto job_view = controller->get("/api/v1/jobs/" + job).json();
  std::string task_sha = job_view["media"]["task_iso"]["sha256"];
  EXPECT_NE(install.body.find("provision.task=http://127.0.0.1:" + std::to_string(controller->artifacts_port())), std::string::npos)
      << install.body;
  EXPECT_NE(install.body.find("provision.sha256=" + task_sha), std::string::npos) << install.body;
  EXPECT_NE(install.body.find("initrd --name initrd.img http://"), std::string::npos) << install.body;
  EXPECT_NE(install.body.find("console=ttyS0,115200"), std::string::npos) << install.body;
  // It reveals the task's URL, nothing of the recipe.
  EXPECT_EQ(install.body.find("node-1"), std::string::npos) << "the recipe's hostname";
  EXPECT_EQ(install.body.find("0fc63daf"), std::string::npos);
  auto n = node(id);
  EXPECT_EQ(n["state"], "installing");
  EXPECT_EQ(n["history"].back()["by"], "boot");
  bool served = false;
  auto view = controller->get("/api/v1/jobs/" + job).json();
  for (const auto& p : view["phases"]) served |= p["name"] == "netboot_served";
  EXPECT_TRUE(served) << controller->get("/api/v1/jobs/" + job).body;
  // The kernel the script names is the configured file, from the artifact server.
  auto kernel_url = install.body.substr(install.body.find("kernel http://") + 7);
  kernel_url = kernel_url.substr(0, kernel_url.find(' '));
  auto path = kernel_url.substr(kernel_url.find('/', 8));
  auto kernel = http_request(controller->artifacts_port(), "GET", path);
  EXPECT_EQ(kernel.status, 200) << path << "\n" << install.body;
  EXPECT_EQ(kernel.body, "stand-in kernel");
  // A reboot before the maintenance OS reported gets the same task again (the job is still the
  // explicit request).
  EXPECT_NE(boot(q).body.find("provision.sha256=" + task_sha), std::string::npos);
  // Another machine claiming this node's UUID or serial gets nothing of it: the task goes only
  // to a MAC the node lists.
  ASSERT_EQ(call(*controller, "PATCH", "/api/v1/nodes/" + id, R"({"serial": "SER-77"})").status, 200);
  auto impostor = boot("mac=02-00-00-00-00-01&serial=SER-77&platform=pcbios");
  EXPECT_EQ(impostor.body.find("provision.task"), std::string::npos) << impostor.body;

  // Once the maintenance OS has reported, the task (it holds the job's key) is not handed out
  // again: a reboot now boots the disk.
  report(id, job, "running");
  EXPECT_EQ(boot(q).body.find("provision.task"), std::string::npos);

  // Success: installed, and from then on only local boots.
  report(id, job, "success");
  controller->wait_for_status(job, "complete");
  EXPECT_EQ(node(id)["state"], "installed");
  EXPECT_EQ(node(id)["last_job"]["outcome"], "succeeded");
  auto after = boot(q);
  EXPECT_EQ(after.body.find("kernel"), std::string::npos) << after.body;
  EXPECT_NE(after.body.find("sanboot"), std::string::npos);

  // Installing over it takes an explicit reprovision.
  auto implicit = controller->post("/api/v1/jobs", nlohmann::json{{"node", {{"id", id}}}, {"recipe", linux_recipe()}}.dump());
  EXPECT_EQ(implicit.status, 409) << implicit.body;
  EXPECT_NE(implicit.body.find("reprovision"), std::string::npos);
  ASSERT_EQ(call(*controller, "PATCH", "/api/v1/nodes/" + id + "/state", R"({"state": "active"})").status, 200);
  auto again = submit(id, true);
  EXPECT_EQ(node(id)["state"], "pending");
  // Canceled before it booted: back to discovered, local boot.
  ASSERT_EQ(controller->post("/api/v1/jobs/" + again + "/cancel", "").status, 200);
  EXPECT_EQ(node(id)["state"], "discovered");
  EXPECT_EQ(boot(q).body.find("kernel"), std::string::npos);
}

TEST_F(NodesApi, AFailedInstallSendsTheNodeBackToDiscoveredNotIntoALoop) {
  auto id = create_node({{"macs", {"52:54:00:aa:bb:07"}}, {"recipe_ref", "debian-12"}});
  // PATCH state pending: a job from the node's recipe_ref.
  auto r = call(*controller, "PATCH", "/api/v1/nodes/" + id + "/state", R"({"state": "pending"})");
  ASSERT_EQ(r.status, 201) << r.body;
  std::string job = r.json()["job"]["id"];
  EXPECT_EQ(r.json()["node"]["state"], "pending");
  wait_provisioning(job);
  ASSERT_NE(boot("mac=52:54:00:aa:bb:07").body.find("kernel"), std::string::npos);
  report(id, job, "failed");
  controller->wait_for_status(job, "complete");
  auto n = node(id);
  EXPECT_EQ(n["state"], "discovered");
  EXPECT_EQ(n["last_job"]["outcome"], "failed");
  EXPECT_EQ(boot("mac=52:54:00:aa:bb:07").body.find("kernel"), std::string::npos) << "no second install by itself";
}

TEST_F(NodesApi, MalformedBootRequestsAre400AndRegisterNothing) {
  for (std::string q : {"", "mac=", "mac=52:54:00:aa:bb", "mac=zz-54-00-aa-bb-01", "mac=52-54-00-aa-bb-01&uuid=123",
                        "mac=52-54-00-aa-bb-01&serial=%22%3Bshell", "mac=52-54-00-aa-bb-01&arch=sparc",
                        "mac=52-54-00-aa-bb-01&platform=bios", "mac=52-54-00-aa-bb-01&other=1"}) {
    auto r = boot(q);
    EXPECT_EQ(r.status, 400) << q << " → " << r.body;
  }
  EXPECT_EQ(controller->get("/api/v1/nodes").json()["nodes"].size(), 0u) << "no registration with garbage";
  // Placeholders firmware ships are no identifier, but the request is fine.
  auto ok = boot("mac=52-54-00-aa-bb-01&uuid=00000000-0000-0000-0000-000000000000&serial=To%20Be%20Filled%20By%20O.E.M.");
  EXPECT_EQ(ok.status, 200) << ok.body;
  auto nodes = controller->get("/api/v1/nodes").json()["nodes"];
  ASSERT_EQ(nodes.size(), 1u);
  EXPECT_FALSE(nodes[0].contains("uuid"));
  EXPECT_FALSE(nodes[0].contains("serial"));
  // The chain script hands iPXE's own variables to /boot/ipxe.
  auto chain = http_request(controller->port(), "GET", "/boot/boot.ipxe");
  EXPECT_EQ(chain.status, 200);
  EXPECT_NE(chain.body.find("#!ipxe"), std::string::npos);
  EXPECT_NE(chain.body.find("/boot/ipxe?mac=${mac:hexhyp}&uuid=${uuid}&serial=${serial:uristring}"), std::string::npos);
}

TEST_F(NodesApi, ANodeWithABmcIsTheSameMachineAsItsServerAndItsJobGoesThroughTheBmc) {
  auto server = controller->post("/api/v1/servers", R"({"serial": "SRV-9", "macs": ["52:54:00:aa:bb:09"],
                                                        "bmc": {"address": "http://127.0.0.1:1", "username": "admin", "password": "s3cret-bmc"}})");
  ASSERT_EQ(server.status, 201) << server.body;
  std::string server_id = server.json()["id"];
  auto bad = call(*controller, "POST", "/api/v1/nodes", R"({"macs": ["52:54:00:aa:bb:09"], "server_id": "nope"})");
  EXPECT_EQ(bad.status, 400);
  EXPECT_NE(bad.body.find("/server_id"), std::string::npos);
  auto id = create_node({{"macs", {"52:54:00:aa:bb:09"}}, {"server_id", server_id}});
  auto job = submit(id);
  auto view = controller->get("/api/v1/jobs/" + job).json();
  EXPECT_EQ(view["server"]["serial"], "SRV-9") << view;
  EXPECT_EQ(view["server"]["bmc"]["address"], "http://127.0.0.1:1");
  EXPECT_EQ(view["server"]["bmc"]["password"], "<redacted>") << "sealed, never shown";
  EXPECT_EQ(view["server"]["node_id"], id);
  EXPECT_EQ(boot("mac=52-54-00-aa-bb-09").body.find("kernel"), std::string::npos) << "never a network install";
  // Virtual media, through the BMC: this controller has no maintenance ISO, so the BMC step
  // fails the job, and the node follows it back to discovered.
  auto done = controller->wait_for_status(job, "complete");
  EXPECT_EQ(done["media"]["mode"], "dual-cd");
  EXPECT_NE(done.value("error", "").find("media_inserted"), std::string::npos) << done;
  auto n = node(id);
  EXPECT_EQ(n["state"], "discovered");
  EXPECT_EQ(n["last_job"]["outcome"], "failed");
  // It was pending for the job (the job may fail before anyone looks: check the history).
  ASSERT_GE(n["history"].size(), 3u) << n;
  EXPECT_EQ(n["history"][1]["to"], "pending");
  EXPECT_EQ(n["history"][2]["to"], "discovered");
  EXPECT_EQ(n["history"][2]["by"], "job:" + job);
}

TEST(NodesInspection, AnUnknownMachineIsInspectedOnceWithItsOwnTokenThenBootsItsDisk) {
  TempDir files;
  std::ofstream(files.path() / "vmlinuz") << "k";
  std::ofstream(files.path() / "initrd.img") << "i";
  ControllerProcess controller("[pxe]\nenabled = true\ndhcp = \"off\"\ndiscover = \"inspect\"\nkernel = \"" + (files.path() / "vmlinuz").string() +
                               "\"\ninitrd = \"" + (files.path() / "initrd.img").string() + "\"\n");
  controller.start();
  auto boot = [&] { return http_request(controller.port(), "GET", "/boot/ipxe?mac=52-54-00-aa-bb-0a&platform=pcbios"); };
  auto script = boot();
  ASSERT_EQ(script.status, 200) << script.body;
  auto nodes = controller.get("/api/v1/nodes").json()["nodes"];
  ASSERT_EQ(nodes.size(), 1u);
  std::string id = nodes[0]["id"];
  EXPECT_EQ(nodes[0]["state"], "discovered");
  EXPECT_EQ(nodes[0]["inspection"], (nlohmann::json{{"open", true}})) << "the nonce is never shown";
  std::string url = "http://127.0.0.1:" + std::to_string(controller.port()) + "/api/v1/nodes/" + id + "/inventory";
  auto at = script.body.find("provision.inspect=" + url + " provision.inspect_token=");
  ASSERT_NE(at, std::string::npos) << script.body;
  auto token = script.body.substr(script.body.find("provision.inspect_token=") + 24, 64);
  EXPECT_EQ(boot().body.find(token) != std::string::npos, true) << "a reboot before reporting: the same inspection";

  const std::string inventory = R"({"cpus": 2, "memory_bytes": 3221225472,
    "disks": [{"name": "vda", "size_bytes": 6442450944, "rotational": true}],
    "nics": [{"name": "ens3", "mac": "52:54:00:aa:bb:0a"}, {"name": "ens4", "mac": "52:54:00:aa:bb:0b"},
             {"name": "ib0", "mac": "80:00:02:08:fe:80:00:00:00:00:00:00:00:02:c9:03:00:0a:bb:cc"}],
    "smbios": {"serial": "INSPECT-1", "uuid": "4C4C4544-0000-1000-8000-00000000000A", "vendor": "QEMU"}})";
  auto post = [&](const std::string& auth, const std::string& body) {
    Headers h{{"Content-Type", "application/json"}};
    if (!auth.empty()) h.push_back({"Authorization", auth});
    return http_request(controller.port(), "POST", "/api/v1/nodes/" + id + "/inventory", h, body);
  };
  EXPECT_EQ(post("", inventory).status, 401);
  EXPECT_EQ(post("Bearer " + std::string(64, 'a'), inventory).status, 401);
  EXPECT_EQ(post(std::string("Bearer ") + ControllerProcess::kAdminToken, inventory).status, 401) << "an API token is not it";
  auto bad = post("Bearer " + token, R"({"cpus": -1, "memory_bytes": 1, "disks": [], "nics": ["eth0"]})");
  EXPECT_EQ(bad.status, 400);
  EXPECT_NE(bad.body.find("/cpus"), std::string::npos) << bad.body;
  EXPECT_NE(bad.body.find("/nics/0"), std::string::npos) << bad.body;
  auto ok = post("Bearer " + token, inventory);
  ASSERT_EQ(ok.status, 200) << ok.body;
  EXPECT_EQ(ok.json(), (nlohmann::json{{"accepted", true}, {"node", id}})) << "the reporter learns nothing of the record";
  auto n = controller.get("/api/v1/nodes/" + id).json();
  EXPECT_EQ(n["inventory"]["cpus"], 2);
  EXPECT_EQ(n["inventory"]["disks"][0]["size_bytes"], 6442450944LL);
  EXPECT_EQ(n["macs"], (nlohmann::json{"52:54:00:aa:bb:0a", "52:54:00:aa:bb:0b"})) << "its second NIC joins its identity";
  EXPECT_EQ(n["serial"], "INSPECT-1");
  EXPECT_EQ(n["uuid"], "4c4c4544-0000-1000-8000-00000000000a");
  EXPECT_FALSE(n.contains("inspection"));
  EXPECT_EQ(n["state"], "discovered") << "inspected, nothing installed";
  EXPECT_EQ(post("Bearer " + token, inventory).status, 401) << "the inspection is closed: the token is spent";
  // Known now: its next boot is a local one, and it is found by its other NIC too.
  auto next = boot();
  EXPECT_EQ(next.body.find("provision.inspect"), std::string::npos) << next.body;
  EXPECT_NE(next.body.find("sanboot"), std::string::npos);
  EXPECT_EQ(http_request(controller.port(), "GET", "/boot/ipxe?mac=52-54-00-aa-bb-0b").body.find("inspect"), std::string::npos);
  EXPECT_EQ(controller.get("/api/v1/nodes").json()["nodes"].size(), 1u);
}

TEST_F(NodesApi, AProfileByLabelGivesAJobItsRecipeWhenNobodyNamedOne) {
  auto web = create_node({{"macs", {"52:54:00:aa:bb:0c"}}, {"labels", {{"role", "web"}, {"rack", "r1"}}}});
  auto r = call(*controller, "PATCH", "/api/v1/nodes/" + web + "/state", R"({"state": "pending"})");
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(r.json()["job"]["recipe"]["hostname"], "debian-node") << "recipes/debian-12.json";
  // A partial match is no match; nothing is created.
  auto db = create_node({{"macs", {"52:54:00:aa:bb:0d"}}, {"labels", {{"role", "web"}, {"rack", "r2"}}}});
  auto none = call(*controller, "PATCH", "/api/v1/nodes/" + db + "/state", R"({"state": "pending"})");
  EXPECT_EQ(none.status, 400) << none.body;
  EXPECT_NE(none.body.find("/recipe"), std::string::npos);
  EXPECT_EQ(node(db)["state"], "discovered");
}
