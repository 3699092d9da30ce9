#!/usr/bin/env bash
#  bench_budget.sh [BUILD_DIR] — eviction and reload times under
#  --memory-budget-mb for two 1M x 128 Flat indexes (512 MiB serialized
#  each) and a budget that holds one: every search of the other evicts one
#  and loads the other (docs/OPERATIONS.md, "Sizing memory").
#  Needs ~3 GiB of memory and ~2 GiB of disk under /tmp; run it on a quiet
#  machine. Prints one line per eviction and load, as the server logs them.
#  FPX_BENCH_N: vectors per index (default 1000000); the budget holds one.
set -eu
build=${1:-build}
n=${FPX_BENCH_N:-1000000}
budget_mb=$((n * 128 * 4 * 6 / 5 / 1048576 + 1))
root=$(cd "$(dirname "$0")/.." && pwd)
daemon="$root/$build/bin/faissproxyd"
work=$(mktemp -d /tmp/fpx-bench-budget-XXXXXX)
port=$((5600 + RANDOM % 400))
key=bench-budget-key-0123456789
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$work"' EXIT
FAISS_PROXY_API_KEY=$key OMP_WAIT_POLICY=PASSIVE "$daemon" --bind "tcp://127.0.0.1:$port" \
    --data-dir "$work/data" --memory-budget-mb "$budget_mb" --log-level debug --workers 2 \
    2> "$work/log" &
pid=$!
FAISS_PROXY_LIB="$root/$build/lib/libfaissproxy.so" PYTHONPATH="$root/python-shim" \
/usr/bin/python3 - "tcp://127.0.0.1:$port" "$key" "$n" <<'PY'
import sys, time
import numpy as np
import faiss_proxy as faiss
faiss.configure(server=sys.argv[1], api_key=sys.argv[2], timeout_ms=600000)
for _ in range(100):
    try:
        faiss.list_indexes(); break
    except Exception:
        time.sleep(0.1)
d, n = 128, int(sys.argv[3])
chunk = min(n, 100_000)
rng = np.random.default_rng(1)
xq = rng.random((1, d), dtype=np.float32)
for name in ("a", "b"):
    index = faiss.create_index(name, d, "Flat")
    for i in range(0, n, chunk):
        index.add(rng.random((chunk, d), dtype=np.float32))
#  b's add pushed a out (a snapshot of its logged adds, then free).
for name in ("a", "b", "a", "b"):
    t0 = time.monotonic()
    faiss.open_index(name).search(xq, 1)
    print(f"search of evicted {name}: {time.monotonic() - t0:.2f} s (load + search)")
PY
echo "budget $budget_mb MiB, two Flat indexes of $n x 128"
grep -E "evicted|loaded .* back" "$work/log" | sed -E 's/^.*(evicted|loaded)/\1/'
