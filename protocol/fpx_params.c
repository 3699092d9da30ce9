/*  fpx_params.c — bounded msgpack reader, see fpx_params.h.
    One rule: no byte is read before `needle + n <= ceiling` was checked,
    and a declared count can never exceed the bytes left (each element
    takes at least one byte), so nothing here depends on a peer's lengths.
*/
#include <string.h>

#include "fpx_params.h"

static uint64_t
s_be (const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = (v << 8) | p [i];
    return v;
}

//  Skips count values (each possibly nested) at *needle.
static int s_skip (const uint8_t **needle, const uint8_t *ceiling, uint64_t count, int depth);

static int
s_read (fpx_mp_value_t *value, const uint8_t **needle_p, const uint8_t *ceiling, int depth)
{
    const uint8_t *needle = *needle_p;
    if (needle >= ceiling || depth > FPX_MP_DEPTH_MAX)
        return FPX_EPROTO;
    uint8_t tag = *needle++;
    size_t left = (size_t) (ceiling - needle);
    uint64_t len = 0;         //  payload bytes (str/bin) or element count
    int width = 0;            //  bytes of the length field
    memset (value, 0, sizeof *value);

#define NEED(n) do { if ((uint64_t) (n) > left) return FPX_EPROTO; } while (0)
    if (tag <= 0x7f) { value->type = FPX_MP_INT; value->v.i = tag; }
    else if (tag >= 0xe0) { value->type = FPX_MP_INT; value->v.i = (int8_t) tag; }
    else if ((tag & 0xe0) == 0xa0) { value->type = FPX_MP_STR; len = tag & 0x1f; }
    else if ((tag & 0xf0) == 0x90) { value->type = FPX_MP_ARRAY; len = tag & 0x0f; }
    else if ((tag & 0xf0) == 0x80) { value->type = FPX_MP_MAP; len = tag & 0x0f; }
    else switch (tag) {
        case 0xc0: value->type = FPX_MP_NIL; break;
        case 0xc2: case 0xc3: value->type = FPX_MP_BOOL; value->v.b = tag == 0xc3; break;
        case 0xcc: case 0xcd: case 0xce: case 0xcf:
            width = 1 << (tag - 0xcc);
            NEED (width);
            value->type = FPX_MP_INT;
            value->v.u = s_be (needle, width);
            value->is_unsigned = value->v.u > INT64_MAX;
            needle += width; width = 0;
            break;
        case 0xd0: case 0xd1: case 0xd2: case 0xd3: {
            width = 1 << (tag - 0xd0);
            NEED (width);
            uint64_t raw = s_be (needle, width);
            int shift = 64 - 8 * width;
            value->type = FPX_MP_INT;
            //  Sign-extend through the unsigned type, then reinterpret.
            uint64_t ext = shift ? (raw << shift) : raw;
            int64_t sval;
            memcpy (&sval, &ext, 8);
            value->v.i = shift ? sval / ((int64_t) 1 << shift) : sval;
            needle += width; width = 0;
            break;
        }
        case 0xca: {
            NEED (4);
            uint32_t bits = (uint32_t) s_be (needle, 4);
            float f;
            memcpy (&f, &bits, 4);
            value->type = FPX_MP_FLOAT; value->v.f = f; needle += 4;
            break;
        }
        case 0xcb: {
            NEED (8);
            uint64_t bits = s_be (needle, 8);
            memcpy (&value->v.f, &bits, 8);
            value->type = FPX_MP_FLOAT; needle += 8;
            break;
        }
        case 0xd9: case 0xda: case 0xdb:
            value->type = FPX_MP_STR; width = 1 << (tag - 0xd9); break;
        case 0xc4: case 0xc5: case 0xc6:
            value->type = FPX_MP_BIN; width = 1 << (tag - 0xc4); break;
        case 0xdc: case 0xdd:
            value->type = FPX_MP_ARRAY; width = 2 << (tag - 0xdc); break;
        case 0xde: case 0xdf:
            value->type = FPX_MP_MAP; width = 2 << (tag - 0xde); break;
        default:
            return FPX_EPROTO;      //  ext types and the unused tag 0xc1
    }
    if (width) {
        NEED (width);
        len = s_be (needle, width);
        needle += width;
    }
    left = (size_t) (ceiling - needle);
    if (value->type == FPX_MP_STR || value->type == FPX_MP_BIN) {
        NEED (len);
        value->v.str.ptr = (const char *) needle;
        value->v.str.len = (uint32_t) len;
        needle += len;
    }
    else
    if (value->type == FPX_MP_ARRAY || value->type == FPX_MP_MAP) {
        uint64_t elements = value->type == FPX_MP_MAP ? 2 * len : len;
        NEED (elements);
        value->v.seq.ptr = needle;
        value->v.seq.count = (uint32_t) len;
        if (s_skip (&needle, ceiling, elements, depth + 1))
            return FPX_EPROTO;
        value->v.seq.end = needle;
    }
#undef NEED
    *needle_p = needle;
    return 0;
}

static int
s_skip (const uint8_t **needle, const uint8_t *ceiling, uint64_t count, int depth)
{
    fpx_mp_value_t ignored;
    for (uint64_t i = 0; i < count; i++)
        if (s_read (&ignored, needle, ceiling, depth))
            return FPX_EPROTO;
    return 0;
}

int
fpx_mp_read (fpx_mp_value_t *value, const uint8_t **needle, const uint8_t *ceiling)
{
    return s_read (value, needle, ceiling, 1);
}

int
fpx_params_decode (fpx_params_t *self, const void *data, size_t size)
{
    return fpx_params_decode_bounded (self, data, size, FPX_PARAMS_MAX);
}

int
fpx_params_decode_bounded (fpx_params_t *self, const void *data, size_t size, size_t max_size)
{
    self->count = 0;
    if (size == 0)
        return 0;
    if (size > max_size)
        return FPX_EPROTO;
    const uint8_t *needle = data;
    const uint8_t *ceiling = needle + size;
    fpx_mp_value_t map;
    if (s_read (&map, &needle, ceiling, 0) || map.type != FPX_MP_MAP
    ||  needle != ceiling || map.v.seq.count > FPX_PARAMS_MAX_KEYS)
        return FPX_EPROTO;
    needle = map.v.seq.ptr;
    for (uint32_t i = 0; i < map.v.seq.count; i++) {
        fpx_mp_value_t key;
        if (s_read (&key, &needle, ceiling, 1) || key.type != FPX_MP_STR)
            return FPX_EPROTO;
        self->items [i].key = key.v.str.ptr;
        self->items [i].key_len = key.v.str.len;
        if (s_read (&self->items [i].value, &needle, ceiling, 1))
            return FPX_EPROTO;
        self->count = (int) i + 1;
    }
    return 0;
}

static const fpx_mp_value_t *
s_find (const fpx_params_t *self, const char *key)
{
    size_t key_len = strlen (key);
    for (int i = 0; i < self->count; i++)
        if (self->items [i].key_len == key_len
        &&  memcmp (self->items [i].key, key, key_len) == 0)
            return &self->items [i].value;
    return NULL;
}

int
fpx_params_get_value (const fpx_params_t *self, const char *key, fpx_mp_value_t *out)
{
    const fpx_mp_value_t *value = s_find (self, key);
    if (!value)
        return 1;
    *out = *value;
    return 0;
}

int
fpx_params_get_int (const fpx_params_t *self, const char *key, int64_t *out)
{
    const fpx_mp_value_t *value = s_find (self, key);
    if (!value)
        return 1;
    if (value->type != FPX_MP_INT || value->is_unsigned)
        return FPX_EINVAL;
    *out = value->v.i;
    return 0;
}

int
fpx_params_get_double (const fpx_params_t *self, const char *key, double *out)
{
    const fpx_mp_value_t *value = s_find (self, key);
    if (!value)
        return 1;
    if (value->type == FPX_MP_FLOAT)
        *out = value->v.f;
    else
    if (value->type == FPX_MP_INT && !value->is_unsigned)
        *out = (double) value->v.i;
    else
        return FPX_EINVAL;
    return 0;
}

int
fpx_params_get_bool (const fpx_params_t *self, const char *key, bool *out)
{
    const fpx_mp_value_t *value = s_find (self, key);
    if (!value)
        return 1;
    if (value->type != FPX_MP_BOOL)
        return FPX_EINVAL;
    *out = value->v.b;
    return 0;
}

int
fpx_params_get_str (const fpx_params_t *self, const char *key,
                    const char **ptr, size_t *len)
{
    const fpx_mp_value_t *value = s_find (self, key);
    if (!value)
        return 1;
    if (value->type != FPX_MP_STR)
        return FPX_EINVAL;
    *ptr = value->v.str.ptr;
    *len = value->v.str.len;
    return 0;
}

int
fpx_params_copy_str (const fpx_params_t *self, const char *key, char *buf, size_t size)
{
    const char *ptr;
    size_t len;
    int rc = fpx_params_get_str (self, key, &ptr, &len);
    if (rc)
        return rc;
    if (len >= size || memchr (ptr, 0, len))
        return FPX_EINVAL;
    memcpy (buf, ptr, len);
    buf [len] = 0;
    return 0;
}

void
fpx_pack_str (msgpack_packer *pk, const char *str)
{
    size_t len = strlen (str);
    msgpack_pack_str (pk, len);
    msgpack_pack_str_body (pk, str, len);
}

void
fpx_pack_kv_int (msgpack_packer *pk, const char *key, int64_t value)
{
    fpx_pack_str (pk, key);
    msgpack_pack_int64 (pk, value);
}

void
fpx_pack_kv_double (msgpack_packer *pk, const char *key, double value)
{
    fpx_pack_str (pk, key);
    msgpack_pack_double (pk, value);
}

void
fpx_pack_kv_bool (msgpack_packer *pk, const char *key, bool value)
{
    fpx_pack_str (pk, key);
    if (value)
        msgpack_pack_true (pk);
    else
        msgpack_pack_false (pk);
}

void
fpx_pack_kv_str (msgpack_packer *pk, const char *key, const char *value)
{
    fpx_pack_str (pk, key);
    fpx_pack_str (pk, value);
}

void
fpx_pack_number (msgpack_packer *pk, double value)
{
    if (value >= -9.2e18 && value <= 9.2e18 && value == (double) (int64_t) value)
        msgpack_pack_int64 (pk, (int64_t) value);
    else
        msgpack_pack_double (pk, value);
}

void
fpx_pack_kv_number (msgpack_packer *pk, const char *key, double value)
{
    fpx_pack_str (pk, key);
    fpx_pack_number (pk, value);
}
