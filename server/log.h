/*  log.h — faissproxyd's log (log.c): one line per message on stderr,
    "TIME LEVEL text", the text sanitized (it may quote client bytes).
    Callable from C and C++.
*/
#ifndef FPX_LOG_H_INCLUDED
#define FPX_LOG_H_INCLUDED

#ifdef __cplusplus
extern "C" {
#endif

enum { FPX_LOG_ERROR, FPX_LOG_WARN, FPX_LOG_INFO, FPX_LOG_DEBUG };
void fpx_log_set_level (int level);
int fpx_log_parse_level (const char *text);    //  -1 if unknown
void fpx_log (int level, const char *format, ...)
    __attribute__ ((format (printf, 2, 3)));

#ifdef __cplusplus
}
#endif

#endif
