/*  test_values.c — hostile values and legitimate calls that used to crash
    the server or leak memory (docs/SECURITY.md, "Values from clients").

    One faissproxyd with --workers 1 (so that a "plug" search can hold the
    only worker while small searches queue and get batched); the range
    test starts its own server to read its memory high-water mark.

    - sanitize_unit, vectors_check_unit: the shared text sanitizer and
      vector check, in-process, on edge cases (UTF-8 forms, blocks that
      cross rows, the norm limit's boundary).
    - empty_flat_prefill: after tenant B churned memory with recognizable
      vectors (searches of 7777.0), tenant A searches empty Flat indexes
      (L2 and inner product) with k = 1 and 5, nq = 64: every label -1 and
      every distance FAISS's own for an empty slot (taken in-process from
      an IndexFlat with k > ntotal).
    - empty_flat_batched: the same through the batched path (searches
      queued behind a plug, merged and padded to FAISS's BLAS path).
    - empty_idmap: search, range_search and get_id_map on an empty
      IDMap,Flat: -1 labels, nothing found, no ids, server alive (under
      UBSan too).
    - huge_vectors: vectors of 1e30 refused by add, add_with_ids, search,
      train and k-means with FPX_EINVAL; vectors just under the limit are
      accepted and an IDMap,Flat search (k = 1, nq = 32) of them answers
      only labels that were added; server alive.
    - ivf_train_huge: IVF train on 3e38 → FPX_EINVAL, k-means on 3e38 →
      FPX_EINVAL, IVF train with fewer points than lists → FAISS's own
      refusal; server alive.
    - range_capped: a range search that would find 20 million results is
      FPX_ETOOBIG and the daemon's VmHWM grows by less than 100 MiB.
    - set_parameters_bounds: nprobe=99999999999, efSearch=-5, nprobe=abc,
      nprobe=nan, quantizer_efSearch=0 → FPX_EINVAL, the stored value kept.
    - text_sanitized: factory and set_parameters strings with a newline,
      a tab and invalid UTF-8 → error replies whose text is valid UTF-8
      without control bytes; the server's log (FAISS's own messages
      included) holds only clean lines, none forged by a client.
    - factory_numbers: factory strings with a zero, HNSW's M of 1 or a
      code size over 16 bits (PQ0, IVF0,Flat, HNSW1, PQ4x65, …: SIGFPE,
      SIGSEGV, abort or an endless loop in FAISS) → FPX_EINVAL, named or
      anonymous; the same kinds with sound numbers train, add and search
      as FAISS in-process; server alive.
*/
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fpx_test.h"

#define DIM 16

static fpx_test_server_t s_server;
static fpx_client_t *s_a;           //  tenant A
static fpx_client_t *s_b;           //  tenant B

/* ---- helpers ------------------------------------------------------------------- */

//  FAISS's distance for an empty result slot of an IndexFlat with this
//  metric, measured in-process (k > ntotal).
static float
s_local_empty_distance (int metric)
{
    FaissIndex *index = NULL;
    float x [DIM] = { 0 }, D [3];
    int64_t I [3];
    faiss_index_factory (&index, DIM, "Flat", metric);
    faiss_Index_add (index, 1, x);
    faiss_Index_search (index, 1, x, 3, D, I);
    faiss_Index_free (index);
    return I [2] == -1 ? D [2] : NAN;
}

//  True when text is valid UTF-8 with no control byte (< 0x20, 0x7f).
static bool
s_text_is_clean (const char *text)
{
    const unsigned char *p = (const unsigned char *) text;
    while (*p) {
        if (*p < 0x20 || *p == 0x7f)
            return false;
        int len = *p < 0x80 ? 1 : (*p & 0xe0) == 0xc0 ? 2 : (*p & 0xf0) == 0xe0 ? 3
                : (*p & 0xf8) == 0xf0 ? 4 : 0;
        if (!len || (len == 2 && *p < 0xc2) || (len == 4 && *p > 0xf4))
            return false;
        for (int i = 1; i < len; i++)
            if ((p [i] & 0xc0) != 0x80)
                return false;
        p += len;
    }
    return true;
}

//  Every label -1 and every distance `empty`.
static bool
s_all_empty (const float *D, const int64_t *I, size_t count, float empty, const char *what)
{
    for (size_t i = 0; i < count; i++)
        if (!CHECK (I [i] == -1 && D [i] == empty, "%s: slot %zu holds label %lld, distance %g "
                    "(FAISS's empty slot: -1, %g)", what, i, (long long) I [i], D [i], empty))
            return false;
    return true;
}

static long
s_hwm_kb (const fpx_test_server_t *server)
{
    char path [64], line [256];
    snprintf (path, sizeof path, "/proc/%d/status", (int) server->pid);
    FILE *f = fopen (path, "r");
    long kb = -1;
    while (f && fgets (line, sizeof line, f))
        if (strncmp (line, "VmHWM:", 6) == 0)
            kb = strtol (line + 6, NULL, 10);
    if (f)
        fclose (f);
    return kb;
}

static void
s_alive (const char *after)
{
    CHECK (fpx_test_server_alive (&s_server), "server died after %s", after);
    CHECK (fpx_test_fresh_ping (&s_server) == 0, "no ping after %s", after);
}

static float *
s_filled (int64_t n, int d, float value)
{
    float *x = malloc ((size_t) n * (size_t) d * sizeof (float));
    for (int64_t i = 0; i < n * d; i++)
        x [i] = (i % 2 ? value : -value);
    return x;
}

/* ---- unit checks -------------------------------------------------------------- */

static void
test_sanitize_unit (void *arg)
{
    (void) arg;
    static const struct { const char *in; const char *out; } cases [] = {
        { "plain text", "plain text" },
        { "line\nforged 2026 error", "line\\x0aforged 2026 error" },
        { "tab\there\r", "tab\\x09here\\x0d" },
        { "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80" },
        { "bad \xff\xfe", "bad \\xff\\xfe" },
        { "overlong \xc0\xaf", "overlong \\xc0\\xaf" },
        { "surrogate \xed\xa0\x80", "surrogate \\xed\\xa0\\x80" },
        { "cut \xe2\x82", "cut \\xe2\\x82" },
        { "del\x7f", "del\\x7f" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases [0]; i++) {
        char out [128];
        fpx_text_sanitize (out, sizeof out, cases [i].in, strlen (cases [i].in));
        CHECK (strcmp (out, cases [i].out) == 0, "sanitize case %zu: got \"%s\"", i, out);
        CHECK (s_text_is_clean (out), "sanitize case %zu: output not clean", i);
    }
    //  Truncation keeps whole units: never half an escape or a sequence.
    char small [8];
    size_t len = fpx_text_sanitize (small, sizeof small, "ab\n\xc3\xa9z", 6);
    CHECK (len == 6 && strcmp (small, "ab\\x0a") == 0, "truncated: \"%s\" (%zu)", small, len);
    len = fpx_text_sanitize (small, sizeof small, "abcdef\xc3\xa9", 8);
    CHECK (len == 6 && strcmp (small, "abcdef") == 0, "truncated before UTF-8: \"%s\"", small);
}

static void
test_vectors_check_unit (void *arg)
{
    (void) arg;
    size_t row;
    double norm2;
    //  Rows of 3 so that blocks of 64 floats cross rows.
    enum { N = 100, D = 3 };
    float x [N * D];
    for (int i = 0; i < N * D; i++)
        x [i] = (float) (i % 17) - 8.0f;
    CHECK (fpx_vectors_check (x, N, D, &row, &norm2) == 0, "ordinary data refused");
    //  Just under the limit in one component: accepted (slow path).
    float limit = (float) sqrt (FPX_VECTOR_NORM2_MAX);
    x [3 * 21 + 2] = nextafterf (limit, 0);
    CHECK (fpx_vectors_check (x, N, D, &row, &norm2) == 0, "a vector under the limit refused");
    x [3 * 21 + 2] = 1.5e19f;                   //  two components over the limit together
    x [3 * 21 + 1] = 1e19f;
    CHECK (fpx_vectors_check (x, N, D, &row, &norm2) == FPX_VECTORS_TOO_LARGE && row == 21,
           "norm over the limit: rc, row %zu", row);
    x [3 * 21 + 1] = 0;
    x [3 * 21 + 2] = 0;
    x [3 * 99 + 1] = 3e38f;                     //  in the tail, past the last full block
    CHECK (fpx_vectors_check (x, N, D, &row, &norm2) == FPX_VECTORS_TOO_LARGE && row == 99,
           "3e38 in the tail: row %zu", row);
    x [3 * 99 + 1] = NAN;
    CHECK (fpx_vectors_check (x, N, D, &row, &norm2) == FPX_VECTORS_NOT_FINITE && row == 99,
           "NaN in the tail");
    x [3 * 99 + 1] = 0;
    x [5] = -INFINITY;
    CHECK (fpx_vectors_check (x, N, D, &row, &norm2) == FPX_VECTORS_NOT_FINITE && row == 1,
           "-inf in row 1");
}

/* ---- finding 3: uninitialised result buffers ---------------------------------- */

//  Tenant B fills the server's heap with 7777.0 (adds, searches, drop).
static void
s_churn_tenant_b (void)
{
    float *x = s_filled (4000, DIM, 7777.0f);
    float *D = malloc (256 * 5 * sizeof (float));
    int64_t *I = malloc (256 * 5 * sizeof (int64_t));
    CHECK_OK (s_b, fpx_index_create (s_b, "churn", DIM, "Flat", FPX_METRIC_L2, NULL));
    CHECK_OK (s_b, fpx_add (s_b, "churn", 4000, DIM, x, NULL));
    for (int i = 0; i < 4; i++)
        CHECK_OK (s_b, fpx_search (s_b, "churn", 256, DIM, x, 5, NULL, D, I));
    CHECK_OK (s_b, fpx_index_drop (s_b, "churn"));
    free (x);
    free (D);
    free (I);
}

static void
test_empty_flat_prefill (void *arg)
{
    (void) arg;
    enum { NQ = 64 };
    float *xq = fpx_data_uniform (31, NQ, DIM);
    float D [NQ * 5];
    int64_t I [NQ * 5];
    const int metrics [2] = { FPX_METRIC_L2, FPX_METRIC_INNER_PRODUCT };
    for (int m = 0; m < 2; m++) {
        float empty = s_local_empty_distance (metrics [m]);
        CHECK (empty == (m ? -FLT_MAX : FLT_MAX), "FAISS's empty slot distance is %g", empty);
        char name [32];
        snprintf (name, sizeof name, "empty_%d", m);
        REQUIRE_OK (s_a, fpx_index_create (s_a, name, DIM, "Flat", metrics [m], NULL));
        for (int k = 1; k <= 5; k += 4) {
            s_churn_tenant_b ();
            memset (D, 0x5a, sizeof D);
            memset (I, 0x5a, sizeof I);
            if (CHECK_OK (s_a, fpx_search (s_a, name, NQ, DIM, xq, k, NULL, D, I)))
                s_all_empty (D, I, (size_t) NQ * (size_t) k, empty, name);
        }
    }
    free (xq);
    s_alive ("searches of empty Flat indexes");
}

//  The plug: a search on a large Flat index holding the only worker.
static bool
s_plug_begin (fpx_client_t *plug, const float *xq, int64_t nq, float *D, int64_t *I)
{
    uint64_t id;
    if (!CHECK_OK (plug, fpx_search_send (plug, "plug", nq, DIM, xq, 1, NULL, D, I, &id)))
        return false;
    fpx_sleep_ms (150);
    return true;
}

static void
test_empty_flat_batched (void *arg)
{
    (void) arg;
    enum { PLUG_NB = 20000, PLUG_NQ_MAX = 20000, NREQ = 6, NQ = 3 };
    fpx_client_t *plug = fpx_test_client (&s_server, fpx_test_key_a);
    REQUIRE (plug, "plug client");
    float *xb = fpx_data_uniform (41, PLUG_NB, DIM);
    float *pD = malloc (PLUG_NQ_MAX * sizeof (float));
    int64_t *pI = malloc (PLUG_NQ_MAX * sizeof (int64_t));
    int64_t plug_nq = 2000;
    float *xq = fpx_data_uniform (42, NREQ * NQ, DIM);
    float D [NREQ] [NQ * 5];
    int64_t I [NREQ] [NQ * 5];
    float empty = s_local_empty_distance (FPX_METRIC_L2);
    if (CHECK_OK (plug, fpx_index_create (plug, "plug", DIM, "Flat", FPX_METRIC_L2, NULL))
    &&  CHECK_OK (plug, fpx_add (plug, "plug", PLUG_NB, DIM, xb, NULL))
    &&  CHECK_OK (s_a, fpx_index_create (s_a, "empty_batched", DIM, "Flat", FPX_METRIC_L2, NULL))) {
        //  About a second of work for the plug.
        double t0 = fpx_now ();
        CHECK_OK (plug, fpx_search (plug, "plug", plug_nq, DIM, xb, 1, NULL, pD, pI));
        double t = fpx_now () - t0;
        plug_nq = (int64_t) (plug_nq / (t > 1e-3 ? t : 1e-3));
        plug_nq = plug_nq < 4000 ? 4000 : plug_nq > PLUG_NQ_MAX ? PLUG_NQ_MAX : plug_nq;
        for (int k = 1; k <= 5; k += 4) {
            s_churn_tenant_b ();
            memset (D, 0x5a, sizeof D);
            memset (I, 0x5a, sizeof I);
            if (!s_plug_begin (plug, xb, plug_nq, pD, pI))
                break;
            for (int r = 0; r < NREQ; r++) {
                uint64_t id;
                CHECK_OK (s_a, fpx_search_send (s_a, "empty_batched", NQ, DIM, xq + r * NQ * DIM, k,
                                                NULL, D [r], I [r], &id));
            }
            fpx_completion_t done;
            CHECK (fpx_recv (plug, 120000, &done) == 1 && done.status == 0, "plug search");
            for (int r = 0; r < NREQ; r++)
                CHECK (fpx_recv (s_a, 60000, &done) == 1 && done.status == 0,
                       "batched search %d: %s", r, fpx_client_errmsg (s_a));
            for (int r = 0; r < NREQ; r++)
                s_all_empty (D [r], I [r], (size_t) NQ * (size_t) k, empty, "batched empty Flat");
        }
    }
    //  The searches above were batched: the info counters say so.
    fpx_raw_t *raw = fpx_raw_new (s_server.endpoint);
    fpx_raw_reply_t reply;
    int64_t calls = -1;
    if (raw && fpx_raw_call (raw, FPX_OP_INFO, fpx_test_key_a, NULL, 0, 0, NULL, NULL, &reply) == 0) {
        fpx_params_get_int (&reply.result, "batched_calls", &calls);
        fpx_raw_reply_free (&reply);
    }
    fpx_raw_destroy (&raw);
    CHECK (calls >= 2, "batched_calls = %lld: the searches did not take the batched path",
           (long long) calls);
    fpx_client_destroy (&plug);
    free (xb);
    free (xq);
    free (pD);
    free (pI);
    s_alive ("batched searches of an empty Flat index");
}

/* ---- finding 4: legitimate calls that crashed ------------------------------------- */

static void
test_empty_idmap (void *arg)
{
    (void) arg;
    enum { NQ = 64, K = 3 };
    float *xq = fpx_data_uniform (51, NQ, DIM);
    float D [NQ * K];
    int64_t I [NQ * K];
    REQUIRE_OK (s_a, fpx_index_create (s_a, "empty_idmap", DIM, "IDMap,Flat", FPX_METRIC_L2, NULL));
    for (int k = 1; k <= K; k += K - 1) {
        s_churn_tenant_b ();
        if (CHECK_OK (s_a, fpx_search (s_a, "empty_idmap", NQ, DIM, xq, k, NULL, D, I)))
            s_all_empty (D, I, (size_t) NQ * (size_t) k, FLT_MAX, "empty IDMap,Flat");
        s_alive ("a search of an empty IDMap,Flat");
    }
    fpx_range_result_t *range = NULL;
    if (CHECK_OK (s_a, fpx_range_search (s_a, "empty_idmap", NQ, DIM, xq, 1e30f, NULL, &range)))
        CHECK (range->lims [NQ] == 0, "range search of an empty index found %llu",
               (unsigned long long) range->lims [NQ]);
    fpx_range_result_destroy (&range);
    free (xq);
    s_alive ("a range search of an empty IDMap,Flat");
    //  Its id map is empty, as in-process (the server used to copy from a
    //  null pointer: undefined behaviour, an abort under UBSan).
    int64_t *ids = NULL;
    size_t n = 99;
    if (CHECK_OK (s_a, fpx_get_id_map (s_a, "empty_idmap", &ids, &n)))
        CHECK (n == 0, "empty IDMap,Flat has an id map of %zu", n);
    free (ids);
    s_alive ("get_id_map of an empty IDMap,Flat");
}

static void
test_huge_vectors (void *arg)
{
    (void) arg;
    enum { N = 32 };
    float *huge = s_filled (N, DIM, 1e30f);
    int64_t ids [N];
    for (int i = 0; i < N; i++)
        ids [i] = 1000 + i;
    float D [N];
    int64_t I [N];
    float centroids [4 * DIM];
    REQUIRE_OK (s_a, fpx_index_create (s_a, "huge", DIM, "IDMap,Flat", FPX_METRIC_L2, NULL));
    CHECK_RC (s_a, fpx_add_with_ids (s_a, "huge", N, DIM, huge, ids, NULL), FPX_EINVAL);
    CHECK (strstr (fpx_client_errmsg (s_a), "squared norm"), "message: %s", fpx_client_errmsg (s_a));
    CHECK_RC (s_a, fpx_search (s_a, "huge", N, DIM, huge, 1, NULL, D, I), FPX_EINVAL);
    CHECK_RC (s_a, fpx_kmeans (s_a, DIM, 4, N, huge, NULL, centroids, NULL, 0, NULL), FPX_EINVAL);
    s_alive ("vectors of 1e30");
    //  Largest accepted magnitude: every value ±sqrt (limit / d), just under.
    float big = nextafterf ((float) sqrt (FPX_VECTOR_NORM2_MAX / DIM), 0);
    float *edge = s_filled (N, DIM, big);
    for (int i = 0; i < N; i++)
        edge [i * DIM] = (float) (i % 5) * big / 8;     //  not all the same vector
    int64_t ntotal = 0;
    if (CHECK_OK (s_a, fpx_add_with_ids (s_a, "huge", N, DIM, edge, ids, &ntotal))
    &&  CHECK_OK (s_a, fpx_search (s_a, "huge", N, DIM, edge, 1, NULL, D, I)))
        for (int i = 0; i < N; i++)
            CHECK (I [i] >= 1000 && I [i] < 1000 + N && isfinite (D [i]),
                   "query %d: label %lld distance %g", i, (long long) I [i], D [i]);
    CHECK (ntotal == N, "ntotal %lld", (long long) ntotal);
    free (huge);
    free (edge);
    s_alive ("vectors at the norm limit");
}

static void
test_ivf_train_huge (void *arg)
{
    (void) arg;
    enum { N = 1000 };
    float *x = s_filled (N, DIM, 3e38f);
    float centroids [4 * DIM];
    REQUIRE_OK (s_a, fpx_index_create (s_a, "ivf_huge", DIM, "IVF4,Flat", FPX_METRIC_L2, NULL));
    CHECK_RC (s_a, fpx_train (s_a, "ivf_huge", N, DIM, x), FPX_EINVAL);
    s_alive ("IVF train on 3e38");
    CHECK_RC (s_a, fpx_kmeans (s_a, DIM, 4, N, x, NULL, centroids, NULL, 0, NULL), FPX_EINVAL);
    s_alive ("k-means on 3e38");
    //  Fewer points than lists: FAISS's own refusal, not an abort.
    float *few = fpx_data_uniform (61, 3, DIM);
    int rc = fpx_train (s_a, "ivf_huge", 3, DIM, few);
    CHECK (rc == FPX_EFAISS, "train with 3 points for 4 lists: %d %s", rc, fpx_client_errmsg (s_a));
    rc = fpx_kmeans (s_a, DIM, 4, 3, few, NULL, centroids, NULL, 0, NULL);
    CHECK (rc == FPX_EFAISS, "k-means of 3 points into 4: %d %s", rc, fpx_client_errmsg (s_a));
    free (few);
    free (x);
    s_alive ("IVF train with too few points");
}

/* ---- finding 5: range_search memory --------------------------------------------- */

static void
test_range_capped (void *arg)
{
    (void) arg;
    enum { NB = 50000, NQ = 400, D = 4 };
    fpx_test_server_t server;
    const char *args [] = { "--max-message-mb", "8", NULL };
    REQUIRE (fpx_test_server_start (&server, args, NULL) == 0, "second server did not start");
    fpx_client_t *c = fpx_test_client (&server, fpx_test_key_a);
    float *xb = fpx_data_uniform (71, NB, D);
    fpx_range_result_t *range = NULL;
    if (CHECK (c, "client")
    &&  CHECK_OK (c, fpx_index_create (c, "range", D, "Flat", FPX_METRIC_L2, NULL))
    &&  CHECK_OK (c, fpx_add (c, "range", NB, D, xb, NULL))) {
        long before = s_hwm_kb (&server);
        //  Every vector is within 1e6 of every query: 20 million results
        //  (240 MB), over the limit of 8 MiB / 12 bytes.
        int rc = fpx_range_search (c, "range", NQ, D, xb, 1e6f, NULL, &range);
        long after = s_hwm_kb (&server);
        CHECK (rc == FPX_ETOOBIG, "range search of 20M results: %d %s", rc,
               fpx_client_errmsg (c));
        CHECK (before > 0 && after - before < 100 * 1024,
               "VmHWM grew by %ld KiB (from %ld KiB) for a refused range search, bound 100 MiB",
               after - before, before);
        fprintf (stderr, "# range_capped: VmHWM %ld -> %ld KiB\n", before, after);
        fpx_range_result_destroy (&range);
        //  Under the limit it still answers.
        rc = fpx_range_search (c, "range", 2, D, xb, 1e6f, NULL, &range);
        if (CHECK (rc == 0, "range search of 100000 results: %d %s", rc, fpx_client_errmsg (c)))
            CHECK (range->lims [1] == NB && range->lims [2] == 2 * NB, "lims %llu %llu",
                   (unsigned long long) range->lims [1], (unsigned long long) range->lims [2]);
        fpx_range_result_destroy (&range);
    }
    CHECK (fpx_test_server_alive (&server), "server died");
    fpx_client_destroy (&c);
    free (xb);
    fpx_test_server_stop (&server, 30);
}

/* ---- finding 8: set_parameters bounds, text of errors ---------------------------- */

static void
test_set_parameters_bounds (void *arg)
{
    (void) arg;
    float *xb = fpx_data_uniform (81, 2000, DIM);
    double value = 0;
    REQUIRE_OK (s_a, fpx_index_create (s_a, "sp_ivf", DIM, "IVF8,Flat", FPX_METRIC_L2, NULL));
    REQUIRE_OK (s_a, fpx_index_create (s_a, "sp_hnsw", DIM, "HNSW8", FPX_METRIC_L2, NULL));
    REQUIRE_OK (s_a, fpx_train (s_a, "sp_ivf", 2000, DIM, xb));
    REQUIRE_OK (s_a, fpx_set_parameters (s_a, "sp_ivf", "nprobe=4"));
    REQUIRE_OK (s_a, fpx_set_parameters (s_a, "sp_hnsw", "efSearch=24"));
    static const char *bad_ivf [] = { "nprobe=99999999999", "nprobe=0", "nprobe=abc", "nprobe=nan",
                                      "nprobe=", "nprobe=3,nprobe=-1", "max_codes=-1", "verbose=1" };
    for (size_t i = 0; i < sizeof bad_ivf / sizeof bad_ivf [0]; i++) {
        CHECK_RC (s_a, fpx_set_parameters (s_a, "sp_ivf", bad_ivf [i]), FPX_EINVAL);
        CHECK (fpx_get_attr (s_a, "sp_ivf", "nprobe", &value) == 0 && value == 4,
               "nprobe %g after refused \"%s\"", value, bad_ivf [i]);
    }
    static const char *bad_hnsw [] = { "efSearch=-5", "efSearch=1e300", "efConstruction=0" };
    for (size_t i = 0; i < sizeof bad_hnsw / sizeof bad_hnsw [0]; i++) {
        CHECK_RC (s_a, fpx_set_parameters (s_a, "sp_hnsw", bad_hnsw [i]), FPX_EINVAL);
        CHECK (fpx_get_attr (s_a, "sp_hnsw", "efSearch", &value) == 0 && value == 24,
               "efSearch %g after refused \"%s\"", value, bad_hnsw [i]);
    }
    CHECK_RC (s_a, fpx_set_parameters (s_a, "sp_ivf", "quantizer_efSearch=-5"), FPX_EINVAL);
    //  In bounds still works, as FAISS in-process.
    CHECK_OK (s_a, fpx_set_parameters (s_a, "sp_ivf", "nprobe=8 max_codes=0"));
    CHECK (fpx_get_attr (s_a, "sp_ivf", "nprobe", &value) == 0 && value == 8, "nprobe %g", value);
    free (xb);
    s_alive ("set_parameters out of bounds");
}

static void
test_text_sanitized (void *arg)
{
    (void) arg;
    const char *factory = "Flat\n2026-01-01T00:00:00.000Z error forged\t\xff\xfe\xc3(";
    int rc = fpx_index_create (s_a, "bad_text", DIM, factory, FPX_METRIC_L2, NULL);
    CHECK (rc < 0, "factory with control bytes accepted");
    CHECK (s_text_is_clean (fpx_client_errmsg (s_a)), "factory error text not clean: %s",
           fpx_client_errmsg (s_a));
    REQUIRE_OK (s_a, fpx_index_create (s_a, "text_flat", DIM, "Flat", FPX_METRIC_L2, NULL));
    rc = fpx_set_parameters (s_a, "text_flat", "bogus\n\x01\xff=1");
    CHECK (rc < 0, "set_parameters with control bytes accepted");
    CHECK (s_text_is_clean (fpx_client_errmsg (s_a)), "set_parameters error text not clean: %s",
           fpx_client_errmsg (s_a));
    rc = fpx_set_parameters (s_a, "text_flat", "nprobe=\xe2\x82\n");
    CHECK (rc == FPX_EINVAL, "nprobe with bytes: %d", rc);
    CHECK (s_text_is_clean (fpx_client_errmsg (s_a)), "nprobe error text not clean: %s",
           fpx_client_errmsg (s_a));
    //  A parameter name FAISS itself refuses: its message quotes the name.
    rc = fpx_set_parameters (s_a, "text_flat", "nprobe\n2026-01-01T00:00:00.000Z error forged\x01=1");
    CHECK (rc < 0, "set_parameters with a forged line accepted");
    s_alive ("strings with control bytes");
    //  Whatever reached the server's log (its own lines and anything FAISS
    //  printed) is lines of clean text, none of them forged by a client.
    FILE *log = fopen (s_server.log_path, "r");
    if (CHECK (log != NULL, "cannot read %s", s_server.log_path)) {
        char line [4096];
        int lines = 0;
        while (fgets (line, sizeof line, log)) {
            line [strcspn (line, "\n")] = 0;
            lines++;
            CHECK (s_text_is_clean (line), "log line %d is not clean text: %s", lines, line);
            CHECK (strncmp (line, "2026-01-01T", 11) != 0, "forged log line %d: %s", lines, line);
        }
        fclose (log);
    }
}

//  Factory strings whose numbers FAISS divides by, shifts by or loops on
//  without a check: each one killed or hung the server (in-process FAISS
//  dies the same way: SIGFPE, SIGSEGV, abort, an endless HNSW level draw).
static void
test_factory_numbers (void *arg)
{
    (void) arg;
    static const char *const killers [] = {
        "PQ0", "PQ0np", "IVF4,PQ0", "PQ0x4", "PQ4x0", "PQ16x0", "PQ4x32", "PQ4x65",
        "OPQ0,PQ4", "OPQ4_0,PQ4", "PCAR0,Flat", "IVF0,Flat", "HNSW0", "HNSW1", "HNSW1,Flat",
        "IVF4_HNSW1,Flat", "HNSW4_PQ0", "L2norm,PQ0", "IDMap2,PQ0", "Refine(PQ0)",
        "RQ4x0", "LSQ0x4", "IVF4,RQ0x4",
    };
    for (size_t i = 0; i < sizeof killers / sizeof killers [0]; i++) {
        fpx_index_info_t info;
        int rc = fpx_index_create (s_a, NULL, DIM, killers [i], FPX_METRIC_L2, &info);
        CHECK (rc == FPX_EINVAL, "anonymous create \"%s\": %d (%s)", killers [i], rc,
               fpx_client_errmsg (s_a));
        rc = fpx_index_create (s_a, "factory_killer", DIM, killers [i], FPX_METRIC_L2, NULL);
        CHECK (rc == FPX_EINVAL, "create \"%s\": %d (%s)", killers [i], rc, fpx_client_errmsg (s_a));
        if (!CHECK (fpx_test_server_alive (&s_server), "server died on factory \"%s\"", killers [i]))
            return;
    }
    //  The same grammar with sound numbers builds, trains and searches as
    //  FAISS does in-process.
    static const char *const sound [] = {
        "PQ4x4", "PQ2x6", "IVF4,PQ4x4", "OPQ4_16,PQ4x4", "HNSW2", "HNSW8,Flat", "IVF1,Flat",
    };
    enum { N = 512, Q = 4, K = 3 };
    float *x = malloc ((size_t) N * DIM * sizeof (float));
    for (int i = 0; i < N * DIM; i++)
        x [i] = (float) ((i * 7919) % 1000) / 1000.0f;
    for (size_t i = 0; i < sizeof sound / sizeof sound [0]; i++) {
        char name [32];
        snprintf (name, sizeof name, "factory_sound_%zu", i);
        REQUIRE_OK (s_a, fpx_index_create (s_a, name, DIM, sound [i], FPX_METRIC_L2, NULL));
        FaissIndex *local = NULL;
        REQUIRE (faiss_index_factory (&local, DIM, sound [i], METRIC_L2) == 0, "local %s", sound [i]);
        float D [Q * K], Dl [Q * K];
        int64_t I [Q * K], Il [Q * K];
        CHECK_OK (s_a, fpx_train (s_a, name, N, DIM, x));
        CHECK_OK (s_a, fpx_add (s_a, name, N, DIM, x, NULL));
        CHECK_OK (s_a, fpx_search (s_a, name, Q, DIM, x, K, NULL, D, I));
        faiss_Index_train (local, N, x);
        faiss_Index_add (local, N, x);
        faiss_Index_search (local, Q, x, K, Dl, Il);
        //  HNSW's graph depends on the order of parallel adds: its answers
        //  are checked for sense, the others against FAISS's.
        bool hnsw = strncmp (sound [i], "HNSW", 4) == 0;
        for (int j = 0; j < Q * K; j++)
            CHECK (hnsw ? I [j] >= 0 && I [j] < N && isfinite (D [j])
                        : I [j] == Il [j] || fabsf (D [j] - Dl [j]) <= 1e-4f * (1 + fabsf (Dl [j])),
                   "%s result %d: (%lld, %g), in-process (%lld, %g)", sound [i], j,
                   (long long) I [j], D [j], (long long) Il [j], Dl [j]);
        faiss_Index_free (local);
        CHECK_OK (s_a, fpx_index_drop (s_a, name));
    }
    free (x);
    s_alive ("factory strings with zero and out-of-range numbers");
}

//  FAISS's Cloner allocates a parent before it copies the child and leaks
//  it when the child's type is one it cannot clone (80+ bytes a request,
//  without end: the live fuzz found it). Such clones are refused before
//  FAISS starts; clonable ones answer as their original, which answers as
//  FAISS in-process (server_exit, under ASan, then finds no leak).
static void
test_clone_refused (void *arg)
{
    (void) arg;
    static const char *const unclonable [] = {
        "L2norm,Flat", "IDMap2,L2norm,Flat", "PQ4x4,RFlat", "IDMap,PQ4x4,RFlat", "IVF4,PQ4x4fs",
    };
    enum { N = 256, Q = 3, K = 4 };
    float *x = malloc ((size_t) N * DIM * sizeof (float));
    for (int i = 0; i < N * DIM; i++)
        x [i] = (float) ((i * 6007) % 997) / 997.0f;
    for (size_t i = 0; i < sizeof unclonable / sizeof unclonable [0]; i++) {
        fpx_index_info_t info, copy;
        if (!CHECK_OK (s_a, fpx_index_create (s_a, NULL, DIM, unclonable [i], FPX_METRIC_L2, &info)))
            continue;
        for (int round = 0; round < 3; round++) {
            int rc = fpx_clone (s_a, info.name, &copy);
            const char *message = fpx_client_errmsg (s_a);
            CHECK (rc == FPX_EINVAL && message && strstr (message, "cannot clone"),
                   "clone of \"%s\": %d (%s)", unclonable [i], rc, message ? message : "");
        }
        CHECK_OK (s_a, fpx_index_drop (s_a, info.name));
    }
    static const char *const clonable [] = { "IDMap,Flat", "PCA8,Flat", "IVF4,Flat", "HNSW8" };
    for (size_t i = 0; i < sizeof clonable / sizeof clonable [0]; i++) {
        fpx_index_info_t info, copy;
        FaissIndex *local = NULL;
        REQUIRE (faiss_index_factory (&local, DIM, clonable [i], METRIC_L2) == 0, "local %s",
                 clonable [i]);
        REQUIRE_OK (s_a, fpx_index_create (s_a, NULL, DIM, clonable [i], FPX_METRIC_L2, &info));
        CHECK_OK (s_a, fpx_train (s_a, info.name, N, DIM, x));
        if (strncmp (clonable [i], "IDMap", 5) == 0) {
            int64_t ids [N];
            for (int j = 0; j < N; j++)
                ids [j] = 1000 + 3 * j;
            CHECK_OK (s_a, fpx_add_with_ids (s_a, info.name, N, DIM, x, ids, NULL));
            faiss_Index_add_with_ids (local, N, x, ids);
        }
        else {
            CHECK_OK (s_a, fpx_add (s_a, info.name, N, DIM, x, NULL));
            faiss_Index_train (local, N, x);
            faiss_Index_add (local, N, x);
        }
        if (CHECK_OK (s_a, fpx_clone (s_a, info.name, &copy))) {
            CHECK_EQ (copy.ntotal, N);
            float D [Q * K], Dc [Q * K], Dl [Q * K];
            int64_t I [Q * K], Ic [Q * K], Il [Q * K];
            CHECK_OK (s_a, fpx_search (s_a, info.name, Q, DIM, x, K, NULL, D, I));
            CHECK_OK (s_a, fpx_search (s_a, copy.name, Q, DIM, x, K, NULL, Dc, Ic));
            faiss_Index_search (local, Q, x, K, Dl, Il);
            bool hnsw = strncmp (clonable [i], "HNSW", 4) == 0;
            for (int j = 0; j < Q * K; j++) {
                CHECK (I [j] == Ic [j] && D [j] == Dc [j], "%s clone result %d: (%lld, %g), "
                       "original (%lld, %g)", clonable [i], j, (long long) Ic [j], Dc [j],
                       (long long) I [j], D [j]);
                CHECK (hnsw ? I [j] >= 0 && I [j] < N
                            : I [j] == Il [j] || fabsf (D [j] - Dl [j]) <= 1e-4f * (1 + fabsf (Dl [j])),
                       "%s result %d: (%lld, %g), in-process (%lld, %g)", clonable [i], j,
                       (long long) I [j], D [j], (long long) Il [j], Dl [j]);
            }
            CHECK_OK (s_a, fpx_index_drop (s_a, copy.name));
        }
        faiss_Index_free (local);
        CHECK_OK (s_a, fpx_index_drop (s_a, info.name));
    }
    free (x);
    s_alive ("clones of indexes FAISS cannot clone");
}

static void
test_server_exit (void *arg)
{
    (void) arg;
    fpx_client_destroy (&s_a);
    fpx_client_destroy (&s_b);
    int status = fpx_test_server_stop (&s_server, 30);
    CHECK (status == 0, "server exit status %d %s", status, s_server.diagnosis);
}

//  Runs a test on the shared server, started afresh first if an earlier
//  test killed it (so that each finding is judged on its own).
static void
s_run (const char *name, fpx_test_fn_t *fn)
{
    if (!fpx_test_server_alive (&s_server)) {
        fpx_client_destroy (&s_a);
        fpx_client_destroy (&s_b);
        fpx_test_server_stop (&s_server, 10);
        const char *args [] = { "--workers", "1", NULL };
        if (fpx_test_server_start (&s_server, args, NULL) != 0) {
            fpx_test_fail_whole (name, "faissproxyd did not restart");
            return;
        }
        s_a = fpx_test_client (&s_server, fpx_test_key_a);
        s_b = fpx_test_client (&s_server, fpx_test_key_b);
    }
    fpx_test_run (name, fn, NULL);
}

int
main (void)
{
    fpx_test_local_single_thread ();
    fpx_test_run ("values.sanitize_unit", test_sanitize_unit, NULL);
    fpx_test_run ("values.vectors_check_unit", test_vectors_check_unit, NULL);
    fpx_test_watch (&s_server);
    const char *args [] = { "--workers", "1", NULL };
    if (fpx_test_server_start (&s_server, args, NULL) == 0) {
        s_a = fpx_test_client (&s_server, fpx_test_key_a);
        s_b = fpx_test_client (&s_server, fpx_test_key_b);
        s_run ("values.empty_flat_prefill", test_empty_flat_prefill);
        s_run ("values.empty_flat_batched", test_empty_flat_batched);
        s_run ("values.empty_idmap", test_empty_idmap);
        s_run ("values.huge_vectors", test_huge_vectors);
        s_run ("values.ivf_train_huge", test_ivf_train_huge);
        s_run ("values.set_parameters_bounds", test_set_parameters_bounds);
        s_run ("values.text_sanitized", test_text_sanitized);
        s_run ("values.factory_numbers", test_factory_numbers);
        s_run ("values.clone_refused", test_clone_refused);
        fpx_test_run ("values.server_exit", test_server_exit, NULL);
    }
    else
        fpx_test_fail_whole ("values.server_start", "faissproxyd did not start");
    fpx_test_run ("values.range_capped", test_range_capped, NULL);
    return fpx_test_finish ();
}
