/* Shared subscriptions: "$share/{group}/{filter}" and "$queue/{filter}" (a
 * group of its own). The sessions subscribed with one such string form a
 * group; each message matching the group's filter goes to one member, in
 * turn. The group's key is the whole subscription string: it is what the
 * route table carries, so a cluster can pick one member node per message
 * (cluster/forwarder.c); standalone, broker_route picks here.
 *
 * Groups live in b->groups (key -> struct share_group) and in b->shared, a
 * topic tree of their filters whose subscribers are the groups. Loop
 * thread only. */
#include <stdlib.h>
#include <string.h>

#include "broker/broker_api.h"
#include "broker/broker_internal.h"
#include "broker/topic.h"
#include "broker/topic_tree.h"
#include "common/hashmap.h"

struct share_member {
    struct session *session;
    uint8_t qos;
};

struct share_group {
    char *key;
    size_t key_len;
    const char *filter; /* inside key */
    size_t filter_len;
    struct share_member *members;
    size_t count, cap, next;
    uint64_t gen;
};

#define SHARE_PREFIX "$share/"
#define QUEUE_PREFIX "$queue/"

bool
share_parse(const char *key, size_t len, const char **filter, size_t *filter_len)
{
    size_t sp = sizeof(SHARE_PREFIX) - 1, qp = sizeof(QUEUE_PREFIX) - 1;
    if (len > qp && memcmp(key, QUEUE_PREFIX, qp) == 0) {
        *filter = key + qp;
        *filter_len = len - qp;
        return true;
    }
    if (len <= sp || memcmp(key, SHARE_PREFIX, sp) != 0)
        return false;
    const char *group = key + sp;
    const char *slash = memchr(group, '/', len - sp);
    if (!slash || slash == group || memchr(group, '+', (size_t)(slash - group)) ||
        memchr(group, '#', (size_t)(slash - group)))
        return false;
    *filter = slash + 1;
    *filter_len = len - (size_t)(*filter - key);
    return *filter_len > 0;
}

static void
group_free(void *v)
{
    struct share_group *g = v;
    if (!g)
        return;
    free(g->members);
    free(g->key);
    free(g);
}

static struct share_group *
group_get(struct broker *b, const char *key, size_t len, bool create)
{
    if (!b->groups && (!create || !(b->groups = hashmap_new(group_free))))
        return NULL;
    if (!b->shared && (!create || !(b->shared = topic_tree_new())))
        return NULL;
    struct share_group *g = hashmap_get(b->groups, key, len);
    if (g || !create)
        return g;
    const char *filter;
    size_t flen;
    if (!share_parse(key, len, &filter, &flen) || !(g = calloc(1, sizeof(*g))))
        return NULL;
    if (!(g->key = malloc(len + 1))) {
        free(g);
        return NULL;
    }
    memcpy(g->key, key, len);
    g->key[len] = 0;
    g->key_len = len;
    g->filter = g->key + (filter - key);
    g->filter_len = flen;
    if (topic_tree_subscribe(b->shared, g->filter, flen, g, 0, NULL) != RMQ_OK) {
        group_free(g);
        return NULL;
    }
    if (hashmap_put(b->groups, g->key, len, g, NULL) != RMQ_OK) {
        topic_tree_unsubscribe(b->shared, g->filter, flen, g);
        group_free(g);
        return NULL;
    }
    return g;
}

enum rmq_status
share_subscribe(struct broker *b, const char *key, size_t len, struct session *s, uint8_t qos,
                bool *replaced)
{
    struct share_group *g = group_get(b, key, len, true);
    if (!g)
        return RMQ_NOMEM;
    for (size_t i = 0; i < g->count; i++) {
        if (g->members[i].session == s) {
            g->members[i].qos = qos;
            *replaced = true;
            return RMQ_OK;
        }
    }
    if (g->count == g->cap) {
        size_t cap = g->cap ? g->cap * 2 : 4;
        struct share_member *m = realloc(g->members, cap * sizeof(*m));
        if (!m)
            return RMQ_NOMEM;
        g->members = m;
        g->cap = cap;
    }
    g->members[g->count++] = (struct share_member){s, qos};
    *replaced = false;
    return RMQ_OK;
}

static bool deliver_one(struct broker *b, struct share_group *g, struct route *r);

/* A clean session leaving the group with QoS 1/2 messages of the group's
 * filter still unacknowledged or queued: they go to another member. */
static void
redispatch(struct broker *b, struct share_group *g, struct session *s)
{
    /* A copy of the list first: delivering may grow another member's queue,
     * never this one's (s is no longer a member). */
    size_t n = 0, cap = (size_t)s->inflight_count + s->queue_len;
    struct message **pending = cap ? malloc(cap * sizeof(*pending)) : NULL;
    if (!pending)
        return;
    for (uint16_t i = 0; i < s->inflight_count && n < cap; i++)
        if (s->inflight[i].msg)
            pending[n++] = s->inflight[i].msg;
    for (uint32_t i = 0; i < s->queue_len && n < cap; i++)
        pending[n++] = session_queued(s, i)->msg;
    for (size_t i = 0; i < n; i++) {
        struct message *msg = pending[i];
        if (!topic_matches(g->filter, g->filter_len, msg->topic, msg->topic_len))
            continue;
        struct route r = {.topic = msg->topic,
                          .topic_len = msg->topic_len,
                          .payload = msg->payload,
                          .payload_len = msg->payload_len,
                          .qos = msg->qos,
                          .msg = message_ref(msg)};
        if (deliver_one(b, g, &r))
            b->metrics.shared_redispatched++;
        message_unref(r.msg);
    }
    free(pending);
}

enum rmq_status
share_unsubscribe(struct broker *b, const char *key, size_t len, struct session *s)
{
    struct share_group *g = group_get(b, key, len, false);
    for (size_t i = 0; g && i < g->count; i++) {
        if (g->members[i].session != s)
            continue;
        g->members[i] = g->members[--g->count];
        if (g->count > 0 && s->freeing && s->clean && !s->leaving)
            redispatch(b, g, s);
        if (g->count == 0) {
            topic_tree_unsubscribe(b->shared, g->filter, g->filter_len, g);
            group_free(hashmap_remove(b->groups, key, len));
        }
        return RMQ_OK;
    }
    return RMQ_NOT_FOUND;
}

/* Delivers to the group's next member; false if it has none. */
static bool
deliver_one(struct broker *b, struct share_group *g, struct route *r)
{
    if (g->count == 0)
        return false;
    /* Prefer a connected member; an offline persistent one queues it. */
    size_t pick = g->next % g->count;
    for (size_t i = 0; i < g->count; i++) {
        size_t k = (g->next + i) % g->count;
        if (g->members[k].session->conn) {
            pick = k;
            break;
        }
    }
    g->next = pick + 1;
    struct share_member *m = &g->members[pick];
    uint8_t qos = r->qos < m->qos ? r->qos : m->qos;
    session_deliver(b, m->session, r, qos, false);
    b->metrics.shared_deliveries++;
    return true;
}

struct share_match {
    struct broker *b;
    struct route *r;
    void (*fn)(void *arg, const char *key, size_t len);
    void *arg;
};

static void
on_group_match(void *subscriber, uint8_t qos, void *arg)
{
    (void)qos;
    struct share_match *m = arg;
    struct share_group *g = subscriber;
    if (g->gen == m->b->match_gen)
        return;
    g->gen = m->b->match_gen;
    if (m->fn)
        m->fn(m->arg, g->key, g->key_len);
    else
        deliver_one(m->b, g, m->r);
}

void
share_route(struct broker *b, struct route *r)
{
    if (!b->shared || topic_tree_count(b->shared) == 0)
        return;
    struct share_match m = {b, r, NULL, NULL};
    topic_tree_match(b->shared, r->topic, r->topic_len, on_group_match, &m);
}

void
broker_api_match_groups(struct broker *b, const char *topic, size_t len,
                        void (*fn)(void *arg, const char *key, size_t key_len), void *arg)
{
    if (!b->shared || topic_tree_count(b->shared) == 0)
        return;
    b->match_gen++;
    struct share_match m = {b, NULL, fn, arg};
    topic_tree_match(b->shared, topic, len, on_group_match, &m);
}

enum rmq_status
broker_api_deliver_group(struct broker *b, const char *key, size_t key_len, const char *topic,
                         size_t topic_len, const void *payload, size_t payload_len, uint8_t qos,
                         bool retain)
{
    struct share_group *g = group_get(b, key, key_len, false);
    if (!g || topic_len > UINT16_MAX || payload_len > UINT32_MAX || qos > 2)
        return RMQ_NOT_FOUND;
    broker_refresh_clock(b);
    struct route r = {
        .topic = topic,
        .topic_len = (uint16_t)topic_len,
        .payload = payload,
        .payload_len = (uint32_t)payload_len,
        .qos = qos,
        .retain = retain,
    };
    bool ok = deliver_one(b, g, &r);
    message_unref(r.msg);
    return ok ? RMQ_OK : RMQ_NOT_FOUND;
}

void
share_free_all(struct broker *b)
{
    hashmap_free(b->groups);
    topic_tree_free(b->shared);
    b->groups = NULL;
    b->shared = NULL;
}

bool
broker_api_share_filter(const char *key, size_t len, const char **filter, size_t *filter_len)
{
    return share_parse(key, len, filter, filter_len);
}
