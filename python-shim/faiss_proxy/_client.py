"""_client.py — the one connection of this process to faissproxyd.

What it is for: anonymous server objects belong to the connection that
made them, so the whole process shares ONE libfaissproxy handle. A handle
is not thread-safe, so every call runs under one lock (ctypes releases the
GIL during the call, so other Python threads keep running). After a fork
the child opens its own connection on its first call: the parent's handle
(and its ZeroMQ context) is never touched by the child, and the parent's
objects are not reachable from the child's connection.

Objects are dropped on the server when their Python handle is collected.
A collection can happen anywhere, even inside a locked call of the same
thread, so release() never waits for the lock: when the lock is busy the
name is queued and dropped before the next call.

What it must not do: know about FAISS classes (that is _remote.py).
"""
import atexit
import collections
import ctypes
import json
import os
import threading

from . import _capi
from ._capi import lib


class FaissProxyError(RuntimeError):
    """A failure reported by libfaissproxy or faissproxyd. It is a
    RuntimeError, as FAISS raises for its own errors; str() is the message
    (FAISS's own text for FPX_EFAISS). code is the negative FPX_E… code,
    code_name its name ("FPX_EFAISS")."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.code_name = _capi.ERROR_NAMES.get(code, "FPX_E?")

    def __reduce__(self):
        return type(self), (self.code, str(self))


class FaissProxyMemoryError(MemoryError):
    """FPX_ENOMEM: FAISS raises MemoryError for std::bad_alloc."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.code_name = _capi.ERROR_NAMES.get(code, "FPX_E?")

    def __reduce__(self):
        return type(self), (self.code, str(self))


def _error(code, message):
    if not message:
        message = _capi.strerror(code)
    if code == _capi.ERROR_CODES.get("FPX_ENOMEM"):
        return FaissProxyMemoryError(code, message)
    return FaissProxyError(code, message)


class _State:
    def __init__(self):
        self.lock = threading.Lock()
        self.handle = None          # c_void_p of this process's fpx_client_t
        self.pid = None             # process that opened handle
        self.generation = 0         # bumped whenever objects lose validity
        self.pending = collections.deque()  # (generation, name) to drop
        self.endpoint = None        # None: FAISS_PROXY_SERVER / default
        self.api_key = None         # None: FAISS_PROXY_API_KEY
        self.server_key = None      # None: FAISS_PROXY_SERVER_KEY, else plain
        self.timeout_ms = None      # None: FAISS_PROXY_TIMEOUT_MS, else 30000
        self.connect_timeout_ms = None  # None: FAISS_PROXY_CONNECT_TIMEOUT_MS, else 5000
        self.long_timeout_ms = None     # None: FAISS_PROXY_LONG_TIMEOUT_MS, else none
        self.closed = False


_state = _State()


def _after_fork_in_child():
    #  The parent's handle belongs to the parent: leak it here (closing a
    #  ZeroMQ context inherited through fork is undefined behaviour).
    _state.lock = threading.Lock()
    _state.handle = None
    _state.pid = None
    _state.generation += 1
    _state.pending.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def configure(endpoint, api_key, timeout_ms, server_key=None, connect_timeout_ms=None,
              long_timeout_ms=None):
    """Sets the server for the next connection; an open connection is
    closed (its objects are freed by the server). The timeouts are
    libfaissproxy's (faissproxy.h, docs/CLIENTS.md); None keeps the
    library's default (its environment variables included)."""
    with _state.lock:
        _close_locked()
        _state.endpoint = endpoint
        _state.api_key = api_key
        _state.server_key = server_key
        _state.timeout_ms = timeout_ms
        _state.connect_timeout_ms = connect_timeout_ms
        _state.long_timeout_ms = long_timeout_ms
        _state.closed = False


def _close_locked():
    if _state.handle is not None and _state.pid == os.getpid():
        handle = ctypes.c_void_p(_state.handle)
        lib.fpx_client_destroy(ctypes.byref(handle))
    _state.handle = None
    _state.pid = None
    _state.generation += 1
    _state.pending.clear()


def close():
    """Closes the connection: the server frees every object it holds for
    this process; they are unusable afterwards."""
    with _state.lock:
        _close_locked()


@atexit.register
def _close_at_exit():
    try:
        if _state.lock.acquire(timeout=5):
            try:
                _close_locked()
                _state.closed = True
            finally:
                _state.lock.release()
    except Exception:       # interpreter teardown: nothing left to do
        pass


def _encode(text):
    return None if text is None else str(text).encode()


def _handle_locked():
    """The handle of this process, opened on first use (lock held)."""
    if _state.pid != os.getpid():
        if _state.handle is not None:      # fork without register_at_fork
            _state.handle = None
            _state.generation += 1
            _state.pending.clear()
    if _state.handle is None:
        options = _capi.ClientOptions(_encode(_state.endpoint), _encode(_state.api_key),
                                      _encode(_state.server_key))
        handle = ctypes.c_void_p()
        errmsg = ctypes.create_string_buffer(512)
        rc = lib.fpx_client_open(ctypes.byref(options), ctypes.byref(handle), errmsg,
                                 len(errmsg))
        if rc < 0:
            raise _error(rc, "faiss_proxy: " + errmsg.value.decode("utf-8", "replace"))
        handle = handle.value
        #  Set exactly as given (0 in the options struct means "default").
        for setter, value in ((lib.fpx_client_set_timeout, _state.timeout_ms),
                              (lib.fpx_client_set_connect_timeout, _state.connect_timeout_ms),
                              (lib.fpx_client_set_long_timeout, _state.long_timeout_ms)):
            if value is not None:
                setter(handle, int(value))
        _state.handle = handle
        _state.pid = os.getpid()
    _flush_locked(_state.handle)
    return _state.handle


def _flush_locked(handle):
    while _state.pending:
        generation, name = _state.pending.popleft()
        if generation == _state.generation:
            lib.fpx_index_drop(handle, name)    # a failure here is not the caller's


def call(fn, *args):
    """Runs fn(handle, *args) under the lock; raises on a negative result.
    Returns (result, generation)."""
    with _state.lock:
        handle = _handle_locked()
        rc = fn(handle, *args)
        if rc < 0:
            raise _error(rc, (lib.fpx_client_errmsg(handle) or b"").decode("utf-8", "replace"))
        return rc, _state.generation


def generation():
    return _state.generation


def is_current(gen):
    return gen == _state.generation and _state.pid == os.getpid()


def release(name, gen):
    """Drops server object `name` made in generation `gen`; never blocks."""
    try:
        if gen != _state.generation or _state.closed:
            return
        if _state.lock.acquire(blocking=False):
            try:
                if gen == _state.generation and _state.handle is not None \
                        and _state.pid == os.getpid():
                    lib.fpx_index_drop(_state.handle, name)
            finally:
                _state.lock.release()
        else:
            _state.pending.append((gen, name))
    except Exception:       # interpreter teardown
        pass


def server_info():
    info = _capi.ServerInfo()
    call(lib.fpx_ping, ctypes.byref(info))
    return {"server_version": info.server_version.decode(),
            "protocol_version": info.protocol_version,
            "faiss_version": info.faiss_version.decode(),
            "recovering": bool(info.recovering)}


def info(max_indexes=None, all_tenants=False):
    if max_indexes is None:
        wanted = 0                      # the server's default
    elif isinstance(max_indexes, bool) or not isinstance(max_indexes, int) \
            or not 0 <= max_indexes <= _capi.INFO_INDEXES_MAX:
        raise ValueError("max_indexes must be an int from 0 to %d, or None"
                         % _capi.INFO_INDEXES_MAX)
    else:
        wanted = max_indexes or -1      # 0: none listed
    handle = ctypes.c_void_p()
    call(lib.fpx_info, wanted, _capi.INFO_ALL if all_tenants else 0, ctypes.byref(handle))
    try:
        return json.loads(lib.fpx_info_json(handle).decode("ascii"))
    finally:
        lib.fpx_info_free(ctypes.byref(handle))
