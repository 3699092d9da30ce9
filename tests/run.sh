#!/usr/bin/env bash
#  run.sh BUILD_DIR — runs every BUILD_DIR/tests/test_* program against the
#  daemon BUILD_DIR/bin/faissproxyd (exported as FPX_DAEMON), sums their
#  "N passed, N failed" lines and prints the total as the last line, alone.
#  A program that crashes, times out, exits non-zero without reporting a
#  failure, or prints no summary counts as one more failure. Exits non-zero
#  if anything failed.
#  Environment: FPX_TEST_TIMEOUT (seconds per program, default 600),
#  FPX_TESTS (space-separated program names to run, default all).
set -u

build=${1:?usage: tests/run.sh BUILD_DIR}
build=$(cd "$build" && pwd) || exit 2
export FPX_DAEMON="$build/bin/faissproxyd"
per_program_timeout=${FPX_TEST_TIMEOUT:-600}

if [ ! -x "$FPX_DAEMON" ]; then
    echo "run.sh: $FPX_DAEMON is missing; build it first" >&2
fi

#  Sanitizer builds: fail on the first report, keep leak checking on.
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=0:detect_leaks=1}
#  FAISS's own leaks on its error paths (tests/lsan.supp says which).
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$(cd "$(dirname "$0")" && pwd)/lsan.supp:print_suppressions=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
#  The fuzz targets run a server in-process: libgomp's idle threads must
#  sleep as faissproxyd's do (it sets this for itself), or under load a
#  k-means of 256 points spins past the targets' 5 s deadline.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}

total_passed=0
total_failed=0
programs_failed=0
started=$(date +%s.%N)

shopt -s nullglob
programs=()
for path in "$build"/tests/test_*; do
    [ -f "$path" ] && [ -x "$path" ] || continue
    name=$(basename "$path")
    if [ -n "${FPX_TESTS:-}" ] && [[ " $FPX_TESTS " != *" $name "* ]]; then
        continue
    fi
    programs+=("$path")
done

if [ ${#programs[@]} -eq 0 ]; then
    echo "run.sh: no test programs in $build/tests" >&2
    echo "0 passed, 1 failed"
    exit 1
fi

for path in "${programs[@]}"; do
    name=$(basename "$path")
    echo "# --- $name"
    log=$(mktemp)
    t0=$(date +%s.%N)
    timeout --kill-after=10 "$per_program_timeout" "$path" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    t1=$(date +%s.%N)
    summary=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -n 1)
    if [ -n "$summary" ]; then
        passed=${summary%% passed*}
        failed=${summary#*, }
        failed=${failed%% failed}
    else
        #  Cut short: count the tests it did report.
        passed=$(grep -c '^ok ' "$log")
        failed=$(grep -c '^FAIL ' "$log")
    fi
    note=""
    if [ -z "$summary" ]; then
        failed=$((failed + 1))
        note=" (no summary line)"
    elif [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then
        failed=1
        note=" (exit status $rc with no failed test)"
    fi
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        note="$note (timed out after ${per_program_timeout} s)"
    elif [ "$rc" -gt 128 ]; then
        note="$note (killed by signal $((rc - 128)))"
    fi
    rm -f "$log"
    if [ "$rc" -ne 0 ] || [ "$failed" -ne 0 ]; then
        programs_failed=$((programs_failed + 1))
    fi
    total_passed=$((total_passed + passed))
    total_failed=$((total_failed + failed))
    printf '# %s: exit %d, %d passed, %d failed, %.1f s%s\n' "$name" "$rc" "$passed" "$failed" \
        "$(awk "BEGIN { print $t1 - $t0 }")" "$note"
done

printf '# %d programs, %d failed, %.1f s\n' "${#programs[@]}" "$programs_failed" \
    "$(awk "BEGIN { print $(date +%s.%N) - $started }")"
echo "$total_passed passed, $total_failed failed"
[ "$programs_failed" -eq 0 ] && [ "$total_failed" -eq 0 ]
