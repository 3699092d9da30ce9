/*  driver.c — fpx-loadtest's client threads.

    Closed loop (no --rate): each client keeps `pipeline` requests in
    flight and sends the next as soon as one completes; requests are
    numbered from one shared counter, so --requests R means R in all.
    Latency runs from the moment a request is handed to the engine.

    Open loop (--rate QPS): request number t is due at start + t/QPS,
    client (t mod clients) sends it; latency runs from that intended time,
    not from when the client got round to sending it, so a stall shows
    up as the latency it caused to every request it delayed (no
    coordinated omission). A client that is behind sends at once.

    Every loop ends by itself: issuing stops after R requests or at the
    end of --duration, and every request in flight completes or expires
    (LT_TIMEOUT_MS) after that.
*/
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "loadtest.h"

#define S_LOAD(p)     __atomic_load_n ((p), __ATOMIC_RELAXED)
#define S_STORE(p, v) __atomic_store_n ((p), (v), __ATOMIC_RELAXED)

//  Open loop: below this the wait for a due time is a short sleep between
//  non-blocking receives; it bounds how late a completion is seen then.
#define S_OPEN_LOOP_NAP_NS 50000

int64_t
lt_now_ns (void)
{
    struct timespec now;
    clock_gettime (CLOCK_MONOTONIC, &now);
    return (int64_t) now.tv_sec * 1000000000 + now.tv_nsec;
}

static void
s_sleep_until (int64_t when_ns)
{
    struct timespec until = { .tv_sec = when_ns / 1000000000, .tv_nsec = when_ns % 1000000000 };
    while (clock_nanosleep (CLOCK_MONOTONIC, TIMER_ABSTIME, &until, NULL) == EINTR)
        ;
}

uint64_t
lt_slot_bytes (const lt_options_t *options, const lt_slot_t *slot)
{
    if (slot->op == LT_OP_ECHO)
        return (uint64_t) options->payload;
    return (uint64_t) slot->n * (uint64_t) options->dim * sizeof (float);
}

/* ---- requests --------------------------------------------------------------- */

static lt_op_t
s_op_of (const lt_options_t *options, int64_t ticket)
{
    if (options->echo)
        return LT_OP_ECHO;
    if (options->workload == LT_WL_ADD)
        return LT_OP_ADD;
    if (options->workload == LT_WL_MIXED && ticket % (options->mixed_ratio + 1) == options->mixed_ratio)
        return LT_OP_ADD;
    return LT_OP_SEARCH;
}

//  Fills slot for request number ticket, due at intended_ns.
static void
s_prepare (lt_client_t *client, lt_slot_t *slot, int64_t ticket, int64_t intended_ns)
{
    const lt_options_t *options = client->options;
    const lt_pool_t *pool = client->pool;
    slot->op = s_op_of (options, ticket);
    slot->ticket = ticket;
    slot->n = options->nq;
    slot->x = NULL;
    if (slot->op == LT_OP_SEARCH) {
        int64_t row = (ticket % (pool->query_rows / options->nq)) * options->nq;
        slot->x = pool->queries + (size_t) row * (size_t) pool->d;
    }
    else
    if (slot->op == LT_OP_ADD) {
        int64_t row = (ticket % (pool->add_rows / options->nq)) * options->nq;
        slot->x = pool->adds + (size_t) row * (size_t) pool->d;
    }
    slot->intended_ns = intended_ns;
    slot->status = 0;
    slot->busy = true;
}

//  Records a completed request.
static void
s_finish (lt_client_t *client, lt_slot_t *slot)
{
    int64_t now = lt_now_ns ();
    if (slot->status == 0) {
        lt_hist_record (&client->hist, (uint64_t) (now - slot->intended_ns));
        S_STORE (&client->bytes, S_LOAD (&client->bytes) + lt_slot_bytes (client->options, slot));
    }
    else {
        if (S_LOAD (&client->errors) == 0)
            snprintf (client->first_error, sizeof client->first_error, "%s (%s)",
                      client->engine->errmsg (client, slot->status), fpx_error_name (slot->status));
        S_STORE (&client->errors, S_LOAD (&client->errors) + 1);
    }
    S_STORE (&client->done, S_LOAD (&client->done) + 1);
    slot->busy = false;
}

static lt_slot_t *
s_free_slot (lt_client_t *client)
{
    for (int i = 0; i < client->nslots; i++)
        if (!client->slots [i].busy)
            return &client->slots [i];
    return NULL;
}

//  Sends slot on an async engine; a failed send completes it at once.
//  Returns 1 when it is in flight.
static int
s_send (lt_client_t *client, lt_slot_t *slot)
{
    slot->status = client->engine->send (client, slot);
    if (slot->status == 0)
        return 1;
    s_finish (client, slot);
    return 0;
}

//  Waits for one completion (up to timeout_ms) and records it. Returns 1
//  if one came.
static int
s_receive (lt_client_t *client, int timeout_ms)
{
    lt_slot_t *slot = NULL;
    if (client->engine->recv (client, timeout_ms, &slot) != 1 || !slot)
        return 0;
    s_finish (client, slot);
    return 1;
}

/* ---- closed loop ---------------------------------------------------------------- */

//  The next request number, or -1 once the run issues no more.
static int64_t
s_ticket (lt_run_t *run)
{
    if (__atomic_load_n (&run->stop, __ATOMIC_ACQUIRE))
        return -1;
    if (run->end_ns && lt_now_ns () >= run->end_ns) {
        __atomic_store_n (&run->stop, 1, __ATOMIC_RELEASE);
        return -1;
    }
    int64_t ticket = __atomic_fetch_add (&run->issued, 1, __ATOMIC_RELAXED);
    if (run->options->requests && ticket >= run->options->requests) {
        __atomic_store_n (&run->stop, 1, __ATOMIC_RELEASE);
        return -1;
    }
    return ticket;
}

static void
s_closed_loop (lt_client_t *client)
{
    lt_run_t *run = client->run;
    if (client->nslots == 1 || !client->engine->send) {
        for (int64_t ticket; (ticket = s_ticket (run)) >= 0; ) {
            lt_slot_t *slot = &client->slots [0];
            s_prepare (client, slot, ticket, lt_now_ns ());
            slot->status = client->engine->call (client, slot);
            s_finish (client, slot);
        }
        return;
    }
    int in_flight = 0;
    bool more = true;
    while (more || in_flight > 0) {
        while (more && in_flight < client->nslots) {
            int64_t ticket = s_ticket (run);
            if (ticket < 0) {
                more = false;
                break;
            }
            lt_slot_t *slot = s_free_slot (client);
            s_prepare (client, slot, ticket, lt_now_ns ());
            in_flight += s_send (client, slot);
        }
        //  Requests expire after LT_TIMEOUT_MS, so this ends.
        if (in_flight > 0)
            in_flight -= s_receive (client, 1000);
    }
}

/* ---- open loop -------------------------------------------------------------------- */

//  Request number j of this client and when it is due; false past the end.
static bool
s_due (lt_client_t *client, int64_t j, int64_t *ticket, int64_t *due_ns)
{
    const lt_options_t *options = client->options;
    *ticket = client->index + j * options->clients;
    *due_ns = client->run->start_ns + (int64_t) ((double) *ticket * 1e9 / options->rate);
    if (options->requests && *ticket >= options->requests)
        return false;
    if (client->run->end_ns && *due_ns >= client->run->end_ns)
        return false;
    return true;
}

static void
s_open_loop (lt_client_t *client)
{
    int64_t j = 0, ticket, due;
    bool more = s_due (client, j, &ticket, &due);
    if (client->nslots == 1 || !client->engine->send) {
        for (; more; more = s_due (client, ++j, &ticket, &due)) {
            s_sleep_until (due);
            lt_slot_t *slot = &client->slots [0];
            s_prepare (client, slot, ticket, due);
            slot->status = client->engine->call (client, slot);
            s_finish (client, slot);
        }
        return;
    }
    int in_flight = 0;
    while (more || in_flight > 0) {
        int64_t now = lt_now_ns ();
        while (more && in_flight < client->nslots && now >= due) {
            lt_slot_t *slot = s_free_slot (client);
            s_prepare (client, slot, ticket, due);
            in_flight += s_send (client, slot);
            more = s_due (client, ++j, &ticket, &due);
        }
        if (in_flight == 0) {
            if (more)
                s_sleep_until (due);
            continue;
        }
        if (!more || in_flight == client->nslots) {
            in_flight -= s_receive (client, 1000);
            continue;
        }
        int64_t wait_ns = due - lt_now_ns ();
        if (wait_ns >= 1000000)
            in_flight -= s_receive (client, (int) (wait_ns / 1000000));
        else
        if (s_receive (client, 0))
            in_flight--;
        else
        if (wait_ns > 0) {
            int64_t nap = wait_ns < S_OPEN_LOOP_NAP_NS ? wait_ns : S_OPEN_LOOP_NAP_NS;
            s_sleep_until (lt_now_ns () + nap);
        }
    }
}

/* ---- threads ---------------------------------------------------------------------- */

//  Client threads signal their end; the main thread waits for it, waking
//  each second for the progress line. The condition variable runs on
//  CLOCK_MONOTONIC, the clock of every deadline here (s_wait_clients).
static pthread_mutex_t s_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t s_finished_cond;
static pthread_once_t s_finished_once = PTHREAD_ONCE_INIT;
static int s_finished;

static void
s_finished_init (void)
{
    pthread_condattr_t attr;
    pthread_condattr_init (&attr);
    pthread_condattr_setclock (&attr, CLOCK_MONOTONIC);
    pthread_cond_init (&s_finished_cond, &attr);
    pthread_condattr_destroy (&attr);
}

static void *
s_client_main (void *arg)
{
    lt_client_t *client = arg;
    if (client->options->rate > 0)
        s_open_loop (client);
    else
        s_closed_loop (client);
    pthread_mutex_lock (&s_mutex);
    s_finished++;
    pthread_cond_signal (&s_finished_cond);
    pthread_mutex_unlock (&s_mutex);
    return NULL;
}

//  Allocates a client's slots with their result buffers.
static int
s_client_init (lt_client_t *client, const lt_options_t *options)
{
    int nslots = options->pipeline;
    client->slots = calloc ((size_t) nslots, sizeof *client->slots);
    if (!client->slots)
        return -1;
    client->nslots = nslots;
    size_t results = options->echo ? 0 : (size_t) options->nq * (size_t) options->k;
    for (int i = 0; i < nslots && results; i++) {
        client->slots [i].distances = malloc (results * sizeof (float));
        client->slots [i].labels = malloc (results * sizeof (int64_t));
        if (!client->slots [i].distances || !client->slots [i].labels)
            return -1;
    }
    return 0;
}

static void
s_client_free (lt_client_t *client)
{
    for (int i = 0; client->slots && i < client->nslots; i++) {
        free (client->slots [i].distances);
        free (client->slots [i].labels);
    }
    free (client->slots);
}

//  "12.3k"-style numbers keep the progress line short.
static void
s_progress (lt_client_t *clients, int count, const lt_run_t *run, int64_t now,
            uint64_t *last_done, int64_t *last_ns)
{
    static lt_hist_t merged;
    lt_hist_reset (&merged);
    uint64_t done = 0, errors = 0;
    for (int i = 0; i < count; i++) {
        lt_hist_merge (&merged, &clients [i].hist);
        done += S_LOAD (&clients [i].done);
        errors += S_LOAD (&clients [i].errors);
    }
    double interval = (double) (now - *last_ns) / 1e9;
    double rate = interval > 0 ? (double) (done - *last_done) / interval : 0;
    double elapsed = (double) (now - run->start_ns) / 1e9;
    double eta = 0;
    if (run->end_ns)
        eta = (double) (run->end_ns - now) / 1e9;
    else
    if (run->options->requests && rate > 0)
        eta = (double) (run->options->requests - (int64_t) done) / rate;
    fprintf (stderr, "\r\033[K%7.1f s  %10llu req  %10.0f req/s  p50 %8.1f us  p99 %8.1f us"
             "  errors %llu  ETA %.0f s", elapsed, (unsigned long long) done, rate,
             (double) lt_hist_quantile (&merged, 0.50) / 1e3,
             (double) lt_hist_quantile (&merged, 0.99) / 1e3,
             (unsigned long long) errors, eta < 0 ? 0 : eta);
    fflush (stderr);
    *last_done = done;
    *last_ns = now;
}

//  Waits for every client thread, drawing the progress line meanwhile.
static void
s_wait_clients (lt_client_t *clients, int count, const lt_run_t *run, bool progress)
{
    uint64_t last_done = 0;
    int64_t last_ns = run->start_ns;
    pthread_mutex_lock (&s_mutex);
    while (s_finished < count) {
        int64_t wake = lt_now_ns () + 1000000000;
        struct timespec until = { .tv_sec = wake / 1000000000, .tv_nsec = wake % 1000000000 };
        pthread_cond_timedwait (&s_finished_cond, &s_mutex, &until);
        if (progress && s_finished < count) {
            pthread_mutex_unlock (&s_mutex);
            s_progress (clients, count, run, lt_now_ns (), &last_done, &last_ns);
            pthread_mutex_lock (&s_mutex);
        }
    }
    pthread_mutex_unlock (&s_mutex);
    if (progress)
        fprintf (stderr, "\r\033[K");
}

static void
s_collect (lt_client_t *clients, int count, lt_result_t *result)
{
    for (int i = 0; i < count; i++) {
        lt_client_t *client = &clients [i];
        lt_hist_merge (&result->hist, &client->hist);
        lt_hist_merge (&result->tenant_hist [client->tenant], &client->hist);
        result->requests += client->done;
        result->errors += client->errors;
        result->bytes += client->bytes;
        result->tenant_requests [client->tenant] += client->done;
        result->tenant_errors [client->tenant] += client->errors;
        if (client->errors)
            fprintf (stderr, "fpx-loadtest: %s client %d: %llu error(s), the first: %s\n",
                     result->mode, i, (unsigned long long) client->errors, client->first_error);
    }
}

//  --warm-mb: touches and frees that much memory just before the clock
//  starts. A virtual machine that hands free memory back to its host
//  (free page reporting) must have the host back it again on first touch:
//  faulting in memory that has been free for a while ran 6 to 8 times
//  slower here than memory freed a moment ago. An add grows the index
//  into fresh memory, so without this its figures depend on which run
//  (remote or in-process, this one or the one before) happened to get
//  recently freed memory. Huge pages, as the server's and the in-process
//  FAISS's large arrays (GLIBC_TUNABLES, main.c), so that the memory goes
//  back as the blocks they take.
static void
s_warm_memory (int64_t mib)
{
    size_t size = (size_t) mib << 20;
    if (size == 0)
        return;
    volatile char *p = mmap (NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                             -1, 0);
    if (p == MAP_FAILED) {
        fprintf (stderr, "fpx-loadtest: --warm-mb: cannot map %lld MiB\n", (long long) mib);
        return;
    }
    madvise ((void *) p, size, MADV_HUGEPAGE);
    for (size_t i = 0; i < size; i += 4096)
        p [i] = 1;
    munmap ((void *) p, size);
}

//  Vectors in the indexes the clients worked on: every client's own with
//  --anonymous, else each tenant's shared one once (client t is the first
//  of tenant t). -1 when the engine cannot tell.
static int64_t
s_ntotal (lt_client_t *clients, int count, const lt_options_t *options,
          const lt_engine_t *engine)
{
    if (!engine->ntotal)
        return -1;
    int64_t total = 0;
    for (int i = 0; i < count; i++) {
        if (!options->anonymous && i >= options->tenants)
            break;
        int64_t n = engine->ntotal (&clients [i]);
        if (n < 0)
            return -1;
        total += n;
    }
    return total;
}

//  The command run while the clients' connections, and their indexes,
//  still exist (make bench samples the server's memory there).
static int
s_after (const char *command, int64_t ntotal)
{
    char text [32];
    snprintf (text, sizeof text, "%lld", (long long) ntotal);
    setenv ("FPX_LT_NTOTAL", text, 1);
    fflush (stdout);
    int status = system (command);
    if (status != 0) {
        fprintf (stderr, "fpx-loadtest: '%s' failed (status %d)\n", command, status);
        return -1;
    }
    return 0;
}

int
lt_drive (const lt_options_t *options, const lt_pool_t *pool, lt_targets_t *targets,
          const lt_engine_t *engine, bool progress, const char *after_cmd,
          lt_result_t *result)
{
    memset (result, 0, sizeof *result);
    result->mode = engine->mode;
    result->ntotal = -1;
    lt_run_t run = { .options = options, .pool = pool, .targets = targets, .engine = engine };
    run.ncores = (int) sysconf (_SC_NPROCESSORS_ONLN);
    if (run.ncores < 1)
        run.ncores = 1;
    int count = options->clients;
    lt_client_t *clients = calloc ((size_t) count, sizeof *clients);
    if (!clients) {
        fprintf (stderr, "fpx-loadtest: out of memory\n");
        return -1;
    }
    pthread_once (&s_finished_once, s_finished_init);
    int rc = 0, opened = 0;
    for (; opened < count && rc == 0; opened++) {
        lt_client_t *client = &clients [opened];
        *client = (lt_client_t) { .index = opened, .tenant = opened % options->tenants,
                                  .engine = engine, .options = options, .pool = pool,
                                  .run = &run };
        if (s_client_init (client, options) || engine->open (client)) {
            fprintf (stderr, "fpx-loadtest: %s client %d could not start\n", engine->mode, opened);
            rc = -1;
        }
    }
    int started = 0;
    if (rc == 0) {
        s_warm_memory (options->warm_mb);
        s_finished = 0;
        run.start_ns = lt_now_ns ();
        run.end_ns = options->requests ? 0
                   : run.start_ns + (int64_t) (options->duration_s * 1e9);
        for (; started < count; started++)
            if (pthread_create (&clients [started].thread, NULL, s_client_main, &clients [started])) {
                fprintf (stderr, "fpx-loadtest: cannot start client thread %d\n", started);
                __atomic_store_n (&run.stop, 1, __ATOMIC_RELEASE);
                rc = -1;
                break;
            }
        s_wait_clients (clients, started, &run, progress);
        result->seconds = (double) (lt_now_ns () - run.start_ns) / 1e9;
        for (int i = 0; i < started; i++)
            pthread_join (clients [i].thread, NULL);
        s_collect (clients, started, result);
        result->ntotal = s_ntotal (clients, started, options, engine);
        if (rc == 0 && after_cmd)
            rc = s_after (after_cmd, result->ntotal);
    }
    for (int i = 0; i < opened; i++) {
        if (clients [i].handle)
            engine->close (&clients [i]);
        s_client_free (&clients [i]);
    }
    free (clients);
    return rc;
}
