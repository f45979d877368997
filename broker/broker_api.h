/* What the HTTP servers (and later the cluster code) may ask of a broker
 * loop: describe and list clients, close a connection, publish, deliver to
 * one connection, read gauges.
 *
 * Loop thread only: callers on other threads post an inbox item (see
 * broker_inbox()) and call these from its run function. JSON results are
 * new references owned by the caller. */
#ifndef RMQ_BROKER_BROKER_API_H
#define RMQ_BROKER_BROKER_API_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

struct broker;
struct broker_message;
struct timer_wheel;

/* Levels of the broker the metrics report besides its counters. */
struct broker_gauges {
    uint64_t connections;       /* open TCP connections, before and after CONNECT */
    uint64_t connected_clients; /* connections with an accepted CONNECT */
    uint64_t sessions;          /* sessions held, online or not */
    uint64_t subscriptions;     /* (filter, session) pairs */
    uint64_t retained_messages;
    uint64_t uptime_seconds;
};

/* The client's description: client_id, online, node, channel, peer,
 * connected_at (ISO 8601 UTC), connected_at_ms (Unix ms), username,
 * protocol, protocol_level, clean_session, keepalive, subscriptions
 * [{filter, qos}], inflight, queued. A persistent
 * session with no connection is described with online false. NULL if this
 * node has no session for the id (or out of memory). */
json_t *broker_api_client_json(struct broker *b, const char *client_id);

/* True if this node holds a session for the id (connected or not). */
bool broker_api_has_client(struct broker *b, const char *client_id);

/* A page of the connected clients, ordered by client id: those whose id
 * sorts after `after` (NULL or "" = from the start), at most limit. Each
 * entry is the short form {client_id, node, channel, peer, protocol,
 * clean_session}. *more tells whether clients remain after the page. */
enum rmq_status broker_api_list_clients(struct broker *b, const char *after, size_t limit,
                                        json_t **page, bool *more);

/* Closes the connection of a connected client with reason kicked; its
 * channel id is returned through channel (may be NULL). RMQ_NOT_FOUND if
 * the client is not connected here. */
enum rmq_status broker_api_kick_client(struct broker *b, const char *client_id, uint64_t *channel);

/* Routes a message as if a client had published it (counted as received).
 * RMQ_INVALID for an invalid topic name or qos above 2. */
enum rmq_status broker_api_publish(struct broker *b, const char *topic, size_t topic_len,
                                   const void *payload, size_t payload_len, uint8_t qos,
                                   bool retain);

/* Delivers a message to the session of one connection only, at qos (not
 * capped by any subscription), with the RETAIN flag as given. A non-zero
 * tag (QoS 1 and 2) makes the broker tell its observers when the client
 * acknowledges this message (struct broker_observer, acked).
 * RMQ_NOT_FOUND if the channel is gone or has no session yet, RMQ_INVALID
 * for a bad topic or qos. */
enum rmq_status broker_api_deliver(struct broker *b, uint64_t channel, const char *topic,
                                   size_t topic_len, const void *payload, size_t payload_len,
                                   uint8_t qos, bool retain, uint64_t tag);

void broker_api_gauges(struct broker *b, struct broker_gauges *out);

/* Routes a message another node forwarded: to local subscribers only (it
 * is not forwarded again); a retained one updates the local store. Counted
 * as received from a peer. *backed_up tells whether a connected QoS 1/2
 * subscriber's queue is past the mark where local publishers are paused:
 * the caller should wait (up to --backpressure-timeout) before routing
 * more. The topic must already have passed the checks a PUBLISH's topic
 * name gets (forward_frame_next makes them on every frame); only its length
 * and qos are checked again (RMQ_INVALID). The broker's clock is not read:
 * a caller routing a batch refreshes it once first (broker_api_now). */
enum rmq_status broker_api_route_remote(struct broker *b, const char *topic, size_t topic_len,
                                        const void *payload, size_t payload_len, uint8_t qos,
                                        bool retain, bool *backed_up);

/* ---- persistent sessions moving between nodes ---- */

/* Walks the session of client_id: fn_sub for each subscription, fn_msg for
 * each message it still owes the client (unacknowledged ones first, then
 * the queue), at the QoS it will go out at; either may be NULL.
 * RMQ_NOT_FOUND without a persistent session here. */
enum rmq_status broker_api_session_walk(struct broker *b, const char *client_id,
                                        void (*fn_sub)(void *arg, const char *filter,
                                                       size_t len, uint8_t qos),
                                        void (*fn_msg)(void *arg, const struct broker_message *m),
                                        void *arg);

/* Gives the session up to another node: closes its connection if it has
 * one (as a takeover) and frees it without telling observers it ended.
 * With to_addr (that node's internal API), the session's subscriptions
 * stay here for ghost_ms as a ghost: what they match meanwhile (messages
 * other nodes still send here before they learn the new route) goes to the
 * broker's redirect hook for to_addr. RMQ_NOT_FOUND if there is none. */
enum rmq_status broker_api_session_release(struct broker *b, const char *client_id,
                                           const char *to_addr, uint64_t ghost_ms);

/* Ghost sessions still redirecting. */
size_t broker_api_ghost_count(struct broker *b);

/* Installs the hook that sends a ghost's messages to their new node. */
void broker_api_set_redirect(struct broker *b,
                             void (*fn)(void *ctx, const char *addr, const char *client_id,
                                        const struct broker_message *m));

/* A message for one session (a redirect from the node it left): delivered
 * to it at qos if it is here, else dropped (RMQ_NOT_FOUND). */
enum rmq_status broker_api_deliver_session(struct broker *b, const char *client_id,
                                           const char *topic, size_t topic_len,
                                           const void *payload, size_t payload_len, uint8_t qos,
                                           bool retain);

/* Creates (replacing any local one) an offline persistent session with
 * these subscriptions and queued messages, as recovered from another node
 * or from Redis; a CONNECT with clean session 0 then continues it. */
enum rmq_status broker_api_session_import(struct broker *b, const char *client_id,
                                          const char *const *filters, const size_t *filter_lens,
                                          const uint8_t *qos, size_t sub_count,
                                          const struct broker_message *msgs, size_t msg_count);

/* Marks the persistent session of client_id as restored from node, which
 * died, at since_ms (wall clock): messages rescued from that node's
 * undelivered batches (broker_api_route_rescued) in the next minute are for
 * it. RMQ_NOT_FOUND without one. */
enum rmq_status broker_api_session_set_origin(struct broker *b, const char *client_id,
                                              const char *node, uint64_t since_ms);

/* How long after its restore a session still takes rescued messages that
 * were routed: once restored, its subscriptions reach every node within
 * the route table's replication delay, well inside this (and the nodes'
 * clocks are assumed this close). */
#define BROKER_RESCUE_MARGIN_MS 2000

/* A message another node could not hand to node before it died, first
 * routed at routed_ms (wall clock; 0 = unknown): delivered at the
 * subscriptions' QoS to the local persistent sessions restored from that
 * node (broker_api_session_set_origin) whose filters match, unless it was
 * routed more than BROKER_RESCUE_MARGIN_MS after the restore (the session
 * had it directly); to no one else (the other subscribers had their copy).
 * Returns how many sessions it reached. */
size_t broker_api_route_rescued(struct broker *b, const char *node, uint64_t routed_ms,
                                const char *topic, size_t topic_len, const void *payload,
                                size_t payload_len, uint8_t qos, bool retain);

/* Sessions held here (after broker_close_all: the persistent ones). */
size_t broker_api_session_count(struct broker *b);

/* True if a persistent session for client_id is held here. */
bool broker_api_has_persistent_session(struct broker *b, const char *client_id);

/* True if key is a shared subscription ("$share/{group}/{filter}" or
 * "$queue/{filter}"); *filter points at its filter inside key. */
bool broker_api_share_filter(const char *key, size_t len, const char **filter,
                             size_t *filter_len);

/* Shared subscriptions: calls fn with the key ("$share/g/filter" or
 * "$queue/filter") of every local group whose filter matches topic. */
void broker_api_match_groups(struct broker *b, const char *topic, size_t len,
                             void (*fn)(void *arg, const char *key, size_t key_len), void *arg);

/* Delivers to one member of the local group key (in turn, a connected one
 * first). RMQ_NOT_FOUND if the group has no member here. */
enum rmq_status broker_api_deliver_group(struct broker *b, const char *key, size_t key_len,
                                         const char *topic, size_t topic_len,
                                         const void *payload, size_t payload_len, uint8_t qos,
                                         bool retain);

/* True if a message on topic at qos would reach a connected QoS 1/2
 * subscriber whose queue is past the mark where publishers are paused. */
bool broker_api_remote_backed_up(struct broker *b, const char *topic, size_t topic_len,
                                 uint8_t qos);

/* fn runs (on the loop) when, after broker_api_remote_backed_up said yes,
 * a subscriber's queue is down to where paused publishers resume: whoever
 * held messages back may look again. fn NULL removes it. */
void broker_api_on_room(struct broker *b, void (*fn)(void *ctx), void *ctx);

/* Puts a retained message into the local store without routing it (the
 * cluster loading the retained messages kept in Redis). */
enum rmq_status broker_api_retain_load(struct broker *b, const char *topic, size_t topic_len,
                                       const void *payload, size_t payload_len, uint8_t qos);

/* The loop's timer wheel and its clock (monotonic ms, as of the current
 * callback): other layers on this loop schedule their timers there. */
struct timer_wheel *broker_api_wheel(struct broker *b);
uint64_t broker_api_now(struct broker *b);

/* True while the broker has at least one MQTT listener open. */
bool broker_api_listening(struct broker *b);

/* This node's id (the broker's configuration; valid while it lives). */
const char *broker_api_node_id(struct broker *b);

#endif
