/*  fpx-fuzz-corpus DIR — writes the seed corpora of the fuzz targets:
    DIR/decoder and DIR/server, one file per request of fuzz_seeds.c
    (every opcode, and uploads of every index type), plus DIR/setup, the
    requests that create the indexes the seeds name, in order; and the
    corpora of the targets that drive server parts directly: DIR/upload
    (a serialized index of every type), DIR/storage (data directories of
    one index, written by the server's storage code: a snapshot and a log
    of every record kind) and DIR/registry (operation sequences).       */
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <faiss/c_api/Index_c.h>

#include "entry.h"
#include "faiss_shim.h"
#include "fuzz_seeds.h"
#include "log.h"
#include "registry.h"
#include "storage.h"

typedef struct {
    const char *dir;
    int index;
    int failed;
} s_writer_t;

static void
s_write (void *arg, const char *label, int opcode, const fpx_fuzz_buf_t *request)
{
    s_writer_t *writer = arg;
    char path [4096];
    snprintf (path, sizeof path, "%s/%03d-%02d-%s", writer->dir, writer->index++, opcode, label);
    FILE *file = fopen (path, "wb");
    if (!file || fwrite (request->data, 1, request->size, file) != request->size) {
        fprintf (stderr, "fpx-fuzz-corpus: cannot write %s: %s\n", path, strerror (errno));
        writer->failed = 1;
    }
    if (file && fclose (file))
        writer->failed = 1;
}

static void
s_write_bytes (s_writer_t *writer, const char *label, const void *data, size_t size)
{
    fpx_fuzz_buf_t buf = { (uint8_t *) data, size, size };
    s_write (writer, label, 0, &buf);
}

static void
s_write_upload (void *arg, const char *factory, const uint8_t *bytes, size_t size)
{
    char label [64];
    snprintf (label, sizeof label, "%s", factory);
    for (char *c = label; *c; c++)
        if (*c == ',')
            *c = '_';
    s_write_bytes (arg, label, bytes, size);
}

static int
s_remove (const char *path, const struct stat *info, int flag, struct FTW *ftw)
{
    (void) info, (void) flag, (void) ftw;
    return remove (path);
}

static void
s_read_file (fpx_fuzz_buf_t *out, const char *path)
{
    FILE *file = fopen (path, "rb");
    uint8_t chunk [65536];
    size_t got;
    while (file && (got = fread (chunk, 1, sizeof chunk, file)) > 0)
        fpx_fuzz_buf_append (out, chunk, got);
    if (file)
        fclose (file);
}

static void
s_append (fpx_wal_t *wal, fpx_record_kind_t kind, const void *a, size_t a_size,
          const void *b, size_t b_size, const void *c, size_t c_size)
{
    fpx_record_t record = { .kind = kind, .parts = { a, b, c }, .sizes = { a_size, b_size, c_size },
                            .nparts = c ? 3 : b ? 2 : a ? 1 : 0 };
    fpx_ticket_t ticket;
    char err [256];
    if (fpx_wal_append (wal, &record, &ticket, err, sizeof err)) {
        fprintf (stderr, "fpx-fuzz-corpus: %s\n", err);
        exit (1);
    }
}

//  One storage seed: an index of factory, created through the storage
//  code in a scratch data directory, then a log of the records ops.c
//  writes for its mutations (formats in docs/STORAGE.md).
static void
s_storage_seed (s_writer_t *writer, const char *scratch, const char *factory)
{
    char root [4096], dir [4200], path [4400];
    snprintf (root, sizeof root, "%s/data", scratch);
    fpx_registry_t *registry = fpx_registry_new ();
    char tenants [1][FPX_NAME_MAX + 1] = { FPX_FUZZ_TENANT };
    fpx_storage_config_t config = { .root = root, .fsync = FPX_FSYNC_NEVER,
                                    .snapshot_log_bytes = (uint64_t) 1 << 30,
                                    .snapshot_interval_s = 1e9 };
    FaissIndex *index = NULL;
    char err [512];
    fpx_storage_t *storage = registry ? fpx_storage_new (&config, registry, tenants, 1) : NULL;
    if (!storage
    ||  fpx_shim_factory (FPX_FUZZ_D, factory, METRIC_L2, (size_t) 1 << 30, &index, err, sizeof err)) {
        fprintf (stderr, "fpx-fuzz-corpus: cannot set up a storage seed of %s\n", factory);
        exit (1);
    }
    fpx_storage_recovered (storage);
    fpx_object_t object = { .index = index, .factory = factory };
    fpx_entry_t *entry;
    if (fpx_storage_create (storage, 0, FPX_FUZZ_TENANT, "ix", &object, &entry, err, sizeof err)) {
        fprintf (stderr, "fpx-fuzz-corpus: %s\n", err);
        exit (1);
    }
    fpx_wal_t *wal = entry->wal;
    float *x = fpx_fuzz_vectors (64, 11);
    int64_t ids [64];
    for (int i = 0; i < 64; i++)
        ids [i] = 100 + 7 * i;
    uint64_t shape_train [2] = { 64, FPX_FUZZ_D }, shape_add [2] = { 16, FPX_FUZZ_D };
    bool idmap = strncmp (factory, "IDMap", 5) == 0;
    if (!faiss_Index_is_trained (index))
        s_append (wal, FPX_REC_TRAIN, shape_train, sizeof shape_train, x, 64 * FPX_FUZZ_D * 4, NULL, 0);
    s_append (wal, idmap ? FPX_REC_ADD_WITH_IDS : FPX_REC_ADD, shape_add, sizeof shape_add,
              x, 16 * FPX_FUZZ_D * 4, idmap ? ids : NULL, 16 * 8);
    if (strstr (factory, "IVF")) {
        s_append (wal, FPX_REC_SET_PARAMETERS, "nprobe=2", 8, NULL, 0, NULL, 0);
        uint32_t direct_map [2] = { 1, 0 };
        s_append (wal, FPX_REC_SET_DIRECT_MAP, direct_map, sizeof direct_map, NULL, 0, NULL, 0);
    }
    if (strstr (factory, "HNSW")) {
        double ef = 24;
        s_append (wal, FPX_REC_SET_ATTR, &ef, sizeof ef, "efSearch", 8, NULL, 0);
    }
    if (!strstr (factory, "HNSW") && !strstr (factory, "PQ")) {
        int64_t range [2] = { 2, 5 }, removed [2] = { 2, 0 };
        int64_t which [2] = { idmap ? 107 : 7, idmap ? 114 : 8 };
        s_append (wal, FPX_REC_REMOVE_RANGE, range, sizeof range, NULL, 0, NULL, 0);
        s_append (wal, FPX_REC_REMOVE_IDS, removed, sizeof removed, which, sizeof which, NULL, 0);
    }
    if (strcmp (factory, "SQ8") == 0)
        s_append (wal, FPX_REC_RESET, NULL, 0, NULL, 0, NULL, 0);
    s_append (wal, idmap ? FPX_REC_ADD_WITH_IDS : FPX_REC_ADD, shape_add, sizeof shape_add,
              x + 16 * FPX_FUZZ_D, 16 * FPX_FUZZ_D * 4, idmap ? ids + 16 : NULL, 16 * 8);
    free (x);

    //  The input: flags, the snapshot, the log segments.
    snprintf (dir, sizeof dir, "%s/tenants/%s/ix", root, FPX_FUZZ_TENANT);
    fpx_fuzz_buf_t snapshot = { 0 }, input = { 0 };
    snprintf (path, sizeof path, "%s/snapshot", dir);
    s_read_file (&snapshot, path);
    for (uint8_t flags = 0; flags <= 3; flags += 3) {
        input.size = 0;
        fpx_fuzz_buf_frame (&input, &flags, 1);
        fpx_fuzz_buf_frame (&input, snapshot.data, snapshot.size);
        struct dirent **names;
        int n = scandir (dir, &names, NULL, alphasort);
        for (int i = 0; i < n; i++) {
            if (strncmp (names [i]->d_name, "wal-", 4) == 0) {
                fpx_fuzz_buf_t segment = { 0 };
                snprintf (path, sizeof path, "%s/%s", dir, names [i]->d_name);
                s_read_file (&segment, path);
                fpx_fuzz_buf_frame (&input, segment.data, segment.size);
                fpx_fuzz_buf_free (&segment);
            }
            free (names [i]);
        }
        free (n >= 0 ? names : NULL);
        char label [80];
        snprintf (label, sizeof label, "%s-flags%d", factory, flags);
        for (char *c = label; *c; c++)
            if (*c == ',')
                *c = '_';
        s_write (writer, label, 0, &input);
    }
    fpx_fuzz_buf_free (&input);
    fpx_fuzz_buf_free (&snapshot);
    fpx_entry_release (&entry);
    fpx_storage_destroy (&storage);
    fpx_registry_destroy (&registry);
    nftw (root, s_remove, 16, FTW_DEPTH | FTW_PHYS);
}

static const char *const s_storage_factories [] = {
    "Flat", "IDMap,Flat", "IDMap2,Flat", "IVF4,Flat", "IVF4,PQ4x4np", "HNSW8", "PQ4x4np", "SQ8",
    "PCA4,Flat", "IDMap,HNSW8",
};

//  Registry operation sequences (fuzz_registry.c): a byte per operation
//  and its arguments, mutated from there.
static const uint8_t s_registry_seeds [][24] = {
    { 0x00, 0x00, 0x01, 0x01, 0x10, 0x02, 0x03, 0x00, 0x09, 0x0b, 0x06, 0x00, 0x0a },
    { 0x22, 0x42, 0x23, 0xc0, 0x43, 0xc1, 0x08, 0x28, 0x48, 0x09 },
    { 0x2e, 0x23, 0xc0, 0x23, 0xc1, 0x0c, 0x00, 0x27, 0xc0, 0x08, 0x28, 0x0d, 0x00 },
    { 0x00, 0xf3, 'l', 'o', 'n', 'g', '-', 'n', 'a', 'm', 'e', '.', '0', 'x', 'y', 'z', 0x43, 0x00 },
};

int
main (int argc, char **argv)
{
    if (argc != 2) {
        fprintf (stderr, "usage: fpx-fuzz-corpus DIR\n");
        return 2;
    }
    static const char *const subdirs [] = { "decoder", "server", "setup" };
    int failed = 0, count = 0;
    mkdir (argv [1], 0755);
    for (int i = 0; i < 3; i++) {
        char dir [4096];
        snprintf (dir, sizeof dir, "%s/%s", argv [1], subdirs [i]);
        if (mkdir (dir, 0755) && errno != EEXIST) {
            fprintf (stderr, "fpx-fuzz-corpus: cannot create %s: %s\n", dir, strerror (errno));
            return 1;
        }
        s_writer_t writer = { .dir = dir };
        if (i == 2)
            fpx_fuzz_setup_requests (s_write, &writer);
        else
            count = fpx_fuzz_seed_requests (s_write, &writer);
        failed |= writer.failed;
    }
    fpx_log_set_level (FPX_LOG_ERROR);
    static const char *const direct [] = { "upload", "storage", "registry" };
    for (int i = 0; i < 3; i++) {
        char dir [4096];
        snprintf (dir, sizeof dir, "%s/%s", argv [1], direct [i]);
        if (mkdir (dir, 0755) && errno != EEXIST) {
            fprintf (stderr, "fpx-fuzz-corpus: cannot create %s: %s\n", dir, strerror (errno));
            return 1;
        }
        s_writer_t writer = { .dir = dir };
        if (i == 0)
            fpx_fuzz_upload_seeds (s_write_upload, &writer);
        else if (i == 1) {
            char scratch [4200];
            snprintf (scratch, sizeof scratch, "%s/.scratch", argv [1]);
            mkdir (scratch, 0700);
            for (size_t f = 0; f < sizeof s_storage_factories / sizeof *s_storage_factories; f++)
                s_storage_seed (&writer, scratch, s_storage_factories [f]);
            nftw (scratch, s_remove, 16, FTW_DEPTH | FTW_PHYS);
        }
        else
            for (size_t s = 0; s < sizeof s_registry_seeds / sizeof *s_registry_seeds; s++)
                s_write_bytes (&writer, "ops", s_registry_seeds [s], sizeof s_registry_seeds [s]);
        failed |= writer.failed;
    }
    printf ("fpx-fuzz-corpus: %d seed requests in %s/{decoder,server}, "
            "and the upload, storage and registry corpora\n", count, argv [1]);
    return failed;
}
