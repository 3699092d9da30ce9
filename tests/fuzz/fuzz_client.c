/*  fuzz_client.c — see fuzz_client.h.                                   */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "fpx_params.h"
#include "fpx_protocol.h"
#include "fuzz_client.h"
#include "fuzz_seeds.h"

#define S_REPLY_FRAMES_MAX 5     //  header, result, at most 3 arrays
#define S_RESTORE_ID UINT64_C(0x46505846555a5a31)  //  ids of the list and drops of a restore

//  Waits until socket has a message: true, or false after timeout_ms.
//  A signal (libFuzzer's timer) does not cut the wait short.
static bool
s_wait_in (void *socket, int timeout_ms)
{
    struct timespec start, now;
    clock_gettime (CLOCK_MONOTONIC, &start);
    long left = timeout_ms;
    while (left >= 0) {
        zmq_pollitem_t item = { socket, 0, ZMQ_POLLIN, 0 };
        int rc = zmq_poll (&item, 1, left);
        if (rc > 0)
            return true;
        if (rc == 0 || zmq_errno () != EINTR)
            return false;
        clock_gettime (CLOCK_MONOTONIC, &now);
        left = timeout_ms - ((now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000);
    }
    return false;
}

//  zmq_msg_recv, again when a signal interrupts it.
static int
s_recv (zmq_msg_t *msg, void *socket)
{
    int rc;
    while ((rc = zmq_msg_recv (msg, socket, 0)) < 0 && zmq_errno () == EINTR)
        ;
    return rc;
}

void *
fpx_fuzz_connect (void *ctx, const char *endpoint)
{
    void *socket = zmq_socket (ctx, ZMQ_DEALER);
    if (!socket)
        return NULL;
    int zero = 0;
    zmq_setsockopt (socket, ZMQ_LINGER, &zero, sizeof zero);
    if (zmq_connect (socket, endpoint)) {
        zmq_close (socket);
        return NULL;
    }
    return socket;
}

static int
s_send (void *socket, const void *data, size_t size, int flags)
{
    int rc;
    while ((rc = zmq_send (socket, data, size, flags)) < 0 && zmq_errno () == EINTR)
        ;
    return rc < 0 ? -1 : 0;
}

int
fpx_fuzz_send (void *socket, const fpx_fuzz_frames_t *frames)
{
    if (frames->count == 0)
        return s_send (socket, "", 0, 0);
    for (int i = 0; i < frames->count; i++) {
        int flags = i + 1 < frames->count ? ZMQ_SNDMORE : 0;
        if (s_send (socket, frames->data [i], frames->size [i], flags))
            return -1;
    }
    return 0;
}

bool
fpx_fuzz_request_id (const fpx_fuzz_frames_t *frames, uint64_t *id)
{
    if (frames->count == 0)
        return false;
    fpx_header_t header;
    int rc = fpx_header_decode_request (&header, frames->data [0], frames->size [0]);
    if (rc != 0 && rc != FPX_EVERSION)
        return false;
    *id = header.request_id;
    return true;
}

int
fpx_fuzz_recv (void *socket, int timeout_ms, fpx_fuzz_reply_t *reply, char *why, size_t why_size)
{
    if (!s_wait_in (socket, timeout_ms)) {
        snprintf (why, why_size, "no reply within %d ms", timeout_ms);
        return 1;
    }
    zmq_msg_t frames [S_REPLY_FRAMES_MAX + 1];
    int count = 0, more = 1, rc = 0;
    why [0] = 0;
    while (more) {
        zmq_msg_t *frame = &frames [count < S_REPLY_FRAMES_MAX ? count : S_REPLY_FRAMES_MAX];
        zmq_msg_init (frame);
        if (s_recv (frame, socket) < 0) {
            zmq_msg_close (frame);
            snprintf (why, why_size, "receive failed: %s", zmq_strerror (zmq_errno ()));
            rc = -1;
            break;
        }
        more = zmq_msg_more (frame);
        if (count < S_REPLY_FRAMES_MAX)
            count++;
        else {
            zmq_msg_close (frame);
            snprintf (why, why_size, "more than %d frames", S_REPLY_FRAMES_MAX);
            rc = -1;
        }
    }
    reply->nframes = count;
    if (rc == 0 && count < 2) {
        snprintf (why, why_size, "%d frame(s), expected at least 2", count);
        rc = -1;
    }
    fpx_header_t header;
    if (rc == 0) {
        int decoded = fpx_header_decode_reply (&header, zmq_msg_data (&frames [0]), zmq_msg_size (&frames [0]));
        if (decoded) {
            snprintf (why, why_size, "reply header does not decode (%s, %zu bytes)",
                      fpx_error_name (decoded), zmq_msg_size (&frames [0]));
            rc = -1;
        }
        else
        if (header.status > 0 || strcmp (fpx_error_name (header.status), "FPX_E?") == 0) {
            snprintf (why, why_size, "unknown status %d", header.status);
            rc = -1;
        }
        else {
            reply->status = header.status;
            reply->opcode = header.opcode;
            reply->request_id = header.request_id;
        }
    }
    if (rc == 0) {
        fpx_params_t result;
        if (fpx_params_decode_bounded (&result, zmq_msg_data (&frames [1]), zmq_msg_size (&frames [1]),
                                       FPX_RESULT_MAX)) {
            snprintf (why, why_size, "result map does not decode (status %s)", fpx_error_name (header.status));
            rc = -1;
        }
        else
        if (header.status != 0) {
            const char *text;
            size_t len;
            if (fpx_params_get_str (&result, "error", &text, &len) != 0 || len == 0) {
                snprintf (why, why_size, "error reply %s without an error text", fpx_error_name (header.status));
                rc = -1;
            }
            else
            if (count != 2) {
                snprintf (why, why_size, "error reply %s with %d array frames", fpx_error_name (header.status),
                          count - 2);
                rc = -1;
            }
        }
    }
    for (int i = 0; i < count; i++)
        zmq_msg_close (&frames [i]);
    return rc;
}

//  Reads the "names" array of a list reply.
static void
s_names (const void *data, size_t size, fpx_fuzz_name_fn fn, void *arg)
{
    fpx_params_t result;
    fpx_mp_value_t names;
    if (fpx_params_decode_bounded (&result, data, size, FPX_RESULT_MAX)
    ||  fpx_params_get_value (&result, "names", &names) || names.type != FPX_MP_ARRAY)
        return;
    const uint8_t *needle = names.v.seq.ptr;
    for (uint32_t i = 0; i < names.v.seq.count; i++) {
        fpx_mp_value_t name;
        if (fpx_mp_read (&name, &needle, names.v.seq.end) || name.type != FPX_MP_STR)
            return;
        fn (arg, name.v.str.ptr, name.v.str.len);
    }
}

int
fpx_fuzz_call (void *socket, const fpx_fuzz_buf_t *request, int timeout_ms,
               fpx_fuzz_name_fn names_fn, void *arg)
{
    fpx_fuzz_frames_t frames;
    fpx_fuzz_split (&frames, request->data, request->size);
    uint64_t id = 0;
    fpx_fuzz_request_id (&frames, &id);
    if (fpx_fuzz_send (socket, &frames))
        return 1;
    //  Replies to earlier requests that timed out are read and dropped.
    int status = 1;
    bool done = false;
    while (!done) {
        if (!s_wait_in (socket, timeout_ms))
            return 1;
        zmq_msg_t header, result;
        zmq_msg_init (&header);
        zmq_msg_init (&result);
        if (s_recv (&header, socket) >= 0 && zmq_msg_more (&header)
        &&  s_recv (&result, socket) >= 0) {
            fpx_header_t decoded;
            if (fpx_header_decode_reply (&decoded, zmq_msg_data (&header), zmq_msg_size (&header)) == 0
            &&  decoded.request_id == id) {
                done = true;
                status = decoded.status;
                if (status == 0 && names_fn)
                    s_names (zmq_msg_data (&result), zmq_msg_size (&result), names_fn, arg);
            }
            while (zmq_msg_more (&result)) {    //  arrays, unread
                zmq_msg_close (&result);
                zmq_msg_init (&result);
                if (s_recv (&result, socket) < 0)
                    break;
            }
        }
        else
            done = true;
        zmq_msg_close (&header);
        zmq_msg_close (&result);
    }
    return status;
}

typedef struct {
    void *socket;
    int timeout_ms;
    int failed;
    int timed_out;                 //  a setup request passed the tenant's deadline
} s_restore_t;

static void
s_drop (void *arg, const char *name, size_t len)
{
    s_restore_t *self = arg;
    char text [FPX_NAME_MAX + 1];
    if (len > FPX_NAME_MAX)
        return;
    memcpy (text, name, len);
    text [len] = 0;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init (&sb);
    msgpack_packer pk;
    msgpack_packer_init (&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map (&pk, 1);
    fpx_pack_kv_str (&pk, "name", text);
    fpx_header_t header = { .version = FPX_PROTOCOL_VERSION, .opcode = FPX_OP_DROP,
                           .request_id = S_RESTORE_ID };
    snprintf (header.api_key, sizeof header.api_key, "%s", FPX_FUZZ_KEY);
    uint8_t head [FPX_REQUEST_HEADER_SIZE];
    fpx_header_encode_request (&header, head);
    fpx_fuzz_buf_t request = { 0 };
    fpx_fuzz_buf_frame (&request, head, sizeof head);
    fpx_fuzz_buf_frame (&request, sb.data, sb.size);
    msgpack_sbuffer_destroy (&sb);
    int status = fpx_fuzz_call (self->socket, &request, self->timeout_ms, NULL, NULL);
    if (status > 0)
        self->failed = 1;
    fpx_fuzz_buf_free (&request);
}

static void
s_setup (void *arg, const char *label, int opcode, const fpx_fuzz_buf_t *request)
{
    (void) opcode;
    s_restore_t *self = arg;
    int status = fpx_fuzz_call (self->socket, request, self->timeout_ms, NULL, NULL);
    if (status != 0) {
        fprintf (stderr, "fuzz: setup request %s: %s\n", label,
                 status > 0 ? "no reply" : fpx_error_name (status));
        self->failed = 1;
        self->timed_out |= status == FPX_ETIMEDOUT;
    }
}

static int s_restore_once (void *socket, int timeout_ms, bool *timed_out);

//  A setup train that passed the tenant's deadline (a machine busy with
//  other work, a sanitizer's slowness) left its index half made: the
//  whole restore runs again, dropping it first, a few times at most.
int
fpx_fuzz_restore (void *socket, int timeout_ms)
{
    bool timed_out = true;
    int rc = -1;
    for (int attempt = 0; attempt < 3 && rc && timed_out; attempt++)
        rc = s_restore_once (socket, timeout_ms, &timed_out);
    return rc;
}

static int
s_restore_once (void *socket, int timeout_ms, bool *timed_out)
{
    s_restore_t self = { .socket = socket, .timeout_ms = timeout_ms };
    *timed_out = false;
    fpx_header_t header = { .version = FPX_PROTOCOL_VERSION, .opcode = FPX_OP_LIST,
                           .request_id = S_RESTORE_ID };
    snprintf (header.api_key, sizeof header.api_key, "%s", FPX_FUZZ_KEY);
    uint8_t head [FPX_REQUEST_HEADER_SIZE];
    fpx_header_encode_request (&header, head);
    fpx_fuzz_buf_t request = { 0 };
    fpx_fuzz_buf_frame (&request, head, sizeof head);
    fpx_fuzz_buf_frame (&request, NULL, 0);
    int status = fpx_fuzz_call (socket, &request, timeout_ms, s_drop, &self);
    fpx_fuzz_buf_free (&request);
    if (status != 0) {
        fprintf (stderr, "fuzz: list: %s\n", status > 0 ? "no reply" : fpx_error_name (status));
        return -1;
    }
    fpx_fuzz_setup_requests (s_setup, &self);
    *timed_out = self.timed_out;
    return self.failed ? -1 : 0;
}
