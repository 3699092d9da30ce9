/*  test_limits.c — quotas per tenant, fairness between tenants, deadlines,
    limits per connection and the server's memory limit.

    Six servers, each started with the limits its tests need:
    - quotas: max_indexes, max_vectors and max_memory_mb refuse with
      FPX_EQUOTA and a message naming the limit; a drop frees a slot; the
      memory quota stops anonymous PQ indexes before the server's resident
      size passes the quota plus a stated slack;
    - disk (its own data directory, restarted): max_disk_mb counts the
      snapshots and logs of named indexes, from the files after a restart;
    - fairness: alice holds two workers with long k-means and floods her
      queue with slow searches; she gets FPX_EBUSY past max_inflight, while
      bob's ping and small searches are answered promptly and never EBUSY;
      her k-means is stopped at her deadline (FPX_ETIMEDOUT);
    - deadlines and connections (one worker): a train past the deadline is
      interrupted, requests queued behind it answer "did not run", and one
      connection gets FPX_EBUSY past --max-conn-inflight;
    - memory: --max-memory-mb refuses growth with FPX_ENOMEM while reads
      go on; a peer that never reads its replies stops being served once
      --max-conn-unread-mb of them wait, and the server's RSS stays
      bounded; a frame over the per-frame cap costs the server nothing;
      a raw ZMTP peer's endless message is cut near 2 x --max-message-mb;
    - unauthenticated budget: peers without a valid key share
      --max-unauthenticated-mb for their unfinished messages.
*/
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "fpx_test.h"

#define SMALL_D  8

static fpx_test_server_t s_server;

/* ---- helpers -------------------------------------------------------------------- */

static bool
s_message_has (fpx_client_t *client, const char *text)
{
    const char *message = fpx_client_errmsg (client);
    return CHECK (message && strstr (message, text), "message '%s' lacks '%s'",
                  message ? message : "(null)", text);
}

//  A raw search request (not batchable when nq·d·4 > 64 KiB).
static int
s_raw_search_send (fpx_raw_t *raw, const char *key, const char *name, int k,
                   const float *x, size_t nq, int d)
{
    uint8_t header [FPX_REQUEST_HEADER_SIZE];
    fpx_raw_header (header, FPX_OP_SEARCH, ++raw->next_id, key);
    fpx_mp_t mp;
    fpx_mp_init (&mp);
    msgpack_pack_map (&mp.pk, 2);
    fpx_pack_kv_str (&mp.pk, "name", name);
    fpx_pack_kv_int (&mp.pk, "k", k);
    const void *frames [] = { header, mp.buf.data, x };
    size_t sizes [] = { sizeof header, mp.buf.size, nq * (size_t) d * sizeof (float) };
    int rc = fpx_raw_send (raw, 3, frames, sizes);
    fpx_mp_free (&mp);
    return rc;
}

static long
s_rss_mb (void)
{
    long kb = fpx_test_server_rss_kb (&s_server);
    return kb < 0 ? -1 : kb >> 10;
}

/* ---- quotas ------------------------------------------------------------------------ */

//  Objects made by construct, clone or subobject on a connection that
//  never created or uploaded an index are reaped with it too: a tenant
//  with max_indexes = 5 builds one on each of 12 short connections. Reaping
//  runs after the disconnect, so a refusal is retried for a while.
static void
test_construct_reaped (void *arg)
{
    (void) arg;
    double d = SMALL_D;
    for (int cycle = 0; cycle < 12; cycle++) {
        fpx_client_t *client = fpx_test_client (&s_server, fpx_test_key_a);
        REQUIRE (client, "client");
        fpx_index_info_t info;
        int rc = FPX_EQUOTA;
        double deadline = fpx_now () + 10;
        while ((rc = fpx_construct (client, "IndexFlatL2", 1, &d, 0, NULL, &info)) == FPX_EQUOTA
               && fpx_now () < deadline)
            fpx_sleep_ms (50);
        CHECK (rc == 0, "cycle %d: construct: %s (%s)", cycle, fpx_error_name (rc),
               fpx_client_errmsg (client));
        if (rc == 0 && cycle % 3 == 1) {
            fpx_index_info_t copy;
            CHECK_OK (client, fpx_clone (client, info.name, &copy));
        }
        fpx_client_destroy (&client);
        if (rc)
            break;
    }
}


static void
test_max_indexes (void *arg)
{
    (void) arg;
    fpx_client_t *client = fpx_test_client (&s_server, fpx_test_key_a);
    REQUIRE (client, "client");
    char name [32];
    for (int i = 0; i < 4; i++) {
        snprintf (name, sizeof name, "q%d", i);
        CHECK_OK (client, fpx_index_create (client, name, SMALL_D, "Flat", 0, NULL));
    }
    //  Anonymous indexes count too: the fifth slot.
    fpx_index_info_t info;
    CHECK_OK (client, fpx_index_create (client, NULL, SMALL_D, "Flat", 0, &info));
    CHECK_RC (client, fpx_index_create (client, "q4", SMALL_D, "Flat", 0, NULL), FPX_EQUOTA);
    s_message_has (client, "max_indexes = 5");
    s_message_has (client, "--tenant-limits");
    CHECK_RC (client, fpx_index_create (client, NULL, SMALL_D, "Flat", 0, NULL), FPX_EQUOTA);
    //  Another tenant has its own count.
    fpx_client_t *bob = fpx_test_client (&s_server, fpx_test_key_b);
    if (CHECK (bob, "bob's client")) {
        CHECK_OK (bob, fpx_index_create (bob, "b0", SMALL_D, "Flat", 0, NULL));
        CHECK_OK (bob, fpx_index_drop (bob, "b0"));
    }
    fpx_client_destroy (&bob);
    //  A drop frees a slot.
    CHECK_OK (client, fpx_index_drop (client, "q3"));
    CHECK_OK (client, fpx_index_create (client, "q4", SMALL_D, "Flat", 0, NULL));
    for (int i = 0; i < 5; i++) {
        snprintf (name, sizeof name, "q%d", i);
        fpx_index_drop (client, name);
    }
    fpx_client_destroy (&client);
}

static void
test_max_vectors (void *arg)
{
    (void) arg;
    fpx_client_t *client = fpx_test_client (&s_server, fpx_test_key_a);
    REQUIRE (client, "client");
    REQUIRE_OK (client, fpx_index_create (client, "v", SMALL_D, "Flat", 0, NULL));
    float *x = fpx_data_uniform (3, 1500, SMALL_D);
    CHECK_OK (client, fpx_add (client, "v", 600, SMALL_D, x, NULL));
    CHECK_OK (client, fpx_add (client, "v", 400, SMALL_D, x, NULL));
    CHECK_RC (client, fpx_add (client, "v", 1, SMALL_D, x, NULL), FPX_EQUOTA);
    s_message_has (client, "max_vectors = 1000");
    fpx_index_info_t info;
    if (CHECK_OK (client, fpx_index_open (client, "v", &info)))
        CHECK_EQ (info.ntotal, 1000);
    //  Removing vectors gives them back.
    int64_t removed = 0;
    CHECK_OK (client, fpx_remove_range (client, "v", 0, 500, &removed));
    CHECK_OK (client, fpx_add (client, "v", 500, SMALL_D, x, NULL));
    CHECK_OK (client, fpx_index_drop (client, "v"));
    free (x);
    fpx_client_destroy (&client);
}

//  Anonymous PQ500x16 indexes of d = 500: 131 MB of centroids each.
#define PQ_D        500
#define PQ_FACTORY  "PQ500x16"
#define PQ_MB       131
#define QUOTA_MB    300

static void
test_max_memory (void *arg)
{
    (void) arg;
    fpx_client_t *client = fpx_test_client (&s_server, fpx_test_key_b);
    REQUIRE (client, "client");
    long before = s_rss_mb ();
    int created = 0, rc = 0;
    for (int i = 0; i < 8 && rc == 0; i++) {
        rc = fpx_index_create (client, NULL, PQ_D, PQ_FACTORY, 0, NULL);
        if (rc == 0)
            created++;
    }
    long after = s_rss_mb ();
    CHECK_EQ (created, QUOTA_MB / PQ_MB);
    CHECK_EQ (rc, FPX_EQUOTA);
    if (rc == FPX_EQUOTA)
        s_message_has (client, "max_memory_mb = 300");
    //  Bound: the quota plus one index refused while it was being built
    //  (FAISS allocates before the cap stops it) plus 100 MB of slack.
    CHECK (after - before < QUOTA_MB + PQ_MB + 100, "RSS grew by %ld MB (quota %d MB)",
           after - before, QUOTA_MB);
    //  Reads still work, and closing the connection frees the quota.
    CHECK_OK (client, fpx_ping (client, NULL));
    fpx_client_destroy (&client);
    client = fpx_test_client (&s_server, fpx_test_key_b);
    REQUIRE (client, "client");
    rc = -1;
    for (int i = 0; i < 50 && rc != 0; i++) {
        rc = fpx_index_create (client, NULL, PQ_D, PQ_FACTORY, 0, NULL);
        if (rc)
            fpx_sleep_ms (100);             //  the reap runs on a worker
    }
    CHECK_OK (client, rc);
    fpx_client_destroy (&client);
}

//  max_disk_mb = 1 on a data directory of its own: adds to a named index
//  stop at 1 MiB of snapshot + log, anonymous indexes and the other
//  tenant are not charged, removals still go through, a snapshot that
//  compacts the log gives room back, the count survives a restart and a
//  drop frees it.
#define DISK_D 64                                   //  256 bytes a vector
static void
test_max_disk (void *arg)
{
    (void) arg;
    char dir [] = "/tmp/fpx-limits-disk-XXXXXX";
    REQUIRE (mkdtemp (dir), "mkdtemp");
    const char *args [] = { "--data-dir", dir, "--default-tenant-limits", "max_disk_mb=1", NULL };
    fpx_test_server_t server;
    float *x = fpx_data_uniform (11, 4000, DISK_D);
    fpx_index_info_t info;
    int64_t removed = 0;
    REQUIRE (fpx_test_server_start (&server, args, NULL) == 0, "start");
    fpx_client_t *alice = fpx_test_client (&server, fpx_test_key_a);
    fpx_client_t *bob = fpx_test_client (&server, fpx_test_key_b);
    if (CHECK (alice && bob, "clients")
    &&  CHECK_OK (alice, fpx_index_create (alice, "d", DISK_D, "Flat", FPX_METRIC_L2, NULL))) {
        CHECK_OK (alice, fpx_add (alice, "d", 3000, DISK_D, x, NULL));           //  750 KiB
        CHECK_RC (alice, fpx_add (alice, "d", 2000, DISK_D, x, NULL), FPX_EQUOTA);
        s_message_has (alice, "max_disk_mb = 1");
        if (CHECK_OK (alice, fpx_index_open (alice, "d", &info)))
            CHECK_EQ (info.ntotal, 3000);
        //  Not on disk: an anonymous index; another tenant has its own.
        fpx_index_info_t anonymous;
        uint8_t *blob = NULL;
        size_t blob_size = 0;
        if (CHECK_OK (alice, fpx_index_create (alice, NULL, DISK_D, "Flat", FPX_METRIC_L2,
                                               &anonymous))
        &&  CHECK_OK (alice, fpx_add (alice, anonymous.name, 4000, DISK_D, x, NULL))
        &&  CHECK_OK (alice, fpx_serialize (alice, anonymous.name, &blob, &blob_size))) {
            //  Uploaded under a name, its first snapshot (1 MB) would pass
            //  the quota: refused, and no name is left behind.
            CHECK_RC (alice, fpx_deserialize (alice, "big", NULL, blob, blob_size, NULL), FPX_EQUOTA);
            s_message_has (alice, "max_disk_mb = 1");
            CHECK_RC (alice, fpx_index_open (alice, "big", &info), FPX_ENOTFOUND);
        }
        free (blob);
        if (CHECK_OK (bob, fpx_index_create (bob, "d", DISK_D, "Flat", FPX_METRIC_L2, NULL)))
            CHECK_OK (bob, fpx_add (bob, "d", 3000, DISK_D, x, NULL));
        //  At the quota a removal is still logged; the snapshot it allows
        //  (1000 vectors, no log) leaves room for 2000 more.
        CHECK_OK (alice, fpx_remove_range (alice, "d", 0, 2000, &removed));
        CHECK_EQ (removed, 2000);
        CHECK_OK (alice, fpx_index_save (alice, "d"));
        CHECK_OK (alice, fpx_add (alice, "d", 2000, DISK_D, x, NULL));
    }
    fpx_client_destroy (&alice);
    fpx_client_destroy (&bob);
    fpx_test_server_stop (&server, 30);

    //  After a restart the usage is counted from the files: 3000 vectors
    //  (750 KiB) leave room for 500 more, not 1500.
    REQUIRE (fpx_test_server_start (&server, args, NULL) == 0, "restart");
    alice = fpx_test_client (&server, fpx_test_key_a);
    if (CHECK (alice != NULL, "client") && CHECK_OK (alice, fpx_index_open (alice, "d", &info))) {
        CHECK_EQ (info.ntotal, 3000);
        CHECK_RC (alice, fpx_add (alice, "d", 1500, DISK_D, x, NULL), FPX_EQUOTA);
        CHECK_OK (alice, fpx_add (alice, "d", 500, DISK_D, x, NULL));
        //  A drop gives its bytes back.
        CHECK_OK (alice, fpx_index_drop (alice, "d"));
        CHECK_OK (alice, fpx_index_create (alice, "e", DISK_D, "Flat", FPX_METRIC_L2, NULL));
        CHECK_OK (alice, fpx_add (alice, "e", 3500, DISK_D, x, NULL));
    }
    fpx_client_destroy (&alice);
    fpx_test_server_stop (&server, 30);
    free (x);
    char command [300];
    snprintf (command, sizeof command, "rm -rf '%s'", dir);
    CHECK_EQ (system (command), 0);
}

/* ---- fairness ------------------------------------------------------------------------ */

#define KM_D  32
#define KM_K  256
#define KM_N  40000
#define FLAT_D  64
#define FLAT_N  100000
#define FLAT_NQ 300              //  76.8 KB of queries: never batched

typedef struct {
    int rc;
    double seconds;
    char message [256];
} s_kmeans_t;

static float *s_km_x;

static void *
s_kmeans_thread (void *arg)
{
    s_kmeans_t *self = arg;
    fpx_client_t *client = fpx_test_client (&s_server, fpx_test_key_a);
    if (!client) {
        self->rc = -1000;
        return NULL;
    }
    fpx_client_set_timeout (client, 120000);
    fpx_kmeans_params_t params = { .niter = 10000, .nredo = 1, .seed = 1,
                                   .max_points_per_centroid = 100000 };
    float *centroids = malloc ((size_t) KM_K * KM_D * sizeof (float));
    double start = fpx_now ();
    self->rc = fpx_kmeans (client, KM_D, KM_K, KM_N, s_km_x, &params, centroids, NULL, 0, NULL);
    self->seconds = fpx_now () - start;
    snprintf (self->message, sizeof self->message, "%s", fpx_client_errmsg (client));
    free (centroids);
    fpx_client_destroy (&client);
    return NULL;
}

static void
test_fairness (void *arg)
{
    (void) arg;
    fpx_client_t *alice = fpx_test_client (&s_server, fpx_test_key_a);
    fpx_client_t *bob = fpx_test_client (&s_server, fpx_test_key_b);
    fpx_raw_t *flood = fpx_raw_new (s_server.endpoint);
    REQUIRE (alice && bob && flood, "clients");
    float *base = fpx_data_uniform (7, FLAT_N, FLAT_D);
    float *queries = fpx_data_uniform (8, FLAT_NQ, FLAT_D);
    REQUIRE_OK (alice, fpx_index_create (alice, "big", FLAT_D, "Flat", 0, NULL));
    for (int i = 0; i < FLAT_N; i += 10000)
        REQUIRE_OK (alice, fpx_add (alice, "big", 10000, FLAT_D, base + (size_t) i * FLAT_D, NULL));
    REQUIRE_OK (bob, fpx_index_create (bob, "small", SMALL_D, "Flat", 0, NULL));
    REQUIRE_OK (bob, fpx_add (bob, "small", 100, SMALL_D, base, NULL));

    //  Alice: two long k-means (stopped by her deadline), then a flood.
    s_km_x = fpx_data_clustered (9, KM_N, KM_D, 64, 0.3f);
    s_kmeans_t runs [2] = { { 0 } };
    pthread_t threads [2];
    for (int i = 0; i < 2; i++)
        pthread_create (&threads [i], NULL, s_kmeans_thread, &runs [i]);
    fpx_sleep_ms (300);
    int sent = 0;
    for (int i = 0; i < 200; i++)
        if (s_raw_search_send (flood, fpx_test_key_a, "big", 10, queries, FLAT_NQ, FLAT_D) == 0)
            sent++;
    fpx_sleep_ms (200);

    //  Bob meanwhile.
    double worst = 0;
    int bob_failures = 0;
    float distances [5];
    int64_t labels [5];
    for (int i = 0; i < 5; i++) {
        double start = fpx_now ();
        int rc = fpx_ping (bob, NULL);
        int rc2 = fpx_search (bob, "small", 1, SMALL_D, base, 5, NULL, distances, labels);
        double took = fpx_now () - start;
        if (took > worst)
            worst = took;
        if (rc || rc2) {
            bob_failures++;
            fprintf (stderr, "# bob: ping %d, search %d: %s\n", rc, rc2, fpx_client_errmsg (bob));
        }
    }
    CHECK (bob_failures == 0, "%d of bob's ping+search pairs failed", bob_failures);
    CHECK (worst < 2.0, "bob waited %.2f s for a ping and a search", worst);

    //  Alice's flood: beyond max_inflight, FPX_EBUSY naming the limit.
    int busy = 0, done = 0, expired = 0, other = 0;
    for (int i = 0; i < sent; i++) {
        fpx_raw_reply_t reply;
        if (fpx_raw_recv (flood, &reply, 60000))
            break;
        int status = reply.header.status;
        if (status == FPX_EBUSY && strstr (reply.error, "max_inflight = 16"))
            busy++;
        else if (status == 0)
            done++;
        else if (status == FPX_ETIMEDOUT && strstr (reply.error, "did not run"))
            expired++;
        else
            other++;
        fpx_raw_reply_free (&reply);
    }
    fprintf (stderr, "# alice's flood: %d sent, %d EBUSY, %d answered, %d expired, %d other\n",
             sent, busy, done, expired, other);
    CHECK (busy >= sent / 2, "only %d of %d flood requests got EBUSY", busy, sent);
    CHECK (done + expired >= 1, "none of alice's flood was served");
    CHECK_EQ (other, 0);

    //  Her k-means stopped at her deadline (4 s), not after 10000 iterations.
    for (int i = 0; i < 2; i++) {
        pthread_join (threads [i], NULL);
        CHECK (runs [i].rc == FPX_ETIMEDOUT && strstr (runs [i].message, "interrupted"),
               "k-means %d: %d (%s) after %.1f s", i, runs [i].rc, runs [i].message, runs [i].seconds);
        CHECK (runs [i].seconds < 30, "k-means %d ran %.1f s", i, runs [i].seconds);
    }
    CHECK_OK (bob, fpx_ping (bob, NULL));
    fpx_index_drop (alice, "big");
    fpx_index_drop (bob, "small");
    free (s_km_x);
    free (base);
    free (queries);
    fpx_raw_destroy (&flood);
    fpx_client_destroy (&alice);
    fpx_client_destroy (&bob);
}

/* ---- deadlines and connections ---------------------------------------------------------
    One worker; alice's deadline is 1 s, bob has none.                                    */

static int
s_train_send (fpx_raw_t *raw, const char *key, const char *name, const float *x, int n, int d)
{
    uint8_t header [FPX_REQUEST_HEADER_SIZE];
    fpx_raw_header (header, FPX_OP_TRAIN, ++raw->next_id, key);
    fpx_mp_t mp;
    fpx_mp_init (&mp);
    msgpack_pack_map (&mp.pk, 1);
    fpx_pack_kv_str (&mp.pk, "name", name);
    const void *frames [] = { header, mp.buf.data, x };
    size_t sizes [] = { sizeof header, mp.buf.size, (size_t) n * d * sizeof (float) };
    int rc = fpx_raw_send (raw, 3, frames, sizes);
    fpx_mp_free (&mp);
    return rc;
}

//  A raw socket that has reached the server (sends before that fail).
static fpx_raw_t *
s_raw_connected (const char *key)
{
    fpx_raw_t *raw = fpx_raw_new (s_server.endpoint);
    fpx_raw_reply_t reply;
    if (raw && fpx_raw_call (raw, FPX_OP_PING, key, NULL, 0, 0, NULL, NULL, &reply) != 0)
        fpx_raw_destroy (&raw);
    else if (raw)
        fpx_raw_reply_free (&reply);
    return raw;
}

static void
test_deadline_and_conn_inflight (void *arg)
{
    (void) arg;
    fpx_client_t *alice = fpx_test_client (&s_server, fpx_test_key_a);
    fpx_client_t *bob = fpx_test_client (&s_server, fpx_test_key_b);
    fpx_raw_t *trainer = s_raw_connected (fpx_test_key_b);
    fpx_raw_t *pipeline = s_raw_connected (fpx_test_key_a);
    REQUIRE (alice && bob && trainer && pipeline, "clients");
    fpx_client_set_timeout (alice, 120000);
    const int d = 32, n = 100000;
    float *x = fpx_data_clustered (11, n, d, 200, 0.2f);
    REQUIRE_OK (bob, fpx_index_create (bob, "slow", d, "IVF2048,Flat", 0, NULL));
    REQUIRE_OK (alice, fpx_index_create (alice, "ivf", d, "IVF2048,Flat", 0, NULL));
    REQUIRE_OK (alice, fpx_index_create (alice, "flat", d, "Flat", 0, NULL));
    REQUIRE_OK (alice, fpx_add (alice, "flat", 1000, d, x, NULL));

    //  Bob's train (no deadline) takes the only worker; 20 searches of
    //  alice on one connection behind it: 8 are admitted
    //  (--max-conn-inflight 8) and pass their deadline in the queue, 12
    //  are EBUSY.
    double start = fpx_now ();
    CHECK (s_train_send (trainer, fpx_test_key_b, "slow", x, n, d) == 0, "train sent");
    fpx_sleep_ms (100);
    for (int i = 0; i < 20; i++)
        CHECK (s_raw_search_send (pipeline, fpx_test_key_a, "flat", 5, x, 1, d) == 0, "sent");
    int busy = 0, expired = 0, other = 0;
    for (int i = 0; i < 20; i++) {
        fpx_raw_reply_t reply;
        if (!CHECK (fpx_raw_recv (pipeline, &reply, 60000) == 0, "reply %d", i))
            break;
        if (reply.header.status == FPX_EBUSY && strstr (reply.error, "--max-conn-inflight 8"))
            busy++;
        else if (reply.header.status == FPX_ETIMEDOUT
             &&  strstr (reply.error, "deadline of 1000 ms passed before the request started"))
            expired++;
        else {
            other++;
            fprintf (stderr, "# search after %.1f s: %d %s\n", fpx_now () - start,
                     reply.header.status, reply.error);
        }
        fpx_raw_reply_free (&reply);
    }
    CHECK_EQ (busy, 12);
    CHECK_EQ (expired, 8);
    CHECK_EQ (other, 0);
    fpx_raw_reply_t reply;
    if (CHECK (fpx_raw_recv (trainer, &reply, 60000) == 0, "bob's train answered")) {
        CHECK (reply.header.status == 0, "bob's train: %d %s", reply.header.status, reply.error);
        fpx_raw_reply_free (&reply);
    }
    fprintf (stderr, "# bob's train took %.1f s\n", fpx_now () - start);

    //  Alice's train is stopped at her deadline and leaves the index untrained.
    start = fpx_now ();
    int rc = fpx_train (alice, "ivf", n, d, x);
    double took = fpx_now () - start;
    CHECK_RC (alice, rc, FPX_ETIMEDOUT);
    s_message_has (alice, "interrupted after 1000 ms");
    CHECK (took < 20, "train answered after %.1f s", took);
    fpx_index_info_t info;
    if (CHECK_OK (alice, fpx_index_open (alice, "ivf", &info)))
        CHECK_EQ (info.is_trained, 0);
    //  Quick calls still run.
    float distances [5];
    int64_t labels [5];
    CHECK_OK (alice, fpx_search (alice, "flat", 1, d, x, 5, NULL, distances, labels));
    free (x);
    fpx_raw_destroy (&trainer);
    fpx_raw_destroy (&pipeline);
    fpx_client_destroy (&alice);
    fpx_client_destroy (&bob);
}

/* ---- server memory (--max-memory-mb 500, --max-conn-unread-mb 16) ---------------------- */

static void
test_max_memory_server (void *arg)
{
    (void) arg;
    fpx_client_t *client = fpx_test_client (&s_server, fpx_test_key_a);
    REQUIRE (client, "client");
    REQUIRE_OK (client, fpx_index_create (client, "keep", SMALL_D, "Flat", 0, NULL));
    float *x = fpx_data_uniform (5, 100, SMALL_D);
    REQUIRE_OK (client, fpx_add (client, "keep", 100, SMALL_D, x, NULL));
    REQUIRE_OK (client, fpx_index_create (client, "tiny", SMALL_D, "Flat", 0, NULL));
    REQUIRE_OK (client, fpx_add (client, "tiny", 10, SMALL_D, x, NULL));
    int created = 0, rc = 0;
    for (int i = 0; i < 12 && rc == 0; i++)
        if ((rc = fpx_index_create (client, NULL, PQ_D, PQ_FACTORY, 0, NULL)) == 0)
            created++;
    long rss = s_rss_mb ();
    fprintf (stderr, "# --max-memory-mb 500: %d PQ indexes of %d MB created, RSS %ld MB\n",
             created, PQ_MB, rss);
    CHECK_EQ (rc, FPX_ENOMEM);
    if (rc == FPX_ENOMEM)
        s_message_has (client, "server memory limit reached");
    CHECK (created >= 1 && created <= 4, "%d PQ indexes of %d MB under a 500 MB limit",
           created, PQ_MB);
    CHECK (rss < 500 + PQ_MB + 100, "server RSS %ld MB with --max-memory-mb 500", rss);
    CHECK_RC (client, fpx_index_create (client, NULL, PQ_D, PQ_FACTORY, 0, NULL), FPX_ENOMEM);
    //  Adds (not capped) take the server to the limit; then they are
    //  refused, and so are reads with big results, while small reads are
    //  served. An add is refused when the server's resident size with the
    //  add's own 4 MB frame reaches the limit, so once one is, the size at
    //  rest is within 4 MB of it: a search whose query frame alone is
    //  4 MiB arrives over it, whenever it comes (the read check's cached
    //  size is refreshed every 5 ms). Its index is tiny, so that were it
    //  served the search would still be quick; its 1.5 MB of results are
    //  what a server over its limit refuses.
    const int64_t rows = 125000;                    //  4 MB
    float *many = calloc ((size_t) rows * SMALL_D, sizeof (float));
    const int64_t nq = (4 << 20) / (SMALL_D * sizeof (float)), k = 1;
    float *queries = fpx_data_uniform (12, nq, SMALL_D);
    float *big_d = malloc ((size_t) nq * k * sizeof (float));
    int64_t *big_i = malloc ((size_t) nq * k * sizeof (int64_t));
    REQUIRE (many && queries && big_d && big_i, "memory");
    bool add_refused = false, big_refused = false;
    for (int round = 0; round < 20 && !big_refused; round++) {
        rc = 0;
        for (int i = 0; i < 100 && rc == 0; i++)
            rc = fpx_add (client, "keep", rows, SMALL_D, many, NULL);
        if (rc == FPX_ENOMEM && strstr (fpx_client_errmsg (client), "server memory limit reached"))
            add_refused = true;
        fpx_sleep_ms (10);
        rc = fpx_search (client, "tiny", nq, SMALL_D, queries, k, NULL, big_d, big_i);
        big_refused = rc == FPX_ENOMEM
                   && strstr (fpx_client_errmsg (client), "only results under 1 MiB");
    }
    fprintf (stderr, "# adds refused at RSS %ld MB\n", s_rss_mb ());
    CHECK (add_refused, "no add was refused for the server limit");
    CHECK (big_refused, "no search with 1.5 MB of results was refused over the limit");
    float distances [5];
    int64_t labels [5];
    CHECK_OK (client, fpx_search (client, "keep", 1, SMALL_D, x, 5, NULL, distances, labels));
    CHECK_OK (client, fpx_ping (client, NULL));
    free (many);
    free (queries);
    free (big_d);
    free (big_i);
    CHECK_TRUE (fpx_test_server_alive (&s_server));
    free (x);
    fpx_client_destroy (&client);        //  frees the anonymous indexes
    fpx_sleep_ms (500);
}

//  A peer that never reads: its socket takes one message at a time and a
//  small kernel buffer, so the replies stay with the server.
static void
test_unread_replies (void *arg)
{
    (void) arg;
    fpx_client_t *client = fpx_test_client (&s_server, fpx_test_key_a);
    REQUIRE (client, "client");
    //  2100 queries of 67 KB: never batched; 2.5 MB per reply.
    const int d = 8, n = 2000, k = 100, nq = 2100;
    float *x = fpx_data_uniform (6, nq, d);
    REQUIRE_OK (client, fpx_index_create (client, "wide", d, "Flat", 0, NULL));
    REQUIRE_OK (client, fpx_add (client, "wide", n, d, x, NULL));
    void *ctx = zmq_ctx_new ();
    void *sock = zmq_socket (ctx, ZMQ_DEALER);
    int one = 1, small = 65536, zero = 0;
    zmq_setsockopt (sock, ZMQ_RCVHWM, &one, sizeof one);
    zmq_setsockopt (sock, ZMQ_RCVBUF, &small, sizeof small);
    zmq_setsockopt (sock, ZMQ_LINGER, &zero, sizeof zero);
    REQUIRE (zmq_connect (sock, s_server.endpoint) == 0, "connect");
    long before = s_rss_mb ();
    fpx_raw_t raw = { .ctx = ctx, .sock = sock, .next_id = 0 };
    const int count = 150;                              //  378 MB of replies
    for (int i = 0; i < count; i++)
        s_raw_search_send (&raw, fpx_test_key_a, "wide", k, x, nq, d);
    //  Until every request was answered or refused (a loaded machine
    //  takes longer than a quiet one), read from the server's info.
    double until = fpx_now () + 180;
    for (fpx_sleep_ms (1000); fpx_now () < until; fpx_sleep_ms (200)) {
        fpx_info_t *info = NULL;
        int64_t queued = -1, inflight = -1;
        if (fpx_info (client, 0, 0, &info) == 0) {
            fpx_info_int (info, "queue_depth", &queued);
            fpx_info_int (info, "in_flight", &inflight);
        }
        fpx_info_free (&info);
        if (queued == 0 && inflight <= 1)      //  the info request itself
            break;
    }
    fpx_sleep_ms (500);
    long peak = s_rss_mb ();
    CHECK (peak - before < 150, "RSS grew by %ld MB for a peer that does not read", peak - before);
    //  Now read: the first replies are results, later ones EBUSY.
    int ok = 0, busy = 0;
    for (int i = 0; i < count; i++) {
        fpx_raw_reply_t reply;
        if (fpx_raw_recv (&raw, &reply, 10000))
            break;
        if (reply.header.status == 0)
            ok++;
        else if (reply.header.status == FPX_EBUSY && strstr (reply.error, "not read"))
            busy++;
        fpx_raw_reply_free (&reply);
    }
    fprintf (stderr, "# never-reading peer: %ld MB before, %ld MB peak; %d results, %d EBUSY\n",
             before, peak, ok, busy);
    CHECK (ok >= 1 && busy >= 1, "%d results, %d EBUSY", ok, busy);
    zmq_close (sock);
    zmq_ctx_term (ctx);
    CHECK_OK (client, fpx_index_drop (client, "wide"));
    free (x);
    fpx_client_destroy (&client);
}

//  One frame over the per-frame cap (twice --max-message-mb): ZeroMQ drops
//  the connection once the frame's size is known; the server does not
//  keep the frame.
static void
test_frame_cap (void *arg)
{
    (void) arg;
    long before = s_rss_mb ();
    size_t size = (size_t) 200 << 20;              //  200 MB > 2 × 64 MiB
    uint8_t *big = calloc (1, size);
    fpx_raw_t *raw = fpx_raw_new (s_server.endpoint);
    REQUIRE (big && raw, "buffer");
    uint8_t header [FPX_REQUEST_HEADER_SIZE];
    fpx_raw_header (header, FPX_OP_ADD, 1, "no such key");
    const void *frames [] = { header, big };
    size_t sizes [] = { sizeof header, size };
    fpx_raw_send (raw, 2, frames, sizes);
    fpx_raw_reply_t reply;
    int rc = fpx_raw_recv (raw, &reply, 3000);
    if (rc == 0)
        fpx_raw_reply_free (&reply);
    long after = s_rss_mb ();
    CHECK (rc != 0, "a reply came to a frame over the cap");
    CHECK (after - before < 50, "RSS grew by %ld MB", after - before);
    CHECK_EQ (fpx_test_fresh_ping (&s_server), 0);
    fpx_raw_destroy (&raw);
    free (big);
}

/* ---- unfinished messages -------------------------------------------------------- */

//  A peer speaking ZMTP 3.0 itself (NULL mechanism, a DEALER): it can send
//  a message whose last frame never comes, as no ZeroMQ library would.
static int
s_zmtp_connect (int port)
{
    int fd = socket (AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons ((uint16_t) port) };
    addr.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
    uint8_t greeting [64] = { 0xff, 0, 0, 0, 0, 0, 0, 0, 1, 0x7f, 3, 0, 'N', 'U', 'L', 'L' };
    uint8_t ready [] = { 0x04, 28, 5, 'R', 'E', 'A', 'D', 'Y', 11, 'S', 'o', 'c', 'k', 'e', 't',
                         '-', 'T', 'y', 'p', 'e', 0, 0, 0, 6, 'D', 'E', 'A', 'L', 'E', 'R' };
    //  Frames may only follow the server's READY (sent once its ZAP
    //  handler agreed): libzmq drops a peer whose message comes before.
    struct timeval timeout = { .tv_sec = 10 };
    uint8_t reply [64 + 2 + 255];
    if (fd < 0 || connect (fd, (struct sockaddr *) &addr, sizeof addr)
    ||  setsockopt (fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout)
    ||  send (fd, greeting, sizeof greeting, MSG_NOSIGNAL) != sizeof greeting
    ||  send (fd, ready, sizeof ready, MSG_NOSIGNAL) != sizeof ready
    ||  recv (fd, reply, 66, MSG_WAITALL) != 66 || reply [64] != 0x04
    ||  recv (fd, reply + 66, reply [65], MSG_WAITALL) != reply [65]) {
        if (fd >= 0)
            close (fd);
        return -1;
    }
    return fd;
}

//  One frame (MORE when more follows): a short one (1-byte size) up to
//  255 bytes, as ZMTP requires. 0, or -1 once the server cut us.
static int
s_zmtp_frame (int fd, const void *data, size_t size, bool more)
{
    uint8_t head [9] = { (uint8_t) ((more ? 1 : 0) | (size > 255 ? 2 : 0)) };
    size_t head_size = size > 255 ? 9 : 2;
    for (size_t i = 1; i < head_size; i++)
        head [i] = (uint8_t) ((uint64_t) size >> (8 * (head_size - 1 - i)));
    if (send (fd, head, head_size, MSG_NOSIGNAL) != (ssize_t) head_size)
        return -1;
    for (size_t done = 0; done < size; ) {
        ssize_t n = send (fd, (const uint8_t *) data + done, size - done, MSG_NOSIGNAL);
        if (n <= 0)
            return -1;
        done += (size_t) n;
    }
    return 0;
}

//  A request's header frame with key, then `mib` MiB of frames of a
//  message that does not end. Returns the MiB sent before a refusal.
static int
s_zmtp_unfinished (int fd, const char *key, int mib)
{
    static uint8_t chunk [1 << 20];
    uint8_t header [FPX_REQUEST_HEADER_SIZE];
    fpx_raw_header (header, FPX_OP_ADD, 1, key);
    if (s_zmtp_frame (fd, header, sizeof header, true))
        return 0;
    int sent = 0;
    while (sent < mib && s_zmtp_frame (fd, chunk, sizeof chunk, true) == 0)
        sent++;
    return sent;
}

//  Whether the server still holds the connection: reads what it sent
//  (its greeting, replies) until there is nothing more.
static bool
s_zmtp_alive (int fd)
{
    uint8_t buffer [4096];
    while (true) {
        ssize_t n = recv (fd, buffer, sizeof buffer, MSG_DONTWAIT);
        if (n > 0)
            continue;
        return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
    }
}

//  A message that never ends (memory server: --max-message-mb 64, so a
//  connection may hold 2 x 64 + 16 MiB): cut near that, the RSS does not
//  follow it, the server serves on.
static void
test_endless_multipart (void *arg)
{
    (void) arg;
    long before = s_rss_mb ();
    int fd = s_zmtp_connect (s_server.port);
    REQUIRE (fd >= 0, "connect");
    int sent = s_zmtp_unfinished (fd, "no such key", 600);
    fpx_sleep_ms (300);
    long after = s_rss_mb ();
    CHECK (sent < 600, "600 MiB of one message were taken");
    CHECK (sent >= 128, "cut after %d MiB, under the largest legal message", sent);
    CHECK (after - before < 144 + 100, "RSS grew by %ld MB", after - before);
    CHECK (!s_zmtp_alive (fd), "still connected");
    close (fd);
    CHECK_EQ (fpx_test_fresh_ping (&s_server), 0);
}

//  --max-unauthenticated-mb 32: connections that have not sent a valid
//  key share 32 MiB for their unfinished messages (the largest is cut
//  past it); one that has may hold a whole message (48 MiB here).
static void
test_unauthenticated_budget (void *arg)
{
    (void) arg;
    int first = s_zmtp_connect (s_server.port);
    int known = s_zmtp_connect (s_server.port);
    int second = s_zmtp_connect (s_server.port);
    REQUIRE (first >= 0 && known >= 0 && second >= 0, "connect");
    uint8_t header [FPX_REQUEST_HEADER_SIZE], params = 0x80;      //  an empty map
    fpx_raw_header (header, FPX_OP_PING, 1, fpx_test_key_a);
    CHECK (s_zmtp_frame (known, header, sizeof header, true) == 0
        && s_zmtp_frame (known, &params, 1, false) == 0, "ping sent");
    fpx_sleep_ms (300);
    CHECK_EQ (s_zmtp_unfinished (first, "no such key", 12), 12);
    CHECK_EQ (s_zmtp_unfinished (known, fpx_test_key_a, 48), 48);
    fpx_sleep_ms (500);
    CHECK (s_zmtp_alive (first), "12 MiB unauthenticated, alone: cut");
    CHECK (s_zmtp_alive (known), "48 MiB after a valid key: cut");
    //  The sum passes 32 MiB only once the second holds more than 20 MiB:
    //  it is then the larger, whenever the check comes.
    s_zmtp_unfinished (second, "no such key", 24);
    fpx_sleep_ms (500);
    CHECK (!s_zmtp_alive (second), "12 + 24 MiB unauthenticated: the largest is not cut");
    CHECK (s_zmtp_alive (first), "the smaller one was cut");
    CHECK (s_zmtp_alive (known), "the authenticated one was cut");
    close (first);
    close (known);
    close (second);
    CHECK_EQ (fpx_test_fresh_ping (&s_server), 0);
}

/* ---- main ---------------------------------------------------------------------------- */

//  FPX_LIMITS_ONLY=WORD runs only the servers whose group name has WORD.
static bool
s_selected (const char *group)
{
    const char *only = getenv ("FPX_LIMITS_ONLY");
    return !only || strstr (group, only);
}

static void
s_with_server (const char *const *args, const char *name, fpx_test_fn_t *fn)
{
    if (!s_selected (name))
        return;
    if (fpx_test_server_start (&s_server, args, NULL) == 0) {
        fpx_test_run (name, fn, NULL);
        fpx_test_server_stop (&s_server, 30);
    }
    else
        fpx_test_fail_whole (name, "faissproxyd did not start");
}

int
main (void)
{
    fpx_test_watch (&s_server);
    char limits_file [] = "/tmp/fpx-limits-XXXXXX";
    int fd = mkstemp (limits_file);
    const char *text = "# test limits\nalice max_indexes=5 max_vectors=1000\n"
                       "bob max_memory_mb=300  # PQ\n";
    if (fd < 0 || write (fd, text, strlen (text)) != (ssize_t) strlen (text)) {
        fpx_test_fail_whole ("limits.setup", "cannot write the limits file");
        return fpx_test_finish ();
    }
    close (fd);
    const char *quota_args [] = { "--tenant-limits", limits_file, NULL };
    if (!s_selected ("quotas"))
        ;
    else if (fpx_test_server_start (&s_server, quota_args, NULL) == 0) {
        fpx_test_run ("limits.max_indexes", test_max_indexes, NULL);
        fpx_test_run ("limits.construct_reaped", test_construct_reaped, NULL);
        fpx_test_run ("limits.max_vectors", test_max_vectors, NULL);
        fpx_test_run ("limits.max_memory_mb", test_max_memory, NULL);
        fpx_test_server_stop (&s_server, 30);
    }
    else
        fpx_test_fail_whole ("limits.quota_server", "faissproxyd did not start");
    unlink (limits_file);
    if (s_selected ("quotas"))
        fpx_test_run ("limits.max_disk_mb", test_max_disk, NULL);

    const char *fair_args [] = { "--workers", "4", "--max-queue", "100",
                                 "--default-tenant-limits", "max_inflight=16,deadline_ms=4000",
                                 NULL };
    s_with_server (fair_args, "limits.fairness", test_fairness);
    char bob_file [] = "/tmp/fpx-limits-XXXXXX";
    fd = mkstemp (bob_file);
    if (fd >= 0) {
        if (write (fd, "bob deadline_ms=0\n", 18) != 18)
            fpx_test_fail_whole ("limits.setup", "cannot write the limits file");
        close (fd);
    }
    const char *deadline_args [] = { "--workers", "1", "--max-conn-inflight", "8",
                                     "--default-tenant-limits", "deadline_ms=1000",
                                     "--tenant-limits", bob_file, NULL };
    s_with_server (deadline_args, "limits.deadline_and_conn_inflight",
                   test_deadline_and_conn_inflight);
    unlink (bob_file);
    const char *memory_args [] = { "--max-memory-mb", "500", "--max-message-mb", "64",
                                   "--max-conn-unread-mb", "16", NULL };
    if (!s_selected ("memory"))
        ;
    else if (fpx_test_server_start (&s_server, memory_args, NULL) == 0) {
        fpx_test_run ("limits.max_memory_server", test_max_memory_server, NULL);
        fpx_test_run ("limits.unread_replies", test_unread_replies, NULL);
        fpx_test_run ("limits.frame_cap", test_frame_cap, NULL);
        fpx_test_run ("limits.endless_multipart", test_endless_multipart, NULL);
        fpx_test_server_stop (&s_server, 30);
    }
    else
        fpx_test_fail_whole ("limits.memory_server", "faissproxyd did not start");
    const char *intake_args [] = { "--max-message-mb", "64", "--max-unauthenticated-mb", "32",
                                   NULL };
    s_with_server (intake_args, "limits.unauthenticated_budget", test_unauthenticated_budget);
    return fpx_test_finish ();
}
