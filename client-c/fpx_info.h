/*  fpx_info.h — private to libfaissproxy: decoding an info reply into the
    fpx_info_t of faissproxy.h (fpx_info.c). fpx_client.c makes the call.
*/
#ifndef FPX_INFO_H_INCLUDED
#define FPX_INFO_H_INCLUDED

#include "faissproxy.h"
#include "fpx_params.h"

#define FPX_INFO_PRIVATE __attribute__ ((visibility ("hidden")))

/*  Decodes result (an info reply's map, as the reader checked it) into
    *info_p (caller owns). Returns 0, FPX_ENOMEM, or FPX_EPROTO with the
    reason in errmsg[errmsg_size] when the reply passes the decoder's
    bounds (FPX_INFO_PATH_MAX, FPX_INFO_ENTRIES_MAX, FPX_INFO_JSON_MAX). */
FPX_INFO_PRIVATE int fpx_info_decode (const fpx_params_t *result, fpx_info_t **info_p /* OUT */,
                                      char *errmsg, size_t errmsg_size);

#endif
