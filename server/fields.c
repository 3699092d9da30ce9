/*  fields.c — the server's side of protocol/fpx_fields.h: for each opcode
    of FPX_FIELDED_OPCODES, the handler that dispatch calls, which reads
    every field of the parameter map into a fpx_<wire>_req_t within the
    bounds the definition gives, then hands it to the hand-written
    fpx_handle_<wire>_req. A missing or out-of-bounds field is an
    FPX_EINVAL reply naming it; the handler never sees it.

    Only readers live here: no opcode's logic.                           */
#include <float.h>
#include <math.h>
#include <string.h>

#include "ops.h"
#include "select.h"

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

//  The name or "@…" handle of another object, under key.
static int
s_read_ref (fpx_call_t *call, const char *key, char *out)
{
    const char *ptr;
    size_t len;
    out [0] = 0;
    if (fpx_params_get_str (&call->params, key, &ptr, &len)
    ||  !(fpx_name_is_valid (ptr, len) || fpx_name_is_anonymous (ptr, len)))
        return fpx_reply_error (call->reply, FPX_EINVAL, "'%s' must be an object's name: 1-%d "
                                "bytes of [A-Za-z0-9_.-], or an anonymous '@…' handle",
                                key, FPX_NAME_MAX);
    memcpy (out, ptr, len);
    out [len] = 0;
    return 0;
}

//  A number float32 can hold: not NaN, not infinite, within ±FLT_MAX.
static int
s_read_float (fpx_call_t *call, const char *key, double *out)
{
    int rc = fpx_params_get_double (&call->params, key, out);
    if (rc || !(*out >= -FLT_MAX && *out <= FLT_MAX))
        return fpx_reply_error (call->reply, FPX_EINVAL, "'%s' must be a finite number within "
                                "float32's range", key);
    return 0;
}

//  An array of at most hi elements under key (absent: none); *array set.
static int
s_read_array (fpx_call_t *call, const char *key, int64_t hi, const char *what,
              fpx_mp_value_t *array, int *count)
{
    *count = 0;
    memset (array, 0, sizeof *array);   //  absent or refused: no elements
    int rc = fpx_params_get_value (&call->params, key, array);
    if (rc == 1) {
        memset (array, 0, sizeof *array);
        return 0;
    }
    if (rc || array->type != FPX_MP_ARRAY || array->v.seq.count > (uint64_t) hi)
        return fpx_reply_error (call->reply, FPX_EINVAL, "'%s' must be an array of at most "
                                "%lld %s", key, (long long) hi, what);
    return 0;
}

//  At most hi finite numbers (ints, floats or bools).
static int
s_read_nums (fpx_call_t *call, const char *key, int64_t hi, double *out, int *count)
{
    fpx_mp_value_t array;
    int rc = s_read_array (call, key, hi, "finite numbers", &array, count);
    const uint8_t *needle = array.v.seq.ptr;
    for (uint32_t i = 0; rc == 0 && i < array.v.seq.count; i++) {
        fpx_mp_value_t value;
        double number = NAN;
        if (fpx_mp_read (&value, &needle, array.v.seq.end))
            return fpx_reply_error (call->reply, FPX_EPROTO, "malformed '%s'", key);
        if (value.type == FPX_MP_INT)
            number = value.is_unsigned ? (double) (uint64_t) value.v.i : (double) value.v.i;
        else if (value.type == FPX_MP_FLOAT)
            number = value.v.f;
        else if (value.type == FPX_MP_BOOL)
            number = value.v.b;
        if (!isfinite (number))
            return fpx_reply_error (call->reply, FPX_EINVAL, "'%s' element %u is not a finite "
                                    "number", key, i);
        out [(*count)++] = number;
    }
    return rc;
}

//  At most hi object names or "@…" handles.
static int
s_read_names (fpx_call_t *call, const char *key, int64_t hi, char (*out) [FPX_NAME_MAX + 1],
              int *count)
{
    fpx_mp_value_t array;
    int rc = s_read_array (call, key, hi, "object names", &array, count);
    const uint8_t *needle = array.v.seq.ptr;
    for (uint32_t i = 0; rc == 0 && i < array.v.seq.count; i++) {
        fpx_mp_value_t value;
        if (fpx_mp_read (&value, &needle, array.v.seq.end))
            return fpx_reply_error (call->reply, FPX_EPROTO, "malformed '%s'", key);
        if (value.type != FPX_MP_STR
        ||  !(fpx_name_is_valid (value.v.str.ptr, value.v.str.len)
              || fpx_name_is_anonymous (value.v.str.ptr, value.v.str.len)))
            return fpx_reply_error (call->reply, FPX_EINVAL, "'%s' element %u is not an "
                                    "object's name", key, i);
        memcpy (out [*count], value.v.str.ptr, value.v.str.len);
        out [(*count)++][value.v.str.len] = 0;
    }
    return rc;
}

//  The selection ("sel" with its frame, array 1 after the queries, and
//  "max_codes"), decoded and checked by select.h; NULL when none.
static int
s_read_selector (fpx_call_t *call, struct fpx_select_t **out)
{
    *out = NULL;
    if (call->narrays > 2)
        return fpx_reply_error (call->reply, FPX_EPROTO, "%d array frames: a search takes the "
                                "queries and at most a selector frame", call->narrays);
    const void *bulk = call->narrays == 2 ? zmq_msg_data (&call->arrays [1]) : NULL;
    size_t size = call->narrays == 2 ? zmq_msg_size (&call->arrays [1]) : 0;
    char err [FPX_ERROR_TEXT_MAX];
    int rc = fpx_select_decode (&call->params, bulk, size, out, err, sizeof err);
    return rc ? fpx_reply_error (call->reply, rc, "%s", err) : 0;
}

//  One reader per field type; NAME and OPT_USER_NAME are always the key
//  "name". has: an OMIT_INT's has_<key>, count: an array's <key>_count,
//  each expanded only there.
#define S_READ_NAME(key, lo, hi, fallback, out, has, count) fpx_op_name_param (call, out, true)
#define S_READ_INT(key, lo, hi, fallback, out, has, count)                          \
    fpx_op_int_param (call, key, true, 0, lo, hi, &out)
#define S_READ_BOOL(key, lo, hi, fallback, out, has, count) s_read_bool (call, key, &out)
#define S_READ_STR(key, lo, hi, fallback, out, has, count)                          \
    s_read_str (call, key, lo, hi, out, sizeof out)
#define S_READ_NUM(key, lo, hi, fallback, out, has, count)  s_read_num (call, key, &out)
#define S_READ_OPT_INT(key, lo, hi, fallback, out, has, count)                      \
    fpx_op_int_param (call, key, false, fallback, lo, hi, &out)
#define S_READ_OPT_USER_NAME(key, lo, hi, fallback, out, has, count)                \
    fpx_op_optional_name (call, out)
#define S_READ_OMIT_INT(key, lo, hi, fallback, out, has, count)                     \
    s_read_omit_int (call, key, lo, hi, fallback, &out, &has)
#define S_READ_OMIT_BOOL(key, lo, hi, fallback, out, has, count) s_read_bool (call, key, &out)
#define S_READ_OMIT_STR(key, lo, hi, fallback, out, has, count)                     \
    s_read_omit_str (call, key, hi, out, sizeof out)

#define S_READ_REF(key, lo, hi, fallback, out, has, count) s_read_ref (call, key, out)
#define S_READ_FLOAT(key, lo, hi, fallback, out, has, count) s_read_float (call, key, &out)
#define S_READ_NUMS(key, lo, hi, fallback, out, has, count)                  \
    s_read_nums (call, key, hi, out, &count)
#define S_READ_NAMES(key, lo, hi, fallback, out, has, count)                 \
    s_read_names (call, key, hi, out, &count)
#define S_READ_SELECTOR(key, lo, hi, fallback, out, has, count)              \
    s_read_selector (call, &out)

#define S_READ_(type, key, lo, hi, fallback)                                 \
    if (rc == 0)                                                             \
        rc = S_READ_##type (#key, lo, hi, fallback, req->key, req->has_##key, req->key##_count);

//  What a request holds after its handler: only a selection.
#define S_FREE_NAME(key)
#define S_FREE_INT(key)
#define S_FREE_BOOL(key)
#define S_FREE_STR(key)
#define S_FREE_NUM(key)
#define S_FREE_OPT_INT(key)
#define S_FREE_OPT_USER_NAME(key)
#define S_FREE_OMIT_INT(key)
#define S_FREE_OMIT_BOOL(key)
#define S_FREE_OMIT_STR(key)
#define S_FREE_REF(key)
#define S_FREE_FLOAT(key)
#define S_FREE_NUMS(key)
#define S_FREE_NAMES(key)
#define S_FREE_SELECTOR(key) fpx_select_destroy (&req->key);
#define S_FREE_(type, key, lo, hi, fallback) S_FREE_##type (key)

#define S_READER_(OPCODE, wire)                                              \
    int                                                                      \
    fpx_read_##wire (fpx_call_t *call, fpx_##wire##_req_t *req)              \
    {                                                                        \
        (void) call;                                                         \
        memset (req, 0, sizeof *req);                                        \
        int rc = 0;                                                          \
        FPX_FIELDS_##OPCODE (S_READ_)                                        \
        if (rc)                                                              \
            fpx_req_##wire##_free (req);                                     \
        return rc;                                                           \
    }                                                                        \
    void                                                                     \
    fpx_req_##wire##_free (fpx_##wire##_req_t *req)                          \
    {                                                                        \
        (void) req;                                                          \
        FPX_FIELDS_##OPCODE (S_FREE_)                                        \
    }                                                                        \
    int                                                                      \
    fpx_handle_##wire (fpx_call_t *call)                                     \
    {                                                                        \
        fpx_##wire##_req_t req;                                              \
        int rc = fpx_read_##wire (call, &req);                               \
        if (rc == 0) {                                                       \
            rc = fpx_handle_##wire##_req (call, &req);                       \
            fpx_req_##wire##_free (&req);                                    \
        }                                                                    \
        return rc;                                                           \
    }
FPX_FIELDED_OPCODES (S_READER_)
