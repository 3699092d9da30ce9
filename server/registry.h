/*  registry.h — tenant → index name → entry.

    The registry maps (tenant, name) to an entry holding one FAISS index, its
    rwlock and its description. Lookups return a counted reference: an entry
    dropped while calls are running on it is unlinked at once (new lookups
    miss it) and freed when the last reference goes.

    Anonymous entries (owner_conn != 0) are visible only to that connection.

    An entry holds a FAISS index or a vector transform. It may be an alias:
    its object then lives inside another entry's object (the quantizer of an
    IVF index, the sub-index of an IDMap, …), that entry owns it, and the
    alias's calls take the lock of the topmost owner. An entry becomes an
    alias when a composite index adopts its object (fpx_registry_adopt), or
    is created as one (a view of a sub-object).

    A named, durable entry may be evicted under the memory budget
    (budget.h): its index is then NULL, the entry and its log stay, and
    whoever holds a counted reference obtained through fpx_budget_acquire
    keeps it loaded.

    Nothing here calls FAISS except the free of the last release.
    Thread-safe: the map is under one rwlock held only for the lookup itself.
*/
#ifndef FPX_REGISTRY_H_INCLUDED
#define FPX_REGISTRY_H_INCLUDED

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <faiss/c_api/Index_c.h>
#include <faiss/c_api/VectorTransform_c.h>

#include "fpx_protocol.h"

/*  The server parts that calls given only an entry reach through it
    (the entry's parts, entry.h): set on the registry before its first
    entry is made and copied into each entry as it is inserted, so that
    two servers in one process each reach their own. Borrowed: each part
    outlives every entry of the registry. Any may be NULL (a bare
    registry, as the registry fuzz target's): then nothing is counted,
    every removal is synchronous, and no budget evicts.                  */
struct fpx_rebuilds_t;
struct fpx_budget_t;
struct fpx_limits_t;
typedef struct {
    struct fpx_limits_t *limits;        //  tenants' usage (tenant_limits.h)
    struct fpx_rebuilds_t *rebuilds;    //  background HNSW rebuilds (rebuild.h)
    struct fpx_budget_t *budget;        //  the memory budget (budget.h)
} fpx_registry_parts_t;

/*  An entry is opaque outside the parts that keep its state (registry,
    storage, budget, rebuild, tenant limits: entry.h); the opcode handlers
    read what they need through the accessors below.                     */
typedef struct fpx_entry_t fpx_entry_t;

typedef struct fpx_registry_t fpx_registry_t;

fpx_registry_t *fpx_registry_new (void);
void fpx_registry_destroy (fpx_registry_t **self_p);

/*  Sets the parts later entries reach (copied); before the first insert. */
void fpx_registry_set_parts (fpx_registry_t *self, const fpx_registry_parts_t *parts);

/*  The parts set (all NULL when none were). Borrowed.                   */
const fpx_registry_parts_t *fpx_registry_parts (const fpx_registry_t *self);

/*  What a new entry holds: an index or a transform (exactly one), owned
    by the entry unless root is set (then root's object contains it and the
    entry keeps a counted reference to root).                            */
typedef struct {
    FaissIndex *index;
    FaissVectorTransform *transform;
    fpx_entry_t *root;
    const char *factory;           //  description kept for describe; may be NULL
    struct fpx_wal_t *wal;         //  durable named index: its log (owned)
    const char *damaged;           //  no object: why it could not be loaded
    const struct fpx_evicted_meta_t *evicted;   //  no object: on disk only
} fpx_object_t;

/*  What an evicted index's entry keeps in place of its object.          */
typedef struct fpx_evicted_meta_t {
    int d;
    int metric;
    int64_t ntotal;
    bool is_trained;
    char class_name [64];
} fpx_evicted_meta_t;

/*  Creates an entry for object, taking ownership on success only (on
    failure the caller still owns it; fpx_object_free frees a plain one).
    name NULL makes it anonymous: a fresh "@…" name owned by owner_conn.
    On success *entry_p is a counted reference for the caller.
    FPX_EEXIST if the name is taken in that tenant, FPX_ENOMEM.          */
int fpx_registry_insert (fpx_registry_t *self, uint32_t tenant, const char *name,
                         uint64_t owner_conn, const fpx_object_t *object,
                         fpx_entry_t **entry_p);

/*  Frees an object that no entry took: its index or transform, or its
    reference to root.                                                   */
void fpx_object_free (const fpx_object_t *object);

/*  Makes child an alias of root, whose object now owns child's object.
    The caller holds child's lock exclusively and has checked that child
    is a standalone anonymous entry.                                     */
void fpx_registry_adopt (fpx_entry_t *child, fpx_entry_t *root);

/*  The reverse: child, an alias of root whose object root's object no
    longer contains, owns its object again and drops its reference to
    root. The caller holds root's lock and child's own lock exclusively
    (no one else can hold the latter while child is an alias); then
    measures both.                                                       */
void fpx_registry_detach (fpx_entry_t *child);

/*  The entry that owns entry's object at the top of the alias chain
    (entry itself when it is not an alias). Borrowed.                    */
fpx_entry_t *fpx_entry_owner (fpx_entry_t *entry);

/*  Locks the lock that guards entry's object (its topmost owner's),
    shared or exclusive; returns it for pthread_rwlock_unlock.           */
pthread_rwlock_t *fpx_entry_lock (fpx_entry_t *entry, bool exclusive);

/*  Counted reference to the entry, or NULL if missing in this tenant or
    owned by another connection.                                         */
fpx_entry_t *fpx_registry_find (fpx_registry_t *self, uint32_t tenant,
                                const char *name, uint64_t conn);

/*  Unlinks the entry (same visibility rule as find). FPX_ENOTFOUND.     */
int fpx_registry_remove (fpx_registry_t *self, uint32_t tenant,
                         const char *name, uint64_t conn);

/*  Unlinks every entry owned by conn; returns how many.                 */
size_t fpx_registry_reap (fpx_registry_t *self, uint64_t conn);

/*  Sorted names of the tenant's named entries. *names_p is malloc'd, each
    string too; free with fpx_registry_names_free. Returns count or -1.  */
long fpx_registry_names (fpx_registry_t *self, uint32_t tenant, char ***names_p);
void fpx_registry_names_free (char **names, long count);

/*  Counted references to every named entry of every tenant; *entries_p
    is malloc'd (free it after releasing each). Returns count or -1.     */
long fpx_registry_named (fpx_registry_t *self, fpx_entry_t ***entries_p);

/*  Counted references to the named entries of one tenant, sorted by
    name; as fpx_registry_named otherwise.                               */
long fpx_registry_named_of (fpx_registry_t *self, uint32_t tenant, fpx_entry_t ***entries_p);

/*  Locks and returns the name lock of (tenant, name) in this registry;
    the caller unlocks it. Held across create, drop and save of a named
    index (and the background snapshot, storage.h), so that they on one
    name run one at a time, in the order they were acknowledged
    (docs/SECURITY.md). Striped: two names may share a lock. Never take
    an entry lock before it.                                             */
pthread_mutex_t *fpx_registry_name_lock (fpx_registry_t *self, uint32_t tenant, const char *name);

/*  As fpx_registry_name_lock, but NULL at once when it is taken.        */
pthread_mutex_t *fpx_registry_name_lock_try (fpx_registry_t *self, uint32_t tenant,
                                             const char *name);

/*  Marks entry as used now (the memory budget's LRU order).             */
void fpx_entry_touch (fpx_entry_t *entry);

/*  Drops a counted reference; the last one frees the entry and index.   */
void fpx_entry_release (fpx_entry_t **entry_p);

/*  What an entry holds. index / transform: exactly one is set, unless
    the entry is evicted (index NULL, see fpx_entry_evicted) or damaged;
    read them under the entry's lock (fpx_entry_lock), as its object.
    owner_conn: 0 for a named entry, else the connection that owns it.
    root: the entry whose object contains this one's (an alias), or NULL.
    wal: the log of a durable named index, or NULL. damaged: "" unless
    the entry cannot be used, then why. pending: the removal being
    rebuilt in the background (rebuild.h), or NULL. charged: what
    tenant_limits.h counts for the object (owners only).                */
FaissIndex *fpx_entry_index (const fpx_entry_t *entry);
FaissVectorTransform *fpx_entry_transform (const fpx_entry_t *entry);
const char *fpx_entry_name (const fpx_entry_t *entry);
uint32_t fpx_entry_tenant (const fpx_entry_t *entry);
uint64_t fpx_entry_owner_conn (const fpx_entry_t *entry);
int fpx_entry_d (const fpx_entry_t *entry);
int fpx_entry_metric (const fpx_entry_t *entry);
const char *fpx_entry_factory (const fpx_entry_t *entry);
fpx_entry_t *fpx_entry_root (const fpx_entry_t *entry);
struct fpx_wal_t *fpx_entry_wal (const fpx_entry_t *entry);
const char *fpx_entry_damaged (const fpx_entry_t *entry);
struct fpx_shim_rebuild_t *fpx_entry_pending (const fpx_entry_t *entry);
long long fpx_entry_charged_bytes (const fpx_entry_t *entry);
long long fpx_entry_charged_vectors (const fpx_entry_t *entry);

/*  True if entry is a named index evicted under the memory budget; then
    *meta (may be NULL) receives what describe says of it. Under the
    entry's lock.                                                        */
bool fpx_entry_evicted (const fpx_entry_t *entry, fpx_evicted_meta_t *meta /* OUT */);

/*  Locks entry's own lock exclusively, not its owner's: for an alias
    leaving its owner (fpx_registry_detach), whose owner's lock the
    caller already holds. Returns it for pthread_rwlock_unlock.          */
pthread_rwlock_t *fpx_entry_lock_own (fpx_entry_t *entry);

#endif
