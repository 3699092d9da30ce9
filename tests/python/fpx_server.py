"""fpx_server.py — starts and stops a real faissproxyd for the Python tests.

The daemon is $FPX_DAEMON (else the tree's build/bin/faissproxyd), bound
to a free 127.0.0.1 port in 6000-6999 with one tenant and a random key,
its data in a fresh temporary directory. Readiness is a successful ping
through libfaissproxy (the same library the drop-in uses). stop() sends
SIGTERM and returns the exit status (the daemon must exit 0).
"""
import ctypes
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PORTS = range(6000, 7000)


def daemon_path():
    return os.environ.get("FPX_DAEMON") or os.path.join(ROOT, "build", "bin", "faissproxyd")


def _port_is_free(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


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
        ports = [p for p in random.sample(PORTS, len(PORTS))]
        for port in ports[:20]:
            if not _port_is_free(port):
                continue
            if self._start_on(daemon, port):
                return self
        raise RuntimeError("could not start faissproxyd on any port in 6000-6999")

    def _start_on(self, daemon, port):
        self.endpoint = "tcp://127.0.0.1:%d" % port
        self.data_dir = tempfile.mkdtemp(prefix="fpx-pytest-")
        self.log_path = os.path.join(self.data_dir, "daemon.log")
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [daemon, "--bind", self.endpoint, "--api-key", "%s:%s" % (self.tenant, self.key),
             "--data-dir", os.path.join(self.data_dir, "data"), "--workers", str(self.workers),
             "--log-level", "warn"] + self.extra_args,
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        if self._wait_ready():
            return True
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self.proc = None
        return False

    def _wait_ready(self, timeout=30.0):
        from faiss_proxy import _capi
        lib = _capi.lib
        handle = lib.fpx_client_new_curve(self.endpoint.encode(), self.key.encode(),
                                          (self.server_key or "").encode())
        lib.fpx_client_set_timeout(handle, 300)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    return False        # e.g. the port was taken meanwhile
                rc = lib.fpx_ping(handle, None)
                if rc == 0:
                    return True
                if rc == _capi.ERROR_CODES["FPX_EAUTH"]:
                    return False        # another server answers on this port
                time.sleep(0.05)
            return False
        finally:
            h = ctypes.c_void_p(handle)
            lib.fpx_client_destroy(ctypes.byref(h))

    def start_on(self, port, data_dir):
        """Starts on this port with this data directory (kept by cleanup()
        only if the caller removes it): for restarts on the same ones."""
        self.endpoint = "tcp://127.0.0.1:%d" % port
        self.data_dir = data_dir
        self.log_path = os.path.join(data_dir, "daemon.log")
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [daemon_path(), "--bind", self.endpoint,
             "--api-key", "%s:%s" % (self.tenant, self.key),
             "--data-dir", os.path.join(data_dir, "data"), "--workers", str(self.workers),
             "--fsync", "always", "--log-level", "warn"] + self.extra_args,
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        if not self._wait_ready():
            raise RuntimeError("faissproxyd did not start on port %d" % port)
        return self

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
