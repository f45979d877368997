/* Message-flow scenarios (pairs, fanin, fanout, latency) of relaymq-bench.
 *
 * A run goes through phases driven by one 10 ms tick, never from inside a
 * connection callback: subscribers connect and subscribe; then publishers
 * connect; then everybody publishes (warmup, then the measured window); then
 * publishing stops and the run drains until every message sent was received
 * and acknowledged, or nothing moved for --drain seconds.
 *
 * Each publisher owns one pre-encoded PUBLISH (header + payload); sending a
 * message is a memcpy into the connection's output buffer plus patching the
 * sequence number, the send time and (QoS 1/2) the packet id, so the steady
 * state allocates nothing. The payload starts with
 *     u32 publisher id | u64 sequence number | u64 CLOCK_MONOTONIC ns
 * in host byte order (the same process reads it back).
 *
 * Subscribers check each delivery against the publisher it claims to come
 * from: a publisher outside the subscriber's set, or a sequence number not
 * yet sent, counts as invalid (misrouted or corrupt). Everything here runs on
 * one event loop; the flow struct owns all publishers and subscribers. */
#include "tests/bench/bench_flow.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/bench/bench_conn.h"
#include "tests/bench/bench_mqtt.h"
#include "tests/bench/bench_stats.h"

#define PAYLOAD_SEQ_OFF 4
#define PAYLOAD_TS_OFF 12

#define TICK_USEC 10000
#define PACE_USEC 1000
#define SETUP_TIMEOUT_NS (15 * 1000000000ull)
#define STREAM_BUF 65536 /* socket-side buffers of the busy direction */
#define ACK_BUF 16384    /* the ack direction */

enum flow_phase { PHASE_SUBSCRIBING, PHASE_CONNECTING, PHASE_RUN, PHASE_DRAIN, PHASE_DONE };

/* Publisher packet-id states. */
enum { PID_FREE = 0, PID_WAIT_ACK, PID_WAIT_COMP };

struct flow;

struct publisher {
    struct bconn conn;
    struct flow *flow;
    uint32_t id;
    bool connected;
    uint8_t *tmpl; /* one whole PUBLISH */
    size_t tmpl_len;
    size_t pid_off; /* packet id inside tmpl (QoS 1/2) */
    size_t payload_off;
    uint64_t sent;      /* PUBLISH packets queued; also the next sequence number */
    uint64_t completed; /* QoS 1/2 handshakes finished */
    uint32_t inflight;
    uint16_t next_pid;
    uint8_t *pid_state; /* QoS 1/2: one PID_* per packet id */
};

struct subscriber {
    struct bconn conn;
    struct flow *flow;
    uint32_t index;
    bool ready;                   /* SUBACK received */
    uint32_t first_pub, npubs;    /* the publishers it should hear */
    struct seq_tracker *trackers; /* one per publisher heard */
    uint8_t *qos2_rx;             /* QoS 2: 1 while the PUBREL is awaited */
    uint64_t received;
};

struct flow {
    const struct bench_opts *o;
    struct event_base *base;
    struct publisher *pubs;
    uint32_t npub;
    struct subscriber *subs;
    uint32_t nsub;
    enum flow_phase phase;
    char topic_base[48];
    uint32_t connected_pubs, ready_subs;
    uint64_t t_begin, t_start, t_measure, t_stop, t_last_rx, t_progress, t_report;
    bool measuring;
    uint64_t rx_total, tx_total, acked_total, invalid, progress_mark;
    uint64_t rx_at_measure, tx_at_measure, rx_at_stop, tx_at_stop, rx_at_report;
    double cpu_at_measure, cpu_at_stop;
    struct latency_hist hist;
    struct event *tick, *pace, *ping;
    int failures;
};

/* ---- publishers ---- */

static uint16_t
publisher_next_pid(struct publisher *p)
{
    do {
        p->next_pid++;
    } while (p->next_pid == 0 || p->pid_state[p->next_pid] != PID_FREE);
    return p->next_pid;
}

/* Queues up to limit messages (fewer if the buffer, the window or
 * --messages say so). Returns how many. Does not flush. */
static uint64_t
publisher_queue(struct publisher *p, uint64_t limit)
{
    const struct bench_opts *o = p->flow->o;
    uint64_t n = bconn_room(&p->conn) / p->tmpl_len;
    if (n > limit)
        n = limit;
    if (o->qos > 0 && n > o->inflight - p->inflight)
        n = o->inflight - p->inflight;
    if (o->messages > 0 && n > o->messages - p->sent)
        n = o->messages - p->sent;
    if (n == 0)
        return 0;
    uint8_t *out = bconn_reserve(&p->conn, n * p->tmpl_len);
    uint64_t now = bench_now_ns();
    for (uint64_t k = 0; k < n; k++, out += p->tmpl_len) {
        memcpy(out, p->tmpl, p->tmpl_len);
        memcpy(out + p->payload_off + PAYLOAD_SEQ_OFF, &p->sent, 8);
        memcpy(out + p->payload_off + PAYLOAD_TS_OFF, &now, 8);
        if (p->pid_state != NULL) {
            uint16_t pid = publisher_next_pid(p);
            out[p->pid_off] = (uint8_t)(pid >> 8);
            out[p->pid_off + 1] = (uint8_t)pid;
            p->pid_state[pid] = PID_WAIT_ACK;
            p->inflight++;
        }
        p->sent++;
    }
    bconn_commit(&p->conn, n * p->tmpl_len);
    p->flow->tx_total += n;
    return n;
}

/* How many more messages the rate allows this publisher now. */
static uint64_t
publisher_allowance(const struct publisher *p, uint64_t now)
{
    const struct flow *f = p->flow;
    if (f->o->rate <= 0)
        return UINT64_MAX;
    double per_pub = f->o->rate / f->npub;
    uint64_t due = (uint64_t)(per_pub * (double)(now - f->t_start) / 1e9) + 1;
    return due > p->sent ? due - p->sent : 0;
}

static void
publisher_fill(struct bconn *c)
{
    struct publisher *p = c->owner;
    if (p->flow->phase != PHASE_RUN)
        return;
    publisher_queue(p, publisher_allowance(p, bench_now_ns()));
    if (p->flow->o->messages > 0 && p->sent == p->flow->o->messages)
        bconn_want_write(c, false); /* done: stop the writable-event loop */
}

/* Handles PUBACK / PUBREC / PUBCOMP for packet id pid. */
static enum rmq_status
publisher_on_ack(struct publisher *p, enum mqtt_type type, uint16_t pid)
{
    uint8_t qos = p->flow->o->qos;
    uint8_t *state = p->pid_state ? &p->pid_state[pid] : NULL;
    if (type == MQTT_PUBREC) {
        if (qos != 2 || *state != PID_WAIT_ACK)
            return RMQ_PROTOCOL;
        if (!bench_queue_ack(&p->conn, MQTT_PUBREL, pid))
            return RMQ_AGAIN;
        *state = PID_WAIT_COMP;
        return RMQ_OK;
    }
    uint8_t expect = type == MQTT_PUBACK ? PID_WAIT_ACK : PID_WAIT_COMP;
    if (state == NULL || *state != expect || (type == MQTT_PUBACK) != (qos == 1))
        return RMQ_PROTOCOL;
    *state = PID_FREE;
    p->inflight--;
    p->completed++;
    p->flow->acked_total++;
    return RMQ_OK;
}

static enum rmq_status
publisher_on_packet(struct bconn *c, const struct mqtt_packet *pkt)
{
    struct publisher *p = c->owner;
    switch (pkt->type) {
    case MQTT_CONNACK:
        if (p->connected || bench_check_connack(pkt) != RMQ_OK)
            return RMQ_PROTOCOL;
        p->connected = true;
        p->flow->connected_pubs++;
        return RMQ_OK;
    case MQTT_PUBACK:
    case MQTT_PUBREC:
    case MQTT_PUBCOMP:
        return publisher_on_ack(p, pkt->type, pkt->u.packet_id);
    case MQTT_PINGRESP:
        return RMQ_OK;
    default:
        return RMQ_PROTOCOL;
    }
}

static void
flow_fail(struct flow *f, const char *role, uint32_t index, const char *what, int err)
{
    if (f->failures++ == 0)
        fprintf(stderr, "relaymq-bench: %s %u: %s%s%s\n", role, (unsigned)index, what,
                err ? ": " : "", err ? strerror(err) : "");
    event_base_loopbreak(f->base);
}

static void
publisher_on_error(struct bconn *c, enum rmq_status st, const char *what)
{
    struct publisher *p = c->owner;
    flow_fail(p->flow, "publisher", p->id, what, c->err);
}

static const struct bconn_ops publisher_ops = {
    .on_packet = publisher_on_packet,
    .on_fill = publisher_fill,
    .on_error = publisher_on_error,
};

/* Builds the publisher's PUBLISH template. */
static enum rmq_status
publisher_init(struct publisher *p, struct flow *f, uint32_t id)
{
    const struct bench_opts *o = f->o;
    p->flow = f;
    p->id = id;
    p->conn.fd = -1;
    char topic[96];
    snprintf(topic, sizeof(topic), "%s/t/%u", f->topic_base, (unsigned)id);
    uint16_t tlen = (uint16_t)strlen(topic);
    p->tmpl = malloc(MQTT_PUBLISH_HEADER_OVERHEAD + tlen + o->payload);
    if (o->qos > 0)
        p->pid_state = calloc(65536, 1);
    if (p->tmpl == NULL || (o->qos > 0 && p->pid_state == NULL))
        return RMQ_NOMEM;
    size_t h = mqtt_encode_publish_header(p->tmpl, o->qos, false, false, (const uint8_t *)topic,
                                          tlen, 1, o->payload);
    p->payload_off = h;
    p->pid_off = o->qos > 0 ? h - 2 : 0;
    p->tmpl_len = h + o->payload;
    memset(p->tmpl + h, 'x', o->payload);
    memcpy(p->tmpl + h, &id, 4);
    return RMQ_OK;
}

static enum rmq_status
publisher_open(struct publisher *p)
{
    const struct bench_opts *o = p->flow->o;
    size_t out_cap = STREAM_BUF > 2 * p->tmpl_len ? STREAM_BUF : 2 * p->tmpl_len;
    enum rmq_status st =
        bconn_open(&p->conn, p->flow->base, &o->addr, ACK_BUF, out_cap, &publisher_ops, p);
    if (st != RMQ_OK)
        return st;
    char id[BENCH_CLIENT_ID_MAX];
    bench_client_id(o, 'p', p->id, id);
    bench_queue_connect(&p->conn, o, id);
    return bconn_flush(&p->conn);
}

/* ---- subscribers ---- */

/* Counts one delivery and checks it against its publisher. */
static enum rmq_status
subscriber_record(struct subscriber *s, const struct mqtt_publish *m)
{
    struct flow *f = s->flow;
    uint64_t now = bench_now_ns();
    s->received++;
    f->rx_total++;
    f->t_last_rx = now;
    uint32_t id;
    uint64_t seq, ts;
    if (m->payload_len < BENCH_PAYLOAD_MIN) {
        f->invalid++;
        return RMQ_OK;
    }
    memcpy(&id, m->payload, 4);
    memcpy(&seq, m->payload + PAYLOAD_SEQ_OFF, 8);
    memcpy(&ts, m->payload + PAYLOAD_TS_OFF, 8);
    if (id < s->first_pub || id - s->first_pub >= s->npubs || seq >= f->pubs[id].sent) {
        f->invalid++;
        return RMQ_OK;
    }
    if (seq_tracker_record(&s->trackers[id - s->first_pub], seq) != RMQ_OK)
        return RMQ_NOMEM;
    if (ts >= f->t_measure && (f->t_stop == 0 || ts < f->t_stop) && now >= ts)
        latency_hist_record(&f->hist, now - ts);
    return RMQ_OK;
}

static enum rmq_status
subscriber_on_publish(struct subscriber *s, const struct mqtt_publish *m)
{
    if (m->qos > s->flow->o->qos)
        return RMQ_PROTOCOL; /* delivered above the granted QoS */
    if (m->qos == 1 && !bench_queue_ack(&s->conn, MQTT_PUBACK, m->packet_id))
        return RMQ_AGAIN;
    if (m->qos == 2) {
        if (!bench_queue_ack(&s->conn, MQTT_PUBREC, m->packet_id))
            return RMQ_AGAIN;
        if (s->qos2_rx[m->packet_id])
            return RMQ_OK; /* a resend before our PUBREC arrived: already counted */
        s->qos2_rx[m->packet_id] = 1;
    }
    return subscriber_record(s, m);
}

static enum rmq_status
subscriber_on_suback(struct subscriber *s, const struct mqtt_packet *pkt)
{
    size_t pos = 0;
    struct mqtt_str none;
    uint8_t code = MQTT_SUBACK_FAILURE;
    if (s->ready || !mqtt_topic_iter_next(MQTT_SUBACK, &pkt->u.list, &pos, &none, &code) ||
        code == MQTT_SUBACK_FAILURE)
        return RMQ_PROTOCOL;
    s->ready = true;
    s->flow->ready_subs++;
    return RMQ_OK;
}

static enum rmq_status
subscriber_on_packet(struct bconn *c, const struct mqtt_packet *pkt)
{
    struct subscriber *s = c->owner;
    struct flow *f = s->flow;
    char filter[96];
    switch (pkt->type) {
    case MQTT_CONNACK:
        if (bench_check_connack(pkt) != RMQ_OK)
            return RMQ_PROTOCOL;
        if (f->o->scenario == BENCH_FANIN)
            snprintf(filter, sizeof(filter), "%s/t/+", f->topic_base);
        else
            snprintf(filter, sizeof(filter), "%s/t/%u", f->topic_base, (unsigned)s->first_pub);
        return bench_queue_subscribe(c, 1, filter, f->o->qos) ? RMQ_OK : RMQ_AGAIN;
    case MQTT_SUBACK:
        return subscriber_on_suback(s, pkt);
    case MQTT_PUBLISH:
        return subscriber_on_publish(s, &pkt->u.publish);
    case MQTT_PUBREL:
        if (s->qos2_rx == NULL)
            return RMQ_PROTOCOL;
        if (!bench_queue_ack(c, MQTT_PUBCOMP, pkt->u.packet_id))
            return RMQ_AGAIN;
        s->qos2_rx[pkt->u.packet_id] = 0;
        return RMQ_OK;
    case MQTT_PINGRESP:
        return RMQ_OK;
    default:
        return RMQ_PROTOCOL;
    }
}

static void
subscriber_on_error(struct bconn *c, enum rmq_status st, const char *what)
{
    struct subscriber *s = c->owner;
    flow_fail(s->flow, "subscriber", s->index, what, c->err);
}

static const struct bconn_ops subscriber_ops = {
    .on_packet = subscriber_on_packet,
    .on_fill = NULL,
    .on_error = subscriber_on_error,
};

static enum rmq_status
subscriber_init(struct subscriber *s, struct flow *f, uint32_t index, uint32_t first_pub,
                uint32_t npubs)
{
    s->flow = f;
    s->index = index;
    s->conn.fd = -1;
    s->first_pub = first_pub;
    s->npubs = npubs;
    s->trackers = calloc(npubs, sizeof(*s->trackers));
    if (f->o->qos == 2)
        s->qos2_rx = calloc(65536, 1);
    if (s->trackers == NULL || (f->o->qos == 2 && s->qos2_rx == NULL))
        return RMQ_NOMEM;
    for (uint32_t i = 0; i < npubs; i++)
        seq_tracker_init(&s->trackers[i]);
    return RMQ_OK;
}

static enum rmq_status
subscriber_open(struct subscriber *s)
{
    const struct bench_opts *o = s->flow->o;
    size_t in_cap = (size_t)o->payload + 256;
    in_cap = in_cap * 2 > STREAM_BUF ? in_cap * 2 : STREAM_BUF;
    enum rmq_status st =
        bconn_open(&s->conn, s->flow->base, &o->sub_addr, in_cap, ACK_BUF, &subscriber_ops, s);
    if (st != RMQ_OK)
        return st;
    char id[BENCH_CLIENT_ID_MAX];
    bench_client_id(o, 's', s->index, id);
    bench_queue_connect(&s->conn, o, id);
    return bconn_flush(&s->conn);
}

/* ---- the run ---- */

/* Sizes the run from the scenario and builds every publisher/subscriber. */
static enum rmq_status
flow_init(struct flow *f)
{
    const struct bench_opts *o = f->o;
    snprintf(f->topic_base, sizeof(f->topic_base), "bench/%x%llx", (unsigned)getpid(),
             (unsigned long long)(bench_now_ns() & 0xffffffffull));
    f->npub = o->scenario == BENCH_FANOUT ? 1 : o->clients;
    f->nsub = o->scenario == BENCH_FANIN ? 1 : o->clients;
    f->pubs = calloc(f->npub, sizeof(*f->pubs));
    f->subs = calloc(f->nsub, sizeof(*f->subs));
    if (f->pubs == NULL || f->subs == NULL)
        return RMQ_NOMEM;
    for (uint32_t i = 0; i < f->npub; i++)
        if (publisher_init(&f->pubs[i], f, i) != RMQ_OK)
            return RMQ_NOMEM;
    for (uint32_t i = 0; i < f->nsub; i++) {
        uint32_t first = o->scenario == BENCH_PAIRS || o->scenario == BENCH_LATENCY ? i : 0;
        uint32_t n = o->scenario == BENCH_FANIN ? f->npub : 1;
        if (subscriber_init(&f->subs[i], f, i, first, n) != RMQ_OK)
            return RMQ_NOMEM;
    }
    latency_hist_init(&f->hist);
    return RMQ_OK;
}

static void
flow_free(struct flow *f)
{
    for (uint32_t i = 0; f->pubs != NULL && i < f->npub; i++) {
        bconn_close(&f->pubs[i].conn);
        free(f->pubs[i].tmpl);
        free(f->pubs[i].pid_state);
    }
    for (uint32_t i = 0; f->subs != NULL && i < f->nsub; i++) {
        struct subscriber *s = &f->subs[i];
        bconn_close(&s->conn);
        for (uint32_t k = 0; s->trackers != NULL && k < s->npubs; k++)
            seq_tracker_free(&s->trackers[k]);
        free(s->trackers);
        free(s->qos2_rx);
    }
    free(f->pubs);
    free(f->subs);
    if (f->tick != NULL)
        event_free(f->tick);
    if (f->pace != NULL)
        event_free(f->pace);
    if (f->ping != NULL)
        event_free(f->ping);
}

/* Says goodbye politely so the broker does not log errors. */
static void
flow_disconnect_all(struct flow *f)
{
    for (uint32_t i = 0; i < f->npub + f->nsub; i++) {
        struct bconn *c = i < f->npub ? &f->pubs[i].conn : &f->subs[i - f->npub].conn;
        if (bconn_is_open(c) && bench_queue_empty(c, MQTT_DISCONNECT))
            bconn_flush(c);
    }
}

static void
pace_cb(evutil_socket_t fd, short what, void *arg)
{
    struct flow *f = arg;
    uint64_t now = bench_now_ns();
    for (uint32_t i = 0; i < f->npub && f->phase == PHASE_RUN; i++) {
        struct publisher *p = &f->pubs[i];
        if (publisher_queue(p, publisher_allowance(p, now)) > 0)
            bconn_flush(&p->conn);
    }
}

static void
ping_cb(evutil_socket_t fd, short what, void *arg)
{
    struct flow *f = arg;
    for (uint32_t i = 0; i < f->npub + f->nsub; i++) {
        struct bconn *c = i < f->npub ? &f->pubs[i].conn : &f->subs[i - f->npub].conn;
        if (bconn_is_open(c) && bench_queue_empty(c, MQTT_PINGREQ))
            bconn_flush(c);
    }
}

static void
flow_start(struct flow *f, uint64_t now)
{
    const struct bench_opts *o = f->o;
    f->phase = PHASE_RUN;
    f->t_start = f->t_progress = f->t_report = now;
    f->t_measure = o->messages > 0 ? now : now + (uint64_t)(o->warmup * 1e9);
    if (o->rate > 0) {
        struct timeval tv = {0, PACE_USEC};
        event_add(f->pace, &tv);
    }
    for (uint32_t i = 0; i < f->npub; i++) {
        struct publisher *p = &f->pubs[i];
        if (o->qos == 0 && o->rate <= 0)
            bconn_want_write(&p->conn, true);
        publisher_queue(p, publisher_allowance(p, now));
        bconn_flush(&p->conn);
    }
}

static void
flow_stop(struct flow *f, uint64_t now)
{
    f->phase = PHASE_DRAIN;
    f->t_stop = now;
    f->rx_at_stop = f->rx_total;
    f->tx_at_stop = f->tx_total;
    f->cpu_at_stop = bench_cpu_seconds();
    event_del(f->pace);
    for (uint32_t i = 0; i < f->npub; i++)
        bconn_want_write(&f->pubs[i].conn, false);
}

/* True once every message sent reached every subscriber meant to get it
 * and every QoS 1/2 handshake finished. */
static bool
flow_drained(const struct flow *f)
{
    for (uint32_t i = 0; i < f->npub; i++)
        if (f->pubs[i].inflight > 0 || bconn_pending(&f->pubs[i].conn) > 0)
            return false;
    for (uint32_t i = 0; i < f->nsub; i++) {
        const struct subscriber *s = &f->subs[i];
        for (uint32_t k = 0; k < s->npubs; k++)
            if (s->trackers[k].distinct < f->pubs[s->first_pub + k].sent)
                return false;
    }
    return true;
}

static bool
flow_all_sent(const struct flow *f)
{
    for (uint32_t i = 0; i < f->npub; i++)
        if (f->pubs[i].sent < f->o->messages)
            return false;
    return true;
}

/* Opens all publishers once every subscriber is subscribed. */
static void
flow_open_publishers(struct flow *f)
{
    f->phase = PHASE_CONNECTING;
    for (uint32_t i = 0; i < f->npub && f->failures == 0; i++)
        if (publisher_open(&f->pubs[i]) != RMQ_OK && f->failures == 0)
            flow_fail(f, "publisher", i, "cannot open a socket", 0);
}

static void
flow_progress_report(struct flow *f, uint64_t now)
{
    if (!f->o->verbose || now - f->t_report < 1000000000ull)
        return;
    double secs = (double)(now - f->t_report) / 1e9;
    fprintf(stderr, "  t=%.0fs %.0f msg/s received, sent %llu received %llu\n",
            (double)(now - f->t_start) / 1e9, (double)(f->rx_total - f->rx_at_report) / secs,
            (unsigned long long)f->tx_total, (unsigned long long)f->rx_total);
    f->t_report = now;
    f->rx_at_report = f->rx_total;
}

static void
tick_cb(evutil_socket_t fd, short what, void *arg)
{
    struct flow *f = arg;
    const struct bench_opts *o = f->o;
    uint64_t now = bench_now_ns();
    if (f->rx_total + f->acked_total != f->progress_mark) {
        f->progress_mark = f->rx_total + f->acked_total;
        f->t_progress = now;
    }
    switch (f->phase) {
    case PHASE_SUBSCRIBING:
    case PHASE_CONNECTING:
        if (f->phase == PHASE_SUBSCRIBING && f->ready_subs == f->nsub)
            flow_open_publishers(f);
        else if (f->phase == PHASE_CONNECTING && f->connected_pubs == f->npub)
            flow_start(f, now);
        else if (now - f->t_begin > SETUP_TIMEOUT_NS)
            flow_fail(f, "setup", 0, "timed out waiting for CONNACK/SUBACK", 0);
        break;
    case PHASE_RUN:
        if (!f->measuring && now >= f->t_measure) {
            f->measuring = true;
            f->t_measure = now; /* the tick may come a little after the planned start */
            f->rx_at_measure = f->rx_total;
            f->tx_at_measure = f->tx_total;
            f->cpu_at_measure = bench_cpu_seconds();
        }
        if (o->messages > 0 ? flow_all_sent(f)
                            : f->measuring && now >= f->t_measure + (uint64_t)(o->duration * 1e9))
            flow_stop(f, now);
        flow_progress_report(f, now);
        break;
    case PHASE_DRAIN:
        if (flow_drained(f) || now - f->t_progress > (uint64_t)(o->drain * 1e9)) {
            f->phase = PHASE_DONE;
            event_base_loopbreak(f->base);
        }
        break;
    case PHASE_DONE:
        break;
    }
}

struct flow_totals {
    uint64_t expected, distinct, lost, dup, ooo;
};

static struct flow_totals
flow_totals(const struct flow *f)
{
    struct flow_totals t = {0};
    for (uint32_t i = 0; i < f->nsub; i++) {
        const struct subscriber *s = &f->subs[i];
        for (uint32_t k = 0; k < s->npubs; k++) {
            const struct seq_tracker *tr = &s->trackers[k];
            t.expected += f->pubs[s->first_pub + k].sent;
            t.distinct += tr->distinct;
            t.dup += tr->dup;
            t.ooo += tr->ooo;
        }
    }
    t.lost = t.expected - t.distinct;
    return t;
}

/* Prints the human line and the RESULT line; returns the exit status. */
static int
flow_report(const struct flow *f)
{
    const struct bench_opts *o = f->o;
    struct flow_totals t = flow_totals(f);
    double rx_rate = 0, tx_rate = 0, window = 0, cpu = 0;
    if (o->messages > 0 && f->t_stop > 0) {
        uint64_t end = f->t_last_rx > f->t_start ? f->t_last_rx : f->t_stop;
        window = (double)(end - f->t_start) / 1e9;
        rx_rate = window > 0 ? (double)f->rx_total / window : 0;
        tx_rate = (double)f->tx_total / ((double)(f->t_stop - f->t_start) / 1e9 + 1e-9);
    } else if (f->t_stop > 0) {
        window = (double)(f->t_stop - f->t_measure) / 1e9;
        rx_rate = (double)(f->rx_at_stop - f->rx_at_measure) / window;
        tx_rate = (double)(f->tx_at_stop - f->tx_at_measure) / window;
    }
    if (f->t_stop > f->t_measure && f->measuring)
        cpu = 100.0 * (f->cpu_at_stop - f->cpu_at_measure) /
              ((double)(f->t_stop - f->t_measure) / 1e9);
    char pct[160];
    bench_format_percentiles(&f->hist, pct, sizeof(pct));
    printf("%s qos=%u N=%u payload=%u: %.0f msg/s received, %.0f msg/s sent; "
           "lost %llu dup %llu ooo %llu invalid %llu;%s\n",
           o->scenario_name, (unsigned)o->qos, (unsigned)o->clients, (unsigned)o->payload, rx_rate,
           tx_rate, (unsigned long long)t.lost, (unsigned long long)t.dup,
           (unsigned long long)t.ooo, (unsigned long long)f->invalid, pct);
    printf("RESULT scenario=%s status=%s qos=%u clients=%u publishers=%u subscribers=%u "
           "payload=%u inflight=%u rate=%.0f window_s=%.2f msgs_per_sec=%.0f sent_per_sec=%.0f "
           "sent=%llu expected=%llu received=%llu lost=%llu dup=%llu ooo=%llu invalid=%llu "
           "errors=%d%s bench_cpu_pct=%.0f\n",
           o->scenario_name, f->failures ? "failed" : "ok", (unsigned)o->qos, (unsigned)o->clients,
           (unsigned)f->npub, (unsigned)f->nsub, (unsigned)o->payload,
           (unsigned)(o->qos ? o->inflight : 0), o->rate, window, rx_rate, tx_rate,
           (unsigned long long)f->tx_total, (unsigned long long)t.expected,
           (unsigned long long)f->rx_total, (unsigned long long)t.lost, (unsigned long long)t.dup,
           (unsigned long long)t.ooo, (unsigned long long)f->invalid, f->failures, pct, cpu);
    fflush(stdout);
    if (f->failures > 0)
        return BENCH_EXIT_FAILURE;
    bool bad =
        (t.lost > 0 && o->qos > 0) || (t.dup > 0 && o->qos != 1) || t.ooo > 0 || f->invalid > 0;
    return o->check && bad ? BENCH_EXIT_CHECK : BENCH_EXIT_OK;
}

int
bench_flow_run(const struct bench_opts *o)
{
    struct flow *f = calloc(1, sizeof(*f)); /* the histogram is large */
    if (f == NULL)
        return BENCH_EXIT_FAILURE;
    f->o = o;
    int rc = BENCH_EXIT_FAILURE;
    f->base = event_base_new();
    if (f->base == NULL || flow_init(f) != RMQ_OK)
        goto out;
    f->tick = event_new(f->base, -1, EV_PERSIST, tick_cb, f);
    f->pace = event_new(f->base, -1, EV_PERSIST, pace_cb, f);
    f->ping = event_new(f->base, -1, EV_PERSIST, ping_cb, f);
    if (f->tick == NULL || f->pace == NULL || f->ping == NULL)
        goto out;
    struct timeval tick = {0, TICK_USEC};
    event_add(f->tick, &tick);
    if (o->keepalive > 0) {
        struct timeval ping = {o->keepalive / 2 > 0 ? o->keepalive / 2 : 1, 0};
        event_add(f->ping, &ping);
    }
    f->t_begin = bench_now_ns();
    for (uint32_t i = 0; i < f->nsub && f->failures == 0; i++)
        if (subscriber_open(&f->subs[i]) != RMQ_OK && f->failures == 0)
            flow_fail(f, "subscriber", i, "cannot open a socket", 0);
    if (f->failures == 0)
        event_base_dispatch(f->base);
    flow_disconnect_all(f);
    rc = flow_report(f);
out:
    flow_free(f);
    if (f->base != NULL)
        event_base_free(f->base);
    free(f);
    return rc;
}
