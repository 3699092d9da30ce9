/*  fpx_conn.c — the DEALER transport of libfaissproxy, see fpx_conn.h.

    Frames on the wire are exactly [header][params][arrays…]: no empty
    delimiter, since the server's ROUTER sees a DEALER's frames as sent.

    Choices, and why:
    - One ZeroMQ context per connection: handles share nothing, so one
      handle's teardown can never block on another's sockets, and the
      zero-copy release callbacks of a handle run on its own I/O thread.
    - ZMQ_IMMEDIATE: a request is queued only on a completed connection.
      Without it, requests made while the server is down would pile up
      and run, long after their callers timed out, once it came back.
    - Linger 0 everywhere: nothing outlives zmq_close; a late request is
      worth less than a prompt shutdown.
    - Request ids are a per-connection counter (0 is never used: the
      server answers id 0 when it cannot read a request's header).

    This file must not interpret any opcode's parameters or results.
*/
#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fpx_conn.h"

//  A synchronous client has one request in flight; the margin absorbs
//  late replies of timed-out calls, and the bound keeps a flood of them
//  from piling up in memory (the server drops replies beyond it).
#define FPX_CONN_HWM 64

//  ZMTP heartbeats find a dead server behind a half-open TCP connection,
//  so that ZeroMQ reconnects; the same cadence as the server's.
#define FPX_HEARTBEAT_IVL_MS     5000
#define FPX_HEARTBEAT_TIMEOUT_MS 15000

//  Once a reply has arrived the server holds the whole request, so our
//  I/O thread is about to release its zero-copy frames: wait this long
//  for it before resorting to a socket reset.
#define FPX_RELEASE_GRACE_MS 1000

struct _fpx_conn_t {
    void *context;
    void *socket;               //  NULL after a failed reopen
    char *endpoint;
    char api_key [FPX_API_KEY_MAX + 1];
    int timeout_ms;             //  < 0: forever
    uint64_t last_id;
    pthread_mutex_t mutex;      //  guards held
    pthread_cond_t released;    //  broadcast whenever held drops
    int held;                   //  zero-copy frames ZeroMQ still references
};

static int s_error (char *errmsg, size_t size, int code, const char *format, ...)
    __attribute__ ((format (printf, 4, 5)));

static int
s_error (char *errmsg, size_t size, int code, const char *format, ...)
{
    va_list args;
    va_start (args, format);
    vsnprintf (errmsg, size, format, args);
    va_end (args);
    return code;
}

static int64_t
s_now_ms (void)
{
    struct timespec now;
    clock_gettime (CLOCK_MONOTONIC, &now);
    return (int64_t) now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

//  Milliseconds left before deadline, as zmq_poll wants them (-1: none).
static long
s_remaining (int64_t deadline)
{
    if (deadline < 0)
        return -1;
    int64_t left = deadline - s_now_ms ();
    return left > 0 ? (long) left : 0;
}

/* ---- zero-copy bookkeeping ------------------------------------------- */

//  zmq_free_fn of zero-copy frames: runs on the I/O thread once ZeroMQ is
//  done with the caller's buffer. hint is the connection.
static void
s_release (void *data, void *hint)
{
    (void) data;
    fpx_conn_t *self = hint;
    pthread_mutex_lock (&self->mutex);
    self->held--;
    pthread_cond_broadcast (&self->released);
    pthread_mutex_unlock (&self->mutex);
}

static void
s_hold (fpx_conn_t *self)
{
    pthread_mutex_lock (&self->mutex);
    self->held++;
    pthread_mutex_unlock (&self->mutex);
}

//  Waits until no zero-copy frame is held, or until deadline (-1: no
//  limit). Returns true when none is held.
static bool
s_wait_released (fpx_conn_t *self, int64_t deadline)
{
    struct timespec until = {
        .tv_sec = deadline / 1000, .tv_nsec = (deadline % 1000) * 1000000
    };
    pthread_mutex_lock (&self->mutex);
    while (self->held > 0) {
        if (deadline < 0)
            pthread_cond_wait (&self->released, &self->mutex);
        else
        if (pthread_cond_timedwait (&self->released, &self->mutex, &until) == ETIMEDOUT)
            break;
    }
    bool done = self->held == 0;
    pthread_mutex_unlock (&self->mutex);
    return done;
}

/* ---- socket ------------------------------------------------------------ */

static int
s_set_int (void *socket, int option, int value)
{
    return zmq_setsockopt (socket, option, &value, sizeof value);
}

//  A DEALER connected to the endpoint, or NULL (errno set).
static void *
s_socket_open (fpx_conn_t *self)
{
    void *socket = zmq_socket (self->context, ZMQ_DEALER);
    if (!socket)
        return NULL;
    if (s_set_int (socket, ZMQ_LINGER, 0)
    ||  s_set_int (socket, ZMQ_SNDHWM, FPX_CONN_HWM)
    ||  s_set_int (socket, ZMQ_RCVHWM, FPX_CONN_HWM)
    ||  s_set_int (socket, ZMQ_IMMEDIATE, 1)
    ||  s_set_int (socket, ZMQ_HEARTBEAT_IVL, FPX_HEARTBEAT_IVL_MS)
    ||  s_set_int (socket, ZMQ_HEARTBEAT_TIMEOUT, FPX_HEARTBEAT_TIMEOUT_MS)
    ||  zmq_connect (socket, self->endpoint)) {
        int saved = errno;
        zmq_close (socket);
        errno = saved;
        return NULL;
    }
    return socket;
}

//  Drops the connection, and with it every frame ZeroMQ still holds, then
//  starts a fresh one. Returns only once the caller's buffers are free.
static void
s_socket_reset (fpx_conn_t *self)
{
    if (self->socket)
        zmq_close (self->socket);
    self->socket = NULL;
    s_wait_released (self, -1);
    self->socket = s_socket_open (self);
}

/* ---- lifecycle --------------------------------------------------------- */

fpx_conn_t *
fpx_conn_new (const char *endpoint, const char *api_key, int timeout_ms)
{
    assert (endpoint && api_key && strlen (api_key) <= FPX_API_KEY_MAX);
    fpx_conn_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    pthread_condattr_t attr;
    pthread_condattr_init (&attr);
    pthread_condattr_setclock (&attr, CLOCK_MONOTONIC);
    int rc = pthread_cond_init (&self->released, &attr);
    pthread_condattr_destroy (&attr);
    if (rc || pthread_mutex_init (&self->mutex, NULL)) {
        if (!rc)
            pthread_cond_destroy (&self->released);
        free (self);
        return NULL;
    }
    strcpy (self->api_key, api_key);
    self->timeout_ms = timeout_ms;
    self->endpoint = strdup (endpoint);
    self->context = zmq_ctx_new ();
    if (self->context)
        zmq_ctx_set (self->context, ZMQ_BLOCKY, 0);
    if (self->endpoint && self->context)
        self->socket = s_socket_open (self);
    if (!self->socket)
        fpx_conn_destroy (&self);
    return self;
}

void
fpx_conn_destroy (fpx_conn_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    fpx_conn_t *self = *self_p;
    //  No frame is held here: every call waits for its releases.
    if (self->socket)
        zmq_close (self->socket);
    if (self->context)
        while (zmq_ctx_term (self->context) == -1 && errno == EINTR)
            ;
    pthread_cond_destroy (&self->released);
    pthread_mutex_destroy (&self->mutex);
    free (self->endpoint);
    free (self);
    *self_p = NULL;
}

void
fpx_conn_set_timeout (fpx_conn_t *self, int timeout_ms)
{
    self->timeout_ms = timeout_ms;
}

const char *
fpx_conn_endpoint (fpx_conn_t *self)
{
    return self->endpoint;
}

/* ---- sending ----------------------------------------------------------- */

//  Polls the socket until an event or the deadline. Returns 1 ready,
//  0 timed out, -1 error (errno set).
static int
s_poll (void *socket, short events, int64_t deadline)
{
    for (;;) {
        zmq_pollitem_t item = { socket, 0, events, 0 };
        int rc = zmq_poll (&item, 1, s_remaining (deadline));
        if (rc >= 0)
            return rc > 0;
        if (errno != EINTR)
            return -1;
    }
}

//  Queues one frame. Payloads of FPX_ZEROCOPY_MIN bytes and more are
//  handed to ZeroMQ in place, counted in held until s_release; ZeroMQ
//  only reads an outgoing frame, so dropping const is safe.
static int
s_send_frame (fpx_conn_t *self, const void *data, size_t size, int flags)
{
    zmq_msg_t msg;
    if (size >= FPX_ZEROCOPY_MIN) {
        s_hold (self);
        if (zmq_msg_init_data (&msg, (void *) data, size, s_release, self)) {
            s_release (NULL, self);     //  init failed: ZeroMQ took nothing
            return -1;
        }
    }
    else {
        if (zmq_msg_init_size (&msg, size))
            return -1;
        if (size)
            memcpy (zmq_msg_data (&msg), data, size);
    }
    if (zmq_msg_send (&msg, self->socket, flags) == -1) {
        int saved = errno;
        zmq_msg_close (&msg);
        errno = saved;
        return -1;
    }
    return 0;
}

//  Sends the header frame once a connection is up (ZMQ_IMMEDIATE makes
//  the socket writable only then).
static int
s_send_header (fpx_conn_t *self, int opcode, uint64_t id, int64_t deadline,
               char *errmsg, size_t size)
{
    fpx_header_t header = {
        .version = FPX_PROTOCOL_VERSION, .opcode = (uint16_t) opcode, .request_id = id
    };
    memcpy (header.api_key, self->api_key, sizeof header.api_key);
    uint8_t frame [FPX_REQUEST_HEADER_SIZE];
    fpx_header_encode_request (&header, frame);
    for (;;) {
        int rc = s_poll (self->socket, ZMQ_POLLOUT, deadline);
        if (rc == 0)
            return s_error (errmsg, size, FPX_ETIMEDOUT,
                            "no reply from %s within %d ms (not connected)",
                            self->endpoint, self->timeout_ms);
        if (rc == 1 && s_send_frame (self, frame, sizeof frame, ZMQ_SNDMORE | ZMQ_DONTWAIT) == 0)
            return 0;
        if (errno != EAGAIN && errno != EINTR)
            return s_error (errmsg, size, errno == ENOMEM ? FPX_ENOMEM : FPX_ECONNECT,
                            "cannot send to %s: %s", self->endpoint, zmq_strerror (errno));
    }
}

//  Sends the whole request. ZeroMQ delivers a multipart message whole or
//  not at all; a failure after the first frame leaves the socket mid-
//  message, so it is reset.
static int
s_send (fpx_conn_t *self, const fpx_request_t *request, uint64_t id,
        int64_t deadline, char *errmsg, size_t size)
{
    int rc = s_send_header (self, request->opcode, id, deadline, errmsg, size);
    if (rc)
        return rc;
    int flags = ZMQ_DONTWAIT | (request->array_count ? ZMQ_SNDMORE : 0);
    rc = s_send_frame (self, request->params, request->params_size, flags);
    for (int i = 0; rc == 0 && i < request->array_count; i++) {
        flags = ZMQ_DONTWAIT | (i + 1 < request->array_count ? ZMQ_SNDMORE : 0);
        rc = s_send_frame (self, request->arrays [i].data, request->arrays [i].size, flags);
    }
    if (rc == 0)
        return 0;
    int code = errno == ENOMEM ? FPX_ENOMEM : FPX_ECONNECT;
    s_error (errmsg, size, code, "cannot send to %s: %s",
             self->endpoint, zmq_strerror (errno));
    s_socket_reset (self);
    return code;
}

/* ---- receiving --------------------------------------------------------- */

//  Receives one whole message: up to FPX_MAX_FRAMES frames into reply,
//  further ones read and dropped (*overflow). Returns 1 received, 0 none
//  waiting, -1 error (errno set). The first frame is read without
//  blocking; the rest are there already (multipart delivery is atomic).
static int
s_recv_message (void *socket, fpx_reply_t *reply, bool *overflow)
{
    reply->frame_count = 0;
    *overflow = false;
    bool more = true;
    for (int received = 0; more; ) {
        zmq_msg_t spare;
        zmq_msg_t *frame = reply->frame_count < FPX_MAX_FRAMES
                         ? &reply->frames [reply->frame_count] : &spare;
        zmq_msg_init (frame);
        if (zmq_msg_recv (frame, socket, received ? 0 : ZMQ_DONTWAIT) == -1) {
            int saved = errno;
            zmq_msg_close (frame);
            if (saved == EINTR)
                continue;
            fpx_reply_close (reply);
            errno = saved;
            return received == 0 && saved == EAGAIN ? 0 : -1;
        }
        received++;
        more = zmq_msg_more (frame);
        if (frame == &spare) {
            *overflow = true;
            zmq_msg_close (&spare);
        }
        else
            reply->frame_count++;
    }
    return 1;
}

//  Status and error text of a failed call, from its {"error": text}.
static int
s_server_error (fpx_reply_t *reply, int status, char *errmsg, size_t size)
{
    fpx_params_t result;
    const char *text;
    size_t len;
    if (reply->frame_count >= 2
    &&  fpx_params_decode (&result, zmq_msg_data (&reply->frames [1]),
                           zmq_msg_size (&reply->frames [1])) == 0
    &&  fpx_params_get_str (&result, "error", &text, &len) == 0 && len > 0) {
        if (len > FPX_ERROR_TEXT_MAX)
            len = FPX_ERROR_TEXT_MAX;
        return s_error (errmsg, size, status, "%.*s", (int) len, text);
    }
    return s_error (errmsg, size, status, "%s", fpx_strerror (status));
}

//  Checks a reply addressed to this call (header decoded with result
//  `decoded`): version, status, opcode, frame count; then decodes its
//  result frame. Error replies need no particular frame count.
static int
s_check_reply (fpx_conn_t *self, const fpx_request_t *request, fpx_reply_t *reply,
               const fpx_header_t *header, int decoded, bool overflow,
               char *errmsg, size_t size)
{
    const char *op = fpx_opcode_name (request->opcode);
    if (decoded == FPX_EVERSION)
        return s_error (errmsg, size, FPX_EVERSION,
                        "%s speaks protocol version %u, this client %d",
                        self->endpoint, header->version, FPX_PROTOCOL_VERSION);
    if (decoded)
        return s_error (errmsg, size, FPX_EPROTO, "malformed reply header from %s",
                        self->endpoint);
    if (header->status > 0)
        return s_error (errmsg, size, FPX_EPROTO, "reply to %s has status %d",
                        op, (int) header->status);
    if (header->status < 0)
        return s_server_error (reply, header->status, errmsg, size);
    if (header->opcode != request->opcode)
        return s_error (errmsg, size, FPX_EPROTO, "reply to %s carries opcode %u",
                        op, header->opcode);
    int expected = 2 + request->reply_arrays;
    if (overflow || reply->frame_count != expected)
        return s_error (errmsg, size, FPX_EPROTO, "reply to %s has %s%d frames, expected %d",
                        op, overflow ? "over " : "", reply->frame_count, expected);
    if (fpx_params_decode_bounded (&reply->result, zmq_msg_data (&reply->frames [1]),
                                   zmq_msg_size (&reply->frames [1]), FPX_RESULT_MAX))
        return s_error (errmsg, size, FPX_EPROTO, "malformed result in reply to %s", op);
    return 0;
}

//  Waits for the reply with request id `id`; replies with other ids are
//  late answers to calls that timed out and are dropped. A header too
//  broken to hold an id, or id 0 (the server could not read a request's
//  id), is taken as this call's answer. *answered: the server replied.
static int
s_receive (fpx_conn_t *self, const fpx_request_t *request, uint64_t id,
           int64_t deadline, fpx_reply_t *reply, bool *answered,
           char *errmsg, size_t size)
{
    for (;;) {
        int rc = s_poll (self->socket, ZMQ_POLLIN, deadline);
        if (rc == 0)
            return s_error (errmsg, size, FPX_ETIMEDOUT, "no reply from %s within %d ms",
                            self->endpoint, self->timeout_ms);
        bool overflow = false;
        if (rc == 1)
            rc = s_recv_message (self->socket, reply, &overflow);
        if (rc == 0)
            continue;
        if (rc < 0)
            return s_error (errmsg, size, errno == ENOMEM ? FPX_ENOMEM : FPX_ECONNECT,
                            "cannot receive from %s: %s", self->endpoint, zmq_strerror (errno));
        fpx_header_t header;
        int decoded = fpx_header_decode_reply (&header, zmq_msg_data (&reply->frames [0]),
                                               zmq_msg_size (&reply->frames [0]));
        if (header.request_id != id && header.request_id != 0) {
            fpx_reply_close (reply);
            continue;
        }
        *answered = true;
        rc = s_check_reply (self, request, reply, &header, decoded, overflow, errmsg, size);
        if (rc)
            fpx_reply_close (reply);
        return rc;
    }
}

/* ---- call -------------------------------------------------------------- */

int
fpx_conn_call (fpx_conn_t *self, const fpx_request_t *request, fpx_reply_t *reply,
               char *errmsg, size_t errmsg_size)
{
    assert (request->array_count >= 0 && request->array_count <= FPX_MAX_FRAMES - 2);
    assert (request->params_size <= FPX_PARAMS_MAX);
    reply->frame_count = 0;
    if (!self->socket && !(self->socket = s_socket_open (self)))
        return s_error (errmsg, errmsg_size, FPX_ECONNECT, "cannot open a socket to %s: %s",
                        self->endpoint, zmq_strerror (errno));
    if (++self->last_id == 0)
        ++self->last_id;
    int64_t deadline = self->timeout_ms < 0 ? -1 : s_now_ms () + self->timeout_ms;
    bool answered = false;
    int rc = s_send (self, request, self->last_id, deadline, errmsg, errmsg_size);
    if (rc == 0)
        rc = s_receive (self, request, self->last_id, deadline, reply, &answered,
                        errmsg, errmsg_size);

    //  The caller's buffers must be free of ZeroMQ before we return.
    if (answered && deadline >= 0 && deadline < s_now_ms () + FPX_RELEASE_GRACE_MS)
        deadline = s_now_ms () + FPX_RELEASE_GRACE_MS;
    if (!s_wait_released (self, deadline))
        s_socket_reset (self);
    return rc;
}

const void *
fpx_reply_array (fpx_reply_t *reply, int i, size_t *size)
{
    assert (i >= 0 && 2 + i < reply->frame_count);
    *size = zmq_msg_size (&reply->frames [2 + i]);
    return zmq_msg_data (&reply->frames [2 + i]);
}

void
fpx_reply_close (fpx_reply_t *reply)
{
    for (int i = 0; i < reply->frame_count; i++)
        zmq_msg_close (&reply->frames [i]);
    reply->frame_count = 0;
}
