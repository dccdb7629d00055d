#!/usr/bin/env bash
# Step "config-drive": seed cloud-init NoCloud in the installed system so its first boot
# applies the recipe's user-data (hostname, users, SSH keys, files) with no medium attached:
# /var/lib/cloud/seed/nocloud/{user-data,meta-data[,network-config]} on the root filesystem.
# meta-data carries instance-id = job id (the dispatcher's copy), so each job is a "first boot".
# Also writes /etc/hostname when the recipe names one. Re-running rewrites the same files.
set -euo pipefail
export STEP_NAME=config-drive
# shellcheck source-path=SCRIPTDIR source=../lib/provision-lib.sh
. "${PROVISION_LIB:-/usr/local/lib/provision/provision-lib.sh}"
load_recipe_env

if [ ! -f "$PROVISION_DIR/user-data" ] && [ ! -f "$PROVISION_DIR/meta-data" ] && [ -z "${HOSTNAME:-}" ]; then
  log "no cloud-init data and no hostname in the recipe; nothing to seed"
  exit 0
fi

if [ "${SKIP_MOUNT:-0}" != 1 ]; then
  if [ "${IMAGE_FORMAT:-rootfs-tar}" = raw ]; then
    # A raw image has its own layout: use the first partition that holds an OS root.
    disk=$(target_disk)
    mkdir -p "$TARGET_MNT"
    for p in $(lsblk -lnpo NAME "$disk" | tail -n +2); do
      mount "$p" "$TARGET_MNT" 2>/dev/null || continue
      [ -f "$TARGET_MNT/etc/os-release" ] && break
      umount "$TARGET_MNT"
    done
    mountpoint -q "$TARGET_MNT" || die "no root filesystem found in the raw image"
  else
    mount_target
  fi
  trap umount_target EXIT
fi

seed=$TARGET_MNT/var/lib/cloud/seed/nocloud
mkdir -p "$seed"
chmod 0700 "$TARGET_MNT/var/lib/cloud/seed" "$seed" 2>/dev/null || true
if [ -f "$PROVISION_DIR/user-data" ]; then
  install -m 0600 "$PROVISION_DIR/user-data" "$seed/user-data"
else
  printf '#cloud-config\n{}\n' >"$seed/user-data"
fi
if [ -f "$PROVISION_DIR/meta-data" ]; then
  install -m 0644 "$PROVISION_DIR/meta-data" "$seed/meta-data"
else
  printf 'instance-id: %s\n%s' "$JOB_ID" "${HOSTNAME:+local-hostname: $HOSTNAME
}" >"$seed/meta-data"
fi
if [ -f "$PROVISION_DIR/network-config" ]; then
  install -m 0644 "$PROVISION_DIR/network-config" "$seed/network-config"
else
  rm -f "$seed/network-config"
fi
# Look only at NoCloud (plus None): probing cloud metadata services costs minutes on metal.
if [ -d "$TARGET_MNT/etc/cloud" ]; then
  mkdir -p "$TARGET_MNT/etc/cloud/cloud.cfg.d"
  printf 'datasource_list: [ NoCloud, None ]\n' >"$TARGET_MNT/etc/cloud/cloud.cfg.d/90-provisioner.cfg"
else
  log "warning: the image has no /etc/cloud (cloud-init not installed?); the seed is written anyway"
fi
if [ -n "${HOSTNAME:-}" ]; then
  printf '%s\n' "$HOSTNAME" >"$TARGET_MNT/etc/hostname"
fi
log "NoCloud seed written for instance $JOB_ID"
