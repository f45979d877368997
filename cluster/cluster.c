/* Cluster membership and life cycle: the node record and its heartbeat,
 * detection and clean-up of dead nodes (exactly one survivor reaps each,
 * publishing the wills it finds and emitting node_down events), clean-up
 * of this node's previous life at start, and re-assertion of every live
 * device whenever Redis comes back. Device claims and events are in
 * registry.c. Loop thread only. */
#include <event2/event.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/cluster_internal.h"
#include "common/clock.h"
#include "common/log.h"

/* Reaps a dead node (or, with ARGV[3] = '1', this node's previous life):
 * removes its device entries and returns them with their wills. SREM on
 * the node set makes exactly one caller do it. ARGV[4] stream maxlen,
 * [5] now, [6] this life's epoch: the "!" announcement of a previous life
 * carries it, so survivors adopt only what that life left (routes.c). */
static const char reap_lua[] =
    "local p, dead = ARGV[1], ARGV[2]\n"
    "if ARGV[3] ~= '1' then\n"
    "  if redis.call('EXISTS', p .. 'node:' .. dead) == 1 then return false end\n"
    "  if redis.call('SREM', KEYS[1], dead) == 0 then return false end\n"
    "end\n"
    "local set = p .. 'node:' .. dead .. ':devices'\n"
    "local out = {}\n"
    "for _, id in ipairs(redis.call('SMEMBERS', set)) do\n"
    "  local k = p .. 'dev:' .. id\n"
    "  local f = redis.call('HMGET', k, 'node', 'client_id', 'username', 'peer',\n"
    "                       'will_topic', 'will_payload', 'will_qos', 'will_retain')\n"
    "  if f[1] == dead then\n"
    "    redis.call('DEL', k)\n"
    /* Its commands in flight wait, queued, for the device's return. */
    "    for _, cid in ipairs(redis.call('ZRANGE', p .. 'cmd:pending:' .. id, 0, -1)) do\n"
    "      local ck = p .. 'cmd:' .. cid\n"
    "      local st = redis.call('HGET', ck, 'status')\n"
    "      if st == 'sent' or st == 'delivered' then\n"
    "        redis.call('HSET', ck, 'status', 'queued', 'node', '', 'updated_ms', ARGV[5],\n"
    "                   'next_ms', 0)\n"
    "        redis.call('XADD', p .. 'commands', 'MAXLEN', '~', ARGV[4], '*', 'id', cid,\n"
    "                   'device', id, 'status', 'queued', 'attempts',\n"
    "                   redis.call('HGET', ck, 'attempts'), 'node', '', 'ts', ARGV[5])\n"
    "      end\n"
    "    end\n"
    "    table.insert(out, {id, f[2] or '', f[3] or '', f[4] or '', f[5] or '',\n"
    "                       f[6] or '', f[7] or '0', f[8] or '0'})\n"
    "  end\n"
    "end\n"
    "redis.call('DEL', set)\n"
    /* Its subscriptions: gone from every node's route table. */
    "redis.call('DEL', p .. 'routes:' .. dead)\n"
    "redis.call('PUBLISH', p .. 'routes', '!\\t' .. dead .. (ARGV[3] == '1' and '\\t' .. ARGV[6] or ''))\n"
    "return out\n";

/* Node ids in the node set whose record has expired. */
static const char dead_lua[] =
    "local out = {}\n"
    "for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do\n"
    "  if id ~= ARGV[2] and redis.call('EXISTS', ARGV[1] .. 'node:' .. id) == 0 then\n"
    "    table.insert(out, id)\n"
    "  end\n"
    "end\n"
    "return out\n";

/* Forgets this node's device entries (before re-asserting the live ones). */
static const char purge_lua[] =
    "for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do\n"
    "  local k = ARGV[1] .. 'dev:' .. id\n"
    "  if redis.call('HGET', k, 'node') == ARGV[2] then redis.call('DEL', k) end\n"
    "end\n"
    "redis.call('DEL', KEYS[1])\n"
    "return 1\n";

void
cluster_ignore_reply(struct redisReply *reply, void *arg)
{
}

static const char *
str_at(const redisReply *r, size_t i)
{
    return i < r->elements && r->element[i]->type == REDIS_REPLY_STRING ? r->element[i]->str : "";
}

/* One device of a dead node: its will and its offline event. */
static void
reap_device(struct cluster *cl, const char *node, const redisReply *d)
{
    const char *device = str_at(d, 0), *will_topic = str_at(d, 4);
    if (will_topic[0]) {
        const redisReply *payload = d->element[5];
        broker_publish(cl->broker, will_topic, payload->str, payload->len,
                       (uint8_t)atoi(str_at(d, 6)), atoi(str_at(d, 7)) != 0);
    }
    registry_emit_event(cl, "offline", device, str_at(d, 1), str_at(d, 2), node, str_at(d, 3),
                        NULL, "node_down");
}

struct reap_ctx {
    struct cluster *cl;
    char node[];
};

static void
on_reap_reply(struct redisReply *reply, void *arg)
{
    struct reap_ctx *x = arg;
    struct cluster *cl = x->cl;
    if (reply && reply->type == REDIS_REPLY_ARRAY && !cl->closing) {
        bool self = strcmp(x->node, cl->cfg->node_id) == 0;
        if (self && reply->elements)
            log_info("released %zu device(s) left by this node's previous run", reply->elements);
        else if (!self) {
            log_info("node %s is gone: %zu device(s) released", x->node, reply->elements);
            cl->nodes_reaped++;
        }
        for (size_t i = 0; i < reply->elements; i++)
            if (reply->element[i]->type == REDIS_REPLY_ARRAY && reply->element[i]->elements == 8)
                reap_device(cl, x->node, reply->element[i]);
    }
    free(x);
}

static void
reap(struct cluster *cl, const char *node, bool own_previous_life)
{
    size_t n = strlen(node) + 1;
    struct reap_ctx *x = malloc(sizeof(*x) + n);
    if (!x)
        return;
    x->cl = cl;
    memcpy(x->node, node, n);
    char maxlen[24], now[24], epoch[24];
    snprintf(maxlen, sizeof(maxlen), "%lld", (long long)cl->cfg->events_maxlen);
    snprintf(now, sizeof(now), "%llu", (unsigned long long)clock_wall_ms());
    snprintf(epoch, sizeof(epoch), "%llu", (unsigned long long)cl->epoch);
    const char *argv[] = {cl->key_nodes, cl->cfg->prefix, node, own_previous_life ? "1" : "0",
                          maxlen, now, epoch};
    if (redis_link_eval(cl->redis, cl->script_reap, on_reap_reply, x, 1, 7, argv, NULL) != RMQ_OK)
        free(x);
}

static void
on_dead_reply(struct redisReply *reply, void *arg)
{
    struct cluster *cl = arg;
    if (!reply || reply->type != REDIS_REPLY_ARRAY || cl->closing)
        return;
    for (size_t i = 0; i < reply->elements; i++)
        if (reply->element[i]->type == REDIS_REPLY_STRING)
            reap(cl, reply->element[i]->str, false);
}

static void reassert_all(struct cluster *cl);

/* SADD answers 1 when this node was not in the node set: after the first
 * heartbeat since Redis came up that means a survivor reaped this node while
 * it was alive (a long stall): its devices are re-asserted. */
static void
on_sadd_reply(struct redisReply *reply, void *arg)
{
    struct cluster *cl = arg;
    if (!reply || reply->type != REDIS_REPLY_INTEGER || cl->closing)
        return;
    if (cl->joined && reply->integer == 1) {
        log_warn("this node was declared dead while alive; re-asserting its devices");
        reassert_all(cl);
    }
    cl->joined = true;
}

/* Writes the node record with its TTL, then looks for dead nodes. */
static void
heartbeat(struct cluster *cl)
{
    char ttl[24], started[24], epoch[24], conns[24];
    snprintf(ttl, sizeof(ttl), "%llu", (unsigned long long)cl->cfg->node_ttl_ms);
    snprintf(started, sizeof(started), "%llu", (unsigned long long)cl->started_ms);
    snprintf(epoch, sizeof(epoch), "%llu", (unsigned long long)cl->epoch);
    snprintf(conns, sizeof(conns), "%zu", broker_connected_count(cl->broker));
    const char *hset[] = {"HSET", cl->key_node, "id", cl->cfg->node_id, "addr",
                          cl->cfg->advertise, "started_at", started, "epoch", epoch,
                          "version", RELAYMQ_VERSION, "conns", conns};
    const char *expire[] = {"PEXPIRE", cl->key_node, ttl};
    const char *sadd[] = {"SADD", cl->key_nodes, cl->cfg->node_id};
    const char *dead[] = {cl->key_nodes, cl->cfg->prefix, cl->cfg->node_id};
    redis_link_argv(cl->redis, cluster_ignore_reply, NULL, 14, hset, NULL);
    redis_link_argv(cl->redis, cluster_ignore_reply, NULL, 3, expire, NULL);
    redis_link_argv(cl->redis, on_sadd_reply, cl, 3, sadd, NULL);
    /* Right after (re)connecting, every record may have lapsed while Redis
     * was away; live nodes refresh theirs within one TTL, so wait that long
     * before calling anyone dead. */
    if (clock_monotonic_ms() - cl->redis_up_since_ms >= cl->cfg->node_ttl_ms)
        redis_link_eval(cl->redis, cl->script_dead, on_dead_reply, cl, 1, 3, dead, NULL);
}

static void
on_heartbeat(evutil_socket_t fd, short what, void *arg)
{
    struct cluster *cl = arg;
    if (redis_link_is_up(cl->redis))
        heartbeat(cl);
}

/* Forgets this node's device entries, then claims the live ones again;
 * one connection keeps the order. */
static void
reassert_all(struct cluster *cl)
{
    const char *argv[] = {cl->key_my_devices, cl->cfg->prefix, cl->cfg->node_id};
    redis_link_eval(cl->redis, cl->script_purge, cluster_ignore_reply, NULL, 1, 3, argv, NULL);
    broker_foreach_client(cl->broker, registry_reassert_one, cl);
    cl->reassert_needed = false;
}

static void
on_redis_up(void *ctx)
{
    struct cluster *cl = ctx;
    cl->redis_up_since_ms = clock_monotonic_ms();
    cl->joined = false;
    if (!cl->registered_once) {
        /* Entries a previous life of this node left behind. */
        reap(cl, cl->cfg->node_id, true);
        cl->registered_once = true;
        broker_foreach_client(cl->broker, registry_reassert_one, cl);
    } else {
        reassert_all(cl);
    }
    heartbeat(cl);
    for (int i = 0; i < cl->up_listener_count; i++)
        cl->up_listeners[i].fn(cl->up_listeners[i].ctx);
}

static void
on_redis_down(void *ctx)
{
    struct cluster *cl = ctx;
    cl->reassert_needed = true;
}

static void
make_keys(struct cluster *cl)
{
    const char *p = cl->cfg->prefix, *id = cl->cfg->node_id;
    snprintf(cl->key_node, sizeof(cl->key_node), "%snode:%s", p, id);
    snprintf(cl->key_nodes, sizeof(cl->key_nodes), "%snodes", p);
    snprintf(cl->key_my_devices, sizeof(cl->key_my_devices), "%snode:%s:devices", p, id);
    snprintf(cl->key_events, sizeof(cl->key_events), "%sevents", p);
}

struct cluster *
cluster_new(struct event_base *base, struct broker *broker, const struct cluster_config *cfg)
{
    struct cluster *cl = calloc(1, sizeof(*cl));
    if (!cl)
        return NULL;
    cl->cfg = cfg;
    cl->broker = broker;
    cl->epoch = cfg->epoch ? cfg->epoch : clock_wall_ms();
    cl->started_ms = cl->epoch;
    make_keys(cl);
    cl->link_events = (struct redis_link_events){.up = on_redis_up, .down = on_redis_down,
                                                 .ctx = cl};
    cl->redis = redis_link_new(base, cfg->redis_url, &cl->link_events);
    if (!cl->redis)
        goto fail;
    cl->script_claim = redis_link_script(cl->redis, registry_claim_lua);
    cl->script_release = redis_link_script(cl->redis, registry_release_lua);
    cl->script_reap = redis_link_script(cl->redis, reap_lua);
    cl->script_dead = redis_link_script(cl->redis, dead_lua);
    cl->script_purge = redis_link_script(cl->redis, purge_lua);
    cl->script_dir_nodes = redis_link_script(cl->redis, directory_nodes_lua);
    cl->script_dir_clients = redis_link_script(cl->redis, directory_clients_lua);
    cl->script_reassert = redis_link_script(cl->redis, registry_reassert_lua);
    uint64_t period = cfg->node_ttl_ms / 3;
    struct timeval tv = {(time_t)(period / 1000), (suseconds_t)(period % 1000) * 1000};
    cl->heartbeat = event_new(base, -1, EV_PERSIST, on_heartbeat, cl);
    if (!cl->heartbeat || event_add(cl->heartbeat, &tv) != 0)
        goto fail;
    cl->hooks = (struct broker_hooks){.ctx = cl,
                                      .lookup_user = cfg->users_redis ? users_on_lookup : NULL,
                                      .claim = registry_on_claim,
                                      .released = registry_on_released};
    broker_set_hooks(broker, &cl->hooks);
    log_info("cluster: node %s, redis %s, prefix '%s'", cfg->node_id, cfg->redis_url,
             cfg->prefix);
    return cl;
fail:
    cluster_free(cl);
    return NULL;
}

void
cluster_free(struct cluster *cl)
{
    if (!cl)
        return;
    cl->closing = true;
    broker_set_hooks(cl->broker, NULL);
    if (redis_link_is_up(cl->redis)) {
        /* Leave cleanly, so no survivor reaps this node as dead. */
        const char *del[] = {"DEL", cl->key_node};
        const char *srem[] = {"SREM", cl->key_nodes, cl->cfg->node_id};
        redis_link_argv(cl->redis, cluster_ignore_reply, NULL, 2, del, NULL);
        redis_link_argv(cl->redis, cluster_ignore_reply, NULL, 3, srem, NULL);
        redis_link_wait(cl->redis, 1000);
    }
    if (cl->heartbeat)
        event_free(cl->heartbeat);
    redis_link_free(cl->redis);
    free(cl);
}

void
cluster_set_close_remote(struct cluster *cl, cluster_close_remote_fn fn, void *ctx)
{
    cl->close_remote = fn;
    cl->close_remote_ctx = ctx;
}

bool
cluster_redis_up(const struct cluster *cl)
{
    return cl && redis_link_is_up(cl->redis);
}

struct redis_link *
cluster_redis(struct cluster *cl)
{
    return cl->redis;
}

enum rmq_status
cluster_add_up_listener(struct cluster *cl, void (*fn)(void *ctx), void *ctx)
{
    if (cl->up_listener_count == CLUSTER_MAX_UP_LISTENERS)
        return RMQ_LIMIT;
    cl->up_listeners[cl->up_listener_count].fn = fn;
    cl->up_listeners[cl->up_listener_count++].ctx = ctx;
    return RMQ_OK;
}

void
cluster_set_session_prepare(struct cluster *cl, cluster_session_prepare_fn fn, void *ctx)
{
    cl->session_prepare = fn;
    cl->session_ctx = ctx;
}

void
cluster_set_pending_watch(struct cluster *cl, const struct cluster_pending_watch *w)
{
    cl->pending_watch = w;
}
