/* Asynchronous Redis connection with reconnect; see redis_link.h.
 *
 * Lifecycle: CONNECTING -> (SELECT, SCRIPT LOAD ...) -> UP -> on any
 * disconnect: DOWN, a backoff timer (100 ms doubling to 2 s), CONNECTING.
 * hiredis frees its context after the connect-failure and disconnect
 * callbacks; we only drop our pointer there. Every command carries a small
 * heap record (callback, argument, start time) freed when its reply comes.
 * Loop thread only. */
#include "cluster/redis_link.h"

#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <openssl/sha.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/decimal.h"
#include "common/log.h"

#define MAX_SCRIPTS 32
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 2000
#define FMT_KEEP_MAX 65536 /* a larger formatting buffer is let go after its command */

struct script {
    char *body;
    char sha[41];
};

struct redis_link {
    struct event_base *base;
    const struct redis_link_events *events;
    redisAsyncContext *ac;
    char host[256];
    int port;
    int db;
    bool up;
    bool freeing;
    int loading; /* setup replies still awaited before "up" */
    uint64_t backoff_ms;
    struct event *retry;
    struct script scripts[MAX_SCRIPTS];
    int script_count;
    uint64_t inflight; /* commands sent, reply not yet seen */
    bool waiting;      /* redis_link_wait is running the loop */
    char *channel;     /* subscriber links only */
    redis_link_message_cb on_message;
    void *message_arg;
    struct redis_link_stats stats;
    char *fmt;      /* the command being formatted (kept between commands) */
    size_t fmt_cap;
};

struct pending {
    struct redis_link *link;
    redis_link_cb cb;
    void *arg;
    uint64_t started_us;
};

static uint64_t
now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static enum rmq_status
parse_url(struct redis_link *link, const char *url)
{
    const char *p = strncmp(url, "redis://", 8) == 0 ? url + 8 : NULL;
    if (!p)
        return RMQ_INVALID;
    const char *colon = strchr(p, ':');
    const char *slash = strchr(p, '/');
    size_t hl = colon ? (size_t)(colon - p) : slash ? (size_t)(slash - p) : strlen(p);
    if (hl == 0 || hl >= sizeof(link->host))
        return RMQ_INVALID;
    memcpy(link->host, p, hl);
    link->host[hl] = '\0';
    link->port = 6379;
    if (colon) {
        char *end;
        long port = strtol(colon + 1, &end, 10);
        if (port <= 0 || port > 65535 || (*end && *end != '/'))
            return RMQ_INVALID;
        link->port = (int)port;
    }
    if (slash) {
        char *end;
        long db = strtol(slash + 1, &end, 10);
        if (slash[1] == '\0' || *end || db < 0 || db > 1000)
            return RMQ_INVALID;
        link->db = (int)db;
    }
    return RMQ_OK;
}

static void start_connect(struct redis_link *link);

static void
on_retry(evutil_socket_t fd, short what, void *arg)
{
    start_connect(arg);
}

static void
schedule_retry(struct redis_link *link)
{
    if (link->freeing)
        return;
    struct timeval tv = {(time_t)(link->backoff_ms / 1000),
                         (suseconds_t)(link->backoff_ms % 1000) * 1000};
    evtimer_add(link->retry, &tv);
    link->backoff_ms = link->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : link->backoff_ms * 2;
}

static void
went_down(struct redis_link *link, const char *why)
{
    bool was_up = link->up;
    link->up = false;
    link->ac = NULL;
    if (link->freeing)
        return;
    if (was_up) {
        log_warn("redis %s:%d: connection lost (%s); reconnecting", link->host, link->port, why);
        if (link->events->down)
            link->events->down(link->events->ctx);
    }
    link->stats.reconnects++;
    schedule_retry(link);
}

static void setup_step_done(struct redis_link *link);

static void
on_setup_reply(redisAsyncContext *ac, void *r, void *arg)
{
    struct redis_link *link = arg;
    redisReply *reply = r;
    if (!reply || link->freeing)
        return;
    if (reply->type == REDIS_REPLY_ERROR) {
        log_error("redis %s:%d: setup failed: %s", link->host, link->port, reply->str);
        link->stats.errors++;
        redisAsyncDisconnect(ac);
        return;
    }
    setup_step_done(link);
}

/* SUBSCRIBE's callback: its confirmation, then every message. */
static void
on_subscribed(redisAsyncContext *ac, void *r, void *arg)
{
    (void)ac;
    struct redis_link *link = arg;
    redisReply *reply = r;
    if (!reply || link->freeing || reply->type != REDIS_REPLY_ARRAY || reply->elements < 3 ||
        reply->element[0]->type != REDIS_REPLY_STRING)
        return;
    const char *kind = reply->element[0]->str;
    if (strcmp(kind, "subscribe") == 0)
        setup_step_done(link);
    else if (strcmp(kind, "message") == 0 && reply->element[2]->type == REDIS_REPLY_STRING)
        link->on_message(reply->element[2]->str, reply->element[2]->len, link->message_arg);
}

static void
setup_step_done(struct redis_link *link)
{
    if (--link->loading == 0) {
        link->up = true;
        link->backoff_ms = BACKOFF_MIN_MS;
        log_info("redis %s:%d: connected", link->host, link->port);
        if (link->events->up)
            link->events->up(link->events->ctx);
    }
}

static void
on_connect(const redisAsyncContext *cac, int status)
{
    struct redis_link *link = cac->data;
    redisAsyncContext *ac = (redisAsyncContext *)cac;
    if (status != REDIS_OK) {
        log_debug("redis %s:%d: connect failed: %s", link->host, link->port, cac->errstr);
        went_down(link, cac->errstr);
        return;
    }
    link->loading = 1 + link->script_count + (link->channel ? 1 : 0);
    redisAsyncCommand(ac, on_setup_reply, link, "SELECT %d", link->db);
    for (int i = 0; i < link->script_count; i++)
        redisAsyncCommand(ac, on_setup_reply, link, "SCRIPT LOAD %s", link->scripts[i].body);
    if (link->channel)
        redisAsyncCommand(ac, on_subscribed, link, "SUBSCRIBE %s", link->channel);
}

static void
on_disconnect(const redisAsyncContext *cac, int status)
{
    struct redis_link *link = cac->data;
    went_down(link, status == REDIS_OK ? "closed" : cac->errstr);
}

static void
start_connect(struct redis_link *link)
{
    redisAsyncContext *ac = redisAsyncConnect(link->host, link->port);
    if (!ac || ac->err) {
        log_debug("redis %s:%d: %s", link->host, link->port, ac ? ac->errstr : "out of memory");
        if (ac)
            redisAsyncFree(ac);
        link->stats.reconnects++;
        schedule_retry(link);
        return;
    }
    ac->data = link;
    link->ac = ac;
    redisLibeventAttach(ac, link->base);
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
}

struct redis_link *
redis_link_new(struct event_base *base, const char *url, const struct redis_link_events *events)
{
    struct redis_link *link = calloc(1, sizeof(*link));
    if (!link)
        return NULL;
    link->base = base;
    link->events = events;
    link->backoff_ms = BACKOFF_MIN_MS;
    if (parse_url(link, url) != RMQ_OK) {
        log_error("redis: '%s' is not redis://HOST:PORT[/DB]", url);
        free(link);
        return NULL;
    }
    link->retry = evtimer_new(base, on_retry, link);
    if (!link->retry) {
        free(link);
        return NULL;
    }
    /* Connect from the loop, so scripts registered right after are loaded. */
    struct timeval now = {0, 0};
    evtimer_add(link->retry, &now);
    return link;
}

void
redis_link_free(struct redis_link *link)
{
    if (!link)
        return;
    link->freeing = true;
    if (link->ac)
        redisAsyncFree(link->ac); /* runs pending callbacks with NULL */
    event_free(link->retry);
    for (int i = 0; i < link->script_count; i++)
        free(link->scripts[i].body);
    free(link->channel);
    free(link->fmt);
    free(link);
}

enum rmq_status
redis_link_subscribe(struct redis_link *link, const char *channel, redis_link_message_cb cb,
                     void *arg)
{
    if (link->channel || link->script_count > 0)
        return RMQ_INVALID;
    if (!(link->channel = strdup(channel)))
        return RMQ_NOMEM;
    link->on_message = cb;
    link->message_arg = arg;
    return RMQ_OK;
}

bool
redis_link_is_up(const struct redis_link *link)
{
    return link && link->up;
}

int
redis_link_script(struct redis_link *link, const char *body)
{
    if (link->script_count == MAX_SCRIPTS)
        return -1;
    struct script *s = &link->scripts[link->script_count];
    s->body = strdup(body);
    if (!s->body)
        return -1;
    unsigned char digest[SHA_DIGEST_LENGTH];
    SHA1((const unsigned char *)body, strlen(body), digest);
    for (int i = 0; i < SHA_DIGEST_LENGTH; i++)
        snprintf(s->sha + 2 * i, 3, "%02x", digest[i]);
    return link->script_count++;
}

static void
on_reply(redisAsyncContext *ac, void *r, void *arg)
{
    struct pending *p = arg;
    struct redis_link *link = p->link;
    redisReply *reply = r;
    link->stats.latency_us_sum += now_us() - p->started_us;
    link->inflight--;
    if (link->waiting && link->inflight == 0)
        event_base_loopbreak(link->base);
    if (!reply || reply->type == REDIS_REPLY_ERROR) {
        link->stats.errors++;
        if (reply)
            log_warn("redis: error reply: %s", reply->str);
    }
    p->cb(reply, p->arg);
    free(p);
}

static size_t
put_header(char *out, char kind, size_t v)
{
    out[0] = kind;
    size_t n = 1 + decimal_u64(out + 1, v); /* its NUL is overwritten */
    out[n++] = '\r';
    out[n++] = '\n';
    return n;
}

/* The command in RESP (an array of bulk strings) in link->fmt, formatted
 * here in one pass: hiredis's own formatter costs a varargs printf per
 * argument, which shows on the connect path (a claim has 36). 0 without
 * memory. */
static size_t
format_command(struct redis_link *link, int argc, const char **argv, const size_t *lens)
{
    enum { HEADER_MAX = 1 + 20 + 2 };
    size_t need = HEADER_MAX + 1; /* a NUL after it, as hiredis's own formatter leaves */
    for (int i = 0; i < argc; i++)
        need += HEADER_MAX + (lens ? lens[i] : strlen(argv[i])) + 2;
    if (need > link->fmt_cap) {
        char *grown = realloc(link->fmt, need);
        if (!grown)
            return 0;
        link->fmt = grown;
        link->fmt_cap = need;
    }
    char *out = link->fmt;
    size_t n = put_header(out, '*', (size_t)argc);
    for (int i = 0; i < argc; i++) {
        size_t len = lens ? lens[i] : strlen(argv[i]);
        n += put_header(out + n, '$', len);
        memcpy(out + n, argv[i], len);
        n += len;
        out[n++] = '\r';
        out[n++] = '\n';
    }
    out[n] = '\0';
    return n;
}

enum rmq_status
redis_link_argv(struct redis_link *link, redis_link_cb cb, void *arg, int argc, const char **argv,
                const size_t *lens)
{
    if (!link->up || !link->ac)
        return RMQ_AGAIN;
    struct pending *p = malloc(sizeof(*p));
    if (!p)
        return RMQ_NOMEM;
    *p = (struct pending){.link = link, .cb = cb, .arg = arg, .started_us = now_us()};
    size_t len = format_command(link, argc, argv, lens);
    if (!len) {
        free(p);
        return RMQ_NOMEM;
    }
    int rc = redisAsyncFormattedCommand(link->ac, on_reply, p, link->fmt, len);
    if (link->fmt_cap > FMT_KEEP_MAX) {
        free(link->fmt);
        link->fmt = NULL;
        link->fmt_cap = 0;
    }
    if (rc != REDIS_OK) {
        free(p);
        return RMQ_AGAIN;
    }
    link->stats.commands++;
    link->inflight++;
    return RMQ_OK;
}

enum rmq_status
redis_link_eval(struct redis_link *link, int script, redis_link_cb cb, void *arg, int nkeys,
                int argc, const char **argv, const size_t *lens)
{
    enum { MAX_ARGS = 600 };
    const char *av[MAX_ARGS + 3];
    size_t al[MAX_ARGS + 3];
    char nk[16];
    if (script < 0 || script >= link->script_count || argc > MAX_ARGS)
        return RMQ_INVALID;
    snprintf(nk, sizeof(nk), "%d", nkeys);
    av[0] = "EVALSHA";
    al[0] = 7;
    av[1] = link->scripts[script].sha;
    al[1] = 40;
    av[2] = nk;
    al[2] = strlen(nk);
    for (int i = 0; i < argc; i++) {
        av[3 + i] = argv[i];
        al[3 + i] = lens ? lens[i] : strlen(argv[i]);
    }
    return redis_link_argv(link, cb, arg, argc + 3, av, al);
}

void
redis_link_flush(struct redis_link *link, int timeout_ms)
{
    if (!link->ac)
        return;
    redisContext *c = &link->ac->c;
    uint64_t deadline = clock_monotonic_ms() + (uint64_t)timeout_ms;
    int done = 0;
    while (!done && clock_monotonic_ms() < deadline) {
        if (redisBufferWrite(c, &done) == REDIS_ERR)
            return;
        if (!done) {
            struct pollfd pfd = {.fd = c->fd, .events = POLLOUT};
            poll(&pfd, 1, 10);
        }
    }
}

static void
on_wait_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    event_base_loopbreak(arg);
}

void
redis_link_wait(struct redis_link *link, uint64_t timeout_ms)
{
    if (!link || !link->up || link->inflight == 0)
        return;
    struct event *timer = evtimer_new(link->base, on_wait_timeout, link->base);
    struct timeval tv = {(time_t)(timeout_ms / 1000), (suseconds_t)(timeout_ms % 1000) * 1000};
    if (!timer || evtimer_add(timer, &tv) != 0) {
        if (timer)
            event_free(timer);
        redis_link_flush(link, (int)timeout_ms);
        return;
    }
    uint64_t before = link->inflight;
    link->waiting = true;
    event_base_dispatch(link->base); /* until every answer came, the timeout, or a signal */
    link->waiting = false;
    event_free(timer);
    if (link->inflight)
        log_warn("redis %s:%d: %" PRIu64 " of %" PRIu64 " commands unanswered at shutdown",
                 link->host, link->port, link->inflight, before);
}

void
redis_link_stats(const struct redis_link *link, struct redis_link_stats *out)
{
    *out = link->stats;
}
