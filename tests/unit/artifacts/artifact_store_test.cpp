#include "controller/artifacts/artifact_store.hpp"

#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/stat.h>

#include <cstring>

#include <fstream>
#include <sstream>

#include "common/crypto.hpp"

namespace provisioner::artifacts {
namespace {
namespace fs = std::filesystem;
using namespace std::chrono_literals;

class ArtifactStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() /
            ("artifact-store-test-" + crypto::random_token(6));
    fs::create_directories(root_);
  }
  void TearDown() override { fs::remove_all(root_); }

  static std::string slurp(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
  }
  // Files in sha256/ whose name starts with ".tmp-".
  std::size_t temp_files() const {
    std::size_t n = 0;
    for (const auto& e : fs::directory_iterator(root_ / "sha256"))
      if (e.path().filename().string().starts_with(".tmp-")) ++n;
    return n;
  }
  static void set_times(const fs::path& p, std::chrono::system_clock::time_point t) {
    struct timespec ts[2];
    auto secs = std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
    ts[0] = {secs, 0};
    ts[1] = {secs, 0};
    ASSERT_EQ(::utimensat(AT_FDCWD, p.c_str(), ts, 0), 0);
  }

  fs::path root_;
};

TEST_F(ArtifactStoreTest, PutStoresUnderItsSha256) {
  ArtifactStore store(root_);
  auto info = store.put("hello");
  ASSERT_TRUE(info) << info.error().message;
  EXPECT_EQ(info->sha256, crypto::sha256_hex("hello"));
  EXPECT_EQ(info->size, 5u);
  EXPECT_FALSE(info->reused);
  EXPECT_EQ(info->path, root_ / "sha256" / info->sha256);
  EXPECT_EQ(slurp(info->path), "hello");
  EXPECT_TRUE(store.exists(info->sha256));
  EXPECT_EQ(store.path_of(info->sha256), info->path);
  EXPECT_EQ(*store.size(info->sha256), 5u);
  EXPECT_EQ(temp_files(), 0u);
}

TEST_F(ArtifactStoreTest, IdenticalContentIsReusedAndKeepsItsMtime) {
  ArtifactStore store(root_);
  auto a = store.put("same bytes");
  ASSERT_TRUE(a);
  auto old = std::chrono::system_clock::now() - 48h;
  set_times(a->path, old);
  auto b = store.put("same bytes");
  ASSERT_TRUE(b);
  EXPECT_TRUE(b->reused);
  EXPECT_EQ(a->sha256, b->sha256);
  struct stat st {};
  ASSERT_EQ(::stat(b->path.c_str(), &st), 0);
  // Last-Modified stays what it was; the atime marks the re-registration for GC.
  EXPECT_EQ(st.st_mtim.tv_sec, std::chrono::system_clock::to_time_t(old));
  EXPECT_GT(st.st_atim.tv_sec, std::chrono::system_clock::to_time_t(old) + 3600);
  EXPECT_EQ(temp_files(), 0u);
}

TEST_F(ArtifactStoreTest, PutFileChecksExpectedDigest) {
  ArtifactStore store(root_);
  auto src = root_ / "input.iso";
  std::string data(3 * 1024 * 1024 + 17, '\0');
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 31 + 7);
  std::ofstream(src, std::ios::binary) << data;
  auto want = crypto::sha256_hex(data);

  auto bad = store.put_file(src, std::string(64, 'a'));
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().kind, ErrorKind::invalid_input);
  EXPECT_FALSE(store.exists(want));
  EXPECT_EQ(temp_files(), 0u);

  auto ok = store.put_file(src, "sha256:" + want);
  ASSERT_TRUE(ok) << ok.error().message;
  EXPECT_EQ(ok->sha256, want);
  EXPECT_EQ(slurp(ok->path), data);

  auto malformed = store.put_file(src, "md5:abc");
  ASSERT_FALSE(malformed);
  EXPECT_EQ(malformed.error().kind, ErrorKind::invalid_input);
  EXPECT_EQ(store.put_file(root_ / "missing").error().kind, ErrorKind::not_found);
}

TEST_F(ArtifactStoreTest, PutStreamEnforcesMaxBytesAndLeavesNothing) {
  ArtifactStore store(root_);
  int calls = 0;
  ReadFn read = [&](char* buf, std::size_t cap) -> Result<std::size_t> {
    if (calls++ == 10) return std::size_t{0};
    std::size_t n = std::min<std::size_t>(cap, 1000);
    std::memset(buf, 'x', n);
    return n;
  };
  auto r = store.put_stream(read, std::nullopt, 5000);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind, ErrorKind::too_large);
  EXPECT_EQ(temp_files(), 0u);

  calls = 0;
  r = store.put_stream(read, std::nullopt, 10000);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->size, 10000u);
  EXPECT_EQ(r->sha256, crypto::sha256_hex(std::string(10000, 'x')));
}

TEST_F(ArtifactStoreTest, ReaderErrorAbortsUpload) {
  ArtifactStore store(root_);
  int calls = 0;
  ReadFn read = [&](char* buf, std::size_t cap) -> Result<std::size_t> {
    if (calls++ == 2) return make_error(ErrorKind::unavailable, "client went away");
    buf[0] = 'y';
    return std::size_t{1};
  };
  auto r = store.put_stream(read, std::nullopt, 100);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind, ErrorKind::unavailable);
  EXPECT_EQ(temp_files(), 0u);
}

TEST_F(ArtifactStoreTest, CompositeIsAVirtualConcatenation) {
  ArtifactStore store(root_);
  std::string base(200000, '\0');
  for (std::size_t i = 0; i < base.size(); ++i) base[i] = static_cast<char>(i % 251);
  auto b = store.put(base);
  ASSERT_TRUE(b);
  auto c = store.put_composite({CompositePart::bytes("HEAD"),
                                CompositePart::region(b->sha256, 4, base.size() - 4),
                                CompositePart::bytes("tail session")});
  ASSERT_TRUE(c) << c.error().message;
  std::string expected = "HEAD" + base.substr(4) + "tail session";
  EXPECT_TRUE(c->composite);
  // The id: from each segment's length and digest, as anyone holding the bytes can rebuild it.
  EXPECT_EQ(c->sha256, crypto::sha256_hex("provisioner-composite-v2\n4 " + crypto::sha256_hex("HEAD") + "\n" +
                                          std::to_string(base.size() - 4) + " " + crypto::sha256_hex(base.substr(4)) +
                                          "\n12 " + crypto::sha256_hex("tail session") + "\n"));
  EXPECT_TRUE(store.verify_composite(c->sha256).ok());
  EXPECT_EQ(c->size, expected.size());
  EXPECT_FALSE(store.path_of(c->sha256));  // never materialised
  EXPECT_TRUE(store.exists(c->sha256));
  EXPECT_EQ(*store.size(c->sha256), expected.size());

  auto m = store.composite(c->sha256);
  ASSERT_TRUE(m);
  ASSERT_EQ(m->segments.size(), 3u);
  EXPECT_EQ(m->segments[0].kind, Segment::Kind::bytes);
  EXPECT_EQ(m->segments[1], (Segment{Segment::Kind::artifact, b->sha256, 4, base.size() - 4, crypto::sha256_hex(base.substr(4))}));
  EXPECT_EQ(m->size, expected.size());

  auto again = store.put_composite({CompositePart::bytes("HEAD"),
                                    CompositePart::region(b->sha256, 4, base.size() - 4),
                                    CompositePart::bytes("tail session")});
  ASSERT_TRUE(again);
  EXPECT_TRUE(again->reused);
  // The region's digest was kept: the second composite did not read the base again.
  EXPECT_TRUE(std::filesystem::exists(root_ / "regions" / (b->sha256 + "-4-" + std::to_string(base.size() - 4))));
}

TEST_F(ArtifactStoreTest, ACompositeWhoseBytesChangedFailsItsCheck) {
  ArtifactStore store(root_);
  auto b = store.put(std::string(100000, 'x'));
  ASSERT_TRUE(b);
  auto c = store.put_composite({CompositePart::bytes("HEAD"), CompositePart::region(b->sha256, 4, 99996)});
  ASSERT_TRUE(c) << c.error().message;
  ASSERT_TRUE(store.verify_composite(c->sha256).ok());
  // Someone edits the stored base in place (the store never does): the check says so.
  {
    std::fstream f(root_ / "sha256" / b->sha256, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(5000);
    f.put('y');
  }
  EXPECT_FALSE(store.verify_composite(c->sha256).ok());
}

TEST_F(ArtifactStoreTest, CompositeRejectsRegionsOutsideTheBase) {
  ArtifactStore store(root_);
  auto b = store.put("0123456789");
  ASSERT_TRUE(b);
  EXPECT_EQ(store.put_composite({CompositePart::region(b->sha256, 5, 6)}).error().kind,
            ErrorKind::invalid_input);
  EXPECT_EQ(store.put_composite({CompositePart::region(b->sha256, UINT64_MAX, 2)}).error().kind,
            ErrorKind::invalid_input);
  EXPECT_EQ(store.put_composite({CompositePart::region(std::string(64, 'b'), 0, 1)}).error().kind,
            ErrorKind::not_found);
}

TEST_F(ArtifactStoreTest, UnknownAndMalformedIds) {
  ArtifactStore store(root_);
  EXPECT_FALSE(store.exists(std::string(64, 'a')));
  EXPECT_FALSE(store.exists("../../etc/passwd"));
  EXPECT_FALSE(store.path_of("../x"));
  EXPECT_EQ(store.stat(std::string(64, 'a')).error().kind, ErrorKind::not_found);
  EXPECT_EQ(store.stat("nope").error().kind, ErrorKind::invalid_input);
}

TEST_F(ArtifactStoreTest, GcRemovesOnlyUnreferencedAndOld) {
  ArtifactStore store(root_);
  auto now = std::chrono::system_clock::now();
  auto old = now - 10 * 24h;
  auto keep_ref = store.put("referenced");
  auto keep_new = store.put("recent");
  auto doomed = store.put("old and unreferenced");
  auto base = store.put(std::string(1000, 'b'));
  auto comp = store.put_composite({CompositePart::region(base->sha256, 0, 1000),
                                   CompositePart::bytes("per-job")});
  ASSERT_TRUE(keep_ref && keep_new && doomed && base && comp);
  auto blob_of_bytes = store.composite(comp->sha256)->segments[1].sha256;
  for (const auto& p : {keep_ref->path, doomed->path, base->path, comp->path,
                        store.blob_path(blob_of_bytes)})
    set_times(p, old);
  // A stale temp from a crashed upload, and a fresh one from an upload in progress.
  std::ofstream(root_ / "sha256" / ".tmp-stale") << "x";
  set_times(root_ / "sha256" / ".tmp-stale", old);
  std::ofstream(root_ / "sha256" / ".tmp-live") << "x";

  // The composite is referenced: it keeps its base and its bytes blob alive.
  auto r = store.gc({keep_ref->sha256, comp->sha256}, std::chrono::hours(24 * 7), now);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_TRUE(store.exists(keep_ref->sha256));
  EXPECT_TRUE(store.exists(keep_new->sha256));
  EXPECT_FALSE(store.exists(doomed->sha256));
  EXPECT_TRUE(store.exists(comp->sha256));
  EXPECT_TRUE(store.exists(base->sha256));
  EXPECT_TRUE(store.exists(blob_of_bytes));
  EXPECT_FALSE(fs::exists(root_ / "sha256" / ".tmp-stale"));
  EXPECT_TRUE(fs::exists(root_ / "sha256" / ".tmp-live"));
  EXPECT_EQ(r->removed, 2u);

  // Once nothing references the composite, it and its parts go.
  r = store.gc({keep_ref->sha256}, std::chrono::hours(24 * 7), now);
  ASSERT_TRUE(r);
  EXPECT_FALSE(store.exists(comp->sha256));
  EXPECT_FALSE(store.exists(base->sha256));
  EXPECT_FALSE(store.exists(blob_of_bytes));
  EXPECT_TRUE(store.exists(keep_ref->sha256));

  // Re-registering an old artifact protects it again.
  set_times(keep_ref->path, old);
  ASSERT_TRUE(store.put("referenced"));
  r = store.gc({}, std::chrono::hours(24 * 7), now + 1h);
  EXPECT_TRUE(store.exists(keep_ref->sha256));
}


TEST_F(ArtifactStoreTest, GcWorksBeforeAnyCompositeOrBlobExists) {
  ArtifactStore store(root_);
  auto empty = store.gc({}, std::chrono::seconds(0));
  ASSERT_TRUE(empty.ok()) << empty.error().message;
  auto a = store.put("only plain artifacts, no composite folder yet");
  ASSERT_TRUE(a.ok());
  auto r = store.gc({}, std::chrono::seconds(0), std::chrono::system_clock::now() + std::chrono::seconds(1));
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->removed, 1u);
  EXPECT_FALSE(store.exists(a->sha256));
}

}  // namespace
}  // namespace provisioner::artifacts
