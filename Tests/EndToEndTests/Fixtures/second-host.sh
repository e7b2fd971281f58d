#!/usr/bin/env bash
# A second libvirt "host" on this machine, reachable only over SSH, for the remote-host
# end-to-end tests: a private mount namespace with its own /run/libvirt, /var/lib/libvirt,
# /var/cache/libvirt, /var/log/libvirt and /etc/libvirt, running its own virtlogd and libvirtd,
# and an sshd on 127.0.0.2:PORT (root, one key, nothing else) that is the only way in.
#
#   second-host.sh start DIR PORT   prints the libvirt URI once the daemon answers
#   second-host.sh stop-libvirt DIR stops only its libvirtd (a host that dies mid-run)
#   second-host.sh stop DIR         stops everything and removes DIR
set -euo pipefail
command=$1 dir=$2

# One per file: libvirt writes its pid files without a final newline.
pids() { for file in "$dir"/*.pid; do [ -f "$file" ] && echo "$(cat "$file")"; done; }

case $command in
start)
	port=$3
	rm -rf "$dir"
	mkdir -p "$dir"/{run,lib,cache,log,etc} "$dir/lib/qemu" "$dir/lib/images"
	cp -a /etc/libvirt/. "$dir/etc/"
	# Its own, empty state: no network of the first daemon is started here.
	rm -f "$dir/etc/qemu/networks/autostart/"* "$dir/etc/qemu/autostart/"* 2>/dev/null || true
	ssh-keygen -q -t ed25519 -N "" -f "$dir/id_ed25519"
	ssh-keygen -q -t ed25519 -N "" -f "$dir/host_key"
	cp "$dir/id_ed25519.pub" "$dir/authorized_keys"
	chmod 600 "$dir/authorized_keys"
	cat >"$dir/sshd_config" <<CONF
ListenAddress 127.0.0.2:$port
HostKey $dir/host_key
AuthorizedKeysFile $dir/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile $dir/sshd.pid
AllowTcpForwarding yes
Subsystem sftp internal-sftp
CONF
	mkdir -p /run/sshd
	# The namespace lives as long as its daemons: sshd runs in the foreground inside it.
	setsid unshare --mount --propagation private bash -c '
		dir=$1
		# Nothing the caller had open may outlive this script in the daemons: Foundation'"'"'s
		# Process learns that a child ended when every copy of one inherited socket is closed.
		for fd in /proc/$$/fd/*; do
			fd=${fd##*/}
			if [ "$fd" -gt 2 ]; then eval "exec $fd>&-" 2>/dev/null || true; fi
		done
		mount --bind "$dir/run" /run/libvirt
		mount --bind "$dir/lib" /var/lib/libvirt
		mount --bind "$dir/cache" /var/cache/libvirt
		mount --bind "$dir/log" /var/log/libvirt
		mount --bind "$dir/etc" /etc/libvirt
		virtlogd -d -p "$dir/virtlogd.pid"
		libvirtd -d -p "$dir/libvirtd.pid"
		exec /usr/sbin/sshd -D -e -f "$dir/sshd_config"
	' _ "$dir" </dev/null >"$dir/namespace.log" 2>&1 &
	uri="qemu+ssh://root@127.0.0.2:$port/system?keyfile=$dir/id_ed25519&no_verify=1"
	for _ in $(seq 1 100); do
		if timeout 5 virsh -c "$uri" version >/dev/null 2>&1; then echo "$uri"; exit 0; fi
		sleep 0.2
	done
	cat "$dir/namespace.log" >&2
	echo "second-host: libvirt at $uri did not answer" >&2
	exit 1
	;;
stop-libvirt)
	kill "$(cat "$dir/libvirtd.pid")" 2>/dev/null || true
	;;
stop)
	# Everything in the host's private mount namespace goes, QEMU included: a libvirtd that was
	# stopped mid-run (stop-libvirt) leaves its guests running, and their command lines name
	# only the namespace's paths, never DIR.
	ns=$(readlink "/proc/$(cat "$dir/sshd.pid" 2>/dev/null)/ns/mnt" 2>/dev/null || true)
	[ "$ns" != "$(readlink /proc/$$/ns/mnt)" ] || ns=""
	for pid in $(pids); do kill "$pid" 2>/dev/null || true; done
	sleep 1
	for pid in $(pids); do kill -9 "$pid" 2>/dev/null || true; done
	if [ -n "$ns" ]; then
		for p in /proc/[0-9]*; do
			[ "$(readlink "$p/ns/mnt" 2>/dev/null)" = "$ns" ] && kill -9 "${p#/proc/}" 2>/dev/null || true
		done
	fi
	rm -rf "$dir"
	;;
*) echo "usage: second-host.sh start DIR PORT | stop-libvirt DIR | stop DIR" >&2; exit 2 ;;
esac
