#!/usr/bin/env bash
# Builds the task ISO benchmark and runs it: build_task_iso in process vs `xorriso -as mkisofs`
# on the same 64 KiB payload, in the same run. Prints medians and the ratio. Extra arguments
# go to the bench (--iterations N --xorriso-iterations M).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${BUILD_DIR:-$root/build-bench}
src=$root
if ! grep -Eq 'add_subdirectory\(\s*bench' "$root/CMakeLists.txt"; then
  # The top level does not include bench/ yet: build it through a small wrapper project.
  src=$build-wrapper
  mkdir -p "$src"
  cat >"$src/CMakeLists.txt" <<CMAKE
cmake_minimum_required(VERSION 3.25)
project(provisioner_bench_wrapper LANGUAGES CXX C)
set(CMAKE_CXX_STANDARD 20)
set(CMAKE_CXX_STANDARD_REQUIRED ON)
add_subdirectory("$root" provisioner)
add_subdirectory("$root/bench" bench)
CMAKE
fi
cmake -S "$src" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DPROVISIONER_BENCH=ON \
  -DPROVISIONER_TESTS=OFF >/dev/null
flock /tmp/provisioner-build.lock cmake --build "$build" --target iso_bench -j2 >&2
exe=$(find "$build" -name iso_bench -type f -perm -u+x | head -n1)
exec "$exe" "$@"
