/*  worker.h — the worker pool of one server (server->workers), and what
    travels between the broker and the workers: the envelope of every job
    and the batch of searches.

    Each worker is a thread with its own DEALER on the broker's inproc
    backend (FPX_BACKEND_ENDPOINT in the server's context), serving one
    job at a time: a request, a batch of searches, the reap of a closed
    connection, or stop. The pool holds per-worker scratch only; what the
    workers share is the server's (registry, transfers, budget, …).
*/
#ifndef FPX_WORKER_H_INCLUDED
#define FPX_WORKER_H_INCLUDED

#include <stdatomic.h>
#include <stdint.h>
#include <zmq.h>

#define FPX_BACKEND_ENDPOINT "inproc://fpx-workers"

typedef struct fpx_server_s fpx_server_t;
typedef struct fpx_workers_t fpx_workers_t;

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


/*  Starts server->config.workers workers; they connect to the broker's
    backend and wait for jobs. Returns the pool (caller owns), or NULL
    when a thread cannot start (those started are left waiting: the
    caller gives up on the server and exits).                            */
fpx_workers_t *fpx_workers_new (fpx_server_t *server);

/*  Waits for every worker to end (each ends on the broker's stop job, so
    after fpx_broker_run returned), then frees the pool. NULL is fine;
    clears *self_p.                                                      */
void fpx_workers_destroy (fpx_workers_t **self_p);

#endif
