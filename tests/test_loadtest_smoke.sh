#!/usr/bin/env bash
#  test_loadtest_smoke.sh BUILD_DIR — CI smoke test of fpx-loadtest.
#
#  Starts its own faissproxyd on a loopback port the system picks with a
#  generated key and a temporary data directory, runs fpx-loadtest for a
#  few hundred requests in several modes (sync, pipelined, open loop,
#  add, mixed with two tenants, --inprocess, --rounds, --keep-awake, the raw
#  echo), and checks that each run's last stdout line is JSON with the
#  promised fields and zero errors. Checks no timing. Prints "N passed, M failed" last, like
#  tests/run.sh's programs; exits non-zero on any failure.
set -u

build=${1:?usage: tests/test_loadtest_smoke.sh BUILD_DIR}
build=$(cd "$build" && pwd) || exit 2
daemon="$build/bin/faissproxyd"
cli="$build/bin/faissproxy"
loadtest="$build/bin/fpx-loadtest"
python=/usr/bin/python3

passed=0
failed=0
work=$(mktemp -d /tmp/fpx-lt-smoke.XXXXXX)
server_pid=""

cleanup () {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$server_pid" 2>/dev/null
        wait "$server_pid" 2>/dev/null
    fi
    rm -rf "$work"
}
trap cleanup EXIT

for f in "$daemon" "$cli" "$loadtest"; do
    if [ ! -x "$f" ]; then
        echo "# $f is missing; build it first (make all)" >&2
        echo "0 passed, 1 failed"
        exit 1
    fi
done

key=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
tenant2_key=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')

#  A port the system picks, which the daemon prints (tests/daemon_lib.sh).
. "$(dirname "$0")/daemon_lib.sh"
start_server () {
    mkdir -p "$work/data"
    start_daemon "$key" "$daemon" --bind "tcp://127.0.0.1:@PORT@" --api-key "smoke:$key" \
        --api-key "smoke2:$tenant2_key" --data-dir "$work/data" --log-level warn || return 1
    server_pid=$daemon_pid
    daemon_pid=""
}

if ! start_server; then
    echo "# cannot start faissproxyd" >&2
    cat "$work/daemon.log" >&2
    echo "0 passed, 1 failed"
    exit 1
fi

#  check NAME EXPECTED_MODES ARGS… — runs fpx-loadtest, checks its JSON.
check () {
    local name=$1 modes=$2
    shift 2
    local out="$work/$name.out"
    timeout --kill-after=10 120 "$loadtest" "$@" --json >"$out" 2>"$work/$name.err"
    local rc=$?
    local verdict
    verdict=$(tail -n 1 "$out" | "$python" -c '
import json, sys
modes = sys.argv[1].split(",")
try:
    r = json.loads(sys.stdin.read())
except ValueError as e:
    print("last line is not JSON: %s" % e); sys.exit(0)
need = ["qps", "p50_us", "p90_us", "p99_us", "p999_us", "max_us", "errors", "mb_s", "requests"]
missing = [k for k in need if k not in r]
if missing:
    print("missing fields: %s" % missing); sys.exit(0)
runs = [r] + ([r["inprocess"]] if "inprocess" in r else [])
if [x["mode"] for x in runs] != modes:
    print("modes %s, expected %s" % ([x["mode"] for x in runs], modes)); sys.exit(0)
for x in runs:
    if x["errors"] != 0:
        print("%s: %d errors" % (x["mode"], x["errors"])); sys.exit(0)
    if x["requests"] <= 0 or not x["p50_us"] > 0 or not x["p50_us"] <= x["p99_us"] <= x["max_us"]:
        print("%s: implausible figures %r" % (x["mode"], x)); sys.exit(0)
    if sys.argv[2] and x["requests"] != int(sys.argv[2]):
        print("%s: %d requests, expected %s" % (x["mode"], x["requests"], sys.argv[2])); sys.exit(0)
if r.get("keep_awake") is not (sys.argv[3] == "1"):
    print("keep_awake is %r, expected %s" % (r.get("keep_awake"), sys.argv[3] == "1")); sys.exit(0)
print("ok")
' "$modes" "${expect_requests:-}" "${expect_awake:-0}" 2>&1)
    if [ "$rc" -eq 0 ] && [ "$verdict" = "ok" ]; then
        echo "ok loadtest.$name"
        passed=$((passed + 1))
    else
        echo "FAIL loadtest.$name: exit $rc, $verdict"
        sed 's/^/#   /' "$work/$name.err" | tail -n 5
        failed=$((failed + 1))
    fi
}

common=(--server "$endpoint" --api-key "$key" --dim 32 --nb 2000 --k 10)
check search_sync      remote           "${common[@]}" --nq 1 --clients 2 --requests 300
check search_pipelined remote           "${common[@]}" --nq 1 --clients 2 --pipeline 16 --requests 600
check search_batch     remote,inprocess "${common[@]}" --nq 50 --clients 1 --requests 200 --inprocess
check search_ivf       remote,inprocess "${common[@]}" --factory IVF16,Flat --nq 4 --clients 2 --pipeline 4 --requests 300 --inprocess --data clustered
expect_requests=300 check search_rounds remote,inprocess "${common[@]}" --nq 1 --clients 1 --requests 300 --rounds 3 --inprocess
expect_awake=1 check keep_awake remote,inprocess "${common[@]}" --nq 1 --clients 1 --requests 300 --inprocess --keep-awake
check open_loop        remote           "${common[@]}" --nq 1 --clients 2 --pipeline 8 --rate 2000 --requests 300
check add_pipelined    remote,inprocess "${common[@]}" --workload add --nq 500 --clients 1 --pipeline 4 --requests 100 --inprocess
check mixed_tenants    remote           --server "$endpoint" --api-key "$key" --api-key "$tenant2_key" --tenants 2 --workload mixed:4 --dim 32 --nb 1000 --nq 2 --k 5 --clients 4 --pipeline 2 --requests 400
check echo             echo             --echo --payload 512 --clients 2 --pipeline 8 --requests 500

#  The indexes it created are gone again.
left=$("$cli" --server "$endpoint" --api-key "$key" list 2>&1 | grep -c '^fpxlt-')
if [ "$left" -eq 0 ]; then
    echo "ok loadtest.cleanup"
    passed=$((passed + 1))
else
    echo "FAIL loadtest.cleanup: $left fpxlt-* index(es) left behind"
    failed=$((failed + 1))
fi

#  Bad usage fails fast, with status 1 and no run.
if "$loadtest" --server tcp://10.1.2.3:5555 --requests 1 >/dev/null 2>&1; then
    echo "FAIL loadtest.loopback_only: a non-loopback server was accepted"
    failed=$((failed + 1))
else
    echo "ok loadtest.loopback_only"
    passed=$((passed + 1))
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
