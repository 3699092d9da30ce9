/*  fuzz_storage.c — recovery of hostile data directories: the snapshot
    and log segments of one named index (server/storage.c, docs/STORAGE.md)
    written from the input, then read back by the server's own storage
    code (fpx_storage_new, fpx_storage_recover) into a registry, without
    a socket or a daemon.

    An input is framed (fuzz_common.h): frame 0 holds flags, frame 1 is
    DATA/tenants/fuzz/ix/snapshot (absent when the input has one frame),
    frames 2… are log segments, each named wal-<first lsn>.log after the
    sequence number of its first record (else its place). The flags let
    mutants past the checksums, which random bytes never match: bit 0
    makes the snapshot's lengths and checksums agree with its bytes, bit 1
    each whole record's checksum. The seeds (fpx-fuzz-corpus, written by
    the storage code itself) are an index of several types with a log of
    every record kind, each with flags 0 and 3.

    Invariants (each aborts when broken): the index is registered, either
    damaged (no object, a reason, the bad file moved aside) or loaded (an
    object, a log to append to) — never both, never missing; a loaded
    index answers describe and a search as the server would run them;
    after a clean close (which snapshots what the log added) a second
    recovery loads it again, not damaged, with as many vectors.          */
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <faiss/c_api/Index_c.h>

#include "entry.h"
#include "faiss_shim.h"
#include "fpx_protocol.h"
#include "fpx_runtime.h"
#include "fuzz_common.h"
#include "log.h"
#include "registry.h"
#include "storage.h"

const char fpx_fuzz_target_name [] = "storage";
const long fpx_fuzz_replay_mutations = 5000;
const long fpx_fuzz_replay_seed = 20261208;

#define S_TENANT "fuzz"
#define S_INDEX  "ix"

static struct {
    char root [256];               //  the data directory
    char index_dir [512];          //  root/tenants/fuzz/ix
    char tenants [1][FPX_NAME_MAX + 1];
    fpx_storage_t *storage;        //  open between s_recover and s_close
} s_self;

static int
s_remove (const char *path, const struct stat *info, int flag, struct FTW *ftw)
{
    (void) info, (void) flag, (void) ftw;
    return remove (path);
}

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
    (void) argc, (void) argv;
    fpx_log_set_level (getenv ("FPX_FUZZ_LOG") ? FPX_LOG_INFO : FPX_LOG_ERROR - 1);
    fpx_shim_log_cerr ();
    //  One thread per FAISS call, as the daemon gives a small call: on a
    //  loaded machine OpenMP's barriers make a k-means take seconds.
    fpx_runtime_threads (1, 1, 0, 0);
    snprintf (s_self.root, sizeof s_self.root, "%s/fpx-fuzz-storage-XXXXXX",
              getenv ("TMPDIR") ? getenv ("TMPDIR") : "/tmp");
    FPX_FUZZ_ASSERT (mkdtemp (s_self.root) != NULL);
    snprintf (s_self.index_dir, sizeof s_self.index_dir, "%s/tenants/%s/%s", s_self.root,
              S_TENANT, S_INDEX);
    snprintf (s_self.tenants [0], sizeof s_self.tenants [0], "%s", S_TENANT);
#ifdef FPX_FUZZ_ENGINE
    atexit (fpx_fuzz_target_cleanup);
#endif
    return 0;
}

void
fpx_fuzz_target_cleanup (void)
{
    if (s_self.root [0])
        nftw (s_self.root, s_remove, 16, FTW_DEPTH | FTW_PHYS);
    s_self.root [0] = 0;
}

static void
s_put32 (uint8_t *p, uint32_t v) { memcpy (p, &v, 4); }
static uint32_t
s_get32 (const uint8_t *p) { uint32_t v; memcpy (&v, p, 4); return v; }
static uint64_t
s_get64 (const uint8_t *p) { uint64_t v; memcpy (&v, p, 8); return v; }

//  docs/STORAGE.md: a 64-byte header (magic, version, header checksum,
//  lsn, payload length, payload checksum, factory length), the factory
//  string, the payload.
static void
s_fix_snapshot (uint8_t *snap, size_t size)
{
    if (size < 64)
        return;
    uint32_t factory_len = s_get32 (snap + 36);
    if (factory_len > size - 64)
        return;
    uint64_t payload = size - 64 - factory_len;
    memcpy (snap + 24, &payload, 8);
    s_put32 (snap + 32, fpx_crc32c (0, snap + 64 + factory_len, payload));
    uint32_t crc = fpx_crc32c (0, snap + 16, 64 - 16);
    s_put32 (snap + 12, fpx_crc32c (crc, snap + 64, factory_len));
}

//  Records: a 32-byte header (magic, checksum, length, lsn, kind) and
//  the payload; the checksum covers all but the magic and itself.
static void
s_fix_records (uint8_t *log, size_t size)
{
    size_t at = 0;
    while (size - at >= 32) {
        uint64_t length = s_get64 (log + at + 8);
        if (length > size - at - 32)
            break;
        s_put32 (log + at + 4, fpx_crc32c (0, log + at + 8, 24 + length));
        at += 32 + (size_t) length;
    }
}

static void
s_write_file (const char *path, const uint8_t *data, size_t size, bool fix_snapshot, bool fix_log)
{
    uint8_t *copy = malloc (size + 1);
    FPX_FUZZ_ASSERT (copy != NULL);
    memcpy (copy, data, size);
    if (fix_snapshot)
        s_fix_snapshot (copy, size);
    if (fix_log)
        s_fix_records (copy, size);
    FILE *file = fopen (path, "wb");
    FPX_FUZZ_ASSERT (file != NULL);
    FPX_FUZZ_ASSERT (size == 0 || fwrite (copy, 1, size, file) == size);
    FPX_FUZZ_ASSERT (fclose (file) == 0);
    free (copy);
}

//  What the server does with a recovered index: describe it and search.
static void
s_use (FaissIndex *index)
{
    int d = (int) faiss_Index_d (index);
    FPX_FUZZ_ASSERT (faiss_Index_ntotal (index) >= 0);
    (void) fpx_shim_class_name (index, NULL);
    if (d < 1 || d > FPX_DIM_MAX || !faiss_Index_is_trained (index) || faiss_Index_ntotal (index) == 0)
        return;
    float *x = calloc ((size_t) d, sizeof *x);
    FPX_FUZZ_ASSERT (x != NULL);
    float distances [3];
    int64_t labels [3];
    (void) faiss_Index_search (index, 1, x, 3, distances, labels);
    free (x);
}

//  Opens the data directory and recovers it into a new registry; returns
//  the registry and (through *entry_p) the index's entry.
static fpx_registry_t *
s_recover (fpx_entry_t **entry_p)
{
    fpx_registry_t *registry = fpx_registry_new ();
    FPX_FUZZ_ASSERT (registry != NULL);
    fpx_storage_config_t config = {
        .root = s_self.root, .fsync = FPX_FSYNC_NEVER,
        .snapshot_log_bytes = (uint64_t) 1 << 20, .snapshot_interval_s = 300,
    };
    s_self.storage = fpx_storage_new (&config, registry, s_self.tenants, 1);
    FPX_FUZZ_ASSERT (s_self.storage != NULL);
    fpx_storage_recover (s_self.storage);
    fpx_storage_recovered (s_self.storage);
    *entry_p = fpx_registry_find (registry, 0, S_INDEX, 0);
    return registry;
}

static void
s_close (fpx_registry_t **registry_p)
{
    fpx_storage_destroy (&s_self.storage);
    fpx_registry_destroy (registry_p);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    fpx_fuzz_frames_t frames;
    fpx_fuzz_split (&frames, data, size);
    uint8_t flags = frames.count > 0 && frames.size [0] > 0 ? frames.data [0][0] : 0;
    char tenants [600], path [700];
    snprintf (tenants, sizeof tenants, "%s/tenants", s_self.root);
    nftw (tenants, s_remove, 16, FTW_DEPTH | FTW_PHYS);
    snprintf (path, sizeof path, "%s/%s", tenants, S_TENANT);
    FPX_FUZZ_ASSERT (mkdir (tenants, 0700) == 0 && mkdir (path, 0700) == 0
                     && mkdir (s_self.index_dir, 0700) == 0);
    if (frames.count >= 2) {
        snprintf (path, sizeof path, "%s/snapshot", s_self.index_dir);
        s_write_file (path, frames.data [1], frames.size [1], flags & 1, false);
    }
    for (int f = 2; f < frames.count; f++) {
        uint64_t lsn = frames.size [f] >= 24 ? s_get64 (frames.data [f] + 16) : (uint64_t) f - 1;
        snprintf (path, sizeof path, "%s/wal-%016llx.log", s_self.index_dir, (unsigned long long) lsn);
        s_write_file (path, frames.data [f], frames.size [f], false, flags & 2);
    }

    fpx_entry_t *entry;
    fpx_registry_t *registry = s_recover (&entry);
    FPX_FUZZ_ASSERT (entry != NULL);
    bool damaged = entry->damaged [0] != 0;
    int64_t ntotal = -1;
    if (damaged) {
        FPX_FUZZ_ASSERT (entry->index == NULL && entry->wal == NULL);
        FPX_FUZZ_ASSERT (memchr (entry->damaged, 0, sizeof entry->damaged) != NULL);
    }
    else {
        FPX_FUZZ_ASSERT (entry->index != NULL && entry->wal != NULL);
        FPX_FUZZ_ASSERT (entry->d == (int) faiss_Index_d (entry->index));
        ntotal = faiss_Index_ntotal (entry->index);
        s_use (entry->index);
    }
    fpx_entry_release (&entry);
    s_close (&registry);
    //  What recovery accepted survives a clean close and a restart.
    if (!damaged) {
        registry = s_recover (&entry);
        FPX_FUZZ_ASSERT (entry != NULL);
        if (entry->damaged [0])
            fprintf (stderr, "fuzz_storage: damaged after a clean restart: %s\n", entry->damaged);
        FPX_FUZZ_ASSERT (entry->damaged [0] == 0 && entry->index != NULL);
        FPX_FUZZ_ASSERT (faiss_Index_ntotal (entry->index) == ntotal);
        fpx_entry_release (&entry);
        s_close (&registry);
    }
    return 0;
}
