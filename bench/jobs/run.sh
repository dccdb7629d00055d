#!/usr/bin/env bash
# 1,000 jobs against mock BMCs that add 100 ms to every call: time until every reset is
# issued and the controller's peak RSS. Extra arguments go to the bench (--jobs N --delay-ms D
# --workers W --max-requests R).
set -euo pipefail
cd "$(dirname "$0")/../.."
./scripts/install-deps
cmake -S . -B build-bench -G Ninja -DCMAKE_BUILD_TYPE=Release -DPROVISIONER_BENCH=ON >/dev/null
cmake --build build-bench --target jobs_bench provisioner-controller -j"${JOBS:-2}" >&2
exec build-bench/bench/jobs/jobs_bench "$@"
