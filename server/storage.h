/*  storage.h — durability of named indexes: write-ahead log, atomic
    snapshots, recovery. docs/STORAGE.md describes the files and the
    guarantees of each --fsync mode.

    Layout: DATA/tenants/TENANT/INDEX/{snapshot, wal-<first lsn>.log}.
    Every mutation of a named index is appended to its log (under the
    entry's exclusive lock) before FAISS applies it, and undone (the log
    truncated back) when FAISS refuses it; the client is answered only once
    the record is as durable as the fsync mode promises. Anonymous indexes
    never touch the disk.

    This module must not hold an entry lock across an fsync that others
    could share (group commit waits happen after the caller unlocks), and
    never serves a damaged index as if it were whole.
*/
#ifndef FPX_STORAGE_H_INCLUDED
#define FPX_STORAGE_H_INCLUDED

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "registry.h"

typedef enum { FPX_FSYNC_NEVER = 0, FPX_FSYNC_BATCH = 1, FPX_FSYNC_ALWAYS = 2 } fpx_fsync_t;

/*  Log record kinds; stable on disk.                                    */
typedef enum {
    FPX_REC_TRAIN = 1, FPX_REC_ADD = 2, FPX_REC_ADD_WITH_IDS = 3,
    FPX_REC_REMOVE_IDS = 4, FPX_REC_REMOVE_RANGE = 5, FPX_REC_RESET = 6,
    FPX_REC_SET_PARAMETERS = 7, FPX_REC_SET_ATTR = 8, FPX_REC_SET_DIRECT_MAP = 9
} fpx_record_kind_t;

/*  A record to append: a fixed part and up to two bulk parts written as
    they are (vectors, ids), without copying.                            */
typedef struct {
    fpx_record_kind_t kind;
    const void *parts [3];
    size_t sizes [3];
    int nparts;
} fpx_record_t;

/*  Where a record landed, to wait for its durability.                   */
typedef struct {
    uint64_t generation;
    uint64_t offset;
} fpx_ticket_t;

typedef struct fpx_wal_t fpx_wal_t;

typedef struct {
    const char *root;              //  the data directory
    fpx_fsync_t fsync;
    uint64_t snapshot_log_bytes;   //  snapshot when a log grows past this
    double snapshot_interval_s;    //  … or has had records this long
} fpx_storage_config_t;

/*  One server's storage: its data directory (and the lock file that keeps
    another faissproxyd out of it), the recovery state and the background
    snapshotter. Each named entry's log (fpx_wal_t) points back to the
    storage that holds its files, so that what takes an entry (snapshot,
    evict, load) needs nothing else.                                    */
typedef struct fpx_storage_t fpx_storage_t;

/*  Opens the data directory (creating it) and takes its lock file, for
    the indexes of registry (borrowed; it must outlive the storage) and
    tenants (tenant id → name, borrowed). Returns the storage (caller
    owns), or NULL with a logged reason (unusable directory, locked by
    another faissproxyd, out of memory). It is "recovering" from then
    until fpx_storage_recovered.                                         */
fpx_storage_t *fpx_storage_new (const fpx_storage_config_t *config, fpx_registry_t *registry,
                                char (*tenants) [FPX_NAME_MAX + 1], int ntenants);

/*  Stops the snapshotter, snapshots every named entry with unsnapshotted
    records (clean shutdown), releases the directory's lock and frees the
    storage; clears *self_p. Before the registry goes: the entries' logs
    may outlive it, but are only destroyed after (with the registry).    */
void fpx_storage_destroy (fpx_storage_t **self_p);

/*  Loads every named index of the configured tenants into the registry:
    snapshot, then log replay. Damaged ones are registered as damaged.
    Runs on its own thread while the broker already answers (requests
    that touch indexes get FPX_ERECOVERING meanwhile); stops early, between
    two indexes, after fpx_storage_stop_recovery.                        */
void fpx_storage_recover (fpx_storage_t *self);

/*  Ends the recovering state (after recover, and whatever must see every
    recovered index before requests do).                                 */
void fpx_storage_recovered (fpx_storage_t *self);

/*  Whether recovery is still running; *loaded (if not NULL): the indexes
    loaded so far. Thread-safe; a NULL storage is not recovering.       */
bool fpx_storage_recovering (fpx_storage_t *self, size_t *loaded);

/*  Asks a running recovery to stop after the index it is reading.       */
void fpx_storage_stop_recovery (fpx_storage_t *self);

/*  Makes a new named entry durable: writes its first snapshot and opens
    its log, then links it into the storage's registry under its name
    (insert is done here so that the name and the files appear
    together). Takes ownership of object, success or not. FPX_EEXIST,
    FPX_EIO, FPX_ENOMEM.                                                 */
int fpx_storage_create (fpx_storage_t *self, uint32_t tenant, const char *tenant_name,
                        const char *name, const fpx_object_t *object,
                        fpx_entry_t **entry_p, char *err, size_t err_size);

/*  Evicts a named index (budget.h): makes its snapshot current (the log
    empty), then, under its exclusive lock, frees its object and keeps
    what describe shows. The caller holds one counted reference and no
    lock; only an entry nobody else holds (the registry's link and the
    caller's reference) is evicted. Returns 0 when evicted, 1 when left
    alone (in use, busy, an alias or a view's root, already evicted), or
    an error from the snapshot (FPX_EIO, err set).                       */
int fpx_storage_evict (fpx_entry_t *entry, char *err, size_t err_size);

/*  Loads an evicted index back from its snapshot, through the checks of
    recovery (header and payload checksums, FAISS's reader with its
    allocation cap). The caller holds its exclusive lock and a counted
    reference. 0, or FPX_EDAMAGED / FPX_EIO with err set (it stays
    evicted, and the next request tries again).                          */
int fpx_storage_load (fpx_entry_t *entry, char *err, size_t err_size);

/*  Removes a dropped named index's files (the entry is already unlinked;
    damaged indexes' files too).                                         */
int fpx_storage_drop (fpx_storage_t *self, uint32_t tenant, const char *name, char *err,
                      size_t err_size);

/*  Appends a record for entry (caller holds its exclusive lock). With
    fsync=always the record is on stable storage on return. FPX_EIO: the
    log is unchanged and the mutation must not be applied.              */
int fpx_wal_append (fpx_wal_t *wal, const fpx_record_t *record,
                    fpx_ticket_t *ticket, char *err, size_t err_size);

/*  Takes back the record just appended (FAISS refused the mutation);
    caller still holds the exclusive lock.                              */
void fpx_wal_undo (fpx_wal_t *wal, const fpx_ticket_t *ticket);

/*  Waits until the record is durable as the mode promises (batch: one
    shared fdatasync for every writer waiting). Call without the entry
    lock. 0 or FPX_EIO.                                                 */
int fpx_wal_commit (fpx_wal_t *wal, const fpx_ticket_t *ticket, char *err, size_t err_size);

/*  True when the log is past its size or age threshold, or holds a
    train record (its vectors need not be replayed at every restart).    */
bool fpx_wal_wants_snapshot (fpx_wal_t *wal);

/*  Asks the snapshotter for a snapshot of this index soon, as after a
    train record: a removal that rebuilt an HNSW graph would rebuild it
    again when its record is replayed at the next start.                 */
void fpx_wal_snapshot_soon (fpx_wal_t *wal);

/*  Writes a snapshot of entry (taking its shared lock: searches go on,
    writers wait) and drops the log it covers. 0, FPX_EIO.              */
int fpx_storage_snapshot (fpx_entry_t *entry, char *err, size_t err_size);

/*  Starts the background thread that snapshots logs past their age
    threshold (fpx_storage_destroy stops it). 0 or -1.                   */
int fpx_storage_start_snapshotter (fpx_storage_t *self);

void fpx_wal_destroy (fpx_wal_t **self_p);

/*  Bytes the index's files hold on disk, as counted to its tenant's
    max_disk_mb: its snapshot and the log written since. Any thread.     */
long long fpx_wal_disk_bytes (fpx_wal_t *wal);

/*  CRC-32C (Castagnoli) of size bytes, continuing from crc (0 to start). */
uint32_t fpx_crc32c (uint32_t crc, const void *data, size_t size);

#endif
