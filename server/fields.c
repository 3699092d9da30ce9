/*  fields.c — the server's side of protocol/fpx_fields.h: for each opcode
    of FPX_FIELDED_OPCODES, the handler that dispatch calls, which reads
    every field of the parameter map into a fpx_<wire>_req_t within the
    bounds the definition gives, then hands it to the hand-written
    fpx_handle_<wire>_req. A missing or out-of-bounds field is an
    FPX_EINVAL reply naming it; the handler never sees it.

    Only readers live here: no opcode's logic.                           */
#include <string.h>

#include "ops.h"

static int
s_read_bool (fpx_call_t *call, const char *key, bool *out)
{
    *out = false;
    if (fpx_params_get_bool (&call->params, key, out) < 0)
        return fpx_reply_error (call->reply, FPX_EINVAL, "'%s' must be a bool", key);
    return 0;
}

static int
s_read_str (fpx_call_t *call, const char *key, int64_t lo, int64_t hi, char *out, size_t size)
{
    out [0] = 0;
    int rc = fpx_params_copy_str (&call->params, key, out, size);
    if (rc || (int64_t) strlen (out) < lo)
        return fpx_reply_error (call->reply, FPX_EINVAL, "'%s' must be a string of %lld-%lld bytes",
                                key, (long long) lo, (long long) hi);
    return 0;
}

//  A string that may be absent ("" then), of at most hi bytes.
static int
s_read_omit_str (fpx_call_t *call, const char *key, int64_t hi, char *out, size_t size)
{
    out [0] = 0;
    if (fpx_params_copy_str (&call->params, key, out, size) < 0)
        return fpx_reply_error (call->reply, FPX_EINVAL, "'%s' must be a string of at most "
                                "%lld bytes", key, (long long) hi);
    return 0;
}

//  An integer that may be absent (fallback then); *has says whether it
//  came.
static int
s_read_omit_int (fpx_call_t *call, const char *key, int64_t lo, int64_t hi, int64_t fallback,
                 int64_t *out, bool *has)
{
    fpx_mp_value_t value;
    *has = fpx_params_get_value (&call->params, key, &value) != 1;
    return fpx_op_int_param (call, key, false, fallback, lo, hi, out);
}

static int
s_read_num (fpx_call_t *call, const char *key, double *out)
{
    if (fpx_params_get_double (&call->params, key, out))
        return fpx_reply_error (call->reply, FPX_EINVAL, "'%s' must be a number", key);
    return 0;
}

//  One reader per field type; NAME and OPT_USER_NAME are always the key
//  "name". has: an OMIT_INT's has_<key>, expanded only there.
#define S_READ_NAME(key, lo, hi, fallback, out, has) fpx_op_name_param (call, out, true)
#define S_READ_INT(key, lo, hi, fallback, out, has)                          \
    fpx_op_int_param (call, key, true, 0, lo, hi, &out)
#define S_READ_BOOL(key, lo, hi, fallback, out, has) s_read_bool (call, key, &out)
#define S_READ_STR(key, lo, hi, fallback, out, has)                          \
    s_read_str (call, key, lo, hi, out, sizeof out)
#define S_READ_NUM(key, lo, hi, fallback, out, has)  s_read_num (call, key, &out)
#define S_READ_OPT_INT(key, lo, hi, fallback, out, has)                      \
    fpx_op_int_param (call, key, false, fallback, lo, hi, &out)
#define S_READ_OPT_USER_NAME(key, lo, hi, fallback, out, has)                \
    fpx_op_optional_name (call, out)
#define S_READ_OMIT_INT(key, lo, hi, fallback, out, has)                     \
    s_read_omit_int (call, key, lo, hi, fallback, &out, &has)
#define S_READ_OMIT_BOOL(key, lo, hi, fallback, out, has) s_read_bool (call, key, &out)
#define S_READ_OMIT_STR(key, lo, hi, fallback, out, has)                     \
    s_read_omit_str (call, key, hi, out, sizeof out)

#define S_READ_(type, key, lo, hi, fallback)                                 \
    if (rc == 0)                                                             \
        rc = S_READ_##type (#key, lo, hi, fallback, req.key, req.has_##key);

#define S_HANDLER_(OPCODE, wire)                                             \
    int                                                                      \
    fpx_handle_##wire (fpx_call_t *call)                                     \
    {                                                                        \
        fpx_##wire##_req_t req;                                              \
        memset (&req, 0, sizeof req);                                        \
        int rc = 0;                                                          \
        FPX_FIELDS_##OPCODE (S_READ_)                                        \
        return rc ? rc : fpx_handle_##wire##_req (call, &req);               \
    }
FPX_FIELDED_OPCODES (S_HANDLER_)
