/*  intake.h — bytes a TCP peer has sent that the broker has not received.

    libzmq hands the broker a multipart message only once its last frame
    has arrived, and no libzmq option bounds the frames of one message: a
    peer could make it buffer without end before anything is authenticated.
    The intake compares, per connection, the bytes the kernel received on
    the socket (TCP_INFO) with the bytes the broker read from it, and cuts
    (shutdown) a connection whose difference, the message still arriving,
    passes its cap:

    - every connection: `cap` (twice --max-message-mb plus slack: no legal
      message is larger), plus 64 bytes per second of its age for the
      heartbeats and protocol commands that carry no message;
    - connections that have not yet sent an authenticated request: all of
      them together at most `unauthenticated_cap` (--max-unauthenticated-mb);
      past it the ones holding most are cut first.

    Only the broker thread calls it. Descriptors come from the frontend's
    monitor (ACCEPTED, DISCONNECTED) and from ZMQ_SRCFD of each message;
    non-TCP descriptors (ipc) are not tracked.
*/
#ifndef FPX_INTAKE_H_INCLUDED
#define FPX_INTAKE_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>

#define FPX_INTAKE_SLACK   ((size_t) 16 << 20)  //  kernel buffers, handshakes, framing
#define FPX_INTAKE_PERIOD  0.1                  //  seconds between two checks

typedef struct fpx_intake_t fpx_intake_t;

fpx_intake_t *fpx_intake_new (size_t cap, size_t unauthenticated_cap);
void fpx_intake_destroy (fpx_intake_t **self_p);

/*  A connection was accepted on fd / its descriptor was closed.         */
void fpx_intake_accepted (fpx_intake_t *self, int fd, double now);
void fpx_intake_closed (fpx_intake_t *self, int fd);

/*  The broker read a whole message of `bytes` in `frames` frames from fd;
    authenticated when its key was valid.                                */
void fpx_intake_received (fpx_intake_t *self, int fd, size_t bytes, int frames,
                          bool authenticated);

/*  Milliseconds until the next check is due (for the broker's poll).    */
long fpx_intake_timeout_ms (fpx_intake_t *self, double now);

/*  When due: measures every tracked connection and cuts those over their
    cap (each logged with its peer address). Returns how many were cut.  */
int fpx_intake_check (fpx_intake_t *self, double now);

#endif
