#include "controller/iso/task_iso.hpp"

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>

#include "common/crypto.hpp"

namespace provisioner::iso {
namespace {

TaskIsoInputs sample(const std::string& job_id = "job-1") {
  TaskIsoInputs in;
  in.job_id = job_id;
  in.recipe = {{"task_target", "provision-linux.target"},
               {"target_disk", "/dev/sda"},
               {"hostname", "node-1"},
               {"user_data", "#cloud-config\n"},
               {"files", nlohmann::json::array({{{"name", "etc/motd"}, {"content", "hi\n"}}})}};
  in.job = {{"id", job_id}, {"webhook_url", "http://192.0.2.1/api/v1/status-webhook/S1"}, {"signing_key_id", "k1"}};
  return in;
}

// The ISO 9660 primary volume descriptor sits in block 16; its volume id is bytes 40..71.
std::string pvd_volume_id(const std::string& iso) {
  std::string id = iso.substr(16 * 2048 + 40, 32);
  return id.substr(0, id.find_last_not_of(' ') + 1);
}

const TaskFile* find_file(const std::vector<TaskFile>& files, const std::string& path) {
  for (const auto& f : files)
    if (f.path == path) return &f;
  return nullptr;
}

std::vector<std::string> error_paths(const Error& e) {
  std::vector<std::string> out;
  for (const auto& f : e.fields) out.push_back(f.path);
  return out;
}

TEST(TaskIso, SameInputsGiveSameBytes) {
  auto a = build_task_iso(sample());
  auto b = build_task_iso(sample());
  ASSERT_TRUE(a.ok()) << a.error().message;
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(a->size(), b->size());
  EXPECT_EQ(a->size() % 2048, 0u);
  EXPECT_EQ(crypto::sha256_hex(*a), crypto::sha256_hex(*b));  // (digests: never print ISO bytes)
  auto c = build_task_iso(sample());  // a third run, after other images were built in between
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(crypto::sha256_hex(*a), crypto::sha256_hex(*c));
}

TEST(TaskIso, ConcurrentBuildsAgree) {
  const std::string expected = crypto::sha256_hex(*build_task_iso(sample()));
  std::vector<std::string> got(4 * 25);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 25; ++i) {
        auto iso = build_task_iso(sample());
        got[static_cast<std::size_t>(t * 25 + i)] = iso.ok() ? crypto::sha256_hex(*iso) : iso.error().message;
      }
    });
  for (auto& th : threads) th.join();
  for (const auto& g : got) EXPECT_EQ(g, expected);
}

TEST(TaskIso, DifferentJobIdGivesDifferentBytes) {
  auto a = build_task_iso(sample("job-1"));
  auto b = build_task_iso(sample("job-2"));
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(crypto::sha256_hex(*a), crypto::sha256_hex(*b));
}

TEST(TaskIso, DifferentContentGivesDifferentVolumeUuid) {
  auto in2 = sample();
  in2.recipe["files"][0]["content"] = "other\n";
  auto a = build_task_iso(sample());
  auto b = build_task_iso(in2);
  ASSERT_TRUE(a.ok() && b.ok());
  // PVD creation time (bytes 813..829) is what blkid shows as the UUID of an ISO.
  EXPECT_NE(a->substr(16 * 2048 + 813, 16), b->substr(16 * 2048 + 813, 16));
}

TEST(TaskIso, VolumeLabelIsCidata) {
  auto iso = build_task_iso(sample());
  ASSERT_TRUE(iso.ok());
  EXPECT_EQ(pvd_volume_id(*iso), "CIDATA");
  EXPECT_EQ(pvd_volume_id(*iso), std::string(task_volume_label));
}

TEST(TaskIso, CarriesContractFilesAndMarker) {
  auto files = task_files(sample());
  ASSERT_TRUE(files.ok());
  for (const char* p : {"recipe.json", "recipe.schema.json", "job.json", "provisioner-task", "user-data",
                        "meta-data", "files/etc/motd"})
    EXPECT_NE(find_file(*files, p), nullptr) << p;
  EXPECT_EQ(find_file(*files, "unattend.xml"), nullptr);
  EXPECT_EQ(find_file(*files, "ks.cfg"), nullptr);
  EXPECT_EQ(find_file(*files, "network-config"), nullptr);
  EXPECT_EQ(find_file(*files, "provisioner-task")->content, "provisioner-task-iso 1\njob_id=job-1\n");
  auto job = nlohmann::json::parse(find_file(*files, "job.json")->content);
  EXPECT_EQ(job["id"], "job-1");
  EXPECT_EQ(job["signing_key_id"], "k1");
  EXPECT_EQ(nlohmann::json::parse(find_file(*files, "recipe.json")->content), sample().recipe);
  // Sorted by path: this is the order of the files on the image.
  for (std::size_t i = 1; i < files->size(); ++i) EXPECT_LT((*files)[i - 1].path, (*files)[i].path);
}

TEST(TaskIso, JobIdIsFilledInWhenJobHasNone) {
  auto in = sample();
  in.job.erase("id");
  auto files = task_files(in);
  ASSERT_TRUE(files.ok());
  EXPECT_EQ(nlohmann::json::parse(find_file(*files, "job.json")->content)["id"], "job-1");
}

TEST(TaskIso, NoCloudFilesOnlyWithCloudInitData) {
  auto in = sample();
  in.recipe.erase("user_data");
  auto files = task_files(in);
  ASSERT_TRUE(files.ok());
  EXPECT_EQ(find_file(*files, "user-data"), nullptr);
  EXPECT_EQ(find_file(*files, "meta-data"), nullptr);

  // network-config alone still makes a complete NoCloud seed (user-data empty).
  in.recipe["network_config"] = "version: 2\n";
  files = task_files(in);
  ASSERT_TRUE(files.ok());
  ASSERT_NE(find_file(*files, "user-data"), nullptr);
  EXPECT_EQ(find_file(*files, "user-data")->content, "");
  EXPECT_EQ(find_file(*files, "network-config")->content, "version: 2\n");
}

TEST(TaskIso, GeneratedMetaDataHasInstanceIdAndHostname) {
  auto files = task_files(sample());
  ASSERT_TRUE(files.ok());
  EXPECT_EQ(find_file(*files, "meta-data")->content, "instance-id: job-1\nlocal-hostname: node-1\n");
}

TEST(TaskIso, RecipeMetaDataGetsTheJobInstanceId) {
  auto in = sample();
  in.recipe["meta_data"] = "---\n# seed\ninstance-id: stale-id\nlocal-hostname: custom\npublic-keys: []\n";
  auto files = task_files(in);
  ASSERT_TRUE(files.ok());
  EXPECT_EQ(find_file(*files, "meta-data")->content,
            "---\n# seed\ninstance-id: job-1\nlocal-hostname: custom\npublic-keys: []\n");

  in.recipe["meta_data"] = R"({"instance-id": "stale", "x": 1})";
  files = task_files(in);
  ASSERT_TRUE(files.ok());
  auto doc = nlohmann::json::parse(find_file(*files, "meta-data")->content);
  EXPECT_EQ(doc["instance-id"], "job-1");
  EXPECT_EQ(doc["x"], 1);
}

TEST(TaskIso, WindowsAndKickstartFiles) {
  auto in = sample();
  in.recipe["unattend_xml"] = "<unattend/>";
  in.recipe["ks_cfg"] = "text\n";
  auto files = task_files(in);
  ASSERT_TRUE(files.ok());
  EXPECT_EQ(find_file(*files, "unattend.xml")->content, "<unattend/>");
  EXPECT_EQ(find_file(*files, "ks.cfg")->content, "text\n");
}

class BadFileName : public ::testing::TestWithParam<std::string> {};

TEST_P(BadFileName, IsRefusedWithItsJsonPointer) {
  auto in = sample();
  in.recipe["files"].push_back({{"name", GetParam()}, {"content", "x"}});
  auto r = build_task_iso(in);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::invalid_input);
  EXPECT_EQ(error_paths(r.error()), std::vector<std::string>{"/recipe/files/1/name"});
}

INSTANTIATE_TEST_SUITE_P(TaskIso, BadFileName,
                         ::testing::Values("../etc/passwd", "/etc/passwd", "a//b", "a/./b", "a/../../b", "", "a\\b",
                                           std::string("ctl\x01"), std::string(65, 'x'),
                                           "a/b/c/d/e/f/g",  // deeper than max_file_depth
                                           "caf\xc3\xa9",     // not ASCII
                                           "etc/motd"));      // duplicate of files/0

TEST(TaskIso, FileAndDirectoryWithTheSameNameClash) {
  auto in = sample();
  in.recipe["files"] = nlohmann::json::array({{{"name", "etc"}, {"content", "x"}}, {{"name", "etc/motd"}, {"content", "y"}}});
  auto r = task_files(in);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(error_paths(r.error()), std::vector<std::string>{"/recipe/files/0/name"});
}

TEST(TaskIso, PayloadLimit) {
  auto in = sample();
  in.recipe["files"] = nlohmann::json::array();
  for (int i = 0; i < 5; ++i)
    in.recipe["files"].push_back({{"name", "big" + std::to_string(i)}, {"content", std::string(4u << 20, 'a')}});
  auto r = build_task_iso(in);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::too_large);
  EXPECT_EQ(error_paths(r.error()), std::vector<std::string>{"/recipe"});

  // Exactly at the limit is fine (content and names both count).
  in.recipe["files"].erase(4);
  in.recipe["files"][3]["content"] = std::string((4u << 20) - 100, 'a');
  EXPECT_TRUE(check_task_iso_inputs(in).ok());
}

TEST(TaskIso, BadJobIds) {
  for (const std::string& id : std::vector<std::string>{"", "../x", "a/b", ".hidden", std::string(65, 'a'), "sp ace"}) {
    auto in = sample();
    in.job_id = id;
    in.job.erase("id");
    auto r = check_task_iso_inputs(in);
    ASSERT_FALSE(r.ok()) << id;
    EXPECT_EQ(error_paths(r.error()), std::vector<std::string>{"/job_id"}) << id;
  }
}

TEST(TaskIso, JobDocumentMustMatchJobId) {
  auto in = sample();
  in.job["id"] = "someone-else";
  auto r = check_task_iso_inputs(in);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(error_paths(r.error()), std::vector<std::string>{"/job/id"});
}

TEST(TaskIso, RecipeMustBeAnObject) {
  auto in = sample();
  in.recipe = nlohmann::json::array();
  auto r = check_task_iso_inputs(in);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(error_paths(r.error()), std::vector<std::string>{"/recipe"});
}

TEST(TaskIso, InvalidUtf8InRecipeIsInvalidInput) {
  auto in = sample();
  in.recipe["description"] = std::string("\xff\xfe");
  auto r = build_task_iso(in);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::invalid_input);
}

TEST(TaskIso, WriteTaskIsoIsAtomicAndReturnsSha) {
  namespace fs = std::filesystem;
  fs::path dir = fs::temp_directory_path() / ("iso-unit-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  auto path = (dir / "task.iso").string();
  auto sha = write_task_iso(sample(), path);
  ASSERT_TRUE(sha.ok()) << sha.error().message;
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  EXPECT_EQ(crypto::sha256_hex(ss.str()), *sha);
  EXPECT_EQ(crypto::sha256_hex(*build_task_iso(sample())), *sha);
  std::size_t entries = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir)) ++entries;
  EXPECT_EQ(entries, 1u);  // no temp file left behind
  fs::remove_all(dir);
}

TEST(SingleIso, MissingBaseIsNotFound) {
  auto r = build_single_iso_overlay("/nonexistent/base.iso", sample());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::not_found);
}

TEST(SingleIso, BadInputsAreCheckedFirst) {
  auto in = sample();
  in.recipe["files"][0]["name"] = "../x";
  auto r = build_single_iso_overlay("/nonexistent/base.iso", in);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::invalid_input);
}

}  // namespace
}  // namespace provisioner::iso
