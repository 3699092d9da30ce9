#!/usr/bin/python3
"""bench_replicas.py BUILD_DIR QUICK — item 8 of `make bench`: the read
throughput of IndexReplicas over three faissproxyd servers against one
server, under the same client load, through the Python drop-in.

Starts three faissproxyd on free loopback ports (7000-7999, generated key,
temporary data directories), puts the same Flat index on each (one
upload of the same vectors), then alternates, `rounds` times, a timed run
against server 0's index alone and one against
faiss_proxy.IndexReplicas of the three (FAISS's IndexReplicas: a batch
of nq queries split in three, sent at once). Each run: `threads` client
threads, each searching batches of nq queries, k = 10, back to back for
`secs` seconds. Prints one JSON line (setup, queries/s of each side over
all its rounds, their ratio) on stdout, the setup and result on stderr.
"""
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

BUILD, QUICK = os.path.abspath(sys.argv[1]), sys.argv[2] == "1"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "python-shim"))
os.environ.setdefault("FAISS_PROXY_LIB", os.path.join(BUILD, "lib", "libfaissproxy.so"))

import numpy as np                      # noqa: E402

import faiss_proxy as faiss             # noqa: E402

NSERVERS = 3
D, K = 128, 10
NB = 20000 if QUICK else 100000
NQ = 60                                 # queries per request: 20 per replica
THREADS = 4
SECS = 1.0 if QUICK else 5.0
ROUNDS = 2 if QUICK else 3


def log(text):
    print("bench: replicas: " + text, file=sys.stderr, flush=True)


def free_port():
    import random
    for port in random.sample(range(7000, 8000), 200):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port in 7000-7999")


class Daemon:
    def __init__(self, key):
        self.dir = tempfile.mkdtemp(prefix="fpx-bench-replicas.")
        self.endpoint = "tcp://127.0.0.1:%d" % free_port()
        with open(os.path.join(self.dir, "server.log"), "wb") as log_file:
            self.proc = subprocess.Popen(
                [os.path.join(BUILD, "bin", "faissproxyd"), "--bind", self.endpoint,
                 "--api-key", "bench:" + key, "--data-dir", os.path.join(self.dir, "data"),
                 "--log-level", "warn"], stdout=log_file, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL)
        for _ in range(100):
            if subprocess.run([os.path.join(BUILD, "bin", "faissproxy"), "--server",
                               self.endpoint, "--api-key", key, "--timeout", "200", "ping"],
                              capture_output=True).returncode == 0:
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("faissproxyd did not start on " + self.endpoint)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def run(index, queries, secs):
    """Queries answered per second by THREADS threads searching back to back."""
    done = [0] * THREADS
    stop = time.monotonic() + secs

    def client(t):
        while time.monotonic() < stop:
            index.search(queries[t], K)
            done[t] += NQ
    threads = [threading.Thread(target=client, args=(t, )) for t in range(THREADS)]
    t0 = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done), time.monotonic() - t0


def main():
    key = secrets.token_hex(16)
    daemons = []
    try:
        for _ in range(NSERVERS):
            daemons.append(Daemon(key))
        servers = [faiss.connect(d.endpoint, api_key=key, timeout_ms=600000) for d in daemons]
        rs = np.random.RandomState(1234)
        xb = rs.rand(NB, D).astype("float32")
        queries = [rs.rand(NQ, D).astype("float32") for _ in range(THREADS)]
        parts = []
        for srv in servers:
            with srv:
                part = faiss.IndexFlatL2(D)
            part.add(xb)
            parts.append(part)
        replicas = faiss.IndexReplicas(D)
        for part in parts:
            replicas.add_replica(part)
        single = parts[0]
        setup = ("Flat %d x %d, k = %d, %d client threads each searching batches of nq = %d "
                 "back to back, %d rounds of %.0f s per side, alternating; %d cores"
                 % (NB, D, K, THREADS, NQ, ROUNDS, SECS, os.cpu_count() or 0))
        log(setup)
        totals = {"single": [0, 0.0], "replicas": [0, 0.0]}
        run(single, queries, min(SECS, 1.0))            # warm both paths
        run(replicas, queries, min(SECS, 1.0))
        for _ in range(ROUNDS):
            for name, index in (("single", single), ("replicas", replicas)):
                count, elapsed = run(index, queries, SECS)
                totals[name][0] += count
                totals[name][1] += elapsed
        qps = {name: count / elapsed for name, (count, elapsed) in totals.items()}
        result = {"setup": setup, "servers": NSERVERS, "nb": NB, "d": D, "k": K, "nq": NQ,
                  "threads": THREADS, "secs": SECS, "rounds": ROUNDS,
                  "cores": os.cpu_count() or 0,
                  "single_qps": qps["single"], "replicas_qps": qps["replicas"],
                  "ratio": qps["replicas"] / qps["single"] if qps["single"] else None}
        log("one server %.0f queries/s, IndexReplicas over %d servers %.0f queries/s: "
            "ratio %.2f" % (qps["single"], NSERVERS, qps["replicas"], result["ratio"] or 0))
        print(json.dumps(result))
    finally:
        for d in daemons:
            d.stop()


if __name__ == "__main__":
    main()
