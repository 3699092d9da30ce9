#  daemon_lib.sh — sourced by the shell tests and scripts/bench.sh: a
#  faissproxyd of their own on a loopback port the system picks, and the
#  "ok"/"FAIL" bookkeeping of tests/run.sh's programs. The caller sets
#  $work (a temporary directory it removes) and $cli (a faissproxy binary).

passed=0
failed=0
skipped=0
daemon_pid=""

ok () { echo "ok $1"; passed=$((passed + 1)); }
fail () { echo "FAIL $1: $2"; failed=$((failed + 1)); }
#  A skip is reported with its reason and counts as neither.
skip () { echo "skip $1: $2"; skipped=$((skipped + 1)); }

summary () {
    [ "$skipped" -eq 0 ] || echo "# $skipped skipped"
    echo "$passed passed, $failed failed"
    [ "$failed" -eq 0 ]
}

stop_daemon () {
    if [ -n "$daemon_pid" ] && kill -0 "$daemon_pid" 2>/dev/null; then
        kill -TERM "$daemon_pid" 2>/dev/null
        for _ in $(seq 100); do kill -0 "$daemon_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$daemon_pid" 2>/dev/null
    fi
    [ -z "$daemon_pid" ] || wait "$daemon_pid" 2>/dev/null
    daemon_pid=""
}

#  ping ENDPOINT KEY [TIMEOUT_MS]: whether a server answers there with KEY.
ping_server () {
    "$cli" --server "$1" --api-key "$2" --timeout "${3:-300}" ping >/dev/null 2>&1
}

#  daemon_endpoint LOG: the first tcp:// endpoint a faissproxyd wrote to
#  LOG ("faissproxyd listening on ENDPOINT", its stdout), or nothing yet.
daemon_endpoint () {
    sed -n 's|^faissproxyd listening on \(tcp://.*\)$|\1|p' "$1" 2>/dev/null | head -n 1
}

#  start_daemon KEY COMMAND… — runs COMMAND (a faissproxyd command line) in
#  the background with every @PORT@ in it, and in "$work"/*.in files
#  (copied without .in), replaced by "*": the daemon binds a port the
#  system picks and prints the endpoint it got, which is read from its
#  stdout (so that it works through wrappers, chroots and containers);
#  then waits until a server answers a ping with KEY there. Sets $port
#  and $endpoint. Its output goes to "$work/daemon.log". Returns 1 if the
#  daemon exits or does not answer within 30 s.
start_daemon () {
    local key=$1
    shift
    local in args=()
    for in in "$work"/*.in; do
        [ -f "$in" ] && sed "s/@PORT@/*/g" "$in" > "${in%.in}"
    done
    for arg in "$@"; do args+=("${arg//@PORT@/*}"); done
    : >"$work/daemon.log"
    "${args[@]}" >"$work/daemon.log" 2>&1 &
    daemon_pid=$!
    endpoint=""
    port=""
    for _ in $(seq 300); do
        kill -0 "$daemon_pid" 2>/dev/null || break
        [ -n "$endpoint" ] || endpoint=$(daemon_endpoint "$work/daemon.log")
        if [ -n "$endpoint" ] && ping_server "$endpoint" "$key" 200; then
            port=${endpoint##*:}
            return 0
        fi
        sleep 0.1
    done
    stop_daemon
    return 1
}
