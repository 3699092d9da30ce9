/*  test_ops.c — every operation on every index type, against FAISS
    in-process.

    One faissproxyd; for each index type a fixture holds the remote named
    index and a local FAISS index built from the same factory string and the
    same seeded data, and every step does the same call on both: results
    must be identical (labels exactly, ties aside; distances within 1e-5
    relative; reconstructions bit for bit). Where FAISS 1.7.3 refuses an
    operation in-process, the server must answer FPX_EFAISS with FAISS's
    message. Where FAISS would abort the process instead of throwing
    (reconstruct_n on an IDMap), the local call is not made and the server
    must answer an error and stay up.

    "PQ8" and "IVF16,PQ8" run as "PQ8np" / "IVF16,PQ8np": the same codes
    without FAISS's polysemous training, which alone costs 20-80 s per
    train on two cores (test_plain_pq checks that the plain strings are
    accepted and refused before training).

    HNSW graphs are only deterministic when built sequentially, which FAISS
    does for batches of at most 100 vectors; both sides add in such batches.
    remove_ids on HNSW, which FAISS refuses in-process, rebuilds the graph
    on the server on one thread; the local side builds a new index from
    the same vectors in one add on its one thread (s_local_hnsw_remove).
*/
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <faiss/c_api/clone_index_c.h>

#include "fpx_test.h"

#define DIM        32
#define NT       5000           //  training vectors
#define NB       3000           //  database vectors
#define NQ       50             //  queries
#define K        10
#define KEXTRA   50             //  extra reference columns to resolve ties

enum {
    T_IVF    = 1,               //  nprobe applies
    T_HNSW   = 2,               //  efSearch applies; search depends on k
    T_HNSWQ  = 4,               //  efSearch applies to the coarse quantizer
    T_IDMAP  = 8,               //  ids only through add_with_ids
    T_IDMAP2 = 16,              //  … and reconstruct by id
};

typedef struct {
    const char *label;
    const char *factory;
    int metric;
    unsigned flags;
} index_type_t;

static const index_type_t s_types [] = {
    { "Flat_L2",          "Flat",             FPX_METRIC_L2,            0 },
    { "Flat_IP",          "Flat",             FPX_METRIC_INNER_PRODUCT, 0 },
    { "IVF16_Flat",       "IVF16,Flat",       FPX_METRIC_L2,            T_IVF },
    { "IVF16_PQ8",        "IVF16,PQ8np",      FPX_METRIC_L2,            T_IVF },
    { "IVF16_SQ8",        "IVF16,SQ8",        FPX_METRIC_L2,            T_IVF },
    { "HNSW16",           "HNSW16",           FPX_METRIC_L2,            T_HNSW },
    { "HNSW16_SQ8",       "HNSW16,SQ8",       FPX_METRIC_L2,            T_HNSW },
    { "PQ8",              "PQ8np",            FPX_METRIC_L2,            0 },
    { "SQ8",              "SQ8",              FPX_METRIC_L2,            0 },
    { "SQfp16",           "SQfp16",           FPX_METRIC_L2,            0 },
    { "LSH",              "LSH",              FPX_METRIC_L2,            0 },
    { "IDMap_Flat",       "IDMap,Flat",       FPX_METRIC_L2,            T_IDMAP },
    { "IDMap2_Flat",      "IDMap2,Flat",      FPX_METRIC_L2,            T_IDMAP | T_IDMAP2 },
    { "PCA16_IVF16_Flat", "PCA16,IVF16,Flat", FPX_METRIC_L2,            T_IVF },
    { "IVF16_HNSW8_Flat", "IVF16_HNSW8,Flat", FPX_METRIC_L2,            T_IVF | T_HNSWQ },
};
#define NTYPES ((int) (sizeof s_types / sizeof s_types [0]))

static fpx_test_server_t s_server;
static fpx_client_t *s_client;
static float *s_xt, *s_xb, *s_xq;

typedef struct {
    const index_type_t *type;
    char name [64];
    FaissIndex *local;
    bool created;
    bool filled;                //  trained and holding NB vectors
    int64_t *ids;               //  the ids given to add_with_ids (T_IDMAP, T_IVF)
    int kextra;
} fixture_t;


static fixture_t s_fixtures [NTYPES];

static int s_call_timeout_ms (void);
static bool s_ensure_server (void);

/* ---- helpers ------------------------------------------------------------------ */

//  Ids: for IDMap types, the first half are NB/2-1 … 0 (so that
//  reconstruct_n over [0, NB/2) finds them all) and the second half large
//  ids; for IVF types the first half is added without ids (0 … NB/2-1)
//  and the second half with large ids.
static int64_t
s_id_of (const fixture_t *fx, int64_t i)
{
    if (fx->type->flags & T_IDMAP)
        return i < NB / 2 ? NB / 2 - 1 - i : 1000000 + 7 * i;
    return i < NB / 2 ? i : 1000000 + 7 * i;
}

static int
s_batch (const fixture_t *fx)
{
    return (fx->type->flags & T_HNSW) ? 100 : 1000;
}

static bool
s_has (const fixture_t *fx, unsigned flag)
{
    return (fx->type->flags & flag) != 0;
}

//  Searches local (a copy, if params are given) the way the server should
//  have for those params.
static int
s_local_knn_with (const fixture_t *fx, const fpx_search_params_t *params, int64_t nq,
                  const float *x, int k, fpx_knn_t *out, char *why, size_t why_size)
{
    const FaissIndex *index = fx->local;
    FaissIndex *copy = NULL;
    if (params && (params->nprobe > 0 || params->efSearch > 0)) {
        copy = fpx_local_copy (fx->local);
        if (!copy) {
            snprintf (why, why_size, "local copy failed: %s", fpx_local_error ());
            return -1;
        }
        if (params->nprobe > 0 && fpx_local_set_param (copy, "nprobe", params->nprobe)) {
            snprintf (why, why_size, "local nprobe: %s", fpx_local_error ());
            faiss_Index_free (copy);
            return -1;
        }
        if (params->efSearch > 0 && fpx_local_set_param (copy, "efSearch", params->efSearch)) {
            snprintf (why, why_size, "local efSearch: %s", fpx_local_error ());
            faiss_Index_free (copy);
            return -1;
        }
        index = copy;
    }
    int rc = fpx_local_knn (index, nq, x, k, fx->kextra, out);
    if (rc)
        snprintf (why, why_size, "local search: %s", fpx_local_error ());
    faiss_Index_free (copy);
    return rc;
}

//  Remote search with params against the local equivalent.
static void
s_compare_search (const fixture_t *fx, const char *name, const fpx_search_params_t *params,
                  int64_t nq, const float *x, int k, const char *what)
{
    char why [512];
    fpx_knn_t ref, got;
    if (s_local_knn_with (fx, params, nq, x, k, &ref, why, sizeof why)) {
        FAIL ("%s: %s", what, why);
        return;
    }
    int rc = fpx_remote_knn (s_client, name, nq, DIM, x, k, params, &got);
    if (CHECK_OK (s_client, rc)) {
        if (fpx_knn_equal (&ref, &got, why, sizeof why))
            fpx_test_pass_ ();
        else
            FAIL ("%s: k-NN results differ from local FAISS: %s", what, why);
    }
    fpx_knn_free (&ref);
    fpx_knn_free (&got);
}

static void
s_check_info (const fpx_index_info_t *info, const char *name, int d, int64_t ntotal,
              int is_trained, int metric, const char *factory, int anonymous)
{
    if (name)
        CHECK_STR (info->name, name);
    CHECK_EQ (info->d, d);
    CHECK_EQ (info->ntotal, ntotal);
    CHECK_EQ (!!info->is_trained, !!is_trained);
    CHECK_EQ (info->metric, metric);
    if (factory)
        CHECK_STR (info->factory, factory);
    CHECK_EQ (!!info->anonymous, !!anonymous);
}

static int64_t
s_remote_ntotal (const char *name)
{
    fpx_index_info_t info;
    int rc = fpx_index_describe (s_client, name, 0, &info);
    return rc < 0 ? rc : info.ntotal;
}

//  Adds vectors [from, to) of s_xb to both sides the fixture's way.
static bool
s_add_range (fixture_t *fx, int64_t from, int64_t to)
{
    int batch = s_batch (fx);
    for (int64_t i = from; i < to; i += batch) {
        int64_t n = to - i < batch ? to - i : batch;
        const float *x = s_xb + i * DIM;
        bool with_ids = s_has (fx, T_IDMAP) || (s_has (fx, T_IVF) && i >= NB / 2);
        int64_t ntotal = -1;
        int rc, lrc;
        if (with_ids) {
            rc = fpx_add_with_ids (s_client, fx->name, n, DIM, x, fx->ids + i, &ntotal);
            lrc = faiss_Index_add_with_ids (fx->local, n, x, fx->ids + i);
        }
        else {
            rc = fpx_add (s_client, fx->name, n, DIM, x, &ntotal);
            lrc = faiss_Index_add (fx->local, n, x);
        }
        if (!CHECK (lrc == 0, "local add failed: %s", fpx_local_error ()))
            return false;
        if (!CHECK_OK (s_client, rc))
            return false;
        if (!CHECK (ntotal == faiss_Index_ntotal (fx->local),
                    "add returned ntotal %lld, local has %lld", (long long) ntotal,
                    (long long) faiss_Index_ntotal (fx->local)))
            return false;
    }
    return true;
}

/* ---- steps ------------------------------------------------------------------------ */

static void
step_create (void *arg)
{
    fixture_t *fx = arg;
    const index_type_t *t = fx->type;
    char why [512];
    fx->local = fpx_local_create (DIM, t->factory, t->metric, why, sizeof why);
    REQUIRE (fx->local, "%s", why);
    fx->kextra = (t->flags & T_HNSW) ? 0 : KEXTRA;

    fpx_index_info_t info;
    memset (&info, 0xab, sizeof info);
    REQUIRE_OK (s_client, fpx_index_create (s_client, fx->name, DIM, t->factory, t->metric, &info));
    fx->created = true;
    s_check_info (&info, fx->name, DIM, 0, faiss_Index_is_trained (fx->local), t->metric, t->factory, 0);

    //  The name is taken now.
    CHECK_RC (s_client, fpx_index_create (s_client, fx->name, DIM, t->factory, t->metric, NULL), FPX_EEXIST);
    CHECK (*fpx_client_errmsg (s_client), "FPX_EEXIST without a message");

    //  open and describe say the same.
    memset (&info, 0, sizeof info);
    CHECK_OK (s_client, fpx_index_open (s_client, fx->name, &info));
    s_check_info (&info, fx->name, DIM, 0, faiss_Index_is_trained (fx->local), t->metric, t->factory, 0);
    memset (&info, 0, sizeof info);
    CHECK_OK (s_client, fpx_index_describe (s_client, fx->name, 0, &info));
    s_check_info (&info, fx->name, DIM, 0, faiss_Index_is_trained (fx->local), t->metric, t->factory, 0);
    CHECK_EQ (info.memory_bytes, -1);

    //  Anonymous: a server-chosen "@" name, usable, droppable.
    fpx_index_info_t anon;
    memset (&anon, 0, sizeof anon);
    if (CHECK_OK (s_client, fpx_index_create (s_client, NULL, DIM, t->factory, t->metric, &anon))) {
        CHECK (anon.name [0] == '@', "anonymous name \"%s\" does not start with '@'", anon.name);
        s_check_info (&anon, NULL, DIM, 0, faiss_Index_is_trained (fx->local), t->metric, t->factory, 1);
        fpx_index_info_t again;
        memset (&again, 0, sizeof again);
        CHECK_OK (s_client, fpx_index_describe (s_client, anon.name, 0, &again));
        s_check_info (&again, anon.name, DIM, 0, faiss_Index_is_trained (fx->local), t->metric, t->factory, 1);
        //  A second anonymous index gets another name.
        fpx_index_info_t anon2;
        if (CHECK_OK (s_client, fpx_index_create (s_client, NULL, DIM, t->factory, t->metric, &anon2))) {
            CHECK (strcmp (anon.name, anon2.name) != 0, "two anonymous indexes share \"%s\"", anon.name);
            CHECK_OK (s_client, fpx_index_drop (s_client, anon2.name));
        }
        CHECK_OK (s_client, fpx_index_drop (s_client, anon.name));
        CHECK_RC (s_client, fpx_index_describe (s_client, anon.name, 0, &again), FPX_ENOTFOUND);
    }
}

static void
step_train (void *arg)
{
    fixture_t *fx = arg;
    REQUIRE (fx->created, "index not created");
    fpx_index_info_t info;
    REQUIRE_OK (s_client, fpx_index_describe (s_client, fx->name, 0, &info));
    CHECK_EQ (!!info.is_trained, !!faiss_Index_is_trained (fx->local));
    if (!faiss_Index_is_trained (fx->local)) {
        //  Adding before training is refused by FAISS.
        int lrc = faiss_Index_add (fx->local, 10, s_xb);
        char local_message [1024];
        snprintf (local_message, sizeof local_message, "%s", fpx_local_error ());
        int rc = fpx_add (s_client, fx->name, 10, DIM, s_xb, NULL);
        if (CHECK (lrc != 0, "local add on an untrained index succeeded"))
            CHECK_FAISS_REFUSAL (s_client, rc, local_message, "add before train");
    }
    int lrc = faiss_Index_train (fx->local, NT, s_xt);
    REQUIRE (lrc == 0, "local train: %s", fpx_local_error ());
    fpx_client_set_timeout (s_client, 120000);
    int rc = fpx_train (s_client, fx->name, NT, DIM, s_xt);
    fpx_client_set_timeout (s_client, s_call_timeout_ms ());
    REQUIRE_OK (s_client, rc);
    CHECK_OK (s_client, fpx_index_describe (s_client, fx->name, 0, &info));
    CHECK_EQ (!!info.is_trained, 1);
    CHECK_EQ (!!faiss_Index_is_trained (fx->local), 1);
    CHECK_EQ (info.ntotal, 0);
}

static void
step_add (void *arg)
{
    fixture_t *fx = arg;
    REQUIRE (fx->created, "index not created");
    REQUIRE (faiss_Index_is_trained (fx->local), "index not trained");
    char local_message [1024];

    //  The other way of adding, where FAISS refuses it.
    if (s_has (fx, T_IDMAP)) {
        int lrc = faiss_Index_add (fx->local, 5, s_xb);
        snprintf (local_message, sizeof local_message, "%s", fpx_local_error ());
        int rc = fpx_add (s_client, fx->name, 5, DIM, s_xb, NULL);
        if (CHECK (lrc != 0, "local add without ids on an IDMap succeeded"))
            CHECK_FAISS_REFUSAL (s_client, rc, local_message, "add without ids on an IDMap");
    }
    else
    if (!s_has (fx, T_IVF)) {
        int64_t ids [5] = { 50, 51, 52, 53, 54 };
        int lrc = faiss_Index_add_with_ids (fx->local, 5, s_xb, ids);
        snprintf (local_message, sizeof local_message, "%s", fpx_local_error ());
        int rc = fpx_add_with_ids (s_client, fx->name, 5, DIM, s_xb, ids, NULL);
        if (CHECK (lrc != 0, "local add_with_ids on %s succeeded", fx->type->factory))
            CHECK_FAISS_REFUSAL (s_client, rc, local_message, "add_with_ids");
    }
    CHECK_EQ (s_remote_ntotal (fx->name), 0);

    REQUIRE_TRUE (s_add_range (fx, 0, NB));
    CHECK_EQ (faiss_Index_ntotal (fx->local), NB);
    CHECK_EQ (s_remote_ntotal (fx->name), NB);
    fx->filled = true;
}

static void
step_search (void *arg)
{
    fixture_t *fx = arg;
    REQUIRE (fx->filled, "index not filled");
    s_compare_search (fx, fx->name, NULL, NQ, s_xq, K, "search k=10");
    s_compare_search (fx, fx->name, NULL, 1, s_xq + 7 * DIM, K, "search nq=1");
    s_compare_search (fx, fx->name, NULL, NQ, s_xq, 1, "search k=1");
    //  Database vectors as queries: for exact indexes, themselves first.
    s_compare_search (fx, fx->name, NULL, 20, s_xb + 100 * DIM, 5, "search with database vectors");
    //  Explicit zero parameters mean "the index's own settings".
    fpx_search_params_t zero = { 0, 0 };
    s_compare_search (fx, fx->name, &zero, NQ, s_xq, K, "search with zero params");
}

static void
step_search_params (void *arg)
{
    fixture_t *fx = arg;
    REQUIRE (fx->filled, "index not filled");
    fpx_knn_t got;
    if (s_has (fx, T_IVF)) {
        fpx_search_params_t p4 = { 4, 0 };
        s_compare_search (fx, fx->name, &p4, NQ, s_xq, K, "search nprobe=4");
        //  The index's default is unchanged: as local, whose nprobe is 1.
        s_compare_search (fx, fx->name, NULL, NQ, s_xq, K, "search after nprobe=4");
        fpx_search_params_t p16 = { 16, 0 };
        s_compare_search (fx, fx->name, &p16, NQ, s_xq, K, "search nprobe=16");
        //  nprobe above nlist: FAISS clamps it.
        fpx_search_params_t p99 = { 99, 0 };
        s_compare_search (fx, fx->name, &p99, NQ, s_xq, K, "search nprobe=99");
    }
    else {
        fpx_search_params_t p4 = { 4, 0 };
        CHECK_RC (s_client, fpx_remote_knn (s_client, fx->name, NQ, DIM, s_xq, K, &p4, &got), FPX_EINVAL);
        fpx_knn_free (&got);
    }
    if (s_has (fx, T_HNSW) || s_has (fx, T_HNSWQ)) {
        fpx_search_params_t e = { 0, s_has (fx, T_HNSW) ? 64 : 4 };
        s_compare_search (fx, fx->name, &e, NQ, s_xq, K, "search efSearch");
        s_compare_search (fx, fx->name, NULL, NQ, s_xq, K, "search after efSearch");
        if (s_has (fx, T_HNSW)) {
            fpx_search_params_t small = { 0, 5 };
            s_compare_search (fx, fx->name, &small, NQ, s_xq, K, "search efSearch=5");
        }
    }
    else {
        fpx_search_params_t e = { 0, 64 };
        CHECK_RC (s_client, fpx_remote_knn (s_client, fx->name, NQ, DIM, s_xq, K, &e, &got), FPX_EINVAL);
        fpx_knn_free (&got);
    }
    if (s_has (fx, T_IVF) && s_has (fx, T_HNSWQ)) {
        fpx_search_params_t both = { 4, 8 };
        s_compare_search (fx, fx->name, &both, NQ, s_xq, K, "search nprobe=4 efSearch=8");
    }
    //  And once more the defaults.
    s_compare_search (fx, fx->name, NULL, NQ, s_xq, K, "search with defaults at the end");
}

static float
s_pick_radius (const fixture_t *fx, int64_t nq, const float *x)
{
    fpx_knn_t ref;
    if (fpx_local_knn (fx->local, nq, x, K, 0, &ref))
        return 1.0f;
    float *col = malloc ((size_t) nq * sizeof *col);
    for (int64_t q = 0; q < nq; q++)
        col [q] = ref.D [q * ref.kcols + 4];
    //  Median of the 5th-neighbour distances (insertion sort, small n).
    for (int64_t i = 1; i < nq; i++)
        for (int64_t j = i; j > 0 && col [j - 1] > col [j]; j--) {
            float tmp = col [j];
            col [j] = col [j - 1];
            col [j - 1] = tmp;
        }
    float radius = col [nq / 2];
    free (col);
    fpx_knn_free (&ref);
    if (!isfinite (radius) || fabsf (radius) >= FLT_MAX / 2)
        radius = 1.0f;
    return radius;
}

static void
s_compare_range (fixture_t *fx, const fpx_search_params_t *params, int64_t nq, const float *x,
                 float radius, const char *what)
{
    const FaissIndex *index = fx->local;
    FaissIndex *copy = NULL;
    if (params) {
        copy = fpx_local_copy (fx->local);
        if (!CHECK (copy, "%s: local copy failed", what))
            return;
        if (params->nprobe > 0)
            fpx_local_set_param (copy, "nprobe", params->nprobe);
        if (params->efSearch > 0)
            fpx_local_set_param (copy, "efSearch", params->efSearch);
        index = copy;
    }
    fpx_range_t ref;
    int lrc = fpx_local_range (index, nq, x, radius, &ref);
    char local_message [1024];
    snprintf (local_message, sizeof local_message, "%s", fpx_local_error ());
    fpx_range_result_t *got = NULL;
    int rc = fpx_range_search (s_client, fx->name, nq, DIM, x, radius, params, &got);
    if (lrc != 0)
        CHECK_FAISS_REFUSAL (s_client, rc, local_message, what);
    else
    if (CHECK_OK (s_client, rc)) {
        char why [512];
        bool same = fpx_range_equal (&ref, got, radius, why, sizeof why);
        CHECK (same, "%s (radius %g): range results differ from local FAISS: %s", what, radius, why);
        //  The radius was picked so that there is something to compare.
        CHECK (ref.lims [nq] > 0, "%s: the local result is empty", what);
    }
    if (lrc == 0)
        fpx_range_free (&ref);
    fpx_range_result_destroy (&got);
    CHECK (got == NULL, "fpx_range_result_destroy did not clear the pointer");
    faiss_Index_free (copy);
}

static void
step_range_search (void *arg)
{
    fixture_t *fx = arg;
    REQUIRE (fx->filled, "index not filled");
    const int64_t nq = 20;
    float radius = s_pick_radius (fx, nq, s_xq);
    s_compare_range (fx, NULL, nq, s_xq, radius, "range_search");
    if (s_has (fx, T_IVF)) {
        fpx_search_params_t p4 = { 4, 0 };
        s_compare_range (fx, &p4, nq, s_xq, radius, "range_search nprobe=4");
        s_compare_range (fx, NULL, nq, s_xq, radius, "range_search after nprobe=4");
    }
    if (s_has (fx, T_HNSWQ)) {
        fpx_search_params_t e = { 2, 4 };
        s_compare_range (fx, &e, nq, s_xq, radius, "range_search nprobe=2 efSearch=4");
    }
    //  A radius that finds nothing: empty lists, not an error.
    if (!s_has (fx, T_HNSW) && faiss_Index_metric_type (fx->local) == METRIC_L2) {
        fpx_range_t ref;
        if (fpx_local_range (fx->local, nq, s_xq, 0.0f, &ref) == 0) {
            fpx_range_result_t *got = NULL;
            if (CHECK_OK (s_client, fpx_range_search (s_client, fx->name, nq, DIM, s_xq, 0.0f, NULL, &got))) {
                CHECK_EQ (got->nq, nq);
                CHECK_EQ (got->lims [nq], ref.lims [nq]);
            }
            fpx_range_result_destroy (&got);
            fpx_range_free (&ref);
        }
    }
}

static void
step_reconstruct (void *arg)
{
    fixture_t *fx = arg;
    REQUIRE (fx->filled, "index not filled");
    float local [DIM], remote [DIM];
    int64_t keys [4];
    int nkeys = 0;
    if (s_has (fx, T_IDMAP) || s_has (fx, T_IVF)) {
        //  Keys are ids.
        keys [nkeys++] = fx->ids [0];
        keys [nkeys++] = fx->ids [NB / 2 - 1];
        keys [nkeys++] = fx->ids [NB - 1];
        keys [nkeys++] = 987654321;          //  no such id
    }
    else {
        keys [nkeys++] = 0;
        keys [nkeys++] = 7;
        keys [nkeys++] = NB - 1;
    }
    bool first_ok = false;
    for (int i = 0; i < nkeys; i++) {
        memset (local, 0, sizeof local);
        memset (remote, 0xff, sizeof remote);
        int lrc = faiss_Index_reconstruct (fx->local, keys [i], local);
        char local_message [1024];
        snprintf (local_message, sizeof local_message, "%s", fpx_local_error ());
        int rc = fpx_reconstruct (s_client, fx->name, keys [i], DIM, remote);
        char what [64];
        snprintf (what, sizeof what, "reconstruct %lld", (long long) keys [i]);
        if (i == 0)
            first_ok = lrc == 0;
        if (lrc != 0)
            CHECK_FAISS_REFUSAL (s_client, rc, local_message, what);
        else
        if (CHECK_OK (s_client, rc))
            CHECK (memcmp (local, remote, sizeof local) == 0, "%s: vector differs from local FAISS", what);
    }
    //  Out of range positions of indexes without ids are refused before
    //  FAISS sees them (FAISS would read out of bounds).
    if (!s_has (fx, T_IDMAP) && !s_has (fx, T_IVF)) {
        CHECK_RC (s_client, fpx_reconstruct (s_client, fx->name, NB, DIM, remote), FPX_EINVAL);
        CHECK_RC (s_client, fpx_reconstruct (s_client, fx->name, -1, DIM, remote), FPX_EINVAL);
        CHECK_RC (s_client, fpx_reconstruct (s_client, fx->name, INT64_MAX, DIM, remote), FPX_EINVAL);
    }
    else {
        int rc = fpx_reconstruct (s_client, fx->name, -1, DIM, remote);
        CHECK (rc == FPX_EINVAL || rc == FPX_EFAISS, "reconstruct -1: %s", fpx_error_name (rc));
    }
    //  A buffer of another dimension (where the key itself is fine).
    if (first_ok)
        CHECK_RC (s_client, fpx_reconstruct (s_client, fx->name, keys [0], DIM - 1, remote), FPX_EINVAL);
    CHECK_OK (s_client, fpx_ping (s_client, NULL));
}

//  Returns true when the server answered successfully.
static bool
s_compare_reconstruct_n (fixture_t *fx, int64_t i0, int64_t n)
{
    float *local = calloc ((size_t) (n * DIM), sizeof *local);
    float *remote = malloc ((size_t) (n * DIM) * sizeof *remote);
    memset (remote, 0xff, (size_t) (n * DIM) * sizeof *remote);
    int lrc = faiss_Index_reconstruct_n (fx->local, i0, n, local);
    char local_message [1024];
    snprintf (local_message, sizeof local_message, "%s", fpx_local_error ());
    int rc = fpx_reconstruct_n (s_client, fx->name, i0, n, DIM, remote);
    char what [64];
    snprintf (what, sizeof what, "reconstruct_n (%lld, %lld)", (long long) i0, (long long) n);
    if (lrc != 0)
        CHECK_FAISS_REFUSAL (s_client, rc, local_message, what);
    else
    if (CHECK_OK (s_client, rc)) {
        int64_t bad = -1;
        for (int64_t i = 0; i < n && bad < 0; i++)
            if (memcmp (local + i * DIM, remote + i * DIM, DIM * sizeof (float)))
                bad = i;
        CHECK (bad < 0, "%s: row %lld differs from local FAISS", what, (long long) bad);
    }
    free (local);
    free (remote);
    return rc >= 0;
}

static void
step_reconstruct_n (void *arg)
{
    fixture_t *fx = arg;
    REQUIRE (fx->filled, "index not filled");
    bool served = false;
    if (s_has (fx, T_IDMAP) && !s_has (fx, T_IDMAP2)) {
        //  FAISS's IndexIDMap::reconstruct throws inside an OpenMP region
        //  in reconstruct_n, which aborts the process in-process; the server
        //  must refuse it and stay up.
        float out [20 * DIM];
        int rc = fpx_reconstruct_n (s_client, fx->name, 5, 20, DIM, out);
        CHECK (rc == FPX_EFAISS || rc == FPX_EINVAL,
               "reconstruct_n on IDMap: %d %s (\"%s\"), expected FPX_EFAISS", rc,
               fpx_error_name (rc), fpx_client_errmsg (s_client));
        CHECK (rc >= 0 || *fpx_client_errmsg (s_client), "no error message");
    }
    else
    if (s_has (fx, T_IDMAP2)) {
        served = s_compare_reconstruct_n (fx, 5, 20);
        s_compare_reconstruct_n (fx, 0, NB / 2);
        //  Keys NB/2 … NB/2+9 are not ids of this index: FAISS throws in an
        //  OpenMP region (an abort in-process); the server must answer an
        //  error and stay up.
        float out [10 * DIM];
        int rc = fpx_reconstruct_n (s_client, fx->name, NB / 2 - 5, 10, DIM, out);
        CHECK (rc == FPX_EFAISS || rc == FPX_EINVAL,
               "reconstruct_n over missing ids: %d %s (\"%s\"), expected FPX_EFAISS", rc,
               fpx_error_name (rc), fpx_client_errmsg (s_client));
    }
    else
    if (s_has (fx, T_IVF)) {
        //  Only ids 0 … NB/2-1 are sequential.
        served = s_compare_reconstruct_n (fx, 5, 20);
        s_compare_reconstruct_n (fx, 0, NB / 2);
    }
    else {
        served = s_compare_reconstruct_n (fx, 5, 20);
        s_compare_reconstruct_n (fx, 0, NB);
        s_compare_reconstruct_n (fx, NB - 1, 1);
    }
    CHECK_OK (s_client, fpx_ping (s_client, NULL));
    //  Bounds, for every type: i0 < 0, n < 1 and an overflowing range are
    //  the server's to refuse; a range past ntotal the server's (positions)
    //  or FAISS's (ids).
    float out [4 * DIM];
    CHECK_RC (s_client, fpx_reconstruct_n (s_client, fx->name, -1, 2, DIM, out), FPX_EINVAL);
    CHECK_RC (s_client, fpx_reconstruct_n (s_client, fx->name, 0, 0, DIM, out), FPX_EINVAL);
    int past = fpx_reconstruct_n (s_client, fx->name, NB - 1, 2, DIM, out);
    CHECK (past == FPX_EINVAL || past == FPX_EFAISS, "reconstruct_n past ntotal: %s",
           fpx_error_name (past));
    CHECK_RC (s_client, fpx_reconstruct_n (s_client, fx->name, INT64_MAX - 1, 2, DIM, out), FPX_EINVAL);
    if (served)         //  a buffer of another dimension, where the range itself is fine
        CHECK_RC (s_client, fpx_reconstruct_n (s_client, fx->name, 5, 2, DIM + 1, out), FPX_EINVAL);
}

//  FAISS 1.7.3 refuses remove_ids on an HNSW index in-process; the server
//  rebuilds the graph from the vectors kept (docs/PROTOCOL.md). The local
//  equivalent: a new index of the same factory, trained alike, given the
//  decodings of the vectors kept (positions not in sel, in order) in one
//  add, on this process's one OpenMP thread. Replaces fx->local; returns
//  how many vectors went, or -1.
static int64_t
s_local_hnsw_remove (fixture_t *fx, const FaissIDSelector *sel)
{
    int64_t ntotal = faiss_Index_ntotal (fx->local), kept = 0;
    float *x = malloc ((size_t) (ntotal ? ntotal : 1) * DIM * sizeof *x);
    char why [512];
    FaissIndex *fresh = NULL;
    if (!CHECK (x && faiss_Index_reconstruct_n (fx->local, 0, ntotal, x) == 0,
                "local reconstruct_n: %s", fpx_local_error ()))
        goto done;
    for (int64_t i = 0; i < ntotal; i++)
        if (!faiss_IDSelector_is_member (sel, i))
            memmove (x + kept++ * DIM, x + i * DIM, DIM * sizeof *x);
    fresh = fpx_local_create (DIM, fx->type->factory, fx->type->metric, why, sizeof why);
    if (!CHECK (fresh, "%s", why))
        goto done;
    if (!faiss_Index_is_trained (fresh)
    &&  !CHECK (faiss_Index_train (fresh, NT, s_xt) == 0, "local train: %s", fpx_local_error ()))
        goto done;
    if (!CHECK (faiss_Index_add (fresh, kept, x) == 0, "local add: %s", fpx_local_error ()))
        goto done;
    faiss_Index_free (fx->local);
    fx->local = fresh;
    fresh = NULL;
    free (x);
    return ntotal - kept;
done:
    faiss_Index_free (fresh);
    free (x);
    return -1;
}

//  remove_ids by sel on the local index; for HNSW, the rebuild above.
static int
s_local_remove (fixture_t *fx, const FaissIDSelector *sel, size_t *removed)
{
    if (s_has (fx, T_HNSW)) {
        int64_t n = s_local_hnsw_remove (fx, sel);
        *removed = n < 0 ? 0 : (size_t) n;
        return n < 0;
    }
    return faiss_Index_remove_ids (fx->local, sel, removed);
}

static void
step_remove (void *arg)
{
    fixture_t *fx = arg;
    REQUIRE (fx->filled, "index not filled");
    bool ids = s_has (fx, T_IDMAP) || s_has (fx, T_IVF);
    //  By list: three stored ids (or positions) and one absent.
    int64_t list [4];
    list [0] = ids ? fx->ids [3] : 3;
    list [1] = ids ? fx->ids [NB - 2] : NB - 2;
    list [2] = ids ? fx->ids [1000] : 1000;
    list [3] = 987654321;
    FaissIDSelectorBatch *batch = NULL;
    REQUIRE (faiss_IDSelectorBatch_new (&batch, 4, list) == 0, "IDSelectorBatch");
    size_t lremoved = 0;
    int lrc = s_local_remove (fx, (FaissIDSelector *) batch, &lremoved);
    char local_message [1024];
    snprintf (local_message, sizeof local_message, "%s", fpx_local_error ());
    faiss_IDSelector_free ((FaissIDSelector *) batch);
    int64_t removed = -1;
    int rc = fpx_remove_ids (s_client, fx->name, 4, list, &removed);
    if (lrc != 0)
        CHECK_FAISS_REFUSAL (s_client, rc, local_message, "remove_ids");
    else
    if (CHECK_OK (s_client, rc)) {
        CHECK_EQ (removed, (int64_t) lremoved);
        CHECK_EQ (lremoved, 3);
    }
    CHECK_EQ (s_remote_ntotal (fx->name), faiss_Index_ntotal (fx->local));
    s_compare_search (fx, fx->name, NULL, NQ, s_xq, K, "search after remove_ids");
    if (s_has (fx, T_HNSW))     //  the codes kept, moved down, bit for bit
        s_compare_reconstruct_n (fx, 0, faiss_Index_ntotal (fx->local));

    //  By range [lo, hi).
    int64_t lo = 10, hi = 30;
    FaissIDSelectorRange *range = NULL;
    REQUIRE (faiss_IDSelectorRange_new (&range, lo, hi) == 0, "IDSelectorRange");
    lremoved = 0;
    lrc = s_local_remove (fx, (FaissIDSelector *) range, &lremoved);
    snprintf (local_message, sizeof local_message, "%s", fpx_local_error ());
    faiss_IDSelector_free ((FaissIDSelector *) range);
    removed = -1;
    rc = fpx_remove_range (s_client, fx->name, lo, hi, &removed);
    if (lrc != 0)
        CHECK_FAISS_REFUSAL (s_client, rc, local_message, "remove_range");
    else
    if (CHECK_OK (s_client, rc)) {
        CHECK_EQ (removed, (int64_t) lremoved);
        CHECK (lremoved > 0, "range [%lld, %lld) removed nothing locally", (long long) lo, (long long) hi);
    }
    CHECK_EQ (s_remote_ntotal (fx->name), faiss_Index_ntotal (fx->local));
    s_compare_search (fx, fx->name, NULL, NQ, s_xq, K, "search after remove_range");

    //  The same range again: nothing left to remove where ids are kept;
    //  for indexes that renumber, the next ones. Either way, as FAISS.
    if (lrc == 0) {
        FaissIDSelectorRange *again = NULL;
        REQUIRE (faiss_IDSelectorRange_new (&again, lo, hi) == 0, "IDSelectorRange");
        lremoved = 0;
        lrc = s_local_remove (fx, (FaissIDSelector *) again, &lremoved);
        faiss_IDSelector_free ((FaissIDSelector *) again);
        REQUIRE (lrc == 0, "local remove: %s", fpx_local_error ());
        removed = -1;
        CHECK_OK (s_client, fpx_remove_range (s_client, fx->name, lo, hi, &removed));
        CHECK_EQ (removed, (int64_t) lremoved);
        if (ids)
            CHECK_EQ (removed, 0);
        s_compare_search (fx, fx->name, NULL, NQ, s_xq, K, "search after the second remove_range");
    }
    //  IDMap2 no longer reconstructs a removed id.
    if (s_has (fx, T_IDMAP2)) {
        float v [DIM];
        int l = faiss_Index_reconstruct (fx->local, list [0], v);
        snprintf (local_message, sizeof local_message, "%s", fpx_local_error ());
        rc = fpx_reconstruct (s_client, fx->name, list [0], DIM, v);
        if (CHECK (l != 0, "local reconstruct of a removed id succeeded"))
            CHECK_FAISS_REFUSAL (s_client, rc, local_message, "reconstruct of a removed id");
    }
}

static void
step_set_parameters (void *arg)
{
    fixture_t *fx = arg;
    REQUIRE (fx->filled, "index not filled");
    const char *params = NULL;
    fpx_search_params_t per_request = { 0, 0 };
    if (s_has (fx, T_IVF) && s_has (fx, T_HNSWQ)) {
        params = "nprobe=8,efSearch=32";
        per_request.nprobe = 2;
    }
    else
    if (s_has (fx, T_IVF)) {
        params = "nprobe=8";
        per_request.nprobe = 2;
    }
    else
    if (s_has (fx, T_HNSW)) {
        params = "efSearch=40";
        per_request.efSearch = 24;
    }
    if (params) {
        REQUIRE (fpx_local_set_params (fx->local, params) == 0, "local %s: %s", params, fpx_local_error ());
        REQUIRE_OK (s_client, fpx_set_parameters (s_client, fx->name, params));
        s_compare_search (fx, fx->name, NULL, NQ, s_xq, K, "search after set_parameters");
        //  A per-request value wins for that request only.
        s_compare_search (fx, fx->name, &per_request, NQ, s_xq, K, "per-request over set_parameters");
        s_compare_search (fx, fx->name, NULL, NQ, s_xq, K, "set_parameters default kept");
        //  An unknown parameter: FAISS's refusal.
        int lrc = fpx_local_set_params (fx->local, "bogus_parameter=3");
        char local_message [1024];
        snprintf (local_message, sizeof local_message, "%s", fpx_local_error ());
        int rc = fpx_set_parameters (s_client, fx->name, "bogus_parameter=3");
        if (CHECK (lrc != 0, "local bogus parameter accepted"))
            CHECK_FAISS_REFUSAL (s_client, rc, local_message, "set_parameters bogus_parameter=3");
        s_compare_search (fx, fx->name, NULL, NQ, s_xq, K, "search after a refused set_parameters");
    }
    else {
        //  No such parameter on this index type: FAISS refuses.
        int lrc = fpx_local_set_params (fx->local, "nprobe=8");
        char local_message [1024];
        snprintf (local_message, sizeof local_message, "%s", fpx_local_error ());
        int rc = fpx_set_parameters (s_client, fx->name, "nprobe=8");
        if (CHECK (lrc != 0, "local nprobe=8 accepted on %s", fx->type->factory))
            CHECK_FAISS_REFUSAL (s_client, rc, local_message, "set_parameters nprobe=8");
        s_compare_search (fx, fx->name, NULL, NQ, s_xq, K, "search after a refused set_parameters");
    }
}

static void
step_serialize (void *arg)
{
    fixture_t *fx = arg;
    REQUIRE (fx->filled, "index not filled");
    uint8_t *bytes = NULL;
    size_t size = 0;
    REQUIRE_OK (s_client, fpx_serialize (s_client, fx->name, &bytes, &size));
    CHECK (bytes && size > 0, "serialize returned %zu bytes", size);
    FaissIndex *copy = fpx_local_deserialize (bytes, size);
    if (CHECK (copy, "faiss_read_index of the served bytes failed: %s", fpx_local_error ())) {
        CHECK_EQ (faiss_Index_ntotal (copy), faiss_Index_ntotal (fx->local));
        CHECK_EQ (faiss_Index_d (copy), DIM);
        CHECK_EQ (faiss_Index_metric_type (copy), faiss_Index_metric_type (fx->local));
        CHECK_EQ (!!faiss_Index_is_trained (copy), 1);
        fpx_knn_t ref, got;
        int a = fpx_local_knn (fx->local, NQ, s_xq, K, fx->kextra, &ref);
        int b = fpx_local_knn (copy, NQ, s_xq, K, 0, &got);
        if (CHECK (a == 0 && b == 0, "local searches failed: %s", fpx_local_error ()))
            CHECK_KNN (&ref, &got);
        fpx_knn_free (&ref);
        fpx_knn_free (&got);
        faiss_Index_free (copy);
    }
    //  memory_bytes is the serialized size.
    fpx_index_info_t info;
    if (CHECK_OK (s_client, fpx_index_describe (s_client, fx->name, 1, &info)))
        CHECK_EQ (info.memory_bytes, (int64_t) size);
    fpx_free (bytes);
}

//  The factory string the server recovers from an uploaded structure (the
//  client sent bytes, no string) builds, in FAISS in-process, an index of the
//  same structure as the fixture's own factory: both serialize, empty, to the
//  same bytes.
static void
s_check_recovered_factory (const fixture_t *fx, const char *recovered)
{
    CHECK (recovered [0], "%s: no factory recovered", fx->type->label);
    char why [256] = "";
    FaissIndex *mine = fpx_local_create (DIM, fx->type->factory, fx->type->metric, NULL, 0);
    FaissIndex *theirs = fpx_local_create (DIM, recovered, fx->type->metric, why, sizeof why);
    CHECK (theirs, "%s: recovered factory \"%s\" refused by FAISS: %s",
           fx->type->label, recovered, why);
    if (mine && theirs) {
        size_t mine_size = 0, theirs_size = 0;
        uint8_t *mine_bytes = fpx_local_serialize (mine, &mine_size);
        uint8_t *theirs_bytes = fpx_local_serialize (theirs, &theirs_size);
        CHECK (mine_bytes && theirs_bytes
               && mine_size == theirs_size
               && memcmp (mine_bytes, theirs_bytes, mine_size) == 0,
               "%s: \"%s\" and the recovered \"%s\" build different structures",
               fx->type->label, fx->type->factory, recovered);
        free (mine_bytes);
        free (theirs_bytes);
    }
    if (mine)
        faiss_Index_free (mine);
    if (theirs)
        faiss_Index_free (theirs);
}

static void
step_deserialize (void *arg)
{
    fixture_t *fx = arg;
    REQUIRE (fx->filled, "index not filled");
    size_t size = 0;
    uint8_t *bytes = fpx_local_serialize (fx->local, &size);
    REQUIRE (bytes, "local serialize failed: %s", fpx_local_error ());
    char name [80];
    snprintf (name, sizeof name, "%s_up", fx->name);
    fpx_index_info_t info;
    memset (&info, 0, sizeof info);
    if (CHECK_OK (s_client, fpx_deserialize (s_client, name, NULL, bytes, size, &info))) {
        s_check_info (&info, name, DIM, faiss_Index_ntotal (fx->local), 1,
                      faiss_Index_metric_type (fx->local), NULL, 0);
        s_check_recovered_factory (fx, info.factory);
        s_compare_search (fx, name, NULL, NQ, s_xq, K, "search of the uploaded index");
        CHECK_RC (s_client, fpx_deserialize (s_client, name, NULL, bytes, size, NULL), FPX_EEXIST);
        CHECK_OK (s_client, fpx_index_drop (s_client, name));
    }
    //  Anonymous upload.
    memset (&info, 0, sizeof info);
    if (CHECK_OK (s_client, fpx_deserialize (s_client, NULL, NULL, bytes, size, &info))) {
        CHECK (info.name [0] == '@', "anonymous upload named \"%s\"", info.name);
        CHECK_EQ (!!info.anonymous, 1);
        CHECK_EQ (info.ntotal, faiss_Index_ntotal (fx->local));
        s_check_recovered_factory (fx, info.factory);
        s_compare_search (fx, info.name, NULL, NQ, s_xq, K, "search of the anonymous upload");
        CHECK_OK (s_client, fpx_index_drop (s_client, info.name));
    }
    //  A factory given with the bytes is kept as the index's description
    //  (one the server would never recover, so that it must have travelled);
    //  one longer than the limit is refused before anything is sent.
    char given [FPX_FACTORY_MAX];
    snprintf (given, sizeof given, "%s (uploaded)", fx->type->factory);
    memset (&info, 0, sizeof info);
    if (CHECK_OK (s_client, fpx_deserialize (s_client, name, given, bytes, size, &info))) {
        CHECK_STR (info.factory, given);
        fpx_index_info_t described;
        if (CHECK_OK (s_client, fpx_index_describe (s_client, name, 0, &described)))
            CHECK_STR (described.factory, given);
        s_compare_search (fx, name, NULL, NQ, s_xq, K, "search of the upload with a factory");
        CHECK_OK (s_client, fpx_index_drop (s_client, name));
    }
    char long_factory [FPX_FACTORY_MAX + 1];
    memset (long_factory, 'F', FPX_FACTORY_MAX);
    long_factory [FPX_FACTORY_MAX] = 0;
    CHECK_RC (s_client, fpx_deserialize (s_client, name, long_factory, bytes, size, NULL), FPX_EINVAL);
    free (bytes);
}

static void
step_reset (void *arg)
{
    fixture_t *fx = arg;
    REQUIRE (fx->filled, "index not filled");
    REQUIRE (faiss_Index_reset (fx->local) == 0, "local reset: %s", fpx_local_error ());
    REQUIRE_OK (s_client, fpx_reset (s_client, fx->name));
    fpx_index_info_t info;
    if (CHECK_OK (s_client, fpx_index_describe (s_client, fx->name, 0, &info))) {
        CHECK_EQ (info.ntotal, 0);
        CHECK_EQ (!!info.is_trained, 1);          //  training is kept
    }
    //  An empty index answers -1 labels, as FAISS.
    s_compare_search (fx, fx->name, NULL, 5, s_xq, K, "search of the reset index");
    //  Filled again, it behaves as local.
    fx->filled = false;
    REQUIRE_TRUE (s_add_range (fx, 0, 300));
    s_compare_search (fx, fx->name, NULL, NQ, s_xq, K, "search after reset and add");
    CHECK_EQ (s_remote_ntotal (fx->name), 300);
}

static bool
s_listed (const char *name)
{
    char **names = NULL;
    size_t count = 0;
    bool found = false;
    if (fpx_index_list (s_client, &names, &count) >= 0) {
        for (size_t i = 0; i < count; i++)
            if (strcmp (names [i], name) == 0)
                found = true;
        fpx_strlist_free (&names, count);
    }
    return found;
}

static void
step_drop (void *arg)
{
    fixture_t *fx = arg;
    REQUIRE (fx->created, "index not created");
    CHECK (s_listed (fx->name), "\"%s\" not listed before drop", fx->name);
    REQUIRE_OK (s_client, fpx_index_drop (s_client, fx->name));
    fx->created = false;
    fpx_index_info_t info;
    float D_ [K];
    int64_t I_ [K];
    CHECK_RC (s_client, fpx_index_open (s_client, fx->name, &info), FPX_ENOTFOUND);
    CHECK_RC (s_client, fpx_index_describe (s_client, fx->name, 0, &info), FPX_ENOTFOUND);
    CHECK_RC (s_client, fpx_search (s_client, fx->name, 1, DIM, s_xq, K, NULL, D_, I_), FPX_ENOTFOUND);
    CHECK_RC (s_client, fpx_index_drop (s_client, fx->name), FPX_ENOTFOUND);
    CHECK (!s_listed (fx->name), "\"%s\" still listed after drop", fx->name);
    //  The name is free again.
    if (CHECK_OK (s_client, fpx_index_create (s_client, fx->name, DIM, fx->type->factory,
                                              fx->type->metric, &info))) {
        CHECK_EQ (info.ntotal, 0);
        CHECK_OK (s_client, fpx_index_drop (s_client, fx->name));
    }
}

/* ---- whole-server tests ------------------------------------------------------------- */

static void
test_ping (void *arg)
{
    (void) arg;
    fpx_server_info_t info;
    memset (&info, 0, sizeof info);
    REQUIRE_OK (s_client, fpx_ping (s_client, &info));
    CHECK_EQ (info.protocol_version, FPX_PROTOCOL_VERSION);
    CHECK (info.server_version [0], "empty server_version");
    CHECK (strncmp (info.faiss_version, "1.", 2) == 0, "faiss_version \"%s\"", info.faiss_version);
    CHECK_OK (s_client, fpx_ping (s_client, NULL));
}

static void
test_list (void *arg)
{
    (void) arg;
    const char *names [] = { "list_c", "list_a", "list_b.2", "LIST_0" };
    for (int i = 0; i < 4; i++)
        CHECK_OK (s_client, fpx_index_create (s_client, names [i], 8, "Flat", FPX_METRIC_L2, NULL));
    fpx_index_info_t anon;
    CHECK_OK (s_client, fpx_index_create (s_client, NULL, 8, "Flat", FPX_METRIC_L2, &anon));
    char **list = NULL;
    size_t count = 0;
    if (CHECK_OK (s_client, fpx_index_list (s_client, &list, &count))) {
        int found = 0;
        for (size_t i = 0; i < count; i++) {
            for (int j = 0; j < 4; j++)
                if (strcmp (list [i], names [j]) == 0)
                    found++;
            CHECK (list [i][0] != '@', "anonymous index \"%s\" listed", list [i]);
            if (i > 0)
                CHECK (strcmp (list [i - 1], list [i]) < 0, "list not sorted: \"%s\" before \"%s\"",
                       list [i - 1], list [i]);
        }
        CHECK_EQ (found, 4);
        fpx_strlist_free (&list, count);
        CHECK (list == NULL, "fpx_strlist_free did not clear the pointer");
    }
    for (int i = 0; i < 4; i++)
        CHECK_OK (s_client, fpx_index_drop (s_client, names [i]));
    CHECK_OK (s_client, fpx_index_drop (s_client, anon.name));
    count = 99;
    if (CHECK_OK (s_client, fpx_index_list (s_client, &list, &count))) {
        for (size_t i = 0; i < count; i++)
            for (int j = 0; j < 4; j++)
                CHECK (strcmp (list [i], names [j]) != 0, "\"%s\" listed after drop", names [j]);
        fpx_strlist_free (&list, count);
    }
}

//  The same index type on the IP metric with another dimension, built and
//  searched in one go (the sizes of the main fixtures are all d=32).
static void
test_other_dimension (void *arg)
{
    (void) arg;
    const int d = 64;
    char why [256];
    FaissIndex *local = fpx_local_create (d, "IVF16,Flat", FPX_METRIC_INNER_PRODUCT, why, sizeof why);
    REQUIRE (local, "%s", why);
    float *xt = fpx_data_clustered (41, 4000, d, 20, 0.1f);
    float *xq = fpx_data_clustered (43, 30, d, 20, 0.1f);
    fpx_index_info_t info;
    if (CHECK_OK (s_client, fpx_index_create (s_client, "ops_d64_ip", d, "IVF16,Flat",
                                              FPX_METRIC_INNER_PRODUCT, &info))) {
        CHECK_EQ (info.d, d);
        CHECK_EQ (info.metric, FPX_METRIC_INNER_PRODUCT);
        CHECK_OK (s_client, fpx_train (s_client, "ops_d64_ip", 4000, d, xt));
        CHECK_OK (s_client, fpx_add (s_client, "ops_d64_ip", 4000, d, xt, NULL));
        CHECK (faiss_Index_train (local, 4000, xt) == 0 && faiss_Index_add (local, 4000, xt) == 0,
               "local: %s", fpx_local_error ());
        fpx_knn_t ref, got;
        fpx_search_params_t p = { 3, 0 };
        FaissIndex *copy = fpx_local_copy (local);
        if (CHECK (copy, "local copy") && CHECK (fpx_local_set_param (copy, "nprobe", 3) == 0, "nprobe")
        &&  CHECK (fpx_local_knn (copy, 30, xq, 20, KEXTRA, &ref) == 0, "local search")) {
            if (CHECK_OK (s_client, fpx_remote_knn (s_client, "ops_d64_ip", 30, d, xq, 20, &p, &got)))
                CHECK_KNN (&ref, &got);
            fpx_knn_free (&ref);
            fpx_knn_free (&got);
        }
        faiss_Index_free (copy);
        //  A vector of the wrong dimension is refused.
        float out [20];
        int64_t labels [20];
        int rc = fpx_search (s_client, "ops_d64_ip", 1, 32, xq, 20, NULL, out, labels);
        CHECK (rc < 0, "search with d=32 on a d=64 index succeeded");
        CHECK_OK (s_client, fpx_index_drop (s_client, "ops_d64_ip"));
    }
    faiss_Index_free (local);
    free (xt);
    free (xq);
}

//  The factory strings with polysemous training: accepted, described, and
//  refused for adding before training, as FAISS does.
static void
test_plain_pq (void *arg)
{
    (void) arg;
    const char *factories [] = { "PQ8", "IVF16,PQ8" };
    for (int i = 0; i < 2; i++) {
        char why [256];
        FaissIndex *local = fpx_local_create (DIM, factories [i], FPX_METRIC_L2, why, sizeof why);
        if (!CHECK (local, "%s", why))
            continue;
        fpx_index_info_t info;
        if (CHECK_OK (s_client, fpx_index_create (s_client, "ops_plain_pq", DIM, factories [i],
                                                  FPX_METRIC_L2, &info))) {
            s_check_info (&info, "ops_plain_pq", DIM, 0, 0, FPX_METRIC_L2, factories [i], 0);
            int lrc = faiss_Index_add (local, 10, s_xb);
            char local_message [1024];
            snprintf (local_message, sizeof local_message, "%s", fpx_local_error ());
            int rc = fpx_add (s_client, "ops_plain_pq", 10, DIM, s_xb, NULL);
            if (CHECK (lrc != 0, "local add before train succeeded"))
                CHECK_FAISS_REFUSAL (s_client, rc, local_message, "add before train");
            CHECK_OK (s_client, fpx_index_drop (s_client, "ops_plain_pq"));
        }
        faiss_Index_free (local);
    }
}

//  IVF with a direct map (set_direct_map; FAISS's make_direct_map, which
//  wants sequential ids for the array type): reconstruct by id works as
//  in-process, the hashtable type gives the same vectors, and removal is
//  refused with an array map, as FAISS does.
static void
test_ivf_direct_map (void *arg)
{
    (void) arg;
    const char *name = "ops_direct_map";
    char why [256];
    FaissIndex *local = fpx_local_create (DIM, "IVF16,Flat", FPX_METRIC_L2, why, sizeof why);
    REQUIRE (local, "%s", why);
    FaissIndexIVF *ivf = faiss_IndexIVF_cast (local);
    bool ok = CHECK (ivf, "IVF16,Flat is no IndexIVF")
           && CHECK_OK (s_client, fpx_index_create (s_client, name, DIM, "IVF16,Flat", FPX_METRIC_L2, NULL))
           && CHECK (faiss_Index_train (local, NT, s_xt) == 0 && faiss_Index_add (local, 1000, s_xb) == 0,
                     "local: %s", fpx_local_error ())
           && CHECK_OK (s_client, fpx_train (s_client, name, NT, DIM, s_xt))
           && CHECK_OK (s_client, fpx_add (s_client, name, 1000, DIM, s_xb, NULL))
           && CHECK (faiss_IndexIVF_make_direct_map (ivf, 1) == 0, "local make_direct_map: %s", fpx_local_error ())
           && CHECK_OK (s_client, fpx_set_direct_map (s_client, name, 1));
    const int64_t keys [] = { 0, 1, 500, 999 };
    float expected [4][DIM], got [DIM];
    for (int i = 0; ok && i < 4; i++) {
        ok = CHECK (faiss_Index_reconstruct (local, keys [i], expected [i]) == 0, "local reconstruct");
        if (ok && CHECK_OK (s_client, fpx_reconstruct (s_client, name, keys [i], DIM, got)))
            CHECK (memcmp (got, expected [i], sizeof got) == 0, "reconstruct %lld differs", (long long) keys [i]);
    }
    if (ok) {
        //  Removal with an array direct map: FAISS refuses.
        int64_t ids [2] = { 3, 4 };
        FaissIDSelectorBatch *batch = NULL;
        faiss_IDSelectorBatch_new (&batch, 2, ids);
        size_t lremoved = 0;
        int lrc = faiss_Index_remove_ids (local, (FaissIDSelector *) batch, &lremoved);
        char local_message [1024];
        snprintf (local_message, sizeof local_message, "%s", fpx_local_error ());
        faiss_IDSelector_free ((FaissIDSelector *) batch);
        int64_t removed = -1;
        int rc = fpx_remove_ids (s_client, name, 2, ids, &removed);
        if (lrc != 0)
            CHECK_FAISS_REFUSAL (s_client, rc, local_message, "remove_ids with an array direct map");
        else
        if (CHECK_OK (s_client, rc))
            CHECK_EQ (removed, (int64_t) lremoved);
        //  Hashtable: the same vectors.
        if (CHECK_OK (s_client, fpx_set_direct_map (s_client, name, 2)))
            for (int i = 0; i < 4; i++)
                if (CHECK_OK (s_client, fpx_reconstruct (s_client, name, keys [i], DIM, got)))
                    CHECK (memcmp (got, expected [i], sizeof got) == 0, "hashtable reconstruct %lld differs",
                           (long long) keys [i]);
        CHECK_OK (s_client, fpx_set_direct_map (s_client, name, 0));
        CHECK_RC (s_client, fpx_set_direct_map (s_client, name, 3), FPX_EINVAL);
    }
    //  Not an IVF: refused.
    if (CHECK_OK (s_client, fpx_index_create (s_client, "ops_flat_dm", DIM, "Flat", FPX_METRIC_L2, NULL))) {
        int rc = fpx_set_direct_map (s_client, "ops_flat_dm", 1);
        CHECK (rc == FPX_EINVAL || rc == FPX_EFAISS, "set_direct_map on Flat: %d %s, expected an error",
               rc, fpx_error_name (rc));
        CHECK_OK (s_client, fpx_index_drop (s_client, "ops_flat_dm"));
    }
    fpx_index_drop (s_client, name);
    faiss_Index_free (local);
}

//  The per-call timeout of s_client: short, so that a server that died
//  under a test costs little; training gets longer.
static int
s_call_timeout_ms (void)
{
    return fpx_test_asan () ? 25000 : 15000;
}

//  A server that died under a previous test is reported there; a new one
//  is started so that the other tests still run. False if that fails.
static bool
s_ensure_server (void)
{
    if (fpx_test_server_alive (&s_server) && s_client)
        return true;
    fpx_client_destroy (&s_client);
    if (!fpx_test_server_alive (&s_server)
    &&  fpx_test_server_start (&s_server, NULL, NULL) != 0) {
        fpx_test_fail_whole ("ops.server_restart", "faissproxyd did not restart");
        return false;
    }
    s_client = fpx_test_client (&s_server, fpx_test_key_a);
    if (!s_client) {
        fpx_test_fail_whole ("ops.server_restart", "fpx_client_new returned NULL");
        return false;
    }
    fpx_client_set_timeout (s_client, s_call_timeout_ms ());
    return true;
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
    s_xt = fpx_data_clustered (1, NT, DIM, 40, 0.08f);
    s_xb = fpx_data_clustered (2, NB, DIM, 40, 0.08f);
    s_xq = fpx_data_clustered (3, NQ, DIM, 40, 0.08f);

    fpx_test_local_single_thread ();
    fpx_test_watch (&s_server);
    if (fpx_test_server_start (&s_server, NULL, NULL)) {
        fpx_test_fail_whole ("ops.server_start", "faissproxyd did not start");
        free (s_xt); free (s_xb); free (s_xq);
        return fpx_test_finish ();
    }
    if (!s_ensure_server ()) {
        fpx_test_server_stop (&s_server, 30);
        free (s_xt); free (s_xb); free (s_xq);
        return fpx_test_finish ();
    }

    fpx_test_run ("ops.ping", test_ping, NULL);
    fpx_test_run ("ops.list", test_list, NULL);
    fpx_test_run ("ops.plain_pq_factories", test_plain_pq, NULL);

    struct { const char *name; fpx_test_fn_t *fn; } steps [] = {
        { "create", step_create },
        { "train", step_train },
        { "add", step_add },
        { "search", step_search },
        { "search_params", step_search_params },
        { "range_search", step_range_search },
        { "reconstruct", step_reconstruct },
        { "reconstruct_n", step_reconstruct_n },
        { "serialize", step_serialize },
        { "deserialize", step_deserialize },
        { "remove_ids", step_remove },
        { "set_parameters", step_set_parameters },
        { "reset", step_reset },
        { "drop", step_drop },
    };
    //  FPX_OPS_ONLY=LABEL[,LABEL…] narrows the run to some index types
    //  (for debugging; the default is all of them).
    const char *only = getenv ("FPX_OPS_ONLY");
    for (int t = 0; t < NTYPES; t++) {
        fixture_t *fx = &s_fixtures [t];
        fx->type = &s_types [t];
        if (only && *only) {
            char pattern [80];
            snprintf (pattern, sizeof pattern, ",%s,", fx->type->label);
            char list [512];
            snprintf (list, sizeof list, ",%s,", only);
            if (!strstr (list, pattern))
                continue;
        }
        if (!s_ensure_server ())
            break;
        snprintf (fx->name, sizeof fx->name, "ops_%s", fx->type->label);
        fx->ids = malloc (NB * sizeof *fx->ids);
        for (int64_t i = 0; i < NB; i++)
            fx->ids [i] = s_id_of (fx, i);
        for (size_t s = 0; s < sizeof steps / sizeof steps [0]; s++) {
            char name [128];
            snprintf (name, sizeof name, "ops.%s.%s", fx->type->label, steps [s].name);
            if (fpx_test_server_alive (&s_server))
                fpx_test_run (name, steps [s].fn, fx);
            else
                fpx_test_fail_whole (name, "faissproxyd is dead (see the previous failure)");
        }
        faiss_Index_free (fx->local);
        fx->local = NULL;
        free (fx->ids);
        fx->ids = NULL;
    }
    if (s_ensure_server ())
        fpx_test_run ("ops.other_dimension", test_other_dimension, NULL);
    if (s_ensure_server ())
        fpx_test_run ("ops.ivf_direct_map", test_ivf_direct_map, NULL);

    fpx_client_destroy (&s_client);
    fpx_test_run ("ops.server_exit", test_server_exit, NULL);
    free (s_xt);
    free (s_xb);
    free (s_xq);
    return fpx_test_finish ();
}
