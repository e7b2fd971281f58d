#!/usr/bin/env bash
# Boots a kmatrix legacy-kernel bzImage under QEMU (TCG) with a throw-away initramfs
# (busybox-static, the probe, iptables-legacy and nft from this host) and checks that
# the patched kernel behaves like a pre-4.6 one:
#   - boots to /init, has /proc/net/netfilter/nfnetlink_queue and a virtio-net eth0;
#   - failopen-socket-overflow (fail-open 1, rcvbuf 4096 plain, maxlen 2048, paused,
#     2000 packets): packets lost, queue_user_dropped delta == lost;
#   - strict-socket-overflow (fail-open 0): same;
#   - failopen-queue-full (fail-open 1, rcvbuf forced large, maxlen 64): nothing lost
#     (the queue-full fail-open path is untouched);
#   - the same fail-open overflow through iptables-nft (nft_compat) and through nft
#     (an inet table) instead of iptables-legacy.
#
# Usage: boot-test.sh --kernel BZIMAGE [--probe PATH] [--append "EXTRA ARGS"] [--keep DIR]
#   --probe   static kmatrix-probe (default: <repo>/probe/kmatrix-probe; without it only
#             the boot checks run)
#   --append  extra kernel arguments (e.g. "acpi=noirq pci=nomsi cryptomgr.notests")
#   --keep    keep initramfs and console log in DIR (default: a temp dir, removed)
# Exit 0 when every check passed. Network: QEMU user net with restrict=on (nothing leaves
# the guest); all probe traffic is on the guest's loopback.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
kernel=
probe=$HERE/../../probe/kmatrix-probe
append=
keep=
while (($#)); do
    case $1 in
        --kernel) kernel=$2; shift 2 ;;
        --probe) probe=$2; shift 2 ;;
        --append) append=$2; shift 2 ;;
        --keep) keep=$2; shift 2 ;;
        *) echo "usage: $0 --kernel BZIMAGE [--probe PATH] [--append ARGS] [--keep DIR]" >&2; exit 2 ;;
    esac
done
[[ -f $kernel ]] || { echo "boot-test: --kernel BZIMAGE required" >&2; exit 2; }
for t in qemu-system-x86_64 cpio gzip ldd; do command -v $t >/dev/null || { echo "boot-test: $t missing" >&2; exit 2; }; done
[[ -x /bin/busybox ]] && file -L /bin/busybox | grep -q static || { echo "boot-test: needs busybox-static" >&2; exit 2; }

KM_NAME=boot-test
# shellcheck source=../../scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib.sh"
if [[ -n $keep ]]; then work=$keep; mkdir -p "$work"; rm -rf "$work/root"; else work=$(mktemp -d); trap 'rm -rf "$work"' EXIT; fi
root=$work/root
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,run,tmp,etc}

cp /bin/busybox "$root/bin/busybox"
for a in $(/bin/busybox --list); do [[ -e $root/bin/$a ]] || ln -s busybox "$root/bin/$a"; done

copy_with_libs() { # copy binaries and the shared libraries ldd names, at the same paths
    local f lib
    for f in "$@"; do
        mkdir -p "$root$(dirname "$f")"; cp -L "$f" "$root$f"
        for lib in $(ldd "$f" 2>/dev/null | grep -o '/[^ ]*'); do
            [[ -e $root$lib ]] && continue
            mkdir -p "$root$(dirname "$lib")"; cp -L "$lib" "$root$lib"
        done
    done
}
have_probe=0
if [[ -x $probe ]]; then
    have_probe=1
    cp "$probe" "$root/usr/bin/kmatrix-probe"
    if [[ -x /usr/sbin/xtables-legacy-multi ]]; then
        copy_with_libs /usr/sbin/xtables-legacy-multi
        for n in iptables-legacy iptables-legacy-save iptables-legacy-restore; do ln -s xtables-legacy-multi "$root/usr/sbin/$n"; done
    fi
    if [[ -x /usr/sbin/xtables-nft-multi ]]; then
        copy_with_libs /usr/sbin/xtables-nft-multi
        ln -s xtables-nft-multi "$root/usr/sbin/iptables-nft"
        xt=/usr/lib/x86_64-linux-gnu/xtables
        mkdir -p "$root$xt"
        for p in libxt_NFQUEUE libxt_udp libxt_tcp libxt_standard libipt_icmp libxt_mark; do
            [[ -f $xt/$p.so ]] && copy_with_libs "$xt/$p.so"
        done
    fi
    [[ -x /usr/sbin/nft ]] && copy_with_libs /usr/sbin/nft
fi

cat >"$root/init" <<'EOF'
#!/bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
echo KMATRIX-INIT
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs tmpfs /run
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
echo "KMATRIX-UNAME $(uname -r)"
echo "KMATRIX-UPTIME $(cut -d' ' -f1 /proc/uptime)"
echo "KMATRIX-NETFILTER $(ls /proc/net/netfilter | tr '\n' ' ')"
echo "KMATRIX-NETDEVS $(ls /sys/class/net | tr '\n' ' ')"
echo "KMATRIX-VIRTIO $(for d in /sys/bus/virtio/devices/*; do [ -e $d/device ] && printf '%s ' "$(cat $d/device)"; done)"
echo "KMATRIX-PTY $( (exec 3<>/dev/ptmx) 2>/dev/null && echo ok || echo fail)"
if [ -x /usr/bin/kmatrix-probe ]; then
    run() { name=$1; shift; echo "KMATRIX-PROBE $name $(kmatrix-probe "$@" 2>/tmp/err | tr -d '\n')"; sed "s/^/KMATRIX-STDERR $name: /" /tmp/err; }
    run failopen-socket-overflow --firewall iptables-legacy --fail-open 1 --rcvbuf-mode plain --rcvbuf 4096 --maxlen 2048 --consumer paused --packets 2000
    run strict-socket-overflow --firewall iptables-legacy --fail-open 0 --rcvbuf-mode plain --rcvbuf 4096 --maxlen 2048 --consumer paused --packets 2000
    run failopen-queue-full --firewall iptables-legacy --fail-open 1 --rcvbuf-mode force --rcvbuf 4194304 --maxlen 64 --consumer paused --packets 2000
    run failopen-socket-overflow-iptables-nft --firewall iptables-nft --fail-open 1 --rcvbuf-mode plain --rcvbuf 4096 --maxlen 2048 --consumer paused --packets 2000
    run failopen-socket-overflow-nft --firewall nft --fail-open 1 --rcvbuf-mode plain --rcvbuf 4096 --maxlen 2048 --consumer paused --packets 2000
fi
echo KMATRIX-DONE
poweroff -f
EOF
chmod +x "$root/init"
(cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0 | gzip -1) >"$work/initramfs.gz"

console=$work/console.log
: >"$console"
start=$(km_now)
km_qemu "$console" - -machine q35,accel=tcg -m 256 \
    -kernel "$kernel" -initrd "$work/initramfs.gz" -append "console=ttyS0 panic=-1 quiet $append" -device virtio-rng-pci
qpid=$KM_QEMU_PID
init_s=
for ((i = 0; i < 2400; i++)); do # 120 s
    if [[ -z $init_s ]] && grep -q KMATRIX-INIT "$console"; then
        init_s=$(km_secs "$start")
    fi
    kill -0 $qpid 2>/dev/null || break
    sleep 0.05
done
if kill -0 $qpid 2>/dev/null; then kill $qpid; echo "boot-test: guest did not power off within 120 s" >&2; fi
wait $qpid || true
total_s=$(km_secs "$start")

tr -d '\r' <"$console" | grep '^KMATRIX-' | grep -v '^KMATRIX-PROBE' || true
echo "boot: QEMU start -> /init ${init_s:-never} s (host clock), whole run ${total_s} s"

fail=0
check() { if eval "$2"; then echo "PASS $1"; else echo "FAIL $1"; fail=1; fi; }
log=$(tr -d '\r' <"$console")
check "reaches /init" '[[ -n $init_s ]]'
check "kernel release is the legacy build" 'grep -q "^KMATRIX-UNAME .*-kmatrix-legacy-failopen" <<<"$log"'
check "/proc/net/netfilter/nfnetlink_queue exists" 'grep -q "^KMATRIX-NETFILTER .*nfnetlink_queue" <<<"$log"'
check "virtio-net eth0 present" 'grep -q "^KMATRIX-NETDEVS .*eth0" <<<"$log"'
check "devpts/ptmx usable" 'grep -q "^KMATRIX-PTY ok" <<<"$log"'
check "powered off cleanly" 'grep -q "^KMATRIX-DONE" <<<"$log"'
if ((have_probe)); then
    for s in failopen-socket-overflow strict-socket-overflow failopen-queue-full failopen-socket-overflow-iptables-nft failopen-socket-overflow-nft; do
        j=$(sed -n "s/^KMATRIX-PROBE $s //p" <<<"$log")
        if [[ -z $j ]] || ! jq -e . >/dev/null 2>&1 <<<"$j"; then echo "FAIL $s: no probe JSON"; fail=1; continue; fi
        jq -c --arg s "$s" '{scenario: $s, firewall, error, sent, received, lost, enobufs, messages_read,
            queue_dropped: (.queue_after.queue_dropped - .queue_before.queue_dropped),
            queue_user_dropped: (.queue_after.queue_user_dropped - .queue_before.queue_user_dropped),
            id_sequence: (.queue_after.id_sequence - .queue_before.id_sequence),
            netlink_drops: (.netlink_drops_after - .netlink_drops_before), lost_ranges}' <<<"$j"
        if [[ $s == failopen-queue-full ]]; then
            desc="$s: nothing lost (queue-full fail-open path kept)"
            want='.error == null and .sent == 2000 and .lost == 0'
        else
            desc="$s: dropped, queue_user_dropped delta == lost > 0"
            want='.error == null and .lost > 0 and (.queue_after.queue_user_dropped - .queue_before.queue_user_dropped) == .lost'
        fi
        if jq -e "$want" >/dev/null <<<"$j"; then echo "PASS $desc"; else echo "FAIL $desc"; fail=1; fi
    done
fi
exit $fail
