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

#ifdef __cplusplus
extern "C" {
#endif

/*  k-NN search. nprobe / efSearch > 0 override the index's settings for
    this call only; FPX_EINVAL if one is given and applies nowhere in the
    index. D and I hold n·k values.                                      */
int fpx_shim_search (const FaissIndex *index, int64_t n, const float *x, int64_t k,
                     int nprobe, int efSearch, float *D, int64_t *I,
                     char *err, size_t err_size);

/*  Range search with the same overrides. On success *lims_p (n+1 u64),
    *D_p and *I_p (total entries each) are malloc'd, caller frees.      */
int fpx_shim_range_search (const FaissIndex *index, int64_t n, const float *x,
                           float radius, int nprobe, int efSearch,
                           uint64_t **lims_p, float **D_p, int64_t **I_p,
                           size_t *total_p, size_t max_total,
                           char *err, size_t err_size);

/*  Serializes into a malloc'd buffer of exactly *size_p bytes (caller
    frees). size_only != 0: only counts, *bytes_p untouched.            */
int fpx_shim_serialize (const FaissIndex *index, int size_only,
                        uint8_t **bytes_p, size_t *size_p,
                        char *err, size_t err_size);

/*  Reads an index from bytes; FAISS's allocations meanwhile are capped at
    alloc_cap bytes in total (FPX_ENOMEM beyond).                        */
int fpx_shim_deserialize (const uint8_t *bytes, size_t size, size_t alloc_cap,
                          FaissIndex **index_p, char *err, size_t err_size);

/*  index_factory with the same allocation cap.                          */
int fpx_shim_factory (int d, const char *factory, int metric, size_t alloc_cap,
                      FaissIndex **index_p, char *err, size_t err_size);

/*  1 if the index maps ids itself (IDMap, IDMap2, IVF), so that a key to
    reconstruct is an id rather than a position.                         */
int fpx_shim_has_ids (const FaissIndex *index);

/*  FAISS's version, "major.minor.patch", from the headers built against. */
const char *fpx_shim_faiss_version (void);

#ifdef __cplusplus
}
#endif

#endif
