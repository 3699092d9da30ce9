/*  config.h — faissproxyd's configuration as main.c parses it: binds,
    limits, keys and tenants, CURVE, storage and the memory budget.

    Filled once before the server starts and read-only after; every part
    reads it through server->config (or a pointer it was given).
*/
#ifndef FPX_CONFIG_H_INCLUDED
#define FPX_CONFIG_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fpx_protocol.h"

#define FPX_MAX_BINDS        16

/*  A key as the server keeps it: its hash only (auth.h), and its role.  */
typedef struct {
    char tenant [FPX_NAME_MAX + 1];
    uint8_t hash [32];             //  FPX_KEY_HASH_SIZE
    int role;                      //  fpx_role_t
    uint32_t tenant_id;
} fpx_key_t;

/*  One tenant's quotas (tenant_limits.h); 0: unlimited.                        */
typedef struct {
    int64_t max_indexes;           //  named + anonymous entries
    int64_t max_vectors;           //  ntotal over its indexes
    int64_t max_memory_mb;         //  serialized size of its indexes
    int64_t max_disk_mb;           //  snapshots + logs of its named indexes
    int64_t max_inflight;          //  requests queued + running
    int64_t deadline_ms;           //  from arrival to answer
} fpx_tenant_limits_t;

typedef struct {
    const char *binds [FPX_MAX_BINDS];
    int nbinds;
    int workers;
    size_t max_message;            //  bytes in one whole request
    size_t max_queue;              //  requests waiting for a worker
    const char *data_dir;
    int fsync;                     //  fpx_fsync_t
    uint64_t snapshot_log_bytes;
    double snapshot_interval_s;
    int log_level;
    fpx_key_t *keys;               //  owned
    int nkeys;
    char (*tenants) [FPX_NAME_MAX + 1];  //  tenant id → name, owned
    int ntenants;
    int ncores;
    int spin_us;                   //  busy-poll before sleeping (--spin-us)
    long rebuild_background_min;   //  HNSW removals rebuilt in the background from (0: never)
    fpx_tenant_limits_t *tenant_limits;  //  one per tenant, owned
    size_t max_memory;             //  resident bytes (--max-memory-mb); 0: none
    size_t memory_budget;          //  bytes of named indexes in memory
                                   //  (--memory-budget-mb); 0: none (budget.h)
    size_t max_conn_inflight;      //  requests in flight per connection
    size_t max_conn_unread;        //  unread reply bytes per connection
    size_t max_unauthenticated;    //  bytes unauthenticated peers' unfinished
                                   //  messages may hold together; 0: as one connection
    double auth_delay_max;         //  s a failing peer waits at most (--auth-delay-max-ms)
    bool curve;                    //  the frontend is a CURVE server
    uint8_t curve_secret [32];     //  --curve-secret-file
    char curve_public [41];        //  its public key, Z85
    uint8_t (*curve_clients) [32]; //  --curve-clients-file, owned; none: any
    int ncurve_clients;
    const char *metrics_bind;      //  --metrics-bind HOST:PORT; NULL: off
    const char *endpoint_file;     //  --endpoint-file PATH; NULL: none
} fpx_config_t;

#endif
