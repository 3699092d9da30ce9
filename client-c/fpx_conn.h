/*  fpx_conn.h — private to libfaissproxy: one DEALER connection to
    faissproxyd with any number of requests in flight, up to a bound.

    It owns the ZeroMQ context and socket, the request ids, the table of
    requests in flight, the per-call timeout and the bookkeeping of
    zero-copy sends. It knows the frame layout (header, params, arrays) and
    checks a reply's header, status and frame count; it does not know what
    any opcode's parameters or results mean (fpx_client.c does).

    Two ways to run a request, freely mixed on one connection:
    - fpx_conn_call: send and wait for that reply (synchronous calls);
    - fpx_conn_send, then fpx_conn_recv: pipelining. Replies to these
      that arrive while a synchronous call waits are kept for
      fpx_conn_recv, not dropped.

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

/*  Asynchronous requests one connection may have in flight (a
    synchronous call always finds room besides them).                    */
#define FPX_CONN_MAX_ASYNC FPX_MAX_IN_FLIGHT

typedef struct _fpx_conn_t fpx_conn_t;

/*  One request. The array buffers are borrowed: fpx_conn_call does not
    return while ZeroMQ still references them; after fpx_conn_send they
    stay borrowed until fpx_conn_recv reports the request's completion.  */
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
    unsigned flags;             //  FPX_REQUEST_… below
} fpx_request_t;

/*  Request flags, chosen per opcode by fpx_client.c:
    IDEMPOTENT: a read; sent again, once, on a fresh connection when the
    one it went out on is lost before its reply (a server restart).
    LONG: may run for minutes on the server (train, add, k-means, …):
    waits up to the long timeout (default: as long as the connection
    lives) instead of the request timeout. Synchronous calls only.      */
#define FPX_REQUEST_IDEMPOTENT 1u
#define FPX_REQUEST_LONG       2u

/*  A successful reply: exactly 2 + reply_arrays frames, result decoded.
    result holds views into frames [1]; close with fpx_reply_close.      */
typedef struct {
    int frame_count;
    zmq_msg_t frames [FPX_MAX_FRAMES];
    fpx_params_t result;
} fpx_reply_t;

/*  Creates a connection to endpoint with api_key (≤ FPX_API_KEY_MAX
    bytes, checked by the caller) and timeout_ms (< 0: forever). With
    server_key (the server's CURVE public key, 40 Z85 characters; NULL or
    "": none) the connection is CURVE-encrypted with client_secret (Z85)
    as its key, or (NULL or "") a fresh key pair of its own. Returns NULL
    if the endpoint or a key is invalid or on ENOMEM. Caller owns it.    */
FPX_PRIVATE fpx_conn_t *fpx_conn_new (const char *endpoint, const char *api_key,
                                      const char *server_key, const char *client_secret,
                                      int timeout_ms);

/*  Closes the socket (linger 0) and context, abandoning asynchronous
    requests in flight; once it returns ZeroMQ holds none of their
    buffers. Sets *self_p to NULL.                                       */
FPX_PRIVATE void fpx_conn_destroy (fpx_conn_t **self_p);

/*  The timeouts apply to requests sent from now on (< 0: none). The
    request timeout bounds each request; the long one (default < 0: none
    while the connection lives) the synchronous FPX_REQUEST_LONG ones;
    the connect one how long a request waits for a connection.           */
FPX_PRIVATE void fpx_conn_set_timeout (fpx_conn_t *self, int timeout_ms);
FPX_PRIVATE void fpx_conn_set_connect_timeout (fpx_conn_t *self, int timeout_ms);
FPX_PRIVATE void fpx_conn_set_long_timeout (fpx_conn_t *self, int timeout_ms);

/*  How many times the connection was made again after the first one (a
    lost connection ZeroMQ re-established, or a socket reset): the server
    frees a connection's anonymous indexes when it goes.                 */
FPX_PRIVATE int fpx_conn_reconnects (fpx_conn_t *self);
FPX_PRIVATE const char *fpx_conn_endpoint (fpx_conn_t *self);

/*  Sends request and waits for the reply with its request id; replies to
    asynchronous requests in flight are kept for fpx_conn_recv, others
    (late replies of calls that timed out) are discarded.
    Returns 0 with *reply filled (close it with fpx_reply_close), or a
    negative FPX_E… code with a message in errmsg[errmsg_size] and
    nothing in *reply to close: the server's status and error text, or
    FPX_ETIMEDOUT, FPX_EPROTO (malformed reply), FPX_EVERSION, FPX_ENOMEM,
    FPX_ECONNECT (socket failure, no server, connection lost with the
    request in flight), FPX_EAUTH (CURVE handshake refused).
    No connection: waits up to the connect timeout, but fails at once
    when a connection attempt fails (refused, handshake refused) while
    this handle never had a connection; one that had waits out the
    bound, since a restarting server refuses for a moment.
    If the call ends while a zero-copy frame is still held by ZeroMQ (a
    timeout during a large upload), the socket is closed and a fresh one
    opened: the connection is then new, the server frees the anonymous
    indexes of the old one, and asynchronous requests in flight complete
    with FPX_ECONNECT.                                                   */
FPX_PRIVATE int fpx_conn_call (fpx_conn_t *self, const fpx_request_t *request,
                               fpx_reply_t *reply, char *errmsg, size_t errmsg_size);

/*  Sends request without waiting for its reply. tag is handed back with
    its completion. *id receives the request id (never 0). The request's
    arrays stay borrowed until fpx_conn_recv reports it. The request
    expires timeout_ms after it is sent (FPX_ETIMEDOUT on completion).
    Returns 0, or FPX_EBUSY (FPX_CONN_MAX_ASYNC in flight already),
    FPX_ETIMEDOUT (not connected within the timeout), FPX_ENOMEM or
    FPX_ECONNECT, with errmsg; then nothing was sent.                    */
FPX_PRIVATE int fpx_conn_send (fpx_conn_t *self, const fpx_request_t *request, void *tag,
                               uint64_t *id /* OUT */, char *errmsg, size_t errmsg_size);

/*  Waits up to timeout_ms (< 0: forever) for one asynchronous request to
    complete. Returns 0 if none completed in that time or none is in
    flight; else 1 with *id and *tag of the request, and *status: 0 with
    *reply filled (close it), or a negative code as fpx_conn_call's, with
    errmsg, and nothing in *reply to close. Completions come in the order
    their replies arrive, not the order of sending.                      */
FPX_PRIVATE int fpx_conn_recv (fpx_conn_t *self, int timeout_ms, uint64_t *id /* OUT */,
                               void **tag /* OUT */, int *status /* OUT */,
                               fpx_reply_t *reply /* OUT */, char *errmsg, size_t errmsg_size);

/*  Asynchronous requests sent and not yet reported by fpx_conn_recv.    */
FPX_PRIVATE int fpx_conn_in_flight (fpx_conn_t *self);

/*  Array frame i (0-based, after the result frame) of a reply.          */
FPX_PRIVATE const void *fpx_reply_array (fpx_reply_t *reply, int i, size_t *size);

/*  Releases the reply's frames. Accepts a reply that was never filled
    only if it was zero-initialised.                                     */
FPX_PRIVATE void fpx_reply_close (fpx_reply_t *reply);

#endif
