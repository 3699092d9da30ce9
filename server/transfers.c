/*  transfers.c — chunked transfers of serialized indexes (transfers.h):
    the table of open transfers and the opcodes download_begin,
    download_chunk, upload_begin, upload_chunk, upload_commit and
    transfer_abort.

    Every offset, length and size from the client is bounded before it is
    used: chunks of at most the server's chunk size, an upload written in
    order only (an offset other than the bytes received so far is
    refused), never past its declared size. The buffer is never read by
    FAISS directly: upload_commit goes through fpx_op_deserialize_bytes,
    so the allow-list walk and the checks of deserialize apply unchanged.
    This file must not call FAISS but through those helpers.
*/
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "faiss_shim.h"
#include "ops.h"
#include "rebuild.h"
#include "tenant_limits.h"
#include "transfers.h"

typedef struct s_transfer_s {
    struct s_transfer_s *next;
    uint64_t id;
    uint64_t conn_id;
    uint32_t tenant;
    bool upload;
    uint8_t *data;                 //  size bytes (upload: received first)
    size_t size;
    size_t received;               //  upload: bytes written so far
    size_t charged;                //  held against the tenant's max_memory_mb
    double touched;                //  monotonic seconds of its last use
    char name [FPX_NAME_MAX + 1];  //  upload: "" for anonymous
    char factory [FPX_FACTORY_MAX];
} s_transfer_t;

struct fpx_transfers_t {
    pthread_mutex_t lock;
    s_transfer_t *transfers;       //  guarded by lock
    uint64_t next_id;              //  guarded by lock
    fpx_limits_t *limits;          //  what the buffers are charged to
};

fpx_transfers_t *
fpx_transfers_new (fpx_limits_t *limits)
{
    fpx_transfers_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->limits = limits;
    pthread_mutex_init (&self->lock, NULL);
    self->next_id = 1;
    return self;
}

static void
s_transfer_free (fpx_transfers_t *self, s_transfer_t *transfer)
{
    while (transfer) {
        s_transfer_t *next = transfer->next;
        fpx_limits_transfer_release (self->limits, transfer->tenant, transfer->charged);
        free (transfer->data);
        free (transfer);
        transfer = next;
    }
}

//  Under self->lock: unlinks onto *freed the transfers of conn_id (when
//  by_conn), every one (all), and those idle past the timeout.
static size_t
s_unlink_where (fpx_transfers_t *self, uint64_t conn_id, bool by_conn, bool all,
                s_transfer_t **freed)
{
    double now = fpx_monotonic_seconds ();
    size_t count = 0;
    s_transfer_t **slot = &self->transfers;
    while (*slot) {
        s_transfer_t *transfer = *slot;
        if (all || (by_conn && transfer->conn_id == conn_id)
        ||  now - transfer->touched > FPX_TRANSFER_IDLE_S) {
            *slot = transfer->next;
            transfer->next = *freed;
            *freed = transfer;
            count++;
        }
        else
            slot = &transfer->next;
    }
    return count;
}

static size_t
s_reap (fpx_transfers_t *self, uint64_t conn_id, bool by_conn)
{
    s_transfer_t *freed = NULL;
    pthread_mutex_lock (&self->lock);
    size_t count = s_unlink_where (self, conn_id, by_conn, false, &freed);
    pthread_mutex_unlock (&self->lock);
    s_transfer_free (self, freed);
    return count;
}

size_t
fpx_transfers_reap (fpx_transfers_t *self, uint64_t conn_id)
{
    return s_reap (self, conn_id, true);
}

void
fpx_transfers_destroy (fpx_transfers_t **self_p)
{
    fpx_transfers_t *self = *self_p;
    if (!self)
        return;
    s_transfer_t *freed = NULL;
    s_unlink_where (self, 0, false, true, &freed);
    s_transfer_free (self, freed);
    pthread_mutex_destroy (&self->lock);
    free (self);
    *self_p = NULL;
}

void
fpx_transfers_usage (fpx_transfers_t *self, uint32_t tenant, int64_t *count_p, int64_t *bytes_p)
{
    int64_t count = 0, bytes = 0;
    pthread_mutex_lock (&self->lock);
    for (s_transfer_t *transfer = self->transfers; transfer; transfer = transfer->next)
        if (transfer->tenant == tenant) {
            count++;
            bytes += (int64_t) transfer->size;
        }
    pthread_mutex_unlock (&self->lock);
    *count_p = count;
    *bytes_p = bytes;
}

//  The chunk size this server serves and accepts: half the message
//  limit (room for the header and parameters), at most
//  FPX_TRANSFER_CHUNK_MAX so that one chunk's copy stays small.
static size_t
s_chunk_size (fpx_call_t *call)
{
    size_t chunk = call->server->config.max_message / 2;
    return chunk > FPX_TRANSFER_CHUNK_MAX ? FPX_TRANSFER_CHUNK_MAX : chunk;
}

//  Under the table's lock: the caller's transfer id, of the kind wanted;
//  NULL with the reply filled.
static s_transfer_t *
s_find_id (fpx_call_t *call, int64_t id, bool upload, s_transfer_t ***slot_p)
{
    for (s_transfer_t **slot = &call->server->transfers->transfers; *slot; slot = &(*slot)->next) {
        s_transfer_t *transfer = *slot;
        if (transfer->id != (uint64_t) id || transfer->conn_id != call->envelope->conn_id
        ||  transfer->tenant != call->envelope->tenant_id)
            continue;
        if (transfer->upload != upload && call->header.opcode != FPX_OP_TRANSFER_ABORT)
            break;
        transfer->touched = fpx_monotonic_seconds ();
        if (slot_p)
            *slot_p = slot;
        return transfer;
    }
    fpx_reply_error (call->reply, FPX_ENOTFOUND, "no %s transfer %lld on this connection (a "
                     "transfer ends with its last chunk, its commit, an abort, its connection, "
                     "or %d s unused)", call->header.opcode == FPX_OP_TRANSFER_ABORT ? "open"
                     : upload ? "upload" : "download", (long long) id, FPX_TRANSFER_IDLE_S);
    return NULL;
}

//  Under the table's lock: whether the connection may open one more
//  transfer.
static int
s_check_room (fpx_call_t *call)
{
    int open = 0;
    fpx_transfers_t *self = call->server->transfers;
    for (s_transfer_t *transfer = self->transfers; transfer; transfer = transfer->next)
        open += transfer->conn_id == call->envelope->conn_id;
    if (open < FPX_TRANSFERS_PER_CONN)
        return 0;
    return fpx_reply_error (call->reply, FPX_EBUSY, "this connection has %d transfers open, the "
                            "most it may (finish or abort one first)", open);
}

//  Under self->lock: adds a transfer and gives it its id.
static void
s_insert (fpx_transfers_t *self, s_transfer_t *transfer)
{
    transfer->id = self->next_id++;
    transfer->touched = fpx_monotonic_seconds ();
    transfer->next = self->transfers;
    self->transfers = transfer;
}

//  Replies with a malloc'd copy of bytes [offset, offset + length).
static int
s_reply_copy (fpx_call_t *call, const uint8_t *data, size_t offset, size_t length)
{
    uint8_t *copy = malloc (length ? length : 1);
    if (!copy)
        return fpx_reply_error (call->reply, FPX_ENOMEM, "out of memory for a chunk of %zu bytes",
                                length);
    memcpy (copy, data + offset, length);
    fpx_op_reply_array (call, copy, length);
    return 0;
}

// ---- download ---------------------------------------------------------------------

//  name → {transfer, size, chunk} and the first chunk. An index that fits
//  one chunk comes whole with transfer 0: nothing is kept.
int
fpx_handle_download_begin_req (fpx_call_t *call, const fpx_download_begin_req_t *req)
{
    s_reap (call->server->transfers, 0, false);     //  the idle ones
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
    size_t chunk = s_chunk_size (call);
    if (size <= chunk) {
        msgpack_pack_map (&call->reply->pk, 3);
        fpx_pack_kv_int (&call->reply->pk, "transfer", 0);
        fpx_pack_kv_int (&call->reply->pk, "size", (int64_t) size);
        fpx_pack_kv_int (&call->reply->pk, "chunk", (int64_t) chunk);
        fpx_op_reply_array (call, bytes, size);
        return 0;
    }
    s_transfer_t *transfer = calloc (1, sizeof *transfer);
    if (!transfer) {
        free (bytes);
        return fpx_reply_error (call->reply, FPX_ENOMEM, "out of memory");
    }
    if ((rc = fpx_limits_transfer_reserve (call, size))) {
        free (bytes);
        free (transfer);
        return rc;
    }
    *transfer = (s_transfer_t) { .conn_id = call->envelope->conn_id,
                                 .tenant = call->envelope->tenant_id,
                                 .data = bytes, .size = size, .charged = size };
    pthread_mutex_lock (&call->server->transfers->lock);
    rc = s_check_room (call);
    if (!rc)
        rc = s_reply_copy (call, bytes, 0, chunk);
    if (!rc)
        s_insert (call->server->transfers, transfer);
    pthread_mutex_unlock (&call->server->transfers->lock);
    if (rc) {
        s_transfer_free (call->server->transfers, transfer);
        return rc;
    }
    msgpack_pack_map (&call->reply->pk, 3);
    fpx_pack_kv_int (&call->reply->pk, "transfer", (int64_t) transfer->id);
    fpx_pack_kv_int (&call->reply->pk, "size", (int64_t) size);
    fpx_pack_kv_int (&call->reply->pk, "chunk", (int64_t) chunk);
    return 0;
}

//  transfer, offset, optional length (default and at most the chunk
//  size) → {offset, length} and those bytes. The read that reaches the
//  end frees the transfer.
int
fpx_handle_download_chunk_req (fpx_call_t *call, const fpx_download_chunk_req_t *req)
{
    size_t chunk = s_chunk_size (call);
    int64_t offset = req->offset, length = req->length ? req->length : (int64_t) chunk;
    if (length > (int64_t) chunk)
        return fpx_reply_error (call->reply, FPX_EINVAL, "'length' must be an integer in "
                                "[1, %zu]", chunk);
    s_transfer_t **slot, *finished = NULL;
    int rc;
    pthread_mutex_lock (&call->server->transfers->lock);
    s_transfer_t *transfer = s_find_id (call, req->transfer, false, &slot);
    if (!transfer)
        rc = call->reply->status;
    else if ((uint64_t) offset >= transfer->size)
        rc = fpx_reply_error (call->reply, FPX_EINVAL, "offset %lld is not within the %zu bytes "
                              "of transfer %llu", (long long) offset, transfer->size,
                              (unsigned long long) transfer->id);
    else {
        size_t left = transfer->size - (size_t) offset;
        if ((size_t) length > left)
            length = (int64_t) left;
        rc = s_reply_copy (call, transfer->data, (size_t) offset, (size_t) length);
        if (!rc && (size_t) length == left) {
            *slot = transfer->next;
            finished = transfer;
            finished->next = NULL;
        }
    }
    pthread_mutex_unlock (&call->server->transfers->lock);
    s_transfer_free (call->server->transfers, finished);
    if (rc)
        return rc;
    msgpack_pack_map (&call->reply->pk, 2);
    fpx_pack_kv_int (&call->reply->pk, "offset", offset);
    fpx_pack_kv_int (&call->reply->pk, "length", length);
    return 0;
}

// ---- upload -----------------------------------------------------------------------

//  size, optional name and factory → {transfer, chunk}. The name is
//  checked now so that a taken one fails before the bytes travel.
int
fpx_handle_upload_begin_req (fpx_call_t *call, const fpx_upload_begin_req_t *req)
{
    s_reap (call->server->transfers, 0, false);     //  the idle ones
    const char *name = req->name, *factory = req->factory;
    int64_t size = req->size;
    int rc;
    if (name [0]) {
        fpx_entry_t *entry = fpx_registry_find (call->server->registry, call->envelope->tenant_id,
                                                name, call->envelope->conn_id);
        if (entry) {
            fpx_entry_release (&entry);
            return fpx_reply_error (call->reply, FPX_EEXIST, "an index named '%s' already exists",
                                    name);
        }
    }
    s_transfer_t *transfer = calloc (1, sizeof *transfer);
    if (!transfer)
        return fpx_reply_error (call->reply, FPX_ENOMEM, "out of memory");
    if ((rc = fpx_limits_transfer_reserve (call, (size_t) size))) {
        free (transfer);
        return rc;
    }
    //  Pages are touched only as chunks arrive; the reservation above
    //  already counts all of them.
    *transfer = (s_transfer_t) { .conn_id = call->envelope->conn_id,
                                 .tenant = call->envelope->tenant_id, .upload = true,
                                 .data = malloc ((size_t) size), .size = (size_t) size,
                                 .charged = (size_t) size };
    memcpy (transfer->name, name, sizeof req->name);
    memcpy (transfer->factory, factory, sizeof req->factory);
    if (!transfer->data) {
        s_transfer_free (call->server->transfers, transfer);
        return fpx_reply_error (call->reply, FPX_ENOMEM, "cannot allocate an upload buffer of "
                                "%lld bytes", (long long) size);
    }
    pthread_mutex_lock (&call->server->transfers->lock);
    rc = s_check_room (call);
    if (!rc)
        s_insert (call->server->transfers, transfer);
    pthread_mutex_unlock (&call->server->transfers->lock);
    if (rc) {
        s_transfer_free (call->server->transfers, transfer);
        return rc;
    }
    msgpack_pack_map (&call->reply->pk, 2);
    fpx_pack_kv_int (&call->reply->pk, "transfer", (int64_t) transfer->id);
    fpx_pack_kv_int (&call->reply->pk, "chunk", (int64_t) s_chunk_size (call));
    return 0;
}

//  transfer, offset (= the bytes received so far) and one frame of at
//  most the chunk size → {received}.
int
fpx_handle_upload_chunk_req (fpx_call_t *call, const fpx_upload_chunk_req_t *req)
{
    int64_t offset = req->offset;
    size_t length;
    const uint8_t *bytes = fpx_op_array (call, 0, 1, &length, "chunk bytes");
    if (!bytes)
        return call->reply->status;
    size_t chunk = s_chunk_size (call);
    if (length == 0 || length > chunk)
        return fpx_reply_error (call->reply, FPX_EINVAL, "a chunk holds 1 to %zu bytes, not %zu",
                                chunk, length);
    int rc = 0;
    size_t received = 0;
    pthread_mutex_lock (&call->server->transfers->lock);
    s_transfer_t *transfer = s_find_id (call, req->transfer, true, NULL);
    if (!transfer)
        rc = call->reply->status;
    else if ((uint64_t) offset != transfer->received)
        rc = fpx_reply_error (call->reply, FPX_EINVAL, "chunk at offset %lld, but transfer %llu "
                              "has %zu bytes: chunks go in order", (long long) offset,
                              (unsigned long long) transfer->id, transfer->received);
    else if (length > transfer->size - transfer->received)
        rc = fpx_reply_error (call->reply, FPX_EINVAL, "chunk of %zu bytes at offset %lld passes "
                              "the %zu bytes declared for transfer %llu", length,
                              (long long) offset, transfer->size,
                              (unsigned long long) transfer->id);
    else {
        memcpy (transfer->data + transfer->received, bytes, length);
        received = transfer->received += length;
    }
    pthread_mutex_unlock (&call->server->transfers->lock);
    if (rc)
        return rc;
    fpx_op_pack_int (call, "received", (int64_t) received);
    return 0;
}

//  transfer → the description of the new index, as deserialize.
int
fpx_handle_upload_commit_req (fpx_call_t *call, const fpx_upload_commit_req_t *req)
{
    s_transfer_t **slot;
    int rc = 0;
    pthread_mutex_lock (&call->server->transfers->lock);
    s_transfer_t *transfer = s_find_id (call, req->transfer, true, &slot);
    if (!transfer)
        rc = call->reply->status;
    else if (transfer->received != transfer->size)
        rc = fpx_reply_error (call->reply, FPX_EINVAL, "transfer %llu has %zu of its %zu bytes",
                              (unsigned long long) transfer->id, transfer->received,
                              transfer->size);
    else {
        *slot = transfer->next;
        transfer->next = NULL;
    }
    pthread_mutex_unlock (&call->server->transfers->lock);
    if (rc)
        return rc;
    //  As for a deserialize, whose message is not charged either: the
    //  bytes stop counting as FAISS starts building the index from them.
    fpx_limits_transfer_release (call->server->limits, transfer->tenant, transfer->charged);
    transfer->charged = 0;
    rc = fpx_op_deserialize_bytes (call, transfer->name, transfer->factory, transfer->data,
                                   transfer->size);
    s_transfer_free (call->server->transfers, transfer);
    return rc;
}

int
fpx_handle_transfer_abort_req (fpx_call_t *call, const fpx_transfer_abort_req_t *req)
{
    s_transfer_t **slot;
    pthread_mutex_lock (&call->server->transfers->lock);
    s_transfer_t *transfer = s_find_id (call, req->transfer, false, &slot);
    if (transfer) {
        *slot = transfer->next;
        transfer->next = NULL;
    }
    pthread_mutex_unlock (&call->server->transfers->lock);
    if (!transfer)
        return call->reply->status;
    s_transfer_free (call->server->transfers, transfer);
    fpx_op_pack_empty (call);
    return 0;
}
