/*  fpx_test.c — the shared test framework, see fpx_test.h.

    Holds no test of its own. Everything here talks to real things: a real
    faissproxyd child process, real ZeroMQ sockets, FAISS in-process.
*/
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#include "fpx_test.h"

extern char **environ;

/* ---- assertions and running ------------------------------------------------ */

static pthread_mutex_t s_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
    const char *name;
    long checks;
    long failures;
    char reason [1200];
} s_current;
static int s_passed, s_failed;

//  The watched server and the way out of a test whose server died.
static fpx_test_server_t *s_watched;
static jmp_buf s_jump;
static volatile bool s_jump_armed;
static pthread_t s_runner;

extern void omp_set_num_threads (int n);     //  libgomp, linked via -fopenmp

void
fpx_test_local_single_thread (void)
{
    omp_set_num_threads (1);
}

void
fpx_test_watch (fpx_test_server_t *server)
{
    s_watched = server;
}

//  A call timed out: if the watched server is gone, records one failure
//  (the call and why the server died) and leaves the test; else returns.
static void
s_on_timeout (const char *file, int line, const char *call_text)
{
    if (!s_watched || !s_jump_armed || !pthread_equal (pthread_self (), s_runner))
        return;
    if (fpx_test_server_alive (s_watched))
        return;
    s_jump_armed = false;
    fpx_test_fail_ (file, line, "%s; faissproxyd died (status %d: %s); test abandoned", call_text,
                    s_watched->exit_status,
                    s_watched->diagnosis [0] ? s_watched->diagnosis : "no diagnosis in its log");
    longjmp (s_jump, 1);
}

bool
fpx_test_pass_ (void)
{
    pthread_mutex_lock (&s_lock);
    s_current.checks++;
    pthread_mutex_unlock (&s_lock);
    return true;
}

bool
fpx_test_fail_ (const char *file, int line, const char *format, ...)
{
    char text [1024];
    va_list args;
    va_start (args, format);
    vsnprintf (text, sizeof text, format, args);
    va_end (args);
    //  One line per failure on stderr; newlines in quoted server messages
    //  would break "one line per test" on stdout, so flatten them.
    for (char *p = text; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    const char *base = strrchr (file, '/');
    base = base ? base + 1 : file;
    pthread_mutex_lock (&s_lock);
    s_current.checks++;
    if (s_current.failures++ == 0)
        snprintf (s_current.reason, sizeof s_current.reason, "%s:%d: %s", base, line, text);
    fprintf (stderr, "# %s: %s:%d: %s\n", s_current.name ? s_current.name : "?",
             base, line, text);
    pthread_mutex_unlock (&s_lock);
    return false;
}

bool
fpx_check_eq_ (const char *file, int line, const char *a_text, const char *b_text,
               int64_t a, int64_t b)
{
    if (a == b) {
        fpx_test_pass_ ();
        return true;
    }
    fpx_test_fail_ (file, line, "%s == %s: %lld != %lld", a_text, b_text,
                    (long long) a, (long long) b);
    return false;
}

bool
fpx_check_str_ (const char *file, int line, const char *a_text, const char *a,
                const char *b)
{
    if (a && b && strcmp (a, b) == 0) {
        fpx_test_pass_ ();
        return true;
    }
    fpx_test_fail_ (file, line, "%s: \"%s\" != \"%s\"", a_text, a ? a : "(null)",
                    b ? b : "(null)");
    return false;
}

bool
fpx_check_rc_ (const char *file, int line, const char *expr, fpx_client_t *client,
               int rc, int expected)
{
    if (rc == expected) {
        fpx_test_pass_ ();
        return true;
    }
    if (rc == FPX_ETIMEDOUT) {
        char text [512];
        snprintf (text, sizeof text, "%s timed out", expr);
        s_on_timeout (file, line, text);
    }
    fpx_test_fail_ (file, line, "%s returned %d %s (\"%s\"), expected %s", expr, rc,
                    fpx_error_name (rc), client && rc < 0 ? fpx_client_errmsg (client) : "",
                    fpx_error_name (expected));
    return false;
}

bool
fpx_check_ok_ (const char *file, int line, const char *expr, fpx_client_t *client, int rc)
{
    if (rc >= 0) {
        fpx_test_pass_ ();
        return true;
    }
    if (rc == FPX_ETIMEDOUT) {
        char text [512];
        snprintf (text, sizeof text, "%s timed out", expr);
        s_on_timeout (file, line, text);
    }
    fpx_test_fail_ (file, line, "%s failed: %d %s (\"%s\")", expr, rc,
                    fpx_error_name (rc), client ? fpx_client_errmsg (client) : "");
    return false;
}

void
fpx_test_run (const char *name, fpx_test_fn_t *fn, void *arg)
{
    pthread_mutex_lock (&s_lock);
    s_current.name = name;
    s_current.checks = 0;
    s_current.failures = 0;
    s_current.reason [0] = 0;
    pthread_mutex_unlock (&s_lock);

    s_runner = pthread_self ();
    if (setjmp (s_jump) == 0) {
        s_jump_armed = true;
        fn (arg);
    }
    s_jump_armed = false;

    pthread_mutex_lock (&s_lock);
    if (s_current.failures == 0 && s_current.checks == 0) {
        s_current.failures = 1;
        snprintf (s_current.reason, sizeof s_current.reason, "the test made no assertion");
    }
    if (s_current.failures == 0) {
        printf ("ok %s\n", name);
        s_passed++;
    }
    else {
        if (s_current.failures > 1)
            printf ("FAIL %s: %s (+%ld more)\n", name, s_current.reason, s_current.failures - 1);
        else
            printf ("FAIL %s: %s\n", name, s_current.reason);
        s_failed++;
    }
    s_current.name = NULL;
    fflush (stdout);
    pthread_mutex_unlock (&s_lock);
}

void
fpx_test_fail_whole (const char *name, const char *reason)
{
    pthread_mutex_lock (&s_lock);
    printf ("FAIL %s: %s\n", name, reason);
    s_failed++;
    fflush (stdout);
    pthread_mutex_unlock (&s_lock);
}

int
fpx_test_finish (void)
{
    printf ("%d passed, %d failed\n", s_passed, s_failed);
    fflush (stdout);
    return (s_failed == 0 && s_passed > 0) ? 0 : 1;
}

double
fpx_now (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + ts.tv_nsec / 1e9;
}

void
fpx_sleep_ms (int ms)
{
    struct timespec ts = { ms / 1000, (long) (ms % 1000) * 1000000L };
    while (nanosleep (&ts, &ts) == -1 && errno == EINTR)
        ;
}

bool
fpx_test_asan (void)
{
#if defined(__SANITIZE_ADDRESS__)
    return true;
#else
    return false;
#endif
}

/* ---- the server under test ------------------------------------------------- */

char fpx_test_key_a [FPX_API_KEY_MAX + 1];
char fpx_test_key_b [FPX_API_KEY_MAX + 1];
static int s_started;              //  servers started, for log names

static void
s_init_keys (void)
{
    if (fpx_test_key_a [0])
        return;
    struct timespec ts;
    clock_gettime (CLOCK_REALTIME, &ts);
    unsigned salt = (unsigned) (ts.tv_nsec ^ (getpid () * 2654435761u));
    snprintf (fpx_test_key_a, sizeof fpx_test_key_a, "ka-%d-%08x", (int) getpid (), salt);
    snprintf (fpx_test_key_b, sizeof fpx_test_key_b, "kb-%d-%08x", (int) getpid (), salt * 7919u + 1);
}

static const char *
s_daemon_path (char *buf, size_t size)   //  size >= 4200
{
    const char *env = getenv ("FPX_DAEMON");
    if (env && *env)
        return env;
    //  BUILD/tests/test_x → BUILD/bin/faissproxyd
    char exe [4000];
    ssize_t n = readlink ("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return "build/bin/faissproxyd";
    exe [n] = 0;
    char *slash = strrchr (exe, '/');
    if (slash)
        *slash = 0;
    slash = strrchr (exe, '/');
    if (slash)
        *slash = 0;
    snprintf (buf, size, "%s/bin/faissproxyd", exe);
    return buf;
}

static int
s_rm_entry (const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void) sb; (void) flag; (void) ftw;
    remove (path);
    return 0;
}

void
fpx_test_temp_dir (char *out, size_t size, const char *what)
{
    snprintf (out, size, "/tmp/fpx-%s-%d-XXXXXX", what, (int) getpid ());
    if (!mkdtemp (out))
        out [0] = 0;
}

void
fpx_test_remove_dir (const char *path)
{
    if (nftw (path, s_rm_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
        fprintf (stderr, "# could not remove %s\n", path);
}

static void
s_print_log_tail (const char *path)
{
    FILE *f = fopen (path, "r");
    if (!f)
        return;
    static char lines [40][512];
    int count = 0;
    while (fgets (lines [count % 40], sizeof lines [0], f))
        count++;
    fclose (f);
    int first = count > 40 ? count - 40 : 0;
    fprintf (stderr, "# --- server log %s (last %d lines) ---\n", path, count - first);
    for (int i = first; i < count; i++)
        fprintf (stderr, "# | %s", lines [i % 40]);
    fprintf (stderr, "# ---\n");
}

//  The first line of the log that says why the server went wrong.
static void
s_diagnose (fpx_test_server_t *self)
{
    self->diagnosis [0] = 0;
    FILE *f = fopen (self->log_path, "r");
    if (!f)
        return;
    const char *marks [] = { "ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error",
                             "terminate called", "Assertion", "Segmentation", "Aborted" };
    char line [512];
    while (fgets (line, sizeof line, f)) {
        for (size_t i = 0; i < sizeof marks / sizeof marks [0]; i++)
            if (strstr (line, marks [i])) {
                line [strcspn (line, "\n")] = 0;
                snprintf (self->diagnosis, sizeof self->diagnosis, "%s", line);
                fclose (f);
                return;
            }
    }
    fclose (f);
}

//  Waits for the child's exit for up to timeout_ms. Returns true if it
//  exited (status filled in).
static bool
s_wait_exit (pid_t pid, int timeout_ms, int *status)
{
    double deadline = fpx_now () + timeout_ms / 1000.0;
    while (true) {
        pid_t rc = waitpid (pid, status, WNOHANG);
        if (rc == pid)
            return true;
        if (rc < 0 && errno != EINTR)
            return true;
        if (fpx_now () > deadline)
            return false;
        fpx_sleep_ms (20);
    }
}

static int
s_status_code (int status)
{
    if (WIFEXITED (status))
        return WEXITSTATUS (status);
    if (WIFSIGNALED (status))
        return 128 + WTERMSIG (status);
    return -1;
}

//  The first endpoint the daemon wrote to its --endpoint-file: 1 while
//  the file is not there yet, 0 with endpoint and port filled in.
static int
s_read_endpoint (fpx_test_server_t *self, const char *path)
{
    FILE *file = fopen (path, "r");
    if (!file)
        return 1;
    char line [256] = "";
    bool got = fgets (line, sizeof line, file) != NULL;
    fclose (file);
    line [strcspn (line, "\n")] = 0;
    const char *colon = strrchr (line, ':');
    if (!got || strncmp (line, "tcp://", 6) || !colon || strlen (line) >= sizeof self->endpoint)
        return -1;
    snprintf (self->endpoint, sizeof self->endpoint, "%s", line);
    self->port = atoi (colon + 1);
    return self->port > 0 ? 0 : -1;
}

//  Starts the daemon on a port of the system's choosing (--bind
//  tcp://127.0.0.1:*), learns it from --endpoint-file, and pings there.
//  Returns 0 (ready) or -1.
static int
s_start_once (fpx_test_server_t *self, const char *daemon, const char *const *extra_args,
              const char *const *extra_env)
{
    snprintf (self->data_dir, sizeof self->data_dir, "/tmp/fpx-test-data-%d-XXXXXX", (int) getpid ());
    if (!mkdtemp (self->data_dir)) {
        fprintf (stderr, "# mkdtemp: %s\n", strerror (errno));
        return -1;
    }
    snprintf (self->log_path, sizeof self->log_path, "/tmp/fpx-test-%d-%d.log", (int) getpid (),
              ++s_started);
    char endpoint_file [300];
    snprintf (endpoint_file, sizeof endpoint_file, "%s/endpoint", self->data_dir);

    //  Everything the child needs is prepared before fork: the parent may
    //  have threads (ZeroMQ's), so the child only calls async-signal-safe
    //  functions before exec.
    char key_a [160], key_b [160];
    snprintf (key_a, sizeof key_a, "%s:%s", FPX_TEST_TENANT_A, fpx_test_key_a);
    snprintf (key_b, sizeof key_b, "%s:%s", FPX_TEST_TENANT_B, fpx_test_key_b);
    const char *argv [64];
    int argc = 0;
    argv [argc++] = daemon;
    argv [argc++] = "--bind";       argv [argc++] = "tcp://127.0.0.1:*";
    argv [argc++] = "--endpoint-file"; argv [argc++] = endpoint_file;
    argv [argc++] = "--api-key";    argv [argc++] = key_a;
    argv [argc++] = "--api-key";    argv [argc++] = key_b;
    argv [argc++] = "--data-dir";   argv [argc++] = self->data_dir;
    argv [argc++] = "--log-level";  argv [argc++] = "warn";
    for (int i = 0; extra_args && extra_args [i] && argc < 62; i++)
        argv [argc++] = extra_args [i];
    argv [argc] = NULL;

    size_t nenv = 0;
    while (environ [nenv])
        nenv++;
    size_t nextra = 0;
    while (extra_env && extra_env [nextra])
        nextra++;
    const char **envp = calloc (nenv + nextra + 1, sizeof *envp);
    size_t ne = 0;
    for (size_t i = 0; i < nenv; i++) {
        bool overridden = false;
        for (size_t j = 0; j < nextra; j++) {
            const char *eq = strchr (extra_env [j], '=');
            size_t len = eq ? (size_t) (eq - extra_env [j]) + 1 : strlen (extra_env [j]);
            if (strncmp (environ [i], extra_env [j], len) == 0)
                overridden = true;
        }
        if (!overridden)
            envp [ne++] = environ [i];
    }
    for (size_t j = 0; j < nextra; j++)
        envp [ne++] = extra_env [j];
    envp [ne] = NULL;

    int log_fd = open (self->log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    pid_t parent = getpid ();
    fflush (stdout);
    fflush (stderr);
    pid_t pid = fork ();
    if (pid == 0) {
        prctl (PR_SET_PDEATHSIG, SIGKILL);
        if (getppid () != parent)
            _exit (127);
        if (log_fd >= 0) {
            dup2 (log_fd, 1);
            dup2 (log_fd, 2);
        }
        int devnull = open ("/dev/null", O_RDONLY);
        if (devnull >= 0)
            dup2 (devnull, 0);
        execve (daemon, (char *const *) argv, (char *const *) envp);
        _exit (127);
    }
    free (envp);
    if (log_fd >= 0)
        close (log_fd);
    if (pid < 0) {
        fprintf (stderr, "# fork: %s\n", strerror (errno));
        return -1;
    }
    self->pid = pid;

    double deadline = fpx_now () + (fpx_test_asan () ? 60 : 30);
    int result = 1;
    int last_rc = 0;
    fpx_client_t *client = NULL;
    while (result == 1) {
        int status;
        if (waitpid (pid, &status, WNOHANG) == pid) {
            fprintf (stderr, "# faissproxyd exited during startup with status %d\n",
                     s_status_code (status));
            s_print_log_tail (self->log_path);
            self->pid = 0;
            result = -1;
            break;
        }
        if (!client) {
            int found = s_read_endpoint (self, endpoint_file);
            if (found < 0) {
                fprintf (stderr, "# %s does not name a tcp:// endpoint\n", endpoint_file);
                result = -1;
            }
            else if (found == 0 && !(client = fpx_client_new (self->endpoint, fpx_test_key_a))) {
                fprintf (stderr, "# fpx_client_new (%s) returned NULL\n", self->endpoint);
                result = -1;
            }
            if (client)
                fpx_client_set_timeout (client, 300);
        }
        if (client && (last_rc = fpx_ping (client, NULL)) == 0)
            result = 0;
        else if (result == 1 && fpx_now () > deadline) {
            fprintf (stderr, "# faissproxyd on %s: no successful ping (last %s: %s)\n",
                     client ? self->endpoint : "(no endpoint file yet)", fpx_error_name (last_rc),
                     client ? fpx_client_errmsg (client) : "");
            result = -1;
        }
        else if (result == 1)
            fpx_sleep_ms (client ? 50 : 20);
    }
    fpx_client_destroy (&client);
    if (result != 0 && self->pid) {
        kill (pid, SIGKILL);
        int status;
        waitpid (pid, &status, 0);
        self->pid = 0;
        s_print_log_tail (self->log_path);
    }
    if (result != 0)
        fpx_test_remove_dir (self->data_dir);
    return result;
}

int
fpx_test_server_start (fpx_test_server_t *self, const char *const *extra_args,
                       const char *const *extra_env)
{
    memset (self, 0, sizeof *self);
    self->exit_status = -1;
    s_init_keys ();
    char buf [4200];
    const char *daemon = s_daemon_path (buf, sizeof buf);
    if (access (daemon, X_OK) != 0) {
        fprintf (stderr, "# daemon %s is not executable: %s\n", daemon, strerror (errno));
        return -1;
    }
    return s_start_once (self, daemon, extra_args, extra_env);
}

int
fpx_test_server_stop (fpx_test_server_t *self, int timeout_s)
{
    if (self->pid <= 0)
        return self->exit_status;
    int status = 0;
    int code;
    kill (self->pid, SIGTERM);
    if (s_wait_exit (self->pid, timeout_s * 1000, &status))
        code = s_status_code (status);
    else {
        fprintf (stderr, "# faissproxyd did not exit within %d s of SIGTERM; killing it\n", timeout_s);
        kill (self->pid, SIGKILL);
        waitpid (self->pid, &status, 0);
        code = -1;
    }
    self->pid = 0;
    self->exit_status = code;
    if (code != 0 && code != 128 + SIGKILL) {
        s_diagnose (self);
        s_print_log_tail (self->log_path);
        fprintf (stderr, "# faissproxyd exit status %d; log kept in %s\n", code, self->log_path);
    }
    else {
        //  0, or SIGKILL: sent on purpose (by a test, or by us above).
        if (code != 0)
            snprintf (self->diagnosis, sizeof self->diagnosis, "killed by SIGKILL");
        unlink (self->log_path);
    }
    nftw (self->data_dir, s_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return code;
}

bool
fpx_test_server_alive (fpx_test_server_t *self)
{
    if (self->pid <= 0)
        return false;
    int status;
    pid_t rc = waitpid (self->pid, &status, WNOHANG);
    if (rc == self->pid) {
        fprintf (stderr, "# faissproxyd exited unexpectedly with status %d; log kept in %s\n",
                 s_status_code (status), self->log_path);
        s_print_log_tail (self->log_path);
        s_diagnose (self);
        self->exit_status = s_status_code (status);
        self->pid = 0;
        return false;
    }
    return true;
}

long
fpx_test_server_rss_kb (const fpx_test_server_t *self)
{
    char path [64];
    snprintf (path, sizeof path, "/proc/%d/status", (int) self->pid);
    FILE *f = fopen (path, "r");
    if (!f)
        return -1;
    char line [256];
    long rss = -1;
    while (fgets (line, sizeof line, f))
        if (strncmp (line, "VmRSS:", 6) == 0) {
            rss = strtol (line + 6, NULL, 10);
            break;
        }
    fclose (f);
    return rss;
}

fpx_client_t *
fpx_test_client (const fpx_test_server_t *self, const char *key)
{
    fpx_client_t *client = fpx_client_new (self->endpoint, key);
    if (client)
        fpx_client_set_timeout (client, fpx_test_asan () ? 45000 : 30000);
    return client;
}

int
fpx_test_fresh_ping (const fpx_test_server_t *self)
{
    fpx_client_t *client = fpx_test_client (self, fpx_test_key_a);
    if (!client)
        return FPX_ECONNECT;
    fpx_client_set_timeout (client, 10000);
    int rc = fpx_ping (client, NULL);
    fpx_client_destroy (&client);
    return rc;
}

/* ---- raw requests ----------------------------------------------------------- */

fpx_raw_t *
fpx_raw_new (const char *endpoint)
{
    fpx_raw_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->ctx = zmq_ctx_new ();
    self->sock = self->ctx ? zmq_socket (self->ctx, ZMQ_DEALER) : NULL;
    int linger = 0;
    if (!self->sock
    ||  zmq_setsockopt (self->sock, ZMQ_LINGER, &linger, sizeof linger)
    ||  zmq_connect (self->sock, endpoint)) {
        fpx_raw_destroy (&self);
        return NULL;
    }
    self->next_id = 1000;
    return self;
}

void
fpx_raw_destroy (fpx_raw_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    fpx_raw_t *self = *self_p;
    if (self->sock)
        zmq_close (self->sock);
    if (self->ctx)
        zmq_ctx_term (self->ctx);
    free (self);
    *self_p = NULL;
}

int
fpx_raw_send (fpx_raw_t *self, int nframes, const void *const *data, const size_t *sizes)
{
    static const char empty [1] = { 0 };
    for (int i = 0; i < nframes; i++) {
        const void *ptr = data [i] ? data [i] : empty;
        if (zmq_send (self->sock, ptr, sizes [i], i < nframes - 1 ? ZMQ_SNDMORE : 0) < 0)
            return -1;
    }
    return 0;
}

int
fpx_raw_recv (fpx_raw_t *self, fpx_raw_reply_t *reply, int timeout_ms)
{
    memset (reply, 0, sizeof *reply);
    reply->header_rc = -99;
    reply->params_rc = -99;
    zmq_pollitem_t item = { self->sock, 0, ZMQ_POLLIN, 0 };
    if (zmq_poll (&item, 1, timeout_ms) <= 0)
        return -1;
    int more = 1;
    while (more) {
        zmq_msg_t msg;
        zmq_msg_init (&msg);
        if (zmq_msg_recv (&msg, self->sock, 0) < 0) {
            zmq_msg_close (&msg);
            return -1;
        }
        if (reply->nframes < FPX_RAW_FRAMES_MAX) {
            size_t size = zmq_msg_size (&msg);
            uint8_t *copy = malloc (size ? size : 1);
            if (copy)
                memcpy (copy, zmq_msg_data (&msg), size);
            reply->frames [reply->nframes] = copy;
            reply->sizes [reply->nframes] = size;
        }
        reply->nframes++;
        more = zmq_msg_more (&msg);
        zmq_msg_close (&msg);
    }
    if (reply->nframes >= 1)
        reply->header_rc = fpx_header_decode_reply (&reply->header, reply->frames [0], reply->sizes [0]);
    if (reply->nframes >= 2) {
        reply->params_rc = fpx_params_decode (&reply->result, reply->frames [1], reply->sizes [1]);
        if (reply->params_rc == 0
        &&  fpx_params_copy_str (&reply->result, "error", reply->error, sizeof reply->error) != 0)
            reply->error [0] = 0;
    }
    return 0;
}

void
fpx_raw_reply_free (fpx_raw_reply_t *reply)
{
    for (int i = 0; i < reply->nframes && i < FPX_RAW_FRAMES_MAX; i++)
        free (reply->frames [i]);
    memset (reply, 0, sizeof *reply);
}

void
fpx_raw_header (uint8_t out [FPX_REQUEST_HEADER_SIZE], int opcode, uint64_t request_id,
                const char *key)
{
    fpx_header_t header;
    memset (&header, 0, sizeof header);
    header.version = FPX_PROTOCOL_VERSION;
    header.opcode = (uint16_t) opcode;
    header.request_id = request_id;
    snprintf (header.api_key, sizeof header.api_key, "%s", key ? key : "");
    fpx_header_encode_request (&header, out);
}

int
fpx_raw_call (fpx_raw_t *self, int opcode, const char *key, const void *params,
              size_t params_size, int narrays, const void *const *arrays,
              const size_t *sizes, fpx_raw_reply_t *reply)
{
    uint8_t header [FPX_REQUEST_HEADER_SIZE];
    uint64_t id = self->next_id++;
    fpx_raw_header (header, opcode, id, key);
    const void *data [FPX_RAW_FRAMES_MAX];
    size_t lens [FPX_RAW_FRAMES_MAX];
    int n = 0;
    data [n] = header; lens [n++] = sizeof header;
    data [n] = params; lens [n++] = params ? params_size : 0;
    for (int i = 0; i < narrays && n < FPX_RAW_FRAMES_MAX; i++) {
        data [n] = arrays [i];
        lens [n++] = sizes [i];
    }
    memset (reply, 0, sizeof *reply);
    if (fpx_raw_send (self, n, data, lens))
        return -1000;
    double deadline = fpx_now () + (fpx_test_asan () ? 60 : 20);
    while (true) {
        int left = (int) ((deadline - fpx_now ()) * 1000);
        if (left <= 0 || fpx_raw_recv (self, reply, left))
            return -1000;
        if (reply->header_rc == 0 && reply->header.request_id != id) {
            fpx_raw_reply_free (reply);         //  a stale reply: skip it
            continue;
        }
        if (reply->header_rc != 0)
            return -1000;
        return reply->header.status;
    }
}

void
fpx_mp_init (fpx_mp_t *self)
{
    msgpack_sbuffer_init (&self->buf);
    msgpack_packer_init (&self->pk, &self->buf, msgpack_sbuffer_write);
}

void
fpx_mp_free (fpx_mp_t *self)
{
    msgpack_sbuffer_destroy (&self->buf);
}

/* ---- data ------------------------------------------------------------------- */

void
fpx_rng_seed (fpx_rng_t *self, uint64_t seed)
{
    self->state = seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull;
}

uint64_t
fpx_rng_next (fpx_rng_t *self)
{
    //  splitmix64
    uint64_t z = (self->state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

float
fpx_rng_uniform (fpx_rng_t *self)
{
    return (float) (fpx_rng_next (self) >> 40) * (1.0f / 16777216.0f);
}

float
fpx_rng_normal (fpx_rng_t *self)
{
    double u1 = ((double) (fpx_rng_next (self) >> 11) + 1.0) / 9007199254740993.0;
    double u2 = (double) (fpx_rng_next (self) >> 11) / 9007199254740992.0;
    return (float) (sqrt (-2.0 * log (u1)) * cos (2.0 * M_PI * u2));
}

float *
fpx_data_uniform (uint64_t seed, int64_t n, int d)
{
    fpx_rng_t rng;
    fpx_rng_seed (&rng, seed);
    float *x = malloc ((size_t) n * (size_t) d * sizeof *x + 1);
    if (!x)
        return NULL;
    for (int64_t i = 0; i < n * d; i++)
        x [i] = fpx_rng_uniform (&rng);
    return x;
}

float *
fpx_data_clustered (uint64_t seed, int64_t n, int d, int nclusters, float sigma)
{
    fpx_rng_t rng;
    fpx_rng_seed (&rng, seed);
    float *centres = malloc ((size_t) nclusters * (size_t) d * sizeof *centres);
    float *x = malloc ((size_t) n * (size_t) d * sizeof *x + 1);
    if (!centres || !x) {
        free (centres);
        free (x);
        return NULL;
    }
    for (int64_t i = 0; i < (int64_t) nclusters * d; i++)
        centres [i] = fpx_rng_uniform (&rng);
    for (int64_t i = 0; i < n; i++) {
        int c = (int) (fpx_rng_next (&rng) % (uint64_t) nclusters);
        for (int j = 0; j < d; j++)
            x [i * d + j] = centres [(int64_t) c * d + j] + sigma * fpx_rng_normal (&rng);
    }
    free (centres);
    return x;
}

/* ---- FAISS in-process ------------------------------------------------------------ */

const char *
fpx_local_error (void)
{
    const char *text = faiss_get_last_error ();
    return text ? text : "";
}

FaissIndex *
fpx_local_create (int d, const char *factory, int metric, char *why, size_t why_size)
{
    FaissIndex *index = NULL;
    int rc = faiss_index_factory (&index, d, factory, (FaissMetricType) metric);
    if (rc || !index) {
        if (why)
            snprintf (why, why_size, "faiss_index_factory (%d, \"%s\"): %d %s", d, factory,
                      rc, fpx_local_error ());
        return NULL;
    }
    return index;
}

int
fpx_local_set_param (FaissIndex *index, const char *name, double value)
{
    FaissParameterSpace *space = NULL;
    int rc = faiss_ParameterSpace_new (&space);
    if (rc == 0)
        rc = faiss_ParameterSpace_set_index_parameter (space, index, name, value);
    faiss_ParameterSpace_free (space);
    return rc;
}

int
fpx_local_set_params (FaissIndex *index, const char *params)
{
    FaissParameterSpace *space = NULL;
    int rc = faiss_ParameterSpace_new (&space);
    if (rc == 0)
        rc = faiss_ParameterSpace_set_index_parameters (space, index, params);
    faiss_ParameterSpace_free (space);
    return rc;
}

uint8_t *
fpx_local_serialize (const FaissIndex *index, size_t *size_p)
{
    char *buf = NULL;
    size_t size = 0;
    FILE *f = open_memstream (&buf, &size);
    if (!f)
        return NULL;
    int rc = faiss_write_index (index, f);
    fclose (f);
    if (rc) {
        free (buf);
        return NULL;
    }
    *size_p = size;
    return (uint8_t *) buf;
}

FaissIndex *
fpx_local_deserialize (const uint8_t *bytes, size_t size)
{
    if (size == 0)
        return NULL;
    FILE *f = fmemopen ((void *) bytes, size, "rb");
    if (!f)
        return NULL;
    FaissIndex *index = NULL;
    int rc = faiss_read_index (f, 0, &index);
    fclose (f);
    return rc ? NULL : index;
}

int
fpx_local_in_child (int (*fn) (void *arg), void *arg, char *message, size_t size)
{
    message [0] = 0;
    int fds [2];
    if (pipe (fds))
        return -1000;
    fflush (stdout);
    fflush (stderr);
    pid_t pid = fork ();
    if (pid < 0) {
        close (fds [0]);
        close (fds [1]);
        return -1000;
    }
    if (pid == 0) {
        close (fds [0]);
        int rc = fn (arg);
        const char *text = fpx_local_error ();
        size_t len = strlen (text), done = 0;
        while (rc && done < len) {
            ssize_t n = write (fds [1], text + done, len - done);
            if (n <= 0)
                break;
            done += (size_t) n;
        }
        close (fds [1]);
        _exit (rc ? 1 : 0);
    }
    close (fds [1]);
    size_t got = 0;
    while (got + 1 < size) {
        ssize_t n = read (fds [0], message + got, size - 1 - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t) n;
    }
    message [got] = 0;
    //  Drain what did not fit, so that the child never blocks.
    char sink [256];
    while (read (fds [0], sink, sizeof sink) > 0)
        ;
    close (fds [0]);
    int status;
    while (waitpid (pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (!WIFEXITED (status))
        return -1000;
    return WEXITSTATUS (status);
}

typedef struct { int d; const char *factory; int metric; const uint8_t *bytes; size_t size; } s_child_args_t;

static int
s_child_factory (void *arg)
{
    s_child_args_t *a = arg;
    FaissIndex *index = NULL;
    int rc = faiss_index_factory (&index, a->d, a->factory, (FaissMetricType) a->metric);
    return rc;                  //  the child exits: nothing to free
}

static int
s_child_read (void *arg)
{
    s_child_args_t *a = arg;
    FaissIndex *index = fpx_local_deserialize (a->bytes, a->size);
    return index ? 0 : -1;
}

bool
fpx_local_factory_refuses (int d, const char *factory, int metric, char *message, size_t size)
{
    s_child_args_t args = { d, factory, metric, NULL, 0 };
    return fpx_local_in_child (s_child_factory, &args, message, size) != 0;
}

bool
fpx_local_read_refuses (const uint8_t *bytes, size_t bytes_size, char *message, size_t size)
{
    s_child_args_t args = { 0, NULL, 0, bytes, bytes_size };
    return fpx_local_in_child (s_child_read, &args, message, size) != 0;
}

FaissIndex *
fpx_local_copy (const FaissIndex *index)
{
    size_t size = 0;
    uint8_t *bytes = fpx_local_serialize (index, &size);
    if (!bytes)
        return NULL;
    FaissIndex *copy = fpx_local_deserialize (bytes, size);
    free (bytes);
    return copy;
}

const char *
fpx_faiss_core_message (const char *message)
{
    //  "Error in <function> at <file>:<line>: <text>"
    const char *at = strstr (message, " at ");
    while (at) {
        const char *colon = strchr (at + 4, ':');
        if (!colon)
            break;
        const char *p = colon + 1;
        if (*p >= '0' && *p <= '9') {
            while (*p >= '0' && *p <= '9')
                p++;
            if (p [0] == ':' && p [1] == ' ')
                return p + 2;
        }
        at = strstr (at + 4, " at ");
    }
    return message;
}

bool
fpx_check_faiss_refusal_ (const char *file, int line, fpx_client_t *client, int rc,
                          const char *local_message, const char *what)
{
    const char *remote = client ? fpx_client_errmsg (client) : "";
    if (rc == FPX_ETIMEDOUT) {
        char text [300];
        snprintf (text, sizeof text, "%s timed out", what);
        s_on_timeout (file, line, text);
    }
    if (rc != FPX_EFAISS) {
        fpx_test_fail_ (file, line, "%s: FAISS refuses it in-process (\"%s\") but the server "
                        "returned %d %s (\"%s\"), expected FPX_EFAISS", what,
                        fpx_faiss_core_message (local_message), rc, fpx_error_name (rc),
                        rc < 0 ? remote : "");
        return false;
    }
    const char *core = fpx_faiss_core_message (local_message);
    char want [256];
    snprintf (want, sizeof want, "%s", core);
    //  Compare at most the first line of FAISS's text.
    char *nl = strchr (want, '\n');
    if (nl)
        *nl = 0;
    if (!remote || !*remote || (*want && !strstr (remote, want))) {
        fpx_test_fail_ (file, line, "%s: FPX_EFAISS message \"%s\" does not carry FAISS's \"%s\"",
                        what, remote ? remote : "(null)", want);
        return false;
    }
    fpx_test_pass_ ();
    return true;
}

/* ---- comparison ------------------------------------------------------------------ */

bool
fpx_float_close (float a, float b)
{
    if (a == b)
        return true;
    if (isnan (a) || isnan (b) || isinf (a) || isinf (b))
        return false;
    double fa = fabs ((double) a), fb = fabs ((double) b);
    double scale = fa > fb ? fa : fb;
    if (scale < 1.0)
        scale = 1.0;
    return fabs ((double) a - (double) b) <= 1e-5 * scale;
}

int
fpx_local_knn (const FaissIndex *index, int64_t nq, const float *x, int k, int extra,
               fpx_knn_t *out)
{
    memset (out, 0, sizeof *out);
    int kcols = k + extra;
    out->D = malloc ((size_t) nq * (size_t) kcols * sizeof (float) + 1);
    out->I = malloc ((size_t) nq * (size_t) kcols * sizeof (int64_t) + 1);
    if (!out->D || !out->I) {
        fpx_knn_free (out);
        return -1;
    }
    int rc = faiss_Index_search (index, nq, x, kcols, out->D, out->I);
    if (rc) {
        fpx_knn_free (out);
        return rc;
    }
    out->nq = nq;
    out->k = k;
    out->kcols = kcols;
    return 0;
}

int
fpx_remote_knn (fpx_client_t *client, const char *name, int64_t nq, int d, const float *x,
                int k, const fpx_search_params_t *params, fpx_knn_t *out)
{
    memset (out, 0, sizeof *out);
    size_t count = (nq > 0 && k > 0) ? (size_t) nq * (size_t) k : 0;
    out->D = malloc (count * sizeof (float) + 1);
    out->I = malloc (count * sizeof (int64_t) + 1);
    if (!out->D || !out->I) {
        fpx_knn_free (out);
        return FPX_ENOMEM;
    }
    int rc = fpx_search (client, name, nq, d, x, k, params, out->D, out->I);
    if (rc < 0) {
        fpx_knn_free (out);
        return rc;
    }
    out->nq = nq;
    out->k = k;
    out->kcols = k;
    return rc;
}

void
fpx_knn_free (fpx_knn_t *self)
{
    free (self->D);
    free (self->I);
    memset (self, 0, sizeof *self);
}

static int
s_cmp_i64 (const void *a, const void *b)
{
    int64_t x = *(const int64_t *) a, y = *(const int64_t *) b;
    return x < y ? -1 : x > y;
}

bool
fpx_knn_equal (const fpx_knn_t *ref, const fpx_knn_t *got, char *why, size_t why_size)
{
    if (!ref->D || !got->D) {
        snprintf (why, why_size, "missing result");
        return false;
    }
    if (ref->nq != got->nq || ref->k != got->k) {
        snprintf (why, why_size, "shape %lldx%d vs %lldx%d", (long long) ref->nq, ref->k,
                  (long long) got->nq, got->k);
        return false;
    }
    int k = ref->k, kr = ref->kcols, kg = got->kcols;
    int64_t *sorted = malloc ((size_t) (k + 1) * sizeof *sorted);
    if (!sorted)
        return false;
    bool ok = true;
    for (int64_t q = 0; q < ref->nq && ok; q++) {
        const float *dr = ref->D + q * kr, *dg = got->D + q * kg;
        const int64_t *ir = ref->I + q * kr, *ig = got->I + q * kg;
        for (int j = 0; j < k; j++)
            if (!fpx_float_close (dr [j], dg [j])) {
                snprintf (why, why_size, "query %lld rank %d: distance %.9g, expected %.9g (label %lld, expected %lld)",
                          (long long) q, j, dg [j], dr [j], (long long) ig [j], (long long) ir [j]);
                ok = false;
                break;
            }
        if (!ok)
            break;
        //  Labels distinct within the row (except -1).
        int ns = 0;
        for (int j = 0; j < k; j++)
            if (ig [j] != -1)
                sorted [ns++] = ig [j];
        qsort (sorted, (size_t) ns, sizeof *sorted, s_cmp_i64);
        for (int j = 1; j < ns; j++)
            if (sorted [j] == sorted [j - 1]) {
                snprintf (why, why_size, "query %lld: label %lld appears twice", (long long) q,
                          (long long) sorted [j]);
                ok = false;
                break;
            }
        if (!ok)
            break;
        //  Tie groups of the reference row.
        for (int a = 0; a < k && ok; ) {
            int b = a + 1;
            while (b < kr && fpx_float_close (dr [b], dr [b - 1]))
                b++;
            int end = b < k ? b : k;        //  positions [a, end) are compared
            if (b <= k) {
                //  The group lies within the answer: same multiset.
                if (b - a == 1) {
                    if (ig [a] != ir [a]) {
                        snprintf (why, why_size, "query %lld rank %d: label %lld, expected %lld (distance %.9g)",
                                  (long long) q, a, (long long) ig [a], (long long) ir [a], dr [a]);
                        ok = false;
                    }
                }
                else {
                    size_t n = (size_t) (b - a);
                    int64_t *ga = malloc (2 * n * sizeof *ga);
                    if (!ga) {
                        ok = false;
                        break;
                    }
                    int64_t *gb = ga + n;
                    memcpy (ga, ir + a, n * sizeof *ga);
                    memcpy (gb, ig + a, n * sizeof *gb);
                    qsort (ga, n, sizeof *ga, s_cmp_i64);
                    qsort (gb, n, sizeof *gb, s_cmp_i64);
                    bool same = memcmp (ga, gb, n * sizeof *ga) == 0;
                    free (ga);
                    if (!same) {
                        snprintf (why, why_size, "query %lld ranks %d..%d (tied at %.9g): other labels than expected",
                                  (long long) q, a, b - 1, dr [a]);
                        ok = false;
                    }
                }
            }
            else
            if (b < kr) {
                //  The group crosses rank k and ends within the reference's
                //  extra columns: each answer label must be a member.
                for (int j = a; j < end && ok; j++) {
                    bool member = false;
                    for (int m = a; m < b; m++)
                        if (ir [m] == ig [j])
                            member = true;
                    if (!member) {
                        snprintf (why, why_size, "query %lld rank %d: label %lld is not among the %d labels tied at %.9g",
                                  (long long) q, j, (long long) ig [j], b - a, dr [a]);
                        ok = false;
                    }
                }
            }
            //  else: the group runs past the reference's last column; its
            //  members are not all known, distances were compared above.
            a = b;
        }
    }
    free (sorted);
    return ok;
}

bool
fpx_check_knn_ (const char *file, int line, const fpx_knn_t *ref, const fpx_knn_t *got)
{
    char why [512];
    if (fpx_knn_equal (ref, got, why, sizeof why)) {
        fpx_test_pass_ ();
        return true;
    }
    fpx_test_fail_ (file, line, "k-NN results differ from local FAISS: %s", why);
    return false;
}

int
fpx_local_range (const FaissIndex *index, int64_t nq, const float *x, float radius,
                 fpx_range_t *out)
{
    memset (out, 0, sizeof *out);
    FaissRangeSearchResult *result = NULL;
    int rc = faiss_RangeSearchResult_new (&result, nq);
    if (rc)
        return rc;
    rc = faiss_Index_range_search (index, nq, x, radius, result);
    if (rc) {
        faiss_RangeSearchResult_free (result);
        return rc;
    }
    size_t *lims;
    int64_t *labels;
    float *distances;
    faiss_RangeSearchResult_lims (result, &lims);
    faiss_RangeSearchResult_labels (result, &labels, &distances);
    size_t total = lims [nq];
    out->nq = nq;
    out->lims = malloc ((size_t) (nq + 1) * sizeof *out->lims);
    out->D = malloc (total * sizeof *out->D + 1);
    out->I = malloc (total * sizeof *out->I + 1);
    if (!out->lims || !out->D || !out->I) {
        faiss_RangeSearchResult_free (result);
        fpx_range_free (out);
        return -1;
    }
    for (int64_t i = 0; i <= nq; i++)
        out->lims [i] = lims [i];
    memcpy (out->D, distances, total * sizeof *out->D);
    memcpy (out->I, labels, total * sizeof *out->I);
    faiss_RangeSearchResult_free (result);
    return 0;
}

void
fpx_range_free (fpx_range_t *self)
{
    free (self->lims);
    free (self->D);
    free (self->I);
    memset (self, 0, sizeof *self);
}

typedef struct { int64_t label; float distance; } s_pair_t;

static int
s_cmp_pair (const void *a, const void *b)
{
    const s_pair_t *x = a, *y = b;
    if (x->label != y->label)
        return x->label < y->label ? -1 : 1;
    return x->distance < y->distance ? -1 : x->distance > y->distance;
}

bool
fpx_range_equal (const fpx_range_t *ref, const fpx_range_result_t *got, float radius,
                 char *why, size_t why_size)
{
    if (!got || !got->lims) {
        snprintf (why, why_size, "missing result");
        return false;
    }
    if (got->nq != ref->nq) {
        snprintf (why, why_size, "nq %lld, expected %lld", (long long) got->nq, (long long) ref->nq);
        return false;
    }
    if (got->lims [0] != 0) {
        snprintf (why, why_size, "lims[0] = %llu", (unsigned long long) got->lims [0]);
        return false;
    }
    for (int64_t q = 0; q < ref->nq; q++)
        if (got->lims [q + 1] < got->lims [q]) {
            snprintf (why, why_size, "lims not monotonic at query %lld", (long long) q);
            return false;
        }
    bool ok = true;
    for (int64_t q = 0; q < ref->nq && ok; q++) {
        size_t nr = ref->lims [q + 1] - ref->lims [q];
        size_t ng = got->lims [q + 1] - got->lims [q];
        s_pair_t *pr = malloc ((nr + 1) * sizeof *pr), *pg = malloc ((ng + 1) * sizeof *pg);
        if (!pr || !pg) {
            free (pr);
            free (pg);
            return false;
        }
        for (size_t i = 0; i < nr; i++) {
            pr [i].label = ref->I [ref->lims [q] + i];
            pr [i].distance = ref->D [ref->lims [q] + i];
        }
        for (size_t i = 0; i < ng; i++) {
            pg [i].label = got->labels [got->lims [q] + i];
            pg [i].distance = got->distances [got->lims [q] + i];
        }
        qsort (pr, nr, sizeof *pr, s_cmp_pair);
        qsort (pg, ng, sizeof *pg, s_cmp_pair);
        size_t i = 0, j = 0;
        while (ok && (i < nr || j < ng)) {
            if (i < nr && j < ng && pr [i].label == pg [j].label) {
                if (!fpx_float_close (pr [i].distance, pg [j].distance)) {
                    snprintf (why, why_size, "query %lld label %lld: distance %.9g, expected %.9g",
                              (long long) q, (long long) pg [j].label, pg [j].distance, pr [i].distance);
                    ok = false;
                }
                i++, j++;
            }
            else
            if (j >= ng || (i < nr && pr [i].label < pg [j].label)) {
                if (!fpx_float_close (pr [i].distance, radius)) {
                    snprintf (why, why_size, "query %lld: label %lld (distance %.9g) missing; %zu results, expected %zu",
                              (long long) q, (long long) pr [i].label, pr [i].distance, ng, nr);
                    ok = false;
                }
                i++;
            }
            else {
                if (!fpx_float_close (pg [j].distance, radius)) {
                    snprintf (why, why_size, "query %lld: unexpected label %lld (distance %.9g); %zu results, expected %zu",
                              (long long) q, (long long) pg [j].label, pg [j].distance, ng, nr);
                    ok = false;
                }
                j++;
            }
        }
        free (pr);
        free (pg);
    }
    return ok;
}
