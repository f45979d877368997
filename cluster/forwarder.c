/* Node-to-node forwarding; see forwarder.h.
 *
 * Each peer has a struct link: a byte buffer of encoded frames
 * (cluster/forward_codec.h) from `head` to `len`, written to a stream to
 * the peer (forward_send.c) up to `sent`. Frames are appended as messages
 * are routed; one flush per loop iteration (an event made active by the
 * first append) writes to every peer's stream. Only the peer's
 * acknowledgement moves `head`; a broken stream is made again after a
 * pause and written again from `head`. Links live until the forwarder is
 * freed (an idle link holds no buffer).
 *
 * Receiving is in forward_stream.c and forward_receive.c; rescuing what a
 * node that left did not take (durable sessions) in forward_rescue.c; the
 * state they share in forwarder_internal.h. Loop thread only. */
#include "cluster/forwarder.h"

#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

#include "broker/broker.h"
#include "broker/broker_api.h"
#include "cluster/cluster.h"
#include "cluster/forward_codec.h"
#include "cluster/forwarder_internal.h"
#include "cluster/redis_link.h"
#include "cluster/routes.h"
#include "common/clock.h"
#include "common/hashmap.h"
#include "common/log.h"
#include "http/http_server.h"
#include "http/metrics.h"
#include "http/peer_client.h"

#define MAX_TRIES 5
#define HIGH_WATER_DIV 32 /* pause publishers above max_buffer / 32 (2 of 64 MiB) for a peer */
#define LOW_WATER_DIV 64  /* resume when no peer has more than max_buffer / 64 (1 of 64 MiB) */
#define RETRY_MS 100
#define MARK_MS 10 /* resolution of a rescued message's routed-at time */
#define DOWN_RETRY_MS 500 /* durable: a peer that is down is tried this often */
#define DRAIN_TICK_MS 10
#define RETAINED_SCAN 500
#define FORWARD_PATH "/internal/v1/forward"
#define SYS_LOCAL "$SYS/broker/" /* not "$SYS/brokers/": cluster events do travel */
#define SYS_LOCAL_LEN (sizeof(SYS_LOCAL) - 1)

/* ---- links ---- */

static void
link_free(void *v)
{
    struct link *l = v;
    if (!l)
        return;
    link_disconnect(l);
    if (l->retry)
        event_free(l->retry);
    free(l->buf);
    free(l->marks);
    free(l->addr);
    free(l);
}

static void on_retry(evutil_socket_t fd, short what, void *arg);

static struct link *
link_get(struct forwarder *f, const char *node, const char *addr)
{
    /* Messages come in runs for one node: skip the hash look-up then. */
    if (f->last && strcmp(f->last->node, node) == 0 && strcmp(f->last->addr, addr) == 0)
        return f->last;
    size_t n = strlen(node);
    struct link *l = hashmap_get(f->links, node, n);
    if (l) {
        if (strcmp(l->addr, addr) != 0) { /* the node restarted elsewhere */
            char *copy = strdup(addr);
            if (copy) {
                free(l->addr);
                l->addr = copy;
                link_disconnect(l);
            }
        }
        return f->last = l;
    }
    if (!(l = calloc(1, sizeof(*l) + n + 1)))
        return NULL;
    memcpy(l->node, node, n + 1);
    l->f = f;
    l->fd = -1;
    if (RAND_bytes((unsigned char *)&l->id, sizeof(l->id)) != 1)
        l->id = clock_wall_ms() ^ (uintptr_t)l;
    l->by_addr = strcmp(node, addr) == 0;
    l->addr = strdup(addr);
    l->retry = evtimer_new(f->base, on_retry, l);
    if (!l->addr || !l->retry || hashmap_put(f->links, l->node, n, l, NULL) != RMQ_OK) {
        link_free(l);
        return NULL;
    }
    return f->last = l;
}

/* The buffer's bytes before head are gone: marks move with the rest; the
 * last mark at or before head stays (it dates the frame at head). */
void
marks_forget(struct link *l, size_t head, size_t shift)
{
    size_t drop = 0;
    if (!l->mark_count)
        return; /* none kept (not durable) */
    while (drop + 1 < l->mark_count && l->marks[drop + 1].off <= head)
        drop++;
    l->mark_count -= drop;
    memmove(l->marks, l->marks + drop, l->mark_count * sizeof(*l->marks));
    for (size_t i = 0; i < l->mark_count; i++)
        l->marks[i].off = l->marks[i].off > shift ? l->marks[i].off - shift : 0;
}

static void
mark_now(struct link *l)
{
    uint64_t now = clock_wall_ms();
    if (l->mark_count && now - l->marks[l->mark_count - 1].ms < MARK_MS)
        return;
    if (l->mark_count == l->mark_cap) {
        size_t cap = l->mark_cap ? l->mark_cap * 2 : 16;
        struct mark *m = realloc(l->marks, cap * sizeof(*m));
        if (!m)
            return; /* coarser times: the previous mark dates these frames */
        l->marks = m;
        l->mark_cap = cap;
    }
    l->marks[l->mark_count++] = (struct mark){l->len, now};
}

static bool
reserve(struct link *l, size_t more)
{
    if (l->head > 0 && l->head == l->len) {
        l->head = l->sent = l->len = 0; /* everything taken: start over */
        l->mark_count = 0;
    } else if (l->head > l->cap / 2) {
        memmove(l->buf, l->buf + l->head, l->len - l->head);
        marks_forget(l, l->head, l->head);
        l->len -= l->head;
        l->sent -= l->head;
        l->head = 0;
    }
    if (l->len + more <= l->cap)
        return true;
    size_t cap = l->cap ? l->cap : 16384;
    while (cap < l->len + more)
        cap *= 2;
    uint8_t *grown = realloc(l->buf, cap);
    if (!grown)
        return false;
    l->buf = grown;
    l->cap = cap;
    return true;
}

void
schedule_flush(struct forwarder *f)
{
    if (!f->flush_pending) {
        f->flush_pending = true;
        event_active(f->flush_ev, 0, 0);
    }
}

/* routes_node_fn: appends the current frame to node's link. */
void
append_to(void *arg, const char *node, const char *addr)
{
    struct forwarder *f = arg;
    const struct forward_frame *fr = f->frame;
    size_t size = forward_frame_size_of(fr);
    struct link *l = link_get(f, node, addr);
    if (!l || l->len - l->head + size > f->cfg->max_buffer || !reserve(l, size)) {
        f->dropped_full++;
        return;
    }
    if (f->cfg->durable && !l->by_addr)
        mark_now(l);
    forward_frame_write(l->buf + l->len, fr);
    l->len += size;
    l->frames++;
    f->appended = true;
    if (!l->down && l->len - l->head > f->cfg->max_buffer / HIGH_WATER_DIV) {
        /* Back-pressure: this publisher waits until the peer catches up. */
        broker_forward_pause(f->broker);
        f->paused = true;
    }
}

/* Resumes paused publishers once every peer's backlog is low again. */
void
maybe_resume(struct forwarder *f)
{
    if (!f->paused)
        return;
    size_t pos = 0;
    const void *key;
    size_t len;
    void *v;
    while (hashmap_next(f->links, &pos, &key, &len, &v)) {
        const struct link *l = v;
        if (!l->down && l->len - l->head > f->cfg->max_buffer / LOW_WATER_DIV)
            return;
    }
    f->paused = false;
    broker_forward_resume(f->broker);
}

/* ---- acknowledgements and failures ---- */

/* Forgets the first bytes of the link's buffer (taken, or dropped): n
 * bytes holding frames frames. */
static void
link_forget(struct link *l, size_t n, size_t frames)
{
    l->head += n;
    l->seq_head += n;
    if (l->sent < l->head)
        l->sent = l->head;
    l->frames -= frames;
    if (l->mark_count > 1)
        marks_forget(l, l->head, 0);
}

static void
link_settled(struct forwarder *f)
{
    maybe_resume(f);
}

void
link_acked(struct link *l, uint64_t seq)
{
    struct forwarder *f = l->f;
    if (seq < l->seq_head || seq - l->seq_head > l->sent - l->head) {
        link_failed(l, "acknowledgement out of range");
        return;
    }
    size_t n = (size_t)(seq - l->seq_head), at = l->head, frames = 0;
    while (at < l->head + n) {
        at += forward_frame_len(l->buf + at);
        frames++;
    }
    if (at != l->head + n) {
        link_failed(l, "acknowledgement inside a frame");
        return;
    }
    l->since_ms = clock_monotonic_ms(); /* alive, even if paused (n == 0) */
    if (n == 0)
        return;
    if (l->down)
        log_info("forward to node %s (%s): answering again", l->node, l->addr);
    l->down = false;
    l->tries = 0;
    f->sent_msgs += frames;
    f->sent_bytes += n;
    f->batches++;
    link_forget(l, n, frames);
    link_settled(f);
}

void
link_failed(struct link *l, const char *why)
{
    struct forwarder *f = l->f;
    link_disconnect(l);
    evtimer_del(l->retry);
    if (++l->tries < MAX_TRIES) {
        f->retries++;
        struct timeval tv = {0, (suseconds_t)(RETRY_MS * l->tries) * 1000};
        evtimer_add(l->retry, &tv);
        return;
    }
    if (f->cfg->durable && !l->by_addr) {
        /* Durable: nothing is dropped for a node that does not answer. It
         * is retried until it answers or leaves (then its messages are
         * rescued); meanwhile it no longer holds publishers back. */
        if (!l->down)
            log_warn("forward to node %s (%s): not answering (%s); keeping its messages until "
                     "it answers or leaves",
                     l->node, l->addr, why);
        l->down = true;
        f->retries++;
        maybe_resume(f);
        struct timeval tv = {0, DOWN_RETRY_MS * 1000};
        evtimer_add(l->retry, &tv);
        return;
    }
    if (l->frames)
        log_warn("forward to node %s (%s): %zu message(s) dropped after %d tries (%s)", l->node,
                 l->addr, l->frames, l->tries, why);
    f->dropped_failed += l->frames;
    link_forget(l, l->len - l->head, l->frames);
    l->tries = 0;
    link_settled(f);
}

static void
on_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    link_send(arg);
}

static void
on_flush(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct forwarder *f = arg;
    f->flush_pending = false;
    size_t pos = 0;
    const void *key;
    size_t len;
    void *v;
    while (hashmap_next(f->links, &pos, &key, &len, &v))
        link_send(v);
}

/* ---- retained messages in Redis ---- */

static void
on_redis_written(struct redisReply *reply, void *arg)
{
    struct forwarder *f = arg;
    if (f && (!reply || reply->type == REDIS_REPLY_ERROR))
        f->retained_errors++;
}

static void
save_retained(struct forwarder *f, const struct forward_frame *fr)
{
    if (fr->payload_len == 0) {
        const char *argv[] = {"HDEL", f->key_retained, fr->topic};
        size_t lens[] = {4, strlen(f->key_retained), fr->topic_len};
        if (redis_link_argv(f->link, on_redis_written, f, 3, argv, lens) != RMQ_OK)
            f->retained_errors++;
        return;
    }
    uint8_t *value = malloc(fr->payload_len + 1);
    if (!value) {
        f->retained_errors++;
        return;
    }
    value[0] = (uint8_t)('0' + fr->qos);
    memcpy(value + 1, fr->payload, fr->payload_len);
    const char *argv[] = {"HSET", f->key_retained, fr->topic, (const char *)value};
    size_t lens[] = {4, strlen(f->key_retained), fr->topic_len, fr->payload_len + 1};
    if (redis_link_argv(f->link, on_redis_written, f, 4, argv, lens) != RMQ_OK)
        f->retained_errors++;
    free(value);
}

static void load_retained(struct forwarder *f, const char *cursor);

static void
on_retained_page(struct redisReply *reply, void *arg)
{
    struct forwarder *f = arg;
    if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
        reply->element[1]->type != REDIS_REPLY_ARRAY) {
        if (reply)
            f->retained_errors++;
        return;
    }
    const redisReply *kv = reply->element[1];
    for (size_t i = 0; i + 1 < kv->elements; i += 2) {
        const redisReply *k = kv->element[i], *v = kv->element[i + 1];
        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING || v->len < 2 ||
            v->str[0] < '0' || v->str[0] > '2')
            continue;
        if (broker_api_retain_load(f->broker, k->str, k->len, v->str + 1, v->len - 1,
                                   (uint8_t)(v->str[0] - '0')) == RMQ_OK)
            f->retained_loaded++;
    }
    const char *next = reply->element[0]->str;
    if (next && strcmp(next, "0") != 0)
        load_retained(f, next);
}

static void
load_retained(struct forwarder *f, const char *cursor)
{
    const char *argv[] = {"HSCAN", f->key_retained, cursor, "COUNT", "500"};
    redis_link_argv(f->link, on_retained_page, f, 5, argv, NULL);
}

static void
on_redis_up(void *ctx)
{
    load_retained(ctx, "0");
}

/* ---- shared subscriptions: one member node per message and group ---- */

struct share_cand {
    const char *key;
    size_t key_len;
    const char *node, *addr; /* NULL: this node */
};

struct share_cands {
    struct share_cand *items;
    size_t count, cap;
    bool failed;
};

static void
cand_add(struct share_cands *c, const char *key, size_t key_len, const char *node,
         const char *addr)
{
    if (c->count == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 8;
        struct share_cand *n = realloc(c->items, cap * sizeof(*n));
        if (!n) {
            c->failed = true;
            return;
        }
        c->items = n;
        c->cap = cap;
    }
    c->items[c->count++] = (struct share_cand){key, key_len, node, addr};
}

static void
on_local_group(void *arg, const char *key, size_t key_len)
{
    cand_add(arg, key, key_len, NULL, NULL);
}

static void
on_remote_group(void *arg, const char *key, size_t key_len, const char *node, const char *addr)
{
    cand_add(arg, key, key_len, node, addr);
}

/* For every group the message matches, here or on other nodes, one member
 * node in turn: this node delivers to one local member, another node gets a
 * frame aimed at the group and does the same. */
void
forward_shared(struct forwarder *f, const struct broker_message *m, const char *only_key,
               size_t only_len)
{
    struct share_cands c = {0};
    broker_api_match_groups(f->broker, m->topic, m->topic_len, on_local_group, &c);
    if (f->routes)
        routes_match_shared(f->routes, m->topic, m->topic_len, on_remote_group, &c);
    for (size_t i = 0; !c.failed && i < c.count; i++) {
        if (!c.items[i].key)
            continue; /* a group already served */
        const char *key = c.items[i].key;
        size_t len = c.items[i].key_len, n = 0;
        if (only_key && (len != only_len || memcmp(key, only_key, len) != 0))
            continue; /* a rescue for one group: the others had their copy */
        for (size_t j = i; j < c.count; j++)
            n += c.items[j].key && c.items[j].key_len == len && memcmp(c.items[j].key, key, len) == 0;
        uintptr_t turn = (uintptr_t)hashmap_get(f->share_turns, key, len);
        hashmap_put(f->share_turns, key, len, (void *)(turn + 1), NULL);
        size_t pick = turn % n, seen = 0;
        for (size_t j = i; j < c.count; j++) {
            struct share_cand *e = &c.items[j];
            if (!e->key || e->key_len != len || memcmp(e->key, key, len) != 0)
                continue;
            if (seen++ == pick) {
                if (!e->node) {
                    broker_api_deliver_group(f->broker, key, len, m->topic, m->topic_len,
                                             m->payload, m->payload_len, m->qos, false);
                } else {
                    struct forward_frame fr = {.topic = m->topic,
                                               .topic_len = m->topic_len,
                                               .payload = m->payload,
                                               .payload_len = m->payload_len,
                                               .qos = m->qos,
                                               .target = key,
                                               .target_len = len,
                                               .group = true};
                    f->frame = &fr;
                    append_to(f, e->node, e->addr);
                    f->frame = NULL;
                    f->shared_out++;
                }
            }
            if (j != i)
                e->key = NULL;
        }
    }
    free(c.items);
}

/* ---- the broker's hook ---- */

static void
on_forward(void *ctx, const struct broker_message *m)
{
    struct forwarder *f = ctx;
    /* Each node's own statistics stay on that node; after forwarder_leave
     * nothing more goes out. */
    if (!f->routes ||
        (m->topic_len >= SYS_LOCAL_LEN && memcmp(m->topic, SYS_LOCAL, SYS_LOCAL_LEN) == 0))
        return;
    struct forward_frame fr = {
        .topic = m->topic,
        .topic_len = m->topic_len,
        .payload = m->payload,
        .payload_len = m->payload_len,
        .qos = m->qos,
        .retain = m->retain,
    };
    f->frame = &fr;
    f->appended = false;
    if (m->retain) {
        save_retained(f, &fr);
        routes_foreach_node(f->routes, append_to, f);
    } else {
        routes_match(f->routes, m->topic, m->topic_len, append_to, f);
    }
    f->frame = NULL;
    forward_shared(f, m, NULL, 0);
    if (f->appended)
        schedule_flush(f);
}

/* A ghost session's message (broker_api_set_redirect): to the node the
 * session moved to, for that session only. */
static void
on_redirect(void *ctx, const char *addr, const char *client_id, const struct broker_message *m)
{
    struct forwarder *f = ctx;
    struct forward_frame fr = {
        .topic = m->topic,
        .topic_len = m->topic_len,
        .payload = m->payload,
        .payload_len = m->payload_len,
        .qos = m->qos,
        .retain = m->retain,
        .target = client_id,
        .target_len = strlen(client_id),
    };
    if (fr.target_len > UINT16_MAX)
        return;
    f->frame = &fr;
    f->appended = false;
    append_to(f, addr, addr); /* a link of its own, named by the address */
    f->frame = NULL;
    if (f->appended) {
        f->redirects_out++;
        schedule_flush(f);
    }
}

/* ---- life cycle ---- */

size_t
forwarder_pending(const struct forwarder *f)
{
    size_t frames = 0, pos = 0;
    const void *key;
    size_t len;
    void *v;
    while (f && hashmap_next(f->links, &pos, &key, &len, &v))
        frames += ((const struct link *)v)->frames;
    return frames;
}

/* Ends the drain's loop once nothing is owed and (with quiet_ms) no stream
 * has brought anything for that long, or at the deadline. */
static void
on_drain_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct forwarder *f = arg;
    uint64_t now = clock_monotonic_ms();
    bool quiet = !f->rlinks || now - f->last_in_ms >= f->drain_quiet_ms;
    if (now >= f->drain_deadline || (forwarder_pending(f) == 0 && quiet))
        event_base_loopbreak(f->base);
}

void
forwarder_drain(struct forwarder *f, uint64_t timeout_ms, uint64_t quiet_ms)
{
    if (!f)
        return;
    size_t before = forwarder_pending(f);
    if (before == 0 && (!quiet_ms || !f->rlinks))
        return;
    struct event *tick = event_new(f->base, -1, EV_PERSIST, on_drain_tick, f);
    struct timeval tv = {0, DRAIN_TICK_MS * 1000};
    if (!tick || evtimer_add(tick, &tv) != 0) {
        if (tick)
            event_free(tick);
        return;
    }
    if (before)
        log_info("forward: sending %zu buffered message(s) to other nodes before stopping",
                 before);
    f->drain_deadline = clock_monotonic_ms() + timeout_ms;
    f->drain_quiet_ms = quiet_ms;
    f->last_in_ms = clock_monotonic_ms();
    schedule_flush(f);
    event_base_dispatch(f->base); /* until done, the deadline, or a signal */
    event_free(tick);
    if (before)
        log_info("forward: %zu of %zu buffered message(s) sent before stopping",
                 before - forwarder_pending(f), before);
}

void
forwarder_leave(struct forwarder *f)
{
    if (f)
        f->routes = NULL;
}

struct forwarder *
forwarder_new(struct event_base *base, struct broker *broker, struct cluster *cluster,
              struct redis_link *link, struct routes *routes, struct peer_client *peers,
              const struct forwarder_config *cfg)
{
    struct forwarder *f = calloc(1, sizeof(*f));
    if (!f)
        return NULL;
    f->base = base;
    f->broker = broker;
    f->link = link;
    f->routes = routes;
    f->peers = peers;
    f->cfg = cfg;
    snprintf(f->key_retained, sizeof(f->key_retained), "%sretained", cfg->prefix);
    f->http_routes[0] = (struct http_route){"POST", LINK_PATH "/{id}/{seq}", handle_link, "link", 0, f};
    f->http_routes[1] = (struct http_route){"POST", FORWARD_PATH, handle_forward, "forward", 0, f};
    f->links = hashmap_new(link_free);
    f->share_turns = hashmap_new(NULL);
    f->streams = hashmap_new(free);
    f->flush_ev = event_new(base, -1, 0, on_flush, f);
    if (!f->links || !f->share_turns || !f->streams || !f->flush_ev || cluster_add_up_listener(cluster, on_redis_up, f) != RMQ_OK) {
        log_error("forwarder: cannot start");
        forwarder_free(f);
        return NULL;
    }
    broker_set_forwarder(broker, on_forward, f);
    broker_api_set_redirect(broker, on_redirect);
    broker_api_on_room(broker, streams_on_room, f);
    if (cfg->durable && routes_on_node_left(routes, rescue_on_node_left, f) != RMQ_OK) {
        log_error("forwarder: cannot follow nodes leaving");
        forwarder_free(f);
        return NULL;
    }
    return f;
}

void
forwarder_free(struct forwarder *f)
{
    if (!f)
        return;
    broker_set_forwarder(f->broker, NULL, NULL);
    broker_api_set_redirect(f->broker, NULL);
    broker_api_on_room(f->broker, NULL, NULL);
    size_t pos = 0;
    const void *key;
    size_t len;
    void *v;
    while (f->links && hashmap_next(f->links, &pos, &key, &len, &v)) {
        struct link *l = v;
        if (l->frames)
            log_info("forward to node %s: %zu message(s) not sent at shutdown", l->node, l->frames);
    }
    rescue_abandon_all(f);
    streams_close_all(f);
    hashmap_free(f->streams);
    hashmap_free(f->links);
    hashmap_free(f->share_turns);
    if (f->flush_ev)
        event_free(f->flush_ev);
    free(f);
}

void
forwarder_stop_streams(struct forwarder *f)
{
    if (f)
        streams_close_all(f);
}

void
forwarder_write_metrics(FILE *out, void *arg)
{
    const struct forwarder *f = arg;
    size_t buffered = 0;
    size_t pos = 0;
    const void *key;
    size_t len;
    void *v;
    while (hashmap_next(f->links, &pos, &key, &len, &v)) {
        const struct link *l = v;
        buffered += l->len - l->head;
    }
    metrics_family(out, "relaymq_forward_messages_total", "counter",
                   "messages forwarded between nodes, by direction and outcome");
    fprintf(out, "relaymq_forward_messages_total{direction=\"out\",outcome=\"sent\"} %" PRIu64 "\n",
            f->sent_msgs);
    fprintf(out,
            "relaymq_forward_messages_total{direction=\"out\",outcome=\"dropped_buffer_full\"} %" PRIu64
            "\n",
            f->dropped_full);
    fprintf(out,
            "relaymq_forward_messages_total{direction=\"out\",outcome=\"dropped_link_failed\"} %" PRIu64
            "\n",
            f->dropped_failed);
    fprintf(out, "relaymq_forward_messages_total{direction=\"in\",outcome=\"routed\"} %" PRIu64 "\n",
            f->recv_msgs);
    metrics_family(out, "relaymq_forward_batches_total", "counter",
                   "forwarding requests, by direction and outcome");
    fprintf(out, "relaymq_forward_batches_total{direction=\"out\",outcome=\"ok\"} %" PRIu64 "\n",
            f->batches);
    fprintf(out, "relaymq_forward_batches_total{direction=\"out\",outcome=\"retry\"} %" PRIu64 "\n",
            f->retries);
    fprintf(out, "relaymq_forward_batches_total{direction=\"in\",outcome=\"ok\"} %" PRIu64 "\n",
            f->recv_batches);
    fprintf(out, "relaymq_forward_batches_total{direction=\"in\",outcome=\"paused\"} %" PRIu64 "\n",
            f->recv_pauses);
    fprintf(out, "relaymq_forward_batches_total{direction=\"in\",outcome=\"malformed\"} %" PRIu64 "\n",
            (uint64_t)f->recv_bad);
    metrics_family(out, "relaymq_forward_streams_total", "counter",
                   "node-to-node streams opened to other nodes (out) and from them (in)");
    fprintf(out, "relaymq_forward_streams_total{direction=\"out\"} %" PRIu64 "\n", f->streams_out);
    fprintf(out, "relaymq_forward_streams_total{direction=\"in\"} %" PRIu64 "\n", f->streams_in);
    metrics_family(out, "relaymq_forward_redirects_total", "counter",
                   "messages for a session that moved, sent on (out) and delivered (in)");
    fprintf(out, "relaymq_forward_redirects_total{direction=\"out\"} %" PRIu64 "\n",
            f->redirects_out);
    fprintf(out, "relaymq_forward_redirects_total{direction=\"in\"} %" PRIu64 "\n",
            f->redirects_in);
    metrics_family(out, "relaymq_forward_shared_total", "counter",
                   "shared-subscription messages sent to another node's group member (out), "
                   "delivered here (in), or lost because the group left meanwhile");
    fprintf(out, "relaymq_forward_shared_total{direction=\"out\"} %" PRIu64 "\n", f->shared_out);
    fprintf(out, "relaymq_forward_shared_total{direction=\"in\"} %" PRIu64 "\n", f->shared_in);
    fprintf(out, "relaymq_forward_shared_total{direction=\"lost\"} %" PRIu64 "\n", f->shared_lost);
    metrics_family(out, "relaymq_forward_rescued_total", "counter",
                   "durable sessions: messages a node that left had not taken, re-sent to the "
                   "nodes now holding its sessions (out), delivered here (in), or lost (a "
                   "redirect that can no longer be placed)");
    fprintf(out, "relaymq_forward_rescued_total{direction=\"out\"} %" PRIu64 "\n", f->rescued_out);
    fprintf(out, "relaymq_forward_rescued_total{direction=\"in\"} %" PRIu64 "\n", f->rescued_in);
    fprintf(out, "relaymq_forward_rescued_total{direction=\"lost\"} %" PRIu64 "\n", f->rescue_lost);
    metrics_family(out, "relaymq_forward_barrier_failures_total", "counter",
                   "durable sessions: received batches answered without Redis confirming the "
                   "sessions' copies (Redis unreachable)");
    fprintf(out, "relaymq_forward_barrier_failures_total %" PRIu64 "\n", f->barriers_failed);
    metrics_family(out, "relaymq_forward_buffered_bytes", "gauge",
                   "bytes waiting to be forwarded to other nodes");
    fprintf(out, "relaymq_forward_buffered_bytes %zu\n", buffered);
    metrics_family(out, "relaymq_retained_redis_total", "counter",
                   "retained messages loaded from Redis, and Redis errors storing them");
    fprintf(out, "relaymq_retained_redis_total{event=\"loaded\"} %" PRIu64 "\n",
            f->retained_loaded);
    fprintf(out, "relaymq_retained_redis_total{event=\"error\"} %" PRIu64 "\n", f->retained_errors);
}
