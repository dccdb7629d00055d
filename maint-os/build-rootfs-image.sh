#!/usr/bin/env bash
# Hook text below is literal on purpose ($1 is mmdebstrap's root).
# shellcheck disable=SC2016
# Builds the INSTALLED-SYSTEM image of the Linux recipe (recipes/debian-12.json): a Debian
# root filesystem as a zstd tarball that the "image-linux" step extracts, "bootloader-linux"
# makes bootable (GRUB BIOS + UEFI from the image itself) and "config-drive" seeds for
# cloud-init (NoCloud).
#
#   maint-os/build-rootfs-image.sh [--out DIR]
#
# Output (in the cache, linked from --out): rootfs.tar.zst, and rootfs.sha256 (its digest).
#
# Design (why):
# - Packages come from the machine's apt configuration: mmdebstrap gets NO mirror argument
#   (its default Debian mirrors, rewritten by whatever the machine's apt does); no mirror host
#   is written in this repository.
# - Small: variant "apt" (Essential + apt) plus only what boots and runs cloud-init. The kernel
#   is linux-image-cloud-amd64 by default (virtio, NVMe, the usual NICs; ~1/4 of the size of
#   linux-image-amd64): ROOTFS_KERNEL=linux-image-amd64 for real hardware.
# - GRUB modules for both firmwares (grub-pc-bin, grub-efi-amd64-bin) + grub2-common
#   (grub-install, update-grub), but no grub-pc/grub-efi package: nothing runs grub-install
#   at build time; the bootloader step does it on the target disk.
# - Serial console on ttyS0 in GRUB and the kernel: the installed system proves itself there.
# - Cached by input hash (this script + suite + kernel) under $PROVISIONER_CACHE/rootfs/<hash>/.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${PROVISIONER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/provisioner}
suite=${ROOTFS_SUITE:-bookworm}
kernel=${ROOTFS_KERNEL:-linux-image-cloud-amd64}
out=""
while [ $# -gt 0 ]; do
  case $1 in
    --out) out=$2; shift 2 ;;
    *) echo "usage: $0 [--out DIR]" >&2; exit 2 ;;
  esac
done
log() { printf 'build-rootfs-image: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
[ "$(id -u)" -eq 0 ] || die "run as root (mmdebstrap root mode: device nodes, ownership in the image)"

need=(mmdebstrap zstd)
missing=()
for p in "${need[@]}"; do
  [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)" = installed ] || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

hash=$({
  sha256sum "$here/build-rootfs-image.sh" | cut -d' ' -f1
  echo "suite=$suite kernel=$kernel"
} | sha256sum | cut -c1-16)
dest=$cache/rootfs/$hash
if [ -f "$dest/rootfs.tar.zst" ] && [ -f "$dest/rootfs.sha256" ]; then
  log "cached: $dest (inputs unchanged)"
else
  start=$(date +%s)
  work=$(mktemp -d "${TMPDIR:-/var/tmp}/rootfs.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  pkgs=$kernel,systemd-sysv,udev,dbus,kmod,e2fsprogs,dosfstools,zstd,iproute2,
  pkgs+=grub2-common,grub-pc-bin,grub-efi-amd64-bin,cloud-init,openssh-server,sudo,netbase
  log "rootfs ($suite): $pkgs"
  # Docs, man pages and locales are never installed (dpkg path-exclude), so they cost nothing.
  nice -n 10 mmdebstrap --quiet --variant=apt --include="$pkgs" \
    --aptopt='Acquire::Check-Valid-Until "false"' --aptopt='Acquire::Retries "5"' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --setup-hook='mkdir -p "$1/etc/default" "$1/etc/systemd/network"' \
    --setup-hook='printf "%s\n" "GRUB_DEFAULT=0" "GRUB_TIMEOUT=1" "GRUB_DISTRIBUTOR=Debian" \
        "GRUB_CMDLINE_LINUX_DEFAULT=\"\"" "GRUB_CMDLINE_LINUX=\"console=tty0 console=ttyS0,115200n8\"" \
        "GRUB_TERMINAL=\"console serial\"" "GRUB_SERIAL_COMMAND=\"serial --unit=0 --speed=115200\"" \
        "GRUB_DISABLE_OS_PROBER=true" >"$1/etc/default/grub"' \
    --customize-hook='printf "[Match]\nName=en* eth*\n[Network]\nDHCP=yes\n" >"$1/etc/systemd/network/80-dhcp.network"' \
    --customize-hook='chroot "$1" systemctl enable systemd-networkd.service' \
    --customize-hook='printf "localhost\n" >"$1/etc/hostname"; : >"$1/etc/machine-id"; rm -f "$1/var/lib/dbus/machine-id"' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin "$1"/var/cache/apt/archives/*.deb "$1"/var/log/*.log' \
    "$suite" "$work/rootfs.tar"
  ls "$work" >/dev/null
  zstd -q -T0 -6 --rm "$work/rootfs.tar" -o "$work/rootfs.tar.zst"
  sha256sum "$work/rootfs.tar.zst" | cut -d' ' -f1 >"$work/rootfs.sha256"
  mkdir -p "$(dirname "$dest")"
  rm -rf "$dest.tmp"
  mkdir "$dest.tmp"
  mv "$work/rootfs.tar.zst" "$work/rootfs.sha256" "$dest.tmp/"
  rm -rf "$dest"
  mv "$dest.tmp" "$dest"
  end=$(date +%s)
  printf 'build_seconds=%s\n' "$((end - start))" >"$dest/build-info"
  log "built in $((end - start)) s"
fi
ls -l "$dest" >&2
if [ -n "$out" ]; then
  mkdir -p "$out"
  ln -sf "$dest/rootfs.tar.zst" "$out/rootfs.tar.zst"
  ln -sf "$dest/rootfs.sha256" "$out/rootfs.sha256"
fi
printf '%s\n' "$dest"
