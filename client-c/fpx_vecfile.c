/*  fpx_vecfile.c — .npy, .fvecs, .bvecs and text vector files, read and
    written in batches (see fpx_vecfile.h).

    A file is hostile input: every count in it is checked against the
    file's real size and the caller's dimension before a byte of data is
    trusted, and nothing is allocated from a count the file gives (the
    caller's buffer, of the caller's batch size, receives the rows).
    What it must not do: hold a whole file in memory, or talk to a server.
*/
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fpx_vecfile.h"

typedef enum { S_NPY, S_FVECS, S_BVECS, S_TEXT } s_kind_t;

//  A NumPy header longer than this is refused (NumPy itself reads at most
//  10000 bytes by default).
#define S_NPY_HEADER_MAX   65536
//  A text number longer than this is not one.
#define S_TOKEN_MAX        64
//  The largest d a file may announce, whatever the caller asks.
#define S_DIM_MAX          (1 << 20)

struct _fpx_vecfile_t {
    FILE *file;
    char *path;                 //  as given: for messages
    char *tmp_path;             //  writing: PATH.tmp, renamed on commit
    s_kind_t kind;
    bool ids;                   //  an id file ('<i8')
    bool writing;
    int d;
    int64_t rows;               //  -1: text
    int64_t row;                //  next row to read or write
    int64_t line;               //  text: current line number
    off_t data_offset;          //  npy: where row 0 starts
    size_t record_bytes;        //  bytes of one row on disk
    uint8_t *row_bytes;         //  bvecs: one record's uint8 values
    char errmsg [512];
};

static int
s_error (fpx_vecfile_t *self, const char *format, ...)
{
    va_list args;
    va_start (args, format);
    vsnprintf (self->errmsg, sizeof self->errmsg, format, args);
    va_end (args);
    return -1;
}

static bool
s_little_endian (void)
{
    const uint16_t probe = 1;
    return *(const uint8_t *) &probe == 1;
}

//  Swaps n values of `size` bytes in place when this machine is
//  big-endian: the files are little-endian.
static void
s_to_native (void *data, size_t size, size_t n)
{
    if (s_little_endian ())
        return;
    uint8_t *bytes = data;
    for (size_t i = 0; i < n; i++, bytes += size)
        for (size_t a = 0, b = size - 1; a < b; a++, b--) {
            uint8_t t = bytes [a];
            bytes [a] = bytes [b];
            bytes [b] = t;
        }
}

static int32_t
s_int32_le (const uint8_t *p)
{
    return (int32_t) ((uint32_t) p [0] | (uint32_t) p [1] << 8 | (uint32_t) p [2] << 16
                      | (uint32_t) p [3] << 24);
}

static const char *
s_extension (const char *path)
{
    const char *slash = strrchr (path, '/');
    const char *dot = strrchr (slash ? slash : path, '.');
    return dot ? dot : "";
}

static fpx_vecfile_t *
s_new (const char *path)
{
    fpx_vecfile_t *self = calloc (1, sizeof *self);
    if (!self || !(self->path = strdup (path))) {
        free (self);
        return NULL;
    }
    return self;
}

static void
s_destroy (fpx_vecfile_t **self_p)
{
    fpx_vecfile_t *self = *self_p;
    if (!self)
        return;
    if (self->file && self->file != stdin)
        fclose (self->file);
    free (self->path);
    free (self->tmp_path);
    free (self->row_bytes);
    free (self);
    *self_p = NULL;
}

//  Copies the handle's message to the caller and frees the handle.
static fpx_vecfile_t *
s_fail_open (fpx_vecfile_t **self_p, char *errmsg, size_t errmsg_size)
{
    if (errmsg && errmsg_size)
        snprintf (errmsg, errmsg_size, "%s", *self_p ? (*self_p)->errmsg : "out of memory");
    s_destroy (self_p);
    return NULL;
}

/* ---- NumPy header -------------------------------------------------------
    The header is a Python dict literal, e.g.
    {'descr': '<f4', 'fortran_order': False, 'shape': (1000, 128), }
    Parsed with a cursor that never reads past the header's end.          */

typedef struct {
    const char *at, *end;
} s_cursor_t;

static void
s_skip_space (s_cursor_t *c)
{
    while (c->at < c->end && (*c->at == ' ' || *c->at == '\t' || *c->at == '\n'))
        c->at++;
}

static bool
s_take (s_cursor_t *c, char ch)
{
    s_skip_space (c);
    if (c->at < c->end && *c->at == ch) {
        c->at++;
        return true;
    }
    return false;
}

//  A quoted string without escapes into out[size].
static bool
s_take_string (s_cursor_t *c, char *out, size_t size)
{
    s_skip_space (c);
    if (c->at >= c->end || (*c->at != '\'' && *c->at != '"'))
        return false;
    char quote = *c->at++;
    size_t len = 0;
    while (c->at < c->end && *c->at != quote) {
        if (*c->at == '\\' || len + 1 >= size)
            return false;
        out [len++] = *c->at++;
    }
    if (c->at >= c->end)
        return false;
    c->at++;
    out [len] = 0;
    return true;
}

static bool
s_take_word (s_cursor_t *c, const char *word)
{
    s_skip_space (c);
    size_t len = strlen (word);
    if ((size_t) (c->end - c->at) < len || strncmp (c->at, word, len) != 0)
        return false;
    c->at += len;
    return true;
}

static bool
s_take_count (s_cursor_t *c, int64_t *out)
{
    s_skip_space (c);
    int64_t value = 0;
    const char *start = c->at;
    while (c->at < c->end && *c->at >= '0' && *c->at <= '9') {
        int digit = *c->at++ - '0';
        if (value > (INT64_MAX - digit) / 10)
            return false;
        value = value * 10 + digit;
    }
    *out = value;
    return c->at > start;
}

//  A shape tuple: "()", "(n,)", "(n, d)", … at most 8 dimensions.
static bool
s_take_shape (s_cursor_t *c, int64_t *shape, int *ndim)
{
    if (!s_take (c, '('))
        return false;
    *ndim = 0;
    while (!s_take (c, ')')) {
        if (*ndim == 8 || !s_take_count (c, &shape [(*ndim)++]))
            return false;
        if (!s_take (c, ',')) {
            if (!s_take (c, ')'))
                return false;
            break;
        }
    }
    return true;
}

typedef struct {
    char descr [32];
    bool fortran_order;
    int64_t shape [8];
    int ndim;
} s_npy_header_t;

static int
s_parse_npy_header (fpx_vecfile_t *self, const char *text, size_t size, s_npy_header_t *header)
{
    s_cursor_t c = { text, text + size };
    bool have_descr = false, have_order = false, have_shape = false;
    if (!s_take (&c, '{'))
        goto malformed;
    while (!s_take (&c, '}')) {
        char key [32];
        if (!s_take_string (&c, key, sizeof key) || !s_take (&c, ':'))
            goto malformed;
        bool ok = false;
        if (strcmp (key, "descr") == 0 && !have_descr)
            ok = have_descr = s_take_string (&c, header->descr, sizeof header->descr);
        else
        if (strcmp (key, "fortran_order") == 0 && !have_order) {
            ok = have_order = true;
            if (s_take_word (&c, "True"))
                header->fortran_order = true;
            else
            if (s_take_word (&c, "False"))
                header->fortran_order = false;
            else
                ok = false;
        }
        else
        if (strcmp (key, "shape") == 0 && !have_shape)
            ok = have_shape = s_take_shape (&c, header->shape, &header->ndim);
        else
            return s_error (self, "%s: unexpected or repeated key '%s' in its NumPy header",
                            self->path, key);
        if (!ok)
            goto malformed;
        if (!s_take (&c, ',')) {
            if (!s_take (&c, '}'))
                goto malformed;
            break;
        }
    }
    s_skip_space (&c);
    if (c.at != c.end || !have_descr || !have_order || !have_shape)
        goto malformed;
    return 0;
malformed:
    return s_error (self, "%s: malformed NumPy header", self->path);
}

//  Reads and checks a .npy file's header: dtype, order and shape, and that
//  the file holds exactly the data the shape announces.
static int
s_open_npy (fpx_vecfile_t *self, off_t file_size)
{
    uint8_t prefix [12];
    if (fread (prefix, 1, 10, self->file) != 10 || memcmp (prefix, "\x93NUMPY", 6) != 0)
        return s_error (self, "%s: not a NumPy .npy file", self->path);
    int major = prefix [6];
    size_t header_size;
    off_t offset;
    if (major == 1) {
        header_size = prefix [8] | (size_t) prefix [9] << 8;
        offset = 10;
    }
    else
    if (major == 2 || major == 3) {
        if (fread (prefix + 10, 1, 2, self->file) != 2)
            return s_error (self, "%s: truncated NumPy header", self->path);
        header_size = (size_t) (uint32_t) s_int32_le (prefix + 8);
        offset = 12;
    }
    else
        return s_error (self, "%s: NumPy format version %d is not supported", self->path, major);
    if (header_size > S_NPY_HEADER_MAX)
        return s_error (self, "%s: NumPy header of %zu bytes is too long", self->path, header_size);
    char *text = malloc (header_size + 1);
    if (!text)
        return s_error (self, "out of memory");
    if (fread (text, 1, header_size, self->file) != header_size) {
        free (text);
        return s_error (self, "%s: truncated NumPy header", self->path);
    }
    s_npy_header_t header = { .ndim = 0 };
    int rc = s_parse_npy_header (self, text, header_size, &header);
    free (text);
    if (rc)
        return rc;
    const char *want = self->ids ? "<i8" : "<f4";
    if (strcmp (header.descr, want) != 0)
        return s_error (self, "%s: dtype '%s', expected '%s' (%s)", self->path, header.descr,
                        want, self->ids ? "int64 ids" : "float32 vectors");
    if (header.fortran_order)
        return s_error (self, "%s: Fortran order: write it in C order (numpy.ascontiguousarray)",
                        self->path);
    int64_t rows = header.ndim > 0 ? header.shape [0] : 0;
    if (self->ids) {
        if (header.ndim != 1)
            return s_error (self, "%s: %d-D array, expected a 1-D array of ids", self->path,
                            header.ndim);
        self->record_bytes = sizeof (int64_t);
    }
    else {
        if (header.ndim != 2)
            return s_error (self, "%s: %d-D array, expected a 2-D (rows, d) array", self->path,
                            header.ndim);
        if (header.shape [1] != self->d)
            return s_error (self, "%s: vectors of d = %lld, expected d = %d", self->path,
                            (long long) header.shape [1], self->d);
        self->record_bytes = (size_t) self->d * sizeof (float);
    }
    self->data_offset = offset + (off_t) header_size;
    int64_t data_bytes = (int64_t) (file_size - self->data_offset);
    if (data_bytes < 0 || rows > data_bytes / (int64_t) self->record_bytes
    ||  rows * (int64_t) self->record_bytes != data_bytes)
        return s_error (self, "%s: its header announces %lld rows but the file holds %lld bytes "
                        "of data (%zu per row): truncated or damaged", self->path,
                        (long long) rows, (long long) data_bytes, self->record_bytes);
    self->rows = rows;
    return 0;
}

//  .fvecs/.bvecs: d comes from the first record; the size must be a whole
//  number of records.
static int
s_open_xvecs (fpx_vecfile_t *self, off_t file_size)
{
    size_t element = self->kind == S_FVECS ? sizeof (float) : 1;
    self->record_bytes = sizeof (int32_t) + (size_t) self->d * element;
    if (file_size > 0) {
        uint8_t head [4];
        if (fread (head, 1, 4, self->file) != 4)
            return s_error (self, "%s: truncated first record", self->path);
        int32_t d = s_int32_le (head);
        if (d != self->d)
            return s_error (self, "%s: vectors of d = %d, expected d = %d", self->path, d,
                            self->d);
        if (fseeko (self->file, 0, SEEK_SET))
            return s_error (self, "%s: %s", self->path, strerror (errno));
    }
    if (file_size % (off_t) self->record_bytes)
        return s_error (self, "%s: %lld bytes is not a whole number of %zu-byte records "
                        "(d = %d): truncated or damaged", self->path, (long long) file_size,
                        self->record_bytes, self->d);
    self->rows = (int64_t) (file_size / (off_t) self->record_bytes);
    if (self->kind == S_BVECS && !(self->row_bytes = malloc ((size_t) self->d)))
        return s_error (self, "out of memory");
    return 0;
}

static fpx_vecfile_t *
s_open (const char *path, int d, bool ids, char *errmsg, size_t errmsg_size)
{
    fpx_vecfile_t *self = s_new (path);
    if (!self)
        return s_fail_open (&self, errmsg, errmsg_size);
    self->ids = ids;
    self->d = ids ? 1 : d;
    const char *ext = s_extension (path);
    if (!ids && (d <= 0 || d > S_DIM_MAX)) {
        s_error (self, "d = %d is out of range", d);
        return s_fail_open (&self, errmsg, errmsg_size);
    }
    if (strcmp (path, "-") == 0 || strcasecmp (ext, ".txt") == 0 || strcasecmp (ext, ".csv") == 0
    ||  strcasecmp (ext, ".tsv") == 0)
        self->kind = S_TEXT;
    else
    if (strcasecmp (ext, ".npy") == 0)
        self->kind = S_NPY;
    else
    if (strcasecmp (ext, ".fvecs") == 0)
        self->kind = S_FVECS;
    else
    if (strcasecmp (ext, ".bvecs") == 0)
        self->kind = S_BVECS;
    else {
        s_error (self, "%s: unknown format (expected .npy, .fvecs, .bvecs, .txt, .csv or -)",
                 path);
        return s_fail_open (&self, errmsg, errmsg_size);
    }
    if (ids && self->kind != S_NPY) {
        s_error (self, "%s: ids must be a .npy file of int64", path);
        return s_fail_open (&self, errmsg, errmsg_size);
    }
    if (self->kind == S_TEXT) {
        self->rows = -1;
        self->file = strcmp (path, "-") == 0 ? stdin : fopen (path, "r");
        if (!self->file) {
            s_error (self, "cannot read %s: %s", path, strerror (errno));
            return s_fail_open (&self, errmsg, errmsg_size);
        }
        return self;
    }
    struct stat st;
    self->file = fopen (path, "rb");
    if (!self->file || fstat (fileno (self->file), &st)) {
        s_error (self, "cannot read %s: %s", path, strerror (errno));
        return s_fail_open (&self, errmsg, errmsg_size);
    }
    if (!S_ISREG (st.st_mode)) {
        s_error (self, "%s: not a regular file", path);
        return s_fail_open (&self, errmsg, errmsg_size);
    }
    setvbuf (self->file, NULL, _IOFBF, 1 << 20);
    int rc = self->kind == S_NPY ? s_open_npy (self, st.st_size) : s_open_xvecs (self, st.st_size);
    if (rc || fpx_vecfile_seek (self, 0))
        return s_fail_open (&self, errmsg, errmsg_size);
    return self;
}

fpx_vecfile_t *
fpx_vecfile_open (const char *path, int d, char *errmsg, size_t errmsg_size)
{
    return s_open (path, d, false, errmsg, errmsg_size);
}

fpx_vecfile_t *
fpx_vecfile_open_ids (const char *path, char *errmsg, size_t errmsg_size)
{
    return s_open (path, 1, true, errmsg, errmsg_size);
}

int64_t
fpx_vecfile_rows (fpx_vecfile_t *self)
{
    return self->rows;
}

bool
fpx_vecfile_is_text (fpx_vecfile_t *self)
{
    return self->kind == S_TEXT;
}

int
fpx_vecfile_seek (fpx_vecfile_t *self, int64_t row)
{
    if (self->kind == S_TEXT || self->writing)
        return s_error (self, "%s: cannot seek in this file", self->path);
    if (row < 0 || row > self->rows)
        return s_error (self, "%s: row %lld is outside the file's %lld rows", self->path,
                        (long long) row, (long long) self->rows);
    off_t at = self->data_offset + (off_t) row * (off_t) self->record_bytes;
    if (fseeko (self->file, at, SEEK_SET))
        return s_error (self, "%s: %s", self->path, strerror (errno));
    self->row = row;
    return 0;
}

/* ---- reading ------------------------------------------------------------ */

static int
s_short_read (fpx_vecfile_t *self)
{
    return s_error (self, "%s: %s at row %lld (the file changed while read?)", self->path,
                    ferror (self->file) ? strerror (errno) : "unexpected end of file",
                    (long long) self->row);
}

//  One .fvecs/.bvecs record into out[d].
static int
s_read_xvecs_row (fpx_vecfile_t *self, float *out)
{
    uint8_t head [4];
    if (fread (head, 1, 4, self->file) != 4)
        return s_short_read (self);
    int32_t d = s_int32_le (head);
    if (d != self->d)
        return s_error (self, "%s: row %lld has d = %d, expected d = %d", self->path,
                        (long long) self->row, d, self->d);
    if (self->kind == S_FVECS) {
        if (fread (out, sizeof (float), (size_t) d, self->file) != (size_t) d)
            return s_short_read (self);
        s_to_native (out, sizeof (float), (size_t) d);
    }
    else {
        if (fread (self->row_bytes, 1, (size_t) d, self->file) != (size_t) d)
            return s_short_read (self);
        for (int i = 0; i < d; i++)
            out [i] = self->row_bytes [i];
    }
    return 0;
}

//  One number of a text line into token[S_TOKEN_MAX]; c is its first
//  character. Returns the character after it.
static int
s_text_token (fpx_vecfile_t *self, int c, char *token, bool *too_long)
{
    size_t len = 0;
    *too_long = false;
    while (c != EOF && c != '\n' && c != ' ' && c != '\t' && c != ',' && c != '\r') {
        if (len + 1 < S_TOKEN_MAX)
            token [len++] = (char) c;
        else
            *too_long = true;
        c = getc (self->file);
    }
    token [len] = 0;
    return c;
}

//  One text vector into out[d]. Returns 1, 0 at the end, or -1.
static int
s_read_text_row (fpx_vecfile_t *self, float *out)
{
    for (;;) {
        int c = getc (self->file);
        if (c == EOF)
            return ferror (self->file) ? s_error (self, "%s: %s", self->path, strerror (errno)) : 0;
        self->line++;
        int count = 0;
        if (c == '#')
            while (c != EOF && c != '\n')
                c = getc (self->file);
        while (c != EOF && c != '\n') {
            if (c == ' ' || c == '\t' || c == ',' || c == '\r') {
                c = getc (self->file);
                continue;
            }
            char token [S_TOKEN_MAX], *end;
            bool too_long;
            c = s_text_token (self, c, token, &too_long);
            if (count == self->d)
                return s_error (self, "%s: line %lld has more than d = %d numbers",
                                self->path, (long long) self->line, self->d);
            errno = 0;
            float value = strtof (token, &end);
            if (too_long || *end || end == token || !isfinite (value))
                return s_error (self, "%s: line %lld: '%.20s' is not a finite number",
                                self->path, (long long) self->line, token);
            out [count++] = value;
        }
        if (count == 0)
            continue;               //  an empty or comment line
        if (count != self->d)
            return s_error (self, "%s: line %lld has %d numbers, expected d = %d", self->path,
                            (long long) self->line, count, self->d);
        return 1;
    }
}

int64_t
fpx_vecfile_read (fpx_vecfile_t *self, float *out, int64_t max_rows)
{
    if (self->ids || self->writing)
        return s_error (self, "%s: not a vector file open for reading", self->path);
    int64_t n = 0;
    if (self->kind == S_TEXT) {
        for (; n < max_rows; n++) {
            int rc = s_read_text_row (self, out + n * self->d);
            if (rc < 0)
                return -1;
            if (rc == 0)
                break;
        }
    }
    else {
        n = self->rows - self->row < max_rows ? self->rows - self->row : max_rows;
        if (self->kind == S_NPY) {
            if (fread (out, self->record_bytes, (size_t) n, self->file) != (size_t) n)
                return s_short_read (self);
            s_to_native (out, sizeof (float), (size_t) n * (size_t) self->d);
        }
        else {
            //  row by row: a record's d is checked, and an error names its row
            for (int64_t i = 0; i < n; i++, self->row++)
                if (s_read_xvecs_row (self, out + i * self->d))
                    return -1;
            return n;
        }
    }
    self->row += n;
    return n;
}

int64_t
fpx_vecfile_read_ids (fpx_vecfile_t *self, int64_t *out, int64_t max_rows)
{
    if (!self->ids || self->writing)
        return s_error (self, "%s: not an id file", self->path);
    int64_t n = self->rows - self->row < max_rows ? self->rows - self->row : max_rows;
    if (fread (out, sizeof (int64_t), (size_t) n, self->file) != (size_t) n)
        return s_short_read (self);
    s_to_native (out, sizeof (int64_t), (size_t) n);
    self->row += n;
    return n;
}

/* ---- writing ------------------------------------------------------------ */

static int
s_write_npy_header (fpx_vecfile_t *self)
{
    //  Version 1.0; the header is padded with spaces so that the data
    //  start on a 64-byte boundary, as NumPy writes it.
    char dict [160];
    int len = snprintf (dict, sizeof dict, "{'descr': '<f4', 'fortran_order': False, "
                        "'shape': (%lld, %d), }", (long long) self->rows, self->d);
    size_t total = 10 + (size_t) len + 1;
    size_t padded = (total + 63) / 64 * 64;
    size_t header_size = padded - 10;
    uint8_t prefix [10] = { 0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0,
                            (uint8_t) (header_size & 0xff), (uint8_t) (header_size >> 8) };
    if (fwrite (prefix, 1, sizeof prefix, self->file) != sizeof prefix
    ||  fwrite (dict, 1, (size_t) len, self->file) != (size_t) len)
        return -1;
    for (size_t i = (size_t) len; i + 1 < header_size; i++)
        if (putc (' ', self->file) == EOF)
            return -1;
    return putc ('\n', self->file) == EOF ? -1 : 0;
}

fpx_vecfile_t *
fpx_vecfile_create (const char *path, int d, int64_t rows, char *errmsg, size_t errmsg_size)
{
    fpx_vecfile_t *self = s_new (path);
    if (!self)
        return s_fail_open (&self, errmsg, errmsg_size);
    self->writing = true;
    self->d = d;
    self->rows = rows;
    const char *ext = s_extension (path);
    if (strcasecmp (ext, ".npy") == 0)
        self->kind = S_NPY;
    else
    if (strcasecmp (ext, ".fvecs") == 0)
        self->kind = S_FVECS;
    else {
        s_error (self, "%s: unknown format (expected .npy or .fvecs)", path);
        return s_fail_open (&self, errmsg, errmsg_size);
    }
    if (d <= 0 || d > S_DIM_MAX || rows < 0) {
        s_error (self, "d = %d, rows = %lld are out of range", d, (long long) rows);
        return s_fail_open (&self, errmsg, errmsg_size);
    }
    size_t size = strlen (path) + 5;
    if (!(self->tmp_path = malloc (size)))
        return s_fail_open (&self, errmsg, errmsg_size);
    snprintf (self->tmp_path, size, "%s.tmp", path);
    if (!(self->file = fopen (self->tmp_path, "wb"))) {
        s_error (self, "cannot write %s: %s", self->tmp_path, strerror (errno));
        return s_fail_open (&self, errmsg, errmsg_size);
    }
    setvbuf (self->file, NULL, _IOFBF, 1 << 20);
    if (self->kind == S_NPY && s_write_npy_header (self)) {
        s_error (self, "cannot write %s: %s", self->tmp_path, strerror (errno));
        fclose (self->file);
        self->file = NULL;
        remove (self->tmp_path);
        return s_fail_open (&self, errmsg, errmsg_size);
    }
    return self;
}

//  Writes n values of `size` bytes in little-endian order.
static int
s_write_le (FILE *file, const void *data, size_t size, size_t n)
{
    if (s_little_endian ())
        return fwrite (data, size, n, file) == n ? 0 : -1;
    uint8_t value [8];
    for (size_t i = 0; i < n; i++) {
        memcpy (value, (const uint8_t *) data + i * size, size);
        s_to_native (value, size, 1);
        if (fwrite (value, size, 1, file) != 1)
            return -1;
    }
    return 0;
}

int
fpx_vecfile_write (fpx_vecfile_t *self, const float *x, int64_t n)
{
    if (!self->writing)
        return s_error (self, "%s: not open for writing", self->path);
    if (n < 0 || n > self->rows - self->row)
        return s_error (self, "%s: %lld rows more than the %lld announced", self->path,
                        (long long) (self->row + n - self->rows), (long long) self->rows);
    int rc = 0;
    if (self->kind == S_NPY)
        rc = s_write_le (self->file, x, sizeof (float), (size_t) n * (size_t) self->d);
    else {
        int32_t d = self->d;
        for (int64_t i = 0; i < n && rc == 0; i++)
            rc = s_write_le (self->file, &d, sizeof d, 1)
              || s_write_le (self->file, x + i * self->d, sizeof (float), (size_t) self->d);
    }
    if (rc)
        return s_error (self, "cannot write %s: %s", self->tmp_path, strerror (errno));
    self->row += n;
    return 0;
}

int
fpx_vecfile_close (fpx_vecfile_t **self_p, bool commit, char *errmsg, size_t errmsg_size)
{
    fpx_vecfile_t *self = *self_p;
    if (!self)
        return 0;
    int rc = 0;
    if (self->writing) {
        if (commit && self->row != self->rows)
            rc = s_error (self, "%s: %lld rows written of %lld", self->path,
                          (long long) self->row, (long long) self->rows);
        if (!rc && commit && (fflush (self->file) || fsync (fileno (self->file))))
            rc = s_error (self, "cannot write %s: %s", self->tmp_path, strerror (errno));
        int closed = fclose (self->file);
        self->file = NULL;
        if (!rc && commit && closed)
            rc = s_error (self, "cannot write %s: %s", self->tmp_path, strerror (errno));
        if (!rc && commit && rename (self->tmp_path, self->path))
            rc = s_error (self, "cannot rename %s to %s: %s", self->tmp_path, self->path,
                          strerror (errno));
        if (rc || !commit)
            remove (self->tmp_path);
    }
    if (rc && errmsg && errmsg_size)
        snprintf (errmsg, errmsg_size, "%s", self->errmsg);
    s_destroy (self_p);
    return rc;
}

const char *
fpx_vecfile_errmsg (fpx_vecfile_t *self)
{
    return self->errmsg;
}
