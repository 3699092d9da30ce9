/*  intake.c — bytes a TCP peer has sent that the broker has not received (intake.h).

    Tracked connections sit in a dense list (checked every period) with an
    entry per descriptor pointing into it. The kernel's count is
    tcpi_bytes_received: every byte acknowledged, including what libzmq has
    not read yet from the socket buffer (within the slack).
*/
#include <arpa/inet.h>
#include <errno.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "intake.h"
#include "log.h"

#define S_AGE_ALLOWANCE  64        //  bytes per second of a connection's age
#define S_FRAME_OVERHEAD 64        //  ZMTP (and CURVE) bytes around each frame

typedef struct {
    bool tracked;
    bool authenticated;
    size_t slot;                   //  in self->fds
    double since;
    uint64_t delivered;            //  bytes of whole messages the broker read
    uint64_t frames;
    uint64_t held;                 //  at the last check
} s_peer_t;

struct fpx_intake_t {
    size_t cap, unauthenticated_cap;
    s_peer_t *peers;               //  by descriptor
    int capacity;
    int *fds;                      //  tracked descriptors
    size_t nfds;
    double next_check;
};

fpx_intake_t *
fpx_intake_new (size_t cap, size_t unauthenticated_cap)
{
    fpx_intake_t *self = calloc (1, sizeof *self);
    if (self) {
        self->cap = cap;
        self->unauthenticated_cap = unauthenticated_cap;
    }
    return self;
}

void
fpx_intake_destroy (fpx_intake_t **self_p)
{
    fpx_intake_t *self = *self_p;
    if (!self)
        return;
    free (self->peers);
    free (self->fds);
    free (self);
    *self_p = NULL;
}

//  Bytes received on fd's socket, or -1 when it is not a TCP socket.
static int64_t
s_bytes_received (int fd)
{
    struct tcp_info info;
    socklen_t size = sizeof info;
    memset (&info, 0, sizeof info);
    if (getsockopt (fd, IPPROTO_TCP, TCP_INFO, &info, &size)
    ||  size < offsetof (struct tcp_info, tcpi_bytes_received) + sizeof info.tcpi_bytes_received)
        return -1;
    return (int64_t) info.tcpi_bytes_received;
}

static void
s_untrack (fpx_intake_t *self, int fd)
{
    s_peer_t *peer = &self->peers [fd];
    if (!peer->tracked)
        return;
    int last = self->fds [--self->nfds];
    self->fds [peer->slot] = last;
    self->peers [last].slot = peer->slot;
    peer->tracked = false;
}

void
fpx_intake_accepted (fpx_intake_t *self, int fd, double now)
{
    if (fd < 0 || s_bytes_received (fd) < 0)
        return;
    if (fd >= self->capacity) {
        int capacity = fd * 2 + 64;
        s_peer_t *peers = realloc (self->peers, (size_t) capacity * sizeof *peers);
        int *fds = peers ? realloc (self->fds, (size_t) capacity * sizeof *fds) : NULL;
        if (peers)
            self->peers = peers;
        if (!fds)
            return;                //  not tracked: only this peer goes unchecked
        memset (self->peers + self->capacity, 0,
                (size_t) (capacity - self->capacity) * sizeof *self->peers);
        self->fds = fds;
        self->capacity = capacity;
    }
    s_untrack (self, fd);          //  a descriptor reused before its event
    self->peers [fd] = (s_peer_t) { .tracked = true, .slot = self->nfds, .since = now };
    self->fds [self->nfds++] = fd;
}

void
fpx_intake_closed (fpx_intake_t *self, int fd)
{
    if (fd >= 0 && fd < self->capacity)
        s_untrack (self, fd);
}

void
fpx_intake_received (fpx_intake_t *self, int fd, size_t bytes, int frames, bool authenticated)
{
    if (fd < 0 || fd >= self->capacity || !self->peers [fd].tracked)
        return;
    s_peer_t *peer = &self->peers [fd];
    peer->delivered += bytes;
    peer->frames += (uint64_t) frames;
    peer->authenticated |= authenticated;
}

long
fpx_intake_timeout_ms (fpx_intake_t *self, double now)
{
    if (!self->nfds)
        return -1;
    double wait = self->next_check - now;
    return wait <= 0 ? 0 : (long) (wait * 1000) + 1;
}

static void
s_cut (fpx_intake_t *self, int fd, const char *why, size_t cap)
{
    s_peer_t *peer = &self->peers [fd];
    char address [INET6_ADDRSTRLEN] = "?";
    struct sockaddr_storage addr;
    socklen_t size = sizeof addr;
    if (getpeername (fd, (struct sockaddr *) &addr, &size) == 0) {
        if (addr.ss_family == AF_INET)
            inet_ntop (AF_INET, &((struct sockaddr_in *) &addr)->sin_addr, address, sizeof address);
        else if (addr.ss_family == AF_INET6)
            inet_ntop (AF_INET6, &((struct sockaddr_in6 *) &addr)->sin6_addr, address, sizeof address);
    }
    fpx_log (FPX_LOG_WARN, "connection from %s cut: %llu MiB of a message still arriving, "
             "over %s (%zu MiB)", address, (unsigned long long) (peer->held >> 20), why, cap >> 20);
    //  libzmq owns the descriptor: shutting it down (not closing it) makes
    //  its engine see the end of the stream, drop the connection with what
    //  it buffered, and report DISCONNECTED.
    shutdown (fd, SHUT_RDWR);
    s_untrack (self, fd);
}

int
fpx_intake_check (fpx_intake_t *self, double now)
{
    if (now < self->next_check)
        return 0;
    self->next_check = now + FPX_INTAKE_PERIOD;
    int cut = 0;
    uint64_t unauthenticated = 0;
    for (size_t i = 0; i < self->nfds; ) {
        int fd = self->fds [i];
        s_peer_t *peer = &self->peers [fd];
        int64_t received = s_bytes_received (fd);
        uint64_t accounted = peer->delivered + peer->frames * S_FRAME_OVERHEAD;
        peer->held = received > 0 && (uint64_t) received > accounted
                   ? (uint64_t) received - accounted : 0;
        size_t cap = self->cap + (size_t) ((now - peer->since) * S_AGE_ALLOWANCE);
        if (peer->held > cap) {
            s_cut (self, fd, "the per-connection cap (2 x --max-message-mb + 16)", cap);
            cut++;
            continue;              //  slot i now holds another descriptor
        }
        if (!peer->authenticated)
            unauthenticated += peer->held;
        i++;
    }
    //  Over the shared budget: the unauthenticated connections holding
    //  the most go first.
    while (self->unauthenticated_cap && unauthenticated > self->unauthenticated_cap) {
        int worst = -1;
        for (size_t i = 0; i < self->nfds; i++) {
            s_peer_t *peer = &self->peers [self->fds [i]];
            if (!peer->authenticated && peer->held
            &&  (worst < 0 || peer->held > self->peers [worst].held))
                worst = self->fds [i];
        }
        if (worst < 0)
            break;
        unauthenticated -= self->peers [worst].held;
        s_cut (self, worst, "what unauthenticated connections may hold together "
               "(--max-unauthenticated-mb)", self->unauthenticated_cap);
        cut++;
    }
    return cut;
}
