/*  fuzz_common.h — what the fuzz targets in tests/fuzz/ share.

    An input is a sequence of frames, each a little-endian u16 length and
    that many bytes (0xffff: a u32 length follows); a length that runs
    past the input takes what is left. The same bytes drive the decoder
    target (the frames of one request), the in-process server target (the
    frames sent on a real socket) and the seed corpora (fpx-fuzz-corpus).

    Built with -DFPX_FUZZ_ENGINE and -fsanitize=fuzzer, a target is a
    libFuzzer binary. Built without, fuzz_common.c gives it a main() that
    replays its seed corpus and regression inputs, then a fixed number of
    deterministic mutations of them, and prints the test framework's
    summary line ("N passed, N failed"), so that tests/run.sh runs it in
    `make test` with no fuzzing engine. An invariant that does not hold
    aborts (FPX_FUZZ_ASSERT), which either way is a crash to report.
*/
#ifndef FPX_FUZZ_COMMON_H_INCLUDED
#define FPX_FUZZ_COMMON_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FPX_FUZZ_FRAMES_MAX 12      //  more than FPX_MAX_FRAMES + 1, on purpose

typedef struct {
    int count;
    const uint8_t *data [FPX_FUZZ_FRAMES_MAX];
    size_t size [FPX_FUZZ_FRAMES_MAX];
} fpx_fuzz_frames_t;

/*  Splits an input into at most FPX_FUZZ_FRAMES_MAX frames (the views
    point into data); what follows the last one is ignored.              */
void fpx_fuzz_split (fpx_fuzz_frames_t *frames, const uint8_t *data, size_t size);

/*  A growing byte buffer, to build framed inputs. Aborts on no memory.  */
typedef struct {
    uint8_t *data;
    size_t size, capacity;
} fpx_fuzz_buf_t;

void fpx_fuzz_buf_append (fpx_fuzz_buf_t *buf, const void *data, size_t size);
void fpx_fuzz_buf_frame (fpx_fuzz_buf_t *buf, const void *data, size_t size);
void fpx_fuzz_buf_free (fpx_fuzz_buf_t *buf);

/*  A deterministic generator (xorshift64*) and a mutator of byte strings
    in the manner of libFuzzer's: bit flips, boundary integers, inserted,
    erased and duplicated bytes, truncation, splices from another input.
    Mutates buf in place (it may grow up to max_size).                   */
uint64_t fpx_fuzz_rand (uint64_t *state);
void fpx_fuzz_mutate (fpx_fuzz_buf_t *buf, const fpx_fuzz_buf_t *other, size_t max_size,
                      uint64_t *state);

/*  The fixed API key and tenant the server target and the corpora use.   */
#define FPX_FUZZ_TENANT "fuzz"
#define FPX_FUZZ_KEY    "fuzz-key-8c1f2e"

/*  Aborts with the condition's text when it does not hold.              */
#define FPX_FUZZ_ASSERT(cond)                                                \
    do { if (!(cond)) fpx_fuzz_assert_failed_ (__FILE__, __LINE__, #cond); } while (0)
void fpx_fuzz_assert_failed_ (const char *file, int line, const char *text)
    __attribute__ ((noreturn));

/*  What every target defines (libFuzzer's names).                       */
int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);
int LLVMFuzzerInitialize (int *argc, char ***argv);

/*  Each target names itself (its corpus directory) and how many mutants
    its replay main runs by default, from which seed.                    */
extern const char fpx_fuzz_target_name [];
extern const long fpx_fuzz_replay_mutations;
extern const long fpx_fuzz_replay_seed;

/*  True while the replay main runs mutants (not corpus inputs).         */
extern bool fpx_fuzz_mutating;

/*  Called once by the replay main after the last input (the server
    target stops its server there, so that LeakSanitizer sees a clean
    exit); the libFuzzer build registers it with atexit.                 */
void fpx_fuzz_target_cleanup (void);

#endif
