"""_client.py — the connections of this process to faissproxyd.

What it is for: anonymous server objects belong to the connection that
made them, so the whole process shares ONE libfaissproxy handle per
server: the default one (configure()) and one per Server object
(faiss_proxy.connect(), for indexes spread over several servers). Every
object remembers its connection: its name is a _RoutedName, which call()
follows; a call that names no object goes to the server of the
innermost `with server:` block of this thread, else to the default one.
A handle is not thread-safe, so every call runs under its lock (ctypes
releases the GIL during the call, so other Python threads keep running,
and calls to different servers run at once). After a fork
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
import contextlib
import contextvars
import ctypes
import json
import os
import threading
import weakref

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
        self.own = False            # a connect() connection: closed when it goes

    def __del__(self):
        #  No Server, object or name refers to it any more: nothing of its
        #  server is reachable, so the connection (and its objects) go.
        try:
            if self.own and self.handle is not None and self.pid == os.getpid():
                handle = ctypes.c_void_p(self.handle)
                lib.fpx_client_destroy(ctypes.byref(handle))
        except Exception:       # interpreter teardown
            pass


_state = _State()

#  Connections of faiss_proxy.connect(), besides the default one.
_servers = weakref.WeakSet()

#  The server of the innermost `with server:` block (None: the default).
_current = contextvars.ContextVar("faiss_proxy_server", default=None)


class _RoutedName(bytes):
    """A server object's name that knows its connection (a bytes, so
    ctypes passes it as the char * it is)."""


class _ConnGen:
    """The generation of an object made on a connection other than the
    default one (whose generations stay plain ints)."""
    __slots__ = ("state", "generation")

    def __init__(self, state, generation):
        self.state = state
        self.generation = generation


def routed(name, gen):
    """name, tied to the connection that `gen` (as call() returned it)
    belongs to."""
    out = _RoutedName(name)
    out.state = gen.state if isinstance(gen, _ConnGen) else _state
    return out


def state_of(name):
    """The connection of a name (None for a name that records none)."""
    return getattr(name, "state", None)


@contextlib.contextmanager
def using(state):
    """Calls in this block that name no object go to `state`."""
    token = _current.set(state)
    try:
        yield
    finally:
        _current.reset(token)


def _after_fork_in_child():
    #  The parent's handle belongs to the parent: leak it here (closing a
    #  ZeroMQ context inherited through fork is undefined behaviour).
    for state in [_state] + list(_servers):
        state.lock = threading.Lock()
        state.handle = None
        state.pid = None
        state.generation += 1
        state.pending.clear()


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


def _close_locked(state=_state):
    if state.handle is not None and state.pid == os.getpid():
        handle = ctypes.c_void_p(state.handle)
        lib.fpx_client_destroy(ctypes.byref(handle))
    state.handle = None
    state.pid = None
    state.generation += 1
    state.pending.clear()


def close(state=_state):
    """Closes the connection: the server frees every object it holds for
    this process; they are unusable afterwards."""
    with state.lock:
        _close_locked(state)


def new_server(endpoint, api_key, timeout_ms, server_key=None, connect_timeout_ms=None,
               long_timeout_ms=None):
    """A connection of its own (opened on first use), for
    faiss_proxy.connect()."""
    state = _State()
    state.endpoint = endpoint
    state.api_key = api_key
    state.server_key = server_key
    state.timeout_ms = timeout_ms
    state.connect_timeout_ms = connect_timeout_ms
    state.long_timeout_ms = long_timeout_ms
    state.own = True
    _servers.add(state)
    return state


def current():
    """The connection that a call naming no object goes to."""
    return _current.get() or _state


@atexit.register
def _close_at_exit():
    for state in [_state] + list(_servers):
        try:
            if state.lock.acquire(timeout=5):
                try:
                    _close_locked(state)
                    state.closed = True
                finally:
                    state.lock.release()
        except Exception:       # interpreter teardown: nothing left to do
            pass


def _encode(text):
    return None if text is None else str(text).encode()


def _handle_locked(state=_state):
    """The handle of this process on `state`, opened on first use (lock
    held)."""
    if state.pid != os.getpid():
        if state.handle is not None:      # fork without register_at_fork
            state.handle = None
            state.generation += 1
            state.pending.clear()
    if state.handle is None:
        if state.closed and state is not _state:
            raise _error(_capi.ERROR_CODES.get("FPX_EINVAL", -5),
                         "faiss_proxy: this server's connection was closed (Server.close())")
        options = _capi.ClientOptions(_encode(state.endpoint), _encode(state.api_key),
                                      _encode(state.server_key))
        handle = ctypes.c_void_p()
        errmsg = ctypes.create_string_buffer(512)
        rc = lib.fpx_client_open(ctypes.byref(options), ctypes.byref(handle), errmsg,
                                 len(errmsg))
        if rc < 0:
            raise _error(rc, "faiss_proxy: " + errmsg.value.decode("utf-8", "replace"))
        handle = handle.value
        #  Set exactly as given (0 in the options struct means "default").
        for setter, value in ((lib.fpx_client_set_timeout, state.timeout_ms),
                              (lib.fpx_client_set_connect_timeout, state.connect_timeout_ms),
                              (lib.fpx_client_set_long_timeout, state.long_timeout_ms)):
            if value is not None:
                setter(handle, int(value))
        state.handle = handle
        state.pid = os.getpid()
    _flush_locked(state.handle, state)
    return state.handle


def _flush_locked(handle, state=_state):
    while state.pending:
        generation, name = state.pending.popleft()
        if generation == state.generation:
            lib.fpx_index_drop(handle, name)    # a failure here is not the caller's


def _route(args):
    """The connection of the first object name among args, else the
    current one."""
    for arg in args:
        if type(arg) is _RoutedName:
            return arg.state
    return _current.get() or _state


def call(fn, *args):
    """Runs fn(handle, *args) under the lock of the connection the call
    belongs to (_route); raises on a negative result. Returns (result,
    generation)."""
    state = _route(args)
    with state.lock:
        handle = _handle_locked(state)
        rc = fn(handle, *args)
        if rc < 0:
            raise _error(rc, (lib.fpx_client_errmsg(handle) or b"").decode("utf-8", "replace"))
        if state is _state:
            return rc, state.generation
        return rc, _ConnGen(state, state.generation)


def generation():
    return _state.generation


def is_current(gen):
    if isinstance(gen, _ConnGen):
        return gen.generation == gen.state.generation and gen.state.pid == os.getpid()
    return gen == _state.generation and _state.pid == os.getpid()


def release(name, gen):
    """Drops server object `name` made in generation `gen`; never blocks."""
    try:
        state = _state
        if isinstance(gen, _ConnGen):
            state, gen = gen.state, gen.generation
        if gen != state.generation or state.closed:
            return
        if state.lock.acquire(blocking=False):
            try:
                if gen == state.generation and state.handle is not None \
                        and state.pid == os.getpid():
                    lib.fpx_index_drop(state.handle, name)
            finally:
                state.lock.release()
        else:
            state.pending.append((gen, name))
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
