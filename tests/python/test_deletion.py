"""remove_ids where FAISS 1.7.3 refuses it in-process (HNSW indexes, bare
or wrapped; IndexRefineFlat) or leaves the index inconsistent (an IDMap
over an IVF index), and faissproxyd removes: by rebuilding the graph
from the vectors kept, or renumbering the IVF lists.

The reference for each case is built here with local FAISS: a new index
of the same structure (trained alike), given in one add on one OpenMP
thread the vectors an IndexFlat keeps after the same removal (for SQ/PQ
storage, the decodings of the codes kept), in the same order. FAISS's
HNSW build is deterministic on one thread, and so is the server's
rebuild: labels must be identical, distances within 1e-5,
reconstructions bit for bit.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import fpx_server
from conftest import assert_same_search

SHIM = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                    "python-shim")

K = 10
M = 16


def one_thread_add(f, index, x, ids=None):
    threads = f.omp_get_max_threads()
    f.omp_set_num_threads(1)
    try:
        if ids is None:
            index.add(x)
        else:
            index.add_with_ids(x, ids)
    finally:
        f.omp_set_num_threads(threads)


def kept_after(lfaiss, x, ids, selector):
    """The rows of x (and their ids) that an IDMap2 over IndexFlat keeps
    after remove_ids(selector), in order; and how many it removed."""
    flat = lfaiss.IndexIDMap2(lfaiss.IndexFlatL2(x.shape[1]))
    flat.add_with_ids(x, ids)
    removed = flat.remove_ids(selector)
    kept = lfaiss.vector_to_array(flat.id_map)
    index = {int(i): r for r, i in enumerate(ids)}
    rows = np.array([index[int(i)] for i in kept], dtype="int64")
    return x[rows], kept, removed


def hnsw_flat(f, d):
    index = f.IndexHNSWFlat(d, M)
    index.hnsw.efConstruction = 60
    index.hnsw.efSearch = 48
    return index


def test_hnsw_flat_remove_ids_as_a_new_index(lfaiss, rfaiss, data):
    _, xb, xq = data
    d = xb.shape[1]
    remote = hnsw_flat(rfaiss, d)
    remote.add(xb)
    ids = np.arange(len(xb), dtype="int64")
    x = xb
    removals = [
        np.array([3, 1500, 7, 7, -5, 10 ** 12, 1999], dtype="int64"),
        lambda f: f.IDSelectorRange(100, 250),
        np.arange(0, 1500, 11, dtype="int64"),
        np.array([123456], dtype="int64"),          # nothing: nothing rebuilt
    ]
    for op in removals:
        lsel = op(lfaiss) if callable(op) else op
        rsel = op(rfaiss) if callable(op) else op
        # Positions are ids: what an IndexFlat keeps, renumbered.
        x, _, removed = kept_after(lfaiss, x, ids[:len(x)], lsel)
        assert remote.remove_ids(rsel) == removed
        assert remote.ntotal == len(x)
        reference = hnsw_flat(lfaiss, d)
        one_thread_add(lfaiss, reference, x)
        assert_same_search(reference.search(xq, K), remote.search(xq, K))
        np.testing.assert_array_equal(remote.reconstruct_n(0, remote.ntotal), x)
    # The graph parameters survived the rebuilds.
    assert remote.hnsw.efSearch == 48
    assert remote.hnsw.efConstruction == 60
    # An HNSW index built for the same vectors: the same as on an
    # IndexFlat, which is what the Python user expects of remove_ids.
    exact = lfaiss.IndexFlatL2(d)
    exact.add(x)
    _, I_exact = exact.search(xq, 1)
    _, I_remote = remote.search(xq, 1)
    assert (I_exact == I_remote).mean() > 0.9


@pytest.mark.parametrize("factory", ["HNSW16,SQ8", "HNSW16,SQ4"])
def test_hnsw_codes_remove_ids(lfaiss, rfaiss, data, factory):
    xt, xb, xq = data
    d = xb.shape[1]
    local = lfaiss.index_factory(d, factory)
    remote = rfaiss.index_factory(d, factory)
    for index in (local, remote):
        index.train(xt)
    local.add(xb)
    remote.add(xb)
    # The codes the server keeps are those FAISS made of the vectors.
    decoded = local.reconstruct_n(0, local.ntotal)
    np.testing.assert_array_equal(remote.reconstruct_n(0, remote.ntotal), decoded)
    sel = np.arange(5, 2000, 7, dtype="int64")
    kept, _, removed = kept_after(lfaiss, decoded, np.arange(len(xb), dtype="int64"), sel)
    assert remote.remove_ids(sel) == removed
    assert remote.ntotal == len(kept)
    reference = lfaiss.index_factory(d, factory)
    reference.train(xt)
    one_thread_add(lfaiss, reference, kept)
    # Codes copied, never re-encoded: the decodings are the same bits.
    np.testing.assert_array_equal(remote.reconstruct_n(0, remote.ntotal), kept)
    np.testing.assert_array_equal(reference.reconstruct_n(0, reference.ntotal), kept)
    assert_same_search(reference.search(xq, K), remote.search(xq, K))


def test_idmap2_over_hnsw_remove_ids(lfaiss, rfaiss, data):
    _, xb, xq = data
    d = xb.shape[1]
    ids = (np.arange(len(xb), dtype="int64") * 7 + 1000)[::-1].copy()
    remote = rfaiss.IndexIDMap2(hnsw_flat(rfaiss, d))
    remote.add_with_ids(xb, ids)
    sel = lambda f: f.IDSelectorBatch(ids[::3])
    kept, kept_ids, removed = kept_after(lfaiss, xb, ids, sel(lfaiss))
    assert remote.remove_ids(sel(rfaiss)) == removed
    assert remote.ntotal == len(kept)
    np.testing.assert_array_equal(rfaiss.vector_to_array(remote.id_map), kept_ids)
    reference = lfaiss.IndexIDMap2(hnsw_flat(lfaiss, d))
    one_thread_add(lfaiss, reference, kept, kept_ids)
    assert_same_search(reference.search(xq, K), remote.search(xq, K))
    # Reconstruct by id: kept ids as before, removed ids refused as FAISS does.
    np.testing.assert_array_equal(remote.reconstruct(int(kept_ids[5])), kept[5])
    with pytest.raises(RuntimeError):
        remote.reconstruct(int(ids[0]))
    with pytest.raises(RuntimeError):
        reference.reconstruct(int(ids[0]))


def test_pretransform_over_hnsw_remove_ids(lfaiss, rfaiss, data):
    xt, xb, xq = data
    d = xb.shape[1]
    local = lfaiss.index_factory(d, "PCA16,HNSW16")
    remote = rfaiss.index_factory(d, "PCA16,HNSW16")
    for index in (local, remote):
        index.train(xt)
    remote.add(xb)
    sel = lambda f: f.IDSelectorRange(500, 1700)
    kept, _, removed = kept_after(lfaiss, xb, np.arange(len(xb), dtype="int64"), sel(lfaiss))
    assert remote.remove_ids(sel(rfaiss)) == removed
    assert remote.ntotal == len(kept)
    one_thread_add(lfaiss, local, kept)
    assert_same_search(local.search(xq, K), remote.search(xq, K))


@pytest.mark.parametrize("base", ["hnsw", "pq"])
def test_refine_remove_ids(lfaiss, rfaiss, data, base):
    """IndexRefineFlat, which FAISS 1.7.3 cannot remove from: its base and
    its refine index lose the same positions (an HNSW base rebuilt)."""
    xt, xb, xq = data
    d = xb.shape[1]

    def make(f):
        inner = hnsw_flat(f, d) if base == "hnsw" else f.IndexPQ(d, 8, 4)
        index = f.IndexRefineFlat(inner)
        index.k_factor = 4
        index.train(xt)
        return index

    remote = make(rfaiss)
    remote.add(xb)
    with pytest.raises(RuntimeError):
        make(lfaiss).remove_ids(np.arange(3))
    sel = lambda f: f.IDSelectorBatch(np.r_[np.arange(0, 2000, 5), [-3, 5, 10 ** 9]])
    kept, _, removed = kept_after(lfaiss, xb, np.arange(len(xb), dtype="int64"), sel(lfaiss))
    assert remote.remove_ids(sel(rfaiss)) == removed
    assert remote.ntotal == len(kept)
    reference = make(lfaiss)
    one_thread_add(lfaiss, reference, kept)
    assert_same_search(reference.search(xq, K), remote.search(xq, K))
    np.testing.assert_array_equal(remote.reconstruct_n(0, remote.ntotal), kept)


def test_idmap_over_ivf_remove_ids(lfaiss, rfaiss, data):
    """FAISS 1.7.3 leaves the IVF lists of an IDMap numbering vectors by
    their old positions; faissproxyd renumbers them: the index answers as
    a new one given the vectors kept."""
    xt, xb, xq = data
    d = xb.shape[1]

    def make(f):
        ivf = f.IndexIVFFlat(f.IndexFlatL2(d), d, 16)
        ivf.nprobe = 4
        index = f.IndexIDMap2(ivf)
        index.train(xt)
        return index

    ids = np.arange(len(xb), dtype="int64") * 3 + 17
    remote = make(rfaiss)
    remote.add_with_ids(xb, ids)
    xb_kept, kept_ids = xb, ids
    for sel in (ids[::4], ids[100:400], np.array([-1, ids[5], ids[5], 2], dtype="int64")):
        xb_kept, kept_ids, removed = kept_after(lfaiss, xb_kept, kept_ids, sel)
        assert remote.remove_ids(sel) == removed
        assert remote.ntotal == len(kept_ids)
        np.testing.assert_array_equal(rfaiss.vector_to_array(remote.id_map), kept_ids)
        reference = make(lfaiss)
        reference.add_with_ids(xb_kept, kept_ids)
        assert_same_search(reference.search(xq, K), remote.search(xq, K))


BACKGROUND_CHILD = r"""
import json, sys
import numpy as np
import faiss
import faiss_proxy as rfaiss
rs = np.random.RandomState(9)
d, n = 32, 6000
xb = rs.rand(n, d).astype("float32")
xq = rs.rand(40, d).astype("float32")
remote = rfaiss.IndexHNSWFlat(d, 16)
remote.add(xb)
gone = np.arange(0, n, 3, dtype="int64")
kept = np.delete(xb, gone, axis=0)
out = {"removed": int(remote.remove_ids(gone)), "ntotal": int(remote.ntotal)}
# At once, while the graph may still be rebuilding: labels are positions
# among the vectors kept, at their distances.
D, I = remote.search(xq, 10)
ok = I >= 0
dist = ((xq[:, None, :] - kept[np.where(ok, I, 0)]) ** 2).sum(-1)
out["found"] = int(ok.sum())
out["labels_in_range"] = bool((I[ok] < len(kept)).all())
out["distances_match"] = bool(np.allclose(D[ok], dist[ok], rtol=1e-4, atol=1e-5))
# reconstruct_n numbers the vectors as the new graph will: those kept, in order.
out["reconstructed"] = bool((remote.reconstruct_n(0, remote.ntotal) == kept).all())
# Serializing waits for the new graph to land.
rfaiss.serialize_index(remote)
reference = faiss.IndexHNSWFlat(d, 16)
faiss.omp_set_num_threads(1)
reference.add(kept)
Dr, Ir = reference.search(xq, 10)
D, I = remote.search(xq, 10)
out["same_labels"] = bool((I == Ir).all())
out["same_distances"] = bool(np.allclose(D, Dr, rtol=1e-5))
print(json.dumps(out))
"""


def run_beside_background_rebuilds(child):
    """Runs the program child against a server that rebuilds HNSW graphs
    in the background from 1000 vectors on; its last line of output, as
    JSON. The server must stop cleanly."""
    srv = fpx_server.Server(extra_args=["--rebuild-background-min", "1000"]).start()
    try:
        env = srv.env(PYTHONPATH=SHIM, FAISS_PROXY_TIMEOUT_MS="120000")
        out = subprocess.run([sys.executable, "-c", child], env=env, timeout=600,
                             stdout=subprocess.PIPE, check=True).stdout.decode()
    finally:
        rc = srv.stop()
        log = srv.log()
        srv.cleanup()
    assert rc == 0, log
    return json.loads(out.strip().splitlines()[-1])


def test_hnsw_remove_ids_in_the_background():
    """Past --rebuild-background-min, remove_ids answers before the graph
    is rebuilt: searches meanwhile skip the removed vectors and number
    the others as the rebuilt index will; once rebuilt, the index is the
    one FAISS builds from the vectors kept on one thread."""
    result = run_beside_background_rebuilds(BACKGROUND_CHILD)
    assert result["removed"] == 2000
    assert result["ntotal"] == 4000
    # Filtered, not left as holes: nearly every slot holds a vector kept.
    assert result["found"] >= 0.9 * 40 * 10, result
    assert result["labels_in_range"] and result["distances_match"], result
    assert result["reconstructed"], result
    assert result["same_labels"] and result["same_distances"], result


SELECTED_CHILD = r"""
import json, sys
import numpy as np
import faiss
import faiss_proxy as rfaiss
rs = np.random.RandomState(11)
d, n, lo, hi = 32, 6000, 500, 2500
xb = rs.rand(n, d).astype("float32")
xq = rs.rand(40, d).astype("float32")
remote = rfaiss.IndexHNSWFlat(d, 16)
remote.add(xb)
gone = np.arange(0, n, 3, dtype="int64")
kept = np.delete(xb, gone, axis=0)
out = {"removed": int(remote.remove_ids(gone))}
# At once: the selection names the labels the caller sees, those of the
# vectors kept; the removed vectors stay out.
params = rfaiss.SearchParametersHNSW(sel=rfaiss.IDSelectorRange(lo, hi))
D, I = remote.search(xq, 10, params=params)
ok = I >= 0
dist = ((xq[:, None, :] - kept[np.where(ok, I, 0)]) ** 2).sum(-1)
out["found"] = int(ok.sum())
out["in_selection"] = bool(((I[ok] >= lo) & (I[ok] < hi)).all())
out["distances_match"] = bool(np.allclose(D[ok], dist[ok], rtol=1e-4, atol=1e-5))
rfaiss.serialize_index(remote)          # waits for the new graph
reference = faiss.IndexHNSWFlat(d, 16)
faiss.omp_set_num_threads(1)
reference.add(kept)
Dr, Ir = reference.search(xq, 10, params=faiss.SearchParametersHNSW(sel=faiss.IDSelectorRange(lo, hi)))
D, I = remote.search(xq, 10, params=params)
out["same_labels"] = bool((I == Ir).all())
out["same_distances"] = bool(np.allclose(D, Dr, rtol=1e-5))
print(json.dumps(out))
"""


def test_selection_beside_a_background_removal():
    """A search-time selection while a removal rebuilds in the background
    selects among the labels of the vectors kept (as the rebuilt index
    numbers them), and once rebuilt equals FAISS's selection over the
    index built from the vectors kept."""
    result = run_beside_background_rebuilds(SELECTED_CHILD)
    assert result["removed"] == 2000
    assert result["found"] > 0, result
    assert result["in_selection"] and result["distances_match"], result
    assert result["same_labels"] and result["same_distances"], result
