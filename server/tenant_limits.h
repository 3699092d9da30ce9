/*  tenant_limits.h — per-tenant quotas and the server's memory limit.

    Quotas (--tenant-limits FILE, --default-tenant-limits "k=v,…"):
    max_indexes, max_vectors, max_memory_mb, max_disk_mb, max_inflight,
    deadline_ms; 0 means unlimited. Usage is counted here: the registry reports each entry
    it creates and frees, and the ops re-measure an index (its serialized
    size, FAISS's own count of what the index holds) after every call that
    changes it. Workers check a request that would grow memory before it
    runs; the broker enforces max_inflight and deadline_ms itself.

    The server limit (--max-memory-mb) is the process's resident size,
    read from /proc/self/statm.

    The usage of one server is an object, fpx_limits_t (owned by
    fpx_server_t); calls given only an entry reach it through
    entry->parts (entry.h, registry.h), and count nothing for an entry of a
    registry without one.
    Thread-safe: the limits are read-only once loaded; usage is atomic.
    A quota is checked when a request starts, so requests running at the
    same time in the same tenant may pass it by what each adds.
*/
#ifndef FPX_TENANT_LIMITS_H_INCLUDED
#define FPX_TENANT_LIMITS_H_INCLUDED

#include "call.h"

//  The defaults, written down in docs/SECURITY.md.
#define FPX_DEFAULT_MAX_INDEXES     1000
#define FPX_DEFAULT_MAX_VECTORS     100000000       //  1e8
#define FPX_DEFAULT_MAX_MEMORY_MB   4096
#define FPX_DEFAULT_MAX_DISK_MB     16384
#define FPX_DEFAULT_MAX_INFLIGHT    4096
#define FPX_DEFAULT_DEADLINE_MS     600000          //  10 minutes

/*  Parses "key=value" pairs separated by ',' or blanks into limits
    (keys not named keep their value). Returns 0, or -1 with err set.    */
int fpx_limits_parse (fpx_tenant_limits_t *limits, const char *text, char *err, size_t err_size);

/*  Builds config->tenant_limits (one per tenant, owned by config): the
    defaults, then defaults_text, then the lines of file that name a
    tenant ("TENANT key=value …", '#' comments). Either may be NULL.
    Returns 0, or -1 with a message on stderr.                           */
int fpx_limits_load (fpx_config_t *config, const char *defaults_text, const char *file);

typedef struct fpx_limits_t fpx_limits_t;

/*  Usage counting for config's tenants (config is borrowed: it must
    outlive the object). Returns it (caller owns; give it to the
    registry's parts before entries are made), or NULL when out of
    memory.                                                              */
fpx_limits_t *fpx_limits_new (const fpx_config_t *config);

/*  Frees it, after the registry (whose entries give back their charges
    to it as they go). NULL is fine; clears *self_p.                    */
void fpx_limits_destroy (fpx_limits_t **self_p);

/*  Resident set size of this process in bytes (0 if unknown, or self
    NULL).                                                               */
size_t fpx_limits_rss (fpx_limits_t *self);

/*  The registry's calls: an entry was created / is being freed.         */
void fpx_limits_entry_created (fpx_entry_t *entry);
void fpx_limits_entry_freed (fpx_entry_t *entry);

/*  entry's object now lives in another entry's: what it was charged goes
    (the owner is measured with it inside).                             */
void fpx_limits_entry_adopted (fpx_entry_t *entry);

/*  The memory budget's calls (budget.h). An evicted entry keeps what it
    was charged (its tenant's quotas count it, loaded or not); only the
    server's total of loaded bytes moves. entry_loaded also re-measures
    (caller holds the lock); entry_charge sets an entry's charges without
    its object (an index registered evicted at start).                  */
void fpx_limits_entry_evicted (fpx_entry_t *entry);
void fpx_limits_entry_loaded (fpx_entry_t *entry);
void fpx_limits_entry_charge (fpx_entry_t *entry, long long vectors, long long bytes);

/*  Serialized bytes of every object in memory (the budget's measure).    */
long long fpx_limits_loaded_bytes (fpx_limits_t *self);

/*  Storage's calls: the tenant's bytes on disk (snapshots and logs of
    its named indexes) moved by delta; whether `bytes` more fit its
    max_disk_mb (0, or FPX_EQUOTA with err set).                         */
void fpx_limits_disk_move (fpx_limits_t *self, uint32_t tenant, long long delta);
int fpx_limits_disk_check (fpx_limits_t *self, uint32_t tenant, uint64_t bytes, char *err,
                           size_t err_size);

/*  One tenant's usage as counted here, for the metrics (metrics.h).     */
typedef struct {
    long long indexes;             //  named + anonymous entries
    long long vectors;             //  ntotal over its indexes
    long long bytes;               //  serialized size of its indexes
    long long disk;                //  snapshots + logs of its named indexes
} fpx_limits_usage_t;

/*  Reads tenant's usage into *usage (OUT). Returns 0, or -1 for a tenant
    not counted (usage zeroed). Thread-safe: atomic loads, each figure
    exact but not taken at the same instant as the others.              */
int fpx_limits_usage (fpx_limits_t *self, uint32_t tenant, fpx_limits_usage_t *usage);

/*  Re-measures the object of entry's owner (vectors and serialized
    bytes) and moves the tenant's usage by the difference. The caller
    holds the owner's lock (shared or exclusive).                        */
void fpx_limits_measure (fpx_entry_t *entry);

/*  Re-measures every named entry (after the data directory was loaded). */
void fpx_limits_measure_all (fpx_registry_t *registry);

/*  Before a request runs: refuses one that would grow memory while its
    tenant is at a quota, or the server at --max-memory-mb. Returns 0 or
    the error (reply filled).                                            */
int fpx_limits_admit (fpx_call_t *call);

/*  Refuses adding n vectors past the tenant's max_vectors.              */
int fpx_limits_check_vectors (fpx_call_t *call, int64_t n);

/*  cap lowered to what the tenant's max_memory_mb and the server's
    --max-memory-mb still allow.                                         */
size_t fpx_limits_alloc_cap (fpx_limits_t *self, uint32_t tenant, size_t cap);

/*  The reply for an allocation that hit a cap fpx_limits_alloc_cap had
    lowered: which limit, and its flag. Returns the error.               */
int fpx_limits_cap_refused (fpx_call_t *call, size_t cap);

/*  A chunked transfer's buffer of `bytes` (transfers.c): charged to the
    tenant's max_memory_mb and checked against what --max-memory-mb
    leaves (FPX_EQUOTA / FPX_ENOMEM, reply filled, nothing charged), and
    given back when the buffer goes.                                    */
int fpx_limits_transfer_reserve (fpx_call_t *call, size_t bytes);
void fpx_limits_transfer_release (fpx_limits_t *self, uint32_t tenant, size_t bytes);

/*  Whether a request with this opcode may grow the server's memory.     */
bool fpx_limits_grows (int opcode);

#endif
