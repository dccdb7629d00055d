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

# Copies an OCI image into an OCI layout directory (skopeo checks every blob's digest). The
# job's registry credentials, when it has any, are in a 0600 authfile the dispatcher wrote:
# they are passed by file, never on a command line or in the log.
fetch_oci() {
  local dir=$1
  local src=docker://$IMAGE_OCI
  local auth=()
  [ -f "$PROVISION_DIR/registry-auth.json" ] && auth=(--authfile "$PROVISION_DIR/registry-auth.json")
  if [ -n "${IMAGE_DIGEST:-}" ] && [[ $IMAGE_OCI != *@sha256:* ]]; then
    local got
    got=sha256:$(skopeo inspect "${auth[@]}" --raw --tls-verify="$tls_verify" "$src" | sha256sum | cut -d' ' -f1)
    [ "$got" = "$IMAGE_DIGEST" ] || die "manifest digest of $IMAGE_OCI is $got, want $IMAGE_DIGEST"
    # Pin to the digest: drop a tag (a ':' after the last '/'), never a registry's port.
    local name=$IMAGE_OCI
    [[ ${name##*/} == *:* ]] && name=${name%:*}
    src=docker://$name@$IMAGE_DIGEST
  fi
  log "pulling $IMAGE_OCI"
  skopeo copy --quiet "${auth[@]}" --src-tls-verify="$tls_verify" "$src" "oci:$dir:image"
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

# The lexical part, in awk (a rootfs has tens of thousands of members; bash loops over them
# took seconds even natively). Input: the `tar -tv --quoting-style=c` listing, names kept
# C-quoted throughout (quoting is deterministic, and no escape contains "/" or "."). Output,
# tab-separated: "DIE msg" (then exit 1), "WH path" / "CLR key" for whiteouts (layer mode),
# "DISK strict prefix member what": a parent that must not be a symlink on the disk (strict
# 1: a whiteout's, checked without exemptions, as whiteouts are applied before extraction).
check_awk() {
  cat <<'AWK'
function fail(msg) { print "DIE\t" msg; exit 1 }
# member name or hard link target -> normalized (no "./", no empty components)
function norm(raw, what,    n, parts, i, out) {
  if (substr(raw, 1, 1) == "/") fail("refusing archive member '" raw "': " what " is an absolute path")
  n = split(raw, parts, "/"); out = ""
  for (i = 1; i <= n; i++) {
    if (parts[i] == "" || parts[i] == ".") continue
    if (parts[i] == "..") fail("refusing archive member '" raw "': " what " has a '..' component")
    out = (out == "" ? parts[i] : out "/" parts[i])
  }
  return out
}
# every parent of path: not a symlink made by this archive (unless strict), not one on disk
function parents(path, what, strict,    n, parts, i, prefix) {
  n = split(path, parts, "/"); prefix = ""
  for (i = 1; i < n; i++) {
    prefix = (prefix == "" ? parts[i] : prefix "/" parts[i])
    if (!strict && (prefix in kind)) {
      if (kind[prefix] == "l")
        fail("refusing archive member '" path "': " what " goes through the symlink '" prefix "' made by this archive")
      continue
    }
    if (!((strict SUBSEP prefix) in asked)) {
      asked[strict SUBSEP prefix] = 1
      print "DISK\t" strict "\t" prefix "\t" path "\t" what
    }
  }
}
# a quoted string at the start of s (opening quote already consumed): its length, or -1
function qlen(s) { return match(s, /^(\\.|[^"\\])*"/) ? RLENGTH - 1 : -1 }
{
  type = substr($0, 1, 1)
  q = index($0, "\"")
  if (q == 0) fail("cannot parse the listing line: " $0)
  rest = substr($0, q + 1)
  l = qlen(rest)
  if (l < 0) fail("cannot parse the listing line: " $0)
  name = substr(rest, 1, l); tail = substr(rest, l + 2); target = ""
  if (tail != "") {
    if (substr(tail, 1, 5) == " -> \"") tail = substr(tail, 6)
    else if (substr(tail, 1, 10) == " link to \"") tail = substr(tail, 11)
    else fail("cannot parse the listing line: " $0)
    l = qlen(tail)
    if (l < 0 || l + 1 != length(tail)) fail("cannot parse the listing line: " $0)
    target = substr(tail, 1, l)
  }
  p = norm(name, "the name")
  if (p == "") next  # "./": the root itself
  base = p; sub(/.*\//, "", base)
  dir = p; if (!sub(/\/[^\/]*$/, "", dir)) dir = ""
  if (mode == "layer" && substr(base, 1, 4) == ".wh.") {
    parents(p, "the whiteout", 1)
    if (base == ".wh..wh..opq") {
      print "WH\t" (dir == "" ? "" : dir "/") ".wh..wh..opq"
      print "CLR\t" dir "/"
    } else {
      print "WH\t" (dir == "" ? "" : dir "/") substr(base, 5)
      print "CLR\t" (dir == "" ? "" : dir "/") substr(base, 5)
    }
    next
  }
  parents(p, "the name", 0)
  if (type == "d") kind[p] = "d"
  else if (type == "-" || type == "c" || type == "b" || type == "p") kind[p] = "f"
  else if (type == "h") {
    t = norm(target, "the hard link target of '" p "'")
    if (t == "") fail("refusing archive member '" p "': hard link to the root")
    parents(t, "the hard link target of '" p "'", 0)
    kind[p] = "f"
  } else if (type == "l") {
    if (substr(target, 1, 1) != "/") {
      depth = gsub(/\//, "/", p)
      n = split(target, parts, "/")
      for (i = 1; i <= n; i++) {
        if (parts[i] == "" || parts[i] == ".") continue
        depth += (parts[i] == ".." ? -1 : 1)
        if (depth < 0) fail("refusing archive member '" p "': symlink to '" target "' points outside the target root")
      }
    }
    kind[p] = "l"
  } else fail("refusing archive member '" p "': unsupported member type '" type "'")
}
AWK
}

# True when a whiteout of this layer removes the decoded path $1 before extraction.
declare -A cleared=()  # "path" / "dir/" (its contents) / "/" (all)
whited_out() {
  local p=$1
  [ -n "${cleared[/]:-}${cleared[$p]:-}" ] && return 0
  while [[ $p == */* ]]; do
    p=${p%/*}
    [ -n "${cleared[$p]:-}${cleared[$p/]:-}" ] && return 0
  done
  return 1
}

# Lists archive $1 (decompressed by "$2") and checks every member against root $3; with
# $4 = layer, also collects the OCI whiteouts into the array `whiteouts` (decoded paths;
# "dir/" + ".wh..wh..opq" for an opaque directory).
check_archive() {
  local blob=$1 dec=$2 mode=$4 list kind a b c d decoded msg i
  local -a on_disk=()
  root_dir=$3
  cleared=() whiteouts=()
  list=$(mktemp "${work:-/tmp}/list.XXXXXX")
  # --absolute-names: list names and link targets as stored (tar would show them sanitized).
  # shellcheck disable=SC2086 # $dec is a command with its arguments
  $dec "$blob" | LC_ALL=C tar --list --verbose --numeric-owner --absolute-names --quoting-style=c -f - >"$list" ||
    die "cannot list $blob (damaged or not a tar archive)"
  if ! LC_ALL=C awk -v mode="$mode" "$(check_awk)" "$list" >"$list.out"; then
    msg=$(sed -n 's/^DIE\t//p' "$list.out")
    rm -f "$list" "$list.out"
    die "${msg:-cannot check $blob}"
  fi
  while IFS=$'\t' read -r kind a b c d; do
    case $kind in
      WH) unquote_into decoded "$a" && whiteouts+=("$decoded") ;;
      CLR) unquote_into decoded "$a" && cleared[$decoded]=1 ;;
      DISK) on_disk+=("$a" "$b" "$c" "$d") ;;
    esac
  done <"$list.out"
  rm -f "$list" "$list.out"
  # Parents the archive itself did not make first: they must not be symlinks on the disk,
  # unless (not for a whiteout's own path) a whiteout of this layer removes them first.
  for ((i = 0; i < ${#on_disk[@]}; i += 4)); do
    unquote_into decoded "${on_disk[i + 1]}"
    [ -L "$root_dir/$decoded" ] || continue
    if [ "${on_disk[i]}" = 0 ] && whited_out "$decoded"; then continue; fi
    die "refusing archive member '${on_disk[i + 2]}': ${on_disk[i + 3]} goes through the symlink '${on_disk[i + 1]}' in the target"
  done
  return 0
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
    # The last layer (skopeo verified its digest on the way in): a tarball holding disk.raw, or
    # a raw disk artifact layer (application/vnd.provisioner.disk.raw, +gzip/+zstd/+xz) written
    # straight to the disk.
    fetch_oci "$work/oci"
    read -r digest media < <(oci_layers "$work/oci" | tail -n 1)
    dec="cat"
    case $media in *gzip) dec="gzip -dc" ;; *zstd) dec="zstd -dc" ;; *xz) dec="xz -dc" ;; esac
    blob=$work/oci/blobs/sha256/${digest#sha256:}
    case $media in
      *tar*) $dec "$blob" | tar -xOf - disk.raw | dd of="$disk" bs=4M conv=fsync status=none ;;
      *) $dec "$blob" | dd of="$disk" bs=4M conv=fsync status=none ;;
    esac
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
