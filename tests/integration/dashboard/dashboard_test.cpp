// The dashboard in a real headless browser (Debian's chromium), driven over the DevTools
// protocol on a pipe (--remote-debugging-pipe: JSON messages, NUL-terminated, on fds 3/4).
// The page is loaded once against a controller running a job on a mock BMC; the test watches
// the server's tile follow the job through the event stream (no reload), opens the job's
// detail, and fails on any console message or uncaught exception.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "tests/integration/controller/iso_tools.hpp"
#include "tests/integration/controller/test_jobs.hpp"
#include "tests/integration/controller/webhook_signer.hpp"
#include "tests/support/controller_process.hpp"
#include "tests/support/mock_bmc.hpp"

using namespace provisioner;
using namespace provisioner::test;

namespace {


// A headless chromium and a DevTools session with its one page.
class Browser {
 public:
  explicit Browser(const std::filesystem::path& profile) {
    int to_browser[2], from_browser[2];
    if (::pipe(to_browser) || ::pipe(from_browser)) throw std::runtime_error("pipe");
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(to_browser[0], 3);
      ::dup2(from_browser[1], 4);
      int devnull = ::open("/dev/null", O_WRONLY);
      ::dup2(devnull, 1);
      ::dup2(devnull, 2);
      ::setpgid(0, 0);
      std::string dir = "--user-data-dir=" + profile.string();
      ::execlp("chromium", "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
               "--disable-extensions", "--disable-background-networking", "--remote-debugging-pipe", dir.c_str(),
               "about:blank", static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ::close(to_browser[0]);
    ::close(from_browser[1]);
    out_ = to_browser[1];
    in_ = from_browser[0];
    auto targets = call("Target.getTargets");
    std::string page;
    for (const auto& t : targets["targetInfos"])
      if (t["type"] == "page") page = t["targetId"];
    if (page.empty()) throw std::runtime_error("no page target: " + targets.dump());
    session_ = call("Target.attachToTarget", {{"targetId", page}, {"flatten", true}})["sessionId"];
    call("Runtime.enable", {}, true);
    call("Log.enable", {}, true);
    call("Page.enable", {}, true);
  }
  ~Browser() {
    ::close(out_);
    ::close(in_);
    ::kill(-pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }

  void navigate(const std::string& url) { call("Page.navigate", {{"url", url}}, true); }

  // Evaluates an expression in the page; its value (JSON-serialisable).
  nlohmann::json eval(const std::string& expression) {
    auto r = call("Runtime.evaluate", {{"expression", expression}, {"returnByValue", true}, {"awaitPromise", true}}, true);
    if (r.contains("exceptionDetails")) throw std::runtime_error("evaluate threw: " + r["exceptionDetails"].dump());
    return r["result"].value("value", nlohmann::json());
  }

  // Polls `expression` until it equals `want` (the last value otherwise).
  nlohmann::json wait_for(const std::string& expression, const nlohmann::json& want, int seconds = 20) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
    nlohmann::json v;
    while (std::chrono::steady_clock::now() < deadline) {
      try {
        v = eval(expression);
      } catch (const std::runtime_error& e) {  // the page is still loading
        v = e.what();
      }
      if (v == want) return v;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return v;
  }

  // Console messages, uncaught exceptions and log entries the page produced.
  std::vector<std::string> complaints;

 private:
  nlohmann::json call(const std::string& method, nlohmann::json params = nlohmann::json::object(), bool in_page = false) {
    nlohmann::json msg{{"id", ++next_id_}, {"method", method}, {"params", params}};
    if (in_page) msg["sessionId"] = session_;
    auto text = msg.dump();
    text.push_back('\0');
    if (::write(out_, text.data(), text.size()) != static_cast<ssize_t>(text.size())) throw std::runtime_error("write");
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    for (;;) {
      auto end = buffer_.find('\0');
      while (end != std::string::npos) {
        auto m = nlohmann::json::parse(buffer_.substr(0, end));
        buffer_.erase(0, end + 1);
        if (m.contains("method")) note(m);
        if (m.value("id", -1) == next_id_) {
          if (m.contains("error")) throw std::runtime_error(method + ": " + m["error"].dump());
          return m["result"];
        }
        end = buffer_.find('\0');
      }
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      pollfd p{in_, POLLIN, 0};
      if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) <= 0)
        throw std::runtime_error(method + ": no answer from chromium");
      char buf[65536];
      auto n = ::read(in_, buf, sizeof buf);
      if (n <= 0) throw std::runtime_error("chromium went away");
      buffer_.append(buf, static_cast<std::size_t>(n));
    }
  }
  void note(const nlohmann::json& m) {
    const auto& method = m["method"];
    if (method == "Runtime.consoleAPICalled") complaints.push_back("console." + m["params"]["type"].get<std::string>() + ": " + m["params"]["args"].dump());
    if (method == "Runtime.exceptionThrown") complaints.push_back("exception: " + m["params"]["exceptionDetails"].dump());
    if (method == "Log.entryAdded") complaints.push_back("log: " + m["params"]["entry"].dump());
  }
  pid_t pid_ = -1;
  int out_ = -1, in_ = -1;
  int next_id_ = 0;
  std::string buffer_, session_;
};

}  // namespace

TEST(Dashboard, TilesFollowAJobLiveInARealBrowserWithNoConsoleErrors) {
  TempDir tmp;
  auto base = make_maintenance_iso(tmp.path());
  MockBmcOptions options;
  options.serial = "DASH0001";
  MockBmc bmc(options);
  ControllerProcess controller(kFastRedfishToml, "text", "maintenance_iso = \"" + base.string() + "\"\n");
  controller.start();
  auto server = controller.post("/api/v1/servers", nlohmann::json{{"serial", "DASH0001"}, {"name", "rack1-node1"},
                                                                  {"labels", {{"rack", "r1"}}},
                                                                  {"bmc", {{"address", bmc.address()}, {"username", "admin"},
                                                                           {"password", "mock-bmc-password"}}}}.dump());
  ASSERT_EQ(server.status, 201) << server.body;

  Browser browser(tmp.path() / "profile");
  std::string base_url = "http://127.0.0.1:" + std::to_string(controller.port());
  // The token rides in the fragment, which never reaches the server; the page drops it at once.
  browser.navigate(base_url + "/#token=" + ControllerProcess::kAuditorToken);
  const std::string tile = "document.querySelector('.tile[data-kind=server]')";
  ASSERT_EQ(browser.wait_for(tile + "?.dataset.status ?? null", "idle"), "idle");
  EXPECT_EQ(browser.wait_for("document.getElementById('stream').textContent", "live"), "live");
  EXPECT_EQ(browser.eval("location.hash"), "");
  EXPECT_EQ(browser.eval(tile + ".querySelector('.name').textContent"), "rack1-node1");

  // A job submitted after the page loaded reaches its tile only through the event stream.
  auto job = controller.post("/api/v1/jobs", nlohmann::json{{"server", {{"id", server.json()["id"]}}},
                                                            {"recipe", linux_recipe()}}.dump());
  ASSERT_EQ(job.status, 201) << job.body;
  std::string id = job.json()["id"];
  EXPECT_EQ(browser.wait_for(tile + ".dataset.status", "provisioning"), "provisioning");
  EXPECT_EQ(browser.wait_for(tile + ".querySelector('.job').textContent.includes('reset_issued')", true), true)
      << browser.eval(tile + ".outerHTML");
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (bmc.boots().empty() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  auto r = send_webhook(controller, "DASH0001", controller.webhook_key(id), R"({"job_id":")" + id + R"(","status":"success"})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(browser.wait_for(tile + ".dataset.status", "complete"), "complete");
  EXPECT_EQ(browser.eval(tile + ".dataset.outcome"), "succeeded");

  // The job's detail: its history, opened from the tile.
  browser.eval(tile + ".click()");
  EXPECT_EQ(browser.wait_for("document.getElementById('detail-title').textContent", id), id);
  EXPECT_EQ(browser.wait_for("document.querySelectorAll('#detail-history li').length > 5", true), true);
  EXPECT_EQ(browser.eval("document.getElementById('detail').hidden"), false);

  // A fleet appears with its progress, live too.
  auto fleet = controller.post("/api/v1/fleets", nlohmann::json{{"servers", {server.json()["id"]}}, {"name", "dash-fleet"},
                                                                {"recipe", linux_recipe()}}.dump());
  ASSERT_EQ(fleet.status, 201) << fleet.body;
  EXPECT_EQ(browser.wait_for("document.querySelector('.fleet')?.textContent.includes('dash-fleet') ?? false", true), true);
  ASSERT_EQ(controller.post("/api/v1/fleets/" + fleet.json()["id"].get<std::string>() + "/cancel", "").status, 200);
  EXPECT_EQ(browser.wait_for("document.querySelector('.fleet').dataset.status", "canceled"), "canceled");

  EXPECT_TRUE(browser.complaints.empty()) << [&] {
    std::string all;
    for (const auto& c : browser.complaints) all += c + "\n";
    return all;
  }();
  // The static files carry a policy that allows only their own scripts.
  auto page = controller.get("/", nullptr);
  EXPECT_EQ(page.status, 200);
  EXPECT_NE(page.header("Content-Security-Policy").find("default-src 'self'"), std::string::npos);
  EXPECT_EQ(page.body.find(ControllerProcess::kAuditorToken), std::string::npos);
}

TEST(Dashboard, AWrongTokenIsRefusedOnThePageAndNothingIsShown) {
  ControllerProcess controller;
  controller.start();
  TempDir tmp;
  Browser browser(tmp.path() / "profile");
  browser.navigate("http://127.0.0.1:" + std::to_string(controller.port()) + "/#token=not-a-token");
  EXPECT_EQ(browser.wait_for("document.getElementById('login').hidden", false), false);
  EXPECT_EQ(browser.wait_for("document.getElementById('login-error').textContent", "the token was refused"),
            "the token was refused");
  EXPECT_EQ(browser.eval("document.getElementById('board').hidden"), true);
  EXPECT_EQ(browser.eval("sessionStorage.getItem('provisioner-token')"), nullptr);
  // The 401s of the refused token are the browser's own network log entries, not page errors.
  for (const auto& c : browser.complaints) EXPECT_EQ(c.find("exception"), std::string::npos) << c;
}
