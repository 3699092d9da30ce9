#!/usr/bin/env bash
#  minbase-root.sh DIR [MIRROR] — a bare Debian 12 root in DIR: what
#  `debootstrap --variant=minbase bookworm` installs, nothing else (no
#  -dev package, no library faissproxy links). Made once: a DIR holding a
#  complete root is kept. tests/test_dist.sh runs the release tarball in
#  it; tests/test_docker.sh's comment imports one as a base image.
#  MIRROR defaults to http://deb.debian.org/debian. Needs root and the
#  debootstrap package (scripts/deps.sh installs it).
set -euo pipefail

dir=${1:?usage: minbase-root.sh DIR [MIRROR]}
mirror=${2:-http://deb.debian.org/debian}

die () { echo "minbase-root: $*" >&2; exit 1; }

#  debootstrap writes this file last: a root without it was interrupted.
[ -f "$dir/.fpx-minbase-complete" ] && exit 0
[ "$(id -u)" = 0 ] || die "debootstrap needs root"
command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"

#  Built beside DIR and moved into place, so that an interrupted run leaves
#  no half root behind.
tmp="$dir.tmp.$$"
trap 'rm -rf "$tmp"' EXIT
rm -rf "$tmp"
mkdir -p "$(dirname "$dir")"
log="$(dirname "$dir")/minbase-root.log"
echo "minbase-root: debootstrap --variant=minbase bookworm $dir $mirror (a few minutes, once; log in $log)"
if ! debootstrap --variant=minbase bookworm "$tmp" "$mirror" >"$log" 2>&1; then
    reason=$(grep '^E:' "$log" | sort -u | tail -n 2 | xargs)
    die "debootstrap failed: ${reason:-$(tail -n 2 "$log" | xargs)} (log: $log)"
fi
#  apt's package lists are not needed to run programs: 100 MB less.
rm -rf "$tmp"/var/cache/apt/archives/*.deb "$tmp"/var/lib/apt/lists/*
touch "$tmp/.fpx-minbase-complete"
rm -rf "$dir"
mv "$tmp" "$dir"
trap - EXIT
