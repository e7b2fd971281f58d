#!/usr/bin/env bash
# Builds kmatrix's "legacy fail-open" kernel: Debian bookworm's linux-source-6.1
# with upstream 931401137f60 (v4.6) reverted, so a netlink unicast failure drops
# the packet and counts queue_user_dropped even with NFQA_CFG_F_FAIL_OPEN, as
# pre-4.6 kernels (RHEL 7's 3.10) do. A stand-in for kernels that cannot be
# downloaded here. See legacy-failopen.patch for the change itself.
#
# Usage: build.sh [--cache DIR] --out DIR [--keep-tree] [--refresh] [--offline]
#        build.sh [--cache DIR] --source-tree DIR    (unpack the pristine source only)
#   --cache DIR    kmatrix cache root (default ~/.cache/kmatrix). Uses:
#                    DIR/apt/legacy/        private apt sources, lists, cache, status
#                    DIR/debs/<sha256>.deb  downloaded .debs by content (+ .meta)
#                    DIR/legacy-kernel/     build trees (work-<build_id>) and a lock
#                    DIR/ccache/            compiler cache (when ccache is installed)
#   --out DIR      where bzImage, config and manifest.json go
#   --source-tree DIR  unpack the unpatched linux-source-6.1 into DIR and stop: the
#                  start of the kernel git tree the bisect end-to-end test builds
#   --keep-tree    keep DIR/legacy-kernel/work-<build_id> after a successful build
#   --refresh      ask the archive for the current linux-source-6.1 even when
#                  --out already holds a build of the recorded source
#   --offline      do not touch the network; use the newest cached source .deb
#
# Content addressing: build_id = sha256 over the source .deb's sha256 and the
# contents of legacy-failopen.patch, both config fragments, ../lib.sh and this
# script. When --out/manifest.json already names that build_id (computed with
# the source it records) and bzImage is there, the script exits at once without
# touching the network; --refresh resolves the source again first.
#
# The compile runs under `nice -n 19` with KMATRIX_JOBS jobs (default 2), through
# ccache when installed (a second build of the same source is mostly cache hits).
set -euo pipefail

readonly PKG=linux-source-6.1
readonly TARBALL=usr/src/linux-source-6.1.tar.xz
readonly HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly PATCH_FILE=$HERE/legacy-failopen.patch
readonly FRAGMENT=$HERE/config.fragment
readonly ROOTFS_FRAGMENT=$HERE/../kernel-config/rootfs.fragment
readonly SELF=$HERE/$(basename "${BASH_SOURCE[0]}")
readonly JOBS=${KMATRIX_JOBS:-2}
KM_NAME=legacy-kernel
# shellcheck source=../lib.sh
. "$HERE/../lib.sh"

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

cache=${HOME}/.cache/kmatrix
out=
source_tree=
keep_tree=0
refresh=0
offline=0
while (($#)); do
    case $1 in
        --cache) cache=${2:?--cache needs a directory}; shift 2 ;;
        --out) out=${2:?--out needs a directory}; shift 2 ;;
        --source-tree) source_tree=${2:?--source-tree needs a directory}; shift 2 ;;
        --keep-tree) keep_tree=1; shift ;;
        --refresh) refresh=1; shift ;;
        --offline) offline=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$SELF" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) km_die "unknown argument '$1' (try --help)" ;;
    esac
done
[[ -n $out || -n $source_tree ]] || km_die "--out DIR or --source-tree DIR is required (try --help)"
for f in "$PATCH_FILE" "$FRAGMENT" "$ROOTFS_FRAGMENT"; do [[ -r $f ]] || km_die "missing $f"; done
export KM_CCACHE_DIR=$cache/ccache

# The part of the build id that does not depend on the source .deb.
inputs_digest=$(printf 'patch %s\nfragment %s\nrootfs %s\nlib %s\nbuild.sh %s\n' \
    "$(km_sha256 "$PATCH_FILE")" "$(km_sha256 "$FRAGMENT")" "$(km_sha256 "$ROOTFS_FRAGMENT")" \
    "$(km_sha256 "$KM_LIB_DIR/lib.sh")" "$(km_sha256 "$SELF")")
build_id_for() { printf 'source %s\n%s\n' "$1" "$inputs_digest" | sha256sum | cut -d' ' -f1; }

# --- fast path: --out already holds this build ---------------------------------
if [[ -n $out ]] && ((!refresh)) && [[ -f $out/manifest.json && -f $out/bzImage ]]; then
    recorded_src=$(km_manifest_get "$out/manifest.json" source_sha256)
    recorded_id=$(km_manifest_get "$out/manifest.json" build_id)
    if [[ -n $recorded_src && $recorded_id == "$(build_id_for "$recorded_src")" ]]; then
        km_log "up to date: $out holds build $recorded_id ($(km_manifest_get "$out/manifest.json" kernel_release))"
        exit 0
    fi
fi

km_need gcc make flex bison bc xz jq
[[ -e /usr/include/libelf.h || -e /usr/include/gelf.h ]] || km_install libelf-dev

mkdir -p "$cache/legacy-kernel" "$cache/debs"
exec 9>"$cache/legacy-kernel/lock"
flock 9 # one build at a time per cache (a second caller waits, then finds the build done)

# --- source .deb: private apt, cached by content --------------------------------
resolve_source() {
    local version sum cached
    if ((offline)); then
        km_log "offline: using the newest cached $PKG"
    else
        km_apt_use "$cache/apt/legacy"
        km_apt_sources "http://deb.debian.org/debian bookworm main" "http://deb.debian.org/debian bookworm-updates main" \
            "http://deb.debian.org/debian-security bookworm-security main"
        if km_apt_update "${KMATRIX_APT_TTL:-3600}" "$refresh"; then
            version=$(km_apt apt-cache policy "$PKG" | sed -n 's/^ *Candidate: //p')
            [[ -n $version && $version != "(none)" ]] || km_die "$PKG not found in bookworm{,-updates,-security}"
            sum=$(km_apt apt-cache show "$PKG=$version" | sed -n 's/^SHA256: //p' | head -n1)
            if cached=$(km_deb_download "$cache" "$PKG" "$version" "$sum" bookworm source); then
                printf '%s' "$cached"; return
            fi
            km_log "download failed; falling back to the cache"
        else
            km_log "archive unreachable; falling back to the cache"
        fi
    fi
    cached=$(km_deb_newest "$cache" bookworm source "$PKG")
    [[ -n $cached ]] || km_die "no cached $PKG under $cache/debs and the archive is unreachable"
    printf '%s' "$cached"
}

deb=$(resolve_source)
deb_sha=$(km_sha256 "$deb")
[[ $deb == "$cache/debs/$deb_sha.deb" ]] || km_die "$deb does not match its sha256 ($deb_sha): corrupt cache?"
deb_ver=$(dpkg-deb -f "$deb" Version)
deb_name=$(dpkg-deb -f "$deb" Package)_${deb_ver#*:}_$(dpkg-deb -f "$deb" Architecture).deb

unpack() { # unpack DIR: the pristine source tree
    mkdir -p "$1"
    dpkg-deb --fsys-tarfile "$deb" | tar -xO "./$TARBALL" | xz -dc -T0 | tar -x -C "$1" --strip-components=1
    [[ -f $1/Makefile && -f $1/net/netfilter/nfnetlink_queue.c ]] || km_die "$TARBALL did not unpack to a kernel tree"
}

if [[ -n $source_tree ]]; then
    rm -rf "$source_tree"
    unpack "$source_tree"
    km_log "unpacked $deb_name into $source_tree"
    exit 0
fi

build_id=$(build_id_for "$deb_sha")
km_log "source $deb_name sha256 $deb_sha; build_id $build_id"
if [[ -f $out/manifest.json && -f $out/bzImage && $(km_manifest_get "$out/manifest.json" build_id) == "$build_id" ]]; then
    km_log "up to date: $out holds build $build_id"
    exit 0
fi

# --- unpack + patch -----------------------------------------------------------------
work=$cache/legacy-kernel/work-$build_id
src=$work/linux
# Build trees of other build ids are leftovers of failed or --keep-tree builds of
# inputs that no longer exist: they are 1+ GiB each.
for old in "$cache"/legacy-kernel/work-*; do
    [[ -d $old && $old != "$work" ]] || continue
    km_log "removing stale tree $old"; rm -rf "$old"
done
if [[ -f $work/.unpacked ]]; then
    km_log "reusing unpacked, patched tree $src"
else
    rm -rf "$work"
    t0=$(now)
    unpack "$src"
    (cd "$src" && patch -p1 --forward --fuzz=0 --no-backup-if-mismatch <"$PATCH_FILE") >&2 \
        || km_die "legacy-failopen.patch does not apply to $PKG $deb_ver"
    # The unicast-failure branch must no longer look at FAIL_OPEN; the queue-full one must.
    n=$(grep -c 'NFQA_CFG_F_FAIL_OPEN' "$src/net/netfilter/nfnetlink_queue.c")
    [[ $n -ge 1 ]] && grep -q -A3 'err = nfnetlink_unicast(nskb' "$src/net/netfilter/nfnetlink_queue.c" \
        && ! grep -A3 'err = nfnetlink_unicast(nskb' "$src/net/netfilter/nfnetlink_queue.c" | grep -q FAIL_OPEN \
        || km_die "patched nfnetlink_queue.c does not look as expected"
    touch "$work/.unpacked"
    km_log "unpacked and patched in $(since "$t0") s"
fi

# --- configure ------------------------------------------------------------------------
# Reproducible identity: timestamp of the source tarball inside the .deb (Debian's build).
src_epoch=$(dpkg-deb --fsys-tarfile "$deb" | tar -tv --full-time "./$TARBALL" | awk '{ print $4 " " $5 }')
export ARCH=x86_64
export KBUILD_BUILD_TIMESTAMP="$(LC_ALL=C date -u -d "$src_epoch" '+%a %b %e %T UTC %Y')"
export KBUILD_BUILD_USER=kmatrix KBUILD_BUILD_HOST=kmatrix KBUILD_BUILD_VERSION=1
export LC_ALL=C
t0=$(now)
if ! lost=$(km_kernel_configure "$src" tiny "$ROOTFS_FRAGMENT" "$FRAGMENT"); then
    printf 'legacy-kernel: not as required in .config:\n%s\n' "$lost" | sed '2,$s/^/  /' >&2
    km_die "$(wc -l <<<"$lost") config option(s) did not end up as the fragments say"
fi
! grep -q '^CONFIG_MODULES=y' "$src/.config" || km_die "CONFIG_MODULES ended up on"
km_log "configured in $(since "$t0") s ($(grep -c '=y$' "$src/.config") options =y)"

# --- build ------------------------------------------------------------------------------
t0=$(now)
km_log "building bzImage (nice -n 19 make -j$JOBS); log: $work/build.log"
readonly LOCALVERSION=-kmatrix-legacy-failopen
if ! km_kernel_make "$src" "$JOBS" "$work/build.log" "$LOCALVERSION"; then
    tail -n 40 "$work/build.log" >&2
    km_die "kernel build failed (tree kept in $work)"
fi
build_s=$(since "$t0")
release=$(km_kernel_release "$src" "$LOCALVERSION")
km_log "built $release in $build_s s"

# --- outputs: written to a temp dir, manifest last, then moved in place --------------------------
mkdir -p "$out"
tmp=$(mktemp -d "$out/.tmp.XXXXXX")
cp "$src/arch/x86/boot/bzImage" "$tmp/bzImage"
cp "$src/.config" "$tmp/config"
jq -n --arg build_id "$build_id" --arg config "$(km_sha256 "$tmp/config")" --arg release "$release" \
    --arg patch "$(km_sha256 "$PATCH_FILE")" --arg deb "$deb_name" --arg sum "$deb_sha" --arg version "$deb_ver" \
    '{build_id: $build_id, config_sha256: $config, kernel_release: $release, patch_sha256: $patch,
      source_deb: $deb, source_sha256: $sum, source_version: $version}' >"$tmp/manifest.json"
rm -f "$out/manifest.json" # no manifest ⇒ never mistaken for a finished build mid-move
mv -f "$tmp/bzImage" "$out/bzImage"
mv -f "$tmp/config" "$out/config"
mv -f "$tmp/manifest.json" "$out/manifest.json"
rmdir "$tmp"

if ((keep_tree)); then
    km_log "keeping tree $src"
else
    rm -rf "$work"
fi
km_log "done: $out/bzImage ($(stat -c %s "$out/bzImage") bytes), kernel_release $release, build $build_s s"
