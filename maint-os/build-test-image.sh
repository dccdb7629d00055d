#!/usr/bin/env bash
# Hooks and unit text below are literal on purpose ($1 is mmdebstrap's root, $TERM systemd's).
# shellcheck disable=SC2016
# Builds the TEST maintenance image from Debian packages (the production one is the bootc
# Containerfile beside this script). Same dispatcher, same quadlet/ units, same tool scripts.
#
#   maint-os/build-test-image.sh [--dispatcher PATH] [--out DIR]
#
# Output (in the cache, linked from --out): maint.iso (hybrid BIOS/UEFI, grub-mkrescue),
# vmlinuz + initrd.img (PXE: boot the kernel with that initrd; nothing else to fetch).
#
# Design (why):
# - Debian 13 "trixie" userland: its podman (5.4) has Quadlet; Debian 12's (4.3) has not.
# - Packages come from the machine's apt configuration: the mirror URL is read from
#   /etc/apt/sources.list* at run time and handed to mmdebstrap (mmdebstrap alone would default
#   to deb.debian.org). No mirror host is written in this repository.
# - The whole root filesystem is the initramfs (zstd cpio): the ISO and PXE boot the very same
#   kernel + initrd, no live-boot/squashfs/root= plumbing. Costs RAM (~2 GiB VM minimum).
#   Because an initramfs root cannot be pivot_root'ed, containers.conf sets no_pivot_root.
# - Tool images: one Debian rootfs with every tool's packages and scripts, packed as OCI with
#   umoci and copied with skopeo into the image's container storage (vfs driver: no mounts
#   needed at build time) under each tool's name, so the units' Image= references resolve
#   with Pull=never. No container daemon and no `podman build` needed here.
# - Cached by input hash (this script, quadlet/, maint-os/tools/, the dispatcher binary) under
#   $PROVISIONER_CACHE/maint-os/<hash>/: an unchanged input set is not rebuilt.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=$(cd "$here/.." && pwd)
cache=${PROVISIONER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/provisioner}
suite=${MAINT_SUITE:-trixie}
dispatcher=""
out=""
while [ $# -gt 0 ]; do
  case $1 in
    --dispatcher) dispatcher=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "usage: $0 [--dispatcher PATH] [--out DIR]" >&2; exit 2 ;;
  esac
done
log() { printf 'build-test-image: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
[ "$(id -u)" -eq 0 ] || die "run as root (mmdebstrap root mode, device nodes, ownership in the image)"

# Build tools, installed here rather than in scripts/install-deps: the test suite does not need them.
need=(mmdebstrap umoci skopeo xorriso grub-common grub-pc-bin grub-efi-amd64-bin mtools dosfstools zstd cpio)
missing=()
for p in "${need[@]}"; do
  [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)" = installed ] || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ -z "$dispatcher" ]; then
  dispatcher=$src/build-dispatcher/dispatcher/provisioner-dispatcher
  [ -x "$dispatcher" ] || dispatcher=$src/build/dispatcher/provisioner-dispatcher
fi
[ -x "$dispatcher" ] || die "no provisioner-dispatcher binary (build it, or pass --dispatcher)"

# ---- input hash / cache -----------------------------------------------------------------
hash=$(
  {
    # Contents only: the same dispatcher named by another path is the same input.
    sha256sum <"$here/build-test-image.sh"
    sha256sum <"$dispatcher"
    find "$src/quadlet" "$here/tools" -type f -print0 | sort -z | xargs -0 sha256sum | sed "s|$src/||"
    echo "suite=$suite"
  } | sha256sum | cut -c1-16
)
dest=$cache/maint-os/$hash
if [ -f "$dest/maint.iso" ] && [ -f "$dest/initrd.img" ]; then
  log "cached: $dest (inputs unchanged)"
else
  start=$(date +%s)
  work=$(mktemp -d "${TMPDIR:-/var/tmp}/maint-os.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  mirror=$(
    for f in /etc/apt/sources.list.d/*.sources; do
      [ -r "$f" ] || continue
      awk 'BEGIN{RS=""} /Components:[^\n]*main/ && !/security/ {
        if (match($0, /URIs:[ \t]*[^ \t\n]+/)) { u = substr($0, RSTART, RLENGTH); sub(/URIs:[ \t]*/, "", u); print u; exit } }' "$f"
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
      [ -r "$f" ] || continue
      awk '$1 == "deb" && !/security/ { for (i = 2; i <= NF; i++) if ($i ~ /^(https?|file):/) { print $i; exit } }' "$f"
    done | head -n1
  )
  mirror=$(printf '%s\n' "$mirror" | head -n1)
  log "suite $suite from ${mirror:-the mmdebstrap default}"
  mirror_args=()
  [ -n "$mirror" ] && mirror_args=("$mirror")

  # -- 1. tool image: one rootfs with every tool's packages, scripts under each tool's name --
  tool_pkgs=$(sed -n 's/.*--no-install-recommends \(.*\) \\$/\1/p' "$here"/tools/*/Containerfile | tr ' ' '\n' | sort -u | tr '\n' ',')
  log "tool rootfs: ${tool_pkgs%,}"
  nice -n 10 mmdebstrap --quiet --variant=apt --aptopt='Acquire::Retries "5"' --include="${tool_pkgs%,}" \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin "$1"/usr/share/doc/* "$1"/usr/share/man/*' \
    bookworm "$work/tools.tar" "${mirror_args[@]}"
  mkdir -p "$work/tools-root"
  tar -C "$work/tools-root" -xf "$work/tools.tar"
  install -D -m 0644 "$here/tools/lib/provision-lib.sh" "$work/tools-root/usr/local/lib/provision/provision-lib.sh"
  for t in "$here"/tools/*/; do
    t=$(basename "$t")
    [ -f "$here/tools/$t/$t.sh" ] && install -D -m 0755 "$here/tools/$t/$t.sh" "$work/tools-root/usr/local/bin/$t"
  done
  umoci init --layout "$work/tools-oci"
  umoci new --image "$work/tools-oci:latest"
  umoci insert --rootless --image "$work/tools-oci:latest" "$work/tools-root" / >/dev/null
  umoci config --image "$work/tools-oci:latest" --config.cmd /bin/bash >/dev/null
  rm -rf "$work/tools-root" "$work/tools.tar"

  # -- 2. the maintenance root filesystem (trixie) --
  root=$work/root
  pkgs=linux-image-amd64,systemd,systemd-sysv,systemd-resolved,udev,dbus,podman,crun,netavark,aardvark-dns,conmon,
  pkgs+=login,ca-certificates,util-linux,iproute2,kmod,e2fsprogs,dosfstools,gdisk,procps,less,openssl,libssl3t64,
# the dispatcher links libcurl shared (its HTTP client): trixie's name for libcurl4
pkgs+=libcurl4t64
  log "maintenance rootfs ($suite): $pkgs"
  nice -n 10 mmdebstrap --quiet --variant=apt --aptopt='Acquire::Retries "5"' --include="$pkgs" \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin "$1"/usr/share/doc/* "$1"/usr/share/man/*' \
    "$suite" "$root.tar" "${mirror_args[@]}"
  mkdir -p "$root"
  tar -C "$root" -xf "$root.tar"
  rm -f "$root.tar"

  # dispatcher, units (quadlet containers go to /etc/containers/systemd, the rest to /etc/systemd/system)
  install -D -m 0755 "$dispatcher" "$root/usr/bin/provisioner-dispatcher"
  install -d "$root/etc/containers/systemd" "$root/etc/systemd/system/multi-user.target.wants" "$root/etc/systemd/system/timers.target.wants"
  install -m 0644 "$src"/quadlet/*.container "$root/etc/containers/systemd/"
  for u in "$src"/quadlet/*.service "$src"/quadlet/*.target "$src"/quadlet/*.timer; do install -m 0644 "$u" "$root/etc/systemd/system/"; done
  ln -sf ../provisioner-dispatcher.service "$root/etc/systemd/system/multi-user.target.wants/"
  ln -sf ../provision-outbox-flush.timer "$root/etc/systemd/system/timers.target.wants/"
  install -D -m 0644 "$src/quadlet/README.md" "$root/usr/share/doc/provisioner/quadlet/README.md" 2>/dev/null || true
  install -D -m 0644 "$src/dispatcher/README.md" "$root/usr/share/doc/provisioner/dispatcher/README.md" 2>/dev/null || true

  # networking: DHCP on every wired interface; the controller is reached by URL
  install -D -m 0644 /dev/stdin "$root/etc/systemd/network/80-dhcp.network" <<'NET'
[Match]
Name=en* eth*
[Network]
DHCP=yes
NET
  ln -sf /lib/systemd/system/systemd-networkd.service "$root/etc/systemd/system/multi-user.target.wants/"
  ln -sf /lib/systemd/system/systemd-networkd-wait-online.service "$root/etc/systemd/system/network-online.target.wants/" 2>/dev/null ||
    { mkdir -p "$root/etc/systemd/system/network-online.target.wants"; ln -sf /lib/systemd/system/systemd-networkd-wait-online.service "$root/etc/systemd/system/network-online.target.wants/"; }
  # Names resolve only through the DNS servers DHCP hands out: no LLMNR or mDNS multicast
  # from a maintenance OS on the provisioning network (or, under QEMU, out of the host).
  install -D -m 0644 /dev/stdin "$root/etc/systemd/resolved.conf.d/provisioner.conf" <<'CONF'
[Resolve]
LLMNR=no
MulticastDNS=no
CONF
  printf 'maint\n' >"$root/etc/hostname"
  # Console access for debugging in QEMU; the maintenance OS has no other login.
  mkdir -p "$root/etc/systemd/system/serial-getty@ttyS0.service.d"
  printf '[Service]\nExecStart=\nExecStart=-/sbin/agetty --autologin root --keep-baud 115200 ttyS0 $TERM\n' \
    >"$root/etc/systemd/system/serial-getty@ttyS0.service.d/autologin.conf"

  # container storage: vfs (built without mounts), no pivot_root (root is the initramfs)
  install -D -m 0644 /dev/stdin "$root/etc/containers/storage.conf" <<'CONF'
[storage]
driver = "vfs"
runroot = "/run/containers/storage"
graphroot = "/var/lib/containers/storage"
CONF
  install -D -m 0644 /dev/stdin "$root/etc/containers/containers.conf" <<'CONF'
[engine]
no_pivot_root = true
CONF
  for t in "$here"/tools/*/; do
    t=$(basename "$t")
    [ -f "$here/tools/$t/Containerfile" ] || continue
    log "importing tool image localhost/provisioner-tool-$t:latest"
    skopeo copy --quiet "oci:$work/tools-oci:latest" \
      "containers-storage:[vfs@$root/var/lib/containers/storage+$work/runroot]localhost/provisioner-tool-$t:latest"
  done
  rm -rf "$work/tools-oci"

  # -- 3. kernel + initrd (= the whole root), ISO --
  mkdir -p "$work/out"
  cp "$(find "$root/boot" -name 'vmlinuz-*' | sort -V | tail -n1)" "$work/out/vmlinuz"
  rm -rf "$root"/boot/initrd.img* "$root"/boot/vmlinuz*
  ln -sf /lib/systemd/systemd "$root/init"
  log "packing initrd"
  (cd "$root" && find . -mindepth 1 -print0 | LC_ALL=C sort -z |
    cpio --null --create --format=newc --quiet --reproducible | zstd -q -T0 -10 >"$work/out/initrd.img")
  rm -rf "$root"
  iso=$work/iso
  mkdir -p "$iso/boot/grub"
  cp "$work/out/vmlinuz" "$work/out/initrd.img" "$iso/boot/"
  cat >"$iso/boot/grub/grub.cfg" <<'GRUB'
set timeout=1
serial --unit=0 --speed=115200
terminal_input console serial
terminal_output console serial
menuentry "Provisioner maintenance OS" {
  linux /boot/vmlinuz console=tty0 console=ttyS0,115200 systemd.unit=multi-user.target
  initrd /boot/initrd.img
}
GRUB
  grub-mkrescue --quiet -o "$work/out/maint.iso" "$iso" -- -volid PROVISIONER_MAINT 2>"$work/grub.log" ||
    { cat "$work/grub.log" >&2; die "grub-mkrescue failed"; }
  mkdir -p "$(dirname "$dest")"
  rm -rf "$dest.tmp"
  mv "$work/out" "$dest.tmp"
  mv "$dest.tmp" "$dest"
  end=$(date +%s)
  printf 'build_seconds=%s\n' "$((end - start))" >"$dest/build-info"
  log "built in $((end - start)) s"
fi
ls -l "$dest" >&2
if [ -n "$out" ]; then
  mkdir -p "$out"
  for f in maint.iso vmlinuz initrd.img; do ln -sf "$dest/$f" "$out/$f"; done
fi
printf '%s\n' "$dest"
