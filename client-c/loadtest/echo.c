/*  echo.c — the floor under every remote figure: a raw ZeroMQ round trip
    (DEALER → ROUTER → DEALER) on tcp loopback with nothing else to do.

    The echo server is a thread of this process with its own ZeroMQ
    context (its own I/O thread, as a separate server process would
    have); each client thread has its own context and DEALER too, as
    libfaissproxy's handles do. A request is [id][payload]; the reply is
    [id][payload] (--reply-payload -1, a true echo) or [id][N bytes].
    Payloads of 64 KiB and more are sent without a copy, as the client
    library does.                                                       */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "loadtest.h"

#define S_HWM          100000
#define S_ZEROCOPY_MIN (64 * 1024)

static struct {
    void *context, *socket;
    pthread_t thread;
    int64_t reply_payload;
    char endpoint [256];
} s_server;

//  Forwards the rest of a multipart message's frames to nowhere.
static void
s_drain (void *socket, zmq_msg_t *last)
{
    while (zmq_msg_more (last)) {
        zmq_msg_close (last);
        zmq_msg_init (last);
        if (zmq_msg_recv (last, socket, 0) < 0)
            return;
    }
}

static void *
s_server_main (void *arg)
{
    (void) arg;
    void *socket = s_server.socket;
    for (;;) {
        zmq_msg_t rid, id, body;
        zmq_msg_init (&rid);
        zmq_msg_init (&id);
        zmq_msg_init (&body);
        if (zmq_msg_recv (&rid, socket, 0) < 0
        ||  zmq_msg_recv (&id, socket, 0) < 0
        ||  (zmq_msg_more (&id) && zmq_msg_recv (&body, socket, 0) < 0)) {
            bool term = zmq_errno () == ETERM;
            zmq_msg_close (&rid);
            zmq_msg_close (&id);
            zmq_msg_close (&body);
            if (term)
                break;
            continue;
        }
        s_drain (socket, &body);
        if (s_server.reply_payload >= 0) {
            zmq_msg_close (&body);
            zmq_msg_init_size (&body, (size_t) s_server.reply_payload);
            memset (zmq_msg_data (&body), 0, (size_t) s_server.reply_payload);
        }
        zmq_msg_send (&rid, socket, ZMQ_SNDMORE | ZMQ_DONTWAIT);
        zmq_msg_send (&id, socket, ZMQ_SNDMORE | ZMQ_DONTWAIT);
        if (zmq_msg_send (&body, socket, ZMQ_DONTWAIT) < 0)
            zmq_msg_close (&body);
        zmq_msg_close (&rid);
        zmq_msg_close (&id);
    }
    zmq_close (socket);
    return NULL;
}

const char *
lt_echo_start (int64_t reply_payload)
{
    int zero = 0, hwm = S_HWM;
    size_t size = sizeof s_server.endpoint;
    s_server.reply_payload = reply_payload;
    s_server.context = zmq_ctx_new ();
    s_server.socket = s_server.context ? zmq_socket (s_server.context, ZMQ_ROUTER) : NULL;
    if (!s_server.socket
    ||  zmq_setsockopt (s_server.socket, ZMQ_LINGER, &zero, sizeof zero)
    ||  zmq_setsockopt (s_server.socket, ZMQ_SNDHWM, &hwm, sizeof hwm)
    ||  zmq_setsockopt (s_server.socket, ZMQ_RCVHWM, &hwm, sizeof hwm)
    ||  zmq_bind (s_server.socket, "tcp://127.0.0.1:*")
    ||  zmq_getsockopt (s_server.socket, ZMQ_LAST_ENDPOINT, s_server.endpoint, &size)
    ||  pthread_create (&s_server.thread, NULL, s_server_main, NULL)) {
        fprintf (stderr, "fpx-loadtest: cannot start the echo server: %s\n",
                 zmq_strerror (zmq_errno ()));
        if (s_server.socket)
            zmq_close (s_server.socket);
        if (s_server.context)
            zmq_ctx_term (s_server.context);
        s_server.context = NULL;
        return NULL;
    }
    return s_server.endpoint;
}

void
lt_echo_stop (void)
{
    if (!s_server.context)
        return;
    zmq_ctx_shutdown (s_server.context);
    pthread_join (s_server.thread, NULL);
    zmq_ctx_term (s_server.context);
    s_server.context = NULL;
}

/* ---- the client engine -------------------------------------------------------- */

typedef struct {
    void *context, *socket;
    uint64_t last_id;
} s_echo_client_t;

static void
s_no_free (void *data, void *hint)
{
    (void) data;
    (void) hint;
}

static int
s_send (lt_client_t *client, lt_slot_t *slot)
{
    s_echo_client_t *self = client->handle;
    slot->id = ++self->last_id;
    size_t size = (size_t) client->options->payload;
    zmq_msg_t body;
    if (size >= S_ZEROCOPY_MIN)
        zmq_msg_init_data (&body, client->pool->payload, size, s_no_free, NULL);
    else {
        zmq_msg_init_size (&body, size);
        memcpy (zmq_msg_data (&body), client->pool->payload, size);
    }
    if (zmq_send (self->socket, &slot->id, sizeof slot->id, ZMQ_SNDMORE) < 0
    ||  zmq_msg_send (&body, self->socket, 0) < 0) {
        zmq_msg_close (&body);
        return FPX_ECONNECT;
    }
    return 0;
}

static int
s_recv (lt_client_t *client, int timeout_ms, lt_slot_t **slot)
{
    s_echo_client_t *self = client->handle;
    zmq_pollitem_t item = { self->socket, 0, ZMQ_POLLIN, 0 };
    if (zmq_poll (&item, 1, timeout_ms) <= 0)
        return 0;
    uint64_t id = 0;
    zmq_msg_t body;
    zmq_msg_init (&body);
    int rc = zmq_recv (self->socket, &id, sizeof id, 0);
    if (rc >= 0)
        zmq_msg_recv (&body, self->socket, 0);
    s_drain (self->socket, &body);
    zmq_msg_close (&body);
    for (int i = 0; rc == (int) sizeof id && i < client->nslots; i++)
        if (client->slots [i].busy && client->slots [i].id == id) {
            client->slots [i].status = 0;
            *slot = &client->slots [i];
            return 1;
        }
    return 0;
}

static int
s_call (lt_client_t *client, lt_slot_t *slot)
{
    int rc = s_send (client, slot);
    lt_slot_t *done = NULL;
    while (rc == 0 && done != slot)
        if (!s_recv (client, LT_TIMEOUT_MS, &done))
            return FPX_ETIMEDOUT;
    return rc;
}

static void
s_close (lt_client_t *client)
{
    s_echo_client_t *self = client->handle;
    if (!self)
        return;
    if (self->socket)
        zmq_close (self->socket);
    if (self->context)
        zmq_ctx_term (self->context);
    free (self);
    client->handle = NULL;
}

static int
s_open (lt_client_t *client)
{
    s_echo_client_t *self = calloc (1, sizeof *self);
    if (!self)
        return -1;
    client->handle = self;
    int zero = 0, hwm = S_HWM;
    self->context = zmq_ctx_new ();
    self->socket = self->context ? zmq_socket (self->context, ZMQ_DEALER) : NULL;
    if (!self->socket
    ||  zmq_setsockopt (self->socket, ZMQ_LINGER, &zero, sizeof zero)
    ||  zmq_setsockopt (self->socket, ZMQ_SNDHWM, &hwm, sizeof hwm)
    ||  zmq_setsockopt (self->socket, ZMQ_RCVHWM, &hwm, sizeof hwm)
    ||  zmq_connect (self->socket, client->run->targets->echo_endpoint)) {
        s_close (client);
        return -1;
    }
    //  One round trip before the clock starts, as the remote engine's ping.
    lt_slot_t warm = { .busy = true };
    lt_slot_t *saved = client->slots;
    int nslots = client->nslots;
    client->slots = &warm;
    client->nslots = 1;
    int rc = s_call (client, &warm);
    client->slots = saved;
    client->nslots = nslots;
    if (rc)
        s_close (client);
    return rc ? -1 : 0;
}

static const char *
s_errmsg (lt_client_t *client, int status)
{
    (void) client;
    return fpx_strerror (status);
}

const lt_engine_t lt_engine_echo = {
    .mode = "echo", .open = s_open, .close = s_close, .call = s_call,
    .send = s_send, .recv = s_recv, .errmsg = s_errmsg
};
