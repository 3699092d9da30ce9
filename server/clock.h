/*  clock.h — the daemon's clock and its wait on sockets (log.c).       */
#ifndef FPX_CLOCK_H_INCLUDED
#define FPX_CLOCK_H_INCLUDED

#include <zmq.h>

/*  Monotonic seconds.                                                   */
double fpx_monotonic_seconds (void);

/*  zmq_poll, after looking for events for up to spin_us µs without
    sleeping (--spin-us).                                                */
int fpx_poll (zmq_pollitem_t *items, int count, long timeout_ms, int spin_us);

#endif
