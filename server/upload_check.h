/*  upload_check.h — serialized FAISS indexes are untrusted input.

    An index uploaded by a tenant (the deserialize opcode, the CLI's
    restore, the Python drop-in's read_index / deserialize_index) and a
    snapshot read back at recovery reach FAISS's read_index only through
    these two checks, in this order:

    1. fpx_upload_check_bytes walks the bytes by FAISS 1.7.3's own
       serialization format before read_index sees them. It accepts only
       an allow-list of structures whose storage is in memory (see
       docs/SECURITY.md, "Uploaded indexes"): anything else, FAISS's
       on-disk inverted lists ('ilod') first of all, which make read_index
       open and mmap a path named in the bytes, is refused. Every length
       and count is checked against the bytes left, every field read_index
       acts on while reading (PQ sizes, SQ types, storage kinds) is
       checked, and the walk must end exactly at the last byte.
    2. fpx_upload_check_index checks the object read_index built, before
       it is registered: every field FAISS trusts at search, add, train or
       reconstruct time (graph links, entry points, code sizes, list
       sizes, id maps, transform shapes, stored floats, stored search
       parameters).

    Both are pure checks: they change nothing, allocate little (the walk
    keeps a list-size table of at most 2^20 entries), and never call into
    FAISS beyond reading fields. Thread-safe. Neither throws.
*/
#ifndef FPX_UPLOAD_CHECK_H_INCLUDED
#define FPX_UPLOAD_CHECK_H_INCLUDED

#include <stddef.h>
#include <stdint.h>
#include <faiss/c_api/Index_c.h>

#ifdef __cplusplus
extern "C" {
#endif

/*  Walks size bytes of a serialized index. Returns 0 when the structure
    is on the allow-list and consistent, else FPX_EINVAL with a reason in
    err ("uploaded index: …", NUL-terminated, truncated to err_size).    */
int fpx_upload_check_bytes (const uint8_t *bytes, size_t size, char *err, size_t err_size);

/*  Checks an index object (borrowed, not modified) as read back from
    untrusted bytes. Returns 0, or FPX_EINVAL with a reason in err.      */
int fpx_upload_check_index (const FaissIndex *index, char *err, size_t err_size);

/*  Checks that every metric in index (borrowed) is one FAISS computes
    safely there: L2 and inner product anywhere; FAISS's extra metrics
    (L1, Linf, Lp, Canberra, BrayCurtis, JensenShannon) in an IndexFlat,
    also inside IDMap / PreTransform, and the NaN-free ones (L1, Linf, Lp)
    in an HNSW over a flat storage. Elsewhere FAISS throws inside OpenMP
    regions (which aborts) or sorts NaN. Returns 0, or FPX_EINVAL with a
    reason in err. Part of fpx_upload_check_index; the factory and the
    constructors call it alone.                                          */
int fpx_upload_check_metrics (const FaissIndex *index, char *err, size_t err_size);

#ifdef __cplusplus
}
#endif

#endif
