#!/usr/bin/env bash
#  dist.sh STAGE TARBALL [STATIC_FILE…] — makes the release tarball (make
#  dist; docs/OPERATIONS.md, "Release tarball") from STAGE, a `make install`
#  tree for PREFIX=/opt/faissproxy, in place:
#
#  - every shared library the binaries and libfaissproxy load that a bare
#    Debian 12 (debootstrap --variant=minbase, whose packages
#    packaging/debian12-minbase.txt lists) lacks is copied into lib/ under
#    the name the binaries ask for (ldd's left column): behind Debian's BLAS
#    alternatives, libopenblas.so.0 / libblas.so.3 are links to the
#    openblas-pthread build, which is what gets copied;
#  - the copied libraries get RUNPATH $ORIGIN: the binaries' RUNPATH
#    ($ORIGIN/../lib) covers only what they load themselves, not what
#    libzmq loads (libpgm, libnorm, …);
#  - share/doc/PACKAGE/copyright for each Debian package a library was
#    copied from, or that is linked in statically (STATIC_FILE: libfaiss.a,
#    msgpack's headers), and share/doc/faissproxy/LIBRARIES, which says
#    which library came from where;
#  - README (packaging/README.dist, with this tarball's name) at the top.
#
#  Then TARBALL: STAGE's directory, owned by root, sorted, with fixed times.
#  Needs dpkg (which package owns a library) and patchelf.
set -euo pipefail

stage=${1:?usage: dist.sh STAGE TARBALL [STATIC_FILE…]}
tarball=${2:?usage: dist.sh STAGE TARBALL [STATIC_FILE…]}
shift 2
root=$(cd "$(dirname "$0")/.." && pwd)
minbase_list="$root/packaging/debian12-minbase.txt"

die () { echo "dist: $*" >&2; exit 1; }
command -v patchelf >/dev/null || die "patchelf is not installed (apt-get install patchelf; scripts/deps.sh installs it)"
command -v dpkg-query >/dev/null || die "dpkg-query is missing: make dist runs on Debian"
[ -d "$stage/bin" ] || die "$stage is not a make install tree"

declare -A in_minbase=() packages=()
while read -r pkg _; do
    [ -n "$pkg" ] && [ "${pkg:0:1}" != "#" ] && in_minbase[$pkg]=1
done < "$minbase_list"

elves=("$stage"/bin/faissproxyd "$stage"/bin/faissproxy "$stage"/bin/fpx-loadtest)
for so in "$stage"/lib/libfaissproxy.so.*; do
    [ -L "$so" ] || elves+=("$so")
done

#  The libraries they load: soname (ldd's left column) -> path.
declare -A needed=()
for elf in "${elves[@]}"; do
    out=$(ldd "$elf") || die "ldd $elf failed"
    if grep -q 'not found' <<< "$out"; then
        die "$elf: $(grep 'not found' <<< "$out" | xargs)"
    fi
    while read -r name arrow path _; do
        [ "$arrow" = "=>" ] && [ "${path:0:1}" = / ] || continue
        case "$name" in libfaissproxy.so*) continue ;; esac
        needed[$name]=$path
    done <<< "$out"
done

#  Which package owns each, asked of dpkg once (each query reads its whole
#  database). With the merged /usr, dpkg may know /lib/… but not /usr/lib/…
#  or the reverse: both are asked. STATIC_FILEs too.
declare -A owner_of=()
variants () { local p; for p in "$@"; do echo "$p"; echo "${p#/usr}"; echo "/usr$p"; done; }
mapfile -t candidates < <(for name in "${!needed[@]}"; do
                              variants "$(readlink -f "${needed[$name]}")" "${needed[$name]}"; done
                          for f in "$@"; do variants "$(readlink -f "$f")" "$f"; done)
while IFS= read -r line; do
    case "$line" in diversion*) continue ;; esac
    owner_of[${line#*: }]=${line%%:*}
done < <(dpkg-query -S "${candidates[@]}" 2>/dev/null)
#  owner PATH…: the package that owns the first PATH dpkg knows.
owner () {
    local p
    for p in $(variants "$(readlink -f "$1")" "$1"); do
        [ -n "${owner_of[$p]:-}" ] && { echo "${owner_of[$p]}"; return 0; }
    done
    return 1
}

lib="$stage/lib"
manifest="$stage/share/doc/faissproxy/LIBRARIES"
mkdir -p "$(dirname "$manifest")"
{
    echo "#  Shared libraries in lib/, copied from Debian 12's packages (make dist):"
    echo "#  SONAME PACKAGE VERSION. The others the programs load are in every"
    echo "#  Debian 12 (debootstrap --variant=minbase); share/doc/PACKAGE/copyright"
    echo "#  holds the licence of each package named here."
} > "$manifest"
declare -A copied=()        #  real path -> the soname it was first copied as
for name in $(printf '%s\n' "${!needed[@]}" | sort); do
    path=${needed[$name]}
    real=$(readlink -f "$path")
    pkg=$(owner "$path") || pkg=""
    [ -n "$pkg" ] && [ -n "${in_minbase[$pkg]:-}" ] && continue
    if [ -n "${copied[$real]:-}" ]; then
        ln -sf "${copied[$real]}" "$lib/$name"
    else
        install -m 644 "$real" "$lib/$name"
        patchelf --set-rpath '$ORIGIN' "$lib/$name"
        copied[$real]=$name
    fi
    if [ -n "$pkg" ]; then
        packages[$pkg]=1
        echo "$name $pkg $(dpkg-query -W -f '${Version}' "$pkg" 2>/dev/null | head -n 1)" >> "$manifest"
    else
        echo "dist: warning: $real belongs to no Debian package: copied without a licence file" >&2
        echo "$name unpackaged $real" >> "$manifest"
    fi
done
#  A program linked with libfaissproxy finds libzmq beside it.
for so in "${elves[@]:3}"; do
    patchelf --set-rpath '$ORIGIN' "$so"
done

for f in "$@"; do
    pkg=$(owner "$f") || die "$f belongs to no Debian package: no licence file to ship"
    packages[$pkg]=1
    echo "#  linked in statically: $(basename "$f") from $pkg $(dpkg-query -W -f '${Version}' "$pkg" | head -n 1)" >> "$manifest"
done
for pkg in "${!packages[@]}"; do
    copyright="/usr/share/doc/$pkg/copyright"
    [ -r "$copyright" ] || die "$copyright is missing: the licence of $pkg cannot be shipped"
    install -d "$stage/share/doc/$pkg"
    install -m 644 "$copyright" "$stage/share/doc/$pkg/copyright"
done

sed "s/faissproxy-VERSION-linux-amd64/$(basename "$stage")/g" "$root/packaging/README.dist" > "$stage/README"
chmod 644 "$stage/README"

#  Reproducible: the same build gives the same tarball.
mtime=${SOURCE_DATE_EPOCH:-$(git -C "$root" log -1 --format=%ct 2>/dev/null || echo 0)}
mkdir -p "$(dirname "$tarball")"
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$mtime" \
    -C "$(dirname "$stage")" -cf - "$(basename "$stage")" | gzip -n > "$tarball.tmp"
mv "$tarball.tmp" "$tarball"
echo "dist: $tarball ($(du -h "$tarball" | cut -f1)), $(grep -vc '^#' "$manifest") libraries shipped"
