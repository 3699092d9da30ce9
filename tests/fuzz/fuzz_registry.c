/*  fuzz_registry.c — the registry (server/registry.c) driven directly by
    a sequence of operations read from the input, checked against a model
    kept here: insert named and anonymous entries, find, remove, reap a
    connection, list names, hold and release counted references, and
    compose (an IVF index adopting an anonymous quantizer, as construct
    does). Names are a few fixed ones or raw bytes of the input; tenants
    0 and 1; connections 0 (named), 1 and 2.

    Invariants (each aborts when broken): every answer is the model's
    (insert's FPX_EEXIST, find's visibility rule, remove's FPX_ENOTFOUND,
    reap's count, the sorted name lists); a found entry has the name,
    tenant and owner asked for; a held reference stays readable after
    its entry is removed or reaped (linked false) and frees at its last
    release; an alias's owner is its root and locks the root's lock.
    Leaks and use after free are LeakSanitizer's and ASan's to find.    */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <faiss/c_api/IndexFlat_c.h>
#include <faiss/c_api/IndexIVFFlat_c.h>
#include <faiss/c_api/IndexIVF_c.h>

#include "fpx_protocol.h"
#include "fuzz_common.h"
#include "entry.h"

const char fpx_fuzz_target_name [] = "registry";
const long fpx_fuzz_replay_mutations = 20000;
const long fpx_fuzz_replay_seed = 20261207;

#define S_MODEL_MAX 64
#define S_HELD_MAX  8
#define S_D         4

typedef struct {
    char name [FPX_NAME_MAX + 1];
    uint32_t tenant;
    uint64_t owner;                //  0: named
    fpx_entry_t *root;             //  set for an adopted quantizer
} s_item_t;

typedef struct {
    s_item_t items [S_MODEL_MAX];
    int count;
    fpx_entry_t *held [S_HELD_MAX];
    int nheld;
} s_model_t;

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
    (void) argc, (void) argv;
    return 0;
}

void
fpx_fuzz_target_cleanup (void)
{
}

//  The input as a stream of bytes; 0 once it is spent.
typedef struct {
    const uint8_t *p, *end;
} s_reader_t;

static uint8_t
s_byte (s_reader_t *r)
{
    return r->p < r->end ? *r->p++ : 0;
}

static const char *const s_fixed [] = { "a", "idx-1", "b.c", "Z_9" };

//  A name: one of the fixed ones, or up to 70 raw bytes kept when the
//  protocol would accept them (the registry sees only valid names).
static void
s_name (s_reader_t *r, s_model_t *model, char *out)
{
    uint8_t b = s_byte (r);
    if (b >= 0xf0) {
        size_t len = (size_t) (b - 0xf0) * 5 + 1;
        char raw [FPX_NAME_MAX + 16];
        size_t got = 0;
        while (got < len && r->p < r->end)
            raw [got++] = (char) *r->p++;
        if (fpx_name_is_valid (raw, got) && got <= FPX_NAME_MAX) {
            memcpy (out, raw, got);
            out [got] = 0;
            return;
        }
    }
    //  Also the name of an anonymous entry of the model, to look it up.
    if (b >= 0xc0 && model->count > 0) {
        snprintf (out, FPX_NAME_MAX + 1, "%s", model->items [b % model->count].name);
        return;
    }
    snprintf (out, FPX_NAME_MAX + 1, "%s", s_fixed [b % 4]);
}

static int
s_find_model (const s_model_t *model, uint32_t tenant, const char *name)
{
    for (int i = 0; i < model->count; i++)
        if (model->items [i].tenant == tenant && strcmp (model->items [i].name, name) == 0)
            return i;
    return -1;
}

static bool
s_visible (const s_item_t *item, uint64_t conn)
{
    return item->owner == 0 || item->owner == conn;
}

static void
s_forget (s_model_t *model, int i)
{
    model->items [i] = model->items [--model->count];
}

static FaissIndex *
s_flat (void)
{
    FaissIndexFlatL2 *index = NULL;
    FPX_FUZZ_ASSERT (faiss_IndexFlatL2_new_with (&index, S_D) == 0);
    return (FaissIndex *) index;
}

static void
s_hold (s_model_t *model, fpx_entry_t *entry)
{
    if (model->nheld == S_HELD_MAX)
        fpx_entry_release (&model->held [--model->nheld]);
    model->held [model->nheld++] = entry;
}

static int
s_compare_names (const void *a, const void *b)
{
    return strcmp (*(const char *const *) a, *(const char *const *) b);
}

static void
s_check_names (fpx_registry_t *registry, const s_model_t *model, uint32_t tenant)
{
    char **names = NULL;
    long count = fpx_registry_names (registry, tenant, &names);
    FPX_FUZZ_ASSERT (count >= 0);
    const char *expected [S_MODEL_MAX];
    long n = 0;
    for (int i = 0; i < model->count; i++)
        if (model->items [i].tenant == tenant && model->items [i].owner == 0)
            expected [n++] = model->items [i].name;
    qsort (expected, (size_t) n, sizeof *expected, s_compare_names);
    FPX_FUZZ_ASSERT (count == n);
    for (long i = 0; i < n; i++)
        FPX_FUZZ_ASSERT (strcmp (names [i], expected [i]) == 0);
    fpx_registry_names_free (names, count);

    fpx_entry_t **entries = NULL;
    count = fpx_registry_named_of (registry, tenant, &entries);
    FPX_FUZZ_ASSERT (count == n);
    for (long i = 0; i < count; i++) {
        FPX_FUZZ_ASSERT (strcmp (entries [i]->name, expected [i]) == 0);
        FPX_FUZZ_ASSERT (entries [i]->tenant == tenant && entries [i]->owner_conn == 0);
        fpx_entry_release (&entries [i]);
    }
    free (entries);
}

static void
s_step (fpx_registry_t *registry, s_model_t *model, s_reader_t *r)
{
    uint8_t op = s_byte (r);
    uint32_t tenant = op & 0x10 ? 1 : 0;
    uint64_t conn = (op >> 5) % 3;
    char name [FPX_NAME_MAX + 1];
    fpx_entry_t *entry = NULL;
    switch (op & 0x0f) {
        case 0: case 1: {                       //  insert named
            s_name (r, model, name);
            if (name [0] == '@' || model->count == S_MODEL_MAX)
                break;
            fpx_object_t object = { .index = s_flat (), .factory = "Flat" };
            int rc = fpx_registry_insert (registry, tenant, name, 0, &object, &entry);
            bool taken = s_find_model (model, tenant, name) >= 0;
            FPX_FUZZ_ASSERT (rc == (taken ? FPX_EEXIST : 0));
            if (rc) {
                fpx_object_free (&object);
                break;
            }
            FPX_FUZZ_ASSERT (strcmp (entry->name, name) == 0 && entry->d == S_D);
            model->items [model->count++] = (s_item_t) { .tenant = tenant };
            snprintf (model->items [model->count - 1].name, FPX_NAME_MAX + 1, "%s", name);
            s_hold (model, entry);
            break;
        }
        case 2: {                               //  insert anonymous
            if (model->count == S_MODEL_MAX || conn == 0)
                break;
            fpx_object_t object = { .index = s_flat () };
            FPX_FUZZ_ASSERT (fpx_registry_insert (registry, tenant, NULL, conn, &object, &entry) == 0);
            FPX_FUZZ_ASSERT (entry->name [0] == '@' && entry->owner_conn == conn);
            FPX_FUZZ_ASSERT (s_find_model (model, tenant, entry->name) < 0);
            s_item_t *item = &model->items [model->count++];
            *item = (s_item_t) { .tenant = tenant, .owner = conn };
            snprintf (item->name, sizeof item->name, "%s", entry->name);
            fpx_entry_release (&entry);
            break;
        }
        case 3: case 4: case 5: {               //  find
            s_name (r, model, name);
            entry = fpx_registry_find (registry, tenant, name, conn);
            int i = s_find_model (model, tenant, name);
            bool expected = i >= 0 && s_visible (&model->items [i], conn);
            FPX_FUZZ_ASSERT ((entry != NULL) == expected);
            if (entry) {
                FPX_FUZZ_ASSERT (strcmp (entry->name, name) == 0 && entry->tenant == tenant);
                FPX_FUZZ_ASSERT (entry->owner_conn == model->items [i].owner);
                FPX_FUZZ_ASSERT (atomic_load (&entry->linked));
                fpx_entry_t *owner = fpx_entry_owner (entry);
                FPX_FUZZ_ASSERT (owner == (model->items [i].root ? model->items [i].root : entry));
                pthread_rwlock_t *lock = fpx_entry_lock (entry, op & 0x80);
                FPX_FUZZ_ASSERT (lock == &owner->lock);
                pthread_rwlock_unlock (lock);
                fpx_entry_touch (entry);
                if (op & 0x40)
                    s_hold (model, entry);
                else
                    fpx_entry_release (&entry);
            }
            break;
        }
        case 6: case 7: {                       //  remove
            s_name (r, model, name);
            int rc = fpx_registry_remove (registry, tenant, name, conn);
            int i = s_find_model (model, tenant, name);
            bool expected = i >= 0 && s_visible (&model->items [i], conn);
            FPX_FUZZ_ASSERT (rc == (expected ? 0 : FPX_ENOTFOUND));
            if (expected)
                s_forget (model, i);
            break;
        }
        case 8: {                               //  reap a connection
            size_t expected = 0;
            for (int i = model->count - 1; i >= 0; i--)
                if (model->items [i].owner == conn) {
                    expected++;
                    s_forget (model, i);
                }
            FPX_FUZZ_ASSERT (fpx_registry_reap (registry, conn) == expected);
            break;
        }
        case 9: case 10:                        //  list names
            s_check_names (registry, model, tenant);
            break;
        case 11: {                              //  every named entry
            fpx_entry_t **entries = NULL;
            long count = fpx_registry_named (registry, &entries);
            long expected = 0;
            for (int i = 0; i < model->count; i++)
                expected += model->items [i].owner == 0;
            FPX_FUZZ_ASSERT (count == expected);
            for (long i = 0; i < count; i++)
                fpx_entry_release (&entries [i]);
            free (entries);
            break;
        }
        case 12: case 13:                       //  release a held reference
            if (model->nheld) {
                int i = s_byte (r) % model->nheld;
                entry = model->held [i];
                model->held [i] = model->held [--model->nheld];
                //  Readable whether or not still linked.
                FPX_FUZZ_ASSERT (entry->name [0] != 0 && entry->d == S_D);
                fpx_entry_release (&entry);
            }
            break;
        case 14: {                              //  compose: IVF over an anonymous quantizer
            if (model->count + 2 > S_MODEL_MAX || conn == 0)
                break;
            fpx_object_t object = { .index = s_flat () };
            fpx_entry_t *child;
            FPX_FUZZ_ASSERT (fpx_registry_insert (registry, tenant, NULL, conn, &object, &child) == 0);
            FaissIndexIVFFlat *ivf = NULL;
            FPX_FUZZ_ASSERT (faiss_IndexIVFFlat_new_with (&ivf, child->index, S_D, 2) == 0);
            faiss_IndexIVF_set_own_fields ((FaissIndexIVF *) ivf, 1);
            fpx_object_t composite = { .index = (FaissIndex *) ivf, .factory = "IVF2,Flat" };
            FPX_FUZZ_ASSERT (fpx_registry_insert (registry, tenant, NULL, conn, &composite, &entry) == 0);
            pthread_rwlock_wrlock (&child->lock);
            fpx_registry_adopt (child, entry);
            pthread_rwlock_unlock (&child->lock);
            FPX_FUZZ_ASSERT (fpx_entry_owner (child) == entry);
            s_item_t *item = &model->items [model->count++];
            *item = (s_item_t) { .tenant = tenant, .owner = conn };
            snprintf (item->name, sizeof item->name, "%s", entry->name);
            item = &model->items [model->count++];
            *item = (s_item_t) { .tenant = tenant, .owner = conn, .root = entry };
            snprintf (item->name, sizeof item->name, "%s", child->name);
            //  The child keeps its root alive: held here as the model's
            //  pointer only while the child's reference is.
            s_hold (model, child);
            fpx_entry_release (&entry);
            break;
        }
        default:
            break;
    }
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    fpx_registry_t *registry = fpx_registry_new ();
    FPX_FUZZ_ASSERT (registry != NULL);
    s_model_t model = { .count = 0 };
    s_reader_t reader = { data, data + (size > 4096 ? 4096 : size) };
    while (reader.p < reader.end)
        s_step (registry, &model, &reader);
    s_check_names (registry, &model, 0);
    s_check_names (registry, &model, 1);
    for (int i = 0; i < model.nheld; i++)
        fpx_entry_release (&model.held [i]);
    fpx_registry_destroy (&registry);
    return 0;
}
