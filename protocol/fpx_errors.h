/*  fpx_errors.h — the one list of faissproxy error codes.

    FPX_ERRORS(X) expands X(NAME, code, "message") once per error. It
    generates the public FPX_E… enum, fpx_error_name(), fpx_strerror() and
    the wire status codes: a reply header's status field carries exactly
    these numbers (0 is success). Codes are stable: never renumber, only
    append. The Python shim reads this list through the C library
    (fpx_error_name / fpx_strerror, declared here), never by retyping it.

    Installed beside faissproxy.h; has no dependencies.
*/
#ifndef FPX_ERRORS_H_INCLUDED
#define FPX_ERRORS_H_INCLUDED

#define FPX_ERRORS(X)                                                        \
    X (EPROTO,     -1, "malformed request")                                \
    X (EVERSION,   -2, "unsupported protocol version")                     \
    X (EAUTH,      -3, "authentication failed")                            \
    X (EOPCODE,    -4, "unknown opcode")                                   \
    X (EINVAL,     -5, "invalid argument")                                 \
    X (ENOTFOUND,  -6, "no such index")                                    \
    X (EEXIST,     -7, "index already exists")                             \
    X (ETOOBIG,    -8, "message too large")                                \
    X (EFAISS,     -9, "FAISS error")                                      \
    X (EBUSY,     -10, "server busy")                                      \
    X (ENOMEM,    -11, "out of memory")                                    \
    X (ETIMEDOUT, -12, "timed out")                                        \
    X (ECONNECT,  -13, "cannot connect")                                   \
    X (ESHUTDOWN, -14, "server shutting down")                             \
    X (EIO,       -15, "I/O error")                                        \
    X (EINTERNAL, -16, "internal error")                                   \
    X (EDAMAGED,  -17, "index damaged")                                    \
    X (EQUOTA,    -18, "tenant quota exceeded")                            \
    X (EPERM,     -19, "permission denied")                                \
    X (ERECOVERING, -20, "server recovering its indexes")

typedef enum {
    FPX_OK = 0,
#define FPX_ERRORS_ENUM_(name, code, msg) FPX_##name = (code),
    FPX_ERRORS (FPX_ERRORS_ENUM_)
#undef FPX_ERRORS_ENUM_
    FPX_ERRNO_LAST_ = -21
} fpx_errno_t;

/*  libfaissproxy.so is built with -fvisibility=hidden: what this header
    and faissproxy.h declare is exported, nothing else (docs/CLIENTS.md,
    "The C interface").                                                 */
#if defined (__GNUC__)
#   pragma GCC visibility push (default)
#endif
#ifdef __cplusplus
extern "C" {
#endif

/*  Readable message / symbolic name ("FPX_EINVAL") of a status code;
    "unknown error" / "FPX_E?" for codes outside the list. Thread-safe;
    the strings are static.                                              */
const char *fpx_strerror (int code);
const char *fpx_error_name (int code);

#ifdef __cplusplus
}
#endif
#if defined (__GNUC__)
#   pragma GCC visibility pop
#endif

#endif
