/*  test_vecfile.c — the command line's vector files (client-c/fpx_vecfile.c):
    a self-test of the module, no server.

    Round trips through .npy and .fvecs are exact and the .npy header is
    NumPy's; .bvecs and text read as documented; every hostile file is
    refused with a message; and every truncation and many byte mutations
    of valid files either open consistently (rows × record = the file's
    data) or are refused — never a crash or an out-of-bounds read (the
    ASan build runs this too). tests/python/test_cli_data.py drives the
    same code through `faissproxy` against a server.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fpx_test.h"
#include "fpx_vecfile.h"

static char s_dir [64];

static const char *
s_path (const char *name)
{
    static char path [160];
    snprintf (path, sizeof path, "%s/%s", s_dir, name);
    return path;
}

static void
s_write_file (const char *path, const void *data, size_t size)
{
    FILE *file = fopen (path, "wb");
    if (file) {
        fwrite (data, 1, size, file);
        fclose (file);
    }
}

static size_t
s_read_file (const char *path, uint8_t *out, size_t size)
{
    FILE *file = fopen (path, "rb");
    if (!file)
        return 0;
    size_t got = fread (out, 1, size, file);
    fclose (file);
    return got;
}

//  An .npy header of `dict`, padded as NumPy pads it, then data.
static size_t
s_npy (uint8_t *out, const char *dict, const void *data, size_t size)
{
    size_t len = strlen (dict);
    size_t header = (len + 1 + 10 + 63) / 64 * 64 - 10;
    memcpy (out, "\x93NUMPY\x01\x00", 8);
    out [8] = (uint8_t) (header & 0xff);
    out [9] = (uint8_t) (header >> 8);
    memcpy (out + 10, dict, len);
    memset (out + 10 + len, ' ', header - len - 1);
    out [10 + header - 1] = '\n';
    memcpy (out + 10 + header, data, size);
    return 10 + header + size;
}

static void
s_fill (float *x, int64_t n, int d)
{
    for (int64_t i = 0; i < n * d; i++)
        x [i] = (float) i * 0.25f - 7.0f;
}

static void
test_round_trip (void *arg)
{
    (void) arg;
    enum { D = 8, N = 100 };
    float x [N * D], back [N * D];
    s_fill (x, N, D);
    const char *names [] = { "rt.npy", "rt.fvecs" };
    for (int f = 0; f < 2; f++) {
        char errmsg [512];
        fpx_vecfile_t *out = fpx_vecfile_create (s_path (names [f]), D, N, errmsg, sizeof errmsg);
        REQUIRE (out != NULL, "create %s: %s", names [f], errmsg);
        for (int64_t i = 0; i < N; i += 7)
            CHECK_EQ (fpx_vecfile_write (out, x + i * D, i + 7 <= N ? 7 : N - i), 0);
        CHECK_EQ (fpx_vecfile_write (out, x, 1), -1);        //  more than announced
        CHECK_EQ (fpx_vecfile_close (&out, true, errmsg, sizeof errmsg), 0);
        CHECK_TRUE (out == NULL);
        CHECK_TRUE (access (s_path ("rt.npy.tmp"), F_OK) != 0);

        fpx_vecfile_t *in = fpx_vecfile_open (s_path (names [f]), D, errmsg, sizeof errmsg);
        REQUIRE (in != NULL, "open %s: %s", names [f], errmsg);
        CHECK_EQ (fpx_vecfile_rows (in), N);
        memset (back, 0, sizeof back);
        int64_t got = 0, n;
        while ((n = fpx_vecfile_read (in, back + got * D, 9)) > 0)
            got += n;
        CHECK_EQ (n, 0);
        CHECK_EQ (got, N);
        CHECK_TRUE (memcmp (x, back, sizeof x) == 0);
        CHECK_EQ (fpx_vecfile_seek (in, 57), 0);
        CHECK_EQ (fpx_vecfile_read (in, back, 1), 1);
        CHECK_TRUE (memcmp (back, x + 57 * D, D * sizeof (float)) == 0);
        CHECK_EQ (fpx_vecfile_seek (in, N + 1), -1);
        fpx_vecfile_close (&in, false, NULL, 0);
    }
    //  NumPy's layout: version 1.0, data on a 64-byte boundary, its dict.
    uint8_t bytes [8192];
    size_t size = s_read_file (s_path ("rt.npy"), bytes, sizeof bytes);
    CHECK_EQ (size, 128 + sizeof x);
    CHECK_TRUE (memcmp (bytes, "\x93NUMPY\x01\x00", 8) == 0);
    CHECK_TRUE (memcmp (bytes + 10, "{'descr': '<f4', 'fortran_order': False, 'shape': (100, 8), }",
                        61) == 0);
    CHECK_EQ (bytes [127], '\n');
    //  .fvecs: an int32 d before each vector.
    size = s_read_file (s_path ("rt.fvecs"), bytes, sizeof bytes);
    CHECK_EQ (size, N * (4 + D * 4));
    int32_t d;
    memcpy (&d, bytes + (4 + D * 4) * 3, 4);
    CHECK_EQ (d, D);

    //  An abandoned or short file never appears under its name.
    char errmsg [512];
    fpx_vecfile_t *out = fpx_vecfile_create (s_path ("short.npy"), D, N, errmsg, sizeof errmsg);
    REQUIRE_TRUE (out != NULL);
    CHECK_EQ (fpx_vecfile_write (out, x, 10), 0);
    CHECK_EQ (fpx_vecfile_close (&out, true, errmsg, sizeof errmsg), -1);
    CHECK (strstr (errmsg, "10 rows written of 100") != NULL, "%s", errmsg);
    CHECK_TRUE (access (s_path ("short.npy"), F_OK) != 0);
    CHECK_TRUE (access (s_path ("short.npy.tmp"), F_OK) != 0);
    CHECK_TRUE (fpx_vecfile_create (s_path ("x.bvecs"), D, 1, errmsg, sizeof errmsg) == NULL);
}

static void
test_bvecs_and_ids (void *arg)
{
    (void) arg;
    uint8_t bytes [3 * (4 + 5)];
    for (int r = 0; r < 3; r++) {
        int32_t d = 5;
        memcpy (bytes + r * 9, &d, 4);
        for (int j = 0; j < 5; j++)
            bytes [r * 9 + 4 + j] = (uint8_t) (r * 100 + j * 30);
    }
    s_write_file (s_path ("b.bvecs"), bytes, sizeof bytes);
    char errmsg [512];
    fpx_vecfile_t *in = fpx_vecfile_open (s_path ("b.bvecs"), 5, errmsg, sizeof errmsg);
    REQUIRE (in != NULL, "%s", errmsg);
    float x [15];
    CHECK_EQ (fpx_vecfile_read (in, x, 10), 3);
    CHECK_TRUE (x [0] == 0.0f && x [4] == 120.0f && x [5] == 100.0f && x [14] == 64.0f);
    fpx_vecfile_close (&in, false, NULL, 0);

    int64_t ids [4] = { 5, -1, 1LL << 40, 7 };
    uint8_t file [256];
    size_t size = s_npy (file, "{'descr': '<i8', 'fortran_order': False, 'shape': (4,), }", ids,
                         sizeof ids);
    s_write_file (s_path ("ids.npy"), file, size);
    in = fpx_vecfile_open_ids (s_path ("ids.npy"), errmsg, sizeof errmsg);
    REQUIRE (in != NULL, "%s", errmsg);
    int64_t back [4];
    CHECK_EQ (fpx_vecfile_read_ids (in, back, 4), 4);
    CHECK_TRUE (memcmp (ids, back, sizeof ids) == 0);
    CHECK_EQ (fpx_vecfile_read (in, x, 1), -1);             //  not a vector file
    fpx_vecfile_close (&in, false, NULL, 0);
    size = s_npy (file, "{'descr': '<f4', 'fortran_order': False, 'shape': (8,), }", ids,
                  sizeof ids);
    s_write_file (s_path ("fids.npy"), file, size);
    CHECK_TRUE (fpx_vecfile_open_ids (s_path ("fids.npy"), errmsg, sizeof errmsg) == NULL);
    CHECK (strstr (errmsg, "dtype '<f4', expected '<i8'") != NULL, "%s", errmsg);
}

static void
test_text (void *arg)
{
    (void) arg;
    const char *text = "# a comment\n1 2,3\n\n  4\t5 , 6 \r\n-1e3 0.5 +7";
    s_write_file (s_path ("t.txt"), text, strlen (text));
    char errmsg [512];
    fpx_vecfile_t *in = fpx_vecfile_open (s_path ("t.txt"), 3, errmsg, sizeof errmsg);
    REQUIRE (in != NULL, "%s", errmsg);
    CHECK_TRUE (fpx_vecfile_is_text (in));
    CHECK_EQ (fpx_vecfile_rows (in), -1);
    float x [12];
    CHECK_EQ (fpx_vecfile_read (in, x, 2), 2);
    CHECK_EQ (fpx_vecfile_read (in, x + 6, 4), 1);
    CHECK_EQ (fpx_vecfile_read (in, x, 4), 0);
    CHECK_TRUE (x [0] == 1 && x [2] == 3 && x [3] == 4 && x [5] == 6 && x [6] == -1000
                && x [7] == 0.5f && x [8] == 7);
    CHECK_EQ (fpx_vecfile_seek (in, 0), -1);
    fpx_vecfile_close (&in, false, NULL, 0);

    struct { const char *text, *message; } bad [] = {
        { "1 2\n", "line 1 has 2 numbers, expected d = 3" },
        { "1 2 3 4\n", "line 1 has more than d = 3 numbers" },
        { "1 2 3\n1 x 3\n", "line 2: 'x' is not a finite number" },
        { "1 inf 3\n", "'inf' is not a finite number" },
        { "1 2 3e99\n", "is not a finite number" },
        { "1 2 111111111111111111111111111111111111111111111111111111111111111111111111111\n",
          "is not a finite number" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad [0]; i++) {
        s_write_file (s_path ("bad.csv"), bad [i].text, strlen (bad [i].text));
        in = fpx_vecfile_open (s_path ("bad.csv"), 3, errmsg, sizeof errmsg);
        REQUIRE_TRUE (in != NULL);
        int64_t n, got = 0;
        while ((n = fpx_vecfile_read (in, x, 4)) > 0)
            got += n;
        CHECK (n == -1 && strstr (fpx_vecfile_errmsg (in), bad [i].message),
               "'%s': %lld, '%s'", bad [i].text, (long long) n, fpx_vecfile_errmsg (in));
        fpx_vecfile_close (&in, false, NULL, 0);
    }
}

static void
test_hostile (void *arg)
{
    (void) arg;
    enum { D = 4 };
    float x [10 * D];
    s_fill (x, 10, D);
    uint8_t file [4096];
    char dict [256];
    struct { const char *dict; size_t data; const char *message; } npy [] = {
        { "{'descr': '<f4', 'fortran_order': False, 'shape': (10, 4), }", sizeof x - 1, "truncated" },
        { "{'descr': '<f4', 'fortran_order': False, 'shape': (10, 4), }", 0, "truncated" },
        { "{'descr': '<f8', 'fortran_order': False, 'shape': (5, 4), }", sizeof x, "dtype '<f8'" },
        { "{'descr': '>f4', 'fortran_order': False, 'shape': (10, 4), }", sizeof x, "dtype '>f4'" },
        { "{'descr': '<f4', 'fortran_order': True, 'shape': (10, 4), }", sizeof x, "Fortran" },
        { "{'descr': '<f4', 'fortran_order': False, 'shape': (5, 8), }", sizeof x, "d = 8" },
        { "{'descr': '<f4', 'fortran_order': False, 'shape': (40,), }", sizeof x, "1-D" },
        { "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 5, 4), }", sizeof x, "3-D" },
        { "{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 4), }",
          sizeof x, "truncated" },
        { "{'descr': '<f4', 'fortran_order': False, 'shape': (9223372036854775807, 4), }",
          sizeof x, "truncated" },
        { "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999, 4), }",
          sizeof x, "malformed" },
        { "{'descr': '<f4', 'fortran_order': False, 'shape': (10, 4), 'more': 1}", sizeof x,
          "unexpected or repeated key 'more'" },
        { "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (10, 4)}",
          sizeof x, "repeated key 'descr'" },
        { "{'descr': '<f4', 'shape': (10, 4), }", sizeof x, "malformed" },
        { "{'descr': '<f4', 'fortran_order': 0, 'shape': (10, 4), }", sizeof x, "malformed" },
        { "{'descr': '<f4', 'fortran_order': False, 'shape': (10, -4), }", sizeof x, "malformed" },
        { "{'descr': '<f\\4', 'fortran_order': False, 'shape': (10, 4), }", sizeof x, "malformed" },
        { "{'descr': '<f4', 'fortran_order': False, 'shape': (10, 4), } x", sizeof x, "malformed" },
        { "", sizeof x, "malformed" },
    };
    char errmsg [512];
    for (size_t i = 0; i < sizeof npy / sizeof npy [0]; i++) {
        snprintf (dict, sizeof dict, "%s", npy [i].dict);
        size_t size = s_npy (file, dict, x, npy [i].data);
        s_write_file (s_path ("h.npy"), file, size);
        errmsg [0] = 0;
        fpx_vecfile_t *in = fpx_vecfile_open (s_path ("h.npy"), D, errmsg, sizeof errmsg);
        CHECK (in == NULL && strstr (errmsg, npy [i].message), "%s: '%s'", npy [i].dict, errmsg);
        fpx_vecfile_close (&in, false, NULL, 0);
    }
    //  Headers: too long, an unknown version, not NumPy at all.
    const uint8_t long_header [] = { 0x93, 'N', 'U', 'M', 'P', 'Y', 2, 0, 0, 0, 0, 0x40, '{' };
    const uint8_t version9 [] = { 0x93, 'N', 'U', 'M', 'P', 'Y', 9, 0, 4, 0, '{', '}', ' ', '\n' };
    struct { const void *data; size_t size; const char *message; } raw [] = {
        { long_header, sizeof long_header, "too long" },
        { version9, sizeof version9, "version 9" },
        { "PK\x03\x04 a zip", 10, "not a NumPy" },
        { "\x93NUMPY\x01\x00\x40\x00{", 11, "truncated NumPy header" },
    };
    for (size_t i = 0; i < sizeof raw / sizeof raw [0]; i++) {
        s_write_file (s_path ("h.npy"), raw [i].data, raw [i].size);
        fpx_vecfile_t *in = fpx_vecfile_open (s_path ("h.npy"), D, errmsg, sizeof errmsg);
        CHECK (in == NULL && strstr (errmsg, raw [i].message), "raw %zu: '%s'", i, errmsg);
        fpx_vecfile_close (&in, false, NULL, 0);
    }
    //  .fvecs: a first d that is not the index's, a size that is not whole
    //  records, a record in the middle with another d.
    uint8_t vecs [10 * (4 + D * 4)];
    for (int r = 0; r < 10; r++) {
        int32_t d = D;
        memcpy (vecs + r * (4 + D * 4), &d, 4);
        memcpy (vecs + r * (4 + D * 4) + 4, x + r * D, D * 4);
    }
    int32_t values [] = { -1, 0, 5, 0x7fffffff };
    for (size_t i = 0; i < sizeof values / sizeof values [0]; i++) {
        uint8_t copy [sizeof vecs];
        memcpy (copy, vecs, sizeof vecs);
        memcpy (copy, &values [i], 4);
        s_write_file (s_path ("h.fvecs"), copy, sizeof copy);
        fpx_vecfile_t *in = fpx_vecfile_open (s_path ("h.fvecs"), D, errmsg, sizeof errmsg);
        CHECK (in == NULL && strstr (errmsg, "expected d = 4"), "d %d: '%s'", values [i], errmsg);
        fpx_vecfile_close (&in, false, NULL, 0);
    }
    s_write_file (s_path ("h.fvecs"), vecs, sizeof vecs - 2);
    fpx_vecfile_t *in = fpx_vecfile_open (s_path ("h.fvecs"), D, errmsg, sizeof errmsg);
    CHECK (in == NULL && strstr (errmsg, "not a whole number"), "'%s'", errmsg);
    uint8_t copy [sizeof vecs];
    memcpy (copy, vecs, sizeof vecs);
    int32_t other = D + 1;
    memcpy (copy + 6 * (4 + D * 4), &other, 4);
    s_write_file (s_path ("h.fvecs"), copy, sizeof copy);
    in = fpx_vecfile_open (s_path ("h.fvecs"), D, errmsg, sizeof errmsg);
    REQUIRE_TRUE (in != NULL);
    float out [10 * D];
    CHECK_EQ (fpx_vecfile_read (in, out, 4), 4);
    CHECK_EQ (fpx_vecfile_read (in, out, 4), -1);
    CHECK (strstr (fpx_vecfile_errmsg (in), "row 6 has d = 5"), "'%s'", fpx_vecfile_errmsg (in));
    fpx_vecfile_close (&in, false, NULL, 0);
    //  Names: an unknown extension, a directory, a missing file.
    CHECK_TRUE (fpx_vecfile_open (s_path ("h.npz"), D, errmsg, sizeof errmsg) == NULL
                && strstr (errmsg, "unknown format"));
    CHECK_TRUE (fpx_vecfile_open (s_dir, D, errmsg, sizeof errmsg) == NULL);
    CHECK_TRUE (fpx_vecfile_open (s_path ("missing.npy"), D, errmsg, sizeof errmsg) == NULL
                && strstr (errmsg, "cannot read"));
    CHECK_TRUE (fpx_vecfile_open (s_path ("h.fvecs"), 0, errmsg, sizeof errmsg) == NULL);
}

//  Reads a file to its end; checks that an opened file's rows are its data.
static void
s_open_and_read (const char *path, size_t size, size_t prefix_max)
{
    char errmsg [512];
    fpx_vecfile_t *in = fpx_vecfile_open (path, 4, errmsg, sizeof errmsg);
    if (!in) {
        CHECK (errmsg [0] != 0, "refused without a message");
        return;
    }
    int64_t rows = fpx_vecfile_rows (in);
    CHECK (rows >= 0 && (size_t) rows * 16 <= size && size - (size_t) rows * 16 <= prefix_max
           + (size_t) rows * 4, "%s: %lld rows in %zu bytes", path, (long long) rows, size);
    float out [64 * 4];
    int64_t n, got = 0;
    while ((n = fpx_vecfile_read (in, out, 64)) > 0)
        got += n;
    CHECK (n == 0 || n == -1, "read returned %lld", (long long) n);
    CHECK (n == -1 || got == rows, "%lld rows read of %lld", (long long) got, (long long) rows);
    fpx_vecfile_close (&in, false, NULL, 0);
}

static void
test_mutations (void *arg)
{
    (void) arg;
    float x [6 * 4];
    s_fill (x, 6, 4);
    uint8_t npy [512], vecs [6 * 20], copy [512];
    size_t npy_size = s_npy (npy, "{'descr': '<f4', 'fortran_order': False, 'shape': (6, 4), }",
                             x, sizeof x);
    for (int r = 0; r < 6; r++) {
        int32_t d = 4;
        memcpy (vecs + r * 20, &d, 4);
        memcpy (vecs + r * 20 + 4, x + r * 4, 16);
    }
    struct { const char *name; const uint8_t *data; size_t size, mutate; } files [] = {
        { "m.npy", npy, npy_size, 128 },
        { "m.fvecs", vecs, sizeof vecs, sizeof vecs },
    };
    const uint8_t bytes [] = { 0, 0xff, '9', ',', ')', '(', '\'', '}', ' ', 0x80, 4 };
    for (size_t f = 0; f < 2; f++) {
        const char *path = s_path (files [f].name);
        for (size_t cut = 0; cut < files [f].size; cut++) {
            s_write_file (path, files [f].data, cut);
            s_open_and_read (path, cut, 128);
        }
        for (size_t at = 0; at < files [f].mutate; at++)
            for (size_t b = 0; b < sizeof bytes; b++) {
                memcpy (copy, files [f].data, files [f].size);
                copy [at] = bytes [b];
                s_write_file (path, copy, files [f].size);
                s_open_and_read (path, files [f].size, 128);
            }
    }
}

int
main (void)
{
    snprintf (s_dir, sizeof s_dir, "/tmp/fpx-vecfile.XXXXXX");
    if (!mkdtemp (s_dir)) {
        perror ("mkdtemp");
        return 1;
    }
    fpx_test_run ("vecfile.round_trip", test_round_trip, NULL);
    fpx_test_run ("vecfile.bvecs_and_ids", test_bvecs_and_ids, NULL);
    fpx_test_run ("vecfile.text", test_text, NULL);
    fpx_test_run ("vecfile.hostile", test_hostile, NULL);
    fpx_test_run ("vecfile.mutations", test_mutations, NULL);
    char command [128];
    snprintf (command, sizeof command, "rm -rf '%s'", s_dir);
    if (system (command) != 0)
        fprintf (stderr, "test_vecfile: could not remove %s\n", s_dir);
    return fpx_test_finish ();
}
