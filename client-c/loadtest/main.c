/*  main.c — fpx-loadtest: options, setup, runs, and the report.

    A run: generate seeded data; create and fill one index per tenant on
    the server (or use --index); with --inprocess load a copy of each
    server index into this process (serialize, then FAISS's read_index:
    the very same structure, built once), or without a server build them
    from the same data; drive the workload against the server, then the
    identical workload against FAISS in-process; print a table, and with
    --json one JSON line, last on stdout. Indexes it created are dropped
    at the end unless --keep.

    --anonymous: the index built at setup (anonymous, on a setup
    connection) is only a template. Each client uploads a copy of it as an
    anonymous index of its own connection, and each in-process client
    loads its own copy: in-memory indexes, as the Python drop-in's
    faiss.IndexFlatL2(d), nothing on the server's disk.

    Only loopback endpoints are accepted: this is a benchmark harness,
    not a tool to load other people's machines.

    Exit status: 0 when every request succeeded, 2 when some failed, 1
    when the run could not be set up.
*/
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "loadtest.h"
#include "fpx_runtime.h"

#define S_SETUP_TIMEOUT_MS  (30 * 60 * 1000)    //  training or filling a big index
#define S_CHUNK_BYTES       (16 * 1024 * 1024)  //  vectors per setup add
#define S_TRAIN_MAX         100000              //  training rows, at most
#define S_TRAIN_MIN         10000               //  … and at least
#define S_POOL_FLOATS_MAX   (INT64_C (1) << 27) //  512 MiB of vectors to add
#define S_QUERY_ROWS_MIN    10000

static void
s_usage (FILE *out)
{
    fprintf (out,
"Usage: fpx-loadtest --server E --api-key K [--workload search|add|mixed:R]\n"
"                    --factory F --dim D --nb N --nq Q --k K --clients C\n"
"                    [--pipeline P] (--requests R | --duration S) [--rate QPS]\n"
"                    [--anonymous] [--inprocess] [--json]\n"
"       fpx-loadtest --echo --payload BYTES [--reply-payload BYTES] --clients C\n"
"                    [--pipeline P] (--requests R | --duration S) [--rate QPS] [--json]\n"
"\n"
"Drives a faissproxyd over libfaissproxy and reports throughput and latency\n"
"percentiles (log-linear histogram, within 0.8 %%).\n"
"\n"
"  --server E         tcp://127.0.0.1:PORT, tcp://localhost:PORT, tcp://[::1]:PORT\n"
"                     or ipc://PATH (loopback only; default FAISS_PROXY_SERVER)\n"
"  --api-key K        API key; repeat it once per tenant for --tenants (tenant t\n"
"                     uses key t mod the number given; default FAISS_PROXY_API_KEY)\n"
"  --workload W       search (default), add, or mixed:R (R searches per add)\n"
"  --factory F        FAISS index_factory string of the index to create (Flat)\n"
"  --index NAME       use this existing index (in every tenant) instead\n"
"  --dim D            vector dimension (128)\n"
"  --nb N             vectors added to a created index before the run (10000)\n"
"  --nq Q             vectors per request: queries of a search, rows of an add (1)\n"
"  --k K              neighbours per query (10)\n"
"  --clients C        client threads, each with its own connection (1)\n"
"  --pipeline P       requests each client keeps in flight, 1-%d (1)\n"
"  --requests R       stop after R requests in all …\n"
"  --duration S       … or after S seconds\n"
"  --rate QPS         open loop: send QPS requests/s on a schedule, and count\n"
"                     latency from when each was due (closed loop without it)\n"
"  --tenants T        T tenants with one index each, clients spread over them (1)\n"
"  --inprocess        also run the identical workload on FAISS in this process\n"
"                     (same data, threads, OpenMP and OpenBLAS budget, and\n"
"                     OMP_WAIT_POLICY=PASSIVE and GLIBC_TUNABLES=\n"
"                     glibc.malloc.hugetlb=1 unless set, as faissproxyd), on a\n"
"                     downloaded copy of the server's index; without --server,\n"
"                     only that, on an index built here\n"
"  --data KIND        uniform (default) or clustered (64 Gaussian clusters)\n"
"  --seed N           data seed (1)\n"
"  --keep             do not drop the indexes created (JSON \"index\" names the first)\n"
"  --anonymous        each client works on an anonymous index of its own, on its\n"
"                     own connection: a copy of the index built at setup (or of\n"
"                     --index), uploaded before the clock starts; in-memory on\n"
"                     the server (a named index is durable: every write goes to\n"
"                     its log, docs/STORAGE.md), dropped when the client ends.\n"
"                     --inprocess then gives each client its own copy too\n"
"  --after-remote CMD run CMD (/bin/sh) when the remote run is over, while its\n"
"                     connections and their indexes still exist, with\n"
"                     FPX_LT_NTOTAL set to the vectors those indexes hold\n"
"  --warm-mb M        touch and free M MiB of memory just before each timed run\n"
"                     (0): on a VM that returns free memory to its host, memory\n"
"                     free for a while faults in several times slower than\n"
"                     memory freed a moment ago, and an add grows into fresh\n"
"                     memory; this gives remote and in-process the same start\n"
"  --rounds N         with --inprocess: alternate remote and in-process N times,\n"
"                     each round running 1/N of --requests or --duration, and\n"
"                     report each side over all its rounds (1): a slow spell\n"
"                     of the machine then falls on both sides alike\n"
"  --keep-awake       during the timed runs, keep every core busy with a\n"
"                     spinning thread of the lowest priority (SCHED_IDLE), which\n"
"                     yields to any other work: no core goes idle. On a VM an\n"
"                     idle vCPU halts, and waking a thread on it waits for the\n"
"                     host: a run without it, compared, shows that share of\n"
"                     the latency\n"
"  --json             print one JSON line with the results, last on stdout\n"
"  --echo             measure a raw ZeroMQ DEALER/ROUTER echo instead (an echo\n"
"                     server thread on a free loopback port)\n"
"  --payload BYTES    echo: request payload (512)\n"
"  --reply-payload B  echo: reply payload; -1 echoes the request (-1)\n"
"  --help, --version\n"
"\n"
"JSON fields: qps, p50_us, p90_us, p99_us, p999_us, max_us, mean_us, errors,\n"
"requests, seconds, mb_s (request vector bytes per second, 10^6 B), ntotal\n"
"(vectors in the indexes the clients used, after the run), setup_s, anonymous,\n"
"keep_awake;\n"
"with --inprocess, the same under \"inprocess\" and remote/in-process ratios\n"
"under \"ratio\". Exit status: 0 all requests succeeded, 2 some failed, 1 setup\n"
"failed.\n", LT_PIPELINE_MAX);
}

/* ---- options -------------------------------------------------------------------- */

static int
s_bad (const char *what, const char *value)
{
    fprintf (stderr, "fpx-loadtest: invalid %s '%s' (see --help)\n", what, value);
    return -1;
}

static int
s_int (const char *what, const char *text, int64_t min, int64_t max, int64_t *out)
{
    char *end;
    errno = 0;
    long long value = strtoll (text, &end, 10);
    if (errno || end == text || *end || value < min || value > max)
        return s_bad (what, text);
    *out = value;
    return 0;
}

static int
s_double (const char *what, const char *text, double min, double max, double *out)
{
    char *end;
    errno = 0;
    double value = strtod (text, &end);
    if (errno || end == text || *end || !(value >= min && value <= max))
        return s_bad (what, text);
    *out = value;
    return 0;
}

//  Loopback only: 127.0.0.0/8, localhost, ::1, or a local ipc:// path.
static bool
s_is_loopback (const char *endpoint)
{
    if (strncmp (endpoint, "ipc://", 6) == 0)
        return true;
    if (strncmp (endpoint, "tcp://", 6) != 0)
        return false;
    const char *host = endpoint + 6;
    return strncmp (host, "127.", 4) == 0 || strncmp (host, "localhost:", 10) == 0
        || strncmp (host, "[::1]:", 6) == 0;
}

static int
s_workload (lt_options_t *options, const char *text)
{
    int64_t ratio;
    if (strcmp (text, "search") == 0)
        options->workload = LT_WL_SEARCH;
    else
    if (strcmp (text, "add") == 0)
        options->workload = LT_WL_ADD;
    else
    if (strncmp (text, "mixed:", 6) == 0 && s_int ("mixed ratio", text + 6, 1, 1000000, &ratio) == 0) {
        options->workload = LT_WL_MIXED;
        options->mixed_ratio = (int) ratio;
    }
    else
        return s_bad ("workload", text);
    return 0;
}

enum {
    O_SERVER = 256, O_KEY, O_WORKLOAD, O_FACTORY, O_INDEX, O_DIM, O_NB, O_NQ, O_K, O_CLIENTS,
    O_PIPELINE, O_REQUESTS, O_DURATION, O_RATE, O_TENANTS, O_INPROCESS, O_JSON, O_DATA,
    O_SEED, O_KEEP, O_ECHO, O_PAYLOAD, O_REPLY_PAYLOAD, O_ANONYMOUS, O_AFTER_REMOTE, O_WARM_MB,
    O_ROUNDS, O_KEEP_AWAKE, O_HELP, O_VERSION
};

static int
s_option (lt_options_t *o, int code, const char *arg)
{
    int64_t v = 0;
    int rc = 0;
    switch (code) {
        case O_SERVER:    o->server = arg; break;
        case O_KEY:
            if (o->nkeys == LT_TENANTS_MAX)
                return s_bad ("--api-key (too many)", "…");
            if (strlen (arg) > 64)
                return s_bad ("--api-key (over 64 bytes)", "…");
            o->keys [o->nkeys++] = arg;
            break;
        case O_WORKLOAD:  return s_workload (o, arg);
        case O_FACTORY:   o->factory = arg; break;
        case O_INDEX:     o->index_name = arg; break;
        case O_DIM:       rc = s_int ("--dim", arg, 1, 65536, &v); o->dim = (int) v; break;
        case O_NB:        rc = s_int ("--nb", arg, 0, INT64_C (1) << 32, &o->nb); break;
        case O_NQ:        rc = s_int ("--nq", arg, 1, INT64_C (1) << 24, &o->nq); break;
        case O_K:         rc = s_int ("--k", arg, 1, 65536, &v); o->k = (int) v; break;
        case O_CLIENTS:   rc = s_int ("--clients", arg, 1, LT_CLIENTS_MAX, &v); o->clients = (int) v; break;
        case O_PIPELINE:  rc = s_int ("--pipeline", arg, 1, LT_PIPELINE_MAX, &v); o->pipeline = (int) v; break;
        case O_REQUESTS:  rc = s_int ("--requests", arg, 1, INT64_C (1) << 40, &o->requests); break;
        case O_DURATION:  rc = s_double ("--duration", arg, 0.001, 7 * 86400, &o->duration_s); break;
        case O_RATE:      rc = s_double ("--rate", arg, 0.001, 1e8, &o->rate); break;
        case O_TENANTS:   rc = s_int ("--tenants", arg, 1, LT_TENANTS_MAX, &v); o->tenants = (int) v; break;
        case O_INPROCESS: o->inprocess = true; break;
        case O_JSON:      o->json = true; break;
        case O_DATA:
            if (strcmp (arg, "uniform") == 0)
                o->data = LT_DATA_UNIFORM;
            else
            if (strcmp (arg, "clustered") == 0)
                o->data = LT_DATA_CLUSTERED;
            else
                return s_bad ("--data", arg);
            break;
        case O_SEED:      rc = s_int ("--seed", arg, 0, INT64_MAX, &v); o->seed = (uint64_t) v; break;
        case O_KEEP:      o->keep = true; break;
        case O_ANONYMOUS: o->anonymous = true; break;
        case O_AFTER_REMOTE: o->after_remote = arg; break;
        case O_WARM_MB:   rc = s_int ("--warm-mb", arg, 0, INT64_C (1) << 20, &o->warm_mb); break;
        case O_ROUNDS:    rc = s_int ("--rounds", arg, 1, 1000, &o->rounds); break;
        case O_KEEP_AWAKE: o->keep_awake = true; break;
        case O_ECHO:      o->echo = true; break;
        case O_PAYLOAD:   rc = s_int ("--payload", arg, 0, INT64_C (1) << 30, &o->payload); break;
        case O_REPLY_PAYLOAD:
            rc = s_int ("--reply-payload", arg, -1, INT64_C (1) << 30, &o->reply_payload);
            break;
        default:          return -1;
    }
    return rc;
}

//  Cross-checks once everything is read.
static int
s_options_check (lt_options_t *o)
{
    if ((o->requests > 0) == (o->duration_s > 0)) {
        fprintf (stderr, "fpx-loadtest: give exactly one of --requests and --duration\n");
        return -1;
    }
    if (o->rounds > 1 && (!o->inprocess || !o->server || o->echo || o->requests % o->rounds)) {
        fprintf (stderr, "fpx-loadtest: --rounds N needs --server and --inprocess, and "
                 "--requests a multiple of N\n");
        return -1;
    }
    if (o->echo)
        return 0;
    if (!o->server && !o->inprocess)
        o->server = getenv ("FAISS_PROXY_SERVER");
    if (!o->server && !o->inprocess) {
        fprintf (stderr, "fpx-loadtest: --server is required (or --inprocess alone)\n");
        return -1;
    }
    if (o->server && !s_is_loopback (o->server)) {
        fprintf (stderr, "fpx-loadtest: %s is not a loopback endpoint; this harness only "
                 "loads tcp://127.x.x.x, localhost, [::1] or ipc://\n", o->server);
        return -1;
    }
    if (o->index_name && !o->server) {
        fprintf (stderr, "fpx-loadtest: --index needs --server (the index lives there)\n");
        return -1;
    }
    if ((o->anonymous || o->after_remote) && !o->server) {
        fprintf (stderr, "fpx-loadtest: --anonymous and --after-remote need --server\n");
        return -1;
    }
    if (o->anonymous && o->keep) {
        fprintf (stderr, "fpx-loadtest: --anonymous indexes cannot be kept: they end with "
                 "their connection\n");
        return -1;
    }
    return 0;
}

static int
s_parse (lt_options_t *o, int argc, char **argv)
{
    static const struct option longs [] = {
        { "server", required_argument, NULL, O_SERVER },
        { "api-key", required_argument, NULL, O_KEY },
        { "workload", required_argument, NULL, O_WORKLOAD },
        { "factory", required_argument, NULL, O_FACTORY },
        { "index", required_argument, NULL, O_INDEX },
        { "dim", required_argument, NULL, O_DIM },
        { "nb", required_argument, NULL, O_NB },
        { "nq", required_argument, NULL, O_NQ },
        { "k", required_argument, NULL, O_K },
        { "clients", required_argument, NULL, O_CLIENTS },
        { "pipeline", required_argument, NULL, O_PIPELINE },
        { "requests", required_argument, NULL, O_REQUESTS },
        { "duration", required_argument, NULL, O_DURATION },
        { "rate", required_argument, NULL, O_RATE },
        { "tenants", required_argument, NULL, O_TENANTS },
        { "inprocess", no_argument, NULL, O_INPROCESS },
        { "json", no_argument, NULL, O_JSON },
        { "data", required_argument, NULL, O_DATA },
        { "seed", required_argument, NULL, O_SEED },
        { "keep", no_argument, NULL, O_KEEP },
        { "echo", no_argument, NULL, O_ECHO },
        { "payload", required_argument, NULL, O_PAYLOAD },
        { "reply-payload", required_argument, NULL, O_REPLY_PAYLOAD },
        { "anonymous", no_argument, NULL, O_ANONYMOUS },
        { "after-remote", required_argument, NULL, O_AFTER_REMOTE },
        { "warm-mb", required_argument, NULL, O_WARM_MB },
        { "rounds", required_argument, NULL, O_ROUNDS },
        { "keep-awake", no_argument, NULL, O_KEEP_AWAKE },
        { "help", no_argument, NULL, O_HELP },
        { "version", no_argument, NULL, O_VERSION },
        { NULL, 0, NULL, 0 }
    };
    *o = (lt_options_t) {
        .workload = LT_WL_SEARCH, .factory = "Flat", .dim = 128, .nb = 10000, .nq = 1,
        .k = 10, .clients = 1, .pipeline = 1, .tenants = 1, .data = LT_DATA_UNIFORM, .rounds = 1,
        .seed = 1, .payload = 512, .reply_payload = -1
    };
    int code;
    opterr = 0;
    while ((code = getopt_long (argc, argv, "", longs, NULL)) != -1) {
        if (code == O_HELP) {
            s_usage (stdout);
            exit (0);
        }
        if (code == O_VERSION) {
            int major, minor, patch;
            zmq_version (&major, &minor, &patch);
            //  FAISS as linked here, for --inprocess (the Makefile reads
            //  the version from FAISS's headers).
            printf ("fpx-loadtest %s (FAISS %s, libzmq %d.%d.%d)\n", FPX_VERSION_STRING,
                    FPX_FAISS_VERSION, major, minor, patch);
            exit (0);
        }
        if (code == '?') {
            fprintf (stderr, "fpx-loadtest: unknown option or missing value: %s (see --help)\n",
                     argv [optind - 1]);
            return -1;
        }
        if (s_option (o, code, optarg))
            return -1;
    }
    if (optind < argc) {
        fprintf (stderr, "fpx-loadtest: unexpected argument '%s'\n", argv [optind]);
        return -1;
    }
    return s_options_check (o);
}

/* ---- data ------------------------------------------------------------------------- */

static int64_t
s_round_up (int64_t value, int64_t multiple)
{
    return (value + multiple - 1) / multiple * multiple;
}

//  Queries for every run, vectors to add for add and mixed workloads.
static int
s_pool_make (const lt_options_t *o, lt_pool_t *pool)
{
    *pool = (lt_pool_t) { .d = o->dim };
    if (o->echo) {
        pool->payload = calloc (1, (size_t) o->payload + 1);
        for (int64_t i = 0; pool->payload && i < o->payload; i++)
            pool->payload [i] = (uint8_t) (i * 131);
        return pool->payload ? 0 : -1;
    }
    int64_t floats_max = S_POOL_FLOATS_MAX;
    int64_t rows_max = floats_max / o->dim / o->nq * o->nq;
    if (rows_max < o->nq)
        rows_max = o->nq;
    if (o->workload != LT_WL_ADD) {
        pool->query_rows = s_round_up (S_QUERY_ROWS_MIN > 16 * o->nq ? S_QUERY_ROWS_MIN : 16 * o->nq,
                                       o->nq);
        if (pool->query_rows > rows_max)
            pool->query_rows = rows_max;
        pool->queries = malloc ((size_t) pool->query_rows * (size_t) o->dim * sizeof (float));
        if (!pool->queries)
            return -1;
        lt_data_fill (pool->queries, pool->query_rows, o->dim, o->seed, o->data,
                      LT_STREAM_QUERY, 0);
    }
    if (o->workload != LT_WL_SEARCH) {
        //  Distinct rows for every add of a --requests run, as far as the
        //  cap allows; a --duration run cycles through a smaller set.
        int64_t adds = o->requests
                     ? (o->workload == LT_WL_ADD ? o->requests : o->requests / (o->mixed_ratio + 1) + 1)
                     : 16;
        pool->add_rows = adds * o->nq < rows_max ? adds * o->nq : rows_max;
        pool->adds = malloc ((size_t) pool->add_rows * (size_t) o->dim * sizeof (float));
        if (!pool->adds)
            return -1;
        lt_data_fill (pool->adds, pool->add_rows, o->dim, o->seed, o->data, LT_STREAM_ADD, 0);
    }
    return 0;
}

static void
s_pool_free (lt_pool_t *pool)
{
    free (pool->queries);
    free (pool->adds);
    free (pool->payload);
}

static int64_t
s_ntrain (const lt_options_t *o)
{
    int64_t n = o->nb;
    if (n < S_TRAIN_MIN)
        n = S_TRAIN_MIN;
    return n > S_TRAIN_MAX ? S_TRAIN_MAX : n;
}

/* ---- remote setup ------------------------------------------------------------------ */

static const char *
s_key (const lt_options_t *o, int tenant)
{
    return o->nkeys ? o->keys [tenant % o->nkeys] : NULL;
}

static int
s_remote_fail (fpx_client_t *client, const char *what, const char *name)
{
    fprintf (stderr, "fpx-loadtest: %s %s: %s\n", what, name, fpx_client_errmsg (client));
    return -1;
}

//  Trains (when needed) and fills a freshly created index, in chunks of
//  generated rows: the same rows lt_inproc_build uses.
static int
s_remote_fill (fpx_client_t *client, const lt_options_t *o, const char *name, bool trained)
{
    int64_t chunk = S_CHUNK_BYTES / ((int64_t) o->dim * 4);
    if (chunk < 1)
        chunk = 1;
    int64_t ntrain = s_ntrain (o);
    int64_t rows = trained ? chunk : (ntrain > chunk ? ntrain : chunk);
    float *x = malloc ((size_t) rows * (size_t) o->dim * sizeof *x);
    if (!x) {
        fprintf (stderr, "fpx-loadtest: out of memory\n");
        return -1;
    }
    int rc = 0;
    if (!trained) {
        lt_data_fill (x, ntrain, o->dim, o->seed, o->data, LT_STREAM_TRAIN, 0);
        if (fpx_train (client, name, ntrain, o->dim, x))
            rc = s_remote_fail (client, "cannot train", name);
    }
    for (int64_t first = 0; rc == 0 && first < o->nb; first += chunk) {
        int64_t n = o->nb - first < chunk ? o->nb - first : chunk;
        lt_data_fill (x, n, o->dim, o->seed, o->data, LT_STREAM_BASE, first);
        if (fpx_add (client, name, n, o->dim, x, NULL))
            rc = s_remote_fail (client, "cannot add to", name);
    }
    free (x);
    return rc;
}

//  --anonymous: the serialized index every client of tenant t copies
//  (targets->names [t] on client's connection). An anonymous index built
//  for it is dropped here, so that the server has freed it before the run.
static int
s_remote_template (fpx_client_t *client, const lt_options_t *o, lt_targets_t *targets, int t)
{
    const char *name = targets->names [t];
    int rc = 0;
    if (fpx_serialize (client, name, &targets->templates [t], &targets->template_sizes [t]))
        rc = s_remote_fail (client, "cannot download", name);
    if (!o->index_name && fpx_index_drop (client, name) && rc == 0)
        rc = s_remote_fail (client, "cannot drop", name);
    targets->names [t][0] = 0;
    return rc;
}

//  Creates (or opens, with --index) each tenant's index. *created counts
//  the indexes made here, for s_remote_drop. With --anonymous the index
//  only serves as a template (s_remote_template).
static int
s_remote_setup (lt_options_t *o, lt_targets_t *targets, int *created)
{
    *created = 0;
    for (int t = 0; t < o->tenants; t++) {
        fpx_client_t *client = fpx_client_new (o->server, s_key (o, t));
        if (!client) {
            fprintf (stderr, "fpx-loadtest: cannot create a client for %s\n", o->server);
            return -1;
        }
        fpx_client_set_timeout (client, S_SETUP_TIMEOUT_MS);
        fpx_index_info_t info;
        int rc = 0;
        if (o->index_name) {
            snprintf (targets->names [t], sizeof targets->names [t], "%s", o->index_name);
            rc = fpx_index_open (client, o->index_name, &info);
            if (rc)
                s_remote_fail (client, "cannot open index", o->index_name);
            else
            if (t > 0 && info.d != o->dim) {
                fprintf (stderr, "fpx-loadtest: %s has d=%d in tenant %d, %d in tenant 0\n",
                         o->index_name, info.d, t, o->dim);
                rc = -1;
            }
            else {
                o->dim = info.d;
                o->nb = info.ntotal;
            }
        }
        else
        if (o->anonymous) {
            //  The template: built here, downloaded, dropped.
            rc = fpx_index_create (client, NULL, o->dim, o->factory, FPX_METRIC_L2, &info);
            if (rc)
                s_remote_fail (client, "cannot create an anonymous index", o->factory);
            else {
                snprintf (targets->names [t], sizeof targets->names [t], "%s", info.name);
                rc = s_remote_fill (client, o, targets->names [t], info.is_trained);
            }
        }
        else {
            snprintf (targets->names [t], sizeof targets->names [t], "fpxlt-%d-%d",
                      (int) getpid (), t);
            rc = fpx_index_create (client, targets->names [t], o->dim, o->factory,
                                   FPX_METRIC_L2, &info);
            if (rc)
                s_remote_fail (client, "cannot create index", targets->names [t]);
            else {
                ++*created;
                rc = s_remote_fill (client, o, targets->names [t], info.is_trained);
            }
        }
        if (rc == 0 && o->anonymous)
            rc = s_remote_template (client, o, targets, t);
        fpx_client_destroy (&client);
        if (rc)
            return -1;
    }
    return 0;
}

static void
s_remote_drop (const lt_options_t *o, lt_targets_t *targets, int created)
{
    for (int t = 0; t < created; t++) {
        fpx_client_t *client = fpx_client_new (o->server, s_key (o, t));
        if (client && fpx_index_drop (client, targets->names [t]))
            fprintf (stderr, "fpx-loadtest: cannot drop %s: %s\n", targets->names [t],
                     fpx_client_errmsg (client));
        fpx_client_destroy (&client);
    }
}

/* ---- in-process setup ---------------------------------------------------------------- */

//  The server's index itself, downloaded and loaded.
static void *
s_inproc_download (const lt_options_t *o, const char *name, int tenant)
{
    fpx_client_t *client = fpx_client_new (o->server, s_key (o, tenant));
    if (!client)
        return NULL;
    fpx_client_set_timeout (client, S_SETUP_TIMEOUT_MS);
    uint8_t *bytes = NULL;
    size_t size = 0;
    void *index = NULL;
    if (fpx_serialize (client, name, &bytes, &size))
        s_remote_fail (client, "cannot download", name);
    else
        index = lt_inproc_load (bytes, size);
    fpx_free (bytes);
    fpx_client_destroy (&client);
    return index;
}

//  With a server, the in-process indexes are copies of the server's
//  (downloaded once set up): the very same structure, so that an HNSW
//  graph or IVF clustering built twice cannot differ in cost, and the
//  build is paid once. Without a server they are built from the same
//  generated data.
static int
s_inproc_setup (const lt_options_t *o, lt_targets_t *targets)
{
    if (o->anonymous)
        return 0;           //  each client loads its own copy (inproc.c)
    for (int t = 0; t < o->tenants; t++) {
        targets->local [t] = o->server ? s_inproc_download (o, targets->names [t], t)
                                       : lt_inproc_build (o, s_ntrain (o));
        if (!targets->local [t])
            return -1;
    }
    return 0;
}

/* ---- report ------------------------------------------------------------------------------ */

static double
s_us (const lt_hist_t *hist, double q)
{
    return (double) lt_hist_quantile (hist, q) / 1e3;
}

static double
s_qps (const lt_result_t *r)
{
    return r->seconds > 0 ? (double) (r->requests - r->errors) / r->seconds : 0;
}

static double
s_mb_s (const lt_result_t *r)
{
    return r->seconds > 0 ? (double) r->bytes / r->seconds / 1e6 : 0;
}

static double
s_mean_us (const lt_hist_t *hist)
{
    return hist->total ? (double) hist->sum_ns / (double) hist->total / 1e3 : 0;
}

static const char *
s_workload_name (const lt_options_t *o, char *buf, size_t size)
{
    if (o->echo)
        return "echo";
    if (o->workload == LT_WL_MIXED) {
        snprintf (buf, size, "mixed:%d", o->mixed_ratio);
        return buf;
    }
    return o->workload == LT_WL_ADD ? "add" : "search";
}

//  The figures of a result, by row of the table.
typedef enum { M_REQUESTS, M_ERRORS, M_SECONDS, M_QPS, M_MB_S, M_MEAN, M_P50, M_P90, M_P99,
               M_P999, M_MAX } s_metric_t;

static double
s_metric (const lt_result_t *r, s_metric_t metric)
{
    switch (metric) {
        case M_REQUESTS: return (double) r->requests;
        case M_ERRORS:   return (double) r->errors;
        case M_SECONDS:  return r->seconds;
        case M_QPS:      return s_qps (r);
        case M_MB_S:     return s_mb_s (r);
        case M_MEAN:     return s_mean_us (&r->hist);
        case M_P50:      return s_us (&r->hist, 0.50);
        case M_P90:      return s_us (&r->hist, 0.90);
        case M_P99:      return s_us (&r->hist, 0.99);
        case M_P999:     return s_us (&r->hist, 0.999);
        case M_MAX:      return (double) r->hist.max_ns / 1e3;
    }
    return 0;
}

static void
s_table (const lt_options_t *o, const lt_result_t *a, const lt_result_t *b, double setup_s)
{
    static const struct {
        const char *label, *format;
        s_metric_t metric;
        bool ratio;
    } rows [] = {
        { "requests", "%12.0f", M_REQUESTS, false }, { "errors", "%12.0f", M_ERRORS, false },
        { "seconds", "%12.2f", M_SECONDS, false },   { "req/s", "%12.1f", M_QPS, true },
        { "MB/s", "%12.1f", M_MB_S, true },          { "mean us", "%12.1f", M_MEAN, true },
        { "p50 us", "%12.1f", M_P50, true },         { "p90 us", "%12.1f", M_P90, true },
        { "p99 us", "%12.1f", M_P99, true },         { "p99.9 us", "%12.1f", M_P999, true },
        { "max us", "%12.1f", M_MAX, true },
    };
    char buf [32];
    printf ("\nfpx-loadtest: %s", s_workload_name (o, buf, sizeof buf));
    if (o->echo)
        printf (", payload %lld B, reply %lld B", (long long) o->payload,
                (long long) o->reply_payload);
    else
        printf (", %s%s d=%d nb=%lld nq=%lld k=%d", o->index_name ? o->index_name : o->factory,
                o->anonymous ? " (anonymous, one per client)" : "", o->dim, (long long) o->nb,
                (long long) o->nq, o->k);
    printf (", %d client(s) x pipeline %d, %d tenant(s), %s loop; setup %.1f s\n", o->clients,
            o->pipeline, o->tenants, o->rate > 0 ? "open" : "closed", setup_s);
    printf ("  %-12s%12s", "", a->mode);
    if (b)
        printf ("%12s  %10s", b->mode, "ratio");
    printf ("\n");
    for (size_t i = 0; i < sizeof rows / sizeof rows [0]; i++) {
        double va = s_metric (a, rows [i].metric);
        printf ("  %-12s", rows [i].label);
        printf (rows [i].format, va);
        if (b) {
            double vb = s_metric (b, rows [i].metric);
            printf (rows [i].format, vb);
            if (rows [i].ratio && vb > 0)
                printf ("  %10.3f", va / vb);
        }
        printf ("\n");
    }
    if (o->tenants > 1)
        for (int t = 0; t < o->tenants; t++)
            printf ("  tenant %-3d  %s: %llu requests, p50 %.1f us, p99 %.1f us\n", t, a->mode,
                    (unsigned long long) a->tenant_requests [t], s_us (&a->tenant_hist [t], 0.5),
                    s_us (&a->tenant_hist [t], 0.99));
}

static void
s_json_string (const char *text)
{
    putchar ('"');
    for (const unsigned char *c = (const unsigned char *) text; *c; c++)
        if (*c == '"' || *c == '\\')
            printf ("\\%c", *c);
        else
        if (*c < 0x20)
            printf ("\\u%04x", *c);
        else
            putchar (*c);
    putchar ('"');
}

static void
s_json_stats (const lt_result_t *r)
{
    printf ("\"mode\":\"%s\",\"requests\":%llu,\"errors\":%llu,\"seconds\":%.4f,"
            "\"qps\":%.2f,\"mb_s\":%.3f,\"mean_us\":%.2f,\"p50_us\":%.2f,\"p90_us\":%.2f,"
            "\"p99_us\":%.2f,\"p999_us\":%.2f,\"max_us\":%.2f",
            r->mode, (unsigned long long) r->requests, (unsigned long long) r->errors,
            r->seconds, s_qps (r), s_mb_s (r), s_mean_us (&r->hist), s_us (&r->hist, 0.5),
            s_us (&r->hist, 0.9), s_us (&r->hist, 0.99), s_us (&r->hist, 0.999),
            (double) r->hist.max_ns / 1e3);
    if (r->ntotal >= 0)
        printf (",\"ntotal\":%lld", (long long) r->ntotal);
}

static double
s_ratio (double a, double b)
{
    return b > 0 ? a / b : 0;
}

static void
s_json (const lt_options_t *o, const lt_targets_t *targets, const lt_result_t *a,
        const lt_result_t *b, double setup_s)
{
    char buf [32];
    printf ("{\"tool\":\"fpx-loadtest\",\"version\":\"%s\",\"workload\":", FPX_VERSION_STRING);
    s_json_string (s_workload_name (o, buf, sizeof buf));
    if (o->echo)
        printf (",\"payload\":%lld,\"reply_payload\":%lld", (long long) o->payload,
                (long long) o->reply_payload);
    else {
        printf (",\"factory\":");
        s_json_string (o->index_name ? "" : o->factory);
        printf (",\"index\":");
        if (o->server && (!o->anonymous || o->index_name))
            s_json_string (o->anonymous ? o->index_name : targets->names [0]);
        else
            printf ("null");
        printf (",\"anonymous\":%s", o->anonymous ? "true" : "false");
        printf (",\"index_kept\":%s", o->server && (o->keep || o->index_name) ? "true" : "false");
        printf (",\"dim\":%d,\"nb\":%lld,\"nq\":%lld,\"k\":%d,\"data\":\"%s\",\"seed\":%llu",
                o->dim, (long long) o->nb, (long long) o->nq, o->k,
                o->data == LT_DATA_CLUSTERED ? "clustered" : "uniform",
                (unsigned long long) o->seed);
    }
    printf (",\"clients\":%d,\"pipeline\":%d,\"tenants\":%d,\"rate\":%.3f,\"rounds\":%lld,"
            "\"keep_awake\":%s,\"setup_s\":%.3f,", o->clients, o->pipeline, o->tenants, o->rate,
            (long long) o->rounds, o->keep_awake ? "true" : "false", setup_s);
    s_json_stats (a);
    printf (",\"tenant_stats\":[");
    for (int t = 0; t < o->tenants; t++)
        printf ("%s{\"tenant\":%d,\"requests\":%llu,\"errors\":%llu,\"p50_us\":%.2f,\"p99_us\":%.2f}",
                t ? "," : "", t, (unsigned long long) a->tenant_requests [t],
                (unsigned long long) a->tenant_errors [t], s_us (&a->tenant_hist [t], 0.5),
                s_us (&a->tenant_hist [t], 0.99));
    printf ("]");
    if (b) {
        printf (",\"inprocess\":{");
        s_json_stats (b);
        printf ("},\"ratio\":{\"qps\":%.4f,\"mb_s\":%.4f,\"p50\":%.4f,\"p90\":%.4f,\"p99\":%.4f,"
                "\"p50_diff_us\":%.2f}",
                s_ratio (s_qps (a), s_qps (b)), s_ratio (s_mb_s (a), s_mb_s (b)),
                s_ratio (s_us (&a->hist, 0.5), s_us (&b->hist, 0.5)),
                s_ratio (s_us (&a->hist, 0.9), s_us (&b->hist, 0.9)),
                s_ratio (s_us (&a->hist, 0.99), s_us (&b->hist, 0.99)),
                s_us (&a->hist, 0.5) - s_us (&b->hist, 0.5));
    }
    printf ("}\n");
}

/* ---- main ------------------------------------------------------------------------------- */

static lt_result_t s_results [2];

//  Adds one round's result into the sum of a side's rounds.
static void
s_result_add (lt_result_t *sum, const lt_result_t *round)
{
    sum->mode = round->mode;
    lt_hist_merge (&sum->hist, &round->hist);
    sum->requests += round->requests;
    sum->errors += round->errors;
    sum->bytes += round->bytes;
    sum->seconds += round->seconds;
    sum->ntotal = round->ntotal;
    for (int t = 0; t < LT_TENANTS_MAX; t++) {
        lt_hist_merge (&sum->tenant_hist [t], &round->tenant_hist [t]);
        sum->tenant_requests [t] += round->tenant_requests [t];
        sum->tenant_errors [t] += round->tenant_errors [t];
    }
}

//  --rounds: remote, in-process, remote, … each on its share of the work;
//  the after-remote command runs after the last remote round.
static int
s_run_rounds (const lt_options_t *o, lt_targets_t *targets, const lt_pool_t *pool,
              bool progress, int *nresults)
{
    static lt_result_t round;
    lt_options_t share = *o;
    share.requests = o->requests / o->rounds;
    share.duration_s = o->duration_s / (double) o->rounds;
    memset (s_results, 0, sizeof s_results);
    for (int side = 0; side < 2; side++) {
        lt_hist_reset (&s_results [side].hist);
        for (int t = 0; t < LT_TENANTS_MAX; t++)
            lt_hist_reset (&s_results [side].tenant_hist [t]);
    }
    for (int64_t r = 0; r < o->rounds; r++) {
        bool last = r + 1 == o->rounds;
        if (lt_drive (&share, pool, targets, &lt_engine_remote, progress,
                      last ? o->after_remote : NULL, &round))
            return -1;
        s_result_add (&s_results [0], &round);
        if (lt_drive (&share, pool, targets, &lt_engine_inproc, progress, NULL, &round))
            return -1;
        s_result_add (&s_results [1], &round);
    }
    *nresults = 2;
    return 0;
}

static int
s_run (lt_options_t *o, lt_targets_t *targets, const lt_pool_t *pool, double setup_s)
{
    bool progress = isatty (STDERR_FILENO);
    int nresults = 0, rc = 0;
    if (o->echo) {
        targets->echo_endpoint = lt_echo_start (o->reply_payload);
        if (!targets->echo_endpoint)
            return 1;
        rc = lt_drive (o, pool, targets, &lt_engine_echo, progress, NULL, &s_results [nresults++]);
        lt_echo_stop ();
    }
    else if (o->rounds > 1)
        rc = s_run_rounds (o, targets, pool, progress, &nresults);
    else {
        if (o->server)
            rc = lt_drive (o, pool, targets, &lt_engine_remote, progress, o->after_remote,
                           &s_results [nresults++]);
        if (rc == 0 && o->inprocess)
            rc = lt_drive (o, pool, targets, &lt_engine_inproc, progress, NULL,
                           &s_results [nresults++]);
    }
    if (rc)
        return 1;
    const lt_result_t *b = nresults > 1 ? &s_results [1] : NULL;
    s_table (o, &s_results [0], b, setup_s);
    if (o->json)
        s_json (o, targets, &s_results [0], b, setup_s);
    fflush (stdout);
    uint64_t errors = s_results [0].errors + (b ? b->errors : 0);
    return errors ? 2 : 0;
}

int
main (int argc, char **argv)
{
    //  The in-process baseline runs FAISS with faissproxyd's own runtime
    //  settings (common/fpx_runtime.c): with libgomp's default active wait, a
    //  Flat batch search in-process ran 2.5 times slower than the same
    //  search in the server; with 4 KiB pages, an add that grows a Flat
    //  index here spent most of its time in page faults.
    fpx_runtime_defaults (argv);
    lt_options_t options;
    if (s_parse (&options, argc, argv))
        return 1;
    lt_options_t *o = &options;
    static lt_targets_t targets;
    for (int t = 0; t < LT_TENANTS_MAX; t++)
        pthread_rwlock_init (&targets.local_lock [t], NULL);
    int64_t setup_start = lt_now_ns ();
    int created = 0, rc = 0;
    if (!o->echo && o->server)
        rc = s_remote_setup (o, &targets, &created);
    lt_pool_t pool = { 0 };
    if (rc == 0 && s_pool_make (o, &pool)) {
        fprintf (stderr, "fpx-loadtest: out of memory for the data\n");
        rc = -1;
    }
    if (rc == 0 && !o->echo && o->inprocess)
        rc = s_inproc_setup (o, &targets);
    double setup_s = (double) (lt_now_ns () - setup_start) / 1e9;
    if (rc == 0 && o->keep_awake && lt_awake_start ())
        rc = -1;
    int status = rc ? 1 : s_run (o, &targets, &pool, setup_s);
    if (o->keep_awake)
        lt_awake_stop ();
    s_pool_free (&pool);
    for (int t = 0; t < o->tenants; t++) {
        lt_inproc_free (targets.local [t]);
        fpx_free (targets.templates [t]);
    }
    if (!o->keep)
        s_remote_drop (o, &targets, created);
    return status;
}
