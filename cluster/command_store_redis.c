/* The command store in Redis (cluster mode). Each operation is one Lua
 * script, so a change and its guard (still unfinished? still this
 * device's connection?) are atomic across nodes, and every change appends
 * an entry to the {prefix}commands stream.
 *
 * Keys (prefix P), documented in docs/redis.md:
 *   P cmd:{id}               hash, the command (fields: see hash_fields())
 *   P cmd:pending:{device}   zset (score 0, ids sort by creation) of unfinished ids
 *   P cmd:history:{device}   zset, the newest `history` ids for listing
 *   P cmd:idem:{device}:{key} string -> id, for the idempotency key's life
 *   P cmd:deadlines          zset id -> expires_ms, unfinished ids, for the sweep
 *   P commands               stream: id device status attempts node ts
 * A finished command's hash lives `retention` more; an unfinished one at
 * most ttl + its whole retry schedule + retention.
 *
 * Scripts share ARGV[1] prefix, ARGV[2] stream maxlen, ARGV[3] retention
 * ms, ARGV[4] now (wall ms). Loop thread only. */
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/command_store.h"
#include "cluster/redis_link.h"
#include "common/clock.h"
#include "common/log.h"

#define LUA_PRELUDE                                                                        \
    "local P, now = ARGV[1], tonumber(ARGV[4])\n"                                          \
    "local FINAL = {succeeded = 1, failed = 1, timed_out = 1, expired = 1, canceled = 1}\n" \
    "local function ev(id, dev, st, att, node)\n"                                          \
    "  redis.call('XADD', P .. 'commands', 'MAXLEN', '~', ARGV[2], '*', 'id', id,\n"        \
    "             'device', dev, 'status', st, 'attempts', att, 'node', node, 'ts', now)\n" \
    "end\n"                                                                                \
    "local function waiter_addr(k)\n"                                                    \
    "  local f = redis.call('HMGET', k, 'notify', 'accepted_by')\n"                        \
    "  if f[1] ~= '1' or not f[2] then return '' end\n"                                    \
    "  return redis.call('HGET', P .. 'node:' .. f[2], 'addr') or ''\n"                   \
    "end\n"                                                                                \
    "local function finish(id, st, reply)\n"                                               \
    "  local k = P .. 'cmd:' .. id\n"                                                      \
    "  local f = redis.call('HMGET', k, 'device', 'attempts', 'node')\n"                   \
    "  redis.call('HSET', k, 'status', st, 'updated_ms', now, 'next_ms', 0)\n"             \
    "  if reply then redis.call('HSET', k, 'reply', reply) end\n"                          \
    "  redis.call('ZREM', P .. 'cmd:pending:' .. f[1], id)\n"                              \
    "  redis.call('ZREM', P .. 'cmd:deadlines', id)\n"                                     \
    "  redis.call('PEXPIRE', k, ARGV[3])\n"                                                \
    "  ev(id, f[1], st, f[2], f[3] or '')\n"                                               \
    "end\n"

/* ARGV[5] id, [6] device, [7] idempotency key or '', [8] history, [9] key
 * lifetime ms, [10] accepting node, [11..] the hash's field/value pairs.
 * Returns {created 0|1, hash, {owner node, addr, channel_id}}. */
static const char create_lua[] = LUA_PRELUDE
    "local id, dev, idem, life = ARGV[5], ARGV[6], ARGV[7], ARGV[9]\n"
    "local o = redis.call('HMGET', P .. 'dev:' .. dev, 'node', 'addr', 'channel_id')\n"
    "local owner = {o[1] or '', o[2] or '', o[3] or ''}\n"
    "if idem ~= '' then\n"
    "  local ik = P .. 'cmd:idem:' .. dev .. ':' .. idem\n"
    "  local old = redis.call('GET', ik)\n"
    "  if old then\n"
    "    local h = redis.call('HGETALL', P .. 'cmd:' .. old)\n"
    "    if #h > 0 then return {0, h, owner} end\n"
    "  end\n"
    "  redis.call('SET', ik, id, 'PX', life)\n"
    "end\n"
    "local k = P .. 'cmd:' .. id\n"
    "redis.call('HSET', k, unpack(ARGV, 11))\n"
    "redis.call('PEXPIRE', k, life)\n"
    "local pk, hk = P .. 'cmd:pending:' .. dev, P .. 'cmd:history:' .. dev\n"
    "redis.call('ZADD', pk, 0, id)\n"
    "redis.call('PEXPIRE', pk, life)\n"
    "redis.call('ZADD', P .. 'cmd:deadlines', redis.call('HGET', k, 'expires_ms'), id)\n"
    "redis.call('ZADD', hk, 0, id)\n"
    "redis.call('ZREMRANGEBYRANK', hk, 0, -tonumber(ARGV[8]) - 1)\n"
    "redis.call('PEXPIRE', hk, life)\n"
    "ev(id, dev, 'queued', 0, ARGV[10])\n"
    "return {1, redis.call('HGETALL', k), owner}\n";

/* ARGV[5] id, [6] node, [7] channel_id. {1, hash} sent, {2, hash} timed
 * out, {0} gone (finished, unknown, or the device left that channel). */
static const char send_lua[] = LUA_PRELUDE
    "local id = ARGV[5]\n"
    "local k = P .. 'cmd:' .. id\n"
    "local f = redis.call('HMGET', k, 'status', 'attempts', 'retries', 'interval_ms', 'device')\n"
    "if not f[1] or FINAL[f[1]] then return {0} end\n"
    "if redis.call('HGET', P .. 'dev:' .. f[5], 'channel_id') ~= ARGV[7] then return {0} end\n"
    "local att = tonumber(f[2])\n"
    "if att >= tonumber(f[3]) + 1 then\n"
    "  finish(id, 'timed_out', nil)\n"
    "  return {2, redis.call('HGETALL', k), waiter_addr(k)}\n"
    "end\n"
    "att = att + 1\n"
    "redis.call('HSET', k, 'status', 'sent', 'attempts', att, 'node', ARGV[6],\n"
    "           'channel_id', ARGV[7], 'updated_ms', now, 'next_ms', now + tonumber(f[4]))\n"
    "ev(id, f[5], 'sent', att, ARGV[6])\n"
    "return {1, redis.call('HGETALL', k)}\n";

/* ARGV[5] id, [6] attempt. */
static const char delivered_lua[] = LUA_PRELUDE
    "local k = P .. 'cmd:' .. ARGV[5]\n"
    "local f = redis.call('HMGET', k, 'status', 'attempts', 'device', 'node')\n"
    "if f[1] ~= 'sent' or f[2] ~= ARGV[6] then return 0 end\n"
    "redis.call('HSET', k, 'status', 'delivered', 'updated_ms', now)\n"
    "ev(ARGV[5], f[3], 'delivered', f[2], f[4] or '')\n"
    "return 1\n";

/* ARGV[5] id, [6] device, [7] reply, [8] status. {1, hash} finished, {2,
 * hash} already final, {3} another device's, {0} unknown. */
static const char reply_lua[] = LUA_PRELUDE
    "local k = P .. 'cmd:' .. ARGV[5]\n"
    "local f = redis.call('HMGET', k, 'status', 'device')\n"
    "if not f[1] then return {0} end\n"
    "if f[2] ~= ARGV[6] then return {3} end\n"
    "if FINAL[f[1]] then return {2, redis.call('HGETALL', k)} end\n"
    "finish(ARGV[5], ARGV[8], ARGV[7])\n"
    "return {1, redis.call('HGETALL', k), waiter_addr(k)}\n";

/* ARGV[5] id. {1, hash} canceled, {2, hash} already final, {0} unknown. */
static const char cancel_lua[] = LUA_PRELUDE
    "local k = P .. 'cmd:' .. ARGV[5]\n"
    "local st = redis.call('HGET', k, 'status')\n"
    "if not st then return {0} end\n"
    "if FINAL[st] then return {2, redis.call('HGETALL', k)} end\n"
    "finish(ARGV[5], 'canceled', nil)\n"
    "return {1, redis.call('HGETALL', k)}\n";

/* ARGV[5] device. The unfinished commands' hashes, oldest first. */
static const char pending_lua[] = LUA_PRELUDE
    "local pk = P .. 'cmd:pending:' .. ARGV[5]\n"
    "local out = {}\n"
    "for _, id in ipairs(redis.call('ZRANGE', pk, 0, -1)) do\n"
    "  local h = redis.call('HGETALL', P .. 'cmd:' .. id)\n"
    "  local st = redis.call('HGET', P .. 'cmd:' .. id, 'status')\n"
    "  if #h == 0 or FINAL[st] then redis.call('ZREM', pk, id) else table.insert(out, h) end\n"
    "end\n"
    "return out\n";

/* ARGV[5] device, [6] cursor ('' = newest), [7] limit. {next or '', {hash...}}. */
static const char list_lua[] = LUA_PRELUDE
    "local hk, limit = P .. 'cmd:history:' .. ARGV[5], tonumber(ARGV[7])\n"
    "local from = ARGV[6] == '' and '+' or ('(' .. ARGV[6])\n"
    "local ids = redis.call('ZREVRANGEBYLEX', hk, from, '-', 'LIMIT', 0, limit + 1)\n"
    "local out, next = {}, ''\n"
    "for i, id in ipairs(ids) do\n"
    "  if i > limit then next = ids[limit]; break end\n"
    "  local h = redis.call('HGETALL', P .. 'cmd:' .. id)\n"
    "  if #h == 0 then redis.call('ZREM', hk, id) else table.insert(out, h) end\n"
    "end\n"
    "return {next, out}\n";

/* ARGV[5] limit. Expires unfinished commands past their deadline whose
 * device is away; a device that is connected has a node driving them. */
static const char sweep_lua[] = LUA_PRELUDE
    "local dk = P .. 'cmd:deadlines'\n"
    "local ids = redis.call('ZRANGEBYSCORE', dk, '-inf', now, 'LIMIT', 0, tonumber(ARGV[5]))\n"
    "for _, id in ipairs(ids) do\n"
    "  local f = redis.call('HMGET', P .. 'cmd:' .. id, 'status', 'device')\n"
    "  if not f[1] or FINAL[f[1]] then redis.call('ZREM', dk, id)\n"
    "  elseif f[1] == 'queued' or redis.call('EXISTS', P .. 'dev:' .. f[2]) == 0 then\n"
    "    finish(id, 'expired', nil)\n"
    "  else redis.call('ZREM', dk, id) end\n"
    "end\n"
    "return #ids\n";

enum script { S_CREATE, S_SEND, S_DELIVERED, S_REPLY, S_CANCEL, S_PENDING, S_LIST, S_SWEEP, S_N };

static const char *const script_bodies[S_N] = {
    [S_CREATE] = create_lua, [S_SEND] = send_lua,       [S_DELIVERED] = delivered_lua,
    [S_REPLY] = reply_lua,   [S_CANCEL] = cancel_lua,   [S_PENDING] = pending_lua,
    [S_LIST] = list_lua,     [S_SWEEP] = sweep_lua,
};

struct redis_store {
    struct command_store base;
    const struct command_store_config *cfg;
    struct redis_link *link;
    int scripts[S_N];
    char maxlen[24];
    char retention[24];
    char history[24];
};

/* ---- the hash <-> struct command ---- */

static const char *
hash_get(const redisReply *h, const char *field)
{
    for (size_t i = 0; h && h->type == REDIS_REPLY_ARRAY && i + 1 < h->elements; i += 2) {
        const redisReply *k = h->element[i], *v = h->element[i + 1];
        if (k->type == REDIS_REPLY_STRING && strcmp(k->str, field) == 0)
            return v->type == REDIS_REPLY_STRING ? v->str : NULL;
    }
    return NULL;
}

static uint64_t
hash_u64(const redisReply *h, const char *field)
{
    const char *v = hash_get(h, field);
    return v ? strtoull(v, NULL, 10) : 0;
}

static char *
hash_dup(const redisReply *h, const char *field, bool empty_is_null)
{
    const char *v = hash_get(h, field);
    if (!v || (empty_is_null && !*v))
        return NULL;
    return strdup(v);
}

/* RMQ_INVALID if the hash is not a command (e.g. expired meanwhile). */
static enum rmq_status
parse_command(const redisReply *h, struct command *c)
{
    memset(c, 0, sizeof(*c));
    const char *id = hash_get(h, "id"), *status = hash_get(h, "status");
    if (!id || strlen(id) != COMMAND_ID_LEN || !command_status_parse(status, &c->status))
        return RMQ_INVALID;
    memcpy(c->id, id, COMMAND_ID_LEN + 1);
    c->attempts = (uint32_t)hash_u64(h, "attempts");
    c->retries = (uint32_t)hash_u64(h, "retries");
    c->qos = (uint8_t)hash_u64(h, "qos");
    c->interval_ms = hash_u64(h, "interval_ms");
    c->ttl_ms = hash_u64(h, "ttl_ms");
    c->created_ms = hash_u64(h, "created_ms");
    c->updated_ms = hash_u64(h, "updated_ms");
    c->expires_ms = hash_u64(h, "expires_ms");
    c->next_ms = hash_u64(h, "next_ms");
    c->device = hash_dup(h, "device", false);
    c->payload = hash_dup(h, "payload", false);
    c->idempotency_key = hash_dup(h, "idem", true);
    c->reply = hash_dup(h, "reply", true);
    c->node = hash_dup(h, "node", true);
    c->accepted_by = hash_dup(h, "accepted_by", true);
    c->channel_id = hash_dup(h, "channel_id", true);
    c->notify = hash_u64(h, "notify") != 0;
    if (!c->device || !c->payload) {
        command_clear(c);
        return RMQ_NOMEM;
    }
    return RMQ_OK;
}

static const char *
elem_str(const redisReply *r, size_t i)
{
    return r && r->type == REDIS_REPLY_ARRAY && i < r->elements &&
                   r->element[i]->type == REDIS_REPLY_STRING
               ? r->element[i]->str
               : "";
}

static long long
elem_int(const redisReply *r, size_t i)
{
    return r && r->type == REDIS_REPLY_ARRAY && i < r->elements &&
                   r->element[i]->type == REDIS_REPLY_INTEGER
               ? r->element[i]->integer
               : -1;
}

/* ---- calls ---- */

struct call {
    struct redis_store *rs;
    union {
        command_store_cb one;
        command_create_cb create;
        command_json_cb json;
        command_many_cb many;
    } cb;
    void *arg;
};

static struct call *
call_new(struct redis_store *rs, void *arg)
{
    struct call *c = calloc(1, sizeof(*c));
    if (c) {
        c->rs = rs;
        c->arg = arg;
    }
    return c;
}

/* Runs script with the shared ARGV[1..4] followed by extra; cb gets c.
 * RMQ_IO if the link is down: then cb will not run and c is the caller's. */
static enum rmq_status
run(struct redis_store *rs, enum script which, uint64_t now_ms, redis_link_cb cb, void *c,
    int extra_argc, const char **extra, const size_t *extra_lens)
{
    enum { MAX = 64 };
    const char *argv[MAX];
    size_t lens[MAX];
    char now[24];
    snprintf(now, sizeof(now), "%llu", (unsigned long long)now_ms);
    int argc = 0;
    argv[argc++] = rs->cfg->prefix;
    argv[argc++] = rs->maxlen;
    argv[argc++] = rs->retention;
    argv[argc++] = now;
    for (int i = 0; i < 4; i++)
        lens[i] = strlen(argv[i]);
    for (int i = 0; i < extra_argc && argc < MAX; i++, argc++) {
        argv[argc] = extra[i];
        lens[argc] = extra_lens ? extra_lens[i] : strlen(extra[i]);
    }
    enum rmq_status st = redis_link_eval(rs->link, rs->scripts[which], cb, c, 0, argc, argv, lens);
    return st == RMQ_AGAIN ? RMQ_IO : st;
}

/* A reply that carries one command hash at index 1 of an array whose
 * first element is a code; answers the caller with the code mapped. */
static void
answer_one(struct call *c, const redisReply *r, const enum rmq_status *codes, size_t ncodes)
{
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        if (r && r->type == REDIS_REPLY_ERROR)
            log_warn("command store: %s", r->str);
        c->cb.one(RMQ_IO, NULL, c->arg);
        return;
    }
    long long code = elem_int(r, 0);
    enum rmq_status st = code >= 0 && (size_t)code < ncodes ? codes[code] : RMQ_IO;
    struct command cmd;
    if (r->elements > 1 && parse_command(r->element[1], &cmd) == RMQ_OK) {
        const char *addr = elem_str(r, 2);
        if (*addr && !(cmd.notify_addr = strdup(addr)))
            log_warn("command %s: out of memory; a waiting request learns its end late", cmd.id);
        c->cb.one(st, &cmd, c->arg);
        command_clear(&cmd);
    } else {
        c->cb.one(st, NULL, c->arg);
    }
}

static void
on_create(struct redisReply *r, void *arg)
{
    struct call *c = arg;
    struct command cmd;
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
        parse_command(r->element[1], &cmd) != RMQ_OK) {
        if (r && r->type == REDIS_REPLY_ERROR)
            log_warn("command store: create: %s", r->str);
        c->cb.create(RMQ_IO, false, NULL, NULL, c->arg);
        free(c);
        return;
    }
    struct command_owner owner = {elem_str(r->element[2], 0), elem_str(r->element[2], 1),
                                  elem_str(r->element[2], 2)};
    c->cb.create(RMQ_OK, elem_int(r, 0) == 1, &cmd, &owner, c->arg);
    command_clear(&cmd);
    free(c);
}

/* The hash's fields, as create writes them. */
static void
redis_create(struct command_store *s, const struct command *cmd, command_create_cb cb, void *arg)
{
    struct redis_store *rs = (struct redis_store *)s;
    struct call *c = call_new(rs, arg);
    if (!c) {
        cb(RMQ_NOMEM, false, NULL, NULL, arg);
        return;
    }
    c->cb.create = cb;
    char att[12], ret[12], qos[4], ival[24], ttl[24], created[24], expires[24], life[24];
    snprintf(att, sizeof(att), "%u", (unsigned)cmd->attempts);
    snprintf(ret, sizeof(ret), "%u", (unsigned)cmd->retries);
    snprintf(qos, sizeof(qos), "%u", (unsigned)cmd->qos);
    snprintf(ival, sizeof(ival), "%llu", (unsigned long long)cmd->interval_ms);
    snprintf(ttl, sizeof(ttl), "%llu", (unsigned long long)cmd->ttl_ms);
    snprintf(created, sizeof(created), "%llu", (unsigned long long)cmd->created_ms);
    snprintf(expires, sizeof(expires), "%llu", (unsigned long long)cmd->expires_ms);
    /* Long enough for the TTL, every send and its wait, then retention. */
    snprintf(life, sizeof(life), "%llu",
             (unsigned long long)(cmd->ttl_ms + (cmd->retries + 1ull) * cmd->interval_ms +
                                  rs->cfg->retention_ms));
    const char *idem = cmd->idempotency_key ? cmd->idempotency_key : "";
    const char *argv[] = {
        cmd->id, cmd->device, idem, rs->history, life, cmd->accepted_by,
        "id", cmd->id, "device", cmd->device, "status", command_status_name(cmd->status),
        "attempts", att, "retries", ret, "qos", qos, "interval_ms", ival, "ttl_ms", ttl,
        "payload", cmd->payload, "idem", idem, "notify", cmd->notify ? "1" : "0",
        "node", cmd->node, "accepted_by",
        cmd->accepted_by, "created_ms", created, "updated_ms", created, "expires_ms", expires,
        "next_ms", "0",
    };
    enum rmq_status st = run(rs, S_CREATE, cmd->created_ms, on_create, c,
                             (int)(sizeof(argv) / sizeof(argv[0])), argv, NULL);
    if (st != RMQ_OK) {
        free(c);
        cb(st, false, NULL, NULL, arg);
    }
}

static void
on_get(struct redisReply *r, void *arg)
{
    struct call *c = arg;
    struct command cmd;
    if (!r || r->type != REDIS_REPLY_ARRAY)
        c->cb.one(RMQ_IO, NULL, c->arg);
    else if (r->elements == 0 || parse_command(r, &cmd) != RMQ_OK)
        c->cb.one(RMQ_NOT_FOUND, NULL, c->arg);
    else {
        c->cb.one(RMQ_OK, &cmd, c->arg);
        command_clear(&cmd);
    }
    free(c);
}

static void
redis_get(struct command_store *s, const char *id, command_store_cb cb, void *arg)
{
    struct redis_store *rs = (struct redis_store *)s;
    char key[512];
    snprintf(key, sizeof(key), "%scmd:%s", rs->cfg->prefix, id);
    struct call *c = call_new(rs, arg);
    if (!c) {
        cb(RMQ_NOMEM, NULL, arg);
        return;
    }
    c->cb.one = cb;
    const char *argv[] = {"HGETALL", key};
    enum rmq_status st = redis_link_argv(rs->link, on_get, c, 2, argv, NULL);
    if (st != RMQ_OK) {
        free(c);
        cb(st == RMQ_AGAIN ? RMQ_IO : st, NULL, arg);
    }
}

static void
on_list(struct redisReply *r, void *arg)
{
    struct call *c = arg;
    json_t *list = json_array(), *out = json_object();
    enum rmq_status st = RMQ_OK;
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[1]->type != REDIS_REPLY_ARRAY)
        st = RMQ_IO;
    for (size_t i = 0; st == RMQ_OK && list && i < r->element[1]->elements; i++) {
        struct command cmd;
        if (parse_command(r->element[1]->element[i], &cmd) == RMQ_OK) {
            json_array_append_new(list, command_json(&cmd));
            command_clear(&cmd);
        }
    }
    if (st == RMQ_OK && (!list || !out))
        st = RMQ_NOMEM;
    if (st != RMQ_OK) {
        json_decref(list);
        json_decref(out);
        c->cb.json(st, NULL, c->arg);
    } else {
        const char *next = elem_str(r, 0);
        json_object_set_new(out, "commands", list);
        json_object_set_new(out, "next", *next ? json_string(next) : json_null());
        c->cb.json(RMQ_OK, out, c->arg);
    }
    free(c);
}

static void
redis_list(struct command_store *s, const char *device, const char *cursor, size_t limit,
           command_json_cb cb, void *arg)
{
    struct redis_store *rs = (struct redis_store *)s;
    if (cursor && strlen(cursor) != COMMAND_ID_LEN) {
        cb(RMQ_INVALID, NULL, arg);
        return;
    }
    struct call *c = call_new(rs, arg);
    if (!c) {
        cb(RMQ_NOMEM, NULL, arg);
        return;
    }
    c->cb.json = cb;
    char lim[24];
    snprintf(lim, sizeof(lim), "%zu", limit);
    const char *argv[] = {device, cursor ? cursor : "", lim};
    enum rmq_status st = run(rs, S_LIST, clock_wall_ms(), on_list, c, 3, argv, NULL);
    if (st != RMQ_OK) {
        free(c);
        cb(st, NULL, arg);
    }
}

static const enum rmq_status cancel_codes[] = {RMQ_NOT_FOUND, RMQ_OK, RMQ_EXISTS};

static void
on_cancel(struct redisReply *r, void *arg)
{
    answer_one(arg, r, cancel_codes, 3);
    free(arg);
}

/* Sends one-id scripts whose answer maps through answer_one. */
static void
one_id(struct redis_store *rs, enum script which, redis_link_cb on_reply, uint64_t now,
       command_store_cb cb, void *arg, int argc, const char **argv)
{
    struct call *c = call_new(rs, arg);
    if (!c) {
        cb(RMQ_NOMEM, NULL, arg);
        return;
    }
    c->cb.one = cb;
    enum rmq_status st = run(rs, which, now, on_reply, c, argc, argv, NULL);
    if (st != RMQ_OK) {
        free(c);
        cb(st, NULL, arg);
    }
}

static void
redis_cancel(struct command_store *s, const char *id, uint64_t now, command_store_cb cb,
             void *arg)
{
    const char *argv[] = {id};
    one_id((struct redis_store *)s, S_CANCEL, on_cancel, now, cb, arg, 1, argv);
}

static const enum rmq_status send_codes[] = {RMQ_NOT_FOUND, RMQ_OK, RMQ_LIMIT};

static void
on_send(struct redisReply *r, void *arg)
{
    answer_one(arg, r, send_codes, 3);
    free(arg);
}

static void
redis_send(struct command_store *s, const char *id, const char *node, const char *channel_id,
           uint64_t now, command_store_cb cb, void *arg)
{
    const char *argv[] = {id, node, channel_id};
    one_id((struct redis_store *)s, S_SEND, on_send, now, cb, arg, 3, argv);
}

static void
ignore_reply(struct redisReply *r, void *arg)
{
    if (r && r->type == REDIS_REPLY_ERROR)
        log_warn("command store: %s", r->str);
}

static void
redis_delivered(struct command_store *s, const char *id, uint32_t attempt, uint64_t now)
{
    struct redis_store *rs = (struct redis_store *)s;
    char att[12];
    snprintf(att, sizeof(att), "%u", (unsigned)attempt);
    const char *argv[] = {id, att};
    run(rs, S_DELIVERED, now, ignore_reply, NULL, 2, argv, NULL);
}

static const enum rmq_status reply_codes[] = {RMQ_NOT_FOUND, RMQ_OK, RMQ_EXISTS, RMQ_INVALID};

static void
on_reply(struct redisReply *r, void *arg)
{
    answer_one(arg, r, reply_codes, 4);
    free(arg);
}

static void
redis_reply(struct command_store *s, const char *id, const char *device, const char *reply,
            enum command_status status, uint64_t now, command_store_cb cb, void *arg)
{
    const char *argv[] = {id, device, reply, command_status_name(status)};
    one_id((struct redis_store *)s, S_REPLY, on_reply, now, cb, arg, 4, argv);
}

static void
on_pending(struct redisReply *r, void *arg)
{
    struct call *c = arg;
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        c->cb.many(RMQ_IO, NULL, 0, c->arg);
        free(c);
        return;
    }
    struct command *cmds = calloc(r->elements ? r->elements : 1, sizeof(*cmds));
    size_t n = 0;
    for (size_t i = 0; cmds && i < r->elements; i++)
        if (parse_command(r->element[i], &cmds[n]) == RMQ_OK)
            n++;
    c->cb.many(cmds ? RMQ_OK : RMQ_NOMEM, cmds, n, c->arg);
    for (size_t i = 0; i < n; i++)
        command_clear(&cmds[i]);
    free(cmds);
    free(c);
}

static void
redis_pending(struct command_store *s, const char *device, command_many_cb cb, void *arg)
{
    struct redis_store *rs = (struct redis_store *)s;
    struct call *c = call_new(rs, arg);
    if (!c) {
        cb(RMQ_NOMEM, NULL, 0, arg);
        return;
    }
    c->cb.many = cb;
    const char *argv[] = {device};
    enum rmq_status st = run(rs, S_PENDING, clock_wall_ms(), on_pending, c, 1, argv, NULL);
    if (st != RMQ_OK) {
        free(c);
        cb(st, NULL, 0, arg);
    }
}

static void
redis_sweep(struct command_store *s, uint64_t now)
{
    struct redis_store *rs = (struct redis_store *)s;
    if (!redis_link_is_up(rs->link))
        return;
    const char *argv[] = {"200"};
    run(rs, S_SWEEP, now, ignore_reply, NULL, 1, argv, NULL);
}

static void
redis_free(struct command_store *s)
{
    free(s);
}

static const struct command_store_ops redis_ops = {
    .create = redis_create,
    .get = redis_get,
    .list = redis_list,
    .cancel = redis_cancel,
    .send = redis_send,
    .delivered = redis_delivered,
    .reply = redis_reply,
    .pending = redis_pending,
    .sweep = redis_sweep,
    .free = redis_free,
};

struct command_store *
command_store_redis_new(struct redis_link *link, const struct command_store_config *cfg)
{
    struct redis_store *rs = calloc(1, sizeof(*rs));
    if (!rs)
        return NULL;
    rs->base.ops = &redis_ops;
    rs->cfg = cfg;
    rs->link = link;
    for (int i = 0; i < S_N; i++)
        rs->scripts[i] = redis_link_script(link, script_bodies[i]);
    snprintf(rs->maxlen, sizeof(rs->maxlen), "%lld", (long long)cfg->stream_maxlen);
    snprintf(rs->retention, sizeof(rs->retention), "%llu",
             (unsigned long long)cfg->retention_ms);
    snprintf(rs->history, sizeof(rs->history), "%u", (unsigned)cfg->history);
    return &rs->base;
}
