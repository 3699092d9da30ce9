"""IndexShards / IndexReplicas whose parts live on three faissproxyd
servers (faiss_proxy.connect): every result equals FAISS in process, both
its IndexShards / IndexReplicas of local parts and one local index holding
everything; the queries of a replicated search are split over the
servers; a server that is gone gives an error naming it."""
import numpy as np
import pytest

import fpx_server
from conftest import assert_same_search

D = 16
NSERVERS = 3


@pytest.fixture(scope="module")
def daemons():
    started = []
    try:
        for _ in range(NSERVERS):
            started.append(fpx_server.Server(workers=2).start())
        yield started
    finally:
        for s in started:
            rc = s.stop()
            log = s.log()
            s.cleanup()
            assert rc == 0, "faissproxyd exited with %r; log:\n%s" % (rc, log)


@pytest.fixture(scope="module")
def servers(rfaiss, daemons):
    return [rfaiss.connect(s.endpoint, api_key=s.key, timeout_ms=120000) for s in daemons]


@pytest.fixture(scope="module")
def vectors():
    rs = np.random.RandomState(7)
    xt = rs.rand(2000, D).astype("float32")
    xb = rs.rand(1500, D).astype("float32")
    xq = rs.rand(40, D).astype("float32")
    ids = rs.permutation(10 ** 6)[:len(xb)].astype("int64") * 7 + 3
    return xt, xb, xq, ids


def _metric(f, name):
    return f.METRIC_L2 if name == "L2" else f.METRIC_INNER_PRODUCT


def _part(f, factory, metric, xt, srv=None):
    if srv is None:
        index = f.index_factory(D, factory, _metric(f, metric))
    else:
        with srv:
            index = f.index_factory(D, factory, _metric(f, metric))
    if not index.is_trained:
        index.train(xt)         # the same k-means, seeded: the same lists in every part
    if "IVF" in factory:
        f.extract_index_ivf(index).nprobe = 4
    return index


def _same_range(local, remote):
    """Equal per query as sets of (label, distance): the merge order of a
    range search is the shards' order, not the distances'."""
    (ll, Dl, Il), (lr, Dr, Ir) = local, remote
    np.testing.assert_array_equal(lr.astype(np.int64), ll.astype(np.int64))
    for q in range(len(ll) - 1):
        a, b = int(ll[q]), int(ll[q + 1])
        ol, orr = np.argsort(Il[a:b]), np.argsort(Ir[a:b])
        np.testing.assert_array_equal(Ir[a:b][orr], Il[a:b][ol])
        np.testing.assert_allclose(Dr[a:b][orr], Dl[a:b][ol], rtol=1e-5, atol=1e-5)


CASES = [   # factory, successive_ids, how the vectors go in
    ("Flat", True, "add"),
    ("IDMap,Flat", False, "add"),            # ids ntotal + i, in two adds
    ("IDMap,Flat", False, "add_with_ids"),
    ("IVF16,Flat", True, "add"),
    ("IVF16,Flat", False, "add_with_ids"),
]


@pytest.mark.parametrize("metric", ["L2", "IP"])
@pytest.mark.parametrize("factory,successive,how", CASES)
def test_shards_over_three_servers_are_faiss(rfaiss, lfaiss, servers, vectors, metric,
                                             factory, successive, how):
    xt, xb, xq, ids = vectors
    built = {}
    for name, f, where in (("local", lfaiss, [None] * NSERVERS), ("remote", rfaiss, servers)):
        shards = f.IndexShards(D, False, successive)
        for srv in where:
            shards.add_shard(_part(f, factory, metric, xt, srv))
        if how == "add_with_ids":
            shards.add_with_ids(xb, ids)
        elif successive:
            shards.add(xb)
        else:
            shards.add(xb[:700])
            shards.add(xb[700:])
        built[name] = shards
    local, remote = built["local"], built["remote"]
    assert remote._spread and remote.count() == NSERVERS
    assert remote.ntotal == local.ntotal == len(xb)
    assert remote.is_trained and remote.metric_type == local.metric_type
    #  Each server holds its part of every batch, as FAISS cuts it.
    assert [remote.at(i).ntotal for i in range(NSERVERS)] == \
        [local.at(i).ntotal for i in range(NSERVERS)]

    #  One index holding everything (ids as the shards give them).
    whole = _part(lfaiss, factory, metric, xt)
    if how == "add_with_ids":
        whole.add_with_ids(xb, ids)
    elif successive:
        whole.add(xb)
    else:
        whole.add_with_ids(xb, np.arange(len(xb), dtype="int64"))

    for k in (1, 10):
        result = remote.search(xq, k)
        assert_same_search(local.search(xq, k), result)
        assert_same_search(whole.search(xq, k), result)

    radius = 0.6 if metric == "L2" else 4.5
    lims, Dr, Ir = remote.range_search(xq, radius)
    assert 0 < lims[-1] < len(xq) * len(xb)
    _same_range(whole.range_search(xq, radius), (lims, Dr, Ir))

    with pytest.raises(RuntimeError, match="remove_ids not implemented"):
        local.remove_ids(np.array([0], dtype="int64"))
    with pytest.raises(RuntimeError, match="remove_ids not implemented"):
        remote.remove_ids(np.array([0], dtype="int64"))

    local.reset()
    remote.reset()
    assert remote.ntotal == local.ntotal == 0
    #  Fewer than 20 queries: FAISS 1.7.3's flat search of an empty index
    #  leaves its labels unset on its BLAS path (20 queries or more).
    assert_same_search(local.search(xq[:5], 3), remote.search(xq[:5], 3))


def test_shards_refuse_as_faiss(rfaiss, lfaiss, servers, vectors):
    xt, xb, xq, ids = vectors
    for f, where in ((lfaiss, [None] * 2), (rfaiss, servers[:2])):
        shards = f.IndexShards(D)           # successive_ids
        for srv in where:
            shards.add_shard(_part(f, "Flat", "L2", xt, srv))
        with pytest.raises(RuntimeError, match="no sense to pass in ids"):
            shards.add_with_ids(xb, ids)
        shards.add(xb)
        with pytest.raises(RuntimeError, match="single pass"):
            shards.add(xb)
    with servers[2]:
        other_d = rfaiss.IndexFlatL2(D + 1)
        ip = rfaiss.IndexFlatIP(D)
    with pytest.raises(RuntimeError, match="dimension"):
        shards.add_shard(other_d)
    with pytest.raises(RuntimeError, match="metric"):
        shards.add_shard(ip)


def test_ties_break_as_faiss(rfaiss, lfaiss, servers):
    #  The same vectors in every shard: every distance is tied across
    #  shards, and FAISS's merge orders them by shard (lowest first for
    #  L2, highest first for inner product).
    rs = np.random.RandomState(3)
    xb = np.repeat(rs.randint(0, 4, size=(5, D)).astype("float32"), 2, axis=0)
    xq = rs.randint(0, 4, size=(6, D)).astype("float32")
    for metric in ("L2", "IP"):
        out = []
        for f, where in ((lfaiss, [None] * NSERVERS), (rfaiss, servers)):
            shards = f.IndexShards(D)
            for srv in where:
                part = _part(f, "Flat", metric, None, srv)
                part.add(xb)
                shards.add_shard(part)
            out.append(shards.search(xq, 25))      # 25 of the 30 stored
            out.append(shards.search(xq, 40))      # more than stored: -1 and neutral
        assert_same_search(out[0], out[2])
        np.testing.assert_array_equal(out[3][0], out[1][0])     # neutral values, exactly
        np.testing.assert_array_equal(out[3][1], out[1][1])


def test_replicas_split_the_queries(rfaiss, lfaiss, servers, vectors):
    xt, xb, xq, ids = vectors
    whole = lfaiss.IndexFlatL2(D)
    whole.add(xb)
    local = lfaiss.IndexReplicas(D, False)
    remote = rfaiss.IndexReplicas(D, False)
    keep = []      # FAISS's add_replica keeps no reference to its part (addIndex does)
    for f, replicas, where in ((lfaiss, local, [None] * NSERVERS), (rfaiss, remote, servers)):
        for srv in where:
            keep.append(_part(f, "Flat", "L2", xt, srv))
            replicas.add_replica(keep[-1])
        replicas.add(xb)                    # to every replica
    assert remote._spread and remote.ntotal == len(xb)
    assert [remote.at(i).ntotal for i in range(NSERVERS)] == [len(xb)] * NSERVERS

    def searches():
        return [s.info(max_indexes=0)["requests"].get("search", {}).get("FPX_OK", 0)
                for s in servers]
    before = searches()
    result = remote.search(xq, 7)
    #  40 queries over 3 replicas: 14, 14 and 12, one request each.
    assert [a - b for a, b in zip(searches(), before)] == [1, 1, 1]
    assert_same_search(local.search(xq, 7), result)
    assert_same_search(whole.search(xq, 7), result)
    #  Fewer queries than replicas: the last ones idle, as in FAISS.
    assert_same_search(whole.search(xq[:2], 3), remote.search(xq[:2], 3))
    _same_range(whole.range_search(xq, 0.6), remote.range_search(xq, 0.6))

    with servers[0]:
        short = rfaiss.IndexFlatL2(D)
    with pytest.raises(RuntimeError, match="as many vectors"):
        remote.add_replica(short)
    remote.reset()
    assert remote.ntotal == 0 and remote.at(2).ntotal == 0


def test_indexes_live_on_their_server(rfaiss, servers, vectors):
    xt, xb, xq, ids = vectors
    with servers[1]:
        index = rfaiss.IndexFlatL2(D)
        named = rfaiss.create_index("shards_named", D, "Flat")
    try:
        index.add(xb[:10])                  # outside the block: still on servers[1]
        named.add(xb[:20])
        assert index.ntotal == 10 and named.ntotal == 20
        with servers[1]:
            assert rfaiss.list_indexes() == ["shards_named"]
            assert rfaiss.open_index("shards_named").ntotal == 20
        for srv in (servers[0], servers[2]):
            with srv:
                assert rfaiss.list_indexes() == []
        assert "shards_named" not in rfaiss.list_indexes()     # the default server
        with servers[1]:
            empty = rfaiss.IndexFlatL2(D)
        with servers[0]:
            wrapped = rfaiss.IndexIDMap(empty)      # made where its part lives
            base = rfaiss.IndexFlatL2(D)
        wrapped.add_with_ids(xb[:5], ids[:5])
        assert wrapped.ntotal == 5 and wrapped.search(xb[:1], 1)[1][0, 0] == ids[0]
        with pytest.raises(RuntimeError, match="different servers"):
            rfaiss.IndexRefine(base, index)
    finally:
        with servers[1]:
            rfaiss.drop_index("shards_named")


def test_a_server_gone_is_a_clear_error(rfaiss, servers, vectors):
    xt, xb, xq, ids = vectors
    lone = fpx_server.Server(workers=1).start()
    try:
        srv = rfaiss.connect(lone.endpoint, api_key=lone.key, timeout_ms=3000,
                             connect_timeout_ms=1000)
        shards = rfaiss.IndexShards(D)
        for where in (servers[0], srv):
            with where:
                part = rfaiss.IndexFlatL2(D)
            shards.add_shard(part)
        shards.add(xb)
        assert shards.search(xq, 2)[1].shape == (len(xq), 2)
        lone.kill()
        with pytest.raises(RuntimeError) as failure:
            shards.search(xq, 2)
        assert "part 1" in str(failure.value) and lone.endpoint in str(failure.value)
        with pytest.raises(RuntimeError, match=lone.endpoint):
            shards.ntotal
        srv.close()
    finally:
        lone.kill()
        lone.cleanup()


def test_no_default_server_needed(daemons):
    #  A program that only uses connect(): nothing goes to the default
    #  endpoint (nothing listens there), the group lives on its parts'
    #  servers.
    from test_modes import run_python, SHIM
    import os
    env = dict(os.environ, PYTHONPATH=SHIM, FAISS_PROXY_SERVER="", FAISS_PROXY_API_KEY="")
    out = run_python("""
        import numpy as np
        import faiss_proxy as faiss
        servers = [faiss.connect(e, api_key=k) for e, k in %r]
        assert faiss.is_remote()
        replicas = faiss.IndexReplicas(8)
        assert replicas.ntotal == 0
        for srv in servers:
            with srv:
                replicas.add_replica(faiss.IndexFlatL2(8))
        xb = np.random.RandomState(0).rand(100, 8).astype("float32")
        replicas.add(xb)
        D, I = replicas.search(xb[:9], 1)
        print(replicas.ntotal, I.ravel().tolist())
        """ % [(d.endpoint, d.key) for d in daemons], env)
    assert out.split("\n")[0] == "100 [0, 1, 2, 3, 4, 5, 6, 7, 8]"
