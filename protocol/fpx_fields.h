/*  fpx_fields.h — the parameters of each opcode, defined once.

    FPX_FIELDS_<OPCODE>(F) lists the keys of an opcode's parameter map in
    the order clients pack them, one F (type, key, lo, hi, fallback) each:
        NAME  an index name: 1..FPX_NAME_MAX bytes of [A-Za-z0-9_.-]
              (fpx_name_is_valid), or the "@…" handle of an anonymous one;
              required
        INT   an integer in [lo, hi]; required
        BOOL  a bool; optional, false when absent
        STR   a string of lo..hi bytes, no NUL; required
        NUM   a number (int or float; packed as an int when whole); required
        OPT_INT  an integer in [lo, hi]; fallback when absent (clients
              always send it)
        OPT_USER_NAME  a user's index name (no "@…" handle) or nothing:
              packed only when not NULL, "" on the server when absent or
              nil (an anonymous index)
        OMIT_INT  an integer in [lo, hi]; fallback when absent. Clients
              pack it only when has_<key> is set; the server's has_<key>
              says whether it came
        OMIT_BOOL  a bool, false when absent; packed only when true
        OMIT_STR  a string of at most hi bytes, no NUL: packed only when
              neither NULL nor "", "" on the server when absent
        REF   the name or "@…" handle of another object, under its own
              key; required
        FLOAT a finite number within float32's range, packed as a float
              64; required
        NUMS  an array of at most hi finite numbers (ints, floats,
              bools); <key>_count of them; packed even when empty
        NAMES an array of at most hi names or "@…" handles; <key>_count
              of them; packed even when empty
        SELECTOR  a search-time id selector (docs/PROTOCOL.md): an array
              of 1..hi fpx_selector_node_t, packed only when <key>_count
              > 0; their ids and bitmaps come in array frame 1, after the
              queries. The server reads it, with "max_codes", into an
              fpx_select_t (server/select.h) that it frees after the
              handler
    (The OMIT_ types keep the maps of opcodes whose clients always left
    such a key out, info, deserialize, upload_begin, remove_ids, kmeans,
    byte for byte.)
    From it come, for each opcode listed in FPX_FIELDED_OPCODES:
        fpx_<wire>_args_t      what a client packs (strings borrowed)
        fpx_<wire>_pack ()     the client's packer (below)
        fpx_<wire>_req_t       what a server handler receives: every value
                               read and within its bounds, strings copied
                               and NUL-terminated
        fpx_read_<wire> ()     the server's reader (server/fields.c),
                               called by dispatch before the handler
    so adding a field to one of these opcodes touches its line here, the
    handler's logic and a test (docs/ARCHITECTURE.md). Only the map is
    here: array frames (vectors, ids, uploaded bytes) stay the handler's
    to read. Every opcode is listed: one with no parameters has an
    empty list.

    The packers write exactly the bytes the hand-written ones did:
    tests/test_protocol.c and tests/test_fields.c hold the expected
    encodings.                                                           */
#ifndef FPX_FIELDS_H_INCLUDED
#define FPX_FIELDS_H_INCLUDED

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "fpx_params.h"
#include "fpx_protocol.h"

#define FPX_FIELDS_CREATE(F)         F (INT, d, 1, FPX_DIM_MAX, 0)                      \
                                     F (STR, factory, 1, FPX_FACTORY_MAX - 1, 0)        \
                                     F (OPT_INT, metric, 0, FPX_METRIC_MAX, FPX_METRIC_L2) \
                                     F (OPT_USER_NAME, name, 0, 0, 0)
#define FPX_FIELDS_OPEN(F)           F (NAME, name, 0, 0, 0)
#define FPX_FIELDS_DROP(F)           F (NAME, name, 0, 0, 0)
#define FPX_FIELDS_DESCRIBE(F)       F (NAME, name, 0, 0, 0)                            \
                                     F (BOOL, memory, 0, 0, 0)
#define FPX_FIELDS_RECONSTRUCT(F)    F (NAME, name, 0, 0, 0)                            \
                                     F (INT, key, INT64_MIN, INT64_MAX, 0)
#define FPX_FIELDS_RECONSTRUCT_N(F)  F (NAME, name, 0, 0, 0)                            \
                                     F (INT, i0, 0, INT64_MAX, 0)                       \
                                     F (INT, n, 1, INT64_MAX, 0)
#define FPX_FIELDS_RESET(F)          F (NAME, name, 0, 0, 0)
#define FPX_FIELDS_SET_PARAMETERS(F) F (NAME, name, 0, 0, 0)                            \
                                     F (STR, params, 1, FPX_SETPARAM_MAX - 1, 0)
#define FPX_FIELDS_SERIALIZE(F)      F (NAME, name, 0, 0, 0)
#define FPX_FIELDS_CLONE(F)          F (NAME, name, 0, 0, 0)
#define FPX_FIELDS_SAVE(F)           F (NAME, name, 0, 0, 0)
#define FPX_FIELDS_SUBOBJECT(F)      F (NAME, name, 0, 0, 0)                            \
                                     F (STR, path, 1, FPX_TYPE_NAME_MAX - 1, 0)
#define FPX_FIELDS_GET_ATTR(F)       F (NAME, name, 0, 0, 0)                            \
                                     F (STR, attr, 1, FPX_TYPE_NAME_MAX - 1, 0)
#define FPX_FIELDS_SET_ATTR(F)       F (NAME, name, 0, 0, 0)                            \
                                     F (STR, attr, 1, FPX_TYPE_NAME_MAX - 1, 0)         \
                                     F (NUM, value, 0, 0, 0)
#define FPX_FIELDS_SET_DIRECT_MAP(F) F (NAME, name, 0, 0, 0)                            \
                                     F (INT, type, 0, 2, 0)
#define FPX_FIELDS_GET_ID_MAP(F)     F (NAME, name, 0, 0, 0)
#define FPX_FIELDS_UPLOAD_COMMIT(F)  F (INT, transfer, 1, INT64_MAX, 0)
#define FPX_FIELDS_TRANSFER_ABORT(F) F (INT, transfer, 1, INT64_MAX, 0)
#define FPX_FIELDS_INFO(F)           F (OMIT_INT, max_indexes, 0, FPX_INFO_INDEXES_MAX,  \
                                        FPX_INFO_INDEXES_DEFAULT)                       \
                                     F (OMIT_BOOL, all, 0, 0, 0)
#define FPX_FIELDS_DESERIALIZE(F)    F (OPT_USER_NAME, name, 0, 0, 0)                   \
                                     F (OMIT_STR, factory, 0, FPX_FACTORY_MAX - 1, 0)
#define FPX_FIELDS_DOWNLOAD_BEGIN(F) F (NAME, name, 0, 0, 0)
//  length: 0 (absent) for the server's chunk size, which bounds it there.
#define FPX_FIELDS_DOWNLOAD_CHUNK(F) F (INT, transfer, 1, INT64_MAX, 0)                 \
                                     F (INT, offset, 0, INT64_MAX, 0)                   \
                                     F (OPT_INT, length, 1, INT64_MAX, 0)
//  The chunk's bytes come in array frame 0, as they did.
#define FPX_FIELDS_UPLOAD_CHUNK(F)   F (INT, transfer, 1, INT64_MAX, 0)                 \
                                     F (INT, offset, 0, INT64_MAX, 0)
//  The vectors (and ids) come in array frames; d, which old clients did
//  not send, is checked against the object's by fpx_op_vectors.
#define FPX_FIELDS_TRAIN(F)          F (NAME, name, 0, 0, 0)                            \
                                     F (OPT_INT, d, 1, FPX_DIM_MAX, 0)
#define FPX_FIELDS_ADD(F)            FPX_FIELDS_TRAIN (F)
#define FPX_FIELDS_ADD_WITH_IDS(F)   FPX_FIELDS_TRAIN (F)
//  The ids to remove in array frame 0, or the range [lo, hi) in the map.
#define FPX_FIELDS_REMOVE_IDS(F)     F (NAME, name, 0, 0, 0)                            \
                                     F (OMIT_INT, lo, INT64_MIN, INT64_MAX, 0)          \
                                     F (OMIT_INT, hi, INT64_MIN, INT64_MAX, 0)
//  The points in array frame 0; an optional parameter left out is
//  FAISS's default (the client sends only those not 0).
#define FPX_FIELDS_KMEANS(F)         F (INT, d, 1, FPX_DIM_MAX, 0)                      \
                                     F (INT, k, 1, FPX_KMEANS_K_MAX, 0)                 \
                                     F (OMIT_INT, niter, 1, FPX_KMEANS_NITER_MAX, 25)   \
                                     F (OMIT_INT, nredo, 1, 100, 1)                     \
                                     F (OMIT_INT, seed, INT32_MIN, INT32_MAX, 1234)     \
                                     F (OMIT_INT, min_points_per_centroid, 0, INT32_MAX, 39) \
                                     F (OMIT_INT, max_points_per_centroid, 1, INT32_MAX, 256) \
                                     F (OMIT_INT, metric, 0, 1, FPX_METRIC_L2)          \
                                     F (OMIT_BOOL, spherical, 0, 0, 0)                  \
                                     F (OMIT_BOOL, int_centroids, 0, 0, 0)              \
                                     F (OMIT_BOOL, update_index, 0, 0, 0)
//  A search's queries in array frame 0; nprobe and efSearch only when
//  asked (FAISS's SearchParametersIVF / HNSW), max_codes only when not
//  the index's own.
#define FPX_FIELDS_SEARCH(F)         F (NAME, name, 0, 0, 0)                            \
                                     F (OPT_INT, d, 1, FPX_DIM_MAX, 0)                  \
                                     F (INT, k, 1, FPX_K_MAX, 0)                        \
                                     FPX_FIELDS_SEARCH_PARAMS_ (F)
#define FPX_FIELDS_SEARCH_PARAMS_(F) F (OMIT_INT, nprobe, 1, FPX_SEARCH_PARAM_MAX, 0)   \
                                     F (OMIT_INT, efSearch, 1, FPX_SEARCH_PARAM_MAX, 0) \
                                     F (OMIT_INT, max_codes, 0, INT64_MAX, 0)           \
                                     F (SELECTOR, sel, 0, FPX_SELECTOR_NODES_MAX, 0)
#define FPX_FIELDS_SEARCH_AND_RECONSTRUCT(F) FPX_FIELDS_SEARCH (F)
#define FPX_FIELDS_RANGE_SEARCH(F)   F (NAME, name, 0, 0, 0)                            \
                                     F (OPT_INT, d, 1, FPX_DIM_MAX, 0)                  \
                                     F (FLOAT, radius, 0, 0, 0)                         \
                                     FPX_FIELDS_SEARCH_PARAMS_ (F)
//  The composite's class, its numeric arguments and the objects it adopts.
#define FPX_FIELDS_CONSTRUCT(F)      F (STR, type, 1, FPX_TYPE_NAME_MAX - 1, 0)         \
                                     F (NUMS, args, 0, FPX_CONSTRUCT_ARGS_MAX, 0)       \
                                     F (NAMES, refs, 0, FPX_CONSTRUCT_REFS_MAX, 0)
//  add_id: merge_from's only.
#define FPX_FIELDS_ATTACH(F)         F (NAME, name, 0, 0, 0)                            \
                                     F (STR, role, 1, FPX_TYPE_NAME_MAX - 1, 0)         \
                                     F (REF, ref, 0, 0, 0)                              \
                                     F (OMIT_INT, add_id, 0, INT64_MAX, 0)
//  The rows in array frame 0: vectors (d, which sa_decode's codes have
//  not), or codes when reverse on an index.
#define FPX_FIELDS_APPLY(F)          F (NAME, name, 0, 0, 0)                            \
                                     F (OMIT_INT, d, 1, FPX_DIM_MAX, 0)                 \
                                     F (BOOL, reverse, 0, 0, 0)
#define FPX_FIELDS_LIST(F)
#define FPX_FIELDS_PING(F)
#define FPX_FIELDS_UPLOAD_BEGIN(F)   F (INT, size, 1, (int64_t) 1 << 50, 0)             \
                                     F (OPT_USER_NAME, name, 0, 0, 0)                   \
                                     F (OMIT_STR, factory, 0, FPX_FACTORY_MAX - 1, 0)

/*  The opcodes above: X (OPCODE, wire_name) as in FPX_OPCODES.          */
#define FPX_FIELDED_OPCODES(X)                                               \
    X (CREATE, create)                                                       \
    X (OPEN, open)                                                           \
    X (DROP, drop)                                                           \
    X (DESCRIBE, describe)                                                   \
    X (RECONSTRUCT, reconstruct)                                             \
    X (RECONSTRUCT_N, reconstruct_n)                                         \
    X (RESET, reset)                                                         \
    X (SET_PARAMETERS, set_parameters)                                       \
    X (SERIALIZE, serialize)                                                 \
    X (CLONE, clone)                                                         \
    X (SAVE, save)                                                           \
    X (SUBOBJECT, subobject)                                                 \
    X (GET_ATTR, get_attr)                                                   \
    X (SET_ATTR, set_attr)                                                   \
    X (SET_DIRECT_MAP, set_direct_map)                                       \
    X (GET_ID_MAP, get_id_map)                                               \
    X (UPLOAD_COMMIT, upload_commit)                                         \
    X (TRANSFER_ABORT, transfer_abort)                                       \
    X (INFO, info)                                                           \
    X (DESERIALIZE, deserialize)                                             \
    X (UPLOAD_BEGIN, upload_begin)                                           \
    X (DOWNLOAD_BEGIN, download_begin)                                       \
    X (DOWNLOAD_CHUNK, download_chunk)                                       \
    X (UPLOAD_CHUNK, upload_chunk)                                           \
    X (TRAIN, train)                                                         \
    X (ADD, add)                                                             \
    X (ADD_WITH_IDS, add_with_ids)                                           \
    X (REMOVE_IDS, remove_ids)                                               \
    X (KMEANS, kmeans)                                                       \
    X (SEARCH, search)                                                       \
    X (SEARCH_AND_RECONSTRUCT, search_and_reconstruct)                       \
    X (RANGE_SEARCH, range_search)                                           \
    X (CONSTRUCT, construct)                                                 \
    X (ATTACH, attach)                                                       \
    X (APPLY, apply)                                                         \
    X (LIST, list)                                                           \
    X (PING, ping)

/*  One node of a search-time selector, as the client packs it: "not"
    nodes chain to a leaf, in prefix order (docs/PROTOCOL.md).           */
typedef struct {
    const char *kind;              //  "range", "array", "batch", "bitmap", "not", "all"
    int64_t imin, imax;            //  range only
    bool assume_sorted;            //  range only
    bool has_count;                //  array, batch, bitmap: count travels
    uint64_t count;                //  ids, or bitmap bytes, in the selector frame
} fpx_selector_node_t;

struct fpx_select_t;               //  the server's decoded selection (server/select.h)

static inline void
fpx_pack_kv_numbers (msgpack_packer *pk, const char *key, const double *values, int count)
{
    fpx_pack_str (pk, key);
    msgpack_pack_array (pk, (size_t) count);
    for (int i = 0; i < count; i++)
        fpx_pack_number (pk, values [i]);
}

static inline void
fpx_pack_kv_strs (msgpack_packer *pk, const char *key, const char *const *values, int count)
{
    fpx_pack_str (pk, key);
    msgpack_pack_array (pk, (size_t) count);
    for (int i = 0; i < count; i++)
        fpx_pack_str (pk, values [i]);
}

//  A node: [kind, imin, imax, assume_sorted] for a range, [kind, count]
//  when its count travels, [kind] otherwise.
static inline void
fpx_pack_kv_selector (msgpack_packer *pk, const char *key, const fpx_selector_node_t *nodes,
                      int count)
{
    fpx_pack_str (pk, key);
    msgpack_pack_array (pk, (size_t) count);
    for (int i = 0; i < count; i++) {
        const fpx_selector_node_t *node = &nodes [i];
        bool is_range = strcmp (node->kind, "range") == 0;
        msgpack_pack_array (pk, is_range ? 4 : node->has_count ? 2 : 1);
        fpx_pack_str (pk, node->kind);
        if (is_range) {
            msgpack_pack_int64 (pk, node->imin);
            msgpack_pack_int64 (pk, node->imax);
            if (node->assume_sorted)
                msgpack_pack_true (pk);
            else
                msgpack_pack_false (pk);
        }
        else if (node->has_count)
            msgpack_pack_uint64 (pk, node->count);
    }
}

//  C types of each field type: on the client (args) and the server (req).
#define FPX_FIELD_ARG_NAME(key, hi)  const char *key;
#define FPX_FIELD_ARG_INT(key, hi)   int64_t key;
#define FPX_FIELD_ARG_BOOL(key, hi)  bool key;
#define FPX_FIELD_ARG_STR(key, hi)   const char *key;
#define FPX_FIELD_ARG_NUM(key, hi)   double key;
#define FPX_FIELD_ARG_OPT_INT(key, hi)  int64_t key;
#define FPX_FIELD_ARG_OPT_USER_NAME(key, hi) const char *key;     /* NULL: none */
#define FPX_FIELD_ARG_OMIT_INT(key, hi)  bool has_##key; int64_t key;
#define FPX_FIELD_ARG_OMIT_BOOL(key, hi) bool key;
#define FPX_FIELD_ARG_OMIT_STR(key, hi)  const char *key;        /* NULL or "": none */
#define FPX_FIELD_ARG_REF(key, hi)   const char *key;
#define FPX_FIELD_ARG_FLOAT(key, hi) double key;
#define FPX_FIELD_ARG_NUMS(key, hi)  const double *key; int key##_count;
#define FPX_FIELD_ARG_NAMES(key, hi) const char *const *key; int key##_count;
#define FPX_FIELD_ARG_SELECTOR(key, hi) const fpx_selector_node_t *key; int key##_count;
#define FPX_FIELD_REQ_NAME(key, hi)  char key [FPX_NAME_MAX + 1];
#define FPX_FIELD_REQ_INT(key, hi)   int64_t key;
#define FPX_FIELD_REQ_BOOL(key, hi)  bool key;
#define FPX_FIELD_REQ_STR(key, hi)   char key [(hi) + 1];
#define FPX_FIELD_REQ_NUM(key, hi)   double key;
#define FPX_FIELD_REQ_OPT_INT(key, hi)  int64_t key;
#define FPX_FIELD_REQ_OPT_USER_NAME(key, hi) char key [FPX_NAME_MAX + 1];  /* "": none */
#define FPX_FIELD_REQ_OMIT_INT(key, hi)  bool has_##key; int64_t key;
#define FPX_FIELD_REQ_OMIT_BOOL(key, hi) bool key;
#define FPX_FIELD_REQ_OMIT_STR(key, hi)  char key [(hi) + 1];    /* "": none */
#define FPX_FIELD_REQ_REF(key, hi)   char key [FPX_NAME_MAX + 1];
#define FPX_FIELD_REQ_FLOAT(key, hi) double key;
#define FPX_FIELD_REQ_NUMS(key, hi)  double key [hi]; int key##_count;
#define FPX_FIELD_REQ_NAMES(key, hi) char key [hi][FPX_NAME_MAX + 1]; int key##_count;
#define FPX_FIELD_REQ_SELECTOR(key, hi) struct fpx_select_t *key;   /* NULL: none; owned */
//  has: the has_<key> flag of an OMIT_INT, count: the <key>_count of an
//  array, each expanded only there.
#define FPX_FIELD_PACK_NAME(pk, key, value, has, count) fpx_pack_kv_str (pk, key, value)
#define FPX_FIELD_PACK_INT(pk, key, value, has, count)  fpx_pack_kv_int (pk, key, value)
#define FPX_FIELD_PACK_BOOL(pk, key, value, has, count) fpx_pack_kv_bool (pk, key, value)
#define FPX_FIELD_PACK_STR(pk, key, value, has, count)  fpx_pack_kv_str (pk, key, value)
#define FPX_FIELD_PACK_NUM(pk, key, value, has, count)  fpx_pack_kv_number (pk, key, value)
#define FPX_FIELD_PACK_OPT_INT(pk, key, value, has, count) fpx_pack_kv_int (pk, key, value)
#define FPX_FIELD_PACK_OPT_USER_NAME(pk, key, value, has, count)             \
    if (value)                                                               \
        fpx_pack_kv_str (pk, key, value)
#define FPX_FIELD_PACK_OMIT_INT(pk, key, value, has, count)                  \
    if (has)                                                                 \
        fpx_pack_kv_int (pk, key, value)
#define FPX_FIELD_PACK_OMIT_BOOL(pk, key, value, has, count)                 \
    if (value)                                                               \
        fpx_pack_kv_bool (pk, key, true)
#define FPX_FIELD_PACK_OMIT_STR(pk, key, value, has, count)                  \
    if ((value) && (value) [0])                                              \
        fpx_pack_kv_str (pk, key, value)
#define FPX_FIELD_PACK_REF(pk, key, value, has, count)  fpx_pack_kv_str (pk, key, value)
#define FPX_FIELD_PACK_FLOAT(pk, key, value, has, count) fpx_pack_kv_double (pk, key, value)
#define FPX_FIELD_PACK_NUMS(pk, key, value, has, count)                      \
    fpx_pack_kv_numbers (pk, key, value, count)
#define FPX_FIELD_PACK_NAMES(pk, key, value, has, count)                     \
    fpx_pack_kv_strs (pk, key, value, count)
#define FPX_FIELD_PACK_SELECTOR(pk, key, value, has, count)                  \
    if ((count) > 0)                                                         \
        fpx_pack_kv_selector (pk, key, value, count)
//  Whether a field is in the map: always, but for an absent optional
//  name, the OMIT_ types left out and a selector of no nodes.
#define FPX_FIELD_IN_MAP_NAME(value, has, count)  1
#define FPX_FIELD_IN_MAP_INT(value, has, count)   1
#define FPX_FIELD_IN_MAP_BOOL(value, has, count)  1
#define FPX_FIELD_IN_MAP_STR(value, has, count)   1
#define FPX_FIELD_IN_MAP_NUM(value, has, count)   1
#define FPX_FIELD_IN_MAP_OPT_INT(value, has, count) 1
#define FPX_FIELD_IN_MAP_OPT_USER_NAME(value, has, count) ((value) != NULL)
#define FPX_FIELD_IN_MAP_OMIT_INT(value, has, count)  ((has) != 0)
#define FPX_FIELD_IN_MAP_OMIT_BOOL(value, has, count) ((value) != 0)
#define FPX_FIELD_IN_MAP_OMIT_STR(value, has, count)  ((value) && (value) [0])
#define FPX_FIELD_IN_MAP_REF(value, has, count)   1
#define FPX_FIELD_IN_MAP_FLOAT(value, has, count) 1
#define FPX_FIELD_IN_MAP_NUMS(value, has, count)  1
#define FPX_FIELD_IN_MAP_NAMES(value, has, count) 1
#define FPX_FIELD_IN_MAP_SELECTOR(value, has, count) ((count) > 0)

#define FPX_FIELD_ARG_(type, key, lo, hi, fallback)  FPX_FIELD_ARG_##type (key, hi)
#define FPX_FIELD_REQ_(type, key, lo, hi, fallback)  FPX_FIELD_REQ_##type (key, hi)
#define FPX_FIELD_COUNT_(type, key, lo, hi, fallback)                        \
    + FPX_FIELD_IN_MAP_##type (args->key, args->has_##key, args->key##_count)
#define FPX_FIELD_PACK_(type, key, lo, hi, fallback)                         \
    FPX_FIELD_PACK_##type (pk, #key, args->key, args->has_##key, args->key##_count);

#define FPX_FIELDS_TYPES_(OPCODE, wire)                                      \
    typedef struct { FPX_FIELDS_##OPCODE (FPX_FIELD_ARG_) } fpx_##wire##_args_t; \
    typedef struct { FPX_FIELDS_##OPCODE (FPX_FIELD_REQ_) } fpx_##wire##_req_t;  \
    /*  Packs args as the opcode's parameter map.                      */   \
    static inline void                                                       \
    fpx_##wire##_pack (msgpack_packer *pk, const fpx_##wire##_args_t *args)  \
    {                                                                        \
        (void) args;                                                         \
        msgpack_pack_map (pk, (size_t) (0 FPX_FIELDS_##OPCODE (FPX_FIELD_COUNT_))); \
        FPX_FIELDS_##OPCODE (FPX_FIELD_PACK_)                                \
    }
FPX_FIELDED_OPCODES (FPX_FIELDS_TYPES_)
#undef FPX_FIELDS_TYPES_

#endif
