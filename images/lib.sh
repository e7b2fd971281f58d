# Shared by kmatrix's image recipes (sourced, never run): host tools from
# scripts/prerequisites, a private apt (never the system's sources, lists or hooks),
# the .deb cache by content, manifest.json through jq, and building a kernel tree.
# Functions are prefixed km_; a recipe sets KM_NAME (its log prefix) before sourcing.
# shellcheck shell=bash

KM_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
KM_PREREQUISITES=$KM_LIB_DIR/../scripts/prerequisites
KM_KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
KM_NAME=${KM_NAME:-recipe}

km_log() { printf '%s: %s\n' "$KM_NAME" "$*" >&2; }
km_die() { printf '%s: error: %s\n' "$KM_NAME" "$*" >&2; exit 1; }
km_sha256() { sha256sum "$1" | cut -d' ' -f1; }

# --- host tools ---------------------------------------------------------------------
# km_need COMMAND...: every command must exist; missing ones are installed from the
# packages scripts/prerequisites names for them (as root), or named in the error.
km_need() {
	local missing=() packages=() c p
	for c in "$@"; do command -v "$c" >/dev/null 2>&1 || missing+=("$c"); done
	((${#missing[@]})) || return 0
	for c in "${missing[@]}"; do
		p=$(awk -v c="$c" '!/^#/ && $2 == c { print $1; exit }' "$KM_PREREQUISITES")
		[ -n "$p" ] || km_die "$c is missing and scripts/prerequisites does not say which package has it"
		packages+=("$p")
	done
	km_install "${packages[@]}"
}

# km_install PACKAGE...: installs Debian packages on this host (root only).
km_install() {
	[ "$(id -u)" = 0 ] || km_die "missing on this host; install: apt-get install $*"
	km_log "installing host packages: $*"
	DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "$@" >/dev/null ||
		km_die "apt-get install $* failed"
}

# --- private apt --------------------------------------------------------------------
# km_confine DIR: makes a tree unpacked from someone else's packages safe to unpack more into and
# to copy from, as root. Every symbolic link is read as if DIR were / (a chroot): an absolute
# target becomes the same path inside DIR, and a link that still resolves outside DIR is removed
# — GNU tar follows a link an earlier package left when a later one writes beneath it, and cp
# reads through them. Only a target with `..` can lead out once absolute ones are rewritten (a
# link resolves from where it physically is), so only those are resolved, after every package.
# Device nodes, FIFOs and sockets go; setuid and setgid bits are cleared.
km_confine() {
	local dir link target up real
	dir=$(realpath -e "$1")
	while IFS= read -r -d '' link && IFS= read -r -d '' target; do
		up=${link#"$dir"/}
		up=${up//[!\/]/}
		up=${up//\//../}
		ln -sfn -- "${up:-./}${target#/}" "$link"
	done < <(find "$dir" -type l -lname '/*' -printf '%p\0%l\0')
	while IFS= read -r -d '' link; do
		if ! real=$(realpath -m -- "$link" 2>/dev/null) || [[ $real/ != "$dir"/* ]]; then
			km_log "removed ${link#"$dir"/}: a link that leads out of the tree"
			rm -f -- "$link"
		fi
	done < <(find "$dir" -type l -lname '*..*' -print0)
	find "$dir" \( -type b -o -type c -o -type p -o -type s \) -delete
	find "$dir" -perm /6000 -exec chmod ug-s {} +
}

# km_unpack_deb DEB DIR: a package's files into DIR (which may hold earlier packages' files),
# owned by whoever unpacks, then confined (km_confine). Further tar arguments select members.
km_unpack_deb() {
	local deb=$1 dir=$2
	shift 2
	dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$dir" --no-same-owner --no-same-permissions "$@"
	km_confine "$dir"
}

# km_apt_use DIR: every later km_apt runs with DIR's sources, lists, cache and an empty
# status, and reads no configuration of the system's (APT_CONFIG points at DIR).
km_apt_use() {
	KM_APT_DIR=$1
	mkdir -p "$KM_APT_DIR"/{lists/partial,cache/archives/partial,etc/apt.conf.d,etc/preferences.d,etc/sources.list.d,etc/trusted.gpg.d}
	[ -e "$KM_APT_DIR/status" ] || : >"$KM_APT_DIR/status"
	local conf=$KM_APT_DIR/apt.conf
	cat >"$conf.new" <<EOF
Dir::Etc "$KM_APT_DIR/etc";
Dir::Etc::main "$KM_APT_DIR/etc/apt.conf";
Dir::Etc::Parts "$KM_APT_DIR/etc/apt.conf.d";
Dir::Etc::SourceList "$KM_APT_DIR/etc/sources.list";
Dir::Etc::SourceParts "$KM_APT_DIR/etc/sources.list.d";
Dir::Etc::Preferences "$KM_APT_DIR/etc/preferences";
Dir::Etc::PreferencesParts "$KM_APT_DIR/etc/preferences.d";
Dir::Etc::TrustedParts "$KM_APT_DIR/etc/trusted.gpg.d";
Dir::State::Lists "$KM_APT_DIR/lists";
Dir::State::status "$KM_APT_DIR/status";
Dir::Cache "$KM_APT_DIR/cache";
Dir::Cache::pkgcache "pkgcache.bin";
Dir::Cache::srcpkgcache "srcpkgcache.bin";
APT::Architecture "amd64";
APT::Architectures { "amd64"; };
APT::Sandbox::User "root";
APT::Get::List-Cleanup "true";
Acquire::Languages "none";
Acquire::Retries "1";
Acquire::http::Timeout "30";
Acquire::IndexTargets::deb::DEP-11::DefaultEnabled "false";
Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled "false";
Acquire::IndexTargets::deb::CNF::DefaultEnabled "false";
EOF
	: >"$KM_APT_DIR/etc/apt.conf"
	if cmp -s "$conf.new" "$conf"; then rm "$conf.new"; else mv "$conf.new" "$conf"; fi
}

# km_apt apt-get|apt-cache ARGS...
km_apt() {
	local tool=$1; shift
	APT_CONFIG=$KM_APT_DIR/apt.conf "$tool" "$@"
}

# km_apt_sources SUITE-LINE...: one "deb" line per argument, signed by Debian's keyring;
# changed sources make the lists stale.
km_apt_sources() {
	local line
	[ -r "$KM_KEYRING" ] || km_die "$KM_KEYRING missing (apt-get install debian-archive-keyring)"
	for line in "$@"; do printf 'deb [signed-by=%s] %s\n' "$KM_KEYRING" "$line"; done >"$KM_APT_DIR/etc/sources.list.new"
	if cmp -s "$KM_APT_DIR/etc/sources.list.new" "$KM_APT_DIR/etc/sources.list"; then
		rm "$KM_APT_DIR/etc/sources.list.new"
	else
		mv "$KM_APT_DIR/etc/sources.list.new" "$KM_APT_DIR/etc/sources.list"
		rm -f "$KM_APT_DIR/lists/.updated"
	fi
}

# km_apt_update TTL [refresh]: refreshes the lists when they are older than TTL seconds
# (or always with refresh=1). Returns 1 when the archive cannot be reached.
km_apt_update() {
	local ttl=$1 refresh=${2:-0} stamp=$KM_APT_DIR/lists/.updated out age
	if [ "$refresh" = 0 ] && [ -e "$stamp" ]; then
		age=$(($(date +%s) - $(stat -c %Y "$stamp")))
		if [ "$age" -ge 0 ] && [ "$age" -lt "$ttl" ]; then return 0; fi
	fi
	km_log "refreshing package lists ($(awk '{ print $4 }' "$KM_APT_DIR/etc/sources.list" | tr '\n' ' '))"
	if out=$(km_apt apt-get -q update 2>&1) && ! grep -qE '^(W: Failed to fetch|E: |W: Some index files failed|W: GPG error)' <<<"$out"; then
		touch "$stamp"
		return 0
	fi
	km_log "apt-get update failed:"; tail -5 <<<"$out" | sed 's/^/  /' >&2
	return 1
}

# --- the .deb cache -------------------------------------------------------------------
# CACHE/debs/<sha256>.deb with <sha256>.meta: suite, flavour, package, version.

# km_deb_store CACHE FILE SUITE FLAVOUR: moves FILE into the cache; prints its path.
km_deb_store() {
	local cache=$1 file=$2 suite=$3 flavour=$4 sum
	mkdir -p "$cache/debs"
	sum=$(km_sha256 "$file")
	printf 'suite=%s\nflavour=%s\npackage=%s\nversion=%s\n' "$suite" "$flavour" \
		"$(dpkg-deb -f "$file" Package)" "$(dpkg-deb -f "$file" Version)" >"$cache/debs/$sum.meta.new"
	mv -f "$file" "$cache/debs/$sum.deb"
	mv -f "$cache/debs/$sum.meta.new" "$cache/debs/$sum.meta"
	printf '%s' "$cache/debs/$sum.deb"
}

# km_deb_download CACHE PACKAGE VERSION SHA256 SUITE FLAVOUR: the package from the
# archive into the cache (unless there), checked against the index's sha256; prints its path.
km_deb_download() {
	local cache=$1 package=$2 version=$3 want=$4 suite=$5 flavour=$6 tmp got
	if [ -f "$cache/debs/$want.deb" ] && [ -f "$cache/debs/$want.meta" ]; then printf '%s' "$cache/debs/$want.deb"; return 0; fi
	mkdir -p "$cache/debs"
	tmp=$(mktemp -d "$cache/debs/.dl.XXXXXX")
	km_log "downloading $package $version"
	(cd "$tmp" && km_apt apt-get -q download "$package=$version" >&2) || { rm -rf "$tmp"; return 1; }
	got=$(km_sha256 "$tmp"/*.deb)
	[ "$got" = "$want" ] || { rm -rf "$tmp"; km_die "sha256 mismatch for $package: $got != $want"; }
	km_deb_store "$cache" "$tmp"/*.deb "$suite" "$flavour"
	rm -rf "$tmp"
}

# km_deb_newest CACHE SUITE FLAVOUR [PACKAGE-PREFIX]: the newest cached .deb (by Debian
# version) of that suite and flavour; prints its path, or nothing.
km_deb_newest() {
	local cache=$1 suite=$2 flavour=$3 prefix=${4:-} m v best="" best_version=""
	for m in "$cache"/debs/*.meta; do
		[ -f "$m" ] && [ -f "${m%.meta}.deb" ] || continue
		grep -qxF "suite=$suite" "$m" && grep -qxF "flavour=$flavour" "$m" || continue
		[ -z "$prefix" ] || grep -q "^package=$prefix" "$m" || continue
		v=$(sed -n 's/^version=//p' "$m")
		if [ -z "$best" ] || dpkg --compare-versions "$v" gt "$best_version"; then best=${m%.meta}.deb best_version=$v; fi
	done
	printf '%s' "$best"
}

# km_deb_field DEB KEY: a field of a cached .deb's meta file.
km_deb_field() { sed -n "s/^$2=//p" "${1%.deb}.meta"; }

# --- manifest.json ----------------------------------------------------------------------
# km_manifest_get FILE KEY: a top-level value as text ("" when absent or unreadable).
km_manifest_get() { jq -r --arg k "$2" '.[$k] // empty | if type == "array" then join(" ") else tostring end' "$1" 2>/dev/null || true; }

# km_json_list WORD...: a JSON array of strings.
km_json_list() { if (($#)); then printf '%s\n' "$@" | jq -R . | jq -cs .; else printf '[]'; fi; }

# --- kernel trees ---------------------------------------------------------------------------
# km_kernel_configure SRC BASE-CONFIG|tiny FRAGMENT...: .config from a base (tinyconfig, or a
# given config file) with the fragments merged over it, olddefconfig; then checks that every
# line of every fragment survived (Kconfig silently drops options whose dependencies are off).
# Prints the lines that did not, one per line, and fails when there are any.
km_kernel_configure() {
	local src=$1 base=$2; shift 2
	local log=$src/.kmatrix-config.log missing=() f line
	(
		cd "$src"
		if [ "$base" = tiny ]; then
			scripts/kconfig/merge_config.sh -n kernel/configs/tiny.config arch/x86/configs/tiny.config "$@"
		else
			scripts/kconfig/merge_config.sh -n "$base" "$@"
		fi
		make -s olddefconfig
	) >"$log" 2>&1 || { tail -20 "$log" >&2; km_die "configuring $src failed"; }
	for f in "$@"; do
		while IFS= read -r line; do
			if [[ $line =~ ^(CONFIG_[A-Za-z0-9_]+)=(.*)$ ]]; then
				grep -qxF -- "$line" "$src/.config" || missing+=("$line")
			elif [[ $line =~ ^#\ (CONFIG_[A-Za-z0-9_]+)\ is\ not\ set$ ]]; then
				! grep -qE "^${BASH_REMATCH[1]}=" "$src/.config" || missing+=("$line")
			fi
		done <"$f"
	done
	((${#missing[@]} == 0)) || { printf '%s\n' "${missing[@]}"; return 1; }
}

# km_kernel_make SRC JOBS LOG [LOCALVERSION]: bzImage, through ccache when it is installed (a
# rebuild of a tree that changed a little, or of the same source elsewhere, reuses every
# object). The release suffix goes on make's command line, never into .config: a
# CONFIG_LOCALVERSION lands in autoconf.h, which every file includes, and would make two
# otherwise identical builds share no object at all.
km_kernel_make() {
	local src=$1 jobs=$2 log=$3 localversion=${4:-} cc=gcc
	if command -v ccache >/dev/null; then
		cc="ccache gcc"
		export CCACHE_DIR=${CCACHE_DIR:-${KM_CCACHE_DIR:-$HOME/.cache/kmatrix/ccache}}
		export CCACHE_BASEDIR=$src CCACHE_NOHASHDIR=1 CCACHE_COMPILERCHECK=content CCACHE_MAXSIZE=${CCACHE_MAXSIZE:-5G}
	fi
	(cd "$src" && nice -n 19 make -j"$jobs" CC="$cc" LOCALVERSION="$localversion" bzImage) >"$log" 2>&1
}

# km_kernel_release SRC [LOCALVERSION]: the release string the build has.
km_kernel_release() { make -s -C "$1" LOCALVERSION="${2:-}" kernelrelease; }
