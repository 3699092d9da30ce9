/*  fpx_params.h — the msgpack parameter frame: a bounded reader and
    packing helpers.

    The reader never allocates: it walks the buffer with a needle that is
    checked against the ceiling before every read (malformed input is
    FPX_EPROTO, whatever length or count it declares), and it keeps views
    into the caller's buffer, which must outlive the fpx_params_t.
    Accepted shape: a map (at most FPX_PARAMS_MAX_KEYS entries) from string
    keys to scalars (nil, bool, int, float, str, bin) or arrays; nesting is
    bounded at FPX_MP_DEPTH_MAX levels. An empty frame is an empty map.

    Writing uses msgpack-c's packer into a msgpack_sbuffer.
*/
#ifndef FPX_PARAMS_H_INCLUDED
#define FPX_PARAMS_H_INCLUDED

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fpx_protocol.h"

#define FPX_MP_DEPTH_MAX 8

/*  A reply's result map may be larger than a request's parameters (the
    names of a tenant's indexes): clients accept up to this many bytes.  */
#define FPX_RESULT_MAX   (16 * 1024 * 1024)

typedef enum {
    FPX_MP_NIL, FPX_MP_BOOL, FPX_MP_INT, FPX_MP_FLOAT,
    FPX_MP_STR, FPX_MP_BIN, FPX_MP_ARRAY, FPX_MP_MAP
} fpx_mp_type_t;

typedef struct {
    fpx_mp_type_t type;
    bool is_unsigned;          //  FPX_MP_INT above INT64_MAX: read u, not i
    union {
        bool b;
        int64_t i;
        uint64_t u;
        double f;
        struct { const char *ptr; uint32_t len; } str;   //  STR and BIN
        struct { const uint8_t *ptr; const uint8_t *end; uint32_t count; } seq;
    } v;                       //  seq: ARRAY and MAP, elements in [ptr, end)
} fpx_mp_value_t;

typedef struct {
    int count;
    struct {
        const char *key;
        uint32_t key_len;
        fpx_mp_value_t value;
    } items [FPX_PARAMS_MAX_KEYS];
} fpx_params_t;

/*  Decodes a parameter frame of at most FPX_PARAMS_MAX bytes (requests) /
    max_size bytes. Returns 0 or FPX_EPROTO.                             */
int fpx_params_decode (fpx_params_t *self, const void *data, size_t size);
int fpx_params_decode_bounded (fpx_params_t *self, const void *data, size_t size,
                               size_t max_size);

/*  Reads one value at *needle (< ceiling) and advances the needle past it.
    Returns 0 or FPX_EPROTO. Used to walk the elements of an ARRAY.      */
int fpx_mp_read (fpx_mp_value_t *value, const uint8_t **needle, const uint8_t *ceiling);

/*  Getters. Each returns 0 when found and of the right type, 1 when the key
    is absent (out untouched), FPX_EINVAL when present with another type or
    out of range.                                                        */
int fpx_params_get_int (const fpx_params_t *self, const char *key, int64_t *out);
int fpx_params_get_double (const fpx_params_t *self, const char *key, double *out);
int fpx_params_get_bool (const fpx_params_t *self, const char *key, bool *out);
/*  String views are not NUL-terminated.                                 */
int fpx_params_get_str (const fpx_params_t *self, const char *key,
                        const char **ptr, size_t *len);
int fpx_params_get_value (const fpx_params_t *self, const char *key,
                          fpx_mp_value_t *out);

/*  Copies a string parameter into buf (NUL-terminated). FPX_EINVAL if it
    does not fit in size-1 bytes or contains a NUL.                      */
int fpx_params_copy_str (const fpx_params_t *self, const char *key,
                         char *buf, size_t size);

/*  Packing helpers: key/value pairs into a map started with
    msgpack_pack_map (pk, count).                                        */
void fpx_pack_str (msgpack_packer *pk, const char *str);
void fpx_pack_kv_int (msgpack_packer *pk, const char *key, int64_t value);
void fpx_pack_kv_double (msgpack_packer *pk, const char *key, double value);
void fpx_pack_kv_bool (msgpack_packer *pk, const char *key, bool value);
void fpx_pack_kv_str (msgpack_packer *pk, const char *key, const char *value);
/*  A number: an int when it is a whole number an int64 holds (FAISS's
    constructors and attributes take mostly ints), else a float.         */
void fpx_pack_number (msgpack_packer *pk, double value);
void fpx_pack_kv_number (msgpack_packer *pk, const char *key, double value);

#endif
