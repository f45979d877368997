/* The replicated route table; see routes.h.
 *
 * State: `nodes` maps every other node's id to a struct remote (its
 * internal address and the set of its filters), and `tree` holds each
 * (filter, remote) pair so that a topic is matched once for all nodes.
 * A remote is created by any message or load naming it and dropped by
 * "!" or by a reload of it that no longer lists it.
 *
 * A full reload (at start and after every Redis reconnect) may come before
 * the other nodes have written their sets again (after a Redis restart
 * they rewrite them on their own reconnect, then announce "*"). So it only
 * adds: a known node keeps its filters, and one missing from the reload is
 * kept, each marked stale; its "*" reloads it alone (replacing its filters)
 * and clears the mark. A node still stale STALE_MS later is reloaded alone
 * then: replaced if it is registered, dropped if not. No message is routed
 * past a node whose routes are merely being rewritten.
 *
 * Writes of this node's own filters go through the cluster's link (one
 * script: set change + announcement, so readers of the set and of the
 * channel agree); the channel is read on a second, subscriber link.
 * Loop thread only. */
#include "cluster/routes.h"

#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "broker/broker.h"
#include "broker/broker_api.h"
#include "broker/topic_tree.h"
#include "cluster/cluster.h"
#include "cluster/redis_link.h"
#include "common/clock.h"
#include "common/hashmap.h"
#include "common/log.h"
#include "http/metrics.h"

#define STALE_MS 10000 /* a node's own reconnect rewrites its set well within this */

#define RESET_CHUNK 500 /* filters per script call when re-asserting */

/* ARGV: prefix, node, op ('+' or '-'), filter. */
static const char change_lua[] =
    "local set = ARGV[1] .. 'routes:' .. ARGV[2]\n"
    "if ARGV[3] == '+' then redis.call('SADD', set, ARGV[4])\n"
    "else redis.call('SREM', set, ARGV[4]) end\n"
    "redis.call('PUBLISH', ARGV[1] .. 'routes', ARGV[3] .. '\\t' .. ARGV[2] .. '\\t' .. ARGV[4])\n"
    "return 1\n";

/* ARGV: prefix, node, first ('1' clears the set), last ('1' announces),
 * filters... */
static const char reset_lua[] =
    "local set = ARGV[1] .. 'routes:' .. ARGV[2]\n"
    "if ARGV[3] == '1' then redis.call('DEL', set) end\n"
    "for i = 5, #ARGV do redis.call('SADD', set, ARGV[i]) end\n"
    "if ARGV[4] == '1' then redis.call('PUBLISH', ARGV[1] .. 'routes', '*\\t' .. ARGV[2]) end\n"
    "return 1\n";

/* ARGV: prefix, this node, one node or ''. Every other registered node (or
 * just that one): {id, addr, {filters}}. */
static const char load_lua[] =
    "local ids = ARGV[3] ~= '' and {ARGV[3]} or redis.call('SMEMBERS', ARGV[1] .. 'nodes')\n"
    "local out = {}\n"
    "for _, id in ipairs(ids) do\n"
    "  if id ~= ARGV[2] then\n"
    "    local addr = redis.call('HGET', ARGV[1] .. 'node:' .. id, 'addr')\n"
    "    if addr then\n"
    "      table.insert(out, {id, addr, redis.call('SMEMBERS', ARGV[1] .. 'routes:' .. id)})\n"
    "    end\n"
    "  end\n"
    "end\n"
    "return out\n";

/* ARGV: prefix, node: leaves the table (clean shutdown). */
static const char leave_lua[] =
    "redis.call('DEL', ARGV[1] .. 'routes:' .. ARGV[2])\n"
    "redis.call('PUBLISH', ARGV[1] .. 'routes', '!\\t' .. ARGV[2])\n"
    "return 1\n";

struct remote;

/* A shared subscription group a remote node has members of. */
struct remote_share {
    struct remote *node;
    size_t key_len;
    char key[];
};

struct remote {
    struct hashmap *filters; /* filter -> (unused) */
    struct hashmap *shares;  /* group key -> struct remote_share */
    uint64_t match_gen;
    uint64_t stale_since_ms; /* monotonic; 0: its filters are confirmed */
    char *addr;
    char id[];
};

struct routes {
    struct event_base *base;
    struct broker *broker;
    struct cluster *cluster;
    struct redis_link *link; /* the cluster's */
    struct redis_link *sub;  /* ours, subscribed to P routes */
    struct redis_link_events sub_events;
    const struct routes_config *cfg;
    struct broker_observer observer;
    struct topic_tree *tree;
    struct topic_tree *shared_tree; /* groups' filters; subscribers: struct remote_share */
    struct hashmap *nodes; /* id -> struct remote */
    uint64_t match_gen;
    struct {
        void (*fn)(void *ctx, const char *node, uint64_t since_ms);
        void *ctx;
    } node_left[ROUTES_MAX_LEFT_LISTENERS];
    size_t node_left_count;
    int script_change, script_reset, script_load, script_leave;
    struct event *stale_timer; /* reloads the nodes still stale after STALE_MS */
    char channel[512];
    /* counters */
    uint64_t resyncs, changes_sent, changes_received, write_errors;
};

/* ---- the replica ---- */

static void
remote_free(struct routes *r, struct remote *n)
{
    size_t pos = 0;
    const void *key;
    size_t len;
    void *v;
    while (hashmap_next(n->filters, &pos, &key, &len, &v))
        topic_tree_unsubscribe(r->tree, key, len, n);
    hashmap_free(n->filters);
    pos = 0;
    while (n->shares && hashmap_next(n->shares, &pos, &key, &len, &v)) {
        struct remote_share *rs = v;
        const char *inner;
        size_t inner_len;
        if (broker_api_share_filter(rs->key, rs->key_len, &inner, &inner_len))
            topic_tree_unsubscribe(r->shared_tree, inner, inner_len, rs);
        free(rs);
    }
    hashmap_free(n->shares);
    free(n->addr);
    free(n);
}

static void
drop_node(struct routes *r, const char *id)
{
    struct remote *n = hashmap_remove(r->nodes, id, strlen(id));
    if (n) {
        log_info("routes: node %s left the route table", id);
        remote_free(r, n);
    }
}

static struct remote *
get_node(struct routes *r, const char *id, size_t len, bool create)
{
    struct remote *n = hashmap_get(r->nodes, id, len);
    if (n || !create)
        return n;
    if (!(n = calloc(1, sizeof(*n) + len + 1)))
        return NULL;
    memcpy(n->id, id, len);
    if (!(n->filters = hashmap_new(NULL)) || !(n->shares = hashmap_new(NULL)) ||
        hashmap_put(r->nodes, n->id, len, n, NULL) != RMQ_OK) {
        hashmap_free(n->filters);
        hashmap_free(n->shares);
        free(n);
        return NULL;
    }
    return n;
}

/* A shared group's key goes to the groups' tree (matched by its inner
 * filter), any other filter to the main one. */
static void
add_share(struct routes *r, struct remote *n, const char *key, size_t len, const char *inner,
          size_t inner_len)
{
    if (hashmap_get(n->shares, key, len))
        return;
    struct remote_share *rs = malloc(sizeof(*rs) + len + 1);
    if (!rs)
        return;
    rs->node = n;
    rs->key_len = len;
    memcpy(rs->key, key, len);
    rs->key[len] = '\0';
    if (topic_tree_subscribe(r->shared_tree, inner, inner_len, rs, 0, NULL) != RMQ_OK) {
        free(rs);
        return;
    }
    if (hashmap_put(n->shares, key, len, rs, NULL) != RMQ_OK) {
        topic_tree_unsubscribe(r->shared_tree, inner, inner_len, rs);
        free(rs);
    }
}

static void
add_filter(struct routes *r, struct remote *n, const char *filter, size_t len)
{
    const char *inner;
    size_t inner_len;
    if (broker_api_share_filter(filter, len, &inner, &inner_len)) {
        add_share(r, n, filter, len, inner, inner_len);
        return;
    }
    if (hashmap_get(n->filters, filter, len))
        return;
    if (topic_tree_subscribe(r->tree, filter, len, n, 0, NULL) != RMQ_OK)
        return; /* an invalid filter from Redis is ignored */
    if (hashmap_put(n->filters, filter, len, (void *)1, NULL) != RMQ_OK)
        topic_tree_unsubscribe(r->tree, filter, len, n);
}

static void
remove_filter(struct routes *r, struct remote *n, const char *filter, size_t len)
{
    const char *inner;
    size_t inner_len;
    if (broker_api_share_filter(filter, len, &inner, &inner_len)) {
        struct remote_share *rs = hashmap_remove(n->shares, filter, len);
        if (rs)
            topic_tree_unsubscribe(r->shared_tree, inner, inner_len, rs);
        free(rs);
        return;
    }
    if (hashmap_remove(n->filters, filter, len))
        topic_tree_unsubscribe(r->tree, filter, len, n);
}

/* Takes the loaded {id, addr, {filters}}: replacing node id's entry (a
 * load of that node alone: its filters are confirmed), or adding to it (a
 * full reload: it stays stale until confirmed). */
static void
load_node(struct routes *r, const redisReply *e, bool replace)
{
    if (e->type != REDIS_REPLY_ARRAY || e->elements != 3 ||
        e->element[0]->type != REDIS_REPLY_STRING || e->element[1]->type != REDIS_REPLY_STRING ||
        e->element[2]->type != REDIS_REPLY_ARRAY)
        return;
    const char *id = e->element[0]->str;
    if (replace)
        drop_node(r, id);
    struct remote *n = get_node(r, id, e->element[0]->len, true);
    char *addr = n ? strdup(e->element[1]->str) : NULL;
    if (!addr) {
        log_warn("routes: out of memory loading node %s", id);
        return;
    }
    free(n->addr);
    n->addr = addr;
    n->stale_since_ms = replace ? 0 : clock_monotonic_ms();
    const redisReply *f = e->element[2];
    for (size_t i = 0; i < f->elements; i++)
        if (f->element[i]->type == REDIS_REPLY_STRING)
            add_filter(r, n, f->element[i]->str, f->element[i]->len);
    log_info("routes: node %s at %s has %zu filter(s)%s", id, n->addr,
             hashmap_count(n->filters), replace ? "" : " (kept until it confirms them)");
}

/* The node left (or never came back after a reconnect): its routes go and
 * the listeners hear of it. */
static void
node_gone(struct routes *r, const char *id, uint64_t since_ms)
{
    drop_node(r, id);
    for (size_t i = 0; i < r->node_left_count; i++)
        r->node_left[i].fn(r->node_left[i].ctx, id, since_ms);
}

struct load_ctx {
    struct routes *r;
    char id[]; /* "" for all */
};

static void
on_loaded(struct redisReply *reply, void *arg)
{
    struct load_ctx *x = arg;
    struct routes *r = x->r;
    if (reply && reply->type == REDIS_REPLY_ARRAY) {
        if (!x->id[0]) {
            /* Every known node is stale until it confirms its set. */
            size_t pos = 0;
            const void *key;
            size_t len;
            void *v;
            uint64_t now = clock_monotonic_ms();
            while (hashmap_next(r->nodes, &pos, &key, &len, &v))
                ((struct remote *)v)->stale_since_ms = now;
            struct timeval tv = {STALE_MS / 1000, (STALE_MS % 1000) * 1000};
            if (r->stale_timer)
                evtimer_add(r->stale_timer, &tv);
        } else if (reply->elements == 0) {
            struct remote *n = get_node(r, x->id, strlen(x->id), false);
            if (n && n->stale_since_ms) /* it never came back: gone */
                node_gone(r, x->id, 0);
        }
        for (size_t i = 0; i < reply->elements; i++)
            load_node(r, reply->element[i], x->id[0] != '\0');
    } else if (reply) {
        r->write_errors++;
    }
    free(x);
}

/* Loads one node's set, or all (id NULL). */
static void
load(struct routes *r, const char *id)
{
    size_t n = id ? strlen(id) + 1 : 1;
    struct load_ctx *x = malloc(sizeof(*x) + n);
    if (!x)
        return;
    x->r = r;
    memcpy(x->id, id ? id : "", n);
    const char *argv[] = {r->cfg->prefix, r->cfg->node_id, id ? id : ""};
    if (redis_link_eval(r->link, r->script_load, on_loaded, x, 0, 3, argv, NULL) != RMQ_OK)
        free(x);
    else if (!id)
        r->resyncs++;
}

/* STALE_MS after a full reload: the nodes that did not confirm their sets
 * are each loaded again, alone. */
static void
on_stale_check(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct routes *r = arg;
    uint64_t now = clock_monotonic_ms();
    size_t pos = 0;
    const void *key;
    size_t len;
    void *v;
    while (hashmap_next(r->nodes, &pos, &key, &len, &v)) {
        struct remote *n = v;
        if (n->stale_since_ms && now - n->stale_since_ms >= STALE_MS / 2)
            load(r, n->id);
    }
}

/* ---- the channel ---- */

static void
on_message(const char *data, size_t len, void *arg)
{
    struct routes *r = arg;
    const char *tab1 = memchr(data, '\t', len);
    if (len < 3 || !tab1 || tab1 != data + 1)
        return;
    const char *id = tab1 + 1;
    const char *tab2 = memchr(id, '\t', len - (size_t)(id - data));
    size_t id_len = tab2 ? (size_t)(tab2 - id) : len - (size_t)(id - data);
    if (id_len == 0 || (id_len == strlen(r->cfg->node_id) && memcmp(id, r->cfg->node_id, id_len) == 0))
        return; /* our own announcements */
    char node[256];
    if (id_len >= sizeof(node))
        return;
    memcpy(node, id, id_len);
    node[id_len] = '\0';
    r->changes_received++;
    switch (data[0]) {
    case '+':
    case '-': {
        if (!tab2)
            return;
        const char *filter = tab2 + 1;
        size_t flen = len - (size_t)(filter - data);
        struct remote *n = get_node(r, node, id_len, data[0] == '+');
        if (!n)
            return;
        if (!n->addr)
            load(r, node); /* first news of it: learn its address (and the rest) */
        if (data[0] == '+')
            add_filter(r, n, filter, flen);
        else
            remove_filter(r, n, filter, flen);
        return;
    }
    case '*':
        load(r, node);
        return;
    case '!':
        /* "!\tnode\tsince": the node restarted at since (ms) and reaped its
         * previous life; what it holds from since on is its new life's. */
        node_gone(r, node, tab2 ? strtoull(tab2 + 1, NULL, 10) : 0);
        return;
    default:
        return;
    }
}

static void
on_sub_up(void *ctx)
{
    struct routes *r = ctx;
    /* Changes announced while we were not listening are lost: reload. */
    if (redis_link_is_up(r->link))
        load(r, NULL);
}

/* ---- this node's filters ---- */

static void
on_written(struct redisReply *reply, void *arg)
{
    struct routes *r = arg;
    if (r && reply && reply->type == REDIS_REPLY_ERROR)
        r->write_errors++;
}

static void
on_filter_changed(void *ctx, const char *filter, size_t len, bool present)
{
    struct routes *r = ctx;
    const char *argv[] = {r->cfg->prefix, r->cfg->node_id, present ? "+" : "-", filter};
    size_t lens[] = {strlen(argv[0]), strlen(argv[1]), 1, len};
    /* While Redis is away the change is only local; the reset after it
     * returns writes the whole set again. */
    if (redis_link_eval(r->link, r->script_change, on_written, r, 0, 4, argv, lens) == RMQ_OK)
        r->changes_sent++;
}

struct reset_ctx {
    struct routes *r;
    const char *argv[4 + RESET_CHUNK];
    size_t lens[4 + RESET_CHUNK];
    int count;
    bool first;
};

static void
reset_flush(struct reset_ctx *x, bool last)
{
    x->argv[2] = x->first ? "1" : "0";
    x->argv[3] = last ? "1" : "0";
    x->lens[2] = x->lens[3] = 1;
    redis_link_eval(x->r->link, x->r->script_reset, on_written, x->r, 0, 4 + x->count, x->argv,
                    x->lens);
    x->first = false;
    x->count = 0;
}

static void
reset_add(void *arg, const char *filter, size_t len)
{
    struct reset_ctx *x = arg;
    x->argv[4 + x->count] = filter;
    x->lens[4 + x->count] = len;
    if (++x->count == RESET_CHUNK)
        reset_flush(x, false);
}

/* Rewrites this node's whole set and announces it: at start and after
 * Redis came back (it may have lost everything). */
static void
on_redis_up(void *ctx)
{
    struct routes *r = ctx;
    struct reset_ctx *x = calloc(1, sizeof(*x));
    if (!x)
        return;
    x->r = r;
    x->first = true;
    x->argv[0] = r->cfg->prefix;
    x->argv[1] = r->cfg->node_id;
    x->lens[0] = strlen(x->argv[0]);
    x->lens[1] = strlen(x->argv[1]);
    broker_foreach_filter(r->broker, reset_add, x);
    reset_flush(x, true);
    free(x);
    if (redis_link_is_up(r->sub))
        load(r, NULL);
}

/* ---- matching ---- */

struct match_ctx {
    struct routes *r;
    routes_node_fn fn;
    void *arg;
};

static void
on_match(void *subscriber, uint8_t qos, void *arg)
{
    (void)qos;
    struct match_ctx *m = arg;
    struct remote *n = subscriber;
    if (n->match_gen == m->r->match_gen || !n->addr)
        return;
    n->match_gen = m->r->match_gen;
    m->fn(m->arg, n->id, n->addr);
}

void
routes_match(struct routes *r, const char *topic, size_t len, routes_node_fn fn, void *arg)
{
    struct match_ctx m = {r, fn, arg};
    r->match_gen++;
    topic_tree_match(r->tree, topic, len, on_match, &m);
}

struct share_match_ctx {
    routes_share_fn fn;
    void *arg;
};

static void
on_share_match(void *subscriber, uint8_t qos, void *arg)
{
    (void)qos;
    struct share_match_ctx *m = arg;
    struct remote_share *rs = subscriber;
    if (rs->node->addr)
        m->fn(m->arg, rs->key, rs->key_len, rs->node->id, rs->node->addr);
}

void
routes_match_shared(struct routes *r, const char *topic, size_t len, routes_share_fn fn,
                    void *arg)
{
    if (topic_tree_count(r->shared_tree) == 0)
        return;
    struct share_match_ctx m = {fn, arg};
    topic_tree_match(r->shared_tree, topic, len, on_share_match, &m);
}

void
routes_foreach_node(struct routes *r, routes_node_fn fn, void *arg)
{
    size_t pos = 0;
    const void *key;
    size_t len;
    void *v;
    while (hashmap_next(r->nodes, &pos, &key, &len, &v)) {
        struct remote *n = v;
        if (n->addr)
            fn(arg, n->id, n->addr);
    }
}

/* ---- life cycle ---- */

struct routes *
routes_new(struct event_base *base, struct broker *broker, struct cluster *cluster,
           struct redis_link *link, const struct routes_config *cfg)
{
    struct routes *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->base = base;
    r->broker = broker;
    r->cluster = cluster;
    r->link = link;
    r->cfg = cfg;
    snprintf(r->channel, sizeof(r->channel), "%sroutes", cfg->prefix);
    r->tree = topic_tree_new();
    r->shared_tree = topic_tree_new();
    r->nodes = hashmap_new(NULL);
    r->script_change = redis_link_script(link, change_lua);
    r->script_reset = redis_link_script(link, reset_lua);
    r->script_load = redis_link_script(link, load_lua);
    r->script_leave = redis_link_script(link, leave_lua);
    r->stale_timer = evtimer_new(base, on_stale_check, r);
    r->sub_events = (struct redis_link_events){.up = on_sub_up, .ctx = r};
    r->sub = redis_link_new(base, cfg->redis_url, &r->sub_events);
    r->observer = (struct broker_observer){.ctx = r, .filter_changed = on_filter_changed};
    if (!r->tree || !r->shared_tree || !r->nodes || r->script_leave < 0 || !r->sub ||
        !r->stale_timer ||
        redis_link_subscribe(r->sub, r->channel, on_message, r) != RMQ_OK ||
        cluster_add_up_listener(cluster, on_redis_up, r) != RMQ_OK ||
        broker_add_observer(broker, &r->observer) != RMQ_OK) {
        log_error("routes: cannot start");
        routes_free(r);
        return NULL;
    }
    return r;
}

void
routes_free(struct routes *r)
{
    if (!r)
        return;
    broker_remove_observer(r->broker, &r->observer);
    if (redis_link_is_up(r->link)) {
        const char *argv[] = {r->cfg->prefix, r->cfg->node_id};
        redis_link_eval(r->link, r->script_leave, on_written, NULL, 0, 2, argv, NULL);
    }
    redis_link_free(r->sub);
    if (r->stale_timer)
        event_free(r->stale_timer);
    size_t pos = 0;
    const void *key;
    size_t len;
    void *v;
    while (r->nodes && hashmap_next(r->nodes, &pos, &key, &len, &v)) {
        remote_free(r, v);
    }
    hashmap_free(r->nodes);
    topic_tree_free(r->tree);
    topic_tree_free(r->shared_tree);
    free(r);
}

void
routes_write_metrics(FILE *out, void *arg)
{
    const struct routes *r = arg;
    metrics_family(out, "relaymq_routes_remote_filters", "gauge",
                   "(filter, node) pairs in this node's replica of the other nodes' routes");
    fprintf(out, "relaymq_routes_remote_filters %zu\n", topic_tree_count(r->tree));
    metrics_family(out, "relaymq_routes_remote_nodes", "gauge", "other nodes in the route table");
    fprintf(out, "relaymq_routes_remote_nodes %zu\n", hashmap_count(r->nodes));
    metrics_family(out, "relaymq_routes_events_total", "counter",
                   "route table activity, by event");
    fprintf(out, "relaymq_routes_events_total{event=\"resync\"} %" PRIu64 "\n", r->resyncs);
    fprintf(out, "relaymq_routes_events_total{event=\"change_sent\"} %" PRIu64 "\n",
            r->changes_sent);
    fprintf(out, "relaymq_routes_events_total{event=\"change_received\"} %" PRIu64 "\n",
            r->changes_received);
    fprintf(out, "relaymq_routes_events_total{event=\"write_error\"} %" PRIu64 "\n",
            r->write_errors);
}

enum rmq_status
routes_on_node_left(struct routes *r, void (*fn)(void *ctx, const char *node, uint64_t since_ms),
                    void *ctx)
{
    if (r->node_left_count == ROUTES_MAX_LEFT_LISTENERS)
        return RMQ_INVALID;
    r->node_left[r->node_left_count].fn = fn;
    r->node_left[r->node_left_count++].ctx = ctx;
    return RMQ_OK;
}
