"""Search-time id selection (SearchParameters.sel, SearchParametersIVF
max_codes) through faiss_proxy, compared with FAISS 1.7.3 in process on
the same index (built here, uploaded to the server), for each selector
kind FAISS 1.7.3 has; and FAISS's refusals, mirrored."""
import numpy as np
import pytest

from conftest import assert_same_search

D = 24
NB = 800


@pytest.fixture(scope="module")
def dataset():
    rs = np.random.RandomState(11)
    return (rs.rand(2000, D).astype("float32"), rs.rand(NB, D).astype("float32"),
            rs.rand(15, D).astype("float32"))


@pytest.fixture(scope="module")
def subset():
    return np.random.RandomState(3).choice(NB, 60, replace=False).astype("int64")


def selectors(f, subset):
    """(kind, selector) for every IDSelector class of FAISS 1.7.3."""
    bitmap = np.zeros(NB, dtype=bool)
    bitmap[subset] = True
    packed = np.packbits(bitmap, bitorder="little")
    rest = np.setdiff1d(np.arange(NB), subset).astype("int64")
    return [
        ("batch", f.IDSelectorBatch(subset)),
        ("array", f.IDSelectorArray(subset)),
        ("range", f.IDSelectorRange(30, 95)),
        ("range_sorted", f.IDSelectorRange(30, 95, True)),
        ("bitmap", f.IDSelectorBitmap(packed)),
        ("bitmap_short", f.IDSelectorBitmap(packed[:20])),     # ids from 160 on: none
        ("not", f.IDSelectorNot(f.IDSelectorBatch(rest))),
        ("not_not", f.IDSelectorNot(f.IDSelectorNot(f.IDSelectorRange(100, 400)))),
        ("all", f.IDSelectorAll()),
    ]


def params_for(f, key, sel):
    if "IVF" in key:
        return f.SearchParametersIVF(sel=sel, nprobe=6)
    if "HNSW" in key:       # the graph's own efSearch: see PROTOCOL.md on efSearch
        return f.SearchParametersHNSW(sel=sel, efSearch=16)
    return f.SearchParameters(sel=sel)


def outcome(fn):
    """('ok', value) or ('error', exception type)."""
    try:
        return "ok", fn()
    except RuntimeError as e:
        return "error", "not implemented" in str(e)


def built(lfaiss, rfaiss, key, metric, dataset):
    xt, xb, _ = dataset
    local = lfaiss.index_factory(D, key, metric)
    local.train(xt)
    local.add(xb)
    remote = rfaiss.deserialize_index(lfaiss.serialize_index(local))
    return local, remote


@pytest.mark.parametrize("key, metric", [
    ("Flat", 1), ("Flat", 0), ("IVF16,Flat", 1), ("IVF16,PQ4x4np", 1), ("IVF16,SQ8", 1),
    ("PCA12,IVF16,Flat", 1), ("SQ8", 1), ("HNSW16", 1), ("HNSW16", 0)])
def test_selectors_as_faiss(lfaiss, rfaiss, dataset, subset, key, metric):
    local, remote = built(lfaiss, rfaiss, key, metric, dataset)
    xq = dataset[2]
    if "IVF" in key:
        ivf = rfaiss.extract_index_ivf(remote)
        assert ivf.check_ids_sorted() == lfaiss.extract_index_ivf(local).check_ids_sorted()
    radius = 3.0 if metric == 1 else 7.0
    for (kind, lsel), (_, rsel) in zip(selectors(lfaiss, subset), selectors(rfaiss, subset)):
        lp, rp = params_for(lfaiss, key, lsel), params_for(rfaiss, key, rsel)
        expected = local.search(xq, 10, params=lp)
        got = remote.search(xq, 10, params=rp)
        assert_same_search(expected, got)
        labels = expected[1][expected[1] >= 0]
        assert all(lsel.is_member(int(i)) and rsel.is_member(int(i)) for i in labels), kind
        lr = outcome(lambda: local.range_search(xq, radius, params=lp))
        rr = outcome(lambda: remote.range_search(xq, radius, params=rp))
        assert lr[0] == rr[0], (kind, lr, rr)
        if lr[0] == "ok":
            for a, b in zip(lr[1], rr[1]):
                np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)
        else:
            assert lr[1] == rr[1]


def test_selection_changes_results(lfaiss, rfaiss, dataset, subset):
    """A selector the server ignored would fail here."""
    _, remote = built(lfaiss, rfaiss, "Flat", 1, dataset)
    xq = dataset[2]
    _, I0 = remote.search(xq, 10)
    _, I1 = remote.search(xq, 10, params=rfaiss.SearchParameters(
        sel=rfaiss.IDSelectorBatch(subset)))
    assert not np.array_equal(I0, I1)
    assert np.isin(I1[I1 >= 0], subset).all()
    _, I2 = remote.search(xq, 10, params=rfaiss.SearchParameters(
        sel=rfaiss.IDSelectorRange(0, 0)))
    assert (I2 == -1).all()


def test_check_ids_sorted(lfaiss, rfaiss, dataset):
    """IDSelectorRange(.., True) relies on it: false once ids arrive out
    of order, as in FAISS."""
    xt, xb, _ = dataset
    for f in (lfaiss, rfaiss):
        index = f.index_factory(D, "IVF8,Flat")
        index.train(xt)
        index.add(xb[:100])
        assert index.check_ids_sorted()
        index.add_with_ids(xb[100:110], np.arange(10, dtype="int64"))
        assert not index.check_ids_sorted()


def test_max_codes_as_faiss(lfaiss, rfaiss, dataset):
    local, remote = built(lfaiss, rfaiss, "IVF16,Flat", 1, dataset)
    xq = dataset[2]
    results = []
    for index, f in ((local, lfaiss), (remote, rfaiss)):
        for max_codes in (0, 30, 200):
            results.append(index.search(xq, 10, params=f.SearchParametersIVF(
                nprobe=8, max_codes=max_codes)))
    for a, b in zip(results[:3], results[3:]):
        assert_same_search(a, b)
    assert not np.array_equal(results[1][1], results[0][1])     # 30 codes cut it short


@pytest.mark.parametrize("key", ["IDMap,Flat", "PQ4x4np", "LSH", "Flat,RFlat"])
def test_refusals_as_faiss(lfaiss, rfaiss, dataset, subset, key):
    """Indexes for which FAISS 1.7.3 refuses a selector: the server
    answers with FAISS's refusal, and keeps serving."""
    xt, xb, xq = dataset
    outcomes = []
    for f in (lfaiss, rfaiss):
        index = f.index_factory(D, key)
        index.train(xt)
        if key.startswith("IDMap"):
            index.add_with_ids(xb, np.arange(NB, dtype="int64") * 3)
        else:
            index.add(xb)
        p = f.SearchParametersPQ(sel=f.IDSelectorBatch(subset)) if key.startswith("PQ") else \
            f.SearchParameters(sel=f.IDSelectorBatch(subset))
        outcomes.append(outcome(lambda: index.search(xq, 5, params=p)))
        assert index.search(xq, 5)[1].shape == (len(xq), 5)
    assert outcomes[0][0] == outcomes[1][0] == "error"


def test_search_and_reconstruct_with_ivf_params(lfaiss, rfaiss, dataset):
    """SearchParametersIVF (max_codes 0: no limit) still serves it."""
    local, remote = built(lfaiss, rfaiss, "IVF16,Flat", 1, dataset)
    xq = dataset[2]
    expected = local.search_and_reconstruct(xq, 4, params=lfaiss.SearchParametersIVF(nprobe=5))
    got = remote.search_and_reconstruct(xq, 4, params=rfaiss.SearchParametersIVF(nprobe=5))
    assert_same_search(expected[:2], got[:2])
    np.testing.assert_array_equal(got[2], expected[2])


def test_search_and_reconstruct_refuses_selection(rfaiss):
    index = rfaiss.IndexFlatL2(D)
    index.add(np.ones((4, D), dtype="float32"))
    with pytest.raises(RuntimeError, match="not supported"):
        index.search_and_reconstruct(np.ones((1, D), dtype="float32"), 2,
                                     params=rfaiss.SearchParameters(
                                         sel=rfaiss.IDSelectorRange(0, 2)))


def test_deep_selector_refused(rfaiss):
    """More than 16 nodes is refused by the client library before sending
    (the server bounds it too: tests/test_select.c)."""
    index = rfaiss.IndexFlatL2(D)
    index.add(np.ones((4, D), dtype="float32"))
    sel = rfaiss.IDSelectorRange(0, 2)
    for _ in range(16):
        sel = rfaiss.IDSelectorNot(sel)
    with pytest.raises(RuntimeError, match="at most 16"):
        index.search(np.ones((1, D), dtype="float32"), 2, params=rfaiss.SearchParameters(sel=sel))
    assert index.search(np.ones((1, D), dtype="float32"), 2)[1].tolist() == [[0, 1]]
