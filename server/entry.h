/*  entry.h — the fields of a registry entry (registry.h), for the parts
    that keep its state: the registry itself, storage (logs, snapshots,
    recovery), the memory budget (eviction and reload), background
    rebuilds and the tenants' usage counters, and the fuzz targets that
    check them. The opcode handlers (ops.c, ops_objects.c, info.c,
    transfers.c) and the metrics renderer do not include this header:
    they read an entry through registry.h's accessors (make check fails
    when they include it).                                               */
#ifndef FPX_ENTRY_H_INCLUDED
#define FPX_ENTRY_H_INCLUDED

#include "registry.h"

typedef struct fpx_entry_t fpx_entry_t;
struct fpx_entry_t {
    char name [FPX_NAME_MAX + 1];
    uint32_t tenant;
    uint64_t owner_conn;           //  0: named; else the owning connection
    FaissIndex *index;             //  one of index / transform is set;
    FaissVectorTransform *transform;  //  owned unless the entry has a root
    _Atomic (fpx_entry_t *) root;  //  alias: the entry owning our object
    pthread_rwlock_t lock;         //  shared: reads; exclusive: mutations
    atomic_int refcount;           //  the registry's link counts as one
    char factory [FPX_FACTORY_MAX];
    int d;
    int metric;
    struct fpx_wal_t *wal;         //  named indexes with a data directory
    char damaged [256];            //  non-empty: unusable, this is why
    atomic_llong charged_vectors;  //  what tenant_limits.c counts for the object
    atomic_llong charged_bytes;    //  (owners only; see tenant_limits.h)
    fpx_entry_t *next;             //  hash chain, under the registry lock
    atomic_bool linked;            //  still in the table (not dropped)
    atomic_ullong used_at;         //  last lookup, for the budget's LRU order
    //  Memory budget (budget.h): a named index whose object was freed, its
    //  snapshot current. index is NULL; what describe needs is kept here.
    //  Written under the exclusive lock, read under the lock (evicted is
    //  atomic so that the budget can skip evicted entries without it).
    atomic_bool evicted;
    int64_t evicted_ntotal;
    bool evicted_trained;
    char evicted_class [64];
    //  A removal whose HNSW graph is rebuilt in the background (rebuild.h):
    //  set and cleared under the exclusive lock, on the owner entry only.
    _Atomic (struct fpx_shim_rebuild_t *) pending;
    fpx_registry_parts_t parts;    //  its registry's, copied at insertion
};

#endif
