/* Node-to-node message forwarding: every message routed on this node that
 * did not come from another node is sent once to each other node whose
 * routes match it (retained messages to every node, so each keeps the
 * cluster's retained store), over the internal API in batches, one batch in
 * flight per peer so that order from one publisher is kept. The receiving
 * node routes the batch to its local subscribers only.
 *
 * Retained messages are also kept in Redis (P retained: topic -> QoS byte
 * + payload) and loaded into the local store whenever Redis comes up, so
 * they survive the restart of every node.
 *
 * Messages under "$SYS/broker/" (each node's own statistics) are neither
 * forwarded nor kept in Redis.
 *
 * What a PUBACK to a publisher promises across nodes: the message is in this
 * node's forwarding buffer. A batch that fails is sent again (up to 5
 * times), so a remote subscriber may see a message twice after a link
 * failure (at least once between nodes); a buffer over --cluster-buffer
 * drops new messages for that peer, counted. Loop thread only. */
#ifndef RMQ_CLUSTER_FORWARDER_H
#define RMQ_CLUSTER_FORWARDER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct event_base;
struct broker;
struct cluster;
struct redis_link;
struct routes;
struct peer_client;
struct http_route;
struct forwarder;

struct forwarder_config {
    const char *prefix;
    uint64_t max_buffer; /* bytes waiting per peer before new messages are dropped */
    uint64_t max_batch;  /* bytes per request (a larger single message goes alone) */
    uint64_t max_stall_ms; /* longest pause of a received batch for backed-up subscribers */
    bool durable; /* --durable-sessions: hold for a silent peer, rescue for a dead one,
                     answer a batch once Redis has the sessions' copies */
};

/* Installs itself as the broker's forwarder. Borrows everything. NULL on
 * failure (logged). */
struct forwarder *forwarder_new(struct event_base *base, struct broker *broker,
                                struct cluster *cluster, struct redis_link *link,
                                struct routes *routes, struct peer_client *peers,
                                const struct forwarder_config *cfg);

/* Drops what is still buffered and uninstalls itself. After the peer
 * client is freed (whose last, cancelled callbacks still reach it) and
 * before the broker. NULL-safe. */
void forwarder_free(struct forwarder *f);

/* Messages buffered for other nodes. NULL-safe (0). */
size_t forwarder_pending(const struct forwarder *f);

/* At shutdown, once no client publishes any more: runs the loop until
 * every buffered message is sent (and, with quiet_ms, until no other node
 * has sent anything here for that long: what still arrives is delivered,
 * or redirected to where its session went), timeout_ms passes or a signal
 * arrives. NULL-safe. */
void forwarder_drain(struct forwarder *f, uint64_t timeout_ms, uint64_t quiet_ms);

/* The route table is about to go (routes_free): from now on nothing is
 * forwarded (frames that arrive are still delivered). NULL-safe. */
void forwarder_leave(struct forwarder *f);

/* Closes the streams other nodes opened to this one (before the internal
 * API stops: their sockets are its connections). NULL-safe. */
void forwarder_stop_streams(struct forwarder *f);

/* The internal API routes that receive forwarded messages: streams (POST
 * /internal/v1/link/{id}/{seq}, see cluster/forward_send.c) and batches
 * from nodes of older versions (POST /internal/v1/forward); their arg is f. */
const struct http_route *forwarder_internal_routes(struct forwarder *f, size_t *count);

/* A /metrics source: messages and bytes sent and received, batches,
 * retries, drops, buffered bytes. */
void forwarder_write_metrics(FILE *out, void *arg);

#endif
