/*  fpx_test.h — the tiny test framework shared by every tests/test_*.c.

    What it gives a test program:
    - assertions (CHECK…) that record a failure with file:line and go on,
      REQUIRE… that also leave the test function;
    - registration and running: fpx_test_run (name, fn, arg) prints exactly
      one line, "ok name" or "FAIL name: reason"; fpx_test_finish prints
      "N passed, N failed" and gives the exit status. A test that made no
      assertion at all fails: a test must prove something;
    - a real faissproxyd on 127.0.0.1 (FPX_DAEMON), started and stopped;
    - raw ZeroMQ DEALER requests for malformed-frame tests;
    - seeded data (uniform, clustered) and FAISS in-process helpers;
    - result comparison: labels exactly (a tie may permute), distances
      within 1e-5 relative.

    It must not mock anything: every helper talks to a real server or to
    the real FAISS library. Assertions are thread-safe.
*/
#ifndef FPX_TEST_H_INCLUDED
#define FPX_TEST_H_INCLUDED

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <msgpack.h>
#include <zmq.h>

#include <faiss/c_api/AutoTune_c.h>
#include <faiss/c_api/Index_c.h>
#include <faiss/c_api/IndexIVF_c.h>
#include <faiss/c_api/error_c.h>
#include <faiss/c_api/faiss_c.h>
#include <faiss/c_api/impl/AuxIndexStructures_c.h>
#include <faiss/c_api/index_factory_c.h>
#include <faiss/c_api/index_io_c.h>

#include "faissproxy.h"
#include "fpx_params.h"
#include "fpx_protocol.h"

/* ---- assertions ---------------------------------------------------------- */

/*  Record a passed / failed assertion of the running test; return true /
    false.                                                               */
bool fpx_test_pass_ (void);                                  //  true
bool fpx_test_fail_ (const char *file, int line, const char *format, ...)
    __attribute__ ((format (printf, 3, 4)));

/*  CHECK (cond, format, …): an expression, true when cond holds.        */
#define CHECK(cond, ...)                                                     \
    ((cond) ? fpx_test_pass_ () : fpx_test_fail_ (__FILE__, __LINE__, __VA_ARGS__))

#define CHECK_TRUE(cond) CHECK (cond, "%s", #cond)

/*  FAIL (format, …): records a failure (for a constant condition).      */
#define FAIL(...) fpx_test_fail_ (__FILE__, __LINE__, __VA_ARGS__)

#define CHECK_EQ(a, b)                                                       \
    fpx_check_eq_ (__FILE__, __LINE__, #a, #b, (int64_t) (a), (int64_t) (b))

#define CHECK_STR(a, b)                                                      \
    fpx_check_str_ (__FILE__, __LINE__, #a, (a), (b))

/*  Runs a client call and checks its return code; rc >= 0 counts as OK
    for CHECK_OK. The handle's message is quoted on failure.             */
#define CHECK_RC(client, expr, expected)                                     \
    fpx_check_rc_ (__FILE__, __LINE__, #expr, (client), (expr), (expected))
#define CHECK_OK(client, expr)                                               \
    fpx_check_ok_ (__FILE__, __LINE__, #expr, (client), (expr))

/*  REQUIRE…: as CHECK…, and leaves the (void) test function on failure. */
#define REQUIRE(cond, ...)                                                   \
    do { if (!CHECK (cond, __VA_ARGS__)) return; } while (0)
#define REQUIRE_TRUE(cond)  do { if (!CHECK_TRUE (cond)) return; } while (0)
#define REQUIRE_OK(client, expr)                                             \
    do { if (!CHECK_OK (client, expr)) return; } while (0)
#define REQUIRE_RC(client, expr, expected)                                   \
    do { if (!CHECK_RC (client, expr, expected)) return; } while (0)

bool fpx_check_eq_ (const char *file, int line, const char *a_text,
                    const char *b_text, int64_t a, int64_t b);
bool fpx_check_str_ (const char *file, int line, const char *a_text,
                     const char *a, const char *b);
bool fpx_check_rc_ (const char *file, int line, const char *expr,
                    fpx_client_t *client, int rc, int expected);
bool fpx_check_ok_ (const char *file, int line, const char *expr,
                    fpx_client_t *client, int rc);

/* ---- running ------------------------------------------------------------- */

typedef void (fpx_test_fn_t) (void *arg);

/*  Runs one test and prints "ok NAME" or "FAIL NAME: first reason (+N
    more)"; every failed check is also written to stderr as "# file:line:
    text". A test that made no assertion fails.                          */
void fpx_test_run (const char *name, fpx_test_fn_t *fn, void *arg);

/*  Records a test that could not run as failed (prints its line).      */
void fpx_test_fail_whole (const char *name, const char *reason);

/*  Makes the running test fail fast when this server dies: a client call
    that times out (FPX_ETIMEDOUT, seen by CHECK_OK/CHECK_RC on the thread
    running the test) while the server process is gone ends the test with
    "faissproxyd died". NULL stops watching.                            */
struct fpx_test_server_s;
void fpx_test_watch (struct fpx_test_server_s *server);

/*  Runs FAISS in this process on one OpenMP thread: in-process results
    do not depend on the thread count (HNSW aside, see test_ops.c), and a
    loaded machine makes multi-threaded OpenMP barriers very slow.       */
void fpx_test_local_single_thread (void);

/*  Prints "N passed, N failed" and returns the exit status (0 only when
    nothing failed and at least one test passed).                       */
int fpx_test_finish (void);

/*  Seconds since an arbitrary start (CLOCK_MONOTONIC).                 */
double fpx_now (void);
void fpx_sleep_ms (int ms);

/*  True when this program was built with AddressSanitizer.             */
bool fpx_test_asan (void);

/* ---- the server under test ----------------------------------------------- */

#define FPX_TEST_TENANT_A "alice"
#define FPX_TEST_TENANT_B "bob"

/*  Per-run API keys of the two tenants every test server knows.        */
extern char fpx_test_key_a [FPX_API_KEY_MAX + 1];
extern char fpx_test_key_b [FPX_API_KEY_MAX + 1];

typedef struct fpx_test_server_s {
    pid_t pid;                  //  0 when not running
    int port;                   //  the one the daemon bound
    char endpoint [64];         //  tcp://127.0.0.1:PORT
    char data_dir [256];
    char log_path [256];
    int exit_status;            //  after stop
    char diagnosis [300];       //  after an abnormal exit: the first
                                //  sanitizer/abort line of its log, or ""
} fpx_test_server_t;

/*  Starts FPX_DAEMON (else BUILD/bin/faissproxyd next to this program)
    with --bind tcp://127.0.0.1:* (a port the system picks, which the
    daemon writes to its --endpoint-file: no port is guessed), both
    tenants' keys, a fresh data directory and --log-level warn, plus
    extra_args (NULL-terminated, may be NULL; a --bind there is an extra
    endpoint) and extra environment "NAME=VALUE" entries (NULL-terminated,
    may be NULL). Returns once fpx_ping with tenant A's key succeeds on
    the endpoint it wrote, or -1 (the reason is on stderr). The child
    dies with us.                                                        */
int fpx_test_server_start (fpx_test_server_t *self, const char *const *extra_args,
                           const char *const *extra_env);

/*  A new empty directory /tmp/fpx-WHAT-PID-XXXXXX in out (out [0] = 0
    on failure), and the removal of a directory tree.                    */
void fpx_test_temp_dir (char *out, size_t size, const char *what);
void fpx_test_remove_dir (const char *path);

/*  SIGTERM, then waits up to timeout_s for the exit. Returns the exit
    status (0..255), 128+signal if killed by a signal, or -1 if it had to
    be SIGKILLed. On an abnormal status (not 0, not SIGKILL, which tests
    send on purpose) prints the log's tail on stderr, keeps the log and
    fills diagnosis; else removes the log. Removes the data directory.   */
int fpx_test_server_stop (fpx_test_server_t *self, int timeout_s);

/*  True while the process has not exited.                               */
bool fpx_test_server_alive (fpx_test_server_t *self);

/*  VmRSS of the server in KiB, or -1.                                   */
long fpx_test_server_rss_kb (const fpx_test_server_t *self);

/*  A new client of the server with the given key, timeout 30 s (45 s under ASan).         */
fpx_client_t *fpx_test_client (const fpx_test_server_t *self, const char *key);

/*  Pings the server through a fresh connection with tenant A's key.     */
int fpx_test_fresh_ping (const fpx_test_server_t *self);

/* ---- raw requests ---------------------------------------------------------- */

typedef struct {
    void *ctx;
    void *sock;
    uint64_t next_id;
} fpx_raw_t;

#define FPX_RAW_FRAMES_MAX 16

typedef struct {
    int nframes;
    uint8_t *frames [FPX_RAW_FRAMES_MAX];   //  malloc'd copies
    size_t sizes [FPX_RAW_FRAMES_MAX];
    int header_rc;              //  fpx_header_decode_reply's return
    fpx_header_t header;
    int params_rc;              //  fpx_params_decode of frame 1 (-99 if none)
    fpx_params_t result;        //  views into frames [1]
    char error [FPX_ERROR_TEXT_MAX + 1];   //  result["error"], "" if none
} fpx_raw_reply_t;

/*  A DEALER socket connected to endpoint (NULL on failure).             */
fpx_raw_t *fpx_raw_new (const char *endpoint);
void fpx_raw_destroy (fpx_raw_t **self_p);

/*  Sends nframes frames as one message. Returns 0 or -1.                */
int fpx_raw_send (fpx_raw_t *self, int nframes, const void *const *data,
                  const size_t *sizes);

/*  Receives one message within timeout_ms. Returns 0, or -1 on timeout.
    The reply must be freed with fpx_raw_reply_free.                    */
int fpx_raw_recv (fpx_raw_t *self, fpx_raw_reply_t *reply, int timeout_ms);
void fpx_raw_reply_free (fpx_raw_reply_t *reply);

/*  Encodes a request header (version 1, flags 0).                       */
void fpx_raw_header (uint8_t out [FPX_REQUEST_HEADER_SIZE], int opcode,
                     uint64_t request_id, const char *key);

/*  One well-formed request: header (opcode, a fresh id, key), params
    (may be NULL/0), arrays; waits for the reply (10 s, longer in ASan).
    Returns the reply header's status, or -1000 on timeout / undecodable
    reply header (the reply is still filled in as far as it came).      */
int fpx_raw_call (fpx_raw_t *self, int opcode, const char *key,
                  const void *params, size_t params_size, int narrays,
                  const void *const *arrays, const size_t *sizes,
                  fpx_raw_reply_t *reply);

/*  A msgpack buffer with a packer writing to it.                        */
typedef struct {
    msgpack_sbuffer buf;
    msgpack_packer pk;
} fpx_mp_t;
void fpx_mp_init (fpx_mp_t *self);
void fpx_mp_free (fpx_mp_t *self);

/* ---- data ---------------------------------------------------------------- */

typedef struct { uint64_t state; } fpx_rng_t;
void fpx_rng_seed (fpx_rng_t *self, uint64_t seed);
uint64_t fpx_rng_next (fpx_rng_t *self);
float fpx_rng_uniform (fpx_rng_t *self);        //  [0, 1)
float fpx_rng_normal (fpx_rng_t *self);         //  N(0, 1)

/*  n·d floats, caller frees: uniform in [0,1), or around nclusters
    uniform centres with normal noise of deviation sigma.                */
float *fpx_data_uniform (uint64_t seed, int64_t n, int d);
float *fpx_data_clustered (uint64_t seed, int64_t n, int d, int nclusters, float sigma);

/* ---- FAISS in-process ------------------------------------------------------ */

/*  index_factory; NULL with the reason in why on failure.               */
FaissIndex *fpx_local_create (int d, const char *factory, int metric,
                              char *why, size_t why_size);

/*  ParameterSpace set_index_parameter / set_index_parameters. 0 or the
    FAISS error code.                                                    */
int fpx_local_set_param (FaissIndex *index, const char *name, double value);
int fpx_local_set_params (FaissIndex *index, const char *params);

/*  Serializes to a malloc'd buffer (NULL on failure).                   */
uint8_t *fpx_local_serialize (const FaissIndex *index, size_t *size_p);

/*  Reads an index from bytes (fmemopen + faiss_read_index); NULL on
    failure.                                                             */
FaissIndex *fpx_local_deserialize (const uint8_t *bytes, size_t size);

/*  FAISS's last error text ("" if none).                                */
const char *fpx_local_error (void);

/*  Runs fn (arg) in a forked child and returns its result (0, or 1 when
    fn failed; -1000 if the child crashed), with FAISS's last error text of
    the child in message. For FAISS calls expected to fail: FAISS 1.7.3
    leaks memory on some of its own exception paths (index_factory,
    read_index), which LeakSanitizer would otherwise pin on this program.
    The child leaves with _exit: no leak check there.                    */
int fpx_local_in_child (int (*fn) (void *arg), void *arg, char *message, size_t size);

/*  index_factory / read_index in a child (as above): true when FAISS
    refuses, with its message.                                           */
bool fpx_local_factory_refuses (int d, const char *factory, int metric,
                                char *message, size_t size);
bool fpx_local_read_refuses (const uint8_t *bytes, size_t bytes_size,
                             char *message, size_t size);

/*  A deep copy through FAISS's own serialization (NULL on failure).     */
FaissIndex *fpx_local_copy (const FaissIndex *index);

/*  The part of a FAISS error message after its "Error in … at FILE:LINE: "
    prefix (the whole text if there is no such prefix).                  */
const char *fpx_faiss_core_message (const char *message);

/*  Checks that a remote call which FAISS refused in-process (message
    local_message) failed with FPX_EFAISS and a message that contains
    FAISS's own words.                                                   */
#define CHECK_FAISS_REFUSAL(client, rc, local_message, what)                 \
    fpx_check_faiss_refusal_ (__FILE__, __LINE__, (client), (rc), (local_message), (what))
bool fpx_check_faiss_refusal_ (const char *file, int line, fpx_client_t *client, int rc,
                               const char *local_message, const char *what);

/* ---- comparison ------------------------------------------------------------ */

/*  |a-b| <= 1e-5·max(1,|a|,|b|); equal infinities are close.           */
bool fpx_float_close (float a, float b);

/*  A k-NN result: nq rows of kcols columns, of which the first k are the
    answer; a reference computed with kcols > k shows which labels tie
    with the last ones (positions k … kcols-1).                          */
typedef struct {
    int64_t nq;
    int k;
    int kcols;
    float *D;
    int64_t *I;
} fpx_knn_t;

/*  Local search with k + extra columns (extra = 0 for indexes whose
    search depends on k, like HNSW's efSearch = max (efSearch, k)).
    Returns 0 or FAISS's error code; out is zeroed on failure.           */
int fpx_local_knn (const FaissIndex *index, int64_t nq, const float *x, int k,
                   int extra, fpx_knn_t *out);

/*  Remote search (fpx_search) into out. Returns fpx_search's code.       */
int fpx_remote_knn (fpx_client_t *client, const char *name, int64_t nq, int d,
                    const float *x, int k, const fpx_search_params_t *params,
                    fpx_knn_t *out);
void fpx_knn_free (fpx_knn_t *self);

/*  Compares got (k columns) with ref: distances position by position
    within tolerance; labels identical, except that labels whose reference
    distances tie (within tolerance) may come in another order, and a tie
    group that crosses position k may be represented by any of its
    members (checked against ref's extra columns; lenient only where the
    group also runs past ref's last column). Labels of a row must be
    distinct (except -1). why receives the first difference.            */
bool fpx_knn_equal (const fpx_knn_t *ref, const fpx_knn_t *got,
                    char *why, size_t why_size);

#define CHECK_KNN(ref, got) fpx_check_knn_ (__FILE__, __LINE__, (ref), (got))
bool fpx_check_knn_ (const char *file, int line, const fpx_knn_t *ref,
                     const fpx_knn_t *got);

/*  A range result: nq, lims [nq+1], D and I [lims[nq]].                 */
typedef struct {
    int64_t nq;
    uint64_t *lims;
    float *D;
    int64_t *I;
} fpx_range_t;

/*  Local range search; 0 or FAISS's error code.                          */
int fpx_local_range (const FaissIndex *index, int64_t nq, const float *x,
                     float radius, fpx_range_t *out);
void fpx_range_free (fpx_range_t *self);

/*  Range results, per query as sets of (label, distance): the same labels
    with close distances, except entries within tolerance of the radius,
    which may be on either side.                                         */
bool fpx_range_equal (const fpx_range_t *ref, const fpx_range_result_t *got,
                      float radius, char *why, size_t why_size);

#endif
