#!/usr/bin/env bash
# Registry benchmark: push and pull of a 1 GiB image with skopeo into the controller's /v2/
# and, in the same run, into Debian's docker-registry (distribution/distribution, the reference
# registry) with its own config, plus a plain cp of the same bytes on the same disk (the
# physical limit); then 64 concurrent pulls of the same 1 GiB blob from the controller and
# from nginx serving the same file. Prints seconds and MB/s per run, medians, and the ratios.
#
#   bench/registry/run.sh [rounds] [size_mib]        (defaults: 3 rounds, 1024 MiB)
#
# The image is one zstd layer of random bytes (incompressible: skopeo passes it through as
# is, so the figures measure the registries, not a compressor).
set -euo pipefail
rounds=${1:-3}
size_mib=${2:-1024}
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD_DIR:-$root/build-bench}
"$root/scripts/install-deps"
for tool in docker-registry nginx skopeo curl zstd; do
  command -v "$tool" >/dev/null || { [ -x "/usr/sbin/$tool" ] || { echo "missing $tool" >&2; exit 1; }; }
done
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DPROVISIONER_BENCH=ON >/dev/null
cmake --build "$build" --target provisioner-controller -j"${JOBS:-2}" >&2
controller_bin=$build/controller/provisioner-controller

work=$(mktemp -d "${TMPDIR:-/var/tmp}/provisioner-bench-registry-XXXXXX")
chmod 755 "$work"  # nginx workers (www-data) read the layer file
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$1/" && return 0; sleep 0.1; done; echo "port $1 never answered" >&2; exit 1; }
now() { date +%s.%N; }
mbps() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.0f", b / 1048576 / s }'; }
median() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
calc() { awk "BEGIN { printf \"%.4f\", $1 }"; }

# ---- the image: an OCI layout with one zstd layer of random bytes -------------------------
echo "building a ${size_mib} MiB image..." >&2
layout=$work/layout
mkdir -p "$layout/blobs/sha256"
head -c "$((size_mib << 20))" /dev/urandom | zstd -q --fast -T2 -o "$work/layer.zst"
layer_sha=$(sha256sum "$work/layer.zst" | cut -d' ' -f1)
layer_size=$(stat -c %s "$work/layer.zst")
mv "$work/layer.zst" "$layout/blobs/sha256/$layer_sha"
config='{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
config_sha=$(printf %s "$config" | sha256sum | cut -d' ' -f1)
printf %s "$config" >"$layout/blobs/sha256/$config_sha"
manifest=$(printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+zstd","digest":"sha256:%s","size":%d}]}' \
  "$config_sha" "${#config}" "$layer_sha" "$layer_size")
manifest_sha=$(printf %s "$manifest" | sha256sum | cut -d' ' -f1)
printf %s "$manifest" >"$layout/blobs/sha256/$manifest_sha"
printf '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%d,"annotations":{"org.opencontainers.image.ref.name":"1"}}]}' \
  "$manifest_sha" "${#manifest}" >"$layout/index.json"

# ---- the registries: started afresh for every round (new data dir, new port), so neither
# keeps blobs from an earlier round and skopeo's blob-info cache has nothing to mount from ----
token=bench-ci-token-$RANDOM$RANDOM
start_controller() {  # $1: round; sets cport, cpid
  cport=$(free_port)
  local aport d=$work/controller-$1
  aport=$(free_port)
  mkdir -p "$d"
  cat >"$d/c.toml" <<EOF
listen = "127.0.0.1:$cport"
data_dir = "$d/data"
[log]
level = "warn"
file = "$d/controller.log"
[artifacts]
listen = "127.0.0.1:$aport"
[[tokens]]
name = "bench"
role = "admin"
sha256 = "$(printf %s "$token" | sha256sum | cut -d' ' -f1)"
EOF
  "$controller_bin" --config "$d/c.toml" >"$d/stdout" 2>&1 &
  cpid=$!
  pids+=("$cpid")
  wait_port "$cport"
}
start_distribution() {  # $1: round; sets rport, rpid
  rport=$(free_port)
  local d=$work/distribution-$1
  mkdir -p "$d"
  cat >"$d/config.yml" <<EOF
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $d/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$rport
EOF
  docker-registry serve "$d/config.yml" >"$d/log" 2>&1 &
  rpid=$!
  pids+=("$rpid")
  wait_port "$rport"
}

# ---- nginx serving the layer file (for the 64 concurrent pulls) --------------------------
nport=$(free_port)
mkdir -p "$work/nginx"
cat >"$work/nginx/nginx.conf" <<EOF
worker_processes 2;
daemon off;
error_log $work/nginx/error.log;
pid $work/nginx/nginx.pid;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_timeout 60;
  server {
    listen 127.0.0.1:$nport;
    root $layout/blobs/sha256;
  }
}
EOF
nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" &
pids+=($!)
wait_port "$nport"

# ---- push and pull, alternating registries each round ------------------------------------
declare -A push pull wire ingest
for r in $(seq "$rounds"); do
  start_controller "$r"
  start_distribution "$r"
  for reg in provisioner distribution; do
    if [ $reg = provisioner ]; then
      host=127.0.0.1:$cport creds=(--dest-creds "bench:$token") src_creds=(--src-creds "bench:$token")
      header="Authorization: Bearer $token"
    else
      host=127.0.0.1:$rport creds=() src_creds=() header="X-None: 1"
    fi
    sync
    t0=$(now)
    skopeo copy --quiet --dest-tls-verify=false "${creds[@]}" "oci:$layout:1" "docker://$host/bench/r$r:1"
    t1=$(now)
    rm -rf "$work/pulled"
    skopeo copy --quiet --src-tls-verify=false "${src_creds[@]}" "docker://$host/bench/r$r:1" "oci:$work/pulled:1"
    t2=$(now)
    cmp -s "$work/pulled/blobs/sha256/$layer_sha" "$layout/blobs/sha256/$layer_sha" || { echo "$reg: pulled bytes differ" >&2; exit 1; }
    rm -rf "$work/pulled"
    # The blob alone over the wire to /dev/null: the server without the client's disk.
    t3=$(now)
    curl -sf -o /dev/null -H "$header" "http://$host/v2/bench/r$r/blobs/sha256:$layer_sha"
    t4=$(now)
    # The blob alone pushed by curl (POST a session, PUT the whole body with its digest): the
    # server's ingest (hash, write, fsync) without skopeo's own work.
    sync
    loc=$(curl -sf -D - -o /dev/null -X POST -H "$header" "http://$host/v2/bench/c$r/blobs/uploads/" |
      tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
    case $loc in http*) ;; *) loc=http://$host$loc ;; esac
    sep='?'; [[ $loc == *'?'* ]] && sep='&'
    t5=$(now)
    code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT -T "$layout/blobs/sha256/$layer_sha" -H 'Expect:' -H "$header" \
      -H 'Content-Type: application/octet-stream' "$loc${sep}digest=sha256:$layer_sha")
    t6=$(now)
    [ "$code" = 201 ] || { echo "$reg: curl push answered $code" >&2; exit 1; }
    p=$(calc "$t1 - $t0") q=$(calc "$t2 - $t1") w=$(calc "$t4 - $t3") u=$(calc "$t6 - $t5")
    push[$reg]+="$p "
    pull[$reg]+="$q "
    wire[$reg]+="$w "
    ingest[$reg]+="$u "
    printf 'round %d %-13s skopeo push %6.2f s (%5s MB/s), pull %6.2f s (%5s MB/s); curl PUT %5.2f s (%5s MB/s), GET to /dev/null %5.2f s (%5s MB/s)\n' \
      "$r" "$reg" "$p" "$(mbps "$layer_size" "$p")" "$q" "$(mbps "$layer_size" "$q")" "$u" "$(mbps "$layer_size" "$u")" \
      "$w" "$(mbps "$layer_size" "$w")"
  done
  if [ "$r" -lt "$rounds" ]; then
    kill "$cpid" "$rpid"
    wait "$cpid" "$rpid" 2>/dev/null || true
    rm -rf "$work/controller-$r/data" "$work/distribution-$r/data"
  fi
  sync
  t0=$(now)
  cp "$layout/blobs/sha256/$layer_sha" "$work/cp-$r"
  t1=$(now)
  sync -f "$work/cp-$r"
  t2=$(now)
  rm -f "$work/cp-$r"
  c=$(calc "$t1 - $t0") cs=$(calc "$t2 - $t0")
  push[cp]+="$c " push[cp_fsync]+="$cs "
  printf 'round %d %-13s %6.2f s (%5s MB/s); with fsync %6.2f s (%5s MB/s)\n' "$r" "cp" "$c" "$(mbps "$layer_size" "$c")" "$cs" "$(mbps "$layer_size" "$cs")"
done

med() { tr ' ' '\n' <<<"$1" | grep -v '^$' | median; }
pp=$(med "${push[provisioner]}") pd=$(med "${push[distribution]}")
qp=$(med "${pull[provisioner]}") qd=$(med "${pull[distribution]}")
wp=$(med "${wire[provisioner]}") wd=$(med "${wire[distribution]}")
up=$(med "${ingest[provisioner]}") ud=$(med "${ingest[distribution]}")
cpm=$(med "${push[cp]}") cpf=$(med "${push[cp_fsync]}")
echo
echo "medians over $rounds rounds, $((layer_size >> 20)) MiB image:"
printf '  push: provisioner %.2f s, docker-registry %.2f s -> provisioner is %.2fx as fast\n' "$pp" "$pd" "$(calc "$pd / $pp")"
printf '  pull: provisioner %.2f s, docker-registry %.2f s -> provisioner is %.2fx as fast\n' "$qp" "$qd" "$(calc "$qd / $qp")"
printf '  blob PUT with curl: provisioner %.2f s, docker-registry %.2f s -> provisioner is %.2fx as fast; %.2fx cp+fsync\n' "$up" "$ud" "$(calc "$ud / $up")" "$(calc "$up / $cpf")"
printf '  blob GET to /dev/null: provisioner %.2f s, docker-registry %.2f s -> provisioner is %.2fx as fast\n' "$wp" "$wd" "$(calc "$wd / $wp")"
printf '  cp %.2f s (with fsync %.2f s): provisioner push is %.2fx cp, %.2fx cp+fsync; pull %.2fx cp\n' "$cpm" "$cpf" \
  "$(calc "$pp / $cpm")" "$(calc "$pp / $cpf")" "$(calc "$qp / $cpm")"

# ---- 64 concurrent pulls of the same blob ------------------------------------------------
pulls=64
fetch_all() {  # url [header]
  local url=$1 header=${2:-X-None: 1}
  seq "$pulls" | xargs -P "$pulls" -I{} curl -sf -o /dev/null -H "$header" "$url"
}
fetch_all "http://127.0.0.1:$nport/$layer_sha"  # warm the page cache for both
t0=$(now); fetch_all "http://127.0.0.1:$cport/v2/bench/r$rounds/blobs/sha256:$layer_sha" "Authorization: Bearer $token"; t1=$(now)
fetch_all "http://127.0.0.1:$nport/$layer_sha"; t2=$(now)
ours=$(calc "$t1 - $t0") theirs=$(calc "$t2 - $t1")
total=$((layer_size * pulls))
echo
printf '%d concurrent pulls of the %d MiB blob: provisioner %.2f s (%s MB/s aggregate), nginx %.2f s (%s MB/s) -> ratio %.2f\n' \
  "$pulls" "$((layer_size >> 20))" "$ours" "$(mbps "$total" "$ours")" "$theirs" "$(mbps "$total" "$theirs")" \
  "$(calc "$theirs / $ours")"
