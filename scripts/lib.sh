# Shared by kmatrix's scripts (bench, soak, peers, host-setup) and the image boot tests (sourced,
# never run): everything the recipes share (images/lib.sh: km_log, km_die, the private apt…),
# plus what only measuring and booting outside libvirt needs. Kept apart from images/lib.sh,
# whose content is part of every image's identity: a helper for the benchmark must not make
# every cached image stale. A script sets KM_NAME (its log prefix) before sourcing.
# shellcheck shell=bash

# shellcheck source=../images/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../images/lib.sh"

km_now() { date +%s.%N; }
# km_secs START [END]: seconds from START (km_now) to END (default now), one decimal.
km_secs() { awk -v a="$1" -v b="${2:-$(km_now)}" 'BEGIN { printf "%.1f", b - a }'; }
# km_free_port: a TCP port free on 127.0.0.1 now (the kernel's choice).
km_free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# --- QEMU outside libvirt -------------------------------------------------------------
# km_qemu LOG PORT|- ARGUMENT...: QEMU as kmatrix's domains run it, for the scripts that measure
# or test a boot without libvirt (bench, peers, boot tests; the caller names the machine and the
# accelerator): no display or monitor, the serial console into LOG, and one NIC that is QEMU user
# networking with restrict=on and at most a forward from 127.0.0.1:PORT to the guest's port 22
# ("-" for none) — the network rule of docs/architecture.md, "Guest networking". Runs in the
# background; KM_QEMU_PID is its pid.
km_qemu() {
	local log=$1 port=$2 forward=""; shift 2
	[ "$port" = - ] || forward=",hostfwd=tcp:127.0.0.1:$port-:22"
	qemu-system-x86_64 -display none -monitor none -no-reboot -serial "file:$log" \
		-netdev "user,id=kmnet0,restrict=on$forward" -device virtio-net-pci,netdev=kmnet0,romfile= "$@" </dev/null &
	KM_QEMU_PID=$!
}
