/*  budget.h — the memory budget (--memory-budget-mb): more named indexes
    than fit in memory.

    Named indexes count what the tenant limits measure (their serialized
    size). When the indexes in memory pass the budget, the least recently
    used named ones are evicted: their snapshot made current (the log
    empty), their FAISS object freed, their entry kept with what describe
    shows ("loaded" false). A request that needs an evicted index loads it
    back first, after making room for it, under the entry's exclusive
    lock, through recovery's checked reader (storage.h).

    Never evicted: anonymous indexes, an index with a view or alias into
    it, one a request holds (a counted reference besides the registry's),
    a damaged one. When nothing more can be evicted the budget is passed
    rather than a request refused.

    Without a budget (0 bytes, or no fpx_budget_t: NULL) every call here
    returns at once: behaviour is as if this module did not exist. One
    budget per server (fpx_server_t owns it); calls given only an entry
    reach it through entry->parts (entry.h, registry.h).
    Thread-safe: evictions run one at a time under one mutex, which is
    never held by a thread that holds an entry lock.
*/
#ifndef FPX_BUDGET_H_INCLUDED
#define FPX_BUDGET_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "registry.h"

typedef struct fpx_budget_t fpx_budget_t;

/*  A budget of `bytes` (0: none) over registry's named indexes, which it
    evicts from (borrowed: it outlives the budget; its parts' limits
    measure what is loaded). Returns it (caller owns), or NULL when out
    of memory.                                                           */
fpx_budget_t *fpx_budget_new (fpx_registry_t *registry, size_t bytes);

/*  Frees it (after the workers stopped); NULL is fine; clears *self_p.  */
void fpx_budget_destroy (fpx_budget_t **self_p);

bool fpx_budget_enabled (fpx_budget_t *self);

/*  Whether `need` more bytes fit beside the indexes in memory (true
    without a budget).                                                   */
bool fpx_budget_fits (fpx_budget_t *self, size_t need);

/*  Evicts least recently used named indexes until those in memory plus
    `need` bytes fit the budget, or nothing more can go. Call it holding
    no entry lock.                                                        */
void fpx_budget_enforce (fpx_budget_t *self, size_t need);

/*  Marks entry used now and, if it is evicted, loads it back (making room
    first), under the budget of entry's registry (entry->parts). The
    caller holds a counted reference and no lock; while it holds that
    reference the index stays loaded. Returns 0, or FPX_EDAMAGED /
    FPX_EIO with err set.                                                */
int fpx_budget_acquire (fpx_entry_t *entry, char *err, size_t err_size);

/*  Counters since start, for the metrics.                               */
typedef struct {
    uint64_t evictions;
    uint64_t loads;
    uint64_t load_failures;
    double evict_seconds;          //  total time spent evicting
    double load_seconds;           //  … and loading back
    size_t budget;                 //  bytes; 0: none
    long long loaded_bytes;        //  serialized bytes of the objects in memory
} fpx_budget_stats_t;

void fpx_budget_stats (fpx_budget_t *self, fpx_budget_stats_t *stats /* OUT */);

#endif
