"""Methods, module functions, constants and errors of faiss_proxy, each
compared with local FAISS doing the same on the same data."""
import pickle

import numpy as np
import pytest

from conftest import assert_same_search


def both(lfaiss, rfaiss, build):
    return build(lfaiss), build(rfaiss)


def filled(f, data, kind="flat"):
    xt, xb, _ = data
    d = xb.shape[1]
    if kind == "flat":
        index = f.IndexFlatL2(d)
    elif kind == "ip":
        index = f.IndexFlatIP(d)
    elif kind == "ivf":
        index = f.IndexIVFFlat(f.IndexFlatL2(d), d, 16)
        index.train(xt)
        index.nprobe = 4
    elif kind == "idmap2":
        index = f.IndexIDMap2(f.IndexFlatL2(d))
        index.add_with_ids(xb, np.arange(len(xb)) * 10 + 5)
        return index
    index.add(xb)
    return index


# ---- inputs -------------------------------------------------------------


def test_search_accepts_float64_noncontiguous_and_lists(lfaiss, rfaiss, data):
    _, xb, xq = data
    local, remote = both(lfaiss, rfaiss, lambda f: filled(f, data))
    expected = local.search(xq, 5)
    assert_same_search(expected, remote.search(xq.astype("float64"), 5))
    wide = np.zeros((len(xq), 64), dtype="float32")
    wide[:, ::2] = xq
    strided = wide[:, ::2]
    assert not strided.flags.c_contiguous
    assert_same_search(local.search(strided, 5), remote.search(strided, 5))
    fortran = np.asfortranarray(xq)
    assert_same_search(local.search(fortran, 5), remote.search(fortran, 5))
    assert_same_search(expected, remote.search(xq.tolist(), 5))
    # numpy integer k, caller's output arrays filled in place
    D = np.empty((len(xq), 5), dtype="float32")
    I = np.empty((len(xq), 5), dtype="int64")
    D2, I2 = remote.search(xq, np.int64(5), D=D, I=I)
    assert D2 is D and I2 is I
    assert_same_search(expected, (D, I))


def test_add_accepts_float64_and_noncontiguous(lfaiss, rfaiss, data):
    _, xb, xq = data
    local, remote = both(lfaiss, rfaiss, lambda f: f.IndexFlatL2(xb.shape[1]))
    for index in (local, remote):
        index.add(xb[:500].astype("float64"))
        index.add(xb[500:1500:2])
        index.add(np.asfortranarray(xb[1500:]))
    assert remote.ntotal == local.ntotal
    assert_same_search(local.search(xq, 4), remote.search(xq, 4))


def test_empty_inputs(lfaiss, rfaiss, data):
    _, xb, xq = data
    d = xb.shape[1]
    local, remote = both(lfaiss, rfaiss, lambda f: filled(f, data))
    empty = np.zeros((0, d), dtype="float32")
    for index in (local, remote):
        index.add(empty)
    assert remote.ntotal == local.ntotal == len(xb)
    Dl, Il = local.search(empty, 7)
    Dr, Ir = remote.search(empty, 7)
    assert (Dr.shape, Ir.shape, Dr.dtype, Ir.dtype) == (Dl.shape, Il.shape, Dl.dtype, Il.dtype)
    assert Dr.shape == (0, 7)
    for got, want in zip(remote.range_search(empty, 1.0), local.range_search(empty, 1.0)):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
    assert remote.remove_ids(np.zeros(0, dtype="int64")) == local.remove_ids(
        np.zeros(0, dtype="int64")) == 0
    assert remote.reconstruct_n(0, 0).shape == local.reconstruct_n(0, 0).shape == (0, d)
    # an empty index answers -1 / +inf, as FAISS
    el, er = both(lfaiss, rfaiss, lambda f: f.IndexFlatL2(d))
    assert_same_search(el.search(xq[:3], 2), er.search(xq[:3], 2))


def test_shape_and_k_checks_raise_assertion_error(lfaiss, rfaiss, data):
    _, xb, xq = data
    bad = np.zeros((3, xb.shape[1] + 1), dtype="float32")
    for f in (lfaiss, rfaiss):
        index = filled(f, data)
        with pytest.raises(AssertionError):
            index.search(bad, 3)
        with pytest.raises(AssertionError):
            index.search(xq, 0)
        with pytest.raises(AssertionError):
            index.add(bad)
        with pytest.raises(AssertionError):
            index.train(bad)
        with pytest.raises(AssertionError):
            index.range_search(bad, 1.0)
        with pytest.raises(AssertionError, match="not same nb of vectors as ids"):
            f.IndexIDMap(f.IndexFlatL2(xb.shape[1])).add_with_ids(xb[:5], np.arange(4))
        with pytest.raises(AssertionError):
            index.search(xq, 2, D=np.empty((1, 1), dtype="float32"))
        with pytest.raises(ValueError):
            index.search(xq[0], 2)        # 1-D: FAISS's `n, d = x.shape` fails


def faiss_error(call):
    with pytest.raises(RuntimeError) as info:
        call()
    return str(info.value)


def test_faiss_errors_are_runtime_errors_with_faiss_message(lfaiss, rfaiss, data):
    xt, xb, xq = data
    d = xb.shape[1]
    messages = []
    for f in (lfaiss, rfaiss):
        untrained = f.IndexIVFFlat(f.IndexFlatL2(d), d, 8)
        ivf = filled(f, data, "ivf")
        hnsw = f.IndexHNSWFlat(d, 8)
        hnsw.add(xb[:50])
        idmap = f.IndexIDMap(f.IndexFlatL2(d))
        messages.append([
            faiss_error(lambda: untrained.add(xb[:10])),
            faiss_error(lambda: hnsw.add_with_ids(xb[:3], np.arange(3))),
            faiss_error(lambda: idmap.add(xb[:3])),
            faiss_error(lambda: f.index_factory(d, "IVF16,Nonsense")),
            faiss_error(lambda: f.ParameterSpace().set_index_parameter(ivf, "nosuch", 3)),
        ])
    lmsg, rmsg = messages
    assert rmsg == lmsg
    assert "is_trained" in rmsg[0]
    err = None
    try:
        rfaiss.IndexIVFFlat(rfaiss.IndexFlatL2(d), d, 8).add(xb[:1])
    except RuntimeError as e:
        err = e
    assert isinstance(err, rfaiss._client.FaissProxyError)
    assert err.code_name == "FPX_EFAISS"


def test_attributes(lfaiss, rfaiss, data):
    _, xb, _ = data
    local, remote = both(lfaiss, rfaiss, lambda f: filled(f, data, "ivf"))
    for name in ("ntotal", "d", "is_trained", "metric_type", "nprobe", "nlist", "verbose"):
        lv, rv = getattr(local, name), getattr(remote, name)
        assert (type(rv), rv) == (type(lv), lv), name
    remote.nprobe = 9
    assert remote.nprobe == 9
    remote.verbose = True
    assert remote.verbose is True
    with pytest.raises(AttributeError):
        remote.no_such_attribute
    with pytest.raises(AttributeError):
        rfaiss.IndexFlatL2(4).nprobe
    with pytest.raises(AttributeError):
        remote.ntotal = 3
    with pytest.raises(TypeError):
        remote.nprobe = 2.5
    remote.my_note = "kept"          # FAISS objects take new Python attributes too
    assert remote.my_note == "kept"
    with pytest.raises(AttributeError):
        rfaiss.NoSuchClass
    with pytest.raises(AttributeError):
        rfaiss.Index()


# ---- operations ---------------------------------------------------------


@pytest.mark.parametrize("kind,radius", [("flat", 3.5), ("ip", 9.0), ("ivf", 3.5)])
def test_range_search(lfaiss, rfaiss, data, kind, radius):
    _, _, xq = data
    local, remote = both(lfaiss, rfaiss, lambda f: filled(f, data, kind))
    lres, rres = local.range_search(xq, radius), remote.range_search(xq, radius)
    for got, want in zip(rres, lres):
        assert got.dtype == want.dtype
    np.testing.assert_array_equal(rres[0], lres[0])
    np.testing.assert_array_equal(rres[2], lres[2])
    np.testing.assert_allclose(rres[1], lres[1], rtol=1e-5)
    assert lres[0][-1] > 0


def test_search_parameters(lfaiss, rfaiss, data):
    _, _, xq = data
    local, remote = both(lfaiss, rfaiss, lambda f: filled(f, data, "ivf"))
    for nprobe in (1, 3, 16):
        lp = lfaiss.SearchParametersIVF(nprobe=nprobe)
        rp = rfaiss.SearchParametersIVF(nprobe=nprobe)
        assert_same_search(local.search(xq, 6, params=lp), remote.search(xq, 6, params=rp))
        lr = local.range_search(xq, 3.5, params=lp)
        rr = remote.range_search(xq, 3.5, params=rp)
        np.testing.assert_array_equal(rr[0], lr[0])
        np.testing.assert_array_equal(rr[2], lr[2])
    assert remote.nprobe == 4           # per request: the index is unchanged
    assert rfaiss.IVFSearchParameters is rfaiss.SearchParametersIVF
    with pytest.raises(AssertionError):
        rfaiss.SearchParametersIVF(nprob=3)
    # an id selector, as FAISS (more in test_select.py)
    assert_same_search(
        local.search(xq, 3, params=lfaiss.SearchParametersIVF(sel=lfaiss.IDSelectorRange(0, 9))),
        remote.search(xq, 3, params=rfaiss.SearchParametersIVF(sel=rfaiss.IDSelectorRange(0, 9))))


def test_remove_ids(lfaiss, rfaiss, data):
    _, xb, xq = data
    for kind in ("flat", "ivf", "idmap2"):
        local, remote = both(lfaiss, rfaiss, lambda f: filled(f, data, kind))
        step = 10 if kind == "idmap2" else 1
        ops = [
            lambda f: np.arange(0, 40 * step, 3 * step),
            lambda f: f.IDSelectorBatch(np.array([5, 15, 25, 7 * step]) * 1),
            lambda f: f.IDSelectorRange(100 * step, 150 * step),
            lambda f: f.IDSelectorArray(np.arange(200 * step, 220 * step, step)),
        ]
        for op in ops:
            assert remote.remove_ids(op(rfaiss)) == local.remove_ids(op(lfaiss))
            assert remote.ntotal == local.ntotal
        assert_same_search(local.search(xq, 8), remote.search(xq, 8))


def test_reconstruct_reset_assign(lfaiss, rfaiss, data):
    _, xb, xq = data
    local, remote = both(lfaiss, rfaiss, lambda f: filled(f, data))
    np.testing.assert_array_equal(remote.reconstruct(17), local.reconstruct(17))
    np.testing.assert_array_equal(remote.reconstruct(np.int64(3)), xb[3])
    np.testing.assert_array_equal(remote.reconstruct_n(10, 20), local.reconstruct_n(10, 20))
    np.testing.assert_array_equal(remote.reconstruct_n(0, remote.ntotal), xb)
    np.testing.assert_array_equal(remote.reconstruct_batch([4, 9]), xb[[4, 9]])
    out = np.zeros(xb.shape[1], dtype="float32")
    assert remote.reconstruct(5, out) is out
    np.testing.assert_array_equal(out, xb[5])
    np.testing.assert_array_equal(remote.assign(xq, 3), local.assign(xq, 3))
    local.reset()
    remote.reset()
    assert remote.ntotal == local.ntotal == 0
    assert_same_search(local.search(xq[:2], 2), remote.search(xq[:2], 2))
    with pytest.raises(RuntimeError):
        remote.reconstruct(0)           # local FAISS would read out of bounds here
    # IVF: with a direct map; IDMap2: by id
    ivf_l, ivf_r = both(lfaiss, rfaiss, lambda f: filled(f, data, "ivf"))
    for index in (ivf_l, ivf_r):
        index.make_direct_map()
    np.testing.assert_array_equal(ivf_r.reconstruct(42), ivf_l.reconstruct(42))
    np.testing.assert_array_equal(ivf_r.reconstruct_n(0, 30), ivf_l.reconstruct_n(0, 30))
    map_l, map_r = both(lfaiss, rfaiss, lambda f: filled(f, data, "idmap2"))
    np.testing.assert_array_equal(map_r.reconstruct(15), map_l.reconstruct(15))
    np.testing.assert_array_equal(rfaiss.vector_to_array(map_r.id_map),
                                  lfaiss.vector_to_array(map_l.id_map))
    assert map_r.id_map.size() == map_l.id_map.size()
    assert map_r.id_map.at(3) == map_l.id_map.at(3)


def test_ivf_reconstruct_needs_a_direct_map_as_in_faiss(lfaiss, rfaiss, data):
    """IndexIVF.reconstruct(key) looks the key up in the direct map: FAISS
    raises without one. The server must not answer with a vector it did
    not look up (nor with unwritten memory for an id it lacks)."""
    local, remote = both(lfaiss, rfaiss, lambda f: filled(f, data, "ivf"))
    lmsg = faiss_error(lambda: local.reconstruct(3))
    assert faiss_error(lambda: remote.reconstruct(3)) == lmsg
    for index in (local, remote):
        index.make_direct_map()
    np.testing.assert_array_equal(remote.reconstruct(6), local.reconstruct(6))
    for index in (local, remote):
        index.set_direct_map_type(lfaiss.DirectMap.NoMap)
    assert faiss_error(lambda: remote.reconstruct(42)) == faiss_error(lambda: local.reconstruct(42))


def test_remove_ids_with_hashtable_direct_map(lfaiss, rfaiss, data):
    local, remote = both(lfaiss, rfaiss, lambda f: filled(f, data, "ivf"))
    for index in (local, remote):
        index.set_direct_map_type(lfaiss.DirectMap.Hashtable)
    assert local.remove_ids(np.array([5, 9])) == 2
    assert remote.remove_ids(np.array([5, 9])) == 2
    np.testing.assert_array_equal(remote.reconstruct(6), local.reconstruct(6))
    assert faiss_error(lambda: remote.reconstruct(5)) == faiss_error(lambda: local.reconstruct(5))


def test_parameter_space(lfaiss, rfaiss, data):
    _, _, xq = data
    local, remote = both(lfaiss, rfaiss, lambda f: filled(f, data, "ivf"))
    for f, index in ((lfaiss, local), (rfaiss, remote)):
        ps = f.ParameterSpace()
        ps.set_index_parameter(index, "nprobe", 7)
        assert index.nprobe == 7
        ps.set_index_parameters(index, "nprobe=2")
    assert remote.nprobe == local.nprobe == 2
    assert_same_search(local.search(xq, 5), remote.search(xq, 5))
    hl, hr = both(lfaiss, rfaiss, lambda f: f.IndexHNSWFlat(xq.shape[1], 8))
    for f, index in ((lfaiss, hl), (rfaiss, hr)):
        f.ParameterSpace().set_index_parameter(index, "efSearch", 77)
    assert hr.hnsw.efSearch == hl.hnsw.efSearch == 77


def test_downcast_extract_clone(lfaiss, rfaiss, data):
    xt, xb, xq = data
    d = xb.shape[1]
    out = []
    for f in (lfaiss, rfaiss):
        index = f.index_factory(d, "PCA16,IVF8,Flat")
        index.train(xt)
        index.add(xb)
        ivf = f.extract_index_ivf(index)
        ivf.nprobe = 3
        assert f.extract_index_ivf(ivf).nprobe == 3
        quantizer = f.downcast_index(ivf.quantizer)
        twin = f.clone_index(index)
        twin.add(xb[:10])
        pre = f.downcast_index(index)
        vt = f.downcast_VectorTransform(pre.chain.at(0))
        out.append([type(index).__name__, type(f.downcast_index(ivf)).__name__,
                    type(quantizer).__name__,
                    quantizer.ntotal, index.ntotal, twin.ntotal, type(vt).__name__, vt.d_out,
                    f.try_extract_index_ivf(f.IndexFlatL2(4)),
                    index.search(xq, 5), twin.search(xq, 5), pre.index.ntotal])
    lout, rout = out
    for i in (10, 9):
        assert_same_search(lout.pop(i), rout.pop(i))
    assert rout == lout
    with pytest.raises(RuntimeError):
        rfaiss.extract_index_ivf(rfaiss.IndexFlatL2(4))


def test_serialize_write_read_pickle(lfaiss, rfaiss, data, tmp_path):
    xt, xb, xq = data
    local, remote = both(lfaiss, rfaiss, lambda f: filled(f, data, "ivf"))
    blob = rfaiss.serialize_index(remote)
    assert blob.dtype == np.uint8 and blob.ndim == 1
    np.testing.assert_array_equal(blob, lfaiss.serialize_index(local))
    # bytes made remotely read locally, and the other way round
    assert_same_search(local.search(xq, 5), lfaiss.deserialize_index(blob).search(xq, 5))
    up = rfaiss.deserialize_index(lfaiss.serialize_index(local))
    assert type(up).__name__ == "IndexIVFFlat"
    assert up.nprobe == 4
    assert_same_search(local.search(xq, 5), up.search(xq, 5))
    # files on this machine
    path = str(tmp_path / "remote.index")
    rfaiss.write_index(remote, path)
    assert_same_search(local.search(xq, 5), lfaiss.read_index(path).search(xq, 5))
    lfaiss.write_index(local, str(tmp_path / "local.index"))
    back = rfaiss.read_index(str(tmp_path / "local.index"))
    assert_same_search(local.search(xq, 5), back.search(xq, 5))
    with pytest.raises(RuntimeError):
        rfaiss.read_index(str(tmp_path / "missing.index"))
    # pickle (through serialize_index, as FAISS)
    copy = pickle.loads(pickle.dumps(remote))
    assert type(copy) is type(remote) and copy._name != remote._name
    assert_same_search(local.search(xq, 5), copy.search(xq, 5))
    lcopy = pickle.loads(pickle.dumps(local))
    assert_same_search(lcopy.search(xq, 5), copy.search(xq, 5))


# ---- module functions ---------------------------------------------------


def test_normalize_L2(lfaiss, rfaiss, data):
    _, xb, _ = data
    a = xb[:100].copy()
    a[7] = 0
    b = a.copy()
    lfaiss.normalize_L2(a)
    assert rfaiss.normalize_L2(b) is None
    np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)
    assert np.all(b[7] == 0)
    with pytest.raises(TypeError):
        rfaiss.normalize_L2(xb[:3].astype("float64"))


@pytest.mark.parametrize("metric", ["METRIC_L2", "METRIC_INNER_PRODUCT"])
def test_knn(lfaiss, rfaiss, data, metric):
    _, xb, xq = data
    assert_same_search(lfaiss.knn(xq, xb, 6, getattr(lfaiss, metric)),
                       rfaiss.knn(xq, xb, 6, getattr(rfaiss, metric)))


def test_kmeans(lfaiss, rfaiss, data):
    xt, _, xq = data
    d = xt.shape[1]
    res = []
    for f in (lfaiss, rfaiss):
        km = f.Kmeans(d, 20, niter=12, seed=7, verbose=False)
        obj = km.train(xt)
        D, I = km.assign(xq)
        _, I2 = km.index.search(xq, 1)
        res.append((km.centroids, km.obj, obj, D, I, I2.ravel(), km.index.ntotal,
                    len(km.iteration_stats)))
    (lc, lo, lobj, lD, lI, lI2, ln, ls), (rc, ro, robj, rD, rI, rI2, rn, rs) = res
    assert rc.shape == lc.shape == (20, d) and rc.dtype == np.float32
    np.testing.assert_allclose(rc, lc, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ro, lo, rtol=1e-5)
    assert abs(robj - lobj) <= 1e-5 * abs(lobj)
    np.testing.assert_array_equal(rI, lI)
    np.testing.assert_array_equal(rI2, lI2)
    np.testing.assert_allclose(rD, lD, rtol=1e-5, atol=1e-5)
    assert (rn, rs) == (ln, ls) == (20, 12)
    with pytest.raises(AttributeError):
        rfaiss.Kmeans(d, 4, no_such_field=1)
    # faiss.Clustering with a caller's index
    out = []
    for f in (lfaiss, rfaiss):
        clus = f.Clustering(d, 10)
        clus.niter = 5
        clus.seed = 3
        index = f.IndexFlatL2(d)
        clus.train(xt, index)
        out.append((f.vector_float_to_array(clus.centroids), index.ntotal))
    np.testing.assert_allclose(out[1][0], out[0][0], rtol=1e-5, atol=1e-6)
    assert out[1][1] == out[0][1] == 10


def test_constants_and_small_functions(lfaiss, rfaiss):
    for name in ("METRIC_L2", "METRIC_INNER_PRODUCT", "METRIC_L1", "METRIC_Linf", "METRIC_Lp",
                 "METRIC_Canberra", "METRIC_BrayCurtis", "METRIC_JensenShannon",
                 "IO_FLAG_MMAP", "IO_FLAG_READ_ONLY"):
        assert getattr(rfaiss, name) == getattr(lfaiss, name), name
    for name in ("QT_8bit", "QT_4bit", "QT_8bit_uniform", "QT_4bit_uniform", "QT_fp16",
                 "QT_8bit_direct", "QT_6bit"):
        assert getattr(rfaiss.ScalarQuantizer, name) == getattr(lfaiss.ScalarQuantizer, name)
    assert (rfaiss.DirectMap.NoMap, rfaiss.DirectMap.Array, rfaiss.DirectMap.Hashtable) == \
        (lfaiss.DirectMap.NoMap, lfaiss.DirectMap.Array, lfaiss.DirectMap.Hashtable)
    assert rfaiss.get_num_gpus() == lfaiss.get_num_gpus() == 0
    assert rfaiss.__version__ == lfaiss.__version__
    rfaiss.omp_set_num_threads(3)
    assert rfaiss.omp_get_max_threads() == 3
    assert isinstance(rfaiss.omp_get_max_threads(), int)
    assert "IndexFlatL2" in dir(rfaiss) and "IndexFlatL2" in rfaiss.__all__


def test_random_generators_match_faiss(lfaiss, rfaiss):
    for n in (7, 1024, 5001, (30, 40)):
        for seed in (12345, 3, 2 ** 40 + 17):
            np.testing.assert_array_equal(rfaiss.rand(n, seed), lfaiss.rand(n, seed))
            np.testing.assert_array_equal(rfaiss.randn(n, seed), lfaiss.randn(n, seed))
            np.testing.assert_array_equal(rfaiss.randint(n, seed), lfaiss.randint(n, seed))
            np.testing.assert_array_equal(rfaiss.randint(n, seed, vmax=77),
                                          lfaiss.randint(n, seed, vmax=77))
    assert rfaiss.rand(5).dtype == np.float32 and rfaiss.lrand(5).dtype == np.int64


def test_eval_intersection(lfaiss, rfaiss):
    rs = np.random.RandomState(5)
    I1 = rs.randint(-1, 30, size=(50, 10))
    I2 = rs.randint(-1, 30, size=(50, 7))
    assert rfaiss.eval_intersection(I1, I2) == lfaiss.eval_intersection(I1, I2)


def test_requests_cut_in_pieces(lfaiss, rfaiss, data, monkeypatch):
    """Arrays larger than one request are sent in pieces: same results."""
    from faiss_proxy import _remote
    monkeypatch.setattr(_remote, "_CHUNK_BYTES", 4096)
    xt, xb, xq = data
    local, remote = both(lfaiss, rfaiss, lambda f: filled(f, data, "ivf"))
    for index in (local, remote):
        index.add_with_ids(xb[:300], np.arange(300) + 10 ** 6)
    assert remote.ntotal == local.ntotal
    assert_same_search(local.search(xq, 20), remote.search(xq, 20))
    lres, rres = local.range_search(xq, 3.5), remote.range_search(xq, 3.5)
    for got, want in zip(rres, lres):
        np.testing.assert_array_equal(got, want)
    flat_l, flat_r = both(lfaiss, rfaiss, lambda f: filled(f, data))
    np.testing.assert_array_equal(flat_r.reconstruct_n(0, 500), flat_l.reconstruct_n(0, 500))


def test_misc_errors(rfaiss, data, tmp_path):
    _, xb, _ = data
    path = tmp_path / "half.index"
    index = rfaiss.IndexFlatL2(8)
    index.add(xb[:100, :8])
    blob = rfaiss.serialize_index(index)
    path.write_bytes(blob[: blob.size // 2].tobytes())
    with pytest.raises(RuntimeError) as info:
        rfaiss.read_index(str(path))
    assert str(path) in str(info.value)        # FAISS names the file too
    vt = rfaiss.PCAMatrix(8, 8)
    rfaiss.IndexPreTransform(vt, rfaiss.IndexFlatL2(8))
    with pytest.raises(RuntimeError, match="already part of another index"):
        rfaiss.IndexPreTransform(vt, rfaiss.IndexFlatL2(8))    # indexes are copied, not transforms
    with pytest.raises(TypeError):
        pickle.dumps(rfaiss.PCAMatrix(8, 4))
    with pytest.raises(RuntimeError, match="not supported"):
        rfaiss.Kmeans(8, 2, spherical=True).train(xb[:100, :8])
