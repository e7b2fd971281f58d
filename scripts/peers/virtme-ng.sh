#!/usr/bin/env bash
# The virtme-ng peer of scripts/bench --peers: virtme-ng (PyPI) boots a Debian kernel package's
# kernel with this machine's root shared over 9p and the package's modules, loads the queue
# modules and runs the same probe and scenario. Installs virtme-ng into a venv under the cache.
#
#   virtme-ng.sh KERNEL.deb PROBE     prints the probe's JSON
set -euo pipefail
deb=$(realpath "$1") probe=$(realpath "$2")
cache=${KMATRIX_CACHE:-$HOME/.cache/kmatrix}/peers
venv=$cache/virtme-ng
if [ ! -x "$venv/bin/vng" ]; then
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install -q virtme-ng >&2
fi
work=$(mktemp -d /tmp/kmatrix-peer-vng.XXXXXX)
trap 'rm -rf "$work"' EXIT
dpkg-deb -x "$deb" "$work/root"
vmlinuz=$(ls "$work"/root/boot/vmlinuz-*)
# virtme-ng loads modules from /lib/modules of the shared root: the package's, seen only inside a
# private mount namespace, so the host's /lib/modules is never touched.
created=0
[ -d /lib/modules ] || { mkdir /lib/modules; created=1; }
# Without --verbose, vng 1.42 under TCG with a distro kernel finds no virtio-serial script ports,
# prints nothing and exits 255; with it, the script's output comes on the console among the
# kernel's lines, so the probe's JSON is cut out of that.
status=0
unshare --mount --propagation private bash -c '
    mount --bind "$1/root/lib/modules" /lib/modules
    PATH=$2/bin:$PATH vng --verbose --run "$3" --disable-kvm --force-9p --disable-microvm -m 256M -p 1 \
        --exec "modprobe -a nfnetlink_queue xt_NFQUEUE iptable_filter && $4 --packets 2000 --maxlen 2048 --fail-open 1 --rcvbuf-mode plain --rcvbuf 4096 --consumer paused"
' _ "$work" "$venv" "$vmlinuz" "$probe" >"$work/console" 2>&1 || status=$?
((created)) && rmdir /lib/modules 2>/dev/null
tr -d '\r' <"$work/console" | sed -n '/^{$/,/^}$/p' | tee "$work/probe.json"
grep -q '"error": null' "$work/probe.json" || { echo "virtme-ng: no probe result (vng exited $status); console tail:" >&2; tail -5 "$work/console" >&2; exit 1; }
