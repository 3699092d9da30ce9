/*  registry.h — tenant → index name → entry.

    The registry maps (tenant, name) to an entry holding one FAISS index, its
    rwlock and its description. Lookups return a counted reference: an entry
    dropped while calls are running on it is unlinked at once (new lookups
    miss it) and freed when the last reference goes.

    Anonymous entries (owner_conn != 0) are visible only to that connection.
    Nothing here calls FAISS except faiss_Index_free on the last release.
    Thread-safe: the map is under one rwlock held only for the lookup itself.
*/
#ifndef FPX_REGISTRY_H_INCLUDED
#define FPX_REGISTRY_H_INCLUDED

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <faiss/c_api/Index_c.h>

#include "fpx_protocol.h"

typedef struct fpx_entry_t fpx_entry_t;
struct fpx_entry_t {
    char name [FPX_NAME_MAX + 1];
    uint32_t tenant;
    uint64_t owner_conn;           //  0: named; else the owning connection
    FaissIndex *index;             //  owned
    pthread_rwlock_t lock;         //  shared: searches; exclusive: mutations
    atomic_int refcount;           //  the registry's link counts as one
    char factory [FPX_FACTORY_MAX];
    int d;
    int metric;
    fpx_entry_t *next;             //  hash chain, under the registry lock
};

typedef struct fpx_registry_t fpx_registry_t;

fpx_registry_t *fpx_registry_new (void);
void fpx_registry_destroy (fpx_registry_t **self_p);

/*  Creates an entry that takes ownership of index (freed on failure too).
    name NULL makes it anonymous: a fresh "@…" name owned by owner_conn.
    On success *entry_p is a counted reference for the caller.
    FPX_EEXIST if the name is taken in that tenant, FPX_ENOMEM.          */
int fpx_registry_insert (fpx_registry_t *self, uint32_t tenant, const char *name,
                         uint64_t owner_conn, FaissIndex *index, const char *factory,
                         fpx_entry_t **entry_p);

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

/*  Drops a counted reference; the last one frees the entry and index.   */
void fpx_entry_release (fpx_entry_t **entry_p);

#endif
