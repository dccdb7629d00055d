#!/usr/bin/env bash
# The step scripts of maint-os/tools without a disk: shellcheck, partition.sh's plan under
# DRY_RUN=1 for the debian-12 layout, config-drive.sh writing a seed into a temp root,
# image-linux.sh applying crafted OCI layers (and a rootfs tarball) with fake skopeo/mount
# (hostile members refused, nothing outside the root touched), and bootloader-linux.sh's
# fstab with a fake blkid (a failing tool fails the step, the old fstab stays).
set -euo pipefail
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
tools=$src/maint-os/tools
command -v jq >/dev/null || { echo "jq missing"; exit 77; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

if command -v shellcheck >/dev/null; then
  shellcheck -x "$tools"/*/*.sh "$src/quadlet/validate.sh" "$src/maint-os/"*.sh || fail shellcheck
fi

# A /run/provision as the dispatcher writes it.
run=$work/run
mkdir -p "$run"
cat >"$run/recipe.env" <<'ENV'
JOB_ID='job-1'
TARGET_DISK='/dev/nvme0n1'
BOOT_MODE='uefi'
HOSTNAME='debian-node'
IMAGE_FORMAT='rootfs-tar'
IMAGE_OCI='127.0.0.1:8080/os/debian-rootfs:12'
ENV
jq '{disk: .target_disk, boot_mode: .boot_mode, partitions: .partition_layout}' "$src/recipes/debian-12.json" >"$run/layout.json"
printf '#cloud-config\nhostname: debian-node\n' >"$run/user-data"
printf 'instance-id: job-1\n' >"$run/meta-data"

export PROVISION_DIR=$run PROVISION_LIB=$tools/lib/provision-lib.sh
plan=$(DRY_RUN=1 bash "$tools/partition/partition.sh" 2>/dev/null)
echo "$plan"
grep -q '^+ sgdisk --zap-all /dev/nvme0n1$' <<<"$plan" || fail "no zap"
grep -q -- '--new=1:0:+256M --typecode=1:c12a7328-f81f-11d2-ba4b-00a0c93ec93b --change-name=1:ESP' <<<"$plan" || fail "ESP"
grep -q -- '--new=2:0:0 --typecode=2:0fc63daf-8483-4772-8e79-3d69d8477de4 --change-name=2:root' <<<"$plan" || fail "root"
grep -q -- '--set-alignment=1 --new=3:34:2047 --typecode=3:21686148' <<<"$plan" || fail "bios_grub"
grep -q -- '--disk-guid=[0-9a-f-]\{36\}' <<<"$plan" || fail "disk guid"
grep -q '^+ mkfs.vfat -F 32 -n ESP /dev/nvme0n1p1$' <<<"$plan" || fail "vfat on p1"
grep -q '^+ mkfs.ext4 -q -F -L root /dev/nvme0n1p2$' <<<"$plan" || fail "ext4 on p2"

# Same job → same disk GUID (what makes a re-run a no-op); another job → another GUID.
g1=$(DRY_RUN=1 bash "$tools/partition/partition.sh" 2>/dev/null | grep -o 'disk-guid=[^ ]*')
sed -i "s/job-1/job-2/" "$run/recipe.env"
g2=$(DRY_RUN=1 bash "$tools/partition/partition.sh" 2>/dev/null | grep -o 'disk-guid=[^ ]*')
[ "$g1" != "$g2" ] || fail "disk GUID does not depend on the job"
sed -i "s/job-2/job-1/" "$run/recipe.env"

# config-drive into a fake installed root.
root=$work/target
mkdir -p "$root/etc/cloud"
TARGET_MNT=$root SKIP_MOUNT=1 bash "$tools/config-drive/config-drive.sh"
[ "$(cat "$root/var/lib/cloud/seed/nocloud/meta-data")" = "instance-id: job-1" ] || fail "meta-data"
grep -q 'hostname: debian-node' "$root/var/lib/cloud/seed/nocloud/user-data" || fail "user-data"
[ "$(stat -c %a "$root/var/lib/cloud/seed/nocloud/user-data")" = 600 ] || fail "user-data mode"
[ "$(cat "$root/etc/hostname")" = debian-node ] || fail hostname
grep -q NoCloud "$root/etc/cloud/cloud.cfg.d/90-provisioner.cfg" || fail datasource_list

# ---- image-linux: OCI layers (and a rootfs tarball) land only inside the target root -------
# No registry and no disk: a fake skopeo "copies" an OCI layout made here, fake mount tools
# leave $TARGET_MNT a plain directory. The layers are tars crafted with Python's tarfile.
command -v python3 >/dev/null || { echo "python3 missing: cannot craft layers"; exit 77; }
fake=$work/fakebin
mkdir -p "$fake"
cat >"$fake/skopeo" <<'SH'
#!/bin/sh
# skopeo copy [flags] SRC oci:DIR:image -> the layout in $FAKE_OCI
for a; do last=$a; done
dir=${last#oci:}
dir=${dir%:image}
mkdir -p "$dir" && cp -R "$FAKE_OCI/." "$dir/"
SH
for t in mount mountpoint umount; do printf '#!/bin/sh\nexit 0\n' >"$fake/$t"; done
chmod +x "$fake"/*

# mklayer OUT ENTRY...  ENTRY = d:NAME | f:NAME | l:NAME:TARGET | h:NAME:TARGET
mklayer() {
  python3 - "$@" <<'PYTHON'
import io, sys, tarfile
out, entries = sys.argv[1], sys.argv[2:]
with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
    for e in entries:
        kind, name, *rest = e.split(":", 2)
        info = tarfile.TarInfo(name)
        info.mtime = 1700000000
        if kind == "d":
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        elif kind == "f":
            data = ("content of " + name + "\n").encode()
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
        else:
            info.type = tarfile.SYMTYPE if kind == "l" else tarfile.LNKTYPE
            info.linkname = rest[0]
            tar.addfile(info)
PYTHON
}

# mkoci DIR LAYER.tar... : an OCI layout with one image of these layers (uncompressed).
mkoci() {
  local dir=$1 l d layers="[]" m
  shift
  mkdir -p "$dir/blobs/sha256"
  for l; do
    d=$(sha256sum "$l" | cut -d' ' -f1)
    cp "$l" "$dir/blobs/sha256/$d"
    layers=$(jq -c --arg d "sha256:$d" --argjson s "$(stat -c %s "$l")" \
      '. + [{mediaType: "application/vnd.oci.image.layer.v1.tar", digest: $d, size: $s}]' <<<"$layers")
  done
  jq -n --argjson layers "$layers" '{schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
    config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: "sha256:00", size: 2}, layers: $layers}' >"$dir/m.json"
  m=$(sha256sum "$dir/m.json" | cut -d' ' -f1)
  mv "$dir/m.json" "$dir/blobs/sha256/$m"
  jq -n --arg d "sha256:$m" '{schemaVersion: 2, manifests: [{mediaType: "application/vnd.oci.image.manifest.v1+json", digest: $d, size: 1}]}' >"$dir/index.json"
  printf '{"imageLayoutVersion": "1.0.0"}\n' >"$dir/oci-layout"
}

# image_case NAME [IMAGE_URL]: a fresh target root ($case/root), a directory beside it that
# nothing may touch ($case/outside, holding "precious"), a run dir for an OCI image (the
# layout $case/oci) or a rootfs tarball URL.
image_case() {
  case=$work/img-$1
  mkdir -p "$case/root" "$case/outside" "$case/run"
  echo keep >"$case/outside/precious"
  cp "$run/layout.json" "$case/run/"
  sed '/^IMAGE_/d' "$run/recipe.env" >"$case/run/recipe.env"
  if [ -n "${2:-}" ]; then
    printf "IMAGE_FORMAT='rootfs-tar'\nIMAGE_URL='%s'\n" "$2" >>"$case/run/recipe.env"
  else
    printf "IMAGE_FORMAT='rootfs-tar'\nIMAGE_OCI='127.0.0.1:9/os/test:1'\n" >>"$case/run/recipe.env"
  fi
}
# Runs image-linux.sh for the case: output in $case/log, exit status in $rc.
run_image() {
  rc=0
  PATH=$fake:$PATH FAKE_OCI=$case/oci PROVISION_DIR=$case/run TARGET_MNT=$case/root \
    bash "$tools/image-linux/image-linux.sh" >"$case/log" 2>&1 || rc=$?
}
expect_refused() {  # $1: what the error must say
  [ "$rc" != 0 ] || fail "$case: a hostile archive was extracted"
  grep -qF "$1" "$case/log" || { cat "$case/log" >&2; fail "$case: not refused for: $1"; }
  grep -q "refusing archive member" "$case/log" || fail "$case: no refusal message"
  [ "$(cat "$case/outside/precious")" = keep ] || fail "$case: the file outside was changed or removed"
  [ "$(ls "$case/outside")" = precious ] || fail "$case: something was written outside the target root"
  [ ! -e "$case/root/.provisioner-image" ] || fail "$case: marked as extracted"
}

# A well-formed image: whiteouts (plain and opaque), a symlink replaced by a directory (and
# one whited out, then used as a directory: the whiteout applies first),
# absolute and relative symlinks that stay inside, a hard link, an awkward file name.
image_case good
odd='odd/we ird "q" \ é*?'
mklayer "$case/l1.tar" d:etc f:etc/os-release f:etc/hosts d:usr d:usr/bin f:usr/bin/sh l:bin:usr/bin \
  l:etc/localtime:/usr/share/zoneinfo/UTC h:usr/bin/sh2:usr/bin/sh d:var d:var/cache f:var/cache/junk \
  l:data:usr/bin l:data2:usr/bin d:odd "f:$odd"
mklayer "$case/l2.tar" f:etc/.wh.os-release f:var/cache/.wh..wh..opq f:var/cache/new f:etc/new \
  l:etc/relok:../usr/bin/sh d:data f:data/file f:data2/file2 f:.wh.data2
mkoci "$case/oci" "$case/l1.tar" "$case/l2.tar"
run_image
[ "$rc" = 0 ] || { cat "$case/log" >&2; fail "good image refused"; }
r=$case/root
{ [ ! -e "$r/etc/os-release" ] && [ -f "$r/etc/hosts" ] && [ -f "$r/etc/new" ]; } || fail "good: whiteout of os-release"
{ [ ! -e "$r/var/cache/junk" ] && [ -f "$r/var/cache/new" ]; } || fail "good: opaque whiteout"
[ "$(readlink "$r/bin")" = usr/bin ] || fail "good: relative symlink"
[ "$(readlink "$r/etc/localtime")" = /usr/share/zoneinfo/UTC ] || fail "good: absolute symlink"
[ "$(stat -c %i "$r/usr/bin/sh")" = "$(stat -c %i "$r/usr/bin/sh2")" ] || fail "good: hard link"
{ [ -d "$r/data" ] && [ ! -L "$r/data" ] && [ -f "$r/data/file" ] && [ ! -e "$r/usr/bin/file" ]; } ||
  fail "good: symlink replaced by a directory"
{ [ -d "$r/data2" ] && [ ! -L "$r/data2" ] && [ -f "$r/data2/file2" ] && [ ! -e "$r/usr/bin/file2" ]; } ||
  fail "good: whited-out symlink, then a file under its name"
[ -f "$r/$odd" ] || fail "good: awkward name"
[ "$(cat "$r/.provisioner-image")" = 127.0.0.1:9/os/test:1 ] || fail "good: marker"

image_case dotdot
mklayer "$case/l1.tar" d:a f:../outside/evil
mkoci "$case/oci" "$case/l1.tar"
run_image
expect_refused "'../outside/evil': the name has a '..' component"

image_case absolute
mklayer "$case/l1.tar" d:a "f:$case/outside/evil"
mkoci "$case/oci" "$case/l1.tar"
run_image
expect_refused "the name is an absolute path"
[ ! -e "$case/root$case/outside/evil" ] || fail "absolute: extracted (stripped) before the refusal"

# A symlink to the outside made by one layer (absolute: allowed, it means the installed
# root's path), then a later layer writing, hard linking or whiting out through it.
for how in f:evil/pwned h:stolen:evil/precious f:evil/.wh.precious f:evil/.wh..wh..opq; do
  image_case "through-$(printf '%s' "$how" | tr -c '[:lower:]' _)"
  mklayer "$case/l1.tar" "l:evil:$case/outside"
  mklayer "$case/l2.tar" d:ok "$how"
  mkoci "$case/oci" "$case/l1.tar" "$case/l2.tar"
  run_image
  expect_refused "goes through the symlink 'evil' in the target"
  [ ! -e "$case/root/stolen" ] || fail "$case: hard link to the outside made"
done

# The same within one layer.
image_case same-layer
mklayer "$case/l1.tar" "l:evil:$case/outside" f:evil/pwned
mkoci "$case/oci" "$case/l1.tar"
run_image
expect_refused "goes through the symlink 'evil' made by this archive"

image_case relative-symlink
mklayer "$case/l1.tar" d:a d:a/b l:a/b/ok:../../etc l:a/b/up:../../../outside
mkoci "$case/oci" "$case/l1.tar"
run_image
expect_refused "symlink to '../../../outside' points outside the target root"

image_case hardlink-dotdot
mklayer "$case/l1.tar" d:a h:a/stolen:../outside/precious
mkoci "$case/oci" "$case/l1.tar"
run_image
expect_refused "the hard link target of 'a/stolen' has a '..' component"

# A rootfs tarball by URL gets the same checks.
image_case url-tarball "file://$work/img-url-tarball/rootfs.tar"
mklayer "$case/rootfs.tar" d:etc "l:evil:$case/outside" f:evil/pwned
run_image
expect_refused "goes through the symlink 'evil' made by this archive"

# ---- bootloader-linux: fstab from blkid, or the step fails and the old fstab stays ---------
# Fakes: blkid answers $FAKE_UUIDS ("dev=uuid ..."; a device not listed: blkid's exit 2, no
# output; "dev=" : exit 0 with nothing), chroot logs the command and answers the probes for
# grub-install/update-grub, udevadm and the mount tools do nothing.
cat >"$fake/blkid" <<'SH'
#!/bin/sh
for dev; do :; done
for pair in $FAKE_UUIDS; do
  if [ "${pair%%=*}" = "$dev" ]; then [ -n "${pair#*=}" ] && echo "${pair#*=}"; exit 0; fi
done
exit 2
SH
cat >"$fake/chroot" <<'SH'
#!/bin/sh
shift
echo "$*" >>"$CHROOT_LOG"
case "$*" in
  *"command -v grub-install"*) echo /usr/sbin/grub-install ;;
  *"command -v update-grub"*) echo /usr/sbin/update-grub ;;
esac
exit 0
SH
printf '#!/bin/sh\nexit 0\n' >"$fake/udevadm"
chmod +x "$fake"/*
boot_case() {  # $1: name, $2: FAKE_UUIDS; runs bootloader-linux.sh, status in $rc
  case=$work/boot-$1
  mkdir -p "$case/root/etc" "$case/root/boot" "$case/root/usr/lib/grub/i386-pc" "$case/root/usr/lib/grub/x86_64-efi" \
    "$case/by-uuid"
  printf '# the image own fstab\n' >"$case/root/etc/fstab"
  : >"$case/root/boot/vmlinuz-6.1.0-test"
  rc=0
  PATH=$fake:$PATH FAKE_UUIDS=$2 CHROOT_LOG=$case/chroot.log PROVISION_DIR=$run TARGET_MNT=$case/root \
    BY_UUID_DIR=$case/by-uuid bash "$tools/bootloader-linux/bootloader-linux.sh" >"$case/log" 2>&1 || rc=$?
}
boot_case good "/dev/nvme0n1p1=AB12-CD34 /dev/nvme0n1p2=1111-root-uuid"
[ "$rc" = 0 ] || { cat "$case/log" >&2; fail "bootloader-linux failed with working tools"; }
grep -qx 'UUID=1111-root-uuid / ext4 defaults 0 1' "$case/root/etc/fstab" || fail "fstab: root line"
grep -qx 'UUID=AB12-CD34 /boot/efi vfat umask=0077 0 2' "$case/root/etc/fstab" || fail "fstab: ESP line"
[ "$(stat -c %a "$case/root/etc/fstab")" = 644 ] || fail "fstab mode"
grep -q -- '--target=i386-pc --boot-directory=/boot --recheck /dev/nvme0n1' "$case/chroot.log" || fail "grub for BIOS"
[ "$(readlink "$case/by-uuid/1111-root-uuid")" = /dev/nvme0n1p2 ] || fail "by-uuid link"

for broken in "blkid-fails:/dev/nvme0n1p1=AB12-CD34" "blkid-empty:/dev/nvme0n1p1=AB12-CD34 /dev/nvme0n1p2="; do
  boot_case "${broken%%:*}" "${broken#*:}"
  [ "$rc" != 0 ] || fail "$case: bootloader-linux succeeded without the root UUID"
  grep -q "ERROR: .*/dev/nvme0n1p2" "$case/log" || { cat "$case/log" >&2; fail "$case: the error does not name the device"; }
  [ "$(cat "$case/root/etc/fstab")" = "# the image own fstab" ] || fail "$case: fstab overwritten: $(cat "$case/root/etc/fstab")"
  [ ! -s "$case/chroot.log" ] || fail "$case: went on to install a bootloader"
done
# ---- image-linux: a raw disk artifact from a registry, written straight to the disk --------
# A loop device stands in for the disk; the fake skopeo "pulls" a layout whose one layer is the
# raw image compressed (xz, then zstd), and the disk must then hold exactly those bytes.
if loopdisk=$(truncate -s 8M "$work/disk.img" && losetup -f --show "$work/disk.img" 2>/dev/null); then
  trap 'losetup -d "$loopdisk" 2>/dev/null; rm -rf "$work"' EXIT
  head -c 3145728 /dev/urandom >"$work/raw.img"
  for comp in xz zstd; do
    case=$work/raw-$comp
    mkdir -p "$case/run"
    $comp -q -c "$work/raw.img" >"$case/layer"
    mkoci "$case/oci" "$case/layer"
    # mkoci writes tar layers: mark this one as a raw disk artifact layer.
    m=$(jq -r '.manifests[0].digest' "$case/oci/index.json")
    jq --arg t "application/vnd.provisioner.disk.raw+$comp" '.layers[0].mediaType = $t' \
      "$case/oci/blobs/sha256/${m#sha256:}" >"$case/m.json"
    m2=$(sha256sum "$case/m.json" | cut -d' ' -f1)
    mv "$case/m.json" "$case/oci/blobs/sha256/$m2"
    jq --arg d "sha256:$m2" '.manifests[0].digest = $d' "$case/oci/index.json" >"$case/i.json" && mv "$case/i.json" "$case/oci/index.json"
    sed '/^IMAGE_/d; /^TARGET_DISK/d' "$run/recipe.env" >"$case/run/recipe.env"
    printf "TARGET_DISK='%s'\nIMAGE_FORMAT='raw'\nIMAGE_OCI='127.0.0.1:9/os/disk:1'\n" "$loopdisk" >>"$case/run/recipe.env"
    dd if=/dev/zero of="$loopdisk" bs=1M count=8 status=none
    rc=0
    PATH=$fake:$PATH FAKE_OCI=$case/oci PROVISION_DIR=$case/run bash "$tools/image-linux/image-linux.sh" >"$case/log" 2>&1 || rc=$?
    [ "$rc" = 0 ] || { cat "$case/log" >&2; fail "raw $comp image not written"; }
    cmp -n 3145728 "$work/raw.img" "$loopdisk" || fail "raw $comp image: the disk holds other bytes"
  done
else
  echo "note: no loop device here: the raw image case was not run" >&2
fi

echo "step scripts OK"
