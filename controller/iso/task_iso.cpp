#include "controller/iso/task_iso.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <set>

// libisofs needs the fixed-width types first and, without libburn, its own copy of
// struct burn_source (the pull interface we read the image through).
#include <cstdint>
#define LIBISOFS_WITHOUT_LIBBURN 1
#include <libisofs.h>

#include "common/atomic_file.hpp"
#include "common/crypto.hpp"
#include "common/recipe.hpp"

namespace provisioner::iso {
namespace {

constexpr std::uint32_t block_size = 2048;
// The first 32 blocks of an ISO: 16 blocks of system area (MBR/GPT of hybrid images) and the
// volume descriptor set. A grown image rewrites this part to point at the new session.
constexpr std::uint64_t head_size = 32 * block_size;
constexpr std::uint64_t system_area_size = 16 * block_size;
// Sessions start on a 32-block boundary, as libisoburn does on disk files.
constexpr std::uint64_t session_alignment = 32 * block_size;

// Every node on a task ISO carries this time (2020-01-01T00:00:00Z). A fixed constant, not
// the build time: the ISO must not change when rebuilt later.
constexpr time_t fixed_node_time = 1577836800;
constexpr mode_t file_mode = 0444;
constexpr mode_t dir_mode = 0555;

// libisofs keeps a little process-wide state (initialisation, the "now" used for fresh nodes
// and default image times, local charset, message printing). We set it once, always to the
// same constants, so it behaves like configuration rather than mutable state.
Status ensure_libisofs() {
  static std::once_flag once;
  static int init_result = 0;
  std::call_once(once, [] {
    init_result = iso_init_with_flag(1);  // bit0: do not touch the process locale
    if (init_result < 0) return;
    time_t now = fixed_node_time;
    iso_nowtime(&now, 1);
    char utf8[] = "UTF-8";
    iso_set_local_charset(utf8, 0);
    char never[] = "NEVER", none[] = "";
    iso_set_msgs_severities(never, never, none);
  });
  if (init_result < 0)
    return make_error(ErrorKind::internal, std::string("libisofs init failed: ") + iso_error_to_msg(init_result));
  return Ok{};
}

// libisofs shares process-wide objects between images without locking: the local filesystem
// every new image takes a reference on is a refcounted singleton (ThreadSanitizer caught two
// reconciler workers freeing and allocating it at once). One image at a time, then; task
// ISOs take milliseconds to build.
std::mutex& libisofs_mutex() {
  static std::mutex m;
  return m;
}

Error lib_error(std::string_view what, int code) {
  return make_error(ErrorKind::internal, std::string(what) + ": " + iso_error_to_msg(code));
}

// RAII for the libisofs handles; all are reference counted or plainly freed.
struct ImageDeleter { void operator()(IsoImage* p) const { iso_image_unref(p); } };
struct WriteOptsDeleter { void operator()(IsoWriteOpts* p) const { iso_write_opts_free(p); } };
struct ReadOptsDeleter { void operator()(IsoReadOpts* p) const { iso_read_opts_free(p); } };
struct DataSourceDeleter { void operator()(IsoDataSource* p) const { iso_data_source_unref(p); } };
struct FeaturesDeleter { void operator()(IsoReadImageFeatures* p) const { iso_read_image_features_destroy(p); } };
struct BurnSourceDeleter {
  void operator()(burn_source* p) const {
    if (p->free_data) p->free_data(p);
    std::free(p);
  }
};
using ImagePtr = std::unique_ptr<IsoImage, ImageDeleter>;
using WriteOptsPtr = std::unique_ptr<IsoWriteOpts, WriteOptsDeleter>;

bool is_job_id_char(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_' || c == '.';
}

// The NoCloud meta-data. instance-id must be the job id: cloud-init runs its first-boot
// modules once per instance-id, so a re-provisioned machine must see a new one. A recipe's own
// instance-id is replaced, never trusted.
std::string nocloud_meta_data(const nlohmann::json& recipe, const std::string& job_id) {
  auto it = recipe.find("meta_data");
  if (it == recipe.end() || !it->is_string()) {
    std::string out = "instance-id: " + job_id + "\n";
    if (auto h = recipe.find("hostname"); h != recipe.end() && h->is_string())
      out += "local-hostname: " + h->get<std::string>() + "\n";
    return out;
  }
  const std::string text = it->get<std::string>();
  // meta-data may be JSON (a YAML subset): set the key structurally.
  auto first = text.find_first_not_of(" \t\r\n");
  if (first != std::string::npos && text[first] == '{') {
    auto doc = nlohmann::json::parse(text, nullptr, false);
    if (!doc.is_discarded() && doc.is_object()) {
      doc["instance-id"] = job_id;
      if (!doc.contains("local-hostname") && recipe.contains("hostname")) doc["local-hostname"] = recipe["hostname"];
      return doc.dump(2) + "\n";
    }
  }
  // YAML block mapping: drop top-level instance-id lines and put ours first (after a
  // leading "---" document marker, if any).
  std::string head, body;
  bool seen_content = false, has_hostname = false;
  std::size_t pos = 0;
  while (pos < text.size()) {
    auto nl = text.find('\n', pos);
    std::string line = text.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
    pos = nl == std::string::npos ? text.size() : nl + 1;
    std::string_view v(line);
    if (v.starts_with("instance-id:") || v.starts_with("\"instance-id\":") || v.starts_with("'instance-id':"))
      continue;
    has_hostname |= v.starts_with("local-hostname:");
    if (!seen_content && (v.starts_with("---") || v.starts_with("#") || v.find_first_not_of(" \t\r") == std::string_view::npos)) {
      head += line + "\n";
      continue;
    }
    seen_content = true;
    body += line + "\n";
  }
  std::string out = head + "instance-id: " + job_id + "\n";
  if (!has_hostname)
    if (auto h = recipe.find("hostname"); h != recipe.end() && h->is_string())
      out += "local-hostname: " + h->get<std::string>() + "\n";
  return out + body;
}

std::string dump_json(const nlohmann::json& doc) {
  // nlohmann keeps object keys sorted (std::map), so this text is canonical for a document.
  return doc.dump(2, ' ', false, nlohmann::json::error_handler_t::strict) + "\n";
}

// Deterministic stand-in for the "volume UUID": ISO 9660 has none, blkid shows the PVD
// creation time (YYYYMMDDhhmmsscc) as UUID. We make that string a function of the content so
// different task ISOs get different UUIDs and the same task ISO the same one.
std::string volume_uuid_for(const std::vector<TaskFile>& files, std::string_view salt) {
  std::string material(salt);
  for (const auto& f : files) {
    material += f.path;
    material.push_back('\0');
    material += crypto::sha256(f.content);
  }
  std::string digest = crypto::sha256(material);
  std::uint64_t h = 0;
  for (int i = 0; i < 8; ++i) h = (h << 8) | static_cast<unsigned char>(digest[i]);
  auto take = [&h](std::uint64_t n) {
    auto v = h % n;
    h /= n;
    return v;
  };
  char buf[17];
  unsigned year = 2000 + static_cast<unsigned>(take(100)), month = 1 + static_cast<unsigned>(take(12)),
           day = 1 + static_cast<unsigned>(take(28)), hour = static_cast<unsigned>(take(24)),
           minute = static_cast<unsigned>(take(60)), second = static_cast<unsigned>(take(60)),
           centi = static_cast<unsigned>(take(100));
  std::snprintf(buf, sizeof buf, "%04u%02u%02u%02u%02u%02u%02u", year, month, day, hour, minute, second, centi);
  return std::string(buf, 16);
}

void fix_node(IsoNode* node, bool dir) {
  iso_node_set_permissions(node, dir ? dir_mode : file_mode);
  iso_node_set_uid(node, 0);
  iso_node_set_gid(node, 0);
  iso_node_set_mtime(node, fixed_node_time);
  iso_node_set_atime(node, fixed_node_time);
  iso_node_set_ctime(node, fixed_node_time);
}

// Finds or creates the directory `name` under `parent`.
Result<IsoDir*> ensure_dir(IsoImage* image, IsoDir* parent, const std::string& name) {
  IsoNode* existing = nullptr;
  int rc = iso_image_dir_get_node(image, parent, name.c_str(), &existing, 0);
  if (rc == 1) {
    if (iso_node_get_type(existing) != LIBISO_DIR)
      return make_error(ErrorKind::conflict, "'" + name + "' exists on the image and is not a directory");
    return reinterpret_cast<IsoDir*>(existing);
  }
  IsoDir* dir = nullptr;
  rc = iso_image_add_new_dir(image, parent, name.c_str(), &dir);
  if (rc < 0) return lib_error("cannot add directory " + name, rc);
  fix_node(reinterpret_cast<IsoNode*>(dir), true);
  return dir;
}

// Adds every task file under the image root, in path order, with fixed metadata. In an
// imported image, any task path that already exists is a conflict (never silently replaced).
Status add_task_files(IsoImage* image, const std::vector<TaskFile>& files) {
  IsoDir* root = iso_image_get_root(image);
  int weight = static_cast<int>(files.size());
  for (const auto& f : files) {
    IsoDir* dir = root;
    std::size_t start = 0;
    for (auto slash = f.path.find('/'); slash != std::string::npos; slash = f.path.find('/', start)) {
      auto d = ensure_dir(image, dir, f.path.substr(start, slash - start));
      if (!d) return d.error();
      dir = *d;
      start = slash + 1;
    }
    std::string leaf = f.path.substr(start);
    IsoNode* existing = nullptr;
    if (iso_image_dir_get_node(image, dir, leaf.c_str(), &existing, 0) == 1)
      return make_error(ErrorKind::conflict, "the base image already holds /" + f.path);
    // iso_memory_stream_new takes ownership of a malloc'ed buffer.
    auto* buf = static_cast<unsigned char*>(std::malloc(std::max<std::size_t>(f.content.size(), 1)));
    if (!buf) return make_error(ErrorKind::internal, "out of memory");
    std::memcpy(buf, f.content.data(), f.content.size());
    IsoStream* stream = nullptr;
    int rc = iso_memory_stream_new(buf, f.content.size(), &stream);
    if (rc < 0) {
      std::free(buf);
      return lib_error("cannot create stream for " + f.path, rc);
    }
    IsoFile* file = nullptr;
    rc = iso_image_add_new_file(image, dir, leaf.c_str(), stream, &file);  // takes our reference
    if (rc < 0) {
      iso_stream_unref(stream);
      return lib_error("cannot add " + f.path, rc);
    }
    fix_node(reinterpret_cast<IsoNode*>(file), false);
    // Content blocks follow path order too (sort weights are descending).
    iso_node_set_sort_weight(reinterpret_cast<IsoNode*>(file), weight--);
  }
  return Ok{};
}

void set_fixed_identity(IsoImage* image, const char* volume_id) {
  iso_image_set_volume_id(image, volume_id);
  iso_image_set_volset_id(image, volume_id);
  iso_image_set_publisher_id(image, "PROVISIONER");
  iso_image_set_data_preparer_id(image, "PROVISIONER TASK ISO");
  iso_image_set_application_id(image, "PROVISIONER");
  iso_image_set_system_id(image, "LINUX");
}

Result<WriteOptsPtr> make_write_opts(const std::string& uuid, bool replace_all) {
  IsoWriteOpts* raw = nullptr;
  int rc = iso_write_opts_new(&raw, 0);
  if (rc < 0) return lib_error("cannot create write options", rc);
  WriteOptsPtr opts(raw);
  iso_write_opts_set_iso_level(raw, 3);
  iso_write_opts_set_rockridge(raw, 1);
  iso_write_opts_set_joliet(raw, 1);
  iso_write_opts_set_joliet_long_names(raw, 1);
  // Joliet readers (Windows setup looking for unattend.xml, isoinfo -J) expect names as given:
  // no ";1" and no forced trailing dot. The ISO 9660 tree keeps both, as the standard wants.
  iso_write_opts_set_omit_version_numbers(raw, 2);
  iso_write_opts_set_no_force_dots(raw, 2);
  iso_write_opts_set_allow_deep_paths(raw, 0);  // depth is limited by check_task_iso_inputs
  // RRIP 1.10 ("RRIP_1991A", what mkisofs writes) has no inode number in PX entries. libisofs
  // numbers directories in an order that varies between builds in one process, so inode
  // numbers would make the bytes unstable; nothing on a task ISO needs them.
  iso_write_opts_set_hardlinks(raw, 0);
  iso_write_opts_set_rrip_version_1_10(raw, 1);
  iso_write_opts_set_rrip_1_10_px_ino(raw, 0);
  iso_write_opts_set_aaip(raw, 0);               // no ACL/xattr of the build host
  iso_write_opts_set_record_md5(raw, 0, 0);
  iso_write_opts_set_sort_files(raw, 1);
  iso_write_opts_set_always_gmt(raw, 1);         // never the build host's TZ
  iso_write_opts_set_output_charset(raw, "UTF-8");
  // Owners, modes and times: fixed, whatever the nodes say (replace_all), or only for our own
  // nodes (set on each node) when an imported base must keep its metadata.
  int r = replace_all ? 2 : 0;
  iso_write_opts_set_replace_mode(raw, r, r, r, r);
  iso_write_opts_set_default_dir_mode(raw, dir_mode);
  iso_write_opts_set_default_file_mode(raw, file_mode);
  iso_write_opts_set_default_uid(raw, 0);
  iso_write_opts_set_default_gid(raw, 0);
  iso_write_opts_set_replace_timestamps(raw, r);
  iso_write_opts_set_default_timestamp(raw, fixed_node_time);
  iso_write_opts_set_dir_rec_mtime(raw, replace_all ? 7 : 0);
  // Creation/modification from the uuid; expiration/effective 0 = "never"/"not specified".
  std::string uuid_copy = uuid;
  rc = iso_write_opts_set_pvd_times(raw, fixed_node_time, fixed_node_time, 0, 0, uuid_copy.data());
  if (rc < 0) return lib_error("cannot set volume times", rc);
  return opts;
}

// Runs the libisofs writer and collects its output.
Result<std::string> write_image(IsoImage* image, IsoWriteOpts* opts) {
  burn_source* raw = nullptr;
  int rc = iso_image_create_burn_source(image, opts, &raw);
  if (rc < 0) return lib_error("cannot start the image writer", rc);
  std::unique_ptr<burn_source, BurnSourceDeleter> src(raw);
  // The size is known before the first byte: read it in a few large requests, so the writer
  // thread and this one hand over rarely (a read asking for more than remains returns EOF and
  // drops the rest, hence the exact sizes).
  auto total = static_cast<std::size_t>(src->get_size(src.get()));
  std::string out(total, '\0');
  std::size_t done = 0;
  while (done < total) {
    int want = static_cast<int>(std::min<std::size_t>(total - done, 1u << 20));
    int n = src->read_xt(src.get(), reinterpret_cast<unsigned char*>(out.data() + done), want);
    if (n <= 0) return make_error(ErrorKind::internal, "libisofs failed while writing the image");
    done += static_cast<std::size_t>(n);
  }
  return out;
}

Status write_all(int fd, const char* data, std::size_t n) {
  while (n > 0) {
    ssize_t w = ::write(fd, data, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return make_error(ErrorKind::internal, std::string("write failed: ") + std::strerror(errno));
    }
    data += w;
    n -= static_cast<std::size_t>(w);
  }
  return Ok{};
}

// common's write_file_atomically takes the bytes in memory; a single-ISO is mostly the base
// file, so it is streamed instead.
// Writes `fill(fd)` into a temp file beside `path`, fsyncs, renames over `path` and fsyncs the
// directory, so a reader sees the old file or the whole new one, never a torn one.
template <typename Fill>
Status atomic_write(const std::string& path, Fill&& fill) {
  namespace fs = std::filesystem;
  fs::path target(path);
  fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
  // (append, not operator+: GCC 12 warns falsely about operator+ on a temporary here)
  std::string name = ".";
  name.append(target.filename().string()).append(".tmp-XXXXXX");
  std::string tmpl = (dir / name).string();
  int fd = ::mkstemp(tmpl.data());
  if (fd < 0) return make_error(ErrorKind::internal, "cannot create temp file in " + dir.string() + ": " + std::strerror(errno));
  auto fail = [&](Error e) {
    ::close(fd);
    ::unlink(tmpl.c_str());
    return e;
  };
  if (::fchmod(fd, 0644) != 0) return fail(make_error(ErrorKind::internal, std::string("fchmod: ") + std::strerror(errno)));
  if (Status s = fill(fd); !s) return fail(s.error());
  if (::fsync(fd) != 0) return fail(make_error(ErrorKind::internal, std::string("fsync: ") + std::strerror(errno)));
  if (::close(fd) != 0) {
    ::unlink(tmpl.c_str());
    return make_error(ErrorKind::internal, std::string("close: ") + std::strerror(errno));
  }
  if (::rename(tmpl.c_str(), path.c_str()) != 0) {
    ::unlink(tmpl.c_str());
    return make_error(ErrorKind::internal, "rename to " + path + ": " + std::strerror(errno));
  }
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return Ok{};
}

Result<std::string> read_range(const std::string& path, std::uint64_t offset, std::uint64_t length) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return make_error(ErrorKind::not_found, "cannot open " + path + ": " + std::strerror(errno));
  std::string out(length, '\0');
  std::uint64_t done = 0;
  while (done < length) {
    ssize_t n = ::pread(fd, out.data() + done, length - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ::close(fd);
      return make_error(ErrorKind::internal, "short read from " + path);
    }
    done += static_cast<std::uint64_t>(n);
  }
  ::close(fd);
  return out;
}

}  // namespace

Status check_task_iso_inputs(const TaskIsoInputs& in) {
  std::vector<FieldError> errs;
  bool too_large = false;
  if (in.job_id.empty() || in.job_id.size() > max_job_id_length ||
      !std::all_of(in.job_id.begin(), in.job_id.end(), is_job_id_char) || in.job_id.front() == '.')
    errs.push_back({"/job_id", "job id must be 1-64 characters of [A-Za-z0-9._-], not starting with '.'"});
  if (!in.job.is_object() && !in.job.is_null()) errs.push_back({"/job", "job must be a JSON object"});
  else if (in.job.is_object())
    if (auto it = in.job.find("id"); it != in.job.end() && *it != in.job_id)
      errs.push_back({"/job/id", "job.id differs from the job id"});
  if (!in.recipe.is_object()) {
    errs.push_back({"/recipe", "recipe must be a JSON object"});
    return make_error(ErrorKind::invalid_input, "task ISO inputs are not valid", std::move(errs));
  }

  std::size_t payload = 0;
  for (const char* key : {"user_data", "meta_data", "network_config", "unattend_xml", "ks_cfg"})
    if (auto it = in.recipe.find(key); it != in.recipe.end()) {
      if (!it->is_string()) errs.push_back({std::string("/recipe/") + key, "must be a string"});
      else payload += it->get_ref<const std::string&>().size();
    }

  if (auto it = in.recipe.find("files"); it != in.recipe.end()) {
    if (!it->is_array()) {
      errs.push_back({"/recipe/files", "must be an array"});
    } else {
      std::set<std::string> files, dirs;
      for (std::size_t i = 0; i < it->size(); ++i) {
        const auto& f = (*it)[i];
        std::string base = "/recipe/files/" + std::to_string(i);
        if (!f.is_object() || !f.contains("name") || !f["name"].is_string() || !f.contains("content") ||
            !f["content"].is_string()) {
          errs.push_back({base, "a file needs a string name and a string content"});
          continue;
        }
        const auto& name = f["name"].get_ref<const std::string&>();
        payload += f["content"].get_ref<const std::string&>().size() + name.size();
        std::string why;
        if (!is_safe_relative_name(name, &why)) {
          errs.push_back({base + "/name", why});
          continue;
        }
        // ISO 9660 (even with Rock Ridge) limits directory depth to 8; /files/ is one level.
        auto depth = static_cast<std::size_t>(std::count(name.begin(), name.end(), '/')) + 1;
        if (depth > max_file_depth) {
          errs.push_back({base + "/name", "more than " + std::to_string(max_file_depth) + " path components"});
          continue;
        }
        // RR names are UTF-8 bytes; a non-UTF-8 name would be mangled differently per host.
        if (!std::all_of(name.begin(), name.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; })) {
          errs.push_back({base + "/name", "only ASCII file names are allowed"});
          continue;
        }
        if (!files.insert(name).second) {
          errs.push_back({base + "/name", "duplicate file name"});
          continue;
        }
        for (auto slash = name.find('/'); slash != std::string::npos; slash = name.find('/', slash + 1))
          dirs.insert(name.substr(0, slash));
      }
      // "a" as a file and "a/b" as a file cannot both exist.
      for (std::size_t i = 0; i < it->size(); ++i) {
        const auto& f = (*it)[i];
        if (f.is_object() && f.contains("name") && f["name"].is_string() && dirs.count(f["name"].get<std::string>()))
          errs.push_back({"/recipe/files/" + std::to_string(i) + "/name", "name is also used as a directory by another file"});
      }
    }
  }
  if (payload > max_payload_bytes) {
    too_large = errs.empty();
    errs.push_back({"/recipe", "task payload is " + std::to_string(payload) + " bytes; the limit is " +
                                   std::to_string(max_payload_bytes)});
  }
  if (errs.empty()) return Ok{};
  return make_error(too_large ? ErrorKind::too_large : ErrorKind::invalid_input, "task ISO inputs are not valid",
                    std::move(errs));
}

Result<std::vector<TaskFile>> task_files(const TaskIsoInputs& in) {
  if (Status s = check_task_iso_inputs(in); !s) return s.error();
  std::map<std::string, std::string> files;  // sorted by path: the order on the image
  try {
    nlohmann::json job = in.job.is_object() ? in.job : nlohmann::json::object();
    job["id"] = in.job_id;
    files["recipe.json"] = dump_json(in.recipe);
    files["recipe.schema.json"] = std::string(recipe_schema_text());
    files["job.json"] = dump_json(job);
  } catch (const nlohmann::json::exception& e) {
    return make_error(ErrorKind::invalid_input, "recipe or job is not valid UTF-8 JSON",
                      {{"/recipe", e.what()}});
  }
  files[std::string(task_marker_name)] =
      "provisioner-task-iso " + std::to_string(task_format_version) + "\njob_id=" + in.job_id + "\n";

  const auto& r = in.recipe;
  auto str = [&r](const char* key) -> const std::string* {
    auto it = r.find(key);
    return it != r.end() && it->is_string() ? &it->get_ref<const std::string&>() : nullptr;
  };
  // NoCloud wants user-data and meta-data together; when the recipe carries any cloud-init
  // data we write both (user-data empty if the recipe has none) so the drive is usable.
  if (str("user_data") || str("meta_data") || str("network_config")) {
    files["user-data"] = str("user_data") ? *str("user_data") : std::string();
    files["meta-data"] = nocloud_meta_data(r, in.job_id);
    if (auto* nc = str("network_config")) files["network-config"] = *nc;
  }
  if (auto* u = str("unattend_xml")) files["unattend.xml"] = *u;
  if (auto* k = str("ks_cfg")) files["ks.cfg"] = *k;
  if (auto it = r.find("files"); it != r.end())
    for (const auto& f : *it) files["files/" + f["name"].get<std::string>()] = f["content"].get<std::string>();

  std::vector<TaskFile> out;
  out.reserve(files.size());
  for (auto& [path, content] : files) out.push_back({path, std::move(content)});
  return out;
}

Result<std::string> build_task_iso(const TaskIsoInputs& in) {
  if (Status s = ensure_libisofs(); !s) return s.error();
  std::lock_guard lock(libisofs_mutex());  // before any handle: released after they are all gone
  auto files = task_files(in);
  if (!files) return files.error();

  IsoImage* raw = nullptr;
  std::string label(task_volume_label);
  int rc = iso_image_new(label.c_str(), &raw);
  if (rc < 0) return lib_error("cannot create image", rc);
  ImagePtr image(raw);
  set_fixed_identity(raw, label.c_str());
  fix_node(reinterpret_cast<IsoNode*>(iso_image_get_root(raw)), true);
  if (Status s = add_task_files(raw, *files); !s) return s.error();

  auto opts = make_write_opts(volume_uuid_for(*files, "standalone"), true);
  if (!opts) return opts.error();
  return write_image(raw, opts->get());
}

Result<std::string> write_task_iso(const TaskIsoInputs& in, const std::string& path) {
  auto bytes = build_task_iso(in);
  if (!bytes) return bytes.error();
  if (Status s = write_file_atomically(path, *bytes, 0644); !s) return s.error();
  return crypto::sha256_hex(*bytes);
}

Result<SingleIsoOverlay> build_single_iso_overlay(const std::string& base_iso_path, const TaskIsoInputs& in) {
  if (Status s = ensure_libisofs(); !s) return s.error();
  std::lock_guard lock(libisofs_mutex());  // before any handle: released after they are all gone
  auto files = task_files(in);
  if (!files) return files.error();

  std::error_code ec;
  auto base_size = std::filesystem::file_size(base_iso_path, ec);
  if (ec) return make_error(ErrorKind::not_found, "cannot stat base ISO " + base_iso_path + ": " + ec.message());
  if (base_size < head_size + block_size || base_size % block_size != 0)
    return make_error(ErrorKind::invalid_input, "base ISO " + base_iso_path + " is not a whole number of 2 KiB blocks");
  auto base_head = read_range(base_iso_path, 0, head_size);
  if (!base_head) return base_head.error();

  IsoDataSource* src_raw = nullptr;
  int rc = iso_data_source_new_from_file(base_iso_path.c_str(), &src_raw);
  if (rc < 0) return lib_error("cannot open base ISO", rc);
  std::unique_ptr<IsoDataSource, DataSourceDeleter> src(src_raw);

  IsoImage* img_raw = nullptr;
  rc = iso_image_new("", &img_raw);
  if (rc < 0) return lib_error("cannot create image", rc);
  ImagePtr image(img_raw);

  IsoReadOpts* ropts_raw = nullptr;
  rc = iso_read_opts_new(&ropts_raw, 0);
  if (rc < 0) return lib_error("cannot create read options", rc);
  std::unique_ptr<IsoReadOpts, ReadOptsDeleter> ropts(ropts_raw);
  iso_read_opts_set_input_charset(ropts_raw, "UTF-8");
  IsoReadImageFeatures* feat_raw = nullptr;
  rc = iso_image_import(img_raw, src_raw, ropts_raw, &feat_raw);
  std::unique_ptr<IsoReadImageFeatures, FeaturesDeleter> features(feat_raw);
  if (rc < 0) return make_error(ErrorKind::invalid_input, std::string("cannot read base ISO: ") + iso_error_to_msg(rc));

  // The label stays the base's: maintenance OSes often find their root by it (CDLABEL=...).
  const char* vid = iso_image_get_volume_id(img_raw);
  std::string volume_id = vid ? vid : "";
  if (Status s = add_task_files(img_raw, *files); !s) return s.error();

  std::uint64_t session_offset = (base_size + session_alignment - 1) / session_alignment * session_alignment;
  auto session_lba = static_cast<std::uint32_t>(session_offset / block_size);
  auto opts = make_write_opts(volume_uuid_for(*files, "single-iso:" + std::to_string(base_size) + ":" +
                                                          crypto::sha256(*base_head)),
                              false);
  if (!opts) return opts.error();
  iso_write_opts_set_appendable(opts->get(), 1);
  iso_write_opts_set_ms_block(opts->get(), session_lba);
  std::string head = *base_head;
  iso_write_opts_set_overwrite_buf(opts->get(), reinterpret_cast<std::uint8_t*>(head.data()));
  auto session = write_image(img_raw, opts->get());
  if (!session) return session.error();

  // libisofs fills the head with a fresh system area (zeros: we gave it none) and the new
  // volume descriptors. Keep the base's system area byte for byte: its MBR/GPT and hybrid
  // boot code point into the base session, which has not moved.
  std::memcpy(head.data(), base_head->data(), system_area_size);

  SingleIsoOverlay out;
  out.base_size = base_size;
  out.session_lba = session_lba;
  out.volume_id = volume_id;
  out.segments.push_back({IsoSegment::Kind::bytes, 0, head_size, std::move(head)});
  out.segments.push_back({IsoSegment::Kind::base_file, head_size, base_size - head_size, {}});
  std::string tail(session_offset - base_size, '\0');
  tail += *session;
  out.segments.push_back({IsoSegment::Kind::bytes, 0, tail.size(), std::move(tail)});
  out.size = session_offset + session->size();
  return out;
}

Status materialize_single_iso(const std::string& base_iso_path, const SingleIsoOverlay& overlay,
                              const std::string& path) {
  return atomic_write(path, [&](int fd) -> Status {
    int in = ::open(base_iso_path.c_str(), O_RDONLY | O_CLOEXEC);
    if (in < 0) return make_error(ErrorKind::not_found, "cannot open " + base_iso_path);
    std::string buf(1 << 20, '\0');
    for (const auto& seg : overlay.segments) {
      if (seg.kind == IsoSegment::Kind::bytes) {
        if (Status s = write_all(fd, seg.data.data(), seg.data.size()); !s) {
          ::close(in);
          return s;
        }
        continue;
      }
      std::uint64_t done = 0;
      while (done < seg.length) {
        auto want = static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), seg.length - done));
        ssize_t n = ::pread(in, buf.data(), want, static_cast<off_t>(seg.offset + done));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
          ::close(in);
          return make_error(ErrorKind::internal, "base ISO changed or is unreadable: " + base_iso_path);
        }
        if (Status s = write_all(fd, buf.data(), static_cast<std::size_t>(n)); !s) {
          ::close(in);
          return s;
        }
        done += static_cast<std::uint64_t>(n);
      }
    }
    ::close(in);
    return Ok{};
  });
}

}  // namespace provisioner::iso
