"""Ordinary FAISS programs (programs/*.py: the tutorial flows, HNSW,
pickling, k-means), run as written with local FAISS and again with the
one-line swap `import faiss_proxy as faiss` against the server: the two
outputs must be identical."""
import os
import re
import subprocess

import pytest

from test_modes import PYTHON, SHIM, local_env

PROGRAMS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "programs")
NAMES = sorted(name for name in os.listdir(PROGRAMS) if name.endswith(".py"))


def run(path, env):
    proc = subprocess.run([PYTHON, path], env=env, capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, "%s failed:\n%s\n%s" % (path, proc.stdout, proc.stderr)
    return proc.stdout


@pytest.mark.parametrize("name", NAMES)
def test_program_prints_the_same_remotely(server, tmp_path, name):
    with open(os.path.join(PROGRAMS, name)) as f:
        source = f.read()
    swapped, count = re.subn(r"^import faiss\b", "import faiss_proxy as faiss", source,
                             flags=re.M)
    assert count == 1
    remote_path = tmp_path / name
    remote_path.write_text(swapped)
    local_out = run(os.path.join(PROGRAMS, name), local_env())
    remote_out = run(str(remote_path), server.env(PYTHONPATH=SHIM))
    assert local_out.strip()
    assert remote_out == local_out
