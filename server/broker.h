/*  broker.h — the broker thread (broker.c): owns every public socket,
    authenticates, applies the limits and hands requests to free workers.
    It never calls FAISS and never blocks.
*/
#ifndef FPX_BROKER_H_INCLUDED
#define FPX_BROKER_H_INCLUDED

#include <msgpack.h>

#include "fpx_version.h"
#include "server.h"

#define FPX_SERVER_VERSION   FPX_VERSION_STRING
#define FPX_MONITOR_ENDPOINT "inproc://fpx-monitor"

/*  Runs the broker on the calling thread until a byte arrives on signal_fd
    (written by the SIGINT/SIGTERM handler) and every request in flight has
    been answered. Returns 0, or -1 if an endpoint cannot be bound.      */
int fpx_broker_run (fpx_server_t *server, int signal_fd);

/*  Packs the ping/info result common part into pk (FPX_SERVER_INFO_KEYS
    entries): versions, and whether server is still recovering.         */
#define FPX_SERVER_INFO_KEYS 4
void fpx_pack_server_info (const fpx_server_t *server, msgpack_packer *pk);

#endif
