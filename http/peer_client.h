/* Outgoing calls to other nodes' internal API, signed with the cluster
 * secret (see hmac.h), from a broker loop.
 *
 * Each peer (by "host:port") gets a few persistent keep-alive connections,
 * created on first use; requests go to the least busy one. Limits: a
 * connect that has not completed after connect_timeout fails the request
 * (PEER_UNREACHABLE) and marks the peer down for down_ms, during which
 * requests to it fail at once instead of waiting again; a request with no
 * complete answer after request_timeout fails with PEER_TIMEOUT; at most
 * max_in_flight requests per peer are queued or running, the next fails at
 * once with PEER_BUSY.
 *
 * Loop thread only (the base's thread): requests, callbacks and free.
 * Responses are not retried: the internal API's operations are not all
 * idempotent (a delivery would be made twice). */
#ifndef RMQ_HTTP_PEER_CLIENT_H
#define RMQ_HTTP_PEER_CLIENT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/status.h"

struct event_base;
struct peer_client;

struct peer_client_config {
    const char *node_id;         /* sent as X-RelayMQ-Node */
    const char *secret;          /* --cluster-secret */
    uint64_t connect_timeout_ms; /* 0 = 2000 */
    uint64_t request_timeout_ms; /* 0 = 5000 */
    uint64_t down_ms;            /* 0 = 1000 */
    unsigned max_in_flight;      /* per peer; 0 = 64 */
    unsigned connections;        /* per peer; 0 = 4 */
};

enum peer_error {
    PEER_OK,          /* an HTTP answer arrived: see status and body */
    PEER_UNREACHABLE, /* cannot connect (refused, connect timeout, name), or marked down */
    PEER_TIMEOUT,     /* connected, but no complete answer in time */
    PEER_BUSY,        /* max_in_flight requests to this peer already */
    PEER_BROKEN,      /* the connection broke mid-request or the answer was not HTTP */
    PEER_CANCELLED,   /* the client is being freed */
};

const char *peer_error_name(enum peer_error e);

struct peer_result {
    enum peer_error error;
    int status;   /* HTTP status when error is PEER_OK, else 0 */
    json_t *body; /* the answer parsed as JSON, or NULL (not JSON, empty, error);
                   * borrowed: valid during the callback, json_incref to keep */
    const uint8_t *raw; /* the answer's bytes (any type), NULL if none; borrowed */
    size_t raw_len;
};

/* Called exactly once per accepted request, on the loop thread, never from
 * inside peer_client_request. */
typedef void (*peer_client_cb)(const struct peer_result *res, void *arg);

/* Copies cfg's strings. NULL on failure (logged). */
struct peer_client *peer_client_new(struct event_base *base, const struct peer_client_config *cfg);

/* Every request still pending gets its callback with PEER_CANCELLED (which
 * must not start new requests), then connections are closed. NULL-safe. */
void peer_client_free(struct peer_client *pc);

/* Sends method path to the peer at address ("host:port", "[v6]:port"),
 * with body (borrowed, may be NULL) as JSON. path must already be
 * percent-encoded (see peer_client_escape). RMQ_OK: cb will be called.
 * RMQ_INVALID (bad address or path) or RMQ_NOMEM: cb will not be called. */
enum rmq_status peer_client_request(struct peer_client *pc, const char *address, const char *method,
                                    const char *path, json_t *body, peer_client_cb cb, void *arg);

/* POST /internal/v1/channels/{channel}/close with {"reason": reason} to the
 * node at addr; a failure is logged (a 404, the connection already gone, is
 * not one). done (optional) runs exactly once, with unreached true if the
 * node could not be asked (it is probably dead: nobody else will report the
 * connection's end). ctx is the peer client. Its signature is
 * cluster_close_remote_fn's, so main can install it with
 * cluster_set_close_remote(cluster, peer_client_close_remote, pc). */
void peer_client_close_remote(void *ctx, const char *node, const char *addr, uint64_t epoch,
                              uint64_t channel, const char *reason,
                              void (*done)(void *arg, bool unreached), void *arg);

/* For a caller speaking HTTP itself on its own connection (the forward
 * link, cluster/forward_send.c): writes the four signature header lines
 * ("Name: value" and CRLF each) of a request without a body into out.
 * RMQ_LIMIT if cap is too small; RMQ_INVALID or RMQ_NOMEM as hmac_sign. */
enum rmq_status peer_client_sign_headers(const struct peer_client *pc, const char *method,
                                         const char *path, char *out, size_t cap);

/* Splits "host:port" or "[v6]:port" (the brackets dropped). RMQ_INVALID
 * if it is neither or host does not fit in hostlen. */
enum rmq_status peer_client_split_address(const char *address, char *host, size_t hostlen,
                                          uint16_t *port);

/* Percent-encodes one path segment (everything but unreserved
 * characters). malloc'd; NULL on failure. */
char *peer_client_escape(const char *segment);

/* A /metrics source (metrics_source_fn): requests answered, by outcome. */
void peer_client_write_metrics(FILE *out, void *arg);

#endif
