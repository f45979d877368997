/* Persistent sessions across nodes. A client with clean session 0 that
 * reconnects to another node finds its subscriptions and the QoS 1/2
 * messages kept for it:
 *
 *   - while the node holding the session is up, the new node asks it to
 *     hand the session over (POST /internal/v1/sessions/{client}/handover:
 *     the old node closes any connection, sends the subscriptions and the
 *     messages it owes, and forgets the session);
 *   - when that node is gone, the new node rebuilds the session from the
 *     copy kept in Redis.
 *
 * The copy in Redis (prefix P): P sess:{client} hash {node, life (the
 * holder's run, its epoch), online, updated_ms}, P sess:{client}:subs hash filter -> QoS, P sess:{client}:queue
 * list of messages (forward frames, cluster/forward_codec.h) kept while the
 * client is offline, bounded by --max-queued-messages, and
 * P node:{node}:sessions, the persistent sessions a node holds. The
 * subscriptions are written as they change; the queue when the client goes
 * offline and with every message queued after that. Messages a connected
 * client has not acknowledged when its node dies are not in Redis (they
 * would put Redis on the per-message path).
 *
 * Loop thread only. */
#ifndef RMQ_CLUSTER_SESSIONS_H
#define RMQ_CLUSTER_SESSIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* The Lua function that tells where a client's session is: P prefix, c
 * client id, now (wall ms). Returns {node, addr or '', origin or '',
 * origin_ms} of the holder, or {}; origin: the dead node the session was
 * restored from at origin_ms, if that was less than a minute ago (its
 * rescued messages may still come). Shared by the session look-up and the
 * device claim (cluster/registry.c), which reads it atomically. */
#define SESSIONS_OWNER_LUA                                                                \
    "local function session_owner(P, c, now)\n"                                          \
    "  local h = redis.call('HMGET', P .. 'sess:' .. c, 'node', 'origin', 'origin_ms')\n" \
    "  if not h[1] then return {} end\n"                                                 \
    "  local origin = ''\n"                                                              \
    "  if h[2] and tonumber(h[3] or '0') + 60000 > now then origin = h[2] end\n"         \
    "  return {h[1], redis.call('HGET', P .. 'node:' .. h[1], 'addr') or '', origin,\n"  \
    "          h[3] or '0'}\n"                                                           \
    "end\n"

struct event_base;
struct broker;
struct cluster;
struct cluster_session_owner;
struct redisReply;
struct redis_link;
struct routes;
struct peer_client;
struct http_route;
struct sessions;

struct sessions_config {
    const char *prefix;
    const char *node_id;
    uint32_t max_queued; /* queue bound in Redis: the broker's (durable: plus its window) */
    bool durable;        /* the queue in Redis holds every QoS 1/2 message owed, sent or not */
    const char *advertise; /* this node's internal API address */
    uint64_t epoch;        /* this run's start (ms): written as the session's life */
};

/* Hooks into the broker (session changes), the cluster (before CONNACK)
 * and the route table (a node that left: its offline sessions are adopted
 * by the first survivor to ask, so messages for them are kept until the
 * clients come back). Borrows everything; peers may be NULL (then only
 * Redis). */
struct sessions *sessions_new(struct event_base *base, struct broker *broker,
                              struct cluster *cluster, struct routes *routes,
                              struct redis_link *link, struct peer_client *peers,
                              const struct sessions_config *cfg);

/* At shutdown, after the clients were disconnected: runs the loop so that
 * clients reconnecting elsewhere get their sessions handed over, until none
 * is left here, timeout_ms passes or a signal arrives. The rest are adopted
 * by a survivor once this node leaves the route table. NULL-safe. */
void sessions_drain(struct sessions *sm, uint64_t timeout_ms);

/* Lets every client still waiting for its session go on without it.
 * Before the cluster is freed. */
void sessions_stop(struct sessions *sm);

/* After the Redis link and the peer client are freed (their last
 * callbacks reach it), before the broker. NULL-safe. */
void sessions_free(struct sessions *sm);

/* The internal routes (.../handover, .../drop), whose arg is sm. */
const struct http_route *sessions_internal_routes(struct sessions *sm, size_t *count);

/* A /metrics source. */
void sessions_write_metrics(FILE *out, void *arg);

/* Reads the answer of session_owner() (SESSIONS_OWNER_LUA) into out, whose
 * strings point into r. False if r is not such an answer. */
bool sessions_owner_parse(const struct redisReply *r, struct cluster_session_owner *out);

#endif
