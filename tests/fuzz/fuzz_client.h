/*  fuzz_client.h — sending fuzz inputs to a real server over a DEALER
    socket and checking what comes back (the in-process server target and
    the live fuzzer share it).                                           */
#ifndef FPX_FUZZ_CLIENT_H_INCLUDED
#define FPX_FUZZ_CLIENT_H_INCLUDED

#include "fuzz_common.h"

typedef struct {
    int status;               //  the reply header's status
    int opcode;
    uint64_t request_id;
    int nframes;
} fpx_fuzz_reply_t;

/*  A DEALER connected to endpoint (tcp:// or ipc://), with linger 0.    */
void *fpx_fuzz_connect (void *ctx, const char *endpoint);

/*  Sends the frames as one multipart message (an input with no frame is
    sent as one empty frame). Returns 0 or -1.                           */
int fpx_fuzz_send (void *socket, const fpx_fuzz_frames_t *frames);

/*  Receives one reply within timeout_ms and checks it: a 24-byte reply
    header of version 1 with status 0 or a known FPX_E… code, a result
    map the client-side reader accepts, an "error" string on failure, no
    arrays on failure, at most 2 + FPX_REPLY_ARRAYS_MAX frames.
    Returns 0, 1 on timeout, -1 when malformed (why says how).           */
int fpx_fuzz_recv (void *socket, int timeout_ms, fpx_fuzz_reply_t *reply,
                   char *why, size_t why_size);

/*  What the server should echo for a request: true and its id when the
    first frame decodes as a request header (or one of another version). */
bool fpx_fuzz_request_id (const fpx_fuzz_frames_t *frames, uint64_t *id);

/*  Sends a framed request and waits for its reply; returns its status,
    or a value above 0 on timeout / malformed reply. names_fn, when set,
    is called with each string of the reply's "names" array (list).     */
typedef void (*fpx_fuzz_name_fn) (void *arg, const char *name, size_t len);
int fpx_fuzz_call (void *socket, const fpx_fuzz_buf_t *request, int timeout_ms,
                   fpx_fuzz_name_fn names_fn, void *arg);

/*  Restores the base state: drops every named index of the tenant, then
    runs the setup requests (fuzz_seeds.h). Returns 0 or -1.             */
int fpx_fuzz_restore (void *socket, int timeout_ms);

#endif
