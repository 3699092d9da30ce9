"""Named, durable indexes from Python: faiss_proxy.create_index /
open_index / list_indexes / save_index / drop_index (faissproxy's own calls,
not FAISS's). A named index outlives its Python objects and connections,
and searches exactly as the same FAISS index in-process."""
import gc

import pytest

from conftest import assert_same_search


def test_named_index_outlives_objects_and_connections(rfaiss, lfaiss, data, server):
    xt, xb, xq = data
    d = xb.shape[1]
    name = "py_durable_ivf"
    if name in rfaiss.list_indexes():
        rfaiss.drop_index(name)
    index = rfaiss.create_index(name, d, "IVF8,Flat")
    index.train(xt)
    index.add(xb)
    index.nprobe = 4
    del index
    gc.collect()
    assert name in rfaiss.list_indexes()

    #  A new connection (configure again) reaches it by name.
    rfaiss.configure(server=server.endpoint, api_key=server.key, timeout_ms=120000)
    reopened = rfaiss.open_index(name)
    assert reopened.ntotal == xb.shape[0]
    assert reopened.nprobe == 4
    local = lfaiss.index_factory(d, "IVF8,Flat")
    local.train(xt)
    local.add(xb)
    local.nprobe = 4
    assert_same_search(local.search(xq, 10), reopened.search(xq, 10))

    rfaiss.save_index(name)
    rfaiss.drop_index(name)
    assert name not in rfaiss.list_indexes()
    with pytest.raises(RuntimeError):
        rfaiss.open_index(name)
