#!/usr/bin/env bash
#  test_dist.sh TARBALL — the release tarball (make dist) on a bare Debian 12
#  (make test-dist, part of make test).
#
#  Makes once, and keeps, a root of `debootstrap --variant=minbase bookworm`
#  (scripts/minbase-root.sh, from FPX_DEBIAN_MIRROR, default Debian's; in
#  FPX_MINBASE_ROOT, default build/deps/minbase-root: a few minutes the
#  first time), checks that it lacks the libraries the tarball ships,
#  unpacks the tarball in its /opt as the tarball's README says, and there,
#  in a chroot (with its own /proc, in a mount namespace of its own), with
#  an empty environment:
#  - ldd finds every library of every program and shared library shipped;
#  - faissproxyd, faissproxy and fpx-loadtest --version print the version;
#  - the shipped CLI makes a key (keygen), faissproxyd starts with the
#    sample config, that keys file and a loopback bind, and the CLI pings,
#    creates, lists and describes an index; fpx-loadtest runs for a second
#    against it and FAISS in-process (IVF, 32 queries a request: OpenBLAS's
#    sgemm), without error;
#  - from this machine, the shipped Python package and libfaissproxy
#    search an index on that server, compared with the same calls to FAISS
#    in-process.
#  Also: the root has every package packaging/debian12-minbase.txt lists
#  (what make dist takes to be present), the licence file of each package
#  shipped, and headers that compile alone.
#  Not root: skipped, saying why (a skip is not a pass). Root without a
#  reachable mirror: fails, saying why. Prints "N passed, M failed" last.
set -u

tarball_arg=${1:?usage: tests/test_dist.sh TARBALL}
root=$(cd "$(dirname "$0")/.." && pwd)
python=/usr/bin/python3
work=$(mktemp -d /tmp/fpx-dist.XXXXXX)
mb=${FPX_MINBASE_ROOT:-$root/build/deps/minbase-root}
. "$root/tests/daemon_lib.sh"

#  What the test adds to the root, removed before and after: the root stays
#  bare for the next run.
clean_root () { rm -rf "$mb"/opt/faissproxy* "$mb/etc/faissproxy" "$mb/var/lib/fpx-dist-test"; }
cleanup () {
    stop_daemon
    [ -f "$mb/.fpx-minbase-complete" ] && clean_root
    rm -rf "$work"
}
trap cleanup EXIT

if [ "$(id -u)" != 0 ]; then
    skip "dist" "not root: debootstrap and chroot need root"
    summary
    exit 0
fi
tarball=$(realpath "$tarball_arg" 2>/dev/null)
if [ ! -f "$tarball" ]; then
    fail "dist.tarball" "$tarball_arg is missing: make dist first"
    summary
    exit 1
fi
name=$(basename "$tarball" .tar.gz)
version=$(sed -n 's/^#define FPX_VERSION_STRING "\(.*\)"/\1/p' "$root/protocol/fpx_version.h")

if ! "$root/scripts/minbase-root.sh" "$mb" ${FPX_DEBIAN_MIRROR:+"$FPX_DEBIAN_MIRROR"}; then
    fail "dist.root" "no Debian 12 minbase root in $mb (the reason is above)"
    summary
    exit 1
fi
clean_root

#  in-root COMMAND…: COMMAND in the root, with an empty environment and a
#  /proc of its own; the same process all along (exec), so that its pid is
#  COMMAND's. The network is this machine's: loopback reaches it.
cat > "$work/in-root" <<EOF
#!/bin/sh
exec env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \\
    unshare --mount sh -c 'mount -t proc proc "\$0/proc" && exec chroot "\$0" "\$@"' "$mb" "\$@"
EOF
printf '#!/bin/sh\nexec "%s" /opt/faissproxy/bin/faissproxy "$@"\n' "$work/in-root" > "$work/faissproxy"
chmod 755 "$work/in-root" "$work/faissproxy"
in_root () { "$work/in-root" "$@"; }
cli="$work/faissproxy"          #  daemon_lib.sh's ping_server uses it
opt="$mb/opt/faissproxy"

# ---- the root is bare, as make dist takes it to be ---------------------------------
if ! out=$(in_root /bin/true 2>&1); then
    fail "dist.chroot" "cannot run a program in $mb: $out"
    summary
    exit 1
fi
present=""
for so in libzmq.so.5 libsodium.so.23 libopenblas.so.0 libblas.so.3 libgomp.so.1 libmicrohttpd.so.12 \
          libgfortran.so.5 libpgm-5.3.so.0 libnorm.so.1; do
    [ -z "$(find "$mb/usr/lib" "$mb/usr/local" -name "$so" 2>/dev/null | head -n 1)" ] || present="$present $so"
done
[ -z "$present" ] && ok "dist.root_bare" || fail "dist.root_bare" "$mb is not a bare Debian 12: it has$present"
installed=$(in_root dpkg-query -W -f '${Package}\n' 2>&1)
absent=$(grep -v '^#' "$root/packaging/debian12-minbase.txt" | grep -vxF -f <(echo "$installed") | xargs)
[ -z "$absent" ] && ok "dist.minbase_list" \
    || fail "dist.minbase_list" "packaging/debian12-minbase.txt names packages the root lacks: $absent"

# ---- unpacked as its README says, in the root -----------------------------------------
#  The README's own 'tar -C /opt' and 'ln -sfn' lines, run in the root's /tmp.
steps=$(tar -xzOf "$tarball" "$name/README" 2>/dev/null | sed -n 's/^ *\(tar -C \/opt .*\|ln -sfn .*\)$/\1/p')
cp "$tarball" "$mb/tmp/"
out=$(in_root sh -ec "cd /tmp; $(echo "$steps" | paste -sd';')" 2>&1)
rc=$?
rm -f "$mb/tmp/$name.tar.gz"
if [ "$(echo "$steps" | grep -c .)" -eq 2 ] && [ "$rc" -eq 0 ] && [ -d "$mb/opt/$name" ] \
   && [ "$(readlink "$opt")" = "$name" ]; then
    ok "dist.unpack"
else
    fail "dist.unpack" "the README's steps '$(echo "$steps" | xargs)' in the root: exit $rc, $out"
    summary
    exit 1
fi
missing=""
for f in bin/faissproxyd bin/faissproxy bin/fpx-loadtest lib/libfaissproxy.so lib/libfaissproxy.so.0 \
         include/faissproxy.h include/fpx_constants.h include/fpx_errors.h include/fpx_version.h \
         share/man/man8/faissproxyd.8 share/man/man1/faissproxy.1 share/man/man1/fpx-loadtest.1 \
         lib/systemd/system/faissproxyd.service share/faissproxy/faissproxyd.conf \
         share/doc/faissproxy/OPERATIONS.md share/doc/faissproxy/LIBRARIES; do
    [ -e "$opt/$f" ] || missing="$missing $f"
done
[ -z "$missing" ] && ok "dist.files" || fail "dist.files" "missing:$missing"
grep -q '^ExecStart=/opt/faissproxy/bin/faissproxyd ' "$opt/lib/systemd/system/faissproxyd.service" \
    && ok "dist.unit_path" || fail "dist.unit_path" "the unit's ExecStart does not name /opt/faissproxy/bin"

#  Each library shipped is in LIBRARIES, with its package's licence file.
bad=""
for so in "$opt"/lib/*.so.*; do
    base=$(basename "$so")
    case "$base" in libfaissproxy.so*) continue ;; esac
    pkg=$(awk -v so="$base" '$1 == so { print $2 }' "$opt/share/doc/faissproxy/LIBRARIES")
    if [ -z "$pkg" ]; then
        bad="$bad $base(not in LIBRARIES)"
    elif [ ! -s "$opt/share/doc/$pkg/copyright" ]; then
        bad="$bad $base(no share/doc/$pkg/copyright)"
    fi
done
for pkg in libfaiss-dev libmsgpack-dev; do      #  linked in statically
    [ -s "$opt/share/doc/$pkg/copyright" ] || bad="$bad share/doc/$pkg/copyright"
done
[ -z "$bad" ] && ok "dist.licences" || fail "dist.licences" "$bad"

printf '#include <faissproxy.h>\nint main (void) { return FPX_VERSION_MAJOR < 0; }\n' > "$work/hdr.c"
out=$(cc -std=c11 -Wall -Werror -fsyntax-only -I"$opt/include" "$work/hdr.c" 2>&1)
[ $? -eq 0 ] && ok "dist.headers" || fail "dist.headers" "include/faissproxy.h does not compile alone: $out"

# ---- in the root ---------------------------------------------------------------------
out=$(in_root sh -c 'n=0; for f in /opt/faissproxy/bin/* /opt/faissproxy/lib/*.so*; do
                        n=$((n + 1)); echo "== $f"; ldd "$f" || echo "ldd failed: $f"; done; echo "files: $n"' 2>&1)
files=$(echo "$out" | sed -n 's/^files: //p')
if [ "${files:-0}" -ge 6 ] && ! echo "$out" | grep -q 'not found\|ldd failed'; then
    ok "dist.ldd"
else
    fail "dist.ldd" "$files files; not found: $(echo "$out" | awk '/not found/ { print $1 } /ldd failed/' | sort -u | xargs)"
fi
#  What lib/ holds is loaded from there (/opt/faissproxy/bin/../lib/ for
#  the programs), not from elsewhere.
elsewhere=$(echo "$out" | awk '$2 == "=>" { print $1, $3 }' | while read -r so path; do
    [ -e "$opt/lib/$so" ] && [ "${path#/opt/faissproxy/}" = "$path" ] && echo "$so=$path"; done | sort -u | xargs)
[ -z "$elsewhere" ] && ok "dist.ldd_origin" || fail "dist.ldd_origin" "loaded from outside the tree: $elsewhere"

bad=""
for prog in faissproxyd faissproxy fpx-loadtest; do
    out=$(in_root "/opt/faissproxy/bin/$prog" --version 2>&1)
    [[ "$out" == "$prog $version"* ]] || bad="$bad $prog: '$out'"
done
[ -z "$bad" ] && ok "dist.version" || fail "dist.version" "$bad"

keygen=$(in_root /opt/faissproxy/bin/faissproxy keygen dist write 2>&1)
key=$(echo "$keygen" | sed -n 's/^FAISS_PROXY_API_KEY=//p')
mkdir -p "$mb/etc/faissproxy"
install -m 600 /dev/null "$mb/etc/faissproxy/keys"
echo "$keygen" | grep '^dist write ' >> "$mb/etc/faissproxy/keys"
if [ -z "$key" ] || ! [ -s "$mb/etc/faissproxy/keys" ]; then
    fail "dist.keygen" "'$keygen'"
    summary
    exit 1
fi
ok "dist.keygen"

#  The sample config as shipped; the command line names the bind, keys and
#  data (the command line's --bind replaces the config's).
if ! start_daemon "$key" "$work/in-root" /opt/faissproxy/bin/faissproxyd \
        --config /opt/faissproxy/share/faissproxy/faissproxyd.conf --bind "tcp://127.0.0.1:@PORT@" \
        --keys-file /etc/faissproxy/keys --data-dir /var/lib/fpx-dist-test --log-level warn; then
    fail "dist.daemon" "$(tail -n 5 "$work/daemon.log")"
    summary
    exit 1
fi
ok "dist.daemon"

c () { in_root /opt/faissproxy/bin/faissproxy --server "$endpoint" --api-key "$key" "$@" 2>&1; }
out=$(c ping)
[[ "$out" == *"server_version: $version"* && "$out" == *"faiss_version: "* ]] \
    && ok "dist.ping" || fail "dist.ping" "'$out'"
out=$(c create demo 16 IVF4,Flat)
[ $? -eq 0 ] && ok "dist.create" || fail "dist.create" "'$out'"
out=$(c list)
[ "$out" = demo ] && ok "dist.list" || fail "dist.list" "'$out'"
out=$(c describe demo)
[[ "$out" == *"class: IndexIVFFlat"* && "$out" == *"d: 16"* && "$out" == *"ntotal: 0"* ]] \
    && ok "dist.describe" || fail "dist.describe" "'$out'"

#  32 queries a request: FAISS computes distances with OpenBLAS's sgemm
#  (from 20 queries), in the server and in-process; IVF trains with k-means.
out=$(timeout --kill-after=10 60 "$work/in-root" /opt/faissproxy/bin/fpx-loadtest --server "$endpoint" \
      --api-key "$key" --factory IVF16,Flat --dim 32 --nb 2000 --nq 32 --k 5 --clients 2 \
      --duration 1 --inprocess --json 2>"$work/loadtest.err")
rc=$?
verdict=$(echo "$out" | tail -n 1 | "$python" -c '
import json, sys
try:
    r = json.loads(sys.stdin.read())
except ValueError as e:
    print("last line is not JSON: %s" % e); sys.exit(0)
runs = [r] + ([r["inprocess"]] if "inprocess" in r else [])
if [x.get("mode") for x in runs] != ["remote", "inprocess"]:
    print("modes %s" % [x.get("mode") for x in runs]); sys.exit(0)
for x in runs:
    if x["errors"] != 0 or x["requests"] <= 0:
        print("%s: %d requests, %d errors" % (x["mode"], x["requests"], x["errors"])); sys.exit(0)
print("ok")' 2>&1)
[ "$rc" -eq 0 ] && [ "$verdict" = ok ] && ok "dist.loadtest" \
    || fail "dist.loadtest" "exit $rc, $verdict; $(tail -n 3 "$work/loadtest.err" | xargs)"

#  The shipped Python package and libfaissproxy, from this machine, against
#  the server in the root: results equal FAISS's in-process.
site=$(ls -d "$opt"/lib/python3*/dist-packages 2>/dev/null | head -n 1)
out=$(env -i PATH="$PATH" HOME="$work" PYTHONPATH="$site" FAISS_PROXY_LIB="$opt/lib/libfaissproxy.so.0" \
      FPX_ENDPOINT="$endpoint" FPX_KEY="$key" FPX_OPT="$(realpath "$opt")" "$python" -c '
import os, numpy as np
import faiss as local
import faiss_proxy as faiss
faiss.configure(server=os.environ["FPX_ENDPOINT"], api_key=os.environ["FPX_KEY"])
assert faiss.is_remote()
libs = {l.split()[-1] for l in open("/proc/self/maps") if "libfaissproxy" in l or "libzmq" in l}
assert libs and all(p.startswith(os.environ["FPX_OPT"] + "/lib/") for p in libs), libs
rng = np.random.default_rng(7)
xb = rng.random((3000, 24), dtype="float32")
xq = rng.random((40, 24), dtype="float32")
remote, ref = faiss.IndexFlatL2(24), local.IndexFlatL2(24)
remote.add(xb); ref.add(xb)
D, I = remote.search(xq, 10)
Dr, Ir = ref.search(xq, 10)
assert (I == Ir).all(), "ids differ"
assert np.allclose(D, Dr, rtol=1e-5, atol=1e-4), abs(D - Dr).max()
print("same")' 2>&1)
[ "$(echo "$out" | tail -n 1)" = same ] && ok "dist.python_vs_faiss" \
    || fail "dist.python_vs_faiss" "$(echo "$out" | tail -n 3 | xargs)"

stop_daemon
summary
