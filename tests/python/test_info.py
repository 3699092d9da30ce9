"""test_info.py — faiss_proxy.info(): the info opcode as a dict.

A server of its own with two tenants: "pytest" (an admin key and a read
key from a keys file) and "other". Child processes in remote mode, one
per key, make known requests and print what info() returned:
- 7 searches move requests["search"]["FPX_OK"] and the search latency
  count by exactly 7; the percentiles are ordered;
- the index's memory_bytes is the size of the same index serialized by
  FAISS in-process, its ntotal what was added; the tenant's totals agree;
- "other" sees neither the index name nor the searches of "pytest";
- all_tenants=True lists both tenants for the admin key and raises
  FPX_EPERM for the read key; max_indexes=0 lists none and says so;
  bad arguments raise ValueError, and local mode RuntimeError.
"""
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile

import pytest

import fpx_server

HERE = os.path.dirname(os.path.abspath(__file__))
SHIM = os.path.join(os.path.dirname(os.path.dirname(HERE)), "python-shim")
SEARCHES = 7

ADMIN = r"""
import json
import numpy as np
import faiss
import faiss_proxy as fp
rs = np.random.RandomState(3)
xb = rs.rand(150, 8).astype("float32")
index = fp.create_index("py_info", 8, "Flat")
index.add(xb)
before = fp.info()
for _ in range(%d):
    index.search(xb[:2], 3)
after = fp.info()
local = faiss.IndexFlatL2(8)
local.add(xb)
bad = []
for wrong in (1001, -1, True, "3"):
    try:
        fp.info(max_indexes=wrong)
    except ValueError:
        bad.append(repr(wrong))
print(json.dumps({"before": before, "after": after, "bad": bad,
                  "local_size": int(faiss.serialize_index(local).size),
                  "all": fp.info(all_tenants=True), "none": fp.info(max_indexes=0)}))
""" % SEARCHES

OTHER = r"""
import json
import faiss_proxy as fp
index = fp.create_index("other_index", 4, "Flat")
print(json.dumps(fp.info()))
"""

READER = r"""
import json
import faiss_proxy as fp
try:
    fp.info(all_tenants=True)
    denied = None
except fp.FaissProxyError as e:
    denied = e.code_name
print(json.dumps({"info": fp.info(), "denied": denied}))
"""


@pytest.fixture(scope="module")
def served():
    keys_dir = tempfile.mkdtemp(prefix="fpx-pytest-keys-")
    read_key = secrets.token_hex(16)
    other_key = secrets.token_hex(16)
    keys = os.path.join(keys_dir, "keys")
    with open(keys, "w") as f:
        f.write("pytest read b2:%s\n" % hashlib.blake2b(read_key.encode(), digest_size=32).hexdigest())
    os.chmod(keys, 0o600)
    srv = fpx_server.Server(extra_args=["--api-key", "other:" + other_key,
                                        "--keys-file", keys]).start()

    def run(script, key):
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                             env=srv.env(PYTHONPATH=SHIM, FAISS_PROXY_API_KEY=key), timeout=120)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    yield {"admin": run(ADMIN, srv.key), "other": run(OTHER, other_key),
           "reader": run(READER, read_key)}
    rc = srv.stop()
    srv.cleanup()
    shutil.rmtree(keys_dir, ignore_errors=True)
    assert rc == 0


def test_counts_and_latency(served):
    before, after = served["admin"]["before"], served["admin"]["after"]
    assert after["tenant"] == "pytest" and after["role"] == "admin"
    searched = after["requests"]["search"]["FPX_OK"]
    assert searched >= SEARCHES
    assert searched - before["requests"].get("search", {}).get("FPX_OK", 0) == SEARCHES
    #  The first info call is counted in the second (a call counts once answered).
    assert "info" not in before["requests"] and after["requests"]["info"]["FPX_OK"] == 1
    latency = after["latency"]["search"]
    assert latency["count"] == searched
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["p999"] < 100
    assert after["uptime_s"] >= before["uptime_s"] > 0
    assert after["workers"] == 2 and after["rss_bytes"] > 0


def test_memory_matches_faiss(served):
    admin = served["admin"]
    after = admin["after"]
    rows = {row["name"]: row for row in after["index_list"]}
    assert rows["py_info"]["ntotal"] == 150
    assert rows["py_info"]["memory_bytes"] == admin["local_size"]
    assert rows["py_info"]["disk_bytes"] > 0
    assert after["memory_bytes"] == sum(r["memory_bytes"] for r in rows.values())
    assert after["vectors"] == 150 and after["indexes"] == len(rows) == 1
    assert after["index_list_truncated"] is False
    assert admin["none"]["index_list"] == [] and admin["none"]["index_list_truncated"] is True
    assert admin["bad"] == ["1001", "-1", "True", "'3'"]


def test_tenants_sealed(served):
    other = served["other"]
    text = json.dumps(other)
    assert other["tenant"] == "other"
    assert "py_info" not in text and "pytest" not in text
    assert "search" not in other["requests"] and "search" not in other["latency"]
    assert [r["name"] for r in other["index_list"]] == ["other_index"]
    assert "server" not in other


def test_all_tenants_admin_only(served):
    everything = served["admin"]["all"]["server"]
    usage = {t["tenant"]: t for t in everything["tenants"]}
    assert set(usage) == {"pytest", "other"}
    assert usage["pytest"]["vectors"] == 150
    assert everything["requests"]["search"]["FPX_OK"] >= SEARCHES
    assert "other_index" not in json.dumps(served["admin"]["all"])
    reader = served["reader"]
    assert reader["denied"] == "FPX_EPERM"
    assert reader["info"]["role"] == "read" and reader["info"]["tenant"] == "pytest"


def test_local_mode_raises():
    out = subprocess.run([sys.executable, "-c", "import faiss_proxy as fp\n"
                          "try:\n    fp.info()\nexcept RuntimeError as e:\n    print('local:', e)\n"],
                         capture_output=True, text=True, timeout=60,
                         env={k: v for k, v in os.environ.items()
                              if k not in ("FAISS_PROXY_SERVER", "FAISS_PROXY_API_KEY")}
                         | {"PYTHONPATH": SHIM})
    assert out.returncode == 0 and out.stdout.startswith("local: faiss_proxy.info"), out.stderr
