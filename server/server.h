/*  server.h — faissproxyd's internal interfaces: configuration, the broker,
    the worker pool, request execution and logging.

    Threads: one broker (owns every public socket, never calls FAISS, never
    blocks), N workers (each owns one inproc DEALER to the broker, calls
    FAISS). They share only the registry, the read-only configuration and
    atomic counters.
*/
#ifndef FPX_SERVER_H_INCLUDED
#define FPX_SERVER_H_INCLUDED

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <zmq.h>

#include "fpx_params.h"
#include "fpx_protocol.h"
#include "fpx_version.h"
#include "log.h"
#include "metrics.h"
#include "registry.h"

#define FPX_SERVER_VERSION   FPX_VERSION_STRING
#define FPX_MAX_BINDS        16
#define FPX_BACKEND_ENDPOINT "inproc://fpx-workers"
#define FPX_MONITOR_ENDPOINT "inproc://fpx-monitor"

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

typedef struct fpx_server_s fpx_server_t;
struct fpx_server_s {
    fpx_config_t config;
    void *zmq_ctx;
    fpx_registry_t *registry;
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
    //  the metrics server's http://HOST:PORT (set by fpx_metrics_http_start;
    //  "" when off).
    char endpoints [FPX_MAX_BINDS][256];
    char metrics_url [128];
    //  Called by the broker, on its thread, once it listens on every
    //  endpoint and before it serves a request; NULL: nothing.
    void (*listening) (const fpx_server_t *server);
};

//  The broker → worker envelope, frame 1 of every job.
typedef enum {
    FPX_JOB_REQUEST = 0, FPX_JOB_REAP = 1, FPX_JOB_STOP = 2, FPX_JOB_BATCH = 3
} fpx_job_kind_t;
struct fpx_batch_s;
typedef struct {
    uint32_t kind;
    uint32_t tenant_id;
    int32_t role;                  //  the key's fpx_role_t (requests only)
    uint64_t conn_id;
    struct fpx_batch_s *batch;     //  FPX_JOB_BATCH only
    double deadline;               //  monotonic seconds; 0: none
    int64_t deadline_ms;           //  the tenant's deadline_ms, for messages
    double arrived;                //  monotonic seconds the broker read it
} fpx_envelope_t;

/*  A batch: small searches that waited in the broker's queue for the same
    index with byte-identical parameters (same tenant, name, k, nprobe,
    efSearch), answered by one FAISS call. The broker owns the buffers (one
    per worker, reused): it moves each request's frames in, sends the
    worker a pointer, and gets the pointer back with every reply's frames
    filled in, which it sends on in order. Each item is answered exactly as
    it would be alone; one that cannot share the call (a bad frame, another
    connection's anonymous index) is run alone inside the batch.         */
#define FPX_BATCH_MAX          256          //  requests in one batch
#define FPX_BATCH_QUERY_BYTES  65536        //  largest query frame batched
#define FPX_BATCH_BYTES        (4 << 20)    //  query bytes in one batch
#define FPX_REPLY_ARRAYS_MAX 3
typedef struct {
    uint64_t conn_id;
    double arrived;                                 //  monotonic seconds
    zmq_msg_t request [4];                          //  routing id, header, params, queries
    zmq_msg_t reply [3 + FPX_REPLY_ARRAYS_MAX];     //  routing id, header, result, arrays
    int nreply;
} fpx_batch_item_t;

typedef struct fpx_batch_s {
    //  Which side holds the batch (1: a worker), stored with release before
    //  the pointer is sent and loaded with acquire after it arrives, so that
    //  the handoff is visible to ThreadSanitizer (libzmq is not built for it).
    atomic_int at_worker;
    uint32_t tenant_id;
    int count;
    fpx_batch_item_t items [FPX_BATCH_MAX];
} fpx_batch_t;

/*  A worker's reply being built: status, msgpack result, array frames.  */
typedef struct {
    int status;
    char error [FPX_ERROR_TEXT_MAX];
    msgpack_sbuffer result;
    msgpack_packer pk;
    zmq_msg_t arrays [FPX_REPLY_ARRAYS_MAX];
    int narrays;
} fpx_worker_reply_t;

/*  One request as a worker sees it. Array frames stay owned by the worker
    loop; aligned copies made for misaligned frames are freed after.     */
typedef struct {
    fpx_server_t *server;
    const fpx_envelope_t *envelope;
    fpx_header_t header;
    fpx_params_t params;
    zmq_msg_t *arrays;
    int narrays;
    void *scratch [4];             //  aligned copies to free
    int nscratch;
    fpx_worker_reply_t *reply;
} fpx_call_t;

// ---- broker.c
/*  Runs the broker on the calling thread until a byte arrives on signal_fd
    (written by the SIGINT/SIGTERM handler) and every request in flight has
    been answered. Returns 0, or -1 if an endpoint cannot be bound.      */
int fpx_broker_run (fpx_server_t *server, int signal_fd);

/*  Packs the ping/info result common part into pk (FPX_SERVER_INFO_KEYS
    entries): versions, and whether the server is still recovering.     */
#define FPX_SERVER_INFO_KEYS 4
void fpx_pack_server_info (msgpack_packer *pk);

// ---- metrics.c
/*  Renders server's metrics (metrics.h), the tenants' usage and the named
    indexes as the Prometheus text format (json false) or JSON. Returns a
    malloc'd text (caller owns) with its size in *size_p (OUT), or NULL
    when out of memory or past FPX_METRICS_OUTPUT_MAX. Bounded work: the
    counters, the tenants and at most FPX_METRICS_INDEXES_MAX named
    indexes; reads only atomics and the registry. Any thread.            */
char *fpx_metrics_render (fpx_server_t *server, bool json, size_t *size_p);

/*  The HTTP server of --metrics-bind HOST:PORT, on its own thread
    (metrics_http.c): GET /metrics, /metrics.json and / (the dashboard).
    PORT 0 binds one the system picks; server->metrics_url names what was
    bound. Returns the server (caller owns), or NULL with a message
    logged. Destroy it (NULL is fine) before the registry goes: it reads
    server's registry and counters until then.                           */
typedef struct fpx_metrics_http_t fpx_metrics_http_t;
fpx_metrics_http_t *fpx_metrics_http_new (fpx_server_t *server, const char *bind);
void fpx_metrics_http_destroy (fpx_metrics_http_t **self_p);

// ---- ops.c
/*  Executes one request; fills call->reply (status, result, arrays).    */
void fpx_ops_execute (fpx_call_t *call);

/*  Executes n ≥ 1 search requests with byte-identical parameters frames
    and tenant as one FAISS search where they allow it (several when their
    results together pass the message limit); fills each reply as
    fpx_ops_execute would, and counts the shared calls in batch_stats.   */
void fpx_ops_search_batch (fpx_call_t *calls, int n);

/*  Sets the reply to an error with a printf-style message. Returns code. */
int fpx_reply_error (fpx_worker_reply_t *reply, int code, const char *format, ...)
    __attribute__ ((format (printf, 3, 4)));

double fpx_monotonic_seconds (void);

/*  zmq_poll, after looking for events for up to spin_us µs without
    sleeping (--spin-us).                                                */
int fpx_poll (zmq_pollitem_t *items, int count, long timeout_ms, int spin_us);

#endif
