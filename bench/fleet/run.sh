#!/usr/bin/env bash
# One fleet over 1,000 servers on mock BMCs (HTTPS, +100 ms per Redfish call, single-iso),
# max_parallel 1,000, a simulated install of 20 s, 200 API GETs a second meanwhile. Extra
# arguments go to the bench (--servers N --delay-ms D --install-s S --api-rps R --tls 0|1
# --mode single-iso|dual-cd --base-mib M --workers W --store sqlite|postgres).
set -euo pipefail
cd "$(dirname "$0")/../.."
./scripts/install-deps
cmake -S . -B build-bench -G Ninja -DCMAKE_BUILD_TYPE=Release -DPROVISIONER_BENCH=ON >/dev/null
cmake --build build-bench --target fleet_bench provisioner-controller -j"${JOBS:-2}" >&2
exec build-bench/bench/fleet/fleet_bench "$@"
