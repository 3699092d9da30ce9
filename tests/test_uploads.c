/*  test_uploads.c — serialized indexes from a tenant are untrusted input.

    - The 'ilod' attack: an IVF index whose inverted lists are FAISS's
      on-disk lists names a file the server would open and mmap
      read-write (another tenant's snapshot, /etc/passwd, a missing
      path). Refused with FPX_EINVAL; the other tenant's files stay
      byte-identical and the server keeps serving.
    - Crafted indexes FAISS reads without complaint but that crash or
      read out of bounds later (HNSW entry point / links out of range, PQ
      nbits > 64 and > 16, an unknown SQ type, LSH thresholds short,
      RefineFlat of two sizes, IVF lists that do not add up, a short IDMap
      id map, a truncated upload, trailing bytes): each FPX_EINVAL.
    - A seeded mutation run: one serialized index of every accepted kind,
      3120 deterministic mutants (390 under ASan; FPX_UPLOAD_MUTANTS sets
      the count per kind), every accepted one searched, range-searched,
      reconstructed, added to and trained; the server answers every call
      with OK or an error status and stays alive.
    - Round trip: every accepted kind uploads and searches exactly as
      FAISS in-process, and serializes back to the same bytes.
    - Named indexes are only of kinds that can be read back; a snapshot
      tampered with (checksums recomputed) loads as a damaged index.
*/
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <faiss/c_api/IndexLSH_c.h>

#include "fpx_test.h"

#define DIM  16
#define NB   300
#define NQ   8
#define K    5

static fpx_test_server_t s_server;
static fpx_client_t *s_a, *s_b;
static float *s_xb, *s_xq;

/* ---- byte buffers ------------------------------------------------------------ */

typedef struct {
    uint8_t *data;
    size_t size;
} s_buf_t;

static void
s_put (s_buf_t *buf, size_t at, const void *value, size_t n)
{
    if (at + n <= buf->size)
        memcpy (buf->data + at, value, n);
}

static void s_copy (s_buf_t *to, const s_buf_t *from);
static void s_put32 (s_buf_t *buf, size_t at, int32_t v) { s_put (buf, at, &v, 4); }
static void s_put64 (s_buf_t *buf, size_t at, uint64_t v) { s_put (buf, at, &v, 8); }

static uint64_t
s_get64 (const s_buf_t *buf, size_t at)
{
    uint64_t v = 0;
    if (at + 8 <= buf->size)
        memcpy (&v, buf->data + at, 8);
    return v;
}

//  Replaces n bytes at `at` with insert_n bytes of insert.
static void
s_splice (s_buf_t *buf, size_t at, size_t n, const void *insert, size_t insert_n)
{
    if (at > buf->size || n > buf->size - at)
        return;
    size_t size = buf->size - n + insert_n;
    uint8_t *data = malloc (size ? size : 1);
    memcpy (data, buf->data, at);
    if (insert_n)
        memcpy (data + at, insert, insert_n);
    memcpy (data + at + insert_n, buf->data + at + n, buf->size - at - n);
    free (buf->data);
    buf->data = data;
    buf->size = size;
}

static void
s_buf_free (s_buf_t *buf)
{
    free (buf->data);
    buf->data = NULL;
    buf->size = 0;
}

//  The index serialized by FAISS in-process.
static s_buf_t
s_serialize (const FaissIndex *index)
{
    s_buf_t buf = { NULL, 0 };
    buf.data = fpx_local_serialize (index, &buf.size);
    return buf;
}

static s_buf_t s_build (const char *factory, int metric, FaissIndex **local_p);
static size_t s_hnsw_storage_at (const s_buf_t *buf);

//  IndexHNSWPQ: FAISS 1.7.3 takes about 40 s to train one here (its PQ
//  on the HNSW storage), so it is assembled from an HNSW graph and a
//  trained IndexPQ holding the same vectors: the layout FAISS writes.
static s_buf_t
s_build_hnsw_pq (int metric, FaissIndex **local_p)
{
    s_buf_t graph = s_build ("HNSW8", metric, NULL), pq = s_build ("PQ4np", metric, NULL);
    s_buf_t buf = { NULL, 0 };
    if (graph.data && pq.data) {
        size_t storage = s_hnsw_storage_at (&graph);
        s_copy (&buf, &graph);
        memcpy (buf.data, "IHNp", 4);
        s_splice (&buf, storage, buf.size - storage, pq.data, pq.size);
        if (local_p && !(*local_p = fpx_local_deserialize (buf.data, buf.size)))
            s_buf_free (&buf);
    }
    s_buf_free (&graph);
    s_buf_free (&pq);
    return buf;
}

//  A local index of `factory`, trained and filled with NB vectors (ids
//  i·7+3 under an IDMap), serialized. NULL data on failure.
static s_buf_t
s_build (const char *factory, int metric, FaissIndex **local_p)
{
    s_buf_t buf = { NULL, 0 };
    if (strcmp (factory, "HNSW8_PQ4") == 0)
        return s_build_hnsw_pq (metric, local_p);
    char why [256];
    FaissIndex *index = fpx_local_create (DIM, factory, metric, why, sizeof why);
    if (!index)
        return buf;
    int rc = faiss_Index_train (index, NB, s_xb);
    if (!rc && strstr (factory, "IDMap")) {
        int64_t ids [NB];
        for (int i = 0; i < NB; i++)
            ids [i] = (int64_t) i * 7 + 3;
        rc = faiss_Index_add_with_ids (index, NB, s_xb, ids);
    }
    else if (!rc)
        rc = faiss_Index_add (index, NB, s_xb);
    if (!rc)
        buf = s_serialize (index);
    if (local_p && !rc)
        *local_p = index;
    else
        faiss_Index_free (index);
    return buf;
}

//  Offset of the last occurrence of a fourcc, or SIZE_MAX.
static size_t
s_find_last (const s_buf_t *buf, const char *fourcc)
{
    for (size_t i = buf->size >= 4 ? buf->size - 4 : 0; i-- > 0; )
        if (memcmp (buf->data + i, fourcc, 4) == 0)
            return i;
    return SIZE_MAX;
}

#define S_HEADER 37         //  fourcc, d, ntotal, 2 × i64, is_trained, metric

//  After a crash (only a server that trusts uploads crashes here): a
//  fresh server, so that each crafted case is judged on its own.
static void
s_restart (void)
{
    fpx_client_destroy (&s_a);
    fpx_client_destroy (&s_b);
    fpx_test_server_stop (&s_server, 10);
    if (fpx_test_server_start (&s_server, NULL, NULL) == 0) {
        s_a = fpx_test_client (&s_server, fpx_test_key_a);
        s_b = fpx_test_client (&s_server, fpx_test_key_b);
    }
}

//  Checks that an upload (by tenant A) is refused with FPX_EINVAL and the
//  server lives.
static void
s_expect_refused (const s_buf_t *buf, const char *what, const char *reason)
{
    if (!s_a)
        return;
    fpx_client_t *client = s_a;
    fpx_index_info_t info;
    int rc = fpx_deserialize (client, NULL, NULL, buf->data, buf->size, &info);
    CHECK (rc == FPX_EINVAL, "%s: upload answered %d (%s), expected FPX_EINVAL", what, rc,
           fpx_client_errmsg (client));
    if (rc == 0) {
        //  Accepted: what a tenant would do next (this is where a server
        //  that trusts the upload reads out of bounds or crashes).
        float D [NQ * K], out [4 * DIM];
        int64_t I [NQ * K];
        fpx_client_set_timeout (client, 5000);
        if (info.d == DIM
        &&  fpx_search (client, info.name, NQ, DIM, s_xq, K, NULL, D, I) != FPX_ETIMEDOUT
        &&  fpx_reconstruct_n (client, info.name, 0, 4, DIM, out) != FPX_ETIMEDOUT
        &&  fpx_add (client, info.name, NQ, DIM, s_xq, NULL) != FPX_ETIMEDOUT)
            fpx_search (client, info.name, NQ, DIM, s_xq, K, NULL, D, I);
        fpx_index_drop (client, info.name);
        fpx_client_set_timeout (client, fpx_test_asan () ? 45000 : 30000);
        if (!fpx_test_server_alive (&s_server)) {
            FAIL ("%s: faissproxyd died using the accepted upload", what);
            s_restart ();
            return;
        }
    }
    if (rc == FPX_EINVAL && reason)
        CHECK (strstr (fpx_client_errmsg (client), reason) != NULL, "%s: reason '%s' lacks '%s'",
               what, fpx_client_errmsg (client), reason);
    CHECK (fpx_ping (client, NULL) == 0 && fpx_test_server_alive (&s_server),
           "%s: server no longer answers", what);
}

/* ---- the 'ilod' attack ---------------------------------------------------------- */

static int
s_read_file (const char *path, s_buf_t *out)
{
    FILE *f = fopen (path, "rb");
    if (!f)
        return -1;
    fseek (f, 0, SEEK_END);
    long size = ftell (f);
    fseek (f, 0, SEEK_SET);
    out->data = malloc (size > 0 ? (size_t) size : 1);
    out->size = fread (out->data, 1, size > 0 ? (size_t) size : 0, f);
    fclose (f);
    return 0;
}

//  An empty trained IVF index (one list) whose inverted lists are on-disk
//  lists over `path` of `totsize` bytes: one list of one entry at offset 0.
static s_buf_t
s_ilod_upload (const char *path, uint64_t totsize)
{
    char why [256];
    FaissIndex *ivf = fpx_local_create (DIM, "IVF1,Flat", METRIC_L2, why, sizeof why);
    s_buf_t buf = { NULL, 0 };
    if (!ivf || faiss_Index_train (ivf, NB, s_xb)) {
        faiss_Index_free (ivf);
        return buf;
    }
    buf = s_serialize (ivf);
    faiss_Index_free (ivf);
    size_t at = s_find_last (&buf, "ilar");
    if (at == SIZE_MAX) {
        s_buf_free (&buf);
        return buf;
    }
    //  'ilod', nlist, code_size, lists [{size, capacity, offset}], slots [],
    //  filename (vector<char>), totsize.
    uint8_t tail [4096];
    size_t n = 0;
    uint64_t v;
    memcpy (tail + n, "ilod", 4); n += 4;
    v = 1; memcpy (tail + n, &v, 8); n += 8;
    v = DIM * 4; memcpy (tail + n, &v, 8); n += 8;
    v = 1; memcpy (tail + n, &v, 8); n += 8;
    uint64_t list [3] = { 1, 1, 0 };
    memcpy (tail + n, list, 24); n += 24;
    v = 0; memcpy (tail + n, &v, 8); n += 8;
    v = strlen (path); memcpy (tail + n, &v, 8); n += 8;
    memcpy (tail + n, path, strlen (path)); n += strlen (path);
    memcpy (tail + n, &totsize, 8); n += 8;
    s_splice (&buf, at, buf.size - at, tail, n);
    return buf;
}

static void
test_ilod_attack (void *arg)
{
    (void) arg;
    //  Bob's durable index, saved: its snapshot is a file of the data dir.
    fpx_index_info_t info;
    REQUIRE_OK (s_b, fpx_index_create (s_b, "secret", DIM, "Flat", FPX_METRIC_L2, &info));
    REQUIRE_OK (s_b, fpx_add (s_b, "secret", NB, DIM, s_xb, NULL));
    REQUIRE_OK (s_b, fpx_index_save (s_b, "secret"));
    char dir [600], snapshot [700];
    snprintf (dir, sizeof dir, "%s/tenants/%s/secret", s_server.data_dir, FPX_TEST_TENANT_B);
    snprintf (snapshot, sizeof snapshot, "%s/snapshot", dir);
    s_buf_t before = { NULL, 0 };
    REQUIRE (s_read_file (snapshot, &before) == 0 && before.size > 64, "no snapshot at %s", snapshot);
    float D_before [NQ * K], D_after [NQ * K];
    int64_t I_before [NQ * K], I_after [NQ * K];
    REQUIRE_OK (s_b, fpx_search (s_b, "secret", NQ, DIM, s_xq, K, NULL, D_before, I_before));

    const char *paths [] = { snapshot, "/etc/passwd", "/nonexistent/faissproxy/ilod" };
    uint64_t sizes [] = { before.size, 64, 4096 };
    for (int i = 0; i < 3; i++) {
        s_buf_t up = s_ilod_upload (paths [i], sizes [i]);
        if (!CHECK (up.data, "building the 'ilod' upload"))
            continue;
        char what [800];
        snprintf (what, sizeof what, "ilod over %s", paths [i]);
        int rc = fpx_deserialize (s_a, "stolen", NULL, up.data, up.size, &info);
        CHECK (rc == FPX_EINVAL, "%s: upload answered %d (%s)", what, rc, fpx_client_errmsg (s_a));
        CHECK (strstr (fpx_client_errmsg (s_a), "structure 'ilod' is not accepted") != NULL,
               "%s: reason '%s'", what, fpx_client_errmsg (s_a));
        CHECK_RC (s_a, fpx_index_open (s_a, "stolen", &info), FPX_ENOTFOUND);
        //  The Python drop-in's read_index and the CLI's restore use the
        //  same opcode, anonymous: refused alike.
        CHECK_RC (s_a, fpx_deserialize (s_a, NULL, NULL, up.data, up.size, NULL), FPX_EINVAL);
        s_buf_free (&up);
    }
    //  Bob's files and results unchanged; the server serves both tenants.
    s_buf_t after = { NULL, 0 };
    CHECK (s_read_file (snapshot, &after) == 0, "snapshot gone");
    CHECK (after.size == before.size && memcmp (after.data, before.data, before.size) == 0,
           "bob's snapshot changed");
    s_buf_free (&after);
    s_buf_free (&before);
    if (CHECK_OK (s_b, fpx_search (s_b, "secret", NQ, DIM, s_xq, K, NULL, D_after, I_after)))
        CHECK (memcmp (I_before, I_after, sizeof I_before) == 0
               && memcmp (D_before, D_after, sizeof D_before) == 0, "bob's results changed");
    CHECK_OK (s_a, fpx_ping (s_a, NULL));
    CHECK_TRUE (fpx_test_server_alive (&s_server));
}

/* ---- crafted indexes ------------------------------------------------------------- */

//  Offsets inside a serialized IndexHNSW (fourcc at 0).
typedef struct {
    size_t levels, offsets, neighbors_count, neighbors, entry_point;
} s_hnsw_layout_t;

static s_hnsw_layout_t
s_hnsw_layout (const s_buf_t *buf)
{
    s_hnsw_layout_t l;
    size_t at = S_HEADER;
    at += 8 + 8 * s_get64 (buf, at);            //  assign_probas
    at += 8 + 4 * s_get64 (buf, at);            //  cum_nneighbor_per_level
    l.levels = at;
    at += 8 + 4 * s_get64 (buf, at);
    l.offsets = at;
    at += 8 + 8 * s_get64 (buf, at);
    l.neighbors_count = at;
    l.neighbors = at + 8;
    at += 8 + 4 * s_get64 (buf, at);
    l.entry_point = at;
    return l;
}

//  Where the storage index of a serialized IndexHNSW starts.
static size_t
s_hnsw_storage_at (const s_buf_t *buf)
{
    return s_hnsw_layout (buf).entry_point + 5 * 4;
}

static void
s_copy (s_buf_t *to, const s_buf_t *from)
{
    to->data = malloc (from->size);
    memcpy (to->data, from->data, from->size);
    to->size = from->size;
}

static void
test_crafted_hnsw (void *arg)
{
    (void) arg;
    s_buf_t base = s_build ("HNSW8", METRIC_L2, NULL);
    REQUIRE (base.data && memcmp (base.data, "IHNf", 4) == 0, "HNSW8 serialization");
    s_hnsw_layout_t l = s_hnsw_layout (&base);
    REQUIRE (l.entry_point + 8 < base.size, "HNSW layout");
    int32_t values [] = { NB, NB + 1000, 0x3fffffff, -2 };
    for (int i = 0; i < 4; i++) {
        s_buf_t m;
        s_copy (&m, &base);
        s_put32 (&m, l.entry_point, values [i]);
        s_expect_refused (&m, "HNSW entry point out of range", "entry point");
        s_buf_free (&m);
        s_copy (&m, &base);
        s_put32 (&m, l.neighbors, values [i]);
        s_expect_refused (&m, "HNSW link out of range", "links to");
        s_buf_free (&m);
    }
    //  A level above the graph's, an entry point on a lower level.
    s_buf_t m;
    s_copy (&m, &base);
    s_put32 (&m, l.levels + 8, 40);
    s_expect_refused (&m, "HNSW level out of range", "level");
    s_buf_free (&m);
    s_copy (&m, &base);
    s_put32 (&m, l.entry_point + 4, 30);         //  max_level
    s_expect_refused (&m, "HNSW max level", "entry point");
    s_buf_free (&m);
    s_buf_free (&base);
}

static void
test_crafted_quantizers (void *arg)
{
    (void) arg;
    //  IndexPQ: header, then pq.d, pq.M, pq.nbits (u64 each).
    s_buf_t pq = s_build ("PQ4np", METRIC_L2, NULL);
    REQUIRE (pq.data && memcmp (pq.data, "IxPq", 4) == 0, "PQ serialization");
    uint64_t nbits [] = { 65, 64, 17, 0 };
    for (int i = 0; i < 4; i++) {
        s_buf_t m;
        s_copy (&m, &pq);
        s_put64 (&m, S_HEADER + 16, nbits [i]);
        s_expect_refused (&m, "PQ nbits out of range", "nbits");
        s_buf_free (&m);
    }
    s_buf_t m;
    s_copy (&m, &pq);
    s_put64 (&m, S_HEADER + 8, 3);                //  M that does not divide d
    s_expect_refused (&m, "PQ M", "PQ M");
    s_buf_free (&m);
    s_buf_free (&pq);

    //  IndexScalarQuantizer: header, then qtype (i32).
    s_buf_t sq = s_build ("SQ8", METRIC_L2, NULL);
    REQUIRE (sq.data && memcmp (sq.data, "IxSQ", 4) == 0, "SQ serialization");
    int32_t qtypes [] = { 7, 99, -1 };
    for (int i = 0; i < 3; i++) {
        s_copy (&m, &sq);
        s_put32 (&m, S_HEADER, qtypes [i]);
        s_expect_refused (&m, "SQ type out of range", "scalar quantizer type");
        s_buf_free (&m);
    }
    s_buf_free (&sq);

    //  IndexLSH with trained thresholds: header, nbits (i32), rotate_data,
    //  train_thresholds (u8 each), thresholds (u64 count, floats).
    FaissIndexLSH *lsh = NULL;
    REQUIRE (faiss_IndexLSH_new_with_options (&lsh, DIM, DIM, 1, 1) == 0, "IndexLSH");
    faiss_Index_train ((FaissIndex *) lsh, NB, s_xb);
    faiss_Index_add ((FaissIndex *) lsh, NB, s_xb);
    s_buf_t l = s_serialize ((FaissIndex *) lsh);
    faiss_Index_free ((FaissIndex *) lsh);
    REQUIRE (l.data && memcmp (l.data, "IxHe", 4) == 0 && s_get64 (&l, S_HEADER + 6) == DIM,
             "LSH serialization");
    s_copy (&m, &l);
    s_put64 (&m, S_HEADER + 6, 2);                //  2 thresholds for 16 bits
    s_splice (&m, S_HEADER + 14 + 2 * 4, (DIM - 2) * 4, NULL, 0);
    s_expect_refused (&m, "LSH thresholds short", "thresholds");
    s_buf_free (&m);
    s_copy (&m, &l);
    s_put32 (&m, S_HEADER, DIM + 8);               //  nbits, code size unchanged
    s_expect_refused (&m, "LSH nbits", "LSH");
    s_buf_free (&m);
    s_buf_free (&l);
}

static void
test_crafted_composites (void *arg)
{
    (void) arg;
    s_buf_t m;
    //  RefineFlat whose refinement index holds half the vectors.
    s_buf_t rf = s_build ("PQ4np,RFlat", METRIC_L2, NULL);
    REQUIRE (rf.data && memcmp (rf.data, "IxRF", 4) == 0, "RefineFlat serialization");
    size_t refine = rf.size - 4 - (S_HEADER + 8 + (size_t) NB * DIM * 4);
    REQUIRE (memcmp (rf.data + refine, "IxF2", 4) == 0, "RefineFlat layout");
    s_copy (&m, &rf);
    s_put64 (&m, refine + 8, NB / 2);
    s_put64 (&m, refine + S_HEADER, (uint64_t) NB / 2 * DIM);
    s_splice (&m, refine + S_HEADER + 8 + (size_t) NB / 2 * DIM * 4, (size_t) NB / 2 * DIM * 4,
              NULL, 0);
    s_expect_refused (&m, "RefineFlat of mismatched sizes", "RefineFlat");
    s_buf_free (&m);
    s_copy (&m, &rf);
    float k_factor = -3;
    s_put (&m, m.size - 4, &k_factor, 4);
    s_expect_refused (&m, "RefineFlat k_factor", "k_factor");
    s_buf_free (&m);
    s_buf_free (&rf);

    //  IVF: ntotal that is not the lists' total; a list longer than its
    //  bytes; on-disk-looking inverted lists of another kind.
    s_buf_t ivf = s_build ("IVF4,Flat", METRIC_L2, NULL);
    REQUIRE (ivf.data && memcmp (ivf.data, "IwFl", 4) == 0, "IVF serialization");
    size_t ilar = s_find_last (&ivf, "ilar");
    REQUIRE (ilar != SIZE_MAX && memcmp (ivf.data + ilar + 20, "full", 4) == 0, "IVF layout");
    s_copy (&m, &ivf);
    s_put64 (&m, 8, NB + 50);
    s_expect_refused (&m, "IVF ntotal not the lists' total", "inverted lists hold");
    s_buf_free (&m);
    s_copy (&m, &ivf);
    s_put64 (&m, ilar + 32, s_get64 (&ivf, ilar + 32) + 1);
    s_expect_refused (&m, "IVF list longer than its bytes", NULL);
    s_buf_free (&m);
    s_copy (&m, &ivf);
    s_put64 (&m, ilar + 4, 5);                     //  invlists nlist != ivf nlist
    s_expect_refused (&m, "IVF lists of another nlist", "inverted lists");
    s_buf_free (&m);
    s_copy (&m, &ivf);
    memcpy (m.data + ilar, "ilbl", 4);
    s_expect_refused (&m, "IVF block lists", "structure 'ilbl' is not accepted");
    s_buf_free (&m);
    s_copy (&m, &ivf);
    s_put64 (&m, 37, 0);                           //  nlist 0
    s_expect_refused (&m, "IVF nlist 0", "nlist");
    s_buf_free (&m);
    s_buf_free (&ivf);

    //  IDMap whose id map is 10 ids short.
    s_buf_t map = s_build ("IDMap,Flat", METRIC_L2, NULL);
    REQUIRE (map.data && memcmp (map.data, "IxMp", 4) == 0
             && s_get64 (&map, map.size - 8 - 8 * NB) == NB, "IDMap serialization");
    s_copy (&m, &map);
    s_put64 (&m, m.size - 8 - 8 * NB, NB - 10);
    s_splice (&m, m.size - 80, 80, NULL, 0);
    s_expect_refused (&m, "IDMap id map short", "IDMap ids");
    s_buf_free (&m);

    //  Truncated, trailing bytes, an unknown top-level structure, an
    //  unprintable fourcc.
    s_copy (&m, &map);
    m.size /= 2;
    s_expect_refused (&m, "truncated upload", "truncated");
    s_buf_free (&m);
    s_copy (&m, &map);
    s_splice (&m, m.size, 0, "xyz", 3);
    s_expect_refused (&m, "trailing bytes", "follow the index");
    s_buf_free (&m);
    s_copy (&m, &map);
    memcpy (m.data, "INSf", 4);
    s_expect_refused (&m, "NSG", "structure 'INSf' is not accepted");
    memcpy (m.data, "\x01\x02\n\x7f", 4);
    s_expect_refused (&m, "unprintable fourcc", "structure 0x7f0a0201 is not accepted");
    s_buf_free (&m);
    s_buf_free (&map);
}

/* ---- named indexes hold only kinds that can be read back --------------------------- */

static void
test_named_create_kinds (void *arg)
{
    (void) arg;
    fpx_index_info_t info;
    //  A fast-scan PQ (outside the allow-list): fine in memory, refused
    //  as a named index, whose snapshot would be refused at the next start.
    CHECK_RC (s_a, fpx_index_create (s_a, "fastscan", DIM, "IVF8,PQ4x4fs", FPX_METRIC_L2, &info),
              FPX_EINVAL);
    CHECK (strstr (fpx_client_errmsg (s_a), "named index cannot hold") != NULL, "reason '%s'",
           fpx_client_errmsg (s_a));
    CHECK_RC (s_a, fpx_index_open (s_a, "fastscan", &info), FPX_ENOTFOUND);
    if (CHECK_OK (s_a, fpx_index_create (s_a, NULL, DIM, "IVF8,PQ4x4fs", FPX_METRIC_L2, &info)))
        CHECK_OK (s_a, fpx_index_drop (s_a, info.name));
    //  Every accepted kind can be a named index.
    const char *kinds [] = { "HNSW8", "IVF8_HNSW8,Flat", "OPQ4,IVF8,PQ4np", "PQ4np,RFlat",
                             "IDMap2,IVF8,Flat", "LSH", "IVF8,SQ8" };
    for (size_t i = 0; i < sizeof kinds / sizeof kinds [0]; i++) {
        if (CHECK_OK (s_a, fpx_index_create (s_a, "kind", DIM, kinds [i], FPX_METRIC_L2, &info)))
            CHECK_OK (s_a, fpx_index_drop (s_a, "kind"));
    }
}

/* ---- a tampered snapshot ----------------------------------------------------------- */

//  CRC-32C (Castagnoli), as docs/STORAGE.md's snapshot header uses.
static uint32_t
s_crc32c (uint32_t crc, const uint8_t *data, size_t size)
{
    crc = ~crc;
    for (size_t i = 0; i < size; i++) {
        crc ^= data [i];
        for (int bit = 0; bit < 8; bit++)
            crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1)));
    }
    return ~crc;
}

static void
s_write_file (const char *path, const s_buf_t *buf)
{
    FILE *f = fopen (path, "wb");
    if (f) {
        fwrite (buf->data, 1, buf->size, f);
        fclose (f);
    }
}

//  A snapshot whose checksums were recomputed after its HNSW entry point
//  was set out of range (someone with write access to the data dir): at
//  recovery the index is reported damaged, the others load, nothing
//  crashes.
static void
test_tampered_snapshot (void *arg)
{
    (void) arg;
    char dir [] = "/tmp/fpx-uploads-XXXXXX";
    REQUIRE (mkdtemp (dir), "mkdtemp");
    const char *args [] = { "--data-dir", dir, NULL };
    fpx_test_server_t server;
    REQUIRE (fpx_test_server_start (&server, args, NULL) == 0, "start");
    fpx_client_t *client = fpx_test_client (&server, fpx_test_key_a);
    bool built = client
              && CHECK_OK (client, fpx_index_create (client, "graph", DIM, "HNSW8", FPX_METRIC_L2, NULL))
              && CHECK_OK (client, fpx_add (client, "graph", NB, DIM, s_xb, NULL))
              && CHECK_OK (client, fpx_index_save (client, "graph"))
              && CHECK_OK (client, fpx_index_create (client, "good", DIM, "Flat", FPX_METRIC_L2, NULL))
              && CHECK_OK (client, fpx_add (client, "good", NB, DIM, s_xb, NULL))
              && CHECK_OK (client, fpx_index_save (client, "good"));
    fpx_client_destroy (&client);
    fpx_test_server_stop (&server, 30);
    char path [400], command [500];
    snprintf (path, sizeof path, "%s/tenants/%s/graph/snapshot", dir, FPX_TEST_TENANT_A);
    s_buf_t snap = { NULL, 0 };
    if (built && CHECK (s_read_file (path, &snap) == 0 && snap.size > 64, "no snapshot at %s", path)) {
        uint32_t factory_len;
        memcpy (&factory_len, snap.data + 36, 4);
        size_t payload_at = 64 + factory_len;
        s_buf_t payload = { snap.data + payload_at, snap.size - payload_at };
        s_hnsw_layout_t l = s_hnsw_layout (&payload);
        if (CHECK (memcmp (payload.data, "IHNf", 4) == 0 && l.entry_point + 4 < payload.size,
                   "snapshot layout")) {
            s_put32 (&payload, l.entry_point, 0x3fffffff);
            uint32_t crc = s_crc32c (0, payload.data, payload.size);
            memcpy (snap.data + 32, &crc, 4);
            crc = s_crc32c (s_crc32c (0, snap.data + 16, 48), snap.data + 64, factory_len);
            memcpy (snap.data + 12, &crc, 4);
            s_write_file (path, &snap);

            REQUIRE (fpx_test_server_start (&server, args, NULL) == 0, "restart");
            client = fpx_test_client (&server, fpx_test_key_a);
            fpx_index_info_t info;
            float D [NQ * K];
            int64_t I [NQ * K];
            if (client && CHECK_OK (client, fpx_index_describe (client, "graph", 0, &info))) {
                CHECK (strstr (info.damaged, "entry point") != NULL,
                       "tampered snapshot not reported damaged: '%s'", info.damaged);
                CHECK_RC (client, fpx_search (client, "graph", NQ, DIM, s_xq, K, NULL, D, I),
                          FPX_EDAMAGED);
                CHECK_OK (client, fpx_search (client, "good", NQ, DIM, s_xq, K, NULL, D, I));
                CHECK_OK (client, fpx_ping (client, NULL));
            }
            fpx_client_destroy (&client);
            int status = fpx_test_server_stop (&server, 30);
            CHECK (status == 0, "faissproxyd exited with %d (%s)", status, server.diagnosis);
        }
    }
    free (snap.data);
    snprintf (command, sizeof command, "rm -rf '%s'", dir);
    if (system (command) != 0)
        fprintf (stderr, "# could not remove %s\n", dir);
}

/* ---- remove_ids on an IDMap over an IVF ------------------------------------------ */

//  FAISS 1.7.3's IDMap::remove_ids compacts the id map while the IVF lists
//  keep their old positions: the index then holds positions past its id
//  map (searches and later removals read id_map out of bounds) and its
//  snapshot fails the checks at the next start. The server renumbers the
//  lists as the id map moves down: the index answers as a new one given
//  the vectors kept (same training), after the removal, after a kill -9
//  (the removal replayed from the log) and after a clean restart (its
//  snapshot passes the checks).
static void
test_idmap_ivf_remove (void *arg)
{
    (void) arg;
    char dir [] = "/tmp/fpx-uploads-XXXXXX";
    REQUIRE (mkdtemp (dir), "mkdtemp");
    const char *args [] = { "--data-dir", dir, NULL };
    fpx_test_server_t server;
    REQUIRE (fpx_test_server_start (&server, args, NULL) == 0, "start");
    fpx_client_t *client = fpx_test_client (&server, fpx_test_key_a);
    int64_t ids [NB], removed = -1;
    for (int i = 0; i < NB; i++)
        ids [i] = 1000 + i;
    //  Every third id goes (and one that is not there).
    int64_t gone [NB / 3 + 1], kept_ids [NB];
    float kept [NB * DIM];
    int ngone = 0, nkept = 0;
    for (int i = 0; i < NB; i++)
        if (i % 3 == 1)
            gone [ngone++] = ids [i];
        else {
            kept_ids [nkept] = ids [i];
            memcpy (kept + nkept++ * DIM, s_xb + i * DIM, DIM * sizeof (float));
        }
    gone [ngone++] = 77;
    char why [256];
    FaissIndex *local = fpx_local_create (DIM, "IDMap2,IVF4,Flat", METRIC_L2, why, sizeof why);
    bool built = client && local
              && CHECK_OK (client, fpx_index_create (client, "mapped", DIM, "IDMap2,IVF4,Flat",
                                                     FPX_METRIC_L2, NULL))
              && CHECK_OK (client, fpx_train (client, "mapped", NB, DIM, s_xb))
              && CHECK_OK (client, fpx_add_with_ids (client, "mapped", NB, DIM, s_xb, ids, NULL))
              && CHECK (faiss_Index_train (local, NB, s_xb) == 0
                        && faiss_Index_add_with_ids (local, nkept, kept, kept_ids) == 0,
                        "local build");
    if (built) {
        CHECK_OK (client, fpx_remove_ids (client, "mapped", ngone, gone, &removed));
        CHECK_EQ (removed, ngone - 1);
        fpx_knn_t ref, got;
        if (CHECK (fpx_local_knn (local, NQ, s_xq, K, 2, &ref) == 0, "local search")) {
            for (int round = 0; round < 3; round++) {
                fpx_index_info_t info;
                if (client && CHECK_OK (client, fpx_index_describe (client, "mapped", 0, &info))) {
                    CHECK (info.damaged [0] == 0, "damaged (round %d): '%s'", round, info.damaged);
                    CHECK_EQ (info.ntotal, nkept);
                }
                if (CHECK_OK (client, fpx_remote_knn (client, "mapped", NQ, DIM, s_xq, K, NULL, &got)))
                    CHECK_KNN (&ref, &got);
                fpx_knn_free (&got);
                //  The id map: the ids kept, in order.
                int64_t *map = NULL;
                size_t nmap = 0;
                if (CHECK_OK (client, fpx_get_id_map (client, "mapped", &map, &nmap)))
                    CHECK (nmap == (size_t) nkept
                           && memcmp (map, kept_ids, (size_t) nkept * sizeof *map) == 0,
                           "id map differs (%zu ids)", nmap);
                fpx_free (map);
                //  The same ids again: nothing left to remove.
                if (round == 0) {
                    CHECK_OK (client, fpx_remove_ids (client, "mapped", ngone, gone, &removed));
                    CHECK_EQ (removed, 0);
                }
                fpx_client_destroy (&client);
                if (round == 0) {       //  kill -9: the removal is replayed from the log
                    kill (server.pid, SIGKILL);
                    fpx_test_server_stop (&server, 5);
                }
                else
                    CHECK_EQ (fpx_test_server_stop (&server, 30), 0);
                if (round == 2)
                    break;
                REQUIRE (fpx_test_server_start (&server, args, NULL) == 0, "restart");
                client = fpx_test_client (&server, fpx_test_key_a);
            }
            fpx_knn_free (&ref);
        }
    }
    if (local)
        faiss_Index_free (local);
    fpx_client_destroy (&client);
    int status = fpx_test_server_stop (&server, 30);
    CHECK (status == 0, "faissproxyd exited with %d (%s)", status, server.diagnosis);
    char command [200];
    snprintf (command, sizeof command, "rm -rf '%s'", dir);
    if (system (command) != 0)
        fprintf (stderr, "# could not remove %s\n", dir);
}

/* ---- seeded mutations ----------------------------------------------------------- */

typedef struct {
    const char *factory;
    int metric;
} s_kind_t;

//  Every accepted kind, as the server's own tests and FAISS's factory
//  build them.
static const s_kind_t s_kinds [] = {
    { "Flat", METRIC_L2 }, { "Flat", METRIC_INNER_PRODUCT }, { "IVF8,Flat", METRIC_L2 },
    { "IVF8,PQ4np", METRIC_L2 }, { "IVF8,PQ8x4np", METRIC_INNER_PRODUCT }, { "IVF8,SQ8", METRIC_INNER_PRODUCT },
    { "IVF8,SQfp16", METRIC_L2 }, { "HNSW8", METRIC_L2 }, { "HNSW8_SQ8", METRIC_L2 },
    { "HNSW8_PQ4", METRIC_L2 }, { "PQ4np", METRIC_L2 }, { "PQ4x6np", METRIC_INNER_PRODUCT },
    { "SQ8", METRIC_L2 }, { "SQ4", METRIC_L2 }, { "LSH", METRIC_L2 }, { "LSHrt", METRIC_L2 },
    { "PCA8,Flat", METRIC_L2 }, { "OPQ4,IVF8,PQ4np", METRIC_L2 }, { "RR16,Flat", METRIC_L2 },
    { "L2norm,Flat", METRIC_INNER_PRODUCT }, { "IDMap,Flat", METRIC_L2 },
    { "IDMap2,IVF8,Flat", METRIC_L2 }, { "PQ4np,RFlat", METRIC_L2 },
    { "IVF8,PQ4x6np,Refine(Flat)", METRIC_L2 }, { "IVF8_HNSW8,Flat", METRIC_L2 },
    { "PCAR8,IVF8,SQ6", METRIC_L2 },
};
#define S_NKINDS ((int) (sizeof s_kinds / sizeof s_kinds [0]))

typedef struct {
    int uploads, accepted, refused, calls, calls_ok, calls_failed;
} s_counts_t;

static void
s_mutate (fpx_rng_t *rng, s_buf_t *m)
{
    static const uint64_t u64_values [] = {
        0, 1, 2, 7, 8, 16, 255, 256, 65536, (uint64_t) 1 << 31, (uint64_t) 1 << 32,
        (uint64_t) 1 << 40, (uint64_t) 1 << 63, UINT64_MAX, UINT64_MAX - 1, NB, NB + 1,
    };
    static const int32_t i32_values [] = {
        0, 1, -1, -2, 2, 64, NB - 1, NB, NB + 1, 0x7fffffff, (int32_t) 0x80000000, 65536,
    };
    int nmut = 1 + (int) (fpx_rng_next (rng) % 3);
    for (int j = 0; j < nmut; j++) {
        //  Half the mutations in the structure-heavy head and tail.
        size_t region = m->size, at;
        uint64_t r = fpx_rng_next (rng);
        if (r % 4 == 0 && m->size > 512)
            at = (size_t) (fpx_rng_next (rng) % 512);
        else if (r % 4 == 1 && m->size > 128)
            at = m->size - 1 - (size_t) (fpx_rng_next (rng) % 128);
        else
            at = (size_t) (fpx_rng_next (rng) % region);
        switch (fpx_rng_next (rng) % 4) {
            case 0:
                m->data [at] ^= (uint8_t) (1u << (fpx_rng_next (rng) % 8));
                break;
            case 1:
                m->data [at] = (uint8_t) fpx_rng_next (rng);
                break;
            case 2:
                if (at + 8 <= m->size)
                    s_put64 (m, at, u64_values [fpx_rng_next (rng) % (sizeof u64_values / 8)]);
                break;
            default:
                if (at + 4 <= m->size)
                    s_put32 (m, at, i32_values [fpx_rng_next (rng) % (sizeof i32_values / 4)]);
                break;
        }
    }
}

//  A call on an accepted mutant: OK or an error status, never silence.
static bool
s_call_ok (int rc, s_counts_t *c, const char *what, int kind, int mutant)
{
    c->calls++;
    if (rc >= 0)
        c->calls_ok++;
    else
        c->calls_failed++;
    return CHECK (rc != FPX_ETIMEDOUT && rc != FPX_ECONNECT && fpx_test_server_alive (&s_server),
                  "%s on mutant %d of %s: %d (%s)", what, mutant, s_kinds [kind].factory, rc,
                  fpx_client_errmsg (s_a));
}

static void
s_exercise (const char *name, int d, int kind, int mutant, s_counts_t *c)
{
    float *x = fpx_data_uniform (1000 + (uint64_t) mutant, NB, d);
    float D [NQ * K];
    int64_t I [NQ * K];
    fpx_range_result_t *range = NULL;
    float *out = malloc (4 * (size_t) d * sizeof (float));
    bool ok = s_call_ok (fpx_search (s_a, name, NQ, d, x, K, NULL, D, I), c, "search", kind, mutant)
           && s_call_ok (fpx_range_search (s_a, name, NQ, d, x, 0.5f, NULL, &range), c,
                         "range_search", kind, mutant);
    fpx_range_result_destroy (&range);
    if (ok)
        ok = s_call_ok (fpx_reconstruct (s_a, name, 0, d, out), c, "reconstruct", kind, mutant)
          && s_call_ok (fpx_reconstruct_n (s_a, name, 0, 4, d, out), c, "reconstruct_n", kind, mutant);
    if (ok)
        ok = s_call_ok (fpx_add (s_a, name, 10, d, x, NULL), c, "add", kind, mutant)
          //  few points: k-means of 256 centroids refuses, 8 centroids train
          && s_call_ok (fpx_train (s_a, name, 64, d, x), c, "train", kind, mutant)
          && s_call_ok (fpx_search (s_a, name, NQ, d, x, K, NULL, D, I), c, "search after add",
                        kind, mutant);
    free (out);
    free (x);
}

static void
test_mutations (void *arg)
{
    (void) arg;
    int per_kind = fpx_test_asan () ? 15 : 120;     //  ASan: each call costs ~30 times more
    const char *env = getenv ("FPX_UPLOAD_MUTANTS");
    if (env && atoi (env) > 0)
        per_kind = atoi (env);
    s_counts_t c = { 0 };
    fpx_rng_t rng;
    fpx_rng_seed (&rng, 20261205);
    double started = fpx_now ();
    for (int kind = 0; kind < S_NKINDS; kind++) {
        s_buf_t base = s_build (s_kinds [kind].factory, s_kinds [kind].metric, NULL);
        if (!CHECK (base.data, "building %s", s_kinds [kind].factory))
            continue;
        for (int i = 0; i < per_kind; i++) {
            s_buf_t m;
            s_copy (&m, &base);
            s_mutate (&rng, &m);
            fpx_index_info_t info;
            int rc = fpx_deserialize (s_a, NULL, NULL, m.data, m.size, &info);
            c.uploads++;
            if (rc == 0) {
                c.accepted++;
                s_exercise (info.name, info.d, kind, i, &c);
                fpx_index_drop (s_a, info.name);
            }
            else {
                c.refused++;
                CHECK (rc == FPX_EINVAL || rc == FPX_ENOMEM || rc == FPX_EFAISS,
                       "upload of mutant %d of %s: %d (%s)", i, s_kinds [kind].factory, rc,
                       fpx_client_errmsg (s_a));
            }
            s_buf_free (&m);
            if (!fpx_test_server_alive (&s_server) || (i % 40 == 0 && fpx_ping (s_a, NULL) != 0)) {
                FAIL ("server stopped answering at mutant %d of %s", i, s_kinds [kind].factory);
                s_buf_free (&base);
                return;
            }
        }
        s_buf_free (&base);
        if (getenv ("FPX_UPLOAD_TIMING"))
            fprintf (stderr, "# %s: %.2f s\n", s_kinds [kind].factory, fpx_now () - started);
        started = fpx_now ();
    }
    CHECK_OK (s_a, fpx_ping (s_a, NULL));
    CHECK (c.accepted > 0 && c.refused > 0, "mutants all accepted or all refused");
    fprintf (stderr, "# mutations: %d uploads, %d accepted, %d refused; on the accepted: %d calls, "
             "%d OK, %d error replies\n", c.uploads, c.accepted, c.refused, c.calls, c.calls_ok,
             c.calls_failed);
}

/* ---- round trip ------------------------------------------------------------------ */

static void
test_round_trip (void *arg)
{
    (void) arg;
    for (int kind = 0; kind < S_NKINDS; kind++) {
        const s_kind_t *k = &s_kinds [kind];
        FaissIndex *local = NULL;
        s_buf_t buf = s_build (k->factory, k->metric, &local);
        if (!CHECK (buf.data && local, "building %s", k->factory))
            continue;
        fpx_index_info_t info;
        int rc = fpx_deserialize (s_a, NULL, NULL, buf.data, buf.size, &info);
        if (CHECK (rc == 0, "%s (metric %d) refused: %s", k->factory, k->metric,
                   fpx_client_errmsg (s_a))) {
            CHECK (info.ntotal == NB && info.d == DIM, "%s: ntotal %lld d %d", k->factory,
                   (long long) info.ntotal, info.d);
            //  HNSW's and Refine's results depend on k (efSearch = max
            //  (efSearch, k); k · k_factor candidates).
            int extra = (strstr (k->factory, "HNSW") && !strstr (k->factory, "IVF"))
                        || strstr (k->factory, "Refine") || strstr (k->factory, "RFlat") ? 0 : 10;
            fpx_knn_t ref, got;
            char why [256];
            if (CHECK (fpx_local_knn (local, NQ, s_xq, K, extra, &ref) == 0, "%s: local search",
                       k->factory)) {
                if (CHECK_OK (s_a, fpx_remote_knn (s_a, info.name, NQ, DIM, s_xq, K, NULL, &got)))
                    CHECK (fpx_knn_equal (&ref, &got, why, sizeof why), "%s: %s", k->factory, why);
                fpx_knn_free (&got);
            }
            fpx_knn_free (&ref);
            //  and it serializes back to the very bytes uploaded
            uint8_t *back = NULL;
            size_t back_size = 0;
            if (CHECK_OK (s_a, fpx_serialize (s_a, info.name, &back, &back_size)))
                CHECK (back_size == buf.size && memcmp (back, buf.data, buf.size) == 0,
                       "%s: serialized back differently", k->factory);
            fpx_free (back);
            fpx_index_drop (s_a, info.name);
        }
        faiss_Index_free (local);
        s_buf_free (&buf);
    }
}

static void
test_server_exit (void *arg)
{
    (void) arg;
    fpx_client_destroy (&s_a);
    fpx_client_destroy (&s_b);
    int status = fpx_test_server_stop (&s_server, 30);
    CHECK (status == 0, "faissproxyd exited with %d (%s)", status, s_server.diagnosis);
}

int
main (void)
{
    fpx_test_local_single_thread ();
    s_xb = fpx_data_uniform (41, NB, DIM);
    s_xq = fpx_data_uniform (42, NQ, DIM);
    fpx_test_watch (&s_server);
    if (fpx_test_server_start (&s_server, NULL, NULL) == 0) {
        s_a = fpx_test_client (&s_server, fpx_test_key_a);
        s_b = fpx_test_client (&s_server, fpx_test_key_b);
        if (s_a && s_b) {
            fpx_test_run ("uploads.ilod_attack", test_ilod_attack, NULL);
            fpx_test_run ("uploads.crafted_hnsw", test_crafted_hnsw, NULL);
            fpx_test_run ("uploads.crafted_quantizers", test_crafted_quantizers, NULL);
            fpx_test_run ("uploads.crafted_composites", test_crafted_composites, NULL);
            fpx_test_run ("uploads.round_trip", test_round_trip, NULL);
            fpx_test_run ("uploads.named_create_kinds", test_named_create_kinds, NULL);
            fpx_test_run ("uploads.tampered_snapshot", test_tampered_snapshot, NULL);
            fpx_test_run ("uploads.idmap_ivf_remove", test_idmap_ivf_remove, NULL);
            fpx_test_run ("uploads.mutations", test_mutations, NULL);
        }
        else
            fpx_test_fail_whole ("uploads.clients", "fpx_client_new returned NULL");
        fpx_test_run ("uploads.server_exit", test_server_exit, NULL);
    }
    else
        fpx_test_fail_whole ("uploads.server_start", "faissproxyd did not start");
    free (s_xb);
    free (s_xq);
    return fpx_test_finish ();
}
