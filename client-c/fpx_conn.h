/*  fpx_conn.h — private to libfaissproxy: one DEALER connection to
    faissproxyd that runs one request/reply exchange at a time.

    It owns the ZeroMQ context and socket, the request id counter, the
    per-call timeout and the bookkeeping of zero-copy sends. It knows the
    frame layout (header, params, arrays) and checks a reply's header,
    status and frame count; it does not know what any opcode's parameters
    or results mean (fpx_client.c does).

    Not installed; its symbols are hidden in libfaissproxy.so.
*/
#ifndef FPX_CONN_H_INCLUDED
#define FPX_CONN_H_INCLUDED

#include <stddef.h>
#include <stdint.h>
#include <zmq.h>

#include "fpx_params.h"
#include "fpx_protocol.h"

#define FPX_PRIVATE __attribute__ ((visibility ("hidden")))

/*  Request payloads of at least this many bytes are sent without a copy
    (zmq_msg_init_data); smaller ones are copied, which is cheaper than the
    bookkeeping a zero-copy frame needs.                                  */
#define FPX_ZEROCOPY_MIN (64 * 1024)

/*  Room for an error message: the server's text plus our context.       */
#define FPX_ERRMSG_MAX (FPX_ERROR_TEXT_MAX + 256)

typedef struct _fpx_conn_t fpx_conn_t;

/*  One request. The array buffers are borrowed: fpx_conn_call does not
    return while ZeroMQ still references them.                           */
typedef struct {
    int opcode;
    const void *params;         //  msgpack map, or NULL with params_size 0
    size_t params_size;
    int array_count;            //  0 .. FPX_MAX_FRAMES - 2
    struct {
        const void *data;
        size_t size;
    } arrays [FPX_MAX_FRAMES - 2];
    int reply_arrays;           //  array frames a successful reply must have
} fpx_request_t;

/*  A successful reply: exactly 2 + reply_arrays frames, result decoded.
    result holds views into frames [1]; close with fpx_reply_close.      */
typedef struct {
    int frame_count;
    zmq_msg_t frames [FPX_MAX_FRAMES];
    fpx_params_t result;
} fpx_reply_t;

/*  Creates a connection to endpoint with api_key (≤ FPX_API_KEY_MAX
    bytes, checked by the caller) and timeout_ms (< 0: forever). Returns
    NULL if the endpoint is invalid or on ENOMEM. Caller owns it.        */
FPX_PRIVATE fpx_conn_t *fpx_conn_new (const char *endpoint, const char *api_key, int timeout_ms);

/*  Closes the socket (linger 0) and context; sets *self_p to NULL.      */
FPX_PRIVATE void fpx_conn_destroy (fpx_conn_t **self_p);

FPX_PRIVATE void fpx_conn_set_timeout (fpx_conn_t *self, int timeout_ms);
FPX_PRIVATE const char *fpx_conn_endpoint (fpx_conn_t *self);

/*  Sends request and waits for the reply with its request id, discarding
    replies of other ids (late replies of calls that timed out).
    Returns 0 with *reply filled (close it with fpx_reply_close), or a
    negative FPX_E… code with a message in errmsg[errmsg_size] and
    nothing in *reply to close: the server's status and error text, or
    FPX_ETIMEDOUT, FPX_EPROTO (malformed reply), FPX_EVERSION, FPX_ENOMEM,
    FPX_ECONNECT (socket failure).
    If the call ends while a zero-copy frame is still held by ZeroMQ (a
    timeout during a large upload), the socket is closed and a fresh one
    opened: the connection is then new, and the server frees the
    anonymous indexes of the old one.                                    */
FPX_PRIVATE int fpx_conn_call (fpx_conn_t *self, const fpx_request_t *request,
                               fpx_reply_t *reply, char *errmsg, size_t errmsg_size);

/*  Array frame i (0-based, after the result frame) of a reply.          */
FPX_PRIVATE const void *fpx_reply_array (fpx_reply_t *reply, int i, size_t *size);

/*  Releases the reply's frames. Accepts a reply that was never filled
    only if it was zero-initialised.                                     */
FPX_PRIVATE void fpx_reply_close (fpx_reply_t *reply);

#endif
