/* State shared by the forwarder's files: forwarder.c (links, sending,
 * retained messages in Redis, shared subscriptions, the broker's hook, life
 * cycle), forward_receive.c (batches from other nodes) and forward_rescue.c
 * (durable sessions: what a node that left did not take). Loop thread
 * only, except the receiving route's handler. */
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

struct link {
    struct forwarder *f;
    uint8_t *buf;
    size_t head, len, cap;
    size_t sending;        /* bytes of the request in flight (0 = idle) */
    size_t sending_frames;
    size_t frames;         /* frames in [head, len) */
    int tries;
    bool down;      /* durable: MAX_TRIES failed in a row; kept, retried, no back-pressure */
    bool abandoned; /* the request in flight was for a node that left: ignore its answer */
    bool by_addr;   /* a redirect link, named by its address: never held */
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
    struct event *flush_ev;
    bool flush_pending;
    bool paused; /* publishers are paused for a full backlog */
    bool draining; /* forwarder_drain is running the loop */
    struct http_route route;
    char key_retained[512];
    /* counters */
    uint64_t sent_msgs, sent_bytes, batches, retries, dropped_full, dropped_failed;
    uint64_t recv_msgs, recv_batches, recv_pauses, retained_loaded, retained_errors;
    uint64_t redirects_out, redirects_in, shared_out, shared_in, shared_lost;
    uint64_t rescued_out, rescued_in, rescue_lost, barriers_failed;
    struct rescue *rescues; /* waiting for RESCUE_DELAY_MS */
    struct hashmap *share_turns; /* group key -> next turn (uintptr_t) */
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

/* ---- forward_receive.c ---- */

/* The route's handler (HTTP thread): checks the batch, posts it to the
 * broker loop, which routes it and answers. */
void handle_forward(struct http_request *req, void *ctx);

/* ---- forward_rescue.c ---- */

/* routes_on_node_left (durable; ctx is the forwarder): takes what waits
 * for the node off its link and rescues it after a delay. */
void rescue_on_node_left(void *ctx, const char *node);

/* At shutdown: drops the rescues still waiting (logged). */
void rescue_abandon_all(struct forwarder *f);

#endif
