/*  test_budget.c — more named indexes than --memory-budget-mb holds.

    A server with a 64 MiB budget gets ten 16 MiB Flat indexes, an IVF
    and an HNSW one (uploaded, so that their structure is the one built
    here). Checks that:
    - the indexes in memory stay within the budget, the least recently
      used evicted (describe: loaded false, with the same d, ntotal,
      class as before), and the server's RSS stays near the budget;
    - searched round-robin, every index answers exactly as the same index
      in this process, loading back what was evicted;
    - a write to an evicted index loads it, lands, and survives kill -9;
      after the restart the indexes past the budget are registered
      evicted without being read, and still answer exactly;
    - an index with a view into it is not evicted until the view goes;
    - searches from several threads, racing with evictions and loads,
      answer exactly;
    - a snapshot damaged while its index is evicted makes the load fail
      with FPX_EDAMAGED, and the server goes on.
*/
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fpx_test.h"

#define DIM        128
#define FLATS      10
#define FLAT_N     32768            //  × 128 × 4 bytes = 16 MiB
#define BUDGET_MB  64
#define NQ         4
#define K          10
#define NINDEXES   (FLATS + 2)

typedef struct {
    char name [32];
    FaissIndex *local;
    int extra;                      //  fpx_local_knn's extra columns
    int64_t ntotal;
} s_index_t;

static s_index_t s_indexes [NINDEXES];
static char s_dir [256];

static int
s_start (fpx_test_server_t *server)
{
    const char *args [] = { "--data-dir", s_dir, "--memory-budget-mb", "64",
                            "--snapshot-interval-s", "3600", "--workers", "4",
                            "--log-level", "debug", NULL };
    //  Under ASan, freed blocks wait in a quarantine (256 MiB by default)
    //  before going back: keep it small, or RSS says nothing.
    const char *env [] = { "ASAN_OPTIONS=abort_on_error=0:detect_leaks=1:quarantine_size_mb=8",
                           NULL };
    return fpx_test_server_start (server, args, fpx_test_asan () ? env : NULL);
}

static void
s_kill9 (fpx_test_server_t *server)
{
    kill (server->pid, SIGKILL);
    int status;
    waitpid (server->pid, &status, 0);
    server->pid = 0;
}

//  Lines of the server's log that contain text.
static int
s_log_count (const fpx_test_server_t *server, const char *text)
{
    FILE *log = fopen (server->log_path, "r");
    char line [4096];
    int count = 0;
    while (log && fgets (line, sizeof line, log))
        if (strstr (line, text))
            count++;
    if (log)
        fclose (log);
    return count;
}

//  Searches index i remotely and locally with the same queries.
static bool
s_search_matches (fpx_client_t *client, int i, uint64_t seed)
{
    //  Seeds apart from the data's: a query equal to a stored vector has
    //  a distance of 0 that float rounding may turn into 1e-5.
    float *xq = fpx_data_uniform (1000000 + seed, NQ, DIM);
    fpx_knn_t ref, got;
    bool ok = CHECK (fpx_local_knn (s_indexes [i].local, NQ, xq, K, s_indexes [i].extra, &ref) == 0,
                     "local search of %s", s_indexes [i].name)
           && CHECK_OK (client, fpx_remote_knn (client, s_indexes [i].name, NQ, DIM, xq, K, NULL,
                                                &got));
    if (ok) {
        ok = CHECK_KNN (&ref, &got);
        fpx_knn_free (&got);
    }
    fpx_knn_free (&ref);
    free (xq);
    return ok;
}

//  Sum of memory_bytes of the loaded indexes; *nloaded of them.
static int64_t
s_loaded_bytes (fpx_client_t *client, int *nloaded)
{
    int64_t bytes = 0;
    *nloaded = 0;
    for (int i = 0; i < NINDEXES; i++) {
        fpx_index_info_t info;
        if (!CHECK_OK (client, fpx_index_describe (client, s_indexes [i].name, 1, &info)))
            continue;
        CHECK_EQ (info.ntotal, s_indexes [i].ntotal);
        CHECK_EQ (info.d, DIM);
        if (info.loaded) {
            bytes += info.memory_bytes;
            ++*nloaded;
        }
    }
    return bytes;
}

static bool s_loaded (fpx_client_t *client, int i);

//  info's index list says of each index what describe says (loaded or
//  evicted), once settled.
static void
s_check_info_loaded (fpx_client_t *client)
{
    fpx_info_t *info;
    if (!CHECK_OK (client, fpx_info (client, 0, 0, &info)))
        return;
    int listed = 0;
    for (int row = 0; row < NINDEXES + 8; row++) {
        char path [64];
        snprintf (path, sizeof path, "index_list.%d.name", row);
        const char *name = fpx_info_str (info, path);
        if (!name)
            break;
        for (int i = 0; i < NINDEXES; i++) {
            if (strcmp (name, s_indexes [i].name))
                continue;
            int64_t loaded = -1;
            snprintf (path, sizeof path, "index_list.%d.loaded", row);
            CHECK_EQ (fpx_info_int (info, path, &loaded), 0);
            CHECK (loaded == s_loaded (client, i), "info says %s loaded=%lld, describe %d",
                   name, (long long) loaded, s_loaded (client, i));
            listed++;
        }
    }
    CHECK_EQ (listed, NINDEXES);
    fpx_info_free (&info);
}

//  As s_loaded_bytes, once within the budget or after 10 s: the server
//  evicts after the reply of the request that passed it.
static int64_t
s_settled_bytes (fpx_client_t *client, int *nloaded)
{
    int64_t bytes = s_loaded_bytes (client, nloaded);
    double until = fpx_now () + 10;
    while (bytes > ((int64_t) BUDGET_MB << 20) && fpx_now () < until) {
        fpx_sleep_ms (20);
        bytes = s_loaded_bytes (client, nloaded);
    }
    return bytes;
}

static bool
s_loaded (fpx_client_t *client, int i)
{
    fpx_index_info_t info = { 0 };
    CHECK_OK (client, fpx_index_describe (client, s_indexes [i].name, 0, &info));
    return info.loaded != 0;
}

//  Builds the indexes: Flats filled remotely, IVF and HNSW uploaded.
static bool
s_build (fpx_client_t *client)
{
    char why [256];
    for (int i = 0; i < FLATS; i++) {
        s_index_t *index = &s_indexes [i];
        snprintf (index->name, sizeof index->name, "flat%d", i);
        index->local = fpx_local_create (DIM, "Flat", FPX_METRIC_L2, why, sizeof why);
        float *x = fpx_data_uniform (100 + (uint64_t) i, FLAT_N, DIM);
        bool ok = CHECK (index->local != NULL, "%s", why)
               && CHECK_OK (client, fpx_index_create (client, index->name, DIM, "Flat",
                                                      FPX_METRIC_L2, NULL))
               && CHECK_OK (client, fpx_add (client, index->name, FLAT_N, DIM, x, NULL))
               && CHECK (faiss_Index_add (index->local, FLAT_N, x) == 0, "local add");
        free (x);
        if (!ok)
            return false;
        index->ntotal = FLAT_N;
    }
    const char *factories [2] = { "IVF64,Flat", "HNSW16" };
    const int64_t sizes [2] = { 8192, 4096 };
    for (int j = 0; j < 2; j++) {
        s_index_t *index = &s_indexes [FLATS + j];
        snprintf (index->name, sizeof index->name, j ? "hnsw" : "ivf");
        index->extra = j ? 0 : 10;
        index->local = fpx_local_create (DIM, factories [j], FPX_METRIC_L2, why, sizeof why);
        float *x = fpx_data_clustered (200 + (uint64_t) j, sizes [j], DIM, 32, 0.1f);
        size_t size = 0;
        uint8_t *bytes = NULL;
        bool ok = CHECK (index->local != NULL, "%s", why)
               && CHECK (faiss_Index_train (index->local, sizes [j], x) == 0, "local train")
               && CHECK (faiss_Index_add (index->local, sizes [j], x) == 0, "local add")
               && CHECK ((bytes = fpx_local_serialize (index->local, &size)) != NULL, "serialize")
               && CHECK_OK (client, fpx_deserialize (client, index->name, NULL, bytes, size, NULL));
        free (bytes);
        free (x);
        if (!ok)
            return false;
        index->ntotal = sizes [j];
    }
    return true;
}

// ---- racing searches ----------------------------------------------------------------

typedef struct {
    const fpx_test_server_t *server;
    int thread;
    int rounds;
} s_racer_t;

static void *
s_racer (void *arg)
{
    s_racer_t *racer = arg;
    fpx_client_t *client = fpx_test_client (racer->server, fpx_test_key_a);
    if (!CHECK (client != NULL, "client of racer %d", racer->thread))
        return NULL;
    fpx_rng_t rng;
    fpx_rng_seed (&rng, 900 + (uint64_t) racer->thread);
    for (int r = 0; r < racer->rounds; r++) {
        int i = (int) (fpx_rng_next (&rng) % NINDEXES);
        if (!s_search_matches (client, i, 5000 + (uint64_t) racer->thread * 1000 + (uint64_t) r))
            break;
    }
    fpx_client_destroy (&client);
    return NULL;
}

// ---- the test ----------------------------------------------------------------------

static void
s_test_budget (void *arg)
{
    (void) arg;
    fpx_test_local_single_thread ();
    snprintf (s_dir, sizeof s_dir, "/tmp/fpx-budget-%d-XXXXXX", (int) getpid ());
    REQUIRE (mkdtemp (s_dir) != NULL, "mkdtemp");
    fpx_test_server_t server;
    REQUIRE (s_start (&server) == 0, "server did not start");
    fpx_test_watch (&server);
    long base_kb = fpx_test_server_rss_kb (&server);
    fpx_client_t *client = fpx_test_client (&server, fpx_test_key_a);
    REQUIRE (client != NULL, "client");
    REQUIRE (s_build (client), "building the indexes failed");

    //  Within the budget, the oldest evicted, every description whole.
    int nloaded;
    int64_t bytes = s_settled_bytes (client, &nloaded);
    CHECK (bytes <= ((int64_t) BUDGET_MB << 20), "%lld bytes of indexes loaded, budget %d MiB",
           (long long) bytes, BUDGET_MB);
    CHECK (nloaded >= 2 && nloaded < NINDEXES, "%d of %d indexes loaded", nloaded, NINDEXES);
    CHECK (!s_loaded (client, 0), "flat0, the least recently used, is still loaded");
    s_check_info_loaded (client);
    fpx_index_info_t before, evicted;
    if (CHECK_OK (client, fpx_index_describe (client, "flat1", 0, &evicted))) {
        CHECK_EQ (evicted.loaded, 0);
        CHECK_STR (evicted.factory, "Flat");
        CHECK_EQ (evicted.is_trained, 1);
        CHECK_EQ (evicted.metric, FPX_METRIC_L2);
    }

    //  Round-robin, three passes: each search loads what it needs.
    for (int pass = 0; pass < 3; pass++)
        for (int i = 0; i < NINDEXES; i++) {
            if (!s_search_matches (client, i, (uint64_t) (pass * 100 + i)))
                break;
            CHECK (s_loaded (client, i), "%s is not loaded right after a search", s_indexes [i].name);
            //  FAISS reads a Flat L2 index back as IndexFlatL2.
            if (pass == 0 && i == 1 && CHECK_OK (client, fpx_index_describe (client, "flat1", 0,
                                                                              &before)))
                CHECK (!strncmp (before.class_name, "IndexFlat", 9)
                       && !strncmp (evicted.class_name, "IndexFlat", 9),
                       "classes %s (loaded), %s (evicted)", before.class_name,
                       evicted.class_name);
        }
    bytes = s_settled_bytes (client, &nloaded);
    CHECK (bytes <= ((int64_t) BUDGET_MB << 20), "after the passes: %lld bytes loaded",
           (long long) bytes);
    CHECK (!s_loaded (client, 0), "flat0 still loaded after a pass over the others");
    CHECK (s_loaded (client, NINDEXES - 1), "the index searched last is not loaded");
    //  Resident size: what the budget allows plus the server's own, with a
    //  generous margin (one index in flight, allocator slack, ASan).
    long rss_kb = fpx_test_server_rss_kb (&server);
#ifdef __SANITIZE_THREAD__
    long margin_kb = 1024 << 10;    //  ThreadSanitizer's shadow memory
#else
    long margin_kb = (fpx_test_asan () ? 160 : 64) << 10;
#endif
    CHECK (rss_kb > 0 && rss_kb <= base_kb + (BUDGET_MB << 10) + margin_kb,
           "RSS %ld KiB: more than %ld KiB at start + the %d MiB budget + %ld KiB",
           rss_kb, base_kb, BUDGET_MB, margin_kb);

    //  A view into an index keeps it loaded; dropped, the index may go.
    const int ivf = FLATS;
    fpx_index_info_t view;
    if (CHECK_OK (client, fpx_subobject (client, "ivf", "quantizer", &view))) {
        for (int i = 0; i < FLATS; i++)
            s_search_matches (client, i, (uint64_t) (500 + i));
        CHECK (s_loaded (client, ivf), "ivf was evicted while a view into it exists");
        CHECK_OK (client, fpx_index_drop (client, view.name));
        for (int i = 0; i < FLATS; i++)
            s_search_matches (client, i, (uint64_t) (600 + i));
        CHECK (!s_loaded (client, ivf), "ivf still loaded after its view went and %d Flat "
               "searches", FLATS);
    }
    CHECK (s_log_count (&server, "evicted flat") >= FLATS, "fewer evictions than expected");
    CHECK (s_log_count (&server, "back (memory budget)") >= FLATS, "fewer loads than expected");

    //  A write to an evicted index loads it and survives kill -9.
    REQUIRE (!s_loaded (client, 1), "flat1 should be evicted by now");
    float *x = fpx_data_uniform (77, 100, DIM);
    int64_t ntotal = 0;
    CHECK_OK (client, fpx_add (client, "flat1", 100, DIM, x, &ntotal));
    CHECK_EQ (ntotal, FLAT_N + 100);
    faiss_Index_add (s_indexes [1].local, 100, x);
    s_indexes [1].ntotal = FLAT_N + 100;
    free (x);
    fpx_client_destroy (&client);
    s_kill9 (&server);
    REQUIRE (s_start (&server) == 0, "restart failed");
    client = fpx_test_client (&server, fpx_test_key_a);
    REQUIRE (client != NULL, "client");
    //  Wait for recovery; then some indexes are registered evicted.
    double until = fpx_now () + 60;
    fpx_index_info_t info;
    while (fpx_index_describe (client, "flat0", 0, &info) == FPX_ERECOVERING && fpx_now () < until)
        fpx_sleep_ms (50);
    bytes = s_loaded_bytes (client, &nloaded);
    CHECK (nloaded < NINDEXES, "every index was loaded at start despite the budget");
    //  Past the budget, the indexes whose logs are empty were not read.
    CHECK (s_log_count (&server, "evicted (memory budget full)") >= FLATS - 5,
           "only %d indexes registered evicted at start",
           s_log_count (&server, "evicted (memory budget full)"));
    CHECK (s_log_count (&server, "recovered alice/flat1 ") == 1, "flat1, with a logged write, "
           "was not read and replayed at start");
    CHECK (bytes <= ((int64_t) BUDGET_MB << 20) + ((int64_t) 17 << 20),
           "after restart: %lld bytes loaded", (long long) bytes);
    for (int i = 0; i < NINDEXES; i++)
        s_search_matches (client, i, (uint64_t) (1000 + i));

    //  Searches from several threads race with evictions and loads.
    enum { RACERS = 4 };
    pthread_t threads [RACERS];
    s_racer_t racers [RACERS];
    for (int t = 0; t < RACERS; t++) {
        racers [t] = (s_racer_t) { .server = &server, .thread = t,
                                   .rounds = fpx_test_asan () ? 15 : 40 };
        pthread_create (&threads [t], NULL, s_racer, &racers [t]);
    }
    for (int t = 0; t < RACERS; t++)
        pthread_join (threads [t], NULL);
    bytes = s_settled_bytes (client, &nloaded);
    CHECK (bytes <= ((int64_t) BUDGET_MB << 20), "after the race: %lld bytes loaded",
           (long long) bytes);

    //  A snapshot damaged while its index is evicted: the load fails
    //  with FPX_EDAMAGED, the server goes on, describe still answers.
    int victim = -1;
    for (int i = 0; i < FLATS && victim < 0; i++)
        if (!s_loaded (client, i))
            victim = i;
    if (CHECK (victim >= 0, "no Flat index is evicted after the race")) {
        char path [400];
        snprintf (path, sizeof path, "%s/tenants/%s/%s/snapshot", s_dir, FPX_TEST_TENANT_A,
                  s_indexes [victim].name);
        FILE *file = fopen (path, "r+b");
        int byte = EOF;
        if (CHECK (file != NULL, "cannot open %s", path)) {
            fseek (file, 4096, SEEK_SET);
            byte = fgetc (file);
            fseek (file, 4096, SEEK_SET);
            fputc (byte ^ 0x40, file);
            fclose (file);
        }
        float *xq = fpx_data_uniform (4242, NQ, DIM);
        float distances [NQ * K];
        int64_t labels [NQ * K];
        CHECK_RC (client, fpx_search (client, s_indexes [victim].name, NQ, DIM, xq, K, NULL,
                                      distances, labels), FPX_EDAMAGED);
        CHECK (strstr (fpx_client_errmsg (client), "checksum") != NULL, "error: %s",
               fpx_client_errmsg (client));
        free (xq);
        fpx_index_info_t info;
        if (CHECK_OK (client, fpx_index_describe (client, s_indexes [victim].name, 0, &info)))
            CHECK_EQ (info.loaded, 0);
        CHECK_TRUE (s_search_matches (client, (victim + 1) % NINDEXES, 4343));
        //  Put the byte back: the next request loads it whole.
        file = fopen (path, "r+b");
        if (file && byte != EOF) {
            fseek (file, 4096, SEEK_SET);
            fputc (byte, file);
        }
        if (file)
            fclose (file);
        CHECK_TRUE (s_search_matches (client, victim, 4444));
    }

    fpx_client_destroy (&client);
    fpx_test_watch (NULL);
    CHECK_EQ (fpx_test_server_stop (&server, 60), 0);
    char command [300];
    snprintf (command, sizeof command, "rm -rf '%s'", s_dir);
    if (system (command) != 0)
        fprintf (stderr, "# could not remove %s\n", s_dir);
}

int
main (void)
{
    fpx_test_run ("budget_evicts_loads_and_answers_exactly", s_test_budget, NULL);
    for (int i = 0; i < NINDEXES; i++)
        if (s_indexes [i].local)
            faiss_Index_free (s_indexes [i].local);
    return fpx_test_finish ();
}
