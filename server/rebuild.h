/*  rebuild.h — remove_ids on large HNSW indexes, in the background.

    FAISS 1.7.3's HNSW graphs cannot lose a node: a removal rebuilds the
    graph from the vectors kept (faiss_shim.h). Under an index of
    --rebuild-background-min vectors or more, remove_ids logs the removal,
    copies what the rebuild needs under the exclusive lock, marks the
    removed vectors as tombstones on the entry (entry->pending) and
    answers at once; a thread of this module builds the new graph and
    swaps it in under the exclusive lock. Meanwhile:
      - search and search_and_reconstruct of the index skip the tombstones
        (fpx_entry_lock_filtered), reconstruct takes the rebuilt index's
        positions, describe and get_attr ntotal count without them;
      - add and add_with_ids go to the old graph at once and, from a
        copy, to the new one right after the swap (ops.c, faiss_shim.h);
      - every other call on it (other writes, reconstruct, serialize,
        views…) waits for the swap (fpx_entry_lock_settled), as it would
        wait for the exclusive lock of a synchronous rebuild;
      - snapshots skip it (the log keeps the removal; storage.c).
    One rebuild at a time per index (a second removal waits), at most
    FPX_REBUILDS_MAX in the server (past it, a removal rebuilds in its
    own request, as below the threshold).

    The rebuilds of one server are an object, fpx_rebuilds_t (owned by
    fpx_server_t); calls given an entry reach it through entry->parts
    (entry.h, registry.h), so that an entry of a registry without one
    removes synchronously.
    This module must not hold its mutex while it takes an entry lock.
    Thread-safe.
*/
#ifndef FPX_REBUILD_H_INCLUDED
#define FPX_REBUILD_H_INCLUDED

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <faiss/c_api/impl/AuxIndexStructures_c.h>

#include "faiss_shim.h"
#include "registry.h"

#define FPX_REBUILDS_MAX 2         //  background rebuilds running at once

typedef struct fpx_rebuilds_t fpx_rebuilds_t;

/*  The background rebuilds of one server: indexes of at least
    min_vectors rebuild in the background (0: never). Returns the object
    (caller owns; give it to the registry's parts before entries are
    made), or NULL when out of memory.                                    */
fpx_rebuilds_t *fpx_rebuilds_new (int64_t min_vectors);

/*  Waits for every running rebuild (as fpx_rebuilds_join), then frees
    the object; after the registry, whose entries point to it. NULL is
    fine; clears *self_p.                                                 */
void fpx_rebuilds_destroy (fpx_rebuilds_t **self_p);

/*  Under entry's exclusive lock, its log record appended: starts the
    removal of selector's ids in the background when the index is large
    enough, an owner (not an alias) and a rebuild slot is free. Returns 1
    when it did not (the caller removes synchronously), 0 with *removed
    set (the tombstones in place, the thread started), or an error
    (FPX_ENOMEM with *need over cap; the index unchanged).               */
int fpx_rebuild_start (fpx_entry_t *entry, const FaissIDSelector *selector, size_t cap,
                       size_t *removed, size_t *need, char *err, size_t err_size);

/*  fpx_entry_lock for calls that must see the index whole: waits
    (without the lock) while a background removal on it is pending.     */
pthread_rwlock_t *fpx_entry_lock_settled (fpx_entry_t *entry, bool exclusive);

/*  fpx_entry_lock for searches that filter tombstones (and adds, which
    the swap applies again): *pending_p is the
    pending removal to filter (NULL when none). An alias of an index
    with one pending waits instead (its labels are another object's).   */
pthread_rwlock_t *fpx_entry_lock_filtered (fpx_entry_t *entry, bool exclusive,
                                           const fpx_shim_rebuild_t **pending_p);

/*  Waits until no background removal is pending on entry's object. No
    lock held.                                                           */
void fpx_rebuild_wait (fpx_entry_t *entry);

/*  Waits for every background rebuild to land (shutdown, after the
    workers stopped, before the last snapshots and the registry's free). */
void fpx_rebuilds_join (fpx_rebuilds_t *self);

#endif
