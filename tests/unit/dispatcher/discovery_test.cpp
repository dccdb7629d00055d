#include <gtest/gtest.h>
#include <sys/stat.h>

#include "common/crypto.hpp"
#include "dispatcher/discovery.hpp"
#include "test_support.hpp"

using namespace provisioner;
using namespace provisioner::dispatcher;
using namespace provisioner::dispatcher::testing;

namespace {

// A fake root: /proc/cmdline, /dev/disk/by-label, device nodes (plain files), /run.
struct FakeRoot {
  TempDir t;
  DiscoveryPaths paths;
  FakeMounter mounter;
  FakeRoot() {
    paths.cmdline_file = t.path / "proc/cmdline";
    paths.by_label_dir = t.path / "dev/disk/by-label";
    paths.mount_dir = t.path / "run/provision-task";
    paths.download_dir = t.path / "run/provision-download";
    paths.serial_files = {t.path / "sys/class/dmi/id/product_serial"};
    paths.blkid = "";
    paths.http_timeout_ms = 5000;
    spit(paths.cmdline_file, "BOOT_IMAGE=/vmlinuz ro quiet\n");
    fs::create_directories(paths.by_label_dir);
  }
  // A device node (a plain file here) with a medium behind it, optionally labelled.
  fs::path device(const std::string& name, const fs::path& medium, const std::string& label = "") {
    auto dev = t.path / "dev" / name;
    spit(dev, "");
    mounter.devices[fs::canonical(dev).string()] = medium;
    if (!label.empty()) fs::create_symlink("../../" + name, paths.by_label_dir / label);
    return dev;
  }
};

}  // namespace

TEST(Discovery, FindsTheTaskByLabel) {
  FakeRoot root;
  auto medium = root.t.path / "media/task";
  write_task_medium(medium, "job-7", "http://127.0.0.1:9/api/v1/status-webhook/S", "k", debian_recipe());
  root.device("sr1", medium, "CIDATA");
  auto found = discover_task_once(root.paths, root.mounter);
  ASSERT_TRUE(found.ok()) << found.error().message;
  EXPECT_EQ(found->task.job_id, "job-7");
  EXPECT_EQ(found->source, "label:" + fs::canonical(root.t.path / "dev/sr1").string());
  EXPECT_EQ(found->task.recipe["task_target"], "provision-linux.target");
  EXPECT_TRUE(fs::exists(root.paths.mount_dir / "recipe.json"));  // stays mounted
}

TEST(Discovery, IgnoresSomeoneElsesCidataDrive) {
  FakeRoot root;
  auto medium = root.t.path / "media/plain-seed";
  spit(medium / "user-data", "#cloud-config\n");
  spit(medium / "meta-data", "instance-id: x\n");
  root.device("sr0", medium, "cidata");
  auto found = discover_task_once(root.paths, root.mounter);
  ASSERT_FALSE(found.ok());
  EXPECT_EQ(found.error().kind, ErrorKind::not_found);
  EXPECT_FALSE(fs::exists(root.paths.mount_dir / "user-data"));  // unmounted again
}

TEST(Discovery, FallsBackToBlkidForAnIso9660WithTheMarker) {
  FakeRoot root;
  auto medium = root.t.path / "media/single";
  write_task_medium(medium, "job-8", "http://127.0.0.1:9/x", "k", debian_recipe());
  auto dev = root.device("sr0", medium);
  // A fake blkid that knows one iso9660 device and no labels.
  auto blkid = root.t.path / "blkid";
  spit(blkid, "#!/bin/sh\n[ \"$5\" = -t ] && [ \"$6\" = TYPE=iso9660 ] && echo " + dev.string() + "\nexit 0\n");
  ::chmod(blkid.c_str(), 0755);
  root.paths.blkid = blkid.string();
  auto found = discover_task_once(root.paths, root.mounter);
  ASSERT_TRUE(found.ok()) << found.error().message;
  EXPECT_EQ(found->task.job_id, "job-8");
  EXPECT_EQ(found->source.rfind("blkid:", 0), 0u);
}

TEST(Discovery, RefusesAMediumWhoseRecipeFailsItsSchema) {
  FakeRoot root;
  auto medium = root.t.path / "media/task";
  auto recipe = debian_recipe();
  recipe["target_disk"] = "sda";  // not a /dev path
  write_task_medium(medium, "job-9", "http://127.0.0.1:9/x", "k", recipe);
  root.device("sr1", medium, "CIDATA");
  auto found = discover_task_once(root.paths, root.mounter);
  ASSERT_FALSE(found.ok());
  EXPECT_EQ(found.error().kind, ErrorKind::invalid_input);
  EXPECT_NE(found.error().message.find("/target_disk"), std::string::npos);
  // The job part is still readable, so the dispatcher can report the failure.
  auto job = read_task_job(root.paths.mount_dir);
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->job_id, "job-9");
}

TEST(Discovery, DownloadsFromTheCommandLineAndChecksTheDigest) {
  FakeRoot root;
  auto medium = root.t.path / "media/task";
  write_task_medium(medium, "job-10", "http://127.0.0.1:9/x", "k", debian_recipe());
  root.mounter.image_source = medium;
  const std::string iso = "pretend this is an ISO image";
  TestHttpServer server([&](const TestRequest& r) {
    return r.target == "/artifacts/task.iso" ? TestResponse{200, iso} : TestResponse{404, ""};
  });
  spit(root.paths.cmdline_file, "ro provision.task=" + server.url("/artifacts/task.iso") +
                                    " provision.sha256=" + crypto::sha256_hex(iso) + "\n");
  auto found = discover_task_once(root.paths, root.mounter);
  ASSERT_TRUE(found.ok()) << found.error().message;
  EXPECT_EQ(found->task.job_id, "job-10");
  ASSERT_EQ(root.mounter.mounted_images.size(), 1u);
  EXPECT_EQ(slurp(root.mounter.mounted_images[0]), iso);

  spit(root.paths.cmdline_file, "provision.task=" + server.url("/artifacts/task.iso") + " provision.sha256=" +
                                    std::string(64, 'a') + "\n");
  found = discover_task_once(root.paths, root.mounter);
  ASSERT_FALSE(found.ok());
  EXPECT_EQ(found.error().kind, ErrorKind::conflict);

  spit(root.paths.cmdline_file, "provision.task=" + server.url("/artifacts/task.iso") + "\n");
  found = discover_task_once(root.paths, root.mounter);
  ASSERT_FALSE(found.ok());
  EXPECT_EQ(found.error().kind, ErrorKind::invalid_input);  // never an unverified task
}

TEST(Discovery, AsksTheControllerBySerial) {
  FakeRoot root;
  auto medium = root.t.path / "media/task";
  write_task_medium(medium, "job-11", "http://127.0.0.1:9/x", "k", debian_recipe());
  root.mounter.image_source = medium;
  spit(root.paths.serial_files[0], "SER-123\n");
  TestHttpServer server([&](const TestRequest& r) {
    return r.target == "/api/v1/tasks/by-serial/SER-123" ? TestResponse{200, "iso bytes"} : TestResponse{404, ""};
  });
  spit(root.paths.cmdline_file, "provision.controller=" + server.url("/") + "\n");
  auto found = discover_task_once(root.paths, root.mounter);
  ASSERT_TRUE(found.ok()) << found.error().message;
  EXPECT_EQ(found->task.job_id, "job-11");
  EXPECT_EQ(found->source, "controller:" + server.url("/api/v1/tasks/by-serial/SER-123"));

  // No task for this machine yet: not_found, so the dispatcher keeps asking.
  spit(root.paths.serial_files[0], "OTHER\n");
  found = discover_task_once(root.paths, root.mounter);
  ASSERT_FALSE(found.ok());
  EXPECT_EQ(found.error().kind, ErrorKind::not_found);
}

TEST(Discovery, SerialPrefersTheCommandLineAndStripsNul) {
  FakeRoot root;
  spit(root.paths.serial_files[0], std::string("10000000abcd\0\n", 14));
  EXPECT_EQ(machine_serial(root.paths), "10000000abcd");
  spit(root.paths.cmdline_file, "provision.serial=PI-1\n");
  EXPECT_EQ(machine_serial(root.paths), "PI-1");
}

TEST(Discovery, NothingAnywhereIsNotFound) {
  FakeRoot root;
  auto found = discover_task_once(root.paths, root.mounter);
  ASSERT_FALSE(found.ok());
  EXPECT_EQ(found.error().kind, ErrorKind::not_found);
}
