/*  storage.c — write-ahead logs, snapshots and recovery of named indexes;
    see storage.h for the contract and docs/STORAGE.md for the formats.

    Every on-disk structure carries a CRC-32C; every length read back is
    checked against the file before use. A file that fails its checks is
    renamed aside (never deleted) and its index reported damaged, except a
    torn tail of the newest log, the expected result of a crash during an
    append, which is cut off.
*/
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdatomic.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <faiss/c_api/AutoTune_c.h>
#include <faiss/c_api/impl/AuxIndexStructures_c.h>

#include "budget.h"
#include "clock.h"
#include "entry.h"
#include "faiss_shim.h"
#include "log.h"
#include "storage.h"
#include "tenant_limits.h"

#define FPX_REC_MAGIC       0x52585046u       //  "FPXR"
#define FPX_REC_HEADER      32
#define FPX_REC_MAX         ((uint64_t) 1 << 40)
#define FPX_SNAP_MAGIC      "FPXSNAP1"
#define FPX_SNAP_VERSION    1
#define FPX_SNAP_HEADER     64
#define FPX_SNAP_BUFFER     (4 << 20)

struct fpx_wal_t {
    char dir [PATH_MAX];
    char label [2 * FPX_NAME_MAX + 2];       //  "tenant/name" for log lines
    pthread_mutex_t mu;                      //  fd, generation, offsets
    pthread_cond_t synced_cv;
    pthread_mutex_t snapshot_mu;             //  one snapshot at a time
    int fd;
    uint64_t generation;                     //  bumps when the segment rotates
    uint64_t written, synced;
    bool syncing;
    uint64_t last_start;                     //  offset of the last record
    uint64_t next_lsn;                       //  under the entry's exclusive lock
    _Atomic uint64_t snapshot_lsn;           //  written under snapshot_mu; atomic for
                                             //  eviction and load (storage.h), which
                                             //  hold the entry lock, not snapshot_mu
    uint64_t log_bytes;                      //  records since the snapshot
    double dirty_since;                      //  0 when nothing unsnapshotted
    bool snapshot_soon;                      //  a train record, or a rebuilt HNSW graph
    uint32_t tenant;
    uint64_t snapshot_bytes;                 //  size of the snapshot file
    uint64_t meta_bytes;                     //  … and of the meta file (under mu)
    long long charged;                       //  disk bytes counted to the tenant
    fpx_storage_t *store;                    //  the storage the index's files are in
                                             //  (not used once it is destroyed:
                                             //  fpx_wal_destroy needs only limits)
    fpx_limits_t *limits;                    //  where its disk bytes are counted
};

struct fpx_storage_t {
    fpx_storage_config_t config;
    char root [PATH_MAX];
    int lock_fd;
    fpx_registry_t *registry;
    char (*tenants) [FPX_NAME_MAX + 1];
    int ntenants;
    pthread_t snapshotter;
    bool snapshotter_running;
    pthread_mutex_t mu;
    pthread_cond_t wake;
    bool stopping;
    atomic_bool recovering;                  //  from new to the end of recover
    atomic_bool stop_recovery;
    atomic_size_t recovered;                 //  indexes loaded so far
};

//  The memory budget of the registry storage serves (budget.h); NULL
//  when none (then every budget call returns at once).
static fpx_budget_t *
s_budget (fpx_storage_t *self)
{
    return self->registry ? fpx_registry_parts (self->registry)->budget : NULL;
}

//  The tenants' usage, likewise (NULL: nothing counted).
static fpx_limits_t *
s_limits (fpx_storage_t *self)
{
    return self->registry ? fpx_registry_parts (self->registry)->limits : NULL;
}

// ---- CRC-32C --------------------------------------------------------------------

//  CRC-32C, reflected, polynomial 0x82f63b78; fpx_crc32c conditions the
//  register (~ before and after), the functions below work on it raw.
#define S_CRC_POLY  0x82f63b78u
//  Block sizes of the three-stream hardware CRC (powers of two).
#define S_CRC_LONG  8192
#define S_CRC_SHORT 256

static uint32_t s_crc_table [8][256];
//  s_crc_long [b][x]: the raw CRC x's byte b (x << 8b) carried over
//  S_CRC_LONG zero bytes; s_crc_short likewise over S_CRC_SHORT.
static uint32_t s_crc_long [4][256], s_crc_short [4][256];
static pthread_once_t s_crc_once = PTHREAD_ONCE_INIT;

//  A GF(2) matrix (column n = the image of bit n) times a vector.
static uint32_t
s_gf2_times (const uint32_t *matrix, uint32_t vector)
{
    uint32_t sum = 0;
    for (; vector; vector >>= 1, matrix++)
        if (vector & 1)
            sum ^= *matrix;
    return sum;
}

//  The tables that carry a raw CRC over `bytes` zero bytes (a power of
//  two): the operator for one zero bit, squared until it covers them.
static void
s_crc_zeros_init (uint32_t table [4][256], size_t bytes)
{
    uint32_t op [32], square [32];
    op [0] = S_CRC_POLY;
    for (int n = 1; n < 32; n++)
        op [n] = 1u << (n - 1);
    for (size_t bits = 1; bits < bytes * 8; bits *= 2) {
        for (int n = 0; n < 32; n++)
            square [n] = s_gf2_times (op, op [n]);
        memcpy (op, square, sizeof op);
    }
    for (uint32_t x = 0; x < 256; x++)
        for (int b = 0; b < 4; b++)
            table [b][x] = s_gf2_times (op, x << (8 * b));
}

static void
s_crc_init (void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t crc = i;
        for (int bit = 0; bit < 8; bit++)
            crc = (crc >> 1) ^ (S_CRC_POLY & (0u - (crc & 1)));
        s_crc_table [0][i] = crc;
    }
    for (int t = 1; t < 8; t++)
        for (int i = 0; i < 256; i++)
            s_crc_table [t][i] = (s_crc_table [t - 1][i] >> 8)
                               ^ s_crc_table [0][s_crc_table [t - 1][i] & 0xff];
    s_crc_zeros_init (s_crc_long, S_CRC_LONG);
    s_crc_zeros_init (s_crc_short, S_CRC_SHORT);
}

static uint32_t
s_crc_shift (uint32_t table [4][256], uint32_t crc)
{
    return table [0][crc & 0xff] ^ table [1][(crc >> 8) & 0xff]
         ^ table [2][(crc >> 16) & 0xff] ^ table [3][crc >> 24];
}

//  The CRC of the whole groups of three blocks of `block` bytes at *p_p,
//  continuing from c0 (*p_p and *size_p move past them): three
//  independent streams, one per block, then the first two carried over
//  the blocks after them and merged (CRCs are linear: the raw CRC of A·B
//  is that of A carried over |B| zero bytes, xor that of B from zero).
__attribute__ ((target ("sse4.2"))) static inline uint64_t
s_crc_hw_streams (uint64_t c0, const uint8_t **p_p, size_t *size_p, size_t block,
                  uint32_t table [4][256])
{
    const uint8_t *p = *p_p;
    size_t size = *size_p;
    for (; size >= 3 * block; p += 3 * block, size -= 3 * block) {
        uint64_t c1 = 0, c2 = 0;
        for (size_t i = 0; i < block; i += 8) {
            uint64_t w0, w1, w2;
            memcpy (&w0, p + i, 8);
            memcpy (&w1, p + block + i, 8);
            memcpy (&w2, p + 2 * block + i, 8);
            c0 = __builtin_ia32_crc32di (c0, w0);
            c1 = __builtin_ia32_crc32di (c1, w1);
            c2 = __builtin_ia32_crc32di (c2, w2);
        }
        c0 = s_crc_shift (table, (uint32_t) c0) ^ (uint32_t) c1;
        c0 = s_crc_shift (table, (uint32_t) c0) ^ (uint32_t) c2;
    }
    *p_p = p;
    *size_p = size;
    return c0;
}

//  The crc32 instruction takes 3 cycles and can start every cycle: one
//  stream of it runs at a third of its speed (8 GB/s here). Three streams
//  interleaved (on long blocks, then short ones, then one stream for the
//  rest) run at the instruction's throughput (23 GB/s), with the same
//  result: every log record and snapshot goes through here.
__attribute__ ((target ("sse4.2"))) static uint32_t
s_crc_hw (uint32_t crc, const uint8_t *p, size_t size)
{
    pthread_once (&s_crc_once, s_crc_init);
    uint64_t c = crc;
    c = s_crc_hw_streams (c, &p, &size, S_CRC_LONG, s_crc_long);
    c = s_crc_hw_streams (c, &p, &size, S_CRC_SHORT, s_crc_short);
    for (; size >= 8; p += 8, size -= 8) {
        uint64_t word;
        memcpy (&word, p, 8);
        c = __builtin_ia32_crc32di (c, word);
    }
    for (; size; p++, size--)
        c = __builtin_ia32_crc32qi ((uint32_t) c, *p);
    return (uint32_t) c;
}

static uint32_t
s_crc_sw (uint32_t crc, const uint8_t *p, size_t size)
{
    pthread_once (&s_crc_once, s_crc_init);
    for (; size >= 8; p += 8, size -= 8) {
        uint32_t lo, hi;
        memcpy (&lo, p, 4);
        memcpy (&hi, p + 4, 4);
        lo ^= crc;
        crc = s_crc_table [7][lo & 0xff] ^ s_crc_table [6][(lo >> 8) & 0xff]
            ^ s_crc_table [5][(lo >> 16) & 0xff] ^ s_crc_table [4][lo >> 24]
            ^ s_crc_table [3][hi & 0xff] ^ s_crc_table [2][(hi >> 8) & 0xff]
            ^ s_crc_table [1][(hi >> 16) & 0xff] ^ s_crc_table [0][hi >> 24];
    }
    for (; size; p++, size--)
        crc = (crc >> 8) ^ s_crc_table [0][(crc ^ *p) & 0xff];
    return crc;
}

uint32_t
fpx_crc32c (uint32_t crc, const void *data, size_t size)
{
    //  __builtin_cpu_supports is a load and a test: no flag cached here,
    //  whose first writes would race between threads.
    crc = ~crc;
    crc = __builtin_cpu_supports ("sse4.2") ? s_crc_hw (crc, data, size)
                                            : s_crc_sw (crc, data, size);
    return ~crc;
}

// ---- small file helpers -------------------------------------------------------------

static int
s_fsync_dir (const char *path)
{
    int fd = open (path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync (fd);
    close (fd);
    return rc;
}

static int
s_write_all (int fd, const void *data, size_t size, off_t offset)
{
    const char *p = data;
    while (size) {
        ssize_t n = pwrite (fd, p, size, offset);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        size -= (size_t) n;
        offset += n;
    }
    return 0;
}

static int
s_mkdir_p (const char *path)
{
    char buf [PATH_MAX];
    snprintf (buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            if (mkdir (buf, 0700) && errno != EEXIST)
                return -1;
            *p = '/';
        }
    return mkdir (buf, 0700) && errno != EEXIST ? -1 : 0;
}

//  DIR/PREFIX-NAME-PID-COUNTER-RANDOM: a name no other request, thread or
//  process picks, so that concurrent creates and drops never share one.
static void
s_unique_path (char *out, size_t size, const char *dir, const char *prefix, const char *name)
{
    static atomic_uint_fast64_t counter;
    uint64_t random = 0;
    if (getrandom (&random, sizeof random, GRND_NONBLOCK) != sizeof random)
        random = (uint64_t) time (NULL);
    snprintf (out, size, "%s/%s-%s-%d-%llu-%016llx", dir, prefix, name, (int) getpid (),
              (unsigned long long) atomic_fetch_add (&counter, 1), (unsigned long long) random);
}

static int
s_remove_tree (const char *path)
{
    DIR *dir = opendir (path);
    if (!dir)
        return errno == ENOENT ? 0 : -1;
    struct dirent *item;
    int rc = 0;
    while ((item = readdir (dir))) {
        if (!strcmp (item->d_name, ".") || !strcmp (item->d_name, ".."))
            continue;
        char child [PATH_MAX];
        snprintf (child, sizeof child, "%s/%s", path, item->d_name);
        if (item->d_type == DT_DIR)
            rc |= s_remove_tree (child);
        else
            rc |= unlink (child);
    }
    closedir (dir);
    return rc | rmdir (path);
}

static void
s_put64 (uint8_t *p, uint64_t v) { memcpy (p, &v, 8); }   //  little-endian hosts only
static void
s_put32 (uint8_t *p, uint32_t v) { memcpy (p, &v, 4); }
static uint64_t
s_get64 (const uint8_t *p) { uint64_t v; memcpy (&v, p, 8); return v; }
static uint32_t
s_get32 (const uint8_t *p) { uint32_t v; memcpy (&v, p, 4); return v; }

static void
s_segment_path (char *out, size_t size, const char *dir, uint64_t first_lsn)
{
    snprintf (out, size, "%s/wal-%016llx.log", dir, (unsigned long long) first_lsn);
}

//  Renames a file that failed its checks so that nothing uses it again
//  and nothing deletes it; returns the new name in aside.
static void
s_move_aside (const char *path, char *aside, size_t size)
{
    snprintf (aside, size, "%s.damaged-%lld", path, (long long) time (NULL));
    if (rename (path, aside))
        snprintf (aside, size, "%s (could not be moved aside: %s)", path, strerror (errno));
}

// ---- snapshots -------------------------------------------------------------------

//  DIR/meta: what describe shows of an index, for the snapshot it names,
//  so that a server with a memory budget can register an index at start
//  without loading it (docs/STORAGE.md, "Metadata file").
#define FPX_META_MAGIC      "FPXMETA1"
#define FPX_META_VERSION    1
#define FPX_META_SIZE       128

typedef struct {
    uint64_t lsn;                  //  the snapshot's
    uint64_t payload;              //  its payload length = serialized size
    uint32_t payload_crc;
    fpx_evicted_meta_t describe;
} s_meta_t;

static void
s_meta_of (const FaissIndex *index, s_meta_t *meta)
{
    meta->describe.d = (int) faiss_Index_d (index);
    meta->describe.metric = (int) faiss_Index_metric_type (index);
    meta->describe.ntotal = faiss_Index_ntotal (index);
    meta->describe.is_trained = faiss_Index_is_trained (index);
    snprintf (meta->describe.class_name, sizeof meta->describe.class_name, "%s",
              fpx_shim_class_name (index, NULL));
}

//  Writes DIR/meta (through meta.tmp and a rename). Not synced: a meta
//  file that a crash cut or left stale fails its checks against the
//  snapshot, and the index is then read whole. Returns the bytes DIR/meta
//  now holds (0 when it could not be written: it is removed).
static uint64_t
s_meta_install (const char *dir, const s_meta_t *meta)
{
    uint8_t bytes [FPX_META_SIZE] = { 0 };
    memcpy (bytes, FPX_META_MAGIC, 8);
    memcpy (bytes + 12, &(uint32_t) { FPX_META_VERSION }, 4);
    memcpy (bytes + 16, &meta->lsn, 8);
    memcpy (bytes + 24, &meta->payload, 8);
    memcpy (bytes + 32, &meta->payload_crc, 4);
    memcpy (bytes + 36, &meta->describe.d, 4);
    memcpy (bytes + 40, &meta->describe.metric, 4);
    memcpy (bytes + 44, &(uint32_t) { meta->describe.is_trained }, 4);
    memcpy (bytes + 48, &meta->describe.ntotal, 8);
    memcpy (bytes + 64, meta->describe.class_name, strnlen (meta->describe.class_name, 63));
    uint32_t crc = fpx_crc32c (0, bytes + 12, FPX_META_SIZE - 12);
    memcpy (bytes + 8, &crc, 4);
    char tmp [PATH_MAX], path [PATH_MAX];
    snprintf (tmp, sizeof tmp, "%s/meta.tmp", dir);
    snprintf (path, sizeof path, "%s/meta", dir);
    int fd = open (tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    bool ok = fd >= 0 && s_write_all (fd, bytes, sizeof bytes, 0) == 0;
    if (fd >= 0)
        close (fd);
    if (!ok || rename (tmp, path)) {
        unlink (tmp);
        unlink (path);             //  a stale one would only be refused later
        return 0;
    }
    return FPX_META_SIZE;
}

//  Counts a new meta file's bytes to the tenant's disk use.
static void
s_wal_meta_charge (fpx_wal_t *wal, uint64_t bytes);

//  Reads DIR/meta; 0 when whole, -1 otherwise.
static int
s_meta_read (const char *dir, s_meta_t *meta)
{
    char path [PATH_MAX];
    snprintf (path, sizeof path, "%s/meta", dir);
    uint8_t bytes [FPX_META_SIZE];
    int fd = open (path, O_RDONLY | O_CLOEXEC);
    ssize_t got = fd >= 0 ? pread (fd, bytes, sizeof bytes, 0) : -1;
    if (fd >= 0)
        close (fd);
    if (got != FPX_META_SIZE || memcmp (bytes, FPX_META_MAGIC, 8)
    ||  s_get32 (bytes + 12) != FPX_META_VERSION
    ||  fpx_crc32c (0, bytes + 12, FPX_META_SIZE - 12) != s_get32 (bytes + 8)
    ||  bytes [FPX_META_SIZE - 1] != 0)
        return -1;
    meta->lsn = s_get64 (bytes + 16);
    meta->payload = s_get64 (bytes + 24);
    meta->payload_crc = s_get32 (bytes + 32);
    memcpy (&meta->describe.d, bytes + 36, 4);
    memcpy (&meta->describe.metric, bytes + 40, 4);
    meta->describe.is_trained = s_get32 (bytes + 44) != 0;
    memcpy (&meta->describe.ntotal, bytes + 48, 8);
    memcpy (meta->describe.class_name, bytes + 64, 64);
    if (meta->describe.d < 1 || meta->describe.d > FPX_DIM_MAX || meta->describe.ntotal < 0
    ||  (meta->describe.metric != FPX_METRIC_L2 && meta->describe.metric != FPX_METRIC_INNER_PRODUCT))
        return -1;
    return 0;
}

typedef struct {
    int fd;
    uint8_t *buffer;
    size_t used;
    off_t offset;
    uint64_t length;
    uint32_t crc;
} s_snapshot_writer_t;

static int
s_flush (s_snapshot_writer_t *w)
{
    if (w->used && s_write_all (w->fd, w->buffer, w->used, w->offset))
        return -1;
    w->offset += (off_t) w->used;
    w->used = 0;
    return 0;
}

static int
s_snapshot_sink (void *arg, const void *data, size_t size)
{
    s_snapshot_writer_t *w = arg;
    w->crc = fpx_crc32c (w->crc, data, size);
    w->length += size;
    while (size) {
        size_t room = FPX_SNAP_BUFFER - w->used;
        size_t take = size < room ? size : room;
        memcpy (w->buffer + w->used, data, take);
        w->used += take;
        data = (const char *) data + take;
        size -= take;
        if (w->used == FPX_SNAP_BUFFER && s_flush (w))
            return -1;
    }
    return 0;
}

//  Writes DIR/snapshot.tmp for index at lsn and makes it durable; the
//  caller renames it. The caller holds at least a shared lock on it.
static int
s_snapshot_write (const char *dir, const FaissIndex *index, const char *factory,
                  uint64_t lsn, uint64_t *size_p, s_meta_t *meta, char *err, size_t err_size)
{
    char path [PATH_MAX];
    snprintf (path, sizeof path, "%s/snapshot.tmp", dir);
    size_t factory_len = strlen (factory);
    s_snapshot_writer_t w = { .fd = open (path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600),
                              .offset = FPX_SNAP_HEADER + (off_t) factory_len };
    w.buffer = malloc (FPX_SNAP_BUFFER);
    int rc = 0;
    if (w.fd < 0 || !w.buffer)
        rc = FPX_EIO;
    else
        rc = fpx_shim_serialize_to (index, s_snapshot_sink, &w, err, err_size);
    if (rc == 0 && s_flush (&w))
        rc = FPX_EIO;
    if (rc == 0) {
        uint8_t header [FPX_SNAP_HEADER] = { 0 };
        memcpy (header, FPX_SNAP_MAGIC, 8);
        s_put32 (header + 8, FPX_SNAP_VERSION);
        s_put64 (header + 16, lsn);
        s_put64 (header + 24, w.length);
        s_put32 (header + 32, w.crc);
        s_put32 (header + 36, (uint32_t) factory_len);
        uint32_t crc = fpx_crc32c (0, header + 16, FPX_SNAP_HEADER - 16);
        s_put32 (header + 12, fpx_crc32c (crc, factory, factory_len));
        if (s_write_all (w.fd, header, FPX_SNAP_HEADER, 0)
        ||  s_write_all (w.fd, factory, factory_len, FPX_SNAP_HEADER)
        ||  fdatasync (w.fd))
            rc = FPX_EIO;
        *size_p = FPX_SNAP_HEADER + factory_len + w.length;
        *meta = (s_meta_t) { .lsn = lsn, .payload = w.length, .payload_crc = w.crc };
        s_meta_of (index, meta);
    }
    if (rc == FPX_EIO)
        snprintf (err, err_size, "cannot write %s: %s", path, strerror (errno));
    if (w.fd >= 0)
        close (w.fd);
    free (w.buffer);
    if (rc)
        unlink (path);
    return rc;
}

//  Reads DIR/snapshot. Returns 0 with *index_p, or a reason in err
//  (FPX_EDAMAGED when the file fails a check, FPX_EIO when unreadable).
static int
s_snapshot_read (const char *path, FaissIndex **index_p, uint64_t *lsn_p,
                 char *factory, size_t factory_size, char *err, size_t err_size)
{
    int fd = open (path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat (fd, &st)) {
        snprintf (err, err_size, "cannot open %s: %s", path, strerror (errno));
        if (fd >= 0)
            close (fd);
        return errno == ENOENT ? FPX_EDAMAGED : FPX_EIO;
    }
    size_t size = (size_t) st.st_size;
    const uint8_t *map = size >= FPX_SNAP_HEADER
                       ? mmap (NULL, size, PROT_READ, MAP_PRIVATE, fd, 0) : MAP_FAILED;
    close (fd);
    int rc = FPX_EDAMAGED;
    if (map == MAP_FAILED)
        snprintf (err, err_size, "snapshot is %zu bytes: shorter than its header", size);
    else {
        uint64_t payload = s_get64 (map + 24);
        uint32_t factory_len = s_get32 (map + 36);
        uint32_t crc = fpx_crc32c (0, map + 16, FPX_SNAP_HEADER - 16);
        if (memcmp (map, FPX_SNAP_MAGIC, 8) || s_get32 (map + 8) != FPX_SNAP_VERSION)
            snprintf (err, err_size, "snapshot has a bad magic or format version");
        else if (factory_len >= factory_size || payload > size
             ||  FPX_SNAP_HEADER + factory_len + payload != size)
            snprintf (err, err_size, "snapshot lengths do not match its size (%zu bytes)", size);
        else if (fpx_crc32c (crc, map + FPX_SNAP_HEADER, factory_len) != s_get32 (map + 12))
            snprintf (err, err_size, "snapshot header checksum mismatch");
        else if (fpx_crc32c (0, map + FPX_SNAP_HEADER + factory_len, payload) != s_get32 (map + 32))
            snprintf (err, err_size, "snapshot payload checksum mismatch");
        else {
            memcpy (factory, map + FPX_SNAP_HEADER, factory_len);
            factory [factory_len] = 0;
            *lsn_p = s_get64 (map + 16);
            size_t cap = 4 * payload + ((size_t) 256 << 20);
            char faiss_err [FPX_ERROR_TEXT_MAX];
            if (fpx_shim_deserialize (map + FPX_SNAP_HEADER + factory_len, payload, cap,
                                      index_p, faiss_err, sizeof faiss_err))
                snprintf (err, err_size, "snapshot passes its checksums but cannot be loaded: "
                          "%s", faiss_err);
            else
                rc = 0;
        }
        munmap ((void *) map, size);
    }
    return rc;
}

//  Reads and checks DIR/snapshot's header only (magic, version, header
//  checksum, lengths against the file's size). 0, or -1.
static int
s_snapshot_header (const char *dir, uint64_t *lsn_p, uint64_t *payload_p, uint32_t *crc_p,
                   char *factory, size_t factory_size, uint64_t *file_size_p)
{
    char path [PATH_MAX];
    snprintf (path, sizeof path, "%s/snapshot", dir);
    int fd = open (path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    uint8_t header [FPX_SNAP_HEADER + FPX_FACTORY_MAX];
    ssize_t got = fd >= 0 && fstat (fd, &st) == 0 ? pread (fd, header, sizeof header, 0) : -1;
    if (fd >= 0)
        close (fd);
    if (got < FPX_SNAP_HEADER || memcmp (header, FPX_SNAP_MAGIC, 8)
    ||  s_get32 (header + 8) != FPX_SNAP_VERSION)
        return -1;
    uint32_t factory_len = s_get32 (header + 36);
    uint64_t payload = s_get64 (header + 24);
    if (factory_len >= factory_size || FPX_SNAP_HEADER + factory_len > (size_t) got
    ||  payload > (uint64_t) st.st_size
    ||  FPX_SNAP_HEADER + factory_len + payload != (uint64_t) st.st_size)
        return -1;
    uint32_t crc = fpx_crc32c (0, header + 16, FPX_SNAP_HEADER - 16);
    if (fpx_crc32c (crc, header + FPX_SNAP_HEADER, factory_len) != s_get32 (header + 12))
        return -1;
    memcpy (factory, header + FPX_SNAP_HEADER, factory_len);
    factory [factory_len] = 0;
    *lsn_p = s_get64 (header + 16);
    *payload_p = payload;
    *crc_p = s_get32 (header + 32);
    *file_size_p = (uint64_t) st.st_size;
    return 0;
}

// ---- the log -----------------------------------------------------------------------

static fpx_wal_t *
s_wal_new (fpx_storage_t *store, const char *dir, uint32_t tenant_id, const char *tenant,
           const char *name)
{
    fpx_wal_t *wal = calloc (1, sizeof *wal);
    if (!wal)
        return NULL;
    wal->store = store;
    wal->limits = s_limits (store);
    wal->tenant = tenant_id;
    snprintf (wal->dir, sizeof wal->dir, "%s", dir);
    snprintf (wal->label, sizeof wal->label, "%s/%s", tenant, name);
    pthread_mutex_init (&wal->mu, NULL);
    pthread_mutex_init (&wal->snapshot_mu, NULL);
    pthread_cond_init (&wal->synced_cv, NULL);
    wal->fd = -1;
    return wal;
}

void
fpx_wal_destroy (fpx_wal_t **self_p)
{
    fpx_wal_t *wal = *self_p;
    if (!wal)
        return;
    fpx_limits_disk_move (wal->limits, wal->tenant, -wal->charged);
    if (wal->fd >= 0)
        close (wal->fd);
    pthread_mutex_destroy (&wal->mu);
    pthread_mutex_destroy (&wal->snapshot_mu);
    pthread_cond_destroy (&wal->synced_cv);
    free (wal);
    *self_p = NULL;
}

long long
fpx_wal_disk_bytes (fpx_wal_t *wal)
{
    pthread_mutex_lock (&wal->mu);
    long long bytes = wal->charged;
    pthread_mutex_unlock (&wal->mu);
    return bytes;
}

//  Counts the index's snapshot and log to its tenant's disk use (under
//  wal->mu, or before the wal is shared).
static void
s_wal_recharge (fpx_wal_t *wal)
{
    long long now = (long long) (wal->snapshot_bytes + wal->log_bytes + wal->meta_bytes);
    fpx_limits_disk_move (wal->limits, wal->tenant, now - wal->charged);
    wal->charged = now;
}

static void
s_wal_meta_charge (fpx_wal_t *wal, uint64_t bytes)
{
    pthread_mutex_lock (&wal->mu);
    wal->meta_bytes = bytes;
    s_wal_recharge (wal);
    pthread_mutex_unlock (&wal->mu);
}

//  Records that add data count against max_disk_mb; removals, resets
//  and settings are always written, so that a tenant at its quota can
//  free space and keep tuning.
static bool
s_record_grows (fpx_record_kind_t kind)
{
    return kind == FPX_REC_TRAIN || kind == FPX_REC_ADD || kind == FPX_REC_ADD_WITH_IDS;
}

//  Opens (creating if needed) the segment starting at first_lsn for
//  appending at `end`, and makes its directory entry durable.
static int
s_wal_open_segment (fpx_wal_t *wal, uint64_t first_lsn, uint64_t end)
{
    char path [PATH_MAX];
    s_segment_path (path, sizeof path, wal->dir, first_lsn);
    int fd = open (path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0 || s_fsync_dir (wal->dir)) {
        if (fd >= 0)
            close (fd);
        return -1;
    }
    pthread_mutex_lock (&wal->mu);
    while (wal->syncing)
        pthread_cond_wait (&wal->synced_cv, &wal->mu);
    if (wal->fd >= 0) {
        fdatasync (wal->fd);
        close (wal->fd);
    }
    wal->fd = fd;
    wal->generation++;
    wal->written = wal->synced = wal->last_start = end;
    pthread_cond_broadcast (&wal->synced_cv);
    pthread_mutex_unlock (&wal->mu);
    return 0;
}

int
fpx_wal_append (fpx_wal_t *wal, const fpx_record_t *record, fpx_ticket_t *ticket,
                char *err, size_t err_size)
{
    uint8_t header [FPX_REC_HEADER] = { 0 };
    uint64_t length = 0;
    for (int i = 0; i < record->nparts; i++)
        length += record->sizes [i];
    s_put32 (header, FPX_REC_MAGIC);
    s_put64 (header + 8, length);
    s_put64 (header + 16, wal->next_lsn);
    header [24] = (uint8_t) record->kind;
    uint32_t crc = fpx_crc32c (0, header + 8, FPX_REC_HEADER - 8);
    for (int i = 0; i < record->nparts; i++)
        crc = fpx_crc32c (crc, record->parts [i], record->sizes [i]);
    s_put32 (header + 4, crc);
    int rc = s_record_grows (record->kind)
           ? fpx_limits_disk_check (wal->limits, wal->tenant, FPX_REC_HEADER + length, err,
                                    err_size)
           : 0;
    if (rc)
        return rc;

    struct iovec iov [4] = { { header, FPX_REC_HEADER } };
    for (int i = 0; i < record->nparts; i++)
        iov [i + 1] = (struct iovec) { (void *) record->parts [i], record->sizes [i] };
    uint64_t start = wal->written, total = FPX_REC_HEADER + length, done = 0;
    int count = record->nparts + 1, at = 0;
    while (done < total) {
        ssize_t n = pwritev (wal->fd, iov + at, count - at, (off_t) (start + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        done += (uint64_t) n;
        while (at < count && (size_t) n >= iov [at].iov_len)
            n -= (ssize_t) iov [at++].iov_len;
        if (at < count) {
            iov [at].iov_base = (char *) iov [at].iov_base + n;
            iov [at].iov_len -= (size_t) n;
        }
    }
    bool failed = done < total
               || (wal->store->config.fsync == FPX_FSYNC_ALWAYS && fdatasync (wal->fd));
    if (failed) {
        int saved = errno;
        if (ftruncate (wal->fd, (off_t) start))
            fpx_log (FPX_LOG_ERROR, "%s: cannot cut a failed log record: %s", wal->label,
                     strerror (errno));
        snprintf (err, err_size, "cannot log the write for %s: %s; nothing was changed",
                  wal->label, strerror (saved ? saved : EIO));
        return FPX_EIO;
    }
    pthread_mutex_lock (&wal->mu);
    wal->last_start = start;
    wal->written = start + total;
    if (wal->store->config.fsync == FPX_FSYNC_ALWAYS)
        wal->synced = wal->written;
    *ticket = (fpx_ticket_t) { .generation = wal->generation, .offset = wal->written };
    wal->next_lsn++;
    //  The snapshotter reads these under mu too (fpx_wal_wants_snapshot).
    if (wal->log_bytes == 0)
        wal->dirty_since = fpx_monotonic_seconds ();
    wal->log_bytes += total;
    s_wal_recharge (wal);
    //  Training vectors are usually far larger than what they train: the
    //  snapshot that follows drops them from the log (and from restarts).
    if (record->kind == FPX_REC_TRAIN)
        wal->snapshot_soon = true;
    bool wants_snapshot = wal->snapshot_soon
                       || wal->log_bytes >= wal->store->config.snapshot_log_bytes;
    pthread_mutex_unlock (&wal->mu);
    if (wants_snapshot) {
        pthread_mutex_lock (&wal->store->mu);
        pthread_cond_signal (&wal->store->wake);
        pthread_mutex_unlock (&wal->store->mu);
    }
    return 0;
}

void
fpx_wal_snapshot_soon (fpx_wal_t *wal)
{
    pthread_mutex_lock (&wal->mu);
    wal->snapshot_soon = true;
    pthread_mutex_unlock (&wal->mu);
    pthread_mutex_lock (&wal->store->mu);
    pthread_cond_signal (&wal->store->wake);
    pthread_mutex_unlock (&wal->store->mu);
}

void
fpx_wal_undo (fpx_wal_t *wal, const fpx_ticket_t *ticket)
{
    pthread_mutex_lock (&wal->mu);
    uint64_t start = wal->last_start;
    if (ticket->generation == wal->generation && ticket->offset == wal->written) {
        if (ftruncate (wal->fd, (off_t) start))
            fpx_log (FPX_LOG_ERROR, "%s: cannot take back a refused record: %s", wal->label,
                     strerror (errno));
        wal->log_bytes -= wal->written - start;
        s_wal_recharge (wal);
        wal->written = start;
        if (wal->synced > start)
            wal->synced = start;
        wal->next_lsn--;
    }
    pthread_mutex_unlock (&wal->mu);
}

int
fpx_wal_commit (fpx_wal_t *wal, const fpx_ticket_t *ticket, char *err, size_t err_size)
{
    if (wal->store->config.fsync != FPX_FSYNC_BATCH)
        return 0;
    int rc = 0;
    pthread_mutex_lock (&wal->mu);
    while (ticket->generation == wal->generation && wal->synced < ticket->offset) {
        if (wal->syncing) {
            pthread_cond_wait (&wal->synced_cv, &wal->mu);
            continue;
        }
        //  Become the syncer for everything written so far: the writers
        //  that arrive meanwhile share the next one.
        wal->syncing = true;
        uint64_t target = wal->written;
        int fd = wal->fd;
        pthread_mutex_unlock (&wal->mu);
        int failed = fdatasync (fd);
        int saved = errno;
        pthread_mutex_lock (&wal->mu);
        wal->syncing = false;
        if (!failed && target > wal->synced)
            wal->synced = target;
        pthread_cond_broadcast (&wal->synced_cv);
        if (failed) {
            snprintf (err, err_size, "%s: fdatasync failed: %s; the write may not survive a "
                      "crash", wal->label, strerror (saved));
            rc = FPX_EIO;
            break;
        }
    }
    pthread_mutex_unlock (&wal->mu);
    return rc;
}

//  Whether records were logged since the last snapshot.
static bool
s_wal_has_records (fpx_wal_t *wal)
{
    pthread_mutex_lock (&wal->mu);
    bool has = wal->log_bytes > 0;
    pthread_mutex_unlock (&wal->mu);
    return has;
}

bool
fpx_wal_wants_snapshot (fpx_wal_t *wal)
{
    pthread_mutex_lock (&wal->mu);
    bool wants = wal->log_bytes > 0
              && (wal->snapshot_soon || wal->log_bytes >= wal->store->config.snapshot_log_bytes
                  || fpx_monotonic_seconds () - wal->dirty_since
                     >= wal->store->config.snapshot_interval_s);
    pthread_mutex_unlock (&wal->mu);
    return wants;
}

// ---- replay --------------------------------------------------------------------------

static int s_replay_aligned (FaissIndex *index, int kind, const uint8_t *p, uint64_t length,
                             char *err, size_t err_size);

//  Applies one log record to index. Returns 0, or -1 with err when the
//  record cannot be meant for this index (its sizes do not fit). Records
//  follow each other in the log without padding: after one of a length
//  that is not a multiple of 8 (set_parameters' text, vectors of odd
//  n·d), the floats and ids of the next are copied to an aligned buffer
//  before anyone reads them as such.
static int
s_replay_record (FaissIndex *index, int kind, const uint8_t *p, uint64_t length,
                 char *err, size_t err_size)
{
    if ((uintptr_t) p % 8 == 0)
        return s_replay_aligned (index, kind, p, length, err, err_size);
    uint8_t *copy = malloc (length ? length : 1);
    if (!copy) {
        snprintf (err, err_size, "out of memory for a log record of %llu bytes",
                  (unsigned long long) length);
        return -1;
    }
    memcpy (copy, p, length);
    int rc = s_replay_aligned (index, kind, copy, length, err, err_size);
    free (copy);
    return rc;
}

//  s_replay_record, for p aligned to 8 bytes.
static int
s_replay_aligned (FaissIndex *index, int kind, const uint8_t *p, uint64_t length,
                  char *err, size_t err_size)
{
    int d = (int) faiss_Index_d (index);
    uint64_t n = length >= 16 ? s_get64 (p) : 0;
    int rc = 0;
    char faiss_err [FPX_ERROR_TEXT_MAX] = "";
    if (kind == FPX_REC_TRAIN || kind == FPX_REC_ADD || kind == FPX_REC_ADD_WITH_IDS) {
        uint64_t row = (uint64_t) d * 4 + (kind == FPX_REC_ADD_WITH_IDS ? 8 : 0);
        if (length < 16 || (int) s_get32 (p + 8) != d || n == 0 || (length - 16) / row != n
        ||  (length - 16) % row)
            goto malformed;
        const float *x = (const float *) (p + 16);
        //  The server logs only vectors it accepted (fpx_op_vectors): any
        //  other cannot come from it, and FAISS must not train on them
        //  (a PCA of NaN is a matrix the next recovery refuses).
        size_t bad_row;
        double norm2;
        if (fpx_vectors_check (x, (size_t) n, (size_t) d, &bad_row, &norm2)) {
            snprintf (err, err_size, "log record of kind %d holds vector %zu, which the server "
                      "refuses (not finite, or too large)", kind, bad_row);
            return -1;
        }
        if (kind == FPX_REC_TRAIN)
            rc = faiss_Index_train (index, (int64_t) n, x);
        else if (kind == FPX_REC_ADD)
            rc = faiss_Index_add (index, (int64_t) n, x);
        else {
            //  The ids follow n·d floats: on a 4-byte boundary when n·d is odd.
            const uint8_t *at = p + 16 + n * (uint64_t) d * 4;
            int64_t *ids = (uintptr_t) at % 8 ? malloc (n * 8) : NULL;
            if ((uintptr_t) at % 8 && !ids) {
                snprintf (err, err_size, "out of memory for %llu ids", (unsigned long long) n);
                return -1;
            }
            if (ids)
                memcpy (ids, at, n * 8);
            rc = faiss_Index_add_with_ids (index, (int64_t) n, x,
                                           ids ? ids : (const int64_t *) at);
            free (ids);
        }
    }
    else if (kind == FPX_REC_REMOVE_IDS || kind == FPX_REC_REMOVE_RANGE) {
        FaissIDSelector *selector = NULL;
        size_t removed;
        if (length < 16 || (kind == FPX_REC_REMOVE_IDS && ((length - 16) % 8 || (length - 16) / 8 != n)))
            goto malformed;
        if (kind == FPX_REC_REMOVE_IDS)
            rc = fpx_shim_id_selector ((int64_t) n, (const int64_t *) (p + 16), &selector,
                                       faiss_err, sizeof faiss_err);
        else
            rc = faiss_IDSelectorRange_new ((FaissIDSelectorRange **) &selector,
                                            (int64_t) s_get64 (p), (int64_t) s_get64 (p + 8));
        //  As the first time (an HNSW graph is rebuilt deterministically),
        //  without a memory cap: the server did it once already.
        size_t need;
        int rebuilt;
        if (!rc)
            rc = fpx_shim_remove_ids (index, selector, SIZE_MAX, &removed, &need, &rebuilt,
                                      faiss_err, sizeof faiss_err);
        faiss_IDSelector_free (selector);
    }
    else if (kind == FPX_REC_RESET)
        rc = faiss_Index_reset (index);
    else if (kind == FPX_REC_SET_PARAMETERS || kind == FPX_REC_SET_ATTR) {
        uint64_t skip = kind == FPX_REC_SET_ATTR ? 8 : 0;
        char text [FPX_SETPARAM_MAX];
        if (length < skip + 1 || length - skip >= sizeof text)
            goto malformed;
        memcpy (text, p + skip, length - skip);
        text [length - skip] = 0;
        if (kind == FPX_REC_SET_ATTR) {
            double value;
            memcpy (&value, p, 8);
            rc = fpx_shim_set_attr (index, NULL, text, value, faiss_err, sizeof faiss_err);
        }
        else {
            FaissParameterSpace *space = NULL;
            rc = faiss_ParameterSpace_new (&space);
            if (!rc)
                rc = faiss_ParameterSpace_set_index_parameters (space, index, text);
            faiss_ParameterSpace_free (space);
        }
    }
    else if (kind == FPX_REC_SET_DIRECT_MAP && length == 8)
        rc = fpx_shim_set_direct_map (index, (int) s_get32 (p), faiss_err, sizeof faiss_err);
    else
        goto malformed;
    if (rc)     //  refused again, as the first time: the log keeps only
                //  accepted records, so this is worth a line, not a stop
        fpx_log (FPX_LOG_WARN, "replay: FAISS refused a record of kind %d: %s", kind, faiss_err);
    return 0;
malformed:
    snprintf (err, err_size, "log record of kind %d does not fit the index (d = %d)", kind, d);
    return -1;
}

typedef struct {
    uint64_t first_lsn;
    char name [64];
} s_segment_t;

static int
s_compare_segments (const void *a, const void *b)
{
    uint64_t x = ((const s_segment_t *) a)->first_lsn, y = ((const s_segment_t *) b)->first_lsn;
    return x < y ? -1 : x > y;
}

//  Sorted log segments of dir; *count_p of them. NULL on error.
static s_segment_t *
s_list_segments (const char *dir, size_t *count_p)
{
    DIR *handle = opendir (dir);
    if (!handle)
        return NULL;
    size_t count = 0, capacity = 16;
    s_segment_t *segments = malloc (capacity * sizeof *segments);
    struct dirent *item;
    while (segments && (item = readdir (handle))) {
        unsigned long long lsn;
        char tail;
        if (sscanf (item->d_name, "wal-%16llx.lo%c", &lsn, &tail) != 2 || tail != 'g'
        ||  strlen (item->d_name) != 24)
            continue;
        if (count == capacity) {
            s_segment_t *grown = realloc (segments, 2 * capacity * sizeof *segments);
            if (!grown) {
                free (segments);
                segments = NULL;
                break;
            }
            segments = grown;
            capacity *= 2;
        }
        segments [count].first_lsn = lsn;
        snprintf (segments [count].name, sizeof segments [count].name, "%s", item->d_name);
        count++;
    }
    closedir (handle);
    if (segments)
        qsort (segments, count, sizeof *segments, s_compare_segments);
    *count_p = count;
    return segments;
}

//  True when a record that fails its checks is what a crash during an
//  append leaves at the end of the newest segment: a prefix of a record
//  (a short header, or a payload running past the end), a last record
//  whose pages did not all reach the disk, or a zero-filled tail. A bad
//  record with whole records after it is damage, never a torn tail.
static bool
s_torn_tail (const uint8_t *rec, uint64_t left)
{
    if (left < FPX_REC_HEADER)
        return true;
    uint64_t length = s_get64 (rec + 8);
    if (s_get32 (rec) == FPX_REC_MAGIC
    &&  (length > left - FPX_REC_HEADER || length == left - FPX_REC_HEADER))
        return true;
    for (uint64_t i = 0; i < left; i++)
        if (rec [i])
            return false;
    return true;
}

//  Replays one segment into index from *next_lsn on. A bad record is cut
//  off when it is a torn tail of the newest segment (*valid_end tells
//  where), otherwise damage (-1 with err).
static int
s_replay_segment (FaissIndex *index, const char *label, const char *path, bool newest,
                  uint64_t *next_lsn, uint64_t *valid_end, char *err, size_t err_size)
{
    int fd = open (path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat (fd, &st)) {
        snprintf (err, err_size, "cannot read %s: %s", path, strerror (errno));
        if (fd >= 0)
            close (fd);
        return -1;
    }
    size_t size = (size_t) st.st_size;
    const uint8_t *map = size ? mmap (NULL, size, PROT_READ, MAP_PRIVATE, fd, 0) : NULL;
    close (fd);
    if (map == MAP_FAILED) {
        snprintf (err, err_size, "cannot map %s: %s", path, strerror (errno));
        return -1;
    }
    uint64_t at = 0, replayed = 0;
    int rc = 0;
    double started = fpx_monotonic_seconds (), reported = started;
    while (rc == 0 && at < size) {
        //  A long replay says how far it is, every 5 s.
        double now = fpx_monotonic_seconds ();
        if (now - reported >= 5) {
            fpx_log (FPX_LOG_INFO, "recovering %s: %.0f of %.0f MiB of a log segment replayed "
                     "(%llu records, %.0f s)", label, at / 1048576.0, size / 1048576.0,
                     (unsigned long long) replayed, now - started);
            reported = now;
        }
        const uint8_t *rec = map + at;
        uint64_t left = size - at, length = left >= FPX_REC_HEADER ? s_get64 (rec + 8) : 0;
        bool whole = left >= FPX_REC_HEADER && s_get32 (rec) == FPX_REC_MAGIC
                  && length <= FPX_REC_MAX && length <= left - FPX_REC_HEADER
                  && fpx_crc32c (0, rec + 8, FPX_REC_HEADER - 8 + length) == s_get32 (rec + 4);
        if (!whole) {
            if (newest && s_torn_tail (rec, left))
                break;
            snprintf (err, err_size, "%s: bad record at offset %llu", path, (unsigned long long) at);
            rc = -1;
        }
        else if (s_get64 (rec + 16) < *next_lsn)
            at += FPX_REC_HEADER + length;           //  covered by the snapshot
        else if (s_get64 (rec + 16) != *next_lsn) {
            snprintf (err, err_size, "%s: record %llu where %llu was expected", path,
                      (unsigned long long) s_get64 (rec + 16), (unsigned long long) *next_lsn);
            rc = -1;
        }
        else {
            rc = s_replay_record (index, rec [24], rec + FPX_REC_HEADER, length, err, err_size);
            if (rc == 0) {
                at += FPX_REC_HEADER + length;
                ++*next_lsn;
                replayed++;
            }
        }
    }
    if (map)
        munmap ((void *) map, size);
    *valid_end = at;
    return rc;
}

// ---- recovery -------------------------------------------------------------------------

//  Loads one index directory. On success *object is whole; on damage
//  object->damaged holds the reason and the bad file is moved aside.
static void
s_recover_index (fpx_storage_t *self, const char *dir, uint32_t tenant_id, const char *tenant,
                 const char *name, fpx_object_t *object, char *factory, size_t factory_size,
                 char *reason, size_t reason_size, uint64_t *vectors)
{
    char path [PATH_MAX], aside [PATH_MAX + 64], why [1024], label [2 * FPX_NAME_MAX + 2];
    snprintf (label, sizeof label, "%s/%s", tenant, name);
    double started = fpx_monotonic_seconds ();
    uint64_t snapshot_lsn = 0;
    memset (object, 0, sizeof *object);
    object->factory = factory;
    snprintf (path, sizeof path, "%s/snapshot", dir);
    int rc = s_snapshot_read (path, &object->index, &snapshot_lsn, factory, factory_size,
                              why, sizeof why);
    if (rc) {
        if (rc == FPX_EDAMAGED && access (path, F_OK) == 0) {
            s_move_aside (path, aside, sizeof aside);
            snprintf (reason, reason_size, "%s; moved aside to %s", why, aside);
        }
        else
            snprintf (reason, reason_size, "%s", why);
        object->damaged = reason;
        return;
    }
    size_t count = 0;
    s_segment_t *segments = s_list_segments (dir, &count);
    uint64_t next_lsn = snapshot_lsn + 1, valid_end = 0, last_first = next_lsn;
    for (size_t i = 0; segments && i < count; i++) {
        snprintf (path, sizeof path, "%s/%s", dir, segments [i].name);
        bool newest = i + 1 == count;
        if (!newest && segments [i + 1].first_lsn <= next_lsn) {
            unlink (path);           //  wholly covered by the snapshot
            continue;
        }
        if (s_replay_segment (object->index, label, path, newest, &next_lsn, &valid_end, why,
                              sizeof why)) {
            s_move_aside (path, aside, sizeof aside);
            snprintf (reason, reason_size, "%s; log moved aside to %s", why, aside);
            object->damaged = reason;
            faiss_Index_free (object->index);
            object->index = NULL;
            free (segments);
            return;
        }
        last_first = segments [i].first_lsn;
    }
    bool have_segment = segments && count > 0;
    free (segments);
    fpx_wal_t *wal = s_wal_new (self, dir, tenant_id, tenant, name);
    if (!wal || s_wal_open_segment (wal, have_segment ? last_first : next_lsn,
                                    have_segment ? valid_end : 0)
    ||  (have_segment && ftruncate (wal->fd, (off_t) valid_end))) {
        snprintf (reason, reason_size, "cannot open its log for writing: %s", strerror (errno));
        object->damaged = reason;
        faiss_Index_free (object->index);
        object->index = NULL;
        fpx_wal_destroy (&wal);
        return;
    }
    wal->next_lsn = next_lsn;
    wal->snapshot_lsn = snapshot_lsn;
    wal->log_bytes = valid_end;
    wal->dirty_since = valid_end ? fpx_monotonic_seconds () : 0;
    struct stat st;
    snprintf (path, sizeof path, "%s/snapshot", dir);
    wal->snapshot_bytes = stat (path, &st) == 0 ? (uint64_t) st.st_size : 0;
    snprintf (path, sizeof path, "%s/meta", dir);
    wal->meta_bytes = stat (path, &st) == 0 ? (uint64_t) st.st_size : 0;
    s_wal_recharge (wal);
    object->wal = wal;
    *vectors += (uint64_t) faiss_Index_ntotal (object->index);
    //  At info when it took long enough to be worth knowing.
    double took = fpx_monotonic_seconds () - started;
    fpx_log (took >= 1 ? FPX_LOG_INFO : FPX_LOG_DEBUG, "recovered %s in %.1f s: %lld vectors, "
             "snapshot %.1f MiB, %llu log records replayed", label, took,
             (long long) faiss_Index_ntotal (object->index), wal->snapshot_bytes / 1048576.0,
             (unsigned long long) (next_lsn - snapshot_lsn - 1));
}

//  When the index at dir does not fit the memory budget beside those
//  loaded already: registers it as evicted, from its snapshot's header
//  and its meta file, without reading the index. Only when the two agree
//  and no log record follows the snapshot; else -1 and the index is read
//  as usual (and evicted after, if the budget needs the room).
static int
s_recover_evicted (fpx_storage_t *self, const char *dir, uint32_t tenant_id, const char *tenant,
                   const char *name, uint64_t *vectors)
{
    s_meta_t meta;
    char factory [FPX_FACTORY_MAX];
    uint64_t lsn, payload, file_size;
    uint32_t crc;
    if (s_snapshot_header (dir, &lsn, &payload, &crc, factory, sizeof factory, &file_size)
    ||  s_meta_read (dir, &meta) || meta.lsn != lsn || meta.payload != payload
    ||  meta.payload_crc != crc)
        return -1;
    if (fpx_budget_fits (s_budget (self), (size_t) payload))
        return -1;
    size_t count = 0;
    s_segment_t *segments = s_list_segments (dir, &count);
    if (!segments)
        return -1;
    char path [PATH_MAX];
    for (size_t i = 0; i < count; i++) {
        struct stat st;
        snprintf (path, sizeof path, "%s/%s", dir, segments [i].name);
        if (stat (path, &st) || st.st_size != 0) {
            free (segments);
            return -1;
        }
    }
    //  Every segment is empty: a fresh one continues the snapshot.
    for (size_t i = 0; i < count; i++) {
        snprintf (path, sizeof path, "%s/%s", dir, segments [i].name);
        unlink (path);
    }
    free (segments);
    fpx_wal_t *wal = s_wal_new (self, dir, tenant_id, tenant, name);
    if (!wal || s_wal_open_segment (wal, lsn + 1, 0)) {
        fpx_wal_destroy (&wal);
        return -1;
    }
    wal->next_lsn = lsn + 1;
    wal->snapshot_lsn = lsn;
    wal->snapshot_bytes = file_size;
    wal->meta_bytes = FPX_META_SIZE;
    s_wal_recharge (wal);
    fpx_object_t object = { .factory = factory, .wal = wal, .evicted = &meta.describe };
    fpx_entry_t *entry;
    if (fpx_registry_insert (self->registry, tenant_id, name, 0, &object, &entry)) {
        fpx_object_free (&object);
        return 0;                  //  a duplicate name: as s_recover_tenant does
    }
    fpx_limits_entry_charge (entry, meta.describe.ntotal, (long long) payload);
    fpx_entry_release (&entry);
    *vectors += (uint64_t) meta.describe.ntotal;
    fpx_log (FPX_LOG_DEBUG, "registered %s/%s evicted (memory budget full): %lld vectors, not read",
             tenant, name, (long long) meta.describe.ntotal);
    return 0;
}

static void
s_recover_tenant (fpx_storage_t *self, uint32_t tenant_id, const char *tenant, size_t *loaded,
                  size_t *damaged, uint64_t *vectors)
{
    char tenant_dir [PATH_MAX];
    snprintf (tenant_dir, sizeof tenant_dir, "%s/tenants/%s", self->root, tenant);
    DIR *handle = opendir (tenant_dir);
    if (!handle)
        return;
    struct dirent *item;
    while (!atomic_load (&self->stop_recovery) && (item = readdir (handle))) {
        char dir [PATH_MAX];
        int written = snprintf (dir, sizeof dir, "%s/%s", tenant_dir, item->d_name);
        if (item->d_name [0] == '.' || written >= (int) sizeof dir) {
            //  Leftovers of an interrupted create (.tmp-) or drop (.trash-).
            if (!strncmp (item->d_name, ".tmp-", 5) || !strncmp (item->d_name, ".trash-", 7))
                s_remove_tree (dir);
            continue;
        }
        if (!fpx_name_is_valid (item->d_name, strlen (item->d_name)))
            continue;
        if (fpx_budget_enabled (s_budget (self))
        &&  s_recover_evicted (self, dir, tenant_id, tenant, item->d_name, vectors) == 0) {
            ++*loaded;
            atomic_fetch_add (&self->recovered, 1);
            continue;
        }
        fpx_object_t object;
        char factory [FPX_FACTORY_MAX], reason [2048];
        s_recover_index (self, dir, tenant_id, tenant, item->d_name, &object, factory,
                         sizeof factory, reason, sizeof reason, vectors);
        fpx_entry_t *entry;
        if (fpx_registry_insert (self->registry, tenant_id, item->d_name, 0, &object, &entry)) {
            fpx_object_free (&object);
            continue;
        }
        if (fpx_budget_enabled (s_budget (self)) && !object.damaged) {
            //  Counted now, so that the budget knows when it is full.
            pthread_rwlock_t *lock = fpx_entry_lock (entry, false);
            fpx_limits_measure (entry);
            pthread_rwlock_unlock (lock);
        }
        fpx_entry_release (&entry);
        fpx_budget_enforce (s_budget (self), 0);
        if (object.damaged) {
            ++*damaged;
            fpx_log (FPX_LOG_ERROR, "index %s/%s is DAMAGED: %s", tenant, item->d_name, reason);
        }
        else
            ++*loaded;
        atomic_fetch_add (&self->recovered, 1);
    }
    closedir (handle);
}

fpx_storage_t *
fpx_storage_new (const fpx_storage_config_t *config, fpx_registry_t *registry,
                 char (*tenants) [FPX_NAME_MAX + 1], int ntenants)
{
    fpx_storage_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->config = *config;
    self->registry = registry;
    self->tenants = tenants;
    self->ntenants = ntenants;
    self->lock_fd = -1;
    pthread_mutex_init (&self->mu, NULL);
    pthread_cond_init (&self->wake, NULL);
    if (!realpath (config->root, self->root)) {
        if (s_mkdir_p (config->root) || !realpath (config->root, self->root)) {
            fpx_log (FPX_LOG_ERROR, "cannot create data directory %s: %s", config->root,
                     strerror (errno));
            fpx_storage_destroy (&self);
            return NULL;
        }
    }
    //  Paths below the root add at most a tenant, an index name and a file
    //  name: keep the root short enough that none is ever cut.
    if (strlen (self->root) > PATH_MAX - 2 * FPX_NAME_MAX - 128) {
        fpx_log (FPX_LOG_ERROR, "data directory path is too long");
        fpx_storage_destroy (&self);
        return NULL;
    }
    char path [PATH_MAX];
    snprintf (path, sizeof path, "%s/LOCK", self->root);
    self->lock_fd = open (path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (self->lock_fd < 0 || flock (self->lock_fd, LOCK_EX | LOCK_NB)) {
        fpx_log (FPX_LOG_ERROR, "data directory %s is in use by another faissproxyd (%s)",
                 self->root, strerror (errno));
        fpx_storage_destroy (&self);
        return NULL;
    }
    atomic_store (&self->recovering, true);
    return self;
}

void
fpx_storage_recover (fpx_storage_t *self)
{
    double started = fpx_monotonic_seconds ();
    size_t loaded = 0, damaged = 0;
    uint64_t vectors = 0;
    for (int t = 0; t < self->ntenants && !atomic_load (&self->stop_recovery); t++)
        s_recover_tenant (self, (uint32_t) t, self->tenants [t], &loaded, &damaged, &vectors);
    if (atomic_load (&self->stop_recovery))
        fpx_log (FPX_LOG_INFO, "recovery stopped by shutdown after %zu index(es) in %.3f s: "
                 "the others stay on disk as they were", loaded + damaged,
                 fpx_monotonic_seconds () - started);
    else
        fpx_log (FPX_LOG_INFO, "recovered %zu index(es), %llu vector(s) in %.3f s from %s%s",
                 loaded, (unsigned long long) vectors, fpx_monotonic_seconds () - started,
                 self->root, damaged ? "; some indexes are DAMAGED (see above)" : "");
}

void
fpx_storage_recovered (fpx_storage_t *self)
{
    atomic_store (&self->recovering, false);
}

bool
fpx_storage_recovering (fpx_storage_t *self, size_t *loaded)
{
    if (loaded)
        *loaded = self ? atomic_load (&self->recovered) : 0;
    return self && atomic_load (&self->recovering);
}

void
fpx_storage_stop_recovery (fpx_storage_t *self)
{
    atomic_store (&self->stop_recovery, true);
}

// ---- create, drop, snapshot --------------------------------------------------------

int
fpx_storage_create (fpx_storage_t *self, uint32_t tenant, const char *tenant_name,
                    const char *name, const fpx_object_t *object_in,
                    fpx_entry_t **entry_p, char *err, size_t err_size)
{
    char tenant_dir [PATH_MAX], tmp [PATH_MAX], final [PATH_MAX];
    snprintf (tenant_dir, sizeof tenant_dir, "%s/tenants/%s", self->root, tenant_name);
    s_unique_path (tmp, sizeof tmp, tenant_dir, ".tmp", name);
    snprintf (final, sizeof final, "%s/%s", tenant_dir, name);
    if (s_mkdir_p (tenant_dir) || mkdir (tmp, 0700)) {
        snprintf (err, err_size, "cannot create %s: %s", tmp, strerror (errno));
        return FPX_EIO;
    }
    fpx_wal_t *wal = s_wal_new (self, final, tenant, tenant_name, name);
    uint64_t snapshot_bytes = 0;
    s_meta_t meta;
    int rc = wal ? s_snapshot_write (tmp, object_in->index, object_in->factory ? object_in->factory : "",
                                     0, &snapshot_bytes, &meta, err, err_size)
                 : FPX_ENOMEM;
    if (rc == 0)
        rc = fpx_limits_disk_check (s_limits (self), tenant, snapshot_bytes, err, err_size);
    char path [PATH_MAX], snapshot [PATH_MAX];
    snprintf (path, sizeof path, "%s/snapshot.tmp", tmp);
    snprintf (snapshot, sizeof snapshot, "%s/snapshot", tmp);
    if (rc == 0) {
        snprintf (wal->dir, sizeof wal->dir, "%s", tmp);
        if (rename (path, snapshot) || s_wal_open_segment (wal, 1, 0)) {
            snprintf (err, err_size, "cannot set up %s: %s", tmp, strerror (errno));
            rc = FPX_EIO;
        }
        else
            wal->meta_bytes = s_meta_install (tmp, &meta);
        snprintf (wal->dir, sizeof wal->dir, "%s", final);
        wal->next_lsn = 1;
        wal->snapshot_bytes = snapshot_bytes;
        s_wal_recharge (wal);
    }
    fpx_object_t object = *object_in;
    object.wal = wal;
    if (rc == 0) {
        //  The name and the files appear together: insert, then rename.
        rc = fpx_registry_insert (self->registry, tenant, name, 0, &object, entry_p);
        if (rc == FPX_EEXIST)
            snprintf (err, err_size, "an index named '%s' already exists", name);
        else if (rc == 0 && (rename (tmp, final) || s_fsync_dir (tenant_dir))) {
            snprintf (err, err_size, "cannot rename %s: %s", tmp, strerror (errno));
            fpx_registry_remove (self->registry, tenant, name, 0);
            fpx_entry_release (entry_p);        //  frees the object
            s_remove_tree (tmp);
            return FPX_EIO;
        }
    }
    if (rc) {
        fpx_object_free (&object);
        s_remove_tree (tmp);
    }
    return rc;
}

int
fpx_storage_drop (fpx_storage_t *self, uint32_t tenant, const char *name, char *err,
                  size_t err_size)
{
    if (!self->tenants || (int) tenant >= self->ntenants)
        return 0;
    char tenant_dir [PATH_MAX], dir [PATH_MAX], trash [PATH_MAX];
    snprintf (tenant_dir, sizeof tenant_dir, "%s/tenants/%s", self->root, self->tenants [tenant]);
    snprintf (dir, sizeof dir, "%s/%s", tenant_dir, name);
    s_unique_path (trash, sizeof trash, tenant_dir, ".trash", name);
    if (access (dir, F_OK))
        return 0;
    //  One atomic rename makes the drop durable; the tree goes after.
    if (rename (dir, trash) || s_fsync_dir (tenant_dir)) {
        snprintf (err, err_size, "cannot remove %s: %s", dir, strerror (errno));
        return FPX_EIO;
    }
    s_remove_tree (trash);
    return 0;
}

int
fpx_storage_snapshot (fpx_entry_t *entry, char *err, size_t err_size)
{
    fpx_wal_t *wal = entry->wal;
    if (!wal)
        return 0;
    pthread_mutex_lock (&wal->snapshot_mu);
    pthread_rwlock_t *lock = fpx_entry_lock (entry, false);
    uint64_t lsn = wal->next_lsn - 1;
    int rc = 0;
    uint64_t snapshot_bytes = 0;
    s_meta_t meta;
    //  An evicted index's snapshot is current already (budget.h). One
    //  whose removal is rebuilding in the background (rebuild.h) still
    //  holds the removed vectors, and a damaged one may be stale: the log
    //  keeps what they lack, and they are snapshotted later (or never).
    if (lsn != wal->snapshot_lsn && entry->index && !atomic_load (&entry->pending)
    &&  !entry->damaged [0]) {
        rc = s_snapshot_write (wal->dir, entry->index, entry->factory, lsn, &snapshot_bytes,
                               &meta, err, err_size);
        //  New records go to a fresh segment from here on.
        if (rc == 0 && s_wal_open_segment (wal, lsn + 1, 0)) {
            snprintf (err, err_size, "cannot start a new log segment: %s", strerror (errno));
            rc = FPX_EIO;
        }
        if (rc == 0) {
            pthread_mutex_lock (&wal->mu);
            wal->log_bytes = 0;
            wal->dirty_since = 0;
            wal->snapshot_soon = false;
            wal->snapshot_bytes = snapshot_bytes;
            s_wal_recharge (wal);
            pthread_mutex_unlock (&wal->mu);
        }
    }
    bool written = rc == 0 && lsn != wal->snapshot_lsn && snapshot_bytes;
    pthread_rwlock_unlock (lock);
    if (written) {
        char from [PATH_MAX], to [PATH_MAX];
        snprintf (from, sizeof from, "%s/snapshot.tmp", wal->dir);
        snprintf (to, sizeof to, "%s/snapshot", wal->dir);
        if (rename (from, to) || s_fsync_dir (wal->dir)) {
            snprintf (err, err_size, "cannot install the snapshot: %s", strerror (errno));
            rc = FPX_EIO;
        }
        else {
            wal->snapshot_lsn = lsn;
            s_wal_meta_charge (wal, s_meta_install (wal->dir, &meta));
            size_t count = 0;
            s_segment_t *segments = s_list_segments (wal->dir, &count);
            for (size_t i = 0; segments && i < count; i++)
                if (segments [i].first_lsn <= lsn) {
                    snprintf (from, sizeof from, "%s/%s", wal->dir, segments [i].name);
                    unlink (from);
                }
            free (segments);
            fpx_log (FPX_LOG_DEBUG, "%s: snapshot at record %llu", wal->label, (unsigned long long) lsn);
        }
    }
    pthread_mutex_unlock (&wal->snapshot_mu);
    return rc;
}

// ---- eviction and loading (budget.h) ----------------------------------------------------

int
fpx_storage_evict (fpx_entry_t *entry, char *err, size_t err_size)
{
    fpx_wal_t *wal = entry->wal;
    if (!wal || entry->owner_conn || entry->damaged [0] || atomic_load (&entry->root)
    ||  !atomic_load (&entry->linked) || atomic_load (&entry->refcount) != 2)
        return 1;
    //  Never wait for a name lock here: the caller may be making room
    //  for a load, and whoever holds it may wait for that entry's lock.
    fpx_registry_t *registry = entry->wal->store->registry;
    pthread_mutex_t *name_lock = fpx_registry_name_lock_try (registry, entry->tenant, entry->name);
    if (!name_lock)
        return 1;
    int rc = fpx_storage_snapshot (entry, err, err_size);
    if (rc) {
        pthread_mutex_unlock (name_lock);
        return rc;
    }
    if (pthread_rwlock_trywrlock (&entry->lock)) {
        pthread_mutex_unlock (name_lock);
        return 1;
    }
    //  Under the exclusive lock: a request that took a reference after the
    //  check above waits for this lock before it looks at the object
    //  (budget.c), so the count seen here cannot grow unseen.
    uint64_t snapshot_lsn = atomic_load (&wal->snapshot_lsn);
    rc = 1;
    if (entry->index && !entry->evicted && atomic_load (&entry->linked)
    &&  atomic_load (&entry->refcount) == 2 && wal->next_lsn - 1 == snapshot_lsn) {
        s_meta_t meta;
        char factory [FPX_FACTORY_MAX];
        uint64_t file_size;
        s_meta_of (entry->index, &meta);
        if (s_snapshot_header (wal->dir, &meta.lsn, &meta.payload, &meta.payload_crc, factory,
                               sizeof factory, &file_size) == 0 && meta.lsn == snapshot_lsn)
            s_wal_meta_charge (wal, s_meta_install (wal->dir, &meta));
        entry->evicted_ntotal = meta.describe.ntotal;
        entry->evicted_trained = meta.describe.is_trained;
        snprintf (entry->evicted_class, sizeof entry->evicted_class, "%s",
                  meta.describe.class_name);
        faiss_Index_free (entry->index);
        entry->index = NULL;
        entry->evicted = true;
        fpx_limits_entry_evicted (entry);
        rc = 0;
    }
    pthread_rwlock_unlock (&entry->lock);
    pthread_mutex_unlock (name_lock);
    return rc;
}

int
fpx_storage_load (fpx_entry_t *entry, char *err, size_t err_size)
{
    fpx_wal_t *wal = entry->wal;
    if (!wal)
        return 0;
    char path [PATH_MAX], factory [FPX_FACTORY_MAX];
    snprintf (path, sizeof path, "%s/snapshot", wal->dir);
    FaissIndex *index = NULL;
    uint64_t lsn = 0;
    int rc = s_snapshot_read (path, &index, &lsn, factory, sizeof factory, err, err_size);
    uint64_t snapshot_lsn = atomic_load (&wal->snapshot_lsn);
    if (rc == 0 && (lsn != snapshot_lsn || wal->next_lsn != lsn + 1
                    || (int) faiss_Index_d (index) != entry->d)) {
        snprintf (err, err_size, "its snapshot (record %llu, d = %d) is not the one it was "
                  "evicted to (record %llu, d = %d)", (unsigned long long) lsn,
                  (int) faiss_Index_d (index), (unsigned long long) snapshot_lsn, entry->d);
        faiss_Index_free (index);
        rc = FPX_EDAMAGED;
    }
    if (rc) {
        fpx_log (FPX_LOG_ERROR, "cannot load evicted index %s: %s", wal->label, err);
        return rc;
    }
    entry->index = index;
    entry->evicted = false;
    fpx_limits_entry_loaded (entry);
    return 0;
}

// ---- background snapshots and shutdown -------------------------------------------------

static void
s_snapshot_due (fpx_storage_t *self, bool all)
{
    fpx_entry_t **entries;
    long count = fpx_registry_named (self->registry, &entries);
    for (long i = 0; i < count; i++) {
        fpx_wal_t *wal = entries [i]->wal;
        if (wal && (all ? s_wal_has_records (wal) : fpx_wal_wants_snapshot (wal))) {
            //  Under the name lock, and only while the entry is still the
            //  one registered: a dropped index's files are not rewritten.
            pthread_mutex_t *lock = fpx_registry_name_lock (self->registry, entries [i]->tenant,
                                                            entries [i]->name);
            fpx_entry_t *current = fpx_registry_find (self->registry, entries [i]->tenant,
                                                      entries [i]->name, 0);
            char err [1024];
            if (current == entries [i] && fpx_storage_snapshot (entries [i], err, sizeof err))
                fpx_log (FPX_LOG_ERROR, "snapshot of %s failed: %s", wal->label, err);
            fpx_entry_release (&current);
            pthread_mutex_unlock (lock);
        }
        fpx_entry_release (&entries [i]);
    }
    if (count >= 0)
        free (entries);
}

static void *
s_snapshotter (void *arg)
{
    fpx_storage_t *self = arg;
    double period = self->config.snapshot_interval_s / 4;
    if (period > 5)
        period = 5;
    if (period < 0.05)
        period = 0.05;
    pthread_mutex_lock (&self->mu);
    while (!self->stopping) {
        struct timespec until;
        clock_gettime (CLOCK_REALTIME, &until);
        double at = (double) until.tv_sec + until.tv_nsec * 1e-9 + period;
        until.tv_sec = (time_t) at;
        until.tv_nsec = (long) ((at - (double) until.tv_sec) * 1e9);
        pthread_cond_timedwait (&self->wake, &self->mu, &until);
        if (self->stopping)
            break;
        pthread_mutex_unlock (&self->mu);
        s_snapshot_due (self, false);
        pthread_mutex_lock (&self->mu);
    }
    pthread_mutex_unlock (&self->mu);
    return NULL;
}

int
fpx_storage_start_snapshotter (fpx_storage_t *self)
{
    if (pthread_create (&self->snapshotter, NULL, s_snapshotter, self))
        return -1;
    self->snapshotter_running = true;
    return 0;
}

void
fpx_storage_destroy (fpx_storage_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    fpx_storage_t *self = *self_p;
    if (self->snapshotter_running) {
        pthread_mutex_lock (&self->mu);
        self->stopping = true;
        pthread_cond_signal (&self->wake);
        pthread_mutex_unlock (&self->mu);
        pthread_join (self->snapshotter, NULL);
        self->snapshotter_running = false;
    }
    //  Only a storage that was opened whole has indexes to snapshot.
    if (self->registry && self->lock_fd >= 0)
        s_snapshot_due (self, true);
    if (self->lock_fd >= 0)
        close (self->lock_fd);
    pthread_cond_destroy (&self->wake);
    pthread_mutex_destroy (&self->mu);
    free (self);
    *self_p = NULL;
}
