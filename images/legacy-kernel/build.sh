#!/usr/bin/env bash
# Builds kmatrix's "legacy fail-open" kernel: Debian bookworm's linux-source-6.1
# with upstream 931401137f60 (v4.6) reverted, so a netlink unicast failure drops
# the packet and counts queue_user_dropped even with NFQA_CFG_F_FAIL_OPEN, as
# pre-4.6 kernels (RHEL 7's 3.10) do. A stand-in for kernels that cannot be
# downloaded here. See legacy-failopen.patch for the change itself.
#
# Usage: build.sh [--cache DIR] --out DIR [--keep-tree] [--refresh] [--offline]
#   --cache DIR   kmatrix cache root (default ~/.cache/kmatrix). Uses:
#                   DIR/apt/legacy/       private apt sources, lists, cache, status
#                   DIR/debs/<sha256>.deb downloaded .debs, by content, each with a
#                                         <sha256>.meta (suite/flavour/package/version;
#                                         the layout images/kernel-rootfs uses too)
#                   DIR/legacy-kernel/    build trees (work-<build_id>) and a lock
#   --out DIR     where bzImage, config and manifest.json go
#   --keep-tree   keep DIR/legacy-kernel/work-<build_id> after a successful build
#   --refresh     ask the archive for the current linux-source-6.1 even when
#                 --out already holds a build of the recorded source
#   --offline     do not touch the network; use the newest cached source .deb
#
# Content addressing: build_id = sha256 over the source .deb's sha256 and the
# contents of legacy-failopen.patch, config.fragment and this script. When
# --out/manifest.json already names that build_id (computed with the source it
# records) and bzImage is there, the script exits at once without touching the
# network; --refresh resolves the source again first (a new Debian security
# release then gives a new build_id).
#
# Host tools: gcc make flex bison bc perl libelf-dev xz-utils dpkg apt; missing
# ones are installed with the system's apt-get when running as root.
# The compile runs under `nice -n 19` with KMATRIX_JOBS jobs (default 2).
set -euo pipefail

readonly PKG=linux-source-6.1
readonly TARBALL=usr/src/linux-source-6.1.tar.xz
readonly HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly PATCH_FILE=$HERE/legacy-failopen.patch
readonly FRAGMENT=$HERE/config.fragment
readonly SELF=$HERE/$(basename "${BASH_SOURCE[0]}")
readonly JOBS=${KMATRIX_JOBS:-2}

log() { printf 'legacy-kernel: %s\n' "$*" >&2; }
die() { printf 'legacy-kernel: error: %s\n' "$*" >&2; exit 1; }
sha256() { sha256sum "$1" | cut -d' ' -f1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

cache=${HOME}/.cache/kmatrix
out=
keep_tree=0
refresh=0
offline=0
while (($#)); do
    case $1 in
        --cache) cache=${2:?--cache needs a directory}; shift 2 ;;
        --out) out=${2:?--out needs a directory}; shift 2 ;;
        --keep-tree) keep_tree=1; shift ;;
        --refresh) refresh=1; shift ;;
        --offline) offline=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$SELF" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument '$1' (try --help)" ;;
    esac
done
[[ -n $out ]] || die "--out DIR is required (try --help)"
for f in "$PATCH_FILE" "$FRAGMENT"; do [[ -r $f ]] || die "missing $f"; done

# The part of the build id that does not depend on the source .deb.
inputs_digest=$(printf 'patch %s\nfragment %s\nbuild.sh %s\n' \
    "$(sha256 "$PATCH_FILE")" "$(sha256 "$FRAGMENT")" "$(sha256 "$SELF")")
build_id_for() { printf 'source %s\n%s\n' "$1" "$inputs_digest" | sha256sum | cut -d' ' -f1; }
manifest_field() { sed -n "s/^ *\"$2\": *\"\\([^\"]*\\)\".*/\\1/p" "$1" | head -n1; }

# --- fast path: --out already holds this build ---------------------------------
if ((!refresh)) && [[ -f $out/manifest.json && -f $out/bzImage ]]; then
    recorded_src=$(manifest_field "$out/manifest.json" source_sha256)
    recorded_id=$(manifest_field "$out/manifest.json" build_id)
    if [[ -n $recorded_src && $recorded_id == "$(build_id_for "$recorded_src")" ]]; then
        log "up to date: $out holds build $recorded_id ($(manifest_field "$out/manifest.json" kernel_release))"
        exit 0
    fi
fi

# --- host tools ---------------------------------------------------------------
need_pkgs=()
for t in gcc:gcc make:make flex:flex bison:bison bc:bc perl:perl xz:xz-utils \
         dpkg-deb:dpkg apt-get:apt flock:util-linux; do
    command -v "${t%%:*}" >/dev/null || need_pkgs+=("${t#*:}")
done
[[ -e /usr/include/libelf.h || -e /usr/include/gelf.h ]] || need_pkgs+=(libelf-dev)
if ((${#need_pkgs[@]})); then
    [[ $(id -u) -eq 0 ]] || die "missing build tools; install: ${need_pkgs[*]}"
    log "installing build tools: ${need_pkgs[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${need_pkgs[@]}" >/dev/null || die "apt-get install ${need_pkgs[*]} failed"
fi

mkdir -p "$cache/legacy-kernel" "$cache/debs"
exec 9>"$cache/legacy-kernel/lock"
flock 9 # one build at a time per cache (a second caller waits, then finds the build done)

# --- source .deb: private apt, cached by content --------------------------------
aptdir=$cache/apt/legacy
apt_opts=(
    -o "Dir::Etc::SourceList=$aptdir/sources.list"
    -o Dir::Etc::SourceParts=/dev/null
    -o Dir::Etc::Preferences=/dev/null
    -o Dir::Etc::PreferencesParts=/dev/null
    -o "Dir::State::Lists=$aptdir/lists"
    -o "Dir::Cache=$aptdir/cache"
    -o "Dir::State::Status=$aptdir/status"
    -o APT::Sandbox::User=root
    -o Debug::NoLocking=1
    -o Acquire::Retries=1
    -o Acquire::http::Timeout=30
    -o APT::Architecture=amd64
    -o APT::Architectures::=amd64
)
setup_private_apt() {
    mkdir -p "$aptdir/lists/partial" "$aptdir/cache/archives/partial"
    local keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    [[ -r $keyring ]] || die "$keyring missing (apt-get install debian-archive-keyring)"
    cat >"$aptdir/sources.list.new" <<EOF
deb [signed-by=$keyring] http://deb.debian.org/debian bookworm main
deb [signed-by=$keyring] http://deb.debian.org/debian bookworm-updates main
deb [signed-by=$keyring] http://deb.debian.org/debian-security bookworm-security main
EOF
    mv "$aptdir/sources.list.new" "$aptdir/sources.list"
    [[ -e $aptdir/status ]] || : >"$aptdir/status"
}

# Newest cached linux-source-6.1 .deb by Debian version ('' if none).
newest_cached_deb() {
    local best= best_ver= m v
    for m in "$cache"/debs/*.meta; do
        [[ -f $m && -f ${m%.meta}.deb ]] && grep -qxF "package=$PKG" "$m" || continue
        v=$(sed -n 's/^version=//p' "$m")
        if [[ -z $best ]] || dpkg --compare-versions "$v" gt "$best_ver"; then best=${m%.meta}.deb best_ver=$v; fi
    done
    printf '%s' "$best"
}

# Store a downloaded .deb as debs/<sha256>.deb (+ .meta); prints the stored path.
store_deb() {
    local f=$1 sum
    sum=$(sha256 "$f")
    printf 'suite=bookworm\nflavour=source\npackage=%s\nversion=%s\n' \
        "$(dpkg-deb -f "$f" Package)" "$(dpkg-deb -f "$f" Version)" >"$cache/debs/$sum.meta.new"
    mv -f "$f" "$cache/debs/$sum.deb"
    mv -f "$cache/debs/$sum.meta.new" "$cache/debs/$sum.meta"
    printf '%s' "$cache/debs/$sum.deb"
}

resolve_source() {
    local t0 ver want_sha cached dl
    if ((offline)); then
        log "offline: using the newest cached $PKG"
    else
        setup_private_apt
        t0=$(now)
        if apt-get "${apt_opts[@]}" -qq --error-on=any update >"$aptdir/update.log" 2>&1; then
            ver=$(apt-cache "${apt_opts[@]}" policy "$PKG" | sed -n 's/^ *Candidate: //p')
            [[ -n $ver && $ver != "(none)" ]] || die "$PKG not found in bookworm{,-updates,-security}"
            want_sha=$(apt-cache "${apt_opts[@]}" show "$PKG=$ver" | sed -n 's/^SHA256: //p' | head -n1)
            log "archive: $PKG $ver (lists refreshed in $(since "$t0") s)"
            cached=$cache/debs/$want_sha.deb
            if [[ -n $want_sha && -f $cached && -f $cache/debs/$want_sha.meta ]]; then
                printf '%s' "$cached"; return
            fi
            dl=$(mktemp -d "$cache/debs/.dl.XXXXXX")
            t0=$(now)
            if (cd "$dl" && apt-get "${apt_opts[@]}" -qq download "$PKG=$ver") >"$aptdir/download.log" 2>&1; then
                local f=("$dl"/*.deb)
                [[ -z $want_sha || $(sha256 "${f[0]}") == "$want_sha" ]] \
                    || { rm -rf "$dl"; die "downloaded $PKG does not match the archive's SHA256"; }
                cached=$(store_deb "${f[0]}")
                rm -rf "$dl"
                log "downloaded $(basename "$cached") in $(since "$t0") s"
                printf '%s' "$cached"; return
            fi
            rm -rf "$dl"
            log "download failed (see $aptdir/download.log); falling back to the cache"
        else
            log "archive unreachable (see $aptdir/update.log); falling back to the cache"
        fi
    fi
    cached=$(newest_cached_deb)
    [[ -n $cached ]] || die "no cached $PKG under $cache/debs and the archive is unreachable"
    printf '%s' "$cached"
}

deb=$(resolve_source)
deb_sha=$(sha256 "$deb")
[[ $deb == "$cache/debs/$deb_sha.deb" ]] || die "$deb does not match its sha256 ($deb_sha): corrupt cache?"
deb_ver=$(dpkg-deb -f "$deb" Version)
deb_name=$(dpkg-deb -f "$deb" Package)_${deb_ver#*:}_$(dpkg-deb -f "$deb" Architecture).deb
build_id=$(build_id_for "$deb_sha")
log "source $deb_name sha256 $deb_sha; build_id $build_id"

if [[ -f $out/manifest.json && -f $out/bzImage && $(manifest_field "$out/manifest.json" build_id) == "$build_id" ]]; then
    log "up to date: $out holds build $build_id"
    exit 0
fi

# --- unpack + patch -----------------------------------------------------------------
work=$cache/legacy-kernel/work-$build_id
src=$work/linux
# Build trees of other build ids are leftovers of failed or --keep-tree builds of
# inputs that no longer exist: they are 1+ GiB each.
for old in "$cache"/legacy-kernel/work-*; do
    [[ -d $old && $old != "$work" ]] || continue
    log "removing stale tree $old"; rm -rf "$old"
done
if [[ -f $work/.unpacked ]]; then
    log "reusing unpacked, patched tree $src"
else
    rm -rf "$work"; mkdir -p "$src"
    t0=$(now)
    dpkg-deb --fsys-tarfile "$deb" | tar -xO "./$TARBALL" | xz -dc -T0 | tar -x -C "$src" --strip-components=1
    [[ -f $src/Makefile && -f $src/net/netfilter/nfnetlink_queue.c ]] || die "$TARBALL did not unpack to a kernel tree"
    (cd "$src" && patch -p1 --forward --fuzz=0 --no-backup-if-mismatch <"$PATCH_FILE") >&2 \
        || die "legacy-failopen.patch does not apply to $PKG $deb_ver"
    # The unicast-failure branch must no longer look at FAIL_OPEN; the queue-full one must.
    n=$(grep -c 'NFQA_CFG_F_FAIL_OPEN' "$src/net/netfilter/nfnetlink_queue.c")
    [[ $n -ge 1 ]] && grep -q -A3 'err = nfnetlink_unicast(nskb' "$src/net/netfilter/nfnetlink_queue.c" \
        && ! grep -A3 'err = nfnetlink_unicast(nskb' "$src/net/netfilter/nfnetlink_queue.c" | grep -q FAIL_OPEN \
        || die "patched nfnetlink_queue.c does not look as expected"
    touch "$work/.unpacked"
    log "unpacked and patched in $(since "$t0") s"
fi

# --- configure ------------------------------------------------------------------------
# Reproducible identity: timestamp of the source tarball inside the .deb (Debian's build).
src_epoch=$(dpkg-deb --fsys-tarfile "$deb" | tar -tv --full-time "./$TARBALL" | awk '{ print $4 " " $5 }')
export ARCH=x86_64
export KBUILD_BUILD_TIMESTAMP="$(LC_ALL=C date -u -d "$src_epoch" '+%a %b %e %T UTC %Y')"
export KBUILD_BUILD_USER=kmatrix KBUILD_BUILD_HOST=kmatrix KBUILD_BUILD_VERSION=1
export LC_ALL=C
cd "$src"
t0=$(now)
scripts/kconfig/merge_config.sh -n kernel/configs/tiny.config arch/x86/configs/tiny.config \
    "$FRAGMENT" >"$work/merge_config.log" 2>&1 || { cat "$work/merge_config.log" >&2; die "merge_config.sh failed"; }
make -s olddefconfig >>"$work/merge_config.log" 2>&1 || die "make olddefconfig failed"

# Every option the fragment asks for must really be set that way (Kconfig silently
# drops options whose dependencies are missing).
missing=()
while IFS= read -r line; do
    if [[ $line =~ ^(CONFIG_[A-Za-z0-9_]+)=(.*)$ ]]; then
        grep -qxF -- "$line" .config || missing+=("$line (have: $(grep -E "^(# )?${BASH_REMATCH[1]}[= ]" .config || echo unset))")
    elif [[ $line =~ ^#\ (CONFIG_[A-Za-z0-9_]+)\ is\ not\ set$ ]]; then
        ! grep -qE "^${BASH_REMATCH[1]}=" .config || missing+=("$line (have: $(grep -E "^${BASH_REMATCH[1]}=" .config))")
    fi
done <"$FRAGMENT"
if ((${#missing[@]})); then
    printf 'legacy-kernel: not as required in .config:\n' >&2
    printf '  %s\n' "${missing[@]}" >&2
    die "${#missing[@]} config option(s) did not end up as the fragment says"
fi
grep -q '^CONFIG_MODULES=y' .config && die "CONFIG_MODULES ended up on"
log "configured in $(since "$t0") s ($(grep -c '=y$' .config) options =y)"

# --- build ------------------------------------------------------------------------------
t0=$(now)
log "building bzImage (nice -n 19 make -j$JOBS); log: $work/build.log"
if ! nice -n 19 make -j"$JOBS" bzImage >"$work/build.log" 2>&1; then
    tail -n 40 "$work/build.log" >&2
    die "kernel build failed (tree kept in $work)"
fi
build_s=$(since "$t0")
release=$(make -s kernelrelease)
log "built $release in $build_s s"

# --- outputs: written to a temp dir, manifest last, then moved in place --------------------------
mkdir -p "$out"
tmp=$(mktemp -d "$out/.tmp.XXXXXX")
cp arch/x86/boot/bzImage "$tmp/bzImage"
cp .config "$tmp/config"
cat >"$tmp/manifest.json" <<EOF
{
  "build_id": "$build_id",
  "config_sha256": "$(sha256 "$tmp/config")",
  "kernel_release": "$release",
  "patch_sha256": "$(sha256 "$PATCH_FILE")",
  "source_deb": "$deb_name",
  "source_sha256": "$deb_sha",
  "source_version": "$deb_ver"
}
EOF
rm -f "$out/manifest.json" # no manifest ⇒ never mistaken for a finished build mid-move
mv -f "$tmp/bzImage" "$out/bzImage"
mv -f "$tmp/config" "$out/config"
mv -f "$tmp/manifest.json" "$out/manifest.json"
rmdir "$tmp"

cd /
if ((keep_tree)); then
    log "keeping tree $src"
else
    rm -rf "$work"
fi
log "done: $out/bzImage ($(stat -c %s "$out/bzImage") bytes), kernel_release $release, build $build_s s"
