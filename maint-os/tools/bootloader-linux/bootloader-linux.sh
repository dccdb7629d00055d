#!/usr/bin/env bash
# Step "bootloader-linux": make the installed system bootable.
#   - /etc/fstab from the layout, by filesystem UUID
#   - GRUB from the installed system itself (chroot): x86_64-efi on the ESP as the removable
#     fallback path (EFI/BOOT/BOOTX64.EFI, no NVRAM entry: firmware finds it with no help, and
#     BMCs often reset NVRAM) plus i386-pc into the bios_grub partition, so BIOS and UEFI both boot
#   - else systemd-boot (UEFI only) when the image has bootctl
# raw images bring their own bootloader: nothing to do. Re-running just reinstalls.
set -euo pipefail
export STEP_NAME=bootloader-linux
# shellcheck source-path=SCRIPTDIR source=../lib/provision-lib.sh
. "${PROVISION_LIB:-/usr/local/lib/provision/provision-lib.sh}"
load_recipe_env

if [ "${IMAGE_FORMAT:-rootfs-tar}" = raw ]; then
  log "raw image: bootloader comes with the image"
  exit 0
fi
disk=$(target_disk)
mount_target
cleanup() {
  for d in run sys/firmware/efi/efivars sys proc dev/pts dev; do umount "$TARGET_MNT/$d" 2>/dev/null || true; done
  umount_target
}
trap cleanup EXIT

# fstab: every formatted partition of the layout, by UUID. Built in full first: when a tool
# fails (jq, blkid) or a filesystem has no UUID the step fails and the image's fstab stays as
# it was, never an empty or partial one. Then put in place atomically (a symlinked /etc or
# /etc/fstab in the image is never followed).
entries=$(jq -r '.partitions | to_entries[] | "\(.key + 1) \(.value.format) \(.value.mountpoint // "none")"' \
  "$PROVISION_DIR/layout.json") || die "cannot read the partitions of $PROVISION_DIR/layout.json"
fstab="# Written by provisioner (bootloader-linux) for job $JOB_ID"$'\n'
while read -r n fmt mp; do
  [ -n "$n" ] || continue
  [ "$fmt" = swap ] || [ "$mp" != none ] || continue
  dev=$(part_dev "$disk" "$n")
  uuid=$(blkid -s UUID -o value "$dev") || die "blkid cannot read the filesystem UUID of $dev (partition $n)"
  [ -n "$uuid" ] || die "$dev (partition $n, $fmt) has no filesystem UUID"
  case $fmt in
    swap) fstab+="UUID=$uuid none swap defaults 0 0"$'\n' ;;
    none) ;;
    vfat) fstab+="UUID=$uuid $mp vfat umask=0077 0 2"$'\n' ;;
    *) fstab+="UUID=$uuid $mp $fmt defaults 0 $([ "$mp" = / ] && echo 1 || echo 2)"$'\n' ;;
  esac
done <<<"$entries"
[[ $fstab == *" / "* ]] || die "no root (mountpoint /) filesystem for fstab in layout.json"
{ [ -d "$TARGET_MNT/etc" ] && [ ! -L "$TARGET_MNT/etc" ]; } || die "the image has no /etc directory"
tmp=$(mktemp "$TARGET_MNT/etc/.fstab.XXXXXX")
printf '%s' "$fstab" >"$tmp"
chmod 0644 "$tmp"
mv -f "$tmp" "$TARGET_MNT/etc/fstab"

ls "$TARGET_MNT"/boot/vmlinuz* >/dev/null 2>&1 || die "the image has no kernel in /boot"

# grub-mkconfig writes root=UUID=... only when /dev/disk/by-uuid/<uuid> exists; otherwise it
# falls back to the device name seen here (/dev/vda2, or /dev/loop0p1 in a test), which the
# installed system may not have. Filesystems made a moment ago may not have their udev links
# yet: ask udev, and make the link ourselves if it is still missing.
# (BY_UUID_DIR: the tests point it elsewhere.)
by_uuid=${BY_UUID_DIR:-/dev/disk/by-uuid}
while read -r n fmt mp; do
  dev=$(part_dev "$disk" "$n")
  uuid=$(blkid -s UUID -o value "$dev" || true)
  [ -n "$uuid" ] || continue
  if [ ! -e "$by_uuid/$uuid" ] && command -v udevadm >/dev/null; then
    udevadm trigger --action=change "$dev" 2>/dev/null || true
    udevadm settle --timeout=30 2>/dev/null || true
  fi
  if [ ! -e "$by_uuid/$uuid" ]; then
    mkdir -p "$by_uuid"
    ln -sf "$dev" "$by_uuid/$uuid"
  fi
done < <(layout_mounts)

for d in dev dev/pts proc sys run; do
  mkdir -p "$TARGET_MNT/$d"
  mount --bind "/$d" "$TARGET_MNT/$d"
done
if [ -d /sys/firmware/efi/efivars ]; then
  mount --bind /sys/firmware/efi/efivars "$TARGET_MNT/sys/firmware/efi/efivars" || true
fi
in_target() { chroot "$TARGET_MNT" "$@"; }

esp=$(jq -r '.partitions[] | select(.mountpoint == "/boot/efi" or (.type_guid | ascii_downcase) == "c12a7328-f81f-11d2-ba4b-00a0c93ec93b") | .mountpoint // empty' \
  "$PROVISION_DIR/layout.json" | head -n1)

grub_install=$(in_target sh -c 'command -v grub-install || command -v grub2-install' || true)
if [ -n "$grub_install" ]; then
  installed=0
  if [ -n "$esp" ] && [ -d "$TARGET_MNT/usr/lib/grub/x86_64-efi" ]; then
    log "GRUB for UEFI on $esp"
    in_target "$grub_install" --target=x86_64-efi --efi-directory="$esp" --boot-directory=/boot \
      --removable --no-nvram --recheck
    installed=1
  fi
  if [ -d "$TARGET_MNT/usr/lib/grub/i386-pc" ]; then
    log "GRUB for BIOS on $disk"
    in_target "$grub_install" --target=i386-pc --boot-directory=/boot --recheck "$disk"
    installed=1
  fi
  [ "$installed" = 1 ] || die "grub-install found but neither x86_64-efi nor i386-pc modules (install grub-efi-amd64-bin / grub-pc-bin in the image)"
  if in_target sh -c 'command -v update-grub' >/dev/null; then
    in_target update-grub
  else
    cfg=/boot/grub/grub.cfg
    [ -d "$TARGET_MNT/boot/grub2" ] && cfg=/boot/grub2/grub.cfg
    in_target sh -c "$(basename "$grub_install" | sed 's/install/mkconfig/') -o $cfg"
  fi
elif in_target sh -c 'command -v bootctl' >/dev/null && [ -n "$esp" ]; then
  [ "${BOOT_MODE:-uefi}" = uefi ] || die "systemd-boot cannot boot in BIOS mode; the image needs GRUB"
  log "systemd-boot on $esp"
  in_target bootctl install --esp-path="$esp" --no-variables
  for k in "$TARGET_MNT"/lib/modules/*; do
    v=$(basename "$k")
    in_target kernel-install add "$v" "/boot/vmlinuz-$v"
  done
else
  die "the image has neither grub-install nor bootctl"
fi
log "bootloader installed on $disk"
