/*  worker.h — the worker pool of one server (server->workers).

    Each worker is a thread with its own DEALER on the broker's inproc
    backend (FPX_BACKEND_ENDPOINT in the server's context), serving one
    job at a time: a request, a batch of searches, the reap of a closed
    connection, or stop. The pool holds per-worker scratch only; what the
    workers share is the server's (registry, transfers, budget, …).
*/
#ifndef FPX_WORKER_H_INCLUDED
#define FPX_WORKER_H_INCLUDED

#include "server.h"

typedef struct fpx_workers_t fpx_workers_t;

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
