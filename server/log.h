/*  log.h — faissproxyd's log (log.c): one line per message on stderr,
    "TIME LEVEL text", the text sanitized (it may quote client bytes).
    One log per process, shared by every server in it: its level, format
    and stream are process-wide on purpose, as stderr is.
    Callable from C and C++.
*/
#ifndef FPX_LOG_H_INCLUDED
#define FPX_LOG_H_INCLUDED

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum { FPX_LOG_ERROR, FPX_LOG_WARN, FPX_LOG_INFO, FPX_LOG_DEBUG };
void fpx_log_set_level (int level);
int fpx_log_parse_level (const char *text);    //  -1 if unknown
bool fpx_log_enabled (int level);

/*  "text" (default): "TIME LEVEL message"; "json": one object a line,
    {"time", "level", "message"} and, for request lines, their fields.
    Returns -1 for another name.                                         */
int fpx_log_set_format (const char *name);

void fpx_log (int level, const char *format, ...)
    __attribute__ ((format (printf, 2, 3)));


/*  One request served, logged at debug (--log-level debug): who, what,
    how it ended and how long it waited in the queue and ran.            */
typedef struct {
    const char *tenant;
    const char *index;             //  "" when the request names none
    const char *opcode;
    uint64_t request_id;
    uint64_t conn;
    int status;
    const char *error;             //  the reply's message ("" when none)
    int batch;                     //  searches answered by the same call
    double wait_s, run_s;
} fpx_log_request_t;
void fpx_log_request (const fpx_log_request_t *request);

/*  The request this thread runs (NULL: none), named in what FAISS prints
    meanwhile. The caller keeps it alive until it sets NULL.              */
void fpx_log_set_context (const fpx_log_request_t *request);

/*  A line FAISS printed: "FAISS: …" with the thread's request, at level,
    or (level < 0) warn when it starts with WARNING, else info.          */
void fpx_log_faiss (int level, const char *text, size_t len);

/*  From now on stdout and stderr (FAISS's printf and fprintf) are streams
    whose lines go to fpx_log_faiss, and the log writes to a duplicate of
    stderr's descriptor; the descriptors are unchanged. Call once, before
    other threads start. 0, or -1 (nothing changed).                     */
int fpx_log_capture_stdio (void);

#ifdef __cplusplus
}
#endif

#endif
