/* Persistent sessions as the cluster sees them: change notifications (so
 * the cluster can keep a copy in Redis), and the export, release and import
 * that move a session to the node its client reconnects to. A session
 * being moved is marked `leaving`: its departure is not reported as an
 * end. Loop thread only. */
#include <stdlib.h>
#include <string.h>

#include "broker/broker_api.h"
#include "broker/broker_internal.h"
#include "common/hashmap.h"
#include "common/log.h"

void
session_notify(struct broker *b, const struct session *s, enum broker_session_change change,
               const char *filter, size_t filter_len, uint8_t qos, const struct message *msg)
{
    if (s->clean || s->leaving || b->observer_count == 0)
        return;
    struct broker_message m;
    if (msg)
        m = (struct broker_message){.topic = msg->topic,
                                    .topic_len = msg->topic_len,
                                    .payload = msg->payload,
                                    .payload_len = msg->payload_len,
                                    .qos = msg->qos,
                                    .retain = msg->retain};
    struct broker_session_event ev = {
        .change = change,
        .client_id = s->client_id,
        .filter = filter,
        .filter_len = filter_len,
        .qos = qos,
        .message = msg ? &m : NULL,
    };
    for (size_t i = 0; i < b->observer_count; i++) {
        const struct broker_observer *o = b->observers[i];
        if (o->session)
            o->session(o->ctx, &ev);
    }
}

static struct session *
persistent(struct broker *b, const char *client_id)
{
    struct session *s = hashmap_get(b->sessions, client_id, strlen(client_id));
    return s && !s->clean ? s : NULL;
}

bool
broker_api_has_persistent_session(struct broker *b, const char *client_id)
{
    return persistent(b, client_id) != NULL;
}

static void
walk_message(void (*fn)(void *, const struct broker_message *), void *arg,
             const struct message *msg, uint8_t qos, bool retain)
{
    struct broker_message m = {.topic = msg->topic,
                               .topic_len = msg->topic_len,
                               .payload = msg->payload,
                               .payload_len = msg->payload_len,
                               .qos = qos,
                               .retain = retain};
    fn(arg, &m);
}

enum rmq_status
broker_api_session_walk(struct broker *b, const char *client_id,
                        void (*fn_sub)(void *arg, const char *filter, size_t len, uint8_t qos),
                        void (*fn_msg)(void *arg, const struct broker_message *m), void *arg)
{
    struct session *s = persistent(b, client_id);
    if (!s)
        return RMQ_NOT_FOUND;
    for (uint32_t i = 0; fn_sub && i < s->sub_count; i++)
        fn_sub(arg, s->subs[i].filter, s->subs[i].len, s->subs[i].qos);
    if (!fn_msg)
        return RMQ_OK;
    /* A QoS 2 message whose PUBREC came is delivered: only its id is left. */
    for (uint16_t i = 0; i < s->inflight_count; i++)
        if (s->inflight[i].msg)
            walk_message(fn_msg, arg, s->inflight[i].msg, s->inflight[i].qos,
                         s->inflight[i].retain);
    for (const struct queued *q = s->queue_head; q; q = q->next)
        walk_message(fn_msg, arg, q->msg, q->qos, q->retain);
    return RMQ_OK;
}

/* Frees a session without reporting its end; closes its connection first. */
static void
let_go(struct broker *b, struct session *s)
{
    s->leaving = true;
    if (s->conn) {
        b->metrics.takeovers++;
        conn_close(s->conn, CLOSE_TAKEOVER); /* a persistent session survives this */
    }
    hashmap_remove(b->sessions, s->client_id, s->client_id_len);
    session_free(b, s);
}

enum rmq_status
broker_api_session_release(struct broker *b, const char *client_id)
{
    struct session *s = persistent(b, client_id);
    if (!s)
        return RMQ_NOT_FOUND;
    log_info("client %s: session handed to another node", client_id);
    let_go(b, s);
    return RMQ_OK;
}

enum rmq_status
broker_api_session_import(struct broker *b, const char *client_id, const char *const *filters,
                          const size_t *filter_lens, const uint8_t *qos, size_t sub_count,
                          const struct broker_message *msgs, size_t msg_count)
{
    size_t len = strlen(client_id);
    struct session *old = hashmap_get(b->sessions, client_id, len);
    if (old)
        let_go(b, old);
    struct session *s = session_new(client_id, len, false);
    if (!s || hashmap_put(b->sessions, s->client_id, s->client_id_len, s, NULL) != RMQ_OK) {
        session_free(b, s);
        return RMQ_NOMEM;
    }
    broker_refresh_clock(b);
    s->leaving = true; /* what it brings is already kept where it came from */
    for (size_t i = 0; i < sub_count; i++) {
        if (filter_lens[i] > UINT16_MAX || qos[i] > 2)
            continue;
        bool replaced = false;
        if (broker_subscribe(b, filters[i], filter_lens[i], s, qos[i], &replaced) != RMQ_OK)
            continue;
        if (session_add_sub(s, filters[i], (uint16_t)filter_lens[i], qos[i], !replaced) !=
                RMQ_OK &&
            !replaced)
            broker_unsubscribe(b, filters[i], filter_lens[i], s);
    }
    for (size_t i = 0; i < msg_count; i++) {
        const struct broker_message *m = &msgs[i];
        if (m->qos == 0 || m->topic_len > UINT16_MAX || m->payload_len > UINT32_MAX)
            continue;
        struct route r = {
            .topic = m->topic,
            .topic_len = (uint16_t)m->topic_len,
            .payload = m->payload,
            .payload_len = (uint32_t)m->payload_len,
            .qos = m->qos,
            .retain = m->retain,
        };
        session_deliver(b, s, &r, m->qos, m->retain);
        message_unref(r.msg);
    }
    s->leaving = false;
    log_info("client %s: session taken over from another node (%zu subscriptions, %zu messages)",
             client_id, sub_count, msg_count);
    return RMQ_OK;
}
