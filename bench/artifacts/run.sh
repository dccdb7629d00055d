#!/usr/bin/env bash
# Builds the artifact serving benchmark and runs it: our ArtifactServer vs nginx on the same
# 1 GiB file in the same run, 64 clients doing 1 MiB random Range GETs. Extra arguments go to
# the bench (e.g. --seconds 10 --rounds 3). Prints GB/s for each server and the ratio.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD_DIR:-$root/build-bench}
"$root/scripts/install-deps"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DPROVISIONER_BENCH=ON >/dev/null
cmake --build "$build" --target artifacts_bench -j"${JOBS:-2}" >&2
exe=$(find "$build" -name artifacts_bench -type f -perm -u+x | head -n1)
exec "$exe" "$@"
