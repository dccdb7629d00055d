#!/usr/bin/env bash
# Builds (or finds cached) the two images the e2e tests need and links them into OUT_DIR:
#   maint.iso       the test maintenance OS (maint-os/build-test-image.sh), with this dispatcher
#   rootfs.tar.zst  the installed system of recipes/debian-12.json (maint-os/build-rootfs-image.sh)
#   rootfs.sha256   its digest
# Both builds are cached by input hash under $PROVISIONER_CACHE (default ~/.cache/provisioner),
# so a re-run costs nothing when neither changed.
#   tests/e2e/build-images.sh DISPATCHER_BIN OUT_DIR
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 DISPATCHER_BIN OUT_DIR" >&2; exit 2; }
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
start=$(date +%s)
mkdir -p "$2"
# Serialised: two builds of the same inputs at once would only race for the same cache entry.
exec 9>"${TMPDIR:-/tmp}/provisioner-e2e-images.lock"
flock 9
nice -n 10 "$src/maint-os/build-rootfs-image.sh" --out "$2" >/dev/null
nice -n 10 "$src/maint-os/build-test-image.sh" --dispatcher "$1" --out "$2" >/dev/null
ls -lL "$2"
echo "e2e images ready in $(( $(date +%s) - start )) s"
