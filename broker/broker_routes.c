/* The broker's subscriptions as the cluster sees them: how many sessions
 * hold each filter (so the route table hears of a filter once, when it
 * appears and when it goes), and the hand-over of routed messages to the
 * forwarder. Loop thread only. */
#include <stdint.h>
#include <string.h>

#include "broker/broker_internal.h"
#include "broker/topic_tree.h"
#include "common/hashmap.h"
#include "common/log.h"

static void
tell(struct broker *b, const char *filter, size_t len, bool present)
{
    for (size_t i = 0; i < b->observer_count; i++) {
        const struct broker_observer *o = b->observers[i];
        if (o->filter_changed)
            o->filter_changed(o->ctx, filter, len, present);
    }
}

enum rmq_status
broker_subscribe(struct broker *b, const char *filter, size_t len, void *s, uint8_t qos,
                 bool *replaced)
{
    bool was = false;
    const char *inner;
    size_t inner_len;
    bool shared = share_parse(filter, len, &inner, &inner_len);
    if (!b->filter_refs && !(b->filter_refs = hashmap_new(NULL)))
        return RMQ_NOMEM;
    enum rmq_status st = shared ? share_subscribe(b, filter, len, s, qos, &was)
                                : topic_tree_subscribe(b->subs, filter, len, s, qos, &was);
    if (replaced)
        *replaced = was;
    if (st != RMQ_OK || was)
        return st;
    uintptr_t n = (uintptr_t)hashmap_get(b->filter_refs, filter, len);
    if (hashmap_put(b->filter_refs, filter, len, (void *)(n + 1), NULL) != RMQ_OK) {
        if (shared)
            share_unsubscribe(b, filter, len, s);
        else
            topic_tree_unsubscribe(b->subs, filter, len, s);
        return RMQ_NOMEM;
    }
    if (n == 0)
        tell(b, filter, len, true);
    return RMQ_OK;
}

enum rmq_status
broker_unsubscribe(struct broker *b, const char *filter, size_t len, void *s)
{
    const char *inner;
    size_t inner_len;
    enum rmq_status st = share_parse(filter, len, &inner, &inner_len)
                             ? share_unsubscribe(b, filter, len, s)
                             : topic_tree_unsubscribe(b->subs, filter, len, s);
    if (st != RMQ_OK)
        return st;
    broker_filter_release(b, filter, len);
    return RMQ_OK;
}

void
broker_filter_release(struct broker *b, const char *filter, size_t len)
{
    if (!b->filter_refs)
        return;
    uintptr_t n = (uintptr_t)hashmap_get(b->filter_refs, filter, len);
    if (n > 1) {
        hashmap_put(b->filter_refs, filter, len, (void *)(n - 1), NULL); /* in place: no allocation */
    } else if (n == 1) {
        hashmap_remove(b->filter_refs, filter, len);
        tell(b, filter, len, false);
    }
}

void
broker_foreach_filter(struct broker *b, void (*fn)(void *arg, const char *filter, size_t len),
                      void *arg)
{
    size_t pos = 0;
    const void *key;
    size_t len;
    void *v;
    while (b->filter_refs && hashmap_next(b->filter_refs, &pos, &key, &len, &v))
        fn(arg, key, len);
}

void
broker_set_forwarder(struct broker *b, void (*fn)(void *ctx, const struct broker_message *m),
                     void *ctx)
{
    b->forward = fn;
    b->forward_ctx = ctx;
}

void
broker_forward(struct broker *b, const struct route *r)
{
    struct broker_message m = {
        .topic = r->topic,
        .topic_len = r->topic_len,
        .payload = r->payload,
        .payload_len = r->payload_len,
        .qos = r->qos,
        .retain = r->retain,
    };
    b->forward(b->forward_ctx, &m);
}

void
broker_forward_pause(struct broker *b)
{
    struct conn *c = b->publisher;
    if (!c || c->forward_paused)
        return;
    c->forward_paused = true;
    b->forward_paused++;
    b->metrics.forward_pauses++;
    conn_pause_input(c);
}

void
broker_forward_resume(struct broker *b)
{
    if (!b->forward_paused)
        return;
    b->forward_paused = 0;
    for (struct conn *c = b->conns; c; c = c->next) {
        if (!c->forward_paused)
            continue;
        c->forward_paused = false;
        if (c->state != CONN_CLAIMING && !c->rate_paused) /* the rate timer resumes it */
            conn_resume_input(c);
    }
}
