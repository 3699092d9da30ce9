"""FAISS's extra metrics (L1, Linf, Lp, Canberra, BrayCurtis,
JensenShannon) through faiss_proxy, compared with FAISS in process: flat
indexes, HNSW, IDMap, metric_arg, pairwise_distances, serialization; and
the places the server refuses them (where FAISS would throw inside OpenMP
or sort NaN), with the server still serving afterwards."""
import numpy as np
import pytest

from conftest import server_has

D = 16
EXTRA = ["METRIC_L1", "METRIC_Linf", "METRIC_Lp", "METRIC_Canberra", "METRIC_BrayCurtis",
         "METRIC_JensenShannon"]


@pytest.fixture(scope="module")
def vectors():
    #  Positive components: JensenShannon's logarithms stay finite.
    rs = np.random.RandomState(7)
    xb = (rs.rand(500, D) + 0.01).astype("float32")
    xq = (rs.rand(30, D) + 0.01).astype("float32")
    return xb, xq


def flat_with(f, name, xb, metric_arg=None):
    index = f.IndexFlat(D, getattr(f, name))
    if metric_arg is not None:
        index.metric_arg = metric_arg
    index.add(xb)
    return index


@pytest.mark.parametrize("name", EXTRA)
def test_flat_search_is_faiss(rfaiss, lfaiss, vectors, name):
    xb, xq = vectors
    arg = 3.0 if name == "METRIC_Lp" else None
    local = flat_with(lfaiss, name, xb, arg)
    remote = flat_with(rfaiss, name, xb, arg)
    assert remote.metric_type == local.metric_type == getattr(lfaiss, name)
    if arg is not None:
        assert remote.metric_arg == local.metric_arg == 3.0
    Dl, Il = local.search(xq, 7)
    Dr, Ir = remote.search(xq, 7)
    np.testing.assert_array_equal(Ir, Il)
    np.testing.assert_array_equal(Dr, Dl)      # the same kernel: bit for bit


def test_lp_metric_arg_changes_results(rfaiss, lfaiss, vectors):
    xb, xq = vectors
    remote = flat_with(rfaiss, "METRIC_Lp", xb, 1.0)
    local = flat_with(lfaiss, "METRIC_L1", xb)
    Dr, Ir = remote.search(xq, 5)
    Dl, Il = local.search(xq, 5)
    np.testing.assert_array_equal(Ir, Il)          # Lp with p = 1 is L1
    np.testing.assert_allclose(Dr, Dl, rtol=1e-5)
    remote.metric_arg = 4.0
    local4 = flat_with(lfaiss, "METRIC_Lp", xb, 4.0)
    np.testing.assert_array_equal(remote.search(xq, 5)[1], local4.search(xq, 5)[1])


@pytest.mark.parametrize("name", ["METRIC_L1", "METRIC_Linf", "METRIC_Canberra"])
def test_pairwise_distances_is_faiss(rfaiss, lfaiss, vectors, name):
    xb, xq = vectors
    mt = getattr(lfaiss, name)
    np.testing.assert_array_equal(rfaiss.pairwise_distances(xq, xb[:77], mt),
                                  lfaiss.pairwise_distances(xq, xb[:77], mt))


def test_pairwise_distances_lp_and_l2(rfaiss, lfaiss, vectors):
    xb, xq = vectors
    np.testing.assert_array_equal(
        rfaiss.pairwise_distances(xq, xb, rfaiss.METRIC_Lp, 1.5),
        lfaiss.pairwise_distances(xq, xb, lfaiss.METRIC_Lp, 1.5))
    np.testing.assert_allclose(rfaiss.pairwise_distances(xq, xb),
                               lfaiss.pairwise_distances(xq, xb), rtol=1e-4, atol=1e-4)


def test_pairwise_distances_nan_where_faiss_has_nan(rfaiss, lfaiss):
    #  Canberra of two zero components is 0/0: FAISS's matrix holds NaN.
    x = np.zeros((2, 4), dtype="float32")
    x[1] = 1
    local = lfaiss.pairwise_distances(x, x, lfaiss.METRIC_Canberra)
    remote = rfaiss.pairwise_distances(x, x, rfaiss.METRIC_Canberra)
    assert np.isnan(local[0, 0])
    np.testing.assert_array_equal(np.isnan(remote), np.isnan(local))
    np.testing.assert_array_equal(remote[~np.isnan(local)], local[~np.isnan(local)])


@pytest.mark.parametrize("name", ["METRIC_L1", "METRIC_Linf"])
def test_hnsw_flat_is_faiss(rfaiss, lfaiss, vectors, name):
    #  HNSW's graph depends on the threads that built it, so not label for
    #  label: FAISS's own check (each distance is the metric's distance to
    #  that label) and the same recall of the exact neighbours.
    xb, xq = vectors
    mt = getattr(lfaiss, name)
    exact = lfaiss.pairwise_distances(xq, xb, mt)
    _, Iexact = flat_with(lfaiss, name, xb).search(xq, 5)
    recalls = []
    for f in (lfaiss, rfaiss):
        index = f.IndexHNSWFlat(D, 16, getattr(f, name))
        assert index.metric_type == mt
        index.add(xb)
        Dx, Ix = index.search(xq, 5)
        for q in range(len(xq)):
            np.testing.assert_array_equal(Dx[q], exact[q, Ix[q]])
        recalls.append(np.mean([len(set(a) & set(b)) / 5 for a, b in zip(Ix, Iexact)]))
    assert recalls[1] >= 0.8 and abs(recalls[1] - recalls[0]) <= 0.1, recalls


def test_factory_idmap_flat_and_serialization(rfaiss, lfaiss, vectors, tmp_path):
    xb, xq = vectors
    ids = np.arange(len(xb), dtype="int64") * 3 + 11
    local = lfaiss.index_factory(D, "IDMap,Flat", lfaiss.METRIC_BrayCurtis)
    remote = rfaiss.index_factory(D, "IDMap,Flat", rfaiss.METRIC_BrayCurtis)
    for index in (local, remote):
        index.add_with_ids(xb, ids)
    Dl, Il = local.search(xq, 6)
    np.testing.assert_array_equal(remote.search(xq, 6)[1], Il)
    #  FAISS's format carries metric_arg for these metrics: both ways.
    back = rfaiss.deserialize_index(rfaiss.serialize_index(remote))
    assert back.metric_type == lfaiss.METRIC_BrayCurtis
    np.testing.assert_array_equal(back.search(xq, 6)[1], Il)
    lp = flat_with(lfaiss, "METRIC_Lp", xb, 2.5)
    path = str(tmp_path / "lp.index")
    lfaiss.write_index(lp, path)
    uploaded = rfaiss.read_index(path)
    assert uploaded.metric_type == lfaiss.METRIC_Lp and uploaded.metric_arg == 2.5
    np.testing.assert_array_equal(uploaded.search(xq, 4)[1], lp.search(xq, 4)[1])
    remote_lp = rfaiss.read_index(path)
    rfaiss.write_index(remote_lp, str(tmp_path / "lp2.index"))
    again = lfaiss.read_index(str(tmp_path / "lp2.index"))
    assert again.metric_arg == 2.5


def test_refused_where_faiss_is_unsafe(rfaiss, lfaiss, vectors):
    xb, xq = vectors
    with pytest.raises(RuntimeError, match="metric"):
        rfaiss.index_factory(D, "IVF4,Flat", rfaiss.METRIC_L1)
    with pytest.raises(RuntimeError, match="metric"):
        rfaiss.index_factory(D, "HNSW16,SQ8", rfaiss.METRIC_L1)
    with pytest.raises(RuntimeError, match="NaN"):
        rfaiss.IndexHNSWFlat(D, 16, rfaiss.METRIC_Canberra)
    with pytest.raises(RuntimeError, match="metric"):
        rfaiss.IndexIVFFlat(rfaiss.IndexFlat(D, rfaiss.METRIC_L1), D, 4, rfaiss.METRIC_L1)
    for bad in (5, 19, 23, -1, 1 << 20):
        with pytest.raises(RuntimeError, match="metric"):
            rfaiss.IndexFlat(D, bad)
        with pytest.raises(RuntimeError, match="metric"):
            rfaiss.index_factory(D, "Flat", bad)
    index = rfaiss.IndexFlat(D, rfaiss.METRIC_Lp)
    for bad in (float("nan"), float("inf"), -float("inf"), 1e39):
        with pytest.raises(RuntimeError):
            index.metric_arg = bad
    #  An uploaded IVF with an extra metric is refused after FAISS read it.
    ivf = lfaiss.IndexIVFFlat(lfaiss.IndexFlat(D, lfaiss.METRIC_L1), D, 4, lfaiss.METRIC_L1)
    ivf.train(xb)
    with pytest.raises(RuntimeError, match="metric"):
        rfaiss.deserialize_index(lfaiss.serialize_index(ivf))
    #  Still serving.
    ok = flat_with(rfaiss, "METRIC_L1", xb)
    assert server_has(rfaiss, ok)
    assert ok.search(xq, 1)[1].shape == (len(xq), 1)


def test_range_search_refused_as_faiss(rfaiss, lfaiss, vectors):
    xb, xq = vectors
    local = flat_with(lfaiss, "METRIC_L1", xb)
    remote = flat_with(rfaiss, "METRIC_L1", xb)
    with pytest.raises(RuntimeError, match="metric type not supported"):
        local.range_search(xq, 1.0)
    with pytest.raises(RuntimeError, match="metric type not supported"):
        remote.range_search(xq, 1.0)
