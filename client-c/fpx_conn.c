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
    - Requests in flight live in a fixed table of S_SLOTS slots indexed by
      (request id mod S_SLOTS). A new request takes the next id whose slot
      is free, so ids stay unique and increasing (0 is never used: the
      server answers id 0 when it cannot read a request's header) and a
      reply finds its request in O(1) without allocating. At most
      FPX_CONN_MAX_ASYNC + 1 slots are ever in use, so a free one is
      always near.
    - Asynchronous requests are also linked in send order. The oldest one
      has the earliest deadline (unless the timeout was lowered since; a
      later request then expires late, never early): fpx_conn_recv
      checks only it, in O(1), and scans the rest only after a quiet wait.
    - Zero-copy frames are counted per request (the release callback's
      hint is its slot), so a completion waits only for its own buffers.
      A request is never reported while ZeroMQ holds its buffers: if they
      are not released in time, the socket is reset, which releases them
      all and fails every request in flight with FPX_ECONNECT.
    - A socket monitor (an inproc PAIR per DEALER) reports the connection's
      life: attempts refused, handshakes done or refused, connections lost.
      ZeroMQ connects in the background and never says why a request
      cannot go out; the monitor lets a request fail at once with the one
      real cause instead of waiting out its timeout, and tells a request
      in flight that the connection it went out on is gone (a server
      restart, or a dead peer found by the ZMTP heartbeats), so that a
      read is sent again and a write reports that its outcome is unknown.

    This file must not interpret any opcode's parameters or results.
*/
#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fpx_conn.h"

//  High-water marks: room for every request we may have in flight, plus a
//  margin for late replies of timed-out calls; the bound keeps a flood of
//  them from piling up in memory (the server drops replies beyond it).
#define FPX_CONN_HWM (FPX_CONN_MAX_ASYNC + 64)

//  ZMTP heartbeats find a dead server behind a half-open TCP connection,
//  so that ZeroMQ reconnects; the same cadence as the server's.
#define FPX_HEARTBEAT_IVL_MS     5000
#define FPX_HEARTBEAT_TIMEOUT_MS 15000

//  Once a reply has arrived the server holds the whole request, so our
//  I/O thread is about to release its zero-copy frames: wait this long
//  for it before resorting to a socket reset.
#define FPX_RELEASE_GRACE_MS 1000

//  The default connect timeout, until fpx_conn_set_connect_timeout.
#define FPX_CONNECT_TIMEOUT_MS 5000

//  A read whose connection is lost is sent again this many times: a
//  request that crashes the server must not crash it forever.
#define FPX_CONN_RETRIES 1

//  Reconnection attempts back off from ZeroMQ's 100 ms to this: an idle
//  handle whose server is gone queues one monitor event per attempt, and
//  a full monitor pipe stalls ZeroMQ's I/O thread (it sends events with a
//  blocking send) until the handle's next call reads them: at this pace
//  that takes over half an hour of idleness, and costs nothing then, since
//  there is no connection to serve.
#define FPX_RECONNECT_IVL_MAX_MS 1000

//  The monitor's events: those that say how a connection fares.
#define S_MONITOR_EVENTS (ZMQ_EVENT_CONNECTED | ZMQ_EVENT_CONNECT_RETRIED               \
                          | ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_HANDSHAKE_SUCCEEDED    \
                          | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL                      \
                          | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL                       \
                          | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)

//  Why the latest connection attempt failed.
typedef enum {
    S_CAUSE_NONE = 0,
    S_CAUSE_REFUSED,            //  no TCP/IPC connection (nobody listening)
    S_CAUSE_HANDSHAKE,          //  connected, then closed before the handshake
    S_CAUSE_AUTH                //  the server's ZAP handler refused us
} s_cause_t;

//  The request table: a power of two above FPX_CONN_MAX_ASYNC + 1.
#define S_SLOTS 512
#define S_NONE  (-1)

_Static_assert ((S_SLOTS & (S_SLOTS - 1)) == 0 && S_SLOTS >= 2 * FPX_CONN_MAX_ASYNC,
                "S_SLOTS: a power of two, at least twice the async requests in flight");

typedef enum { S_FREE = 0, S_SENT, S_DONE } s_state_t;

typedef struct {
    fpx_conn_t *conn;           //  for the release callback
    uint64_t id;
    s_state_t state;
    bool async;
    int opcode;
    int reply_arrays;
    int64_t deadline;           //  monotonic ms, -1: none
    int timeout_ms;             //  that deadline's timeout, for messages
    uint64_t losses;            //  conn->losses when it was sent
    int held;                   //  zero-copy frames ZeroMQ holds; under conn->mutex
    void *tag;
    int status;                 //  S_DONE without a reply: why
    fpx_reply_t *stored;        //  S_DONE: a reply read during another wait
    bool overflow;              //  stored had more than FPX_MAX_FRAMES frames
    int prev, next;             //  async requests, in send order
} s_slot_t;

struct _fpx_conn_t {
    void *context;
    void *socket;               //  NULL after a failed reopen
    char *endpoint;
    char api_key [FPX_API_KEY_MAX + 1];
    bool curve;                 //  CURVE to a server whose public key we know
    uint8_t server_key [32];
    uint8_t public_key [32];    //  this connection's ephemeral key pair
    uint8_t secret_key [32];
    int timeout_ms;             //  < 0: forever
    int connect_timeout_ms;     //  < 0: forever
    int long_timeout_ms;        //  < 0: as long as the connection lives
    void *monitor;              //  PAIR with socket's events; NULL with it
    unsigned monitor_seq;       //  makes each monitor's inproc name unique
    int handshakes;             //  connections made (handshake completed)
    bool connected;             //  one is up, as far as the monitor told
    bool tcp_up;                //  the attempt in progress reached the peer
    int last_event;
    s_cause_t cause;            //  why the latest attempt failed
    int auth_status;            //  its ZAP status code, for S_CAUSE_AUTH
    uint64_t failures;          //  attempts failed so far
    uint64_t losses;            //  connections lost so far (resets too)
    uint64_t losses_handled;    //  up to which s_fail_lost has run
    uint64_t last_id;
    s_slot_t *slots;            //  S_SLOTS
    int head, tail;             //  async requests in flight, oldest first
    int in_flight;              //  async requests not yet reported
    int done;                   //  of which completed (S_DONE)
    pthread_mutex_t mutex;      //  guards held (here and in the slots)
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

//  The earlier of two deadlines (-1: none).
static int64_t
s_earlier (int64_t a, int64_t b)
{
    if (a < 0)
        return b;
    if (b < 0)
        return a;
    return a < b ? a : b;
}

/* ---- zero-copy bookkeeping ------------------------------------------- */

//  zmq_free_fn of zero-copy frames: runs on the I/O thread once ZeroMQ is
//  done with the caller's buffer. hint is the request's slot.
static void
s_release (void *data, void *hint)
{
    (void) data;
    s_slot_t *slot = hint;
    fpx_conn_t *self = slot->conn;
    pthread_mutex_lock (&self->mutex);
    slot->held--;
    self->held--;
    pthread_cond_broadcast (&self->released);
    pthread_mutex_unlock (&self->mutex);
}

static void
s_hold (s_slot_t *slot)
{
    fpx_conn_t *self = slot->conn;
    pthread_mutex_lock (&self->mutex);
    slot->held++;
    self->held++;
    pthread_mutex_unlock (&self->mutex);
}

//  Waits until ZeroMQ holds no zero-copy frame of slot (NULL: of any
//  request), or until deadline (-1: no limit). Returns true when none.
static bool
s_wait_released (fpx_conn_t *self, s_slot_t *slot, int64_t deadline)
{
    struct timespec until = {
        .tv_sec = deadline / 1000, .tv_nsec = (deadline % 1000) * 1000000
    };
    int *held = slot ? &slot->held : &self->held;
    pthread_mutex_lock (&self->mutex);
    while (*held > 0) {
        if (deadline < 0)
            pthread_cond_wait (&self->released, &self->mutex);
        else
        if (pthread_cond_timedwait (&self->released, &self->mutex, &until) == ETIMEDOUT)
            break;
    }
    bool done = *held == 0;
    pthread_mutex_unlock (&self->mutex);
    return done;
}

/* ---- the request table --------------------------------------------------- */

//  Takes the slot of a fresh request id. There is always a free one: at
//  most FPX_CONN_MAX_ASYNC + 1 of S_SLOTS are ever in use.
static s_slot_t *
s_slot_acquire (fpx_conn_t *self, const fpx_request_t *request, bool async, void *tag,
                int timeout_ms)
{
    s_slot_t *slot;
    do {
        if (++self->last_id == 0)
            ++self->last_id;
        slot = &self->slots [self->last_id & (S_SLOTS - 1)];
    } while (slot->state != S_FREE);
    *slot = (s_slot_t) {
        .conn = self, .id = self->last_id, .state = S_SENT, .async = async,
        .opcode = request->opcode, .reply_arrays = request->reply_arrays,
        .deadline = timeout_ms < 0 ? -1 : s_now_ms () + timeout_ms,
        .timeout_ms = timeout_ms, .tag = tag, .prev = S_NONE, .next = S_NONE
    };
    if (async) {
        int index = (int) (slot - self->slots);
        slot->prev = self->tail;
        if (self->tail != S_NONE)
            self->slots [self->tail].next = index;
        else
            self->head = index;
        self->tail = index;
        self->in_flight++;
    }
    return slot;
}

//  The request in flight with this id, or NULL.
static s_slot_t *
s_slot_find (fpx_conn_t *self, uint64_t id)
{
    s_slot_t *slot = &self->slots [id & (S_SLOTS - 1)];
    return slot->state != S_FREE && slot->id == id ? slot : NULL;
}

//  Marks a request complete: with a failure status (stored NULL), or with
//  a reply read during another wait (stored, status 0).
static void
s_slot_complete (fpx_conn_t *self, s_slot_t *slot, int status, fpx_reply_t *stored,
                 bool overflow)
{
    assert (slot->state == S_SENT);
    slot->state = S_DONE;
    slot->status = status;
    slot->stored = stored;
    slot->overflow = overflow;
    if (slot->async)
        self->done++;
}

//  Frees a slot whose zero-copy frames are all released.
static void
s_slot_free (fpx_conn_t *self, s_slot_t *slot)
{
    assert (slot->held == 0);
    if (slot->async) {
        if (slot->prev != S_NONE)
            self->slots [slot->prev].next = slot->next;
        else
            self->head = slot->next;
        if (slot->next != S_NONE)
            self->slots [slot->next].prev = slot->prev;
        else
            self->tail = slot->prev;
        self->in_flight--;
        if (slot->state == S_DONE)
            self->done--;
    }
    if (slot->stored) {
        fpx_reply_close (slot->stored);
        free (slot->stored);
    }
    memset (slot, 0, sizeof *slot);
}

/* ---- socket ------------------------------------------------------------ */

static int
s_set_int (void *socket, int option, int value)
{
    return zmq_setsockopt (socket, option, &value, sizeof value);
}

//  Opens self->monitor: a PAIR that receives socket's events. Returns
//  0, or -1 (errno set). Each monitor gets a name of its own: a closed
//  socket's monitor endpoint is released only later, by the reaper.
static int
s_monitor_open (fpx_conn_t *self, void *socket)
{
    char address [80];
    snprintf (address, sizeof address, "inproc://fpx-monitor-%p-%u",
              (void *) self, ++self->monitor_seq);
    if (zmq_socket_monitor (socket, address, S_MONITOR_EVENTS))
        return -1;
    self->monitor = zmq_socket (self->context, ZMQ_PAIR);
    if (!self->monitor)
        return -1;
    if (s_set_int (self->monitor, ZMQ_LINGER, 0) || zmq_connect (self->monitor, address)) {
        int saved = errno;
        zmq_close (self->monitor);
        self->monitor = NULL;
        errno = saved;
        return -1;
    }
    return 0;
}

//  A DEALER connected to the endpoint, with its monitor, or NULL (errno
//  set). The monitor is connected before the DEALER so that it sees the
//  very first attempt.
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
    ||  s_set_int (socket, ZMQ_RECONNECT_IVL_MAX, FPX_RECONNECT_IVL_MAX_MS)
    ||  s_set_int (socket, ZMQ_HEARTBEAT_IVL, FPX_HEARTBEAT_IVL_MS)
    ||  s_set_int (socket, ZMQ_HEARTBEAT_TIMEOUT, FPX_HEARTBEAT_TIMEOUT_MS)
    ||  (self->curve
         && (zmq_setsockopt (socket, ZMQ_CURVE_SERVERKEY, self->server_key, 32)
             || zmq_setsockopt (socket, ZMQ_CURVE_PUBLICKEY, self->public_key, 32)
             || zmq_setsockopt (socket, ZMQ_CURVE_SECRETKEY, self->secret_key, 32)))
    ||  s_monitor_open (self, socket)
    ||  zmq_connect (socket, self->endpoint)) {
        int saved = errno;
        if (self->monitor)
            zmq_close (self->monitor);
        self->monitor = NULL;
        zmq_close (socket);
        errno = saved;
        return NULL;
    }
    self->connected = self->tcp_up = false;
    self->last_event = 0;
    return socket;
}

static void s_monitor_read (fpx_conn_t *self);

//  Stops the monitor before closing its PAIR: an event sent to a closed
//  PAIR would block ZeroMQ's I/O thread for good (libzmq issue 3575).
//  Reads the events first: stopping waits for an I/O thread stalled on a
//  full monitor pipe.
static void
s_socket_close (fpx_conn_t *self)
{
    if (self->socket && self->monitor) {
        s_monitor_read (self);
        zmq_socket_monitor (self->socket, NULL, 0);
    }
    if (self->monitor)
        zmq_close (self->monitor);
    if (self->socket)
        zmq_close (self->socket);
    self->monitor = self->socket = NULL;
}

//  Drops the connection, and with it every frame ZeroMQ still holds, then
//  starts a fresh one. Returns only once the caller's buffers are free.
//  Asynchronous requests still waiting lose their replies with the old
//  connection: they complete with FPX_ECONNECT.
static void
s_socket_reset (fpx_conn_t *self)
{
    s_socket_close (self);
    self->losses++;
    s_wait_released (self, NULL, -1);
    self->socket = s_socket_open (self);
    for (int i = self->head; i != S_NONE; i = self->slots [i].next)
        if (self->slots [i].state == S_SENT)
            s_slot_complete (self, &self->slots [i], FPX_ECONNECT, NULL, false);
}

/* ---- the monitor ------------------------------------------------------- */

//  Folds one event into the connection's state. A refused attempt ends
//  with CONNECT_RETRIED not preceded by DISCONNECTED (that one follows a
//  connection lost, or one closed during its handshake).
static void
s_monitor_event (fpx_conn_t *self, int event, uint32_t value)
{
    switch (event) {
        case ZMQ_EVENT_CONNECTED:
            self->tcp_up = true;
            break;
        case ZMQ_EVENT_HANDSHAKE_SUCCEEDED:
            self->connected = true;
            self->tcp_up = false;
            self->handshakes++;
            self->cause = S_CAUSE_NONE;
            break;
        case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH:
            self->cause = S_CAUSE_AUTH;
            self->auth_status = (int) value;
            self->failures++;
            break;
        case ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL:
        case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL:
            self->cause = S_CAUSE_HANDSHAKE;
            self->failures++;
            break;
        case ZMQ_EVENT_DISCONNECTED:
            if (self->connected)
                self->losses++;
            else
            if (self->tcp_up && self->last_event != ZMQ_EVENT_HANDSHAKE_FAILED_AUTH
                             && self->last_event != ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL
                             && self->last_event != ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) {
                self->cause = S_CAUSE_HANDSHAKE;
                self->failures++;
            }
            self->connected = self->tcp_up = false;
            break;
        case ZMQ_EVENT_CONNECT_RETRIED:
            if (self->last_event != ZMQ_EVENT_DISCONNECTED) {
                self->cause = S_CAUSE_REFUSED;
                self->failures++;
            }
            break;
        default:
            return;             //  DELAYED, CLOSED: no news; keep last_event
    }
    self->last_event = event;
}

//  Reads every event the monitor holds, without blocking.
static void
s_monitor_read (fpx_conn_t *self)
{
    while (self->monitor) {
        zmq_msg_t frame;
        zmq_msg_init (&frame);
        if (zmq_msg_recv (&frame, self->monitor, ZMQ_DONTWAIT) == -1) {
            zmq_msg_close (&frame);
            if (errno == EINTR)
                continue;
            return;
        }
        //  [event:u16 value:u32][address]: ZeroMQ's own, in host order.
        uint16_t event = 0;
        uint32_t value = 0;
        bool whole = zmq_msg_size (&frame) == 6;
        if (whole) {
            memcpy (&event, zmq_msg_data (&frame), 2);
            memcpy (&value, (uint8_t *) zmq_msg_data (&frame) + 2, 4);
        }
        while (zmq_msg_more (&frame)) {
            zmq_msg_close (&frame);
            zmq_msg_init (&frame);
            if (zmq_msg_recv (&frame, self->monitor, 0) == -1 && errno != EINTR)
                break;
        }
        zmq_msg_close (&frame);
        if (whole)
            s_monitor_event (self, event, value);
    }
}

//  Fails the asynchronous requests that went out on a connection since
//  lost: their replies will never come. Read what the socket holds first.
static void
s_fail_lost (fpx_conn_t *self)
{
    if (self->losses_handled == self->losses)
        return;
    self->losses_handled = self->losses;
    for (int i = self->head; i != S_NONE; i = self->slots [i].next)
        if (self->slots [i].state == S_SENT && self->slots [i].losses != self->losses)
            s_slot_complete (self, &self->slots [i], FPX_ECONNECT, NULL, false);
}

//  True if host is an IPv4/IPv6 literal.
static bool
s_numeric_host (const char *host)
{
    uint8_t address [16];
    return inet_pton (AF_INET, host, address) == 1 || inet_pton (AF_INET6, host, address) == 1;
}

//  The message of a failed connection attempt, by its cause.
static int
s_connect_error (fpx_conn_t *self, char *errmsg, size_t size)
{
    if (self->cause == S_CAUSE_AUTH)
        return s_error (errmsg, size, FPX_EAUTH, "the server at %s refused this client's "
                        "CURVE key (ZAP status %d)", self->endpoint, self->auth_status);
    if (self->cause == S_CAUSE_HANDSHAKE)
        return self->curve
             ? s_error (errmsg, size, FPX_EAUTH, "CURVE handshake with %s failed: is the "
                        "server key right?", self->endpoint)
             : s_error (errmsg, size, FPX_ECONNECT, "handshake with %s failed: not a "
                        "faissproxyd, or one that requires CURVE (a server key)?",
                        self->endpoint);
    //  Refused. A host name that does not resolve is refused the same way
    //  by ZeroMQ: tell it apart, since its fix differs.
    if (strncmp (self->endpoint, "tcp://", 6) == 0) {
        const char *host = self->endpoint + 6;
        const char *colon = strrchr (host, ':');
        char name [256];
        if (colon && colon - host < (ptrdiff_t) sizeof name && host [0] != '[') {
            memcpy (name, host, (size_t) (colon - host));
            name [colon - host] = 0;
            struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *found = NULL;
            int rc = s_numeric_host (name) ? 0 : getaddrinfo (name, NULL, &hints, &found);
            if (found)
                freeaddrinfo (found);
            if (rc)
                return s_error (errmsg, size, FPX_ECONNECT, "cannot resolve host '%s' of %s: %s",
                                name, self->endpoint, gai_strerror (rc));
        }
    }
    return s_error (errmsg, size, FPX_ECONNECT, "connection refused: no server at %s",
                    self->endpoint);
}

/* ---- lifecycle --------------------------------------------------------- */

fpx_conn_t *
fpx_conn_new (const char *endpoint, const char *api_key, const char *server_key,
              const char *client_secret, int timeout_ms)
{
    assert (endpoint && api_key && strlen (api_key) <= FPX_API_KEY_MAX);
    fpx_conn_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    if (server_key && *server_key) {
        char public_z85 [41], secret_z85 [41] = "";
        if (client_secret && *client_secret && strlen (client_secret) == 40)
            memcpy (secret_z85, client_secret, 41);
        if (strlen (server_key) != 40 || !zmq_z85_decode (self->server_key, server_key)
        ||  (client_secret && *client_secret && !secret_z85 [0])
        ||  (secret_z85 [0] ? zmq_curve_public (public_z85, secret_z85)
                            : zmq_curve_keypair (public_z85, secret_z85))
        ||  !zmq_z85_decode (self->public_key, public_z85)
        ||  !zmq_z85_decode (self->secret_key, secret_z85)) {
            free (self);
            return NULL;
        }
        memset (secret_z85, 0, sizeof secret_z85);
        self->curve = true;
    }
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
    self->connect_timeout_ms = FPX_CONNECT_TIMEOUT_MS;
    self->long_timeout_ms = -1;
    self->head = self->tail = S_NONE;
    self->slots = calloc (S_SLOTS, sizeof *self->slots);
    self->endpoint = strdup (endpoint);
    self->context = zmq_ctx_new ();
    if (self->context)
        zmq_ctx_set (self->context, ZMQ_BLOCKY, 0);
    if (self->slots && self->endpoint && self->context)
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
    //  Closing the socket drops every frame it holds; the context's
    //  termination waits for that, so no caller buffer is referenced
    //  once it returns.
    s_socket_close (self);
    for (int i = 0; self->slots && i < S_SLOTS; i++)
        if (self->slots [i].stored) {
            fpx_reply_close (self->slots [i].stored);
            free (self->slots [i].stored);
        }
    if (self->context)
        while (zmq_ctx_term (self->context) == -1 && errno == EINTR)
            ;
    pthread_cond_destroy (&self->released);
    pthread_mutex_destroy (&self->mutex);
    free (self->slots);
    free (self->endpoint);
    memset (self->secret_key, 0, sizeof self->secret_key);
    free (self);
    *self_p = NULL;
}

void
fpx_conn_set_timeout (fpx_conn_t *self, int timeout_ms)
{
    self->timeout_ms = timeout_ms;
}

void
fpx_conn_set_connect_timeout (fpx_conn_t *self, int timeout_ms)
{
    self->connect_timeout_ms = timeout_ms;
}

void
fpx_conn_set_long_timeout (fpx_conn_t *self, int timeout_ms)
{
    self->long_timeout_ms = timeout_ms;
}

int
fpx_conn_reconnects (fpx_conn_t *self)
{
    s_monitor_read (self);
    return self->handshakes > 1 ? self->handshakes - 1 : 0;
}

const char *
fpx_conn_endpoint (fpx_conn_t *self)
{
    return self->endpoint;
}

int
fpx_conn_in_flight (fpx_conn_t *self)
{
    return self->in_flight;
}

/* ---- sending ----------------------------------------------------------- */

//  Polls the socket for events, and the monitor for news, until either
//  or the deadline. Returns S_READY and/or S_NEWS, 0 timed out, -1 error
//  (errno set).
#define S_READY 1
#define S_NEWS  2

static int
s_poll (fpx_conn_t *self, short events, int64_t deadline)
{
    for (;;) {
        zmq_pollitem_t items [2] = {
            { self->socket, 0, events, 0 }, { self->monitor, 0, ZMQ_POLLIN, 0 }
        };
        int rc = zmq_poll (items, self->monitor ? 2 : 1, s_remaining (deadline));
        if (rc > 0)
            return ((items [0].revents & events) ? S_READY : 0)
                 | ((items [1].revents & ZMQ_POLLIN) ? S_NEWS : 0);
        if (rc == 0)
            return 0;
        if (errno != EINTR)
            return -1;
    }
}

//  Queues one frame of slot's request. Payloads of FPX_ZEROCOPY_MIN bytes
//  and more are handed to ZeroMQ in place, counted in held until
//  s_release; ZeroMQ only reads an outgoing frame, so dropping const is
//  safe.
static int
s_send_frame (fpx_conn_t *self, s_slot_t *slot, const void *data, size_t size, int flags)
{
    zmq_msg_t msg;
    if (size >= FPX_ZEROCOPY_MIN) {
        s_hold (slot);
        if (zmq_msg_init_data (&msg, (void *) data, size, s_release, slot)) {
            s_release (NULL, slot);     //  init failed: ZeroMQ took nothing
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

//  Sends the header frame once a connection is up, waiting up to bound.
//  A connection attempt that fails meanwhile fails the request at once,
//  unless ride is set and it was only refused (a server restarting).
//  "Up" is the monitor's word, not the socket's: ZeroMQ reports a lost
//  connection before it detaches its pipe, so a socket that is still
//  writable then would take the request into a pipe about to be dropped.
//  The handshake of the next connection is reported after its pipe is
//  attached, so once the monitor says so the request goes there.
static int
s_send_header (fpx_conn_t *self, s_slot_t *slot, int64_t bound, bool ride,
               char *errmsg, size_t size)
{
    fpx_header_t header = {
        .version = FPX_PROTOCOL_VERSION, .opcode = (uint16_t) slot->opcode,
        .request_id = slot->id
    };
    memcpy (header.api_key, self->api_key, sizeof header.api_key);
    uint8_t frame [FPX_REQUEST_HEADER_SIZE];
    fpx_header_encode_request (&header, frame);
    int64_t start = s_now_ms ();
    s_monitor_read (self);
    uint64_t failures = self->failures;
    for (int rc = S_READY; ; ) {
        //  Read the news right before sending: a loss after this is the
        //  loss of the connection the request goes out on.
        s_monitor_read (self);
        slot->losses = self->losses;
        if (self->connected
        &&  s_send_frame (self, slot, frame, sizeof frame, ZMQ_SNDMORE | ZMQ_DONTWAIT) == 0)
            return 0;
        if (self->connected && errno != EAGAIN && errno != EINTR)
            break;
        //  An attempt failed during this wait, and none succeeded since.
        if (!self->connected && self->failures != failures && self->cause != S_CAUSE_NONE
        &&  (!ride || self->cause != S_CAUSE_REFUSED))
            return s_connect_error (self, errmsg, size);
        //  Not connected: only news from the monitor can change that.
        rc = s_poll (self, self->connected ? ZMQ_POLLOUT : 0, bound);
        if (rc == 0) {
            long waited = (long) (s_now_ms () - start);
            if (self->failures != failures)
                return s_error (errmsg, size, FPX_ECONNECT,
                                "connection to %s lost and not made again within %ld ms: "
                                "connection refused (server down or restarting?)",
                                self->endpoint, waited);
            return s_error (errmsg, size, FPX_ETIMEDOUT,
                            "cannot connect to %s within %ld ms: no answer (host down, "
                            "unreachable or filtered?%s)", self->endpoint, waited,
                            self->curve ? " or CURVE: is the server key right?" : "");
        }
        if (rc < 0 && errno != EINTR)
            break;
    }
    return s_error (errmsg, size, errno == ENOMEM ? FPX_ENOMEM : FPX_ECONNECT,
                    "cannot send to %s: %s", self->endpoint, zmq_strerror (errno));
}

//  Sends the whole request. ZeroMQ delivers a multipart message whole or
//  not at all; a failure after the first frame leaves the socket mid-
//  message, so it is reset.
static int
s_send (fpx_conn_t *self, const fpx_request_t *request, s_slot_t *slot, int64_t bound,
        bool ride, char *errmsg, size_t size)
{
    int rc = s_send_header (self, slot, bound, ride, errmsg, size);
    if (rc)
        return rc;
    int flags = ZMQ_DONTWAIT | (request->array_count ? ZMQ_SNDMORE : 0);
    rc = s_send_frame (self, slot, request->params, request->params_size, flags);
    for (int i = 0; rc == 0 && i < request->array_count; i++) {
        flags = ZMQ_DONTWAIT | (i + 1 < request->array_count ? ZMQ_SNDMORE : 0);
        rc = s_send_frame (self, slot, request->arrays [i].data, request->arrays [i].size, flags);
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

//  Checks the reply to slot's request: version, status, opcode, frame
//  count; then decodes its result frame. Error replies need no particular
//  frame count.
static int
s_check_reply (fpx_conn_t *self, const s_slot_t *slot, fpx_reply_t *reply, bool overflow,
               char *errmsg, size_t size)
{
    const char *op = fpx_opcode_name (slot->opcode);
    fpx_header_t header;
    int decoded = fpx_header_decode_reply (&header, zmq_msg_data (&reply->frames [0]),
                                           zmq_msg_size (&reply->frames [0]));
    if (decoded == FPX_EVERSION)
        return s_error (errmsg, size, FPX_EVERSION,
                        "%s speaks protocol version %u, this client %d",
                        self->endpoint, header.version, FPX_PROTOCOL_VERSION);
    if (decoded)
        return s_error (errmsg, size, FPX_EPROTO, "malformed reply header from %s",
                        self->endpoint);
    if (header.status > 0)
        return s_error (errmsg, size, FPX_EPROTO, "reply to %s has status %d",
                        op, (int) header.status);
    if (header.status < 0)
        return s_server_error (reply, header.status, errmsg, size);
    if (header.opcode != slot->opcode)
        return s_error (errmsg, size, FPX_EPROTO, "reply to %s carries opcode %u",
                        op, header.opcode);
    int expected = 2 + slot->reply_arrays;
    if (overflow || reply->frame_count != expected)
        return s_error (errmsg, size, FPX_EPROTO, "reply to %s has %s%d frames, expected %d",
                        op, overflow ? "over " : "", reply->frame_count, expected);
    if (fpx_params_decode_bounded (&reply->result, zmq_msg_data (&reply->frames [1]),
                                   zmq_msg_size (&reply->frames [1]), FPX_RESULT_MAX))
        return s_error (errmsg, size, FPX_EPROTO, "malformed result in reply to %s", op);
    return 0;
}

//  Moves the frames of from into to (which holds none); from is left
//  empty.
static void
s_move_frames (fpx_reply_t *to, fpx_reply_t *from)
{
    to->frame_count = from->frame_count;
    for (int i = 0; i < from->frame_count; i++) {
        zmq_msg_init (&to->frames [i]);
        zmq_msg_move (&to->frames [i], &from->frames [i]);
        zmq_msg_close (&from->frames [i]);
    }
    from->frame_count = 0;
}

//  Keeps a reply read during another wait on its asynchronous request,
//  for fpx_conn_recv to report. Moves the frames out of reply.
static void
s_store (fpx_conn_t *self, s_slot_t *slot, fpx_reply_t *reply, bool overflow)
{
    fpx_reply_t *stored = malloc (sizeof *stored);
    if (!stored) {
        fpx_reply_close (reply);
        s_slot_complete (self, slot, FPX_ENOMEM, NULL, false);
        return;
    }
    s_move_frames (stored, reply);
    s_slot_complete (self, slot, 0, stored, overflow);
}

//  Reads one message if one is waiting, without blocking, and routes it
//  by request id: the reply of `want` (id 0 or an unreadable header
//  counts as want's too, when want is given) or of any async request in
//  flight when want is NULL is left in *reply with *got set; one of
//  another async request in flight is stored on it; anything else (late
//  replies of expired requests) is dropped. Returns 1 when a message was
//  read, 0 when none was waiting, or a negative code with errmsg.
static int
s_read_one (fpx_conn_t *self, s_slot_t *want, fpx_reply_t *reply, bool *overflow,
            s_slot_t **got, char *errmsg, size_t size)
{
    *got = NULL;
    int rc = s_recv_message (self->socket, reply, overflow);
    if (rc < 0)
        return s_error (errmsg, size, errno == ENOMEM ? FPX_ENOMEM : FPX_ECONNECT,
                        "cannot receive from %s: %s", self->endpoint, zmq_strerror (errno));
    if (rc == 0)
        return 0;
    fpx_header_t header;
    fpx_header_decode_reply (&header, zmq_msg_data (&reply->frames [0]),
                             zmq_msg_size (&reply->frames [0]));
    s_slot_t *slot = header.request_id ? s_slot_find (self, header.request_id) : want;
    if (slot && slot->state == S_SENT && (slot == want || (!want && slot->async))) {
        *got = slot;
        return 1;
    }
    if (slot && slot->state == S_SENT && slot->async)
        s_store (self, slot, reply, *overflow);
    else
        fpx_reply_close (reply);
    return 1;
}

//  Waits for ZeroMQ to release slot's zero-copy frames: until its
//  deadline, or FPX_RELEASE_GRACE_MS when a reply came (the server then
//  holds the whole request, so the release is imminent). Resets the
//  socket if they are still held then.
static void
s_settle (fpx_conn_t *self, s_slot_t *slot, bool answered)
{
    int64_t deadline = slot->deadline;
    if (answered && deadline >= 0 && deadline < s_now_ms () + FPX_RELEASE_GRACE_MS)
        deadline = s_now_ms () + FPX_RELEASE_GRACE_MS;
    if (!s_wait_released (self, slot, deadline))
        s_socket_reset (self);
}

/* ---- call -------------------------------------------------------------- */

//  Waits for the reply to slot's request. *lost: the connection it went
//  out on is gone and no reply came before (nothing else is reported
//  then: the caller decides between a retry and an error).
static int
s_wait_reply (fpx_conn_t *self, s_slot_t *slot, fpx_reply_t *reply, bool *answered,
              bool *lost, char *errmsg, size_t size)
{
    for (;;) {
        bool overflow = false;
        s_slot_t *got;
        int rc = s_read_one (self, slot, reply, &overflow, &got, errmsg, size);
        if (rc < 0)
            return rc;
        if (got) {
            *answered = true;
            rc = s_check_reply (self, slot, reply, overflow, errmsg, size);
            if (rc)
                fpx_reply_close (reply);
            return rc;
        }
        if (rc == 1)
            continue;
        //  Nothing left to read: what came before the loss has been read.
        if (slot->losses != self->losses) {
            s_fail_lost (self);
            *lost = true;
            return FPX_ECONNECT;
        }
        rc = s_poll (self, ZMQ_POLLIN, slot->deadline);
        if (rc & S_NEWS)
            s_monitor_read (self);
        if (rc == 0) {
            const char *op = fpx_opcode_name (slot->opcode);
            return s_error (errmsg, size, FPX_ETIMEDOUT,
                            "no reply from %s within %d ms: the %s may still be running on "
                            "the server%s", self->endpoint, slot->timeout_ms, op ? op : "request",
                            slot->async ? "" : " (a late reply is discarded)");
        }
        if (rc < 0)
            return s_error (errmsg, size, errno == ENOMEM ? FPX_ENOMEM : FPX_ECONNECT,
                            "cannot receive from %s: %s", self->endpoint, zmq_strerror (errno));
    }
}

static int
s_socket_check (fpx_conn_t *self, char *errmsg, size_t size)
{
    if (!self->socket && !(self->socket = s_socket_open (self)))
        return s_error (errmsg, size, FPX_ECONNECT, "cannot open a socket to %s: %s",
                        self->endpoint, zmq_strerror (errno));
    return 0;
}

//  The bound of the wait for a connection to send on.
static int64_t
s_connect_bound (fpx_conn_t *self, int64_t deadline)
{
    int64_t bound = self->connect_timeout_ms < 0 ? -1 : s_now_ms () + self->connect_timeout_ms;
    return s_earlier (bound, deadline);
}

//  A server still loading its indexes refuses requests that touch them
//  before running them (FPX_ERECOVERING), so any request, a write too, may
//  be sent again. Waits the backoff (doubling, up to a limit) when the
//  request's deadline leaves room for it and another try (twice the round
//  trip the refusal took, rtt_ms); false: give up and report the refusal,
//  rather than a timeout that would leave the outcome in doubt.
#define S_RECOVERY_BACKOFF_MIN_MS 20
#define S_RECOVERY_BACKOFF_MAX_MS 500

static bool
s_recovery_wait (const s_slot_t *slot, int64_t rtt_ms, int64_t *backoff_ms)
{
    int64_t wait = *backoff_ms;
    if (slot->deadline >= 0 && s_now_ms () + wait + 2 * rtt_ms >= slot->deadline)
        return false;
    struct timespec pause = { .tv_sec = wait / 1000, .tv_nsec = (wait % 1000) * 1000000 };
    while (nanosleep (&pause, &pause) && errno == EINTR)
        ;
    *backoff_ms = wait * 2 > S_RECOVERY_BACKOFF_MAX_MS ? S_RECOVERY_BACKOFF_MAX_MS : wait * 2;
    return true;
}

int
fpx_conn_call (fpx_conn_t *self, const fpx_request_t *request, fpx_reply_t *reply,
               char *errmsg, size_t errmsg_size)
{
    assert (request->array_count >= 0 && request->array_count <= FPX_MAX_FRAMES - 2);
    assert (request->params_size <= FPX_PARAMS_MAX);
    reply->frame_count = 0;
    int rc = s_socket_check (self, errmsg, errmsg_size);
    if (rc)
        return rc;
    bool is_long = request->flags & FPX_REQUEST_LONG;
    s_slot_t *slot = s_slot_acquire (self, request, false, NULL,
                                     is_long ? self->long_timeout_ms : self->timeout_ms);
    bool answered = false;
    //  A restarting server refuses for a moment: a handle that had a
    //  connection rides that out, up to its bound; a new one fails fast.
    s_monitor_read (self);
    int64_t bound = s_connect_bound (self, slot->deadline);
    bool ride = self->handshakes > 0;
    int64_t backoff_ms = S_RECOVERY_BACKOFF_MIN_MS;
    for (int attempt = 0; ; attempt++) {
        bool lost = false;
        int64_t sent_at = s_now_ms ();
        rc = s_send (self, request, slot, bound, ride, errmsg, errmsg_size);
        if (rc == 0)
            rc = s_wait_reply (self, slot, reply, &answered, &lost, errmsg, errmsg_size);
        if (rc == FPX_ERECOVERING
        &&  s_recovery_wait (slot, s_now_ms () - sent_at, &backoff_ms)) {
            attempt--;              //  not a lost connection: any request may go again
            continue;
        }
        if (!lost)
            break;
        const char *op = fpx_opcode_name (request->opcode);
        if (!(request->flags & FPX_REQUEST_IDEMPOTENT)) {
            rc = s_error (errmsg, errmsg_size, FPX_ECONNECT,
                          "connection to %s lost while the %s was in flight: its outcome is "
                          "unknown (it may or may not have been applied; check before "
                          "retrying)", self->endpoint, op ? op : "request");
            break;
        }
        if (attempt == FPX_CONN_RETRIES) {
            rc = s_error (errmsg, errmsg_size, FPX_ECONNECT,
                          "connection to %s lost while the %s was in flight, and again "
                          "when it was sent anew", self->endpoint, op ? op : "request");
            break;
        }
        //  A read: send it again on the next connection, within its own
        //  timeout (without one, within the connect timeout).
        bound = slot->deadline >= 0 ? slot->deadline : s_connect_bound (self, -1);
        ride = true;
    }
    //  The caller's buffers must be free of ZeroMQ before we return.
    s_settle (self, slot, answered);
    s_slot_free (self, slot);
    return rc;
}

/* ---- asynchronous requests ------------------------------------------- */

int
fpx_conn_send (fpx_conn_t *self, const fpx_request_t *request, void *tag, uint64_t *id,
               char *errmsg, size_t errmsg_size)
{
    assert (request->array_count >= 0 && request->array_count <= FPX_MAX_FRAMES - 2);
    assert (request->params_size <= FPX_PARAMS_MAX);
    if (self->in_flight >= FPX_CONN_MAX_ASYNC)
        return s_error (errmsg, errmsg_size, FPX_EBUSY,
                        "%d requests in flight already; receive some first",
                        FPX_CONN_MAX_ASYNC);
    int rc = s_socket_check (self, errmsg, errmsg_size);
    if (rc)
        return rc;
    //  Asynchronous requests keep the request timeout, long or not: the
    //  oldest must expire first (see above).
    s_slot_t *slot = s_slot_acquire (self, request, true, tag, self->timeout_ms);
    s_monitor_read (self);
    rc = s_send (self, request, slot, s_connect_bound (self, slot->deadline),
                 self->handshakes > 0, errmsg, errmsg_size);
    if (rc) {
        //  Nothing went out, so nothing can be held but by a socket
        //  reset's victims, which s_send has already waited for.
        s_settle (self, slot, false);
        s_slot_free (self, slot);
        return rc;
    }
    *id = slot->id;
    return 0;
}

//  The first async request that has completed without being reported.
static s_slot_t *
s_first_done (fpx_conn_t *self)
{
    for (int i = self->head; i != S_NONE; i = self->slots [i].next)
        if (self->slots [i].state == S_DONE)
            return &self->slots [i];
    return NULL;
}

//  Expires async requests past their deadline: the oldest only (O(1)),
//  or every one when scan is set. A request whose zero-copy frames are
//  still held needs a socket reset.
static void
s_expire (fpx_conn_t *self, bool scan)
{
    int64_t now = s_now_ms ();
    bool reset = false;
    for (int i = self->head; i != S_NONE; i = self->slots [i].next) {
        s_slot_t *slot = &self->slots [i];
        if (slot->state == S_SENT && slot->deadline >= 0 && slot->deadline <= now) {
            s_slot_complete (self, slot, FPX_ETIMEDOUT, NULL, false);
            pthread_mutex_lock (&self->mutex);
            reset = reset || slot->held > 0;
            pthread_mutex_unlock (&self->mutex);
        }
        if (!scan)
            break;
    }
    if (reset)
        s_socket_reset (self);
}

//  Reports a completed async request: its reply (stored, or just read
//  into *reply) checked, or its failure. Frees the slot.
static int
s_report (fpx_conn_t *self, s_slot_t *slot, fpx_reply_t *reply, bool overflow, bool fresh,
          uint64_t *id, void **tag, int *status, char *errmsg, size_t size)
{
    *id = slot->id;
    *tag = slot->tag;
    int rc;
    if (fresh || slot->stored) {
        if (!fresh) {
            s_move_frames (reply, slot->stored);
            free (slot->stored);
            slot->stored = NULL;
            overflow = slot->overflow;
        }
        s_settle (self, slot, true);
        rc = s_check_reply (self, slot, reply, overflow, errmsg, size);
        if (rc)
            fpx_reply_close (reply);
    }
    else {
        reply->frame_count = 0;
        rc = slot->status;
        const char *op = fpx_opcode_name (slot->opcode);
        if (rc == FPX_ETIMEDOUT)
            s_error (errmsg, size, rc, "no reply from %s within %d ms: the %s may still be "
                     "running on the server", self->endpoint, slot->timeout_ms,
                     op ? op : "request");
        else
        if (rc == FPX_ECONNECT)
            s_error (errmsg, size, rc, "connection to %s lost or reset while the %s was in "
                     "flight: not sent again%s", self->endpoint, op ? op : "request",
                     slot->opcode == FPX_OP_SEARCH ? "" : "; its outcome is unknown");
        else
            s_error (errmsg, size, rc, "%s", fpx_strerror (rc));
    }
    *status = rc;
    s_slot_free (self, slot);
    return 1;
}

int
fpx_conn_recv (fpx_conn_t *self, int timeout_ms, uint64_t *id, void **tag, int *status,
               fpx_reply_t *reply, char *errmsg, size_t errmsg_size)
{
    int64_t until = timeout_ms < 0 ? -1 : s_now_ms () + timeout_ms;
    bool quiet = false;         //  the last wait ran out without a message
    reply->frame_count = 0;
    for (;;) {
        if (self->in_flight == 0)
            return 0;
        if (self->done == 0)
            s_expire (self, quiet);
        if (self->done > 0)
            return s_report (self, s_first_done (self), reply, false, false,
                             id, tag, status, errmsg, errmsg_size);
        if (!self->socket)      //  a reset failed to reopen: all are done
            return 0;
        bool overflow = false;
        s_slot_t *got;
        int rc = s_read_one (self, NULL, reply, &overflow, &got, errmsg, errmsg_size);
        if (got)
            return s_report (self, got, reply, overflow, true, id, tag, status,
                             errmsg, errmsg_size);
        if (rc < 0) {
            s_socket_reset (self);      //  fails every request in flight
            continue;
        }
        if (rc == 1)
            continue;
        //  All read that came before a loss: fail what it took along.
        s_fail_lost (self);
        if (self->done > 0)
            continue;
        if (until >= 0 && s_now_ms () >= until)
            return 0;
        int64_t deadline = s_earlier (until, self->slots [self->head].deadline);
        rc = s_poll (self, ZMQ_POLLIN, deadline);
        quiet = rc == 0;
        if (rc & S_NEWS)
            s_monitor_read (self);
        if (rc < 0)
            s_socket_reset (self);
    }
}

/* ---- replies ------------------------------------------------------------- */

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
