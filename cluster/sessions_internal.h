/* State shared by the persistent sessions' files: sessions.c (the state
 * encoding, prepare before CONNACK, adopting the sessions of a node that
 * left, the internal routes, life cycle) and session_copy.c (keeping each
 * session's copy in Redis). Loop thread only. */
#ifndef RMQ_CLUSTER_SESSIONS_INTERNAL_H
#define RMQ_CLUSTER_SESSIONS_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "broker/broker.h"
#include "cluster/sessions.h"
#include "http/http_server.h"

#define KEY_MAX 768

struct peer_result;
struct prep;

struct sessions {
    struct broker *broker;
    struct cluster *cluster;
    struct redis_link *link;
    struct peer_client *peers;
    const struct sessions_config *cfg;
    struct broker_observer observer;
    struct http_route routes[2];
    struct prep *preps;
    struct event_base *base;
    bool draining; /* sessions_drain is running the loop */
    int script_owner, script_load, script_online, script_end, script_adopt;
    char max_queued[16];
    char life[24]; /* cfg->epoch in decimal */
    uint64_t handed_in, handed_out, restored, adopted, dropped_remote, redis_errors, bad_state;
};

struct buf {
    uint8_t *data;
    size_t len, cap;
    bool failed;
};

/* ---- sessions.c ---- */

/* Reserves n more bytes at the end of b and returns them; NULL once
 * b->failed (set when memory ran out). */
uint8_t *buf_room(struct buf *b, size_t n);

/* peer_client callback of a request whose answer does not matter. */
void sessions_ignore_answer(const struct peer_result *res, void *arg);

/* ---- session_copy.c ---- */

/* One Redis command about a copy; a failure is counted (redis_errors). */
void send_argv(struct sessions *sm, int argc, const char **argv, const size_t *lens);

/* Deletes the session's copy and its place in every node's set. */
void forget_everywhere(struct sessions *sm, const char *client_id);

/* The broker observer's session callback (ctx is sm): the change, written
 * to the copy in Redis. */
void copy_on_session(void *ctx, const struct broker_session_event *ev);

#endif
