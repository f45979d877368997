/* The admin REST API (--http): health, readiness, nodes, clients, kick,
 * publish and /metrics, behind Bearer API keys. See docs/api.md.
 *
 * Handlers run on the HTTP thread and never touch the broker: each request
 * is parsed and validated there, then posted to the broker loop's inbox and
 * suspended; the loop does the work and answers. Cluster-wide questions
 * (where is this client, which nodes exist, list every client) go through a
 * directory (below) that the cluster's registry implements; without one the
 * API answers for this node alone. A client that the directory places on
 * another node is read or kicked through that node's internal API with the
 * peer client. */
#ifndef RMQ_HTTP_ADMIN_API_H
#define RMQ_HTTP_ADMIN_API_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "http/metrics.h"

struct broker;
struct peer_client;
struct internal_api;
struct admin_api;
struct command_api;

/* ---- the directory: who is where in the cluster ---- */

struct admin_location {
    const char *node_id; /* the node the client is connected to */
    const char *address; /* that node's internal API "host:port" (remote only) */
    uint64_t channel;    /* the connection on that node (remote only) */
    bool local;          /* on this node: the broker answers directly */
};

/* st: RMQ_OK (loc valid during the call), RMQ_NOT_FOUND (unknown client),
 * RMQ_IO (the directory's store is unreachable: 503 redis_unavailable). */
typedef void (*admin_locate_cb)(enum rmq_status st, const struct admin_location *loc, void *arg);

/* st as above, plus RMQ_INVALID (a bad cursor or node: 400). On RMQ_OK the
 * callee receives result (a new reference it must release). */
typedef void (*admin_json_cb)(enum rmq_status st, json_t *result, void *arg);

/* Every function runs on the broker loop thread and answers through its
 * callback exactly once, before or after returning. */
struct admin_directory {
    void *ctx;
    /* True if the cluster store is reachable; else *why says what is not. */
    bool (*ready)(void *ctx, const char **why);
    /* Where client_id is connected. */
    void (*locate)(void *ctx, const char *client_id, admin_locate_cb cb, void *arg);
    /* One page: {"clients": [summary...], "next": cursor or null}. node NULL
     * means every node; cursor NULL means the first page; the cursor is
     * opaque to API users (the directory chooses its form). A summary holds at
     * least client_id, node, peer. */
    void (*list_clients)(void *ctx, const char *node, const char *cursor, size_t limit,
                         admin_json_cb cb, void *arg);
    /* [{"node_id", "address", "alive", "uptime_seconds", "connections"}...] */
    void (*list_nodes)(void *ctx, admin_json_cb cb, void *arg);
};

/* ---- the API ---- */

struct admin_api_config {
    const char *address; /* HOST:PORT */
    uint64_t max_body;
    uint64_t timeout_ms;
    const char *const *api_keys; /* --api-key values */
    size_t api_key_count;
    const char *api_key_file; /* --api-key-file, or NULL */
    struct broker *broker;
    const char *node_id;
    const char *advertise;                   /* internal API address shown in /nodes, or NULL */
    const struct admin_directory *directory; /* NULL = this node only; borrowed */
    struct peer_client *peers;               /* NULL = no remote reads or kicks; borrowed */
    struct internal_api *internal;           /* its counters join /metrics; may be NULL */
    struct command_api *commands;            /* device commands; NULL = 503; borrowed */
};

/* Loads the keys, binds and starts serving. Borrows everything in cfg,
 * which must outlive the API. NULL on failure (logged): a key file that
 * cannot be read, an address that cannot be bound. With no key at all every
 * /api/ and /metrics request is refused 401 (logged once here). */
struct admin_api *admin_api_new(const struct admin_api_config *cfg);

/* Plugs in the cluster after the API started (main builds the cluster
 * after the HTTP servers): dir NULL keeps the local directory, peers may be
 * NULL. Both borrowed. Start-up only, before the broker loop runs (jobs read
 * them on the loop thread). */
void admin_api_set_cluster(struct admin_api *api, const struct admin_directory *dir,
                           struct peer_client *peers);

/* Adds a family source to /metrics (called on the loop thread when
 * /metrics is read). Start-up only, before the loop runs. */
enum rmq_status admin_api_add_metrics_source(struct admin_api *api, metrics_source_fn fn,
                                             void *arg);

/* Stops serving; requests waiting on the loop are answered 503. Call
 * before the broker (and its inbox) is freed. NULL-safe. */
void admin_api_stop(struct admin_api *api);

/* After the broker is freed (its inbox cancelled what was queued).
 * NULL-safe. */
void admin_api_free(struct admin_api *api);

/* The bound port (for tests that bind port 0). */
uint16_t admin_api_port(const struct admin_api *api);

/* Constant-time check of a presented key against the configured ones
 * (SHA-256 of each, compared with CRYPTO_memcmp, every key visited). Any
 * thread. */
bool admin_api_key_valid(const struct admin_api *api, const char *key);

#endif
