"""_remote.py — FAISS's Python API, computed by faissproxyd.

What it is for: the classes and functions of `import faiss` (1.7.3), with
FAISS's constructors, attributes, argument checks and return types, each
backed by an anonymous object on the server (owned by this process's one
connection, _client.py). Argument checks mirror FAISS's own wrappers
(faiss/class_wrappers.py): `n, d = x.shape; assert d == self.d`, then the
array is made C-contiguous float32 and handed to libfaissproxy as a
buffer.

Object model: a Python object owns one server name (_Handle) and drops it
when collected. Composites (an IVF index around its quantizer, an IDMap
around its index, a PreTransform around its transform and index) adopt the
objects they are built from, on the server as in FAISS's own_fields: the
adopted objects' names become aliases of the parts, so the Python objects
keep working on the same server objects. Parts of indexes that were not
built here (read from a file, made by index_factory) are reached through
server views (fpx_subobject).

What it must not do: import the FAISS extension (but upload_index and
download_index, whose purpose is an in-process FAISS index), or compute a
result that FAISS computes (every index operation goes to the server).
"""
import ctypes
import operator
import os
from ctypes import byref, c_char_p, c_double, c_float, c_int, c_int64, c_size_t

import numpy as np

from . import _capi, _client, _random
from ._capi import IndexInfo, SearchParams, lib
from ._client import FaissProxyError, FaissProxyMemoryError, call  # noqa: F401 (exported)

# ---------------------------------------------------------------------------
# constants (FAISS 1.7.3's public enum values)

METRIC_INNER_PRODUCT = 0
METRIC_L2 = 1
METRIC_L1 = 2
METRIC_Linf = 3
METRIC_Lp = 4
METRIC_Canberra = 20
METRIC_BrayCurtis = 21
METRIC_JensenShannon = 22

IO_FLAG_ONDISK_SAME_DIR = 4
IO_FLAG_READ_ONLY = 2
IO_FLAG_SKIP_IVF_DATA = 8
IO_FLAG_SKIP_PRECOMPUTE_TABLE = 16
IO_FLAG_MMAP = 1684996104

#  Adds and searches are cut into requests of at most this many bytes (in
#  and out), well under faissproxyd's default 256 MiB message limit.
#  Searches are independent per query; adds in pieces give FAISS's result
#  for every index but HNSW, whose graph then depends on the cut (as when a
#  FAISS user adds in batches). FAISS_PROXY_CHUNK_MB overrides it.
_CHUNK_BYTES = int(float(os.environ.get("FAISS_PROXY_CHUNK_MB", "64")) * (1 << 20))


def _chunks(n, row_bytes):
    """[i0, i1) row ranges of at most _CHUNK_BYTES each (none when n = 0)."""
    step = max(1, _CHUNK_BYTES // max(1, row_bytes))
    return [(i0, min(n, i0 + step)) for i0 in range(0, n, step)]


def _unsupported(what):
    return FaissProxyError(_capi.ERROR_CODES.get("FPX_EINVAL", -5),
                           "faiss_proxy: %s is not supported by faissproxyd" % what)


# ---------------------------------------------------------------------------
# arrays


def _rows(x, d):
    """FAISS's `n, d = x.shape; assert d == self.d`, then x as C-contiguous
    float32. Lists are accepted too."""
    if not hasattr(x, "shape"):
        x = np.asarray(x, dtype="float32")
    n, xd = x.shape
    assert xd == d
    return np.ascontiguousarray(x, dtype="float32"), n


def _ptr(array):
    return array.ctypes.data


def _out_array(given, shape, dtype):
    """An output buffer: the caller's array when it can be written in
    place, else a fresh one (copied back into the caller's by _finish)."""
    if given is None:
        return np.empty(shape, dtype=dtype)
    assert given.shape == shape
    if given.dtype == dtype and given.flags.c_contiguous and given.flags.writeable:
        return given
    return np.empty(shape, dtype=dtype)


def _finish(given, result):
    if given is None or given is result:
        return result
    given[...] = result
    return given


def _int(value):
    return operator.index(value)


# ---------------------------------------------------------------------------
# server objects


class _Handle:
    """One server name of this connection; dropped when collected."""
    __slots__ = ("name", "gen", "__weakref__")

    def __init__(self, name, gen):
        self.name = _client.routed(name, gen)
        self.gen = gen

    def __del__(self):
        _client.release(self.name, self.gen)

    def __reduce__(self):
        raise TypeError("cannot pickle a faissproxyd object handle")


class _NamedHandle:
    """A durable named index: the Python object does not own it, so it is
    never dropped when the object goes; any connection of the tenant can
    reach it."""
    __slots__ = ("name", "gen", "__weakref__")

    def __init__(self, name, gen=None):
        self.name = _client.routed(name, gen)
        self.gen = None

    def __reduce__(self):
        raise TypeError("cannot pickle a faissproxyd object handle")


def _describe(info, gen):
    class_name = info.class_name.decode()
    obj_class = _CLASSES.get(class_name)
    if obj_class is None:
        obj_class = VectorTransform if class_name.endswith(("Transform", "Matrix")) else Index
    obj = obj_class.__new__(obj_class)
    obj._attach(info, gen)
    return obj


def _construct(type_name, args, refs=()):
    """Builds the object; returns (info, gen, the refs it adopted). An
    index that is already part of another composite is copied (FAISS's
    clone_index, on the server) and the copy adopted: faissproxyd's
    composites own their parts, where FAISS lets two indexes share one
    (typically a quantizer trained by the first). Later changes through
    one are then not seen by the other."""
    refs = list(refs)
    for i, ref in enumerate(refs):
        if not isinstance(ref, _ServerObject):
            raise TypeError("in method 'new_%s', argument of type %s is not a faiss_proxy "
                            "object" % (type_name, type(ref).__name__))
        ref._check_live()
        if ref.__dict__.get("_owner_ref") is not None or ref.__dict__.get("_is_view"):
            if not isinstance(ref, Index):
                raise FaissProxyError(_capi.ERROR_CODES.get("FPX_EINVAL", -5),
                                      "faiss_proxy: this %s is already part of another index: "
                                      "faissproxyd's composite indexes own their parts, so one "
                                      "transform cannot be shared by two of them (FAISS allows "
                                      "it without ownership)" % type(ref).__name__)
            refs[i] = clone_index(ref)
    info = IndexInfo()
    cargs = (c_double * max(1, len(args)))(*[float(a) for a in args])
    crefs = (c_char_p * max(1, len(refs)))(*[ref._name for ref in refs])
    #  A composite is built on the server of its parts (one server).
    states = {id(_client.state_of(ref._name)): _client.state_of(ref._name) for ref in refs}
    if len(states) > 1:
        raise FaissProxyError(_capi.ERROR_CODES.get("FPX_EINVAL", -5),
                              "faiss_proxy: the parts of a %s live on different servers"
                              % type_name)
    with _client.using(next(iter(states.values()), None) or _client.current()):
        _, gen = call(lib.fpx_construct, type_name.encode(), len(args), cargs, len(refs),
                      crefs, byref(info))
    return info, gen, refs


class _ServerObject:
    """Common part of indexes and vector transforms."""

    verbose = False         # server-side verbosity is not exposed: local only

    def _attach(self, info, gen):
        self._h = _Handle(bytes(info.name), gen)
        self._d = int(info.d)
        self._d_out = int(info.d_out)
        self._metric = int(info.metric)
        self._views = {}

    def _new(self, type_name, args, refs=(), paths=()):
        """Builds the object on the server; refs are the objects it adopts,
        paths their part names (kept once, in referenced_objects, as FAISS's
        wrappers keep them)."""
        info, gen, refs = _construct(type_name, args, refs)
        self._attach(info, gen)
        for ref in refs:
            ref._owner_ref = True
        if refs:
            self.referenced_objects = list(refs)
            self._part_paths = dict(zip(paths, range(len(refs))))

    @property
    def _name(self):
        return self._h.name

    def _check_live(self):
        if self._h.gen is not None and not _client.is_current(self._h.gen):
            raise FaissProxyError(_capi.ERROR_CODES.get("FPX_ENOTFOUND", -6),
                                  "faiss_proxy: this object belonged to a connection that was "
                                  "closed (configure(), close() or fork)")

    def _get_attr(self, attr):
        value = c_double()
        call(lib.fpx_get_attr, self._name, attr.encode(), byref(value))
        return value.value

    def _set_attr(self, attr, value):
        call(lib.fpx_set_attr, self._name, attr.encode(), float(value))

    def _view(self, path):
        """A part of this object: the Python object it was built from, or a
        server view of it (cached: one view per part)."""
        position = self.__dict__.get("_part_paths", {}).get(path)
        if position is not None:
            return self.referenced_objects[position]
        view = self._views.get(path)
        if view is None:
            info = IndexInfo()
            _, gen = call(lib.fpx_subobject, self._name, path.encode(), byref(info))
            view = _describe(info, gen)
            view._is_view = True
            self._views[path] = view
        return view

    def __repr__(self):
        return "<faiss_proxy.%s on faissproxyd %s>" % (type(self).__name__,
                                                      self._name.decode())


class _Attr:
    """A numeric FAISS field read / written on the server."""

    def __init__(self, attr, kind=int, writable=False):
        self.attr = attr
        self.kind = kind
        self.writable = writable
        self.name = attr

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, obj, objtype=None):
        if obj is None:
            return self
        return self.kind(obj._get_attr(self.attr))

    def __set__(self, obj, value):
        if not self.writable:
            raise AttributeError("faiss_proxy: attribute '%s' is read-only" % self.name)
        if self.kind is int:
            value = _int(value)
        elif self.kind is bool:
            value = bool(value)
        obj._set_attr(self.attr, value)


class _Fixed:
    """A field fixed at construction (from the object's description)."""

    def __init__(self, slot):
        self.slot = slot

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, obj, objtype=None):
        if obj is None:
            return self
        return getattr(obj, self.slot)

    def __set__(self, obj, value):
        raise AttributeError("faiss_proxy: attribute '%s' is read-only" % self.name)


# ---------------------------------------------------------------------------
# search parameters and id selectors


class SearchParameters:
    """FAISS's SearchParameters: fields set by keyword, as in FAISS."""
    _fields = {"sel": None}

    def __init__(self, **kwargs):
        for cls in reversed(type(self).__mro__):
            for key, value in cls.__dict__.get("_fields", {}).items():
                setattr(self, key, value)
        for key, value in kwargs.items():
            assert hasattr(self, key)
            setattr(self, key, value)


class SearchParametersIVF(SearchParameters):
    _fields = {"nprobe": 1, "max_codes": 0, "quantizer_params": None}


class SearchParametersHNSW(SearchParameters):
    _fields = {"efSearch": 16, "check_relative_distance": True}


class SearchParametersPreTransform(SearchParameters):
    _fields = {"index_params": None}


class SearchParametersPQ(SearchParameters):
    _fields = {"search_type": 0, "polysemous_ht": 0}


IVFSearchParameters = SearchParametersIVF


class _SearchArgs:
    """What a SearchParameters tree asks of one search: sp (an
    fpx_search_params_t) and a selection (sel, an IDSelector or None, and
    IVF max_codes: 0 the index's own, -1 no limit), as FAISS reads them:
    the selector of the searched index's own parameters (under any
    SearchParametersPreTransform), never a coarse quantizer's."""

    def __init__(self, sp, sel=None, max_codes=0):
        self.sp, self.sel, self.max_codes = sp, sel, max_codes

    def c_params(self):
        return byref(self.sp)

    def selects(self):
        return self.sel is not None or self.max_codes != 0


def _search_params(params):
    """_SearchArgs for a SearchParameters tree, or None. What faissproxyd
    cannot apply per request is refused, not ignored."""
    if params is None:
        return None
    out = _SearchArgs(SearchParams())
    todo = [(params, True)]
    while todo:
        p, searched = todo.pop()
        if p is None:
            continue
        if not isinstance(p, SearchParameters):
            raise TypeError("params must be a faiss_proxy SearchParameters object")
        if isinstance(p, SearchParametersPreTransform):
            todo.append((p.index_params, searched))     # FAISS ignores its own sel
            continue
        if p.sel is not None:
            if not searched:
                raise _unsupported("a coarse quantizer's SearchParameters.sel")
            _selector_check(p.sel)
            out.sel = p.sel
        if isinstance(p, SearchParametersIVF):
            out.sp.nprobe = _int(p.nprobe)
            if searched:        # FAISS's max_codes 0 is "no limit"
                out.max_codes = _int(p.max_codes) if p.max_codes else -1
            elif p.max_codes:
                raise _unsupported("a coarse quantizer's SearchParametersIVF.max_codes")
            todo.append((p.quantizer_params, False))
        elif isinstance(p, SearchParametersHNSW):
            if not p.check_relative_distance:
                raise _unsupported("SearchParametersHNSW.check_relative_distance = False")
            out.sp.efSearch = _int(p.efSearch)
        elif isinstance(p, SearchParametersPQ):
            if p.search_type or p.polysemous_ht:
                raise _unsupported("SearchParametersPQ.search_type / polysemous_ht")
    return out


def _selector_check(sel):
    """Raises unless sel is a selector faissproxyd serves."""
    while isinstance(sel, IDSelectorNot):
        sel = sel.sel
    if not isinstance(sel, (IDSelectorRange, IDSelectorBatch, IDSelectorBitmap, IDSelectorAll)):
        raise _unsupported("%s as a search-time selector" % type(sel).__name__)


def _c_selector(sel):
    """A new fpx_selector_t for sel (the caller destroys it)."""
    if isinstance(sel, IDSelectorNot):
        operand = ctypes.c_void_p(_c_selector(sel.sel))
        handle = lib.fpx_selector_not_new(byref(operand))
        if operand.value:
            lib.fpx_selector_destroy(byref(operand))
    elif isinstance(sel, IDSelectorRange):
        handle = lib.fpx_selector_range_new(sel.imin, sel.imax, int(bool(sel.assume_sorted)))
    elif isinstance(sel, IDSelectorArray):
        handle = lib.fpx_selector_array_new(sel._ids.size, _ptr(sel._ids))
    elif isinstance(sel, IDSelectorBatch):
        handle = lib.fpx_selector_batch_new(sel._ids.size, _ptr(sel._ids))
    elif isinstance(sel, IDSelectorBitmap):
        handle = lib.fpx_selector_bitmap_new(sel._bitmap.size, _ptr(sel._bitmap))
    else:
        handle = lib.fpx_selector_all_new()
    if not handle:
        raise MemoryError("faiss_proxy: out of memory for a selector")
    return handle


class _CSelection:
    """An fpx_selection_t for the duration of a with block (None when
    args asks no selection)."""

    def __init__(self, args):
        self.args = args
        self.handle = ctypes.c_void_p()

    def __enter__(self):
        if self.args is None or not self.args.selects():
            return None
        if self.args.sel is not None:
            self.handle.value = _c_selector(self.args.sel)
        return byref(_capi.Selection(self.handle.value, self.args.max_codes))

    def __exit__(self, *exc):
        if self.handle.value:
            lib.fpx_selector_destroy(byref(self.handle))
        return False


class IDSelector:
    """Base of the id selectors that remove_ids accepts."""

    def is_member(self, i):
        raise NotImplementedError


class IDSelectorBatch(IDSelector):
    def __init__(self, *args):
        if len(args) == 1:
            ids, = args
        elif len(args) == 2:
            n, ids = args
            ids = np.asarray(ids)[:n]
        else:
            raise TypeError("IDSelectorBatch(ids) or IDSelectorBatch(n, ids)")
        self._ids = np.ascontiguousarray(ids, dtype="int64").ravel()
        self._set = None

    def is_member(self, i):
        if self._set is None:
            self._set = set(self._ids.tolist())
        return int(i) in self._set


class IDSelectorArray(IDSelectorBatch):
    pass


class IDSelectorBitmap(IDSelector):
    """FAISS's IDSelectorBitmap(bitmap) / (n, bitmap): id i is selected iff
    i // 8 < n and bit i % 8 of bitmap[i // 8] is set."""

    def __init__(self, *args):
        if len(args) == 1:
            bitmap, = args
            bitmap = np.ascontiguousarray(bitmap).view("uint8").ravel()
        elif len(args) == 2:
            n, bitmap = args
            bitmap = np.ascontiguousarray(bitmap).view("uint8").ravel()[:_int(n)]
        else:
            raise TypeError("IDSelectorBitmap(bitmap) or IDSelectorBitmap(n, bitmap)")
        self._bitmap = np.array(bitmap, dtype="uint8")
        self.n = self._bitmap.size

    def is_member(self, i):
        i = int(i)
        return 0 <= i < 8 * self.n and bool((self._bitmap[i >> 3] >> (i & 7)) & 1)


class IDSelectorNot(IDSelector):
    def __init__(self, sel):
        if not isinstance(sel, IDSelector):
            raise TypeError("IDSelectorNot takes an IDSelector")
        self.sel = sel

    def is_member(self, i):
        return not self.sel.is_member(i)


class IDSelectorAll(IDSelector):
    def is_member(self, i):
        return True


class IDSelectorRange(IDSelector):
    def __init__(self, imin, imax, assume_sorted=False):
        self.imin = _int(imin)
        self.imax = _int(imax)
        self.assume_sorted = assume_sorted

    def is_member(self, i):
        return self.imin <= i < self.imax


class DirectMap:
    NoMap = 0
    Array = 1
    Hashtable = 2


# ---------------------------------------------------------------------------
# indexes


class Index(_ServerObject):
    """faiss.Index: the operations every index has."""

    def __init__(self, *args, **kwargs):
        raise AttributeError("No constructor defined - class is abstract")

    d = _Fixed("_d")
    metric_type = _Fixed("_metric")
    ntotal = _Attr("ntotal", int)
    is_trained = _Attr("is_trained", bool)
    metric_arg = _Attr("metric_arg", float, True)

    # -- data in

    def train(self, x):
        x, n = _rows(x, self._d)
        if n == 0:
            return
        call(lib.fpx_train, self._name, n, self._d, _ptr(x))

    def add(self, x):
        x, n = _rows(x, self._d)
        for i0, i1 in _chunks(n, self._d * 4):
            call(lib.fpx_add, self._name, i1 - i0, self._d, _ptr(x[i0:i1]), None)

    def add_with_ids(self, x, ids):
        if not hasattr(x, "shape"):
            x = np.asarray(x, dtype="float32")
        n, d = x.shape
        assert d == self._d
        x = np.ascontiguousarray(x, dtype="float32")
        ids = np.ascontiguousarray(ids, dtype="int64")
        assert ids.shape == (n, ), "not same nb of vectors as ids"
        for i0, i1 in _chunks(n, self._d * 4 + 8):
            call(lib.fpx_add_with_ids, self._name, i1 - i0, self._d, _ptr(x[i0:i1]),
                 _ptr(ids[i0:i1]), None)

    def reset(self):
        call(lib.fpx_reset, self._name)

    def remove_ids(self, x):
        removed = c_int64(0)
        if isinstance(x, IDSelectorRange):
            if x.imax <= x.imin:
                return 0
            call(lib.fpx_remove_range, self._name, x.imin, x.imax, byref(removed))
            return removed.value
        if isinstance(x, IDSelectorBatch):
            ids = x._ids
        elif isinstance(x, IDSelector):
            raise _unsupported("remove_ids with %s" % type(x).__name__)
        else:
            if not hasattr(x, "ndim"):
                x = np.asarray(x, dtype="int64")
            assert x.ndim == 1
            ids = np.ascontiguousarray(x, dtype="int64")
        if ids.size == 0:
            return 0
        call(lib.fpx_remove_ids, self._name, ids.size, _ptr(ids), byref(removed))
        return removed.value

    # -- search

    def search(self, x, k, *, params=None, D=None, I=None):
        if not hasattr(x, "shape"):
            x = np.asarray(x, dtype="float32")
        n, d = x.shape
        x = np.ascontiguousarray(x, dtype="float32")
        assert d == self._d
        k = _int(k)
        assert k > 0
        Dout = _out_array(D, (n, k), np.float32)
        Iout = _out_array(I, (n, k), np.int64)
        if n > 0:
            sp = _search_params(params)
            with _CSelection(sp) as selection:
                for i0, i1 in _chunks(n, d * 4 + k * 12):
                    call(lib.fpx_search_select, self._name, i1 - i0, d, _ptr(x[i0:i1]), k,
                         sp.c_params() if sp is not None else None, selection,
                         _ptr(Dout[i0:i1]), _ptr(Iout[i0:i1]))
        return _finish(D, Dout), _finish(I, Iout)

    def assign(self, x, k, labels=None):
        if not hasattr(x, "shape"):
            x = np.asarray(x, dtype="float32")
        n, d = x.shape
        assert d == self._d
        if labels is not None:
            assert labels.shape == (n, k)
        _, I = self.search(x, k, I=labels)
        return I

    def search_and_reconstruct(self, x, k, *, params=None, D=None, I=None, R=None):
        """FAISS's search_and_reconstruct, on the server: an IVF index
        reconstructs from its lists; empty slots (label -1) hold all-ones
        bytes (NaN), as in FAISS."""
        if not hasattr(x, "shape"):
            x = np.asarray(x, dtype="float32")
        n, d = x.shape
        x = np.ascontiguousarray(x, dtype="float32")
        assert d == self._d
        k = _int(k)
        assert k > 0
        Dout = _out_array(D, (n, k), np.float32)
        Iout = _out_array(I, (n, k), np.int64)
        Rout = _out_array(R, (n, k, d), np.float32)
        if n > 0:
            sp = _search_params(params)
            # FAISS's max_codes 0 ("no limit") passes: the index's own
            # (0 unless set) applies here.
            if sp is not None and (sp.sel is not None or sp.max_codes > 0):
                raise _unsupported("search_and_reconstruct with SearchParameters.sel or "
                                   "max_codes")
            for i0, i1 in _chunks(n, d * 4 + k * 12 + k * d * 4):
                call(lib.fpx_search_and_reconstruct, self._name, i1 - i0, d, _ptr(x[i0:i1]), k,
                     sp.c_params() if sp is not None else None, _ptr(Dout[i0:i1]),
                     _ptr(Iout[i0:i1]), _ptr(Rout[i0:i1]))
        return _finish(D, Dout), _finish(I, Iout), _finish(R, Rout)

    def range_search(self, x, thresh, *, params=None):
        if not hasattr(x, "shape"):
            x = np.asarray(x, dtype="float32")
        n, d = x.shape
        assert d == self._d
        x = np.ascontiguousarray(x, dtype="float32")
        if n == 0:
            return (np.zeros(1, dtype=np.uint64), np.zeros(0, dtype=np.float32),
                    np.zeros(0, dtype=np.int64))
        sp = _search_params(params)
        with _CSelection(sp) as selection:
            parts = [self._range_search(x[i0:i1], float(thresh), sp, selection)
                     for i0, i1 in _chunks(n, d * 4)]
        return _concat_range(parts)

    def _range_search(self, x, radius, sp, selection=None):
        """One request; a result over the server's message limit is split
        in halves (queries are independent)."""
        n = x.shape[0]
        result = ctypes.POINTER(_capi.RangeResult)()
        try:
            call(lib.fpx_range_search_select, self._name, n, self._d, _ptr(x), c_float(radius),
                 sp.c_params() if sp is not None else None, selection, byref(result))
        except FaissProxyError as e:
            if e.code_name != "FPX_ETOOBIG" or n == 1:
                raise
            half = n // 2
            return _concat_range([self._range_search(x[:half], radius, sp, selection),
                                  self._range_search(x[half:], radius, sp, selection)])
        try:
            r = result.contents
            lims = np.ctypeslib.as_array(r.lims, shape=(n + 1,)).copy()
            total = int(lims[-1])
            if total:
                D = np.ctypeslib.as_array(r.distances, shape=(total,)).copy()
                I = np.ctypeslib.as_array(r.labels, shape=(total,)).copy()
            else:
                D = np.zeros(0, dtype=np.float32)
                I = np.zeros(0, dtype=np.int64)
        finally:
            lib.fpx_range_result_destroy(byref(result))
        return lims, D, I

    def merge_from(self, otherIndex, add_id=0):
        """FAISS's: this index takes otherIndex's vectors (their ids +
        add_id for an IVF index); otherIndex is left empty."""
        if not isinstance(otherIndex, _ServerObject):
            raise TypeError("in method 'merge_from', argument 2 is not a faiss_proxy object")
        call(lib.fpx_merge_from, self._name, otherIndex._name, _int(add_id), None)

    # -- standalone codec (on the server)

    def sa_code_size(self):
        return int(self._get_attr("sa_code_size"))

    def sa_encode(self, x, codes=None):
        x, n = _rows(x, self._d)
        cs = self.sa_code_size()
        out = _out_array(codes, (n, cs), np.uint8)
        for i0, i1 in _chunks(n, self._d * 4 + cs):
            call(lib.fpx_sa_encode, self._name, i1 - i0, self._d, _ptr(x[i0:i1]), cs,
                 _ptr(out[i0:i1]))
        return _finish(codes, out)

    def sa_decode(self, codes, x=None):
        cs = self.sa_code_size()
        codes = np.ascontiguousarray(codes, dtype="uint8")
        assert codes.ndim == 2 and codes.shape[1] == cs
        n = codes.shape[0]
        out = _out_array(x, (n, self._d), np.float32)
        for i0, i1 in _chunks(n, cs + self._d * 4):
            call(lib.fpx_sa_decode, self._name, i1 - i0, cs, _ptr(codes[i0:i1]), self._d,
                 _ptr(out[i0:i1]))
        return _finish(x, out)

    # -- data out

    def reconstruct(self, key, x=None):
        out = _out_array(x, (self._d, ), np.float32)
        call(lib.fpx_reconstruct, self._name, _int(key), self._d, _ptr(out))
        return _finish(x, out)

    def reconstruct_n(self, n0=0, ni=-1, x=None):
        n0, ni = _int(n0), _int(ni)
        if ni == -1:
            ni = self.ntotal - n0
        out = _out_array(x, (ni, self._d), np.float32)
        for i0, i1 in _chunks(ni, self._d * 4):
            call(lib.fpx_reconstruct_n, self._name, n0 + i0, i1 - i0, self._d, _ptr(out[i0:i1]))
        return _finish(x, out)

    def reconstruct_batch(self, key, x=None):
        key = np.ascontiguousarray(key, dtype="int64")
        n, = key.shape
        out = _out_array(x, (n, self._d), np.float32)
        for i in range(n):
            call(lib.fpx_reconstruct, self._name, int(key[i]), self._d, _ptr(out[i]))
        return _finish(x, out)

    # -- pickling, as FAISS: through serialize_index

    def __getstate__(self):
        return {"this": serialize_index(self).tobytes()}

    def __setstate__(self, state):
        other = deserialize_index(np.frombuffer(state["this"], dtype="uint8"))
        self.__dict__.update(other.__dict__)


def _concat_range(parts):
    if len(parts) == 1:
        return parts[0]
    lims = [np.zeros(1, dtype=np.uint64)]
    offset = 0
    for part_lims, _, _ in parts:
        lims.append(part_lims[1:] + np.uint64(offset))
        offset += int(part_lims[-1])
    return (np.concatenate(lims), np.concatenate([p[1] for p in parts]),
            np.concatenate([p[2] for p in parts]))


class IndexFlatCodes(Index):
    @property
    def code_size(self):
        """Bytes per stored vector (FAISS's formula for each class)."""
        return self._code_size()


_SQ_BITS = {0: 8, 1: 4, 2: 8, 3: 4, 4: 16, 5: 8, 6: 6}     # qtype -> bits per component


def _sq_code_size(qtype, d):
    return (d * _SQ_BITS[qtype] + 7) // 8


class IndexFlat(IndexFlatCodes):
    def __init__(self, d, metric=METRIC_L2):
        self._new("IndexFlat", [_int(d), _int(metric)])

    def _code_size(self):
        return 4 * self._d


class IndexFlatL2(IndexFlat):
    def __init__(self, d):
        self._new("IndexFlatL2", [_int(d)])


class IndexFlatIP(IndexFlat):
    def __init__(self, d):
        self._new("IndexFlatIP", [_int(d)])


class _View:
    """A FAISS sub-structure (hnsw, pq, sq) whose fields live on its
    index."""

    def __init__(self, owner):
        self._owner = owner

    def _get_attr(self, attr):
        return self._owner._get_attr(attr)

    def _set_attr(self, attr, value):
        self._owner._set_attr(attr, value)


class HNSW(_View):
    efSearch = _Attr("efSearch", int, True)
    efConstruction = _Attr("efConstruction", int, True)
    check_relative_distance = _Attr("check_relative_distance", bool, True)
    search_bounded_queue = _Attr("search_bounded_queue", bool, True)
    max_level = _Attr("max_level", int)
    entry_point = _Attr("entry_point", int)


class ProductQuantizer(_View):
    M = _Attr("pq_M", int)
    nbits = _Attr("pq_nbits", int)

    @property
    def d(self):
        return self._owner.d

    @property
    def ksub(self):
        return 1 << self.nbits

    @property
    def dsub(self):
        return self._owner.d // self.M

    @property
    def code_size(self):
        return (self.M * self.nbits + 7) // 8


class ScalarQuantizer(_View):
    QT_8bit = 0
    QT_4bit = 1
    QT_8bit_uniform = 2
    QT_4bit_uniform = 3
    QT_fp16 = 4
    QT_8bit_direct = 5
    QT_6bit = 6

    qtype = _Attr("qtype", int)

    @property
    def code_size(self):
        return _sq_code_size(self.qtype, self._owner.d)

    @property
    def d(self):
        return self._owner.d

    def __init__(self, *args):
        if len(args) == 1 and isinstance(args[0], Index):
            super().__init__(args[0])
        else:
            raise _unsupported("a standalone ScalarQuantizer")


class _IVFClusteringParameters(_View):
    """IndexIVF.cp: the k-means parameters the IVF trains its quantizer
    with, fields of the server's object (verbose only False: FAISS's
    verbose output would go to the server's terminal)."""
    niter = _Attr("cp.niter", int, True)
    nredo = _Attr("cp.nredo", int, True)
    seed = _Attr("cp.seed", int, True)
    min_points_per_centroid = _Attr("cp.min_points_per_centroid", int, True)
    max_points_per_centroid = _Attr("cp.max_points_per_centroid", int, True)
    spherical = _Attr("cp.spherical", bool, True)
    int_centroids = _Attr("cp.int_centroids", bool, True)
    update_index = _Attr("cp.update_index", bool, True)
    verbose = _Attr("cp.verbose", bool, True)
    decode_block_size = _Attr("cp.decode_block_size", int, True)


class IndexIVF(Index):
    nlist = _Attr("nlist", int)
    code_size = _Attr("code_size", int)
    nprobe = _Attr("nprobe", int, True)
    max_codes = _Attr("max_codes", int, True)
    quantizer_trains_alone = _Attr("quantizer_trains_alone", int, True)

    @property
    def quantizer(self):
        return self._view("quantizer")

    @property
    def cp(self):
        return _IVFClusteringParameters(self)

    def check_ids_sorted(self):
        """FAISS's: whether each inverted list keeps its ids in ascending
        order (what IDSelectorRange(imin, imax, True) assumes)."""
        return bool(self._get_attr("ids_sorted"))

    def make_direct_map(self, new_maintain=True):
        call(lib.fpx_set_direct_map, self._name, 1 if new_maintain else 0)

    def set_direct_map_type(self, type):
        call(lib.fpx_set_direct_map, self._name, _int(type))

    def _new_ivf(self, type_name, quantizer, args):
        self._new(type_name, args, [quantizer], ["quantizer"])


class IndexIVFFlat(IndexIVF):
    def __init__(self, quantizer, d, nlist, metric=METRIC_L2):
        self._new_ivf("IndexIVFFlat", quantizer, [_int(d), _int(nlist), _int(metric)])


class IndexIVFPQ(IndexIVF):
    by_residual = _Attr("by_residual", bool)

    def __init__(self, quantizer, d, nlist, M, nbits_per_idx=8, metric=METRIC_L2):
        self._new_ivf("IndexIVFPQ", quantizer,
                      [_int(d), _int(nlist), _int(M), _int(nbits_per_idx), _int(metric)])

    @property
    def pq(self):
        return ProductQuantizer(self)


class IndexIVFScalarQuantizer(IndexIVF):
    by_residual = _Attr("by_residual", bool, True)

    def __init__(self, quantizer, d, nlist, qtype=ScalarQuantizer.QT_8bit,
                 metric=METRIC_L2, encode_residual=True):
        self._new_ivf("IndexIVFScalarQuantizer", quantizer,
                      [_int(d), _int(nlist), _int(qtype), _int(metric), bool(encode_residual)])

    @property
    def sq(self):
        return ScalarQuantizer(self)


class IndexHNSW(Index):
    @property
    def hnsw(self):
        return HNSW(self)


class IndexHNSWFlat(IndexHNSW):
    def __init__(self, d, M=32, metric=METRIC_L2):
        self._new("IndexHNSWFlat", [_int(d), _int(M), _int(metric)])


class IndexHNSWSQ(IndexHNSW):
    def __init__(self, d, qtype, M=32, metric=METRIC_L2):
        self._new("IndexHNSWSQ", [_int(d), _int(qtype), _int(M), _int(metric)])


class IndexHNSWPQ(IndexHNSW):
    def __init__(self, *args):
        raise _unsupported("constructing IndexHNSWPQ (use index_factory)")


class IndexPQ(IndexFlatCodes):
    def __init__(self, d, M, nbits, metric=METRIC_L2):
        self._new("IndexPQ", [_int(d), _int(M), _int(nbits), _int(metric)])

    def _code_size(self):
        return self.pq.code_size

    @property
    def pq(self):
        return ProductQuantizer(self)


class IndexScalarQuantizer(IndexFlatCodes):
    def __init__(self, d, qtype, metric=METRIC_L2):
        self._new("IndexScalarQuantizer", [_int(d), _int(qtype), _int(metric)])

    def _code_size(self):
        return self.sq.code_size

    @property
    def sq(self):
        return ScalarQuantizer(self)


class IndexLSH(IndexFlatCodes):
    nbits = _Attr("nbits", int)
    rotate_data = _Attr("rotate_data", bool)
    train_thresholds = _Attr("train_thresholds", bool)

    def __init__(self, d, nbits, rotate_data=True, train_thresholds=False):
        self._new("IndexLSH", [_int(d), _int(nbits), bool(rotate_data),
                               bool(train_thresholds)])

    def _code_size(self):
        return (self.nbits + 7) // 8


class _VectorCopy:
    """A copy of a FAISS std::vector<int64> (e.g. IndexIDMap.id_map):
    size(), at(i), len(), iteration; vector_to_array gives the array."""

    def __init__(self, array):
        self._array = array

    def size(self):
        return len(self._array)

    def at(self, i):
        return int(self._array[i])

    def __len__(self):
        return len(self._array)

    def __getitem__(self, i):
        return self._array[i]

    def __iter__(self):
        return iter(self._array.tolist())


class IndexIDMap(Index):
    def __init__(self, index):
        self._new(type(self).__name__, [], [index], ["index"])

    @property
    def index(self):
        return self._view("index")

    @property
    def id_map(self):
        ids = ctypes.POINTER(c_int64)()
        n = c_size_t(0)
        call(lib.fpx_get_id_map, self._name, byref(ids), byref(n))
        try:
            array = np.ctypeslib.as_array(ids, shape=(n.value, )).copy() if n.value \
                else np.zeros(0, dtype=np.int64)
        finally:
            lib.fpx_free(ids)
        return _VectorCopy(array)


class IndexIDMap2(IndexIDMap):
    pass


class _Chain:
    """IndexPreTransform.chain: size(), at(i), len(), indexing."""

    def __init__(self, owner):
        self._owner = owner

    def size(self):
        return int(self._owner._get_attr("chain_size"))

    def __len__(self):
        return self.size()

    def at(self, i):
        i = _int(i)
        if not 0 <= i < self.size():
            raise IndexError("chain index out of range")
        return self._owner._view("chain.%d" % i)

    __getitem__ = at


def _adopt(owner, obj, role, path):
    """owner (an anonymous composite of this connection) adopts obj on the
    server (fpx_attach), as FAISS's add_shard / add_replica /
    prepend_transform; obj keeps working on the part, as in FAISS."""
    if not isinstance(obj, _ServerObject):
        raise TypeError("in method '%s', argument 2 is not a faiss_proxy object" % role)
    owner._check_live()
    obj._check_live()
    if obj.__dict__.get("_owner_ref") is not None or obj.__dict__.get("_is_view"):
        raise FaissProxyError(_capi.ERROR_CODES.get("FPX_EINVAL", -5),
                              "faiss_proxy: this %s is already part of another index: "
                              "faissproxyd's composite indexes own their parts"
                              % type(obj).__name__)
    info = IndexInfo()
    call(lib.fpx_attach, owner._name, role.encode(), obj._name, byref(info))
    obj._owner_ref = True
    refs = owner.__dict__.setdefault("referenced_objects", [])
    refs.append(obj)
    if path is not None:
        owner.__dict__.setdefault("_part_paths", {})[path] = len(refs) - 1


class IndexPreTransform(Index):
    def __init__(self, *args):
        if len(args) == 1:
            index, = args
            self._new("IndexPreTransform", [], [index], ["index"])
            return
        if len(args) != 2:
            raise _unsupported("IndexPreTransform without (index) or (transform, index)")
        vt, index = args
        self._new("IndexPreTransform", [], [vt, index], ["chain.0", "index"])

    @property
    def index(self):
        return self._view("index")

    @property
    def chain(self):
        return _Chain(self)

    def prepend_transform(self, vt):
        """FAISS's prepend_transform, for a transform that keeps the
        index's dimension (faissproxyd fixes an index's d for its
        lifetime)."""
        _adopt(self, vt, "prepend_transform", None)
        #  The chain's positions moved: paths to its parts start again.
        paths = self.__dict__.get("_part_paths", {})
        self._part_paths = {p: i for p, i in paths.items() if not p.startswith("chain.")}
        self._part_paths["chain.0"] = len(self.referenced_objects) - 1
        self._views = {}


class _ThreadedIndex(Index):
    """IndexShards / IndexReplicas: parts added after construction.

    While every part lives on the composite's own server, the composite
    is a server object (FAISS's IndexShards / IndexReplicas there, adopting
    its parts) and the server never runs FAISS's own threads for it
    (`threaded` is kept here only). Once a part lives on another server
    (faiss_proxy.connect()), the composite is spread: this object
    calls its parts itself, each in a thread of its own (a call of
    libfaissproxy releases the GIL), and merges their results as FAISS's
    IndexShards / IndexReplicas do (docs/SHARDING.md). Parts adopted before
    then stay parts of the server object and are called directly too."""

    _spread = False

    def _init_group(self, type_name, d, threaded, extra):
        #  The server object is made on first use: on the server of the
        #  first part, or else on the current one (a `with server:` block
        #  at construction, else the default), so that a group whose
        #  parts all live on connect()'s servers needs no default server.
        self._pending = (type_name, [_int(d)] + extra, _client.current())
        self._d = self._d_out = _int(d)
        self._metric = METRIC_L2
        self._views = {}
        self.threaded = bool(threaded)
        self.referenced_objects = []
        self._spread = False

    @property
    def _h(self):
        if "_h_" not in self.__dict__:
            self._materialize(None)
        return self.__dict__["_h_"]

    @_h.setter
    def _h(self, handle):
        self.__dict__["_h_"] = handle

    def _materialize(self, state):
        type_name, args, home = self.__dict__.pop("_pending")
        with _client.using(state or home):
            info, gen, _ = _construct(type_name, args)
        self._attach(info, gen)

    def count(self):
        return len(self.referenced_objects)

    def at(self, i):
        return self.referenced_objects[_int(i)]

    def _remove(self, index, role):
        """FAISS's remove_shard / remove_replica: the part leaves the group
        on the server (fpx_attach's remove roles) and stands alone again."""
        if not isinstance(index, _ServerObject):
            raise TypeError("in method '%s', argument 2 is not a faiss_proxy object" % role)
        info = IndexInfo()
        call(lib.fpx_attach, self._name, role.encode(), index._name, byref(info))
        self.referenced_objects = [p for p in self.referenced_objects if p is not index]
        index.__dict__.pop("_owner_ref", None)

    def _add_part(self, index, role):
        if not isinstance(index, Index):
            raise TypeError("in method '%s', argument 2 is not a faiss_proxy index" % role)
        index._check_live()
        if "_pending" in self.__dict__:
            self._materialize(_client.state_of(index._name))
        if not self._spread and _client.state_of(index._name) is _client.state_of(self._name):
            _adopt(self, index, role, None)
            return
        self._check_part(index, role)
        self._spread = True
        self.referenced_objects.append(index)

    # -- the fan-out

    def _check_part(self, index, role):
        """The server's checks of fpx_attach (shim_objects.cpp), for a part
        it does not see."""
        def bad(message):
            raise FaissProxyError(_capi.ERROR_CODES.get("FPX_EINVAL", -5), message)
        if isinstance(index, _ThreadedIndex) and index.count() == 0:
            bad("a group without parts cannot be part of an index")
        if index._d != self._d:
            bad("dimension %d differs from the group's %d" % (index._d, self._d))
        if index.metric_type not in (METRIC_L2, METRIC_INNER_PRODUCT):
            bad("shards and replicas merge L2 or inner-product results only")
        if self.count() >= 64:
            bad("64 parts at most")
        if self.count() > 0:
            first = self.referenced_objects[0]
            if index.metric_type != first.metric_type or index.is_trained != first.is_trained:
                bad("the new part's metric or trained state differs from the first part's")
            if role == "replica" and index.ntotal != first.ntotal:
                bad("a new replica must hold as many vectors as the others (%d)"
                    % first.ntotal)

    def _fan(self, fn, parts=None):
        """fn(i, part) for each (i, part), all at once; the results in
        order. A part's failure is raised once every call has returned,
        naming the part and its server."""
        parts = list(enumerate(self.referenced_objects)) if parts is None else parts
        if len(parts) == 1:
            results = [self._run_part(fn, *parts[0])]
        else:
            pool = _fan_pool()
            futures = [pool.submit(self._run_part, fn, i, part) for i, part in parts]
            results = [f.result() for f in futures]
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return results

    def _run_part(self, fn, i, part):
        try:
            return fn(i, part)
        except (FaissProxyError, FaissProxyMemoryError) as e:
            state = _client.state_of(part._name)
            where = (state.endpoint if state is not None and state.endpoint else "the default "
                     "server")
            error = type(e)(e.code, "faiss_proxy: %s part %d (on %s): %s"
                            % (type(self).__name__, i, where, e))
            error.__cause__ = e
            return error
        except BaseException as e:      # AssertionError, TypeError: as FAISS raises them
            return e

    # -- what every spread composite does on each part

    ntotal = property(lambda self: self._spread_ntotal() if self._spread
                      else 0 if "_pending" in self.__dict__ else int(self._get_attr("ntotal")))
    is_trained = property(lambda self: all(self._fan(lambda i, p: p.is_trained))
                          if self._spread else bool(self._get_attr("is_trained")))
    metric_type = property(lambda self: self.referenced_objects[0].metric_type
                           if self._spread else self._metric)

    def train(self, x):
        if not self._spread:
            return super().train(x)
        x, n = _rows(x, self._d)
        self._fan(lambda i, p: p.train(x))

    def reset(self):
        if not self._spread:
            return super().reset()
        self._fan(lambda i, p: p.reset())

    def remove_ids(self, x):
        if not self._spread:
            return super().remove_ids(x)
        raise _faiss_error("remove_ids not implemented for this type of index")

    def _search_part(self, part, x, k):
        return part.search(x, k)


def _faiss_error(message):
    """What FAISS raises for its own checks (a RuntimeError)."""
    return FaissProxyError(_capi.ERROR_CODES.get("FPX_EFAISS", -1), "Error: " + message
                           if not message.startswith("Error") else message)


_fan_pools = {}


def _fan_pool():
    """This process's threads for the parts' calls (made again after a
    fork: a pool's threads do not survive one)."""
    pool = _fan_pools.get(os.getpid())
    if pool is None:
        import concurrent.futures
        _fan_pools.clear()
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=64,
                                                     thread_name_prefix="faiss_proxy-fan")
        _fan_pools[os.getpid()] = pool
    return pool


def _merge_knn(Ds, Is, translations, is_l2):
    """FAISS 1.7.3's merge_tables (IndexShards.cpp) on arrays (nshard, n,
    k): per query, the best head of the shards' lists is taken k times,
    the shards sitting in a heap ordered by (distance, shard number): for
    L2 the smallest distance, ties to the lowest shard; otherwise the
    largest, ties to the highest shard. A shard's list ends at its first
    label -1; a row with no more heads is filled with label -1 and
    FAISS's C::neutral() (the lowest float for L2, the highest otherwise)."""
    nshard, n, k = Is.shape
    D = np.empty((n, k), dtype=np.float32)
    I = np.empty((n, k), dtype=np.int64)
    ends = np.where((Is < 0).any(axis=2), (Is < 0).argmax(axis=2), k)   # (nshard, n)
    pointer = np.zeros((nshard, n), dtype=np.int64)
    rows = np.arange(n)
    neutral = np.finfo(np.float32).min if is_l2 else np.finfo(np.float32).max
    translations = np.asarray(translations, dtype=np.int64)
    for j in range(k):
        live = pointer < ends
        any_live = live.any(axis=0)
        heads = np.take_along_axis(Ds, np.minimum(pointer, k - 1)[..., None], axis=2)[..., 0]
        values = np.where(live, heads.astype(np.float64), np.nan)
        values[0, ~any_live] = 0.0
        if is_l2:
            best = np.nanargmin(values, axis=0)
        else:
            best = nshard - 1 - np.nanargmax(values[::-1], axis=0)
        p = pointer[best, rows]
        D[:, j] = np.where(any_live, Ds[best, rows, np.minimum(p, k - 1)], neutral)
        I[:, j] = np.where(any_live, Is[best, rows, np.minimum(p, k - 1)] + translations[best],
                           -1)
        pointer[best[any_live], rows[any_live]] += 1
    return D, I


class IndexShards(_ThreadedIndex):
    def __init__(self, d, threaded=False, successive_ids=True):
        self._init_group("IndexShards", d, threaded, [bool(successive_ids)])
        self._successive_ids = bool(successive_ids)

    @property
    def successive_ids(self):
        if "_successive_ids" not in self.__dict__:      # described, not built here
            self._successive_ids = bool(self._get_attr("successive_ids"))
        return self._successive_ids

    def add_shard(self, index):
        self._add_part(index, "shard")

    addIndex = add_shard

    def remove_shard(self, index):
        self._remove(index, "remove_shard")

    def _spread_ntotal(self):
        return sum(self._fan(lambda i, p: p.ntotal))

    def add(self, x):
        if not self._spread:
            return super().add(x)
        self._add(x, None)

    def add_with_ids(self, x, ids):
        if not self._spread:
            return super().add_with_ids(x, ids)
        self._add(x, ids)

    def _add(self, x, ids):
        """FAISS's IndexShards::add_with_ids: shard s gets rows [s n /
        nshard, (s + 1) n / nshard); without ids and without
        successive_ids, the ids are ntotal + i."""
        x, n = _rows(x, self._d)
        if ids is not None:
            ids = np.ascontiguousarray(ids, dtype="int64")
            assert ids.shape == (n, ), "not same nb of vectors as ids"
        if self.successive_ids:
            if ids is not None:
                raise _faiss_error("Error: '!(successive_ids && xids)' failed: It makes no "
                                   "sense to pass in ids and request them to be shifted")
            if self.ntotal != 0:
                raise _faiss_error("Error: 'this->ntotal == 0' failed: when adding to "
                                   "IndexShards with sucessive_ids, only add() in a single "
                                   "pass is supported")
        elif ids is None:
            ids = np.arange(self.ntotal, self.ntotal + n, dtype=np.int64)
        nshard = self.count()

        def add_part(s, part):
            i0, i1 = s * n // nshard, (s + 1) * n // nshard
            if ids is None:
                part.add(x[i0:i1])
            else:
                part.add_with_ids(x[i0:i1], ids[i0:i1])
        self._fan(add_part)

    def search(self, x, k, *, params=None, D=None, I=None):
        if not self._spread:
            return super().search(x, k, params=params, D=D, I=I)
        if params is not None:
            raise _faiss_error("Error: '!params' failed: search params not supported for "
                               "this index")
        x, n = _rows(x, self._d)
        k = _int(k)
        assert k > 0
        successive = self.successive_ids

        def search_part(s, part):
            result = part.search(x, k)
            return result + ((part.ntotal if successive else 0), )
        results = self._fan(search_part)
        translations = np.cumsum([0] + [r[2] for r in results[:-1]]) if successive \
            else np.zeros(len(results), dtype=np.int64)
        Dm, Im = _merge_knn(np.stack([r[0] for r in results]), np.stack([r[1] for r in results]),
                            translations, self.metric_type == METRIC_L2)
        return _finish(D, Dm), _finish(I, Im)

    def range_search(self, x, thresh, *, params=None):
        """Not in FAISS 1.7.3's IndexShards: every shard's results for a
        query, in shard order, ids translated as search translates them."""
        if not self._spread:
            return super().range_search(x, thresh, params=params)
        x, n = _rows(x, self._d)
        successive = self.successive_ids

        def range_part(s, part):
            result = part.range_search(x, thresh, params=params)
            return result + ((part.ntotal if successive else 0), )
        results = self._fan(range_part)
        offsets = np.cumsum([0] + [r[3] for r in results[:-1]]) if successive \
            else np.zeros(len(results), dtype=np.int64)
        counts = [np.diff(r[0].astype(np.int64)) for r in results]
        query = np.concatenate([np.repeat(np.arange(n), c) for c in counts])
        order = np.argsort(query, kind="stable")
        Dall = np.concatenate([r[1] for r in results])[order]
        Iall = np.concatenate([np.where(r[2] >= 0, r[2] + off, r[2])
                               for r, off in zip(results, offsets)])[order]
        lims = np.zeros(n + 1, dtype=np.uint64)
        lims[1:] = np.cumsum(np.sum(counts, axis=0))
        return lims, Dall, Iall


class IndexReplicas(_ThreadedIndex):
    def __init__(self, d, threaded=False):
        self._init_group("IndexReplicas", d, threaded, [])

    def add_replica(self, index):
        self._add_part(index, "replica")

    addIndex = add_replica

    def remove_replica(self, index):
        self._remove(index, "remove_replica")

    def _spread_ntotal(self):
        return self.referenced_objects[0].ntotal

    def add(self, x):
        if not self._spread:
            return super().add(x)
        x, n = _rows(x, self._d)
        self._fan(lambda i, p: p.add(x))

    def add_with_ids(self, x, ids):
        if not self._spread:
            return super().add_with_ids(x, ids)
        x, n = _rows(x, self._d)
        ids = np.ascontiguousarray(ids, dtype="int64")
        assert ids.shape == (n, ), "not same nb of vectors as ids"
        self._fan(lambda i, p: p.add_with_ids(x, ids))

    def _split(self, n):
        """FAISS's IndexReplicas::search: replica i answers queries [i q,
        min(n, (i + 1) q)), q = ceil(n / count); those left over idle."""
        per = (n + self.count() - 1) // self.count()
        return [(i, part, i * per, min(n, (i + 1) * per))
                for i, part in enumerate(self.referenced_objects) if i * per < n]

    def search(self, x, k, *, params=None, D=None, I=None):
        if not self._spread:
            return super().search(x, k, params=params, D=D, I=I)
        if params is not None:
            raise _faiss_error("Error: '!params' failed: search params not supported for "
                               "this index")
        x, n = _rows(x, self._d)
        k = _int(k)
        assert k > 0
        Dout = _out_array(D, (n, k), np.float32)
        Iout = _out_array(I, (n, k), np.int64)
        slices = {i: (q0, q1) for i, _, q0, q1 in self._split(n)}

        def search_part(i, part):
            q0, q1 = slices[i]
            part.search(x[q0:q1], k, D=Dout[q0:q1], I=Iout[q0:q1])
        self._fan(search_part, [(i, part) for i, part, _, _ in self._split(n)])
        return _finish(D, Dout), _finish(I, Iout)

    def range_search(self, x, thresh, *, params=None):
        """Not in FAISS 1.7.3's IndexReplicas: the queries split as search
        splits them."""
        if not self._spread:
            return super().range_search(x, thresh, params=params)
        x, n = _rows(x, self._d)
        if n == 0:
            return (np.zeros(1, dtype=np.uint64), np.zeros(0, dtype=np.float32),
                    np.zeros(0, dtype=np.int64))
        slices = {i: (q0, q1) for i, _, q0, q1 in self._split(n)}
        parts = self._fan(lambda i, p: p.range_search(x[slices[i][0]:slices[i][1]], thresh,
                                                      params=params),
                          [(i, part) for i, part, _, _ in self._split(n)])
        return _concat_range(parts)


class IndexRefine(Index):
    k_factor = _Attr("k_factor", float, True)

    def __init__(self, *args):
        if len(args) != 2 or args[1] is None:
            raise _unsupported("IndexRefine without (base_index, refine_index)")
        base_index, refine_index = args
        self._new("IndexRefine", [], [base_index, refine_index],
                  ["base_index", "refine_index"])

    @property
    def base_index(self):
        return self._view("base_index")

    @property
    def refine_index(self):
        return self._view("refine_index")


class IndexRefineFlat(IndexRefine):
    def __init__(self, base_index, *args):
        if args:
            raise _unsupported("IndexRefineFlat(base_index, xb)")
        self._new("IndexRefineFlat", [], [base_index], ["base_index"])


# ---------------------------------------------------------------------------
# vector transforms


class VectorTransform(_ServerObject):
    def __init__(self, *args, **kwargs):
        raise AttributeError("No constructor defined - class is abstract")

    d_in = _Fixed("_d")
    d_out = _Fixed("_d_out")
    is_trained = _Attr("is_trained", bool)

    def train(self, x):
        x, n = _rows(x, self._d)
        if n == 0:
            return
        call(lib.fpx_train, self._name, n, self._d, _ptr(x))

    def apply(self, x):
        x, n = _rows(x, self._d)
        y = np.empty((n, self._d_out), dtype=np.float32)
        if n:
            call(lib.fpx_apply, self._name, 0, n, self._d, _ptr(x), self._d_out, _ptr(y))
        return y

    apply_py = apply

    def reverse_transform(self, x):
        x, n = _rows(x, self._d_out)
        y = np.empty((n, self._d), dtype=np.float32)
        if n:
            call(lib.fpx_apply, self._name, 1, n, self._d_out, _ptr(x), self._d, _ptr(y))
        return y

    def __getstate__(self):
        raise TypeError("cannot pickle '%s' object" % type(self).__name__)


class LinearTransform(VectorTransform):
    have_bias = _Attr("have_bias", bool)
    is_orthonormal = _Attr("is_orthonormal", bool)


class PCAMatrix(LinearTransform):
    eigen_power = _Attr("eigen_power", float, True)
    epsilon = _Attr("epsilon", float, True)
    random_rotation = _Attr("random_rotation", bool, True)
    balanced_bins = _Attr("balanced_bins", int, True)

    def __init__(self, d_in, d_out=0, eigen_power=0, random_rotation=False):
        args = [_int(d_in)]
        if d_out:
            args.append(_int(d_out))
        else:
            args.append(_int(d_in))
        self._new("PCAMatrix", args + [float(eigen_power), bool(random_rotation)])


class OPQMatrix(LinearTransform):
    M = _Attr("M", int)
    niter = _Attr("niter", int, True)
    niter_pq = _Attr("niter_pq", int, True)
    niter_pq_0 = _Attr("niter_pq_0", int, True)

    def __init__(self, d, M=1, d2=-1):
        self._new("OPQMatrix", [_int(d), _int(M), _int(d2)])


class RandomRotationMatrix(LinearTransform):
    def __init__(self, d_in, d_out):
        self._new("RandomRotationMatrix", [_int(d_in), _int(d_out)])


class NormalizationTransform(VectorTransform):
    norm = _Attr("norm", float)

    def __init__(self, d, norm=2.0):
        self._new("NormalizationTransform", [_int(d), float(norm)])


class CenteringTransform(VectorTransform):
    def __init__(self, d):
        self._new("CenteringTransform", [_int(d)])


_CLASSES = {cls.__name__: cls for cls in (
    Index, IndexFlatCodes, IndexFlat, IndexFlatL2, IndexFlatIP, IndexIVF, IndexIVFFlat,
    IndexIVFPQ, IndexIVFScalarQuantizer, IndexHNSW, IndexHNSWFlat, IndexHNSWSQ, IndexHNSWPQ,
    IndexPQ, IndexScalarQuantizer, IndexLSH, IndexIDMap, IndexIDMap2, IndexPreTransform,
    IndexRefine, IndexRefineFlat, IndexShards, IndexReplicas, VectorTransform, LinearTransform, PCAMatrix, OPQMatrix,
    RandomRotationMatrix, NormalizationTransform, CenteringTransform)}
_CLASSES["ITQTransform"] = VectorTransform
_CLASSES["RemapDimensionsTransform"] = VectorTransform


# ---------------------------------------------------------------------------
# module functions


def index_factory(d, description, metric=METRIC_L2):
    info = IndexInfo()
    _, gen = call(lib.fpx_index_create, None, _int(d), str(description).encode(),
                  _int(metric), byref(info))
    return _describe(info, gen)


def _named(info, gen=None):
    obj = _describe(info, None)
    obj._h = _NamedHandle(bytes(info.name), gen)
    return obj


def create_index(name, d, factory, metric=METRIC_L2):
    """A new named, durable index on the server (faissproxy's own call, not
    FAISS's): index_factory(d, factory, metric) stored under `name` in this
    tenant. Every write to it is logged before it is acknowledged."""
    info = IndexInfo()
    _, gen = call(lib.fpx_index_create, str(name).encode(), _int(d), str(factory).encode(),
                  _int(metric), byref(info))
    return _named(info, gen)


def open_index(name):
    """The named, durable index `name` of this tenant (RuntimeError if none)."""
    info = IndexInfo()
    _, gen = call(lib.fpx_index_open, str(name).encode(), byref(info))
    return _named(info, gen)


def list_indexes():
    """Names of this tenant's named indexes, sorted."""
    names = ctypes.POINTER(c_char_p)()
    count = c_size_t()
    call(lib.fpx_index_list, byref(names), byref(count))
    try:
        return [names[i].decode() for i in range(count.value)]
    finally:
        lib.fpx_strlist_free(byref(names), count.value)


def drop_index(name):
    """Drops the named index `name`, on disk too."""
    call(lib.fpx_index_drop, str(name).encode())


def save_index(name):
    """Snapshots the named index `name` now (its log is truncated)."""
    call(lib.fpx_index_save, str(name).encode())


def upload_index(index, name):
    """Uploads an index under the durable name `name` of this tenant and
    returns it, as open_index(name) would (faissproxy's own call, not
    FAISS's). index: an in-process FAISS index (of the local `faiss`
    module), or a faiss_proxy index (copied on the server's side of the
    wire). It travels in FAISS's format, in chunks above 512 KiB, so any
    size passes the server's message limit; this process holds one
    serialized copy meanwhile. RuntimeError when the name is taken."""
    if isinstance(index, _ServerObject):
        data = serialize_index(index)
    else:
        import faiss                    # the caller's own: it made `index`
        data = faiss.serialize_index(index)
    data = np.ascontiguousarray(data, dtype=np.uint8)
    info = IndexInfo()
    _, gen = call(lib.fpx_deserialize, str(name).encode(), None, _ptr(data), data.size, byref(info))
    return _named(info, gen)


def download_index(name):
    """The server's index `name` (a named index, or an "@…" handle of this
    connection) as an in-process FAISS index of the local `faiss` module:
    a copy, that later changes on either side do not reach."""
    import faiss
    data = ctypes.POINTER(ctypes.c_uint8)()
    size = c_size_t(0)
    call(lib.fpx_serialize, name if isinstance(name, bytes) else str(name).encode(),
         byref(data), byref(size))
    try:
        return faiss.deserialize_index(np.ctypeslib.as_array(data, shape=(size.value, )))
    finally:
        lib.fpx_free(data)


def clone_index(index):
    index._check_live()
    info = IndexInfo()
    _, gen = call(lib.fpx_clone, index._name, byref(info))
    return _describe(info, gen)


def downcast_index(index):
    """Objects of faiss_proxy are always of their most derived class."""
    return index


def downcast_VectorTransform(vt):
    return vt


def extract_index_ivf(index):
    if isinstance(index, IndexIVF):
        return index
    return index._view("ivf")


def try_extract_index_ivf(index):
    try:
        return extract_index_ivf(index)
    except FaissProxyError:
        return None


def serialize_index(index):
    """The index in FAISS's format, as a numpy uint8 array."""
    data = ctypes.POINTER(ctypes.c_uint8)()
    size = c_size_t(0)
    call(lib.fpx_serialize, index._name, byref(data), byref(size))
    try:
        return np.ctypeslib.as_array(data, shape=(size.value, )).copy() if size.value \
            else np.zeros(0, dtype=np.uint8)
    finally:
        lib.fpx_free(data)


def deserialize_index(data):
    data = np.ascontiguousarray(np.frombuffer(data, dtype=np.uint8)
                                if isinstance(data, (bytes, bytearray, memoryview)) else data,
                                dtype=np.uint8)
    info = IndexInfo()
    _, gen = call(lib.fpx_deserialize, None, None, _ptr(data), data.size, byref(info))
    return _describe(info, gen)


def write_index(index, f):
    """Writes the index to a path (or a binary file object) on this
    machine; the server serializes it."""
    data = serialize_index(index)
    if hasattr(f, "write"):
        f.write(data.tobytes())
        return
    try:
        with open(f, "wb") as out:
            out.write(data.tobytes())
    except OSError as e:
        raise RuntimeError("could not open %s for writing: %s" % (f, e.strerror)) from e


def read_index(f, io_flags=0):
    """Reads an index file of this machine and uploads it as a new index.
    io_flags are accepted for compatibility (the server holds the index in
    memory)."""
    if hasattr(f, "read"):
        data = f.read()
    else:
        try:
            with open(f, "rb") as source:
                data = source.read()
        except OSError as e:
            raise RuntimeError("Error: 'f' failed: could not open %s for reading: %s"
                               % (f, e.strerror)) from e
    try:
        return deserialize_index(np.frombuffer(data, dtype=np.uint8))
    except FaissProxyError as e:
        if isinstance(f, (str, bytes, os.PathLike)) and "read error in : " in str(e):
            # FAISS's FileIOReader names the file; the server read a buffer
            raise FaissProxyError(e.code, str(e).replace(
                "read error in : ", "read error in %s: " % os.fsdecode(f))) from None
        if isinstance(f, (str, bytes, os.PathLike)) and str(e).startswith("uploaded index: "):
            # refused before FAISS read it (docs/SECURITY.md): name the file too
            raise FaissProxyError(e.code, "%s: %s" % (os.fsdecode(f), e)) from None
        raise


def normalize_L2(x):
    """Normalizes the rows of a float32 matrix in place (FAISS's
    fvec_renorm_L2: rows of norm 0 are left as they are)."""
    if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.ndim != 2:
        raise TypeError("in method 'fvec_renorm_L2', argument 3 of type 'float *'")
    assert x.flags.c_contiguous
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))
    nonzero = norms > 0
    inverse = (1.0 / norms[nonzero].astype(np.float64)).astype(np.float32)
    x[nonzero] *= inverse[:, None]


def knn(xq, xb, k, metric=METRIC_L2):
    """k nearest neighbours of xq among xb, by a temporary flat index on
    the server (FAISS computes them with the same kernel)."""
    xq = np.ascontiguousarray(xq, dtype="float32")
    xb = np.ascontiguousarray(xb, dtype="float32")
    nq, d = xq.shape
    nb, d2 = xb.shape
    assert d == d2
    if metric not in (METRIC_L2, METRIC_INNER_PRODUCT):
        raise NotImplementedError("only L2 and INNER_PRODUCT are supported")
    index = IndexFlat(d, metric)
    index.add(xb)
    return index.search(xq, k)


def pairwise_distances(xq, xb, mt=METRIC_L2, metric_arg=0):
    """The whole nq × nb distance matrix, as FAISS's pairwise_distances:
    computed on the server by temporary flat indexes of metric mt (FAISS
    runs the same distance function for both), one search of k = every
    stored vector per block of at most FPX_K_MAX, scattered back by label.
    Pairs FAISS leaves out of its result (NaN distances) are NaN."""
    xq = np.ascontiguousarray(xq, dtype="float32")
    xb = np.ascontiguousarray(xb, dtype="float32")
    nq, d = xq.shape
    nb, d2 = xb.shape
    assert d == d2
    dis = np.full((nq, nb), np.nan, dtype="float32")
    if nq == 0 or nb == 0:
        return dis
    rows = np.arange(nq)[:, None]
    for j0 in range(0, nb, _K_MAX):
        block = xb[j0:j0 + _K_MAX]
        index = IndexFlat(d, mt)
        if metric_arg:
            index.metric_arg = metric_arg
        index.add(block)
        D, I = index.search(xq, block.shape[0])
        found = I >= 0
        target = dis[:, j0:j0 + block.shape[0]]
        target[np.broadcast_to(rows, I.shape)[found], I[found]] = D[found]
    return dis


_K_MAX = 65536      # FPX_K_MAX: neighbours per query in one search


def _shaped(n, fill):
    out = np.empty(n, dtype=fill.dtype)
    out.ravel()[:] = fill
    return out


def rand(n, seed=12345):
    """FAISS's float_rand: uniform floats in [0, 1), the same numbers."""
    return _shaped(n, _random.float_rand(int(np.prod(n)), seed))


def randn(n, seed=12345):
    """FAISS's float_randn: standard normal floats, the same numbers."""
    return _shaped(n, _random.float_randn(int(np.prod(n)), seed))


def randint(n, seed=12345, vmax=None):
    """FAISS's int64_rand / int64_rand_max, the same numbers."""
    return _shaped(n, _random.int64_rand(int(np.prod(n)), seed, vmax))


lrand = randint


def eval_intersection(I1, I2):
    """Size of the intersection between each line of two result tables
    (FAISS's ranklist_intersection_size: ids counted once, -1 never)."""
    I1 = np.ascontiguousarray(I1, dtype="int64")
    I2 = np.ascontiguousarray(I2, dtype="int64")
    n = I1.shape[0]
    assert I2.shape[0] == n
    total = 0
    for row1, row2 in zip(I1.tolist(), I2.tolist()):
        total += len((set(row1) & set(row2)) - {-1})
    return total


class _GlobalSettings:
    """faiss.cvar: FAISS's process-wide settings. In remote mode they
    are kept in this process and do not reach the server: FAISS's globals
    are shared by every tenant's calls there, so one client cannot change
    them. The BLAS ones below choose how FAISS blocks its distance
    computations, not which neighbours it finds. FAISS's statistics
    (indexIVF_stats, …) count every tenant's work on the server and are
    not served."""

    _defaults = {"distance_compute_blas_threshold": 20,
                 "distance_compute_blas_query_bs": 4096,
                 "distance_compute_blas_database_bs": 1024,
                 "distance_compute_min_k_reservoir": 100}

    def __init__(self):
        object.__setattr__(self, "_values", dict(self._defaults))

    def __getattr__(self, name):
        values = object.__getattribute__(self, "_values")
        if name in values:
            return values[name]
        raise AttributeError("faiss_proxy: cvar.%s is not available in remote mode (FAISS's "
                             "statistics and settings on the server are shared by every "
                             "tenant)" % name)

    def __setattr__(self, name, value):
        if name not in self._values:
            raise AttributeError("faiss_proxy: cvar.%s cannot be set in remote mode" % name)
        self._values[name] = _int(value)

    def __dir__(self):
        return sorted(self._values)


cvar = _GlobalSettings()


def _initial_threads():
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "").split(",")[0]))
    except ValueError:
        return os.cpu_count() or 1


_omp_threads = [_initial_threads()]


def omp_set_num_threads(n):
    """Kept locally: faissproxyd chooses its own threads per call."""
    _omp_threads[0] = max(1, _int(n))


def omp_get_max_threads():
    return _omp_threads[0]


def get_num_gpus():
    return 0


def vector_to_array(v):
    if isinstance(v, _VectorCopy):
        return v._array.copy()
    if isinstance(v, np.ndarray):
        return v.copy()
    raise TypeError("vector_to_array: not a faiss_proxy vector")


vector_float_to_array = vector_to_array


class ParameterSpace:
    """Sets an index's search parameters by name (FAISS's syntax, applied
    by FAISS's ParameterSpace on the server)."""

    def initialize(self, index):
        pass

    def set_index_parameter(self, index, name, val):
        self.set_index_parameters(index, "%s=%s" % (name, _format_number(val)))

    def set_index_parameters(self, index, description):
        call(lib.fpx_set_parameters, index._name, str(description).encode())


def _format_number(val):
    val = float(val)
    return str(int(val)) if val.is_integer() else repr(val)


# ---------------------------------------------------------------------------
# k-means


class ClusteringParameters:
    def __init__(self):
        self.niter = 25
        self.nredo = 1
        self.verbose = False
        self.spherical = False
        self.int_centroids = False
        self.update_index = False
        self.frozen_centroids = False
        self.min_points_per_centroid = 39
        self.max_points_per_centroid = 256
        self.seed = 1234
        self.decode_block_size = 32768


def _kmeans(d, k, x, cp, metric):
    """Runs faiss::Clustering on the server; returns (centroids, obj)."""
    x = np.ascontiguousarray(x, dtype="float32")
    n, xd = x.shape
    assert xd == d
    if metric != METRIC_L2 or cp.spherical:
        raise _unsupported("k-means with inner product (spherical) — libfaissproxy's "
                           "fpx_kmeans_params_t cannot ask for METRIC_INNER_PRODUCT")
    for field in ("niter", "nredo", "min_points_per_centroid", "max_points_per_centroid",
                  "seed"):
        if _int(getattr(cp, field)) == 0:
            raise _unsupported("k-means with %s = 0 (0 means FAISS's default in "
                               "libfaissproxy)" % field)
    if cp.frozen_centroids:
        raise _unsupported("k-means with frozen_centroids")
    params = _capi.KmeansParams(
        niter=_int(cp.niter), nredo=_int(cp.nredo), seed=_int(cp.seed),
        spherical=0, int_centroids=int(bool(cp.int_centroids)),
        update_index=int(bool(cp.update_index)),
        min_points_per_centroid=_int(cp.min_points_per_centroid),
        max_points_per_centroid=_int(cp.max_points_per_centroid), metric=METRIC_L2)
    centroids = np.empty((k, d), dtype=np.float32)
    max_obj = _int(cp.niter) * _int(cp.nredo)
    obj = np.zeros(max_obj, dtype=np.float32)
    iterations = c_int(0)
    call(lib.fpx_kmeans, d, k, n, _ptr(x), byref(params), _ptr(centroids), _ptr(obj),
         max_obj, byref(iterations))
    return centroids, obj[:iterations.value].astype(np.float64)


class ClusteringIterationStats:
    """One k-means iteration. libfaissproxy returns only the objective."""

    def __init__(self, obj):
        self.obj = obj


class _StatsVector(_VectorCopy):
    """Clustering.iteration_stats: size(), at(i), as FAISS's std::vector."""

    def at(self, i):
        return self._array[i]

    def __iter__(self):
        return iter(self._array)


class Clustering(ClusteringParameters):
    """faiss.Clustering(d, k[, cp]): train(x, index) clusters x and leaves
    the centroids in index (a flat L2 index), as FAISS does."""

    def __init__(self, d, k, cp=None):
        super().__init__()
        if cp is not None:
            self.__dict__.update(cp.__dict__)
        self.d = _int(d)
        self.k = _int(k)
        self.centroids = np.zeros(0, dtype=np.float32)
        self.iteration_stats = _StatsVector([])

    def train(self, x, index, weights=None):
        if not hasattr(x, "shape"):
            x = np.asarray(x, dtype="float32")
        n, d = x.shape
        assert d == self.d
        if weights is not None:
            raise _unsupported("k-means with weights")
        centroids, obj = _kmeans(self.d, self.k, x, self, index.metric_type)
        self.centroids = centroids.ravel()
        self.iteration_stats = _StatsVector([ClusteringIterationStats(float(o)) for o in obj])
        index.reset()
        index.add(centroids)


class Kmeans:
    """faiss.Kmeans: k-means on the server (faiss::Clustering)."""

    def __init__(self, d, k, **kwargs):
        self.d = d
        self.k = k
        self.gpu = False
        if "progressive_dim_steps" in kwargs:
            raise _unsupported("progressive-dimension k-means")
        self.cp = ClusteringParameters()
        for key, value in kwargs.items():
            if key == "gpu":
                if value is True or value == -1:
                    value = get_num_gpus()
                self.gpu = value
            else:
                getattr(self.cp, key)       # AttributeError for unknown fields
                setattr(self.cp, key, value)
        self.centroids = None

    def train(self, x, weights=None, init_centroids=None):
        x = np.ascontiguousarray(x, dtype="float32")
        n, d = x.shape
        assert d == self.d
        if weights is not None:
            raise _unsupported("k-means with weights")
        if init_centroids is not None:
            raise _unsupported("k-means with init_centroids")
        centroids, obj = _kmeans(self.d, self.k, x, self.cp, METRIC_L2)
        self.centroids = centroids
        self.obj = obj
        self.iteration_stats = [{"obj": float(o)} for o in obj]
        self.index = IndexFlatL2(d)
        self.index.add(centroids)
        return self.obj[-1] if self.obj.size > 0 else 0.0

    def assign(self, x):
        x = np.ascontiguousarray(x, dtype="float32")
        assert self.centroids is not None, "should train before assigning"
        self.index.reset()
        self.index.add(self.centroids)
        D, I = self.index.search(x, 1)
        return D.ravel(), I.ravel()


__all__ = [name for name in list(globals()) if not name.startswith("_") and name not in (
    "ctypes", "operator", "os", "np", "byref", "c_char_p", "c_double", "c_float", "c_int",
    "c_int64", "c_size_t", "call", "lib", "IndexInfo", "SearchParams")]
