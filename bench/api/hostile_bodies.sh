#!/usr/bin/env bash
# What hostile bodies and request heads do to the controller's memory (issue 10, defect 1):
#   bench/api/hostile_bodies.sh [MiB per probe]
# Starts the release controller on 127.0.0.1, runs each probe of hostile_bodies.py once (a
# fresh controller per probe) and prints the RSS before, at the peak and after.
set -euo pipefail
cd "$(dirname "$0")/../.."
mib=${1:-2048}
bin=${CONTROLLER_BIN:-build/controller/provisioner-controller}
work=$(mktemp -d)
pid=
trap 'if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi; rm -rf "$work"' EXIT
token=$($bin generate-token)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
aport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$work/c.toml" <<TOML
listen = "127.0.0.1:$port"
data_dir = "$work/data"
[log]
level = "warn"
[artifacts]
listen = "127.0.0.1:$aport"
[[tokens]]
name = "bench"
role = "admin"
sha256 = "$(printf '%s' "$token" | $bin hash-token)"
TOML
for probe in "chunked" "chunked --token $token" "onechunk" "onechunk --token $token" "longline"; do
  rm -rf "$work/data"
  $bin --config "$work/c.toml" 2>>"$work/log" &
  pid=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.05; done
  # shellcheck disable=SC2086 # the probe's words are its arguments
  python3 bench/api/hostile_bodies.py --port "$port" --pid "$pid" --mib "$mib" --mode $probe | sed "s/$token/<token>/"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  pid=
done
