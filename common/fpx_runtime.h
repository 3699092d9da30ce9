/*  fpx_runtime.h — faissproxyd's runtime settings for FAISS, in one place:
    the daemon applies them, and fpx-loadtest's in-process baseline applies
    the very same ones, so that remote and in-process differ by the trip
    to the server and nothing else. It lives in common/, which the
    daemon and the load harness both build, so that neither reaches
    into the other's private files.                                     */
#ifndef FPX_RUNTIME_H_INCLUDED
#define FPX_RUNTIME_H_INCLUDED

#include <stdint.h>

/*  Sets what the environment does not say already (OMP_WAIT_POLICY=PASSIVE,
    glibc.malloc.hugetlb=1 and glibc.malloc.mmap_threshold=4194304 in
    GLIBC_TUNABLES) and re-executes the program
    once with argv; returns only if nothing was set or exec failed. Call
    first thing in main.                                                 */
void fpx_runtime_defaults (char **argv);

/*  Multiply-adds below which a call runs on one thread: about a
    millisecond of one core's exhaustive scan, a few hundred microseconds
    through BLAS.                                                        */
#define FPX_RUNTIME_PARALLEL_MIN 4e6

/*  The thread budget of one FAISS call when `active` calls (this one
    included) run now on `ncores` cores: ncores / active, at least 1, and
    no more than work_items (when > 0). work_bound (when > 0) is an upper
    bound of the call's multiply-adds (a search: queries x ntotal x d, what
    an exhaustive scan costs); under FPX_RUNTIME_PARALLEL_MIN the budget is
    1. Sets it for OpenMP and OpenBLAS on the calling thread; returns it. */
int fpx_runtime_threads (int ncores, int active, int64_t work_items, double work_bound);

#endif
