/* The internal node API (--internal): what other nodes ask this one to do
 * to its own connections. Every request must be signed with the cluster
 * secret (see hmac.h); a missing, bad, stale or replayed signature gets 401
 * "unauthorized" and bumps relaymq_internal_auth_failures_total{reason}.
 *
 *   POST /internal/v1/channels/{channel}/close    {"reason": "takeover"|"kicked"}
 *   POST /internal/v1/channels/{channel}/deliver  {"topic", "payload" (base64), "qos", "retain"}
 *   GET  /internal/v1/clients/{id}
 *
 * Like the admin API, handlers validate on the HTTP thread and do the work
 * on the broker loop through its inbox. */
#ifndef RMQ_HTTP_INTERNAL_API_H
#define RMQ_HTTP_INTERNAL_API_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "http/http_server.h"

struct broker;
struct internal_api;

struct internal_api_config {
    const char *address; /* HOST:PORT */
    uint64_t max_body;
    uint64_t timeout_ms;
    const char *secret; /* --cluster-secret; required */
    uint64_t max_skew_ms;
    struct broker *broker;
    /* More endpoints (e.g. the cluster's forwarding and commands), signed
     * like the built-in ones. Their handlers get the internal_api as ctx and
     * find their own state in http_request_route(req)->arg. Borrowed. */
    const struct http_route *extra_routes;
    size_t extra_route_count;
};

/* NULL on failure (logged): no secret, address cannot be bound. */
struct internal_api *internal_api_new(const struct internal_api_config *cfg);

/* As admin_api_stop / admin_api_free. NULL-safe. */
void internal_api_stop(struct internal_api *api);
void internal_api_free(struct internal_api *api);

uint16_t internal_api_port(const struct internal_api *api);

/* The underlying server (its request counters). */
const struct http_server *internal_api_http(const struct internal_api *api);

/* Writes relaymq_internal_auth_failures_total{reason=...} (a metrics
 * source; any thread). */
void internal_api_write_metrics(FILE *out, void *api);

#endif
