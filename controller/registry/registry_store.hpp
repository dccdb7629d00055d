#pragma once
// Where the registry keeps what is pushed to it.
//
// Blobs live in the artifact store's directory, by digest (`<blob_root>/sha256/<hex>`, and
// `<blob_root>/sha512/<hex>`), so a disk image pushed to the registry is also an artifact the
// artifact server can hand to a BMC or iPXE without a second copy. Manifests are blobs too.
//
// Each repository is an OCI image layout of its own under `<root>/repositories/<name>/_oci/`
// (`oci-layout`, `index.json` with one entry per tag, `blobs` → the shared blob directory), so
// `skopeo copy oci:<dir>:<tag>` or umoci reads it directly. (`_oci` cannot clash with a nested
// repository's name: a name component never starts with `_`.) What the distribution API needs
// beyond that — which blobs a repository holds, untagged manifests, subjects for the referrers
// API — is in `<root>/repositories/<name>/_repo.json`. Every file is replaced atomically.
//
// Writes: a blob is streamed into a temp file beside its final place, hashed on the way, its
// digest checked, fsynced and renamed; a manifest is stored only when every blob and manifest
// it names is present in its repository. Nothing partial is ever visible, whatever happens to
// the connection or the disk.
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/result.hpp"
#include "controller/artifacts/artifact_store.hpp"
#include "controller/registry/oci_digest.hpp"
#include "controller/registry/oci_manifest.hpp"

namespace provisioner::registry {

using artifacts::ReadFn;

struct BlobInfo {
  Digest digest;
  std::uint64_t size = 0;
  std::filesystem::path path;
};

struct UploadState {
  std::string id;
  std::uint64_t offset = 0;  // bytes received so far
};

struct StoredManifest {
  Digest digest;
  std::string media_type;
  std::string bytes;
};

struct ManifestPut {
  Digest digest;
  std::optional<Digest> subject;
};

// Registry-level errors the HTTP side maps to the spec's codes.
enum class RegistryErrorCode {
  blob_unknown, blob_upload_invalid, blob_upload_unknown, digest_invalid, manifest_blob_unknown,
  manifest_invalid, manifest_unknown, manifest_too_large, name_unknown, size_invalid, range_invalid, tag_exists,
  internal,
};

struct RegistryError {
  RegistryErrorCode code;
  std::string message;
};

template <typename T>
using RResult = std::variant<T, RegistryError>;

class RegistryStore {
 public:
  // `push_grace`: a blob pushed (or pushed again, or mounted) within it is never collected,
  // whatever the artifact retention: a push in progress sends its layers before its manifest.
  RegistryStore(std::filesystem::path root, std::filesystem::path blob_root,
                std::uint64_t max_manifest_bytes = 4 << 20, std::chrono::seconds push_grace = std::chrono::hours(1));
  ~RegistryStore();
  // Loads every repository's state (and creates the folders).
  Status open();

  // ---- blobs
  // A blob this repository holds (pushed or mounted into it, or named by one of its manifests).
  std::optional<BlobInfo> blob(const std::string& repo, const Digest& digest) const;
  // Cross-repository mount: true when `from` holds the blob (it is then linked into `repo`).
  bool mount(const std::string& repo, const std::string& from, const Digest& digest);
  // Removes the blob from the repository (the bytes go at the next GC if nothing uses them).
  bool unlink_blob(const std::string& repo, const Digest& digest);

  // ---- uploads (sessions live in memory; a restart forgets them and clients start again;
  // a session idle past the push grace ends at the next GC)
  std::string start_upload(const std::string& repo);
  std::optional<UploadState> upload(const std::string& repo, const std::string& id) const;
  // Appends the stream at `offset` (which must be where the upload stands, else
  // range_invalid). Returns the new offset. On a read error what was appended stays
  // (the client may resume from the reported offset).
  RResult<std::uint64_t> append_upload(const std::string& repo, const std::string& id,
                                       std::optional<std::uint64_t> offset, const ReadFn& read,
                                       std::uint64_t max_bytes);
  // Checks the digest, commits the blob and links it into the repository; the session ends
  // either way except on an I/O error.
  RResult<BlobInfo> finish_upload(const std::string& repo, const std::string& id, const Digest& expected);
  bool cancel_upload(const std::string& repo, const std::string& id);
  // Unlinks the blob from `repo` and deletes its bytes when nothing else holds or names it
  // (a refused push must not leave its content readable). False when it stays.
  bool discard_blob(const std::string& repo, const Digest& digest);
  // A whole blob in one request (POST ?digest=), or a final PUT with a body.
  RResult<BlobInfo> put_blob(const std::string& repo, const Digest& expected, const ReadFn& read,
                             std::uint64_t max_bytes);

  // ---- manifests and tags
  // `reference` is a tag or a digest. The manifest must not exceed max_manifest_bytes.
  // `immutable_tag`: a tag that already names another manifest is not moved (tag_exists).
  RResult<ManifestPut> put_manifest(const std::string& repo, const std::string& reference, const std::string& bytes,
                                    std::optional<std::string_view> content_type, bool immutable_tag = false);
  RResult<StoredManifest> get_manifest(const std::string& repo, const std::string& reference) const;
  // By tag: removes the tag. By digest: removes the manifest and every tag pointing to it.
  RResult<bool> delete_manifest(const std::string& repo, const std::string& reference);
  std::optional<std::vector<std::string>> tags(const std::string& repo) const;  // sorted; nullopt: no repo
  std::vector<std::string> repositories() const;                               // sorted
  // The referrers of `subject` as an OCI image index (empty `manifests` when none).
  nlohmann::json referrers(const std::string& repo, const Digest& subject,
                           std::optional<std::string> artifact_type) const;

  // ---- garbage collection
  // Runs `sweep` with every sha256 digest the registry still needs added to `roots` (what any
  // manifest names, and blobs pushed within the push grace), holding the registry's lock so no
  // manifest lands between marking and sweeping; sha512 blobs are swept here by the same rules.
  Result<artifacts::GcReport> collect(
      std::set<std::string> roots, std::chrono::seconds retention,
      const std::function<Result<artifacts::GcReport>(const std::set<std::string>&, std::chrono::seconds)>& sweep);

  std::filesystem::path layout_dir(const std::string& repo) const;
  std::uint64_t max_manifest_bytes() const { return max_manifest_bytes_; }

 private:
  struct Manifest {
    std::string media_type;
    std::uint64_t size = 0;
    std::optional<std::string> artifact_type;
    std::optional<std::string> subject;
    nlohmann::json annotations;
    std::vector<std::string> refs;  // digests of blobs and child manifests it names
  };
  struct Repo {
    std::map<std::string, Manifest> manifests;  // by digest string
    std::map<std::string, std::string> tags;    // tag → digest string
    std::set<std::string> blobs;                // digest strings
  };
  struct Upload;

  std::filesystem::path blob_path(const Digest& d) const;
  Status save(const std::string& name, const Repo& repo) const;  // under mutex_
  // Checks the digest, then (under the lock) keeps an identical stored blob or renames the
  // temp file into place, and links the blob into `repo`.
  RResult<BlobInfo> commit_temp(const std::string& repo, int fd, const std::filesystem::path& temp,
                                const Digest& expected, const Digest& actual, std::uint64_t size);
  bool holds(const Repo& repo, const std::string& digest) const;

  std::filesystem::path root_, blob_root_;
  std::uint64_t max_manifest_bytes_;
  std::chrono::seconds push_grace_;
  mutable std::mutex mutex_;  // repos_ and uploads_
  std::map<std::string, Repo> repos_;
  std::map<std::string, std::shared_ptr<Upload>> uploads_;
};

}  // namespace provisioner::registry
