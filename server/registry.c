/*  registry.c — see registry.h. A chained hash table keyed by
    (tenant, name), grown by doubling; the table lock is never held across
    FAISS calls or I/O.                                                  */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "entry.h"
#include "storage.h"
#include "tenant_limits.h"

#define S_NAME_LOCKS 64             //  stripes of the name locks

struct fpx_registry_t {
    pthread_rwlock_t lock;
    fpx_entry_t **buckets;
    size_t nbuckets;               //  power of two
    size_t count;
    atomic_ullong next_anonymous;
    fpx_registry_parts_t parts;    //  copied into each new entry
    pthread_mutex_t name_locks [S_NAME_LOCKS];  //  by hash of (tenant, name)
};

static uint64_t
s_hash (uint32_t tenant, const char *name)
{
    uint64_t h = 1469598103934665603ull ^ tenant;     //  FNV-1a
    for (const unsigned char *p = (const unsigned char *) name; *p; p++)
        h = (h ^ *p) * 1099511628211ull;
    return h;
}

fpx_registry_t *
fpx_registry_new (void)
{
    fpx_registry_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->nbuckets = 64;
    self->buckets = calloc (self->nbuckets, sizeof *self->buckets);
    if (!self->buckets) {
        free (self);
        return NULL;
    }
    pthread_rwlock_init (&self->lock, NULL);
    for (int i = 0; i < S_NAME_LOCKS; i++)
        pthread_mutex_init (&self->name_locks [i], NULL);
    //  Anonymous names start at a random point: a client that reconnects
    //  silently to a restarted server must not reach another's "@1".
    unsigned long long start = 0;
    FILE *source = fopen ("/dev/urandom", "rb");
    if (!source || fread (&start, sizeof start, 1, source) != 1)
        start = (unsigned long long) time (NULL) << 20;
    if (source)
        fclose (source);
    atomic_init (&self->next_anonymous, (start >> 16) | 1);
    return self;
}

void
fpx_registry_destroy (fpx_registry_t **self_p)
{
    fpx_registry_t *self = *self_p;
    if (!self)
        return;
    for (size_t b = 0; b < self->nbuckets; b++)
        while (self->buckets [b]) {
            fpx_entry_t *entry = self->buckets [b];
            self->buckets [b] = entry->next;
            fpx_entry_release (&entry);
        }
    free (self->buckets);
    pthread_rwlock_destroy (&self->lock);
    for (int i = 0; i < S_NAME_LOCKS; i++)
        pthread_mutex_destroy (&self->name_locks [i]);
    free (self);
    *self_p = NULL;
}

pthread_mutex_t *
fpx_registry_name_lock (fpx_registry_t *self, uint32_t tenant, const char *name)
{
    pthread_mutex_t *lock = &self->name_locks [s_hash (tenant, name) % S_NAME_LOCKS];
    pthread_mutex_lock (lock);
    return lock;
}

pthread_mutex_t *
fpx_registry_name_lock_try (fpx_registry_t *self, uint32_t tenant, const char *name)
{
    pthread_mutex_t *lock = &self->name_locks [s_hash (tenant, name) % S_NAME_LOCKS];
    return pthread_mutex_trylock (lock) == 0 ? lock : NULL;
}

void
fpx_registry_set_parts (fpx_registry_t *self, const fpx_registry_parts_t *parts)
{
    self->parts = *parts;
}

const fpx_registry_parts_t *
fpx_registry_parts (const fpx_registry_t *self)
{
    return &self->parts;
}

//  The entry whose lock guards entry's object: the end of the root chain.
static fpx_entry_t *
s_top (fpx_entry_t *entry)
{
    fpx_entry_t *root;
    while ((root = atomic_load (&entry->root)))
        entry = root;
    return entry;
}

fpx_entry_t *
fpx_entry_owner (fpx_entry_t *entry)
{
    return s_top (entry);
}

pthread_rwlock_t *
fpx_entry_lock (fpx_entry_t *entry, bool exclusive)
{
    //  The chain only grows at its top (a root adopted by a new composite),
    //  so re-check after locking and follow it if it moved meanwhile.
    while (true) {
        fpx_entry_t *top = s_top (entry);
        if (exclusive)
            pthread_rwlock_wrlock (&top->lock);
        else
            pthread_rwlock_rdlock (&top->lock);
        if (s_top (entry) == top)
            return &top->lock;
        pthread_rwlock_unlock (&top->lock);
    }
}

void
fpx_registry_adopt (fpx_entry_t *child, fpx_entry_t *root)
{
    atomic_fetch_add (&root->refcount, 1);
    atomic_store (&child->root, root);
    fpx_limits_entry_adopted (child);
}

void
fpx_registry_detach (fpx_entry_t *child)
{
    fpx_entry_t *root = atomic_exchange (&child->root, NULL);
    //  The caller's own reference keeps root alive past this release.
    fpx_entry_release (&root);
}

void
fpx_entry_touch (fpx_entry_t *entry)
{
    static atomic_ullong clock;
    atomic_store (&entry->used_at, atomic_fetch_add (&clock, 1) + 1);
}

void
fpx_entry_release (fpx_entry_t **entry_p)
{
    fpx_entry_t *entry = *entry_p;
    if (!entry)
        return;
    *entry_p = NULL;
    if (atomic_fetch_sub (&entry->refcount, 1) == 1) {
        fpx_entry_t *root = atomic_load (&entry->root);
        if (root)
            fpx_entry_release (&root);
        else if (entry->index)
            faiss_Index_free (entry->index);
        else if (entry->transform)
            faiss_VectorTransform_free (entry->transform);
        fpx_limits_entry_freed (entry);
        fpx_wal_destroy (&entry->wal);
        pthread_rwlock_destroy (&entry->lock);
        free (entry);
    }
}

//  Link slot of (tenant, name), under the table lock.
static fpx_entry_t **
s_slot (fpx_registry_t *self, uint32_t tenant, const char *name)
{
    fpx_entry_t **slot = &self->buckets [s_hash (tenant, name) & (self->nbuckets - 1)];
    while (*slot && ((*slot)->tenant != tenant || strcmp ((*slot)->name, name)))
        slot = &(*slot)->next;
    return slot;
}

static bool
s_visible (const fpx_entry_t *entry, uint64_t conn)
{
    return entry->owner_conn == 0 || entry->owner_conn == conn;
}

static void
s_grow (fpx_registry_t *self)
{
    size_t nbuckets = self->nbuckets * 2;
    fpx_entry_t **buckets = calloc (nbuckets, sizeof *buckets);
    if (!buckets)
        return;                    //  stays correct, only slower
    for (size_t b = 0; b < self->nbuckets; b++)
        while (self->buckets [b]) {
            fpx_entry_t *entry = self->buckets [b];
            self->buckets [b] = entry->next;
            size_t slot = s_hash (entry->tenant, entry->name) & (nbuckets - 1);
            entry->next = buckets [slot];
            buckets [slot] = entry;
        }
    free (self->buckets);
    self->buckets = buckets;
    self->nbuckets = nbuckets;
}

void
fpx_object_free (const fpx_object_t *object)
{
    fpx_entry_t *root = object->root;
    if (root)
        fpx_entry_release (&root);
    else if (object->index)
        faiss_Index_free (object->index);
    else if (object->transform)
        faiss_VectorTransform_free (object->transform);
    fpx_wal_t *wal = object->wal;
    fpx_wal_destroy (&wal);
}

int
fpx_registry_insert (fpx_registry_t *self, uint32_t tenant, const char *name,
                     uint64_t owner_conn, const fpx_object_t *object,
                     fpx_entry_t **entry_p)
{
    fpx_entry_t *entry = calloc (1, sizeof *entry);
    if (!entry)
        return FPX_ENOMEM;
    if (name)
        snprintf (entry->name, sizeof entry->name, "%s", name);
    else
        snprintf (entry->name, sizeof entry->name, "@%llx",
                  (unsigned long long) atomic_fetch_add (&self->next_anonymous, 1));
    entry->tenant = tenant;
    entry->parts = self->parts;
    entry->owner_conn = name ? 0 : owner_conn;
    entry->index = object->index;
    entry->transform = object->transform;
    atomic_init (&entry->root, object->root);
    snprintf (entry->factory, sizeof entry->factory, "%s", object->factory ? object->factory : "");
    entry->wal = object->wal;
    if (object->damaged)
        snprintf (entry->damaged, sizeof entry->damaged, "%s", object->damaged);
    if (entry->index) {
        entry->d = (int) faiss_Index_d (entry->index);
        entry->metric = (int) faiss_Index_metric_type (entry->index);
    }
    else if (entry->transform) {
        entry->d = faiss_VectorTransform_d_in (entry->transform);
        entry->metric = FPX_METRIC_L2;      //  as documented; meaningless here
    }
    else if (object->evicted) {
        entry->d = object->evicted->d;
        entry->metric = object->evicted->metric;
        entry->evicted = true;
        entry->evicted_ntotal = object->evicted->ntotal;
        entry->evicted_trained = object->evicted->is_trained;
        snprintf (entry->evicted_class, sizeof entry->evicted_class, "%s",
                  object->evicted->class_name);
    }
    pthread_rwlock_init (&entry->lock, NULL);
    atomic_init (&entry->refcount, 2);        //  the table's and the caller's
    fpx_entry_touch (entry);

    pthread_rwlock_wrlock (&self->lock);
    fpx_entry_t **slot = s_slot (self, tenant, entry->name);
    if (*slot) {
        pthread_rwlock_unlock (&self->lock);
        pthread_rwlock_destroy (&entry->lock);
        free (entry);
        return FPX_EEXIST;
    }
    *slot = entry;
    atomic_store (&entry->linked, true);
    if (++self->count > self->nbuckets)
        s_grow (self);
    pthread_rwlock_unlock (&self->lock);
    fpx_limits_entry_created (entry);
    *entry_p = entry;
    return 0;
}

fpx_entry_t *
fpx_registry_find (fpx_registry_t *self, uint32_t tenant, const char *name, uint64_t conn)
{
    pthread_rwlock_rdlock (&self->lock);
    fpx_entry_t *entry = *s_slot (self, tenant, name);
    if (entry && s_visible (entry, conn))
        atomic_fetch_add (&entry->refcount, 1);
    else
        entry = NULL;
    pthread_rwlock_unlock (&self->lock);
    return entry;
}

int
fpx_registry_remove (fpx_registry_t *self, uint32_t tenant, const char *name, uint64_t conn)
{
    pthread_rwlock_wrlock (&self->lock);
    fpx_entry_t **slot = s_slot (self, tenant, name);
    fpx_entry_t *entry = *slot;
    if (!entry || !s_visible (entry, conn)) {
        pthread_rwlock_unlock (&self->lock);
        return FPX_ENOTFOUND;
    }
    *slot = entry->next;
    atomic_store (&entry->linked, false);
    self->count--;
    pthread_rwlock_unlock (&self->lock);
    fpx_entry_release (&entry);
    return 0;
}

size_t
fpx_registry_reap (fpx_registry_t *self, uint64_t conn)
{
    fpx_entry_t *reaped = NULL;
    size_t count = 0;
    pthread_rwlock_wrlock (&self->lock);
    for (size_t b = 0; b < self->nbuckets; b++) {
        fpx_entry_t **slot = &self->buckets [b];
        while (*slot) {
            fpx_entry_t *entry = *slot;
            if (entry->owner_conn == conn) {
                *slot = entry->next;
                atomic_store (&entry->linked, false);
                entry->next = reaped;
                reaped = entry;
                self->count--;
                count++;
            }
            else
                slot = &entry->next;
        }
    }
    pthread_rwlock_unlock (&self->lock);
    //  Free outside the lock: faiss_Index_free of a big index takes time.
    while (reaped) {
        fpx_entry_t *entry = reaped;
        reaped = entry->next;
        fpx_entry_release (&entry);
    }
    return count;
}

static int
s_compare_names (const void *a, const void *b)
{
    return strcmp (*(char *const *) a, *(char *const *) b);
}

long
fpx_registry_names (fpx_registry_t *self, uint32_t tenant, char ***names_p)
{
    pthread_rwlock_rdlock (&self->lock);
    char **names = malloc ((self->count + 1) * sizeof *names);
    long count = 0;
    for (size_t b = 0; names && b < self->nbuckets; b++)
        for (fpx_entry_t *entry = self->buckets [b]; entry; entry = entry->next)
            if (entry->tenant == tenant && entry->owner_conn == 0) {
                names [count] = strdup (entry->name);
                if (!names [count]) {
                    pthread_rwlock_unlock (&self->lock);
                    fpx_registry_names_free (names, count);
                    return -1;
                }
                count++;
            }
    pthread_rwlock_unlock (&self->lock);
    if (!names)
        return -1;
    qsort (names, (size_t) count, sizeof *names, s_compare_names);
    *names_p = names;
    return count;
}

void
fpx_registry_names_free (char **names, long count)
{
    for (long i = 0; i < count; i++)
        free (names [i]);
    free (names);
}

//  Named entries of tenant, or of every tenant (all).
static long
s_named (fpx_registry_t *self, bool all, uint32_t tenant, fpx_entry_t ***entries_p)
{
    pthread_rwlock_rdlock (&self->lock);
    fpx_entry_t **entries = malloc ((self->count + 1) * sizeof *entries);
    long count = 0;
    for (size_t b = 0; entries && b < self->nbuckets; b++)
        for (fpx_entry_t *entry = self->buckets [b]; entry; entry = entry->next)
            if (entry->owner_conn == 0 && (all || entry->tenant == tenant)) {
                atomic_fetch_add (&entry->refcount, 1);
                entries [count++] = entry;
            }
    pthread_rwlock_unlock (&self->lock);
    if (!entries)
        return -1;
    *entries_p = entries;
    return count;
}

long
fpx_registry_named (fpx_registry_t *self, fpx_entry_t ***entries_p)
{
    return s_named (self, true, 0, entries_p);
}

static int
s_compare_entries (const void *a, const void *b)
{
    return strcmp ((*(fpx_entry_t *const *) a)->name, (*(fpx_entry_t *const *) b)->name);
}

long
fpx_registry_named_of (fpx_registry_t *self, uint32_t tenant, fpx_entry_t ***entries_p)
{
    long count = s_named (self, false, tenant, entries_p);
    if (count > 1)
        qsort (*entries_p, (size_t) count, sizeof **entries_p, s_compare_entries);
    return count;
}

// ---- accessors (registry.h) ---------------------------------------------------

FaissIndex *
fpx_entry_index (const fpx_entry_t *entry)
{
    return entry->index;
}

FaissVectorTransform *
fpx_entry_transform (const fpx_entry_t *entry)
{
    return entry->transform;
}

const char *
fpx_entry_name (const fpx_entry_t *entry)
{
    return entry->name;
}

uint32_t
fpx_entry_tenant (const fpx_entry_t *entry)
{
    return entry->tenant;
}

uint64_t
fpx_entry_owner_conn (const fpx_entry_t *entry)
{
    return entry->owner_conn;
}

int
fpx_entry_d (const fpx_entry_t *entry)
{
    return entry->d;
}

int
fpx_entry_metric (const fpx_entry_t *entry)
{
    return entry->metric;
}

const char *
fpx_entry_factory (const fpx_entry_t *entry)
{
    return entry->factory;
}

fpx_entry_t *
fpx_entry_root (const fpx_entry_t *entry)
{
    return atomic_load (&entry->root);
}

struct fpx_wal_t *
fpx_entry_wal (const fpx_entry_t *entry)
{
    return entry->wal;
}

const char *
fpx_entry_damaged (const fpx_entry_t *entry)
{
    return entry->damaged;
}

struct fpx_shim_rebuild_t *
fpx_entry_pending (const fpx_entry_t *entry)
{
    return atomic_load (&entry->pending);
}

long long
fpx_entry_charged_bytes (const fpx_entry_t *entry)
{
    return atomic_load (&entry->charged_bytes);
}

long long
fpx_entry_charged_vectors (const fpx_entry_t *entry)
{
    return atomic_load (&entry->charged_vectors);
}

bool
fpx_entry_evicted (const fpx_entry_t *entry, fpx_evicted_meta_t *meta)
{
    if (!atomic_load (&entry->evicted))
        return false;
    if (meta) {
        *meta = (fpx_evicted_meta_t) { .d = entry->d, .metric = entry->metric,
                                       .ntotal = entry->evicted_ntotal,
                                       .is_trained = entry->evicted_trained };
        snprintf (meta->class_name, sizeof meta->class_name, "%s", entry->evicted_class);
    }
    return true;
}

pthread_rwlock_t *
fpx_entry_lock_own (fpx_entry_t *entry)
{
    pthread_rwlock_wrlock (&entry->lock);
    return &entry->lock;
}
