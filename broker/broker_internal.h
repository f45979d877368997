/* Types shared by the broker loop's files (broker.c, connection.c,
 * session.c and the packet handlers). Everything here belongs to one loop
 * and is touched only by that loop's thread. */
#ifndef RMQ_BROKER_BROKER_INTERNAL_H
#define RMQ_BROKER_BROKER_INTERNAL_H

#include <event2/event.h>
#include <event2/event_struct.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "broker/broker.h"
#include "broker/listener_spec.h"
#include "broker/message.h"
#include "broker/metrics.h"
#include "broker/outq.h"
#include "broker/packet_codec.h"
#include "broker/websocket.h"
#include "common/timer_wheel.h"

struct hashmap;
struct topic_tree;
struct retain_store;
struct evconnlistener;
struct session;
struct inbox;
struct ssl_ctx_st;
struct tls_conn;

#define BROKER_READ_BUFFER (64u * 1024u)


/* Before CONN_AWAIT_CONNECT come the transport's own set-up steps; each
 * is skipped when the listener does not use it. */
enum conn_state {
    CONN_PROXY_HEADER,  /* reading the load balancer's PROXY header */
    CONN_TLS_HANDSHAKE, /* TLS handshake in progress */
    CONN_WS_HANDSHAKE,  /* reading the WebSocket upgrade request */
    CONN_AWAIT_CONNECT,
    CONN_CLAIMING, /* CONNECT accepted locally, waiting for the cluster's claim */
    CONN_ACTIVE,
};

/* One client connection. Allocated at accept, freed by conn_close(). */
/* A client's publish token buckets (limits.c), made at its first PUBLISH
 * when a publish rate limit is configured. */
struct conn_rate {
    struct conn *conn;
    struct timer_entry timer; /* ends a rate pause */
    uint64_t refill_ms;       /* when the buckets were last refilled */
    int64_t msgs, bytes;      /* tokens x 1000; may go negative (a debt) */
};

/* Every connection has one, idle or not: fields are ordered so that no
 * padding is wasted (idle memory per connection is a product figure). */
struct conn {
    struct broker *broker;
    struct event ev;          /* EV_READ, plus EV_WRITE while output is blocked */
    struct timer_entry timer; /* connect timeout, then keepalive */
    int fd;
    uint8_t state;            /* enum conn_state */
    uint8_t protocol_level;
    bool dirty;               /* on the broker's flush list */
    bool want_write;          /* EV_WRITE armed */
    bool paused;              /* reading stopped while a claim is pending */
    bool paused_off;          /* ...and EV_READ disarmed: input came while paused */
    bool forward_paused;      /* reading stopped: the forwarder's buffer is full */
    bool rate_paused;         /* reading stopped: over max-publish-rate/-bytes-rate */
    bool dispatching;         /* inside process(): input must not be re-entered */
    uint8_t proxy_accept;     /* PROXY_PROTO_ACCEPT_* versions, in CONN_PROXY_HEADER */
    bool use_identity;        /* the TLS client certificate's CN is the username */
    bool refused_inline;      /* a user lookup failed inside handle_connect: it returns so */
    uint16_t keepalive;       /* seconds */
    struct session *throttled_by; /* reading stopped: this subscriber's queue is backed up */
    struct conn_rate *rate;       /* NULL until a rate limit first applies */
    size_t listener_idx;          /* 1 + index in broker->listeners; 0 = none */
    struct conn *throttle_next;   /* in throttled_by->throttled */
    struct tls_conn *tls;     /* NULL on plain TCP */
    struct ws_conn *ws;       /* NULL unless a WebSocket listener */
    uint64_t last_rx_ms;
    uint64_t channel;         /* unique per connection on this node */
    struct session *session;  /* NULL until CONNECT is accepted */
    struct message *will;     /* NULL if none; retain/qos inside */
    struct broker_claim *claim; /* pending cluster claim, CONN_CLAIMING only */
    char *username;           /* NULL without one */
    uint64_t connected_at_ms; /* wall clock, at CONNACK */

    /* Bytes of a packet that straddled reads. */
    uint8_t *in;
    uint32_t in_len, in_cap;
    uint32_t in_need;         /* total size of the pending packet, 0 if unknown */

    struct outq out; /* encoded packets not yet written */

    struct conn *dirty_next;
    struct conn *prev, *next; /* all connections of the broker */
    char peer[56];            /* "ip:port" for logs */
};

/* A WebSocket connection's state (transport.c). */
struct ws_conn {
    struct ws_decoder dec;
    bool sent_close; /* our close frame is queued */
    char path[];     /* the listener's endpoint */
};

/* A claim in progress: what finishing the CONNECT needs, and enough of the
 * client to undo the claim if the connection dies first. */
struct broker_claim {
    struct broker *broker;
    struct conn *conn; /* NULL once the connection is gone */
    uint64_t channel;
    uint16_t keepalive;
    uint8_t protocol_level;
    bool clean;
    bool looking_up;   /* still in lookup_user: nothing claimed yet */
    char *username;
    char *password;    /* lookup_user only: wiped and freed once checked */
    size_t password_len;
    char peer[56];
    uint16_t client_id_len;
    char client_id[];
};

/* One message waiting for its acknowledgement from the client. */
struct inflight {
    struct message *msg; /* NULL once PUBREC arrived (QoS 2, waiting for PUBCOMP) */
    uint16_t packet_id;
    uint8_t qos;
    uint8_t retain;
};

/* A message waiting for an inflight slot or for the client to come back. */
struct queued {
    struct message *msg;
    uint8_t qos;
    uint8_t retain;
};

struct subscription {
    char *filter;
    uint16_t len;
    uint8_t qos;
};

/* A session handed over to another node is kept for a short while as a
 * ghost: its subscriptions stay here and what they match is sent on to the
 * node at addr. */
struct session_ghost {
    struct session *session;
    char *addr;
    struct broker *broker;
    struct timer_entry timer;
    struct timer_entry routes_timer; /* when its filters leave the route table */
    bool routes_released;
    struct session *next; /* in broker->ghosts */
};

/* A session restored from a node that died: messages rescued from that
 * node's undelivered batches are for it (broker_api_route_rescued). */
struct session_origin {
    uint64_t until_ms; /* they are taken until then (monotonic) */
    uint64_t since_ms; /* when it was restored (wall clock) */
    char node[];
};

/* MQTT session state: lives as long as the connection (clean session) or
 * until the client cleans it (persistent session). */
struct session {
    char *client_id;
    uint16_t client_id_len;
    bool clean;
    struct conn *conn; /* attached connection, NULL when offline */

    struct subscription *subs;
    uint32_t sub_count, sub_cap;

    struct inflight *inflight; /* oldest first */
    uint16_t inflight_count, inflight_cap;
    uint16_t next_packet_id;

    struct queued *queue; /* a ring of queue_cap (a power of two) entries, or NULL */
    uint32_t queue_head, queue_cap; /* the oldest is queue[queue_head] */
    uint32_t queue_len;
    uint64_t queue_bytes;   /* payload bytes of the queued messages */
    struct conn *throttled; /* publishers waiting for this queue to drain */
    struct session *throttling_prev, *throttling_next; /* in broker->throttling */
    uint64_t throttled_since_ms;
    bool stalled; /* paused publishers too long: overflow is dropped until it drains */
    bool leaving; /* handed to another node: its end is not an end */
    struct session_origin *origin; /* restored from a dead node lately, or NULL */
    bool freeing; /* session_free is running */
    struct session_ghost *ghost; /* handed over, still redirecting; or NULL */

    uint16_t *qos2_in; /* packet ids of QoS 2 publishes received, awaiting PUBREL */
    uint16_t qos2_in_count, qos2_in_cap;

    /* Fan-out bookkeeping: which publish last matched this session and at
     * what QoS, so overlapping subscriptions deliver one copy. */
    uint64_t match_gen;
    uint8_t match_qos;
};

/* The i-th oldest queued message of s (i < s->queue_len). */
static inline struct queued *
session_queued(const struct session *s, uint32_t i)
{
    return &s->queue[(s->queue_head + i) & (s->queue_cap - 1)];
}

/* One publish being routed: the message object is made lazily, only when a
 * subscriber must keep it (queue, inflight) or it is retained. */
struct route {
    const char *topic;
    uint16_t topic_len;
    const uint8_t *payload;
    uint32_t payload_len;
    uint8_t qos;
    bool retain;
    struct message *msg; /* owned reference once made */
};

struct listener_slot {
    struct broker *broker;
    struct evconnlistener *lev;
    struct event *resume; /* re-enables accept after EMFILE */
    char *address;
    struct listener_spec spec;
    struct ssl_ctx_st *tls_ctx; /* TLS listeners: the context new connections get */
    size_t conn_count;          /* open connections accepted here */
    uint64_t rate_window_ms;    /* start of the current one-second accept window */
    uint32_t rate_count;        /* connections accepted in that window */
};

struct broker {
    struct event_base *base;
    const struct broker_config *cfg;
    struct hashmap *sessions; /* client id -> struct session */
    struct topic_tree *subs;  /* filter -> struct session */
    struct retain_store *retained;
    struct timer_wheel *wheel;
    struct event *tick_ev;
    struct event *flush_ev;
    struct event *sys_ev;
    struct listener_slot *listeners;
    size_t listener_count;
    struct inbox *inbox; /* work posted by other threads (HTTP handlers) */
    const struct broker_hooks *hooks; /* NULL: standalone */
    const struct broker_observer *observers[BROKER_MAX_OBSERVERS];
    size_t observer_count;
    void (*forward)(void *ctx, const struct broker_message *m); /* NULL: standalone */
    void *forward_ctx;
    /* broker_api_on_room: called once a subscriber that held remote frames
     * back (remote_waiting) has room again */
    void (*room_fn)(void *ctx);
    void *room_ctx;
    bool remote_waiting;
    bool from_peer;            /* routing a message another node forwarded */
    struct hashmap *filter_refs; /* filter -> subscriptions to it (as a uintptr_t) */
    size_t forward_paused;       /* connections paused for the forwarder (an upper bound) */
    struct hashmap *groups;      /* shared subscription key -> struct share_group */
    struct stashed *stash;       /* redirected messages that came before their session */
    size_t stash_count;
    struct topic_tree *shared;   /* the groups' filters; subscribers are groups */
    struct session *ghosts;      /* sessions handed over, still redirecting */
    void (*redirect)(void *ctx, const char *addr, const char *client_id,
                     const struct broker_message *m);

    struct conn *conns; /* every connection */
    struct conn *dirty; /* connections with output to flush */
    size_t conn_count, connected_count;

    uint64_t now_ms; /* monotonic, refreshed at each callback */
    uint64_t started_ms;
    uint64_t next_channel;
    uint64_t next_client_id;
    uint64_t match_gen;

    /* Sessions matched by the publish being routed. */
    struct session **matched;
    size_t matched_count, matched_cap;

    uint8_t *rbuf; /* shared read buffer */
    struct conn *publisher; /* client whose PUBLISH is being routed, else NULL */
    struct session *throttling; /* sessions that have publishers paused */
    struct broker_metrics metrics;
    uint64_t limit_log_ms; /* last "connection limit" log line (one per second at most) */
};

static inline uint64_t
broker_now(struct broker *b)
{
    return b->now_ms;
}

void broker_refresh_clock(struct broker *b);

/* ---- session_transfer.c: persistent sessions as the cluster sees them ---- */

/* Tells observers about a change to persistent session s (no-op for a
 * clean session or one being handed to another node). */
void session_notify(struct broker *b, const struct session *s, enum broker_session_change change,
                    const char *filter, size_t filter_len, uint8_t qos,
                    const struct message *msg);

/* A redirected message that arrived before the hand-over that brings its
 * session here (they travel on different connections). */
struct stashed {
    struct stashed *next;
    struct message *msg;
    uint8_t qos;
    uint64_t expires_ms;
    char client_id[];
};

/* Frees every stashed message (broker_free). */
void session_free_stash(struct broker *b);

/* Sends what a ghost session matched to the node it moved to. */
void session_redirect(struct broker *b, struct session *s, const struct route *r, uint8_t qos,
                      bool retain);

/* Frees every ghost (broker_free). */
void session_free_ghosts(struct broker *b);

/* A ghost's filters leave the route table (once; at the latest when it is
 * freed). */
void session_ghost_release_routes(struct broker *b, struct session *s);

/* ---- share.c: shared subscriptions ---- */

/* True if key is "$share/{group}/{filter}" or "$queue/{filter}"; *filter
 * points at the filter inside key. */
bool share_parse(const char *key, size_t len, const char **filter, size_t *filter_len);
enum rmq_status share_subscribe(struct broker *b, const char *key, size_t len, struct session *s,
                                uint8_t qos, bool *replaced);
enum rmq_status share_unsubscribe(struct broker *b, const char *key, size_t len,
                                  struct session *s);
/* Delivers r to one member of every local group whose filter matches. */
void share_route(struct broker *b, struct route *r);
void share_free_all(struct broker *b);

/* ---- broker_routes.c: subscriptions as the cluster sees them ---- */

/* topic_tree_subscribe/unsubscribe on b->subs, keeping the count of
 * subscriptions per filter and telling observers when a filter appears or
 * goes. Same contracts as the topic_tree functions. */
enum rmq_status broker_subscribe(struct broker *b, const char *filter, size_t len, void *s,
                                 uint8_t qos, bool *replaced);
enum rmq_status broker_unsubscribe(struct broker *b, const char *filter, size_t len, void *s);

/* The count part of broker_unsubscribe alone: a ghost keeps matching its
 * filters here while the cluster stops sending them here. */
void broker_filter_release(struct broker *b, const char *filter, size_t len);

/* Hands a message routed here to the forwarder (unless it came from a peer). */
void broker_forward(struct broker *b, const struct route *r);

/* ---- connection.c ---- */

/* Takes ownership of fd (non-blocking) accepted on listener l and starts
 * reading: the PROXY header and TLS handshake first when l has them. */
void conn_accept(struct broker *b, int fd, const char *peer, const struct listener_slot *l);

/* Appends bytes to the output; the flush happens once per loop iteration. */
enum rmq_status conn_write(struct conn *c, const void *data, size_t len);

/* Appends bytes as they are, outside any WebSocket frame (handshake
 * answers, control frames). */
enum rmq_status conn_write_raw(struct conn *c, const void *data, size_t len);

/* One read from the socket, or from the TLS session over it, as read(2). */
ssize_t conn_recv(struct conn *c, void *buf, size_t len);

/* Keeps len bytes of MQTT input in c->in (which must be empty) for the
 * next read to run. False if out of memory: c was closed. */
bool conn_keep_input(struct conn *c, const uint8_t *buf, size_t len);

/* Arms EV_READ/EV_WRITE from the connection's state. */
void conn_update_events(struct conn *c);

/* Reserves n bytes at the end of the output and returns them to fill. */
uint8_t *conn_reserve(struct conn *c, size_t n);

/* Appends msg's payload by reference (after what was reserved so far). */
enum rmq_status conn_write_ref(struct conn *c, struct message *msg);

/* Ends the connection: publishes the will unless reason is CLOSE_NORMAL or
 * CLOSE_SHUTDOWN, detaches (and for clean sessions destroys) the session,
 * frees c. c is invalid afterwards. */
void conn_close(struct conn *c, enum close_reason reason);

/* Writes every dirty connection's output. */
void conn_flush_all(struct broker *b);

/* Stops reading while a claim is pending (reading is disarmed only once
 * input arrives meanwhile); resume_input re-enables reading and runs any
 * packets that arrived meanwhile. */
void conn_pause_input(struct conn *c);
void conn_resume_input(struct conn *c);

/* Back-pressure: stops reading from publisher c until session s's queue
 * drains; session_unthrottle() lets every publisher waiting on s go. */
void conn_throttle(struct conn *c, struct session *s);
void session_unthrottle(struct broker *b, struct session *s);
void session_unlink_throttling(struct broker *b, struct session *s);

/* Called each tick: sessions that kept publishers paused beyond
 * backpressure-timeout are marked stalled and their publishers released. */
void session_check_stalls(struct broker *b);

/* Fills info from a connected (or claiming) connection. */
void conn_client_info(const struct conn *c, struct broker_client_info *info);

/* ---- limits.c: connection and publish rate limits ---- */

/* At accept on l: false if max-connections (node or listener) or the
 * listener's max-connection-rate forbids another connection (counted,
 * logged at most once a second); the caller then closes the socket. */
bool limits_admit(struct broker *b, struct listener_slot *l);

/* The per-listener connection count of c, opened and closed. */
void limits_conn_opened(struct conn *c, const struct listener_slot *l);
void limits_conn_closed(struct conn *c);

/* Charges a PUBLISH of payload_len bytes to c's token buckets; over
 * max-publish-rate or max-publish-bytes-rate, pauses c's input (counted)
 * until the buckets refill. Never drops the message. */
void limits_charge_publish(struct conn *c, size_t payload_len);

/* ---- transport.c: PROXY header, TLS and WebSocket handshakes, frames ---- */

/* Runs the set-up step of c's state (before CONN_AWAIT_CONNECT); may
 * close c. */
void conn_setup_step(struct conn *c);

/* connect-timeout struck during set-up: logs, counts, closes c. */
void conn_setup_timeout(struct conn *c);

/* A WebSocket state for a listener serving path; NULL if out of memory. */
struct ws_conn *ws_conn_new(const char *path);

/* Decodes WebSocket input in place, answers pings; returns the MQTT bytes
 * now at buf[0..n), or -1 after a protocol error (c was closed). */
ssize_t conn_ws_input(struct conn *c, uint8_t *buf, size_t len);

/* If the client sent a close frame: echoes it, closes c, returns true. */
bool conn_ws_peer_closed(struct conn *c);

/* Queues a close frame with code, once. */
void conn_ws_close_frame(struct conn *c, uint16_t code);

/* ---- handlers (handle_*.c): one per packet type family ---- */

enum rmq_status handle_connect(struct conn *c, const struct mqtt_packet *p);
enum rmq_status handle_publish(struct conn *c, const struct mqtt_packet *p);
enum rmq_status handle_puback(struct conn *c, const struct mqtt_packet *p);
enum rmq_status handle_pubrec(struct conn *c, const struct mqtt_packet *p);
enum rmq_status handle_pubrel(struct conn *c, const struct mqtt_packet *p);
enum rmq_status handle_pubcomp(struct conn *c, const struct mqtt_packet *p);
enum rmq_status handle_subscribe(struct conn *c, const struct mqtt_packet *p);
enum rmq_status handle_unsubscribe(struct conn *c, const struct mqtt_packet *p);

/* Fills b->matched with the sessions whose filters match topic, once each,
 * with their highest matching QoS in match_qos. */
void broker_match(struct broker *b, const char *topic, uint16_t topic_len);

/* Routes a publish to every matching session, and stores it when retained.
 * Takes nothing: r->msg (if made) is released by the call. */
void broker_route(struct broker *b, struct route *r);

/* ---- session.c ---- */

struct session *session_new(const char *client_id, size_t len, bool clean);

/* Removes the session's subscriptions from the tree and frees everything. */
void session_free(struct broker *b, struct session *s);

/* Delivers a message to the session at qos (already capped by the
 * subscription): sent now, queued, or dropped (counted) when the queue is
 * full. `retain` is the RETAIN flag to put on the wire. */
void session_deliver(struct broker *b, struct session *s, struct route *r, uint8_t qos,
                     bool retain);

/* After CONNACK: re-sends unacknowledged messages with DUP and PUBRELs,
 * then fills the inflight window from the queue. */
void session_resume(struct broker *b, struct session *s);

/* Acknowledgements from the client for outgoing messages. Unknown packet
 * ids are ignored (as Mosquitto does). */
void session_ack(struct broker *b, struct session *s, enum mqtt_type type, uint16_t packet_id);

/* Records a subscription in the session's own list (for cleanup). With
 * is_new (the tree had no such subscription) the list is not searched, so
 * many subscriptions cost linear, not quadratic, time. */
enum rmq_status session_add_sub(struct session *s, const char *filter, uint16_t len, uint8_t qos,
                                bool is_new);
bool session_remove_sub(struct session *s, const char *filter, uint16_t len);

/* Incoming QoS 2 bookkeeping: returns true if packet_id was already
 * recorded (a re-send), else records it. */
bool session_qos2_seen(struct session *s, uint16_t packet_id, bool *nomem);
void session_qos2_release(struct session *s, uint16_t packet_id);

#endif
