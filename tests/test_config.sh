#!/usr/bin/env bash
#  test_config.sh BUILD_DIR — the versions, faissproxyd --config, and the
#  man pages against --help.
#
#  Checks that faissproxyd, faissproxy and fpx-loadtest print the version of
#  protocol/fpx_version.h (and their FAISS / libzmq); that a config file
#  configures a real faissproxyd (bind, hashed keys file, data directory,
#  comments, quoting), that the command line overrides it, that an unknown
#  option or a bad value stops the start naming the line, that ports and
#  paths the system picks (tcp://HOST:*, ipc://*, metrics port 0) are
#  printed and written to --endpoint-file as bound, that every option
#  of --help is a config key, that packaging/faissproxyd.conf is accepted;
#  and that each man page documents exactly the options its --help lists.
#  Prints "N passed, M failed" last; exits non-zero on any failure.
set -u

build=${1:?usage: tests/test_config.sh BUILD_DIR}
build=$(cd "$build" && pwd) || exit 2
root=$(cd "$(dirname "$0")/.." && pwd)
daemon="$build/bin/faissproxyd"
cli="$build/bin/faissproxy"
loadtest="$build/bin/fpx-loadtest"
work=$(mktemp -d /tmp/fpx-config.XXXXXX)
. "$root/tests/daemon_lib.sh"
trap 'stop_daemon; rm -rf "$work"' EXIT
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$root/tests/lsan.supp:print_suppressions=0}

version=$(sed -n 's/^#define FPX_VERSION_STRING "\(.*\)"/\1/p' "$root/protocol/fpx_version.h")

# ---- --version ---------------------------------------------------------------
#  check_version NAME BINARY PATTERN: one line "NAME VERSION (...)" matching
#  the extended regular expression PATTERN, exit status 0.
check_version () {
    local out rc
    out=$("$2" --version 2>&1)
    rc=$?
    if [ "$rc" -eq 0 ] && [ "$(echo "$out" | wc -l)" -eq 1 ] \
       && [[ "$out" == "$1 $version ("* ]] && echo "$out" | grep -Eq "$3"; then
        ok "version.$1"
    else
        fail "version.$1" "exit $rc, '$out' (expected '$1 $version (…' with /$3/)"
    fi
}
check_version faissproxyd "$daemon" 'FAISS [0-9]+\.[0-9]+\.[0-9]+, libzmq [0-9]+\.[0-9]+\.[0-9]+'
check_version faissproxy "$cli" 'libzmq [0-9]+\.[0-9]+\.[0-9]+'
check_version fpx-loadtest "$loadtest" 'FAISS [0-9]+\.[0-9]+\.[0-9]+, libzmq [0-9]+\.[0-9]+\.[0-9]+'

# ---- man pages: exactly the options of --help -----------------------------------
#  Options of a --help text, and of a man page's OPTIONS section (the
#  headings of its .TP paragraphs), one a line, sorted.
#  Only options that start a line of --help count: the text also names
#  other programs' options (faissproxy keygen --curve).
help_options () {
    "$1" --help 2>&1 | grep -oE -- '^ *(-h, )?--[a-z][a-z-]*(, --[a-z][a-z-]*)*' \
        | grep -oE -- '--[a-z][a-z-]*' | sort -u
}
man_options () {
    sed 's/\\-/-/g' "$1" | awk '/^\.SH/ { in_options = ($2 == "OPTIONS") } in_options && heading { print } { heading = in_options && /^\.TP/ }' \
        | grep -oE -- '--[a-z][a-z-]*' | sort -u
}
#  The CLI's: only those under "options:" (the commands' text names
#  faissproxyd's --keys-file and keygen --curve).
cli_help_options () {
    "$cli" --help | sed -n '/^options:/,$p' | grep -oE -- '^ {0,4}(-h, )?--[a-z][a-z-]*' \
        | grep -oE -- '--[a-z][a-z-]*' | sort -u
}
check_man () {
    local name=$1 page=$2 from_help=$3 missing extra
    missing=$(comm -23 <(echo "$from_help") <(man_options "$page") | tr '\n' ' ')
    extra=$(comm -13 <(echo "$from_help") <(man_options "$page") | tr '\n' ' ')
    if [ ! -f "$page" ]; then
        fail "man.$name" "$page is missing"
    elif [ -z "$missing" ] && [ -z "$extra" ] && [ -n "$from_help" ]; then
        ok "man.$name"
    else
        fail "man.$name" "in --help, not in $page: ${missing:-none}; in $page, not in --help: ${extra:-none}"
    fi
}
check_man faissproxyd "$root/man/faissproxyd.8" "$(help_options "$daemon")"
check_man faissproxy "$root/man/faissproxy.1" "$(cli_help_options)"
check_man fpx-loadtest "$root/man/fpx-loadtest.1" "$(help_options "$loadtest")"

# ---- --config: refusals name the line ---------------------------------------------
#  refuse NAME FILE_TEXT EXPECTED: faissproxyd --config exits 2 without
#  starting, its stderr containing EXPECTED.
refuse () {
    printf '%b' "$2" > "$work/refused.conf"
    local err rc
    err=$(timeout 30 "$daemon" --config "$work/refused.conf" --data-dir "$work/never" 2>&1 >/dev/null)
    rc=$?
    if [ "$rc" -eq 2 ] && [[ "$err" == *"$3"* ]] && [ ! -e "$work/never" ]; then
        ok "config.$1"
    else
        fail "config.$1" "exit $rc, stderr '$(echo "$err" | head -n 2)' (expected exit 2 and '$3')"
    fi
}
refuse unknown_key '# comment\nbind = tcp://127.0.0.1:1\nnonsense = 3\n' \
    "$work/refused.conf:3: unknown option 'nonsense'"
refuse bad_value '\n  workers = 0\n' "$work/refused.conf:2: --workers must be an integer"
refuse bad_choice 'fsync = sometimes\n' "$work/refused.conf:1: --fsync is always, batch or never"
refuse no_value 'log-level =\n' "$work/refused.conf:1: 'log-level' needs a value"
refuse no_nesting 'config = /etc/other.conf\n' "$work/refused.conf:1: 'config' is for the command line only"
refuse missing_keys_file 'keys-file = /nonexistent/keys\n' "cannot open /nonexistent/keys"
err=$("$daemon" --config "$work/none.conf" 2>&1)
if [ $? -eq 2 ] && [[ "$err" == *"cannot open config file $work/none.conf"* ]]; then
    ok "config.missing_file"
else
    fail "config.missing_file" "'$(echo "$err" | head -n 2)'"
fi

#  Every option of --help but --config/--help/--version is a key: followed
#  by an unknown key on line 2, a known one either takes its value "0" and
#  the start stops at line 2, or refuses "0" at line 1; never "unknown" at 1.
unknown=""
for option in $(help_options "$daemon"); do
    key=${option#--}
    case $key in config|help|version) continue ;; esac
    printf '%s = 0\nnonsense = 1\n' "$key" > "$work/key.conf"
    err=$(timeout 30 "$daemon" --config "$work/key.conf" --data-dir "$work/never" 2>&1 >/dev/null)
    [[ "$err" == *":1: unknown option '$key'"* || $err != *"$work/key.conf:"* ]] && unknown="$unknown $key"
done
[ -z "$unknown" ] && ok "config.every_help_option_is_a_key" \
    || fail "config.every_help_option_is_a_key" "not accepted as keys:$unknown"
if "$daemon" --help | grep -q -- '--config FILE'; then ok "config.in_usage"; else fail "config.in_usage" "--help does not describe --config"; fi

# ---- --config: a real server ----------------------------------------------------
#  A hashed key from faissproxy keygen in a keys file the config names.
keygen=$("$cli" keygen cfg write 2>/dev/null)
key=$(echo "$keygen" | sed -n 's/^FAISS_PROXY_API_KEY=//p')
echo "$keygen" | grep '^cfg write ' > "$work/keys"
chmod 600 "$work/keys"
cat > "$work/fpx.conf.in" <<CONF
# faissproxyd.conf of test_config.sh
bind = tcp://127.0.0.1:@PORT@
keys-file $work/keys          # a trailing comment
--data-dir=$work/data
log-level = "warn"
default-tenant-limits = "max_indexes=1, max_vectors=1000"
CONF
if start_daemon "$key" "$daemon" --config "$work/fpx.conf"; then
    ok "config.serves"
    #  default-tenant-limits from the file holds: one index, not two.
    "$cli" --server "$endpoint" --api-key "$key" create one 8 Flat >/dev/null 2>&1
    err=$("$cli" --server "$endpoint" --api-key "$key" create two 8 Flat 2>&1)
    if [[ "$err" == *"max_indexes = 1"* ]] && [ -d "$work/data" ]; then
        ok "config.applied"
    else
        fail "config.applied" "a second index under max_indexes=1: '$err'; data dir: $(ls "$work")"
    fi
    file_endpoint=$endpoint
    stop_daemon
    #  The command line overrides the file: its --bind replaces the file's.
    cp "$work/fpx.conf" "$work/fixed.conf"
    if start_daemon "$key" "$daemon" --config "$work/fixed.conf" --bind "tcp://127.0.0.1:@PORT@" \
         --log-level info && [ "$endpoint" != "$file_endpoint" ]; then
        if ping_server "$file_endpoint" "$key" 300; then
            fail "config.command_line_overrides" "the file's $file_endpoint still answers"
        elif grep -q " info " "$work/daemon.log"; then
            ok "config.command_line_overrides"
        else
            fail "config.command_line_overrides" "--log-level info did not override the file's warn"
        fi
    else
        fail "config.command_line_overrides" "no server on the command line's endpoint: $(tail -n 3 "$work/daemon.log")"
    fi
    stop_daemon
else
    fail "config.serves" "$(tail -n 5 "$work/daemon.log")"
fi

#  Ports and paths the system picks: tcp://HOST:*, ipc://* and a metrics
#  port 0 are bound, printed on stdout as bound, and written whole to
#  --endpoint-file, where clients find them (what every launcher of the
#  tests and the bench relies on).
TMPDIR="$work" "$daemon" --bind "tcp://127.0.0.1:*" --bind "ipc://*" --metrics-bind 127.0.0.1:0 \
    --endpoint-file "$work/endpoints" --api-key "t:$key" --data-dir "$work/ep-data" \
    >"$work/ep.out" 2>"$work/ep.err" &
daemon_pid=$!
for _ in $(seq 300); do
    [ -s "$work/endpoints" ] || ! kill -0 "$daemon_pid" 2>/dev/null && break
    sleep 0.1
done
tcp=$(sed -n 1p "$work/endpoints" 2>/dev/null)
ipc=$(sed -n 2p "$work/endpoints" 2>/dev/null)
url=$(sed -n 3p "$work/endpoints" 2>/dev/null)
printed=$(sed -n 's/^faissproxyd \(listening\|metrics\) on //p' "$work/ep.out")
if [[ "$tcp" =~ ^tcp://127\.0\.0\.1:[1-9][0-9]*$ ]] && [[ "$ipc" == ipc://"$work"/* ]] \
   && [[ "$url" =~ ^http://127\.0\.0\.1:[1-9][0-9]*$ ]] && [ "$(wc -l < "$work/endpoints")" -eq 3 ] \
   && [ "$printed" = "$(cat "$work/endpoints")" ] \
   && ping_server "$tcp" "$key" 2000 && ping_server "$ipc" "$key" 2000; then
    ok "daemon.ephemeral_endpoints"
else
    fail "daemon.ephemeral_endpoints" "file: $(tr '\n' ' ' < "$work/endpoints" 2>/dev/null); stdout: $(tr '\n' ' ' < "$work/ep.out"); $(tail -n 3 "$work/ep.err")"
fi
stop_daemon

#  The sample config starts a server (data directory and binds overridden).
if start_daemon "$key" "$daemon" --config "$root/packaging/faissproxyd.conf" --bind "tcp://127.0.0.1:@PORT@" \
     --keys-file "$work/keys" --data-dir "$work/sample-data"; then
    ok "config.sample"
else
    fail "config.sample" "$(tail -n 5 "$work/daemon.log")"
fi
stop_daemon

summary
