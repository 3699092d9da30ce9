/*  info.c — the info opcode: what the server and the caller's tenant are
    doing (docs/PROTOCOL.md, "info"; `faissproxy info`).

    Tenant sealing: every figure that names an index or counts requests,
    vectors or bytes is the caller's tenant's own. The server-wide figures
    any key sees say nothing about one tenant: versions, uptime, workers,
    resident size, and the broker's totals (queued, in flight,
    connections). Only an admin key that asks ("all": true) also gets the
    server's request counts and latencies summed over tenants, and each
    tenant's usage; never another tenant's index names (docs/SECURITY.md).

    Bounded: the index list stops at max_indexes (at most
    FPX_INFO_INDEXES_MAX) and says so, the tenant list at
    FPX_INFO_TENANTS_MAX. It reads atomics, the registry (its lock held
    for the walk only) and each listed index's log mutex; it never calls
    FAISS (an index's size is the one measured after its last change),
    except to free an index dropped while this held a reference to it.
*/
#include <stdlib.h>

#include "auth.h"
#include "ops.h"
#include "tenant_limits.h"
#include "transfers.h"

#define FPX_INFO_TENANTS_MAX     1000

static void
s_pack_quotas (msgpack_packer *pk, const fpx_tenant_limits_t *limits)
{
    msgpack_pack_map (pk, 6);
    fpx_pack_kv_int (pk, "max_indexes", limits ? limits->max_indexes : 0);
    fpx_pack_kv_int (pk, "max_vectors", limits ? limits->max_vectors : 0);
    fpx_pack_kv_int (pk, "max_memory_mb", limits ? limits->max_memory_mb : 0);
    fpx_pack_kv_int (pk, "max_disk_mb", limits ? limits->max_disk_mb : 0);
    fpx_pack_kv_int (pk, "max_inflight", limits ? limits->max_inflight : 0);
    fpx_pack_kv_int (pk, "deadline_ms", limits ? limits->deadline_ms : 0);
}

//  The first `listed` of the tenant's named indexes (sorted by name):
//  whether it is in memory (--memory-budget-mb), what was charged for it
//  after its last change, and its files.
static void
s_pack_indexes (msgpack_packer *pk, fpx_entry_t **entries, long listed)
{
    msgpack_pack_array (pk, (size_t) listed);
    for (long i = 0; i < listed; i++) {
        fpx_entry_t *owner = fpx_entry_owner (entries [i]);
        msgpack_pack_map (pk, 5);
        fpx_pack_kv_str (pk, "name", fpx_entry_name (entries [i]));
        fpx_pack_kv_int (pk, "ntotal", fpx_entry_charged_vectors (owner));
        fpx_pack_kv_int (pk, "memory_bytes", fpx_entry_charged_bytes (owner));
        struct fpx_wal_t *wal = fpx_entry_wal (entries [i]);
        fpx_pack_kv_int (pk, "disk_bytes", wal ? fpx_wal_disk_bytes (wal) : 0);
        fpx_pack_kv_bool (pk, "loaded", !fpx_entry_evicted (owner, NULL));
    }
}

static void
s_pack_usage (msgpack_packer *pk, const fpx_limits_usage_t *usage)
{
    fpx_pack_kv_int (pk, "vectors", usage->vectors);
    fpx_pack_kv_int (pk, "memory_bytes", usage->bytes);
    fpx_pack_kv_int (pk, "disk_bytes", usage->disk);
}

//  The admin's view: the server's requests, latencies and batches, and
//  every tenant's usage (the first FPX_INFO_TENANTS_MAX).
static void
s_pack_server (fpx_call_t *call, const fpx_metrics_gauges_t *gauges)
{
    const fpx_config_t *config = &call->server->config;
    msgpack_packer *pk = &call->reply->pk;
    int ntenants = config->ntenants < FPX_INFO_TENANTS_MAX ? config->ntenants
                                                           : FPX_INFO_TENANTS_MAX;
    msgpack_pack_map (pk, 6);
    fpx_pack_str (pk, "requests");
    fpx_metrics_pack_requests (call->server->metrics, -1, pk);
    fpx_pack_str (pk, "latency");
    fpx_metrics_pack_latency (call->server->metrics, -1, pk);
    fpx_pack_kv_int (pk, "batches", (int64_t) gauges->batches);
    fpx_pack_kv_int (pk, "batched_searches", (int64_t) gauges->batched);
    fpx_pack_str (pk, "tenants");
    msgpack_pack_array (pk, (size_t) ntenants);
    for (int t = 0; t < ntenants; t++) {
        fpx_limits_usage_t usage;
        fpx_limits_usage (call->server->limits, (uint32_t) t, &usage);
        msgpack_pack_map (pk, 5);
        fpx_pack_kv_str (pk, "tenant", config->tenants [t]);
        fpx_pack_kv_int (pk, "indexes", usage.indexes);
        s_pack_usage (pk, &usage);
    }
    fpx_pack_kv_bool (pk, "tenants_truncated", ntenants < config->ntenants);
}

int
fpx_handle_info_req (fpx_call_t *call, const fpx_info_req_t *req)
{
    int64_t max_indexes = req->max_indexes;
    bool all = req->all;
    int role = call->envelope->role;
    if (all && role < FPX_ROLE_ADMIN)
        return fpx_reply_error (call->reply, FPX_EPERM, "info with 'all' shows every tenant: "
                                "it needs a key of role 'admin' (this key's is '%s')",
                                fpx_auth_role_name (role));
    const fpx_config_t *config = &call->server->config;
    uint32_t tenant = call->envelope->tenant_id;
    fpx_entry_t **entries;
    long count = fpx_registry_named_of (call->server->registry, tenant, &entries);
    if (count < 0)
        return fpx_reply_error (call->reply, FPX_ENOMEM, "out of memory");
    long listed = count < max_indexes ? count : (long) max_indexes;
    fpx_batch_stats_t *batched = &call->server->batch_stats [tenant];
    int64_t transfers, transfer_bytes;
    fpx_transfers_usage (call->server->transfers, tenant, &transfers, &transfer_bytes);
    fpx_limits_usage_t usage;
    fpx_limits_usage (call->server->limits, tenant, &usage);
    fpx_metrics_gauges_t gauges;
    fpx_metrics_gauges (call->server->metrics, &gauges);

    msgpack_packer *pk = &call->reply->pk;
    msgpack_pack_map (pk, FPX_SERVER_INFO_KEYS + 22 + (all ? 1 : 0));
    fpx_pack_server_info (call->server, pk);
    fpx_pack_kv_str (pk, "tenant", config->tenants [tenant]);
    fpx_pack_kv_str (pk, "role", fpx_auth_role_name (role));
    fpx_pack_kv_double (pk, "uptime_s", fpx_monotonic_seconds () - call->server->started_at);
    fpx_pack_kv_int (pk, "workers", config->workers);
    fpx_pack_kv_int (pk, "rss_bytes", (int64_t) fpx_limits_rss (call->server->limits));
    fpx_pack_kv_int (pk, "queue_depth", (int64_t) gauges.queued);
    fpx_pack_kv_int (pk, "in_flight", (int64_t) gauges.inflight);
    fpx_pack_kv_int (pk, "connections", (int64_t) gauges.connections);
    fpx_pack_kv_int (pk, "batched_searches", (int64_t) atomic_load (&batched->requests));
    fpx_pack_kv_int (pk, "batched_calls", (int64_t) atomic_load (&batched->calls));
    fpx_pack_kv_int (pk, "transfers", transfers);
    fpx_pack_kv_int (pk, "transfer_bytes", transfer_bytes);
    fpx_pack_kv_int (pk, "indexes", count);
    fpx_pack_kv_int (pk, "objects", usage.indexes);
    s_pack_usage (pk, &usage);
    fpx_pack_str (pk, "quotas");
    s_pack_quotas (pk, config->tenant_limits ? &config->tenant_limits [tenant] : NULL);
    fpx_pack_str (pk, "requests");
    fpx_metrics_pack_requests (call->server->metrics, (int) tenant, pk);
    fpx_pack_str (pk, "latency");
    fpx_metrics_pack_latency (call->server->metrics, (int) tenant, pk);
    fpx_pack_str (pk, "index_list");
    s_pack_indexes (pk, entries, listed);
    fpx_pack_kv_bool (pk, "index_list_truncated", listed < count);
    if (all) {
        fpx_pack_str (pk, "server");
        s_pack_server (call, &gauges);
    }
    for (long i = 0; i < count; i++)
        fpx_entry_release (&entries [i]);
    free (entries);
    return 0;
}
