// Recipe secrets at rest (issue 10, defect 6). Through the real controller over HTTP: a job
// whose recipe carries secrets{} and passwords inside user_data / network_config / ks_cfg /
// unattend_xml. The SQLite files (database and WAL) never hold those values in clear, no API
// answer shows them, no log line either, and the task ISO built for the job carries them
// exactly as submitted (byte-identical to an ISO built from the plain recipe). A job stored
// plain by an older version is sealed at the next start and still gets the same ISO.
#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "common/atomic_file.hpp"
#include "common/crypto.hpp"
#include "controller/iso/task_iso.hpp"
#include "tests/integration/controller/iso_tools.hpp"
#include "tests/integration/controller/test_jobs.hpp"
#include "tests/support/controller_process.hpp"

using namespace provisioner;
using namespace provisioner::test;

namespace {

const std::string kRecipeSecret = "recipe-secret-7f3a91c2";
// In a form the line-based redaction never recognised: a shell command in runcmd.
const std::string kUserDataPassword = "ud-pw-0c4d8e2b51";
const std::string kNetworkPassword = "wifi-psk-93b17a0e";
const std::string kKickstartPassword = "ks-pw-4a6f0d19e3";
const std::string kUnattendPassword = "win-pw-d2e8b7c405";

std::vector<std::string> plaintexts() {
  return {kRecipeSecret, kUserDataPassword, kNetworkPassword, kKickstartPassword, kUnattendPassword};
}

nlohmann::json secret_recipe() {
  auto recipe = linux_recipe();
  recipe["secrets"] = {{"db_password", kRecipeSecret}, {"other", "second-" + kRecipeSecret}};
  recipe["user_data"] = "#cloud-config\nruncmd:\n  - [sh, -c, \"echo 'root:" + kUserDataPassword + "' | chpasswd\"]\n";
  recipe["network_config"] = "version: 2\nwifis:\n  wlan0:\n    access-points:\n      lab:\n        password: \"" +
                             kNetworkPassword + "\"\n";
  recipe["ks_cfg"] = "text\nuser --name=ops --password " + kKickstartPassword + " --plaintext\nreboot\n";
  recipe["unattend_xml"] = "<unattend><AutoLogon><Password><Value>" + kUnattendPassword +
                           "</Value></Password></AutoLogon><Run>net user x " + kUnattendPassword + "</Run></unattend>\n";
  return recipe;
}

std::string server_body(const std::string& serial, const nlohmann::json& recipe) {
  return nlohmann::json{{"server", {{"serial", serial}}}, {"recipe", recipe}}.dump();
}

// Every SQLite file of the data dir, read raw: the database, its WAL and shared memory.
std::string database_bytes(const std::filesystem::path& data_dir, std::vector<std::string>* names = nullptr) {
  std::string all;
  for (const auto& entry : std::filesystem::directory_iterator(data_dir)) {
    auto name = entry.path().filename().string();
    if (!name.starts_with("provisioner.db")) continue;
    auto bytes = read_file(entry.path());
    if (!bytes) throw std::runtime_error("cannot read " + entry.path().string());
    all += *bytes;
    if (names) names->push_back(name);
  }
  return all;
}

struct Db {
  sqlite3* db = nullptr;
  explicit Db(const std::filesystem::path& path) {
    if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK)
      throw std::runtime_error("cannot open " + path.string());
  }
  ~Db() { sqlite3_close(db); }
  std::string text(const std::string& sql, const std::string& arg) {
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) != SQLITE_OK) throw std::runtime_error(sqlite3_errmsg(db));
    sqlite3_bind_text(st, 1, arg.c_str(), -1, SQLITE_TRANSIENT);
    std::string out;
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
      out = reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    return out;
  }
  void exec(const std::string& sql, const std::vector<std::string>& args) {
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) != SQLITE_OK) throw std::runtime_error(sqlite3_errmsg(db));
    for (std::size_t i = 0; i < args.size(); ++i)
      sqlite3_bind_text(st, static_cast<int>(i + 1), args[i].c_str(), -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) throw std::runtime_error(sqlite3_errmsg(db));
  }
};

// The job's task ISO as a BMC fetches it, and the ISO the same plain inputs give.
struct IsoCheck {
  std::string downloaded;
  std::string expected;
  std::filesystem::path path;
};

IsoCheck fetch_task_iso(const ControllerProcess& controller, const std::string& id, const nlohmann::json& plain,
                        const std::filesystem::path& dir) {
  auto job = controller.wait_for_status(id, "provisioning");
  auto url = job["media"]["task_iso"]["url"].get<std::string>();
  IsoCheck out;
  out.path = dir / (id + ".iso");
  auto code = run("curl -sS -f -o '" + out.path.string() + "' -w '%{http_code}' '" + url + "'");
  if (code != "200") throw std::runtime_error("download of " + url + " answered " + code);
  out.downloaded = *read_file(out.path);
  // job.json is the controller's own (URLs, signing key); the recipe is the one submitted.
  auto job_json = nlohmann::json::parse(run("isoinfo -R -i '" + out.path.string() + "' -x /job.json"));
  auto expected = iso::build_task_iso({id, plain, job_json});
  if (!expected) throw std::runtime_error(expected.error().message);
  out.expected = *expected;
  return out;
}

std::string iso_file(const std::filesystem::path& iso, const std::string& name) {
  return run("isoinfo -R -i '" + iso.string() + "' -x '" + name + "'");
}

}  // namespace

TEST(RecipeSecretsAtRest, SealedAtRestHiddenInAnswersAndLogsRealOnTheIso) {
  ControllerProcess controller;
  controller.start();
  auto recipe = secret_recipe();
  std::vector<std::string> answers;
  auto created = controller.post("/api/v1/jobs", server_body("SN-SECRETS", recipe));
  ASSERT_EQ(created.status, 201) << created.body;
  answers.push_back(created.body);
  auto id = created.json()["id"].get<std::string>();

  TempDir tmp;
  auto iso = fetch_task_iso(controller, id, recipe, tmp.path());
  // The ISO carries every value as submitted: the maintenance OS needs them.
  EXPECT_EQ(crypto::sha256_hex(iso.downloaded), crypto::sha256_hex(iso.expected))
      << "the task ISO must be the one the plain recipe gives";
  auto on_iso = nlohmann::json::parse(iso_file(iso.path, "/recipe.json"));
  EXPECT_EQ(on_iso["secrets"]["db_password"], kRecipeSecret);
  EXPECT_EQ(on_iso, recipe);
  EXPECT_EQ(iso_file(iso.path, "/user-data"), recipe["user_data"].get<std::string>());
  EXPECT_EQ(iso_file(iso.path, "/network-config"), recipe["network_config"].get<std::string>());
  EXPECT_EQ(iso_file(iso.path, "/ks.cfg"), recipe["ks_cfg"].get<std::string>());
  EXPECT_EQ(iso_file(iso.path, "/unattend.xml"), recipe["unattend_xml"].get<std::string>());

  auto got = controller.get("/api/v1/jobs/" + id);
  ASSERT_EQ(got.status, 200);
  answers.push_back(got.body);
  auto shown = got.json()["recipe"];
  EXPECT_EQ(shown["hostname"], "node-1") << "the rest of the recipe is shown";
  EXPECT_EQ(shown["secrets"]["db_password"], "<redacted>") << "secret names stay visible, values do not";
  for (const char* doc : {"user_data", "network_config", "ks_cfg", "unattend_xml"})
    EXPECT_EQ(shown[doc], "<redacted>") << doc;
  answers.push_back(controller.get("/api/v1/jobs").body);
  answers.push_back(controller.get("/api/v1/jobs?server=SN-SECRETS").body);
  answers.push_back(controller.post("/api/v1/jobs/" + id + "/cancel", "").body);
  controller.wait_for_status(id, "canceled");
  answers.push_back(controller.get("/api/v1/jobs/" + id).body);
  controller.restart();
  answers.push_back(controller.get("/api/v1/jobs/" + id).body);
  controller.kill(SIGTERM);

  std::vector<std::string> files;
  auto db = database_bytes(controller.data_dir(), &files);
  ASSERT_FALSE(db.empty());
  auto log = controller.log_text();
  ASSERT_NE(log.find(id), std::string::npos);
  for (const auto& secret : plaintexts()) {
    EXPECT_EQ(db.find(secret), std::string::npos) << "in clear in the SQLite files: " << secret;
    EXPECT_EQ(log.find(secret), std::string::npos) << "in the log: " << secret;
    for (const auto& a : answers) EXPECT_EQ(a.find(secret), std::string::npos) << secret << " in an answer: " << a;
  }
}

TEST(RecipeSecretsAtRest, WalHoldsNoPlaintextWhileTheControllerRuns) {
  // Read while the controller still has the database open: what is only in the WAL so far.
  ControllerProcess controller;
  controller.start();
  auto recipe = secret_recipe();
  auto created = controller.post("/api/v1/jobs", server_body("SN-WAL", recipe));
  ASSERT_EQ(created.status, 201) << created.body;
  auto id = created.json()["id"].get<std::string>();
  controller.wait_for_status(id, "provisioning");
  std::vector<std::string> files;
  auto db = database_bytes(controller.data_dir(), &files);
  EXPECT_NE(std::find(files.begin(), files.end(), "provisioner.db-wal"), files.end()) << "WAL mode expected";
  for (const auto& secret : plaintexts())
    EXPECT_EQ(db.find(secret), std::string::npos) << "in clear in the database or its WAL: " << secret;
}

TEST(RecipeSecretsAtRest, JobStoredPlainByAnOlderVersionStillGetsItsSecrets) {
  ControllerProcess controller;
  controller.start();
  auto recipe = secret_recipe();
  auto created = controller.post("/api/v1/jobs", server_body("SN-NEW", recipe));
  ASSERT_EQ(created.status, 201) << created.body;
  auto id = created.json()["id"].get<std::string>();
  controller.wait_for_status(id, "provisioning");
  controller.kill(SIGTERM);

  // A queued job as an older controller wrote it: the recipe in clear.
  const std::string legacy = "job_0123456789abcdef";
  {
    Db db(controller.data_dir() / "provisioner.db");
    db.exec("INSERT INTO jobs (id, status, server_serial, server_json, recipe_json, webhook_key_sealed, created_ms, "
            "updated_ms) SELECT ?1, 'queued', 'SN-OLD', replace(server_json, 'SN-NEW', 'SN-OLD'), ?2, "
            "webhook_key_sealed, created_ms, updated_ms FROM jobs WHERE id = ?3",
            {legacy, recipe.dump(), id});
    ASSERT_EQ(db.text("SELECT status FROM jobs WHERE id = ?1", legacy), "queued");
  }
  controller.start();
  // Sealed at start-up: the database no longer holds them in clear.
  EXPECT_NE(controller.log_text().find("sealed the secrets of recipes stored in clear"), std::string::npos);
  auto at_rest = database_bytes(controller.data_dir());
  for (const auto& secret : plaintexts()) EXPECT_EQ(at_rest.find(secret), std::string::npos) << secret;
  TempDir tmp;
  auto iso = fetch_task_iso(controller, legacy, recipe, tmp.path());
  EXPECT_EQ(crypto::sha256_hex(iso.downloaded), crypto::sha256_hex(iso.expected));
  EXPECT_EQ(nlohmann::json::parse(iso_file(iso.path, "/recipe.json")), recipe);
  auto got = controller.get("/api/v1/jobs/" + legacy);
  ASSERT_EQ(got.status, 200) << got.body;
  for (const auto& secret : plaintexts()) EXPECT_EQ(got.body.find(secret), std::string::npos) << secret;
}
