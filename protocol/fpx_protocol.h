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

#include "fpx_constants.h"   /* limits and metric codes, public */
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
#define FPX_REQUEST_HEADER_SIZE (FPX_REPLY_HEADER_SIZE + FPX_API_KEY_MAX)

/*  Limits every peer enforces before it allocates anything; those a
    client program needs (names, dimensions, k, transfers…) are in
    fpx_constants.h.                                                     */
#define FPX_PARAMS_MAX_KEYS     32          /* entries in the params map    */
#define FPX_MAX_FRAMES          8           /* frames in one message        */
#define FPX_KMEANS_STATS        5           /* doubles per k-means iteration in its stats frame */

/*  Opcodes, defined once: every table about an opcode is expanded from
    this list (docs/ARCHITECTURE.md, "The protocol definition"):
        X (NAME, code, wire_name, role, lock, flags, "summary")
    code       stable; append only
    wire_name  the name in logs, metrics, errors and docs (#wire_name);
               the server's handler is fpx_handle_<wire_name>
    role       least key role that may send it: READ, WRITE (FPX_ROLE_…)
    lock       what it holds while FAISS runs (FPX_LOCK_…): NONE, READ
               (the index's lock shared), WRITE (exclusive), SERVER (the
               name lock of storage: creates, drops and snapshots files)
    flags      FPX_OPF_… below, or 0
    "summary"  one line for docs/PROTOCOL.md's table
    docs/PROTOCOL.md's opcode and role tables are generated from it
    (make check fails when they differ); so are the TypeScript
    constants (clients/typescript/scripts/gen-protocol.mjs).             */
#define FPX_OPF_RETRY    0x01   /* leaves everything as it was: a client may
                                   send it again on a fresh connection  */
#define FPX_OPF_LONG     0x02   /* may run for minutes: the client's long timeout */
#define FPX_OPF_LOGGED   0x04   /* a mutation of a named index: appended to its
                                   log before the reply (docs/STORAGE.md) */
#define FPX_OPF_GROWS    0x08   /* may grow the server's memory: refused at
                                   --max-memory-mb                       */
#define FPX_OPF_CREATES  0x10   /* registers a new object: counts against max_indexes */
#define FPX_OPF_OWNS     0x20   /* may leave an object or transfer owned by the
                                   connection (freed when it closes)     */

#define FPX_OPCODES(X) \
    X (PING,                   1,  ping,                   READ,  NONE,   FPX_OPF_RETRY, \
       "the server's versions; answered by the broker, never queued") \
    X (INFO,                   2,  info,                   READ,  NONE,   FPX_OPF_RETRY, \
       "the server's and the tenant's figures") \
    X (CREATE,                 3,  create,                 WRITE, SERVER, FPX_OPF_GROWS|FPX_OPF_CREATES|FPX_OPF_OWNS, \
       "a new index from a factory string") \
    X (OPEN,                   4,  open,                   READ,  READ,   FPX_OPF_RETRY, \
       "an index's description, by name") \
    X (DROP,                   5,  drop,                   WRITE, SERVER, 0, \
       "removes an index and its files") \
    X (LIST,                   6,  list,                   READ,  NONE,   FPX_OPF_RETRY, \
       "the tenant's named indexes") \
    X (DESCRIBE,               7,  describe,               READ,  READ,   FPX_OPF_RETRY, \
       "an index's description, optionally its memory") \
    X (TRAIN,                  8,  train,                  WRITE, WRITE,  FPX_OPF_LONG|FPX_OPF_LOGGED|FPX_OPF_GROWS, \
       "trains an index or a vector transform") \
    X (ADD,                    9,  add,                    WRITE, WRITE,  FPX_OPF_LONG|FPX_OPF_LOGGED|FPX_OPF_GROWS, \
       "adds vectors") \
    X (ADD_WITH_IDS,           10, add_with_ids,           WRITE, WRITE,  FPX_OPF_LONG|FPX_OPF_LOGGED|FPX_OPF_GROWS, \
       "adds vectors with their ids") \
    X (SEARCH,                 11, search,                 READ,  READ,   FPX_OPF_RETRY, \
       "k nearest neighbours (exclusive with an efSearch)") \
    X (RANGE_SEARCH,           12, range_search,           READ,  READ,   FPX_OPF_RETRY, \
       "neighbours within a radius (exclusive with an efSearch)") \
    X (REMOVE_IDS,             13, remove_ids,             WRITE, WRITE,  FPX_OPF_LONG|FPX_OPF_LOGGED, \
       "removes ids, listed or a range") \
    X (RECONSTRUCT,            14, reconstruct,            READ,  READ,   FPX_OPF_RETRY, \
       "one stored vector") \
    X (RECONSTRUCT_N,          15, reconstruct_n,          READ,  READ,   FPX_OPF_RETRY, \
       "n stored vectors from a position") \
    X (RESET,                  16, reset,                  WRITE, WRITE,  FPX_OPF_LOGGED, \
       "removes every vector") \
    X (SET_PARAMETERS,         17, set_parameters,         WRITE, WRITE,  FPX_OPF_LOGGED, \
       "ParameterSpace settings") \
    X (SERIALIZE,              18, serialize,              READ,  READ,   FPX_OPF_RETRY|FPX_OPF_LONG, \
       "the index's bytes in one message") \
    X (DESERIALIZE,            19, deserialize,            WRITE, SERVER, FPX_OPF_LONG|FPX_OPF_GROWS|FPX_OPF_CREATES|FPX_OPF_OWNS, \
       "an index from its bytes in one message") \
    X (CONSTRUCT,              20, construct,              WRITE, WRITE,  FPX_OPF_GROWS|FPX_OPF_CREATES|FPX_OPF_OWNS, \
       "a FAISS object from a class and arguments") \
    X (SUBOBJECT,              21, subobject,              READ,  READ,   FPX_OPF_GROWS|FPX_OPF_CREATES|FPX_OPF_OWNS, \
       "a view of a part of an object") \
    X (GET_ATTR,               22, get_attr,               READ,  READ,   FPX_OPF_RETRY, \
       "an attribute's value") \
    X (SET_ATTR,               23, set_attr,               WRITE, WRITE,  FPX_OPF_LOGGED, \
       "sets an attribute") \
    X (CLONE,                  24, clone,                  WRITE, READ,   FPX_OPF_LONG|FPX_OPF_GROWS|FPX_OPF_CREATES|FPX_OPF_OWNS, \
       "an anonymous copy") \
    X (KMEANS,                 25, kmeans,                 READ,  NONE,   FPX_OPF_LONG|FPX_OPF_GROWS, \
       "k-means over the vectors sent") \
    X (APPLY,                  26, apply,                  READ,  READ,   FPX_OPF_RETRY, \
       "a vector transform applied to vectors") \
    X (SET_DIRECT_MAP,         27, set_direct_map,         WRITE, WRITE,  FPX_OPF_LONG|FPX_OPF_LOGGED|FPX_OPF_GROWS, \
       "an IVF index's direct map") \
    X (GET_ID_MAP,             28, get_id_map,             READ,  READ,   FPX_OPF_RETRY, \
       "an IDMap's ids") \
    X (SAVE,                   29, save,                   WRITE, SERVER, FPX_OPF_LONG, \
       "a snapshot of a named index") \
    X (DOWNLOAD_BEGIN,         30, download_begin,         READ,  READ,   FPX_OPF_GROWS|FPX_OPF_OWNS, \
       "starts a chunked download") \
    X (DOWNLOAD_CHUNK,         31, download_chunk,         READ,  NONE,   0, \
       "a chunk of a download") \
    X (UPLOAD_BEGIN,           32, upload_begin,           WRITE, NONE,   FPX_OPF_GROWS|FPX_OPF_CREATES|FPX_OPF_OWNS, \
       "starts a chunked upload") \
    X (UPLOAD_CHUNK,           33, upload_chunk,           WRITE, NONE,   0, \
       "a chunk of an upload") \
    X (UPLOAD_COMMIT,          34, upload_commit,          WRITE, SERVER, 0, \
       "registers an uploaded index") \
    X (TRANSFER_ABORT,         35, transfer_abort,         READ,  NONE,   0, \
       "frees a transfer") \
    X (ATTACH,                 36, attach,                 WRITE, WRITE,  0, \
       "adds a shard, replica or transform to a composite") \
    X (SEARCH_AND_RECONSTRUCT, 37, search_and_reconstruct, READ,  READ,   FPX_OPF_RETRY, \
       "search, with the neighbours' vectors")

typedef enum { FPX_ROLE_READ = 1, FPX_ROLE_WRITE = 2, FPX_ROLE_ADMIN = 3 } fpx_role_t;
typedef enum { FPX_LOCK_NONE, FPX_LOCK_READ, FPX_LOCK_WRITE, FPX_LOCK_SERVER } fpx_lock_t;

typedef enum {
#define FPX_OPCODES_ENUM_(name, code, wire, role, lock, flags, summary) FPX_OP_##name = (code),
    FPX_OPCODES (FPX_OPCODES_ENUM_)
#undef FPX_OPCODES_ENUM_
    FPX_OP_LAST_
} fpx_opcode_t;

/*  True if metric is one of the FPX_METRIC_* codes of fpx_constants.h
    (which ones an index accepts: fpx_shim_metric_unsupported). Inline:
    the C++ server files use it too.                                     */
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

/*  What FPX_OPCODES says of one opcode.                                 */
typedef struct {
    int code;
    const char *name;              //  "search"
    fpx_role_t role;
    fpx_lock_t lock;
    unsigned flags;                //  FPX_OPF_…
    const char *summary;
} fpx_opcode_info_t;

/*  The row of opcode, or NULL if unknown. Static storage.               */
const fpx_opcode_info_t *fpx_opcode_info (int opcode);

/*  "read", "write", "admin" / "none", "read", "write", "server".        */
const char *fpx_role_name (int role);
const char *fpx_lock_name (int lock);

/*  fpx_strerror, fpx_error_name: fpx_errors.h (public, exported).      */

/*  True if name is a valid index name: 1..FPX_NAME_MAX bytes of
    [A-Za-z0-9_.-], not starting with '.' or '-'. Names the server chooses
    for anonymous indexes start with '@' and are not valid user names.   */
bool fpx_name_is_valid (const char *name, size_t len);

/*  True for the "@hex" handles (1 to 16 hex digits) the server gives
    anonymous indexes.                                                   */
bool fpx_name_is_anonymous (const char *name, size_t len);

/*  True if every one of the n floats is finite.                         */
bool fpx_floats_are_finite (const float *x, size_t n);

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
