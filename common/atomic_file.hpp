#pragma once
// Write-to-temp, fsync, rename, fsync directory: readers see the old file or the new one,
// never a half-written one, even across a crash.
#include <filesystem>
#include <string>
#include <string_view>
#include <sys/types.h>

#include "common/result.hpp"

namespace provisioner {

Status write_file_atomically(const std::filesystem::path& path, std::string_view bytes, mode_t mode = 0644);
Result<std::string> read_file(const std::filesystem::path& path);
// Sets a file's atime to now and leaves its mtime: the stores keep mtime as the creation time
// (served as Last-Modified) and count GC retention from atime ("last registered / pushed").
void touch_atime(const std::filesystem::path& path);

}  // namespace provisioner
