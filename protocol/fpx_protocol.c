/*  fpx_protocol.c — header codec, error and opcode tables.
    Every read is checked against the frame size before it happens.     */
#include <math.h>
#include <string.h>

#include "fpx_protocol.h"

static void s_put_u16 (uint8_t *p, uint16_t v) { p [0] = (uint8_t) v; p [1] = (uint8_t) (v >> 8); }
static void s_put_u32 (uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p [i] = (uint8_t) (v >> (8 * i)); }
static void s_put_u64 (uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p [i] = (uint8_t) (v >> (8 * i)); }
static uint16_t s_get_u16 (const uint8_t *p) { return (uint16_t) (p [0] | (p [1] << 8)); }
static uint32_t
s_get_u32 (const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = (v << 8) | p [i];
    return v;
}
static uint64_t
s_get_u64 (const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p [i];
    return v;
}

void
fpx_header_encode_reply (const fpx_header_t *header, uint8_t *out)
{
    s_put_u32 (out, FPX_MAGIC);
    s_put_u16 (out + 4, header->version);
    s_put_u16 (out + 6, header->opcode);
    s_put_u32 (out + 8, header->flags);
    s_put_u32 (out + 12, (uint32_t) header->status);
    s_put_u64 (out + 16, header->request_id);
}

void
fpx_header_encode_request (const fpx_header_t *header, uint8_t *out)
{
    fpx_header_encode_reply (header, out);
    memset (out + FPX_REPLY_HEADER_SIZE, 0, FPX_API_KEY_MAX);
    size_t key_len = strnlen (header->api_key, FPX_API_KEY_MAX);
    memcpy (out + FPX_REPLY_HEADER_SIZE, header->api_key, key_len);
}

//  Decodes the 24-byte prefix common to every version and both directions.
static int
s_decode_prefix (fpx_header_t *header, const uint8_t *p, size_t size)
{
    memset (header, 0, sizeof *header);
    if (size < FPX_REPLY_HEADER_SIZE || s_get_u32 (p) != FPX_MAGIC)
        return FPX_EPROTO;
    header->version = s_get_u16 (p + 4);
    header->opcode = s_get_u16 (p + 6);
    header->flags = s_get_u32 (p + 8);
    header->status = (int32_t) s_get_u32 (p + 12);
    header->request_id = s_get_u64 (p + 16);
    if (header->version != FPX_PROTOCOL_VERSION)
        return FPX_EVERSION;
    if (header->flags != 0)
        return FPX_EPROTO;
    return 0;
}

int
fpx_header_decode_request (fpx_header_t *header, const void *data, size_t size)
{
    const uint8_t *p = data;
    int rc = s_decode_prefix (header, p, size);
    if (rc)
        return rc;
    if (size != FPX_REQUEST_HEADER_SIZE)
        return FPX_EPROTO;
    memcpy (header->api_key, p + FPX_REPLY_HEADER_SIZE, FPX_API_KEY_MAX);
    header->api_key [FPX_API_KEY_MAX] = 0;
    return 0;
}

int
fpx_header_decode_reply (fpx_header_t *header, const void *data, size_t size)
{
    int rc = s_decode_prefix (header, data, size);
    if (rc)
        return rc;
    return size == FPX_REPLY_HEADER_SIZE ? 0 : FPX_EPROTO;
}

//  Indexed by code; codes absent from the list stay zero (code 0).
static const fpx_opcode_info_t s_opcodes [FPX_OP_LAST_] = {
#define FPX_OPCODES_INFO_(NAME, code, wire, role, lock, flags, summary) \
    [code] = { code, #wire, FPX_ROLE_##role, FPX_LOCK_##lock, flags, summary },
    FPX_OPCODES (FPX_OPCODES_INFO_)
#undef FPX_OPCODES_INFO_
};

const fpx_opcode_info_t *
fpx_opcode_info (int opcode)
{
    if (opcode <= 0 || opcode >= FPX_OP_LAST_ || s_opcodes [opcode].code != opcode)
        return NULL;
    return &s_opcodes [opcode];
}

const char *
fpx_opcode_name (int opcode)
{
    const fpx_opcode_info_t *info = fpx_opcode_info (opcode);
    return info ? info->name : NULL;
}

const char *
fpx_role_name (int role)
{
    return role == FPX_ROLE_READ ? "read" : role == FPX_ROLE_WRITE ? "write" : "admin";
}

const char *
fpx_lock_name (int lock)
{
    static const char *names [] = { "none", "read", "write", "server" };
    return lock >= 0 && lock <= FPX_LOCK_SERVER ? names [lock] : "?";
}

const char *
fpx_strerror (int code)
{
    switch (code) {
        case 0: return "success";
#define FPX_ERRORS_MSG_(name, num, msg) case num: return msg;
        FPX_ERRORS (FPX_ERRORS_MSG_)
#undef FPX_ERRORS_MSG_
    }
    return "unknown error";
}

const char *
fpx_error_name (int code)
{
    switch (code) {
        case 0: return "FPX_OK";
#define FPX_ERRORS_NAME_(name, num, msg) case num: return "FPX_" #name;
        FPX_ERRORS (FPX_ERRORS_NAME_)
#undef FPX_ERRORS_NAME_
    }
    return "FPX_E?";
}

bool
fpx_name_is_valid (const char *name, size_t len)
{
    if (len == 0 || len > FPX_NAME_MAX || name [0] == '.' || name [0] == '-')
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = name [i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
               || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
        if (!ok)
            return false;
    }
    return true;
}

bool
fpx_name_is_anonymous (const char *name, size_t len)
{
    if (len < 2 || len > 17 || name [0] != '@')
        return false;
    for (size_t i = 1; i < len; i++) {
        char c = name [i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')))
            return false;
    }
    return true;
}

bool
fpx_floats_are_finite (const float *x, size_t n)
{
    //  Integer test of the exponent bits (all ones means NaN or ±inf).
    //  Every add passes here, so it has to run at memory speed: blocks of
    //  64 floats with a fixed trip count, which the compiler vectorizes
    //  even at -O2 (a loop over n stays scalar there: it would need an
    //  epilogue; 4 GB/s instead of 14), one branch per block, then the
    //  tail one by one.
    enum { BLOCK = 64 };
    size_t i = 0;
    for (; n - i >= BLOCK; i += BLOCK) {
        uint32_t bad = 0;
        for (int j = 0; j < BLOCK; j++) {
            uint32_t bits;
            memcpy (&bits, x + i + j, 4);
            bad |= (uint32_t) ((bits & 0x7f800000u) == 0x7f800000u);
        }
        if (bad)
            return false;
    }
    uint32_t bad = 0;
    for (; i < n; i++) {
        uint32_t bits;
        memcpy (&bits, x + i, 4);
        bad |= (uint32_t) ((bits & 0x7f800000u) == 0x7f800000u);
    }
    return bad == 0;
}

//  The exact test of one row: finite values, squared norm within bounds.
static int
s_row_check (const float *row, size_t d, double *norm2_p)
{
    double sum = 0;
    for (size_t j = 0; j < d; j++)
        sum += (double) row [j] * (double) row [j];
    *norm2_p = sum;
    if (sum != sum || sum == (double) INFINITY)
        return FPX_VECTORS_NOT_FINITE;      //  x² of a finite float is finite in double
    return sum <= FPX_VECTOR_NORM2_MAX ? 0 : FPX_VECTORS_TOO_LARGE;
}

int
fpx_vectors_check (const float *x, size_t n, size_t d, size_t *row_p, double *norm2_p)
{
    //  |v| < 2^32 everywhere bounds every squared norm by d·2^64, far
    //  below the limit for any d the server allows (≤ 2^16): an integer
    //  test of the magnitude bits, which also catches NaN and ±inf (their
    //  exponent is all ones), in blocks of 64 for the vectorizer as in
    //  fpx_floats_are_finite. A block with a larger value has its rows
    //  checked exactly.
    enum { BLOCK = 64 };
    const uint32_t big = 0x4f800000u;        //  2^32 as float bits
    size_t total = n * d, i = 0, next_row = 0;
    double norm2 = 0;
    for (; i < total; ) {
        size_t end = total - i >= BLOCK ? i + BLOCK : total;
        uint32_t flagged = 0;
        if (end - i == BLOCK)
            for (int j = 0; j < BLOCK; j++) {
                uint32_t bits;
                memcpy (&bits, x + i + j, 4);
                flagged |= (uint32_t) ((bits & 0x7fffffffu) >= big);
            }
        else
            for (size_t j = i; j < end; j++) {
                uint32_t bits;
                memcpy (&bits, x + j, 4);
                flagged |= (uint32_t) ((bits & 0x7fffffffu) >= big);
            }
        if (flagged) {
            //  Rows overlapping [i, end) not yet checked.
            size_t row = i / d > next_row ? i / d : next_row;
            for (; row * d < end; row++) {
                int rc = s_row_check (x + row * d, d, &norm2);
                if (rc) {
                    *row_p = row;
                    *norm2_p = norm2;
                    return rc;
                }
            }
            next_row = row;
        }
        i = end;
    }
    return 0;
}

//  Length of the valid UTF-8 sequence at p (at most left bytes), or 0.
static size_t
s_utf8_length (const unsigned char *p, size_t left)
{
    size_t len;
    uint32_t cp;
    if (p [0] >= 0xc2 && p [0] <= 0xdf)      { len = 2; cp = p [0] & 0x1f; }
    else if (p [0] >= 0xe0 && p [0] <= 0xef) { len = 3; cp = p [0] & 0x0f; }
    else if (p [0] >= 0xf0 && p [0] <= 0xf4) { len = 4; cp = p [0] & 0x07; }
    else return 0;
    if (left < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p [i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (p [i] & 0x3f);
    }
    //  Overlong forms, surrogates and code points past U+10FFFF.
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff))
    ||  (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

size_t
fpx_text_sanitize (char *out, size_t out_size, const char *in, size_t len)
{
    static const char hex [] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *) in;
    size_t used = 0;
    for (size_t i = 0; i < len; ) {
        size_t unit = p [i] >= 0x20 && p [i] < 0x7f ? 1 : s_utf8_length (p + i, len - i);
        size_t width = unit ? unit : 4;
        if (used + width >= out_size)
            break;
        if (unit) {
            memcpy (out + used, p + i, unit);
            i += unit;
        }
        else {
            out [used] = '\\';
            out [used + 1] = 'x';
            out [used + 2] = hex [p [i] >> 4];
            out [used + 3] = hex [p [i] & 15];
            i++;
        }
        used += width;
    }
    out [used] = 0;
    return used;
}
