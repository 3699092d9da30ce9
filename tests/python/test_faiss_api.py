"""More of FAISS's Python API through faiss_proxy, compared with FAISS in
process: IndexIVF.cp, IndexRefine (base, refine), search_and_reconstruct,
faiss.cvar; and the refusals that keep the server safe."""
import numpy as np
import pytest

from conftest import assert_same_search

D = 16


@pytest.fixture(scope="module")
def dataset():
    rs = np.random.RandomState(5)
    return (rs.rand(1500, D).astype("float32"), rs.rand(600, D).astype("float32"),
            rs.rand(25, D).astype("float32"))


def test_ivf_cp_fields_train_as_faiss(rfaiss, lfaiss, dataset):
    xt, xb, xq = dataset
    results = []
    for f in (lfaiss, rfaiss):
        index = f.IndexIVFFlat(f.IndexFlatL2(D), D, 16)
        assert index.cp.niter == 10 and index.cp.min_points_per_centroid == 39   # IndexIVF's
        index.cp.min_points_per_centroid = 5
        index.cp.niter = 3
        index.cp.seed = 77
        index.cp.max_points_per_centroid = 50       # 800 of the 1500 points
        assert (index.cp.niter, index.cp.seed, index.cp.min_points_per_centroid,
                index.cp.max_points_per_centroid) == (3, 77, 5, 50)
        index.train(xt)
        index.add(xb)
        index.nprobe = 3
        results.append(index.search(xq, 5))
        results.append(index.quantizer.reconstruct_n(0, 16))
    assert_same_search(results[0], results[2])
    np.testing.assert_allclose(results[3], results[1], rtol=1e-5, atol=1e-6)


def test_ivf_cp_bounds(rfaiss):
    index = rfaiss.IndexIVFFlat(rfaiss.IndexFlatL2(D), D, 4)
    for field, value in (("niter", 0), ("niter", 10 ** 6), ("nredo", 0),
                         ("max_points_per_centroid", 0), ("verbose", True),
                         ("decode_block_size", 0)):
        with pytest.raises(RuntimeError, match="out of range"):
            setattr(index.cp, field, value)
    assert index.cp.niter == 10 and not index.cp.verbose


def test_index_refine_is_faiss(rfaiss, lfaiss, dataset):
    xt, xb, xq = dataset
    results = []
    for f in (lfaiss, rfaiss):
        base = f.index_factory(D, "PQ4x4np")
        base.train(xt)
        base.add(xb)
        flat = f.IndexFlat(D)
        flat.add(xb)
        refine = f.IndexRefine(base, flat)
        refine.k_factor = 8.0
        assert refine.ntotal == len(xb) and refine.k_factor == 8.0
        results.append(refine.search(xq, 6))
        refine.add(xt[:10])                     # to both
        assert refine.base_index.ntotal == refine.refine_index.ntotal == len(xb) + 10
        results.append(refine.search(xq, 6))
    assert_same_search(results[0], results[2])
    assert_same_search(results[1], results[3])


def test_index_refine_refusals(rfaiss, dataset):
    xt, xb, xq = dataset
    flat = rfaiss.IndexFlatL2(D)
    flat.add(xb)
    #  Base labels that are not positions would index the refinement
    #  index out of range inside FAISS.
    idmap = rfaiss.IndexIDMap(rfaiss.IndexFlatL2(D))
    idmap.add_with_ids(xb, np.arange(len(xb), dtype="int64") * 1000)
    with pytest.raises(RuntimeError, match="position"):
        rfaiss.IndexRefine(idmap, flat)
    pq = rfaiss.IndexPQ(D, 4, 4)
    pq.train(xt)
    pq.add(xb)
    with pytest.raises(RuntimeError, match="IndexFlat"):
        rfaiss.IndexRefine(pq, rfaiss.IndexPQ(D, 4, 4))
    short = rfaiss.IndexFlatL2(D)
    short.add(xb[:10])
    with pytest.raises(RuntimeError):          # FAISS's own ntotal check
        rfaiss.IndexRefine(pq, short)
    assert pq.search(xq, 1)[1].shape == (len(xq), 1)   # still serving, pq still usable


def _sar_index(f, kind, xt):
    if kind == "flat":
        return f.IndexFlatL2(D)
    if kind == "pretransform":
        index = f.IndexPreTransform(f.PCAMatrix(D, 8), f.IndexFlatL2(8))
    elif kind == "ivf":
        index = f.IndexIVFFlat(f.IndexFlatL2(D), D, 4)
        index.nprobe = 2
    elif kind == "ivfpq":
        index = f.IndexIVFPQ(f.IndexFlatL2(D), D, 4, 4, 6)
        index.nprobe = 3
    elif kind == "pretransform_ivf":
        index = f.IndexPreTransform(f.RandomRotationMatrix(D, D), f.IndexIVFFlat(f.IndexFlatL2(D), D, 4))
    elif kind == "hnsw":
        index = f.IndexHNSWFlat(D, 8)
    index.train(xt)
    return index


@pytest.mark.parametrize("kind", ["flat", "pretransform", "ivf", "ivfpq", "pretransform_ivf",
                                  "hnsw"])
def test_search_and_reconstruct_is_faiss(rfaiss, lfaiss, dataset, kind):
    #  IVF indexes without a direct map: FAISS reconstructs from the lists.
    xt, xb, xq = dataset
    nb = 8 if kind in ("flat", "pretransform") else 200     # k > ntotal: empty slots
    out = []
    for f in (lfaiss, rfaiss):
        index = _sar_index(f, kind, xt)
        index.add(xb[:nb])
        out.append(index.search_and_reconstruct(xq, 10))
    (Dl, Il, Rl), (Dr, Ir, Rr) = out
    if kind == "hnsw":      # the graph depends on the building threads: FAISS's facts
        found = Ir >= 0
        assert found.all() and np.mean([len(set(a) & set(b)) for a, b in zip(Ir, Il)]) >= 7
        np.testing.assert_array_equal(Rr[found], xb[Ir[found]])     # flat storage: exact
        return
    assert_same_search((Dl, Il), (Dr, Ir), rtol=1e-4)
    assert Rr.shape == Rl.shape == (len(xq), 10, D) and Rr.dtype == np.float32
    empty = Il < 0
    np.testing.assert_array_equal(np.isnan(Rr[empty]), np.isnan(Rl[empty]))
    np.testing.assert_allclose(Rr[~empty], Rl[~empty], rtol=1e-4, atol=1e-5)


def test_search_and_reconstruct_refusals(rfaiss, lfaiss, dataset):
    xt, xb, xq = dataset
    for f in (lfaiss, rfaiss):                  # FAISS's own refusal, both sides
        index = f.IndexIDMap(f.IndexFlatL2(D))
        index.add_with_ids(xb[:20], np.arange(20, dtype="int64") + 100)
        with pytest.raises(RuntimeError):
            index.search_and_reconstruct(xq, 3)
    index = rfaiss.IndexIVFFlat(rfaiss.IndexFlatL2(D), D, 4)
    with pytest.raises(RuntimeError, match="efSearch"):
        index.search_and_reconstruct(xq, 3, params=rfaiss.SearchParametersHNSW(efSearch=4))
    with pytest.raises(AssertionError):
        index.search_and_reconstruct(xq[:, :4], 3)
    assert rfaiss.IndexShards(D).ntotal == 0
    with pytest.raises(RuntimeError, match="no parts"):
        rfaiss.IndexShards(D).search_and_reconstruct(xq, 2)


def test_cvar_blas_settings_kept_locally(rfaiss, lfaiss, dataset):
    xt, xb, xq = dataset
    for name in ("distance_compute_blas_threshold", "distance_compute_blas_query_bs",
                 "distance_compute_blas_database_bs", "distance_compute_min_k_reservoir"):
        assert getattr(rfaiss.cvar, name) == getattr(lfaiss.cvar, name)
    rfaiss.cvar.distance_compute_blas_query_bs = 16
    try:
        assert rfaiss.cvar.distance_compute_blas_query_bs == 16
        index = rfaiss.IndexFlatL2(D)
        index.add(xb)
        local = lfaiss.IndexFlatL2(D)
        local.add(xb)
        assert_same_search(local.search(xq, 4), index.search(xq, 4), rtol=1e-4)
    finally:
        rfaiss.cvar.distance_compute_blas_query_bs = 4096
    with pytest.raises(AttributeError, match="tenant"):
        rfaiss.cvar.indexIVF_stats
    with pytest.raises(AttributeError):
        rfaiss.cvar.no_such_setting = 1


def _shards(f, xb, successive_ids=True, idmap=False):
    shards = f.IndexShards(D, False, successive_ids)
    parts = []
    for i in range(3):
        sub = f.IndexFlatL2(D)
        if idmap:
            sub = f.IndexIDMap(sub)
        elif successive_ids:
            sub.add(xb[i * 200:(i + 1) * 200])
        shards.add_shard(sub)
        parts.append(sub)
    return shards, parts


@pytest.mark.parametrize("idmap", [False, True])
def test_index_shards_is_faiss(rfaiss, lfaiss, dataset, idmap):
    xt, xb, xq = dataset
    out = []
    for f in (lfaiss, rfaiss):
        shards, parts = _shards(f, xb, successive_ids=not idmap, idmap=idmap)
        if idmap:
            shards.add(xb)                  # ids 0..n-1 spread over the shards
        assert shards.ntotal == len(xb) and shards.is_trained
        out.append(shards.search(xq, 8))
        #  A part keeps working on the shard, as in FAISS.
        out.append(parts[1].search(xq, 3))
    assert_same_search(out[0], out[2])
    assert_same_search(out[1], out[3])


def test_index_replicas_is_faiss(rfaiss, lfaiss, dataset):
    xt, xb, xq = dataset
    out = []
    for f in (lfaiss, rfaiss):
        replicas = f.IndexReplicas(D, False)
        parts = [f.IndexFlatL2(D) for _ in range(2)]
        for part in parts:
            replicas.add_replica(part)
        replicas.add(xb)                    # to every replica
        assert replicas.ntotal == len(xb)
        out.append(replicas.search(xq, 5))
    assert_same_search(out[0], out[1])


def test_prepend_transform_is_faiss(rfaiss, lfaiss, dataset):
    xt, xb, xq = dataset
    out = []
    for f in (lfaiss, rfaiss):
        index = f.IndexPreTransform(f.IndexFlatL2(D))
        index.prepend_transform(f.NormalizationTransform(D))
        index.prepend_transform(f.CenteringTransform(D))
        assert index.chain.size() == 2 and index.d == D
        index.train(xt)
        index.add(xb)
        out.append(index.search(xq, 6))
    assert_same_search(out[0], out[1])


def test_attach_refusals(rfaiss, dataset):
    xt, xb, xq = dataset
    shards = rfaiss.IndexShards(D)
    sub = rfaiss.IndexFlatL2(D)
    shards.add_shard(sub)
    with pytest.raises(RuntimeError, match="already part"):
        rfaiss.IndexShards(D).add_shard(sub)            # adopted already
    with pytest.raises(RuntimeError, match="dimension"):
        shards.add_shard(rfaiss.IndexFlatL2(D + 1))
    with pytest.raises(RuntimeError, match="metric"):
        shards.add_shard(rfaiss.IndexFlatIP(D))         # differs from the first shard
    with pytest.raises(RuntimeError, match="trained"):
        shards.add_shard(rfaiss.IndexIVFFlat(rfaiss.IndexFlatL2(D), D, 4))
    with pytest.raises(RuntimeError, match="merge L2"):
        rfaiss.IndexShards(D).add_shard(rfaiss.IndexFlat(D, rfaiss.METRIC_L1))
    replicas = rfaiss.IndexReplicas(D)
    full = rfaiss.IndexFlatL2(D)
    full.add(xb)
    replicas.add_replica(full)
    with pytest.raises(RuntimeError, match="as many vectors"):
        replicas.add_replica(rfaiss.IndexFlatL2(D))
    pt = rfaiss.IndexPreTransform(rfaiss.IndexFlatL2(D))
    with pytest.raises(RuntimeError, match="dimension"):
        pt.prepend_transform(rfaiss.PCAMatrix(D * 2, D))   # would change the index's d
    with pytest.raises(RuntimeError, match="not a vector transform"):
        pt.prepend_transform(rfaiss.IndexFlatL2(D))
    from faiss_proxy import _capi, _client
    loose = rfaiss.IndexFlatL2(D)
    with pytest.raises(RuntimeError, match="not an IndexShards"):
        _client.call(_capi.lib.fpx_attach, pt._name, b"shard", loose._name, None)
    with pytest.raises(RuntimeError, match="unknown role"):
        _client.call(_capi.lib.fpx_attach, shards._name, b"part", loose._name, None)
    with pytest.raises(RuntimeError, match="neither part"):
        _client.call(_capi.lib.fpx_attach, shards._name, b"shard", shards._name, None)
    with pytest.raises(RuntimeError, match="neither part"):     # a part cannot adopt
        _client.call(_capi.lib.fpx_attach, sub._name, b"shard", loose._name, None)
    named = rfaiss.create_index("attach_named", D, "Flat")
    try:
        with pytest.raises(RuntimeError, match="anonymous"):
            _client.call(_capi.lib.fpx_attach, named._name, b"shard", loose._name, None)
    finally:
        rfaiss.drop_index("attach_named")
    #  The group still answers, its parts unchanged.
    assert shards.search(xq, 1)[1].shape == (len(xq), 1) and shards.ntotal == 0
    assert replicas.search(xq, 2)[1].shape == (len(xq), 2)
    with pytest.raises(RuntimeError, match="is not a part"):
        shards.remove_shard(loose)                      # never added
    with pytest.raises(RuntimeError, match="is not a part"):
        replicas.remove_replica(sub)                    # another group's part
    with pytest.raises(RuntimeError, match="not an IndexReplicas"):
        _client.call(_capi.lib.fpx_attach, shards._name, b"remove_replica", sub._name, None)
    with pytest.raises(RuntimeError, match="top-level group"):
        _client.call(_capi.lib.fpx_attach, sub._name, b"remove_shard", loose._name, None)
    assert shards.count() == 1 and shards.at(0) is sub
    #  A group without parts: FAISS's shard search would write past an
    #  empty vector. Refused at the top, and never adopted.
    empty = rfaiss.IndexShards(D)
    with pytest.raises(RuntimeError, match="no parts"):
        empty.search(xq, 3)
    with pytest.raises(RuntimeError, match="no parts"):
        rfaiss.IndexReplicas(D).search(xq, 3)
    with pytest.raises(RuntimeError, match="without parts"):
        rfaiss.IndexIDMap(empty)
    with pytest.raises(RuntimeError, match="without parts"):
        rfaiss.IndexShards(D).add_shard(empty)
    with pytest.raises(RuntimeError, match="without parts"):
        rfaiss.IndexIVFFlat(rfaiss.IndexShards(D), D, 4)
    assert empty.search  # the object is still there
    empty.add_shard(rfaiss.IndexFlatL2(D))
    assert empty.search(xq, 2)[1].shape == (len(xq), 2)


def test_shared_quantizer_is_copied_once_trained(rfaiss, lfaiss, dataset):
    #  FAISS's common pattern: the quantizer trained through a first IVF
    #  index serves a second one. faissproxyd's composites own their parts,
    #  so the second gets a copy of it as it is then: the same results.
    xt, xb, xq = dataset
    out = []
    for f in (lfaiss, rfaiss):
        quantizer = f.IndexFlatL2(D)
        first = f.IndexIVFFlat(quantizer, D, 8)
        first.train(xt)
        first.add(xb[:300])
        second = f.IndexIVFPQ(quantizer, D, 8, 4, 8)
        assert second.quantizer.ntotal == 8
        second.train(xt)                    # the PQ only: the quantizer is trained
        second.add(xb[300:])
        first.nprobe = second.nprobe = 3
        out += [first.search(xq, 5), second.search(xq, 5),
                second.quantizer.reconstruct_n(0, 8)]
    assert_same_search(out[0], out[3])
    assert_same_search(out[1], out[4], rtol=1e-4)
    np.testing.assert_array_equal(out[5], out[2])


def test_ivf_sq_by_residual_is_faiss(rfaiss, lfaiss, dataset):
    xt, xb, xq = dataset
    out = []
    for f in (lfaiss, rfaiss):
        index = f.IndexIVFScalarQuantizer(f.IndexFlatL2(D), D, 8, f.ScalarQuantizer.QT_8bit)
        assert index.by_residual
        index.by_residual = False
        assert not index.by_residual
        index.train(xt)
        index.add(xb)
        index.nprobe = 3
        out.append(index.search(xq, 5))
    assert_same_search(out[0], out[1], rtol=1e-4)
    pq = rfaiss.IndexIVFPQ(rfaiss.IndexFlatL2(D), D, 4, 4, 6)
    assert pq.by_residual
    with pytest.raises(AttributeError, match="read-only"):
        pq.by_residual = False
    from faiss_proxy import _capi, _client
    with pytest.raises(RuntimeError, match="no attribute 'by_residual'"):
        _client.call(_capi.lib.fpx_set_attr, pq._name, b"by_residual", 0.0)   # the server refuses too
    with pytest.raises(RuntimeError, match="out of range"):
        _client.call(_capi.lib.fpx_set_attr, pq._name, b"by_residual", 2.0)


@pytest.mark.parametrize("kind", ["refine", "refine_flat"])
def test_refine_parts_changed_alone_are_refused(rfaiss, dataset, kind):
    #  FAISS's IndexRefine reads its refinement index at the base's labels
    #  without a bound: a part grown or emptied alone (through the Python
    #  object it was built from, or a view) must not reach that read.
    xt, xb, xq = dataset
    base = rfaiss.IndexFlatL2(D)
    if kind == "refine":
        base.add(xb[:50])
        exact = rfaiss.IndexFlatL2(D)
        exact.add(xb[:50])
        refine = rfaiss.IndexRefine(base, exact)
    else:
        refine = rfaiss.IndexRefineFlat(base)
        refine.add(xb[:50])
        exact = refine.refine_index
    refine.k_factor = 4.0
    assert refine.search(xq, 3)[1].shape == (len(xq), 3)
    base.add(xb[50:])                       # the base alone: labels past the refinement index
    with pytest.raises(RuntimeError, match="changed alone"):
        refine.search(xq, 3)
    with pytest.raises(RuntimeError, match="changed alone"):
        refine.range_search(xq, 1.0)
    with pytest.raises(RuntimeError, match="changed alone"):
        refine.search_and_reconstruct(xq, 3)
    with pytest.raises(RuntimeError, match="changed alone"):
        refine.reconstruct(10)
    refine.reset()                          # both parts: consistent again
    refine.add(xb[:20])
    assert refine.search(xq, 2)[1].max() < 20
    exact.reset()                           # the refinement index alone
    with pytest.raises(RuntimeError, match="changed alone"):
        refine.search(xq, 3)
    with pytest.raises(RuntimeError, match="changed alone"):
        refine.reconstruct(5)


@pytest.mark.parametrize("group", ["IndexShards", "IndexReplicas"])
def test_remove_shard_and_replica_as_faiss(rfaiss, lfaiss, dataset, group):
    """remove_shard / remove_replica: the part leaves the group and works
    alone again (its own vectors, its quantizer); the group's ntotal and
    search follow, as in FAISS; removing it twice is FAISS's error."""
    xt, xb, xq = dataset
    seen = []
    for f in (lfaiss, rfaiss):
        quantizers = [f.IndexFlatL2(D), f.IndexFlatL2(D)]
        parts = [f.IndexIVFFlat(q, D, 8) for q in quantizers]
        index = getattr(f, group)(D, True)
        add, remove = ((index.add_shard, index.remove_shard) if group == "IndexShards"
                       else (index.add_replica, index.remove_replica))
        for p in parts:
            add(p)
        index.train(xt)
        index.add(xb)
        for p in parts:
            p.nprobe = 3
        totals = [index.ntotal]
        remove(parts[1])
        totals += [index.ntotal, parts[1].ntotal]
        after = index.search(xq, 5)
        parts[1].add(xb[:7])
        totals += [parts[1].ntotal, quantizers[1].ntotal, index.ntotal]
        alone = parts[1].search(xq, 3)
        remove(parts[0])
        totals.append(index.ntotal)
        with pytest.raises(RuntimeError):
            remove(parts[0])
        totals.append(parts[0].search(xq, 2)[1].shape[0])
        seen.append((totals, after, alone))
    assert seen[0][0] == seen[1][0]
    assert_same_search(seen[0][1], seen[1][1])
    assert_same_search(seen[0][2], seen[1][2])


@pytest.mark.parametrize("key", ["Flat", "PQ4np", "SQ8", "SQ4", "IVF8,Flat", "IVF8,PQ4np",
                                 "IVF8,SQ8", "PCA8,IVF8,SQ8", "OPQ4_8,PQ4np", "LSH"])
def test_standalone_codec_as_faiss(rfaiss, lfaiss, dataset, key):
    """sa_code_size, sa_encode, sa_decode: the same codes and decodings
    as FAISS on the same (uploaded) index; where FAISS has no codec both
    refuse."""
    xt, xb, xq = dataset
    local = lfaiss.index_factory(D, key)
    local.train(xt)
    remote = rfaiss.deserialize_index(lfaiss.serialize_index(local))
    assert remote.sa_code_size() == local.sa_code_size()
    codes = local.sa_encode(xq)
    np.testing.assert_array_equal(remote.sa_encode(xq), codes)
    try:
        expected = local.sa_decode(codes)
    except RuntimeError:
        with pytest.raises(RuntimeError):
            remote.sa_decode(codes)
        return
    np.testing.assert_array_equal(remote.sa_decode(codes), expected)


def test_standalone_codec_refusals(rfaiss, lfaiss, dataset):
    xt, xb, xq = dataset
    ivf = rfaiss.index_factory(D, "IVF8,Flat")
    with pytest.raises(RuntimeError, match="not trained"):
        ivf.sa_encode(xq)
    ivf.train(xt)
    codes = ivf.sa_encode(xq[:2])
    codes[1, 0] = 200                       # list 200 of 8: FAISS would read past its centroids
    with pytest.raises(RuntimeError, match="list_no < nlist"):     # FAISS's own check
        ivf.sa_decode(codes)
    hnsw = rfaiss.index_factory(D, "HNSW8")
    with pytest.raises(RuntimeError, match="not implemented"):     # FAISS's
        hnsw.sa_code_size()
    pqr = rfaiss.index_factory(D, "IVF4,PQ4+4")
    pqr.train(xt)
    with pytest.raises(RuntimeError, match="not served for IndexIVFPQR"):
        pqr.sa_decode(pqr.sa_encode(xq[:1]))
    rq = rfaiss.index_factory(D, "RQ1x4")
    rq.train(xt)
    with pytest.raises(RuntimeError, match="served for Flat, PQ, SQ, LSH"):
        rq.sa_decode(rq.sa_encode(xq[:1]))
    flat = rfaiss.IndexFlatL2(D)
    assert flat.sa_decode(flat.sa_encode(xq)).tolist() == xq.tolist()


@pytest.mark.parametrize("key", ["IVF8,Flat", "IVF8,PQ4np", "Flat", "SQ8"])
def test_merge_from_as_faiss(rfaiss, lfaiss, dataset, key):
    """merge_from (FAISS's test_index_composite pattern): the merged index
    searches as FAISS's, the other is left empty; an IVF then removes the
    merged ids again."""
    xt, xb, xq = dataset
    seen = []
    for f in (lfaiss, rfaiss):
        a = f.index_factory(D, key)
        a.train(xt)
        b = f.clone_index(a)
        a.add(xb[:300])
        b.add(xb[300:])
        ivf = "IVF" in key
        a.merge_from(b, 300 if ivf else 0)
        out = [a.ntotal, b.ntotal, a.search(xq, 6)]
        if ivf:
            a.remove_ids(f.IDSelectorRange(300, 600))
            out += [a.ntotal, a.search(xq, 6)]
        seen.append(out)
    assert seen[0][:2] == seen[1][:2] == [600, 0]
    assert_same_search(seen[0][2], seen[1][2])
    if len(seen[0]) > 3:
        assert seen[0][3] == seen[1][3] == 300
        assert_same_search(seen[0][4], seen[1][4])


def test_merge_from_refusals(rfaiss, lfaiss, dataset):
    xt, xb, xq = dataset
    a = rfaiss.index_factory(D, "IVF8,Flat")
    a.train(xt)
    a.add(xb[:10])
    with pytest.raises(RuntimeError, match="two anonymous indexes"):
        a.merge_from(a)
    with pytest.raises(RuntimeError, match="standalone"):
        a.merge_from(a.quantizer)                       # a part of a
    other = rfaiss.index_factory(D, "IVF8,Flat")
    other.train(xb)                                     # other centroids: FAISS refuses
    other.add(xb[:5])
    with pytest.raises(RuntimeError, match="coarse quantizers should be the same"):
        a.merge_from(other)
    twin = rfaiss.clone_index(a)
    twin.add_with_ids(xb[:1], np.array([2 ** 63 - 5], dtype="int64"))
    with pytest.raises(RuntimeError, match="overflows"):
        a.merge_from(twin, 10)
    assert a.ntotal == 10 and twin.ntotal == 11         # nothing moved
    hnsw = rfaiss.index_factory(D, "HNSW8")
    with pytest.raises(RuntimeError, match="served for flat-code"):
        hnsw.merge_from(rfaiss.index_factory(D, "HNSW8"))
    flat = rfaiss.IndexFlatL2(D)
    with pytest.raises(RuntimeError, match="cannot set ids"):      # FAISS's
        flat.merge_from(rfaiss.IndexFlatL2(D), 3)
