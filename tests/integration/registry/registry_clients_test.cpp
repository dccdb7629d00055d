// The embedded registry against the real controller, with real registry clients (skopeo,
// podman, buildah, umoci from Debian) and the raw HTTP exchanges the spec defines.
#include <gtest/gtest.h>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include "common/atomic_file.hpp"
#include "common/crypto.hpp"
#include "controller/registry/oci_digest.hpp"
#include "tests/support/controller_process.hpp"

using namespace provisioner;
using namespace provisioner::test;
namespace fs = std::filesystem;

namespace {

constexpr const char* kCi = ControllerProcess::kCiToken;
constexpr const char* kOperator = ControllerProcess::kOperatorToken;
constexpr const char* kAuditor = ControllerProcess::kAuditorToken;
constexpr const char* kAdmin = ControllerProcess::kAdminToken;

struct Run {
  int code;
  std::string output;
};

Run run(const std::string& command) {
  std::string out;
  FILE* p = ::popen((command + " 2>&1").c_str(), "r");
  if (!p) return {-1, "popen failed"};
  std::array<char, 4096> buf{};
  while (auto n = std::fread(buf.data(), 1, buf.size(), p)) out.append(buf.data(), n);
  int status = ::pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

std::string sh_quote(const std::string& s) { return "'" + s + "'"; }

Headers bearer(const char* token, Headers more = {}) {
  more.push_back({"Authorization", std::string("Bearer ") + token});
  return more;
}

std::string error_code(const HttpResponse& r) {
  auto j = nlohmann::json::parse(r.body, nullptr, false);
  if (j.is_discarded() || !j.contains("errors") || j["errors"].empty()) return "(no error body: " + r.body + ")";
  return j["errors"][0]["code"].get<std::string>();
}

class Registry : public ::testing::Test {
 protected:
  void SetUp() override {
    // Retention 0 and a 2 s push grace: a GC may collect a blob 2 s after its last push
    // when no manifest names it.
    controller_ = std::make_unique<ControllerProcess>("[registry]\ngc_grace_seconds = 2\n", "text",
                                                      "retention_seconds = 0\n");
    controller_->start();
  }
  std::string host() const { return "127.0.0.1:" + std::to_string(controller_->port()); }
  std::string docker(const std::string& ref) const { return "docker://" + host() + "/" + ref; }
  HttpResponse req(const std::string& method, const std::string& target, const char* token = kCi,
                   Headers headers = {}, const std::string& body = "") const {
    return http_request(controller_->port(), method, target, token ? bearer(token, headers) : headers, body);
  }
  // Pushes a blob in one request; returns its digest.
  std::string push_blob(const std::string& repo, const std::string& data) const {
    auto digest = registry::digest_of(data).str();
    auto r = req("POST", "/v2/" + repo + "/blobs/uploads/?digest=" + digest, kCi, {}, data);
    EXPECT_EQ(r.status, 201) << r.body;
    return digest;
  }
  std::string image_manifest(const std::string& config, const std::string& layer, std::size_t layer_size,
                             const std::string& extra = "") const {
    return R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":")" +
           config + R"(","size":2},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":")" + layer +
           R"(","size":)" + std::to_string(layer_size) + "}]" + extra + "}";
  }
  // An OCI image layout built by umoci: a random file and a small text file.
  fs::path build_layout(const std::string& name) {
    auto layout = work_.path() / name;
    auto payload = work_.path() / (name + "-payload");
    fs::create_directories(payload / "etc");
    std::ofstream(payload / "etc" / "hello") << "hello from " << name << "\n";
    std::ofstream(payload / "random.bin", std::ios::binary) << crypto::random_bytes(2 << 20);
    auto l = layout.string();
    auto made = run("umoci init --layout " + l + " && umoci new --image " + l + ":v1 && umoci insert --image " + l +
                    ":v1 " + payload.string() + " /");
    EXPECT_EQ(made.code, 0) << made.output;
    return layout;
  }
  // skopeo's flags: --creds (inspect), --src-creds / --dest-creds (copy).
  static std::string creds(const char* token, const char* flag = "--creds") {
    return std::string(" ") + flag + " ci:" + token + " ";
  }

  TempDir work_;
  std::unique_ptr<ControllerProcess> controller_;
};

}  // namespace

TEST_F(Registry, SkopeoCopiesInAndBackWithEqualDigests) {
  auto layout = build_layout("app");
  auto in = run("skopeo copy --dest-tls-verify=false" + creds(kCi, "--dest-creds") + "oci:" + layout.string() + ":v1 " +
                docker("ci/app:v1"));
  ASSERT_EQ(in.code, 0) << in.output;
  auto local = run("skopeo inspect --format '{{.Digest}}' oci:" + layout.string() + ":v1");
  auto remote = run("skopeo inspect --tls-verify=false --format '{{.Digest}}'" + creds(kOperator) + docker("ci/app:v1"));
  ASSERT_EQ(remote.code, 0) << remote.output;
  EXPECT_EQ(local.output, remote.output);
  EXPECT_TRUE(local.output.starts_with("sha256:"));

  auto back = work_.path() / "back";
  auto out = run("skopeo copy --src-tls-verify=false" + creds(kOperator, "--src-creds") + docker("ci/app:v1") + " oci:" +
                 back.string() + ":v1");
  ASSERT_EQ(out.code, 0) << out.output;
  EXPECT_EQ(run("skopeo inspect --format '{{.Digest}}' oci:" + back.string() + ":v1").output, local.output);
  // The repository on disk is itself an OCI image layout that tools read directly.
  auto on_disk = run("skopeo inspect --format '{{.Digest}}' oci:" +
                     (controller_->data_dir() / "registry/repositories/ci/app/_oci").string() + ":v1");
  EXPECT_EQ(on_disk.output, local.output) << on_disk.output;

  // Between two repositories: the layers are mounted, not uploaded again.
  auto copy = run("skopeo --debug copy --src-tls-verify=false --dest-tls-verify=false" + creds(kCi, "--src-creds") +
                  creds(kCi, "--dest-creds") +
                  docker("ci/app:v1") + " " + docker("ci/copy:v1"));
  ASSERT_EQ(copy.code, 0) << copy.output;
  EXPECT_NE(copy.output.find("mount="), std::string::npos) << copy.output;
  EXPECT_EQ(run("skopeo inspect --tls-verify=false --format '{{.Digest}}'" + creds(kOperator) + docker("ci/copy:v1")).output,
            local.output);
}

TEST_F(Registry, PodmanAndBuildahPushAndPull) {
  auto layout = build_layout("tool");
  ASSERT_EQ(run("skopeo copy --dest-tls-verify=false" + creds(kCi, "--dest-creds") + "oci:" + layout.string() + ":v1 " +
                docker("tools/base:v1")).code, 0);
  auto storage = work_.path() / "containers";
  std::string podman = "podman --root " + (storage / "root").string() + " --runroot " + (storage / "run").string() +
                       " --storage-driver vfs --events-backend file ";
  auto authfile = (work_.path() / "auth.json").string();
  auto login = run(podman + "login --tls-verify=false --authfile " + authfile + " -u ci -p " + kCi + " " + host());
  ASSERT_EQ(login.code, 0) << login.output;
  auto pull = run(podman + "pull --tls-verify=false --authfile " + authfile + " " + host() + "/tools/base:v1");
  ASSERT_EQ(pull.code, 0) << pull.output;
  ASSERT_EQ(run(podman + "tag " + host() + "/tools/base:v1 " + host() + "/tools/podman:v2").code, 0);
  auto push = run(podman + "push --tls-verify=false --authfile " + authfile + " " + host() + "/tools/podman:v2");
  ASSERT_EQ(push.code, 0) << push.output;
  auto tags = req("GET", "/v2/tools/podman/tags/list", kOperator);
  ASSERT_EQ(tags.status, 200) << tags.body;
  EXPECT_EQ(tags.json()["tags"], nlohmann::json::array({"v2"}));

  std::string buildah = "buildah --root " + (storage / "broot").string() + " --runroot " + (storage / "brun").string() +
                        " --storage-driver vfs ";
  auto from = run(buildah + "from scratch");
  ASSERT_EQ(from.code, 0) << from.output;
  auto container = from.output.substr(0, from.output.find('\n'));
  ASSERT_EQ(run(buildah + "copy " + container + " " + (work_.path() / "tool-payload").string() + " /").code, 0);
  ASSERT_EQ(run(buildah + "commit " + container + " built").code, 0);
  auto bpush = run(buildah + "push --tls-verify=false" + creds(kCi) + "built " + docker("tools/buildah:v1"));
  ASSERT_EQ(bpush.code, 0) << bpush.output;
  auto check = run("skopeo inspect --tls-verify=false" + creds(kOperator) + docker("tools/buildah:v1"));
  ASSERT_EQ(check.code, 0) << check.output;
}

TEST_F(Registry, ChunkedUploadFollowsTheSpec) {
  std::string data = crypto::random_bytes(3 << 20);
  auto digest = registry::digest_of(data).str();
  auto start = req("POST", "/v2/ci/chunks/blobs/uploads/");
  ASSERT_EQ(start.status, 202) << start.body;
  auto location = start.header("location");
  ASSERT_TRUE(location.starts_with("/v2/ci/chunks/blobs/uploads/")) << location;
  EXPECT_EQ(start.header("docker-upload-uuid"), location.substr(location.rfind('/') + 1));

  std::string a = data.substr(0, 1 << 20), b = data.substr(1 << 20, 1 << 20), c = data.substr(2 << 20);
  auto p1 = req("PATCH", location, kCi, {{"Content-Range", "0-1048575"}, {"Content-Type", "application/octet-stream"}}, a);
  ASSERT_EQ(p1.status, 202) << p1.body;
  EXPECT_EQ(p1.header("range"), "0-1048575");  // inclusive
  // Out of order: the third piece before the second.
  auto bad = req("PATCH", location, kCi, {{"Content-Range", "2097152-3145727"}}, c);
  EXPECT_EQ(bad.status, 416);
  EXPECT_EQ(bad.header("range"), "0-1048575");
  // A Content-Range that does not match the body's length.
  EXPECT_EQ(req("PATCH", location, kCi, {{"Content-Range", "1048576-1048579"}}, b).status, 400);
  // The second piece, chunked on the wire.
  std::string chunked;
  for (std::size_t off = 0; off < b.size(); off += 300000) {
    auto piece = b.substr(off, 300000);
    char size[32];
    std::snprintf(size, sizeof size, "%zx\r\n", piece.size());
    chunked += size + piece + "\r\n";
  }
  chunked += "0\r\n\r\n";
  auto p2 = parse_response(raw_exchange(controller_->port(),
                                        "PATCH " + location + " HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + kCi +
                                            "\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + chunked));
  ASSERT_EQ(p2.status, 202) << p2.body;
  EXPECT_EQ(p2.header("range"), "0-2097151");
  auto status = req("GET", location);
  EXPECT_EQ(status.status, 204);
  EXPECT_EQ(status.header("range"), "0-2097151");
  // The last piece with the closing PUT; the digest is checked.
  auto wrong = req("PUT", location + "?digest=" + registry::digest_of("x").str(), kCi, {}, "");
  EXPECT_EQ(wrong.status, 400);
  EXPECT_EQ(error_code(wrong), "DIGEST_INVALID");
  // That ended the session (nothing half-written stays around).
  EXPECT_EQ(req("GET", location).status, 404);

  auto again = req("POST", "/v2/ci/chunks/blobs/uploads/");
  auto loc = again.header("location");
  ASSERT_EQ(req("PATCH", loc, kCi, {}, data.substr(0, 2 << 20)).status, 202);
  auto done = req("PUT", loc + "?digest=" + digest, kCi, {{"Content-Range", "2097152-3145727"}}, c);
  ASSERT_EQ(done.status, 201) << done.body;
  EXPECT_EQ(done.header("location"), "/v2/ci/chunks/blobs/" + digest);
  EXPECT_EQ(done.header("docker-content-digest"), digest);
  auto got = req("GET", "/v2/ci/chunks/blobs/" + digest, kOperator);
  ASSERT_EQ(got.status, 200);
  EXPECT_TRUE(got.body == data);

  // Cancel.
  auto third = req("POST", "/v2/ci/chunks/blobs/uploads/").header("location");
  EXPECT_EQ(req("DELETE", third).status, 204);
  EXPECT_EQ(error_code(req("GET", third)), "BLOB_UPLOAD_UNKNOWN");
}

TEST_F(Registry, BlobsServeRangesAndRefuseWhatIsNotThere) {
  std::string data = crypto::random_bytes(100000);
  auto digest = push_blob("ci/ranges", data);
  auto head = req("HEAD", "/v2/ci/ranges/blobs/" + digest, kOperator);
  EXPECT_EQ(head.status, 200);
  EXPECT_EQ(head.header("content-length"), "100000");
  EXPECT_EQ(head.header("docker-content-digest"), digest);
  auto one = req("GET", "/v2/ci/ranges/blobs/" + digest, kOperator, {{"Range", "bytes=99990-"}});
  ASSERT_EQ(one.status, 206);
  EXPECT_EQ(one.header("content-range"), "bytes 99990-99999/100000");
  EXPECT_TRUE(one.body == data.substr(99990));
  auto multi = req("GET", "/v2/ci/ranges/blobs/" + digest, kOperator, {{"Range", "bytes=0-9,500-509"}});
  ASSERT_EQ(multi.status, 206);
  EXPECT_TRUE(multi.header("content-type").starts_with("multipart/byteranges; boundary="));
  EXPECT_NE(multi.body.find(data.substr(500, 10)), std::string::npos);
  EXPECT_EQ(std::to_string(multi.body.size()), multi.header("content-length"));
  auto past = req("GET", "/v2/ci/ranges/blobs/" + digest, kOperator, {{"Range", "bytes=200000-"}});
  EXPECT_EQ(past.status, 416);
  EXPECT_EQ(past.header("content-range"), "bytes */100000");

  EXPECT_EQ(error_code(req("GET", "/v2/ci/ranges/blobs/" + registry::digest_of("nope").str(), kOperator)), "BLOB_UNKNOWN");
  EXPECT_EQ(error_code(req("GET", "/v2/ci/ranges/blobs/sha256:zz", kOperator)), "DIGEST_INVALID");
  // Another repository does not serve it until it is mounted there.
  EXPECT_EQ(req("GET", "/v2/ci/elsewhere/blobs/" + digest, kOperator).status, 404);
  auto denied_mount = req("POST", "/v2/ci/elsewhere/blobs/uploads/?mount=" + digest + "&from=ci/nothing");
  EXPECT_EQ(denied_mount.status, 202);  // the spec: a session starts instead
  auto mount = req("POST", "/v2/ci/elsewhere/blobs/uploads/?mount=" + digest + "&from=ci/ranges");
  ASSERT_EQ(mount.status, 201) << mount.body;
  EXPECT_EQ(mount.header("location"), "/v2/ci/elsewhere/blobs/" + digest);
  EXPECT_EQ(req("GET", "/v2/ci/elsewhere/blobs/" + digest, kOperator).status, 200);

  EXPECT_EQ(error_code(req("GET", "/v2/Bad_Name/blobs/" + digest, kOperator)), "NAME_INVALID");
  auto bad_digest = req("POST", "/v2/ci/x/blobs/uploads/?digest=" + registry::digest_of("other").str(), kCi, {}, data);
  EXPECT_EQ(bad_digest.status, 400);
  EXPECT_EQ(error_code(bad_digest), "DIGEST_INVALID");
  EXPECT_EQ(req("HEAD", "/v2/ci/x/blobs/" + registry::digest_of(data).str(), kOperator).status, 404);

  EXPECT_EQ(req("DELETE", "/v2/ci/elsewhere/blobs/" + digest, kCi).status, 403);  // delete is admin's
  EXPECT_EQ(req("DELETE", "/v2/ci/elsewhere/blobs/" + digest, kAdmin).status, 202);
  EXPECT_EQ(req("GET", "/v2/ci/elsewhere/blobs/" + digest, kOperator).status, 404);
}

TEST_F(Registry, ManifestsTagsReferrersAndDeletes) {
  auto config = push_blob("ci/m", "{}");
  std::string layer_bytes = crypto::random_bytes(1234);
  auto layer = push_blob("ci/m", layer_bytes);
  // A manifest that names a blob the repository does not hold is refused.
  auto missing = req("PUT", "/v2/ci/m/manifests/v1", kCi, {{"Content-Type", "application/vnd.oci.image.manifest.v1+json"}},
                     image_manifest(config, registry::digest_of("absent").str(), 6));
  EXPECT_EQ(missing.status, 400);
  EXPECT_EQ(error_code(missing), "MANIFEST_BLOB_UNKNOWN");
  auto invalid = req("PUT", "/v2/ci/m/manifests/v1", kCi, {{"Content-Type", "application/vnd.oci.image.manifest.v1+json"}},
                     "{\"schemaVersion\":2}");
  EXPECT_EQ(error_code(invalid), "MANIFEST_INVALID");
  EXPECT_EQ(req("PUT", "/v2/ci/m/manifests/v1", kCi, {}, std::string(5 << 20, ' ')).status, 413);

  auto text = image_manifest(config, layer, layer_bytes.size());
  auto digest = registry::digest_of(text).str();
  for (const char* tag : {"v1", "v2", "v3", "latest"}) {
    auto put = req("PUT", std::string("/v2/ci/m/manifests/") + tag, kCi,
                   {{"Content-Type", "application/vnd.oci.image.manifest.v1+json"}}, text);
    ASSERT_EQ(put.status, 201) << put.body;
    EXPECT_EQ(put.header("docker-content-digest"), digest);
  }
  auto by_tag = req("GET", "/v2/ci/m/manifests/v2", kOperator);
  ASSERT_EQ(by_tag.status, 200);
  EXPECT_EQ(by_tag.body, text);
  EXPECT_EQ(by_tag.header("content-type"), "application/vnd.oci.image.manifest.v1+json");
  EXPECT_EQ(req("HEAD", "/v2/ci/m/manifests/" + digest, kOperator).header("docker-content-digest"), digest);
  EXPECT_EQ(error_code(req("GET", "/v2/ci/m/manifests/v9", kOperator)), "MANIFEST_UNKNOWN");
  EXPECT_EQ(error_code(req("GET", "/v2/ci/none/manifests/v1", kOperator)), "NAME_UNKNOWN");

  // Tag listing with n/last pagination and a Link to the next page.
  auto page = req("GET", "/v2/ci/m/tags/list?n=2", kAuditor);
  ASSERT_EQ(page.status, 200) << page.body;
  EXPECT_EQ(page.json()["tags"], nlohmann::json::array({"latest", "v1"}));
  EXPECT_EQ(page.header("link"), "</v2/ci/m/tags/list?n=2&last=v1>; rel=\"next\"");
  auto next = req("GET", "/v2/ci/m/tags/list?n=2&last=v1", kAuditor);
  EXPECT_EQ(next.json()["tags"], nlohmann::json::array({"v2", "v3"}));
  EXPECT_EQ(next.header("link"), "");
  EXPECT_EQ(error_code(req("GET", "/v2/ci/none/tags/list", kAuditor)), "NAME_UNKNOWN");
  auto catalog = req("GET", "/v2/_catalog", kAuditor);
  ASSERT_EQ(catalog.status, 200);
  EXPECT_EQ(catalog.json()["repositories"], nlohmann::json::array({"ci/m"}));

  // An artifact that refers to the image: OCI-Subject on the push, then the referrers API.
  auto referrers = req("GET", "/v2/ci/m/referrers/" + digest, kOperator);
  ASSERT_EQ(referrers.status, 200);
  EXPECT_EQ(referrers.json()["manifests"].size(), 0u);  // an empty index when none
  auto sbom_layer = push_blob("ci/m", "sbom-bytes");
  auto sbom = image_manifest(config, sbom_layer, 10,
                             R"(,"artifactType":"application/vnd.example.sbom","subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":")" +
                                 digest + R"(","size":)" + std::to_string(text.size()) + "}");
  auto sbom_digest = registry::digest_of(sbom).str();
  auto put = req("PUT", "/v2/ci/m/manifests/" + sbom_digest, kCi,
                 {{"Content-Type", "application/vnd.oci.image.manifest.v1+json"}}, sbom);
  ASSERT_EQ(put.status, 201) << put.body;
  EXPECT_EQ(put.header("oci-subject"), digest);
  referrers = req("GET", "/v2/ci/m/referrers/" + digest, kOperator);
  ASSERT_EQ(referrers.json()["manifests"].size(), 1u);
  EXPECT_EQ(referrers.json()["manifests"][0]["digest"], sbom_digest);
  EXPECT_EQ(referrers.json()["manifests"][0]["artifactType"], "application/vnd.example.sbom");
  auto filtered = req("GET", "/v2/ci/m/referrers/" + digest + "?artifactType=application/x-other", kOperator);
  EXPECT_EQ(filtered.header("oci-filters-applied"), "artifactType");
  EXPECT_EQ(filtered.json()["manifests"].size(), 0u);

  // Deletes: a tag, then the manifest by digest with every tag on it.
  EXPECT_EQ(req("DELETE", "/v2/ci/m/manifests/v3", kCi).status, 403);
  EXPECT_EQ(req("DELETE", "/v2/ci/m/manifests/v3", kAdmin).status, 202);
  EXPECT_EQ(req("GET", "/v2/ci/m/manifests/v3", kOperator).status, 404);
  EXPECT_EQ(req("DELETE", "/v2/ci/m/manifests/" + digest, kAdmin).status, 202);
  EXPECT_EQ(req("GET", "/v2/ci/m/tags/list", kOperator).json()["tags"].size(), 0u);
  EXPECT_EQ(req("DELETE", "/v2/ci/m/manifests/" + digest, kAdmin).status, 404);

  // Garbage collection (admin): the deleted image's layer goes, the artifact's stays.
  EXPECT_EQ(req("POST", "/v2/_gc", kCi).status, 403);
  // Within the push grace nothing goes: an image's layers arrive before its manifest.
  auto early = req("POST", "/v2/_gc", kAdmin);
  ASSERT_EQ(early.status, 200) << early.body;
  EXPECT_EQ(req("GET", "/v2/ci/m/blobs/" + layer, kOperator).status, 200);
  std::this_thread::sleep_for(std::chrono::milliseconds(3100));  // past the grace, at 1 s resolution
  auto gc = req("POST", "/v2/_gc", kAdmin);
  ASSERT_EQ(gc.status, 200) << gc.body;
  EXPECT_GE(gc.json()["removed"].get<int>(), 1);
  EXPECT_EQ(req("GET", "/v2/ci/m/blobs/" + layer, kOperator).status, 404);
  EXPECT_EQ(req("GET", "/v2/ci/m/blobs/" + sbom_layer, kOperator).status, 200);
  EXPECT_EQ(req("GET", "/v2/ci/m/manifests/" + sbom_digest, kOperator).status, 200);
}

TEST_F(Registry, TokenFlowAndRoles) {
  auto ping = req("GET", "/v2/", nullptr);
  EXPECT_EQ(ping.status, 401);
  EXPECT_EQ(error_code(ping), "UNAUTHORIZED");
  auto challenge = ping.header("www-authenticate");
  EXPECT_TRUE(challenge.starts_with("Bearer realm=\"http://127.0.0.1:" + std::to_string(controller_->port()) + "/v2/token\""))
      << challenge;
  EXPECT_NE(challenge.find("service=\"provisioner\""), std::string::npos);
  // The realm is the address the client used, and only ever a plain host:port.
  auto odd_host = parse_response(raw_exchange(controller_->port(), "GET /v2/ HTTP/1.1\r\nHost: a\"b,evil\r\nConnection: close\r\n\r\n"));
  EXPECT_EQ(odd_host.header("www-authenticate"), "Bearer realm=\"http://localhost/v2/token\",service=\"provisioner\"");
  auto need_push = req("POST", "/v2/ci/t/blobs/uploads/", nullptr);
  EXPECT_NE(need_push.header("www-authenticate").find("scope=\"repository:ci/t:pull,push\""), std::string::npos);

  auto basic = [](const char* token) {
    return Headers{{"Authorization", "Basic " + crypto::base64_encode(std::string("ci:") + token)}};
  };
  EXPECT_EQ(req("GET", "/v2/token?service=provisioner&scope=repository:ci/t:pull,push", nullptr,
                {{"Authorization", "Basic " + crypto::base64_encode("ci:wrong")}}).status, 401);
  EXPECT_EQ(req("GET", "/v2/token", nullptr).status, 401);
  auto issued = req("GET", "/v2/token?service=provisioner&scope=repository%3Aci%2Ft%3Apull%2Cpush", nullptr, basic(kCi));
  ASSERT_EQ(issued.status, 200) << issued.body;
  auto token = issued.json()["token"].get<std::string>();
  EXPECT_EQ(issued.json()["access_token"], token);
  EXPECT_GT(issued.json()["expires_in"].get<int>(), 0);
  EXPECT_EQ(issued.body.find(kCi), std::string::npos);  // the API token is never echoed
  EXPECT_EQ(req("POST", "/v2/ci/t/blobs/uploads/", token.c_str()).status, 202);
  EXPECT_EQ(req("GET", "/v2/", token.c_str()).status, 200);
  // Issued for ci/t only: elsewhere the client is sent back for a new token.
  auto elsewhere = req("POST", "/v2/ci/u/blobs/uploads/", token.c_str());
  EXPECT_EQ(elsewhere.status, 401);
  EXPECT_NE(elsewhere.header("www-authenticate").find("repository:ci/u:pull,push"), std::string::npos);
  // An operator's token for push carries only pull: pushing is denied outright.
  auto op = req("GET", "/v2/token?service=provisioner&scope=repository:ci/t:pull,push", nullptr, basic(kOperator));
  auto op_token = op.json()["token"].get<std::string>();
  EXPECT_EQ(req("GET", "/v2/ci/t/tags/list", op_token.c_str()).status, 404);  // allowed, no tags yet
  auto denied = req("POST", "/v2/ci/t/blobs/uploads/", op_token.c_str());
  EXPECT_EQ(denied.status, 403);
  EXPECT_EQ(error_code(denied), "DENIED");
  // A registry token presented to the token endpoint never yields one that outlives it.
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  auto renewed = req("GET", "/v2/token?service=provisioner&scope=repository:ci/t:pull", nullptr,
                     {{"Authorization", "Basic " + crypto::base64_encode("ci:" + token)}});
  ASSERT_EQ(renewed.status, 200) << renewed.body;
  EXPECT_LT(renewed.json()["expires_in"].get<int>(), issued.json()["expires_in"].get<int>());
  // Refused before its body is read: the answer says the connection closes.
  auto early = req("PUT", "/v2/ci/t/manifests/v1", nullptr, {}, std::string(100000, 'x'));
  EXPECT_EQ(early.status, 401);
  EXPECT_EQ(early.header("connection"), "close");
  // API tokens work directly, as bearer or as Basic passwords.
  EXPECT_EQ(req("POST", "/v2/ci/t/blobs/uploads/", kOperator).status, 403);
  EXPECT_EQ(req("POST", "/v2/ci/t/blobs/uploads/", nullptr, basic(kCi)).status, 202);
  EXPECT_EQ(req("GET", "/v2/ci/t/manifests/v1", kAuditor).status, 403);  // the auditor lists, never pulls
  EXPECT_EQ(req("GET", "/v2/_catalog", kAuditor).status, 200);
  auto forged = token;
  forged[forged.size() - 1] = forged.back() == '0' ? '1' : '0';
  EXPECT_EQ(req("GET", "/v2/", forged.c_str()).status, 401);
  // Counted in /metrics by route template.
  auto metrics = controller_->get("/metrics").body;
  EXPECT_NE(metrics.find("route=\"/v2/{name}/blobs/uploads/\""), std::string::npos) << metrics.substr(0, 2000);
  // No token or secret in the log.
  auto log = controller_->log_text();
  for (const std::string& secret : {std::string(kCi), std::string(kOperator), token})
    EXPECT_EQ(log.find(secret), std::string::npos);
}

TEST(RegistryAnonymous, PullsWithoutCredentialsOnlyWhenConfigured) {
  ControllerProcess controller("[registry]\nanonymous_pull = true\n");
  controller.start();
  std::string data = "public bytes";
  auto digest = registry::digest_of(data).str();
  auto push = http_request(controller.port(), "POST", "/v2/pub/x/blobs/uploads/?digest=" + digest,
                           bearer(ControllerProcess::kCiToken), data);
  ASSERT_EQ(push.status, 201);
  EXPECT_EQ(http_request(controller.port(), "GET", "/v2/").status, 200);
  EXPECT_EQ(http_request(controller.port(), "GET", "/v2/pub/x/blobs/" + digest).body, data);
  EXPECT_EQ(http_request(controller.port(), "POST", "/v2/pub/x/blobs/uploads/").status, 401);
  auto anon = http_request(controller.port(), "GET", "/v2/token?scope=repository:pub/x:pull,push");
  ASSERT_EQ(anon.status, 200);
  auto token = anon.json()["token"].get<std::string>();
  EXPECT_EQ(http_request(controller.port(), "GET", "/v2/pub/x/blobs/" + digest, bearer(token.c_str())).status, 200);
  EXPECT_EQ(http_request(controller.port(), "POST", "/v2/pub/x/blobs/uploads/", bearer(token.c_str())).status, 403);
}

TEST_F(Registry, ConcurrentPushesOfOneLayerAndDroppedUploadsLeaveNothingHalfWritten) {
  std::string data = crypto::random_bytes(4 << 20);
  auto digest = registry::digest_of(data).str();
  std::vector<std::thread> threads;
  std::atomic<int> created{0};
  for (int i = 0; i < 6; ++i)
    threads.emplace_back([&, i] {
      auto r = req("POST", "/v2/ci/same" + std::to_string(i % 3) + "/blobs/uploads/?digest=" + digest, kCi, {}, data);
      if (r.status == 201) ++created;
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(created.load(), 6);
  for (int i = 0; i < 3; ++i)
    EXPECT_TRUE(req("GET", "/v2/ci/same" + std::to_string(i) + "/blobs/" + digest, kOperator).body == data);

  // A client that drops the connection halfway through a monolithic push.
  std::string other = crypto::random_bytes(4 << 20);
  auto other_digest = registry::digest_of(other).str();
  std::string head = "POST /v2/ci/drop/blobs/uploads/?digest=" + other_digest + " HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                     kCi + "\r\nContent-Length: " + std::to_string(other.size()) + "\r\n\r\n";
  auto partial = head + other.substr(0, other.size() / 2);
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(controller_->port());
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::send(fd, partial.data(), partial.size(), MSG_NOSIGNAL), static_cast<ssize_t>(partial.size()));
  auto sha_dir = controller_->data_dir() / "artifacts" / "sha256";
  auto temps = [&] {
    int n = 0;
    for (const auto& e : fs::directory_iterator(sha_dir)) n += e.path().filename().string().starts_with(".tmp-");
    return n;
  };
  // The push is under way (its temp file exists) before the client drops it.
  for (int i = 0; i < 100 && temps() == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_EQ(temps(), 1) << "the server never started writing the upload";
  ::close(fd);
  for (int i = 0; i < 100 && temps() > 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(temps(), 0);
  EXPECT_FALSE(fs::exists(sha_dir / other_digest.substr(7)));
  EXPECT_EQ(req("HEAD", "/v2/ci/drop/blobs/" + other_digest, kOperator).status, 404);
}

TEST_F(Registry, AJobGetsAPullTokenForItsImageOnly) {
  auto layout = build_layout("os");
  ASSERT_EQ(run("skopeo copy --dest-tls-verify=false" + creds(kCi, "--dest-creds") + "oci:" + layout.string() + ":v1 " +
                docker("os/debian:12")).code, 0);
  ASSERT_EQ(run("skopeo copy --dest-tls-verify=false" + creds(kCi, "--dest-creds") + "oci:" + layout.string() + ":v1 " +
                docker("os/secret:1")).code, 0);
  nlohmann::json recipe = nlohmann::json::parse(R"({
    "task_target": "provision-linux.target", "target_disk": "/dev/vda", "boot_mode": "bios", "hostname": "n1",
    "image": {"format": "rootfs-tar"}})");
  recipe["image"]["oci"] = host() + "/os/debian:12";
  auto created = req("POST", "/api/v1/jobs", kCi, {{"Content-Type", "application/json"}},
                     nlohmann::json{{"server", {{"serial", "SN-OCI"}}}, {"recipe", recipe}}.dump());
  ASSERT_EQ(created.status, 201) << created.body;
  auto job = controller_->wait_for_status(created.json()["id"].get<std::string>(), "provisioning");
  auto iso = work_.path() / "task.iso";
  auto url = job["media"]["task_iso"]["url"].get<std::string>();
  ASSERT_EQ(run("curl -sf -o " + iso.string() + " " + sh_quote(url)).code, 0);
  auto job_json = nlohmann::json::parse(run("isoinfo -R -i " + iso.string() + " -x /job.json").output);
  ASSERT_TRUE(job_json.contains("registry_auth")) << job_json.dump();
  auto token = job_json["registry_auth"][host()].get<std::string>();
  EXPECT_TRUE(token.starts_with("pvr1."));

  // The authfile the dispatcher writes from it lets skopeo pull that image, and only that.
  auto authfile = work_.path() / "registry-auth.json";
  std::ofstream(authfile) << nlohmann::json{{"auths", {{host(), {{"auth", crypto::base64_encode("job:" + token)}}}}}}.dump();
  auto a = " --authfile " + authfile.string() + " ";
  auto pulled = run("skopeo copy --src-tls-verify=false" + a + docker("os/debian:12") + " oci:" +
                    (work_.path() / "pulled").string() + ":x");
  EXPECT_EQ(pulled.code, 0) << pulled.output;
  EXPECT_NE(run("skopeo inspect --tls-verify=false" + a + docker("os/secret:1")).code, 0);
  EXPECT_NE(run("skopeo copy --dest-tls-verify=false" + a + "oci:" + layout.string() + ":v1 " + docker("os/debian:13")).code, 0);
  EXPECT_EQ(req("GET", "/v2/os/debian/tags/list", kOperator).json()["tags"], nlohmann::json::array({"12"}));
  // Never logged.
  EXPECT_EQ(controller_->log_text().find(token), std::string::npos);
}

TEST_F(Registry, CurlSeesTheSpecsErrorBodies) {
  auto url = "http://" + host();
  auto auth = std::string(" -H 'Authorization: Bearer ") + kOperator + "' ";
  auto code_of = [&](const std::string& args) {
    auto r = run("curl -s -w '\\n%{http_code}' " + args);
    auto nl = r.output.rfind('\n');
    auto body = nlohmann::json::parse(r.output.substr(0, nl), nullptr, false);
    auto code = body.is_object() && body.contains("errors") ? body["errors"][0]["code"].get<std::string>() : "(none)";
    return r.output.substr(nl + 1) + " " + code;
  };
  EXPECT_EQ(code_of(url + "/v2/"), "401 UNAUTHORIZED");
  EXPECT_EQ(code_of(auth + url + "/v2/Bad/manifests/x"), "400 NAME_INVALID");
  EXPECT_EQ(code_of(auth + url + "/v2/ci/none/manifests/x"), "404 NAME_UNKNOWN");
  EXPECT_EQ(code_of(auth + url + "/v2/ci/none/blobs/sha256:1234"), "400 DIGEST_INVALID");
  EXPECT_EQ(code_of(auth + url + "/v2/ci/none/blobs/" + registry::digest_of("x").str()), "404 BLOB_UNKNOWN");
  EXPECT_EQ(code_of(auth + "-X POST " + url + "/v2/ci/none/blobs/uploads/"), "403 DENIED");
  auto ci = std::string(" -H 'Authorization: Bearer ") + kCi + "' ";
  EXPECT_EQ(code_of(ci + "-X PATCH --data-binary x " + url + "/v2/ci/none/blobs/uploads/nope"), "404 BLOB_UPLOAD_UNKNOWN");
  EXPECT_EQ(code_of(ci + "-X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' --data-binary '{}' " + url +
                    "/v2/ci/none/manifests/v1"),
            "400 MANIFEST_INVALID");
}

// Over HTTPS (the API's [tls]): skopeo pushes and pulls through the edge's TLS, and blob
// bytes go out through OpenSSL instead of sendfile.
TEST(RegistryTls, SkopeoPushesAndPullsOverHttps) {
  TempDir tmp;
  auto cert = tmp.path() / "cert.pem", key = tmp.path() / "key.pem";
  ASSERT_EQ(run("openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 "
                "-keyout '" + key.string() + "' -out '" + cert.string() + "'").code, 0);
  ControllerProcess controller("[tls]\ncert = \"" + cert.string() + "\"\nkey = \"" + key.string() + "\"\n");
  controller.use_tls();
  controller.start();
  auto host = "127.0.0.1:" + std::to_string(controller.port());
  auto certs = tmp.path() / "certs";
  fs::create_directories(certs);
  fs::copy_file(cert, certs / "ca.crt");
  auto layout = tmp.path() / "layout";
  fs::create_directories(tmp.path() / "payload");
  std::ofstream(tmp.path() / "payload" / "big.bin", std::ios::binary) << crypto::random_bytes(3 << 20);
  ASSERT_EQ(run("umoci init --layout " + layout.string() + " && umoci new --image " + layout.string() + ":v1 && umoci insert --image " +
                layout.string() + ":v1 " + (tmp.path() / "payload").string() + " /").code, 0);
  auto push = run("skopeo copy --dest-cert-dir " + certs.string() + " --dest-creds ci:" + kCi + " oci:" + layout.string() +
                  ":v1 docker://" + host + "/tls/app:v1");
  ASSERT_EQ(push.code, 0) << push.output;
  auto back = tmp.path() / "back";
  auto pull = run("skopeo copy --src-cert-dir " + certs.string() + " --src-creds ci:" + kOperator + " docker://" + host +
                  "/tls/app:v1 oci:" + back.string() + ":v1");
  ASSERT_EQ(pull.code, 0) << pull.output;
  EXPECT_EQ(run("skopeo inspect --format '{{.Digest}}' oci:" + back.string() + ":v1").output,
            run("skopeo inspect --format '{{.Digest}}' oci:" + layout.string() + ":v1").output);
  // The challenge names the https realm.
  auto challenge = run("curl -s -D - -o /dev/null --cacert " + cert.string() + " https://" + host + "/v2/").output;
  EXPECT_NE(challenge.find("realm=\"https://" + host + "/v2/token\""), std::string::npos) << challenge;
}
