/* Persistent sessions across nodes; see sessions.h.
 *
 * Before CONNACK of a client (clean session 0) that has no session here,
 * prepare() asks Redis which node holds its session. A live holder is asked
 * for a hand-over; a dead one (or a failed hand-over) means the copy in
 * Redis is loaded. Either way the state is imported into the broker as an
 * offline session, which the CONNECT then continues (session present 1).
 * A clean-session CONNECT instead tells the holder to drop the session and
 * deletes the copy.
 *
 * A hand-over body: u32 subscription count, then per subscription u8 QoS,
 * u16 length, the filter; then the messages as forward frames.
 *
 * Every pending prepare is in a list: sessions_stop() lets them all go on
 * (so nothing waits on a node that is stopping); their late callbacks then
 * only free them. Loop thread only, except the route handlers, which only
 * post jobs.
 *
 * Keeping each session's copy in Redis up to date is in session_copy.c;
 * the state both files share in sessions_internal.h. */
#include "cluster/sessions.h"

#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "broker/broker.h"
#include "broker/broker_api.h"
#include "cluster/cluster.h"
#include "cluster/forward_codec.h"
#include "cluster/redis_link.h"
#include "cluster/routes.h"
#include "cluster/sessions_internal.h"
#include "common/clock.h"
#include "common/log.h"
#include "http/http_server.h"
#include "http/metrics.h"
#include "http/peer_client.h"

#define STATE_TYPE "application/x-relaymq-session"
#define GHOST_MS 1000 /* a handed-over session's messages are redirected this long */

/* ARGV: prefix, client, now. See SESSIONS_OWNER_LUA. */
static const char owner_lua[] =
    SESSIONS_OWNER_LUA "return session_owner(ARGV[1], ARGV[2], tonumber(ARGV[3]))\n";

/* ARGV: prefix, client. {subs as filter, qos, ...}, {queued frames}. */
static const char load_lua[] =
    "local k = ARGV[1] .. 'sess:' .. ARGV[2]\n"
    "return {redis.call('HGETALL', k .. ':subs'), redis.call('LRANGE', k .. ':queue', 0, -1)}\n";

/* ARGV: prefix, client, node, now, keep, life: the session is online on node;
 * its queue is dropped (the messages are in the node's memory now) unless
 * keep is '1' (durable sessions: the queue is every message still owed).
 * Returns {previous holder, its address} if another node held it. */
static const char online_lua[] =
    "local k = ARGV[1] .. 'sess:' .. ARGV[2]\n"
    "local old = redis.call('HGET', k, 'node')\n"
    "local out = {}\n"
    "if old and old ~= ARGV[3] then\n"
    "  redis.call('SREM', ARGV[1] .. 'node:' .. old .. ':sessions', ARGV[2])\n"
    "  out = {old, redis.call('HGET', ARGV[1] .. 'node:' .. old, 'addr') or ''}\n"
    "end\n"
    "redis.call('HSET', k, 'node', ARGV[3], 'life', ARGV[6], 'online', '1', 'updated_ms',\n"
    "           ARGV[4])\n"
    "if ARGV[5] ~= '1' then redis.call('DEL', k .. ':queue') end\n"
    "redis.call('SADD', ARGV[1] .. 'node:' .. ARGV[3] .. ':sessions', ARGV[2])\n"
    "return out\n";

/* ARGV: prefix, the node that left, this node, now, since. Moves the
 * offline sessions it held to this node (the first survivor to ask gets
 * them all) and returns their client ids. since > 0: the node restarted
 * then (its new run's epoch), and the sessions whose life is that run are
 * the new life's (a client may have connected the moment it came up):
 * they stay. The life is compared, not a time, so the two runs' clocks
 * need not agree. */
static const char adopt_lua[] =
    "local src = ARGV[1] .. 'node:' .. ARGV[2] .. ':sessions'\n"
    "local since = tonumber(ARGV[5]) or 0\n"
    "local out = {}\n"
    "for _, c in ipairs(redis.call('SMEMBERS', src)) do\n"
    "  local k = ARGV[1] .. 'sess:' .. c\n"
    "  local h = redis.call('HMGET', k, 'node', 'life')\n"
    "  if h[1] ~= ARGV[2] then\n"
    "    redis.call('SREM', src, c)\n"
    "  elseif since == 0 or h[2] ~= ARGV[5] then\n"
    "    redis.call('HSET', k, 'node', ARGV[3], 'online', '0', 'updated_ms', ARGV[4])\n"
    "    redis.call('HDEL', k, 'life')\n"
    "    redis.call('SADD', ARGV[1] .. 'node:' .. ARGV[3] .. ':sessions', c)\n"
    "    redis.call('SREM', src, c)\n"
    "    table.insert(out, c)\n"
    "  end\n"
    "end\n"
    "return out\n";

/* ARGV: prefix, client, node: forget the session everywhere. */
static const char end_lua[] =
    "local k = ARGV[1] .. 'sess:' .. ARGV[2]\n"
    "local old = redis.call('HGET', k, 'node')\n"
    "if old then redis.call('SREM', ARGV[1] .. 'node:' .. old .. ':sessions', ARGV[2]) end\n"
    "redis.call('SREM', ARGV[1] .. 'node:' .. ARGV[3] .. ':sessions', ARGV[2])\n"
    "redis.call('DEL', k, k .. ':subs', k .. ':queue')\n"
    "return 1\n";

struct prep {
    struct prep *next, *prev;
    struct sessions *sm;
    void (*done)(void *token);
    void *token;
    bool finished; /* done() was called (by the flow or by sessions_stop) */
    bool clean;
    char *holder; /* the node that held it while it may be dead, or NULL */
    char *origin; /* the dead node it was restored from lately (Redis says), or NULL */
    uint64_t origin_ms; /* when (wall clock) */
    char client_id[];
};

/* ---- state encoding ---- */

uint8_t *
buf_room(struct buf *b, size_t n)
{
    if (b->failed)
        return NULL;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n)
            cap *= 2;
        uint8_t *d = realloc(b->data, cap);
        if (!d) {
            b->failed = true;
            return NULL;
        }
        b->data = d;
        b->cap = cap;
    }
    uint8_t *p = b->data + b->len;
    b->len += n;
    return p;
}

struct encoder {
    struct buf out;
    uint32_t subs;
};

static void
enc_sub(void *arg, const char *filter, size_t len, uint8_t qos)
{
    struct encoder *e = arg;
    uint8_t *p = buf_room(&e->out, 3 + len);
    if (!p)
        return;
    p[0] = qos;
    p[1] = (uint8_t)(len >> 8);
    p[2] = (uint8_t)len;
    memcpy(p + 3, filter, len);
    e->subs++;
}

static void
enc_msg(void *arg, const struct broker_message *m)
{
    struct encoder *e = arg;
    struct forward_frame f = {.topic = m->topic,
                              .topic_len = m->topic_len,
                              .payload = m->payload,
                              .payload_len = m->payload_len,
                              .qos = m->qos,
                              .retain = m->retain};
    uint8_t *p = buf_room(&e->out, forward_frame_size(m->topic_len, m->payload_len));
    if (p)
        forward_frame_write(p, &f);
}

/* The session as a hand-over body (malloc'd), or RMQ_NOT_FOUND / RMQ_NOMEM. */
static enum rmq_status
encode_state(struct broker *b, const char *client_id, uint8_t **out, size_t *len)
{
    struct encoder e = {0};
    buf_room(&e.out, 4);
    enum rmq_status st = broker_api_session_walk(b, client_id, enc_sub, NULL, &e);
    if (st == RMQ_OK) /* subscriptions first, then messages */
        st = broker_api_session_walk(b, client_id, NULL, enc_msg, &e);
    if (st == RMQ_OK && e.out.failed)
        st = RMQ_NOMEM;
    if (st != RMQ_OK) {
        free(e.out.data);
        return st;
    }
    e.out.data[0] = (uint8_t)(e.subs >> 24);
    e.out.data[1] = (uint8_t)(e.subs >> 16);
    e.out.data[2] = (uint8_t)(e.subs >> 8);
    e.out.data[3] = (uint8_t)e.subs;
    *out = e.out.data;
    *len = e.out.len;
    return RMQ_OK;
}

/* A decoded state: arrays pointing into the encoded bytes. */
struct state {
    const char **filters;
    size_t *filter_lens;
    uint8_t *qos;
    size_t sub_count;
    struct broker_message *msgs;
    size_t msg_count, msg_cap;
};

static void
state_clear(struct state *s)
{
    free(s->filters);
    free(s->filter_lens);
    free(s->qos);
    free(s->msgs);
    memset(s, 0, sizeof(*s));
}

static bool
state_alloc_subs(struct state *s, size_t n)
{
    s->filters = calloc(n ? n : 1, sizeof(*s->filters));
    s->filter_lens = calloc(n ? n : 1, sizeof(*s->filter_lens));
    s->qos = calloc(n ? n : 1, 1);
    return s->filters && s->filter_lens && s->qos;
}

static bool
state_add_frame(struct state *s, const struct forward_frame *f)
{
    if (s->msg_count == s->msg_cap) {
        size_t cap = s->msg_cap ? s->msg_cap * 2 : 16;
        struct broker_message *m = realloc(s->msgs, cap * sizeof(*m));
        if (!m)
            return false;
        s->msgs = m;
        s->msg_cap = cap;
    }
    s->msgs[s->msg_count++] = (struct broker_message){f->topic, f->topic_len, f->payload,
                                                      f->payload_len, f->qos, f->retain};
    return true;
}

static enum rmq_status
decode_state(const uint8_t *data, size_t len, struct state *s)
{
    memset(s, 0, sizeof(*s));
    if (len < 4)
        return RMQ_PROTOCOL;
    size_t n = (size_t)data[0] << 24 | (size_t)data[1] << 16 | (size_t)data[2] << 8 | data[3];
    size_t pos = 4;
    if (n > len || !state_alloc_subs(s, n))
        goto fail;
    for (size_t i = 0; i < n; i++) {
        if (len - pos < 3)
            goto fail;
        size_t fl = (size_t)data[pos + 1] << 8 | data[pos + 2];
        if (data[pos] > 2 || len - pos - 3 < fl)
            goto fail;
        s->qos[i] = data[pos];
        s->filters[i] = (const char *)data + pos + 3;
        s->filter_lens[i] = fl;
        pos += 3 + fl;
    }
    s->sub_count = n;
    struct forward_frame f;
    enum rmq_status st;
    while ((st = forward_frame_next(data, len, &pos, &f)) == RMQ_OK)
        if (!state_add_frame(s, &f))
            goto fail;
    if (st == RMQ_NOT_FOUND)
        return RMQ_OK;
fail:
    state_clear(s);
    return RMQ_PROTOCOL;
}

/* ---- prepare (before CONNACK) ---- */

static void
prep_finish(struct prep *p)
{
    if (p->finished)
        return;
    p->finished = true;
    p->done(p->token);
}

static void
prep_free(struct prep *p)
{
    prep_finish(p);
    if (p->prev)
        p->prev->next = p->next;
    else
        p->sm->preps = p->next;
    if (p->next)
        p->next->prev = p->prev;
    free(p->holder);
    free(p->origin);
    free(p);
}

/* origin: the dead node the session comes from (NULL: none), since when
 * (0: now): messages rescued from that node's undelivered batches are for
 * it. A new origin (since 0) is noted in Redis for the node that takes the
 * session next. */
static void
import(struct sessions *sm, const char *client_id, const struct state *s, const char *origin,
       uint64_t since_ms)
{
    if (broker_api_session_import(sm->broker, client_id, s->filters, s->filter_lens, s->qos,
                                  s->sub_count, s->msgs, s->msg_count) != RMQ_OK ||
        !origin)
        return;
    uint64_t since = since_ms ? since_ms : clock_wall_ms();
    broker_api_session_set_origin(sm->broker, client_id, origin, since);
    if (since_ms)
        return;
    char skey[KEY_MAX], when[24];
    snprintf(skey, sizeof(skey), "%ssess:%s", sm->cfg->prefix, client_id);
    snprintf(when, sizeof(when), "%" PRIu64, since);
    const char *hset[] = {"HSET", skey, "origin", origin, "origin_ms", when};
    send_argv(sm, 6, hset, NULL);
}

/* The reply of load_lua as a state (pointing into the reply). */
static bool
state_from_redis(const struct redisReply *r, struct state *s)
{
    memset(s, 0, sizeof(*s));
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_ARRAY || r->element[1]->type != REDIS_REPLY_ARRAY)
        return false;
    const redisReply *subs = r->element[0], *queue = r->element[1];
    if (!state_alloc_subs(s, subs->elements / 2))
        return false;
    for (size_t i = 0; i + 1 < subs->elements; i += 2) {
        const redisReply *f = subs->element[i], *q = subs->element[i + 1];
        if (f->type != REDIS_REPLY_STRING || q->type != REDIS_REPLY_STRING || q->len != 1 ||
            q->str[0] < '0' || q->str[0] > '2')
            continue;
        s->filters[s->sub_count] = f->str;
        s->filter_lens[s->sub_count] = f->len;
        s->qos[s->sub_count++] = (uint8_t)(q->str[0] - '0');
    }
    for (size_t i = 0; i < queue->elements; i++) {
        const redisReply *e = queue->element[i];
        struct forward_frame f;
        size_t pos = 0;
        if (e->type == REDIS_REPLY_STRING &&
            forward_frame_next((const uint8_t *)e->str, e->len, &pos, &f) == RMQ_OK &&
            !state_add_frame(s, &f))
            break;
    }
    return true;
}

static void
on_loaded(struct redisReply *r, void *arg)
{
    struct prep *p = arg;
    struct sessions *sm = p->sm;
    struct state s;
    if (p->finished) {
        prep_free(p);
        return;
    }
    if (!state_from_redis(r, &s)) {
        sm->redis_errors++;
        log_warn("client %s: its session could not be read from Redis; starting empty",
                 p->client_id);
    } else if (s.sub_count || s.msg_count) {
        if (p->holder)
            import(sm, p->client_id, &s, p->holder, 0);
        else
            import(sm, p->client_id, &s, p->origin, p->origin_ms);
        sm->restored++;
    }
    state_clear(&s);
    prep_free(p);
}

static void
load_from_redis(struct prep *p)
{
    struct sessions *sm = p->sm;
    const char *argv[] = {sm->cfg->prefix, p->client_id};
    if (redis_link_eval(sm->link, sm->script_load, on_loaded, p, 0, 2, argv, NULL) != RMQ_OK)
        prep_free(p);
}

static void
on_handover(const struct peer_result *res, void *arg)
{
    struct prep *p = arg;
    struct sessions *sm = p->sm;
    if (p->finished) {
        prep_free(p);
        return;
    }
    struct state s;
    if (res->error == PEER_OK && res->status == 200 &&
        decode_state(res->raw, res->raw_len, &s) == RMQ_OK) {
        import(sm, p->client_id, &s, p->origin, p->origin_ms);
        state_clear(&s);
        sm->handed_in++;
        prep_free(p);
        return;
    }
    if (res->error == PEER_OK && res->status == 200)
        sm->bad_state++;
    /* The holder could not give it (gone meanwhile, unreachable): the copy
     * in Redis is the best there is. */
    log_info("client %s: hand-over failed (%s, HTTP %d); restoring the session from Redis",
             p->client_id, peer_error_name(res->error), res->status);
    if (res->error == PEER_OK) { /* it answered: alive, the session is not a dead node's */
        free(p->holder);
        p->holder = NULL;
    }
    load_from_redis(p);
}

void
sessions_ignore_answer(const struct peer_result *res, void *arg)
{
    (void)res;
    (void)arg;
}

bool
sessions_owner_parse(const struct redisReply *r, struct cluster_session_owner *out)
{
    *out = (struct cluster_session_owner){.addr = "", .origin = ""};
    if (!r || r->type != REDIS_REPLY_ARRAY || (r->elements != 0 && r->elements != 4))
        return false;
    if (r->elements == 0)
        return true; /* no session anywhere */
    for (size_t i = 0; i < 4; i++)
        if (r->element[i]->type != REDIS_REPLY_STRING)
            return false;
    out->node = r->element[0]->str;
    out->addr = r->element[1]->str;
    out->origin = r->element[2]->str;
    out->origin_ms = strtoull(r->element[3]->str, NULL, 10);
    return true;
}

/* Where the session is is known (o->node NULL: nowhere): a clean start
 * drops it, otherwise it is fetched from its holder or from Redis. */
static void
locate(struct prep *p, const struct cluster_session_owner *o)
{
    struct sessions *sm = p->sm;
    if (!o->node) {
        prep_free(p); /* no copy anywhere: a new session */
        return;
    }
    const char *node = o->node, *addr = o->addr;
    if (*o->origin) {
        p->origin = strdup(o->origin); /* NULL without memory: no rescue */
        p->origin_ms = o->origin_ms;
    }
    bool here = node && strcmp(node, sm->cfg->node_id) == 0;
    char path[KEY_MAX];
    char *escaped = peer_client_escape(p->client_id);
    if (p->clean) {
        /* A clean start: the old session goes, wherever it is. */
        if (!here && addr && *addr && sm->peers && escaped) {
            snprintf(path, sizeof(path), "/internal/v1/sessions/%s/drop", escaped);
            if (peer_client_request(sm->peers, addr, "POST", path, NULL, sessions_ignore_answer,
                                    NULL) == RMQ_OK)
                sm->dropped_remote++;
        }
        forget_everywhere(sm, p->client_id);
        free(escaped);
        prep_free(p);
        return;
    }
    if (!here && node)
        p->holder = strdup(node); /* NULL without memory: no rescued messages */
    if (!here && addr && *addr && sm->peers && escaped) {
        snprintf(path, sizeof(path), "/internal/v1/sessions/%s/handover", escaped);
        free(escaped);
        /* Our address: the holder redirects what it still receives for the
         * session here until the other nodes learn its new route. */
        json_t *body = json_pack("{s:s}", "addr", sm->cfg->advertise ? sm->cfg->advertise : "");
        enum rmq_status st =
            body ? peer_client_request(sm->peers, addr, "POST", path, body, on_handover, p)
                 : RMQ_NOMEM;
        json_decref(body);
        if (st == RMQ_OK)
            return;
    } else {
        free(escaped);
    }
    load_from_redis(p); /* holder dead, unknown, or this node in a past life */
}

static void
on_owner(struct redisReply *r, void *arg)
{
    struct prep *p = arg;
    struct cluster_session_owner o;
    if (p->finished || !sessions_owner_parse(r, &o)) {
        prep_free(p); /* Redis away: whatever is here (nothing) */
        return;
    }
    locate(p, &o);
}

static void
prepare(void *ctx, const char *client_id, bool clean, const struct cluster_session_owner *owner,
        void (*done)(void *token), void *token)
{
    struct sessions *sm = ctx;
    if (broker_api_has_persistent_session(sm->broker, client_id)) {
        done(token); /* here already; the CONNECT continues or cleans it */
        return;
    }
    size_t n = strlen(client_id) + 1;
    struct prep *p = calloc(1, sizeof(*p) + n);
    if (!p) {
        done(token);
        return;
    }
    *p = (struct prep){.sm = sm, .done = done, .token = token, .clean = clean};
    memcpy(p->client_id, client_id, n);
    p->next = sm->preps;
    if (sm->preps)
        sm->preps->prev = p;
    sm->preps = p;
    if (owner) {
        locate(p, owner);
        return;
    }
    char now[24];
    snprintf(now, sizeof(now), "%" PRIu64, clock_wall_ms());
    const char *argv[] = {sm->cfg->prefix, client_id, now};
    if (redis_link_eval(sm->link, sm->script_owner, on_owner, p, 0, 3, argv, NULL) != RMQ_OK)
        prep_free(p); /* Redis away: whatever is here (nothing) */
}

/* ---- adopting the sessions of a node that left ---- */

struct adopt_ctx {
    struct sessions *sm;
    const char *node; /* the node that left: after client_id, same block */
    char client_id[];
};

struct adoption {
    struct sessions *sm;
    char node[];
};

static void
on_adopt_loaded(struct redisReply *r, void *arg)
{
    struct adopt_ctx *x = arg;
    struct sessions *sm = x->sm;
    struct state s;
    if (!state_from_redis(r, &s))
        sm->redis_errors++;
    else if (!broker_api_has_persistent_session(sm->broker, x->client_id)) {
        import(sm, x->client_id, &s, x->node, 0); /* a restore without a CONNECT */
        sm->adopted++;
    }
    state_clear(&s);
    free(x);
}

/* Loads each adopted session; it remembers the node it came from. */
static void
on_adopted(struct redisReply *r, void *arg)
{
    struct adoption *a = arg;
    struct sessions *sm = a->sm;
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        free(a);
        return;
    }
    if (r->elements)
        log_info("sessions: adopting %zu offline session(s) of a node that left", r->elements);
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *c = r->element[i];
        if (c->type != REDIS_REPLY_STRING)
            continue;
        size_t node_len = strlen(a->node) + 1;
        struct adopt_ctx *x = malloc(sizeof(*x) + c->len + 1 + node_len);
        if (!x)
            continue;
        x->sm = sm;
        memcpy(x->client_id, c->str, c->len + 1);
        x->node = memcpy(x->client_id + c->len + 1, a->node, node_len);
        const char *argv[] = {sm->cfg->prefix, x->client_id};
        if (redis_link_eval(sm->link, sm->script_load, on_adopt_loaded, x, 0, 2, argv, NULL) !=
            RMQ_OK)
            free(x);
    }
    free(a);
}

/* routes_on_node_left: keep its clients' offline sessions (and so their
 * routes) alive here until they come back. */
static void
on_node_left(void *ctx, const char *node, uint64_t since_ms)
{
    struct sessions *sm = ctx;
    char now[24], since[24];
    snprintf(now, sizeof(now), "%" PRIu64, clock_wall_ms());
    snprintf(since, sizeof(since), "%" PRIu64, since_ms);
    const char *argv[] = {sm->cfg->prefix, node, sm->cfg->node_id, now, since};
    size_t n = strlen(node) + 1;
    struct adoption *a = malloc(sizeof(*a) + n);
    if (!a) {
        sm->redis_errors++;
        return;
    }
    a->sm = sm;
    memcpy(a->node, node, n);
    if (redis_link_eval(sm->link, sm->script_adopt, on_adopted, a, 0, 5, argv, NULL) != RMQ_OK)
        free(a);
}

/* ---- the internal routes (the holder's side) ---- */

struct give_job {
    struct http_job base;
    bool drop;
    struct sessions *sm;
    char addr[256]; /* the asking node's internal API: a ghost points there */
    char client_id[];
};

static void
give_destroy(struct http_job *job)
{
    free(job);
}

static void
give_run(struct http_job *base)
{
    struct give_job *job = (struct give_job *)base;
    struct sessions *sm = job->sm;
    uint8_t *state = NULL;
    size_t len = 0;
    enum rmq_status st =
        job->drop ? RMQ_OK : encode_state(sm->broker, job->client_id, &state, &len);
    if (st == RMQ_OK)
        st = broker_api_session_release(sm->broker, job->client_id,
                                        job->drop || !*job->addr ? NULL : job->addr, GHOST_MS);
    if (st == RMQ_NOT_FOUND) {
        free(state);
        http_job_reply_error(base, 404, "session_not_found", "no persistent session for %s here",
                             job->client_id);
        return;
    }
    if (st != RMQ_OK) {
        free(state);
        http_job_reply_error(base, 500, "internal", "out of memory");
        return;
    }
    if (job->drop) {
        http_job_reply_json(base, 200, json_pack("{s:s}", "dropped", job->client_id));
        return;
    }
    sm->handed_out++;
    http_job_reply_text(base, 200, STATE_TYPE, (char *)state, len);
}

static void
handle_give(struct http_request *req, bool drop)
{
    struct sessions *sm = http_request_route(req)->arg;
    const char *client_id = http_request_param(req, "client");
    size_t n = strlen(client_id) + 1;
    struct give_job *job = calloc(1, sizeof(*job) + n);
    if (!job) {
        http_reply_error(req, 500, "internal", "out of memory");
        return;
    }
    job->sm = sm;
    job->drop = drop;
    memcpy(job->client_id, client_id, n);
    size_t blen = 0;
    const char *body = http_request_body(req, &blen);
    json_t *doc = blen ? json_loadb(body, blen, 0, NULL) : NULL;
    const char *addr = json_string_value(json_object_get(doc, "addr"));
    if (addr && strlen(addr) < sizeof(job->addr))
        strcpy(job->addr, addr);
    json_decref(doc);
    http_job_post(broker_inbox(sm->broker), req, &job->base, give_run, give_destroy);
}

static void
handle_handover(struct http_request *req, void *ctx)
{
    (void)ctx;
    handle_give(req, false);
}

static void
handle_drop(struct http_request *req, void *ctx)
{
    (void)ctx;
    handle_give(req, true);
}

const struct http_route *
sessions_internal_routes(struct sessions *sm, size_t *count)
{
    *count = 2;
    return sm->routes;
}

/* ---- life cycle ---- */

struct sessions *
sessions_new(struct event_base *base, struct broker *broker, struct cluster *cluster,
             struct routes *routes, struct redis_link *link, struct peer_client *peers,
             const struct sessions_config *cfg)
{
    struct sessions *sm = calloc(1, sizeof(*sm));
    if (!sm)
        return NULL;
    sm->base = base;
    sm->broker = broker;
    sm->cluster = cluster;
    sm->link = link;
    sm->peers = peers;
    sm->cfg = cfg;
    snprintf(sm->max_queued, sizeof(sm->max_queued), "%u", (unsigned)cfg->max_queued);
    snprintf(sm->life, sizeof(sm->life), "%" PRIu64, cfg->epoch);
    sm->routes[0] = (struct http_route){"POST", "/internal/v1/sessions/{client}/handover",
                                        handle_handover, "sessions_handover", 0, sm};
    sm->routes[1] = (struct http_route){"POST", "/internal/v1/sessions/{client}/drop",
                                        handle_drop, "sessions_drop", 0, sm};
    sm->script_owner = redis_link_script(link, owner_lua);
    sm->script_load = redis_link_script(link, load_lua);
    sm->script_online = redis_link_script(link, online_lua);
    sm->script_end = redis_link_script(link, end_lua);
    sm->script_adopt = redis_link_script(link, adopt_lua);
    sm->observer = (struct broker_observer){.ctx = sm, .session = copy_on_session};
    /* (A failure here ends the process: what was installed is not undone.) */
    if (sm->script_adopt < 0 || routes_on_node_left(routes, on_node_left, sm) != RMQ_OK ||
        broker_add_observer(broker, &sm->observer) != RMQ_OK) {
        log_error("sessions: cannot start");
        free(sm);
        return NULL;
    }
    cluster_set_session_prepare(cluster, prepare, sm);
    return sm;
}

static void
on_drain_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    event_base_loopbreak(arg);
}

/* Every 50 ms of the drain: done once no session is left here and no
 * ghost still redirects. */
static void
on_drain_check(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct sessions *sm = arg;
    if (broker_api_session_count(sm->broker) == 0 && broker_api_ghost_count(sm->broker) == 0)
        event_base_loopbreak(sm->base);
}

void
sessions_drain(struct sessions *sm, uint64_t timeout_ms)
{
    size_t before = sm ? broker_api_session_count(sm->broker) : 0;
    if (!before && (!sm || broker_api_ghost_count(sm->broker) == 0))
        return;
    struct event *timer = evtimer_new(sm->base, on_drain_timeout, sm->base);
    struct event *check = event_new(sm->base, -1, EV_PERSIST, on_drain_check, sm);
    struct timeval tv = {(time_t)(timeout_ms / 1000), (suseconds_t)(timeout_ms % 1000) * 1000};
    struct timeval every = {0, 50000};
    if (!timer || !check || evtimer_add(timer, &tv) != 0 || event_add(check, &every) != 0) {
        if (timer)
            event_free(timer);
        if (check)
            event_free(check);
        return;
    }
    log_info("sessions: %zu persistent session(s) here; waiting up to %" PRIu64
             " ms for their clients to reconnect elsewhere",
             before, timeout_ms);
    sm->draining = true;
    event_base_dispatch(sm->base); /* until all are handed over, the timeout or a signal */
    sm->draining = false;
    event_free(timer);
    event_free(check);
    log_info("sessions: %zu of %zu handed over before leaving; the rest are adopted from Redis",
             before - broker_api_session_count(sm->broker), before);
}

void
sessions_stop(struct sessions *sm)
{
    if (!sm)
        return;
    cluster_set_session_prepare(sm->cluster, NULL, NULL);
    for (struct prep *p = sm->preps; p; p = p->next)
        prep_finish(p);
}

void
sessions_free(struct sessions *sm)
{
    if (!sm)
        return;
    broker_remove_observer(sm->broker, &sm->observer);
    while (sm->preps)
        prep_free(sm->preps); /* none should be left: their callbacks ran */
    free(sm);
}

void
sessions_write_metrics(FILE *out, void *arg)
{
    const struct sessions *sm = arg;
    metrics_family(out, "relaymq_sessions_moved_total", "counter",
                   "persistent sessions moved between nodes, by how");
    fprintf(out, "relaymq_sessions_moved_total{how=\"handed_in\"} %" PRIu64 "\n", sm->handed_in);
    fprintf(out, "relaymq_sessions_moved_total{how=\"handed_out\"} %" PRIu64 "\n",
            sm->handed_out);
    fprintf(out, "relaymq_sessions_moved_total{how=\"restored_from_redis\"} %" PRIu64 "\n",
            sm->restored);
    fprintf(out, "relaymq_sessions_moved_total{how=\"adopted\"} %" PRIu64 "\n", sm->adopted);
    fprintf(out, "relaymq_sessions_moved_total{how=\"dropped_remote\"} %" PRIu64 "\n",
            sm->dropped_remote);
    metrics_family(out, "relaymq_sessions_errors_total", "counter",
                   "session copy problems: Redis errors, undecodable hand-overs");
    fprintf(out, "relaymq_sessions_errors_total{kind=\"redis\"} %" PRIu64 "\n", sm->redis_errors);
    fprintf(out, "relaymq_sessions_errors_total{kind=\"bad_state\"} %" PRIu64 "\n",
            sm->bad_state);
}
