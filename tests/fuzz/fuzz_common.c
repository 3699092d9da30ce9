/*  fuzz_common.c — framing, mutation and the replay main of the fuzz
    targets (see fuzz_common.h).                                         */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "fuzz_common.h"

bool fpx_fuzz_mutating = false;

void
fpx_fuzz_assert_failed_ (const char *file, int line, const char *text)
{
    fprintf (stderr, "%s:%d: fuzz invariant failed: %s\n", file, line, text);
    fflush (stderr);
    abort ();
}

void
fpx_fuzz_split (fpx_fuzz_frames_t *frames, const uint8_t *data, size_t size)
{
    frames->count = 0;
    size_t at = 0;
    while (at + 2 <= size && frames->count < FPX_FUZZ_FRAMES_MAX) {
        size_t len = (size_t) data [at] | (size_t) data [at + 1] << 8;
        at += 2;
        if (len == 0xffff) {
            if (at + 4 > size)
                break;
            len = (size_t) data [at] | (size_t) data [at + 1] << 8
                | (size_t) data [at + 2] << 16 | (size_t) data [at + 3] << 24;
            at += 4;
        }
        if (len > size - at)
            len = size - at;
        frames->data [frames->count] = data + at;
        frames->size [frames->count] = len;
        frames->count++;
        at += len;
    }
}

void
fpx_fuzz_buf_append (fpx_fuzz_buf_t *buf, const void *data, size_t size)
{
    if (buf->size + size > buf->capacity) {
        size_t capacity = buf->capacity ? buf->capacity : 256;
        while (capacity < buf->size + size)
            capacity *= 2;
        uint8_t *grown = realloc (buf->data, capacity);
        if (!grown)
            abort ();
        buf->data = grown;
        buf->capacity = capacity;
    }
    if (size)
        memcpy (buf->data + buf->size, data, size);
    buf->size += size;
}

void
fpx_fuzz_buf_frame (fpx_fuzz_buf_t *buf, const void *data, size_t size)
{
    uint8_t prefix [6];
    if (size < 0xffff) {
        prefix [0] = (uint8_t) size;
        prefix [1] = (uint8_t) (size >> 8);
        fpx_fuzz_buf_append (buf, prefix, 2);
    }
    else {
        prefix [0] = prefix [1] = 0xff;
        for (int i = 0; i < 4; i++)
            prefix [2 + i] = (uint8_t) (size >> (8 * i));
        fpx_fuzz_buf_append (buf, prefix, 6);
    }
    fpx_fuzz_buf_append (buf, data, size);
}

void
fpx_fuzz_buf_free (fpx_fuzz_buf_t *buf)
{
    free (buf->data);
    memset (buf, 0, sizeof *buf);
}

uint64_t
fpx_fuzz_rand (uint64_t *state)
{
    uint64_t x = *state ? *state : 0x9e3779b97f4a7c15ull;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545f4914f6cdd1dull;
}

static const uint64_t s_interesting [] = {
    0, 1, 2, 3, 4, 7, 8, 15, 16, 31, 32, 63, 64, 100, 127, 128, 255, 256, 511, 512,
    1000, 1023, 1024, 4095, 4096, 32767, 32768, 65535, 65536, 65537, 1 << 20,
    (1u << 20) + 1, 0x7fffffff, 0x80000000, 0xffffffff, 0x100000000ull,
    0x7fffffffffffffffull, 0x8000000000000000ull, 0xffffffffffffffffull,
    0xfffffffffffffffeull, 0x7f800000, 0x7fc00000, 0xff800000,  //  +inf, NaN, -inf as floats
};

void
fpx_fuzz_mutate (fpx_fuzz_buf_t *buf, const fpx_fuzz_buf_t *other, size_t max_size,
                 uint64_t *state)
{
    int steps = 1 + (int) (fpx_fuzz_rand (state) % 4);
    for (int step = 0; step < steps; step++) {
        uint64_t r = fpx_fuzz_rand (state);
        size_t size = buf->size;
        size_t at = size ? (size_t) ((r >> 8) % size) : 0;
        switch (r % 9) {
            case 0:         //  bit flip
                if (size)
                    buf->data [at] ^= (uint8_t) (1u << ((r >> 40) % 8));
                break;
            case 1:         //  random byte
                if (size)
                    buf->data [at] = (uint8_t) (r >> 40);
                break;
            case 2: case 3: {   //  boundary integer, 1/2/4/8 bytes, either byte order
                uint64_t value = s_interesting [(r >> 40) % (sizeof s_interesting / sizeof s_interesting [0])];
                if ((r >> 50) & 1)
                    value = -value;
                size_t width = (size_t) 1 << ((r >> 52) % 4);
                if (size < width)
                    break;
                at = at > size - width ? size - width : at;
                bool big = (r >> 55) & 1;
                for (size_t i = 0; i < width; i++)
                    buf->data [at + i] = (uint8_t) (value >> (8 * (big ? width - 1 - i : i)));
                break;
            }
            case 4: {       //  insert bytes
                size_t n = 1 + (size_t) ((r >> 40) % 16);
                if (size + n > max_size)
                    break;
                uint8_t fill [16];
                for (size_t i = 0; i < n; i++)
                    fill [i] = (uint8_t) fpx_fuzz_rand (state);
                fpx_fuzz_buf_append (buf, fill, n);     //  grow, then move the tail
                memmove (buf->data + at + n, buf->data + at, size - at);
                memcpy (buf->data + at, fill, n);
                break;
            }
            case 5: {       //  erase bytes
                size_t n = 1 + (size_t) ((r >> 40) % 16);
                if (at + n > size)
                    n = size - at;
                memmove (buf->data + at, buf->data + at + n, size - at - n);
                buf->size -= n;
                break;
            }
            case 6:         //  truncate
                buf->size = at;
                break;
            case 7: {       //  duplicate a chunk (an extra frame, a longer array)
                size_t n = 1 + (size_t) ((r >> 40) % 64);
                if (at + n > size)
                    n = size - at;
                if (n == 0 || size + n > max_size)
                    break;
                uint8_t chunk [64];
                memcpy (chunk, buf->data + at, n);
                fpx_fuzz_buf_append (buf, chunk, n);
                break;
            }
            case 8: {       //  splice: the head of this input, the tail of another
                if (!other || other->size == 0)
                    break;
                size_t from = (size_t) ((r >> 32) % other->size);
                buf->size = at;
                size_t n = other->size - from;
                if (buf->size + n > max_size)
                    n = max_size - buf->size;
                fpx_fuzz_buf_append (buf, other->data + from, n);
                break;
            }
        }
    }
}
