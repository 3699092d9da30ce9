/*  awake.c — --keep-awake: one spinning thread per core at SCHED_IDLE
    priority for the timed runs.

    A SCHED_IDLE thread runs only when nothing else wants the core, and
    gives it up at once when something does, so it takes no time from the
    workload; but the core never goes idle. On a virtual machine an idle
    vCPU halts and exits to the hypervisor, and the next thread woken on it
    waits for the host to run that vCPU again: tens to hundreds of
    microseconds a wake-up, paid at each hop of a request that finds a
    core idle. Comparing a run with and without this option tells how
    much of the latency measured is that wake-up and not faissproxy.    */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "loadtest.h"

#define S_AWAKE_MAX 256

static atomic_bool s_stop;
static pthread_t s_threads [S_AWAKE_MAX];
static int s_count;

static void *
s_spin (void *arg)
{
    (void) arg;
    struct sched_param param = { 0 };
    int rc = pthread_setschedparam (pthread_self (), SCHED_IDLE, &param);
    if (rc) {
        fprintf (stderr, "fpx-loadtest: --keep-awake: SCHED_IDLE: %s\n", strerror (rc));
        return NULL;
    }
    while (!atomic_load_explicit (&s_stop, memory_order_relaxed))
        ;
    return NULL;
}

int
lt_awake_start (void)
{
    long cores = sysconf (_SC_NPROCESSORS_ONLN);
    if (cores < 1)
        cores = 1;
    if (cores > S_AWAKE_MAX)
        cores = S_AWAKE_MAX;
    atomic_store (&s_stop, false);
    for (s_count = 0; s_count < cores; s_count++)
        if (pthread_create (&s_threads [s_count], NULL, s_spin, NULL)) {
            lt_awake_stop ();
            fprintf (stderr, "fpx-loadtest: --keep-awake: cannot start a thread\n");
            return -1;
        }
    return 0;
}

void
lt_awake_stop (void)
{
    atomic_store (&s_stop, true);
    for (int i = 0; i < s_count; i++)
        pthread_join (s_threads [i], NULL);
    s_count = 0;
}
