// The registry's storage on a real directory: digests checked, nothing partial visible,
// manifests only over blobs the repository holds, state that survives a reopen, GC.
#include <gtest/gtest.h>

#include <sys/mount.h>
#include <sys/stat.h>

#include <filesystem>
#include <thread>

#include "common/atomic_file.hpp"
#include "common/crypto.hpp"
#include "controller/artifacts/artifact_store.hpp"
#include "controller/registry/registry_store.hpp"
#include "tests/support/controller_process.hpp"

using namespace provisioner;
using namespace provisioner::registry;
namespace fs = std::filesystem;

namespace {

artifacts::ReadFn from(const std::string& data, std::size_t piece = 1 << 16) {
  auto pos = std::make_shared<std::size_t>(0);
  return [&data, pos, piece](char* buf, std::size_t cap) -> Result<std::size_t> {
    std::size_t n = std::min({cap, piece, data.size() - *pos});
    std::memcpy(buf, data.data() + *pos, n);
    *pos += n;
    return n;
  };
}

artifacts::ReadFn failing_after(const std::string& data, std::size_t bytes) {
  auto pos = std::make_shared<std::size_t>(0);
  return [&data, pos, bytes](char* buf, std::size_t cap) -> Result<std::size_t> {
    if (*pos >= bytes) return make_error(ErrorKind::unavailable, "connection reset");
    std::size_t n = std::min({cap, bytes - *pos, data.size() - *pos});
    std::memcpy(buf, data.data() + *pos, n);
    *pos += n;
    return n;
  };
}

template <typename T>
const T& ok(const RResult<T>& r) {
  if (auto* e = std::get_if<RegistryError>(&r)) ADD_FAILURE() << e->message;
  return std::get<T>(r);
}
template <typename T>
RegistryErrorCode code(const RResult<T>& r) {
  EXPECT_TRUE(std::holds_alternative<RegistryError>(r)) << "expected an error";
  return std::holds_alternative<RegistryError>(r) ? std::get<RegistryError>(r).code : RegistryErrorCode::internal;
}

std::size_t temp_files(const fs::path& dir) {
  std::size_t n = 0;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().starts_with(".tmp-")) ++n;
  return n;
}

struct RegistryStoreTest : ::testing::Test {
  test::TempDir dir;
  fs::path blobs = dir.path() / "artifacts";
  std::unique_ptr<RegistryStore> store = make();
  std::unique_ptr<RegistryStore> make(std::chrono::seconds push_grace = std::chrono::seconds(1)) {
    auto s = std::make_unique<RegistryStore>(dir.path() / "registry", blobs, 1 << 16, push_grace);
    EXPECT_TRUE(s->open().ok());
    return s;
  }
  Digest push(const std::string& repo, const std::string& data) {
    auto dg = digest_of(data);
    ok(store->put_blob(repo, dg, from(data), 1ull << 40));
    return dg;
  }
  std::string manifest(const Digest& config, std::uint64_t config_size, const Digest& layer, std::uint64_t layer_size,
                       const std::string& extra = "") {
    return R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":")" +
           config.str() + R"(","size":)" + std::to_string(config_size) +
           R"(},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":")" + layer.str() +
           R"(","size":)" + std::to_string(layer_size) + "}]" + extra + "}";
  }
};

}  // namespace

TEST_F(RegistryStoreTest, BlobIsVisibleOnlyWhenItsDigestMatches) {
  std::string data = crypto::random_bytes(300000);
  auto wrong = digest_of("something else");
  EXPECT_EQ(code(store->put_blob("a", wrong, from(data), 1ull << 40)), RegistryErrorCode::digest_invalid);
  EXPECT_FALSE(fs::exists(blobs / "sha256" / digest_of(data).hex));
  EXPECT_FALSE(fs::exists(blobs / "sha256" / wrong.hex));
  EXPECT_EQ(temp_files(blobs / "sha256"), 0u);
  // Interrupted mid-stream: nothing left either.
  EXPECT_EQ(code(store->put_blob("a", digest_of(data), failing_after(data, 100000), 1ull << 40)),
            RegistryErrorCode::blob_upload_invalid);
  EXPECT_EQ(temp_files(blobs / "sha256"), 0u);
  EXPECT_EQ(code(store->put_blob("a", digest_of(data), from(data), 1000)), RegistryErrorCode::size_invalid);
  EXPECT_EQ(temp_files(blobs / "sha256"), 0u);

  auto dg = push("a", data);
  auto info = store->blob("a", dg);
  ASSERT_TRUE(info);
  EXPECT_EQ(info->size, data.size());
  EXPECT_EQ(*read_file(info->path), data);
  EXPECT_EQ(info->path, blobs / "sha256" / dg.hex);  // the artifact store's own layout
  // Another repository does not see it until it is mounted there.
  EXPECT_FALSE(store->blob("b", dg));
  EXPECT_FALSE(store->mount("b", "nowhere", dg));
  EXPECT_TRUE(store->mount("b", "a", dg));
  EXPECT_TRUE(store->blob("b", dg));
  EXPECT_TRUE(store->unlink_blob("b", dg));
  EXPECT_FALSE(store->blob("b", dg));
  EXPECT_TRUE(store->blob("a", dg));
}

TEST_F(RegistryStoreTest, Sha512BlobsGoBesideSha256Ones) {
  std::string data = "sixty-four bytes are not needed for this";
  auto dg = digest_of(data, "sha512");
  ok(store->put_blob("a", dg, from(data), 1 << 20));
  ASSERT_TRUE(store->blob("a", dg));
  EXPECT_TRUE(fs::exists(blobs / "sha512" / dg.hex));
}

TEST_F(RegistryStoreTest, ChunkedUploadKeepsOrderAndChecksTheDigest) {
  std::string data = crypto::random_bytes(200000);
  auto id = store->start_upload("a");
  EXPECT_EQ(store->upload("a", id)->offset, 0u);
  EXPECT_FALSE(store->upload("b", id));  // bound to its repository
  std::string first = data.substr(0, 70000), second = data.substr(70000);
  EXPECT_EQ(ok(store->append_upload("a", id, 0, from(first), 1 << 20)), 70000u);
  // Out of order: a chunk that does not start where the upload stands.
  EXPECT_EQ(code(store->append_upload("a", id, 0, from(second), 1 << 20)), RegistryErrorCode::range_invalid);
  EXPECT_EQ(code(store->append_upload("a", id, 90000, from(second), 1 << 20)), RegistryErrorCode::range_invalid);
  EXPECT_EQ(ok(store->append_upload("a", id, 70000, from(second), 1 << 20)), 200000u);
  EXPECT_EQ(store->upload("a", id)->offset, 200000u);
  auto done = ok(store->finish_upload("a", id, digest_of(data)));
  EXPECT_EQ(*read_file(done.path), data);
  EXPECT_FALSE(store->upload("a", id));
  EXPECT_EQ(code(store->finish_upload("a", id, digest_of(data))), RegistryErrorCode::blob_upload_unknown);
}

TEST_F(RegistryStoreTest, CorruptedUploadIsRefusedAndLeavesNothing) {
  std::string data = crypto::random_bytes(100000), corrupted = data;
  corrupted[5000] ^= 1;
  auto id = store->start_upload("a");
  ok(store->append_upload("a", id, std::nullopt, from(corrupted), 1 << 20));
  EXPECT_EQ(code(store->finish_upload("a", id, digest_of(data))), RegistryErrorCode::digest_invalid);
  EXPECT_FALSE(store->blob("a", digest_of(data)));
  EXPECT_FALSE(fs::exists(blobs / "sha256" / digest_of(data).hex));
  EXPECT_EQ(temp_files(blobs / "sha256"), 0u);
  // Cancelled sessions leave nothing either.
  auto other = store->start_upload("a");
  ok(store->append_upload("a", other, 0, from(data), 1 << 20));
  EXPECT_TRUE(store->cancel_upload("a", other));
  EXPECT_FALSE(store->cancel_upload("a", other));
  EXPECT_EQ(temp_files(blobs / "sha256"), 0u);
}

TEST_F(RegistryStoreTest, ZeroRunsBecomeHoles) {
  std::string data(32 << 20, '\0');
  data.replace(data.size() - 5, 5, "tail!");
  auto dg = push("a", data);
  auto info = store->blob("a", dg);
  ASSERT_TRUE(info);
  struct stat st{};
  ASSERT_EQ(::stat(info->path.c_str(), &st), 0);
  EXPECT_EQ(static_cast<std::size_t>(st.st_size), data.size());
  EXPECT_LT(static_cast<std::size_t>(st.st_blocks) * 512, 1u << 20);  // far less than 32 MiB on disk
  EXPECT_EQ(*read_file(info->path), data);
}

TEST_F(RegistryStoreTest, ConcurrentPushesOfOneBlobAllSucceed) {
  std::string data = crypto::random_bytes(1 << 20);
  auto dg = digest_of(data);
  std::vector<std::thread> threads;
  std::atomic<int> good{0};
  for (int i = 0; i < 8; ++i)
    threads.emplace_back([&, i] {
      auto repo = "r" + std::to_string(i % 2);
      if (i % 2) {
        auto r = store->put_blob(repo, dg, from(data, 4096), 1ull << 40);
        if (std::holds_alternative<BlobInfo>(r)) ++good;
      } else {
        auto id = store->start_upload(repo);
        auto a = store->append_upload(repo, id, 0, from(data, 4096), 1ull << 40);
        if (std::holds_alternative<std::uint64_t>(a) && std::holds_alternative<BlobInfo>(store->finish_upload(repo, id, dg)))
          ++good;
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(good.load(), 8);
  EXPECT_EQ(*read_file(blobs / "sha256" / dg.hex), data);
  EXPECT_EQ(temp_files(blobs / "sha256"), 0u);
}

TEST_F(RegistryStoreTest, ManifestsNeedTheirBlobsAndSurviveReopen) {
  std::string config = R"({"architecture":"amd64","os":"linux"})", layer = crypto::random_bytes(5000);
  auto cd = digest_of(config), ld = digest_of(layer);
  auto text = manifest(cd, config.size(), ld, layer.size());
  EXPECT_EQ(code(store->put_manifest("app", "v1", text, std::nullopt)), RegistryErrorCode::manifest_blob_unknown);
  EXPECT_FALSE(store->tags("app"));  // a refused manifest did not create the repository
  push("app", config);
  EXPECT_EQ(code(store->put_manifest("app", "v1", text, std::nullopt)), RegistryErrorCode::manifest_blob_unknown);
  push("app", layer);
  // Sizes must match what is stored.
  EXPECT_EQ(code(store->put_manifest("app", "v1", manifest(cd, config.size(), ld, layer.size() + 1), std::nullopt)),
            RegistryErrorCode::manifest_invalid);
  EXPECT_EQ(code(store->put_manifest("app", "bad tag", text, std::nullopt)), RegistryErrorCode::manifest_invalid);
  EXPECT_EQ(code(store->put_manifest("app", digest_of("x").str(), text, std::nullopt)), RegistryErrorCode::digest_invalid);
  EXPECT_EQ(code(store->put_manifest("app", "v1", std::string(70000, ' '), std::nullopt)),
            RegistryErrorCode::manifest_too_large);
  auto put = ok(store->put_manifest("app", "v1", text, std::nullopt));
  EXPECT_EQ(put.digest, digest_of(text));
  ok(store->put_manifest("app", "v0", text, std::nullopt));
  ok(store->put_manifest("app", put.digest.str(), text, std::nullopt));  // by digest too

  store = make();  // a restart
  EXPECT_EQ(*store->tags("app"), (std::vector<std::string>{"v0", "v1"}));
  auto got = ok(store->get_manifest("app", "v1"));
  EXPECT_EQ(got.bytes, text);
  EXPECT_EQ(got.media_type, "application/vnd.oci.image.manifest.v1+json");
  EXPECT_EQ(ok(store->get_manifest("app", put.digest.str())).bytes, text);
  EXPECT_EQ(code(store->get_manifest("app", "v9")), RegistryErrorCode::manifest_unknown);
  EXPECT_EQ(code(store->get_manifest("nope", "v1")), RegistryErrorCode::name_unknown);
  EXPECT_TRUE(store->blob("app", ld));  // links survive too

  // The repository is a valid OCI image layout on disk.
  auto layout = store->layout_dir("app");
  auto index = nlohmann::json::parse(*read_file(layout / "index.json"));
  ASSERT_EQ(index["manifests"].size(), 2u);
  EXPECT_EQ(index["manifests"][1]["annotations"]["org.opencontainers.image.ref.name"], "v1");
  EXPECT_EQ(*read_file(layout / "blobs" / "sha256" / put.digest.hex), text);
  EXPECT_TRUE(fs::exists(layout / "oci-layout"));

  ok(store->delete_manifest("app", "v0"));
  EXPECT_EQ(*store->tags("app"), (std::vector<std::string>{"v1"}));
  ok(store->delete_manifest("app", put.digest.str()));
  EXPECT_TRUE(store->tags("app")->empty());
  EXPECT_EQ(code(store->get_manifest("app", put.digest.str())), RegistryErrorCode::manifest_unknown);
}

TEST_F(RegistryStoreTest, IdleUploadSessionsEndAtGcAndTheirTempFilesGo) {
  artifacts::ArtifactStore artifacts(blobs);
  auto idle = store->start_upload("a");
  ok(store->append_upload("a", idle, 0, from(std::string(1000, 'x')), 1 << 20));
  EXPECT_EQ(temp_files(blobs / "sha256"), 1u);
  auto sweep = [&](const std::set<std::string>& roots, std::chrono::seconds keep) { return artifacts.gc(roots, keep); };
  ASSERT_TRUE(store->collect({}, std::chrono::seconds(0), sweep));
  EXPECT_TRUE(store->upload("a", idle));  // within the grace (1 s): kept
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  auto live = store->start_upload("a");
  ASSERT_TRUE(store->collect({}, std::chrono::seconds(0), sweep));
  EXPECT_FALSE(store->upload("a", idle));
  EXPECT_TRUE(store->upload("a", live));
  EXPECT_EQ(temp_files(blobs / "sha256"), 1u);  // the live session's only
}

TEST_F(RegistryStoreTest, DiscardRemovesABlobNothingElseHolds) {
  auto mine = push("a", "only here");
  auto shared = push("a", "also elsewhere");
  push("b", "also elsewhere");
  EXPECT_TRUE(store->discard_blob("a", mine));
  EXPECT_FALSE(fs::exists(blobs / "sha256" / mine.hex));
  EXPECT_FALSE(store->blob("a", mine));
  EXPECT_FALSE(store->discard_blob("a", shared));  // b holds it: kept
  EXPECT_TRUE(store->blob("b", shared));
}

TEST_F(RegistryStoreTest, ReferrersListArtifactsBySubject) {
  std::string config = "{}", layer = "sbom";
  auto cd = push("app", config), ld = push("app", layer);
  auto image = ok(store->put_manifest("app", "v1", manifest(cd, 2, ld, 4), std::nullopt)).digest;
  auto subject = R"(,"artifactType":"application/vnd.example.sbom","subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":")" +
                 image.str() + R"(","size":1})";
  auto put = ok(store->put_manifest("app", digest_of(manifest(cd, 2, ld, 4, subject)).str(),
                                    manifest(cd, 2, ld, 4, subject), std::nullopt));
  ASSERT_TRUE(put.subject);
  EXPECT_EQ(*put.subject, image);
  auto refs = store->referrers("app", image, std::nullopt);
  ASSERT_EQ(refs["manifests"].size(), 1u);
  EXPECT_EQ(refs["manifests"][0]["artifactType"], "application/vnd.example.sbom");
  EXPECT_EQ(refs["manifests"][0]["digest"], put.digest.str());
  EXPECT_EQ(store->referrers("app", image, "application/other")["manifests"].size(), 0u);
  EXPECT_EQ(store->referrers("app", put.digest, std::nullopt)["manifests"].size(), 0u);
  EXPECT_EQ(store->referrers("none", image, std::nullopt)["mediaType"], "application/vnd.oci.image.index.v1+json");
}

TEST_F(RegistryStoreTest, CollectKeepsWhatManifestsNameAndRemovesTheRest) {
  artifacts::ArtifactStore artifacts(blobs);
  std::string config = "{}", layer = crypto::random_bytes(1000), loose = crypto::random_bytes(1000);
  auto cd = push("app", config), ld = push("app", layer), lo = push("app", loose);
  auto loose512 = digest_of("loose", "sha512");
  ok(store->put_blob("app", loose512, from(std::string("loose")), 1 << 20));
  auto m = ok(store->put_manifest("app", "v1", manifest(cd, 2, ld, 1000), std::nullopt)).digest;
  auto sweep = [&](const std::set<std::string>& roots, std::chrono::seconds keep) { return artifacts.gc(roots, keep); };
  // Within the push grace nothing goes, whatever the retention: a push may not have sent its
  // manifest yet. (The same registry opened with an hour's grace, so a slow machine cannot
  // pass it before the first look.)
  {
    auto patient = make(std::chrono::hours(1));
    auto kept = patient->collect({}, std::chrono::seconds(0), sweep);
    ASSERT_TRUE(kept);
    EXPECT_EQ(kept->removed, 0u);
    EXPECT_TRUE(patient->blob("app", lo));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(2100));  // past the 1 s grace, at 1 s resolution
  auto report = store->collect({}, std::chrono::seconds(0), sweep);
  ASSERT_TRUE(report) << report.error().message;
  EXPECT_EQ(report->removed, 2u);  // the loose sha256 and sha512 blobs
  EXPECT_TRUE(store->blob("app", cd));
  EXPECT_TRUE(store->blob("app", ld));
  EXPECT_TRUE(fs::exists(blobs / "sha256" / m.hex));
  EXPECT_FALSE(store->blob("app", lo));
  EXPECT_FALSE(store->blob("app", loose512));
  // Roots from elsewhere (jobs' media) are kept too.
  auto job_iso = push("app", "an iso");
  std::this_thread::sleep_for(std::chrono::milliseconds(2100));
  ASSERT_TRUE(store->collect({job_iso.hex}, std::chrono::seconds(0), sweep));
  EXPECT_TRUE(fs::exists(blobs / "sha256" / job_iso.hex));
}

// A full disk (a 2 MiB tmpfs, when this process may mount one) refuses the blob and leaves
// nothing: no temp file, no blob, no link.
TEST(RegistryStoreFullDisk, LeavesNothingHalfWritten) {
  test::TempDir dir;
  auto mnt = dir.path() / "small";
  fs::create_directories(mnt);
  if (::mount("tmpfs", mnt.c_str(), "tmpfs", 0, "size=2m") != 0) GTEST_SKIP() << "cannot mount a tmpfs here (not root?)";
  struct Unmount {
    fs::path p;
    ~Unmount() { ::umount2(p.c_str(), MNT_DETACH); }
  } unmount{mnt};
  RegistryStore store(mnt / "registry", mnt / "artifacts", 1 << 16, std::chrono::seconds(1));
  ASSERT_TRUE(store.open().ok());
  std::string data = crypto::random_bytes(3 << 20);
  auto dg = digest_of(data);
  auto put = store.put_blob("a", dg, from(data), 1ull << 40);
  ASSERT_TRUE(std::holds_alternative<RegistryError>(put));
  EXPECT_EQ(std::get<RegistryError>(put).code, RegistryErrorCode::internal);
  EXPECT_FALSE(store.blob("a", dg));
  EXPECT_EQ(temp_files(mnt / "artifacts" / "sha256"), 0u);
  auto id = store.start_upload("a");
  auto appended = store.append_upload("a", id, 0, from(data), 1ull << 40);
  EXPECT_TRUE(std::holds_alternative<RegistryError>(appended));
  EXPECT_TRUE(store.cancel_upload("a", id));
  EXPECT_EQ(temp_files(mnt / "artifacts" / "sha256"), 0u);
  // Room again: the same blob lands whole.
  std::string small = crypto::random_bytes(100000);
  auto ok_put = store.put_blob("a", digest_of(small), from(small), 1ull << 40);
  ASSERT_TRUE(std::holds_alternative<BlobInfo>(ok_put));
  EXPECT_EQ(*read_file(std::get<BlobInfo>(ok_put).path), small);
}
