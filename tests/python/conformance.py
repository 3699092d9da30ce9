#!/usr/bin/python3
"""conformance.py — FAISS's own Python test suite, run against faissproxyd.

    /usr/bin/python3 tests/python/conformance.py [--faiss-src DIR] [--files a.py,b.py]
                                                  [--timeout S] [--json OUT]

Takes faiss-1.7.3/tests/*.py from the Debian source package (DIR, or
build/faiss-src, fetched there with `apt-get source` when missing), swaps
`import faiss` for `import faiss_proxy as faiss` in each file (and in
faiss.contrib's pure-Python helpers, copied beside them), starts a real
faissproxyd, and runs each file under pytest in remote mode. The real
FAISS extension is blocked in those processes (sys.modules["faiss"] =
None), so every result comes from the server: a test that needs local
FAISS fails instead of passing silently.

Prints per-file and total passed / failed / errors / skipped, for all files
and for the files of the public API that faiss_proxy covers (PUBLIC_API).
Not part of `make test`: many of FAISS's tests reach into internals
(swig_ptr, inverted lists, codes) that a network proxy cannot offer.
"""
import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SHIM = os.path.join(ROOT, "python-shim")
PYTHON = "/usr/bin/python3"
CONTRIB = "/usr/lib/python3/dist-packages/faiss/contrib"

#  The test files of the API the issue lists (indexes, factory, I/O,
#  clustering, parameters, referenced objects, refine, threads).
PUBLIC_API = ["test_index.py", "test_index_accuracy.py", "test_io.py", "test_clustering.py",
              "test_meta_index.py", "test_referenced_objects.py", "test_search_params.py",
              "test_factory.py", "test_index_composite.py", "test_refine.py",
              "test_omp_threads_py.py", "test_autotune.py", "test_build_blocks.py"]

BLOCK_FAISS = '''# conftest.py written by faissproxy's conformance.py: remote mode only.
import sys
sys.modules["faiss"] = None           # the FAISS extension must not be used here
import faiss_proxy
assert faiss_proxy.is_remote()
'''


def find_source(explicit):
    candidates = [explicit] if explicit else []
    candidates += [os.path.join(ROOT, "build", "faiss-src"), "/tmp/fsrc"]
    for base in candidates:
        if not base:
            continue
        found = glob.glob(os.path.join(base, "faiss-*", "tests")) + \
            glob.glob(os.path.join(base, "tests"))
        for tests in found:
            if os.path.exists(os.path.join(tests, "test_index.py")):
                return tests
    if explicit:
        sys.exit("conformance: no faiss tests under %s" % explicit)
    dest = os.path.join(ROOT, "build", "faiss-src")
    os.makedirs(dest, exist_ok=True)
    print("conformance: fetching the faiss source package into %s" % dest, flush=True)
    subprocess.run(["apt-get", "source", "-q", "faiss"], cwd=dest, check=True)
    return find_source(dest)


def swap_imports(text):
    text = re.sub(r"^(\s*)import faiss\s*$", r"\1import faiss_proxy as faiss", text, flags=re.M)
    text = re.sub(r"^(\s*)from faiss\.contrib", r"\1from fpx_contrib", text, flags=re.M)
    text = re.sub(r"^(\s*)from faiss import", r"\1from faiss_proxy import", text, flags=re.M)
    return text


def prepare(tests_dir, work):
    for path in glob.glob(os.path.join(tests_dir, "*.py")):
        with open(path) as f:
            text = f.read()
        with open(os.path.join(work, os.path.basename(path)), "w") as f:
            f.write(swap_imports(text))
    contrib = os.path.join(work, "fpx_contrib")
    os.makedirs(contrib)
    for path in glob.glob(os.path.join(CONTRIB, "*.py")):
        with open(path) as f:
            text = f.read()
        with open(os.path.join(contrib, os.path.basename(path)), "w") as f:
            f.write(swap_imports(text))
    with open(os.path.join(work, "conftest.py"), "w") as f:
        f.write(BLOCK_FAISS)


def run_file(work, name, env, timeout):
    xml = os.path.join(work, name + ".xml")
    started = time.monotonic()
    try:
        proc = subprocess.run([PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               "-p", "no:warnings", "--junitxml", xml, name],
                              cwd=work, env=env, capture_output=True, text=True, timeout=timeout)
        output = proc.stdout + proc.stderr
        timed_out = False
    except subprocess.TimeoutExpired as e:
        output = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) \
            else (e.stdout or "")
        timed_out = True
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0, "timeout": timed_out,
              "seconds": round(time.monotonic() - started, 1), "failures": []}
    if os.path.exists(xml) and not timed_out:
        for case in ET.parse(xml).getroot().iter("testcase"):
            tags = [child.tag for child in case]
            test = "%s::%s" % (case.get("classname", ""), case.get("name", ""))
            if "failure" in tags:
                counts["failed"] += 1
                counts["failures"].append(test + " " + _first_line(case, "failure"))
            elif "error" in tags:
                counts["errors"] += 1
                counts["failures"].append(test + " " + _first_line(case, "error"))
            elif "skipped" in tags:
                counts["skipped"] += 1
            else:
                counts["passed"] += 1
    elif not timed_out:
        counts["errors"] = 1
        counts["failures"].append("collection: " + output[-500:])
    return counts


def _first_line(case, tag):
    node = case.find(tag)
    text = (node.get("message") or node.text or "").strip().splitlines()
    return text[0][:200] if text else ""


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faiss-src")
    parser.add_argument("--files", help="comma-separated test files (default: all)")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per file")
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--verbose", action="store_true", help="list failing tests")
    args = parser.parse_args()

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    sys.path.insert(0, HERE)
    sys.path.insert(0, SHIM)
    import fpx_server

    tests_dir = find_source(args.faiss_src)
    names = sorted(os.path.basename(p) for p in glob.glob(os.path.join(tests_dir, "test_*.py")))
    if args.files:
        names = [n for n in names if n in args.files.split(",")]
    work = tempfile.mkdtemp(prefix="fpx-conformance-")
    prepare(tests_dir, work)
    server = fpx_server.Server(workers=2).start()
    env = server.env(PYTHONPATH=os.pathsep.join([work, SHIM]), FAISS_PROXY_TIMEOUT_MS="300000")
    results = {}
    try:
        for name in names:
            results[name] = counts = run_file(work, name, env, args.timeout)
            print("%-36s %4d passed %4d failed %4d errors %3d skipped%s  (%.0fs)" % (
                name, counts["passed"], counts["failed"], counts["errors"], counts["skipped"],
                "  TIMEOUT" if counts["timeout"] else "", counts["seconds"]), flush=True)
            if args.verbose:
                for line in counts["failures"]:
                    print("    " + line)
    finally:
        rc = server.stop()
        server.cleanup()
        shutil.rmtree(work, ignore_errors=True)
    summary = {}
    for label, subset in (("all files", names), ("public API files", PUBLIC_API)):
        keys = ("passed", "failed", "errors", "skipped")
        total = {k: sum(results[n][k] for n in subset if n in results) for k in keys}
        ran = sum(total.values())
        summary[label] = total
        print("%-18s %d tests: %d passed, %d failed, %d errors, %d skipped (%.1f%% passed)" % (
            label, ran, total["passed"], total["failed"], total["errors"], total["skipped"],
            100.0 * total["passed"] / ran if ran else 0.0))
    print("faissproxyd exit status on SIGTERM: %r" % rc)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"files": results, "summary": summary}, f, indent=1)
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
