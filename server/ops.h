/*  ops.h — helpers shared by the opcode implementations (ops.c for the
    index operations, ops_objects.c for composition, attributes,
    transforms and k-means). Each helper that fails has already set the
    reply's status and message and returns that status (or NULL).     */
#ifndef FPX_OPS_H_INCLUDED
#define FPX_OPS_H_INCLUDED

#include "broker.h"                 //  fpx_pack_server_info (ping, info)
#include "call.h"
#include "clock.h"
#include "fpx_fields.h"
#include "storage.h"
#include "worker.h"                 //  the batch (search)

/*  FAISS C API failure → FPX_EFAISS with FAISS's message (FPX_ENOMEM for
    bad_alloc).                                                          */
int fpx_op_faiss_error (fpx_call_t *call, const char *what);

/*  A shim call's result: 0, or its code with the message in err.        */
int fpx_op_shim_result (fpx_call_t *call, int rc, const char *err);

/*  Integer parameter in [lo, hi]; absent → fallback unless required.    */
int fpx_op_int_param (fpx_call_t *call, const char *key, bool required, int64_t fallback,
                      int64_t lo, int64_t hi, int64_t *out);

/*  "name" parameter into name[FPX_NAME_MAX + 1]; "@…" handles allowed when
    allow_anonymous. fpx_op_optional_name: absent → name[0] = 0.         */
int fpx_op_name_param (fpx_call_t *call, char *name, bool allow_anonymous);
int fpx_op_optional_name (fpx_call_t *call, char *name);

/*  Counted reference to the object named (any kind / indexes only), the
    name as the request's reader read it (fpx_fields.h).                 */
int fpx_op_find (fpx_call_t *call, const char *name, fpx_entry_t **entry_p);
int fpx_op_find_index (fpx_call_t *call, const char *name, fpx_entry_t **entry_p);

/*  Locks entry as the opcode's row of FPX_OPCODES says: exclusive for
    lock WRITE, shared otherwise, once no removal is rebuilding it in the
    background (fpx_entry_lock_settled, rebuild.h); searches, adds,
    reconstruct and describe, which may run beside one, lock by
    themselves. Returns the lock to unlock.                              */
pthread_rwlock_t *fpx_op_lock (fpx_call_t *call, fpx_entry_t *entry);

/*  Array frame `which`, aligned to align (copied only if it is not).    */
const void *fpx_op_array (fpx_call_t *call, int which, size_t align, size_t *size_p,
                          const char *what);

/*  n ≥ 1 finite float vectors of dimension d from frame `which`.        */
const float *fpx_op_vectors (fpx_call_t *call, int which, int d, int64_t *n_p);

/*  Exactly n int64 ids from frame `which`.                              */
const int64_t *fpx_op_ids (fpx_call_t *call, int which, int64_t n);

/*  Appends a malloc'd buffer as a reply array; takes ownership.         */
void fpx_op_reply_array (fpx_call_t *call, void *data, size_t size);

/*  OpenMP thread budget around a FAISS call over work_items rows; the
    second for a batched search of `rows` queries of entry's index (its
    lock held), which runs on one thread when small (common/fpx_runtime.h).
    A request alone keeps cores / calls (OpenBLAS's rounding can depend
    on its thread count; its results stay those of FAISS in-process).    */
void fpx_op_threads_begin (fpx_call_t *call, int64_t work_items);
void fpx_op_threads_begin_batch (fpx_call_t *call, fpx_entry_t *entry, int64_t rows);
void fpx_op_threads_end (fpx_call_t *call);

/*  Result maps.                                                         */
int fpx_op_pack_description (fpx_call_t *call, fpx_entry_t *entry, bool with_memory);
void fpx_op_pack_empty (fpx_call_t *call);
void fpx_op_pack_int (fpx_call_t *call, const char *key, int64_t value);

/*  Registers an object and replies with its description; _owned leaves
    the object to the caller on failure, the other frees it.             */
int fpx_op_register_owned (fpx_call_t *call, const char *name, const fpx_object_t *object);
int fpx_op_register (fpx_call_t *call, const char *name, const fpx_object_t *object);

/*  A mutation: apply runs under the entry's exclusive lock. For a durable
    (named) index, record is appended to its log first, taken back if
    apply fails, and made durable as --fsync promises before the reply;
    a view of a durable index is refused (change it through its own
    name). apply returns 0 having packed the result, or an error it has
    set on the reply.                                                    */
typedef int (*fpx_op_apply_fn) (fpx_call_t *call, fpx_entry_t *entry, void *arg);
int fpx_op_mutate (fpx_call_t *call, fpx_entry_t *entry, const fpx_record_t *record,
                   fpx_op_apply_fn apply, void *arg);

/*  Uploaded bytes (deserialize, upload_commit) → a registered index,
    through the upload checks (docs/SECURITY.md); name NULL or "" for an
    anonymous one. factory "" or NULL: recovered from the structure when
    FAISS's index_factory has a string for it. Replies the description. */
int fpx_op_deserialize_bytes (fpx_call_t *call, const char *name, const char *factory,
                              const uint8_t *bytes, size_t size);

/*  One handler per opcode, fpx_handle_<wire name> (fpx_handle_search),
    declared from FPX_OPCODES; ops.c dispatches through them. A handler
    returns 0 having packed its result, or an error it has set on the
    reply. They live in ops.c (indexes), ops_objects.c (composition,
    attributes, transforms, k-means), transfers.c and info.c.          */
typedef int (*fpx_op_fn) (fpx_call_t *call);
#define FPX_HANDLER_DECLARE_(NAME, code, wire, role, lock, flags, summary) \
    int fpx_handle_##wire (fpx_call_t *call);
FPX_OPCODES (FPX_HANDLER_DECLARE_)
#undef FPX_HANDLER_DECLARE_

/*  Every opcode's parameters are defined in protocol/fpx_fields.h, and
    fpx_handle_<wire> is generated from them (server/fields.c): it reads
    and bounds every field into a fpx_<wire>_req_t (fpx_read_<wire>),
    replying FPX_EINVAL for any that is missing or out of bounds, calls
    the hand-written fpx_handle_<wire>_req with it, then frees what the
    request holds (fpx_req_<wire>_free: a decoded selection). A reader
    that fails has freed it already.                                   */
#define FPX_HANDLER_REQ_DECLARE_(OPCODE, wire)                                    \
    int fpx_read_##wire (fpx_call_t *call, fpx_##wire##_req_t *req);              \
    void fpx_req_##wire##_free (fpx_##wire##_req_t *req);                         \
    int fpx_handle_##wire##_req (fpx_call_t *call, const fpx_##wire##_req_t *req);
FPX_FIELDED_OPCODES (FPX_HANDLER_REQ_DECLARE_)
#undef FPX_HANDLER_REQ_DECLARE_

#endif
