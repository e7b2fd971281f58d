#!/usr/bin/env bash
# Makes the kernel git repository the bisect end-to-end test searches, from the Debian 6.1
# source the legacy fixture already downloads, and prints its path. Eight commits:
#   0 legacy: 931401137f60's hunk reverted (a unicast failure drops, fail-open or not)
#   1 harmless (documentation)         2 harmless (a comment in a compiled file)
#   3 breaks the build on purpose      4 fixes the build again
#   5 restores the hunk (fail-open re-injects again): the commit bisect must name
#   6 harmless (a comment)             7 harmless (documentation)
# Usage: kernel-git.sh CACHE DIR. Reused when DIR already holds the same fixture.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
cache=$1 repo=$2
patch=$root/images/legacy-kernel/legacy-failopen.patch
key=$(cat "${BASH_SOURCE[0]}" "$patch" | sha256sum | cut -c1-16)
if [ -f "$repo/.git/kmatrix-fixture" ] && [ "$(cat "$repo/.git/kmatrix-fixture")" = "$key" ]; then
	echo "$repo"
	exit 0
fi
rm -rf "$repo"
bash "$root/images/legacy-kernel/build.sh" --cache "$cache" --source-tree "$repo" >&2
cd "$repo"
export GIT_AUTHOR_NAME=kmatrix GIT_AUTHOR_EMAIL=kmatrix@example.invalid GIT_COMMITTER_NAME=kmatrix GIT_COMMITTER_EMAIL=kmatrix@example.invalid
n=0
commit() { # commit SUBJECT: every change, dated one day apart
	n=$((n + 1))
	export GIT_AUTHOR_DATE="2026-11-0${n}T12:00:00Z" GIT_COMMITTER_DATE="2026-11-0${n}T12:00:00Z"
	git add -A
	git commit -q --no-gpg-sign -m "$1"
}
git init -q -b main
git config gc.auto 0
# Debian's source package ignores everything at the top level (its own packaging repository's
# view): a kernel tree ignores only build outputs.
sed -i '/^# Debian packaging: ignore everything/,$d' .gitignore
sed -i '$d' .gitignore
patch -p1 --forward --fuzz=0 --no-backup-if-mismatch <"$patch" >/dev/null
commit "legacy: nfnetlink_queue drops on unicast failure even with fail-open (931401137f60 reverted)"
printf '\nkmatrix fixture: a harmless documentation change.\n' >>Documentation/networking/nf_conntrack-sysctl.rst
commit "docs: a harmless change"
sed -i '1a /* kmatrix fixture: a harmless comment. */' net/ipv4/udp.c
commit "udp: a harmless comment"
sed -i '1a #error "kmatrix fixture: this commit breaks the build on purpose"' net/core/dev.c
commit "net: break the build on purpose"
sed -i '2d' net/core/dev.c
commit "net: fix the build again"
patch -R -p1 --fuzz=0 --no-backup-if-mismatch <"$patch" >/dev/null
commit "netfilter: nfnetlink_queue: honor NFQA_CFG_F_FAIL_OPEN when netlink unicast fails"
sed -i '1a /* kmatrix fixture: another harmless comment. */' kernel/sys.c
commit "kernel: a harmless comment"
printf '\nkmatrix fixture: another harmless documentation change.\n' >>Documentation/networking/nf_conntrack-sysctl.rst
commit "docs: another harmless change"
echo "$key" >.git/kmatrix-fixture
echo "$repo"
