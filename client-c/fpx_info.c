/*  fpx_info.c — the decoded info reply (faissproxy.h, "server statistics").

    The reply's map is walked once, depth first: every scalar becomes one
    figure named by its path ("latency.search.p99"), and the same walk
    writes the JSON text. A reply is a peer's bytes like any other: the
    reader (fpx_params.c) bounds every length and the nesting, and this
    file bounds what it builds from them (paths, figures, JSON size), so
    a hostile reply costs at most a few times its own size.

    It must not touch sockets or know which figures exist: what the server
    sends is what the caller gets.
*/
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fpx_info.h"

#define FPX_INFO_PATH_MAX    256             //  bytes of a figure's path
#define FPX_INFO_ENTRIES_MAX 65536           //  figures in one reply
#define FPX_INFO_JSON_MAX    (64 << 20)      //  bytes of its JSON text

typedef struct {
    char *path;
    fpx_info_type_t type;
    int64_t i;                 //  INT, BOOL
    double f;                  //  DOUBLE (and INT, BOOL converted)
    char *text;                //  as printed; STR: the string itself
} s_entry_t;

struct _fpx_info_t {
    s_entry_t *entries;
    size_t count, capacity;
    char *json;
    size_t json_size, json_capacity;
};

typedef struct {
    fpx_info_t *info;
    int rc;                    //  first failure; later writes do nothing
    char *errmsg;
    size_t errmsg_size;
} s_walk_t;

__attribute__ ((format (printf, 3, 4)))
static void
s_fail (s_walk_t *walk, int rc, const char *format, ...)
{
    if (walk->rc)
        return;
    walk->rc = rc;
    va_list args;
    va_start (args, format);
    vsnprintf (walk->errmsg, walk->errmsg_size, format, args);
    va_end (args);
}

// ---- JSON ---------------------------------------------------------------------

static void
s_json_put (s_walk_t *walk, const char *data, size_t size)
{
    fpx_info_t *info = walk->info;
    if (walk->rc)
        return;
    if (info->json_size + size + 1 > info->json_capacity) {
        size_t capacity = info->json_capacity ? info->json_capacity : 4096;
        while (capacity < info->json_size + size + 1)
            capacity *= 2;
        char *grown = capacity <= FPX_INFO_JSON_MAX ? realloc (info->json, capacity) : NULL;
        if (!grown) {
            s_fail (walk, capacity <= FPX_INFO_JSON_MAX ? FPX_ENOMEM : FPX_EPROTO,
                    "info reply too large: its JSON text passes %d bytes", FPX_INFO_JSON_MAX);
            return;
        }
        info->json = grown;
        info->json_capacity = capacity;
    }
    memcpy (info->json + info->json_size, data, size);
    info->json_size += size;
    info->json [info->json_size] = 0;
}

static void
s_json_text (s_walk_t *walk, const char *text)
{
    s_json_put (walk, text, strlen (text));
}

//  A JSON string: '"' and '\' escaped, bytes outside printable ASCII as
//  \u00XX (the server sends ASCII names; anything else is shown, not
//  trusted to be UTF-8).
static void
s_json_string (s_walk_t *walk, const char *ptr, size_t len)
{
    s_json_put (walk, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char) ptr [i];
        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\')
            continue;
        s_json_put (walk, ptr + run, i - run);
        char escape [8];
        snprintf (escape, sizeof escape, c == '"' || c == '\\' ? "\\%c" : "\\u%04x", c);
        s_json_text (walk, escape);
        run = i + 1;
    }
    s_json_put (walk, ptr + run, len - run);
    s_json_put (walk, "\"", 1);
}

// ---- figures ------------------------------------------------------------------

static char *
s_strndup_printable (const char *ptr, size_t len)
{
    char *copy = malloc (len + 1);
    if (!copy)
        return NULL;
    for (size_t i = 0; i < len; i++)
        copy [i] = ptr [i] >= 0x20 && ptr [i] < 0x7f ? ptr [i] : '?';
    copy [len] = 0;
    return copy;
}

//  Adds the figure at path (the walk's buffer, path_len bytes) for value,
//  a scalar, and writes it as JSON.
static void
s_add_scalar (s_walk_t *walk, const char *path, size_t path_len, const fpx_mp_value_t *value)
{
    fpx_info_t *info = walk->info;
    if (walk->rc)
        return;
    if (info->count == FPX_INFO_ENTRIES_MAX) {
        s_fail (walk, FPX_EPROTO, "info reply too large: more than %d figures",
                FPX_INFO_ENTRIES_MAX);
        return;
    }
    if (info->count == info->capacity) {
        size_t capacity = info->capacity ? info->capacity * 2 : 64;
        s_entry_t *grown = realloc (info->entries, capacity * sizeof *grown);
        if (!grown) {
            s_fail (walk, FPX_ENOMEM, "out of memory");
            return;
        }
        info->entries = grown;
        info->capacity = capacity;
    }
    s_entry_t entry = { .type = FPX_INFO_NIL };
    char text [64] = "null";
    switch (value->type) {
        case FPX_MP_BOOL:
            entry.type = FPX_INFO_BOOL;
            entry.i = value->v.b;
            entry.f = value->v.b;
            snprintf (text, sizeof text, "%s", value->v.b ? "true" : "false");
            break;
        case FPX_MP_INT:
            if (value->is_unsigned) {           //  past INT64_MAX: a double
                entry.type = FPX_INFO_DOUBLE;
                entry.f = (double) value->v.u;
                snprintf (text, sizeof text, "%llu", (unsigned long long) value->v.u);
            }
            else {
                entry.type = FPX_INFO_INT;
                entry.i = value->v.i;
                entry.f = (double) value->v.i;
                snprintf (text, sizeof text, "%lld", (long long) value->v.i);
            }
            break;
        case FPX_MP_FLOAT:
            entry.type = FPX_INFO_DOUBLE;
            entry.f = value->v.f;
            if (isfinite (value->v.f))
                snprintf (text, sizeof text, "%.9g", value->v.f);
            break;
        case FPX_MP_STR: case FPX_MP_BIN:
            entry.type = FPX_INFO_STR;
            break;
        default:
            break;
    }
    entry.path = strndup (path, path_len);
    entry.text = entry.type == FPX_INFO_STR
               ? s_strndup_printable (value->v.str.ptr, value->v.str.len) : strdup (text);
    if (!entry.path || !entry.text) {
        free (entry.path);
        free (entry.text);
        s_fail (walk, FPX_ENOMEM, "out of memory");
        return;
    }
    info->entries [info->count++] = entry;
    if (entry.type == FPX_INFO_STR)
        s_json_string (walk, value->v.str.ptr, value->v.str.len);
    else
    if (entry.type == FPX_INFO_DOUBLE && isfinite (entry.f) && !value->is_unsigned) {
        //  The shortest text that reads back as the same double.
        char exact [40];
        for (int digits = 15; digits <= 17; digits++) {
            snprintf (exact, sizeof exact, "%.*g", digits, entry.f);
            if (strtod (exact, NULL) == entry.f)
                break;
        }
        s_json_text (walk, exact);
    }
    else
        s_json_text (walk, text);
}

#define S_NO_PATH ((size_t) -1)

//  path[path_len] + "." + part (no dot at the top). Returns the new
//  length, or S_NO_PATH with the walk failed when it passes
//  FPX_INFO_PATH_MAX.
static size_t
s_path_push (s_walk_t *walk, char *path, size_t path_len, const char *part, size_t part_len)
{
    size_t dot = path_len ? 1 : 0;
    if (path_len + dot + part_len > FPX_INFO_PATH_MAX) {
        s_fail (walk, FPX_EPROTO, "info reply has a path longer than %d bytes", FPX_INFO_PATH_MAX);
        return S_NO_PATH;
    }
    if (dot)
        path [path_len] = '.';
    memcpy (path + path_len + dot, part, part_len);
    return path_len + dot + part_len;
}

static void s_walk_value (s_walk_t *walk, char *path, size_t path_len, const fpx_mp_value_t *value);

//  A map entry: its key (a string, else malformed) and value.
static void
s_walk_pair (s_walk_t *walk, char *path, size_t path_len, const char *key, size_t key_len,
             const fpx_mp_value_t *value, bool first)
{
    if (!first)
        s_json_put (walk, ",", 1);
    s_json_string (walk, key, key_len);
    s_json_put (walk, ":", 1);
    size_t len = s_path_push (walk, path, path_len, key, key_len);
    if (len != S_NO_PATH)
        s_walk_value (walk, path, len, value);
}

static void
s_walk_value (s_walk_t *walk, char *path, size_t path_len, const fpx_mp_value_t *value)
{
    if (value->type != FPX_MP_MAP && value->type != FPX_MP_ARRAY) {
        s_add_scalar (walk, path, path_len, value);
        return;
    }
    bool map = value->type == FPX_MP_MAP;
    s_json_put (walk, map ? "{" : "[", 1);
    const uint8_t *needle = value->v.seq.ptr;
    for (uint32_t i = 0; i < value->v.seq.count && !walk->rc; i++) {
        fpx_mp_value_t key, element;
        if (map && (fpx_mp_read (&key, &needle, value->v.seq.end) || key.type != FPX_MP_STR)) {
            s_fail (walk, FPX_EPROTO, "info reply: a map key is not a string");
            break;
        }
        if (fpx_mp_read (&element, &needle, value->v.seq.end)) {
            s_fail (walk, FPX_EPROTO, "info reply: malformed value");
            break;
        }
        if (map)
            s_walk_pair (walk, path, path_len, key.v.str.ptr, key.v.str.len, &element, i == 0);
        else {
            char position [24];
            int n = snprintf (position, sizeof position, "%u", i);
            if (i)
                s_json_put (walk, ",", 1);
            size_t len = s_path_push (walk, path, path_len, position, (size_t) n);
            if (len != S_NO_PATH)
                s_walk_value (walk, path, len, &element);
        }
    }
    s_json_put (walk, map ? "}" : "]", 1);
}

int
fpx_info_decode (const fpx_params_t *result, fpx_info_t **info_p, char *errmsg,
                 size_t errmsg_size)
{
    *info_p = NULL;
    fpx_info_t *info = calloc (1, sizeof *info);
    if (!info) {
        snprintf (errmsg, errmsg_size, "out of memory");
        return FPX_ENOMEM;
    }
    s_walk_t walk = { .info = info, .errmsg = errmsg, .errmsg_size = errmsg_size };
    char path [FPX_INFO_PATH_MAX + 1];
    s_json_put (&walk, "{", 1);
    for (int i = 0; i < result->count && !walk.rc; i++)
        s_walk_pair (&walk, path, 0, result->items [i].key, result->items [i].key_len,
                     &result->items [i].value, i == 0);
    s_json_put (&walk, "}", 1);
    if (walk.rc) {
        fpx_info_free (&info);
        return walk.rc;
    }
    *info_p = info;
    return 0;
}

// ---- accessors ------------------------------------------------------------------

void
fpx_info_free (fpx_info_t **info_p)
{
    if (!info_p || !*info_p)
        return;
    fpx_info_t *info = *info_p;
    for (size_t i = 0; i < info->count; i++) {
        free (info->entries [i].path);
        free (info->entries [i].text);
    }
    free (info->entries);
    free (info->json);
    free (info);
    *info_p = NULL;
}

static const s_entry_t *
s_find (const fpx_info_t *info, const char *path)
{
    for (size_t i = 0; info && path && i < info->count; i++)
        if (strcmp (info->entries [i].path, path) == 0)
            return &info->entries [i];
    return NULL;
}

size_t
fpx_info_count (const fpx_info_t *info)
{
    return info ? info->count : 0;
}

const char *
fpx_info_key (const fpx_info_t *info, size_t i)
{
    return info && i < info->count ? info->entries [i].path : NULL;
}

fpx_info_type_t
fpx_info_type_at (const fpx_info_t *info, size_t i)
{
    return info && i < info->count ? info->entries [i].type : FPX_INFO_NONE;
}

const char *
fpx_info_text_at (const fpx_info_t *info, size_t i)
{
    return info && i < info->count ? info->entries [i].text : NULL;
}

fpx_info_type_t
fpx_info_type (const fpx_info_t *info, const char *path)
{
    const s_entry_t *entry = s_find (info, path);
    return entry ? entry->type : FPX_INFO_NONE;
}

int
fpx_info_int (const fpx_info_t *info, const char *path, int64_t *out)
{
    const s_entry_t *entry = s_find (info, path);
    if (!entry)
        return FPX_ENOTFOUND;
    if ((entry->type != FPX_INFO_INT && entry->type != FPX_INFO_BOOL) || !out)
        return FPX_EINVAL;
    *out = entry->i;
    return 0;
}

int
fpx_info_double (const fpx_info_t *info, const char *path, double *out)
{
    const s_entry_t *entry = s_find (info, path);
    if (!entry)
        return FPX_ENOTFOUND;
    if ((entry->type != FPX_INFO_INT && entry->type != FPX_INFO_BOOL
         && entry->type != FPX_INFO_DOUBLE) || !out)
        return FPX_EINVAL;
    *out = entry->f;
    return 0;
}

const char *
fpx_info_str (const fpx_info_t *info, const char *path)
{
    const s_entry_t *entry = s_find (info, path);
    return entry && entry->type == FPX_INFO_STR ? entry->text : NULL;
}

const char *
fpx_info_json (const fpx_info_t *info)
{
    return info && info->json ? info->json : "{}";
}
