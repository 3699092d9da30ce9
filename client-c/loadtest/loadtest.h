/*  loadtest.h — fpx-loadtest's internal interfaces.

    fpx-loadtest drives a faissproxyd over libfaissproxy (and, with
    --inprocess, FAISS linked into the harness; with --echo, a raw ZeroMQ
    echo) and reports latency percentiles and throughput. Modules:
      main.c     options, setup, the run, the report (table and JSON)
      hist.c     the log-linear latency histogram (HDR-style)
      data.c     seeded vector generation (uniform or clustered)
      driver.c   client threads: closed and open loop, progress line
      remote.c   the engine on libfaissproxy (sync and pipelined)
      inproc.c   the engine on FAISS's C API, in this process
      echo.c     the engine on a raw DEALER↔ROUTER echo
    Nothing here is installed or used by other parts of faissproxy.
*/
#ifndef LOADTEST_H_INCLUDED
#define LOADTEST_H_INCLUDED

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "faissproxy.h"

#define LT_TENANTS_MAX   16
#define LT_CLIENTS_MAX   1024
#define LT_PIPELINE_MAX  FPX_MAX_IN_FLIGHT
#define LT_TIMEOUT_MS    120000     //  per request, remote engines

/* ---- histogram (hist.c) --------------------------------------------------
    Log-linear buckets over nanoseconds, as HdrHistogram lays them out:
    values below 2^LT_HIST_SUB_BITS get one bucket each; above, every
    power-of-two range is split into 2^(LT_HIST_SUB_BITS-1) equal buckets,
    so any value is known within 1/2^(LT_HIST_SUB_BITS-1) (0.8 %) of
    itself. Values from 2^LT_HIST_MAX_BITS ns (about 5 hours) land in the
    top bucket; max is exact. Percentiles report a bucket's highest value
    (never less than the true one), capped at max.
    One writer thread per histogram; readers (the progress line) may read
    it concurrently and see a slightly stale but consistent-enough view
    (relaxed atomics).                                                    */
#define LT_HIST_SUB_BITS 8
#define LT_HIST_MAX_BITS 44
#define LT_HIST_BUCKETS  ((LT_HIST_MAX_BITS - LT_HIST_SUB_BITS + 2) << (LT_HIST_SUB_BITS - 1))

typedef struct {
    uint64_t counts [LT_HIST_BUCKETS];
    uint64_t total;
    uint64_t sum_ns;
    uint64_t max_ns;
} lt_hist_t;

void lt_hist_reset (lt_hist_t *self);
void lt_hist_record (lt_hist_t *self, uint64_t ns);
/*  Adds a snapshot of from into self (self must not be read concurrently). */
void lt_hist_merge (lt_hist_t *self, const lt_hist_t *from);
/*  The value at quantile q (0..1) in ns; 0 if empty.                     */
uint64_t lt_hist_quantile (const lt_hist_t *self, double q);
/*  Bucket index of a value and the highest value of a bucket (for tests). */
int lt_hist_index (uint64_t ns);
uint64_t lt_hist_bucket_high (int index);

/* ---- data (data.c) --------------------------------------------------------- */

typedef enum { LT_DATA_UNIFORM, LT_DATA_CLUSTERED } lt_data_kind_t;

/*  Fills x[n·d] with the rows [first, first + n) of stream `stream` of
    the data set (seed, kind): the same arguments always give the same
    vectors, whatever the order or the thread. Uniform: each component in
    [0, 1). Clustered: 64 centres drawn uniformly, each row a centre plus
    Gaussian noise of sigma 0.05; every stream shares the centres.       */
void lt_data_fill (float *x, int64_t n, int d, uint64_t seed, lt_data_kind_t kind,
                   uint64_t stream, int64_t first);

/*  Streams: base vectors, training vectors, queries, vectors to add.     */
enum { LT_STREAM_BASE = 1, LT_STREAM_TRAIN = 2, LT_STREAM_QUERY = 3, LT_STREAM_ADD = 4 };

/* ---- options and shared run state (main.c) ---------------------------------- */

typedef enum { LT_WL_SEARCH, LT_WL_ADD, LT_WL_MIXED } lt_workload_t;

typedef struct {
    const char *server;
    const char *keys [LT_TENANTS_MAX];
    int nkeys;
    lt_workload_t workload;
    int mixed_ratio;                //  mixed:R — R searches per add
    const char *factory;
    const char *index_name;         //  --index: use an existing index
    int dim;
    int64_t nb, nq;
    int k;
    int clients, pipeline, tenants;
    int64_t requests;               //  0: --duration
    double duration_s;
    double rate;                    //  0: closed loop
    bool inprocess, json, keep;
    bool anonymous;                 //  each client its own anonymous index
    int64_t warm_mb;                //  memory touched before each run
    int64_t rounds;                 //  remote / in-process alternations
    bool keep_awake;                //  SCHED_IDLE spinners during the runs
    const char *after_remote;       //  shell command run before the remote
                                    //  connections close
    lt_data_kind_t data;
    uint64_t seed;
    bool echo;
    int64_t payload, reply_payload; //  --echo
} lt_options_t;

/*  The data every engine of one run works on, shared read-only.         */
typedef struct {
    int d;
    int64_t query_rows;             //  a multiple of nq
    float *queries;
    int64_t add_rows;               //  a multiple of nq
    float *adds;
    uint8_t *payload;               //  --echo
} lt_pool_t;

/* ---- engines and the driver ----------------------------------------------- */

typedef enum { LT_OP_SEARCH, LT_OP_ADD, LT_OP_ECHO } lt_op_t;

/*  One request slot of a client: what it sends, where results land.    */
typedef struct {
    lt_op_t op;
    int64_t ticket;
    const float *x;                 //  nq rows of the pool
    int64_t n;
    float *distances;               //  nq·k, owned by the driver
    int64_t *labels;
    uint64_t id;                    //  async engines
    int64_t intended_ns;            //  latency counts from here
    int status;
    bool busy;
} lt_slot_t;

typedef struct lt_engine_t lt_engine_t;
typedef struct lt_client_t lt_client_t;

/*  A client thread's state.                                             */
struct lt_client_t {
    int index, tenant;
    const lt_engine_t *engine;
    void *handle;                   //  engine's per-client state
    char name [FPX_INDEX_NAME_MAX + 1];     //  remote: the index it works on
    const lt_options_t *options;
    const lt_pool_t *pool;
    struct lt_run_t *run;
    lt_slot_t *slots;               //  pipeline of them
    int nslots;
    lt_hist_t hist;                 //  successful requests
    uint64_t done, errors, bytes;   //  relaxed atomics: the progress line reads them
    char first_error [256];
    pthread_t thread;
};

/*  An engine. Sync engines implement call; async ones send and recv
    (and call, used when the pipeline is 1).                             */
struct lt_engine_t {
    const char *mode;               //  "remote", "inprocess", "echo"
    int (*open) (lt_client_t *client);
    void (*close) (lt_client_t *client);
    int (*call) (lt_client_t *client, lt_slot_t *slot);
    int (*send) (lt_client_t *client, lt_slot_t *slot);
    /*  Waits up to timeout_ms for one completion: 1 with *slot set (and
        its status), 0 none.                                             */
    int (*recv) (lt_client_t *client, int timeout_ms, lt_slot_t **slot);
    /*  A message for a failed status (may use the client's handle).     */
    const char *(*errmsg) (lt_client_t *client, int status);
    /*  Vectors in the client's index (after the run), or -1; may be NULL. */
    int64_t (*ntotal) (lt_client_t *client);
};

extern const lt_engine_t lt_engine_remote;
extern const lt_engine_t lt_engine_inproc;
extern const lt_engine_t lt_engine_echo;

/*  Where each tenant's index is, for the engines. With --anonymous each
    client uploads (remote) or loads (inprocess) its own copy of its
    tenant's template, the serialized index built at setup.            */
typedef struct {
    char names [LT_TENANTS_MAX][FPX_INDEX_NAME_MAX + 1];    //  remote
    void *local [LT_TENANTS_MAX];                           //  inprocess: FaissIndex *
    pthread_rwlock_t local_lock [LT_TENANTS_MAX];
    uint8_t *templates [LT_TENANTS_MAX];                    //  --anonymous
    size_t template_sizes [LT_TENANTS_MAX];
    const char *echo_endpoint;
} lt_targets_t;

/*  The outcome of one run of one engine.                                */
typedef struct {
    const char *mode;
    lt_hist_t hist;
    uint64_t requests, errors, bytes;
    double seconds;
    int64_t ntotal;                 //  vectors in the indexes used, after; -1 unknown
    lt_hist_t tenant_hist [LT_TENANTS_MAX];
    uint64_t tenant_requests [LT_TENANTS_MAX], tenant_errors [LT_TENANTS_MAX];
} lt_result_t;

typedef struct lt_run_t {
    const lt_options_t *options;
    const lt_pool_t *pool;
    lt_targets_t *targets;
    const lt_engine_t *engine;
    int64_t start_ns, end_ns;       //  end_ns: --duration's end, else 0
    int64_t issued;                 //  tickets taken (atomic)
    int stop;                       //  atomic: stop issuing
    int ncores;
    int active_calls;               //  atomic: in-process FAISS calls running
} lt_run_t;

/*  Runs the workload with engine: clients threads, a progress line on a
    terminal when progress is set. Fills *result. When the clients are
    done, and before their connections close (with them, anonymous
    indexes), counts the vectors in their indexes, then runs after_cmd
    (if not NULL) with /bin/sh, FPX_LT_NTOTAL in its environment.
    Returns 0, or -1 when a client could not start or after_cmd failed
    (message printed).                                                   */
int lt_drive (const lt_options_t *options, const lt_pool_t *pool, lt_targets_t *targets,
              const lt_engine_t *engine, bool progress, const char *after_cmd,
              lt_result_t *result);

int64_t lt_now_ns (void);

/*  Bytes of request payload of one slot.                                */
uint64_t lt_slot_bytes (const lt_options_t *options, const lt_slot_t *slot);

/* ---- echo server (echo.c) ----------------------------------------------------- */

/*  Starts a ROUTER echo thread on a free loopback port; returns its
    endpoint (static storage) or NULL. It sends back the request id
    frame and a reply of reply_payload bytes (< 0: the request's own).  */
const char *lt_echo_start (int64_t reply_payload);
void lt_echo_stop (void);

/* ---- --keep-awake (awake.c) ---------------------------------------------------- */

/*  Starts one spinning SCHED_IDLE thread per core; 0 or -1 (printed).   */
int lt_awake_start (void);
void lt_awake_stop (void);

/* ---- in-process FAISS (inproc.c) ---------------------------------------------- */

/*  Builds an index like the remote one: factory, train on ntrain rows of
    the training stream, add nb base rows. Returns NULL with a message
    printed on failure.                                                  */
void *lt_inproc_build (const lt_options_t *options, int64_t ntrain);
/*  Loads a serialized FAISS index (from fpx_serialize).                 */
void *lt_inproc_load (const uint8_t *bytes, size_t size);
void lt_inproc_free (void *index);
int64_t lt_inproc_ntotal (void *index);

#endif
