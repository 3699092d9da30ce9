"""Local fallback, remote mode without the FAISS extension, configure(),
and installation (each in a fresh interpreter)."""
import os
import shutil
import subprocess
import sys
import textwrap


HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SHIM = os.path.join(ROOT, "python-shim")
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


def run_python(code, env, cwd=None, timeout=120):
    proc = subprocess.run([PYTHON, "-c", textwrap.dedent(code)], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, "stdout:\n%s\nstderr:\n%s" % (proc.stdout, proc.stderr)
    return proc.stdout


def local_env():
    env = dict(os.environ)
    env.pop("FAISS_PROXY_SERVER", None)
    env.pop("FAISS_PROXY_API_KEY", None)
    env["PYTHONPATH"] = SHIM
    return env


def test_local_fallback_resolves_to_local_faiss():
    out = run_python("""
        import sys, numpy as np
        import faiss_proxy as faiss
        assert not faiss.is_remote()
        import faiss as real
        assert faiss.IndexFlatL2 is real.IndexFlatL2 and faiss.knn is real.knn
        assert faiss.__version__ == real.__version__
        assert "faiss_proxy._client" not in sys.modules      # no C library needed
        index = faiss.IndexFlatL2(4)
        index.add(np.eye(4, dtype="float32"))
        D, I = index.search(np.eye(4, dtype="float32")[:2], 1)
        print(type(index).__module__, I.ravel().tolist())
        """, local_env())
    assert out.split() == ["faiss.swigfaiss", "[0,", "1]"]


def test_remote_mode_never_loads_faiss(server):
    env = server.env(PYTHONPATH=SHIM)
    out = run_python("""
        import sys, numpy as np
        import faiss_proxy as faiss
        assert faiss.is_remote()
        xb = np.random.RandomState(0).rand(500, 16).astype("float32")
        index = faiss.index_factory(16, "IVF8,Flat")
        index.train(xb)
        index.add(xb)
        D, I = index.search(xb[:5], 3)
        km = faiss.Kmeans(16, 4, niter=3)
        km.train(xb)
        faiss.normalize_L2(xb)
        blob = faiss.serialize_index(index)
        assert I[:, 0].tolist() == [0, 1, 2, 3, 4]
        assert "faiss" not in sys.modules
        assert not [m for m in sys.modules if m.startswith("faiss.")]
        import re
        maps = open("/proc/self/maps").read()
        assert not re.search(r"swigfaiss|libfaiss(_c)?[.]so|libfaiss_avx", maps), "FAISS is mapped"
        assert "libfaissproxy" in maps
        print("ok", type(index).__name__, len(blob))
        """, env)
    assert out.startswith("ok IndexIVFFlat")


def test_configure_at_run_time_with_other_clients_keywords(server):
    out = run_python("""
        import sys, numpy as np
        import faiss_proxy as faiss
        assert not faiss.is_remote()
        faiss.configure(server=%r, api_key=%r, tenant_id="pytest")
        assert faiss.is_remote()
        index = faiss.IndexFlatIP(3)
        index.add(np.eye(3, dtype="float32"))
        print(index.ntotal, "faiss" in sys.modules)
        """ % (server.endpoint, server.key), local_env())
    assert out.split() == ["3", "False"]


def test_wrong_key_and_unknown_names(server):
    out = run_python("""
        import faiss_proxy as faiss
        faiss.configure(server=%r, api_key="not-the-key", timeout_ms=20000)
        try:
            faiss.IndexFlatL2(4)
        except RuntimeError as e:
            print(e.code_name)
        try:
            faiss.IndexBinaryFlat
        except AttributeError:
            print("AttributeError")
        """ % server.endpoint, local_env())
    assert out.split() == ["FPX_EAUTH", "AttributeError"]


def test_install_without_index(server, tmp_path):
    """pip --no-build-isolation with Debian's setuptools (setup.py build
    where pip is missing), then the installed copy works remotely."""
    src = tmp_path / "src"
    shutil.copytree(SHIM, src, ignore=shutil.ignore_patterns("__pycache__", "build",
                                                             "*.egg-info"))
    target = tmp_path / "site"
    has_pip = subprocess.run([PYTHON, "-m", "pip", "--version"],
                             capture_output=True).returncode == 0
    if has_pip:
        cmd = [PYTHON, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "--no-index",
               "--target", str(target), str(src)]
    else:
        cmd = [PYTHON, "setup.py", "build", "--build-lib", str(target)]
    proc = subprocess.run(cmd, cwd=src, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (target / "faiss_proxy" / "__init__.py").exists()
    env = server.env(PYTHONPATH=str(target))
    out = run_python("""
        import numpy as np, faiss_proxy as faiss
        index = faiss.IndexFlatL2(2)
        index.add(np.array([[0, 0], [1, 1]], dtype="float32"))
        print(faiss.__file__, index.search(np.array([[0.9, 0.9]], dtype="float32"), 1)[1][0][0])
        """, env, cwd=str(tmp_path))
    path, label = out.split()
    assert path.startswith(str(target)) and label == "1"
