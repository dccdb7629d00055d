#!/usr/bin/env bash
# API throughput with wrk on 127.0.0.1: GET /api/v1/jobs/{id} and POST /api/v1/jobs.
#   bench/api/run.sh [seconds] [connections]
# Prints req/s and p99 latency of each. Builds the release controller first.
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-15}
connections=${2:-32}
./scripts/build release >/dev/null
bin=${CONTROLLER_BIN:-build/controller/provisioner-controller}
work=$(mktemp -d)
# On the way out: stop the controller and show anything alarming it printed (a crash, a
# sanitizer report) before its log goes.
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true;
      grep -A30 -E "AddressSanitizer|runtime error|Segmentation|terminate called" "$work/log" >&2 || true;
      rm -rf "$work"' EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
BENCH_TOKEN=$($bin generate-token)
export BENCH_TOKEN
hash=$(printf '%s\n' "$BENCH_TOKEN" | $bin hash-token)
$bin --listen "127.0.0.1:$port" --data-dir "$work/data" --admin-token-sha256 "$hash" --log-level warn \
  ${HTTP_THREADS:+--http-threads "$HTTP_THREADS"} 2>"$work/log" &
pid=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.05; done

url=http://127.0.0.1:$port
id=$(curl -sf -X POST -H "Authorization: Bearer $BENCH_TOKEN" -d @<(sed -n 's/^wrk.body = \[\[\(.*\)\]\]$/\1/p' bench/api/post_job.lua) "$url/api/v1/jobs" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')

report() {  # name, wrk output
  local rps p99
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$2")
  p99=$(awk '$1=="99%" {print $2}' <<<"$2")
  errors=$(grep -E "Non-2xx|Socket errors" <<<"$2" || true)
  printf '%-28s %10s req/s   p99 %8s   %s\n' "$1" "$rps" "$p99" "${errors:-no errors}"
}
echo "controller $(nproc) cores, wrk -t2 -c$connections -d${seconds}s, $(date -u +%FT%TZ)"
out=$(wrk -t2 -c"$connections" -d"${seconds}s" --latency -s bench/api/get_job.lua "$url/api/v1/jobs/$id")
report "GET /api/v1/jobs/{id}" "$out"
out=$(wrk -t2 -c"$connections" -d"${seconds}s" --latency -s bench/api/post_job.lua "$url/api/v1/jobs")
report "POST /api/v1/jobs" "$out"
echo "jobs stored: $(curl -sf -H "Authorization: Bearer $BENCH_TOKEN" "$url/metrics" | awk '/^provisioner_jobs\{status="queued"\}/ {print $2}')"
