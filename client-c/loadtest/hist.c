/*  hist.c — the log-linear latency histogram of fpx-loadtest (see
    loadtest.h for the bucket layout). Percentiles come from bucket
    counts, never from sorting samples, so recording is O(1) and the
    memory fixed whatever the run's length.                              */
#include <math.h>
#include <string.h>

#include "loadtest.h"

#define S_SUB      (1u << LT_HIST_SUB_BITS)          //  exact buckets below
#define S_HALF     (1u << (LT_HIST_SUB_BITS - 1))    //  buckets per octave above
#define S_TOP      ((UINT64_C (1) << LT_HIST_MAX_BITS) - 1)

#define S_LOAD(p)     __atomic_load_n ((p), __ATOMIC_RELAXED)
#define S_STORE(p, v) __atomic_store_n ((p), (v), __ATOMIC_RELAXED)

void
lt_hist_reset (lt_hist_t *self)
{
    memset (self, 0, sizeof *self);
}

int
lt_hist_index (uint64_t ns)
{
    if (ns > S_TOP)
        ns = S_TOP;
    if (ns < S_SUB)
        return (int) ns;
    int msb = 63 - __builtin_clzll (ns);
    int shift = msb - (LT_HIST_SUB_BITS - 1);         //  ns >> shift is in [S_HALF, S_SUB)
    return shift * (int) S_HALF + (int) (ns >> shift);
}

uint64_t
lt_hist_bucket_high (int index)
{
    if (index < (int) S_SUB)
        return (uint64_t) index;
    int shift = index / (int) S_HALF - 1;
    uint64_t mantissa = (uint64_t) (index % (int) S_HALF) + S_HALF;
    return ((mantissa + 1) << shift) - 1;
}

//  Only the client thread that owns the histogram records into it; the
//  relaxed stores let the progress line read it meanwhile.
void
lt_hist_record (lt_hist_t *self, uint64_t ns)
{
    int index = lt_hist_index (ns);
    S_STORE (&self->counts [index], S_LOAD (&self->counts [index]) + 1);
    S_STORE (&self->total, S_LOAD (&self->total) + 1);
    S_STORE (&self->sum_ns, S_LOAD (&self->sum_ns) + ns);
    if (ns > S_LOAD (&self->max_ns))
        S_STORE (&self->max_ns, ns);
}

void
lt_hist_merge (lt_hist_t *self, const lt_hist_t *from)
{
    for (int i = 0; i < LT_HIST_BUCKETS; i++)
        self->counts [i] += S_LOAD (&from->counts [i]);
    self->total += S_LOAD (&from->total);
    self->sum_ns += S_LOAD (&from->sum_ns);
    uint64_t max = S_LOAD (&from->max_ns);
    if (max > self->max_ns)
        self->max_ns = max;
}

uint64_t
lt_hist_quantile (const lt_hist_t *self, double q)
{
    if (self->total == 0)
        return 0;
    if (q < 0)
        q = 0;
    if (q > 1)
        q = 1;
    uint64_t target = (uint64_t) ceil (q * (double) self->total);
    if (target < 1)
        target = 1;
    uint64_t seen = 0;
    for (int i = 0; i < LT_HIST_BUCKETS; i++) {
        seen += self->counts [i];
        if (seen >= target) {
            uint64_t high = lt_hist_bucket_high (i);
            return high < self->max_ns ? high : self->max_ns;
        }
    }
    return self->max_ns;
}
