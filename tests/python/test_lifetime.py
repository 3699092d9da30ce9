"""Lifetime as in FAISS: an index owns its server object and frees it when
collected; objects referenced by others stay alive and are shared; one
connection shared by threads; a forked child gets its own."""
import gc
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from conftest import assert_same_search, server_has


def test_del_frees_the_server_object(rfaiss, data):
    _, xb, _ = data
    index = rfaiss.IndexFlatL2(xb.shape[1])
    index.add(xb)
    name = index._name
    assert server_has(rfaiss, name)
    del index
    gc.collect()
    assert not server_has(rfaiss, name)


def test_release_while_the_connection_is_busy(rfaiss, data):
    """A collection during another call (lock held) queues the drop; the
    next call performs it."""
    from faiss_proxy import _client
    index = rfaiss.IndexFlatL2(8)
    name = index._name
    with _client._state.lock:
        del index
        gc.collect()
        assert len(_client._state.pending) == 1
    assert not server_has(rfaiss, name)
    assert len(_client._state.pending) == 0


def test_quantizer_shared_and_kept_alive(lfaiss, rfaiss, data):
    xt, xb, xq = data
    d = xb.shape[1]
    quantizer = rfaiss.IndexFlatL2(d)
    index = rfaiss.IndexIVFFlat(quantizer, d, 8)
    assert index.quantizer is quantizer and index.referenced_objects == [quantizer]
    index.train(xt)
    assert quantizer.ntotal == 8                # training seen through the other handle
    lq = lfaiss.IndexFlatL2(d)
    local = lfaiss.IndexIVFFlat(lq, d, 8)
    local.train(xt)
    assert_same_search(lq.search(xq, 2), quantizer.search(xq, 2))
    ivf_name = index._name
    del index
    gc.collect()
    assert not server_has(rfaiss, ivf_name)
    assert quantizer.ntotal == 8                # the composite lives while its part does
    assert_same_search(lq.search(xq, 2), quantizer.search(xq, 2))
    # an adopted index given again is copied as it is (FAISS would share it)
    second = rfaiss.IndexIVFFlat(quantizer, d, 8)
    assert second.quantizer is not quantizer and second.quantizer.ntotal == 8
    assert second.is_trained
    second.quantizer.reset()
    assert quantizer.ntotal == 8                # the copy is the second one's alone


def test_views_of_factory_parts(rfaiss, data):
    xt, xb, _ = data
    d = xb.shape[1]
    index = rfaiss.index_factory(d, "IDMap,Flat")
    sub = index.index
    assert sub is index.index                  # one view per part
    index.add_with_ids(xb[:30], np.arange(30) + 100)
    assert sub.ntotal == 30
    sub_name, index_name = sub._name, index._name
    del index
    gc.collect()
    assert server_has(rfaiss, index_name) is False
    assert sub.ntotal == 30 and server_has(rfaiss, sub_name)
    del sub
    gc.collect()
    assert not server_has(rfaiss, sub_name)


def test_idmap_and_pretransform_parts(lfaiss, rfaiss, data):
    xt, xb, xq = data
    d = xb.shape[1]
    flat = rfaiss.IndexFlatL2(d)
    idmap = rfaiss.IndexIDMap(flat)
    idmap.add_with_ids(xb[:50], np.arange(50) * 2)
    assert flat.ntotal == 50 and idmap.index is flat
    del flat
    gc.collect()
    assert idmap.index.ntotal == 50
    pca = rfaiss.PCAMatrix(d, 8)
    inner = rfaiss.IndexFlatL2(8)
    pre = rfaiss.IndexPreTransform(pca, inner)
    assert not pca.is_trained
    pre.train(xt)
    assert pca.is_trained and pre.chain.at(0) is pca and pre.chain.size() == 1
    pre.add(xb)
    assert inner.ntotal == len(xb)
    lpca = lfaiss.PCAMatrix(d, 8)
    lpca.train(xt)
    np.testing.assert_allclose(pca.apply(xq), lpca.apply(xq), rtol=1e-4, atol=1e-5)
    del pca, inner
    gc.collect()
    assert pre.ntotal == len(xb) and pre.chain.at(0).d_out == 8


def test_threads_share_one_connection(lfaiss, rfaiss, data):
    xt, xb, xq = data
    d = xb.shape[1]
    local = lfaiss.IndexFlatL2(d)
    local.add(xb)
    shared = rfaiss.IndexFlatL2(d)
    shared.add(xb)
    expected = local.search(xq, 5)

    def worker(i):
        own = rfaiss.IndexFlatIP(d)
        own.add(xb[i * 10:(i + 1) * 10 + 100])
        results = [shared.search(xq, 5) for _ in range(15)]
        mine = own.search(xq[:3], 2)
        return results, mine, own.ntotal

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(worker, range(16)))
    ref = lfaiss.IndexFlatIP(d)
    for i, (results, mine, ntotal) in enumerate(outcomes):
        for result in results:
            assert_same_search(expected, result)
        ref.reset()
        ref.add(xb[i * 10:(i + 1) * 10 + 100])
        assert_same_search(ref.search(xq[:3], 2), mine)
        assert ntotal == 110


def test_fork_child_gets_its_own_connection(rfaiss, data):
    _, xb, xq = data
    parent_index = rfaiss.IndexFlatL2(xb.shape[1])
    parent_index.add(xb)
    expected = parent_index.search(xq, 3)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:        # child: only exit codes and bytes leave it
        code = 1
        try:
            os.close(read_fd)
            try:
                parent_index.ntotal
                code = 2        # the parent's object must not be reachable
            except RuntimeError:
                child_index = rfaiss.IndexFlatL2(xb.shape[1])
                child_index.add(xb)
                D, I = child_index.search(xq, 3)
                os.write(write_fd, I.tobytes())
                code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    chunks = []
    while True:
        chunk = os.read(read_fd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(read_fd)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    np.testing.assert_array_equal(np.frombuffer(b"".join(chunks), dtype="int64").reshape(-1, 3),
                                  expected[1])
    assert_same_search(expected, parent_index.search(xq, 3))     # parent unaffected
