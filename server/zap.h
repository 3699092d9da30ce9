/*  zap.h — the ZAP handler (RFC 27) of a CURVE frontend: which CURVE
    client keys may connect (all, or those of --curve-clients-file).

    One per server with --curve-secret-file (server->zap), bound to its
    ZeroMQ context's inproc://zeromq.zap.01, so two servers in one process
    each answer for their own context. Its thread owns its one socket and
    reads only the server's configuration.
*/
#ifndef FPX_ZAP_H_INCLUDED
#define FPX_ZAP_H_INCLUDED

#include "server.h"

typedef struct fpx_zap_t fpx_zap_t;

/*  Binds the ZAP handler in server's context and starts its thread;
    before any CURVE socket binds. Returns it (caller owns), or NULL with
    a message logged. server's configuration must outlive it.            */
fpx_zap_t *fpx_zap_new (fpx_server_t *server);

/*  Waits for its thread, which ends once zmq_ctx_term of the server's
    context has begun, then frees it. NULL is fine; clears *self_p.      */
void fpx_zap_destroy (fpx_zap_t **self_p);

#endif
