#!/usr/bin/env bash
# Build the kmatrix cloud stand-in: a Debian 11 (bullseye) disk that boots like a
# vendor cloud image (MBR + ext4, grub-pc, cloud-init NoCloud, sshd, sudo, iptables).
#
#   images/cloud-standin/build.sh --cache ~/.cache/kmatrix --out DIR
#
# Writes DIR/debian-11-cloud-standin.qcow2 (compressed) and DIR/manifest.json.
# Content-addressed: build_id = sha256(this script, files/*, resolved package
# versions); if DIR/manifest.json already carries that build_id, exits at once.
# Needs root (debootstrap, loop devices, chroot). Only reaches the Debian archive.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SELF="$HERE/$(basename "${BASH_SOURCE[0]}")"
KM_NAME=cloud-standin
# shellcheck source=../lib.sh
. "$HERE/../lib.sh"
FILES="$HERE/files"

RELEASE=bullseye
RELEASE_NUM=11
MIRROR=${KMATRIX_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${KMATRIX_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
KEYRING=$KM_KEYRING
IMAGE_NAME=debian-11-cloud-standin.qcow2
DISK_SIZE=3G

CACHE_ROOT="${HOME}/.cache/kmatrix"
OUT=""
FORCE=0

log() { printf '[cloud-standin %5ss] %s\n' "$SECONDS" "$*" >&2; }
die() { printf 'cloud-standin: error: %s\n' "$*" >&2; exit 1; }
usage() {
    cat <<EOF
usage: $0 --out DIR [--cache DIR] [--force]
  --out DIR     where $IMAGE_NAME and manifest.json go
  --cache DIR   kmatrix cache root (default ~/.cache/kmatrix); uses DIR/cloud-standin
  --force       rebuild even if DIR/manifest.json has the current build_id
EOF
}

while [ $# -gt 0 ]; do
    case "$1" in
        --cache) CACHE_ROOT=${2:?--cache needs a directory}; shift 2 ;;
        --cache=*) CACHE_ROOT=${1#*=}; shift ;;
        --out) OUT=${2:?--out needs a directory}; shift 2 ;;
        --out=*) OUT=${1#*=}; shift ;;
        --force) FORCE=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
done
[ -n "$OUT" ] || { usage >&2; exit 2; }
[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, loop devices, chroot)"

mkdir -p "$OUT" "$CACHE_ROOT/cloud-standin"
OUT=$(cd "$OUT" && pwd)
CACHE=$(cd "$CACHE_ROOT/cloud-standin" && pwd)
APTDIR="$CACHE/apt"          # private apt state: sources, lists (never the host's)
DEBS="$CACHE/debs"           # every .deb downloaded, by file name (debootstrap + apt)
mkdir -p "$APTDIR"/{etc/apt.conf.d,etc/preferences.d,etc/sources.list.d,lists/partial,cache/archives/partial} "$DEBS/partial"

# One build at a time per cache (they share loop devices, debs and the apt lists).
exec 9>"$CACHE/lock"
flock 9

# ---------------------------------------------------------------- host tools
km_need debootstrap qemu-img sfdisk partx mkfs.ext4 jq zstd
[ -r "$KEYRING" ] || die "$KEYRING missing (apt-get install debian-archive-keyring)"

# ------------------------------------------------ resolve package versions
# signed-by: the keyring path exists on the host and in the guest alike.
km_apt_use "$APTDIR"
km_apt_sources "$MIRROR $RELEASE main" "$MIRROR $RELEASE-updates main" "$SECURITY_MIRROR $RELEASE-security main"
# Lists younger than KMATRIX_APT_TTL seconds (default 3600) are trusted as they are: every
# run asks for this image, and a refresh costs seconds and the network.
if ! km_apt_update "${KMATRIX_APT_TTL:-3600}"; then
    ls "$APTDIR/lists/"*_InRelease >/dev/null 2>&1 || die "apt update failed and no cached lists"
    log "warning: apt update failed; using cached lists"
fi

# The build id below costs a few seconds of apt resolution; remember it per set of lists.
LISTS_KEY=$( { sha256sum "$SELF" "$KM_LIB_DIR/lib.sh"; (cd "$FILES" && find . -type f | LC_ALL=C sort | xargs sha256sum)
    cat "$APTDIR/lists/"*_InRelease; } | sha256sum | cut -d' ' -f1)
if [ "$FORCE" = 0 ] && [ -f "$CACHE/build-id.$LISTS_KEY" ] && [ -f "$OUT/manifest.json" ] && [ -f "$OUT/$IMAGE_NAME" ] &&
   [ "$(km_manifest_get "$OUT/manifest.json" build_id)" = "$(cat "$CACHE/build-id.$LISTS_KEY")" ]; then
    log "up to date: $OUT/$IMAGE_NAME"
    exit 0
fi

mapfile -t PACKAGES < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$FILES/packages.list" | grep -v '^$')
candidate() { km_apt apt-cache policy "$1" | awk '/Candidate:/ {print $2; exit}'; }
# Debian's own cloud images (genericcloud) run the cloud flavour: fewer drivers, and an lz4
# payload that decompresses in 0.25 s under TCG where the generic flavour's xz takes 4.5 s.
# The kernel package itself is installed, pinned; its metapackage is not needed.
KERNEL_META=linux-image-cloud-amd64
KERNEL_META_VER=$(candidate "$KERNEL_META")
KERNEL_PKG=$(km_apt apt-cache depends "$KERNEL_META" | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
[ -n "$KERNEL_PKG" ] || die "cannot resolve the kernel behind $KERNEL_META"
KERNEL_RELEASE=${KERNEL_PKG#linux-image-}
KERNEL_VER=$(candidate "$KERNEL_PKG")
GRUB_VER=$(candidate grub-pc)
CLOUDINIT_VER=$(candidate cloud-init)
SSHD_VER=$(candidate openssh-server)
for v in KERNEL_META_VER KERNEL_VER GRUB_VER CLOUDINIT_VER SSHD_VER; do
    [ -n "${!v}" ] && [ "${!v}" != "(none)" ] || die "no candidate version for $v"
done

# The whole closure that ends up in the image: every Priority: required package
# (debootstrap minbase) plus our list, as apt would install it on an empty system.
mapfile -t REQUIRED < <(km_apt apt-cache dumpavail |
    awk '/^Package:/ {p=$2} /^Priority: required/ {print p}' | sort -u)
CLOSURE=$(km_apt apt-get -s -qq --no-install-recommends install "${REQUIRED[@]}" apt "${PACKAGES[@]}" 2>/dev/null |
    awk '/^Inst / {gsub(/[()]/, "", $3); print $2, $3}' | sort)
[ -n "$CLOSURE" ] || die "cannot resolve the package closure"

BUILD_ID=$( {
    echo "kmatrix-cloud-standin v1"
    sha256sum "$SELF" "$KM_LIB_DIR/lib.sh" | cut -d' ' -f1
    (cd "$FILES" && find . -type f | LC_ALL=C sort | xargs sha256sum)
    echo "$CLOSURE"
} | sha256sum | cut -d' ' -f1)
log "build_id $BUILD_ID (kernel $KERNEL_PKG $KERNEL_VER)"
rm -f "$CACHE"/build-id.*
echo "$BUILD_ID" >"$CACHE/build-id.$LISTS_KEY"

if [ "$FORCE" = 0 ] && [ -f "$OUT/manifest.json" ] && [ -f "$OUT/$IMAGE_NAME" ] &&
   [ "$(km_manifest_get "$OUT/manifest.json" build_id)" = "$BUILD_ID" ]; then
    log "up to date: $OUT/$IMAGE_NAME"
    exit 0
fi

# ---------------------------------------------------------------- cleanup
WORK=$(mktemp -d "$OUT/.build.XXXXXX")
MNT="$WORK/mnt"
LOOP=""
cleanup() {
    local rc=$?
    set +e
    if [ -d "$MNT" ]; then
        for m in var/cache/apt/archives dev/pts dev sys proc ""; do
            mountpoint -q "$MNT/$m" && umount -l "$MNT/$m"
        done
    fi
    if [ -n "$LOOP" ]; then
        partx -d "$LOOP" 2>/dev/null
        losetup -d "$LOOP"
    fi
    rm -rf "$WORK"
    [ $rc = 0 ] || log "build failed (exit $rc)"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------- base (minbase) tarball
# Keyed by the suite's main Packages index (bullseye itself is frozen; updates
# and security fixes are applied on top with apt below).
MAIN_INDEX=$(awk '/^SHA256:/ {s=1; next} /^[A-Za-z]/ {s=0} s && $3=="main/binary-amd64/Packages" {print $1; exit}' \
    "$APTDIR/lists/"*"_debian_dists_${RELEASE}_InRelease")
[ -n "$MAIN_INDEX" ] || die "cannot read the main Packages hash from the $RELEASE InRelease"
BASE_KEY=$(printf '%s\n' "$RELEASE minbase v1" "$MAIN_INDEX" | sha256sum | cut -c1-16)
BASE_TAR="$CACHE/base-$RELEASE-minbase-$BASE_KEY.tar.zst"
if [ ! -f "$BASE_TAR" ]; then
    log "debootstrap $RELEASE minbase (debs cached in $DEBS)"
    nice -n 10 debootstrap --variant=minbase --keyring="$KEYRING" --cache-dir="$DEBS" \
        "$RELEASE" "$WORK/base" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 ||
        { tail -30 "$WORK/debootstrap.log" >&2; die "debootstrap failed"; }
    rm -rf "$WORK/base/var/cache/apt/archives/"*.deb "$WORK/base/var/lib/apt/lists/"*_Packages*
    tar -C "$WORK/base" --numeric-owner --xattrs -cf - . | nice -n 10 zstd -q -T0 -3 -o "$BASE_TAR.tmp"
    mv "$BASE_TAR.tmp" "$BASE_TAR"
    rm -rf "$WORK/base"
    # drop stale base tarballs
    find "$CACHE" -maxdepth 1 -name "base-$RELEASE-minbase-*.tar.zst" ! -name "$(basename "$BASE_TAR")" -delete
else
    log "using cached base $(basename "$BASE_TAR")"
fi

# ---------------------------------------------------------------- the disk
RAW="$WORK/disk.raw"
truncate -s "$DISK_SIZE" "$RAW"
echo 'label: dos
start=2048, type=83, bootable' | sfdisk -q "$RAW"
LOOP=$(losetup -f --show "$RAW")
# This host's kernel has no MBR partition reader: losetup -P makes no partition
# device. partx parses the table in user space and adds the partition (BLKPG).
partx -a "$LOOP"
PART="${LOOP}p1"
for _ in $(seq 50); do [ -b "$PART" ] && break; sleep 0.1; done
if [ ! -b "$PART" ]; then   # no devtmpfs: make the node from sysfs
    mm=$(cat "/sys/class/block/$(basename "$PART")/dev")
    mknod "$PART" b "${mm%:*}" "${mm#*:}"
fi

# Format with the guest's own mke2fs.conf: the host's e2fsprogs 1.47 defaults
# (orphan_file, metadata_csum_seed) are unreadable for bullseye's grub/e2fsck.
zstd -dc "$BASE_TAR" | tar -xOf - ./etc/mke2fs.conf >"$WORK/mke2fs.conf"
ROOT_UUID=$(echo "$BUILD_ID" | sed -E 's/^(.{8})(.{4}).(.{3}).(.{3})(.{12}).*/\1-\2-4\3-a\4-\5/')
MKE2FS_CONFIG="$WORK/mke2fs.conf" mkfs.ext4 -q -F -L cloudimg-rootfs -U "$ROOT_UUID" \
    -E "hash_seed=$ROOT_UUID" -T default "$PART"
mkdir -p "$MNT"
mount "$PART" "$MNT"
log "unpacking base into the disk"
zstd -dc "$BASE_TAR" | tar -C "$MNT" --numeric-owner --xattrs -xf -

# Private /dev: the loop devices (grub-probe/grub-install look devices up by
# number) and /dev/disk/by-uuid (update-grub writes root=UUID only if it exists).
mount -t tmpfs -o mode=755,size=8m kdev "$MNT/dev"
mknod -m 666 "$MNT/dev/null" c 1 3
mknod -m 666 "$MNT/dev/zero" c 1 5
mknod -m 666 "$MNT/dev/full" c 1 7
mknod -m 666 "$MNT/dev/random" c 1 8
mknod -m 666 "$MNT/dev/urandom" c 1 9
mknod -m 666 "$MNT/dev/tty" c 5 0
mknod -m 600 "$MNT/dev/console" c 5 1
mkdir -p "$MNT/dev/pts" "$MNT/dev/shm" "$MNT/dev/disk/by-uuid"
mount -t devpts -o newinstance,ptmxmode=0666 devpts "$MNT/dev/pts"
ln -s pts/ptmx "$MNT/dev/ptmx"
for d in "$LOOP" "$PART"; do
    mm=$(stat -c '%t:%T' "$d")
    mknod -m 660 "$MNT$d" b $((16#${mm%:*})) $((16#${mm#*:}))
done
ln -s "../../$(basename "$PART")" "$MNT/dev/disk/by-uuid/$ROOT_UUID"
mount -t proc proc "$MNT/proc"
mount -t sysfs sysfs "$MNT/sys"
mkdir -p "$MNT/var/cache/apt/archives"
mount --bind "$DEBS" "$MNT/var/cache/apt/archives"

# ------------------------------------------------------------ packages
cp "$APTDIR/etc/sources.list" "$MNT/etc/apt/sources.list"
rm -rf "$MNT/var/lib/apt/lists"
mkdir -p "$MNT/var/lib/apt/lists/partial"
cp "$APTDIR/lists/"*_InRelease "$APTDIR/lists/"*_Packages* "$MNT/var/lib/apt/lists/"
cp -L /etc/resolv.conf "$MNT/etc/resolv.conf"
printf '#!/bin/sh\nexit 101\n' >"$MNT/usr/sbin/policy-rc.d"
chmod 755 "$MNT/usr/sbin/policy-rc.d"
cat >"$MNT/etc/apt/apt.conf.d/99kmatrix-build" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
APT::Keep-Downloaded-Packages "true";
Acquire::Languages "none";
Dpkg::Use-Pty "false";
Dpkg::Options { "--force-confdef"; "--force-confold"; };
EOF
# grub-pc must not try to install itself during dpkg; we run grub-install below.
printf '%s\n' \
    'grub-pc grub-pc/install_devices multiselect' \
    'grub-pc grub-pc/install_devices_empty boolean true' \
    'grub-pc grub-pc/install_devices_disks_changed multiselect' |
    chroot "$MNT" debconf-set-selections
in_chroot() {
    nice -n 10 chroot "$MNT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C.UTF-8 \
        DEBIAN_FRONTEND=noninteractive DEBCONF_NONINTERACTIVE_SEEN=true "$@"
}
# Before the packages: the kernel's initramfs is built once, with the root in
# fstab (so fsck is included) and a small module list.
printf 'UUID=%s / ext4 errors=remount-ro 0 1\n' "$ROOT_UUID" >"$MNT/etc/fstab"
echo debian >"$MNT/etc/hostname"
printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$MNT/etc/hosts"
echo 'LANG=C.UTF-8' >"$MNT/etc/default/locale"
install -m 755 -D "$FILES/initramfs-hook" "$MNT/etc/initramfs-tools/hooks/kmatrix-modules"
install -m 644 -D /dev/stdin "$MNT/etc/initramfs-tools/conf.d/kmatrix" <<<'MODULES=list'

# Our list, with the versions the build_id was computed from pinned.
INSTALL=("$KERNEL_PKG=$KERNEL_VER")
for p in "${PACKAGES[@]}"; do
    case "$p" in
        grub-pc) INSTALL+=("grub-pc=$GRUB_VER") ;;
        cloud-init) INSTALL+=("cloud-init=$CLOUDINIT_VER") ;;
        openssh-server) INSTALL+=("openssh-server=$SSHD_VER") ;;
        *) INSTALL+=("$p") ;;
    esac
done
log "apt: upgrade base, install ${#PACKAGES[@]} packages"
{
    in_chroot apt-get -y -q dist-upgrade
    in_chroot apt-get -y -q install "${INSTALL[@]}"
} >"$WORK/apt.log" 2>&1 || { tail -40 "$WORK/apt.log" >&2; die "apt in chroot failed"; }
[ -d "$MNT/lib/modules/$KERNEL_RELEASE" ] || die "kernel $KERNEL_RELEASE not installed"

# ----------------------------------------------------------- configuration
log "configuring"
install -m 644 -D "$FILES/90-kmatrix.cfg" "$MNT/etc/cloud/cloud.cfg.d/90-kmatrix.cfg"
install -m 644 "$FILES/default-grub" "$MNT/etc/default/grub"
install -m 644 -D "$FILES/interfaces" "$MNT/etc/network/interfaces"
mkdir -p "$MNT/etc/network/interfaces.d"
# Timers that only cost time in a short-lived TCG guest.
for u in apt-daily.timer apt-daily-upgrade.timer man-db.timer e2scrub_all.timer fstrim.timer; do
    in_chroot systemctl disable "$u" >/dev/null 2>&1 || true
    in_chroot systemctl mask "$u" >/dev/null 2>&1 || true
done

# ------------------------------------------------------------- bootloader
log "grub-install $LOOP, update-grub"
{
    in_chroot grub-install --target=i386-pc --recheck "$LOOP"
    in_chroot update-grub
} >"$WORK/grub.log" 2>&1 || { cat "$WORK/grub.log" >&2; die "grub failed"; }
grep -q "root=UUID=$ROOT_UUID " "$MNT/boot/grub/grub.cfg" ||
    { grep -n 'linux\s' "$MNT/boot/grub/grub.cfg" >&2; die "grub.cfg does not boot root=UUID=$ROOT_UUID"; }
grep -q 'console=ttyS0,115200' "$MNT/boot/grub/grub.cfg" || die "grub.cfg lacks console=ttyS0,115200"

# ------------------------------------------------ first-boot state, cleanup
INSTALLED=$(in_chroot dpkg-query -W -f '${Package} ${Version}\n' | sort)
inst_ver() { awk -v p="$1" '$1==p {print $2}' <<<"$INSTALLED"; }
for p in "$KERNEL_PKG:$KERNEL_VER" "grub-pc:$GRUB_VER" "cloud-init:$CLOUDINIT_VER" "openssh-server:$SSHD_VER"; do
    [ "$(inst_ver "${p%%:*}")" = "${p#*:}" ] || die "${p%%:*}: installed $(inst_ver "${p%%:*}"), expected ${p#*:}"
done
rm -f "$MNT/etc/apt/apt.conf.d/99kmatrix-build" "$MNT/usr/sbin/policy-rc.d"
rm -rf "$MNT/var/lib/apt/lists/"* "$MNT/var/cache/apt/"*.bin
mkdir -p "$MNT/var/lib/apt/lists/partial"
: >"$MNT/etc/machine-id"
rm -f "$MNT/var/lib/dbus/machine-id" "$MNT/etc/ssh/ssh_host_"*
rm -rf "$MNT/var/lib/cloud/"* "$MNT/var/log/cloud-init"*
rm -rf "$MNT/tmp/"* "$MNT/var/tmp/"* "$MNT/root/.bash_history"
find "$MNT/var/log" -type f \( -name '*.log' -o -name '*.gz' -o -name '*.[0-9]' \) -delete
: >"$MNT/etc/resolv.conf"
find "$MNT/var/cache/debconf" -name '*-old' -delete

for m in var/cache/apt/archives sys proc dev/pts dev; do umount "$MNT/$m"; done
fstrim "$MNT" >/dev/null 2>&1 || true
umount "$MNT"
e2fsck -fy "$PART" >"$WORK/fsck.log" 2>&1 || { rc=$?; [ $rc -le 1 ] || { cat "$WORK/fsck.log" >&2; die "e2fsck: $rc"; }; }
partx -d "$LOOP"
losetup -d "$LOOP"
LOOP=""

log "qemu-img convert -c"
nice -n 10 qemu-img convert -c -O qcow2 -o compat=1.1 "$RAW" "$WORK/$IMAGE_NAME"
SHA=$(sha256sum "$WORK/$IMAGE_NAME" | cut -d' ' -f1)
jq -n --arg release "Debian GNU/Linux $RELEASE_NUM ($RELEASE)" \
      --arg kpkg "$KERNEL_PKG" --arg kver "$KERNEL_VER" \
      --arg grub "$GRUB_VER" --arg ci "$CLOUDINIT_VER" --arg ssh "$SSHD_VER" \
      --arg krel "$KERNEL_RELEASE" --arg sha "$SHA" --arg id "$BUILD_ID" \
      --arg image "$IMAGE_NAME" --arg uuid "$ROOT_UUID" \
      '{release: $release, image: $image,
        packages: ({($kpkg): $kver} + {"grub-pc": $grub, "cloud-init": $ci, "openssh-server": $ssh}),
        kernel_release: $krel, default_user: "cloud-user", root_uuid: $uuid,
        sha256: $sha, build_id: $id}' >"$WORK/manifest.json"
# Image first, manifest last: a manifest only ever describes a complete image.
rm -f "$OUT/manifest.json"
mv -f "$WORK/$IMAGE_NAME" "$OUT/$IMAGE_NAME"
mv -f "$WORK/manifest.json" "$OUT/manifest.json"
log "done: $OUT/$IMAGE_NAME ($(du -m "$OUT/$IMAGE_NAME" | cut -f1) MiB, sha256 $SHA)"
