#include "controller/artifacts/artifact_store.hpp"

#include <fstream>
#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>

#include "common/atomic_file.hpp"
#include "common/crypto.hpp"

namespace provisioner::artifacts {
namespace fs = std::filesystem;
using crypto::is_sha256_hex;
namespace {

constexpr std::size_t kCopyBuffer = 1 << 20;
constexpr std::string_view kTempPrefix = ".tmp-";
// Temp files younger than this are uploads in flight and survive GC whatever the retention.
constexpr std::chrono::seconds kTempGrace{3600};

Error io_error(std::string what, int err = errno) {
  return make_error(ErrorKind::internal, what + ": " + std::strerror(err));
}

struct Fd {
  int fd = -1;
  Fd() = default;
  explicit Fd(int f) : fd(f) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
  int release() { return std::exchange(fd, -1); }
};

// Streaming sha256 over OpenSSL EVP (common/crypto only hashes whole buffers).
class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new()) { EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr); }
  void update(const void* p, std::size_t n) { EVP_DigestUpdate(ctx_.get(), p, n); }
  std::string hex() {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_DigestFinal_ex(ctx_.get(), md, &len);
    return crypto::to_hex(std::string_view(reinterpret_cast<char*>(md), len));
  }

 private:
  struct Free {
    void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
  };
  std::unique_ptr<EVP_MD_CTX, Free> ctx_;
};

Status write_all(int fd, const char* p, std::size_t n) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return io_error("write");
    }
    p += w;
    n -= static_cast<std::size_t>(w);
  }
  return Ok{};
}

Status fsync_dir(const fs::path& dir) {
  Fd d(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (d.fd < 0) return io_error("open dir " + dir.string());
  if (::fsync(d.fd) != 0) return io_error("fsync dir " + dir.string());
  return Ok{};
}

// Bumps atime only: mtime is Last-Modified and must stay put.
void touch_registered(const fs::path& p) { touch_atime(p); }

// A file being written in the destination directory; removed unless committed.
class TempFile {
 public:
  static Result<std::unique_ptr<TempFile>> create(const fs::path& dir) {
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) return make_error(ErrorKind::internal, "create " + dir.string() + ": " + ec.message());
    for (int attempt = 0; attempt < 8; ++attempt) {
      fs::path p = dir / (std::string(kTempPrefix) + crypto::random_token(8));
      int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
      if (fd >= 0) return std::unique_ptr<TempFile>(new TempFile(dir, std::move(p), fd));
      if (errno != EEXIST) return io_error("create temp in " + dir.string());
    }
    return make_error(ErrorKind::internal, "could not create a temp file in " + dir.string());
  }
  ~TempFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(path_.c_str());
  }
  int fd() const { return fd_; }

  // fsync file, rename into place, fsync the directory. When `final` already exists the
  // identical content is kept (its mtime is served as Last-Modified) and ours is dropped.
  Result<bool> commit(const fs::path& final) {
    if (::access(final.c_str(), F_OK) == 0) return false;
    if (::fsync(fd_) != 0) return io_error("fsync " + path_.string());
    if (::close(std::exchange(fd_, -1)) != 0) return io_error("close " + path_.string());
    if (::rename(path_.c_str(), final.c_str()) != 0) return io_error("rename to " + final.string());
    committed_ = true;
    if (auto s = fsync_dir(dir_); !s) return s.error();
    return true;
  }

 private:
  TempFile(fs::path dir, fs::path p, int fd) : dir_(std::move(dir)), path_(std::move(p)), fd_(fd) {}
  fs::path dir_;
  fs::path path_;
  int fd_;
  bool committed_ = false;
};

struct FileTimes {
  std::chrono::system_clock::time_point last_used;  // max(atime, mtime)
  std::uint64_t size = 0;
};

std::optional<FileTimes> file_times(const fs::path& p) {
  struct stat st {};
  if (::lstat(p.c_str(), &st) != 0) return std::nullopt;
  auto to_tp = [](const struct timespec& ts) {
    return std::chrono::system_clock::time_point(
        std::chrono::duration_cast<std::chrono::system_clock::duration>(
            std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec)));
  };
  return FileTimes{std::max(to_tp(st.st_atim), to_tp(st.st_mtim)),
                   static_cast<std::uint64_t>(st.st_size)};
}

Result<std::uint64_t> blob_size(const fs::path& p) {
  struct stat st {};
  if (::stat(p.c_str(), &st) != 0) {
    if (errno == ENOENT) return make_error(ErrorKind::not_found, "no such artifact");
    return io_error("stat " + p.string());
  }
  return static_cast<std::uint64_t>(st.st_size);
}

nlohmann::json manifest_to_json(const CompositeManifest& m) {
  nlohmann::json segs = nlohmann::json::array();
  for (const auto& s : m.segments) {
    if (s.kind == Segment::Kind::bytes) {
      segs.push_back({{"kind", "bytes"}, {"sha256", s.sha256}, {"length", s.length}});
    } else {
      segs.push_back({{"kind", "artifact"}, {"sha256", s.sha256}, {"offset", s.offset},
                      {"length", s.length}, {"digest", s.digest}});
    }
  }
  // Version 2: the id is composite_id() of the segments (version 1: the sha256 of the bytes).
  return {{"version", 2}, {"sha256", m.sha256}, {"size", m.size}, {"segments", segs}};
}

Result<CompositeManifest> manifest_from_json(const std::string& text) {
  try {
    auto j = nlohmann::json::parse(text);
    CompositeManifest m;
    m.sha256 = j.at("sha256").get<std::string>();
    m.size = j.at("size").get<std::uint64_t>();
    std::uint64_t total = 0;
    for (const auto& s : j.at("segments")) {
      Segment seg;
      auto kind = s.at("kind").get<std::string>();
      if (kind == "bytes") {
        seg.kind = Segment::Kind::bytes;
      } else if (kind == "artifact") {
        seg.kind = Segment::Kind::artifact;
        seg.offset = s.at("offset").get<std::uint64_t>();
      } else {
        return make_error(ErrorKind::internal, "manifest: unknown segment kind " + kind);
      }
      seg.sha256 = s.at("sha256").get<std::string>();
      seg.length = s.at("length").get<std::uint64_t>();
      seg.digest = seg.kind == Segment::Kind::bytes ? seg.sha256 : s.value("digest", std::string());
      if (!seg.digest.empty() && !is_sha256_hex(seg.digest)) return make_error(ErrorKind::internal, "manifest: bad digest");
      if (!is_sha256_hex(seg.sha256)) return make_error(ErrorKind::internal, "manifest: bad sha256");
      if (seg.length > std::numeric_limits<std::uint64_t>::max() - total ||
          seg.offset > std::numeric_limits<std::uint64_t>::max() - seg.length)
        return make_error(ErrorKind::internal, "manifest: sizes overflow");
      total += seg.length;
      m.segments.push_back(std::move(seg));
    }
    if (total != m.size) return make_error(ErrorKind::internal, "manifest: size mismatch");
    return m;
  } catch (const std::exception& e) {
    return make_error(ErrorKind::internal, std::string("manifest: ") + e.what());
  }
}

}  // namespace

std::string composite_id(const std::vector<std::pair<std::uint64_t, std::string>>& lengths_and_digests) {
  std::string text = "provisioner-composite-v2\n";
  for (const auto& [length, digest] : lengths_and_digests) text += std::to_string(length) + " " + digest + "\n";
  return crypto::sha256_hex(text);
}

std::optional<std::string> normalize_sha256(std::string_view digest) {
  if (digest.size() > 7 && (digest.substr(0, 7) == "sha256:" || digest.substr(0, 7) == "SHA256:"))
    digest.remove_prefix(7);
  std::string out(digest);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (!is_sha256_hex(out)) return std::nullopt;
  return out;
}

ArtifactStore::ArtifactStore(fs::path root) : root_(std::move(root)) {}

fs::path ArtifactStore::blob_path(std::string_view sha256) const {
  return root_ / "sha256" / std::string(sha256);
}
fs::path ArtifactStore::manifest_path(std::string_view sha256) const {
  return root_ / "composite" / (std::string(sha256) + ".json");
}

Result<ArtifactInfo> ArtifactStore::put(std::string_view bytes) {
  std::size_t pos = 0;
  ReadFn read = [&](char* buf, std::size_t cap) -> Result<std::size_t> {
    std::size_t n = std::min(cap, bytes.size() - pos);
    std::memcpy(buf, bytes.data() + pos, n);
    pos += n;
    return n;
  };
  return put_stream(read, std::nullopt, std::numeric_limits<std::uint64_t>::max());
}

Result<ArtifactInfo> ArtifactStore::put_file(const fs::path& source,
                                             std::optional<std::string> expected_sha256) {
  Fd in(::open(source.c_str(), O_RDONLY | O_CLOEXEC));
  if (in.fd < 0) {
    if (errno == ENOENT) return make_error(ErrorKind::not_found, "no such file: " + source.string());
    return io_error("open " + source.string());
  }
  ::posix_fadvise(in.fd, 0, 0, POSIX_FADV_SEQUENTIAL);
  ReadFn read = [&](char* buf, std::size_t cap) -> Result<std::size_t> {
    for (;;) {
      ssize_t r = ::read(in.fd, buf, cap);
      if (r >= 0) return static_cast<std::size_t>(r);
      if (errno != EINTR) return io_error("read " + source.string());
    }
  };
  return put_stream(read, std::move(expected_sha256), std::numeric_limits<std::uint64_t>::max());
}

Result<ArtifactInfo> ArtifactStore::put_stream(const ReadFn& read,
                                               std::optional<std::string> expected_sha256,
                                               std::uint64_t max_bytes) {
  std::optional<std::string> expected;
  if (expected_sha256) {
    expected = normalize_sha256(*expected_sha256);
    if (!expected)
      return make_error(ErrorKind::invalid_input, "expected digest is not a sha256",
                        {{"/digest", "must be sha256:<64 hex> or <64 hex>"}});
  }
  auto dir = root_ / "sha256";
  auto tmp = TempFile::create(dir);
  if (!tmp) return tmp.error();
  Sha256 hash;
  std::vector<char> buf(kCopyBuffer);
  std::uint64_t total = 0;
  for (;;) {
    auto n = read(buf.data(), buf.size());
    if (!n) return n.error();
    if (*n == 0) break;
    if (*n > buf.size()) return make_error(ErrorKind::internal, "reader overran its buffer");
    if (*n > max_bytes - total)
      return make_error(ErrorKind::too_large,
                        "artifact larger than " + std::to_string(max_bytes) + " bytes");
    total += *n;
    hash.update(buf.data(), *n);
    if (auto s = write_all((*tmp)->fd(), buf.data(), *n); !s) return s.error();
  }
  std::string hex = hash.hex();
  if (expected && *expected != hex)
    return make_error(ErrorKind::invalid_input, "sha256 mismatch: content is sha256:" + hex,
                      {{"/digest", "does not match the uploaded content"}});
  auto final = blob_path(hex);
  auto committed = (*tmp)->commit(final);
  if (!committed) return committed.error();
  if (!*committed) touch_registered(final);
  return ArtifactInfo{hex, total, false, !*committed, final};
}

Result<ArtifactInfo> ArtifactStore::put_composite(const std::vector<CompositePart>& parts) {
  CompositeManifest m;
  for (const auto& part : parts) {
    Segment seg;
    seg.kind = part.kind;
    if (part.kind == Segment::Kind::bytes) {
      if (part.data.empty()) continue;
      auto blob = put(part.data);
      if (!blob) return blob.error();
      seg.sha256 = blob->sha256;
      seg.length = blob->size;
    } else {
      auto sha = normalize_sha256(part.sha256);
      if (!sha) return make_error(ErrorKind::invalid_input, "composite region: bad sha256");
      auto size = blob_size(blob_path(*sha));
      if (!size) return size.error().kind == ErrorKind::not_found
                            ? make_error(ErrorKind::not_found, "composite region: no artifact " + *sha)
                            : size.error();
      if (part.offset > *size || part.length > *size - part.offset)
        return make_error(ErrorKind::invalid_input, "composite region beyond the end of " + *sha);
      if (part.length == 0) continue;
      seg.sha256 = *sha;
      seg.offset = part.offset;
      seg.length = part.length;
      touch_registered(blob_path(*sha));
    }
    if (seg.length > std::numeric_limits<std::uint64_t>::max() - m.size)
      return make_error(ErrorKind::invalid_input, "composite too large");
    m.size += seg.length;
    m.segments.push_back(std::move(seg));
  }

  // The id: from the segments' lengths and digests (see composite_id), so the big region of
  // the base is hashed once, not per job.
  std::vector<std::pair<std::uint64_t, std::string>> ids;
  for (auto& seg : m.segments) {
    if (seg.kind == Segment::Kind::bytes) {
      seg.digest = seg.sha256;
    } else {
      auto d = region_digest(seg.sha256, seg.offset, seg.length);
      if (!d) return d.error();
      seg.digest = *d;
    }
    ids.emplace_back(seg.length, seg.digest);
  }
  m.sha256 = composite_id(ids);

  auto final = manifest_path(m.sha256);
  auto tmp = TempFile::create(final.parent_path());
  if (!tmp) return tmp.error();
  std::string text = manifest_to_json(m).dump(2) + "\n";
  if (auto s = write_all((*tmp)->fd(), text.data(), text.size()); !s) return s.error();
  auto committed = (*tmp)->commit(final);
  if (!committed) return committed.error();
  if (!*committed) touch_registered(final);
  return ArtifactInfo{m.sha256, m.size, true, !*committed, final};
}

bool ArtifactStore::exists(std::string_view sha256) const {
  if (!is_sha256_hex(sha256)) return false;
  return ::access(blob_path(sha256).c_str(), F_OK) == 0 ||
         ::access(manifest_path(sha256).c_str(), F_OK) == 0;
}

Result<ArtifactInfo> ArtifactStore::stat(std::string_view sha256) const {
  if (!is_sha256_hex(sha256)) return make_error(ErrorKind::invalid_input, "not a sha256");
  auto blob = blob_path(sha256);
  auto size = blob_size(blob);
  if (size) return ArtifactInfo{std::string(sha256), *size, false, false, blob};
  if (size.error().kind != ErrorKind::not_found) return size.error();
  auto m = composite(sha256);
  if (!m) return m.error();
  return ArtifactInfo{std::string(sha256), m->size, true, false, manifest_path(sha256)};
}

Result<std::uint64_t> ArtifactStore::size(std::string_view sha256) const {
  auto info = stat(sha256);
  if (!info) return info.error();
  return info->size;
}

std::optional<fs::path> ArtifactStore::path_of(std::string_view sha256) const {
  if (!is_sha256_hex(sha256)) return std::nullopt;
  auto p = blob_path(sha256);
  if (::access(p.c_str(), F_OK) != 0) return std::nullopt;
  return p;
}

Result<CompositeManifest> ArtifactStore::composite(std::string_view sha256) const {
  if (!is_sha256_hex(sha256)) return make_error(ErrorKind::invalid_input, "not a sha256");
  auto p = manifest_path(sha256);
  // O_NOATIME: atime is GC's "last registered" mark, and reading a manifest (as gc() itself
  // does) must not refresh it on relatime mounts. Not permitted on files we do not own.
  Fd in(::open(p.c_str(), O_RDONLY | O_CLOEXEC | O_NOATIME));
  if (in.fd < 0 && errno == EPERM) in.fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
  if (in.fd < 0) {
    if (errno == ENOENT) return make_error(ErrorKind::not_found, "no such artifact");
    return io_error("open " + p.string());
  }
  std::string text;
  char buf[8192];
  for (;;) {
    ssize_t r = ::read(in.fd, buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return io_error("read " + p.string());
    if (r == 0) break;
    text.append(buf, static_cast<std::size_t>(r));
    if (text.size() > (16u << 20)) return make_error(ErrorKind::internal, "manifest too large");
  }
  auto m = manifest_from_json(text);
  if (!m) return m.error();
  if (m->sha256 != sha256) return make_error(ErrorKind::internal, "manifest id mismatch");
  return m;
}

namespace {
Result<std::string> hash_range(const fs::path& p, std::uint64_t off, std::uint64_t left) {
  Fd in(::open(p.c_str(), O_RDONLY | O_CLOEXEC));
  if (in.fd < 0) return io_error("open " + p.string());
  Sha256 hash;
  std::vector<char> buf(kCopyBuffer);
  while (left > 0) {
    ssize_t r = ::pread(in.fd, buf.data(), std::min<std::uint64_t>(left, buf.size()), static_cast<off_t>(off));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return io_error("read " + p.string());
    if (r == 0) return make_error(ErrorKind::internal, "artifact shrank: " + p.string());
    hash.update(buf.data(), static_cast<std::size_t>(r));
    off += static_cast<std::uint64_t>(r);
    left -= static_cast<std::uint64_t>(r);
  }
  return hash.hex();
}
}  // namespace

Result<std::string> ArtifactStore::region_digest(const std::string& sha256, std::uint64_t offset,
                                                 std::uint64_t length) const {
  auto blob = blob_path(sha256);
  auto size = blob_size(blob);
  if (!size) return size.error();
  if (offset == 0 && length == *size) return sha256;  // the whole artifact: its own id
  // Kept per (artifact, offset, length): artifacts never change, so neither does this.
  auto cached = root_ / "regions" / (sha256 + "-" + std::to_string(offset) + "-" + std::to_string(length));
  {
    std::ifstream in(cached);
    std::string hex;
    if (in >> hex && is_sha256_hex(hex)) return hex;
  }
  auto digest = hash_range(blob, offset, length);
  if (!digest) return digest.error();
  auto tmp = TempFile::create(cached.parent_path());
  if (!tmp) return tmp.error();
  std::string text = *digest + "\n";
  if (auto w = write_all((*tmp)->fd(), text.data(), text.size()); !w) return w.error();
  if (auto c = (*tmp)->commit(cached); !c) return c.error();
  return *digest;
}

Status ArtifactStore::verify_composite(std::string_view id) const {
  auto m = composite(id);
  if (!m) return m.error();
  std::vector<std::pair<std::uint64_t, std::string>> ids;
  for (const auto& seg : m->segments) {
    auto d = hash_range(blob_path(seg.sha256), seg.offset, seg.length);
    if (!d) return d.error();
    if (!seg.digest.empty() && *d != seg.digest)
      return make_error(ErrorKind::internal, "composite " + std::string(id) + ": a segment of " + seg.sha256 +
                                                 " does not match its digest");
    ids.emplace_back(seg.length, *d);
  }
  if (composite_id(ids) != id)
    return make_error(ErrorKind::internal, "composite " + std::string(id) + ": its bytes do not give its id");
  return Ok{};
}

Result<GcReport> ArtifactStore::gc(const std::set<std::string>& referenced,
                                   std::chrono::seconds retention,
                                   std::chrono::system_clock::time_point now) {
  GcReport report;
  const auto cutoff = now - retention;
  const auto temp_cutoff = now - std::max(retention, kTempGrace);
  std::set<std::string> keep = referenced;
  std::error_code ec;

  auto remove_file = [&](const fs::path& p, std::uint64_t size) {
    if (::unlink(p.c_str()) == 0) {
      ++report.removed;
      report.bytes_freed += size;
    }
  };

  // Composites first: a kept composite keeps the blobs it is made of.
  std::vector<std::pair<fs::path, std::uint64_t>> doomed_manifests;
  auto cdir = root_ / "composite";
  // A missing folder (nothing of that kind stored yet) is not an error: check without `ec`.
  if (std::error_code missing; fs::is_directory(cdir, missing)) {
    for (const auto& entry : fs::directory_iterator(cdir, ec)) {
      auto name = entry.path().filename().string();
      auto t = file_times(entry.path());
      if (!t) continue;
      if (name.starts_with(kTempPrefix)) {
        if (t->last_used < temp_cutoff) remove_file(entry.path(), t->size);
        continue;
      }
      if (!name.ends_with(".json")) continue;
      auto sha = name.substr(0, name.size() - 5);
      if (referenced.count(sha) || t->last_used >= cutoff) {
        auto m = composite(sha);
        if (!m) {
          ++report.kept;  // unreadable: keep it and what it may point at is kept by retention
          continue;
        }
        for (const auto& s : m->segments) keep.insert(s.sha256);
        ++report.kept;
      } else {
        doomed_manifests.emplace_back(entry.path(), t->size);
      }
    }
  }
  if (ec) return make_error(ErrorKind::internal, "gc: " + ec.message());
  for (const auto& [p, size] : doomed_manifests) remove_file(p, size);

  auto bdir = root_ / "sha256";
  if (std::error_code missing; fs::is_directory(bdir, missing)) {
    for (const auto& entry : fs::directory_iterator(bdir, ec)) {
      auto name = entry.path().filename().string();
      auto t = file_times(entry.path());
      if (!t) continue;
      if (name.starts_with(kTempPrefix)) {
        if (t->last_used < temp_cutoff) remove_file(entry.path(), t->size);
        continue;
      }
      if (keep.count(name) || t->last_used >= cutoff) {
        ++report.kept;
        continue;
      }
      remove_file(entry.path(), t->size);
    }
  }
  // Region digests of artifacts that are gone.
  auto rdir = root_ / "regions";
  if (std::error_code missing; fs::is_directory(rdir, missing)) {
    for (const auto& entry : fs::directory_iterator(rdir, ec)) {
      auto name = entry.path().filename().string();
      auto base = name.substr(0, name.find('-'));
      if (name.starts_with(kTempPrefix)) {  // a crash's leftover, not one being written now
        if (auto t = file_times(entry.path()); t && t->last_used < temp_cutoff) ::unlink(entry.path().c_str());
        continue;
      }
      if (!is_sha256_hex(base) || ::access(blob_path(base).c_str(), F_OK) != 0) ::unlink(entry.path().c_str());
    }
  }
  if (ec) return make_error(ErrorKind::internal, "gc: " + ec.message());
  return report;
}

}  // namespace provisioner::artifacts
