/*  test_select.c — search-time id selection (SearchParameters.sel, IVF
    max_codes) through libfaissproxy, against FAISS in process.

    FAISS 1.7.3's C API cannot pass a selector, so the reference is what a
    selector means: the same trained index holding only the selected
    vectors, under their own ids (Flat: an IDMap,Flat; IVF: the trained
    index, add_with_ids). The server holds the whole database, uploaded
    from the local index, and searches it with the selector: labels must
    be identical (ties aside), distances within 1e-5. HNSW, whose graph
    changes with what it holds, is compared with FAISS's own selectors in
    tests/python/test_select.py. Then FAISS's refusals, and hostile
    selector trees sent by hand: each an error reply, the server serving
    on.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <faiss/c_api/clone_index_c.h>

#include "fpx_test.h"

#define DIM 16
#define NT  2000
#define NB  1000
#define NQ  20
#define K   10
#define KEXTRA 20

static float *s_xt, *s_xb, *s_xq;
static int64_t s_subset [80];        //  distinct ids in [0, NB), unsorted

typedef enum { S_BATCH, S_ARRAY, S_RANGE, S_RANGE_SORTED, S_BITMAP, S_BITMAP_SHORT,
               S_NOT, S_NOT_NOT, S_ALL, S_KINDS } s_kind_t;
static const char *s_kind_names [S_KINDS] = { "batch", "array", "range", "range_sorted",
    "bitmap", "bitmap_short", "not", "not_not", "all" };

static bool
s_in_subset (int64_t id)
{
    for (size_t i = 0; i < sizeof s_subset / sizeof s_subset [0]; i++)
        if (s_subset [i] == id)
            return true;
    return false;
}

//  What selector kind selects, written out (the reference).
static bool
s_selects (s_kind_t kind, int64_t id)
{
    switch (kind) {
        case S_BATCH: case S_ARRAY: case S_BITMAP: return s_in_subset (id);
        case S_BITMAP_SHORT:    return id < 8 * 25 && s_in_subset (id);
        case S_RANGE: case S_RANGE_SORTED: return id >= 30 && id < 95;
        case S_NOT:             return s_in_subset (id);      //  not (the rest)
        case S_NOT_NOT:         return id >= 100 && id < 400;
        default:                return true;
    }
}

static fpx_selector_t *
s_selector (s_kind_t kind)
{
    size_t n = sizeof s_subset / sizeof s_subset [0];
    uint8_t bitmap [NB / 8] = { 0 };
    for (size_t i = 0; i < n; i++)
        bitmap [s_subset [i] / 8] |= (uint8_t) (1 << (s_subset [i] % 8));
    switch (kind) {
        case S_BATCH:           return fpx_selector_batch_new (n, s_subset);
        case S_ARRAY:           return fpx_selector_array_new (n, s_subset);
        case S_RANGE:           return fpx_selector_range_new (30, 95, 0);
        case S_RANGE_SORTED:    return fpx_selector_range_new (30, 95, 1);
        case S_BITMAP:          return fpx_selector_bitmap_new (sizeof bitmap, bitmap);
        case S_BITMAP_SHORT:    return fpx_selector_bitmap_new (25, bitmap);
        case S_NOT: {
            int64_t rest [NB];
            size_t count = 0;
            for (int64_t id = 0; id < NB; id++)
                if (!s_in_subset (id))
                    rest [count++] = id;
            fpx_selector_t *inner = fpx_selector_batch_new (count, rest);
            return fpx_selector_not_new (&inner);
        }
        case S_NOT_NOT: {
            fpx_selector_t *inner = fpx_selector_range_new (100, 400, 0);
            fpx_selector_t *middle = fpx_selector_not_new (&inner);
            return fpx_selector_not_new (&middle);
        }
        default:                return fpx_selector_all_new ();
    }
}

//  A copy of the trained, empty `trained` holding the vectors kind selects,
//  under their ids. Flat: an IDMap,Flat of the metric.
static FaissIndex *
s_reference (const FaissIndex *trained, const char *factory, int metric, s_kind_t kind)
{
    FaissIndex *ref = NULL;
    if (strcmp (factory, "Flat") == 0)
        ref = fpx_local_create (DIM, "IDMap,Flat", metric, NULL, 0);
    else
        faiss_clone_index (trained, &ref);
    if (!ref)
        return NULL;
    float *x = malloc ((size_t) NB * DIM * sizeof (float));
    int64_t *ids = malloc (NB * sizeof (int64_t));
    int64_t n = 0;
    for (int64_t id = 0; x && ids && id < NB; id++)
        if (s_selects (kind, id)) {
            memcpy (x + n * DIM, s_xb + id * DIM, DIM * sizeof (float));
            ids [n++] = id;
        }
    if (!x || !ids || (n && faiss_Index_add_with_ids (ref, n, x, ids))) {
        faiss_Index_free (ref);
        ref = NULL;
    }
    free (x);
    free (ids);
    return ref;
}

typedef struct {
    const char *factory;
    int metric;
} s_case_t;

static void
s_test_selectors (void *arg)
{
    const s_case_t *c = arg;
    fpx_test_server_t server;
    REQUIRE (fpx_test_server_start (&server, NULL, NULL) == 0, "start failed");
    fpx_client_t *client = fpx_test_client (&server, fpx_test_key_a);
    FaissIndex *local = fpx_local_create (DIM, c->factory, c->metric, NULL, 0);
    REQUIRE (local && faiss_Index_train (local, NT, s_xt) == 0, "local train");
    FaissIndex *trained = fpx_local_copy (local);
    REQUIRE (trained && faiss_Index_add (local, NB, s_xb) == 0, "local add");
    size_t size;
    uint8_t *bytes = fpx_local_serialize (local, &size);
    REQUIRE (bytes, "serialize");
    fpx_index_info_t info;
    REQUIRE_OK (client, fpx_deserialize (client, NULL, NULL, bytes, size, &info));
    free (bytes);
    bool ivf = strstr (c->factory, "IVF") != NULL;
    fpx_search_params_t params = { ivf ? 4 : 0, 0 };
    if (ivf)
        REQUIRE (fpx_local_set_param (local, "nprobe", 4) == 0, "nprobe");
    float radius = c->metric == FPX_METRIC_L2 ? 0.6f : 4.5f;
    for (int kind = 0; kind < S_KINDS; kind++) {
        FaissIndex *ref = s_reference (trained, c->factory, c->metric, (s_kind_t) kind);
        REQUIRE (ref, "%s: reference index", s_kind_names [kind]);
        if (ivf)
            REQUIRE (fpx_local_set_param (ref, "nprobe", 4) == 0, "nprobe");
        fpx_selection_t selection = { s_selector ((s_kind_t) kind), 0 };
        REQUIRE (selection.sel, "selector");
        fpx_knn_t expected, got = { NQ, K, K, malloc (NQ * K * sizeof (float)),
                                    malloc (NQ * K * sizeof (int64_t)) };
        REQUIRE (fpx_local_knn (ref, NQ, s_xq, K, KEXTRA, &expected) == 0, "local search");
        if (CHECK_OK (client, fpx_search_select (client, info.name, NQ, DIM, s_xq, K, &params,
                                                 &selection, got.D, got.I))) {
            char why [256];
            CHECK (fpx_knn_equal (&expected, &got, why, sizeof why), "%s %s: %s", c->factory,
                   s_kind_names [kind], why);
            int stray = -1;
            for (int i = 0; i < NQ * K && stray < 0; i++)
                if (got.I [i] >= 0 && !s_selects ((s_kind_t) kind, got.I [i]))
                    stray = i;
            CHECK (stray < 0, "%s: label %lld is not selected", s_kind_names [kind],
                   (long long) (stray < 0 ? 0 : got.I [stray]));
        }
        fpx_range_t local_range;
        fpx_range_result_t *range = NULL;
        REQUIRE (fpx_local_range (ref, NQ, s_xq, radius, &local_range) == 0, "local range");
        if (CHECK_OK (client, fpx_range_search_select (client, info.name, NQ, DIM, s_xq, radius,
                                                       &params, &selection, &range))) {
            char why [256];
            CHECK (fpx_range_equal (&local_range, range, radius, why, sizeof why), "%s %s range: %s",
                   c->factory, s_kind_names [kind], why);
            CHECK (kind == S_ALL || range->lims [NQ] < (uint64_t) NQ * NB, "range found all");
        }
        fpx_range_result_destroy (&range);
        fpx_range_free (&local_range);
        fpx_knn_free (&expected);
        fpx_knn_free (&got);
        fpx_selector_destroy ((fpx_selector_t **) &selection.sel);
        faiss_Index_free (ref);
    }
    faiss_Index_free (trained);
    faiss_Index_free (local);
    fpx_client_destroy (&client);
    CHECK (fpx_test_server_stop (&server, 10) == 0, "server exit");
}

//  IVF max_codes: the server's answer is FAISS's with the index's own
//  max_codes set (ParameterSpace), and FPX_EINVAL without an IVF part.
static void
s_test_max_codes (void *arg)
{
    (void) arg;
    fpx_test_server_t server;
    REQUIRE (fpx_test_server_start (&server, NULL, NULL) == 0, "start failed");
    fpx_client_t *client = fpx_test_client (&server, fpx_test_key_a);
    FaissIndex *local = fpx_local_create (DIM, "IVF16,Flat", FPX_METRIC_L2, NULL, 0);
    REQUIRE (local && faiss_Index_train (local, NT, s_xt) == 0
             && faiss_Index_add (local, NB, s_xb) == 0, "local index");
    size_t size;
    uint8_t *bytes = fpx_local_serialize (local, &size);
    fpx_index_info_t info, flat;
    REQUIRE_OK (client, fpx_deserialize (client, NULL, NULL, bytes, size, &info));
    free (bytes);
    fpx_search_params_t params = { 8, 0 };
    REQUIRE (fpx_local_set_param (local, "nprobe", 8) == 0, "nprobe");
    int64_t caps [3] = { 40, 300, FPX_MAX_CODES_UNLIMITED };
    for (int i = 0; i < 3; i++) {
        REQUIRE (fpx_local_set_param (local, "max_codes", caps [i] < 0 ? 0 : (double) caps [i]) == 0,
                 "max_codes");
        fpx_knn_t expected, got = { NQ, K, K, malloc (NQ * K * sizeof (float)),
                                    malloc (NQ * K * sizeof (int64_t)) };
        REQUIRE (fpx_local_knn (local, NQ, s_xq, K, 0, &expected) == 0, "local search");
        fpx_selection_t selection = { NULL, caps [i] };
        if (CHECK_OK (client, fpx_search_select (client, info.name, NQ, DIM, s_xq, K, &params,
                                                 &selection, got.D, got.I)))
            CHECK_KNN (&expected, &got);
        fpx_knn_free (&expected);
        fpx_knn_free (&got);
    }
    REQUIRE_OK (client, fpx_index_create (client, NULL, DIM, "Flat", FPX_METRIC_L2, &flat));
    REQUIRE_OK (client, fpx_add (client, flat.name, NB, DIM, s_xb, NULL));
    float D [K];
    int64_t I [K];
    fpx_selection_t capped = { NULL, 10 };
    CHECK_RC (client, fpx_search_select (client, flat.name, 1, DIM, s_xq, K, NULL, &capped, D, I),
              FPX_EINVAL);
    fpx_selection_t bad = { NULL, -2 };
    CHECK_RC (client, fpx_search_select (client, info.name, 1, DIM, s_xq, K, NULL, &bad, D, I),
              FPX_EINVAL);
    faiss_Index_free (local);
    fpx_client_destroy (&client);
    CHECK (fpx_test_server_stop (&server, 10) == 0, "server exit");
}

//  Indexes for which FAISS 1.7.3 refuses search parameters (an IDMap, a
//  Refine, LSH) or a selector (IndexPQ): FAISS's refusal, FPX_EFAISS.
static void
s_test_refusals (void *arg)
{
    (void) arg;
    fpx_test_server_t server;
    REQUIRE (fpx_test_server_start (&server, NULL, NULL) == 0, "start failed");
    fpx_client_t *client = fpx_test_client (&server, fpx_test_key_a);
    const char *factories [] = { "IDMap,Flat", "Flat,RFlat", "LSH", "PQ4x4np" };
    for (size_t f = 0; f < sizeof factories / sizeof factories [0]; f++) {
        fpx_index_info_t info;
        REQUIRE_OK (client, fpx_index_create (client, NULL, DIM, factories [f], FPX_METRIC_L2, &info));
        REQUIRE_OK (client, fpx_train (client, info.name, NT, DIM, s_xt));
        if (f == 0) {
            int64_t ids [NB];
            for (int i = 0; i < NB; i++)
                ids [i] = 5 * i;
            REQUIRE_OK (client, fpx_add_with_ids (client, info.name, NB, DIM, s_xb, ids, NULL));
        }
        else
            REQUIRE_OK (client, fpx_add (client, info.name, NB, DIM, s_xb, NULL));
        fpx_selection_t selection = { fpx_selector_range_new (0, 50, 0), 0 };
        float D [K];
        int64_t I [K];
        int rc = fpx_search_select (client, info.name, 1, DIM, s_xq, K, NULL, &selection, D, I);
        CHECK (rc == FPX_EFAISS, "%s: %s (%s)", factories [f], fpx_error_name (rc),
               fpx_client_errmsg (client));
        CHECK (strstr (fpx_client_errmsg (client), f == 3 ? "selector not supported"
                                                          : "search params not supported"),
               "%s: %s", factories [f], fpx_client_errmsg (client));
        CHECK_OK (client, fpx_search (client, info.name, 1, DIM, s_xq, K, NULL, D, I));
        fpx_selector_destroy ((fpx_selector_t **) &selection.sel);
    }
    fpx_client_destroy (&client);
    CHECK (fpx_test_server_stop (&server, 10) == 0, "server exit");
}

/* ---- hostile selectors, by hand ------------------------------------------- */

static fpx_test_server_t s_server;
static fpx_raw_t *s_raw;
static char s_name [FPX_NAME_MAX + 1];

//  A search of one query with the "sel" value written by pack (NULL: none)
//  and extra params; frames as given. Expects status `expected`.
typedef void (s_pack_fn) (msgpack_packer *pk);

static void
s_expect (s_pack_fn *pack_sel, int64_t max_codes, int nbulk, const void *bulk, size_t bulk_size,
          int expected, const char *what)
{
    fpx_mp_t mp;
    fpx_mp_init (&mp);
    msgpack_pack_map (&mp.pk, 3 + (pack_sel != NULL) + (max_codes != -1));
    fpx_pack_kv_str (&mp.pk, "name", s_name);
    fpx_pack_kv_int (&mp.pk, "k", K);
    fpx_pack_kv_int (&mp.pk, "d", DIM);
    if (max_codes != -1)
        fpx_pack_kv_int (&mp.pk, "max_codes", max_codes);
    if (pack_sel) {
        fpx_pack_str (&mp.pk, "sel");
        pack_sel (&mp.pk);
    }
    const void *arrays [3] = { s_xq, bulk, bulk };
    size_t sizes [3] = { DIM * sizeof (float), bulk_size, bulk_size };
    fpx_raw_reply_t reply;
    int status = fpx_raw_call (s_raw, FPX_OP_SEARCH, fpx_test_key_a, mp.buf.data, mp.buf.size,
                               1 + nbulk, arrays, sizes, &reply);
    CHECK (status == expected, "%s: status %d %s (\"%s\"), expected %s", what, status,
           fpx_error_name (status), reply.error, fpx_error_name (expected));
    if (expected)
        CHECK (reply.nframes == 2 && reply.error [0], "%s: error reply without text", what);
    fpx_raw_reply_free (&reply);
    fpx_mp_free (&mp);
    CHECK (fpx_test_fresh_ping (&s_server) == 0, "%s: server no longer answers", what);
}

static void
s_node (msgpack_packer *pk, const char *kind, int nargs, const int64_t *args)
{
    msgpack_pack_array (pk, 1 + nargs);
    fpx_pack_str (pk, kind);
    for (int i = 0; i < nargs; i++)
        msgpack_pack_int64 (pk, args [i]);
}

static void s_sel_ok (msgpack_packer *pk)
{
    msgpack_pack_array (pk, 1);
    s_node (pk, "array", 1, (int64_t []) { 4 });
}
static void s_sel_not_array (msgpack_packer *pk) { msgpack_pack_int64 (pk, 3); }
static void s_sel_empty (msgpack_packer *pk) { msgpack_pack_array (pk, 0); }
static void s_sel_deep (msgpack_packer *pk)
{
    msgpack_pack_array (pk, FPX_SELECTOR_NODES_MAX + 1);
    for (int i = 0; i < FPX_SELECTOR_NODES_MAX; i++)
        s_node (pk, "not", 0, NULL);
    s_node (pk, "all", 0, NULL);
}
static void s_sel_dangling_not (msgpack_packer *pk)
{
    msgpack_pack_array (pk, 2);
    s_node (pk, "not", 0, NULL);
    s_node (pk, "not", 0, NULL);
}
static void s_sel_trailing (msgpack_packer *pk)
{
    msgpack_pack_array (pk, 2);
    s_node (pk, "all", 0, NULL);
    s_node (pk, "all", 0, NULL);
}
static void s_sel_unknown (msgpack_packer *pk)
{
    msgpack_pack_array (pk, 1);
    s_node (pk, "xor", 0, NULL);
}
static void s_sel_huge (msgpack_packer *pk)
{
    msgpack_pack_array (pk, 1);
    s_node (pk, "batch", 1, (int64_t []) { (int64_t) 1 << 60 });
}
static void s_sel_negative (msgpack_packer *pk)
{
    msgpack_pack_array (pk, 1);
    s_node (pk, "array", 1, (int64_t []) { -1 });
}
static void s_sel_bitmap_long (msgpack_packer *pk)
{
    msgpack_pack_array (pk, 1);
    s_node (pk, "bitmap", 1, (int64_t []) { 33 });
}
static void s_sel_range_arity (msgpack_packer *pk)
{
    msgpack_pack_array (pk, 1);
    s_node (pk, "range", 2, (int64_t []) { 0, 10 });
}
static void s_sel_range_types (msgpack_packer *pk)
{
    msgpack_pack_array (pk, 1);
    s_node (pk, "range", 3, (int64_t []) { 0, 10, 1 });    //  assume_sorted not a bool
}
static void s_sel_node_not_array (msgpack_packer *pk)
{
    msgpack_pack_array (pk, 1);
    fpx_pack_str (pk, "all");
}
static void s_sel_nested (msgpack_packer *pk)
{
    msgpack_pack_array (pk, 1);
    for (int i = 0; i < 12; i++)                         //  past the reader's depth
        msgpack_pack_array (pk, 1);
    msgpack_pack_nil (pk);
}

static void
s_test_hostile (void *arg)
{
    (void) arg;
    REQUIRE (fpx_test_server_start (&s_server, NULL, NULL) == 0, "start failed");
    fpx_client_t *client = fpx_test_client (&s_server, fpx_test_key_a);
    fpx_index_info_t info;
    REQUIRE_OK (client, fpx_index_create (client, NULL, DIM, "Flat", FPX_METRIC_L2, &info));
    REQUIRE_OK (client, fpx_add (client, info.name, NB, DIM, s_xb, NULL));
    snprintf (s_name, sizeof s_name, "%s", info.name);
    //  Anonymous names belong to the connection: the raw socket makes its own.
    s_raw = fpx_raw_new (s_server.endpoint);
    REQUIRE (s_raw, "raw socket");
    fpx_mp_t mp;
    fpx_mp_init (&mp);
    msgpack_pack_map (&mp.pk, 3);
    fpx_pack_kv_int (&mp.pk, "d", DIM);
    fpx_pack_kv_str (&mp.pk, "factory", "Flat");
    fpx_pack_kv_int (&mp.pk, "metric", FPX_METRIC_L2);
    fpx_raw_reply_t reply;
    const void *xb = s_xb;
    size_t xb_size = (size_t) NB * DIM * sizeof (float);
    REQUIRE (fpx_raw_call (s_raw, FPX_OP_CREATE, fpx_test_key_a, mp.buf.data, mp.buf.size, 0,
                           NULL, NULL, &reply) == 0, "raw create");
    const char *name;
    size_t len;
    REQUIRE (fpx_params_get_str (&reply.result, "name", &name, &len) == 0 && len < sizeof s_name,
             "created name");
    memcpy (s_name, name, len);
    s_name [len] = 0;
    fpx_raw_reply_free (&reply);
    fpx_mp_free (&mp);
    fpx_mp_init (&mp);
    msgpack_pack_map (&mp.pk, 1);
    fpx_pack_kv_str (&mp.pk, "name", s_name);
    REQUIRE (fpx_raw_call (s_raw, FPX_OP_ADD, fpx_test_key_a, mp.buf.data, mp.buf.size, 1,
                           &xb, &xb_size, &reply) == 0, "raw add");
    fpx_raw_reply_free (&reply);
    fpx_mp_free (&mp);

    int64_t ids [4] = { 1, 2, 3, 4 };
    uint8_t bytes [32] = { 0 };
    s_expect (s_sel_ok, -1, 1, ids, sizeof ids, 0, "a good selector (control)");
    s_expect (s_sel_ok, 0, 1, ids, sizeof ids, FPX_EINVAL, "max_codes on a Flat");
    s_expect (s_sel_not_array, -1, 0, NULL, 0, FPX_EINVAL, "sel not an array");
    s_expect (s_sel_empty, -1, 0, NULL, 0, FPX_EINVAL, "sel of no node");
    s_expect (s_sel_deep, -1, 0, NULL, 0, FPX_EINVAL, "17 nodes");
    s_expect (s_sel_dangling_not, -1, 0, NULL, 0, FPX_EINVAL, "not without operand");
    s_expect (s_sel_trailing, -1, 0, NULL, 0, FPX_EINVAL, "nodes after the last");
    s_expect (s_sel_unknown, -1, 0, NULL, 0, FPX_EINVAL, "unknown kind");
    s_expect (s_sel_huge, -1, 1, ids, sizeof ids, FPX_EINVAL, "2^60 ids in 32 bytes");
    s_expect (s_sel_negative, -1, 1, ids, sizeof ids, FPX_EINVAL, "-1 ids");
    s_expect (s_sel_bitmap_long, -1, 1, bytes, sizeof bytes, FPX_EINVAL, "bitmap past its frame");
    int64_t five [5] = { 1, 2, 3, 4, 5 };
    s_expect (s_sel_ok, -1, 1, five, sizeof five, FPX_EINVAL, "frame longer than the selector");
    s_expect (s_sel_ok, -1, 0, NULL, 0, FPX_EINVAL, "ids without a frame");
    s_expect (NULL, -1, 1, ids, sizeof ids, FPX_EPROTO, "a selector frame without sel");
    s_expect (s_sel_ok, -1, 2, ids, sizeof ids, FPX_EPROTO, "two selector frames");
    s_expect (s_sel_range_arity, -1, 0, NULL, 0, FPX_EINVAL, "range of 2 arguments");
    s_expect (s_sel_range_types, -1, 0, NULL, 0, FPX_EINVAL, "range with an int for a bool");
    s_expect (s_sel_node_not_array, -1, 0, NULL, 0, FPX_EINVAL, "a node that is a string");
    s_expect (s_sel_nested, -1, 0, NULL, 0, FPX_EPROTO, "arrays nested past the reader's depth");
    s_expect (NULL, -5, 0, NULL, 0, FPX_EINVAL, "negative max_codes");
    //  The client library bounds the chain before sending.
    fpx_selector_t *chain = fpx_selector_all_new ();
    for (int i = 0; i < FPX_SELECTOR_NODES_MAX; i++)
        chain = fpx_selector_not_new (&chain);
    REQUIRE (chain, "chain");
    fpx_selection_t selection = { chain, 0 };
    float D [K];
    int64_t I [K];
    CHECK_RC (client, fpx_search_select (client, info.name, 1, DIM, s_xq, K, NULL, &selection, D, I),
              FPX_EINVAL);
    fpx_selector_destroy (&chain);
    CHECK (fpx_selector_not_new (NULL) == NULL && fpx_selector_not_new (&chain) == NULL,
           "not of nothing");
    fpx_raw_destroy (&s_raw);
    fpx_client_destroy (&client);
    CHECK (fpx_test_server_stop (&s_server, 10) == 0, "server exit");
}

int
main (void)
{
    s_xt = fpx_data_clustered (1, NT, DIM, 20, 0.1f);
    s_xb = fpx_data_clustered (2, NB, DIM, 20, 0.1f);
    s_xq = fpx_data_clustered (3, NQ, DIM, 20, 0.1f);
    fpx_rng_t rng;
    fpx_rng_seed (&rng, 7);
    size_t count = sizeof s_subset / sizeof s_subset [0];
    for (size_t n = 0; n < count; n++)
        s_subset [n] = -1;
    for (size_t n = 0; n < count; ) {
        int64_t id = (int64_t) (fpx_rng_next (&rng) % NB);
        if (!s_in_subset (id))
            s_subset [n++] = id;
    }
    fpx_test_local_single_thread ();
    static const s_case_t cases [] = {
        { "Flat", FPX_METRIC_L2 }, { "Flat", FPX_METRIC_INNER_PRODUCT },
        { "IVF16,Flat", FPX_METRIC_L2 }, { "IVF16,SQ8", FPX_METRIC_L2 },
        { "IVF16,PQ4x4np", FPX_METRIC_L2 }, { "PCA8,IVF16,Flat", FPX_METRIC_L2 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases [0]; i++) {
        char name [80];
        snprintf (name, sizeof name, "select.%s.%s", cases [i].factory,
                  cases [i].metric == FPX_METRIC_L2 ? "l2" : "ip");
        fpx_test_run (name, s_test_selectors, (void *) &cases [i]);
    }
    fpx_test_run ("select.max_codes", s_test_max_codes, NULL);
    fpx_test_run ("select.refusals", s_test_refusals, NULL);
    fpx_test_run ("select.hostile", s_test_hostile, NULL);
    free (s_xt);
    free (s_xb);
    free (s_xq);
    return fpx_test_finish ();
}
