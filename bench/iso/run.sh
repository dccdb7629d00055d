#!/usr/bin/env bash
# Builds the task ISO benchmark and runs it: build_task_iso in process vs `xorriso -as mkisofs`
# on the same 64 KiB payload, in the same run. Prints medians and the ratio. Extra arguments
# go to the bench (--iterations N --xorriso-iterations M).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD_DIR:-$root/build-bench}
"$root/scripts/install-deps"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DPROVISIONER_BENCH=ON >/dev/null
cmake --build "$build" --target iso_bench -j"${JOBS:-2}" >&2
exe=$(find "$build" -name iso_bench -type f -perm -u+x | head -n1)
exec "$exe" "$@"
