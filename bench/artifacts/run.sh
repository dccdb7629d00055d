#!/usr/bin/env bash
# Builds the artifact serving benchmark and runs it: our ArtifactServer vs nginx on the same
# 1 GiB file in the same run, 64 clients doing 1 MiB random Range GETs. Extra arguments go to
# the bench (e.g. --seconds 10 --rounds 3). Prints GB/s for each server and the ratio.
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
flock /tmp/provisioner-build.lock cmake --build "$build" --target artifacts_bench -j2 >&2
exe=$(find "$build" -name artifacts_bench -type f -perm -u+x | head -n1)
exec "$exe" "$@"
