/*  faissproxy_cli.c — `faissproxy`, the admin and debug command line of
    faissproxyd (as redis-cli is to redis).

    Built only on the public API (faissproxy.h) and its own vector-file
    module (fpx_vecfile.h, for import, export, add and search): it must
    not include protocol/ headers nor speak the wire format itself. keygen is local:
    libsodium and libzmq's key functions, no server.
    Output for people on stdout; errors on stderr as "faissproxy: <message>".
    Exit status: 0 success, 1 any error, 2 usage error.
*/
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <fcntl.h>
#include <sodium.h>
#include <unistd.h>
#include <zmq.h>

#include "faissproxy.h"
#include "fpx_vecfile.h"

#define EXIT_USAGE 2

static const char *s_usage =
    "usage: faissproxy [--server ENDPOINT] [--api-key KEY] [--server-key KEY] [--timeout MS]\n"
    "                  [--connect-timeout MS] COMMAND [ARGS]\n"
    "\n"
    "commands:\n"
    "  ping                              server, protocol and FAISS versions, and the\n"
    "                                    round-trip time of a connected ping in µs\n"
    "  info [--json] [--all] [--indexes N]\n"
    "                                    the server's and this tenant's figures as\n"
    "                                    key:value lines in sections (# Server, # Requests,\n"
    "                                    # Latency, # Memory, # Indexes): uptime, requests\n"
    "                                    by opcode and status, latency percentiles, queue,\n"
    "                                    memory and disk per index; --json: one JSON\n"
    "                                    object; --all (admin key): also the server's\n"
    "                                    totals and every tenant's usage (# All tenants);\n"
    "                                    --indexes N: list up to N indexes (default 100,\n"
    "                                    at most 1000)\n"
    "  list                              this tenant's named indexes, one per line\n"
    "  create NAME DIM FACTORY [METRIC]  create a named index; METRIC: l2 (default),\n"
    "                                    ip, l1, linf, canberra, braycurtis, jensenshannon\n"
    "  describe NAME                     an index's description, memory bytes included\n"
    "  drop NAME                         drop an index\n"
    "  save NAME                         snapshot a named index now (its log is truncated)\n"
    "  backup NAME FILE                  write a consistent copy of an index to FILE\n"
    "                                    (FAISS's own format: faiss.read_index reads it);\n"
    "                                    any size: it comes in chunks, streamed to FILE\n"
    "  restore NAME FILE [FACTORY]       create index NAME from FILE (a backup, or any\n"
    "                                    file faiss.write_index wrote); NAME must not exist;\n"
    "                                    FACTORY is kept as its factory string (default:\n"
    "                                    the one the server recovers from the structure)\n"
    "  import NAME FILE [OPTIONS]        add FILE's vectors (.npy float32 (rows, d), .fvecs,\n"
    "                                    .bvecs) to index NAME in batches, in file order;\n"
    "                                    run again, it resumes after the rows NAME holds\n"
    "      --ids IDS.npy                 add_with_ids, ids from a .npy of int64 (rows)\n"
    "      --batch N                     vectors per request (default: about 8 MiB)\n"
    "      --train N                     train an untrained index on FILE's first N rows\n"
    "      --offset N                    FILE's first row is NAME's vector N (default 0)\n"
    "      --no-verify                   resume without reading rows back to check them\n"
    "  export NAME FILE [--batch N]      write NAME's vectors 0 … ntotal − 1 to FILE\n"
    "                                    (.npy or .fvecs)\n"
    "  add NAME [FILE|-] [--batch N]     add vectors from FILE (.npy, .fvecs, .bvecs, .txt,\n"
    "                                    .csv) or from standard input: one vector a line,\n"
    "                                    numbers separated by spaces or commas\n"
    "  search NAME [FILE|-] [OPTIONS]    the k nearest neighbours of each query vector\n"
    "                                    (read as add reads them): \"QUERY: ID (DISTANCE), …\"\n"
    "      -k K                          neighbours per query (default 10)\n"
    "      --json                        one JSON object a query: query, ids, distances\n"
    "      --nprobe N, --ef-search N     search parameters of this search only\n"
    "      --batch N                     queries per request\n"
    "  keygen TENANT [ROLE]              print a new API key and the line for the server's\n"
    "                                    --keys-file (ROLE read, write (default) or admin)\n"
    "  keygen --curve FILE               write a new CURVE key pair for faissproxyd\n"
    "                                    --curve-secret-file to FILE (0600); print the\n"
    "                                    public key clients need\n"
    "  help                              this text\n"
    "\n"
    "options:\n"
    "  --server ENDPOINT   tcp://host:port, host:port or ipc://path; default\n"
    "                      $FAISS_PROXY_SERVER, else " FPX_DEFAULT_ENDPOINT "\n"
    "  --api-key KEY       default $FAISS_PROXY_API_KEY (prefer the variable: command\n"
    "                      lines are visible to other users)\n"
    "  --server-key KEY    the server's CURVE public key (40 characters, from\n"
    "                      'faissproxy keygen --curve'): encrypt the connection and\n"
    "                      authenticate the server; default $FAISS_PROXY_SERVER_KEY,\n"
    "                      else a plain connection\n"
    "  --timeout MS        per-call timeout; default $FAISS_PROXY_TIMEOUT_MS, else 30000;\n"
    "                      negative waits forever. restore, backup and the adds and\n"
    "                      training of import and add are not cut by it: they wait\n"
    "                      as long as the connection lives\n"
    "  --connect-timeout MS  how long to wait for a connection; default\n"
    "                      $FAISS_PROXY_CONNECT_TIMEOUT_MS, else 5000 (a refused\n"
    "                      connection fails at once)\n"
    "  -h, --help          this text\n"
    "  --version           faissproxy's version and its libzmq's and libsodium's\n"
    "\n"
    "exit status: 0 success, 1 error, 2 usage error\n";

typedef struct {
    const char *server;         //  NULL: the library's default
    const char *api_key;        //  NULL: the library's default
    const char *timeout;        //  NULL: the library's default
    const char *connect_timeout;   //  NULL: the library's default
    const char *server_key;     //  NULL: $FAISS_PROXY_SERVER_KEY, else plain
    int argc;                   //  command and its arguments
    char **argv;
} s_options_t;

//  Options of the data commands (import, export, add, search), given
//  after the command; 0 / NULL / false when not given.
typedef struct {
    const char *ids;            //  import --ids FILE
    int64_t batch;              //  --batch N: rows per request
    int64_t train;              //  import --train N
    int64_t offset;             //  import --offset N
    bool no_verify;             //  import --no-verify
    int k;                      //  search -k K
    int nprobe, ef_search;      //  search --nprobe, --ef-search
    bool json;                  //  search --json
} s_flags_t;

static int
s_usage_error (const char *format, const char *detail)
{
    fprintf (stderr, "faissproxy: ");
    fprintf (stderr, format, detail);
    fprintf (stderr, "\n(see faissproxy --help)\n");
    return EXIT_USAGE;
}

static int
s_fail (fpx_client_t *client)
{
    fprintf (stderr, "faissproxy: %s\n", fpx_client_errmsg (client));
    return EXIT_FAILURE;
}

//  Parses a whole decimal int; false if text is not one.
static bool
s_parse_int (const char *text, int *out)
{
    char *end;
    errno = 0;
    long value = strtol (text, &end, 10);
    if (errno || end == text || *end || value < INT_MIN || value > INT_MAX)
        return false;
    *out = (int) value;
    return true;
}

/* ---- commands ---------------------------------------------------------- */

static int
s_cmd_ping (fpx_client_t *client, char **args, const s_flags_t *flags)
{
    (void) args, (void) flags;
    //  The first ping connects; the second measures a true round trip.
    fpx_server_info_t info;
    if (fpx_ping (client, &info))
        return s_fail (client);
    struct timespec start, end;
    clock_gettime (CLOCK_MONOTONIC, &start);
    if (fpx_ping (client, NULL))
        return s_fail (client);
    clock_gettime (CLOCK_MONOTONIC, &end);
    long long us = (end.tv_sec - start.tv_sec) * 1000000LL
                 + (end.tv_nsec - start.tv_nsec) / 1000;
    printf ("server_version: %s\n", info.server_version);
    printf ("protocol_version: %d\n", info.protocol_version);
    printf ("faiss_version: %s\n", info.faiss_version);
    printf ("round_trip_us: %lld\n", us);
    return EXIT_SUCCESS;
}

static int
s_cmd_list (fpx_client_t *client, char **args, const s_flags_t *flags)
{
    (void) args, (void) flags;
    char **names;
    size_t count;
    if (fpx_index_list (client, &names, &count))
        return s_fail (client);
    for (size_t i = 0; i < count; i++)
        printf ("%s\n", names [i]);
    fpx_strlist_free (&names, count);
    return EXIT_SUCCESS;
}

//  FAISS's metrics by the names create takes and describe prints. Lp is
//  printed only: its exponent (metric_arg) is not a create argument.
static const struct { int metric; const char *name; bool create; } s_metrics [] = {
    { FPX_METRIC_L2, "l2", true },            { FPX_METRIC_INNER_PRODUCT, "ip", true },
    { FPX_METRIC_L1, "l1", true },            { FPX_METRIC_LINF, "linf", true },
    { FPX_METRIC_LP, "lp", false },           { FPX_METRIC_CANBERRA, "canberra", true },
    { FPX_METRIC_BRAYCURTIS, "braycurtis", true },
    { FPX_METRIC_JENSENSHANNON, "jensenshannon", true },
};
#define S_METRICS ((int) (sizeof s_metrics / sizeof s_metrics [0]))

static const char *
s_metric_name (int metric)
{
    for (int i = 0; i < S_METRICS; i++)
        if (s_metrics [i].metric == metric)
            return s_metrics [i].name;
    return NULL;
}

//  The metric create takes by that name, or -1.
static int
s_metric_of (const char *name)
{
    for (int i = 0; i < S_METRICS; i++)
        if (s_metrics [i].create && strcasecmp (s_metrics [i].name, name) == 0)
            return s_metrics [i].metric;
    return -1;
}

static void
s_print_info (const fpx_index_info_t *info)
{
    printf ("name: %s\n", info->name);
    printf ("class: %s\n", info->class_name);
    printf ("d: %d\n", info->d);
    if (info->d_out != info->d)
        printf ("d_out: %d\n", info->d_out);
    printf ("ntotal: %lld\n", (long long) info->ntotal);
    printf ("is_trained: %s\n", info->is_trained ? "true" : "false");
    const char *metric = s_metric_name (info->metric);
    if (metric)
        printf ("metric: %s\n", metric);
    else
        printf ("metric: %d\n", info->metric);
    printf ("factory: %s\n", info->factory);
    printf ("anonymous: %s\n", info->anonymous ? "true" : "false");
    if (info->damaged [0])
        printf ("damaged: %s\n", info->damaged);
    else if (!info->loaded)
        printf ("loaded: false (evicted under the server's memory budget)\n");
    if (info->rebuild_pending)
        printf ("rebuild_pending: true (remove_ids rebuilding the HNSW graph in the background)\n");
    if (info->memory_bytes >= 0)
        printf ("memory_bytes: %lld\n", (long long) info->memory_bytes);
}

static int
s_cmd_create (fpx_client_t *client, char **args, const s_flags_t *flags)
{
    (void) flags;
    int d;
    if (!s_parse_int (args [1], &d))
        return s_usage_error ("DIM must be an integer, got '%s'", args [1]);
    int metric = FPX_METRIC_L2;
    if (args [3] && (metric = s_metric_of (args [3])) < 0)
        return s_usage_error ("metric must be l2, ip, l1, linf, canberra, braycurtis or "
                              "jensenshannon, got '%s'", args [3]);
    fpx_index_info_t info;
    if (fpx_index_create (client, args [0], d, args [2], metric, &info))
        return s_fail (client);
    s_print_info (&info);
    return EXIT_SUCCESS;
}

static int
s_cmd_describe (fpx_client_t *client, char **args, const s_flags_t *flags)
{
    (void) flags;
    fpx_index_info_t info;
    if (fpx_index_describe (client, args [0], 1, &info))
        return s_fail (client);
    s_print_info (&info);
    return EXIT_SUCCESS;
}

static int
s_cmd_drop (fpx_client_t *client, char **args, const s_flags_t *flags)
{
    (void) flags;
    if (fpx_index_drop (client, args [0]))
        return s_fail (client);
    printf ("dropped %s\n", args [0]);
    return EXIT_SUCCESS;
}

static int
s_cmd_save (fpx_client_t *client, char **args, const s_flags_t *flags)
{
    (void) flags;
    if (fpx_index_save (client, args [0]))
        return s_fail (client);
    printf ("saved %s\n", args [0]);
    return EXIT_SUCCESS;
}

static int
s_file_write (void *arg, const uint8_t *data, size_t size)
{
    return fwrite (data, 1, size, (FILE *) arg) == size ? 0 : -1;
}

static int
s_file_read (void *arg, uint8_t *data, size_t size)
{
    return fread (data, 1, size, (FILE *) arg) == size ? 0 : -1;
}

//  Streams the index into a temporary file renamed into place, so that a
//  failed backup never leaves a truncated file under its name; the index
//  is never held whole in this process (it comes in chunks).
static int
s_cmd_backup (fpx_client_t *client, char **args, const s_flags_t *flags)
{
    (void) flags;
    char tmp [PATH_MAX];
    if (snprintf (tmp, sizeof tmp, "%s.tmp", args [1]) >= (int) sizeof tmp) {
        fprintf (stderr, "faissproxy: path too long: %s\n", args [1]);
        return EXIT_FAILURE;
    }
    FILE *file = fopen (tmp, "wb");
    if (!file) {
        fprintf (stderr, "faissproxy: cannot write %s: %s\n", tmp, strerror (errno));
        return EXIT_FAILURE;
    }
    size_t size = 0;
    errno = 0;
    int rc = fpx_serialize_to (client, args [0], s_file_write, file, &size);
    int saved = errno;
    bool written = fclose (file) == 0 && rc != FPX_EIO;
    if (written && !rc && rename (tmp, args [1]) == 0) {
        printf ("backed up %s to %s (%zu bytes)\n", args [0], args [1], size);
        return EXIT_SUCCESS;
    }
    saved = rc == FPX_EIO ? saved : errno;
    remove (tmp);
    if (rc && rc != FPX_EIO)
        return s_fail (client);
    fprintf (stderr, "faissproxy: cannot write %s: %s\n", args [1], strerror (saved));
    return EXIT_FAILURE;
}

//  Streams FILE to the server in chunks. FACTORY, when given, is kept as
//  the index's factory string; without it the server recovers one from
//  the index's structure when FAISS's index_factory has one.
static int
s_cmd_restore (fpx_client_t *client, char **args, const s_flags_t *flags)
{
    (void) flags;
    FILE *file = fopen (args [1], "rb");
    long size = -1;
    if (file && fseek (file, 0, SEEK_END) == 0)
        size = ftell (file);
    if (!file || size < 0 || fseek (file, 0, SEEK_SET) != 0) {
        fprintf (stderr, "faissproxy: cannot read %s: %s\n", args [1], strerror (errno));
        if (file)
            fclose (file);
        return EXIT_FAILURE;
    }
    if (size == 0) {
        fprintf (stderr, "faissproxy: %s is empty\n", args [1]);
        fclose (file);
        return EXIT_FAILURE;
    }
    fpx_index_info_t info;
    errno = 0;
    int rc = fpx_deserialize_from (client, args [0], args [2], (size_t) size, s_file_read, file,
                                   &info);
    int saved = errno;
    fclose (file);
    if (rc == FPX_EIO) {
        fprintf (stderr, "faissproxy: cannot read %s: %s\n", args [1],
                 saved ? strerror (saved) : "shorter than it was");
        return EXIT_FAILURE;
    }
    if (rc)
        return s_fail (client);
    printf ("restored %s from %s\n", args [0], args [1]);
    s_print_info (&info);
    return EXIT_SUCCESS;
}

/* ---- info ---------------------------------------------------------------- */

//  Sections of `faissproxy info`, by a figure's first key. A figure no
//  section names (from a newer server) goes to "# Other": nothing is lost.
#define S_SECTION_KEYS 24
typedef struct {
    const char *title;
    const char *keys [S_SECTION_KEYS];  //  first keys of its figures
    bool strip;                //  print paths without their first key
} s_section_t;

static const s_section_t s_sections [] = {
    { "Server", { "server_version", "protocol_version", "faiss_version", "recovering", "tenant",
                  "role", "uptime_s", "workers", "queue_depth", "in_flight", "connections",
                  "batched_searches", "batched_calls", "transfers", "transfer_bytes" }, false },
    { "Requests", { "requests" }, true },
    { "Latency", { "latency" }, true },
    { "Memory", { "rss_bytes", "memory_bytes", "disk_bytes", "vectors", "objects", "quotas" }, false },
    { "Indexes", { "indexes", "index_list_truncated", "index_list" }, false },
    { "All tenants", { "server" }, true },
};
#define S_SECTIONS ((int) (sizeof s_sections / sizeof s_sections [0]))

//  The section of a figure's path (S_SECTIONS: "Other").
static int
s_section_of (const char *path)
{
    size_t top = strcspn (path, ".");
    for (int s = 0; s < S_SECTIONS; s++)
        for (int k = 0; k < S_SECTION_KEYS && s_sections [s].keys [k]; k++)
            if (strlen (s_sections [s].keys [k]) == top
            &&  strncmp (s_sections [s].keys [k], path, top) == 0)
                return s;
    return S_SECTIONS;
}

//  Whether path is in the array at prefix ("index_list."), printed as rows.
static bool
s_in_rows (const char *path)
{
    return strncmp (path, "index_list.", 11) == 0 || strncmp (path, "server.tenants.", 15) == 0;
}

//  One line per element of the array `array` ("index_list"): its `label`
//  field, then its other fields as key=value (like redis's # Keyspace).
static void
s_print_rows (const fpx_info_t *info, const char *array, const char *label)
{
    for (int row = 0; ; row++) {
        char prefix [64], path [96];
        int len = snprintf (prefix, sizeof prefix, "%s.%d.", array, row);
        snprintf (path, sizeof path, "%s%s", prefix, label);
        const char *name = fpx_info_str (info, path);
        if (!name)
            break;
        printf ("%s:", name);
        const char *comma = "";
        for (size_t i = 0; i < fpx_info_count (info); i++) {
            const char *key = fpx_info_key (info, i);
            if (strncmp (key, prefix, (size_t) len) == 0 && strcmp (key + len, label) != 0) {
                printf ("%s%s=%s", comma, key + len, fpx_info_text_at (info, i));
                comma = ",";
            }
        }
        printf ("\n");
    }
}

/* ---- data: import, export, add, search ----------------------------------
    Vectors pass through a buffer of one batch (--batch rows, by default
    about S_BATCH_BYTES): a file of any size is never held whole here.  */

//  Default request size of the data commands, and the largest batch a
//  command line may ask for (the server's message limit applies too).
#define S_BATCH_BYTES      (8 << 20)
#define S_BATCH_BYTES_MAX  (1LL << 30)
//  How often a progress line is redrawn at most (seconds).
#define S_PROGRESS_PERIOD  0.25
//  import's resume check: a reconstructed row may differ from the file's
//  by this much (squared distance over squared norm): 0 for indexes that
//  store vectors whole, within it for most compressed ones; another file's
//  row is much farther.
#define S_VERIFY_TOLERANCE 0.1

static double
s_now (void)
{
    struct timespec now;
    clock_gettime (CLOCK_MONOTONIC, &now);
    return (double) now.tv_sec + (double) now.tv_nsec / 1e9;
}

//  A progress line on a terminal (stderr); nothing when stderr is not one.
typedef struct {
    bool tty;
    const char *verb;           //  "imported", "exported"
    int64_t total, first;       //  the rows in all, the first one of this run
    double start, drawn;
} s_progress_t;

static void
s_progress_start (s_progress_t *self, const char *verb, int64_t first, int64_t total)
{
    *self = (s_progress_t) { .tty = isatty (STDERR_FILENO) == 1, .verb = verb, .total = total,
                             .first = first, .start = s_now () };
}

static void
s_progress_draw (s_progress_t *self, int64_t done)
{
    double now = s_now ();
    if (!self->tty || (now - self->drawn < S_PROGRESS_PERIOD && done < self->total))
        return;
    self->drawn = now;
    double elapsed = now - self->start;
    double rate = elapsed > 0 ? (double) (done - self->first) / elapsed : 0;
    double fraction = self->total > 0 ? (double) done / (double) self->total : 1;
    char bar [21];
    int filled = (int) (fraction * 20);
    for (int i = 0; i < 20; i++)
        bar [i] = i < filled ? '#' : '.';
    bar [20] = 0;
    char eta [32] = "--:--";
    if (rate > 0) {
        long long seconds = (long long) ((double) (self->total - done) / rate);
        snprintf (eta, sizeof eta, "%lld:%02lld:%02lld", seconds / 3600, seconds / 60 % 60,
                  seconds % 60);
    }
    fprintf (stderr, "\r[%s] %lld/%lld rows %5.1f%%  %.0f vectors/s  ETA %s\033[K", bar,
             (long long) done, (long long) self->total, 100 * fraction, rate, eta);
}

//  Clears the progress line; returns the seconds since the start.
static double
s_progress_end (s_progress_t *self)
{
    if (self->tty && self->drawn > 0)
        fprintf (stderr, "\r\033[K");
    return s_now () - self->start;
}

static double
s_rate (int64_t rows, double seconds)
{
    return seconds > 0 ? (double) rows / seconds : 0;
}

//  Rows per request: --batch, else about S_BATCH_BYTES of row_bytes rows.
//  -1 (after the message) when --batch asks for too much.
static int64_t
s_batch_rows (const s_flags_t *flags, size_t row_bytes)
{
    if (row_bytes > (size_t) S_BATCH_BYTES_MAX) {
        fprintf (stderr, "faissproxy: %zu bytes a vector (with its results) is more than "
                 "%lld MiB\n", row_bytes, S_BATCH_BYTES_MAX >> 20);
        return -1;
    }
    if (flags->batch > 0) {
        if (flags->batch > S_BATCH_BYTES_MAX / (int64_t) row_bytes) {
            fprintf (stderr, "faissproxy: --batch %lld: %zu bytes a row is more than %lld MiB "
                     "a batch\n", (long long) flags->batch, row_bytes, S_BATCH_BYTES_MAX >> 20);
            return -1;
        }
        return flags->batch;
    }
    int64_t rows = S_BATCH_BYTES / (int64_t) row_bytes;
    return rows > 0 ? rows : 1;
}

static int
s_vecfile_fail (fpx_vecfile_t **file_p)
{
    fprintf (stderr, "faissproxy: %s\n", fpx_vecfile_errmsg (*file_p));
    fpx_vecfile_close (file_p, false, NULL, 0);
    return EXIT_FAILURE;
}

//  import's resume check: the index's vectors for rows [row, row + count)
//  of the file (count 1 or 2; keys offset + row, or the rows' ids) are
//  those rows. Two consecutive rows without ids are read back in one
//  reconstruct_n, which IVF indexes answer without a direct map. 0 when
//  they are; 1 (after the message) when not, or when they cannot be read.
static int
s_verify_rows (fpx_client_t *client, const fpx_index_info_t *info, fpx_vecfile_t *file,
               fpx_vecfile_t *ids, int64_t offset, int64_t row, int count, float *scratch)
{
    int d = info->d;
    float *expected = scratch, *stored = scratch + 2 * d;
    int64_t keys [2] = { offset + row, offset + row + 1 };
    if (fpx_vecfile_seek (file, row) || fpx_vecfile_read (file, expected, count) != count) {
        fprintf (stderr, "faissproxy: %s\n", fpx_vecfile_errmsg (file));
        return 1;
    }
    if (ids && (fpx_vecfile_seek (ids, row) || fpx_vecfile_read_ids (ids, keys, count) != count)) {
        fprintf (stderr, "faissproxy: %s\n", fpx_vecfile_errmsg (ids));
        return 1;
    }
    int rc = 0;
    if (ids)
        for (int i = 0; i < count && !rc; i++)
            rc = fpx_reconstruct (client, info->name, keys [i], d, stored + i * d);
    else
        rc = fpx_reconstruct_n (client, info->name, keys [0], count, d, stored);
    if (rc == FPX_EFAISS || rc == FPX_EINVAL) {
        fprintf (stderr, "faissproxy: cannot check that %s holds the file's first rows: its "
                 "vector %lld cannot be read back (%s); --no-verify resumes without the check\n",
                 info->name, (long long) keys [0], fpx_client_errmsg (client));
        return 1;
    }
    if (rc)
        return s_fail (client);
    for (int i = 0; i < count; i++) {
        double error = 0, norm = 0;
        for (int j = 0; j < d; j++) {
            double diff = (double) stored [i * d + j] - expected [i * d + j];
            error += diff * diff;
            norm += (double) expected [i * d + j] * expected [i * d + j];
        }
        if (error > S_VERIFY_TOLERANCE * norm || (norm == 0 && error > 0)) {
            fprintf (stderr, "faissproxy: %s's vector %lld is not row %lld of the file: the "
                     "index was not filled from this file in order (see --offset), or stores "
                     "vectors too coarsely to tell (--no-verify)\n", info->name,
                     (long long) keys [i], (long long) (row + i));
            return 1;
        }
    }
    return 0;
}

//  --train N: trains an untrained index on the file's first N rows.
static int
s_import_train (fpx_client_t *client, const fpx_index_info_t *info, fpx_vecfile_t *file,
                int64_t n)
{
    int64_t rows = fpx_vecfile_rows (file);
    n = n < rows ? n : rows;
    size_t row_bytes = (size_t) info->d * sizeof (float);
    if (n > S_BATCH_BYTES_MAX / (int64_t) row_bytes) {
        fprintf (stderr, "faissproxy: --train %lld: more than %lld MiB of vectors\n",
                 (long long) n, S_BATCH_BYTES_MAX >> 20);
        return EXIT_FAILURE;
    }
    float *x = malloc ((size_t) (n > 0 ? n : 1) * row_bytes);
    if (!x) {
        fprintf (stderr, "faissproxy: out of memory for %lld training vectors\n", (long long) n);
        return EXIT_FAILURE;
    }
    int status = EXIT_SUCCESS;
    if (fpx_vecfile_seek (file, 0) || fpx_vecfile_read (file, x, n) != n) {
        fprintf (stderr, "faissproxy: %s\n", fpx_vecfile_errmsg (file));
        status = EXIT_FAILURE;
    }
    else {
        if (isatty (STDERR_FILENO) == 1)
            fprintf (stderr, "training %s on %lld rows…\n", info->name, (long long) n);
        if (fpx_train (client, info->name, n, info->d, x))
            status = s_fail (client);
    }
    free (x);
    return status;
}

//  Where an import starts: the rows of the file the index already holds
//  (ntotal − offset), after checking that they are that file's. *start
//  receives it; returns an exit status, -1 to go on.
static int
s_import_start (fpx_client_t *client, const fpx_index_info_t *info, fpx_vecfile_t *file,
                fpx_vecfile_t *ids, const s_flags_t *flags, int64_t *start)
{
    int64_t rows = fpx_vecfile_rows (file);
    int64_t done = info->ntotal - flags->offset;
    if (done < 0) {
        fprintf (stderr, "faissproxy: %s holds %lld vectors, fewer than --offset %lld\n",
                 info->name, (long long) info->ntotal, (long long) flags->offset);
        return EXIT_FAILURE;
    }
    if (done > rows) {
        fprintf (stderr, "faissproxy: %s holds %lld vectors, more than the file's %lld rows%s: "
                 "it was not filled from this file alone (--offset N: the file starts at "
                 "the index's vector N)\n", info->name, (long long) info->ntotal,
                 (long long) rows, flags->offset ? " after --offset" : "");
        return EXIT_FAILURE;
    }
    if (done > 0 && !flags->no_verify) {
        //  The first two rows and the last two the index holds.
        float *scratch = malloc (4 * (size_t) info->d * sizeof (float));
        if (!scratch) {
            fprintf (stderr, "faissproxy: out of memory\n");
            return EXIT_FAILURE;
        }
        int count = done > 1 ? 2 : 1;
        int failed = s_verify_rows (client, info, file, ids, flags->offset, 0, count, scratch)
                  || (done > 2 && s_verify_rows (client, info, file, ids, flags->offset,
                                                 done - 2, 2, scratch));
        free (scratch);
        if (failed)
            return EXIT_FAILURE;
    }
    *start = done;
    return -1;
}

//  Adds rows [start, rows) of file (and ids) in batches.
static int
s_import_rows (fpx_client_t *client, const fpx_index_info_t *info, fpx_vecfile_t *file,
               fpx_vecfile_t *ids, int64_t start, int64_t batch, int64_t *ntotal)
{
    int64_t rows = fpx_vecfile_rows (file);
    float *x = malloc ((size_t) batch * (size_t) info->d * sizeof (float));
    int64_t *labels = ids ? malloc ((size_t) batch * sizeof (int64_t)) : NULL;
    if (!x || (ids && !labels)) {
        free (x);
        fprintf (stderr, "faissproxy: out of memory for a batch of %lld rows\n", (long long) batch);
        return EXIT_FAILURE;
    }
    int status = EXIT_SUCCESS;
    if (fpx_vecfile_seek (file, start) || (ids && fpx_vecfile_seek (ids, start))) {
        fprintf (stderr, "faissproxy: %s\n", fpx_vecfile_errmsg (file));
        status = EXIT_FAILURE;
    }
    s_progress_t progress;
    s_progress_start (&progress, "imported", start, rows);
    for (int64_t row = start; row < rows && status == EXIT_SUCCESS; ) {
        int64_t n = fpx_vecfile_read (file, x, batch);
        if (n <= 0 || (ids && fpx_vecfile_read_ids (ids, labels, n) != n)) {
            fprintf (stderr, "\nfaissproxy: %s\n",
                     n <= 0 ? fpx_vecfile_errmsg (file) : fpx_vecfile_errmsg (ids));
            status = EXIT_FAILURE;
            break;
        }
        int rc = ids ? fpx_add_with_ids (client, info->name, n, info->d, x, labels, ntotal)
                     : fpx_add (client, info->name, n, info->d, x, ntotal);
        if (rc) {
            if (progress.tty)
                fputc ('\n', stderr);
            status = s_fail (client);
            break;
        }
        row += n;
        s_progress_draw (&progress, row);
    }
    s_progress_end (&progress);
    free (x);
    free (labels);
    return status;
}

//  import NAME FILE: appends FILE's rows to NAME in file order. A re-run
//  resumes where the index stops: docs/OPERATIONS.md, "Bulk import".
static int
s_cmd_import (fpx_client_t *client, char **args, const s_flags_t *flags)
{
    fpx_index_info_t info;
    if (fpx_index_describe (client, args [0], 0, &info))
        return s_fail (client);
    char errmsg [512];
    fpx_vecfile_t *file = fpx_vecfile_open (args [1], info.d, errmsg, sizeof errmsg);
    fpx_vecfile_t *ids = NULL;
    if (file && fpx_vecfile_is_text (file)) {
        snprintf (errmsg, sizeof errmsg, "%s: import reads .npy, .fvecs or .bvecs files "
                  "(add reads text)", args [1]);
        fpx_vecfile_close (&file, false, NULL, 0);
    }
    if (file && flags->ids && (ids = fpx_vecfile_open_ids (flags->ids, errmsg, sizeof errmsg))
    &&  fpx_vecfile_rows (ids) != fpx_vecfile_rows (file)) {
        snprintf (errmsg, sizeof errmsg, "%s holds %lld ids for %lld vectors", flags->ids,
                  (long long) fpx_vecfile_rows (ids), (long long) fpx_vecfile_rows (file));
        fpx_vecfile_close (&ids, false, NULL, 0);
    }
    if (!file || (flags->ids && !ids)) {
        fprintf (stderr, "faissproxy: %s\n", errmsg);
        fpx_vecfile_close (&file, false, NULL, 0);
        return EXIT_FAILURE;
    }
    int64_t rows = fpx_vecfile_rows (file), start = 0, ntotal = info.ntotal;
    int64_t batch = s_batch_rows (flags, (size_t) info.d * sizeof (float));
    int status = batch < 0 ? EXIT_FAILURE
               : s_import_start (client, &info, file, ids, flags, &start);
    if (status < 0 && !info.is_trained) {
        if (flags->train <= 0) {
            fprintf (stderr, "faissproxy: %s (%s) is not trained: --train N trains it on the "
                     "file's first N rows first\n", info.name, info.class_name);
            status = EXIT_FAILURE;
        }
        else
        if (s_import_train (client, &info, file, flags->train))
            status = EXIT_FAILURE;
    }
    if (status < 0 && start > 0 && isatty (STDERR_FILENO) == 1)
        fprintf (stderr, "%s holds the file's first %lld rows: resumed at row %lld\n",
                 info.name, (long long) start, (long long) start);
    double started = s_now ();
    if (status < 0 && start < rows)
        status = s_import_rows (client, &info, file, ids, start, batch, &ntotal);
    if (status < 0 || status == EXIT_SUCCESS) {
        double seconds = s_now () - started;
        if (start == rows)
            printf ("%s already holds the %lld rows of %s: nothing to import (ntotal %lld)\n",
                    info.name, (long long) rows, args [1], (long long) ntotal);
        else {
            char resumed [64] = "";
            if (start > 0)
                snprintf (resumed, sizeof resumed, " (resumed at row %lld)", (long long) start);
            printf ("imported rows %lld..%lld of %s into %s%s in %.2f s (%.0f vectors/s); "
                    "ntotal %lld\n", (long long) start, (long long) rows - 1, args [1],
                    info.name, resumed, seconds, s_rate (rows - start, seconds),
                    (long long) ntotal);
        }
        status = EXIT_SUCCESS;
    }
    fpx_vecfile_close (&ids, false, NULL, 0);
    fpx_vecfile_close (&file, false, NULL, 0);
    return status;
}

//  export NAME FILE: the index's vectors 0 … ntotal − 1, by reconstruct_n
//  in batches, to FILE (.npy or .fvecs), written whole or not at all.
static int
s_cmd_export (fpx_client_t *client, char **args, const s_flags_t *flags)
{
    fpx_index_info_t info;
    if (fpx_index_describe (client, args [0], 0, &info))
        return s_fail (client);
    int64_t batch = s_batch_rows (flags, (size_t) info.d * sizeof (float));
    if (batch < 0)
        return EXIT_FAILURE;
    char errmsg [512];
    fpx_vecfile_t *file = fpx_vecfile_create (args [1], info.d, info.ntotal, errmsg, sizeof errmsg);
    if (!file) {
        fprintf (stderr, "faissproxy: %s\n", errmsg);
        return EXIT_FAILURE;
    }
    float *x = malloc ((size_t) batch * (size_t) info.d * sizeof (float));
    if (!x) {
        fprintf (stderr, "faissproxy: out of memory for a batch of %lld rows\n", (long long) batch);
        fpx_vecfile_close (&file, false, NULL, 0);
        return EXIT_FAILURE;
    }
    s_progress_t progress;
    s_progress_start (&progress, "exported", 0, info.ntotal);
    int status = EXIT_SUCCESS;
    for (int64_t i0 = 0; i0 < info.ntotal && status == EXIT_SUCCESS; ) {
        int64_t n = info.ntotal - i0 < batch ? info.ntotal - i0 : batch;
        int rc = fpx_reconstruct_n (client, info.name, i0, n, info.d, x);
        if (progress.tty && progress.drawn > 0 && rc)
            fputc ('\n', stderr);
        if (rc == FPX_EFAISS && i0 == 0) {
            fprintf (stderr, "faissproxy: cannot export %s: this %s does not give back its "
                     "vectors 0 … ntotal − 1 (%s); 'faissproxy backup' copies any index\n",
                     info.name, info.class_name, fpx_client_errmsg (client));
            status = EXIT_FAILURE;
        }
        else
        if (rc)
            status = s_fail (client);
        else
        if (fpx_vecfile_write (file, x, n)) {
            fprintf (stderr, "faissproxy: %s\n", fpx_vecfile_errmsg (file));
            status = EXIT_FAILURE;
        }
        i0 += n;
        s_progress_draw (&progress, i0);
    }
    double seconds = s_progress_end (&progress);
    free (x);
    if (status == EXIT_SUCCESS && fpx_vecfile_close (&file, true, errmsg, sizeof errmsg)) {
        fprintf (stderr, "faissproxy: %s\n", errmsg);
        status = EXIT_FAILURE;
    }
    fpx_vecfile_close (&file, false, NULL, 0);
    if (status == EXIT_SUCCESS)
        printf ("exported %lld vectors of %s to %s in %.2f s (%.0f vectors/s)\n",
                (long long) info.ntotal, info.name, args [1], seconds,
                s_rate (info.ntotal, seconds));
    return status;
}

//  Opens FILE (default: standard input, as text) for add and search, with
//  the index's d; *batch receives the rows per request.
static fpx_vecfile_t *
s_open_input (fpx_client_t *client, const char *name, const char *path, const s_flags_t *flags,
              size_t extra_row_bytes, fpx_index_info_t *info, int64_t *batch)
{
    if (fpx_index_describe (client, name, 0, info)) {
        s_fail (client);
        return NULL;
    }
    *batch = s_batch_rows (flags, (size_t) info->d * sizeof (float) + extra_row_bytes);
    if (*batch < 0)
        return NULL;
    char errmsg [512];
    fpx_vecfile_t *file = fpx_vecfile_open (path ? path : "-", info->d, errmsg, sizeof errmsg);
    if (!file)
        fprintf (stderr, "faissproxy: %s\n", errmsg);
    return file;
}

//  add NAME [FILE|-]: a quick add, from a file or text on standard input.
static int
s_cmd_add (fpx_client_t *client, char **args, const s_flags_t *flags)
{
    fpx_index_info_t info;
    int64_t batch, added = 0, ntotal = -1;
    fpx_vecfile_t *file = s_open_input (client, args [0], args [1], flags, 0, &info, &batch);
    if (!file)
        return EXIT_FAILURE;
    float *x = malloc ((size_t) batch * (size_t) info.d * sizeof (float));
    if (!x) {
        fprintf (stderr, "faissproxy: out of memory\n");
        return s_vecfile_fail (&file);
    }
    int64_t n;
    int status = EXIT_SUCCESS;
    while (status == EXIT_SUCCESS && (n = fpx_vecfile_read (file, x, batch)) != 0) {
        if (n < 0) {
            fprintf (stderr, "faissproxy: %s\n", fpx_vecfile_errmsg (file));
            status = EXIT_FAILURE;
        }
        else
        if (fpx_add (client, info.name, n, info.d, x, &ntotal))
            status = s_fail (client);
        else
            added += n;
    }
    free (x);
    fpx_vecfile_close (&file, false, NULL, 0);
    if (status == EXIT_SUCCESS)
        printf ("added %lld vectors to %s; ntotal %lld\n", (long long) added, info.name,
                (long long) (added ? ntotal : info.ntotal));
    else
    if (added)
        fprintf (stderr, "faissproxy: %lld vectors were added before the error\n",
                 (long long) added);
    return status;
}

//  Prints the results of n queries, numbered from `first`.
static void
s_print_results (int64_t first, int64_t n, int k, const float *D, const int64_t *I, bool json)
{
    for (int64_t q = 0; q < n; q++) {
        const float *distances = D + q * k;
        const int64_t *labels = I + q * k;
        if (json) {
            printf ("{\"query\": %lld, \"ids\": [", (long long) (first + q));
            for (int j = 0; j < k; j++)
                printf ("%s%lld", j ? ", " : "", (long long) labels [j]);
            printf ("], \"distances\": [");
            for (int j = 0; j < k; j++)
                printf ("%s%.9g", j ? ", " : "", distances [j]);
            printf ("]}\n");
            continue;
        }
        printf ("%lld:", (long long) (first + q));
        for (int j = 0; j < k; j++)
            if (labels [j] >= 0)       //  -1: fewer than k results
                printf ("%s %lld (%g)", j ? "," : "", (long long) labels [j], distances [j]);
        printf ("\n");
    }
}

static void
s_print_info_sections (const fpx_info_t *info)
{
    for (int s = 0; s <= S_SECTIONS; s++) {
        bool titled = false;
        for (size_t i = 0; i < fpx_info_count (info); i++) {
            const char *key = fpx_info_key (info, i);
            if (s_section_of (key) != s || s_in_rows (key))
                continue;
            if (!titled)
                printf ("%s# %s\n", s ? "\n" : "", s < S_SECTIONS ? s_sections [s].title : "Other");
            titled = true;
            const char *dot = strchr (key, '.');
            bool strip = s < S_SECTIONS && s_sections [s].strip && dot;
            printf ("%s:%s\n", strip ? dot + 1 : key, fpx_info_text_at (info, i));
        }
        if (s < S_SECTIONS && strcmp (s_sections [s].title, "Indexes") == 0)
            s_print_rows (info, "index_list", "name");
        if (s < S_SECTIONS && strcmp (s_sections [s].title, "All tenants") == 0)
            s_print_rows (info, "server.tenants", "tenant");
    }
}

//  info [--json] [--all] [--indexes N]
static int
s_cmd_info (fpx_client_t *client, char **args, const s_flags_t *options)
{
    (void) options;             //  info reads its own options (below)
    bool json = false;
    int flags = 0, max_indexes = 0;
    for (int i = 0; i < 4 && args [i]; i++) {
        if (strcmp (args [i], "--json") == 0)
            json = true;
        else
        if (strcmp (args [i], "--all") == 0)
            flags |= FPX_INFO_ALL;
        else
        if (strcmp (args [i], "--indexes") == 0 && i + 1 < 4 && args [i + 1]) {
            i++;
            if (!s_parse_int (args [i], &max_indexes) || max_indexes < 0
            ||  max_indexes > FPX_INFO_INDEXES_MAX)
                return s_usage_error ("--indexes takes 0 to 1000, got '%s'", args [i]);
            if (max_indexes == 0)
                max_indexes = -1;           //  none (0 asks for the default)
        }
        else
            return s_usage_error ("info: unknown or incomplete argument '%s'", args [i]);
    }
    fpx_info_t *info;
    if (fpx_info (client, max_indexes, flags, &info))
        return s_fail (client);
    if (json)
        printf ("%s\n", fpx_info_json (info));
    else
        s_print_info_sections (info);
    fpx_info_free (&info);
    return EXIT_SUCCESS;
}

//  search NAME [FILE|-]: k nearest neighbours of each query.
static int
s_cmd_search (fpx_client_t *client, char **args, const s_flags_t *flags)
{
    int k = flags->k > 0 ? flags->k : 10;
    fpx_index_info_t info;
    int64_t batch;
    fpx_vecfile_t *file = s_open_input (client, args [0], args [1], flags,
                                        (size_t) k * (sizeof (float) + sizeof (int64_t)),
                                        &info, &batch);
    if (!file)
        return EXIT_FAILURE;
    float *x = malloc ((size_t) batch * (size_t) info.d * sizeof (float));
    float *D = malloc ((size_t) batch * (size_t) k * sizeof (float));
    int64_t *I = malloc ((size_t) batch * (size_t) k * sizeof (int64_t));
    int status = EXIT_SUCCESS;
    if (!x || !D || !I) {
        fprintf (stderr, "faissproxy: out of memory\n");
        status = EXIT_FAILURE;
    }
    fpx_search_params_t params = { .nprobe = flags->nprobe, .efSearch = flags->ef_search };
    int64_t n, done = 0;
    while (status == EXIT_SUCCESS && (n = fpx_vecfile_read (file, x, batch)) != 0) {
        if (n < 0) {
            fprintf (stderr, "faissproxy: %s\n", fpx_vecfile_errmsg (file));
            status = EXIT_FAILURE;
        }
        else
        if (fpx_search (client, info.name, n, info.d, x, k, &params, D, I))
            status = s_fail (client);
        else {
            s_print_results (done, n, k, D, I, flags->json);
            done += n;
        }
    }
    free (x);
    free (D);
    free (I);
    fpx_vecfile_close (&file, false, NULL, 0);
    return status;
}

typedef struct {
    const char *name;
    int min_args, max_args;     //  positional arguments
    const char *flags;          //  the options it takes, as "--batch --ids "
    int (*run) (fpx_client_t *client, char **args, const s_flags_t *flags);
} s_command_t;

static const s_command_t s_commands [] = {
    { "ping",     0, 0, "", s_cmd_ping },
    { "info",     0, 4, "", s_cmd_info },
    { "list",     0, 0, "", s_cmd_list },
    { "create",   3, 4, "", s_cmd_create },
    { "describe", 1, 1, "", s_cmd_describe },
    { "drop",     1, 1, "", s_cmd_drop },
    { "save",     1, 1, "", s_cmd_save },
    { "backup",   2, 2, "", s_cmd_backup },
    { "restore",  2, 3, "", s_cmd_restore },
    { "import",   2, 2, "--ids --batch --train --offset --no-verify ", s_cmd_import },
    { "export",   2, 2, "--batch ", s_cmd_export },
    { "add",      1, 2, "--batch ", s_cmd_add },
    { "search",   1, 2, "-k --batch --nprobe --ef-search --json ", s_cmd_search },
};

/* ---- keygen: local, no server ----------------------------------------- */

//  keygen TENANT [ROLE]: a new random API key, and the keys-file line the
//  server needs (its BLAKE2b-256 hash, "b2:" and hex; server/auth.h).
static int
s_keygen_api (const char *tenant, const char *role)
{
    if (strcmp (role, "read") && strcmp (role, "write") && strcmp (role, "admin"))
        return s_usage_error ("ROLE is read, write or admin, not '%s'", role);
    if (!*tenant || strlen (tenant) > FPX_INDEX_NAME_MAX || strpbrk (tenant, " \t\n#"))
        return s_usage_error ("invalid tenant name '%s'", tenant);
    unsigned char random [24], hash [32];
    char key [2 * sizeof random + 1], hex [2 * sizeof hash + 1];
    randombytes_buf (random, sizeof random);
    sodium_bin2hex (key, sizeof key, random, sizeof random);
    crypto_generichash (hash, sizeof hash, (const unsigned char *) key, strlen (key), NULL, 0);
    sodium_bin2hex (hex, sizeof hex, hash, sizeof hash);
    fprintf (stderr, "# line 1: the client's key; line 2: append to faissproxyd's --keys-file\n");
    printf ("FAISS_PROXY_API_KEY=%s\n%s %s b2:%s\n", key, tenant, role, hex);
    sodium_memzero (key, sizeof key);
    return EXIT_SUCCESS;
}

//  keygen --curve FILE: a new CURVE key pair for faissproxyd
//  --curve-secret-file, written to FILE (created, mode 0600); prints the
//  public key that clients need.
static int
s_keygen_curve (const char *path)
{
    char public_key [41], secret_key [41];
    if (zmq_curve_keypair (public_key, secret_key)) {
        fprintf (stderr, "faissproxy: cannot make a CURVE key pair: %s\n", zmq_strerror (zmq_errno ()));
        return EXIT_FAILURE;
    }
    int fd = open (path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    FILE *file = fd >= 0 ? fdopen (fd, "w") : NULL;
    if (!file) {
        fprintf (stderr, "faissproxy: cannot create %s: %s\n", path, strerror (errno));
        if (fd >= 0)
            close (fd);
        return EXIT_FAILURE;
    }
    fprintf (file, "# faissproxyd CURVE key pair (faissproxy keygen --curve): keep it secret\n"
             "public-key %s\nsecret-key %s\n", public_key, secret_key);
    sodium_memzero (secret_key, sizeof secret_key);
    if (fclose (file)) {
        fprintf (stderr, "faissproxy: cannot write %s: %s\n", path, strerror (errno));
        return EXIT_FAILURE;
    }
    fprintf (stderr, "# the server's public key, for clients (--server-key or this variable):\n");
    printf ("FAISS_PROXY_SERVER_KEY=%s\n", public_key);
    return EXIT_SUCCESS;
}

static int
s_cmd_keygen (int argc, char **argv)
{
    if (sodium_init () < 0) {
        fprintf (stderr, "faissproxy: cannot initialise libsodium\n");
        return EXIT_FAILURE;
    }
    if (argc >= 1 && strcmp (argv [0], "--curve") == 0)
        return argc == 2 ? s_keygen_curve (argv [1])
                         : s_usage_error ("usage: keygen --curve FILE%s", "");
    if (argc < 1 || argc > 2)
        return s_usage_error ("usage: keygen TENANT [ROLE] | keygen --curve FILE%s", "");
    return s_keygen_api (argv [0], argc == 2 ? argv [1] : "write");
}

/* ---- main -------------------------------------------------------------- */

//  Value of option `name` at argv[*i], as "--name VALUE" or "--name=VALUE";
//  NULL if argv[*i] is not that option. Sets *missing when VALUE is.
static const char *
s_option (char **argv, int argc, int *i, const char *name, bool *missing)
{
    size_t len = strlen (name);
    if (strncmp (argv [*i], name, len) != 0)
        return NULL;
    if (argv [*i][len] == '=')
        return argv [*i] + len + 1;
    if (argv [*i][len] != 0)
        return NULL;
    if (*i + 1 >= argc) {
        *missing = true;
        return NULL;
    }
    return argv [++*i];
}

//  Fills options from argv. Returns -1 to go on, else an exit status.
static int
s_parse_options (int argc, char **argv, s_options_t *options)
{
    int i = 1;
    for (; i < argc && argv [i][0] == '-'; i++) {
        bool missing = false;
        const char *value;
        if (strcmp (argv [i], "--") == 0) {
            i++;
            break;
        }
        if (strcmp (argv [i], "-h") == 0 || strcmp (argv [i], "--help") == 0) {
            fputs (s_usage, stdout);
            return EXIT_SUCCESS;
        }
        if (strcmp (argv [i], "--version") == 0) {
            int major, minor, patch;
            zmq_version (&major, &minor, &patch);
            printf ("faissproxy %s (libzmq %d.%d.%d, libsodium %s; the server's FAISS: "
                    "faissproxy ping)\n", FPX_VERSION_STRING, major, minor, patch,
                    sodium_version_string ());
            return EXIT_SUCCESS;
        }
        if ((value = s_option (argv, argc, &i, "--server", &missing)))
            options->server = value;
        else
        if ((value = s_option (argv, argc, &i, "--api-key", &missing)))
            options->api_key = value;
        else
        if ((value = s_option (argv, argc, &i, "--timeout", &missing)))
            options->timeout = value;
        else
        if ((value = s_option (argv, argc, &i, "--connect-timeout", &missing)))
            options->connect_timeout = value;
        else
        if ((value = s_option (argv, argc, &i, "--server-key", &missing)))
            options->server_key = value;
        else
            return s_usage_error (missing ? "option %s needs a value" : "unknown option %s",
                                  argv [i]);
    }
    options->argc = argc - i;
    options->argv = argv + i;
    return -1;
}

//  Parses a whole decimal count ≥ minimum.
static bool
s_parse_count (const char *text, int64_t minimum, int64_t *out)
{
    char *end;
    errno = 0;
    long long value = strtoll (text, &end, 10);
    if (errno || end == text || *end || value < minimum)
        return false;
    *out = value;
    return true;
}

//  Splits a command's arguments into positional ones (args[4]) and the
//  options the command takes (command->flags). Returns -1 to go on, else
//  an exit status.
static int
s_parse_command (const s_command_t *command, int argc, char **argv, char **args, s_flags_t *flags)
{
    int given = 0;
    bool options_end = !*command->flags;    //  "-x" is an argument of those without options
    for (int i = 0; i < argc; i++) {
        const char *arg = argv [i];
        if (options_end || arg [0] != '-' || strcmp (arg, "-") == 0) {
            if (given == command->max_args)
                return s_usage_error ("wrong number of arguments for '%s'", command->name);
            args [given++] = argv [i];
            continue;
        }
        if (strcmp (arg, "--") == 0) {
            options_end = true;
            continue;
        }
        //  "--name VALUE" or "--name=VALUE"; flags have no value.
        char name [32];
        const char *equals = strchr (arg, '=');
        size_t len = equals ? (size_t) (equals - arg) : strlen (arg);
        snprintf (name, sizeof name, "%.*s ", (int) (len < 30 ? len : 30), arg);
        if (len >= 30 || !strstr (command->flags, name) || (name [1] != '-' && len != 2))
            return s_usage_error ("unknown option %s (see faissproxy --help)", arg);
        name [len] = 0;
        bool is_flag = strcmp (name, "--no-verify") == 0 || strcmp (name, "--json") == 0;
        if (is_flag) {
            if (equals)
                return s_usage_error ("option %s takes no value", name);
            flags->no_verify |= strcmp (name, "--no-verify") == 0;
            flags->json |= strcmp (name, "--json") == 0;
            continue;
        }
        const char *value = equals ? equals + 1 : i + 1 < argc ? argv [++i] : NULL;
        if (!value)
            return s_usage_error ("option %s needs a value", name);
        int64_t number = 0;
        if (strcmp (name, "--ids") == 0) {
            flags->ids = value;
            continue;
        }
        int64_t minimum = strcmp (name, "--offset") == 0 ? 0 : 1;
        if (!s_parse_count (value, minimum, &number)
        ||  (strcmp (name, "--batch") && strcmp (name, "--offset") && strcmp (name, "--train")
             && number > INT_MAX))
            return s_usage_error (minimum ? "option %s needs a positive integer"
                                          : "option %s needs an integer ≥ 0", name);
        if (strcmp (name, "--batch") == 0)
            flags->batch = number;
        else
        if (strcmp (name, "--train") == 0)
            flags->train = number;
        else
        if (strcmp (name, "--offset") == 0)
            flags->offset = number;
        else
        if (strcmp (name, "-k") == 0)
            flags->k = (int) number;
        else
        if (strcmp (name, "--nprobe") == 0)
            flags->nprobe = (int) number;
        else
            flags->ef_search = (int) number;
    }
    if (given < command->min_args)
        return s_usage_error ("wrong number of arguments for '%s'", command->name);
    return -1;
}

//  Runs the command line's command on a fresh client.
static int
s_run (const s_options_t *options, const s_command_t *command)
{
    //  Commands read args [0 .. max_args - 1]; missing ones are NULL.
    char *args [4] = { NULL };
    s_flags_t flags = { 0 };
    int status = s_parse_command (command, options->argc - 1, options->argv + 1, args, &flags);
    if (status >= 0)
        return status;
    int timeout = 0, connect_timeout = 0;
    if (options->timeout && !s_parse_int (options->timeout, &timeout))
        return s_usage_error ("--timeout must be an integer (ms), got '%s'", options->timeout);
    if (options->connect_timeout && !s_parse_int (options->connect_timeout, &connect_timeout))
        return s_usage_error ("--connect-timeout must be an integer (ms), got '%s'",
                              options->connect_timeout);
    fpx_client_options_t client_options = {
        .endpoint = options->server, .api_key = options->api_key,
        .server_key = options->server_key
    };
    fpx_client_t *client;
    char errmsg [512];
    if (fpx_client_open (&client_options, &client, errmsg, sizeof errmsg)) {
        fprintf (stderr, "faissproxy: %s\n", errmsg);
        return EXIT_FAILURE;
    }
    if (options->timeout)
        fpx_client_set_timeout (client, timeout);
    if (options->connect_timeout)
        fpx_client_set_connect_timeout (client, connect_timeout);
    status = command->run (client, args, &flags);
    fpx_client_destroy (&client);
    return status;
}

int
main (int argc, char **argv)
{
    s_options_t options = { 0 };
    int status = s_parse_options (argc, argv, &options);
    if (status >= 0)
        return status;
    if (options.argc == 0) {
        fputs (s_usage, stderr);
        return EXIT_USAGE;
    }
    const char *name = options.argv [0];
    if (strcmp (name, "help") == 0) {
        fputs (s_usage, stdout);
        return EXIT_SUCCESS;
    }
    if (strcmp (name, "keygen") == 0)
        return s_cmd_keygen (options.argc - 1, options.argv + 1);
    for (size_t i = 0; i < sizeof s_commands / sizeof s_commands [0]; i++) {
        const s_command_t *command = &s_commands [i];
        if (strcmp (name, command->name) != 0)
            continue;
        return s_run (&options, command);
    }
    return s_usage_error ("unknown command '%s'", name);
}
