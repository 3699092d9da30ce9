/*  metrics.h — what faissproxyd counts about itself, for --metrics-bind.

    The broker and the workers feed the counters as requests end; the
    metrics thread (metrics_http.c) renders them, with the per-tenant usage
    of tenant_limits.h and the named indexes of the registry, as the
    Prometheus text format or as JSON for the dashboard.

    Counters: requests by tenant × opcode × status; a latency histogram per
    tenant and opcode (time from arrival to answer, FPX_METRICS_BUCKETS
    log-scale bounds; the scrape sums the tenants, info shows a tenant its
    own); batches and their sizes. Gauges the broker sets: queue depth,
    requests in flight, connections open.

    Thread-safe: every figure is a relaxed atomic; a feed costs a few
    atomic adds and never locks. A scrape reads figures one at a time, so
    two of them may be a request apart. Every feed accepts self == NULL
    (no metrics), so that code built without the daemon need not make one.
*/
#ifndef FPX_METRICS_H_INCLUDED
#define FPX_METRICS_H_INCLUDED

#include <msgpack.h>
#include <stddef.h>
#include <stdint.h>

typedef struct fpx_metrics_t fpx_metrics_t;

/*  Upper bounds of the latency buckets in µs (1-2-5 from 10 µs to 100 s),
    the last bucket being +Inf.                                          */
#define FPX_METRICS_BUCKETS   22
/*  Named indexes listed one by one in a scrape; the count covers all.   */
#define FPX_METRICS_INDEXES_MAX  1000
/*  Largest rendering; a scrape that would pass it fails (HTTP 503).     */
#define FPX_METRICS_OUTPUT_MAX   (16 << 20)

/*  Counters for ntenants tenants (ids 0 … ntenants-1; requests of no
    known tenant are counted apart). NULL when out of memory.            */
fpx_metrics_t *fpx_metrics_new (int ntenants);
void fpx_metrics_destroy (fpx_metrics_t **self_p);

/*  A request was answered: tenant id (< 0: not authenticated), opcode
    (any value; unknown ones are counted as one), status (0 or FPX_E…),
    seconds from its arrival to its answer.                              */
void fpx_metrics_request (fpx_metrics_t *self, int tenant, int opcode, int status,
                          double seconds);

/*  A batch of size searches was answered together.                      */
void fpx_metrics_batch (fpx_metrics_t *self, int size);

/*  The broker's figures: jobs queued, requests admitted and not yet
    answered, connections open.                                          */
void fpx_metrics_broker (fpx_metrics_t *self, size_t queued, size_t inflight, size_t connections);

/*  For the info reply (docs/PROTOCOL.md): packs into pk one value, a map
    opcode name → (status name → count) of the requests answered
    (_requests), or opcode name → {count, sum_s, p50, p90, p99, p999} of
    their latency in seconds, the percentiles interpolated in the
    histogram's buckets (_latency); for tenant, or every tenant with the
    unauthenticated requests (tenant < 0). Only what was counted is
    listed: at most FPX_OP_LAST_ opcodes × 32 statuses. self NULL: an
    empty map. Any thread.                                              */
void fpx_metrics_pack_requests (fpx_metrics_t *self, int tenant, msgpack_packer *pk);
void fpx_metrics_pack_latency (fpx_metrics_t *self, int tenant, msgpack_packer *pk);

/*  The broker's gauges and the batch counters, read now (zeros when
    self is NULL).                                                       */
typedef struct {
    size_t queued, inflight, connections;
    uint64_t batches;              //  batch jobs answered
    uint64_t batched;              //  searches those jobs answered
} fpx_metrics_gauges_t;
void fpx_metrics_gauges (fpx_metrics_t *self, fpx_metrics_gauges_t *gauges /* OUT */);

/*  fpx_metrics_render (metrics_http.h) renders them, with the usage and the
    named indexes, as the Prometheus text format or JSON.                 */

#endif
