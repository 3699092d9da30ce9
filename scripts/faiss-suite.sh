#!/usr/bin/env bash
#  faiss-suite.sh — FAISS 1.7.3's own Python tests, run through faiss_proxy.
#  Usage: scripts/faiss-suite.sh BUILD_DIR [SOURCE_CACHE]
#  Fetches the tests of the Debian source package of the installed FAISS
#  (cached in SOURCE_CACHE, default build/deps/faiss-src), then runs the
#  public-API test files twice under /usr/bin/python3 -m pytest: in process
#  (Debian's python3-faiss, the baseline) and with `faiss` resolved to
#  faiss_proxy configured against a faissproxyd of BUILD_DIR. Prints both
#  counts and the share of the tests that pass remotely. Which files count,
#  and why the others do not: docs/FAISS_SUITE.md. Not part of make test.
#  FAISS_SUITE_FILES="test_a.py test_b.py" runs a subset; FAISS_SUITE_SKIP_LOCAL=1
#  skips the in-process baseline.
set -euo pipefail

build=${1:?usage: faiss-suite.sh BUILD_DIR [SOURCE_CACHE]}
cache=${2:-build/deps/faiss-src}
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "$build" && pwd)
python=${PYTHON:-/usr/bin/python3}

die () { echo "faiss-suite: $*" >&2; exit 1; }

[ -x "$build/bin/faissproxyd" ] || die "$build/bin/faissproxyd not built (make all)"
[ -f "$build/lib/libfaissproxy.so" ] || die "$build/lib/libfaissproxy.so not built (make all)"

src_version=$(dpkg-query -W -f='${source:Version}' libfaiss-dev 2>/dev/null) \
    || die "libfaiss-dev is not installed"
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)
if [ "$(cat "$cache/version" 2>/dev/null)" != "$src_version" ] \
        || [ ! -f "$cache/tests/common_faiss_tests.py" ]; then
    #  scripts/build-faiss-c.sh adds the deb-src entry when there is none.
    [ -n "$(apt-cache showsrc faiss 2>/dev/null | grep -m1 '^Package:')" ] \
        || die "no deb-src entry for faiss (scripts/build-faiss-c.sh adds one)"
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    (cd "$work" && apt-get source -q --download-only "faiss=$src_version" >/dev/null 2>&1) \
        || die "apt-get source faiss=$src_version failed"
    dpkg-source -x "$work"/faiss_*.dsc "$work/src" >/dev/null 2>&1 || die "dpkg-source failed"
    rm -rf "$cache/tests"
    cp -r "$work/src/tests" "$cache/tests"
    echo "$src_version" > "$cache/version"
    echo "faiss-suite: FAISS $src_version tests cached in $cache/tests"
fi

out=$build/faiss-suite
rm -rf "$out"
mkdir -p "$out"
exec env FPX_DAEMON="$build/bin/faissproxyd" FAISS_PROXY_LIB="$build/lib/libfaissproxy.so" \
    "$python" "$root/scripts/faiss_suite.py" "$cache/tests" "$out"
