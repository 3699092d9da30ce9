"""fpx_server.py — starts and stops a real faissproxyd for the Python tests.

The daemon is $FPX_DAEMON (else the tree's build/bin/faissproxyd), bound
to tcp://127.0.0.1:* (a port the system picks: the daemon writes the
endpoint it bound to its --endpoint-file, read here; no port is guessed)
with one tenant and a random key, its data in a fresh temporary
directory. Readiness is a successful ping through libfaissproxy (the same
library the drop-in uses). stop() sends SIGTERM and returns the exit
status (the daemon must exit 0).
"""
import ctypes
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def daemon_path():
    return os.environ.get("FPX_DAEMON") or os.path.join(ROOT, "build", "bin", "faissproxyd")


class Server:
    def __init__(self, workers=2, tenant="pytest", extra_args=(), server_key=None):
        self.workers = workers
        self.tenant = tenant
        self.extra_args = list(extra_args)
        self.server_key = server_key    # CURVE public key of a --curve-secret-file server
        self.key = secrets.token_hex(16)
        self.proc = None
        self.endpoint = None
        self.data_dir = None
        self.log_path = None
        self.endpoints = []             # every endpoint and URL the daemon wrote

    def env(self, **extra):
        """Environment of a child process in remote mode."""
        env = dict(os.environ)
        env["FAISS_PROXY_SERVER"] = self.endpoint
        env["FAISS_PROXY_API_KEY"] = self.key
        if self.server_key:
            env["FAISS_PROXY_SERVER_KEY"] = self.server_key
        env.update(extra)
        return env

    def start(self):
        daemon = daemon_path()
        if not os.access(daemon, os.X_OK):
            raise RuntimeError("faissproxyd not found at %s (make all, or set FPX_DAEMON)" % daemon)
        self.data_dir = tempfile.mkdtemp(prefix="fpx-pytest-")
        if not self._launch(None, "wb", []):
            shutil.rmtree(self.data_dir, ignore_errors=True)
            raise RuntimeError("faissproxyd did not start:\n" + self.log()[-2000:])
        return self

    def start_on(self, port, data_dir):
        """Starts with this data directory (kept by cleanup() only if the
        caller removes it), on this port, or on one the system picks when
        port is None: for restarts on the same ones."""
        self.data_dir = data_dir
        if not self._launch(port, "ab", ["--fsync", "always"]):
            raise RuntimeError("faissproxyd did not start on %s:\n%s"
                               % (port or "a port of its choosing", self.log()[-2000:]))
        return self

    def _launch(self, port, log_mode, extra):
        """Runs the daemon on tcp://127.0.0.1:PORT (or :*), reads the
        endpoint it bound from --endpoint-file, waits for a ping."""
        self.log_path = os.path.join(self.data_dir, "daemon.log")
        endpoint_file = os.path.join(self.data_dir, "endpoint")
        if os.path.exists(endpoint_file):
            os.unlink(endpoint_file)
        log = open(self.log_path, log_mode)
        self.proc = subprocess.Popen(
            [daemon_path(), "--bind", "tcp://127.0.0.1:%s" % (port or "*"),
             "--endpoint-file", endpoint_file,
             "--api-key", "%s:%s" % (self.tenant, self.key),
             "--data-dir", os.path.join(self.data_dir, "data"), "--workers", str(self.workers),
             "--log-level", "warn"] + extra + self.extra_args,
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        if self._wait_ready(endpoint_file):
            return True
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        return False

    def _wait_ready(self, endpoint_file, timeout=30.0):
        deadline = time.monotonic() + timeout
        while not os.path.exists(endpoint_file):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        with open(endpoint_file) as f:
            self.endpoints = f.read().split()
        self.endpoint = self.endpoints[0]
        from faiss_proxy import _capi
        lib = _capi.lib
        handle = lib.fpx_client_new_curve(self.endpoint.encode(), self.key.encode(),
                                          (self.server_key or "").encode())
        lib.fpx_client_set_timeout(handle, 300)
        try:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    return False
                if lib.fpx_ping(handle, None) == 0:
                    return True
                time.sleep(0.05)
            return False
        finally:
            h = ctypes.c_void_p(handle)
            lib.fpx_client_destroy(ctypes.byref(h))

    def metrics_url(self):
        """http://HOST:PORT of --metrics-bind, as the daemon bound it."""
        return next((e for e in self.endpoints if e.startswith("http://")), None)

    def kill(self):
        """SIGKILL, as a crash."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stop(self):
        """SIGTERM; returns the daemon's exit status."""
        if self.proc is None:
            return 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            rc = "timeout"
        self.proc = None
        return rc

    def cleanup(self):
        if self.data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
