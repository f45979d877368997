/* Persistent sessions as the cluster sees them: change notifications (so
 * the cluster can keep a copy in Redis), and the export, release and import
 * that move a session to the node its client reconnects to. A session
 * being moved is marked `leaving`: its departure is not reported as an
 * end. Loop thread only. */
#include <stddef.h>
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

size_t
broker_api_session_count(struct broker *b)
{
    return hashmap_count(b->sessions);
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
    for (uint32_t i = 0; i < s->queue_len; i++) {
        const struct queued *q = session_queued(s, i);
        walk_message(fn_msg, arg, q->msg, q->qos, q->retain);
    }
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

#define GHOST_ROUTES_MS 100 /* a ghost keeps its filters in the route table this long */

static void
ghost_unlink(struct broker *b, struct session *s)
{
    struct session **pp = &b->ghosts;
    while (*pp && *pp != s)
        pp = &(*pp)->ghost->next;
    if (*pp)
        *pp = s->ghost->next;
}

static void
on_ghost_expired(struct timer_entry *e, uint64_t now)
{
    (void)now;
    struct session_ghost *g =
        (struct session_ghost *)((char *)e - offsetof(struct session_ghost, timer));
    struct broker *b = g->broker;
    ghost_unlink(b, g->session);
    session_free(b, g->session); /* its filters go: the route table forgets them here */
}

void
session_ghost_release_routes(struct broker *b, struct session *s)
{
    struct session_ghost *g = s->ghost;
    if (!g || g->routes_released)
        return;
    g->routes_released = true;
    timer_entry_cancel(&g->routes_timer);
    for (uint32_t i = 0; i < s->sub_count; i++)
        broker_filter_release(b, s->subs[i].filter, s->subs[i].len);
}

static void
on_ghost_routes(struct timer_entry *e, uint64_t now)
{
    (void)now;
    struct session_ghost *g =
        (struct session_ghost *)((char *)e - offsetof(struct session_ghost, routes_timer));
    session_ghost_release_routes(g->broker, g->session);
}

/* Keeps s's subscriptions here as a ghost pointing at to_addr. */
static bool
make_ghost(struct broker *b, struct session *s, const char *to_addr, uint64_t ghost_ms)
{
    struct session_ghost *g = calloc(1, sizeof(*g));
    if (!g || !(g->addr = strdup(to_addr))) {
        free(g);
        return false;
    }
    g->session = s;
    g->broker = b;
    s->ghost = g;
    g->next = b->ghosts;
    b->ghosts = s;
    timer_entry_init(&g->timer, on_ghost_expired);
    timer_wheel_schedule(b->wheel, &g->timer, broker_now(b) + ghost_ms);
    /* Other nodes stop sending these filters here (unless another session
     * holds them) a moment later, once the session's new node has had time
     * to announce them: released at once, a message published meanwhile
     * would be sent to neither node. What they send here is redirected (a
     * message sent to both nodes in that moment arrives twice). */
    timer_entry_init(&g->routes_timer, on_ghost_routes);
    timer_wheel_schedule(b->wheel, &g->routes_timer,
                         broker_now(b) + (ghost_ms < GHOST_ROUTES_MS ? ghost_ms : GHOST_ROUTES_MS));
    return true;
}

void
session_free_ghosts(struct broker *b)
{
    while (b->ghosts) {
        struct session *s = b->ghosts;
        b->ghosts = s->ghost->next;
        session_free(b, s);
    }
}

size_t
broker_api_ghost_count(struct broker *b)
{
    size_t n = 0;
    for (const struct session *s = b->ghosts; s; s = s->ghost->next)
        n++;
    return n;
}

enum rmq_status
broker_api_session_release(struct broker *b, const char *client_id, const char *to_addr,
                           uint64_t ghost_ms)
{
    struct session *s = persistent(b, client_id);
    if (!s)
        return RMQ_NOT_FOUND;
    log_info("client %s: session handed to another node", client_id);
    if (!to_addr || !ghost_ms || !b->redirect) {
        let_go(b, s);
        return RMQ_OK;
    }
    s->leaving = true;
    if (s->conn) {
        b->metrics.takeovers++;
        conn_close(s->conn, CLOSE_TAKEOVER);
    }
    hashmap_remove(b->sessions, s->client_id, s->client_id_len);
    broker_refresh_clock(b);
    if (!make_ghost(b, s, to_addr, ghost_ms))
        session_free(b, s);
    return RMQ_OK;
}

void
session_redirect(struct broker *b, struct session *s, const struct route *r, uint8_t qos,
                 bool retain)
{
    struct broker_message m = {.topic = r->topic,
                               .topic_len = r->topic_len,
                               .payload = r->payload,
                               .payload_len = r->payload_len,
                               .qos = qos,
                               .retain = retain};
    if (b->redirect)
        b->redirect(b->forward_ctx, s->ghost->addr, s->client_id, &m);
}

void
broker_api_set_redirect(struct broker *b,
                        void (*fn)(void *ctx, const char *addr, const char *client_id,
                                   const struct broker_message *m))
{
    b->redirect = fn;
}

#define STASH_MS 3000   /* a hand-over arrives well within this */
#define STASH_MAX 10000 /* messages held for sessions still on their way */

static void
stash_drop_expired(struct broker *b)
{
    struct stashed **pp = &b->stash;
    while (*pp) {
        struct stashed *e = *pp;
        if (e->expires_ms <= broker_now(b)) {
            *pp = e->next;
            message_unref(e->msg);
            free(e);
            b->stash_count--;
            b->metrics.messages_dropped++;
        } else {
            pp = &e->next;
        }
    }
}

static enum rmq_status
stash(struct broker *b, const char *client_id, const struct route *r, uint8_t qos)
{
    stash_drop_expired(b);
    size_t n = strlen(client_id) + 1;
    struct stashed *e = b->stash_count < STASH_MAX ? malloc(sizeof(*e) + n) : NULL;
    struct message *msg = e ? message_new(r->topic, r->topic_len, r->payload, r->payload_len,
                                          r->qos, false, broker_now(b))
                            : NULL;
    if (!msg) {
        free(e);
        b->metrics.messages_dropped++;
        return RMQ_NOMEM;
    }
    e->msg = msg;
    e->qos = qos;
    e->expires_ms = broker_now(b) + STASH_MS;
    memcpy(e->client_id, client_id, n);
    /* Appended at the tail: they go out in the order they came. */
    struct stashed **pp = &b->stash;
    while (*pp)
        pp = &(*pp)->next;
    e->next = NULL;
    *pp = e;
    b->stash_count++;
    return RMQ_OK;
}

/* The session just arrived: what was redirected to it meanwhile goes in. */
static void
unstash(struct broker *b, struct session *s)
{
    struct stashed **pp = &b->stash;
    while (*pp) {
        struct stashed *e = *pp;
        if (strcmp(e->client_id, s->client_id) != 0) {
            pp = &e->next;
            continue;
        }
        *pp = e->next;
        b->stash_count--;
        struct route r = {.topic = e->msg->topic,
                          .topic_len = e->msg->topic_len,
                          .payload = e->msg->payload,
                          .payload_len = e->msg->payload_len,
                          .qos = e->msg->qos,
                          .msg = e->msg};
        session_deliver(b, s, &r, e->qos, false);
        message_unref(e->msg);
        free(e);
    }
}

void
session_free_stash(struct broker *b)
{
    while (b->stash) {
        struct stashed *e = b->stash;
        b->stash = e->next;
        message_unref(e->msg);
        free(e);
    }
    b->stash_count = 0;
}

enum rmq_status
broker_api_deliver_session(struct broker *b, const char *client_id, const char *topic,
                           size_t topic_len, const void *payload, size_t payload_len,
                           uint8_t qos, bool retain)
{
    if (qos > 2 || topic_len > UINT16_MAX || payload_len > UINT32_MAX)
        return RMQ_NOT_FOUND;
    broker_refresh_clock(b);
    struct session *s = hashmap_get(b->sessions, client_id, strlen(client_id));
    if (!s) {
        struct route early = {.topic = topic,
                              .topic_len = (uint16_t)topic_len,
                              .payload = payload,
                              .payload_len = (uint32_t)payload_len,
                              .qos = qos};
        return qos > 0 ? stash(b, client_id, &early, qos) : RMQ_NOT_FOUND;
    }
    struct route r = {
        .topic = topic,
        .topic_len = (uint16_t)topic_len,
        .payload = payload,
        .payload_len = (uint32_t)payload_len,
        .qos = qos,
        .retain = retain,
    };
    session_deliver(b, s, &r, qos, retain);
    message_unref(r.msg);
    b->metrics.messages_from_peers++;
    return RMQ_OK;
}

#define ORIGIN_MS 60000 /* rescues come within seconds of a node's death */

enum rmq_status
broker_api_session_set_origin(struct broker *b, const char *client_id, const char *node,
                              uint64_t since_ms)
{
    struct session *s = persistent(b, client_id);
    if (!s)
        return RMQ_NOT_FOUND;
    size_t n = strlen(node) + 1;
    struct session_origin *o = malloc(sizeof(*o) + n);
    if (!o)
        return RMQ_NOMEM;
    broker_refresh_clock(b);
    o->until_ms = broker_now(b) + ORIGIN_MS;
    o->since_ms = since_ms;
    memcpy(o->node, node, n);
    free(s->origin);
    s->origin = o;
    return RMQ_OK;
}

size_t
broker_api_route_rescued(struct broker *b, const char *node, uint64_t routed_ms,
                         const char *topic, size_t topic_len, const void *payload,
                         size_t payload_len, uint8_t qos, bool retain)
{
    if (qos > 2 || topic_len == 0 || topic_len > UINT16_MAX || payload_len > UINT32_MAX)
        return 0;
    broker_refresh_clock(b);
    struct route r = {
        .topic = topic,
        .topic_len = (uint16_t)topic_len,
        .payload = payload,
        .payload_len = (uint32_t)payload_len,
        .qos = qos,
        .retain = retain,
    };
    size_t reached = 0;
    broker_match(b, r.topic, r.topic_len);
    for (size_t i = 0; i < b->matched_count; i++) {
        struct session *s = b->matched[i];
        const struct session_origin *o = s->origin;
        if (!o || strcmp(o->node, node) != 0 || broker_now(b) >= o->until_ms || s->ghost)
            continue; /* not one of the dead node's sessions (it had its copy), or a ghost:
                         its new node is sent the rescue too */
        if (routed_ms > o->since_ms + BROKER_RESCUE_MARGIN_MS)
            continue; /* routed after the session was restored: it had it */
        session_deliver(b, s, &r, qos < s->match_qos ? qos : s->match_qos, false);
        reached++;
    }
    message_unref(r.msg);
    b->metrics.messages_from_peers++;
    return reached;
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
    unstash(b, s);
    log_info("client %s: session taken over from another node (%zu subscriptions, %zu messages)",
             client_id, sub_count, msg_count);
    return RMQ_OK;
}
