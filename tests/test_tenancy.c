/*  test_tenancy.c — tenants and connections never see each other's
    indexes.

    Two tenants (alice, bob) with their own keys. For every opcode that
    takes an index name, bob on alice's name is FPX_ENOTFOUND while bob has
    no such index, and leaves alice's index untouched; once both have one of
    that name, each sees only its own (ntotal, search results, vectors, as
    FAISS in-process on each tenant's data). Lists show own names only.
    Anonymous indexes belong to one connection: another connection of the
    same tenant cannot reach them, and closing the connection frees them —
    checked through the protocol (unreachable from anywhere) and through the
    server's VmRSS over many connect/create/disconnect cycles.
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fpx_test.h"

#define DIM   16
#define NA    500
#define NB    300
#define NQ    20
#define K     5

static fpx_test_server_t s_server;
static fpx_client_t *s_a1, *s_a2, *s_b1;
static float *s_xa, *s_xb, *s_xq;
static FaissIndex *s_local_a, *s_local_b;

/* ---- helpers ------------------------------------------------------------------ */

//  The info opcode (not in the C client): tenant name and named-index count.
static int
s_info (const char *key, char *tenant, size_t tenant_size, int64_t *indexes)
{
    fpx_raw_t *raw = fpx_raw_new (s_server.endpoint);
    if (!raw)
        return -1000;
    fpx_raw_reply_t reply;
    int status = fpx_raw_call (raw, FPX_OP_INFO, key, NULL, 0, 0, NULL, NULL, &reply);
    if (status == 0) {
        if (fpx_params_copy_str (&reply.result, "tenant", tenant, tenant_size) != 0)
            tenant [0] = 0;
        if (fpx_params_get_int (&reply.result, "indexes", indexes) != 0)
            *indexes = -1;
    }
    fpx_raw_reply_free (&reply);
    fpx_raw_destroy (&raw);
    return status;
}

static bool
s_listed (fpx_client_t *client, const char *name)
{
    char **names = NULL;
    size_t count = 0;
    bool found = false;
    if (fpx_index_list (client, &names, &count) >= 0) {
        for (size_t i = 0; i < count; i++)
            if (strcmp (names [i], name) == 0)
                found = true;
        fpx_strlist_free (&names, count);
    }
    return found;
}

static void
s_compare_search (fpx_client_t *client, const char *name, const FaissIndex *local, const char *what)
{
    fpx_knn_t ref, got;
    char why [256];
    if (!CHECK (fpx_local_knn (local, NQ, s_xq, K, 20, &ref) == 0, "%s: local search", what))
        return;
    if (CHECK_OK (client, fpx_remote_knn (client, name, NQ, DIM, s_xq, K, NULL, &got)))
        CHECK (fpx_knn_equal (&ref, &got, why, sizeof why), "%s: not this tenant's results: %s", what, why);
    fpx_knn_free (&ref);
    fpx_knn_free (&got);
}

static int64_t
s_ntotal (fpx_client_t *client, const char *name)
{
    fpx_index_info_t info;
    int rc = fpx_index_describe (client, name, 0, &info);
    return rc < 0 ? rc : info.ntotal;
}

//  A raw request {name} with tenant key's key, through a fresh connection
//  (for opcodes the C client no longer sends: one-message serialize).
static int
s_raw_named (const char *key, int opcode, const char *name)
{
    fpx_raw_t *raw = fpx_raw_new (s_server.endpoint);
    if (!raw)
        return -1000;
    fpx_mp_t mp;
    fpx_mp_init (&mp);
    msgpack_pack_map (&mp.pk, 1);
    fpx_pack_kv_str (&mp.pk, "name", name);
    fpx_raw_reply_t reply;
    int status = fpx_raw_call (raw, opcode, key, mp.buf.data, mp.buf.size, 0, NULL, NULL, &reply);
    fpx_raw_reply_free (&reply);
    fpx_mp_free (&mp);
    fpx_raw_destroy (&raw);
    return status;
}

/*  Opcodes that take no index name of the caller's, each with where its
    isolation is tested instead; every other opcode of FPX_OPCODES must
    be tried by s_every_opcode, or the test fails (a new opcode that takes
    a name is tried here, or the test says why not).                     */
static bool
s_nameless (int opcode)
{
    switch (opcode) {
        case FPX_OP_PING: case FPX_OP_INFO: case FPX_OP_LIST:   //  test_setup_*, s_listed
        case FPX_OP_CREATE: case FPX_OP_DESERIALIZE:            //  names a new index
        case FPX_OP_UPLOAD_BEGIN: case FPX_OP_UPLOAD_CHUNK:     //  transfer ids: test_transfers
        case FPX_OP_UPLOAD_COMMIT: case FPX_OP_DOWNLOAD_CHUNK:
        case FPX_OP_TRANSFER_ABORT:
        case FPX_OP_KMEANS:                                     //  vectors only
        case FPX_OP_CONSTRUCT:                                  //  refs: after the loop
            return true;
    }
    return false;
}

/*  Every opcode that takes an index name, on `name`, from `client`; each
    must answer `expected` (FPX_ENOTFOUND here). Opcodes that would modify
    the index are included: they must not reach another tenant's index.
    Which opcodes there are comes from FPX_OPCODES: one that is neither
    tried nor in s_nameless fails the test.                              */
static void
s_every_opcode (fpx_client_t *client, const char *name, int expected, const char *who)
{
    fpx_index_info_t info;
    float D [NQ * K], x [4 * DIM];
    int64_t I [NQ * K], ids [2] = { 0, 1 }, n = -1;
    fpx_range_result_t *range = NULL;
    uint8_t *bytes = NULL;
    size_t size = 0;
    bool tried [FPX_OP_LAST_] = { false };
    //  One call after the other, in this order (drop last).
#define S_OP(opcode, text, call)                                             \
    do {                                                                     \
        int rc_ = (call);                                                    \
        tried [opcode] = true;                                               \
        CHECK (rc_ == expected, "%s %s on \"%s\": %d %s, expected %s", who, text, \
               name, rc_, fpx_error_name (rc_), fpx_error_name (expected));  \
    } while (0)
    S_OP (FPX_OP_OPEN, "open", fpx_index_open (client, name, &info));
    S_OP (FPX_OP_DESCRIBE, "describe", fpx_index_describe (client, name, 0, &info));
    S_OP (FPX_OP_DESCRIBE, "describe memory", fpx_index_describe (client, name, 1, &info));
    S_OP (FPX_OP_TRAIN, "train", fpx_train (client, name, 2, DIM, s_xa));
    S_OP (FPX_OP_ADD, "add", fpx_add (client, name, 2, DIM, s_xa, &n));
    S_OP (FPX_OP_ADD_WITH_IDS, "add_with_ids", fpx_add_with_ids (client, name, 2, DIM, s_xa, ids, &n));
    S_OP (FPX_OP_SEARCH, "search", fpx_search (client, name, NQ, DIM, s_xq, K, NULL, D, I));
    S_OP (FPX_OP_SEARCH_AND_RECONSTRUCT, "search_and_reconstruct",
          fpx_search_and_reconstruct (client, name, 1, DIM, s_xq, 2, NULL, D, I, x));
    S_OP (FPX_OP_RANGE_SEARCH, "range_search",
          fpx_range_search (client, name, NQ, DIM, s_xq, 100.0f, NULL, &range));
    fpx_range_result_destroy (&range);
    S_OP (FPX_OP_REMOVE_IDS, "remove_ids", fpx_remove_ids (client, name, 2, ids, &n));
    S_OP (FPX_OP_REMOVE_IDS, "remove_range", fpx_remove_range (client, name, 0, 10, &n));
    S_OP (FPX_OP_RECONSTRUCT, "reconstruct", fpx_reconstruct (client, name, 0, DIM, x));
    S_OP (FPX_OP_RECONSTRUCT_N, "reconstruct_n", fpx_reconstruct_n (client, name, 0, 4, DIM, x));
    S_OP (FPX_OP_SET_PARAMETERS, "set_parameters", fpx_set_parameters (client, name, "nprobe=2"));
    S_OP (FPX_OP_DOWNLOAD_BEGIN, "serialize", fpx_serialize (client, name, &bytes, &size));
    fpx_free (bytes);
    S_OP (FPX_OP_SERIALIZE, "serialize (one message)",
          s_raw_named (client == s_b1 ? fpx_test_key_b : fpx_test_key_a, FPX_OP_SERIALIZE, name));
    S_OP (FPX_OP_RESET, "reset", fpx_reset (client, name));
    //  The object-model opcodes that take an index name.
    fpx_index_info_t view;
    double value = 0;
    float y [DIM];
    int64_t *idmap = NULL;
    size_t idmap_n = 0;
    S_OP (FPX_OP_SAVE, "save", fpx_index_save (client, name));
    S_OP (FPX_OP_SUBOBJECT, "subobject", fpx_subobject (client, name, "quantizer", &view));
    S_OP (FPX_OP_GET_ATTR, "get_attr", fpx_get_attr (client, name, "ntotal", &value));
    S_OP (FPX_OP_SET_ATTR, "set_attr", fpx_set_attr (client, name, "nprobe", 2));
    S_OP (FPX_OP_CLONE, "clone", fpx_clone (client, name, &view));
    S_OP (FPX_OP_APPLY, "apply", fpx_apply (client, name, 0, 1, DIM, s_xa, DIM, y));
    S_OP (FPX_OP_SET_DIRECT_MAP, "set_direct_map", fpx_set_direct_map (client, name, 1));
    S_OP (FPX_OP_GET_ID_MAP, "get_id_map", fpx_get_id_map (client, name, &idmap, &idmap_n));
    fpx_free (idmap);
    S_OP (FPX_OP_ATTACH, "attach", fpx_attach (client, name, "shard", name, &view));
    S_OP (FPX_OP_DROP, "drop", fpx_index_drop (client, name));
#undef S_OP
    for (int op = 1; op < FPX_OP_LAST_; op++)
        if (fpx_opcode_info (op))
            CHECK (tried [op] || s_nameless (op), "opcode %s (%d) takes an index name but "
                   "s_every_opcode does not try it", fpx_opcode_name (op), op);
    //  construct: a reference to the name answers as one to a name that
    //  never existed (indistinguishable from missing).
    const char *refs [] = { name }, *missing [] = { "never_existed_anywhere" };
    int rc_name = fpx_construct (client, "IndexIDMap", 0, NULL, 1, refs, &view);
    int rc_missing = fpx_construct (client, "IndexIDMap", 0, NULL, 1, missing, &view);
    CHECK (rc_name < 0 && rc_name == rc_missing, "%s construct referencing \"%s\": %d %s, "
           "while a missing reference gives %d %s", who, name, rc_name, fpx_error_name (rc_name),
           rc_missing, fpx_error_name (rc_missing));
}

/* ---- tests -------------------------------------------------------------------- */

static void
test_setup_alice (void *arg)
{
    (void) arg;
    REQUIRE_OK (s_a1, fpx_index_create (s_a1, "shared", DIM, "Flat", FPX_METRIC_L2, NULL));
    int64_t ntotal = 0;
    REQUIRE_OK (s_a1, fpx_add (s_a1, "shared", NA, DIM, s_xa, &ntotal));
    CHECK_EQ (ntotal, NA);
    CHECK_EQ (faiss_Index_add (s_local_a, NA, s_xa), 0);
    s_compare_search (s_a1, "shared", s_local_a, "alice's index");
    //  The same tenant on another connection sees a named index.
    CHECK_EQ (s_ntotal (s_a2, "shared"), NA);
    s_compare_search (s_a2, "shared", s_local_a, "alice's index from her second connection");
}

static void
test_other_tenant_not_found (void *arg)
{
    (void) arg;
    s_every_opcode (s_b1, "shared", FPX_ENOTFOUND, "bob");
    //  Names bob never had are just as absent.
    fpx_index_info_t info;
    CHECK_RC (s_b1, fpx_index_open (s_b1, "never_created", &info), FPX_ENOTFOUND);
    //  Alice's index is intact after all of bob's attempts.
    CHECK_EQ (s_ntotal (s_a1, "shared"), NA);
    s_compare_search (s_a1, "shared", s_local_a, "alice's index after bob's calls");
    CHECK (s_listed (s_a1, "shared"), "alice does not list \"shared\"");
    CHECK (!s_listed (s_b1, "shared"), "bob lists alice's \"shared\"");
    //  info: each key maps to its own tenant and counts its own indexes.
    char tenant [64];
    int64_t indexes = -1;
    if (CHECK_EQ (s_info (fpx_test_key_b, tenant, sizeof tenant, &indexes), 0)) {
        CHECK_STR (tenant, FPX_TEST_TENANT_B);
        CHECK_EQ (indexes, 0);
    }
    if (CHECK_EQ (s_info (fpx_test_key_a, tenant, sizeof tenant, &indexes), 0)) {
        CHECK_STR (tenant, FPX_TEST_TENANT_A);
        CHECK_EQ (indexes, 1);
    }
}

static void
test_same_name_both (void *arg)
{
    (void) arg;
    //  Bob may create the name alice uses: it is his own.
    fpx_index_info_t info;
    REQUIRE_OK (s_b1, fpx_index_create (s_b1, "shared", DIM, "Flat", FPX_METRIC_L2, &info));
    CHECK_EQ (info.ntotal, 0);
    int64_t ntotal = 0;
    REQUIRE_OK (s_b1, fpx_add (s_b1, "shared", NB, DIM, s_xb, &ntotal));
    CHECK_EQ (ntotal, NB);
    CHECK_EQ (faiss_Index_add (s_local_b, NB, s_xb), 0);

    CHECK_EQ (s_ntotal (s_a1, "shared"), NA);
    CHECK_EQ (s_ntotal (s_b1, "shared"), NB);
    s_compare_search (s_a1, "shared", s_local_a, "alice's shared");
    s_compare_search (s_b1, "shared", s_local_b, "bob's shared");

    //  Range search: each its own.
    fpx_range_t ref_a, ref_b;
    fpx_range_result_t *got = NULL;
    char why [256];
    if (CHECK_EQ (fpx_local_range (s_local_a, NQ, s_xq, 0.6f, &ref_a), 0)) {
        if (CHECK_OK (s_a1, fpx_range_search (s_a1, "shared", NQ, DIM, s_xq, 0.6f, NULL, &got)))
            CHECK (fpx_range_equal (&ref_a, got, 0.6f, why, sizeof why), "alice range: %s", why);
        fpx_range_result_destroy (&got);
        fpx_range_free (&ref_a);
    }
    if (CHECK_EQ (fpx_local_range (s_local_b, NQ, s_xq, 0.6f, &ref_b), 0)) {
        if (CHECK_OK (s_b1, fpx_range_search (s_b1, "shared", NQ, DIM, s_xq, 0.6f, NULL, &got)))
            CHECK (fpx_range_equal (&ref_b, got, 0.6f, why, sizeof why), "bob range: %s", why);
        fpx_range_result_destroy (&got);
        fpx_range_free (&ref_b);
    }

    //  Stored vectors: each its own.
    float v [DIM], vn [3 * DIM];
    if (CHECK_OK (s_a1, fpx_reconstruct (s_a1, "shared", 0, DIM, v)))
        CHECK (memcmp (v, s_xa, sizeof v) == 0, "alice's vector 0 is not hers");
    if (CHECK_OK (s_b1, fpx_reconstruct (s_b1, "shared", 0, DIM, v)))
        CHECK (memcmp (v, s_xb, sizeof v) == 0, "bob's vector 0 is not his");
    if (CHECK_OK (s_b1, fpx_reconstruct_n (s_b1, "shared", 10, 3, DIM, vn)))
        CHECK (memcmp (vn, s_xb + 10 * DIM, sizeof vn) == 0, "bob's vectors 10..12 are not his");
    //  Reconstructing past bob's size but within alice's is out of range for bob.
    CHECK_RC (s_b1, fpx_reconstruct (s_b1, "shared", NB + 10, DIM, v), FPX_EINVAL);
    CHECK_OK (s_a1, fpx_reconstruct (s_a1, "shared", NB + 10, DIM, v));

    //  Serialized bytes: each its own.
    uint8_t *bytes = NULL;
    size_t size = 0;
    if (CHECK_OK (s_b1, fpx_serialize (s_b1, "shared", &bytes, &size))) {
        FaissIndex *copy = fpx_local_deserialize (bytes, size);
        if (CHECK (copy, "bob's bytes do not load"))
            CHECK_EQ (faiss_Index_ntotal (copy), NB);
        faiss_Index_free (copy);
        fpx_free (bytes);
    }

    //  Changes by bob stay in bob's index.
    CHECK_OK (s_b1, fpx_add (s_b1, "shared", 10, DIM, s_xa, &ntotal));
    CHECK_EQ (ntotal, NB + 10);
    CHECK_EQ (s_ntotal (s_a1, "shared"), NA);
    int64_t removed = -1;
    CHECK_OK (s_b1, fpx_remove_range (s_b1, "shared", 0, 100, &removed));
    CHECK_EQ (removed, 100);
    CHECK_EQ (s_ntotal (s_b1, "shared"), NB + 10 - 100);
    CHECK_EQ (s_ntotal (s_a1, "shared"), NA);
    CHECK_OK (s_b1, fpx_reset (s_b1, "shared"));
    CHECK_EQ (s_ntotal (s_b1, "shared"), 0);
    CHECK_EQ (s_ntotal (s_a1, "shared"), NA);
    s_compare_search (s_a1, "shared", s_local_a, "alice's shared after bob's changes");

    //  Bob's drop removes only bob's.
    CHECK_OK (s_b1, fpx_index_drop (s_b1, "shared"));
    CHECK_RC (s_b1, fpx_index_open (s_b1, "shared", &info), FPX_ENOTFOUND);
    CHECK_EQ (s_ntotal (s_a1, "shared"), NA);

    //  Bob uploads under the same name: his again, alice's unchanged.
    size_t local_size = 0;
    uint8_t *local_bytes = fpx_local_serialize (s_local_b, &local_size);
    if (CHECK (local_bytes, "local serialize")) {
        if (CHECK_OK (s_b1, fpx_deserialize (s_b1, "shared", NULL, local_bytes, local_size, &info)))
            CHECK_EQ (info.ntotal, NB);
        s_compare_search (s_b1, "shared", s_local_b, "bob's uploaded shared");
        s_compare_search (s_a1, "shared", s_local_a, "alice's shared after bob's upload");
        CHECK_OK (s_b1, fpx_index_drop (s_b1, "shared"));
        free (local_bytes);
    }
    //  And a name alice creates after bob has it is hers (no EEXIST).
    CHECK_OK (s_b1, fpx_index_create (s_b1, "bob_first", DIM, "Flat", FPX_METRIC_L2, NULL));
    CHECK_OK (s_a1, fpx_index_create (s_a1, "bob_first", DIM, "Flat", FPX_METRIC_L2, NULL));
    CHECK_RC (s_a2, fpx_index_create (s_a2, "bob_first", DIM, "Flat", FPX_METRIC_L2, NULL), FPX_EEXIST);
    CHECK_OK (s_a1, fpx_index_drop (s_a1, "bob_first"));
    CHECK (s_listed (s_b1, "bob_first"), "bob's index went with alice's drop");
    CHECK_OK (s_b1, fpx_index_drop (s_b1, "bob_first"));
}

static void
test_list_isolation (void *arg)
{
    (void) arg;
    const char *a_names [] = { "a_one", "a_two" };
    for (int i = 0; i < 2; i++)
        CHECK_OK (s_a1, fpx_index_create (s_a1, a_names [i], DIM, "Flat", FPX_METRIC_L2, NULL));
    CHECK_OK (s_b1, fpx_index_create (s_b1, "b_one", DIM, "Flat", FPX_METRIC_L2, NULL));
    fpx_index_info_t anon;
    CHECK_OK (s_b1, fpx_index_create (s_b1, NULL, DIM, "Flat", FPX_METRIC_L2, &anon));

    char **names = NULL;
    size_t count = 0;
    if (CHECK_OK (s_b1, fpx_index_list (s_b1, &names, &count))) {
        CHECK_EQ (count, 1);
        if (count == 1)
            CHECK_STR (names [0], "b_one");
        fpx_strlist_free (&names, count);
    }
    if (CHECK_OK (s_a2, fpx_index_list (s_a2, &names, &count))) {
        CHECK_EQ (count, 3);
        const char *expected [] = { "a_one", "a_two", "shared" };
        for (size_t i = 0; i < count && i < 3; i++)
            CHECK_STR (names [i], expected [i]);
        fpx_strlist_free (&names, count);
    }
    char tenant [64];
    int64_t indexes = -1;
    if (CHECK_EQ (s_info (fpx_test_key_b, tenant, sizeof tenant, &indexes), 0))
        CHECK_EQ (indexes, 1);
    if (CHECK_EQ (s_info (fpx_test_key_a, tenant, sizeof tenant, &indexes), 0))
        CHECK_EQ (indexes, 3);
    for (int i = 0; i < 2; i++)
        CHECK_OK (s_a1, fpx_index_drop (s_a1, a_names [i]));
    CHECK_OK (s_b1, fpx_index_drop (s_b1, "b_one"));
    CHECK_OK (s_b1, fpx_index_drop (s_b1, anon.name));
}

static void
test_anonymous_per_connection (void *arg)
{
    (void) arg;
    fpx_index_info_t info;
    REQUIRE_OK (s_a1, fpx_index_create (s_a1, NULL, DIM, "Flat", FPX_METRIC_L2, &info));
    char anon [FPX_INDEX_NAME_MAX + 1];
    snprintf (anon, sizeof anon, "%s", info.name);
    CHECK (anon [0] == '@', "anonymous name \"%s\"", anon);
    CHECK_OK (s_a1, fpx_add (s_a1, anon, 100, DIM, s_xa, NULL));

    //  The same tenant on another connection, and the other tenant: every
    //  opcode is FPX_ENOTFOUND.
    s_every_opcode (s_a2, anon, FPX_ENOTFOUND, "alice's second connection");
    s_every_opcode (s_b1, anon, FPX_ENOTFOUND, "bob");
    //  Nor can a user name an index "@…".
    CHECK_RC (s_a2, fpx_index_create (s_a2, anon, DIM, "Flat", FPX_METRIC_L2, NULL), FPX_EINVAL);

    //  The owner still has it, untouched.
    CHECK_EQ (s_ntotal (s_a1, anon), 100);
    float v [DIM];
    if (CHECK_OK (s_a1, fpx_reconstruct (s_a1, anon, 99, DIM, v)))
        CHECK (memcmp (v, s_xa + 99 * DIM, sizeof v) == 0, "anonymous vector changed");
    CHECK (!s_listed (s_a1, anon), "anonymous index listed");

    //  Another connection's anonymous index is just as private.
    fpx_index_info_t other;
    if (CHECK_OK (s_a2, fpx_index_create (s_a2, NULL, DIM, "Flat", FPX_METRIC_L2, &other))) {
        CHECK (strcmp (other.name, anon) != 0, "two connections got the same anonymous name");
        CHECK_RC (s_a1, fpx_index_describe (s_a1, other.name, 0, &info), FPX_ENOTFOUND);
        CHECK_OK (s_a2, fpx_index_drop (s_a2, other.name));
    }
    CHECK_OK (s_a1, fpx_index_drop (s_a1, anon));
}

static void
test_anonymous_gone_after_disconnect (void *arg)
{
    (void) arg;
    fpx_client_t *c = fpx_test_client (&s_server, fpx_test_key_a);
    REQUIRE (c, "fpx_client_new");
    fpx_index_info_t info;
    char names [3][FPX_INDEX_NAME_MAX + 1];
    size_t size = 0;
    uint8_t *bytes = fpx_local_serialize (s_local_a, &size);
    bool ok = CHECK_OK (c, fpx_index_create (c, NULL, DIM, "Flat", FPX_METRIC_L2, &info));
    snprintf (names [0], sizeof names [0], "%s", ok ? info.name : "@none");
    ok = CHECK_OK (c, fpx_index_create (c, NULL, DIM, "HNSW16", FPX_METRIC_L2, &info));
    snprintf (names [1], sizeof names [1], "%s", ok ? info.name : "@none");
    ok = bytes && CHECK_OK (c, fpx_deserialize (c, NULL, NULL, bytes, size, &info));
    snprintf (names [2], sizeof names [2], "%s", ok ? info.name : "@none");
    free (bytes);
    for (int i = 0; i < 3; i++)
        CHECK_OK (c, fpx_index_describe (c, names [i], 0, &info));
    fpx_client_destroy (&c);
    CHECK (c == NULL, "fpx_client_destroy did not clear the pointer");

    //  From a fresh connection and the remaining ones: not there.
    fpx_client_t *fresh = fpx_test_client (&s_server, fpx_test_key_a);
    REQUIRE (fresh, "fpx_client_new");
    for (int i = 0; i < 3; i++) {
        CHECK_RC (fresh, fpx_index_describe (fresh, names [i], 0, &info), FPX_ENOTFOUND);
        CHECK_RC (s_a1, fpx_index_describe (s_a1, names [i], 0, &info), FPX_ENOTFOUND);
        CHECK_RC (fresh, fpx_index_drop (fresh, names [i]), FPX_ENOTFOUND);
    }
    //  Named indexes survive their creator's disconnect.
    fpx_client_t *creator = fpx_test_client (&s_server, fpx_test_key_a);
    if (CHECK (creator, "fpx_client_new")) {
        CHECK_OK (creator, fpx_index_create (creator, "survivor", DIM, "Flat", FPX_METRIC_L2, NULL));
        CHECK_OK (creator, fpx_add (creator, "survivor", 7, DIM, s_xa, NULL));
        fpx_client_destroy (&creator);
        CHECK_EQ (s_ntotal (fresh, "survivor"), 7);
        CHECK_OK (fresh, fpx_index_drop (fresh, "survivor"));
    }
    fpx_client_destroy (&fresh);
}

//  Many connections, each creating big anonymous indexes and leaving: the
//  server's memory must come back. Runs against its own server so that the
//  measurement sees nothing else; under ASan with the quarantine off (it
//  would otherwise hold freed memory by design).
static void
test_anonymous_memory_reclaimed (void *arg)
{
    (void) arg;
    fpx_test_server_t server;
    const char *env [] = { "ASAN_OPTIONS=quarantine_size_mb=0:detect_leaks=1", NULL };
    REQUIRE (fpx_test_server_start (&server, NULL, env) == 0, "second faissproxyd did not start");
    fpx_test_watch (&server);
    const int d = 64, n = 40000;                      //  10 MB per index
    const long index_kb = (long) d * n * 4 / 1024;
    float *x = fpx_data_uniform (77, n, d);
    FaissIndex *local = NULL;
    faiss_index_factory (&local, d, "Flat", METRIC_L2);
    faiss_Index_add (local, n, x);
    size_t size = 0;
    uint8_t *bytes = fpx_local_serialize (local, &size);
    faiss_Index_free (local);

    const int warmup = 3, cycles = fpx_test_asan () ? 12 : 24;
    long baseline = -1, peak = 0;
    int failures = 0;
    for (int cycle = 0; cycle < warmup + cycles; cycle++) {
        fpx_client_t *c = fpx_test_client (&server, fpx_test_key_a);
        if (!c) {
            failures++;
            break;
        }
        fpx_index_info_t info;
        int rc;
        if (cycle % 2 == 0) {
            rc = fpx_index_create (c, NULL, d, "Flat", FPX_METRIC_L2, &info);
            if (rc >= 0)
                rc = fpx_add (c, info.name, n, d, x, NULL);
        }
        else
            rc = fpx_deserialize (c, NULL, NULL, bytes, size, &info);
        if (rc < 0 && failures++ == 0)
            FAIL ("cycle %d: %s (%s)", cycle, fpx_error_name (rc), fpx_client_errmsg (c));
        fpx_client_destroy (&c);
        long rss = fpx_test_server_rss_kb (&server);
        if (rss > peak)
            peak = rss;
        if (cycle == warmup - 1) {
            //  Let the warm-up connections be reaped before measuring.
            fpx_sleep_ms (500);
            baseline = fpx_test_server_rss_kb (&server);
        }
    }
    CHECK (failures == 0, "%d cycles failed", failures);
    REQUIRE (baseline > 0, "cannot read VmRSS of pid %d", (int) server.pid);
    //  Without reaping, RSS would grow by cycles × index_kb. Allow a few
    //  indexes' worth of slack (allocator caches, a reap still under way),
    //  waiting up to 20 s for the last connections to be reaped.
    long limit = baseline + 4 * index_kb;
    long rss = fpx_test_server_rss_kb (&server);
    double deadline = fpx_now () + 20;
    while (rss > limit && fpx_now () < deadline) {
        fpx_sleep_ms (250);
        rss = fpx_test_server_rss_kb (&server);
    }
    CHECK (rss <= limit, "VmRSS %ld KiB after %d anonymous indexes of %ld KiB on closed connections "
           "(baseline %ld KiB, peak %ld KiB, limit %ld KiB)", rss, cycles, index_kb, baseline, peak, limit);
    //  And the server is fine.
    fpx_client_t *c = fpx_test_client (&server, fpx_test_key_a);
    CHECK_OK (c, fpx_ping (c, NULL));
    fpx_client_destroy (&c);
    fpx_test_watch (&s_server);
    int status = fpx_test_server_stop (&server, 30);
    CHECK (status == 0, "second faissproxyd exit status %d after SIGTERM (%s)", status, server.diagnosis);
    free (bytes);
    free (x);
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
    s_xa = fpx_data_uniform (10, NA, DIM);
    s_xb = fpx_data_uniform (20, NB, DIM);
    s_xq = fpx_data_uniform (30, NQ, DIM);
    faiss_index_factory (&s_local_a, DIM, "Flat", METRIC_L2);
    faiss_index_factory (&s_local_b, DIM, "Flat", METRIC_L2);

    fpx_test_watch (&s_server);
    if (fpx_test_server_start (&s_server, NULL, NULL) == 0) {
        s_a1 = fpx_test_client (&s_server, fpx_test_key_a);
        s_a2 = fpx_test_client (&s_server, fpx_test_key_a);
        s_b1 = fpx_test_client (&s_server, fpx_test_key_b);
        if (s_a1 && s_a2 && s_b1) {
            fpx_test_run ("tenancy.setup_alice", test_setup_alice, NULL);
            fpx_test_run ("tenancy.other_tenant_not_found", test_other_tenant_not_found, NULL);
            fpx_test_run ("tenancy.same_name_both_tenants", test_same_name_both, NULL);
            fpx_test_run ("tenancy.list_isolation", test_list_isolation, NULL);
            fpx_test_run ("tenancy.anonymous_per_connection", test_anonymous_per_connection, NULL);
            fpx_test_run ("tenancy.anonymous_gone_after_disconnect", test_anonymous_gone_after_disconnect, NULL);
            fpx_test_run ("tenancy.anonymous_memory_reclaimed", test_anonymous_memory_reclaimed, NULL);
        }
        else
            fpx_test_fail_whole ("tenancy.clients", "fpx_client_new returned NULL");
        fpx_client_destroy (&s_a1);
        fpx_client_destroy (&s_a2);
        fpx_client_destroy (&s_b1);
        fpx_test_run ("tenancy.server_exit", test_server_exit, NULL);
    }
    else
        fpx_test_fail_whole ("tenancy.server_start", "faissproxyd did not start");
    faiss_Index_free (s_local_a);
    faiss_Index_free (s_local_b);
    free (s_xa);
    free (s_xb);
    free (s_xq);
    return fpx_test_finish ();
}
