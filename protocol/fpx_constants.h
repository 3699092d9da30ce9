/*  fpx_constants.h — the numbers of faissproxy a client program needs,
    each defined once: the limits the server enforces, and FAISS's metric
    codes.

    faissproxy.h (the public C API) and fpx_protocol.h (the wire format,
    compiled by the server and the library) both include this file, so
    the server, libfaissproxy, its users and the TypeScript client
    (clients/typescript/scripts/gen-protocol.mjs reads it) cannot
    disagree. Installed beside faissproxy.h; has no dependencies and
    declares no functions.
*/
#ifndef FPX_CONSTANTS_H_INCLUDED
#define FPX_CONSTANTS_H_INCLUDED

/* ---- limits --------------------------------------------------------------
    What one request may carry. The server refuses more with FPX_EINVAL
    (or FPX_ETOOBIG for the message size) before it allocates anything;
    libfaissproxy checks the same bounds before it sends. Lengths are in
    bytes, without a terminating NUL unless said.                        */
#define FPX_API_KEY_MAX         64          /* an API key                   */
#define FPX_NAME_MAX            128         /* an index name                */
#define FPX_FACTORY_MAX         256         /* a factory string, NUL included */
#define FPX_SETPARAM_MAX        1024        /* a set_parameters string, NUL included */
#define FPX_TYPE_NAME_MAX       64          /* a class or attribute name, NUL included */
#define FPX_DIM_MAX             65536       /* vector dimension             */
#define FPX_K_MAX               65536       /* neighbours per query         */
#define FPX_SEARCH_PARAM_MAX    (1 << 20)   /* nprobe, efSearch of one request */
#define FPX_CONSTRUCT_ARGS_MAX  16          /* numeric arguments of construct */
#define FPX_CONSTRUCT_REFS_MAX  4           /* object references of construct */
#define FPX_SELECTOR_NODES_MAX  16          /* nodes of a search-time id selector */
#define FPX_KMEANS_K_MAX        (1 << 20)   /* k-means centroids            */
#define FPX_KMEANS_NITER_MAX    10000       /* k-means iterations           */
#define FPX_INFO_INDEXES_DEFAULT 100        /* indexes info lists unless asked */
#define FPX_INFO_INDEXES_MAX    1000        /* indexes info lists at most   */
#define FPX_PARAMS_MAX          (64 * 1024) /* a request's msgpack parameters */
#define FPX_ERROR_TEXT_MAX      2048        /* error text in a reply        */

/*  Largest squared L2 norm of a vector the server accepts: FLT_MAX / 4,
    so that every squared distance ‖x−y‖² ≤ (‖x‖+‖y‖)², every inner
    product and FAISS's ‖x‖²+‖y‖²−2⟨x,y⟩ stay finite in float32.
    Non-finite values are refused too.                                   */
#define FPX_VECTOR_NORM2_MAX    8.507059173023462e37

/*  A whole request (all frames) is limited by the server's
    --max-message-mb, by default this many MiB (FPX_ETOOBIG beyond);
    libfaissproxy splits serialized indexes into chunks below it. Larger
    searches, adds and reconstructions must be split by the caller.      */
#define FPX_MESSAGE_MB_DEFAULT  256

/*  Chunked transfers of serialized indexes (download_*, upload_*): the
    server chooses the chunk size, min(message limit / 2, this), and says
    it in every begin reply; a client sends an index in one deserialize
    only up to FPX_TRANSFER_INLINE_MAX bytes (within any server's limit).  */
#define FPX_TRANSFER_CHUNK_MAX  (16 << 20)
#define FPX_TRANSFER_INLINE_MAX (512 << 10)
#define FPX_TRANSFERS_PER_CONN  4           /* open transfers per connection */
#define FPX_TRANSFER_IDLE_S     600         /* an untouched transfer is freed */

/*  Asynchronous requests one libfaissproxy handle keeps in flight at most
    (fpx_search_send, fpx_add_send): a limit of the library, not of the
    server.                                                              */
#define FPX_MAX_IN_FLIGHT       256

/* ---- metrics -------------------------------------------------------------
    FAISS's metric codes, as FAISS numbers them. L2 and inner product work
    with every index; the others (FAISS's "extra metrics") only with the
    indexes that compute distances through IndexFlat: IndexFlat, HNSW over
    a flat storage, and IDMap / PreTransform around them
    (docs/PROTOCOL.md). FPX_METRIC_LP reads the index's metric_arg (p),
    set with fpx_set_attr.                                               */
#define FPX_METRIC_INNER_PRODUCT 0
#define FPX_METRIC_L2            1
#define FPX_METRIC_L1            2
#define FPX_METRIC_LINF          3
#define FPX_METRIC_LP            4
#define FPX_METRIC_CANBERRA      20
#define FPX_METRIC_BRAYCURTIS    21
#define FPX_METRIC_JENSENSHANNON 22
#define FPX_METRIC_MAX           FPX_METRIC_JENSENSHANNON

#endif
