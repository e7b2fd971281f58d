#!/usr/bin/env bash
# Repackages a Debian linux-image .deb as a RHEL 8-style split pair, kernel-core + kernel-modules
# (vmlinuz inside /lib/modules/<release>/, the netfilter modules in the second package), so the
# `--kernel a.rpm,b.rpm` path is tested on a real kernel: no vendor RPM can be downloaded here.
#
#   kernel-rpms.sh LINUX-IMAGE.deb OUTDIR   -> OUTDIR/kernel-core-*.rpm OUTDIR/kernel-modules-*.rpm
set -euo pipefail
deb=${1:?linux-image .deb}
out=${2:?output directory}
command -v rpmbuild >/dev/null || { echo "kernel-rpms.sh: rpmbuild missing (apt-get install rpm)" >&2; exit 1; }
work=$(mktemp -d /tmp/kmatrix-rpms.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/deb" "$out"
dpkg-deb -x "$deb" "$work/deb"
vmlinuz=$(find "$work/deb/boot" -name 'vmlinuz-*' | head -n1)
release=${vmlinuz##*/vmlinuz-}
moddir=lib/modules/$release
[ -d "$work/deb/$moddir" ] || moddir=usr/lib/modules/$release

# core: the kernel and everything but netfilter; modules: netfilter (as RHEL splits them).
mkdir -p "$work/core/lib/modules/$release" "$work/modules/lib/modules/$release"
cp "$vmlinuz" "$work/core/lib/modules/$release/vmlinuz"
(cd "$work/deb/$moddir" && find . -type f ! -path './kernel/net/netfilter/*' ! -path './kernel/net/ipv4/netfilter/*' -print0 |
    cpio -0 -pdm --quiet "$work/core/lib/modules/$release")
(cd "$work/deb/$moddir" && find ./kernel/net/netfilter ./kernel/net/ipv4/netfilter -type f -print0 |
    cpio -0 -pdm --quiet "$work/modules/lib/modules/$release")

version=${release%%-*}
for part in core modules; do
    cat >"$work/$part.spec" <<SPEC
Name: kernel-$part
Version: $version
Release: kmatrix.fixture
Summary: kmatrix test fixture: Debian $release repackaged as RHEL's kernel-$part
License: GPL-2.0
BuildArch: x86_64
AutoReqProv: no
%description
Test fixture for kmatrix's --kernel .rpm path.
%install
cp -a $work/$part/. %{buildroot}/
%files
/lib/modules/$release
SPEC
    # Reproducible (fixed build time and host): the same .deb gives the same RPMs, so kmatrix's
    # content-addressed image cache reuses their build on the next run.
    SOURCE_DATE_EPOCH=1704067200 rpmbuild -bb --quiet --define "_topdir $work/rpmbuild" \
        --define 'use_source_date_epoch_as_buildtime 1' --define 'clamp_mtime_to_source_date_epoch 1' --define '_buildhost kmatrix' \
        --define "_rpmdir $out" --define "_build_name_fmt %%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm" \
        --define '__os_install_post %{nil}' --define 'debug_package %{nil}' --define '_build_id_links none' \
        --define '_binary_payload w1.gzdio' "$work/$part.spec" >/dev/null
done
ls "$out"/kernel-core-*.rpm "$out"/kernel-modules-*.rpm
