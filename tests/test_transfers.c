/*  test_transfers.c — indexes larger than one message, in and out.

    One faissproxyd started with --max-message-mb 4 (the chunk size is then
    2 MiB) holds a Flat index whose serialization is ~31 MB: download and
    upload go through the download_… and upload_… opcodes in chunks (docs/PROTOCOL.md,
    "Transfers"), byte-exact against FAISS in-process, searches equal to
    FAISS's. The server's peak RSS (VmHWM, reset through clear_refs) stays
    within the bound stated below; an abandoned upload is freed with its
    connection (its quota comes back); hostile offsets, sizes and ids are
    refused; a restored index keeps its factory string.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fpx_test.h"

#define DIM     128
#define NB      60000           //  30.7 MB of vectors: ~8 messages of 4 MiB
#define NQ      20
#define K       10
#define BATCH   5000            //  2.6 MB per add, within the message limit
#define CHUNK   (2 << 20)       //  --max-message-mb 4 / 2

static fpx_test_server_t s_server;
static fpx_client_t *s_a;
static float *s_xb, *s_xq;
static FaissIndex *s_local;
static uint8_t *s_local_bytes;
static size_t s_local_size;

/* ---- helpers ------------------------------------------------------------------ */

//  The tenant's open transfers and their bytes (info), through a fresh
//  connection of tenant A.
static int
s_transfers (const fpx_test_server_t *server, int64_t *count, int64_t *bytes)
{
    fpx_raw_t *raw = fpx_raw_new (server->endpoint);
    if (!raw)
        return -1000;
    fpx_raw_reply_t reply;
    int status = fpx_raw_call (raw, FPX_OP_INFO, fpx_test_key_a, NULL, 0, 0, NULL, NULL, &reply);
    if (status == 0 && (fpx_params_get_int (&reply.result, "transfers", count)
                     || fpx_params_get_int (&reply.result, "transfer_bytes", bytes)))
        status = -1001;
    fpx_raw_reply_free (&reply);
    fpx_raw_destroy (&raw);
    return status;
}

//  Waits up to 10 s for the tenant to have `count` transfers open.
static bool
s_wait_transfers (const fpx_test_server_t *server, int64_t count)
{
    int64_t now = -1, bytes = 0;
    for (int i = 0; i < 200; i++) {
        if (s_transfers (server, &now, &bytes) == 0 && now == count)
            return true;
        fpx_sleep_ms (50);
    }
    return false;
}

//  A raw request with params {k1: v1, k2: v2, …} (ints; name strings
//  through str_key) and at most one array.
static int
s_raw (fpx_raw_t *raw, int opcode, const char *key, const char *str_key, const char *str,
       int nints, const char *const *keys, const int64_t *values,
       const void *array, size_t array_size, fpx_raw_reply_t *reply)
{
    fpx_mp_t mp;
    fpx_mp_init (&mp);
    msgpack_pack_map (&mp.pk, (size_t) nints + (str_key ? 1 : 0));
    for (int i = 0; i < nints; i++) {
        fpx_pack_kv_int (&mp.pk, keys [i], values [i]);
    }
    if (str_key)
        fpx_pack_kv_str (&mp.pk, str_key, str);
    const void *arrays [1] = { array };
    size_t sizes [1] = { array_size };
    int status = fpx_raw_call (raw, opcode, key, mp.buf.data, mp.buf.size, array ? 1 : 0,
                               arrays, sizes, reply);
    fpx_mp_free (&mp);
    return status;
}

//  A raw call whose reply we only need the status and one int of.
static int
s_raw_int (fpx_raw_t *raw, int opcode, const char *key, int nints, const char *const *keys,
           const int64_t *values, const void *array, size_t array_size,
           const char *result_key, int64_t *result)
{
    fpx_raw_reply_t reply;
    int status = s_raw (raw, opcode, key, NULL, NULL, nints, keys, values, array, array_size,
                        &reply);
    if (status == 0 && result_key && fpx_params_get_int (&reply.result, result_key, result))
        status = -1001;
    fpx_raw_reply_free (&reply);
    return status;
}

//  VmHWM / VmRSS of the server in KiB; clear_refs 5 resets VmHWM to the
//  current RSS (proc(5)), so a peak can be measured per phase.
static long
s_status_kb (const fpx_test_server_t *server, const char *field)
{
    char path [64], line [256];
    snprintf (path, sizeof path, "/proc/%d/status", (int) server->pid);
    FILE *file = fopen (path, "r");
    long value = -1;
    size_t len = strlen (field);
    while (file && fgets (line, sizeof line, file))
        if (strncmp (line, field, len) == 0)
            value = strtol (line + len, NULL, 10);
    if (file)
        fclose (file);
    return value;
}

static bool
s_reset_peak (const fpx_test_server_t *server)
{
    char path [64];
    snprintf (path, sizeof path, "/proc/%d/clear_refs", (int) server->pid);
    FILE *file = fopen (path, "w");
    bool ok = file && fputs ("5", file) >= 0;
    if (file)
        ok = fclose (file) == 0 && ok;
    return ok;
}

static void
s_compare_search (const char *name)
{
    fpx_knn_t ref, got;
    char why [256];
    CHECK_EQ (fpx_local_knn (s_local, NQ, s_xq, K, 4, &ref), 0);
    if (CHECK_OK (s_a, fpx_remote_knn (s_a, name, NQ, DIM, s_xq, K, NULL, &got)))
        CHECK (fpx_knn_equal (&ref, &got, why, sizeof why), "%s: %s", name, why);
    fpx_knn_free (&ref);
    fpx_knn_free (&got);
}

/* ---- tests -------------------------------------------------------------------- */

//  Build "big" remotely and locally; its serialization passes the limit.
static void
test_build (void *arg)
{
    (void) arg;
    REQUIRE_OK (s_a, fpx_index_create (s_a, "big", DIM, "Flat", FPX_METRIC_L2, NULL));
    for (int64_t i = 0; i < NB; i += BATCH)
        REQUIRE_OK (s_a, fpx_add (s_a, "big", BATCH, DIM, s_xb + i * DIM, NULL));
    char why [256];
    s_local = fpx_local_create (DIM, "Flat", FPX_METRIC_L2, why, sizeof why);
    REQUIRE (s_local, "%s", why);
    REQUIRE_TRUE (faiss_Index_add (s_local, NB, s_xb) == 0);
    s_local_bytes = fpx_local_serialize (s_local, &s_local_size);
    REQUIRE_TRUE (s_local_bytes != NULL);
    CHECK (s_local_size > 4u << 20, "serialized size %zu must pass the 4 MiB limit", s_local_size);
    //  The one-message serialize names the limit and the way round it.
    fpx_raw_t *raw = fpx_raw_new (s_server.endpoint);
    fpx_raw_reply_t reply;
    REQUIRE_TRUE (raw != NULL);
    int status = s_raw (raw, FPX_OP_SERIALIZE, fpx_test_key_a, "name", "big", 0, NULL, NULL,
                        NULL, 0, &reply);
    CHECK_EQ (status, FPX_ETOOBIG);
    CHECK (strstr (reply.error, "--max-message-mb 4") != NULL, "message: %s", reply.error);
    fpx_raw_reply_free (&reply);
    fpx_raw_destroy (&raw);
}

//  Download in chunks: byte-exact with FAISS in-process; upload it back
//  under a name: same bytes again, same search results, factory kept.
static void
test_round_trip (void *arg)
{
    (void) arg;
    REQUIRE_TRUE (s_local_bytes != NULL);
    uint8_t *bytes = NULL;
    size_t size = 0;
    REQUIRE_OK (s_a, fpx_serialize (s_a, "big", &bytes, &size));
    CHECK_EQ (size, s_local_size);
    CHECK_TRUE (size == s_local_size && memcmp (bytes, s_local_bytes, size) == 0);
    fpx_index_info_t info;
    if (CHECK_OK (s_a, fpx_deserialize (s_a, "big_copy", NULL, bytes, size, &info))) {
        CHECK_EQ (info.ntotal, NB);
        CHECK_STR (info.factory, "Flat");
        s_compare_search ("big_copy");
        uint8_t *again = NULL;
        size_t again_size = 0;
        if (CHECK_OK (s_a, fpx_serialize (s_a, "big_copy", &again, &again_size)))
            CHECK_TRUE (again_size == size && memcmp (again, bytes, size) == 0);
        fpx_free (again);
    }
    //  Anonymous too.
    if (CHECK_OK (s_a, fpx_deserialize (s_a, NULL, NULL, bytes, size, &info))) {
        CHECK_EQ (info.ntotal, NB);
        s_compare_search (info.name);
        CHECK_OK (s_a, fpx_index_drop (s_a, info.name));
    }
    fpx_free (bytes);
    int64_t open = -1, held = -1;
    CHECK_EQ (s_transfers (&s_server, &open, &held), 0);
    CHECK_EQ (open, 0);
    CHECK_EQ (held, 0);
}

typedef struct {
    size_t pieces, largest, used;
    uint8_t *data;
    size_t fail_after;          //  0: never
} s_pieces_t;

static int
s_collect (void *arg, const uint8_t *data, size_t size)
{
    s_pieces_t *pieces = arg;
    if (pieces->fail_after && pieces->pieces == pieces->fail_after)
        return -1;
    pieces->pieces++;
    if (size > pieces->largest)
        pieces->largest = size;
    if (pieces->used + size <= s_local_size)
        memcpy (pieces->data + pieces->used, data, size);
    pieces->used += size;
    return 0;
}

static int
s_provide (void *arg, uint8_t *data, size_t size)
{
    s_pieces_t *pieces = arg;
    if (pieces->fail_after && pieces->pieces == pieces->fail_after)
        return -1;
    pieces->pieces++;
    if (size > pieces->largest)
        pieces->largest = size;
    if (pieces->used + size > s_local_size)
        return -1;
    memcpy (data, s_local_bytes + pieces->used, size);
    pieces->used += size;
    return 0;
}

//  The streaming calls see pieces of at most one chunk; a writer or
//  reader that fails stops the transfer, which the server then frees.
static void
test_streaming (void *arg)
{
    (void) arg;
    REQUIRE_TRUE (s_local_bytes != NULL);
    s_pieces_t out = { .data = malloc (s_local_size) };
    size_t size = 0;
    REQUIRE_TRUE (out.data != NULL);
    if (CHECK_OK (s_a, fpx_serialize_to (s_a, "big", s_collect, &out, &size))) {
        CHECK_EQ (size, s_local_size);
        CHECK_EQ (out.used, s_local_size);
        CHECK (out.pieces >= s_local_size / CHUNK, "%zu pieces", out.pieces);
        CHECK (out.largest <= CHUNK, "a piece of %zu bytes", out.largest);
        CHECK_TRUE (memcmp (out.data, s_local_bytes, s_local_size) == 0);
    }
    free (out.data);
    s_pieces_t broken = { .fail_after = 3, .data = malloc (s_local_size) };
    CHECK_RC (s_a, fpx_serialize_to (s_a, "big", s_collect, &broken, NULL), FPX_EIO);
    free (broken.data);
    int64_t open = -1, held = -1;
    CHECK_EQ (s_transfers (&s_server, &open, &held), 0);
    CHECK_EQ (open, 0);

    s_pieces_t in = { 0 };
    fpx_index_info_t info;
    if (CHECK_OK (s_a, fpx_deserialize_from (s_a, "streamed", "Flat,my-label", s_local_size,
                                             s_provide, &in, &info))) {
        CHECK_STR (info.factory, "Flat,my-label");
        CHECK_EQ (info.ntotal, NB);
        CHECK (in.largest <= CHUNK, "a piece of %zu bytes", in.largest);
        s_compare_search ("streamed");
    }
    s_pieces_t failing = { .fail_after = 2 };
    CHECK_RC (s_a, fpx_deserialize_from (s_a, "never", NULL, s_local_size, s_provide,
                                         &failing, NULL), FPX_EIO);
    CHECK_RC (s_a, fpx_index_open (s_a, "never", NULL), FPX_ENOTFOUND);
    CHECK_EQ (s_transfers (&s_server, &open, &held), 0);
    CHECK_EQ (open, 0);
    //  A taken name fails before any byte travels.
    s_pieces_t unused = { 0 };
    CHECK_RC (s_a, fpx_deserialize_from (s_a, "big", NULL, s_local_size, s_provide, &unused,
                                         NULL), FPX_EEXIST);
    CHECK_EQ (unused.pieces, 0);
}

//  Peak RSS of the daemon. Bound stated: an upload of S bytes peaks
//  within RSS before + 2·S + 48 MiB (the gathered bytes, the index FAISS
//  builds from them, a few chunks and allocator slack); a download of an
//  index already held within RSS before + S + 48 MiB (its one
//  serialization and the chunks in flight).
static void
test_peak_rss (void *arg)
{
    (void) arg;
    REQUIRE_TRUE (s_local_bytes != NULL);
    if (fpx_test_asan ()) {
        //  ASan's quarantine keeps freed memory resident: no RSS bound.
        (void) CHECK_TRUE (true);
        return;
    }
    long slack_kb = 48 << 10, size_kb = (long) (s_local_size >> 10);
    fpx_index_info_t info;
    REQUIRE_TRUE (s_reset_peak (&s_server));
    long before = s_status_kb (&s_server, "VmRSS:");
    REQUIRE_OK (s_a, fpx_deserialize (s_a, "rss_copy", NULL, s_local_bytes, s_local_size, &info));
    long peak = s_status_kb (&s_server, "VmHWM:");
    CHECK (peak > 0 && peak - before <= 2 * size_kb + slack_kb, "upload of %ld KiB: peak "
           "%ld KiB over %ld KiB before, bound %ld", size_kb, peak - before, before,
           2 * size_kb + slack_kb);
    fprintf (stderr, "# upload of %ld KiB: server peak +%ld KiB\n", size_kb, peak - before);

    REQUIRE_TRUE (s_reset_peak (&s_server));
    before = s_status_kb (&s_server, "VmRSS:");
    uint8_t *bytes = NULL;
    size_t size = 0;
    REQUIRE_OK (s_a, fpx_serialize (s_a, "rss_copy", &bytes, &size));
    peak = s_status_kb (&s_server, "VmHWM:");
    CHECK (peak > 0 && peak - before <= size_kb + slack_kb, "download of %ld KiB: peak %ld KiB "
           "over %ld KiB before, bound %ld", size_kb, peak - before, before, size_kb + slack_kb);
    fprintf (stderr, "# download of %ld KiB: server peak +%ld KiB\n", size_kb, peak - before);
    fpx_free (bytes);
    CHECK_OK (s_a, fpx_index_drop (s_a, "rss_copy"));
}

//  Every hostile offset, size and id is refused; nothing is registered.
static void
test_hostile (void *arg)
{
    (void) arg;
    fpx_raw_t *raw = fpx_raw_new (s_server.endpoint);
    fpx_raw_t *other = fpx_raw_new (s_server.endpoint);
    REQUIRE_TRUE (raw && other);
    const char *key = fpx_test_key_a;
    uint8_t *chunk = calloc (1, CHUNK + 1);
    REQUIRE_TRUE (chunk != NULL);
    int64_t transfer = 0, value = 0;
    const char *size_key [] = { "size" };
    int64_t bad_sizes [] = { 0, -1, (int64_t) 1 << 60 };
    for (int i = 0; i < 3; i++)
        CHECK_EQ (s_raw_int (raw, FPX_OP_UPLOAD_BEGIN, key, 1, size_key, &bad_sizes [i], NULL, 0,
                             NULL, NULL), FPX_EINVAL);
    int64_t size = 3 * 1024 * 1024;
    REQUIRE_TRUE (s_raw_int (raw, FPX_OP_UPLOAD_BEGIN, key, 1, size_key, &size, NULL, 0,
                             "transfer", &transfer) == 0);
    const char *chunk_keys [] = { "transfer", "offset" };
    int64_t at [2] = { transfer, 0 };
    //  Too big a chunk, out-of-order offsets, and past the declared size.
    CHECK_EQ (s_raw_int (raw, FPX_OP_UPLOAD_CHUNK, key, 2, chunk_keys, at, chunk, CHUNK + 1,
                         NULL, NULL), FPX_EINVAL);
    int64_t offsets [] = { 1, -1, INT64_MAX, size };
    for (int i = 0; i < 4; i++) {
        int64_t values [2] = { transfer, offsets [i] };
        CHECK_EQ (s_raw_int (raw, FPX_OP_UPLOAD_CHUNK, key, 2, chunk_keys, values, chunk, 16,
                             NULL, NULL), FPX_EINVAL);
    }
    CHECK_EQ (s_raw_int (raw, FPX_OP_UPLOAD_CHUNK, key, 2, chunk_keys, at, chunk, 0, NULL, NULL),
              FPX_EINVAL);
    CHECK_EQ (s_raw_int (raw, FPX_OP_UPLOAD_CHUNK, key, 2, chunk_keys, at, chunk, CHUNK,
                         "received", &value), 0);
    CHECK_EQ (value, CHUNK);
    int64_t past [2] = { transfer, CHUNK };
    CHECK_EQ (s_raw_int (raw, FPX_OP_UPLOAD_CHUNK, key, 2, chunk_keys, past, chunk, CHUNK,
                         NULL, NULL), FPX_EINVAL);
    //  Incomplete commit; another connection's or tenant's transfer.
    const char *id_key [] = { "transfer" };
    CHECK_EQ (s_raw_int (raw, FPX_OP_UPLOAD_COMMIT, key, 1, id_key, &transfer, NULL, 0, NULL,
                         NULL), FPX_EINVAL);
    CHECK_EQ (s_raw_int (other, FPX_OP_UPLOAD_CHUNK, key, 2, chunk_keys, past, chunk, 16,
                         NULL, NULL), FPX_ENOTFOUND);
    CHECK_EQ (s_raw_int (other, FPX_OP_UPLOAD_COMMIT, key, 1, id_key, &transfer, NULL, 0, NULL,
                         NULL), FPX_ENOTFOUND);
    CHECK_EQ (s_raw_int (raw, FPX_OP_UPLOAD_COMMIT, fpx_test_key_b, 1, id_key, &transfer, NULL,
                         0, NULL, NULL), FPX_ENOTFOUND);
    CHECK_EQ (s_raw_int (raw, FPX_OP_DOWNLOAD_CHUNK, key, 2, chunk_keys, at, NULL, 0, NULL,
                         NULL), FPX_ENOTFOUND);
    //  The rest is garbage: the upload checks refuse it at commit.
    int64_t rest [2] = { transfer, CHUNK };
    memset (chunk, 0x41, CHUNK);
    CHECK_EQ (s_raw_int (raw, FPX_OP_UPLOAD_CHUNK, key, 2, chunk_keys, rest, chunk,
                         (size_t) size - CHUNK, "received", &value), 0);
    fpx_raw_reply_t reply;
    int status = s_raw (raw, FPX_OP_UPLOAD_COMMIT, key, NULL, NULL, 1, id_key, &transfer, NULL,
                        0, &reply);
    CHECK_EQ (status, FPX_EINVAL);
    CHECK (strstr (reply.error, "uploaded index") != NULL, "message: %s", reply.error);
    fpx_raw_reply_free (&reply);
    CHECK_EQ (s_raw_int (raw, FPX_OP_UPLOAD_COMMIT, key, 1, id_key, &transfer, NULL, 0, NULL,
                         NULL), FPX_ENOTFOUND);

    //  Download ranges: offsets outside, lengths 0 or over a chunk.
    status = s_raw (raw, FPX_OP_DOWNLOAD_BEGIN, key, "name", "big", 0, NULL, NULL, NULL, 0,
                    &reply);
    CHECK_EQ (status, 0);
    int64_t total = 0;
    if (status == 0) {
        CHECK_EQ (fpx_params_get_int (&reply.result, "transfer", &transfer), 0);
        CHECK_EQ (fpx_params_get_int (&reply.result, "size", &total), 0);
        CHECK_EQ (reply.nframes, 3);
        CHECK_EQ (reply.sizes [2], CHUNK);
    }
    fpx_raw_reply_free (&reply);
    const char *range_keys [] = { "transfer", "offset", "length" };
    int64_t ranges [][3] = { { transfer, total, 1 }, { transfer, -1, 1 },
                             { transfer, INT64_MAX, 1 }, { transfer, 0, 0 },
                             { transfer, 0, CHUNK + 1 }, { transfer + 1000, 0, 1 } };
    int expected [] = { FPX_EINVAL, FPX_EINVAL, FPX_EINVAL, FPX_EINVAL, FPX_EINVAL,
                        FPX_ENOTFOUND };
    for (int i = 0; i < 6; i++)
        CHECK_EQ (s_raw_int (raw, FPX_OP_DOWNLOAD_CHUNK, key, 3, range_keys, ranges [i], NULL, 0,
                             NULL, NULL), expected [i]);
    //  A range read back matches FAISS's bytes; the last one ends it.
    int64_t last [3] = { transfer, total - 100, CHUNK };
    status = s_raw (raw, FPX_OP_DOWNLOAD_CHUNK, key, NULL, NULL, 3, range_keys, last, NULL, 0,
                    &reply);
    CHECK_EQ (status, 0);
    if (status == 0 && CHECK_EQ (reply.nframes, 3) && CHECK_EQ (reply.sizes [2], 100))
        CHECK_TRUE (memcmp (reply.frames [2], s_local_bytes + total - 100, 100) == 0);
    fpx_raw_reply_free (&reply);
    CHECK_EQ (s_raw_int (raw, FPX_OP_DOWNLOAD_CHUNK, key, 3, range_keys, ranges [3], NULL, 0,
                         NULL, NULL), FPX_EINVAL);
    int64_t first [3] = { transfer, 0, 1 };
    CHECK_EQ (s_raw_int (raw, FPX_OP_DOWNLOAD_CHUNK, key, 3, range_keys, first, NULL, 0, NULL,
                         NULL), FPX_ENOTFOUND);

    //  At most FPX_TRANSFERS_PER_CONN open on one connection.
    int64_t small = 1 << 20, ids [FPX_TRANSFERS_PER_CONN];
    for (int i = 0; i < FPX_TRANSFERS_PER_CONN; i++)
        CHECK_EQ (s_raw_int (raw, FPX_OP_UPLOAD_BEGIN, key, 1, size_key, &small, NULL, 0,
                             "transfer", &ids [i]), 0);
    CHECK_EQ (s_raw_int (raw, FPX_OP_UPLOAD_BEGIN, key, 1, size_key, &small, NULL, 0, NULL,
                         NULL), FPX_EBUSY);
    for (int i = 0; i < FPX_TRANSFERS_PER_CONN; i++)
        CHECK_EQ (s_raw_int (raw, FPX_OP_TRANSFER_ABORT, key, 1, id_key, &ids [i], NULL, 0,
                             NULL, NULL), 0);
    CHECK_EQ (s_raw_int (raw, FPX_OP_TRANSFER_ABORT, key, 1, id_key, &ids [0], NULL, 0,
                         NULL, NULL), FPX_ENOTFOUND);
    int64_t open = -1, held = -1;
    CHECK_EQ (s_transfers (&s_server, &open, &held), 0);
    CHECK_EQ (open, 0);
    free (chunk);
    fpx_raw_destroy (&raw);
    fpx_raw_destroy (&other);
    CHECK_TRUE (fpx_test_server_alive (&s_server));
}

//  A server whose tenants have max_memory_mb = 24: an upload's declared
//  size is charged at begin; the connection that abandons it gives it
//  back when it closes, and the next upload fits.
static void
test_abandoned (void *arg)
{
    (void) arg;
    fpx_test_server_t server;
    const char *args [] = { "--max-message-mb", "4", "--default-tenant-limits",
                            "max_memory_mb=24", NULL };
    REQUIRE (fpx_test_server_start (&server, args, NULL) == 0, "second server did not start");
    fpx_raw_t *raw = fpx_raw_new (server.endpoint), *next = fpx_raw_new (server.endpoint);
    const char *size_key [] = { "size" }, *chunk_keys [] = { "transfer", "offset" };
    int64_t size = 16 << 20, transfer = 0;
    uint8_t *chunk = calloc (1, CHUNK);
    if (CHECK_TRUE (raw && next && chunk)
    &&  CHECK_EQ (s_raw_int (raw, FPX_OP_UPLOAD_BEGIN, fpx_test_key_a, 1, size_key, &size, NULL,
                             0, "transfer", &transfer), 0)) {
        int64_t at [2] = { transfer, 0 };
        CHECK_EQ (s_raw_int (raw, FPX_OP_UPLOAD_CHUNK, fpx_test_key_a, 2, chunk_keys, at, chunk,
                             CHUNK, NULL, NULL), 0);
        int64_t open = -1, held = -1;
        CHECK_EQ (s_transfers (&server, &open, &held), 0);
        CHECK_EQ (open, 1);
        CHECK_EQ (held, size);
        fpx_raw_reply_t reply;
        int status = s_raw (next, FPX_OP_UPLOAD_BEGIN, fpx_test_key_a, NULL, NULL, 1, size_key,
                            &size, NULL, 0, &reply);
        CHECK_EQ (status, FPX_EQUOTA);
        CHECK (strstr (reply.error, "max_memory_mb = 24") != NULL, "message: %s", reply.error);
        fpx_raw_reply_free (&reply);
        fpx_raw_destroy (&raw);
        CHECK (s_wait_transfers (&server, 0), "the abandoned upload was not freed");
        CHECK_EQ (s_raw_int (next, FPX_OP_UPLOAD_BEGIN, fpx_test_key_a, 1, size_key, &size, NULL,
                             0, "transfer", &transfer), 0);
    }
    free (chunk);
    fpx_raw_destroy (&raw);
    fpx_raw_destroy (&next);
    CHECK_EQ (fpx_test_server_stop (&server, 10), 0);
}

//  Without a factory from the client, a deserialized index gets the
//  factory string FAISS builds its structure from.
static void
test_factory_recovered (void *arg)
{
    (void) arg;
    static const char *factories [] = {
        "Flat", "IVF8,Flat", "IVF8,PQ4", "IVF8,PQ4x6", "IVF8,SQ8", "IVF8_HNSW8,Flat",
        "HNSW16", "HNSW16_SQ8", "HNSW16_PQ4", "PQ8", "SQfp16", "LSH", "IDMap,Flat",
        "IDMap2,IVF8,Flat", "PCA16,Flat", "PCAW16,Flat", "L2norm,Flat", "RR32,IVF8,SQ8",
    };
    int d = 32;
    for (size_t i = 0; i < sizeof factories / sizeof factories [0]; i++) {
        fpx_index_info_t made, back;
        if (!CHECK_OK (s_a, fpx_index_create (s_a, NULL, d, factories [i], FPX_METRIC_L2, &made)))
            continue;
        //  Untrained: the structure is what counts (and PQ training is slow).
        uint8_t *bytes = NULL;
        size_t size = 0;
        if (CHECK_OK (s_a, fpx_serialize (s_a, made.name, &bytes, &size))
        &&  CHECK_OK (s_a, fpx_deserialize (s_a, NULL, NULL, bytes, size, &back))) {
            CHECK (strcmp (back.factory, factories [i]) == 0, "%s came back as '%s'",
                   factories [i], back.factory);
            CHECK_OK (s_a, fpx_index_drop (s_a, back.name));
        }
        fpx_free (bytes);
        CHECK_OK (s_a, fpx_index_drop (s_a, made.name));
    }
    //  No factory string builds an OPQ transform's stored form (a plain
    //  LinearTransform), nor a Flat IVF without residuals: "".
    fpx_index_info_t made, back;
    if (CHECK_OK (s_a, fpx_index_create (s_a, NULL, d, "OPQ4_32,IVF8,PQ4", FPX_METRIC_L2, &made))) {
        uint8_t *bytes = NULL;
        size_t size = 0;
        if (CHECK_OK (s_a, fpx_serialize (s_a, made.name, &bytes, &size))
        &&  CHECK_OK (s_a, fpx_deserialize (s_a, NULL, NULL, bytes, size, &back)))
            CHECK_STR (back.factory, "");
        fpx_free (bytes);
    }
}

int
main (void)
{
    fpx_test_local_single_thread ();
    s_xb = fpx_data_uniform (51, NB, DIM);
    s_xq = fpx_data_uniform (52, NQ, DIM);
    fpx_test_watch (&s_server);
    const char *args [] = { "--max-message-mb", "4", NULL };
    if (fpx_test_server_start (&s_server, args, NULL) == 0) {
        s_a = fpx_test_client (&s_server, fpx_test_key_a);
        if (s_a) {
            fpx_test_run ("transfers.factory_recovered", test_factory_recovered, NULL);
            fpx_test_run ("transfers.build", test_build, NULL);
            fpx_test_run ("transfers.round_trip", test_round_trip, NULL);
            fpx_test_run ("transfers.streaming", test_streaming, NULL);
            fpx_test_run ("transfers.peak_rss", test_peak_rss, NULL);
            fpx_test_run ("transfers.hostile", test_hostile, NULL);
        }
        else
            fpx_test_fail_whole ("transfers.client", "fpx_client_new returned NULL");
        fpx_client_destroy (&s_a);
        fpx_test_watch (NULL);
        fpx_test_run ("transfers.abandoned", test_abandoned, NULL);
        fpx_test_server_stop (&s_server, 10);
    }
    else
        fpx_test_fail_whole ("transfers.server_start", "faissproxyd did not start");
    if (s_local)
        faiss_Index_free (s_local);
    free (s_local_bytes);
    free (s_xb);
    free (s_xq);
    return fpx_test_finish ();
}
