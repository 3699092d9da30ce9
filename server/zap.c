/*  zap.c — the ZAP handler (RFC 27) of a CURVE frontend.

    libzmq asks it, over inproc://zeromq.zap.01, whether a peer that has
    completed a CURVE handshake (so: knows our public key and holds the
    secret key of the public key it showed) may talk to us. With
    --curve-clients-file only listed client keys are accepted; without it
    every CURVE client is (the API key still decides what it may do).
    Refusals are logged with the peer's address.

    It runs on its own thread, owns its one socket, and only answers ZAP
    requests: it must not touch the registry, the broker or FAISS. It ends
    when the context is terminated (ETERM).
*/
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "log.h"
#include "zap.h"

#define S_ZAP_ENDPOINT "inproc://zeromq.zap.01"
#define S_ZAP_FRAMES   8

static bool
s_client_allowed (const fpx_config_t *config, const uint8_t *key, size_t size)
{
    if (size != 32)
        return false;
    if (config->ncurve_clients == 0)
        return true;
    for (int i = 0; i < config->ncurve_clients; i++)
        if (sodium_memcmp (config->curve_clients [i], key, 32) == 0)
            return true;
    return false;
}

static void
s_send_str (void *socket, const char *text, int flags)
{
    zmq_send (socket, text, strlen (text), flags);
}

//  Answers one request: [version][request id][domain][address][identity]
//  [mechanism][credentials…].
static void
s_answer (void *socket, const fpx_config_t *config, zmq_msg_t *frames, int count)
{
    const char *status = "400", *text = "not allowed";
    char address [64] = "?", mechanism [16] = "?";
    if (count >= 6) {
        snprintf (address, sizeof address, "%.*s", (int) zmq_msg_size (&frames [3]),
                  (const char *) zmq_msg_data (&frames [3]));
        snprintf (mechanism, sizeof mechanism, "%.*s", (int) zmq_msg_size (&frames [5]),
                  (const char *) zmq_msg_data (&frames [5]));
    }
    bool version_ok = count >= 6 && zmq_msg_size (&frames [0]) == 3
                   && memcmp (zmq_msg_data (&frames [0]), "1.0", 3) == 0;
    if (version_ok && !strcmp (mechanism, "CURVE") && count >= 7
    &&  s_client_allowed (config, zmq_msg_data (&frames [6]), zmq_msg_size (&frames [6])))
        status = "200", text = "OK";
    else if (version_ok && !strcmp (mechanism, "CURVE") && count >= 7
         &&  zmq_msg_size (&frames [6]) == 32) {
        char z85 [41];
        zmq_z85_encode (z85, zmq_msg_data (&frames [6]), 32);
        fpx_log (FPX_LOG_WARN, "CURVE client key %s from %s refused: not in --curve-clients-file",
                 z85, address);
        text = "client key not allowed";
    }
    else
        fpx_log (FPX_LOG_WARN, "connection from %s refused: mechanism %s is not CURVE",
                 address, mechanism);
    //  [version][request id][status code][status text][user id][metadata]
    s_send_str (socket, "1.0", ZMQ_SNDMORE);
    if (count >= 2)
        zmq_send (socket, zmq_msg_data (&frames [1]), zmq_msg_size (&frames [1]), ZMQ_SNDMORE);
    else
        zmq_send (socket, "", 0, ZMQ_SNDMORE);
    s_send_str (socket, status, ZMQ_SNDMORE);
    s_send_str (socket, text, ZMQ_SNDMORE);
    s_send_str (socket, "", ZMQ_SNDMORE);
    zmq_send (socket, "", 0, 0);
}

struct fpx_zap_t {
    void *socket;                  //  owned by the thread once it runs
    const fpx_config_t *config;
    pthread_t thread;
};

static void *
s_run (void *arg)
{
    fpx_zap_t *zap = arg;
    while (true) {
        zmq_msg_t frames [S_ZAP_FRAMES];
        int count = 0, more = 1, rc = 0;
        while (more) {
            zmq_msg_t *frame = &frames [count < S_ZAP_FRAMES ? count : S_ZAP_FRAMES - 1];
            if (count >= S_ZAP_FRAMES)
                zmq_msg_close (frame);
            zmq_msg_init (frame);
            if ((rc = zmq_msg_recv (frame, zap->socket, 0)) < 0) {
                zmq_msg_close (frame);
                break;
            }
            more = zmq_msg_more (frame);
            if (count < S_ZAP_FRAMES)
                count++;
        }
        if (rc < 0 && zmq_errno () == ETERM) {
            for (int i = 0; i < count; i++)
                zmq_msg_close (&frames [i]);
            break;
        }
        if (rc >= 0)
            s_answer (zap->socket, zap->config, frames, count);
        for (int i = 0; i < count; i++)
            zmq_msg_close (&frames [i]);
    }
    int zero = 0;
    zmq_setsockopt (zap->socket, ZMQ_LINGER, &zero, sizeof zero);
    zmq_close (zap->socket);
    return NULL;
}

fpx_zap_t *
fpx_zap_new (fpx_server_t *server)
{
    fpx_zap_t *self = calloc (1, sizeof *self);
    if (!self) {
        fpx_log (FPX_LOG_ERROR, "cannot start the ZAP handler: out of memory");
        return NULL;
    }
    self->config = &server->config;
    self->socket = zmq_socket (server->zmq_ctx, ZMQ_REP);
    if (!self->socket || zmq_bind (self->socket, S_ZAP_ENDPOINT)) {
        fpx_log (FPX_LOG_ERROR, "cannot start the ZAP handler: %s", zmq_strerror (zmq_errno ()));
        if (self->socket)
            zmq_close (self->socket);
        free (self);
        return NULL;
    }
    //  The socket moves to the new thread; pthread_create is the barrier.
    if (pthread_create (&self->thread, NULL, s_run, self)) {
        zmq_close (self->socket);
        free (self);
        return NULL;
    }
    return self;
}

void
fpx_zap_destroy (fpx_zap_t **self_p)
{
    fpx_zap_t *self = *self_p;
    if (!self)
        return;
    pthread_join (self->thread, NULL);
    free (self);
    *self_p = NULL;
}
