"""faiss_ref.py — the same operations in Debian's FAISS, in-process: the
reference the TypeScript client's results are compared with.

Usage: /usr/bin/python3 faiss_ref.py JOB.json
The job names raw little-endian files (float32 vectors, int64 ids) and
the steps; results are written beside them as raw files:
  {"d": 16, "factory": "Flat", "metric": 1, "dir": "/tmp/…",
   "train": "xt.bin", "adds": [{"x": "xb.bin", "ids": "ids.bin"}],
   "remove": "rm.bin", "remove_range": [lo, hi], "nprobe": 4,
   "search": {"x": "xq.bin", "k": 10},          -> D.bin, I.bin
   "range": {"x": "xq.bin", "radius": 1.5}}     -> lims.bin, RD.bin, RI.bin
Prints {"ntotal": n} on stdout.
"""
import json
import os
import sys

import faiss
import numpy as np

job = json.load(open(sys.argv[1]))
d, base = job["d"], job["dir"]


def vectors(name):
    return np.fromfile(os.path.join(base, name), dtype="<f4").reshape(-1, d)


def ids(name):
    return np.fromfile(os.path.join(base, name), dtype="<i8")


def write(name, array, dtype):
    np.ascontiguousarray(array, dtype=dtype).tofile(os.path.join(base, name))


index = faiss.index_factory(d, job["factory"], job.get("metric", faiss.METRIC_L2))
if "train" in job:
    index.train(vectors(job["train"]))
for step in job.get("adds", []):
    if "ids" in step:
        index.add_with_ids(vectors(step["x"]), ids(step["ids"]))
    else:
        index.add(vectors(step["x"]))
if "remove" in job:
    index.remove_ids(ids(job["remove"]))
if "remove_range" in job:
    lo, hi = job["remove_range"]
    index.remove_ids(faiss.IDSelectorRange(lo, hi))
if "nprobe" in job:
    faiss.ParameterSpace().set_index_parameters(index, "nprobe=%d" % job["nprobe"])
if "search" in job:
    D, I = index.search(vectors(job["search"]["x"]), job["search"]["k"])
    write("D.bin", D, "<f4")
    write("I.bin", I, "<i8")
if "range" in job:
    lims, D, I = index.range_search(vectors(job["range"]["x"]), job["range"]["radius"])
    write("lims.bin", lims, "<u8")
    write("RD.bin", D, "<f4")
    write("RI.bin", I, "<i8")
print(json.dumps({"ntotal": int(index.ntotal)}))
