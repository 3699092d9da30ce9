/*  fuzz_decoder.c — the request decoding faissproxyd does on network
    bytes, without FAISS or sockets: the header (fpx_header_decode_request,
    as the broker and the workers call it), the frame count and size
    checks, the parameters frame (fpx_params_decode and every getter the
    opcode handlers call, on every key they read, nested arrays and maps
    walked with fpx_mp_read), names, strings copied into the handlers'
    fixed buffers, and array frames sized and checked as vectors and ids.

    Invariants (each aborts when broken): every view the reader returns
    lies inside the frame it came from; a declared count never exceeds
    the bytes present; a value the decoder accepted reads again without
    error; getters agree with get_value; a copied string is NUL-terminated
    and within its buffer; header encode/decode round-trips.             */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fpx_params.h"
#include "fpx_protocol.h"
#include "fuzz_common.h"

//  Every key an opcode handler reads (server/ops.c, ops_objects.c).
static const char *s_keys [] = {
    "name", "d", "factory", "metric", "memory", "k", "nprobe", "efSearch", "radius",
    "lo", "hi", "key", "i0", "n", "params", "type", "args", "refs", "path", "attr",
    "value", "niter", "nredo", "seed", "min_points_per_centroid",
    "max_points_per_centroid", "spherical", "int_centroids", "update_index", "reverse",
};

static void
s_check_view (const void *ptr, size_t len, const uint8_t *lo, const uint8_t *hi)
{
    const uint8_t *p = ptr;
    FPX_FUZZ_ASSERT (p >= lo && p <= hi);
    FPX_FUZZ_ASSERT (len <= (size_t) (hi - p));
}

//  Walks a value the decoder accepted, as the handlers of args / refs do.
static void
s_walk (const fpx_mp_value_t *value, const uint8_t *lo, const uint8_t *hi, int depth)
{
    FPX_FUZZ_ASSERT (depth <= FPX_MP_DEPTH_MAX + 1);
    switch (value->type) {
        case FPX_MP_STR: case FPX_MP_BIN:
            s_check_view (value->v.str.ptr, value->v.str.len, lo, hi);
            if (value->type == FPX_MP_STR)
                (void) fpx_name_is_valid (value->v.str.ptr, value->v.str.len);
            break;
        case FPX_MP_ARRAY: case FPX_MP_MAP: {
            const uint8_t *needle = value->v.seq.ptr;
            const uint8_t *end = value->v.seq.end;
            s_check_view (needle, (size_t) (end - needle), lo, hi);
            uint64_t elements = (uint64_t) value->v.seq.count * (value->type == FPX_MP_MAP ? 2 : 1);
            FPX_FUZZ_ASSERT (elements <= (uint64_t) (end - needle));
            for (uint64_t i = 0; i < elements; i++) {
                const uint8_t *before = needle;
                fpx_mp_value_t element;
                int rc = fpx_mp_read (&element, &needle, end);
                FPX_FUZZ_ASSERT (rc == 0);
                FPX_FUZZ_ASSERT (needle > before && needle <= end);
                s_walk (&element, lo, hi, depth + 1);
            }
            FPX_FUZZ_ASSERT (needle == end);
            //  Reading past the end of the sequence must fail, not read on.
            fpx_mp_value_t past;
            const uint8_t *stop = end;
            FPX_FUZZ_ASSERT (fpx_mp_read (&past, &stop, end) == FPX_EPROTO && stop == end);
            break;
        }
        case FPX_MP_FLOAT:
            (void) isfinite (value->v.f);
            break;
        default:
            break;
    }
}

static void
s_check_params (const uint8_t *data, size_t size)
{
    fpx_params_t params;
    int rc = fpx_params_decode (&params, data, size);
    FPX_FUZZ_ASSERT (rc == 0 || rc == FPX_EPROTO);
    FPX_FUZZ_ASSERT (params.count >= 0 && params.count <= FPX_PARAMS_MAX_KEYS);
    if (size > FPX_PARAMS_MAX)
        FPX_FUZZ_ASSERT (rc == FPX_EPROTO);
    if (rc)
        return;
    const uint8_t *hi = data + size;
    for (int i = 0; i < params.count; i++) {
        s_check_view (params.items [i].key, params.items [i].key_len, data, hi);
        s_walk (&params.items [i].value, data, hi, 1);
    }
    //  The handlers' reads: each getter on each key, with the buffers
    //  the handlers copy into.
    static const size_t copy_sizes [] = {
        FPX_NAME_MAX + 1, FPX_FACTORY_MAX, FPX_SETPARAM_MAX, FPX_TYPE_NAME_MAX + 1, 1, 2
    };
    for (size_t k = 0; k < sizeof s_keys / sizeof s_keys [0]; k++) {
        const char *key = s_keys [k];
        fpx_mp_value_t value;
        int found = fpx_params_get_value (&params, key, &value);
        FPX_FUZZ_ASSERT (found == 0 || found == 1);
        int64_t i = 0x5a5a;
        double f = 0.5;
        bool b = true;
        const char *ptr = NULL;
        size_t len = 0;
        int rc_int = fpx_params_get_int (&params, key, &i);
        int rc_double = fpx_params_get_double (&params, key, &f);
        int rc_bool = fpx_params_get_bool (&params, key, &b);
        int rc_str = fpx_params_get_str (&params, key, &ptr, &len);
        if (found == 1) {
            FPX_FUZZ_ASSERT (rc_int == 1 && rc_double == 1 && rc_bool == 1 && rc_str == 1);
            FPX_FUZZ_ASSERT (i == 0x5a5a && f == 0.5 && b && ptr == NULL);
            continue;
        }
        s_walk (&value, data, hi, 1);
        FPX_FUZZ_ASSERT ((rc_int == 0) == (value.type == FPX_MP_INT && !value.is_unsigned));
        FPX_FUZZ_ASSERT (rc_int == 0 || rc_int == FPX_EINVAL);
        if (rc_int == 0)
            FPX_FUZZ_ASSERT (i == value.v.i);
        FPX_FUZZ_ASSERT (rc_double == 0 || rc_double == FPX_EINVAL);
        if (rc_double == 0 && value.type == FPX_MP_INT)
            FPX_FUZZ_ASSERT (f == (double) value.v.i);
        FPX_FUZZ_ASSERT ((rc_bool == 0) == (value.type == FPX_MP_BOOL));
        FPX_FUZZ_ASSERT ((rc_str == 0) == (value.type == FPX_MP_STR));
        if (rc_str == 0) {
            s_check_view (ptr, len, data, hi);
            bool valid = fpx_name_is_valid (ptr, len);
            if (valid)
                FPX_FUZZ_ASSERT (len >= 1 && len <= FPX_NAME_MAX && ptr [0] != '.' && ptr [0] != '-'
                                 && memchr (ptr, 0, len) == NULL);
            for (size_t c = 0; c < sizeof copy_sizes / sizeof copy_sizes [0]; c++) {
                char buf [FPX_SETPARAM_MAX + 8];
                memset (buf, 0x7e, sizeof buf);
                int rc_copy = fpx_params_copy_str (&params, key, buf, copy_sizes [c]);
                FPX_FUZZ_ASSERT (rc_copy == 0 || rc_copy == FPX_EINVAL);
                if (rc_copy == 0) {
                    FPX_FUZZ_ASSERT (len < copy_sizes [c] && buf [len] == 0 && strlen (buf) == len);
                    FPX_FUZZ_ASSERT (memcmp (buf, ptr, len) == 0);
                }
                FPX_FUZZ_ASSERT (buf [copy_sizes [c]] == 0x7e);     //  nothing written past
            }
        }
    }
}

//  Array frames as the handlers size them: n·d floats, n ids.
static void
s_check_arrays (const fpx_fuzz_frames_t *frames, const uint8_t *params, size_t params_size)
{
    fpx_params_t p;
    int64_t d = 8;
    if (fpx_params_decode (&p, params, params_size) == 0)
        fpx_params_get_int (&p, "d", &d);
    if (d < 1 || d > FPX_DIM_MAX)
        d = 8;
    for (int f = 2; f < frames->count; f++) {
        size_t size = frames->size [f];
        size_t row = (size_t) d * sizeof (float);
        if (size % row == 0 && size) {
            //  The server copies a misaligned frame before reading floats.
            size_t n = size / sizeof (float);
            float *aligned = malloc (size);
            FPX_FUZZ_ASSERT (aligned != NULL);
            memcpy (aligned, frames->data [f], size);
            bool finite = fpx_floats_are_finite (aligned, n);
            bool slow = true;
            for (size_t i = 0; i < n; i++)
                slow = slow && isfinite (aligned [i]);
            FPX_FUZZ_ASSERT (finite == slow);
            free (aligned);
        }
        if (size % sizeof (int64_t) == 0 && size) {
            size_t n = size / sizeof (int64_t);
            int64_t sum = 0;
            for (size_t i = 0; i < n; i++) {
                int64_t id;
                memcpy (&id, frames->data [f] + i * sizeof id, sizeof id);
                sum ^= id;
            }
            (void) sum;
        }
    }
}

const char fpx_fuzz_target_name [] = "decoder";
const long fpx_fuzz_replay_mutations = 300000;
const long fpx_fuzz_replay_seed = 20261205;

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
    (void) argc, (void) argv;
    return 0;
}

void
fpx_fuzz_target_cleanup (void)
{
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    fpx_fuzz_frames_t frames;
    fpx_fuzz_split (&frames, data, size);
    if (frames.count == 0)
        return 0;

    //  Header, as the broker decodes it.
    fpx_header_t header;
    memset (&header, 0xa5, sizeof header);
    int rc = fpx_header_decode_request (&header, frames.data [0], frames.size [0]);
    FPX_FUZZ_ASSERT (rc == 0 || rc == FPX_EPROTO || rc == FPX_EVERSION);
    if (rc == 0) {
        FPX_FUZZ_ASSERT (frames.size [0] == FPX_REQUEST_HEADER_SIZE);
        FPX_FUZZ_ASSERT (header.version == FPX_PROTOCOL_VERSION && header.flags == 0);
        FPX_FUZZ_ASSERT (header.api_key [FPX_API_KEY_MAX] == 0);
        FPX_FUZZ_ASSERT (strlen (header.api_key) <= FPX_API_KEY_MAX);
        //  Round trip: what the server echoes is what it read.
        uint8_t again [FPX_REQUEST_HEADER_SIZE];
        fpx_header_encode_request (&header, again);
        fpx_header_t second;
        FPX_FUZZ_ASSERT (fpx_header_decode_request (&second, again, sizeof again) == 0);
        FPX_FUZZ_ASSERT (second.opcode == header.opcode && second.request_id == header.request_id
                         && second.status == header.status
                         && strcmp (second.api_key, header.api_key) == 0);
        uint8_t reply [FPX_REPLY_HEADER_SIZE];
        fpx_header_encode_reply (&header, reply);
        FPX_FUZZ_ASSERT (fpx_header_decode_reply (&second, reply, sizeof reply) == 0);
        FPX_FUZZ_ASSERT (second.request_id == header.request_id && second.opcode == header.opcode);
        const char *name = fpx_opcode_name (header.opcode);
        FPX_FUZZ_ASSERT (name == NULL || (header.opcode >= 1 && header.opcode < FPX_OP_LAST_));
    }
    else if (rc == FPX_EVERSION)
        FPX_FUZZ_ASSERT (header.version != FPX_PROTOCOL_VERSION);
    FPX_FUZZ_ASSERT (fpx_strerror (header.status) != NULL && fpx_error_name (header.status) != NULL);
    //  The same bytes as a reply header (what a client decodes).
    fpx_header_t as_reply;
    rc = fpx_header_decode_reply (&as_reply, frames.data [0], frames.size [0]);
    FPX_FUZZ_ASSERT (rc == 0 || rc == FPX_EPROTO || rc == FPX_EVERSION);

    //  Every frame as a parameters frame: the server decodes frame 1, a
    //  client decodes result maps with a larger bound.
    for (int f = 1; f < frames.count; f++)
        s_check_params (frames.data [f], frames.size [f]);
    if (frames.count >= 2) {
        fpx_params_t result;
        rc = fpx_params_decode_bounded (&result, frames.data [1], frames.size [1], FPX_RESULT_MAX);
        FPX_FUZZ_ASSERT (rc == 0 || rc == FPX_EPROTO);
        s_check_arrays (&frames, frames.data [1], frames.size [1]);
    }
    //  Names: the whole frame as a candidate.
    for (int f = 0; f < frames.count; f++)
        (void) fpx_name_is_valid ((const char *) frames.data [f], frames.size [f]);
    return 0;
}
