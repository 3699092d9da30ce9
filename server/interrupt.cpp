/*  interrupt.cpp — the deadline's faiss::InterruptCallback (interrupt.h).
    Kept apart from faiss_shim.cpp: it only reads a thread-local clock.  */
#include <faiss/impl/AuxIndexStructures.h>
#include <time.h>

#include "interrupt.h"

namespace {

thread_local double s_deadline = 0;
thread_local bool s_fired = false;

double
s_now ()
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec * 1e-9;
}

struct DeadlineCallback : faiss::InterruptCallback {
    bool want_interrupt () override
    {
        if (s_deadline <= 0 || s_now () < s_deadline)
            return false;
        s_fired = true;
        return true;
    }
};

}

extern "C" void
fpx_interrupt_install (void)
{
    if (!faiss::InterruptCallback::instance)
        faiss::InterruptCallback::instance.reset (new DeadlineCallback ());
}

extern "C" void
fpx_interrupt_arm (double deadline)
{
    s_deadline = deadline;
    if (deadline > 0)
        s_fired = false;
}

extern "C" bool
fpx_interrupt_fired (void)
{
    return s_fired;
}
