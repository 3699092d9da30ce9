"""conftest.py — one real faissproxyd per test session, and the two FAISS
modules every test compares: `lfaiss` (Debian's python3-faiss, in
process) and `rfaiss` (faiss_proxy configured against that server).

Environment (the Makefile's test-python target sets them): FPX_DAEMON,
the daemon; FAISS_PROXY_LIB, libfaissproxy; PYTHONPATH with python-shim.
The server is stopped with SIGTERM at the end and must exit 0.
"""
import os
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SHIM = os.path.join(ROOT, "python-shim")
for path in (HERE, SHIM):
    if path not in sys.path:
        sys.path.insert(0, path)
if not os.environ.get("FAISS_PROXY_LIB"):
    os.environ["FAISS_PROXY_LIB"] = os.path.join(ROOT, "build", "lib", "libfaissproxy.so")

#  OpenMP's default spin-wait makes FAISS calls tens of times slower on a
#  loaded machine (measured: PQ training 0.4 s -> 19 s on 2 busy cores);
#  set before FAISS is loaded here, and inherited by the daemon.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

#  This process starts in local mode whatever the caller's environment; the
#  rfaiss fixture switches faiss_proxy to the test server.
os.environ.pop("FAISS_PROXY_SERVER", None)
os.environ.pop("FAISS_PROXY_API_KEY", None)

import fpx_server  # noqa: E402


@pytest.fixture(scope="session")
def server():
    srv = fpx_server.Server(workers=2).start()
    yield srv
    rc = srv.stop()
    log = srv.log()
    srv.cleanup()
    assert rc == 0, "faissproxyd exited with %r on SIGTERM; log:\n%s" % (rc, log)


@pytest.fixture(scope="session")
def rfaiss(server):
    import faiss_proxy
    faiss_proxy.configure(server=server.endpoint, api_key=server.key, timeout_ms=120000)
    assert faiss_proxy.is_remote()
    yield faiss_proxy
    faiss_proxy.close()


@pytest.fixture(scope="session")
def lfaiss():
    import faiss
    return faiss


@pytest.fixture(scope="session")
def data():
    """Training, database and query vectors (d = 32), fixed seeds."""
    rs = np.random.RandomState(123)
    d = 32
    xt = rs.rand(3000, d).astype("float32")
    xb = rs.rand(2000, d).astype("float32")
    xq = rs.rand(40, d).astype("float32")
    return xt, xb, xq


def assert_same_search(local, remote, rtol=1e-5):
    """Identical labels, distances within rtol (FAISS's outputs)."""
    (Dl, Il), (Dr, Ir) = local, remote
    assert Dr.dtype == np.float32 and Ir.dtype == np.int64
    assert Dr.shape == Dl.shape and Ir.shape == Il.shape
    np.testing.assert_array_equal(Ir, Il)
    np.testing.assert_allclose(Dr, Dl, rtol=rtol, atol=rtol)


def server_has(rfaiss, obj_or_name):
    """Whether the server still knows this connection's object name."""
    from faiss_proxy import _capi, _client
    name = obj_or_name if isinstance(obj_or_name, bytes) else obj_or_name._name
    info = _capi.IndexInfo()
    try:
        _client.call(_capi.lib.fpx_index_describe, name, 0, __import__("ctypes").byref(info))
        return True
    except _client.FaissProxyError as e:
        assert e.code_name == "FPX_ENOTFOUND", e
        return False
