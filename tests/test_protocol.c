/*  test_protocol.c — self-test of protocol/: the header codec, the bounded
    msgpack reader (valid maps, every truncation of a valid map, a seed
    corpus of hostile inputs, seeded mutations), name validation, the
    finite-float check and the error/opcode tables.

    Needs no server. Every input is copied into a heap buffer of exactly its
    size, so that ASan reports any read past the end.
*/
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fpx_test.h"

//  A heap copy of exactly size bytes (ASan guards both ends).
static uint8_t *
s_exact (const void *data, size_t size)
{
    uint8_t *copy = malloc (size ? size : 1);
    if (copy && size)
        memcpy (copy, data, size);
    return copy;
}

static int
s_decode_exact (fpx_params_t *params, const void *data, size_t size)
{
    uint8_t *copy = s_exact (data, size);
    int rc = fpx_params_decode (params, size ? copy : NULL, size);
    free (copy);
    return rc;
}

//  Checks that a decoded params' views all lie in [base, base + size).
static bool
s_views_inside (const fpx_params_t *params, const uint8_t *base, size_t size)
{
    const char *lo = (const char *) base, *hi = (const char *) base + size;
    for (int i = 0; i < params->count; i++) {
        const char *key = params->items [i].key;
        if (key < lo || key + params->items [i].key_len > hi)
            return false;
        const fpx_mp_value_t *v = &params->items [i].value;
        if (v->type == FPX_MP_STR || v->type == FPX_MP_BIN)
            if (v->v.str.ptr < lo || v->v.str.ptr + v->v.str.len > hi)
                return false;
        if (v->type == FPX_MP_ARRAY || v->type == FPX_MP_MAP)
            if ((const char *) v->v.seq.ptr < lo || (const char *) v->v.seq.end > hi
            ||  v->v.seq.ptr > v->v.seq.end)
                return false;
    }
    return true;
}

/* ---- header ------------------------------------------------------------------ */

static void
test_header_round_trip (void *arg)
{
    (void) arg;
    fpx_header_t in, out;
    memset (&in, 0, sizeof in);
    in.version = FPX_PROTOCOL_VERSION;
    in.opcode = FPX_OP_SEARCH;
    in.request_id = 0x0123456789abcdefull;
    snprintf (in.api_key, sizeof in.api_key, "secret-key");
    uint8_t frame [FPX_REQUEST_HEADER_SIZE];
    fpx_header_encode_request (&in, frame);

    //  Byte layout as docs/PROTOCOL.md says.
    CHECK (memcmp (frame, "FPXP", 4) == 0, "magic bytes are not \"FPXP\"");
    CHECK (frame [4] == 1 && frame [5] == 0, "version not u16 LE 1 at offset 4");
    CHECK (frame [6] == FPX_OP_SEARCH && frame [7] == 0, "opcode not u16 LE at offset 6");
    CHECK (frame [8] == 0 && frame [9] == 0 && frame [10] == 0 && frame [11] == 0, "flags not 0");
    CHECK (frame [16] == 0xef && frame [23] == 0x01, "request id not u64 LE at offset 16");
    CHECK (memcmp (frame + 24, "secret-key", 10) == 0 && frame [34] == 0, "key not at offset 24");
    bool padded = true;
    for (int i = 34; i < FPX_REQUEST_HEADER_SIZE; i++)
        if (frame [i])
            padded = false;
    CHECK (padded, "key not NUL-padded");

    uint8_t *copy = s_exact (frame, sizeof frame);
    CHECK_EQ (fpx_header_decode_request (&out, copy, sizeof frame), 0);
    free (copy);
    CHECK_EQ (out.version, FPX_PROTOCOL_VERSION);
    CHECK_EQ (out.opcode, FPX_OP_SEARCH);
    CHECK_EQ (out.flags, 0);
    CHECK_EQ (out.status, 0);
    CHECK (out.request_id == in.request_id, "request id %llx", (unsigned long long) out.request_id);
    CHECK_STR (out.api_key, "secret-key");

    //  A key of exactly 64 bytes survives (no room for a NUL on the wire).
    memset (in.api_key, 'k', FPX_API_KEY_MAX);
    in.api_key [FPX_API_KEY_MAX] = 0;
    fpx_header_encode_request (&in, frame);
    copy = s_exact (frame, sizeof frame);
    CHECK_EQ (fpx_header_decode_request (&out, copy, sizeof frame), 0);
    free (copy);
    CHECK_EQ (strlen (out.api_key), FPX_API_KEY_MAX);
    CHECK (memcmp (out.api_key, in.api_key, FPX_API_KEY_MAX) == 0, "64-byte key changed");

    //  Reply: status and id survive, negative status included.
    fpx_header_t rin, rout;
    memset (&rin, 0, sizeof rin);
    rin.version = FPX_PROTOCOL_VERSION;
    rin.opcode = FPX_OP_ADD;
    rin.status = FPX_EFAISS;
    rin.request_id = UINT64_MAX;
    uint8_t reply [FPX_REPLY_HEADER_SIZE];
    fpx_header_encode_reply (&rin, reply);
    copy = s_exact (reply, sizeof reply);
    CHECK_EQ (fpx_header_decode_reply (&rout, copy, sizeof reply), 0);
    free (copy);
    CHECK_EQ (rout.status, FPX_EFAISS);
    CHECK_EQ (rout.opcode, FPX_OP_ADD);
    CHECK (rout.request_id == UINT64_MAX, "reply id");

    //  Every opcode and every status round-trips.
    for (int op = 0; op <= 0xffff; op += 257) {
        rin.opcode = (uint16_t) op;
        fpx_header_encode_reply (&rin, reply);
        CHECK (fpx_header_decode_reply (&rout, reply, sizeof reply) == 0 && rout.opcode == op,
               "opcode %d did not round-trip", op);
    }
    for (int code = 0; code > FPX_ERRNO_LAST_; code--) {
        rin.status = code;
        fpx_header_encode_reply (&rin, reply);
        CHECK (fpx_header_decode_reply (&rout, reply, sizeof reply) == 0 && rout.status == code,
               "status %d did not round-trip", code);
    }
}

static void
test_header_malformed (void *arg)
{
    (void) arg;
    fpx_header_t in, out;
    memset (&in, 0, sizeof in);
    in.version = FPX_PROTOCOL_VERSION;
    in.opcode = FPX_OP_PING;
    in.request_id = 77;
    snprintf (in.api_key, sizeof in.api_key, "k");
    uint8_t frame [FPX_REQUEST_HEADER_SIZE + 8];
    memset (frame, 0, sizeof frame);
    fpx_header_encode_request (&in, frame);

    //  Every wrong size, each in an exact buffer: never 0, never a read
    //  past the end.
    for (size_t size = 0; size <= sizeof frame; size++) {
        if (size == FPX_REQUEST_HEADER_SIZE)
            continue;
        uint8_t *copy = s_exact (frame, size);
        int rc = fpx_header_decode_request (&out, size ? copy : NULL, size);
        free (copy);
        CHECK (rc == FPX_EPROTO, "request header of %zu bytes: rc %d, expected FPX_EPROTO", size, rc);
    }
    uint8_t reply [FPX_REPLY_HEADER_SIZE + 4];
    memset (reply, 0, sizeof reply);
    fpx_header_encode_reply (&in, reply);
    for (size_t size = 0; size <= sizeof reply; size++) {
        if (size == FPX_REPLY_HEADER_SIZE)
            continue;
        uint8_t *copy = s_exact (reply, size);
        int rc = fpx_header_decode_reply (&out, size ? copy : NULL, size);
        free (copy);
        CHECK (rc == FPX_EPROTO, "reply header of %zu bytes: rc %d, expected FPX_EPROTO", size, rc);
    }

    //  Wrong magic, each byte in turn.
    for (int i = 0; i < 4; i++) {
        uint8_t bad [FPX_REQUEST_HEADER_SIZE];
        memcpy (bad, frame, sizeof bad);
        bad [i] ^= 0x20;
        CHECK (fpx_header_decode_request (&out, bad, sizeof bad) == FPX_EPROTO,
               "magic byte %d altered: not FPX_EPROTO", i);
    }

    //  Another version: FPX_EVERSION, with version and id still read.
    for (int version = 0; version <= 3; version++) {
        if (version == FPX_PROTOCOL_VERSION)
            continue;
        uint8_t bad [FPX_REQUEST_HEADER_SIZE];
        memcpy (bad, frame, sizeof bad);
        bad [4] = (uint8_t) version;
        int rc = fpx_header_decode_request (&out, bad, sizeof bad);
        CHECK (rc == FPX_EVERSION, "version %d: rc %d, expected FPX_EVERSION", version, rc);
        CHECK_EQ (out.version, version);
        CHECK_EQ (out.request_id, 77);
        CHECK_EQ (out.opcode, FPX_OP_PING);
    }
    //  A future version's longer header still answers FPX_EVERSION.
    {
        uint8_t bad [FPX_REQUEST_HEADER_SIZE + 8];
        memcpy (bad, frame, sizeof bad);
        bad [4] = 2;
        CHECK_EQ (fpx_header_decode_request (&out, bad, sizeof bad), FPX_EVERSION);
        CHECK_EQ (out.request_id, 77);
    }

    //  Non-zero flags, any bit.
    for (int bit = 0; bit < 32; bit += 5) {
        uint8_t bad [FPX_REQUEST_HEADER_SIZE];
        memcpy (bad, frame, sizeof bad);
        bad [8 + bit / 8] |= (uint8_t) (1u << (bit % 8));
        CHECK (fpx_header_decode_request (&out, bad, sizeof bad) == FPX_EPROTO,
               "flag bit %d: not FPX_EPROTO", bit);
    }

    //  A key with no NUL within its 64 bytes decodes NUL-terminated.
    {
        uint8_t full [FPX_REQUEST_HEADER_SIZE];
        memcpy (full, frame, sizeof full);
        memset (full + FPX_REPLY_HEADER_SIZE, 'z', FPX_API_KEY_MAX);
        uint8_t *copy = s_exact (full, sizeof full);
        CHECK_EQ (fpx_header_decode_request (&out, copy, sizeof full), 0);
        free (copy);
        CHECK_EQ (strlen (out.api_key), FPX_API_KEY_MAX);
    }
}

/* ---- msgpack parameters ------------------------------------------------------- */

//  A valid map that uses every accepted type.
static void
s_pack_valid (fpx_mp_t *mp)
{
    fpx_mp_init (mp);
    msgpack_packer *pk = &mp->pk;
    msgpack_pack_map (pk, 12);
    fpx_pack_kv_str (pk, "name", "my_index-1.v2");
    fpx_pack_kv_int (pk, "k", 10);
    fpx_pack_kv_double (pk, "radius", 1.5);
    fpx_pack_kv_bool (pk, "memory", true);
    fpx_pack_kv_int (pk, "neg", -123456789012);
    fpx_pack_str (pk, "big");
    msgpack_pack_uint64 (pk, UINT64_MAX);
    fpx_pack_str (pk, "nil");
    msgpack_pack_nil (pk);
    fpx_pack_str (pk, "bin");
    msgpack_pack_bin (pk, 3);
    msgpack_pack_bin_body (pk, "\x00\x01\x02", 3);
    fpx_pack_str (pk, "arr");
    msgpack_pack_array (pk, 3);
    msgpack_pack_int (pk, 1);
    msgpack_pack_str (pk, 2);
    msgpack_pack_str_body (pk, "xy", 2);
    msgpack_pack_array (pk, 1);
    msgpack_pack_int (pk, 3);
    fpx_pack_str (pk, "f32");
    msgpack_pack_float (pk, 0.25f);
    fpx_pack_str (pk, "map");
    msgpack_pack_map (pk, 1);
    fpx_pack_kv_int (pk, "inner", 5);
    fpx_pack_kv_int (pk, "d", 64);
}

static void
test_params_valid (void *arg)
{
    (void) arg;
    fpx_mp_t mp;
    s_pack_valid (&mp);
    uint8_t *copy = s_exact (mp.buf.data, mp.buf.size);
    fpx_params_t params;
    int rc = fpx_params_decode (&params, copy, mp.buf.size);
    CHECK_EQ (rc, 0);
    CHECK_EQ (params.count, 12);
    CHECK (s_views_inside (&params, copy, mp.buf.size), "a view points outside the frame");

    int64_t i = 0;
    double f = 0;
    bool b = false;
    const char *s = NULL;
    size_t len = 0;
    char buf [64];
    CHECK_EQ (fpx_params_get_int (&params, "k", &i), 0);
    CHECK_EQ (i, 10);
    CHECK_EQ (fpx_params_get_int (&params, "neg", &i), 0);
    CHECK_EQ (i, -123456789012);
    CHECK_EQ (fpx_params_get_int (&params, "d", &i), 0);
    CHECK_EQ (i, 64);
    CHECK_EQ (fpx_params_get_double (&params, "radius", &f), 0);
    CHECK (f == 1.5, "radius %g", f);
    CHECK_EQ (fpx_params_get_double (&params, "f32", &f), 0);
    CHECK (f == 0.25, "f32 %g", f);
    CHECK_EQ (fpx_params_get_double (&params, "k", &f), 0);     //  a float field accepts ints
    CHECK (f == 10.0, "k as double %g", f);
    CHECK_EQ (fpx_params_get_int (&params, "radius", &i), FPX_EINVAL);  //  not the other way
    CHECK_EQ (fpx_params_get_bool (&params, "memory", &b), 0);
    CHECK_TRUE (b);
    CHECK_EQ (fpx_params_get_bool (&params, "k", &b), FPX_EINVAL);
    CHECK_EQ (fpx_params_get_str (&params, "name", &s, &len), 0);
    CHECK (len == 13 && memcmp (s, "my_index-1.v2", 13) == 0, "name view wrong");
    CHECK_EQ (fpx_params_get_str (&params, "k", &s, &len), FPX_EINVAL);
    CHECK_EQ (fpx_params_get_str (&params, "bin", &s, &len), FPX_EINVAL);  //  bin is not str
    CHECK_EQ (fpx_params_copy_str (&params, "name", buf, sizeof buf), 0);
    CHECK_STR (buf, "my_index-1.v2");
    CHECK_EQ (fpx_params_copy_str (&params, "name", buf, 13), FPX_EINVAL);  //  no room for NUL
    CHECK_EQ (fpx_params_copy_str (&params, "name", buf, 14), 0);
    //  Above INT64_MAX: an int field refuses it.
    CHECK_EQ (fpx_params_get_int (&params, "big", &i), FPX_EINVAL);
    CHECK_EQ (fpx_params_get_double (&params, "big", &f), FPX_EINVAL);
    //  Absent keys: 1, output untouched.
    i = 4242;
    CHECK_EQ (fpx_params_get_int (&params, "absent", &i), 1);
    CHECK_EQ (i, 4242);
    CHECK_EQ (fpx_params_get_str (&params, "nam", &s, &len), 1);   //  prefix is not a match
    CHECK_EQ (fpx_params_get_int (&params, "kk", &i), 1);
    //  Nil is there but is no int.
    CHECK_EQ (fpx_params_get_int (&params, "nil", &i), FPX_EINVAL);
    fpx_mp_value_t v;
    CHECK_EQ (fpx_params_get_value (&params, "nil", &v), 0);
    CHECK_EQ (v.type, FPX_MP_NIL);

    //  Walk the array with fpx_mp_read.
    CHECK_EQ (fpx_params_get_value (&params, "arr", &v), 0);
    CHECK_EQ (v.type, FPX_MP_ARRAY);
    CHECK_EQ (v.v.seq.count, 3);
    const uint8_t *needle = v.v.seq.ptr;
    fpx_mp_value_t e;
    CHECK (fpx_mp_read (&e, &needle, v.v.seq.end) == 0 && e.type == FPX_MP_INT && e.v.i == 1, "arr[0]");
    CHECK (fpx_mp_read (&e, &needle, v.v.seq.end) == 0 && e.type == FPX_MP_STR && e.v.str.len == 2, "arr[1]");
    CHECK (fpx_mp_read (&e, &needle, v.v.seq.end) == 0 && e.type == FPX_MP_ARRAY && e.v.seq.count == 1, "arr[2]");
    CHECK (needle == v.v.seq.end, "array walk did not end at seq.end");
    CHECK_EQ (fpx_mp_read (&e, &needle, v.v.seq.end), FPX_EPROTO);  //  nothing left
    free (copy);
    fpx_mp_free (&mp);

    //  An empty frame is an empty map; so is 0x80.
    CHECK_EQ (fpx_params_decode (&params, NULL, 0), 0);
    CHECK_EQ (params.count, 0);
    CHECK_EQ (s_decode_exact (&params, "\x80", 1), 0);
    CHECK_EQ (params.count, 0);

    //  Exactly 32 keys is fine.
    fpx_mp_init (&mp);
    msgpack_pack_map (&mp.pk, 32);
    for (int k = 0; k < 32; k++) {
        char key [16];
        snprintf (key, sizeof key, "key%d", k);
        fpx_pack_kv_int (&mp.pk, key, k);
    }
    CHECK_EQ (s_decode_exact (&params, mp.buf.data, mp.buf.size), 0);
    CHECK_EQ (fpx_params_decode (&params, mp.buf.data, mp.buf.size), 0);
    CHECK_EQ (params.count, 32);
    CHECK (fpx_params_get_int (&params, "key31", &i) == 0 && i == 31, "key31");
    fpx_mp_free (&mp);
}

//  Every msgpack integer encoding is accepted by an int field.
static void
test_params_int_encodings (void *arg)
{
    (void) arg;
    struct { const char *bytes; size_t size; int64_t value; } cases [] = {
        { "\x05", 1, 5 },
        { "\xff", 1, -1 },
        { "\xe0", 1, -32 },
        { "\xcc\xfe", 2, 254 },
        { "\xcd\x12\x34", 3, 0x1234 },
        { "\xce\x80\x00\x00\x00", 5, 0x80000000ll },
        { "\xcf\x00\x00\x00\x00\x00\x00\x00\x07", 9, 7 },
        { "\xcf\x7f\xff\xff\xff\xff\xff\xff\xff", 9, INT64_MAX },
        { "\xd0\x80", 2, -128 },
        { "\xd0\x7f", 2, 127 },
        { "\xd1\x80\x00", 3, -32768 },
        { "\xd1\xff\xfe", 3, -2 },
        { "\xd2\x80\x00\x00\x00", 5, INT32_MIN },
        { "\xd2\x00\x00\x00\x0a", 5, 10 },
        { "\xd3\x80\x00\x00\x00\x00\x00\x00\x00", 9, INT64_MIN },
        { "\xd3\xff\xff\xff\xff\xff\xff\xff\xff", 9, -1 },
        { "\xd3\x00\x00\x00\x00\x00\x00\x00\x0a", 9, 10 },
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases [0]; c++) {
        uint8_t frame [32] = { 0x81, 0xa1, 'k' };
        memcpy (frame + 3, cases [c].bytes, cases [c].size);
        fpx_params_t params;
        int rc = s_decode_exact (&params, frame, 3 + cases [c].size);
        //  The views point into the freed copy; decode again in place for
        //  the getter.
        CHECK (rc == 0, "encoding %zu: decode rc %d", c, rc);
        rc = fpx_params_decode (&params, frame, 3 + cases [c].size);
        int64_t value = 0;
        CHECK (rc == 0 && fpx_params_get_int (&params, "k", &value) == 0 && value == cases [c].value,
               "encoding %zu: got %lld, expected %lld", c, (long long) value, (long long) cases [c].value);
    }
    //  Floats in both encodings.
    uint8_t f32 [] = { 0x81, 0xa1, 'r', 0xca, 0x3f, 0xc0, 0x00, 0x00 };        //  1.5f
    uint8_t f64 [] = { 0x81, 0xa1, 'r', 0xcb, 0xc0, 0x04, 0, 0, 0, 0, 0, 0 };  //  -2.5
    fpx_params_t params;
    double f = 0;
    CHECK (fpx_params_decode (&params, f32, sizeof f32) == 0
        && fpx_params_get_double (&params, "r", &f) == 0 && f == 1.5, "float32 1.5: %g", f);
    CHECK (fpx_params_decode (&params, f64, sizeof f64) == 0
        && fpx_params_get_double (&params, "r", &f) == 0 && f == -2.5, "float64 -2.5: %g", f);
}

//  Every proper prefix of a valid map fails cleanly; the whole succeeds.
static void
test_params_truncations (void *arg)
{
    (void) arg;
    fpx_mp_t mp;
    s_pack_valid (&mp);
    size_t size = mp.buf.size;
    int bad = 0;
    for (size_t cut = 1; cut < size; cut++) {
        fpx_params_t params;
        int rc = s_decode_exact (&params, mp.buf.data, cut);
        if (rc != FPX_EPROTO) {
            if (bad++ < 3)
                FAIL ("prefix of %zu/%zu bytes: rc %d, expected FPX_EPROTO", cut, size, rc);
        }
    }
    CHECK (bad == 0, "%d prefixes were not refused", bad);
    fpx_params_t params;
    CHECK_EQ (s_decode_exact (&params, mp.buf.data, size), 0);
    //  One byte more is trailing garbage.
    uint8_t *longer = malloc (size + 1);
    memcpy (longer, mp.buf.data, size);
    longer [size] = 0xc0;
    CHECK_EQ (fpx_params_decode (&params, longer, size + 1), FPX_EPROTO);
    free (longer);
    fpx_mp_free (&mp);
}

typedef struct { const char *what; const uint8_t *bytes; size_t size; } s_seed_t;

static void
test_params_hostile_corpus (void *arg)
{
    (void) arg;
    //  Hand-made frames, each claiming more than it holds or breaking a
    //  rule of the frame.
    static const uint8_t str32_4g [] = { 0x81, 0xa4, 'n', 'a', 'm', 'e', 0xdb, 0xff, 0xff, 0xff, 0xff, 'a', 'b' };
    static const uint8_t str16_big [] = { 0x81, 0xa1, 'x', 0xda, 0xff, 0xff, 'a' };
    static const uint8_t str8_short [] = { 0x81, 0xa1, 'x', 0xd9, 200, 'a', 'b', 'c', 'd', 'e' };
    static const uint8_t fixstr_short [] = { 0x81, 0xa1, 'x', 0xbf, 'a' };
    static const uint8_t bin32_4g [] = { 0x81, 0xa1, 'x', 0xc6, 0xff, 0xff, 0xff, 0xff, 0 };
    static const uint8_t arr32_max [] = { 0x81, 0xa1, 'x', 0xdd, 0xff, 0xff, 0xff, 0xff, 1, 2, 3 };
    static const uint8_t arr16_max [] = { 0x81, 0xa1, 'x', 0xdc, 0xff, 0xff, 1 };
    static const uint8_t map32_max [] = { 0xdf, 0xff, 0xff, 0xff, 0xff, 0xa1, 'x', 1 };
    static const uint8_t map16_max [] = { 0xde, 0xff, 0xff, 0xa1, 'x', 1 };
    static const uint8_t inner_map32 [] = { 0x81, 0xa1, 'x', 0xdf, 0x7f, 0xff, 0xff, 0xff, 0xa1, 'y', 1 };
    static const uint8_t key_int [] = { 0x81, 0x01, 0x02 };
    static const uint8_t key_bin [] = { 0x81, 0xc4, 0x01, 'x', 0x02 };
    static const uint8_t key_nil [] = { 0x81, 0xc0, 0x02 };
    static const uint8_t top_array [] = { 0x91, 0x01 };
    static const uint8_t top_int [] = { 0x05 };
    static const uint8_t top_str [] = { 0xa3, 'a', 'b', 'c' };
    static const uint8_t top_nil [] = { 0xc0 };
    static const uint8_t two_maps [] = { 0x80, 0x80 };
    static const uint8_t never_used [] = { 0x81, 0xa1, 'x', 0xc1 };
    static const uint8_t ext_fix1 [] = { 0x81, 0xa1, 'x', 0xd4, 0x01, 0x00 };
    static const uint8_t ext_fix16 [] = { 0x81, 0xa1, 'x', 0xd8, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 };
    static const uint8_t ext8 [] = { 0x81, 0xa1, 'x', 0xc7, 0x01, 0x01, 0x00 };
    static const uint8_t ext32_4g [] = { 0x81, 0xa1, 'x', 0xc9, 0xff, 0xff, 0xff, 0xff, 0x01 };
    static const uint8_t int64_cut [] = { 0x81, 0xa1, 'x', 0xd3, 0x01, 0x02 };
    static const uint8_t uint32_cut [] = { 0x81, 0xa1, 'x', 0xce, 0x01 };
    static const uint8_t double_cut [] = { 0x81, 0xa1, 'x', 0xcb, 0x3f, 0xf0 };
    static const uint8_t float_cut [] = { 0x81, 0xa1, 'x', 0xca, 0x3f };
    static const uint8_t map_missing_value [] = { 0x81, 0xa1, 'x' };
    static const uint8_t map_two_declared_one [] = { 0x82, 0xa1, 'x', 0x01 };
    static const uint8_t lone_map32_hdr [] = { 0xdf, 0x00, 0x00 };
    s_seed_t seeds [] = {
        { "str32 declaring 4 GiB", str32_4g, sizeof str32_4g },
        { "str16 declaring 64 KiB", str16_big, sizeof str16_big },
        { "str8 declaring 200 bytes", str8_short, sizeof str8_short },
        { "fixstr declaring 31 bytes", fixstr_short, sizeof fixstr_short },
        { "bin32 declaring 4 GiB", bin32_4g, sizeof bin32_4g },
        { "array32 declaring 2^32-1 elements", arr32_max, sizeof arr32_max },
        { "array16 declaring 65535 elements", arr16_max, sizeof arr16_max },
        { "map32 declaring 2^32-1 entries", map32_max, sizeof map32_max },
        { "map16 declaring 65535 entries", map16_max, sizeof map16_max },
        { "inner map32 declaring 2^31 entries", inner_map32, sizeof inner_map32 },
        { "int key", key_int, sizeof key_int },
        { "bin key", key_bin, sizeof key_bin },
        { "nil key", key_nil, sizeof key_nil },
        { "top-level array", top_array, sizeof top_array },
        { "top-level int", top_int, sizeof top_int },
        { "top-level str", top_str, sizeof top_str },
        { "top-level nil", top_nil, sizeof top_nil },
        { "two maps", two_maps, sizeof two_maps },
        { "tag 0xc1", never_used, sizeof never_used },
        { "fixext1", ext_fix1, sizeof ext_fix1 },
        { "fixext16", ext_fix16, sizeof ext_fix16 },
        { "ext8", ext8, sizeof ext8 },
        { "ext32 declaring 4 GiB", ext32_4g, sizeof ext32_4g },
        { "int64 cut short", int64_cut, sizeof int64_cut },
        { "uint32 cut short", uint32_cut, sizeof uint32_cut },
        { "float64 cut short", double_cut, sizeof double_cut },
        { "float32 cut short", float_cut, sizeof float_cut },
        { "map entry without value", map_missing_value, sizeof map_missing_value },
        { "map of 2 holding 1", map_two_declared_one, sizeof map_two_declared_one },
        { "map32 header cut short", lone_map32_hdr, sizeof lone_map32_hdr },
    };
    for (size_t i = 0; i < sizeof seeds / sizeof seeds [0]; i++) {
        fpx_params_t params;
        int rc = s_decode_exact (&params, seeds [i].bytes, seeds [i].size);
        CHECK (rc == FPX_EPROTO, "%s: rc %d, expected FPX_EPROTO", seeds [i].what, rc);
    }

    //  Nesting: 100 levels fails; 7 arrays around a scalar (depth 8 with
    //  the map's values at 1) are within FPX_MP_DEPTH_MAX; 9 are not.
    for (int levels = 1; levels <= 100; levels++) {
        uint8_t frame [128];
        size_t n = 0;
        frame [n++] = 0x81;
        frame [n++] = 0xa1;
        frame [n++] = 'x';
        for (int l = 0; l < levels; l++)
            frame [n++] = 0x91;
        frame [n++] = 0x07;
        fpx_params_t params;
        int rc = s_decode_exact (&params, frame, n);
        if (levels <= 7)
            CHECK (rc == 0, "%d nested arrays: rc %d, expected 0", levels, rc);
        else
        if (levels >= 9)
            CHECK (rc == FPX_EPROTO, "%d nested arrays: rc %d, expected FPX_EPROTO", levels, rc);
    }
    //  Nested maps, 100 deep.
    {
        uint8_t frame [512];
        size_t n = 0;
        frame [n++] = 0x81;
        for (int l = 0; l < 100; l++) {
            frame [n++] = 0xa1;
            frame [n++] = 'm';
            frame [n++] = 0x81;
        }
        frame [n++] = 0xa1;
        frame [n++] = 'z';
        frame [n++] = 0x01;
        fpx_params_t params;
        CHECK_EQ (s_decode_exact (&params, frame, n), FPX_EPROTO);
    }
    //  33 and 1000 keys: more than FPX_PARAMS_MAX_KEYS.
    int key_counts [] = { 33, 1000 };
    for (int c = 0; c < 2; c++) {
        fpx_mp_t mp;
        fpx_mp_init (&mp);
        msgpack_pack_map (&mp.pk, (size_t) key_counts [c]);
        for (int k = 0; k < key_counts [c]; k++) {
            char key [16];
            snprintf (key, sizeof key, "k%d", k);
            fpx_pack_kv_int (&mp.pk, key, k);
        }
        fpx_params_t params;
        CHECK (s_decode_exact (&params, mp.buf.data, mp.buf.size) == FPX_EPROTO,
               "map of %d keys not refused", key_counts [c]);
        fpx_mp_free (&mp);
    }
    //  A well-formed frame over 64 KiB.
    {
        fpx_mp_t mp;
        fpx_mp_init (&mp);
        msgpack_pack_map (&mp.pk, 1);
        fpx_pack_str (&mp.pk, "blob");
        size_t blob = FPX_PARAMS_MAX;
        char *zeros = calloc (1, blob);
        msgpack_pack_bin (&mp.pk, blob);
        msgpack_pack_bin_body (&mp.pk, zeros, blob);
        free (zeros);
        fpx_params_t params;
        CHECK_EQ (s_decode_exact (&params, mp.buf.data, mp.buf.size), FPX_EPROTO);
        fpx_mp_free (&mp);
    }
}

//  Seeded mutations of valid frames: every result is 0 or FPX_EPROTO, and
//  a success leaves every view inside the frame.
static void
test_params_mutations (void *arg)
{
    (void) arg;
    fpx_mp_t mp;
    s_pack_valid (&mp);
    fpx_rng_t rng;
    fpx_rng_seed (&rng, 20240601);
    int iterations = fpx_test_asan () ? 20000 : 50000;
    int wrong = 0, outside = 0, accepted = 0;
    for (int it = 0; it < iterations; it++) {
        size_t size = mp.buf.size;
        uint8_t *frame = s_exact (mp.buf.data, size);
        int flips = 1 + (int) (fpx_rng_next (&rng) % 4);
        for (int f = 0; f < flips; f++) {
            size_t at = (size_t) (fpx_rng_next (&rng) % size);
            switch (fpx_rng_next (&rng) % 3) {
                case 0: frame [at] = (uint8_t) fpx_rng_next (&rng); break;
                case 1: frame [at] ^= (uint8_t) (1u << (fpx_rng_next (&rng) % 8)); break;
                default: frame [at] = (uint8_t[]) { 0xdb, 0xdd, 0xdf, 0xc6, 0xff, 0x00 } [fpx_rng_next (&rng) % 6];
            }
        }
        //  Also a random cut.
        size_t cut = (fpx_rng_next (&rng) % 4 == 0) ? 1 + (size_t) (fpx_rng_next (&rng) % size) : size;
        uint8_t *exact = s_exact (frame, cut);
        free (frame);
        fpx_params_t params;
        int rc = fpx_params_decode (&params, exact, cut);
        if (rc != 0 && rc != FPX_EPROTO)
            wrong++;
        if (rc == 0) {
            accepted++;
            if (!s_views_inside (&params, exact, cut))
                outside++;
            //  Walk every array/map value with fpx_mp_read too.
            for (int i = 0; i < params.count; i++) {
                fpx_mp_value_t *v = &params.items [i].value;
                if (v->type != FPX_MP_ARRAY)
                    continue;
                const uint8_t *needle = v->v.seq.ptr;
                for (uint32_t e = 0; e < v->v.seq.count; e++) {
                    fpx_mp_value_t elem;
                    if (fpx_mp_read (&elem, &needle, v->v.seq.end)) {
                        outside++;
                        break;
                    }
                }
            }
        }
        free (exact);
    }
    CHECK (wrong == 0, "%d mutations returned something else than 0 or FPX_EPROTO", wrong);
    CHECK (outside == 0, "%d accepted mutations had views outside the frame", outside);
    CHECK (accepted < iterations, "every mutation was accepted (%d)", accepted);
    fpx_mp_free (&mp);
}

static void
test_pack_helpers (void *arg)
{
    (void) arg;
    fpx_mp_t mp;
    fpx_mp_init (&mp);
    msgpack_pack_map (&mp.pk, 5);
    fpx_pack_kv_int (&mp.pk, "i", INT64_MIN);
    fpx_pack_kv_int (&mp.pk, "j", INT64_MAX);
    fpx_pack_kv_double (&mp.pk, "f", -0.125);
    fpx_pack_kv_bool (&mp.pk, "b", false);
    fpx_pack_kv_str (&mp.pk, "s", "");
    fpx_params_t params;
    uint8_t *copy = s_exact (mp.buf.data, mp.buf.size);
    CHECK_EQ (fpx_params_decode (&params, copy, mp.buf.size), 0);
    int64_t i = 0;
    double f = 0;
    bool b = true;
    char buf [8] = "x";
    CHECK (fpx_params_get_int (&params, "i", &i) == 0 && i == INT64_MIN, "INT64_MIN");
    CHECK (fpx_params_get_int (&params, "j", &i) == 0 && i == INT64_MAX, "INT64_MAX");
    CHECK (fpx_params_get_double (&params, "f", &f) == 0 && f == -0.125, "-0.125");
    CHECK (fpx_params_get_bool (&params, "b", &b) == 0 && !b, "false");
    CHECK (fpx_params_copy_str (&params, "s", buf, sizeof buf) == 0 && buf [0] == 0, "empty string");
    free (copy);
    fpx_mp_free (&mp);

    //  A string with an embedded NUL cannot be copied as a C string.
    uint8_t nul [] = { 0x81, 0xa1, 's', 0xa3, 'a', 0, 'b' };
    CHECK_EQ (fpx_params_decode (&params, nul, sizeof nul), 0);
    CHECK_EQ (fpx_params_copy_str (&params, "s", buf, sizeof buf), FPX_EINVAL);
}

/* ---- names, floats, tables -------------------------------------------------- */

static void
test_names (void *arg)
{
    (void) arg;
    const char *valid [] = { "a", "A", "0", "_", "abc", "my_index", "idx-1.2", "a.", "a-",
                             "Z_z.0-9", "_hidden", "9lives" };
    const char *invalid [] = { ".", "-", ".a", "-a", "a b", "a/b", "../x", "@anon", "a@b",
                               "a\\b", "a:b", "a\tb", "é", "a*", "a\n", "name\x7f", " a" };
    for (size_t i = 0; i < sizeof valid / sizeof valid [0]; i++)
        CHECK (fpx_name_is_valid (valid [i], strlen (valid [i])), "\"%s\" refused", valid [i]);
    for (size_t i = 0; i < sizeof invalid / sizeof invalid [0]; i++)
        CHECK (!fpx_name_is_valid (invalid [i], strlen (invalid [i])), "\"%s\" accepted", invalid [i]);
    CHECK (!fpx_name_is_valid ("", 0), "empty name accepted");
    CHECK (!fpx_name_is_valid ("ab\0c", 4), "name with NUL accepted");

    char name [FPX_NAME_MAX + 2];
    memset (name, 'n', sizeof name);
    char *exact = (char *) s_exact (name, FPX_NAME_MAX);
    CHECK (fpx_name_is_valid (exact, FPX_NAME_MAX), "name of %d bytes refused", FPX_NAME_MAX);
    free (exact);
    exact = (char *) s_exact (name, FPX_NAME_MAX + 1);
    CHECK (!fpx_name_is_valid (exact, FPX_NAME_MAX + 1), "name of %d bytes accepted", FPX_NAME_MAX + 1);
    free (exact);
    //  Every byte value in the second position.
    for (int c = 0; c < 256; c++) {
        char two [2] = { 'a', (char) c };
        bool expected = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
                     || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
        CHECK (fpx_name_is_valid (two, 2) == expected, "byte 0x%02x: %d", c, !expected);
    }
}

static float
s_bits (uint32_t bits)
{
    float f;
    memcpy (&f, &bits, 4);
    return f;
}

static void
test_floats_finite (void *arg)
{
    (void) arg;
    const float specials [] = { NAN, -NAN, INFINITY, -INFINITY, s_bits (0x7f800001),
                                s_bits (0x7fc00000), s_bits (0xffffffff), s_bits (0x7f800000) };
    const float fine [] = { 0.0f, -0.0f, FLT_MAX, -FLT_MAX, FLT_MIN, s_bits (1), s_bits (0x807fffff),
                            1e30f, -1e-30f, s_bits (0x7f7fffff) };
    CHECK (fpx_floats_are_finite (NULL, 0), "n = 0 is not finite");
    for (size_t n = 1; n <= 67; n += 3) {
        float *x = malloc (n * sizeof *x);
        for (size_t i = 0; i < n; i++)
            x [i] = fine [i % (sizeof fine / sizeof fine [0])];
        CHECK (fpx_floats_are_finite (x, n), "finite values of n=%zu refused", n);
        for (size_t pos = 0; pos < n; pos += (n > 8 ? n / 4 : 1)) {
            for (size_t s = 0; s < sizeof specials / sizeof specials [0]; s++) {
                float keep = x [pos];
                x [pos] = specials [s];
                CHECK (!fpx_floats_are_finite (x, n), "special %zu at %zu of %zu accepted", s, pos, n);
                x [pos] = keep;
            }
        }
        //  A NaN just past n is not looked at.
        float *y = malloc ((n + 1) * sizeof *y);
        memcpy (y, x, n * sizeof *y);
        y [n] = NAN;
        CHECK (fpx_floats_are_finite (y, n), "value past n was read");
        free (y);
        free (x);
    }
}

static void
test_tables (void *arg)
{
    (void) arg;
    const char *names [] = { NULL, "ping", "info", "create", "open", "drop", "list", "describe",
                             "train", "add", "add_with_ids", "search", "range_search", "remove_ids",
                             "reconstruct", "reconstruct_n", "reset", "set_parameters",
                             "serialize", "deserialize", "construct", "subobject", "get_attr",
                             "set_attr", "clone", "kmeans", "apply", "set_direct_map",
                             "get_id_map", "save", "download_begin", "download_chunk",
                             "upload_begin", "upload_chunk", "upload_commit", "transfer_abort",
                             "attach", "search_and_reconstruct" };
    int known = (int) (sizeof names / sizeof names [0]);
    CHECK_EQ (FPX_OP_LAST_, known);
    for (int op = 1; op < known; op++) {
        const char *name = fpx_opcode_name (op);
        CHECK (name && strcmp (name, names [op]) == 0, "opcode %d named \"%s\"", op, name ? name : "(null)");
    }
    CHECK_EQ (FPX_OP_DESERIALIZE, 19);
    CHECK_EQ (FPX_OP_DOWNLOAD_BEGIN, 30);
    CHECK_EQ (FPX_OP_TRANSFER_ABORT, 35);
    CHECK_EQ (FPX_OP_ATTACH, 36);
    CHECK_EQ (FPX_OP_SEARCH_AND_RECONSTRUCT, 37);
    int unknown [] = { 0, FPX_OP_LAST_, FPX_OP_LAST_ + 1, 255, 1000, 65535, -1 };
    for (size_t i = 0; i < sizeof unknown / sizeof unknown [0]; i++)
        CHECK (fpx_opcode_name (unknown [i]) == NULL, "opcode %d has a name", unknown [i]);

    struct { int code; const char *name; } codes [] = {
        { 0, "FPX_OK" }, { -1, "FPX_EPROTO" }, { -2, "FPX_EVERSION" }, { -3, "FPX_EAUTH" },
        { -4, "FPX_EOPCODE" }, { -5, "FPX_EINVAL" }, { -6, "FPX_ENOTFOUND" }, { -7, "FPX_EEXIST" },
        { -8, "FPX_ETOOBIG" }, { -9, "FPX_EFAISS" }, { -10, "FPX_EBUSY" }, { -11, "FPX_ENOMEM" },
        { -12, "FPX_ETIMEDOUT" }, { -13, "FPX_ECONNECT" }, { -14, "FPX_ESHUTDOWN" },
        { -15, "FPX_EIO" }, { -16, "FPX_EINTERNAL" }, { -17, "FPX_EDAMAGED" },
        { -18, "FPX_EQUOTA" },
        { -19, "FPX_EPERM" }, { -20, "FPX_ERECOVERING" },
    };
    for (size_t i = 0; i < sizeof codes / sizeof codes [0]; i++) {
        CHECK_STR (fpx_error_name (codes [i].code), codes [i].name);
        const char *text = fpx_strerror (codes [i].code);
        CHECK (text && *text && strcmp (text, "unknown error") != 0, "no message for %d", codes [i].code);
    }
    CHECK_STR (fpx_error_name (FPX_ERRNO_LAST_), "FPX_E?");
    CHECK_STR (fpx_error_name (1), "FPX_E?");
    CHECK_STR (fpx_strerror (FPX_ERRNO_LAST_), "unknown error");
    CHECK_STR (fpx_strerror (12345), "unknown error");
    CHECK_STR (fpx_strerror (0), "success");
}


/* ---- the framework's own comparison helpers ------------------------------------ */

static void
test_framework_compare (void *arg)
{
    (void) arg;
    char why [256];
    CHECK_TRUE (fpx_float_close (1.0f, 1.000005f));
    CHECK_TRUE (!fpx_float_close (1.0f, 1.00002f));
    CHECK_TRUE (fpx_float_close (1e6f, 1e6f + 8.0f));
    CHECK_TRUE (!fpx_float_close (1e6f, 1e6f + 64.0f));
    CHECK_TRUE (fpx_float_close (0.0f, 5e-6f));
    CHECK_TRUE (fpx_float_close (INFINITY, INFINITY));
    CHECK_TRUE (!fpx_float_close (INFINITY, FLT_MAX));
    CHECK_TRUE (!fpx_float_close (NAN, NAN));

    //  Reference: one query, k = 3, two extra columns; ranks 2 and 3 tie.
    float dr [] = { 1, 2, 3, 3, 4 };
    int64_t ir [] = { 10, 20, 30, 31, 40 };
    fpx_knn_t ref = { 1, 3, 5, dr, ir };
    struct { float d [3]; int64_t i [3]; bool equal; const char *what; } cases [] = {
        { { 1, 2, 3 }, { 10, 20, 30 }, true, "identical" },
        { { 1, 2, 3 }, { 10, 20, 31 }, true, "other member of the boundary tie" },
        { { 1, 2, 3 }, { 10, 20, 40 }, false, "label outside the boundary tie" },
        { { 1, 2, 3 }, { 20, 10, 30 }, false, "swapped labels of distinct distances" },
        { { 1, 2, 3.001f }, { 10, 20, 30 }, false, "distance off by 3e-4" },
        { { 1, 2, 3 }, { 10, 10, 30 }, false, "duplicate label" },
        { { 1, 2, 3 }, { 10, 21, 30 }, false, "wrong label" },
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases [0]; c++) {
        fpx_knn_t got = { 1, 3, 3, cases [c].d, cases [c].i };
        CHECK (fpx_knn_equal (&ref, &got, why, sizeof why) == cases [c].equal,
               "knn case \"%s\" judged wrongly (%s)", cases [c].what, why);
    }
    //  A tie inside the answer may come in any order.
    float dt [] = { 1, 1, 2 };
    int64_t it [] = { 5, 6, 7 }, it2 [] = { 6, 5, 7 }, it3 [] = { 6, 7, 5 };
    fpx_knn_t tref = { 1, 3, 3, dt, it };
    fpx_knn_t tgot = { 1, 3, 3, dt, it2 };
    CHECK_TRUE (fpx_knn_equal (&tref, &tgot, why, sizeof why));
    fpx_knn_t tbad = { 1, 3, 3, dt, it3 };
    CHECK_TRUE (!fpx_knn_equal (&tref, &tbad, why, sizeof why));

    //  Range results compare as sets; entries at the radius may differ.
    uint64_t rl [] = { 0, 2 };
    float rd [] = { 0.5f, 0.9f };
    int64_t ri [] = { 1, 2 };
    fpx_range_t rref = { 1, rl, rd, ri };
    uint64_t gl [] = { 0, 2 };
    float gd [] = { 0.9f, 0.5f };
    int64_t gi [] = { 2, 1 };
    fpx_range_result_t rgot = { 1, gl, gd, gi };
    CHECK_TRUE (fpx_range_equal (&rref, &rgot, 1.0f, why, sizeof why));
    uint64_t gl1 [] = { 0, 1 };
    fpx_range_result_t rmissing = { 1, gl1, gd + 1, gi + 1 };
    CHECK_TRUE (!fpx_range_equal (&rref, &rmissing, 1.0f, why, sizeof why));
    CHECK_TRUE (fpx_range_equal (&rref, &rmissing, 0.9f, why, sizeof why));  //  0.9 at the radius
    float gd2 [] = { 0.9f, 0.6f };
    fpx_range_result_t rwrong = { 1, gl, gd2, gi };
    CHECK_TRUE (!fpx_range_equal (&rref, &rwrong, 1.0f, why, sizeof why));
}

int
main (void)
{
    fpx_test_run ("protocol.header_round_trip", test_header_round_trip, NULL);
    fpx_test_run ("protocol.header_malformed", test_header_malformed, NULL);
    fpx_test_run ("protocol.params_valid", test_params_valid, NULL);
    fpx_test_run ("protocol.params_int_encodings", test_params_int_encodings, NULL);
    fpx_test_run ("protocol.params_truncations", test_params_truncations, NULL);
    fpx_test_run ("protocol.params_hostile_corpus", test_params_hostile_corpus, NULL);
    fpx_test_run ("protocol.params_mutations", test_params_mutations, NULL);
    fpx_test_run ("protocol.pack_helpers", test_pack_helpers, NULL);
    fpx_test_run ("protocol.names", test_names, NULL);
    fpx_test_run ("protocol.floats_finite", test_floats_finite, NULL);
    fpx_test_run ("protocol.tables", test_tables, NULL);
    fpx_test_run ("framework.compare", test_framework_compare, NULL);
    return fpx_test_finish ();
}
