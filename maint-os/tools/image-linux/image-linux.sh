#!/usr/bin/env bash
# Step "image-linux": put the OS image on the target disk.
#   IMAGE_FORMAT=rootfs-tar  extract into the filesystems made by "partition"
#                            - IMAGE_URL: a (optionally gz/xz/zst compressed) tarball
#                            - IMAGE_OCI: an OCI image whose layers are the root filesystem
#   IMAGE_FORMAT=raw         write a whole-disk image to the target disk
#                            - IMAGE_URL: raw image (optionally .gz/.xz/.zst)
#                            - IMAGE_OCI: an OCI artifact/image whose single layer holds disk.raw
# IMAGE_DIGEST (sha256:...) pins a URL download; an OCI reference is pinned by @sha256 or,
# for a tag, by IMAGE_DIGEST = the manifest digest. Idempotent for rootfs-tar: a marker in
# the installed root remembers what was extracted.
set -euo pipefail
export STEP_NAME=image-linux
# shellcheck source-path=SCRIPTDIR source=../lib/provision-lib.sh
. "${PROVISION_LIB:-/usr/local/lib/provision/provision-lib.sh}"
load_recipe_env

disk=$(target_disk)
format=${IMAGE_FORMAT:-rootfs-tar}
[ -n "${IMAGE_OCI:-}${IMAGE_URL:-}" ] || die "recipe has no image"
source_id="${IMAGE_OCI:-$IMAGE_URL}${IMAGE_DIGEST:+@$IMAGE_DIGEST}"
tls_verify=${REGISTRY_TLS_VERIFY:-true}

# Decompressor for a name or for the first bytes of a stream.
decompressor() {
  case $1 in
    *.gz | *.tgz) echo "gzip -dc" ;;
    *.xz | *.txz) echo "xz -dc" ;;
    *.zst | *.tzst) echo "zstd -dc" ;;
    *) echo "cat" ;;
  esac
}

# Downloads a URL to a file, checking IMAGE_DIGEST when given.
fetch_url() {
  local url=$1 out=$2
  log "downloading $url"
  # Every error is retried (a controller restarting mid-download resets the connection, which
  # plain --retry does not count as transient); each retry starts the file over.
  curl --fail --location --silent --show-error --retry 12 --retry-all-errors --retry-delay 5 \
    --retry-max-time 600 --connect-timeout 20 --output "$out" "$url"
  if [ -n "${IMAGE_DIGEST:-}" ]; then
    local got
    got=sha256:$(sha256sum "$out" | cut -d' ' -f1)
    [ "$got" = "$IMAGE_DIGEST" ] || die "digest mismatch for $url: got $got, want $IMAGE_DIGEST"
    log "digest verified: $got"
  fi
}

# Copies an OCI image into an OCI layout directory (skopeo checks every blob's digest).
fetch_oci() {
  local dir=$1
  local src=docker://$IMAGE_OCI
  if [ -n "${IMAGE_DIGEST:-}" ] && [[ $IMAGE_OCI != *@sha256:* ]]; then
    local got
    got=sha256:$(skopeo inspect --raw --tls-verify="$tls_verify" "$src" | sha256sum | cut -d' ' -f1)
    [ "$got" = "$IMAGE_DIGEST" ] || die "manifest digest of $IMAGE_OCI is $got, want $IMAGE_DIGEST"
    src=docker://${IMAGE_OCI%:*}@$IMAGE_DIGEST
  fi
  log "pulling $IMAGE_OCI"
  skopeo copy --quiet --src-tls-verify="$tls_verify" "$src" "oci:$dir:image"
}

# Layer blobs of the single image in an OCI layout, in order, with their media types.
oci_layers() {
  local dir=$1 manifest
  manifest=$(jq -r '.manifests[0].digest' "$dir/index.json")
  jq -r '.layers[] | "\(.digest) \(.mediaType)"' "$dir/blobs/sha256/${manifest#sha256:}"
}

# Applies one layer tarball. OCI whiteouts are processed before extraction, as the layer
# says: ".wh.<name>" deletes <name> from lower layers, ".wh..wh..opq" empties its directory.
apply_layer() {
  local blob=$1 media=$2 root=$3 dec=cat entry dir base
  case $media in
    *gzip) dec="gzip -dc" ;;
    *zstd) dec="zstd -dc" ;;
  esac
  while IFS= read -r entry; do
    entry=${entry#./}
    dir=$(dirname "$entry")
    base=$(basename "$entry")
    case $base in
      .wh..wh..opq) find "$root/$dir" -mindepth 1 -maxdepth 1 -exec rm -rf {} + 2>/dev/null || true ;;
      .wh.*) rm -rf "${root:?}/$dir/${base#.wh.}" ;;
    esac
  done < <($dec "$blob" | tar -tf - | grep -E '(^|/)\.wh\.' || true)
  $dec "$blob" | tar --extract --numeric-owner --xattrs --xattrs-include='*' --acls \
    --exclude='.wh.*' --exclude='*/.wh.*' -C "$root" -f -
}

if [ "$format" = raw ]; then
  [ -b "$disk" ] || die "$TARGET_DISK is not a block device"
  work=$(mktemp -d /var/tmp/image.XXXXXX)
  trap 'rm -rf "$work"' EXIT
  if [ -n "${IMAGE_URL:-}" ]; then
    # Downloaded first (to check the digest before the disk is touched), then written.
    fetch_url "$IMAGE_URL" "$work/image"
    $(decompressor "$IMAGE_URL") "$work/image" | dd of="$disk" bs=4M conv=fsync status=none
  else
    fetch_oci "$work/oci"
    read -r digest media < <(oci_layers "$work/oci" | tail -n 1)
    dec="cat"
    case $media in *gzip) dec="gzip -dc" ;; *zstd) dec="zstd -dc" ;; esac
    $dec "$work/oci/blobs/sha256/${digest#sha256:}" | tar -xOf - disk.raw | dd of="$disk" bs=4M conv=fsync status=none
  fi
  partprobe "$disk" 2>/dev/null || true
  settle
  log "raw image written to $disk"
  exit 0
fi

mount_target
trap umount_target EXIT
marker=$TARGET_MNT/.provisioner-image
if [ -f "$marker" ] && [ "$(cat "$marker")" = "$source_id" ]; then
  log "image $source_id already extracted; nothing to do"
  exit 0
fi
# Downloads land on the target filesystem itself: the maintenance OS runs from RAM.
work=$TARGET_MNT/.provisioner-tmp
rm -rf "$work"
mkdir -p "$work"
if [ -n "${IMAGE_URL:-}" ]; then
  fetch_url "$IMAGE_URL" "$work/rootfs"
  $(decompressor "$IMAGE_URL") "$work/rootfs" |
    tar --extract --numeric-owner --xattrs --xattrs-include='*' --acls -C "$TARGET_MNT" -f -
else
  fetch_oci "$work/oci"
  while read -r digest media; do
    log "applying layer $digest"
    apply_layer "$work/oci/blobs/sha256/${digest#sha256:}" "$media" "$TARGET_MNT"
  done < <(oci_layers "$work/oci")
fi
rm -rf "$work"
printf '%s' "$source_id" >"$marker"
log "extracted $source_id into $TARGET_MNT"
