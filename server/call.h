/*  call.h — one request as a worker runs it (fpx_call_t) and the reply it
    builds (fpx_worker_reply_t), with the entry points into ops.c.

    A call belongs to the worker thread running it; it reaches the
    server's parts through call->server (registry, limits, transfers, …).
*/
#ifndef FPX_CALL_H_INCLUDED
#define FPX_CALL_H_INCLUDED

#include <msgpack.h>
#include <zmq.h>

#include "fpx_params.h"
#include "fpx_protocol.h"
#include "server.h"
#include "worker.h"

/*  A worker's reply being built: status, msgpack result, array frames.  */
typedef struct {
    int status;
    char error [FPX_ERROR_TEXT_MAX];
    msgpack_sbuffer result;
    msgpack_packer pk;
    zmq_msg_t arrays [FPX_REPLY_ARRAYS_MAX];
    int narrays;
} fpx_worker_reply_t;

/*  One request as a worker sees it. Array frames stay owned by the worker
    loop; aligned copies made for misaligned frames are freed after.     */
typedef struct {
    fpx_server_t *server;
    const fpx_envelope_t *envelope;
    fpx_header_t header;
    fpx_params_t params;
    zmq_msg_t *arrays;
    int narrays;
    void *scratch [4];             //  aligned copies to free
    int nscratch;
    fpx_worker_reply_t *reply;
} fpx_call_t;

/*  Executes one request; fills call->reply (status, result, arrays).    */
void fpx_ops_execute (fpx_call_t *call);

/*  Executes n ≥ 1 search requests with byte-identical parameters frames
    and tenant as one FAISS search where they allow it (several when their
    results together pass the message limit); fills each reply as
    fpx_ops_execute would, and counts the shared calls in batch_stats.   */
void fpx_ops_search_batch (fpx_call_t *calls, int n);

/*  Sets the reply to an error with a printf-style message. Returns code. */
int fpx_reply_error (fpx_worker_reply_t *reply, int code, const char *format, ...)
    __attribute__ ((format (printf, 3, 4)));

#endif
