// provisionctl against the real controller: what an operator types, the exit codes a script
// relies on, the API's field paths on errors, contexts, a streamed upload, fleets, and `job
// watch` following a job on mock BMC hardware to its outcome.
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <fstream>
#include <future>
#include <thread>

#include "common/crypto.hpp"
#include "tests/integration/controller/iso_tools.hpp"
#include "tests/integration/controller/test_jobs.hpp"
#include "tests/integration/controller/webhook_signer.hpp"
#include "tests/support/controller_process.hpp"
#include "tests/support/mock_bmc.hpp"

using namespace provisioner;
using namespace provisioner::test;

namespace {

struct CtlRun {
  int code = -1;
  std::string out, err;
  nlohmann::json json() const { return nlohmann::json::parse(out); }
};

// Runs provisionctl with `env` added to a clean environment (no HOME config unless given).
CtlRun provisionctl(const std::vector<std::string>& args, const std::vector<std::string>& env, const std::string& stdin_text = "") {
  int out_pipe[2], err_pipe[2], in_pipe[2];
  if (::pipe(out_pipe) || ::pipe(err_pipe) || ::pipe(in_pipe)) throw std::runtime_error("pipe");
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(in_pipe[0], 0);
    ::dup2(out_pipe[1], 1);
    ::dup2(err_pipe[1], 2);
    for (int fd : {out_pipe[0], out_pipe[1], err_pipe[0], err_pipe[1], in_pipe[0], in_pipe[1]}) ::close(fd);
    std::vector<std::string> all_env = env;
    all_env.push_back("PATH=/usr/bin:/bin");
    std::vector<char*> argv{const_cast<char*>(PROVISIONCTL_BIN)}, envp;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    for (const auto& e : all_env) envp.push_back(const_cast<char*>(e.c_str()));
    envp.push_back(nullptr);
    ::execve(PROVISIONCTL_BIN, argv.data(), envp.data());
    ::_exit(127);
  }
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  ::close(in_pipe[0]);
  if (!stdin_text.empty()) (void)!::write(in_pipe[1], stdin_text.data(), stdin_text.size());
  ::close(in_pipe[1]);
  CtlRun r;
  auto drain = [](int fd, std::string& to) {
    char buf[4096];
    ssize_t n;
    while ((n = ::read(fd, buf, sizeof buf)) > 0) to.append(buf, static_cast<std::size_t>(n));
    ::close(fd);
  };
  std::thread err_reader([&] { drain(err_pipe[0], r.err); });
  drain(out_pipe[0], r.out);
  err_reader.join();
  int status = 0;
  ::waitpid(pid, &status, 0);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}


}  // namespace

class Provisionctl : public testing::Test {
 protected:
  void SetUp() override {
    base = make_maintenance_iso(tmp.path());
    MockBmcOptions options;
    options.serial = "CLI0001";
    bmc = std::make_unique<MockBmc>(options);
    controller = std::make_unique<ControllerProcess>(kFastRedfishToml, "text", "maintenance_iso = \"" + base.string() + "\"\n");
    controller->start();
    env = {"PROVISIONER_URL=http://127.0.0.1:" + std::to_string(controller->port()),
           std::string("PROVISIONER_TOKEN=") + ControllerProcess::kAdminToken, "HOME=" + tmp.path().string()};
    recipe_file = tmp.path() / "recipe.json";
    std::ofstream(recipe_file) << linux_recipe().dump(2);
  }

  CtlRun ctl(const std::vector<std::string>& args, const std::string& stdin_text = "") { return provisionctl(args, env, stdin_text); }

  std::string add_server() {
    auto r = ctl({"server", "add", "--serial", "CLI0001", "--bmc", bmc->address(), "--bmc-user", "admin",
                  "--bmc-password-file", "-", "-l", "rack=r1", "-l", "role=worker", "-o", "json"},
                 "mock-bmc-password\n");
    EXPECT_EQ(r.code, 0) << r.err;
    return r.json()["id"];
  }

  TempDir tmp;
  std::filesystem::path base, recipe_file;
  std::unique_ptr<MockBmc> bmc;
  std::unique_ptr<ControllerProcess> controller;
  std::vector<std::string> env;
};

TEST_F(Provisionctl, ServersAreAddedListedLabelledAndRemovedAndThePasswordNeverShows) {
  auto id = add_server();
  auto list = ctl({"server", "list"});
  ASSERT_EQ(list.code, 0) << list.err;
  EXPECT_NE(list.out.find("CLI0001"), std::string::npos) << list.out;
  EXPECT_NE(list.out.find("rack=r1"), std::string::npos) << list.out;
  EXPECT_EQ(list.out.find("mock-bmc-password"), std::string::npos);
  EXPECT_EQ(list.out.find("\033["), std::string::npos) << "colours on a pipe";
  auto label = ctl({"server", "label", id, "role=db", "rack-", "-o", "json"});
  ASSERT_EQ(label.code, 0) << label.err;
  EXPECT_EQ(label.json()["labels"], (nlohmann::json{{"role", "db"}}));
  auto got = ctl({"server", "get", id, "-o", "json"});
  EXPECT_EQ(got.json()["serial"], "CLI0001");
  EXPECT_EQ(ctl({"server", "get", "CLI0001", "-o", "json"}).json()["id"], id) << "by serial";
  EXPECT_EQ(ctl({"server", "get", "NOSUCHSERIAL"}).code, 2);
  EXPECT_EQ(got.out.find("mock-bmc-password"), std::string::npos);
  EXPECT_EQ(ctl({"server", "rm", id}).code, 0);
  auto gone = ctl({"server", "get", id});
  EXPECT_EQ(gone.code, 1);
  EXPECT_NE(gone.err.find("HTTP 404"), std::string::npos) << gone.err;
}

TEST_F(Provisionctl, AJobIsWatchedToItsOutcomeAndTheExitCodeSaysIt) {
  auto server = add_server();
  auto submitted = ctl({"job", "submit", "-f", recipe_file.string(), "--server", "CLI0001"});  // by serial
  ASSERT_EQ(submitted.code, 0) << submitted.err;
  std::string id = submitted.out.substr(0, submitted.out.find('\n'));
  ASSERT_EQ(id.rfind("job_", 0), 0u) << submitted.out;
  auto watching = std::async(std::launch::async, [&] { return ctl({"job", "watch", id}); });
  // The "maintenance OS" reports once the BMC reset the machine.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (bmc->boots().empty() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_FALSE(bmc->boots().empty());
  auto r = send_webhook(*controller, "CLI0001", controller->webhook_key(id), R"({"job_id":")" + id + R"(","status":"success"})");
  ASSERT_EQ(r.status, 200) << r.body;
  auto watched = watching.get();
  EXPECT_EQ(watched.code, 0) << watched.out << watched.err;
  EXPECT_NE(watched.out.find(id + ": succeeded"), std::string::npos) << watched.out;
  EXPECT_NE(watched.out.find("reset_issued"), std::string::npos) << "no progress shown: " << watched.out;

  auto logs = ctl({"job", "logs", id});
  EXPECT_EQ(logs.code, 0);
  EXPECT_NE(logs.out.find("phase  cleanup_done"), std::string::npos) << logs.out;
  auto listed = ctl({"job", "list", "-o", "json"});
  ASSERT_EQ(listed.code, 0);
  EXPECT_EQ(listed.json()[0]["id"], id);
}

TEST_F(Provisionctl, ACanceledJobExitsFourAndARefusedOneShowsTheApiFieldPaths) {
  auto server = add_server();
  auto bad = linux_recipe();
  bad.erase("target_disk");
  auto refused = ctl({"job", "submit", "-f", "-", "--server", server}, bad.dump());
  EXPECT_EQ(refused.code, 1);
  EXPECT_NE(refused.err.find("/recipe"), std::string::npos) << refused.err;
  EXPECT_NE(refused.err.find("target_disk"), std::string::npos) << refused.err;

  auto submitted = ctl({"job", "submit", "-f", recipe_file.string(), "--server", server, "-o", "json"});
  ASSERT_EQ(submitted.code, 0) << submitted.err;
  std::string id = submitted.json()["id"];
  EXPECT_EQ(ctl({"job", "cancel", id}).code, 0);
  auto watched = ctl({"job", "watch", id});
  EXPECT_EQ(watched.code, 4) << watched.out << watched.err;
  EXPECT_EQ(ctl({"job", "cancel", "job_nonexistent"}).code, 1);
  // Usage errors are 2, an unreachable controller 3, a wrong token 1 with the API's words.
  EXPECT_EQ(ctl({"job", "submit", "--server", server}).code, 2);
  EXPECT_EQ(ctl({"frobnicate"}).code, 2);
  auto unreachable = provisionctl({"server", "list"}, {"PROVISIONER_URL=http://127.0.0.1:1", "PROVISIONER_TOKEN=x"});
  EXPECT_EQ(unreachable.code, 3) << unreachable.err;
  auto wrong = provisionctl({"server", "list"}, {"PROVISIONER_URL=" + env[0].substr(16), "PROVISIONER_TOKEN=wrong"});
  EXPECT_EQ(wrong.code, 1);
  EXPECT_NE(wrong.err.find("bearer token"), std::string::npos) << wrong.err;
}

TEST_F(Provisionctl, NamedContextsComeFromTheConfigFileAndTheEnvironmentOverridesThem) {
  auto dir = tmp.path() / ".config" / "provisioner";
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "config.toml") << "current_context = \"broken\"\n"
                                     << "[contexts.broken]\nurl = \"http://127.0.0.1:1\"\ntoken = \"x\"\n"
                                     << "[contexts.lab]\nurl = \"http://127.0.0.1:" << controller->port() << "\"\ntoken = \""
                                     << ControllerProcess::kAuditorToken << "\"\n";
  std::vector<std::string> home{"HOME=" + tmp.path().string()};
  EXPECT_EQ(provisionctl({"server", "list"}, home).code, 3);  // the current context
  auto lab = provisionctl({"--context", "lab", "server", "list"}, home);
  EXPECT_EQ(lab.code, 0) << lab.err;
  // The auditor may read, not write: the API's 403 comes through.
  auto write = provisionctl({"--context", "lab", "server", "add", "--serial", "X1", "--bmc", "http://127.0.0.1:1"}, home);
  EXPECT_EQ(write.code, 1);
  EXPECT_NE(write.err.find("HTTP 403"), std::string::npos) << write.err;
  auto env_token = home;
  env_token.push_back("PROVISIONER_CONTEXT=lab");
  env_token.push_back(std::string("PROVISIONER_TOKEN=") + ControllerProcess::kAdminToken);
  EXPECT_EQ(provisionctl({"server", "add", "--serial", "X1", "--bmc", "http://127.0.0.1:1"}, env_token).code, 0);
  EXPECT_EQ(provisionctl({"--context", "nope", "server", "list"}, home).code, 2);
}

TEST_F(Provisionctl, AnArtifactUploadStreamsTheFileAndChecksItsDigest) {
  auto file = tmp.path() / "image.bin";
  std::string bytes;
  for (int i = 0; i < (3 << 20) / 16; ++i) bytes += "provisioner-0123";
  std::ofstream(file, std::ios::binary) << bytes;
  auto r = ctl({"artifact", "upload", file.string(), "-o", "json"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.json()["sha256"], crypto::sha256_hex(bytes));
  auto again = ctl({"artifact", "upload", file.string()});
  EXPECT_EQ(again.code, 0);
  EXPECT_NE(again.out.find("already stored"), std::string::npos) << again.out;
}

TEST_F(Provisionctl, AFleetRunsFromAYamlInventoryAndItsLiveViewEndsWithTheFleet) {
  auto server = add_server();
  auto inventory = tmp.path() / "inventory.yaml";
  std::ofstream(inventory) << "name: cli-rollout\nselector:\n  labels:\n    rack: r1\nrecipe_file: recipe.json\nmax_parallel: 1\n";
  auto watching = std::async(std::launch::async, [&] { return ctl({"fleet", "run", "-f", inventory.string(), "--canary", "1"}); });
  // The fleet's one job: report success once the BMC reset the machine.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (bmc->boots().empty() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_FALSE(bmc->boots().empty());
  auto jobs = controller->get("/api/v1/jobs").json()["jobs"];
  ASSERT_EQ(jobs.size(), 1u);
  std::string id = jobs[0]["id"];
  auto r = send_webhook(*controller, "CLI0001", controller->webhook_key(id), R"({"job_id":")" + id + R"(","status":"success"})");
  ASSERT_EQ(r.status, 200) << r.body;
  auto run = watching.get();
  EXPECT_EQ(run.code, 0) << run.out << run.err;
  EXPECT_NE(run.out.find("succeeded"), std::string::npos) << run.out;
  auto listed = ctl({"fleet", "list", "-o", "json"});
  ASSERT_EQ(listed.code, 0);
  EXPECT_EQ(listed.json()[0]["name"], "cli-rollout");
  EXPECT_EQ(listed.json()[0]["status"], "succeeded");
  // A run that cannot start says why, with the field path.
  std::ofstream(tmp.path() / "none.yaml") << "selector:\n  labels:\n    rack: r9\nrecipe_file: recipe.json\n";
  auto none = ctl({"fleet", "run", "-f", (tmp.path() / "none.yaml").string()});
  EXPECT_EQ(none.code, 1);
  EXPECT_NE(none.err.find("/selector/labels"), std::string::npos) << none.err;
}

TEST_F(Provisionctl, CompletionScriptsCoverTheCommandTreeAndParse) {
  auto bash = ctl({"completion", "bash"});
  ASSERT_EQ(bash.code, 0);
  EXPECT_NE(bash.out.find("\"fleet\") path=\"fleet\""), std::string::npos) << bash.out;
  EXPECT_NE(bash.out.find("run "), std::string::npos);
  auto script = tmp.path() / "completion.bash";
  std::ofstream(script) << bash.out;
  EXPECT_EQ(std::system(("bash -n " + script.string()).c_str()), 0);
  auto zsh = ctl({"completion", "zsh"});
  EXPECT_EQ(zsh.code, 0);
  EXPECT_NE(zsh.out.find("#compdef provisionctl"), std::string::npos);
  auto help = ctl({"--help"});
  EXPECT_EQ(help.code, 0);
  EXPECT_NE(help.out.find("PROVISIONER_TOKEN"), std::string::npos);
}

TEST(ProvisionctlNodes, NodesAreListedShownAndMovedAndAnIllegalMoveIsTheApisConflict) {
  TempDir files;
  std::ofstream(files.path() / "vmlinuz") << "stand-in kernel";
  std::ofstream(files.path() / "initrd.img") << "stand-in initrd";
  ControllerProcess controller("[pxe]\nenabled = true\ndhcp = \"off\"\nkernel = \"" + (files.path() / "vmlinuz").string() +
                               "\"\ninitrd = \"" + (files.path() / "initrd.img").string() + "\"\n");
  controller.start();
  std::vector<std::string> env{"PROVISIONER_URL=http://127.0.0.1:" + std::to_string(controller.port()),
                               std::string("PROVISIONER_TOKEN=") + ControllerProcess::kOperatorToken,
                               "HOME=" + files.path().string()};
  auto created = controller.post("/api/v1/nodes", R"({"macs":["52:54:00:aa:bb:01"],"name":"edge-1"})");
  ASSERT_EQ(created.status, 201) << created.body;
  std::string id = created.json()["id"];
  auto list = provisionctl({"node", "list"}, env);
  ASSERT_EQ(list.code, 0) << list.err;
  EXPECT_NE(list.out.find("edge-1"), std::string::npos) << list.out;
  EXPECT_NE(list.out.find("52:54:00:aa:bb:01"), std::string::npos);
  auto got = provisionctl({"node", "get", id}, env);
  ASSERT_EQ(got.code, 0) << got.err;
  EXPECT_EQ(got.json()["state"], "discovered");
  auto retired = provisionctl({"node", "state", id, "retired", "--reason", "decommissioned"}, env);
  ASSERT_EQ(retired.code, 0) << retired.err;
  EXPECT_EQ(retired.json()["state"], "retired");
  // retired → installed is not a move of the lifecycle: the API's 409, exit 1.
  auto illegal = provisionctl({"node", "state", id, "installed"}, env);
  EXPECT_EQ(illegal.code, 1);
  EXPECT_NE(illegal.err.find("HTTP 409"), std::string::npos) << illegal.err;
  auto filtered = provisionctl({"node", "list", "--state", "retired", "-o", "json"}, env);
  ASSERT_EQ(filtered.code, 0);
  EXPECT_EQ(filtered.json().size(), 1u);
}

TEST_F(Provisionctl, ASingleIsoJobsMediumIsCheckedAgainstItsIdAndAChangedByteFails) {
  auto recipe = linux_recipe();
  recipe["media_mode"] = "single-iso";
  auto id = controller->post("/api/v1/jobs", job_body("SN-VERIFY", recipe)).json()["id"].get<std::string>();
  auto job = controller->wait_for_status(id, "provisioning");
  std::string sha = job["media"]["boot_iso"]["sha256"];
  auto info = controller->get("/api/v1/artifacts/" + sha).json();
  EXPECT_TRUE(info["composite"].get<bool>());
  EXPECT_EQ(info["id_scheme"], "provisioner-composite-v2");
  ASSERT_EQ(info["segments"].size(), 3u);  // the job's head, the maintenance ISO, the task session
  // What a BMC would fetch, then checked the way an operator would.
  auto file = tmp.path() / "boot.iso";
  ASSERT_EQ(std::system(("curl -sS -o '" + file.string() + "' '" + job["media"]["boot_iso"]["url"].get<std::string>() + "'").c_str()), 0);
  auto ok = ctl({"artifact", "verify", file.string(), sha});
  EXPECT_EQ(ok.code, 0) << ok.out << ok.err;
  EXPECT_NE(ok.out.find("OK"), std::string::npos);
  {
    std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(std::filesystem::file_size(file) / 2);
    f.put('\x5a');
  }
  auto bad = ctl({"artifact", "verify", file.string(), sha});
  EXPECT_EQ(bad.code, 1) << bad.out;
  EXPECT_NE(bad.out.find("MISMATCH"), std::string::npos);
  // A plain artifact is its SHA-256.
  auto plain = tmp.path() / "plain.bin";
  std::ofstream(plain) << "plain bytes";
  auto up = ctl({"artifact", "upload", plain.string(), "-o", "json"});
  ASSERT_EQ(up.code, 0) << up.err;
  EXPECT_EQ(ctl({"artifact", "verify", plain.string(), up.json()["sha256"]}).code, 0);
  EXPECT_EQ(controller->get("/api/v1/artifacts/" + std::string(64, '0')).status, 404);
}
