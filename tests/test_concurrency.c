/*  test_concurrency.c — many clients at once.

    - 8 searching threads and 2 adding threads on one named index (Flat,
      then HNSW16), each thread with its own connection: no call fails,
      every search answer is well-formed (and exact where it can be), the
      final ntotal is the initial count plus every add, and the stored
      vectors are exactly the ones sent (compared as a multiset).
    - Searches on two different indexes in parallel, each answer equal to
      FAISS in-process.
    - Per-request nprobe from 4 threads with 4 different values at once on
      one IVF index: each answer equals FAISS in-process with that nprobe
      (no leakage between concurrent requests), and the index's own nprobe
      is unchanged afterwards.
*/
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fpx_test.h"

#define DIM        32
#define NB0        2000        //  vectors in the index before the adds
#define ADDERS     2
#define ADD_BATCHES 20
#define ADD_BATCH  50
#define SEARCHERS  8
#define ROUNDS     80
#define SNQ        10          //  queries per search
#define SK         5

static fpx_test_server_t s_server;
static float *s_xb;                        //  NB0 initial vectors
static float *s_xadd [ADDERS];             //  ADD_BATCHES·ADD_BATCH per adder

/* ---- search while adding ---------------------------------------------------------- */

typedef struct {
    const char *name;
    int id;
    bool exact;                 //  Flat: a database vector finds itself first
    int calls, errors;
    char first_error [512];
    int64_t last_ntotal;
} worker_t;

static void
s_note (worker_t *w, const char *format, const char *a, const char *b)
{
    if (w->errors++ == 0)
        snprintf (w->first_error, sizeof w->first_error, format, a, b);
}

static void *
s_searcher (void *arg)
{
    worker_t *w = arg;
    fpx_client_t *c = fpx_test_client (&s_server, fpx_test_key_a);
    if (!c) {
        s_note (w, "%s%s", "fpx_client_new failed", "");
        return NULL;
    }
    float D [SNQ * SK];
    int64_t I [SNQ * SK];
    for (int round = 0; round < ROUNDS; round++) {
        int64_t first = ((int64_t) w->id * 211 + round * 37) % (NB0 - SNQ);
        int rc = fpx_search (c, w->name, SNQ, DIM, s_xb + first * DIM, SK, NULL, D, I);
        w->calls++;
        if (rc < 0) {
            s_note (w, "search failed: %s (%s)", fpx_error_name (rc), fpx_client_errmsg (c));
            continue;
        }
        int64_t max_id = NB0 + ADDERS * ADD_BATCHES * ADD_BATCH;
        for (int q = 0; q < SNQ; q++) {
            for (int j = 0; j < SK; j++) {
                int64_t label = I [q * SK + j];
                if (label < 0 || label >= max_id) {
                    char text [64];
                    snprintf (text, sizeof text, "%lld", (long long) label);
                    s_note (w, "label %s out of range%s", text, "");
                }
                if (j > 0 && D [q * SK + j] < D [q * SK + j - 1])
                    s_note (w, "distances not sorted%s%s", "", "");
            }
            if (w->exact && (I [q * SK] != first + q || fabsf (D [q * SK]) > 1e-4f)) {
                char text [96];
                snprintf (text, sizeof text, "query %lld found %lld at %g", (long long) (first + q),
                          (long long) I [q * SK], D [q * SK]);
                s_note (w, "exact search: %s%s", text, "");
            }
        }
    }
    fpx_client_destroy (&c);
    return NULL;
}

static void *
s_adder (void *arg)
{
    worker_t *w = arg;
    fpx_client_t *c = fpx_test_client (&s_server, fpx_test_key_a);
    if (!c) {
        s_note (w, "%s%s", "fpx_client_new failed", "");
        return NULL;
    }
    int64_t previous = NB0 - 1;
    for (int b = 0; b < ADD_BATCHES; b++) {
        int64_t ntotal = -1;
        const float *x = s_xadd [w->id] + (int64_t) b * ADD_BATCH * DIM;
        int rc = fpx_add (c, w->name, ADD_BATCH, DIM, x, &ntotal);
        w->calls++;
        if (rc < 0) {
            s_note (w, "add failed: %s (%s)", fpx_error_name (rc), fpx_client_errmsg (c));
            continue;
        }
        //  Each add sees at least its own vectors on top of the last one.
        if (ntotal < previous + ADD_BATCH)
            s_note (w, "ntotal went backwards or too slowly%s%s", "", "");
        previous = ntotal;
    }
    w->last_ntotal = previous;
    fpx_client_destroy (&c);
    return NULL;
}

static int
s_cmp_row (const void *a, const void *b)
{
    return memcmp (a, b, DIM * sizeof (float));
}

static void
s_search_while_adding (const char *factory, const char *name, bool exact)
{
    fpx_client_t *c = fpx_test_client (&s_server, fpx_test_key_a);
    REQUIRE (c, "fpx_client_new");
    if (!CHECK_OK (c, fpx_index_create (c, name, DIM, factory, FPX_METRIC_L2, NULL))
    ||  !CHECK_OK (c, fpx_add (c, name, NB0, DIM, s_xb, NULL))) {
        fpx_client_destroy (&c);
        return;
    }
    worker_t workers [SEARCHERS + ADDERS];
    pthread_t threads [SEARCHERS + ADDERS];
    memset (workers, 0, sizeof workers);
    for (int i = 0; i < SEARCHERS + ADDERS; i++) {
        workers [i].name = name;
        workers [i].id = i < SEARCHERS ? i : i - SEARCHERS;
        workers [i].exact = exact;
    }
    double t0 = fpx_now ();
    for (int i = 0; i < SEARCHERS + ADDERS; i++)
        pthread_create (&threads [i], NULL, i < SEARCHERS ? s_searcher : s_adder, &workers [i]);
    for (int i = 0; i < SEARCHERS + ADDERS; i++)
        pthread_join (threads [i], NULL);
    double elapsed = fpx_now () - t0;
    int calls = 0;
    for (int i = 0; i < SEARCHERS + ADDERS; i++) {
        calls += workers [i].calls;
        CHECK (workers [i].errors == 0, "%s thread %d: %d errors, first: %s",
               i < SEARCHERS ? "search" : "add", i, workers [i].errors, workers [i].first_error);
    }
    CHECK_EQ (calls, SEARCHERS * ROUNDS + ADDERS * ADD_BATCHES);
    CHECK (elapsed < 120, "took %.1f s", elapsed);

    //  Every add arrived exactly once.
    const int64_t added = (int64_t) ADDERS * ADD_BATCHES * ADD_BATCH;
    fpx_index_info_t info;
    if (CHECK_OK (c, fpx_index_describe (c, name, 0, &info)))
        CHECK_EQ (info.ntotal, NB0 + added);
    float *stored = malloc ((size_t) added * DIM * sizeof *stored);
    float *sent = malloc ((size_t) added * DIM * sizeof *sent);
    for (int t = 0; t < ADDERS; t++)
        memcpy (sent + (int64_t) t * ADD_BATCHES * ADD_BATCH * DIM, s_xadd [t],
                (size_t) ADD_BATCHES * ADD_BATCH * DIM * sizeof *sent);
    if (CHECK_OK (c, fpx_reconstruct_n (c, name, NB0, added, DIM, stored))) {
        qsort (stored, (size_t) added, DIM * sizeof (float), s_cmp_row);
        qsort (sent, (size_t) added, DIM * sizeof (float), s_cmp_row);
        CHECK (memcmp (stored, sent, (size_t) added * DIM * sizeof (float)) == 0,
               "the stored vectors are not the ones added");
    }
    //  The initial vectors stayed in place.
    float *first = malloc ((size_t) NB0 * DIM * sizeof *first);
    if (CHECK_OK (c, fpx_reconstruct_n (c, name, 0, NB0, DIM, first)))
        CHECK (memcmp (first, s_xb, (size_t) NB0 * DIM * sizeof (float)) == 0,
               "the initial vectors changed");
    //  Flat: the final index answers as FAISS in-process on the same
    //  vectors (distances; the order of the two adders' batches is free).
    if (exact) {
        FaissIndex *local = NULL;
        faiss_index_factory (&local, DIM, "Flat", METRIC_L2);
        faiss_Index_add (local, NB0, s_xb);
        for (int t = 0; t < ADDERS; t++)
            faiss_Index_add (local, (int64_t) ADD_BATCHES * ADD_BATCH, s_xadd [t]);
        float *xq = fpx_data_uniform (99, 40, DIM);
        fpx_knn_t ref, got;
        if (CHECK (fpx_local_knn (local, 40, xq, 10, 0, &ref) == 0, "local search")
        &&  CHECK_OK (c, fpx_remote_knn (c, name, 40, DIM, xq, 10, NULL, &got))) {
            int bad = 0;
            for (int i = 0; i < 40 * 10; i++)
                if (!fpx_float_close (ref.D [i], got.D [i]))
                    bad++;
            CHECK (bad == 0, "%d distances differ from FAISS in-process", bad);
        }
        fpx_knn_free (&ref);
        fpx_knn_free (&got);
        faiss_Index_free (local);
        free (xq);
    }
    free (first);
    free (stored);
    free (sent);
    CHECK_OK (c, fpx_index_drop (c, name));
    fpx_client_destroy (&c);
}

static void
test_search_while_add_flat (void *arg)
{
    (void) arg;
    s_search_while_adding ("Flat", "conc_flat", true);
}

static void
test_search_while_add_hnsw (void *arg)
{
    (void) arg;
    s_search_while_adding ("HNSW16", "conc_hnsw", false);
}

/* ---- parallel searches compared with FAISS ------------------------------------------ */

typedef struct {
    const char *name;
    fpx_search_params_t params;
    const fpx_knn_t *expected;
    const float *xq;
    int nq, k;
    int rounds;
    int calls, errors;
    char first_error [512];
} checker_t;

static void *
s_checker (void *arg)
{
    checker_t *w = arg;
    fpx_client_t *c = fpx_test_client (&s_server, fpx_test_key_a);
    if (!c) {
        snprintf (w->first_error, sizeof w->first_error, "fpx_client_new failed");
        w->errors++;
        return NULL;
    }
    for (int round = 0; round < w->rounds; round++) {
        fpx_knn_t got;
        const fpx_search_params_t *params = w->params.nprobe || w->params.efSearch ? &w->params : NULL;
        int rc = fpx_remote_knn (c, w->name, w->nq, DIM, w->xq, w->k, params, &got);
        w->calls++;
        char why [256];
        if (rc < 0) {
            if (w->errors++ == 0)
                snprintf (w->first_error, sizeof w->first_error, "round %d: %s (%s)", round,
                          fpx_error_name (rc), fpx_client_errmsg (c));
        }
        else
        if (!fpx_knn_equal (w->expected, &got, why, sizeof why)) {
            if (w->errors++ == 0)
                snprintf (w->first_error, sizeof w->first_error, "round %d: %s", round, why);
        }
        fpx_knn_free (&got);
    }
    fpx_client_destroy (&c);
    return NULL;
}

static void
s_run_checkers (checker_t *workers, int n)
{
    pthread_t threads [16];
    for (int i = 0; i < n; i++)
        pthread_create (&threads [i], NULL, s_checker, &workers [i]);
    for (int i = 0; i < n; i++)
        pthread_join (threads [i], NULL);
    for (int i = 0; i < n; i++) {
        CHECK (workers [i].errors == 0, "thread %d (%s, nprobe %d): %d of %d answers wrong, first: %s",
               i, workers [i].name, workers [i].params.nprobe, workers [i].errors, workers [i].calls,
               workers [i].first_error);
        CHECK_EQ (workers [i].calls, workers [i].rounds);
    }
}

//  Creates name from factory on the server and locally with the same data.
static FaissIndex *
s_twin (fpx_client_t *c, const char *name, const char *factory, int metric, const float *x, int64_t n)
{
    char why [256];
    FaissIndex *local = fpx_local_create (DIM, factory, metric, why, sizeof why);
    if (!CHECK (local, "%s", why))
        return NULL;
    bool ok = CHECK_OK (c, fpx_index_create (c, name, DIM, factory, metric, NULL));
    if (ok && !faiss_Index_is_trained (local)) {
        ok = CHECK (faiss_Index_train (local, n, x) == 0, "local train")
          && CHECK_OK (c, fpx_train (c, name, n, DIM, x));
    }
    ok = ok && CHECK (faiss_Index_add (local, n, x) == 0, "local add")
            && CHECK_OK (c, fpx_add (c, name, n, DIM, x, NULL));
    if (!ok) {
        faiss_Index_free (local);
        return NULL;
    }
    return local;
}

static void
test_two_indexes_parallel (void *arg)
{
    (void) arg;
    fpx_client_t *c = fpx_test_client (&s_server, fpx_test_key_a);
    REQUIRE (c, "fpx_client_new");
    float *xa = fpx_data_clustered (21, 4000, DIM, 30, 0.1f);
    float *xb = fpx_data_uniform (22, 3000, DIM);
    float *xq = fpx_data_clustered (23, 30, DIM, 30, 0.1f);
    FaissIndex *la = s_twin (c, "par_ivf", "IVF16,Flat", FPX_METRIC_L2, xa, 4000);
    FaissIndex *lb = s_twin (c, "par_ip", "Flat", FPX_METRIC_INNER_PRODUCT, xb, 3000);
    if (la && lb) {
        fpx_knn_t ea, eb;
        if (CHECK (fpx_local_knn (la, 30, xq, 10, 40, &ea) == 0, "local search A")
        &&  CHECK (fpx_local_knn (lb, 30, xq, 10, 40, &eb) == 0, "local search B")) {
            checker_t workers [SEARCHERS];
            memset (workers, 0, sizeof workers);
            for (int i = 0; i < SEARCHERS; i++) {
                workers [i].name = i % 2 ? "par_ip" : "par_ivf";
                workers [i].expected = i % 2 ? &eb : &ea;
                workers [i].xq = xq;
                workers [i].nq = 30;
                workers [i].k = 10;
                workers [i].rounds = ROUNDS;
            }
            s_run_checkers (workers, SEARCHERS);
            fpx_knn_free (&ea);
            fpx_knn_free (&eb);
        }
    }
    CHECK_OK (c, fpx_index_drop (c, "par_ivf"));
    CHECK_OK (c, fpx_index_drop (c, "par_ip"));
    faiss_Index_free (la);
    faiss_Index_free (lb);
    free (xa);
    free (xb);
    free (xq);
    fpx_client_destroy (&c);
}

static void
test_per_request_nprobe (void *arg)
{
    (void) arg;
    fpx_client_t *c = fpx_test_client (&s_server, fpx_test_key_a);
    REQUIRE (c, "fpx_client_new");
    float *x = fpx_data_uniform (31, 5000, DIM);
    float *xq = fpx_data_uniform (32, 40, DIM);
    FaissIndex *local = s_twin (c, "conc_ivf", "IVF16,Flat", FPX_METRIC_L2, x, 5000);
    const int nprobes [] = { 1, 2, 4, 8, 16 };
    const int nvalues = 5;
    fpx_knn_t expected [5];
    memset (expected, 0, sizeof expected);
    bool ready = local != NULL;
    for (int v = 0; v < nvalues && ready; v++) {
        FaissIndex *copy = fpx_local_copy (local);
        ready = CHECK (copy && fpx_local_set_param (copy, "nprobe", nprobes [v]) == 0, "local nprobe")
             && CHECK (fpx_local_knn (copy, 40, xq, 10, 40, &expected [v]) == 0, "local search");
        faiss_Index_free (copy);
    }
    //  The values must actually give different answers, or the test
    //  would not see a leak.
    if (ready) {
        char why [128];
        for (int v = 1; v < nvalues; v++)
            CHECK (!fpx_knn_equal (&expected [v - 1], &expected [v], why, sizeof why),
                   "nprobe %d and %d give the same results: the data does not tell them apart",
                   nprobes [v - 1], nprobes [v]);
    }
    if (ready) {
        //  Threads 0-3: nprobe 2, 4, 8, 16 per request; 4-5: no params
        //  (the index's own nprobe, 1); all at once.
        checker_t workers [6];
        memset (workers, 0, sizeof workers);
        for (int i = 0; i < 6; i++) {
            int v = i < 4 ? i + 1 : 0;
            workers [i].name = "conc_ivf";
            workers [i].params.nprobe = i < 4 ? nprobes [v] : 0;
            workers [i].expected = &expected [v];
            workers [i].xq = xq;
            workers [i].nq = 40;
            workers [i].k = 10;
            workers [i].rounds = 100;
        }
        s_run_checkers (workers, 6);
        //  Afterwards the index's own nprobe is still 1.
        fpx_knn_t got;
        if (CHECK_OK (c, fpx_remote_knn (c, "conc_ivf", 40, DIM, xq, 10, NULL, &got)))
            CHECK_KNN (&expected [0], &got);
        fpx_knn_free (&got);
    }
    for (int v = 0; v < nvalues; v++)
        fpx_knn_free (&expected [v]);
    CHECK_OK (c, fpx_index_drop (c, "conc_ivf"));
    faiss_Index_free (local);
    free (x);
    free (xq);
    fpx_client_destroy (&c);
}

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
    s_xb = fpx_data_uniform (1, NB0, DIM);
    for (int t = 0; t < ADDERS; t++)
        s_xadd [t] = fpx_data_uniform (100 + t, (int64_t) ADD_BATCHES * ADD_BATCH, DIM);
    fpx_test_watch (&s_server);
    if (fpx_test_server_start (&s_server, NULL, NULL) == 0) {
        fpx_test_run ("concurrency.search_while_add_flat", test_search_while_add_flat, NULL);
        fpx_test_run ("concurrency.search_while_add_hnsw", test_search_while_add_hnsw, NULL);
        fpx_test_run ("concurrency.two_indexes_parallel", test_two_indexes_parallel, NULL);
        fpx_test_run ("concurrency.per_request_nprobe", test_per_request_nprobe, NULL);
        fpx_test_run ("concurrency.server_exit", test_server_exit, NULL);
    }
    else
        fpx_test_fail_whole ("concurrency.server_start", "faissproxyd did not start");
    free (s_xb);
    for (int t = 0; t < ADDERS; t++)
        free (s_xadd [t]);
    return fpx_test_finish ();
}
