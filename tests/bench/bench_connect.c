/* Connection scenarios of relaymq-bench: `connect` and `idle`.
 *
 * Both keep at most --concurrency handshakes in progress. A connection that
 * finished its handshake (connect) or failed is put on a "done" list and an
 * activated event closes it and starts the next one after the current
 * callbacks return, because bconn callbacks may not close their own
 * connection. `connect` closes right after CONNACK (+ DISCONNECT) and reuses
 * the slot; `idle` keeps every connection, so it owns --clients slots.
 * A churn is single-threaded and owns its slots; `connect --threads N` runs
 * N churns, one per thread with its own event loop, each with its share of
 * --clients and --concurrency, and adds up their counts and latencies. */
#include "tests/bench/bench_connect.h"

#include <errno.h>
#include <event2/event.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/bench/bench_conn.h"
#include "tests/bench/bench_mqtt.h"
#include "tests/bench/bench_stats.h"

#define TICK_USEC 10000
#define STALL_TIMEOUT_NS (15 * 1000000000ull)
#define SMALL_BUF 256

struct churn;

struct slot {
    struct bconn conn;
    struct churn *ch;
    uint32_t index; /* position in ch->slots */
    uint32_t seq;   /* connection number, for the client id */
    uint64_t t_open;
};

struct churn {
    const struct bench_opts *o;
    uint32_t clients, concurrency; /* this churn's share of o's */
    uint32_t seq_base;             /* its first connection number (unique client ids) */
    atomic_bool *abort_all;        /* set on a failure: every churn of the run stops */
    struct event_base *base;
    struct slot *slots;
    uint32_t nslots;
    uint32_t *done; /* slots waiting to be closed/reused */
    uint32_t ndone;
    uint32_t started, acked, in_progress, next_free;
    bool stopping;
    int failures;
    uint64_t t_begin, t_end, t_progress, progress_mark;
    struct latency_hist hist;
    struct event *reap, *tick, *ping;
};

static void
churn_fail(struct churn *ch, const char *what, int err)
{
    if (ch->failures++ == 0)
        fprintf(stderr, "relaymq-bench: connection failed: %s%s%s\n", what, err ? ": " : "",
                err ? strerror(err) : "");
    ch->stopping = true;
    if (ch->abort_all != NULL)
        atomic_store(ch->abort_all, true);
    event_base_loopbreak(ch->base);
}

static enum rmq_status
slot_on_packet(struct bconn *c, const struct mqtt_packet *p)
{
    struct slot *s = c->owner;
    struct churn *ch = s->ch;
    if (p->type == MQTT_PINGRESP)
        return RMQ_OK;
    if (bench_check_connack(p) != RMQ_OK)
        return RMQ_PROTOCOL;
    latency_hist_record(&ch->hist, bench_now_ns() - s->t_open);
    ch->acked++;
    ch->in_progress--;
    if (ch->o->scenario == BENCH_CONNECT) {
        bench_queue_empty(c, MQTT_DISCONNECT); /* sent by bconn after this returns */
        ch->done[ch->ndone++] = s->index;
    }
    event_active(ch->reap, EV_TIMEOUT, 0);
    return RMQ_OK;
}

static void
slot_on_error(struct bconn *c, enum rmq_status st, const char *what)
{
    struct slot *s = c->owner;
    churn_fail(s->ch, what, c->err);
}

static const struct bconn_ops slot_ops = {
    .on_packet = slot_on_packet,
    .on_fill = NULL,
    .on_error = slot_on_error,
};

/* Opens slot i and queues its CONNECT. */
static void
slot_start(struct churn *ch, uint32_t i)
{
    struct slot *s = &ch->slots[i];
    s->ch = ch;
    s->index = i;
    s->seq = ch->seq_base + ch->started++;
    ch->in_progress++;
    s->t_open = bench_now_ns();
    if (bconn_open(&s->conn, ch->base, &ch->o->addr, SMALL_BUF, SMALL_BUF, &slot_ops, s) !=
        RMQ_OK) {
        churn_fail(ch, "cannot open a socket", errno);
        return;
    }
    char id[BENCH_CLIENT_ID_MAX];
    bench_client_id(ch->o, 'c', s->seq, id);
    bench_queue_connect(&s->conn, ch->o, id);
    bconn_flush(&s->conn);
}

/* Which slot the next connection may use, or UINT32_MAX for none. */
static uint32_t
churn_free_slot(struct churn *ch)
{
    if (ch->o->scenario == BENCH_CONNECT)
        return ch->ndone > 0 ? ch->done[--ch->ndone] : UINT32_MAX;
    return ch->next_free < ch->nslots ? ch->next_free++ : UINT32_MAX;
}

/* Closes finished connections and keeps the window full. */
static void
reap_cb(evutil_socket_t fd, short what, void *arg)
{
    struct churn *ch = arg;
    for (uint32_t k = 0; k < ch->ndone; k++)
        bconn_close(&ch->slots[ch->done[k]].conn);
    if (ch->started >= ch->clients && ch->acked == ch->started) {
        ch->t_end = bench_now_ns();
        event_base_loopbreak(ch->base);
        return;
    }
    while (!ch->stopping && ch->started < ch->clients && ch->in_progress < ch->concurrency) {
        uint32_t i = churn_free_slot(ch);
        if (i == UINT32_MAX)
            break;
        slot_start(ch, i);
    }
}

static void
tick_cb(evutil_socket_t fd, short what, void *arg)
{
    struct churn *ch = arg;
    uint64_t now = bench_now_ns();
    if (ch->abort_all != NULL && atomic_load(ch->abort_all)) {
        ch->stopping = true; /* another churn failed: the run is over */
        ch->t_end = now;
        event_base_loopbreak(ch->base);
        return;
    }
    if (ch->acked != ch->progress_mark) {
        ch->progress_mark = ch->acked;
        ch->t_progress = now;
    }
    if (now - ch->t_progress > STALL_TIMEOUT_NS) {
        churn_fail(ch, "no CONNACK for 15 s", 0);
    } else if (ch->o->scenario == BENCH_CONNECT &&
               now - ch->t_begin >= (uint64_t)(ch->o->duration * 1e9)) {
        ch->t_end = now; /* --duration reached before --clients handshakes */
        event_base_loopbreak(ch->base);
    }
}

static void
ping_cb(evutil_socket_t fd, short what, void *arg)
{
    struct churn *ch = arg;
    for (uint32_t i = 0; i < ch->nslots; i++) {
        struct bconn *c = &ch->slots[i].conn;
        if (bconn_is_open(c) && bench_queue_empty(c, MQTT_PINGREQ))
            bconn_flush(c);
    }
}

/* A churn of clients connections, concurrency at once, numbered from
 * seq_base. */
static struct churn *
churn_new(const struct bench_opts *o, uint32_t clients, uint32_t concurrency, uint32_t seq_base)
{
    struct churn *ch = calloc(1, sizeof(*ch));
    if (ch == NULL)
        return NULL;
    ch->o = o;
    ch->clients = clients;
    ch->concurrency = concurrency;
    ch->seq_base = seq_base;
    ch->nslots = o->scenario == BENCH_CONNECT ? concurrency : clients;
    if (ch->nslots > clients)
        ch->nslots = clients;
    ch->slots = calloc(ch->nslots, sizeof(*ch->slots));
    ch->done = calloc(ch->nslots, sizeof(*ch->done));
    ch->base = event_base_new();
    if (ch->slots == NULL || ch->done == NULL || ch->base == NULL)
        goto fail;
    for (uint32_t i = 0; i < ch->nslots; i++)
        ch->slots[i].conn.fd = -1;
    ch->reap = event_new(ch->base, -1, 0, reap_cb, ch);
    ch->tick = event_new(ch->base, -1, EV_PERSIST, tick_cb, ch);
    ch->ping = event_new(ch->base, -1, EV_PERSIST, ping_cb, ch);
    if (ch->reap == NULL || ch->tick == NULL || ch->ping == NULL)
        goto fail;
    latency_hist_init(&ch->hist);
    return ch;
fail:
    if (ch->reap != NULL)
        event_free(ch->reap);
    if (ch->tick != NULL)
        event_free(ch->tick);
    if (ch->ping != NULL)
        event_free(ch->ping);
    free(ch->slots);
    free(ch->done);
    if (ch->base != NULL)
        event_base_free(ch->base);
    free(ch);
    return NULL;
}

static void
churn_free(struct churn *ch)
{
    if (ch == NULL)
        return;
    for (uint32_t i = 0; i < ch->nslots; i++)
        bconn_close(&ch->slots[i].conn);
    event_free(ch->reap);
    event_free(ch->tick);
    event_free(ch->ping);
    event_base_free(ch->base);
    free(ch->slots);
    free(ch->done);
    free(ch);
}

/* Opens connections until o->clients were acknowledged (or a failure or,
 * for `connect`, --duration). */
static void
churn_run(struct churn *ch)
{
    struct timeval tick = {0, TICK_USEC};
    event_add(ch->tick, &tick);
    if (ch->o->keepalive > 0) {
        struct timeval ping = {ch->o->keepalive / 2 > 0 ? ch->o->keepalive / 2 : 1, 0};
        event_add(ch->ping, &ping);
    }
    if (ch->o->scenario == BENCH_CONNECT) /* every slot starts free */
        for (uint32_t i = 0; i < ch->nslots; i++)
            ch->done[ch->ndone++] = ch->nslots - 1 - i;
    ch->t_begin = ch->t_progress = bench_now_ns();
    event_active(ch->reap, EV_TIMEOUT, 0);
    event_base_dispatch(ch->base);
    if (ch->t_end == 0)
        ch->t_end = bench_now_ns();
}

static void *
churn_thread(void *arg)
{
    churn_run(arg);
    return NULL;
}

/* Runs the churns, one on this thread or one per thread; false if a thread
 * could not start (the started ones are then stopped and joined). */
static bool
run_churns(struct churn **chs, uint32_t n, atomic_bool *abort_all)
{
    if (n == 1) {
        churn_run(chs[0]);
        return true;
    }
    pthread_t tids[BENCH_MAX_THREADS];
    uint32_t started = 0;
    while (started < n && pthread_create(&tids[started], NULL, churn_thread, chs[started]) == 0)
        started++;
    if (started < n)
        atomic_store(abort_all, true);
    for (uint32_t t = 0; t < started; t++)
        pthread_join(tids[t], NULL);
    return started == n;
}

int
bench_connect_run(const struct bench_opts *o)
{
    uint32_t n = o->threads, seq = 0;
    struct churn *chs[BENCH_MAX_THREADS] = {0};
    atomic_bool abort_all = false;
    struct latency_hist *hist = malloc(sizeof(*hist));
    bool ok = hist != NULL && n >= 1 && n <= BENCH_MAX_THREADS;
    for (uint32_t t = 0; ok && t < n; t++) {
        uint32_t clients = o->clients / n + (t < o->clients % n);
        uint32_t concurrency = o->concurrency / n + (t < o->concurrency % n);
        ok = (chs[t] = churn_new(o, clients, concurrency, seq)) != NULL;
        if (ok)
            chs[t]->abort_all = &abort_all;
        seq += clients;
    }
    if (!ok)
        fprintf(stderr, "relaymq-bench: out of memory setting up %u connections\n",
                (unsigned)o->concurrency);
    double cpu0 = bench_cpu_seconds();
    if (ok && !run_churns(chs, n, &abort_all)) {
        fprintf(stderr, "relaymq-bench: cannot start %u threads\n", (unsigned)n);
        ok = false;
    }
    if (!ok) {
        for (uint32_t t = 0; t < BENCH_MAX_THREADS; t++)
            churn_free(chs[t]);
        free(hist);
        return BENCH_EXIT_FAILURE;
    }
    /* The window runs from the first churn's start to the last one's end. */
    uint64_t t_begin = chs[0]->t_begin, t_end = chs[0]->t_end;
    uint32_t acked = 0;
    int failures = 0;
    latency_hist_init(hist);
    for (uint32_t t = 0; t < n; t++) {
        t_begin = chs[t]->t_begin < t_begin ? chs[t]->t_begin : t_begin;
        t_end = chs[t]->t_end > t_end ? chs[t]->t_end : t_end;
        acked += chs[t]->acked;
        failures += chs[t]->failures;
        latency_hist_merge(hist, &chs[t]->hist);
    }
    double secs = (double)(t_end - t_begin) / 1e9;
    double rate = secs > 0 ? acked / secs : 0;
    double cpu = secs > 0 ? 100.0 * (bench_cpu_seconds() - cpu0) / secs : 0;
    char pct[160];
    bench_format_percentiles(hist, pct, sizeof(pct));
    printf("connect concurrency=%u threads=%u: %.0f connections/s (%u CONNACKs in %.2f s);%s\n",
           (unsigned)o->concurrency, (unsigned)n, rate, (unsigned)acked, secs, pct);
    printf("RESULT scenario=connect status=%s concurrency=%u threads=%u connections=%u "
           "window_s=%.2f conns_per_sec=%.0f errors=%d%s bench_cpu_pct=%.0f\n",
           failures ? "failed" : "ok", (unsigned)o->concurrency, (unsigned)n, (unsigned)acked,
           secs, rate, failures, pct, cpu);
    fflush(stdout);
    for (uint32_t t = 0; t < n; t++)
        churn_free(chs[t]);
    free(hist);
    return failures ? BENCH_EXIT_FAILURE : BENCH_EXIT_OK;
}

/* Keeps the loop (and so keepalive pings) running for secs seconds. */
static void
churn_hold(struct churn *ch, double secs)
{
    struct timeval tv = {(time_t)secs, (suseconds_t)((secs - (double)(time_t)secs) * 1e6)};
    event_base_loopexit(ch->base, &tv);
    event_base_dispatch(ch->base);
}

int
bench_connect_idle_run(const struct bench_opts *o)
{
    struct churn *ch = churn_new(o, o->clients, o->concurrency, 0);
    if (ch == NULL)
        return BENCH_EXIT_FAILURE;
    long before = o->broker_pid > 0 ? bench_rss_kib(o->broker_pid) : -1;
    churn_run(ch);
    double secs = (double)(ch->t_end - ch->t_begin) / 1e9;
    long after = -1;
    if (ch->failures == 0) {
        churn_hold(ch, o->hold);
        after = o->broker_pid > 0 ? bench_rss_kib(o->broker_pid) : -1;
    }
    double per_conn =
        before >= 0 && after >= 0 && ch->acked > 0 ? (double)(after - before) / ch->acked : -1;
    printf("idle: %u connections open in %.2f s; broker RSS %ld -> %ld KiB, %.2f KiB per "
           "connection\n",
           (unsigned)ch->acked, secs, before, after, per_conn);
    printf("RESULT scenario=idle status=%s connections=%u connect_s=%.2f rss_before_kib=%ld "
           "rss_after_kib=%ld kib_per_conn=%.2f errors=%d\n",
           ch->failures ? "failed" : "ok", (unsigned)ch->acked, secs, before, after, per_conn,
           ch->failures);
    fflush(stdout);
    int rc = ch->failures ? BENCH_EXIT_FAILURE : BENCH_EXIT_OK;
    churn_free(ch);
    return rc;
}
