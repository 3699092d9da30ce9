#!/usr/bin/env bash
#  bench.sh BUILD_DIR — the fixed benchmark suite behind `make bench`.
#
#  Starts its own faissproxyd on a loopback port the system picks
#  (tests/daemon_lib.sh's start_daemon) with a generated key and a temporary data directory, runs the suite of
#  docs/BENCHMARKS.md with BUILD_DIR/bin/fpx-loadtest (remote and
#  in-process side by side in each run), then writes
#  BUILD_DIR/bench/results.json and regenerates docs/BENCHMARKS.md
#  (scripts/bench_report.py). Every run is bounded by a timeout; the
#  whole suite takes a few minutes on 2 cores.
#
#  FPX_BENCH_QUICK=1 runs the same suite scaled down (seconds, not
#  minutes) to check the script itself; it writes
#  BUILD_DIR/bench/quick/{results.json,BENCHMARKS.md} and leaves
#  docs/BENCHMARKS.md alone.
set -u

build=${1:?usage: scripts/bench.sh BUILD_DIR}
build=$(cd "$build" && pwd) || exit 2
root=$(cd "$(dirname "$0")/.." && pwd)
daemon="$build/bin/faissproxyd"
cli="$build/bin/faissproxy"
loadtest="$build/bin/fpx-loadtest"
python=/usr/bin/python3
quick=${FPX_BENCH_QUICK:-0}

if [ "$quick" = 1 ]; then
    out="$build/bench/quick"
    doc="$out/BENCHMARKS.md"
    nb_big=20000; nb_add_rows=100000; reqs_single=2000; reqs_batch=5; secs=1; ivf=IVF256,Flat
else
    out="$build/bench"
    doc="$root/docs/BENCHMARKS.md"
    nb_big=100000; nb_add_rows=1000000; reqs_single=10000; reqs_batch=10; secs=5; ivf=IVF1024,Flat
fi
raw="$out/raw"
#  Searches alternate remote and in-process this many times (fpx-loadtest
#  --rounds), so that a slow spell of a shared machine falls on both.
rounds=5
run_timeout=900

for f in "$daemon" "$cli" "$loadtest"; do
    [ -x "$f" ] || { echo "bench: $f is missing; run make all first" >&2; exit 1; }
done
rm -rf "$raw"
mkdir -p "$raw"
work=$(mktemp -d /tmp/fpx-bench.XXXXXX)
server_pid=""
port=""
fsync_mode=batch
key=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')

log () { printf 'bench: %s\n' "$*" >&2; }

stop_server () {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null
        for _ in $(seq 100); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$server_pid" 2>/dev/null
        wait "$server_pid" 2>/dev/null
    fi
    server_pid=""
}

cleanup () {
    stop_server
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

#  A fresh server with an empty data directory, on a port the system
#  picks: the daemon prints the endpoint it bound (tests/daemon_lib.sh).
. "$root/tests/daemon_lib.sh"
start_server () {
    rm -rf "$work/data"
    mkdir -p "$work/data"
    if ! start_daemon "$key" "$daemon" --bind "tcp://127.0.0.1:@PORT@" --api-key "bench:$key" \
            --data-dir "$work/data" --fsync "$fsync_mode" --log-level warn; then
        log "cannot start faissproxyd"
        cat "$work/daemon.log" >&2
        exit 1
    fi
    server_pid=$daemon_pid
    daemon_pid=""
    log "faissproxyd pid $server_pid on $endpoint"
    common=(--server "$endpoint" --api-key "$key")
}

#  Resident and peak memory of the server, in bytes: "RSS HWM".
server_memory () {
    awk '/^VmRSS:/ { rss = $2 * 1024 } /^VmHWM:/ { hwm = $2 * 1024 }
         END { printf "%d %d\n", rss, hwm }' "/proc/$server_pid/status"
}

#  lt NAME ARGS… — one fpx-loadtest run: JSON to raw/NAME.json, the
#  command (key and port as $KEY and $PORT) to raw/NAME.cmd.
lt () {
    local name=$1
    shift
    local shown="fpx-loadtest"
    for arg in "$@"; do
        arg=${arg//$key/\$KEY}
        [ -n "$port" ] && arg=${arg//127.0.0.1:$port/127.0.0.1:\$PORT}
        case $arg in *" "*) arg="'$arg'" ;; esac
        shown="$shown $arg"
    done
    echo "$shown --json" >"$raw/$name.cmd"
    log "$name: $shown"
    local t0=$SECONDS load0
    load0=$(cut -d' ' -f1 /proc/loadavg)
    timeout --kill-after=10 "$run_timeout" "$loadtest" "$@" --json \
        >"$raw/$name.out" 2>"$raw/$name.err"
    local rc=$?
    echo "$load0 $(cut -d' ' -f1 /proc/loadavg)" >"$raw/$name.load"
    tail -n 1 "$raw/$name.out" >"$raw/$name.json"
    if [ "$rc" -ne 0 ]; then
        log "$name failed (exit $rc): $(tail -n 3 "$raw/$name.err" | tr '\n' ' ')"
        echo "$rc" >"$raw/$name.failed"
    fi
    log "$name: $((SECONDS - t0)) s"
}

json_field () {    #  json_field NAME FIELD
    "$python" -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' \
        "$raw/$1.json" "$2" 2>/dev/null
}

machine_info () {
    {
        echo "cpu=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
        echo "nproc=$(nproc)"
        echo "memory=$(free -m | awk '/^Mem:/ { print $2 " MiB total, " $7 " MiB available" }')"
        echo "kernel=$(uname -sr)"
        echo "cpuidle=$(cat /sys/devices/system/cpu/cpuidle/current_driver 2>/dev/null || echo none)"
        echo "loadavg=$(cut -d' ' -f1-3 /proc/loadavg)"
        echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
        echo "commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
        echo "dirty=$(git -C "$root" status --porcelain 2>/dev/null | grep -c .)"
        echo "zmq=$(dpkg-query -W -f '${Version}' libzmq5 2>/dev/null || echo ?)"
        echo "faiss=$(dpkg-query -W -f '${Version}' libfaiss-dev 2>/dev/null || echo ?)"
    } >"$raw/machine.$1"
}

started=$SECONDS
machine_info start
start_server

#  1. The floor: a raw DEALER/ROUTER echo with the request and reply
#     sizes of items 2, 3, 4 and 5.
lt floor_query     --echo --payload 512 --reply-payload 120 --clients 1 --requests "$reqs_single"
lt floor_batch     --echo --payload 512000 --reply-payload 120000 --clients 1 --requests $((reqs_batch * 20))
lt floor_add       --echo --payload 5120000 --reply-payload 16 --clients 1 --pipeline 4 --requests $((nb_add_rows / 10000 > 10 ? nb_add_rows / 10000 : 10))
lt floor_pipelined --echo --payload 128 --reply-payload 120 --clients 2 --pipeline 32 --duration "$secs"

#  2. Single-query search, Flat 10k x 128, k=10.
lt single "${common[@]}" --factory Flat --dim 128 --nb 10000 --nq 1 --k 10 --clients 1 \
    --requests "$reqs_single" --inprocess --rounds "$rounds"
#  2, diagnosis: the same with no core ever idle (--keep-awake), to show
#  the share of the virtual machine's wake-ups of idle vCPUs.
lt single_awake "${common[@]}" --factory Flat --dim 128 --nb 10000 --nq 1 --k 10 --clients 1 \
    --requests "$reqs_single" --inprocess --rounds "$rounds" --keep-awake

#  3. Batch search, nq=1000. The HNSW index is kept for item 6.
lt batch_flat "${common[@]}" --factory Flat --dim 128 --nb "$nb_big" --nq 1000 --k 10 \
    --clients 1 --requests "$reqs_batch" --inprocess --rounds "$rounds"
lt batch_hnsw "${common[@]}" --factory HNSW32 --dim 128 --nb "$nb_big" --nq 1000 --k 10 \
    --clients 1 --requests $((reqs_batch * 2)) --inprocess --rounds "$rounds" --keep
#  An IVF request takes ~15 ms: 100 of them, for a p50 that holds still.
lt batch_ivf "${common[@]}" --factory "$ivf" --dim 128 --nb "$nb_big" --nq 1000 --k 10 \
    --clients 1 --requests $((reqs_batch * 10)) --inprocess --rounds "$rounds"

#  5. Pipelined tiny searches (d=32, 1k vectors): the most requests/s.
lt pipelined "${common[@]}" --factory Flat --dim 32 --nb 1000 --nq 1 --k 10 --clients 2 \
    --pipeline 32 --duration "$secs" --inprocess --rounds "$rounds"

#  6. 1, 4, 16, 64 concurrent synchronous clients on the HNSW index.
hnsw=$(json_field batch_hnsw index)
if [ -n "$hnsw" ]; then
    for clients in 1 4 16 64; do
        lt "clients_$clients" "${common[@]}" --index "$hnsw" --nq 1 --k 10 --clients "$clients" \
            --duration "$secs" --inprocess --rounds "$rounds"
    done
    "$cli" --server "$endpoint" --api-key "$key" drop "$hnsw" >/dev/null 2>&1
else
    log "no HNSW index from batch_hnsw: skipping item 6"
fi
stop_server

#  8. Read throughput of IndexReplicas over three servers against one
#     server, the same client load (the Python drop-in; the script starts
#     its own three servers and prints its setup and result here).
replicas_cmd="FAISS_PROXY_LIB=BUILD/lib/libfaissproxy.so python3 scripts/bench_replicas.py BUILD $quick"
echo "$replicas_cmd" >"$raw/replicas.cmd"
log "replicas: $replicas_cmd"
t0=$SECONDS
load0=$(cut -d' ' -f1 /proc/loadavg)
FAISS_PROXY_LIB="$build/lib/libfaissproxy.so" timeout --kill-after=10 "$run_timeout" \
    "$python" "$root/scripts/bench_replicas.py" "$build" "$quick" \
    >"$raw/replicas.out" 2>"$raw/replicas.err"
rc=$?
echo "$load0 $(cut -d' ' -f1 /proc/loadavg)" >"$raw/replicas.load"
tail -n 1 "$raw/replicas.out" >"$raw/replicas.json"
grep '^bench: ' "$raw/replicas.err" >&2
if [ "$rc" -ne 0 ]; then
    log "replicas failed (exit $rc): $(tail -n 3 "$raw/replicas.err" | tr '\n' ' ')"
    echo "$rc" >"$raw/replicas.failed"
fi
log "replicas: $((SECONDS - t0)) s"

#  --warm-mb for an add of N rows: four times its bytes, more than the
#  index's growth touches (a vector that doubles: its final size, and
#  about as much again for the arrays it outgrew). Touched just before
#  each timed run, so that remote and in-process grow into memory in the
#  same state (fpx-loadtest --help).
warm_mb () { echo $(($1 * 128 * 4 * 4 / 1048576)); }

#  4 and 7. Bulk add on a fresh server into an anonymous index, in memory
#  as the in-process baseline (and as the Python drop-in's
#  faiss.IndexFlatL2(d)): a durable index also writes every byte to its
#  log, which item 4b measures. The server's memory is read while the
#  index still exists, right after the adds (--after-remote runs while
#  the connection that owns it is open); ntotal is what the index holds.
start_server
read -r rss_before hwm_before < <(server_memory)
export FPX_BENCH_STATUS="$work/status_after" FPX_BENCH_SERVER_PID="$server_pid"
rm -f "$FPX_BENCH_STATUS"
lt bulk_add "${common[@]}" --workload add --factory Flat --dim 128 --nb 0 --nq 10000 \
    --clients 1 --pipeline 4 --requests $((nb_add_rows / 10000)) --anonymous \
    --warm-mb "$(warm_mb "$nb_add_rows")" --inprocess \
    --after-remote 'cat /proc/$FPX_BENCH_SERVER_PID/status >$FPX_BENCH_STATUS'
read -r rss_after hwm_after < <(awk '/^VmRSS:/ { rss = $2 * 1024 } /^VmHWM:/ { hwm = $2 * 1024 }
    END { printf "%d %d\n", rss, hwm }' "$FPX_BENCH_STATUS" 2>/dev/null)
ntotal=$(json_field bulk_add ntotal)
printf '{"rss_before":%s,"hwm_before":%s,"rss_after":%s,"hwm_after":%s,"ntotal":%s,"dim":128}\n' \
    "$rss_before" "$hwm_before" "${rss_after:-0}" "${hwm_after:-0}" "${ntotal:-0}" >"$raw/memory.json"
stop_server

#  4b. The cost of durability: the same adds on a named index under each
#  --fsync mode.
add_reqs=$((nb_add_rows / 40000 > 4 ? nb_add_rows / 40000 : 4))
for fsync_mode in never batch always; do
    start_server
    lt "fsync_$fsync_mode" "${common[@]}" --workload add --factory Flat --dim 128 --nb 0 \
        --nq 10000 --clients 1 --pipeline 4 --requests "$add_reqs" \
        --warm-mb "$(warm_mb $((add_reqs * 10000)))"
    stop_server
done
fsync_mode=batch

machine_info end
echo "$((SECONDS - started))" >"$raw/elapsed_s"
"$python" "$root/scripts/bench_report.py" "$raw" "$out/results.json" "$doc" "$quick" || exit 1
log "wrote $out/results.json and $doc in $((SECONDS - started)) s"
failed=$(ls "$raw"/*.failed 2>/dev/null | wc -l)
[ "$failed" -eq 0 ] || { log "$failed run(s) failed; see $raw/*.err"; exit 1; }
