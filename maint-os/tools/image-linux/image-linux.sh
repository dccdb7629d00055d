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

# ---- safe extraction ---------------------------------------------------------------------
# A layer (or rootfs tarball) is listed and checked in full before anything is written or
# removed, and the step fails naming the first member that could reach outside the target root:
#   - an absolute member name or hard link target, or one with a ".." component;
#   - a relative symlink whose target climbs above the root ("a/l -> ../../..");
#   - a member or hard link target whose path goes through a symlink: one already on the
#     disk (from an earlier layer) or one made earlier in this archive. tar (and the rm of a
#     whiteout) would follow it, wherever it points.
# Absolute symlink targets (/etc/localtime -> /usr/share/zoneinfo/...) are normal in an OS
# image and stay allowed: they mean the installed root's paths, and since nothing is ever
# extracted or removed through a symlink, they are never followed here.

# C-quoted name (tar --quoting-style=c, quotes stripped) -> the bytes, into the variable $1.
unquote_into() {
  if [[ $2 != *\\* ]]; then
    printf -v "$1" '%s' "$2"
    return 0
  fi
  local s=${2//\\\"/\"}
  printf -v "$1" '%b' "$s"
}

# $1 (a member name or hard link target, C-quoted form) -> $norm: without "./" and empty
# components. Refuses absolute paths and "..". (read -a: no globbing of the name.)
normalize_member() {
  local raw=$1 what=$2 part
  local -a parts=()
  [[ $raw == /* ]] && die "refusing archive member '$raw': $what is an absolute path"
  norm=""
  IFS=/ read -r -a parts <<<"$raw"
  for part in "${parts[@]}"; do
    case $part in
      "" | .) ;;
      ..) die "refusing archive member '$raw': $what has a '..' component" ;;
      *) norm=${norm:+$norm/}$part ;;
    esac
  done
  return 0
}

# True when the relative symlink target $2, read from the directory of member $1 (both
# normalized), climbs above the root.
symlink_escapes() {
  local slashes=${1//[^\/]/} part
  local depth=${#slashes}
  local -a parts=()
  IFS=/ read -r -a parts <<<"$2"
  for part in "${parts[@]}"; do
    case $part in
      "" | .) ;;
      ..) depth=$((depth - 1)) ;;
      *) depth=$((depth + 1)) ;;
    esac
    [ "$depth" -ge 0 ] || return 0
  done
  return 1
}

# True when a whiteout of this layer removes the decoded path $1 before extraction.
whited_out() {
  local p=$1
  [ -n "${cleared[/]:-}${cleared[$p]:-}" ] && return 0
  while [[ $p == */* ]]; do
    p=${p%/*}
    [ -n "${cleared[$p]:-}${cleared[$p/]:-}" ] && return 0
  done
  return 1
}

declare -A member_kind=()  # path (decoded) -> d | l | f, as this archive leaves it so far
declare -A checked_dir=()  # parent paths found not to be symlinks on the disk
declare -A cleared=()      # "path" / "dir/" (its contents) / "/" (all) a whiteout removes
# Refuses member $1 (normalized, C-quoted) when one of its parent directories is a symlink:
# made earlier by this archive, or on the disk (unless this layer's whiteouts remove it first,
# or this archive replaced it by a directory: tar replaces a symlink by a directory member).
# $3 = 1 (whiteouts, applied before extraction): the disk as it is, nothing else counts.
check_parents() {
  local path=$1 what=$2 strict=$3 prefix="" decoded i n
  local -a parts=()
  IFS=/ read -r -a parts <<<"$path"
  n=$((${#parts[@]} - 1))
  for ((i = 0; i < n; i++)); do
    prefix=${prefix:+$prefix/}${parts[i]}
    unquote_into decoded "$prefix"
    if [ "$strict" = 0 ] && [ -n "${member_kind[$decoded]:-}" ]; then
      [ "${member_kind[$decoded]}" = l ] &&
        die "refusing archive member '$path': $what goes through the symlink '$prefix' made by this archive"
      continue
    fi
    [ -n "${checked_dir[$decoded]:-}" ] && continue
    if [ -L "$root_dir/$decoded" ]; then
      if [ "$strict" = 0 ] && whited_out "$decoded"; then continue; fi
      die "refusing archive member '$path': $what goes through the symlink '$prefix' in the target"
    fi
    [ "$strict" = 0 ] && checked_dir[$decoded]=1
  done
  return 0
}

# Lists archive $1 (decompressed by "$2") and checks every member against root $3; with
# $4 = layer, also collects the OCI whiteouts into the array `whiteouts` (decoded paths;
# "dir/" + ".wh..wh..opq" for an opaque directory).
check_archive() {
  local blob=$1 dec=$2 mode=$4 list line type rest name target norm decoded base dir
  root_dir=$3
  member_kind=() checked_dir=() cleared=() whiteouts=()
  list=$(mktemp "${work:-/tmp}/list.XXXXXX")
  # shellcheck disable=SC2086 # $dec is a command with its arguments
  # --absolute-names: list names and link targets as stored (tar would show them sanitized).
  $dec "$blob" | LC_ALL=C tar --list --verbose --numeric-owner --absolute-names --quoting-style=c -f - >"$list" ||
    die "cannot list $blob (damaged or not a tar archive)"
  local re='^((\\.|[^"\\])*)"( -> "((\\.|[^"\\])*)"| link to "((\\.|[^"\\])*)")?$'
  # Pass 1: whiteouts, which apply before the layer's own entries.
  if [ "$mode" = layer ]; then
    while IFS= read -r line; do
      rest=${line#*\"}
      [[ $rest =~ $re ]] || die "cannot parse the listing line: $line"
      normalize_member "${BASH_REMATCH[1]}" "the name"
      base=${norm##*/}
      [[ $base == .wh.* ]] || continue
      dir=""
      [[ $norm == */* ]] && dir=${norm%/*}
      check_parents "$norm" "the whiteout" 1
      if [ "$base" = .wh..wh..opq ]; then
        unquote_into decoded "$dir"
        whiteouts+=("${decoded:+$decoded/}.wh..wh..opq")
        cleared[$decoded/]=1  # "/" for the root's own opaque marker
      else
        unquote_into decoded "${dir:+$dir/}${base#.wh.}"
        whiteouts+=("$decoded")
        cleared[$decoded]=1
      fi
    done < <(grep -F '.wh.' "$list" || true)
  fi
  # Pass 2: every member, in archive order.
  while IFS= read -r line; do
    type=${line:0:1}
    rest=${line#*\"}
    [[ $rest =~ $re ]] || die "cannot parse the listing line: $line"
    name=${BASH_REMATCH[1]}
    target=${BASH_REMATCH[4]}${BASH_REMATCH[6]}
    normalize_member "$name" "the name"
    [ -n "$norm" ] || continue  # "./": the root itself
    [[ ${norm##*/} == .wh.* ]] && [ "$mode" = layer ] && continue  # checked in pass 1
    check_parents "$norm" "the name" 0
    unquote_into decoded "$norm"
    case $type in
      d) member_kind[$decoded]=d ;;
      -) member_kind[$decoded]=f ;;
      c | b | p) member_kind[$decoded]=f ;;
      h)
        local linkname=$norm
        normalize_member "$target" "the hard link target of '$linkname'"
        [ -n "$norm" ] || die "refusing archive member '$linkname': hard link to the root"
        check_parents "$norm" "the hard link target of '$linkname'" 0
        member_kind[$decoded]=f
        ;;
      l)
        if [[ $target != /* ]] && symlink_escapes "$norm" "$target"; then
          die "refusing archive member '$norm': symlink to '$target' points outside the target root"
        fi
        member_kind[$decoded]=l
        ;;
      *) die "refusing archive member '$norm': unsupported member type '$type'" ;;
    esac
  done <"$list"
  rm -f "$list"
}

# Applies one layer tarball. OCI whiteouts are processed before extraction, as the layer
# says: ".wh.<name>" deletes <name> from lower layers, ".wh..wh..opq" empties its directory.
apply_layer() {
  local blob=$1 media=$2 root=$3 dec=cat w
  case $media in
    *gzip) dec="gzip -dc" ;;
    *zstd) dec="zstd -dc" ;;
  esac
  check_archive "$blob" "$dec" "$root" layer
  for w in "${whiteouts[@]}"; do
    case $w in
      .wh..wh..opq | */.wh..wh..opq)
        find "$root/${w%.wh..wh..opq}" -mindepth 1 -maxdepth 1 -exec rm -rf {} + 2>/dev/null || true ;;
      *) rm -rf "${root:?}/$w" ;;
    esac
  done
  # shellcheck disable=SC2086 # $dec is a command with its arguments
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
  check_archive "$work/rootfs" "$(decompressor "$IMAGE_URL")" "$TARGET_MNT" rootfs
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
