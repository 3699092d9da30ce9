"""test_metrics.py — faissproxyd --metrics-bind: what an operator scrapes.

A server of its own with --metrics-bind on a free loopback port. A child
process (remote mode through the environment) creates two named indexes,
adds known counts of vectors and runs N searches; the CLI asks for an
index that does not exist and pings with a wrong key. Then:
- /metrics parses as the Prometheus text format (every sample line
  'name{labels} value', every name's family has a TYPE);
- the request counters moved by exactly the requests made (N searches,
  one ENOTFOUND describe, one EAUTH ping of no tenant);
- each opcode's histogram counts what its counters count, cumulatively;
- per-index vectors equal what was added, per-tenant vectors their sum;
- /metrics.json says the same; / is the dashboard; anything else is 404;
- in headless Chromium the dashboard shows the request count from
  /metrics.json, and its screenshot is not blank.
"""
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zlib

import pytest

import fpx_server

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SHIM = os.path.join(ROOT, "python-shim")
SEARCHES = 7
ADDED = {"metrics_a": 120, "metrics_b": 30}

CLIENT = r"""
import sys
import numpy as np
import faiss_proxy as faiss
rs = np.random.RandomState(5)
a = faiss.create_index("metrics_a", 8, "Flat")
a.add(rs.rand(%d, 8).astype("float32"))
b = faiss.create_index("metrics_b", 8, "Flat")
b.add(rs.rand(%d, 8).astype("float32"))
for _ in range(%d):
    a.search(rs.rand(2, 8).astype("float32"), 3)
""" % (ADDED["metrics_a"], ADDED["metrics_b"], SEARCHES)

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)')


def _get(url, method="GET"):
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read()


def _labels(text):
    labels, at = {}, 0
    while at < len(text):
        m = LABEL.match(text, at)
        assert m, "bad labels: %r" % text
        labels[m.group(1)] = re.sub(r'\\(.)', lambda e: "\n" if e.group(1) == "n" else e.group(1),
                                    m.group(2))
        at = m.end()
    return labels


def parse(text):
    """Samples [(name, labels, value)] of a Prometheus text exposition,
    asserting its grammar and that every sample's family has a TYPE."""
    types, samples = {}, []
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "histogram"), line
            assert name not in types, "TYPE twice: " + line
            types[name] = kind
            continue
        if line.startswith("# HELP "):
            continue
        assert not line.startswith("#"), line
        m = SAMPLE.match(line)
        assert m, "not 'name{labels} value': %r" % line
        name, labels, value = m.group(1), _labels(m.group(2) or ""), float(m.group(3))
        family = name
        if name not in types:
            family = re.sub(r"_(bucket|sum|count)$", "", name)
            assert types.get(family) == "histogram", "no TYPE for " + name
        samples.append((name, labels, value))
    return samples


def _counts(samples):
    return {(lab["tenant"], lab["opcode"], lab["status"]): v
            for n, lab, v in samples if n == "faissproxy_requests_total"}


def _run_requests(srv):
    out = subprocess.run([sys.executable, "-c", CLIENT], env=srv.env(PYTHONPATH=SHIM),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    cli = os.path.join(os.path.dirname(fpx_server.daemon_path()), "faissproxy")
    missing = subprocess.run([cli, "--server", srv.endpoint, "--api-key", srv.key, "describe",
                              "no_such_index_here"], capture_output=True, text=True, timeout=60)
    assert missing.returncode != 0
    wrong = subprocess.run([cli, "--server", srv.endpoint, "--api-key", "not-the-key", "ping"],
                           capture_output=True, text=True, timeout=60)
    assert wrong.returncode != 0


@pytest.fixture(scope="module")
def served():
    # Port 0: the daemon binds one the system picks and writes the URL to
    # its --endpoint-file.
    srv = fpx_server.Server(workers=2, extra_args=["--metrics-bind", "127.0.0.1:0"])
    srv.start()
    base = srv.metrics_url()
    assert base and base.startswith("http://127.0.0.1:") and not base.endswith(":0"), srv.endpoints
    try:
        status, _, body = _get(base + "/metrics")
        assert status == 200
        before = _counts(parse(body.decode()))
        _run_requests(srv)
        yield srv, base, before
    finally:
        rc = srv.stop()
        log = srv.log()
        srv.cleanup()
    assert rc == 0, log


def test_prometheus_metrics(served):
    srv, base, before = served
    status, ctype, body = _get(base + "/metrics")
    assert status == 200 and ctype.startswith("text/plain")
    samples = parse(body.decode())
    after = _counts(samples)
    delta = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    t = srv.tenant
    assert delta.get((t, "search", "FPX_OK")) == SEARCHES, delta
    assert delta.get((t, "describe", "FPX_ENOTFOUND")) == 1, delta
    assert delta.get(("", "ping", "FPX_EAUTH")) == 1, delta
    assert delta.get((t, "create", "FPX_OK")) == 2, delta
    assert delta.get((t, "add", "FPX_OK")) == 2, delta

    #  Histograms: cumulative buckets, +Inf = _count = the counters' sum.
    by_opcode = {}
    for (tenant, opcode, st), v in after.items():
        by_opcode[opcode] = by_opcode.get(opcode, 0) + v
    buckets, counts = {}, {}
    for name, lab, v in samples:
        if name == "faissproxy_request_duration_seconds_bucket":
            buckets.setdefault(lab["opcode"], []).append((lab["le"], v))
        elif name == "faissproxy_request_duration_seconds_count":
            counts[lab["opcode"]] = v
    assert counts == by_opcode
    for opcode, rows in buckets.items():
        assert rows[-1] == ("+Inf", counts[opcode]), rows
        bounds = [float(le) for le, _ in rows[:-1]]
        assert bounds == sorted(bounds)
        values = [v for _, v in rows]
        assert values == sorted(values), (opcode, values)

    gauges = {(n, tuple(sorted(lab.items()))): v for n, lab, v in samples}
    for name, added in ADDED.items():
        assert gauges[("faissproxy_index_vectors", (("index", name), ("tenant", t)))] == added
        assert gauges[("faissproxy_index_memory_bytes", (("index", name), ("tenant", t)))] \
            > added * 8 * 4
    assert gauges[("faissproxy_tenant_vectors", (("tenant", t),))] == sum(ADDED.values())
    assert gauges[("faissproxy_tenant_indexes", (("tenant", t),))] == len(ADDED)
    assert gauges[("faissproxy_named_indexes", ())] == len(ADDED)
    assert gauges[("faissproxy_resident_memory_bytes", ())] > 1 << 20
    assert gauges[("faissproxy_uptime_seconds", ())] > 0
    assert gauges[("faissproxy_queue_depth", ())] == 0
    assert gauges[("faissproxy_requests_in_flight", ())] == 0
    assert ("faissproxy_connections", ()) in gauges


def test_json_matches_text(served):
    srv, base, _ = served
    _, _, text = _get(base + "/metrics")
    status, ctype, body = _get(base + "/metrics.json")
    assert status == 200 and ctype.startswith("application/json")
    data = json.loads(body)
    samples = parse(text.decode())
    assert _counts(samples) == {(r["tenant"], r["opcode"], r["status"]): r["count"]
                                for r in data["requests"]}
    counts = {lab["opcode"]: v for n, lab, v in samples
              if n == "faissproxy_request_duration_seconds_count"}
    assert {l["opcode"]: l["count"] for l in data["latency"]} == counts
    for l in data["latency"]:
        assert sum(l["buckets"]) == l["count"]
        assert 0 <= l["p50"] <= l["p90"] <= l["p99"]
    tenants = {r["tenant"]: r for r in data["tenants"]}
    assert tenants[srv.tenant]["vectors"] == sum(ADDED.values())
    assert {(i["index"], i["vectors"]) for i in data["indexes"]} == set(ADDED.items())
    assert data["named_indexes"] == len(ADDED)
    assert data["queue_depth"] == 0 and data["requests_in_flight"] == 0


def test_paths(served):
    _, base, _ = served
    status, ctype, body = _get(base + "/")
    assert status == 200 and ctype.startswith("text/html")
    assert b"/metrics.json" in body and b"<script" in body
    assert b"http://" not in body and b"https://" not in body      # no external assets
    for path in ("/nope", "/metrics/", "/metrics.json/x", "/index.html", "/metrics?x"):
        assert _get(base + path)[0] == (200 if path == "/metrics?x" else 404), path
    assert _get(base + "/metrics", method="POST")[0] == 405
    assert _get(base + "/metrics", method="DELETE")[0] == 405


def _chromium():
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _png_not_blank(path):
    """Decodes the PNG (8-bit RGB/RGBA, no interlace) and tells whether
    its pixels differ."""
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    at, idat, width, height, kind = 8, b"", 0, 0, 0
    while at < len(data):
        size, tag = struct.unpack(">I4s", data[at:at + 8])
        chunk = data[at + 8:at + 8 + size]
        if tag == b"IHDR":
            width, height, depth, kind = struct.unpack(">IIBB", chunk[:10])
            assert depth == 8 and kind in (2, 6) and chunk[12] == 0
        elif tag == b"IDAT":
            idat += chunk
        at += 12 + size
    raw = zlib.decompress(idat)
    stride = width * (3 if kind == 2 else 4)
    #  A blank image's filtered rows are alike (Sub/Up leave zeros).
    rows = {raw[r * (stride + 1) + 1:(r + 1) * (stride + 1)] for r in range(height)}
    return len(rows) > 2 and len(set(raw)) > 8


def test_dashboard_in_browser(served, tmp_path):
    chromium = _chromium()
    if not chromium:
        pytest.skip("chromium is not installed (Debian package 'chromium'; scripts/deps.sh)")
    _, base, _ = served
    _, _, body = _get(base + "/metrics.json")
    total = sum(r["count"] for r in json.loads(body)["requests"])
    #  --no-sandbox: the sandbox needs user namespaces a container may lack.
    common = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
              "--user-data-dir=%s" % (tmp_path / "profile"), "--virtual-time-budget=3000"]
    try:
        dom = subprocess.run(common + ["--dump-dom", base + "/"], capture_output=True, text=True,
                             timeout=120)
    except subprocess.TimeoutExpired:
        pytest.skip("chromium did not finish in 120 s here")
    if dom.returncode != 0:
        pytest.skip("chromium does not run headless here: %s" % dom.stderr[-300:])
    m = re.search(r'id="requests-total">([0-9]+)<', dom.stdout)
    assert m, dom.stdout[-2000:]
    #  The page's own poll follows the one above by a few requests at most
    #  (none are made meanwhile), and counts the same ones.
    assert int(m.group(1)) == total, (m.group(1), total)
    assert "metrics_a" in dom.stdout and "metrics_b" in dom.stdout

    os.makedirs(os.path.join(ROOT, "build"), exist_ok=True)
    shot = os.path.join(ROOT, "build", "metrics-dashboard.png")
    if os.path.exists(shot):
        os.unlink(shot)
    out = subprocess.run(common + ["--window-size=1200,900", "--screenshot=" + shot, base + "/"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert os.path.getsize(shot) > 5000
    assert _png_not_blank(shot)
