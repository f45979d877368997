/* The cluster control plane of one node: its record in Redis (membership
 * with a TTL and heartbeat), the device registry (claim on CONNECT,
 * compare-and-delete on disconnect), online/offline events, and the
 * clean-up of nodes that died. Installs itself as the broker's hooks.
 *
 * Redis key schema (prefix P, default "rmq:"), documented in docs/redis.md:
 *   P node:{id}           hash, TTL node-ttl: id addr started_at epoch version conns
 *   P nodes               set of node ids that registered
 *   P node:{id}:devices   set of device ids the node holds
 *   P dev:{device}        hash: the live connection of a device (see registry.c)
 *   P events              stream of online/offline events
 *
 * Loop thread only. When Redis is unreachable the node keeps serving: claims
 * succeed locally and every live device is re-asserted when Redis returns. */
#ifndef RMQ_CLUSTER_CLUSTER_H
#define RMQ_CLUSTER_CLUSTER_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "common/status.h"

struct event_base;
struct broker;
struct cluster;
struct admin_directory;
struct redis_link;

struct cluster_config {
    const char *redis_url;
    const char *prefix;
    const char *node_id;
    const char *advertise;  /* internal API address other nodes use; may be "" */
    uint64_t node_ttl_ms;
    bool device_by_username; /* device id = username instead of client id */
    int64_t events_maxlen;
    uint64_t epoch; /* this run of the node, as the broker has it */
    bool users_redis; /* usernames the password file does not know are looked up in Redis */
};

/* Asks the node at `addr` to close one of its connections. Installed by
 * main once the internal API client exists; without it a takeover across
 * nodes only updates the registry. */
typedef void (*cluster_close_remote_fn)(void *ctx, const char *node, const char *addr,
                                        uint64_t epoch, uint64_t channel, const char *reason,
                                        void (*done)(void *arg, bool unreached), void *arg);

/* Connects to Redis and hooks into the broker. Borrows everything.
 * NULL on failure (logged). */
struct cluster *cluster_new(struct event_base *base, struct broker *broker,
                            const struct cluster_config *cfg);

/* Releases this node's record and devices best-effort, then frees. NULL-safe. */
void cluster_free(struct cluster *cluster);

void cluster_set_close_remote(struct cluster *cluster, cluster_close_remote_fn fn, void *ctx);

/* Fills the admin API's directory with cluster-wide answers read from the
 * registry (http/admin_api.h): locate a client, list nodes, page through
 * every client. The cluster must outlive the API's use of it. */
void cluster_directory(struct cluster *cluster, struct admin_directory *out);

/* A /metrics source (metrics_source_fn in http/metrics.h): Redis
 * commands, errors, mean latency, reconnects and link state; takeovers
 * across nodes; nodes reaped; events lost while Redis was away. */
void cluster_write_metrics(FILE *out, void *arg);

/* The cluster's Redis link, for other cluster modules on this loop
 * (commands). Valid until cluster_free. */
struct redis_link *cluster_redis(struct cluster *cluster);

/* Calls fn(ctx) every time the Redis link comes up (scripts loaded),
 * after the cluster re-registered this node. At most 4; start-up only. */
enum rmq_status cluster_add_up_listener(struct cluster *cluster, void (*fn)(void *ctx),
                                        void *ctx);

/* Where Redis said a client's persistent session was, read atomically
 * with the device's claim (SESSIONS_OWNER_LUA in cluster/sessions.h). */
struct cluster_session_owner {
    const char *node;   /* the node holding it; NULL: no session anywhere */
    const char *addr;   /* that node's internal address, "" if unknown */
    const char *origin; /* "" or the dead node it was restored from lately */
    uint64_t origin_ms; /* when it was restored from origin (wall clock) */
};

/* Before CONNACK of a claimed client, the cluster lets the session layer
 * fetch the client's persistent session (from the node that holds it or
 * from Redis); it calls done(token) exactly once when the session is
 * ready, or when there is nothing to fetch. owner is what the claim read
 * (valid during the call), or NULL when the claim could not tell (the
 * session layer then looks it up itself). */
typedef void (*cluster_session_prepare_fn)(void *ctx, const char *client_id, bool clean,
                                           const struct cluster_session_owner *owner,
                                           void (*done)(void *token), void *token);

void cluster_set_session_prepare(struct cluster *cluster, cluster_session_prepare_fn fn,
                                 void *ctx);

/* The claim also counts the device's unfinished commands in Redis, so the
 * command engine can skip its own look-up when there are none. mark() is
 * called as a claim is sent; hint() with that mark and the count just
 * before the client's CONNACK (count -1: unknown). */
struct cluster_pending_watch {
    uint64_t (*mark)(void *ctx);
    void (*hint)(void *ctx, uint64_t channel, uint64_t mark, long long count);
    void *ctx;
};

/* Borrowed; NULL stops the hints. */
void cluster_set_pending_watch(struct cluster *cluster, const struct cluster_pending_watch *w);

/* True while Redis is reachable (readiness). */
bool cluster_redis_up(const struct cluster *cluster);

#endif
