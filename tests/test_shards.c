/*  test_shards.c — fpx_shards_t (faissproxy.h, "shards and replicas"):
    FAISS's IndexShards and IndexReplicas with parts on three faissproxyd
    servers, compared with FAISS in process (its IndexShards /
    IndexReplicas of local parts through FAISS's C API, and one local index
    holding everything).

    - flat_successive: Flat L2 and inner product, successive ids: add
      (cut as FAISS cuts), ntotal, search equal to FAISS's IndexShards
      and to one index; range search equal to one index; a second add
      refused with FAISS's message; reset empties every part.
    - idmap_by_id: IDMap,Flat, ids of the caller and ntotal + i; search
      and range search equal to one index holding them.
    - ivf_trained: IVF16,Flat trained through the group, nprobe 4 per
      request: equal to one IVF index (the same k-means in every part).
    - ties: the same vectors in every part: FAISS's IndexShards and the
      group order tied results alike (L2: lower part first; inner
      product: higher part first), the filler of missing results too.
    - replicas: an add reaches every part; 40 queries are split 14, 14,
      12 (one search request per server); results equal FAISS's
      IndexReplicas and one index; range search too.
    - refusals: parts of different dimension, bad arguments.
    - server_down: the third server stopped: search fails with an error
      naming shard 2, within the handle's timeout; the group still works
      without it.
*/
#include <float.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <faiss/c_api/IndexReplicas_c.h>
#include <faiss/c_api/IndexShards_c.h>

#include "fpx_test.h"

#define NSERVERS 3
#define DIM 16
#define NB 1500
#define NQ 40

static fpx_test_server_t s_servers [NSERVERS];
static fpx_client_t *s_clients [NSERVERS];
static float *s_xb, *s_xq, *s_xt;

//  One anonymous index per server; names [i] receive their names.
static bool
s_make_parts (const char *factory, int metric, char names [NSERVERS][FPX_INDEX_NAME_MAX + 1])
{
    for (int i = 0; i < NSERVERS; i++) {
        fpx_index_info_t info;
        if (!CHECK_OK (s_clients [i], fpx_index_create (s_clients [i], NULL, DIM, factory, metric,
                                                        &info)))
            return false;
        strcpy (names [i], info.name);
    }
    return true;
}

static fpx_shards_t *
s_group (char names [NSERVERS][FPX_INDEX_NAME_MAX + 1], int mode)
{
    const char *list [NSERVERS];
    for (int i = 0; i < NSERVERS; i++)
        list [i] = names [i];
    return fpx_shards_new (s_clients, list, NSERVERS, mode);
}

static bool
s_same_knn (const fpx_knn_t *ref, fpx_shards_t *group, int64_t nq, const float *x, int k,
            const fpx_search_params_t *params)
{
    fpx_knn_t got = { nq, k, k, calloc ((size_t) (nq * k), sizeof (float)),
                      calloc ((size_t) (nq * k), sizeof (int64_t)) };
    bool ok = CHECK (fpx_shards_search (group, nq, DIM, x, k, params, got.D, got.I) == 0,
                     "search: %s", fpx_shards_errmsg (group))
           && CHECK_KNN (ref, &got);
    fpx_knn_free (&got);
    return ok;
}

//  Labels and distances exactly as FAISS's (ties and fillers included).
static bool
s_identical_knn (const fpx_knn_t *ref, fpx_shards_t *group, int64_t nq, const float *x, int k)
{
    float *Dg = calloc ((size_t) (nq * k), sizeof (float));
    int64_t *Ig = calloc ((size_t) (nq * k), sizeof (int64_t));
    bool ok = CHECK (fpx_shards_search (group, nq, DIM, x, k, NULL, Dg, Ig) == 0,
                     "search: %s", fpx_shards_errmsg (group));
    for (int64_t i = 0; ok && i < nq * k; i++)
        ok = CHECK (Ig [i] == ref->I [i] && Dg [i] == ref->D [i],
                    "cell %lld: got %lld (%g), FAISS %lld (%g)", (long long) i,
                    (long long) Ig [i], Dg [i], (long long) ref->I [i], ref->D [i]);
    free (Dg);
    free (Ig);
    return ok;
}

static bool
s_same_range (FaissIndex *whole, fpx_shards_t *group, int64_t nq, const float *x, float radius)
{
    fpx_range_t ref;
    fpx_range_result_t *got = NULL;
    bool ok = CHECK_EQ (fpx_local_range (whole, nq, x, radius, &ref), 0)
           && CHECK (fpx_shards_range_search (group, nq, DIM, x, radius, NULL, &got) == 0,
                     "range search: %s", fpx_shards_errmsg (group))
           && CHECK (got->lims [nq] > 0, "radius %g finds nothing", radius);
    if (ok) {
        char why [256];
        ok = CHECK (fpx_range_equal (&ref, got, radius, why, sizeof why), "range: %s", why);
    }
    fpx_range_free (&ref);
    fpx_range_result_destroy (&got);
    return ok;
}

static void
s_flat_successive (int metric)
{
    char names [NSERVERS][FPX_INDEX_NAME_MAX + 1];
    if (!s_make_parts ("Flat", metric, names))
        return;
    fpx_shards_t *group = s_group (names, FPX_SHARDS_SUCCESSIVE_IDS);
    REQUIRE (group, "fpx_shards_new");
    CHECK_EQ (fpx_shards_count (group), NSERVERS);

    //  FAISS in process: IndexShards of three Flat parts, and one Flat.
    FaissIndexShards *shards = NULL;
    FaissIndex *local [NSERVERS] = { NULL }, *whole = NULL;
    faiss_IndexShards_new_with_options (&shards, DIM, 0, 1);
    for (int i = 0; i < NSERVERS; i++) {
        faiss_index_factory (&local [i], DIM, "Flat", (FaissMetricType) metric);
        faiss_IndexShards_add_shard (shards, local [i]);
    }
    faiss_index_factory (&whole, DIM, "Flat", (FaissMetricType) metric);
    faiss_Index_add ((FaissIndex *) shards, NB, s_xb);
    faiss_Index_add (whole, NB, s_xb);

    CHECK (fpx_shards_add (group, NB, DIM, s_xb) == 0, "add: %s", fpx_shards_errmsg (group));
    int64_t ntotal = -1;
    CHECK (fpx_shards_ntotal (group, &ntotal) == 0 && ntotal == NB, "ntotal %lld",
           (long long) ntotal);
    for (int i = 0; i < NSERVERS; i++) {
        fpx_index_info_t info;
        if (CHECK_OK (s_clients [i], fpx_index_describe (s_clients [i], names [i], 0, &info)))
            CHECK_EQ (info.ntotal, faiss_Index_ntotal (local [i]));
    }
    fpx_knn_t ref_shards, ref_whole;
    if (fpx_local_knn ((FaissIndex *) shards, NQ, s_xq, 10, 0, &ref_shards) == 0) {
        s_same_knn (&ref_shards, group, NQ, s_xq, 10, NULL);
        fpx_knn_free (&ref_shards);
    }
    if (fpx_local_knn (whole, NQ, s_xq, 10, 5, &ref_whole) == 0) {
        s_same_knn (&ref_whole, group, NQ, s_xq, 10, NULL);
        fpx_knn_free (&ref_whole);
    }
    s_same_range (whole, group, NQ, s_xq, metric == FPX_METRIC_L2 ? 0.6f : 4.5f);

    int rc = fpx_shards_add (group, 10, DIM, s_xb);
    CHECK (rc == FPX_EFAISS && strstr (fpx_shards_errmsg (group), "single pass"),
           "second add: %d %s", rc, fpx_shards_errmsg (group));
    int64_t ids [2] = { 1, 2 };
    rc = fpx_shards_add_with_ids (group, 2, DIM, s_xb, ids);
    CHECK (rc == FPX_EFAISS && strstr (fpx_shards_errmsg (group), "no sense"),
           "add_with_ids: %d %s", rc, fpx_shards_errmsg (group));
    CHECK (fpx_shards_reset (group) == 0, "reset: %s", fpx_shards_errmsg (group));
    CHECK (fpx_shards_ntotal (group, &ntotal) == 0 && ntotal == 0, "ntotal after reset");

    fpx_shards_destroy (&group);
    CHECK_TRUE (group == NULL);
    faiss_Index_free ((FaissIndex *) shards);
    for (int i = 0; i < NSERVERS; i++) {
        faiss_Index_free (local [i]);
        fpx_index_drop (s_clients [i], names [i]);
    }
    faiss_Index_free (whole);
}

static void
test_flat_successive (void *arg)
{
    (void) arg;
    s_flat_successive (FPX_METRIC_L2);
    s_flat_successive (FPX_METRIC_INNER_PRODUCT);
}

static void
test_idmap_by_id (void *arg)
{
    (void) arg;
    char names [NSERVERS][FPX_INDEX_NAME_MAX + 1];
    if (!s_make_parts ("IDMap,Flat", FPX_METRIC_L2, names))
        return;
    fpx_shards_t *group = s_group (names, FPX_SHARDS_BY_ID);
    REQUIRE (group, "fpx_shards_new");
    //  Half with the caller's ids, half with ntotal + i (as FAISS).
    int64_t *ids = malloc (NB * sizeof *ids);
    for (int64_t i = 0; i < NB; i++)
        ids [i] = i < NB / 2 ? 1000000 + 7 * i : i;
    CHECK (fpx_shards_add_with_ids (group, NB / 2, DIM, s_xb, ids) == 0, "add_with_ids: %s",
           fpx_shards_errmsg (group));
    //  ntotal is now NB / 2: the next ids are NB/2 … NB-1.
    CHECK (fpx_shards_add (group, NB - NB / 2, DIM, s_xb + (NB / 2) * DIM) == 0, "add: %s",
           fpx_shards_errmsg (group));
    FaissIndex *whole = NULL;
    faiss_index_factory (&whole, DIM, "IDMap,Flat", METRIC_L2);
    faiss_Index_add_with_ids (whole, NB, s_xb, ids);
    fpx_knn_t ref;
    if (fpx_local_knn (whole, NQ, s_xq, 10, 5, &ref) == 0) {
        s_same_knn (&ref, group, NQ, s_xq, 10, NULL);
        fpx_knn_free (&ref);
    }
    s_same_range (whole, group, NQ, s_xq, 0.6f);
    faiss_Index_free (whole);
    free (ids);
    fpx_shards_destroy (&group);
    for (int i = 0; i < NSERVERS; i++)
        fpx_index_drop (s_clients [i], names [i]);
}

static void
test_ivf_trained (void *arg)
{
    (void) arg;
    char names [NSERVERS][FPX_INDEX_NAME_MAX + 1];
    if (!s_make_parts ("IVF16,Flat", FPX_METRIC_L2, names))
        return;
    fpx_shards_t *group = s_group (names, FPX_SHARDS_SUCCESSIVE_IDS);
    REQUIRE (group, "fpx_shards_new");
    CHECK (fpx_shards_train (group, 2000, DIM, s_xt) == 0, "train: %s", fpx_shards_errmsg (group));
    CHECK (fpx_shards_add (group, NB, DIM, s_xb) == 0, "add: %s", fpx_shards_errmsg (group));
    FaissIndex *whole = NULL;
    faiss_index_factory (&whole, DIM, "IVF16,Flat", METRIC_L2);
    faiss_Index_train (whole, 2000, s_xt);
    faiss_Index_add (whole, NB, s_xb);
    fpx_local_set_param (whole, "nprobe", 4);
    fpx_search_params_t params = { .nprobe = 4 };
    fpx_knn_t ref;
    if (fpx_local_knn (whole, NQ, s_xq, 10, 5, &ref) == 0) {
        s_same_knn (&ref, group, NQ, s_xq, 10, &params);
        fpx_knn_free (&ref);
    }
    faiss_Index_free (whole);
    fpx_shards_destroy (&group);
    for (int i = 0; i < NSERVERS; i++)
        fpx_index_drop (s_clients [i], names [i]);
}

static void
test_ties (void *arg)
{
    (void) arg;
    //  Five distinct small-integer vectors, each twice: every distance
    //  ties across parts (and within one).
    float xb [10 * DIM], xq [6 * DIM];
    fpx_rng_t rng;
    fpx_rng_seed (&rng, 3);
    for (int i = 0; i < 5 * DIM; i++)
        xb [i] = (float) (fpx_rng_next (&rng) % 4);
    memcpy (xb + 5 * DIM, xb, sizeof (float) * 5 * DIM);
    for (int i = 0; i < 6 * DIM; i++)
        xq [i] = (float) (fpx_rng_next (&rng) % 4);
    int metrics [2] = { FPX_METRIC_L2, FPX_METRIC_INNER_PRODUCT };
    for (int m = 0; m < 2; m++) {
        char names [NSERVERS][FPX_INDEX_NAME_MAX + 1];
        if (!s_make_parts ("Flat", metrics [m], names))
            return;
        //  Successive ids: tied results of different parts differ in label.
        fpx_shards_t *group = s_group (names, FPX_SHARDS_SUCCESSIVE_IDS);
        REQUIRE (group, "fpx_shards_new");
        FaissIndexShards *shards = NULL;
        FaissIndex *local [NSERVERS];
        faiss_IndexShards_new_with_options (&shards, DIM, 0, 1);
        for (int i = 0; i < NSERVERS; i++) {
            faiss_index_factory (&local [i], DIM, "Flat", (FaissMetricType) metrics [m]);
            faiss_Index_add (local [i], 10, xb);
            faiss_IndexShards_add_shard (shards, local [i]);
            CHECK_OK (s_clients [i], fpx_add (s_clients [i], names [i], 10, DIM, xb, NULL));
        }
        for (int k = 25; k <= 40; k += 15) {       //  40: more than the 30 stored
            fpx_knn_t ref;
            if (fpx_local_knn ((FaissIndex *) shards, 6, xq, k, 0, &ref) == 0) {
                s_identical_knn (&ref, group, 6, xq, k);
                fpx_knn_free (&ref);
            }
        }
        fpx_shards_destroy (&group);
        faiss_Index_free ((FaissIndex *) shards);
        for (int i = 0; i < NSERVERS; i++) {
            faiss_Index_free (local [i]);
            fpx_index_drop (s_clients [i], names [i]);
        }
    }
}

static int64_t
s_searches (fpx_client_t *client)
{
    fpx_info_t *info = NULL;
    int64_t count = 0;
    if (fpx_info (client, -1, 0, &info) == 0)
        fpx_info_int (info, "requests.search.FPX_OK", &count);
    fpx_info_free (&info);
    return count;
}

static void
test_replicas (void *arg)
{
    (void) arg;
    char names [NSERVERS][FPX_INDEX_NAME_MAX + 1];
    if (!s_make_parts ("Flat", FPX_METRIC_L2, names))
        return;
    fpx_shards_t *group = s_group (names, FPX_SHARDS_REPLICAS);
    REQUIRE (group, "fpx_shards_new");
    CHECK (fpx_shards_add (group, NB, DIM, s_xb) == 0, "add: %s", fpx_shards_errmsg (group));
    int64_t ntotal = -1;
    CHECK (fpx_shards_ntotal (group, &ntotal) == 0 && ntotal == NB, "ntotal");
    for (int i = 0; i < NSERVERS; i++) {
        fpx_index_info_t info;
        if (CHECK_OK (s_clients [i], fpx_index_describe (s_clients [i], names [i], 0, &info)))
            CHECK_EQ (info.ntotal, NB);
    }
    FaissIndexReplicas *replicas = NULL;
    FaissIndex *local [NSERVERS], *whole = NULL;
    faiss_IndexReplicas_new_with_options (&replicas, DIM, 0);
    for (int i = 0; i < NSERVERS; i++) {
        faiss_index_factory (&local [i], DIM, "Flat", METRIC_L2);
        faiss_IndexReplicas_add_replica (replicas, local [i]);
    }
    faiss_Index_add ((FaissIndex *) replicas, NB, s_xb);
    faiss_index_factory (&whole, DIM, "Flat", METRIC_L2);
    faiss_Index_add (whole, NB, s_xb);

    int64_t before [NSERVERS];
    for (int i = 0; i < NSERVERS; i++)
        before [i] = s_searches (s_clients [i]);
    fpx_knn_t ref;
    if (fpx_local_knn ((FaissIndex *) replicas, NQ, s_xq, 7, 0, &ref) == 0) {
        s_same_knn (&ref, group, NQ, s_xq, 7, NULL);
        fpx_knn_free (&ref);
    }
    for (int i = 0; i < NSERVERS; i++)
        CHECK (s_searches (s_clients [i]) - before [i] == 1, "server %d: %lld searches", i,
               (long long) (s_searches (s_clients [i]) - before [i]));
    if (fpx_local_knn (whole, 2, s_xq, 3, 2, &ref) == 0) {
        s_same_knn (&ref, group, 2, s_xq, 3, NULL);     //  fewer queries than replicas
        fpx_knn_free (&ref);
    }
    s_same_range (whole, group, NQ, s_xq, 0.6f);
    faiss_Index_free ((FaissIndex *) replicas);
    for (int i = 0; i < NSERVERS; i++)
        faiss_Index_free (local [i]);
    faiss_Index_free (whole);
    fpx_shards_destroy (&group);
    for (int i = 0; i < NSERVERS; i++)
        fpx_index_drop (s_clients [i], names [i]);
}

static void
test_refusals (void *arg)
{
    (void) arg;
    const char *names [2] = { "@1", "@2" };
    CHECK_TRUE (fpx_shards_new (NULL, names, 2, FPX_SHARDS_BY_ID) == NULL);
    CHECK_TRUE (fpx_shards_new (s_clients, names, 0, FPX_SHARDS_BY_ID) == NULL);
    CHECK_TRUE (fpx_shards_new (s_clients, names, 2, 7) == NULL);
    fpx_shards_destroy (NULL);

    fpx_index_info_t a, b;
    REQUIRE_OK (s_clients [0], fpx_index_create (s_clients [0], NULL, DIM, "Flat", FPX_METRIC_L2, &a));
    REQUIRE_OK (s_clients [1], fpx_index_create (s_clients [1], NULL, DIM + 1, "Flat", FPX_METRIC_L2,
                                                 &b));
    const char *mixed [2] = { a.name, b.name };
    fpx_shards_t *group = fpx_shards_new (s_clients, mixed, 2, FPX_SHARDS_BY_ID);
    REQUIRE (group, "fpx_shards_new");
    float D_ [4];
    int64_t I_ [4];
    int rc = fpx_shards_search (group, 1, DIM, s_xq, 4, NULL, D_, I_);
    CHECK (rc == FPX_EINVAL && strstr (fpx_shards_errmsg (group), "dimension"), "%d %s", rc,
           fpx_shards_errmsg (group));
    CHECK_EQ (fpx_shards_search (group, 1, DIM, s_xq, 0, NULL, D_, I_), FPX_EINVAL);
    CHECK_EQ (fpx_shards_add (group, -1, DIM, s_xb), FPX_EINVAL);
    fpx_shards_destroy (&group);
    fpx_index_drop (s_clients [0], a.name);
    fpx_index_drop (s_clients [1], b.name);
}

static void
test_server_down (void *arg)
{
    (void) arg;
    char names [NSERVERS][FPX_INDEX_NAME_MAX + 1];
    if (!s_make_parts ("Flat", FPX_METRIC_L2, names))
        return;
    fpx_shards_t *group = s_group (names, FPX_SHARDS_SUCCESSIVE_IDS);
    REQUIRE (group, "fpx_shards_new");
    CHECK (fpx_shards_add (group, NB, DIM, s_xb) == 0, "add: %s", fpx_shards_errmsg (group));
    fpx_client_set_timeout (s_clients [2], 2000);
    fpx_client_set_connect_timeout (s_clients [2], 1000);
    fpx_test_server_stop (&s_servers [2], 10);
    float Dq [NQ * 5];
    int64_t Iq [NQ * 5];
    int rc = fpx_shards_search (group, NQ, DIM, s_xq, 5, NULL, Dq, Iq);
    CHECK (rc < 0 && strstr (fpx_shards_errmsg (group), "shard 2"), "search with a server "
           "down: %d %s", rc, fpx_shards_errmsg (group));
    CHECK (strstr (fpx_shards_errmsg (group), s_servers [2].endpoint) != NULL,
           "the message names the server: %s", fpx_shards_errmsg (group));
    fpx_shards_destroy (&group);
    //  The other two still answer as a group of two.
    const char *two [2] = { names [0], names [1] };
    group = fpx_shards_new (s_clients, two, 2, FPX_SHARDS_SUCCESSIVE_IDS);
    REQUIRE (group, "fpx_shards_new");
    CHECK (fpx_shards_search (group, NQ, DIM, s_xq, 5, NULL, Dq, Iq) == 0, "two parts: %s",
           fpx_shards_errmsg (group));
    fpx_shards_destroy (&group);
}

int
main (void)
{
    fpx_test_local_single_thread ();
    s_xt = fpx_data_uniform (11, 2000, DIM);
    s_xb = fpx_data_uniform (12, NB, DIM);
    s_xq = fpx_data_uniform (13, NQ, DIM);
    const char *args [] = { "--workers", "2", NULL };
    bool started = true;
    for (int i = 0; i < NSERVERS && started; i++) {
        started = fpx_test_server_start (&s_servers [i], args, NULL) == 0;
        if (started)
            s_clients [i] = fpx_test_client (&s_servers [i], fpx_test_key_a);
    }
    if (started) {
        fpx_test_run ("shards.flat_successive", test_flat_successive, NULL);
        fpx_test_run ("shards.idmap_by_id", test_idmap_by_id, NULL);
        fpx_test_run ("shards.ivf_trained", test_ivf_trained, NULL);
        fpx_test_run ("shards.ties", test_ties, NULL);
        fpx_test_run ("shards.replicas", test_replicas, NULL);
        fpx_test_run ("shards.refusals", test_refusals, NULL);
        fpx_test_run ("shards.server_down", test_server_down, NULL);
    }
    else
        fpx_test_fail_whole ("shards.server_start", "faissproxyd did not start");
    for (int i = 0; i < NSERVERS; i++) {
        fpx_client_destroy (&s_clients [i]);
        if (s_servers [i].pid)
            CHECK_EQ (fpx_test_server_stop (&s_servers [i], 30), 0);
    }
    free (s_xt);
    free (s_xb);
    free (s_xq);
    return fpx_test_finish ();
}
