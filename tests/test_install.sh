#!/usr/bin/env bash
#  test_install.sh BUILD_DIR — make install into temporary prefixes, then
#  use what was installed as a user would, without LD_LIBRARY_PATH.
#
#  Installs BUILD_DIR's build (make install PREFIX=tmp) and checks the
#  files; starts the installed faissproxyd (with a config file, and under
#  the kernel's MemoryDenyWriteExecute, PR_SET_MDWE, as the systemd unit
#  runs it); compiles the README's C example with the README's own
#  pkg-config command line and runs it against that server; runs the
#  README's Python snippet (its endpoint and key replaced) with only
#  PYTHONPATH set to the installed site directory, and checks that it used
#  the installed libfaissproxy; checks a DESTDIR staging install and
#  pip install ./python-shim; runs systemd-analyze verify on the installed
#  unit where systemd-analyze exists (a skip otherwise, not a pass).
#  Environment: DEPS_DIR as for make. Prints "N passed, M failed" last.
#  Runs for the plain build only (make test-c skips it under SANITIZE): an
#  ASan libfaissproxy cannot be loaded by a plain program or Python.
set -u

build_arg=${1:?usage: tests/test_install.sh BUILD_DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "$build_arg" && pwd) || exit 2
build_rel=$(realpath --relative-to="$root" "$build")
python=/usr/bin/python3
work=$(mktemp -d /tmp/fpx-install.XXXXXX)
prefix="$work/prefix"
cli="$prefix/bin/faissproxy"
. "$root/tests/daemon_lib.sh"
trap 'stop_daemon; rm -rf "$work"' EXIT
unset LD_LIBRARY_PATH FAISS_PROXY_LIB FAISS_PROXY_SERVER FAISS_PROXY_API_KEY PYTHONPATH

#  make install, quietly, outside the calling make's jobserver.
install_to () {
    env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -C "$root" -s --no-print-directory \
        DEPS_DIR="${DEPS_DIR:-build/deps}" BUILD="$build_rel" "$@" install >"$work/make.log" 2>&1
}

if ! install_to PREFIX="$prefix"; then
    fail "install.make" "$(tail -n 5 "$work/make.log")"
    summary
    exit 1
fi
site=$(ls -d "$prefix"/lib/python3*/dist-packages 2>/dev/null | head -n 1)
missing=""
for f in bin/faissproxyd bin/faissproxy bin/fpx-loadtest lib/libfaissproxy.so.0 lib/libfaissproxy.so \
         lib/libfaissproxy.a include/faissproxy.h include/fpx_constants.h include/fpx_errors.h include/fpx_version.h \
         lib/pkgconfig/faissproxy.pc share/man/man8/faissproxyd.8 share/man/man1/faissproxy.1 \
         share/man/man1/fpx-loadtest.1 lib/systemd/system/faissproxyd.service \
         share/faissproxy/faissproxyd.conf share/doc/faissproxy/OPERATIONS.md; do
    [ -e "$prefix/$f" ] || missing="$missing $f"
done
[ -n "$site" ] && [ -f "$site/faiss_proxy/__init__.py" ] && [ -f "$site/faiss_proxy/_install.py" ] \
    || missing="$missing PYTHON_SITE/faiss_proxy"
[ -z "$missing" ] && ok "install.files" || fail "install.files" "missing:$missing"

# ---- the installed library's ABI -------------------------------------------------------
#  libfaissproxy.so exports exactly the functions its installed headers
#  declare (comments stripped by the preprocessor): none of protocol/'s
#  or the library's internals, and nothing declared but hidden. Every
#  function the Python binding declares is among them. The headers also
#  compile as C++, and such a program agrees with the library on
#  fpx_index_info_t's size.
declared=$(printf '#include <faissproxy.h>\n' | cc -E -I"$prefix/include" -x c - 2>/dev/null \
           | grep -oE '\bfpx_[a-z0-9_]+[[:space:]]*\(' | grep -oE 'fpx_[a-z0-9_]+' | sort -u)
exported=$(nm -D --defined-only "$prefix/lib/libfaissproxy.so.0" | awk '{ print $3 }' | sort -u)
extra=$(comm -13 <(echo "$declared") <(echo "$exported") | xargs)
hidden=$(comm -23 <(echo "$declared") <(echo "$exported") | xargs)
if [ -z "$declared" ]; then
    fail "install.exports" "no fpx_ function found in $prefix/include/faissproxy.h"
elif [ -n "$extra$hidden" ]; then
    fail "install.exports" "exported but not declared: ${extra:-none}; declared but not exported: ${hidden:-none}"
else
    ok "install.exports"
fi
python_uses=$(grep -oE '^ +"fpx_[a-z0-9_]+":' "$root/python-shim/faiss_proxy/_capi.py" | grep -oE 'fpx_[a-z0-9_]+' | sort -u)
missing=$(comm -23 <(echo "$python_uses") <(echo "$exported") | xargs)
[ -n "$python_uses" ] && [ -z "$missing" ] && ok "install.exports_python" \
    || fail "install.exports_python" "_capi.py declares what the library does not export: ${missing:-(none found)}"
cat > "$work/cxx.cc" <<'CXX'
#include <faissproxy.h>
int main () {
    return fpx_strerror (FPX_EINVAL) == 0 || sizeof (fpx_index_info_t) != FPX_INDEX_INFO_SIZE
        || fpx_index_info_size () != sizeof (fpx_index_info_t);
}
CXX
out=$(c++ -Wall -Wextra -Werror -I"$prefix/include" "$work/cxx.cc" -o "$work/cxx" -L"$prefix/lib" \
      -Wl,-rpath,"$prefix/lib" -lfaissproxy 2>&1 && "$work/cxx" 2>&1)
rc=$?
[ $rc -eq 0 ] && ok "install.header_cxx" || fail "install.header_cxx" "exit $rc: $out"

grep -q "^ExecStart=$prefix/bin/faissproxyd " "$prefix/lib/systemd/system/faissproxyd.service" \
    && ok "install.unit_path" || fail "install.unit_path" "ExecStart does not name $prefix/bin/faissproxyd"

version=$(sed -n 's/^#define FPX_VERSION_STRING "\(.*\)"/\1/p' "$root/protocol/fpx_version.h")
out=$("$prefix/bin/faissproxyd" --version 2>&1)
[[ "$out" == "faissproxyd $version ("* ]] && ok "install.version" || fail "install.version" "'$out'"

# ---- the installed server, under MemoryDenyWriteExecute ---------------------------
#  PR_SET_MDWE (65) with PR_MDWE_REFUSE_EXEC_GAIN (1): no mapping may become
#  writable and executable, for this process and what it executes; what
#  systemd's MemoryDenyWriteExecute=yes enforces (with seccomp).
mdwe=( "$python" -c '
import ctypes, os, sys
if ctypes.CDLL(None, use_errno=True).prctl(65, 1, 0, 0, 0) != 0:
    sys.exit(77)
os.execv(sys.argv[1], sys.argv[1:])' )
if "${mdwe[@]}" /bin/true; then
    wrap=( "${mdwe[@]}" )
else
    wrap=()
    skip "install.mdwe" "this kernel has no PR_SET_MDWE (Linux >= 6.3): the server runs without it"
fi
keygen=$("$cli" keygen inst write 2>/dev/null)
key=$(echo "$keygen" | sed -n 's/^FAISS_PROXY_API_KEY=//p')
echo "$keygen" | grep '^inst write ' > "$work/keys"
chmod 600 "$work/keys"
printf 'bind = tcp://127.0.0.1:@PORT@\nkeys-file = %s\ndata-dir = %s\nlog-level = warn\n' \
    "$work/keys" "$work/data" > "$work/faissproxyd.conf.in"
if ! start_daemon "$key" "${wrap[@]}" "$prefix/bin/faissproxyd" --config "$work/faissproxyd.conf"; then
    fail "install.daemon" "$(tail -n 5 "$work/daemon.log")"
    summary
    exit 1
fi
ok "install.daemon"

# ---- the README's C example ----------------------------------------------------------
#  The first ```c block of the README, and its compile-and-run line.
awk '/^```c$/ { inside = 1; next } inside && /^```$/ { exit } inside' "$root/README.md" > "$work/example.c"
compile=$(grep -m 1 '^cc example.c' "$root/README.md")
out=$(cd "$work" && PKG_CONFIG_PATH="$prefix/lib/pkgconfig" FAISS_PROXY_SERVER="$endpoint" \
      FAISS_PROXY_API_KEY="$key" bash -c "$compile" 2>&1)
rc=$?
if [ "$rc" -eq 0 ] && [[ "$out" == "nearest to vector 0: 0 (distance 0)" ]]; then
    ok "install.c_example"
else
    fail "install.c_example" "'$compile' in $work: exit $rc, '$out'"
fi
resolved=$(ldd "$work/example" 2>/dev/null | awk '/libfaissproxy/ { print $3 }')
[[ "$resolved" == "$prefix/lib/"* ]] && ok "install.c_example_rpath" \
    || fail "install.c_example_rpath" "libfaissproxy resolves to '$resolved', not $prefix/lib"

# ---- the README's Python snippet ---------------------------------------------------
#  The first ```python block after "## Python", with this server's endpoint
#  and key, then checks that it ran remotely on the installed library.
awk '/^## Python/ { section = 1 } section && /^```python$/ { inside = 1; next }
     inside && /^```$/ { exit } inside' "$root/README.md" \
    | sed -e "s|server=\"tcp://127.0.0.1:5555\"|server=\"$endpoint\"|" -e "s|api_key=\"secret\"|api_key=\"$key\"|" \
    > "$work/snippet.py"
cat >> "$work/snippet.py" <<'PY'

# ---- appended by tests/test_install.sh
import os
assert faiss.is_remote(), "not remote"
assert faiss.__file__.startswith(os.environ["FPX_SITE"]), faiss.__file__
libs = {line.split()[-1] for line in open("/proc/self/maps") if "libfaissproxy" in line}
assert libs and all(p.startswith(os.environ["FPX_PREFIX"] + "/lib/") for p in libs), libs
assert (I[:, 0] == np.arange(len(xq))).all() and (D[:, 0] < 1e-4).all(), (D, I)
print("snippet ok")
PY
if ! grep -q "server=\"$endpoint\"" "$work/snippet.py"; then
    fail "install.python_snippet" "the README's snippet has no configure(server=\"tcp://127.0.0.1:5555\", …)"
else
    out=$(cd "$work" && env -i PATH="$PATH" HOME="$work" PYTHONPATH="$site" FPX_SITE="$site" \
          FPX_PREFIX="$prefix" "$python" snippet.py 2>&1)
    rc=$?
    [ "$rc" -eq 0 ] && [[ "$out" == *"snippet ok"* ]] && ok "install.python_snippet" \
        || fail "install.python_snippet" "exit $rc: $(echo "$out" | tail -n 4)"
fi
stop_daemon

# ---- staging (DESTDIR) and the .pc rpath -------------------------------------------
if install_to PREFIX=/opt/fpx DESTDIR="$work/stage"; then
    stage="$work/stage/opt/fpx"
    pc="$stage/lib/pkgconfig/faissproxy.pc"
    if [ -x "$stage/bin/faissproxyd" ] && grep -q '^prefix=/opt/fpx$' "$pc" \
       && [ "$(PKG_CONFIG_PATH="$stage/lib/pkgconfig" pkg-config --libs faissproxy | xargs)" \
            = "-L/opt/fpx/lib -Wl,-rpath,/opt/fpx/lib -lfaissproxy" ] \
       && grep -q "^ExecStart=/opt/fpx/bin/faissproxyd " "$stage/lib/systemd/system/faissproxyd.service" \
       && grep -q "^LIBDIR = '/opt/fpx/lib'" "$stage"/lib/python3*/dist-packages/faiss_proxy/_install.py; then
        ok "install.destdir"
    else
        fail "install.destdir" "paths in the staged files do not name /opt/fpx"
    fi
else
    fail "install.destdir" "$(tail -n 5 "$work/make.log")"
fi
#  In /usr the system loader finds the library: no rpath.
if install_to PREFIX=/usr DESTDIR="$work/stage-usr"; then
    libs=$(PKG_CONFIG_PATH="$work/stage-usr/usr/lib/pkgconfig" pkg-config --libs faissproxy | xargs)
    [ "$libs" = "-lfaissproxy" ] && ok "install.usr_no_rpath" \
        || fail "install.usr_no_rpath" "pkg-config --libs faissproxy: '$libs'"
else
    fail "install.usr_no_rpath" "$(tail -n 5 "$work/make.log")"
fi

# ---- pip install ./python-shim --------------------------------------------------------
if out=$(cd "$work" && "$python" -m pip install -q --no-build-isolation --no-index --no-deps \
         --prefix "$work/pip" "$root/python-shim" 2>&1); then
    meta=$(cat "$work"/pip/local/lib/python3*/dist-packages/faiss_proxy-*/METADATA \
               "$work"/pip/lib/python3*/*-packages/faiss_proxy-*/METADATA 2>/dev/null | sed -n 's/^Version: //p' | head -n 1)
    [ "$meta" = "$version" ] && ok "install.pip" || fail "install.pip" "version '$meta', expected $version"
else
    fail "install.pip" "$(echo "$out" | grep -v WARNING | tail -n 3)"
fi

# ---- systemd-analyze verify ----------------------------------------------------------
if command -v systemd-analyze >/dev/null 2>&1; then
    #  man: pages of Documentation= are looked up with man(1).
    out=$(MANPATH="$prefix/share/man:" systemd-analyze verify \
          "$prefix/lib/systemd/system/faissproxyd.service" 2>&1)
    rc=$?
    [ "$rc" -eq 0 ] && ! echo "$out" | grep -q "faissproxyd.service" && ok "install.systemd_verify" \
        || fail "install.systemd_verify" "exit $rc: $out"
else
    skip "install.systemd_verify" "systemd-analyze is not installed (Debian package systemd)"
fi

summary
