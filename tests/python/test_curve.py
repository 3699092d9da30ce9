"""test_curve.py — faiss_proxy over CurveZMQ (faissproxyd --curve-secret-file).

Each client runs in a child process (remote mode through the environment),
so this file leaves the session's own connection alone:
- with the server's public key (FAISS_PROXY_SERVER_KEY, or configure(
  server_key=…)) an IndexFlatL2 searches exactly as local FAISS;
- with another key, calls fail at once with an error naming CURVE.
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest

import fpx_server

HERE = os.path.dirname(os.path.abspath(__file__))
SHIM = os.path.join(os.path.dirname(os.path.dirname(HERE)), "python-shim")

CHILD = r"""
import json, os, sys
import numpy as np
import faiss_proxy as faiss
if sys.argv[1] != "env":
    faiss.configure(server_key=sys.argv[1])
rs = np.random.RandomState(5)
xb = rs.rand(300, 16).astype("float32")
xq = rs.rand(10, 16).astype("float32")
try:
    index = faiss.IndexFlatL2(16)
    index.add(xb)
    D, I = index.search(xq, 4)
    print(json.dumps({"D": D.tolist(), "I": I.tolist()}))
except Exception as e:
    print(json.dumps({"error": str(e)}))
"""


def _cli():
    return os.path.join(os.path.dirname(fpx_server.daemon_path()), "faissproxy")


@pytest.fixture(scope="module")
def curve_server():
    keydir = tempfile.mkdtemp(prefix="fpx-pytest-curve-")
    path = os.path.join(keydir, "server.key")
    out = subprocess.run([_cli(), "keygen", "--curve", path], check=True,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).stdout.decode()
    public = out.strip().split("=", 1)[1]
    srv = fpx_server.Server(extra_args=["--curve-secret-file", path], server_key=public).start()
    yield srv
    rc = srv.stop()
    srv.cleanup()
    assert rc == 0


def _run(srv, how, **env):
    child_env = srv.env(PYTHONPATH=SHIM, FAISS_PROXY_TIMEOUT_MS="1500", **env)
    if how != "env":
        child_env.pop("FAISS_PROXY_SERVER_KEY", None)
    out = subprocess.run([sys.executable, "-c", CHILD, how], env=child_env, timeout=60,
                         stdout=subprocess.PIPE, check=True).stdout.decode()
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize("how", ["env", "configure"])
def test_right_server_key(curve_server, lfaiss, how):
    result = _run(curve_server, how if how == "env" else curve_server.server_key)
    assert "error" not in result, result
    rs = np.random.RandomState(5)
    xb = rs.rand(300, 16).astype("float32")
    xq = rs.rand(10, 16).astype("float32")
    local = lfaiss.IndexFlatL2(16)
    local.add(xb)
    D, I = local.search(xq, 4)
    np.testing.assert_array_equal(np.array(result["I"]), I)
    np.testing.assert_allclose(np.array(result["D"], dtype="float32"), D, rtol=1e-5)


def test_wrong_server_key(curve_server):
    wrong = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"  # a valid Z85 key, not the server's
    assert wrong != curve_server.server_key
    result = _run(curve_server, "env", FAISS_PROXY_SERVER_KEY=wrong)
    assert "error" in result and "CURVE" in result["error"], result
