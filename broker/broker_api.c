/* Requests from outside the MQTT protocol (admin API, internal node API)
 * carried out on the broker loop; see broker_api.h.
 *
 * Loop thread only, like everything else that touches struct broker. The
 * JSON built here is handed to the caller, which sends it from the HTTP
 * thread; nothing here keeps a reference to it. */
#include "broker/broker_api.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "broker/broker_internal.h"
#include "broker/retain.h"
#include "broker/topic.h"
#include "broker/topic_tree.h"
#include "common/hashmap.h"
#include "common/clock.h"

static const char *
protocol_name(uint8_t level)
{
    return level == MQTT_PROTO_V31 ? "3.1" : level == MQTT_PROTO_V311 ? "3.1.1" : "unknown";
}

static json_t *
subscriptions_json(const struct session *s)
{
    json_t *subs = json_array();
    for (uint32_t i = 0; subs && i < s->sub_count; i++) {
        const struct subscription *sub = &s->subs[i];
        json_t *one =
            json_pack("{s:s%,s:i}", "filter", sub->filter, (size_t)sub->len, "qos", (int)sub->qos);
        if (!one || json_array_append_new(subs, one) != 0) {
            json_decref(subs);
            return NULL;
        }
    }
    return subs;
}

/* "2024-05-01T12:00:00.123Z" */
static json_t *
iso_time(uint64_t ms)
{
    char text[40];
    return clock_iso8601(ms, text, sizeof(text)) ? json_string(text) : json_null();
}

/* The connection's fields, or nulls for an offline session. */
static json_t *
connection_json(const struct conn *c)
{
    if (!c)
        return json_pack("{s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n}", "channel", "peer", "connected_at",
                         "connected_at_ms", "username", "protocol", "protocol_level", "keepalive");
    return json_pack("{s:I,s:s,s:o,s:I,s:o,s:s,s:i,s:i}", "channel", (json_int_t)c->channel, "peer",
                     c->peer, "connected_at", iso_time(c->connected_at_ms), "connected_at_ms",
                     (json_int_t)c->connected_at_ms, "username",
                     c->username ? json_string(c->username) : json_null(), "protocol",
                     protocol_name(c->protocol_level), "protocol_level", (int)c->protocol_level,
                     "keepalive", (int)c->keepalive);
}

json_t *
broker_api_client_json(struct broker *b, const char *client_id)
{
    struct session *s = hashmap_get(b->sessions, client_id, strlen(client_id));
    if (!s)
        return NULL;
    json_t *doc = json_pack("{s:s%,s:b,s:s}", "client_id", s->client_id, (size_t)s->client_id_len,
                            "online", s->conn != NULL, "node", b->cfg->node_id);
    json_t *conn = connection_json(s->conn);
    json_t *rest = json_pack("{s:b,s:o,s:i,s:i}", "clean_session", s->clean, "subscriptions",
                             subscriptions_json(s), "inflight", (int)s->inflight_count, "queued",
                             (int)s->queue_len);
    bool ok = doc && conn && rest && json_object_update(doc, conn) == 0 &&
              json_object_update(doc, rest) == 0;
    json_decref(conn);
    json_decref(rest);
    if (!ok) {
        json_decref(doc);
        return NULL;
    }
    return doc;
}

bool
broker_api_has_client(struct broker *b, const char *client_id)
{
    return hashmap_get(b->sessions, client_id, strlen(client_id)) != NULL;
}

static json_t *
client_summary(struct broker *b, const struct session *s)
{
    const struct conn *c = s->conn;
    return json_pack("{s:s%,s:s,s:I,s:s,s:s,s:b}", "client_id", s->client_id,
                     (size_t)s->client_id_len, "node", b->cfg->node_id, "channel",
                     (json_int_t)c->channel, "peer", c->peer, "protocol",
                     protocol_name(c->protocol_level), "clean_session", s->clean);
}

static int
compare_ids(const void *a, const void *b)
{
    const struct session *x = *(struct session *const *)a, *y = *(struct session *const *)b;
    size_t n = x->client_id_len < y->client_id_len ? x->client_id_len : y->client_id_len;
    int d = memcmp(x->client_id, y->client_id, n);
    return d ? d : (x->client_id_len > y->client_id_len) - (x->client_id_len < y->client_id_len);
}

/* True if s's id sorts after `after`. */
static bool
sorts_after(const struct session *s, const char *after, size_t after_len)
{
    size_t n = s->client_id_len < after_len ? s->client_id_len : after_len;
    int d = memcmp(s->client_id, after, n);
    return d > 0 || (d == 0 && s->client_id_len > after_len);
}

/* Sorts every connected client after the cursor each time: O(n log n) per
 * page, acceptable for an admin listing. */
enum rmq_status
broker_api_list_clients(struct broker *b, const char *after, size_t limit, json_t **page,
                        bool *more)
{
    if (!after)
        after = "";
    size_t after_len = strlen(after), n = 0, pos = 0, len;
    const void *key;
    void *value;
    struct session **found = malloc((b->connected_count + 1) * sizeof(*found));
    json_t *arr = json_array();
    if (!found || !arr)
        goto fail;
    while (hashmap_next(b->sessions, &pos, &key, &len, &value)) {
        struct session *s = value;
        if (s->conn && n < b->connected_count && sorts_after(s, after, after_len))
            found[n++] = s;
    }
    qsort(found, n, sizeof(*found), compare_ids);
    for (size_t i = 0; i < n && i < limit; i++) {
        json_t *one = client_summary(b, found[i]);
        if (!one || json_array_append_new(arr, one) != 0)
            goto fail;
    }
    *more = n > limit;
    *page = arr;
    free(found);
    return RMQ_OK;
fail:
    free(found);
    json_decref(arr);
    return RMQ_NOMEM;
}

static struct conn *
find_channel(struct broker *b, uint64_t channel)
{
    for (struct conn *c = b->conns; c; c = c->next)
        if (c->channel == channel)
            return c;
    return NULL;
}

enum rmq_status
broker_api_kick_client(struct broker *b, const char *client_id, uint64_t *channel)
{
    struct session *s = hashmap_get(b->sessions, client_id, strlen(client_id));
    if (!s || !s->conn)
        return RMQ_NOT_FOUND;
    if (channel)
        *channel = s->conn->channel;
    broker_refresh_clock(b);
    conn_close(s->conn, CLOSE_KICKED); /* may free a clean session: s is gone */
    return RMQ_OK;
}

static bool
message_valid(const char *topic, size_t topic_len, size_t payload_len, uint8_t qos)
{
    return qos <= 2 && topic_len <= UINT16_MAX && payload_len <= UINT32_MAX &&
           !memchr(topic, '\0', topic_len) && topic_name_valid(topic, topic_len);
}

enum rmq_status
broker_api_publish(struct broker *b, const char *topic, size_t topic_len, const void *payload,
                   size_t payload_len, uint8_t qos, bool retain)
{
    if (!message_valid(topic, topic_len, payload_len, qos))
        return RMQ_INVALID;
    broker_refresh_clock(b);
    b->metrics.messages_received++;
    if (qos == 0)
        b->metrics.messages_received_qos0++;
    else if (qos == 1)
        b->metrics.messages_received_qos1++;
    else
        b->metrics.messages_received_qos2++;
    struct route r = {
        .topic = topic,
        .topic_len = (uint16_t)topic_len,
        .payload = payload,
        .payload_len = (uint32_t)payload_len,
        .qos = qos,
        .retain = retain,
    };
    broker_route(b, &r);
    return RMQ_OK;
}

enum rmq_status
broker_api_deliver(struct broker *b, uint64_t channel, const char *topic, size_t topic_len,
                   const void *payload, size_t payload_len, uint8_t qos, bool retain,
                   uint64_t tag)
{
    if (!message_valid(topic, topic_len, payload_len, qos))
        return RMQ_INVALID;
    struct conn *c = find_channel(b, channel);
    if (!c || !c->session)
        return RMQ_NOT_FOUND;
    broker_refresh_clock(b);
    struct message *msg = NULL;
    if (tag && qos > 0) {
        msg = message_new(topic, (uint16_t)topic_len, payload, (uint32_t)payload_len, qos, retain,
                          broker_now(b));
        if (!msg)
            return RMQ_NOMEM;
        msg->tag = tag;
    }
    struct route r = {
        .topic = topic,
        .topic_len = (uint16_t)topic_len,
        .payload = payload,
        .payload_len = (uint32_t)payload_len,
        .qos = qos,
        .retain = retain,
        .msg = msg,
    };
    session_deliver(b, c->session, &r, qos, retain);
    message_unref(r.msg); /* made lazily by the session if it had to keep the message */
    return RMQ_OK;
}

void
broker_api_gauges(struct broker *b, struct broker_gauges *out)
{
    broker_refresh_clock(b);
    *out = (struct broker_gauges){
        .connections = b->conn_count,
        .connected_clients = b->connected_count,
        .sessions = hashmap_count(b->sessions),
        .subscriptions = topic_tree_count(b->subs),
        .retained_messages = retain_count(b->retained),
        .uptime_seconds = (broker_now(b) - b->started_ms) / 1000u,
    };
}

enum rmq_status
broker_api_route_remote(struct broker *b, const char *topic, size_t topic_len, const void *payload,
                        size_t payload_len, uint8_t qos, bool retain, bool *backed_up)
{
    *backed_up = false;
    /* The frame decoder checked the topic (UTF-8, no NUL, no wildcard). */
    if (qos > 2 || topic_len == 0 || topic_len > UINT16_MAX || payload_len > UINT32_MAX)
        return RMQ_INVALID;
    b->metrics.messages_from_peers++;
    struct route r = {
        .topic = topic,
        .topic_len = (uint16_t)topic_len,
        .payload = payload,
        .payload_len = (uint32_t)payload_len,
        .qos = qos,
        .retain = retain,
    };
    b->from_peer = true;
    broker_route(b, &r);
    b->from_peer = false;
    /* A connected subscriber half way to its queue bound: the sender
     * should wait, as a local publisher would be paused. */
    uint32_t max = b->cfg->max_queued_messages;
    uint32_t high = max > 1 ? max / 2 : 1;
    for (size_t i = 0; qos > 0 && b->cfg->backpressure_timeout_ms && i < b->matched_count; i++) {
        const struct session *s = b->matched[i];
        if (s->conn && s->queue_len >= high)
            *backed_up = true;
    }
    return RMQ_OK;
}

struct backed_up_ctx {
    uint32_t high;
    bool found;
};

static void
on_backed_up_match(void *subscriber, uint8_t qos, void *arg)
{
    struct backed_up_ctx *x = arg;
    const struct session *s = subscriber;
    if (qos > 0 && s->conn && s->queue_len >= x->high)
        x->found = true;
}

bool
broker_api_remote_backed_up(struct broker *b, const char *topic, size_t topic_len, uint8_t qos)
{
    uint32_t max = b->cfg->max_queued_messages;
    struct backed_up_ctx x = {max > 1 ? max / 2 : 1, false};
    if (qos == 0 || !b->cfg->backpressure_timeout_ms)
        return false;
    topic_tree_match(b->subs, topic, topic_len, on_backed_up_match, &x);
    if (x.found)
        b->remote_waiting = true; /* broker_api_on_room tells when one has room */
    return x.found;
}

void
broker_api_on_room(struct broker *b, void (*fn)(void *ctx), void *ctx)
{
    b->room_fn = fn;
    b->room_ctx = ctx;
}

enum rmq_status
broker_api_retain_load(struct broker *b, const char *topic, size_t topic_len, const void *payload,
                       size_t payload_len, uint8_t qos)
{
    if (!message_valid(topic, topic_len, payload_len, qos) || payload_len == 0)
        return RMQ_INVALID;
    broker_refresh_clock(b);
    struct message *msg = message_new(topic, (uint16_t)topic_len, payload, (uint32_t)payload_len,
                                      qos, true, broker_now(b));
    if (!msg)
        return RMQ_NOMEM;
    retain_set(b->retained, msg);
    message_unref(msg);
    return RMQ_OK;
}

struct timer_wheel *
broker_api_wheel(struct broker *b)
{
    return b->wheel;
}

uint64_t
broker_api_now(struct broker *b)
{
    broker_refresh_clock(b);
    return broker_now(b);
}

bool
broker_api_listening(struct broker *b)
{
    return b->listener_count > 0;
}

const char *
broker_api_node_id(struct broker *b)
{
    return b->cfg->node_id;
}
