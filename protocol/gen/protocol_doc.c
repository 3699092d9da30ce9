/*  protocol_doc.c — fpx-protocol-doc: the tables of docs/PROTOCOL.md that
    come from the protocol definition (FPX_OPCODES, FPX_ERRORS), made from
    the compiled tables themselves rather than by parsing the headers.

    Usage: fpx-protocol-doc [--write] docs/PROTOCOL.md
      check (default): exit 1, naming each difference, when a generated
        block differs from what the definition gives, or when the
        hand-written per-opcode parameter table or the status table does
        not list exactly the definition's codes and names, in order;
      --write: rewrites the generated blocks in place (make protocol-doc).

    A generated block is the text between the lines
        <!-- begin generated NAME (make protocol-doc) -->
        <!-- end generated NAME -->
    for NAME roles and opcodes. Runs at build time only: it trusts its
    input, and must not be linked into anything else.                   */
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fpx_protocol.h"

typedef struct {
    char *data;
    size_t size, cap;
} s_buf_t;

static void
s_append (s_buf_t *buf, const char *format, ...)
{
    va_list args;
    for (;;) {
        va_start (args, format);
        size_t room = buf->cap - buf->size;
        int len = vsnprintf (buf->data ? buf->data + buf->size : NULL, room, format, args);
        va_end (args);
        if (len < 0)
            abort ();
        if ((size_t) len < room) {
            buf->size += (size_t) len;
            return;
        }
        buf->cap = (buf->cap + (size_t) len + 1) * 2;
        buf->data = realloc (buf->data, buf->cap);
        if (!buf->data)
            abort ();
    }
}

static const char *
s_flag_names (unsigned flags)
{
    static char text [128];
    static const struct { unsigned flag; const char *name; } names [] = {
        { FPX_OPF_RETRY, "retry" }, { FPX_OPF_LONG, "long" }, { FPX_OPF_LOGGED, "logged" },
        { FPX_OPF_GROWS, "grows" }, { FPX_OPF_CREATES, "creates" }, { FPX_OPF_OWNS, "owns" },
    };
    text [0] = 0;
    for (size_t i = 0; i < sizeof names / sizeof names [0]; i++)
        if (flags & names [i].flag)
            snprintf (text + strlen (text), sizeof text - strlen (text), "%s%s",
                      text [0] ? ", " : "", names [i].name);
    return text [0] ? text : "—";
}

//  The roles table: which opcodes each role may send (code order).
static void
s_roles (s_buf_t *out)
{
    s_append (out, "| role | opcodes |\n|---|---|\n| read |");
    const char *sep = " ";
    for (int op = 1; op < FPX_OP_LAST_; op++) {
        const fpx_opcode_info_t *info = fpx_opcode_info (op);
        if (info && info->role == FPX_ROLE_READ) {
            s_append (out, "%s%s", sep, info->name);
            sep = ", ";
        }
    }
    s_append (out, " |\n| write | the above and");
    sep = " ";
    for (int op = 1; op < FPX_OP_LAST_; op++) {
        const fpx_opcode_info_t *info = fpx_opcode_info (op);
        if (info && info->role == FPX_ROLE_WRITE) {
            s_append (out, "%s%s", sep, info->name);
            sep = ", ";
        }
    }
    s_append (out, " |\n| admin | everything; `info` with `\"all\": true` (every tenant's "
              "usage); future administration opcodes |\n");
}

static void
s_opcodes (s_buf_t *out)
{
    s_append (out, "| code | name | role | lock | flags | |\n|---|---|---|---|---|---|\n");
    for (int op = 1; op < FPX_OP_LAST_; op++) {
        const fpx_opcode_info_t *info = fpx_opcode_info (op);
        if (info)
            s_append (out, "| %d | %s | %s | %s | %s | %s |\n", info->code, info->name,
                      fpx_role_name (info->role), fpx_lock_name (info->lock),
                      s_flag_names (info->flags), info->summary);
    }
}

static const struct {
    const char *name;
    void (*make) (s_buf_t *out);
} s_blocks [] = { { "roles", s_roles }, { "opcodes", s_opcodes } };

static char *
s_read_file (const char *path, size_t *size_p)
{
    FILE *file = fopen (path, "rb");
    if (!file)
        return NULL;
    s_buf_t buf = { 0 };
    char chunk [65536];
    size_t got;
    s_append (&buf, "%s", "");
    while ((got = fread (chunk, 1, sizeof chunk, file)) > 0)
        s_append (&buf, "%.*s", (int) got, chunk);
    fclose (file);
    *size_p = buf.size;
    return buf.data;
}

//  Checks the rows of the markdown table whose header line starts with
//  `header` against the definition: first cell the code, second the name
//  (with or without backquotes), every code once and in order. Returns
//  the number of differences, each printed.
typedef bool (*s_row_fn) (int index, long *code, const char **name);

static bool
s_opcode_row (int index, long *code, const char **name)
{
    int seen = 0;
    for (int op = 1; op < FPX_OP_LAST_; op++) {
        const fpx_opcode_info_t *info = fpx_opcode_info (op);
        if (info && seen++ == index) {
            *code = info->code;
            *name = info->name;
            return true;
        }
    }
    return false;
}

static bool
s_status_row (int index, long *code, const char **name)
{
    static const struct { int code; const char *name; } errors [] = {
        { 0, "FPX_OK" },
#define S_ERROR_(NAME, num, msg) { num, "FPX_" #NAME },
        FPX_ERRORS (S_ERROR_)
#undef S_ERROR_
    };
    if (index < 0 || (size_t) index >= sizeof errors / sizeof errors [0])
        return false;
    *code = errors [index].code;
    *name = errors [index].name;
    return true;
}

static int
s_check_table (const char *doc, const char *path, const char *header, s_row_fn expected)
{
    const char *at = strstr (doc, header);
    if (!at) {
        fprintf (stderr, "%s: no table headed \"%s\"\n", path, header);
        return 1;
    }
    at = strchr (at, '\n');             //  past the header
    at = at ? strchr (at + 1, '\n') : NULL;   //  past |---|
    int errors = 0, index = 0;
    while (at && at [1] == '|') {
        const char *line = at + 1;
        long code = 0;
        char name [128] = "";
        const char *cell = line + 1;
        code = strtol (cell, NULL, 10);
        const char *second = strchr (cell, '|');
        if (second) {
            second++;
            while (*second == ' ' || *second == '`')
                second++;
            size_t len = strcspn (second, " `|");
            snprintf (name, sizeof name, "%.*s", (int) len, second);
        }
        long want_code;
        const char *want_name;
        if (!expected (index, &want_code, &want_name)) {
            fprintf (stderr, "%s: table \"%s\": row %d (%ld %s) is not in the definition\n",
                     path, header, index + 1, code, name);
            errors++;
        }
        else if (code != want_code || strcmp (name, want_name)) {
            fprintf (stderr, "%s: table \"%s\": row %d is %ld %s, the definition says %ld %s\n",
                     path, header, index + 1, code, name, want_code, want_name);
            errors++;
        }
        index++;
        at = strchr (line, '\n');
    }
    long want_code;
    const char *want_name;
    for (; expected (index, &want_code, &want_name); index++) {
        fprintf (stderr, "%s: table \"%s\": %ld %s is missing\n", path, header, want_code,
                 want_name);
        errors++;
    }
    return errors;
}

int
main (int argc, char *argv [])
{
    bool write = argc == 3 && !strcmp (argv [1], "--write");
    if (argc != 2 + write) {
        fprintf (stderr, "usage: fpx-protocol-doc [--write] docs/PROTOCOL.md\n");
        return 2;
    }
    const char *path = argv [argc - 1];
    size_t size;
    char *doc = s_read_file (path, &size);
    if (!doc) {
        fprintf (stderr, "fpx-protocol-doc: cannot read %s\n", path);
        return 2;
    }
    s_buf_t out = { 0 };
    s_append (&out, "%s", "");
    const char *rest = doc;
    int errors = 0;
    for (size_t i = 0; i < sizeof s_blocks / sizeof s_blocks [0]; i++) {
        char begin [128], end [128];
        snprintf (begin, sizeof begin, "<!-- begin generated %s (make protocol-doc) -->\n",
                  s_blocks [i].name);
        snprintf (end, sizeof end, "<!-- end generated %s -->\n", s_blocks [i].name);
        char *from = strstr (rest, begin);
        char *to = from ? strstr (from, end) : NULL;
        if (!to) {
            fprintf (stderr, "%s: no generated block '%s' (the lines %.*s and %.*s)\n", path,
                     s_blocks [i].name, (int) strlen (begin) - 1, begin, (int) strlen (end) - 1, end);
            errors++;
            continue;
        }
        from += strlen (begin);
        s_buf_t block = { 0 };
        s_append (&block, "%s", "");
        s_blocks [i].make (&block);
        if (block.size != (size_t) (to - from) || memcmp (block.data, from, block.size)) {
            if (!write)
                fprintf (stderr, "%s: the '%s' table differs from FPX_OPCODES "
                         "(protocol/fpx_protocol.h): run make protocol-doc\n", path, s_blocks [i].name);
            errors += !write;
        }
        s_append (&out, "%.*s%s", (int) (from - rest), rest, block.data);
        rest = to;
        free (block.data);
    }
    s_append (&out, "%s", rest);
    errors += s_check_table (doc, path, "| code | name | parameters |", s_opcode_row);
    errors += s_check_table (doc, path, "| code | name | meaning |", s_status_row);
    if (write && (out.size != size || memcmp (out.data, doc, size))) {
        FILE *file = fopen (path, "wb");
        if (!file || fwrite (out.data, 1, out.size, file) != out.size || fclose (file)) {
            fprintf (stderr, "fpx-protocol-doc: cannot write %s\n", path);
            return 2;
        }
    }
    free (out.data);
    free (doc);
    return errors ? 1 : 0;
}
