#!/usr/bin/env bash
# The step scripts of maint-os/tools without a disk: shellcheck, partition.sh's plan under
# DRY_RUN=1 for the debian-12 layout, and config-drive.sh writing a seed into a temp root.
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
echo "step scripts OK"
