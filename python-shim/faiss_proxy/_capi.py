"""_capi.py — the ctypes binding to libfaissproxy (client-c/faissproxy.h).

What it is for: loading the library, declaring the prototypes of the calls
the drop-in uses, and the structs of faissproxy.h. Error codes and their
names are read from the library at load time (fpx_error_name), never
retyped here.

What it must not do: encode anything of the wire format, or hold state
beyond the loaded library (the connection lives in _client.py).

Library search order: $FAISS_PROXY_LIB, then the source tree's
build/lib/libfaissproxy.so (when the package is imported from the tree),
then a libfaissproxy.so.0 inside the package (a bundle), then PREFIX/lib
as `make install PREFIX=...` recorded it in _install.py, then the system
loader (libfaissproxy.so.0). So an installed package needs neither
LD_LIBRARY_PATH nor FAISS_PROXY_LIB, whatever its prefix.
"""
import ctypes
import ctypes.util
import os
from ctypes import (POINTER, Structure, c_char, c_char_p, c_double, c_float,
                    c_int, c_int64, c_size_t, c_uint8, c_uint64, c_void_p)

#  Lengths of the fixed buffers of fpx_index_info_t (faissproxy.h).
_NAME_BUF = 128 + 1         # FPX_INDEX_NAME_MAX + 1
_FACTORY_BUF = 256
_CLASS_BUF = 64


class IndexInfo(Structure):
    """fpx_index_info_t: the description of a server object."""
    _fields_ = [
        ("name", c_char * _NAME_BUF),
        ("d", c_int),
        ("ntotal", c_int64),
        ("is_trained", c_int),
        ("metric", c_int),
        ("factory", c_char * _FACTORY_BUF),
        ("anonymous", c_int),
        ("memory_bytes", c_int64),
        ("class_name", c_char * _CLASS_BUF),
        ("d_out", c_int),
        ("damaged", c_char * 256),
        ("loaded", c_int),
        ("rebuild_pending", c_int),
        #  The room for later fields: the structure is FPX_INDEX_INFO_SIZE
        #  (2048) bytes in every version; _check_abi compares it with the
        #  library's fpx_index_info_size at load.
        ("reserved_", c_uint8 * 1292),
    ]


class SearchParams(Structure):
    """fpx_search_params_t: 0 means the index's own setting."""
    _fields_ = [("nprobe", c_int), ("efSearch", c_int)]


class Selection(Structure):
    """fpx_selection_t: an fpx_selector_t (or NULL) and IVF max_codes (0:
    the index's own, -1: no limit)."""
    _fields_ = [("sel", c_void_p), ("max_codes", c_int64)]


class RangeResult(Structure):
    """fpx_range_result_t, freed with fpx_range_result_destroy."""
    _fields_ = [
        ("nq", c_int64),
        ("lims", POINTER(c_uint64)),
        ("distances", POINTER(c_float)),
        ("labels", POINTER(c_int64)),
    ]


class KmeansParams(Structure):
    """fpx_kmeans_params_t: 0 in a field means FAISS's default."""
    _fields_ = [(name, c_int) for name in (
        "niter", "nredo", "seed", "spherical", "int_centroids", "update_index",
        "min_points_per_centroid", "max_points_per_centroid", "metric")]


class ServerInfo(Structure):
    """fpx_server_info_t."""
    _fields_ = [
        ("server_version", c_char * 32),
        ("protocol_version", c_int),
        ("faiss_version", c_char * 32),
        ("recovering", c_int),
    ]


class ClientOptions(Structure):
    """fpx_client_options_t: None / 0 fields take the defaults."""
    _fields_ = [
        ("endpoint", c_char_p),
        ("api_key", c_char_p),
        ("server_key", c_char_p),
        ("connect_timeout_ms", c_int),
        ("timeout_ms", c_int),
        ("long_timeout_ms", c_int),
    ]


#  fpx_info's flag (faissproxy.h).
INFO_ALL = 1
INFO_INDEXES_MAX = 1000     # FPX_INFO_INDEXES_MAX

_H = c_void_p               # fpx_client_t *
_NAME = c_char_p
_PTR = c_void_p             # array buffers: numpy's .ctypes.data

#  name: (restype, argtypes)
_PROTOTYPES = {
    "fpx_strerror": (c_char_p, [c_int]),
    "fpx_error_name": (c_char_p, [c_int]),
    "fpx_client_new": (_H, [c_char_p, c_char_p]),
    "fpx_client_new_curve": (_H, [c_char_p, c_char_p, c_char_p]),
    "fpx_client_open": (c_int, [POINTER(ClientOptions), POINTER(_H), c_char_p, c_size_t]),
    "fpx_client_destroy": (None, [POINTER(_H)]),
    "fpx_client_set_timeout": (None, [_H, c_int]),
    "fpx_client_set_connect_timeout": (None, [_H, c_int]),
    "fpx_client_set_long_timeout": (None, [_H, c_int]),
    "fpx_client_errmsg": (c_char_p, [_H]),
    "fpx_client_errcode": (c_int, [_H]),
    "fpx_ping": (c_int, [_H, POINTER(ServerInfo)]),
    "fpx_info": (c_int, [_H, c_int, c_int, POINTER(c_void_p)]),
    "fpx_info_json": (c_char_p, [c_void_p]),
    "fpx_info_free": (None, [POINTER(c_void_p)]),
    "fpx_index_create": (c_int, [_H, _NAME, c_int, c_char_p, c_int, POINTER(IndexInfo)]),
    "fpx_index_drop": (c_int, [_H, _NAME]),
    "fpx_index_open": (c_int, [_H, _NAME, POINTER(IndexInfo)]),
    "fpx_index_save": (c_int, [_H, _NAME]),
    "fpx_index_list": (c_int, [_H, POINTER(POINTER(c_char_p)), POINTER(c_size_t)]),
    "fpx_strlist_free": (None, [POINTER(POINTER(c_char_p)), c_size_t]),
    "fpx_index_describe": (c_int, [_H, _NAME, c_int, POINTER(IndexInfo)]),
    "fpx_train": (c_int, [_H, _NAME, c_int64, c_int, _PTR]),
    "fpx_add": (c_int, [_H, _NAME, c_int64, c_int, _PTR, POINTER(c_int64)]),
    "fpx_add_with_ids": (c_int, [_H, _NAME, c_int64, c_int, _PTR, _PTR, POINTER(c_int64)]),
    "fpx_search": (c_int, [_H, _NAME, c_int64, c_int, _PTR, c_int, POINTER(SearchParams),
                           _PTR, _PTR]),
    "fpx_range_search": (c_int, [_H, _NAME, c_int64, c_int, _PTR, c_float,
                                 POINTER(SearchParams), POINTER(POINTER(RangeResult))]),
    "fpx_range_result_destroy": (None, [POINTER(POINTER(RangeResult))]),
    "fpx_search_select": (c_int, [_H, _NAME, c_int64, c_int, _PTR, c_int, POINTER(SearchParams),
                                  POINTER(Selection), _PTR, _PTR]),
    "fpx_range_search_select": (c_int, [_H, _NAME, c_int64, c_int, _PTR, c_float,
                                        POINTER(SearchParams), POINTER(Selection),
                                        POINTER(POINTER(RangeResult))]),
    "fpx_merge_from": (c_int, [_H, _NAME, _NAME, c_int64, POINTER(IndexInfo)]),
    "fpx_sa_encode": (c_int, [_H, _NAME, c_int64, c_int, _PTR, c_size_t, _PTR]),
    "fpx_sa_decode": (c_int, [_H, _NAME, c_int64, c_size_t, _PTR, c_int, _PTR]),
    "fpx_selector_range_new": (c_void_p, [c_int64, c_int64, c_int]),
    "fpx_selector_array_new": (c_void_p, [c_size_t, _PTR]),
    "fpx_selector_batch_new": (c_void_p, [c_size_t, _PTR]),
    "fpx_selector_bitmap_new": (c_void_p, [c_size_t, _PTR]),
    "fpx_selector_not_new": (c_void_p, [POINTER(c_void_p)]),
    "fpx_selector_all_new": (c_void_p, []),
    "fpx_selector_destroy": (None, [POINTER(c_void_p)]),
    "fpx_remove_ids": (c_int, [_H, _NAME, c_int64, _PTR, POINTER(c_int64)]),
    "fpx_remove_range": (c_int, [_H, _NAME, c_int64, c_int64, POINTER(c_int64)]),
    "fpx_reconstruct": (c_int, [_H, _NAME, c_int64, c_int, _PTR]),
    "fpx_reconstruct_n": (c_int, [_H, _NAME, c_int64, c_int64, c_int, _PTR]),
    "fpx_reset": (c_int, [_H, _NAME]),
    "fpx_set_parameters": (c_int, [_H, _NAME, c_char_p]),
    "fpx_serialize": (c_int, [_H, _NAME, POINTER(POINTER(c_uint8)), POINTER(c_size_t)]),
    "fpx_deserialize": (c_int, [_H, _NAME, c_char_p, _PTR, c_size_t, POINTER(IndexInfo)]),
    "fpx_construct": (c_int, [_H, c_char_p, c_int, POINTER(c_double), c_int,
                              POINTER(c_char_p), POINTER(IndexInfo)]),
    "fpx_subobject": (c_int, [_H, _NAME, c_char_p, POINTER(IndexInfo)]),
    "fpx_attach": (c_int, [_H, _NAME, c_char_p, _NAME, POINTER(IndexInfo)]),
    "fpx_search_and_reconstruct": (c_int, [_H, _NAME, c_int64, c_int, _PTR, c_int,
                                           POINTER(SearchParams), _PTR, _PTR, _PTR]),
    "fpx_get_attr": (c_int, [_H, _NAME, c_char_p, POINTER(c_double)]),
    "fpx_set_attr": (c_int, [_H, _NAME, c_char_p, c_double]),
    "fpx_clone": (c_int, [_H, _NAME, POINTER(IndexInfo)]),
    "fpx_apply": (c_int, [_H, _NAME, c_int, c_int64, c_int, _PTR, c_int, _PTR]),
    "fpx_set_direct_map": (c_int, [_H, _NAME, c_int]),
    "fpx_get_id_map": (c_int, [_H, _NAME, POINTER(POINTER(c_int64)), POINTER(c_size_t)]),
    "fpx_kmeans": (c_int, [_H, c_int, c_int, c_int64, _PTR, POINTER(KmeansParams), _PTR,
                           _PTR, c_int, POINTER(c_int)]),
    "fpx_free": (None, [c_void_p]),
    "fpx_index_info_size": (c_size_t, []),
}


def _candidates():
    env = os.environ.get("FAISS_PROXY_LIB")
    if env:
        yield env
        return          # an explicit choice is not second-guessed
    here = os.path.dirname(os.path.abspath(__file__))
    tree = os.path.join(os.path.dirname(os.path.dirname(here)), "build", "lib",
                        "libfaissproxy.so")
    if os.path.exists(tree):
        yield tree
    bundled = os.path.join(here, "libfaissproxy.so.0")
    if os.path.exists(bundled):
        yield bundled
    try:
        from ._install import LIBDIR        # absent in the tree and from pip
    except ImportError:
        LIBDIR = None
    if LIBDIR and os.path.exists(os.path.join(LIBDIR, "libfaissproxy.so.0")):
        yield os.path.join(LIBDIR, "libfaissproxy.so.0")
    yield "libfaissproxy.so.0"
    found = ctypes.util.find_library("faissproxy")
    if found:
        yield found


def _load():
    tried = []
    for path in _candidates():
        try:
            return ctypes.CDLL(path)
        except OSError as e:
            tried.append("%s (%s)" % (path, e))
    raise ImportError("faiss_proxy: cannot load libfaissproxy; tried: " + "; ".join(tried)
                      + ". Set FAISS_PROXY_LIB to the library's path.")


def _declare(lib):
    for name, (restype, argtypes) in _PROTOTYPES.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes
    return lib


def _error_names(lib):
    """{code: "FPX_E…"} for every code the library knows (from fpx_errors.h
    through fpx_error_name; the list ends where the library answers with
    its name for an unknown code)."""
    unknown = lib.fpx_error_name(-1000000)
    names = {}
    code = -1
    while True:
        name = lib.fpx_error_name(code)
        if not name or name == unknown:
            break
        names[code] = name.decode()
        code -= 1
    return names


def _check_abi(lib):
    """The structures the library writes into must be the size it expects."""
    theirs = lib.fpx_index_info_size()
    if theirs != ctypes.sizeof(IndexInfo):
        raise ImportError("faiss_proxy: libfaissproxy's fpx_index_info_t is %d bytes, this "
                          "package's %d: mismatched versions" % (theirs, ctypes.sizeof(IndexInfo)))
    return lib


lib = _check_abi(_declare(_load()))
ERROR_NAMES = _error_names(lib)
ERROR_CODES = {name: code for code, name in ERROR_NAMES.items()}


def strerror(code):
    text = lib.fpx_strerror(code)
    return text.decode("utf-8", "replace") if text else "unknown error"
