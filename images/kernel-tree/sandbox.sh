#!/usr/bin/env bash
# Runs a command of `kmatrix bisect --git` — git on the user's tree, make on its Makefiles —
# without root (docs/architecture.md, "Bisect"): as the unprivileged user kmatrix-build, with
# no capabilities and no way to gain any, in a mount namespace of its own and without a network.
# Inside, three folders exist for it under /mnt/kmatrix:
#   src     the user's tree, read-only (its .git config, filters and hooks are the tree's own:
#           they run with the build user's rights, which reach nothing of root's)
#   work    kmatrix's bisect work folder (its clone of the tree, build outputs, compiler cache),
#           owned by the build user: the only place it can write besides its own /tmp
#   images  kmatrix's recipes, read-only
# Usage (as root): sandbox.sh SRC WORK IMAGES -- COMMAND [ARGUMENT...]
set -euo pipefail
readonly USER_NAME=kmatrix-build MOUNT=/mnt/kmatrix

if [ "${1:-}" = --inside ]; then
	shift
	src=$1 work=$2 images=$3
	shift 4 # the three folders and --
	# A private tmpfs on /mnt: the bind mounts below exist only in this namespace.
	mount -t tmpfs -o mode=0755,size=1m kmatrix-sandbox /mnt
	mkdir -p "$MOUNT/src" "$MOUNT/work" "$MOUNT/images" "$MOUNT/tmp"
	mount --bind "$src" "$MOUNT/src"
	mount -o remount,bind,ro,nosuid,nodev "$MOUNT/src"
	mount --bind "$images" "$MOUNT/images"
	mount -o remount,bind,ro,nosuid,nodev "$MOUNT/images"
	mount --bind "$work" "$MOUNT/work"
	mount -o remount,bind,nosuid,nodev "$MOUNT/work"
	# A /tmp of its own: the host's /tmp is shared by every user and kmatrix's own temporaries.
	mount -t tmpfs -o mode=1777,nosuid,nodev kmatrix-tmp /tmp
	cd "$MOUNT/work"
	exec setpriv --reuid="$USER_NAME" --regid="$USER_NAME" --clear-groups --no-new-privs \
		--inh-caps=-all --bounding-set=-all --reset-env -- \
		env HOME="$MOUNT/work" TMPDIR=/tmp LC_ALL=C GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL="$MOUNT/images/kernel-tree/gitconfig" "$@"
fi

[ "$(id -u)" = 0 ] || { echo "sandbox: must be started as root (it drops to $USER_NAME)" >&2; exit 70; }
(($# >= 5)) && [ "$4" = -- ] || { echo "usage: sandbox.sh SRC WORK IMAGES -- COMMAND..." >&2; exit 64; }
getent passwd "$USER_NAME" >/dev/null || {
	echo "sandbox: the user $USER_NAME does not exist; scripts/host-setup.sh creates it" >&2
	exit 70
}
for folder in "$1" "$2" "$3"; do
	[ -d "$folder" ] && [ ! -L "$folder" ] || { echo "sandbox: $folder is not a directory" >&2; exit 64; }
done
exec unshare --mount --net --propagation private -- bash "$0" --inside "$@"
