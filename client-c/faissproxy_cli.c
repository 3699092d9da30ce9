/*  faissproxy_cli.c — `faissproxy`, the admin and debug command line of
    faissproxyd (as redis-cli is to redis).

    Built only on the public API (faissproxy.h): it must not include
    protocol/ headers nor speak the wire format itself. keygen is local:
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

#define EXIT_USAGE 2

static const char *s_usage =
    "usage: faissproxy [--server ENDPOINT] [--api-key KEY] [--server-key KEY] [--timeout MS]\n"
    "                  [--connect-timeout MS] COMMAND [ARGS]\n"
    "\n"
    "commands:\n"
    "  ping                              server, protocol and FAISS versions, and the\n"
    "                                    round-trip time of a connected ping in µs\n"
    "  list                              this tenant's named indexes, one per line\n"
    "  create NAME DIM FACTORY [l2|ip]   create a named index (metric default: l2)\n"
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
    "                      negative waits forever. restore and backup are not cut by\n"
    "                      it: they wait as long as the connection lives\n"
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
s_cmd_ping (fpx_client_t *client, char **args)
{
    (void) args;
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
s_cmd_list (fpx_client_t *client, char **args)
{
    (void) args;
    char **names;
    size_t count;
    if (fpx_index_list (client, &names, &count))
        return s_fail (client);
    for (size_t i = 0; i < count; i++)
        printf ("%s\n", names [i]);
    fpx_strlist_free (&names, count);
    return EXIT_SUCCESS;
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
    if (info->metric == FPX_METRIC_L2)
        printf ("metric: l2\n");
    else
    if (info->metric == FPX_METRIC_INNER_PRODUCT)
        printf ("metric: ip\n");
    else
        printf ("metric: %d\n", info->metric);
    printf ("factory: %s\n", info->factory);
    printf ("anonymous: %s\n", info->anonymous ? "true" : "false");
    if (info->damaged [0])
        printf ("damaged: %s\n", info->damaged);
    else if (!info->loaded)
        printf ("loaded: false (evicted under the server's memory budget)\n");
    if (info->memory_bytes >= 0)
        printf ("memory_bytes: %lld\n", (long long) info->memory_bytes);
}

static int
s_cmd_create (fpx_client_t *client, char **args)
{
    int d;
    if (!s_parse_int (args [1], &d))
        return s_usage_error ("DIM must be an integer, got '%s'", args [1]);
    int metric = FPX_METRIC_L2;
    if (args [3] && strcasecmp (args [3], "ip") == 0)
        metric = FPX_METRIC_INNER_PRODUCT;
    else
    if (args [3] && strcasecmp (args [3], "l2") != 0)
        return s_usage_error ("metric must be l2 or ip, got '%s'", args [3]);
    fpx_index_info_t info;
    if (fpx_index_create (client, args [0], d, args [2], metric, &info))
        return s_fail (client);
    s_print_info (&info);
    return EXIT_SUCCESS;
}

static int
s_cmd_describe (fpx_client_t *client, char **args)
{
    fpx_index_info_t info;
    if (fpx_index_describe (client, args [0], 1, &info))
        return s_fail (client);
    s_print_info (&info);
    return EXIT_SUCCESS;
}

static int
s_cmd_drop (fpx_client_t *client, char **args)
{
    if (fpx_index_drop (client, args [0]))
        return s_fail (client);
    printf ("dropped %s\n", args [0]);
    return EXIT_SUCCESS;
}

static int
s_cmd_save (fpx_client_t *client, char **args)
{
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
s_cmd_backup (fpx_client_t *client, char **args)
{
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
s_cmd_restore (fpx_client_t *client, char **args)
{
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

typedef struct {
    const char *name;
    int min_args, max_args;
    int (*run) (fpx_client_t *client, char **args);
} s_command_t;

static const s_command_t s_commands [] = {
    { "ping",     0, 0, s_cmd_ping },
    { "list",     0, 0, s_cmd_list },
    { "create",   3, 4, s_cmd_create },
    { "describe", 1, 1, s_cmd_describe },
    { "drop",     1, 1, s_cmd_drop },
    { "save",     1, 1, s_cmd_save },
    { "backup",   2, 2, s_cmd_backup },
    { "restore",  2, 3, s_cmd_restore },
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

//  Runs the command line's command on a fresh client.
static int
s_run (const s_options_t *options, const s_command_t *command)
{
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
    //  Commands read args [0 .. max_args - 1]; missing ones are NULL.
    char *args [4] = { NULL };
    for (int i = 1; i < options->argc; i++)
        args [i - 1] = options->argv [i];
    int status = command->run (client, args);
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
        int given = options.argc - 1;
        if (given < command->min_args || given > command->max_args)
            return s_usage_error ("wrong number of arguments for '%s'", name);
        return s_run (&options, command);
    }
    return s_usage_error ("unknown command '%s'", name);
}
