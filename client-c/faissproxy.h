/*  faissproxy.h — libfaissproxy, the C client of faissproxyd.

    Every FAISS index operation over the network. A client handle holds one
    ZeroMQ DEALER connection to one server, with one API key.

    Errors: every call returns 0 (or a count) on success and a negative
    FPX_E… code (see fpx_errors.h) on failure; the readable message of the
    last failure is kept on the handle (fpx_client_errmsg). Errors the server
    reports carry its text, FAISS's own message for FPX_EFAISS.

    Thread-safety: a handle must not be used by two threads at once; use one
    handle per thread, or serialize the calls. Different handles are
    independent. Functions without a handle are thread-safe.

    Index names: every index call takes the index's name: a name given at
    create time, or the "@…" handle the server chose for an anonymous index
    (which belongs to this handle's connection and dies with it).

    Arrays are passed as caller-owned buffers of FAISS's types: float
    vectors row-major n·d, int64 ids and labels. Nothing is retained after a
    call returns.
*/
#ifndef FAISSPROXY_H_INCLUDED
#define FAISSPROXY_H_INCLUDED

#include <stddef.h>
#include <stdint.h>

#include "fpx_constants.h" /* limits (FPX_DIM_MAX, FPX_K_MAX, …), FPX_METRIC_* */
#include "fpx_errors.h"
#include "fpx_version.h"   /* FPX_VERSION_MAJOR, _MINOR, _PATCH, _STRING */

/*  Everything this header declares is exported by libfaissproxy.so,
    which is built with -fvisibility=hidden: nothing else is.            */
#if defined (__GNUC__)
#   pragma GCC visibility push (default)
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define FPX_DEFAULT_ENDPOINT   "tcp://127.0.0.1:5555"
#define FPX_DEFAULT_TIMEOUT_MS 30000
#define FPX_DEFAULT_CONNECT_TIMEOUT_MS 5000
#define FPX_INDEX_NAME_MAX     FPX_NAME_MAX  /* a name buffer needs this + 1 bytes */

/*  Limits of a request and FAISS's metric numbers (FPX_METRIC_L2, …):
    fpx_constants.h, included above, is the one place they are written.  */

typedef struct _fpx_client_t fpx_client_t;

/*  Readable message / symbolic name ("FPX_EINVAL") of a status code.    */
const char *fpx_strerror (int code);
const char *fpx_error_name (int code);

/*  Connections (docs/CLIENTS.md). A client connects in the background; a
    call waits for the connection up to the connect timeout, but fails at
    once with FPX_ECONNECT ("connection refused: no server at …", "cannot
    resolve host …") or FPX_EAUTH (CURVE handshake refused) when an
    attempt fails, unless the handle had a connection before (a server
    restarting: it then waits out the connect timeout). No answer at all
    (a host down or filtered) is FPX_ETIMEDOUT after the connect timeout.
    Reads (ping, list, open, describe, search, range_search, reconstruct,
    get_attr, serialize, …) whose connection is lost before their reply
    are sent once more on the next connection, within their timeout; a
    write is never sent again: it fails with FPX_ECONNECT, whose message
    says its outcome is unknown. A call that times out may still be
    running on the server (its message says so).
    Timeouts: the connect timeout; the request timeout, for every call but
    the long ones; the long timeout, for train, add, add_with_ids,
    remove_ids, k-means, serialize, deserialize, clone, save and
    set_direct_map, by default none: they wait as long as the connection
    lives (ZMTP heartbeats find a dead server within about 15 s).       */

/*  Options of fpx_client_open; zero fields (or a NULL options) take the
    defaults.                                                            */
typedef struct {
    const char *endpoint;       /* "tcp://host:port", "host:port" or
                                   "ipc://path"; NULL: $FAISS_PROXY_SERVER,
                                   else FPX_DEFAULT_ENDPOINT                */
    const char *api_key;        /* NULL: $FAISS_PROXY_API_KEY, else ""      */
    const char *server_key;     /* CURVE (see fpx_client_new_curve); NULL:
                                   $FAISS_PROXY_SERVER_KEY; "": plain       */
    int connect_timeout_ms;     /* 0: $FAISS_PROXY_CONNECT_TIMEOUT_MS, else
                                   FPX_DEFAULT_CONNECT_TIMEOUT_MS; < 0: none */
    int timeout_ms;             /* 0: $FAISS_PROXY_TIMEOUT_MS, else
                                   FPX_DEFAULT_TIMEOUT_MS; < 0: none        */
    int long_timeout_ms;        /* 0: $FAISS_PROXY_LONG_TIMEOUT_MS, else
                                   none (< 0)                               */
} fpx_client_options_t;

/*  Creates a client as options say. Returns 0 with *client_p (caller
    owns it), or a negative code with the reason in errmsg[errmsg_size]
    (may be NULL): FPX_EINVAL for a bad endpoint (its syntax), an API key
    longer than 64 bytes or a server key that is not one; FPX_ENOMEM.
    Nothing is sent yet: the first call connects.                        */
int fpx_client_open (const fpx_client_options_t *options, fpx_client_t **client_p /* OUT */,
                     char *errmsg, size_t errmsg_size);

/*  Creates a client and connects it in the background (as fpx_client_open
    with defaults).
    endpoint: "tcp://host:port", "host:port" or "ipc://path"; NULL means
    the environment variable FAISS_PROXY_SERVER, else FPX_DEFAULT_ENDPOINT.
    api_key: NULL means FAISS_PROXY_API_KEY, else the empty key.
    The connection is CURVE-encrypted when FAISS_PROXY_SERVER_KEY is set
    (see fpx_client_new_curve).
    Returns NULL if the endpoint is invalid, the key is longer than 64
    bytes, FAISS_PROXY_SERVER_KEY is not a key, or memory runs out;
    fpx_client_open does the same and says which (code and message).
    Caller owns the handle.                                              */
fpx_client_t *fpx_client_new (const char *endpoint, const char *api_key);

/*  As fpx_client_new, over CurveZMQ (RFC 26): requests and replies, API
    key included, are encrypted and the server is authenticated.
    server_key: the server's public key, 40 Z85 characters (printed by
    `faissproxy keygen --curve FILE`); NULL means FAISS_PROXY_SERVER_KEY,
    and "" (or an unset variable) a plain connection, as fpx_client_new.
    The client makes a fresh key pair of its own for each handle, unless
    FAISS_PROXY_CLIENT_SECRET_KEY holds a secret key (40 Z85 characters)
    for it: needed when the server accepts only listed client keys
    (faissproxyd --curve-clients-file; the public key to list is in the
    file `faissproxy keygen --curve FILE` writes).
    A server with another key never answers: the handshake fails and
    calls fail at once with FPX_EAUTH, whose message names CURVE. Returns NULL as
    fpx_client_new does, or when server_key is not 40 Z85 characters.
    Caller owns the handle.                                              */
fpx_client_t *fpx_client_new_curve (const char *endpoint, const char *api_key,
                                    const char *server_key);

/*  Closes the connection (the server frees this connection's anonymous
    indexes) and frees the handle; sets *self_p to NULL. Accepts NULL.  */
void fpx_client_destroy (fpx_client_t **self_p);

/*  Request timeout in milliseconds (default FPX_DEFAULT_TIMEOUT_MS; the
    environment variable FAISS_PROXY_TIMEOUT_MS overrides the default) of
    every call but the long ones (see "Connections" above), and of every
    asynchronous request. A call that times out returns FPX_ETIMEDOUT; it
    may still run on the server; its late reply is discarded.
    timeout_ms < 0 waits forever.                                        */
void fpx_client_set_timeout (fpx_client_t *self, int timeout_ms);

/*  How long a call waits for a connection (default 5000 ms, or
    FAISS_PROXY_CONNECT_TIMEOUT_MS), within its own timeout. < 0: forever. */
void fpx_client_set_connect_timeout (fpx_client_t *self, int timeout_ms);

/*  Timeout of the long calls (default: none, or
    FAISS_PROXY_LONG_TIMEOUT_MS). < 0: as long as the connection lives.  */
void fpx_client_set_long_timeout (fpx_client_t *self, int timeout_ms);

/*  Message and code of the last failed call on this handle ("" / 0 if
    none). The string is owned by the handle, valid until the next call. */
const char *fpx_client_errmsg (fpx_client_t *self);
int fpx_client_errcode (fpx_client_t *self);

/* ---- server ------------------------------------------------------------ */

typedef struct {
    char server_version [32];
    int protocol_version;
    char faiss_version [32];
    int recovering;             //  1 while the server still loads its indexes
} fpx_server_info_t;

/*  Round trip to the server. info may be NULL. Answered at once, also
    while the server recovers its indexes from disk (info->recovering);
    meanwhile other requests are sent again until recovery ends or their
    timeout passes (then FPX_ERECOVERING).                               */
int fpx_ping (fpx_client_t *self, fpx_server_info_t *info /* OUT */);

/* ---- server statistics: info ---------------------------------------------
    What the server and this key's tenant are doing (docs/PROTOCOL.md,
    "info"): uptime, requests by opcode and status, latency percentiles,
    queue depth, memory and disk per index, quotas. A key sees its own
    tenant's figures and the server's aggregates only (docs/SECURITY.md).

    The reply is kept in an opaque handle, read through the accessors
    below, so that figures a newer server adds need no new structure.
    A figure is named by its path: the keys from the top joined by '.',
    an array element by its position: "uptime_s",
    "requests.search.FPX_OK", "latency.search.p99",
    "index_list.0.memory_bytes". Map keys holding a '.' (the server sends
    none) are reachable by walking (fpx_info_count, fpx_info_key).      */

typedef struct _fpx_info_t fpx_info_t;

typedef enum {
    FPX_INFO_NONE = 0,         /* no such figure                           */
    FPX_INFO_INT, FPX_INFO_DOUBLE, FPX_INFO_STR, FPX_INFO_BOOL, FPX_INFO_NIL
} fpx_info_type_t;

#define FPX_INFO_ALL 1         /* flag: the server's totals and every tenant's
                                  usage too; needs an admin key (FPX_EPERM) */

/*  Asks the server for its figures. max_indexes: how many of the tenant's
    named indexes to list under "index_list" (sorted by name; 0: the
    server's default, FPX_INFO_INDEXES_DEFAULT; < 0: none; at most
    FPX_INFO_INDEXES_MAX); "index_list_truncated" says whether some were
    left out. flags: 0 or FPX_INFO_ALL. *info_p receives a handle the
    caller frees with fpx_info_free. FPX_EINVAL for a bad argument,
    FPX_EPERM for FPX_INFO_ALL without an admin key, FPX_EPROTO for a
    reply past the decoder's bounds (paths of 256 bytes, 65536 figures). */
int fpx_info (fpx_client_t *self, int max_indexes, int flags, fpx_info_t **info_p /* OUT */);

/*  Frees the handle and sets *info_p to NULL. Accepts NULL.            */
void fpx_info_free (fpx_info_t **info_p);

/*  The figures (scalars: maps and arrays are walked into), in the order
    the server sent them: how many, and the path and type of the i-th
    (NULL / FPX_INFO_NONE past the end). The string is the handle's.    */
size_t fpx_info_count (const fpx_info_t *info);
const char *fpx_info_key (const fpx_info_t *info, size_t i);
fpx_info_type_t fpx_info_type_at (const fpx_info_t *info, size_t i);

/*  The type of the figure at path (FPX_INFO_NONE when absent).          */
fpx_info_type_t fpx_info_type (const fpx_info_t *info, const char *path);

/*  Reads a figure: 0, or FPX_ENOTFOUND when path is absent, FPX_EINVAL
    when its type does not convert (ints and bools read as int or
    double; doubles as double only). *out is untouched on failure.      */
int fpx_info_int (const fpx_info_t *info, const char *path, int64_t *out /* OUT */);
int fpx_info_double (const fpx_info_t *info, const char *path, double *out /* OUT */);

/*  A string figure (the handle's, NUL-terminated; other bytes than
    printable ASCII as '?'), or NULL when absent or not a string.       */
const char *fpx_info_str (const fpx_info_t *info, const char *path);

/*  The index-th figure's value as text, as `faissproxy info` prints it
    ("12", "0.000125", "true", the string). The handle's; NULL past the
    end.                                                                 */
const char *fpx_info_text_at (const fpx_info_t *info, size_t i);

/*  The whole reply as one JSON object, nested as the server sent it
    (non-finite doubles as null, bytes outside printable ASCII as
    \u00XX). The handle's string.                                        */
const char *fpx_info_json (const fpx_info_t *info);

/* ---- index lifecycle --------------------------------------------------- */

typedef struct {
    char name [FPX_INDEX_NAME_MAX + 1];
    int d;
    int64_t ntotal;
    int is_trained;
    int metric;                /* FPX_METRIC_* (FAISS's numbering) */
    char factory [256];        /* "" for an uploaded index                  */
    int anonymous;
    int64_t memory_bytes;      /* -1 unless asked for (fpx_index_describe)  */
    char class_name [64];      /* FAISS class, e.g. "IndexIVFFlat"          */
    int d_out;                 /* vector transforms: output dimension; else d */
    char damaged [256];        /* "" when whole; else why its stored data
                                  could not be loaded (every call but
                                  describe, open and drop then fails with
                                  FPX_EDAMAGED)                             */
    int loaded;                /* 0: evicted under the server's memory budget
                                  (--memory-budget-mb; it is loaded back on
                                  its next use) or damaged; else 1          */
    int rebuild_pending;       /* 1: a remove_ids on this HNSW index is
                                  rebuilding its graph in the background;
                                  ntotal and searches already exclude the
                                  removed vectors (docs/PROTOCOL.md)       */
    /*  Room for the fields later versions add: the structure keeps
        FPX_INDEX_INFO_SIZE bytes in every version, so that a program and
        a library of different versions never write past each other's
        idea of it. A field added later reads 0 from an older library
        (which zeroes this room), so 0 must mean "not reported".         */
    unsigned char reserved_ [1292];
} fpx_index_info_t;

/*  sizeof (fpx_index_info_t) in every version (on 64-bit platforms), and
    what the library was built with: bindings that declare the structure
    themselves (ctypes) check the two are equal.                         */
#define FPX_INDEX_INFO_SIZE 2048
size_t fpx_index_info_size (void);

/*  Creates an index with FAISS's index_factory (d, factory, metric).
    name: NULL creates an anonymous index owned by this connection.
    info (may be NULL) receives its description; info->name holds the name,
    the "@…" handle for an anonymous index.
    FPX_EEXIST if the name is taken, FPX_EFAISS for a factory string FAISS
    refuses.                                                             */
int fpx_index_create (fpx_client_t *self, const char *name, int d,
                      const char *factory, int metric,
                      fpx_index_info_t *info /* OUT */);

/*  Checks that a named index exists and describes it.                   */
int fpx_index_open (fpx_client_t *self, const char *name, fpx_index_info_t *info /* OUT */);

/*  Drops an index (frees it once in-flight calls on it are done).       */
int fpx_index_drop (fpx_client_t *self, const char *name);

/*  Writes a snapshot of a named index now and truncates its log
    (docs/STORAGE.md). FPX_EINVAL for an anonymous index, FPX_EIO when the
    disk refuses.                                                        */
int fpx_index_save (fpx_client_t *self, const char *name);

/*  Names of this tenant's named indexes, sorted. *names_p receives an
    array of *count_p strings; caller frees it with fpx_strlist_free.    */
int fpx_index_list (fpx_client_t *self, char ***names_p /* OUT */, size_t *count_p /* OUT */);
void fpx_strlist_free (char ***names_p, size_t count);

/*  Describes an index; with_memory != 0 also computes memory_bytes
    (costs a pass over the index).                                       */
int fpx_index_describe (fpx_client_t *self, const char *name, int with_memory,
                        fpx_index_info_t *info /* OUT */);

/* ---- data --------------------------------------------------------------- */

/*  x: n·d floats, where d is the index's dimension (the server checks).  */
int fpx_train (fpx_client_t *self, const char *name, int64_t n, int d, const float *x);

/*  ntotal_out (may be NULL) receives the index's ntotal after the add.   */
int fpx_add (fpx_client_t *self, const char *name, int64_t n, int d,
             const float *x, int64_t *ntotal_out /* OUT */);
int fpx_add_with_ids (fpx_client_t *self, const char *name, int64_t n, int d,
                      const float *x, const int64_t *ids, int64_t *ntotal_out /* OUT */);

/*  Per-request search parameters; 0 means "the index's own setting".     */
typedef struct {
    int nprobe;                /* IVF                                       */
    int efSearch;              /* HNSW                                      */
} fpx_search_params_t;

/*  k nearest neighbours of nq queries. distances and labels receive nq·k
    values each, as FAISS's search. params may be NULL.                  */
int fpx_search (fpx_client_t *self, const char *name, int64_t nq, int d,
                const float *x, int k, const fpx_search_params_t *params,
                float *distances /* OUT */, int64_t *labels /* OUT */);

/*  FAISS's search_and_reconstruct: the search, and in recons (nq·k·d
    floats) the stored vector of each label found; empty slots (label -1)
    hold all-ones bytes (NaN), as FAISS. An IVF index reconstructs from its
    lists (no direct map needed); others need reconstruct (an IndexIDMap
    cannot: FPX_EFAISS, as FAISS).                                       */
int fpx_search_and_reconstruct (fpx_client_t *self, const char *name, int64_t nq, int d,
                                const float *x, int k, const fpx_search_params_t *params,
                                float *distances /* OUT */, int64_t *labels /* OUT */,
                                float *recons /* OUT */);

/*  A range search result, as FAISS's RangeSearchResult: the results of
    query i are at [lims[i], lims[i+1]).                                  */
typedef struct {
    int64_t nq;
    uint64_t *lims;            /* nq + 1 */
    float *distances;          /* lims[nq] */
    int64_t *labels;           /* lims[nq] */
} fpx_range_result_t;

/*  All neighbours within radius. *result_p receives a result the caller
    frees with fpx_range_result_destroy.                                 */
int fpx_range_search (fpx_client_t *self, const char *name, int64_t nq, int d,
                      const float *x, float radius, const fpx_search_params_t *params,
                      fpx_range_result_t **result_p /* OUT */);
void fpx_range_result_destroy (fpx_range_result_t **self_p);

/* ---- search-time selection ---------------------------------------------- */

/*  FAISS 1.7.3's id selectors (faiss/impl/IDSelector.h), for a search or
    range search that may return only some vectors: SearchParameters.sel.
    A selector tests the labels the searched index keeps (ids of an IVF
    index, positions of a Flat or HNSW one); FAISS 1.7.3's IndexIDMap
    refuses it, and so do the indexes FAISS refuses any SearchParameters
    for (FPX_EFAISS with FAISS's message). Each constructor copies what it
    is given and returns a new selector (caller owns; destroy it), or
    NULL when out of memory. Not thread-safe while being built; a built
    selector may be used by several searches at once.                   */
typedef struct fpx_selector_t fpx_selector_t;

/*  ids in [imin, imax). assume_sorted != 0 lets an IVF index take the
    range from each list's ids as if they were sorted (FAISS's
    IDSelectorRange(imin, imax, true)): right only when they are.        */
fpx_selector_t *fpx_selector_range_new (int64_t imin, int64_t imax, int assume_sorted);
/*  The n ids listed (FAISS's IDSelectorArray / IDSelectorBatch: the same
    set, FAISS's two ways of testing it).                                */
fpx_selector_t *fpx_selector_array_new (size_t n, const int64_t *ids);
fpx_selector_t *fpx_selector_batch_new (size_t n, const int64_t *ids);
/*  id i is selected iff i / 8 < nbytes and bit i % 8 of bitmap[i / 8] is
    1 (FAISS's IDSelectorBitmap(nbytes, bitmap)).                         */
fpx_selector_t *fpx_selector_bitmap_new (size_t nbytes, const uint8_t *bitmap);
/*  The ids *operand_p does not select; takes ownership of *operand_p
    (and clears it, even on failure, when it is freed).                  */
fpx_selector_t *fpx_selector_not_new (fpx_selector_t **operand_p);
/*  Every id.                                                            */
fpx_selector_t *fpx_selector_all_new (void);
void fpx_selector_destroy (fpx_selector_t **self_p);

/*  max_codes: FPX_MAX_CODES_INDEX (0) keeps the IVF index's own;
    FPX_MAX_CODES_UNLIMITED visits every code of the probed lists (FAISS's
    max_codes = 0); n > 0 at most about n codes per query.               */
#define FPX_MAX_CODES_INDEX     0
#define FPX_MAX_CODES_UNLIMITED (-1)
typedef struct {
    const fpx_selector_t *sel; /* NULL: every vector                        */
    int64_t max_codes;         /* IVF only, see above                       */
} fpx_selection_t;

/*  fpx_search / fpx_range_search with a selection (may be NULL: as they
    are). A selector of more than FPX_SELECTOR_NODES_MAX nodes (16: each
    constructor call is one) is FPX_EINVAL; its ids and bitmaps travel in
    one frame, within the server's message limit.                        */
int fpx_search_select (fpx_client_t *self, const char *name, int64_t nq, int d,
                       const float *x, int k, const fpx_search_params_t *params,
                       const fpx_selection_t *selection,
                       float *distances /* OUT */, int64_t *labels /* OUT */);
int fpx_range_search_select (fpx_client_t *self, const char *name, int64_t nq, int d,
                             const float *x, float radius, const fpx_search_params_t *params,
                             const fpx_selection_t *selection,
                             fpx_range_result_t **result_p /* OUT */);

/*  Removes the n ids listed / the ids in [lo, hi). *removed_out (may be
    NULL) receives how many were removed.                                */
int fpx_remove_ids (fpx_client_t *self, const char *name, int64_t n,
                    const int64_t *ids, int64_t *removed_out /* OUT */);
int fpx_remove_range (fpx_client_t *self, const char *name, int64_t lo,
                      int64_t hi, int64_t *removed_out /* OUT */);

/*  Reconstructs vector `key` into out[d] / vectors i0..i0+n-1 into
    out[n·d]. d is the caller's buffer row length; a mismatch with the
    index's dimension is FPX_EINVAL.                                     */
int fpx_reconstruct (fpx_client_t *self, const char *name, int64_t key,
                     int d, float *out /* OUT */);
int fpx_reconstruct_n (fpx_client_t *self, const char *name, int64_t i0,
                       int64_t n, int d, float *out /* OUT */);

/*  Removes every vector (training is kept, as FAISS's reset).           */
int fpx_reset (fpx_client_t *self, const char *name);

/*  Sets the index's stored search parameters with FAISS's ParameterSpace
    syntax, e.g. "nprobe=16" or "nprobe=8,efSearch=64".                  */
int fpx_set_parameters (fpx_client_t *self, const char *name, const char *params);

/*  Downloads the index serialized in FAISS's own format. *bytes_p
    receives a buffer the caller frees with fpx_free. An index larger
    than one message comes in chunks of one consistent serialization
    (docs/PROTOCOL.md, "Transfers"), whatever --max-message-mb is.      */
int fpx_serialize (fpx_client_t *self, const char *name,
                   uint8_t **bytes_p /* OUT */, size_t *size_p /* OUT */);

/*  Uploads an index in FAISS's format as a new index; name NULL makes it
    anonymous. info (may be NULL) receives its description. Above
    FPX_UPLOAD_INLINE_MAX bytes it travels in chunks, so any size passes
    the server's message limit (the tenant's max_memory_mb and the
    server's --max-memory-mb still apply). factory (at most
    FPX_FACTORY_MAX - 1 bytes) is kept as the index's factory string,
    as if it had been created with it; NULL or "": the one the server
    recovers from the structure ("" when none).                         */
#define FPX_UPLOAD_INLINE_MAX FPX_TRANSFER_INLINE_MAX
int fpx_deserialize (fpx_client_t *self, const char *name, const char *factory,
                     const uint8_t *bytes, size_t size, fpx_index_info_t *info /* OUT */);

/*  Streaming versions, for indexes that should not be held in memory
    whole. A write callback receives consecutive pieces of the
    serialization (at most the server's chunk size each); a read callback
    must fill exactly `size` bytes. Either returns 0, or non-zero to stop:
    the call then fails with FPX_EIO and the server frees its copy.
    fpx_serialize_to: *size_p (may be NULL) receives the total.
    fpx_deserialize_from: size bytes in all; factory (NULL or "": let the
    server recover it) is kept as the index's factory string.            */
typedef int (*fpx_write_fn) (void *arg, const uint8_t *data, size_t size);
typedef int (*fpx_read_fn) (void *arg, uint8_t *data, size_t size);
int fpx_serialize_to (fpx_client_t *self, const char *name, fpx_write_fn write,
                      void *arg, size_t *size_p /* OUT */);
int fpx_deserialize_from (fpx_client_t *self, const char *name, const char *factory,
                          size_t size, fpx_read_fn read, void *arg,
                          fpx_index_info_t *info /* OUT */);

/* ---- objects: composition, views, attributes, transforms ---------------
    FAISS's object model, for bindings that mirror FAISS's classes (the
    Python drop-in uses these). Objects built here are anonymous. Vector
    transforms are objects too: describe, train, apply, get/set_attr and
    drop work on them. See docs/PROTOCOL.md for each class's arguments and
    the attribute names.                                                 */

/*  Builds an object of FAISS class type (e.g. "IndexIVFFlat") from nargs
    numeric args and nrefs referenced objects (e.g. the quantizer). The new
    object owns the referenced ones: their names become aliases of parts
    of it, as FAISS's own_fields. info receives its description.         */
int fpx_construct (fpx_client_t *self, const char *type, int nargs, const double *args,
                   int nrefs, const char *const *refs, fpx_index_info_t *info /* OUT */);

/*  A view of a part of an index ("quantizer", "index", "base_index",
    "refine_index", "chain.N", "ivf"): a new anonymous name for the same
    FAISS object. info receives its description.                         */
int fpx_subobject (fpx_client_t *self, const char *name, const char *path,
                   fpx_index_info_t *info /* OUT */);

/*  Makes the anonymous composite `name` adopt the standalone anonymous
    object `ref` of this connection, as FAISS's methods that take an
    object after construction: role "shard" (IndexShards::add_shard),
    "replica" (IndexReplicas::add_replica) or "prepend_transform"
    (IndexPreTransform::prepend_transform). ref's name becomes an alias of
    the part, as with fpx_construct. info (may be NULL) receives the
    composite's new description (its d changes with prepend_transform).
    Roles "remove_shard" / "remove_replica" do the reverse: ref, one of
    the group's parts, leaves it (IndexShards::remove_shard,
    IndexReplicas::remove_replica) and is a standalone object again.    */
int fpx_attach (fpx_client_t *self, const char *name, const char *role, const char *ref,
                fpx_index_info_t *info /* OUT */);

/*  FAISS's name.merge_from (other, add_id): the anonymous index name takes
    the vectors of the anonymous index other (both of this connection,
    neither part of another object), adding add_id ≥ 0 to their ids (IVF;
    0 for flat-code indexes, as FAISS); other is left empty. Flat-code and
    in-memory IVF indexes (FPX_EINVAL for others; FAISS's compatibility
    checks answer FPX_EFAISS). info (may be NULL): name's description.  */
int fpx_merge_from (fpx_client_t *self, const char *name, const char *other, int64_t add_id,
                    fpx_index_info_t *info /* OUT */);

/*  Numeric attribute ("nprobe", "efSearch", "ntotal", …).               */
int fpx_get_attr (fpx_client_t *self, const char *name, const char *attr,
                  double *value /* OUT */);
int fpx_set_attr (fpx_client_t *self, const char *name, const char *attr, double value);

/*  A copy of an index as a new anonymous index.                         */
int fpx_clone (fpx_client_t *self, const char *name, fpx_index_info_t *info /* OUT */);

/*  Applies a trained vector transform to n vectors of d_in floats (or its
    reverse, reverse != 0, to n vectors of d_out floats). out holds
    n·d_out (reverse: n·d_in) floats; out_d is that row length, checked
    against the reply.                                                   */
int fpx_apply (fpx_client_t *self, const char *name, int reverse, int64_t n, int d,
               const float *x, int out_d, float *out /* OUT */);

/*  FAISS's standalone codec of a trained index (Index::sa_encode /
    sa_decode), through apply. code_size: the index's sa_code_size
    (fpx_get_attr "sa_code_size"), checked against the reply. Encode: n
    vectors of d floats into n·code_size bytes of codes. Decode: n codes
    into n·d floats; served for Flat, PQ, SQ, LSH and IVF Flat / PQ / SQ
    indexes (under PreTransforms), whose codes the server can check
    (FPX_EINVAL for other kinds, FAISS's error where it has no codec).   */
int fpx_sa_encode (fpx_client_t *self, const char *name, int64_t n, int d, const float *x,
                   size_t code_size, uint8_t *codes /* OUT */);
int fpx_sa_decode (fpx_client_t *self, const char *name, int64_t n, size_t code_size,
                   const uint8_t *codes, int d, float *x /* OUT */);

/*  IVF direct map: 0 none, 1 array, 2 hashtable (reconstruct needs one). */
int fpx_set_direct_map (fpx_client_t *self, const char *name, int type);

/*  The id map of an IndexIDMap/IndexIDMap2: *ids_p (caller frees with
    fpx_free) receives *n_p ids.                                         */
int fpx_get_id_map (fpx_client_t *self, const char *name, int64_t **ids_p /* OUT */,
                    size_t *n_p /* OUT */);

/*  k-means (faiss::Clustering). Zero fields take FAISS's defaults: niter
    25, nredo 1, seed 1234, min 39 / max 256 points per centroid, metric
    L2.                                                                  */
typedef struct {
    int niter, nredo, seed;
    int spherical, int_centroids, update_index;
    int min_points_per_centroid, max_points_per_centroid;
    int metric;
} fpx_kmeans_params_t;

/*  Trains k centroids on n vectors of dimension d. centroids receives
    k·d floats; obj (may be NULL) the objective of each iteration, up to
    max_obj values; *iterations_out (may be NULL) the iteration count.  */
int fpx_kmeans (fpx_client_t *self, int d, int k, int64_t n, const float *x,
                const fpx_kmeans_params_t *params, float *centroids /* OUT */,
                float *obj /* OUT */, int max_obj, int *iterations_out /* OUT */);

/*  Frees memory returned by this library. Accepts NULL.                 */
void fpx_free (void *ptr);

/* ---- asynchronous search and add: pipelining ---------------------------
    One handle may keep up to FPX_MAX_IN_FLIGHT requests in flight: send
    them with fpx_search_send / fpx_add_send, then collect completions with
    fpx_recv, in the order the server answers them (not necessarily the
    order of sending). Synchronous calls may be made on the same handle
    meanwhile; replies to the asynchronous requests that arrive during
    them are kept for fpx_recv.

    Buffers: x, and a search's distances and labels, belong to the caller
    but are lent to the request from its send until fpx_recv reports its
    completion: keep them valid and leave x unchanged until then (large
    arrays are sent without a copy), and read the results only after.
    Results are written only inside the fpx_recv call that reports them.

    Timeouts: each request expires when the handle's timeout
    (fpx_client_set_timeout) has passed since it was sent; it then
    completes with FPX_ETIMEDOUT and its late reply is discarded.

    Destroying the handle abandons the requests in flight; once
    fpx_client_destroy returns, none of their buffers is referenced.

    Thread-safety: as every call on a handle, one thread at a time.
    FPX_MAX_IN_FLIGHT: fpx_constants.h.                                  */

/*  Sends a search (as fpx_search) without waiting for it. *request_id
    (OUT, never 0) identifies it in its completion. distances and labels
    receive nq·k values each when fpx_recv reports success.
    Returns 0 when sent; else a negative code and nothing was sent:
    FPX_EINVAL (bad argument, checked as fpx_search does), FPX_EBUSY
    (FPX_MAX_IN_FLIGHT already in flight), FPX_ETIMEDOUT (no connection to
    the server within the timeout), FPX_ECONNECT, FPX_ENOMEM.           */
int fpx_search_send (fpx_client_t *self, const char *name, int64_t nq, int d,
                     const float *x, int k, const fpx_search_params_t *params,
                     float *distances /* OUT, later */, int64_t *labels /* OUT, later */,
                     uint64_t *request_id /* OUT */);

/*  Sends an add of n vectors (as fpx_add) without waiting for it; the
    index's ntotal after it comes with the completion. Returns as
    fpx_search_send.                                                     */
int fpx_add_send (fpx_client_t *self, const char *name, int64_t n, int d,
                  const float *x, uint64_t *request_id /* OUT */);

/*  The completion of one asynchronous request.                          */
typedef struct {
    uint64_t request_id;       /* as its send call returned it             */
    int status;                /* 0, or the request's negative FPX_E… code;
                                  its message is then the handle's
                                  fpx_client_errmsg, until the next call   */
    int64_t ntotal;            /* add: the index's ntotal after it; else -1 */
} fpx_completion_t;

/*  Waits up to timeout_ms (< 0: forever, 0: only what has arrived) for
    one asynchronous request to complete, and reports it.
    Returns 1 with *completion filled in (a failed request is reported
    this way too, with its status); 0 if none completed within the
    timeout, or none is in flight; FPX_EINVAL without a handle or
    completion.                                                          */
int fpx_recv (fpx_client_t *self, int timeout_ms, fpx_completion_t *completion /* OUT */);

/*  Asynchronous requests sent and not yet reported by fpx_recv.         */
int fpx_in_flight (fpx_client_t *self);

/* ---- shards and replicas over several servers ---------------------------
    FAISS's IndexShards and IndexReplicas whose parts are indexes on
    several servers (or several indexes of one), assembled here on the
    client (docs/SHARDING.md). Each call sends to every part at once, one
    thread per distinct client handle, and puts the answers together as
    FAISS 1.7.3 does:
    - FPX_SHARDS_SUCCESSIVE_IDS (IndexShards, successive_ids = true, FAISS's
      default): an add cuts the batch in nparts contiguous slices (part s
      gets rows [s·n/nparts, (s+1)·n/nparts)), once only (FAISS's rule),
      and a search shifts part s's labels by the ntotal of parts 0..s-1;
    - FPX_SHARDS_BY_ID (successive_ids = false): the same cut, with the
      caller's ids or else ntotal + i; labels are returned as stored;
    - FPX_SHARDS_REPLICAS (IndexReplicas): an add goes to every part; a
      search's nq queries are split in ceil(nq/nparts) per part.
    Shards merge the parts' k-NN tables with FAISS's merge_tables: for L2
    the smallest distances first, ties to the lower part; for inner
    product the largest first, ties to the higher part; missing results
    are label -1 with FAISS's filler distance (-FLT_MAX for L2, FLT_MAX
    for inner product). A range search (which FAISS's groups lack) gives
    each query's results part after part.
    Parts must agree on d, metric (L2 or inner product) and trained
    state, and replicas on ntotal; checked by the first call that needs
    them (FPX_EINVAL).
    Errors: a negative FPX_E… code; fpx_shards_errmsg names the first
    failing part (in part order) and quotes its handle's message. A server
    down fails that part within its handle's timeouts (a handle that was
    never connected: at once, "connection refused"); the other parts'
    writes of that call have been done.
    Thread-safety: one thread at a time per group, and the parts' handles
    are not to be used by other threads during its calls.               */

typedef struct _fpx_shards_t fpx_shards_t;

#define FPX_SHARDS_SUCCESSIVE_IDS 0
#define FPX_SHARDS_BY_ID          1
#define FPX_SHARDS_REPLICAS       2
#define FPX_SHARDS_MAX_PARTS      64

/*  A group of nparts (1..FPX_SHARDS_MAX_PARTS) parts: index names[i] on
    clients[i] (borrowed: they must outlive the group; names are copied).
    mode: FPX_SHARDS_*. Sends nothing. NULL on a bad argument or no memory.
    Caller owns the group.                                               */
fpx_shards_t *fpx_shards_new (fpx_client_t *const *clients, const char *const *names,
                              int nparts, int mode);
void fpx_shards_destroy (fpx_shards_t **self_p);

/*  The group's last failure, as fpx_client_errmsg / fpx_client_errcode.  */
const char *fpx_shards_errmsg (fpx_shards_t *self);
int fpx_shards_errcode (fpx_shards_t *self);
int fpx_shards_count (fpx_shards_t *self);

/*  Shards: the sum of the parts' ntotal; replicas: part 0's.             */
int fpx_shards_ntotal (fpx_shards_t *self, int64_t *ntotal /* OUT */);

/*  Adds n vectors (x: n·d floats), cut or copied as the mode says. With
    FPX_SHARDS_SUCCESSIVE_IDS, ids must be NULL and the group empty
    (FPX_EFAISS with FAISS's message otherwise). ids: NULL or n ids.      */
int fpx_shards_add (fpx_shards_t *self, int64_t n, int d, const float *x);
int fpx_shards_add_with_ids (fpx_shards_t *self, int64_t n, int d, const float *x,
                             const int64_t *ids);

/*  Trains every part on all n vectors / empties every part.             */
int fpx_shards_train (fpx_shards_t *self, int64_t n, int d, const float *x);
int fpx_shards_reset (fpx_shards_t *self);

/*  As fpx_search on one index holding every part's vectors. Shards hold
    nparts·nq·k results in memory meanwhile.                             */
int fpx_shards_search (fpx_shards_t *self, int64_t nq, int d, const float *x, int k,
                       const fpx_search_params_t *params, float *distances /* OUT */,
                       int64_t *labels /* OUT */);

/*  As fpx_range_search; *result_p is freed with fpx_range_result_destroy. */
int fpx_shards_range_search (fpx_shards_t *self, int64_t nq, int d, const float *x,
                             float radius, const fpx_search_params_t *params,
                             fpx_range_result_t **result_p /* OUT */);

#ifdef __cplusplus
}
#endif

#if defined (__GNUC__)
#   pragma GCC visibility pop
#endif

#endif
