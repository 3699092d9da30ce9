/*  tenant_limits.c — per-tenant quotas and the server's memory limit (tenant_limits.h).

    Usage per tenant lives in atomics indexed by tenant id, in the
    server's fpx_limits_t; an entry's calls reach it through entry->parts.
    An entry's share (vectors, serialized bytes) is kept on the entry that
    owns the object, so that freeing it gives back exactly what it was
    charged.
    It must not block: the broker calls fpx_limits_rss too.
*/
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "entry.h"
#include "faiss_shim.h"
#include "tenant_limits.h"
#include "ops.h"

typedef struct {
    atomic_llong indexes;
    atomic_llong vectors;
    atomic_llong bytes;
    atomic_llong disk;             //  snapshot + log bytes of named indexes
} s_usage_t;

#define FPX_SMALL_RESULT  ((int64_t) 1 << 20)   //  served over --max-memory-mb
#define FPX_RSS_PERIOD_US 5000                  //  workers' cached RSS

struct fpx_limits_t {
    const fpx_config_t *config;    //  borrowed
    s_usage_t *usage;              //  one per tenant
    atomic_llong loaded_bytes;     //  charged bytes of loaded objects
    atomic_llong rss_cached, rss_at_us;
    int statm_fd;                  //  /proc/self/statm; -1: unknown
    long page_size;
};

// ---- configuration ---------------------------------------------------------------

int
fpx_limits_parse (fpx_tenant_limits_t *limits, const char *text, char *err, size_t err_size)
{
    static const struct { const char *key; size_t offset; } keys [] = {
        { "max_indexes",   offsetof (fpx_tenant_limits_t, max_indexes) },
        { "max_vectors",   offsetof (fpx_tenant_limits_t, max_vectors) },
        { "max_memory_mb", offsetof (fpx_tenant_limits_t, max_memory_mb) },
        { "max_disk_mb",   offsetof (fpx_tenant_limits_t, max_disk_mb) },
        { "max_inflight",  offsetof (fpx_tenant_limits_t, max_inflight) },
        { "deadline_ms",   offsetof (fpx_tenant_limits_t, deadline_ms) },
    };
    const char *p = text;
    while (*p) {
        while (*p == ',' || isspace ((unsigned char) *p))
            p++;
        if (!*p)
            break;
        const char *key = p;
        while (*p && *p != '=' && *p != ',' && !isspace ((unsigned char) *p))
            p++;
        size_t key_len = (size_t) (p - key);
        if (*p != '=') {
            snprintf (err, err_size, "'%.*s' is not key=value", (int) key_len, key);
            return -1;
        }
        char *end;
        errno = 0;
        long long value = strtoll (++p, &end, 10);
        if (errno || end == p || value < 0 || value > ((long long) 1 << 50)
        ||  (*end && *end != ',' && !isspace ((unsigned char) *end))) {
            snprintf (err, err_size, "'%.*s' needs a whole number >= 0", (int) key_len, key);
            return -1;
        }
        p = end;
        size_t i = 0;
        while (i < sizeof keys / sizeof keys [0]
           && (strlen (keys [i].key) != key_len || strncmp (keys [i].key, key, key_len)))
            i++;
        if (i == sizeof keys / sizeof keys [0]) {
            snprintf (err, err_size, "unknown limit '%.*s' (max_indexes, max_vectors, "
                      "max_memory_mb, max_disk_mb, max_inflight, deadline_ms)", (int) key_len, key);
            return -1;
        }
        *(int64_t *) ((char *) limits + keys [i].offset) = value;
    }
    return 0;
}

static int
s_load_file (fpx_config_t *config, const char *file)
{
    FILE *in = fopen (file, "r");
    if (!in) {
        fprintf (stderr, "faissproxyd: --tenant-limits %s: %s\n", file, strerror (errno));
        return -1;
    }
    char line [1024], err [200];
    int number = 0, rc = 0;
    while (rc == 0 && fgets (line, sizeof line, in)) {
        number++;
        char *hash = strchr (line, '#');
        if (hash)
            *hash = 0;
        char *p = line;
        while (isspace ((unsigned char) *p))
            p++;
        if (!*p)
            continue;
        char *tenant = p;
        while (*p && !isspace ((unsigned char) *p))
            p++;
        if (*p)
            *p++ = 0;
        int id = 0;
        while (id < config->ntenants && strcmp (config->tenants [id], tenant))
            id++;
        if (id == config->ntenants) {
            fprintf (stderr, "faissproxyd: %s:%d: tenant '%s' has no key; ignored\n",
                     file, number, tenant);
            continue;
        }
        if (fpx_limits_parse (&config->tenant_limits [id], p, err, sizeof err)) {
            fprintf (stderr, "faissproxyd: %s:%d: %s\n", file, number, err);
            rc = -1;
        }
    }
    fclose (in);
    return rc;
}

int
fpx_limits_load (fpx_config_t *config, const char *defaults_text, const char *file)
{
    fpx_tenant_limits_t defaults = {
        .max_indexes = FPX_DEFAULT_MAX_INDEXES, .max_vectors = FPX_DEFAULT_MAX_VECTORS,
        .max_memory_mb = FPX_DEFAULT_MAX_MEMORY_MB, .max_disk_mb = FPX_DEFAULT_MAX_DISK_MB,
        .max_inflight = FPX_DEFAULT_MAX_INFLIGHT,
        .deadline_ms = FPX_DEFAULT_DEADLINE_MS,
    };
    char err [200];
    if (defaults_text && fpx_limits_parse (&defaults, defaults_text, err, sizeof err)) {
        fprintf (stderr, "faissproxyd: --default-tenant-limits: %s\n", err);
        return -1;
    }
    config->tenant_limits = calloc ((size_t) config->ntenants + 1, sizeof *config->tenant_limits);
    if (!config->tenant_limits)
        return -1;
    for (int i = 0; i < config->ntenants; i++)
        config->tenant_limits [i] = defaults;
    return file ? s_load_file (config, file) : 0;
}

fpx_limits_t *
fpx_limits_new (const fpx_config_t *config)
{
    fpx_limits_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->config = config;
    self->usage = calloc ((size_t) config->ntenants + 1, sizeof *self->usage);
    if (!self->usage) {
        free (self);
        return NULL;
    }
    self->statm_fd = open ("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    long page = sysconf (_SC_PAGESIZE);
    self->page_size = page > 0 ? page : 4096;
    return self;
}

void
fpx_limits_destroy (fpx_limits_t **self_p)
{
    fpx_limits_t *self = *self_p;
    if (!self)
        return;
    free (self->usage);
    if (self->statm_fd >= 0)
        close (self->statm_fd);
    free (self);
    *self_p = NULL;
}

size_t
fpx_limits_rss (fpx_limits_t *self)
{
    char text [128];
    ssize_t size = self && self->statm_fd >= 0
                 ? pread (self->statm_fd, text, sizeof text - 1, 0) : -1;
    if (size <= 0)
        return 0;
    text [size] = 0;
    unsigned long long total, resident;
    if (sscanf (text, "%llu %llu", &total, &resident) != 2)
        return 0;
    return (size_t) resident * (size_t) self->page_size;
}

//  The RSS, read at most every FPX_RSS_PERIOD_US by any worker.
static size_t
s_rss_recent (fpx_limits_t *self)
{
    long long now = (long long) (fpx_monotonic_seconds () * 1e6);
    if (now - atomic_load (&self->rss_at_us) >= FPX_RSS_PERIOD_US) {
        atomic_store (&self->rss_cached, (long long) fpx_limits_rss (self));
        atomic_store (&self->rss_at_us, now);
    }
    return (size_t) atomic_load (&self->rss_cached);
}

//  Bytes a read would reply with, as far as known before it runs (0 for
//  other opcodes): search nq·k·12, range_search at most nq·ntotal·12,
//  reconstruct_n n·d·4.
static int64_t
s_read_result_bytes (fpx_call_t *call)
{
    int opcode = call->header.opcode;
    if (opcode != FPX_OP_SEARCH && opcode != FPX_OP_RANGE_SEARCH && opcode != FPX_OP_RECONSTRUCT_N)
        return 0;
    char name [FPX_NAME_MAX + 1];
    if (fpx_params_copy_str (&call->params, "name", name, sizeof name))
        return 0;
    fpx_entry_t *entry = fpx_registry_find (call->server->registry, call->envelope->tenant_id,
                                            name, call->envelope->conn_id);
    if (!entry)
        return 0;
    int64_t bytes = 0, value = 0;
    int64_t nq = call->narrays > 0 && entry->d > 0
               ? (int64_t) (zmq_msg_size (&call->arrays [0]) / ((size_t) entry->d * sizeof (float))) : 0;
    if (opcode == FPX_OP_SEARCH && fpx_params_get_int (&call->params, "k", &value) == 0 && value > 0)
        bytes = nq * value * 12;
    else if (opcode == FPX_OP_RANGE_SEARCH) {
        //  Under the lock: an evicted index's object is NULL (budget.h).
        pthread_rwlock_t *lock = fpx_entry_lock (entry, false);
        if (entry->index)
            bytes = nq * faiss_Index_ntotal (entry->index) * 12;
        pthread_rwlock_unlock (lock);
    }
    else if (opcode == FPX_OP_RECONSTRUCT_N && fpx_params_get_int (&call->params, "n", &value) == 0
         &&  value > 0)
        bytes = value * entry->d * 4;
    fpx_entry_release (&entry);
    return bytes;
}

// ---- usage ---------------------------------------------------------------------

//  tenant's counters; NULL without limits (a bare registry's entries) or
//  for a tenant not counted.
static s_usage_t *
s_usage_of (fpx_limits_t *self, uint32_t tenant)
{
    return self && tenant < (uint32_t) self->config->ntenants ? &self->usage [tenant] : NULL;
}

void
fpx_limits_entry_created (fpx_entry_t *entry)
{
    s_usage_t *usage = s_usage_of (entry->parts.limits, entry->tenant);
    if (usage)
        atomic_fetch_add (&usage->indexes, 1);
}

void
fpx_limits_entry_freed (fpx_entry_t *entry)
{
    fpx_limits_t *self = entry->parts.limits;
    s_usage_t *usage = s_usage_of (self, entry->tenant);
    if (!usage)
        return;
    atomic_fetch_sub (&usage->indexes, 1);
    atomic_fetch_sub (&usage->vectors, atomic_exchange (&entry->charged_vectors, 0));
    long long bytes = atomic_exchange (&entry->charged_bytes, 0);
    atomic_fetch_sub (&usage->bytes, bytes);
    if (!entry->evicted)
        atomic_fetch_sub (&self->loaded_bytes, bytes);
}

void
fpx_limits_entry_adopted (fpx_entry_t *entry)
{
    fpx_limits_t *self = entry->parts.limits;
    s_usage_t *usage = s_usage_of (self, entry->tenant);
    if (!usage)
        return;
    atomic_fetch_sub (&usage->vectors, atomic_exchange (&entry->charged_vectors, 0));
    long long bytes = atomic_exchange (&entry->charged_bytes, 0);
    atomic_fetch_sub (&usage->bytes, bytes);
    atomic_fetch_sub (&self->loaded_bytes, bytes);
}

void
fpx_limits_entry_evicted (fpx_entry_t *entry)
{
    fpx_limits_t *self = entry->parts.limits;
    if (s_usage_of (self, entry->tenant))
        atomic_fetch_sub (&self->loaded_bytes, atomic_load (&entry->charged_bytes));
}

void
fpx_limits_entry_loaded (fpx_entry_t *entry)
{
    fpx_limits_t *self = entry->parts.limits;
    if (s_usage_of (self, entry->tenant))
        atomic_fetch_add (&self->loaded_bytes, atomic_load (&entry->charged_bytes));
    fpx_limits_measure (entry);
}

void
fpx_limits_entry_charge (fpx_entry_t *entry, long long vectors, long long bytes)
{
    s_usage_t *usage = s_usage_of (entry->parts.limits, entry->tenant);
    if (!usage)
        return;
    atomic_fetch_add (&usage->vectors, vectors - atomic_exchange (&entry->charged_vectors, vectors));
    atomic_fetch_add (&usage->bytes, bytes - atomic_exchange (&entry->charged_bytes, bytes));
}

long long
fpx_limits_loaded_bytes (fpx_limits_t *self)
{
    return self ? atomic_load (&self->loaded_bytes) : 0;
}

void
fpx_limits_measure (fpx_entry_t *entry)
{
    fpx_entry_t *owner = fpx_entry_owner (entry);
    fpx_limits_t *self = owner->parts.limits;
    s_usage_t *usage = s_usage_of (self, owner->tenant);
    if (!usage || !owner->index)
        return;
    size_t bytes = 0;
    char err [FPX_ERROR_TEXT_MAX];
    if (fpx_shim_serialize (owner->index, 1, NULL, &bytes, err, sizeof err))
        bytes = 0;
    //  A removal rebuilding in the background counts as done (rebuild.h).
    long long vectors = (long long) faiss_Index_ntotal (owner->index)
                      - fpx_shim_rebuild_removed (atomic_load (&owner->pending));
    atomic_fetch_add (&usage->vectors, vectors - atomic_exchange (&owner->charged_vectors, vectors));
    long long delta = (long long) bytes - atomic_exchange (&owner->charged_bytes, (long long) bytes);
    atomic_fetch_add (&usage->bytes, delta);
    atomic_fetch_add (&self->loaded_bytes, delta);
}

void
fpx_limits_measure_all (fpx_registry_t *registry)
{
    fpx_entry_t **entries;
    long count = fpx_registry_named (registry, &entries);
    for (long i = 0; i < count; i++) {
        pthread_rwlock_t *lock = fpx_entry_lock (entries [i], false);
        fpx_limits_measure (entries [i]);
        pthread_rwlock_unlock (lock);
        fpx_entry_release (&entries [i]);
    }
    if (count >= 0)
        free (entries);
}

void
fpx_limits_disk_move (fpx_limits_t *self, uint32_t tenant, long long delta)
{
    s_usage_t *usage = s_usage_of (self, tenant);
    if (usage)
        atomic_fetch_add (&usage->disk, delta);
}

int
fpx_limits_usage (fpx_limits_t *self, uint32_t tenant, fpx_limits_usage_t *usage)
{
    s_usage_t *counted = s_usage_of (self, tenant);
    *usage = (fpx_limits_usage_t) { 0 };
    if (!counted)
        return -1;
    usage->indexes = atomic_load (&counted->indexes);
    usage->vectors = atomic_load (&counted->vectors);
    usage->bytes = atomic_load (&counted->bytes);
    usage->disk = atomic_load (&counted->disk);
    return 0;
}

int
fpx_limits_disk_check (fpx_limits_t *self, uint32_t tenant, uint64_t bytes, char *err,
                       size_t err_size)
{
    s_usage_t *usage = s_usage_of (self, tenant);
    if (!usage)
        return 0;
    const fpx_config_t *config = self->config;
    if (!config->tenant_limits || !config->tenant_limits [tenant].max_disk_mb)
        return 0;
    long long limit = (long long) config->tenant_limits [tenant].max_disk_mb << 20;
    long long disk = atomic_load (&usage->disk);
    if (disk + (long long) bytes <= limit)
        return 0;
    snprintf (err, err_size, "tenant '%s' indexes use %.1f MiB on disk, this write needs "
              "%.1f MiB more: max_disk_mb = %lld (--tenant-limits / --default-tenant-limits); "
              "remove vectors or drop an index", config->tenants [tenant], disk / 1048576.0,
              bytes / 1048576.0, (long long) config->tenant_limits [tenant].max_disk_mb);
    return FPX_EQUOTA;
}

// ---- checks --------------------------------------------------------------------

//  The FPX_OPF_GROWS / FPX_OPF_CREATES columns of FPX_OPCODES.
static bool
s_has_flag (int opcode, unsigned flag)
{
    const fpx_opcode_info_t *info = fpx_opcode_info (opcode);
    return info && (info->flags & flag);
}

bool
fpx_limits_grows (int opcode)
{
    return s_has_flag (opcode, FPX_OPF_GROWS);
}

static bool
s_makes_entry (int opcode)
{
    return s_has_flag (opcode, FPX_OPF_CREATES);
}

int
fpx_limits_admit (fpx_call_t *call)
{
    int opcode = call->header.opcode;
    const fpx_config_t *config = &call->server->config;
    fpx_limits_t *self = call->server->limits;
    if (!fpx_limits_grows (opcode)) {
        //  Over the server's limit, reads are served while their results
        //  are small.
        if (!config->max_memory || s_rss_recent (self) < config->max_memory)
            return 0;
        int64_t bytes = s_read_result_bytes (call);
        if (bytes <= FPX_SMALL_RESULT)
            return 0;
        return fpx_reply_error (call->reply, FPX_ENOMEM, "server memory limit reached "
                                "(--max-memory-mb %zu): only results under %lld MiB are served, "
                                "this one may need %lld MiB", config->max_memory >> 20,
                                (long long) (FPX_SMALL_RESULT >> 20), (long long) (bytes >> 20));
    }
    uint32_t tenant = call->envelope->tenant_id;
    s_usage_t *usage = s_usage_of (self, tenant);
    if (config->max_memory) {
        size_t rss = fpx_limits_rss (self);
        if (rss >= config->max_memory)
            return fpx_reply_error (call->reply, FPX_ENOMEM, "server memory limit reached: "
                                    "%zu MiB resident, --max-memory-mb %zu",
                                    rss >> 20, config->max_memory >> 20);
    }
    if (!usage || !config->tenant_limits)
        return 0;
    const fpx_tenant_limits_t *limits = &config->tenant_limits [tenant];
    long long indexes = atomic_load (&usage->indexes);
    if (s_makes_entry (opcode) && limits->max_indexes && indexes >= limits->max_indexes)
        return fpx_reply_error (call->reply, FPX_EQUOTA, "tenant '%s' has %lld indexes: "
                                "max_indexes = %lld (--tenant-limits / --default-tenant-limits)",
                                config->tenants [tenant], indexes, (long long) limits->max_indexes);
    long long bytes = atomic_load (&usage->bytes);
    if (limits->max_memory_mb && bytes >= (long long) limits->max_memory_mb << 20)
        return fpx_reply_error (call->reply, FPX_EQUOTA, "tenant '%s' indexes hold %lld MiB: "
                                "max_memory_mb = %lld (--tenant-limits / --default-tenant-limits)",
                                config->tenants [tenant], bytes >> 20,
                                (long long) limits->max_memory_mb);
    return 0;
}

int
fpx_limits_check_vectors (fpx_call_t *call, int64_t n)
{
    const fpx_config_t *config = &call->server->config;
    uint32_t tenant = call->envelope->tenant_id;
    s_usage_t *usage = s_usage_of (call->server->limits, tenant);
    if (!usage || !config->tenant_limits || !config->tenant_limits [tenant].max_vectors)
        return 0;
    long long limit = (long long) config->tenant_limits [tenant].max_vectors;
    long long vectors = atomic_load (&usage->vectors);
    if (vectors + n > limit)
        return fpx_reply_error (call->reply, FPX_EQUOTA, "tenant '%s' holds %lld vectors, adding "
                                "%lld would pass max_vectors = %lld (--tenant-limits / "
                                "--default-tenant-limits)", config->tenants [tenant], vectors,
                                (long long) n, limit);
    return 0;
}

size_t
fpx_limits_alloc_cap (fpx_limits_t *self, uint32_t tenant, size_t cap)
{
    if (!self)
        return cap;
    const fpx_config_t *config = self->config;
    s_usage_t *usage = s_usage_of (self, tenant);
    if (usage && config->tenant_limits && config->tenant_limits [tenant].max_memory_mb) {
        long long left = ((long long) config->tenant_limits [tenant].max_memory_mb << 20)
                       - atomic_load (&usage->bytes);
        if (left < (long long) cap)
            cap = left > 0 ? (size_t) left : 0;
    }
    if (config->max_memory) {
        size_t rss = fpx_limits_rss (self);
        size_t left = rss < config->max_memory ? config->max_memory - rss : 0;
        if (left < cap)
            cap = left;
    }
    return cap;
}

int
fpx_limits_cap_refused (fpx_call_t *call, size_t cap)
{
    const fpx_config_t *config = &call->server->config;
    uint32_t tenant = call->envelope->tenant_id;
    size_t server_left = (size_t) -1;
    if (config->max_memory) {
        size_t rss = fpx_limits_rss (call->server->limits);
        server_left = rss < config->max_memory ? config->max_memory - rss : 0;
    }
    if (server_left <= cap)
        return fpx_reply_error (call->reply, FPX_ENOMEM, "server memory limit reached: this "
                                "would need more than the %zu MiB left under --max-memory-mb %zu",
                                cap >> 20, config->max_memory >> 20);
    return fpx_reply_error (call->reply, FPX_EQUOTA, "tenant '%s': this would need more than the "
                            "%zu MiB left of max_memory_mb = %lld (--tenant-limits / "
                            "--default-tenant-limits)", config->tenants [tenant], cap >> 20,
                            (long long) config->tenant_limits [tenant].max_memory_mb);
}

//  A transfer's buffer is charged to max_memory_mb as an index's bytes
//  are, and must fit what --max-memory-mb leaves.
int
fpx_limits_transfer_reserve (fpx_call_t *call, size_t bytes)
{
    const fpx_config_t *config = &call->server->config;
    uint32_t tenant = call->envelope->tenant_id;
    if (config->max_memory) {
        size_t rss = fpx_limits_rss (call->server->limits);
        if (rss + bytes > config->max_memory)
            return fpx_reply_error (call->reply, FPX_ENOMEM, "server memory limit reached: a "
                                    "transfer of %zu MiB does not fit the %zu MiB left under "
                                    "--max-memory-mb %zu", bytes >> 20,
                                    rss < config->max_memory ? (config->max_memory - rss) >> 20 : 0,
                                    config->max_memory >> 20);
    }
    s_usage_t *usage = s_usage_of (call->server->limits, tenant);
    if (!usage)
        return 0;
    long long held = atomic_fetch_add (&usage->bytes, (long long) bytes);
    long long limit = config->tenant_limits ? config->tenant_limits [tenant].max_memory_mb : 0;
    if (limit && held + (long long) bytes > limit << 20) {
        atomic_fetch_sub (&usage->bytes, (long long) bytes);
        return fpx_reply_error (call->reply, FPX_EQUOTA, "tenant '%s' holds %lld MiB, a transfer "
                                "of %zu MiB would pass max_memory_mb = %lld (--tenant-limits / "
                                "--default-tenant-limits)", config->tenants [tenant], held >> 20,
                                bytes >> 20, limit);
    }
    return 0;
}

void
fpx_limits_transfer_release (fpx_limits_t *self, uint32_t tenant, size_t bytes)
{
    s_usage_t *usage = s_usage_of (self, tenant);
    if (usage)
        atomic_fetch_sub (&usage->bytes, (long long) bytes);
}
