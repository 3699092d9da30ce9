"""test_clients.py — faiss_proxy fails fast, takes host:port, and rides
through a server restart (docs/CLIENTS.md).

Each client runs in a child process (remote mode through the environment),
so this file leaves the session's own connection alone:
- no server on the port: the first call raises "connection refused" well
  before the 30 s request timeout;
- FAISS_PROXY_SERVER and configure(server=…) take "host:port"; a bad
  endpoint raises with its reason;
- a search queued behind a busy worker when the server is killed and
  restarted (same port, same data) is sent again and answers as FAISS in
  process; a k-means cut the same way raises "outcome is unknown"; an
  anonymous index of the old connection is reported gone with it.
The time bound is functional (it did not wait for the timeout).
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest

import fpx_server

HERE = os.path.dirname(os.path.abspath(__file__))
SHIM = os.path.join(os.path.dirname(os.path.dirname(HERE)), "python-shim")

SIMPLE = r"""
import json, sys, time
import numpy as np
import faiss_proxy as faiss
if len(sys.argv) > 1:
    faiss.configure(server=sys.argv[1])
rs = np.random.RandomState(5)
xb = rs.rand(300, 16).astype("float32")
xq = rs.rand(10, 16).astype("float32")
start = time.monotonic()
try:
    index = faiss.IndexFlatL2(16)
    index.add(xb)
    D, I = index.search(xq, 4)
    print(json.dumps({"D": D.tolist(), "I": I.tolist()}))
except Exception as e:
    print(json.dumps({"error": str(e), "type": type(e).__name__,
                      "took": time.monotonic() - start}))
"""

#  Makes a named index, then waits for a line on stdin before searching it
#  (and an anonymous index of its connection) again.
SEARCHER = r"""
import json, sys
import numpy as np
import faiss_proxy as faiss
rs = np.random.RandomState(7)
xb = rs.rand(2000, 16).astype("float32")
xq = rs.rand(20, 16).astype("float32")
kept = faiss.create_index("kept", 16, "Flat")
kept.add(xb)
anonymous = faiss.IndexFlatL2(16)
anonymous.add(xb[:10])
print("ready", flush=True)
sys.stdin.readline()
out = {}
try:
    D, I = kept.search(xq, 5)
    out.update(D=D.tolist(), I=I.tolist())
except Exception as e:
    out["error"] = str(e)
try:
    anonymous.search(xq, 1)
    out["anonymous"] = "found"
except Exception as e:
    out["anonymous"] = str(e)
print(json.dumps(out), flush=True)
"""

#  Keeps the server's one worker busy with a k-means.
KMEANS = r"""
import json
import numpy as np
import faiss_proxy as faiss
x = np.random.RandomState(3).rand(60000, 32).astype("float32")
print("started", flush=True)
try:
    km = faiss.Kmeans(32, 256, niter=2000)     # cut by the kill
    km.train(x)
    print(json.dumps({"ok": True}), flush=True)
except Exception as e:
    print(json.dumps({"error": str(e)}), flush=True)
"""


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _child_env(**extra):
    env = dict(os.environ)
    for name in ("FAISS_PROXY_SERVER", "FAISS_PROXY_API_KEY", "FAISS_PROXY_SERVER_KEY",
                 "FAISS_PROXY_TIMEOUT_MS", "FAISS_PROXY_CONNECT_TIMEOUT_MS"):
        env.pop(name, None)
    env["PYTHONPATH"] = SHIM
    env.update(extra)
    return env


def _run(code, env, *args):
    out = subprocess.run([sys.executable, "-c", code] + list(args), env=env, timeout=120,
                         stdout=subprocess.PIPE, check=True).stdout.decode()
    return json.loads(out.strip().splitlines()[-1])


def _local_search(lfaiss):
    rs = np.random.RandomState(5)
    xb = rs.rand(300, 16).astype("float32")
    xq = rs.rand(10, 16).astype("float32")
    index = lfaiss.IndexFlatL2(16)
    index.add(xb)
    return index.search(xq, 4)


def test_fail_fast_no_server():
    port = _free_port()
    result = _run(SIMPLE, _child_env(FAISS_PROXY_SERVER="127.0.0.1:%d" % port,
                                     FAISS_PROXY_API_KEY="k", FAISS_PROXY_TIMEOUT_MS="30000"))
    assert result.get("type") == "FaissProxyError", result
    assert "connection refused" in result["error"], result
    assert "tcp://127.0.0.1:%d" % port in result["error"], result
    assert result["took"] < 5, result


@pytest.mark.parametrize("how", ["env", "configure"])
def test_host_port(server, lfaiss, how):
    host_port = server.endpoint[len("tcp://"):].replace("127.0.0.1", "localhost")
    if how == "env":
        result = _run(SIMPLE, _child_env(FAISS_PROXY_SERVER=host_port,
                                         FAISS_PROXY_API_KEY=server.key))
    else:
        result = _run(SIMPLE, _child_env(FAISS_PROXY_API_KEY=server.key), host_port)
    assert "error" not in result, result
    D, I = _local_search(lfaiss)
    np.testing.assert_array_equal(np.array(result["I"]), I)
    np.testing.assert_allclose(np.array(result["D"], dtype="float32"), D, rtol=1e-5)


def test_bad_endpoint():
    result = _run(SIMPLE, _child_env(FAISS_PROXY_SERVER="localhost", FAISS_PROXY_API_KEY="k"))
    assert "invalid endpoint 'localhost': no port" in result.get("error", ""), result


@pytest.fixture
def restartable():
    data_dir = tempfile.mkdtemp(prefix="fpx-pytest-clients-")
    srv = fpx_server.Server(workers=1)
    srv.start_on(None, data_dir)      # a port of its choosing; the restart reuses it
    yield srv
    srv.stop()
    shutil.rmtree(data_dir, ignore_errors=True)


def test_retry_across_restart(restartable, lfaiss):
    srv = restartable
    port = int(srv.endpoint.rsplit(":", 1)[1])
    env = _child_env(FAISS_PROXY_SERVER="127.0.0.1:%d" % port, FAISS_PROXY_API_KEY=srv.key,
                     FAISS_PROXY_TIMEOUT_MS="30000")
    searcher = subprocess.Popen([sys.executable, "-c", SEARCHER], env=env,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    kmeans = None
    try:
        assert searcher.stdout.readline().strip() == b"ready"
        kmeans = subprocess.Popen([sys.executable, "-c", KMEANS], env=env,
                                  stdout=subprocess.PIPE)
        assert kmeans.stdout.readline().strip() == b"started"
        time.sleep(1.0)                 # the k-means is on the one worker
        searcher.stdin.write(b"go\n")
        searcher.stdin.flush()
        time.sleep(0.5)                 # the search waits behind it
        busy = kmeans.poll() is None    # so the search still waits behind it
        srv.kill()
        srv.start_on(port, srv.data_dir)
        out, _ = searcher.communicate(timeout=120)
        km_out, _ = kmeans.communicate(timeout=120)
    finally:
        for proc in (searcher, kmeans):
            if proc is not None and proc.poll() is None:
                proc.kill()
    assert busy, "the k-means or the search ended before the kill: make the k-means larger"
    result = json.loads(out.decode().strip().splitlines()[-1])
    assert "error" not in result, result
    rs = np.random.RandomState(7)
    xb = rs.rand(2000, 16).astype("float32")
    xq = rs.rand(20, 16).astype("float32")
    local = lfaiss.IndexFlatL2(16)
    local.add(xb)
    D, I = local.search(xq, 5)
    np.testing.assert_array_equal(np.array(result["I"]), I)
    np.testing.assert_allclose(np.array(result["D"], dtype="float32"), D, rtol=1e-5)
    assert "anonymous indexes live only as long as the connection" in result["anonymous"], result
    km_result = json.loads(km_out.decode().strip().splitlines()[-1])
    assert "outcome is unknown" in km_result.get("error", ""), km_result
