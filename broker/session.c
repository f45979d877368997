/* MQTT session state: subscriptions, the outgoing inflight window and queue,
 * and the packet ids of incoming QoS 2 messages not yet released.
 *
 * Invariants: inflight[] is ordered oldest first and never holds more than
 * cfg->max_inflight entries; the queue only holds QoS 1/2 messages, and is
 * non-empty only while the window is full or the client is offline, so
 * messages leave in the order they arrived. Each inflight or queued entry
 * owns one message reference (QoS 2 entries drop it at PUBREC).
 *
 * Loop thread only. */
#include <stdlib.h>
#include <string.h>

#include "broker/broker_internal.h"
#include "broker/topic_tree.h"
#include "common/log.h"

#define QUEUE_MIN 8   /* entries of a session queue's first ring */
#define QUEUE_KEEP 16 /* an emptied ring up to this size is kept for the next burst */

struct session *
session_new(const char *client_id, size_t len, bool clean)
{
    struct session *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->client_id = malloc(len + 1);
    if (!s->client_id) {
        free(s);
        return NULL;
    }
    memcpy(s->client_id, client_id, len);
    s->client_id[len] = '\0';
    s->client_id_len = (uint16_t)len;
    s->clean = clean;
    return s;
}

/* Queue length at which publishers to an online session are paused, and
 * the length at which they resume. */
static uint32_t
throttle_high(const struct broker *b)
{
    uint32_t max = b->cfg->max_queued_messages;
    return max > 1 ? max / 2 : 1;
}

static bool
in_throttling(const struct broker *b, const struct session *s)
{
    return s->throttling_prev || b->throttling == s;
}

/* Takes s off the broker's list of sessions with paused publishers.
 * Idempotent. */
void
session_unlink_throttling(struct broker *b, struct session *s)
{
    if (!in_throttling(b, s))
        return;
    if (s->throttling_prev)
        s->throttling_prev->throttling_next = s->throttling_next;
    else if (b->throttling == s)
        b->throttling = s->throttling_next;
    if (s->throttling_next)
        s->throttling_next->throttling_prev = s->throttling_prev;
    s->throttling_prev = s->throttling_next = NULL;
}

void
session_unthrottle(struct broker *b, struct session *s)
{
    session_unlink_throttling(b, s);
    while (s->throttled) {
        struct conn *c = s->throttled;
        s->throttled = c->throttle_next;
        c->throttle_next = NULL;
        c->throttled_by = NULL;
        if (!c->rate_paused) /* the rate timer resumes it */
            conn_resume_input(c);
    }
}

/* A publisher is paused only if pausing it cannot stall the queue it
 * waits on: never the subscriber itself, and never a client whose own
 * session is backed up (it must keep reading its acknowledgements). */
static void
maybe_throttle(struct broker *b, struct session *s)
{
    struct conn *pub = b->publisher;
    if (!pub || pub->throttled_by || pub == s->conn || s->stalled ||
        !b->cfg->backpressure_timeout_ms || s->queue_len < throttle_high(b))
        return;
    struct session *own = pub->session;
    if (own && (own->queue_len || own->inflight_count >= b->cfg->max_inflight))
        return;
    if (!in_throttling(b, s)) {
        s->throttled_since_ms = broker_now(b);
        s->throttling_next = b->throttling;
        if (b->throttling)
            b->throttling->throttling_prev = s;
        b->throttling = s;
    }
    conn_throttle(pub, s);
}

void
session_check_stalls(struct broker *b)
{
    struct session *s = b->throttling;
    while (s) {
        struct session *next = s->throttling_next;
        if (broker_now(b) - s->throttled_since_ms >= b->cfg->backpressure_timeout_ms) {
            log_warn("client %s: queue full for %llu ms, dropping its overflow instead of "
                     "pausing publishers", s->client_id,
                     (unsigned long long)b->cfg->backpressure_timeout_ms);
            s->stalled = true;
            session_unthrottle(b, s);
        }
        s = next;
    }
}

void
session_free(struct broker *b, struct session *s)
{
    if (!s)
        return;
    session_notify(b, s, SESSION_ENDED, NULL, 0, 0, NULL);
    s->freeing = true;
    session_unthrottle(b, s);
    session_ghost_release_routes(b, s);
    for (uint32_t i = 0; i < s->sub_count; i++) {
        const char *inner;
        size_t inner_len;
        if (s->ghost && share_parse(s->subs[i].filter, s->subs[i].len, &inner, &inner_len))
            share_unsubscribe(b, s->subs[i].filter, s->subs[i].len, s);
        else if (s->ghost) /* its filters' counts were released when it became a ghost */
            topic_tree_unsubscribe(b->subs, s->subs[i].filter, s->subs[i].len, s);
        else
            broker_unsubscribe(b, s->subs[i].filter, s->subs[i].len, s);
        free(s->subs[i].filter);
    }
    free(s->subs);
    for (uint16_t i = 0; i < s->inflight_count; i++)
        message_unref(s->inflight[i].msg);
    free(s->inflight);
    for (uint32_t i = 0; i < s->queue_len; i++)
        message_unref(session_queued(s, i)->msg);
    free(s->queue);
    free(s->qos2_in);
    free(s->origin);
    if (s->ghost) {
        timer_entry_cancel(&s->ghost->timer);
        free(s->ghost->addr);
        free(s->ghost);
    }
    free(s->client_id);
    free(s);
}

/* The routed message as a refcounted object, made on first need. */
static struct message *
route_message(struct broker *b, struct route *r)
{
    if (!r->msg)
        r->msg = message_new(r->topic, r->topic_len, r->payload, r->payload_len, r->qos, r->retain,
                             broker_now(b));
    return r->msg;
}

static void
count_sent(struct broker *b, uint8_t qos)
{
    b->metrics.messages_sent++;
    if (qos == 0)
        b->metrics.messages_sent_qos0++;
    else if (qos == 1)
        b->metrics.messages_sent_qos1++;
    else
        b->metrics.messages_sent_qos2++;
}

/* Encodes a PUBLISH into c's output. A large payload of a message object
 * is queued by reference, so a fan-out keeps one copy of it. */
static void
send_publish(struct conn *c, const char *topic, uint16_t topic_len, struct message *msg,
             const uint8_t *payload, uint32_t payload_len, uint8_t qos, uint16_t packet_id,
             bool dup, bool retain)
{
    /* Room for the reference first, so the header never goes out alone.
     * WebSocket clients get a copy: their output is framed piece by piece. */
    bool by_ref = msg && payload_len >= OUTQ_REF_MIN && !c->ws &&
                  outq_ref_room(&c->out) == RMQ_OK;
    size_t total = mqtt_publish_size(qos, topic_len, payload_len);
    size_t body = by_ref ? 0 : payload_len;
    uint8_t *p = conn_reserve(c, total - payload_len + body);
    if (!p)
        return; /* out of memory: the connection is being closed */
    size_t h = mqtt_encode_publish_header(p, qos, dup, retain, (const uint8_t *)topic, topic_len,
                                          packet_id, payload_len);
    if (body)
        memcpy(p + h, payload, body);
    else if (by_ref)
        conn_write_ref(c, msg);
    count_sent(c->broker, qos);
}

static void
send_message(struct conn *c, struct message *msg, uint8_t qos, uint16_t packet_id, bool dup,
             bool retain)
{
    send_publish(c, msg->topic, msg->topic_len, msg, msg->payload, msg->payload_len, qos,
                 packet_id, dup, retain);
}

static bool
packet_id_in_use(const struct session *s, uint16_t id)
{
    for (uint16_t i = 0; i < s->inflight_count; i++)
        if (s->inflight[i].packet_id == id)
            return true;
    return false;
}

static uint16_t
next_packet_id(struct session *s)
{
    do {
        s->next_packet_id++;
        if (s->next_packet_id == 0)
            s->next_packet_id = 1;
    } while (packet_id_in_use(s, s->next_packet_id));
    return s->next_packet_id;
}

/* Puts msg in the window and sends it. The window has room. */
static bool
start_inflight(struct broker *b, struct session *s, struct message *msg, uint8_t qos, bool retain)
{
    if (s->inflight_count == s->inflight_cap) {
        uint32_t cap = s->inflight_cap ? s->inflight_cap * 2u : 4u;
        if (cap > b->cfg->max_inflight)
            cap = b->cfg->max_inflight;
        struct inflight *n = realloc(s->inflight, cap * sizeof(*n));
        if (!n)
            return false;
        s->inflight = n;
        s->inflight_cap = (uint16_t)cap;
    }
    uint16_t id = next_packet_id(s);
    s->inflight[s->inflight_count++] =
        (struct inflight){.msg = message_ref(msg), .packet_id = id, .qos = qos, .retain = retain};
    send_message(s->conn, msg, qos, id, false, retain);
    return true;
}

static bool
window_open(const struct broker *b, const struct session *s)
{
    return s->conn && s->inflight_count < b->cfg->max_inflight;
}

/* Doubles the queue's ring (the messages keep their order). */
static bool
queue_grow(struct session *s)
{
    uint32_t cap = s->queue_cap ? s->queue_cap * 2 : QUEUE_MIN;
    struct queued *q = malloc((size_t)cap * sizeof(*q));
    if (!q)
        return false;
    for (uint32_t i = 0; i < s->queue_len; i++)
        q[i] = *session_queued(s, i);
    free(s->queue);
    s->queue = q;
    s->queue_head = 0;
    s->queue_cap = cap;
    return true;
}

static void
enqueue(struct broker *b, struct session *s, struct message *msg, uint8_t qos, bool retain)
{
    if (s->queue_len >= b->cfg->max_queued_messages) {
        b->metrics.messages_dropped++;
        return;
    }
    uint64_t max_bytes = b->cfg->max_queued_bytes;
    if (max_bytes && s->queue_bytes + msg->payload_len > max_bytes) {
        b->metrics.messages_dropped++;
        b->metrics.queue_bytes_dropped++;
        return;
    }
    if (s->queue_len == s->queue_cap && !queue_grow(s)) {
        b->metrics.messages_dropped++;
        return;
    }
    if (!s->conn || b->cfg->durable_sessions)
        session_notify(b, s, SESSION_QUEUED, NULL, 0, qos, msg);
    *session_queued(s, s->queue_len) =
        (struct queued){.msg = message_ref(msg), .qos = qos, .retain = retain};
    s->queue_len++;
    s->queue_bytes += msg->payload_len;
}

/* Moves queued messages into the window while it has room. */
static void
pump(struct broker *b, struct session *s)
{
    while (s->queue_len && window_open(b, s)) {
        struct queued *q = session_queued(s, 0);
        if (!start_inflight(b, s, q->msg, q->qos, q->retain))
            return;
        s->queue_head = (s->queue_head + 1) & (s->queue_cap - 1);
        s->queue_len--;
        s->queue_bytes -= q->msg->payload_len;
        message_unref(q->msg);
    }
    if (!s->queue_len && s->queue_cap > QUEUE_KEEP) { /* a burst is over: its room goes */
        free(s->queue);
        s->queue = NULL;
        s->queue_head = s->queue_cap = 0;
    }
    if (s->queue_len <= throttle_high(b) / 2) {
        s->stalled = false;
        if (s->throttled)
            session_unthrottle(b, s);
        if (b->remote_waiting && b->room_fn) {
            b->remote_waiting = false;
            b->room_fn(b->room_ctx);
        }
    }
}

void
session_deliver(struct broker *b, struct session *s, struct route *r, uint8_t qos, bool retain)
{
    if (s->ghost) {
        session_redirect(b, s, r, qos, retain);
        return;
    }
    if (qos == 0) {
        struct conn *c = s->conn;
        if (!c)
            return; /* QoS 0 is not kept for offline clients */
        if (outq_pending(&c->out) > b->cfg->max_output_buffer) {
            b->metrics.messages_dropped++;
            return;
        }
        /* A large payload becomes one shared message for every subscriber. */
        struct message *msg = r->payload_len >= OUTQ_REF_MIN ? route_message(b, r) : NULL;
        send_publish(c, r->topic, r->topic_len, msg, r->payload, r->payload_len, 0, 0, false,
                     retain);
        return;
    }
    struct message *msg = route_message(b, r);
    if (!msg) {
        b->metrics.messages_dropped++;
        return;
    }
    if (!s->queue_len && window_open(b, s) && start_inflight(b, s, msg, qos, retain)) {
        if (b->cfg->durable_sessions)
            session_notify(b, s, SESSION_QUEUED, NULL, 0, qos, msg);
        return;
    }
    enqueue(b, s, msg, qos, retain);
    if (s->conn)
        maybe_throttle(b, s);
}

void
session_resume(struct broker *b, struct session *s)
{
    uint8_t ack[4];
    for (uint16_t i = 0; i < s->inflight_count; i++) {
        struct inflight *f = &s->inflight[i];
        if (f->msg) {
            send_message(s->conn, f->msg, f->qos, f->packet_id, true, f->retain);
        } else {
            mqtt_encode_ack(ack, MQTT_PUBREL, f->packet_id);
            conn_write(s->conn, ack, sizeof(ack));
        }
    }
    pump(b, s);
}

static int
find_inflight(const struct session *s, uint16_t id)
{
    for (uint16_t i = 0; i < s->inflight_count; i++)
        if (s->inflight[i].packet_id == id)
            return i;
    return -1;
}

static void
remove_inflight(struct session *s, int i)
{
    message_unref(s->inflight[i].msg);
    s->inflight_count--;
    memmove(&s->inflight[i], &s->inflight[i + 1],
            (size_t)(s->inflight_count - i) * sizeof(s->inflight[0]));
}

void
session_ack(struct broker *b, struct session *s, enum mqtt_type type, uint16_t packet_id)
{
    int i = find_inflight(s, packet_id);
    struct inflight *f = i >= 0 ? &s->inflight[i] : NULL;
    uint8_t ack[4];

    if (f && f->msg && f->msg->tag && s->conn &&
        ((type == MQTT_PUBACK && f->qos == 1) || (type == MQTT_PUBREC && f->qos == 2))) {
        for (size_t k = 0; k < b->observer_count; k++) {
            const struct broker_observer *o = b->observers[k];
            if (o->acked)
                o->acked(o->ctx, s->conn->channel, f->msg->tag);
        }
    }
    if (f && f->msg && b->cfg->durable_sessions &&
        ((type == MQTT_PUBACK && f->qos == 1) || (type == MQTT_PUBREC && f->qos == 2)))
        session_notify(b, s, SESSION_SETTLED, NULL, 0, f->qos, f->msg);
    switch (type) {
    case MQTT_PUBACK:
        if (f && f->qos == 1)
            remove_inflight(s, i);
        break;
    case MQTT_PUBREC:
        if (f && f->qos == 2) {
            message_unref(f->msg); /* the payload is delivered; only the id remains */
            f->msg = NULL;
        }
        /* Answer even an unknown id so the client can finish its flow. */
        mqtt_encode_ack(ack, MQTT_PUBREL, packet_id);
        conn_write(s->conn, ack, sizeof(ack));
        break;
    case MQTT_PUBCOMP:
        if (f && f->qos == 2 && !f->msg)
            remove_inflight(s, i);
        break;
    default:
        break;
    }
    pump(b, s);
}

enum rmq_status
session_add_sub(struct session *s, const char *filter, uint16_t len, uint8_t qos, bool is_new)
{
    for (uint32_t i = 0; !is_new && i < s->sub_count; i++) {
        if (s->subs[i].len == len && memcmp(s->subs[i].filter, filter, len) == 0) {
            s->subs[i].qos = qos;
            return RMQ_OK;
        }
    }
    if (s->sub_count == s->sub_cap) {
        uint32_t cap = s->sub_cap ? s->sub_cap * 2 : 2;
        struct subscription *n = realloc(s->subs, cap * sizeof(*n));
        if (!n)
            return RMQ_NOMEM;
        s->subs = n;
        s->sub_cap = cap;
    }
    char *copy = malloc((size_t)len + 1);
    if (!copy)
        return RMQ_NOMEM;
    memcpy(copy, filter, len);
    copy[len] = '\0';
    s->subs[s->sub_count++] = (struct subscription){.filter = copy, .len = len, .qos = qos};
    return RMQ_OK;
}

bool
session_remove_sub(struct session *s, const char *filter, uint16_t len)
{
    for (uint32_t i = 0; i < s->sub_count; i++) {
        if (s->subs[i].len == len && memcmp(s->subs[i].filter, filter, len) == 0) {
            free(s->subs[i].filter);
            s->subs[i] = s->subs[--s->sub_count];
            return true;
        }
    }
    return false;
}

bool
session_qos2_seen(struct session *s, uint16_t packet_id, bool *nomem)
{
    *nomem = false;
    for (uint16_t i = 0; i < s->qos2_in_count; i++)
        if (s->qos2_in[i] == packet_id)
            return true;
    if (s->qos2_in_count == s->qos2_in_cap) {
        if (s->qos2_in_cap == UINT16_MAX) {
            *nomem = true;
            return false;
        }
        uint32_t cap = s->qos2_in_cap ? s->qos2_in_cap * 2u : 4u;
        if (cap > UINT16_MAX)
            cap = UINT16_MAX;
        uint16_t *n = realloc(s->qos2_in, cap * sizeof(*n));
        if (!n) {
            *nomem = true;
            return false;
        }
        s->qos2_in = n;
        s->qos2_in_cap = (uint16_t)cap;
    }
    s->qos2_in[s->qos2_in_count++] = packet_id;
    return false;
}

void
session_qos2_release(struct session *s, uint16_t packet_id)
{
    for (uint16_t i = 0; i < s->qos2_in_count; i++) {
        if (s->qos2_in[i] == packet_id) {
            s->qos2_in[i] = s->qos2_in[--s->qos2_in_count];
            return;
        }
    }
}
