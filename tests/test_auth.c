/*  test_auth.c — authentication, roles, transport and files on disk.

    Every test drives a real faissproxyd:
    - files: data files are 0600 and directories 0700 after create, add
      and save, whatever the umask of the caller;
    - name race: threads create, drop and save one name at once; no call
      fails with FPX_EIO, and after a restart the index exists exactly when
      it did before (a drop is never undone);
    - hashed keys file: keygen's line authenticates, the key appears
      nowhere on the command line, plaintext legacy lines still work;
    - roles: a read key searches but cannot create, add, drop or save;
    - failed authentications are logged with the peer's address and slowed
      down per peer, while another peer is answered at once;
    - CURVE: the right server key works end to end (results equal FAISS
      in-process), a wrong server key and a plain (NULL) client get no reply
      (libfaissproxy sees the handshake fail: FPX_EAUTH at once);
    - idle connections: hundreds of idle TCP connects neither spin the
      broker nor keep a client from being answered.
*/
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fpx_test.h"

#define DIM 8

// ---- files on disk ---------------------------------------------------------------

//  Checks the mode of every file (0600) and directory (0700) under path.
static int
s_check_modes (const char *path, int *files)
{
    DIR *dir = opendir (path);
    if (!dir)
        return 0;
    int bad = 0;
    struct dirent *item;
    while ((item = readdir (dir))) {
        if (!strcmp (item->d_name, ".") || !strcmp (item->d_name, ".."))
            continue;
        char child [1024];
        snprintf (child, sizeof child, "%s/%s", path, item->d_name);
        struct stat st;
        if (lstat (child, &st))
            continue;
        if (S_ISDIR (st.st_mode)) {
            if (!CHECK ((st.st_mode & 0777) == 0700, "%s is a directory of mode %o", child,
                        st.st_mode & 0777))
                bad++;
            bad += s_check_modes (child, files);
        }
        else {
            (*files)++;
            if (!CHECK ((st.st_mode & 0777) == 0600, "%s is a file of mode %o", child,
                        st.st_mode & 0777))
                bad++;
        }
    }
    closedir (dir);
    return bad;
}

static void
s_test_file_modes (void *arg)
{
    (void) arg;
    char dir [256];
    fpx_test_temp_dir (dir, sizeof dir, "auth-modes");
    REQUIRE (dir [0], "mkdtemp failed");
    char data [300];
    snprintf (data, sizeof data, "%s/data", dir);       //  created by the server
    mode_t old = umask (022);                           //  the server sets its own
    const char *args [] = { "--data-dir", data, NULL };
    fpx_test_server_t server;
    int started = fpx_test_server_start (&server, args, NULL);
    umask (old);
    REQUIRE (started == 0, "start failed");
    fpx_client_t *client = fpx_test_client (&server, fpx_test_key_a);
    float *x = fpx_data_uniform (1, 100, DIM);
    CHECK_OK (client, fpx_index_create (client, "modes", DIM, "Flat", FPX_METRIC_L2, NULL));
    CHECK_OK (client, fpx_add (client, "modes", 100, DIM, x, NULL));
    CHECK_OK (client, fpx_index_save (client, "modes"));
    CHECK_OK (client, fpx_add (client, "modes", 10, DIM, x, NULL));
    int files = 0;
    struct stat st;
    CHECK (stat (data, &st) == 0 && (st.st_mode & 0777) == 0700, "data directory mode %o",
           st.st_mode & 0777);
    CHECK_EQ (s_check_modes (data, &files), 0);
    CHECK (files >= 3, "only %d files under %s", files, data);
    fpx_client_destroy (&client);
    CHECK_EQ (fpx_test_server_stop (&server, 30), 0);
    free (x);
    fpx_test_remove_dir (dir);
}

//  Threads doing create / drop / save of one name at once.
typedef struct {
    const fpx_test_server_t *server;
    int seed;
    int eio;                        //  calls that failed with FPX_EIO
    int other;                      //  calls that failed otherwise unexpectedly
    int done;
} s_racer_t;

static void *
s_racer (void *arg)
{
    s_racer_t *self = arg;
    fpx_client_t *client = fpx_test_client (self->server, fpx_test_key_a);
    fpx_rng_t rng;
    fpx_rng_seed (&rng, (uint64_t) self->seed);
    for (int i = 0; client && i < 60; i++) {
        int op = (int) (fpx_rng_next (&rng) % 3), rc;
        if (op == 0) {
            rc = fpx_index_create (client, "race", DIM, "Flat", FPX_METRIC_L2, NULL);
            if (rc == FPX_EEXIST)
                rc = 0;
        }
        else if (op == 1) {
            rc = fpx_index_drop (client, "race");
            if (rc == FPX_ENOTFOUND)
                rc = 0;
        }
        else {
            rc = fpx_index_save (client, "race");
            if (rc == FPX_ENOTFOUND)
                rc = 0;
        }
        if (rc == FPX_EIO) {
            self->eio++;
            fprintf (stderr, "# op %d: %s\n", op, fpx_client_errmsg (client));
        }
        else if (rc)
            self->other++;
        self->done++;
    }
    fpx_client_destroy (&client);
    return NULL;
}

static void
s_test_name_race (void *arg)
{
    (void) arg;
    char dir [256];
    fpx_test_temp_dir (dir, sizeof dir, "auth-race");
    REQUIRE (dir [0], "mkdtemp failed");
    const char *args [] = { "--data-dir", dir, "--workers", "8", NULL };
    fpx_test_server_t server;
    REQUIRE (fpx_test_server_start (&server, args, NULL) == 0, "start failed");
    int eio = 0, other = 0, done = 0, changed = 0;
    for (int round = 0; round < 6; round++) {
        enum { N = 8 };
        s_racer_t racers [N];
        pthread_t threads [N];
        for (int t = 0; t < N; t++) {
            racers [t] = (s_racer_t) { .server = &server, .seed = round * 100 + t + 1 };
            pthread_create (&threads [t], NULL, s_racer, &racers [t]);
        }
        for (int t = 0; t < N; t++) {
            pthread_join (threads [t], NULL);
            eio += racers [t].eio;
            other += racers [t].other;
            done += racers [t].done;
        }
        //  What the server says now is what a restart must bring back.
        fpx_client_t *client = fpx_test_client (&server, fpx_test_key_a);
        int before = fpx_index_open (client, "race", NULL);
        fpx_client_destroy (&client);
        CHECK (before == 0 || before == FPX_ENOTFOUND, "open before restart: %d", before);
        CHECK_EQ (fpx_test_server_stop (&server, 30), 0);
        REQUIRE (fpx_test_server_start (&server, args, NULL) == 0, "restart failed");
        client = fpx_test_client (&server, fpx_test_key_a);
        int after = fpx_index_open (client, "race", NULL);
        fpx_client_destroy (&client);
        if (!CHECK (after == before, "round %d: before restart %s, after %s", round,
                    fpx_error_name (before), fpx_error_name (after)))
            changed++;
    }
    CHECK_EQ (eio, 0);
    CHECK_EQ (other, 0);
    CHECK_EQ (done, 6 * 8 * 60);
    CHECK_EQ (changed, 0);
    CHECK_EQ (fpx_test_server_stop (&server, 30), 0);
    fpx_test_remove_dir (dir);
}

// ---- keys and roles ------------------------------------------------------------------

//  Path of the faissproxy CLI: FPX_CLI, else next to the daemon under test.
static void
s_cli_path (char *out, size_t size)
{
    if (getenv ("FPX_CLI")) {
        snprintf (out, size, "%s", getenv ("FPX_CLI"));
        return;
    }
    const char *daemon = getenv ("FPX_DAEMON");
    snprintf (out, size, "%s", daemon ? daemon : "build/bin/faissproxyd");
    char *slash = strrchr (out, '/');
    snprintf (slash ? slash + 1 : out, size - (size_t) (slash ? slash + 1 - out : 0), "faissproxy");
}

//  Runs `faissproxy keygen TENANT ROLE`: key (line 1) and keys-file line.
static int
s_keygen (const char *tenant, const char *role, char *key, size_t key_size,
          char *line, size_t line_size)
{
    char cli [512], command [700];
    s_cli_path (cli, sizeof cli);
    snprintf (command, sizeof command, "'%s' keygen %s %s 2>/dev/null", cli, tenant, role);
    FILE *out = popen (command, "r");
    if (!out)
        return -1;
    char first [256] = "";
    int ok = fgets (first, sizeof first, out) && fgets (line, (int) line_size, out);
    int status = pclose (out);
    const char *prefix = "FAISS_PROXY_API_KEY=";
    if (!ok || status != 0 || strncmp (first, prefix, strlen (prefix)))
        return -1;
    snprintf (key, key_size, "%s", first + strlen (prefix));
    key [strcspn (key, "\n")] = 0;
    return 0;
}

//  Whether the file holds needle.
static bool
s_file_has (const char *path, const char *needle, size_t needle_len)
{
    FILE *file = fopen (path, "rb");
    if (!file)
        return false;
    static char data [1 << 20];
    size_t size = fread (data, 1, sizeof data, file);
    fclose (file);
    for (size_t i = 0; i + needle_len <= size; i++)
        if (memcmp (data + i, needle, needle_len) == 0)
            return true;
    return false;
}

static void
s_test_keys_and_roles (void *arg)
{
    (void) arg;
    char dir [256], keys_path [300];
    fpx_test_temp_dir (dir, sizeof dir, "auth-keys");
    REQUIRE (dir [0], "mkdtemp failed");
    char write_key [128], read_key [128], write_line [256], read_line [256];
    REQUIRE (s_keygen ("carol", "write", write_key, sizeof write_key, write_line, sizeof write_line) == 0
             && s_keygen ("carol", "read", read_key, sizeof read_key, read_line, sizeof read_line) == 0,
             "faissproxy keygen failed");
    CHECK (strstr (write_line, "carol write b2:") == write_line, "keys-file line '%s'", write_line);
    CHECK (!strstr (write_line, write_key), "the keys-file line holds the key itself");
    snprintf (keys_path, sizeof keys_path, "%s/keys", dir);
    FILE *file = fopen (keys_path, "w");
    REQUIRE (file, "cannot write %s", keys_path);
    fprintf (file, "# tenants\n%s%s  erin   legacy-plain-key-0123456789  # old style\n",
             write_line, read_line);
    fclose (file);
    chmod (keys_path, 0600);
    const char *args [] = { "--keys-file", keys_path, NULL };
    fpx_test_server_t server;
    REQUIRE (fpx_test_server_start (&server, args, NULL) == 0, "start failed");
    //  No key on the command line: not the keys file's, not --api-key's.
    char cmdline [64];
    snprintf (cmdline, sizeof cmdline, "/proc/%d/cmdline", (int) server.pid);
    CHECK (!s_file_has (cmdline, write_key, strlen (write_key)), "carol's key in %s", cmdline);
    CHECK (!s_file_has (cmdline, fpx_test_key_a, strlen (fpx_test_key_a)),
           "--api-key's key is still in %s", cmdline);
    CHECK (s_file_has (server.log_path, "plaintext", 9), "no warning about the plaintext line");
    CHECK (s_file_has (server.log_path, "/proc/PID/cmdline", 17), "no warning about --api-key");

    fpx_client_t *writer = fpx_test_client (&server, write_key);
    fpx_client_t *reader = fpx_test_client (&server, read_key);
    fpx_client_t *legacy = fpx_test_client (&server, "legacy-plain-key-0123456789");
    fpx_client_t *wrong = fpx_test_client (&server, "carol-wrong-key");
    float *x = fpx_data_uniform (2, 50, DIM);
    CHECK_OK (writer, fpx_index_create (writer, "docs", DIM, "Flat", FPX_METRIC_L2, NULL));
    CHECK_OK (writer, fpx_add (writer, "docs", 50, DIM, x, NULL));
    float D [3];
    int64_t I [3];
    CHECK_OK (reader, fpx_search (reader, "docs", 1, DIM, x + 7 * DIM, 3, NULL, D, I));
    CHECK_EQ (I [0], 7);
    fpx_index_info_t info;
    CHECK_OK (reader, fpx_index_describe (reader, "docs", 0, &info));
    CHECK_EQ (info.ntotal, 50);
    CHECK_RC (reader, fpx_add (reader, "docs", 1, DIM, x, NULL), FPX_EPERM);
    CHECK (strstr (fpx_client_errmsg (reader), "role 'read'") != NULL, "message: %s",
           fpx_client_errmsg (reader));
    CHECK_RC (reader, fpx_index_create (reader, "mine", DIM, "Flat", FPX_METRIC_L2, NULL), FPX_EPERM);
    CHECK_RC (reader, fpx_index_create (reader, NULL, DIM, "Flat", FPX_METRIC_L2, NULL), FPX_EPERM);
    CHECK_RC (reader, fpx_index_save (reader, "docs"), FPX_EPERM);
    CHECK_RC (reader, fpx_index_drop (reader, "docs"), FPX_EPERM);
    //  search_and_reconstruct is a read, attach a write.
    float R [3 * DIM];
    CHECK_OK (reader, fpx_search_and_reconstruct (reader, "docs", 1, DIM, x + 9 * DIM, 3, NULL,
                                                  D, I, R));
    CHECK (I [0] == 9 && memcmp (R, x + 9 * DIM, DIM * sizeof (float)) == 0,
           "search_and_reconstruct found %lld", (long long) I [0]);
    CHECK_RC (reader, fpx_attach (reader, "docs", "shard", "docs2", NULL), FPX_EPERM);
    //  Downloads are reads; uploads, in one message or in chunks, writes.
    uint8_t *bytes = NULL;
    size_t size = 0;
    CHECK_OK (reader, fpx_serialize (reader, "docs", &bytes, &size));
    if (bytes)
        CHECK_RC (reader, fpx_deserialize (reader, NULL, NULL, bytes, size, NULL), FPX_EPERM);
    fpx_free (bytes);
    uint8_t *big = calloc (1, FPX_UPLOAD_INLINE_MAX + 1);
    if (CHECK_TRUE (big != NULL))
        CHECK_RC (reader, fpx_deserialize (reader, "up", NULL, big, FPX_UPLOAD_INLINE_MAX + 1, NULL),
                  FPX_EPERM);
    CHECK (strstr (fpx_client_errmsg (reader), "upload_begin") != NULL, "message: %s",
           fpx_client_errmsg (reader));
    free (big);
    //  Every opcode of FPX_OPCODES with an empty parameter map: a write
    //  one is FPX_EPERM for this key, before its parameters are read; a
    //  read one never is (and changes nothing without parameters).
    fpx_raw_t *raw = fpx_raw_new (server.endpoint);
    REQUIRE (raw, "raw socket");
    for (int op = 1; op < FPX_OP_LAST_; op++) {
        const fpx_opcode_info_t *row = fpx_opcode_info (op);
        if (!row)
            continue;
        fpx_raw_reply_t reply;
        int status = fpx_raw_call (raw, op, read_key, NULL, 0, 0, NULL, NULL, &reply);
        fpx_raw_reply_free (&reply);
        CHECK ((status == FPX_EPERM) == (row->role == FPX_ROLE_WRITE), "%s (role %s) from a "
               "read key: %d %s", row->name, fpx_role_name (row->role), status,
               fpx_error_name (status));
    }
    fpx_raw_destroy (&raw);
    CHECK_OK (writer, fpx_index_describe (writer, "docs", 0, &info));
    CHECK_EQ (info.ntotal, 50);
    CHECK_OK (legacy, fpx_index_create (legacy, "old", DIM, "Flat", FPX_METRIC_L2, NULL));
    CHECK_RC (wrong, fpx_ping (wrong, NULL), FPX_EAUTH);
    CHECK_OK (writer, fpx_index_drop (writer, "docs"));
    fpx_client_destroy (&writer);
    fpx_client_destroy (&reader);
    fpx_client_destroy (&legacy);
    fpx_client_destroy (&wrong);
    free (x);
    CHECK_EQ (fpx_test_server_stop (&server, 30), 0);
    fpx_test_remove_dir (dir);
}

// ---- failed authentications ----------------------------------------------------------

//  A burst of wrong keys from one address (127.0.0.3) is answered a few
//  per second, and logged with the address, while a client on 127.0.0.1
//  is answered at once.
static void
s_test_failed_auth_slowdown (void *arg)
{
    (void) arg;
    fpx_test_server_t server;
    REQUIRE (fpx_test_server_start (&server, NULL, NULL) == 0, "start failed");
    char endpoint [128];
    snprintf (endpoint, sizeof endpoint, "tcp://127.0.0.3:0;127.0.0.1:%d", server.port);
    fpx_raw_t *attacker = fpx_raw_new (endpoint);
    REQUIRE (attacker, "cannot connect from 127.0.0.3");
    enum { BURST = 200 };
    for (int i = 0; i < BURST; i++) {
        uint8_t header [FPX_REQUEST_HEADER_SIZE];
        char key [32];
        snprintf (key, sizeof key, "guess-%d", i);
        fpx_raw_header (header, FPX_OP_PING, (uint64_t) i + 1, key);
        const void *frames [2] = { header, "\x80" };
        size_t sizes [2] = { sizeof header, 1 };
        fpx_raw_send (attacker, 2, frames, sizes);
    }
    //  Meanwhile a good client from another address is answered at once.
    fpx_client_t *good = fpx_test_client (&server, fpx_test_key_a);
    double worst = 0;
    for (int i = 0; i < 20; i++) {
        double start = fpx_now ();
        CHECK_OK (good, fpx_ping (good, NULL));
        if (fpx_now () - start > worst)
            worst = fpx_now () - start;
        fpx_sleep_ms (50);
    }
    CHECK (worst < 0.25, "a good client's ping took %.3f s", worst);
    //  In 1.5 s only a handful of the guesses were checked.
    int checked = 0, busy = 0, other = 0;
    double until = fpx_now () + 1.5;
    while (fpx_now () < until) {
        fpx_raw_reply_t reply;
        if (fpx_raw_recv (attacker, &reply, 50) == 0) {
            if (reply.header_rc == 0 && reply.header.status == FPX_EAUTH)
                checked++;
            else if (reply.header_rc == 0 && reply.header.status == FPX_EBUSY)
                busy++;
            else
                other++;
            fpx_raw_reply_free (&reply);
        }
    }
    fprintf (stderr, "# in 1.5 s: %d guesses checked, %d refused as busy\n", checked, busy);
    CHECK (checked >= 1 && checked <= 20, "%d of %d guesses checked", checked, BURST);
    CHECK_EQ (other, 0);
    CHECK (s_file_has (server.log_path, "127.0.0.3", 9), "no log line with the address");
    fpx_client_destroy (&good);
    fpx_raw_destroy (&attacker);
    CHECK_EQ (fpx_test_server_stop (&server, 30), 0);
}

// ---- CURVE ------------------------------------------------------------------------------

//  `faissproxy keygen --curve FILE`: the public key it prints.
static int
s_keygen_curve (const char *path, char *public_key)
{
    char cli [512], command [900], line [128] = "";
    s_cli_path (cli, sizeof cli);
    snprintf (command, sizeof command, "'%s' keygen --curve '%s' 2>/dev/null", cli, path);
    FILE *out = popen (command, "r");
    if (!out)
        return -1;
    bool ok = fgets (line, sizeof line, out) != NULL;
    if (pclose (out) != 0 || !ok || strncmp (line, "FAISS_PROXY_SERVER_KEY=", 23))
        return -1;
    snprintf (public_key, 41, "%s", line + 23);
    return strlen (public_key) == 40 ? 0 : -1;
}

//  A raw DEALER with CURVE client keys (NULL keys: the NULL mechanism).
static fpx_raw_t *
s_raw_curve (const char *endpoint, const char *server_public, const char *client_secret)
{
    fpx_raw_t *raw = calloc (1, sizeof *raw);
    raw->ctx = zmq_ctx_new ();
    raw->sock = zmq_socket (raw->ctx, ZMQ_DEALER);
    raw->next_id = 1;
    int zero = 0;
    zmq_setsockopt (raw->sock, ZMQ_LINGER, &zero, sizeof zero);
    if (server_public) {
        char client_public [41];
        zmq_curve_public (client_public, client_secret);
        zmq_setsockopt (raw->sock, ZMQ_CURVE_SERVERKEY, server_public, 40);
        zmq_setsockopt (raw->sock, ZMQ_CURVE_PUBLICKEY, client_public, 40);
        zmq_setsockopt (raw->sock, ZMQ_CURVE_SECRETKEY, client_secret, 40);
    }
    zmq_connect (raw->sock, endpoint);
    return raw;
}

//  Whether a ping sent on raw is answered within timeout_ms.
static bool
s_raw_ping_answered (fpx_raw_t *raw, int timeout_ms)
{
    uint8_t header [FPX_REQUEST_HEADER_SIZE];
    fpx_raw_header (header, FPX_OP_PING, 1, fpx_test_key_a);
    const void *frames [2] = { header, "\x80" };
    size_t sizes [2] = { sizeof header, 1 };
    fpx_raw_send (raw, 2, frames, sizes);
    fpx_raw_reply_t reply;
    if (fpx_raw_recv (raw, &reply, timeout_ms))
        return false;
    fpx_raw_reply_free (&reply);
    return true;
}

static void
s_test_curve (void *arg)
{
    (void) arg;
    char dir [256], secret_path [300], public_key [41];
    fpx_test_temp_dir (dir, sizeof dir, "auth-curve");
    REQUIRE (dir [0], "mkdtemp failed");
    snprintf (secret_path, sizeof secret_path, "%s/server.key", dir);
    REQUIRE (s_keygen_curve (secret_path, public_key) == 0, "faissproxy keygen --curve failed");
    struct stat st;
    CHECK (stat (secret_path, &st) == 0 && (st.st_mode & 0777) == 0600, "key file mode %o",
           st.st_mode & 0777);
    //  The test's own clients (and the start-up ping) use the variable.
    setenv ("FAISS_PROXY_SERVER_KEY", public_key, 1);
    const char *args [] = { "--curve-secret-file", secret_path, NULL };
    fpx_test_server_t server;
    int started = fpx_test_server_start (&server, args, NULL);
    unsetenv ("FAISS_PROXY_SERVER_KEY");
    REQUIRE (started == 0, "start failed");

    //  The right key: end to end, results equal FAISS in-process.
    fpx_client_t *client = fpx_client_new_curve (server.endpoint, fpx_test_key_a, public_key);
    REQUIRE (client, "fpx_client_new_curve failed");
    enum { N = 500, NQ = 20, K = 5 };
    float *x = fpx_data_clustered (3, N, DIM, 10, 0.1f);
    float *q = fpx_data_clustered (4, NQ, DIM, 10, 0.1f);
    char why [256];
    FaissIndex *local = fpx_local_create (DIM, "Flat", FPX_METRIC_L2, why, sizeof why);
    REQUIRE (local, "%s", why);
    faiss_Index_add (local, N, x);
    CHECK_OK (client, fpx_index_create (client, "sealed", DIM, "Flat", FPX_METRIC_L2, NULL));
    CHECK_OK (client, fpx_add (client, "sealed", N, DIM, x, NULL));
    fpx_knn_t ref, got;
    CHECK_EQ (fpx_local_knn (local, NQ, q, K, 3, &ref), 0);
    CHECK_OK (client, fpx_remote_knn (client, "sealed", NQ, DIM, q, K, NULL, &got));
    CHECK_KNN (&ref, &got);
    fpx_knn_free (&ref);
    fpx_knn_free (&got);
    faiss_Index_free (local);
    fpx_client_destroy (&client);

    //  A wrong server key: no reply; the client sees the handshake fail and
    //  says so at once, naming CURVE.
    char other_public [41], other_secret [41];
    zmq_curve_keypair (other_public, other_secret);
    fpx_client_t *wrong = fpx_client_new_curve (server.endpoint, fpx_test_key_a, other_public);
    REQUIRE (wrong, "fpx_client_new_curve failed");
    fpx_client_set_timeout (wrong, 1000);
    double start = fpx_now ();
    CHECK_RC (wrong, fpx_ping (wrong, NULL), FPX_EAUTH);
    CHECK (fpx_now () - start < 3, "the wrong key took %.1f s to fail", fpx_now () - start);
    CHECK (strstr (fpx_client_errmsg (wrong), "CURVE") != NULL, "message: %s",
           fpx_client_errmsg (wrong));
    fpx_client_destroy (&wrong);
    CHECK (fpx_client_new_curve (server.endpoint, fpx_test_key_a, "not-a-key") == NULL,
           "a malformed server key was accepted");

    //  A plain (NULL mechanism) DEALER gets nothing back.
    fpx_raw_t *plain = s_raw_curve (server.endpoint, NULL, NULL);
    fpx_raw_reply_t reply;
    CHECK (!s_raw_ping_answered (plain, 2000), "a plain client got a reply from a CURVE server");
    CHECK (s_file_has (server.log_path, "handshake failed on", 19),
           "no log line about the failed handshakes");
    fpx_raw_destroy (&plain);
    //  … while a raw CURVE DEALER with any key of its own does.
    char client_public [41], client_secret [41];
    zmq_curve_keypair (client_public, client_secret);
    fpx_raw_t *raw = s_raw_curve (server.endpoint, public_key, client_secret);
    CHECK_EQ (fpx_raw_call (raw, FPX_OP_PING, fpx_test_key_a, "\x80", 1, 0, NULL, NULL, &reply), 0);
    fpx_raw_reply_free (&reply);
    fpx_raw_destroy (&raw);
    CHECK_EQ (fpx_test_server_stop (&server, 30), 0);

    //  Group-readable secret key file: refused.
    chmod (secret_path, 0640);
    const char *daemon = getenv ("FPX_DAEMON");
    char command [1200];
    snprintf (command, sizeof command, "timeout 20 '%s' --curve-secret-file '%s' --api-key a:b "
              "--bind tcp://127.0.0.1:0 --data-dir '%s/data' >/dev/null 2>&1",
              daemon ? daemon : "build/bin/faissproxyd", secret_path, dir);
    int status = system (command);
    CHECK (WIFEXITED (status) && WEXITSTATUS (status) == 2, "a 0640 secret key file: status %d",
           status);
    chmod (secret_path, 0600);
    free (x);
    free (q);
    fpx_test_remove_dir (dir);
}

//  --curve-clients-file: a listed client key is served (the C client with
//  FAISS_PROXY_CLIENT_SECRET_KEY), another is refused and logged.
static void
s_test_curve_clients_file (void *arg)
{
    (void) arg;
    char dir [256], secret_path [300], clients_path [300], public_key [41];
    fpx_test_temp_dir (dir, sizeof dir, "auth-curvecl");
    REQUIRE (dir [0], "mkdtemp failed");
    snprintf (secret_path, sizeof secret_path, "%s/server.key", dir);
    snprintf (clients_path, sizeof clients_path, "%s/clients", dir);
    REQUIRE (s_keygen_curve (secret_path, public_key) == 0, "faissproxy keygen --curve failed");
    char listed_public [41], listed_secret [41], other_public [41], other_secret [41];
    zmq_curve_keypair (listed_public, listed_secret);
    zmq_curve_keypair (other_public, other_secret);
    FILE *file = fopen (clients_path, "w");
    REQUIRE (file, "cannot write %s", clients_path);
    fprintf (file, "# the one client\n%s\n", listed_public);
    fclose (file);
    setenv ("FAISS_PROXY_SERVER_KEY", public_key, 1);
    setenv ("FAISS_PROXY_CLIENT_SECRET_KEY", listed_secret, 1);
    const char *args [] = { "--curve-secret-file", secret_path, "--curve-clients-file",
                            clients_path, NULL };
    fpx_test_server_t server;
    int started = fpx_test_server_start (&server, args, NULL);
    fpx_client_t *client = started == 0 ? fpx_test_client (&server, fpx_test_key_a) : NULL;
    unsetenv ("FAISS_PROXY_SERVER_KEY");
    unsetenv ("FAISS_PROXY_CLIENT_SECRET_KEY");
    REQUIRE (started == 0, "start failed");
    CHECK_OK (client, fpx_ping (client, NULL));
    fpx_client_destroy (&client);
    fpx_raw_t *raw = s_raw_curve (server.endpoint, public_key, other_secret);
    CHECK (!s_raw_ping_answered (raw, 2000), "an unlisted client key got a reply");
    fpx_raw_destroy (&raw);
    CHECK (s_file_has (server.log_path, other_public, 40), "no log line with the refused key");
    CHECK (s_file_has (server.log_path, "127.0.0.1", 9), "no log line with the address");
    CHECK_EQ (fpx_test_server_stop (&server, 30), 0);
    fpx_test_remove_dir (dir);
}

// ---- idle connections -----------------------------------------------------------------

//  utime + stime of a process, in clock ticks (-1 if unknown).
static long
s_cpu_ticks (pid_t pid)
{
    char path [64], text [1024];
    snprintf (path, sizeof path, "/proc/%d/stat", (int) pid);
    FILE *file = fopen (path, "r");
    if (!file)
        return -1;
    size_t size = fread (text, 1, sizeof text - 1, file);
    fclose (file);
    text [size] = 0;
    const char *p = strrchr (text, ')');         //  after the command name
    unsigned long utime, stime;
    if (!p || sscanf (p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
                      &utime, &stime) != 2)
        return -1;
    return (long) (utime + stime);
}

//  1100 idle TCP connects (no ZMTP greeting) to a server started under the
//  usual soft limit of 1024 descriptors: it stays idle and answers a new
//  client (before, accept failed with EMFILE and libzmq's listener spun).
static void
s_test_idle_connects (void *arg)
{
    (void) arg;
    struct rlimit saved, low;
    getrlimit (RLIMIT_NOFILE, &saved);
    if (!CHECK (saved.rlim_max >= 2048, "hard descriptor limit %llu: too low for this test",
                (unsigned long long) saved.rlim_max))
        return;
    low = saved;
    if (low.rlim_cur > 1024)
        low.rlim_cur = 1024;
    setrlimit (RLIMIT_NOFILE, &low);            //  the server inherits it
    fpx_test_server_t server;
    int started = fpx_test_server_start (&server, NULL, NULL);
    setrlimit (RLIMIT_NOFILE, &saved);
    REQUIRE (started == 0, "start failed");
    enum { IDLE = 1100 };
    int fds [IDLE], opened = 0;
    struct sockaddr_in address = { .sin_family = AF_INET, .sin_port = htons ((uint16_t) server.port) };
    address.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
    for (int i = 0; i < IDLE; i++) {
        fds [i] = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fds [i] >= 0 && connect (fds [i], (struct sockaddr *) &address, sizeof address) == 0)
            opened++;
    }
    CHECK_EQ (opened, IDLE);
    fpx_sleep_ms (500);
    long ticks_per_s = sysconf (_SC_CLK_TCK);
    long before = s_cpu_ticks (server.pid);
    fpx_sleep_ms (1000);
    long used = s_cpu_ticks (server.pid) - before;
    fprintf (stderr, "# server CPU with %d idle connections: %ld ticks of %ld in 1 s\n", IDLE,
             used, ticks_per_s);
    CHECK (before >= 0 && used * 5 < ticks_per_s, "the idle server used %ld of %ld ticks in 1 s",
           used, ticks_per_s);
    fpx_client_t *client = fpx_test_client (&server, fpx_test_key_a);
    fpx_client_set_timeout (client, 3000);
    double start = fpx_now ();
    CHECK_OK (client, fpx_ping (client, NULL));
    CHECK (fpx_now () - start < 1.0, "a new client's ping took %.2f s", fpx_now () - start);
    fpx_client_destroy (&client);
    for (int i = 0; i < IDLE; i++)
        if (fds [i] >= 0)
            close (fds [i]);
    CHECK_EQ (fpx_test_server_stop (&server, 30), 0);
}

int
main (void)
{
    fpx_test_run ("data_files_0600_dirs_0700", s_test_file_modes, NULL);
    fpx_test_run ("create_drop_save_race_one_name", s_test_name_race, NULL);
    fpx_test_run ("hashed_keys_file_and_roles", s_test_keys_and_roles, NULL);
    fpx_test_run ("failed_auth_logged_and_slowed_per_peer", s_test_failed_auth_slowdown, NULL);
    fpx_test_run ("curve_right_key_wrong_key_plain_client", s_test_curve, NULL);
    fpx_test_run ("curve_clients_file", s_test_curve_clients_file, NULL);
    fpx_test_run ("idle_tcp_connects_do_not_spin", s_test_idle_connects, NULL);
    return fpx_test_finish ();
}
