// Socket-free registry parsing: routes, names, tags, digests, queries and manifests.
#include <gtest/gtest.h>

#include "controller/registry/oci_digest.hpp"
#include "controller/registry/oci_manifest.hpp"
#include "controller/registry/oci_route.hpp"

using namespace provisioner::registry;
using K = Route::Kind;

TEST(OciRoute, RecognisesEveryEndpointWithNestedNames) {
  EXPECT_EQ(parse_route("/v2/").kind, K::base);
  EXPECT_EQ(parse_route("/v2").kind, K::base);
  EXPECT_EQ(parse_route("/v2/token").kind, K::token);
  EXPECT_EQ(parse_route("/v2/_catalog").kind, K::catalog);
  auto b = parse_route("/v2/library/debian/blobs/sha256:abc");
  EXPECT_EQ(b.kind, K::blob);
  EXPECT_EQ(b.name, "library/debian");
  EXPECT_EQ(b.reference, "sha256:abc");
  EXPECT_EQ(parse_route("/v2/a/blobs/uploads/").kind, K::upload_start);
  EXPECT_EQ(parse_route("/v2/a/blobs/uploads").kind, K::upload_start);
  auto u = parse_route("/v2/a/b/blobs/uploads/1234");
  EXPECT_EQ(u.kind, K::upload);
  EXPECT_EQ(u.name, "a/b");
  EXPECT_EQ(u.reference, "1234");
  auto m = parse_route("/v2/x/manifests/latest");
  EXPECT_EQ(m.kind, K::manifest);
  EXPECT_EQ(m.reference, "latest");
  EXPECT_EQ(parse_route("/v2/x/tags/list").kind, K::tags);
  EXPECT_EQ(parse_route("/v2/x/referrers/sha256:00").kind, K::referrers);
  // A repository may itself be called "blobs" or "manifests": the endpoint is read from the end.
  auto odd = parse_route("/v2/blobs/manifests/manifests/v1");
  EXPECT_EQ(odd.kind, K::manifest);
  EXPECT_EQ(odd.name, "blobs/manifests");
}

TEST(OciRoute, RefusesBadNamesAndUnknownEndpoints) {
  EXPECT_EQ(parse_route("/v2/UPPER/manifests/v1").kind, K::bad_name);
  EXPECT_EQ(parse_route("/v2/a//b/manifests/v1").kind, K::bad_name);
  EXPECT_EQ(parse_route("/v2/../manifests/v1").kind, K::bad_name);
  EXPECT_EQ(parse_route("/v2/_x/manifests/v1").kind, K::bad_name);
  EXPECT_EQ(parse_route("/v2/a/nothing/here").kind, K::not_found);
  EXPECT_EQ(parse_route("/v2/a/manifests/").kind, K::not_found);
  EXPECT_EQ(parse_route("/api/v1/jobs").kind, K::not_found);
}

TEST(OciRoute, NameAndTagGrammar) {
  for (const char* ok : {"a", "a0", "a.b", "a_b", "a__b", "a---b", "a/b/c", "library/debian-12.4"})
    EXPECT_TRUE(valid_repository_name(ok)) << ok;
  for (const char* bad : {"", "A", "a.", ".a", "a___b", "a/", "/a", "a//b", "a_.b", "a b", "a:b"})
    EXPECT_FALSE(valid_repository_name(bad)) << bad;
  EXPECT_FALSE(valid_repository_name(std::string(256, 'a')));
  EXPECT_TRUE(valid_repository_name(std::string(255, 'a')));
  for (const char* ok : {"v1", "latest", "_x", "1.2.3-rc_1", "A"}) EXPECT_TRUE(valid_tag(ok)) << ok;
  for (const char* bad : {"", ".x", "-x", "a:b", "a/b"}) EXPECT_FALSE(valid_tag(bad)) << bad;
  EXPECT_TRUE(valid_tag(std::string(128, 'a')));
  EXPECT_FALSE(valid_tag(std::string(129, 'a')));
}

TEST(OciRoute, QueryIsDecodedInOrder) {
  auto q = parse_query("scope=repository%3Aa%2Fb%3Apull%2Cpush&scope=x&n=10&empty&last=a+b");
  ASSERT_EQ(q.size(), 5u);
  EXPECT_EQ(q[0].second, "repository:a/b:pull,push");
  EXPECT_EQ(q[1].second, "x");
  EXPECT_EQ(query_value(q, "n"), "10");
  EXPECT_EQ(query_value(q, "empty"), "");
  EXPECT_EQ(query_value(q, "last"), "a b");
  EXPECT_EQ(query_value(q, "missing"), std::nullopt);
  EXPECT_TRUE(parse_query("").empty());
  EXPECT_EQ(parse_query("a=%zz%4")[0].second, "%zz%4");  // malformed escapes kept as they are
}

TEST(OciDigest, ParsesCanonicalSha256AndSha512Only) {
  std::string h64(64, 'a'), h128(128, '0');
  ASSERT_TRUE(parse_digest("sha256:" + h64));
  EXPECT_EQ(parse_digest("sha256:" + h64)->hex, h64);
  ASSERT_TRUE(parse_digest("sha512:" + h128));
  EXPECT_FALSE(parse_digest("sha256:" + std::string(64, 'A')));  // not canonical
  EXPECT_FALSE(parse_digest("sha256:" + h128));
  EXPECT_FALSE(parse_digest("sha512:" + h64));
  EXPECT_FALSE(parse_digest("md5:" + h64));
  EXPECT_FALSE(parse_digest(h64));
  EXPECT_FALSE(parse_digest("sha256:" + std::string(63, 'a') + "g"));
  EXPECT_EQ(digest_of("").str(), "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(digest_of("abc", "sha512").hex.substr(0, 16), "ddaf35a193617aba");
}

namespace {
std::string d(char c) { return "sha256:" + std::string(64, c); }
std::string image_manifest(const std::string& extra = "") {
  return R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",)"
         R"("config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":")" + d('a') + R"(","size":10},)"
         R"("layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":")" + d('b') +
         R"(","size":20}])" + extra + "}";
}
}  // namespace

TEST(OciManifest, ImageManifestListsConfigThenLayers) {
  auto m = parse_manifest(image_manifest(), std::nullopt);
  ASSERT_TRUE(m) << m.error().message;
  EXPECT_EQ(m->kind, ParsedManifest::Kind::image);
  ASSERT_EQ(m->blobs.size(), 2u);
  EXPECT_EQ(m->blobs[0].digest.str(), d('a'));
  EXPECT_EQ(m->blobs[1].size, 20u);
  EXPECT_EQ(m->artifact_type, "application/vnd.oci.image.config.v1+json");  // the referrers fallback
  EXPECT_FALSE(m->subject);
}

TEST(OciManifest, ArtifactWithSubjectAndArtifactType) {
  auto m = parse_manifest(image_manifest(R"(,"artifactType":"application/vnd.example.sbom",)"
                                         R"("subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":")" +
                                         d('c') + R"(","size":5},"annotations":{"k":"v"})"),
                          "application/vnd.oci.image.manifest.v1+json");
  ASSERT_TRUE(m) << m.error().message;
  EXPECT_EQ(m->artifact_type, "application/vnd.example.sbom");
  ASSERT_TRUE(m->subject);
  EXPECT_EQ(m->subject->digest.str(), d('c'));
  EXPECT_EQ(m->annotations["k"], "v");
}

TEST(OciManifest, IndexAndDockerTypes) {
  std::string index = R"({"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":")" +
                      d('e') + R"(","size":7,"platform":{"architecture":"amd64","os":"linux"}}]})";
  auto i = parse_manifest(index, "application/vnd.oci.image.index.v1+json");
  ASSERT_TRUE(i) << i.error().message;
  EXPECT_EQ(i->kind, ParsedManifest::Kind::index);
  EXPECT_EQ(i->manifests.size(), 1u);
  // Without mediaType or Content-Type, an index is told apart by its field.
  EXPECT_EQ(parse_manifest(index, std::nullopt)->kind, ParsedManifest::Kind::index);
  auto list = parse_manifest(index, "application/vnd.docker.distribution.manifest.list.v2+json");
  ASSERT_TRUE(list);
  EXPECT_EQ(list->kind, ParsedManifest::Kind::index);
  std::string docker = R"({"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",)"
                       R"("config":{"mediaType":"application/vnd.docker.container.image.v1+json","digest":")" + d('a') +
                       R"(","size":1},"layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":")" +
                       d('b') + R"(","size":2}]})";
  auto dm = parse_manifest(docker, "application/vnd.docker.distribution.manifest.v2+json");
  ASSERT_TRUE(dm) << dm.error().message;
  EXPECT_EQ(dm->blobs.size(), 2u);
  EXPECT_FALSE(dm->artifact_type);
}

TEST(OciManifest, RefusesWithTheFieldPath) {
  auto msg = [](const std::string& text, std::optional<std::string_view> ct = std::nullopt) {
    auto m = parse_manifest(text, ct);
    return m ? std::string("accepted") : m.error().message;
  };
  EXPECT_EQ(msg("[]"), "manifest: not a JSON object");
  EXPECT_EQ(msg("{not json"), "manifest: not a JSON object");
  EXPECT_TRUE(msg(image_manifest(), "application/vnd.oci.image.index.v1+json").starts_with("mediaType:"));
  EXPECT_TRUE(msg(image_manifest(), "text/plain").starts_with("mediaType:"));
  EXPECT_TRUE(msg(R"({"schemaVersion":2,"mediaType":"application/x-unknown"})").starts_with("unsupported"));
  EXPECT_TRUE(msg(R"({"schemaVersion":1,"config":{},"layers":[]})").starts_with("schemaVersion"));
  std::string bad_layer = image_manifest();
  bad_layer.replace(bad_layer.find(d('b')), 71, "sha256:nothex");
  EXPECT_EQ(msg(bad_layer), "layers[0].digest: not a sha256 or sha512 digest");
  std::string neg = image_manifest();
  neg.replace(neg.find("\"size\":20"), 9, "\"size\":-1");
  EXPECT_EQ(msg(neg), "layers[0].size: must be a non-negative integer");
  EXPECT_EQ(msg(R"({"schemaVersion":2,"layers":[]})"), "config: required");
  EXPECT_EQ(msg(image_manifest(R"(,"annotations":{"k":1})")), "annotations.k: must be a string");
}
