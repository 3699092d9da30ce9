/*  auth.h — API keys (hashed), roles, and the guard that slows down peers
    that keep failing authentication.

    Keys: the server keeps only the BLAKE2b-256 hash of each key (written
    "b2:" and 64 hex digits in keys files); a request's key is hashed and
    compared in constant time. API keys are random and long, so one unsalted
    fast hash is enough: what it protects against is a leaked keys file or
    core dump handing out usable keys, not the guessing of weak passwords.

    Roles: read < write < admin. fpx_auth_min_role gives the least role
    each opcode needs, from its row of FPX_OPCODES (protocol/).

    The guard must not block: it only says whether a peer's request has to
    wait, keeps those requests, and gives them back once due; the broker
    polls with fpx_guard_timeout_ms.
*/
#ifndef FPX_AUTH_H_INCLUDED
#define FPX_AUTH_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fpx_protocol.h"       //  fpx_role_t

#define FPX_KEY_HASH_SIZE 32

/*  Hash of key [0, len) (len ≤ FPX_API_KEY_MAX).                        */
void fpx_auth_hash_key (const char *key, size_t len, uint8_t hash [FPX_KEY_HASH_SIZE]);

/*  "b2:HEX" → hash. 0, or -1 when text is not such a hash.              */
int fpx_auth_parse_hash (const char *text, uint8_t hash [FPX_KEY_HASH_SIZE]);

/*  "b2:HEX" of hash into out (≥ 68 bytes).                              */
void fpx_auth_format_hash (const uint8_t hash [FPX_KEY_HASH_SIZE], char *out, size_t size);

/*  "read", "write", "admin" ↔ role; parse returns -1 if unknown.        */
int fpx_auth_parse_role (const char *text);
const char *fpx_auth_role_name (int role);

/*  The least role that may send opcode (FPX_ROLE_ADMIN if unknown).    */
int fpx_auth_min_role (int opcode);

// ---- the failed-authentication guard ----------------------------------------

typedef struct fpx_guard_t fpx_guard_t;

/*  Caller owns; NULL when out of memory. delay_max: the longest wait in
    seconds (0: failures are logged, nobody waits).                      */
fpx_guard_t *fpx_guard_new (double delay_max);

/*  Frees the guard; calls release (item) for every request still held.  */
void fpx_guard_destroy (fpx_guard_t **self_p, void (*release) (void *item));

/*  Whether a request of bytes bytes from peer must wait before it is
    authenticated: its address failed authentication recently and its
    delay has not passed. If so, holds item (returns 1), or returns -1 when
    the peer already has too many held or the request is over 64 KiB (a
    guess needs no payload; the caller answers FPX_EBUSY). 0: go on now. */
int fpx_guard_hold (fpx_guard_t *self, const char *peer, double now, void *item, size_t bytes);

/*  Records a failed authentication from peer at now (and logs it, a line
    per peer every few seconds at most); its next requests wait.        */
void fpx_guard_failed (fpx_guard_t *self, const char *peer, double now);

/*  A held request whose time has come (NULL: none). Requests of one peer
    come back one at a time, each after that peer's current delay.      */
void *fpx_guard_next_due (fpx_guard_t *self, double now);

/*  Milliseconds until the next held request is due; -1 when none.      */
long fpx_guard_timeout_ms (fpx_guard_t *self, double now);

#endif
