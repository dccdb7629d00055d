#!/usr/bin/env bash
# Validates every unit under quadlet/: the Quadlet generator (dry run and real generation)
# must accept each .container without a word on stderr, and `systemd-analyze verify` must
# accept the generated services plus the plain units, again with nothing on stderr: warnings
# fail the check too.
#
# Debian 12's podman (4.3) has no Quadlet. Unless QUADLET=/path/to/quadlet is given (or the
# host's podman has one), the generator is taken from Debian 13's podman package: downloaded
# with apt-get from the mirror this machine already uses (read from its apt sources, so no
# mirror host is written here), unpacked with dpkg-deb -x, cached under $PROVISIONER_CACHE.
#
# Usage: quadlet/validate.sh [unit-dir]      exit 0 = all valid; 1 = problems; 77 = cannot run
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
units=${1:-$here}
cache=${PROVISIONER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/provisioner}
suite=${QUADLET_SUITE:-trixie}

log() { printf 'validate: %s\n' "$*" >&2; }

# The Debian mirror from this machine's apt configuration (deb822 .sources or one-line .list).
debian_mirror() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -r "$f" ] || continue
    awk 'BEGIN{RS=""} /Types:[^\n]*deb/ && /Components:[^\n]*main/ && !/security/ {
           if (match($0, /URIs:[ \t]*[^ \t\n]+/)) { u = substr($0, RSTART, RLENGTH); sub(/URIs:[ \t]*/, "", u); print u; exit } }' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -r "$f" ] || continue
    awk '$1 == "deb" && !/security/ { for (i = 2; i <= NF; i++) if ($i ~ /^(https?|file):/) { print $i; exit } }' "$f"
  done
}

find_quadlet() {
  if [ -n "${QUADLET:-}" ]; then echo "$QUADLET"; return; fi
  if [ -x /usr/libexec/podman/quadlet ]; then echo /usr/libexec/podman/quadlet; return; fi
  local dir=$cache/quadlet-$suite
  if [ -x "$dir/usr/libexec/podman/quadlet" ]; then echo "$dir/usr/libexec/podman/quadlet"; return; fi
  command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null || return 1
  local mirror
  mirror=$(debian_mirror | head -n1)
  [ -n "$mirror" ] || { log "no Debian mirror in the apt configuration"; return 1; }
  local work
  work=$(mktemp -d)
  # A private apt state: the host's sources and lists stay untouched.
  mkdir -p "$work/etc" "$work/lists/partial" "$work/cache/archives/partial"
  printf 'Types: deb\nURIs: %s\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    "$mirror" "$suite" >"$work/etc/$suite.sources"
  local apt=(-q -o "Dir::Etc::sourcelist=/dev/null" -o "Dir::Etc::sourceparts=$work/etc"
             -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache" -o "Dir::State::status=/dev/null"
             -o "APT::Sandbox::User=root" -o "Acquire::Retries=5")
  log "fetching podman ($suite) from $mirror for its quadlet generator"
  if ! apt-get "${apt[@]}" update >"$work/log" 2>&1 || ! (cd "$work" && apt-get "${apt[@]}" download podman >>"$work/log" 2>&1); then
    cat "$work/log" >&2
    rm -rf "$work"
    return 1
  fi
  mkdir -p "$dir.tmp"
  dpkg-deb -x "$work"/podman_*.deb "$dir.tmp"
  rm -rf "$dir"
  mv "$dir.tmp" "$dir"
  rm -rf "$work"
  echo "$dir/usr/libexec/podman/quadlet"
}

quadlet=$(find_quadlet) || { log "no quadlet generator available"; exit 77; }
command -v systemd-analyze >/dev/null || { log "systemd-analyze missing"; exit 77; }
log "quadlet $("$quadlet" -version 2>/dev/null || echo '?') at $quadlet"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
status=0
fail() { log "FAIL: $*"; status=1; }

# 1. The generator, dry run: prints what it would write, complains on stderr about anything off.
if ! QUADLET_UNIT_DIRS=$units "$quadlet" -dryrun -no-kmsg-log >"$work/dryrun.out" 2>"$work/dryrun.err"; then
  cat "$work/dryrun.err" >&2
  fail "quadlet -dryrun exited non-zero"
fi
# The dry run narrates on stderr ("Loading source unit file ..."); anything else is a complaint.
if grep -v -e '^quadlet-generator\[[0-9]*\]: Loading source unit file' -e '^Loading source unit file' "$work/dryrun.err" | grep -q .; then
  grep -v -e 'Loading source unit file' "$work/dryrun.err" >&2
  fail "quadlet -dryrun complained"
fi

# 2. Real generation into a fake root that also has the plain units and stub executables.
root=$work/root
mkdir -p "$root/etc/systemd/system" "$root/usr/bin" "$root/usr/lib/systemd"
if ! QUADLET_UNIT_DIRS=$units "$quadlet" -no-kmsg-log "$root/etc/systemd/system" 2>"$work/gen.err" || [ -s "$work/gen.err" ]; then
  cat "$work/gen.err" >&2
  fail "quadlet generation failed or warned"
fi
shopt -s nullglob
containers=("$units"/*.container)
for c in "${containers[@]}"; do
  svc=$(basename "${c%.container}").service
  [ -f "$root/etc/systemd/system/$svc" ] || fail "$c produced no $svc"
done
plain=("$units"/*.service "$units"/*.target "$units"/*.timer "$units"/*.socket "$units"/*.path)
cp "${plain[@]}" "$root/etc/systemd/system/"
# The host's own unit files give the defaults (sysinit.target, ...); stubs stand in for the
# programs the units run, so verify checks the units, not this machine.
cp -a /lib/systemd/system "$root/usr/lib/systemd/"
for b in podman provisioner-dispatcher systemctl; do
  printf '#!/bin/sh\nexit 0\n' >"$root/usr/bin/$b"
  chmod 755 "$root/usr/bin/$b"
done

to_verify=()
for f in "$root"/etc/systemd/system/*; do
  name=$(basename "$f")
  case $name in
    *@.service) to_verify+=("${name%@.service}@example.service.service") ;;  # templates need an instance
    *) to_verify+=("$name") ;;
  esac
done
if ! (cd "$root/etc/systemd/system" && systemd-analyze verify --root="$root" "${to_verify[@]}") >"$work/verify.out" 2>&1 ||
   [ -s "$work/verify.out" ]; then
  cat "$work/verify.out" >&2
  fail "systemd-analyze verify reported problems"
fi

# 3. Structural rules the tools above cannot know.
for c in "${containers[@]}"; do
  grep -q '^OnFailure=provision-report-failure@%n.service' "$c" || fail "$(basename "$c") lacks OnFailure= reporting"
  grep -q '^Type=oneshot' "$c" || fail "$(basename "$c") is not Type=oneshot"
  grep -q '^RemainAfterExit=yes' "$c" || fail "$(basename "$c") lacks RemainAfterExit=yes"
done

if [ "$status" -eq 0 ]; then
  log "OK: ${#containers[@]} containers, ${#to_verify[@]} units verified"
fi
exit "$status"
