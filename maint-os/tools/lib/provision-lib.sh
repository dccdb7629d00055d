#!/usr/bin/env bash
# Shared helpers of the step scripts. Steps read only $PROVISION_DIR (default /run/provision,
# written by provisioner-dispatcher). DRY_RUN=1 prints the commands that change disks
# instead of running them (tests and operators' "what would this do").
# shellcheck shell=bash

PROVISION_DIR=${PROVISION_DIR:-/run/provision}
TARGET_MNT=${TARGET_MNT:-/mnt/target}
DRY_RUN=${DRY_RUN:-0}

log() { printf '%s: %s\n' "${STEP_NAME:-step}" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Runs a command that changes state, or only shows it under DRY_RUN=1.
run() {
  if [ "$DRY_RUN" = 1 ]; then
    printf '+ %s\n' "$*"
  else
    "$@"
  fi
}

load_recipe_env() {
  [ -r "$PROVISION_DIR/recipe.env" ] || die "no $PROVISION_DIR/recipe.env"
  # shellcheck source=/dev/null
  . "$PROVISION_DIR/recipe.env"
  : "${JOB_ID:?}" "${TARGET_DISK:?}"
}

# The target disk as a kernel device (/dev/disk/by-id/... → /dev/sdX).
target_disk() {
  if [ "$DRY_RUN" = 1 ]; then printf '%s\n' "$TARGET_DISK"; else readlink -f "$TARGET_DISK"; fi
}

# Device of partition number $2 on disk $1: sda → sda2, nvme0n1 / mmcblk0 / loop0 → ...p2.
part_dev() {
  case $1 in
    *[0-9]) printf '%sp%s\n' "$1" "$2" ;;
    *) printf '%s%s\n' "$1" "$2" ;;
  esac
}

# A stable GPT disk GUID for this job: a re-run of the step recognises its own table.
job_disk_guid() {
  local h
  h=$(printf 'provisioner-disk:%s' "$JOB_ID" | sha256sum | cut -c1-32)
  printf '%s-%s-4%s-8%s-%s\n' "${h:0:8}" "${h:8:4}" "${h:13:3}" "${h:17:3}" "${h:20:12}"
}

# Lines "<partition number> <format> <mountpoint>" for layout.json entries with a mountpoint,
# shallowest first, so mounting in this order nests correctly.
layout_mounts() {
  jq -r '.partitions | to_entries[] | select(.value.mountpoint != null)
         | "\(.key + 1) \(.value.format) \(.value.mountpoint)"' "$PROVISION_DIR/layout.json" |
    awk '{ n = gsub("/", "/", $3); if ($3 == "/") n = 0; print n, $0 }' | sort -n -k1,1 | cut -d' ' -f2-
}

# Mounts the installed system's filesystems under $TARGET_MNT (root first).
mount_target() {
  local disk n fmt mp
  disk=$(target_disk)
  mkdir -p "$TARGET_MNT"
  while read -r n fmt mp; do
    [ "$fmt" = swap ] || [ "$fmt" = none ] && continue
    mkdir -p "$TARGET_MNT$mp"
    if ! mountpoint -q "$TARGET_MNT$mp"; then
      mount "$(part_dev "$disk" "$n")" "$TARGET_MNT$mp"
    fi
  done < <(layout_mounts)
  mountpoint -q "$TARGET_MNT" || die "layout.json has no root (mountpoint /) partition"
}

umount_target() {
  sync
  umount -R "$TARGET_MNT" 2>/dev/null || true
}

# Waits until the kernel and udev have caught up with a new partition table.
settle() {
  if command -v udevadm >/dev/null; then udevadm settle --timeout=30 || true; fi
  sleep 1
}
