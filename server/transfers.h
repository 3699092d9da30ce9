/*  transfers.h — chunked transfers of serialized indexes, so that an index
    of any size goes in and out without raising --max-message-mb.

    A download (download_begin, download_chunk) serializes the index once,
    under its shared lock, into a buffer the server keeps for the
    connection, and serves byte ranges of that one consistent copy. An
    upload (upload_begin, upload_chunk, upload_commit) gathers the bytes
    in order into a buffer of the declared size, then hands them to the
    same checks and reader as deserialize. transfer_abort drops either.

    A transfer belongs to the connection and tenant that began it; every
    other request naming it gets FPX_ENOTFOUND. Its buffer is charged to
    the tenant's max_memory_mb (and checked against --max-memory-mb) while
    it lives, and freed: after the last byte of a download is read, at the
    commit of an upload, at transfer_abort, when its connection closes,
    or after FPX_TRANSFER_IDLE_S untouched. See docs/PROTOCOL.md.

    The table is an object of the server (server->transfers): one per
    fpx_server_t, made before the workers start and destroyed after they
    stopped.
    Thread-safe: one mutex guards the table; the copies of a chunk (at most
    FPX_TRANSFER_CHUNK_MAX bytes) are made under it.                     */
#ifndef FPX_TRANSFERS_H_INCLUDED
#define FPX_TRANSFERS_H_INCLUDED

#include "server.h"
#include "tenant_limits.h"

typedef struct fpx_transfers_t fpx_transfers_t;

/*  An empty table of transfers whose buffers are charged to limits
    (borrowed: it outlives the table). Returns it (caller owns), or NULL
    when out of memory.                                                  */
fpx_transfers_t *fpx_transfers_new (fpx_limits_t *limits);

/*  Frees every transfer left and the table (at shutdown, after the
    workers stopped); NULL is fine; clears *self_p.                      */
void fpx_transfers_destroy (fpx_transfers_t **self_p);

/*  Frees the transfers of a closed connection (the worker's reap job),
    and those idle past FPX_TRANSFER_IDLE_S. Returns how many.          */
size_t fpx_transfers_reap (fpx_transfers_t *self, uint64_t conn_id);

/*  The tenant's open transfers and their buffers' bytes (info).         */
void fpx_transfers_usage (fpx_transfers_t *self, uint32_t tenant, int64_t *count_p,
                          int64_t *bytes_p);

#endif
