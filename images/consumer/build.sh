#!/bin/bash
# kmatrix consumer bundle: a user's NFQUEUE consumer as one self-contained folder that runs in
# any x86_64 guest, whatever C library the guest has (docs/architecture.md, "Consumers").
#
#   build.sh --cache DIR --out DIR --name NAME [--suite SUITE --package PKG...] [--file SRC DEST...]
#
# Debian packages: the named packages and their dependency closure (Depends, no Recommends)
# from SUITE's archive through a private apt (signed by Debian's keyring); nothing is installed
# on this host and no maintainer script runs. The bundle keeps, for each ELF program of the
# named packages, bin/PROG (a POSIX sh wrapper that runs it through the bundle's own loader
# and libraries) and bin/PROG.real; lib/ holds the loader and every library the programs need
# (DT_NEEDED, followed without running any of them); root/ holds the named packages' own files
# (configuration, data) minus documentation. Libraries a program dlopen()s are not followed:
# add them with --file. The user's files go where DEST says, inside the bundle.
#
# Output (OUT):
#   tree/            the bundle (the host guest runs it from here)
#   bundle.tar.gz    the bundle for distro guests (unpacked over SSH)
#   layer.cpio.gz    the bundle under opt/kmatrix/consumers/NAME, appended to a kernel guest's
#                    initramfs (the kernel unpacks concatenated archives in turn)
#   manifest.json    {name, input_key, suite, packages:[{name,version}], files:[{path,sha256}],
#                     bundle_sha256, layer_sha256, layer_bytes, bundle_bytes, tree_bytes}
# Up to date when OUT's manifest has the same input key (this script, lib.sh, the name, the
# suite, the packages, each file's content and place): then nothing is downloaded.
#
# Exit status: 0 built or up to date; 3 a package is not in the suite; 4 the archive cannot
# be reached; 1 anything else. Env: KMATRIX_DEBIAN_MIRROR, KMATRIX_SECURITY_MIRROR,
# KMATRIX_APT_TTL (seconds the package lists stay fresh, default 86400), SOURCE_DATE_EPOCH.
set -euo pipefail
KM_NAME=consumer
# shellcheck source=../lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/../lib.sh"

MIRROR=${KMATRIX_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY=${KMATRIX_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
SDE=${SOURCE_DATE_EPOCH:-1704067200}

CACHE="" OUT="" NAME="" SUITE=""
PACKAGES=() SOURCES=() DESTS=()
while (($#)); do
	case "$1" in
	--cache) CACHE=$2; shift 2 ;;
	--out) OUT=$2; shift 2 ;;
	--name) NAME=$2; shift 2 ;;
	--suite) SUITE=$2; shift 2 ;;
	--package) PACKAGES+=("$2"); shift 2 ;;
	--file) SOURCES+=("$2"); DESTS+=("$3"); shift 3 ;;
	*) km_die "unknown argument: $1" ;;
	esac
done
[ -n "$CACHE" ] && [ -n "$OUT" ] || km_die "usage: build.sh --cache DIR --out DIR --name NAME [--suite S --package P...] [--file SRC DEST...]"
[[ $NAME =~ ^[A-Za-z0-9][A-Za-z0-9._+-]{0,47}$ ]] || km_die "bad consumer name: $NAME"
((${#PACKAGES[@]} == 0)) || [[ $SUITE =~ ^(bullseye|bookworm|bookworm-backports|trixie)$ ]] || km_die "bad suite: $SUITE"
for p in "${PACKAGES[@]}"; do [[ $p =~ ^[a-z0-9][a-z0-9+.-]+$ ]] || km_die "bad package name: $p"; done
for i in "${!DESTS[@]}"; do
	d=${DESTS[$i]}
	# Relative, no empty, '.' or '..' part: a DEST never leaves the bundle.
	[[ $d =~ ^[A-Za-z0-9][A-Za-z0-9._+-]*(/[A-Za-z0-9][A-Za-z0-9._+-]*)*$ ]] || km_die "bad bundle path: $d"
	[[ /$d/ != */../* ]] || km_die "bad bundle path: $d"
	[ -f "${SOURCES[$i]}" ] || km_die "${SOURCES[$i]} is not a regular file"
done
km_need jq readelf dpkg-deb cpio gzip sha256sum flock

mkdir -p "$(dirname "$OUT")"
exec 9>"$OUT.lock"
flock 9

# --- up to date? --------------------------------------------------------------------------
key_input() {
	sha256sum "${BASH_SOURCE[0]}" "$KM_LIB_DIR/lib.sh" | cut -d' ' -f1
	printf 'name=%s\nsuite=%s\n' "$NAME" "$SUITE"
	printf 'package=%s\n' "${PACKAGES[@]}"
	for i in "${!DESTS[@]}"; do
		printf 'file=%s %s %s\n' "$(km_sha256 "${SOURCES[$i]}")" "$([ -x "${SOURCES[$i]}" ] && echo 755 || echo 644)" "${DESTS[$i]}"
	done
}
KEY=$(key_input | sha256sum | cut -d' ' -f1)
if [ -f "$OUT/manifest.json" ] && [ "$(km_manifest_get "$OUT/manifest.json" input_key)" = "$KEY" ] &&
	[ -f "$OUT/bundle.tar.gz" ] && [ -f "$OUT/layer.cpio.gz" ] && [ -d "$OUT/tree" ]; then
	km_log "up to date: $OUT"
	exit 0
fi

STAGE=$(mktemp -d "$OUT.build.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
TREE=$STAGE/tree ALL=$STAGE/all
mkdir -p "$TREE" "$ALL"
PACKAGE_JSON='[]'

# in_root ROOT PATH: PATH (ROOT-prefixed) resolved one component at a time, every symlink read
# as if ROOT were / (as a chroot would): the result never leaves ROOT; fails on a link loop.
in_root() {
	local root=$1 out="" hops=0 part target
	local -a todo more
	IFS=/ read -r -a todo <<<"${2#"$root"}"
	while ((${#todo[@]})); do
		part=${todo[0]}
		todo=("${todo[@]:1}")
		case "$part" in '' | .) continue ;; ..) out=${out%/*}; continue ;; esac
		if [ -L "$root$out/$part" ]; then
			((hops++ < 40)) || return 1
			target=$(readlink "$root$out/$part")
			[[ $target != /* ]] || out=""
			IFS=/ read -r -a more <<<"$target"
			todo=("${more[@]}" "${todo[@]}")
		else
			out=$out/$part
		fi
	done
	# Merged /usr (trixie): /lib64, /lib, /bin and /sbin are links base-files makes, in no package.
	if [ ! -e "$root$out" ] && [[ $out =~ ^/(lib|lib64|bin|sbin)/ ]] && [ -z "${KM_IN_ROOT_USR:-}" ]; then
		KM_IN_ROOT_USR=1 in_root "$root" "$root/usr$out"
		return
	fi
	printf '%s' "$root$out"
}

LIB_DIRS=(/lib/x86_64-linux-gnu /usr/lib/x86_64-linux-gnu /lib64 /usr/lib64 /lib /usr/lib)
# find_library SONAME: the library's real file inside ALL.
find_library() {
	local d f
	for d in "${LIB_DIRS[@]}"; do
		[ -e "$ALL$d/$1" ] || [ -L "$ALL$d/$1" ] || continue
		f=$(in_root "$ALL" "$ALL$d/$1") && [ -f "$f" ] && { printf '%s' "$f"; return 0; }
	done
	return 1
}

declare -A COPIED=()
# copy_closure ELF: every library ELF needs, recursively, into TREE/lib under its soname.
copy_closure() {
	local soname file
	while read -r soname; do
		[ -n "$soname" ] && [ -z "${COPIED[$soname]:-}" ] || continue
		# A soname is a file name: one with '/' or '..' would place the copy anywhere.
		[[ $soname =~ ^[A-Za-z0-9_+-][A-Za-z0-9._+-]*$ ]] || km_die "$(basename "$1") needs a library named '${soname//[^[:alnum:]._+-]/?}', which is no file name"
		COPIED[$soname]=1
		file=$(find_library "$soname") || km_die "$soname (needed by $(basename "$1")) is in no package of the closure"
		cp "$file" "$TREE/lib/$soname"
		copy_closure "$file"
	done < <(readelf -d "$1" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]$/\1/p')
}

if ((${#PACKAGES[@]})); then
	APTDIR=$CACHE/apt/consumer-$SUITE
	km_apt_use "$APTDIR"
	# One apt at a time per list folder: another run's build may be refreshing it.
	exec 8>"$APTDIR/.lock"
	flock 8
	case "$SUITE" in
	bookworm-backports)
		BASE=bookworm TARGET=(-t bookworm-backports)
		km_apt_sources "$MIRROR bookworm main" "$MIRROR bookworm-updates main" "$SECURITY bookworm-security main" "$MIRROR bookworm-backports main" ;;
	*)
		BASE=$SUITE TARGET=()
		km_apt_sources "$MIRROR $SUITE main" "$MIRROR $SUITE-updates main" "$SECURITY $SUITE-security main" ;;
	esac
	km_apt_update "${KMATRIX_APT_TTL:-86400}" || { km_log "cannot reach $MIRROR"; exit 4; }
	for p in "${PACKAGES[@]}"; do
		if ! km_apt apt-cache show "$p" >/dev/null 2>&1; then
			km_log "package $p is not in Debian $SUITE"
			exit 3
		fi
	done
	# An empty dpkg status: apt believes nothing is installed, so the plan is the whole closure.
	plan=$(km_apt apt-get -s -q --no-install-recommends "${TARGET[@]}" install "${PACKAGES[@]}" 2>&1) ||
		{ printf '%s\n' "$plan" | tail -8 >&2; km_die "apt cannot install ${PACKAGES[*]} from $SUITE"; }
	mapfile -t INST < <(sed -n 's/^Inst \([^ ]*\) (\([^ ]*\) .*/\1 \2/p' <<<"$plan")
	((${#INST[@]})) || km_die "apt planned nothing for ${PACKAGES[*]}"
	km_log "${#INST[@]} packages for ${PACKAGES[*]} ($BASE)"
	km_apt apt-get -q -y --download-only --no-install-recommends "${TARGET[@]}" install "${PACKAGES[@]}" >"$STAGE/download.log" 2>&1 ||
		{ tail -8 "$STAGE/download.log" >&2; exit 4; }
	declare -A DEB=()
	for entry in "${INST[@]}"; do
		pkg=${entry% *} version=${entry#* }
		deb=$APTDIR/cache/archives/${pkg}_${version//:/%3a}_amd64.deb
		[ -f "$deb" ] || deb=$APTDIR/cache/archives/${pkg}_${version//:/%3a}_all.deb
		[ -f "$deb" ] || km_die "apt did not download $pkg $version"
		DEB[$pkg]=$deb
		km_unpack_deb "$deb" "$ALL"
	done
	mkdir -p "$TREE/bin" "$TREE/lib" "$TREE/root"
	for p in "${PACKAGES[@]}"; do
		deb=${DEB[$p]:-}
		[ -n "$deb" ] || km_die "$p is not in apt's plan"
		PACKAGE_JSON=$(jq -c --arg n "$p" --arg v "$(dpkg-deb -f "$deb" Version)" '. + [{name: $n, version: $v}]' <<<"$PACKAGE_JSON")
		km_unpack_deb "$deb" "$TREE/root"
		while read -r member; do
			member=${member#./}
			case "$member" in bin/* | sbin/* | usr/bin/* | usr/sbin/*) ;; *) continue ;; esac
			file=$(in_root "$ALL" "$ALL/$member") || continue
			[ -f "$file" ] && [ "$(head -c4 "$file" | od -An -tx1 | tr -d ' \n')" = 7f454c46 ] || continue
			prog=$(basename "$member")
			# The name goes into the wrapper script below: plain names only.
			[[ $prog =~ ^[A-Za-z0-9_][A-Za-z0-9._+-]*$ ]] || continue
			[ -e "$TREE/bin/$prog.real" ] && continue
			interp=$(readelf -l "$file" 2>/dev/null | sed -n 's/.*Requesting program interpreter: \(.*\)\]$/\1/p')
			[ -n "$interp" ] || { cp "$file" "$TREE/bin/$prog"; chmod 755 "$TREE/bin/$prog"; continue; } # static
			if [ ! -f "$TREE/lib/ld-linux-x86-64.so.2" ]; then
				loader=$(in_root "$ALL" "$ALL$interp") || km_die "the loader $interp of $prog is not in the closure"
				cp "$loader" "$TREE/lib/ld-linux-x86-64.so.2"
			fi
			cp "$file" "$TREE/bin/$prog.real"
			chmod 755 "$TREE/bin/$prog.real"
			rm -f "$TREE/root/$member" # bin/ has it
			copy_closure "$file"
			cat >"$TREE/bin/$prog" <<EOF
#!/bin/sh
# Runs $prog through the bundle's own loader and libraries, whatever C library the guest has.
P=\$(cd "\$(dirname "\$0")/.." && pwd)
exec "\$P/lib/ld-linux-x86-64.so.2" --library-path "\$P/lib" "\$P/bin/$prog.real" "\$@"
EOF
			chmod 755 "$TREE/bin/$prog"
		done < <(dpkg-deb -c "$deb" | awk '{ print $6 }')
	done
	rm -rf "$TREE/root/usr/share/doc" "$TREE/root/usr/share/man" "$TREE/root/usr/share/locale" "$TREE/root/usr/share/lintian"
	[ -n "$(ls -A "$TREE/bin")" ] || km_log "warning: ${PACKAGES[*]} ship no program in bin or sbin"
fi

FILE_JSON='[]'
for i in "${!DESTS[@]}"; do
	src=${SOURCES[$i]} dest=${DESTS[$i]}
	mode=644
	[ -x "$src" ] && mode=755
	# The place must stay inside the bundle once the packages' links are followed.
	mkdir -p "$(dirname "$TREE/$dest")"
	[[ $(realpath -m -- "$TREE/$dest")/ == "$(realpath -e "$TREE")"/* ]] || km_die "bundle path $dest leads out of the bundle through a package's link"
	# The user's file is read through one descriptor whose path is checked after opening: kmatrix
	# checked the path when it loaded the matrix, and a link put there since must not be followed.
	exec 7<"$src"
	[ "$(readlink /proc/self/fd/7)" = "$src" ] && [ -f /proc/self/fd/7 ] || km_die "$src changed since the matrix was loaded (now a link or not a regular file)"
	cat <&7 >"$TREE/$dest"
	exec 7<&-
	chmod "$mode" "$TREE/$dest"
	FILE_JSON=$(jq -c --arg p "$dest" --arg s "$(km_sha256 "$TREE/$dest")" '. + [{path: $p, sha256: $s}]' <<<"$FILE_JSON")
done

# --- outputs --------------------------------------------------------------------------------
find "$TREE" -exec touch -h -d "@$SDE" {} +
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$SDE" -C "$TREE" -cf - . | gzip -n -6 >"$STAGE/bundle.tar.gz"
LAYER=$STAGE/layer
mkdir -p "$LAYER/opt/kmatrix/consumers"
cp -a "$TREE" "$LAYER/opt/kmatrix/consumers/$NAME"
find "$LAYER" -exec touch -h -d "@$SDE" {} +
# No "." entry: the rootfs's own root directory stays as the first archive made it.
(cd "$LAYER" && find opt | LC_ALL=C sort | cpio -o -H newc -R 0:0 --reproducible --quiet) | gzip -n -6 >"$STAGE/layer.cpio.gz"
rm -rf "$LAYER" "$ALL"
jq -n --arg name "$NAME" --arg key "$KEY" --arg suite "$SUITE" --argjson packages "$PACKAGE_JSON" --argjson files "$FILE_JSON" \
	--arg bundle "$(km_sha256 "$STAGE/bundle.tar.gz")" --arg layer "$(km_sha256 "$STAGE/layer.cpio.gz")" \
	--argjson layer_bytes "$(stat -c %s "$STAGE/layer.cpio.gz")" --argjson bundle_bytes "$(stat -c %s "$STAGE/bundle.tar.gz")" \
	--argjson tree_bytes "$(du -sb "$TREE" | cut -f1)" \
	'{name: $name, input_key: $key, suite: (if $suite == "" then null else $suite end), packages: $packages, files: $files,
	  bundle_sha256: $bundle, layer_sha256: $layer, layer_bytes: $layer_bytes, bundle_bytes: $bundle_bytes, tree_bytes: $tree_bytes}' \
	>"$STAGE/manifest.json"
rm -f "$STAGE/download.log"
rm -rf "$OUT.old"
[ ! -e "$OUT" ] || mv "$OUT" "$OUT.old"
mv "$STAGE" "$OUT"
trap - EXIT
rm -rf "$OUT.old"
km_log "built $OUT: layer $(stat -c %s "$OUT/layer.cpio.gz") bytes, bundle $(du -sh "$OUT/tree" | cut -f1) unpacked"
