/*  budget.c — the memory budget: LRU eviction of named indexes and their
    load on demand (budget.h). The mechanics of both (snapshot, free,
    checked read) are storage.c's; this file decides when and which.

    Why a reference pins an index: eviction (storage.c) takes the entry's
    exclusive lock and evicts only when the registry's link and the
    evicting thread's are the only references. A request takes its
    reference first, then looks at the object under the entry's lock
    (fpx_budget_acquire): either eviction saw that reference, or the
    request waits for eviction to finish and finds the index evicted,
    and loads it.
*/
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "entry.h"
#include "budget.h"
#include "clock.h"
#include "log.h"
#include "storage.h"
#include "tenant_limits.h"

struct fpx_budget_t {
    fpx_registry_t *registry;
    size_t bytes;
    pthread_mutex_t mu;            //  one enforcer at a time
    atomic_ullong evictions, loads, load_failures;
    atomic_ullong evict_us, load_us;
};

fpx_budget_t *
fpx_budget_new (fpx_registry_t *registry, size_t bytes)
{
    fpx_budget_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->registry = registry;
    self->bytes = bytes;
    pthread_mutex_init (&self->mu, NULL);
    return self;
}

void
fpx_budget_destroy (fpx_budget_t **self_p)
{
    fpx_budget_t *self = *self_p;
    if (!self)
        return;
    pthread_mutex_destroy (&self->mu);
    free (self);
    *self_p = NULL;
}

bool
fpx_budget_enabled (fpx_budget_t *self)
{
    return self && self->bytes > 0;
}

//  What the indexes in memory hold, as the registry's limits count it.
static long long
s_loaded (fpx_budget_t *self)
{
    return fpx_limits_loaded_bytes (fpx_registry_parts (self->registry)->limits);
}

static bool
s_fits (fpx_budget_t *self, size_t need)
{
    return s_loaded (self) + (long long) need <= (long long) self->bytes;
}

bool
fpx_budget_fits (fpx_budget_t *self, size_t need)
{
    return !fpx_budget_enabled (self) || s_fits (self, need);
}

typedef struct {
    uint64_t used_at;
    fpx_entry_t *entry;
} s_candidate_t;

static int
s_compare_use (const void *a, const void *b)
{
    uint64_t x = ((const s_candidate_t *) a)->used_at, y = ((const s_candidate_t *) b)->used_at;
    return x < y ? -1 : x > y;
}

void
fpx_budget_enforce (fpx_budget_t *self, size_t need)
{
    if (!fpx_budget_enabled (self) || !self->registry || s_fits (self, need))
        return;
    //  After a request (need 0), when another thread is evicting already,
    //  leave it to that one: over a budget that nothing more can be
    //  evicted from, requests would otherwise queue here one by one.
    if (need == 0) {
        if (pthread_mutex_trylock (&self->mu))
            return;
    }
    else
        pthread_mutex_lock (&self->mu);
    fpx_entry_t **entries;
    long count = fpx_registry_named (self->registry, &entries);
    s_candidate_t *candidates = count > 0 ? malloc ((size_t) count * sizeof *candidates) : NULL;
    long ncandidates = 0;
    for (long i = 0; candidates && i < count; i++) {
        fpx_entry_t *entry = entries [i];
        if (entry->wal && !atomic_load (&entry->evicted) && !entry->damaged [0])
            candidates [ncandidates++] = (s_candidate_t) { atomic_load (&entry->used_at), entry };
    }
    if (candidates)
        qsort (candidates, (size_t) ncandidates, sizeof *candidates, s_compare_use);
    size_t freed = 0;
    for (long i = 0; i < ncandidates && !s_fits (self, need); i++) {
        char err [FPX_ERROR_TEXT_MAX];
        double started = fpx_monotonic_seconds ();
        int rc = fpx_storage_evict (candidates [i].entry, err, sizeof err);
        if (rc == 0) {
            double took = fpx_monotonic_seconds () - started;
            atomic_fetch_add (&self->evictions, 1);
            atomic_fetch_add (&self->evict_us, (unsigned long long) (took * 1e6));
            freed++;
            fpx_log (took >= 1 ? FPX_LOG_INFO : FPX_LOG_DEBUG, "evicted %s (memory budget) "
                     "in %.3f s", candidates [i].entry->name, took);
        }
        else if (rc < 0)
            fpx_log (FPX_LOG_ERROR, "cannot evict %s: %s", candidates [i].entry->name, err);
    }
    if (!s_fits (self, need))
        fpx_log (FPX_LOG_DEBUG, "memory budget passed: %lld MiB in memory (+%zu MiB needed), "
                 "nothing more can be evicted now", s_loaded (self) >> 20, need >> 20);
    for (long i = 0; i < count; i++)
        fpx_entry_release (&entries [i]);
    if (count >= 0)
        free (entries);
    free (candidates);
    pthread_mutex_unlock (&self->mu);
    //  FAISS's small allocations go back to the system too.
    if (freed)
        malloc_trim (0);
}

int
fpx_budget_acquire (fpx_entry_t *entry, char *err, size_t err_size)
{
    fpx_budget_t *self = entry->parts.budget;
    if (!fpx_budget_enabled (self) || !entry->wal)
        return 0;
    fpx_entry_touch (entry);
    pthread_rwlock_t *lock = fpx_entry_lock (entry, false);
    bool evicted = entry->evicted;
    pthread_rwlock_unlock (lock);
    if (!evicted)
        return 0;
    fpx_budget_enforce (self, (size_t) atomic_load (&entry->charged_bytes));
    lock = fpx_entry_lock (entry, true);
    int rc = 0;
    if (entry->evicted) {
        double started = fpx_monotonic_seconds ();
        rc = fpx_storage_load (entry, err, err_size);
        double took = fpx_monotonic_seconds () - started;
        if (rc == 0) {
            atomic_fetch_add (&self->loads, 1);
            atomic_fetch_add (&self->load_us, (unsigned long long) (took * 1e6));
            fpx_log (took >= 1 ? FPX_LOG_INFO : FPX_LOG_DEBUG, "loaded %s back (memory budget) "
                     "in %.3f s", entry->name, took);
        }
        else
            atomic_fetch_add (&self->load_failures, 1);
    }
    pthread_rwlock_unlock (lock);
    return rc;
}

void
fpx_budget_stats (fpx_budget_t *self, fpx_budget_stats_t *stats)
{
    *stats = (fpx_budget_stats_t) { 0 };
    if (!self)
        return;
    stats->loaded_bytes = s_loaded (self);
    stats->evictions = atomic_load (&self->evictions);
    stats->loads = atomic_load (&self->loads);
    stats->load_failures = atomic_load (&self->load_failures);
    stats->evict_seconds = (double) atomic_load (&self->evict_us) * 1e-6;
    stats->load_seconds = (double) atomic_load (&self->load_us) * 1e-6;
    stats->budget = self->bytes;
}
