/*  worker.c — the worker pool. Each worker owns a DEALER on the broker's
    inproc backend, announces itself ready with an empty frame, then serves
    one job at a time: a request (answered through the broker), a batch of
    searches (handed back to the broker with their replies), a reap of a
    closed connection's anonymous indexes, or stop. Workers hold no state
    between jobs; everything shared lives in the registry.               */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "budget.h"
#include "call.h"
#include "clock.h"
#include "interrupt.h"
#include "transfers.h"
#include "worker.h"

typedef struct {
    fpx_server_t *server;
    uint32_t id;
    pthread_t thread;
    //  Room to serve a batch: one call, envelope and reply per item (a
    //  request alone uses the first reply).
    fpx_call_t calls [FPX_BATCH_MAX];
    fpx_envelope_t envelopes [FPX_BATCH_MAX];
    fpx_worker_reply_t replies [FPX_BATCH_MAX];
} s_worker_t;

struct fpx_workers_t {
    int count;                     //  threads started
    s_worker_t *workers;           //  config.workers of them
};

static void
s_send_ready (void *socket)
{
    zmq_send (socket, "", 0, 0);
}

static void
s_msg_copy_in (zmq_msg_t *msg, const void *data, size_t size)
{
    zmq_msg_init_size (msg, size);
    memcpy (zmq_msg_data (msg), data, size);
}

//  Builds the reply frames [routing id][reply header][result][arrays…] into
//  out; moves rid and the reply's arrays. Returns the frame count.
static int
s_reply_frames (zmq_msg_t *out, zmq_msg_t *rid, const fpx_header_t *request, fpx_worker_reply_t *reply)
{
    fpx_header_t header = { .version = FPX_PROTOCOL_VERSION, .opcode = request->opcode,
                            .status = reply->status, .request_id = request->request_id };
    uint8_t head [FPX_REPLY_HEADER_SIZE];
    fpx_header_encode_reply (&header, head);
    if (reply->status) {
        //  Errors carry no arrays and only the message.
        for (int i = 0; i < reply->narrays; i++)
            zmq_msg_close (&reply->arrays [i]);
        reply->narrays = 0;
        msgpack_sbuffer_clear (&reply->result);
        //  Texts written past fpx_reply_error (storage, WAL) are made
        //  printable here too: no reply carries invalid UTF-8.
        char text [sizeof reply->error];
        fpx_text_sanitize (text, sizeof text, reply->error, strnlen (reply->error, sizeof reply->error));
        msgpack_pack_map (&reply->pk, 1);
        fpx_pack_kv_str (&reply->pk, "error", text);
    }
    int count = 0;
    zmq_msg_init (&out [count]);
    zmq_msg_move (&out [count++], rid);
    s_msg_copy_in (&out [count++], head, sizeof head);
    s_msg_copy_in (&out [count++], reply->result.data, reply->result.size);
    for (int i = 0; i < reply->narrays; i++) {
        zmq_msg_init (&out [count]);
        zmq_msg_move (&out [count++], &reply->arrays [i]);
    }
    reply->narrays = 0;
    return count;
}

//  Sends [routing id][reply header][result][arrays…]; consumes reply arrays.
static void
s_send_reply (void *socket, zmq_msg_t *rid, const fpx_header_t *request, fpx_worker_reply_t *reply)
{
    zmq_msg_t frames [3 + FPX_REPLY_ARRAYS_MAX];
    int count = s_reply_frames (frames, rid, request, reply);
    for (int i = 0; i < count; i++)
        zmq_msg_send (&frames [i], socket, i + 1 < count ? ZMQ_SNDMORE : 0);
}

static void
s_reply_reset (fpx_worker_reply_t *reply)
{
    reply->status = 0;
    reply->error [0] = 0;
    reply->narrays = 0;
    msgpack_sbuffer_clear (&reply->result);
}

//  Runs the call; a train, kmeans or HNSW rebuild (remove_ids) still
//  running at the request's deadline is stopped by FAISS (interrupt.h)
//  and answered ETIMEDOUT.
static void
s_execute (fpx_call_t *call)
{
    double deadline = call->envelope->deadline;
    int opcode = call->header.opcode;
    bool armed = deadline > 0 && (opcode == FPX_OP_TRAIN || opcode == FPX_OP_KMEANS
                                  || opcode == FPX_OP_REMOVE_IDS);
    if (armed)
        fpx_interrupt_arm (deadline);
    fpx_ops_execute (call);
    if (!armed)
        return;
    fpx_interrupt_arm (0);
    if (fpx_interrupt_fired () && call->reply->status)
        fpx_reply_error (call->reply, FPX_ETIMEDOUT, "interrupted after %lld ms, the deadline "
                         "(deadline_ms, --tenant-limits / --default-tenant-limits); %s",
                         (long long) call->envelope->deadline_ms,
                         opcode == FPX_OP_TRAIN ? "the index stays untrained, but an IVF "
                         "index's coarse quantizer may keep partial centroids: recreate it "
                         "before training again" : opcode == FPX_OP_REMOVE_IDS ? "nothing "
                         "was removed (the HNSW graph being rebuilt was dropped)"
                         : "nothing was created");
}

//  Who asks what of which index, for the request line and for what FAISS
//  prints while it runs. index has room for a name.
static void
s_log_begin (const fpx_call_t *call, fpx_log_request_t *r, char *index, size_t size)
{
    const fpx_config_t *config = &call->server->config;
    if (fpx_params_copy_str (&call->params, "name", index, size))
        index [0] = 0;
    const char *opcode = fpx_opcode_name (call->header.opcode);
    uint32_t tenant = call->envelope->tenant_id;
    *r = (fpx_log_request_t) {
        .tenant = tenant < (uint32_t) config->ntenants ? config->tenants [tenant] : "?",
        .index = index, .opcode = opcode ? opcode : "?",
        .request_id = call->header.request_id, .conn = call->envelope->conn_id,
        .batch = 1, .error = "",
    };
}

//  A request ended: counted in the metrics (metrics.h) and, at debug, the
//  request line (r from s_log_begin; NULL when not logging): how it
//  ended, how long it queued and ran.
static void
s_log_end (const fpx_call_t *call, fpx_log_request_t *r, int batch, double started)
{
    double arrived = call->envelope->arrived;
    double wait_s = arrived > 0 && arrived < started ? started - arrived : 0;
    double run_s = fpx_monotonic_seconds () - started;
    fpx_metrics_request (call->server->metrics, (int) call->envelope->tenant_id,
                         call->header.opcode, call->reply->status, wait_s + run_s);
    if (!r || !fpx_log_enabled (FPX_LOG_DEBUG))
        return;
    r->status = call->reply->status;
    r->error = call->reply->status ? call->reply->error : "";
    r->batch = batch;
    r->wait_s = wait_s;
    r->run_s = run_s;
    fpx_log_request (r);
}

static void
s_serve_request (s_worker_t *self, void *socket, zmq_msg_t *frames, int count, fpx_worker_reply_t *reply)
{
    fpx_call_t call = {
        .server = self->server,
        .envelope = zmq_msg_data (&frames [1]),
        .arrays = frames + 4,
        .narrays = count - 4,
        .reply = reply,
    };
    s_reply_reset (reply);
    double started = fpx_monotonic_seconds ();
    //  The broker checked the header; decode it again for our own copy.
    fpx_header_decode_request (&call.header, zmq_msg_data (&frames [2]), zmq_msg_size (&frames [2]));
    fpx_log_request_t log;
    char index [FPX_NAME_MAX + 1];
    if (fpx_params_decode (&call.params, zmq_msg_data (&frames [3]), zmq_msg_size (&frames [3])))
        fpx_reply_error (reply, FPX_EPROTO, "malformed parameters (not a bounded msgpack map)");
    s_log_begin (&call, &log, index, sizeof index);
    if (!reply->status) {
        fpx_log_set_context (&log);
        s_execute (&call);
        fpx_log_set_context (NULL);
    }
    s_log_end (&call, &log, 1, started);
    for (int i = 0; i < call.nscratch; i++)
        free (call.scratch [i]);
    s_send_reply (socket, &frames [0], &call.header, reply);
    //  What the call added may pass the memory budget: evict (budget.h),
    //  after the reply, which need not wait for another index's snapshot.
    fpx_budget_enforce (self->server->budget, 0);
}

//  Serves a batch (see fpx_batch_t in worker.h) and hands it back to the
//  broker with every item's reply frames in place of its request.
static void
s_serve_batch (s_worker_t *self, void *socket, fpx_batch_t *batch)
{
    (void) atomic_load_explicit (&batch->at_worker, memory_order_acquire);
    int n = batch->count;
    fpx_call_t *calls = self->calls;
    double started = fpx_monotonic_seconds ();
    for (int i = 0; i < n; i++) {
        fpx_batch_item_t *item = &batch->items [i];
        fpx_worker_reply_t *reply = &self->replies [i];
        s_reply_reset (reply);
        self->envelopes [i] = (fpx_envelope_t) { .kind = FPX_JOB_REQUEST,
                                                 .tenant_id = batch->tenant_id,
                                                 .conn_id = item->conn_id,
                                                 .arrived = item->arrived };
        calls [i] = (fpx_call_t) {
            .server = self->server, .envelope = &self->envelopes [i],
            .arrays = &item->request [3], .narrays = 1, .reply = reply,
        };
        fpx_header_decode_request (&calls [i].header, zmq_msg_data (&item->request [1]),
                                   zmq_msg_size (&item->request [1]));
    }
    //  One parameters frame for all: decoded once, copied to each call.
    fpx_params_t params;
    if (fpx_params_decode (&params, zmq_msg_data (&batch->items [0].request [2]),
                           zmq_msg_size (&batch->items [0].request [2]))) {
        for (int i = 0; i < n; i++)
            fpx_reply_error (calls [i].reply, FPX_EPROTO,
                             "malformed parameters (not a bounded msgpack map)");
    }
    else {
        for (int i = 0; i < n; i++)
            calls [i].params = params;
        fpx_ops_search_batch (calls, n);
    }
    bool debug = fpx_log_enabled (FPX_LOG_DEBUG);
    for (int i = 0; i < n; i++) {
        fpx_log_request_t log;
        char index [FPX_NAME_MAX + 1];
        if (debug)
            s_log_begin (&calls [i], &log, index, sizeof index);
        s_log_end (&calls [i], debug ? &log : NULL, n, started);
    }
    fpx_metrics_batch (self->server->metrics, n);
    for (int i = 0; i < n; i++) {
        fpx_batch_item_t *item = &batch->items [i];
        for (int j = 0; j < calls [i].nscratch; j++)
            free (calls [i].scratch [j]);
        item->nreply = s_reply_frames (item->reply, &item->request [0], &calls [i].header,
                                       calls [i].reply);
        for (int j = 0; j < 4; j++)
            zmq_msg_close (&item->request [j]);
    }
    atomic_store_explicit (&batch->at_worker, 0, memory_order_release);
    zmq_send (socket, &batch, sizeof batch, 0);
    fpx_budget_enforce (self->server->budget, 0);
}

static void *
s_worker_main (void *arg)
{
    s_worker_t *self = arg;
    void *socket = zmq_socket (self->server->zmq_ctx, ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt (socket, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt (socket, ZMQ_ROUTING_ID, &self->id, sizeof self->id);
    zmq_connect (socket, FPX_BACKEND_ENDPOINT);
    s_send_ready (socket);

    for (int i = 0; i < FPX_BATCH_MAX; i++) {
        msgpack_sbuffer_init (&self->replies [i].result);
        msgpack_packer_init (&self->replies [i].pk, &self->replies [i].result,
                             msgpack_sbuffer_write);
    }

    bool running = true;
    while (running) {
        if (self->server->config.spin_us > 0) {
            zmq_pollitem_t item = { socket, 0, ZMQ_POLLIN, 0 };
            fpx_poll (&item, 1, -1, self->server->config.spin_us);
        }
        zmq_msg_t frames [FPX_MAX_FRAMES + 2];
        int count = 0, more = 1;
        while (more && count < FPX_MAX_FRAMES + 2) {
            zmq_msg_init (&frames [count]);
            if (zmq_msg_recv (&frames [count], socket, 0) < 0) {
                zmq_msg_close (&frames [count]);
                more = 0;
                running = false;
                break;
            }
            more = zmq_msg_more (&frames [count++]);
        }
        const fpx_envelope_t *envelope = NULL;
        int at = count == 1 ? 0 : 1;
        if (count > at && zmq_msg_size (&frames [at]) == sizeof (fpx_envelope_t))
            envelope = zmq_msg_data (&frames [at]);
        if (!envelope || envelope->kind == FPX_JOB_STOP)
            running = false;
        else if (envelope->kind == FPX_JOB_BATCH)
            s_serve_batch (self, socket, envelope->batch);
        else if (envelope->kind == FPX_JOB_REAP) {
            size_t reaped = fpx_registry_reap (self->server->registry, envelope->conn_id);
            if (reaped)
                fpx_log (FPX_LOG_INFO, "freed %zu anonymous index(es) of closed connection %llu",
                         reaped, (unsigned long long) envelope->conn_id);
            size_t transfers = fpx_transfers_reap (self->server->transfers, envelope->conn_id);
            if (transfers)
                fpx_log (FPX_LOG_INFO, "freed %zu unfinished transfer(s) of closed connection %llu",
                         transfers, (unsigned long long) envelope->conn_id);
            s_send_ready (socket);
        }
        else if (count >= 4)
            s_serve_request (self, socket, frames, count, &self->replies [0]);
        else
            s_send_ready (socket);          //  never lose a worker
        for (int i = 0; i < count; i++)
            zmq_msg_close (&frames [i]);
    }
    for (int i = 0; i < FPX_BATCH_MAX; i++)
        msgpack_sbuffer_destroy (&self->replies [i].result);
    zmq_close (socket);
    return NULL;
}

fpx_workers_t *
fpx_workers_new (fpx_server_t *server)
{
    fpx_workers_t *self = calloc (1, sizeof *self);
    if (self)
        self->workers = calloc ((size_t) server->config.workers, sizeof *self->workers);
    if (!self || !self->workers) {
        free (self);
        return NULL;
    }
    for (int i = 0; i < server->config.workers; i++) {
        s_worker_t *worker = &self->workers [i];
        worker->server = server;
        worker->id = (uint32_t) i;
        //  A thread that cannot start leaves the pool to those that did,
        //  which use it until the process exits.
        if (pthread_create (&worker->thread, NULL, s_worker_main, worker))
            return NULL;
        self->count++;
    }
    return self;
}

void
fpx_workers_destroy (fpx_workers_t **self_p)
{
    fpx_workers_t *self = *self_p;
    if (!self)
        return;
    for (int i = 0; i < self->count; i++)
        pthread_join (self->workers [i].thread, NULL);
    free (self->workers);
    free (self);
    *self_p = NULL;
}
