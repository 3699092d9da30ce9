/*  fuzz_seeds.c — see fuzz_seeds.h.                                     */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <faiss/c_api/Index_c.h>
#include <faiss/c_api/index_factory_c.h>
#include <faiss/c_api/index_io_c.h>

#include "fpx_params.h"
#include "fpx_protocol.h"
#include "fuzz_seeds.h"

const char *const fpx_fuzz_base_names [] = {
    "fz_flat", "fz_idmap", "fz_ivf", "fz_hnsw", "fz_pq", "fz_sq", "fz_pre", NULL
};

//  The factory strings of the base indexes, in fpx_fuzz_base_names order.
static const char *const s_base_factories [] = {
    "Flat", "IDMap,Flat", "IVF4,Flat", "HNSW8", "PQ4x4np", "SQ8", "PCA4,Flat"
};

//  Every index type the seeds upload (and create). Product quantizers
//  are seeded without polysemous training ("np"): FAISS's default one
//  takes from tens of seconds to minutes even on 256 vectors.
static const char *const s_factories [] = {
    "Flat", "IDMap,Flat", "IDMap2,Flat", "IVF4,Flat", "IVF4,PQ4x4np", "IVF4,SQ8", "IVF4,SQfp16",
    "HNSW8", "HNSW8,SQ8", "HNSW8,Flat", "PQ4np", "PQ4x4np", "SQ8", "SQ4", "SQfp16", "LSH",
    "PCA8,Flat", "PCA4,IVF4,Flat", "OPQ4,PQ4np", "OPQ4_8,IVF4,PQ4x4np", "Flat,RFlat", "PQ4np,RFlat",
    "IVF4,Flat,RFlat", "L2norm,Flat", "RR8,Flat", "IDMap,HNSW8", "IVF4_HNSW8,Flat",
};

typedef struct {
    fpx_fuzz_seed_fn fn;
    void *arg;
    uint64_t id;
    int count;
} s_ctx_t;

typedef struct {
    msgpack_sbuffer sb;
    msgpack_packer pk;
} s_map_t;

static void
s_map (s_map_t *map, int entries)
{
    msgpack_sbuffer_init (&map->sb);
    msgpack_packer_init (&map->pk, &map->sb, msgpack_sbuffer_write);
    msgpack_pack_map (&map->pk, (size_t) entries);
}

static float *
s_vectors (int n, int seed)
{
    float *x = malloc ((size_t) n * FPX_FUZZ_D * sizeof *x);
    if (!x)
        abort ();
    uint64_t state = (uint64_t) seed * 7919 + 1;
    for (int i = 0; i < n * FPX_FUZZ_D; i++)
        x [i] = (float) (fpx_fuzz_rand (&state) % 10000) / 10000.0f;
    return x;
}

//  Emits one request; frees map (may be NULL: an empty parameters frame).
static void
s_emit (s_ctx_t *ctx, const char *label, int opcode, s_map_t *map,
        const void *a0, size_t s0, const void *a1, size_t s1)
{
    fpx_header_t header;
    memset (&header, 0, sizeof header);
    header.version = FPX_PROTOCOL_VERSION;
    header.opcode = (uint16_t) opcode;
    header.request_id = ++ctx->id;
    snprintf (header.api_key, sizeof header.api_key, "%s", FPX_FUZZ_KEY);
    uint8_t head [FPX_REQUEST_HEADER_SIZE];
    fpx_header_encode_request (&header, head);
    fpx_fuzz_buf_t request = { 0 };
    fpx_fuzz_buf_frame (&request, head, sizeof head);
    if (map) {
        fpx_fuzz_buf_frame (&request, map->sb.data, map->sb.size);
        msgpack_sbuffer_destroy (&map->sb);
    }
    else
        fpx_fuzz_buf_frame (&request, NULL, 0);
    if (a0)
        fpx_fuzz_buf_frame (&request, a0, s0);
    if (a1)
        fpx_fuzz_buf_frame (&request, a1, s1);
    ctx->fn (ctx->arg, label, opcode, &request);
    fpx_fuzz_buf_free (&request);
    ctx->count++;
}

//  A request that takes only a name.
static void
s_named (s_ctx_t *ctx, const char *label, int opcode, const char *name)
{
    s_map_t map;
    s_map (&map, 1);
    fpx_pack_kv_str (&map.pk, "name", name);
    s_emit (ctx, label, opcode, &map, NULL, 0, NULL, 0);
}

static void
s_create (s_ctx_t *ctx, const char *label, const char *name, const char *factory, int metric)
{
    s_map_t map;
    s_map (&map, name ? 4 : 3);
    fpx_pack_kv_int (&map.pk, "d", FPX_FUZZ_D);
    fpx_pack_kv_str (&map.pk, "factory", factory);
    fpx_pack_kv_int (&map.pk, "metric", metric);
    if (name)
        fpx_pack_kv_str (&map.pk, "name", name);
    s_emit (ctx, label, FPX_OP_CREATE, &map, NULL, 0, NULL, 0);
}

static void
s_vectors_op (s_ctx_t *ctx, const char *label, int opcode, const char *name, int n, int seed)
{
    float *x = s_vectors (n, seed);
    s_map_t map;
    s_map (&map, 2);
    fpx_pack_kv_str (&map.pk, "name", name);
    fpx_pack_kv_int (&map.pk, "d", FPX_FUZZ_D);
    s_emit (ctx, label, opcode, &map, x, (size_t) n * FPX_FUZZ_D * sizeof *x, NULL, 0);
    free (x);
}

static void
s_add_with_ids (s_ctx_t *ctx, const char *label, const char *name, int n, int64_t first)
{
    float *x = s_vectors (n, (int) first);
    int64_t *ids = malloc ((size_t) n * sizeof *ids);
    if (!ids)
        abort ();
    for (int i = 0; i < n; i++)
        ids [i] = first + i;
    s_map_t map;
    s_map (&map, 2);
    fpx_pack_kv_str (&map.pk, "name", name);
    fpx_pack_kv_int (&map.pk, "d", FPX_FUZZ_D);
    s_emit (ctx, label, FPX_OP_ADD_WITH_IDS, &map, x, (size_t) n * FPX_FUZZ_D * sizeof *x,
            ids, (size_t) n * sizeof *ids);
    free (x);
    free (ids);
}

void
fpx_fuzz_setup_requests (fpx_fuzz_seed_fn fn, void *arg)
{
    s_ctx_t ctx = { .fn = fn, .arg = arg, .id = 1000000 };
    for (int i = 0; fpx_fuzz_base_names [i]; i++) {
        const char *name = fpx_fuzz_base_names [i];
        s_create (&ctx, "setup-create", name, s_base_factories [i], 1);
        if (strcmp (name, "fz_idmap") == 0)
            s_add_with_ids (&ctx, "setup-add", name, 64, 1000);
        else {
            s_vectors_op (&ctx, "setup-train", FPX_OP_TRAIN, name, 256, 1);
            s_vectors_op (&ctx, "setup-add", FPX_OP_ADD, name, 64, 2);
        }
    }
}

//  FAISS in-process: an index of the factory, trained and filled.
static uint8_t *
s_serialized (const char *factory, size_t *size_p);

int
fpx_fuzz_upload_seeds (fpx_fuzz_upload_fn fn, void *arg)
{
    int count = 0;
    for (size_t i = 0; i < sizeof s_factories / sizeof s_factories [0]; i++) {
        size_t size = 0;
        uint8_t *bytes = s_serialized (s_factories [i], &size);
        if (!bytes)
            continue;
        fn (arg, s_factories [i], bytes, size);
        free (bytes);
        count++;
    }
    return count;
}

float *
fpx_fuzz_vectors (int n, int seed)
{
    return s_vectors (n, seed);
}

static uint8_t *
s_serialized (const char *factory, size_t *size_p)
{
    FaissIndex *index = NULL;
    if (faiss_index_factory (&index, FPX_FUZZ_D, factory, METRIC_L2))
        return NULL;
    float *x = s_vectors (256, 3);
    int rc = faiss_Index_is_trained (index) ? 0 : faiss_Index_train (index, 256, x);
    if (rc == 0) {
        if (strncmp (factory, "IDMap", 5) == 0) {
            int64_t ids [32];
            for (int i = 0; i < 32; i++)
                ids [i] = 5000 + 3 * i;
            rc = faiss_Index_add_with_ids (index, 32, x, ids);
        }
        else
            rc = faiss_Index_add (index, 32, x);
    }
    free (x);
    char *buf = NULL;
    size_t size = 0;
    FILE *file = rc == 0 ? open_memstream (&buf, &size) : NULL;
    if (file) {
        rc = faiss_write_index (index, file);
        fclose (file);
    }
    faiss_Index_free (index);
    if (rc || !buf) {
        free (buf);
        return NULL;
    }
    *size_p = size;
    return (uint8_t *) buf;
}

static void
s_search (s_ctx_t *ctx, const char *label, const char *name, const char *extra, int64_t value)
{
    float *x = s_vectors (2, 9);
    s_map_t map;
    s_map (&map, extra ? 4 : 3);
    fpx_pack_kv_str (&map.pk, "name", name);
    fpx_pack_kv_int (&map.pk, "d", FPX_FUZZ_D);
    fpx_pack_kv_int (&map.pk, "k", 4);
    if (extra)
        fpx_pack_kv_int (&map.pk, extra, value);
    s_emit (ctx, label, FPX_OP_SEARCH, &map, x, 2 * FPX_FUZZ_D * sizeof *x, NULL, 0);
    free (x);
}

static void
s_construct (s_ctx_t *ctx, const char *type, const double *args, int nargs)
{
    s_map_t map;
    s_map (&map, 3);
    fpx_pack_kv_str (&map.pk, "type", type);
    fpx_pack_str (&map.pk, "args");
    msgpack_pack_array (&map.pk, (size_t) nargs);
    for (int i = 0; i < nargs; i++) {
        if (args [i] == floor (args [i]))
            msgpack_pack_int64 (&map.pk, (int64_t) args [i]);
        else
            msgpack_pack_double (&map.pk, args [i]);
    }
    fpx_pack_str (&map.pk, "refs");
    msgpack_pack_array (&map.pk, 0);
    s_emit (ctx, "construct", FPX_OP_CONSTRUCT, &map, NULL, 0, NULL, 0);
}

int
fpx_fuzz_seed_requests (fpx_fuzz_seed_fn fn, void *arg)
{
    s_ctx_t ctx = { .fn = fn, .arg = arg };
    s_emit (&ctx, "ping", FPX_OP_PING, NULL, NULL, 0, NULL, 0);
    s_emit (&ctx, "info", FPX_OP_INFO, NULL, NULL, 0, NULL, 0);
    s_map_t info;
    s_map (&info, 2);
    fpx_pack_kv_int (&info.pk, "max_indexes", 3);
    fpx_pack_kv_bool (&info.pk, "all", true);
    s_emit (&ctx, "info-params", FPX_OP_INFO, &info, NULL, 0, NULL, 0);
    s_emit (&ctx, "list", FPX_OP_LIST, NULL, NULL, 0, NULL, 0);
    for (size_t i = 0; i < sizeof s_factories / sizeof s_factories [0]; i++)
        s_create (&ctx, "create", "fz_new", s_factories [i], (int) (i % 2));
    s_create (&ctx, "create-anonymous", NULL, "Flat", 1);
    s_named (&ctx, "open", FPX_OP_OPEN, "fz_flat");
    s_named (&ctx, "drop", FPX_OP_DROP, "fz_new");
    for (int i = 0; fpx_fuzz_base_names [i]; i++) {
        const char *name = fpx_fuzz_base_names [i];
        s_map_t map;
        s_map (&map, 2);
        fpx_pack_kv_str (&map.pk, "name", name);
        fpx_pack_kv_bool (&map.pk, "memory", true);
        s_emit (&ctx, "describe", FPX_OP_DESCRIBE, &map, NULL, 0, NULL, 0);
        s_search (&ctx, "search", name, NULL, 0);
        s_named (&ctx, "serialize", FPX_OP_SERIALIZE, name);
        s_named (&ctx, "clone", FPX_OP_CLONE, name);
    }
    s_vectors_op (&ctx, "train", FPX_OP_TRAIN, "fz_ivf", 256, 4);
    s_vectors_op (&ctx, "add", FPX_OP_ADD, "fz_flat", 4, 5);
    s_vectors_op (&ctx, "add", FPX_OP_ADD, "fz_hnsw", 4, 6);
    s_add_with_ids (&ctx, "add_with_ids", "fz_idmap", 4, 9000);
    s_search (&ctx, "search-nprobe", "fz_ivf", "nprobe", 2);
    s_search (&ctx, "search-efsearch", "fz_hnsw", "efSearch", 16);
    {
        float *x = s_vectors (2, 10);
        s_map_t map;
        s_map (&map, 3);
        fpx_pack_kv_str (&map.pk, "name", "fz_flat");
        fpx_pack_kv_int (&map.pk, "d", FPX_FUZZ_D);
        fpx_pack_kv_double (&map.pk, "radius", 0.5);
        s_emit (&ctx, "range_search", FPX_OP_RANGE_SEARCH, &map, x, 2 * FPX_FUZZ_D * sizeof *x, NULL, 0);
        free (x);
    }
    {
        int64_t ids [3] = { 1000, 1001, 999999 };
        s_map_t map;
        s_map (&map, 1);
        fpx_pack_kv_str (&map.pk, "name", "fz_idmap");
        s_emit (&ctx, "remove_ids", FPX_OP_REMOVE_IDS, &map, ids, sizeof ids, NULL, 0);
        s_map (&map, 3);
        fpx_pack_kv_str (&map.pk, "name", "fz_flat");
        fpx_pack_kv_int (&map.pk, "lo", 60);
        fpx_pack_kv_int (&map.pk, "hi", 62);
        s_emit (&ctx, "remove_ids-range", FPX_OP_REMOVE_IDS, &map, NULL, 0, NULL, 0);
        s_map (&map, 2);
        fpx_pack_kv_str (&map.pk, "name", "fz_flat");
        fpx_pack_kv_int (&map.pk, "key", 3);
        s_emit (&ctx, "reconstruct", FPX_OP_RECONSTRUCT, &map, NULL, 0, NULL, 0);
        s_map (&map, 3);
        fpx_pack_kv_str (&map.pk, "name", "fz_flat");
        fpx_pack_kv_int (&map.pk, "i0", 2);
        fpx_pack_kv_int (&map.pk, "n", 4);
        s_emit (&ctx, "reconstruct_n", FPX_OP_RECONSTRUCT_N, &map, NULL, 0, NULL, 0);
        s_map (&map, 2);
        fpx_pack_kv_str (&map.pk, "name", "fz_ivf");
        fpx_pack_kv_str (&map.pk, "params", "nprobe=2");
        s_emit (&ctx, "set_parameters", FPX_OP_SET_PARAMETERS, &map, NULL, 0, NULL, 0);
        s_map (&map, 2);
        fpx_pack_kv_str (&map.pk, "name", "fz_hnsw");
        fpx_pack_kv_str (&map.pk, "params", "efSearch=32");
        s_emit (&ctx, "set_parameters", FPX_OP_SET_PARAMETERS, &map, NULL, 0, NULL, 0);
    }
    s_named (&ctx, "reset", FPX_OP_RESET, "fz_new");
    //  Uploads: an index of every type, named and anonymous.
    for (size_t i = 0; i < sizeof s_factories / sizeof s_factories [0]; i++) {
        size_t size = 0;
        uint8_t *bytes = s_serialized (s_factories [i], &size);
        if (!bytes)
            continue;
        s_map_t map;
        s_map (&map, i % 2 ? 2 : 1);
        fpx_pack_kv_str (&map.pk, "factory", s_factories [i]);
        if (i % 2)
            fpx_pack_kv_str (&map.pk, "name", "fz_up");
        s_emit (&ctx, "deserialize", FPX_OP_DESERIALIZE, &map, bytes, size, NULL, 0);
        free (bytes);
    }
    {
        static const double flat [] = { FPX_FUZZ_D, 1 }, hnsw [] = { FPX_FUZZ_D, 8, 1 },
            pq [] = { FPX_FUZZ_D, 4, 8, 1 }, sq [] = { FPX_FUZZ_D, 1, 1 },
            lsh [] = { FPX_FUZZ_D, 16, 1, 0 }, pca [] = { FPX_FUZZ_D, 4, 0.5, 0 },
            opq [] = { FPX_FUZZ_D, 4, -1 }, rr [] = { FPX_FUZZ_D, 4 }, norm [] = { FPX_FUZZ_D, 2 },
            d [] = { FPX_FUZZ_D };
        s_construct (&ctx, "IndexFlat", flat, 2);
        s_construct (&ctx, "IndexFlatIP", d, 1);
        s_construct (&ctx, "IndexHNSWFlat", hnsw, 3);
        s_construct (&ctx, "IndexPQ", pq, 4);
        s_construct (&ctx, "IndexScalarQuantizer", sq, 3);
        s_construct (&ctx, "IndexLSH", lsh, 4);
        s_construct (&ctx, "PCAMatrix", pca, 4);
        s_construct (&ctx, "OPQMatrix", opq, 3);
        s_construct (&ctx, "RandomRotationMatrix", rr, 2);
        s_construct (&ctx, "NormalizationTransform", norm, 2);
        s_construct (&ctx, "CenteringTransform", d, 1);
    }
    {
        s_map_t map;
        s_map (&map, 2);
        fpx_pack_kv_str (&map.pk, "name", "fz_ivf");
        fpx_pack_kv_str (&map.pk, "path", "quantizer");
        s_emit (&ctx, "subobject", FPX_OP_SUBOBJECT, &map, NULL, 0, NULL, 0);
        s_map (&map, 2);
        fpx_pack_kv_str (&map.pk, "name", "fz_pre");
        fpx_pack_kv_str (&map.pk, "path", "chain.0");
        s_emit (&ctx, "subobject", FPX_OP_SUBOBJECT, &map, NULL, 0, NULL, 0);
        s_map (&map, 2);
        fpx_pack_kv_str (&map.pk, "name", "fz_ivf");
        fpx_pack_kv_str (&map.pk, "attr", "nprobe");
        s_emit (&ctx, "get_attr", FPX_OP_GET_ATTR, &map, NULL, 0, NULL, 0);
        s_map (&map, 2);
        fpx_pack_kv_str (&map.pk, "name", "fz_hnsw");
        fpx_pack_kv_str (&map.pk, "attr", "efSearch");
        s_emit (&ctx, "get_attr", FPX_OP_GET_ATTR, &map, NULL, 0, NULL, 0);
        s_map (&map, 3);
        fpx_pack_kv_str (&map.pk, "name", "fz_ivf");
        fpx_pack_kv_str (&map.pk, "attr", "nprobe");
        fpx_pack_kv_int (&map.pk, "value", 3);
        s_emit (&ctx, "set_attr", FPX_OP_SET_ATTR, &map, NULL, 0, NULL, 0);
        float *x = s_vectors (64, 11);
        s_map (&map, 5);
        fpx_pack_kv_int (&map.pk, "d", FPX_FUZZ_D);
        fpx_pack_kv_int (&map.pk, "k", 4);
        fpx_pack_kv_int (&map.pk, "niter", 5);
        fpx_pack_kv_int (&map.pk, "seed", 7);
        fpx_pack_kv_bool (&map.pk, "spherical", false);
        s_emit (&ctx, "kmeans", FPX_OP_KMEANS, &map, x, 64 * FPX_FUZZ_D * sizeof *x, NULL, 0);
        s_map (&map, 3);
        fpx_pack_kv_str (&map.pk, "name", "fz_pre");
        fpx_pack_kv_int (&map.pk, "d", FPX_FUZZ_D);
        fpx_pack_kv_bool (&map.pk, "reverse", false);
        s_emit (&ctx, "apply", FPX_OP_APPLY, &map, x, 4 * FPX_FUZZ_D * sizeof *x, NULL, 0);
        free (x);
        s_map (&map, 2);
        fpx_pack_kv_str (&map.pk, "name", "fz_ivf");
        fpx_pack_kv_int (&map.pk, "type", 1);
        s_emit (&ctx, "set_direct_map", FPX_OP_SET_DIRECT_MAP, &map, NULL, 0, NULL, 0);
    }
    s_named (&ctx, "get_id_map", FPX_OP_GET_ID_MAP, "fz_idmap");
    s_named (&ctx, "save", FPX_OP_SAVE, "fz_flat");
    //  Chunked transfers: an upload of a small index in two chunks, a
    //  download of a range, an abort (ids as a fresh server numbers them).
    {
        size_t size = 0;
        uint8_t *bytes = s_serialized ("Flat", &size);
        if (bytes && size > 1) {
            s_map_t map;
            s_map (&map, 3);
            fpx_pack_kv_int (&map.pk, "size", (int64_t) size);
            fpx_pack_kv_str (&map.pk, "name", "fz_chunked");
            fpx_pack_kv_str (&map.pk, "factory", "Flat");
            s_emit (&ctx, "upload_begin", FPX_OP_UPLOAD_BEGIN, &map, NULL, 0, NULL, 0);
            size_t half = size / 2;
            s_map (&map, 2);
            fpx_pack_kv_int (&map.pk, "transfer", 1);
            fpx_pack_kv_int (&map.pk, "offset", 0);
            s_emit (&ctx, "upload_chunk", FPX_OP_UPLOAD_CHUNK, &map, bytes, half, NULL, 0);
            s_map (&map, 2);
            fpx_pack_kv_int (&map.pk, "transfer", 1);
            fpx_pack_kv_int (&map.pk, "offset", (int64_t) half);
            s_emit (&ctx, "upload_chunk", FPX_OP_UPLOAD_CHUNK, &map, bytes + half, size - half,
                    NULL, 0);
            s_map (&map, 1);
            fpx_pack_kv_int (&map.pk, "transfer", 1);
            s_emit (&ctx, "upload_commit", FPX_OP_UPLOAD_COMMIT, &map, NULL, 0, NULL, 0);
        }
        free (bytes);
        s_named (&ctx, "download_begin", FPX_OP_DOWNLOAD_BEGIN, "fz_flat");
        s_map_t map;
        s_map (&map, 3);
        fpx_pack_kv_int (&map.pk, "transfer", 2);
        fpx_pack_kv_int (&map.pk, "offset", 8);
        fpx_pack_kv_int (&map.pk, "length", 64);
        s_emit (&ctx, "download_chunk", FPX_OP_DOWNLOAD_CHUNK, &map, NULL, 0, NULL, 0);
        s_map (&map, 1);
        fpx_pack_kv_int (&map.pk, "transfer", 2);
        s_emit (&ctx, "transfer_abort", FPX_OP_TRANSFER_ABORT, &map, NULL, 0, NULL, 0);
    }
    return ctx.count;
}
