"""Uploaded indexes are untrusted input (docs/SECURITY.md, "Uploaded
indexes"): faiss_proxy.read_index of a local file whose IVF inverted lists
are FAISS's on-disk lists ('ilod': they name a path on the server that
FAISS would open and mmap read-write) raises RuntimeError, as FAISS does
for a file it cannot read, and the server keeps serving; the other
index's snapshot is left byte-identical."""
import os
import struct

import numpy as np
import pytest

from conftest import assert_same_search

D = 8


def ilod_index(lfaiss, path, totsize):
    """An empty trained IVFFlat (one list) whose lists live in `path`."""
    ivf = lfaiss.IndexIVFFlat(lfaiss.IndexFlatL2(D), D, 1)
    ivf.train(np.random.RandomState(0).rand(64, D).astype("float32"))
    blob = lfaiss.serialize_index(ivf).tobytes()
    at = blob.rfind(b"ilar")
    assert at > 0
    path = os.fsencode(path)
    tail = (b"ilod" + struct.pack("<QQ", 1, D * 4)
            + struct.pack("<Q", 1) + struct.pack("<QQQ", 1, 1, 0)     # lists
            + struct.pack("<Q", 0)                                    # slots
            + struct.pack("<Q", len(path)) + path                     # filename
            + struct.pack("<Q", totsize))
    return blob[:at] + tail


@pytest.mark.parametrize("target", ["snapshot", "/etc/passwd", "/nonexistent/faissproxy/ilod"])
def test_read_index_with_ondisk_lists_is_refused(lfaiss, rfaiss, server, tmp_path, target):
    xb = np.random.RandomState(1).rand(100, D).astype("float32")
    name = "uploads_victim_%d" % abs(hash(target))
    victim = rfaiss.create_index(name, D, "Flat")
    victim.add(xb)
    rfaiss.save_index(name)
    snapshot = os.path.join(server.data_dir, "data", "tenants", server.tenant, name, "snapshot")
    with open(snapshot, "rb") as f:
        before = f.read()
    path = snapshot if target == "snapshot" else target
    local_file = tmp_path / "crafted.index"
    local_file.write_bytes(ilod_index(lfaiss, path, len(before) if target == "snapshot" else 64))

    with pytest.raises(RuntimeError) as info:
        rfaiss.read_index(str(local_file))
    assert "structure 'ilod' is not accepted" in str(info.value)
    with pytest.raises(RuntimeError):
        rfaiss.deserialize_index(np.frombuffer(local_file.read_bytes(), dtype=np.uint8))

    # nothing changed, and the server still serves
    with open(snapshot, "rb") as f:
        assert f.read() == before
    local = lfaiss.IndexFlatL2(D)
    local.add(xb)
    assert_same_search(local.search(xb[:5], 3), victim.search(xb[:5], 3))
    fresh = rfaiss.IndexFlatL2(D)
    fresh.add(xb)
    assert fresh.ntotal == 100


def test_read_index_legitimate_file_still_works(lfaiss, rfaiss, tmp_path):
    rs = np.random.RandomState(2)
    xb = rs.rand(500, D).astype("float32")
    local = lfaiss.index_factory(D, "IVF8,Flat")
    local.train(xb)
    local.add(xb)
    local.nprobe = 3
    path = str(tmp_path / "ok.index")
    lfaiss.write_index(local, path)
    remote = rfaiss.read_index(path)
    assert remote.ntotal == 500
    assert_same_search(local.search(xb[:10], 5), remote.search(xb[:10], 5))
