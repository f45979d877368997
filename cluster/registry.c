/* The device registry in Redis: one Lua script claims a device for a
 * connection (returning the previous owner), one releases it only if it
 * still names that connection, and the online/offline events that go with
 * both. See cluster.h for the key schema and cluster_internal.h for the
 * shared state. Loop thread only.
 *
 * dev:{device} fields: device client_id node addr channel channel_id epoch
 * peer connected_at username proto clean will_topic will_payload will_qos
 * will_retain. channel_id = "{node}/{epoch}/{channel}" names the connection
 * uniquely across the cluster and across restarts of a node. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "cluster/cluster_internal.h"
#include "cluster/sessions.h"
#include "common/clock.h"
#include "common/decimal.h"
#include "common/json_out.h"
#include "common/log.h"

/* KEYS: dev:{device}, this node's device set. ARGV: prefix, device, node,
 * client id, now, then the entry's fields. Returns {previous owner {node,
 * addr, channel, channel_id} or {}, the client's session holder (see
 * SESSIONS_OWNER_LUA), the device's unfinished command count}: what the
 * connect needs next, read in the same step as the claim. */
const char registry_claim_lua[] = SESSIONS_OWNER_LUA
    "local P = ARGV[1]\n"
    "local prev = redis.call('HMGET', KEYS[1], 'node', 'addr', 'channel', 'channel_id')\n"
    "redis.call('DEL', KEYS[1])\n"
    "redis.call('HSET', KEYS[1], unpack(ARGV, 6))\n"
    "redis.call('SADD', KEYS[2], ARGV[2])\n"
    "local old = {}\n"
    "if prev[1] then\n"
    "  if prev[1] ~= ARGV[3] then\n"
    "    redis.call('SREM', P .. 'node:' .. prev[1] .. ':devices', ARGV[2])\n"
    "  end\n"
    "  old = {prev[1], prev[2] or '', prev[3] or '', prev[4] or ''}\n"
    "end\n"
    "return {old, session_owner(P, ARGV[4], tonumber(ARGV[5])),\n"
    "        redis.call('ZCARD', P .. 'cmd:pending:' .. ARGV[2])}\n";

/* Re-assertion after Redis came back: writes the entry only if it is
 * absent or still names this node, so a device that meanwhile moved to
 * another node is left there (and never kicked). */
const char registry_reassert_lua[] =
    "local cur = redis.call('HGET', KEYS[1], 'node')\n"
    "if cur and cur ~= ARGV[3] then\n"
    "  redis.call('SREM', KEYS[2], ARGV[2])\n"
    "  return 0\n"
    "end\n"
    "redis.call('DEL', KEYS[1])\n"
    "redis.call('HSET', KEYS[1], unpack(ARGV, 6))\n"
    "redis.call('SADD', KEYS[2], ARGV[2])\n"
    "return 1\n";

const char registry_release_lua[] =
    "local cur = redis.call('HMGET', KEYS[1], 'channel_id', 'node')\n"
    "if cur[1] == ARGV[1] then\n"
    "  redis.call('DEL', KEYS[1])\n"
    "  redis.call('SREM', KEYS[2], ARGV[2])\n"
    "  return 1\n"
    "end\n"
    "if cur[2] ~= ARGV[3] then redis.call('SREM', KEYS[2], ARGV[2]) end\n"
    "return 0\n";

const char *
registry_device_id(const struct cluster *cl, const struct broker_client_info *info)
{
    if (cl->cfg->device_by_username && info->username && info->username[0])
        return info->username;
    return info->client_id;
}

static void
channel_id(const struct cluster *cl, uint64_t channel, char *out, size_t len)
{
    size_t n = strlen(cl->cfg->node_id);
    if (n + 2 + 2 * DECIMAL_U64_MAX > len) { /* never with a valid node id */
        snprintf(out, len, "%s/%llu/%llu", cl->cfg->node_id, (unsigned long long)cl->epoch,
                 (unsigned long long)channel);
        return;
    }
    memcpy(out, cl->cfg->node_id, n);
    out[n++] = '/';
    n += decimal_u64(out + n, cl->epoch);
    out[n++] = '/';
    decimal_u64(out + n, channel);
}

/* ---- events ---- */

/* A client id as one topic level: '/', '+', '#' and '%' are percent-encoded
 * (so "a/b" becomes "a%2Fb"), keeping the topic valid and one level deep. */
static void
topic_escape_level(const char *in, char *out, size_t len)
{
    size_t o = 0;
    for (; *in && o + 4 < len; in++) {
        if (*in == '/' || *in == '+' || *in == '#' || *in == '%')
            o += (size_t)snprintf(out + o, len - o, "%%%02X", (unsigned char)*in);
        else
            out[o++] = *in;
    }
    out[o] = '\0';
}

void
registry_emit_event(struct cluster *cl, const char *type, const char *device,
                    const char *client_id, const char *username, const char *node,
                    const char *peer, const char *channel, const char *reason)
{
    char ts[DECIMAL_U64_MAX], maxlen[24];
    uint64_t now = clock_wall_ms();
    decimal_u64(ts, now);
    snprintf(maxlen, sizeof(maxlen), "%lld", (long long)cl->cfg->events_maxlen);
    const char *argv[] = {
        "XADD", cl->key_events, "MAXLEN", "~", maxlen, "*", "event", type, "device", device,
        "client_id", client_id, "username", username ? username : "", "node", node,
        "peer", peer ? peer : "", "ts", ts, "channel_id", channel ? channel : "",
        "reason", reason ? reason : "",
    };
    int argc = (int)(sizeof(argv) / sizeof(argv[0]));
    if (!reason)
        argc -= 2;
    if (redis_link_argv(cl->redis, cluster_ignore_reply, NULL, argc, argv, NULL) != RMQ_OK)
        cl->events_dropped++;

    /* The same event for MQTT backends: written directly, on every
     * connection's path (see common/json_out.h). */
    size_t cap = 256;
    const char *fields[] = {type, device, client_id, username, node, peer, channel, reason};
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
        cap += fields[i] ? json_out_str_max(strlen(fields[i])) + 16 : 0;
    char stack[2048];
    char *buf = cap <= sizeof(stack) ? stack : malloc(cap);
    const char *payload = NULL;
    if (buf) {
        struct json_out j = json_out_init(buf, cap);
        json_out_key_str(&j, "event", type);
        json_out_key_str(&j, "device", device);
        json_out_key_str(&j, "client_id", client_id);
        json_out_key_str(&j, "username", username);
        json_out_key_str(&j, "node", node);
        json_out_key_str(&j, "peer", peer);
        json_out_key_int(&j, "ts", (int64_t)now);
        json_out_key_str(&j, "channel_id", channel);
        if (reason)
            json_out_key_str(&j, "reason", reason);
        payload = json_out_finish(&j);
    }
    char topic[1024], id[768];
    topic_escape_level(client_id, id, sizeof(id));
    snprintf(topic, sizeof(topic), "$SYS/brokers/%s/clients/%s/%s", node, id,
             strcmp(type, "online") == 0 ? "connected" : "disconnected");
    if (payload)
        broker_publish(cl->broker, topic, payload, strlen(payload), 0, false);
    if (buf != stack)
        free(buf);
}

/* ---- claim ---- */

struct claim_ctx {
    struct cluster *cl;
    struct broker_claim *token; /* NULL for a re-assertion */
    char *client_id, *username, *peer; /* for the online event */
    bool clean;
    uint64_t channel;
    uint64_t pending_mark;  /* cluster_pending_watch.mark() as the claim was sent */
    long long pending;      /* the device's unfinished commands, -1: unknown */
    char channel_id[CLUSTER_KEY_MAX];
    char device[];
};

static void
claim_ctx_free(struct claim_ctx *x)
{
    if (!x)
        return;
    free(x->client_id);
    free(x->username);
    free(x->peer);
    free(x);
}

/* The previous connection of a device that moved, for its offline event
 * if its node cannot be reached to close it (and so report it). */
struct orphan {
    struct cluster *cl;
    char *device, *client_id, *username, *node, *channel_id;
};

static void
orphan_free(struct orphan *o)
{
    if (!o)
        return;
    free(o->device);
    free(o->client_id);
    free(o->username);
    free(o->node);
    free(o->channel_id);
    free(o);
}

static struct orphan *
orphan_new(struct cluster *cl, const struct claim_ctx *x, const char *node, const char *cid)
{
    struct orphan *o = calloc(1, sizeof(*o));
    if (!o)
        return NULL;
    o->cl = cl;
    o->device = strdup(x->device);
    o->client_id = strdup(x->client_id);
    o->username = x->username ? strdup(x->username) : NULL;
    o->node = strdup(node);
    o->channel_id = strdup(cid);
    if (!o->device || !o->client_id || !o->node || !o->channel_id ||
        (x->username && !o->username)) {
        orphan_free(o);
        return NULL;
    }
    return o;
}

/* The old node could not be asked: it is most likely dead, and the reaper
 * will not find the device in its set any more (this claim moved it), so
 * the offline event of the old connection is written here. Not touched
 * when reached or cancelled (the cluster may be gone by then). */
static void
orphan_done(void *arg, bool unreached)
{
    struct orphan *o = arg;
    if (o && unreached && !o->cl->closing)
        registry_emit_event(o->cl, "offline", o->device, o->client_id, o->username, o->node, "",
                            o->channel_id, "node_down");
    orphan_free(o);
}

/* The claim is recorded (and the session, if any, is here): CONNACK. */
static void
claim_finish(void *arg)
{
    struct claim_ctx *x = arg;
    struct cluster *cl = x->cl;
    if (x->token) {
        const struct cluster_pending_watch *w = cl->pending_watch;
        if (w && !cl->closing)
            w->hint(w->ctx, x->channel, x->pending_mark, x->pending);
        broker_claim_done(x->token, true);
        /* After the takeover closed any older connection, so the stream
         * reads offline (old) then online (new). */
        if (!cl->closing)
            registry_emit_event(cl, "online", x->device, x->client_id, x->username,
                                cl->cfg->node_id, x->peer, x->channel_id, NULL);
    }
    claim_ctx_free(x);
}

/* The device's previous connection, if on another node, is closed there. */
static void
take_over(struct claim_ctx *x, const redisReply *prev)
{
    struct cluster *cl = x->cl;
    if (prev->type != REDIS_REPLY_ARRAY || prev->elements != 4)
        return;
    for (size_t i = 0; i < 4; i++)
        if (prev->element[i]->type != REDIS_REPLY_STRING)
            return;
    const char *prev_node = prev->element[0]->str;
    const char *prev_addr = prev->element[1]->str;
    unsigned long long prev_channel = strtoull(prev->element[2]->str, NULL, 10);
    if (strcmp(prev_node, cl->cfg->node_id) == 0)
        return;
    /* Connected elsewhere: that node must close its connection, but only in
     * the run that made it ("{node}/{epoch}/{channel}"). */
    const char *cid = prev->element[3]->str;
    const char *slash = strchr(cid, '/');
    uint64_t prev_epoch = slash ? strtoull(slash + 1, NULL, 10) : 0;
    log_info("device %s: taking over from node %s", x->device, prev_node);
    cl->remote_takeovers++;
    if (cl->close_remote && !cl->closing)
        cl->close_remote(cl->close_remote_ctx, prev_node, prev_addr, prev_epoch, prev_channel,
                         "takeover", orphan_done, orphan_new(cl, x, prev_node, cid));
}

static void
on_claim_reply(struct redisReply *reply, void *arg)
{
    struct claim_ctx *x = arg;
    struct cluster *cl = x->cl;
    bool ok = reply && reply->type != REDIS_REPLY_ERROR;
    struct cluster_session_owner owner;
    bool owner_known = false;
    if (ok && reply->type == REDIS_REPLY_ARRAY && reply->elements == 3) {
        take_over(x, reply->element[0]);
        owner_known = sessions_owner_parse(reply->element[1], &owner);
        if (reply->element[2]->type == REDIS_REPLY_INTEGER)
            x->pending = reply->element[2]->integer;
    }
    if (!ok && reply)
        log_warn("device %s: claim failed: %s", x->device, reply->str);
    /* A claim Redis could not answer still connects the client: the
     * registry is re-asserted when Redis is back. Always answered, so no
     * token is left behind (after shutdown the broker only frees it). */
    if (!reply)
        cl->reassert_needed = true;
    if (x->token && cl->session_prepare && !cl->closing) {
        /* The client's persistent session may be on another node, or only
         * in Redis: bring it here before CONNACK. */
        cl->session_prepare(cl->session_ctx, x->client_id, x->clean,
                            owner_known ? &owner : NULL, claim_finish, x);
        return;
    }
    claim_finish(x);
}

static enum rmq_status
send_claim(struct cluster *cl, const struct broker_client_info *info, struct claim_ctx *x,
           int script)
{
    const char *device = x->device;
    char key[CLUSTER_KEY_MAX], cid[CLUSTER_KEY_MAX];
    char chan[DECIMAL_U64_MAX], epoch[DECIMAL_U64_MAX], at[DECIMAL_U64_MAX],
        proto[DECIMAL_U64_MAX], wqos[DECIMAL_U64_MAX];
    snprintf(key, sizeof(key), "%sdev:%s", cl->cfg->prefix, device);
    decimal_u64(chan, info->channel);
    channel_id(cl, info->channel, cid, sizeof(cid));
    decimal_u64(epoch, cl->epoch);
    decimal_u64(at, info->connected_at_ms);
    decimal_u64(proto, info->protocol_level);
    decimal_u64(wqos, info->will_qos);
    const char *clean = info->clean_session ? "1" : "0";
    const char *wret = info->will_retain ? "1" : "0";
    char now[DECIMAL_U64_MAX];
    decimal_u64(now, clock_wall_ms());
    const char *argv[] = {
        key, cl->key_my_devices, cl->cfg->prefix, device, cl->cfg->node_id,
        info->client_id, now, "device", device, "client_id", info->client_id, "node", cl->cfg->node_id,
        "addr", cl->cfg->advertise, "channel", chan, "channel_id", cid, "epoch", epoch,
        "peer", info->peer, "connected_at", at,
        "username", info->username ? info->username : "", "proto", proto, "clean", clean,
        "will_topic", info->will_topic ? info->will_topic : "",
        "will_qos", wqos, "will_retain", wret,
        "will_payload", info->will_topic ? (const char *)info->will_payload : "",
    };
    enum { ARGC = sizeof(argv) / sizeof(argv[0]) };
    size_t lens[ARGC];
    for (size_t i = 0; i < ARGC - 1; i++)
        lens[i] = strlen(argv[i]);
    /* The will payload is binary and comes last. */
    lens[ARGC - 1] = info->will_topic ? info->will_payload_len : 0;
    return redis_link_eval(cl->redis, script, on_claim_reply, x, 2, ARGC, argv, lens);
}

static struct claim_ctx *
claim_ctx_new(struct cluster *cl, struct broker_claim *token, const char *device,
              const struct broker_client_info *info)
{
    size_t n = strlen(device) + 1;
    struct claim_ctx *x = calloc(1, sizeof(*x) + n);
    if (!x)
        return NULL;
    x->cl = cl;
    x->token = token;
    memcpy(x->device, device, n);
    channel_id(cl, info->channel, x->channel_id, sizeof(x->channel_id));
    x->client_id = strdup(info->client_id);
    x->username = info->username ? strdup(info->username) : NULL;
    x->peer = strdup(info->peer);
    x->clean = info->clean_session;
    x->channel = info->channel;
    x->pending = -1;
    if (token && cl->pending_watch)
        x->pending_mark = cl->pending_watch->mark(cl->pending_watch->ctx);
    if (!x->client_id || !x->peer || (info->username && !x->username)) {
        claim_ctx_free(x);
        return NULL;
    }
    return x;
}

void
registry_on_claim(void *ctx, struct broker_claim *token, const struct broker_client_info *info)
{
    struct cluster *cl = ctx;
    const char *device = registry_device_id(cl, info);
    struct claim_ctx *x = claim_ctx_new(cl, token, device, info);
    enum rmq_status st = x ? send_claim(cl, info, x, cl->script_claim) : RMQ_NOMEM;
    if (st == RMQ_OK)
        return;
    cl->reassert_needed = true; /* Redis down: serve now, register later */
    char cid[CLUSTER_KEY_MAX];
    channel_id(cl, info->channel, cid, sizeof(cid));
    registry_emit_event(cl, "online", device, info->client_id, info->username, cl->cfg->node_id,
                        info->peer, cid, NULL);
    claim_ctx_free(x);
    broker_claim_done(token, true);
}

/* Re-asserts one live client (after Redis came back). */
void
registry_reassert_one(void *arg, const struct broker_client_info *info)
{
    struct cluster *cl = arg;
    struct claim_ctx *x = claim_ctx_new(cl, NULL, registry_device_id(cl, info), info);
    if (x && send_claim(cl, info, x, cl->script_reassert) != RMQ_OK)
        claim_ctx_free(x);
}

/* ---- release ---- */

void
registry_on_released(void *ctx, const struct broker_client_info *info, enum close_reason reason)
{
    struct cluster *cl = ctx;
    const char *device = registry_device_id(cl, info);
    char key[CLUSTER_KEY_MAX], cid[CLUSTER_KEY_MAX];
    snprintf(key, sizeof(key), "%sdev:%s", cl->cfg->prefix, device);
    channel_id(cl, info->channel, cid, sizeof(cid));
    const char *argv[] = {key, cl->key_my_devices, cid, device, cl->cfg->node_id};
    if (redis_link_eval(cl->redis, cl->script_release, cluster_ignore_reply, NULL, 2, 5, argv,
                        NULL) != RMQ_OK)
        cl->reassert_needed = true;
    registry_emit_event(cl, "offline", device, info->client_id, info->username,
                        cl->cfg->node_id, info->peer, cid, close_reason_name(reason));
}
