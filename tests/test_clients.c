/*  test_clients.c — clients that fail fast, wait out long work and ride
    through a server restart (docs/CLIENTS.md).

    - No server: a call on a closed port fails with "connection refused"
      well before its 30 s request timeout (C library and CLI); a host name
      that does not resolve says so; a peer that accepts TCP but never
      speaks ZMTP fails after the connect timeout, not the request timeout.
    - Endpoints: "host:port", "localhost:port" and "tcp://host:port" (also
      through FAISS_PROXY_SERVER) reach the server; bad syntax is
      FPX_EINVAL from fpx_client_open with the reason.
    - Long work: a k-means longer than a short request timeout succeeds
      (centroids equal FAISS in-process); a search stuck behind it times
      out with a message saying it may still run on the server.
    - Restart: the server is killed (-9) while a search, an add and a
      k-means are queued behind a busy worker, and restarted on the same
      port and data directory. The search is sent again and answers as
      FAISS in-process; the add and the k-means fail with "outcome is
      unknown", and the add was not applied twice. An anonymous index of
      the old connection is reported as gone with its connection, and an
      unknown "@…" name gets the server's explanation.
    - A long call on a server that stops answering (SIGSTOP) ends with an
      unknown outcome once the heartbeats time out.

    The time bounds here are functional (did it wait for the 30 s timeout
    or not), with wide margins; no speed is asserted.
*/
#include <arpa/inet.h>
#include <libgen.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <faiss/c_api/Clustering_c.h>

#include "fpx_test.h"

#define DIM     16
#define N       2000
#define M       100
#define NQ      20
#define K       5

//  The k-means that keeps the one worker busy: seconds of work.
#define KM_D    32
#define KM_K    256
#define KM_N    60000

//  Fail-fast bound: far below the 30 s request timeout.
#define FAST_S  5.0

#define MESSAGE_MAX 1024

/* ---- helpers ------------------------------------------------------------- */

//  A TCP port of 127.0.0.1 nobody listens on now, or -1.
static int
s_free_port (void)
{
    int fd = socket (AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in address = { .sin_family = AF_INET,
                                   .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
    socklen_t length = sizeof address;
    int port = -1;
    if (fd >= 0 && bind (fd, (struct sockaddr *) &address, sizeof address) == 0
    &&  getsockname (fd, (struct sockaddr *) &address, &length) == 0)
        port = ntohs (address.sin_port);
    if (fd >= 0)
        close (fd);
    return port;
}

static bool
s_has (fpx_client_t *client, const char *text)
{
    return strstr (fpx_client_errmsg (client), text) != NULL;
}

//  A client of endpoint with tenant A's key and a 30 s request timeout.
static fpx_client_t *
s_client (const char *endpoint)
{
    fpx_client_t *client = fpx_client_new (endpoint, fpx_test_key_a);
    if (client)
        fpx_client_set_timeout (client, 30000);
    return client;
}

/* ---- no server ----------------------------------------------------------- */

static void
test_fail_fast_closed_port (void *arg)
{
    (void) arg;
    int port = s_free_port ();
    REQUIRE (port > 0, "no free port");
    char endpoint [64];
    snprintf (endpoint, sizeof endpoint, "tcp://127.0.0.1:%d", port);
    fpx_client_t *client = s_client (endpoint);
    REQUIRE (client, "fpx_client_new (%s) failed", endpoint);
    //  A long connect timeout too: a refusal must not wait for it either.
    fpx_client_set_connect_timeout (client, 30000);
    float x [DIM] = { 0 }, D [K];
    int64_t I [K];
    const char *what [3] = { "ping", "search", "create" };
    int rc [3];
    double took [3];
    for (int i = 0; i < 3; i++) {
        double start = fpx_now ();
        rc [i] = i == 0 ? fpx_ping (client, NULL)
               : i == 1 ? fpx_search (client, "x", 1, DIM, x, K, NULL, D, I)
               : fpx_index_create (client, "x", DIM, "Flat", FPX_METRIC_L2, NULL);
        took [i] = fpx_now () - start;
    }
    for (int i = 0; i < 3; i++) {
        CHECK (rc [i] == FPX_ECONNECT, "%s returned %s", what [i], fpx_error_name (rc [i]));
        CHECK (took [i] < FAST_S, "%s took %.1f s to fail", what [i], took [i]);
    }
    CHECK (s_has (client, "connection refused") && s_has (client, endpoint),
           "message: %s", fpx_client_errmsg (client));
    fpx_client_destroy (&client);
}

static void
test_cli_fail_fast (void *arg)
{
    (void) arg;
    const char *daemon = getenv ("FPX_DAEMON");
    REQUIRE (daemon, "FPX_DAEMON is not set");
    char path [512];
    snprintf (path, sizeof path, "%s", daemon);
    char cli [600];
    snprintf (cli, sizeof cli, "%s/faissproxy", dirname (path));
    REQUIRE (access (cli, X_OK) == 0, "no CLI at %s", cli);
    int port = s_free_port ();
    REQUIRE (port > 0, "no free port");
    char command [800];
    snprintf (command, sizeof command, "FAISS_PROXY_CONNECT_TIMEOUT_MS= FAISS_PROXY_TIMEOUT_MS= "
              "%s --server 127.0.0.1:%d ping 2>&1", cli, port);
    double start = fpx_now ();
    FILE *pipe = popen (command, "r");
    REQUIRE (pipe, "popen failed");
    char output [1024] = "";
    size_t got = fread (output, 1, sizeof output - 1, pipe);
    output [got] = 0;
    int status = pclose (pipe);
    double took = fpx_now () - start;
    CHECK (WIFEXITED (status) && WEXITSTATUS (status) == 1, "exit status %d", status);
    CHECK (strstr (output, "connection refused") != NULL, "output: %s", output);
    CHECK (took < FAST_S, "the CLI took %.1f s to fail", took);
}

static void
test_unresolvable_host (void *arg)
{
    (void) arg;
    //  .invalid never resolves (RFC 6761).
    fpx_client_t *client = s_client ("no-such-host.invalid:5555");
    REQUIRE (client, "fpx_client_new failed");
    CHECK_RC (client, fpx_ping (client, NULL), FPX_ECONNECT);
    CHECK (s_has (client, "cannot resolve host 'no-such-host.invalid'"), "message: %s",
           fpx_client_errmsg (client));
    fpx_client_destroy (&client);
}

//  A peer that accepts TCP and never speaks: the connect timeout, not
//  the request timeout, bounds the wait.
static void
test_connect_timeout (void *arg)
{
    (void) arg;
    int fd = socket (AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in address = { .sin_family = AF_INET,
                                   .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
    socklen_t length = sizeof address;
    REQUIRE (fd >= 0 && bind (fd, (struct sockaddr *) &address, sizeof address) == 0
             && listen (fd, 8) == 0
             && getsockname (fd, (struct sockaddr *) &address, &length) == 0,
             "cannot listen");
    char endpoint [64];
    snprintf (endpoint, sizeof endpoint, "127.0.0.1:%d", ntohs (address.sin_port));
    fpx_client_options_t options = {
        .endpoint = endpoint, .api_key = fpx_test_key_a, .server_key = "",
        .connect_timeout_ms = 500, .timeout_ms = 30000
    };
    fpx_client_t *client = NULL;
    char errmsg [256];
    REQUIRE (fpx_client_open (&options, &client, errmsg, sizeof errmsg) == 0, "open: %s", errmsg);
    double start = fpx_now ();
    CHECK_RC (client, fpx_ping (client, NULL), FPX_ETIMEDOUT);
    double took = fpx_now () - start;
    CHECK (took >= 0.4 && took < FAST_S, "the silent peer took %.1f s to fail", took);
    CHECK (s_has (client, "cannot connect to tcp://127.0.0.1:"), "message: %s",
           fpx_client_errmsg (client));
    fpx_client_destroy (&client);
    close (fd);
}

/* ---- endpoints ----------------------------------------------------------- */

static fpx_test_server_t s_server;

static void
test_endpoint_forms (void *arg)
{
    (void) arg;
    char forms [3][64];
    snprintf (forms [0], sizeof forms [0], "127.0.0.1:%d", s_server.port);
    snprintf (forms [1], sizeof forms [1], "localhost:%d", s_server.port);
    snprintf (forms [2], sizeof forms [2], "tcp://127.0.0.1:%d", s_server.port);
    for (int i = 0; i < 3; i++) {
        fpx_client_t *client = s_client (forms [i]);
        if (!CHECK (client, "fpx_client_new (\"%s\") returned NULL", forms [i]))
            continue;
        CHECK_OK (client, fpx_ping (client, NULL));
        fpx_client_destroy (&client);
    }
    //  The environment variable takes the same forms.
    setenv ("FAISS_PROXY_SERVER", forms [1], 1);
    fpx_client_t *client = s_client (NULL);
    unsetenv ("FAISS_PROXY_SERVER");
    if (CHECK (client, "FAISS_PROXY_SERVER=%s: fpx_client_new returned NULL", forms [1]))
        CHECK_OK (client, fpx_ping (client, NULL));
    fpx_client_destroy (&client);

    //  Bad syntax: refused at once, with its reason.
    struct { const char *endpoint, *why; } bad [] = {
        { "localhost", "no port" }, { "localhost:0", "port" }, { "localhost:http", "port" },
        { "tcp://:5555", "no host" }, { "udp://localhost:5555", "unknown transport" },
        { "ipc://", "no path" }, { "tcp://local host:5555", "host" }
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad [0]; i++) {
        fpx_client_options_t options = { .endpoint = bad [i].endpoint, .server_key = "" };
        char errmsg [256] = "";
        int rc = fpx_client_open (&options, &client, errmsg, sizeof errmsg);
        CHECK (rc == FPX_EINVAL && !client && strstr (errmsg, bad [i].why)
               && strstr (errmsg, "invalid endpoint"),
               "%s: %s \"%s\"", bad [i].endpoint, fpx_error_name (rc), errmsg);
        CHECK (fpx_client_new (bad [i].endpoint, NULL) == NULL, "%s accepted", bad [i].endpoint);
        fpx_client_destroy (&client);
    }
}

/* ---- long work ----------------------------------------------------------- */

static float *s_km_x;

typedef struct {
    fpx_client_t *client;
    int rc;
    char message [MESSAGE_MAX];
    double took;
    int niter;
    volatile bool done;
} s_job_t;

//  A k-means of many iterations: the worker stays busy until the server
//  is killed or the test's waiting call is done; niter 0 is FAISS's 25.
static void *
s_kmeans_job (void *arg)
{
    s_job_t *job = arg;
    float *centroids = malloc ((size_t) KM_K * KM_D * sizeof (float));
    fpx_kmeans_params_t params = { .niter = job->niter };
    double start = fpx_now ();
    job->rc = fpx_kmeans (job->client, KM_D, KM_K, KM_N, s_km_x, &params, centroids,
                          NULL, 0, NULL);
    job->took = fpx_now () - start;
    snprintf (job->message, sizeof job->message, "%s", fpx_client_errmsg (job->client));
    free (centroids);
    job->done = true;
    return NULL;
}

static void
test_long_kmeans (void *arg)
{
    (void) arg;
    fpx_client_t *client = s_client (s_server.endpoint);
    REQUIRE (client, "fpx_client_new failed");
    fpx_client_set_timeout (client, 100);
    float *centroids = malloc ((size_t) KM_K * KM_D * sizeof (float));
    float *local = malloc ((size_t) KM_K * KM_D * sizeof (float));
    double start = fpx_now ();
    int rc = fpx_kmeans (client, KM_D, KM_K, KM_N, s_km_x, NULL, centroids, NULL, 0, NULL);
    double took = fpx_now () - start;
    CHECK_OK (client, rc);
    //  The point of the test: it outlived the request timeout.
    CHECK (took > 0.1, "the k-means took only %.3f s: make it larger", took);
    float error = 0;
    CHECK_EQ (faiss_kmeans_clustering (KM_D, KM_N, KM_K, s_km_x, local, &error), 0);
    int differ = 0;
    for (int i = 0; rc == 0 && i < KM_K * KM_D; i++)
        differ += !fpx_float_close (centroids [i], local [i]);
    CHECK (differ == 0, "%d centroid coordinates differ from FAISS in-process", differ);
    free (centroids);
    free (local);
    fpx_client_destroy (&client);
}

//  A search queued behind a busy worker times out, and says it may
//  still run on the server.
static void
test_timeout_message (void *arg)
{
    (void) arg;
    s_job_t job = { .client = s_client (s_server.endpoint) };
    fpx_client_t *client = s_client (s_server.endpoint);
    REQUIRE (job.client && client, "fpx_client_new failed");
    REQUIRE_OK (client, fpx_index_create (client, "waiting", DIM, "Flat", FPX_METRIC_L2, NULL));
    float x [DIM] = { 0 }, D [K];
    int64_t I [K];
    pthread_t thread;
    REQUIRE (pthread_create (&thread, NULL, s_kmeans_job, &job) == 0, "pthread_create");
    fpx_sleep_ms (300);
    fpx_client_set_timeout (client, 200);
    int rc = fpx_search (client, "waiting", 1, DIM, x, K, NULL, D, I);
    bool busy = !job.done;
    pthread_join (thread, NULL);
    CHECK (busy, "the k-means ended before the search: make it larger");
    CHECK_RC (client, rc, FPX_ETIMEDOUT);
    CHECK (s_has (client, "may still be running on the server"), "message: %s",
           fpx_client_errmsg (client));
    CHECK (job.rc == 0, "k-means: %s", job.message);
    fpx_client_set_timeout (client, 30000);
    CHECK_OK (client, fpx_index_drop (client, "waiting"));
    fpx_client_destroy (&client);
    fpx_client_destroy (&job.client);
}

//  A long call has no timeout, but a server that stops answering (here:
//  SIGSTOP, as a host that vanished) is found by the ZMTP heartbeats, and
//  the call ends with an unknown outcome instead of waiting forever.
static void
test_long_call_dead_server (void *arg)
{
    (void) arg;
    fpx_test_server_t server;
    const char *workers [] = { "--workers", "1", NULL };
    REQUIRE (fpx_test_server_start (&server, workers, NULL) == 0, "faissproxyd did not start");
    s_job_t job = { .client = s_client (server.endpoint), .niter = 2000 };
    REQUIRE (job.client, "fpx_client_new failed");
    pthread_t thread;
    REQUIRE (pthread_create (&thread, NULL, s_kmeans_job, &job) == 0, "pthread_create");
    fpx_sleep_ms (500);
    kill (server.pid, SIGSTOP);
    pthread_join (thread, NULL);
    kill (server.pid, SIGKILL);
    int status;
    waitpid (server.pid, &status, 0);
    server.pid = 0;
    fpx_test_server_stop (&server, 5);
    CHECK (job.rc == FPX_ECONNECT && strstr (job.message, "outcome is unknown"),
           "k-means on a stopped server: %s %s", fpx_error_name (job.rc), job.message);
    //  Heartbeats every 5 s, 15 s without an answer: not the 30 s timeout,
    //  which a long call does not have anyway.
    CHECK (job.took < 60, "the stopped server was noticed after %.1f s", job.took);
    fpx_client_destroy (&job.client);
}

/* ---- restart ------------------------------------------------------------- */

static int s_fixed_port;
static char s_data_dir [256];
static char s_fixed_endpoint [64];
static float *s_xb, *s_xq;

typedef struct {
    fpx_client_t *client;
    int rc;
    char message [MESSAGE_MAX];
    fpx_knn_t knn;
    volatile bool done;
} s_call_t;

static void *
s_search_job (void *arg)
{
    s_call_t *call = arg;
    call->rc = fpx_remote_knn (call->client, "kept", NQ, DIM, s_xq, K, NULL, &call->knn);
    snprintf (call->message, sizeof call->message, "%s", fpx_client_errmsg (call->client));
    call->done = true;
    return NULL;
}

static void *
s_add_job (void *arg)
{
    s_call_t *call = arg;
    call->rc = fpx_add (call->client, "kept", M, DIM, s_xq, NULL);
    snprintf (call->message, sizeof call->message, "%s", fpx_client_errmsg (call->client));
    call->done = true;
    return NULL;
}

//  The first start takes the port the system picks; the restart binds
//  that same port again, where the clients reconnect.
static int
s_start_fixed (fpx_test_server_t *server)
{
    char bind [80];
    snprintf (bind, sizeof bind, "tcp://127.0.0.1:%d", s_fixed_port);
    const char *args [] = { "--data-dir", s_data_dir, "--fsync", "always", "--workers", "1",
                            "--bind", bind, NULL };
    if (s_fixed_port == 0)
        args [6] = NULL;
    int rc = fpx_test_server_start (server, args, NULL);
    if (rc == 0 && s_fixed_port == 0) {
        s_fixed_port = server->port;
        snprintf (s_fixed_endpoint, sizeof s_fixed_endpoint, "127.0.0.1:%d", s_fixed_port);
    }
    return rc;
}

static void
test_restart (void *arg)
{
    (void) arg;
    fpx_test_server_t server;
    REQUIRE (s_start_fixed (&server) == 0, "faissproxyd did not start on port %d", s_fixed_port);
    s_call_t search = { .client = s_client (s_fixed_endpoint) };
    s_call_t add = { .client = s_client (s_fixed_endpoint) };
    s_job_t kmeans = { .client = s_client (s_fixed_endpoint), .niter = 2000 };
    fpx_client_t *a = search.client;
    REQUIRE (a && add.client && kmeans.client, "fpx_client_new failed");

    FaissIndex *local = NULL;
    REQUIRE (faiss_index_factory (&local, DIM, "Flat", METRIC_L2) == 0, "local index");
    CHECK_EQ (faiss_Index_add (local, N, s_xb), 0);
    fpx_knn_t ref;
    CHECK_EQ (fpx_local_knn (local, NQ, s_xq, K, 3, &ref), 0);
    REQUIRE_OK (a, fpx_index_create (a, "kept", DIM, "Flat", FPX_METRIC_L2, NULL));
    REQUIRE_OK (a, fpx_add (a, "kept", N, DIM, s_xb, NULL));
    fpx_index_info_t anonymous;
    REQUIRE_OK (a, fpx_index_create (a, NULL, DIM, "Flat", FPX_METRIC_L2, &anonymous));

    //  The worker busy with a k-means; a search and an add queued behind it.
    pthread_t threads [3];
    REQUIRE (pthread_create (&threads [0], NULL, s_kmeans_job, &kmeans) == 0, "pthread_create");
    fpx_sleep_ms (300);
    REQUIRE (pthread_create (&threads [1], NULL, s_search_job, &search) == 0, "pthread_create");
    REQUIRE (pthread_create (&threads [2], NULL, s_add_job, &add) == 0, "pthread_create");
    fpx_sleep_ms (300);
    bool queued = !kmeans.done && !search.done && !add.done;
    kill (server.pid, SIGKILL);
    int status;
    waitpid (server.pid, &status, 0);
    server.pid = 0;
    fpx_test_server_stop (&server, 5);
    fpx_sleep_ms (200);
    bool restarted = s_start_fixed (&server) == 0;
    for (int i = 0; i < 3; i++)
        pthread_join (threads [i], NULL);
    CHECK (queued, "the calls ended before the kill: make the k-means larger");
    REQUIRE (restarted, "faissproxyd did not restart on port %d", s_fixed_port);

    //  The read was sent again and answers as FAISS does.
    if (CHECK (search.rc == 0, "search across the restart: %s %s",
               fpx_error_name (search.rc), search.message))
        CHECK_KNN (&ref, &search.knn);
    //  The writes: outcome unknown, never sent again.
    CHECK (add.rc == FPX_ECONNECT && strstr (add.message, "outcome is unknown"),
           "add across the restart: %s %s", fpx_error_name (add.rc), add.message);
    CHECK (kmeans.rc == FPX_ECONNECT && strstr (kmeans.message, "outcome is unknown"),
           "k-means across the restart: %s %s", fpx_error_name (kmeans.rc), kmeans.message);
    fpx_index_info_t info;
    if (CHECK_OK (a, fpx_index_describe (a, "kept", 0, &info)))
        CHECK (info.ntotal == N || info.ntotal == N + M, "ntotal %lld after one add of %d "
               "to %d", (long long) info.ntotal, M, N);

    //  The anonymous index went with the old connection: the client says so.
    float D [K];
    int64_t I [K];
    CHECK_RC (a, fpx_search (a, anonymous.name, 1, DIM, s_xq, K, NULL, D, I), FPX_ENOTFOUND);
    CHECK (s_has (a, "anonymous indexes live only as long as the connection"), "message: %s",
           fpx_client_errmsg (a));
    //  A client that never reconnected gets the server's explanation.
    fpx_client_t *fresh = s_client (s_fixed_endpoint);
    REQUIRE (fresh, "fpx_client_new failed");
    CHECK_RC (fresh, fpx_search (fresh, anonymous.name, 1, DIM, s_xq, K, NULL, D, I),
              FPX_ENOTFOUND);
    CHECK (strstr (fpx_client_errmsg (fresh), "anonymous indexes live only as long as the "
                                              "connection") != NULL,
           "message: %s", fpx_client_errmsg (fresh));
    CHECK_RC (fresh, fpx_index_drop (fresh, "kept"), 0);
    fpx_client_destroy (&fresh);

    fpx_knn_free (&ref);
    fpx_knn_free (&search.knn);
    faiss_Index_free (local);
    fpx_client_destroy (&search.client);
    fpx_client_destroy (&add.client);
    fpx_client_destroy (&kmeans.client);
    CHECK_EQ (fpx_test_server_stop (&server, 30), 0);
}

static void
test_server_exit (void *arg)
{
    (void) arg;
    CHECK_EQ (fpx_test_server_stop (&s_server, 30), 0);
}

int
main (void)
{
    fpx_test_local_single_thread ();
    s_km_x = fpx_data_clustered (7, KM_N, KM_D, 300, 0.2f);
    s_xb = fpx_data_uniform (1, N, DIM);
    s_xq = fpx_data_uniform (2, NQ > M ? NQ : M, DIM);
    fpx_test_run ("clients.fail_fast_closed_port", test_fail_fast_closed_port, NULL);
    fpx_test_run ("clients.cli_fail_fast", test_cli_fail_fast, NULL);
    fpx_test_run ("clients.unresolvable_host", test_unresolvable_host, NULL);
    fpx_test_run ("clients.connect_timeout", test_connect_timeout, NULL);

    const char *workers [] = { "--workers", "1", NULL };
    fpx_test_watch (&s_server);
    if (fpx_test_server_start (&s_server, workers, NULL) == 0) {
        fpx_test_run ("clients.endpoint_forms", test_endpoint_forms, NULL);
        fpx_test_run ("clients.long_kmeans", test_long_kmeans, NULL);
        fpx_test_run ("clients.timeout_message", test_timeout_message, NULL);
        fpx_test_run ("clients.server_exit", test_server_exit, NULL);
    }
    else
        fpx_test_fail_whole ("clients.server_start", "faissproxyd did not start");
    fpx_test_watch (NULL);

    snprintf (s_data_dir, sizeof s_data_dir, "/tmp/fpx-clients-%d-XXXXXX", (int) getpid ());
    if (mkdtemp (s_data_dir)) {
        fpx_test_run ("clients.restart", test_restart, NULL);
        char command [400];
        snprintf (command, sizeof command, "rm -rf '%s'", s_data_dir);
        if (system (command) != 0)
            fprintf (stderr, "# could not remove %s\n", s_data_dir);
    }
    else
        fpx_test_fail_whole ("clients.restart", "no temporary directory");
    fpx_test_run ("clients.long_call_dead_server", test_long_call_dead_server, NULL);
    free (s_km_x);
    free (s_xb);
    free (s_xq);
    return fpx_test_finish ();
}
