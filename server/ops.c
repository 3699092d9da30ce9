/*  ops.c — one function per opcode, run on a worker thread.

    Every value from the request is checked here before it reaches an
    allocation or FAISS: names, dimensions, counts, k, array frame sizes,
    alignment, finiteness and vector norms (docs/SECURITY.md). FAISS is called through its C API (and the
    shim for what that lacks); its errors come back as FPX_EFAISS with
    FAISS's own message. Locks: the entry's rwlock, as the opcode's row of
    FPX_OPCODES says (fpx_op_lock: exclusive for lock WRITE, shared
    otherwise), held only around the FAISS call. Every opcode's
    parameters are defined in protocol/fpx_fields.h and read and bounded
    by server/fields.c: each fpx_handle_x_req starts from a checked
    struct; what it still checks here is what only the index knows
    (dimensions, array frames, results within the message limit).
*/
#include <assert.h>
#include <ctype.h>
#include <omp.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <faiss/c_api/AutoTune_c.h>
#include <faiss/c_api/error_c.h>
#include <faiss/c_api/impl/AuxIndexStructures_c.h>

#include "budget.h"
#include "rebuild.h"
#include "faiss_shim.h"
#include "upload_check.h"
#include "ops.h"
#include "tenant_limits.h"
#include "fpx_runtime.h"
#include "transfers.h"

#define FPX_FACTORY_NUMBER_MAX (1 << 20)     //  any integer in a factory string
#define FPX_HNSW_M_MAX         512
#define FPX_FACTORY_NBITS_MAX  16            //  bits per code in a factory string
#define FPX_CREATE_ALLOC_CAP   ((size_t) 1 << 30)

//  The text is sanitized (fpx_text_sanitize): it may quote client bytes,
//  directly or through FAISS's messages, and must stay valid UTF-8.
int
fpx_reply_error (fpx_worker_reply_t *reply, int code, const char *format, ...)
{
    char text [FPX_ERROR_TEXT_MAX];
    va_list args;
    va_start (args, format);
    int len = vsnprintf (text, sizeof text, format, args);
    va_end (args);
    if (len < 0)
        len = 0;
    if ((size_t) len >= sizeof text)
        len = (int) sizeof text - 1;
    fpx_text_sanitize (reply->error, sizeof reply->error, text, (size_t) len);
    reply->status = code;
    return code;
}

int
fpx_op_faiss_error (fpx_call_t *call, const char *what)
{
    const char *text = faiss_get_last_error ();
    if (text && strstr (text, "bad_alloc"))
        return fpx_reply_error (call->reply, FPX_ENOMEM, "%s: out of memory", what);
    return fpx_reply_error (call->reply, FPX_EFAISS, "%s", text ? text : what);
}

//  A shim call's result: 0, or a code whose message is in err.
int
fpx_op_shim_result (fpx_call_t *call, int rc, const char *err)
{
    return rc ? fpx_reply_error (call->reply, rc, "%s", err) : 0;
}

// ---- parameters ------------------------------------------------------------

//  Reads an integer parameter into [lo, hi]. Absent: *out = fallback, or
//  FPX_EINVAL when required.
int
fpx_op_int_param (fpx_call_t *call, const char *key, bool required, int64_t fallback,
             int64_t lo, int64_t hi, int64_t *out)
{
    int rc = fpx_params_get_int (&call->params, key, out);
    if (rc == 1 && !required) {
        *out = fallback;
        return 0;
    }
    if (rc == 1)
        return fpx_reply_error (call->reply, FPX_EINVAL, "missing integer parameter '%s'", key);
    if (rc || *out < lo || *out > hi)
        return fpx_reply_error (call->reply, FPX_EINVAL, "'%s' must be an integer in [%lld, %lld]",
                                key, (long long) lo, (long long) hi);
    return 0;
}

int
fpx_op_name_param (fpx_call_t *call, char *name, bool allow_anonymous)
{
    const char *ptr;
    size_t len;
    int rc = fpx_params_get_str (&call->params, "name", &ptr, &len);
    if (rc == 1)
        return fpx_reply_error (call->reply, FPX_EINVAL, "missing parameter 'name'");
    bool valid = rc == 0 && (fpx_name_is_valid (ptr, len)
                             || (allow_anonymous && fpx_name_is_anonymous (ptr, len)));
    if (!valid)
        return fpx_reply_error (call->reply, FPX_EINVAL, "invalid index name: 1-%d bytes of "
                                "[A-Za-z0-9_.-], not starting with '.' or '-'", FPX_NAME_MAX);
    memcpy (name, ptr, len);
    name [len] = 0;
    return 0;
}

//  The FPX_ENOTFOUND reply for name. An anonymous handle ('@…') is never
//  a typo: it was valid once, and is gone with its connection, its
//  drop, or a server restart; say so, since "no index named" misleads.
static int
s_not_found (fpx_call_t *call, const char *name)
{
    if (name [0] == '@')
        return fpx_reply_error (call->reply, FPX_ENOTFOUND, "no index named '%s': anonymous "
                                "indexes live only as long as the connection that created "
                                "them (and the server process): it was dropped, its "
                                "connection closed, or the server restarted", name);
    return fpx_reply_error (call->reply, FPX_ENOTFOUND, "no index named '%s'", name);
}

//  Counted reference to the object named, or an FPX_ENOTFOUND reply.
int
fpx_op_find (fpx_call_t *call, const char *name, fpx_entry_t **entry_p)
{
    int rc;
    *entry_p = fpx_registry_find (call->server->registry, call->envelope->tenant_id,
                                  name, call->envelope->conn_id);
    if (!*entry_p)
        return s_not_found (call, name);
    int opcode = call->header.opcode;
    bool describes = opcode == FPX_OP_DESCRIBE || opcode == FPX_OP_OPEN;
    if (fpx_entry_damaged (*entry_p) [0] && !describes) {
        rc = fpx_reply_error (call->reply, FPX_EDAMAGED, "index '%s' is damaged: %s", name,
                              fpx_entry_damaged (*entry_p));
        fpx_entry_release (entry_p);
        return rc;
    }
    //  An index evicted under the memory budget is loaded back for every
    //  call but describe, and stays loaded while this reference is held.
    char err [FPX_ERROR_TEXT_MAX];
    if (!describes && (rc = fpx_budget_acquire (*entry_p, err, sizeof err))) {
        rc = fpx_reply_error (call->reply, rc, "index '%s' was evicted under the memory budget "
                              "and cannot be loaded back: %s", name, err);
        fpx_entry_release (entry_p);
        return rc;
    }
    return 0;
}

//  The object found must be an index.
static int
s_index_only (fpx_call_t *call, int rc, fpx_entry_t **entry_p)
{
    if (rc == 0 && !fpx_entry_index (*entry_p)) {
        fpx_entry_release (entry_p);
        return fpx_reply_error (call->reply, FPX_EINVAL, "the object is a vector transform, "
                                "not an index");
    }
    return rc;
}

int
fpx_op_find_index (fpx_call_t *call, const char *name, fpx_entry_t **entry_p)
{
    return s_index_only (call, fpx_op_find (call, name, entry_p), entry_p);
}

pthread_rwlock_t *
fpx_op_lock (fpx_call_t *call, fpx_entry_t *entry)
{
    const fpx_opcode_info_t *info = fpx_opcode_info (call->header.opcode);
    assert (info);
    return fpx_entry_lock_settled (entry, info->lock == FPX_LOCK_WRITE);
}

// ---- arrays ------------------------------------------------------------------

//  The bytes of array frame `which`, aligned to `align` (copied only when the
//  frame is not). NULL with a reply error when the frame is missing.
const void *
fpx_op_array (fpx_call_t *call, int which, size_t align, size_t *size_p, const char *what)
{
    if (which >= call->narrays) {
        fpx_reply_error (call->reply, FPX_EPROTO, "missing array frame: %s", what);
        return NULL;
    }
    zmq_msg_t *frame = &call->arrays [which];
    const void *data = zmq_msg_data (frame);
    *size_p = zmq_msg_size (frame);
    if ((uintptr_t) data % align == 0 || *size_p == 0)
        return data;
    void *copy = malloc (*size_p);
    if (!copy || call->nscratch == (int) (sizeof call->scratch / sizeof call->scratch [0])) {
        free (copy);
        fpx_reply_error (call->reply, FPX_ENOMEM, "out of memory");
        return NULL;
    }
    memcpy (copy, data, *size_p);
    call->scratch [call->nscratch++] = copy;
    return copy;
}

//  n vectors of dimension d from frame `which`: n ≥ 1, exactly n·d·4
//  bytes, every value finite, every squared norm within
//  FPX_VECTOR_NORM2_MAX. Every vector a request hands to FAISS (add,
//  train, search, range_search, k-means, apply) passes here.
const float *
fpx_op_vectors (fpx_call_t *call, int which, int d, int64_t *n_p)
{
    size_t size;
    const float *x = fpx_op_array (call, which, sizeof (float), &size, "float32 vectors");
    if (!x)
        return NULL;
    int64_t claimed;
    int rc = fpx_params_get_int (&call->params, "d", &claimed);
    if (rc == 0 && claimed != d) {
        fpx_reply_error (call->reply, FPX_EINVAL, "vectors of dimension %lld, but the object's "
                         "dimension is %d", (long long) claimed, d);
        return NULL;
    }
    if (rc < 0) {
        fpx_reply_error (call->reply, FPX_EINVAL, "'d' must be an integer");
        return NULL;
    }
    size_t row = (size_t) d * sizeof (float);
    if (size == 0 || size % row) {
        fpx_reply_error (call->reply, FPX_EPROTO, "vector frame of %zu bytes is not n*%d*4 "
                         "bytes for a whole n >= 1 (index dimension %d)", size, d, d);
        return NULL;
    }
    *n_p = (int64_t) (size / row);
    size_t bad_row;
    double norm2;
    int check = fpx_vectors_check (x, (size_t) *n_p, (size_t) d, &bad_row, &norm2);
    if (check == FPX_VECTORS_NOT_FINITE) {
        fpx_reply_error (call->reply, FPX_EINVAL, "vectors contain NaN or infinity (vector %zu)",
                         bad_row);
        return NULL;
    }
    if (check == FPX_VECTORS_TOO_LARGE) {
        fpx_reply_error (call->reply, FPX_EINVAL, "vector %zu has squared norm %.3g, over the "
                         "limit of %.3g (FLT_MAX/4): its distances would overflow float32",
                         bad_row, norm2, FPX_VECTOR_NORM2_MAX);
        return NULL;
    }
    return x;
}

//  n int64 ids from frame `which`.
const int64_t *
fpx_op_ids (fpx_call_t *call, int which, int64_t n)
{
    size_t size;
    const int64_t *ids = fpx_op_array (call, which, sizeof (int64_t), &size, "int64 ids");
    if (ids && size != (size_t) n * sizeof (int64_t)) {
        fpx_reply_error (call->reply, FPX_EPROTO, "id frame of %zu bytes does not hold "
                         "%lld int64 ids", size, (long long) n);
        return NULL;
    }
    return ids;
}

static void
s_free_array (void *data, void *hint)
{
    (void) hint;
    free (data);
}

//  Appends a malloc'd buffer as a reply array frame; takes ownership.
void
fpx_op_reply_array (fpx_call_t *call, void *data, size_t size)
{
    fpx_worker_reply_t *reply = call->reply;
    zmq_msg_init_data (&reply->arrays [reply->narrays++], data, size, s_free_array, NULL);
}

// ---- OpenMP budget -----------------------------------------------------------

//  Splits the cores between the FAISS calls running now (common/fpx_runtime.c).
void
fpx_op_threads_begin (fpx_call_t *call, int64_t work_items)
{
    int active = atomic_fetch_add (&call->server->active_calls, 1) + 1;
    fpx_runtime_threads (call->server->config.ncores, active, work_items, 0);
}

void
fpx_op_threads_begin_batch (fpx_call_t *call, fpx_entry_t *entry, int64_t rows)
{
    int active = atomic_fetch_add (&call->server->active_calls, 1) + 1;
    double bound = (double) rows * (double) faiss_Index_ntotal (fpx_entry_index (entry))
                 * fpx_entry_d (entry);
    fpx_runtime_threads (call->server->config.ncores, active, rows, bound > 0 ? bound : 1);
}

//  FAISS's defaults (every core) are back after each call, so that one
//  that takes no budget (an IndexPreTransform's reconstruct_n multiplies
//  matrices) runs as it does in-process, whatever ran before it here.
void
fpx_op_threads_end (fpx_call_t *call)
{
    atomic_fetch_sub (&call->server->active_calls, 1);
    fpx_runtime_threads (call->server->config.ncores, 1, 0, 0);
}

// ---- description ---------------------------------------------------------------

//  Packs an object description; entry's lock must be held (any mode).
int
fpx_op_pack_description (fpx_call_t *call, fpx_entry_t *entry, bool with_memory)
{
    size_t memory = 0;
    fpx_evicted_meta_t evicted;
    bool is_evicted = fpx_entry_evicted (entry, &evicted);
    bool evicted_memory = with_memory && is_evicted;
    with_memory = with_memory && fpx_entry_index (entry);
    if (with_memory) {
        char err [FPX_ERROR_TEXT_MAX];
        int rc = fpx_shim_serialize (fpx_entry_index (entry), 1, NULL, &memory, err, sizeof err);
        if (rc)
            return fpx_op_shim_result (call, rc, err);
    }
    msgpack_packer *pk = &call->reply->pk;
    if (fpx_entry_damaged (entry) [0]) {
        msgpack_pack_map (pk, 10);
        fpx_pack_kv_str (pk, "name", fpx_entry_name (entry));
        fpx_pack_kv_str (pk, "class", "");
        fpx_pack_kv_int (pk, "d", fpx_entry_d (entry));
        fpx_pack_kv_int (pk, "ntotal", 0);
        fpx_pack_kv_bool (pk, "is_trained", false);
        fpx_pack_kv_int (pk, "metric", fpx_entry_metric (entry));
        fpx_pack_kv_str (pk, "factory", fpx_entry_factory (entry));
        fpx_pack_kv_bool (pk, "anonymous", false);
        fpx_pack_kv_bool (pk, "loaded", false);
        fpx_pack_kv_str (pk, "damaged", fpx_entry_damaged (entry));
        return 0;
    }
    if (is_evicted) {
        //  What it was when evicted; memory_bytes is what it would take.
        msgpack_pack_map (pk, 9 + (evicted_memory ? 1 : 0));
        fpx_pack_kv_str (pk, "name", fpx_entry_name (entry));
        fpx_pack_kv_str (pk, "class", evicted.class_name);
        fpx_pack_kv_int (pk, "d", fpx_entry_d (entry));
        fpx_pack_kv_int (pk, "ntotal", evicted.ntotal);
        fpx_pack_kv_bool (pk, "is_trained", evicted.is_trained);
        fpx_pack_kv_int (pk, "metric", fpx_entry_metric (entry));
        fpx_pack_kv_str (pk, "factory", fpx_entry_factory (entry));
        fpx_pack_kv_bool (pk, "anonymous", false);
        fpx_pack_kv_bool (pk, "loaded", false);
        if (evicted_memory)
            fpx_pack_kv_int (pk, "memory_bytes", fpx_entry_charged_bytes (entry));
        return 0;
    }
    FaissVectorTransform *transform = fpx_entry_transform (entry);
    //  A removal rebuilding in the background counts as done (rebuild.h).
    const fpx_shim_rebuild_t *pending = fpx_entry_pending (entry);
    msgpack_pack_map (pk, 9 + (with_memory ? 1 : 0) + (transform ? 1 : 0) + (pending ? 1 : 0));
    fpx_pack_kv_str (pk, "name", fpx_entry_name (entry));
    fpx_pack_kv_str (pk, "class", fpx_shim_class_name (fpx_entry_index (entry), transform));
    fpx_pack_kv_int (pk, "d", fpx_entry_d (entry));
    fpx_pack_kv_int (pk, "ntotal", transform ? 0 : faiss_Index_ntotal (fpx_entry_index (entry))
                                                 - fpx_shim_rebuild_removed (pending));
    if (pending)
        fpx_pack_kv_bool (pk, "rebuild_pending", true);
    fpx_pack_kv_bool (pk, "is_trained",
                      transform ? faiss_VectorTransform_is_trained (transform)
                                : faiss_Index_is_trained (fpx_entry_index (entry)));
    fpx_pack_kv_int (pk, "metric", fpx_entry_metric (entry));
    fpx_pack_kv_str (pk, "factory", fpx_entry_factory (entry));
    fpx_pack_kv_bool (pk, "anonymous", fpx_entry_owner_conn (entry) != 0);
    fpx_pack_kv_bool (pk, "loaded", true);
    if (transform)
        fpx_pack_kv_int (pk, "d_out", faiss_VectorTransform_d_out (transform));
    if (with_memory)
        fpx_pack_kv_int (pk, "memory_bytes", (int64_t) memory);
    return 0;
}

void
fpx_op_pack_empty (fpx_call_t *call)
{
    msgpack_pack_map (&call->reply->pk, 0);
}

void
fpx_op_pack_int (fpx_call_t *call, const char *key, int64_t value)
{
    msgpack_pack_map (&call->reply->pk, 1);
    fpx_pack_kv_int (&call->reply->pk, key, value);
}

//  As fpx_op_register_owned, but frees the object on failure. A named
//  index is made durable first (snapshot and log in the data directory).
int
fpx_op_register (fpx_call_t *call, const char *name, const fpx_object_t *object)
{
    if (!name) {
        int rc = fpx_op_register_owned (call, NULL, object);
        if (rc)
            fpx_object_free (object);
        return rc;
    }
    uint32_t tenant = call->envelope->tenant_id;
    fpx_entry_t *entry;
    pthread_mutex_t *name_lock = fpx_registry_name_lock (call->server->registry, tenant, name);
    int rc = fpx_storage_create (call->server->storage, tenant, call->server->config.tenants [tenant],
                                 name, object, &entry, call->reply->error, sizeof call->reply->error);
    pthread_mutex_unlock (name_lock);
    if (rc)
        return call->reply->status = rc;
    pthread_rwlock_t *lock = fpx_entry_lock (entry, false);
    fpx_limits_measure (entry);
    rc = fpx_op_pack_description (call, entry, false);
    pthread_rwlock_unlock (lock);
    fpx_entry_release (&entry);
    return rc;
}

// ---- durability ---------------------------------------------------------------------

//  A mutation's place in its index's log.
typedef struct {
    fpx_wal_t *wal;
    fpx_ticket_t ticket;
} s_log_t;

//  Under the exclusive lock, before FAISS applies the mutation: logged
//  when the opcode's row says FPX_OPF_LOGGED (every opcode that mutates
//  through here does; the row is where that is decided).
static int
s_log_begin (fpx_call_t *call, fpx_entry_t *entry, const fpx_record_t *record, s_log_t *log)
{
    bool logged = fpx_opcode_info (call->header.opcode)->flags & FPX_OPF_LOGGED;
    log->wal = logged ? fpx_entry_wal (entry) : NULL;
    if (!log->wal && fpx_entry_wal (fpx_entry_owner (entry)))
        return fpx_reply_error (call->reply, FPX_EINVAL, "this is a view of a durable index: "
                                "change the index through its own name");
    if (!log->wal)
        return 0;
    return call->reply->status = fpx_wal_append (log->wal, record, &log->ticket,
                                                 call->reply->error, sizeof call->reply->error);
}

//  Still under the lock: a mutation FAISS refused is taken back.
static void
s_log_end (s_log_t *log, bool applied)
{
    if (log->wal && !applied)
        fpx_wal_undo (log->wal, &log->ticket);
    if (!applied)
        log->wal = NULL;
}

//  After unlocking, before replying: durable as the mode promises.
static int
s_log_commit (fpx_call_t *call, s_log_t *log)
{
    if (!log->wal)
        return 0;
    int rc = fpx_wal_commit (log->wal, &log->ticket, call->reply->error, sizeof call->reply->error);
    return rc ? (call->reply->status = rc) : 0;
}

//  A mutation under the exclusive lock: logged, applied, measured, then
//  made durable. One that may run beside a removal rebuilding in the
//  background (adds: rebuild.h) takes the lock as searches do; every
//  other waits for the rebuild to land.
static int
s_mutate (fpx_call_t *call, fpx_entry_t *entry, const fpx_record_t *record,
          fpx_op_apply_fn apply, void *arg, bool beside_rebuild)
{
    //  A mutation declared anything but lock WRITE in FPX_OPCODES would
    //  run beside searches: a programmer's error, caught by every test.
    assert (fpx_opcode_info (call->header.opcode)->lock == FPX_LOCK_WRITE);
    s_log_t log;
    const fpx_shim_rebuild_t *pending;
    pthread_rwlock_t *lock = beside_rebuild ? fpx_entry_lock_filtered (entry, true, &pending)
                                            : fpx_op_lock (call, entry);
    int rc = s_log_begin (call, entry, record, &log);
    if (!rc) {
        rc = apply (call, entry, arg);
        s_log_end (&log, rc == 0);
        if (rc == 0)
            fpx_limits_measure (entry);
    }
    pthread_rwlock_unlock (lock);
    if (!rc)
        rc = s_log_commit (call, &log);
    return rc;
}

int
fpx_op_mutate (fpx_call_t *call, fpx_entry_t *entry, const fpx_record_t *record,
               fpx_op_apply_fn apply, void *arg)
{
    return s_mutate (call, entry, record, apply, arg, false);
}

// ---- lifecycle -------------------------------------------------------------------

//  Factory strings are checked beyond FAISS's own parser, which divides by,
//  shifts by and loops on the numbers it reads without bounding them (a
//  "PQ0" is a SIGFPE, "HNSW1" an endless loop, "PQ4x65" an abort): every
//  number is 1 to FPX_FACTORY_NUMBER_MAX, HNSW's M is 2 to FPX_HNSW_M_MAX,
//  and a code size in bits ("x" then a number: PQ16x8, RQ4x8, IMI2x8) is
//  1 to FPX_FACTORY_NBITS_MAX.
static int
s_check_factory (fpx_call_t *call, const char *factory)
{
    for (const char *p = factory; *p; ) {
        if (!isdigit ((unsigned char) *p)) {
            p++;
            continue;
        }
        const char *start = p;
        long long value = 0;
        while (isdigit ((unsigned char) *p) && value <= FPX_FACTORY_NUMBER_MAX)
            value = value * 10 + (*p++ - '0');
        while (isdigit ((unsigned char) *p))
            p++;
        int offset = (int) (start - factory);
        bool hnsw_m = offset >= 4 && strncmp (start - 4, "HNSW", 4) == 0;
        bool nbits = offset >= 1 && start [-1] == 'x';
        long long lo = hnsw_m ? 2 : 1;
        long long hi = hnsw_m ? FPX_HNSW_M_MAX : nbits ? FPX_FACTORY_NBITS_MAX : FPX_FACTORY_NUMBER_MAX;
        if (value < lo || value > hi)
            return fpx_reply_error (call->reply, FPX_EINVAL, "factory string: %s at offset %d "
                                    "must be %lld to %lld", hnsw_m ? "HNSW's M" : nbits
                                    ? "the number of bits" : "the number", offset, lo, hi);
    }
    return 0;
}

//  Registers a new object and replies with its description. On success
//  the registry owns the object; on failure the caller still does.
int
fpx_op_register_owned (fpx_call_t *call, const char *name, const fpx_object_t *object)
{
    fpx_entry_t *entry;
    int rc = fpx_registry_insert (call->server->registry, call->envelope->tenant_id, name,
                                  call->envelope->conn_id, object, &entry);
    if (rc == FPX_EEXIST)
        return fpx_reply_error (call->reply, rc, "an index named '%s' already exists", name);
    if (rc)
        return fpx_reply_error (call->reply, rc, "out of memory");
    pthread_rwlock_t *lock = fpx_entry_lock (entry, false);
    fpx_limits_measure (entry);
    rc = fpx_op_pack_description (call, entry, false);
    pthread_rwlock_unlock (lock);
    fpx_entry_release (&entry);
    return rc;
}

//  Optional "name": absent means anonymous (name[0] = 0).
int
fpx_op_optional_name (fpx_call_t *call, char *name)
{
    fpx_mp_value_t value;
    name [0] = 0;
    if (fpx_params_get_value (&call->params, "name", &value) == 1 || value.type == FPX_MP_NIL)
        return 0;
    return fpx_op_name_param (call, name, false);
}

int
fpx_handle_create_req (fpx_call_t *call, const fpx_create_req_t *req)
{
    const char *name = req->name, *factory = req->factory;
    int64_t d = req->d, metric = req->metric;
    int rc;
    if (!fpx_metric_is_valid (metric))
        return fpx_reply_error (call->reply, FPX_EINVAL, "'metric' %lld is not a FAISS metric",
                                (long long) metric);
    if ((rc = s_check_factory (call, factory)))
        return rc;
    FaissIndex *index;
    char err [FPX_ERROR_TEXT_MAX];
    size_t cap = fpx_limits_alloc_cap (call->server->limits, call->envelope->tenant_id,
                                       FPX_CREATE_ALLOC_CAP);
    rc = fpx_shim_factory ((int) d, factory, (int) metric, cap, &index, err, sizeof err);
    if (rc == FPX_ENOMEM && cap < FPX_CREATE_ALLOC_CAP)
        return fpx_limits_cap_refused (call, cap);
    if (rc)
        return fpx_op_shim_result (call, rc, err);
    //  A named index is read back from its snapshot at every start, through
    //  the same checks as an upload (docs/SECURITY.md): refuse now a kind
    //  that could not be read back then.
    if (name [0] && fpx_upload_check_index (index, err, sizeof err)) {
        faiss_Index_free (index);
        return fpx_reply_error (call->reply, FPX_EINVAL, "factory '%s' builds an index that a "
                                "named index cannot hold (%s)", factory, err);
    }
    fpx_object_t object = { .index = index, .factory = factory };
    return fpx_op_register (call, name [0] ? name : NULL, &object);
}

static int
s_describe (fpx_call_t *call, const char *name, bool with_memory)
{
    fpx_entry_t *entry;
    int rc = fpx_op_find (call, name, &entry);
    if (rc)
        return rc;
    //  Not fpx_op_lock: a description does not wait for a removal
    //  rebuilding in the background; it reports it (rebuild.h).
    pthread_rwlock_t *lock = fpx_entry_lock (entry, false);
    rc = fpx_op_pack_description (call, entry, with_memory);
    pthread_rwlock_unlock (lock);
    fpx_entry_release (&entry);
    return rc;
}

int
fpx_handle_describe_req (fpx_call_t *call, const fpx_describe_req_t *req)
{
    return s_describe (call, req->name, req->memory);
}

//  open is describe without the memory figure (clients send it to say "I
//  mean to use this index"; describe is for inspection).
int
fpx_handle_open_req (fpx_call_t *call, const fpx_open_req_t *req)
{
    return s_describe (call, req->name, false);
}

int
fpx_handle_drop_req (fpx_call_t *call, const fpx_drop_req_t *req)
{
    const char *name = req->name;
    int rc = 0;
    uint32_t tenant = call->envelope->tenant_id;
    //  Under the name lock: a create, drop or save of the same name waits.
    pthread_mutex_t *name_lock = fpx_registry_name_lock (call->server->registry, tenant, name);
    fpx_entry_t *entry = fpx_registry_find (call->server->registry, tenant, name,
                                            call->envelope->conn_id);
    bool named = entry && fpx_entry_owner_conn (entry) == 0;
    if (entry)
        fpx_entry_release (&entry);
    else
        rc = FPX_ENOTFOUND;
    //  Files first: once they are gone the drop survives a crash.
    if (rc == 0 && named
    &&  (rc = fpx_storage_drop (call->server->storage, tenant, name, call->reply->error,
                               sizeof call->reply->error))) {
        pthread_mutex_unlock (name_lock);
        return call->reply->status = rc;
    }
    if (rc == 0)
        rc = fpx_registry_remove (call->server->registry, tenant, name, call->envelope->conn_id);
    pthread_mutex_unlock (name_lock);
    if (rc == FPX_ENOTFOUND)
        return s_not_found (call, name);
    if (rc)
        return fpx_reply_error (call->reply, rc, "no index named '%s'", name);
    fpx_op_pack_empty (call);
    return 0;
}

int
fpx_handle_list_req (fpx_call_t *call, const fpx_list_req_t *req)
{
    (void) req;
    char **names;
    long count = fpx_registry_names (call->server->registry, call->envelope->tenant_id, &names);
    if (count < 0)
        return fpx_reply_error (call->reply, FPX_ENOMEM, "out of memory");
    msgpack_packer *pk = &call->reply->pk;
    msgpack_pack_map (pk, 1);
    fpx_pack_str (pk, "names");
    msgpack_pack_array (pk, (size_t) count);
    for (long i = 0; i < count; i++)
        fpx_pack_str (pk, names [i]);
    fpx_registry_names_free (names, count);
    return 0;
}

int
fpx_handle_ping_req (fpx_call_t *call, const fpx_ping_req_t *req)
{
    (void) req;
    msgpack_pack_map (&call->reply->pk, FPX_SERVER_INFO_KEYS);
    fpx_pack_server_info (call->server, &call->reply->pk);
    return 0;
}

// ---- mutations -------------------------------------------------------------------

typedef enum { S_TRAIN, S_ADD, S_ADD_WITH_IDS } s_write_t;

typedef struct {
    s_write_t kind;
    int64_t n;
    const float *x;
    const int64_t *ids;
} s_vectors_t;

static int
s_apply_vectors (fpx_call_t *call, fpx_entry_t *entry, void *arg)
{
    s_vectors_t *v = arg;
    //  An add beside a removal rebuilding in the background goes to the
    //  old graph now (searched at once) and again to the new one when it
    //  lands (rebuild.h): a copy is kept for then.
    fpx_shim_rebuild_t *pending = fpx_entry_pending (entry);
    char err [FPX_ERROR_TEXT_MAX];
    if (pending && v->kind != S_TRAIN
    &&  fpx_shim_rebuild_queue_add (pending, v->n, v->x, v->ids, err, sizeof err))
        return fpx_op_shim_result (call, FPX_ENOMEM, err);
    fpx_op_threads_begin (call, v->n);
    int rc = v->kind == S_TRAIN ? faiss_Index_train (fpx_entry_index (entry), v->n, v->x)
           : v->kind == S_ADD ? faiss_Index_add (fpx_entry_index (entry), v->n, v->x)
           : faiss_Index_add_with_ids (fpx_entry_index (entry), v->n, v->x, v->ids);
    fpx_op_threads_end (call);
    if (rc && pending && v->kind != S_TRAIN)
        fpx_shim_rebuild_unqueue_add (pending);
    if (rc)
        return fpx_op_faiss_error (call, "FAISS refused the vectors");
    if (v->kind == S_TRAIN) {
        msgpack_pack_map (&call->reply->pk, 1);
        fpx_pack_kv_bool (&call->reply->pk, "is_trained",
                          faiss_Index_is_trained (fpx_entry_index (entry)));
    }
    else
        fpx_op_pack_int (call, "ntotal", faiss_Index_ntotal (fpx_entry_index (entry))
                                         - fpx_shim_rebuild_removed (pending));
    return 0;
}

static int
s_train_transform (fpx_call_t *call, fpx_entry_t *entry, int64_t n, const float *x)
{
    char err [FPX_ERROR_TEXT_MAX];
    pthread_rwlock_t *lock = fpx_op_lock (call, entry);
    fpx_op_threads_begin (call, n);
    int rc = fpx_shim_transform_train (fpx_entry_transform (entry), n, x, err, sizeof err);
    fpx_op_threads_end (call);
    if (!rc) {
        msgpack_pack_map (&call->reply->pk, 1);
        fpx_pack_kv_bool (&call->reply->pk, "is_trained",
                          faiss_VectorTransform_is_trained (fpx_entry_transform (entry)));
    }
    pthread_rwlock_unlock (lock);
    return fpx_op_shim_result (call, rc, err);
}

static int
s_write_vectors (fpx_call_t *call, s_write_t kind, const char *name)
{
    fpx_entry_t *entry;
    int rc = fpx_op_find (call, name, &entry);
    if (rc)
        return rc;
    int64_t n;
    const float *x = fpx_op_vectors (call, 0, fpx_entry_d (entry), &n);
    const int64_t *ids = NULL;
    if (x && kind == S_ADD_WITH_IDS)
        ids = fpx_op_ids (call, 1, n);
    if (!x || (kind == S_ADD_WITH_IDS && !ids)
    ||  (kind != S_TRAIN && fpx_limits_check_vectors (call, n))) {
        fpx_entry_release (&entry);
        return call->reply->status;
    }
    if (fpx_entry_transform (entry)) {
        rc = kind == S_TRAIN ? s_train_transform (call, entry, n, x)
                             : fpx_reply_error (call->reply, FPX_EINVAL, "a vector transform "
                                                "cannot store vectors");
        fpx_entry_release (&entry);
        return rc;
    }
    uint64_t shape [2] = { (uint64_t) n, (uint64_t) fpx_entry_d (entry) };
    fpx_record_t record = {
        .kind = kind == S_TRAIN ? FPX_REC_TRAIN : kind == S_ADD ? FPX_REC_ADD : FPX_REC_ADD_WITH_IDS,
        .parts = { shape, x, ids }, .nparts = ids ? 3 : 2,
        .sizes = { sizeof shape, (size_t) n * (size_t) fpx_entry_d (entry) * sizeof (float),
                   (size_t) n * sizeof (int64_t) },
    };
    s_vectors_t vectors = { kind, n, x, ids };
    rc = s_mutate (call, entry, &record, s_apply_vectors, &vectors, kind != S_TRAIN);
    fpx_entry_release (&entry);
    return rc;
}

int
fpx_handle_train_req (fpx_call_t *call, const fpx_train_req_t *req)
{
    return s_write_vectors (call, S_TRAIN, req->name);
}

int
fpx_handle_add_req (fpx_call_t *call, const fpx_add_req_t *req)
{
    return s_write_vectors (call, S_ADD, req->name);
}

int
fpx_handle_add_with_ids_req (fpx_call_t *call, const fpx_add_with_ids_req_t *req)
{
    return s_write_vectors (call, S_ADD_WITH_IDS, req->name);
}

static size_t
s_machine_memory (void)
{
    long pages = sysconf (_SC_PHYS_PAGES), page = sysconf (_SC_PAGESIZE);
    return pages > 0 && page > 0 ? (size_t) pages * (size_t) page : SIZE_MAX;
}

//  A removal from an HNSW index rebuilds it (faiss_shim.h), with memory
//  beside the index: refused unless that fits what the tenant's
//  max_memory_mb and --max-memory-mb leave, and the machine. The new
//  graph is snapshotted soon after, so that a restart does not build it
//  again from the log.
static int
s_apply_remove (fpx_call_t *call, fpx_entry_t *entry, void *arg)
{
    size_t machine = s_machine_memory ();
    size_t cap = fpx_limits_alloc_cap (call->server->limits, call->envelope->tenant_id, machine);
    size_t removed = 0, need = 0;
    int rebuilt = 0;
    char err [FPX_ERROR_TEXT_MAX];
    //  A large HNSW index rebuilds in the background, searched meanwhile
    //  with the removed vectors filtered out (rebuild.h).
    int rc = fpx_rebuild_start (entry, arg, cap, &removed, &need, err, sizeof err);
    if (rc == 1)
        rc = fpx_shim_remove_ids (fpx_entry_index (entry), arg, cap, &removed, &need, &rebuilt,
                                  err, sizeof err);
    if (rc == FPX_ENOMEM && need > cap) {
        if (cap < machine)
            fpx_limits_cap_refused (call, cap);
        else
            fpx_reply_error (call->reply, FPX_ENOMEM, "this machine has %zu MiB", machine >> 20);
        char limit [FPX_ERROR_TEXT_MAX];
        snprintf (limit, sizeof limit, "%s", call->reply->error);
        snprintf (call->reply->error, sizeof call->reply->error, "%s: %s", err, limit);
        return call->reply->status;
    }
    if (rc)
        return fpx_op_shim_result (call, rc, err);
    if (rebuilt && fpx_entry_wal (entry))
        fpx_wal_snapshot_soon (fpx_entry_wal (entry));
    fpx_op_pack_int (call, "removed", (int64_t) removed);
    return 0;
}

int
fpx_handle_remove_ids_req (fpx_call_t *call, const fpx_remove_ids_req_t *req)
{
    fpx_entry_t *entry;
    int rc = fpx_op_find_index (call, req->name, &entry);
    if (rc)
        return rc;
    FaissIDSelector *selector = NULL;
    int64_t header [2] = { 0, 0 };          //  n and 0, or lo and hi
    fpx_record_t record = { .kind = FPX_REC_REMOVE_RANGE, .parts = { header },
                            .sizes = { sizeof header }, .nparts = 1 };
    if (call->narrays > 0) {
        size_t size = zmq_msg_size (&call->arrays [0]);
        int64_t n = (int64_t) (size / sizeof (int64_t));
        const int64_t *ids = size % sizeof (int64_t) == 0 ? fpx_op_ids (call, 0, n) : NULL;
        if (!ids && !call->reply->status)
            fpx_reply_error (call->reply, FPX_EPROTO, "id frame size is not a multiple of 8");
        char err [FPX_ERROR_TEXT_MAX];
        if (ids)
            fpx_op_shim_result (call, fpx_shim_id_selector (n, ids, &selector, err, sizeof err),
                                err);
        header [0] = n;
        record = (fpx_record_t) { .kind = FPX_REC_REMOVE_IDS, .parts = { header, ids },
                                  .sizes = { sizeof header, size }, .nparts = 2 };
    }
    else
    if (!req->has_lo || !req->has_hi)
        fpx_reply_error (call->reply, FPX_EINVAL, "missing integer parameter '%s'",
                         req->has_lo ? "hi" : "lo");
    else {
        header [0] = req->lo;
        header [1] = req->hi;
        if (faiss_IDSelectorRange_new ((FaissIDSelectorRange **) &selector, header [0],
                                       header [1]))
            fpx_op_faiss_error (call, "cannot build the id selector");
    }
    if (selector)
        fpx_op_mutate (call, entry, &record, s_apply_remove, selector);
    faiss_IDSelector_free (selector);
    fpx_entry_release (&entry);
    return call->reply->status;
}

static int
s_apply_reset (fpx_call_t *call, fpx_entry_t *entry, void *arg)
{
    (void) arg;
    if (faiss_Index_reset (fpx_entry_index (entry)))
        return fpx_op_faiss_error (call, "reset failed");
    fpx_op_pack_int (call, "ntotal", faiss_Index_ntotal (fpx_entry_index (entry)));
    return 0;
}

int
fpx_handle_reset_req (fpx_call_t *call, const fpx_reset_req_t *req)
{
    fpx_entry_t *entry;
    int rc = fpx_op_find_index (call, req->name, &entry);
    if (rc)
        return rc;
    fpx_record_t record = { .kind = FPX_REC_RESET };
    rc = fpx_op_mutate (call, entry, &record, s_apply_reset, NULL);
    fpx_entry_release (&entry);
    return rc;
}

static int
s_apply_parameters (fpx_call_t *call, fpx_entry_t *entry, void *arg)
{
    FaissParameterSpace *space = NULL;
    if (faiss_ParameterSpace_new (&space))
        return fpx_op_faiss_error (call, "cannot create a ParameterSpace");
    int rc = faiss_ParameterSpace_set_index_parameters (space, fpx_entry_index (entry), arg);
    faiss_ParameterSpace_free (space);
    if (rc)
        return fpx_op_faiss_error (call, "set_parameters failed");
    fpx_op_pack_empty (call);
    return 0;
}

int
fpx_handle_set_parameters_req (fpx_call_t *call, const fpx_set_parameters_req_t *req)
{
    //  The bounds set_attr applies, before ParameterSpace sees a value.
    char checked [FPX_SETPARAM_MAX], err [FPX_ERROR_TEXT_MAX];
    int rc = fpx_shim_check_parameters (req->params, checked, sizeof checked, err, sizeof err);
    if (rc)
        return fpx_op_shim_result (call, rc, err);
    fpx_entry_t *entry;
    if ((rc = fpx_op_find_index (call, req->name, &entry)))
        return rc;
    fpx_record_t record = { .kind = FPX_REC_SET_PARAMETERS, .parts = { checked },
                            .sizes = { strlen (checked) }, .nparts = 1 };
    rc = fpx_op_mutate (call, entry, &record, s_apply_parameters, checked);
    fpx_entry_release (&entry);
    return rc;
}

int
fpx_handle_save_req (fpx_call_t *call, const fpx_save_req_t *req)
{
    fpx_entry_t *entry;
    int rc = fpx_op_find_index (call, req->name, &entry);
    if (rc)
        return rc;
    if (!fpx_entry_wal (entry)) {
        rc = fpx_reply_error (call->reply, FPX_EINVAL, "only named indexes are saved "
                              "(anonymous ones live in memory only)");
        fpx_entry_release (&entry);
        return rc;
    }
    //  A removal rebuilding in the background lands first: the snapshot
    //  asked for then holds it (a snapshot skips a pending one).
    fpx_rebuild_wait (entry);
    //  Under the name lock, and only if it was not dropped meanwhile.
    uint32_t tenant = fpx_entry_tenant (entry);
    const char *name = fpx_entry_name (entry);
    pthread_mutex_t *name_lock = fpx_registry_name_lock (call->server->registry, tenant, name);
    fpx_entry_t *current = fpx_registry_find (call->server->registry, tenant, name, 0);
    if (current != entry)
        rc = fpx_reply_error (call->reply, FPX_ENOTFOUND, "no index named '%s'", name);
    else if ((rc = fpx_storage_snapshot (entry, call->reply->error, sizeof call->reply->error)))
        call->reply->status = rc;
    else
        fpx_op_pack_empty (call);
    pthread_mutex_unlock (name_lock);
    fpx_entry_release (&current);
    fpx_entry_release (&entry);
    return rc;
}

// ---- reads ---------------------------------------------------------------------------

//  The results of one FAISS search call: each reply's arrays are slices
//  of it, sent without a copy; the last slice released frees it.
typedef struct {
    atomic_int refs;
    int64_t *labels;
    float *distances;
} s_shared_results_t;

static void
s_release_shared (void *data, void *hint)
{
    (void) data;
    s_shared_results_t *shared = hint;
    if (atomic_fetch_sub (&shared->refs, 1) == 1)
        free (shared);
}

static void
s_reply_shared_array (fpx_call_t *call, void *data, size_t size, s_shared_results_t *shared)
{
    fpx_worker_reply_t *reply = call->reply;
    zmq_msg_init_data (&reply->arrays [reply->narrays++], data, size, s_release_shared, shared);
}

//  Whether call must run alone rather than in lead's FAISS call:
//  anonymous names resolve per connection, so another connection's
//  request for one may not share the lead's entry.
static bool
s_runs_alone (fpx_call_t *lead, fpx_call_t *call, const char *name)
{
    return call->envelope->conn_id != lead->envelope->conn_id && name [0] == '@';
}

//  One FAISS call for the requests of calls [0, n) that have queries x [i]
//  (nq [i] rows each, total rows in all); fills their replies. Returns
//  FPX_ENOMEM or 0 (FAISS's own errors go to the replies).
static int
s_search_shared (fpx_call_t *calls, int n, const float **x, const int64_t *nq, int64_t total,
                 fpx_entry_t *entry, const fpx_search_req_t *req)
{
    int d = fpx_entry_d (entry), members = 0, first = -1;
    int64_t k = req->k;
    for (int i = 0; i < n; i++)
        if (x [i]) {
            members++;
            first = first < 0 ? i : first;
        }
    //  A shared call may take FAISS's faster path for many queries (padded
    //  with copies of the first query, whose results nobody gets); a
    //  request alone runs exactly as it would in-process, on its own
    //  queries.
    int64_t rows = members > 1 ? fpx_shim_batch_rows (fpx_entry_index (entry), total) : total;
    size_t results = (size_t) rows * (size_t) k;
    float *queries = NULL;
    if (members > 1) {
        queries = malloc ((size_t) rows * (size_t) d * sizeof (float));
        if (!queries)
            return FPX_ENOMEM;
    }
    s_shared_results_t *out = malloc (sizeof *out + results * (sizeof (int64_t) + sizeof (float)));
    if (!out) {
        free (queries);
        return FPX_ENOMEM;
    }
    if (queries) {
        float *at = queries;
        for (int i = 0; i < n; i++)
            if (x [i]) {
                memcpy (at, x [i], (size_t) nq [i] * (size_t) d * sizeof (float));
                at += nq [i] * d;
            }
        for (int64_t row = total; row < rows; row++, at += d)
            memcpy (at, queries, (size_t) d * sizeof (float));
    }
    out->labels = (int64_t *) (out + 1);
    out->distances = (float *) (out->labels + results);
    char err [FPX_ERROR_TEXT_MAX];
    //  A per-request efSearch is set on the graph for the call (FAISS
    //  1.7.3 ignores it in SearchParametersHNSW): exclusive.
    const fpx_shim_rebuild_t *pending;
    pthread_rwlock_t *lock = fpx_entry_lock_filtered (entry, req->efSearch > 0, &pending);
    if (members > 1)
        fpx_op_threads_begin_batch (&calls [first], entry, rows);
    else
        fpx_op_threads_begin (&calls [first], rows);
    int rc = fpx_shim_search_pending (fpx_entry_index (entry), pending, rows,
                                      queries ? queries : x [first], k, (int) req->nprobe,
                                      (int) req->efSearch, req->sel, out->distances,
                                      out->labels, err, sizeof err);
    fpx_op_threads_end (&calls [first]);
    pthread_rwlock_unlock (lock);
    free (queries);
    if (rc) {
        free (out);
        for (int i = 0; i < n; i++)
            if (x [i])
                fpx_op_shim_result (&calls [i], rc, err);
        return 0;
    }
    //  A store with release, not atomic_init: the slices are released on
    //  ZeroMQ's I/O thread, and the last release frees what FAISS wrote here.
    atomic_store_explicit (&out->refs, 2 * members, memory_order_release);
    int64_t offset = 0;
    for (int i = 0; i < n; i++)
        if (x [i]) {
            msgpack_packer *pk = &calls [i].reply->pk;
            msgpack_pack_map (pk, 2);
            fpx_pack_kv_int (pk, "nq", nq [i]);
            fpx_pack_kv_int (pk, "k", k);
            size_t count = (size_t) (nq [i] * k);
            s_reply_shared_array (&calls [i], out->distances + offset, count * sizeof (float), out);
            s_reply_shared_array (&calls [i], out->labels + offset, count * sizeof (int64_t), out);
            offset += nq [i] * k;
        }
    if (members > 1) {
        fpx_batch_stats_t *stats = &calls [0].server->batch_stats [calls [0].envelope->tenant_id];
        atomic_fetch_add_explicit (&stats->requests, (uint_fast64_t) members, memory_order_relaxed);
        atomic_fetch_add_explicit (&stats->calls, 1, memory_order_relaxed);
    }
    return 0;
}

//  The one search path: n ≥ 1 searches whose parameters are req (the
//  lead's, calls [0]; a batch's are byte-identical), answered by as few
//  FAISS calls as their results allow: a request alone is a batch of
//  one. admitted: whether fpx_limits_admit has seen them (dispatch did,
//  for a request alone). A request that cannot share the lead's call (an
//  anonymous name of another connection; any other while the lead has a
//  selection, whose frame is the lead's own) is served alone.
static void
s_search (fpx_call_t *calls, int n, const fpx_search_req_t *req, bool admitted)
{
    fpx_call_t *lead = &calls [0];
    fpx_entry_t *entry = NULL;
    bool found = (admitted || fpx_limits_admit (lead) == 0)
              && fpx_op_find_index (lead, req->name, &entry) == 0;
    const float *x [FPX_BATCH_MAX];
    int64_t nq [FPX_BATCH_MAX];
    size_t limit = lead->server->config.max_message;
    size_t row_bytes = (size_t) req->k * (sizeof (float) + sizeof (int64_t));
    for (int i = 0; i < n; i++) {
        x [i] = NULL;
        if (i > 0 && (!found || req->sel || s_runs_alone (lead, &calls [i], req->name))) {
            calls [i].reply->status = 0;
            fpx_ops_execute (&calls [i]);
            continue;
        }
        if (!found || (i > 0 && !admitted && fpx_limits_admit (&calls [i])))
            continue;
        x [i] = fpx_op_vectors (&calls [i], 0, fpx_entry_d (entry), &nq [i]);
        if (x [i] && (size_t) nq [i] * row_bytes > limit) {
            fpx_reply_error (calls [i].reply, FPX_EINVAL,
                             "nq*k = %lld results exceed the message limit",
                             (long long) (nq [i] * req->k));
            x [i] = NULL;
        }
    }
    //  One FAISS call per run of requests whose results together stay
    //  within the message limit, as each request's alone does: a batch of
    //  large-k searches must not ask for many times that at once.
    for (int i = 0; found && i < n; ) {
        int64_t total = 0;
        size_t bytes = 0;
        int j = i;
        for (; j < n; j++) {
            if (!x [j])
                continue;
            size_t more = (size_t) nq [j] * row_bytes;
            if (total > 0 && bytes + more > limit)
                break;
            bytes += more;
            total += nq [j];
        }
        if (total > 0 && s_search_shared (calls + i, j - i, x + i, nq + i, total, entry,
                                          req) == FPX_ENOMEM)
            for (int m = i; m < j; m++)
                if (x [m])
                    fpx_reply_error (calls [m].reply, FPX_ENOMEM, "out of memory");
        i = j;
    }
    fpx_entry_release (&entry);
}

int
fpx_handle_search_req (fpx_call_t *call, const fpx_search_req_t *req)
{
    s_search (call, 1, req, true);
    return call->reply->status;
}

void
fpx_ops_search_batch (fpx_call_t *calls, int n)
{
    //  The parameters are byte-identical, so what the lead's refuse,
    //  every request's do: each is answered alone, with its reason.
    fpx_search_req_t req;
    if (fpx_read_search (&calls [0], &req)) {
        for (int i = 1; i < n; i++)
            fpx_ops_execute (&calls [i]);
        return;
    }
    s_search (calls, n, &req, false);
    fpx_req_search_free (&req);
}

//  search_and_reconstruct: search's checks, plus nq·k·d floats back.
int
fpx_handle_search_and_reconstruct_req (fpx_call_t *call,
                                       const fpx_search_and_reconstruct_req_t *req)
{
    fpx_entry_t *entry;
    int rc = fpx_op_find_index (call, req->name, &entry);
    if (rc)
        return rc;
    int64_t nq, k = req->k;
    const float *x = fpx_op_vectors (call, 0, fpx_entry_d (entry), &nq);
    double results = x ? (double) nq * (double) k : 0;
    double row_bytes = sizeof (float) + sizeof (int64_t)
                     + (double) fpx_entry_d (entry) * sizeof (float);
    if (x && results * row_bytes > (double) call->server->config.max_message)
        fpx_reply_error (call->reply, FPX_EINVAL, "nq*k = %.0f results and their vectors exceed "
                         "the message limit", results);
    else if (x) {
        size_t count = (size_t) results;
        float *D = malloc (count * sizeof (float));
        int64_t *I = malloc (count * sizeof (int64_t));
        float *R = malloc (count * (size_t) fpx_entry_d (entry) * sizeof (float));
        char err [FPX_ERROR_TEXT_MAX];
        if (!D || !I || !R)
            rc = fpx_reply_error (call->reply, FPX_ENOMEM, "out of memory");
        else {
            const fpx_shim_rebuild_t *pending;
            pthread_rwlock_t *lock = fpx_entry_lock_filtered (entry, req->efSearch > 0, &pending);
            fpx_op_threads_begin (call, nq);
            rc = fpx_shim_search_and_reconstruct_pending (fpx_entry_index (entry), pending, nq,
                                                          x, k, (int) req->nprobe,
                                                          (int) req->efSearch, req->sel,
                                                          D, I, R, err, sizeof err);
            fpx_op_threads_end (call);
            pthread_rwlock_unlock (lock);
            fpx_op_shim_result (call, rc, err);
        }
        if (rc) {
            free (D);
            free (I);
            free (R);
        }
        else {
            msgpack_pack_map (&call->reply->pk, 2);
            fpx_pack_kv_int (&call->reply->pk, "nq", nq);
            fpx_pack_kv_int (&call->reply->pk, "k", k);
            fpx_op_reply_array (call, D, count * sizeof (float));
            fpx_op_reply_array (call, I, count * sizeof (int64_t));
            fpx_op_reply_array (call, R, count * (size_t) fpx_entry_d (entry) * sizeof (float));
        }
    }
    fpx_entry_release (&entry);
    return call->reply->status;
}

int
fpx_handle_range_search_req (fpx_call_t *call, const fpx_range_search_req_t *req)
{
    fpx_entry_t *entry;
    int rc = fpx_op_find_index (call, req->name, &entry);
    if (rc)
        return rc;
    int64_t nq;
    const float *x = fpx_op_vectors (call, 0, fpx_entry_d (entry), &nq);
    if (x) {
        uint64_t *lims;
        float *D;
        int64_t *I;
        size_t total;
        char err [FPX_ERROR_TEXT_MAX];
        size_t max_total = call->server->config.max_message / (sizeof (float) + sizeof (int64_t));
        pthread_rwlock_t *lock = fpx_entry_lock_settled (entry, req->efSearch > 0);
        fpx_op_threads_begin (call, nq);
        rc = fpx_shim_range_search (fpx_entry_index (entry), nq, x, (float) req->radius,
                                    (int) req->nprobe, (int) req->efSearch, req->sel,
                                    &lims, &D, &I, &total, max_total, err, sizeof err);
        fpx_op_threads_end (call);
        pthread_rwlock_unlock (lock);
        if (!fpx_op_shim_result (call, rc, err)) {
            msgpack_pack_map (&call->reply->pk, 2);
            fpx_pack_kv_int (&call->reply->pk, "nq", nq);
            fpx_pack_kv_int (&call->reply->pk, "total", (int64_t) total);
            fpx_op_reply_array (call, lims, (size_t) (nq + 1) * sizeof (uint64_t));
            fpx_op_reply_array (call, D, total * sizeof (float));
            fpx_op_reply_array (call, I, total * sizeof (int64_t));
        }
    }
    fpx_entry_release (&entry);
    return call->reply->status;
}

//  Reconstructs n vectors starting at i0 (n = 1: key i0).
static int
s_reconstruct (fpx_call_t *call, const char *name, int64_t i0, int64_t n)
{
    fpx_entry_t *entry;
    int rc = fpx_op_find_index (call, name, &entry);
    if (rc)
        return rc;
    //  Keys of id-mapped and IVF indexes are FAISS's to check (it does, with
    //  the messages a FAISS user knows); positions are checked here, since
    //  IndexFlat reads them unchecked. The answer's size is bounded too.
    //  Beside a removal rebuilding in the background, positions are the
    //  rebuilt index's (rebuild.h).
    const fpx_shim_rebuild_t *pending;
    pthread_rwlock_t *lock = fpx_entry_lock_filtered (entry, false, &pending);
    int64_t ntotal = faiss_Index_ntotal (fpx_entry_index (entry))
                   - fpx_shim_rebuild_removed (pending);
    size_t row = (size_t) fpx_entry_d (entry) * sizeof (float);
    size_t bytes = (size_t) n * row;
    float *out = NULL;
    if ((uint64_t) n > call->server->config.max_message / row)
        fpx_reply_error (call->reply, FPX_ETOOBIG, "%lld vectors exceed the message limit",
                         (long long) n);
    else if (i0 > INT64_MAX - n)
        fpx_reply_error (call->reply, FPX_EINVAL, "i0 + n overflows");
    else if (fpx_shim_keys_are_positions (fpx_entry_index (entry)) && (i0 < 0 || i0 + n > ntotal))
        fpx_reply_error (call->reply, FPX_EINVAL, "positions [%lld, %lld) are not within ntotal = %lld",
                         (long long) i0, (long long) (i0 + n), (long long) ntotal);
    else if (!(out = calloc (1, bytes)))      //  IVF's bulk path skips removed ids: no
                                             //  uninitialized bytes may leave the server
        fpx_reply_error (call->reply, FPX_ENOMEM, "out of memory");
    else {
        char err [FPX_ERROR_TEXT_MAX];
        int rc = fpx_shim_reconstruct_n_pending (fpx_entry_index (entry), pending, i0, n, out,
                                                 err, sizeof err);
        fpx_op_shim_result (call, rc, err);
    }
    pthread_rwlock_unlock (lock);
    if (call->reply->status)
        free (out);
    else {
        msgpack_pack_map (&call->reply->pk, 2);
        fpx_pack_kv_int (&call->reply->pk, "n", n);
        fpx_pack_kv_int (&call->reply->pk, "d", fpx_entry_d (entry));
        fpx_op_reply_array (call, out, bytes);
    }
    fpx_entry_release (&entry);
    return call->reply->status;
}

int
fpx_handle_reconstruct_req (fpx_call_t *call, const fpx_reconstruct_req_t *req)
{
    return s_reconstruct (call, req->name, req->key, 1);
}

int
fpx_handle_reconstruct_n_req (fpx_call_t *call, const fpx_reconstruct_n_req_t *req)
{
    return s_reconstruct (call, req->name, req->i0, req->n);
}

int
fpx_handle_serialize_req (fpx_call_t *call, const fpx_serialize_req_t *req)
{
    fpx_entry_t *entry;
    int rc = fpx_op_find_index (call, req->name, &entry);
    if (rc)
        return rc;
    uint8_t *bytes = NULL;
    size_t size = 0;
    char err [FPX_ERROR_TEXT_MAX];
    pthread_rwlock_t *lock = fpx_op_lock (call, entry);
    rc = fpx_shim_serialize (fpx_entry_index (entry), 0, &bytes, &size, err, sizeof err);
    pthread_rwlock_unlock (lock);
    fpx_entry_release (&entry);
    if (rc)
        return fpx_op_shim_result (call, rc, err);
    if (size > call->server->config.max_message) {
        free (bytes);
        return fpx_reply_error (call->reply, FPX_ETOOBIG, "serialized index of %zu bytes "
                                "exceeds the message limit (--max-message-mb %zu): download it "
                                "in chunks (download_begin)", size,
                                call->server->config.max_message >> 20);
    }
    fpx_op_pack_int (call, "size", (int64_t) size);
    fpx_op_reply_array (call, bytes, size);
    return 0;
}

int
fpx_op_deserialize_bytes (fpx_call_t *call, const char *name, const char *factory,
                          const uint8_t *bytes, size_t size)
{
    if (size == 0)
        return fpx_reply_error (call->reply, FPX_EINVAL, "empty index bytes");
    //  A legitimate index needs little beyond its own bytes; a forged one
    //  declaring huge arrays hits the cap instead of exhausting memory.
    size_t wanted = 4 * size + ((size_t) 256 << 20);
    size_t cap = fpx_limits_alloc_cap (call->server->limits, call->envelope->tenant_id, wanted);
    FaissIndex *index;
    char err [FPX_ERROR_TEXT_MAX];
    int rc = fpx_shim_deserialize (bytes, size, cap, &index, err, sizeof err);
    if (rc == FPX_ENOMEM && cap < wanted)
        return fpx_limits_cap_refused (call, cap);
    if (rc)
        return fpx_op_shim_result (call, rc, err);
    if (faiss_Index_d (index) < 1 || faiss_Index_d (index) > FPX_DIM_MAX) {
        faiss_Index_free (index);
        return fpx_reply_error (call->reply, FPX_EINVAL, "uploaded index has dimension out of "
                                "[1, %d]", FPX_DIM_MAX);
    }
    //  Without a factory from the client, the one FAISS would build this
    //  structure from, when there is one (docs/PROTOCOL.md, deserialize).
    char recovered [FPX_FACTORY_MAX] = "";
    if (!factory || !factory [0])
        fpx_shim_factory_of (index, recovered, sizeof recovered);
    fpx_object_t object = { .index = index,
                            .factory = factory && factory [0] ? factory : recovered };
    return fpx_op_register (call, name && name [0] ? name : NULL, &object);
}

int
fpx_handle_deserialize_req (fpx_call_t *call, const fpx_deserialize_req_t *req)
{
    const char *name = req->name, *factory = req->factory;
    size_t size;
    const uint8_t *bytes = fpx_op_array (call, 0, 1, &size, "index bytes");
    if (!bytes)
        return call->reply->status;
    return fpx_op_deserialize_bytes (call, name, factory, bytes, size);
}

// ---- dispatch --------------------------------------------------------------------------

//  Indexed by opcode: one handler per row of FPX_OPCODES, so that an
//  opcode without its fpx_handle_<name> does not link.
static const fpx_op_fn s_handlers [FPX_OP_LAST_] = {
#define S_HANDLER_(NAME, code, wire, role, lock, flags, summary) [code] = fpx_handle_##wire,
    FPX_OPCODES (S_HANDLER_)
#undef S_HANDLER_
};

void
fpx_ops_execute (fpx_call_t *call)
{
    int opcode = call->header.opcode;
    fpx_op_fn op = opcode > 0 && opcode < FPX_OP_LAST_ ? s_handlers [opcode] : NULL;
    if (!op) {
        fpx_reply_error (call->reply, FPX_EOPCODE, "unknown opcode %u", call->header.opcode);
        return;
    }
    int rc = fpx_limits_admit (call);
    if (!rc)
        rc = op (call);
    if (rc && !call->reply->status)
        fpx_reply_error (call->reply, rc, "%s", fpx_strerror (rc));
}
