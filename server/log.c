/*  log.c — leveled log lines on stderr (log.h), one fprintf per line so that
    threads never interleave within a line; clocks and polling.         */
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "server.h"

static atomic_int s_level = FPX_LOG_INFO;
static const char *s_names [] = { "error", "warn", "info", "debug" };

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
    char line [1024];
    struct timespec now;
    clock_gettime (CLOCK_REALTIME, &now);
    struct tm tm;
    gmtime_r (&now.tv_sec, &tm);
    int used = (int) strftime (line, sizeof line, "%Y-%m-%dT%H:%M:%S", &tm);
    used += snprintf (line + used, sizeof line - (size_t) used, ".%03ldZ %s ",
                      now.tv_nsec / 1000000, s_names [level]);
    //  Sanitized: messages quote client bytes (names, FAISS's texts), which
    //  must not split the line, forge another one or carry invalid UTF-8.
    char text [sizeof line];
    va_list args;
    va_start (args, format);
    int len = vsnprintf (text, sizeof text, format, args);
    va_end (args);
    if (len < 0)
        len = 0;
    if ((size_t) len >= sizeof text)
        len = (int) sizeof text - 1;
    fpx_text_sanitize (line + used, sizeof line - (size_t) used, text, (size_t) len);
    fprintf (stderr, "%s\n", line);
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
