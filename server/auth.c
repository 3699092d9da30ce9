/*  auth.c — key hashes, roles, and the failed-authentication guard
    (auth.h). Runs on the broker thread; never blocks, never allocates per
    request.                                                             */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "fpx_protocol.h"
#include "log.h"

void
fpx_auth_hash_key (const char *key, size_t len, uint8_t hash [FPX_KEY_HASH_SIZE])
{
    crypto_generichash (hash, FPX_KEY_HASH_SIZE, (const unsigned char *) key, len, NULL, 0);
}

int
fpx_auth_parse_hash (const char *text, uint8_t hash [FPX_KEY_HASH_SIZE])
{
    size_t decoded = 0;
    if (strncmp (text, "b2:", 3) || strlen (text + 3) != 2 * FPX_KEY_HASH_SIZE
    ||  sodium_hex2bin (hash, FPX_KEY_HASH_SIZE, text + 3, 2 * FPX_KEY_HASH_SIZE, NULL,
                        &decoded, NULL)
    ||  decoded != FPX_KEY_HASH_SIZE)
        return -1;
    return 0;
}

void
fpx_auth_format_hash (const uint8_t hash [FPX_KEY_HASH_SIZE], char *out, size_t size)
{
    char hex [2 * FPX_KEY_HASH_SIZE + 1];
    sodium_bin2hex (hex, sizeof hex, hash, FPX_KEY_HASH_SIZE);
    snprintf (out, size, "b2:%s", hex);
}

int
fpx_auth_parse_role (const char *text)
{
    if (!strcmp (text, "read"))
        return FPX_ROLE_READ;
    if (!strcmp (text, "write"))
        return FPX_ROLE_WRITE;
    if (!strcmp (text, "admin"))
        return FPX_ROLE_ADMIN;
    return -1;
}

const char *
fpx_auth_role_name (int role)
{
    return fpx_role_name (role);
}

/*  The role column of FPX_OPCODES. read: everything that leaves every
    index as it was (kmeans included: it trains a throw-away clustering
    and stores nothing). write: anything that creates, changes, saves or
    drops an object, anonymous ones included. admin: opcodes not listed
    (future server administration).                                     */
int
fpx_auth_min_role (int opcode)
{
    const fpx_opcode_info_t *info = fpx_opcode_info (opcode);
    return info ? (int) info->role : FPX_ROLE_ADMIN;
}

// ---- the guard ------------------------------------------------------------------

#define S_PEERS        1024         //  peers tracked (a hash table)
#define S_PROBES       16
#define S_HELD_MAX     64           //  requests held per peer
#define S_HELD_BYTES   65536        //  largest request held
#define S_FREE_TRIES   3            //  failures before any delay
#define S_DELAY_FIRST  0.05         //  s, doubled per failure up to delay_max
#define S_FORGET_S     60.0         //  failures are forgotten after this quiet
#define S_LOG_EVERY_S  5.0          //  one log line per peer at most this often

typedef struct {
    char addr [64];                 //  "" when the slot is free
    int failures;
    double last_failure;
    double not_before;              //  its held requests wait until then
    double delay;
    uint64_t unlogged;              //  failures since its last log line
    double last_log;
    void *held [S_HELD_MAX];        //  a ring
    int head, count;
} s_peer_t;

struct fpx_guard_t {
    double delay_max;               //  s
    s_peer_t peers [S_PEERS];
    int holding;                    //  peers with held requests
};

fpx_guard_t *
fpx_guard_new (double delay_max)
{
    fpx_guard_t *self = calloc (1, sizeof (fpx_guard_t));
    if (self)
        self->delay_max = delay_max > 0 ? delay_max : 0;
    return self;
}

void
fpx_guard_destroy (fpx_guard_t **self_p, void (*release) (void *item))
{
    fpx_guard_t *self = *self_p;
    if (!self)
        return;
    *self_p = NULL;
    for (int i = 0; i < S_PEERS; i++)
        for (s_peer_t *peer = &self->peers [i]; peer->count > 0; peer->count--) {
            release (peer->held [peer->head]);
            peer->head = (peer->head + 1) % S_HELD_MAX;
        }
    free (self);
}

//  The peer's slot; with create, a fresh one if needed (NULL when every
//  probed slot holds requests).
static s_peer_t *
s_peer (fpx_guard_t *self, const char *addr, double now, bool create)
{
    uint64_t h = 1469598103934665603ull;
    for (const char *c = addr; *c; c++)
        h = (h ^ (uint8_t) *c) * 1099511628211ull;
    s_peer_t *victim = NULL;
    for (int probe = 0; probe < S_PROBES; probe++) {
        s_peer_t *peer = &self->peers [(h + (uint64_t) probe) % S_PEERS];
        if (peer->addr [0] && !strcmp (peer->addr, addr)) {
            if (peer->count == 0 && now - peer->last_failure > S_FORGET_S)
                peer->failures = 0;
            return peer;
        }
        //  A free slot, else the one whose last failure is oldest.
        bool free_slot = !peer->addr [0];
        if (peer->count == 0 && (!victim || (victim->addr [0]
                                             && (free_slot || peer->last_failure < victim->last_failure))))
            victim = peer;
    }
    if (!create || !victim)
        return NULL;
    memset (victim, 0, sizeof *victim);
    snprintf (victim->addr, sizeof victim->addr, "%s", addr);
    return victim;
}

int
fpx_guard_hold (fpx_guard_t *self, const char *addr, double now, void *item, size_t bytes)
{
    s_peer_t *peer = s_peer (self, addr, now, false);
    if (!peer || (peer->count == 0 && now >= peer->not_before))
        return 0;
    if (peer->count == S_HELD_MAX || bytes > S_HELD_BYTES)
        return -1;
    peer->held [(peer->head + peer->count) % S_HELD_MAX] = item;
    if (peer->count++ == 0)
        self->holding++;
    return 1;
}

void
fpx_guard_failed (fpx_guard_t *self, const char *addr, double now)
{
    s_peer_t *peer = s_peer (self, addr, now, true);
    if (!peer) {
        fpx_log (FPX_LOG_WARN, "authentication failed from %s: invalid API key", addr);
        return;
    }
    peer->failures++;
    peer->last_failure = now;
    peer->unlogged++;
    if (peer->failures >= S_FREE_TRIES && self->delay_max > 0) {
        double delay = S_DELAY_FIRST;
        for (int i = S_FREE_TRIES; i < peer->failures && delay < self->delay_max; i++)
            delay *= 2;
        peer->delay = delay < self->delay_max ? delay : self->delay_max;
        peer->not_before = now + peer->delay;
    }
    if (peer->last_log == 0 || now - peer->last_log >= S_LOG_EVERY_S) {
        fpx_log (FPX_LOG_WARN, "authentication failed from %s: invalid API key (%llu time(s) "
                 "since the last line; %d in a row; its next requests wait %.0f ms)", addr,
                 (unsigned long long) peer->unlogged, peer->failures,
                 peer->not_before > now ? (peer->not_before - now) * 1000 : 0.0);
        peer->last_log = now;
        peer->unlogged = 0;
    }
}

void *
fpx_guard_next_due (fpx_guard_t *self, double now)
{
    for (int i = 0; self->holding > 0 && i < S_PEERS; i++) {
        s_peer_t *peer = &self->peers [i];
        if (peer->count > 0 && now >= peer->not_before) {
            void *item = peer->held [peer->head];
            peer->head = (peer->head + 1) % S_HELD_MAX;
            if (--peer->count == 0)
                self->holding--;
            return item;
        }
    }
    return NULL;
}

long
fpx_guard_timeout_ms (fpx_guard_t *self, double now)
{
    double soonest = -1;
    for (int i = 0; self->holding > 0 && i < S_PEERS; i++) {
        s_peer_t *peer = &self->peers [i];
        if (peer->count > 0 && (soonest < 0 || peer->not_before < soonest))
            soonest = peer->not_before;
    }
    if (soonest < 0)
        return -1;
    return soonest <= now ? 0 : (long) ((soonest - now) * 1000) + 1;
}
