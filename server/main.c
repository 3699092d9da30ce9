/*  main.c — faissproxyd: flags, API keys, signals, start and orderly stop.
    All policy about what a request may do lives in broker.c and ops.c.  */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>
#include <stdbool.h>

#include "auth.h"
#include "broker.h"
#include "budget.h"
#include "clock.h"
#include "faiss_shim.h"
#include "fpx_runtime.h"
#include "interrupt.h"
#include "metrics_http.h"
#include "rebuild.h"
#include "storage.h"
#include "tenant_limits.h"
#include "transfers.h"
#include "worker.h"
#include "zap.h"

static int s_signal_write_fd = -1;

//  Async-signal-safe: passes the signal number to the broker's poll.
static void
s_on_signal (int signo)
{
    unsigned char byte = (unsigned char) signo;
    int saved = errno;
    if (write (s_signal_write_fd, &byte, 1) < 0)
        (void) 0;               //  pipe full: a stop is already pending
    errno = saved;
}

static void
s_usage (FILE *out)
{
    fprintf (out,
"Usage: faissproxyd [OPTIONS]\n"
"Serves FAISS indexes to many tenants over ZeroMQ (protocol version %d).\n"
"\n"
"  --config FILE        read options from FILE first, one 'OPTION = VALUE' (or\n"
"                       'OPTION VALUE') a line, OPTION any option below without\n"
"                       '--'; '#' starts a comment; an unknown option stops the\n"
"                       start; options on the command line override the file's\n"
"                       (--bind and --curve-clients-file replace its list; keys\n"
"                       from both are accepted)\n"
"  --bind ENDPOINT      listen on ENDPOINT (tcp://HOST:PORT or ipc://PATH; PORT *\n"
"                       or PATH *: one the system picks); repeatable; default\n"
"                       tcp://127.0.0.1:5555. Once listening, prints a line\n"
"                       'faissproxyd listening on ENDPOINT' per bind on stdout,\n"
"                       the endpoint as bound (the port picked)\n"
"  --endpoint-file PATH  once listening, write the endpoints as bound there, one\n"
"                       a line, then the metrics URL (http://HOST:PORT) if any\n"
"                       (written whole: a new file renamed into place)\n"
"  --workers N          worker threads calling FAISS (default: number of cores)\n"
"  --api-key TENANT:KEY accept KEY for TENANT (role admin); repeatable; the key\n"
"                       is visible to local users: prefer --keys-file\n"
"  --keys-file FILE     'TENANT ROLE HASH' lines from 'faissproxy keygen TENANT ROLE'\n"
"                       (ROLE read, write or admin; legacy 'TENANT KEY' lines: admin;\n"
"                       '#' starts a comment)\n"
"  --curve-secret-file FILE  encrypt every connection with CurveZMQ using the\n"
"                       server key pair in FILE (faissproxy keygen --curve FILE;\n"
"                       refused unless only its owner may read it)\n"
"  --curve-clients-file FILE  with CURVE, accept only the client public keys listed\n"
"                       (one per line); default: any CURVE client\n"
"  --data-dir DIR       directory for durable data (default ./data)\n"
"  --max-message-mb N   largest request in MiB, all frames together (default 256)\n"
"  --max-queue N        requests waiting for a worker before FPX_EBUSY (default 10000)\n"
"  --fsync MODE         always, batch (default) or never: when a logged write is\n"
"                       forced to disk before it is acknowledged (docs/STORAGE.md)\n"
"  --snapshot-log-mb N  snapshot an index when its log passes N MiB (default 256)\n"
"  --snapshot-interval-s N  … or when it has had writes for N s (default 300)\n"
"  --rebuild-background-min N  remove_ids on an HNSW index of N vectors or more\n"
"                       rebuilds its graph in the background, searches served\n"
"                       meanwhile without the removed vectors (default 100000;\n"
"                       0: always in the request)\n"
"  --spin-us N          after each message, look for the next one for N µs\n"
"                       before sleeping (0 - 100000, default 0: sleep at once)\n"
"  --log-level LEVEL    error, warn, info (default) or debug (a line per request)\n"
"  --log-format FORMAT  text (default) or json (one object a line)\n"
"  --metrics-bind HOST:PORT  serve HTTP GET /metrics (Prometheus), /metrics.json\n"
"                       and / (a dashboard) on HOST:PORT (PORT 0: one the system\n"
"                       picks, printed as 'faissproxyd metrics on URL'); no\n"
"                       authentication: keep it on loopback (default: off;\n"
"                       docs/OPERATIONS.md)\n"
"\n"
"Limits (docs/SECURITY.md, 'Limits, quotas and fairness'):\n"
"  --default-tenant-limits \"KEY=N,…\"  quotas of every tenant; keys:\n"
"                       max_indexes (default %d), max_vectors (%d),\n"
"                       max_memory_mb (%d, serialized size of its indexes),\n"
"                       max_disk_mb (%d, snapshots + logs of its named indexes),\n"
"                       max_inflight (%d requests queued + running),\n"
"                       deadline_ms (%d, from arrival; 0 = none); 0 = unlimited\n"
"  --tenant-limits FILE lines 'TENANT KEY=N …' overriding the defaults\n"
"  --max-memory-mb N    above N MiB resident, refuse requests that would grow\n"
"                       memory with FPX_ENOMEM (default 0: no limit)\n"
"  --memory-budget-mb N  keep named indexes within N MiB (serialized size) in\n"
"                       memory: the least recently used are evicted to their\n"
"                       snapshot and loaded back on use (default 0: all loaded;\n"
"                       docs/OPERATIONS.md)\n"
"  --max-conn-inflight N  requests in flight per connection (default 1024)\n"
"  --max-conn-unread-mb N  reply bytes a connection has not read yet before\n"
"                       its requests get FPX_EBUSY (default 1024)\n"
"  --max-unauthenticated-mb N  what the unfinished messages of connections that\n"
"                       have sent no valid key yet may hold together; past it\n"
"                       the largest are cut (default: 2 x --max-message-mb + 16)\n"
"  --auth-delay-max-ms N  after failed authentications, an address's requests\n"
"                       wait up to N ms (default 2000; 0: no wait, still logged)\n"
"  --help, --version\n"
"\n"
"FAISS_PROXY_API_KEY in the environment adds a key for tenant 'default'.\n"
"Unless set, OMP_WAIT_POLICY=PASSIVE, glibc.malloc.hugetlb=1 and\n"
"glibc.malloc.mmap_threshold=4194304 (in GLIBC_TUNABLES) are set, and the\n"
"server re-executes itself once.\n"
"With no key at all, a key for tenant 'default' is generated and printed.\n"
"Keys are 1-%d bytes; tenant names follow index-name rules.\n"
"SIGINT/SIGTERM: stop accepting, finish the requests in flight, exit 0.\n",
             FPX_PROTOCOL_VERSION, FPX_DEFAULT_MAX_INDEXES, FPX_DEFAULT_MAX_VECTORS,
             FPX_DEFAULT_MAX_MEMORY_MB, FPX_DEFAULT_MAX_DISK_MB, FPX_DEFAULT_MAX_INFLIGHT,
             FPX_DEFAULT_DEADLINE_MS,
             FPX_API_KEY_MAX);
}

static uint32_t
s_tenant_id (fpx_config_t *config, const char *tenant)
{
    for (int i = 0; i < config->ntenants; i++)
        if (strcmp (config->tenants [i], tenant) == 0)
            return (uint32_t) i;
    config->tenants = realloc (config->tenants, (size_t) (config->ntenants + 1) * sizeof *config->tenants);
    if (!config->tenants) {
        fprintf (stderr, "faissproxyd: out of memory\n");
        exit (1);
    }
    snprintf (config->tenants [config->ntenants], sizeof config->tenants [0], "%s", tenant);
    return (uint32_t) config->ntenants++;
}

//  Adds a key by its hash (auth.h) with a role.
static int
s_add_key_hash (fpx_config_t *config, const char *tenant, size_t tenant_len,
                const uint8_t hash [FPX_KEY_HASH_SIZE], int role)
{
    if (!fpx_name_is_valid (tenant, tenant_len)) {
        fprintf (stderr, "faissproxyd: invalid tenant name '%.*s' (index-name rules)\n",
                 (int) tenant_len, tenant);
        return -1;
    }
    fpx_key_t *keys = realloc (config->keys, (size_t) (config->nkeys + 1) * sizeof *keys);
    if (!keys)
        return -1;
    config->keys = keys;
    fpx_key_t *entry = &keys [config->nkeys++];
    memset (entry, 0, sizeof *entry);
    memcpy (entry->tenant, tenant, tenant_len);
    memcpy (entry->hash, hash, FPX_KEY_HASH_SIZE);
    entry->role = role;
    entry->tenant_id = s_tenant_id (config, entry->tenant);
    return 0;
}

//  Adds a plaintext key: checked, hashed; only the hash is kept.
static int
s_add_key (fpx_config_t *config, const char *tenant, size_t tenant_len, const char *key, int role)
{
    size_t key_len = strlen (key);
    if (key_len == 0 || key_len > FPX_API_KEY_MAX) {
        fprintf (stderr, "faissproxyd: invalid key for tenant '%.*s' (1-%d bytes)\n",
                 (int) tenant_len, tenant, FPX_API_KEY_MAX);
        return -1;
    }
    for (const char *c = key; *c; c++)
        if (*c <= ' ' || *c > '~') {
            fprintf (stderr, "faissproxyd: keys are printable ASCII without spaces\n");
            return -1;
        }
    uint8_t hash [FPX_KEY_HASH_SIZE];
    fpx_auth_hash_key (key, key_len, hash);
    return s_add_key_hash (config, tenant, tenant_len, hash, role);
}

//  Warns when a secret-holding file can be read by others; refuse: -1.
static int
s_check_private (const char *path, FILE *file, bool refuse)
{
    struct stat st;
    if (fstat (fileno (file), &st) == 0 && (st.st_mode & 077)) {
        fprintf (stderr, "faissproxyd: %s: %s is readable by group or others (mode %o)%s; "
                 "chmod 600 it\n", refuse ? "error" : "warning", path,
                 (unsigned) (st.st_mode & 0777), refuse ? " and holds a secret key" : "");
        return refuse ? -1 : 0;
    }
    return 0;
}

//  Lines 'TENANT ROLE b2:HASH' (faissproxy keygen), or legacy 'TENANT KEY'
//  (role admin, with a warning). '#' starts a comment.
static int
s_read_keys_file (fpx_config_t *config, const char *path)
{
    FILE *file = fopen (path, "r");
    if (!file) {
        fprintf (stderr, "faissproxyd: cannot open %s: %s\n", path, strerror (errno));
        return -1;
    }
    s_check_private (path, file, false);
    char line [512];
    int lineno = 0, rc = 0, plain = 0;
    while (rc == 0 && fgets (line, sizeof line, file)) {
        lineno++;
        char *hash = strchr (line, '#');
        if (hash)
            *hash = 0;
        char *save, *tenant = strtok_r (line, " \t\r\n", &save);
        char *second = tenant ? strtok_r (NULL, " \t\r\n", &save) : NULL;
        char *third = second ? strtok_r (NULL, " \t\r\n", &save) : NULL;
        if (!tenant)
            continue;
        uint8_t digest [FPX_KEY_HASH_SIZE];
        if (!second || strtok_r (NULL, " \t\r\n", &save)) {
            fprintf (stderr, "faissproxyd: %s:%d: expected 'TENANT ROLE HASH'\n", path, lineno);
            rc = -1;
        }
        else if (third) {
            int role = fpx_auth_parse_role (second);
            if (role < 0 || fpx_auth_parse_hash (third, digest)) {
                fprintf (stderr, "faissproxyd: %s:%d: expected 'TENANT ROLE HASH' with ROLE "
                         "read, write or admin and HASH from faissproxy keygen\n", path, lineno);
                rc = -1;
            }
            else
                rc = s_add_key_hash (config, tenant, strlen (tenant), digest, role);
        }
        else {
            plain++;
            rc = s_add_key (config, tenant, strlen (tenant), second, FPX_ROLE_ADMIN);
        }
        sodium_memzero (line, sizeof line);
    }
    fclose (file);
    if (plain)
        fprintf (stderr, "faissproxyd: warning: %s holds %d plaintext key(s) (role admin); "
                 "replace them with hashed lines from 'faissproxy keygen TENANT [ROLE]'\n",
                 path, plain);
    return rc;
}

//  --curve-secret-file: 'public-key Z85' and 'secret-key Z85' lines, as
//  faissproxy keygen --curve writes them. Refused when others may read it.
static int
s_read_curve_secret (fpx_config_t *config, const char *path)
{
    FILE *file = fopen (path, "r");
    if (!file) {
        fprintf (stderr, "faissproxyd: cannot open %s: %s\n", path, strerror (errno));
        return -1;
    }
    if (s_check_private (path, file, true)) {
        fclose (file);
        return -1;
    }
    char line [256], secret [41] = "";
    while (fgets (line, sizeof line, file)) {
        char *save, *name = strtok_r (line, " \t\r\n", &save);
        char *value = name ? strtok_r (NULL, " \t\r\n", &save) : NULL;
        if (name && value && strlen (value) == 40 && !strcmp (name, "secret-key"))
            memcpy (secret, value, 41);
        sodium_memzero (line, sizeof line);
    }
    fclose (file);
    uint8_t public_key [32];
    if (!secret [0] || !zmq_z85_decode (config->curve_secret, secret)
    ||  crypto_scalarmult_base (public_key, config->curve_secret)) {
        fprintf (stderr, "faissproxyd: %s: no 'secret-key Z85' line (make one with "
                 "faissproxy keygen --curve FILE)\n", path);
        return -1;
    }
    sodium_memzero (secret, sizeof secret);
    zmq_z85_encode (config->curve_public, public_key, 32);
    config->curve = true;
    return 0;
}

//  --curve-clients-file: one client public key (40 Z85 characters) a line;
//  lines that start with '#' are comments.
static int
s_read_curve_clients (fpx_config_t *config, const char *path)
{
    FILE *file = fopen (path, "r");
    if (!file) {
        fprintf (stderr, "faissproxyd: cannot open %s: %s\n", path, strerror (errno));
        return -1;
    }
    char line [256];
    int lineno = 0, rc = 0;
    while (rc == 0 && fgets (line, sizeof line, file)) {
        lineno++;
        char *save, *key = strtok_r (line, " \t\r\n", &save);
        if (!key || key [0] == '#')         //  Z85 has '#': comments are whole lines
            continue;
        uint8_t (*grown) [32] = realloc (config->curve_clients,
                                         (size_t) (config->ncurve_clients + 1) * sizeof *grown);
        if (!grown)
            rc = -1;
        else if (strlen (key) != 40 || !zmq_z85_decode (grown [config->ncurve_clients], key)) {
            fprintf (stderr, "faissproxyd: %s:%d: expected a CURVE public key "
                     "(40 Z85 characters)\n", path, lineno);
            rc = -1;
        }
        else
            config->ncurve_clients++;
        if (grown)
            config->curve_clients = grown;
    }
    fclose (file);
    if (rc == 0 && config->ncurve_clients == 0) {
        fprintf (stderr, "faissproxyd: %s lists no client key\n", path);
        rc = -1;
    }
    return rc;
}

//  Whether a tcp:// endpoint listens on loopback only.
static bool
s_loopback (const char *endpoint)
{
    if (strncmp (endpoint, "tcp://", 6))
        return true;                    //  ipc://, inproc://: local
    const char *host = endpoint + 6;
    return !strncmp (host, "127.", 4) || !strncmp (host, "localhost:", 10)
        || !strncmp (host, "[::1]:", 6) || !strncmp (host, "lo:", 3);
}

//  As many descriptors as the hard limit allows: each client connection
//  holds one, and libzmq's listener spins when accept fails with EMFILE.
static void
s_raise_fd_limit (void)
{
    struct rlimit limit;
    if (getrlimit (RLIMIT_NOFILE, &limit))
        return;
    rlim_t before = limit.rlim_cur;
    if (limit.rlim_cur < limit.rlim_max) {
        limit.rlim_cur = limit.rlim_max;
        if (setrlimit (RLIMIT_NOFILE, &limit))
            limit.rlim_cur = before;
    }
    fpx_log (FPX_LOG_INFO, "file descriptors: %llu (soft limit was %llu, hard limit %llu)",
             (unsigned long long) limit.rlim_cur, (unsigned long long) before,
             (unsigned long long) limit.rlim_max);
}

//  A fresh key for tenant "default" when none was configured: 32 hex
//  characters from the kernel's random source.
static int
s_generate_key (fpx_config_t *config)
{
    unsigned char random [16];
    FILE *source = fopen ("/dev/urandom", "rb");
    if (!source || fread (random, 1, sizeof random, source) != sizeof random) {
        if (source)
            fclose (source);
        fprintf (stderr, "faissproxyd: cannot read /dev/urandom to generate a key\n");
        return -1;
    }
    fclose (source);
    char key [33];
    for (int i = 0; i < 16; i++)
        snprintf (key + 2 * i, 3, "%02x", random [i]);
    printf ("faissproxyd: no API key configured; generated one for tenant 'default':\n"
            "FAISS_PROXY_API_KEY=%s\n", key);
    fflush (stdout);
    return s_add_key (config, "default", 7, key, FPX_ROLE_ADMIN);
}

//  Every option, for the command line and the config file alike: a file's
//  keys are these names, so the two cannot drift apart.
enum { BIND = 1, WORKERS, API_KEY, KEYS_FILE, DATA_DIR, MAX_MB, MAX_QUEUE, LOG_LEVEL, HELP, VERSION,
       FSYNC, SNAPSHOT_MB, SNAPSHOT_S, SPIN_US, CURVE_SECRET, CURVE_CLIENTS,
       TENANT_LIMITS, DEFAULT_TENANT_LIMITS, MAX_MEMORY_MB, MAX_CONN_INFLIGHT, MAX_CONN_UNREAD,
       AUTH_DELAY_MAX, CONFIG, MAX_UNAUTHENTICATED, LOG_FORMAT,
       METRICS_BIND, MEMORY_BUDGET, REBUILD_BACKGROUND_MIN, ENDPOINT_FILE };
static const struct option s_options [] = {
    { "config", required_argument, NULL, CONFIG },
    { "bind", required_argument, NULL, BIND },
    { "workers", required_argument, NULL, WORKERS },
    { "api-key", required_argument, NULL, API_KEY },
    { "keys-file", required_argument, NULL, KEYS_FILE },
    { "data-dir", required_argument, NULL, DATA_DIR },
    { "max-message-mb", required_argument, NULL, MAX_MB },
    { "max-queue", required_argument, NULL, MAX_QUEUE },
    { "log-level", required_argument, NULL, LOG_LEVEL },
    { "log-format", required_argument, NULL, LOG_FORMAT },
    { "metrics-bind", required_argument, NULL, METRICS_BIND },
    { "endpoint-file", required_argument, NULL, ENDPOINT_FILE },
    { "help", no_argument, NULL, HELP },
    { "version", no_argument, NULL, VERSION },
    { "fsync", required_argument, NULL, FSYNC },
    { "snapshot-log-mb", required_argument, NULL, SNAPSHOT_MB },
    { "snapshot-interval-s", required_argument, NULL, SNAPSHOT_S },
    { "spin-us", required_argument, NULL, SPIN_US },
    { "rebuild-background-min", required_argument, NULL, REBUILD_BACKGROUND_MIN },
    { "tenant-limits", required_argument, NULL, TENANT_LIMITS },
    { "default-tenant-limits", required_argument, NULL, DEFAULT_TENANT_LIMITS },
    { "max-memory-mb", required_argument, NULL, MAX_MEMORY_MB },
    { "memory-budget-mb", required_argument, NULL, MEMORY_BUDGET },
    { "max-conn-inflight", required_argument, NULL, MAX_CONN_INFLIGHT },
    { "max-conn-unread-mb", required_argument, NULL, MAX_CONN_UNREAD },
    { "max-unauthenticated-mb", required_argument, NULL, MAX_UNAUTHENTICATED },
    { "auth-delay-max-ms", required_argument, NULL, AUTH_DELAY_MAX },
    { "curve-secret-file", required_argument, NULL, CURVE_SECRET },
    { "curve-clients-file", required_argument, NULL, CURVE_CLIENTS },
    { NULL, 0, NULL, 0 }
};

static const char *s_tenant_limits_file;
static const char *s_default_tenant_limits;
//  "FILE:LINE: " while a config file's line is applied, for messages.
static char s_origin [512];
//  The config file's text: its values point into it until exit.
static char *s_config_text;
//  Lists a config file filled, which the command line's first value of
//  the same option replaces rather than extends.
static bool s_binds_from_file, s_curve_clients_from_file;

static long
s_positive (const char *flag, const char *text, long max)
{
    char *end;
    errno = 0;
    long value = strtol (text, &end, 10);
    if (errno || *end || value < 1 || value > max) {
        fprintf (stderr, "faissproxyd: %s%s must be an integer in [1, %ld]\n", s_origin, flag, max);
        exit (2);
    }
    return value;
}

static void
s_print_version (void)
{
    int major, minor, patch;
    zmq_version (&major, &minor, &patch);
    printf ("faissproxyd %s (protocol %d, FAISS %s, libzmq %d.%d.%d, libsodium %s)\n",
            FPX_SERVER_VERSION, FPX_PROTOCOL_VERSION, fpx_shim_faiss_version (),
            major, minor, patch, sodium_version_string ());
}

//  Applies one option's value, from the command line or a config file.
static int
s_apply (fpx_config_t *config, int option, char *value, bool from_file)
{
    switch (option) {
        case BIND:
            if (s_binds_from_file && !from_file) {
                config->nbinds = 0;
                s_binds_from_file = false;
            }
            s_binds_from_file |= from_file;
            if (config->nbinds == FPX_MAX_BINDS) {
                fprintf (stderr, "faissproxyd: %sat most %d --bind\n", s_origin, FPX_MAX_BINDS);
                return -1;
            }
            config->binds [config->nbinds++] = value;
            break;
        case WORKERS: config->workers = (int) s_positive ("--workers", value, 1024); break;
        case API_KEY: {
            const char *colon = strchr (value, ':');
            if (!colon) {
                fprintf (stderr, "faissproxyd: %s--api-key takes TENANT:KEY\n", s_origin);
                return -1;
            }
            if (s_add_key (config, value, (size_t) (colon - value), colon + 1, FPX_ROLE_ADMIN))
                return -1;
            //  Wiped from our argument area, but other users may have
            //  read /proc/PID/cmdline before: prefer a keys file.
            if (!from_file)
                fprintf (stderr, "faissproxyd: warning: --api-key shows the key of tenant '%.*s' "
                         "to every local user (ps, /proc/PID/cmdline); use --keys-file with "
                         "hashed keys or FAISS_PROXY_API_KEY\n", (int) (colon - value), value);
            sodium_memzero ((char *) colon + 1, strlen (colon + 1));
            break;
        }
        case KEYS_FILE: if (s_read_keys_file (config, value)) return -1; break;
        case CURVE_SECRET: if (s_read_curve_secret (config, value)) return -1; break;
        case CURVE_CLIENTS:
            if (s_curve_clients_from_file && !from_file) {
                config->ncurve_clients = 0;
                s_curve_clients_from_file = false;
            }
            s_curve_clients_from_file |= from_file;
            if (s_read_curve_clients (config, value))
                return -1;
            break;
        case DATA_DIR: config->data_dir = value; break;
        case MAX_MB:
            config->max_message = (size_t) s_positive ("--max-message-mb", value, 1 << 20) << 20;
            break;
        case MAX_QUEUE: config->max_queue = (size_t) s_positive ("--max-queue", value, 1 << 24); break;
        case LOG_FORMAT:
            if (fpx_log_set_format (value)) {
                fprintf (stderr, "faissproxyd: %s--log-format is text or json\n", s_origin);
                return -1;
            }
            break;
        case LOG_LEVEL:
            config->log_level = fpx_log_parse_level (value);
            if (config->log_level < 0) {
                fprintf (stderr, "faissproxyd: %s--log-level is error, warn, info or debug\n",
                         s_origin);
                return -1;
            }
            break;
        case FSYNC:
            if (!strcmp (value, "always")) config->fsync = FPX_FSYNC_ALWAYS;
            else if (!strcmp (value, "batch")) config->fsync = FPX_FSYNC_BATCH;
            else if (!strcmp (value, "never")) config->fsync = FPX_FSYNC_NEVER;
            else {
                fprintf (stderr, "faissproxyd: %s--fsync is always, batch or never\n", s_origin);
                return -1;
            }
            break;
        case SNAPSHOT_MB:
            config->snapshot_log_bytes = (uint64_t) s_positive ("--snapshot-log-mb", value, 1 << 20) << 20;
            break;
        case SNAPSHOT_S:
            config->snapshot_interval_s = (double) s_positive ("--snapshot-interval-s", value, 1 << 24);
            break;
        case SPIN_US:
            config->spin_us = strcmp (value, "0") ? (int) s_positive ("--spin-us", value, 100000) : 0;
            break;
        case REBUILD_BACKGROUND_MIN:
            config->rebuild_background_min = strcmp (value, "0")
                ? s_positive ("--rebuild-background-min", value, 1L << 40) : 0;
            break;
        case METRICS_BIND: config->metrics_bind = value; break;
        case ENDPOINT_FILE: config->endpoint_file = value; break;
        case TENANT_LIMITS: s_tenant_limits_file = value; break;
        case DEFAULT_TENANT_LIMITS: s_default_tenant_limits = value; break;
        case MAX_MEMORY_MB:
            config->max_memory = strcmp (value, "0")
                ? (size_t) s_positive ("--max-memory-mb", value, 1 << 30) << 20 : 0;
            break;
        case MEMORY_BUDGET:
            config->memory_budget = strcmp (value, "0")
                ? (size_t) s_positive ("--memory-budget-mb", value, 1 << 30) << 20 : 0;
            break;
        case MAX_CONN_INFLIGHT:
            config->max_conn_inflight = (size_t) s_positive ("--max-conn-inflight", value, 1 << 24);
            break;
        case MAX_CONN_UNREAD:
            config->max_conn_unread = (size_t) s_positive ("--max-conn-unread-mb", value, 1 << 30) << 20;
            break;
        case MAX_UNAUTHENTICATED:
            config->max_unauthenticated =
                (size_t) s_positive ("--max-unauthenticated-mb", value, 1 << 30) << 20;
            break;
        case AUTH_DELAY_MAX:
            config->auth_delay_max = strcmp (value, "0")
                ? (double) s_positive ("--auth-delay-max-ms", value, 600000) / 1000 : 0;
            break;
        default:
            return -1;
    }
    return 0;
}

//  One config file line: 'KEY = VALUE' or 'KEY VALUE' (KEY a long option's
//  name, '--' optional; VALUE to the end of the line, without a comment
//  that starts with whitespace and '#', without surrounding double quotes).
//  Blank lines and lines starting with '#' are skipped.
static int
s_apply_config_line (fpx_config_t *config, char *line, bool *secret)
{
    line += strspn (line, " \t\r");
    if (*line == 0 || *line == '#')
        return 0;
    if (!strncmp (line, "--", 2))
        line += 2;
    char *key = line;
    line += strcspn (line, " \t\r=");
    char *key_end = line;
    line += strspn (line, " \t\r");
    if (*line == '=')
        line += 1 + strspn (line + 1, " \t\r");
    *key_end = 0;
    char *value = line;
    for (char *c = value; *c; c++)
        if (*c == '#' && c > value && (c [-1] == ' ' || c [-1] == '\t')) {
            *c = 0;
            break;
        }
    size_t len = strlen (value);
    while (len && strchr (" \t\r", value [len - 1]))
        value [--len] = 0;
    if (len >= 2 && value [0] == '"' && value [len - 1] == '"') {
        value [len - 1] = 0;
        value++;
    }
    const struct option *option = s_options;
    while (option->name && strcmp (option->name, key))
        option++;
    if (!option->name) {
        fprintf (stderr, "faissproxyd: %sunknown option '%s' (faissproxyd --help lists them)\n",
                 s_origin, key);
        return -1;
    }
    if (option->has_arg != required_argument || option->val == CONFIG) {
        fprintf (stderr, "faissproxyd: %s'%s' is for the command line only\n", s_origin, key);
        return -1;
    }
    if (*value == 0) {
        fprintf (stderr, "faissproxyd: %s'%s' needs a value\n", s_origin, key);
        return -1;
    }
    *secret |= option->val == API_KEY;
    if (s_apply (config, option->val, value, true)) {
        fprintf (stderr, "faissproxyd: %s'%s' rejected\n", s_origin, key);
        return -1;
    }
    return 0;
}

#define S_CONFIG_MAX  (1 << 20)     //  a config file is a few lines

//  --config FILE: every option, one a line (s_apply_config_line).
static int
s_read_config (fpx_config_t *config, const char *path)
{
    FILE *file = fopen (path, "r");
    if (!file) {
        fprintf (stderr, "faissproxyd: cannot open config file %s: %s\n", path, strerror (errno));
        return -1;
    }
    s_config_text = calloc (1, S_CONFIG_MAX + 1);
    size_t size = s_config_text ? fread (s_config_text, 1, S_CONFIG_MAX + 1, file) : 0;
    if (!s_config_text || ferror (file) || size > S_CONFIG_MAX) {
        fprintf (stderr, "faissproxyd: cannot read config file %s (at most %d bytes)\n",
                 path, S_CONFIG_MAX);
        fclose (file);
        return -1;
    }
    s_config_text [size] = 0;
    bool secret = false;
    int rc = 0, lineno = 0;
    for (char *line = s_config_text, *next; rc == 0 && line; line = next) {
        next = strchr (line, '\n');
        if (next)
            *next++ = 0;
        snprintf (s_origin, sizeof s_origin, "%s:%d: ", path, ++lineno);
        rc = s_apply_config_line (config, line, &secret);
    }
    s_origin [0] = 0;
    if (rc == 0 && secret)
        s_check_private (path, file, false);        //  it holds a plaintext key
    fclose (file);
    return rc;
}

static int
s_parse (fpx_config_t *config, int argc, char **argv)
{
    //  First pass: --help, --version, usage errors and --config, so that
    //  the file is applied first and the command line then overrides it.
    const char *config_file = NULL;
    int option;
    while ((option = getopt_long (argc, argv, "", s_options, NULL)) != -1) {
        if (option == HELP) {
            s_usage (stdout);
            exit (0);
        }
        if (option == VERSION) {
            s_print_version ();
            exit (0);
        }
        if (option == '?') {
            s_usage (stderr);
            exit (2);
        }
        if (option == CONFIG && config_file) {
            fprintf (stderr, "faissproxyd: at most one --config\n");
            return -1;
        }
        if (option == CONFIG)
            config_file = optarg;
    }
    if (optind < argc) {
        fprintf (stderr, "faissproxyd: unexpected argument '%s'\n", argv [optind]);
        return -1;
    }
    if (config_file && s_read_config (config, config_file))
        return -1;
    optind = 0;                         //  glibc: scan argv again from the start
    while ((option = getopt_long (argc, argv, "", s_options, NULL)) != -1)
        if (option != CONFIG && s_apply (config, option, optarg, false))
            return -1;
    const char *env_key = getenv ("FAISS_PROXY_API_KEY");
    if (env_key && *env_key && s_add_key (config, "default", 7, env_key, FPX_ROLE_ADMIN))
        return -1;
    if (config->nkeys == 0 && s_generate_key (config))
        return -1;
    if (config->nbinds == 0)
        config->binds [config->nbinds++] = "tcp://127.0.0.1:5555";
    if (config->ncurve_clients && !config->curve) {
        fprintf (stderr, "faissproxyd: --curve-clients-file needs --curve-secret-file\n");
        return -1;
    }
    return fpx_limits_load (config, s_default_tenant_limits, s_tenant_limits_file);
}

//  Recovery runs beside the broker, so that a server with large logs to
//  replay answers at once: ping and info (with "recovering" true), and
//  FPX_ERECOVERING for requests that touch indexes, which the client
//  library sends again until recovery ends or their timeout.
static void *
s_recover (void *arg)
{
    fpx_server_t *server = arg;
    fpx_storage_recover (server->storage);
    fpx_limits_measure_all (server->registry);
    fpx_storage_recovered (server->storage);
    return NULL;
}

//  Once the broker listens: the endpoints as bound (the port of
//  tcp://HOST:*), on stdout and in --endpoint-file, so that whoever
//  started the daemon connects without guessing a free port first.
//  Written to the descriptor: stdout's stream feeds the log by now.
static void
s_listening (const fpx_server_t *server)
{
    const fpx_config_t *config = &server->config;
    for (int i = 0; i < config->nbinds; i++)
        dprintf (STDOUT_FILENO, "faissproxyd listening on %s\n", server->endpoints [i]);
    if (server->metrics_url [0])
        dprintf (STDOUT_FILENO, "faissproxyd metrics on %s\n", server->metrics_url);
    if (!config->endpoint_file)
        return;
    char tmp [4200];
    snprintf (tmp, sizeof tmp, "%s.%d.tmp", config->endpoint_file, (int) getpid ());
    FILE *file = fopen (tmp, "w");
    bool ok = file != NULL;
    for (int i = 0; ok && i < config->nbinds; i++)
        ok = fprintf (file, "%s\n", server->endpoints [i]) > 0;
    if (ok && server->metrics_url [0])
        ok = fprintf (file, "%s\n", server->metrics_url) > 0;
    if (file && fclose (file))
        ok = false;
    if (!ok || rename (tmp, config->endpoint_file)) {
        fpx_log (FPX_LOG_ERROR, "--endpoint-file %s: cannot write it: %s", config->endpoint_file,
                 strerror (errno));
        unlink (tmp);
    }
}

int
main (int argc, char **argv)
{
    fpx_runtime_defaults (argv);
    umask (077);            //  data files 0600, directories 0700, whatever the caller's umask
    fpx_server_t server;
    memset (&server, 0, sizeof server);
    fpx_config_t *config = &server.config;
    config->ncores = (int) sysconf (_SC_NPROCESSORS_ONLN);
    if (config->ncores < 1)
        config->ncores = 1;
    config->workers = config->ncores;
    config->max_message = (size_t) FPX_MESSAGE_MB_DEFAULT << 20;
    config->max_queue = 10000;
    config->data_dir = "./data";
    config->log_level = FPX_LOG_INFO;
    config->fsync = FPX_FSYNC_BATCH;
    config->snapshot_log_bytes = (uint64_t) 256 << 20;
    config->snapshot_interval_s = 300;
    config->max_conn_inflight = 1024;
    config->max_conn_unread = (size_t) 1024 << 20;
    config->auth_delay_max = 2.0;
    config->rebuild_background_min = 100000;
    if (sodium_init () < 0) {
        fprintf (stderr, "faissproxyd: cannot initialise libsodium\n");
        return 1;
    }
    if (s_parse (config, argc, argv))
        return 2;
    fpx_log_set_level (config->log_level);
    fpx_shim_log_cerr ();           //  before recovery reads indexes and workers start
    if (fpx_log_capture_stdio ())
        fpx_log (FPX_LOG_WARN, "FAISS's own messages stay outside the log: %s", strerror (errno));
    s_raise_fd_limit ();
    for (int i = 0; i < config->nbinds; i++)
        if (!config->curve && !s_loopback (config->binds [i]))
            fpx_log (FPX_LOG_WARN, "%s is plain TCP beyond loopback: API keys and vectors cross "
                     "the network in clear; use --curve-secret-file (README: Exposing a server "
                     "beyond loopback)", config->binds [i]);

    //  Signals arrive through a pipe the broker polls. A handler, not a
    //  blocked mask + signalfd: threads started before main (OpenBLAS's
    //  pool) would still take the signal with its default action.
    int signal_pipe [2];
    if (pipe2 (signal_pipe, O_CLOEXEC | O_NONBLOCK)) {
        fprintf (stderr, "faissproxyd: pipe: %s\n", strerror (errno));
        return 1;
    }
    s_signal_write_fd = signal_pipe [1];
    struct sigaction action;
    memset (&action, 0, sizeof action);
    action.sa_handler = s_on_signal;
    sigemptyset (&action.sa_mask);
    action.sa_flags = SA_RESTART;
    sigaction (SIGINT, &action, NULL);
    sigaction (SIGTERM, &action, NULL);
    signal (SIGPIPE, SIG_IGN);
    signal (SIGXFSZ, SIG_IGN);          //  a file-size limit is a write error, not death
    int signal_fd = signal_pipe [0];

    server.zmq_ctx = zmq_ctx_new ();
    server.registry = fpx_registry_new ();
    server.started_at = fpx_monotonic_seconds ();
    server.batch_stats = calloc ((size_t) config->ntenants, sizeof *server.batch_stats);
    server.metrics = fpx_metrics_new (config->ntenants);
    server.limits = fpx_limits_new (config);
    server.transfers = fpx_transfers_new (server.limits);
    server.rebuilds = fpx_rebuilds_new (config->rebuild_background_min);
    server.budget = fpx_budget_new (server.registry, config->memory_budget);
    if (!server.zmq_ctx || !server.registry || !server.batch_stats || !server.metrics
    ||  !server.limits || !server.transfers || !server.rebuilds || !server.budget) {
        fprintf (stderr, "faissproxyd: cannot start: %s\n", strerror (errno));
        return 1;
    }
    fpx_storage_config_t storage = {
        .root = config->data_dir, .fsync = config->fsync,
        .snapshot_log_bytes = config->snapshot_log_bytes,
        .snapshot_interval_s = config->snapshot_interval_s,
    };
    pthread_t recovery;
    //  What an entry reaches through itself (registry.h), before recovery
    //  makes the first ones.
    fpx_registry_set_parts (server.registry, &(fpx_registry_parts_t) {
        .limits = server.limits, .rebuilds = server.rebuilds, .budget = server.budget });
    if (!(server.storage = fpx_storage_new (&storage, server.registry, config->tenants,
                                            config->ntenants))
    ||  fpx_storage_start_snapshotter (server.storage)
    ||  !(server.workers = fpx_workers_new (&server))
    ||  (config->curve && !(server.zap = fpx_zap_new (&server)))
    ||  pthread_create (&recovery, NULL, s_recover, &server)) {
        fprintf (stderr, "faissproxyd: cannot start\n");
        return 1;
    }
    fpx_metrics_http_t *metrics_http = NULL;
    if (config->metrics_bind && !(metrics_http = fpx_metrics_http_new (&server, config->metrics_bind)))
        return 1;
    fpx_interrupt_install ();
    server.listening = s_listening;
    fpx_log (FPX_LOG_INFO, "faissproxyd %s (protocol %d, FAISS %s): %d worker(s), %d tenant(s), "
             "max message %zu MiB", FPX_SERVER_VERSION, FPX_PROTOCOL_VERSION,
             fpx_shim_faiss_version (), config->workers, config->ntenants,
             config->max_message >> 20);
    if (config->curve)
        fpx_log (FPX_LOG_INFO, "CURVE: server public key %s; %s", config->curve_public,
                 config->ncurve_clients ? "only listed client keys" : "any client key");
    if (fpx_broker_run (&server, signal_fd)) {
        //  Workers wait on a broker that is gone: exit without joining.
        fpx_log (FPX_LOG_ERROR, "faissproxyd: stopped on error");
        _exit (1);
    }
    fpx_storage_stop_recovery (server.storage);
    pthread_join (recovery, NULL);
    fpx_workers_destroy (&server.workers);
    fpx_transfers_destroy (&server.transfers);
    fpx_rebuilds_join (server.rebuilds);    //  removals land before the last snapshots
    fpx_metrics_http_destroy (&metrics_http);   //  it reads the registry
    fpx_storage_destroy (&server.storage);      //  snapshots what the logs hold
    fpx_registry_destroy (&server.registry);
    fpx_rebuilds_destroy (&server.rebuilds);
    fpx_budget_destroy (&server.budget);
    zmq_ctx_term (server.zmq_ctx);
    fpx_zap_destroy (&server.zap);      //  its thread ends with the context
    sodium_memzero (config->curve_secret, sizeof config->curve_secret);
    free (config->curve_clients);
    close (signal_pipe [0]);
    close (signal_pipe [1]);
    free (config->keys);
    free (config->tenants);
    free (server.batch_stats);
    fpx_metrics_destroy (&server.metrics);
    fpx_limits_destroy (&server.limits);
    free (config->tenant_limits);
    free (s_config_text);
    fpx_log (FPX_LOG_INFO, "faissproxyd: stopped");
    return 0;
}
