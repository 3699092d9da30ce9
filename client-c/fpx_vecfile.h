/*  fpx_vecfile.h — vector and id files of the faissproxy command line
    (import, export, add, search): read and written in batches, so that a
    file of any size passes through a bounded buffer.

    Formats (chosen by the file name's extension):
    - .npy: NumPy's format, version 1 to 3. Vectors: dtype '<f4', C order,
      2-D (rows, d). Ids: dtype '<i8', 1-D (rows). The header is parsed
      strictly: the three keys NumPy writes, nothing else.
    - .fvecs: the TEXMEX/FAISS format: per vector an int32 d, then d
      float32. .bvecs: an int32 d, then d uint8 (read as floats).
    - "-" (standard input), .txt, .csv, .tsv: text, one vector per line,
      numbers separated by spaces, tabs or commas; empty lines and lines
      starting with '#' are skipped. Read only; its row count is unknown.
    All binary data are little-endian.

    Every count and size in a file is distrusted: a binary file's size must
    be exactly what its header (or its first vector's d) says, the
    dimension must be the caller's, and each .fvecs/.bvecs record's d is
    checked as it is read.

    Errors: a negative return or NULL; the message is on the handle
    (fpx_vecfile_errmsg) or in the caller's errmsg buffer for the
    constructors. Not thread-safe: one handle per thread.

    Part of the command line only (not of libfaissproxy).
*/
#ifndef FPX_VECFILE_H_INCLUDED
#define FPX_VECFILE_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct _fpx_vecfile_t fpx_vecfile_t;

/*  Opens a vector file for reading. d: the dimension the vectors must
    have (> 0). Returns a handle (caller owns it) or NULL with the reason
    in errmsg.                                                            */
fpx_vecfile_t *fpx_vecfile_open (const char *path, int d, char *errmsg, size_t errmsg_size);

/*  Opens an id file (.npy of '<i8', 1-D) for reading.                    */
fpx_vecfile_t *fpx_vecfile_open_ids (const char *path, char *errmsg, size_t errmsg_size);

/*  Creates a vector file (.npy or .fvecs) of exactly rows vectors of d
    floats, to be filled with fpx_vecfile_write and committed by
    fpx_vecfile_close. It is written as PATH.tmp and renamed to PATH on a
    successful close, so PATH never holds a partial file.                 */
fpx_vecfile_t *fpx_vecfile_create (const char *path, int d, int64_t rows,
                                   char *errmsg, size_t errmsg_size);

/*  Rows in the file; -1 for text (unknown until read).                   */
int64_t fpx_vecfile_rows (fpx_vecfile_t *self);

/*  Whether the file is text (no seek, no row count).                     */
bool fpx_vecfile_is_text (fpx_vecfile_t *self);

/*  Moves the read position to row `row` (0 ≤ row ≤ rows). Binary files
    only. Returns 0 or -1.                                                */
int fpx_vecfile_seek (fpx_vecfile_t *self, int64_t row);

/*  Reads up to max_rows vectors into out (max_rows·d floats). Returns the
    number read (0 at the end), or -1.                                    */
int64_t fpx_vecfile_read (fpx_vecfile_t *self, float *out /* OUT */, int64_t max_rows);

/*  Reads up to max_rows ids of an id file into out. As fpx_vecfile_read.  */
int64_t fpx_vecfile_read_ids (fpx_vecfile_t *self, int64_t *out /* OUT */, int64_t max_rows);

/*  Appends n vectors of d floats to a file made by fpx_vecfile_create.
    Returns 0 or -1 (more rows than announced is an error).               */
int fpx_vecfile_write (fpx_vecfile_t *self, const float *x, int64_t n);

/*  Closes the file and frees the handle; sets *self_p to NULL. For a file
    made by fpx_vecfile_create: commit (all rows written, flushed, renamed
    into place) returns 0; otherwise the temporary file is removed and -1
    returned, with the reason in errmsg (may be NULL). commit false
    abandons the file (removed; returns 0). Reading handles return 0. Accepts NULL.           */
int fpx_vecfile_close (fpx_vecfile_t **self_p, bool commit, char *errmsg, size_t errmsg_size);

/*  The message of the handle's last failure ("" if none); owned by the
    handle.                                                               */
const char *fpx_vecfile_errmsg (fpx_vecfile_t *self);

#endif
