/*  data.c — seeded vectors for fpx-loadtest. Every row is generated from
    a generator seeded by (seed, stream, row), so a row's value does not
    depend on how the rows are split between calls or threads: the
    remote and in-process runs see bit-identical data.                  */
#include <math.h>
#include <stdlib.h>

#include "loadtest.h"

#define S_CENTRES 64
#define S_SIGMA   0.05f

//  splitmix64: seeds and mixes.
static uint64_t
s_mix (uint64_t *state)
{
    uint64_t z = (*state += UINT64_C (0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C (0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C (0x94d049bb133111eb);
    return z ^ (z >> 31);
}

//  xoshiro256+: fast, and good enough in its high bits for floats.
typedef struct { uint64_t s [4]; } s_rng_t;

static void
s_rng_seed (s_rng_t *rng, uint64_t seed, uint64_t stream, uint64_t row)
{
    uint64_t state = seed ^ (stream * UINT64_C (0xd1b54a32d192ed03))
                          ^ (row * UINT64_C (0x8cb92ba72f3d8dd7));
    for (int i = 0; i < 4; i++)
        rng->s [i] = s_mix (&state);
}

static uint64_t
s_rotl (uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t
s_next (s_rng_t *rng)
{
    uint64_t *s = rng->s;
    uint64_t result = s [0] + s [3];
    uint64_t t = s [1] << 17;
    s [2] ^= s [0];
    s [3] ^= s [1];
    s [1] ^= s [2];
    s [0] ^= s [3];
    s [2] ^= t;
    s [3] = s_rotl (s [3], 45);
    return result;
}

//  Uniform in [0, 1) with 24 bits, exactly representable as a float.
static float
s_uniform (s_rng_t *rng)
{
    return (float) (s_next (rng) >> 40) * (1.0f / 16777216.0f);
}

//  A standard normal (Box-Muller; one of the pair is enough here).
static float
s_normal (s_rng_t *rng)
{
    float u = s_uniform (rng), v = s_uniform (rng);
    return sqrtf (-2.0f * logf (1.0f - u)) * cosf (6.2831853f * v);
}

void
lt_data_fill (float *x, int64_t n, int d, uint64_t seed, lt_data_kind_t kind,
              uint64_t stream, int64_t first)
{
    float *centres = NULL;
    if (kind == LT_DATA_CLUSTERED) {
        centres = malloc ((size_t) S_CENTRES * (size_t) d * sizeof *centres);
        if (!centres)
            abort ();       //  a few hundred KB at most: not worth a code path
        for (int c = 0; c < S_CENTRES; c++) {
            s_rng_t rng;
            s_rng_seed (&rng, seed, 0, (uint64_t) c);
            for (int j = 0; j < d; j++)
                centres [(size_t) c * (size_t) d + (size_t) j] = s_uniform (&rng);
        }
    }
    for (int64_t i = 0; i < n; i++) {
        s_rng_t rng;
        s_rng_seed (&rng, seed, stream, (uint64_t) (first + i));
        float *row = x + (size_t) i * (size_t) d;
        if (centres) {
            const float *centre = centres + (size_t) (s_next (&rng) % S_CENTRES) * (size_t) d;
            for (int j = 0; j < d; j++)
                row [j] = centre [j] + S_SIGMA * s_normal (&rng);
        }
        else
            for (int j = 0; j < d; j++)
                row [j] = s_uniform (&rng);
    }
    free (centres);
}
