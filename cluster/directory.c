/* The cluster's answer to the admin API's directory questions (see
 * http/admin_api.h): where a client is connected, which nodes exist, and a
 * page of every client in the cluster, all read from the registry in Redis
 * with one script call each. Loop thread only; every callback runs exactly
 * once (with RMQ_IO when Redis is unreachable, which the API turns into 503). */
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "broker/broker_api.h"
#include "cluster/cluster_internal.h"
#include "common/clock.h"
#include "http/admin_api.h"
#include "http/metrics.h"

/* Every registered node with its record, or alive = 0 once it lapsed. */
const char directory_nodes_lua[] =
    "local out = {}\n"
    "for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do\n"
    "  local f = redis.call('HMGET', ARGV[1] .. 'node:' .. id, 'addr', 'started_at', 'conns',\n"
    "                       'version')\n"
    "  table.insert(out, {id, f[1] and '1' or '0', f[1] or '', f[2] or '0', f[3] or '0',\n"
    "                     f[4] or ''})\n"
    "end\n"
    "return out\n";

/* One page of devices: SSCAN of a node's set, or SCAN of every dev key. */
const char directory_clients_lua[] =
    "local p, node, cursor, limit = ARGV[1], ARGV[2], ARGV[3], ARGV[4]\n"
    "local res\n"
    "if node ~= '' then\n"
    "  res = redis.call('SSCAN', p .. 'node:' .. node .. ':devices', cursor, 'COUNT', limit)\n"
    "else\n"
    "  res = redis.call('SCAN', cursor, 'MATCH', p .. 'dev:*', 'COUNT', limit)\n"
    "end\n"
    "local out = {}\n"
    "for _, k in ipairs(res[2]) do\n"
    "  local key = node ~= '' and (p .. 'dev:' .. k) or k\n"
    "  local f = redis.call('HMGET', key, 'device', 'client_id', 'node', 'peer', 'username',\n"
    "                       'proto', 'clean', 'channel')\n"
    "  if f[1] then\n"
    "    table.insert(out, {f[1], f[2] or '', f[3] or '', f[4] or '', f[5] or '', f[6] or '',\n"
    "                       f[7] or '', f[8] or ''})\n"
    "  end\n"
    "end\n"
    "return {res[1], out}\n";

struct dir_call {
    struct cluster *cl;
    admin_locate_cb locate_cb;
    admin_json_cb json_cb;
    void *arg;
    char client_id[]; /* locate only */
};

static struct dir_call *
call_new(struct cluster *cl, admin_locate_cb lcb, admin_json_cb jcb, void *arg,
         const char *client_id)
{
    size_t n = client_id ? strlen(client_id) + 1 : 1;
    struct dir_call *c = calloc(1, sizeof(*c) + n);
    if (c) {
        c->cl = cl;
        c->locate_cb = lcb;
        c->json_cb = jcb;
        c->arg = arg;
        memcpy(c->client_id, client_id ? client_id : "", n);
    }
    return c;
}

static const char *
elem(const redisReply *r, size_t i)
{
    return i < r->elements && r->element[i]->type == REDIS_REPLY_STRING ? r->element[i]->str : "";
}

static bool
dir_ready(void *ctx, const char **why)
{
    if (cluster_redis_up(ctx))
        return true;
    *why = "redis is unreachable";
    return false;
}

static void
on_locate(struct redisReply *r, void *arg)
{
    struct dir_call *c = arg;
    struct cluster *cl = c->cl;
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 3) {
        c->locate_cb(RMQ_IO, NULL, c->arg);
    } else if (r->element[0]->type != REDIS_REPLY_STRING) {
        /* Not connected anywhere; an offline persistent session may still
         * live here, and this node answers for it. */
        struct admin_location loc = {.node_id = cl->cfg->node_id, .local = true};
        if (broker_api_has_client(cl->broker, c->client_id))
            c->locate_cb(RMQ_OK, &loc, c->arg);
        else
            c->locate_cb(RMQ_NOT_FOUND, NULL, c->arg);
    } else {
        struct admin_location loc = {
            .node_id = elem(r, 0),
            .address = elem(r, 1),
            .channel = strtoull(elem(r, 2), NULL, 10),
            .local = strcmp(elem(r, 0), cl->cfg->node_id) == 0,
        };
        c->locate_cb(RMQ_OK, &loc, c->arg);
    }
    free(c);
}

static void
dir_locate(void *ctx, const char *client_id, admin_locate_cb cb, void *arg)
{
    struct cluster *cl = ctx;
    char key[CLUSTER_KEY_MAX];
    snprintf(key, sizeof(key), "%sdev:%s", cl->cfg->prefix, client_id);
    const char *argv[] = {"HMGET", key, "node", "addr", "channel"};
    struct dir_call *c = call_new(cl, cb, NULL, arg, client_id);
    if (!c) {
        cb(RMQ_NOMEM, NULL, arg);
        return;
    }
    if (redis_link_argv(cl->redis, on_locate, c, 5, argv, NULL) != RMQ_OK) {
        free(c);
        cb(RMQ_IO, NULL, arg);
    }
}

static json_t *
node_json(const redisReply *n, const char *self, uint64_t now_ms)
{
    uint64_t started = strtoull(elem(n, 3), NULL, 10);
    bool alive = strcmp(elem(n, 1), "1") == 0;
    return json_pack("{s:s,s:s?,s:b,s:b,s:I,s:I,s:s?}", "node_id", elem(n, 0), "address",
                     alive ? elem(n, 2) : NULL, "alive", alive, "local",
                     strcmp(elem(n, 0), self) == 0, "uptime_seconds",
                     (json_int_t)(alive && started && now_ms > started ? (now_ms - started) / 1000
                                                                       : 0),
                     "connections", (json_int_t)strtoll(elem(n, 4), NULL, 10), "version",
                     alive ? elem(n, 5) : NULL);
}

static void
on_nodes(struct redisReply *r, void *arg)
{
    struct dir_call *c = arg;
    json_t *nodes = r && r->type == REDIS_REPLY_ARRAY ? json_array() : NULL;
    uint64_t now = clock_wall_ms();
    for (size_t i = 0; nodes && i < r->elements; i++) {
        if (r->element[i]->type == REDIS_REPLY_ARRAY && r->element[i]->elements == 6)
            json_array_append_new(nodes, node_json(r->element[i], c->cl->cfg->node_id, now));
    }
    c->json_cb(nodes ? RMQ_OK : RMQ_IO, nodes, c->arg);
    free(c);
}

static void
dir_list_nodes(void *ctx, admin_json_cb cb, void *arg)
{
    struct cluster *cl = ctx;
    const char *argv[] = {cl->key_nodes, cl->cfg->prefix};
    struct dir_call *c = call_new(cl, NULL, cb, arg, NULL);
    if (!c) {
        cb(RMQ_NOMEM, NULL, arg);
        return;
    }
    if (redis_link_eval(cl->redis, cl->script_dir_nodes, on_nodes, c, 1, 2, argv, NULL) != RMQ_OK) {
        free(c);
        cb(RMQ_IO, NULL, arg);
    }
}

static json_t *
client_json(const redisReply *d)
{
    const char *proto = elem(d, 5), *user = elem(d, 4);
    return json_pack("{s:s,s:s,s:s,s:I,s:s,s:s?,s:s,s:b}", "client_id", elem(d, 1), "device",
                     elem(d, 0), "node", elem(d, 2), "channel",
                     (json_int_t)strtoll(elem(d, 7), NULL, 10), "peer", elem(d, 3), "username",
                     user[0] ? user : NULL, "protocol",
                     strcmp(proto, "3") == 0 ? "3.1" : "3.1.1", "clean_session",
                     strcmp(elem(d, 6), "1") == 0);
}

static void
on_clients(struct redisReply *r, void *arg)
{
    struct dir_call *c = arg;
    json_t *doc = NULL;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
        r->element[1]->type == REDIS_REPLY_ARRAY) {
        const redisReply *list = r->element[1];
        json_t *clients = json_array();
        for (size_t i = 0; clients && i < list->elements; i++)
            if (list->element[i]->type == REDIS_REPLY_ARRAY && list->element[i]->elements == 8)
                json_array_append_new(clients, client_json(list->element[i]));
        const char *next = elem(r, 0);
        doc = json_pack("{s:o,s:s?}", "clients", clients, "next",
                        strcmp(next, "0") == 0 ? NULL : next);
    }
    c->json_cb(doc ? RMQ_OK : RMQ_IO, doc, c->arg);
    free(c);
}

static bool
all_digits(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (*s < '0' || *s > '9')
            return false;
    return true;
}

/* The cursor is Redis's own SCAN cursor; a page may hold fewer or more
 * entries than asked (SCAN's COUNT is a hint), and "next" is null at the end. */
static void
dir_list_clients(void *ctx, const char *node, const char *cursor, size_t limit, admin_json_cb cb,
                 void *arg)
{
    struct cluster *cl = ctx;
    char count[24];
    if (cursor && (!all_digits(cursor) || strlen(cursor) > 20)) {
        cb(RMQ_INVALID, NULL, arg);
        return;
    }
    snprintf(count, sizeof(count), "%zu", limit ? limit : 100);
    const char *argv[] = {cl->cfg->prefix, node ? node : "", cursor ? cursor : "0", count};
    struct dir_call *c = call_new(cl, NULL, cb, arg, NULL);
    if (!c) {
        cb(RMQ_NOMEM, NULL, arg);
        return;
    }
    if (redis_link_eval(cl->redis, cl->script_dir_clients, on_clients, c, 0, 4, argv, NULL) !=
        RMQ_OK) {
        free(c);
        cb(RMQ_IO, NULL, arg);
    }
}

void
cluster_write_metrics(FILE *out, void *arg)
{
    const struct cluster *cl = arg;
    struct redis_link_stats st;
    redis_link_stats(cl->redis, &st);
    metrics_family(out, "relaymq_redis_up", "gauge", "1 while the Redis link is up");
    fprintf(out, "relaymq_redis_up %d\n", redis_link_is_up(cl->redis) ? 1 : 0);
    metrics_family(out, "relaymq_redis_commands_total", "counter", "commands sent to Redis");
    fprintf(out, "relaymq_redis_commands_total %llu\n", (unsigned long long)st.commands);
    metrics_family(out, "relaymq_redis_errors_total", "counter",
                   "Redis error replies and commands lost with the connection");
    fprintf(out, "relaymq_redis_errors_total %llu\n", (unsigned long long)st.errors);
    metrics_family(out, "relaymq_redis_reconnects_total", "counter",
                   "Redis connection attempts after a loss or failure");
    fprintf(out, "relaymq_redis_reconnects_total %llu\n", (unsigned long long)st.reconnects);
    metrics_family(out, "relaymq_redis_latency_seconds_sum", "counter",
                   "total time Redis took to answer (divide by commands for the mean)");
    fprintf(out, "relaymq_redis_latency_seconds_sum %.6f\n", (double)st.latency_us_sum / 1e6);
    metrics_family(out, "relaymq_cluster_takeovers_total", "counter",
                   "connections taken over from another node");
    fprintf(out, "relaymq_cluster_takeovers_total %llu\n",
            (unsigned long long)cl->remote_takeovers);
    metrics_family(out, "relaymq_cluster_nodes_reaped_total", "counter",
                   "dead nodes this node cleaned up");
    fprintf(out, "relaymq_cluster_nodes_reaped_total %llu\n", (unsigned long long)cl->nodes_reaped);
    metrics_family(out, "relaymq_cluster_events_dropped_total", "counter",
                   "online/offline events not written because Redis was away");
    fprintf(out, "relaymq_cluster_events_dropped_total %llu\n",
            (unsigned long long)cl->events_dropped);
    if (!cl->cfg->users_redis)
        return;
    metrics_family(out, "relaymq_auth_redis_lookups_total", "counter",
                   "--users-redis: usernames looked up in Redis, by result");
    fprintf(out, "relaymq_auth_redis_lookups_total{result=\"found\"} %llu\n",
            (unsigned long long)cl->users_found);
    fprintf(out, "relaymq_auth_redis_lookups_total{result=\"not_found\"} %llu\n",
            (unsigned long long)cl->users_not_found);
    fprintf(out, "relaymq_auth_redis_lookups_total{result=\"error\"} %llu\n",
            (unsigned long long)cl->users_errors);
}

void
cluster_directory(struct cluster *cl, struct admin_directory *out)
{
    *out = (struct admin_directory){
        .ctx = cl,
        .ready = dir_ready,
        .locate = dir_locate,
        .list_clients = dir_list_clients,
        .list_nodes = dir_list_nodes,
    };
}
