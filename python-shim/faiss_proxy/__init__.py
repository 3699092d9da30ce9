"""faiss_proxy — FAISS's Python API served by faissproxyd.

    import faiss_proxy as faiss

keeps a FAISS program unchanged. Two modes:

- remote: after faiss_proxy.configure(server="tcp://host:port",
  api_key="…"), or when FAISS_PROXY_SERVER / FAISS_PROXY_API_KEY are set
  at import. Every index lives on the server (anonymous, owned by this
  process's connection, freed when the Python object is collected); the
  FAISS extension is never imported into this process.
- local (not configured): every public name is the local `faiss` module's
  (Debian's python3-faiss), so the same program runs in-process.

faiss_proxy.is_remote() says which mode is active.

Several servers at once: faiss_proxy.connect(server, api_key) returns a
Server; indexes made inside `with srv:` live on it (and stay there), and
IndexShards / IndexReplicas take parts from several servers
(docs/SHARDING.md).

What this file must not do: import faiss or the C library at import time
(each is loaded by the first name that needs it, in its own mode).
"""
import os as _os

_mode = {"remote": False, "tenant_id": None, "server_version": None}


def configure(server=None, api_key=None, tenant_id=None, *, timeout_ms=None, server_key=None,
              connect_timeout_ms=None, long_timeout_ms=None):
    """Switches to remote mode.

    server: "tcp://host:port", "host:port" or "ipc://path" (None:
    $FAISS_PROXY_SERVER, else tcp://127.0.0.1:5555). api_key: the tenant's
    key (None: $FAISS_PROXY_API_KEY). tenant_id: accepted as other
    FAISS-over-network clients take it; the tenant is the one the key
    belongs to. timeout_ms: per-call timeout (default 30000, or
    $FAISS_PROXY_TIMEOUT_MS), except for long calls (train, add, k-means,
    serialize, read_index/deserialize, clone, …), which wait up to
    long_timeout_ms (default: as long as the connection lives, or
    $FAISS_PROXY_LONG_TIMEOUT_MS). connect_timeout_ms: how long a call
    waits for a connection (default 5000, or
    $FAISS_PROXY_CONNECT_TIMEOUT_MS); no server listening fails at once
    ("connection refused"). Reads are sent again once after a server
    restart; a write cut by one raises an error saying its outcome is
    unknown. docs/CLIENTS.md has the details.
    server_key: the server's CURVE public key (40 characters, printed by
    `faissproxy keygen --curve FILE`): the connection is encrypted and the
    server authenticated (None: $FAISS_PROXY_SERVER_KEY, else a plain
    connection; "": plain). A wrong key fails at once, naming CURVE.
    Objects made through an earlier configuration stop working (the
    connection they belonged to is closed).
    """
    from . import _client
    _client.configure(server, api_key, timeout_ms, server_key, connect_timeout_ms,
                      long_timeout_ms)
    _mode["remote"] = True
    _mode["tenant_id"] = tenant_id
    _mode["server_version"] = None


class Server:
    """A connection of this process to one more faissproxyd, besides the
    default one of configure(); made by faiss_proxy.connect().

    Indexes made inside `with srv:` (constructors, index_factory,
    read_index, create_index, open_index, …) live on srv, and every later
    call on them goes there, inside the block or not. The block applies
    to the thread that enters it. The connection opens on first use and
    takes configure()'s arguments; closing it (close(), or the end of the
    process) frees its anonymous objects on that server."""

    def __init__(self, server=None, api_key=None, *, timeout_ms=None, server_key=None,
                 connect_timeout_ms=None, long_timeout_ms=None):
        import threading
        from . import _client
        self._state = _client.new_server(server, api_key, timeout_ms, server_key,
                                         connect_timeout_ms, long_timeout_ms)
        self._tokens = threading.local()
        self.endpoint = server

    def __enter__(self):
        from . import _client
        stack = self._tokens.__dict__.setdefault("stack", [])
        stack.append(_client._current.set(self._state))
        return self

    def __exit__(self, *exc):
        from . import _client
        _client._current.reset(self._tokens.stack.pop())
        return False

    def close(self):
        """Closes this connection now; its objects are unusable afterwards."""
        from . import _client
        _client.close(self._state)
        self._state.closed = True

    def server_info(self):
        """The server's versions (a round trip)."""
        from . import _client
        with self:
            return _client.server_info()

    def info(self, max_indexes=None, all_tenants=False):
        """As faiss_proxy.info(), for this server."""
        from . import _client
        with self:
            return _client.info(max_indexes, all_tenants)

    def __repr__(self):
        return "<faiss_proxy.Server %s>" % (self.endpoint or "(default endpoint)")


def connect(server=None, api_key=None, *, timeout_ms=None, server_key=None,
            connect_timeout_ms=None, long_timeout_ms=None):
    """A Server: a connection to one more faissproxyd (arguments as
    configure()'s), for indexes spread over several servers. Switches to
    remote mode; the default connection (configure()) is unchanged and
    opened only if something uses it."""
    srv = Server(server, api_key, timeout_ms=timeout_ms, server_key=server_key,
                 connect_timeout_ms=connect_timeout_ms, long_timeout_ms=long_timeout_ms)
    _mode["remote"] = True
    return srv


def is_remote():
    """True when FAISS calls go to faissproxyd, False when they run in the
    local faiss module."""
    return _mode["remote"]


def close():
    """Remote mode: closes the connection now (the server frees every
    object of this process). A later call opens a new one."""
    if _mode["remote"]:
        from . import _client
        _client.close()


def server_info():
    """Remote mode: the server's versions (a round trip)."""
    from . import _client
    return _client.server_info()


def info(max_indexes=None, all_tenants=False):
    """Remote mode: what the server and this key's tenant are doing, as a
    dict (docs/PROTOCOL.md, "info"): uptime_s, workers, rss_bytes,
    queue_depth, in_flight; requests {opcode: {status: count}}, latency
    {opcode: {count, sum_s, p50, p90, p99, p999}} in seconds; the
    tenant's vectors, memory_bytes, disk_bytes and quotas; index_list
    [{name, ntotal, memory_bytes, disk_bytes}] sorted by name, and
    index_list_truncated. Only this tenant's figures and the server's
    aggregates are shown.

    max_indexes: how many indexes to list (None: the server's default,
    100; 0: none; at most 1000). all_tenants: also "server", the
    server's totals and every tenant's usage (an admin key only; others
    get FaissProxyError with code_name "FPX_EPERM")."""
    if not _mode["remote"]:
        raise RuntimeError("faiss_proxy.info: local mode has no server (call "
                           "faiss_proxy.configure() or set FAISS_PROXY_SERVER)")
    from . import _client
    return _client.info(max_indexes, all_tenants)


def _local_module():
    import faiss
    return faiss


def _remote_module():
    import importlib
    return importlib.import_module(__name__ + "._remote")


def __getattr__(name):
    if name == "__all__":
        if _mode["remote"]:
            return list(_remote_module().__all__)
        return [n for n in dir(_local_module()) if not n.startswith("_")]
    if name == "__version__":
        if not _mode["remote"]:
            return _local_module().__version__
        if _mode["server_version"] is None:
            _mode["server_version"] = server_info()["faiss_version"]
        return _mode["server_version"]
    if name.startswith("_"):       # private names (and submodules being imported)
        raise AttributeError("module 'faiss_proxy' has no attribute %r" % name)
    if not _mode["remote"]:
        return getattr(_local_module(), name)
    remote = _remote_module()
    if name in remote.__all__:
        return getattr(remote, name)
    raise AttributeError("module 'faiss_proxy' has no attribute %r (not available in remote "
                         "mode: faissproxyd does not serve it)" % name)


def __dir__():
    names = set(globals()) | {"__version__"}
    names.update(_remote_module().__all__ if _mode["remote"] else
                 (n for n in dir(_local_module()) if not n.startswith("_")))
    return sorted(names)


if _os.environ.get("FAISS_PROXY_SERVER") or _os.environ.get("FAISS_PROXY_API_KEY"):
    configure()
