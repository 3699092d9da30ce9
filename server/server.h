/*  server.h — one faissproxyd server: its configuration and the parts it
    owns, each an object with its own header (config.h, registry.h,
    storage.h, tenant_limits.h, transfers.h, rebuild.h, budget.h, zap.h,
    worker.h, metrics.h), so that two servers (on two data directories)
    may live in one process. Only the log (log.h) is kept in file-level
    variables, on purpose: it is the process's.

    Threads: one broker (broker.h: owns every public socket, never calls
    FAISS, never blocks), N workers (worker.h: each owns one inproc DEALER
    to the broker, calls FAISS). They share only the registry, the parts
    below, the read-only configuration and atomic counters.
*/
#ifndef FPX_SERVER_H_INCLUDED
#define FPX_SERVER_H_INCLUDED

#include <stdatomic.h>
#include <stdint.h>

#include "config.h"
#include "log.h"
#include "metrics.h"
#include "registry.h"

/*  Per-tenant counters of batched searches (see fpx_batch_t).           */
typedef struct {
    atomic_uint_fast64_t requests;      //  searches answered by a shared call
    atomic_uint_fast64_t calls;         //  FAISS calls that served ≥ 2 of them
} fpx_batch_stats_t;

typedef struct fpx_transfers_t fpx_transfers_t;
typedef struct fpx_rebuilds_t fpx_rebuilds_t;
typedef struct fpx_budget_t fpx_budget_t;
typedef struct fpx_zap_t fpx_zap_t;
typedef struct fpx_workers_t fpx_workers_t;
typedef struct fpx_limits_t fpx_limits_t;
typedef struct fpx_storage_t fpx_storage_t;

typedef struct fpx_server_s fpx_server_t;
struct fpx_server_s {
    fpx_config_t config;
    void *zmq_ctx;
    fpx_registry_t *registry;
    fpx_storage_t *storage;        //  owned (storage.h): the data directory
    fpx_limits_t *limits;          //  owned (tenant_limits.h)
    fpx_transfers_t *transfers;    //  owned (transfers.h)
    fpx_rebuilds_t *rebuilds;      //  owned (rebuild.h)
    fpx_budget_t *budget;          //  owned (budget.h)
    fpx_zap_t *zap;                //  owned; NULL without CURVE (zap.h)
    fpx_workers_t *workers;        //  owned (worker.h)
    atomic_int active_calls;       //  FAISS calls running now (OMP budget)
    double started_at;             //  monotonic seconds
    fpx_batch_stats_t *batch_stats;    //  one per tenant, owned
    fpx_metrics_t *metrics;        //  owned; NULL: not counted
    //  What the binds resolved to (an ephemeral port of tcp://HOST:*, the
    //  path of ipc://*), set by the broker once every bind succeeded, and
    //  the metrics server's http://HOST:PORT (set by fpx_metrics_http_new;
    //  "" when off).
    char endpoints [FPX_MAX_BINDS][256];
    char metrics_url [128];
    //  Called by the broker, on its thread, once it listens on every
    //  endpoint and before it serves a request; NULL: nothing.
    void (*listening) (const fpx_server_t *server);
};

#endif
