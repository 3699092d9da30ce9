/*  fuzz_replay.c — the main() of a fuzz target built without a fuzzing
    engine (see fuzz_common.h): replays the seed corpus and regression
    inputs, then deterministic mutants, and prints the test summary.    */
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "fuzz_common.h"

#ifndef FPX_FUZZ_ENGINE



typedef struct {
    fpx_fuzz_buf_t *inputs;
    char **names;
    int count;
} s_corpus_t;

static int
s_load_dir (s_corpus_t *corpus, const char *dir)
{
    DIR *handle = opendir (dir);
    if (!handle)
        return -1;
    //  Sorted, so that the replay is the same on every machine.
    struct dirent **entries;
    int n = scandir (dir, &entries, NULL, alphasort);
    closedir (handle);
    if (n < 0)
        return -1;
    for (int i = 0; i < n; i++) {
        char path [4096];
        snprintf (path, sizeof path, "%s/%s", dir, entries [i]->d_name);
        struct stat info;
        if (entries [i]->d_name [0] != '.' && stat (path, &info) == 0 && S_ISREG (info.st_mode)) {
            FILE *file = fopen (path, "rb");
            if (file) {
                fpx_fuzz_buf_t buf = { 0 };
                uint8_t chunk [65536];
                size_t got;
                while ((got = fread (chunk, 1, sizeof chunk, file)) > 0)
                    fpx_fuzz_buf_append (&buf, chunk, got);
                fclose (file);
                corpus->inputs = realloc (corpus->inputs, (size_t) (corpus->count + 1) * sizeof *corpus->inputs);
                corpus->names = realloc (corpus->names, (size_t) (corpus->count + 1) * sizeof *corpus->names);
                if (!corpus->inputs || !corpus->names)
                    abort ();
                corpus->inputs [corpus->count] = buf;
                corpus->names [corpus->count] = strdup (path);
                corpus->count++;
            }
        }
        free (entries [i]);
    }
    free (entries);
    return 0;
}

static void
s_corpus_free (s_corpus_t *corpus)
{
    for (int i = 0; i < corpus->count; i++) {
        fpx_fuzz_buf_free (&corpus->inputs [i]);
        free (corpus->names [i]);
    }
    free (corpus->inputs);
    free (corpus->names);
}

//  The input being run, written to s_artifact by a fatal signal (an
//  abort from a sanitizer or an assertion included) so that it can be
//  replayed: test_fuzz_NAME DIR-holding-it.
static const uint8_t *volatile s_current;
static volatile size_t s_current_size;
static char s_artifact [4096];

static void
s_on_fatal (int signo)
{
    //  Two threads may fail at once (FAISS asserts inside OpenMP): the
    //  first writes the input and ends the process, the others wait.
    static int writing;
    if (__atomic_exchange_n (&writing, 1, __ATOMIC_SEQ_CST))
        for (;;)
            pause ();
    int fd = open (s_artifact, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
        const uint8_t *data = s_current;
        size_t size = s_current_size, done = 0;
        while (data && done < size) {
            ssize_t n = write (fd, data + done, size - done);
            if (n <= 0)
                break;
            done += (size_t) n;
        }
        close (fd);
        static const char note [] = "fuzz: the input that failed is in ";
        if (write (2, note, sizeof note - 1) < 0 || write (2, s_artifact, strlen (s_artifact)) < 0
        ||  write (2, "\n", 1) < 0)
            (void) 0;
    }
    signal (signo, SIG_DFL);
    raise (signo);
}

static void
s_run (const fpx_fuzz_buf_t *input)
{
    s_current_size = 0;
    s_current = input->data;
    s_current_size = input->size;
    LLVMFuzzerTestOneInput (input->data, input->size);
}

static double
s_now (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + ts.tv_nsec * 1e-9;
}

static long
s_env_long (const char *name, long fallback)
{
    const char *text = getenv (name);
    return text && *text ? strtol (text, NULL, 10) : fallback;
}

/*  test_fuzz_NAME [DIR…]: replays every file of each DIR (default: the
    generated corpus BUILD/fuzz/corpus/NAME, found from the program's
    path, and tests/fuzz/regressions/NAME), then FPX_FUZZ_MUTATIONS
    (default fpx_fuzz_replay_mutations) mutants of them from seed
    FPX_FUZZ_SEED (default fpx_fuzz_replay_seed), stopping early after FPX_FUZZ_SECONDS (default 5).   */
int
main (int argc, char **argv)
{
    setvbuf (stdout, NULL, _IOLBF, 0);
    const char *slash = strrchr (argv [0], '/');
    int prefix = slash ? (int) (slash - argv [0]) : 1;
    const char *bindir = slash ? argv [0] : ".";
    snprintf (s_artifact, sizeof s_artifact, "%s", getenv ("FPX_FUZZ_ARTIFACT") ? getenv ("FPX_FUZZ_ARTIFACT") : "");
    if (!s_artifact [0])
        snprintf (s_artifact, sizeof s_artifact, "%.*s/../fuzz/crash-%s", prefix, bindir, fpx_fuzz_target_name);
    struct sigaction action;
    memset (&action, 0, sizeof action);
    action.sa_handler = s_on_fatal;
    action.sa_flags = 0;
    static const int fatal [] = { SIGABRT, SIGSEGV, SIGBUS, SIGFPE, SIGILL };
    for (size_t i = 0; i < sizeof fatal / sizeof fatal [0]; i++)
        sigaction (fatal [i], &action, NULL);
    LLVMFuzzerInitialize (&argc, &argv);
    s_corpus_t corpus = { 0 };
    int passed = 0, failed = 0;
    if (argc > 1) {
        for (int i = 1; i < argc; i++)
            if (s_load_dir (&corpus, argv [i]))
                fprintf (stderr, "cannot read %s: %s\n", argv [i], strerror (errno));
    }
    else {
        char dir [4096];
        snprintf (dir, sizeof dir, "%.*s/../fuzz/corpus/%s", prefix, bindir, fpx_fuzz_target_name);
        if (s_load_dir (&corpus, dir))
            fprintf (stderr, "cannot read %s: %s\n", dir, strerror (errno));
        char regressions [256];
        snprintf (regressions, sizeof regressions, "tests/fuzz/regressions/%s", fpx_fuzz_target_name);
        s_load_dir (&corpus, regressions);
        //  Inputs that crash today's server, kept for when it is fixed.
        if (getenv ("FPX_FUZZ_PENDING") && *getenv ("FPX_FUZZ_PENDING") == '1') {
            snprintf (regressions, sizeof regressions, "tests/fuzz/regressions/%s-pending",
                      fpx_fuzz_target_name);
            s_load_dir (&corpus, regressions);
        }
    }
    if (corpus.count == 0) {
        printf ("FAIL replay %s: no input to replay (make builds the corpus)\n", fpx_fuzz_target_name);
        printf ("0 passed, 1 failed\n");
        fpx_fuzz_target_cleanup ();
        return 1;
    }
    double t0 = s_now ();
    for (int i = 0; i < corpus.count; i++) {
        if (getenv ("FPX_FUZZ_VERBOSE"))
            fprintf (stderr, "replay %s\n", corpus.names [i]);
        s_run (&corpus.inputs [i]);
    }
    printf ("ok replay %s corpus: %d inputs, %.2f s\n", fpx_fuzz_target_name, corpus.count, s_now () - t0);
    passed++;

    long mutations = s_env_long ("FPX_FUZZ_MUTATIONS", fpx_fuzz_replay_mutations);
    double seconds = (double) s_env_long ("FPX_FUZZ_SECONDS", 5);
    uint64_t state = (uint64_t) s_env_long ("FPX_FUZZ_SEED", fpx_fuzz_replay_seed);
    fpx_fuzz_buf_t mutant = { 0 };
    long done = 0;
    t0 = s_now ();
    fpx_fuzz_mutating = true;
    for (; done < mutations; done++) {
        if (s_now () - t0 > seconds)      //  each time: an input may take a second
            break;
        int pick = (int) (fpx_fuzz_rand (&state) % (uint64_t) corpus.count);
        int splice = (int) (fpx_fuzz_rand (&state) % (uint64_t) corpus.count);
        mutant.size = 0;
        fpx_fuzz_buf_append (&mutant, corpus.inputs [pick].data, corpus.inputs [pick].size);
        fpx_fuzz_mutate (&mutant, &corpus.inputs [splice], 1 << 20, &state);
        s_run (&mutant);
    }
    s_current = NULL;
    fpx_fuzz_mutating = false;
    fpx_fuzz_buf_free (&mutant);
    printf ("ok replay %s mutations: %ld inputs, %.2f s\n", fpx_fuzz_target_name, done, s_now () - t0);
    passed++;
    s_corpus_free (&corpus);
    fpx_fuzz_target_cleanup ();
    printf ("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
#endif
