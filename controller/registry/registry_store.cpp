#include "controller/registry/registry_store.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>

#include "common/atomic_file.hpp"
#include "common/crypto.hpp"
#include "controller/registry/oci_route.hpp"

namespace provisioner::registry {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr std::size_t kIoBuffer = 1 << 20;
constexpr std::size_t kZeroProbe = 64 * 1024;  // all-zero pieces of this size become holes
constexpr std::string_view kTempPrefix = ".tmp-";  // the artifact store's: its GC sweeps stale ones
constexpr std::chrono::seconds kTempGrace{3600};

RegistryError err(RegistryErrorCode code, std::string message) { return RegistryError{code, std::move(message)}; }

RegistryError io(std::string what, int e = errno) {
  return err(RegistryErrorCode::internal, what + ": " + std::strerror(e));
}

bool all_zero(const char* p, std::size_t n) { return n == 0 || (p[0] == 0 && std::memcmp(p, p + 1, n - 1) == 0); }

// Writes at `offset`, leaving all-zero pieces as holes (the file is new: a hole reads as zeros).
// Raw disk images are mostly zeros, and the >10 GiB test pushes a sparse file.
bool write_sparse(int fd, const char* p, std::size_t n, std::uint64_t offset) {
  while (n > 0) {
    std::size_t piece = std::min(n, kZeroProbe);
    if (!all_zero(p, piece)) {
      std::size_t done = 0;
      while (done < piece) {
        ssize_t w = ::pwrite(fd, p + done, piece - done, static_cast<off_t>(offset + done));
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return false;
        done += static_cast<std::size_t>(w);
      }
    }
    p += piece;
    n -= piece;
    offset += piece;
  }
  return true;
}

Status fsync_dir(const fs::path& dir) {
  int d = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (d < 0) return make_error(ErrorKind::internal, "open " + dir.string() + ": " + std::strerror(errno));
  int rc = ::fsync(d);
  ::close(d);
  if (rc != 0) return make_error(ErrorKind::internal, "fsync " + dir.string());
  return Ok{};
}

// A temp file in `dir`; -1 on failure.
int create_temp(const fs::path& dir, fs::path& path) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  for (int attempt = 0; attempt < 8; ++attempt) {
    path = dir / (std::string(kTempPrefix) + "oci-" + crypto::random_token(8));
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd >= 0 || errno != EEXIST) return fd;
  }
  return -1;
}

std::optional<Digest> rehash(int fd, const std::string& algorithm) {
  Hasher h(algorithm);
  std::string buf(kIoBuffer, '\0');
  off_t off = 0;
  for (;;) {
    ssize_t r = ::pread(fd, buf.data(), buf.size(), off);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return std::nullopt;
    if (r == 0) break;
    h.update(buf.data(), static_cast<std::size_t>(r));
    off += r;
  }
  return h.finish();
}

bool is_digest_reference(const std::string& reference) { return reference.find(':') != std::string::npos; }

// Marks a blob as just pushed, the way the artifact store marks a registration (its GC counts
// retention from it).
void touch_pushed(const fs::path& p) { touch_atime(p); }

std::chrono::system_clock::time_point last_pushed(const struct stat& st) {
  return std::chrono::system_clock::from_time_t(std::max(st.st_atime, st.st_mtime));
}

}  // namespace

struct RegistryStore::Upload {
  std::string repo;
  fs::path path;
  int fd = -1;
  std::atomic<std::uint64_t> offset{0};  // read by status requests while a PATCH writes
  Hasher sha256{"sha256"};
  bool busy = false;                      // under mutex_
  std::chrono::steady_clock::time_point last_used = std::chrono::steady_clock::now();  // under mutex_
  ~Upload() {
    if (fd >= 0) ::close(fd);
    if (!path.empty()) ::unlink(path.c_str());
  }
};

RegistryStore::RegistryStore(fs::path root, fs::path blob_root, std::uint64_t max_manifest_bytes,
                             std::chrono::seconds push_grace)
    : root_(std::move(root)), blob_root_(std::move(blob_root)), max_manifest_bytes_(max_manifest_bytes),
      push_grace_(push_grace) {}

RegistryStore::~RegistryStore() = default;

fs::path RegistryStore::blob_path(const Digest& d) const { return blob_root_ / d.algorithm / d.hex; }

fs::path RegistryStore::layout_dir(const std::string& repo) const { return root_ / "repositories" / repo / "_oci"; }

Status RegistryStore::open() {
  std::error_code ec;
  fs::create_directories(root_ / "repositories", ec);
  fs::create_directories(blob_root_ / "sha256", ec);
  fs::create_directories(blob_root_ / "sha512", ec);
  if (ec) return make_error(ErrorKind::internal, "create " + root_.string() + ": " + ec.message());
  std::lock_guard lock(mutex_);
  auto base = root_ / "repositories";
  for (auto it = fs::recursive_directory_iterator(base, ec); !ec && it != fs::recursive_directory_iterator();
       it.increment(ec)) {
    if (it->path().filename() == "_oci") {
      it.disable_recursion_pending();
      continue;
    }
    if (it->path().filename() != "_repo.json") continue;
    auto name = fs::relative(it->path().parent_path(), base).generic_string();
    if (!valid_repository_name(name)) continue;
    auto text = read_file(it->path());
    if (!text) return text.error();
    json j = json::parse(*text, nullptr, false);
    if (j.is_discarded() || !j.is_object())
      return make_error(ErrorKind::internal, "registry state unreadable: " + it->path().string());
    Repo repo;
    const json manifests = j.value("manifests", json::object());  // named: a temporary would dangle
    for (const auto& [digest, m] : manifests.items()) {
      Manifest man;
      man.media_type = m.value("mediaType", "");
      man.size = m.value("size", std::uint64_t{0});
      if (m.contains("artifactType")) man.artifact_type = m.at("artifactType").get<std::string>();
      if (m.contains("subject")) man.subject = m.at("subject").get<std::string>();
      man.annotations = m.value("annotations", json());
      man.refs = m.value("refs", std::vector<std::string>{});
      repo.manifests.emplace(digest, std::move(man));
    }
    repo.tags = j.value("tags", std::map<std::string, std::string>{});
    auto blobs = j.value("blobs", std::vector<std::string>{});
    repo.blobs.insert(blobs.begin(), blobs.end());
    repos_.emplace(name, std::move(repo));
  }
  if (ec) return make_error(ErrorKind::internal, "scan " + base.string() + ": " + ec.message());
  return Ok{};
}

Status RegistryStore::save(const std::string& name, const Repo& repo) const {
  json manifests = json::object();
  json index = {{"schemaVersion", 2}, {"mediaType", kOciIndex}, {"manifests", json::array()}};
  std::set<std::string> tagged;
  for (const auto& [tag, digest] : repo.tags) {
    auto m = repo.manifests.find(digest);
    if (m == repo.manifests.end()) continue;
    tagged.insert(digest);
    index["manifests"].push_back({{"mediaType", m->second.media_type},
                                  {"digest", digest},
                                  {"size", m->second.size},
                                  {"annotations", {{"org.opencontainers.image.ref.name", tag}}}});
  }
  for (const auto& [digest, m] : repo.manifests) {
    json e = {{"mediaType", m.media_type}, {"size", m.size}, {"refs", m.refs}};
    if (m.artifact_type) e["artifactType"] = *m.artifact_type;
    if (m.subject) e["subject"] = *m.subject;
    if (m.annotations.is_object()) e["annotations"] = m.annotations;
    manifests[digest] = std::move(e);
    if (!tagged.count(digest))
      index["manifests"].push_back({{"mediaType", m.media_type}, {"digest", digest}, {"size", m.size}});
  }
  json state = {{"manifests", manifests}, {"tags", repo.tags}, {"blobs", repo.blobs}};
  auto dir = root_ / "repositories" / name;
  auto layout = dir / "_oci";
  std::error_code ec;
  fs::create_directories(layout, ec);
  if (ec) return make_error(ErrorKind::internal, "create " + layout.string() + ": " + ec.message());
  if (!fs::exists(layout / "oci-layout", ec)) {
    if (auto s = write_file_atomically(layout / "oci-layout", R"({"imageLayoutVersion":"1.0.0"})"); !s) return s;
  }
  if (!fs::is_symlink(layout / "blobs", ec)) {
    fs::create_directory_symlink(fs::relative(fs::absolute(blob_root_), fs::absolute(layout)), layout / "blobs", ec);
    if (ec) return make_error(ErrorKind::internal, "link " + (layout / "blobs").string() + ": " + ec.message());
  }
  // State first: it is the source of truth; index.json is derived from it.
  if (auto s = write_file_atomically(dir / "_repo.json", state.dump()); !s) return s;
  return write_file_atomically(layout / "index.json", index.dump());
}

bool RegistryStore::holds(const Repo& repo, const std::string& digest) const { return repo.blobs.count(digest) > 0; }

std::optional<BlobInfo> RegistryStore::blob(const std::string& repo, const Digest& digest) const {
  {
    std::lock_guard lock(mutex_);
    auto r = repos_.find(repo);
    if (r == repos_.end()) return std::nullopt;
    if (!holds(r->second, digest.str()) && !r->second.manifests.count(digest.str())) return std::nullopt;
  }
  auto p = blob_path(digest);
  struct stat st{};
  if (::stat(p.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return std::nullopt;
  return BlobInfo{digest, static_cast<std::uint64_t>(st.st_size), p};
}

bool RegistryStore::mount(const std::string& repo, const std::string& from, const Digest& digest) {
  std::lock_guard lock(mutex_);  // GC's lock: the blob stays while it is checked and linked
  auto source = repos_.find(from);
  if (source == repos_.end() || !source->second.blobs.count(digest.str())) return false;
  auto path = blob_path(digest);
  if (::access(path.c_str(), F_OK) != 0) return false;
  touch_pushed(path);
  auto& r = repos_[repo];
  if (r.blobs.insert(digest.str()).second) {
    if (auto s = save(repo, r); !s) {
      r.blobs.erase(digest.str());
      return false;
    }
  }
  return true;
}

bool RegistryStore::unlink_blob(const std::string& repo, const Digest& digest) {
  std::lock_guard lock(mutex_);
  auto r = repos_.find(repo);
  if (r == repos_.end() || !r->second.blobs.erase(digest.str())) return false;
  if (!save(repo, r->second)) {
    r->second.blobs.insert(digest.str());  // memory follows what is on disk
    return false;
  }
  return true;
}

std::string RegistryStore::start_upload(const std::string& repo) {
  auto up = std::make_shared<Upload>();
  up->repo = repo;
  std::string id = crypto::random_token(16);
  up->fd = create_temp(blob_root_ / "sha256", up->path);
  if (up->fd < 0) up->path.clear();
  std::lock_guard lock(mutex_);
  uploads_[id] = up;
  return id;
}

std::optional<UploadState> RegistryStore::upload(const std::string& repo, const std::string& id) const {
  std::lock_guard lock(mutex_);
  auto it = uploads_.find(id);
  if (it == uploads_.end() || it->second->repo != repo || it->second->fd < 0) return std::nullopt;
  return UploadState{id, it->second->offset.load()};
}

RResult<std::uint64_t> RegistryStore::append_upload(const std::string& repo, const std::string& id,
                                                    std::optional<std::uint64_t> offset, const ReadFn& read,
                                                    std::uint64_t max_bytes) {
  std::shared_ptr<Upload> up;
  {
    std::lock_guard lock(mutex_);
    auto it = uploads_.find(id);
    if (it == uploads_.end() || it->second->repo != repo || it->second->fd < 0)
      return err(RegistryErrorCode::blob_upload_unknown, "no such upload");
    up = it->second;
    // Another request is writing this upload, or the chunk does not start where it stands.
    if (up->busy || (offset && *offset != up->offset))
      return err(RegistryErrorCode::range_invalid, "the chunk does not start at offset " + std::to_string(up->offset));
    up->busy = true;
    up->last_used = std::chrono::steady_clock::now();
  }
  std::string buf(kIoBuffer, '\0');
  std::optional<RegistryError> failure;
  for (;;) {
    auto n = read(buf.data(), buf.size());
    if (!n) {
      failure = err(RegistryErrorCode::blob_upload_invalid, "the upload was interrupted: " + n.error().message);
      break;
    }
    if (*n == 0) break;
    if (up->offset + *n > max_bytes) {
      failure = err(RegistryErrorCode::size_invalid, "the blob exceeds the registry's size limit");
      break;
    }
    if (!write_sparse(up->fd, buf.data(), *n, up->offset)) {
      failure = io("write upload");
      break;
    }
    up->sha256.update(buf.data(), *n);
    up->offset += *n;
  }
  // Activity the artifact store's GC sees (it sweeps temp files by their times): zero runs
  // become holes and write nothing, so the time is set here.
  ::futimens(up->fd, nullptr);
  std::lock_guard lock(mutex_);
  up->busy = false;
  up->last_used = std::chrono::steady_clock::now();
  if (failure) return *failure;
  return up->offset.load();
}

RResult<BlobInfo> RegistryStore::commit_temp(const std::string& repo, int fd, const fs::path& temp,
                                             const Digest& expected, const Digest& actual, std::uint64_t size) {
  if (!(actual == expected)) return err(RegistryErrorCode::digest_invalid, "the content's digest is " + actual.str());
  if (::ftruncate(fd, static_cast<off_t>(size)) != 0) return io("truncate upload");  // trailing holes
  if (::fsync(fd) != 0) return io("fsync upload");
  auto final = blob_path(expected);
  std::error_code ec;
  fs::create_directories(final.parent_path(), ec);
  bool renamed = false;
  {
    // Under the lock GC holds while it marks and sweeps: the blob cannot vanish between the
    // check that it exists, the link and the answer.
    std::lock_guard lock(mutex_);
    if (::access(final.c_str(), F_OK) == 0) {
      ::unlink(temp.c_str());  // identical content is already stored: keep that one
      touch_pushed(final);
    } else {
      if (::rename(temp.c_str(), final.c_str()) != 0) return io("commit blob");
      renamed = true;
    }
    auto& r = repos_[repo];
    if (r.blobs.insert(expected.str()).second) {
      if (auto s = save(repo, r); !s) {
        r.blobs.erase(expected.str());
        return err(RegistryErrorCode::internal, s.error().message);
      }
    }
  }
  if (renamed)
    if (auto s = fsync_dir(final.parent_path()); !s) return err(RegistryErrorCode::internal, s.error().message);
  return BlobInfo{expected, size, final};
}

RResult<BlobInfo> RegistryStore::finish_upload(const std::string& repo, const std::string& id,
                                               const Digest& expected) {
  std::shared_ptr<Upload> up;
  {
    std::lock_guard lock(mutex_);
    auto it = uploads_.find(id);
    if (it == uploads_.end() || it->second->repo != repo || it->second->fd < 0)
      return err(RegistryErrorCode::blob_upload_unknown, "no such upload");
    if (it->second->busy) return err(RegistryErrorCode::range_invalid, "the upload is still being written");
    up = it->second;
    uploads_.erase(it);  // the session ends here, whatever the outcome
  }
  std::optional<Digest> actual;
  if (expected.algorithm == "sha256")
    actual = up->sha256.finish();
  else
    actual = rehash(up->fd, expected.algorithm);
  if (!actual) return io("read upload");
  auto committed = commit_temp(repo, up->fd, up->path, expected, *actual, up->offset);
  if (std::holds_alternative<BlobInfo>(committed)) up->path.clear();  // renamed or dropped: nothing to remove
  return committed;
}

bool RegistryStore::discard_blob(const std::string& repo, const Digest& digest) {
  std::lock_guard lock(mutex_);
  auto r = repos_.find(repo);
  if (r == repos_.end()) return false;
  auto key = digest.str();
  for (const auto& [name, other] : repos_) {
    if (name != repo && other.blobs.count(key)) return false;  // another repository holds it
    for (const auto& [d, m] : other.manifests)
      if (d == key || std::find(m.refs.begin(), m.refs.end(), key) != m.refs.end()) return false;
  }
  r->second.blobs.erase(key);
  if (!save(repo, r->second)) {
    r->second.blobs.insert(key);
    return false;
  }
  return ::unlink(blob_path(digest).c_str()) == 0;
}

bool RegistryStore::cancel_upload(const std::string& repo, const std::string& id) {
  std::lock_guard lock(mutex_);
  auto it = uploads_.find(id);
  if (it == uploads_.end() || it->second->repo != repo || it->second->busy) return false;
  uploads_.erase(it);
  return true;
}

RResult<BlobInfo> RegistryStore::put_blob(const std::string& repo, const Digest& expected, const ReadFn& read,
                                          std::uint64_t max_bytes) {
  fs::path temp;
  int fd = create_temp(blob_root_ / expected.algorithm, temp);
  if (fd < 0) return io("create upload");
  struct Cleanup {
    int fd;
    fs::path& path;
    ~Cleanup() {
      ::close(fd);
      if (!path.empty()) ::unlink(path.c_str());
    }
  } cleanup{fd, temp};
  Hasher h(expected.algorithm);
  std::string buf(kIoBuffer, '\0');
  std::uint64_t size = 0;
  for (;;) {
    auto n = read(buf.data(), buf.size());
    if (!n) return err(RegistryErrorCode::blob_upload_invalid, "the upload was interrupted: " + n.error().message);
    if (*n == 0) break;
    if (size + *n > max_bytes) return err(RegistryErrorCode::size_invalid, "the blob exceeds the registry's size limit");
    if (!write_sparse(fd, buf.data(), *n, size)) return io("write upload");
    h.update(buf.data(), *n);
    size += *n;
  }
  auto committed = commit_temp(repo, fd, temp, expected, h.finish(), size);
  if (std::holds_alternative<BlobInfo>(committed)) temp.clear();
  return committed;
}

RResult<ManifestPut> RegistryStore::put_manifest(const std::string& repo, const std::string& reference,
                                                 const std::string& bytes,
                                                 std::optional<std::string_view> content_type, bool immutable_tag) {
  if (bytes.size() > max_manifest_bytes_)
    return err(RegistryErrorCode::manifest_too_large, "the manifest exceeds " + std::to_string(max_manifest_bytes_) + " bytes");
  auto parsed = parse_manifest(bytes, content_type);
  if (!parsed) return err(RegistryErrorCode::manifest_invalid, parsed.error().message);
  Digest digest;
  std::optional<std::string> tag;
  if (is_digest_reference(reference)) {
    auto want = parse_digest(reference);
    if (!want) return err(RegistryErrorCode::digest_invalid, "the reference is not a valid digest");
    digest = digest_of(bytes, want->algorithm);
    if (!(digest == *want)) return err(RegistryErrorCode::digest_invalid, "the manifest's digest is " + digest.str());
  } else {
    if (!valid_tag(reference)) return err(RegistryErrorCode::manifest_invalid, "tag: not a valid tag");
    tag = reference;
    digest = digest_of(bytes);
  }
  // The bytes first, content-addressed like any blob: a manifest that fails the checks below
  // leaves only an unreferenced blob behind, which GC removes.
  auto path = blob_path(digest);
  if (::access(path.c_str(), F_OK) != 0)
    if (auto s = write_file_atomically(path, bytes); !s) return err(RegistryErrorCode::internal, s.error().message);

  std::lock_guard lock(mutex_);
  // GC may have swept the bytes of an older identical manifest meanwhile: put them back.
  if (::access(path.c_str(), F_OK) != 0)
    if (auto s = write_file_atomically(path, bytes); !s) return err(RegistryErrorCode::internal, s.error().message);
  auto& r = repos_[repo];
  Manifest m;
  m.media_type = parsed->media_type;
  m.size = bytes.size();
  m.artifact_type = parsed->artifact_type;
  m.annotations = parsed->annotations;
  if (parsed->subject) m.subject = parsed->subject->digest.str();
  for (const auto& d : parsed->blobs) {
    if (d.foreign) continue;
    auto key = d.digest.str();
    if (!holds(r, key)) {
      if (r.blobs.empty() && r.manifests.empty() && r.tags.empty()) repos_.erase(repo);
      return err(RegistryErrorCode::manifest_blob_unknown, "blob unknown to the repository: " + key);
    }
    struct stat st{};
    if (::stat(blob_path(d.digest).c_str(), &st) != 0)
      return err(RegistryErrorCode::manifest_blob_unknown, "blob unknown to the repository: " + key);
    if (static_cast<std::uint64_t>(st.st_size) != d.size)
      return err(RegistryErrorCode::manifest_invalid,
                 "size of " + key + " is " + std::to_string(st.st_size) + ", not " + std::to_string(d.size));
    m.refs.push_back(key);
  }
  for (const auto& d : parsed->manifests) {
    auto key = d.digest.str();
    auto child = r.manifests.find(key);
    if (child == r.manifests.end()) {
      if (r.blobs.empty() && r.manifests.empty() && r.tags.empty()) repos_.erase(repo);
      return err(RegistryErrorCode::manifest_blob_unknown, "manifest unknown to the repository: " + key);
    }
    if (child->second.size != d.size)
      return err(RegistryErrorCode::manifest_invalid, "size of " + key + " does not match");
    m.refs.push_back(key);
  }
  auto key = digest.str();
  if (tag && immutable_tag)
    if (auto t = r.tags.find(*tag); t != r.tags.end() && t->second != key)
      return err(RegistryErrorCode::tag_exists, "tag " + *tag + " already names another manifest");
  auto before = r;
  r.manifests[key] = std::move(m);
  if (tag) r.tags[*tag] = key;
  if (auto s = save(repo, r); !s) {
    r = std::move(before);
    return err(RegistryErrorCode::internal, s.error().message);
  }
  ManifestPut out{digest, std::nullopt};
  if (parsed->subject) out.subject = parsed->subject->digest;
  return out;
}

RResult<StoredManifest> RegistryStore::get_manifest(const std::string& repo, const std::string& reference) const {
  Digest digest;
  std::string media_type;
  {
    std::lock_guard lock(mutex_);
    auto r = repos_.find(repo);
    if (r == repos_.end()) return err(RegistryErrorCode::name_unknown, "no such repository");
    std::string key = reference;
    if (!is_digest_reference(reference)) {
      auto t = r->second.tags.find(reference);
      if (t == r->second.tags.end()) return err(RegistryErrorCode::manifest_unknown, "no such tag");
      key = t->second;
    }
    auto m = r->second.manifests.find(key);
    if (m == r->second.manifests.end()) return err(RegistryErrorCode::manifest_unknown, "no such manifest");
    auto d = parse_digest(key);
    if (!d) return err(RegistryErrorCode::manifest_unknown, "no such manifest");
    digest = *d;
    media_type = m->second.media_type;
  }
  auto bytes = read_file(blob_path(digest));
  if (!bytes) return err(RegistryErrorCode::manifest_unknown, "the manifest's bytes are gone");
  return StoredManifest{digest, media_type, std::move(*bytes)};
}

RResult<bool> RegistryStore::delete_manifest(const std::string& repo, const std::string& reference) {
  std::lock_guard lock(mutex_);
  auto r = repos_.find(repo);
  if (r == repos_.end()) return err(RegistryErrorCode::name_unknown, "no such repository");
  auto& state = r->second;
  auto before = state;
  if (!is_digest_reference(reference)) {
    if (!state.tags.erase(reference)) return err(RegistryErrorCode::manifest_unknown, "no such tag");
  } else {
    if (!state.manifests.erase(reference)) return err(RegistryErrorCode::manifest_unknown, "no such manifest");
    std::erase_if(state.tags, [&](const auto& t) { return t.second == reference; });
  }
  if (auto s = save(repo, state); !s) {
    state = std::move(before);
    return err(RegistryErrorCode::internal, s.error().message);
  }
  return true;
}

std::optional<std::vector<std::string>> RegistryStore::tags(const std::string& repo) const {
  std::lock_guard lock(mutex_);
  auto r = repos_.find(repo);
  if (r == repos_.end()) return std::nullopt;
  std::vector<std::string> out;
  for (const auto& [tag, digest] : r->second.tags) out.push_back(tag);
  return out;  // std::map: already sorted
}

std::vector<std::string> RegistryStore::repositories() const {
  std::lock_guard lock(mutex_);
  std::vector<std::string> out;
  for (const auto& [name, repo] : repos_) out.push_back(name);
  return out;
}

json RegistryStore::referrers(const std::string& repo, const Digest& subject,
                              std::optional<std::string> artifact_type) const {
  json index = {{"schemaVersion", 2}, {"mediaType", kOciIndex}, {"manifests", json::array()}};
  std::lock_guard lock(mutex_);
  auto r = repos_.find(repo);
  if (r == repos_.end()) return index;
  for (const auto& [digest, m] : r->second.manifests) {
    if (!m.subject || *m.subject != subject.str()) continue;
    if (artifact_type && m.artifact_type != artifact_type) continue;
    json d = {{"mediaType", m.media_type}, {"digest", digest}, {"size", m.size}};
    if (m.artifact_type) d["artifactType"] = *m.artifact_type;
    if (m.annotations.is_object() && !m.annotations.empty()) d["annotations"] = m.annotations;
    index["manifests"].push_back(std::move(d));
  }
  return index;
}

Result<artifacts::GcReport> RegistryStore::collect(
    std::set<std::string> roots, std::chrono::seconds retention,
    const std::function<Result<artifacts::GcReport>(const std::set<std::string>&, std::chrono::seconds)>& sweep) {
  std::lock_guard lock(mutex_);
  // Upload sessions idle past the push grace are over: their temp files go now, the others'
  // are kept whatever their age.
  auto idle_cutoff = std::chrono::steady_clock::now() - push_grace_;
  std::erase_if(uploads_, [&](const auto& u) { return !u.second->busy && u.second->last_used < idle_cutoff; });
  std::set<std::string> sha512;
  auto now = std::chrono::system_clock::now();
  for (const auto& [id, up] : uploads_) ::futimens(up->fd, nullptr);
  // Pushed within the grace: protected whatever the retention (its manifest may be on its way).
  for (const auto& [name, repo] : repos_)
    for (const auto& d : repo.blobs) {
      auto parsed = parse_digest(d);
      struct stat st{};
      if (parsed && ::stat(blob_path(*parsed).c_str(), &st) == 0 && last_pushed(st) >= now - push_grace_)
        (d.starts_with("sha256:") ? roots : sha512).insert(d);
    }
  // Marked: every manifest (tagged or not) and everything each one names. Blobs pushed but
  // named by no manifest are left to retention, like any artifact: a push in progress has
  // uploaded its layers and not yet its manifest.
  for (const auto& [name, repo] : repos_)
    for (const auto& [digest, m] : repo.manifests) {
      for (const auto* d : {&digest}) (d->starts_with("sha256:") ? roots : sha512).insert(*d);
      for (const auto& ref : m.refs) (ref.starts_with("sha256:") ? roots : sha512).insert(ref);
    }
  std::set<std::string> hex256;
  for (const auto& d : roots) hex256.insert(d.starts_with("sha256:") ? d.substr(7) : d);
  auto report = sweep(hex256, retention);
  if (!report) return report;

  // sha512 blobs, which the artifact store does not know.
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(blob_root_ / "sha512", ec)) {
    struct stat st{};
    if (::stat(entry.path().c_str(), &st) != 0) continue;
    auto name = entry.path().filename().string();
    auto last = last_pushed(st);
    bool temp = name.starts_with(kTempPrefix);
    if (temp ? last < now - std::max(retention, kTempGrace) : (!sha512.count("sha512:" + name) && last < now - retention)) {
      if (::unlink(entry.path().c_str()) == 0) {
        ++report->removed;
        report->bytes_freed += static_cast<std::uint64_t>(st.st_size);
      }
    }
  }
  // Links to blobs that are gone.
  for (auto& [name, repo] : repos_) {
    auto before = repo.blobs.size();
    std::erase_if(repo.blobs, [&](const std::string& d) {
      auto parsed = parse_digest(d);
      return !parsed || ::access(blob_path(*parsed).c_str(), F_OK) != 0;
    });
    if (repo.blobs.size() != before) (void)save(name, repo);  // a stale link is harmless: blob() checks the file
  }
  return report;
}

}  // namespace provisioner::registry
