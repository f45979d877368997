/* Request signing for the internal node API: every node-to-node request
 * carries an HMAC-SHA256 under the shared --cluster-secret.
 *
 * Canonical string (UTF-8, '\n' separated, no trailing newline):
 *
 *     RELAYMQ-HMAC-SHA256-V1
 *     <METHOD>                 upper case, e.g. POST
 *     <PATH>                   the request path exactly as sent on the wire,
 *                              percent-encoding kept, without the query string
 *     <TIMESTAMP>              Unix time in milliseconds, decimal
 *     <NONCE>                  1 to 64 characters chosen by the sender, unique
 *                              per request (the client sends 16 random hex
 *                              digits), so two identical requests in the same
 *                              millisecond are two requests, not a replay
 *     <NODE>                   the sender's node id (X-RelayMQ-Node)
 *     <BODY-SHA256>            lower-case hex SHA-256 of the body ("" hashes
 *                              to e3b0c442...)
 *
 * The signature is the lower-case hex HMAC-SHA256 of that string, keyed by
 * the secret's bytes. Headers: X-RelayMQ-Node, X-RelayMQ-Timestamp,
 * X-RelayMQ-Nonce, X-RelayMQ-Signature.
 *
 * A verifier accepts a request only if the signature matches (constant-time
 * comparison), the timestamp is within max_skew of its clock, and the same
 * signature has not been accepted before within that window (a replay
 * cache; entries expire when their timestamp leaves the window, after which
 * the request would be refused as stale anyway).
 *
 * hmac_sign is pure. A verifier is safe to use from any thread (its replay
 * cache has a lock). */
#ifndef RMQ_HTTP_HMAC_H
#define RMQ_HTTP_HMAC_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

#define HMAC_HEADER_NODE "X-RelayMQ-Node"
#define HMAC_HEADER_TIMESTAMP "X-RelayMQ-Timestamp"
#define HMAC_HEADER_NONCE "X-RelayMQ-Nonce"
#define HMAC_HEADER_SIGNATURE "X-RelayMQ-Signature"

#define HMAC_HEX_LEN 64   /* characters of a hex signature, NUL not included */
#define HMAC_NONCE_MAX 64 /* characters */

/* What is signed, apart from the secret. Strings are NUL-terminated; body
 * may be NULL when body_len is 0. */
struct hmac_message {
    const char *method;
    const char *path;
    uint64_t timestamp_ms;
    const char *nonce;
    const char *node;
    const void *body;
    size_t body_len;
};

/* Writes the hex signature (HMAC_HEX_LEN characters and a NUL) into out.
 * RMQ_INVALID if a string is missing or holds a '\n' (it would make the
 * canonical string ambiguous) or the nonce is empty or too long, RMQ_NOMEM
 * on an OpenSSL failure. */
enum rmq_status hmac_sign(const void *secret, size_t secret_len, const struct hmac_message *msg,
                          char out[HMAC_HEX_LEN + 1]);

enum hmac_result {
    HMAC_OK,
    HMAC_MISSING,       /* a header is absent */
    HMAC_MALFORMED,     /* timestamp not a number, nonce too long, signature not 64 hex digits */
    HMAC_BAD_SIGNATURE, /* does not match */
    HMAC_STALE,         /* timestamp outside the allowed skew */
    HMAC_REPLAY,        /* this exact signed request was already accepted */
    HMAC_CACHE_FULL,    /* too many requests within one window to remember: refused */
};
#define HMAC_RESULT_COUNT 7

/* Short lower-case name ("bad_signature"), for metrics labels and logs. */
const char *hmac_result_name(enum hmac_result r);

struct hmac_verifier;

/* Copies the secret. replay_capacity is rounded up to a power of two (at
 * least 64); it bounds how many requests one skew window can hold. NULL on
 * allocation failure or an empty secret. */
struct hmac_verifier *hmac_verifier_new(const void *secret, size_t secret_len, uint64_t max_skew_ms,
                                        size_t replay_capacity);

/* NULL-safe. Wipes the secret. */
void hmac_verifier_free(struct hmac_verifier *v);

/* Checks one request. timestamp and signature are the header values as
 * received (may be NULL), like msg->node and msg->nonce; msg->timestamp_ms
 * is ignored and taken from the timestamp text. now_ms is the caller's wall clock (Unix ms). On
 * HMAC_OK the signature is remembered, so the same request is refused next time. */
enum hmac_result hmac_verify(struct hmac_verifier *v, const struct hmac_message *msg,
                             const char *timestamp, const char *signature, uint64_t now_ms);

#endif
