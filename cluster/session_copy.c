/* Persistent sessions across nodes: keeping each session's copy in Redis;
 * see sessions.h.
 *
 * The broker's session events (its observer) become Redis writes, sent in
 * order on one connection: P sess:<client> (holder node, online,
 * updated_ms), its :subs (filter -> QoS) and :queue (forward frames, the
 * newest max_queued kept), and the holder's P node:<id>:sessions set. A
 * write Redis refuses is counted. Coming online also tells the node that
 * held the session before (if another) to drop its copy. Loop thread
 * only. */
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "broker/broker.h"
#include "broker/broker_api.h"
#include "cluster/forward_codec.h"
#include "cluster/redis_link.h"
#include "cluster/sessions_internal.h"
#include "common/clock.h"
#include "http/peer_client.h"

static void
on_redis_done(struct redisReply *r, void *arg)
{
    struct sessions *sm = arg;
    if (sm && (!r || r->type == REDIS_REPLY_ERROR))
        sm->redis_errors++;
}

void
forget_everywhere(struct sessions *sm, const char *client_id)
{
    const char *argv[] = {sm->cfg->prefix, client_id, sm->cfg->node_id};
    redis_link_eval(sm->link, sm->script_end, on_redis_done, sm, 0, 3, argv, NULL);
}

static void
key(const struct sessions *sm, const char *client_id, const char *suffix, char *out)
{
    snprintf(out, KEY_MAX, "%ssess:%s%s", sm->cfg->prefix, client_id, suffix);
}

void
send_argv(struct sessions *sm, int argc, const char **argv, const size_t *lens)
{
    if (redis_link_argv(sm->link, on_redis_done, sm, argc, argv, lens) != RMQ_OK)
        sm->redis_errors++;
}

static void
trim_queue(struct sessions *sm, const char *qkey)
{
    char neg[24];
    snprintf(neg, sizeof(neg), "-%s", sm->max_queued);
    const char *argv[] = {"LTRIM", qkey, neg, "-1"};
    send_argv(sm, 4, argv, NULL);
}

struct queue_writer {
    struct sessions *sm;
    const char **argv;
    size_t *lens;
    int argc, cap;
    struct buf frames;
    size_t *offsets;
};

static void
collect_msg(void *arg, const struct broker_message *m)
{
    struct queue_writer *w = arg;
    if (w->argc == w->cap) {
        int cap = w->cap ? w->cap * 2 : 64;
        size_t *o = realloc(w->offsets, (size_t)cap * sizeof(*o));
        if (!o) {
            w->frames.failed = true;
            return;
        }
        w->offsets = o;
        w->cap = cap;
    }
    size_t at = w->frames.len;
    struct forward_frame f = {.topic = m->topic,
                              .topic_len = m->topic_len,
                              .payload = m->payload,
                              .payload_len = m->payload_len,
                              .qos = m->qos,
                              .retain = m->retain};
    uint8_t *p = buf_room(&w->frames, forward_frame_size(m->topic_len, m->payload_len));
    if (!p)
        return;
    forward_frame_write(p, &f);
    w->offsets[w->argc++] = at;
}

/* The client went offline: its copy gets everything it is still owed. */
static void
write_offline(struct sessions *sm, const char *client_id)
{
    char skey[KEY_MAX], qkey[KEY_MAX], now[24];
    key(sm, client_id, "", skey);
    key(sm, client_id, ":queue", qkey);
    snprintf(now, sizeof(now), "%" PRIu64, clock_wall_ms());
    const char *hset[] = {"HSET", skey, "node", sm->cfg->node_id, "life", sm->life,
                          "online", "0", "updated_ms", now};
    send_argv(sm, 10, hset, NULL);
    const char *del[] = {"DEL", qkey};
    send_argv(sm, 2, del, NULL);
    struct queue_writer w = {.sm = sm};
    broker_api_session_walk(sm->broker, client_id, NULL, collect_msg, &w);
    if (w.argc > 0 && !w.frames.failed) {
        const char **argv = malloc((size_t)(w.argc + 2) * sizeof(*argv));
        size_t *lens = malloc((size_t)(w.argc + 2) * sizeof(*lens));
        if (argv && lens) {
            argv[0] = "RPUSH";
            lens[0] = 5;
            argv[1] = qkey;
            lens[1] = strlen(qkey);
            for (int i = 0; i < w.argc; i++) {
                size_t end = i + 1 < w.argc ? w.offsets[i + 1] : w.frames.len;
                argv[2 + i] = (const char *)w.frames.data + w.offsets[i];
                lens[2 + i] = end - w.offsets[i];
            }
            send_argv(sm, w.argc + 2, argv, lens);
            trim_queue(sm, qkey);
        } else {
            sm->redis_errors++;
        }
        free(argv);
        free(lens);
    }
    free(w.frames.data);
    free(w.offsets);
}

/* One message of the queue in Redis: RPUSH appends it, LREM (durable
 * sessions, once acknowledged) takes the first entry equal to it: any
 * equal one will do, they are the same message to the client. */
static void
write_queued(struct sessions *sm, const char *client_id, const struct broker_message *m,
             uint8_t qos, bool settled)
{
    char qkey[KEY_MAX];
    key(sm, client_id, ":queue", qkey);
    struct forward_frame f = {.topic = m->topic,
                              .topic_len = m->topic_len,
                              .payload = m->payload,
                              .payload_len = m->payload_len,
                              .qos = qos,
                              .retain = m->retain};
    size_t size = forward_frame_size(m->topic_len, m->payload_len);
    uint8_t *frame = malloc(size);
    if (!frame) {
        sm->redis_errors++;
        return;
    }
    forward_frame_write(frame, &f);
    if (settled) {
        const char *argv[] = {"LREM", qkey, "1", (const char *)frame};
        size_t lens[] = {4, strlen(qkey), 1, size};
        send_argv(sm, 4, argv, lens);
    } else {
        const char *argv[] = {"RPUSH", qkey, (const char *)frame};
        size_t lens[] = {5, strlen(qkey), size};
        send_argv(sm, 3, argv, lens);
        trim_queue(sm, qkey);
    }
    free(frame);
}

struct online_ctx {
    struct sessions *sm;
    char client_id[];
};

/* A copy of the session may linger on the node that held it before (an
 * adoption racing the client's return): that node drops it. */
static void
on_online(struct redisReply *r, void *arg)
{
    struct online_ctx *x = arg;
    struct sessions *sm = x->sm;
    if (!r || r->type == REDIS_REPLY_ERROR)
        sm->redis_errors++;
    else if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
             r->element[1]->type == REDIS_REPLY_STRING && r->element[1]->len > 0 && sm->peers) {
        char path[KEY_MAX];
        char *escaped = peer_client_escape(x->client_id);
        if (escaped) {
            snprintf(path, sizeof(path), "/internal/v1/sessions/%s/drop", escaped);
            peer_client_request(sm->peers, r->element[1]->str, "POST", path, NULL,
                                sessions_ignore_answer, NULL);
        }
        free(escaped);
    }
    free(x);
}

void
copy_on_session(void *ctx, const struct broker_session_event *ev)
{
    struct sessions *sm = ctx;
    char skey[KEY_MAX], subs[KEY_MAX], nkey[KEY_MAX], qos[4], now[24];
    switch (ev->change) {
    case SESSION_SUBSCRIBED: {
        key(sm, ev->client_id, "", skey);
        key(sm, ev->client_id, ":subs", subs);
        snprintf(nkey, sizeof(nkey), "%snode:%s:sessions", sm->cfg->prefix, sm->cfg->node_id);
        snprintf(qos, sizeof(qos), "%u", (unsigned)ev->qos);
        const char *hset[] = {"HSET", subs, ev->filter, qos};
        size_t lens[] = {4, strlen(subs), ev->filter_len, strlen(qos)};
        send_argv(sm, 4, hset, lens);
        const char *owner[] = {"HSET", skey, "node", sm->cfg->node_id, "life", sm->life};
        send_argv(sm, 6, owner, NULL);
        const char *sadd[] = {"SADD", nkey, ev->client_id};
        send_argv(sm, 3, sadd, NULL);
        return;
    }
    case SESSION_UNSUBSCRIBED: {
        key(sm, ev->client_id, ":subs", subs);
        const char *hdel[] = {"HDEL", subs, ev->filter};
        size_t lens[] = {4, strlen(subs), ev->filter_len};
        send_argv(sm, 3, hdel, lens);
        return;
    }
    case SESSION_ONLINE: {
        snprintf(now, sizeof(now), "%" PRIu64, clock_wall_ms());
        const char *argv[] = {sm->cfg->prefix, ev->client_id, sm->cfg->node_id, now,
                              sm->cfg->durable ? "1" : "0", sm->life};
        struct online_ctx *x = malloc(sizeof(*x) + strlen(ev->client_id) + 1);
        if (x) {
            x->sm = sm;
            strcpy(x->client_id, ev->client_id);
        }
        if (!x || redis_link_eval(sm->link, sm->script_online, on_online, x, 0, 6, argv, NULL) !=
                      RMQ_OK) {
            free(x);
            sm->redis_errors++;
        }
        return;
    }
    case SESSION_OFFLINE:
        write_offline(sm, ev->client_id);
        return;
    case SESSION_QUEUED:
        write_queued(sm, ev->client_id, ev->message, ev->qos, false);
        return;
    case SESSION_SETTLED:
        write_queued(sm, ev->client_id, ev->message, ev->qos, true);
        return;
    case SESSION_ENDED:
        forget_everywhere(sm, ev->client_id);
        return;
    }
}
