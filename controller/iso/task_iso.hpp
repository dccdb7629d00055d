#pragma once
// The task ISO: everything a maintenance OS needs to run one job, as a small ISO 9660 image
// (Rock Ridge + Joliet, level 3). The same inputs always give the same bytes, so the sha256 of
// the image can be the artifact id and a rebuilt ISO is recognised as the one already stored.
// Layout and label rule: controller/iso/README.md.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/result.hpp"

namespace provisioner::iso {

// Volume label of every stand-alone task ISO. It is also the NoCloud label, so the ISO doubles
// as a cloud-init seed; the marker file below tells a task ISO from any other "cidata" drive.
inline constexpr std::string_view task_volume_label = "CIDATA";
// Present at the root of every task ISO (stand-alone and single-ISO); its first line is
// `provisioner-task-iso <format version>`, then `job_id=<id>`.
inline constexpr std::string_view task_marker_name = "provisioner-task";
inline constexpr int task_format_version = 1;

// Limits beyond the recipe schema, checked before anything is built (→ HTTP 400).
inline constexpr std::size_t max_payload_bytes = 16u * 1024u * 1024u;  // all file contents
inline constexpr std::size_t max_job_id_length = 64;
inline constexpr std::size_t max_file_depth = 6;  // components under /files/

struct TaskIsoInputs {
  std::string job_id;    // [A-Za-z0-9._-]{1,64}; becomes the NoCloud instance-id
  nlohmann::json recipe;  // already validated by RecipeValidator
  // job.json: {id, webhook_url, signing_key_id, signing_key, ...}; "id" is set to job_id
  // (a different "id" is refused).
  nlohmann::json job;
};

// Checks what the schema cannot: job id, total payload size, file name safety (again, since
// a recipe may reach here without the validator), depth, file/dir clashes. Every problem is a
// FieldError with a JSON pointer (`/recipe/files/3/name`, `/job_id`, `/job/id`, `/recipe`).
// Status error kind: invalid_input (or too_large when only the size limit is exceeded).
Status check_task_iso_inputs(const TaskIsoInputs& inputs);

// One file of the task ISO: path relative to the root ("recipe.json", "files/a/b.conf").
struct TaskFile {
  std::string path;
  std::string content;
};
// The files the ISO carries, sorted by path (this is also their order on the image).
Result<std::vector<TaskFile>> task_files(const TaskIsoInputs& inputs);

// The whole stand-alone task ISO image, in memory (a few hundred KiB at most for 16 MiB of
// payload plus headers). Deterministic: same inputs → same bytes, whatever TZ, umask, uid or
// the wall clock say.
Result<std::string> build_task_iso(const TaskIsoInputs& inputs);

// build_task_iso + an atomic write (temp file in the same directory, fsync, rename, fsync dir).
// Returns the lowercase hex sha256 of what was written.
Result<std::string> write_task_iso(const TaskIsoInputs& inputs, const std::string& path);

// ---- single-ISO media mode -------------------------------------------------------------
// The per-job ISO is the maintenance ISO with the task files appended as a new ISO session.
// It is never written whole: it is the concatenation of these segments, in order.
struct IsoSegment {
  enum class Kind { base_file, bytes };
  Kind kind = Kind::bytes;
  std::uint64_t offset = 0;  // base_file: where the range starts in the base file; bytes: 0
  std::uint64_t length = 0;  // how many bytes of the virtual file this segment covers
  std::string data;          // bytes: the content (data.size() == length); base_file: empty
};

struct SingleIsoOverlay {
  std::vector<IsoSegment> segments;  // head (64 KiB, rewritten) · base range · new session
  std::uint64_t size = 0;            // total bytes of the virtual ISO
  std::uint64_t base_size = 0;       // size of the base file the overlay was built for
  std::uint32_t session_lba = 0;     // first 2 KiB block of the appended session
  std::string volume_id;             // the label of the result (the base's, kept on purpose)
};

// Imports the base ISO (its El Torito catalog and boot images stay where they are), adds the
// task files and returns the per-job parts. The base file must not change afterwards: serve
// it only while its size (and ideally sha256) match what the overlay was built for.
// Errors: invalid_input (inputs), not_found (base missing), conflict (base already holds a
// task path), internal (libisofs).
Result<SingleIsoOverlay> build_single_iso_overlay(const std::string& base_iso_path,
                                                  const TaskIsoInputs& inputs);

// Writes base ++ overlay into `path` (atomically). For tests, tools and debugging only: the
// controller serves the segments as a virtual file instead of writing this copy.
Status materialize_single_iso(const std::string& base_iso_path, const SingleIsoOverlay& overlay,
                              const std::string& path);

}  // namespace provisioner::iso
