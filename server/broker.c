/*  broker.c — the load-balancing broker.

    Owns the public ROUTER (frontend), the inproc ROUTER to the workers
    (backend) and the frontend's monitor socket. For every request it reads
    the header, authenticates the key, enforces the frame and size limits,
    answers ping itself, and hands everything else to a free worker, or
    queues it (bounded) until one is free: workers announce readiness, so
    an expensive call never holds up cheap ones behind it.

    Batching: when a worker frees up and the next queued job is a small
    search, every queued search that asks the same thing of the same index
    (same tenant, byte-identical parameters) goes with it as one batch,
    answered by one FAISS call (fpx_batch_t, worker.h). Each wake reads
    every message already waiting before it hands out the queue, so
    searches that arrived together share a call and none waits for one
    that has not arrived: batching adds no latency.

    It must never call FAISS and never block: every socket operation here is
    non-blocking and every message is moved, not copied (zmq_msg_t frames
    keep their buffers when forwarded).

    Connections: each ROUTER peer is tracked by routing id with the file
    descriptor it arrived on (ZMQ_SRCFD). A DISCONNECTED monitor event for
    that descriptor means the client is gone: its anonymous indexes are
    reaped by a worker. Events are drained before a new peer is registered,
    so an event for an old connection is never applied to a new one that
    reuses its descriptor. The same events and the bytes of every message
    read feed the intake (intake.h), which closes connections whose
    unfinished message grows past its cap.
*/
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "auth.h"
#include "broker.h"
#include "clock.h"
#include "faiss_shim.h"
#include "intake.h"
#include "storage.h"
#include "tenant_limits.h"
#include "worker.h"

#define FPX_ROUTING_ID_MAX 256
#define FPX_READS_PER_WAKE 256      //  messages read per socket per wake
#define FPX_BATCH_SCAN     4096     //  queued jobs looked at for one batch
#define FPX_RECEIVE_HWM    256      //  whole messages buffered per peer
#define FPX_REFUSALS_HWM   1000     //  room for small error replies per peer

#define FPX_UNREAD_TRACKED 4096     //  reply frames from this size are tracked
#define FPX_RSS_PERIOD     0.005    //  seconds between two reads of the RSS

//  Reply bytes handed to libzmq for one connection and not yet written to
//  its socket: counted up by the broker, down by libzmq's I/O thread when
//  it frees a tracked frame. Shared by the connection and those frames.
typedef struct {
    atomic_size_t bytes;
    atomic_int refs;
} s_unread_t;

typedef struct s_conn_t {
    uint8_t rid [FPX_ROUTING_ID_MAX];
    size_t rid_len;
    uint64_t conn_id;
    int fd;
    bool may_own;                   //  sent a request that may leave it owning an object
    bool gone;                      //  forgotten; freed with its last request
    size_t inflight;                //  admitted, not yet answered
    s_unread_t *unread;
    struct s_conn_t *next;
} s_conn_t;

typedef struct s_job_t {
    fpx_envelope_t envelope;
    uint16_t opcode;
    zmq_msg_t frames [FPX_MAX_FRAMES + 1];   //  routing id + request
    int nframes;
    s_conn_t *conn;                 //  requests only
    double arrived;                 //  monotonic seconds
    struct s_job_t *next;
} s_job_t;

//  One tenant's queue (the last one holds internal jobs). Tenants with
//  queued jobs wait in a ring and are served round-robin, one job (or one
//  batch) each time a worker frees up.
typedef struct {
    s_job_t *head, *tail;
    size_t inflight;                //  queued + running requests
    bool in_ring;
} s_tenant_queue_t;

//  What a worker is running: whose requests, to release when it answers.
typedef struct {
    uint32_t tenant;
    int count;
    s_conn_t *conns [FPX_BATCH_MAX];
} s_running_t;

typedef struct {
    fpx_server_t *server;
    void *frontend, *backend, *monitor;
    uint32_t *free_workers;         //  stack of worker ids
    int nfree;
    fpx_batch_t **spare_batches;    //  one per worker, reused
    int nspare;
    s_tenant_queue_t *queues;       //  ntenants + 1
    uint32_t *ring;                 //  tenants with queued jobs, FIFO
    size_t ring_head, ring_count, nqueues;
    s_running_t *running;           //  one per worker
    size_t queued;
    size_t inflight;                //  requests admitted, not yet answered
    size_t connections;             //  accepted, not yet disconnected
    double now;                     //  monotonic seconds, read once a wake
    double rss_at;                  //  when rss was read
    size_t rss;
    s_conn_t **conns;               //  hash by routing id
    size_t nconn_buckets;
    s_conn_t **conn_by_fd;
    int fd_capacity;
    uint64_t next_conn_id;
    bool stopping;
    fpx_guard_t *guard;             //  slows down peers that fail authentication
    fpx_intake_t *intake;           //  bounds what peers' unfinished messages hold
    uint64_t refused;               //  failed handshakes / accepts not yet logged
    double refused_logged_at;
} s_broker_t;

static void
s_close_frames (zmq_msg_t *frames, int count)
{
    for (int i = 0; i < count; i++)
        zmq_msg_close (&frames [i]);
}

//  Sends count frames as one message; closes them whatever happens.
static void
s_send_frames (void *socket, zmq_msg_t *frames, int count)
{
    int i = 0;
    for (; i < count; i++)
        if (zmq_msg_send (&frames [i], socket,
                          ZMQ_DONTWAIT | (i + 1 < count ? ZMQ_SNDMORE : 0)) < 0)
            break;
    if (i < count) {
        fpx_log (FPX_LOG_WARN, "broker: dropped a message: %s", zmq_strerror (zmq_errno ()));
        s_close_frames (frames + i, count - i);
    }
}

static void
s_msg_from (zmq_msg_t *msg, const void *data, size_t size)
{
    zmq_msg_init_size (msg, size);
    if (size)
        memcpy (zmq_msg_data (msg), data, size);
}

void
fpx_pack_server_info (const fpx_server_t *server, msgpack_packer *pk)
{
    fpx_pack_kv_str (pk, "server_version", FPX_SERVER_VERSION);
    fpx_pack_kv_int (pk, "protocol_version", FPX_PROTOCOL_VERSION);
    fpx_pack_kv_str (pk, "faiss_version", fpx_shim_faiss_version ());
    fpx_pack_kv_bool (pk, "recovering", fpx_storage_recovering (server->storage, NULL));
}

//  Replies from the broker itself: an error, or the ping result; counted
//  for tenant (-1: none known) as answered at once.
static void
s_reply (s_broker_t *self, zmq_msg_t *rid, const fpx_header_t *request, int tenant,
         int status, const char *error)
{
    fpx_metrics_request (self->server->metrics, tenant, request->opcode, status, 0);
    fpx_header_t header = { .version = FPX_PROTOCOL_VERSION, .opcode = request->opcode,
                            .status = status, .request_id = request->request_id };
    uint8_t head [FPX_REPLY_HEADER_SIZE];
    fpx_header_encode_reply (&header, head);

    msgpack_sbuffer buffer;
    msgpack_sbuffer_init (&buffer);
    msgpack_packer pk;
    msgpack_packer_init (&pk, &buffer, msgpack_sbuffer_write);
    if (status) {
        msgpack_pack_map (&pk, 1);
        fpx_pack_kv_str (&pk, "error", error);
    }
    else {
        msgpack_pack_map (&pk, FPX_SERVER_INFO_KEYS);
        fpx_pack_server_info (self->server, &pk);
    }
    zmq_msg_t frames [3];
    zmq_msg_init (&frames [0]);
    zmq_msg_copy (&frames [0], rid);
    s_msg_from (&frames [1], head, sizeof head);
    s_msg_from (&frames [2], buffer.data, buffer.size);
    msgpack_sbuffer_destroy (&buffer);
    s_send_frames (self->frontend, frames, 3);
}

//  While the storage is loading indexes: fills text and returns true.
static bool
s_recovering (s_broker_t *self, char *text, size_t size)
{
    size_t loaded;
    if (!fpx_storage_recovering (self->server->storage, &loaded))
        return false;
    snprintf (text, size, "the server is recovering its indexes from disk (%zu loaded so "
              "far); the request did not run: send it again shortly", loaded);
    return true;
}

// ---- connections ---------------------------------------------------------

static size_t
s_rid_hash (const uint8_t *rid, size_t len, size_t nbuckets)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < len; i++)
        h = (h ^ rid [i]) * 1099511628211ull;
    return h & (nbuckets - 1);
}

static s_conn_t **
s_conn_slot (s_broker_t *self, const uint8_t *rid, size_t len)
{
    s_conn_t **slot = &self->conns [s_rid_hash (rid, len, self->nconn_buckets)];
    while (*slot && ((*slot)->rid_len != len || memcmp ((*slot)->rid, rid, len)))
        slot = &(*slot)->next;
    return slot;
}

static void
s_unread_release (s_unread_t *unread)
{
    if (unread && atomic_fetch_sub (&unread->refs, 1) == 1)
        free (unread);
}

static void
s_conn_free (s_conn_t *conn)
{
    s_unread_release (conn->unread);
    free (conn);
}

//  A request of conn was answered (or dropped).
static void
s_conn_done (s_conn_t *conn)
{
    if (conn && --conn->inflight == 0 && conn->gone)
        s_conn_free (conn);
}

//  Forgets a connection and, if it may own anonymous indexes, queues a
//  reap job for them. One with requests in flight is freed with the last.
static void s_enqueue (s_broker_t *self, s_job_t *job);

static void
s_conn_forget (s_broker_t *self, s_conn_t *conn)
{
    s_conn_t **slot = s_conn_slot (self, conn->rid, conn->rid_len);
    *slot = conn->next;
    if (conn->fd >= 0 && conn->fd < self->fd_capacity && self->conn_by_fd [conn->fd] == conn)
        self->conn_by_fd [conn->fd] = NULL;
    if (conn->may_own) {
        s_job_t *job = calloc (1, sizeof *job);
        if (job) {
            job->envelope = (fpx_envelope_t) { .kind = FPX_JOB_REAP, .conn_id = conn->conn_id };
            s_enqueue (self, job);
        }
        else
            fpx_log (FPX_LOG_ERROR, "broker: out of memory, connection %llu not reaped",
                     (unsigned long long) conn->conn_id);
    }
    fpx_log (FPX_LOG_DEBUG, "connection %llu closed", (unsigned long long) conn->conn_id);
    if (conn->inflight)
        conn->gone = true;
    else
        s_conn_free (conn);
}

//  A failed handshake (a plain client on a CURVE server, a wrong server
//  key, a bad greeting) or a failed accept (out of descriptors): WARN, one
//  line every 5 s at most, with the count since the last one.
static void
s_log_refused (s_broker_t *self, uint16_t kind, int32_t value, zmq_msg_t *address)
{
    self->refused++;
    double now = fpx_monotonic_seconds ();
    if (self->refused_logged_at && now - self->refused_logged_at < 5)
        return;
    if (kind == ZMQ_EVENT_ACCEPT_FAILED)
        fpx_log (FPX_LOG_WARN, "cannot accept a connection on %.*s: %s (%llu event(s) since the "
                 "last line)", (int) zmq_msg_size (address), (const char *) zmq_msg_data (address),
                 strerror (value), (unsigned long long) self->refused);
    else
        fpx_log (FPX_LOG_WARN, "handshake failed on %.*s: %s (%llu event(s) since the last "
                 "line)", (int) zmq_msg_size (address), (const char *) zmq_msg_data (address),
                 kind == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH ? "refused by the ZAP handler"
                 : self->server->config.curve ? "not a CURVE client with our server key"
                 : "bad ZeroMQ greeting", (unsigned long long) self->refused);
    self->refused_logged_at = now;
    self->refused = 0;
}

static void
s_monitor_drain (s_broker_t *self)
{
    while (true) {
        zmq_msg_t event, address;
        zmq_msg_init (&event);
        if (zmq_msg_recv (&event, self->monitor, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close (&event);
            return;
        }
        zmq_msg_init (&address);
        if (zmq_msg_more (&event))
            zmq_msg_recv (&address, self->monitor, 0);
        if (zmq_msg_size (&event) >= 6) {
            const uint8_t *data = zmq_msg_data (&event);
            uint16_t kind;
            int32_t fd;
            memcpy (&kind, data, 2);
            memcpy (&fd, data + 2, 4);
            if (kind == ZMQ_EVENT_ACCEPTED) {
                fpx_intake_accepted (self->intake, fd, fpx_monotonic_seconds ());
                self->connections++;
            }
            else if (kind == ZMQ_EVENT_DISCONNECTED) {
                if (self->connections)
                    self->connections--;
                fpx_intake_closed (self->intake, fd);
                if (fd >= 0 && fd < self->fd_capacity && self->conn_by_fd [fd])
                    s_conn_forget (self, self->conn_by_fd [fd]);
            }
            else
                s_log_refused (self, kind, fd, &address);
        }
        zmq_msg_close (&event);
        zmq_msg_close (&address);
    }
}

static s_conn_t *
s_conn_get (s_broker_t *self, zmq_msg_t *rid, zmq_msg_t *first)
{
    size_t len = zmq_msg_size (rid);
    if (len == 0 || len > FPX_ROUTING_ID_MAX)
        return NULL;
    s_conn_t *conn = *s_conn_slot (self, zmq_msg_data (rid), len);
    if (conn)
        return conn;
    s_monitor_drain (self);
    conn = calloc (1, sizeof *conn);
    if (conn && !(conn->unread = calloc (1, sizeof *conn->unread))) {
        free (conn);
        conn = NULL;
    }
    if (!conn)
        return NULL;
    atomic_init (&conn->unread->refs, 1);
    memcpy (conn->rid, zmq_msg_data (rid), len);
    conn->rid_len = len;
    conn->conn_id = self->next_conn_id++;
    conn->fd = zmq_msg_get (first, ZMQ_SRCFD);
    if (conn->fd >= 0) {
        if (conn->fd >= self->fd_capacity) {
            int capacity = conn->fd * 2 + 64;
            s_conn_t **grown = realloc (self->conn_by_fd, (size_t) capacity * sizeof *grown);
            if (!grown) {
                s_conn_free (conn);
                return NULL;
            }
            memset (grown + self->fd_capacity, 0,
                    (size_t) (capacity - self->fd_capacity) * sizeof *grown);
            self->conn_by_fd = grown;
            self->fd_capacity = capacity;
        }
        //  The descriptor can only be reused once the old connection is
        //  gone, whatever the order its event arrives in.
        if (self->conn_by_fd [conn->fd])
            s_conn_forget (self, self->conn_by_fd [conn->fd]);
        self->conn_by_fd [conn->fd] = conn;
    }
    s_conn_t **slot = s_conn_slot (self, conn->rid, len);
    *slot = conn;
    fpx_log (FPX_LOG_DEBUG, "connection %llu opened (fd %d)",
             (unsigned long long) conn->conn_id, conn->fd);
    return conn;
}

// ---- jobs ------------------------------------------------------------------

//  Index of the queue a job goes to: its tenant's, or the internal one.
static size_t
s_queue_of (s_broker_t *self, const s_job_t *job)
{
    return job->envelope.kind == FPX_JOB_REQUEST ? job->envelope.tenant_id : self->nqueues - 1;
}

static void
s_ring_push (s_broker_t *self, uint32_t queue)
{
    self->queues [queue].in_ring = true;
    self->ring [(self->ring_head + self->ring_count++) % self->nqueues] = queue;
}

static uint32_t
s_ring_pop (s_broker_t *self)
{
    uint32_t queue = self->ring [self->ring_head];
    self->ring_head = (self->ring_head + 1) % self->nqueues;
    self->ring_count--;
    self->queues [queue].in_ring = false;
    return queue;
}

//  A request left the broker's hands for good (answered by a worker or
//  the broker, or dropped): its tenant and connection may admit another.
static void
s_request_done (s_broker_t *self, uint32_t tenant, s_conn_t *conn)
{
    if (tenant < self->nqueues - 1 && self->queues [tenant].inflight) {
        self->queues [tenant].inflight--;
        self->inflight--;
    }
    s_conn_done (conn);
}

static void
s_dispatch (s_broker_t *self, s_job_t *job)
{
    uint32_t worker = self->free_workers [--self->nfree];
    s_running_t *running = &self->running [worker];
    running->tenant = job->envelope.tenant_id;
    running->count = job->envelope.kind == FPX_JOB_REQUEST ? 1 : 0;
    running->conns [0] = job->conn;
    zmq_msg_t head [2];
    s_msg_from (&head [0], &worker, sizeof worker);
    s_msg_from (&head [1], &job->envelope, sizeof job->envelope);
    if (job->nframes == 0) {
        //  An internal job: [worker][envelope].
        s_send_frames (self->backend, head, 2);
    }
    else {
        //  [worker][routing id][envelope][header][params][arrays…]
        zmq_msg_send (&head [0], self->backend, ZMQ_SNDMORE | ZMQ_DONTWAIT);
        zmq_msg_send (&job->frames [0], self->backend, ZMQ_SNDMORE | ZMQ_DONTWAIT);
        zmq_msg_send (&head [1], self->backend, ZMQ_SNDMORE | ZMQ_DONTWAIT);
        s_send_frames (self->backend, job->frames + 1, job->nframes - 1);
    }
    free (job);
}

//  Queues a job in its tenant's queue; the poll loop dispatches once it
//  has read every message waiting (s_dispatch_queued), so that searches
//  that arrived together can share a FAISS call without any of them
//  waiting for another.
static void
s_enqueue (s_broker_t *self, s_job_t *job)
{
    size_t index = s_queue_of (self, job);
    s_tenant_queue_t *queue = &self->queues [index];
    job->next = NULL;
    if (queue->tail)
        queue->tail->next = job;
    else
        queue->head = job;
    queue->tail = job;
    if (!queue->in_ring)
        s_ring_push (self, (uint32_t) index);
    if (job->envelope.kind == FPX_JOB_REQUEST) {
        queue->inflight++;
        self->inflight++;
        if (job->conn)
            job->conn->inflight++;
    }
    self->queued++;
}

//  Whether a job may join a batch: a search with one small query frame.
static bool
s_batchable (s_job_t *job)
{
    return job->nframes == 4 && job->opcode == FPX_OP_SEARCH
        && zmq_msg_size (&job->frames [3]) <= FPX_BATCH_QUERY_BYTES;
}

//  Whether job asks the same search as one of tenant with this parameters
//  frame: a batchable search, byte-identical parameters (name, k, d,
//  nprobe, efSearch).
static bool
s_asks_same (s_job_t *job, uint32_t tenant, zmq_msg_t *params)
{
    size_t size = zmq_msg_size (params);
    return job->envelope.tenant_id == tenant && s_batchable (job)
        && zmq_msg_size (&job->frames [2]) == size
        && memcmp (zmq_msg_data (&job->frames [2]), zmq_msg_data (params), size) == 0;
}

//  Moves job into the batch as item i and frees it.
static void
s_batch_take (fpx_batch_t *batch, int i, s_job_t *job)
{
    fpx_batch_item_t *item = &batch->items [i];
    item->conn_id = job->envelope.conn_id;
    item->arrived = job->arrived;
    for (int j = 0; j < 4; j++) {
        zmq_msg_init (&item->request [j]);
        zmq_msg_move (&item->request [j], &job->frames [j]);
    }
    free (job);
}

//  Whether conn's peer left --max-conn-unread-mb of replies unread.
static bool
s_unread_over (s_broker_t *self, const s_conn_t *conn)
{
    return conn && atomic_load_explicit (&conn->unread->bytes, memory_order_relaxed)
                   >= self->server->config.max_conn_unread;
}

//  Sends lead, a batchable search just taken off its tenant's queue, to
//  a free worker together with every search queued behind it (among the
//  first FPX_BATCH_SCAN) that can share its FAISS call, taken out of the
//  queue in order; other jobs keep their places. With none to share, lead
//  goes alone.
static void
s_dispatch_batch (s_broker_t *self, s_tenant_queue_t *queue, s_job_t *lead)
{
    fpx_batch_t *batch = self->spare_batches [self->nspare - 1];
    batch->tenant_id = lead->envelope.tenant_id;
    batch->count = 1;                   //  items [0] is the lead's, filled last
    uint32_t worker = self->free_workers [self->nfree - 1];
    s_running_t *running = &self->running [worker];
    size_t bytes = zmq_msg_size (&lead->frames [3]);
    s_job_t **link = &queue->head, *last = NULL;
    int scanned = 0;
    while (*link && batch->count < FPX_BATCH_MAX && scanned++ < FPX_BATCH_SCAN) {
        s_job_t *job = *link;
        size_t size = job->nframes == 4 ? zmq_msg_size (&job->frames [3]) : 0;
        if (s_asks_same (job, batch->tenant_id, &lead->frames [2])
        &&  bytes + size <= FPX_BATCH_BYTES && !s_unread_over (self, job->conn)) {
            bytes += size;
            *link = job->next;
            self->queued--;
            running->conns [batch->count] = job->conn;
            s_batch_take (batch, batch->count++, job);
        }
        else {
            last = job;
            link = &job->next;
        }
    }
    //  The tail was taken only if the scan reached the end: the last job
    //  kept is the tail then (none: the queue is empty).
    if (!*link)
        queue->tail = last;
    if (batch->count == 1) {
        s_dispatch (self, lead);
        return;
    }
    self->nfree--;
    self->nspare--;
    running->tenant = batch->tenant_id;
    running->count = batch->count;
    running->conns [0] = lead->conn;
    s_batch_take (batch, 0, lead);
    fpx_envelope_t envelope = { .kind = FPX_JOB_BATCH, .tenant_id = batch->tenant_id,
                                .batch = batch };
    atomic_store_explicit (&batch->at_worker, 1, memory_order_release);
    zmq_msg_t head [2];
    s_msg_from (&head [0], &worker, sizeof worker);
    s_msg_from (&head [1], &envelope, sizeof envelope);
    s_send_frames (self->backend, head, 2);
}

//  Answers a request the broker will not run; takes ownership of job.
static void s_refuse (s_broker_t *self, s_job_t *job, int status, const char *error);

//  A request of a peer that has not read its replies: not run.
static void
s_refuse_unread (s_broker_t *self, s_job_t *job)
{
    char text [160];
    snprintf (text, sizeof text, "this connection has not read %zu MiB of replies "
              "(--max-conn-unread-mb %zu); the request did not run",
              atomic_load (&job->conn->unread->bytes) >> 20,
              self->server->config.max_conn_unread >> 20);
    s_refuse (self, job, FPX_EBUSY, text);
}

//  Whether job waited in its queue past its deadline (answered if so).
static bool
s_expired (s_broker_t *self, s_job_t *job)
{
    if (job->envelope.deadline <= 0 || self->now < job->envelope.deadline)
        return false;
    char text [160];
    snprintf (text, sizeof text, "deadline of %lld ms passed before the request started; "
              "it did not run", (long long) job->envelope.deadline_ms);
    s_refuse (self, job, FPX_ETIMEDOUT, text);
    return true;
}

//  While a worker is free: the next tenant in the ring gets its oldest
//  job run (with the searches that can share its call), then goes to the
//  back of the ring if it has more.
static void
s_dispatch_queued (s_broker_t *self)
{
    while (self->nfree > 0 && self->ring_count > 0) {
        uint32_t index = s_ring_pop (self);
        s_tenant_queue_t *queue = &self->queues [index];
        s_job_t *job = queue->head;
        queue->head = job->next;
        if (!queue->head)
            queue->tail = NULL;
        self->queued--;
        if (s_expired (self, job))
            ;
        else if (job->envelope.kind == FPX_JOB_REQUEST && s_unread_over (self, job->conn))
            s_refuse_unread (self, job);
        else if (self->nspare > 0 && s_batchable (job))
            s_dispatch_batch (self, queue, job);
        else
            s_dispatch (self, job);
        if (queue->head)
            s_ring_push (self, index);
    }
}

// ---- frontend --------------------------------------------------------------

//  The address a request came from, for logs and the guard: "IP" for TCP
//  (no port: one attacker opens many connections), "local" otherwise.
static void
s_peer_address (zmq_msg_t *frame, char *out, size_t size)
{
    const char *address = zmq_msg_gets (frame, "Peer-Address");
    snprintf (out, size, "%s", address && *address ? address : "local");
}

//  Tenant id of the request's key and its role, or -1. Only hashes are
//  kept: the key is hashed and compared with each in constant time
//  (sodium_memcmp), every entry looked at, so the time taken does not
//  depend on which key matched or where a wrong one differs.
static int
s_key_lookup (s_broker_t *self, const char *key, int *role)
{
    const fpx_config_t *config = &self->server->config;
    uint8_t hash [FPX_KEY_HASH_SIZE];
    fpx_auth_hash_key (key, strnlen (key, FPX_API_KEY_MAX), hash);
    int tenant = -1;
    for (int i = 0; i < config->nkeys; i++)
        if (sodium_memcmp (hash, config->keys [i].hash, FPX_KEY_HASH_SIZE) == 0 && key [0]) {
            tenant = (int) config->keys [i].tenant_id;
            *role = config->keys [i].role;
        }
    return tenant;
}

#define S_HELD (-2)

//  Authenticates a request and checks its key's role against its opcode.
//  Returns the tenant id (the role goes into the job's envelope); -1 with
//  *rc and *error set; or S_HELD when the guard keeps the job (its peer
//  failed recently) until its delay is over.
static int
s_authenticate (s_broker_t *self, s_job_t *job, const fpx_header_t *header, bool guarded,
                size_t total, int *rc, const char **error, char *text, size_t text_size)
{
    char peer [64];
    s_peer_address (&job->frames [1], peer, sizeof peer);
    double now = fpx_monotonic_seconds ();
    if (guarded) {
        int held = fpx_guard_hold (self->guard, peer, now, job, total);
        if (held > 0)
            return S_HELD;
        if (held < 0) {
            *rc = FPX_EBUSY;
            *error = "too many failed authentications from this address; retry later";
            return -1;
        }
    }
    int role = 0, tenant = s_key_lookup (self, header->api_key, &role);
    if (tenant < 0) {
        fpx_guard_failed (self->guard, peer, now);
        *rc = FPX_EAUTH, *error = "invalid API key";
        return -1;
    }
    const char *opcode = fpx_opcode_name (header->opcode);
    if (opcode && role < fpx_auth_min_role (header->opcode)) {
        snprintf (text, text_size, "a key of role '%s' may not %s (it needs role '%s')",
                  fpx_auth_role_name (role), opcode,
                  fpx_auth_role_name (fpx_auth_min_role (header->opcode)));
        *rc = FPX_EPERM, *error = text;
        return -1;
    }
    job->envelope.role = role;
    return tenant;
}

static void
s_refuse (s_broker_t *self, s_job_t *job, int status, const char *error)
{
    fpx_header_t header;
    fpx_header_decode_request (&header, zmq_msg_data (&job->frames [1]),
                               zmq_msg_size (&job->frames [1]));
    s_reply (self, &job->frames [0], &header, (int) job->envelope.tenant_id, status, error);
    if (job->envelope.kind == FPX_JOB_REQUEST)
        s_request_done (self, job->envelope.tenant_id, job->conn);
    s_close_frames (job->frames, job->nframes);
    free (job);
}

//  Resident size, read at most every FPX_RSS_PERIOD.
static size_t
s_rss (s_broker_t *self)
{
    if (self->now - self->rss_at >= FPX_RSS_PERIOD) {
        self->rss = fpx_limits_rss (self->server->limits);
        self->rss_at = self->now;
    }
    return self->rss;
}

//  The limits on an authenticated request other than ping, before it
//  has a connection: the queues, the tenant's max_inflight, the server's
//  memory. Returns 0 or a status with its message in text.
static int
s_check_load (s_broker_t *self, uint32_t tenant, int opcode, char *text, size_t size)
{
    const fpx_config_t *config = &self->server->config;
    const fpx_tenant_limits_t *limits = &config->tenant_limits [tenant];
    if (self->queued >= config->max_queue + (size_t) self->nfree) {
        snprintf (text, size, "request queue is full (--max-queue %zu)", config->max_queue);
        return FPX_EBUSY;
    }
    if (limits->max_inflight && self->queues [tenant].inflight >= (size_t) limits->max_inflight) {
        snprintf (text, size, "tenant '%s' has %zu requests queued or running: max_inflight = %lld "
                  "(--tenant-limits / --default-tenant-limits)", config->tenants [tenant],
                  self->queues [tenant].inflight, (long long) limits->max_inflight);
        return FPX_EBUSY;
    }
    if (config->max_memory && fpx_limits_grows (opcode) && s_rss (self) >= config->max_memory) {
        snprintf (text, size, "server memory limit reached: %zu MiB resident, --max-memory-mb %zu",
                  self->rss >> 20, config->max_memory >> 20);
        return FPX_ENOMEM;
    }
    return 0;
}

//  The limits of one connection: requests in flight, unread replies.
static int
s_check_conn (s_broker_t *self, s_conn_t *conn, char *text, size_t size)
{
    const fpx_config_t *config = &self->server->config;
    if (conn->inflight >= config->max_conn_inflight) {
        snprintf (text, size, "this connection has %zu requests in flight "
                  "(--max-conn-inflight %zu)", conn->inflight, config->max_conn_inflight);
        return FPX_EBUSY;
    }
    size_t unread = atomic_load_explicit (&conn->unread->bytes, memory_order_relaxed);
    if (unread >= config->max_conn_unread) {
        snprintf (text, size, "this connection has not read %zu MiB of replies "
                  "(--max-conn-unread-mb %zu)", unread >> 20, config->max_conn_unread >> 20);
        return FPX_EBUSY;
    }
    return 0;
}

//  Checks one request read into job->frames and forwards, answers or
//  queues it. Takes ownership of job.
static void
s_admit (s_broker_t *self, s_job_t *job, bool too_many, size_t total, bool guarded)
{
    zmq_msg_t *rid = &job->frames [0];
    fpx_header_t header = { 0 };
    int tenant = -1;
    int rc = job->nframes >= 2
           ? fpx_header_decode_request (&header, zmq_msg_data (&job->frames [1]),
                                        zmq_msg_size (&job->frames [1]))
           : FPX_EPROTO;
    const char *error = NULL;
    char text [160];
    if (rc == FPX_EVERSION) {
        snprintf (text, sizeof text, "protocol version %u is not supported; this server speaks %d",
                  header.version, FPX_PROTOCOL_VERSION);
        error = text;
    }
    else if (rc)
        error = "malformed header (size, magic or flags)";
    else if (too_many)
        rc = FPX_EPROTO, error = "too many frames";
    else if (total > self->server->config.max_message) {
        rc = FPX_ETOOBIG;
        snprintf (text, sizeof text, "message of %zu bytes is over the limit of %zu bytes "
                  "(--max-message-mb %zu)", total, self->server->config.max_message,
                  self->server->config.max_message >> 20);
        error = text;
    }
    else {
        tenant = s_authenticate (self, job, &header, guarded, total, &rc, &error, text,
                                 sizeof text);
        if (tenant == S_HELD)
            return;
        if (tenant >= 0)           //  its connection may now hold a whole message
            fpx_intake_received (self->intake, zmq_msg_get (&job->frames [1], ZMQ_SRCFD),
                                 0, 0, true);
        if (tenant < 0)
            ;
        else if (!fpx_opcode_name (header.opcode))
            rc = FPX_EOPCODE, error = "unknown opcode";
        else if (job->nframes < 3)
            rc = FPX_EPROTO, error = "missing parameters frame";
        else if (self->stopping)
            rc = FPX_ESHUTDOWN, error = "server is shutting down";
        else if (header.opcode != FPX_OP_PING && header.opcode != FPX_OP_INFO
             &&  s_recovering (self, text, sizeof text))
            rc = FPX_ERECOVERING, error = text;
        else if (header.opcode != FPX_OP_PING
             &&  (rc = s_check_load (self, (uint32_t) tenant, header.opcode, text, sizeof text)))
            error = text;
        job->envelope.tenant_id = (uint32_t) (tenant < 0 ? 0 : tenant);
    }
    if (rc || header.opcode == FPX_OP_PING) {
        s_reply (self, rid, &header, tenant < 0 ? -1 : tenant, rc, error);
        s_close_frames (job->frames, job->nframes);
        free (job);
        return;
    }
    s_conn_t *conn = s_conn_get (self, rid, &job->frames [1]);
    if (!conn) {
        s_reply (self, rid, &header, tenant, FPX_ENOMEM, "out of memory");
        s_close_frames (job->frames, job->nframes);
        free (job);
        return;
    }
    if ((rc = s_check_conn (self, conn, text, sizeof text))) {
        s_reply (self, rid, &header, tenant, rc, text);
        s_close_frames (job->frames, job->nframes);
        free (job);
        return;
    }
    //  Whatever can leave an object or a transfer owned by the connection.
    if (fpx_opcode_info (header.opcode)->flags & FPX_OPF_OWNS)
        conn->may_own = true;
    int64_t deadline_ms = self->server->config.tenant_limits [job->envelope.tenant_id].deadline_ms;
    job->envelope.kind = FPX_JOB_REQUEST;
    job->envelope.conn_id = conn->conn_id;
    job->envelope.deadline_ms = deadline_ms;
    job->envelope.deadline = deadline_ms ? self->now + (double) deadline_ms * 1e-3 : 0;
    job->envelope.arrived = self->now;
    job->opcode = header.opcode;
    job->conn = conn;
    job->arrived = self->now;
    s_enqueue (self, job);
}

//  Reads one whole message from the frontend. Returns false when none.
static bool
s_frontend_read_one (s_broker_t *self)
{
    s_job_t *job = calloc (1, sizeof *job);
    if (!job)
        return false;
    bool too_many = false;
    size_t total = 0;
    int more = 1, frames = 0, fd = -1;
    while (more) {
        zmq_msg_t *frame = &job->frames [job->nframes];
        zmq_msg_t spill;
        if (job->nframes > FPX_MAX_FRAMES) {
            frame = &spill;
            too_many = true;
        }
        zmq_msg_init (frame);
        if (zmq_msg_recv (frame, self->frontend, job->nframes == 0 ? ZMQ_DONTWAIT : 0) < 0) {
            zmq_msg_close (frame);
            s_close_frames (job->frames, job->nframes);
            free (job);
            return false;
        }
        more = zmq_msg_more (frame);
        if (job->nframes > 0) {
            total += zmq_msg_size (frame);
            frames++;
        }
        if (job->nframes == 1)
            fd = zmq_msg_get (frame, ZMQ_SRCFD);
        if (frame == &spill)
            zmq_msg_close (&spill);
        else
            job->nframes++;
    }
    fpx_intake_received (self->intake, fd, total, frames, false);
    s_admit (self, job, too_many, total, true);
    return true;
}

//  Admits the requests the guard held whose delay is over.
static void
s_guard_release (s_broker_t *self)
{
    s_job_t *job;
    double now = fpx_monotonic_seconds ();
    while ((job = fpx_guard_next_due (self->guard, now)))
        s_admit (self, job, false, 0, false);
}

static void
s_job_free (void *item)
{
    s_job_t *job = item;
    s_close_frames (job->frames, job->nframes);
    free (job);
}

// ---- backend ---------------------------------------------------------------

//  A tracked reply frame: the worker's frame, kept alive while libzmq
//  holds the copy-free wrapper sent in its place.
typedef struct {
    zmq_msg_t original;
    s_unread_t *unread;
    size_t size;
} s_tracked_t;

//  libzmq's I/O thread: the frame was written to the socket or dropped.
static void
s_tracked_free (void *data, void *hint)
{
    (void) data;
    s_tracked_t *tracked = hint;
    atomic_fetch_sub (&tracked->unread->bytes, tracked->size);
    s_unread_release (tracked->unread);
    zmq_msg_close (&tracked->original);
    free (tracked);
}

//  Sends a reply to conn's peer, counting its large frames as unread
//  until libzmq lets go of them (no copy: the wrapper points into the
//  worker's frame). Small frames are bounded by the send high-water mark.
static void
s_send_reply (s_broker_t *self, s_conn_t *conn, zmq_msg_t *frames, int count)
{
    for (int i = 1; conn && i < count; i++) {
        size_t size = zmq_msg_size (&frames [i]);
        s_tracked_t *tracked = size >= FPX_UNREAD_TRACKED ? malloc (sizeof *tracked) : NULL;
        if (!tracked)
            continue;
        zmq_msg_init (&tracked->original);
        zmq_msg_move (&tracked->original, &frames [i]);
        tracked->unread = conn->unread;
        tracked->size = size;
        atomic_fetch_add (&conn->unread->refs, 1);
        atomic_fetch_add (&conn->unread->bytes, size);
        zmq_msg_init_data (&frames [i], zmq_msg_data (&tracked->original), size,
                           s_tracked_free, tracked);
    }
    s_send_frames (self->frontend, frames, count);
}

//  A worker message: [worker id] then either one empty frame (ready) or a
//  reply for the frontend [routing id][header][result][arrays…].
static bool
s_backend_read_one (s_broker_t *self)
{
    //  [worker][routing id][header][result][arrays…] and one spill slot.
    zmq_msg_t frames [FPX_REPLY_ARRAYS_MAX + 5];
    int count = 0, more = 1;
    while (more) {
        zmq_msg_init (&frames [count]);
        if (zmq_msg_recv (&frames [count], self->backend, count == 0 ? ZMQ_DONTWAIT : 0) < 0) {
            zmq_msg_close (&frames [count]);
            s_close_frames (frames, count);
            return false;
        }
        more = zmq_msg_more (&frames [count]);
        if (count + 1 < (int) (sizeof frames / sizeof frames [0]))
            count++;
        else
            zmq_msg_close (&frames [count]);     //  cannot happen: workers are ours
    }
    uint32_t worker;
    s_running_t *running = NULL;
    if (zmq_msg_size (&frames [0]) == sizeof worker) {
        memcpy (&worker, zmq_msg_data (&frames [0]), sizeof worker);
        if (worker < (uint32_t) self->server->config.workers) {
            self->free_workers [self->nfree++] = worker;
            running = &self->running [worker];
        }
    }
    zmq_msg_close (&frames [0]);
    fpx_batch_t *batch;
    if (count == 2 && zmq_msg_size (&frames [1]) == sizeof batch) {
        //  A batch back from its worker: each item's reply, in order.
        memcpy (&batch, zmq_msg_data (&frames [1]), sizeof batch);
        zmq_msg_close (&frames [1]);
        (void) atomic_load_explicit (&batch->at_worker, memory_order_acquire);
        for (int i = 0; i < batch->count; i++)
            s_send_reply (self, running && i < running->count ? running->conns [i] : NULL,
                          batch->items [i].reply, batch->items [i].nreply);
        self->spare_batches [self->nspare++] = batch;
    }
    else if (count > 2)
        s_send_reply (self, running && running->count ? running->conns [0] : NULL,
                      frames + 1, count - 1);
    else
        s_close_frames (frames + 1, count - 1);
    for (int i = 0; running && i < running->count; i++)
        s_request_done (self, running->tenant, running->conns [i]);
    if (running)
        running->count = 0;
    return true;
}

// ---- run ---------------------------------------------------------------------

static int
s_setup (s_broker_t *self)
{
    fpx_server_t *server = self->server;
    const fpx_config_t *config = &server->config;
    self->frontend = zmq_socket (server->zmq_ctx, ZMQ_ROUTER);
    self->backend = zmq_socket (server->zmq_ctx, ZMQ_ROUTER);
    self->monitor = zmq_socket (server->zmq_ctx, ZMQ_PAIR);
    self->free_workers = calloc ((size_t) config->workers, sizeof *self->free_workers);
    self->spare_batches = calloc ((size_t) config->workers, sizeof *self->spare_batches);
    for (int i = 0; self->spare_batches && i < config->workers; i++)
        if ((self->spare_batches [i] = calloc (1, sizeof (fpx_batch_t))))
            self->nspare++;
    self->nqueues = (size_t) config->ntenants + 1;
    self->queues = calloc (self->nqueues, sizeof *self->queues);
    self->ring = calloc (self->nqueues, sizeof *self->ring);
    self->running = calloc ((size_t) config->workers, sizeof *self->running);
    if (!self->queues || !self->ring || !self->running)
        return -1;
    self->nconn_buckets = 4096;
    self->conns = calloc (self->nconn_buckets, sizeof *self->conns);
    self->next_conn_id = 1;
    self->guard = fpx_guard_new (server->config.auth_delay_max);
    size_t intake_cap = config->max_message * 2 + FPX_INTAKE_SLACK;
    self->intake = fpx_intake_new (intake_cap, config->max_unauthenticated
                                               ? config->max_unauthenticated : intake_cap);
    if (!self->frontend || !self->backend || !self->monitor || !self->free_workers || !self->conns
    ||  !self->guard || !self->intake
    ||  self->nspare < config->workers)
        return -1;
    int zero = 0, heartbeat = 5000, heartbeat_timeout = 15000;
    //  Room for every reply in flight plus refusals (small) to a peer
    //  that does not read; beyond it the ROUTER drops them.
    int send_hwm = (int) config->max_conn_inflight + FPX_REFUSALS_HWM;
    int receive_hwm = FPX_RECEIVE_HWM;
    int64_t max_frame = (int64_t) config->max_message * 2;
    zmq_setsockopt (self->frontend, ZMQ_SNDHWM, &send_hwm, sizeof send_hwm);
    zmq_setsockopt (self->frontend, ZMQ_RCVHWM, &receive_hwm, sizeof receive_hwm);
    zmq_setsockopt (self->frontend, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt (self->frontend, ZMQ_MAXMSGSIZE, &max_frame, sizeof max_frame);
    zmq_setsockopt (self->frontend, ZMQ_HEARTBEAT_IVL, &heartbeat, sizeof heartbeat);
    zmq_setsockopt (self->frontend, ZMQ_HEARTBEAT_TIMEOUT, &heartbeat_timeout, sizeof heartbeat_timeout);
    //  A connection that has not finished its handshake (greeting, CURVE)
    //  in 10 s is closed: idle connects do not hold descriptors for long.
    int handshake = 10000;
    zmq_setsockopt (self->frontend, ZMQ_HANDSHAKE_IVL, &handshake, sizeof handshake);
    if (config->curve) {
        //  A CURVE server: every peer must know our public key; the ZAP
        //  handler (zap.c) decides which client keys may connect.
        int one = 1;
        if (zmq_setsockopt (self->frontend, ZMQ_CURVE_SERVER, &one, sizeof one)
        ||  zmq_setsockopt (self->frontend, ZMQ_CURVE_SECRETKEY, config->curve_secret, 32)
        ||  zmq_setsockopt (self->frontend, ZMQ_ZAP_DOMAIN, "faissproxy", 10))
            return -1;
    }
    zmq_setsockopt (self->backend, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt (self->monitor, ZMQ_LINGER, &zero, sizeof zero);
    int events = ZMQ_EVENT_ACCEPTED | ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_ACCEPT_FAILED
               | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL
               | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH;
    if (zmq_socket_monitor (self->frontend, FPX_MONITOR_ENDPOINT, events)
    ||  zmq_connect (self->monitor, FPX_MONITOR_ENDPOINT)
    ||  zmq_bind (self->backend, FPX_BACKEND_ENDPOINT))
        return -1;
    for (int i = 0; i < config->nbinds; i++) {
        if (zmq_bind (self->frontend, config->binds [i])) {
            fpx_log (FPX_LOG_ERROR, "cannot bind %s: %s", config->binds [i],
                     zmq_strerror (zmq_errno ()));
            return -1;
        }
        //  tcp://HOST:* and ipc://* bind what the system picks: the
        //  endpoint that resolved is the one clients need.
        char *resolved = self->server->endpoints [i];
        size_t size = sizeof self->server->endpoints [i];
        if (zmq_getsockopt (self->frontend, ZMQ_LAST_ENDPOINT, resolved, &size) || !resolved [0])
            snprintf (resolved, sizeof self->server->endpoints [i], "%s", config->binds [i]);
    }
    return 0;
}

static void
s_teardown (s_broker_t *self)
{
    //  Every worker is free now: tell each to stop.
    for (int i = 0; i < self->nfree; i++) {
        zmq_msg_t head [2];
        fpx_envelope_t stop = { .kind = FPX_JOB_STOP };
        s_msg_from (&head [0], &self->free_workers [i], sizeof (uint32_t));
        s_msg_from (&head [1], &stop, sizeof stop);
        s_send_frames (self->backend, head, 2);
    }
    for (size_t q = 0; self->queues && q < self->nqueues; q++)
        while (self->queues [q].head) {
            s_job_t *job = self->queues [q].head;
            self->queues [q].head = job->next;
            if (job->envelope.kind == FPX_JOB_REQUEST)
                s_request_done (self, job->envelope.tenant_id, job->conn);
            s_close_frames (job->frames, job->nframes);
            free (job);
        }
    fpx_guard_destroy (&self->guard, s_job_free);
    fpx_intake_destroy (&self->intake);
    for (size_t b = 0; self->conns && b < self->nconn_buckets; b++)
        while (self->conns [b]) {
            s_conn_t *conn = self->conns [b];
            self->conns [b] = conn->next;
            if (conn->inflight)
                conn->gone = true;
            else
                s_conn_free (conn);
        }
    if (self->frontend)
        zmq_socket_monitor (self->frontend, NULL, 0);
    zmq_close (self->frontend);
    zmq_close (self->monitor);
    zmq_close (self->backend);
    free (self->conns);
    free (self->conn_by_fd);
    free (self->queues);
    free (self->ring);
    free (self->running);
    free (self->free_workers);
    for (int i = 0; i < self->nspare; i++)
        free (self->spare_batches [i]);
    free (self->spare_batches);
}

int
fpx_broker_run (fpx_server_t *server, int signal_fd)
{
    s_broker_t self = { .server = server };
    int rc = s_setup (&self);
    if (rc == 0) {
        for (int i = 0; i < server->config.nbinds; i++)
            fpx_log (FPX_LOG_INFO, "listening on %s", server->endpoints [i]);
        if (server->listening)
            server->listening (server);
        int workers = server->config.workers;
        //  Stop once asked to and every worker is back, all queued work done.
        while (!(self.stopping && self.nfree == workers && !self.queued)) {
            zmq_pollitem_t items [] = {
                { self.frontend, 0, ZMQ_POLLIN, 0 },
                { self.backend, 0, ZMQ_POLLIN, 0 },
                { self.monitor, 0, ZMQ_POLLIN, 0 },
                { NULL, signal_fd, ZMQ_POLLIN, 0 },
            };
            double now = fpx_monotonic_seconds ();
            long timeout = fpx_guard_timeout_ms (self.guard, now);
            long intake_timeout = fpx_intake_timeout_ms (self.intake, now);
            if (intake_timeout >= 0 && (timeout < 0 || intake_timeout < timeout))
                timeout = intake_timeout;
            if (fpx_poll (items, 4, timeout, server->config.spin_us) < 0) {
                if (zmq_errno () == EINTR)
                    continue;
                fpx_log (FPX_LOG_ERROR, "broker: poll failed: %s", zmq_strerror (zmq_errno ()));
                rc = -1;
                break;
            }
            self.now = fpx_monotonic_seconds ();
            if (items [1].revents & ZMQ_POLLIN)
                for (int i = 0; i < FPX_READS_PER_WAKE && s_backend_read_one (&self); i++)
                    ;
            //  Events first: a connection's ACCEPTED is queued before its
            //  first message can be read.
            if (items [2].revents & ZMQ_POLLIN || items [0].revents & ZMQ_POLLIN)
                s_monitor_drain (&self);
            if (items [0].revents & ZMQ_POLLIN)
                for (int i = 0; i < FPX_READS_PER_WAKE && s_frontend_read_one (&self); i++)
                    ;
            if (fpx_intake_timeout_ms (self.intake, self.now) == 0) {
                s_monitor_drain (&self);   //  no check on a descriptor already closed
                fpx_intake_check (self.intake, self.now);
            }
            s_guard_release (&self);
            s_dispatch_queued (&self);
            fpx_metrics_broker (server->metrics, self.queued, self.inflight, self.connections);
            if (items [3].revents & ZMQ_POLLIN) {
                unsigned char signo;
                if (read (signal_fd, &signo, 1) == 1 && !self.stopping) {
                    fpx_log (FPX_LOG_INFO, "signal %u: finishing %d request(s) in flight, then exiting",
                             signo, workers - self.nfree + (int) self.queued);
                    self.stopping = true;
                }
            }
        }
    }
    s_teardown (&self);
    return rc;
}
