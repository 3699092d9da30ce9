/*  fpx_shards.c — FAISS's IndexShards and IndexReplicas over indexes that
    live on several servers, assembled on the client (faissproxy.h,
    "shards and replicas").

    A group is a list of parts, each an index name on a client handle.
    Every call fans out at once: one thread per distinct handle (a handle
    serves one thread at a time, so parts that share a handle run one
    after the other in that thread; the caller's thread takes the first
    handle). Results are then put together exactly as FAISS 1.7.3 does
    (IndexShards.cpp, IndexReplicas.cpp): the same cut of an add, the same
    split of a replicated query batch, and merge_tables with FAISS's own
    heap (utils/Heap.h), so that ties break as they do in FAISS. Range
    search, which FAISS 1.7.3's groups lack, concatenates the parts'
    results per query in part order.

    This file must not touch sockets or the wire format: it calls the
    public API of fpx_client.c only.
*/
#include <float.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "faissproxy.h"
#include "fpx_protocol.h"           //  FPX_K_MAX, as fpx_search checks k

#define S_ERRMSG_MAX 512

struct _fpx_shards_t {
    int mode;                   //  FPX_SHARDS_*
    int nparts;
    fpx_client_t **clients;     //  borrowed, one per part
    char **names;               //  owned copies
    int *lane;                  //  part -> index of its handle among the distinct ones
    int nlanes;
    int checked;                //  parts described and found alike
    int d, metric;              //  of the parts, once checked
    int errcode;
    char errmsg [S_ERRMSG_MAX];
};

static int
s_fail (fpx_shards_t *self, int code, const char *format, ...)
{
    va_list args;
    va_start (args, format);
    vsnprintf (self->errmsg, sizeof self->errmsg, format, args);
    va_end (args);
    self->errcode = code;
    return code;
}

fpx_shards_t *
fpx_shards_new (fpx_client_t *const *clients, const char *const *names, int nparts, int mode)
{
    if (!clients || !names || nparts < 1 || nparts > FPX_SHARDS_MAX_PARTS
    ||  (mode != FPX_SHARDS_SUCCESSIVE_IDS && mode != FPX_SHARDS_BY_ID
         && mode != FPX_SHARDS_REPLICAS))
        return NULL;
    for (int i = 0; i < nparts; i++)
        if (!clients [i] || !names [i] || !*names [i] || strlen (names [i]) > FPX_INDEX_NAME_MAX)
            return NULL;
    fpx_shards_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->mode = mode;
    self->nparts = nparts;
    self->clients = calloc ((size_t) nparts, sizeof *self->clients);
    self->names = calloc ((size_t) nparts, sizeof *self->names);
    self->lane = calloc ((size_t) nparts, sizeof *self->lane);
    if (!self->clients || !self->names || !self->lane) {
        fpx_shards_destroy (&self);
        return NULL;
    }
    for (int i = 0; i < nparts; i++) {
        self->clients [i] = clients [i];
        if (!(self->names [i] = strdup (names [i]))) {
            fpx_shards_destroy (&self);
            return NULL;
        }
        //  Parts on one handle share its lane (nparts is small).
        int lane = self->nlanes;
        for (int j = 0; j < i; j++)
            if (clients [j] == clients [i]) {
                lane = self->lane [j];
                break;
            }
        if (lane == self->nlanes)
            self->nlanes++;
        self->lane [i] = lane;
    }
    return self;
}

void
fpx_shards_destroy (fpx_shards_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    fpx_shards_t *self = *self_p;
    if (self->names)
        for (int i = 0; i < self->nparts; i++)
            free (self->names [i]);
    free (self->names);
    free (self->clients);
    free (self->lane);
    free (self);
    *self_p = NULL;
}

const char *
fpx_shards_errmsg (fpx_shards_t *self)
{
    return self ? self->errmsg : "no shards handle";
}

int
fpx_shards_errcode (fpx_shards_t *self)
{
    return self ? self->errcode : FPX_EINVAL;
}

int
fpx_shards_count (fpx_shards_t *self)
{
    return self ? self->nparts : 0;
}


/* ---- the fan-out ----------------------------------------------------------- */

//  What one part does; returns 0 or a negative FPX_E… code (the message
//  then on the part's handle).
typedef int (s_part_fn_t) (fpx_shards_t *self, int part, void *arg);

typedef struct {
    fpx_shards_t *self;
    int lane;
    s_part_fn_t *fn;
    void *arg;
    const bool *wanted;         //  NULL: every part
    int *status;                //  per part
    char (*messages) [S_ERRMSG_MAX];
} s_lane_t;

static void *
s_lane_run (void *arg)
{
    s_lane_t *lane = arg;
    fpx_shards_t *self = lane->self;
    for (int p = 0; p < self->nparts; p++) {
        if (self->lane [p] != lane->lane || (lane->wanted && !lane->wanted [p]))
            continue;
        int rc = lane->fn (self, p, lane->arg);
        lane->status [p] = rc;
        if (rc < 0)
            snprintf (lane->messages [p], S_ERRMSG_MAX, "%s",
                      fpx_client_errmsg (self->clients [p]));
    }
    return NULL;
}

//  Runs fn on every (wanted) part, the lanes in parallel; returns 0, or
//  the failure of the first part (in part order) that failed, naming it.
static int
s_fan (fpx_shards_t *self, s_part_fn_t *fn, void *arg, const bool *wanted)
{
    int nlanes = self->nlanes;
    s_lane_t *lanes = calloc ((size_t) nlanes, sizeof *lanes);
    pthread_t *threads = calloc ((size_t) nlanes, sizeof *threads);
    bool *started = calloc ((size_t) nlanes, sizeof *started);
    int *status = calloc ((size_t) self->nparts, sizeof *status);
    char (*messages) [S_ERRMSG_MAX] = calloc ((size_t) self->nparts, sizeof *messages);
    int rc = 0;
    if (!lanes || !threads || !started || !status || !messages) {
        rc = s_fail (self, FPX_ENOMEM, "shards: out of memory");
        goto done;
    }
    for (int l = 0; l < nlanes; l++)
        lanes [l] = (s_lane_t) { self, l, fn, arg, wanted, status, messages };
    //  Lane 0 runs here; a lane whose thread cannot start runs here too.
    for (int l = 1; l < nlanes; l++)
        started [l] = pthread_create (&threads [l], NULL, s_lane_run, &lanes [l]) == 0;
    s_lane_run (&lanes [0]);
    for (int l = 1; l < nlanes; l++) {
        if (started [l])
            pthread_join (threads [l], NULL);
        else
            s_lane_run (&lanes [l]);
    }
    for (int p = 0; p < self->nparts; p++)
        if (status [p] < 0) {
            rc = s_fail (self, status [p], "%s %d (%s): %s",
                         self->mode == FPX_SHARDS_REPLICAS ? "replica" : "shard", p,
                         self->names [p], messages [p]);
            break;
        }
done:
    free (lanes);
    free (threads);
    free (started);
    free (status);
    free (messages);
    return rc;
}


/* ---- descriptions -------------------------------------------------------- */

typedef struct {
    fpx_index_info_t *infos;    //  per part
} s_describe_t;

static int
s_describe_part (fpx_shards_t *self, int part, void *arg)
{
    s_describe_t *job = arg;
    return fpx_index_describe (self->clients [part], self->names [part], 0, &job->infos [part]);
}

//  Every part's description (caller frees *infos_p); on the first call,
//  also checks what FAISS's groups check when a part joins.
static int
s_describe (fpx_shards_t *self, fpx_index_info_t **infos_p)
{
    s_describe_t job = { calloc ((size_t) self->nparts, sizeof (fpx_index_info_t)) };
    if (!job.infos)
        return s_fail (self, FPX_ENOMEM, "shards: out of memory");
    int rc = s_fan (self, s_describe_part, &job, NULL);
    if (rc == 0 && !self->checked) {
        const fpx_index_info_t *first = &job.infos [0];
        if (first->metric != FPX_METRIC_L2 && first->metric != FPX_METRIC_INNER_PRODUCT)
            rc = s_fail (self, FPX_EINVAL, "shards and replicas merge L2 or inner-product "
                                            "results only (part 0: %s)", first->name);
        for (int p = 1; rc == 0 && p < self->nparts; p++) {
            const fpx_index_info_t *info = &job.infos [p];
            if (info->d != first->d)
                rc = s_fail (self, FPX_EINVAL, "part %d (%s): dimension %d differs from "
                             "part 0's %d", p, self->names [p], info->d, first->d);
            else
            if (info->metric != first->metric || info->is_trained != first->is_trained)
                rc = s_fail (self, FPX_EINVAL, "part %d (%s): the metric or trained state "
                             "differs from part 0's", p, self->names [p]);
            else
            if (self->mode == FPX_SHARDS_REPLICAS && info->ntotal != first->ntotal)
                rc = s_fail (self, FPX_EINVAL, "replica %d (%s) holds %lld vectors, replica "
                             "0 %lld", p, self->names [p], (long long) info->ntotal,
                             (long long) first->ntotal);
        }
        if (rc == 0) {
            self->checked = 1;
            self->d = first->d;
            self->metric = first->metric;
        }
    }
    if (rc < 0) {
        free (job.infos);
        return rc;
    }
    *infos_p = job.infos;
    return 0;
}

int
fpx_shards_ntotal (fpx_shards_t *self, int64_t *ntotal /* OUT */)
{
    if (!self || !ntotal)
        return FPX_EINVAL;
    fpx_index_info_t *infos;
    int rc = s_describe (self, &infos);
    if (rc < 0)
        return rc;
    *ntotal = 0;
    for (int p = 0; p < self->nparts; p++)
        if (self->mode != FPX_SHARDS_REPLICAS || p == 0)
            *ntotal += infos [p].ntotal;
    free (infos);
    return 0;
}


/* ---- data in ----------------------------------------------------------------- */

typedef struct {
    int64_t n;
    int d;
    const float *x;
    const int64_t *ids;         //  NULL: add
} s_add_t;

static int
s_add_part (fpx_shards_t *self, int part, void *arg)
{
    s_add_t *job = arg;
    int64_t i0 = 0, i1 = job->n;
    if (self->mode != FPX_SHARDS_REPLICAS) {
        //  FAISS's IndexShards::add_with_ids: shard s gets rows
        //  [s n / nshard, (s + 1) n / nshard).
        i0 = (int64_t) part * job->n / self->nparts;
        i1 = ((int64_t) part + 1) * job->n / self->nparts;
    }
    if (i1 == i0)
        return 0;
    const float *x = job->x + i0 * job->d;
    if (job->ids)
        return fpx_add_with_ids (self->clients [part], self->names [part], i1 - i0, job->d, x,
                                 job->ids + i0, NULL);
    return fpx_add (self->clients [part], self->names [part], i1 - i0, job->d, x, NULL);
}

int
fpx_shards_add_with_ids (fpx_shards_t *self, int64_t n, int d, const float *x,
                         const int64_t *ids)
{
    if (!self)
        return FPX_EINVAL;
    if (n < 0 || d < 1 || (n > 0 && !x))
        return s_fail (self, FPX_EINVAL, "shards add: bad n, d or x");
    if (n > 0 && n > INT64_MAX / d)
        return s_fail (self, FPX_EINVAL, "shards add: n · d overflows");
    if (self->mode == FPX_SHARDS_SUCCESSIVE_IDS && ids)
        return s_fail (self, FPX_EFAISS, "Error: '!(successive_ids && xids)' failed: It makes "
                       "no sense to pass in ids and request them to be shifted");
    int64_t ntotal = 0;
    if (self->mode != FPX_SHARDS_REPLICAS || !self->checked) {
        int rc = fpx_shards_ntotal (self, &ntotal);
        if (rc < 0)
            return rc;
    }
    if (self->mode == FPX_SHARDS_SUCCESSIVE_IDS && ntotal != 0)
        return s_fail (self, FPX_EFAISS, "Error: 'this->ntotal == 0' failed: when adding to "
                       "IndexShards with sucessive_ids, only add() in a single pass is "
                       "supported");
    if (n == 0)
        return 0;
    int64_t *own_ids = NULL;
    if (self->mode == FPX_SHARDS_BY_ID && !ids) {
        //  FAISS: ids ntotal + i, so that every shard's ids are distinct.
        own_ids = malloc ((size_t) n * sizeof *own_ids);
        if (!own_ids)
            return s_fail (self, FPX_ENOMEM, "shards add: out of memory for %lld ids",
                           (long long) n);
        for (int64_t i = 0; i < n; i++)
            own_ids [i] = ntotal + i;
        ids = own_ids;
    }
    s_add_t job = { n, d, x, ids };
    int rc = s_fan (self, s_add_part, &job, NULL);
    free (own_ids);
    return rc;
}

int
fpx_shards_add (fpx_shards_t *self, int64_t n, int d, const float *x)
{
    return fpx_shards_add_with_ids (self, n, d, x, NULL);
}

typedef struct {
    int64_t n;
    int d;
    const float *x;
} s_train_t;

static int
s_train_part (fpx_shards_t *self, int part, void *arg)
{
    s_train_t *job = arg;
    return fpx_train (self->clients [part], self->names [part], job->n, job->d, job->x);
}

int
fpx_shards_train (fpx_shards_t *self, int64_t n, int d, const float *x)
{
    if (!self)
        return FPX_EINVAL;
    if (n < 0 || d < 1 || (n > 0 && !x))
        return s_fail (self, FPX_EINVAL, "shards train: bad n, d or x");
    s_train_t job = { n, d, x };
    return s_fan (self, s_train_part, &job, NULL);
}

static int
s_reset_part (fpx_shards_t *self, int part, void *arg)
{
    (void) arg;
    return fpx_reset (self->clients [part], self->names [part]);
}

int
fpx_shards_reset (fpx_shards_t *self)
{
    if (!self)
        return FPX_EINVAL;
    return s_fan (self, s_reset_part, NULL, NULL);
}


/* ---- search ---------------------------------------------------------------- */

//  FAISS's binary heap (utils/Heap.h, heap_push / heap_pop), 1-based,
//  over (distance, shard) pairs ordered by cmp2: with is_max (CMax) the
//  largest distance on top, ties to the highest shard; else (CMin) the
//  smallest, ties to the lowest.
static inline bool
s_cmp2 (bool is_max, float a1, float b1, int a2, int b2)
{
    if (is_max)
        return a1 > b1 || (a1 == b1 && a2 > b2);
    return a1 < b1 || (a1 == b1 && a2 < b2);
}

static void
s_heap_push (bool is_max, size_t k, float *val, int *ids, float v, int id)
{
    size_t i = k;
    while (i > 1) {
        size_t father = i >> 1;
        if (!s_cmp2 (is_max, v, val [father], id, ids [father]))
            break;
        val [i] = val [father];
        ids [i] = ids [father];
        i = father;
    }
    val [i] = v;
    ids [i] = id;
}

static void
s_heap_pop (bool is_max, size_t k, float *val, int *ids)
{
    float v = val [k];
    int id = ids [k];
    size_t i = 1;
    while (true) {
        size_t i1 = i << 1, i2 = i1 + 1;
        if (i1 > k)
            break;
        size_t child = (i2 == k + 1 || s_cmp2 (is_max, val [i1], val [i2], ids [i1], ids [i2]))
                     ? i1 : i2;
        if (s_cmp2 (is_max, v, val [child], id, ids [child]))
            break;
        val [i] = val [child];
        ids [i] = ids [child];
        i = child;
    }
    val [i] = val [k];
    ids [i] = ids [k];
}

//  FAISS 1.7.3's merge_tables (IndexShards.cpp): all_* hold nshard
//  tables of n·k; a shard's list ends at its first label -1; a row with
//  nothing left is filled with label -1 and C::neutral() (for L2, CMin:
//  the lowest float; else CMax: the highest).
static void
s_merge_tables (int64_t n, int k, int nshard, bool is_max, const float *all_distances,
                const int64_t *all_labels, const int64_t *translations,
                float *distances, int64_t *labels, int *pointer, int *heap_ids, float *heap_vals)
{
    int64_t stride = n * k;
    for (int64_t i = 0; i < n; i++) {
        const float *D_in = all_distances + i * k;
        const int64_t *I_in = all_labels + i * k;
        size_t heap_size = 0;
        for (int s = 0; s < nshard; s++) {
            pointer [s] = 0;
            if (I_in [stride * s] >= 0)
                s_heap_push (is_max, ++heap_size, heap_vals, heap_ids, D_in [stride * s], s);
        }
        float *D = distances + i * k;
        int64_t *I = labels + i * k;
        for (int j = 0; j < k; j++) {
            if (heap_size == 0) {
                I [j] = -1;
                D [j] = is_max ? FLT_MAX : -FLT_MAX;
                continue;
            }
            int s = heap_ids [1];
            int p = pointer [s];
            D [j] = heap_vals [1];
            I [j] = I_in [stride * s + p] + translations [s];
            s_heap_pop (is_max, heap_size--, heap_vals, heap_ids);
            pointer [s] = ++p;
            if (p < k && I_in [stride * s + p] >= 0)
                s_heap_push (is_max, ++heap_size, heap_vals, heap_ids,
                             D_in [stride * s + p], s);
        }
    }
}

typedef struct {
    int64_t nq;
    int d;
    const float *x;
    int k;
    const fpx_search_params_t *params;
    float *distances;           //  shards: nshard tables; replicas: the caller's
    int64_t *labels;
    int64_t *ntotal;            //  shards with successive ids: per part, after the search
    int64_t per;                //  replicas: queries per part
    fpx_range_result_t **ranges;    //  range search: per part
    float radius;
} s_search_t;

//  FAISS's IndexReplicas::search: replica i answers queries
//  [i q, min (nq, (i + 1) q)), q = ceil (nq / nreplicas).
static void
s_replica_slice (const s_search_t *job, int part, int64_t *q0, int64_t *q1)
{
    *q0 = (int64_t) part * job->per;
    *q1 = *q0 + job->per < job->nq ? *q0 + job->per : job->nq;
    if (*q0 > job->nq)
        *q0 = job->nq;
}

static int
s_search_part (fpx_shards_t *self, int part, void *arg)
{
    s_search_t *job = arg;
    fpx_client_t *client = self->clients [part];
    if (self->mode == FPX_SHARDS_REPLICAS) {
        int64_t q0, q1;
        s_replica_slice (job, part, &q0, &q1);
        if (q1 == q0)
            return 0;
        return fpx_search (client, self->names [part], q1 - q0, job->d, job->x + q0 * job->d,
                           job->k, job->params, job->distances + q0 * job->k,
                           job->labels + q0 * job->k);
    }
    int64_t table = job->nq * job->k * part;
    int rc = fpx_search (client, self->names [part], job->nq, job->d, job->x, job->k,
                         job->params, job->distances + table, job->labels + table);
    if (rc == 0 && job->ntotal) {
        fpx_index_info_t info;
        if ((rc = fpx_index_describe (client, self->names [part], 0, &info)) == 0)
            job->ntotal [part] = info.ntotal;
    }
    return rc;
}

//  The checks of a search's arguments; 0 or FPX_EINVAL.
static int
s_check_query (fpx_shards_t *self, const char *what, int64_t nq, int d, const float *x)
{
    if (nq < 0 || d < 1 || (nq > 0 && !x))
        return s_fail (self, FPX_EINVAL, "shards %s: bad nq, d or x", what);
    if (self->checked && d != self->d)
        return s_fail (self, FPX_EINVAL, "shards %s: d %d differs from the parts' %d",
                       what, d, self->d);
    return 0;
}

int
fpx_shards_search (fpx_shards_t *self, int64_t nq, int d, const float *x, int k,
                   const fpx_search_params_t *params, float *distances, int64_t *labels)
{
    if (!self)
        return FPX_EINVAL;
    int rc = s_check_query (self, "search", nq, d, x);
    if (rc < 0)
        return rc;
    if (k < 1 || k > FPX_K_MAX || (nq > 0 && (!distances || !labels)))
        return s_fail (self, FPX_EINVAL, "shards search: bad k, distances or labels");
    if (!self->checked) {
        fpx_index_info_t *infos;
        if ((rc = s_describe (self, &infos)) < 0)
            return rc;
        free (infos);
    }
    if (nq == 0)
        return 0;
    s_search_t job = { .nq = nq, .d = d, .x = x, .k = k, .params = params };
    if (self->mode == FPX_SHARDS_REPLICAS) {
        job.per = (nq + self->nparts - 1) / self->nparts;
        job.distances = distances;
        job.labels = labels;
        return s_fan (self, s_search_part, &job, NULL);
    }
    //  nshard tables of nq·k, as FAISS's IndexShards::search.
    if ((uint64_t) nq > (SIZE_MAX / sizeof (int64_t)) / (uint64_t) k / (uint64_t) self->nparts)
        return s_fail (self, FPX_ENOMEM, "shards search: nq · k · parts too large");
    size_t cells = (size_t) nq * (size_t) k * (size_t) self->nparts;
    job.distances = malloc (cells * sizeof (float));
    job.labels = malloc (cells * sizeof (int64_t));
    job.ntotal = calloc ((size_t) self->nparts, sizeof (int64_t));
    int64_t *translations = calloc ((size_t) self->nparts, sizeof (int64_t));
    int *pointer = calloc ((size_t) self->nparts * 2 + 1, sizeof (int));
    float *heap_vals = calloc ((size_t) self->nparts + 1, sizeof (float));
    if (!job.distances || !job.labels || !job.ntotal || !translations || !pointer
    ||  !heap_vals)
        rc = s_fail (self, FPX_ENOMEM, "shards search: out of memory for %zu results", cells);
    else {
        if (self->mode == FPX_SHARDS_BY_ID) {
            free (job.ntotal);
            job.ntotal = NULL;
        }
        rc = s_fan (self, s_search_part, &job, NULL);
    }
    if (rc == 0) {
        for (int s = 0; job.ntotal && s + 1 < self->nparts; s++)
            translations [s + 1] = translations [s] + job.ntotal [s];
        s_merge_tables (nq, k, self->nparts, self->metric != FPX_METRIC_L2, job.distances,
                        job.labels, translations, distances, labels, pointer,
                        pointer + self->nparts, heap_vals);
    }
    free (job.distances);
    free (job.labels);
    free (job.ntotal);
    free (translations);
    free (pointer);
    free (heap_vals);
    return rc;
}

static int
s_range_part (fpx_shards_t *self, int part, void *arg)
{
    s_search_t *job = arg;
    fpx_client_t *client = self->clients [part];
    int64_t q0 = 0, q1 = job->nq;
    if (self->mode == FPX_SHARDS_REPLICAS)
        s_replica_slice (job, part, &q0, &q1);
    if (q1 == q0)
        return 0;
    int rc = fpx_range_search (client, self->names [part], q1 - q0, job->d,
                               job->x + q0 * job->d, job->radius, job->params,
                               &job->ranges [part]);
    if (rc == 0 && job->ntotal) {
        fpx_index_info_t info;
        if ((rc = fpx_index_describe (client, self->names [part], 0, &info)) == 0)
            job->ntotal [part] = info.ntotal;
    }
    return rc;
}

//  Count of part p's results for query q (0 when p does not answer q).
static uint64_t
s_range_count (const fpx_shards_t *self, const s_search_t *job, int p, int64_t q)
{
    const fpx_range_result_t *r = job->ranges [p];
    if (!r)
        return 0;
    int64_t q0 = 0, q1 = job->nq;
    if (self->mode == FPX_SHARDS_REPLICAS)
        s_replica_slice (job, p, &q0, &q1);
    if (q < q0 || q >= q1)
        return 0;
    return r->lims [q - q0 + 1] - r->lims [q - q0];
}

//  One result: per query, the parts' results in part order, ids
//  translated as search translates them.
static int
s_range_merge (fpx_shards_t *self, s_search_t *job, const int64_t *translations,
               fpx_range_result_t **result_p)
{
    uint64_t total = 0;
    for (int p = 0; p < self->nparts; p++)
        if (job->ranges [p])
            total += job->ranges [p]->lims [job->ranges [p]->nq];
    fpx_range_result_t *result = calloc (1, sizeof *result);
    if (!result)
        return s_fail (self, FPX_ENOMEM, "shards range search: out of memory");
    result->nq = job->nq;
    result->lims = calloc ((size_t) job->nq + 1, sizeof (uint64_t));
    result->distances = malloc ((size_t) (total ? total : 1) * sizeof (float));
    result->labels = malloc ((size_t) (total ? total : 1) * sizeof (int64_t));
    if (!result->lims || !result->distances || !result->labels) {
        fpx_range_result_destroy (&result);
        return s_fail (self, FPX_ENOMEM, "shards range search: out of memory for %llu "
                       "results", (unsigned long long) total);
    }
    uint64_t at = 0;
    for (int64_t q = 0; q < job->nq; q++) {
        for (int p = 0; p < self->nparts; p++) {
            uint64_t count = s_range_count (self, job, p, q);
            if (count == 0)
                continue;
            const fpx_range_result_t *r = job->ranges [p];
            int64_t q0 = 0, q1;
            if (self->mode == FPX_SHARDS_REPLICAS)
                s_replica_slice (job, p, &q0, &q1);
            uint64_t from = r->lims [q - q0];
            memcpy (result->distances + at, r->distances + from, count * sizeof (float));
            for (uint64_t i = 0; i < count; i++) {
                int64_t label = r->labels [from + i];
                result->labels [at + i] = label >= 0 ? label + translations [p] : label;
            }
            at += count;
        }
        result->lims [q + 1] = at;
    }
    *result_p = result;
    return 0;
}

int
fpx_shards_range_search (fpx_shards_t *self, int64_t nq, int d, const float *x, float radius,
                         const fpx_search_params_t *params, fpx_range_result_t **result_p)
{
    if (!self)
        return FPX_EINVAL;
    if (!result_p)
        return s_fail (self, FPX_EINVAL, "shards range search: no result_p");
    *result_p = NULL;
    int rc = s_check_query (self, "range search", nq, d, x);
    if (rc < 0)
        return rc;
    if (!self->checked) {
        fpx_index_info_t *infos;
        if ((rc = s_describe (self, &infos)) < 0)
            return rc;
        free (infos);
    }
    s_search_t job = { .nq = nq, .d = d, .x = x, .params = params, .radius = radius };
    job.per = (nq + self->nparts - 1) / self->nparts;
    job.ranges = calloc ((size_t) self->nparts, sizeof *job.ranges);
    int64_t *translations = calloc ((size_t) self->nparts, sizeof (int64_t));
    if (self->mode == FPX_SHARDS_SUCCESSIVE_IDS)
        job.ntotal = calloc ((size_t) self->nparts, sizeof (int64_t));
    if (!job.ranges || !translations
    ||  (self->mode == FPX_SHARDS_SUCCESSIVE_IDS && !job.ntotal))
        rc = s_fail (self, FPX_ENOMEM, "shards range search: out of memory");
    else
    if (nq > 0)
        rc = s_fan (self, s_range_part, &job, NULL);
    if (rc == 0) {
        for (int s = 0; job.ntotal && s + 1 < self->nparts; s++)
            translations [s + 1] = translations [s] + job.ntotal [s];
        rc = s_range_merge (self, &job, translations, result_p);
    }
    for (int p = 0; job.ranges && p < self->nparts; p++)
        fpx_range_result_destroy (&job.ranges [p]);
    free (job.ranges);
    free (job.ntotal);
    free (translations);
    return rc;
}
