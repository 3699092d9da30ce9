"""_random.py — FAISS's random generators (faiss/utils/random.cpp), bit
for bit, in numpy.

What it is for: faiss.rand / randn / randint / lrand are how FAISS code
(its own tests among them) makes data; remote mode must produce the same
numbers without the FAISS extension. FAISS's RandomGenerator is a
std::mt19937 seeded with (unsigned) seed, which is numpy's legacy
RandomState for the same 32-bit seed; arrays of 1024 or more values are
made in 1024 blocks, block j from the seed a0 + j * b0.

What it must not do: anything but reproduce FAISS's sequences.
"""
import numpy as np

_MT_MAX_F = np.float32(4294967295.0)      # float(mt.max()), rounds to 2**32
_MT_MAX_D = 4294967295.0


def _mt(seed):
    return np.random.RandomState(int(seed) & 0xFFFFFFFF)


def _raw(rng, count):
    """count raw 32-bit mt19937 outputs."""
    return rng.randint(0, 1 << 32, size=count, dtype=np.uint32).astype(np.uint64)


def _blocks(n, seed):
    """(generator, start, end) of each block, as FAISS splits n values."""
    nblock = 1 if n < 1024 else 1024
    rng0 = _mt(seed)
    a0, b0 = (int(v) & 0x7FFFFFFF for v in _raw(rng0, 2))
    for j in range(nblock):
        yield _mt(a0 + j * b0), j * n // nblock, (j + 1) * n // nblock


def float_rand(n, seed):
    out = np.empty(n, dtype=np.float32)
    for rng, i0, i1 in _blocks(n, seed):
        out[i0:i1] = _raw(rng, i1 - i0).astype(np.float32) / _MT_MAX_F
    return out


def float_randn(n, seed):
    out = np.empty(n, dtype=np.float32)
    for rng, i0, i1 in _blocks(n, seed):
        count = i1 - i0
        if count:
            out[i0:i1] = _marsaglia(rng, count)
    return out


def _marsaglia(rng, count):
    """Marsaglia's polar method as FAISS runs it: pairs of uniform doubles
    until s < 1, each accepted pair giving two values."""
    pairs_needed = (count + 1) // 2
    state = rng.get_state()
    attempts = int(pairs_needed / 0.78) + 16
    while True:
        u = _raw(rng, 2 * attempts).astype(np.float64) / _MT_MAX_D
        a = 2.0 * u[0::2] - 1
        b = 2.0 * u[1::2] - 1
        s = a * a + b * b
        ok = s < 1.0
        if ok.sum() >= pairs_needed:
            break
        rng.set_state(state)
        attempts *= 2
    a, b, s = a[ok][:pairs_needed], b[ok][:pairs_needed], s[ok][:pairs_needed]
    factor = np.sqrt(-2.0 * np.log(s) / s)
    values = np.empty(2 * pairs_needed, dtype=np.float64)
    values[0::2] = a * factor
    values[1::2] = b * factor
    return values[:count].astype(np.float32)


def _int64(rng, count):
    raw = _raw(rng, 2 * count) & np.uint64(0x7FFFFFFF)
    # int64_t(rand_int()) | int64_t(rand_int()) << 31, left operand first
    low, high = raw[0::2], raw[1::2]
    return (low | (high << np.uint64(31))).astype(np.int64)


def int64_rand(n, seed, vmax=None):
    out = np.empty(n, dtype=np.int64)
    for rng, i0, i1 in _blocks(n, seed):
        values = _int64(rng, i1 - i0)
        if vmax is not None:
            values = (values.astype(np.uint64) % np.uint64(vmax)).astype(np.int64)
        out[i0:i1] = values
    return out
