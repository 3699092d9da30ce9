"""Data in and out: `faissproxy import | export | add | search` (the
built command line, $FPX_CLI) and faiss_proxy.upload_index /
download_index, against the session's real faissproxyd.

Files are written with numpy; what the server holds after an import is
compared with FAISS in-process on the same vectors (exact for Flat), an
export must give back the very bytes, an interrupted import resumes, and
hostile files (truncated, wrong dtype or d, huge counts) fail with a
message and exit status 1, leaving the index as it was.
"""
import json
import os
import pty
import subprocess

import numpy as np
import pytest

from conftest import ROOT, assert_same_search

D = 16


def cli_path():
    return os.environ.get("FPX_CLI") or os.path.join(ROOT, "build", "bin", "faissproxy")


def cli(server, *args, stdin=None, check=True):
    proc = subprocess.run([cli_path()] + [str(a) for a in args], input=stdin,
                          capture_output=True, text=True, env=server.env(), timeout=120)
    assert proc.returncode >= 0, "faissproxy killed by signal %d: %s" % (-proc.returncode,
                                                                         proc.stderr)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def fresh(rfaiss, name, factory="Flat", d=D):
    if name in rfaiss.list_indexes():
        rfaiss.drop_index(name)
    return rfaiss.create_index(name, d, factory)


def write_fvecs(path, x):
    rows = np.empty((x.shape[0], x.shape[1] + 1), dtype="<f4")
    rows[:, 0] = np.array([x.shape[1]], dtype="<i4").view("<f4")[0]
    rows[:, 1:] = x
    rows.tofile(path)


def write_bvecs(path, x):
    rows = np.empty((x.shape[0], x.shape[1] + 4), dtype=np.uint8)
    rows[:, :4] = np.frombuffer(np.array([x.shape[1]], dtype="<i4").tobytes(), dtype=np.uint8)
    rows[:, 4:] = x
    rows.tofile(path)


@pytest.fixture(scope="module")
def xb():
    return np.random.RandomState(7).rand(1200, D).astype("float32")


@pytest.fixture(scope="module")
def xq():
    return np.random.RandomState(8).rand(25, D).astype("float32")


def local_flat(lfaiss, x):
    index = lfaiss.IndexFlatL2(D)
    index.add(x)
    return index


@pytest.mark.parametrize("fmt", ["npy", "fvecs", "bvecs"])
def test_import_searches_as_faiss(rfaiss, lfaiss, server, tmp_path, xb, xq, fmt):
    name = "cli_import_" + fmt
    fresh(rfaiss, name)
    path = tmp_path / ("x." + fmt)
    if fmt == "npy":
        x = xb
        np.save(path, x)
    elif fmt == "fvecs":
        x = xb
        write_fvecs(path, x)
    else:
        raw = (xb * 255).astype(np.uint8)
        write_bvecs(path, raw)
        x = raw.astype("float32")
    out = cli(server, "import", name, path, "--batch", 100)
    assert out.stderr == ""                 # off a terminal: no progress
    assert out.stdout.count("\n") == 1
    assert "imported rows 0..1199" in out.stdout and "ntotal 1200" in out.stdout
    remote = rfaiss.open_index(name)
    assert remote.ntotal == x.shape[0]
    local = local_flat(lfaiss, x)
    q = xq if fmt != "bvecs" else (xq * 255).astype("float32")
    assert_same_search(local.search(q, 7), remote.search(q, 7))
    # the command line's own search agrees too
    np.save(tmp_path / "q.npy", q)
    lines = cli(server, "search", name, "-k", 7, "--json", tmp_path / "q.npy").stdout.splitlines()
    Dl, Il = local.search(q, 7)
    assert len(lines) == len(q)
    for i, line in enumerate(lines):
        result = json.loads(line)
        assert result["query"] == i
        assert result["ids"] == Il[i].tolist()
        np.testing.assert_allclose(result["distances"], Dl[i], rtol=1e-5, atol=1e-5)
    rfaiss.drop_index(name)


def test_export_round_trips_exactly(rfaiss, server, tmp_path, xb):
    name = "cli_export"
    fresh(rfaiss, name).add(xb)
    cli(server, "export", name, tmp_path / "out.npy", "--batch", 333)
    back = np.load(tmp_path / "out.npy")
    assert back.dtype == np.dtype("<f4") and back.shape == xb.shape
    assert back.tobytes() == xb.tobytes()
    cli(server, "export", name, tmp_path / "out.fvecs")
    write_fvecs(tmp_path / "ref.fvecs", xb)
    assert (tmp_path / "out.fvecs").read_bytes() == (tmp_path / "ref.fvecs").read_bytes()
    # an IVF index gives back its vectors by id, without a direct map
    ivf = fresh(rfaiss, name + "_ivf", "IVF8,Flat")
    ivf.train(xb)
    ivf.add(xb)
    cli(server, "export", name + "_ivf", tmp_path / "ivf.npy", "--batch", 500)
    assert np.load(tmp_path / "ivf.npy").tobytes() == xb.tobytes()
    # an empty index exports an empty (0, d) array
    fresh(rfaiss, name + "_empty")
    cli(server, "export", name + "_empty", tmp_path / "empty.npy")
    assert np.load(tmp_path / "empty.npy").shape == (0, D)
    for n in (name, name + "_ivf", name + "_empty"):
        rfaiss.drop_index(n)


def test_export_of_an_index_that_cannot_reconstruct(rfaiss, server, tmp_path, xb):
    name = "cli_export_idmap"
    fresh(rfaiss, name, "IDMap,Flat").add_with_ids(xb, np.arange(len(xb)))
    out = cli(server, "export", name, tmp_path / "idmap.npy", check=False)
    assert out.returncode == 1
    assert "cannot export %s: this IndexIDMap" % name in out.stderr and "backup" in out.stderr
    assert not (tmp_path / "idmap.npy").exists() and not (tmp_path / "idmap.npy.tmp").exists()
    rfaiss.drop_index(name)


def test_import_resumes_after_an_interruption(rfaiss, lfaiss, server, tmp_path, xb, xq):
    name = "cli_resume"
    fresh(rfaiss, name)
    np.save(tmp_path / "all.npy", xb)
    np.save(tmp_path / "prefix.npy", xb[:500])     # as if cut after 500 rows
    cli(server, "import", name, tmp_path / "prefix.npy", "--batch", 100)
    out = cli(server, "import", name, tmp_path / "all.npy", "--batch", 128)
    assert "imported rows 500..1199" in out.stdout and "(resumed at row 500)" in out.stdout
    assert_same_search(local_flat(lfaiss, xb).search(xq, 5), rfaiss.open_index(name).search(xq, 5))
    # complete: a re-run adds nothing
    out = cli(server, "import", name, tmp_path / "all.npy")
    assert "nothing to import" in out.stdout
    assert rfaiss.open_index(name).ntotal == 1200
    # more vectors than the file: refused
    out = cli(server, "import", name, tmp_path / "prefix.npy", check=False)
    assert out.returncode == 1 and "more than the file's 500 rows" in out.stderr
    # another file that the index does not begin with: refused
    np.save(tmp_path / "other.npy", xb[::-1].copy())
    out = cli(server, "import", name, tmp_path / "other.npy", check=False)
    assert out.returncode == 1 and "not filled from this file in order" in out.stderr
    # ... unless it is appended after them (--offset), and resumed the same way
    np.save(tmp_path / "more.npy", xq)
    cli(server, "import", name, tmp_path / "more.npy", "--offset", 1200)
    out = cli(server, "import", name, tmp_path / "more.npy", "--offset", 1200)
    assert "nothing to import" in out.stdout
    assert rfaiss.open_index(name).ntotal == 1200 + len(xq)
    rfaiss.drop_index(name)


def test_import_with_ids_and_resume(rfaiss, lfaiss, server, tmp_path, xb, xq):
    name = "cli_ids"
    fresh(rfaiss, name, "IDMap2,Flat")
    ids = np.arange(len(xb), dtype="<i8") * 7 + 1000
    np.save(tmp_path / "x.npy", xb)
    np.save(tmp_path / "ids.npy", ids)
    np.save(tmp_path / "xp.npy", xb[:300])
    np.save(tmp_path / "idsp.npy", ids[:300])
    cli(server, "import", name, tmp_path / "xp.npy", "--ids", tmp_path / "idsp.npy")
    out = cli(server, "import", name, tmp_path / "x.npy", "--ids", tmp_path / "ids.npy")
    assert "imported rows 300..1199" in out.stdout
    local = lfaiss.IndexIDMap2(lfaiss.IndexFlatL2(D))
    local.add_with_ids(xb, ids)
    assert_same_search(local.search(xq, 5), rfaiss.open_index(name).search(xq, 5))
    np.save(tmp_path / "short.npy", ids[:10])
    out = cli(server, "import", name, tmp_path / "x.npy", "--ids", tmp_path / "short.npy",
              check=False)
    assert out.returncode == 1 and "10 ids for 1200 vectors" in out.stderr
    rfaiss.drop_index(name)


def test_import_trains_an_ivf_index(rfaiss, lfaiss, server, tmp_path, xb, xq):
    name = "cli_ivf"
    fresh(rfaiss, name, "IVF8,Flat")
    np.save(tmp_path / "x.npy", xb)
    out = cli(server, "import", name, tmp_path / "x.npy", check=False)
    assert out.returncode == 1 and "not trained" in out.stderr and "--train" in out.stderr
    cli(server, "import", name, tmp_path / "x.npy", "--train", 800, "--batch", 250)
    local = lfaiss.index_factory(D, "IVF8,Flat")
    local.train(xb[:800])
    local.add(xb)
    local.nprobe = 3
    remote = rfaiss.open_index(name)
    remote.nprobe = 3
    assert_same_search(local.search(xq, 5), remote.search(xq, 5))
    rfaiss.drop_index(name)


def test_add_and_search_from_text(rfaiss, lfaiss, server, xb, xq):
    name = "cli_text"
    fresh(rfaiss, name)
    x = xb[:40]
    text = "# vectors\n" + "\n".join(
        ", ".join(repr(float(v)) for v in row) if i % 2 else " ".join(repr(float(v)) for v in row)
        for i, row in enumerate(x)) + "\n\n"
    out = cli(server, "add", name, "-", stdin=text)
    assert out.stdout.strip() == "added 40 vectors to %s; ntotal 40" % name
    queries = "\n".join(" ".join(repr(float(v)) for v in row) for row in xq[:3])
    out = cli(server, "search", name, "-k", 4, stdin=queries)
    Dl, Il = local_flat(lfaiss, x).search(xq[:3], 4)
    lines = out.stdout.splitlines()
    assert len(lines) == 3
    for i, line in enumerate(lines):
        head, _, rest = line.partition(":")
        assert int(head) == i
        assert [int(pair.split()[0]) for pair in rest.split(",")] == Il[i].tolist()
    # a line with the wrong count names it; nothing more is added
    out = cli(server, "add", name, stdin="1 2 3\n", check=False)
    assert out.returncode == 1 and "line 1 has 3 numbers, expected d = %d" % D in out.stderr
    assert rfaiss.open_index(name).ntotal == 40
    rfaiss.drop_index(name)


@pytest.mark.parametrize("metric", ["l1", "linf", "canberra"])
def test_create_with_an_extra_metric(rfaiss, lfaiss, server, tmp_path, xb, xq, metric):
    name = "cli_metric_" + metric
    if name in rfaiss.list_indexes():
        rfaiss.drop_index(name)
    out = cli(server, "create", name, D, "Flat", metric)
    assert "metric: %s\n" % metric in out.stdout
    assert "metric: %s\n" % metric in cli(server, "describe", name).stdout
    path = tmp_path / "x.npy"
    np.save(path, xb[:300])
    cli(server, "import", name, path)
    out = cli(server, "search", name, "-k", 5, "--json", stdin="\n".join(
        " ".join(repr(float(v)) for v in row) for row in xq[:4]))
    number = {"l1": lfaiss.METRIC_L1, "linf": lfaiss.METRIC_Linf,
              "canberra": lfaiss.METRIC_Canberra}[metric]
    local = lfaiss.IndexFlat(D, number)
    local.add(xb[:300])
    Dl, Il = local.search(xq[:4], 5)
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [row["ids"] for row in rows] == Il.tolist()
    np.testing.assert_allclose([row["distances"] for row in rows], Dl, rtol=1e-5)
    rfaiss.drop_index(name)
    out = cli(server, "create", name, D, "Flat", "lp", check=False)
    assert out.returncode != 0 and "metric must be" in out.stderr


def npy_bytes(header, data=b""):
    header = header.encode()
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + data


def hostile_files(xb):
    x = xb[:50]
    data = x.tobytes()
    fvecs = bytearray()
    for row in x:
        fvecs += np.int32(D).tobytes() + row.tobytes()
    bad_record = bytearray(fvecs)
    at = 25 * (4 + 4 * D)
    bad_record[at:at + 4] = np.int32(D + 1).tobytes()
    return {
        "truncated.npy": npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (50, %d), }"
                                   % D, data[:-7]),
        "float64.npy": npy_bytes("{'descr': '<f8', 'fortran_order': False, 'shape': (50, %d), }"
                                 % D, x.astype("<f8").tobytes()),
        "wrong_d.npy": npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (100, %d), }"
                                 % (D // 2), data),
        "huge_count.npy": npy_bytes("{'descr': '<f4', 'fortran_order': False, "
                                    "'shape': (4611686018427387904, %d), }" % D, data),
        "overflow.npy": npy_bytes("{'descr': '<f4', 'fortran_order': False, "
                                  "'shape': (99999999999999999999999, %d), }" % D, data),
        "fortran.npy": npy_bytes("{'descr': '<f4', 'fortran_order': True, 'shape': (50, %d), }"
                                 % D, data),
        "one_d.npy": npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (%d,), }"
                               % (50 * D), data),
        "extra_key.npy": npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (50, %d), "
                                   "'x': 1}" % D, data),
        "garbage.npy": npy_bytes("{'descr': '<f4', 'fortran_order': Fals", data),
        "huge_header.npy": b"\x93NUMPY\x02\x00" + (1 << 30).to_bytes(4, "little") + b"{",
        "not_numpy.npy": b"hello world, this is not numpy" * 10,
        "truncated.fvecs": bytes(fvecs[:-3]),
        "wrong_d.fvecs": np.int32(D * 2).tobytes() + data,
        "negative_d.fvecs": np.int32(-5).tobytes() + data,
        "huge_d.bvecs": np.int32(0x7fffffff).tobytes() + b"\x01" * 64,
        "bad.txt": "1 2 nan\n",
        "unknown.xyz": "1 2 3\n",
    }, bytes(bad_record)


def test_hostile_files_fail_cleanly(rfaiss, server, tmp_path, xb):
    name = "cli_hostile"
    fresh(rfaiss, name).add(xb[:5])
    files, bad_record = hostile_files(xb)
    for fname, content in files.items():
        path = tmp_path / fname
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        command = "add" if fname.endswith((".txt", ".xyz")) else "import"
        out = cli(server, command, name, path, check=False)
        assert out.returncode == 1, (fname, out.stdout, out.stderr)
        assert out.stderr.startswith("faissproxy: "), (fname, out.stderr)
        assert rfaiss.open_index(name).ntotal == 5, fname
    # as ids: a float file, a 2-D file
    np.save(tmp_path / "x50.npy", xb[:50])
    for ids in (xb[:50, 0].copy(), np.zeros((50, 2), dtype="<i8")):
        np.save(tmp_path / "ids.npy", ids)
        out = cli(server, "import", name, tmp_path / "x50.npy", "--ids", tmp_path / "ids.npy",
                  check=False)
        assert out.returncode == 1 and out.stderr.startswith("faissproxy: ")
    # a damaged record in the middle: the batches before it are added, not
    # the one holding it, and the error names its row
    fresh(rfaiss, name)
    (tmp_path / "bad_record.fvecs").write_bytes(bad_record)
    out = cli(server, "import", name, tmp_path / "bad_record.fvecs", "--batch", 10, check=False)
    assert out.returncode == 1 and "row 25 has d = %d" % (D + 1) in out.stderr
    assert rfaiss.open_index(name).ntotal == 20
    # the server is unharmed
    assert rfaiss.open_index(name).search(xb[:2], 1)[1][0][0] == 0
    rfaiss.drop_index(name)


def test_progress_on_a_terminal_only(rfaiss, server, tmp_path):
    name = "cli_progress"
    fresh(rfaiss, name)
    x = np.random.RandomState(9).rand(3000, D).astype("float32")
    np.save(tmp_path / "x.npy", x[:1000])
    np.save(tmp_path / "all.npy", x)
    cli(server, "import", name, tmp_path / "x.npy")
    master, slave = pty.openpty()
    try:
        proc = subprocess.run([cli_path(), "import", name, str(tmp_path / "all.npy"), "--batch", "50"],
                              stdout=subprocess.PIPE, stderr=slave, env=server.env(), timeout=120)
        os.close(slave)
        slave = None
        seen = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    finally:
        if slave is not None:
            os.close(slave)
        os.close(master)
    assert proc.returncode == 0
    terminal = seen.decode()
    assert "resumed at row 1000" in terminal
    assert "/3000 rows" in terminal and "vectors/s" in terminal and "ETA" in terminal
    assert "imported rows 1000..2999" in proc.stdout.decode()
    rfaiss.drop_index(name)


def test_usage_errors(server):
    for args in (["import", "x"], ["import", "x", "y", "--bogus"], ["search", "x", "-k", "0"],
                 ["export", "x", "y", "--ids", "z"], ["import", "x", "y", "--batch"]):
        out = cli(server, *args, check=False)
        assert out.returncode == 2, (args, out.stderr)


def test_upload_and_download_index(rfaiss, lfaiss, tmp_path, xb, xq):
    name = "py_uploaded"
    if name in rfaiss.list_indexes():
        rfaiss.drop_index(name)
    local = lfaiss.index_factory(D, "IVF8,Flat")
    local.train(xb)
    local.add(xb)
    local.nprobe = 3
    remote = rfaiss.upload_index(local, name)
    assert name in rfaiss.list_indexes()
    assert remote.ntotal == local.ntotal and remote.nprobe == 3
    assert_same_search(local.search(xq, 6), remote.search(xq, 6))
    with pytest.raises(RuntimeError):
        rfaiss.upload_index(local, name)         # the name is taken
    back = rfaiss.download_index(name)
    assert isinstance(back, lfaiss.Index) and back.ntotal == local.ntotal
    assert_same_search(local.search(xq, 6), back.search(xq, 6))
    rfaiss.drop_index(name)

    # larger than one upload message: it goes in chunks
    big = lfaiss.IndexFlatL2(64)
    xbig = np.random.RandomState(3).rand(6000, 64).astype("float32")     # 1.5 MiB
    big.add(xbig)
    remote = rfaiss.upload_index(big, name)
    assert_same_search(big.search(xbig[:10], 4), remote.search(xbig[:10], 4))
    assert lfaiss.serialize_index(rfaiss.download_index(name)).tobytes() == \
        lfaiss.serialize_index(big).tobytes()
    # a faiss_proxy index uploads too (a server-side copy under the name)
    other = rfaiss.upload_index(remote, name + "_copy")
    assert_same_search(big.search(xbig[:10], 4), other.search(xbig[:10], 4))
    rfaiss.drop_index(name)
    rfaiss.drop_index(name + "_copy")
