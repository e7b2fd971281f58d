#!/usr/bin/env bash
# Boot a kernel-rootfs build with plain QEMU (TCG), wait for KMATRIX-READY, run commands over SSH.
#
#   boot-test.sh DIR [--port N] [--machine q35|pc] [--key FILE] [--console FILE] [--mem MiB]
#                [--extra 'more cmdline'] [--keep] [-- CMD...]
#
# DIR holds vmlinuz + initramfs.gz from build.sh. Prints timings (seconds from QEMU start):
#   ready=<KMATRIX-READY on the console>  ssh=<first successful ssh>
# Networking is QEMU user mode with restrict=on and the forward bound to 127.0.0.1, so the
# guest cannot send anything off the VM. The QEMU process is always killed on exit
# (unless --keep, which prints its pid and leaves it running).
set -euo pipefail
DIR=${1:?usage: boot-test.sh DIR [--port N] [--machine q35|pc] [--key FILE] [-- CMD...]}; shift
PORT=$((20000 + RANDOM % 20000)) MACHINE=q35 KEY="" CONSOLE="" KEEP=0 MEM=256 EXTRA="" TIMEOUT=120
while [ $# -gt 0 ]; do
	case "$1" in
	--port) PORT=$2; shift 2 ;;
	--machine) MACHINE=$2; shift 2 ;;
	--key) KEY=$2; shift 2 ;;
	--console) CONSOLE=$2; shift 2 ;;
	--mem) MEM=$2; shift 2 ;;
	--extra) EXTRA=$2; shift 2 ;;
	--keep) KEEP=1; shift ;;
	--) shift; break ;;
	*) echo "unknown argument $1" >&2; exit 2 ;;
	esac
done
CMD=${*:-'uname -r; iptables -V; iptables-nft -V; nft --version; kmatrix-probe --help'}
WORK=$(mktemp -d /tmp/kmatrix-boot.XXXXXX)
if [ -z "$KEY" ]; then KEY=$WORK/key; ssh-keygen -q -t ed25519 -N '' -f "$KEY"; fi
CONSOLE=${CONSOLE:-$WORK/console.log}
SSHKEY=$(base64 -w0 <"$KEY.pub")
QPID=""
cleanup() {
	if [ -n "$QPID" ] && [ "$KEEP" = 0 ]; then kill "$QPID" 2>/dev/null || true; wait "$QPID" 2>/dev/null || true; fi
	rm -rf "$WORK"
}
trap cleanup EXIT
KM_NAME=boot-test
# shellcheck source=../../scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib.sh"
rm -f "$CONSOLE"   # a stale log would hold an old KMATRIX-READY
T0=$(km_now)
km_qemu "$CONSOLE" "$PORT" -machine "$MACHINE",accel=tcg -m "$MEM" -smp 1 -nodefaults \
	-kernel "$DIR/vmlinuz" -initrd "$DIR/initramfs.gz" \
	-append "console=ttyS0 panic=-1 quiet cryptomgr.notests acpi=noirq pci=nomsi kmatrix.sshkey=$SSHKEY${EXTRA:+ $EXTRA}" \
	-device virtio-rng-pci >"$WORK/qemu.out" 2>&1
QPID=$KM_QEMU_PID
ready=""
while :; do
	if grep -q '^KMATRIX-READY' "$CONSOLE" 2>/dev/null; then ready=$(echo "$(km_now) - $T0" | bc); break; fi
	kill -0 "$QPID" 2>/dev/null || { echo "qemu exited:"; cat "$WORK/qemu.out" "$CONSOLE"; exit 1; }
	if [ "$(echo "$(km_now) - $T0 > $TIMEOUT" | bc)" = 1 ]; then echo "timeout; console:"; cat "$CONSOLE"; exit 1; fi
	sleep 0.05
done
SSH=(ssh -i "$KEY" -p "$PORT" -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
	-o LogLevel=ERROR -o ConnectTimeout=10 root@127.0.0.1)
n=0
until "${SSH[@]}" true 2>"$WORK/ssh.err"; do
	n=$((n + 1)); [ $n -lt 20 ] || { echo "ssh failed:"; cat "$WORK/ssh.err" "$CONSOLE"; exit 1; }
	sleep 0.2
done
sshok=$(echo "$(km_now) - $T0" | bc)
echo "ready=$ready ssh=$sshok machine=$MACHINE port=$PORT"
grep -aE 'KMATRIX-(MISSING|STAGE)' "$CONSOLE" || true
"${SSH[@]}" "$CMD"
[ "$KEEP" = 0 ] || { echo "qemu pid $QPID left running (port $PORT)"; QPID=""; }
