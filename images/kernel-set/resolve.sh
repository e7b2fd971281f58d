#!/bin/bash
# kmatrix kernel sets: every kernel Debian's signed indices list for some suites and a flavour.
#
#   resolve.sh --cache DIR --flavour cloud|amd64 --suite SUITE...
#
# Refreshes a private apt's lists for exactly those suites (signed by Debian's keyring; the
# lists stay fresh for KMATRIX_APT_TTL seconds, default 3600) and prints one line per kernel
# package, tab-separated, nothing downloaded:
#   RELEASE SUITE PACKAGE VERSION SHA256 POOL [PART=VERSION@SHA256@POOL]...
# PACKAGE holds the kernel (linux-image-RELEASE; from 6.19 on linux-binary-RELEASE, the
# linux-image package being a meta package) and PARTs are what else it needs (linux-modules-
# RELEASE). A split kernel whose parts the index does not list prints
#   -	RELEASE	SUITE	VERSION	PART
# kmatrix reads every field as untrusted (ArchiveKernel.parse). Exit 4: the archive cannot be
# reached and no lists are cached.
set -euo pipefail
KM_NAME=kernel-set
# shellcheck source=../lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/../lib.sh"
MIRROR=${KMATRIX_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY=${KMATRIX_SECURITY_MIRROR:-http://deb.debian.org/debian-security}

CACHE="" FLAVOUR="" SUITES=()
while (($#)); do
	case "$1" in
	--cache) CACHE=$2; shift 2 ;;
	--flavour) FLAVOUR=$2; shift 2 ;;
	--suite) SUITES+=("$2"); shift 2 ;;
	*) km_die "unknown argument: $1" ;;
	esac
done
[ -n "$CACHE" ] && ((${#SUITES[@]})) || km_die "usage: resolve.sh --cache DIR --flavour cloud|amd64 --suite SUITE..."
case "$FLAVOUR" in cloud) SUFFIX=-cloud-amd64 ;; amd64) SUFFIX=-amd64 ;; *) km_die "bad flavour: $FLAVOUR" ;; esac
LINES=()
for s in "${SUITES[@]}"; do
	[[ $s =~ ^(bullseye|bookworm|trixie)(-updates|-security|-backports)?$ ]] || km_die "bad suite: $s"
	case "$s" in *-security) LINES+=("$SECURITY $s main") ;; *) LINES+=("$MIRROR $s main") ;; esac
done
km_need awk flock
# One apt per set of suites: the lists of exactly these, nothing else of the system's.
key=$(printf '%s\n' "${SUITES[@]}" | sort -u | sha256sum | cut -c1-12)
km_apt_use "$CACHE/apt/kernel-set-$key"
exec 8>"$KM_APT_DIR/.lock"
flock 8
km_apt_sources "${LINES[@]}"
if ! km_apt_update "${KMATRIX_APT_TTL:-3600}"; then
	compgen -G "$KM_APT_DIR/lists/*_Packages" >/dev/null || exit 4
	km_log "the archive cannot be reached; using the lists of $(date -r "$KM_APT_DIR/lists" -u +%FT%TZ)"
fi

# Each Packages file names its suite: ..._dists_<suite>_main_binary-amd64_Packages.
for file in "$KM_APT_DIR"/lists/*_main_binary-amd64_Packages; do
	suite=${file##*_dists_}
	suite=${suite%%_*}
	awk -v suite="$suite" -v suffix="$SUFFIX" '
		function flush() {
			if (p ~ /^linux-(image|binary|modules)-[0-9]/) print suite "\t" p "\t" v "\t" h "\t" d "\t" f
			p = v = h = d = f = ""
		}
		/^Package: / { p = $2 }
		/^Filename: / { f = $2 }
		/^Version: / { v = $2 }
		/^SHA256: / { h = $2 }
		/^Depends: / { d = substr($0, 10) }
		/^$/ { flush() }
		END { flush() }' "$file"
done | awk -F'\t' -v suffix="$SUFFIX" '
	{ version[$1 SUBSEP $2] = $3; sha[$1 SUBSEP $2] = $4; depends[$1 SUBSEP $2] = $5; pool[$1 SUBSEP $2] = $6; n++; suite[n] = $1; name[n] = $2 }
	END {
		for (i = 1; i <= n; i++) {
			s = suite[i]; pkg = name[i]
			if (pkg !~ /^linux-image-[0-9]+\.[0-9]+\.[0-9]+[-+][0-9a-z.+~-]*$/) continue
			rel = substr(pkg, 13)
			if (substr(rel, length(rel) - length(suffix) + 1) != suffix) continue
			if (rel ~ /-rt-amd64$/ || (suffix == "-amd64" && rel ~ /-cloud-amd64$/)) continue
			k = s SUBSEP pkg
			if (depends[k] !~ /linux-binary-/) { print rel "\t" s "\t" pkg "\t" version[k] "\t" sha[k] "\t" pool[k]; continue }
			b = s SUBSEP "linux-binary-" rel; m = s SUBSEP "linux-modules-" rel
			if (!(b in version) || version[b] != version[k]) { print "-\t" rel "\t" s "\t" version[k] "\tlinux-binary-" rel; continue }
			if (!(m in version) || version[m] != version[k]) { print "-\t" rel "\t" s "\t" version[k] "\tlinux-modules-" rel; continue }
			print rel "\t" s "\tlinux-binary-" rel "\t" version[b] "\t" sha[b] "\t" pool[b] "\tlinux-modules-" rel "=" version[m] "@" sha[m] "@" pool[m]
		}
	}' | LC_ALL=C sort
