/*  test_fields.c — the protocol definition (FPX_OPCODES, fpx_fields.h)
    and what is generated from it.

    - the opcode table holds together: codes 1..FPX_OP_LAST_-1 each once,
      wire names unique, and flags that agree with roles and locks (a
      retried opcode is a read, a logged one an exclusive write…);
    - the generated client packers write the bytes the hand-written ones
      did (spelled out here as msgpack), so the wire is unchanged;
    - the generated server readers, against a real faissproxyd: a field
      missing, of another type or out of its bounds is FPX_EINVAL naming
      the field; within bounds the handler gets it (reconstruct_n and
      describe compared with FAISS in-process).
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fpx_fields.h"
#include "fpx_test.h"

#define DIM 8
#define NB  40

static fpx_test_server_t s_server;

/* ---- the table ------------------------------------------------------------- */

static void
test_opcode_table (void *arg)
{
    (void) arg;
    for (int op = 1; op < FPX_OP_LAST_; op++) {
        const fpx_opcode_info_t *row = fpx_opcode_info (op);
        if (!CHECK (row && row->code == op, "code %d has no row", op))
            continue;
        CHECK (strcmp (fpx_opcode_name (op), row->name) == 0, "name of %d", op);
        for (int other = 1; other < op; other++)
            CHECK (strcmp (fpx_opcode_name (other), row->name) != 0, "%s twice", row->name);
        bool retry = row->flags & FPX_OPF_RETRY, logged = row->flags & FPX_OPF_LOGGED;
        CHECK (!retry || (row->role == FPX_ROLE_READ && !logged
                          && !(row->flags & (FPX_OPF_CREATES | FPX_OPF_OWNS))),
               "%s is retried but changes something", row->name);
        CHECK (!logged || (row->lock == FPX_LOCK_WRITE && row->role == FPX_ROLE_WRITE),
               "%s is logged but not an exclusive write", row->name);
        CHECK (row->role == FPX_ROLE_WRITE || row->lock != FPX_LOCK_WRITE,
               "%s takes the write lock for a read key", row->name);
        CHECK (!(row->flags & FPX_OPF_CREATES)
               || (row->flags & (FPX_OPF_GROWS | FPX_OPF_OWNS)) == (FPX_OPF_GROWS | FPX_OPF_OWNS),
               "%s creates objects: it grows memory and may leave one to the connection",
               row->name);
        CHECK (row->summary && row->summary [0], "%s has no summary", row->name);
    }
    CHECK (fpx_opcode_info (0) == NULL && fpx_opcode_info (FPX_OP_LAST_) == NULL
           && fpx_opcode_info (-1) == NULL, "rows outside the list");
    CHECK (strcmp (fpx_role_name (FPX_ROLE_WRITE), "write") == 0
           && strcmp (fpx_lock_name (FPX_LOCK_SERVER), "server") == 0, "role and lock names");
    //  Every opcode with a field table is in FPX_OPCODES under its name.
#define S_FIELDED_(OPCODE, wire)                                             \
    CHECK (fpx_opcode_name (FPX_OP_##OPCODE)                                 \
           && strcmp (fpx_opcode_name (FPX_OP_##OPCODE), #wire) == 0,        \
           "fpx_fields.h names %s %s", #OPCODE, #wire);
    FPX_FIELDED_OPCODES (S_FIELDED_)
#undef S_FIELDED_
}

/* ---- packers ---------------------------------------------------------------- */

//  Compares what pack wrote into mine with the expected bytes.
static void
s_check_bytes (const char *what, const fpx_mp_t *mine, const char *expected, size_t size)
{
    bool same = mine->buf.size == size && memcmp (mine->buf.data, expected, size) == 0;
    CHECK (same, "%s: %zu bytes packed, %zu expected", what, mine->buf.size, size);
}

#define S_EXPECT(what, mp, literal) s_check_bytes (what, mp, literal, sizeof literal - 1)

static void
test_packers_bytes (void *arg)
{
    (void) arg;
    fpx_mp_t mp;
    //  {"name": "ix"}: the map of open, drop, reset, serialize, clone, save.
    const char name_only [] = "\x81\xa4name\xa2ix";
#define S_NAME_ONLY_(wire)                                                   \
    fpx_mp_init (&mp);                                                       \
    fpx_##wire##_pack (&mp.pk, &(fpx_##wire##_args_t) { .name = "ix" });     \
    S_EXPECT (#wire, &mp, name_only);                                        \
    fpx_mp_free (&mp);
    S_NAME_ONLY_ (open)
    S_NAME_ONLY_ (drop)
    S_NAME_ONLY_ (reset)
    S_NAME_ONLY_ (serialize)
    S_NAME_ONLY_ (clone)
    S_NAME_ONLY_ (save)
    S_NAME_ONLY_ (get_id_map)
#undef S_NAME_ONLY_
    fpx_mp_init (&mp);
    fpx_subobject_pack (&mp.pk, &(fpx_subobject_args_t) { .name = "ix", .path = "quantizer" });
    S_EXPECT ("subobject", &mp, "\x82\xa4name\xa2ix\xa4path\xa9quantizer");
    fpx_mp_free (&mp);
    fpx_mp_init (&mp);
    fpx_get_attr_pack (&mp.pk, &(fpx_get_attr_args_t) { .name = "ix", .attr = "nprobe" });
    S_EXPECT ("get_attr", &mp, "\x82\xa4name\xa2ix\xa4" "attr\xa6nprobe");
    fpx_mp_free (&mp);
    //  A whole number goes as an int, any other as a float 64.
    fpx_mp_init (&mp);
    fpx_set_attr_pack (&mp.pk, &(fpx_set_attr_args_t) { .name = "ix", .attr = "nprobe",
                                                        .value = 16 });
    S_EXPECT ("set_attr 16", &mp, "\x83\xa4name\xa2ix\xa4" "attr\xa6nprobe\xa5value\x10");
    fpx_mp_free (&mp);
    fpx_mp_init (&mp);
    fpx_set_attr_pack (&mp.pk, &(fpx_set_attr_args_t) { .name = "ix", .attr = "a", .value = 0.5 });
    S_EXPECT ("set_attr 0.5", &mp, "\x83\xa4name\xa2ix\xa4" "attr\xa1" "a\xa5value"
              "\xcb\x3f\xe0\x00\x00\x00\x00\x00\x00");
    fpx_mp_free (&mp);
    fpx_mp_init (&mp);
    fpx_transfer_abort_pack (&mp.pk, &(fpx_transfer_abort_args_t) { .transfer = 300 });
    S_EXPECT ("transfer_abort", &mp, "\x81\xa8transfer\xcd\x01\x2c");
    fpx_mp_free (&mp);
    fpx_mp_init (&mp);
    fpx_upload_commit_pack (&mp.pk, &(fpx_upload_commit_args_t) { .transfer = 1 });
    S_EXPECT ("upload_commit", &mp, "\x81\xa8transfer\x01");
    fpx_mp_free (&mp);
    fpx_mp_init (&mp);
    fpx_set_direct_map_pack (&mp.pk, &(fpx_set_direct_map_args_t) { .name = "ix", .type = 2 });
    S_EXPECT ("set_direct_map", &mp, "\x82\xa4name\xa2ix\xa4type\x02");
    fpx_mp_free (&mp);
    //  create: the name only when there is one.
    fpx_mp_init (&mp);
    fpx_create_pack (&mp.pk, &(fpx_create_args_t) { .d = 8, .factory = "Flat", .metric = 1,
                                                    .name = "ix" });
    S_EXPECT ("create", &mp, "\x84\xa1" "d\x08\xa7" "factory\xa4" "Flat\xa6metric\x01"
              "\xa4name\xa2ix");
    fpx_mp_free (&mp);
    fpx_mp_init (&mp);
    fpx_create_pack (&mp.pk, &(fpx_create_args_t) { .d = 8, .factory = "Flat", .metric = 1 });
    S_EXPECT ("create anonymous", &mp, "\x83\xa1" "d\x08\xa7" "factory\xa4" "Flat\xa6metric\x01");
    fpx_mp_free (&mp);
    fpx_mp_init (&mp);
    fpx_describe_pack (&mp.pk, &(fpx_describe_args_t) { .name = "ix", .memory = true });
    S_EXPECT ("describe", &mp, "\x82\xa4name\xa2ix\xa6memory\xc3");
    fpx_mp_free (&mp);
    fpx_mp_init (&mp);
    fpx_describe_pack (&mp.pk, &(fpx_describe_args_t) { .name = "ix", .memory = false });
    S_EXPECT ("describe without memory", &mp, "\x82\xa4name\xa2ix\xa6memory\xc2");
    fpx_mp_free (&mp);
    //  msgpack-c's smallest encodings: negative fixint, int 8, uint 32.
    fpx_mp_init (&mp);
    fpx_reconstruct_pack (&mp.pk, &(fpx_reconstruct_args_t) { .name = "ix", .key = -3 });
    S_EXPECT ("reconstruct", &mp, "\x82\xa4name\xa2ix\xa3key\xfd");
    fpx_mp_free (&mp);
    fpx_mp_init (&mp);
    fpx_reconstruct_n_pack (&mp.pk, &(fpx_reconstruct_n_args_t) { .name = "ix", .i0 = 200,
                                                                  .n = 70000 });
    S_EXPECT ("reconstruct_n", &mp, "\x83\xa4name\xa2ix\xa2i0\xcc\xc8\xa1n\xce\x00\x01\x11\x70");
    fpx_mp_free (&mp);
    fpx_mp_init (&mp);
    fpx_set_parameters_pack (&mp.pk, &(fpx_set_parameters_args_t) { .name = "ix",
                                                                    .params = "nprobe=4" });
    S_EXPECT ("set_parameters", &mp, "\x82\xa4name\xa2ix\xa6params\xa8nprobe=4");
    fpx_mp_free (&mp);
    //  info: max_indexes only when has_max_indexes, all only when true.
    fpx_mp_init (&mp);
    fpx_info_pack (&mp.pk, &(fpx_info_args_t) { .max_indexes = 5 });
    S_EXPECT ("info", &mp, "\x80");
    fpx_mp_free (&mp);
    fpx_mp_init (&mp);
    fpx_info_pack (&mp.pk, &(fpx_info_args_t) { .has_max_indexes = true, .max_indexes = 5,
                                                .all = true });
    S_EXPECT ("info max_indexes all", &mp, "\x82\xabmax_indexes\x05\xa3" "all\xc3");
    fpx_mp_free (&mp);
    fpx_mp_init (&mp);
    fpx_info_pack (&mp.pk, &(fpx_info_args_t) { .all = true });
    S_EXPECT ("info all", &mp, "\x81\xa3" "all\xc3");
    fpx_mp_free (&mp);
    //  deserialize, upload_begin: the factory only when neither NULL nor "".
    fpx_mp_init (&mp);
    fpx_deserialize_pack (&mp.pk, &(fpx_deserialize_args_t) { .name = "ix", .factory = "Flat" });
    S_EXPECT ("deserialize", &mp, "\x82\xa4name\xa2ix\xa7" "factory\xa4" "Flat");
    fpx_mp_free (&mp);
    fpx_mp_init (&mp);
    fpx_deserialize_pack (&mp.pk, &(fpx_deserialize_args_t) { .factory = "" });
    S_EXPECT ("deserialize anonymous", &mp, "\x80");
    fpx_mp_free (&mp);
    fpx_mp_init (&mp);
    fpx_upload_begin_pack (&mp.pk, &(fpx_upload_begin_args_t) { .size = 300, .name = "ix" });
    S_EXPECT ("upload_begin", &mp, "\x82\xa4size\xcd\x01\x2c\xa4name\xa2ix");
    fpx_mp_free (&mp);
    fpx_mp_init (&mp);
    fpx_upload_begin_pack (&mp.pk, &(fpx_upload_begin_args_t) { .size = 1, .factory = "Flat" });
    S_EXPECT ("upload_begin anonymous", &mp, "\x82\xa4size\x01\xa7" "factory\xa4" "Flat");
    fpx_mp_free (&mp);
    //  The chunk opcodes' maps; their bytes travel in array frames.
    fpx_mp_init (&mp);
    fpx_download_begin_pack (&mp.pk, &(fpx_download_begin_args_t) { .name = "ix" });
    S_EXPECT ("download_begin", &mp, name_only);
    fpx_mp_free (&mp);
    fpx_mp_init (&mp);
    fpx_download_chunk_pack (&mp.pk, &(fpx_download_chunk_args_t) { .transfer = 2,
                                                                    .offset = 65536,
                                                                    .length = 1000 });
    S_EXPECT ("download_chunk", &mp, "\x83\xa8transfer\x02\xa6offset\xce\x00\x01\x00\x00"
              "\xa6length\xcd\x03\xe8");
    fpx_mp_free (&mp);
    fpx_mp_init (&mp);
    fpx_upload_chunk_pack (&mp.pk, &(fpx_upload_chunk_args_t) { .transfer = 3, .offset = 0 });
    S_EXPECT ("upload_chunk", &mp, "\x82\xa8transfer\x03\xa6offset\x00");
    fpx_mp_free (&mp);
    //  train, add, add_with_ids: the map beside the vector (and id) frames.
    fpx_mp_init (&mp);
    fpx_train_pack (&mp.pk, &(fpx_train_args_t) { .name = "ix", .d = 8 });
    S_EXPECT ("train", &mp, "\x82\xa4name\xa2ix\xa1" "d\x08");
    fpx_mp_free (&mp);
    fpx_mp_init (&mp);
    fpx_add_pack (&mp.pk, &(fpx_add_args_t) { .name = "ix", .d = 200 });
    S_EXPECT ("add", &mp, "\x82\xa4name\xa2ix\xa1" "d\xcc\xc8");
    fpx_mp_free (&mp);
    fpx_mp_init (&mp);
    fpx_add_with_ids_pack (&mp.pk, &(fpx_add_with_ids_args_t) { .name = "ix", .d = 8 });
    S_EXPECT ("add_with_ids", &mp, "\x82\xa4name\xa2ix\xa1" "d\x08");
    fpx_mp_free (&mp);
    //  remove_ids: the name beside an id frame, or the range [lo, hi).
    fpx_mp_init (&mp);
    fpx_remove_ids_pack (&mp.pk, &(fpx_remove_ids_args_t) { .name = "ix", .lo = 4 });
    S_EXPECT ("remove_ids", &mp, name_only);
    fpx_mp_free (&mp);
    fpx_mp_init (&mp);
    fpx_remove_ids_pack (&mp.pk, &(fpx_remove_ids_args_t) { .name = "ix", .has_lo = true,
                                                            .lo = -1, .has_hi = true,
                                                            .hi = 1000 });
    S_EXPECT ("remove_ids range", &mp, "\x83\xa4name\xa2ix\xa2lo\xff\xa2hi\xcd\x03\xe8");
    fpx_mp_free (&mp);
    //  kmeans: d and k, then only the optional parameters set.
    fpx_mp_init (&mp);
    fpx_kmeans_pack (&mp.pk, &(fpx_kmeans_args_t) { .d = 8, .k = 4, .niter = 10, .seed = 7 });
    S_EXPECT ("kmeans", &mp, "\x82\xa1" "d\x08\xa1k\x04");
    fpx_mp_free (&mp);
    fpx_mp_init (&mp);
    fpx_kmeans_pack (&mp.pk, &(fpx_kmeans_args_t) { .d = 8, .k = 4, .has_niter = true,
                                                    .niter = 10, .has_seed = true, .seed = -5,
                                                    .has_metric = true, .metric = 1,
                                                    .spherical = true });
    S_EXPECT ("kmeans with parameters", &mp, "\x86\xa1" "d\x08\xa1k\x04\xa5niter\x0a\xa4seed"
              "\xfb\xa6metric\x01\xa9spherical\xc3");
    fpx_mp_free (&mp);
    //  search: nprobe / efSearch / max_codes only when asked, then the
    //  selector's nodes (their ids travel in a frame of their own).
    fpx_mp_init (&mp);
    fpx_search_pack (&mp.pk, &(fpx_search_args_t) { .name = "ix", .d = 8, .k = 10 });
    S_EXPECT ("search", &mp, "\x83\xa4name\xa2ix\xa1" "d\x08\xa1k\x0a");
    fpx_mp_free (&mp);
    fpx_selector_node_t nodes [] = {
        { .kind = "not" },
        { .kind = "range", .imin = 2, .imax = 300, .assume_sorted = true },
    };
    fpx_mp_init (&mp);
    fpx_search_pack (&mp.pk, &(fpx_search_args_t) { .name = "ix", .d = 8, .k = 1,
                                                    .has_nprobe = true, .nprobe = 4,
                                                    .has_max_codes = true, .max_codes = 0,
                                                    .sel = nodes, .sel_count = 2 });
    S_EXPECT ("search with parameters and a selector", &mp,
              "\x86\xa4name\xa2ix\xa1" "d\x08\xa1k\x01\xa6nprobe\x04\xa9max_codes\x00"
              "\xa3sel\x92\x91\xa3not\x94\xa5range\x02\xcd\x01\x2c\xc3");
    fpx_mp_free (&mp);
    fpx_selector_node_t array_node = { .kind = "array", .has_count = true, .count = 3 };
    fpx_mp_init (&mp);
    fpx_search_and_reconstruct_pack (&mp.pk, &(fpx_search_and_reconstruct_args_t) {
        .name = "ix", .d = 8, .k = 2, .has_efSearch = true, .efSearch = 64,
        .sel = &array_node, .sel_count = 1 });
    S_EXPECT ("search_and_reconstruct", &mp, "\x85\xa4name\xa2ix\xa1" "d\x08\xa1k\x02"
              "\xa8" "efSearch\x40\xa3sel\x91\x92\xa5" "array\x03");
    fpx_mp_free (&mp);
    //  range_search: the radius always as a float 64.
    fpx_mp_init (&mp);
    fpx_range_search_pack (&mp.pk, &(fpx_range_search_args_t) { .name = "ix", .d = 8,
                                                                .radius = 2 });
    S_EXPECT ("range_search", &mp, "\x83\xa4name\xa2ix\xa1" "d\x08\xa6radius"
              "\xcb\x40\x00\x00\x00\x00\x00\x00\x00");
    fpx_mp_free (&mp);
    //  construct: both arrays, even empty; whole numbers as ints.
    double args [] = { 16, 0.5 };
    const char *refs [] = { "@1f", "q" };
    fpx_mp_init (&mp);
    fpx_construct_pack (&mp.pk, &(fpx_construct_args_t) { .type = "IndexIVFFlat", .args = args,
                                                          .args_count = 2, .refs = refs,
                                                          .refs_count = 2 });
    S_EXPECT ("construct", &mp, "\x83\xa4type\xacIndexIVFFlat\xa4" "args\x92\x10"
              "\xcb\x3f\xe0\x00\x00\x00\x00\x00\x00\xa4refs\x92\xa3@1f\xa1q");
    fpx_mp_free (&mp);
    fpx_mp_init (&mp);
    fpx_construct_pack (&mp.pk, &(fpx_construct_args_t) { .type = "IndexFlatL2" });
    S_EXPECT ("construct without arguments", &mp, "\x83\xa4type\xabIndexFlatL2\xa4" "args"
              "\x90\xa4refs\x90");
    fpx_mp_free (&mp);
    //  attach: add_id only for merge_from.
    fpx_mp_init (&mp);
    fpx_attach_pack (&mp.pk, &(fpx_attach_args_t) { .name = "@1", .role = "add_shard",
                                                    .ref = "@2" });
    S_EXPECT ("attach", &mp, "\x83\xa4name\xa2@1\xa4role\xa9" "add_shard\xa3ref\xa2@2");
    fpx_mp_free (&mp);
    fpx_mp_init (&mp);
    fpx_attach_pack (&mp.pk, &(fpx_attach_args_t) { .name = "@1", .role = "merge_from",
                                                    .ref = "@2", .has_add_id = true,
                                                    .add_id = 1000 });
    S_EXPECT ("attach merge_from", &mp, "\x84\xa4name\xa2@1\xa4role\xaamerge_from\xa3ref"
              "\xa2@2\xa6" "add_id\xcd\x03\xe8");
    fpx_mp_free (&mp);
    //  apply: d beside vectors, none beside sa_decode's codes.
    fpx_mp_init (&mp);
    fpx_apply_pack (&mp.pk, &(fpx_apply_args_t) { .name = "t", .has_d = true, .d = 8 });
    S_EXPECT ("apply", &mp, "\x83\xa4name\xa1t\xa1" "d\x08\xa7reverse\xc2");
    fpx_mp_free (&mp);
    fpx_mp_init (&mp);
    fpx_apply_pack (&mp.pk, &(fpx_apply_args_t) { .name = "t", .reverse = true });
    S_EXPECT ("apply reverse", &mp, "\x82\xa4name\xa1t\xa7reverse\xc3");
    fpx_mp_free (&mp);
    //  Opcodes without parameters: an empty map.
    fpx_mp_init (&mp);
    fpx_list_pack (&mp.pk, NULL);
    S_EXPECT ("list", &mp, "\x80");
    fpx_mp_free (&mp);
    fpx_mp_init (&mp);
    fpx_ping_pack (&mp.pk, NULL);
    S_EXPECT ("ping", &mp, "\x80");
    fpx_mp_free (&mp);
}

/* ---- readers ------------------------------------------------------------------ */

//  One raw request of opcode with params; the status, and the error text
//  in error (size FPX_ERROR_TEXT_MAX + 1).
static int
s_raw (int opcode, const fpx_mp_t *params, char *error)
{
    fpx_raw_t *raw = fpx_raw_new (s_server.endpoint);
    if (!raw)
        return -1000;
    fpx_raw_reply_t reply;
    int status = fpx_raw_call (raw, opcode, fpx_test_key_a, params->buf.data, params->buf.size,
                               0, NULL, NULL, &reply);
    snprintf (error, FPX_ERROR_TEXT_MAX + 1, "%s", reply.error);
    fpx_raw_reply_free (&reply);
    fpx_raw_destroy (&raw);
    return status;
}

//  A request whose parameters the reader refuses: FPX_EINVAL, its text
//  naming the field.
static void
s_expect_refused (const char *what, int opcode, const fpx_mp_t *params, const char *field)
{
    char error [FPX_ERROR_TEXT_MAX + 1];
    int status = s_raw (opcode, params, error);
    CHECK (status == FPX_EINVAL && strstr (error, field), "%s: %d %s \"%s\", expected "
           "FPX_EINVAL naming '%s'", what, status, fpx_error_name (status), error, field);
}

static void
test_readers_bounds (void *arg)
{
    (void) arg;
    fpx_mp_t mp;
    char big [FPX_SETPARAM_MAX + 1];
    memset (big, 'a', sizeof big - 1);
    big [sizeof big - 1] = 0;
    char long_word [FPX_TYPE_NAME_MAX + 1];
    memset (long_word, 'q', sizeof long_word - 1);
    long_word [sizeof long_word - 1] = 0;
    struct {
        const char *what;
        int opcode;
        const char *field;
        const char *keys [3];
        int types [3];              //  0 str, 1 int, 2 bool, 3 nil
        int64_t ints [3];
        const char *strs [3];
    } cases [] = {
        { "reconstruct_n without n", FPX_OP_RECONSTRUCT_N, "'n'", { "name", "i0", NULL },
          { 0, 1, 0 }, { 0, 0, 0 }, { "ix", NULL, NULL } },
        { "reconstruct_n with n = 0", FPX_OP_RECONSTRUCT_N, "'n'", { "name", "i0", "n" },
          { 0, 1, 1 }, { 0, 0, 0 }, { "ix", NULL, NULL } },
        { "reconstruct_n with i0 = -1", FPX_OP_RECONSTRUCT_N, "'i0'", { "name", "i0", "n" },
          { 0, 1, 1 }, { 0, -1, 2 }, { "ix", NULL, NULL } },
        { "reconstruct with a string key", FPX_OP_RECONSTRUCT, "'key'", { "name", "key", NULL },
          { 0, 0, 0 }, { 0, 0, 0 }, { "ix", "7", NULL } },
        { "describe with memory 1", FPX_OP_DESCRIBE, "'memory'", { "name", "memory", NULL },
          { 0, 1, 0 }, { 0, 1, 0 }, { "ix", NULL, NULL } },
        { "set_parameters without params", FPX_OP_SET_PARAMETERS, "'params'",
          { "name", NULL, NULL }, { 0, 0, 0 }, { 0, 0, 0 }, { "ix", NULL, NULL } },
        { "set_parameters with \"\"", FPX_OP_SET_PARAMETERS, "'params'",
          { "name", "params", NULL }, { 0, 0, 0 }, { 0, 0, 0 }, { "ix", "", NULL } },
        { "set_parameters of 1024 bytes", FPX_OP_SET_PARAMETERS, "'params'",
          { "name", "params", NULL }, { 0, 0, 0 }, { 0, 0, 0 }, { "ix", big, NULL } },
        { "drop without a name", FPX_OP_DROP, "'name'", { NULL, NULL, NULL }, { 0, 0, 0 },
          { 0, 0, 0 }, { NULL, NULL, NULL } },
        { "reset with name nil", FPX_OP_RESET, "name", { "name", NULL, NULL }, { 3, 0, 0 },
          { 0, 0, 0 }, { NULL, NULL, NULL } },
        { "save of an invalid name", FPX_OP_SAVE, "name", { "name", NULL, NULL }, { 0, 0, 0 },
          { 0, 0, 0 }, { "../etc", NULL, NULL } },
        { "clone of a name as an int", FPX_OP_CLONE, "name", { "name", NULL, NULL },
          { 1, 0, 0 }, { 5, 0, 0 }, { NULL, NULL, NULL } },
        { "subobject without a path", FPX_OP_SUBOBJECT, "'path'", { "name", NULL, NULL },
          { 0, 0, 0 }, { 0, 0, 0 }, { "ix", NULL, NULL } },
        { "get_attr of a 64-byte attr", FPX_OP_GET_ATTR, "'attr'", { "name", "attr", NULL },
          { 0, 0, 0 }, { 0, 0, 0 }, { "ix", long_word, NULL } },
        { "set_attr with a string value", FPX_OP_SET_ATTR, "'value'", { "name", "attr", "value" },
          { 0, 0, 0 }, { 0, 0, 0 }, { "ix", "nprobe", "2" } },
        { "set_direct_map type 3", FPX_OP_SET_DIRECT_MAP, "'type'", { "name", "type", NULL },
          { 0, 1, 0 }, { 0, 3, 0 }, { "ix", NULL, NULL } },
        { "transfer_abort of transfer 0", FPX_OP_TRANSFER_ABORT, "'transfer'",
          { "transfer", NULL, NULL }, { 1, 0, 0 }, { 0, 0, 0 }, { NULL, NULL, NULL } },
        { "upload_commit without a transfer", FPX_OP_UPLOAD_COMMIT, "'transfer'",
          { NULL, NULL, NULL }, { 0, 0, 0 }, { 0, 0, 0 }, { NULL, NULL, NULL } },
        { "create without d", FPX_OP_CREATE, "'d'", { "factory", NULL, NULL },
          { 0, 0, 0 }, { 0, 0, 0 }, { "Flat", NULL, NULL } },
        { "create with metric 99", FPX_OP_CREATE, "'metric'", { "d", "factory", "metric" },
          { 1, 0, 1 }, { 8, 0, 99 }, { NULL, "Flat", NULL } },
        { "create with an anonymous handle as name", FPX_OP_CREATE, "name",
          { "d", "factory", "name" }, { 1, 0, 0 }, { 8, 0, 0 }, { NULL, "Flat", "@1f" } },
        { "create with an empty factory", FPX_OP_CREATE, "'factory'", { "d", "factory", NULL },
          { 1, 0, 0 }, { 8, 0, 0 }, { NULL, "", NULL } },
        { "get_id_map without a name", FPX_OP_GET_ID_MAP, "'name'", { NULL, NULL, NULL },
          { 0, 0, 0 }, { 0, 0, 0 }, { NULL, NULL, NULL } },
        { "info with max_indexes 1001", FPX_OP_INFO, "'max_indexes'", { "max_indexes", NULL, NULL },
          { 1, 0, 0 }, { 1001, 0, 0 }, { NULL, NULL, NULL } },
        { "info with all as a string", FPX_OP_INFO, "'all'", { "all", NULL, NULL },
          { 0, 0, 0 }, { 0, 0, 0 }, { "yes", NULL, NULL } },
        { "deserialize with a factory as an int", FPX_OP_DESERIALIZE, "'factory'",
          { "factory", NULL, NULL }, { 1, 0, 0 }, { 4, 0, 0 }, { NULL, NULL, NULL } },
        { "deserialize with an anonymous handle as name", FPX_OP_DESERIALIZE, "name",
          { "name", NULL, NULL }, { 0, 0, 0 }, { 0, 0, 0 }, { "@1f", NULL, NULL } },
        { "upload_begin with size 0", FPX_OP_UPLOAD_BEGIN, "'size'", { "size", NULL, NULL },
          { 1, 0, 0 }, { 0, 0, 0 }, { NULL, NULL, NULL } },
        { "upload_begin with a 1023-byte factory", FPX_OP_UPLOAD_BEGIN, "'factory'",
          { "size", "factory", NULL }, { 1, 0, 0 }, { 10, 0, 0 }, { NULL, big, NULL } },
        { "download_begin of an invalid name", FPX_OP_DOWNLOAD_BEGIN, "name",
          { "name", NULL, NULL }, { 0, 0, 0 }, { 0, 0, 0 }, { "a/b", NULL, NULL } },
        { "download_chunk without an offset", FPX_OP_DOWNLOAD_CHUNK, "'offset'",
          { "transfer", NULL, NULL }, { 1, 0, 0 }, { 1, 0, 0 }, { NULL, NULL, NULL } },
        { "download_chunk of length 0", FPX_OP_DOWNLOAD_CHUNK, "'length'",
          { "transfer", "offset", "length" }, { 1, 1, 1 }, { 1, 0, 0 }, { NULL, NULL, NULL } },
        { "download_chunk longer than a chunk", FPX_OP_DOWNLOAD_CHUNK, "'length'",
          { "transfer", "offset", "length" }, { 1, 1, 1 }, { 1, 0, INT64_MAX },
          { NULL, NULL, NULL } },
        { "upload_chunk of transfer -1", FPX_OP_UPLOAD_CHUNK, "'transfer'",
          { "transfer", "offset", NULL }, { 1, 1, 0 }, { -1, 0, 0 }, { NULL, NULL, NULL } },
        { "upload_chunk with a string offset", FPX_OP_UPLOAD_CHUNK, "'offset'",
          { "transfer", "offset", NULL }, { 1, 0, 0 }, { 1, 0, 0 }, { NULL, "0", NULL } },
        { "train without a name", FPX_OP_TRAIN, "'name'", { "d", NULL, NULL }, { 1, 0, 0 },
          { 8, 0, 0 }, { NULL, NULL, NULL } },
        { "add with d 0", FPX_OP_ADD, "'d'", { "name", "d", NULL }, { 0, 1, 0 }, { 0, 0, 0 },
          { "ix", NULL, NULL } },
        { "add_with_ids with d as a string", FPX_OP_ADD_WITH_IDS, "'d'", { "name", "d", NULL },
          { 0, 0, 0 }, { 0, 0, 0 }, { "ix", "8", NULL } },
        { "remove_ids with hi as a string", FPX_OP_REMOVE_IDS, "'hi'", { "name", "lo", "hi" },
          { 0, 1, 0 }, { 0, 3, 0 }, { "ix", NULL, "9" } },
        { "remove_ids with lo as a bool", FPX_OP_REMOVE_IDS, "'lo'", { "name", "lo", "hi" },
          { 0, 2, 1 }, { 0, 0, 5 }, { "ix", NULL, NULL } },
        { "kmeans with k 0", FPX_OP_KMEANS, "'k'", { "d", "k", NULL }, { 1, 1, 0 },
          { 8, 0, 0 }, { NULL, NULL, NULL } },
        { "kmeans with niter 0", FPX_OP_KMEANS, "'niter'", { "d", "k", "niter" }, { 1, 1, 1 },
          { 8, 4, 0 }, { NULL, NULL, NULL } },
        { "kmeans with spherical 1", FPX_OP_KMEANS, "'spherical'", { "d", "k", "spherical" },
          { 1, 1, 1 }, { 8, 4, 1 }, { NULL, NULL, NULL } },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases [0]; i++) {
        int count = 0;
        while (count < 3 && cases [i].keys [count])
            count++;
        fpx_mp_init (&mp);
        msgpack_pack_map (&mp.pk, (size_t) count);
        for (int j = 0; j < count; j++) {
            fpx_pack_str (&mp.pk, cases [i].keys [j]);
            switch (cases [i].types [j]) {
                case 0: fpx_pack_str (&mp.pk, cases [i].strs [j]); break;
                case 1: msgpack_pack_int64 (&mp.pk, cases [i].ints [j]); break;
                case 2: msgpack_pack_true (&mp.pk); break;
                default: msgpack_pack_nil (&mp.pk);
            }
        }
        s_expect_refused (cases [i].what, cases [i].opcode, &mp, cases [i].field);
        fpx_mp_free (&mp);
    }
}

//  The field types beyond single scalars (FLOAT, NUMS, NAMES, REF,
//  SELECTOR) and the search parameters, one bad value each, in maps
//  built by hand: each is refused naming its field before any lookup.
static void
test_readers_arrays (void *arg)
{
    (void) arg;
    fpx_mp_t mp;
#define S_MAP_(count) fpx_mp_init (&mp); msgpack_pack_map (&mp.pk, count);
#define S_REFUSED_(what, opcode, field)                                      \
    s_expect_refused (what, opcode, &mp, field);                             \
    fpx_mp_free (&mp);
    const struct { const char *what, *key; int64_t value; const char *field; } ints [] = {
        { "search with k 0", "k", 0, "'k'" },
        { "search with k 65537", "k", FPX_K_MAX + 1, "'k'" },
        { "search with nprobe 0", "nprobe", 0, "'nprobe'" },
        { "search with efSearch -1", "efSearch", -1, "'efSearch'" },
        { "search with max_codes -1", "max_codes", -1, "'max_codes'" },
    };
    for (size_t i = 0; i < sizeof ints / sizeof ints [0]; i++) {
        bool is_k = strcmp (ints [i].key, "k") == 0;
        S_MAP_ (is_k ? 2 : 3)
        fpx_pack_kv_str (&mp.pk, "name", "ix");
        if (!is_k)
            fpx_pack_kv_int (&mp.pk, "k", 1);
        fpx_pack_kv_int (&mp.pk, ints [i].key, ints [i].value);
        S_REFUSED_ (ints [i].what, FPX_OP_SEARCH, ints [i].field)
    }
    S_MAP_ (3)
    fpx_pack_kv_str (&mp.pk, "name", "ix");
    fpx_pack_kv_int (&mp.pk, "k", 1);
    fpx_pack_kv_str (&mp.pk, "sel", "all");
    S_REFUSED_ ("search with sel as a string", FPX_OP_SEARCH, "'sel'")
    S_MAP_ (2)
    fpx_pack_kv_str (&mp.pk, "name", "ix");
    fpx_pack_kv_str (&mp.pk, "k", "1");
    S_REFUSED_ ("search_and_reconstruct with k as a string", FPX_OP_SEARCH_AND_RECONSTRUCT, "'k'")
    const double radii [] = { NAN, INFINITY, 1e39, -1e39 };
    for (size_t i = 0; i < sizeof radii / sizeof radii [0]; i++) {
        S_MAP_ (2)
        fpx_pack_kv_str (&mp.pk, "name", "ix");
        fpx_pack_kv_double (&mp.pk, "radius", radii [i]);
        S_REFUSED_ ("range_search with a radius float32 cannot hold", FPX_OP_RANGE_SEARCH,
                    "'radius'")
    }
    S_MAP_ (1)
    fpx_pack_kv_str (&mp.pk, "name", "ix");
    S_REFUSED_ ("range_search without a radius", FPX_OP_RANGE_SEARCH, "'radius'")
    //  construct: its arrays' lengths and each element.
    double many [FPX_CONSTRUCT_ARGS_MAX + 1] = { 0 };
    const double bad_args [][2] = { { 1, NAN }, { INFINITY, 2 } };
    S_MAP_ (2)
    fpx_pack_kv_str (&mp.pk, "type", "IndexFlatL2");
    fpx_pack_kv_numbers (&mp.pk, "args", many, FPX_CONSTRUCT_ARGS_MAX + 1);
    S_REFUSED_ ("construct with 17 args", FPX_OP_CONSTRUCT, "'args'")
    for (int i = 0; i < 2; i++) {
        S_MAP_ (2)
        fpx_pack_kv_str (&mp.pk, "type", "IndexFlatL2");
        fpx_pack_kv_numbers (&mp.pk, "args", bad_args [i], 2);
        S_REFUSED_ ("construct with a non-finite arg", FPX_OP_CONSTRUCT, "'args'")
    }
    S_MAP_ (2)
    fpx_pack_kv_str (&mp.pk, "type", "IndexFlatL2");
    fpx_pack_str (&mp.pk, "args");
    msgpack_pack_array (&mp.pk, 1);
    fpx_pack_str (&mp.pk, "8");
    S_REFUSED_ ("construct with a string arg", FPX_OP_CONSTRUCT, "'args'")
    const char *bad_refs [][2] = { { "@1", "../x" }, { "", "@2" }, { "@", "@3" } };
    for (int i = 0; i < 3; i++) {
        S_MAP_ (2)
        fpx_pack_kv_str (&mp.pk, "type", "IndexIVFFlat");
        fpx_pack_kv_strs (&mp.pk, "refs", bad_refs [i], 2);
        S_REFUSED_ ("construct with a ref that is no name", FPX_OP_CONSTRUCT, "'refs'")
    }
    const char *five [] = { "@1", "@2", "@3", "@4", "@5" };
    S_MAP_ (2)
    fpx_pack_kv_str (&mp.pk, "type", "IndexShards");
    fpx_pack_kv_strs (&mp.pk, "refs", five, 5);
    S_REFUSED_ ("construct with 5 refs", FPX_OP_CONSTRUCT, "'refs'")
    S_MAP_ (1)
    fpx_pack_kv_strs (&mp.pk, "refs", five, 1);
    S_REFUSED_ ("construct without a type", FPX_OP_CONSTRUCT, "'type'")
    //  attach: ref and add_id.
    S_MAP_ (3)
    fpx_pack_kv_str (&mp.pk, "name", "@1");
    fpx_pack_kv_str (&mp.pk, "role", "add_shard");
    fpx_pack_kv_str (&mp.pk, "ref", "a/b");
    S_REFUSED_ ("attach of a ref that is no name", FPX_OP_ATTACH, "'ref'")
    S_MAP_ (4)
    fpx_pack_kv_str (&mp.pk, "name", "@1");
    fpx_pack_kv_str (&mp.pk, "role", "merge_from");
    fpx_pack_kv_str (&mp.pk, "ref", "@2");
    fpx_pack_kv_int (&mp.pk, "add_id", -1);
    S_REFUSED_ ("merge_from with add_id -1", FPX_OP_ATTACH, "'add_id'")
    S_MAP_ (2)
    fpx_pack_kv_str (&mp.pk, "name", "@1");
    fpx_pack_kv_str (&mp.pk, "ref", "@2");
    S_REFUSED_ ("attach without a role", FPX_OP_ATTACH, "'role'")
    //  apply: reverse is a bool, d a dimension.
    S_MAP_ (2)
    fpx_pack_kv_str (&mp.pk, "name", "t");
    fpx_pack_kv_int (&mp.pk, "reverse", 1);
    S_REFUSED_ ("apply with reverse 1", FPX_OP_APPLY, "'reverse'")
    S_MAP_ (2)
    fpx_pack_kv_str (&mp.pk, "name", "t");
    fpx_pack_kv_int (&mp.pk, "d", 0);
    S_REFUSED_ ("apply with d 0", FPX_OP_APPLY, "'d'")
#undef S_MAP_
#undef S_REFUSED_
}

static void
test_readers_values (void *arg)
{
    (void) arg;
    fpx_client_t *client = fpx_test_client (&s_server, fpx_test_key_a);
    REQUIRE (client, "client");
    float *x = fpx_data_uniform (7, NB, DIM);
    FaissIndex *local = NULL;
    REQUIRE (faiss_index_factory (&local, DIM, "Flat", METRIC_L2) == 0, "local index");
    faiss_Index_add (local, NB, x);
    CHECK_OK (client, fpx_index_create (client, "fields", DIM, "Flat", FPX_METRIC_L2, NULL));
    CHECK_OK (client, fpx_add (client, "fields", NB, DIM, x, NULL));
    //  reconstruct_n through the generated packer and reader: FAISS's rows.
    fpx_mp_t mp;
    fpx_mp_init (&mp);
    fpx_reconstruct_n_pack (&mp.pk, &(fpx_reconstruct_n_args_t) { .name = "fields", .i0 = 5,
                                                                  .n = 7 });
    fpx_raw_t *raw = fpx_raw_new (s_server.endpoint);
    REQUIRE (raw, "raw socket");
    fpx_raw_reply_t reply;
    int status = fpx_raw_call (raw, FPX_OP_RECONSTRUCT_N, fpx_test_key_a, mp.buf.data,
                               mp.buf.size, 0, NULL, NULL, &reply);
    float expected [7 * DIM];
    faiss_Index_reconstruct_n (local, 5, 7, expected);
    CHECK (status == 0 && reply.nframes == 3 && reply.sizes [2] == sizeof expected
           && memcmp (reply.frames [2], expected, sizeof expected) == 0,
           "reconstruct_n: status %d, %d frames", status, reply.nframes);
    fpx_raw_reply_free (&reply);
    fpx_mp_free (&mp);
    //  describe's optional bool: absent is false (no memory_bytes), true
    //  gives the serialized size, as FAISS's own serialization.
    int64_t memory = -1;
    fpx_mp_init (&mp);
    msgpack_pack_map (&mp.pk, 1);
    fpx_pack_kv_str (&mp.pk, "name", "fields");
    status = fpx_raw_call (raw, FPX_OP_DESCRIBE, fpx_test_key_a, mp.buf.data, mp.buf.size,
                           0, NULL, NULL, &reply);
    CHECK (status == 0 && fpx_params_get_int (&reply.result, "memory_bytes", &memory) == 1,
           "describe without memory: status %d", status);
    fpx_raw_reply_free (&reply);
    fpx_mp_free (&mp);
    fpx_mp_init (&mp);
    fpx_describe_pack (&mp.pk, &(fpx_describe_args_t) { .name = "fields", .memory = true });
    status = fpx_raw_call (raw, FPX_OP_DESCRIBE, fpx_test_key_a, mp.buf.data, mp.buf.size,
                           0, NULL, NULL, &reply);
    size_t size = 0;
    free (fpx_local_serialize (local, &size));
    CHECK (status == 0 && fpx_params_get_int (&reply.result, "memory_bytes", &memory) == 0
           && memory == (int64_t) size, "describe with memory: status %d, %lld bytes, FAISS "
           "%zu", status, (long long) memory, size);
    fpx_raw_reply_free (&reply);
    fpx_mp_free (&mp);
    //  A reader's bound is the same as the server's old one: the longest
    //  set_parameters string (1023 bytes) reaches FAISS's own checks.
    char longest [FPX_SETPARAM_MAX];
    memset (longest, 'a', sizeof longest - 1);
    longest [sizeof longest - 1] = 0;
    fpx_mp_init (&mp);
    fpx_set_parameters_pack (&mp.pk, &(fpx_set_parameters_args_t) { .name = "fields",
                                                                    .params = longest });
    char error [FPX_ERROR_TEXT_MAX + 1];
    status = s_raw (FPX_OP_SET_PARAMETERS, &mp, error);
    CHECK (status != 0 && !strstr (error, "'params' must be"), "1023 bytes: %d \"%s\"",
           status, error);
    fpx_mp_free (&mp);
    fpx_raw_destroy (&raw);
    CHECK_OK (client, fpx_index_drop (client, "fields"));
    faiss_Index_free (local);
    free (x);
    fpx_client_destroy (&client);
}

//  Raw requests are not sent again on FPX_ERECOVERING as the client's
//  are: wait until the server has loaded its indexes (none, but it
//  still says so for a moment after it starts).
static bool
s_wait_recovered (void)
{
    fpx_client_t *client = fpx_test_client (&s_server, fpx_test_key_a);
    bool done = false;
    for (int i = 0; client && i < 1200 && !done; i++) {
        fpx_server_info_t info;
        done = fpx_ping (client, &info) == 0 && !info.recovering;
        if (!done)
            usleep (50 * 1000);
    }
    fpx_client_destroy (&client);
    return done;
}

static void
test_server_exit (void *arg)
{
    (void) arg;
    int status = fpx_test_server_stop (&s_server, 30);
    CHECK (status == 0, "faissproxyd exit status %d after SIGTERM, expected 0 (%s)", status,
           s_server.diagnosis);
}

int
main (void)
{
    fpx_test_local_single_thread ();
    fpx_test_run ("fields.opcode_table", test_opcode_table, NULL);
    fpx_test_run ("fields.packers_bytes", test_packers_bytes, NULL);
    fpx_test_watch (&s_server);
    if (fpx_test_server_start (&s_server, NULL, NULL) == 0) {
        if (s_wait_recovered ()) {
            fpx_test_run ("fields.readers_bounds", test_readers_bounds, NULL);
            fpx_test_run ("fields.readers_arrays", test_readers_arrays, NULL);
            fpx_test_run ("fields.readers_values", test_readers_values, NULL);
        }
        else
            fpx_test_fail_whole ("fields.recovery", "faissproxyd still recovering after 60 s");
        fpx_test_run ("fields.server_exit", test_server_exit, NULL);
    }
    else
        fpx_test_fail_whole ("fields.server_start", "faissproxyd did not start");
    return fpx_test_finish ();
}
