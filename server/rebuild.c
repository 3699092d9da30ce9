/*  rebuild.c — remove_ids on large HNSW indexes, in the background
    (rebuild.h; the FAISS side is shim_remove.cpp's fpx_shim_remove_begin).

    One detached thread per rebuild, at most FPX_REBUILDS_MAX at once.
    Each holds a counted reference to its entry, so a drop (which only
    unlinks the name) or a budget eviction (which wants nobody else's
    reference) can never free the index under it. Waiters sleep on one
    condition, broadcast whenever a removal lands.
*/
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "entry.h"
#include "log.h"
#include "rebuild.h"
#include "storage.h"
#include "tenant_limits.h"

struct fpx_rebuilds_t {
    pthread_mutex_t mu;
    pthread_cond_t landed;         //  a removal landed, or a thread ended
    int running;                   //  threads started and not yet ended
    int64_t min_vectors;
};

typedef struct {
    fpx_rebuilds_t *rebuilds;
    fpx_entry_t *entry;            //  counted reference
    fpx_shim_rebuild_t *pending;   //  also entry->pending until it lands
} s_job_t;

fpx_rebuilds_t *
fpx_rebuilds_new (int64_t min_vectors)
{
    fpx_rebuilds_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    pthread_mutex_init (&self->mu, NULL);
    pthread_cond_init (&self->landed, NULL);
    self->min_vectors = min_vectors;
    return self;
}

void
fpx_rebuilds_destroy (fpx_rebuilds_t **self_p)
{
    fpx_rebuilds_t *self = *self_p;
    if (!self)
        return;
    fpx_rebuilds_join (self);
    pthread_cond_destroy (&self->landed);
    pthread_mutex_destroy (&self->mu);
    free (self);
    *self_p = NULL;
}

//  One rebuild thread fewer (or a slot taken and not used).
static void
s_ended (fpx_rebuilds_t *self)
{
    pthread_mutex_lock (&self->mu);
    self->running--;
    pthread_cond_broadcast (&self->landed);
    pthread_mutex_unlock (&self->mu);
}

//  Builds the graph, then swaps it in under the exclusive lock and adds
//  again what was added meanwhile. A build that fails (out of memory: the
//  memory was checked at the start, but the machine is shared) cannot
//  leave the tombstones in place for ever,
//  since writers wait for them to go: the index is marked damaged (the
//  log still holds the removal, which the next start replays).
static void *
s_run (void *arg)
{
    s_job_t *job = arg;
    fpx_rebuilds_t *self = job->rebuilds;
    fpx_entry_t *entry = job->entry;
    char err [FPX_ERROR_TEXT_MAX];
    int rc = fpx_shim_rebuild_build (job->pending, err, sizeof err);
    pthread_rwlock_t *lock = fpx_entry_lock (entry, true);
    if (rc == 0)
        rc = fpx_shim_rebuild_commit (job->pending, err, sizeof err);
    if (rc) {
        fpx_log (FPX_LOG_ERROR, "background rebuild of index %s failed: %s", entry->name, err);
        snprintf (entry->damaged, sizeof entry->damaged, "its HNSW graph could not be rebuilt "
                  "after remove_ids (%s); restart the server to replay the removal", err);
    }
    atomic_store (&entry->pending, NULL);
    if (rc == 0)
        fpx_limits_measure (entry);
    pthread_rwlock_unlock (lock);
    //  The new graph goes to disk soon: a restart would rebuild it again
    //  from the log record otherwise.
    if (rc == 0 && entry->wal && atomic_load (&entry->linked))
        fpx_wal_snapshot_soon (entry->wal);
    fpx_shim_rebuild_destroy (&job->pending);
    fpx_entry_release (&job->entry);
    free (job);
    s_ended (self);
    return NULL;
}

int
fpx_rebuild_start (fpx_entry_t *entry, const FaissIDSelector *selector, size_t cap,
                   size_t *removed, size_t *need, char *err, size_t err_size)
{
    fpx_rebuilds_t *self = entry->parts.rebuilds;
    if (!self || self->min_vectors <= 0 || atomic_load (&entry->root) || !entry->index
    ||  atomic_load (&entry->pending))
        return 1;
    pthread_mutex_lock (&self->mu);
    bool slot = self->running < FPX_REBUILDS_MAX;
    if (slot)
        self->running++;
    pthread_mutex_unlock (&self->mu);
    if (!slot)
        return 1;
    fpx_shim_rebuild_t *pending = NULL;
    int rc = fpx_shim_remove_begin (entry->index, selector, cap, self->min_vectors,
                                    removed, need, &pending, err, err_size);
    s_job_t *job = NULL;
    if (rc == 0 && pending) {
        job = malloc (sizeof *job);
        if (!job) {
            snprintf (err, err_size, "out of memory");
            rc = FPX_ENOMEM;
        }
    }
    if (rc == 0 && pending) {
        atomic_fetch_add (&entry->refcount, 1);
        *job = (s_job_t) { .rebuilds = self, .entry = entry, .pending = pending };
        atomic_store (&entry->pending, pending);
        pthread_attr_t attr;
        pthread_attr_init (&attr);
        pthread_attr_setdetachstate (&attr, PTHREAD_CREATE_DETACHED);
        pthread_t thread;
        if (pthread_create (&thread, &attr, s_run, job) == 0) {
            pthread_attr_destroy (&attr);
            return 0;
        }
        pthread_attr_destroy (&attr);
        //  No thread: the caller rebuilds synchronously instead.
        atomic_store (&entry->pending, NULL);
        fpx_entry_release (&job->entry);
        *removed = 0;
        rc = 1;
    }
    free (job);
    fpx_shim_rebuild_destroy (&pending);
    s_ended (self);
    return rc;
}

void
fpx_rebuild_wait (fpx_entry_t *entry)
{
    fpx_entry_t *owner = fpx_entry_owner (entry);
    fpx_rebuilds_t *self = owner->parts.rebuilds;
    if (!self)
        return;                    //  nothing is ever pending then
    pthread_mutex_lock (&self->mu);
    while (atomic_load (&owner->pending))
        pthread_cond_wait (&self->landed, &self->mu);
    pthread_mutex_unlock (&self->mu);
}

pthread_rwlock_t *
fpx_entry_lock_settled (fpx_entry_t *entry, bool exclusive)
{
    while (true) {
        pthread_rwlock_t *lock = fpx_entry_lock (entry, exclusive);
        if (!atomic_load (&fpx_entry_owner (entry)->pending))
            return lock;
        pthread_rwlock_unlock (lock);
        fpx_rebuild_wait (entry);
    }
}

pthread_rwlock_t *
fpx_entry_lock_filtered (fpx_entry_t *entry, bool exclusive,
                         const fpx_shim_rebuild_t **pending_p)
{
    while (true) {
        pthread_rwlock_t *lock = fpx_entry_lock (entry, exclusive);
        fpx_entry_t *owner = fpx_entry_owner (entry);
        *pending_p = atomic_load (&owner->pending);
        if (!*pending_p || owner == entry)
            return lock;
        pthread_rwlock_unlock (lock);
        fpx_rebuild_wait (entry);
    }
}

void
fpx_rebuilds_join (fpx_rebuilds_t *self)
{
    pthread_mutex_lock (&self->mu);
    while (self->running > 0)
        pthread_cond_wait (&self->landed, &self->mu);
    pthread_mutex_unlock (&self->mu);
}
