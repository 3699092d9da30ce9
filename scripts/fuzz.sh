#!/usr/bin/env bash
#  fuzz.sh ENGINE_DIR ASAN_BUILD — the long fuzz run of `make fuzz`
#  (docs/FUZZING.md):
#  1. ENGINE_DIR/fuzz_decoder (libFuzzer, ASan+UBSan) for FUZZ_DECODER_RUNS
#     executions (default 10 000 000) from the generated seed corpus;
#  2. ENGINE_DIR/fuzz_server (a real server in-process) for FUZZ_SERVER_RUNS
#     (default 5 000);
#  3. ENGINE_DIR/fuzz_storage, fuzz_upload, fuzz_registry (server parts
#     driven directly: log and snapshot recovery, upload checks, the
#     registry) for FUZZ_DIRECT_RUNS each (default 100 000);
#  4. ASAN_BUILD/bin/fpx-fuzz-live for FUZZ_LIVE_REQUESTS requests (default
#     1 000 000) against ASAN_BUILD/bin/faissproxyd started on a temporary
#     data directory and a port the system picks (--endpoint-file), whose VmRSS must stay under FUZZ_RSS_MAX_MB (default
#     4096); the daemon is then stopped with SIGTERM and must exit 0 with
#     no sanitizer report (leaks included).
#  FUZZ_PARTS (default "decoder server storage upload registry live") picks parts; FUZZ_SERVER_SKIP
#  and FUZZ_LIVE_SKIP (opcode names, comma-separated) fuzz around a known
#  crash; FUZZ_SEED.
#  Crashing inputs go to build/fuzz/findings/. Prints the figures; exits
#  non-zero if any part failed.
set -u
engine=${1:?usage: scripts/fuzz.sh ENGINE_DIR ASAN_BUILD}
asan=${2:?usage: scripts/fuzz.sh ENGINE_DIR ASAN_BUILD}
parts=${FUZZ_PARTS:-decoder server storage upload registry live}
direct_runs=${FUZZ_DIRECT_RUNS:-100000}
decoder_runs=${FUZZ_DECODER_RUNS:-10000000}
server_runs=${FUZZ_SERVER_RUNS:-5000}
live_requests=${FUZZ_LIVE_REQUESTS:-1000000}
rss_max_mb=${FUZZ_RSS_MAX_MB:-4096}
seed=${FUZZ_SEED:-1}
key=fuzz-key-8c1f2e             # FPX_FUZZ_KEY in tests/fuzz/fuzz_common.h
root=$(cd "$(dirname "$0")/.." && pwd)
findings=$root/build/fuzz/findings
work=$(mktemp -d "${TMPDIR:-/tmp}/fpx-fuzz.XXXXXX")
mkdir -p "$findings"
export LSAN_OPTIONS=suppressions=$root/tests/lsan.supp:print_suppressions=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
#  The server targets run FAISS in-process: idle OpenMP threads sleep, as
#  in faissproxyd (tests/run.sh says why).
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
failed=0
summary=()

daemon_pid=
cleanup () {
    [ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

#  libFuzzer target NAME RUNS MAX_LEN: prints its figures from -print_final_stats.
run_engine () {
    local name=$1 runs=$2 corpus=$work/corpus-$1
    mkdir -p "$corpus"
    cp "$root/$asan/fuzz/corpus/$name"/* "$corpus/"
    [ -d "$root/tests/fuzz/regressions/$name" ] && cp "$root/tests/fuzz/regressions/$name"/* "$corpus/" 2>/dev/null
    echo "# fuzz: $name, $runs executions"
    local t0=$(date +%s.%N)
    ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 \
    FPX_FUZZ_SKIP=${FUZZ_SERVER_SKIP:-} \
    "$root/$engine/fuzz_$name" -runs="$runs" -seed="$seed" -max_len="$3" -rss_limit_mb=4096 \
        -timeout=60 -print_final_stats=1 -artifact_prefix="$findings/$name-" "$corpus" \
        > "$work/$name.log" 2>&1
    local rc=$? t1=$(date +%s.%N)
    grep -E '^(#[0-9]+ +(pulse|DONE))|^stat::|^Done|ERROR|SUMMARY|^==[0-9]+==|Test unit written' "$work/$name.log" | tail -n 25
    local execs=$(grep -oE '^stat::number_of_executed_units:[[:space:]]+[0-9]+' "$work/$name.log" | grep -oE '[0-9]+$')
    local rss=$(grep -oE '^stat::peak_rss_mb:[[:space:]]+[0-9]+' "$work/$name.log" | grep -oE '[0-9]+$')
    local secs=$(awk "BEGIN { printf \"%.0f\", $t1 - $t0 }")
    local rate=$(awk "BEGIN { printf \"%.0f\", ${execs:-0} / ($t1 - $t0) }")
    if [ "$rc" -ne 0 ] || [ "${execs:-0}" -lt "$runs" ]; then
        failed=1
        cp "$work/$name.log" "$findings/$name.log"
        summary+=("FAIL $name: exit $rc after ${execs:-?} executions (log: build/fuzz/findings/$name.log)")
    else
        summary+=("ok $name: $execs executions in $secs s ($rate/s), peak RSS ${rss:-?} MiB, no crash, no leak")
    fi
}

case " $parts " in *" decoder "*) run_engine decoder "$decoder_runs" 131072 ;; esac
case " $parts " in *" server "*) run_engine server "$server_runs" 131072 ;; esac
for part in storage upload registry; do
    case " $parts " in *" $part "*) run_engine "$part" "$direct_runs" 131072 ;; esac
done

case " $parts " in *" live "*)
    mkdir -p "$work/data"
    #  A port the system picks, read back from --endpoint-file.
    ASAN_OPTIONS=detect_leaks=1:log_path=$work/daemon-asan \
    "$root/$asan/bin/faissproxyd" --bind "tcp://127.0.0.1:*" --endpoint-file "$work/endpoint" \
        --data-dir "$work/data" --api-key "fuzz:$key" \
        --workers 2 --fsync never --log-level error --default-tenant-limits deadline_ms=5000 \
        --auth-delay-max-ms 5 > "$work/daemon.log" 2>&1 &
    daemon_pid=$!
    for _ in $(seq 600); do
        [ -s "$work/endpoint" ] || ! kill -0 "$daemon_pid" 2>/dev/null && break
        sleep 0.1
    done
    endpoint=$(head -n 1 "$work/endpoint" 2>/dev/null)
    echo "# fuzz: live, $live_requests requests against an ASan faissproxyd on ${endpoint:-(none)}"
    t0=$(date +%s.%N)
    "$root/$asan/bin/fpx-fuzz-live" --endpoint "$endpoint" --key "$key" --pid "$daemon_pid" \
        --requests "$live_requests" --seed "$seed" --rss-max-mb "$rss_max_mb" \
        ${FUZZ_LIVE_SKIP:+--skip "$FUZZ_LIVE_SKIP"} --artifacts "$findings/live" \
        2>&1 | grep --line-buffered -v '^WARNING clustering' | tee "$work/live.log"
    live_rc=${PIPESTATUS[0]}
    kill -TERM "$daemon_pid" 2>/dev/null
    wait "$daemon_pid"
    daemon_rc=$?
    daemon_pid=
    reports=$(cat "$work"/daemon-asan* 2>/dev/null)
    line=$(grep -E '^fpx-fuzz-live: [0-9]+ requests, ' "$work/live.log" | tail -n 1)
    if [ "$live_rc" -ne 0 ] || [ "$daemon_rc" -ne 0 ] || [ -n "$reports" ]; then
        failed=1
        cp "$work/daemon.log" "$findings/live-daemon.log"
        [ -n "$reports" ] && printf '%s\n' "$reports" > "$findings/live-daemon-asan.log"
        tail -n 30 "$work/daemon.log"
        printf '%s\n' "$reports" | head -n 60
        summary+=("FAIL live: fuzzer exit $live_rc, daemon exit $daemon_rc${reports:+, sanitizer report in build/fuzz/findings/live-daemon-asan.log}; ${line#fpx-fuzz-live: }")
    else
        summary+=("ok live: ${line#fpx-fuzz-live: }; daemon exited 0, no sanitizer report")
    fi
    ;;
esac

echo "# fuzz summary"
printf '%s\n' "${summary[@]}"
exit $failed
