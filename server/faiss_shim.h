/*  faiss_shim.h — the few FAISS entry points the C API of FAISS 1.7.3 lacks.

    The daemon calls FAISS through its C API everywhere else. These exist
    because the C API has no way to:
    - pass per-request SearchParameters (nprobe, efSearch) to search and
      range_search, which is what keeps one client's settings from leaking
      into another's concurrent request;
    - serialize to / deserialize from memory without a stdio round trip, or
      count an index's serialized size without writing it;
    - bound the allocations FAISS makes while it builds an index from
      untrusted input (a factory string, uploaded bytes).

    Every function catches every C++ exception and returns a negative FPX_E…
    code with the message in err; none aborts.
*/
#ifndef FPX_FAISS_SHIM_H_INCLUDED
#define FPX_FAISS_SHIM_H_INCLUDED

#include <stddef.h>
#include <stdint.h>
#include <faiss/c_api/faiss_c.h>
#include <faiss/c_api/Index_c.h>

#include "select.h"             //  fpx_select_t: a request's search-time selection

#ifdef __cplusplus
extern "C" {
#endif

/*  k-NN search. nprobe / efSearch > 0 override the index's settings for
    this call only; FPX_EINVAL if one is given and applies nowhere in the
    index. select (may be NULL): FAISS's SearchParameters.sel and IVF
    max_codes for this call (FPX_EFAISS where FAISS refuses them). D and
    I hold n·k values.                                                   */
int fpx_shim_search (const FaissIndex *index, int64_t n, const float *x, int64_t k,
                     int nprobe, int efSearch, const fpx_select_t *select,
                     float *D, int64_t *I, char *err, size_t err_size);

/*  FAISS's search_and_reconstruct: as fpx_shim_search, and R receives
    n·k·d floats, each label's stored vector (all-ones bytes for -1). An
    IVF index at the top (under IDMaps) runs FAISS's own, which reads its
    lists; any other reconstructs each label fpx_shim_search returned
    (labels checked, so never out of range).                            */
int fpx_shim_search_and_reconstruct (const FaissIndex *index, int64_t n, const float *x,
                                     int64_t k, int nprobe, int efSearch,
                                     const fpx_select_t *select, float *D,
                                     int64_t *I, float *R, char *err, size_t err_size);

/*  How many query rows to give FAISS for a search of n rows merged from
    several requests. IndexFlat (L2 or inner product, under an IDMap or
    not) computes distances one query at a time below
    faiss::distance_compute_blas_threshold rows (20) and through BLAS from
    there on, about four times faster a query: from a quarter of the
    threshold on, a batch is cheaper padded up to it. Anything else: n.  */
int64_t fpx_shim_batch_rows (const FaissIndex *index, int64_t n);

/*  Range search with the same overrides. On success *lims_p (n+1 u64),
    *D_p and *I_p (total entries each) are malloc'd, caller frees.      */
int fpx_shim_range_search (const FaissIndex *index, int64_t n, const float *x,
                           float radius, int nprobe, int efSearch,
                           const fpx_select_t *select, uint64_t **lims_p, float **D_p, int64_t **I_p,
                           size_t *total_p, size_t max_total,
                           char *err, size_t err_size);

/*  Serializes into a malloc'd buffer of exactly *size_p bytes (caller
    frees). size_only != 0: only counts, *bytes_p untouched.            */
int fpx_shim_serialize (const FaissIndex *index, int size_only,
                        uint8_t **bytes_p, size_t *size_p,
                        char *err, size_t err_size);

/*  Serializes into sink, called with consecutive chunks (non-zero return
    from sink aborts with FPX_EIO).                                      */
int fpx_shim_serialize_to (const FaissIndex *index,
                           int (*sink) (void *arg, const void *data, size_t size),
                           void *arg, char *err, size_t err_size);

/*  Reads an index from bytes; FAISS's allocations meanwhile are capped at
    alloc_cap bytes in total (FPX_ENOMEM beyond).                        */
int fpx_shim_deserialize (const uint8_t *bytes, size_t size, size_t alloc_cap,
                          FaissIndex **index_p, char *err, size_t err_size);

/*  The factory string FAISS's index_factory builds exactly this index's
    structure from (e.g. "IVF64,PQ8", "IDMap,HNSW32"), into out: ""
    when there is none. Returns its length (0 when it does not fit).    */
size_t fpx_shim_factory_of (const FaissIndex *index, char *out, size_t out_size);

/*  index_factory with the same allocation cap.                          */
int fpx_shim_factory (int d, const char *factory, int metric, size_t alloc_cap,
                      FaissIndex **index_p, char *err, size_t err_size);

/*  reconstruct_n without FAISS's default implementation, which calls
    reconstruct in an OpenMP loop when n > 1000: an exception there (an id
    an IDMap2 lacks, an IDMap that cannot reconstruct) aborts the process.
    Indexes with their own bulk implementation (flat codes, IVF) use it;
    the others are reconstructed one by one on this thread.              */
int fpx_shim_reconstruct_n (const FaissIndex *index, int64_t i0, int64_t n, float *out,
                            char *err, size_t err_size);


/* ---- objects: composition, attributes, transforms, k-means ------------
    The C API has constructors for only some classes and getters for few
    attributes; the Python drop-in needs FAISS's constructors (a quantizer
    object passed to an IVF index, a transform to a PreTransform), its
    attributes (nprobe, hnsw.efSearch, …) and its sub-objects.          */

#include <faiss/c_api/VectorTransform_c.h>

/*  Builds an object of FAISS class `type` from positional numeric args
    and object refs (see docs/PROTOCOL.md, opcode construct, for each
    class's arguments). The new object owns the referenced objects. On
    success exactly one of *index_p / *transform_p is set. Every argument
    is range-checked here first; FPX_EINVAL for a bad one.               */
int fpx_shim_construct (const char *type, int nargs, const double *args,
                        int nrefs, FaissIndex *const *ref_indexes,
                        FaissVectorTransform *const *ref_transforms,
                        FaissIndex **index_p, FaissVectorTransform **transform_p,
                        char *err, size_t err_size);

/*  Makes composite adopt part (an index) or transform: role "shard"
    (IndexShards::add_shard), "replica" (IndexReplicas::add_replica) or
    "prepend_transform" (IndexPreTransform::prepend_transform, only for a
    transform that keeps the index's dimension). On success the composite
    owns it; on failure nothing changed. Both locked exclusively by the
    caller.                                                              */
int fpx_shim_attach (FaissIndex *composite, const char *role, FaissIndex *part,
                     FaissVectorTransform *transform, char *err, size_t err_size);

/*  The reverse for a group: role "remove_shard" / "remove_replica"
    (IndexShards::remove_shard, IndexReplicas::remove_replica) takes part
    out of composite without freeing it (the caller's entry owns it
    again). FAISS's own error when part is not one of its parts. The
    composite locked exclusively by the caller.                          */
int fpx_shim_detach (FaissIndex *composite, const char *role, FaissIndex *part,
                     char *err, size_t err_size);

/*  FAISS's merge_from: target takes other's vectors (ids + add_id for an
    IVF index), other is left empty. Served for flat-code indexes (Flat,
    PQ, SQ, LSH: add_id 0, as FAISS) and IVF indexes with in-memory lists
    (FAISS's compatibility checks first); every allocation is made before
    anything moves, so a failure changes neither. FPX_EINVAL for other
    kinds and for an add_id that would overflow an id. Both locked
    exclusively by the caller.                                          */
int fpx_shim_merge_from (FaissIndex *target, FaissIndex *other, int64_t add_id,
                         char *err, size_t err_size);

/*  FAISS's standalone codec of an index: sa_code_size, sa_encode (n
    vectors of d floats → n·code_size bytes) and sa_decode (the reverse).
    Both need a trained index. sa_decode reads codes from the network, so
    it is served only where every code byte is checked or harmless: Flat,
    PQ, SQ, LSH, and IVF Flat / PQ / SQ (each code's list number checked
    against nlist), under PreTransforms; else FPX_EINVAL.                */
int fpx_shim_sa_code_size (const FaissIndex *index, size_t *size_p, char *err, size_t err_size);
int fpx_shim_sa_encode (const FaissIndex *index, int64_t n, const float *x, uint8_t *codes,
                        char *err, size_t err_size);
int fpx_shim_sa_decode (const FaissIndex *index, int64_t n, const uint8_t *codes, float *x,
                        char *err, size_t err_size);

/*  Frees a composite built by fpx_shim_construct without freeing the
    objects it adopted (used when it cannot be registered).              */
void fpx_shim_free_shell (FaissIndex *composite);

/*  The sub-object at path inside index: "quantizer", "index",
    "base_index", "refine_index", "chain.N", or "ivf" (the IVF index found
    through wrappers, as extract_index_ivf). Not owned by the caller.    */
int fpx_shim_subobject (const FaissIndex *index, const char *path,
                        FaissIndex **index_p, FaissVectorTransform **transform_p,
                        char *err, size_t err_size);

/*  FAISS class name of an object ("IndexIVFFlat").                      */
const char *fpx_shim_class_name (const FaissIndex *index, const FaissVectorTransform *transform);

/*  Reads / writes a numeric attribute (see docs/PROTOCOL.md). Unknown or
    inapplicable names are FPX_EINVAL.                                   */
int fpx_shim_get_attr (const FaissIndex *index, const FaissVectorTransform *transform,
                       const char *attr, double *value, char *err, size_t err_size);
int fpx_shim_set_attr (FaissIndex *index, FaissVectorTransform *transform,
                       const char *attr, double value, char *err, size_t err_size);

/*  Trains a transform on n vectors.                                     */
int fpx_shim_transform_train (FaissVectorTransform *transform, int64_t n, const float *x,
                              char *err, size_t err_size);

/*  Applies a transform (or its reverse) to n vectors: out has n·d_out
    (reverse: n·d_in) floats.                                            */
int fpx_shim_transform_apply (const FaissVectorTransform *transform, int reverse,
                              int64_t n, const float *x, float *out,
                              char *err, size_t err_size);

/*  IVF direct map: type 0 none, 1 array, 2 hashtable.                   */
int fpx_shim_set_direct_map (FaissIndex *index, int type, char *err, size_t err_size);

/*  The id map of an IndexIDMap / IndexIDMap2 (borrowed).                */
int fpx_shim_id_map (const FaissIndex *index, const int64_t **ids, size_t *n,
                     char *err, size_t err_size);

typedef struct {
    int niter, nredo, seed, spherical, int_centroids, update_index;
    int min_points_per_centroid, max_points_per_centroid;
    int metric;
} fpx_shim_kmeans_params_t;

/*  k-means as faiss::Clustering on an IndexFlat of the metric: centroids
    receives k·d floats, stats niter·5 doubles per iteration (obj, time,
    time_search, imbalance_factor, nsplit); *iterations the count.       */
int fpx_shim_kmeans (int d, int k, int64_t n, const float *x,
                     const fpx_shim_kmeans_params_t *params, float *centroids,
                     double *stats, int *iterations, char *err, size_t err_size);

/*  1 if the index's keys are storage positions (no id map and no IVF
    anywhere down its wrappers): then reconstruct's keys must be checked
    against ntotal before FAISS sees them, since IndexFlat (also as HNSW's
    storage) reads them without a check.                                 */
int fpx_shim_keys_are_positions (const FaissIndex *index);

/*  A selector of n ids (any values, duplicates allowed) for
    fpx_shim_remove_ids: a sorted, deduplicated copy, 8 bytes an id
    (FAISS's IDSelectorBatch hashes them at several times that), looked
    up by binary search; an IVF index with a hashtable direct map gets
    them as the IDSelectorArray FAISS needs there. Free it with
    faiss_IDSelector_free. FPX_ENOMEM.                                   */
int fpx_shim_id_selector (int64_t n, const int64_t *ids, FaissIDSelector **selector_p,
                          char *err, size_t err_size);

/*  remove_ids, also on the indexes FAISS 1.7.3 refuses it on: an
    IndexHNSW (flat-code storage: Flat, SQ, PQ, …), bare, under
    PreTransforms, or under an IndexIDMap / IndexIDMap2 (selector keys
    are ids there, storage positions otherwise). Those are rebuilt from
    the vectors kept, in storage order (later ones move down, as in an
    IndexFlat): the codes are copied, and a new graph is built on one
    thread, deterministically, with the index's own parameters, which is
    the graph FAISS builds for a new index given those vectors (their
    decodings, for SQ/PQ storage) in one add on one thread. The rebuild
    needs memory beside the index (*need, OUT, about): more than cap is
    refused with FPX_ENOMEM before anything is allocated. The index is
    unchanged on any error. *removed: how many went; *rebuilt: 1 when a
    graph was rebuilt. An IDMap / IDMap2 over an IVF index (through
    PreTransforms; in-memory lists, no direct map), where FAISS leaves the
    lists numbering vectors by their old positions, has its lists
    compacted and renumbered. An IndexRefine (FAISS has no remove_ids for it)
    over an HNSW or flat-code base and a flat-code refine index loses the
    same positions from both. An IDMap whose id map and wrapped index
    disagree in size (changed through a view) is FPX_EINVAL, where FAISS
    would assert. Every other index: FAISS's own remove_ids.
    Caller holds the index's exclusive lock.                              */
int fpx_shim_remove_ids (FaissIndex *index, const FaissIDSelector *selector, size_t cap,
                         size_t *removed, size_t *need, int *rebuilt,
                         char *err, size_t err_size);

/*  remove_ids in the background (docs/ARCHITECTURE.md, "Deletion from
    HNSW indexes"). Under the index's exclusive lock: where
    fpx_shim_remove_ids would rebuild the graph of an IndexHNSW (bare,
    under PreTransforms, under an IDMap / IDMap2; not an IndexRefine) of
    at least min_ntotal vectors, selects the vectors kept, checks the
    memory (*need, against cap: FPX_ENOMEM), copies and decodes their
    codes, and returns in *rebuild_p (caller owns) what
    fpx_shim_rebuild_build builds without any lock; the index itself is
    unchanged until fpx_shim_rebuild_commit. *removed: how many go.
    Returns 1 (nothing done) where the removal is not of that kind, 0
    with *rebuild_p NULL when nothing matched, or an error.              */
typedef struct fpx_shim_rebuild_t fpx_shim_rebuild_t;
int fpx_shim_remove_begin (FaissIndex *index, const FaissIDSelector *selector, size_t cap,
                           int64_t min_ntotal, size_t *removed, size_t *need,
                           fpx_shim_rebuild_t **rebuild_p, char *err, size_t err_size);

/*  Builds the new graph (one OpenMP thread, deterministic: the graph of
    fpx_shim_remove_ids). Touches only what begin copied; any thread, no
    lock. 0, FPX_ENOMEM, FPX_EFAISS (FAISS's interrupt included).        */
int fpx_shim_rebuild_build (fpx_shim_rebuild_t *rebuild, char *err, size_t err_size);

/*  An add (ids NULL) or add_with_ids made on the index while the
    rebuild runs, copied to be applied again to the new graph at the
    commit. Call under the exclusive lock, before FAISS adds them to the
    old graph; unqueue takes the last one back if FAISS refused them.
    0, FPX_ENOMEM.                                                       */
int fpx_shim_rebuild_queue_add (fpx_shim_rebuild_t *rebuild, int64_t n, const float *x,
                                const int64_t *ids, char *err, size_t err_size);
void fpx_shim_rebuild_unqueue_add (fpx_shim_rebuild_t *rebuild);

/*  Swaps the built graph, codes and id maps into the index begin was
    called on (this part cannot fail), then adds again what was queued,
    in order, as the log replays it. Caller holds its exclusive lock;
    nothing but queued adds changed the index since begin (other writers
    wait for the rebuild). An error (FAISS refusing a queued add, memory)
    leaves the index rebuilt with only part of those adds.               */
int fpx_shim_rebuild_commit (fpx_shim_rebuild_t *rebuild, char *err, size_t err_size);

/*  How many vectors the pending removal took out (0 for NULL).          */
int64_t fpx_shim_rebuild_removed (const fpx_shim_rebuild_t *rebuild);

void fpx_shim_rebuild_destroy (fpx_shim_rebuild_t **rebuild_p);

/*  fpx_shim_search, fpx_shim_reconstruct_n (n = 1: reconstruct) and
    fpx_shim_search_and_reconstruct on an index with a pending removal
    (NULL: none): its vectors are skipped (FAISS's IDSelector in the HNSW
    search; fewer than k may come back), and keys that are positions are
    those the rebuilt index will have (the caller checks them against
    ntotal less fpx_shim_rebuild_removed); a removed id of an IDMap2 is
    not found, as FAISS says. Caller holds the index's lock, shared
    unless efSearch is set.                                              */
int fpx_shim_search_pending (const FaissIndex *index, const fpx_shim_rebuild_t *pending,
                             int64_t n, const float *x, int64_t k, int nprobe, int efSearch,
                             const fpx_select_t *select, float *D, int64_t *I,
                             char *err, size_t err_size);
int fpx_shim_reconstruct_n_pending (const FaissIndex *index, const fpx_shim_rebuild_t *pending,
                                    int64_t i0, int64_t n, float *out, char *err,
                                    size_t err_size);
int fpx_shim_search_and_reconstruct_pending (const FaissIndex *index,
                                             const fpx_shim_rebuild_t *pending, int64_t n,
                                             const float *x, int64_t k, int nprobe,
                                             int efSearch, const fpx_select_t *select,
                                             float *D, int64_t *I, float *R,
                                             char *err, size_t err_size);

/*  Sends what FAISS writes to std::cerr through the server's log, a line
    at a time, sanitized: FAISS's C API (when built without NDEBUG) prints
    every exception's message there, and messages quote client bytes
    (parameter names, factory strings) that must not forge log lines.
    Call once, before the workers start.                                 */
void fpx_shim_log_cerr (void);

/*  FAISS's version, "major.minor.patch", from the headers built against. */
const char *fpx_shim_faiss_version (void);

/*  A copy of index (faiss::clone_index), or FPX_EINVAL naming the part
    FAISS cannot clone (checked before anything is allocated: FAISS leaks
    the parents it built when a child fails), FPX_ENOMEM, FPX_EFAISS.     */
int fpx_shim_clone (const FaissIndex *index, FaissIndex **clone_p, char *err, size_t err_size);

/*  Checks a set_parameters string before FAISS's ParameterSpace sees it:
    tokens split on spaces and commas as FAISS splits them; every name
    ParameterSpace knows (after "quantizer_" prefixes) needs a finite
    number within the bounds set_attr applies (one table). Writes the
    string to give FAISS (known values rewritten as parsed, unknown names
    passed on for FAISS's own refusal) into out. 0, or FPX_EINVAL with a
    message.                                                             */
int fpx_shim_check_parameters (const char *text, char *out, size_t out_size,
                               char *err, size_t err_size);

#ifdef __cplusplus
}
#endif

#endif
