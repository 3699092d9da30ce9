#!/usr/bin/env bash
#  deps.sh — installs what faissproxy needs from Debian's packages, then
#  builds FAISS's C API library from the Debian source package of the
#  installed FAISS. Idempotent: does nothing when everything is present.
#  Usage: scripts/deps.sh BUILD_DEPS_DIR [FAISS_PREFIX]
set -euo pipefail

deps_dir=${1:?usage: deps.sh BUILD_DEPS_DIR [FAISS_PREFIX]}
faiss_prefix=${2:-/usr}

packages=(g++ make pkg-config dpkg-dev
          libzmq3-dev libczmq-dev libmsgpack-dev libsodium-dev libmicrohttpd-dev
          libfaiss-dev libopenblas-dev
          python3 python3-numpy python3-faiss python3-pytest python3-setuptools python3-pip)
#  make fuzz: clang with libFuzzer and its sanitizer runtimes.
packages+=(clang libclang-rt-14-dev)
#  tests/python/test_metrics.py: the dashboard in a headless browser.
packages+=(chromium)
#  make dist (scripts/dist.sh) and its test in a bare Debian 12 root
#  (tests/test_dist.sh, scripts/minbase-root.sh).
packages+=(patchelf debootstrap)

missing=()
#  make test-typescript: node and npm. A node already on PATH (Debian's, or
#  NodeSource's, which carries its own npm) is kept; Debian's packages fill in
#  what is missing.
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)

die () { echo "deps: $*" >&2; exit 1; }

as_root () {
    if [ "$(id -u)" = 0 ]; then "$@"
    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo -n "$@"
    else die "need root (or password-less sudo) to run: $*"
    fi
}

for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' \
        || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "deps: installing ${missing[*]}"
    as_root apt-get update -q || die "apt-get update failed"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        --no-install-recommends "${missing[@]}" || die "apt-get install failed"
fi

exec "$(dirname "$0")/build-faiss-c.sh" "$deps_dir" "$faiss_prefix"
