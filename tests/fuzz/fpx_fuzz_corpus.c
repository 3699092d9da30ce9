/*  fpx-fuzz-corpus DIR — writes the seed corpora of the fuzz targets:
    DIR/decoder and DIR/server, one file per request of fuzz_seeds.c
    (every opcode, and uploads of every index type), plus DIR/setup, the
    requests that create the indexes the seeds name, in order.          */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz_seeds.h"

typedef struct {
    const char *dir;
    int index;
    int failed;
} s_writer_t;

static void
s_write (void *arg, const char *label, int opcode, const fpx_fuzz_buf_t *request)
{
    s_writer_t *writer = arg;
    char path [4096];
    snprintf (path, sizeof path, "%s/%03d-%02d-%s", writer->dir, writer->index++, opcode, label);
    FILE *file = fopen (path, "wb");
    if (!file || fwrite (request->data, 1, request->size, file) != request->size) {
        fprintf (stderr, "fpx-fuzz-corpus: cannot write %s: %s\n", path, strerror (errno));
        writer->failed = 1;
    }
    if (file && fclose (file))
        writer->failed = 1;
}

int
main (int argc, char **argv)
{
    if (argc != 2) {
        fprintf (stderr, "usage: fpx-fuzz-corpus DIR\n");
        return 2;
    }
    static const char *const subdirs [] = { "decoder", "server", "setup" };
    int failed = 0, count = 0;
    mkdir (argv [1], 0755);
    for (int i = 0; i < 3; i++) {
        char dir [4096];
        snprintf (dir, sizeof dir, "%s/%s", argv [1], subdirs [i]);
        if (mkdir (dir, 0755) && errno != EEXIST) {
            fprintf (stderr, "fpx-fuzz-corpus: cannot create %s: %s\n", dir, strerror (errno));
            return 1;
        }
        s_writer_t writer = { .dir = dir };
        if (i == 2)
            fpx_fuzz_setup_requests (s_write, &writer);
        else
            count = fpx_fuzz_seed_requests (s_write, &writer);
        failed |= writer.failed;
    }
    printf ("fpx-fuzz-corpus: %d seed requests in %s/{decoder,server}\n", count, argv [1]);
    return failed;
}
