"""faiss_suite.py — runs FAISS's own Python tests in process and through
faiss_proxy, and compares (scripts/faiss-suite.sh fetches the tests and
calls this; docs/FAISS_SUITE.md says what counts and why).

Usage: faiss_suite.py TESTS_DIR OUT_DIR, with FPX_DAEMON and
FAISS_PROXY_LIB set. Each counted file runs in its own pytest process
(one faissproxyd for all; a file that kills it is reported and the server
started again). In remote mode `import faiss` finds OUT_DIR/shim/faiss,
which replaces itself with faiss_proxy configured against the server; a
pytest plugin checks at the end of each file that Debian's FAISS extension
was never loaded into the test process, so no test passes in process by
mistake.

What it must not do: count a test that did not run remotely, or a file
the baseline cannot run, in the remote figure.
"""
import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "python"))
sys.path.insert(0, os.path.join(ROOT, "python-shim"))

#  The files that use only `faiss`'s public Python API (docs/FAISS_SUITE.md).
COUNTED = [
    "test_autotune.py", "test_binary_factory.py", "test_binary_hashindex.py",
    "test_binary_io.py", "test_build_blocks.py", "test_clustering.py",
    "test_extra_distances.py", "test_index.py", "test_index_accuracy.py",
    "test_index_binary.py", "test_index_binary_from_float.py", "test_index_composite.py",
    "test_io.py", "test_ivflib.py", "test_meta_index.py", "test_partition.py",
    "test_product_quantizer.py", "test_referenced_objects.py", "test_rowwise_minmax.py",
]
#  Files that need a module this machine may lack: left out (and said so)
#  when it is missing, in both runs.
NEEDS = {"test_extra_distances.py": "scipy"}
FILE_TIMEOUT_S = int(os.environ.get("FAISS_SUITE_FILE_TIMEOUT_S", "1200"))

SHIM_INIT = '''"""`import faiss` for FAISS's test suite: faiss_proxy in remote mode
(configured from FAISS_PROXY_SERVER / FAISS_PROXY_API_KEY at its import)."""
import sys
import faiss_proxy
if not faiss_proxy.is_remote():
    raise ImportError("faiss-suite: faiss_proxy is not in remote mode")
sys.modules[__name__] = faiss_proxy
'''

#  Loaded with -p: fails the run when the real FAISS extension got into
#  the test process, and records what it saw.
PLUGIN = '''import json, os, sys
def pytest_sessionfinish(session, exitstatus):
    import faiss_proxy
    real = sorted(m for m in sys.modules if m.startswith(("faiss.", "_swigfaiss"))
                  or m in ("swigfaiss", "swigfaiss_avx2"))
    report = {"remote": faiss_proxy.is_remote(),
              "faiss_is_proxy": sys.modules.get("faiss") is faiss_proxy,
              "real_faiss_modules": real}
    with open(os.environ["FAISS_SUITE_CHECK"], "w") as f:
        json.dump(report, f)
'''


def module_available(name):
    return subprocess.call([sys.executable, "-c", "import " + name],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) == 0


def parse_junit(path):
    """{test id: outcome} with outcome passed/failed/error/skipped."""
    results = {}
    try:
        tree = ET.parse(path)
    except (OSError, ET.ParseError):
        return results
    for case in tree.iter("testcase"):
        test_id = "%s::%s" % (case.get("classname", ""), case.get("name", ""))
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed"}.get(child.tag, child.tag)
                break
        if outcome == "skipped" or test_id not in results or results[test_id] == "passed":
            results[test_id] = outcome
    return results


def run_file(tests_dir, out_dir, name, mode, env):
    junit = os.path.join(out_dir, "%s.%s.xml" % (mode, name))
    log = os.path.join(out_dir, "%s.%s.log" % (mode, name))
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfE",
           "--junitxml", junit, name]
    if mode == "remote":
        cmd[3:3] = ["-p", "faiss_suite_plugin"]
    start = time.monotonic()
    with open(log, "wb") as f:
        try:
            subprocess.run(cmd, cwd=tests_dir, env=env, stdout=f, stderr=subprocess.STDOUT,
                           timeout=FILE_TIMEOUT_S)
            timed_out = False
        except subprocess.TimeoutExpired:
            timed_out = True
    return parse_junit(junit), time.monotonic() - start, timed_out


def count(results):
    counts = {"passed": 0, "failed": 0, "error": 0, "skipped": 0}
    for outcome in results.values():
        counts[outcome] += 1
    return counts


def main():
    tests_dir, out_dir = sys.argv[1], sys.argv[2]
    only = os.environ.get("FAISS_SUITE_FILES", "").split()
    skip_local = os.environ.get("FAISS_SUITE_SKIP_LOCAL") == "1"
    files = []
    for name in COUNTED:
        if only and name not in only:
            continue
        needed = NEEDS.get(name)
        if needed and not module_available(needed):
            print("faiss-suite: %s left out: needs %s, not installed for %s"
                  % (name, needed, sys.executable))
            continue
        files.append(name)

    shim = os.path.join(out_dir, "shim")
    os.makedirs(os.path.join(shim, "faiss"))
    with open(os.path.join(shim, "faiss", "__init__.py"), "w") as f:
        f.write(SHIM_INIT)
    with open(os.path.join(shim, "faiss_suite_plugin.py"), "w") as f:
        f.write(PLUGIN)

    base_env = dict(os.environ)
    base_env.pop("FAISS_PROXY_SERVER", None)
    base_env.pop("FAISS_PROXY_API_KEY", None)
    base_env["OMP_WAIT_POLICY"] = "PASSIVE"
    base_env["PYTHONDONTWRITEBYTECODE"] = "1"

    local = {}
    if not skip_local:
        env = dict(base_env)
        env.pop("PYTHONPATH", None)
        for name in files:
            results, seconds, timed_out = run_file(tests_dir, out_dir, name, "local", env)
            local[name] = results
            c = count(results)
            print("local  %-34s %3d passed %3d failed %3d errors %3d skipped %6.1f s%s"
                  % (name, c["passed"], c["failed"], c["error"], c["skipped"], seconds,
                     " TIMEOUT" if timed_out else ""), flush=True)

    import fpx_server
    server = fpx_server.Server(workers=2).start()
    remote, crashes, bad_checks = {}, [], []
    try:
        for name in files:
            if server.proc.poll() is not None:
                crashes.append((name, server.log()[-2000:]))
                server.cleanup()
                server = fpx_server.Server(workers=2).start()
            env = server.env(FAISS_PROXY_LONG_TIMEOUT_MS="600000",
                             FAISS_PROXY_TIMEOUT_MS="120000")
            env.update({k: base_env[k] for k in ("OMP_WAIT_POLICY", "PYTHONDONTWRITEBYTECODE")})
            env["PYTHONPATH"] = os.pathsep.join([shim, os.path.join(ROOT, "python-shim")])
            check_path = os.path.join(out_dir, "remote.%s.check.json" % name)
            env["FAISS_SUITE_CHECK"] = check_path
            results, seconds, timed_out = run_file(tests_dir, out_dir, name, "remote", env)
            try:
                with open(check_path) as f:
                    check = json.load(f)
            except (OSError, ValueError):
                check = None
            if check is not None and not (check["remote"] and check["faiss_is_proxy"]
                                          and not check["real_faiss_modules"]):
                bad_checks.append((name, check))
                results = {k: ("error" if v == "passed" else v) for k, v in results.items()}
            remote[name] = results
            c = count(results)
            dead = server.proc.poll() is not None
            print("remote %-34s %3d passed %3d failed %3d errors %3d skipped %6.1f s%s%s"
                  % (name, c["passed"], c["failed"], c["error"], c["skipped"], seconds,
                     " TIMEOUT" if timed_out else "", " SERVER DIED" if dead else ""),
                  flush=True)
    finally:
        if server.proc is not None and server.proc.poll() is not None:
            crashes.append(("(end)", server.log()[-2000:]))
        rc = server.stop()
        server.cleanup()

    total_local = {"passed": 0, "failed": 0, "error": 0, "skipped": 0}
    total_remote = dict(total_local)
    denominator = numerator = 0
    for name in files:
        rres = remote.get(name, {})
        for k, v in count(rres).items():
            total_remote[k] += v
        if skip_local:
            denominator += sum(1 for v in rres.values() if v != "skipped")
            numerator += sum(1 for v in rres.values() if v == "passed")
            continue
        lres = local[name]
        for k, v in count(lres).items():
            total_local[k] += v
        #  The tests the baseline ran (skips aside); a remote pass counts
        #  only for one of them (a file that fails to import remotely
        #  counts as all its tests failing).
        ran = [t for t, v in lres.items() if v != "skipped"]
        denominator += len(ran)
        numerator += sum(1 for t in ran if rres.get(t) == "passed")

    print()
    print("files: %d (%s)" % (len(files), " ".join(files)))
    if not skip_local:
        print("in process (Debian's python3-faiss): %(passed)d passed, %(failed)d failed, "
              "%(error)d errors, %(skipped)d skipped" % total_local)
    print("through faiss_proxy + faissproxyd:   %(passed)d passed, %(failed)d failed, "
          "%(error)d errors, %(skipped)d skipped" % total_remote)
    for name, check in bad_checks:
        print("faiss-suite: %s loaded the real FAISS or ran in process (%r): its passes "
              "are counted as errors" % (name, check))
    for name, log in crashes:
        print("faiss-suite: faissproxyd died during or after %s; log tail:\n%s" % (name, log))
    if rc != 0:
        print("faiss-suite: faissproxyd exited with %r on SIGTERM" % (rc,))
    pct = 100.0 * numerator / denominator if denominator else 0.0
    print("remote pass rate: %d / %d = %.1f %% of the tests the baseline ran"
          % (numerator, denominator, pct))
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump({"files": files, "local": total_local, "remote": total_remote,
                   "passed_remote": numerator, "baseline_ran": denominator,
                   "percent": pct, "crashes": [c[0] for c in crashes],
                   "per_test": {n: {"local": local.get(n, {}), "remote": remote.get(n, {})}
                                for n in files}}, f, indent=1, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
