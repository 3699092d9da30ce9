/*  test_info.c — the info opcode through fpx_info and `faissproxy info`.

    One faissproxyd with tenants alice and bob (admin keys) and a read key
    of alice's (--keys-file). Each test makes known requests and checks
    the exact figures info reports:
    - counts: 7 searches move search's FPX_OK count by exactly 7 between
      two info calls, a missing index adds one describe FPX_ENOTFOUND,
      latency counts move with them and their percentiles are ordered;
    - memory and disk: an index's memory_bytes is describe's memory_bytes
      and the size of the same index serialized by FAISS in-process; its
      disk_bytes is what its files hold in the data directory, after a
      save and after a logged add; the tenant's totals are the sums;
    - sealing: bob sees none of alice's index names or counts, alice none
      of bob's; FPX_INFO_ALL is an admin's only (FPX_EPERM for the read
      key) and lists both tenants;
    - bounds: the index list is cut at max_indexes and says so; bad
      parameters are FPX_EINVAL from the client and from the server;
    - the CLI: `faissproxy info` prints the sections with the same
      figures, --json the same object, and bob's output no alice index.
*/
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sodium.h>

#include "fpx_info.h"
#include "fpx_test.h"

#define DIM      16
#define NB       200
#define SEARCHES 7
#define READ_KEY "info-test-read-key-0123456789abcdef"

static fpx_test_server_t s_server;
static float *s_xb;

/* ---- helpers ------------------------------------------------------------------ */

static int64_t
s_int (const fpx_info_t *info, const char *path)
{
    int64_t value = -1;
    if (fpx_info_int (info, path, &value) != 0)
        return -1;
    return value;
}

//  An int figure that may be absent (0 then): a count not yet seen.
static int64_t
s_count (const fpx_info_t *info, const char *path)
{
    int64_t value = 0;
    fpx_info_int (info, path, &value);
    return value;
}

static double
s_double (const fpx_info_t *info, const char *path)
{
    double value = -1;
    fpx_info_double (info, path, &value);
    return value;
}

//  The row of index_list whose name is name, or -1.
static int
s_index_row (const fpx_info_t *info, const char *name)
{
    char path [64];
    for (int row = 0; row < FPX_INFO_INDEXES_MAX; row++) {
        snprintf (path, sizeof path, "index_list.%d.name", row);
        const char *found = fpx_info_str (info, path);
        if (!found)
            return -1;
        if (strcmp (found, name) == 0)
            return row;
    }
    return -1;
}

static int64_t
s_index_figure (const fpx_info_t *info, const char *name, const char *figure)
{
    int row = s_index_row (info, name);
    if (row < 0)
        return -1;
    char path [96];
    snprintf (path, sizeof path, "index_list.%d.%s", row, figure);
    return s_int (info, path);
}

//  Bytes of the regular files in the index's directory.
static int64_t
s_files_bytes (const char *tenant, const char *name)
{
    char dir [512];
    snprintf (dir, sizeof dir, "%s/tenants/%s/%s", s_server.data_dir, tenant, name);
    DIR *handle = opendir (dir);
    if (!handle)
        return -1;
    int64_t total = 0;
    struct dirent *item;
    while ((item = readdir (handle))) {
        char path [800];
        struct stat st;
        snprintf (path, sizeof path, "%s/%s", dir, item->d_name);
        if (item->d_name [0] != '.' && stat (path, &st) == 0 && S_ISREG (st.st_mode))
            total += (int64_t) st.st_size;
    }
    closedir (handle);
    return total;
}

//  Whether any figure's path or text holds needle.
static bool
s_mentions (const fpx_info_t *info, const char *needle)
{
    for (size_t i = 0; i < fpx_info_count (info); i++)
        if (strstr (fpx_info_key (info, i), needle) || strstr (fpx_info_text_at (info, i), needle))
            return true;
    return strstr (fpx_info_json (info), needle) != NULL;
}

static void
s_search (fpx_client_t *client, const char *name, int times)
{
    float distances [3 * 5];
    int64_t labels [3 * 5];
    for (int i = 0; i < times; i++)
        CHECK_OK (client, fpx_search (client, name, 3, DIM, s_xb + i * DIM, 5, NULL,
                                      distances, labels));
}

/* ---- tests ---------------------------------------------------------------------- */

static void
test_counts (void *arg)
{
    (void) arg;
    fpx_client_t *client = fpx_test_client (&s_server, fpx_test_key_a);
    REQUIRE (client, "client");
    CHECK_OK (client, fpx_index_create (client, "counted", DIM, "Flat", FPX_METRIC_L2, NULL));
    CHECK_OK (client, fpx_add (client, "counted", NB, DIM, s_xb, NULL));
    s_search (client, "counted", 1);

    fpx_info_t *before = NULL, *after = NULL;
    REQUIRE_OK (client, fpx_info (client, 0, 0, &before));
    s_search (client, "counted", SEARCHES);
    fpx_index_info_t described;
    CHECK_RC (client, fpx_index_describe (client, "no_such_index", 0, &described), FPX_ENOTFOUND);
    if (!CHECK_OK (client, fpx_info (client, 0, 0, &after))) {
        fpx_info_free (&before);
        fpx_client_destroy (&client);
        return;
    }
    int64_t searched = s_count (after, "requests.search.FPX_OK");
    CHECK (searched >= SEARCHES + 1, "search count %lld", (long long) searched);
    CHECK_EQ (searched - s_count (before, "requests.search.FPX_OK"), SEARCHES);
    CHECK_EQ (s_count (after, "requests.describe.FPX_ENOTFOUND")
              - s_count (before, "requests.describe.FPX_ENOTFOUND"), 1);
    //  The first info was answered before the second ran: counted once.
    CHECK_EQ (s_count (after, "requests.info.FPX_OK") - s_count (before, "requests.info.FPX_OK"), 1);
    CHECK_EQ (s_count (after, "latency.search.count") - s_count (before, "latency.search.count"),
              SEARCHES);
    CHECK_EQ (s_count (after, "latency.search.count"), searched);
    double p50 = s_double (after, "latency.search.p50"), p90 = s_double (after, "latency.search.p90");
    double p99 = s_double (after, "latency.search.p99");
    double p999 = s_double (after, "latency.search.p999");
    CHECK (p50 > 0 && p50 <= p90 && p90 <= p99 && p99 <= p999 && p999 < 100,
           "percentiles %g %g %g %g", p50, p90, p99, p999);
    CHECK (s_double (after, "latency.search.sum_s") > 0, "sum_s");

    CHECK_STR (fpx_info_str (after, "tenant"), FPX_TEST_TENANT_A);
    CHECK_STR (fpx_info_str (after, "role"), "admin");
    CHECK_STR (fpx_info_str (after, "faiss_version"), fpx_info_str (before, "faiss_version"));
    CHECK (s_double (after, "uptime_s") >= s_double (before, "uptime_s")
           && s_double (before, "uptime_s") > 0, "uptime_s");
    CHECK (s_int (after, "workers") >= 1, "workers");
    CHECK (s_int (after, "queue_depth") >= 0 && s_int (after, "in_flight") >= 0
           && s_int (after, "connections") >= 1, "broker gauges");
    //  RSS from /proc, read by the server and by us a moment apart.
    long rss_kb = fpx_test_server_rss_kb (&s_server);
    int64_t rss = s_int (after, "rss_bytes");
    CHECK (rss > 0 && rss_kb > 0 && rss > rss_kb * 1024 / 2 && rss < rss_kb * 1024 * 2,
           "rss_bytes %lld vs VmRSS %ld KiB", (long long) rss, rss_kb);
    CHECK_EQ (fpx_info_type (after, "index_list_truncated"), FPX_INFO_BOOL);
    CHECK_EQ (s_int (after, "quotas.max_indexes"), 1000);
    CHECK_EQ (fpx_info_type (after, "no.such.figure"), FPX_INFO_NONE);
    CHECK_EQ (fpx_info_int (after, "tenant", &searched), FPX_EINVAL);
    CHECK_EQ (fpx_info_int (after, "no_such_figure", &searched), FPX_ENOTFOUND);
    fpx_info_free (&before);
    fpx_info_free (&after);
    CHECK (after == NULL, "fpx_info_free clears the pointer");
    fpx_client_destroy (&client);
}

static void
test_memory_and_disk (void *arg)
{
    (void) arg;
    fpx_client_t *client = fpx_test_client (&s_server, fpx_test_key_a);
    REQUIRE (client, "client");
    char why [256];
    FaissIndex *local = fpx_local_create (DIM, "IVF4,Flat", FPX_METRIC_L2, why, sizeof why);
    REQUIRE (local, "local index: %s", why);
    CHECK_OK (client, fpx_index_create (client, "sized", DIM, "IVF4,Flat", FPX_METRIC_L2, NULL));
    CHECK_OK (client, fpx_train (client, "sized", NB, DIM, s_xb));
    CHECK_OK (client, fpx_add (client, "sized", NB, DIM, s_xb, NULL));
    CHECK_EQ (faiss_Index_train (local, NB, s_xb), 0);
    CHECK_EQ (faiss_Index_add (local, NB, s_xb), 0);
    CHECK_OK (client, fpx_index_save (client, "sized"));

    fpx_info_t *info = NULL;
    fpx_index_info_t described;
    CHECK_OK (client, fpx_index_describe (client, "sized", 1, &described));
    REQUIRE_OK (client, fpx_info (client, 0, 0, &info));
    size_t local_size = 0;
    uint8_t *bytes = fpx_local_serialize (local, &local_size);
    CHECK (bytes && local_size > 0, "local serialize");
    free (bytes);
    CHECK_EQ (s_index_figure (info, "sized", "memory_bytes"), described.memory_bytes);
    CHECK_EQ (s_index_figure (info, "sized", "memory_bytes"), (int64_t) local_size);
    CHECK_EQ (s_index_figure (info, "sized", "ntotal"), NB);
    //  After a save: the snapshot and an empty log segment.
    int64_t saved = s_files_bytes (FPX_TEST_TENANT_A, "sized");
    CHECK (saved > (int64_t) local_size, "files %lld", (long long) saved);
    CHECK_EQ (s_index_figure (info, "sized", "disk_bytes"), saved);
    fpx_info_free (&info);

    //  A logged add: the log grows by its record, memory by the vectors.
    CHECK_OK (client, fpx_add (client, "sized", 10, DIM, s_xb, NULL));
    CHECK_EQ (faiss_Index_add (local, 10, s_xb), 0);
    REQUIRE_OK (client, fpx_info (client, 0, 0, &info));
    bytes = fpx_local_serialize (local, &local_size);
    free (bytes);
    CHECK_EQ (s_index_figure (info, "sized", "memory_bytes"), (int64_t) local_size);
    CHECK_EQ (s_index_figure (info, "sized", "ntotal"), NB + 10);
    int64_t logged = s_files_bytes (FPX_TEST_TENANT_A, "sized");
    CHECK (logged >= saved + 10 * DIM * 4, "files after add %lld", (long long) logged);
    CHECK_EQ (s_index_figure (info, "sized", "disk_bytes"), logged);

    //  The tenant's totals are the sums over its indexes (all named here).
    int64_t memory = 0, disk = 0, vectors = 0;
    int64_t listed = 0;
    for (int row = 0; ; row++, listed++) {
        char path [64];
        snprintf (path, sizeof path, "index_list.%d.name", row);
        const char *name = fpx_info_str (info, path);
        if (!name)
            break;
        memory += s_index_figure (info, name, "memory_bytes");
        disk += s_index_figure (info, name, "disk_bytes");
        vectors += s_index_figure (info, name, "ntotal");
    }
    CHECK_EQ (listed, s_int (info, "indexes"));
    CHECK_EQ (s_int (info, "memory_bytes"), memory);
    CHECK_EQ (s_int (info, "disk_bytes"), disk);
    CHECK_EQ (s_int (info, "vectors"), vectors);
    fpx_info_free (&info);
    faiss_Index_free (local);
    fpx_client_destroy (&client);
}

static void
test_sealing (void *arg)
{
    (void) arg;
    fpx_client_t *alice = fpx_test_client (&s_server, fpx_test_key_a);
    fpx_client_t *bob = fpx_test_client (&s_server, fpx_test_key_b);
    fpx_client_t *reader = fpx_test_client (&s_server, READ_KEY);
    REQUIRE (alice && bob && reader, "clients");
    CHECK_OK (alice, fpx_index_create (alice, "alice_private", DIM, "Flat", FPX_METRIC_L2, NULL));
    CHECK_OK (alice, fpx_add (alice, "alice_private", 33, DIM, s_xb, NULL));
    CHECK_OK (bob, fpx_index_create (bob, "bob_secret", DIM, "Flat", FPX_METRIC_L2, NULL));
    CHECK_OK (bob, fpx_add (bob, "bob_secret", 44, DIM, s_xb, NULL));
    s_search (alice, "alice_private", 3);

    fpx_info_t *a = NULL, *b = NULL, *r = NULL, *all = NULL;
    CHECK_OK (alice, fpx_info (alice, 0, 0, &a));
    CHECK_OK (bob, fpx_info (bob, 0, 0, &b));
    CHECK_OK (reader, fpx_info (reader, 0, 0, &r));
    if (a && b && r) {
        CHECK (!s_mentions (b, "alice"), "bob's info names alice");
        CHECK (!s_mentions (b, "counted") && !s_mentions (b, "sized"), "bob sees alice's indexes");
        CHECK (!s_mentions (a, "bob"), "alice's info names bob or his index");
        CHECK (!s_mentions (r, "bob"), "the read key's info names bob or his index");
        CHECK_EQ (s_int (b, "indexes"), 1);
        CHECK_EQ (s_index_figure (b, "bob_secret", "ntotal"), 44);
        CHECK_EQ (s_int (b, "vectors"), 44);
        CHECK (s_index_row (b, "alice_private") < 0, "alice_private listed for bob");
        //  bob never searched: alice's searches are not his.
        CHECK_EQ (fpx_info_type (b, "requests.search"), FPX_INFO_NONE);
        CHECK_EQ (fpx_info_type (b, "latency.search.count"), FPX_INFO_NONE);
        CHECK_EQ (s_count (b, "requests.create.FPX_OK"), 1);
        CHECK_EQ (s_count (b, "requests.add.FPX_OK"), 1);
        CHECK (s_count (a, "requests.search.FPX_OK") >= 3, "alice's searches");
        CHECK_EQ (fpx_info_type (b, "server"), FPX_INFO_NONE);
        //  The read key is alice's tenant: her figures, role read.
        CHECK_STR (fpx_info_str (r, "tenant"), FPX_TEST_TENANT_A);
        CHECK_STR (fpx_info_str (r, "role"), "read");
        CHECK_EQ (s_index_figure (r, "alice_private", "ntotal"), 33);
        CHECK_EQ (s_int (r, "indexes"), s_int (a, "indexes"));
    }
    CHECK_RC (reader, fpx_info (reader, 0, FPX_INFO_ALL, &all), FPX_EPERM);
    CHECK (all == NULL, "no handle on failure");
    CHECK (strstr (fpx_client_errmsg (reader), "admin") != NULL, "message: %s",
           fpx_client_errmsg (reader));
    if (CHECK_OK (alice, fpx_info (alice, 0, FPX_INFO_ALL, &all))) {
        const char *t0 = fpx_info_str (all, "server.tenants.0.tenant");
        const char *t1 = fpx_info_str (all, "server.tenants.1.tenant");
        CHECK (t0 && t1 && ((strcmp (t0, "alice") == 0 && strcmp (t1, "bob") == 0)
                            || (strcmp (t0, "bob") == 0 && strcmp (t1, "alice") == 0)),
               "tenants %s %s", t0 ? t0 : "-", t1 ? t1 : "-");
        int bob_row = t0 && strcmp (t0, "bob") == 0 ? 0 : 1;
        char path [64];
        snprintf (path, sizeof path, "server.tenants.%d.vectors", bob_row);
        CHECK_EQ (s_int (all, path), 44);
        CHECK (s_count (all, "server.requests.search.FPX_OK")
               >= s_count (a, "requests.search.FPX_OK"), "server-wide searches");
        CHECK (s_count (all, "server.requests.create.FPX_OK")
               > s_count (a, "requests.create.FPX_OK"), "server-wide creates include bob's");
        //  Still no index names of another tenant, even for an admin.
        CHECK (!s_mentions (all, "bob_secret"), "bob's index named in alice's all view");
        fpx_info_free (&all);
    }
    fpx_info_free (&a);
    fpx_info_free (&b);
    fpx_info_free (&r);
    fpx_client_destroy (&alice);
    fpx_client_destroy (&bob);
    fpx_client_destroy (&reader);
}

static void
test_bounds (void *arg)
{
    (void) arg;
    fpx_client_t *bob = fpx_test_client (&s_server, fpx_test_key_b);
    REQUIRE (bob, "client");
    const char *names [] = { "list_a", "list_b", "list_c", "list_d" };
    for (int i = 0; i < 4; i++)
        CHECK_OK (bob, fpx_index_create (bob, names [i], DIM, "Flat", FPX_METRIC_L2, NULL));
    fpx_info_t *info = NULL;
    if (CHECK_OK (bob, fpx_info (bob, 2, 0, &info))) {
        CHECK_EQ (s_int (info, "indexes"), 5);
        CHECK_STR (fpx_info_str (info, "index_list.0.name"), "bob_secret");
        CHECK_STR (fpx_info_str (info, "index_list.1.name"), "list_a");
        CHECK_EQ (fpx_info_type (info, "index_list.2.name"), FPX_INFO_NONE);
        CHECK_EQ (s_int (info, "index_list_truncated"), 1);
        fpx_info_free (&info);
    }
    if (CHECK_OK (bob, fpx_info (bob, -1, 0, &info))) {
        CHECK_EQ (fpx_info_type (info, "index_list.0.name"), FPX_INFO_NONE);
        CHECK_EQ (s_int (info, "index_list_truncated"), 1);
        fpx_info_free (&info);
    }
    if (CHECK_OK (bob, fpx_info (bob, 5, 0, &info))) {
        CHECK_STR (fpx_info_str (info, "index_list.4.name"), "list_d");
        CHECK_EQ (s_int (info, "index_list_truncated"), 0);
        fpx_info_free (&info);
    }
    CHECK_RC (bob, fpx_info (bob, FPX_INFO_INDEXES_MAX + 1, 0, &info), FPX_EINVAL);
    CHECK_RC (bob, fpx_info (bob, 0, 2, &info), FPX_EINVAL);
    CHECK_RC (bob, fpx_info (bob, 0, 0, NULL), FPX_EINVAL);

    //  The server checks the same, whatever a client sends.
    fpx_raw_t *raw = fpx_raw_new (s_server.endpoint);
    REQUIRE (raw, "raw socket");
    struct { const char *key; int64_t value; bool boolean; } bad [] = {
        { "max_indexes", 1001, false }, { "max_indexes", -1, false }, { "all", 1, false },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad [0]; i++) {
        fpx_mp_t mp;
        fpx_mp_init (&mp);
        msgpack_pack_map (&mp.pk, 1);
        fpx_pack_kv_int (&mp.pk, bad [i].key, bad [i].value);
        fpx_raw_reply_t reply;
        int status = fpx_raw_call (raw, FPX_OP_INFO, fpx_test_key_b, mp.buf.data, mp.buf.size,
                                   0, NULL, NULL, &reply);
        CHECK (status == FPX_EINVAL, "%s=%lld: status %d (%s)", bad [i].key,
               (long long) bad [i].value, status, reply.error);
        fpx_raw_reply_free (&reply);
        fpx_mp_free (&mp);
    }
    fpx_raw_destroy (&raw);
    fpx_client_destroy (&bob);
}

/* ---- the decoder: a reply is a peer's bytes ------------------------------------- */

//  Decodes the map in mp as a reply result, then as info.
static int
s_decode (fpx_mp_t *mp, fpx_info_t **info_p)
{
    fpx_params_t result;
    *info_p = NULL;
    int rc = fpx_params_decode_bounded (&result, mp->buf.data, mp->buf.size, FPX_RESULT_MAX);
    char errmsg [256] = "";
    if (rc == 0)
        rc = fpx_info_decode (&result, info_p, errmsg, sizeof errmsg);
    CHECK (rc == 0 || errmsg [0], "a failure says why");
    return rc;
}

static void
test_decoder (void *arg)
{
    (void) arg;
    fpx_info_t *info;
    fpx_mp_t mp;
    //  Every kind of scalar, escaped and typed as documented.
    fpx_mp_init (&mp);
    msgpack_pack_map (&mp.pk, 9);
    fpx_pack_str (&mp.pk, "s");
    msgpack_pack_str (&mp.pk, 7);
    msgpack_pack_str_body (&mp.pk, "a\"b\\c\001\377", 7);
    fpx_pack_kv_double (&mp.pk, "nan", NAN);
    fpx_pack_str (&mp.pk, "big");
    msgpack_pack_uint64 (&mp.pk, UINT64_MAX);
    fpx_pack_kv_int (&mp.pk, "neg", -5);
    fpx_pack_kv_bool (&mp.pk, "t", true);
    fpx_pack_str (&mp.pk, "nil");
    msgpack_pack_nil (&mp.pk);
    fpx_pack_str (&mp.pk, "list");
    msgpack_pack_array (&mp.pk, 2);
    msgpack_pack_int (&mp.pk, 1);
    msgpack_pack_double (&mp.pk, 2.5);
    fpx_pack_str (&mp.pk, "e");
    msgpack_pack_map (&mp.pk, 0);
    fpx_pack_kv_double (&mp.pk, "tenth", 0.1);
    if (CHECK_EQ (s_decode (&mp, &info), 0)) {
        CHECK_STR (fpx_info_json (info), "{\"s\":\"a\\\"b\\\\c\\u0001\\u00ff\",\"nan\":null,"
                   "\"big\":18446744073709551615,\"neg\":-5,\"t\":true,\"nil\":null,"
                   "\"list\":[1,2.5],\"e\":{},\"tenth\":0.1}");
        CHECK_EQ (fpx_info_count (info), 9);
        CHECK_STR (fpx_info_str (info, "s"), "a\"b\\c??");
        CHECK_EQ (fpx_info_type (info, "big"), FPX_INFO_DOUBLE);
        CHECK_EQ (fpx_info_type (info, "nil"), FPX_INFO_NIL);
        CHECK_EQ (fpx_info_type (info, "e"), FPX_INFO_NONE);
        CHECK_EQ (s_int (info, "neg"), -5);
        CHECK_EQ (s_int (info, "t"), 1);
        CHECK (s_double (info, "list.1") == 2.5, "list.1");
        CHECK_STR (fpx_info_key (info, 8), "tenth");
        CHECK_STR (fpx_info_text_at (info, 6), "1");
        CHECK (fpx_info_key (info, 9) == NULL && fpx_info_type_at (info, 9) == FPX_INFO_NONE,
               "past the end");
        fpx_info_free (&info);
    }
    fpx_mp_free (&mp);

    //  A path past 256 bytes, a key that is not a string, too many figures.
    char long_key [200];
    memset (long_key, 'k', sizeof long_key);
    fpx_mp_init (&mp);
    msgpack_pack_map (&mp.pk, 1);
    fpx_pack_str (&mp.pk, "a");
    msgpack_pack_map (&mp.pk, 1);
    msgpack_pack_str (&mp.pk, sizeof long_key);
    msgpack_pack_str_body (&mp.pk, long_key, sizeof long_key);
    msgpack_pack_map (&mp.pk, 1);
    msgpack_pack_str (&mp.pk, sizeof long_key);
    msgpack_pack_str_body (&mp.pk, long_key, sizeof long_key);
    msgpack_pack_int (&mp.pk, 1);
    CHECK_EQ (s_decode (&mp, &info), FPX_EPROTO);
    CHECK (info == NULL, "no handle");
    fpx_mp_free (&mp);

    fpx_mp_init (&mp);
    msgpack_pack_map (&mp.pk, 1);
    fpx_pack_str (&mp.pk, "m");
    msgpack_pack_map (&mp.pk, 1);
    msgpack_pack_int (&mp.pk, 1);
    msgpack_pack_int (&mp.pk, 2);
    CHECK_EQ (s_decode (&mp, &info), FPX_EPROTO);
    fpx_mp_free (&mp);

    fpx_mp_init (&mp);
    msgpack_pack_map (&mp.pk, 1);
    fpx_pack_str (&mp.pk, "many");
    msgpack_pack_array (&mp.pk, 70000);
    for (int i = 0; i < 70000; i++)
        msgpack_pack_int (&mp.pk, 0);
    CHECK_EQ (s_decode (&mp, &info), FPX_EPROTO);
    fpx_mp_free (&mp);
}

/* ---- the CLI ---------------------------------------------------------------------- */

static void
s_cli_path (char *out, size_t size)
{
    const char *daemon = getenv ("FPX_DAEMON");
    snprintf (out, size, "%s", daemon ? daemon : "build/bin/faissproxyd");
    char *slash = strrchr (out, '/');
    snprintf (slash ? slash + 1 : out, size - (size_t) (slash ? slash + 1 - out : 0), "faissproxy");
}

//  Runs `faissproxy ARGS` with key; its stdout (malloc'd) and exit status.
static char *
s_cli (const char *key, const char *args, int *status)
{
    char cli [512], command [1200];
    s_cli_path (cli, sizeof cli);
    snprintf (command, sizeof command, "FAISS_PROXY_SERVER='%s' FAISS_PROXY_API_KEY='%s' "
              "'%s' %s 2>/dev/null", s_server.endpoint, key, cli, args);
    FILE *pipe = popen (command, "r");
    if (!pipe)
        return NULL;
    size_t size = 0, capacity = 1 << 16;
    char *out = malloc (capacity);
    size_t n;
    while (out && (n = fread (out + size, 1, capacity - size - 1, pipe)) > 0) {
        size += n;
        if (size + 1 == capacity) {
            char *grown = realloc (out, capacity *= 2);
            if (!grown) {
                free (out);
                out = NULL;
            }
            out = grown;
        }
    }
    int rc = pclose (pipe);
    *status = WIFEXITED (rc) ? WEXITSTATUS (rc) : -1;
    if (out)
        out [size] = 0;
    return out;
}

//  Whether text holds line as a whole line.
static bool
s_has_line (const char *text, const char *line)
{
    size_t len = strlen (line);
    for (const char *at = text; (at = strstr (at, line)); at++)
        if ((at == text || at [-1] == '\n') && (at [len] == '\n' || at [len] == 0))
            return true;
    return false;
}

static void
test_cli (void *arg)
{
    (void) arg;
    fpx_client_t *alice = fpx_test_client (&s_server, fpx_test_key_a);
    REQUIRE (alice, "client");
    fpx_info_t *info = NULL;
    REQUIRE_OK (alice, fpx_info (alice, 0, 0, &info));
    int status;
    char *out = s_cli (fpx_test_key_a, "info", &status);
    REQUIRE (out, "popen");
    CHECK_EQ (status, 0);
    const char *sections [] = { "# Server", "# Requests", "# Latency", "# Memory", "# Indexes" };
    const char *last = out;
    for (int i = 0; i < 5; i++) {
        const char *at = strstr (out, sections [i]);
        CHECK (at && at >= last && s_has_line (out, sections [i]), "section %s in order",
               sections [i]);
        if (at)
            last = at;
    }
    char line [256];
    snprintf (line, sizeof line, "search.FPX_OK:%lld",
              (long long) s_count (info, "requests.search.FPX_OK"));
    CHECK (s_has_line (out, line), "no line '%s' in:\n%s", line, out);
    CHECK (s_has_line (out, "tenant:" FPX_TEST_TENANT_A), "tenant line");
    snprintf (line, sizeof line, "sized:ntotal=%d,memory_bytes=%lld,disk_bytes=%lld,loaded=true",
              NB + 10,
              (long long) s_index_figure (info, "sized", "memory_bytes"),
              (long long) s_index_figure (info, "sized", "disk_bytes"));
    CHECK (s_has_line (out, line), "no line '%s' in:\n%s", line, out);
    snprintf (line, sizeof line, "memory_bytes:%lld", (long long) s_int (info, "memory_bytes"));
    CHECK (s_has_line (out, line), "no line '%s'", line);
    free (out);

    out = s_cli (fpx_test_key_a, "info --json", &status);
    REQUIRE (out, "popen");
    CHECK_EQ (status, 0);
    CHECK (out [0] == '{' && strchr (out, '\n') == out + strlen (out) - 1, "one JSON line");
    snprintf (line, sizeof line, "\"search\":{\"FPX_OK\":%lld}",
              (long long) s_count (info, "requests.search.FPX_OK"));
    CHECK (strstr (out, line) != NULL, "no %s in %s", line, out);
    CHECK (strstr (out, "{\"name\":\"sized\",\"ntotal\":210,") != NULL, "sized in the JSON");
    free (out);

    out = s_cli (fpx_test_key_b, "info --indexes 1000", &status);
    REQUIRE (out, "popen");
    CHECK_EQ (status, 0);
    CHECK (strstr (out, "bob_secret:ntotal=44,") && !strstr (out, "sized")
           && !strstr (out, "counted") && !strstr (out, "alice"), "bob's CLI view:\n%s", out);
    free (out);

    out = s_cli (READ_KEY, "info --all", &status);
    CHECK_EQ (status, 1);
    free (out);
    out = s_cli (fpx_test_key_a, "info --all", &status);
    CHECK (out && status == 0 && strstr (out, "# All tenants") && s_has_line (out, "tenants_truncated:false"),
           "--all: %s", out ? out : "");
    free (out);
    out = s_cli (fpx_test_key_a, "info --bogus", &status);
    CHECK_EQ (status, 2);
    free (out);
    fpx_info_free (&info);
    fpx_client_destroy (&alice);
}

/* ---- main ------------------------------------------------------------------------- */

int
main (void)
{
    s_xb = fpx_data_uniform (7, NB, DIM);
    fpx_test_local_single_thread ();
    //  A read key of alice's, as `faissproxy keygen` writes it.
    char keys_path [] = "/tmp/fpx-info-keys-XXXXXX";
    int fd = mkstemp (keys_path);
    uint8_t hash [32];
    crypto_generichash (hash, sizeof hash, (const uint8_t *) READ_KEY, strlen (READ_KEY), NULL, 0);
    char hex [65];
    sodium_bin2hex (hex, sizeof hex, hash, sizeof hash);
    FILE *keys = fd >= 0 ? fdopen (fd, "w") : NULL;
    if (keys) {
        fprintf (keys, FPX_TEST_TENANT_A " read b2:%s\n", hex);
        fclose (keys);
    }
    const char *args [] = { "--keys-file", keys_path, "--workers", "2", NULL };
    fpx_test_watch (&s_server);
    if (!keys || fpx_test_server_start (&s_server, args, NULL)) {
        fpx_test_fail_whole ("info.server_start", "faissproxyd did not start");
        unlink (keys_path);
        free (s_xb);
        return fpx_test_finish ();
    }
    fpx_test_run ("info.counts", test_counts, NULL);
    fpx_test_run ("info.memory_and_disk", test_memory_and_disk, NULL);
    fpx_test_run ("info.sealing", test_sealing, NULL);
    fpx_test_run ("info.bounds", test_bounds, NULL);
    fpx_test_run ("info.cli", test_cli, NULL);
    fpx_test_run ("info.decoder", test_decoder, NULL);
    fpx_test_watch (NULL);
    int rc = fpx_test_server_stop (&s_server, 30);
    if (rc != 0)
        fpx_test_fail_whole ("info.server_exit", "faissproxyd did not exit 0 on SIGTERM");
    unlink (keys_path);
    free (s_xb);
    return fpx_test_finish ();
}
