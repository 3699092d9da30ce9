/*  metrics_http.c — the HTTP server of --metrics-bind: GET /metrics (the
    Prometheus text format), GET /metrics.json and GET / (a self-contained
    dashboard that polls /metrics.json). libmicrohttpd parses HTTP on its
    own thread; we answer three fixed paths and nothing else, with no
    authentication, which is why docs/SECURITY.md asks for loopback.

    Every request is hostile: only GET and HEAD, exact paths, no body read,
    few connections, a small per-connection memory budget, and rendering
    bounded by metrics.c.
*/
#include <microhttpd.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "metrics_http.h"

#define S_CONNECTIONS_MAX   32      //  open scrapes at once
#define S_CONNECTIONS_PER_IP 8
#define S_TIMEOUT_S         10      //  an idle connection is closed
#define S_MEMORY_LIMIT      (32 << 10)   //  per connection: request head

struct fpx_metrics_http_t {
    struct MHD_Daemon *daemon;
};

//  The dashboard: no external assets; numbers are filled with textContent
//  only, never parsed as HTML.
static const char s_dashboard [] =
"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
"<title>faissproxyd</title>\n<style>\n"
"body{font:14px system-ui,sans-serif;margin:1.5em;background:#fafafa;color:#222}\n"
"h1{font-size:1.3em}h2{font-size:1.05em;margin-top:1.5em}\n"
".cards{display:flex;flex-wrap:wrap;gap:.8em}\n"
".card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.6em 1em;min-width:9em}\n"
".card b{display:block;font-size:1.6em;color:#1a5fb4}\n"
"table{border-collapse:collapse;background:#fff}td,th{border:1px solid #ddd;padding:.25em .7em;"
"text-align:right}th{background:#eee}td:first-child,th:first-child{text-align:left}\n"
"#status{color:#888}\n</style></head><body>\n"
"<h1>faissproxyd</h1><p id=\"status\">loading /metrics.json…</p>\n"
"<div class=\"cards\">\n"
"<div class=\"card\">requests/s<b id=\"rate\">–</b></div>\n"
"<div class=\"card\">requests<b id=\"requests-total\">–</b></div>\n"
"<div class=\"card\">p50 latency<b id=\"p50\">–</b></div>\n"
"<div class=\"card\">p99 latency<b id=\"p99\">–</b></div>\n"
"<div class=\"card\">queue depth<b id=\"queue\">–</b></div>\n"
"<div class=\"card\">in flight<b id=\"inflight\">–</b></div>\n"
"<div class=\"card\">connections<b id=\"connections\">–</b></div>\n"
"<div class=\"card\">RSS<b id=\"rss\">–</b></div>\n"
"<div class=\"card\">uptime<b id=\"uptime\">–</b></div>\n"
"</div>\n"
"<h2>Latency by opcode</h2><table><thead><tr><th>opcode</th><th>requests</th><th>p50</th>"
"<th>p90</th><th>p99</th></tr></thead><tbody id=\"latency\"></tbody></table>\n"
"<h2>Tenants</h2><table><thead><tr><th>tenant</th><th>indexes</th><th>vectors</th>"
"<th>memory</th><th>disk</th></tr></thead><tbody id=\"tenants\"></tbody></table>\n"
"<h2>Named indexes</h2><table><thead><tr><th>tenant / index</th><th>vectors</th>"
"<th>memory</th></tr></thead><tbody id=\"indexes\"></tbody></table>\n"
"<script>\n"
"'use strict';\n"
"let last=null;\n"
"function $(id){return document.getElementById(id);}\n"
"function ms(s){return s<1e-3?(s*1e6).toFixed(0)+' µs':s<1?(s*1e3).toFixed(1)+' ms':s.toFixed(2)+' s';}\n"
"function bytes(n){const u=['B','KiB','MiB','GiB','TiB'];let i=0;"
"while(n>=1024&&i<u.length-1){n/=1024;i++;}return n.toFixed(i?1:0)+' '+u[i];}\n"
"function rows(id,list){const body=$(id);body.replaceChildren();for(const cells of list){"
"const tr=document.createElement('tr');for(const c of cells){const td=document.createElement('td');"
"td.textContent=String(c);tr.appendChild(td);}body.appendChild(tr);}}\n"
"function quantile(buckets,bounds,q){let total=0;for(const c of buckets)total+=c;if(!total)return 0;"
"const rank=q*total;let seen=0;for(let b=0;b<bounds.length;b++){if(buckets[b]&&seen+buckets[b]>=rank){"
"const low=b?bounds[b-1]:0;return low+(bounds[b]-low)*(rank-seen)/buckets[b];}seen+=buckets[b];}"
"return bounds[bounds.length-1];}\n"
"function show(m){\n"
" let total=0;for(const r of m.requests)total+=r.count;\n"
" const now=performance.now();\n"
" if(last&&now>last.at)$('rate').textContent=((total-last.total)*1000/(now-last.at)).toFixed(1);\n"
" last={at:now,total:total};\n"
" $('requests-total').textContent=String(total);\n"
" const all=new Array(m.bucket_bounds_seconds.length+1).fill(0);\n"
" for(const l of m.latency)l.buckets.forEach((c,i)=>all[i]+=c);\n"
" $('p50').textContent=ms(quantile(all,m.bucket_bounds_seconds,.5));\n"
" $('p99').textContent=ms(quantile(all,m.bucket_bounds_seconds,.99));\n"
" $('queue').textContent=String(m.queue_depth);\n"
" $('inflight').textContent=String(m.requests_in_flight);\n"
" $('connections').textContent=String(m.connections);\n"
" $('rss').textContent=bytes(m.resident_memory_bytes);\n"
" $('uptime').textContent=Math.floor(m.uptime_seconds)+' s';\n"
" rows('latency',m.latency.map(l=>[l.opcode,l.count,ms(l.p50),ms(l.p90),ms(l.p99)]));\n"
" rows('tenants',m.tenants.map(t=>[t.tenant,t.indexes,t.vectors,bytes(t.memory_bytes),"
"bytes(t.disk_bytes)]));\n"
" rows('indexes',m.indexes.map(i=>[i.tenant+' / '+i.index,i.vectors,bytes(i.memory_bytes)]));\n"
" $('status').textContent='updated '+new Date().toLocaleTimeString()+' ('+m.named_indexes+"
"' named indexes)';\n"
"}\n"
"async function poll(){try{const r=await fetch('/metrics.json',{cache:'no-store'});"
"if(!r.ok)throw new Error('HTTP '+r.status);show(await r.json());}"
"catch(e){$('status').textContent='cannot read /metrics.json: '+e.message;}}\n"
"poll();setInterval(poll,1000);\n"
"</script></body></html>\n";

static enum MHD_Result
s_respond (struct MHD_Connection *connection, unsigned int code, const char *type,
           void *data, size_t size, enum MHD_ResponseMemoryMode mode)
{
    struct MHD_Response *response = MHD_create_response_from_buffer (size, data, mode);
    if (!response) {
        if (mode == MHD_RESPMEM_MUST_FREE)
            free (data);
        return MHD_NO;
    }
    MHD_add_response_header (response, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header (response, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    enum MHD_Result rc = MHD_queue_response (connection, code, response);
    MHD_destroy_response (response);
    return rc;
}

static enum MHD_Result
s_text (struct MHD_Connection *connection, unsigned int code, const char *text)
{
    return s_respond (connection, code, "text/plain; charset=utf-8", (void *) text, strlen (text),
                      MHD_RESPMEM_PERSISTENT);
}

static enum MHD_Result
s_handle (void *cls, struct MHD_Connection *connection, const char *url, const char *method,
          const char *version, const char *upload_data, size_t *upload_data_size, void **state)
{
    //  Answered on the first call, before any body: a body is never read.
    (void) version, (void) upload_data, (void) upload_data_size, (void) state;
    fpx_server_t *server = cls;
    if (strcmp (method, MHD_HTTP_METHOD_GET) && strcmp (method, MHD_HTTP_METHOD_HEAD))
        return s_text (connection, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET\n");
    if (!strcmp (url, "/"))
        return s_respond (connection, MHD_HTTP_OK, "text/html; charset=utf-8", (void *) s_dashboard,
                          sizeof s_dashboard - 1, MHD_RESPMEM_PERSISTENT);
    bool json = !strcmp (url, "/metrics.json");
    if (!json && strcmp (url, "/metrics"))
        return s_text (connection, MHD_HTTP_NOT_FOUND, "not found: /metrics, /metrics.json or /\n");
    size_t size;
    char *text = fpx_metrics_render (server, json, &size);
    if (!text)
        return s_text (connection, MHD_HTTP_SERVICE_UNAVAILABLE, "metrics unavailable (out of memory "
                       "or over their size limit)\n");
    return s_respond (connection, MHD_HTTP_OK, json ? "application/json"
                      : "text/plain; version=0.0.4; charset=utf-8", text, size, MHD_RESPMEM_MUST_FREE);
}

//  HOST:PORT ([V6]:PORT for IPv6) resolved to one address.
static int
s_resolve (const char *bind, struct sockaddr_storage *address, socklen_t *length, uint16_t *port)
{
    char host [256];
    const char *colon = strrchr (bind, ':');
    size_t host_size = colon ? (size_t) (colon - bind) : 0;
    if (!colon || host_size == 0 || host_size >= sizeof host || !colon [1])
        return -1;
    memcpy (host, bind, host_size);
    host [host_size] = 0;
    if (host [0] == '[' && host [host_size - 1] == ']') {
        memmove (host, host + 1, host_size - 2);
        host [host_size - 2] = 0;
    }
    char *end;
    long number = strtol (colon + 1, &end, 10);
    if (*end || number < 0 || number > 65535)      //  0: a port the system picks
        return -1;
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV }, *found;
    if (getaddrinfo (host, colon + 1, &hints, &found) || !found)
        return -1;
    memcpy (address, found->ai_addr, found->ai_addrlen);
    *length = found->ai_addrlen;
    *port = (uint16_t) number;
    freeaddrinfo (found);
    return 0;
}

fpx_metrics_http_t *
fpx_metrics_http_new (fpx_server_t *server, const char *bind)
{
    struct sockaddr_storage address;
    socklen_t length;
    uint16_t port;
    if (s_resolve (bind, &address, &length, &port)) {
        fpx_log (FPX_LOG_ERROR, "--metrics-bind %s: not HOST:PORT with a known host", bind);
        return NULL;
    }
    fpx_metrics_http_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    unsigned int flags = MHD_USE_EPOLL_INTERNAL_THREAD;
    if (address.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    self->daemon = MHD_start_daemon (flags, port, NULL, NULL, s_handle, server,
                                     MHD_OPTION_SOCK_ADDR, (struct sockaddr *) &address,
                                     MHD_OPTION_CONNECTION_LIMIT, (unsigned int) S_CONNECTIONS_MAX,
                                     MHD_OPTION_PER_IP_CONNECTION_LIMIT,
                                     (unsigned int) S_CONNECTIONS_PER_IP,
                                     MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int) S_TIMEOUT_S,
                                     MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t) S_MEMORY_LIMIT,
                                     MHD_OPTION_END);
    if (!self->daemon) {
        fpx_log (FPX_LOG_ERROR, "--metrics-bind %s: cannot listen (address in use or not local?)",
                 bind);
        free (self);
        return NULL;
    }
    (void) length;
    //  With port 0 the system picked one: name what clients can reach.
    const union MHD_DaemonInfo *info = MHD_get_daemon_info (self->daemon,
                                                            MHD_DAEMON_INFO_BIND_PORT);
    if (info && info->port)
        port = info->port;
    const char *colon = strrchr (bind, ':');
    snprintf (server->metrics_url, sizeof server->metrics_url, "http://%.*s:%u",
              (int) (colon - bind), bind, (unsigned) port);
    fpx_log (FPX_LOG_INFO, "metrics on %s/metrics (dashboard: %s/)", server->metrics_url,
             server->metrics_url);
    return self;
}

void
fpx_metrics_http_destroy (fpx_metrics_http_t **self_p)
{
    fpx_metrics_http_t *self = *self_p;
    if (!self)
        return;
    MHD_stop_daemon (self->daemon);
    free (self);
    *self_p = NULL;
}
