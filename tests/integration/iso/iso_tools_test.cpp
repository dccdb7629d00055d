// Reads produced ISOs back with the tools real systems use: xorriso, isoinfo, blkid.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

#include "common/crypto.hpp"
#include "tests/integration/iso/fixture_inputs.hpp"

namespace provisioner::iso {
namespace {

namespace fs = std::filesystem;

struct CommandResult {
  int status = -1;
  std::string out;
};

// Runs a shell command; stdout captured, stderr dropped unless redirected by the command.
CommandResult run(const std::string& cmd) {
  CommandResult r;
  FILE* p = ::popen((cmd + " 2>/dev/null").c_str(), "r");
  if (!p) return r;
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  int st = ::pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

bool have(const char* tool) { return run(std::string("command -v ") + tool).status == 0; }

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string quote(const std::string& s) { return "'" + s + "'"; }

class IsoTools : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* t : {"xorriso", "isoinfo", "blkid"})
      if (!have(t)) GTEST_SKIP() << t << " is not installed";
    dir_ = fs::temp_directory_path() / ("iso-it-" + std::to_string(::getpid()) + "-" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    if (!dir_.empty()) fs::remove_all(dir_);
  }

  std::string write_fixture(const std::string& name, const TaskIsoInputs& in = testing::fixture_inputs()) {
    auto path = (dir_ / name).string();
    auto sha = write_task_iso(in, path);
    EXPECT_TRUE(sha.ok()) << (sha.ok() ? "" : sha.error().message);
    return path;
  }

  // A small maintenance ISO like a real one: a BIOS no-emulation boot image with a boot info
  // table, an EFI System image as a second El Torito entry, a 32 KiB system area (as hybrid
  // images carry an MBR/GPT there) and some payload.
  std::string make_base_iso() {
    fs::path tree = dir_ / "base-tree";
    fs::create_directories(tree / "boot");
    fs::create_directories(tree / "LiveOS");
    std::ofstream(tree / "README") << "maintenance OS\n";
    auto random_file = [](const fs::path& p, std::size_t n, unsigned seed) {
      std::string s(n, '\0');
      for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 2654435761u + seed) >> 13);
      std::ofstream(p, std::ios::binary) << s;
    };
    random_file(tree / "boot" / "bios.img", 4 * 2048, 1);
    random_file(tree / "boot" / "efi.img", 1440 * 1024, 2);
    random_file(tree / "LiveOS" / "squashfs.img", 300 * 1024, 3);
    random_file(dir_ / "sysarea.bin", 32768, 4);
    auto base = (dir_ / "base.iso").string();
    auto r = run("xorriso -as mkisofs -R -J -V PROVMAINT -G " + quote((dir_ / "sysarea.bin").string()) +
                 " -b boot/bios.img -no-emul-boot -boot-load-size 4 -boot-info-table -c boot/boot.cat"
                 " -eltorito-alt-boot -e boot/efi.img -no-emul-boot -o " +
                 quote(base) + " " + quote(tree.string()) + " >/dev/null 2>&1");
    EXPECT_EQ(r.status, 0);
    return base;
  }

  // The boot-relevant part of xorriso's El Torito report: the entries, not the catalog LBA
  // (a new session carries a new catalog).
  static std::string boot_entries(const std::string& iso) {
    auto r = run("xorriso -indev " + quote(iso) + " -report_el_torito plain 2>/dev/null");
    std::string out;
    std::istringstream lines(r.out);
    for (std::string line; std::getline(lines, line);)
      if (line.starts_with("El Torito boot img") || line.starts_with("El Torito img path") ||
          line.starts_with("El Torito img opts") || line.starts_with("El Torito images"))
        out += line + "\n";
    return out;
  }

  fs::path dir_;
};

TEST_F(IsoTools, XorrisoListsEveryFile) {
  auto iso = write_fixture("task.iso");
  auto files = task_files(testing::fixture_inputs());
  ASSERT_TRUE(files.ok());
  auto r = run("xorriso -indev " + quote(iso) + " -find / -type f 2>/dev/null");
  ASSERT_EQ(r.status, 0);
  std::string expected;
  for (const auto& f : *files) expected += "'/" + f.path + "'\n";
  EXPECT_EQ(r.out, expected);
  // And the -ls form the issue names.
  r = run("xorriso -indev " + quote(iso) + " -ls / 2>/dev/null");
  for (const char* name : {"'recipe.json'", "'recipe.schema.json'", "'job.json'", "'user-data'", "'meta-data'",
                           "'network-config'", "'ks.cfg'", "'provisioner-task'", "'files'"})
    EXPECT_NE(r.out.find(name), std::string::npos) << name;
}

TEST_F(IsoTools, IsoinfoReadsEveryFileBackWithRockRidgeAndJoliet) {
  auto iso = write_fixture("task.iso");
  auto files = task_files(testing::fixture_inputs());
  ASSERT_TRUE(files.ok());
  for (const auto& f : *files) {
    EXPECT_EQ(run("isoinfo -R -x " + quote("/" + f.path) + " -i " + quote(iso)).out, f.content) << f.path;
    EXPECT_EQ(run("isoinfo -J -x " + quote("/" + f.path) + " -i " + quote(iso)).out, f.content) << f.path;
  }
  auto listing = run("isoinfo -R -l -i " + quote(iso)).out;
  // Every file 0444 and every directory 0555, owned by 0:0.
  EXPECT_NE(listing.find("-r--r--r--   1    0    0"), std::string::npos);
  EXPECT_NE(listing.find("dr-xr-xr-x   1    0    0"), std::string::npos);
  EXPECT_EQ(listing.find("rw"), std::string::npos);
}

TEST_F(IsoTools, BlkidShowsLabelTypeAndUuid) {
  auto iso = write_fixture("task.iso");
  EXPECT_EQ(run("blkid -p -o value -s LABEL " + quote(iso)).out, "CIDATA\n");
  EXPECT_EQ(run("blkid -p -o value -s TYPE " + quote(iso)).out, "iso9660\n");
  auto uuid = run("blkid -p -o value -s UUID " + quote(iso)).out;
  EXPECT_EQ(uuid.size(), 23u) << uuid;  // YYYY-MM-DD-hh-mm-ss-cc\n
  // The UUID follows the content: another job, another UUID; the same job, the same UUID.
  auto other = write_fixture("other.iso", testing::fixture_inputs("job-0002"));
  EXPECT_NE(run("blkid -p -o value -s UUID " + quote(other)).out, uuid);
  auto again = write_fixture("again.iso");
  EXPECT_EQ(run("blkid -p -o value -s UUID " + quote(again)).out, uuid);
}

TEST_F(IsoTools, SameBytesAcrossProcessesTimeZonesUmasksAndTime) {
  auto in_process = build_task_iso(testing::fixture_inputs());
  ASSERT_TRUE(in_process.ok());
  auto a = (dir_ / "a.iso").string(), b = (dir_ / "b.iso").string(), c = (dir_ / "c.iso").string();
  ASSERT_EQ(run(std::string("cd / && umask 022 && TZ=UTC LC_ALL=C ") + ISO_FIXTURE_WRITER + " " + quote(a)).status, 0);
  ::sleep(1);  // a second later: any clock leaking into the image would show
  ASSERT_EQ(run(std::string("umask 077 && TZ=Pacific/Chatham LANG=de_DE.UTF-8 ") + ISO_FIXTURE_WRITER + " " + quote(b)).status, 0);
  ASSERT_EQ(run(std::string("umask 002 && TZ=America/St_Johns ") + ISO_FIXTURE_WRITER + " " + quote(c)).status, 0);
  auto sa = crypto::sha256_hex(slurp(a));
  EXPECT_EQ(sa, crypto::sha256_hex(slurp(b)));
  EXPECT_EQ(sa, crypto::sha256_hex(slurp(c)));
  EXPECT_EQ(sa, crypto::sha256_hex(*in_process));
  // The helper prints the sha256 write_task_iso returned.
  EXPECT_EQ(run(std::string(ISO_FIXTURE_WRITER) + " " + quote((dir_ / "d.iso").string())).out, sa + "\n");
}

TEST_F(IsoTools, SingleIsoKeepsElToritoAndShowsTaskFiles) {
  auto base = make_base_iso();
  auto before = boot_entries(base);
  ASSERT_NE(before.find("BIOS"), std::string::npos) << before;
  ASSERT_NE(before.find("UEFI"), std::string::npos) << before;

  auto overlay = build_single_iso_overlay(base, testing::fixture_inputs());
  ASSERT_TRUE(overlay.ok()) << overlay.error().message;
  auto base_size = fs::file_size(base);
  EXPECT_EQ(overlay->base_size, base_size);
  EXPECT_EQ(overlay->volume_id, "PROVMAINT");
  ASSERT_EQ(overlay->segments.size(), 3u);
  // head (rewritten) · base range · new session; contiguous and adding up to size.
  EXPECT_EQ(overlay->segments[0].kind, IsoSegment::Kind::bytes);
  EXPECT_EQ(overlay->segments[1].kind, IsoSegment::Kind::base_file);
  EXPECT_EQ(overlay->segments[1].offset, overlay->segments[0].length);
  EXPECT_EQ(overlay->segments[1].offset + overlay->segments[1].length, base_size);
  std::uint64_t total = 0;
  for (const auto& s : overlay->segments) {
    if (s.kind == IsoSegment::Kind::bytes) {
      EXPECT_EQ(s.data.size(), s.length);
    }
    total += s.length;
  }
  EXPECT_EQ(total, overlay->size);
  EXPECT_EQ(std::uint64_t{overlay->session_lba} * 2048 % 65536, 0u);
  EXPECT_GE(std::uint64_t{overlay->session_lba} * 2048, base_size);
  // Per-job bytes stay small: 64 KiB head + the session, never a copy of the base.
  EXPECT_LT(overlay->segments[0].length + overlay->segments[2].length, 512u * 1024u);

  // The test concatenates base + segments; the controller serves the same bytes virtually.
  auto single = (dir_ / "single.iso").string();
  ASSERT_TRUE(materialize_single_iso(base, *overlay, single).ok());
  EXPECT_EQ(fs::file_size(single), overlay->size);

  EXPECT_EQ(boot_entries(single), before);
  auto files = task_files(testing::fixture_inputs());
  ASSERT_TRUE(files.ok());
  for (const auto& f : *files)
    EXPECT_EQ(run("isoinfo -R -x " + quote("/" + f.path) + " -i " + quote(single)).out, f.content) << f.path;
  auto ls = run("xorriso -indev " + quote(single) + " -ls / 2>/dev/null").out;
  for (const char* name : {"'README'", "'boot'", "'LiveOS'", "'recipe.json'", "'job.json'", "'provisioner-task'"})
    EXPECT_NE(ls.find(name), std::string::npos) << name << "\n" << ls;
  // Base files read back unchanged through the new session's tree.
  for (const char* p : {"/README", "/boot/bios.img", "/boot/efi.img", "/LiveOS/squashfs.img"})
    EXPECT_EQ(run("isoinfo -R -x " + std::string(p) + " -i " + quote(base)).out,
              run("isoinfo -R -x " + std::string(p) + " -i " + quote(single)).out)
        << p;
  // The label stays the base's (its boot loader may look for it); the system area is intact.
  EXPECT_EQ(run("blkid -p -o value -s LABEL " + quote(single)).out, "PROVMAINT\n");
  EXPECT_EQ(slurp(single).substr(0, 32768), slurp(dir_ / "sysarea.bin"));
}

TEST_F(IsoTools, SingleIsoOverlayIsDeterministicAcrossProcesses) {
  auto base = make_base_iso();
  auto a = (dir_ / "a.iso").string(), b = (dir_ / "b.iso").string();
  ASSERT_EQ(run(std::string("umask 022 && TZ=UTC ") + ISO_FIXTURE_WRITER + " --single " + quote(base) + " " + quote(a)).status, 0);
  ::sleep(1);
  ASSERT_EQ(run(std::string("umask 077 && TZ=Asia/Kathmandu ") + ISO_FIXTURE_WRITER + " --single " + quote(base) + " " + quote(b)).status, 0);
  EXPECT_EQ(crypto::sha256_hex(slurp(a)), crypto::sha256_hex(slurp(b)));
  auto o1 = build_single_iso_overlay(base, testing::fixture_inputs());
  auto o2 = build_single_iso_overlay(base, testing::fixture_inputs("job-0002"));
  ASSERT_TRUE(o1.ok() && o2.ok());
  EXPECT_NE(crypto::sha256_hex(o1->segments[2].data), crypto::sha256_hex(o2->segments[2].data));
}

TEST_F(IsoTools, SingleIsoRefusesABaseThatAlreadyHoldsTaskFiles) {
  auto task = write_fixture("task.iso");
  auto r = build_single_iso_overlay(task, testing::fixture_inputs());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::conflict);
}

TEST_F(IsoTools, SingleIsoRefusesSomethingThatIsNotAnIso) {
  auto junk = dir_ / "junk.iso";
  std::ofstream(junk, std::ios::binary) << std::string(1 << 20, 'x');
  auto r = build_single_iso_overlay(junk.string(), testing::fixture_inputs());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::invalid_input);
}

}  // namespace
}  // namespace provisioner::iso
