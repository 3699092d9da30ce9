/*  fuzz_server.c — a real faissproxyd in-process: the server's own
    objects (everything in server/ but main.c) with the setup main()
    does (configuration, registry, storage in a temporary data directory,
    snapshotter, workers, broker), bound on an ipc:// endpoint. Each input
    is split into frames (fuzz_common.h) and sent as one request over a
    real DEALER socket; the reply must come within FPX_FUZZ_TIMEOUT_MS
    and be well formed (fuzz_client.h), and echo the request id whenever
    the request had a readable header. A crash of the server is a crash
    of this process.

    The seeds (fuzz_seeds.c) carry the tenant's valid key and name the
    indexes the setup requests create; every FPX_FUZZ_RESTORE_EVERY
    inputs the socket is replaced (the server frees its anonymous
    objects) and the tenant's named indexes are dropped and re-created,
    so that memory and disk stay bounded over millions of inputs. At the
    end the server is stopped as on SIGTERM and everything is freed, so
    that LeakSanitizer sees a clean exit.                                */
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sodium.h>

#include "auth.h"
#include "broker.h"
#include "budget.h"
#include "clock.h"
#include "faiss_shim.h"
#include "fuzz_client.h"
#include "fuzz_common.h"
#include "fuzz_seeds.h"
#include "interrupt.h"
#include "server.h"
#include "storage.h"
#include "tenant_limits.h"
#include "rebuild.h"
#include "transfers.h"
#include "worker.h"

#define FPX_FUZZ_TIMEOUT_MS    30000
//  The restore waits longer: a slow call an input started (an HNSW add
//  after a huge efConstruction, say) may still hold the workers.
#define FPX_FUZZ_RESTORE_TIMEOUT_MS 180000
#define FPX_FUZZ_RESTORE_EVERY 500

const char fpx_fuzz_target_name [] = "server";
const long fpx_fuzz_replay_mutations = 1500;
const long fpx_fuzz_replay_seed = 20261205;

//  Opcodes whose mutants the replay in `make test` leaves out: none. A
//  crash the fuzzers find is fixed, and one input of it kept in
//  tests/fuzz/regressions/server/; while a fix is pending, its input waits
//  in regressions/server-pending/ (replayed with FPX_FUZZ_PENDING=1) and
//  its opcode may be named here. FPX_FUZZ_SKIP overrides the list.
static const char s_replay_skip [] = "";

static struct {
    bool started;
    fpx_server_t server;
    char dir [256];
    char endpoint [300];
    int signal_pipe [2];
    pthread_t broker;
    int broker_rc;
    void *client_ctx;
    void *socket;
    long inputs;
} s_self;

static void *
s_broker_main (void *arg)
{
    (void) arg;
    s_self.broker_rc = fpx_broker_run (&s_self.server, s_self.signal_pipe [0]);
    return NULL;
}

static int
s_remove (const char *path, const struct stat *info, int flag, struct FTW *ftw)
{
    (void) info, (void) flag, (void) ftw;
    return remove (path);
}

static void
s_start (void)
{
    fpx_server_t *server = &s_self.server;
    fpx_config_t *config = &server->config;
    snprintf (s_self.dir, sizeof s_self.dir, "%s/fpx-fuzz-server-XXXXXX",
              getenv ("TMPDIR") ? getenv ("TMPDIR") : "/tmp");
    FPX_FUZZ_ASSERT (mkdtemp (s_self.dir) != NULL);
    char data [300];
    snprintf (data, sizeof data, "%s/data", s_self.dir);
    FPX_FUZZ_ASSERT (mkdir (data, 0700) == 0);
    snprintf (s_self.endpoint, sizeof s_self.endpoint, "ipc://%s/fpx.sock", s_self.dir);

    //  main.c's defaults, smaller where a fuzzer should hit the limits.
    config->binds [0] = s_self.endpoint;
    config->nbinds = 1;
    config->ncores = 2;
    config->workers = 2;
    config->max_message = (size_t) 16 << 20;
    config->max_queue = 64;
    config->data_dir = strdup (data);
    config->fsync = FPX_FSYNC_NEVER;
    config->snapshot_log_bytes = (uint64_t) 1 << 20;
    config->snapshot_interval_s = 300;
    config->log_level = getenv ("FPX_FUZZ_LOG") ? FPX_LOG_INFO : FPX_LOG_ERROR - 1;
    static const char *const tenants [2] = { FPX_FUZZ_TENANT, "other" };
    static const char *const keys [2] = { FPX_FUZZ_KEY, "other-key-55aa" };
    config->keys = calloc (2, sizeof *config->keys);
    config->tenants = calloc (2, sizeof *config->tenants);
    FPX_FUZZ_ASSERT (config->keys && config->tenants && config->data_dir);
    for (int i = 0; i < 2; i++) {
        snprintf (config->keys [i].tenant, sizeof config->keys [i].tenant, "%s", tenants [i]);
        fpx_auth_hash_key (keys [i], strlen (keys [i]), config->keys [i].hash);
        config->keys [i].role = FPX_ROLE_ADMIN;
        config->keys [i].tenant_id = (uint32_t) i;
        snprintf (config->tenants [i], sizeof config->tenants [i], "%s", tenants [i]);
    }
    config->nkeys = config->ntenants = 2;
    config->max_conn_inflight = 1024;
    config->max_conn_unread = (size_t) 64 << 20;
    config->max_memory = (size_t) 4096 << 20;
    //  Mutated keys fail authentication: a short wait keeps the guard in
    //  the path without making every later input wait 2 s.
    config->auth_delay_max = 0.005;
    FPX_FUZZ_ASSERT (sodium_init () >= 0);
    //  The daemon's default quotas, with a short deadline: a fuzzed train
    //  must not hold a worker for minutes.
    FPX_FUZZ_ASSERT (fpx_limits_load (config, "deadline_ms=5000", NULL) == 0);
    fpx_log_set_level (config->log_level);
    fpx_shim_log_cerr ();
    signal (SIGPIPE, SIG_IGN);

    FPX_FUZZ_ASSERT (pipe2 (s_self.signal_pipe, O_CLOEXEC | O_NONBLOCK) == 0);
    server->zmq_ctx = zmq_ctx_new ();
    server->registry = fpx_registry_new ();
    server->started_at = fpx_monotonic_seconds ();
    server->batch_stats = calloc ((size_t) config->ntenants, sizeof *server->batch_stats);
    server->limits = fpx_limits_new (config);
    server->transfers = fpx_transfers_new (server->limits);
    server->rebuilds = fpx_rebuilds_new (config->rebuild_background_min);
    server->budget = fpx_budget_new (server->registry, config->memory_budget);
    FPX_FUZZ_ASSERT (server->zmq_ctx && server->registry && server->batch_stats
                     && server->limits && server->transfers && server->rebuilds
                     && server->budget);
    fpx_registry_set_parts (server->registry, &(fpx_registry_parts_t) {
        .limits = server->limits, .rebuilds = server->rebuilds,
        .budget = server->budget });
    fpx_storage_config_t storage = {
        .root = config->data_dir, .fsync = config->fsync,
        .snapshot_log_bytes = config->snapshot_log_bytes,
        .snapshot_interval_s = config->snapshot_interval_s,
    };
    server->storage = fpx_storage_new (&storage, server->registry, config->tenants,
                                       config->ntenants);
    FPX_FUZZ_ASSERT (server->storage != NULL);
    fpx_storage_recover (server->storage);
    FPX_FUZZ_ASSERT (fpx_storage_start_snapshotter (server->storage) == 0);
    FPX_FUZZ_ASSERT ((server->workers = fpx_workers_new (server)) != NULL);
    fpx_limits_measure_all (server->registry);
    fpx_storage_recovered (server->storage);
    fpx_interrupt_install ();
    FPX_FUZZ_ASSERT (pthread_create (&s_self.broker, NULL, s_broker_main, NULL) == 0);

    s_self.client_ctx = zmq_ctx_new ();
    FPX_FUZZ_ASSERT (s_self.client_ctx != NULL);
    s_self.socket = fpx_fuzz_connect (s_self.client_ctx, s_self.endpoint);
    FPX_FUZZ_ASSERT (s_self.socket != NULL);
    FPX_FUZZ_ASSERT (fpx_fuzz_restore (s_self.socket, FPX_FUZZ_RESTORE_TIMEOUT_MS) == 0);
    s_self.started = true;
}

void
fpx_fuzz_target_cleanup (void)
{
    if (!s_self.started)
        return;
    s_self.started = false;
    zmq_close (s_self.socket);
    zmq_ctx_term (s_self.client_ctx);
    //  As SIGTERM does: the broker finishes what is in flight and returns.
    FPX_FUZZ_ASSERT (write (s_self.signal_pipe [1], "\017", 1) == 1);
    pthread_join (s_self.broker, NULL);
    FPX_FUZZ_ASSERT (s_self.broker_rc == 0);
    fpx_server_t *server = &s_self.server;
    fpx_workers_destroy (&server->workers);
    fpx_transfers_destroy (&server->transfers);
    fpx_rebuilds_join (server->rebuilds);
    fpx_storage_destroy (&server->storage);
    fpx_registry_destroy (&server->registry);
    fpx_rebuilds_destroy (&server->rebuilds);
    fpx_budget_destroy (&server->budget);
    fpx_limits_destroy (&server->limits);
    zmq_ctx_term (server->zmq_ctx);
    close (s_self.signal_pipe [0]);
    close (s_self.signal_pipe [1]);
    free (server->config.keys);
    free (server->config.tenants);
    free ((char *) server->config.data_dir);
    free (server->batch_stats);
    nftw (s_self.dir, s_remove, 16, FTW_DEPTH | FTW_PHYS);
    printf ("fuzz_server: %ld inputs sent to the in-process server\n", s_self.inputs);
}

//  The name of the request's opcode; NULL when it has none.
static const char *
s_opcode (const fpx_fuzz_frames_t *frames)
{
    fpx_header_t header;
    if (frames->count == 0
    ||  fpx_header_decode_request (&header, frames->data [0], frames->size [0]) != 0)
        return NULL;
    return fpx_opcode_name (header.opcode);
}

//  True when the request's opcode is one the replay leaves out.
static bool
s_skipped (const fpx_fuzz_frames_t *frames)
{
    const char *name = s_opcode (frames);
    if (!name)
        return false;
    const char *list = getenv ("FPX_FUZZ_SKIP") ? getenv ("FPX_FUZZ_SKIP") : s_replay_skip;
    size_t len = strlen (name);
    for (const char *at = strstr (list, name); at; at = strstr (at + 1, name))
        if ((at == list || at [-1] == ',') && (at [len] == ',' || at [len] == 0))
            return true;
    return false;
}

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
    (void) argc, (void) argv;
    s_start ();
#ifdef FPX_FUZZ_ENGINE
    atexit (fpx_fuzz_target_cleanup);
#endif
    return 0;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    if (!s_self.started)
        s_start ();
    if (++s_self.inputs % FPX_FUZZ_RESTORE_EVERY == 0) {
        zmq_close (s_self.socket);
        s_self.socket = fpx_fuzz_connect (s_self.client_ctx, s_self.endpoint);
        FPX_FUZZ_ASSERT (s_self.socket != NULL);
        FPX_FUZZ_ASSERT (fpx_fuzz_restore (s_self.socket, FPX_FUZZ_RESTORE_TIMEOUT_MS) == 0);
    }
    fpx_fuzz_frames_t frames;
    fpx_fuzz_split (&frames, data, size);
    if ((fpx_fuzz_mutating || getenv ("FPX_FUZZ_SKIP")) && s_skipped (&frames))
        return 0;
    double sent_at = fpx_monotonic_seconds ();
    FPX_FUZZ_ASSERT (fpx_fuzz_send (s_self.socket, &frames) == 0);
    fpx_fuzz_reply_t reply;
    char why [256];
    int rc = fpx_fuzz_recv (s_self.socket, FPX_FUZZ_TIMEOUT_MS, &reply, why, sizeof why);
    if (rc) {
        fprintf (stderr, "fuzz_server: bad reply: %s\n", why);
        FPX_FUZZ_ASSERT (rc == 0);
    }
    uint64_t id;
    if (fpx_fuzz_request_id (&frames, &id) && reply.request_id != id) {
        fprintf (stderr, "fuzz_server: reply id %llu for request %llu\n",
                 (unsigned long long) reply.request_id, (unsigned long long) id);
        FPX_FUZZ_ASSERT (reply.request_id == id);
    }
    //  FPX_FUZZ_SLOW_MS: name the inputs that take longer than that.
    double ms = (fpx_monotonic_seconds () - sent_at) * 1e3;
    if (getenv ("FPX_FUZZ_SLOW_MS") && ms > atof (getenv ("FPX_FUZZ_SLOW_MS")))
        fprintf (stderr, "fuzz_server: %.0f ms for %s (reply status %d)\n", ms,
                 s_opcode (&frames) ? s_opcode (&frames) : "an undecodable request",
                 (int) reply.status);
    return 0;
}
