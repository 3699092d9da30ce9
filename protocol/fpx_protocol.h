/*  fpx_protocol.h — the faissproxy wire format, defined once.

    Compiled by both faissproxyd and libfaissproxy; docs/PROTOCOL.md is the
    prose version of this file and must stay true to it.

    A request is one ZMQ multipart message sent by a DEALER to the server's
    ROUTER:
        frame 0   header, FPX_REQUEST_HEADER_SIZE bytes, little-endian
        frame 1   parameters, a msgpack map (may be empty: zero bytes)
        frame 2…  raw little-endian arrays (float32, int64, uint8)
    A reply mirrors it: a FPX_REPLY_HEADER_SIZE header whose status is 0 or a
    negative FPX_E… code, a msgpack map (on error: {"error": text}), then
    arrays.

    This file must not allocate, log, or know about sockets.
*/
#ifndef FPX_PROTOCOL_H_INCLUDED
#define FPX_PROTOCOL_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fpx_errors.h"

#define FPX_MAGIC            0x50585046u  /* "FPXP" read as little-endian u32 */
#define FPX_PROTOCOL_VERSION 1

/*  Header layout. The first 24 bytes (magic … request id) keep this layout in
    every protocol version, so that a peer of another version can always be
    told which version the other side speaks.
        0   u32  magic
        4   u16  protocol version
        6   u16  opcode
        8   u32  flags (no flag defined yet: must be 0)
        12  i32  status (0 in requests; 0 or FPX_E… in replies)
        16  u64  request id (chosen by the client, echoed in the reply)
        24  u8[64] API key, NUL-padded (requests only)                   */
#define FPX_REPLY_HEADER_SIZE   24
#define FPX_API_KEY_MAX         64
#define FPX_REQUEST_HEADER_SIZE (FPX_REPLY_HEADER_SIZE + FPX_API_KEY_MAX)

/*  Limits every peer enforces before it allocates anything.             */
#define FPX_PARAMS_MAX          (64 * 1024) /* bytes in the msgpack frame   */
#define FPX_PARAMS_MAX_KEYS     32          /* entries in the params map    */
#define FPX_MAX_FRAMES          8           /* frames in one message        */
#define FPX_NAME_MAX            128         /* bytes in an index name       */
#define FPX_FACTORY_MAX         256         /* bytes in a factory string    */
#define FPX_SETPARAM_MAX        1024        /* bytes in a set_parameters string */
#define FPX_DIM_MAX             65536       /* vector dimension             */
#define FPX_K_MAX               65536       /* neighbours per query         */
#define FPX_ERROR_TEXT_MAX      2048        /* bytes of error text in a reply */
#define FPX_CONSTRUCT_ARGS_MAX  16          /* numeric arguments of construct */
#define FPX_CONSTRUCT_REFS_MAX  4           /* object references of construct */
#define FPX_TYPE_NAME_MAX       64          /* bytes in a class or attribute name */
#define FPX_SELECTOR_NODES_MAX  16          /* nodes of a search-time id selector */

/*  Chunked transfers of serialized indexes (download_*, upload_*): the
    server chooses the chunk size, min(message limit / 2, this), and says
    it in every begin reply; a client sends an index in one deserialize
    only up to FPX_TRANSFER_INLINE_MAX bytes (within any server's limit).  */
#define FPX_TRANSFER_CHUNK_MAX  (16 << 20)
#define FPX_TRANSFER_INLINE_MAX (512 << 10)
#define FPX_TRANSFERS_PER_CONN  4           /* open transfers per connection */
#define FPX_TRANSFER_IDLE_S     600         /* an untouched transfer is freed */

/*  Opcodes: X(NAME, code, "wire name"). Codes are stable; append only.   */
#define FPX_OPCODES(X)                                                       \
    X (PING,            1, "ping")                                           \
    X (INFO,            2, "info")                                           \
    X (CREATE,          3, "create")                                         \
    X (OPEN,            4, "open")                                           \
    X (DROP,            5, "drop")                                           \
    X (LIST,            6, "list")                                           \
    X (DESCRIBE,        7, "describe")                                       \
    X (TRAIN,           8, "train")                                          \
    X (ADD,             9, "add")                                            \
    X (ADD_WITH_IDS,   10, "add_with_ids")                                   \
    X (SEARCH,         11, "search")                                         \
    X (RANGE_SEARCH,   12, "range_search")                                   \
    X (REMOVE_IDS,     13, "remove_ids")                                     \
    X (RECONSTRUCT,    14, "reconstruct")                                    \
    X (RECONSTRUCT_N,  15, "reconstruct_n")                                  \
    X (RESET,          16, "reset")                                          \
    X (SET_PARAMETERS, 17, "set_parameters")                                 \
    X (SERIALIZE,      18, "serialize")                                      \
    X (DESERIALIZE,    19, "deserialize")                                    \
    X (CONSTRUCT,      20, "construct")                                      \
    X (SUBOBJECT,      21, "subobject")                                      \
    X (GET_ATTR,       22, "get_attr")                                       \
    X (SET_ATTR,       23, "set_attr")                                       \
    X (CLONE,          24, "clone")                                          \
    X (KMEANS,         25, "kmeans")                                         \
    X (APPLY,          26, "apply")                                          \
    X (SET_DIRECT_MAP, 27, "set_direct_map")                                 \
    X (GET_ID_MAP,     28, "get_id_map")                                     \
    X (SAVE,           29, "save")                                          \
    X (DOWNLOAD_BEGIN, 30, "download_begin")                                \
    X (DOWNLOAD_CHUNK, 31, "download_chunk")                                \
    X (UPLOAD_BEGIN,   32, "upload_begin")                                  \
    X (UPLOAD_CHUNK,   33, "upload_chunk")                                  \
    X (UPLOAD_COMMIT,  34, "upload_commit")                                 \
    X (TRANSFER_ABORT, 35, "transfer_abort")                                \
    X (ATTACH,         36, "attach")                                        \
    X (SEARCH_AND_RECONSTRUCT, 37, "search_and_reconstruct")

typedef enum {
#define FPX_OPCODES_ENUM_(name, code, text) FPX_OP_##name = (code),
    FPX_OPCODES (FPX_OPCODES_ENUM_)
#undef FPX_OPCODES_ENUM_
    FPX_OP_LAST_
} fpx_opcode_t;

/*  FAISS metric codes, as FAISS numbers them. L2 and inner product work
    with every index; the others (FAISS's "extra metrics") only with the
    indexes that compute distances through IndexFlat: IndexFlat, HNSW over
    a flat storage, and IDMap / PreTransform around them
    (fpx_shim_metric_unsupported). METRIC_Lp reads metric_arg (p).      */
#define FPX_METRIC_INNER_PRODUCT 0
#define FPX_METRIC_L2            1
#define FPX_METRIC_L1            2
#define FPX_METRIC_LINF          3
#define FPX_METRIC_LP            4
#define FPX_METRIC_CANBERRA      20
#define FPX_METRIC_BRAYCURTIS    21
#define FPX_METRIC_JENSENSHANNON 22
#define FPX_METRIC_MAX           FPX_METRIC_JENSENSHANNON

/*  True if metric is one of the FPX_METRIC_* codes above (inline: the
    C++ server files use it too).                                        */
static inline bool
fpx_metric_is_valid (int64_t metric)
{
    return (metric >= FPX_METRIC_INNER_PRODUCT && metric <= FPX_METRIC_LP)
        || (metric >= FPX_METRIC_CANBERRA && metric <= FPX_METRIC_JENSENSHANNON);
}

typedef struct {
    uint16_t version;
    uint16_t opcode;
    uint32_t flags;
    int32_t  status;
    uint64_t request_id;
    char     api_key [FPX_API_KEY_MAX + 1];  /* NUL-terminated copy     */
} fpx_header_t;

/*  Encodes a request header into out[FPX_REQUEST_HEADER_SIZE]. The key is
    truncated to FPX_API_KEY_MAX bytes (callers check its length first).  */
void fpx_header_encode_request (const fpx_header_t *header, uint8_t *out);

/*  Encodes a reply header into out[FPX_REPLY_HEADER_SIZE].              */
void fpx_header_encode_reply (const fpx_header_t *header, uint8_t *out);

/*  Decodes a request header from a frame of `size` bytes. Returns 0, or
    FPX_EPROTO (bad size or magic, non-zero flags) or FPX_EVERSION (another
    protocol version; header->version and request_id are still filled in
    so that the error can be answered). Never reads past size.           */
int fpx_header_decode_request (fpx_header_t *header, const void *data, size_t size);

/*  Decodes a reply header. Same contract as above.                      */
int fpx_header_decode_reply (fpx_header_t *header, const void *data, size_t size);

/*  Name of an opcode ("search"), or NULL if unknown.                    */
const char *fpx_opcode_name (int opcode);

/*  Readable message / symbolic name ("FPX_EINVAL") of an error code;
    "unknown error" / "FPX_E?" for codes outside the list.               */
const char *fpx_strerror (int code);
const char *fpx_error_name (int code);

/*  True if name is a valid index name: 1..FPX_NAME_MAX bytes of
    [A-Za-z0-9_.-], not starting with '.' or '-'. Names the server chooses
    for anonymous indexes start with '@' and are not valid user names.   */
bool fpx_name_is_valid (const char *name, size_t len);

/*  True if every one of the n floats is finite.                         */
bool fpx_floats_are_finite (const float *x, size_t n);

/*  Largest squared L2 norm of a vector the server accepts: FLT_MAX / 4,
    so that every squared distance ‖x−y‖² ≤ (‖x‖+‖y‖)², every inner
    product and FAISS's ‖x‖²+‖y‖²−2⟨x,y⟩ stay finite in float32.         */
#define FPX_VECTOR_NORM2_MAX    8.507059173023462e37

/*  Checks n vectors of dimension d: every value finite and every squared
    norm (summed in double) at most FPX_VECTOR_NORM2_MAX. Returns 0,
    FPX_VECTORS_NOT_FINITE or FPX_VECTORS_TOO_LARGE with the first bad
    row in *row_p and, for too large, its squared norm in *norm2_p. One
    pass at memory speed for ordinary data (no |value| ≥ 2^32); only
    blocks holding such a value are summed exactly.                     */
#define FPX_VECTORS_NOT_FINITE  1
#define FPX_VECTORS_TOO_LARGE   2
int fpx_vectors_check (const float *x, size_t n, size_t d, size_t *row_p, double *norm2_p);

/*  Copies len bytes of in to out (out_size ≥ 1, always terminated) so
    that the result is printable: printable ASCII and valid UTF-8
    sequences are kept, every other byte (control bytes, DEL, invalid
    or truncated UTF-8) becomes the four characters \xNN. Stops before a
    unit that would not fit. Returns the length written.                */
size_t fpx_text_sanitize (char *out, size_t out_size, const char *in, size_t len);

#endif
