/*  worker.c — the worker pool. Each worker owns a DEALER on the broker's
    inproc backend, announces itself ready with an empty frame, then serves
    one job at a time: a request (answered through the broker), a reap of a
    closed connection's anonymous indexes, or stop. Workers hold no state
    between jobs; everything shared lives in the registry.               */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "server.h"

typedef struct {
    fpx_server_t *server;
    uint32_t id;
    pthread_t thread;
} s_worker_t;

static s_worker_t *s_workers;

static void
s_send_ready (void *socket)
{
    zmq_send (socket, "", 0, 0);
}

static void
s_msg_copy_in (zmq_msg_t *msg, const void *data, size_t size)
{
    zmq_msg_init_size (msg, size);
    memcpy (zmq_msg_data (msg), data, size);
}

//  Sends [routing id][reply header][result][arrays…]; consumes reply arrays.
static void
s_send_reply (void *socket, zmq_msg_t *rid, const fpx_header_t *request, fpx_reply_t *reply)
{
    fpx_header_t header = { .version = FPX_PROTOCOL_VERSION, .opcode = request->opcode,
                            .status = reply->status, .request_id = request->request_id };
    uint8_t head [FPX_REPLY_HEADER_SIZE];
    fpx_header_encode_reply (&header, head);
    if (reply->status) {
        //  Errors carry no arrays and only the message.
        for (int i = 0; i < reply->narrays; i++)
            zmq_msg_close (&reply->arrays [i]);
        reply->narrays = 0;
        msgpack_sbuffer_clear (&reply->result);
        msgpack_pack_map (&reply->pk, 1);
        fpx_pack_kv_str (&reply->pk, "error", reply->error);
    }
    zmq_msg_t frame;
    zmq_msg_send (rid, socket, ZMQ_SNDMORE);
    s_msg_copy_in (&frame, head, sizeof head);
    zmq_msg_send (&frame, socket, ZMQ_SNDMORE);
    s_msg_copy_in (&frame, reply->result.data, reply->result.size);
    zmq_msg_send (&frame, socket, reply->narrays ? ZMQ_SNDMORE : 0);
    for (int i = 0; i < reply->narrays; i++)
        zmq_msg_send (&reply->arrays [i], socket, i + 1 < reply->narrays ? ZMQ_SNDMORE : 0);
    reply->narrays = 0;
}

static void
s_serve_request (s_worker_t *self, void *socket, zmq_msg_t *frames, int count, fpx_reply_t *reply)
{
    fpx_call_t call = {
        .server = self->server,
        .envelope = zmq_msg_data (&frames [1]),
        .arrays = frames + 4,
        .narrays = count - 4,
        .reply = reply,
    };
    reply->status = 0;
    reply->error [0] = 0;
    reply->narrays = 0;
    msgpack_sbuffer_clear (&reply->result);
    //  The broker checked the header; decode it again for our own copy.
    fpx_header_decode_request (&call.header, zmq_msg_data (&frames [2]), zmq_msg_size (&frames [2]));
    if (fpx_params_decode (&call.params, zmq_msg_data (&frames [3]), zmq_msg_size (&frames [3])))
        fpx_reply_error (reply, FPX_EPROTO, "malformed parameters (not a bounded msgpack map)");
    else
        fpx_ops_execute (&call);
    for (int i = 0; i < call.nscratch; i++)
        free (call.scratch [i]);
    s_send_reply (socket, &frames [0], &call.header, reply);
}

static void *
s_worker_main (void *arg)
{
    s_worker_t *self = arg;
    void *socket = zmq_socket (self->server->zmq_ctx, ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt (socket, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt (socket, ZMQ_ROUTING_ID, &self->id, sizeof self->id);
    zmq_connect (socket, FPX_BACKEND_ENDPOINT);
    s_send_ready (socket);

    fpx_reply_t reply;
    memset (&reply, 0, sizeof reply);
    msgpack_sbuffer_init (&reply.result);
    msgpack_packer_init (&reply.pk, &reply.result, msgpack_sbuffer_write);

    bool running = true;
    while (running) {
        zmq_msg_t frames [FPX_MAX_FRAMES + 2];
        int count = 0, more = 1;
        while (more && count < FPX_MAX_FRAMES + 2) {
            zmq_msg_init (&frames [count]);
            if (zmq_msg_recv (&frames [count], socket, 0) < 0) {
                zmq_msg_close (&frames [count]);
                more = 0;
                running = false;
                break;
            }
            more = zmq_msg_more (&frames [count++]);
        }
        const fpx_envelope_t *envelope = NULL;
        int at = count == 1 ? 0 : 1;
        if (count > at && zmq_msg_size (&frames [at]) == sizeof (fpx_envelope_t))
            envelope = zmq_msg_data (&frames [at]);
        if (!envelope || envelope->kind == FPX_JOB_STOP)
            running = false;
        else if (envelope->kind == FPX_JOB_REAP) {
            size_t reaped = fpx_registry_reap (self->server->registry, envelope->conn_id);
            if (reaped)
                fpx_log (FPX_LOG_INFO, "freed %zu anonymous index(es) of closed connection %llu",
                         reaped, (unsigned long long) envelope->conn_id);
            s_send_ready (socket);
        }
        else if (count >= 4)
            s_serve_request (self, socket, frames, count, &reply);
        else
            s_send_ready (socket);          //  never lose a worker
        for (int i = 0; i < count; i++)
            zmq_msg_close (&frames [i]);
    }
    msgpack_sbuffer_destroy (&reply.result);
    zmq_close (socket);
    return NULL;
}

int
fpx_workers_start (fpx_server_t *server)
{
    int count = server->config.workers;
    s_workers = calloc ((size_t) count, sizeof *s_workers);
    if (!s_workers)
        return -1;
    for (int i = 0; i < count; i++) {
        s_workers [i].server = server;
        s_workers [i].id = (uint32_t) i;
        if (pthread_create (&s_workers [i].thread, NULL, s_worker_main, &s_workers [i]))
            return -1;
    }
    return 0;
}

void
fpx_workers_join (fpx_server_t *server)
{
    for (int i = 0; s_workers && i < server->config.workers; i++)
        pthread_join (s_workers [i].thread, NULL);
    free (s_workers);
    s_workers = NULL;
}
