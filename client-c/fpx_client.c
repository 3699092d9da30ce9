/*  fpx_client.c — libfaissproxy's public API (faissproxy.h).

    Each call checks its arguments (FPX_EINVAL before anything is sent),
    packs its parameters with msgpack-c, runs one exchange through
    fpx_conn, and checks the result as strictly as the server checks
    requests: every result key the protocol promises must be there with
    its type and range, and every array frame must have exactly the size
    the result implies; anything else is FPX_EPROTO. Arrays are copied out
    of the reply frames with memcpy, so their alignment does not matter.

    Error messages: argument and result checks read "<opcode>: <what>";
    transport failures (fpx_conn.c) name the endpoint ("no reply from
    tcp://… within N ms"); failures the server reports keep the server's
    text unchanged (FAISS's own message for FPX_EFAISS). The last failure
    stays on the handle until the next one (fpx_client_errmsg): a success
    does not clear it, as faissproxy.h says "of the last failed call".

    Connections (details in fpx_conn.c): each handle has its own ZeroMQ
    context and DEALER socket. A call that times out while ZeroMQ still
    holds a zero-copy upload (≥ FPX_ZEROCOPY_MIN bytes) closes the socket
    and opens a fresh one: that connection is new, so the server frees the
    anonymous indexes of the old one. Any other timeout keeps the
    connection, and the late reply is discarded by its request id.

    Timeouts and retries (docs/CLIENTS.md): each opcode is a read (sent
    again once if its connection is lost before the reply) or a write
    (never sent again: the caller learns that its outcome is unknown), and
    short (the request timeout) or long (train, add, k-means, …: the long
    timeout, by default none while the connection lives). s_opcode_flags
    is the one place that says which.

    This file must not touch sockets (fpx_conn.c does).
*/
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "faissproxy.h"
#include "fpx_conn.h"
#include "fpx_fields.h"
#include "fpx_info.h"
#include "fpx_params.h"
#include "fpx_protocol.h"

typedef struct s_pending_t s_pending_t;

struct _fpx_client_t {
    fpx_conn_t *conn;
    int opcode;                 //  of the call in progress, for messages
    const char *name;           //  its index name once checked (borrowed), or NULL
    int errcode;
    char errmsg [FPX_ERRMSG_MAX];
    s_pending_t *pending;       //  FPX_MAX_IN_FLIGHT records of async
    s_pending_t *pending_free;  //  requests, made at the first one
};

/* ---- errors ------------------------------------------------------------ */

static int s_fail (fpx_client_t *self, int code, const char *format, ...)
    __attribute__ ((format (printf, 3, 4)));

//  Keeps code and "<opcode>: <message>" on the handle; returns code.
static int
s_fail (fpx_client_t *self, int code, const char *format, ...)
{
    const char *op = fpx_opcode_name (self->opcode);
    int used = snprintf (self->errmsg, sizeof self->errmsg, "%s: ", op ? op : "client");
    va_list args;
    va_start (args, format);
    vsnprintf (self->errmsg + used, sizeof self->errmsg - (size_t) used, format, args);
    va_end (args);
    self->errcode = code;
    return code;
}

//  Starts a public call: FPX_EINVAL without a handle (nowhere to keep a
//  message), else 0.
static int
s_begin (fpx_client_t *self, int opcode)
{
    if (!self)
        return FPX_EINVAL;
    self->opcode = opcode;
    self->name = NULL;
    return 0;
}

/* ---- argument checks --------------------------------------------------- */

//  An index name as the server knows it: a user name, or (unless
//  user_only) the "@…" handle of an anonymous index.
static int
s_check_name (fpx_client_t *self, const char *name, bool user_only)
{
    if (!name)
        return s_fail (self, FPX_EINVAL, "index name is NULL");
    size_t len = strnlen (name, FPX_NAME_MAX + 1);
    bool handle = !user_only && name [0] == '@' && len > 1 && len <= FPX_NAME_MAX;
    if (!handle && !fpx_name_is_valid (name, len))
        return s_fail (self, FPX_EINVAL, "invalid index name \"%.*s\": 1 to %d bytes of "
                       "[A-Za-z0-9_.-], not starting with '.' or '-'",
                       FPX_NAME_MAX, name, FPX_NAME_MAX);
    self->name = name;
    return 0;
}

static int
s_check_dim (fpx_client_t *self, int d)
{
    if (d < 1 || d > FPX_DIM_MAX)
        return s_fail (self, FPX_EINVAL, "dimension must be 1 to %d, got %d", FPX_DIM_MAX, d);
    return 0;
}

static int
s_check_string (fpx_client_t *self, const char *what, const char *value, size_t max)
{
    if (!value)
        return s_fail (self, FPX_EINVAL, "%s is NULL", what);
    size_t len = strnlen (value, max + 1);
    if (len == 0 || len > max)
        return s_fail (self, FPX_EINVAL, "%s must be 1 to %zu bytes", what, max);
    return 0;
}

static int
s_check_out (fpx_client_t *self, const void *pointer, const char *what)
{
    return pointer ? 0 : s_fail (self, FPX_EINVAL, "%s is NULL", what);
}

//  rows × row_bytes: a count of rows ≥ 1 whose total size fits in size_t.
static int
s_check_rows (fpx_client_t *self, const char *what, int64_t rows, size_t row_bytes,
              size_t *bytes)
{
    if (rows < 1)
        return s_fail (self, FPX_EINVAL, "%s must be at least 1, got %lld",
                       what, (long long) rows);
    if ((uint64_t) rows > SIZE_MAX / row_bytes)
        return s_fail (self, FPX_EINVAL, "%s = %lld is too large", what, (long long) rows);
    *bytes = (size_t) rows * row_bytes;
    return 0;
}

//  An n·d float32 matrix argument (`what` names n); *bytes receives its size.
static int
s_check_vectors (fpx_client_t *self, const char *what, int64_t n, int d, const float *x,
                 size_t *bytes)
{
    int rc = s_check_dim (self, d);
    if (!rc)
        rc = s_check_out (self, x, "x");
    if (!rc)
        rc = s_check_rows (self, what, n, (size_t) d * sizeof (float), bytes);
    return rc;
}

static int
s_check_search_params (fpx_client_t *self, const fpx_search_params_t *params)
{
    if (params && (params->nprobe < 0 || params->efSearch < 0))
        return s_fail (self, FPX_EINVAL, "nprobe and efSearch must be ≥ 0 (0: the index's own)");
    return 0;
}

/* ---- parameters -------------------------------------------------------- */

typedef struct {
    msgpack_sbuffer buffer;
    msgpack_packer packer;
} s_params_t;

//  An empty buffer, for a packer of fpx_fields.h (which starts the map).
static msgpack_packer *
s_params_init (s_params_t *params)
{
    msgpack_sbuffer_init (&params->buffer);
    msgpack_packer_init (&params->packer, &params->buffer, msgpack_sbuffer_write);
    return &params->packer;
}

/* ---- search-time selection --------------------------------------------- */

//  One node of a selector; "not" is FAISS 1.7.3's only composite, so a
//  selector is a chain of "not" nodes ending in a leaf.
struct fpx_selector_t {
    const char *kind;           //  "range", "array", "batch", "bitmap", "not", "all"
    int64_t imin, imax;
    bool assume_sorted;
    size_t count;               //  ids, or bitmap bytes
    size_t bytes;               //  of data
    void *data;
    fpx_selector_t *operand;
};

static fpx_selector_t *
s_selector_new (const char *kind, size_t count, size_t item_size, const void *data)
{
    fpx_selector_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->kind = kind;
    if (count > SIZE_MAX / item_size)
        goto fail;
    self->count = count;
    self->bytes = count * item_size;
    if (self->bytes) {
        if (!data || !(self->data = malloc (self->bytes)))
            goto fail;
        memcpy (self->data, data, self->bytes);
    }
    return self;
fail:
    free (self);
    return NULL;
}

fpx_selector_t *
fpx_selector_range_new (int64_t imin, int64_t imax, int assume_sorted)
{
    fpx_selector_t *self = s_selector_new ("range", 0, 1, NULL);
    if (self) {
        self->imin = imin;
        self->imax = imax;
        self->assume_sorted = assume_sorted != 0;
    }
    return self;
}

fpx_selector_t *
fpx_selector_array_new (size_t n, const int64_t *ids)
{
    return s_selector_new ("array", n, sizeof (int64_t), ids);
}

fpx_selector_t *
fpx_selector_batch_new (size_t n, const int64_t *ids)
{
    return s_selector_new ("batch", n, sizeof (int64_t), ids);
}

fpx_selector_t *
fpx_selector_bitmap_new (size_t nbytes, const uint8_t *bitmap)
{
    return s_selector_new ("bitmap", nbytes, 1, bitmap);
}

fpx_selector_t *
fpx_selector_not_new (fpx_selector_t **operand_p)
{
    if (!operand_p || !*operand_p)
        return NULL;
    fpx_selector_t *self = s_selector_new ("not", 0, 1, NULL);
    if (!self)
        fpx_selector_destroy (operand_p);
    else {
        self->operand = *operand_p;
        *operand_p = NULL;
    }
    return self;
}

fpx_selector_t *
fpx_selector_all_new (void)
{
    return s_selector_new ("all", 0, 1, NULL);
}

void
fpx_selector_destroy (fpx_selector_t **self_p)
{
    if (!self_p)
        return;
    fpx_selector_t *self = *self_p;
    while (self) {                      //  the chain, without recursion
        fpx_selector_t *next = self->operand;
        free (self->data);
        free (self);
        self = next;
    }
    *self_p = NULL;
}

static int
s_check_selection (fpx_client_t *self, const fpx_selection_t *selection)
{
    if (!selection)
        return 0;
    if (selection->max_codes < FPX_MAX_CODES_UNLIMITED)
        return s_fail (self, FPX_EINVAL, "max_codes must be > 0, FPX_MAX_CODES_INDEX or "
                       "FPX_MAX_CODES_UNLIMITED");
    int nodes = 0;
    for (const fpx_selector_t *node = selection->sel; node; node = node->operand)
        if (++nodes > FPX_SELECTOR_NODES_MAX)
            return s_fail (self, FPX_EINVAL, "a selector has at most %d nodes",
                           FPX_SELECTOR_NODES_MAX);
    return 0;
}

//  The wire form of a search's parameters and selection (fpx_fields.h):
//  nodes, in chain order, and their ids and bitmaps gathered into a
//  frame.
typedef struct {
    fpx_selector_node_t nodes [FPX_SELECTOR_NODES_MAX];
    int count;
    void *bulk;                    //  malloc'd; NULL when none
    size_t bulk_size;
    bool has_nprobe, has_efSearch, has_max_codes;
    int64_t nprobe, efSearch, max_codes;
} s_search_wire_t;

//  Checks params and selection (either may be NULL), then fills wire
//  from them. On success the caller frees wire->bulk after the call.
static int
s_search_wire (fpx_client_t *self, const fpx_search_params_t *params,
               const fpx_selection_t *selection, s_search_wire_t *wire)
{
    memset (wire, 0, sizeof *wire);
    int rc = s_check_search_params (self, params);
    if (!rc)
        rc = s_check_selection (self, selection);
    if (rc)
        return rc;
    wire->has_nprobe = params && params->nprobe > 0;
    wire->nprobe = wire->has_nprobe ? params->nprobe : 0;
    wire->has_efSearch = params && params->efSearch > 0;
    wire->efSearch = wire->has_efSearch ? params->efSearch : 0;
    if (!selection)
        return 0;
    wire->has_max_codes = selection->max_codes != 0;   //  FAISS's 0 is "no limit"
    wire->max_codes = selection->max_codes < 0 ? 0 : selection->max_codes;
    size_t bulk = 0;
    for (const fpx_selector_t *node = selection->sel; node; node = node->operand) {
        bool has_count = node->bytes || strcmp (node->kind, "array") == 0
                      || strcmp (node->kind, "batch") == 0 || strcmp (node->kind, "bitmap") == 0;
        wire->nodes [wire->count++] = (fpx_selector_node_t) {
            .kind = node->kind, .imin = node->imin, .imax = node->imax,
            .assume_sorted = node->assume_sorted, .has_count = has_count, .count = node->count,
        };
        bulk += node->bytes;
    }
    uint8_t *at = bulk ? malloc (bulk) : NULL;
    if (bulk && !at)
        return s_fail (self, FPX_ENOMEM, "out of memory for the selector frame");
    wire->bulk = at;
    wire->bulk_size = bulk;
    for (const fpx_selector_t *node = selection->sel; node; node = node->operand)
        if (node->bytes) {
            memcpy (at, node->data, node->bytes);
            at += node->bytes;
        }
    return 0;
}

/* ---- the exchange ------------------------------------------------------ */

static void
s_add_array (fpx_request_t *request, const void *data, size_t size)
{
    request->arrays [request->array_count].data = data;
    request->arrays [request->array_count].size = size;
    request->array_count++;
}

//  How fpx_conn treats an opcode, from its FPX_OPCODES flags: reads may
//  be sent again on a fresh connection; long ones may run for minutes on
//  the server. Anything else is a short write.
static unsigned
s_opcode_flags (int opcode)
{
    const fpx_opcode_info_t *info = fpx_opcode_info (opcode);
    unsigned flags = info ? info->flags : 0;
    return (flags & FPX_OPF_RETRY ? FPX_REQUEST_IDEMPOTENT : 0)
         | (flags & FPX_OPF_LONG ? FPX_REQUEST_LONG : 0);
}

//  An anonymous index not found after the connection was made again: the
//  server freed it with the old connection. Say so, rather than "no
//  index named '@…'", which reads like a typo.
static void
s_explain_lost_anonymous (fpx_client_t *self)
{
    int reconnects = fpx_conn_reconnects (self->conn);
    if (self->name && self->name [0] == '@' && reconnects > 0)
        s_fail (self, FPX_ENOTFOUND, "anonymous index '%s' is gone: anonymous indexes live "
                "only as long as the connection that created them, and this client's "
                "connection to %s was lost and made again since (%d time%s; a server "
                "restart?)", self->name, fpx_conn_endpoint (self->conn), reconnects,
                reconnects == 1 ? "" : "s");
}

//  Runs one exchange with params (may be NULL: an empty map), which it
//  frees. On success the caller closes *reply.
static int
s_call (fpx_client_t *self, fpx_request_t *request, s_params_t *params, fpx_reply_t *reply)
{
    request->opcode = self->opcode;
    request->flags = s_opcode_flags (self->opcode);
    if (params) {
        if (!params->buffer.data) {
            msgpack_sbuffer_destroy (&params->buffer);
            return s_fail (self, FPX_ENOMEM, "out of memory");
        }
        request->params = params->buffer.data;
        request->params_size = params->buffer.size;
    }
    int rc = fpx_conn_call (self->conn, request, reply, self->errmsg, sizeof self->errmsg);
    if (params)
        msgpack_sbuffer_destroy (&params->buffer);
    if (rc)
        self->errcode = rc;
    if (rc == FPX_ENOTFOUND)
        s_explain_lost_anonymous (self);
    return rc;
}

/* ---- results ----------------------------------------------------------- */

static int
s_bad_result (fpx_client_t *self, const char *key)
{
    return s_fail (self, FPX_EPROTO, "malformed reply: bad or missing \"%s\"", key);
}

static int
s_result_int (fpx_client_t *self, fpx_reply_t *reply, const char *key,
              int64_t min, int64_t max, int64_t *out /* OUT */)
{
    int64_t value;
    if (fpx_params_get_int (&reply->result, key, &value) != 0 || value < min || value > max)
        return s_bad_result (self, key);
    *out = value;
    return 0;
}

static int
s_result_bool (fpx_client_t *self, fpx_reply_t *reply, const char *key, int *out /* OUT */)
{
    bool value;
    if (fpx_params_get_bool (&reply->result, key, &value) != 0)
        return s_bad_result (self, key);
    *out = value;
    return 0;
}

//  Copies a string result into buf[size]; a longer one is cut when cut is
//  true, else malformed. Embedded NULs are malformed.
static int
s_result_str (fpx_client_t *self, fpx_reply_t *reply, const char *key,
              char *buf, size_t size, bool cut)
{
    const char *ptr;
    size_t len;
    if (fpx_params_get_str (&reply->result, key, &ptr, &len) != 0
    ||  memchr (ptr, 0, len) || (len >= size && !cut))
        return s_bad_result (self, key);
    if (len >= size)
        len = size - 1;
    memcpy (buf, ptr, len);
    buf [len] = 0;
    return 0;
}

//  Array frame i of the reply, which must hold exactly `expected` bytes.
static int
s_result_array (fpx_client_t *self, fpx_reply_t *reply, int i, const char *what,
                size_t expected, const void **data /* OUT */)
{
    size_t size;
    *data = fpx_reply_array (reply, i, &size);
    if (size != expected)
        return s_fail (self, FPX_EPROTO, "malformed reply: %s frame has %zu bytes, expected %zu",
                       what, size, expected);
    return 0;
}

//  An optional int result key: *out untouched when absent.
static int
s_result_int_opt (fpx_client_t *self, fpx_reply_t *reply, const char *key,
                  int64_t min, int64_t max, int64_t *out /* OUT */)
{
    fpx_mp_value_t ignored;
    if (fpx_params_get_value (&reply->result, key, &ignored) != 0)
        return 0;
    return s_result_int (self, reply, key, min, max, out);
}

//  An object description (docs/PROTOCOL.md, "Index description" and
//  "Objects"): d_out only for vector transforms (else d), memory_bytes
//  only when asked for (else -1).
static int
s_result_description (fpx_client_t *self, fpx_reply_t *reply, fpx_index_info_t *info /* OUT */)
{
    fpx_index_info_t parsed = { .memory_bytes = -1 };
    int64_t d = 0, d_out = 0, metric = 0;
    fpx_mp_value_t damaged;
    bool is_damaged = fpx_params_get_value (&reply->result, "damaged", &damaged) == 0;
    int rc = s_result_str (self, reply, "name", parsed.name, sizeof parsed.name, false);
    if (!rc)
        rc = s_result_str (self, reply, "class", parsed.class_name, sizeof parsed.class_name, false);
    if (!rc && is_damaged)
        rc = s_result_str (self, reply, "damaged", parsed.damaged, sizeof parsed.damaged, true);
    if (!rc)    //  a damaged index's dimension may be unknown (0)
        rc = s_result_int (self, reply, "d", is_damaged ? 0 : 1, FPX_DIM_MAX, &d);
    if (!rc)
        rc = s_result_int (self, reply, "ntotal", 0, INT64_MAX, &parsed.ntotal);
    if (!rc)
        rc = s_result_bool (self, reply, "is_trained", &parsed.is_trained);
    if (!rc)
        rc = s_result_int (self, reply, "metric", 0, INT_MAX, &metric);
    if (!rc)
        rc = s_result_str (self, reply, "factory", parsed.factory, sizeof parsed.factory, false);
    if (!rc)
        rc = s_result_bool (self, reply, "anonymous", &parsed.anonymous);
    d_out = d;
    if (!rc)
        rc = s_result_int_opt (self, reply, "d_out", 1, FPX_DIM_MAX, &d_out);
    if (!rc)
        rc = s_result_int_opt (self, reply, "memory_bytes", 0, INT64_MAX, &parsed.memory_bytes);
    //  "loaded" is absent from older servers, whose indexes always are.
    fpx_mp_value_t loaded;
    parsed.loaded = !is_damaged;
    if (!rc && fpx_params_get_value (&reply->result, "loaded", &loaded) == 0)
        rc = s_result_bool (self, reply, "loaded", &parsed.loaded);
    fpx_mp_value_t pending;
    if (!rc && fpx_params_get_value (&reply->result, "rebuild_pending", &pending) == 0)
        rc = s_result_bool (self, reply, "rebuild_pending", &parsed.rebuild_pending);
    if (rc)
        return rc;
    parsed.d = (int) d;
    parsed.d_out = (int) d_out;
    parsed.metric = (int) metric;
    if (info)
        *info = parsed;
    return 0;
}

//  The structure's size is part of the ABI (faissproxy.h): new fields
//  are carved out of reserved_.
_Static_assert (sizeof (fpx_index_info_t) == FPX_INDEX_INFO_SIZE || sizeof (void *) != 8,
                "fpx_index_info_t must stay FPX_INDEX_INFO_SIZE bytes: take new fields from reserved_");

size_t
fpx_index_info_size (void)
{
    return sizeof (fpx_index_info_t);
}

//  A call whose result is an index description.
static int
s_call_description (fpx_client_t *self, fpx_request_t *request, s_params_t *params,
                    fpx_index_info_t *info /* OUT */)
{
    fpx_reply_t reply;
    int rc = s_call (self, request, params, &reply);
    if (rc)
        return rc;
    rc = s_result_description (self, &reply, info);
    fpx_reply_close (&reply);
    return rc;
}

//  serialize: the index whole in one reply.
static int
s_call_serialize (fpx_client_t *self, const char *name, fpx_request_t *request,
             fpx_reply_t *reply)
{
    s_params_t params;
    fpx_serialize_pack (s_params_init (&params), &(fpx_serialize_args_t) { .name = name });
    return s_call (self, request, &params, reply);
}

//  Reads the int result key (≥ 0) into *out (may be NULL), closes reply.
static int
s_finish_int (fpx_client_t *self, fpx_reply_t *reply, const char *key, int64_t *out)
{
    int64_t value = 0;
    int rc = s_result_int (self, reply, key, 0, INT64_MAX, &value);
    fpx_reply_close (reply);
    if (!rc && out)
        *out = value;
    return rc;
}

/* ---- handle ------------------------------------------------------------ */

static const char *
s_env (const char *name, const char *fallback)
{
    const char *value = getenv (name);
    return value && *value ? value : fallback;
}

//  fallback, or the environment variable name when that is a whole number
//  within int (an unparsable value is ignored).
static int
s_env_ms (const char *name, int fallback)
{
    const char *text = getenv (name);
    if (!text || !*text)
        return fallback;
    char *end;
    errno = 0;
    long value = strtol (text, &end, 10);
    if (errno || *end || value < INT_MIN || value > INT_MAX)
        return fallback;
    return (int) value;
}

static int
s_bad_endpoint (char *errmsg, size_t size, const char *text, const char *why)
{
    snprintf (errmsg, size, "invalid endpoint '%.200s': %s (expected tcp://HOST:PORT, "
              "HOST:PORT or ipc://PATH)", text, why);
    return FPX_EINVAL;
}

//  The ZeroMQ endpoint of text: "tcp://HOST:PORT" and "ipc://PATH" as
//  they are, "HOST:PORT" as tcp. Checked here, since ZeroMQ says only
//  EINVAL, and a bad port would otherwise show as a refused connection.
static int
s_endpoint_parse (const char *text, char *out, size_t out_size, char *errmsg, size_t size)
{
    const char *scheme = strstr (text, "://");
    const char *rest = scheme ? scheme + 3 : text;
    if (scheme && strncmp (text, "ipc://", 6) == 0) {
        if (!*rest)
            return s_bad_endpoint (errmsg, size, text, "no path");
    }
    else {
        if (scheme && strncmp (text, "tcp://", 6) != 0)
            return s_bad_endpoint (errmsg, size, text, "unknown transport");
        const char *colon = strrchr (rest, ':');
        if (!colon)
            return s_bad_endpoint (errmsg, size, text, "no port");
        if (colon == rest)
            return s_bad_endpoint (errmsg, size, text, "no host");
        const char *port = colon + 1;
        size_t digits = strspn (port, "0123456789");
        if (digits == 0 || port [digits] || digits > 5 || atoi (port) < 1 || atoi (port) > 65535)
            return s_bad_endpoint (errmsg, size, text, "the port must be 1 to 65535");
        for (const char *c = rest; c < colon; c++)
            if (*c <= ' ' || *c == '/' || *c == '*')
                return s_bad_endpoint (errmsg, size, text, "bad character in the host");
    }
    int len = snprintf (out, out_size, "%s%s", scheme ? "" : "tcp://", text);
    if (len < 0 || (size_t) len >= out_size)
        return s_bad_endpoint (errmsg, size, text, "too long");
    return 0;
}

int
fpx_client_open (const fpx_client_options_t *options, fpx_client_t **client_p,
                 char *errmsg, size_t errmsg_size)
{
    char spare [FPX_ERRMSG_MAX];
    if (!errmsg || errmsg_size == 0) {
        errmsg = spare;
        errmsg_size = sizeof spare;
    }
    errmsg [0] = 0;
    if (!client_p)
        return FPX_EINVAL;
    *client_p = NULL;
    fpx_client_options_t given = { 0 };
    if (options)
        given = *options;
    const char *server_key = given.server_key ? given.server_key
                                              : s_env ("FAISS_PROXY_SERVER_KEY", "");
    const char *endpoint = given.endpoint ? given.endpoint
                                          : s_env ("FAISS_PROXY_SERVER", FPX_DEFAULT_ENDPOINT);
    const char *api_key = given.api_key ? given.api_key : s_env ("FAISS_PROXY_API_KEY", "");
    if (strnlen (api_key, FPX_API_KEY_MAX + 1) > FPX_API_KEY_MAX) {
        snprintf (errmsg, errmsg_size, "the API key is longer than %d bytes", FPX_API_KEY_MAX);
        return FPX_EINVAL;
    }
    char zmq_endpoint [1024];
    int rc = s_endpoint_parse (endpoint, zmq_endpoint, sizeof zmq_endpoint, errmsg, errmsg_size);
    if (rc)
        return rc;
    if (*server_key && (strlen (server_key) != 40 || !zmq_z85_decode ((uint8_t [32]) { 0 },
                                                                      server_key))) {
        snprintf (errmsg, errmsg_size, "the server key is not 40 Z85 characters");
        return FPX_EINVAL;
    }
    const char *client_secret = s_env ("FAISS_PROXY_CLIENT_SECRET_KEY", "");
    if (*client_secret && *server_key && (strlen (client_secret) != 40
                                          || !zmq_z85_decode ((uint8_t [32]) { 0 }, client_secret))) {
        snprintf (errmsg, errmsg_size, "FAISS_PROXY_CLIENT_SECRET_KEY is not 40 Z85 characters");
        return FPX_EINVAL;
    }
    fpx_client_t *self = calloc (1, sizeof *self);
    if (self)
        self->conn = fpx_conn_new (zmq_endpoint, api_key, server_key, client_secret,
                                   given.timeout_ms ? given.timeout_ms
                                   : s_env_ms ("FAISS_PROXY_TIMEOUT_MS", FPX_DEFAULT_TIMEOUT_MS));
    if (!self || !self->conn) {
        free (self);
        snprintf (errmsg, errmsg_size, "cannot create a client for %s: %s", zmq_endpoint,
                  errno == ENOMEM ? "out of memory" : "ZeroMQ refused the endpoint or a key");
        return errno == ENOMEM ? FPX_ENOMEM : FPX_EINVAL;
    }
    fpx_conn_set_connect_timeout (self->conn, given.connect_timeout_ms
        ? given.connect_timeout_ms
        : s_env_ms ("FAISS_PROXY_CONNECT_TIMEOUT_MS", FPX_DEFAULT_CONNECT_TIMEOUT_MS));
    fpx_conn_set_long_timeout (self->conn, given.long_timeout_ms
        ? given.long_timeout_ms : s_env_ms ("FAISS_PROXY_LONG_TIMEOUT_MS", -1));
    *client_p = self;
    return 0;
}

fpx_client_t *
fpx_client_new (const char *endpoint, const char *api_key)
{
    return fpx_client_new_curve (endpoint, api_key, NULL);
}

fpx_client_t *
fpx_client_new_curve (const char *endpoint, const char *api_key, const char *server_key)
{
    fpx_client_options_t options = {
        .endpoint = endpoint, .api_key = api_key, .server_key = server_key
    };
    fpx_client_t *self = NULL;
    fpx_client_open (&options, &self, NULL, 0);
    return self;
}

void
fpx_client_destroy (fpx_client_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    fpx_conn_destroy (&(*self_p)->conn);
    free ((*self_p)->pending);
    free (*self_p);
    *self_p = NULL;
}

void
fpx_client_set_timeout (fpx_client_t *self, int timeout_ms)
{
    if (self)
        fpx_conn_set_timeout (self->conn, timeout_ms);
}

void
fpx_client_set_connect_timeout (fpx_client_t *self, int timeout_ms)
{
    if (self)
        fpx_conn_set_connect_timeout (self->conn, timeout_ms);
}

void
fpx_client_set_long_timeout (fpx_client_t *self, int timeout_ms)
{
    if (self)
        fpx_conn_set_long_timeout (self->conn, timeout_ms);
}

const char *
fpx_client_errmsg (fpx_client_t *self)
{
    return self ? self->errmsg : "";
}

int
fpx_client_errcode (fpx_client_t *self)
{
    return self ? self->errcode : 0;
}

void
fpx_free (void *ptr)
{
    free (ptr);
}

/* ---- server ------------------------------------------------------------ */

int
fpx_ping (fpx_client_t *self, fpx_server_info_t *info /* OUT */)
{
    int rc = s_begin (self, FPX_OP_PING);
    if (rc)
        return rc;
    s_params_t params;
    fpx_ping_pack (s_params_init (&params), NULL);
    fpx_request_t request = { 0 };
    fpx_reply_t reply;
    rc = s_call (self, &request, &params, &reply);
    if (rc)
        return rc;
    fpx_server_info_t parsed;
    int64_t version = 0;
    rc = s_result_str (self, &reply, "server_version", parsed.server_version,
                       sizeof parsed.server_version, true);
    if (!rc)
        rc = s_result_int (self, &reply, "protocol_version", 0, INT_MAX, &version);
    if (!rc)
        rc = s_result_str (self, &reply, "faiss_version", parsed.faiss_version,
                           sizeof parsed.faiss_version, true);
    //  Servers before recovery in the background do not say.
    parsed.recovering = 0;
    bool recovering;
    if (!rc && fpx_params_get_bool (&reply.result, "recovering", &recovering) == 0)
        parsed.recovering = recovering;
    fpx_reply_close (&reply);
    parsed.protocol_version = (int) version;
    if (!rc && info)
        *info = parsed;
    return rc;
}

int
fpx_info (fpx_client_t *self, int max_indexes, int flags, fpx_info_t **info_p /* OUT */)
{
    int rc = s_begin (self, FPX_OP_INFO);
    if (rc)
        return rc;
    if ((rc = s_check_out (self, info_p, "info_p")))
        return rc;
    *info_p = NULL;
    if (flags & ~FPX_INFO_ALL)
        return s_fail (self, FPX_EINVAL, "unknown flags 0x%x", (unsigned) (flags & ~FPX_INFO_ALL));
    if (max_indexes > FPX_INFO_INDEXES_MAX)
        return s_fail (self, FPX_EINVAL, "max_indexes must be at most %d, got %d",
                       FPX_INFO_INDEXES_MAX, max_indexes);
    s_params_t params;
    fpx_info_pack (s_params_init (&params),
                   &(fpx_info_args_t) { .has_max_indexes = max_indexes != 0,
                                        .max_indexes = max_indexes < 0 ? 0 : max_indexes,
                                        .all = flags & FPX_INFO_ALL });
    fpx_request_t request = { 0 };
    fpx_reply_t reply;
    if ((rc = s_call (self, &request, &params, &reply)))
        return rc;
    char text [FPX_ERRMSG_MAX];
    rc = fpx_info_decode (&reply.result, info_p, text, sizeof text);
    fpx_reply_close (&reply);
    return rc ? s_fail (self, rc, "%s", text) : 0;
}

/* ---- index lifecycle --------------------------------------------------- */

int
fpx_index_create (fpx_client_t *self, const char *name, int d, const char *factory,
                  int metric, fpx_index_info_t *info /* OUT */)
{
    int rc = s_begin (self, FPX_OP_CREATE);
    if (!rc && name)
        rc = s_check_name (self, name, true);
    if (!rc)
        rc = s_check_dim (self, d);
    if (!rc)
        rc = s_check_string (self, "factory", factory, FPX_FACTORY_MAX - 1);
    if (!rc && metric < 0)
        rc = s_fail (self, FPX_EINVAL, "invalid metric %d", metric);
    if (rc)
        return rc;
    s_params_t params;
    fpx_create_pack (s_params_init (&params), &(fpx_create_args_t) {
                         .d = d, .factory = factory, .metric = metric, .name = name });
    fpx_request_t request = { 0 };
    return s_call_description (self, &request, &params, info);
}

//  Starts a call on an index: the handle, then the name (a user name or
//  an anonymous index's "@…" handle).
static int
s_begin_named (fpx_client_t *self, int opcode, const char *name)
{
    int rc = s_begin (self, opcode);
    return rc ? rc : s_check_name (self, name, false);
}

//  Sends params (packed, freed here) and expects an empty result.
static int
s_call_empty (fpx_client_t *self, s_params_t *params)
{
    fpx_request_t request = { 0 };
    fpx_reply_t reply;
    int rc = s_call (self, &request, params, &reply);
    if (!rc)
        fpx_reply_close (&reply);
    return rc;
}

int
fpx_index_open (fpx_client_t *self, const char *name, fpx_index_info_t *info /* OUT */)
{
    int rc = s_begin_named (self, FPX_OP_OPEN, name);
    if (rc)
        return rc;
    s_params_t params;
    fpx_open_pack (s_params_init (&params), &(fpx_open_args_t) { .name = name });
    fpx_request_t request = { 0 };
    return s_call_description (self, &request, &params, info);
}

int
fpx_index_drop (fpx_client_t *self, const char *name)
{
    int rc = s_begin_named (self, FPX_OP_DROP, name);
    if (rc)
        return rc;
    s_params_t params;
    fpx_drop_pack (s_params_init (&params), &(fpx_drop_args_t) { .name = name });
    return s_call_empty (self, &params);
}

int
fpx_index_save (fpx_client_t *self, const char *name)
{
    int rc = s_begin_named (self, FPX_OP_SAVE, name);
    if (rc)
        return rc;
    s_params_t params;
    fpx_save_pack (s_params_init (&params), &(fpx_save_args_t) { .name = name });
    return s_call_empty (self, &params);
}

//  Copies the "names" array of str into a malloc'd list of strings.
static int
s_result_names (fpx_client_t *self, fpx_reply_t *reply, char ***names_p, size_t *count_p)
{
    fpx_mp_value_t names;
    if (fpx_params_get_value (&reply->result, "names", &names) != 0
    ||  names.type != FPX_MP_ARRAY)
        return s_bad_result (self, "names");
    //  One slot more, so that an empty list is a valid pointer too.
    size_t count = names.v.seq.count;
    char **list = calloc (count + 1, sizeof *list);
    if (!list)
        return s_fail (self, FPX_ENOMEM, "out of memory");
    const uint8_t *needle = names.v.seq.ptr;
    int rc = 0;
    for (size_t i = 0; i < count && !rc; i++) {
        fpx_mp_value_t item;
        if (fpx_mp_read (&item, &needle, names.v.seq.end) || item.type != FPX_MP_STR
        ||  item.v.str.len == 0 || item.v.str.len > FPX_NAME_MAX
        ||  memchr (item.v.str.ptr, 0, item.v.str.len))
            rc = s_bad_result (self, "names");
        else
        if (!(list [i] = strndup (item.v.str.ptr, item.v.str.len)))
            rc = s_fail (self, FPX_ENOMEM, "out of memory");
    }
    if (rc) {
        fpx_strlist_free (&list, count);
        return rc;
    }
    *names_p = list;
    *count_p = count;
    return 0;
}

int
fpx_index_list (fpx_client_t *self, char ***names_p /* OUT */, size_t *count_p /* OUT */)
{
    int rc = s_begin (self, FPX_OP_LIST);
    if (!rc)
        rc = s_check_out (self, names_p, "names_p");
    if (!rc)
        rc = s_check_out (self, count_p, "count_p");
    if (rc)
        return rc;
    s_params_t params;
    fpx_list_pack (s_params_init (&params), NULL);
    fpx_request_t request = { 0 };
    fpx_reply_t reply;
    rc = s_call (self, &request, &params, &reply);
    if (rc)
        return rc;
    rc = s_result_names (self, &reply, names_p, count_p);
    fpx_reply_close (&reply);
    return rc;
}

void
fpx_strlist_free (char ***names_p, size_t count)
{
    if (!names_p || !*names_p)
        return;
    for (size_t i = 0; i < count; i++)
        free ((*names_p) [i]);
    free (*names_p);
    *names_p = NULL;
}

int
fpx_index_describe (fpx_client_t *self, const char *name, int with_memory,
                    fpx_index_info_t *info /* OUT */)
{
    int rc = s_begin_named (self, FPX_OP_DESCRIBE, name);
    if (rc)
        return rc;
    s_params_t params;
    fpx_describe_pack (s_params_init (&params),
                       &(fpx_describe_args_t) { .name = name, .memory = with_memory != 0 });
    fpx_request_t request = { 0 };
    return s_call_description (self, &request, &params, info);
}

/* ---- data --------------------------------------------------------------- */

//  train, add, add_with_ids: checks the index name and n·d vectors (and
//  n ids unless ids is NULL), then fills *request and packs *params
//  (which s_call or s_send_async frees).
static int
s_vectors_prepare (fpx_client_t *self, int opcode, const char *name, int64_t n, int d,
                   const float *x, const int64_t *ids, fpx_request_t *request,
                   s_params_t *params)
{
    size_t bytes = 0, id_bytes = 0;
    int rc = s_begin (self, opcode);
    if (!rc)
        rc = s_check_name (self, name, false);
    if (!rc)
        rc = s_check_vectors (self, "n", n, d, x, &bytes);
    if (!rc && opcode == FPX_OP_ADD_WITH_IDS)
        rc = s_check_out (self, ids, "ids");
    if (!rc && ids)
        rc = s_check_rows (self, "n", n, sizeof (int64_t), &id_bytes);
    if (rc)
        return rc;
    *request = (fpx_request_t) { 0 };
    s_add_array (request, x, bytes);
    if (ids)
        s_add_array (request, ids, id_bytes);
    //  d: the server checks it against the index's.
    msgpack_packer *pk = s_params_init (params);
    if (opcode == FPX_OP_TRAIN)
        fpx_train_pack (pk, &(fpx_train_args_t) { .name = name, .d = d });
    else if (opcode == FPX_OP_ADD)
        fpx_add_pack (pk, &(fpx_add_args_t) { .name = name, .d = d });
    else
        fpx_add_with_ids_pack (pk, &(fpx_add_with_ids_args_t) { .name = name, .d = d });
    return 0;
}

//  train, add, add_with_ids in one exchange. On success the caller reads
//  and closes *reply.
static int
s_call_vectors (fpx_client_t *self, int opcode, const char *name, int64_t n, int d,
                const float *x, const int64_t *ids, fpx_reply_t *reply)
{
    fpx_request_t request;
    s_params_t params;
    int rc = s_vectors_prepare (self, opcode, name, n, d, x, ids, &request, &params);
    return rc ? rc : s_call (self, &request, &params, reply);
}

int
fpx_train (fpx_client_t *self, const char *name, int64_t n, int d, const float *x)
{
    fpx_reply_t reply;
    int is_trained;
    int rc = s_call_vectors (self, FPX_OP_TRAIN, name, n, d, x, NULL, &reply);
    if (rc)
        return rc;
    rc = s_result_bool (self, &reply, "is_trained", &is_trained);
    fpx_reply_close (&reply);
    return rc;
}

int
fpx_add (fpx_client_t *self, const char *name, int64_t n, int d,
         const float *x, int64_t *ntotal_out /* OUT */)
{
    fpx_reply_t reply;
    int rc = s_call_vectors (self, FPX_OP_ADD, name, n, d, x, NULL, &reply);
    return rc ? rc : s_finish_int (self, &reply, "ntotal", ntotal_out);
}

int
fpx_add_with_ids (fpx_client_t *self, const char *name, int64_t n, int d,
                  const float *x, const int64_t *ids, int64_t *ntotal_out /* OUT */)
{
    fpx_reply_t reply;
    int rc = s_call_vectors (self, FPX_OP_ADD_WITH_IDS, name, n, d, x, ids, &reply);
    return rc ? rc : s_finish_int (self, &reply, "ntotal", ntotal_out);
}

//  Checks the row count (key) echoed for an n·d vector frame. Requests
//  carry d and the server refuses a mismatch; this check of the echo is
//  the second line, for a server that ignored it.
static int
s_result_count (fpx_client_t *self, fpx_reply_t *reply, const char *key, int64_t n, int d)
{
    int64_t n_got = 0;
    int rc = s_result_int (self, reply, key, 1, INT64_MAX, &n_got);
    if (rc || n_got == n)
        return rc;
    if (((uint64_t) n * (uint64_t) d) % (uint64_t) n_got == 0)
        return s_fail (self, FPX_EINVAL, "d = %d does not match the object's dimension (%llu)",
                       d, (unsigned long long) ((uint64_t) n * (uint64_t) d / (uint64_t) n_got));
    return s_bad_result (self, key);
}

//  Checks search's result: nq and k echoed, then D and I copied out.
static int
s_search_result (fpx_client_t *self, fpx_reply_t *reply, int64_t nq, int d, int k,
                 float *distances, int64_t *labels)
{
    int64_t k_got = 0;
    size_t count = (size_t) nq * (size_t) k;
    const void *d_frame, *i_frame;
    int rc = s_result_count (self, reply, "nq", nq, d);
    if (!rc)
        rc = s_result_int (self, reply, "k", k, k, &k_got);
    if (!rc)
        rc = s_result_array (self, reply, 0, "distances", count * sizeof (float), &d_frame);
    if (!rc)
        rc = s_result_array (self, reply, 1, "labels", count * sizeof (int64_t), &i_frame);
    if (rc)
        return rc;
    memcpy (distances, d_frame, count * sizeof (float));
    memcpy (labels, i_frame, count * sizeof (int64_t));
    return 0;
}

//  Checks search's arguments, then fills *request and packs *packed
//  (which s_call or s_send_async frees); a selection's frame goes to
//  *bulk_p (caller frees after the call).
static int
s_search_prepare_select (fpx_client_t *self, const char *name, int64_t nq, int d,
                         const float *x, int k, const fpx_search_params_t *params,
                         const fpx_selection_t *selection,
                         const float *distances, const int64_t *labels,
                         fpx_request_t *request, s_params_t *packed, void **bulk_p)
{
    size_t bytes = 0, result_bytes = 0;
    int rc = s_begin (self, FPX_OP_SEARCH);
    if (!rc)
        rc = s_check_name (self, name, false);
    if (!rc)
        rc = s_check_vectors (self, "nq", nq, d, x, &bytes);
    if (!rc && (k < 1 || k > FPX_K_MAX))
        rc = s_fail (self, FPX_EINVAL, "k must be 1 to %d, got %d", FPX_K_MAX, k);
    if (!rc)    //  nq·k labels of 8 bytes must be addressable
        rc = s_check_rows (self, "nq", nq, (size_t) k * sizeof (int64_t), &result_bytes);
    if (!rc)
        rc = s_check_out (self, distances, "distances");
    if (!rc)
        rc = s_check_out (self, labels, "labels");
    s_search_wire_t wire;
    if (!rc)
        rc = s_search_wire (self, params, selection, &wire);
    if (rc)
        return rc;
    fpx_search_pack (s_params_init (packed), &(fpx_search_args_t) {
        .name = name, .d = d, .k = k,
        .has_nprobe = wire.has_nprobe, .nprobe = wire.nprobe,
        .has_efSearch = wire.has_efSearch, .efSearch = wire.efSearch,
        .has_max_codes = wire.has_max_codes, .max_codes = wire.max_codes,
        .sel = wire.nodes, .sel_count = wire.count });
    *request = (fpx_request_t) { .reply_arrays = 2 };
    s_add_array (request, x, bytes);
    if (wire.bulk)
        s_add_array (request, wire.bulk, wire.bulk_size);
    *bulk_p = wire.bulk;
    return 0;
}

static int
s_search_prepare (fpx_client_t *self, const char *name, int64_t nq, int d,
                  const float *x, int k, const fpx_search_params_t *params,
                  const float *distances, const int64_t *labels,
                  fpx_request_t *request, s_params_t *packed)
{
    void *bulk = NULL;
    return s_search_prepare_select (self, name, nq, d, x, k, params, NULL, distances, labels,
                                    request, packed, &bulk);
}

int
fpx_search (fpx_client_t *self, const char *name, int64_t nq, int d,
            const float *x, int k, const fpx_search_params_t *params,
            float *distances /* OUT */, int64_t *labels /* OUT */)
{
    return fpx_search_select (self, name, nq, d, x, k, params, NULL, distances, labels);
}

int
fpx_search_select (fpx_client_t *self, const char *name, int64_t nq, int d,
                   const float *x, int k, const fpx_search_params_t *params,
                   const fpx_selection_t *selection,
                   float *distances /* OUT */, int64_t *labels /* OUT */)
{
    fpx_request_t request;
    s_params_t packed;
    void *bulk = NULL;
    int rc = s_search_prepare_select (self, name, nq, d, x, k, params, selection, distances,
                                      labels, &request, &packed, &bulk);
    if (rc)
        return rc;
    fpx_reply_t reply;
    rc = s_call (self, &request, &packed, &reply);
    free (bulk);
    if (rc)
        return rc;
    rc = s_search_result (self, &reply, nq, d, k, distances, labels);
    fpx_reply_close (&reply);
    return rc;
}

int
fpx_search_and_reconstruct (fpx_client_t *self, const char *name, int64_t nq, int d,
                            const float *x, int k, const fpx_search_params_t *params,
                            float *distances /* OUT */, int64_t *labels /* OUT */,
                            float *recons /* OUT */)
{
    fpx_request_t request;
    s_params_t packed;
    size_t recons_bytes = 0;
    int rc = s_search_prepare (self, name, nq, d, x, k, params, distances, labels,
                               &request, &packed);
    if (rc)
        return rc;
    self->opcode = FPX_OP_SEARCH_AND_RECONSTRUCT;
    request.reply_arrays = 3;
    if ((size_t) k * (size_t) d > SIZE_MAX / sizeof (float))
        rc = s_fail (self, FPX_EINVAL, "k·d is too large");
    if (!rc)    //  nq·k·d floats must be addressable
        rc = s_check_rows (self, "nq", nq, (size_t) k * (size_t) d * sizeof (float), &recons_bytes);
    if (!rc)
        rc = s_check_out (self, recons, "recons");
    if (rc) {
        msgpack_sbuffer_destroy (&packed.buffer);
        return rc;
    }
    fpx_reply_t reply;
    rc = s_call (self, &request, &packed, &reply);
    if (rc)
        return rc;
    rc = s_search_result (self, &reply, nq, d, k, distances, labels);
    const void *r_frame = NULL;
    if (!rc)
        rc = s_result_array (self, &reply, 2, "recons", recons_bytes, &r_frame);
    if (!rc)
        memcpy (recons, r_frame, recons_bytes);
    fpx_reply_close (&reply);
    return rc;
}

void
fpx_range_result_destroy (fpx_range_result_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    fpx_range_result_t *self = *self_p;
    free (self->lims);
    free (self->distances);
    free (self->labels);
    free (self);
    *self_p = NULL;
}

//  lims must run from 0 to total without going down.
static bool
s_lims_are_valid (const uint64_t *lims, int64_t nq, int64_t total)
{
    if (lims [0] != 0 || lims [nq] != (uint64_t) total)
        return false;
    for (int64_t i = 0; i < nq; i++)
        if (lims [i] > lims [i + 1])
            return false;
    return true;
}

//  Builds the caller's result from range_search's reply.
static int
s_range_result (fpx_client_t *self, fpx_reply_t *reply, int64_t nq, int d,
                fpx_range_result_t **result_p)
{
    int64_t total = 0;
    const void *lims, *distances, *labels;
    size_t lims_bytes = ((size_t) nq + 1) * sizeof (uint64_t);
    int rc = s_result_count (self, reply, "nq", nq, d);
    if (!rc)    //  bounded so that total·8 bytes cannot overflow
        rc = s_result_int (self, reply, "total", 0, (int64_t) (SIZE_MAX / 16), &total);
    if (!rc)
        rc = s_result_array (self, reply, 0, "lims", lims_bytes, &lims);
    if (!rc)
        rc = s_result_array (self, reply, 1, "distances", (size_t) total * sizeof (float), &distances);
    if (!rc)
        rc = s_result_array (self, reply, 2, "labels", (size_t) total * sizeof (int64_t), &labels);
    if (rc)
        return rc;
    fpx_range_result_t *result = calloc (1, sizeof *result);
    if (result) {
        result->nq = nq;
        result->lims = malloc (lims_bytes);
        result->distances = malloc ((size_t) total * sizeof (float) + 1);
        result->labels = malloc ((size_t) total * sizeof (int64_t) + 1);
    }
    if (!result || !result->lims || !result->distances || !result->labels) {
        fpx_range_result_destroy (&result);
        return s_fail (self, FPX_ENOMEM, "out of memory for %lld results", (long long) total);
    }
    memcpy (result->lims, lims, lims_bytes);
    memcpy (result->distances, distances, (size_t) total * sizeof (float));
    memcpy (result->labels, labels, (size_t) total * sizeof (int64_t));
    if (!s_lims_are_valid (result->lims, nq, total)) {
        fpx_range_result_destroy (&result);
        return s_bad_result (self, "lims");
    }
    *result_p = result;
    return 0;
}

int
fpx_range_search (fpx_client_t *self, const char *name, int64_t nq, int d,
                  const float *x, float radius, const fpx_search_params_t *params,
                  fpx_range_result_t **result_p /* OUT */)
{
    return fpx_range_search_select (self, name, nq, d, x, radius, params, NULL, result_p);
}

int
fpx_range_search_select (fpx_client_t *self, const char *name, int64_t nq, int d,
                         const float *x, float radius, const fpx_search_params_t *params,
                         const fpx_selection_t *selection,
                         fpx_range_result_t **result_p /* OUT */)
{
    size_t bytes = 0, lims_bytes = 0;
    int rc = s_begin (self, FPX_OP_RANGE_SEARCH);
    if (!rc)
        rc = s_check_name (self, name, false);
    if (!rc)
        rc = s_check_vectors (self, "nq", nq, d, x, &bytes);
    if (!rc)    //  nq + 1 lims must be addressable
        rc = s_check_rows (self, "nq", nq, 2 * sizeof (uint64_t), &lims_bytes);
    if (!rc && isnan (radius))
        rc = s_fail (self, FPX_EINVAL, "radius is NaN");
    if (!rc)
        rc = s_check_out (self, result_p, "result_p");
    s_search_wire_t wire;
    if (!rc)
        rc = s_search_wire (self, params, selection, &wire);
    if (rc)
        return rc;
    s_params_t packed;
    fpx_range_search_pack (s_params_init (&packed), &(fpx_range_search_args_t) {
        .name = name, .d = d, .radius = radius,
        .has_nprobe = wire.has_nprobe, .nprobe = wire.nprobe,
        .has_efSearch = wire.has_efSearch, .efSearch = wire.efSearch,
        .has_max_codes = wire.has_max_codes, .max_codes = wire.max_codes,
        .sel = wire.nodes, .sel_count = wire.count });
    fpx_request_t request = { .reply_arrays = 3 };
    s_add_array (&request, x, bytes);
    if (wire.bulk)
        s_add_array (&request, wire.bulk, wire.bulk_size);
    fpx_reply_t reply;
    rc = s_call (self, &request, &packed, &reply);
    free (wire.bulk);
    if (rc)
        return rc;
    rc = s_range_result (self, &reply, nq, d, result_p);
    fpx_reply_close (&reply);
    return rc;
}

int
fpx_remove_ids (fpx_client_t *self, const char *name, int64_t n,
                const int64_t *ids, int64_t *removed_out /* OUT */)
{
    size_t bytes = 0;
    int rc = s_begin (self, FPX_OP_REMOVE_IDS);
    if (!rc)
        rc = s_check_name (self, name, false);
    if (!rc)
        rc = s_check_out (self, ids, "ids");
    if (!rc)
        rc = s_check_rows (self, "n", n, sizeof (int64_t), &bytes);
    if (rc)
        return rc;
    fpx_request_t request = { 0 };
    s_add_array (&request, ids, bytes);
    fpx_reply_t reply;
    s_params_t params;
    fpx_remove_ids_pack (s_params_init (&params), &(fpx_remove_ids_args_t) { .name = name });
    rc = s_call (self, &request, &params, &reply);
    return rc ? rc : s_finish_int (self, &reply, "removed", removed_out);
}

int
fpx_remove_range (fpx_client_t *self, const char *name, int64_t lo, int64_t hi,
                  int64_t *removed_out /* OUT */)
{
    int rc = s_begin (self, FPX_OP_REMOVE_IDS);
    if (!rc)
        rc = s_check_name (self, name, false);
    if (!rc && hi < lo)
        rc = s_fail (self, FPX_EINVAL, "hi (%lld) is below lo (%lld)",
                     (long long) hi, (long long) lo);
    if (rc)
        return rc;
    s_params_t params;
    fpx_remove_ids_pack (s_params_init (&params),
                         &(fpx_remove_ids_args_t) { .name = name, .has_lo = true, .lo = lo,
                                                    .has_hi = true, .hi = hi });
    fpx_request_t request = { 0 };
    fpx_reply_t reply;
    rc = s_call (self, &request, &params, &reply);
    return rc ? rc : s_finish_int (self, &reply, "removed", removed_out);
}

//  Copies n reconstructed rows of the index's dimension ("d" in the
//  result, which must be the caller's d) into out.
static int
s_reconstruct_result (fpx_client_t *self, fpx_reply_t *reply, int64_t n, int d, float *out)
{
    int64_t d_got = 0;
    const void *x;
    int rc = s_result_int (self, reply, "d", 1, FPX_DIM_MAX, &d_got);
    if (!rc && d_got != d)
        rc = s_fail (self, FPX_EINVAL, "the index has dimension %lld, out has rows of %d",
                     (long long) d_got, d);
    if (!rc)
        rc = s_result_array (self, reply, 0, "x", (size_t) n * (size_t) d * sizeof (float), &x);
    if (!rc)
        memcpy (out, x, (size_t) n * (size_t) d * sizeof (float));
    return rc;
}

int
fpx_reconstruct (fpx_client_t *self, const char *name, int64_t key, int d,
                 float *out /* OUT */)
{
    int rc = s_begin (self, FPX_OP_RECONSTRUCT);
    if (!rc)
        rc = s_check_name (self, name, false);
    if (!rc)
        rc = s_check_dim (self, d);
    if (!rc)
        rc = s_check_out (self, out, "out");
    if (rc)
        return rc;
    s_params_t params;
    fpx_reconstruct_pack (s_params_init (&params),
                          &(fpx_reconstruct_args_t) { .name = name, .key = key });
    fpx_request_t request = { .reply_arrays = 1 };
    fpx_reply_t reply;
    rc = s_call (self, &request, &params, &reply);
    if (rc)
        return rc;
    rc = s_reconstruct_result (self, &reply, 1, d, out);
    fpx_reply_close (&reply);
    return rc;
}

int
fpx_reconstruct_n (fpx_client_t *self, const char *name, int64_t i0, int64_t n,
                   int d, float *out /* OUT */)
{
    size_t bytes = 0;
    int rc = s_begin (self, FPX_OP_RECONSTRUCT_N);
    if (!rc)
        rc = s_check_name (self, name, false);
    if (!rc && i0 < 0)
        rc = s_fail (self, FPX_EINVAL, "i0 must be ≥ 0, got %lld", (long long) i0);
    if (!rc)
        rc = s_check_dim (self, d);
    if (!rc)
        rc = s_check_rows (self, "n", n, (size_t) d * sizeof (float), &bytes);
    if (!rc)
        rc = s_check_out (self, out, "out");
    if (rc)
        return rc;
    s_params_t params;
    fpx_reconstruct_n_pack (s_params_init (&params),
                            &(fpx_reconstruct_n_args_t) { .name = name, .i0 = i0, .n = n });
    fpx_request_t request = { .reply_arrays = 1 };
    fpx_reply_t reply;
    int64_t n_got = 0;
    rc = s_call (self, &request, &params, &reply);
    if (rc)
        return rc;
    rc = s_result_int (self, &reply, "n", n, n, &n_got);
    if (!rc)
        rc = s_reconstruct_result (self, &reply, n, d, out);
    fpx_reply_close (&reply);
    return rc;
}

int
fpx_reset (fpx_client_t *self, const char *name)
{
    int rc = s_begin_named (self, FPX_OP_RESET, name);
    if (rc)
        return rc;
    s_params_t params;
    fpx_reset_pack (s_params_init (&params), &(fpx_reset_args_t) { .name = name });
    fpx_request_t request = { 0 };
    fpx_reply_t reply;
    rc = s_call (self, &request, &params, &reply);
    return rc ? rc : s_finish_int (self, &reply, "ntotal", NULL);
}

int
fpx_set_parameters (fpx_client_t *self, const char *name, const char *params)
{
    int rc = s_begin (self, FPX_OP_SET_PARAMETERS);
    if (!rc)
        rc = s_check_name (self, name, false);
    if (!rc)
        rc = s_check_string (self, "params", params, FPX_SETPARAM_MAX - 1);
    if (rc)
        return rc;
    s_params_t packed;
    fpx_set_parameters_pack (s_params_init (&packed),
                             &(fpx_set_parameters_args_t) { .name = name, .params = params });
    return s_call_empty (self, &packed);
}

//  A call on name whose reply is one array of `count_key` elements of
//  elem_size bytes (get_id_map, whose parameters are only the name): the
//  array is copied into a malloc'd buffer the caller frees with fpx_free.
static int
s_call_download (fpx_client_t *self, int opcode, const char *name, const char *count_key,
                 size_t elem_size, void **data_p, size_t *count_p)
{
    int rc = s_begin (self, opcode);
    if (!rc)
        rc = s_check_name (self, name, false);
    if (!rc)
        rc = s_check_out (self, data_p, "data_p");
    if (!rc)
        rc = s_check_out (self, count_p, "count_p");
    if (rc)
        return rc;
    fpx_request_t request = { .reply_arrays = 1 };
    fpx_reply_t reply;
    s_params_t params;
    fpx_get_id_map_pack (s_params_init (&params), &(fpx_get_id_map_args_t) { .name = name });
    rc = s_call (self, &request, &params, &reply);
    if (rc)
        return rc;
    int64_t count = 0;
    const void *data;
    void *copy = NULL;
    rc = s_result_int (self, &reply, count_key, 0, (int64_t) (SIZE_MAX / 2 / elem_size), &count);
    size_t bytes = (size_t) count * elem_size;
    if (!rc)
        rc = s_result_array (self, &reply, 0, count_key, bytes, &data);
    if (!rc && !(copy = malloc (bytes + 1)))
        rc = s_fail (self, FPX_ENOMEM, "out of memory for %zu bytes", bytes);
    if (!rc) {
        memcpy (copy, data, bytes);
        *data_p = copy;
        *count_p = (size_t) count;
    }
    fpx_reply_close (&reply);
    return rc;
}

/* ---- transfers: serialize / deserialize of any size ------------------- */

//  Ends a transfer the caller gives up on, so that the server frees its
//  buffer now; the failure being reported stays on the handle.
static void
s_transfer_abort (fpx_client_t *self, int64_t transfer)
{
    int opcode = self->opcode, errcode = self->errcode;
    char errmsg [FPX_ERRMSG_MAX];
    memcpy (errmsg, self->errmsg, sizeof errmsg);
    self->opcode = FPX_OP_TRANSFER_ABORT;
    s_params_t params;
    fpx_transfer_abort_pack (s_params_init (&params),
                             &(fpx_transfer_abort_args_t) { .transfer = transfer });
    fpx_request_t request = { 0 };
    fpx_reply_t reply;
    if (s_call (self, &request, &params, &reply) == 0)
        fpx_reply_close (&reply);
    self->opcode = opcode;
    self->errcode = errcode;
    memcpy (self->errmsg, errmsg, sizeof errmsg);
}

//  Passes the reply's array 0 of `length` bytes to write.
static int
s_download_piece (fpx_client_t *self, fpx_reply_t *reply, size_t length,
                  fpx_write_fn write, void *arg)
{
    const void *data;
    int rc = s_result_array (self, reply, 0, "bytes", length, &data);
    if (!rc && write (arg, data, length))
        rc = s_fail (self, FPX_EIO, "the writer of the downloaded bytes failed");
    return rc;
}

//  An old server without download_begin: one serialize.
static int
s_download_whole (fpx_client_t *self, const char *name, int (*start) (void *, size_t),
                  fpx_write_fn write, void *arg, size_t *size_p)
{
    self->opcode = FPX_OP_SERIALIZE;
    fpx_request_t request = { .reply_arrays = 1 };
    fpx_reply_t reply;
    int rc = s_call_serialize (self, name, &request, &reply);
    if (rc)
        return rc;
    int64_t size = 0;
    rc = s_result_int (self, &reply, "size", 0, (int64_t) (SIZE_MAX / 2), &size);
    if (!rc && start && start (arg, (size_t) size))
        rc = s_fail (self, FPX_ENOMEM, "out of memory for %lld bytes", (long long) size);
    if (!rc)
        rc = s_download_piece (self, &reply, (size_t) size, write, arg);
    fpx_reply_close (&reply);
    if (!rc)
        *size_p = (size_t) size;
    return rc;
}

//  download_begin, then download_chunk in order until the last byte;
//  start (may be NULL) learns the total before the first write.
static int
s_download (fpx_client_t *self, const char *name, int (*start) (void *, size_t),
            fpx_write_fn write, void *arg, size_t *size_p)
{
    fpx_request_t request = { .reply_arrays = 1 };
    fpx_reply_t reply;
    s_params_t params;
    fpx_download_begin_pack (s_params_init (&params),
                             &(fpx_download_begin_args_t) { .name = name });
    int rc = s_call (self, &request, &params, &reply);
    if (rc == FPX_EOPCODE)
        return s_download_whole (self, name, start, write, arg, size_p);
    if (rc)
        return rc;
    int64_t transfer = 0, size = 0, chunk = 0;
    rc = s_result_int (self, &reply, "transfer", 0, INT64_MAX, &transfer);
    if (!rc)
        rc = s_result_int (self, &reply, "size", 0, (int64_t) (SIZE_MAX / 2), &size);
    if (!rc)
        rc = s_result_int (self, &reply, "chunk", 1, INT32_MAX, &chunk);
    if (!rc && ((transfer == 0) != (size <= chunk)))
        rc = s_bad_result (self, "transfer");
    if (!rc && start && start (arg, (size_t) size))
        rc = s_fail (self, FPX_ENOMEM, "out of memory for %lld bytes", (long long) size);
    int64_t offset = size < chunk ? size : chunk;
    if (!rc)
        rc = s_download_piece (self, &reply, (size_t) offset, write, arg);
    fpx_reply_close (&reply);
    self->opcode = FPX_OP_DOWNLOAD_CHUNK;
    while (!rc && offset < size) {
        int64_t length = size - offset < chunk ? size - offset : chunk;
        fpx_download_chunk_pack (s_params_init (&params),
                                 &(fpx_download_chunk_args_t) { .transfer = transfer,
                                                                .offset = offset,
                                                                .length = length });
        request = (fpx_request_t) { .reply_arrays = 1 };
        if ((rc = s_call (self, &request, &params, &reply)))
            break;
        int64_t at = -1, got = -1;
        rc = s_result_int (self, &reply, "offset", offset, offset, &at);
        if (!rc)
            rc = s_result_int (self, &reply, "length", length, length, &got);
        if (!rc)
            rc = s_download_piece (self, &reply, (size_t) length, write, arg);
        fpx_reply_close (&reply);
        offset += length;
    }
    if (rc && transfer && offset < size)
        s_transfer_abort (self, transfer);
    if (!rc && size_p)
        *size_p = (size_t) size;
    return rc;
}

int
fpx_serialize_to (fpx_client_t *self, const char *name, fpx_write_fn write,
                  void *arg, size_t *size_p /* OUT */)
{
    int rc = s_begin (self, FPX_OP_DOWNLOAD_BEGIN);
    if (!rc)
        rc = s_check_name (self, name, false);
    if (!rc)
        rc = s_check_out (self, (const void *) write, "write");
    if (rc)
        return rc;
    size_t size = 0;
    rc = s_download (self, name, NULL, write, arg, &size);
    if (!rc && size_p)
        *size_p = size;
    return rc;
}

//  fpx_serialize's sink: one buffer of the announced size.
typedef struct {
    uint8_t *data;
    size_t size, used;
} s_sink_t;

static int
s_sink_start (void *arg, size_t size)
{
    s_sink_t *sink = arg;
    sink->data = malloc (size + 1);
    sink->size = size;
    return sink->data ? 0 : -1;
}

static int
s_sink_write (void *arg, const uint8_t *data, size_t size)
{
    s_sink_t *sink = arg;
    if (size > sink->size - sink->used)
        return -1;
    memcpy (sink->data + sink->used, data, size);
    sink->used += size;
    return 0;
}

int
fpx_serialize (fpx_client_t *self, const char *name,
               uint8_t **bytes_p /* OUT */, size_t *size_p /* OUT */)
{
    int rc = s_begin (self, FPX_OP_DOWNLOAD_BEGIN);
    if (!rc)
        rc = s_check_name (self, name, false);
    if (!rc)
        rc = s_check_out (self, bytes_p, "bytes_p");
    if (!rc)
        rc = s_check_out (self, size_p, "size_p");
    if (rc)
        return rc;
    s_sink_t sink = { 0 };
    size_t size = 0;
    rc = s_download (self, name, s_sink_start, s_sink_write, &sink, &size);
    if (!rc && sink.used != size)
        rc = s_fail (self, FPX_EPROTO, "malformed reply: %zu of %zu bytes", sink.used, size);
    if (rc) {
        free (sink.data);
        return rc;
    }
    *bytes_p = sink.data;
    *size_p = size;
    return 0;
}

//  One deserialize message: the small case, and old servers.
static int
s_upload_whole (fpx_client_t *self, const char *name, const char *factory,
                const uint8_t *bytes, size_t size, fpx_index_info_t *info)
{
    self->opcode = FPX_OP_DESERIALIZE;
    s_params_t params;
    fpx_deserialize_pack (s_params_init (&params),
                          &(fpx_deserialize_args_t) { .name = name, .factory = factory });
    fpx_request_t request = { 0 };
    s_add_array (&request, bytes, size);
    return s_call_description (self, &request, &params, info);
}

//  A read callback over a buffer.
typedef struct {
    const uint8_t *data;
    size_t size, used;
} s_source_t;

static int
s_source_read (void *arg, uint8_t *data, size_t size)
{
    s_source_t *source = arg;
    if (size > source->size - source->used)
        return -1;
    memcpy (data, source->data + source->used, size);
    source->used += size;
    return 0;
}

//  upload_begin {size, name, factory}; chunks in order; upload_commit.
//  bytes: the whole index when the caller has it (no copies), else NULL
//  and read.
static int
s_upload (fpx_client_t *self, const char *name, const char *factory, size_t size,
          const uint8_t *bytes, fpx_read_fn read, void *arg, fpx_index_info_t *info)
{
    uint8_t *buffer = NULL;
    int rc = 0;
    if (size <= FPX_UPLOAD_INLINE_MAX) {
        if (!bytes) {
            if (!(buffer = malloc (size)))
                return s_fail (self, FPX_ENOMEM, "out of memory for %zu bytes", size);
            if (read (arg, buffer, size))
                rc = s_fail (self, FPX_EIO, "the reader of the bytes to upload failed");
        }
        if (!rc)
            rc = s_upload_whole (self, name, factory, bytes ? bytes : buffer, size, info);
        free (buffer);
        return rc;
    }
    self->opcode = FPX_OP_UPLOAD_BEGIN;
    s_params_t params;
    fpx_upload_begin_pack (s_params_init (&params),
                           &(fpx_upload_begin_args_t) { .size = (int64_t) size, .name = name,
                                                        .factory = factory });
    fpx_request_t request = { 0 };
    fpx_reply_t reply;
    rc = s_call (self, &request, &params, &reply);
    if (rc == FPX_EOPCODE && bytes)
        return s_upload_whole (self, name, factory, bytes, size, info);
    if (rc)
        return rc;
    int64_t transfer = 0, chunk = 0;
    rc = s_result_int (self, &reply, "transfer", 1, INT64_MAX, &transfer);
    if (!rc)
        rc = s_result_int (self, &reply, "chunk", 1, INT32_MAX, &chunk);
    fpx_reply_close (&reply);
    if (rc)
        return rc;
    if (!bytes && !(buffer = malloc ((size_t) chunk < size ? (size_t) chunk : size)))
        rc = s_fail (self, FPX_ENOMEM, "out of memory for a chunk of %lld bytes", (long long) chunk);
    self->opcode = FPX_OP_UPLOAD_CHUNK;
    for (size_t offset = 0; !rc && offset < size; ) {
        size_t length = size - offset < (size_t) chunk ? size - offset : (size_t) chunk;
        if (!bytes && read (arg, buffer, length)) {
            rc = s_fail (self, FPX_EIO, "the reader of the bytes to upload failed");
            break;
        }
        fpx_upload_chunk_pack (s_params_init (&params),
                               &(fpx_upload_chunk_args_t) { .transfer = transfer,
                                                            .offset = (int64_t) offset });
        request = (fpx_request_t) { 0 };
        s_add_array (&request, bytes ? bytes + offset : buffer, length);
        if ((rc = s_call (self, &request, &params, &reply)))
            break;
        offset += length;
        int64_t received;
        rc = s_result_int (self, &reply, "received", (int64_t) offset, (int64_t) offset, &received);
        fpx_reply_close (&reply);
    }
    free (buffer);
    if (!rc) {
        self->opcode = FPX_OP_UPLOAD_COMMIT;
        fpx_upload_commit_pack (s_params_init (&params),
                                &(fpx_upload_commit_args_t) { .transfer = transfer });
        request = (fpx_request_t) { 0 };
        return s_call_description (self, &request, &params, info);
    }
    s_transfer_abort (self, transfer);
    return rc;
}

static int
s_check_upload (fpx_client_t *self, const char *name, const char *factory, size_t size)
{
    int rc = 0;
    if (name)
        rc = s_check_name (self, name, true);
    if (!rc && factory && factory [0])
        rc = s_check_string (self, "factory", factory, FPX_FACTORY_MAX - 1);
    if (!rc && size == 0)
        rc = s_fail (self, FPX_EINVAL, "size must be at least 1");
    return rc;
}

int
fpx_deserialize (fpx_client_t *self, const char *name, const char *factory,
                 const uint8_t *bytes, size_t size, fpx_index_info_t *info /* OUT */)
{
    int rc = s_begin (self, FPX_OP_DESERIALIZE);
    if (!rc)
        rc = s_check_upload (self, name, factory, size);
    if (!rc)
        rc = s_check_out (self, bytes, "bytes");
    if (rc)
        return rc;
    s_source_t source = { .data = bytes, .size = size };
    return s_upload (self, name, factory, size, bytes, s_source_read, &source, info);
}

int
fpx_deserialize_from (fpx_client_t *self, const char *name, const char *factory,
                      size_t size, fpx_read_fn read, void *arg,
                      fpx_index_info_t *info /* OUT */)
{
    int rc = s_begin (self, FPX_OP_DESERIALIZE);
    if (!rc)
        rc = s_check_upload (self, name, factory, size);
    if (!rc)
        rc = s_check_out (self, (const void *) read, "read");
    if (rc)
        return rc;
    return s_upload (self, name, factory, size, NULL, read, arg, info);
}

/* ---- objects: composition, views, attributes, transforms -------------- */

static int
s_check_construct (fpx_client_t *self, int nargs, const double *args,
                   int nrefs, const char *const *refs)
{
    if (nargs < 0 || nargs > FPX_CONSTRUCT_ARGS_MAX || (nargs && !args))
        return s_fail (self, FPX_EINVAL, "args must be 0 to %d numbers", FPX_CONSTRUCT_ARGS_MAX);
    if (nrefs < 0 || nrefs > FPX_CONSTRUCT_REFS_MAX || (nrefs && !refs))
        return s_fail (self, FPX_EINVAL, "refs must be 0 to %d names", FPX_CONSTRUCT_REFS_MAX);
    for (int i = 0; i < nargs; i++)
        if (!isfinite (args [i]))
            return s_fail (self, FPX_EINVAL, "args [%d] is not a finite number", i);
    int rc = 0;
    for (int i = 0; i < nrefs && !rc; i++)
        rc = s_check_name (self, refs [i], false);
    return rc;
}

int
fpx_construct (fpx_client_t *self, const char *type, int nargs, const double *args,
               int nrefs, const char *const *refs, fpx_index_info_t *info /* OUT */)
{
    int rc = s_begin (self, FPX_OP_CONSTRUCT);
    if (!rc)
        rc = s_check_string (self, "type", type, FPX_TYPE_NAME_MAX - 1);
    if (!rc)
        rc = s_check_construct (self, nargs, args, nrefs, refs);
    if (rc)
        return rc;
    s_params_t params;
    fpx_construct_pack (s_params_init (&params), &(fpx_construct_args_t) {
        .type = type, .args = args, .args_count = nargs, .refs = refs, .refs_count = nrefs });
    fpx_request_t request = { 0 };
    return s_call_description (self, &request, &params, info);
}

//  subobject, get_attr, set_attr: the object's name plus one short word
//  (path or attribute name).
static int
s_check_name_word (fpx_client_t *self, int opcode, const char *name,
                   const char *what, const char *word)
{
    int rc = s_begin (self, opcode);
    if (!rc)
        rc = s_check_name (self, name, false);
    if (!rc)
        rc = s_check_string (self, what, word, FPX_TYPE_NAME_MAX - 1);
    return rc;
}

int
fpx_subobject (fpx_client_t *self, const char *name, const char *path,
               fpx_index_info_t *info /* OUT */)
{
    int rc = s_check_name_word (self, FPX_OP_SUBOBJECT, name, "path", path);
    if (rc)
        return rc;
    s_params_t params;
    fpx_subobject_pack (s_params_init (&params),
                        &(fpx_subobject_args_t) { .name = name, .path = path });
    fpx_request_t request = { 0 };
    return s_call_description (self, &request, &params, info);
}

int
fpx_attach (fpx_client_t *self, const char *name, const char *role, const char *ref,
            fpx_index_info_t *info /* OUT */)
{
    int rc = s_check_name_word (self, FPX_OP_ATTACH, name, "role", role);
    if (!rc)
        rc = s_check_name_word (self, FPX_OP_ATTACH, ref, "role", role);
    if (rc)
        return rc;
    s_params_t params;
    fpx_attach_pack (s_params_init (&params), &(fpx_attach_args_t) {
        .name = name, .role = role, .ref = ref });
    fpx_request_t request = { 0 };
    return s_call_description (self, &request, &params, info);
}

int
fpx_merge_from (fpx_client_t *self, const char *name, const char *other, int64_t add_id,
                fpx_index_info_t *info /* OUT */)
{
    int rc = s_check_name_word (self, FPX_OP_ATTACH, name, "role", "merge_from");
    if (!rc)
        rc = s_check_name_word (self, FPX_OP_ATTACH, other, "role", "merge_from");
    if (!rc && add_id < 0)
        rc = s_fail (self, FPX_EINVAL, "add_id must be 0 or more");
    if (rc)
        return rc;
    s_params_t params;
    fpx_attach_pack (s_params_init (&params), &(fpx_attach_args_t) {
        .name = name, .role = "merge_from", .ref = other, .has_add_id = true, .add_id = add_id });
    fpx_request_t request = { 0 };
    return s_call_description (self, &request, &params, info);
}

int
fpx_get_attr (fpx_client_t *self, const char *name, const char *attr, double *value /* OUT */)
{
    int rc = s_check_name_word (self, FPX_OP_GET_ATTR, name, "attr", attr);
    if (!rc)
        rc = s_check_out (self, value, "value");
    if (rc)
        return rc;
    s_params_t params;
    fpx_get_attr_pack (s_params_init (&params),
                       &(fpx_get_attr_args_t) { .name = name, .attr = attr });
    fpx_request_t request = { 0 };
    fpx_reply_t reply;
    rc = s_call (self, &request, &params, &reply);
    if (rc)
        return rc;
    if (fpx_params_get_double (&reply.result, "value", value) != 0)
        rc = s_bad_result (self, "value");
    fpx_reply_close (&reply);
    return rc;
}

int
fpx_set_attr (fpx_client_t *self, const char *name, const char *attr, double value)
{
    int rc = s_check_name_word (self, FPX_OP_SET_ATTR, name, "attr", attr);
    if (!rc && isnan (value))
        rc = s_fail (self, FPX_EINVAL, "value is NaN");
    if (rc)
        return rc;
    s_params_t params;
    fpx_set_attr_pack (s_params_init (&params),
                       &(fpx_set_attr_args_t) { .name = name, .attr = attr, .value = value });
    return s_call_empty (self, &params);
}

int
fpx_clone (fpx_client_t *self, const char *name, fpx_index_info_t *info /* OUT */)
{
    int rc = s_begin_named (self, FPX_OP_CLONE, name);
    if (rc)
        return rc;
    s_params_t params;
    fpx_clone_pack (s_params_init (&params), &(fpx_clone_args_t) { .name = name });
    fpx_request_t request = { 0 };
    return s_call_description (self, &request, &params, info);
}

//  Checks apply's result: n echoed (see s_result_count), the output row
//  length equal to the caller's out_d, then the rows copied out.
static int
s_apply_result (fpx_client_t *self, fpx_reply_t *reply, int64_t n, int d, int out_d, float *out)
{
    int64_t d_got = 0;
    const void *y;
    size_t bytes = (size_t) n * (size_t) out_d * sizeof (float);
    int rc = s_result_count (self, reply, "n", n, d);
    if (!rc)
        rc = s_result_int (self, reply, "d", 1, FPX_DIM_MAX, &d_got);
    if (!rc && d_got != out_d)
        rc = s_fail (self, FPX_EINVAL, "the transform's output has rows of %lld, out_d is %d",
                     (long long) d_got, out_d);
    if (!rc)
        rc = s_result_array (self, reply, 0, "y", bytes, &y);
    if (!rc)
        memcpy (out, y, bytes);
    return rc;
}

int
fpx_apply (fpx_client_t *self, const char *name, int reverse, int64_t n, int d,
           const float *x, int out_d, float *out /* OUT */)
{
    size_t bytes = 0, out_bytes = 0;
    int rc = s_begin (self, FPX_OP_APPLY);
    if (!rc)
        rc = s_check_name (self, name, false);
    if (!rc)
        rc = s_check_vectors (self, "n", n, d, x, &bytes);
    if (!rc)
        rc = s_check_dim (self, out_d);
    if (!rc)
        rc = s_check_rows (self, "n", n, (size_t) out_d * sizeof (float), &out_bytes);
    if (!rc)
        rc = s_check_out (self, out, "out");
    if (rc)
        return rc;
    s_params_t params;
    fpx_apply_pack (s_params_init (&params), &(fpx_apply_args_t) {
        .name = name, .has_d = true, .d = d, .reverse = reverse != 0 });
    fpx_request_t request = { .reply_arrays = 1 };
    s_add_array (&request, x, bytes);
    fpx_reply_t reply;
    rc = s_call (self, &request, &params, &reply);
    if (rc)
        return rc;
    rc = s_apply_result (self, &reply, n, d, out_d, out);
    fpx_reply_close (&reply);
    return rc;
}

//  One codec call through apply: in (in_bytes) goes, out_bytes come back.
static int
s_codec_call (fpx_client_t *self, const char *name, bool decode, int d, const void *in,
              size_t in_bytes, int64_t n, const char *size_key, int64_t row, void *out,
              size_t out_bytes)
{
    s_params_t params;
    fpx_apply_pack (s_params_init (&params), &(fpx_apply_args_t) {
        .name = name, .has_d = !decode, .d = d, .reverse = decode });
    fpx_request_t request = { .reply_arrays = 1 };
    s_add_array (&request, in, in_bytes);
    fpx_reply_t reply;
    int rc = s_call (self, &request, &params, &reply);
    if (rc)
        return rc;
    int64_t n_got = 0, row_got = 0;
    const void *frame;
    rc = s_result_int (self, &reply, "n", 1, INT64_MAX, &n_got);
    if (!rc)
        rc = s_result_int (self, &reply, size_key, 1, INT64_MAX, &row_got);
    if (!rc && (n_got != n || row_got != row))
        rc = s_fail (self, FPX_EINVAL, "the index's %s is %lld, not %lld (%lld rows)", size_key,
                     (long long) row_got, (long long) row, (long long) n_got);
    if (!rc)
        rc = s_result_array (self, &reply, 0, decode ? "x" : "codes", out_bytes, &frame);
    if (!rc)
        memcpy (out, frame, out_bytes);
    fpx_reply_close (&reply);
    return rc;
}

int
fpx_sa_encode (fpx_client_t *self, const char *name, int64_t n, int d, const float *x,
               size_t code_size, uint8_t *codes /* OUT */)
{
    size_t bytes = 0, out_bytes = 0;
    int rc = s_begin (self, FPX_OP_APPLY);
    if (!rc)
        rc = s_check_name (self, name, false);
    if (!rc)
        rc = s_check_vectors (self, "n", n, d, x, &bytes);
    if (!rc && (code_size == 0 || code_size > INT64_MAX))
        rc = s_fail (self, FPX_EINVAL, "code_size must be at least 1");
    if (!rc)
        rc = s_check_rows (self, "n", n, code_size, &out_bytes);
    if (!rc)
        rc = s_check_out (self, codes, "codes");
    if (rc)
        return rc;
    return s_codec_call (self, name, false, d, x, bytes, n, "code_size", (int64_t) code_size,
                         codes, out_bytes);
}

int
fpx_sa_decode (fpx_client_t *self, const char *name, int64_t n, size_t code_size,
               const uint8_t *codes, int d, float *x /* OUT */)
{
    size_t bytes = 0, out_bytes = 0;
    int rc = s_begin (self, FPX_OP_APPLY);
    if (!rc)
        rc = s_check_name (self, name, false);
    if (!rc)
        rc = s_check_dim (self, d);
    if (!rc && (code_size == 0 || code_size > INT64_MAX))
        rc = s_fail (self, FPX_EINVAL, "code_size must be at least 1");
    if (!rc)
        rc = s_check_out (self, codes, "codes");
    if (!rc)
        rc = s_check_rows (self, "n", n, code_size, &bytes);
    if (!rc)
        rc = s_check_rows (self, "n", n, (size_t) d * sizeof (float), &out_bytes);
    if (!rc)
        rc = s_check_out (self, x, "x");
    if (rc)
        return rc;
    return s_codec_call (self, name, true, d, codes, bytes, n, "d", d, x, out_bytes);
}

int
fpx_set_direct_map (fpx_client_t *self, const char *name, int type)
{
    int rc = s_begin (self, FPX_OP_SET_DIRECT_MAP);
    if (!rc)
        rc = s_check_name (self, name, false);
    if (!rc && (type < 0 || type > 2))
        rc = s_fail (self, FPX_EINVAL, "type must be 0 (none), 1 (array) or 2 (hashtable), "
                     "got %d", type);
    if (rc)
        return rc;
    s_params_t params;
    fpx_set_direct_map_pack (s_params_init (&params),
                             &(fpx_set_direct_map_args_t) { .name = name, .type = type });
    return s_call_empty (self, &params);
}

int
fpx_get_id_map (fpx_client_t *self, const char *name, int64_t **ids_p /* OUT */,
                size_t *n_p /* OUT */)
{
    return s_call_download (self, FPX_OP_GET_ID_MAP, name, "n", sizeof (int64_t),
                            (void **) ids_p, n_p);
}

/* ---- k-means ----------------------------------------------------------- */

static int
s_check_kmeans (fpx_client_t *self, const fpx_kmeans_params_t *p)
{
    if (p && (p->niter < 0 || p->nredo < 0 || p->min_points_per_centroid < 0
          ||  p->max_points_per_centroid < 0))
        return s_fail (self, FPX_EINVAL, "niter, nredo and the points per centroid must be ≥ 0 "
                       "(0: FAISS's default)");
    if (p && p->metric != 0 && p->metric != FPX_METRIC_L2)
        return s_fail (self, FPX_EINVAL, "metric must be 0 (default: L2) or %d (L2), got %d",
                       FPX_METRIC_L2, p->metric);
    return 0;
}

//  Copies centroids and the objective of each iteration (the first of the
//  FPX_KMEANS_STATS doubles per iteration) out of kmeans' reply.
static int
s_kmeans_result (fpx_client_t *self, fpx_reply_t *reply, int d, int k, float *centroids,
                 float *obj, int max_obj, int *iterations_out)
{
    int64_t d_got = 0, k_got = 0, iterations = 0;
    size_t bytes = (size_t) k * (size_t) d * sizeof (float);
    const void *frame, *stats;
    int rc = s_result_int (self, reply, "k", k, k, &k_got);
    if (!rc)
        rc = s_result_int (self, reply, "d", d, d, &d_got);
    if (!rc)
        rc = s_result_int (self, reply, "iterations", 0, INT_MAX, &iterations);
    if (!rc)
        rc = s_result_array (self, reply, 0, "centroids", bytes, &frame);
    if (!rc)
        rc = s_result_array (self, reply, 1, "stats",
                             (size_t) iterations * FPX_KMEANS_STATS * sizeof (double), &stats);
    if (rc)
        return rc;
    memcpy (centroids, frame, bytes);
    for (int64_t i = 0; obj && i < iterations && i < max_obj; i++) {
        double value;
        memcpy (&value, (const double *) stats + i * FPX_KMEANS_STATS, sizeof value);
        obj [i] = (float) value;
    }
    if (iterations_out)
        *iterations_out = (int) iterations;
    return 0;
}

int
fpx_kmeans (fpx_client_t *self, int d, int k, int64_t n, const float *x,
            const fpx_kmeans_params_t *params, float *centroids /* OUT */,
            float *obj /* OUT */, int max_obj, int *iterations_out /* OUT */)
{
    size_t bytes = 0, centroid_bytes = 0;
    int rc = s_begin (self, FPX_OP_KMEANS);
    if (!rc)
        rc = s_check_vectors (self, "n", n, d, x, &bytes);
    if (!rc)
        rc = s_check_rows (self, "k", k, (size_t) d * sizeof (float), &centroid_bytes);
    if (!rc)
        rc = s_check_out (self, centroids, "centroids");
    if (!rc && obj && max_obj < 0)
        rc = s_fail (self, FPX_EINVAL, "max_obj must be ≥ 0, got %d", max_obj);
    if (!rc)
        rc = s_check_kmeans (self, params);
    if (rc)
        return rc;
    //  An optional parameter at 0 is FAISS's default and is not sent.
    fpx_kmeans_params_t none = { 0 };
    const fpx_kmeans_params_t *p = params ? params : &none;
    s_params_t packed;
    fpx_kmeans_pack (s_params_init (&packed), &(fpx_kmeans_args_t) {
        .d = d, .k = k,
        .has_niter = p->niter != 0, .niter = p->niter,
        .has_nredo = p->nredo != 0, .nredo = p->nredo,
        .has_seed = p->seed != 0, .seed = p->seed,
        .has_min_points_per_centroid = p->min_points_per_centroid != 0,
        .min_points_per_centroid = p->min_points_per_centroid,
        .has_max_points_per_centroid = p->max_points_per_centroid != 0,
        .max_points_per_centroid = p->max_points_per_centroid,
        .has_metric = p->metric != 0, .metric = p->metric,
        .spherical = p->spherical != 0, .int_centroids = p->int_centroids != 0,
        .update_index = p->update_index != 0 });
    fpx_request_t request = { .reply_arrays = 2 };
    s_add_array (&request, x, bytes);
    fpx_reply_t reply;
    rc = s_call (self, &request, &packed, &reply);
    if (rc)
        return rc;
    rc = s_kmeans_result (self, &reply, d, k, centroids, obj, max_obj, iterations_out);
    fpx_reply_close (&reply);
    return rc;
}

/* ---- asynchronous search and add ------------------------------------------
    Each request in flight has a record from a pool of FPX_MAX_IN_FLIGHT
    (its fpx_conn tag): what to check in the reply and where the results
    go. No allocation per request beyond the parameter frame's.           */

_Static_assert (FPX_MAX_IN_FLIGHT == FPX_CONN_MAX_ASYNC, "one bound for requests in flight");

struct s_pending_t {
    int opcode;
    int64_t n;                  //  nq for search, rows for add
    int d, k;
    float *distances;
    int64_t *labels;
    s_pending_t *next_free;
};

//  A free record, or NULL (FPX_ENOMEM / FPX_EBUSY on the handle).
static s_pending_t *
s_pending_take (fpx_client_t *self)
{
    if (!self->pending) {
        self->pending = calloc (FPX_MAX_IN_FLIGHT, sizeof *self->pending);
        if (!self->pending) {
            s_fail (self, FPX_ENOMEM, "out of memory");
            return NULL;
        }
        for (int i = 0; i < FPX_MAX_IN_FLIGHT; i++)
            self->pending [i].next_free = i + 1 < FPX_MAX_IN_FLIGHT ? &self->pending [i + 1] : NULL;
        self->pending_free = self->pending;
    }
    s_pending_t *record = self->pending_free;
    if (!record) {
        s_fail (self, FPX_EBUSY, "%d requests in flight already; receive some first",
                FPX_MAX_IN_FLIGHT);
        return NULL;
    }
    self->pending_free = record->next_free;
    return record;
}

static void
s_pending_give (fpx_client_t *self, s_pending_t *record)
{
    record->next_free = self->pending_free;
    self->pending_free = record;
}

//  Sends a prepared request with params (which it frees) and record as
//  its tag; gives the record back when nothing was sent.
static int
s_send_async (fpx_client_t *self, fpx_request_t *request, s_params_t *params,
              s_pending_t *record, uint64_t *request_id)
{
    request->opcode = self->opcode;
    int rc = 0;
    if (!params->buffer.data)
        rc = s_fail (self, FPX_ENOMEM, "out of memory");
    else {
        request->params = params->buffer.data;
        request->params_size = params->buffer.size;
        rc = fpx_conn_send (self->conn, request, record, request_id,
                            self->errmsg, sizeof self->errmsg);
        if (rc)
            self->errcode = rc;
    }
    msgpack_sbuffer_destroy (&params->buffer);
    if (rc)
        s_pending_give (self, record);
    return rc;
}

int
fpx_search_send (fpx_client_t *self, const char *name, int64_t nq, int d,
                 const float *x, int k, const fpx_search_params_t *params,
                 float *distances, int64_t *labels, uint64_t *request_id /* OUT */)
{
    int rc = s_begin (self, FPX_OP_SEARCH);
    if (!rc)
        rc = s_check_out (self, request_id, "request_id");
    if (rc)
        return rc;
    fpx_request_t request;
    s_params_t packed;
    rc = s_search_prepare (self, name, nq, d, x, k, params, distances, labels,
                           &request, &packed);
    if (rc)
        return rc;
    s_pending_t *record = s_pending_take (self);
    if (!record) {
        msgpack_sbuffer_destroy (&packed.buffer);
        return self->errcode;
    }
    *record = (s_pending_t) { .opcode = FPX_OP_SEARCH, .n = nq, .d = d, .k = k,
                              .distances = distances, .labels = labels };
    return s_send_async (self, &request, &packed, record, request_id);
}

int
fpx_add_send (fpx_client_t *self, const char *name, int64_t n, int d,
              const float *x, uint64_t *request_id /* OUT */)
{
    int rc = s_begin (self, FPX_OP_ADD);
    if (!rc)
        rc = s_check_out (self, request_id, "request_id");
    if (rc)
        return rc;
    fpx_request_t request;
    s_params_t params;
    rc = s_vectors_prepare (self, FPX_OP_ADD, name, n, d, x, NULL, &request, &params);
    if (rc)
        return rc;
    s_pending_t *record = s_pending_take (self);
    if (!record) {
        msgpack_sbuffer_destroy (&params.buffer);
        return self->errcode;
    }
    *record = (s_pending_t) { .opcode = FPX_OP_ADD, .n = n, .d = d };
    return s_send_async (self, &request, &params, record, request_id);
}

//  Checks a completed request's reply and delivers its results.
static int
s_complete (fpx_client_t *self, s_pending_t *record, fpx_reply_t *reply,
            int64_t *ntotal)
{
    if (record->opcode == FPX_OP_SEARCH)
        return s_search_result (self, reply, record->n, record->d, record->k,
                                record->distances, record->labels);
    return s_result_int (self, reply, "ntotal", 0, INT64_MAX, ntotal);
}

int
fpx_recv (fpx_client_t *self, int timeout_ms, fpx_completion_t *completion /* OUT */)
{
    if (!self || !completion)
        return FPX_EINVAL;
    uint64_t id = 0;
    void *tag = NULL;
    int status = 0;
    fpx_reply_t reply;
    int rc = fpx_conn_recv (self->conn, timeout_ms, &id, &tag, &status, &reply,
                            self->errmsg, sizeof self->errmsg);
    if (rc == 0)
        return 0;
    s_pending_t *record = tag;
    self->opcode = record->opcode;
    *completion = (fpx_completion_t) { .request_id = id, .status = status, .ntotal = -1 };
    if (status == 0) {
        int64_t ntotal = -1;
        status = s_complete (self, record, &reply, &ntotal);
        fpx_reply_close (&reply);
        completion->status = status;
        completion->ntotal = status == 0 ? ntotal : -1;
    }
    else
        self->errcode = status;
    s_pending_give (self, record);
    return 1;
}

int
fpx_in_flight (fpx_client_t *self)
{
    return self ? fpx_conn_in_flight (self->conn) : 0;
}
