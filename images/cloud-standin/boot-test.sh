#!/usr/bin/env bash
# Boot a cloud image the way kmatrix boots `cloud` guests, with QEMU directly
# (TCG): per-run qcow2 overlay on the base (never written), NoCloud seed ISO
# (label cidata) carrying a fresh SSH key, user networking with restrict=on and
# a port forward on 127.0.0.1. Measures time to console "login:", to SSH and to
# cloud-init "finished", runs a few commands (and the probe if given), checks
# the base image's sha256 is unchanged.
#
#   images/cloud-standin/boot-test.sh IMAGE.qcow2 [--runs N] [--user NAME]
#                                     [--probe PATH] [--timeout S] [--keep-logs DIR]
set -euo pipefail

IMAGE=""; RUNS=1; GUEST_USER=cloud-user; PROBE=""; TIMEOUT=300; LOGS=""
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) RUNS=$2; shift 2 ;;
        --user) GUEST_USER=$2; shift 2 ;;
        --probe) PROBE=$2; shift 2 ;;
        --timeout) TIMEOUT=$2; shift 2 ;;
        --keep-logs) LOGS=$2; shift 2 ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        -*) echo "unknown option $1" >&2; exit 2 ;;
        *) IMAGE=$1; shift ;;
    esac
done
[ -f "$IMAGE" ] || { echo "usage: $0 IMAGE.qcow2 [--runs N] [--probe PATH]" >&2; exit 2; }
IMAGE=$(readlink -f "$IMAGE")
command -v genisoimage >/dev/null || apt-get -o DPkg::Lock::Timeout=600 install -y -qq genisoimage >/dev/null

W=$(mktemp -d /tmp/cloud-boot-test.XXXXXX)
QPID=""
cleanup() {
    [ -n "$QPID" ] && kill "$QPID" 2>/dev/null && wait "$QPID" 2>/dev/null
    rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

SHA_BEFORE=$(sha256sum "$IMAGE" | cut -d' ' -f1)
ssh-keygen -q -t ed25519 -N '' -C kmatrix-test -f "$W/key"
SSH=(ssh -i "$W/key" -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
     -o LogLevel=ERROR -o ConnectTimeout=5)

KM_NAME=cloud-boot-test
# shellcheck source=../../scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib.sh"
since() { km_secs "$1"; }

for run in $(seq "$RUNS"); do
    R="$W/run$run"; mkdir -p "$R/seed"
    printf '#cloud-config\nssh_authorized_keys:\n  - %s\n' "$(cat "$W/key.pub")" >"$R/seed/user-data"
    printf 'instance-id: kmatrix-%s-%s\nlocal-hostname: standin%s\n' "$$" "$run" "$run" >"$R/seed/meta-data"
    genisoimage -quiet -output "$R/seed.iso" -volid cidata -joliet -rock "$R/seed/user-data" "$R/seed/meta-data"
    qemu-img create -q -f qcow2 -F qcow2 -b "$IMAGE" "$R/overlay.qcow2"
    PORT=$(km_free_port)
    CON="$R/console.log"; : >"$CON"
    T0=$(km_now)
    km_qemu "$CON" "$PORT" -machine q35,accel=tcg -m 512 -smp 1 \
        -drive file="$R/overlay.qcow2",if=virtio -drive file="$R/seed.iso",media=cdrom >"$R/qemu.out" 2>&1
    QPID=$KM_QEMU_PID
    t_login=""; t_ssh=""; t_ci=""; t_kernel=""
    while [ -z "$t_ci" ] || [ -z "$t_ssh" ] || [ -z "$t_login" ]; do
        kill -0 "$QPID" 2>/dev/null || { echo "run $run: qemu exited" >&2; cat "$R/qemu.out" >&2; tail -40 "$CON" >&2; exit 1; }
        [ "$(since "$T0" | cut -d. -f1)" -lt "$TIMEOUT" ] || { echo "run $run: timeout" >&2; tail -40 "$CON" >&2; exit 1; }
        [ -z "$t_kernel" ] && grep -q 'Linux version' "$CON" && t_kernel=$(since "$T0")
        [ -z "$t_login" ] && grep -q 'login:' "$CON" && t_login=$(since "$T0")
        [ -z "$t_ci" ] && grep -qE 'Cloud-init v\. .* finished at' "$CON" && t_ci=$(since "$T0")
        # SSH polling before sshd runs only stalls (slirp accepts, then hangs).
        if [ -z "$t_ssh" ] && grep -qE 'OpenBSD Secure Shell|login:|finished at' "$CON"; then
            "${SSH[@]}" -p "$PORT" "$GUEST_USER@127.0.0.1" true 2>/dev/null && t_ssh=$(since "$T0")
        fi
        sleep 0.5
    done
    echo "run $run: kernel: ${t_kernel}s  login: ${t_login}s  ssh: ${t_ssh}s  cloud-init finished: ${t_ci}s  (port $PORT)"
    grep -aE 'Cloud-init v\. .* finished at' "$CON" | head -1 | tr -d '\r' | sed 's/^/  console: /'
    if [ "$run" = 1 ]; then
        "${SSH[@]}" -p "$PORT" "$GUEST_USER@127.0.0.1" \
            'uname -r; sudo -n true && echo sudo-ok; sudo iptables -V; sudo iptables-legacy -V; sudo nft --version;
             . /etc/os-release; echo "$PRETTY_NAME"; id; hostname; systemd-analyze 2>/dev/null | head -1;
             cloud-init status --long 2>/dev/null; sudo grep -E "WARNING|ERROR|Traceback" /var/log/cloud-init.log | cut -c1-220 | head -20;
             ip -br addr; ls /etc/ssh/ssh_host_*_key.pub; sudo journalctl -b -o short-monotonic --no-pager | grep -E "dhclient.*DHCP(DISCOVER|OFFER|ACK)" | head;
             systemd-analyze blame 2>/dev/null | head -8'
        if [ -n "$PROBE" ] && [ -f "$PROBE" ]; then
            "${SSH[@]}" -p "$PORT" "$GUEST_USER@127.0.0.1" 'cat > /tmp/kmatrix-probe && chmod +x /tmp/kmatrix-probe' <"$PROBE"
            "${SSH[@]}" -p "$PORT" "$GUEST_USER@127.0.0.1" 'sudo /tmp/kmatrix-probe --fail-open 1 --rcvbuf-mode plain --rcvbuf 4096 --maxlen 2048 --consumer paused --packets 2000' || echo "probe exit $?"
        fi
    fi
    [ -n "$LOGS" ] && { mkdir -p "$LOGS"; cp "$CON" "$LOGS/console-run$run.log"; }
    kill "$QPID"; wait "$QPID" 2>/dev/null || true; QPID=""
    rm -f "$R/overlay.qcow2"
done

SHA_AFTER=$(sha256sum "$IMAGE" | cut -d' ' -f1)
[ "$SHA_BEFORE" = "$SHA_AFTER" ] && echo "base image unchanged (sha256 $SHA_AFTER)" ||
    { echo "BASE IMAGE CHANGED: $SHA_BEFORE -> $SHA_AFTER" >&2; exit 1; }
