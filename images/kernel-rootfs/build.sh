#!/usr/bin/env bash
# kmatrix `kernel` guest image: a Debian kernel (vmlinuz) + kmatrix's own initramfs rootfs.
#
# Usage:
#   build.sh --suite bullseye|bookworm|trixie --probe PATH --cache DIR --out DIR
#            [--deb FILE]... [--rpm FILE]... [--bzimage FILE [--modules DIR]] [--pin SUITE:POOL@SHA256]...
#            [--flavour auto|cloud|amd64] [--offline] [--refresh] [--force]
#
#   --suite    which Debian kernel to resolve: bullseye = 5.10 (bullseye-security),
#              bookworm = 6.1 (bookworm, bookworm-updates, bookworm-security),
#              trixie = 6.12 (trixie, trixie-security). With --deb/--rpm/--bzimage it is
#              only a label (default "custom").
#   --deb      use these .deb files instead of resolving one (repeatable: e.g. an Ubuntu
#              linux-image + linux-modules pair). One of them must hold boot/vmlinuz-*.
#   --rpm      use these .rpm files (repeatable: RHEL 8's kernel-core + kernel-modules).
#              The kernel is boot/vmlinuz-* (RHEL 7, Amazon Linux 2) or
#              lib/modules/<release>/vmlinuz (RHEL 8 and later).
#   --pin      an exact package of a Debian suite's pool (a kernel set's row, images/kernel-set):
#              fetched from the mirror unless $CACHE/debs has it, checked against the sha256
#              the signed index gave (repeatable: a split kernel's linux-binary + linux-modules).
#              Exit 5 when the pool no longer has the file.
#   --bzimage  a bare kernel image; its release is read from the image's setup header.
#   --modules  with --bzimage: /lib/modules/<release> (or its parent) of that kernel.
#              Without it everything must be built in (README, "Validate a kernel"); /init reports
#              what is missing at boot as `KMATRIX-MISSING <what>` lines.
#   --flavour  auto (default): the newest linux-image-*-cloud-amd64; if that flavour lacks
#              a required module, the plain -amd64 flavour (logged). cloud|amd64: forced.
#   --offline  do not contact the archive; use the newest cached .deb for the suite.
#   --refresh  refresh the package lists even if they are younger than KMATRIX_APT_TTL.
#   --force    rebuild even if DIR already holds this build.
#   Environment: KMATRIX_APT_TTL (seconds, default 3600; 0 = refresh every run),
#   KMATRIX_DEBIAN_MIRROR / KMATRIX_SECURITY_MIRROR (default deb.debian.org), SOURCE_DATE_EPOCH.
#   --probe    the guest-side probe (static binary), installed as /usr/bin/kmatrix-probe.
#   --cache    ~/.cache/kmatrix (apt state, .deb cache, finished builds).
#
# Produces in --out DIR:
#   vmlinuz        the kernel, as shipped in the .deb
#   vmlinux        only for a kernel with a PVH entry (CONFIG_PVH): its decompressed ELF, which
#                  the guest boots instead (manifest "boot_kernel"; docs/architecture.md, "Boot")
#   initramfs.gz   gzip'd cpio (newc) rootfs, bit-for-bit reproducible from the same inputs: the
#                  userspace archive every kernel shares (builds/base-ID/base.cpio.gz: busybox,
#                  dropbear, iptables, nft, the probe, /init; built once) followed by this
#                  kernel's own (its modules, /etc/kmatrix/modules*, /etc/os-release); the kernel
#                  unpacks concatenated archives in turn
#   manifest.json  {"suite","package","version","deb_sha256","kernel_release",
#                   "initramfs_sha256","build_id","modules":[...], ...}
#   .kmatrix-stamp the input key of the build; a second run with the same inputs is a
#                  no-op (well under 1 s) as long as the package lists are fresh.
#
# Boot contract (see ./init): kernel command line
#   console=ttyS0 panic=-1 quiet cryptomgr.notests acpi=noirq pci=nomsi kmatrix.sshkey=<base64 key line>
#   eth0 10.0.2.15/24 gw 10.0.2.2 (QEMU user net), dropbear on :22 accepting that key for root,
#   `KMATRIX-READY` on the console once :22 listens, `KMATRIX-MISSING <module>` per failed module.
#
# Host requirements (Debian 12 packages): apt, dpkg, debian-archive-keyring, busybox-static,
#   dropbear-bin, iptables, nftables, kmod (depmod, modinfo), cpio, gzip, xz-utils, zstd,
#   coreutils, findutils, util-linux (flock), libc-bin (ldd).
#   The guest userland (busybox, dropbear, iptables, nft and their shared libraries, found
#   with ldd, plus the dynamic loader) is copied from the HOST's installed packages; their
#   versions are part of the build id. Network: only deb.debian.org (the kernel .deb).
#   Root is not required (the cpio carries no device nodes; /init attaches the console).
#
# Cache layout (under --cache):
#   apt/SUITE/      private apt config, sources.list, lists, cache, empty dpkg status
#   debs/SHA256.deb downloaded kernels, by content; SHA256.meta: suite/flavour/package/version
#   builds/BUILD_ID finished outputs, copied to --out on a cache hit
set -Eeuo pipefail
# set -e stops without a word; say where, so the harness can show it in the cell's reason
trap 'echo "kernel-rootfs: error: line $LINENO: $BASH_COMMAND failed" >&2' ERR
umask 022
export LC_ALL=C

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
KM_NAME=kernel-rootfs
# shellcheck source=../lib.sh
. "$HERE/../lib.sh"
SDE=${SOURCE_DATE_EPOCH:-1704067200}   # fixed mtimes in the cpio
APT_TTL=${KMATRIX_APT_TTL:-3600}       # seconds a package list is trusted before refreshing
MIRROR=${KMATRIX_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY=${KMATRIX_SECURITY_MIRROR:-http://deb.debian.org/debian-security}

# Modules: loaded in this order by /init with modprobe (dependencies from modules.dep).
# REQUIRED ones missing from a flavour make `auto` switch to the -amd64 flavour.
REQUIRED_MODULES=(virtio_pci virtio_net nfnetlink x_tables ip_tables iptable_filter xt_tcpudp
	xt_NFQUEUE nfnetlink_queue nf_tables nft_compat nft_queue)
# The others in MODULE_ORDER are optional: absent is fine (nft_counter was merged into
# nf_tables in 5.13; unix is usually built in; virtio_rng only speeds up early entropy).
MODULE_ORDER=(virtio_pci virtio_rng virtio_net unix nfnetlink x_tables ip_tables iptable_filter
	xt_tcpudp xt_NFQUEUE nfnetlink_queue nf_tables nft_counter nft_compat nft_queue)

# Host packages whose files end up in the image (their versions enter the build id).
HOST_PKGS=(busybox-static dropbear-bin iptables libxtables12 libip4tc2 libip6tc2 nftables
	libnftables1 libnftnl11 libmnl0 libjansson4 libedit2 libtinfo6 libbsd0 libmd0 libgmp10
	libtomcrypt1 libtommath1 zlib1g libcrypt1 libc6 kmod)
HOST_BINS=(/usr/sbin/dropbear /usr/bin/dropbearkey /usr/sbin/xtables-legacy-multi
	/usr/sbin/xtables-nft-multi /usr/sbin/nft)
XT_DIR=/usr/lib/x86_64-linux-gnu/xtables
XT_EXTS=(libxt_standard libxt_NFQUEUE libxt_udp libxt_tcp libipt_icmp libxt_mark libxt_comment
	libxt_multiport)

log() { km_log "$@"; }
die() { km_die "$@"; }
# Decompressing a kernel's payload for the PVH boot (pvh_kernel): without these it would
# silently fall back to the slower bzImage boot.
km_need xz zstd lz4 gzip readelf od

SUITE="" PROBE="" CACHE="" OUT="" FLAVOUR=auto OFFLINE=0 REFRESH=0 FORCE=0
DEBS=() RPMS=() BZIMAGE="" MODULES_DIR="" PINS=()
while [ $# -gt 0 ]; do
	case "$1" in
	--suite) SUITE=${2:?}; shift 2 ;;
	--rpm) RPMS+=("${2:?}"); shift 2 ;;
	--bzimage) BZIMAGE=${2:?}; shift 2 ;;
	--modules) MODULES_DIR=${2:?}; shift 2 ;;
	--probe) PROBE=${2:?}; shift 2 ;;
	--cache) CACHE=${2:?}; shift 2 ;;
	--out) OUT=${2:?}; shift 2 ;;
	--deb) DEBS+=("${2:?}"); shift 2 ;;
	--pin) PINS+=("${2:?}"); shift 2 ;;
	--flavour|--flavor) FLAVOUR=${2:?}; shift 2 ;;
	--offline) OFFLINE=1; shift ;;
	--refresh) REFRESH=1; shift ;;
	--force) FORCE=1; shift ;;
	-h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) die "unknown argument: $1 (see --help)" ;;
	esac
done
[ -n "$PROBE" ] && [ -n "$CACHE" ] && [ -n "$OUT" ] || die "--probe, --cache and --out are required"
[ -f "$PROBE" ] || die "probe not found: $PROBE"
case "$FLAVOUR" in auto|cloud|amd64) ;; *) die "--flavour must be auto, cloud or amd64" ;; esac
# KIND: where the kernel comes from. GIVEN: the files of deb/rpm/bzimage, absolute.
KIND=archive GIVEN=()
[ ${#DEBS[@]} -eq 0 ] || { KIND=deb GIVEN=("${DEBS[@]}"); }
[ ${#RPMS[@]} -eq 0 ] || { [ "$KIND" = archive ] || die "give either --deb, --rpm or --bzimage"; KIND=rpm GIVEN=("${RPMS[@]}"); }
[ -z "$BZIMAGE" ] || { [ "$KIND" = archive ] || die "give either --deb, --rpm or --bzimage"; KIND=bzimage GIVEN=("$BZIMAGE"); }
if [ ${#PINS[@]} -gt 0 ]; then
	[ "$KIND" = archive ] || die "give either --pin, --deb, --rpm or --bzimage"
	[ -n "$CACHE" ] || die "--cache is required"
	km_need curl
	mkdir -p "$CACHE/debs"
	# Each pin: the pool path and sha256 the signed index gave; the file is fetched by them.
	for pin in "${PINS[@]}"; do
		[[ $pin =~ ^((bullseye|bookworm|trixie)(-updates|-security|-backports)?):(pool/(updates/)?main/[a-z0-9]+/[a-z0-9.+-]+/[A-Za-z0-9.+~_%-]+\.deb)@([0-9a-f]{64})$ ]] ||
			die "bad --pin: $pin"
		pin_suite=${BASH_REMATCH[1]} pool=${BASH_REMATCH[4]} want=${BASH_REMATCH[6]}
		deb=$CACHE/debs/$want.deb
		if [ ! -f "$deb" ]; then
			case "$pin_suite" in *-security) url=$SECURITY/$pool ;; *) url=$MIRROR/$pool ;; esac
			part=$(mktemp "$CACHE/debs/.dl.XXXXXX")
			code=$(curl -sS -L --retry 2 --max-time 600 -o "$part" -w '%{http_code}' "$url" || true)
			if [ "$code" = 404 ]; then rm -f "$part"; km_log "the $pin_suite pool no longer has ${pool##*/} (HTTP 404)"; exit 5; fi
			[ "$code" = 200 ] || { rm -f "$part"; die "downloading $url failed (HTTP $code)"; }
			[ "$(km_sha256 "$part")" = "$want" ] || { rm -f "$part"; die "sha256 mismatch for $url"; }
			km_deb_store "$CACHE" "$part" "$pin_suite" pinned >/dev/null
		fi
		touch "$deb" # its age tells `kmatrix gc` when it was last used
		GIVEN+=("$deb")
	done
	KIND=deb DEBS=("${GIVEN[@]}") SUITE=${SUITE:-pinned}
fi
[ -z "$MODULES_DIR" ] || [ "$KIND" = bzimage ] || die "--modules goes with --bzimage"
if [ "$KIND" = archive ]; then
	case "$SUITE" in
	bullseye) KSERIES=5.10 ;;
	bookworm) KSERIES=6.1 ;;
	trixie) KSERIES=6.12 ;;
	*) die "--suite must be bullseye, bookworm or trixie (or give --deb)" ;;
	esac
else
	SUITE=${SUITE:-custom}
	for i in "${!GIVEN[@]}"; do
		[ -f "${GIVEN[$i]}" ] || die "no such file: ${GIVEN[$i]}"
		GIVEN[$i]=$(readlink -f "${GIVEN[$i]}")
	done
	if [ -n "$MODULES_DIR" ]; then
		[ -d "$MODULES_DIR" ] || die "--modules: no such directory: $MODULES_DIR"
		MODULES_DIR=$(readlink -f "$MODULES_DIR")
	fi
	[ "$KIND" != rpm ] || command -v rpm2cpio >/dev/null || die "rpm2cpio is needed for --rpm (apt-get install rpm2cpio)"
fi
mkdir -p "$CACHE" "$OUT"
CACHE=$(cd "$CACHE" && pwd)
OUT=$(cd "$OUT" && pwd)
PROBE=$(readlink -f "$PROBE")

sha() { sha256sum "$1" | cut -d' ' -f1; }
# known_sha FILE: the same for inputs named on the command line and finished outputs, which are
# checked on every run: remembered in $CACHE/digests by what stat says of the file (device,
# inode, size, mtime and ctime to the nanosecond; any write moves ctime, which no caller can set
# back), so a 70 MB kernel package or an 80 MB vmlinux is read once, not on every run (hashing
# them took 0.6 s of a 4.8 s kernel run). The harness keeps its disk digests the same way.
known_sha() {
	local id path entry seen sum
	id=$(stat -L -c '%d:%i:%s:%.9Y:%.9Z' -- "$1") || return 1
	path=$(readlink -f -- "$1")
	entry=$CACHE/digests/$(printf '%s' "$path" | sha256sum | cut -c1-32)
	if [ -f "$entry" ] && read -r seen sum _ <"$entry" && [ "$seen" = "$id" ] && [ ${#sum} = 64 ]; then
		echo "$sum"
		return 0
	fi
	sum=$(sha "$1") || return 1
	# `kmatrix gc` drops entries whose path is gone: the path ends the line.
	mkdir -p "$CACHE/digests" && printf '%s %s %s\n' "$id" "$sum" "$path" >"$entry.$$" && mv -f "$entry.$$" "$entry"
	echo "$sum"
}

# Under TCG a distro bzImage spends ~5 s of every boot decompressing itself. QEMU boots an ELF
# vmlinux that carries the PVH entry note (Xen note type 18, CONFIG_PVH) directly, so the
# payload is decompressed once, here. The bzImage header says where the payload is (boot
# protocol 2.08+); its last 4 bytes are the decompressed size (gzip's ISIZE, or the size the
# kernel build appends to the other formats), which bounds and checks the output.
# le OFFSET BYTES FILE: an unsigned little-endian field, 0 past the end of a short file
le() { local v; v=$(od -An -tu"$2" -j "$1" -N"$2" "$3" 2>/dev/null | tr -d ' \n'); echo "${v:-0}"; }
pvh_kernel() { # bzImage out: writes out and succeeds only for a kernel QEMU can boot by PVH
	local bz=$1 out=$2 setup version start length size magic keep dec
	[ "$(od -An -tx1 -j 514 -N4 "$bz" 2>/dev/null | tr -d ' ')" = 48647253 ] || return 1   # "HdrS"
	version=$(le 518 2 "$bz"); ((version >= 0x208)) || return 1
	setup=$(le 497 1 "$bz"); ((setup)) || setup=4
	start=$(( (setup + 1) * 512 + $(le 584 4 "$bz") )); length=$(le 588 4 "$bz")
	((length > 4 && start + length <= $(stat -c %s "$bz"))) || return 1
	size=$(le $((start + length - 4)) 4 "$bz")
	((size > 0 && size <= 512 << 20)) || return 1
	magic=$(od -An -tx1 -j "$start" -N6 "$bz" 2>/dev/null | tr -d ' ')
	keep=$((length - 4))
	case $magic in
		1f8b*) dec=(gzip -dc); keep=$length ;;
		fd377a585a00) dec=(xz -dc --single-stream) ;;
		28b52ffd*) dec=(zstd -dcq) ;;
		02214c18*) dec=(lz4 -dcq) ;;
		*) return 1 ;;
	esac
	tail -c +$((start + 1)) "$bz" | head -c "$keep" | "${dec[@]}" 2>/dev/null | head -c $((size + 1)) >"$out" || true
	[ "$(stat -c %s "$out")" = "$size" ] && [ "$(head -c4 "$out" | od -An -tx1 | tr -d ' ')" = 7f454c46 ] &&
		readelf -n "$out" 2>/dev/null | grep -q '^ *Xen .*(0x00000012)' || { rm -f "$out"; return 1; }
}

# ---------------------------------------------------------------- private apt
apt_setup() {
	km_apt_use "$CACHE/apt/$SUITE"
	case "$SUITE" in
	bullseye) km_apt_sources "$SECURITY bullseye-security main" ;;
	bookworm) km_apt_sources "$MIRROR bookworm main" "$MIRROR bookworm-updates main" "$SECURITY bookworm-security main" ;;
	trixie) km_apt_sources "$MIRROR trixie main" "$SECURITY trixie-security main" ;;
	esac
}
# resolve FLAVOUR -> R_PKG R_VER R_SHA (from the signed index; no download)
resolve() {
	local flav=$1 series=${KSERIES//./\\.} re names memo=$KM_APT_DIR/resolved.$1
	# apt-cache needs ~0.5 s; remember the answer until the lists change
	if [ -s "$memo" ] && [ "$memo" -nt "$KM_APT_DIR/lists/.updated" ]; then
		IFS='|' read -r R_PKG R_VER R_SHA <"$memo"
		return 0
	fi
	if [ "$flav" = cloud ]; then re="^linux-image-${series}\.[0-9]+[-+][0-9a-z.+~-]*-cloud-amd64\$"
	else re="^linux-image-${series}\.[0-9]+[-+][0-9a-z.+~-]*-amd64\$"; fi
	names=$(km_apt apt-cache pkgnames linux-image- 2>/dev/null | grep -E "$re" || true)
	[ "$flav" = cloud ] || names=$(grep -vE -- '-(cloud|rt)-amd64$' <<<"$names" || true)
	[ -n "$names" ] || return 1
	R_PKG="" R_VER="" R_SHA=""
	local p v s
	# shellcheck disable=SC2086 # $names: one package name per word
	while IFS='|' read -r p v s; do
		if [ -z "$R_VER" ] || dpkg --compare-versions "$v" gt "$R_VER"; then R_PKG=$p R_VER=$v R_SHA=$s; fi
	done < <(km_apt apt-cache show --no-all-versions $names 2>/dev/null |
		awk '/^Package: /{p=$2} /^Version: /{v=$2} /^SHA256: /{s=$2} /^$/{if(p!="")print p"|"v"|"s; p=v=s=""} END{if(p!="")print p"|"v"|"s}')
	[ -n "$R_PKG" ] || return 1
	printf '%s|%s|%s\n' "$R_PKG" "$R_VER" "$R_SHA" >"$memo"
}
# newest cached .deb of SUITE/FLAVOUR -> R_PKG R_VER R_SHA
resolve_cached() {
	local deb
	deb=$(km_deb_newest "$CACHE" "$SUITE" "$1" linux-image-)
	[ -n "$deb" ] || return 1
	R_PKG=$(km_deb_field "$deb" package) R_VER=$(km_deb_field "$deb" version) R_SHA=$(basename "$deb" .deb)
}
fetch_deb() { # R_* -> $CACHE/debs/R_SHA.deb
	km_deb_download "$CACHE" "$R_PKG" "$R_VER" "$R_SHA" "$SUITE" "$R_FLAV" >/dev/null
}
# pick_deb FLAVOUR -> R_PKG R_VER R_SHA R_FLAV R_SOURCE, deb in the cache
ONLINE=unknown
pick_deb() {
	R_FLAV=$1
	if [ "$ONLINE" = unknown ]; then
		ONLINE=0
		if [ "$OFFLINE" = 0 ]; then
			apt_setup
			exec 8>"$KM_APT_DIR/.lock"; flock 8
			km_apt_update "$APT_TTL" "$REFRESH" && ONLINE=1
		fi
	fi
	if [ "$ONLINE" = 1 ] && resolve "$R_FLAV"; then
		if fetch_deb; then R_SOURCE=archive; return 0; fi
		log "download failed; falling back to the newest cached .deb"
	fi
	if resolve_cached "$R_FLAV"; then
		R_SOURCE=cache
		log "offline: using cached $R_PKG $R_VER"
		return 0
	fi
	return 1
}

# ---------------------------------------------------------------- build id
RECIPE_FILES=(build.sh init ../lib.sh)   # what goes into the image; boot-test.sh does not
recipe_hash() { (cd "$HERE" && sha256sum "${RECIPE_FILES[@]}" | sha256sum | cut -d' ' -f1); }
host_versions() { dpkg-query -W -f='${db:Status-Abbrev}|${Package}=${Version}\n' "${HOST_PKGS[@]}" 2>/dev/null | sed -n 's/^ii *|//p' | sort; }
RECIPE_SHA=$(recipe_hash)
PROBE_SHA=$(sha "$PROBE")
HOST_VERSIONS=$(host_versions)
[ "$(wc -l <<<"$HOST_VERSIONS")" -eq ${#HOST_PKGS[@]} ] ||
	die "host packages missing: $(comm -23 <(printf '%s\n' "${HOST_PKGS[@]}" | sort) <(cut -d= -f1 <<<"$HOST_VERSIONS") | tr '\n' ' ')(apt-get install them)"
build_id_for() { # deb shas...
	{ echo "kmatrix-kernel-rootfs/1"; echo "recipe=$RECIPE_SHA"; echo "probe=$PROBE_SHA"; echo "sde=$SDE"
	  echo "suite=$SUITE"; echo "flavour=$R_FLAV"
	  printf 'deb=%s\n' "$@"; echo "$HOST_VERSIONS"; } | sha256sum | cut -d' ' -f1
}
outputs_ok() { # stamp in OUT says $1 and the files are intact
	[ -f "$OUT/.kmatrix-stamp" ] && [ "$(cat "$OUT/.kmatrix-stamp")" = "$1" ] || return 1
	[ -f "$OUT/vmlinuz" ] && [ -f "$OUT/initramfs.gz" ] && [ -f "$OUT/manifest.json" ] || return 1
	local initramfs boot boot_sha
	read -r initramfs boot boot_sha < <(jq -r '"\(.initramfs_sha256 // "-") \(.boot_kernel // "-") \(.boot_kernel_sha256 // "-")"' "$OUT/manifest.json" 2>/dev/null) || return 1
	case $boot in vmlinuz|vmlinux) ;; *) return 1 ;; esac
	[ "$initramfs" = "$(known_sha "$OUT/initramfs.gz")" ] && [ -f "$OUT/$boot" ] && [ "$boot_sha" = "$(known_sha "$OUT/$boot")" ]
}

# A finished build is reused only while its files are what its manifest says: an output in --out
# is a hard link to it, so a write there is a write here too.
built_ok() {
	local b=$CACHE/builds/$1 boot
	[ -f "$b/manifest.json" ] && [ -f "$b/initramfs.gz" ] && [ -f "$b/vmlinuz" ] || return 1
	boot=$(km_manifest_get "$b/manifest.json" boot_kernel); [ -n "$boot" ] && [ -f "$b/$boot" ] || return 1
	[ "$(km_manifest_get "$b/manifest.json" initramfs_sha256)" = "$(known_sha "$b/initramfs.gz")" ] &&
		[ "$(km_manifest_get "$b/manifest.json" boot_kernel_sha256)" = "$(known_sha "$b/$boot")" ]
}
publish() { # copy builds/ID to OUT, stamp it
	local b=$CACHE/builds/$1 f
	rm -f "$OUT/vmlinux"
	for f in vmlinuz initramfs.gz manifest.json $([ -f "$b/vmlinux" ] && echo vmlinux); do
		# A link where the file system allows: builds are never written in place, and a kernel
		# set of 80 kernels would otherwise keep every vmlinux twice.
		rm -f "$OUT/.$f.new"
		ln "$b/$f" "$OUT/.$f.new" 2>/dev/null || cp -p "$b/$f" "$OUT/.$f.new"
		mv "$OUT/.$f.new" "$OUT/$f"
	done
	printf '%s\n' "$INPUT_KEY" >"$OUT/.kmatrix-stamp"
	log "done: $OUT ($(km_manifest_get "$b/manifest.json" kernel_release), initramfs $(stat -c %s "$OUT/initramfs.gz") bytes, sha256 $(km_manifest_get "$b/manifest.json" initramfs_sha256))"
}

# ---------------------------------------------------------------- choose inputs
exec 9>"$OUT/.lock"; flock 9
if [ "$KIND" != archive ]; then
	DEB_SHAS=(); for d in "${GIVEN[@]}"; do DEB_SHAS+=("$(known_sha "$d")"); done
	# a modules directory enters the build id by the content of every file in it
	[ -z "$MODULES_DIR" ] || DEB_SHAS+=("modules:$(cd "$MODULES_DIR" && find . -type f -print0 | sort -z | xargs -0r sha256sum | sha256sum | cut -d' ' -f1)")
	R_SOURCE=given R_FLAV=$KIND
	KEY=$(build_id_for "${DEB_SHAS[@]}")
else
	first=$FLAVOUR; [ "$first" = auto ] && first=cloud
	pick_deb "$first" || die "no $first kernel for $SUITE: archive unreachable and nothing cached under $CACHE/debs"
	DEBS=("$CACHE/debs/$R_SHA.deb"); DEB_SHAS=("$R_SHA")
	KEY=$(build_id_for "$R_SHA")
fi
INPUT_KEY="$KEY flavour=$FLAVOUR"
if [ "$FORCE" = 0 ] && outputs_ok "$INPUT_KEY"; then
	log "up to date: $OUT ($(km_manifest_get "$OUT/manifest.json" build_id))"
	exit 0
fi
if [ "$FORCE" = 0 ] && built_ok "$KEY"; then
	log "reusing $CACHE/builds/$KEY"; publish "$KEY"; exit 0
fi

# ---------------------------------------------------------------- the shared userspace
# build_base -> BASE_CPIO: busybox, dropbear, iptables, nft, the probe, /etc and /init, the same
# for every kernel (builds/base-ID, ID from the recipe, the probe and the host's packages), made
# once and appended to by each kernel's own archive.
build_base() {
	BASE_ID=$( { echo "kmatrix-kernel-rootfs-base/1"; echo "recipe=$RECIPE_SHA"; echo "probe=$PROBE_SHA"; echo "sde=$SDE"; echo "$HOST_VERSIONS"; } |
		sha256sum | cut -d' ' -f1)
	local dir=$CACHE/builds/base-$BASE_ID
	BASE_CPIO=$dir/base.cpio.gz
	mkdir -p "$CACHE/builds"
	exec 7>"$dir.lock"; flock 7
	if [ -f "$BASE_CPIO" ]; then exec 7>&-; touch "$dir"; return 0; fi
	log "building the shared userspace $BASE_ID"
	local ROOT=$TMP/base
	mkdir -p "$ROOT"/{usr/bin,usr/sbin,usr/lib/x86_64-linux-gnu,usr/lib64,usr/lib/modules,etc/kmatrix,proc,sys,dev,run,tmp,root,var/log}
	ln -s usr/bin "$ROOT/bin"; ln -s usr/sbin "$ROOT/sbin"; ln -s usr/lib "$ROOT/lib"; ln -s usr/lib64 "$ROOT/lib64"
	ln -s ../run "$ROOT/var/run"
	chmod 700 "$ROOT/root"; chmod 1777 "$ROOT/tmp"
	# --- userland from the host
	ELFS=()
	cp /bin/busybox "$ROOT/usr/bin/busybox"
	while IFS= read -r a; do
		case "$a" in
		bin/*|usr/bin/*) dst=usr/bin/${a##*/} ;;
		sbin/*|usr/sbin/*) dst=usr/sbin/${a##*/} ;;
		*) continue ;;
		esac
		[ "${a##*/}" = busybox ] && continue
		[ -e "$ROOT/$dst" ] || [ -L "$ROOT/$dst" ] || ln -s /usr/bin/busybox "$ROOT/$dst"
	done < <(/bin/busybox --list-full | sort)
	for b in "${HOST_BINS[@]}"; do
		install -m 0755 "$b" "$ROOT/usr/${b#/usr/}"; ELFS+=("$ROOT/usr/${b#/usr/}")
	done
	for n in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore \
		iptables-legacy iptables-legacy-save iptables-legacy-restore \
		ip6tables-legacy ip6tables-legacy-save ip6tables-legacy-restore; do
		ln -sf xtables-legacy-multi "$ROOT/usr/sbin/$n"
	done
	for n in iptables-nft iptables-nft-save iptables-nft-restore ip6tables-nft ip6tables-nft-save ip6tables-nft-restore; do
		ln -sf xtables-nft-multi "$ROOT/usr/sbin/$n"
	done
	mkdir -p "$ROOT$XT_DIR"
	for x in "${XT_EXTS[@]}"; do
		install -m 0644 "$XT_DIR/$x.so" "$ROOT$XT_DIR/$x.so"; ELFS+=("$ROOT$XT_DIR/$x.so")
	done
	install -m 0755 "$PROBE" "$ROOT/usr/bin/kmatrix-probe"; ELFS+=("$ROOT/usr/bin/kmatrix-probe")
	[ "$(sha "$ROOT/usr/bin/kmatrix-probe")" = "$PROBE_SHA" ] || die "$PROBE changed during the build; run again"

	# shared libraries (ldd of the host copies) + the dynamic loader
	declare -A LIBS=()
	for e in "${ELFS[@]}"; do
		src=$e
		case "$e" in "$ROOT$XT_DIR"/*|"$ROOT/usr/bin/kmatrix-probe") ;; *) src=/${e#"$ROOT"/} ;; esac
		# ldd fails on static binaries (the probe): they simply have no libraries.
		while read -r l; do LIBS[$l]=1; done < <({ ldd "$src" 2>/dev/null || true; } | awk '$2=="=>" && $3 ~ /^\// {print $1" "$3} $1 ~ /^\// {print $1" "$1}')
	done
	for k in "${!LIBS[@]}"; do echo "$k"; done | sort >"$TMP/libs"
	while read -r name path; do
		case "$name" in
		*/ld-linux-*)
			install -m 0755 "$(readlink -f "$path")" "$ROOT/usr/lib/x86_64-linux-gnu/${name##*/}"
			ln -sf "../lib/x86_64-linux-gnu/${name##*/}" "$ROOT/usr/lib64/${name##*/}" ;;
		*) install -m 0644 "$(readlink -f "$path")" "$ROOT/usr/lib/x86_64-linux-gnu/${name##*/}" ;;
		esac
		readlink -f "$path" >>"$TMP/libfiles"
	done <"$TMP/libs"
	# every copied file must come from a package listed in HOST_PKGS (build id coverage)
	owners=$( { printf '%s\n' /bin/busybox "${HOST_BINS[@]}"; for x in "${XT_EXTS[@]}"; do echo "$XT_DIR/$x.so"; done
		cat "$TMP/libfiles"; sed -n 's|^/usr/lib/|/lib/|p' "$TMP/libfiles"; } | { xargs dpkg -S 2>/dev/null || true; } | cut -d: -f1 | tr ',' '\n' | tr -d ' ' | sed '/^$/d' | sort -u)
	for o in $owners; do
		printf '%s\n' "${HOST_PKGS[@]}" | grep -qx "$o" || log "warning: image takes files from host package $o, which is not in HOST_PKGS"
	done

	# --- /etc and /init
	cat >"$ROOT/etc/passwd" <<-'EOF'
	root:x:0:0:root:/root:/bin/sh
	nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
	EOF
	cat >"$ROOT/etc/group" <<-'EOF'
	root:x:0:
	tty:x:5:
	nogroup:x:65534:
	EOF
	printf '/bin/sh\n' >"$ROOT/etc/shells"
	printf 'passwd: files\ngroup: files\nshadow: files\nhosts: files\n' >"$ROOT/etc/nsswitch.conf"
	printf '127.0.0.1 localhost\n10.0.2.15 kmatrix\n' >"$ROOT/etc/hosts"
	# busybox init: nothing to start (the /init script did it); just reap and handle poweroff.
	printf '::ctrlaltdel:/sbin/reboot -f\n::shutdown:/bin/sync\n' >"$ROOT/etc/inittab"
	install -m 0755 "$HERE/init" "$ROOT/init"
	find "$ROOT" -exec touch -h -d "@$SDE" {} +
	# "." first: it sets the mode of / in the guest (else the kernel leaves it 1777)
	(cd "$ROOT" && { echo .; find . -mindepth 1 -printf '%P\n' | sort; } |
		cpio -o -H newc -R 0:0 --reproducible --quiet) | gzip -n -6 >"$TMP/base.cpio.gz"
	rm -rf "$dir.tmp"; mkdir -p "$dir.tmp"
	mv "$TMP/base.cpio.gz" "$dir.tmp/base.cpio.gz"
	rm -rf "$dir"; mv "$dir.tmp" "$dir"
	exec 7>&-
}

# ---------------------------------------------------------------- build
TMP=$(mktemp -d "${TMPDIR:-/tmp}/kmatrix-kernel-rootfs.XXXXXX")
STAGE=""
trap 'rm -rf "$TMP" ${STAGE:+"$STAGE"}' EXIT

norm() { local n=${1##*/}; n=${n%%.ko*}; echo "${n//-/_}"; }

# The release string of a bzImage, from its setup header (kernel_version at 0x20E + 0x200).
bzimage_release() {
	[ "$(dd if="$1" bs=1 skip=514 count=4 2>/dev/null)" = HdrS ] || return 1
	local offset
	offset=$(od -An -tu2 -j526 -N2 "$1" | tr -d ' ')
	[ -n "$offset" ] && [ "$offset" -gt 0 ] || return 1
	dd if="$1" bs=1 skip=$((offset + 512)) count=256 2>/dev/null | tr '\0' '\n' | head -n1 | cut -d' ' -f1
}

# extract_kernel: the kernel files -> $TMP/kernel, VMLINUZ, KVER, MODSRC (may be ""), index of modules
extract_kernel() {
	local k=$TMP/kernel d
	rm -rf "$k"; mkdir -p "$k"
	case "$KIND" in
	archive|deb)
		# Confined after each package: a link the first left must not carry the next one's
		# files out of the folder (a split kernel is linux-binary plus linux-modules).
		for d in "${DEBS[@]}"; do
			km_unpack_deb "$d" "$k" --wildcards './boot/vmlinuz-*' './lib/modules/*' './usr/lib/modules/*' 2>/dev/null || true
		done ;;
	rpm)
		for d in "${GIVEN[@]}"; do
			(cd "$k" && rpm2cpio "$d" | cpio -idm --quiet --no-absolute-filenames \
				'./boot/vmlinuz-*' './lib/modules/*' './usr/lib/modules/*' 2>/dev/null) ||
				die "cannot unpack $d (rpm2cpio | cpio failed): not an RPM, or a truncated one"
		done ;;
	bzimage)
		local release
		release=$(bzimage_release "$BZIMAGE") || die "$BZIMAGE is not an x86 bzImage (no HdrS setup header)"
		[[ $release =~ ^[A-Za-z0-9][A-Za-z0-9._+~-]{0,63}$ ]] || die "$BZIMAGE names its release '${release//[^[:print:]]/?}', not a plain release string"
		mkdir -p "$k/boot"
		cp "$BZIMAGE" "$k/boot/vmlinuz-$release"
		if [ -n "$MODULES_DIR" ]; then
			local from=$MODULES_DIR
			[ -d "$from/kernel" ] || [ -f "$from/modules.order" ] || from=$MODULES_DIR/$release
			[ -d "$from" ] || die "--modules $MODULES_DIR holds neither the modules of $release nor a $release directory"
			mkdir -p "$k/lib/modules"
			cp -a "$from" "$k/lib/modules/$release"
		fi ;;
	esac
	# Whatever the kind, nothing below reads through a link out of the folder or from a device.
	km_confine "$k"
	local vm
	vm=$(find "$k/boot" -maxdepth 1 -name 'vmlinuz-*' 2>/dev/null | sort | head -n1 || true)
	if [ -n "$vm" ]; then KVER=${vm##*/vmlinuz-}
	else
		# RHEL 8 and later ship the kernel inside its modules directory
		vm=$(find "$k/lib/modules" "$k/usr/lib/modules" -mindepth 2 -maxdepth 2 -name vmlinuz 2>/dev/null | sort | head -n1 || true)
		[ -n "$vm" ] || die "no boot/vmlinuz-* or lib/modules/*/vmlinuz in ${GIVEN[*]:-${DEBS[*]}}"
		KVER=$(basename "$(dirname "$vm")")
	fi
	VMLINUZ=$vm
	# The release names folders and files: a hostile image must not smuggle a path in.
	[[ $KVER =~ ^[A-Za-z0-9][A-Za-z0-9._+~-]{0,63}$ ]] || die "kernel release '${KVER//[^[:print:]]/?}' is not a plain release string"
	MODSRC=""
	for d in "$k/lib/modules/$KVER" "$k/usr/lib/modules/$KVER"; do [ -d "$d" ] && MODSRC=$d; done
	[ -n "$MODSRC" ] || [ "$KIND" = bzimage ] || die "no modules for $KVER in ${GIVEN[*]:-${DEBS[*]}} (a split kernel package? give its modules package too)"
	declare -gA MODFILE=() BUILTIN=()
	[ -n "$MODSRC" ] || return 0
	local f
	while IFS= read -r f; do MODFILE[$(norm "$f")]=$f; done < <(cd "$MODSRC" && find . -name '*.ko' -o -name '*.ko.xz' -o -name '*.ko.zst' -o -name '*.ko.gz' | sed 's|^\./||' | sort)
	if [ -f "$MODSRC/modules.builtin" ]; then
		while IFS= read -r f; do BUILTIN[$(norm "$f")]=1; done <"$MODSRC/modules.builtin"
	fi
	# A module built into an object of another name (7.2 on: nfnetlink inside netfilter.ko)
	# is only named in modules.builtin.modinfo, as `name.key=value` records.
	if [ -f "$MODSRC/modules.builtin.modinfo" ]; then
		while IFS= read -r f; do BUILTIN[$(norm "$f")]=1; done < <(tr '\0' '\n' <"$MODSRC/modules.builtin.modinfo" | sed -n 's/^\([A-Za-z0-9_-]*\)\..*/\1/p' | sort -u)
	fi
}
missing_required() {
	# a bare kernel without modules.builtin: only the guest can tell (its /init checks)
	[ -n "$MODSRC" ] && [ -f "$MODSRC/modules.builtin" ] || { echo ""; return 0; }
	local m out=()
	for m in "${REQUIRED_MODULES[@]}"; do
		[ -n "${MODFILE[$m]:-}" ] || [ -n "${BUILTIN[$m]:-}" ] || out+=("$m")
	done
	echo "${out[*]}"
}

extract_kernel
MISSING=$(missing_required)
if [ -n "$MISSING" ] && [ "$FLAVOUR" = auto ] && [ "$R_FLAV" = cloud ]; then
	log "cloud flavour $R_PKG lacks: $MISSING -> using the plain amd64 flavour"
	pick_deb amd64 || die "no amd64 kernel for $SUITE"
	DEBS=("$CACHE/debs/$R_SHA.deb"); DEB_SHAS=("$R_SHA")
	extract_kernel
	MISSING=$(missing_required)
fi
[ -z "$MISSING" ] || log "warning: kernel $KVER lacks required modules: $MISSING (the guest will print KMATRIX-MISSING)"
BUILD_ID=$(build_id_for "${DEB_SHAS[@]}")
case "$KIND" in
deb)
	R_PKG=$(dpkg-deb -f "${DEBS[0]}" Package) R_VER=$(dpkg-deb -f "${DEBS[0]}" Version)
	for d in "${DEBS[@]}"; do
		case "$(dpkg-deb -f "$d" Package)" in linux-image-*) R_PKG=$(dpkg-deb -f "$d" Package) R_VER=$(dpkg-deb -f "$d" Version) ;; esac
	done ;;
rpm) R_PKG=$(basename "${GIVEN[0]}" .rpm) R_VER=$KVER ;;
bzimage) R_PKG=$(basename "$BZIMAGE") R_VER=$KVER ;;
esac

# Finished build in the cache? (same inputs from another --out)
BUILT=$CACHE/builds/$BUILD_ID
if [ "$FORCE" = 0 ] && built_ok "$BUILD_ID"; then
	log "reusing $BUILT"
else
	log "building $SUITE: $R_PKG $R_VER ($KVER), build $BUILD_ID"
	build_base
	# --- this kernel's own archive: its modules (closure over modinfo `depends`, decompressed,
	# depmod'ed), the list /init loads, and os-release naming the package
	ROOT=$TMP/layer
	mkdir -p "$ROOT"/{usr/lib,etc/kmatrix}
	ln -s usr/lib "$ROOT/lib" # for depmod -b; the base archive has the same link, so it stays out of this one
	MODDST=$ROOT/usr/lib/modules/$KVER
	mkdir -p "$MODDST"
	declare -A INCLUDED=()
	LOAD=() ABSENT=() BUILTINS=() MISSING_LIST=()
	add_module() {
		local m=$1 f dep
		[ -z "${INCLUDED[$m]:-}" ] || return 0
		f=${MODFILE[$m]:-}
		[ -n "$f" ] || return 1
		INCLUDED[$m]=1
		for dep in $(modinfo -F depends "$MODSRC/$f" | tr ',' ' '); do
			add_module "$(norm "$dep")" || [ -n "${BUILTIN[$(norm "$dep")]:-}" ] || die "$m depends on $dep, not found"
		done
		mkdir -p "$MODDST/$(dirname "$f")"
		case "$f" in
		*.ko) cp "$MODSRC/$f" "$MODDST/$f" ;;
		*.ko.xz) xz -dc "$MODSRC/$f" >"$MODDST/${f%.xz}" ;;
		*.ko.zst) zstd -qdc "$MODSRC/$f" >"$MODDST/${f%.zst}" ;;
		*.ko.gz) gzip -dc "$MODSRC/$f" >"$MODDST/${f%.gz}" ;;
		esac
	}
	is_required() { local r; for r in "${REQUIRED_MODULES[@]}"; do [ "$r" = "$1" ] && return 0; done; return 1; }
	for m in "${MODULE_ORDER[@]}"; do
		if add_module "$m"; then LOAD+=("$m")
		elif [ -n "${BUILTIN[$m]:-}" ]; then BUILTINS+=("$m")
		elif is_required "$m" && [ -n "$MODSRC" ] && [ -f "$MODSRC/modules.builtin" ]; then MISSING_LIST+=("$m")
		else ABSENT+=("$m"); fi
	done
	for f in modules.builtin modules.builtin.modinfo modules.order; do
		[ -f "$MODSRC/$f" ] && cp "$MODSRC/$f" "$MODDST/$f"
	done
	depmod -b "$ROOT" "$KVER" 2>"$TMP/depmod.err" || { cat "$TMP/depmod.err" >&2; die "depmod failed"; }
	rm -f "$MODDST"/*.bin
	printf '%s\n' "${LOAD[@]}" >"$ROOT/etc/kmatrix/modules"
	printf '%s\n' "${MISSING_LIST[@]}" | sed '/^$/d' >"$ROOT/etc/kmatrix/modules-missing"
	ALL_KO=$(cd "$MODDST" && find . -name '*.ko' | sed 's|.*/||; s|\.ko$||' | sort | tr '\n' ' ')
	cat >"$ROOT/etc/os-release" <<-EOF
	PRETTY_NAME="kmatrix initramfs ($R_PKG $R_VER)"
	NAME="kmatrix"
	ID=kmatrix
	VERSION_ID="$SUITE"
	KMATRIX_KERNEL_PACKAGE="$R_PKG"
	KMATRIX_KERNEL_VERSION="$R_VER"
	EOF
	rm "$ROOT/lib"
	find "$ROOT" -exec touch -h -d "@$SDE" {} +
	# No "." entry: / keeps the mode the base archive gave it.
	(cd "$ROOT" && find . -mindepth 1 -printf '%P\n' | sort | cpio -o -H newc -R 0:0 --reproducible --quiet) | gzip -n -6 >"$TMP/layer.cpio.gz"
	cat "$BASE_CPIO" "$TMP/layer.cpio.gz" >"$TMP/initramfs.gz"

	# --- outputs
	STAGE=$CACHE/builds/.tmp.$BUILD_ID.$$
	rm -rf "$STAGE"; mkdir -p "$STAGE"
	cp "$VMLINUZ" "$STAGE/vmlinuz"
	mv "$TMP/initramfs.gz" "$STAGE/initramfs.gz"
	BOOT_KERNEL=vmlinuz
	if pvh_kernel "$STAGE/vmlinuz" "$STAGE/vmlinux"; then BOOT_KERNEL=vmlinux; log "PVH entry found: the guest boots the decompressed vmlinux"; fi
	touch -d "@$SDE" "$STAGE/vmlinuz" "$STAGE/initramfs.gz" "$STAGE/$BOOT_KERNEL"
	# shellcheck disable=SC2086 # $ALL_KO: one module name per word
	jq -n --arg build_id "$BUILD_ID" --arg deb "${DEB_SHAS[0]}" --argjson debs "$(km_json_list "${DEB_SHAS[@]}")" \
		--arg flavour "$R_FLAV" --arg initramfs "$(sha "$STAGE/initramfs.gz")" --argjson size "$(stat -c %s "$STAGE/initramfs.gz")" \
		--arg release "$KVER" --argjson modules "$(km_json_list "${LOAD[@]}")" --argjson absent "$(km_json_list "${ABSENT[@]}")" \
		--argjson builtin "$(km_json_list "${BUILTINS[@]}")" --argjson files "$(km_json_list $ALL_KO)" \
		--argjson missing "$(km_json_list "${MISSING_LIST[@]}")" --arg package "$R_PKG" --arg probe "$PROBE_SHA" \
		--arg suite "$SUITE" --arg version "$R_VER" --arg vmlinuz "$(sha "$STAGE/vmlinuz")" \
		--arg boot "$BOOT_KERNEL" --arg boot_sha "$(sha "$STAGE/$BOOT_KERNEL")" \
		--arg base "$BASE_ID" --arg layer "$(sha "$TMP/layer.cpio.gz")" --argjson layer_size "$(stat -c %s "$TMP/layer.cpio.gz")" \
		'{base_id: $base, layer_sha256: $layer, layer_size: $layer_size, boot_kernel: $boot, boot_kernel_sha256: $boot_sha, build_id: $build_id, deb_sha256: $deb, debs_sha256: $debs, flavour: $flavour, initramfs_sha256: $initramfs,
		  initramfs_size: $size, kernel_release: $release, modules: $modules, modules_absent: $absent, modules_builtin: $builtin,
		  modules_files: $files, modules_missing: $missing, package: $package, probe_sha256: $probe, schema: 1,
		  suite: $suite, version: $version, vmlinuz_sha256: $vmlinuz}' >"$STAGE/manifest.json"
	rm -rf "$BUILT"; mv "$STAGE" "$BUILT"
fi

publish "$BUILD_ID"
