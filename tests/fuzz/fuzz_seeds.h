/*  fuzz_seeds.h — valid requests of every opcode, as framed fuzz inputs
    (fuzz_common.h), for the seed corpora, the in-process server target
    and the live fuzzer. Serialized indexes of every type the server can
    create come from FAISS in-process. Every request uses FPX_FUZZ_KEY and
    dimension FPX_FUZZ_D; the ones that name an index name one of the
    indexes the setup requests create (fz_flat, fz_idmap, fz_ivf, fz_hnsw,
    fz_pq, fz_sq, fz_pre), or fz_new / fz_up, which they create.       */
#ifndef FPX_FUZZ_SEEDS_H_INCLUDED
#define FPX_FUZZ_SEEDS_H_INCLUDED

#include "fuzz_common.h"

#define FPX_FUZZ_D 8

/*  Called once per request: label (for a file name), its opcode, the
    framed request (header, params, arrays).                             */
typedef void (*fpx_fuzz_seed_fn) (void *arg, const char *label, int opcode,
                                  const fpx_fuzz_buf_t *request);

/*  The requests that build the indexes the seeds refer to, in order.    */
void fpx_fuzz_setup_requests (fpx_fuzz_seed_fn fn, void *arg);

/*  The seeds: every opcode at least once, deserialize with an index of
    every type. Returns the number of requests given to fn.              */
int fpx_fuzz_seed_requests (fpx_fuzz_seed_fn fn, void *arg);

/*  Called once per serialized index: its factory string, its bytes
    (borrowed for the call).                                             */
typedef void (*fpx_fuzz_upload_fn) (void *arg, const char *factory,
                                    const uint8_t *bytes, size_t size);

/*  Serializes (FAISS in-process) an index of every type the seeds
    upload, trained and filled. Returns how many were given to fn.       */
int fpx_fuzz_upload_seeds (fpx_fuzz_upload_fn fn, void *arg);

/*  n deterministic vectors of dimension FPX_FUZZ_D from seed; caller
    frees.                                                               */
float *fpx_fuzz_vectors (int n, int seed);

/*  The names the setup creates, NULL-terminated.                        */
extern const char *const fpx_fuzz_base_names [];

#endif
