/*  fpx-fuzz-live — a mutation fuzzer against a running faissproxyd.

    Seeds: valid requests of every opcode and uploads of an index of every
    type (fuzz_seeds.c, built with FAISS in-process). Each request sent is
    a seed with, mostly, mutations: another opcode, a broken or missing
    key, the byte-level mutations of fuzz_common.c over the whole framed
    request (bit flips, boundary integers in headers, msgpack lengths and
    vectors, truncation, inserted, erased and duplicated bytes, extra or
    fewer frames, splices of two seeds). At most --window requests are
    outstanding. Every reply must be a well-formed reply (fuzz_client.h);
    every --check requests the fuzzer waits for the window to drain, pings
    (status 0 expected), checks that the daemon (--pid) is alive and its
    VmRSS is under --rss-max-mb; every --restore requests it reconnects
    (the daemon frees the connection's anonymous indexes) and re-creates
    the tenant's named indexes (fuzz_seeds.h), so that memory stays
    bounded. The daemon must know --key for tenant "fuzz" (--api-key
    fuzz:KEY). On a failure the last requests sent are written to
    --artifacts DIR (one file each, framed as fuzz_common.h says, the
    last one last) and it exits 1.

    Prints requests, requests/s, replies by status and the largest RSS.  */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "fpx_protocol.h"
#include "fuzz_client.h"
#include "fuzz_seeds.h"

#define S_STATUSES  18          //  0, then -1 … -17
#define S_HISTORY   64          //  requests kept for the artifacts

typedef struct {
    fpx_fuzz_buf_t *seeds;
    int *opcodes;
    int nseeds;
} s_seeds_t;

static void
s_collect (void *arg, const char *label, int opcode, const fpx_fuzz_buf_t *request)
{
    (void) label;
    s_seeds_t *self = arg;
    self->seeds = realloc (self->seeds, (size_t) (self->nseeds + 1) * sizeof *self->seeds);
    self->opcodes = realloc (self->opcodes, (size_t) (self->nseeds + 1) * sizeof *self->opcodes);
    if (!self->seeds || !self->opcodes)
        abort ();
    memset (&self->seeds [self->nseeds], 0, sizeof self->seeds [0]);
    fpx_fuzz_buf_append (&self->seeds [self->nseeds], request->data, request->size);
    self->opcodes [self->nseeds++] = opcode;
}

static double
s_now (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + ts.tv_nsec * 1e-9;
}

//  VmRSS of pid in KiB; -1 when the process is gone.
static long
s_rss_kib (int pid)
{
    char path [64], line [256];
    snprintf (path, sizeof path, "/proc/%d/status", pid);
    FILE *file = fopen (path, "r");
    if (!file)
        return -1;
    long rss = 0;
    bool zombie = false;
    while (fgets (line, sizeof line, file)) {
        if (strncmp (line, "VmRSS:", 6) == 0)
            rss = strtol (line + 6, NULL, 10);
        if (strncmp (line, "State:", 6) == 0 && strchr (line, 'Z'))
            zombie = true;
    }
    fclose (file);
    return zombie ? -1 : rss;
}

//  Waits for a reply in slices, watching the daemon: 0 when one is
//  there, 1 on timeout, -1 when the daemon is gone.
static int
s_wait (void *socket, long timeout_ms, int pid)
{
    for (long waited = 0; waited < timeout_ms; waited += 250) {
        zmq_pollitem_t item = { socket, 0, ZMQ_POLLIN, 0 };
        if (zmq_poll (&item, 1, 250) > 0)
            return 0;
        if (pid && s_rss_kib (pid) < 0)
            return -1;
    }
    return 1;
}

static struct {
    fpx_fuzz_buf_t history [S_HISTORY];
    long sent;
    const char *artifacts;
} s_self;

static void
s_dump (const char *why)
{
    fprintf (stderr, "fpx-fuzz-live: FAILED after %ld requests: %s\n", s_self.sent, why);
    if (!s_self.artifacts)
        return;
    mkdir (s_self.artifacts, 0755);
    long first = s_self.sent > S_HISTORY ? s_self.sent - S_HISTORY : 0;
    for (long i = first; i < s_self.sent; i++) {
        const fpx_fuzz_buf_t *request = &s_self.history [i % S_HISTORY];
        char path [4096];
        snprintf (path, sizeof path, "%s/request-%09ld", s_self.artifacts, i);
        FILE *file = fopen (path, "wb");
        if (file) {
            fwrite (request->data, 1, request->size, file);
            fclose (file);
        }
    }
    fprintf (stderr, "fpx-fuzz-live: the last %ld requests sent are in %s\n", s_self.sent - first,
             s_self.artifacts);
}

static void
s_usage (FILE *out)
{
    fprintf (out,
"Usage: fpx-fuzz-live --endpoint ENDPOINT [OPTIONS]\n"
"  --endpoint E       the daemon (tcp://HOST:PORT or ipc://PATH)\n"
"  --key KEY          an API key of tenant 'fuzz' (default " FPX_FUZZ_KEY ")\n"
"  --requests N       requests to send (default 1000000)\n"
"  --seed S           mutation seed (default 1)\n"
"  --pid PID          the daemon's process: checked alive, VmRSS bounded\n"
"  --rss-max-mb M     largest VmRSS allowed (default 4096)\n"
"  --window W         requests outstanding at most (default 16)\n"
"  --timeout-ms T     longest wait for a reply (default 60000)\n"
"  --check N          drain, ping and check the daemon every N requests (default 1000)\n"
"  --restore N        reconnect and re-create the indexes every N requests (default 5000)\n"
"  --skip OPS         comma-separated opcode names whose requests are not sent\n"
"                     (to fuzz around a known crash)\n"
"  --artifacts DIR    where the last requests go on a failure\n");
}

int
main (int argc, char **argv)
{
    const char *endpoint = NULL, *key = FPX_FUZZ_KEY, *skip = "";
    long requests = 1000000, seed = 1, rss_max_mb = 4096, window = 16, timeout_ms = 60000;
    long check_every = 1000, restore_every = 5000;
    int pid = 0;
    static const struct option options [] = {
        { "endpoint", required_argument, NULL, 'e' }, { "key", required_argument, NULL, 'k' },
        { "requests", required_argument, NULL, 'n' }, { "seed", required_argument, NULL, 's' },
        { "pid", required_argument, NULL, 'p' }, { "rss-max-mb", required_argument, NULL, 'r' },
        { "window", required_argument, NULL, 'w' }, { "timeout-ms", required_argument, NULL, 't' },
        { "check", required_argument, NULL, 'c' }, { "restore", required_argument, NULL, 'R' },
        { "skip", required_argument, NULL, 'x' }, { "artifacts", required_argument, NULL, 'a' },
        { "help", no_argument, NULL, 'h' }, { NULL, 0, NULL, 0 }
    };
    int option;
    while ((option = getopt_long (argc, argv, "", options, NULL)) != -1) {
        switch (option) {
            case 'e': endpoint = optarg; break;
            case 'k': key = optarg; break;
            case 'n': requests = atol (optarg); break;
            case 's': seed = atol (optarg); break;
            case 'p': pid = atoi (optarg); break;
            case 'r': rss_max_mb = atol (optarg); break;
            case 'w': window = atol (optarg); break;
            case 't': timeout_ms = atol (optarg); break;
            case 'c': check_every = atol (optarg); break;
            case 'R': restore_every = atol (optarg); break;
            case 'x': skip = optarg; break;
            case 'a': s_self.artifacts = optarg; break;
            case 'h': s_usage (stdout); return 0;
            default: s_usage (stderr); return 2;
        }
    }
    if (!endpoint || window < 1 || check_every < 1 || restore_every < 1 || strlen (key) > FPX_API_KEY_MAX) {
        s_usage (stderr);
        return 2;
    }
    if (strcmp (key, FPX_FUZZ_KEY) != 0)
        fprintf (stderr, "fpx-fuzz-live: seeds carry the key " FPX_FUZZ_KEY "; requests are rewritten "
                 "with --key\n");
    bool skipped [FPX_OP_LAST_ + 1] = { false };
    for (int op = 1; op < FPX_OP_LAST_; op++) {
        const char *name = fpx_opcode_name (op);
        size_t len = strlen (name);
        for (const char *at = strstr (skip, name); at; at = strstr (at + 1, name))
            if ((at == skip || at [-1] == ',') && (at [len] == ',' || at [len] == 0))
                skipped [op] = true;
    }

    s_seeds_t seeds = { 0 };
    double g0 = s_now ();
    fpx_fuzz_seed_requests (s_collect, &seeds);
    printf ("fpx-fuzz-live: %d seed requests made in %.1f s\n", seeds.nseeds, s_now () - g0);
    fflush (stdout);
    //  The key the daemon knows, in every seed.
    for (int i = 0; i < seeds.nseeds; i++) {
        memset (seeds.seeds [i].data + 2 + FPX_REPLY_HEADER_SIZE, 0, FPX_API_KEY_MAX);
        memcpy (seeds.seeds [i].data + 2 + FPX_REPLY_HEADER_SIZE, key, strlen (key));
    }

    void *ctx = zmq_ctx_new ();
    void *socket = fpx_fuzz_connect (ctx, endpoint);
    if (!socket || fpx_fuzz_restore (socket, (int) timeout_ms)) {
        fprintf (stderr, "fpx-fuzz-live: cannot set up the indexes at %s (key of tenant 'fuzz'?)\n", endpoint);
        return 1;
    }
    uint64_t state = (uint64_t) seed * 0x9e3779b97f4a7c15ull + 1;
    long by_status [S_STATUSES] = { 0 };
    long outstanding = 0, max_rss = 0, replies = 0, checks = 0;
    double t0 = s_now (), last_report = t0;
    fpx_fuzz_buf_t request = { 0 };
    char why [512];
    int failed = 0;

    while (!failed && (s_self.sent < requests || outstanding > 0)) {
        bool drain = s_self.sent >= requests
                  || (s_self.sent > 0 && s_self.sent % check_every == 0 && outstanding > 0);
        if (!drain && outstanding < window) {
            //  One more request.
            int pick;
            do
                pick = (int) (fpx_fuzz_rand (&state) % (uint64_t) seeds.nseeds);
            while (skipped [seeds.opcodes [pick]]);
            request.size = 0;
            fpx_fuzz_buf_append (&request, seeds.seeds [pick].data, seeds.seeds [pick].size);
            uint8_t *header = request.data + 2;
            uint64_t r = fpx_fuzz_rand (&state);
            if (r % 8 == 0) {           //  another opcode, known or not
                uint16_t op = (uint16_t) ((r >> 8) % 40);
                if (op < FPX_OP_LAST_ && skipped [op])
                    op = FPX_OP_PING;
                header [6] = (uint8_t) op;
                header [7] = (uint8_t) (op >> 8);
            }
            if (r % 64 == 1)            //  a wrong key
                header [24 + (r >> 16) % 8] ^= 0x20;
            uint64_t id = (uint64_t) s_self.sent;
            memcpy (header + 16, &id, 8);
            if (r % 16 != 2) {
                int other = (int) (fpx_fuzz_rand (&state) % (uint64_t) seeds.nseeds);
                fpx_fuzz_mutate (&request, &seeds.seeds [other], 1 << 20, &state);
            }
            fpx_fuzz_frames_t frames;
            fpx_fuzz_split (&frames, request.data, request.size);
            fpx_header_t decoded;
            if (frames.count && fpx_header_decode_request (&decoded, frames.data [0], frames.size [0]) == 0
            &&  decoded.opcode < FPX_OP_LAST_ && skipped [decoded.opcode])
                continue;           //  mutated into a skipped opcode
            fpx_fuzz_buf_t *kept = &s_self.history [s_self.sent % S_HISTORY];
            kept->size = 0;
            fpx_fuzz_buf_append (kept, request.data, request.size);
            if (fpx_fuzz_send (socket, &frames)) {
                snprintf (why, sizeof why, "send failed: %s", zmq_strerror (zmq_errno ()));
                failed = 1;
                break;
            }
            s_self.sent++;
            outstanding++;
            continue;
        }
        //  A reply.
        fpx_fuzz_reply_t reply;
        int rc = s_wait (socket, timeout_ms, pid);
        if (rc) {
            if (rc < 0)
                snprintf (why, sizeof why, "the daemon (pid %d) is gone", pid);
            else
                snprintf (why, sizeof why, "no reply within %ld ms", timeout_ms);
            failed = 1;
            break;
        }
        rc = fpx_fuzz_recv (socket, 1000, &reply, why, sizeof why);
        if (rc) {
            failed = 1;
            break;
        }
        outstanding--;
        replies++;
        int index = reply.status <= 0 && reply.status > -S_STATUSES ? -reply.status : 0;
        by_status [index]++;
        if (outstanding == 0 && s_self.sent % check_every == 0 && s_self.sent > 0
        &&  s_self.sent / check_every > checks) {
            checks = s_self.sent / check_every;
            if (pid) {
                long rss = s_rss_kib (pid);
                if (rss < 0) {
                    snprintf (why, sizeof why, "the daemon (pid %d) is gone", pid);
                    failed = 1;
                    break;
                }
                if (rss > max_rss)
                    max_rss = rss;
                if (rss > rss_max_mb * 1024) {
                    snprintf (why, sizeof why, "daemon VmRSS %ld MiB over the bound of %ld MiB",
                              rss / 1024, rss_max_mb);
                    failed = 1;
                    break;
                }
            }
            if (s_self.sent % restore_every == 0) {
                zmq_close (socket);
                socket = fpx_fuzz_connect (ctx, endpoint);
                if (!socket || fpx_fuzz_restore (socket, (int) timeout_ms)) {
                    snprintf (why, sizeof why, "cannot re-create the indexes");
                    failed = 1;
                    break;
                }
            }
            int status = fpx_fuzz_call (socket, &seeds.seeds [0], (int) timeout_ms, NULL, NULL);
            if (status != 0) {
                snprintf (why, sizeof why, "ping: %s", status > 0 ? "no reply" : fpx_error_name (status));
                failed = 1;
                break;
            }
            double now = s_now ();
            if (now - last_report >= 10) {
                printf ("fpx-fuzz-live: %ld requests, %.0f/s, max RSS %ld MiB\n", s_self.sent,
                        (double) s_self.sent / (now - t0), max_rss / 1024);
                fflush (stdout);
                last_report = now;
            }
        }
    }
    double elapsed = s_now () - t0;
    if (pid && !failed) {
        long rss = s_rss_kib (pid);
        if (rss < 0) {
            snprintf (why, sizeof why, "the daemon (pid %d) is gone", pid);
            failed = 1;
        }
        else if (rss > max_rss)
            max_rss = rss;
    }
    if (failed)
        s_dump (why);
    printf ("fpx-fuzz-live: %ld requests, %ld replies in %.1f s, %.0f requests/s; max daemon RSS %ld MiB"
            " (bound %ld MiB)\n", s_self.sent, replies, elapsed, (double) s_self.sent / elapsed,
            max_rss / 1024, rss_max_mb);
    printf ("fpx-fuzz-live: replies by status:");
    for (int i = 0; i < S_STATUSES; i++)
        if (by_status [i])
            printf (" %s %ld", fpx_error_name (-i), by_status [i]);
    printf ("\n");
    zmq_close (socket);
    zmq_ctx_term (ctx);
    fpx_fuzz_buf_free (&request);
    for (int i = 0; i < S_HISTORY; i++)
        fpx_fuzz_buf_free (&s_self.history [i]);
    for (int i = 0; i < seeds.nseeds; i++)
        fpx_fuzz_buf_free (&seeds.seeds [i]);
    free (seeds.seeds);
    free (seeds.opcodes);
    return failed;
}
