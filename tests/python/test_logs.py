"""test_logs.py — the daemon's log as an operator reads it.

A server of its own with --log-level debug --log-format json; a child
process (remote mode through the environment) creates, fills and searches
an index and runs a k-means on too few points (FAISS prints a warning);
the CLI asks for an index that does not exist and pings with a wrong key.
Then every line the daemon wrote is one JSON object, except the warnings
about its own command line printed before the options are read:
- a request line per request with tenant, index, opcode, status and the
  time queued and running; a failure carries its status and message;
- the failed login at warn;
- FAISS's own warning (its fprintf to stderr) inside the log at warn,
  with the tenant, opcode and request that were running, not raw.
The same requests in text format give "request tenant=… index=…" lines.
"""
import json
import os
import subprocess
import sys

import numpy as np

import fpx_server

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SHIM = os.path.join(ROOT, "python-shim")

CLIENT = r"""
import numpy as np
import faiss_proxy as faiss
rs = np.random.RandomState(3)
xb = rs.rand(200, 8).astype("float32")
index = faiss.IndexFlatL2(8)
index.add(xb)
index.search(xb[:5], 3)
km = faiss.Kmeans(8, 16, niter=2)
km.train(xb[:100])
"""


def _run_client(srv):
    env = srv.env(PYTHONPATH=SHIM)
    out = subprocess.run([sys.executable, "-c", CLIENT], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    cli = os.path.join(os.path.dirname(fpx_server.daemon_path()), "faissproxy")
    missing = subprocess.run([cli, "--server", srv.endpoint, "--api-key", srv.key, "describe",
                              "no_such_index_here"], capture_output=True, text=True, timeout=60)
    assert missing.returncode != 0
    wrong = subprocess.run([cli, "--server", srv.endpoint, "--api-key", "not-the-key", "ping"],
                           capture_output=True, text=True, timeout=60)
    assert wrong.returncode != 0


def _serve(fmt):
    srv = fpx_server.Server(workers=2, extra_args=["--log-level", "debug",
                                                   "--log-format", fmt]).start()
    try:
        _run_client(srv)
    finally:
        rc = srv.stop()
        log = srv.log()
        srv.cleanup()
    assert rc == 0, log
    return log


def test_json_log():
    log = _serve("json")
    records, plain = [], []
    for line in log.splitlines():
        if line.startswith("{"):
            records.append(json.loads(line))
        elif line.strip():
            plain.append(line)
    #  Only the command line's own warning (printed before the options
    #  are applied) and the endpoints announced on stdout (not log lines:
    #  what launchers read, in every --log-format) are not JSON.
    assert all(line.startswith(("faissproxyd: warning: --api-key", "faissproxyd listening on "))
               for line in plain), plain
    assert sum(line.startswith("faissproxyd listening on ") for line in plain) == 1, plain
    assert all({"time", "level", "message"} <= set(r) for r in records)

    requests = [r for r in records if r["message"] == "request"]
    by_opcode = {}
    for r in requests:
        by_opcode.setdefault(r["opcode"], []).append(r)
        assert r["tenant"] == "pytest"
        assert r["level"] == "debug"
        assert r["queue_us"] >= 0 and r["run_us"] >= 0
        assert isinstance(r["request_id"], int) and r["conn"] >= 1
    for opcode in ("construct", "add", "search", "kmeans", "describe"):
        assert opcode in by_opcode, sorted(by_opcode)
    assert all(r["status"] == 0 and r["status_name"] == "FPX_OK"
               for r in by_opcode["add"] + by_opcode["search"])
    #  The search names the index the add filled.
    assert by_opcode["search"][0]["index"] == by_opcode["add"][0]["index"] != ""
    missing = [r for r in requests if r["index"] == "no_such_index_here"]
    assert missing and missing[0]["status_name"] == "FPX_ENOTFOUND"
    assert "no_such_index_here" in missing[0]["error"]

    logins = [r for r in records if "authentication failed" in r["message"]]
    assert logins and logins[0]["level"] == "warn"
    faiss_lines = [r for r in records if r["message"].startswith("FAISS: WARNING clustering")]
    assert faiss_lines and faiss_lines[0]["level"] == "warn", records[-10:]
    #  Named with the request that was running when FAISS printed it.
    assert faiss_lines[0]["tenant"] == "pytest" and faiss_lines[0]["opcode"] == "kmeans"


def test_text_log():
    log = _serve("text")
    lines = [line for line in log.splitlines() if " debug request " in line]
    assert any(" opcode=search " in line and " status=FPX_OK " in line and "tenant=pytest" in line
               for line in lines), lines
    assert any("index=no_such_index_here" in line and "status=FPX_ENOTFOUND: " in line
               for line in lines), lines
    assert any(" warn FAISS (tenant=pytest index=- opcode=kmeans id=" in line
               and "): WARNING clustering" in line for line in log.splitlines()), log
    assert not any(line.startswith("WARNING clustering") for line in log.splitlines())
