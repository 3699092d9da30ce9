/*  ops_objects.c — FAISS's object model over the wire: composite indexes
    built from other objects (an IVF index around a quantizer, a
    PreTransform around a transform and an index, …), views of
    sub-objects, numeric attributes, vector transforms, cloning, direct
    maps, id maps and k-means.

    Composition follows FAISS: the composite owns what it is built from,
    and the entries that named those objects become aliases of it (calls
    through them see and change the same objects, under the composite's
    lock). Only standalone anonymous objects of the calling connection can
    be adopted. This file must not parse bytes itself: parameters come
    through the fpx_op_ helpers, which check them.
*/
#include <stdlib.h>
#include <string.h>

#include <faiss/c_api/IndexIVF_c.h>

#include "faiss_shim.h"
#include "ops.h"
#include "rebuild.h"
#include "tenant_limits.h"

//  Whether entry is an anonymous object of the calling connection.
static bool
s_mine (fpx_call_t *call, const fpx_entry_t *entry)
{
    return fpx_entry_owner_conn (entry) == call->envelope->conn_id;
}

//  The objects named in req's refs, each a counted reference, each a
//  standalone anonymous object of this connection, no two the same.
static int
s_refs (fpx_call_t *call, const fpx_construct_req_t *req, fpx_entry_t **refs, int *nrefs)
{
    *nrefs = 0;
    for (int i = 0; i < req->refs_count; i++) {
        const char *name = req->refs [i];
        fpx_entry_t *entry = fpx_registry_find (call->server->registry, call->envelope->tenant_id,
                                                name, call->envelope->conn_id);
        if (!entry)
            return fpx_reply_error (call->reply, FPX_ENOTFOUND, "no object named '%s'", name);
        refs [(*nrefs)++] = entry;
        if (!s_mine (call, entry) || fpx_entry_root (entry))
            return fpx_reply_error (call->reply, FPX_EINVAL, "'%s' cannot be adopted: only a "
                                    "standalone anonymous object of this connection can", name);
        for (int j = 0; j + 1 < *nrefs; j++)
            if (refs [j] == entry)
                return fpx_reply_error (call->reply, FPX_EINVAL, "'%s' is referenced twice", name);
    }
    return 0;
}

static int
s_compare_pointers (const void *a, const void *b)
{
    uintptr_t x = (uintptr_t) *(fpx_entry_t *const *) a, y = (uintptr_t) *(fpx_entry_t *const *) b;
    return x < y ? -1 : x > y;
}

//  Builds the composite while every adopted object is locked exclusively
//  (locked in address order, so two constructs cannot deadlock), then
//  registers it and turns the adopted entries into its aliases.
static int
s_construct_locked (fpx_call_t *call, const char *type, const double *args, int nargs,
                    fpx_entry_t **refs, int nrefs)
{
    FaissIndex *ref_indexes [FPX_CONSTRUCT_REFS_MAX];
    FaissVectorTransform *ref_transforms [FPX_CONSTRUCT_REFS_MAX];
    for (int i = 0; i < nrefs; i++) {
        if (fpx_entry_root (refs [i]))
            return fpx_reply_error (call->reply, FPX_EINVAL, "'%s' was adopted meanwhile",
                                    fpx_entry_name (refs [i]));
        ref_indexes [i] = fpx_entry_index (refs [i]);
        ref_transforms [i] = fpx_entry_transform (refs [i]);
    }
    fpx_object_t object = { .factory = "" };
    char err [FPX_ERROR_TEXT_MAX];
    int rc = fpx_shim_construct (type, nargs, args, nrefs, ref_indexes, ref_transforms,
                                 &object.index, &object.transform, err, sizeof err);
    if (rc)
        return fpx_op_shim_result (call, rc, err);
    fpx_entry_t *entry;
    rc = fpx_registry_insert (call->server->registry, call->envelope->tenant_id, NULL,
                              call->envelope->conn_id, &object, &entry);
    if (rc) {
        if (nrefs)
            fpx_shim_free_shell (object.index);
        else
            fpx_object_free (&object);
        return fpx_reply_error (call->reply, rc, "out of memory");
    }
    for (int i = 0; i < nrefs; i++)
        fpx_registry_adopt (refs [i], entry);
    //  The new entry is not visible to anyone else yet: no lock needed.
    fpx_limits_measure (entry);
    rc = fpx_op_pack_description (call, entry, false);
    fpx_entry_release (&entry);
    return rc;
}

int
fpx_handle_construct_req (fpx_call_t *call, const fpx_construct_req_t *req)
{
    fpx_entry_t *refs [FPX_CONSTRUCT_REFS_MAX];
    int nrefs = 0;
    int rc = s_refs (call, req, refs, &nrefs);
    if (rc == 0) {
        fpx_entry_t *sorted [FPX_CONSTRUCT_REFS_MAX];
        pthread_rwlock_t *locks [FPX_CONSTRUCT_REFS_MAX];
        memcpy (sorted, refs, sizeof (fpx_entry_t *) * (size_t) nrefs);
        qsort (sorted, (size_t) nrefs, sizeof *sorted, s_compare_pointers);
        for (int i = 0; i < nrefs; i++)
            locks [i] = fpx_op_lock (call, sorted [i]);
        rc = s_construct_locked (call, req->type, req->args, req->args_count, refs, nrefs);
        for (int i = nrefs - 1; i >= 0; i--)
            pthread_rwlock_unlock (locks [i]);
    }
    for (int i = 0; i < nrefs; i++)
        fpx_entry_release (&refs [i]);
    return rc ? rc : call->reply->status;
}

//  attach's roles remove_shard / remove_replica: ref, a direct part of
//  the top-level anonymous group entry of this connection, leaves it and
//  becomes a standalone object again (FAISS's remove_shard /
//  remove_replica). ref's own lock is taken before it stops being an
//  alias: a request for it that waited on the group's lock then finds
//  ref's, and waits until ref is measured.
static int
s_detach (fpx_call_t *call, fpx_entry_t *entry, fpx_entry_t *ref, const char *role)
{
    if (!s_mine (call, entry) || fpx_entry_root (entry))
        return fpx_reply_error (call->reply, FPX_EINVAL, "%s takes an anonymous top-level group "
                                "of this connection", role);
    pthread_rwlock_t *lock = fpx_op_lock (call, entry);
    int rc;
    if (fpx_entry_root (ref) != entry || !fpx_entry_index (ref))
        rc = fpx_reply_error (call->reply, FPX_EINVAL, "%s: '%s' is not a part of '%s'", role,
                              fpx_entry_name (ref), fpx_entry_name (entry));
    else {
        char err [FPX_ERROR_TEXT_MAX];
        rc = fpx_shim_detach (fpx_entry_index (entry), role, fpx_entry_index (ref),
                              err, sizeof err);
        if (rc)
            rc = fpx_op_shim_result (call, rc, err);
        else {
            pthread_rwlock_t *own = fpx_entry_lock_own (ref);
            fpx_registry_detach (ref);
            fpx_limits_measure (ref);
            pthread_rwlock_unlock (own);
            fpx_limits_measure (entry);
            rc = fpx_op_pack_description (call, entry, false);
        }
    }
    pthread_rwlock_unlock (lock);
    return rc;
}

//  attach's role merge_from: FAISS's entry.merge_from (ref, add_id), for two
//  standalone anonymous indexes of this connection (a named index's log
//  could not replay another connection's object). Both exclusively, in
//  address order, as attach.
static int
s_merge_from (fpx_call_t *call, fpx_entry_t *entry, fpx_entry_t *ref, int64_t add_id)
{
    int rc;
    if (!s_mine (call, entry) || !s_mine (call, ref)
    ||  ref == entry || !fpx_entry_index (entry) || !fpx_entry_index (ref))
        return fpx_reply_error (call->reply, FPX_EINVAL, "merge_from takes two anonymous indexes "
                                "of this connection");
    fpx_entry_t *first = entry < ref ? entry : ref, *second = entry < ref ? ref : entry;
    pthread_rwlock_t *lock1 = fpx_op_lock (call, first);
    pthread_rwlock_t *lock2 = fpx_op_lock (call, second);
    if (fpx_entry_root (entry) || fpx_entry_root (ref) || lock1 == lock2)
        rc = fpx_reply_error (call->reply, FPX_EINVAL, "merge_from takes standalone indexes, not "
                              "parts of another object");
    else {
        char err [FPX_ERROR_TEXT_MAX];
        rc = fpx_shim_merge_from (fpx_entry_index (entry), fpx_entry_index (ref), add_id,
                                  err, sizeof err);
        if (rc)
            rc = fpx_op_shim_result (call, rc, err);
        else {
            fpx_limits_measure (entry);
            fpx_limits_measure (ref);
            rc = fpx_op_pack_description (call, entry, false);
        }
    }
    if (lock2 != lock1)
        pthread_rwlock_unlock (lock2);
    pthread_rwlock_unlock (lock1);
    return rc;
}

//  attach: an anonymous top-level composite of this connection adopts a
//  standalone anonymous object of this connection (add_shard,
//  add_replica, prepend_transform). Named indexes are refused: their log
//  could not replay an object that only this connection holds.
int
fpx_handle_attach_req (fpx_call_t *call, const fpx_attach_req_t *req)
{
    const char *role = req->role;
    fpx_entry_t *entry, *ref;
    int rc = fpx_op_find_index (call, req->name, &entry);
    if (rc)
        return rc;
    ref = fpx_registry_find (call->server->registry, call->envelope->tenant_id, req->ref,
                             call->envelope->conn_id);
    if (!ref) {
        rc = fpx_reply_error (call->reply, FPX_ENOTFOUND, "no object named '%s'", req->ref);
        fpx_entry_release (&entry);
        return rc;
    }
    if (strncmp (role, "remove_", 7) == 0)
        rc = s_detach (call, entry, ref, role);
    else if (strcmp (role, "merge_from") == 0)
        rc = s_merge_from (call, entry, ref, req->add_id);
    else
    if (!s_mine (call, entry) || !s_mine (call, ref)
    ||  ref == entry || fpx_entry_root (entry) || fpx_entry_root (ref))
        rc = fpx_reply_error (call->reply, FPX_EINVAL, "attach takes an anonymous composite and "
                              "another anonymous object, both of this connection and neither "
                              "part of another object");
    else {
        //  Both exclusively, in address order (as construct); the roots are
        //  checked again under the locks. Neither had a root above, so
        //  their locks differ: nothing can adopt one into the other's tree
        //  without the first lock, which this worker holds.
        fpx_entry_t *first = entry < ref ? entry : ref, *second = entry < ref ? ref : entry;
        pthread_rwlock_t *lock1 = fpx_op_lock (call, first);
        pthread_rwlock_t *lock2 = fpx_op_lock (call, second);
        if (fpx_entry_root (entry) || fpx_entry_root (ref) || lock1 == lock2)
            rc = fpx_reply_error (call->reply, FPX_EINVAL, "'%s' is part of another object: "
                                  "attach takes standalone objects", fpx_entry_root (ref)
                                  ? fpx_entry_name (ref) : fpx_entry_name (entry));
        else {
            char err [FPX_ERROR_TEXT_MAX];
            rc = fpx_shim_attach (fpx_entry_index (entry), role, fpx_entry_index (ref),
                                  fpx_entry_transform (ref), err, sizeof err);
            if (rc)
                rc = fpx_op_shim_result (call, rc, err);
            else {
                fpx_registry_adopt (ref, entry);
                fpx_limits_measure (entry);
                rc = fpx_op_pack_description (call, entry, false);
            }
        }
        if (lock2 != lock1)
            pthread_rwlock_unlock (lock2);
        pthread_rwlock_unlock (lock1);
    }
    fpx_entry_release (&ref);
    fpx_entry_release (&entry);
    return rc ? rc : call->reply->status;
}

int
fpx_handle_subobject_req (fpx_call_t *call, const fpx_subobject_req_t *req)
{
    const char *path = req->path;
    fpx_entry_t *entry;
    int rc = fpx_op_find_index (call, req->name, &entry);
    if (rc)
        return rc;
    fpx_object_t object = { .factory = "" };
    char err [FPX_ERROR_TEXT_MAX];
    pthread_rwlock_t *lock = fpx_op_lock (call, entry);
    rc = fpx_shim_subobject (fpx_entry_index (entry), path, &object.index, &object.transform,
                             err, sizeof err);
    pthread_rwlock_unlock (lock);
    if (rc) {
        fpx_entry_release (&entry);
        return fpx_op_shim_result (call, rc, err);
    }
    object.root = entry;            //  the view keeps our reference
    fpx_entry_t *view;
    rc = fpx_registry_insert (call->server->registry, call->envelope->tenant_id, NULL,
                              call->envelope->conn_id, &object, &view);
    if (rc) {
        fpx_entry_release (&entry);
        return fpx_reply_error (call->reply, rc, "out of memory");
    }
    lock = fpx_entry_lock_settled (view, false);
    rc = fpx_op_pack_description (call, view, false);
    pthread_rwlock_unlock (lock);
    fpx_entry_release (&view);
    return rc;
}

int
fpx_handle_get_attr_req (fpx_call_t *call, const fpx_get_attr_req_t *req)
{
    const char *attr = req->attr;
    fpx_entry_t *entry;
    int rc = fpx_op_find (call, req->name, &entry);
    if (rc)
        return rc;
    double value = 0;
    char err [FPX_ERROR_TEXT_MAX];
    //  ntotal counts without a removal rebuilding in the background, as
    //  describe does (rebuild.h); other fields wait for it to land.
    const fpx_shim_rebuild_t *pending = NULL;
    pthread_rwlock_t *lock = strcmp (attr, "ntotal") == 0
                           ? fpx_entry_lock_filtered (entry, false, &pending)
                           : fpx_op_lock (call, entry);
    rc = fpx_shim_get_attr (fpx_entry_index (entry), fpx_entry_transform (entry), attr, &value,
                            err, sizeof err);
    if (rc == 0 && fpx_entry_index (entry))
        value -= (double) fpx_shim_rebuild_removed (pending);
    pthread_rwlock_unlock (lock);
    fpx_entry_release (&entry);
    if (rc)
        return fpx_op_shim_result (call, rc, err);
    msgpack_pack_map (&call->reply->pk, 1);
    fpx_pack_kv_double (&call->reply->pk, "value", value);
    return 0;
}

typedef struct {
    const char *attr;
    double value;
} s_attr_t;

static int
s_apply_attr (fpx_call_t *call, fpx_entry_t *entry, void *arg)
{
    s_attr_t *a = arg;
    char err [FPX_ERROR_TEXT_MAX];
    int rc = fpx_shim_set_attr (fpx_entry_index (entry), fpx_entry_transform (entry), a->attr,
                                a->value, err, sizeof err);
    if (rc)
        return fpx_op_shim_result (call, rc, err);
    fpx_op_pack_empty (call);
    return 0;
}

int
fpx_handle_set_attr_req (fpx_call_t *call, const fpx_set_attr_req_t *req)
{
    s_attr_t a = { .attr = req->attr, .value = req->value };
    fpx_entry_t *entry;
    int rc = fpx_op_find (call, req->name, &entry);
    if (rc)
        return rc;
    fpx_record_t record = { .kind = FPX_REC_SET_ATTR, .parts = { &a.value, a.attr },
                            .sizes = { sizeof a.value, strlen (a.attr) }, .nparts = 2 };
    rc = fpx_op_mutate (call, entry, &record, s_apply_attr, &a);
    fpx_entry_release (&entry);
    return rc;
}

int
fpx_handle_clone_req (fpx_call_t *call, const fpx_clone_req_t *req)
{
    fpx_entry_t *entry;
    int rc = fpx_op_find_index (call, req->name, &entry);
    if (rc)
        return rc;
    fpx_object_t object = { .factory = fpx_entry_factory (entry) };
    pthread_rwlock_t *lock = fpx_op_lock (call, entry);
    char err [FPX_ERROR_TEXT_MAX];
    rc = fpx_shim_clone (fpx_entry_index (entry), &object.index, err, sizeof err);
    rc = fpx_op_shim_result (call, rc, err);
    pthread_rwlock_unlock (lock);
    if (!rc)
        rc = fpx_op_register (call, NULL, &object);
    fpx_entry_release (&entry);
    return rc;
}

//  apply on an index: FAISS's standalone codec. sa_encode: vectors in,
//  n·code_size bytes out; reverse (sa_decode): codes in (a whole number
//  of codes, at least one), vectors out. Shared lock: neither changes it.
static int
s_apply_codec (fpx_call_t *call, fpx_entry_t *entry, bool reverse)
{
    char err [FPX_ERROR_TEXT_MAX];
    size_t code_size = 0, in_size = 0, out_size = 0;
    int64_t n = 0;
    const void *in = NULL;
    pthread_rwlock_t *lock = fpx_op_lock (call, entry);
    int rc = fpx_shim_sa_code_size (fpx_entry_index (entry), &code_size, err, sizeof err);
    if (rc)
        fpx_op_shim_result (call, rc, err);
    else if (code_size == 0)
        fpx_reply_error (call->reply, FPX_EINVAL, "the index has no standalone codes");
    else if (!reverse) {
        in = fpx_op_vectors (call, 0, fpx_entry_d (entry), &n);
        out_size = (size_t) n * code_size;
    }
    else if ((in = fpx_op_array (call, 0, 1, &in_size, "codes"))) {
        n = (int64_t) (in_size / code_size);
        out_size = (size_t) n * (size_t) fpx_entry_d (entry) * sizeof (float);
        if (in_size == 0 || in_size % code_size) {
            fpx_reply_error (call->reply, FPX_EPROTO, "a codes frame of %zu bytes is not a whole "
                             "number of %zu-byte codes", in_size, code_size);
            in = NULL;
        }
    }
    void *out = NULL;
    if (in && out_size > call->server->config.max_message)
        fpx_reply_error (call->reply, FPX_ETOOBIG, "result of %zu bytes exceeds the message limit",
                         out_size);
    else if (in && !(out = calloc (1, out_size)))
        fpx_reply_error (call->reply, FPX_ENOMEM, "out of memory");
    else if (in) {
        fpx_op_threads_begin (call, n);
        rc = reverse ? fpx_shim_sa_decode (fpx_entry_index (entry), n, in, out, err, sizeof err)
                     : fpx_shim_sa_encode (fpx_entry_index (entry), n, in, out, err, sizeof err);
        fpx_op_threads_end (call);
        if (!fpx_op_shim_result (call, rc, err)) {
            msgpack_pack_map (&call->reply->pk, 2);
            fpx_pack_kv_int (&call->reply->pk, "n", n);
            fpx_pack_kv_int (&call->reply->pk, reverse ? "d" : "code_size",
                             reverse ? fpx_entry_d (entry) : (int64_t) code_size);
            fpx_op_reply_array (call, out, out_size);
            out = NULL;
        }
    }
    pthread_rwlock_unlock (lock);
    free (out);
    return call->reply->status;
}

int
fpx_handle_apply_req (fpx_call_t *call, const fpx_apply_req_t *req)
{
    fpx_entry_t *entry;
    bool reverse = req->reverse;
    int rc = fpx_op_find (call, req->name, &entry);
    if (rc)
        return rc;
    if (fpx_entry_index (entry)) {
        rc = s_apply_codec (call, entry, reverse);
        fpx_entry_release (&entry);
        return rc;
    }
    if (!fpx_entry_transform (entry)) {
        fpx_entry_release (&entry);
        return fpx_reply_error (call->reply, FPX_EINVAL, "apply needs a vector transform, or an "
                                "index for sa_encode / sa_decode");
    }
    int d_in = faiss_VectorTransform_d_in (fpx_entry_transform (entry));
    int d_out = faiss_VectorTransform_d_out (fpx_entry_transform (entry));
    int64_t n;
    const float *x = fpx_op_vectors (call, 0, reverse ? d_out : d_in, &n);
    int out_d = reverse ? d_in : d_out;
    size_t bytes = x ? (size_t) n * (size_t) out_d * sizeof (float) : 0;
    float *out = NULL;
    if (x && bytes > call->server->config.max_message)
        fpx_reply_error (call->reply, FPX_ETOOBIG, "result of %zu bytes exceeds the message limit", bytes);
    else if (x && !(out = calloc (1, bytes)))
        fpx_reply_error (call->reply, FPX_ENOMEM, "out of memory");
    else if (x) {
        char err [FPX_ERROR_TEXT_MAX];
        pthread_rwlock_t *lock = fpx_op_lock (call, entry);
        fpx_op_threads_begin (call, n);
        rc = fpx_shim_transform_apply (fpx_entry_transform (entry), reverse, n, x, out,
                                       err, sizeof err);
        fpx_op_threads_end (call);
        pthread_rwlock_unlock (lock);
        if (!fpx_op_shim_result (call, rc, err)) {
            msgpack_pack_map (&call->reply->pk, 2);
            fpx_pack_kv_int (&call->reply->pk, "n", n);
            fpx_pack_kv_int (&call->reply->pk, "d", out_d);
            fpx_op_reply_array (call, out, bytes);
            out = NULL;
        }
    }
    free (out);
    fpx_entry_release (&entry);
    return call->reply->status;
}

static int
s_apply_direct_map (fpx_call_t *call, fpx_entry_t *entry, void *arg)
{
    char err [FPX_ERROR_TEXT_MAX];
    int rc = fpx_shim_set_direct_map (fpx_entry_index (entry), (int) *(uint32_t *) arg,
                                      err, sizeof err);
    if (rc)
        return fpx_op_shim_result (call, rc, err);
    fpx_op_pack_empty (call);
    return 0;
}

int
fpx_handle_set_direct_map_req (fpx_call_t *call, const fpx_set_direct_map_req_t *req)
{
    fpx_entry_t *entry;
    int rc = fpx_op_find_index (call, req->name, &entry);
    if (rc)
        return rc;
    uint32_t stored [2] = { (uint32_t) req->type, 0 };
    fpx_record_t record = { .kind = FPX_REC_SET_DIRECT_MAP, .parts = { stored },
                            .sizes = { sizeof stored }, .nparts = 1 };
    rc = fpx_op_mutate (call, entry, &record, s_apply_direct_map, stored);
    fpx_entry_release (&entry);
    return rc;
}

int
fpx_handle_get_id_map_req (fpx_call_t *call, const fpx_get_id_map_req_t *req)
{
    fpx_entry_t *entry;
    int rc = fpx_op_find_index (call, req->name, &entry);
    if (rc)
        return rc;
    const int64_t *ids;
    size_t n = 0;
    int64_t *copy = NULL;
    char err [FPX_ERROR_TEXT_MAX];
    pthread_rwlock_t *lock = fpx_op_lock (call, entry);
    rc = fpx_shim_id_map (fpx_entry_index (entry), &ids, &n, err, sizeof err);
    if (!rc && n * sizeof (int64_t) > call->server->config.max_message)
        rc = fpx_reply_error (call->reply, FPX_ETOOBIG, "id map exceeds the message limit");
    else if (!rc && (copy = malloc (n ? n * sizeof (int64_t) : 1)) && n)
        memcpy (copy, ids, n * sizeof (int64_t));     //  an empty map's data may be NULL
    pthread_rwlock_unlock (lock);
    fpx_entry_release (&entry);
    if (rc)
        return call->reply->status ? rc : fpx_op_shim_result (call, rc, err);
    if (!copy)
        return fpx_reply_error (call->reply, FPX_ENOMEM, "out of memory");
    fpx_op_pack_int (call, "n", (int64_t) n);
    fpx_op_reply_array (call, copy, n * sizeof (int64_t));
    return 0;
}

int
fpx_handle_kmeans_req (fpx_call_t *call, const fpx_kmeans_req_t *req)
{
    int64_t d = req->d, k = req->k, n;
    fpx_shim_kmeans_params_t params = {
        .niter = (int) req->niter, .nredo = (int) req->nredo, .seed = (int) req->seed,
        .min_points_per_centroid = (int) req->min_points_per_centroid,
        .max_points_per_centroid = (int) req->max_points_per_centroid,
        .metric = (int) req->metric, .spherical = req->spherical,
        .int_centroids = req->int_centroids, .update_index = req->update_index,
    };
    int rc;
    const float *x = fpx_op_vectors (call, 0, (int) d, &n);
    if (!x)
        return call->reply->status;
    size_t centroid_bytes = (size_t) k * (size_t) d * sizeof (float);
    size_t stats_count = (size_t) params.niter * (size_t) params.nredo;
    if (centroid_bytes > call->server->config.max_message)
        return fpx_reply_error (call->reply, FPX_ETOOBIG, "k*d centroids exceed the message limit");
    float *centroids = calloc (1, centroid_bytes);   //  FAISS writes it whole; zeroed anyway
    double *stats = calloc (stats_count, FPX_KMEANS_STATS * sizeof (double));
    int iterations = 0;
    char err [FPX_ERROR_TEXT_MAX];
    if (!centroids || !stats)
        rc = fpx_reply_error (call->reply, FPX_ENOMEM, "out of memory");
    else {
        fpx_op_threads_begin (call, 0);
        rc = fpx_shim_kmeans ((int) d, (int) k, n, x, &params, centroids, stats, &iterations,
                              err, sizeof err);
        fpx_op_threads_end (call);
        fpx_op_shim_result (call, rc, err);
    }
    if (rc) {
        free (centroids);
        free (stats);
        return call->reply->status;
    }
    if ((size_t) iterations > stats_count)
        iterations = (int) stats_count;
    msgpack_pack_map (&call->reply->pk, 3);
    fpx_pack_kv_int (&call->reply->pk, "k", k);
    fpx_pack_kv_int (&call->reply->pk, "d", d);
    fpx_pack_kv_int (&call->reply->pk, "iterations", iterations);
    fpx_op_reply_array (call, centroids, centroid_bytes);
    fpx_op_reply_array (call, stats, (size_t) iterations * FPX_KMEANS_STATS * sizeof (double));
    return 0;
}
