/*  select.h — search-time selection: FAISS's SearchParameters.sel (an
    IDSelector tree) and SearchParametersIVF.max_codes, decoded from one
    search or range_search request.

    The selector tree is hostile input: its node count, every id count
    and bitmap length are checked against the bytes that came before
    anything is allocated or FAISS sees it (docs/PROTOCOL.md, "Search-time
    selection"). This file builds FAISS objects and never searches.
*/
#ifndef FPX_SELECT_H_INCLUDED
#define FPX_SELECT_H_INCLUDED

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
namespace faiss { struct IDSelector; }
extern "C" {
#endif

#include "fpx_params.h"         //  a C header without C++ guards

typedef struct fpx_select_t fpx_select_t;

/*  Decodes the "sel" and "max_codes" parameters of a request. bulk /
    bulk_size: the selector frame (NULL, 0 when the request has none).
    *select_p receives a new selection (caller owns; destroy it), or NULL
    when the request asks for none. Returns 0, or FPX_EINVAL / FPX_EPROTO
    / FPX_ENOMEM with the reason in err.                                 */
int fpx_select_decode (const fpx_params_t *params, const void *bulk, size_t bulk_size,
                       fpx_select_t **select_p, char *err, size_t err_size);

void fpx_select_destroy (fpx_select_t **self_p);

#ifdef __cplusplus
}

/*  The selector to set as SearchParameters::sel (nullptr: none), and the
    max_codes to set on SearchParametersIVF (-1: the index's own).       */
const faiss::IDSelector *fpx_select_selector (const fpx_select_t *self);
int64_t fpx_select_max_codes (const fpx_select_t *self);
#endif

#endif
