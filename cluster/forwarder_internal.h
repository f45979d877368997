/* State shared by the forwarder's files: forwarder.c (links' buffers,
 * retained messages in Redis, shared subscriptions, the broker's hook, life
 * cycle), forward_send.c (a link's stream to its node), forward_stream.c
 * (streams from other nodes), forward_receive.c (routing received frames;
 * batches from nodes of older versions) and forward_rescue.c (durable
 * sessions: what a node that left did not take). Loop thread only, except
 * the receiving routes' handlers. */
#ifndef RMQ_CLUSTER_FORWARDER_INTERNAL_H
#define RMQ_CLUSTER_FORWARDER_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cluster/forwarder.h"
#include "http/http_server.h"

#define RECV_PAUSE_MS 2 /* a backed-up batch looks again after this */
#define MAX_HOLD_MS 4000 /* below the peer client's 5 s request timeout */

struct event;
struct hashmap;
struct broker_message;
struct forward_frame;
struct rescue;

struct forwarder;
struct rlink;

#define LINK_PATH "/internal/v1/link" /* + "/{id}/{seq}": a link's stream starts */
#define LINK_PROTOCOL "relaymq-link"

enum link_state { LINK_CLOSED, LINK_CONNECTING, LINK_HANDSHAKE, LINK_OPEN };

/* One peer's link: frames waiting in buf from head (not yet acknowledged)
 * to len; those from head to sent are written to the stream. */
struct link {
    struct forwarder *f;
    uint8_t *buf;
    size_t head, sent, len, cap;
    size_t frames;     /* frames in [head, len) */
    uint64_t seq_head; /* stream position of buf[head] */
    uint64_t id;       /* random: names the link's stream to the receiver */
    int tries;
    bool down;    /* durable: MAX_TRIES failed in a row; kept, retried, no back-pressure */
    bool by_addr; /* a redirect link, named by its address: never held */
    /* the stream (forward_send.c) */
    enum link_state state;
    int fd;
    struct event *rev, *wev, *watch;
    uint64_t since_ms; /* connecting since, or waiting for an ack since */
    uint8_t in[512];   /* the handshake's answer, then a partial ack */
    size_t in_len;
    /* durable: when frames were routed, one mark per MARK_MS at most (the
     * first frame at or after off was routed at ms); for a rescue. */
    struct mark {
        size_t off;
        uint64_t ms;
    } *marks;
    size_t mark_count, mark_cap;
    struct event *retry;
    char *addr;
    char node[];
};

struct forwarder {
    struct event_base *base;
    struct broker *broker;
    struct redis_link *link;
    struct routes *routes;
    struct peer_client *peers;
    const struct forwarder_config *cfg;
    struct hashmap *links; /* node id -> struct link */
    struct link *last;     /* what link_get returned last (links stay until forwarder_free) */
    struct event *flush_ev;
    bool flush_pending;
    bool paused; /* publishers are paused for a full backlog */
    uint64_t drain_deadline, drain_quiet_ms; /* forwarder_drain (monotonic ms) */
    uint64_t last_in_ms;                     /* a stream last brought bytes */
    struct http_route http_routes[2]; /* the stream, the batch */
    char key_retained[512];
    /* counters */
    uint64_t sent_msgs, sent_bytes, batches, retries, dropped_full, dropped_failed;
    uint64_t recv_msgs, recv_batches, recv_pauses, retained_loaded, retained_errors;
    uint64_t redirects_out, redirects_in, shared_out, shared_in, shared_lost;
    uint64_t rescued_out, rescued_in, rescue_lost, barriers_failed;
    uint64_t streams_out, streams_in; /* streams opened to and from other nodes */
    struct rescue *rescues; /* waiting for RESCUE_DELAY_MS */
    struct hashmap *share_turns; /* group key -> next turn (uintptr_t) */
    struct hashmap *streams; /* link id (8 bytes) -> struct stream_seen (forward_stream.c) */
    struct rlink *rlinks;    /* streams from other nodes, open */
    _Atomic uint64_t recv_bad; /* counted on the HTTP thread */
    /* per-message scratch for the routes callback */
    const struct forward_frame *frame;
    bool appended;
};

/* ---- forwarder.c ---- */

/* The buffer's bytes before head are gone: marks move with the rest; the
 * last mark at or before head stays (it dates the frame at head). */
void marks_forget(struct link *l, size_t head, size_t shift);

/* Makes the flush event active unless it already is. */
void schedule_flush(struct forwarder *f);

/* routes_node_fn: appends the current frame (f->frame) to node's link;
 * arg is the forwarder. */
void append_to(void *arg, const char *node, const char *addr);

/* Resumes paused publishers once every peer's backlog is low again. */
void maybe_resume(struct forwarder *f);

/* For every group m matches (only the group only_key if not NULL), one
 * member node in turn: here, or a frame aimed at the group. */
void forward_shared(struct forwarder *f, const struct broker_message *m, const char *only_key,
                    size_t only_len);

/* A link's unacknowledged bytes up to seq are taken: moves head. */
void link_acked(struct link *l, uint64_t seq);

/* A link's stream failed (why: for the log): retried after a pause, or
 * given up on after MAX_TRIES (durable: marked down; otherwise what it
 * holds is dropped). */
void link_failed(struct link *l, const char *why);

/* ---- forward_send.c ---- */

/* Writes what the link holds to its stream, connecting first if needed
 * (not while a retry waits). */
void link_send(struct link *l);

/* Closes the link's stream (what was written and not acknowledged is
 * written again on the next one). */
void link_disconnect(struct link *l);

/* ---- forward_stream.c ---- */

/* The link route's handler (HTTP thread): switches the connection to a
 * stream of frames, handed to the broker loop. */
void handle_link(struct http_request *req, void *ctx);

/* broker_api_on_room (ctx: the forwarder): paused streams look again. */
void streams_on_room(void *ctx);

/* Closes every stream from other nodes (before the internal API stops). */
void streams_close_all(struct forwarder *f);

/* ---- forward_receive.c ---- */

/* Routes one received frame: to the local subscribers, or to one session,
 * group or restored sessions; *backed_up as broker_api_route_remote. */
void deliver_frame(struct forwarder *f, const struct forward_frame *fr, bool *backed_up);

/* The batch route's handler (HTTP thread; nodes of older versions): checks
 * the batch, posts it to the broker loop, which routes it and answers. */
void handle_forward(struct http_request *req, void *ctx);

/* ---- forward_rescue.c ---- */

/* routes_on_node_left (durable; ctx is the forwarder): takes what waits
 * for the node off its link and rescues it after a delay. */
void rescue_on_node_left(void *ctx, const char *node, uint64_t since_ms);

/* At shutdown: drops the rescues still waiting (logged). */
void rescue_abandon_all(struct forwarder *f);

#endif
