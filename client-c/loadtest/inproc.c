/*  inproc.c — fpx-loadtest's in-process baseline: the same workload on
    FAISS linked into the harness, through FAISS's C API, so that remote
    and in-process figures come from one machine state.

    Fairness with the server: the same locking (a read lock per index
    for search, a write lock for add, as faissproxyd's registry) and the
    same OpenMP and OpenBLAS budget (each call gets cores /
    calls-running-now threads, never more than its rows), so concurrent
    small searches run one thread each here as there. The pipeline does
    not apply: a FAISS call in-process is synchronous, so each client
    thread runs one at a time. With --anonymous each client loads its own
    copy of its tenant's template, as each remote client uploads one, and
    locks only it.                                                       */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <faiss/c_api/Index_c.h>
#include <faiss/c_api/error_c.h>
#include <faiss/c_api/index_factory_c.h>
#include <faiss/c_api/index_io_c.h>

#include "loadtest.h"
#include "fpx_runtime.h"

#define S_CHUNK_ROWS 65536

static int
s_cores (void)
{
    long cores = sysconf (_SC_NPROCESSORS_ONLN);
    return cores < 1 ? 1 : (int) cores;
}

void *
lt_inproc_build (const lt_options_t *options, int64_t ntrain)
{
    FaissIndex *index = NULL;
    fpx_runtime_threads (s_cores (), 1, 0, 0);
    if (faiss_index_factory (&index, options->dim, options->factory, METRIC_L2)) {
        fprintf (stderr, "fpx-loadtest: in-process index_factory (%d, \"%s\"): %s\n",
                 options->dim, options->factory, faiss_get_last_error ());
        return NULL;
    }
    int64_t rows = options->nb < S_CHUNK_ROWS ? options->nb : S_CHUNK_ROWS;
    if (ntrain > rows)
        rows = ntrain;
    float *x = malloc ((size_t) (rows ? rows : 1) * (size_t) options->dim * sizeof *x);
    if (!x) {
        fprintf (stderr, "fpx-loadtest: out of memory building the in-process index\n");
        faiss_Index_free (index);
        return NULL;
    }
    int rc = 0;
    if (!faiss_Index_is_trained (index)) {
        lt_data_fill (x, ntrain, options->dim, options->seed, options->data, LT_STREAM_TRAIN, 0);
        rc = faiss_Index_train (index, ntrain, x);
    }
    for (int64_t first = 0; rc == 0 && first < options->nb; first += S_CHUNK_ROWS) {
        int64_t n = options->nb - first < S_CHUNK_ROWS ? options->nb - first : S_CHUNK_ROWS;
        lt_data_fill (x, n, options->dim, options->seed, options->data, LT_STREAM_BASE, first);
        rc = faiss_Index_add (index, n, x);
    }
    free (x);
    if (rc) {
        fprintf (stderr, "fpx-loadtest: in-process train/add: %s\n", faiss_get_last_error ());
        faiss_Index_free (index);
        return NULL;
    }
    return index;
}

void *
lt_inproc_load (const uint8_t *bytes, size_t size)
{
    FILE *file = fmemopen ((void *) bytes, size, "rb");
    if (!file) {
        perror ("fpx-loadtest: fmemopen");
        return NULL;
    }
    FaissIndex *index = NULL;
    if (faiss_read_index (file, 0, &index)) {
        fprintf (stderr, "fpx-loadtest: cannot load the downloaded index: %s\n",
                 faiss_get_last_error ());
        index = NULL;
    }
    fclose (file);
    return index;
}

void
lt_inproc_free (void *index)
{
    if (index)
        faiss_Index_free (index);
}

int64_t
lt_inproc_ntotal (void *index)
{
    return faiss_Index_ntotal (index);
}

/* ---- the engine --------------------------------------------------------------- */

//  A client's index and the lock it takes on it: its tenant's shared
//  ones, or with --anonymous its own.
typedef struct {
    FaissIndex *index;
    pthread_rwlock_t *lock;
    pthread_rwlock_t own_lock;
    bool owned;
} s_local_t;

static int
s_open (lt_client_t *client)
{
    lt_targets_t *targets = client->run->targets;
    s_local_t *local = calloc (1, sizeof *local);
    if (!local)
        return -1;
    if (client->options->anonymous)
        local->index = lt_inproc_load (targets->templates [client->tenant],
                                       targets->template_sizes [client->tenant]);
    else
        local->index = targets->local [client->tenant];
    if (!local->index) {
        free (local);
        return -1;
    }
    if (client->options->anonymous) {
        pthread_rwlock_init (&local->own_lock, NULL);
        local->lock = &local->own_lock;
        local->owned = true;
    }
    else
        local->lock = &targets->local_lock [client->tenant];
    client->handle = local;
    return 0;
}

static void
s_close (lt_client_t *client)
{
    s_local_t *local = client->handle;
    if (local->owned) {
        faiss_Index_free (local->index);
        pthread_rwlock_destroy (&local->own_lock);
    }
    free (local);
    client->handle = NULL;
}

//  faissproxyd's thread budget (common/fpx_runtime.c).
static void
s_threads_begin (lt_run_t *run, int64_t rows)
{
    int active = __atomic_add_fetch (&run->active_calls, 1, __ATOMIC_RELAXED);
    fpx_runtime_threads (run->ncores, active, rows, 0);
}

static void
s_threads_end (lt_run_t *run)
{
    __atomic_sub_fetch (&run->active_calls, 1, __ATOMIC_RELAXED);
}

static int
s_call (lt_client_t *client, lt_slot_t *slot)
{
    lt_run_t *run = client->run;
    s_local_t *local = client->handle;
    pthread_rwlock_t *lock = local->lock;
    FaissIndex *index = local->index;
    int rc;
    if (slot->op == LT_OP_SEARCH) {
        pthread_rwlock_rdlock (lock);
        s_threads_begin (run, slot->n);
        rc = faiss_Index_search (index, slot->n, slot->x, client->options->k,
                                 slot->distances, slot->labels);
    }
    else {
        pthread_rwlock_wrlock (lock);
        s_threads_begin (run, slot->n);
        rc = faiss_Index_add (index, slot->n, slot->x);
    }
    s_threads_end (run);
    pthread_rwlock_unlock (lock);
    return rc ? FPX_EFAISS : 0;
}

static const char *
s_errmsg (lt_client_t *client, int status)
{
    (void) client;
    (void) status;
    const char *text = faiss_get_last_error ();
    return text ? text : "FAISS error";
}

static int64_t
s_ntotal (lt_client_t *client)
{
    s_local_t *local = client->handle;
    return faiss_Index_ntotal (local->index);
}

const lt_engine_t lt_engine_inproc = {
    .mode = "inprocess", .open = s_open, .close = s_close, .call = s_call,
    .errmsg = s_errmsg, .ntotal = s_ntotal
};
