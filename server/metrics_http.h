/*  metrics_http.h — the rendering of a server's metrics and the HTTP
    server of --metrics-bind that serves it.
*/
#ifndef FPX_METRICS_HTTP_H_INCLUDED
#define FPX_METRICS_HTTP_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>

#include "server.h"

/*  Renders server's metrics (metrics.h), the tenants' usage and the named
    indexes as the Prometheus text format (json false) or JSON. Returns a
    malloc'd text (caller owns) with its size in *size_p (OUT), or NULL
    when out of memory or past FPX_METRICS_OUTPUT_MAX. Bounded work: the
    counters, the tenants and at most FPX_METRICS_INDEXES_MAX named
    indexes; reads only atomics and the registry. Any thread.            */
char *fpx_metrics_render (fpx_server_t *server, bool json, size_t *size_p);

/*  The HTTP server of --metrics-bind HOST:PORT, on its own thread
    (metrics_http.c): GET /metrics, /metrics.json and / (the dashboard).
    PORT 0 binds one the system picks; server->metrics_url names what was
    bound. Returns the server (caller owns), or NULL with a message
    logged. Destroy it (NULL is fine) before the registry goes: it reads
    server's registry and counters until then.                           */
typedef struct fpx_metrics_http_t fpx_metrics_http_t;
fpx_metrics_http_t *fpx_metrics_http_new (fpx_server_t *server, const char *bind);
void fpx_metrics_http_destroy (fpx_metrics_http_t **self_p);

#endif
