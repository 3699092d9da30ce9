/*  test_codec.c — FAISS's standalone codec (sa_code_size, sa_encode,
    sa_decode), the removal of a group's parts (remove_shard,
    remove_replica) and IVF merge_from through libfaissproxy, against FAISS's C API in
    process on the same objects: codes byte for byte, decodings bit for
    bit, group sizes and searches as FAISS's. Then what the server must
    refuse without calling FAISS: codes it cannot check, frames that are
    not a whole number of codes, a part that is not the group's.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <faiss/c_api/IndexReplicas_c.h>
#include <faiss/c_api/IndexShards_c.h>
#include <faiss/c_api/IndexFlat_c.h>
#include <faiss/c_api/IndexIVF_c.h>

#include "fpx_test.h"

#define DIM 16
#define NT  2000
#define NB  500
#define NQ  10

static float *s_xt, *s_xb, *s_xq;

//  A factory and its sa_code_size, written out: FAISS 1.7.3's C API
//  faiss_Index_sa_code_size never stores the size it computes.
typedef struct {
    const char *factory;
    size_t code_size;
} s_codec_case_t;

static void
s_test_codec (void *arg)
{
    const s_codec_case_t *c = arg;
    const char *factory = c->factory;
    fpx_test_server_t server;
    REQUIRE (fpx_test_server_start (&server, NULL, NULL) == 0, "start failed");
    fpx_client_t *client = fpx_test_client (&server, fpx_test_key_a);
    FaissIndex *local = fpx_local_create (DIM, factory, FPX_METRIC_L2, NULL, 0);
    REQUIRE (local && faiss_Index_train (local, NT, s_xt) == 0, "local train");
    size_t size, code_size = c->code_size;
    uint8_t *bytes = fpx_local_serialize (local, &size);
    fpx_index_info_t info;
    REQUIRE_OK (client, fpx_deserialize (client, NULL, NULL, bytes, size, &info));
    free (bytes);
    double remote_size = 0;
    CHECK_OK (client, fpx_get_attr (client, info.name, "sa_code_size", &remote_size));
    CHECK_EQ ((size_t) remote_size, code_size);
    uint8_t *codes = malloc (NB * code_size), *got = malloc (NB * code_size);
    float *decoded = malloc (NB * DIM * sizeof (float)), *got_x = malloc (NB * DIM * sizeof (float));
    REQUIRE (codes && got && decoded && got_x, "out of memory");
    REQUIRE (faiss_Index_sa_encode (local, NB, s_xb, codes) == 0, "local encode");
    REQUIRE (faiss_Index_sa_decode (local, NB, codes, decoded) == 0, "local decode");
    if (CHECK_OK (client, fpx_sa_encode (client, info.name, NB, DIM, s_xb, code_size, got)))
        CHECK (memcmp (got, codes, NB * code_size) == 0, "%s: codes differ", factory);
    if (CHECK_OK (client, fpx_sa_decode (client, info.name, NB, code_size, codes, DIM, got_x)))
        CHECK (memcmp (got_x, decoded, NB * DIM * sizeof (float)) == 0, "%s: decodings differ",
               factory);
    //  The caller's code size is checked against the server's.
    CHECK_RC (client, fpx_sa_encode (client, info.name, 1, DIM, s_xb, code_size + 1, got),
              FPX_EINVAL);
    CHECK_RC (client, fpx_sa_decode (client, info.name, 1, code_size + 1, codes, DIM, got_x),
              FPX_EPROTO);
    free (codes);
    free (got);
    free (decoded);
    free (got_x);
    faiss_Index_free (local);
    fpx_client_destroy (&client);
    CHECK (fpx_test_server_stop (&server, 10) == 0, "server exit");
}

static void
s_test_codec_refusals (void *arg)
{
    (void) arg;
    fpx_test_server_t server;
    REQUIRE (fpx_test_server_start (&server, NULL, NULL) == 0, "start failed");
    fpx_client_t *client = fpx_test_client (&server, fpx_test_key_a);
    fpx_index_info_t ivf, hnsw, rq;
    uint8_t codes [64] = { 0 };
    float x [4 * DIM];
    REQUIRE_OK (client, fpx_index_create (client, NULL, DIM, "IVF8,Flat", FPX_METRIC_L2, &ivf));
    size_t code_size = 1 + DIM * sizeof (float);
    CHECK_RC (client, fpx_sa_encode (client, ivf.name, 1, DIM, s_xq, code_size, codes), FPX_EINVAL);
    CHECK (strstr (fpx_client_errmsg (client), "not trained"), "%s", fpx_client_errmsg (client));
    REQUIRE_OK (client, fpx_train (client, ivf.name, NT, DIM, s_xt));
    uint8_t bad [2 * (1 + DIM * sizeof (float))];
    REQUIRE_OK (client, fpx_sa_encode (client, ivf.name, 2, DIM, s_xq, code_size, bad));
    bad [code_size] = 8;                    //  list 8 of 8: past the centroids
    CHECK_RC (client, fpx_sa_decode (client, ivf.name, 2, code_size, bad, DIM, x), FPX_EFAISS);
    CHECK (strstr (fpx_client_errmsg (client), "nlist"), "%s", fpx_client_errmsg (client));
    REQUIRE_OK (client, fpx_index_create (client, NULL, DIM, "HNSW8", FPX_METRIC_L2, &hnsw));
    CHECK_RC (client, fpx_sa_decode (client, hnsw.name, 1, 64, codes, DIM, x), FPX_EFAISS);
    REQUIRE_OK (client, fpx_index_create (client, NULL, DIM, "RQ1x4", FPX_METRIC_L2, &rq));
    REQUIRE_OK (client, fpx_train (client, rq.name, NT, DIM, s_xt));
    double rq_size = 0;
    REQUIRE_OK (client, fpx_get_attr (client, rq.name, "sa_code_size", &rq_size));
    REQUIRE (rq_size >= 1 && rq_size <= 64, "RQ code size %g", rq_size);
    CHECK_RC (client, fpx_sa_decode (client, rq.name, 1, (size_t) rq_size, codes, DIM, x),
              FPX_EINVAL);
    CHECK (strstr (fpx_client_errmsg (client), "served for"), "%s", fpx_client_errmsg (client));
    CHECK_OK (client, fpx_ping (client, NULL));
    fpx_client_destroy (&client);
    CHECK (fpx_test_server_stop (&server, 10) == 0, "server exit");
}

//  Shards (or replicas) of two flat parts, in FAISS and on the server: the
//  group and the part removed from it, after the removal, as FAISS's.
static void
s_test_remove_part (void *arg)
{
    bool shards = arg != NULL;
    fpx_test_server_t server;
    REQUIRE (fpx_test_server_start (&server, NULL, NULL) == 0, "start failed");
    fpx_client_t *client = fpx_test_client (&server, fpx_test_key_a);
    double args [1] = { DIM };
    fpx_index_info_t group, parts [2], info;
    REQUIRE_OK (client, fpx_construct (client, shards ? "IndexShards" : "IndexReplicas", 1, args,
                                       0, NULL, &group));
    FaissIndex *local_group = NULL, *local_parts [2];
    if (shards)
        REQUIRE (faiss_IndexShards_new ((FaissIndexShards **) &local_group, DIM) == 0, "new");
    else
        REQUIRE (faiss_IndexReplicas_new ((FaissIndexReplicas **) &local_group, DIM) == 0, "new");
    const char *role = shards ? "shard" : "replica";
    for (int i = 0; i < 2; i++) {
        REQUIRE_OK (client, fpx_construct (client, "IndexFlatL2", 1, args, 0, NULL, &parts [i]));
        REQUIRE_OK (client, fpx_attach (client, group.name, role, parts [i].name, NULL));
        REQUIRE (faiss_IndexFlatL2_new_with (
                     (FaissIndexFlatL2 **) &local_parts [i], DIM) == 0, "local part");
        REQUIRE ((shards ? faiss_IndexShards_add_shard ((FaissIndexShards *) local_group,
                                                        local_parts [i])
                         : faiss_IndexReplicas_add_replica ((FaissIndexReplicas *) local_group,
                                                            local_parts [i])) == 0, "add part");
    }
    REQUIRE_OK (client, fpx_add (client, group.name, NB, DIM, s_xb, NULL));
    REQUIRE (faiss_Index_add (local_group, NB, s_xb) == 0, "local add");
    const char *remove_role = shards ? "remove_shard" : "remove_replica";
    //  Not a part of this group: refused, nothing changes.
    fpx_index_info_t loose;
    REQUIRE_OK (client, fpx_construct (client, "IndexFlatL2", 1, args, 0, NULL, &loose));
    CHECK_RC (client, fpx_attach (client, group.name, remove_role, loose.name, NULL), FPX_EINVAL);
    CHECK_RC (client, fpx_attach (client, parts [0].name, remove_role, parts [1].name, NULL),
              FPX_EINVAL);
    CHECK_RC (client, fpx_attach (client, group.name, shards ? "remove_replica" : "remove_shard",
                                  parts [1].name, NULL), FPX_EINVAL);
    //  FAISS's group takes the part out without freeing it only when it
    //  does not own its fields (the default of the C API's constructor).
    REQUIRE_OK (client, fpx_attach (client, group.name, remove_role, parts [1].name, &info));
    REQUIRE ((shards ? faiss_IndexShards_remove_shard ((FaissIndexShards *) local_group,
                                                       local_parts [1])
                     : faiss_IndexReplicas_remove_replica ((FaissIndexReplicas *) local_group,
                                                           local_parts [1])) == 0, "remove");
    CHECK_EQ (info.ntotal, faiss_Index_ntotal (local_group));
    fpx_index_info_t part;
    REQUIRE_OK (client, fpx_index_describe (client, parts [1].name, 0, &part));
    CHECK_EQ (part.ntotal, faiss_Index_ntotal (local_parts [1]));
    fpx_knn_t expected, got;
    REQUIRE (fpx_local_knn (local_group, NQ, s_xq, 5, 0, &expected) == 0, "local search");
    if (CHECK_OK (client, fpx_remote_knn (client, group.name, NQ, DIM, s_xq, 5, NULL, &got)))
        CHECK_KNN (&expected, &got);
    fpx_knn_free (&expected);
    fpx_knn_free (&got);
    //  The part stands alone: it takes vectors, the group does not see them.
    REQUIRE_OK (client, fpx_add (client, parts [1].name, 3, DIM, s_xq, NULL));
    REQUIRE (faiss_Index_add (local_parts [1], 3, s_xq) == 0, "local add");
    REQUIRE_OK (client, fpx_index_describe (client, group.name, 0, &info));
    CHECK_EQ (info.ntotal, faiss_Index_ntotal (local_group));
    REQUIRE (fpx_local_knn (local_parts [1], NQ, s_xq, 5, 0, &expected) == 0, "local search");
    if (CHECK_OK (client, fpx_remote_knn (client, parts [1].name, NQ, DIM, s_xq, 5, NULL, &got)))
        CHECK_KNN (&expected, &got);
    fpx_knn_free (&expected);
    fpx_knn_free (&got);
    //  Removed twice: no longer a part.
    CHECK_RC (client, fpx_attach (client, group.name, remove_role, parts [1].name, NULL), FPX_EINVAL);
    faiss_Index_free (local_group);
    faiss_Index_free (local_parts [0]);
    faiss_Index_free (local_parts [1]);
    fpx_client_destroy (&client);
    CHECK (fpx_test_server_stop (&server, 10) == 0, "server exit");
}

//  Two IVF indexes of one trained copy, each with half the vectors, one
//  merged into the other with add_id, on both sides.
static void
s_test_merge_from (void *arg)
{
    (void) arg;
    fpx_test_server_t server;
    REQUIRE (fpx_test_server_start (&server, NULL, NULL) == 0, "start failed");
    fpx_client_t *client = fpx_test_client (&server, fpx_test_key_a);
    FaissIndex *a = fpx_local_create (DIM, "IVF8,Flat", FPX_METRIC_L2, NULL, 0);
    REQUIRE (a && faiss_Index_train (a, NT, s_xt) == 0, "local train");
    FaissIndex *b = fpx_local_copy (a);
    size_t size;
    uint8_t *bytes = fpx_local_serialize (a, &size);
    fpx_index_info_t ra, rb, info;
    REQUIRE (b && bytes, "copies");
    REQUIRE_OK (client, fpx_deserialize (client, NULL, NULL, bytes, size, &ra));
    REQUIRE_OK (client, fpx_deserialize (client, NULL, NULL, bytes, size, &rb));
    free (bytes);
    int half = NB / 2;
    REQUIRE (faiss_Index_add (a, half, s_xb) == 0 && faiss_Index_add (b, NB - half, s_xb + half * DIM) == 0,
             "local add");
    REQUIRE_OK (client, fpx_add (client, ra.name, half, DIM, s_xb, NULL));
    REQUIRE_OK (client, fpx_add (client, rb.name, NB - half, DIM, s_xb + half * DIM, NULL));
    CHECK_RC (client, fpx_merge_from (client, ra.name, rb.name, -1, NULL), FPX_EINVAL);
    CHECK_RC (client, fpx_merge_from (client, ra.name, ra.name, 0, NULL), FPX_EINVAL);
    REQUIRE (faiss_IndexIVF_merge_from ((FaissIndexIVF *) a, (FaissIndexIVF *) b, half) == 0,
             "local merge");
    REQUIRE_OK (client, fpx_merge_from (client, ra.name, rb.name, half, &info));
    CHECK_EQ (info.ntotal, faiss_Index_ntotal (a));
    REQUIRE_OK (client, fpx_index_describe (client, rb.name, 0, &info));
    CHECK_EQ (info.ntotal, 0);
    REQUIRE (fpx_local_set_param (a, "nprobe", 3) == 0, "nprobe");
    fpx_search_params_t params = { 3, 0 };
    fpx_knn_t expected, got;
    REQUIRE (fpx_local_knn (a, NQ, s_xq, 8, 8, &expected) == 0, "local search");
    if (CHECK_OK (client, fpx_remote_knn (client, ra.name, NQ, DIM, s_xq, 8, &params, &got)))
        CHECK_KNN (&expected, &got);
    fpx_knn_free (&expected);
    fpx_knn_free (&got);
    faiss_Index_free (a);
    faiss_Index_free (b);
    fpx_client_destroy (&client);
    CHECK (fpx_test_server_stop (&server, 10) == 0, "server exit");
}

int
main (void)
{
    s_xt = fpx_data_clustered (1, NT, DIM, 20, 0.1f);
    s_xb = fpx_data_clustered (2, NB, DIM, 20, 0.1f);
    s_xq = fpx_data_clustered (3, NQ, DIM, 20, 0.1f);
    fpx_test_local_single_thread ();
    //  IVF codes start with the list number: one byte for 8 lists.
    static const s_codec_case_t cases [] = {
        { "Flat", DIM * 4 }, { "PQ4np", 4 }, { "SQ8", DIM }, { "LSH", DIM / 8 },
        { "IVF8,Flat", 1 + DIM * 4 }, { "IVF8,PQ4np", 1 + 4 }, { "IVF8,SQ4", 1 + DIM / 2 },
        { "PCA8,IVF8,SQ8", 1 + 8 } };
    for (size_t i = 0; i < sizeof cases / sizeof cases [0]; i++) {
        char name [80];
        snprintf (name, sizeof name, "codec.%s", cases [i].factory);
        fpx_test_run (name, s_test_codec, (void *) &cases [i]);
    }
    fpx_test_run ("codec.refusals", s_test_codec_refusals, NULL);
    fpx_test_run ("groups.remove_shard", s_test_remove_part, (void *) "shards");
    fpx_test_run ("groups.remove_replica", s_test_remove_part, NULL);
    fpx_test_run ("merge_from.ivf", s_test_merge_from, NULL);
    free (s_xt);
    free (s_xb);
    free (s_xq);
    return fpx_test_finish ();
}
