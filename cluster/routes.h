/* The cluster route table: which other nodes have subscribers for which
 * topic filters. Each node keeps the set of filters it has local
 * subscriptions for in Redis (P routes:{node}) and announces every change
 * on the pub/sub channel P routes; every node keeps a replica of the
 * others' filters in a topic tree, rebuilt from the sets when it starts and
 * whenever its subscriber connection comes back (messages sent meanwhile
 * are lost). Redis is not on the per-message path: matching a topic
 * against the replica is local.
 *
 * Channel messages: "+\t{node}\t{filter}", "-\t{node}\t{filter}",
 * "*\t{node}" (that node rewrote its whole set: reload it), "!\t{node}"
 * (the node is gone: drop it; the reaper and a clean shutdown send it).
 *
 * Loop thread only. */
#ifndef RMQ_CLUSTER_ROUTES_H
#define RMQ_CLUSTER_ROUTES_H

#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>
#include <stdio.h>

struct event_base;
struct broker;
struct cluster;
struct redis_link;
struct routes;

struct routes_config {
    const char *redis_url; /* for the subscriber connection */
    const char *prefix;
    const char *node_id;
};

/* Hooks into the broker (filter changes) and the cluster (Redis up) and
 * opens its subscriber connection. link is the cluster's (borrowed; the
 * first connect must not have completed). NULL on failure (logged). */
struct routes *routes_new(struct event_base *base, struct broker *broker, struct cluster *cluster,
                          struct redis_link *link, const struct routes_config *cfg);

/* Removes this node's routes from Redis (best effort; before the cluster
 * flushes and frees its link) and frees. NULL-safe. */
void routes_free(struct routes *r);

typedef void (*routes_node_fn)(void *arg, const char *node, const char *addr);

/* Calls fn once for every other node with a filter matching topic (and a
 * known address). */
void routes_match(struct routes *r, const char *topic, size_t len, routes_node_fn fn, void *arg);

typedef void (*routes_share_fn)(void *arg, const char *key, size_t key_len, const char *node,
                                const char *addr);

/* Calls fn for every (shared group key, other node with members of it)
 * whose group filter matches topic. */
void routes_match_shared(struct routes *r, const char *topic, size_t len, routes_share_fn fn,
                         void *arg);

/* Calls fn for every other node known to the route table (with an
 * address), whether or not it has subscriptions. */
void routes_foreach_node(struct routes *r, routes_node_fn fn, void *arg);

#define ROUTES_MAX_LEFT_LISTENERS 4

/* Calls fn(ctx, node, since_ms) when another node leaves the route table
 * ("!": a clean shutdown, or reaped as dead), after its routes are
 * dropped. since_ms 0: the node is gone; otherwise it restarted at
 * since_ms (wall clock) and reaped its previous life, so only what it held
 * from before since_ms is left behind. Up to ROUTES_MAX_LEFT_LISTENERS,
 * called in the order added; start-up only. */
enum rmq_status routes_on_node_left(struct routes *r,
                                    void (*fn)(void *ctx, const char *node, uint64_t since_ms),
                                    void *ctx);

/* A /metrics source: replicated filters and nodes, resyncs, changes. */
void routes_write_metrics(FILE *out, void *arg);

#endif
