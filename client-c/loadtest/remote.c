/*  remote.c — fpx-loadtest's engine on libfaissproxy: one client handle
    (one connection) per client thread; the synchronous calls when the
    pipeline is 1, fpx_search_send / fpx_add_send / fpx_recv above.
    With --anonymous each connection uploads its tenant's template as its
    own anonymous index before the clock starts, and drops it at the end. */
#include <stdio.h>
#include <stdlib.h>

#include "loadtest.h"

static int
s_open (lt_client_t *client)
{
    const lt_options_t *options = client->options;
    const char *key = options->nkeys ? options->keys [client->tenant % options->nkeys] : NULL;
    fpx_client_t *handle = fpx_client_new (options->server, key);
    if (!handle) {
        fprintf (stderr, "fpx-loadtest: cannot create a client for %s\n", options->server);
        return -1;
    }
    fpx_client_set_timeout (handle, LT_TIMEOUT_MS);
    //  Connect before the clock starts: the first request should not pay
    //  for the TCP and ZMTP handshakes.
    int rc = fpx_ping (handle, NULL);
    if (rc) {
        fprintf (stderr, "fpx-loadtest: cannot reach %s: %s\n", options->server,
                 fpx_client_errmsg (handle));
        fpx_client_destroy (&handle);
        return -1;
    }
    lt_targets_t *targets = client->run->targets;
    if (options->anonymous) {
        fpx_index_info_t info;
        rc = fpx_deserialize (handle, NULL, NULL, targets->templates [client->tenant],
                              targets->template_sizes [client->tenant], &info);
        if (rc) {
            fprintf (stderr, "fpx-loadtest: cannot upload the index of client %d: %s\n",
                     client->index, fpx_client_errmsg (handle));
            fpx_client_destroy (&handle);
            return -1;
        }
        snprintf (client->name, sizeof client->name, "%s", info.name);
    }
    else
        snprintf (client->name, sizeof client->name, "%s", targets->names [client->tenant]);
    client->handle = handle;
    return 0;
}

static void
s_close (lt_client_t *client)
{
    fpx_client_t *handle = client->handle;
    //  The connection's end would free an anonymous index too, but later,
    //  in the background: drop it now, so that the server has finished
    //  freeing it before whatever runs next (the in-process baseline).
    if (client->options->anonymous && fpx_index_drop (handle, client->name))
        fprintf (stderr, "fpx-loadtest: cannot drop %s: %s\n", client->name,
                 fpx_client_errmsg (handle));
    fpx_client_destroy (&handle);
    client->handle = NULL;
}

static const char *
s_name (lt_client_t *client)
{
    return client->name;
}

static int
s_call (lt_client_t *client, lt_slot_t *slot)
{
    const lt_options_t *options = client->options;
    if (slot->op == LT_OP_SEARCH)
        return fpx_search (client->handle, s_name (client), slot->n, options->dim, slot->x,
                           options->k, NULL, slot->distances, slot->labels);
    return fpx_add (client->handle, s_name (client), slot->n, options->dim, slot->x, NULL);
}

static int
s_send (lt_client_t *client, lt_slot_t *slot)
{
    const lt_options_t *options = client->options;
    if (slot->op == LT_OP_SEARCH)
        return fpx_search_send (client->handle, s_name (client), slot->n, options->dim, slot->x,
                                options->k, NULL, slot->distances, slot->labels, &slot->id);
    return fpx_add_send (client->handle, s_name (client), slot->n, options->dim, slot->x,
                         &slot->id);
}

static int
s_recv (lt_client_t *client, int timeout_ms, lt_slot_t **slot)
{
    fpx_completion_t completion;
    if (fpx_recv (client->handle, timeout_ms, &completion) != 1)
        return 0;
    for (int i = 0; i < client->nslots; i++) {
        lt_slot_t *candidate = &client->slots [i];
        if (candidate->busy && candidate->id == completion.request_id) {
            candidate->status = completion.status;
            *slot = candidate;
            return 1;
        }
    }
    return 0;       //  cannot happen: every id we get back is one we sent
}

static const char *
s_errmsg (lt_client_t *client, int status)
{
    (void) status;
    return fpx_client_errmsg (client->handle);
}

static int64_t
s_ntotal (lt_client_t *client)
{
    fpx_index_info_t info;
    if (fpx_index_describe (client->handle, s_name (client), 0, &info)) {
        fprintf (stderr, "fpx-loadtest: cannot describe %s: %s\n", s_name (client),
                 fpx_client_errmsg (client->handle));
        return -1;
    }
    return info.ntotal;
}

const lt_engine_t lt_engine_remote = {
    .mode = "remote", .open = s_open, .close = s_close, .call = s_call,
    .send = s_send, .recv = s_recv, .errmsg = s_errmsg, .ntotal = s_ntotal
};
