/* A broker loop: one libevent event_base on one thread that owns its
 * listeners, connections, sessions, subscription tree, retained store and
 * timer wheel outright. Nothing here is shared with other threads; work from
 * other threads will arrive through an inbox (a later addition).
 *
 * main() fills a struct broker_config, creates the broker, runs it until a
 * signal stops it, and frees it. */
#ifndef RMQ_BROKER_BROKER_H
#define RMQ_BROKER_BROKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "broker/listener_spec.h"
#include "broker/metrics.h"
#include "common/status.h"

struct event_base;
struct broker;
struct inbox;
struct auth;
struct acl;

struct broker_config {
    const char *const *listen; /* listener URLs: see broker/listener_spec.h */
    size_t listen_count;
    struct listener_options listener_defaults; /* PROXY and TLS options of every listener */
    const char *node_id;
    bool allow_anonymous;
    bool reuse_port; /* listeners bind with SO_REUSEPORT: processes share the port */
    uint32_t max_packet_size;     /* bytes; incoming packets above it close the connection */
    uint16_t max_inflight;        /* outgoing QoS 1/2 messages awaiting ack, per client */
    uint32_t max_queued_messages; /* per session, beyond the inflight window */
    uint64_t max_output_buffer;   /* bytes buffered for a client before QoS 0 is dropped */
    uint64_t connect_timeout_ms;  /* time allowed between accept and CONNECT */
    uint64_t sys_interval_ms;     /* $SYS publication period, 0 = off */
    uint64_t backpressure_timeout_ms; /* longest pause of publishers for a full queue; 0 = never pause */
    uint32_t max_connections;        /* node-wide open connections, 0 = unlimited */
    uint32_t max_publish_rate;       /* PUBLISH packets per second per client, 0 = unlimited */
    uint64_t max_publish_bytes_rate; /* payload bytes per second per client, 0 = unlimited */
    uint64_t max_queued_bytes;       /* queued payload bytes per session, 0 = unlimited */
    bool durable_sessions; /* persistent sessions report every QoS 1/2 message they owe */
    uint64_t epoch; /* this run of the node (wall ms at start): channel ids are unique within it */
    const struct auth *auth; /* password file (broker/auth.h), NULL = none */
    const struct acl *acl;   /* topic ACL (broker/acl.h), NULL = everything allowed */
};

/* Why a connection ended; decides whether the will is published and is
 * what offline events report. */
enum close_reason {
    CLOSE_NORMAL,            /* DISCONNECT received */
    CLOSE_SOCKET_ERROR,      /* EOF or socket error without DISCONNECT */
    CLOSE_PROTOCOL_ERROR,    /* malformed or illegal packet */
    CLOSE_KEEPALIVE_TIMEOUT, /* silent beyond 1.5 x keepalive */
    CLOSE_CONNECT_TIMEOUT,   /* no CONNECT in time */
    CLOSE_TAKEOVER,          /* the same client id connected again */
    CLOSE_REFUSED,           /* CONNACK with a non-zero code was sent */
    CLOSE_SHUTDOWN,          /* broker stopping */
    CLOSE_KICKED,            /* an operator asked (admin API) */
};

/* Name used in logs and offline events ("normal", "keepalive_timeout", ...). */
const char *close_reason_name(enum close_reason reason);

/* A connected client as the cluster layer sees it. Strings are borrowed for
 * the duration of the hook call. */
struct broker_client_info {
    const char *client_id;
    const char *username; /* NULL without one */
    const char *peer;     /* "ip:port" */
    uint64_t channel;     /* unique per connection on this node */
    uint64_t connected_at_ms; /* wall clock */
    uint8_t protocol_level;
    bool clean_session;
    /* The will, or will_topic NULL. */
    const char *will_topic;
    const uint8_t *will_payload;
    uint32_t will_payload_len;
    uint8_t will_qos;
    bool will_retain;
};

struct broker_claim;

/* Hooks the cluster layer installs (all optional; loop thread).
 * lookup_user: a CONNECT's username that the password file does not know
 *   (or every username, without a file) is looked up there: the hook must
 *   call broker_user_found(token, ...) exactly once, now or later; the
 *   client's packets wait meanwhile. Without the hook such a username is
 *   refused (with a password file) or not checked (without one).
 * claim: called after authentication, before CONNACK. The hook must call
 *   broker_claim_done(token, ...) exactly once, now or later; the client's
 *   packets wait meanwhile.
 * released: called when a client that was claimed disconnects, with why. */
struct broker_hooks {
    void *ctx;
    void (*lookup_user)(void *ctx, struct broker_claim *token, const char *username);
    void (*claim)(void *ctx, struct broker_claim *token, const struct broker_client_info *info);
    void (*released)(void *ctx, const struct broker_client_info *info, enum close_reason reason);
};

/* What a lookup_user hook found. */
enum broker_user_lookup {
    BROKER_USER_FOUND,     /* encoded: the user's "$7$..." password hash */
    BROKER_USER_NOT_FOUND, /* no such user */
    BROKER_USER_ERROR,     /* the user store could not be asked */
};

/* A message a client published, as observers see it: after the ACL let it
 * through, once per PUBLISH packet (a QoS 1 re-send with DUP is seen again,
 * a QoS 2 re-send before PUBREL is not). Borrowed for the call. */
struct broker_publish_info {
    const char *client_id;
    const char *username; /* NULL without one */
    uint64_t channel;
    const char *topic; /* not NUL-terminated */
    size_t topic_len;
    const uint8_t *payload;
    size_t payload_len;
    uint8_t qos;
    bool retain;
    bool dup;
};

/* A message being routed, as the forwarder sees it (borrowed for the call). */
struct broker_message {
    const char *topic; /* not NUL-terminated */
    size_t topic_len;
    const uint8_t *payload;
    size_t payload_len;
    uint8_t qos;
    bool retain;
};

/* What happened to a persistent session. */
enum broker_session_change {
    SESSION_SUBSCRIBED,   /* filter, qos */
    SESSION_UNSUBSCRIBED, /* filter */
    SESSION_ONLINE,       /* a connection attached (its messages go out from memory) */
    SESSION_OFFLINE,      /* the connection ended; the session stays */
    SESSION_QUEUED,       /* message kept for it while offline (durable_sessions: or
                             owed to it while connected) */
    SESSION_SETTLED,      /* durable_sessions: an owed message was acknowledged
                             (PUBACK, or PUBREC at QoS 2) */
    SESSION_ENDED,        /* discarded (a clean-session CONNECT) */
};

struct broker_session_event {
    enum broker_session_change change;
    const char *client_id;
    const char *filter; /* SUBSCRIBED, UNSUBSCRIBED; not NUL-terminated */
    size_t filter_len;
    uint8_t qos;        /* SUBSCRIBED; QUEUED, SETTLED: the QoS it goes out at */
    const struct broker_message *message; /* QUEUED, SETTLED */
};

/* Read-only listeners on a broker loop (commands, stream bridges); every
 * callback is optional and runs on the loop thread. They must not close
 * connections from inside a callback.
 * connected: CONNACK 0 was just sent (the session is ready for deliveries).
 * disconnected: a connected client's connection ended, with why.
 * published: a client's PUBLISH (see struct broker_publish_info).
 * acked: a delivery made with a tag (broker_api_deliver) was acknowledged by
 *   the client (PUBACK for QoS 1, PUBREC for QoS 2). */
struct broker_observer {
    void *ctx;
    void (*connected)(void *ctx, const struct broker_client_info *info);
    void (*disconnected)(void *ctx, const struct broker_client_info *info,
                         enum close_reason reason);
    void (*published)(void *ctx, const struct broker_publish_info *msg);
    void (*acked)(void *ctx, uint64_t channel, uint64_t tag);
    /* filter_changed: the node's first subscription to a filter was made
     * (present) or its last one went (the cluster's route table). */
    void (*filter_changed)(void *ctx, const char *filter, size_t len, bool present);
    /* session: a change to a persistent (clean session 0) session, for
     * keeping it where another node can recover it. */
    void (*session)(void *ctx, const struct broker_session_event *ev);
};

#define BROKER_MAX_OBSERVERS 8

/* The forwarder (cluster layer) sees every message routed on this loop that
 * did not come from another node: client publishes, wills, API and $SYS
 * publications. fn NULL removes it. Loop thread. */
void broker_set_forwarder(struct broker *broker,
                          void (*fn)(void *ctx, const struct broker_message *m), void *ctx);

/* Back-pressure from the forwarder: pause reading from the client whose
 * PUBLISH is being routed now (no-op outside a client's publish), and
 * resume every client paused that way. Loop thread. */
void broker_forward_pause(struct broker *broker);
void broker_forward_resume(struct broker *broker);

/* Calls fn for every distinct filter with at least one subscription here. */
void broker_foreach_filter(struct broker *broker,
                           void (*fn)(void *arg, const char *filter, size_t len), void *arg);

/* Adds an observer (borrowed; it must stay valid until removed or the
 * broker is freed). RMQ_LIMIT beyond BROKER_MAX_OBSERVERS. Start-up only. */
enum rmq_status broker_add_observer(struct broker *broker, const struct broker_observer *obs);

/* Removes an observer (before freeing it while the broker lives on).
 * NULL-safe broker; unknown observers are ignored. */
void broker_remove_observer(struct broker *broker, const struct broker_observer *obs);

/* Creates a broker on base and binds every listener. Borrows cfg and base,
 * which must outlive the broker. NULL on failure (logged). */
struct broker *broker_new(struct event_base *base, const struct broker_config *cfg);

/* Closes every connection (without publishing wills: the broker is going
 * away on purpose), frees sessions, subscriptions and retained messages.
 * NULL-safe. */
void broker_free(struct broker *broker);

/* The loop's inbox: other threads post work here (see common/inbox.h);
 * items run on the loop thread with full access to the broker. */
struct inbox *broker_inbox(struct broker *broker);

/* Installs hooks (borrowed; they must outlive the broker). */
void broker_set_hooks(struct broker *broker, const struct broker_hooks *hooks);

/* Completes a user lookup: the CONNECT's password is checked against
 * encoded (FOUND), then the CONNECT goes on (the claim, or CONNACK 0);
 * otherwise CONNACK 0x04 (not found, wrong password, a malformed hash) or
 * 0x03 (ERROR) and the connection is closed. Frees nothing the hook owns;
 * token is invalid after. */
void broker_user_found(struct broker_claim *token, enum broker_user_lookup result,
                       const char *encoded, size_t len);

/* Completes a claim: with ok the client gets CONNACK 0 and its packets
 * flow; without, CONNACK 0x03 (server unavailable) and the connection
 * closes. If the connection died meanwhile, the released hook runs so the
 * cluster can undo the claim. Frees token. */
void broker_claim_done(struct broker_claim *token, bool ok);

/* Closes the connection with this channel id, if it is still here.
 * Returns false if no such connection. */
bool broker_close_channel(struct broker *broker, uint64_t channel, enum close_reason reason);

/* The epoch of this run (see struct broker_config). */
uint64_t broker_epoch(const struct broker *broker);

/* Publishes a message from the broker itself (events, $SYS): routed to
 * local subscribers as if a client had published it. */
void broker_publish(struct broker *broker, const char *topic, const void *payload, size_t len,
                    uint8_t qos, bool retain);

/* Calls fn for every connected client (not those still claiming). fn must
 * not close connections. */
void broker_foreach_client(struct broker *broker,
                           void (*fn)(void *arg, const struct broker_client_info *info),
                           void *arg);

/* Clients connected now. */
size_t broker_connected_count(const struct broker *broker);

/* Closes every connection with CLOSE_SHUTDOWN (hooks see each release). */
void broker_close_all(struct broker *broker);

/* Stops accepting new connections (for shutdown). */
void broker_stop_listening(struct broker *broker);

/* Loads every TLS listener's certificate, key and CA files again (SIGHUP):
 * new connections get the new ones, open connections keep theirs. A
 * listener whose files fail to load keeps its old ones (logged). Returns the
 * number of listeners that failed. */
size_t broker_reload_tls(struct broker *broker);

/* Copies the broker's counters. */
void broker_metrics_get(const struct broker *broker, struct broker_metrics *out);

#endif
