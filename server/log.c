/*  log.c — leveled log lines on stderr (log.h), one fprintf per line so that
    threads never interleave within a line, as text or JSON; clocks and
    polling.                                                              */
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "fpx_protocol.h"
#include "log.h"

static atomic_int s_level = FPX_LOG_INFO;
static atomic_bool s_json;
//  Where lines go: stderr, or its duplicate once stdio is captured (then
//  stdout and stderr are streams that feed the log).
static FILE *s_out;
//  The request a worker thread is running, for what FAISS prints meanwhile.
static _Thread_local const fpx_log_request_t *s_context;
static const char *s_names [] = { "error", "warn", "info", "debug" };

int
fpx_log_set_format (const char *name)
{
    if (strcmp (name, "text") && strcmp (name, "json"))
        return -1;
    atomic_store (&s_json, strcmp (name, "json") == 0);
    return 0;
}

bool
fpx_log_enabled (int level)
{
    return level <= atomic_load (&s_level);
}

//  "TIME" in UTC with milliseconds.
static void
s_timestamp (char *out, size_t size)
{
    struct timespec now;
    clock_gettime (CLOCK_REALTIME, &now);
    struct tm tm;
    gmtime_r (&now.tv_sec, &tm);
    size_t used = strftime (out, size, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf (out + used, size - used, ".%03ldZ", now.tv_nsec / 1000000);
}

//  text, sanitized, then as the inside of a JSON string when json.
static void
s_clean (char *out, size_t size, const char *text, size_t len, bool json)
{
    char clean [1024];
    size_t n = fpx_text_sanitize (json ? clean : out, json ? sizeof clean : size, text, len);
    if (!json)
        return;
    //  What the sanitizer keeps is printable or UTF-8: only " and \ need
    //  a backslash.
    size_t at = 0;
    for (size_t i = 0; i < n && at + 2 < size; i++) {
        if (clean [i] == '"' || clean [i] == '\\')
            out [at++] = '\\';
        out [at++] = clean [i];
    }
    out [at] = 0;
}

void
fpx_log_set_level (int level)
{
    atomic_store (&s_level, level);
}

int
fpx_log_parse_level (const char *text)
{
    for (int level = 0; level < 4; level++)
        if (strcmp (text, s_names [level]) == 0)
            return level;
    return -1;
}

void
fpx_log (int level, const char *format, ...)
{
    if (level > atomic_load (&s_level))
        return;
    char time [40], text [1024], clean [2048];
    s_timestamp (time, sizeof time);
    va_list args;
    va_start (args, format);
    int len = vsnprintf (text, sizeof text, format, args);
    va_end (args);
    if (len < 0)
        len = 0;
    if ((size_t) len >= sizeof text)
        len = (int) sizeof text - 1;
    //  Sanitized: messages quote client bytes (names, FAISS's texts), which
    //  must not split the line, forge another one or carry invalid UTF-8.
    bool json = atomic_load (&s_json);
    s_clean (clean, sizeof clean, text, (size_t) len, json);
    if (json)
        fprintf (s_out ? s_out : stderr,
                 "{\"time\":\"%s\",\"level\":\"%s\",\"message\":\"%s\"}\n",
                 time, s_names [level], clean);
    else
        fprintf (s_out ? s_out : stderr, "%s %s %s\n", time, s_names [level], clean);
}

void
fpx_log_request (const fpx_log_request_t *r)
{
    if (!fpx_log_enabled (FPX_LOG_DEBUG))
        return;
    bool json = atomic_load (&s_json);
    char time [40], index [256], error [600];
    s_timestamp (time, sizeof time);
    s_clean (index, sizeof index, r->index, strlen (r->index), json);
    s_clean (error, sizeof error, r->error, strnlen (r->error, 200), json);
    long long run_us = (long long) (r->run_s * 1e6), wait_us = (long long) (r->wait_s * 1e6);
    if (json)
        fprintf (s_out ? s_out : stderr,
                 "{\"time\":\"%s\",\"level\":\"debug\",\"message\":\"request\","
                 "\"tenant\":\"%s\",\"index\":\"%s\",\"opcode\":\"%s\",\"request_id\":%llu,"
                 "\"conn\":%llu,\"status\":%d,\"status_name\":\"%s\",\"error\":\"%s\","
                 "\"batch\":%d,\"queue_us\":%lld,\"run_us\":%lld}\n",
                 time, r->tenant, index, r->opcode, (unsigned long long) r->request_id,
                 (unsigned long long) r->conn, r->status, fpx_error_name (r->status), error,
                 r->batch, wait_us, run_us);
    else
        fprintf (s_out ? s_out : stderr,
                 "%s debug request tenant=%s index=%s opcode=%s id=%llu conn=%llu "
                 "status=%s%s%s batch=%d queue=%lldus run=%lldus\n", time, r->tenant,
                 *index ? index : "-", r->opcode, (unsigned long long) r->request_id,
                 (unsigned long long) r->conn, fpx_error_name (r->status), *error ? ": " : "",
                 error, r->batch, wait_us, run_us);
}

void
fpx_log_set_context (const fpx_log_request_t *request)
{
    s_context = request;
}

void
fpx_log_faiss (int level, const char *text, size_t len)
{
    if (level < 0)
        level = len >= 7 && strncmp (text, "WARNING", 7) == 0 ? FPX_LOG_WARN : FPX_LOG_INFO;
    if (!fpx_log_enabled (level))
        return;
    const fpx_log_request_t *r = s_context;
    if (!atomic_load (&s_json)) {
        if (r)
            fpx_log (level, "FAISS (tenant=%s index=%s opcode=%s id=%llu): %.*s", r->tenant,
                     *r->index ? r->index : "-", r->opcode, (unsigned long long) r->request_id,
                     (int) len, text);
        else
            fpx_log (level, "FAISS: %.*s", (int) len, text);
        return;
    }
    char time [40], clean [2048], index [256];
    s_timestamp (time, sizeof time);
    s_clean (clean, sizeof clean, text, len < 1000 ? len : 1000, true);
    if (r) {
        s_clean (index, sizeof index, r->index, strlen (r->index), true);
        fprintf (s_out ? s_out : stderr, "{\"time\":\"%s\",\"level\":\"%s\",\"message\":"
                 "\"FAISS: %s\",\"tenant\":\"%s\",\"index\":\"%s\",\"opcode\":\"%s\","
                 "\"request_id\":%llu}\n", time, s_names [level], clean, r->tenant, index,
                 r->opcode, (unsigned long long) r->request_id);
    }
    else
        fprintf (s_out ? s_out : stderr,
                 "{\"time\":\"%s\",\"level\":\"%s\",\"message\":\"FAISS: %s\"}\n",
                 time, s_names [level], clean);
}

//  A stream whose lines go to the log: stdout and stderr once captured.
//  stdio calls it under the stream's lock, so one buffer per stream.
typedef struct {
    char line [1000];
    size_t len;
} s_sink_t;

static ssize_t
s_sink_write (void *cookie, const char *data, size_t size)
{
    s_sink_t *sink = cookie;
    for (size_t i = 0; i < size; i++) {
        if (data [i] != '\n')
            sink->line [sink->len++] = data [i];
        if ((data [i] == '\n' || sink->len == sizeof sink->line) && sink->len) {
            fpx_log_faiss (-1, sink->line, sink->len);
            sink->len = 0;
        }
    }
    return (ssize_t) size;
}

int
fpx_log_capture_stdio (void)
{
    static s_sink_t sinks [2];
    cookie_io_functions_t io = { .write = s_sink_write };
    int fd = dup (STDERR_FILENO);
    FILE *out = fd >= 0 ? fdopen (fd, "w") : NULL;
    FILE *sink_out = fopencookie (&sinks [0], "w", io);
    FILE *sink_err = fopencookie (&sinks [1], "w", io);
    if (!out || !sink_out || !sink_err) {
        if (out)
            fclose (out);
        else if (fd >= 0)
            close (fd);
        if (sink_out)
            fclose (sink_out);
        if (sink_err)
            fclose (sink_err);
        return -1;
    }
    setvbuf (out, NULL, _IOLBF, 0);
    setvbuf (sink_out, NULL, _IOLBF, 0);
    setvbuf (sink_err, NULL, _IOLBF, 0);
    fflush (stdout);
    fflush (stderr);
    s_out = out;
    //  FAISS prints its warnings with fprintf (stderr) and its verbose
    //  output with printf: both now reach the log as lines. The
    //  descriptors stay as they were, so a sanitizer's report or an
    //  abort's message (written to fd 2 directly) still reaches stderr.
    stdout = sink_out;
    stderr = sink_err;
    return 0;
}

double
fpx_monotonic_seconds (void)
{
    struct timespec now;
    clock_gettime (CLOCK_MONOTONIC, &now);
    return (double) now.tv_sec + (double) now.tv_nsec * 1e-9;
}

//  zmq_poll that first looks for events without sleeping for up to spin_us
//  microseconds (yielding the core to any other runnable thread between
//  looks), then blocks as zmq_poll. A thread that sleeps between two
//  requests a few tens of microseconds apart pays a wake-up each time, and
//  on a virtual machine an idle core also loses its caches to the host.
int
fpx_poll (zmq_pollitem_t *items, int count, long timeout_ms, int spin_us)
{
    if (spin_us > 0 && timeout_ms != 0) {
        double until = fpx_monotonic_seconds () + spin_us * 1e-6;
        do {
            int rc = zmq_poll (items, count, 0);
            if (rc != 0)
                return rc;
            sched_yield ();
        } while (fpx_monotonic_seconds () < until);
    }
    return zmq_poll (items, count, timeout_ms);
}
