/*  test_badinput.c — hostile and broken requests.

    One faissproxyd started with --max-message-mb 1. Every bad request must
    get an error reply (a version-1 reply header with the status code that
    docs/PROTOCOL.md gives, a result frame {"error": text} with a readable
    text, and no array frames), after which a ping succeeds both on the same
    connection and on a fresh one. Malformed messages are built by hand on a
    raw ZeroMQ DEALER socket; the rest goes through the C client. At the end
    the server must still be alive and exit 0 on SIGTERM.
*/
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fpx_test.h"

#define DIM 32
#define NFLAT 100

static fpx_test_server_t s_server;
static fpx_raw_t *s_raw;            //  "the same connection" for raw requests
static fpx_client_t *s_client;      //  "the same connection" for client calls
static float *s_x;                  //  1000 vectors of DIM

/* ---- helpers --------------------------------------------------------------------- */

//  A ping on the raw socket and one on a fresh connection must succeed.
static void
s_still_serving (const char *after)
{
    fpx_raw_reply_t reply;
    int status = fpx_raw_call (s_raw, FPX_OP_PING, fpx_test_key_a, NULL, 0, 0, NULL, NULL, &reply);
    CHECK (status == 0, "after %s: ping on the same connection: %d %s", after, status,
           fpx_error_name (status));
    fpx_raw_reply_free (&reply);
    int rc = fpx_test_fresh_ping (&s_server);
    CHECK (rc == 0, "after %s: ping on a fresh connection: %d %s", after, rc, fpx_error_name (rc));
}

//  Checks an error reply's shape: decodable v1 header with the status,
//  a {"error": text} result, no arrays.
static bool
s_check_error_reply (const fpx_raw_reply_t *reply, int status, int expected, const char *what)
{
    if (!CHECK (reply->nframes >= 1 && reply->header_rc == 0,
                "%s: no decodable reply header (%d frames, decode %d)", what, reply->nframes,
                reply->header_rc))
        return false;
    bool ok = CHECK (status == expected, "%s: status %d %s (\"%s\"), expected %s", what, status,
                     fpx_error_name (status), reply->error, fpx_error_name (expected));
    CHECK (reply->header.version == FPX_PROTOCOL_VERSION, "%s: reply version %d", what,
           reply->header.version);
    if (expected != 0) {
        CHECK (reply->nframes == 2, "%s: error reply has %d frames, expected 2", what, reply->nframes);
        CHECK (reply->params_rc == 0 && reply->error [0],
               "%s: error reply without an \"error\" text", what);
    }
    return ok;
}

//  A well-formed header with raw params and arrays; expects `expected`.
static void
s_expect (int opcode, const char *key, const void *params, size_t params_size, int narrays,
          const void *const *arrays, const size_t *sizes, int expected, const char *what)
{
    fpx_raw_reply_t reply;
    int status = fpx_raw_call (s_raw, opcode, key, params, params_size, narrays, arrays, sizes, &reply);
    s_check_error_reply (&reply, status, expected, what);
    fpx_raw_reply_free (&reply);
    s_still_serving (what);
}

//  Arbitrary frames; the reply is the next message on the socket.
static void
s_expect_frames (int nframes, const void *const *data, const size_t *sizes, int expected,
                 const char *what, fpx_raw_reply_t *reply_out)
{
    fpx_raw_reply_t reply;
    if (fpx_raw_send (s_raw, nframes, data, sizes)) {
        FAIL ("%s: send failed", what);
        return;
    }
    if (fpx_raw_recv (s_raw, &reply, fpx_test_asan () ? 60000 : 20000)) {
        FAIL ("%s: no reply", what);
        s_still_serving (what);
        return;
    }
    s_check_error_reply (&reply, reply.header_rc == 0 ? reply.header.status : -1000, expected, what);
    if (reply_out)
        *reply_out = reply;
    else
        fpx_raw_reply_free (&reply);
    s_still_serving (what);
}

//  Params {"name": name} plus one more pair packed by the caller.
static void
s_params_name (fpx_mp_t *mp, const char *name, int extra)
{
    fpx_mp_init (mp);
    msgpack_pack_map (&mp->pk, 1 + (size_t) extra);
    fpx_pack_kv_str (&mp->pk, "name", name);
}

//  After a refused client call: a message on the handle, and pings on the
//  same and on a fresh connection succeed.
static void
s_after_client (fpx_client_t *client, int rc, const char *what)
{
    if (rc < 0)
        CHECK (*fpx_client_errmsg (client), "%s: no error message on the handle", what);
    int ping = fpx_ping (s_client, NULL);
    CHECK (ping == 0, "after %s: ping on the same connection: %s", what, fpx_error_name (ping));
    int fresh = fpx_test_fresh_ping (&s_server);
    CHECK (fresh == 0, "after %s: ping on a fresh connection: %s", what, fpx_error_name (fresh));
}

static void
s_expect_client (fpx_client_t *client, int rc, int expected, const char *what)
{
    CHECK (rc == expected, "%s: %d %s (\"%s\"), expected %s", what, rc, fpx_error_name (rc),
           rc < 0 ? fpx_client_errmsg (client) : "", fpx_error_name (expected));
    s_after_client (client, rc, what);
}

//  For client-side refusals whose code the docs do not pin: one of two.
static void
s_expect_client_either (fpx_client_t *client, int rc, int a, int b, const char *what)
{
    CHECK (rc == a || rc == b, "%s: %d %s (\"%s\"), expected %s or %s", what, rc, fpx_error_name (rc),
           rc < 0 ? fpx_client_errmsg (client) : "", fpx_error_name (a), fpx_error_name (b));
    s_after_client (client, rc, what);
}

static int64_t
s_ntotal (const char *name)
{
    fpx_index_info_t info;
    int rc = fpx_index_describe (s_client, name, 0, &info);
    return rc < 0 ? rc : info.ntotal;
}

/* ---- authentication, header, opcode ------------------------------------------------- */

static void
test_wrong_key (void *arg)
{
    (void) arg;
    char longer [FPX_API_KEY_MAX + 1], prefix [FPX_API_KEY_MAX + 1], full [FPX_API_KEY_MAX + 1];
    snprintf (longer, sizeof longer, "%sx", fpx_test_key_a);
    snprintf (prefix, sizeof prefix, "%.*s", (int) strlen (fpx_test_key_a) - 1, fpx_test_key_a);
    memset (full, 'q', FPX_API_KEY_MAX);
    full [FPX_API_KEY_MAX] = 0;
    const char *keys [] = { "nope", longer, prefix, full, FPX_TEST_TENANT_A };
    for (size_t i = 0; i < sizeof keys / sizeof keys [0]; i++) {
        char what [128];
        snprintf (what, sizeof what, "ping with key \"%s\"", keys [i]);
        s_expect (FPX_OP_PING, keys [i], NULL, 0, 0, NULL, NULL, FPX_EAUTH, what);
    }
    //  The key is checked before the rest: unknown opcode and garbage
    //  params with a wrong key are still FPX_EAUTH.
    s_expect (999, "nope", NULL, 0, 0, NULL, NULL, FPX_EAUTH, "unknown opcode with a wrong key");
    s_expect (FPX_OP_CREATE, "nope", "\xdb\xff\xff\xff\xff", 5, 0, NULL, NULL, FPX_EAUTH,
              "garbage params with a wrong key");
    //  Through the C client.
    fpx_client_t *bad = fpx_client_new (s_server.endpoint, "not-a-key");
    if (CHECK (bad, "fpx_client_new")) {
        fpx_client_set_timeout (bad, 10000);
        CHECK_RC (bad, fpx_ping (bad, NULL), FPX_EAUTH);
        CHECK_RC (bad, fpx_index_create (bad, "x", DIM, "Flat", FPX_METRIC_L2, NULL), FPX_EAUTH);
        CHECK (*fpx_client_errmsg (bad), "no message for FPX_EAUTH");
        CHECK_EQ (fpx_client_errcode (bad), FPX_EAUTH);
        fpx_client_destroy (&bad);
    }
    CHECK_RC (s_client, fpx_ping (s_client, NULL), 0);
}

static void
test_empty_key (void *arg)
{
    (void) arg;
    s_expect (FPX_OP_PING, "", NULL, 0, 0, NULL, NULL, FPX_EAUTH, "ping with an empty key");
    s_expect (FPX_OP_LIST, "", NULL, 0, 0, NULL, NULL, FPX_EAUTH, "list with an empty key");
    fpx_client_t *bad = fpx_client_new (s_server.endpoint, "");
    if (CHECK (bad, "fpx_client_new with an empty key")) {
        fpx_client_set_timeout (bad, 10000);
        CHECK_RC (bad, fpx_ping (bad, NULL), FPX_EAUTH);
        fpx_client_destroy (&bad);
    }
    CHECK_RC (s_client, fpx_ping (s_client, NULL), 0);
}

static void
test_unknown_opcode (void *arg)
{
    (void) arg;
    int opcodes [] = { 0, FPX_OP_LAST_, FPX_OP_LAST_ + 1, 999, 65535 };
    for (size_t i = 0; i < sizeof opcodes / sizeof opcodes [0]; i++) {
        uint8_t header [FPX_REQUEST_HEADER_SIZE];
        uint64_t id = 0xabcdef0000 + i;
        fpx_raw_header (header, opcodes [i], id, fpx_test_key_a);
        const void *frames [] = { header, NULL };
        size_t sizes [] = { sizeof header, 0 };
        char what [64];
        snprintf (what, sizeof what, "opcode %d", opcodes [i]);
        fpx_raw_reply_t reply;
        memset (&reply, 0, sizeof reply);
        s_expect_frames (2, frames, sizes, FPX_EOPCODE, what, &reply);
        if (reply.header_rc == 0) {
            CHECK (reply.header.request_id == id, "%s: request id not echoed", what);
            CHECK_EQ (reply.header.opcode, opcodes [i]);
        }
        fpx_raw_reply_free (&reply);
    }
}

static void
test_wrong_version (void *arg)
{
    (void) arg;
    int versions [] = { 0, 2, 3, 65535 };
    for (size_t i = 0; i < sizeof versions / sizeof versions [0]; i++) {
        uint8_t header [FPX_REQUEST_HEADER_SIZE];
        uint64_t id = 0x5151000 + i;
        fpx_raw_header (header, FPX_OP_PING, id, fpx_test_key_a);
        header [4] = (uint8_t) versions [i];
        header [5] = (uint8_t) (versions [i] >> 8);
        const void *frames [] = { header, NULL };
        size_t sizes [] = { sizeof header, 0 };
        char what [64];
        snprintf (what, sizeof what, "protocol version %d", versions [i]);
        fpx_raw_reply_t reply;
        memset (&reply, 0, sizeof reply);
        s_expect_frames (2, frames, sizes, FPX_EVERSION, what, &reply);
        if (reply.header_rc == 0) {
            CHECK (reply.header.request_id == id, "%s: request id not echoed", what);
            CHECK_EQ (reply.header.opcode, FPX_OP_PING);
        }
        fpx_raw_reply_free (&reply);
    }
    //  A future version with a longer header: still FPX_EVERSION.
    uint8_t longer [FPX_REQUEST_HEADER_SIZE + 32];
    memset (longer, 0, sizeof longer);
    fpx_raw_header (longer, FPX_OP_PING, 77, fpx_test_key_a);
    longer [4] = 2;
    const void *frames [] = { longer, NULL };
    size_t sizes [] = { sizeof longer, 0 };
    s_expect_frames (2, frames, sizes, FPX_EVERSION, "version 2 with a 120-byte header", NULL);
}

static void
test_truncated_header (void *arg)
{
    (void) arg;
    uint8_t header [FPX_REQUEST_HEADER_SIZE + 1];
    fpx_raw_header (header, FPX_OP_PING, 0x1234, fpx_test_key_a);
    header [FPX_REQUEST_HEADER_SIZE] = 0;
    size_t cuts [] = { 0, 1, 4, 10, 23, 24, 40, 87, 89 };
    for (size_t i = 0; i < sizeof cuts / sizeof cuts [0]; i++) {
        const void *frames [] = { header, NULL };
        size_t sizes [] = { cuts [i], 0 };
        char what [64];
        snprintf (what, sizeof what, "header of %zu bytes", cuts [i]);
        fpx_raw_reply_t reply;
        memset (&reply, 0, sizeof reply);
        s_expect_frames (2, frames, sizes, FPX_EPROTO, what, &reply);
        if (reply.header_rc == 0 && cuts [i] < 24)
            CHECK (reply.header.request_id == 0, "%s: request id %llu, expected 0", what,
                   (unsigned long long) reply.header.request_id);
        fpx_raw_reply_free (&reply);
    }
    //  Wrong magic; non-zero flags.
    uint8_t bad [FPX_REQUEST_HEADER_SIZE];
    fpx_raw_header (bad, FPX_OP_PING, 1, fpx_test_key_a);
    bad [0] = 'X';
    const void *frames [] = { bad, NULL };
    size_t sizes [] = { sizeof bad, 0 };
    s_expect_frames (2, frames, sizes, FPX_EPROTO, "wrong magic", NULL);
    fpx_raw_header (bad, FPX_OP_PING, 2, fpx_test_key_a);
    bad [8] = 1;
    s_expect_frames (2, frames, sizes, FPX_EPROTO, "non-zero flags", NULL);
}

/* ---- frames ------------------------------------------------------------------------ */

static void
test_missing_frames (void *arg)
{
    (void) arg;
    fpx_mp_t mp;
    //  Opcodes that need an array frame, without it (parameters complete).
    int needs [] = { FPX_OP_TRAIN, FPX_OP_ADD, FPX_OP_ADD_WITH_IDS, FPX_OP_SEARCH, FPX_OP_RANGE_SEARCH };
    for (size_t i = 0; i < sizeof needs / sizeof needs [0]; i++) {
        s_params_name (&mp, "bad_flat", 2);
        fpx_pack_kv_int (&mp.pk, "k", 5);
        fpx_pack_kv_double (&mp.pk, "radius", 1.0);
        char what [64];
        snprintf (what, sizeof what, "%s without its array frame", fpx_opcode_name (needs [i]));
        s_expect (needs [i], fpx_test_key_a, mp.buf.data, mp.buf.size, 0, NULL, NULL, FPX_EPROTO, what);
        fpx_mp_free (&mp);
    }
    s_params_name (&mp, "bad_flat", 0);
    //  add_with_ids with vectors but no ids.
    const void *arrays [] = { s_x, s_x, s_x, s_x, s_x, s_x, s_x, s_x };
    size_t sizes [] = { 4 * DIM * 4, 32, 32, 32, 32, 32, 32, 32 };
    s_expect (FPX_OP_ADD_WITH_IDS, fpx_test_key_a, mp.buf.data, mp.buf.size, 1, arrays, sizes,
              FPX_EPROTO, "add_with_ids without the ids frame");
    fpx_mp_free (&mp);
    //  deserialize without bytes.
    fpx_mp_init (&mp);
    msgpack_pack_map (&mp.pk, 0);
    s_expect (FPX_OP_DESERIALIZE, fpx_test_key_a, mp.buf.data, mp.buf.size, 0, NULL, NULL,
              FPX_EPROTO, "deserialize without bytes");
    fpx_mp_free (&mp);
    //  More than 8 frames.
    s_params_name (&mp, "bad_flat", 0);
    sizes [0] = DIM * 4;
    s_expect (FPX_OP_ADD, fpx_test_key_a, mp.buf.data, mp.buf.size, 8, arrays, sizes, FPX_EPROTO,
              "add with 10 frames");
    fpx_mp_free (&mp);
    //  Header alone, for an opcode that needs parameters.
    uint8_t header [FPX_REQUEST_HEADER_SIZE];
    fpx_raw_header (header, FPX_OP_ADD, 99, fpx_test_key_a);
    const void *one [] = { header };
    size_t one_size [] = { sizeof header };
    s_expect_frames (1, one, one_size, FPX_EPROTO, "add as a header alone", NULL);
    CHECK_EQ (s_ntotal ("bad_flat"), NFLAT);
}

static void
test_array_sizes (void *arg)
{
    (void) arg;
    fpx_mp_t mp;
    s_params_name (&mp, "bad_flat", 0);
    struct { int opcode; size_t x_bytes; size_t ids_bytes; const char *what; } cases [] = {
        { FPX_OP_ADD, 2 * DIM * 4 + 4, 0, "add of 2 vectors and 4 bytes" },
        { FPX_OP_ADD, 3, 0, "add of 3 bytes" },
        { FPX_OP_ADD, 0, 0, "add of an empty vector frame" },
        { FPX_OP_TRAIN, DIM * 4 - 4, 0, "train of one vector short of 4 bytes" },
        { FPX_OP_SEARCH, 100, 0, "search of 100 bytes" },
        { FPX_OP_ADD_WITH_IDS, 2 * DIM * 4, 3 * 8, "add_with_ids of 2 vectors, 3 ids" },
        { FPX_OP_ADD_WITH_IDS, 2 * DIM * 4, 12, "add_with_ids with a 12-byte ids frame" },
        { FPX_OP_ADD_WITH_IDS, 2 * DIM * 4, 0, "add_with_ids with an empty ids frame" },
        { FPX_OP_REMOVE_IDS, 0, 10, "remove_ids with a 10-byte ids frame" },
    };
    uint8_t *ids = calloc (64, 1);
    for (size_t i = 0; i < sizeof cases / sizeof cases [0]; i++) {
        const void *arrays [2];
        size_t sizes [2];
        int n = 0;
        if (cases [i].opcode != FPX_OP_REMOVE_IDS) {
            arrays [n] = s_x;
            sizes [n++] = cases [i].x_bytes;
        }
        if (cases [i].opcode == FPX_OP_ADD_WITH_IDS || cases [i].opcode == FPX_OP_REMOVE_IDS) {
            arrays [n] = ids;
            sizes [n++] = cases [i].ids_bytes;
        }
        if (cases [i].opcode == FPX_OP_SEARCH) {
            fpx_mp_t sp;
            s_params_name (&sp, "bad_flat", 1);
            fpx_pack_kv_int (&sp.pk, "k", 5);
            s_expect (cases [i].opcode, fpx_test_key_a, sp.buf.data, sp.buf.size, n, arrays, sizes,
                      FPX_EPROTO, cases [i].what);
            fpx_mp_free (&sp);
        }
        else
            s_expect (cases [i].opcode, fpx_test_key_a, mp.buf.data, mp.buf.size, n, arrays, sizes,
                      FPX_EPROTO, cases [i].what);
    }
    free (ids);
    fpx_mp_free (&mp);
    CHECK_EQ (s_ntotal ("bad_flat"), NFLAT);

    //  Through the client: rows of another dimension are an error, also
    //  when the byte count happens to be a multiple of the index's row.
    float D [32 * 5];
    int64_t I [32 * 5];
    int rc = fpx_search (s_client, "bad_flat", 3, DIM - 1, s_x, 5, NULL, D, I);
    s_expect_client_either (s_client, rc, FPX_EINVAL, FPX_EPROTO, "search with d=31 on d=32 (3 rows)");
    rc = fpx_search (s_client, "bad_flat", 32, DIM - 1, s_x, 5, NULL, D, I);
    s_expect_client_either (s_client, rc, FPX_EINVAL, FPX_EPROTO,
                            "search of 32 rows of d=31 (= 31 rows of d=32) on a d=32 index");
    rc = fpx_add (s_client, "bad_flat", 32, DIM - 1, s_x, NULL);
    s_expect_client_either (s_client, rc, FPX_EINVAL, FPX_EPROTO,
                            "add of 32 rows of d=31 (= 31 rows of d=32) on a d=32 index");
    CHECK_EQ (s_ntotal ("bad_flat"), NFLAT);
}

static void
test_dimension (void *arg)
{
    (void) arg;
    int dims [] = { 0, -1, -65536, FPX_DIM_MAX + 1, INT32_MAX, INT32_MIN };
    for (size_t i = 0; i < sizeof dims / sizeof dims [0]; i++) {
        char what [64];
        snprintf (what, sizeof what, "create with d=%d", dims [i]);
        s_expect_client (s_client, fpx_index_create (s_client, "bad_dim", dims [i], "Flat", FPX_METRIC_L2, NULL),
                         FPX_EINVAL, what);
    }
    //  d beyond 32 bits, d as a string, d missing, through raw params.
    int64_t wide [] = { (int64_t) 1 << 32, ((int64_t) 1 << 32) + 32, INT64_MAX, INT64_MIN };
    for (size_t i = 0; i < sizeof wide / sizeof wide [0]; i++) {
        fpx_mp_t mp;
        s_params_name (&mp, "bad_dim", 2);
        fpx_pack_kv_int (&mp.pk, "d", wide [i]);
        fpx_pack_kv_str (&mp.pk, "factory", "Flat");
        char what [64];
        snprintf (what, sizeof what, "create with d=%lld", (long long) wide [i]);
        s_expect (FPX_OP_CREATE, fpx_test_key_a, mp.buf.data, mp.buf.size, 0, NULL, NULL, FPX_EINVAL, what);
        fpx_mp_free (&mp);
    }
    fpx_mp_t mp;
    s_params_name (&mp, "bad_dim", 2);
    fpx_pack_kv_str (&mp.pk, "d", "32");
    fpx_pack_kv_str (&mp.pk, "factory", "Flat");
    s_expect (FPX_OP_CREATE, fpx_test_key_a, mp.buf.data, mp.buf.size, 0, NULL, NULL, FPX_EINVAL, "d as a string");
    fpx_mp_free (&mp);
    s_params_name (&mp, "bad_dim", 1);
    fpx_pack_kv_str (&mp.pk, "factory", "Flat");
    s_expect (FPX_OP_CREATE, fpx_test_key_a, mp.buf.data, mp.buf.size, 0, NULL, NULL, FPX_EINVAL, "d missing");
    fpx_mp_free (&mp);
    s_params_name (&mp, "bad_dim", 1);
    fpx_pack_kv_int (&mp.pk, "d", 32);
    s_expect (FPX_OP_CREATE, fpx_test_key_a, mp.buf.data, mp.buf.size, 0, NULL, NULL, FPX_EINVAL, "factory missing");
    fpx_mp_free (&mp);
    s_params_name (&mp, "bad_dim", 3);
    fpx_pack_kv_int (&mp.pk, "d", 32);
    fpx_pack_kv_str (&mp.pk, "factory", "Flat");
    fpx_pack_kv_int (&mp.pk, "metric", 99);
    s_expect (FPX_OP_CREATE, fpx_test_key_a, mp.buf.data, mp.buf.size, 0, NULL, NULL, FPX_EINVAL, "metric 99");
    fpx_mp_free (&mp);
    //  Numbers between FAISS's metrics, and extra metrics where FAISS would
    //  throw inside OpenMP or sort NaN (docs/PROTOCOL.md, "Metrics").
    struct { int metric; const char *factory; } refused [] = {
        { 5, "Flat" }, { 19, "Flat" }, { 23, "Flat" }, { FPX_METRIC_L1, "IVF4,Flat" },
        { FPX_METRIC_LINF, "PQ4" }, { FPX_METRIC_L1, "HNSW16,SQ8" },
        { FPX_METRIC_CANBERRA, "HNSW16" }, { FPX_METRIC_JENSENSHANNON, "IDMap,HNSW16" },
        { FPX_METRIC_LP, "IVF4,Flat,Refine(Flat)" }, { FPX_METRIC_L1, "SQ8" },
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused [0]; i++) {
        s_params_name (&mp, "bad_metric", 3);
        fpx_pack_kv_int (&mp.pk, "d", 32);
        fpx_pack_kv_str (&mp.pk, "factory", refused [i].factory);
        fpx_pack_kv_int (&mp.pk, "metric", refused [i].metric);
        char what [96];
        snprintf (what, sizeof what, "create '%s' with metric %d", refused [i].factory,
                  refused [i].metric);
        s_expect (FPX_OP_CREATE, fpx_test_key_a, mp.buf.data, mp.buf.size, 0, NULL, NULL,
                  FPX_EINVAL, what);
        fpx_mp_free (&mp);
    }
    CHECK_RC (s_client, fpx_index_open (s_client, "bad_metric", NULL), FPX_ENOTFOUND);
    double bad_metric_args [] = { 5, 23, -1, 1e9, 2.5 };
    for (size_t i = 0; i < sizeof bad_metric_args / sizeof bad_metric_args [0]; i++) {
        double args [2] = { 32, bad_metric_args [i] };
        s_expect_client (s_client, fpx_construct (s_client, "IndexFlat", 2, args, 0, NULL, NULL),
                         FPX_EINVAL, "IndexFlat with a bad metric");
    }
    double pq_l1 [4] = { 32, 2, 8, FPX_METRIC_L1 };
    s_expect_client (s_client, fpx_construct (s_client, "IndexPQ", 4, pq_l1, 0, NULL, NULL),
                     FPX_EINVAL, "IndexPQ with metric L1");
    double hnsw_canberra [3] = { 32, 16, FPX_METRIC_CANBERRA };
    s_expect_client (s_client, fpx_construct (s_client, "IndexHNSWFlat", 3, hnsw_canberra, 0, NULL, NULL),
                     FPX_EINVAL, "HNSW with a metric that gives NaN");
    //  A named index with an extra metric: metric_arg finite only.
    fpx_index_info_t lp;
    if (CHECK_OK (s_client, fpx_index_create (s_client, "lp_metric", 8, "IDMap,Flat", FPX_METRIC_LP, &lp))) {
        CHECK_EQ (lp.metric, FPX_METRIC_LP);
        double bad [] = { NAN, INFINITY, -INFINITY, 1e39 };
        for (size_t i = 0; i < sizeof bad / sizeof bad [0]; i++)
            s_expect_client (s_client, fpx_set_attr (s_client, "lp_metric", "metric_arg", bad [i]),
                             FPX_EINVAL, "metric_arg not finite");
        CHECK_OK (s_client, fpx_set_attr (s_client, "lp_metric", "metric_arg", 3));
        double value = 0;
        CHECK_OK (s_client, fpx_get_attr (s_client, "lp_metric", "metric_arg", &value));
        CHECK (value == 3, "metric_arg %g, expected 3", value);
        CHECK_OK (s_client, fpx_index_drop (s_client, "lp_metric"));
    }
    fpx_index_info_t info;
    CHECK_RC (s_client, fpx_index_open (s_client, "bad_dim", &info), FPX_ENOTFOUND);
    //  The largest d is fine.
    if (CHECK_OK (s_client, fpx_index_create (s_client, "max_dim", FPX_DIM_MAX, "Flat", FPX_METRIC_L2, &info))) {
        CHECK_EQ (info.d, FPX_DIM_MAX);
        CHECK_OK (s_client, fpx_index_drop (s_client, "max_dim"));
    }
}

static void
test_k (void *arg)
{
    (void) arg;
    float *D = malloc (2 * 70000 * sizeof *D);
    int64_t *I = malloc (2 * 70000 * sizeof *I);
    int ks [] = { 0, -1, FPX_K_MAX + 1, INT32_MAX, INT32_MIN };
    for (size_t i = 0; i < sizeof ks / sizeof ks [0]; i++) {
        char what [64];
        snprintf (what, sizeof what, "search with k=%d", ks [i]);
        s_expect_client (s_client, fpx_search (s_client, "bad_flat", 1, DIM, s_x, ks [i], NULL, D, I),
                         FPX_EINVAL, what);
    }
    int64_t wide [] = { (int64_t) 1 << 32, ((int64_t) 1 << 32) + 5, INT64_MAX };
    for (size_t i = 0; i < sizeof wide / sizeof wide [0]; i++) {
        fpx_mp_t mp;
        s_params_name (&mp, "bad_flat", 1);
        fpx_pack_kv_int (&mp.pk, "k", wide [i]);
        const void *arrays [] = { s_x };
        size_t sizes [] = { DIM * 4 };
        char what [64];
        snprintf (what, sizeof what, "search with k=%lld", (long long) wide [i]);
        s_expect (FPX_OP_SEARCH, fpx_test_key_a, mp.buf.data, mp.buf.size, 1, arrays, sizes, FPX_EINVAL, what);
        fpx_mp_free (&mp);
    }
    //  search_and_reconstruct (opcode 37): k checked as search's; its
    //  k·d floats per query count against the message limit (256 MiB
    //  here) before anything is allocated.
    for (size_t i = 0; i < sizeof ks / sizeof ks [0]; i++) {
        float R [DIM];
        s_expect_client (s_client, fpx_search_and_reconstruct (s_client, "bad_flat", 1, DIM, s_x,
                                                               ks [i], NULL, D, I, R),
                         FPX_EINVAL, "search_and_reconstruct with a bad k");
    }
    {
        fpx_mp_t mp;
        s_params_name (&mp, "bad_flat", 1);
        fpx_pack_kv_int (&mp.pk, "k", FPX_K_MAX);
        const void *arrays [] = { s_x };
        size_t sizes [] = { 64 * DIM * 4 };     //  64·65536·(12 + 128) bytes of results
        s_expect (FPX_OP_SEARCH_AND_RECONSTRUCT, fpx_test_key_a, mp.buf.data, mp.buf.size, 1,
                  arrays, sizes, FPX_EINVAL, "search_and_reconstruct over the message limit");
        sizes [0] = DIM * 4 - 4;                //  not a whole vector
        s_expect (FPX_OP_SEARCH_AND_RECONSTRUCT, fpx_test_key_a, mp.buf.data, mp.buf.size, 1,
                  arrays, sizes, FPX_EPROTO, "search_and_reconstruct with a partial vector");
        fpx_mp_free (&mp);
    }
    {   //  A flat index's reconstruction is the stored vector itself.
        float R [3 * 5 * DIM];
        if (CHECK_OK (s_client, fpx_search_and_reconstruct (s_client, "bad_flat", 3, DIM, s_x + 7 * DIM,
                                                            5, NULL, D, I, R))) {
            CHECK_EQ (I [0], 7);
            for (int j = 0; j < 15; j++)
                CHECK (I [j] >= 0 && I [j] < NFLAT
                       && memcmp (R + j * DIM, s_x + I [j] * DIM, DIM * sizeof (float)) == 0,
                       "slot %d: label %lld, reconstruction differs from the stored vector",
                       j, (long long) I [j]);
        }
    }
    //  k = 65536 for one query fits in 1 MiB of results: as FAISS.
    FaissIndex *local = NULL;
    faiss_index_factory (&local, DIM, "Flat", METRIC_L2);
    faiss_Index_add (local, NFLAT, s_x);
    fpx_knn_t ref, got;
    if (CHECK (fpx_local_knn (local, 1, s_x + 500 * DIM, FPX_K_MAX, 0, &ref) == 0, "local search")) {
        if (CHECK_OK (s_client, fpx_remote_knn (s_client, "bad_flat", 1, DIM, s_x + 500 * DIM, FPX_K_MAX,
                                                NULL, &got)))
            CHECK_KNN (&ref, &got);
        fpx_knn_free (&ref);
        fpx_knn_free (&got);
    }
    faiss_Index_free (local);
    //  Two queries of k = 60000: 1.44 MB of results, over the limit.
    s_expect_client (s_client, fpx_search (s_client, "bad_flat", 2, DIM, s_x, 60000, NULL, D, I),
                     FPX_EINVAL, "search of 2 x 60000 results over a 1 MiB limit");
    free (D);
    free (I);
}

static void
test_nq_zero (void *arg)
{
    (void) arg;
    fpx_mp_t mp;
    s_params_name (&mp, "bad_flat", 1);
    fpx_pack_kv_int (&mp.pk, "k", 5);
    const void *arrays [] = { s_x };
    size_t sizes [] = { 0 };
    s_expect (FPX_OP_SEARCH, fpx_test_key_a, mp.buf.data, mp.buf.size, 1, arrays, sizes, FPX_EPROTO,
              "search of an empty vector frame");
    fpx_mp_free (&mp);
    s_params_name (&mp, "bad_flat", 1);
    fpx_pack_kv_double (&mp.pk, "radius", 1.0);
    s_expect (FPX_OP_RANGE_SEARCH, fpx_test_key_a, mp.buf.data, mp.buf.size, 1, arrays, sizes, FPX_EPROTO,
              "range_search of an empty vector frame");
    fpx_mp_free (&mp);
    //  Through the client: nq = 0 and n = 0 are refused, not sent as garbage.
    float D [5];
    int64_t I [5];
    int rc = fpx_search (s_client, "bad_flat", 0, DIM, s_x, 5, NULL, D, I);
    s_expect_client_either (s_client, rc, FPX_EINVAL, FPX_EPROTO, "fpx_search with nq=0");
    rc = fpx_add (s_client, "bad_flat", 0, DIM, s_x, NULL);
    s_expect_client_either (s_client, rc, FPX_EINVAL, FPX_EPROTO, "fpx_add with n=0");
    rc = fpx_search (s_client, "bad_flat", -3, DIM, s_x, 5, NULL, D, I);
    s_expect_client_either (s_client, rc, FPX_EINVAL, FPX_EPROTO, "fpx_search with nq=-3");
    CHECK_EQ (s_ntotal ("bad_flat"), NFLAT);
}

/* ---- FAISS-level refusals ------------------------------------------------------------ */

static void
s_expect_factory_refusal (const char *factory, int d)
{
    char local_message [1024];
    char what [128];
    snprintf (what, sizeof what, "create \"%s\" d=%d", factory, d);
    if (!CHECK (fpx_local_factory_refuses (d, factory, FPX_METRIC_L2, local_message, sizeof local_message),
                "%s: FAISS accepts it in-process", what))
        return;
    int rc = fpx_index_create (s_client, "bad_factory", d, factory, FPX_METRIC_L2, NULL);
    CHECK_FAISS_REFUSAL (s_client, rc, local_message, what);
    s_expect_client (s_client, rc, FPX_EFAISS, what);
}

static void
test_bogus_factory (void *arg)
{
    (void) arg;
    s_expect_factory_refusal ("Bogus12", DIM);
    s_expect_factory_refusal ("IVF16,PQ7", DIM);
    s_expect_factory_refusal ("Flat,Flat", DIM);
    s_expect_factory_refusal ("IVF16,Flat,Flat", DIM);
    s_expect_client (s_client, fpx_index_create (s_client, "bad_factory", DIM, "", FPX_METRIC_L2, NULL),
                     FPX_EINVAL, "empty factory string");
    char longest [FPX_FACTORY_MAX + 1];
    memset (longest, 'F', FPX_FACTORY_MAX);
    longest [FPX_FACTORY_MAX] = 0;
    int rc = fpx_index_create (s_client, "bad_factory", DIM, longest, FPX_METRIC_L2, NULL);
    s_expect_client (s_client, rc, FPX_EINVAL, "256-byte factory string");
    //  A factory string with a NUL inside, through raw params.
    fpx_mp_t mp;
    s_params_name (&mp, "bad_factory", 2);
    fpx_pack_kv_int (&mp.pk, "d", DIM);
    fpx_pack_str (&mp.pk, "factory");
    msgpack_pack_str (&mp.pk, 6);
    msgpack_pack_str_body (&mp.pk, "Flat\0x", 6);
    s_expect (FPX_OP_CREATE, fpx_test_key_a, mp.buf.data, mp.buf.size, 0, NULL, NULL, FPX_EINVAL,
              "factory string with a NUL");
    fpx_mp_free (&mp);
    fpx_index_info_t info;
    CHECK_RC (s_client, fpx_index_open (s_client, "bad_factory", &info), FPX_ENOTFOUND);
}

static void
test_untrained_ivf (void *arg)
{
    (void) arg;
    char why [256];
    const char *factories [] = { "IVF16,Flat", "PCA16,IVF16,Flat" };
    for (int f = 0; f < 2; f++) {
        FaissIndex *local = fpx_local_create (DIM, factories [f], FPX_METRIC_L2, why, sizeof why);
        if (!CHECK (local, "%s", why))
            continue;
        if (!CHECK_OK (s_client, fpx_index_create (s_client, "bad_ivf", DIM, factories [f], FPX_METRIC_L2, NULL))) {
            faiss_Index_free (local);
            continue;
        }
        char local_message [1024], what [128];
        //  add and add_with_ids: FAISS throws 'is_trained' failed.
        int lrc = faiss_Index_add (local, 10, s_x);
        snprintf (local_message, sizeof local_message, "%s", fpx_local_error ());
        snprintf (what, sizeof what, "add on untrained %s", factories [f]);
        int rc = fpx_add (s_client, "bad_ivf", 10, DIM, s_x, NULL);
        if (CHECK (lrc != 0, "%s: local add succeeded", what))
            CHECK_FAISS_REFUSAL (s_client, rc, local_message, what);
        int64_t ids [10] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 };
        lrc = faiss_Index_add_with_ids (local, 10, s_x, ids);
        snprintf (local_message, sizeof local_message, "%s", fpx_local_error ());
        rc = fpx_add_with_ids (s_client, "bad_ivf", 10, DIM, s_x, ids, NULL);
        snprintf (what, sizeof what, "add_with_ids on untrained %s", factories [f]);
        if (CHECK (lrc != 0, "%s: local add_with_ids succeeded", what))
            CHECK_FAISS_REFUSAL (s_client, rc, local_message, what);
        //  search: FAISS refuses behind a pre-transform; a bare IVF
        //  answers empty results. The server must do as FAISS, or refuse.
        fpx_knn_t ref, got;
        lrc = fpx_local_knn (local, 3, s_x, 5, 0, &ref);
        snprintf (local_message, sizeof local_message, "%s", fpx_local_error ());
        rc = fpx_remote_knn (s_client, "bad_ivf", 3, DIM, s_x, 5, NULL, &got);
        snprintf (what, sizeof what, "search on untrained %s", factories [f]);
        if (lrc != 0)
            CHECK_FAISS_REFUSAL (s_client, rc, local_message, what);
        else
        if (rc != FPX_EFAISS && CHECK (rc >= 0, "%s: %s (\"%s\"), expected FAISS's empty result or FPX_EFAISS",
                                       what, fpx_error_name (rc), fpx_client_errmsg (s_client)))
            CHECK_KNN (&ref, &got);
        fpx_knn_free (&ref);
        fpx_knn_free (&got);
        s_expect_client (s_client, 0, 0, what);
        CHECK_EQ (s_ntotal ("bad_ivf"), 0);
        CHECK_OK (s_client, fpx_index_drop (s_client, "bad_ivf"));
        faiss_Index_free (local);
    }
}

static void
test_too_big (void *arg)
{
    (void) arg;
    //  12000 vectors of 128 bytes: 1.5 MB in one message, over 1 MiB.
    float *big = fpx_data_uniform (5, 12000, DIM);
    int rc = fpx_add (s_client, "bad_flat", 12000, DIM, big, NULL);
    s_expect_client (s_client, rc, FPX_ETOOBIG, "add of 1.5 MB with --max-message-mb 1");
    fpx_mp_t mp;
    s_params_name (&mp, "bad_flat", 0);
    const void *arrays [] = { big };
    size_t sizes [] = { (size_t) 12000 * DIM * 4 };
    s_expect (FPX_OP_ADD, fpx_test_key_a, mp.buf.data, mp.buf.size, 1, arrays, sizes, FPX_ETOOBIG,
              "raw add of 1.5 MB");
    //  Split over two frames each under the limit, the sum still counts.
    const void *parts [] = { big, big };
    size_t part_sizes [] = { (size_t) 7800 * DIM * 4, (size_t) 7800 * 8 };
    s_expect (FPX_OP_ADD_WITH_IDS, fpx_test_key_a, mp.buf.data, mp.buf.size, 2, parts, part_sizes,
              FPX_ETOOBIG, "raw add_with_ids of 998 KB + 62 KB");
    fpx_mp_free (&mp);
    CHECK_EQ (s_ntotal ("bad_flat"), NFLAT);
    //  A result over the limit: a range search finding every vector for
    //  1000 queries (1.2 MB of results).
    fpx_range_result_t *result = NULL;
    rc = fpx_range_search (s_client, "bad_flat", 1000, DIM, s_x, 1e30f, NULL, &result);
    fpx_range_result_destroy (&result);
    s_expect_client (s_client, rc, FPX_ETOOBIG, "range_search with 1.2 MB of results");
    //  Just under the limit works.
    rc = fpx_add (s_client, "bad_flat", 7000, DIM, big, NULL);
    s_expect_client (s_client, rc, 0, "add of 0.9 MB");
    CHECK_EQ (s_ntotal ("bad_flat"), NFLAT + 7000);
    int64_t removed = 0;
    CHECK_OK (s_client, fpx_remove_range (s_client, "bad_flat", NFLAT, NFLAT + 7000, &removed));
    CHECK_EQ (removed, 7000);
    //  One frame over twice the limit: ZeroMQ drops the connection; the
    //  server lives on.
    float *huge = malloc ((size_t) 3 << 20);
    memset (huge, 0, (size_t) 3 << 20);
    fpx_raw_t *raw = fpx_raw_new (s_server.endpoint);
    if (CHECK (raw, "raw socket")) {
        uint8_t header [FPX_REQUEST_HEADER_SIZE];
        fpx_raw_header (header, FPX_OP_ADD, 5, fpx_test_key_a);
        fpx_mp_t np;
        s_params_name (&np, "bad_flat", 0);
        const void *frames [] = { header, np.buf.data, huge };
        size_t frame_sizes [] = { sizeof header, np.buf.size, (size_t) 3 << 20 };
        fpx_raw_send (raw, 3, frames, frame_sizes);
        fpx_raw_reply_t reply;
        if (fpx_raw_recv (raw, &reply, 2000) == 0) {
            //  A reply is tolerated, but only an error one.
            CHECK (reply.header_rc == 0 && reply.header.status == FPX_ETOOBIG,
                   "a 3 MB frame got status %d", reply.header.status);
            fpx_raw_reply_free (&reply);
        }
        else
            fpx_test_pass_ ();
        fpx_mp_free (&np);
        fpx_raw_destroy (&raw);
    }
    free (huge);
    CHECK (fpx_test_server_alive (&s_server), "faissproxyd died");
    s_still_serving ("a 3 MB frame");
    CHECK_EQ (s_ntotal ("bad_flat"), NFLAT);
    free (big);
}

/* ---- hostile msgpack ------------------------------------------------------------------- */

static void
test_msgpack_absurd (void *arg)
{
    (void) arg;
    //  Each frame is a params frame for "describe".
    static const uint8_t str32_4g [] = { 0x81, 0xa4, 'n', 'a', 'm', 'e', 0xdb, 0xff, 0xff, 0xff, 0xff, 'b', 'a', 'd' };
    static const uint8_t arr32_max [] = { 0x82, 0xa4, 'n', 'a', 'm', 'e', 0xa8, 'b', 'a', 'd', '_', 'f', 'l', 'a', 't',
                                          0xa1, 'x', 0xdd, 0xff, 0xff, 0xff, 0xff, 1, 2, 3 };
    static const uint8_t map32_max [] = { 0xdf, 0xff, 0xff, 0xff, 0xff, 0xa4, 'n', 'a', 'm', 'e', 0xa1, 'x' };
    static const uint8_t map16_max [] = { 0xde, 0xff, 0xff, 0xa4, 'n', 'a', 'm', 'e', 0xa1, 'x' };
    static const uint8_t bin32_4g [] = { 0x81, 0xa1, 'x', 0xc6, 0xff, 0xff, 0xff, 0xff, 0 };
    static const uint8_t top_array [] = { 0x91, 0xa1, 'x' };
    static const uint8_t trailing [] = { 0x81, 0xa4, 'n', 'a', 'm', 'e', 0xa1, 'x', 0xc0 };
    static const uint8_t int_key [] = { 0x81, 0x05, 0xa1, 'x' };
    static const uint8_t ext [] = { 0x81, 0xa1, 'x', 0xd4, 0x01, 0x00 };
    static const uint8_t tag_c1 [] = { 0x81, 0xa1, 'x', 0xc1 };
    struct { const char *what; const uint8_t *bytes; size_t size; } seeds [] = {
        { "str32 declaring 4 GiB", str32_4g, sizeof str32_4g },
        { "array32 declaring 2^32-1 elements", arr32_max, sizeof arr32_max },
        { "map32 declaring 2^32-1 entries", map32_max, sizeof map32_max },
        { "map16 declaring 65535 entries", map16_max, sizeof map16_max },
        { "bin32 declaring 4 GiB", bin32_4g, sizeof bin32_4g },
        { "top-level array", top_array, sizeof top_array },
        { "trailing byte", trailing, sizeof trailing },
        { "int key", int_key, sizeof int_key },
        { "ext type", ext, sizeof ext },
        { "tag 0xc1", tag_c1, sizeof tag_c1 },
    };
    for (size_t i = 0; i < sizeof seeds / sizeof seeds [0]; i++)
        s_expect (FPX_OP_DESCRIBE, fpx_test_key_a, seeds [i].bytes, seeds [i].size, 0, NULL, NULL,
                  FPX_EPROTO, seeds [i].what);

    //  100 levels of nesting.
    uint8_t deep [256];
    size_t n = 0;
    deep [n++] = 0x82;
    deep [n++] = 0xa4; memcpy (deep + n, "name", 4); n += 4;
    deep [n++] = 0xa8; memcpy (deep + n, "bad_flat", 8); n += 8;
    deep [n++] = 0xa1; deep [n++] = 'z';
    for (int l = 0; l < 100; l++)
        deep [n++] = 0x91;
    deep [n++] = 0x01;
    s_expect (FPX_OP_DESCRIBE, fpx_test_key_a, deep, n, 0, NULL, NULL, FPX_EPROTO, "100 levels of nesting");

    //  A map of 1000 keys.
    fpx_mp_t mp;
    fpx_mp_init (&mp);
    msgpack_pack_map (&mp.pk, 1000);
    fpx_pack_kv_str (&mp.pk, "name", "bad_flat");
    for (int k = 1; k < 1000; k++) {
        char key [16];
        snprintf (key, sizeof key, "k%d", k);
        fpx_pack_kv_int (&mp.pk, key, k);
    }
    s_expect (FPX_OP_DESCRIBE, fpx_test_key_a, mp.buf.data, mp.buf.size, 0, NULL, NULL, FPX_EPROTO,
              "a map of 1000 keys");
    fpx_mp_free (&mp);

    //  A well-formed 70 KB params frame: over 64 KiB.
    fpx_mp_init (&mp);
    msgpack_pack_map (&mp.pk, 2);
    fpx_pack_kv_str (&mp.pk, "name", "bad_flat");
    fpx_pack_str (&mp.pk, "blob");
    char *zeros = calloc (1, 70000);
    msgpack_pack_bin (&mp.pk, 70000);
    msgpack_pack_bin_body (&mp.pk, zeros, 70000);
    free (zeros);
    s_expect (FPX_OP_DESCRIBE, fpx_test_key_a, mp.buf.data, mp.buf.size, 0, NULL, NULL, FPX_EPROTO,
              "a 70 KB params frame");
    fpx_mp_free (&mp);

    //  Every truncation of a valid search params frame.
    s_params_name (&mp, "bad_flat", 2);
    fpx_pack_kv_int (&mp.pk, "k", 5);
    fpx_pack_kv_int (&mp.pk, "nprobe", 300);
    const void *arrays [] = { s_x };
    size_t sizes [] = { DIM * 4 };
    for (size_t cut = 1; cut < mp.buf.size; cut++) {
        char what [64];
        snprintf (what, sizeof what, "search params cut at %zu/%zu bytes", cut, mp.buf.size);
        fpx_raw_reply_t reply;
        int status = fpx_raw_call (s_raw, FPX_OP_SEARCH, fpx_test_key_a, mp.buf.data, cut, 1, arrays,
                                   sizes, &reply);
        s_check_error_reply (&reply, status, FPX_EPROTO, what);
        fpx_raw_reply_free (&reply);
    }
    fpx_mp_free (&mp);
    s_still_serving ("truncated params");
}

static void
test_wrong_types (void *arg)
{
    (void) arg;
    const void *arrays [] = { s_x };
    size_t sizes [] = { DIM * 4 };
    fpx_mp_t mp;
    //  name as an int.
    fpx_mp_init (&mp);
    msgpack_pack_map (&mp.pk, 1);
    fpx_pack_kv_int (&mp.pk, "name", 5);
    s_expect (FPX_OP_DESCRIBE, fpx_test_key_a, mp.buf.data, mp.buf.size, 0, NULL, NULL, FPX_EINVAL, "name as an int");
    fpx_mp_free (&mp);
    //  name missing.
    fpx_mp_init (&mp);
    msgpack_pack_map (&mp.pk, 1);
    fpx_pack_kv_int (&mp.pk, "k", 5);
    s_expect (FPX_OP_SEARCH, fpx_test_key_a, mp.buf.data, mp.buf.size, 1, arrays, sizes, FPX_EINVAL, "name missing");
    fpx_mp_free (&mp);
    //  k as a string, a float, missing, above INT64_MAX.
    s_params_name (&mp, "bad_flat", 1);
    fpx_pack_kv_str (&mp.pk, "k", "ten");
    s_expect (FPX_OP_SEARCH, fpx_test_key_a, mp.buf.data, mp.buf.size, 1, arrays, sizes, FPX_EINVAL, "k as a string");
    fpx_mp_free (&mp);
    s_params_name (&mp, "bad_flat", 1);
    fpx_pack_kv_double (&mp.pk, "k", 5.5);
    s_expect (FPX_OP_SEARCH, fpx_test_key_a, mp.buf.data, mp.buf.size, 1, arrays, sizes, FPX_EINVAL, "k as a float");
    fpx_mp_free (&mp);
    s_params_name (&mp, "bad_flat", 0);
    s_expect (FPX_OP_SEARCH, fpx_test_key_a, mp.buf.data, mp.buf.size, 1, arrays, sizes, FPX_EINVAL, "k missing");
    fpx_mp_free (&mp);
    s_params_name (&mp, "bad_flat", 1);
    fpx_pack_str (&mp.pk, "k");
    msgpack_pack_uint64 (&mp.pk, UINT64_MAX);
    s_expect (FPX_OP_SEARCH, fpx_test_key_a, mp.buf.data, mp.buf.size, 1, arrays, sizes, FPX_EINVAL, "k = 2^64-1");
    fpx_mp_free (&mp);
    //  nprobe and efSearch negative; on a Flat index they apply nowhere.
    const char *overrides [] = { "nprobe", "efSearch" };
    for (int o = 0; o < 2; o++) {
        s_params_name (&mp, "bad_flat", 2);
        fpx_pack_kv_int (&mp.pk, "k", 5);
        fpx_pack_kv_int (&mp.pk, overrides [o], -4);
        char what [64];
        snprintf (what, sizeof what, "%s = -4", overrides [o]);
        s_expect (FPX_OP_SEARCH, fpx_test_key_a, mp.buf.data, mp.buf.size, 1, arrays, sizes, FPX_EINVAL, what);
        fpx_mp_free (&mp);
    }
    //  radius NaN, inf, a string.
    double radii [] = { NAN, INFINITY, -INFINITY };
    for (int r = 0; r < 3; r++) {
        s_params_name (&mp, "bad_flat", 1);
        fpx_pack_kv_double (&mp.pk, "radius", radii [r]);
        char what [64];
        snprintf (what, sizeof what, "radius %g", radii [r]);
        s_expect (FPX_OP_RANGE_SEARCH, fpx_test_key_a, mp.buf.data, mp.buf.size, 1, arrays, sizes, FPX_EINVAL, what);
        fpx_mp_free (&mp);
    }
    s_params_name (&mp, "bad_flat", 1);
    fpx_pack_kv_str (&mp.pk, "radius", "1.0");
    s_expect (FPX_OP_RANGE_SEARCH, fpx_test_key_a, mp.buf.data, mp.buf.size, 1, arrays, sizes, FPX_EINVAL, "radius as a string");
    fpx_mp_free (&mp);
    //  memory not a bool.
    s_params_name (&mp, "bad_flat", 1);
    fpx_pack_kv_str (&mp.pk, "memory", "yes");
    s_expect (FPX_OP_DESCRIBE, fpx_test_key_a, mp.buf.data, mp.buf.size, 0, NULL, NULL, FPX_EINVAL, "memory as a string");
    fpx_mp_free (&mp);
    //  remove_ids with neither ids nor a range; with half a range.
    s_params_name (&mp, "bad_flat", 0);
    s_expect (FPX_OP_REMOVE_IDS, fpx_test_key_a, mp.buf.data, mp.buf.size, 0, NULL, NULL, FPX_EINVAL,
              "remove_ids without ids or range");
    fpx_mp_free (&mp);
    s_params_name (&mp, "bad_flat", 1);
    fpx_pack_kv_int (&mp.pk, "lo", 0);
    s_expect (FPX_OP_REMOVE_IDS, fpx_test_key_a, mp.buf.data, mp.buf.size, 0, NULL, NULL, FPX_EINVAL,
              "remove_ids with lo but no hi");
    fpx_mp_free (&mp);
    //  reconstruct key missing.
    s_params_name (&mp, "bad_flat", 0);
    s_expect (FPX_OP_RECONSTRUCT, fpx_test_key_a, mp.buf.data, mp.buf.size, 0, NULL, NULL, FPX_EINVAL,
              "reconstruct without key");
    fpx_mp_free (&mp);
    CHECK_EQ (s_ntotal ("bad_flat"), NFLAT);
}

static void
test_names (void *arg)
{
    (void) arg;
    char long_name [FPX_NAME_MAX + 2];
    memset (long_name, 'n', FPX_NAME_MAX + 1);
    long_name [FPX_NAME_MAX + 1] = 0;
    const char *bad [] = { "", ".hidden", "-dash", "a/b", "../etc", "a b", "@anon", "tab\there", "é", long_name };
    for (size_t i = 0; i < sizeof bad / sizeof bad [0]; i++) {
        char what [200];
        snprintf (what, sizeof what, "create named \"%.20s\"", bad [i]);
        s_expect_client (s_client, fpx_index_create (s_client, bad [i], DIM, "Flat", FPX_METRIC_L2, NULL),
                         FPX_EINVAL, what);
    }
    //  Index operations with an invalid name are refused the same way.
    fpx_index_info_t info;
    s_expect_client (s_client, fpx_index_describe (s_client, "a/b", 0, &info), FPX_EINVAL, "describe \"a/b\"");
    //  128 bytes is fine.
    long_name [FPX_NAME_MAX] = 0;
    if (CHECK_OK (s_client, fpx_index_create (s_client, long_name, DIM, "Flat", FPX_METRIC_L2, &info))) {
        CHECK_STR (info.name, long_name);
        CHECK_OK (s_client, fpx_index_drop (s_client, long_name));
    }
    //  A name with a NUL inside, through raw params.
    fpx_mp_t mp;
    fpx_mp_init (&mp);
    msgpack_pack_map (&mp.pk, 3);
    fpx_pack_str (&mp.pk, "name");
    msgpack_pack_str (&mp.pk, 5);
    msgpack_pack_str_body (&mp.pk, "ab\0cd", 5);
    fpx_pack_kv_int (&mp.pk, "d", DIM);
    fpx_pack_kv_str (&mp.pk, "factory", "Flat");
    s_expect (FPX_OP_CREATE, fpx_test_key_a, mp.buf.data, mp.buf.size, 0, NULL, NULL, FPX_EINVAL, "name with a NUL");
    fpx_mp_free (&mp);
    //  The server checks names itself, not only the client.
    const char *raw_bad [] = { "../etc", "@x", "", ".x" };
    for (size_t i = 0; i < sizeof raw_bad / sizeof raw_bad [0]; i++) {
        s_params_name (&mp, raw_bad [i], 2);
        fpx_pack_kv_int (&mp.pk, "d", DIM);
        fpx_pack_kv_str (&mp.pk, "factory", "Flat");
        char what [64];
        snprintf (what, sizeof what, "raw create named \"%s\"", raw_bad [i]);
        s_expect (FPX_OP_CREATE, fpx_test_key_a, mp.buf.data, mp.buf.size, 0, NULL, NULL, FPX_EINVAL, what);
        fpx_mp_free (&mp);
    }
    char **names = NULL;
    size_t count = 0;
    if (CHECK_OK (s_client, fpx_index_list (s_client, &names, &count))) {
        CHECK_EQ (count, 1);            //  bad_flat only
        fpx_strlist_free (&names, count);
    }
}

static void
test_nonfinite (void *arg)
{
    (void) arg;
    float *x = malloc (50 * DIM * sizeof *x);
    const float specials [] = { NAN, INFINITY, -INFINITY };
    const char *names [] = { "NaN", "+inf", "-inf" };
    int64_t ids [50];
    for (int i = 0; i < 50; i++)
        ids [i] = 10000 + i;
    float D [50 * 5];
    int64_t I [50 * 5];
    for (int s = 0; s < 3; s++) {
        size_t positions [] = { 0, 17, 50 * DIM - 1 };
        for (int p = 0; p < 3; p++) {
            memcpy (x, s_x, 50 * DIM * sizeof *x);
            x [positions [p]] = specials [s];
            char what [96];
            snprintf (what, sizeof what, "add with %s at %zu", names [s], positions [p]);
            s_expect_client (s_client, fpx_add (s_client, "bad_flat", 50, DIM, x, NULL), FPX_EINVAL, what);
            snprintf (what, sizeof what, "search with %s at %zu", names [s], positions [p]);
            s_expect_client (s_client, fpx_search (s_client, "bad_flat", 50, DIM, x, 5, NULL, D, I),
                             FPX_EINVAL, what);
        }
        char what [96];
        snprintf (what, sizeof what, "train with %s", names [s]);
        s_expect_client (s_client, fpx_train (s_client, "bad_flat", 50, DIM, x), FPX_EINVAL, what);
        fpx_range_result_t *r = NULL;
        snprintf (what, sizeof what, "range_search with %s", names [s]);
        s_expect_client (s_client, fpx_range_search (s_client, "bad_flat", 50, DIM, x, 1.0f, NULL, &r),
                         FPX_EINVAL, what);
        fpx_range_result_destroy (&r);
    }
    CHECK_EQ (s_ntotal ("bad_flat"), NFLAT);
    //  add_with_ids to an IDMap index.
    if (CHECK_OK (s_client, fpx_index_create (s_client, "bad_idmap", DIM, "IDMap,Flat", FPX_METRIC_L2, NULL))) {
        memcpy (x, s_x, 50 * DIM * sizeof *x);
        x [5] = -INFINITY;
        s_expect_client (s_client, fpx_add_with_ids (s_client, "bad_idmap", 50, DIM, x, ids, NULL),
                         FPX_EINVAL, "add_with_ids with -inf");
        CHECK_EQ (s_ntotal ("bad_idmap"), 0);
        CHECK_OK (s_client, fpx_index_drop (s_client, "bad_idmap"));
    }
    free (x);
}

static void
test_absurd_factories (void *arg)
{
    (void) arg;
    //  FAISS would try to allocate tens of GB: the cap makes it FPX_ENOMEM.
    //  (A server may also refuse the number itself: FPX_EINVAL.)
    s_expect_client_either (s_client, fpx_index_create (s_client, "huge", DIM, "IVF1000000000,Flat",
                                                        FPX_METRIC_L2, NULL),
                            FPX_ENOMEM, FPX_EINVAL, "create IVF1000000000,Flat");
    s_expect_client (s_client, fpx_index_create (s_client, "huge", 65536, "IVF1000000,PQ64x16", FPX_METRIC_L2, NULL),
                     FPX_ENOMEM, "create d=65536 IVF1000000,PQ64x16");
    s_expect_client (s_client, fpx_index_create (s_client, "huge", 65536, "PQ8x16", FPX_METRIC_L2, NULL),
                     FPX_ENOMEM, "create d=65536 PQ8x16");
    s_expect_client (s_client, fpx_index_create (s_client, NULL, 65536, "IVF65536,PQ64x16", FPX_METRIC_L2, NULL),
                     FPX_ENOMEM, "create d=65536 IVF65536,PQ64x16");
    fpx_index_info_t info;
    CHECK_RC (s_client, fpx_index_open (s_client, "huge", &info), FPX_ENOTFOUND);
    CHECK (fpx_test_server_alive (&s_server), "faissproxyd died");
    long rss = fpx_test_server_rss_kb (&s_server);
    CHECK (rss > 0 && rss < 4L * 1024 * 1024, "server VmRSS %ld KiB after the absurd factories", rss);
}

static void
test_hostile_upload (void *arg)
{
    (void) arg;
    //  Garbage, and a valid index cut short: FAISS refuses them too, but
    //  the server's walk over the bytes does before FAISS reads anything
    //  (docs/SECURITY.md, "Uploaded indexes").
    const uint8_t garbage [] = "hello, this is not an index";
    char local_message [1024];
    bool refused = fpx_local_read_refuses (garbage, sizeof garbage, local_message, sizeof local_message);
    int rc = fpx_deserialize (s_client, "bad_upload", NULL, garbage, sizeof garbage, NULL);
    CHECK (refused, "FAISS reads garbage");
    CHECK (strstr (fpx_client_errmsg (s_client), "structure 'hell' is not accepted") != NULL,
           "garbage refused with '%s'", fpx_client_errmsg (s_client));
    s_expect_client (s_client, rc, FPX_EINVAL, "deserialize garbage");

    FaissIndex *flat = NULL;
    faiss_index_factory (&flat, DIM, "Flat", METRIC_L2);
    faiss_Index_add (flat, 10, s_x);
    size_t size = 0;
    uint8_t *bytes = fpx_local_serialize (flat, &size);
    faiss_Index_free (flat);
    REQUIRE (bytes, "local serialize");
    refused = fpx_local_read_refuses (bytes, size / 2, local_message, sizeof local_message);
    rc = fpx_deserialize (s_client, "bad_upload", NULL, bytes, size / 2, NULL);
    CHECK (refused, "FAISS reads half an index");
    CHECK (strstr (fpx_client_errmsg (s_client), "truncated") != NULL,
           "half an index refused with '%s'", fpx_client_errmsg (s_client));
    s_expect_client (s_client, rc, FPX_EINVAL, "deserialize half an index");

    //  A Flat header whose code vector claims 2^30 floats (4 GiB) for a
    //  1 KB upload: not attempted in-process; the walk compares the claim
    //  with the bytes sent, before anything is allocated.
    //  IndexFlat layout: "IxF2", d (i32), ntotal (i64), 2 × i64, is_trained
    //  (u8), metric (i32), then the codes vector: size (u64, in floats).
    size_t codes_at = 4 + 4 + 8 + 8 + 8 + 1 + 4;
    if (CHECK (size > codes_at + 8 && memcmp (bytes, "IxF2", 4) == 0, "unexpected Flat layout")) {
        uint64_t claimed = (uint64_t) 1 << 30;
        memcpy (bytes + codes_at, &claimed, 8);
        rc = fpx_deserialize (s_client, "bad_upload", NULL, bytes, size, NULL);
        s_expect_client (s_client, rc, FPX_EINVAL, "deserialize claiming a 4 GiB vector");
    }
    free (bytes);
    //  Empty bytes.
    rc = fpx_deserialize (s_client, "bad_upload", NULL, (const uint8_t *) "", 0, NULL);
    s_expect_client_either (s_client, rc, FPX_EINVAL, FPX_EPROTO, "deserialize of 0 bytes");
    fpx_index_info_t info;
    CHECK_RC (s_client, fpx_index_open (s_client, "bad_upload", &info), FPX_ENOTFOUND);
}

static void
test_set_parameters_bounds (void *arg)
{
    (void) arg;
    s_expect_client (s_client, fpx_set_parameters (s_client, "bad_flat", ""), FPX_EINVAL,
                     "set_parameters \"\"");
    char *longest = malloc (FPX_SETPARAM_MAX + 1);
    memset (longest, 'p', FPX_SETPARAM_MAX);
    longest [FPX_SETPARAM_MAX] = 0;
    s_expect_client (s_client, fpx_set_parameters (s_client, "bad_flat", longest), FPX_EINVAL,
                     "set_parameters of 1024 bytes");
    //  1023 bytes is within bounds: FAISS's own refusal.
    longest [FPX_SETPARAM_MAX - 1] = 0;
    FaissIndex *local = NULL;
    faiss_index_factory (&local, DIM, "Flat", METRIC_L2);
    int lrc = fpx_local_set_params (local, longest);
    char local_message [1024];
    snprintf (local_message, sizeof local_message, "%s", fpx_local_error ());
    faiss_Index_free (local);
    int rc = fpx_set_parameters (s_client, "bad_flat", longest);
    if (CHECK (lrc != 0, "FAISS accepts 1023 p's"))
        CHECK_FAISS_REFUSAL (s_client, rc, local_message, "set_parameters of 1023 bytes");
    s_expect_client (s_client, rc, FPX_EFAISS, "set_parameters of 1023 bytes");
    free (longest);
}

//  attach (opcode 36): malformed parameters, then objects that cannot be
//  attached; each refused with the server serving on.
static void
test_attach (void *arg)
{
    (void) arg;
    char long_role [FPX_TYPE_NAME_MAX + 8];
    memset (long_role, 'r', sizeof long_role - 1);
    long_role [sizeof long_role - 1] = 0;
    struct { const char *role; const char *ref; int expected; const char *what; } cases [] = {
        { NULL, "@x", FPX_EINVAL, "attach without role" },
        { "shard", NULL, FPX_EINVAL, "attach without ref" },
        { long_role, "@x", FPX_EINVAL, "attach with a role too long" },
        { "", "@x", FPX_EINVAL, "attach with an empty role" },
        { "shard", "", FPX_EINVAL, "attach with an empty ref" },
        { "shard", "@000000000000", FPX_ENOTFOUND, "attach to an unknown name" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases [0]; i++) {
        fpx_mp_t mp;
        s_params_name (&mp, "@000000000000", (cases [i].role != NULL) + (cases [i].ref != NULL));
        if (cases [i].role)
            fpx_pack_kv_str (&mp.pk, "role", cases [i].role);
        if (cases [i].ref)
            fpx_pack_kv_str (&mp.pk, "ref", cases [i].ref);
        s_expect (FPX_OP_ATTACH, fpx_test_key_a, mp.buf.data, mp.buf.size, 0, NULL, NULL,
                  cases [i].expected, cases [i].what);
        fpx_mp_free (&mp);
    }
    fpx_mp_t mp;
    s_params_name (&mp, "@000000000000", 2);
    fpx_pack_kv_int (&mp.pk, "role", 1);
    fpx_pack_kv_str (&mp.pk, "ref", "@x");
    s_expect (FPX_OP_ATTACH, fpx_test_key_a, mp.buf.data, mp.buf.size, 0, NULL, NULL,
              FPX_EINVAL, "attach with a numeric role");
    fpx_mp_free (&mp);

    //  Objects of one connection: a group, a part, a transform.
    double group_args [1] = { 8 }, flat_args [1] = { 8 }, wide_args [1] = { 16 };
    fpx_index_info_t group, flat, wide, other;
    if (!CHECK_OK (s_client, fpx_construct (s_client, "IndexShards", 1, group_args, 0, NULL, &group))
    ||  !CHECK_OK (s_client, fpx_construct (s_client, "IndexFlatL2", 1, flat_args, 0, NULL, &flat))
    ||  !CHECK_OK (s_client, fpx_construct (s_client, "IndexFlatL2", 1, wide_args, 0, NULL, &wide))
    ||  !CHECK_OK (s_client, fpx_construct (s_client, "IndexReplicas", 1, group_args, 0, NULL, &other)))
        return;
    s_expect_client (s_client, fpx_attach (s_client, group.name, "shard", group.name, NULL),
                     FPX_EINVAL, "attach an object to itself");
    s_expect_client (s_client, fpx_attach (s_client, group.name, "replica", flat.name, NULL),
                     FPX_EINVAL, "replica role on IndexShards");
    s_expect_client (s_client, fpx_attach (s_client, group.name, "prepend_transform", flat.name, NULL),
                     FPX_EINVAL, "prepend_transform on IndexShards");
    s_expect_client (s_client, fpx_attach (s_client, group.name, "shard", wide.name, NULL),
                     FPX_EINVAL, "shard of another dimension");
    s_expect_client (s_client, fpx_attach (s_client, flat.name, "shard", group.name, NULL),
                     FPX_EINVAL, "a flat index cannot take shards");
    fpx_index_info_t after;
    if (CHECK_OK (s_client, fpx_attach (s_client, group.name, "shard", flat.name, &after)))
        CHECK_EQ (after.d, 8);
    //  Now a part: neither side of another attach.
    s_expect_client (s_client, fpx_attach (s_client, other.name, "replica", flat.name, NULL),
                     FPX_EINVAL, "attach a part of another group");
    s_expect_client (s_client, fpx_attach (s_client, flat.name, "shard", wide.name, NULL),
                     FPX_EINVAL, "attach to a part");
    //  Groups nest, as in FAISS; then the inner one is a part too.
    CHECK_OK (s_client, fpx_attach (s_client, other.name, "replica", group.name, NULL));
    s_expect_client (s_client, fpx_attach (s_client, group.name, "shard", wide.name, NULL),
                     FPX_EINVAL, "attach to a nested group");
    //  The other connection's objects are not found from this one.
    fpx_client_t *second = fpx_test_client (&s_server, fpx_test_key_a);
    if (second) {
        s_expect_client (second, fpx_attach (second, group.name, "shard", wide.name, NULL),
                         FPX_ENOTFOUND, "attach from another connection");
        fpx_client_destroy (&second);
    }
    CHECK_OK (s_client, fpx_index_drop (s_client, group.name));
    CHECK_OK (s_client, fpx_index_drop (s_client, wide.name));
    CHECK_OK (s_client, fpx_index_drop (s_client, other.name));
}

static void
test_server_exit (void *arg)
{
    (void) arg;
    CHECK (fpx_test_server_alive (&s_server), "faissproxyd died during the bad input tests");
    CHECK_EQ (fpx_test_fresh_ping (&s_server), 0);
    int status = fpx_test_server_stop (&s_server, 30);
    CHECK (status == 0, "faissproxyd exit status %d after SIGTERM, expected 0 (%s)", status,
           s_server.diagnosis);
}

int
main (void)
{
    fpx_test_local_single_thread ();
    s_x = fpx_data_uniform (1, 1000, DIM);
    const char *args [] = { "--max-message-mb", "1", NULL };
    fpx_test_watch (&s_server);
    if (fpx_test_server_start (&s_server, args, NULL)) {
        fpx_test_fail_whole ("badinput.server_start", "faissproxyd did not start");
        free (s_x);
        return fpx_test_finish ();
    }
    s_raw = fpx_raw_new (s_server.endpoint);
    s_client = fpx_test_client (&s_server, fpx_test_key_a);
    if (!s_raw || !s_client
    ||  fpx_index_create (s_client, "bad_flat", DIM, "Flat", FPX_METRIC_L2, NULL) < 0
    ||  fpx_add (s_client, "bad_flat", NFLAT, DIM, s_x, NULL) < 0)
        fpx_test_fail_whole ("badinput.setup", "cannot set up the index \"bad_flat\"");
    else {
        struct { const char *name; fpx_test_fn_t *fn; } tests [] = {
            { "badinput.wrong_key", test_wrong_key },
            { "badinput.empty_key", test_empty_key },
            { "badinput.unknown_opcode", test_unknown_opcode },
            { "badinput.wrong_version", test_wrong_version },
            { "badinput.truncated_header", test_truncated_header },
            { "badinput.missing_frames", test_missing_frames },
            { "badinput.array_sizes", test_array_sizes },
            { "badinput.dimension", test_dimension },
            { "badinput.k", test_k },
            { "badinput.nq_zero", test_nq_zero },
            { "badinput.bogus_factory", test_bogus_factory },
            { "badinput.untrained_ivf", test_untrained_ivf },
            { "badinput.too_big", test_too_big },
            { "badinput.msgpack_absurd", test_msgpack_absurd },
            { "badinput.wrong_types", test_wrong_types },
            { "badinput.names", test_names },
            { "badinput.nonfinite", test_nonfinite },
            { "badinput.absurd_factories", test_absurd_factories },
            { "badinput.hostile_upload", test_hostile_upload },
            { "badinput.set_parameters_bounds", test_set_parameters_bounds },
            { "badinput.attach", test_attach },
        };
        for (size_t i = 0; i < sizeof tests / sizeof tests [0]; i++) {
            if (fpx_test_server_alive (&s_server))
                fpx_test_run (tests [i].name, tests [i].fn, NULL);
            else
                fpx_test_fail_whole (tests [i].name, "faissproxyd is dead (see the previous failure)");
        }
    }
    fpx_raw_destroy (&s_raw);
    fpx_client_destroy (&s_client);
    fpx_test_run ("badinput.server_alive_and_exit", test_server_exit, NULL);
    free (s_x);
    return fpx_test_finish ();
}
