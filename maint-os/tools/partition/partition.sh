#!/usr/bin/env bash
# Step "partition": wipe the target disk and lay out GPT partitions from layout.json, then
# make the filesystems. Partition numbers follow layout.json order (1..N); a BIOS boot
# partition (for GRUB on BIOS) sits in the gap before the first MiB as number N+1, so the
# same disk boots in BIOS and UEFI mode. Idempotent: the disk GUID is derived from the job
# id, and a disk that already carries it is left alone (a re-run must not wipe the image).
set -euo pipefail
export STEP_NAME=partition
# shellcheck source-path=SCRIPTDIR source=../lib/provision-lib.sh
. "${PROVISION_LIB:-/usr/local/lib/provision/provision-lib.sh}"
load_recipe_env

disk=$(target_disk)
[ "$DRY_RUN" = 1 ] || [ -b "$disk" ] || die "$TARGET_DISK is not a block device"
guid=$(job_disk_guid)

if [ "${IMAGE_FORMAT:-}" = raw ]; then
  log "raw image: it brings its own partition table; only wiping $disk"
  run wipefs --all --force "$disk"
  exit 0
fi

if [ "$DRY_RUN" != 1 ] && sgdisk --print "$disk" 2>/dev/null | grep -qi "Disk identifier (GUID): $guid"; then
  log "$disk already partitioned for job $JOB_ID; nothing to do"
  exit 0
fi

count=$(jq '.partitions | length' "$PROVISION_DIR/layout.json")
[ "$count" -ge 1 ] || die "layout.json has no partitions"

log "wiping $disk"
if [ "$DRY_RUN" != 1 ]; then
  # Signatures inside old partitions first (RAID/LVM metadata survives a new table otherwise).
  for p in $(lsblk -lnpo NAME "$disk" | tail -n +2); do wipefs --all --force "$p" || true; done
fi
run wipefs --all --force "$disk"
run sgdisk --zap-all "$disk"

args=(--disk-guid="$guid")
for ((i = 0; i < count; i++)); do
  n=$((i + 1))
  size=$(jq -r ".partitions[$i].size" "$PROVISION_DIR/layout.json")
  type=$(jq -r ".partitions[$i].type_guid" "$PROVISION_DIR/layout.json")
  label=$(jq -r ".partitions[$i].label // \"part$n\"" "$PROVISION_DIR/layout.json")
  case $size in
    rest) end=0 ;;
    *KiB | *MiB | *GiB | *TiB) end="+${size%iB}" ;;
    *) die "bad size $size" ;;
  esac
  args+=(--new="$n:0:$end" --typecode="$n:$type" --change-name="$n:$label")
done
bios=$((count + 1))
# Alignment 1 only for this one: it fills sectors 34..2047, left free by 1 MiB alignment.
args+=(--set-alignment=1 --new="$bios:34:2047" --typecode="$bios:21686148-6449-6E6F-744E-656564454649" --change-name="$bios:bios_grub")
run sgdisk "${args[@]}" "$disk"
if [ "$DRY_RUN" != 1 ]; then
  partprobe "$disk" 2>/dev/null || blockdev --rereadpt "$disk" || true
  settle
fi

for ((i = 0; i < count; i++)); do
  n=$((i + 1))
  dev=$(part_dev "$disk" "$n")
  fmt=$(jq -r ".partitions[$i].format" "$PROVISION_DIR/layout.json")
  label=$(jq -r ".partitions[$i].label // empty" "$PROVISION_DIR/layout.json")
  case $fmt in
    vfat) run mkfs.vfat -F 32 ${label:+-n "$(printf '%s' "${label:0:11}" | tr '[:lower:]' '[:upper:]')"} "$dev" ;;
    ext4) run mkfs.ext4 -q -F ${label:+-L "${label:0:16}"} "$dev" ;;
    xfs) run mkfs.xfs -q -f ${label:+-L "${label:0:12}"} "$dev" ;;
    btrfs) run mkfs.btrfs -q -f ${label:+-L "$label"} "$dev" ;;
    swap) run mkswap ${label:+-L "$label"} "$dev" ;;
    none) ;;
    *) die "unknown format $fmt" ;;
  esac
done
log "partitioned $disk: $count partitions + bios_grub"
