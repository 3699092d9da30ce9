/*  fpx_runtime.c — see fpx_runtime.h.

    OpenMP's default wait policy keeps idle team threads spinning after
    each parallel region. In a server whose workers start teams
    concurrently, next to other processes, that spinning takes the cores
    the other requests need: idle threads should sleep.

    glibc's malloc maps its large blocks (FAISS's arrays: a Flat index's
    vectors) with 4 KiB pages by default, and an add that grows an index
    spent most of its time in page faults: with glibc.malloc.hugetlb=1 it
    madvises them for transparent huge pages, faulted and zeroed 2 MiB at a
    time (and searches take fewer TLB misses). A 1M x 128 bulk add went
    from about 700 to 1,200 MB/s.

    glibc also adapts its mmap threshold: once a large block is freed,
    blocks up to that size come from the heap, where freed ones stay
    cached in the process instead of going back to the system. In a
    server where tenants' indexes and uploads of tens of MiB come and go,
    that kept tens of MiB resident per worker after the indexes were
    dropped. glibc.malloc.mmap_threshold=4194304 fixes the threshold:
    every block of 4 MiB or more is its own mapping, returned when freed.

    libgomp and glibc read these before main runs: set what the operator
    did not, and start again, once.

    The thread budget: concurrent small searches run one thread each, a
    lone big batch gets every core; OpenBLAS (which FAISS uses from 20
    queries on) gets the same count: left at its default it runs even a
    32-query batch on every core and its idle threads spin. A call too
    small to gain from a second thread runs on one (work_bound): waking
    OpenMP's and OpenBLAS's pools and their spinning afterwards cost more.
    In pipelined tiny searches (64 in flight, d=32, 1k vectors, batched
    20-80 queries a call) one thread for those calls took the CPU time of
    a request, client and server, from about 23 to 18 microseconds.
*/
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fpx_runtime.h"

//  The OpenMP and OpenBLAS entry points, declared here so that this file
//  compiles without -fopenmp; OpenBLAS's is weak, so that another BLAS
//  links too.
extern void omp_set_num_threads (int threads);
extern void openblas_set_num_threads (int threads) __attribute__ ((weak));

//  Ours, each added to GLIBC_TUNABLES unless the operator names it.
static const char *s_malloc_tunables [][2] = {
    { "glibc.malloc.hugetlb", "1" },
    { "glibc.malloc.mmap_threshold", "4194304" },
};

//  Adds ours to GLIBC_TUNABLES; true if it added any.
static bool
s_malloc_defaults (void)
{
    const char *have = getenv ("GLIBC_TUNABLES");
    char value [2048];
    int len = snprintf (value, sizeof value, "%s", have ? have : "");
    bool added = false;
    for (size_t i = 0; i < sizeof s_malloc_tunables / sizeof s_malloc_tunables [0]; i++) {
        char name [64];
        snprintf (name, sizeof name, "%s=", s_malloc_tunables [i][0]);
        if (have && strstr (have, name))
            continue;                   //  the operator's choice stands
        len += snprintf (value + len, sizeof value - (size_t) len, "%s%s%s", len ? ":" : "",
                         name, s_malloc_tunables [i][1]);
        if (len < 0 || (size_t) len >= sizeof value)
            return false;
        added = true;
    }
    return added && setenv ("GLIBC_TUNABLES", value, 1) == 0;
}

void
fpx_runtime_defaults (char **argv)
{
    bool changed = !getenv ("OMP_WAIT_POLICY") && setenv ("OMP_WAIT_POLICY", "PASSIVE", 1) == 0;
    changed |= s_malloc_defaults ();
    if (!changed)
        return;
    //  Through the binary's real path, so that the process keeps its name.
    char path [4096];
    ssize_t len = readlink ("/proc/self/exe", path, sizeof path - 1);
    if (len <= 0)
        return;
    path [len] = 0;
    execv (path, argv);
    //  Could not re-execute: run on with the defaults.
}

int
fpx_runtime_threads (int ncores, int active, int64_t work_items, double work_bound)
{
    int threads = ncores / (active < 1 ? 1 : active);
    if (threads < 1 || (work_bound > 0 && work_bound < FPX_RUNTIME_PARALLEL_MIN))
        threads = 1;
    if (work_items > 0 && work_items < threads)
        threads = (int) work_items;
    omp_set_num_threads (threads);
    if (openblas_set_num_threads)
        openblas_set_num_threads (threads);
    return threads;
}
