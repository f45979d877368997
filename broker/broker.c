/* The broker loop: listeners, the loop's events (timer tick, output flush,
 * $SYS publication), publish routing, and the lifetime of everything the
 * loop owns. See broker.h. Loop thread only. */
#include <errno.h>
#include <event2/listener.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "broker/broker_internal.h"
#include "broker/retain.h"
#include "broker/tls.h"
#include "broker/topic_tree.h"
#include "common/clock.h"
#include "common/hashmap.h"
#include "common/inbox.h"
#include "common/log.h"

#define TICK_MS 100
#define LISTEN_BACKLOG 1024
#define ACCEPT_PAUSE_MS 100 /* after EMFILE/ENFILE */

void
broker_refresh_clock(struct broker *b)
{
    b->now_ms = clock_monotonic_ms();
}

/* ---- routing ---- */

static void
on_match(void *subscriber, uint8_t qos, void *arg)
{
    struct broker *b = arg;
    struct session *s = subscriber;
    if (s->match_gen == b->match_gen) {
        if (qos > s->match_qos)
            s->match_qos = qos; /* overlapping filters: one copy at the highest QoS */
        return;
    }
    if (b->matched_count == b->matched_cap) {
        size_t cap = b->matched_cap ? b->matched_cap * 2 : 64;
        struct session **m = realloc(b->matched, cap * sizeof(*m));
        if (!m) {
            b->metrics.messages_dropped++;
            return;
        }
        b->matched = m;
        b->matched_cap = cap;
    }
    s->match_gen = b->match_gen;
    s->match_qos = qos;
    b->matched[b->matched_count++] = s;
}

void
broker_match(struct broker *b, const char *topic, uint16_t topic_len)
{
    b->match_gen++;
    b->matched_count = 0;
    topic_tree_match(b->subs, topic, topic_len, on_match, b);
}

void
broker_route(struct broker *b, struct route *r)
{
    if (r->retain) {
        if (!r->msg)
            r->msg = message_new(r->topic, r->topic_len, r->payload, r->payload_len, r->qos,
                                 true, broker_now(b));
        if (r->msg)
            retain_set(b->retained, r->msg);
    }
    broker_match(b, r->topic, r->topic_len);
    if (b->forward && !b->from_peer)
        broker_forward(b, r);
    /* Delivery to established subscriptions never carries RETAIN [MQTT-3.3.1-9]. */
    for (size_t i = 0; i < b->matched_count; i++) {
        struct session *s = b->matched[i];
        uint8_t qos = r->qos < s->match_qos ? r->qos : s->match_qos;
        session_deliver(b, s, r, qos, false);
    }
    /* Shared groups: one member each. In a cluster the forwarder picks the
     * member node (it saw this message above); a peer's message reaches a
     * group only as a frame aimed at it. */
    if (!b->forward && !b->from_peer)
        share_route(b, r);
    message_unref(r->msg);
    r->msg = NULL;
}

/* ---- loop events ---- */

static void
on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct broker *b = arg;
    broker_refresh_clock(b);
    timer_wheel_advance(b->wheel, broker_now(b));
    if (b->throttling)
        session_check_stalls(b);
}

static void
on_flush(evutil_socket_t fd, short what, void *arg)
{
    conn_flush_all(arg);
}

static void
sys_publish(struct broker *b, const char *topic, unsigned long long value, const char *unit)
{
    char payload[64];
    int n = snprintf(payload, sizeof(payload), "%llu%s", value, unit);
    struct route r = {
        .topic = topic,
        .topic_len = (uint16_t)strlen(topic),
        .payload = (const uint8_t *)payload,
        .payload_len = (uint32_t)n,
        .qos = 0,
        .retain = true,
    };
    broker_route(b, &r);
}

static void
on_sys(evutil_socket_t fd, short what, void *arg)
{
    struct broker *b = arg;
    char topic[128];
    broker_refresh_clock(b);
    sys_publish(b, "$SYS/broker/uptime", (broker_now(b) - b->started_ms) / 1000u, " seconds");
    sys_publish(b, "$SYS/broker/clients/connected", b->connected_count, "");
    sys_publish(b, "$SYS/broker/clients/total", hashmap_count(b->sessions), "");
    sys_publish(b, "$SYS/broker/subscriptions/count", topic_tree_count(b->subs), "");
    sys_publish(b, "$SYS/broker/retained messages/count", retain_count(b->retained), "");
    sys_publish(b, "$SYS/broker/messages/received", b->metrics.messages_received, "");
    sys_publish(b, "$SYS/broker/messages/sent", b->metrics.messages_sent, "");
#define SYS_COUNTER(name, help)                                                                \
    snprintf(topic, sizeof(topic), "$SYS/broker/metrics/%s", #name);                           \
    sys_publish(b, topic, b->metrics.name, "");
    BROKER_COUNTERS(SYS_COUNTER)
#undef SYS_COUNTER
}

static void
publish_version(struct broker *b)
{
    const char *topic = "$SYS/broker/version";
    const char *version = "relaymq " RELAYMQ_VERSION;
    struct route r = {
        .topic = topic,
        .topic_len = (uint16_t)strlen(topic),
        .payload = (const uint8_t *)version,
        .payload_len = (uint32_t)strlen(version),
        .retain = true,
    };
    broker_route(b, &r);
}

/* ---- listeners ---- */

static void
on_accept(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa, int salen,
          void *arg)
{
    struct listener_slot *l = arg;
    char host[INET6_ADDRSTRLEN], serv[8], peer[64];
    broker_refresh_clock(l->broker);
    if (getnameinfo(sa, (socklen_t)salen, host, sizeof(host), serv, sizeof(serv),
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0)
        snprintf(peer, sizeof(peer), "unknown");
    else if (sa->sa_family == AF_INET6)
        snprintf(peer, sizeof(peer), "[%s]:%s", host, serv);
    else
        snprintf(peer, sizeof(peer), "%s:%s", host, serv);
    if (!limits_admit(l->broker, l)) {
        log_debug("connection from %s closed at accept: limit reached", peer);
        evutil_closesocket(fd);
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    conn_accept(l->broker, fd, peer, l);
}

static void
on_accept_resume(evutil_socket_t fd, short what, void *arg)
{
    struct listener_slot *l = arg;
    evconnlistener_enable(l->lev);
}

static void
on_accept_error(struct evconnlistener *lev, void *arg)
{
    struct listener_slot *l = arg;
    int err = EVUTIL_SOCKET_ERROR();
    log_warn("accept on %s: %s", l->address, evutil_socket_error_to_string(err));
    if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
        /* Out of descriptors: pause instead of spinning on the ready socket. */
        struct timeval tv = {0, ACCEPT_PAUSE_MS * 1000};
        evconnlistener_disable(lev);
        evtimer_add(l->resume, &tv);
    }
}

/* A TLS listener's context from its files; false (logged) if they fail. */
static bool
listener_load_tls(struct listener_slot *l)
{
    char err[512];
    struct ssl_ctx_st *ctx = tls_context_new(&l->spec.tls_cfg, err, sizeof(err));
    if (!ctx) {
        log_error("listener %s: %s", l->address, err);
        return false;
    }
    tls_context_free(l->tls_ctx);
    l->tls_ctx = ctx;
    return true;
}

static enum rmq_status
listener_open(struct broker *b, struct listener_slot *l, const char *address)
{
    char err[512], kind[32];
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    l->broker = b;
    l->address = strdup(address);
    if (!l->address)
        return RMQ_NOMEM;
    if (listener_spec_parse(address, &b->cfg->listener_defaults, &l->spec, err, sizeof(err)) !=
        RMQ_OK) {
        log_error("listen address '%s': %s", address, err);
        return RMQ_INVALID;
    }
    if (l->spec.tls && !listener_load_tls(l))
        return RMQ_INVALID;
    const char *host = l->spec.host, *port = l->spec.port;
    int rc = getaddrinfo(host, port, &hints, &ai);
    if (rc != 0) {
        log_error("listen address '%s': %s", address, gai_strerror(rc));
        return RMQ_INVALID;
    }
    unsigned flags = LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC;
    if (b->cfg->reuse_port)
        flags |= LEV_OPT_REUSEABLE_PORT; /* the kernel spreads connections over the processes */
    l->lev = evconnlistener_new_bind(b->base, on_accept, l, flags,
                                     LISTEN_BACKLOG, ai->ai_addr, (int)ai->ai_addrlen);
    freeaddrinfo(ai);
    if (!l->lev) {
        log_error("cannot listen on %s: %s", address, strerror(errno));
        return RMQ_IO;
    }
    evconnlistener_set_error_cb(l->lev, on_accept_error);
    l->resume = evtimer_new(b->base, on_accept_resume, l);
    if (!l->resume)
        return RMQ_NOMEM;
    log_info("listening for MQTT on %s (%s)", address, listener_spec_kind(&l->spec, kind,
                                                                             sizeof(kind)));
    return RMQ_OK;
}

static enum rmq_status
open_listeners(struct broker *b)
{
    b->listeners = calloc(b->cfg->listen_count, sizeof(*b->listeners));
    if (!b->listeners)
        return RMQ_NOMEM;
    for (size_t i = 0; i < b->cfg->listen_count; i++) {
        b->listener_count++;
        enum rmq_status st = listener_open(b, &b->listeners[i], b->cfg->listen[i]);
        if (st != RMQ_OK)
            return st;
    }
    return RMQ_OK;
}

void
broker_stop_listening(struct broker *b)
{
    for (size_t i = 0; i < b->listener_count; i++) {
        struct listener_slot *l = &b->listeners[i];
        if (l->lev)
            evconnlistener_free(l->lev);
        if (l->resume)
            event_free(l->resume);
        free(l->address);
        listener_spec_free(&l->spec);
        tls_context_free(l->tls_ctx); /* open connections hold their own reference */
        *l = (struct listener_slot){0};
    }
    free(b->listeners);
    b->listeners = NULL;
    b->listener_count = 0;
}

size_t
broker_reload_tls(struct broker *b)
{
    size_t failed = 0;
    for (size_t i = 0; i < b->listener_count; i++) {
        struct listener_slot *l = &b->listeners[i];
        if (!l->spec.tls || !l->tls_ctx)
            continue;
        if (listener_load_tls(l)) {
            log_info("listener %s: certificate, key, CA and ticket key files reloaded",
                     l->address);
        } else {
            log_warn("listener %s: keeps its previous certificate, key, CA and ticket key",
                     l->address);
            failed++;
        }
    }
    return failed;
}

/* ---- lifetime ---- */

static enum rmq_status
start_events(struct broker *b)
{
    struct timeval tick = {0, TICK_MS * 1000};
    b->tick_ev = event_new(b->base, -1, EV_PERSIST, on_tick, b);
    b->flush_ev = event_new(b->base, -1, 0, on_flush, b);
    if (!b->tick_ev || !b->flush_ev || event_add(b->tick_ev, &tick) != 0)
        return RMQ_NOMEM;
    if (b->cfg->sys_interval_ms) {
        struct timeval sys = {(time_t)(b->cfg->sys_interval_ms / 1000),
                              (suseconds_t)(b->cfg->sys_interval_ms % 1000) * 1000};
        b->sys_ev = event_new(b->base, -1, EV_PERSIST, on_sys, b);
        if (!b->sys_ev || event_add(b->sys_ev, &sys) != 0)
            return RMQ_NOMEM;
        publish_version(b);
    }
    return RMQ_OK;
}

struct broker *
broker_new(struct event_base *base, const struct broker_config *cfg)
{
    struct broker *b = calloc(1, sizeof(*b));
    if (!b)
        return NULL;
    b->base = base;
    b->cfg = cfg;
    broker_refresh_clock(b);
    b->started_ms = broker_now(b);
    b->sessions = hashmap_new(NULL);
    b->subs = topic_tree_new();
    b->retained = retain_new();
    b->wheel = timer_wheel_new(broker_now(b), 10);
    b->rbuf = malloc(BROKER_READ_BUFFER);
    b->inbox = inbox_new(base);
    if (!b->sessions || !b->subs || !b->retained || !b->wheel || !b->rbuf || !b->inbox) {
        log_error("out of memory creating the broker");
        goto fail;
    }
    if (start_events(b) != RMQ_OK || open_listeners(b) != RMQ_OK)
        goto fail;
    return b;
fail:
    broker_free(b);
    return NULL;
}

void
broker_free(struct broker *b)
{
    if (!b)
        return;
    broker_stop_listening(b);
    inbox_free(b->inbox); /* callers stopped every posting thread first */
    while (b->conns)
        conn_close(b->conns, CLOSE_SHUTDOWN);
    if (b->sessions) {
        size_t pos = 0;
        const void *key;
        size_t len;
        void *value;
        /* The map is freed whole right after, so its values may go first. */
        while (hashmap_next(b->sessions, &pos, &key, &len, &value))
            session_free(b, value);
        hashmap_free(b->sessions);
    }
    if (b->tick_ev)
        event_free(b->tick_ev);
    if (b->flush_ev)
        event_free(b->flush_ev);
    if (b->sys_ev)
        event_free(b->sys_ev);
    session_free_ghosts(b); /* before the tree they match in and the wheel they wait on */
    session_free_stash(b);
    share_free_all(b);      /* after every member session went */
    topic_tree_free(b->subs);
    retain_free(b->retained);
    timer_wheel_free(b->wheel);
    hashmap_free(b->filter_refs);
    free(b->matched);
    free(b->rbuf);
    free(b);
}

enum rmq_status
broker_add_observer(struct broker *b, const struct broker_observer *obs)
{
    if (b->observer_count == BROKER_MAX_OBSERVERS)
        return RMQ_LIMIT;
    b->observers[b->observer_count++] = obs;
    return RMQ_OK;
}

void
broker_remove_observer(struct broker *b, const struct broker_observer *obs)
{
    for (size_t i = 0; b && i < b->observer_count; i++) {
        if (b->observers[i] == obs) {
            memmove(&b->observers[i], &b->observers[i + 1],
                    (b->observer_count - i - 1) * sizeof(b->observers[0]));
            b->observer_count--;
            return;
        }
    }
}

void
broker_set_hooks(struct broker *b, const struct broker_hooks *hooks)
{
    b->hooks = hooks;
}

bool
broker_close_channel(struct broker *b, uint64_t channel, enum close_reason reason)
{
    /* A linear scan: closing by channel is rare (takeover across nodes,
     * kicks); a channel index can come when it shows in a profile. */
    for (struct conn *c = b->conns; c; c = c->next) {
        if (c->channel == channel) {
            if (reason == CLOSE_TAKEOVER)
                b->metrics.takeovers++;
            conn_close(c, reason);
            return true;
        }
    }
    return false;
}

void
broker_publish(struct broker *b, const char *topic, const void *payload, size_t len, uint8_t qos,
               bool retain)
{
    struct route r = {
        .topic = topic,
        .topic_len = (uint16_t)strlen(topic),
        .payload = payload,
        .payload_len = (uint32_t)len,
        .qos = qos,
        .retain = retain,
    };
    broker_refresh_clock(b);
    broker_route(b, &r);
}

void
broker_foreach_client(struct broker *b, void (*fn)(void *arg, const struct broker_client_info *info),
                      void *arg)
{
    for (struct conn *c = b->conns; c; c = c->next) {
        if (c->state != CONN_ACTIVE)
            continue;
        struct broker_client_info info;
        conn_client_info(c, &info);
        fn(arg, &info);
    }
}

void
broker_close_all(struct broker *b)
{
    while (b->conns)
        conn_close(b->conns, CLOSE_SHUTDOWN);
}

size_t
broker_connected_count(const struct broker *b)
{
    return b->connected_count;
}

uint64_t
broker_epoch(const struct broker *b)
{
    return b->cfg->epoch;
}

struct inbox *
broker_inbox(struct broker *b)
{
    return b->inbox;
}

void
broker_metrics_get(const struct broker *b, struct broker_metrics *out)
{
    *out = b->metrics;
}
