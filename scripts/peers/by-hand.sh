#!/usr/bin/env bash
# The "by hand" peer of scripts/bench --peers: what an engineer writes without kmatrix to boot a
# kernel with kmatrix's rootfs through virsh, copy the probe over SSH, run one scenario and tear
# down. Same kernel, initramfs, memory, vCPUs and restricted user-mode network as kmatrix.
#
#   by-hand.sh VMLINUZ INITRAMFS PROBE     prints the probe's JSON; exits with its status
set -euo pipefail
kernel=$1 initrd=$2 probe=$3
work=$(mktemp -d /tmp/kmatrix-peer-byhand.XXXXXX)
name="peer-byhand-$$"
cleanup() { virsh -q -c qemu:///system destroy "$name" >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
ssh-keygen -q -t ed25519 -N "" -f "$work/key"
key=$(base64 -w0 <"$work/key.pub")
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$work/domain.xml" <<XML
<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>$name</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>$kernel</kernel>
    <initrd>$initrd</initrd>
    <cmdline>console=ttyS0 panic=-1 quiet kmatrix.sshkey=$key</cmdline>
  </os>
  <features><acpi/><apic/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <devices>
    <serial type='file'><source path='$work/console.log'/></serial>
    <memballoon model='none'/>
  </devices>
  <qemu:commandline>
    <qemu:arg value='-netdev'/>
    <qemu:arg value='user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:$port-:22'/>
    <qemu:arg value='-device'/>
    <qemu:arg value='virtio-net-pci,netdev=n0,romfile=,bus=pci.0,addr=0x10'/>
  </qemu:commandline>
</domain>
XML
virsh -q -c qemu:///system create "$work/domain.xml" >/dev/null
ssh_opts=(-i "$work/key" -p "$port" -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
          -o ConnectTimeout=5 -o LogLevel=ERROR)
# The usual loop: try every half second until the guest's sshd takes the key.
for _ in $(seq 1 240); do
    ssh "${ssh_opts[@]}" -l root 127.0.0.1 true 2>/dev/null && break
    sleep 0.5
done
# The rootfs's dropbear has no sftp-server, which OpenSSH's scp needs: copy through a pipe.
ssh "${ssh_opts[@]}" -l root 127.0.0.1 'cat >/tmp/kmatrix-probe && chmod +x /tmp/kmatrix-probe' <"$probe"
ssh "${ssh_opts[@]}" -l root 127.0.0.1 /tmp/kmatrix-probe --packets 2000 --maxlen 2048 --fail-open 1 \
    --rcvbuf-mode plain --rcvbuf 4096 --consumer paused
