/*  metrics.c — counters fed by the broker and the workers, rendered as the
    Prometheus text format or JSON (metrics.h). Feeding must stay a few
    relaxed atomic adds: it runs once per request on the hot path.
    Rendering runs on the metrics thread, and the info reply's parts on a
    worker; neither may lock anything the hot path holds for long, nor
    call FAISS: they read the counters, the usage tenant_limits.c keeps
    and the charged sizes of named entries.
*/
#include <assert.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "budget.h"
#include "clock.h"
#include "metrics_http.h"
#include "tenant_limits.h"
#include "worker.h"

#define S_OPCODES   (FPX_OP_LAST_)      //  slot 0: an opcode we do not know
#define S_STATUSES  32                  //  -status; the last: any other
#define S_BATCH_BUCKETS 9               //  sizes ≤ 1, 2, 4 … 256

//  Bucket bounds in µs; the implicit last bucket is +Inf.
static const double s_bounds_us [FPX_METRICS_BUCKETS] = {
    10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4,
    1e5, 2e5, 5e5, 1e6, 2e6, 5e6, 1e7, 2e7, 5e7, 1e8
};

typedef struct {
    atomic_uint_fast64_t buckets [FPX_METRICS_BUCKETS + 1];  //  not cumulative
    atomic_uint_fast64_t sum_us;
} s_histogram_t;

struct fpx_metrics_t {
    int ntenants;
    //  [ntenants + 1][S_OPCODES][S_STATUSES]; the last tenant: unknown
    atomic_uint_fast64_t *requests;
    //  [ntenants + 1][S_OPCODES]: per tenant, so that info can show a
    //  tenant its own latencies; the server's are their sum.
    s_histogram_t *latency;
    atomic_uint_fast64_t batches, batched, batch_sizes [S_BATCH_BUCKETS];
    atomic_size_t queued, inflight, connections;
};

fpx_metrics_t *
fpx_metrics_new (int ntenants)
{
    fpx_metrics_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->ntenants = ntenants;
    self->requests = calloc ((size_t) (ntenants + 1) * S_OPCODES * S_STATUSES,
                             sizeof *self->requests);
    self->latency = calloc ((size_t) (ntenants + 1) * S_OPCODES, sizeof *self->latency);
    if (!self->requests || !self->latency)
        fpx_metrics_destroy (&self);
    return self;
}

void
fpx_metrics_destroy (fpx_metrics_t **self_p)
{
    if (!*self_p)
        return;
    free ((*self_p)->requests);
    free ((*self_p)->latency);
    free (*self_p);
    *self_p = NULL;
}

static int
s_opcode_slot (int opcode)
{
    return opcode > 0 && opcode < S_OPCODES && fpx_opcode_name (opcode) ? opcode : 0;
}

static int
s_status_slot (int status)
{
    return status <= 0 && status > -(S_STATUSES - 1) ? -status : S_STATUSES - 1;
}

static const char *
s_opcode_label (int slot)
{
    return slot ? fpx_opcode_name (slot) : "unknown";
}

static const char *
s_status_label (int slot)
{
    return slot < S_STATUSES - 1 ? fpx_error_name (-slot) : "FPX_E?";
}

static atomic_uint_fast64_t *
s_requests (fpx_metrics_t *self, int tenant, int opcode_slot, int status_slot)
{
    size_t row = (size_t) tenant * S_OPCODES + (size_t) opcode_slot;
    return &self->requests [row * S_STATUSES + (size_t) status_slot];
}

void
fpx_metrics_request (fpx_metrics_t *self, int tenant, int opcode, int status, double seconds)
{
    if (!self)
        return;
    if (tenant < 0 || tenant >= self->ntenants)
        tenant = self->ntenants;
    int op = s_opcode_slot (opcode);
    atomic_fetch_add_explicit (s_requests (self, tenant, op, s_status_slot (status)), 1,
                               memory_order_relaxed);
    double us = seconds > 0 ? seconds * 1e6 : 0;
    int bucket = 0;
    while (bucket < FPX_METRICS_BUCKETS && us > s_bounds_us [bucket])
        bucket++;
    s_histogram_t *histogram = &self->latency [(size_t) tenant * S_OPCODES + (size_t) op];
    atomic_fetch_add_explicit (&histogram->buckets [bucket], 1, memory_order_relaxed);
    atomic_fetch_add_explicit (&histogram->sum_us, (uint_fast64_t) llround (us < 1e15 ? us : 1e15),
                               memory_order_relaxed);
}

void
fpx_metrics_batch (fpx_metrics_t *self, int size)
{
    if (!self || size < 1)
        return;
    int bucket = 0;
    while (bucket < S_BATCH_BUCKETS - 1 && size > (1 << bucket))
        bucket++;
    atomic_fetch_add_explicit (&self->batches, 1, memory_order_relaxed);
    atomic_fetch_add_explicit (&self->batched, (uint_fast64_t) size, memory_order_relaxed);
    atomic_fetch_add_explicit (&self->batch_sizes [bucket], 1, memory_order_relaxed);
}

void
fpx_metrics_broker (fpx_metrics_t *self, size_t queued, size_t inflight, size_t connections)
{
    if (!self)
        return;
    atomic_store_explicit (&self->queued, queued, memory_order_relaxed);
    atomic_store_explicit (&self->inflight, inflight, memory_order_relaxed);
    atomic_store_explicit (&self->connections, connections, memory_order_relaxed);
}

// ---- rendering -------------------------------------------------------------

//  Output that stops growing at FPX_METRICS_OUTPUT_MAX (then failed).
typedef struct {
    char *data;
    size_t size, capacity;
    bool failed;
} s_out_t;

__attribute__ ((format (printf, 2, 3)))
static void
s_put (s_out_t *out, const char *format, ...)
{
    while (!out->failed) {
        va_list args;
        va_start (args, format);
        size_t room = out->capacity - out->size;
        int n = vsnprintf (out->data ? out->data + out->size : NULL, out->data ? room : 0,
                           format, args);
        va_end (args);
        if (n < 0) {
            out->failed = true;
            break;
        }
        if (out->data && (size_t) n < room) {
            out->size += (size_t) n;
            break;
        }
        size_t capacity = out->capacity ? out->capacity * 2 : 65536;
        while (capacity < out->size + (size_t) n + 1)
            capacity *= 2;
        char *grown = capacity <= FPX_METRICS_OUTPUT_MAX ? realloc (out->data, capacity) : NULL;
        if (!grown)
            out->failed = true;
        else {
            out->data = grown;
            out->capacity = capacity;
        }
    }
}

//  A label value (Prometheus: \\, \" and \n escaped) or a JSON string's
//  content (also every other control character), written into text.
static const char *
s_escape (char *text, size_t size, const char *value, bool json)
{
    size_t at = 0;
    for (const unsigned char *c = (const unsigned char *) value; *c && at + 7 < size; c++) {
        if (*c == '\\' || *c == '"')
            text [at++] = '\\', text [at++] = (char) *c;
        else if (*c == '\n')
            text [at++] = '\\', text [at++] = 'n';
        else if (json && *c < 0x20)
            at += (size_t) snprintf (text + at, size - at, "\\u%04x", *c);
        else
            text [at++] = (char) *c;
    }
    text [at] = 0;
    return text;
}

static const char *
s_tenant_name (fpx_server_t *server, int tenant)
{
    return tenant < server->config.ntenants ? server->config.tenants [tenant] : "";
}

//  The bucket counts of an opcode (not cumulative) of one tenant (< 0:
//  every tenant and the unauthenticated, summed), their total and (when
//  sum_us is not NULL) the sum of their latencies.
static uint64_t
s_histogram_read (const fpx_metrics_t *self, int tenant, int op, uint64_t *counts,
                  uint64_t *sum_us)
{
    int first = tenant < 0 ? 0 : tenant, last = tenant < 0 ? self->ntenants : tenant;
    uint64_t total = 0, sum = 0;
    memset (counts, 0, (FPX_METRICS_BUCKETS + 1) * sizeof *counts);
    for (int t = first; t <= last; t++) {
        const s_histogram_t *histogram = &self->latency [(size_t) t * S_OPCODES + (size_t) op];
        for (int b = 0; b <= FPX_METRICS_BUCKETS; b++) {
            uint64_t n = atomic_load_explicit (&histogram->buckets [b], memory_order_relaxed);
            counts [b] += n;
            total += n;
        }
        sum += atomic_load_explicit (&histogram->sum_us, memory_order_relaxed);
    }
    if (sum_us)
        *sum_us = sum;
    return total;
}

//  The q-quantile in seconds, interpolated inside its bucket as
//  Prometheus's histogram_quantile does; the +Inf bucket gives its lower
//  bound.
static double
s_quantile (const uint64_t *counts, uint64_t total, double q)
{
    if (!total)
        return 0;
    double rank = q * (double) total, seen = 0;
    for (int b = 0; b < FPX_METRICS_BUCKETS; b++) {
        if (seen + (double) counts [b] >= rank && counts [b]) {
            double low = b ? s_bounds_us [b - 1] : 0;
            return (low + (s_bounds_us [b] - low) * (rank - seen) / (double) counts [b]) * 1e-6;
        }
        seen += (double) counts [b];
    }
    return s_bounds_us [FPX_METRICS_BUCKETS - 1] * 1e-6;
}

// ---- the info reply ---------------------------------------------------------

static int
s_info_tenant (const fpx_metrics_t *self, int tenant)
{
    return tenant < 0 || tenant > self->ntenants ? -1 : tenant;
}

void
fpx_metrics_pack_requests (fpx_metrics_t *self, int tenant, msgpack_packer *pk)
{
    if (!self) {
        msgpack_pack_map (pk, 0);
        return;
    }
    //  Read once, then packed: a map's size must match what follows it,
    //  and the counters move meanwhile.
    static_assert (S_OPCODES * S_STATUSES <= 4096, "counts fit the stack");
    uint64_t counts [S_OPCODES][S_STATUSES] = { { 0 } };
    int per_opcode [S_OPCODES] = { 0 }, opcodes = 0;
    tenant = s_info_tenant (self, tenant);
    int first = tenant < 0 ? 0 : tenant, last = tenant < 0 ? self->ntenants : tenant;
    for (int op = 0; op < S_OPCODES; op++) {
        for (int st = 0; st < S_STATUSES; st++) {
            for (int t = first; t <= last; t++)
                counts [op][st] += atomic_load_explicit (s_requests (self, t, op, st),
                                                         memory_order_relaxed);
            per_opcode [op] += counts [op][st] != 0;
        }
        opcodes += per_opcode [op] != 0;
    }
    msgpack_pack_map (pk, (size_t) opcodes);
    for (int op = 0; op < S_OPCODES; op++) {
        if (!per_opcode [op])
            continue;
        fpx_pack_str (pk, s_opcode_label (op));
        msgpack_pack_map (pk, (size_t) per_opcode [op]);
        for (int st = 0; st < S_STATUSES; st++)
            if (counts [op][st])
                fpx_pack_kv_int (pk, s_status_label (st), (int64_t) counts [op][st]);
    }
}

void
fpx_metrics_pack_latency (fpx_metrics_t *self, int tenant, msgpack_packer *pk)
{
    if (!self) {
        msgpack_pack_map (pk, 0);
        return;
    }
    uint64_t counts [S_OPCODES][FPX_METRICS_BUCKETS + 1], totals [S_OPCODES], sums [S_OPCODES];
    int opcodes = 0;
    tenant = s_info_tenant (self, tenant);
    for (int op = 0; op < S_OPCODES; op++) {
        totals [op] = s_histogram_read (self, tenant, op, counts [op], &sums [op]);
        opcodes += totals [op] != 0;
    }
    msgpack_pack_map (pk, (size_t) opcodes);
    for (int op = 0; op < S_OPCODES; op++) {
        if (!totals [op])
            continue;
        fpx_pack_str (pk, s_opcode_label (op));
        msgpack_pack_map (pk, 6);
        fpx_pack_kv_int (pk, "count", (int64_t) totals [op]);
        fpx_pack_kv_double (pk, "sum_s", (double) sums [op] * 1e-6);
        fpx_pack_kv_double (pk, "p50", s_quantile (counts [op], totals [op], 0.5));
        fpx_pack_kv_double (pk, "p90", s_quantile (counts [op], totals [op], 0.9));
        fpx_pack_kv_double (pk, "p99", s_quantile (counts [op], totals [op], 0.99));
        fpx_pack_kv_double (pk, "p999", s_quantile (counts [op], totals [op], 0.999));
    }
}

void
fpx_metrics_gauges (fpx_metrics_t *self, fpx_metrics_gauges_t *gauges)
{
    *gauges = (fpx_metrics_gauges_t) { 0 };
    if (!self)
        return;
    gauges->queued = atomic_load_explicit (&self->queued, memory_order_relaxed);
    gauges->inflight = atomic_load_explicit (&self->inflight, memory_order_relaxed);
    gauges->connections = atomic_load_explicit (&self->connections, memory_order_relaxed);
    gauges->batches = atomic_load_explicit (&self->batches, memory_order_relaxed);
    gauges->batched = atomic_load_explicit (&self->batched, memory_order_relaxed);
}

static void
s_text_header (s_out_t *out, const char *name, const char *type, const char *help)
{
    s_put (out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void
s_text_requests (s_out_t *out, fpx_server_t *server)
{
    fpx_metrics_t *self = server->metrics;
    s_text_header (out, "faissproxy_requests_total", "counter",
                   "Requests answered, by tenant (empty: not authenticated), opcode and status.");
    char tenant [3 * FPX_NAME_MAX];
    for (int t = 0; t <= self->ntenants; t++) {
        s_escape (tenant, sizeof tenant, s_tenant_name (server, t), false);
        for (int op = 0; op < S_OPCODES; op++)
            for (int st = 0; st < S_STATUSES; st++) {
                uint64_t n = atomic_load_explicit (s_requests (self, t, op, st), memory_order_relaxed);
                if (n)
                    s_put (out, "faissproxy_requests_total{tenant=\"%s\",opcode=\"%s\",status=\"%s\"} "
                           "%llu\n", tenant, s_opcode_label (op), s_status_label (st),
                           (unsigned long long) n);
            }
    }
    s_text_header (out, "faissproxy_request_duration_seconds", "histogram",
                   "Time from a request's arrival to its answer, by opcode.");
    for (int op = 0; op < S_OPCODES; op++) {
        uint64_t counts [FPX_METRICS_BUCKETS + 1], sum_us;
        uint64_t total = s_histogram_read (self, -1, op, counts, &sum_us);
        if (!total)
            continue;
        uint64_t cumulative = 0;
        for (int b = 0; b < FPX_METRICS_BUCKETS; b++) {
            cumulative += counts [b];
            s_put (out, "faissproxy_request_duration_seconds_bucket{opcode=\"%s\",le=\"%g\"} %llu\n",
                   s_opcode_label (op), s_bounds_us [b] * 1e-6, (unsigned long long) cumulative);
        }
        s_put (out, "faissproxy_request_duration_seconds_bucket{opcode=\"%s\",le=\"+Inf\"} %llu\n"
               "faissproxy_request_duration_seconds_sum{opcode=\"%s\"} %.6f\n"
               "faissproxy_request_duration_seconds_count{opcode=\"%s\"} %llu\n",
               s_opcode_label (op), (unsigned long long) total, s_opcode_label (op),
               (double) sum_us * 1e-6, s_opcode_label (op), (unsigned long long) total);
    }
}

static void
s_text_batches (s_out_t *out, fpx_metrics_t *self)
{
    s_text_header (out, "faissproxy_batch_size", "histogram",
                   "Searches answered by one batch job, sharing FAISS calls.");
    uint64_t cumulative = 0;
    for (int b = 0; b < S_BATCH_BUCKETS; b++) {
        cumulative += atomic_load_explicit (&self->batch_sizes [b], memory_order_relaxed);
        s_put (out, "faissproxy_batch_size_bucket{le=\"%d\"} %llu\n", 1 << b,
               (unsigned long long) cumulative);
    }
    //  Sizes past the last bound are counted in it (FPX_BATCH_MAX is 256).
    s_put (out, "faissproxy_batch_size_bucket{le=\"+Inf\"} %llu\n"
           "faissproxy_batch_size_sum %llu\nfaissproxy_batch_size_count %llu\n",
           (unsigned long long) cumulative, (unsigned long long) atomic_load (&self->batched),
           (unsigned long long) cumulative);
}

static void
s_text_gauge (s_out_t *out, const char *name, const char *help, double value)
{
    s_text_header (out, name, "gauge", help);
    s_put (out, "%s %.17g\n", name, value);
}

static void
s_text_tenants (s_out_t *out, fpx_server_t *server)
{
    static const struct { const char *name, *help; } figures [] = {
        { "faissproxy_tenant_indexes", "Indexes of the tenant, named and anonymous." },
        { "faissproxy_tenant_vectors", "Vectors in the tenant's indexes (ntotal)." },
        { "faissproxy_tenant_memory_bytes", "Serialized size of the tenant's indexes." },
        { "faissproxy_tenant_disk_bytes", "Snapshots and logs of the tenant's named indexes." },
    };
    char tenant [3 * FPX_NAME_MAX];
    for (int f = 0; f < 4; f++) {
        s_text_header (out, figures [f].name, "gauge", figures [f].help);
        for (int t = 0; t < server->config.ntenants; t++) {
            fpx_limits_usage_t usage;
            fpx_limits_usage (server->limits, (uint32_t) t, &usage);
            long long values [4] = { usage.indexes, usage.vectors, usage.bytes, usage.disk };
            s_put (out, "%s{tenant=\"%s\"} %lld\n", figures [f].name,
                   s_escape (tenant, sizeof tenant, server->config.tenants [t], false), values [f]);
        }
    }
}

//  Named entries that own their object (an alias is counted in its owner),
//  at most FPX_METRICS_INDEXES_MAX; *total_p: all named entries.
static long
s_indexes (fpx_server_t *server, fpx_entry_t ***entries_p, long *total_p)
{
    long count = server->registry ? fpx_registry_named (server->registry, entries_p) : -1;
    *total_p = count > 0 ? count : 0;
    return count;
}

static void
s_indexes_release (fpx_entry_t **entries, long count)
{
    for (long i = 0; i < count; i++)
        fpx_entry_release (&entries [i]);
    if (count >= 0)
        free (entries);
}

static bool
s_index_listed (fpx_entry_t *entry)
{
    return fpx_entry_owner (entry) == entry;
}

static void
s_text_indexes (s_out_t *out, fpx_server_t *server)
{
    fpx_entry_t **entries = NULL;
    long total, count = s_indexes (server, &entries, &total);
    s_text_gauge (out, "faissproxy_named_indexes", "Named indexes of every tenant.", (double) total);
    char tenant [3 * FPX_NAME_MAX], name [3 * FPX_NAME_MAX];
    for (int f = 0; f < 2; f++) {
        s_text_header (out, f ? "faissproxy_index_memory_bytes" : "faissproxy_index_vectors", "gauge",
                       f ? "Serialized size of a named index (the first 1000 listed)."
                         : "Vectors in a named index, ntotal (the first 1000 listed).");
        for (long i = 0, listed = 0; i < count && listed < FPX_METRICS_INDEXES_MAX; i++) {
            if (!s_index_listed (entries [i]))
                continue;
            listed++;
            long long value = f ? fpx_entry_charged_bytes (entries [i])
                                : fpx_entry_charged_vectors (entries [i]);
            s_put (out, "%s{tenant=\"%s\",index=\"%s\"} %lld\n",
                   f ? "faissproxy_index_memory_bytes" : "faissproxy_index_vectors",
                   s_escape (tenant, sizeof tenant,
                             s_tenant_name (server, (int) fpx_entry_tenant (entries [i])), false),
                   s_escape (name, sizeof name, fpx_entry_name (entries [i]), false), value);
        }
    }
    s_indexes_release (entries, count);
}

//  The memory budget (budget.h): only with --memory-budget-mb.
static void
s_text_budget (s_out_t *out, fpx_server_t *server)
{
    fpx_budget_stats_t stats;
    fpx_budget_stats (server->budget, &stats);
    if (!stats.budget)
        return;
    s_text_gauge (out, "faissproxy_memory_budget_bytes", "--memory-budget-mb, in bytes.",
                  (double) stats.budget);
    s_text_gauge (out, "faissproxy_loaded_index_bytes", "Serialized size of the indexes in "
                  "memory (what the budget counts).", (double) stats.loaded_bytes);
    static const char *names [] = { "faissproxy_index_evictions_total",
                                    "faissproxy_index_loads_total",
                                    "faissproxy_index_load_failures_total",
                                    "faissproxy_index_eviction_seconds_total",
                                    "faissproxy_index_load_seconds_total" };
    static const char *helps [] = { "Named indexes evicted under the memory budget.",
                                    "Evicted indexes loaded back for a request.",
                                    "Loads of evicted indexes that failed (FPX_EIO, FPX_EDAMAGED).",
                                    "Time spent evicting (snapshot and free).",
                                    "Time spent loading evicted indexes back." };
    double values [] = { (double) stats.evictions, (double) stats.loads,
                         (double) stats.load_failures, stats.evict_seconds, stats.load_seconds };
    for (int i = 0; i < 5; i++) {
        s_text_header (out, names [i], "counter", helps [i]);
        s_put (out, "%s %.17g\n", names [i], values [i]);
    }
}

static void
s_render_text (s_out_t *out, fpx_server_t *server)
{
    fpx_metrics_t *self = server->metrics;
    s_text_gauge (out, "faissproxy_uptime_seconds", "Seconds since the server started.",
                  fpx_monotonic_seconds () - server->started_at);
    s_text_requests (out, server);
    s_text_batches (out, self);
    s_text_gauge (out, "faissproxy_queue_depth", "Jobs queued in the broker for a worker.",
                  (double) atomic_load (&self->queued));
    s_text_gauge (out, "faissproxy_requests_in_flight", "Requests admitted and not yet answered.",
                  (double) atomic_load (&self->inflight));
    s_text_gauge (out, "faissproxy_connections", "Client connections open.",
                  (double) atomic_load (&self->connections));
    s_text_gauge (out, "faissproxy_resident_memory_bytes", "Resident set size of the server.",
                  (double) fpx_limits_rss (server->limits));
    s_text_tenants (out, server);
    s_text_indexes (out, server);
    s_text_budget (out, server);
}

// ---- JSON --------------------------------------------------------------------

static void
s_json_requests (s_out_t *out, fpx_server_t *server)
{
    fpx_metrics_t *self = server->metrics;
    char tenant [6 * FPX_NAME_MAX + 8];
    const char *comma = "";
    s_put (out, "\"requests\":[");
    for (int t = 0; t <= self->ntenants; t++) {
        s_escape (tenant, sizeof tenant, s_tenant_name (server, t), true);
        for (int op = 0; op < S_OPCODES; op++)
            for (int st = 0; st < S_STATUSES; st++) {
                uint64_t n = atomic_load_explicit (s_requests (self, t, op, st), memory_order_relaxed);
                if (!n)
                    continue;
                s_put (out, "%s{\"tenant\":\"%s\",\"opcode\":\"%s\",\"status\":\"%s\",\"count\":%llu}",
                       comma, tenant, s_opcode_label (op), s_status_label (st),
                       (unsigned long long) n);
                comma = ",";
            }
    }
    s_put (out, "],\"latency\":[");
    comma = "";
    for (int op = 0; op < S_OPCODES; op++) {
        uint64_t counts [FPX_METRICS_BUCKETS + 1], sum_us;
        uint64_t total = s_histogram_read (self, -1, op, counts, &sum_us);
        if (!total)
            continue;
        s_put (out, "%s{\"opcode\":\"%s\",\"count\":%llu,\"sum_seconds\":%.6f,\"p50\":%.9f,"
               "\"p90\":%.9f,\"p99\":%.9f,\"buckets\":[", comma, s_opcode_label (op),
               (unsigned long long) total, (double) sum_us * 1e-6,
               s_quantile (counts, total, 0.5), s_quantile (counts, total, 0.9),
               s_quantile (counts, total, 0.99));
        for (int b = 0; b <= FPX_METRICS_BUCKETS; b++)
            s_put (out, "%s%llu", b ? "," : "", (unsigned long long) counts [b]);
        s_put (out, "]}");
        comma = ",";
    }
    s_put (out, "],\"bucket_bounds_seconds\":[");
    for (int b = 0; b < FPX_METRICS_BUCKETS; b++)
        s_put (out, "%s%g", b ? "," : "", s_bounds_us [b] * 1e-6);
    s_put (out, "]");
}

static void
s_json_usage (s_out_t *out, fpx_server_t *server)
{
    char tenant [6 * FPX_NAME_MAX + 8], name [6 * FPX_NAME_MAX + 8];
    s_put (out, ",\"tenants\":[");
    for (int t = 0; t < server->config.ntenants; t++) {
        fpx_limits_usage_t usage;
        fpx_limits_usage (server->limits, (uint32_t) t, &usage);
        s_put (out, "%s{\"tenant\":\"%s\",\"indexes\":%lld,\"vectors\":%lld,\"memory_bytes\":%lld,"
               "\"disk_bytes\":%lld}", t ? "," : "",
               s_escape (tenant, sizeof tenant, server->config.tenants [t], true),
               usage.indexes, usage.vectors, usage.bytes, usage.disk);
    }
    fpx_entry_t **entries = NULL;
    long total, count = s_indexes (server, &entries, &total);
    s_put (out, "],\"named_indexes\":%ld,\"indexes\":[", total);
    for (long i = 0, listed = 0; i < count && listed < FPX_METRICS_INDEXES_MAX; i++) {
        if (!s_index_listed (entries [i]))
            continue;
        s_put (out, "%s{\"tenant\":\"%s\",\"index\":\"%s\",\"vectors\":%lld,\"memory_bytes\":%lld}",
               listed++ ? "," : "",
               s_escape (tenant, sizeof tenant,
                         s_tenant_name (server, (int) fpx_entry_tenant (entries [i])), true),
               s_escape (name, sizeof name, fpx_entry_name (entries [i]), true),
               (long long) fpx_entry_charged_vectors (entries [i]),
               (long long) fpx_entry_charged_bytes (entries [i]));
    }
    s_indexes_release (entries, count);
    s_put (out, "]");
}

static void
s_render_json (s_out_t *out, fpx_server_t *server)
{
    fpx_metrics_t *self = server->metrics;
    s_put (out, "{\"uptime_seconds\":%.3f,\"queue_depth\":%zu,\"requests_in_flight\":%zu,"
           "\"connections\":%zu,\"resident_memory_bytes\":%zu,\"batches\":%llu,"
           "\"batched_requests\":%llu,", fpx_monotonic_seconds () - server->started_at,
           (size_t) atomic_load (&self->queued), (size_t) atomic_load (&self->inflight),
           (size_t) atomic_load (&self->connections), fpx_limits_rss (server->limits),
           (unsigned long long) atomic_load (&self->batches),
           (unsigned long long) atomic_load (&self->batched));
    s_json_requests (out, server);
    s_json_usage (out, server);
    fpx_budget_stats_t stats;
    fpx_budget_stats (server->budget, &stats);
    s_put (out, ",\"memory_budget_bytes\":%zu,\"loaded_index_bytes\":%lld,\"index_evictions\":%llu,"
           "\"index_loads\":%llu,\"index_load_failures\":%llu,\"index_eviction_seconds\":%.6f,"
           "\"index_load_seconds\":%.6f", stats.budget, stats.loaded_bytes,
           (unsigned long long) stats.evictions, (unsigned long long) stats.loads,
           (unsigned long long) stats.load_failures, stats.evict_seconds, stats.load_seconds);
    s_put (out, "}\n");
}

char *
fpx_metrics_render (fpx_server_t *server, bool json, size_t *size_p)
{
    if (!server->metrics)
        return NULL;
    s_out_t out = { 0 };
    if (json)
        s_render_json (&out, server);
    else
        s_render_text (&out, server);
    if (out.failed) {
        free (out.data);
        return NULL;
    }
    *size_p = out.size;
    return out.data;
}
