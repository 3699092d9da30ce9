/*  test_deletion.c — remove_ids on the HNSW indexes FAISS 1.7.3 refuses
    it on, durable through the log.

    The server rebuilds an HNSW graph from the vectors kept (docs/
    PROTOCOL.md, remove_ids). The reference for every comparison is a new
    index built here with FAISS in-process: the same factory, trained on
    the same vectors, given in one add on one OpenMP thread the vectors an
    IndexFlat (or IDMap over one) keeps after the same removals, in order
    (for SQ storage, the decodings of its codes: the server keeps codes,
    never re-encodes). FAISS builds HNSW graphs deterministically on one
    thread, and so does the server's rebuild: labels must be identical,
    reconstructions bit for bit.

    - every structure (bare, SQ8 storage, IDMap, IDMap2, PCA pre-transform,
      IDMap2 over SQ8, a refine index over HNSW): a removal with duplicates, negative and absent
      keys; kill -9 right after the reply while the snapshot cannot be
      written (so the removal is replayed from the log at the restart);
      a removal by range, which is snapshotted soon after; a clean
      restart; the answers stay FAISS's throughout;
    - hostile ids frames: a million random ids, the whole int64 range, an
      empty range, a ragged frame;
    - an IDMap whose wrapped index lost vectors through a view: refused
      (FAISS would assert), the server stays up;
    - a rebuild that does not fit the tenant's max_memory_mb is refused
      with FPX_EQUOTA and leaves the index as it was;
    - a rebuild still running at the tenant's deadline_ms is stopped:
      FPX_ETIMEDOUT, nothing removed, before and after a restart.
*/
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fpx_test.h"

#define DIM     32
#define NT      3000            //  training vectors
#define NB      2000            //  database vectors
#define NQ      30
#define K       10

enum {
    C_IDS    = 1,               //  an IDMap: keys are ids
    C_IDMAP2 = 2,               //  … that reconstructs by id
    C_BLAS   = 4,               //  a PCA: its stored vectors are products
                                //  computed by BLAS in batches of other
                                //  sizes here; reconstructions to 1e-5
    C_REFINE = 8,               //  a per-request efSearch does not reach a
                                //  refine index's base (FPX_EINVAL)
};

typedef struct {
    const char *label;
    const char *factory;
    const char *storage;        //  the factory without its IDMap: decodes the codes
    unsigned flags;
} case_t;

static const case_t s_cases [] = {
    { "HNSW16",            "HNSW16",                  "HNSW16",            0 },
    { "HNSW16_SQ8",        "HNSW16,SQ8",              "HNSW16,SQ8",        0 },
    { "IDMap_HNSW16",      "IDMap,HNSW16",            "HNSW16",            C_IDS },
    { "IDMap2_HNSW16",     "IDMap2,HNSW16",           "HNSW16",            C_IDS | C_IDMAP2 },
    { "PCA16_HNSW16",      "PCA16,HNSW16",            "PCA16,HNSW16",      C_BLAS },
    { "IDMap2_HNSW16_SQ8", "IDMap2,HNSW16,SQ8",       "HNSW16,SQ8",        C_IDS | C_IDMAP2 },
    { "HNSW16_RFlat",      "HNSW16,RFlat",            "HNSW16",            C_REFINE },
};
#define NCASES ((int) (sizeof s_cases / sizeof s_cases [0]))

static float *s_xt, *s_xb, *s_xq;

//  What the server should hold: the rows it keeps, in storage order, as a
//  new index must be given them (originals, or the decodings of SQ codes;
//  a PreTransform's originals, which it transforms again), and their ids.
typedef struct {
    const case_t *c;
    int64_t n;
    float *x;
    int64_t *ids;
    int64_t split;              //  > 0: the server added rows [split, n) in a
                                //  later add (the reference does the same)
    FaissIndex *reference;      //  built from x (and ids)
} model_t;

static int
s_start (fpx_test_server_t *server, const char *data_dir)
{
    const char *args [] = { "--data-dir", data_dir, "--fsync", "batch",
                            "--snapshot-interval-s", "3600", NULL };
    return fpx_test_server_start (server, args, NULL);
}

static void
s_kill9 (fpx_test_server_t *server)
{
    kill (server->pid, SIGKILL);
    int status;
    waitpid (server->pid, &status, 0);
    server->pid = 0;
}

//  The server's soft file-size limit (the hard one stays).
static void
s_set_fsize (pid_t pid, rlim_t limit)
{
    struct rlimit value;
    if (prlimit (pid, RLIMIT_FSIZE, NULL, &value) == 0) {
        value.rlim_cur = limit < value.rlim_max ? limit : value.rlim_max;
        if (prlimit (pid, RLIMIT_FSIZE, &value, NULL) == 0)
            return;
    }
    fprintf (stderr, "# prlimit: %s\n", strerror (errno));
}

//  Bytes of the log segments of tenant A's index `name` under data_dir.
static long long
s_log_bytes (const char *data_dir, const char *name)
{
    char index_dir [600];
    snprintf (index_dir, sizeof index_dir, "%s/tenants/%s/%s", data_dir, FPX_TEST_TENANT_A, name);
    DIR *dir = opendir (index_dir);
    long long total = 0;
    struct dirent *item;
    while (dir && (item = readdir (dir))) {
        char path [900];
        struct stat st;
        snprintf (path, sizeof path, "%s/%s", index_dir, item->d_name);
        if (strncmp (item->d_name, "wal-", 4) == 0 && stat (path, &st) == 0)
            total += (long long) st.st_size;
    }
    if (dir)
        closedir (dir);
    return dir ? total : -1;
}

/* ---- the reference ------------------------------------------------------------ */

static FaissIndex *
s_new_trained (const char *factory)
{
    char why [512];
    FaissIndex *index = fpx_local_create (DIM, factory, FPX_METRIC_L2, why, sizeof why);
    if (!CHECK (index, "local create %s: %s", factory, why))
        return NULL;
    if (!faiss_Index_is_trained (index)
    &&  !CHECK (faiss_Index_train (index, NT, s_xt) == 0, "local train: %s", fpx_local_error ())) {
        faiss_Index_free (index);
        return NULL;
    }
    return index;
}

//  A new index of the case's factory given the model's rows in one add
//  (this process runs FAISS on one thread), with efSearch 40 as the
//  server's index was set.
static bool
s_rebuild_reference (model_t *m)
{
    faiss_Index_free (m->reference);
    m->reference = s_new_trained (m->c->factory);
    if (!m->reference)
        return false;
    int rc = 0;
    int64_t from [2] = { 0, m->split > 0 && m->split < m->n ? m->split : m->n };
    int64_t to [2] = { from [1], m->n };
    for (int part = 0; part < 2 && rc == 0; part++) {
        int64_t count = to [part] - from [part];
        if (count == 0 && part == 1)
            break;
        rc = (m->c->flags & C_IDS)
           ? faiss_Index_add_with_ids (m->reference, count, m->x + from [part] * DIM,
                                       m->ids + from [part])
           : faiss_Index_add (m->reference, count, m->x + from [part] * DIM);
    }
    return CHECK (rc == 0, "local add: %s", fpx_local_error ())
        && CHECK (fpx_local_set_params (m->reference, "efSearch=40") == 0,
                  "local efSearch: %s", fpx_local_error ());
}

//  The model after removing what sel selects (keys: ids or positions).
//  Returns how many rows went.
static int64_t
s_model_remove (model_t *m, const FaissIDSelector *sel)
{
    int64_t kept = 0;
    for (int64_t i = 0; i < m->n; i++) {
        int64_t key = (m->c->flags & C_IDS) ? m->ids [i] : i;
        if (faiss_IDSelector_is_member (sel, key))
            continue;
        memmove (m->x + kept * DIM, m->x + i * DIM, DIM * sizeof (float));
        m->ids [kept++] = m->ids [i];
    }
    int64_t removed = m->n - kept;
    m->n = kept;
    m->split = 0;               //  the server rebuilds from every row kept, in one add
    s_rebuild_reference (m);
    return removed;
}

//  The model of an index given the nb rows of xb (room for `room` rows).
static bool
s_model_init_n (model_t *m, const case_t *c, int64_t nb, const float *xb, int64_t room)
{
    memset (m, 0, sizeof *m);
    m->c = c;
    m->n = nb;
    m->x = malloc ((size_t) room * DIM * sizeof (float));
    m->ids = malloc ((size_t) room * sizeof (int64_t));
    if (!m->x || !m->ids)
        return false;
    for (int64_t i = 0; i < nb; i++)        //  ids: descending, spread out
        m->ids [i] = (c->flags & C_IDS) ? 5000000 - 7 * i : i;
    //  What the storage holds of s_xb: for SQ, the decodings.
    FaissIndex *storage = s_new_trained (c->storage);
    if (!storage)
        return false;
    bool ok = CHECK (faiss_Index_add (storage, nb, xb) == 0, "local add: %s", fpx_local_error ());
    if (ok && strstr (c->storage, "SQ"))
        ok = CHECK (faiss_Index_reconstruct_n (storage, 0, nb, m->x) == 0,
                    "local reconstruct_n: %s", fpx_local_error ());
    else
        memcpy (m->x, xb, (size_t) nb * DIM * sizeof (float));
    faiss_Index_free (storage);
    return ok;
}

static bool
s_model_init (model_t *m, const case_t *c)
{
    return s_model_init_n (m, c, NB, s_xb, NB);
}

static void
s_model_free (model_t *m)
{
    free (m->x);
    free (m->ids);
    faiss_Index_free (m->reference);
    memset (m, 0, sizeof *m);
}

//  The server's index answers as the reference: ntotal, search (the
//  index's efSearch and a per-request one), reconstruction.
static void
s_compare (fpx_client_t *client, const char *name, const model_t *m, const char *when)
{
    fpx_index_info_t info;
    if (CHECK_OK (client, fpx_index_describe (client, name, 0, &info))) {
        CHECK (info.ntotal == m->n, "%s: ntotal %lld, expected %lld", when,
               (long long) info.ntotal, (long long) m->n);
        CHECK (!info.damaged [0], "%s: damaged: %s", when, info.damaged);
    }
    fpx_search_params_t params [2] = { { 0, 0 }, { 0, 24 } };
    for (int p = 0; p < ((m->c->flags & C_REFINE) ? 1 : 2); p++) {
        fpx_knn_t ref, got;
        FaissIndex *index = m->reference, *copy = NULL;
        if (params [p].efSearch) {
            copy = fpx_local_copy (m->reference);
            if (!CHECK (copy && fpx_local_set_param (copy, "efSearch", params [p].efSearch) == 0,
                        "local copy: %s", fpx_local_error ()))
                return;
            index = copy;
        }
        if (CHECK (fpx_local_knn (index, NQ, s_xq, K, 0, &ref) == 0, "local search: %s",
                   fpx_local_error ())) {
            if (CHECK_OK (client, fpx_remote_knn (client, name, NQ, DIM, s_xq, K, &params [p], &got))) {
                char why [512];
                CHECK (fpx_knn_equal (&ref, &got, why, sizeof why),
                       "%s (efSearch %d): search differs from FAISS in-process: %s", when,
                       params [p].efSearch, why);
            }
            fpx_knn_free (&got);
            fpx_knn_free (&ref);
        }
        faiss_Index_free (copy);
    }
    //  Reconstructions: by position, or by id (IDMap2); an IDMap has none.
    if (m->n == 0 || ((m->c->flags & C_IDS) && !(m->c->flags & C_IDMAP2)))
        return;
    int64_t rows = (m->c->flags & C_IDS) ? 3 : m->n;
    float *want = calloc ((size_t) rows * DIM, sizeof (float));
    float *got = malloc ((size_t) rows * DIM * sizeof (float));
    int64_t keys [3] = { m->ids [0], m->ids [m->n / 2], m->ids [m->n - 1] };
    bool ok = true;
    if (m->c->flags & C_IDS)
        for (int i = 0; i < 3 && ok; i++)
            ok = faiss_Index_reconstruct (m->reference, keys [i], want + i * DIM) == 0
              && CHECK_OK (client, fpx_reconstruct (client, name, keys [i], DIM, got + i * DIM));
    else
        ok = faiss_Index_reconstruct_n (m->reference, 0, rows, want) == 0
          && CHECK_OK (client, fpx_reconstruct_n (client, name, 0, rows, DIM, got));
    int64_t differ = -1;
    for (int64_t i = 0; ok && i < rows * DIM && differ < 0; i++)
        if ((m->c->flags & C_BLAS) ? !fpx_float_close (want [i], got [i])
                                   : memcmp (&want [i], &got [i], sizeof (float)) != 0)
            differ = i;
    if (ok)
        CHECK (differ < 0, "%s: reconstruction %lld differs from FAISS in-process: %.9g, "
               "expected %.9g", when, (long long) (differ / DIM), differ < 0 ? 0.0 : got [differ],
               differ < 0 ? 0.0 : want [differ]);
    free (want);
    free (got);
}

/* ---- per structure: remove, crash, replay, remove, snapshot, restart ---------- */

static void
s_test_structure (void *arg)
{
    const case_t *c = arg;
    char dir [256];
    fpx_test_temp_dir (dir, sizeof dir, "deletion");
    REQUIRE (dir [0], "mkdtemp failed");
    model_t m;
    REQUIRE (s_model_init (&m, c), "model");
    const char *name = "h";

    fpx_test_server_t server;
    REQUIRE (s_start (&server, dir) == 0, "start failed");
    fpx_client_t *client = fpx_test_client (&server, fpx_test_key_a);
    REQUIRE_OK (client, fpx_index_create (client, name, DIM, c->factory, FPX_METRIC_L2, NULL));
    char why [512];
    FaissIndex *probe = fpx_local_create (DIM, c->factory, FPX_METRIC_L2, why, sizeof why);
    REQUIRE (probe, "%s", why);
    if (!faiss_Index_is_trained (probe))
        REQUIRE_OK (client, fpx_train (client, name, NT, DIM, s_xt));
    faiss_Index_free (probe);
    if (c->flags & C_IDS)
        REQUIRE_OK (client, fpx_add_with_ids (client, name, NB, DIM, s_xb, m.ids, NULL));
    else
        REQUIRE_OK (client, fpx_add (client, name, NB, DIM, s_xb, NULL));
    REQUIRE_OK (client, fpx_set_parameters (client, name, "efSearch=40"));
    REQUIRE_OK (client, fpx_index_save (client, name));
    CHECK_EQ (s_log_bytes (dir, name), 0);

    //  1. By list, with a duplicate, a negative and absent keys. No file
    //  may now pass 64 KiB: the record is logged, the snapshot that the
    //  rebuild asks for cannot be written, and the kill -9 right after the
    //  reply leaves the removal to be replayed from the log.
    int64_t list [8];
    bool ids = c->flags & C_IDS;
    list [0] = m.ids [3];
    list [1] = m.ids [3];
    list [2] = -1;
    list [3] = m.ids [NB - 1];
    list [4] = m.ids [1000];
    list [5] = ids ? 123 : NB;              //  absent
    list [6] = INT64_MAX;
    list [7] = m.ids [0];
    FaissIDSelectorBatch *batch = NULL;
    REQUIRE (faiss_IDSelectorBatch_new (&batch, 8, list) == 0, "IDSelectorBatch");
    int64_t expected = s_model_remove (&m, (FaissIDSelector *) batch);
    faiss_IDSelector_free ((FaissIDSelector *) batch);
    CHECK_EQ (expected, 4);
    s_set_fsize (server.pid, 64 * 1024);
    int64_t removed = -1;
    CHECK_OK (client, fpx_remove_ids (client, name, 8, list, &removed));
    CHECK_EQ (removed, expected);
    s_compare (client, name, &m, "after remove_ids");
    fpx_client_destroy (&client);
    s_kill9 (&server);
    fpx_test_server_stop (&server, 5);
    CHECK (s_log_bytes (dir, name) > 0, "the removal is not in the log: nothing to replay");

    //  2. Replayed: the same graph.
    REQUIRE (s_start (&server, dir) == 0, "restart failed");
    client = fpx_test_client (&server, fpx_test_key_a);
    s_compare (client, name, &m, "after replaying remove_ids");

    //  3. By range, then a snapshot soon (no restart rebuilds it again).
    int64_t lo = ids ? m.ids [700] : 300, hi = ids ? m.ids [500] : 500;   //  ids descend
    FaissIDSelectorRange *range = NULL;
    REQUIRE (faiss_IDSelectorRange_new (&range, lo, hi) == 0, "IDSelectorRange");
    expected = s_model_remove (&m, (FaissIDSelector *) range);
    faiss_IDSelector_free ((FaissIDSelector *) range);
    CHECK (expected >= 199, "range [%lld, %lld) selects %lld", (long long) lo, (long long) hi,
           (long long) expected);
    CHECK_OK (client, fpx_remove_range (client, name, lo, hi, &removed));
    CHECK_EQ (removed, expected);
    s_compare (client, name, &m, "after remove_range");
    long long log_bytes = -1;
    for (int i = 0; i < 100 && (log_bytes = s_log_bytes (dir, name)) != 0; i++)
        fpx_sleep_ms (100);
    CHECK (log_bytes == 0, "no snapshot after the rebuild: %lld log bytes", log_bytes);
    //  Nothing selected (the same ids again; positions past the end):
    //  nothing rebuilt, nothing changes.
    if (!ids) {
        lo = NB;
        hi = NB + 100;
    }
    CHECK_OK (client, fpx_remove_range (client, name, lo, hi, &removed));
    CHECK_EQ (removed, 0);
    fpx_client_destroy (&client);
    CHECK_EQ (fpx_test_server_stop (&server, 30), 0);

    //  4. A clean restart: the snapshot.
    REQUIRE (s_start (&server, dir) == 0, "restart failed");
    client = fpx_test_client (&server, fpx_test_key_a);
    s_compare (client, name, &m, "after a clean restart");
    fpx_client_destroy (&client);
    CHECK_EQ (fpx_test_server_stop (&server, 30), 0);
    s_model_free (&m);
    fpx_test_remove_dir (dir);
}

/* ---- hostile id frames -------------------------------------------------------- */

static void
s_test_hostile_ids (void *arg)
{
    (void) arg;
    char dir [256];
    fpx_test_temp_dir (dir, sizeof dir, "deletion");
    REQUIRE (dir [0], "mkdtemp failed");
    model_t m;
    REQUIRE (s_model_init (&m, &s_cases [0]), "model");
    fpx_test_server_t server;
    REQUIRE (s_start (&server, dir) == 0, "start failed");
    fpx_client_t *client = fpx_test_client (&server, fpx_test_key_a);
    fpx_client_set_long_timeout (client, 120000);
    const char *name = "hostile";
    REQUIRE_OK (client, fpx_index_create (client, name, DIM, "HNSW16", FPX_METRIC_L2, NULL));
    REQUIRE_OK (client, fpx_add (client, name, NB, DIM, s_xb, NULL));
    REQUIRE_OK (client, fpx_set_parameters (client, name, "efSearch=40"));

    //  2^20 ids (8 MiB): random 64-bit values, negatives among them, and
    //  every 3rd position below 600 twice over.
    int64_t n = 1 << 20;
    int64_t *list = malloc ((size_t) n * sizeof *list);
    REQUIRE (list, "out of memory");
    fpx_rng_t rng;
    fpx_rng_seed (&rng, 77);
    for (int64_t i = 0; i < n; i++)
        list [i] = (int64_t) fpx_rng_next (&rng);
    for (int64_t i = 0; i < 400; i++)
        list [i * 997] = (i % 200) * 3;
    FaissIDSelectorBatch *batch = NULL;
    REQUIRE (faiss_IDSelectorBatch_new (&batch, (size_t) n, list) == 0, "IDSelectorBatch");
    int64_t expected = s_model_remove (&m, (FaissIDSelector *) batch);
    faiss_IDSelector_free ((FaissIDSelector *) batch);
    CHECK_EQ (expected, 200);
    int64_t removed = -1;
    CHECK_OK (client, fpx_remove_ids (client, name, n, list, &removed));
    CHECK_EQ (removed, expected);
    s_compare (client, name, &m, "after a million random ids");
    free (list);

    //  An empty range and a reversed one: nothing.
    CHECK_OK (client, fpx_remove_range (client, name, 5, 5, &removed));
    CHECK_EQ (removed, 0);
    //  (The C client refuses a reversed range itself: sent raw, the
    //  server selects nothing, as FAISS's IDSelectorRange.)
    fpx_raw_t *raw = fpx_raw_new (server.endpoint);
    fpx_mp_t mp;
    fpx_mp_init (&mp);
    msgpack_pack_map (&mp.pk, 3);
    fpx_pack_kv_str (&mp.pk, "name", name);
    fpx_pack_kv_int (&mp.pk, "lo", 10);
    fpx_pack_kv_int (&mp.pk, "hi", -10);
    fpx_raw_reply_t reply;
    int rc = fpx_raw_call (raw, FPX_OP_REMOVE_IDS, fpx_test_key_a, mp.buf.data, mp.buf.size,
                           0, NULL, NULL, &reply);
    CHECK (rc == 0, "reversed range: %s %s", fpx_error_name (rc), reply.error);
    fpx_raw_reply_free (&reply);
    fpx_mp_free (&mp);

    //  An ids frame that is not a whole number of int64.
    fpx_mp_init (&mp);
    msgpack_pack_map (&mp.pk, 1);
    fpx_pack_kv_str (&mp.pk, "name", name);
    uint8_t ragged [12] = { 1 };
    const void *frames [1] = { ragged };
    size_t sizes [1] = { sizeof ragged };
    rc = fpx_raw_call (raw, FPX_OP_REMOVE_IDS, fpx_test_key_a, mp.buf.data, mp.buf.size,
                       1, frames, sizes, &reply);
    CHECK (rc == FPX_EPROTO, "ragged ids frame: %s", fpx_error_name (rc));
    fpx_raw_reply_free (&reply);
    fpx_mp_free (&mp);
    fpx_raw_destroy (&raw);
    s_compare (client, name, &m, "after the refused and empty removals");

    //  The whole int64 range: an empty graph, still searchable, and
    //  filled again.
    CHECK_OK (client, fpx_remove_range (client, name, INT64_MIN, INT64_MAX, &removed));
    CHECK_EQ (removed, m.n);
    m.n = 0;
    REQUIRE_TRUE (s_rebuild_reference (&m));
    s_compare (client, name, &m, "after removing everything");
    CHECK_OK (client, fpx_add (client, name, 80, DIM, s_xb, NULL));
    memcpy (m.x, s_xb, 80 * DIM * sizeof (float));
    m.n = 80;
    REQUIRE_TRUE (s_rebuild_reference (&m));      //  80 vectors: one thread either way
    s_compare (client, name, &m, "after adding to the emptied index");
    fpx_client_destroy (&client);
    CHECK_EQ (fpx_test_server_stop (&server, 30), 0);
    s_model_free (&m);
    fpx_test_remove_dir (dir);
}

/* ---- an IDMap whose index changed behind it --------------------------------- */

//  Removing through a view of an anonymous IDMap's wrapped index leaves
//  the id map longer than the index; FAISS's IDMap::remove_ids would then
//  assert (an abort in-process). The server refuses, and stays up.
static void
s_test_idmap_view (void *arg)
{
    (void) arg;
    fpx_test_server_t server;
    REQUIRE (fpx_test_server_start (&server, NULL, NULL) == 0, "start failed");
    fpx_client_t *client = fpx_test_client (&server, fpx_test_key_a);
    const char *factories [2] = { "IDMap,Flat", "IDMap2,HNSW16" };
    int64_t ids [100];
    for (int i = 0; i < 100; i++)
        ids [i] = 1000 + i;
    for (int f = 0; f < 2; f++) {
        fpx_index_info_t map, inner;
        REQUIRE_OK (client, fpx_index_create (client, NULL, DIM, factories [f], FPX_METRIC_L2, &map));
        REQUIRE_OK (client, fpx_add_with_ids (client, map.name, 100, DIM, s_xb, ids, NULL));
        REQUIRE_OK (client, fpx_subobject (client, map.name, "index", &inner));
        int64_t removed = -1;
        CHECK_OK (client, fpx_remove_range (client, inner.name, 0, 10, &removed));
        CHECK_EQ (removed, 10);
        CHECK_RC (client, fpx_remove_ids (client, map.name, 2, ids + 50, &removed), FPX_EINVAL);
        CHECK (strstr (fpx_client_errmsg (client), "id map"), "message: %s",
               fpx_client_errmsg (client));
        CHECK_OK (client, fpx_ping (client, NULL));
        CHECK_OK (client, fpx_index_drop (client, inner.name));
        CHECK_OK (client, fpx_index_drop (client, map.name));
    }
    fpx_client_destroy (&client);
    CHECK_EQ (fpx_test_server_stop (&server, 30), 0);
}

/* ---- memory ----------------------------------------------------------------------- */

static void
s_test_memory_cap (void *arg)
{
    (void) arg;
    fpx_test_server_t server;
    const char *args [] = { "--default-tenant-limits", "max_memory_mb=1", NULL };
    REQUIRE (fpx_test_server_start (&server, args, NULL) == 0, "start failed");
    fpx_client_t *client = fpx_test_client (&server, fpx_test_key_a);
    const char *name = "capped";
    REQUIRE_OK (client, fpx_index_create (client, name, DIM, "HNSW16", FPX_METRIC_L2, NULL));
    REQUIRE_OK (client, fpx_add (client, name, NB, DIM, s_xb, NULL));
    fpx_index_info_t info;
    REQUIRE_OK (client, fpx_index_describe (client, name, 1, &info));
    CHECK (info.memory_bytes > 0 && info.memory_bytes < (1 << 20), "index of %lld bytes",
           (long long) info.memory_bytes);
    fpx_knn_t before, after;
    REQUIRE_OK (client, fpx_remote_knn (client, name, NQ, DIM, s_xq, K, NULL, &before));
    //  The rebuild needs more than what is left of the 1 MiB.
    int64_t ids [2] = { 4, 5 }, removed = -1;
    CHECK_RC (client, fpx_remove_ids (client, name, 2, ids, &removed), FPX_EQUOTA);
    CHECK (strstr (fpx_client_errmsg (client), "rebuilds the HNSW graph")
           && strstr (fpx_client_errmsg (client), "max_memory_mb"),
           "message: %s", fpx_client_errmsg (client));
    CHECK_OK (client, fpx_index_describe (client, name, 0, &info));
    CHECK_EQ (info.ntotal, NB);
    if (CHECK_OK (client, fpx_remote_knn (client, name, NQ, DIM, s_xq, K, NULL, &after)))
        CHECK_KNN (&before, &after);
    fpx_knn_free (&before);
    fpx_knn_free (&after);
    //  Removing nothing needs no rebuild, and a flat index none at all.
    CHECK_OK (client, fpx_remove_range (client, name, NB, NB + 10, &removed));
    CHECK_EQ (removed, 0);
    REQUIRE_OK (client, fpx_index_create (client, "flat", DIM, "Flat", FPX_METRIC_L2, NULL));
    REQUIRE_OK (client, fpx_add (client, "flat", 100, DIM, s_xb, NULL));
    CHECK_OK (client, fpx_remove_ids (client, "flat", 2, ids, &removed));
    CHECK_EQ (removed, 2);
    fpx_client_destroy (&client);
    CHECK_EQ (fpx_test_server_stop (&server, 30), 0);
}

/* ---- deadline -------------------------------------------------------------------- */

//  A rebuild still running at the tenant's deadline is stopped: nothing
//  removed, nothing logged (a restart shows the same index). FAISS looks at
//  the deadline when it starts each level of the graph, so the index is
//  built by a server without one, and the removal is sent to a server
//  restarted with 5 ms: the vectors above level 0 (one in 16 of 40,000,
//  inserted first on one thread) take longer than that on any machine.
static void
s_test_deadline (void *arg)
{
    (void) arg;
    char dir [256];
    fpx_test_temp_dir (dir, sizeof dir, "deletion");
    REQUIRE (dir [0], "mkdtemp failed");
    fpx_test_server_t server;
    const char *plain [] = { "--data-dir", dir, NULL };
    const char *strict [] = { "--data-dir", dir, "--default-tenant-limits", "deadline_ms=5", NULL };
    REQUIRE (fpx_test_server_start (&server, plain, NULL) == 0, "start failed");
    fpx_client_t *client = fpx_test_client (&server, fpx_test_key_a);
    enum { d = 64 };
    int64_t n = 40000;
    float *x = fpx_data_uniform (9, n, d);
    float *xq = fpx_data_uniform (10, NQ, d);
    REQUIRE (x && xq, "out of memory");
    const char *name = "slow";
    REQUIRE_OK (client, fpx_index_create (client, name, d, "HNSW16", FPX_METRIC_L2, NULL));
    int64_t ntotal = 0;
    for (int64_t i = 0; i < n; i += 5000)
        REQUIRE_OK (client, fpx_add (client, name, 5000, d, x + i * d, &ntotal));
    CHECK_EQ (ntotal, n);
    fpx_knn_t before, after;
    REQUIRE_OK (client, fpx_remote_knn (client, name, NQ, d, xq, K, NULL, &before));
    fpx_client_destroy (&client);
    CHECK_EQ (fpx_test_server_stop (&server, 60), 0);
    REQUIRE (fpx_test_server_start (&server, strict, NULL) == 0, "restart failed");
    client = fpx_test_client (&server, fpx_test_key_a);

    int64_t ids [3] = { 1, 2, 3 }, removed = -1;
    double t0 = fpx_now ();
    CHECK_RC (client, fpx_remove_ids (client, name, 3, ids, &removed), FPX_ETIMEDOUT);
    CHECK (strstr (fpx_client_errmsg (client), "nothing was removed"), "message: %s",
           fpx_client_errmsg (client));
    fprintf (stderr, "# rebuild of %lld vectors stopped after %.3f s\n", (long long) n - 3,
             fpx_now () - t0);
    fpx_index_info_t info;
    for (int round = 0; round < 2; round++) {
        if (CHECK_OK (client, fpx_index_describe (client, name, 0, &info)))
            CHECK_EQ (info.ntotal, n);
        if (CHECK_OK (client, fpx_remote_knn (client, name, NQ, d, xq, K, NULL, &after)))
            CHECK_KNN (&before, &after);
        fpx_knn_free (&after);
        if (round == 0) {       //  and after a restart: the log holds no removal
            fpx_client_destroy (&client);
            CHECK_EQ (fpx_test_server_stop (&server, 60), 0);
            REQUIRE (fpx_test_server_start (&server, plain, NULL) == 0, "restart failed");
            client = fpx_test_client (&server, fpx_test_key_a);
        }
    }
    fpx_knn_free (&before);
    free (x);
    free (xq);
    fpx_client_destroy (&client);
    CHECK_EQ (fpx_test_server_stop (&server, 60), 0);
    fpx_test_remove_dir (dir);
}

/* ---- background rebuilds ------------------------------------------------------ */

#define BG_N     20000          //  vectors of the index rebuilt in the background
#define BG_ADD   50             //  added while it rebuilds (one thread either way)

//  The model's row holding key (an id, or a position: the row itself),
//  or -1 when it holds none. Ids descend in the model (s_model_init_n).
static int64_t
s_model_row (const model_t *m, int64_t key)
{
    if (!(m->c->flags & C_IDS))
        return key >= 0 && key < m->n ? key : -1;
    int64_t lo = 0, hi = m->n;
    while (lo < hi) {
        int64_t mid = (lo + hi) / 2;
        if (m->ids [mid] > key)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < m->n && m->ids [lo] == key ? lo : -1;
}

static float
s_l2 (const float *a, const float *b)
{
    float sum = 0;
    for (int j = 0; j < DIM; j++)
        sum += (a [j] - b [j]) * (a [j] - b [j]);
    return sum;
}

//  While a removal may still be rebuilding: describe counts without the
//  removed vectors, and every label a search (and search_and_reconstruct)
//  returns is one the model keeps, at its distance, with its vector:
//  no removed vector, and positions already renumbered as the rebuilt
//  index numbers them; reconstruction by those positions (or by id:
//  a removed id is not found) gives the model's vectors. Returns whether
//  the rebuild was still pending at the describe.
static bool
s_check_pending (fpx_client_t *client, const char *name, const model_t *m, const char *when,
                 int64_t removed_id)
{
    fpx_index_info_t info;
    bool pending = false;
    if (CHECK_OK (client, fpx_index_describe (client, name, 0, &info))) {
        CHECK (info.ntotal == m->n, "%s: ntotal %lld, expected %lld", when,
               (long long) info.ntotal, (long long) m->n);
        pending = info.rebuild_pending;
    }
    float D [NQ * K], R [NQ * K * DIM];
    int64_t I [NQ * K];
    bool reconstructs = !(m->c->flags & C_IDS) || (m->c->flags & C_IDMAP2);
    int rc = reconstructs ? fpx_search_and_reconstruct (client, name, NQ, DIM, s_xq, K, NULL,
                                                        D, I, R)
                          : fpx_search (client, name, NQ, DIM, s_xq, K, NULL, D, I);
    if (!CHECK_OK (client, rc))
        return pending;
    int64_t bad = -1, found = 0;
    for (int64_t i = 0; i < NQ * K && bad < 0; i++) {
        if (I [i] < 0)
            continue;
        found++;
        int64_t row = s_model_row (m, I [i]);
        if (row < 0 || !fpx_float_close (D [i], s_l2 (s_xq + (i / K) * DIM, m->x + row * DIM))
        ||  (reconstructs && memcmp (R + i * DIM, m->x + row * DIM, DIM * sizeof (float)) != 0))
            bad = i;
    }
    CHECK (bad < 0, "%s: result %lld (label %lld, distance %g) is not a vector kept, at its "
           "distance, with its vector", when, (long long) bad, (long long) (bad < 0 ? 0 : I [bad]),
           bad < 0 ? 0.0 : D [bad]);
    //  Filtered out by the search, not left as holes: nearly every slot
    //  holds a vector kept.
    CHECK (found >= NQ * K * 9 / 10, "%s: only %lld results for %d queries of k = %d", when,
           (long long) found, NQ, K);
    if (!reconstructs)
        return pending;
    float *got = malloc ((size_t) m->n * DIM * sizeof (float));
    if (!CHECK (got, "out of memory"))
        return pending;
    int64_t rows = m->n;
    if (m->c->flags & C_IDS) {
        rows = 3;
        int64_t keys [3] = { m->ids [0], m->ids [m->n / 2], m->ids [m->n - 1] };
        for (int i = 0; i < 3; i++)
            CHECK_OK (client, fpx_reconstruct (client, name, keys [i], DIM, got + i * DIM));
        for (int i = 0; i < 3; i++)
            CHECK (memcmp (got + i * DIM, m->x + s_model_row (m, keys [i]) * DIM,
                           DIM * sizeof (float)) == 0, "%s: reconstruct (%lld) differs", when,
                   (long long) keys [i]);
        if (removed_id >= 0) {
            int rc = fpx_reconstruct (client, name, removed_id, DIM, got);
            CHECK (rc == FPX_EFAISS, "%s: reconstruct of removed id %lld: %s", when,
                   (long long) removed_id, fpx_error_name (rc));
        }
    }
    else if (CHECK_OK (client, fpx_reconstruct_n (client, name, 0, rows, DIM, got)))
        CHECK (memcmp (got, m->x, (size_t) rows * DIM * sizeof (float)) == 0,
               "%s: reconstruct_n differs from the vectors kept", when);
    free (got);
    return pending;
}

//  Every other key of [from, from + count) of the model, as a list.
static int64_t
s_every_other (const model_t *m, int64_t from, int64_t count, int64_t *list)
{
    int64_t n = 0;
    for (int64_t i = from; i < from + count && i < m->n; i += 2)
        list [n++] = (m->c->flags & C_IDS) ? m->ids [i] : i;
    return n;
}

//  Removes list from the server and the model; checks the count.
static void
s_remove_both (fpx_client_t *client, const char *name, model_t *m, int64_t n,
               const int64_t *list)
{
    FaissIDSelectorBatch *batch = NULL;
    REQUIRE (faiss_IDSelectorBatch_new (&batch, (size_t) n, list) == 0, "IDSelectorBatch");
    int64_t expected = s_model_remove (m, (FaissIDSelector *) batch);
    faiss_IDSelector_free ((FaissIDSelector *) batch);
    int64_t removed = -1;
    CHECK_OK (client, fpx_remove_ids (client, name, n, list, &removed));
    CHECK_EQ (removed, expected);
}

//  remove_ids on an index past --rebuild-background-min: answered at
//  once, searched meanwhile without the removed vectors, FAISS's very
//  graph once rebuilt; an add meanwhile is searched at once and lands
//  on the new graph; kill -9 mid-rebuild replays the removal; a clean stop
//  mid-rebuild lets it land and snapshots it; a drop mid-rebuild is
//  safe. The IDMap2 case also runs under a memory budget that the index
//  passes, so that eviction is tried while it rebuilds.
static void
s_test_background (void *arg)
{
    const case_t *c = arg;
    bool budget = c->flags & C_IDS;
    char dir [256];
    fpx_test_temp_dir (dir, sizeof dir, "deletion");
    REQUIRE (dir [0], "mkdtemp failed");
    float *xb = fpx_data_clustered (11, BG_N + BG_ADD, DIM, 40, 0.08f);
    REQUIRE (xb, "out of memory");
    model_t m;
    REQUIRE (s_model_init_n (&m, c, BG_N, xb, BG_N + BG_ADD), "model");
    const char *args [] = { "--data-dir", dir, "--fsync", "batch", "--snapshot-interval-s", "3600",
                            "--rebuild-background-min", "1000",
                            budget ? "--memory-budget-mb" : NULL, "1", NULL };
    fpx_test_server_t server;
    REQUIRE (fpx_test_server_start (&server, args, NULL) == 0, "start failed");
    fpx_client_t *client = fpx_test_client (&server, fpx_test_key_a);
    fpx_client_set_long_timeout (client, 300000);
    const char *name = "bg";
    REQUIRE_OK (client, fpx_index_create (client, name, DIM, c->factory, FPX_METRIC_L2, NULL));
    for (int64_t i = 0; i < BG_N; i += 5000)
        if (c->flags & C_IDS)
            REQUIRE_OK (client, fpx_add_with_ids (client, name, 5000, DIM, xb + i * DIM,
                                                  m.ids + i, NULL));
        else
            REQUIRE_OK (client, fpx_add (client, name, 5000, DIM, xb + i * DIM, NULL));
    REQUIRE_OK (client, fpx_set_parameters (client, name, "efSearch=40"));
    if (budget)     //  a second index, used while the first rebuilds
        REQUIRE_OK (client, fpx_index_create (client, "other", DIM, "Flat", FPX_METRIC_L2, NULL));
    int64_t *list = malloc ((size_t) BG_N * sizeof *list);
    REQUIRE (list, "out of memory");

    //  1. Searched at once, while it rebuilds; an add meanwhile is
    //  searched at once too (ntotal counts it), and lands on the new
    //  graph: a save, which waits for it, then the same index as FAISS
    //  given the vectors kept, then the ones added.
    s_remove_both (client, name, &m, s_every_other (&m, 1000, 12000, list), list);
    int pending_seen = s_check_pending (client, name, &m, "during the rebuild", list [0]);
    memcpy (m.x + m.n * DIM, xb + BG_N * DIM, BG_ADD * DIM * sizeof (float));
    for (int64_t i = 0; i < BG_ADD; i++)
        m.ids [m.n + i] = 1000 + BG_ADD - i;    //  below every other id: still descending
    m.split = m.n;
    m.n += BG_ADD;
    int64_t ntotal = -1;
    if (c->flags & C_IDS)
        CHECK_OK (client, fpx_add_with_ids (client, name, BG_ADD, DIM, xb + BG_N * DIM,
                                            m.ids + m.split, &ntotal));
    else
        CHECK_OK (client, fpx_add (client, name, BG_ADD, DIM, xb + BG_N * DIM, &ntotal));
    CHECK_EQ (ntotal, m.n);
    for (int i = 0; i < 2; i++) {
        pending_seen += s_check_pending (client, name, &m, "during the rebuild, after an add",
                                         list [1]);
        if (budget)
            CHECK_OK (client, fpx_add (client, "other", 10, DIM, xb + i * 10 * DIM, NULL));
    }
    fprintf (stderr, "# %s: %d of 3 checks saw the rebuild pending\n", c->label, pending_seen);
    REQUIRE_TRUE (s_rebuild_reference (&m));
    CHECK_OK (client, fpx_index_save (client, name));
    fpx_index_info_t info;
    if (CHECK_OK (client, fpx_index_describe (client, name, 0, &info)))
        CHECK (!info.rebuild_pending, "still pending after a save, which waits for it");
    s_compare (client, name, &m, "after the background rebuild and an add");

    //  2. kill -9 while it rebuilds: the log replays the removal.
    s_remove_both (client, name, &m, s_every_other (&m, 0, 6000, list), list);
    s_check_pending (client, name, &m, "before kill -9", list [0]);
    fpx_client_destroy (&client);
    s_kill9 (&server);
    fpx_test_server_stop (&server, 5);
    REQUIRE (fpx_test_server_start (&server, args, NULL) == 0, "restart failed");
    client = fpx_test_client (&server, fpx_test_key_a);
    fpx_client_set_long_timeout (client, 300000);
    s_compare (client, name, &m, "after kill -9 during the rebuild");

    //  3. A clean stop while it rebuilds: it lands, and is snapshotted.
    s_remove_both (client, name, &m, s_every_other (&m, 3000, 4000, list), list);
    fpx_client_destroy (&client);
    CHECK_EQ (fpx_test_server_stop (&server, 120), 0);
    CHECK_EQ (s_log_bytes (dir, name), 0);
    REQUIRE (fpx_test_server_start (&server, args, NULL) == 0, "restart failed");
    client = fpx_test_client (&server, fpx_test_key_a);
    fpx_client_set_long_timeout (client, 300000);
    s_compare (client, name, &m, "after a clean stop during the rebuild");

    //  4. An explicit save waits for the rebuild: the snapshot holds it.
    s_remove_both (client, name, &m, s_every_other (&m, 500, 2000, list), list);
    CHECK_OK (client, fpx_index_save (client, name));
    CHECK_EQ (s_log_bytes (dir, name), 0);
    s_compare (client, name, &m, "after a save during the rebuild");

    //  5. Dropped while it rebuilds; the name is free again at once.
    s_remove_both (client, name, &m, s_every_other (&m, 0, 4000, list), list);
    CHECK_OK (client, fpx_index_drop (client, name));
    CHECK_OK (client, fpx_ping (client, NULL));
    CHECK_OK (client, fpx_index_create (client, name, DIM, "HNSW16", FPX_METRIC_L2, NULL));
    CHECK_OK (client, fpx_add (client, name, 100, DIM, xb, NULL));
    if (CHECK_OK (client, fpx_index_describe (client, name, 0, &info)))
        CHECK_EQ (info.ntotal, 100);
    fpx_client_destroy (&client);
    CHECK_EQ (fpx_test_server_stop (&server, 120), 0);
    free (list);
    free (xb);
    s_model_free (&m);
    fpx_test_remove_dir (dir);
}

int
main (void)
{
    s_xt = fpx_data_clustered (1, NT, DIM, 40, 0.08f);
    s_xb = fpx_data_clustered (2, NB, DIM, 40, 0.08f);
    s_xq = fpx_data_clustered (3, NQ, DIM, 40, 0.08f);
    fpx_test_local_single_thread ();
    for (int i = 0; i < NCASES; i++) {
        char name [80];
        snprintf (name, sizeof name, "deletion.%s", s_cases [i].label);
        fpx_test_run (name, s_test_structure, (void *) &s_cases [i]);
    }
    fpx_test_run ("deletion.hostile_ids", s_test_hostile_ids, NULL);
    fpx_test_run ("deletion.idmap_view", s_test_idmap_view, NULL);
    fpx_test_run ("deletion.memory_cap", s_test_memory_cap, NULL);
    fpx_test_run ("deletion.deadline", s_test_deadline, NULL);
    fpx_test_run ("deletion.background.HNSW16", s_test_background, (void *) &s_cases [0]);
    fpx_test_run ("deletion.background.IDMap2_HNSW16", s_test_background,
                  (void *) &s_cases [3]);
    free (s_xt);
    free (s_xb);
    free (s_xq);
    return fpx_test_finish ();
}
