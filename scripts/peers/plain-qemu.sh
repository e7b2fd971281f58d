#!/usr/bin/env bash
# The plain-QEMU peer of scripts/bench --peers: boots a cloud disk through an overlay and a NoCloud
# seed with qemu-system-x86_64 alone (TCG, QEMU's defaults, the same restricted user-mode network)
# and prints the seconds until `ssh true` works with the seed's key, and QEMU's peak RSS.
#
#   plain-qemu.sh BASE MEM VCPUS [extra qemu args...]
#   PLAIN_QEMU_ACCEL=tcg,tb-size=256   the -accel value (default: tcg, QEMU's own cache size)
#   PLAIN_QEMU_SEED=virtio             the seed as a virtio disk instead of the default IDE cdrom
set -euo pipefail
KM_NAME=plain-qemu
# shellcheck source=../lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
base=$1 mem=$2 cpus=$3; shift 3
w=$(mktemp -d /tmp/kmatrix-peer-qemu.XXXXXX)
trap 'rm -rf "$w"' EXIT
ssh-keygen -q -t ed25519 -N "" -f $w/key
mkdir $w/seed
cat > $w/seed/user-data <<U
#cloud-config
users: [default]
system_info: {default_user: {name: cloud-user}}
ssh_authorized_keys: ["$(cat $w/key.pub)"]
manage_etc_hosts: true
U
printf 'instance-id: plain-%s\nlocal-hostname: plain\n' $RANDOM > $w/seed/meta-data
genisoimage -quiet -output $w/seed.iso -volid cidata -joliet -rock $w/seed/user-data $w/seed/meta-data
qemu-img create -q -f qcow2 -F qcow2 -b "$base" $w/overlay.qcow2
port=$(km_free_port)
seed=(-drive file=$w/seed.iso,media=cdrom)   # QEMU's default; kmatrix uses virtio
[ "${PLAIN_QEMU_SEED:-cdrom}" = virtio ] && seed=(-drive file=$w/seed.iso,if=virtio,format=raw,readonly=on)
t0=$(km_now)
km_qemu $w/console.log "$port" -accel "${PLAIN_QEMU_ACCEL:-tcg}" "$@" -m $mem -smp $cpus -drive file=$w/overlay.qcow2,if=virtio "${seed[@]}"
q=$KM_QEMU_PID
# ConnectTimeout does not bound a login that stalls after the banner (seen once: an hour); timeout does.
deadline=$((SECONDS + 600))
until timeout 15 ssh -i $w/key -p $port -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o ConnectTimeout=5 -o LogLevel=ERROR -l cloud-user 127.0.0.1 true 2>/dev/null; do
  ((SECONDS < deadline)) || { kill $q; echo "plain-qemu: no SSH within 10 minutes" >&2; exit 1; }
  sleep 0.5
done
t1=$(km_now)
rss=$(awk '/VmHWM/ {print int($2/1024)}' /proc/$q/status)
kill $q; wait $q 2>/dev/null || true
awk -v a=$t0 -v b=$t1 -v r=$rss 'BEGIN { printf "%.1f s (peak RSS %d MiB)\n", b-a, r }'
