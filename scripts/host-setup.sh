#!/usr/bin/env bash
# Prepares this host for kmatrix: packages, libvirt's QEMU settings, virtlogd and libvirtd.
#
# Idempotent and safe to run on every invocation: a second run changes nothing and
# takes well under a second. Written for Debian 12 where PID 1 is not systemd (a
# container or micro-VM init), so the daemons are started by hand.
#
# Usage: host-setup.sh [--with-tests]
#
# Environment:
#   KMATRIX_LIBVIRTD_LOG   where libvirtd's output goes (default /var/log/kmatrix-libvirtd.log)
#   KMATRIX_SOCKET_WAIT_S  how long to wait for libvirtd to answer (default 20)
set -euo pipefail

# The package list lives in scripts/prerequisites (first column), shared with `kmatrix doctor`
# and the image recipes. `--with-tests` adds what only the test suite needs (chromium, rpm).
with_tests=0
[[ ${1:-} == --with-tests ]] && with_tests=1
mapfile -t PACKAGES < <(sed -e 's/#.*//' "$(dirname "${BASH_SOURCE[0]}")/prerequisites" |
    awk -v tests="$with_tests" 'NF && (tests == 1 || $3 != "tests:") { print $1 }' | sort -u)
readonly PACKAGES
readonly QEMU_CONF=/etc/libvirt/qemu.conf
readonly LIBVIRTD_LOG=${KMATRIX_LIBVIRTD_LOG:-/var/log/kmatrix-libvirtd.log}
readonly SOCKET_WAIT_S=${KMATRIX_SOCKET_WAIT_S:-20}
readonly URI=qemu:///system

KM_NAME=host-setup
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
step() { km_log "$@"; }
die() { km_die "$@"; }

[[ $(id -u) -eq 0 ]] || die "must run as root (libvirt's system daemon and qemu.conf need it)"
[[ -r /etc/debian_version ]] || die "only Debian-like hosts are supported (apt-get, dpkg)"
# The one prerequisite apt cannot give: Debian 12 packages no Swift 6 toolchain.
command -v swift >/dev/null ||
    die "no Swift toolchain: install Swift 6.2 for Debian 12 from swift.org (e.g. under /opt/swift) and put its usr/bin on PATH"

# --- packages -----------------------------------------------------------------
missing=()
for pkg in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    [[ $status == "install ok installed" ]] || missing+=("$pkg")
done
if ((${#missing[@]} == 0)); then
    step "packages: all ${#PACKAGES[@]} present"
else
    step "packages: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # No service starts while packages install (openssh-server would listen on every address,
    # libvirt-daemon-system start a daemon this script then manages itself).
    policy=/usr/sbin/policy-rc.d
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy"
        trap 'rm -f "$policy"' EXIT
    fi
    # Only refresh the lists when something is actually missing: it costs seconds and network.
    apt-get update -qq || die "apt-get update failed"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
        || die "apt-get install ${missing[*]} failed"
    step "packages: installed ${#missing[@]}"
fi

# --- the build user -------------------------------------------------------------
# `kmatrix bisect --git` runs git and make on someone else's kernel tree as this user, never as
# root (images/kernel-tree/sandbox.sh): no login, no home, no groups beyond its own.
if getent passwd kmatrix-build >/dev/null; then
    step "build user: kmatrix-build present"
else
    useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin kmatrix-build \
        || die "could not create the user kmatrix-build"
    step "build user: created kmatrix-build"
fi

# --- qemu.conf ----------------------------------------------------------------
# user/group +0: with libvirt-qemu as the QEMU user, root-only /dev/kvm makes libvirt
# re-probe QEMU's capabilities on every domain start (+3.6 s each).
# cgroup_controllers empty: parallel starts otherwise fail now and then with
# "failed to load cgroup BPF prog" on this kind of host.
[[ -f $QEMU_CONF ]] || die "$QEMU_CONF not found although libvirt-daemon-driver-qemu is installed"
conf_changed=0
# Sets `key = value` once: replaces an active setting, or appends one; comments stay untouched.
set_conf() {
    local key=$1 value=$2 line="$1 = $2"
    local active
    active=$(grep -E "^[[:space:]]*${key}[[:space:]]*=" "$QEMU_CONF" || true)
    # Already right: exactly one active definition with our value (a trailing comment is fine).
    if [[ -n $active && $active != *$'\n'* ]] && [[ ${active%%#*} =~ ^[[:space:]]*${key}[[:space:]]*=[[:space:]]*(.*[^[:space:]])[[:space:]]*$ ]] \
        && [[ ${BASH_REMATCH[1]} == "$value" ]]; then
        return 0
    fi
    local tmp
    tmp=$(mktemp "${QEMU_CONF}.XXXXXX")
    # Drop every active definition of the key, then append ours: libvirt rejects a file
    # where a key appears twice, and a replaced-in-place line could be a multi-line list.
    awk -v key="$key" '
        BEGIN { skipping = 0 }
        skipping { if ($0 ~ /\]/) skipping = 0; next }
        $0 ~ "^[[:space:]]*" key "[[:space:]]*=" {
            if ($0 ~ /\[/ && $0 !~ /\]/) skipping = 1
            next
        }
        { print }
    ' "$QEMU_CONF" >"$tmp"
    printf '%s # set by kmatrix host-setup\n' "$line" >>"$tmp"
    chmod --reference="$QEMU_CONF" "$tmp"
    mv "$tmp" "$QEMU_CONF"
    conf_changed=1
}
set_conf user '"+0"'
set_conf group '"+0"'
set_conf cgroup_controllers '[ ]'
if ((conf_changed)); then
    step "qemu.conf: updated (user/group +0, no cgroup controllers)"
else
    step "qemu.conf: already configured"
fi

# --- virtlogd -----------------------------------------------------------------
# libvirtd hands every QEMU's console/log fds to virtlogd: without it, domain start
# fails on virtlogd-sock.
if pgrep -x virtlogd >/dev/null; then
    step "virtlogd: running"
else
    virtlogd -d || die "virtlogd -d failed"
    step "virtlogd: started"
fi

# --- libvirtd -----------------------------------------------------------------
healthy() { timeout 5 virsh -c "$URI" version >/dev/null 2>&1; }

stop_libvirtd() {
    local pids
    pids=$(pgrep -x libvirtd || true)
    [[ -n $pids ]] || return 0
    # shellcheck disable=SC2086  # word splitting over pids is intended
    kill $pids
    for _ in $(seq 1 100); do
        pgrep -x libvirtd >/dev/null || return 0
        sleep 0.1
    done
    # libvirt 9.0 can hang in its shutdown thread with domains running, its socket already gone
    # (seen in scripts/soak): it will never answer again, and its guests outlive a SIGKILL.
    step "libvirtd (pid $pids) did not stop within 10 s; killing it"
    # shellcheck disable=SC2086
    kill -9 $pids 2>/dev/null || true
    for _ in $(seq 1 50); do
        pgrep -x libvirtd >/dev/null || return 0
        sleep 0.1
    done
    die "libvirtd (pid $pids) did not stop even after SIGKILL"
}

start_libvirtd() {
    mkdir -p "$(dirname "$LIBVIRTD_LOG")"
    # libvirtd runs in the foreground as tini's child: `tini -s` makes tini a child
    # subreaper, so the daemonized QEMU processes are reparented to it and reaped at
    # once. This host's PID 1 reaps orphans only every ~2 s, which made every destroy
    # wait 1.3-2 s. `libvirtd -d` would not work here: tini exits when its child does.
    # setsid -f detaches it from this shell's session so it outlives the script.
    # It must not keep the caller's other descriptors either: a Foundation Process (the tests)
    # learns that its child ended only when every copy of one inherited socket is closed.
    (
        for fd in /proc/$BASHPID/fd/*; do
            fd=${fd##*/}
            if [ "$fd" -gt 2 ]; then eval "exec $fd>&-" 2>/dev/null || true; fi
        done
        exec setsid -f tini -s -- libvirtd </dev/null >>"$LIBVIRTD_LOG" 2>&1
    ) || die "could not launch tini/libvirtd"
    local deadline=$((SECONDS + SOCKET_WAIT_S))
    until healthy; do
        if ((SECONDS >= deadline)); then
            tail -n 20 "$LIBVIRTD_LOG" >&2 || true
            die "libvirtd did not answer on $URI within ${SOCKET_WAIT_S} s (log: $LIBVIRTD_LOG)"
        fi
        sleep 0.2
    done
}

if pgrep -x libvirtd >/dev/null; then
    if ((conf_changed)); then
        step "libvirtd: running with an old qemu.conf, restarting it (running domains keep running)"
        stop_libvirtd
        start_libvirtd
        step "libvirtd: restarted"
    elif healthy; then
        step "libvirtd: running and answering on $URI"
    else
        step "libvirtd: running but not answering on $URI, restarting it"
        stop_libvirtd
        start_libvirtd
        step "libvirtd: restarted"
    fi
else
    start_libvirtd
    step "libvirtd: started under tini (log: $LIBVIRTD_LOG)"
fi

version=$(virsh -c "$URI" version 2>/dev/null | awk -F': ' '/Running hypervisor/ {print $2}')
step "ready: $URI (${version:-unknown hypervisor})"
