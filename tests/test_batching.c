/*  test_batching.c — search batching: small searches that wait in the
    broker's queue with byte-identical parameters share one FAISS call, and
    each is answered exactly as if it had run alone.

    One faissproxyd with --workers 1, so that requests queue behind each
    other. A "plug" (one large search on a 20000-vector Flat index, about
    a second of work, not batchable: its query frame is over 64 KiB) holds
    the only worker while a test sends what it wants queued; when the plug
    is done the queue is served, and the info counters (batched_searches,
    batched_calls, per tenant) say exactly how many requests shared calls.

    - info_fields: both tenants' counters exist and start at 0; searches
      sent one at a time (a worker free each time) are never batched.
    - equivalence: Flat, HNSW32 and IVF64,Flat, with per-request nprobe and
      efSearch variants and k values, from 4 threads each keeping 32
      searches (nq 1, some 3) in flight: every answer equals FAISS
      in-process (a serialized copy of the server's index) on the request
      alone; the counters show that batching happened. One tolerance:
      FAISS computes IVF coarse distances directly below 20 queries and
      through BLAS from 20 on, so a query whose nprobe-th and next centroid
      tie within float error may probe another list in a batch; such rows
      are counted (at most 1 %), not failed (s_coarse_tie).
    - raw_params_match_client: raw requests packed as the client packs them
      join the client's batch (the premise of the mixed tests).
    - mixed_queue (two send orders): different k, indexes, nprobe, nq in
      one queue, with requests that cannot share inside what would be a
      batch: bad vector frame sizes, NaN / infinity, an invalid k, an
      invalid nprobe, a malformed parameters frame, an untrained index (the
      shared FAISS call fails), a missing index, another tenant, and another
      connection's anonymous index (which must be FPX_ENOTFOUND while the
      owner's requests succeed, whichever of them leads). Every status and
      error text equals the same request's alone; every result equals FAISS.
      Counters equal the number of good requests in sharable groups.
    - tenancy: two tenants, same index name, same parameter bytes, same
      queries, different data: each gets its own tenant's results and
      counters.
    - drop_while_queued: searches queued behind a drop get FPX_ENOTFOUND;
      searches queued ahead of it succeed; the server lives on.
    - k_limit: k = FPX_K_MAX searches batched, equal to FAISS.
    - flat_padding: batches of 4, 5, 12, 19 and 20 queries on Flat (L2,
      inner product) and IDMap,Flat, those of 5-19 padded to FAISS's BLAS
      threshold by the server: each request gets its own rows, equal to
      FAISS alone; one call each.
    - batch_limits: 300 queued searches are served in 2 calls (256 a batch);
      80 query frames of exactly 64 KiB in 2 calls (4 MiB a batch);
      frames of 64 KiB + one row are never batched.
    - disconnect_while_queued: a client with searches on its anonymous index
      queued disconnects; the server survives (and exits cleanly, without
      leaks under ASan, in server_exit).
*/
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fpx_test.h"

#define DIM       32
#define EXTRA     20          //  reference columns beyond k (not HNSW)
#define PLUG_NB   20000
#define PLUG_NQ_MAX 60000
#define WINDOW    32          //  searches in flight per thread
#define EQ_THREADS 4
#define EQ_PER_THREAD 650

//  The server's batch limits (server/worker.h, not visible to clients).
#define BATCH_MAX          256          //  requests in one batch
#define BATCH_QUERY_BYTES  65536        //  largest query frame batched
#define BATCH_BYTES        (4 << 20)    //  query bytes in one batch

static fpx_test_server_t s_server;

/* ---- info counters ------------------------------------------------------------ */

typedef struct {
    int64_t searches;
    int64_t calls;
} counters_t;

static bool
s_counters (const char *key, counters_t *out)
{
    out->searches = out->calls = -1;
    fpx_raw_t *raw = fpx_raw_new (s_server.endpoint);
    if (!CHECK (raw, "fpx_raw_new"))
        return false;
    fpx_raw_reply_t reply;
    int status = fpx_raw_call (raw, FPX_OP_INFO, key, NULL, 0, 0, NULL, NULL, &reply);
    bool ok = CHECK (status == 0, "info: status %d (%s)", status, reply.error);
    if (ok)
        ok = CHECK (fpx_params_get_int (&reply.result, "batched_searches", &out->searches) == 0,
                    "info has no integer \"batched_searches\"")
          && CHECK (fpx_params_get_int (&reply.result, "batched_calls", &out->calls) == 0,
                    "info has no integer \"batched_calls\"");
    fpx_raw_reply_free (&reply);
    fpx_raw_destroy (&raw);
    return ok;
}

//  Checks the growth of a tenant's counters since `before`.
static void
s_check_growth (const char *key, const counters_t *before, int64_t searches, int64_t calls,
                const char *what)
{
    counters_t after;
    if (!s_counters (key, &after))
        return;
    CHECK (after.searches - before->searches == searches && after.calls - before->calls == calls,
           "%s: batched_searches grew by %lld and batched_calls by %lld, expected %lld and %lld",
           what, (long long) (after.searches - before->searches),
           (long long) (after.calls - before->calls), (long long) searches, (long long) calls);
}

/* ---- the plug: keeps the only worker busy -------------------------------------- */

static fpx_client_t *s_plug;
static float *s_plug_xq;
static float *s_plug_D;
static int64_t *s_plug_I;
static int64_t s_plug_nq;

static bool
s_plug_setup (void)
{
    s_plug = fpx_test_client (&s_server, fpx_test_key_a);
    if (!CHECK (s_plug, "fpx_client_new"))
        return false;
    float *xb = fpx_data_uniform (901, PLUG_NB, DIM);
    bool ok = CHECK_OK (s_plug, fpx_index_create (s_plug, "plug", DIM, "Flat", FPX_METRIC_L2, NULL))
           && CHECK_OK (s_plug, fpx_add (s_plug, "plug", PLUG_NB, DIM, xb, NULL));
    free (xb);
    if (!ok)
        return false;
    s_plug_xq = fpx_data_uniform (902, PLUG_NQ_MAX, DIM);
    s_plug_D = malloc (PLUG_NQ_MAX * sizeof *s_plug_D);
    s_plug_I = malloc (PLUG_NQ_MAX * sizeof *s_plug_I);
    //  About one second of work: the queue is filled in a few ms.
    double best = 1e9;
    for (int i = 0; i < 2; i++) {
        double t0 = fpx_now ();
        if (!CHECK_OK (s_plug, fpx_search (s_plug, "plug", 4000, DIM, s_plug_xq, 1, NULL,
                                           s_plug_D, s_plug_I)))
            return false;
        double t = fpx_now () - t0;
        if (t < best)
            best = t;
    }
    s_plug_nq = (int64_t) (4000 * 1.0 / (best > 1e-3 ? best : 1e-3));
    if (s_plug_nq < 8000)
        s_plug_nq = 8000;
    if (s_plug_nq > PLUG_NQ_MAX)
        s_plug_nq = PLUG_NQ_MAX;
    return true;
}

//  Occupies the worker; once this returns, requests sent queue up.
static bool
s_plug_begin (void)
{
    uint64_t id;
    if (!CHECK_OK (s_plug, fpx_search_send (s_plug, "plug", s_plug_nq, DIM, s_plug_xq, 1, NULL,
                                            s_plug_D, s_plug_I, &id)))
        return false;
    fpx_sleep_ms (150);
    return true;
}

static void
s_plug_end (void)
{
    fpx_completion_t done;
    int rc = fpx_recv (s_plug, 120000, &done);
    CHECK (rc == 1 && done.status == 0, "plug search: fpx_recv %d, status %d (%s)", rc,
           rc == 1 ? done.status : 0, fpx_client_errmsg (s_plug));
}

/* ---- twins and data --------------------------------------------------------------- */

//  The server's index, through its own serialization.
static FaissIndex *
s_twin (fpx_client_t *c, const char *name)
{
    uint8_t *bytes = NULL;
    size_t size = 0;
    if (!CHECK_OK (c, fpx_serialize (c, name, &bytes, &size)))
        return NULL;
    FaissIndex *local = fpx_local_deserialize (bytes, size);
    fpx_free (bytes);
    CHECK (local, "cannot read the serialized %s: %s", name, fpx_local_error ());
    return local;
}

//  A copy of base with one search parameter set.
static FaissIndex *
s_twin_with (const FaissIndex *base, const char *param, int value)
{
    FaissIndex *copy = base ? fpx_local_copy (base) : NULL;
    if (!CHECK (copy, "local copy"))
        return NULL;
    if (!CHECK (fpx_local_set_param (copy, param, value) == 0, "local %s=%d: %s", param, value,
                fpx_local_error ())) {
        faiss_Index_free (copy);
        return NULL;
    }
    return copy;
}

//  Creates a named index (name NULL: anonymous, its name into anon) and
//  fills it; trains on the same vectors first when it needs training.
static bool
s_create (fpx_client_t *c, const char *name, const char *factory, const float *x, int64_t n,
          char *anon)
{
    fpx_index_info_t info;
    if (!CHECK_OK (c, fpx_index_create (c, name, DIM, factory, FPX_METRIC_L2, &info)))
        return false;
    const char *used = name ? name : info.name;
    if (anon)
        snprintf (anon, FPX_INDEX_NAME_MAX + 1, "%s", info.name);
    if (!info.is_trained && !CHECK_OK (c, fpx_train (c, used, n, DIM, x)))
        return false;
    return CHECK_OK (c, fpx_add (c, used, n, DIM, x, NULL));
}

//  The quantizer of an IVF index (NULL for others).
static const FaissIndex *
s_quantizer (FaissIndex *index)
{
    FaissIndexIVF *ivf = index ? faiss_IndexIVF_cast (index) : NULL;
    return ivf ? faiss_IndexIVF_quantizer (ivf) : NULL;
}

/*  True when query x lies on the boundary of the nprobe lists an IVF search
    visits: its nprobe-th and (nprobe+1)-th centroids are equally far within
    float error. FAISS computes coarse distances directly for fewer than 20
    queries and through BLAS from 20 on (a batch), so such a query may visit
    another list in a batch than alone: a tie, not a difference.         */
static bool
s_coarse_tie (const FaissIndex *quantizer, int nprobe, const float *x)
{
    if (!quantizer || nprobe < 1 || nprobe >= faiss_Index_ntotal (quantizer))
        return false;
    float D [260];
    int64_t I [260];
    if (nprobe + 1 > 260 || faiss_Index_search (quantizer, 1, x, nprobe + 1, D, I))
        return false;
    float a = D [nprobe - 1], b = D [nprobe];
    float scale = fabsf (b) > 1 ? fabsf (b) : 1;
    return b - a <= 1e-4f * scale;
}

/* ---- jobs: one request each, through the client or as raw frames ------------------ */

typedef struct {
    //  The request.
    int opcode;                 //  0: search, else a raw request of that opcode
    fpx_client_t *client;       //  sent through the client library, or
    fpx_raw_t *raw;             //  as raw frames, with
    const char *key;            //  this key
    const char *name;
    int64_t nq;
    int k;
    fpx_search_params_t params;
    const float *x;
    size_t frame_bytes;         //  raw: query frame size; 0 means nq·DIM·4
    bool empty_frame;           //  raw: an empty query frame instead
    bool nprobe_zero;           //  raw: sends "nprobe": 0 (the client cannot)
    const char *raw_params;     //  raw: these parameter bytes instead
    size_t raw_params_size;
    //  What it gets alone.
    int expect;                 //  0, or the FPX_E… status
    const FaissIndex *local;    //  expect 0: FAISS in-process with the params
    int extra;                  //  reference columns beyond k
    int nprobe;                 //  IVF: the nprobe it runs with
    fpx_knn_t ref;
    //  What it got.
    uint64_t id;
    bool sent, done;
    int status;
    char error [FPX_ERROR_TEXT_MAX + 1];
    float *D;
    int64_t *I;
} job_t;

static void
s_job_reset (job_t *job)
{
    free (job->D);
    free (job->I);
    job->D = NULL;
    job->I = NULL;
    job->sent = job->done = false;
    job->status = 0;
    job->error [0] = 0;
    job->id = 0;
}

static void
s_job_free (job_t *job)
{
    s_job_reset (job);
    fpx_knn_free (&job->ref);
}

//  The search parameters as the client library packs them.
static void
s_pack_search (fpx_mp_t *mp, const job_t *job)
{
    fpx_mp_init (mp);
    bool nprobe = job->nprobe_zero || job->params.nprobe > 0;
    msgpack_pack_map (&mp->pk, 3 + nprobe + (job->params.efSearch > 0));
    fpx_pack_kv_str (&mp->pk, "name", job->name);
    fpx_pack_kv_int (&mp->pk, "d", DIM);
    fpx_pack_kv_int (&mp->pk, "k", job->k);
    if (nprobe)
        fpx_pack_kv_int (&mp->pk, "nprobe", job->nprobe_zero ? 0 : job->params.nprobe);
    if (job->params.efSearch > 0)
        fpx_pack_kv_int (&mp->pk, "efSearch", job->params.efSearch);
}

//  Computes job->ref when the job should succeed.
static bool
s_job_ref (job_t *job)
{
    if (job->expect != 0 || job->opcode)
        return true;
    return CHECK (job->local && fpx_local_knn (job->local, job->nq, job->x, job->k, job->extra,
                                               &job->ref) == 0,
                  "local search of %s failed: %s", job->name, fpx_local_error ());
}

static void
s_job_send (job_t *job)
{
    s_job_reset (job);
    job->sent = true;
    if (!job->opcode) {
        size_t count = (size_t) job->nq * (size_t) job->k;
        job->D = malloc (count * sizeof (float) + 1);
        job->I = malloc (count * sizeof (int64_t) + 1);
    }
    if (job->client) {
        const fpx_search_params_t *params =
            job->params.nprobe || job->params.efSearch ? &job->params : NULL;
        int rc = fpx_search_send (job->client, job->name, job->nq, DIM, job->x, job->k, params,
                                  job->D, job->I, &job->id);
        if (rc < 0) {
            //  Refused by the client library: that is its answer alone too.
            job->done = true;
            job->status = rc;
            snprintf (job->error, sizeof job->error, "%s", fpx_client_errmsg (job->client));
        }
        return;
    }
    fpx_mp_t mp;
    if (job->opcode) {
        fpx_mp_init (&mp);
        msgpack_pack_map (&mp.pk, 1);
        fpx_pack_kv_str (&mp.pk, "name", job->name);
    }
    else
        s_pack_search (&mp, job);
    uint8_t header [FPX_REQUEST_HEADER_SIZE];
    job->id = job->raw->next_id++;
    fpx_raw_header (header, job->opcode ? job->opcode : FPX_OP_SEARCH, job->id, job->key);
    const void *data [3] = { header, job->raw_params ? job->raw_params : mp.buf.data, job->x };
    size_t sizes [3] = { sizeof header, job->raw_params ? job->raw_params_size : mp.buf.size,
                         job->empty_frame ? 0
                         : job->frame_bytes ? job->frame_bytes
                         : (size_t) job->nq * DIM * sizeof (float) };
    if (fpx_raw_send (job->raw, job->opcode ? 2 : 3, data, sizes)) {
        job->done = true;
        job->status = -1000;
        snprintf (job->error, sizeof job->error, "raw send failed");
    }
    fpx_mp_free (&mp);
}

//  Takes one raw reply for the jobs.
static void
s_raw_deliver (job_t *jobs, int n, fpx_raw_t *raw, fpx_raw_reply_t *reply)
{
    for (int i = 0; i < n; i++) {
        job_t *job = &jobs [i];
        if (job->raw != raw || !job->sent || job->done || reply->header_rc != 0
        ||  job->id != reply->header.request_id)
            continue;
        job->done = true;
        job->status = reply->header.status;
        snprintf (job->error, sizeof job->error, "%s", reply->error);
        if (job->status == 0 && !job->opcode) {
            size_t count = (size_t) job->nq * (size_t) job->k;
            if (reply->nframes == 4 && reply->sizes [2] == count * sizeof (float)
            &&  reply->sizes [3] == count * sizeof (int64_t)) {
                memcpy (job->D, reply->frames [2], count * sizeof (float));
                memcpy (job->I, reply->frames [3], count * sizeof (int64_t));
            }
            else {
                job->status = -2000;
                snprintf (job->error, sizeof job->error, "malformed search reply (%d frames)",
                          reply->nframes);
            }
        }
        return;
    }
}

//  Waits for every sent job's reply (up to timeout_s). Returns how many
//  are still missing.
static int
s_collect (job_t *jobs, int n, double timeout_s)
{
    double deadline = fpx_now () + timeout_s;
    while (true) {
        int missing = 0;
        bool progress = false;
        for (int i = 0; i < n; i++) {
            job_t *job = &jobs [i];
            if (!job->sent || job->done)
                continue;
            missing++;
            if (job->client) {
                fpx_completion_t done;
                while (fpx_recv (job->client, 0, &done) == 1) {
                    progress = true;
                    for (int j = 0; j < n; j++)
                        if (jobs [j].client == job->client && jobs [j].sent && !jobs [j].done
                        &&  jobs [j].id == done.request_id) {
                            jobs [j].done = true;
                            jobs [j].status = done.status;
                            if (done.status)
                                snprintf (jobs [j].error, sizeof jobs [j].error, "%s",
                                          fpx_client_errmsg (job->client));
                            break;
                        }
                }
            }
            else {
                fpx_raw_reply_t reply;
                while (fpx_raw_recv (job->raw, &reply, 0) == 0) {
                    progress = true;
                    s_raw_deliver (jobs, n, job->raw, &reply);
                    fpx_raw_reply_free (&reply);
                }
            }
        }
        if (missing == 0 || fpx_now () > deadline)
            return missing;
        if (!progress)
            fpx_sleep_ms (1);
    }
}

/*  Compares a finished job with what it gets alone. Returns 0 when equal,
    1 when a row differs only through an IVF coarse tie, -1 otherwise
    (why says how).                                                      */
static int
s_job_verify (const job_t *job, char *why, size_t size)
{
    if (job->status != job->expect) {
        snprintf (why, size, "status %d %s (\"%s\"), expected %s", job->status,
                  fpx_error_name (job->status), job->error, fpx_error_name (job->expect));
        return -1;
    }
    if (job->expect != 0 || job->opcode)
        return 0;
    fpx_knn_t got = { .nq = job->nq, .k = job->k, .kcols = job->k, .D = job->D, .I = job->I };
    char text [400];
    if (fpx_knn_equal (&job->ref, &got, text, sizeof text))
        return 0;
    const FaissIndex *quantizer = s_quantizer ((FaissIndex *) job->local);
    int verdict = 0;
    for (int64_t q = 0; q < job->nq; q++) {
        fpx_knn_t ref_row = { 1, job->ref.k, job->ref.kcols, job->ref.D + q * job->ref.kcols,
                              job->ref.I + q * job->ref.kcols };
        fpx_knn_t got_row = { 1, job->k, job->k, job->D + q * job->k, job->I + q * job->k };
        if (fpx_knn_equal (&ref_row, &got_row, text, sizeof text))
            continue;
        if (s_coarse_tie (quantizer, job->nprobe, job->x + q * DIM)) {
            verdict = 1;
            continue;
        }
        snprintf (why, size, "%s k=%d nprobe=%d efSearch=%d nq=%lld, row %lld: %s", job->name,
                  job->k, job->params.nprobe, job->params.efSearch, (long long) job->nq,
                  (long long) q, text);
        return -1;
    }
    return verdict;
}

//  Sends jobs [from, to) in order.
static void
s_send_range (job_t *jobs, int from, int to)
{
    for (int i = from; i < to; i++)
        s_job_send (&jobs [i]);
}

//  Checks every job against its alone answer; for the failing ones also
//  sends each once more alone (the worker idle) and checks that status and
//  error text are the same. what names the round in messages.
static void
s_verify_all (job_t *jobs, int n, const char *what)
{
    int tolerated = 0;
    for (int i = 0; i < n; i++) {
        char why [600];
        int verdict = s_job_verify (&jobs [i], why, sizeof why);
        if (verdict < 0)
            FAIL ("%s: request %d (%s, %s): %s", what, i, jobs [i].name,
                  jobs [i].client ? "client" : "raw", why);
        else {
            fpx_test_pass_ ();
            tolerated += verdict;
        }
    }
    CHECK (tolerated <= 1, "%s: %d answers differ from FAISS alone through IVF coarse ties",
           what, tolerated);
    for (int i = 0; i < n; i++) {
        job_t *job = &jobs [i];
        if (job->expect == 0 || job->status != job->expect)
            continue;
        int batched_status = job->status;
        char batched_error [sizeof job->error];
        memcpy (batched_error, job->error, sizeof batched_error);
        s_job_send (job);
        s_collect (job, 1, 30);
        CHECK (job->done && job->status == batched_status && strcmp (job->error, batched_error) == 0,
               "%s: request %d (%s): in the queue %s \"%s\", alone %s \"%s\"", what, i, job->name,
               fpx_error_name (batched_status), batched_error, fpx_error_name (job->status),
               job->error);
    }
}

/* ---- info_fields ------------------------------------------------------------------ */

static void
test_info_fields (void *arg)
{
    (void) arg;
    counters_t a, b;
    REQUIRE_TRUE (s_counters (fpx_test_key_a, &a));
    REQUIRE_TRUE (s_counters (fpx_test_key_b, &b));
    //  The plug's own searches (setup) ran alone: nothing batched yet.
    CHECK (a.searches == 0 && a.calls == 0 && b.searches == 0 && b.calls == 0,
           "fresh server: counters A %lld/%lld, B %lld/%lld, expected 0",
           (long long) a.searches, (long long) a.calls, (long long) b.searches, (long long) b.calls);
    //  Searches one at a time find a worker free: never batched.
    fpx_client_t *c = fpx_test_client (&s_server, fpx_test_key_a);
    REQUIRE (c, "fpx_client_new");
    float *xb = fpx_data_uniform (51, 500, DIM);
    if (s_create (c, "info_flat", "Flat", xb, 500, NULL)) {
        float D [5];
        int64_t I [5];
        for (int i = 0; i < 10; i++)
            CHECK_OK (c, fpx_search (c, "info_flat", 1, DIM, xb + i * DIM, 5, NULL, D, I));
        s_check_growth (fpx_test_key_a, &a, 0, 0, "sequential searches");
        CHECK_OK (c, fpx_index_drop (c, "info_flat"));
    }
    free (xb);
    fpx_client_destroy (&c);
}

/* ---- equivalence ------------------------------------------------------------------ */

typedef struct {
    job_t *jobs;
    int n;
    int completed, bad, tolerated;
    char first [700];
} eq_thread_t;

static void
s_eq_account (eq_thread_t *t, job_t *job)
{
    char why [600];
    t->completed++;
    int verdict = s_job_verify (job, why, sizeof why);
    if (verdict < 0 && t->bad++ == 0)
        snprintf (t->first, sizeof t->first, "%s", why);
    if (verdict > 0)
        t->tolerated++;
    //  Keep memory flat: results are checked.
    free (job->D);
    free (job->I);
    job->D = NULL;
    job->I = NULL;
}

static void *
s_eq_thread (void *arg)
{
    eq_thread_t *t = arg;
    fpx_client_t *c = fpx_test_client (&s_server, fpx_test_key_a);
    if (!c) {
        t->bad++;
        snprintf (t->first, sizeof t->first, "fpx_client_new failed");
        return NULL;
    }
    job_t *window [WINDOW];
    int inflight = 0, next = 0;
    while (t->completed < t->n) {
        while (inflight < WINDOW && next < t->n) {
            job_t *job = &t->jobs [next++];
            job->client = c;
            s_job_send (job);
            if (job->done)
                s_eq_account (t, job);
            else
                window [inflight++] = job;
        }
        if (inflight == 0)
            continue;
        fpx_completion_t done;
        int rc = fpx_recv (c, 60000, &done);
        if (rc != 1) {
            if (t->bad++ == 0)
                snprintf (t->first, sizeof t->first, "fpx_recv returned %d with %d in flight", rc,
                          inflight);
            break;
        }
        int w = 0;
        while (w < inflight && window [w]->id != done.request_id)
            w++;
        if (w == inflight) {
            if (t->bad++ == 0)
                snprintf (t->first, sizeof t->first, "completion of unknown request %llu",
                          (unsigned long long) done.request_id);
            continue;
        }
        job_t *job = window [w];
        window [w] = window [--inflight];
        job->done = true;
        job->status = done.status;
        if (done.status)
            snprintf (job->error, sizeof job->error, "%s", fpx_client_errmsg (c));
        s_eq_account (t, job);
    }
    fpx_client_destroy (&c);
    return NULL;
}

typedef struct {
    const char *name;
    int k;
    fpx_search_params_t params;
    int nprobe;                 //  IVF: the nprobe it runs with
    int extra;
    int kind;                   //  0 Flat, 1 HNSW, 2 IVF (query pool)
    FaissIndex *local;
} variant_t;

static void
test_equivalence (void *arg)
{
    (void) arg;
    fpx_client_t *c = fpx_test_client (&s_server, fpx_test_key_a);
    REQUIRE (c, "fpx_client_new");
    float *xu = fpx_data_uniform (11, 2000, DIM);
    float *xh = fpx_data_uniform (12, 2000, DIM);
    float *xc = fpx_data_clustered (13, 4000 + 3000, DIM, 40, 0.15f);   //  IVF base + queries
    float *xq = fpx_data_uniform (14, 3000, DIM);
    FaissIndex *flat = NULL, *hnsw = NULL, *ivf = NULL;
    variant_t variants [7];
    memset (variants, 0, sizeof variants);
    eq_thread_t threads [EQ_THREADS];
    memset (threads, 0, sizeof threads);
    job_t *jobs = NULL;
    bool ready = s_create (c, "eq_flat", "Flat", xu, 2000, NULL)
              && s_create (c, "eq_hnsw", "HNSW32", xh, 2000, NULL)
              && s_create (c, "eq_ivf", "IVF64,Flat", xc, 4000, NULL)
              && CHECK_OK (c, fpx_set_parameters (c, "eq_ivf", "nprobe=2"));
    ready = ready && (flat = s_twin (c, "eq_flat")) && (hnsw = s_twin (c, "eq_hnsw"))
                  && (ivf = s_twin (c, "eq_ivf"));
    if (ready) {
        variant_t v [7] = {
            { "eq_flat", 10, { 0, 0 },  0, EXTRA, 0, fpx_local_copy (flat) },
            { "eq_flat", 4,  { 0, 0 },  0, EXTRA, 0, fpx_local_copy (flat) },
            { "eq_hnsw", 10, { 0, 0 },  0, 0,     1, fpx_local_copy (hnsw) },
            { "eq_hnsw", 10, { 0, 48 }, 0, 0,     1, s_twin_with (hnsw, "efSearch", 48) },
            { "eq_ivf",  10, { 0, 0 },  2, EXTRA, 2, s_twin_with (ivf, "nprobe", 2) },
            { "eq_ivf",  10, { 6, 0 },  6, EXTRA, 2, s_twin_with (ivf, "nprobe", 6) },
            { "eq_ivf",  8,  { 16, 0 }, 16, EXTRA, 2, s_twin_with (ivf, "nprobe", 16) },
        };
        memcpy (variants, v, sizeof v);
        for (int i = 0; i < 7; i++)
            ready = ready && CHECK (variants [i].local, "variant %d has no local twin", i);
    }
    //  Sanity: the variants differ where they should (or the test could
    //  not see parameters leak between batches).
    if (ready) {
        fpx_knn_t a, b;
        char why [256];
        if (CHECK (fpx_local_knn (variants [4].local, 50, xc + 4000 * DIM, 10, 0, &a) == 0
                && fpx_local_knn (variants [5].local, 50, xc + 4000 * DIM, 10, 0, &b) == 0,
                   "local search"))
            CHECK (!fpx_knn_equal (&a, &b, why, sizeof why),
                   "nprobe 2 and 6 give the same results: the data does not tell them apart");
        fpx_knn_free (&a);
        fpx_knn_free (&b);
        if (CHECK (fpx_local_knn (variants [2].local, 200, xq, 10, 0, &a) == 0
                && fpx_local_knn (variants [3].local, 200, xq, 10, 0, &b) == 0, "local search"))
            CHECK (!fpx_knn_equal (&a, &b, why, sizeof why),
                   "efSearch 16 and 48 give the same results: the data does not tell them apart");
        fpx_knn_free (&a);
        fpx_knn_free (&b);
    }
    counters_t before;
    ready = ready && s_counters (fpx_test_key_a, &before);
    if (ready) {
        //  The requests, reference results computed up front.
        int total = EQ_THREADS * EQ_PER_THREAD;
        jobs = calloc ((size_t) total, sizeof *jobs);
        fpx_rng_t rng;
        fpx_rng_seed (&rng, 77);
        int cursor [3] = { 0, 0, 0 };
        for (int i = 0; i < total && ready; i++) {
            const variant_t *v = &variants [fpx_rng_next (&rng) % 7];
            job_t *job = &jobs [i];
            job->name = v->name;
            job->k = v->k;
            job->params = v->params;
            job->nprobe = v->nprobe;
            job->extra = v->extra;
            job->local = v->local;
            job->nq = fpx_rng_next (&rng) % 6 == 0 ? 3 : 1;
            const float *pool = v->kind == 2 ? xc + 4000 * DIM : xq;
            int at = cursor [v->kind];
            if (at + job->nq > 3000)
                at = 0;
            cursor [v->kind] = at + (int) job->nq;
            job->x = pool + (int64_t) at * DIM;
            ready = s_job_ref (job);
        }
        for (int t = 0; t < EQ_THREADS; t++) {
            threads [t].jobs = jobs + t * EQ_PER_THREAD;
            threads [t].n = EQ_PER_THREAD;
        }
    }
    if (ready) {
        pthread_t ids [EQ_THREADS];
        for (int t = 0; t < EQ_THREADS; t++)
            pthread_create (&ids [t], NULL, s_eq_thread, &threads [t]);
        for (int t = 0; t < EQ_THREADS; t++)
            pthread_join (ids [t], NULL);
        int tolerated = 0, completed = 0;
        for (int t = 0; t < EQ_THREADS; t++) {
            CHECK (threads [t].bad == 0, "thread %d: %d of %d answers wrong, first: %s", t,
                   threads [t].bad, threads [t].n, threads [t].first);
            tolerated += threads [t].tolerated;
            completed += threads [t].completed;
        }
        CHECK_EQ (completed, EQ_THREADS * EQ_PER_THREAD);
        CHECK (tolerated <= EQ_THREADS * EQ_PER_THREAD / 100,
               "%d answers differ from FAISS alone through IVF coarse ties", tolerated);
        counters_t after;
        if (s_counters (fpx_test_key_a, &after)) {
            int64_t searches = after.searches - before.searches;
            int64_t calls = after.calls - before.calls;
            CHECK (searches >= EQ_THREADS * EQ_PER_THREAD / 4,
                   "only %lld of %d searches were batched", (long long) searches,
                   EQ_THREADS * EQ_PER_THREAD);
            CHECK (searches <= EQ_THREADS * EQ_PER_THREAD,
                   "%lld batched searches counted, only %d sent", (long long) searches,
                   EQ_THREADS * EQ_PER_THREAD);
            CHECK (calls >= 1 && calls * 2 <= searches,
                   "%lld batched calls for %lld batched searches", (long long) calls,
                   (long long) searches);
        }
    }
    if (jobs)
        for (int i = 0; i < EQ_THREADS * EQ_PER_THREAD; i++)
            s_job_free (&jobs [i]);
    free (jobs);
    for (int i = 0; i < 7; i++)
        if (variants [i].local)
            faiss_Index_free (variants [i].local);
    if (flat)
        faiss_Index_free (flat);
    if (hnsw)
        faiss_Index_free (hnsw);
    if (ivf)
        faiss_Index_free (ivf);
    fpx_index_drop (c, "eq_flat");
    fpx_index_drop (c, "eq_hnsw");
    fpx_index_drop (c, "eq_ivf");
    free (xu);
    free (xh);
    free (xc);
    free (xq);
    fpx_client_destroy (&c);
}

/* ---- the mixed queue ---------------------------------------------------------------- */

typedef struct {
    fpx_client_t *a, *b;        //  tenant A, two connections
    fpx_raw_t *raw, *raw_b;     //  raw connections; raw_b sends with tenant B's key
    FaissIndex *flat, *ivf, *anon;
    FaissIndex *ivf4, *ivf8;
    char anon_name [FPX_INDEX_NAME_MAX + 1];
    int untrained_rc;           //  a search of the untrained SQ8 index, alone
    float *xq;                  //  64 queries
    float nan_q [DIM], inf_q [DIM];
    float bad [DIM + 1];
} mixed_t;

static mixed_t s_mx;

static void
s_mixed_free (void)
{
    FaissIndex **locals [] = { &s_mx.flat, &s_mx.ivf, &s_mx.anon, &s_mx.ivf4, &s_mx.ivf8 };
    for (size_t i = 0; i < sizeof locals / sizeof locals [0]; i++)
        if (*locals [i]) {
            faiss_Index_free (*locals [i]);
            *locals [i] = NULL;
        }
    fpx_client_destroy (&s_mx.a);
    fpx_client_destroy (&s_mx.b);
    fpx_raw_destroy (&s_mx.raw);
    fpx_raw_destroy (&s_mx.raw_b);
    free (s_mx.xq);
    s_mx.xq = NULL;
}

static bool
s_mixed_setup (void)
{
    if (s_mx.a)
        return true;
    s_mx.a = fpx_test_client (&s_server, fpx_test_key_a);
    s_mx.b = fpx_test_client (&s_server, fpx_test_key_a);
    s_mx.raw = fpx_raw_new (s_server.endpoint);
    s_mx.raw_b = fpx_raw_new (s_server.endpoint);
    if (!CHECK (s_mx.a && s_mx.b && s_mx.raw && s_mx.raw_b, "connections"))
        return false;
    float *xf = fpx_data_uniform (201, 2000, DIM);
    float *xi = fpx_data_clustered (202, 4000, DIM, 30, 0.15f);
    float *xa = fpx_data_uniform (203, 1000, DIM);
    s_mx.xq = fpx_data_uniform (204, 64, DIM);
    bool ok = s_create (s_mx.a, "mx_flat", "Flat", xf, 2000, NULL)
           && s_create (s_mx.a, "mx_ivf", "IVF64,Flat", xi, 4000, NULL)
           && s_create (s_mx.a, NULL, "Flat", xa, 1000, s_mx.anon_name)
           && (s_mx.flat = s_twin (s_mx.a, "mx_flat"))
           && (s_mx.ivf = s_twin (s_mx.a, "mx_ivf"))
           && (s_mx.anon = s_twin (s_mx.a, s_mx.anon_name))
           && (s_mx.ivf4 = s_twin_with (s_mx.ivf, "nprobe", 4))
           && (s_mx.ivf8 = s_twin_with (s_mx.ivf, "nprobe", 8))
           && CHECK_OK (s_mx.a, fpx_index_create (s_mx.a, "mx_untrained", DIM, "SQ8",
                                                  FPX_METRIC_L2, NULL));
    if (ok) {
        float D [5];
        int64_t I [5];
        s_mx.untrained_rc = fpx_search (s_mx.a, "mx_untrained", 1, DIM, s_mx.xq, 5, NULL, D, I);
        //  FAISS refuses to search an untrained scalar quantizer.
        ok = CHECK (s_mx.untrained_rc == FPX_EFAISS, "a search of an untrained SQ8 index: %d %s",
                    s_mx.untrained_rc, fpx_error_name (s_mx.untrained_rc));
    }
    free (xf);
    free (xi);
    free (xa);
    ok = ok && CHECK (s_mx.anon_name [0] == '@', "anonymous name \"%s\"", s_mx.anon_name);
    for (int i = 0; i < DIM; i++) {
        s_mx.nan_q [i] = s_mx.xq [i];
        s_mx.inf_q [i] = s_mx.xq [i];
        s_mx.bad [i] = s_mx.xq [i];
    }
    s_mx.nan_q [7] = NAN;
    s_mx.inf_q [3] = INFINITY;
    s_mx.bad [DIM] = 1.0f;
    return ok;
}

//  The mixed queue of one round (see the head comment); returns the count.
//  anon_lead_b: connection B's requests on A's anonymous index go first.
//  *first_count receives how many jobs to send before the rest.
static int
s_mixed_jobs (job_t *jobs, bool anon_lead_b, int *first_count)
{
    int n = 0;
    const float *q = s_mx.xq;
    //  Anonymous index first, B's or A's requests at the head.
    for (int pass = 0; pass < 2; pass++) {
        bool b_pass = (pass == 0) == anon_lead_b;
        if (b_pass) {
            for (int i = 0; i < 3; i++)
                jobs [n++] = (job_t) { .client = s_mx.b, .name = s_mx.anon_name, .nq = 1, .k = 5,
                                       .x = q + (40 + i) * DIM, .expect = FPX_ENOTFOUND };
            jobs [n++] = (job_t) { .raw = s_mx.raw, .key = fpx_test_key_a, .name = s_mx.anon_name,
                                   .nq = 1, .k = 5, .x = q + 43 * DIM, .expect = FPX_ENOTFOUND };
        }
        else
            for (int i = 0; i < 4; i++)
                jobs [n++] = (job_t) { .client = s_mx.a, .name = s_mx.anon_name, .nq = 1, .k = 5,
                                       .x = q + (44 + i) * DIM, .local = s_mx.anon, .extra = EXTRA };
        if (pass == 0)
            *first_count = n;
    }
    //  mx_flat, k 5: good ones from A, B and raw; bad ones from raw and A.
    for (int i = 0; i < 6; i++)
        jobs [n++] = (job_t) { .client = s_mx.a, .name = "mx_flat", .nq = 1, .k = 5, .x = q + i * DIM,
                               .local = s_mx.flat, .extra = EXTRA };
    jobs [n++] = (job_t) { .raw = s_mx.raw, .key = fpx_test_key_a, .name = "mx_flat", .nq = 1, .k = 5,
                           .x = s_mx.bad, .frame_bytes = (DIM + 1) * sizeof (float),
                           .expect = FPX_EPROTO };
    jobs [n++] = (job_t) { .raw = s_mx.raw, .key = fpx_test_key_a, .name = "mx_flat", .nq = 1, .k = 5,
                           .x = s_mx.bad, .empty_frame = true, .expect = FPX_EPROTO };
    jobs [n++] = (job_t) { .raw = s_mx.raw, .key = fpx_test_key_a, .name = "mx_flat", .nq = 1, .k = 5,
                           .x = s_mx.nan_q, .expect = FPX_EINVAL };
    jobs [n++] = (job_t) { .client = s_mx.a, .name = "mx_flat", .nq = 1, .k = 5, .x = s_mx.nan_q,
                           .expect = FPX_EINVAL };
    for (int i = 6; i < 8; i++)
        jobs [n++] = (job_t) { .raw = s_mx.raw, .key = fpx_test_key_a, .name = "mx_flat", .nq = 1,
                               .k = 5, .x = q + i * DIM, .local = s_mx.flat, .extra = EXTRA };
    jobs [n++] = (job_t) { .raw = s_mx.raw, .key = fpx_test_key_a, .name = "mx_flat", .nq = 1, .k = 5,
                           .x = s_mx.inf_q, .expect = FPX_EINVAL };
    for (int i = 8; i < 12; i++)
        jobs [n++] = (job_t) { .client = s_mx.b, .name = "mx_flat", .nq = 1, .k = 5, .x = q + i * DIM,
                               .local = s_mx.flat, .extra = EXTRA };
    //  Tenant B, the same parameter bytes: it has no mx_flat.
    for (int i = 0; i < 2; i++)
        jobs [n++] = (job_t) { .raw = s_mx.raw_b, .key = fpx_test_key_b, .name = "mx_flat", .nq = 1,
                               .k = 5, .x = q + i * DIM, .expect = FPX_ENOTFOUND };
    //  mx_flat, k 10, nq 1, 3, 3, 7.
    const int nqs [4] = { 1, 3, 3, 7 };
    for (int i = 0, at = 12; i < 4; at += nqs [i], i++)
        jobs [n++] = (job_t) { .client = s_mx.a, .name = "mx_flat", .nq = nqs [i], .k = 10,
                               .x = q + at * DIM, .local = s_mx.flat, .extra = EXTRA };
    //  mx_ivf, nprobe 4 from A, B and a bad frame; nprobe 8; the default (1).
    for (int i = 0; i < 8; i++)
        jobs [n++] = (job_t) { .client = i < 5 ? s_mx.a : s_mx.b, .name = "mx_ivf", .nq = 1, .k = 5,
                               .params = { 4, 0 }, .x = q + (26 + i) * DIM, .local = s_mx.ivf4,
                               .extra = EXTRA, .nprobe = 4 };
    jobs [n++] = (job_t) { .raw = s_mx.raw, .key = fpx_test_key_a, .name = "mx_ivf", .nq = 1, .k = 5,
                           .params = { 4, 0 }, .x = s_mx.bad,
                           .frame_bytes = (DIM - 1) * sizeof (float), .expect = FPX_EPROTO };
    for (int i = 0; i < 3; i++)
        jobs [n++] = (job_t) { .client = s_mx.a, .name = "mx_ivf", .nq = 1, .k = 5, .params = { 8, 0 },
                               .x = q + (34 + i) * DIM, .local = s_mx.ivf8, .extra = EXTRA,
                               .nprobe = 8 };
    for (int i = 0; i < 3; i++)
        jobs [n++] = (job_t) { .client = s_mx.a, .name = "mx_ivf", .nq = 1, .k = 5,
                               .x = q + (37 + i) * DIM, .local = s_mx.ivf, .extra = EXTRA,
                               .nprobe = 1 };
    //  Parameters every request refuses: k over the limit, nprobe 0.
    for (int i = 0; i < 3; i++)
        jobs [n++] = (job_t) { .raw = s_mx.raw, .key = fpx_test_key_a, .name = "mx_flat", .nq = 1,
                               .k = FPX_K_MAX + 1, .x = q + i * DIM, .expect = FPX_EINVAL };
    for (int i = 0; i < 2; i++)
        jobs [n++] = (job_t) { .raw = s_mx.raw, .key = fpx_test_key_a, .name = "mx_ivf", .nq = 1,
                               .k = 5, .nprobe_zero = true, .x = q + i * DIM, .expect = FPX_EINVAL };
    //  The same malformed parameters frame (not msgpack) three times.
    static const char junk [] = { (char) 0xc1, 'x', 'y' };
    for (int i = 0; i < 3; i++)
        jobs [n++] = (job_t) { .raw = s_mx.raw, .key = fpx_test_key_a, .name = "mx_flat", .nq = 1,
                               .k = 5, .raw_params = junk, .raw_params_size = sizeof junk,
                               .x = q + i * DIM, .expect = FPX_EPROTO };
    //  The shared FAISS call fails: an untrained index.
    for (int i = 0; i < 3; i++)
        jobs [n++] = (job_t) { .client = i == 1 ? s_mx.b : s_mx.a, .name = "mx_untrained", .nq = 1,
                               .k = 5, .x = q + i * DIM, .expect = s_mx.untrained_rc };
    //  A name nobody has.
    for (int i = 0; i < 2; i++)
        jobs [n++] = (job_t) { .client = s_mx.a, .name = "mx_missing", .nq = 1, .k = 5,
                               .x = q + i * DIM, .expect = FPX_ENOTFOUND };
    return n;
}

static void
s_mixed_round (bool anon_lead_b, bool reverse)
{
    REQUIRE_TRUE (s_mixed_setup ());
    job_t jobs [90];
    memset (jobs, 0, sizeof jobs);
    int first = 0;
    int n = s_mixed_jobs (jobs, anon_lead_b, &first);
    REQUIRE (n <= 90, "%d jobs", n);
    bool ready = true;
    for (int i = 0; i < n && ready; i++)
        ready = s_job_ref (&jobs [i]);
    counters_t before_a, before_b;
    if (ready && s_counters (fpx_test_key_a, &before_a) && s_counters (fpx_test_key_b, &before_b)
    &&  s_plug_begin ()) {
        s_send_range (jobs, 0, first);
        fpx_sleep_ms (30);
        if (reverse)
            for (int i = n - 1; i >= first; i--)
                s_job_send (&jobs [i]);
        else
            s_send_range (jobs, first, n);
        s_plug_end ();
        int missing = s_collect (jobs, n, 60);
        CHECK (missing == 0, "%d replies missing", missing);
        //  Sharable good requests: mx_flat k5 12, mx_flat k10 4, mx_ivf
        //  nprobe 4 8, nprobe 8 3, default 3 (5 calls); the anonymous
        //  index's 4 when its owner leads (1 call).
        int64_t searches = anon_lead_b ? 30 : 34, calls = anon_lead_b ? 5 : 6;
        s_check_growth (fpx_test_key_a, &before_a, searches, calls, "tenant A");
        s_check_growth (fpx_test_key_b, &before_b, 0, 0, "tenant B");
        s_verify_all (jobs, n, anon_lead_b ? "B leads" : "A leads");
    }
    for (int i = 0; i < n; i++)
        s_job_free (&jobs [i]);
}

static void
test_raw_params_match_client (void *arg)
{
    (void) arg;
    REQUIRE_TRUE (s_mixed_setup ());
    job_t jobs [4];
    memset (jobs, 0, sizeof jobs);
    for (int i = 0; i < 4; i++) {
        jobs [i] = (job_t) { .name = "mx_flat", .nq = 1, .k = 5, .x = s_mx.xq + (50 + i) * DIM,
                             .local = s_mx.flat, .extra = EXTRA };
        if (i == 0)
            jobs [i].client = s_mx.a;
        else {
            jobs [i].raw = s_mx.raw;
            jobs [i].key = fpx_test_key_a;
        }
        s_job_ref (&jobs [i]);
    }
    counters_t before;
    if (s_counters (fpx_test_key_a, &before) && s_plug_begin ()) {
        s_send_range (jobs, 0, 4);
        s_plug_end ();
        CHECK_EQ (s_collect (jobs, 4, 60), 0);
        //  One call for all four: the raw parameter bytes are the client's.
        s_check_growth (fpx_test_key_a, &before, 4, 1, "client + raw");
        s_verify_all (jobs, 4, "client + raw");
    }
    for (int i = 0; i < 4; i++)
        s_job_free (&jobs [i]);
}

static void
test_mixed_b_leads (void *arg)
{
    (void) arg;
    s_mixed_round (true, false);
}

static void
test_mixed_a_leads_reversed (void *arg)
{
    (void) arg;
    s_mixed_round (false, true);
}

/* ---- tenancy ------------------------------------------------------------------------ */

static void
test_tenancy (void *arg)
{
    (void) arg;
    fpx_client_t *ca = fpx_test_client (&s_server, fpx_test_key_a);
    fpx_client_t *cb = fpx_test_client (&s_server, fpx_test_key_b);
    float *xa = fpx_data_uniform (301, 1500, DIM);
    float *xb = fpx_data_uniform (302, 1500, DIM);
    float *xq = fpx_data_uniform (303, 16, DIM);
    FaissIndex *la = NULL, *lb = NULL;
    job_t jobs [21];
    memset (jobs, 0, sizeof jobs);
    bool ready = CHECK (ca && cb, "fpx_client_new")
              && s_create (ca, "tn_flat", "Flat", xa, 1500, NULL)
              && s_create (cb, "tn_flat", "Flat", xb, 1500, NULL)
              && (la = s_twin (ca, "tn_flat")) && (lb = s_twin (cb, "tn_flat"));
    if (ready) {
        //  The tenants' answers differ: a mix-up would show.
        fpx_knn_t ra, rb;
        char why [256];
        if (CHECK (fpx_local_knn (la, 16, xq, 5, 0, &ra) == 0 && fpx_local_knn (lb, 16, xq, 5, 0, &rb) == 0,
                   "local search"))
            CHECK (!fpx_knn_equal (&ra, &rb, why, sizeof why), "both tenants' data give the same answers");
        fpx_knn_free (&ra);
        fpx_knn_free (&rb);
        //  Interleaved: A 12, B 9, the same queries and parameter bytes.
        int n = 0;
        for (int i = 0; i < 12; i++) {
            jobs [n++] = (job_t) { .client = ca, .name = "tn_flat", .nq = 1, .k = 5, .x = xq + i * DIM,
                                   .local = la, .extra = EXTRA };
            if (i < 9)
                jobs [n++] = (job_t) { .client = cb, .name = "tn_flat", .nq = 1, .k = 5,
                                       .x = xq + i * DIM, .local = lb, .extra = EXTRA };
        }
        for (int i = 0; i < n; i++)
            ready = ready && s_job_ref (&jobs [i]);
        counters_t before_a, before_b;
        if (ready && s_counters (fpx_test_key_a, &before_a) && s_counters (fpx_test_key_b, &before_b)
        &&  s_plug_begin ()) {
            s_send_range (jobs, 0, n);
            s_plug_end ();
            CHECK_EQ (s_collect (jobs, n, 60), 0);
            s_verify_all (jobs, n, "tenancy");
            s_check_growth (fpx_test_key_a, &before_a, 12, 1, "tenant A");
            s_check_growth (fpx_test_key_b, &before_b, 9, 1, "tenant B");
        }
        CHECK_OK (ca, fpx_index_drop (ca, "tn_flat"));
        CHECK_OK (cb, fpx_index_drop (cb, "tn_flat"));
    }
    for (int i = 0; i < 21; i++)
        s_job_free (&jobs [i]);
    if (la)
        faiss_Index_free (la);
    if (lb)
        faiss_Index_free (lb);
    free (xa);
    free (xb);
    free (xq);
    fpx_client_destroy (&ca);
    fpx_client_destroy (&cb);
}

/* ---- drop while queued --------------------------------------------------------------- */

static void
test_drop_while_queued (void *arg)
{
    (void) arg;
    fpx_client_t *c = fpx_test_client (&s_server, fpx_test_key_a);
    fpx_raw_t *raw = fpx_raw_new (s_server.endpoint);
    float *x1 = fpx_data_uniform (401, 800, DIM);
    float *x2 = fpx_data_uniform (402, 800, DIM);
    float *xq = fpx_data_uniform (403, 16, DIM);
    FaissIndex *local = NULL;
    job_t jobs [16];
    memset (jobs, 0, sizeof jobs);
    int n = 0;
    REQUIRE (c && raw, "connections");
    //  1. The drop is queued first (raw, one connection: in order), then
    //     searches from raw and the client: all FPX_ENOTFOUND.
    if (s_create (c, "dr_flat", "Flat", x1, 800, NULL)) {
        jobs [n++] = (job_t) { .opcode = FPX_OP_DROP, .raw = raw, .key = fpx_test_key_a,
                               .name = "dr_flat" };
        for (int i = 0; i < 4; i++)
            jobs [n++] = (job_t) { .raw = raw, .key = fpx_test_key_a, .name = "dr_flat", .nq = 1,
                                   .k = 5, .x = xq + i * DIM, .expect = FPX_ENOTFOUND };
        for (int i = 4; i < 10; i++)
            jobs [n++] = (job_t) { .client = c, .name = "dr_flat", .nq = 1, .k = 5, .x = xq + i * DIM,
                                   .expect = FPX_ENOTFOUND };
        counters_t before;
        if (s_counters (fpx_test_key_a, &before) && s_plug_begin ()) {
            s_send_range (jobs, 0, 5);
            fpx_sleep_ms (30);
            s_send_range (jobs, 5, n);
            s_plug_end ();
            CHECK_EQ (s_collect (jobs, n, 60), 0);
            s_verify_all (jobs, n, "queued behind the drop");
            s_check_growth (fpx_test_key_a, &before, 0, 0, "queued behind the drop");
        }
        CHECK_OK (c, fpx_ping (c, NULL));
    }
    for (int i = 0; i < n; i++)
        s_job_free (&jobs [i]);
    memset (jobs, 0, sizeof jobs);
    n = 0;
    //  2. Searches queued ahead of the drop succeed; the drop succeeds
    //     after them; the name is free again.
    if (s_create (c, "dr_flat", "Flat", x2, 800, NULL) && (local = s_twin (c, "dr_flat"))) {
        for (int i = 0; i < 6; i++) {
            jobs [n] = (job_t) { .name = "dr_flat", .nq = 1, .k = 5, .x = xq + i * DIM, .local = local,
                                 .extra = EXTRA, .raw = raw, .key = fpx_test_key_a };
            s_job_ref (&jobs [n++]);
        }
        jobs [n++] = (job_t) { .opcode = FPX_OP_DROP, .raw = raw, .key = fpx_test_key_a,
                               .name = "dr_flat" };
        counters_t before;
        if (s_counters (fpx_test_key_a, &before) && s_plug_begin ()) {
            s_send_range (jobs, 0, n);
            s_plug_end ();
            CHECK_EQ (s_collect (jobs, n, 60), 0);
            s_verify_all (jobs, n, "ahead of the drop");
            s_check_growth (fpx_test_key_a, &before, 6, 1, "ahead of the drop");
        }
        fpx_index_info_t info;
        CHECK_RC (c, fpx_index_open (c, "dr_flat", &info), FPX_ENOTFOUND);
    }
    for (int i = 0; i < n; i++)
        s_job_free (&jobs [i]);
    CHECK_EQ (fpx_test_fresh_ping (&s_server), 0);
    if (local)
        faiss_Index_free (local);
    free (x1);
    free (x2);
    free (xq);
    fpx_raw_destroy (&raw);
    fpx_client_destroy (&c);
}

/* ---- k at the limit ------------------------------------------------------------------ */

static void
test_k_limit (void *arg)
{
    (void) arg;
    fpx_client_t *c1 = fpx_test_client (&s_server, fpx_test_key_a);
    fpx_client_t *c2 = fpx_test_client (&s_server, fpx_test_key_a);
    float *xb = fpx_data_uniform (501, 2000, DIM);
    float *xq = fpx_data_uniform (502, 8, DIM);
    FaissIndex *local = NULL;
    job_t jobs [6];
    memset (jobs, 0, sizeof jobs);
    bool ready = CHECK (c1 && c2, "fpx_client_new") && s_create (c1, "kl_flat", "Flat", xb, 2000, NULL)
              && (local = s_twin (c1, "kl_flat"));
    for (int i = 0; i < 6 && ready; i++) {
        jobs [i] = (job_t) { .client = i % 2 ? c2 : c1, .name = "kl_flat", .nq = i == 5 ? 2 : 1,
                             .k = FPX_K_MAX, .x = xq + i * DIM, .local = local, .extra = 0 };
        ready = s_job_ref (&jobs [i]);
    }
    counters_t before;
    if (ready && s_counters (fpx_test_key_a, &before) && s_plug_begin ()) {
        s_send_range (jobs, 0, 6);
        s_plug_end ();
        CHECK_EQ (s_collect (jobs, 6, 60), 0);
        s_verify_all (jobs, 6, "k = FPX_K_MAX");
        s_check_growth (fpx_test_key_a, &before, 6, 1, "k = FPX_K_MAX");
        //  Past the vectors: label -1.
        if (jobs [0].I)
            CHECK (jobs [0].I [1999] >= 0 && jobs [0].I [2000] == -1 && jobs [0].I [FPX_K_MAX - 1] == -1,
                   "labels at ranks 1999, 2000, last: %lld %lld %lld", (long long) jobs [0].I [1999],
                   (long long) jobs [0].I [2000], (long long) jobs [0].I [FPX_K_MAX - 1]);
    }
    if (c1)
        fpx_index_drop (c1, "kl_flat");
    for (int i = 0; i < 6; i++)
        s_job_free (&jobs [i]);
    if (local)
        faiss_Index_free (local);
    free (xb);
    free (xq);
    fpx_client_destroy (&c1);
    fpx_client_destroy (&c2);
}

/* ---- flat padding ---------------------------------------------------------------------- */

//  A shared call on an IndexFlat of 5 to 19 queries is padded to FAISS's
//  BLAS threshold with copies of its first query (fpx_shim_batch_rows).
//  For L2, inner product and IDMap,Flat, batches of 4 (not padded), 5, 12
//  (nq 1 and 2 mixed), 19 and 20 (not padded) queries: each request gets
//  its own rows, equal to FAISS alone, and no padding row; one call each.
static void
test_flat_padding (void *arg)
{
    (void) arg;
    enum { NB = 3000, JOBS_MAX = 20 };
    static const struct { const char *name, *factory; int metric; } kinds [] = {
        { "pad_l2", "Flat", FPX_METRIC_L2 },
        { "pad_ip", "Flat", FPX_METRIC_INNER_PRODUCT },
        { "pad_map", "IDMap,Flat", FPX_METRIC_L2 },
    };
    //  Each batch: how many requests, and how many of them ask 2 queries.
    static const struct { int requests, doubles; } batches [] = {
        { 4, 0 }, { 5, 0 }, { 8, 4 }, { 18, 1 }, { 20, 0 },
    };
    fpx_client_t *c1 = fpx_test_client (&s_server, fpx_test_key_a);
    fpx_client_t *c2 = fpx_test_client (&s_server, fpx_test_key_a);
    float *xb = fpx_data_uniform (601, NB, DIM);
    float *xq = fpx_data_uniform (602, 2 * JOBS_MAX, DIM);
    int64_t *ids = malloc (NB * sizeof *ids);
    for (int i = 0; ids && i < NB; i++)
        ids [i] = 1000000 + 7 * (int64_t) i;
    bool ready = CHECK (c1 && c2 && ids, "setup");
    for (size_t kind = 0; ready && kind < sizeof kinds / sizeof kinds [0]; kind++) {
        const char *name = kinds [kind].name;
        FaissIndex *local = NULL;
        ready = CHECK_OK (c1, fpx_index_create (c1, name, DIM, kinds [kind].factory,
                                                kinds [kind].metric, NULL))
             && (strncmp (kinds [kind].factory, "IDMap", 5)
                 ? CHECK_OK (c1, fpx_add (c1, name, NB, DIM, xb, NULL))
                 : CHECK_OK (c1, fpx_add_with_ids (c1, name, NB, DIM, xb, ids, NULL)))
             && (local = s_twin (c1, name));
        for (size_t b = 0; ready && b < sizeof batches / sizeof batches [0]; b++) {
            int n = batches [b].requests;
            job_t jobs [JOBS_MAX];
            memset (jobs, 0, sizeof jobs);
            const float *at = xq;
            for (int i = 0; i < n && ready; i++) {
                int64_t nq = i < batches [b].doubles ? 2 : 1;
                jobs [i] = (job_t) { .client = i % 2 ? c2 : c1, .name = name, .nq = nq, .k = 10,
                                     .x = at, .local = local };
                at += nq * DIM;
                ready = s_job_ref (&jobs [i]);
            }
            char what [96];
            snprintf (what, sizeof what, "%s, %d requests (%d of 2 queries)", name, n,
                      batches [b].doubles);
            counters_t before;
            if (ready && s_counters (fpx_test_key_a, &before) && s_plug_begin ()) {
                s_send_range (jobs, 0, n);
                s_plug_end ();
                CHECK_EQ (s_collect (jobs, n, 60), 0);
                s_verify_all (jobs, n, what);
                s_check_growth (fpx_test_key_a, &before, n, 1, what);
            }
            for (int i = 0; i < n; i++)
                s_job_free (&jobs [i]);
        }
        if (c1)
            fpx_index_drop (c1, name);
        if (local)
            faiss_Index_free (local);
    }
    free (ids);
    free (xb);
    free (xq);
    fpx_client_destroy (&c1);
    fpx_client_destroy (&c2);
}

/* ---- batch limits -------------------------------------------------------------------- */

static void
test_batch_limits (void *arg)
{
    (void) arg;
    fpx_client_t *c1 = fpx_test_client (&s_server, fpx_test_key_a);
    fpx_client_t *c2 = fpx_test_client (&s_server, fpx_test_key_a);
    float *xb = fpx_data_uniform (601, 2000, DIM);
    const int rows = BATCH_QUERY_BYTES / (DIM * (int) sizeof (float));
    float *xq = fpx_data_uniform (602, 4 * (rows + 1), DIM);
    FaissIndex *local = NULL;
    job_t *jobs = calloc (300, sizeof *jobs);
    bool ready = CHECK (c1 && c2 && jobs, "setup") && s_create (c1, "lim_flat", "Flat", xb, 2000, NULL)
              && (local = s_twin (c1, "lim_flat"));
    //  1. 300 queued searches: at most BATCH_MAX (256) a batch, so 2 calls.
    for (int i = 0; i < 300 && ready; i++) {
        jobs [i] = (job_t) { .client = i % 2 ? c2 : c1, .name = "lim_flat", .nq = 1, .k = 5,
                             .x = xq + i * DIM, .local = local, .extra = EXTRA };
        ready = s_job_ref (&jobs [i]);
    }
    counters_t before;
    if (ready && s_counters (fpx_test_key_a, &before) && s_plug_begin ()) {
        s_send_range (jobs, 0, 300);
        s_plug_end ();
        CHECK_EQ (s_collect (jobs, 300, 60), 0);
        s_verify_all (jobs, 300, "300 queued");
        s_check_growth (fpx_test_key_a, &before, 300, (300 + BATCH_MAX - 1) / BATCH_MAX,
                        "300 queued");
    }
    for (int i = 0; i < 300; i++)
        s_job_free (&jobs [i]);
    memset (jobs, 0, 300 * sizeof *jobs);
    //  2. 80 query frames of exactly 64 KiB: BATCH_BYTES (4 MiB) a batch,
    //     so 64 + 16.
    for (int i = 0; i < 80 && ready; i++) {
        jobs [i] = (job_t) { .client = i % 2 ? c2 : c1, .name = "lim_flat", .nq = rows, .k = 5,
                             .x = xq + (int64_t) (i % 4) * (rows + 1) * DIM, .local = local,
                             .extra = EXTRA };
        //  One reference per distinct block.
        if (i < 4)
            ready = s_job_ref (&jobs [i]);
    }
    if (ready && s_counters (fpx_test_key_a, &before) && s_plug_begin ()) {
        s_send_range (jobs, 0, 80);
        s_plug_end ();
        CHECK_EQ (s_collect (jobs, 80, 60), 0);
        for (int i = 4; i < 80; i++)
            jobs [i].ref = jobs [i % 4].ref;
        s_verify_all (jobs, 80, "64 KiB frames");
        for (int i = 4; i < 80; i++)
            memset (&jobs [i].ref, 0, sizeof jobs [i].ref);
        s_check_growth (fpx_test_key_a, &before, 80,
                        (80 + BATCH_BYTES / BATCH_QUERY_BYTES - 1) / (BATCH_BYTES / BATCH_QUERY_BYTES),
                        "64 KiB frames");
    }
    for (int i = 0; i < 80; i++)
        s_job_free (&jobs [i]);
    memset (jobs, 0, 300 * sizeof *jobs);
    //  3. Frames one row over 64 KiB are never batched.
    for (int i = 0; i < 6 && ready; i++) {
        jobs [i] = (job_t) { .client = i % 2 ? c2 : c1, .name = "lim_flat", .nq = rows + 1, .k = 5,
                             .x = xq + (int64_t) (i % 4) * (rows + 1) * DIM, .local = local,
                             .extra = EXTRA };
        ready = s_job_ref (&jobs [i]);
    }
    if (ready && s_counters (fpx_test_key_a, &before) && s_plug_begin ()) {
        s_send_range (jobs, 0, 6);
        s_plug_end ();
        CHECK_EQ (s_collect (jobs, 6, 60), 0);
        s_verify_all (jobs, 6, "frames over 64 KiB");
        s_check_growth (fpx_test_key_a, &before, 0, 0, "frames over 64 KiB");
    }
    for (int i = 0; i < 6; i++)
        s_job_free (&jobs [i]);
    if (c1)
        fpx_index_drop (c1, "lim_flat");
    free (jobs);
    if (local)
        faiss_Index_free (local);
    free (xb);
    free (xq);
    fpx_client_destroy (&c1);
    fpx_client_destroy (&c2);
}

/* ---- disconnect while queued ------------------------------------------------------------ */

static void
test_disconnect_while_queued (void *arg)
{
    (void) arg;
    fpx_client_t *c = fpx_test_client (&s_server, fpx_test_key_a);
    float *xb = fpx_data_uniform (701, 500, DIM);
    float *xq = fpx_data_uniform (702, 8, DIM);
    char anon [FPX_INDEX_NAME_MAX + 1] = "";
    float D [8 * 5];
    int64_t I [8 * 5];
    REQUIRE (c, "fpx_client_new");
    counters_t before;
    if (s_create (c, NULL, "Flat", xb, 500, anon) && s_counters (fpx_test_key_a, &before)
    &&  s_plug_begin ()) {
        uint64_t id;
        for (int i = 0; i < 8; i++)
            CHECK_OK (c, fpx_search_send (c, anon, 1, DIM, xq + i * DIM, 5, NULL, D + i * 5, I + i * 5,
                                          &id));
        fpx_sleep_ms (30);
        fpx_client_destroy (&c);             //  abandons them, and the index
        s_plug_end ();
        //  The queue is served (the searches, then the reap) and the
        //  server goes on.
        fpx_sleep_ms (200);
        CHECK_EQ (fpx_test_fresh_ping (&s_server), 0);
        //  Whether they are still served is the server's choice; they
        //  can only have been served together.
        counters_t after;
        if (s_counters (fpx_test_key_a, &after))
            CHECK (after.searches - before.searches <= 8 && after.calls - before.calls <= 1,
                   "8 searches of a closed connection: batched_searches +%lld, batched_calls +%lld",
                   (long long) (after.searches - before.searches),
                   (long long) (after.calls - before.calls));
        //  The anonymous index is gone with its connection.
        fpx_client_t *other = fpx_test_client (&s_server, fpx_test_key_a);
        fpx_index_info_t info;
        if (CHECK (other, "fpx_client_new"))
            CHECK_RC (other, fpx_index_describe (other, anon, 0, &info), FPX_ENOTFOUND);
        fpx_client_destroy (&other);
    }
    fpx_client_destroy (&c);
    free (xb);
    free (xq);
}

/* ---- the end ------------------------------------------------------------------------------ */

static void
test_server_exit (void *arg)
{
    (void) arg;
    CHECK (fpx_test_server_alive (&s_server), "faissproxyd died before SIGTERM");
    int status = fpx_test_server_stop (&s_server, 30);
    CHECK (status == 0, "faissproxyd exit status %d after SIGTERM, expected 0 (%s)", status,
           s_server.diagnosis);
}

int
main (void)
{
    fpx_test_local_single_thread ();
    fpx_test_watch (&s_server);
    const char *args [] = { "--workers", "1", NULL };
    if (fpx_test_server_start (&s_server, args, NULL) == 0) {
        if (s_plug_setup ()) {
            fpx_test_run ("batching.info_fields", test_info_fields, NULL);
            fpx_test_run ("batching.equivalence", test_equivalence, NULL);
            fpx_test_run ("batching.raw_params_match_client", test_raw_params_match_client, NULL);
            fpx_test_run ("batching.mixed_queue_b_leads", test_mixed_b_leads, NULL);
            fpx_test_run ("batching.mixed_queue_a_leads_reversed", test_mixed_a_leads_reversed, NULL);
            fpx_test_run ("batching.tenancy", test_tenancy, NULL);
            fpx_test_run ("batching.drop_while_queued", test_drop_while_queued, NULL);
            fpx_test_run ("batching.k_limit", test_k_limit, NULL);
            fpx_test_run ("batching.flat_padding", test_flat_padding, NULL);
            fpx_test_run ("batching.batch_limits", test_batch_limits, NULL);
            fpx_test_run ("batching.disconnect_while_queued", test_disconnect_while_queued, NULL);
        }
        else
            fpx_test_fail_whole ("batching.setup", "the plug index could not be set up");
        s_mixed_free ();
        fpx_client_destroy (&s_plug);
        fpx_test_run ("batching.server_exit", test_server_exit, NULL);
    }
    else
        fpx_test_fail_whole ("batching.server_start", "faissproxyd did not start");
    free (s_plug_xq);
    free (s_plug_D);
    free (s_plug_I);
    return fpx_test_finish ();
}
