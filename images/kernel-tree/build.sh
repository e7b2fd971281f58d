#!/usr/bin/env bash
# Builds a bzImage from a kernel source tree (one commit of `kmatrix bisect --git`), with
# everything kmatrix's rootfs needs built in.
#
# Usage: build.sh --tree DIR --out DIR [--config FILE] [--jobs N] [--cache DIR]
#        build.sh --prepare-host     (as root, before the build runs in sandbox.sh: the tools)
#   --tree DIR    a kernel tree (a git worktree kmatrix owns: the build happens in it, so the
#                 next commit's build only recompiles what changed)
#   --out DIR     where bzImage, config and manifest.json go
#   --config FILE the base config (default: tinyconfig, with identity.fragment)
#   --jobs N      make -j (default 2)
#   --cache DIR   kmatrix cache root, for the compiler cache (default ~/.cache/kmatrix)
#
# Exit status: 0 built; 3 the config lost an option the rootfs needs (each on stderr as
# "missing: CONFIG_…"); 4 the build failed (the log's end on stderr, the log in --out);
# anything else is this script's own failure.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
KM_NAME=kernel-tree
# shellcheck source=../lib.sh
. "$HERE/../lib.sh"
readonly ROOTFS_FRAGMENT=$HERE/../kernel-config/rootfs.fragment
readonly IDENTITY=$HERE/identity.fragment

tree="" out="" config="" jobs=2 cache=${HOME}/.cache/kmatrix
prepare_host() {
	km_need gcc make flex bison bc jq
	[[ -e /usr/include/libelf.h || -e /usr/include/gelf.h ]] || km_install libelf-dev
}
while (($#)); do
	case $1 in
	--prepare-host) prepare_host; exit 0 ;;
	--tree) tree=${2:?}; shift 2 ;;
	--out) out=${2:?}; shift 2 ;;
	--config) config=${2:?}; shift 2 ;;
	--jobs) jobs=${2:?}; shift 2 ;;
	--cache) cache=${2:?}; shift 2 ;;
	-h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) km_die "unknown argument $1 (see --help)" ;;
	esac
done
[[ -n $tree && -n $out ]] || km_die "--tree and --out are required"
[[ -f $tree/Makefile && -d $tree/arch/x86 ]] || km_die "$tree is not a kernel source tree"
[[ $jobs =~ ^[0-9]+$ ]] && ((jobs >= 1 && jobs <= 256)) || km_die "--jobs must be a number from 1 to 256"
prepare_host
export KM_CCACHE_DIR=$cache/ccache ARCH=x86_64 LC_ALL=C
# Reproducible: the same tree and config give the same bzImage, so "the culprit's bzImage is
# byte-identical to its parent's" means something.
export KBUILD_BUILD_TIMESTAMP="Thu Jan  1 00:00:00 UTC 2026" KBUILD_BUILD_USER=kmatrix KBUILD_BUILD_HOST=kmatrix KBUILD_BUILD_VERSION=1
mkdir -p "$out"
started=$SECONDS

if [[ -n $config ]]; then
	[[ -r $config ]] || km_die "cannot read --config $config"
	lost=$(km_kernel_configure "$tree" "$config" "$ROOTFS_FRAGMENT") || {
		printf 'missing: %s\n' $(cut -d= -f1 <<<"$lost" | sed 's/^# //; s/ is not set//') >&2
		exit 3
	}
else
	lost=$(km_kernel_configure "$tree" tiny "$ROOTFS_FRAGMENT" "$IDENTITY") || {
		printf 'missing: %s\n' $(cut -d= -f1 <<<"$lost" | sed 's/^# //; s/ is not set//') >&2
		exit 3
	}
fi
if ! km_kernel_make "$tree" "$jobs" "$out/build.log" -kmatrix-bisect; then
	tail -n 25 "$out/build.log" >&2
	exit 4
fi
release=$(km_kernel_release "$tree" -kmatrix-bisect)
cp "$tree/arch/x86/boot/bzImage" "$out/bzImage.new" && mv "$out/bzImage.new" "$out/bzImage"
cp "$tree/.config" "$out/config"
jq -n --arg release "$release" --arg config "$(km_sha256 "$out/config")" --arg image "$(km_sha256 "$out/bzImage")" \
	--argjson seconds "$((SECONDS - started))" \
	'{kernel_release: $release, config_sha256: $config, bzimage_sha256: $image, build_s: $seconds}' >"$out/manifest.json"
km_log "built $release in $((SECONDS - started)) s"
