#!/usr/bin/env bash
#  build-faiss-c.sh — FAISS's C API as a static library.
#  libfaiss-dev ships the C API headers but not its library. When
#  FAISS_PREFIX holds no libfaiss_c, compile c_api/ from the Debian source
#  package of the installed libfaiss-dev (same version, so the same ABI),
#  adding a deb-src entry built from the machine's own apt sources if none
#  exists. Output: BUILD_DEPS_DIR/faiss-c/libfaiss_c.a.
set -euo pipefail

deps_dir=${1:?usage: build-faiss-c.sh BUILD_DEPS_DIR [FAISS_PREFIX]}
faiss_prefix=${2:-/usr}
mkdir -p "$deps_dir"
out=$(cd "$deps_dir" && pwd)/faiss-c
lib=$out/libfaiss_c.a

die () { echo "build-faiss-c: $*" >&2; exit 1; }
as_root () {
    if [ "$(id -u)" = 0 ]; then "$@"
    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo -n "$@"
    else die "need root (or password-less sudo) to run: $*"
    fi
}

#  A FAISS built with its C API (FAISS_ENABLE_C_API) needs nothing here.
for d in "$faiss_prefix/lib" "$faiss_prefix/lib/$(gcc -print-multiarch 2>/dev/null)"; do
    if [ -e "$d/libfaiss_c.so" ] || [ -e "$d/libfaiss_c.a" ]; then exit 0; fi
done
#  NDEBUG: without it the C API prints every exception's message on
#  stderr, client bytes included (the server logs FAISS's messages itself).
#  A library built with other flags is rebuilt.
flags="-O2 -DNDEBUG -fPIC -fopenmp"
[ -f "$lib" ] && [ "$(cat "$out/flags" 2>/dev/null)" = "$flags" ] && exit 0
[ "$faiss_prefix" = /usr ] \
    || die "$faiss_prefix has no libfaiss_c; build FAISS with -DFAISS_ENABLE_C_API=ON"

src_version=$(dpkg-query -W -f='${source:Version}' libfaiss-dev) \
    || die "libfaiss-dev is not installed"

if [ -z "$(apt-cache showsrc faiss 2>/dev/null | grep -m1 '^Package:')" ]; then
    echo "build-faiss-c: adding a deb-src entry from this machine's apt sources"
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        sed 's/^Types:.*/Types: deb-src/' /etc/apt/sources.list.d/debian.sources \
            | as_root tee /etc/apt/sources.list.d/faissproxy-deb-src.sources >/dev/null
    elif [ -f /etc/apt/sources.list ]; then
        grep -E '^deb ' /etc/apt/sources.list | sed 's/^deb /deb-src /' \
            | as_root tee /etc/apt/sources.list.d/faissproxy-deb-src.list >/dev/null
    else
        die "no apt sources found to derive a deb-src entry from"
    fi
    as_root apt-get update -q >/dev/null || die "apt-get update failed"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get source -q --download-only "faiss=$src_version" >/dev/null 2>&1) \
    || die "apt-get source faiss=$src_version failed"
dpkg-source -x "$work"/faiss_*.dsc "$work/src" >/dev/null 2>&1 || die "dpkg-source failed"

rm -rf "$out/obj"
mkdir -p "$out/obj"
export CXX=${CXX:-g++} FAISS_INCLUDE="$faiss_prefix/include" OBJ="$out/obj" FLAGS="$flags"
cd "$work/src/c_api"
ls *.cpp impl/*.cpp utils/*.cpp | xargs -P "$(nproc)" -I{} sh -c \
    '"$CXX" $FLAGS -I"$FAISS_INCLUDE" -I. -c "$1" -o "$OBJ/$(basename "${1%.cpp}").o"' _ {} \
    || die "compiling the C API failed"
ar rcs "$lib.tmp" "$out"/obj/*.o
mv "$lib.tmp" "$lib"
echo "$flags" > "$out/flags"
echo "build-faiss-c: built $lib from faiss $src_version"
