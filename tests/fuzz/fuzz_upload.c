/*  fuzz_upload.c — the checks an uploaded index passes before FAISS reads
    it and before anyone uses it (server/upload_check.cpp, through
    fpx_shim_deserialize as the deserialize opcode and recovery call it),
    on hostile bytes, without a socket. An input is the raw serialized
    index; the seeds are an index of every type the server creates,
    serialized by FAISS in-process (fpx-fuzz-corpus writes them to
    BUILD/fuzz/corpus/upload).

    Invariants (each aborts when broken): both checks answer 0 or
    FPX_EINVAL with a NUL-terminated reason inside its buffer; the walk
    answers the same twice; what the walk refuses, deserialize refuses
    with the same code; an index deserialize accepted passes the object
    check again, answers describe's questions, is searched as the server
    would search it (k nearest of two queries, when trained and not
    empty) without a crash, and serializes back
    to bytes the walk accepts and deserialize reads to the same count.  */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <faiss/c_api/Index_c.h>

#include "faiss_shim.h"
#include "fpx_protocol.h"
#include "fpx_runtime.h"
#include "fuzz_common.h"
#include "log.h"
#include "upload_check.h"

const char fpx_fuzz_target_name [] = "upload";
const long fpx_fuzz_replay_mutations = 20000;
const long fpx_fuzz_replay_seed = 20261206;

//  As the deserialize opcode's cap for a tenant without max_memory_mb,
//  smaller: a forged array size is refused, not allocated.
#define S_ALLOC_CAP(size) (4 * (size) + ((size_t) 32 << 20))

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
    (void) argc, (void) argv;
    //  FAISS's messages about refused bytes are expected by the thousand.
    fpx_log_set_level (getenv ("FPX_FUZZ_LOG") ? FPX_LOG_INFO : FPX_LOG_ERROR - 1);
    fpx_shim_log_cerr ();
    //  One thread per FAISS call, as the daemon gives a small call: on a
    //  loaded machine OpenMP's barriers make a k-means take seconds.
    fpx_runtime_threads (1, 1, 0, 0);
    return 0;
}

void
fpx_fuzz_target_cleanup (void)
{
}

static void
s_check_reason (int rc, const char *err, size_t err_size)
{
    FPX_FUZZ_ASSERT (rc == 0 || rc == FPX_EINVAL || rc == FPX_ENOMEM || rc == FPX_EFAISS);
    if (rc)
        FPX_FUZZ_ASSERT (memchr (err, 0, err_size) != NULL && err [0] != 0);
}

//  What the server does with an accepted index: describe it, search it.
static void
s_use (FaissIndex *index)
{
    int d = (int) faiss_Index_d (index);
    int64_t ntotal = faiss_Index_ntotal (index);
    FPX_FUZZ_ASSERT (ntotal >= 0);
    char factory [FPX_FACTORY_MAX];
    (void) fpx_shim_factory_of (index, factory, sizeof factory);
    FPX_FUZZ_ASSERT (memchr (factory, 0, sizeof factory) != NULL);
    (void) fpx_shim_class_name (index, NULL);
    //  The deserialize opcode refuses these dimensions before use.
    if (d < 1 || d > FPX_DIM_MAX || !faiss_Index_is_trained (index) || ntotal == 0)
        return;
    float *x = calloc ((size_t) d * 2, sizeof *x);
    FPX_FUZZ_ASSERT (x != NULL);
    for (int i = 0; i < d; i++)
        x [d + i] = (float) (i % 7) - 3;
    enum { K = 4 };
    float distances [2 * K];
    int64_t labels [2 * K];
    //  Labels are whatever ids an IDMap holds: only the call is checked.
    (void) faiss_Index_search (index, 2, x, K, distances, labels);
    free (x);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    char err [512], again [512];
    memset (err, 0x7e, sizeof err);
    int rc = fpx_upload_check_bytes (data, size, err, sizeof err);
    s_check_reason (rc, err, sizeof err);
    FPX_FUZZ_ASSERT (rc == 0 || rc == FPX_EINVAL);
    int rc_again = fpx_upload_check_bytes (data, size, again, sizeof again);
    FPX_FUZZ_ASSERT (rc_again == rc);
    if (rc)
        FPX_FUZZ_ASSERT (strcmp (err, again) == 0);
    //  A short reason buffer is cut, never overrun.
    char tiny [9];
    memset (tiny, 0x7e, sizeof tiny);
    FPX_FUZZ_ASSERT (fpx_upload_check_bytes (data, size, tiny, 8) == rc);
    FPX_FUZZ_ASSERT (tiny [8] == 0x7e && (rc == 0 || memchr (tiny, 0, 8) != NULL));

    FaissIndex *index = NULL;
    int rc_read = fpx_shim_deserialize (data, size, S_ALLOC_CAP (size), &index, err, sizeof err);
    s_check_reason (rc_read, err, sizeof err);
    if (rc) {
        FPX_FUZZ_ASSERT (rc_read == rc && index == NULL);
        return 0;
    }
    if (rc_read) {
        FPX_FUZZ_ASSERT (index == NULL);
        return 0;
    }
    FPX_FUZZ_ASSERT (index != NULL);
    FPX_FUZZ_ASSERT (fpx_upload_check_index (index, err, sizeof err) == 0);
    int64_t ntotal = faiss_Index_ntotal (index);
    s_use (index);

    //  Round trip: what was accepted is written back in a form that is
    //  accepted again and holds as many vectors.
    uint8_t *bytes = NULL;
    size_t written = 0;
    if (fpx_shim_serialize (index, 0, &bytes, &written, err, sizeof err) == 0) {
        int rc_back = fpx_upload_check_bytes (bytes, written, err, sizeof err);
        if (rc_back)
            fprintf (stderr, "fuzz_upload: re-serialized index refused: %s\n", err);
        FPX_FUZZ_ASSERT (rc_back == 0);
        FaissIndex *copy = NULL;
        FPX_FUZZ_ASSERT (fpx_shim_deserialize (bytes, written, S_ALLOC_CAP (written) + S_ALLOC_CAP (size),
                                               &copy, err, sizeof err) == 0);
        FPX_FUZZ_ASSERT (faiss_Index_ntotal (copy) == ntotal);
        faiss_Index_free (copy);
        free (bytes);
    }
    faiss_Index_free (index);
    return 0;
}
