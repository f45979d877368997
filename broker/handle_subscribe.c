/* SUBSCRIBE and UNSUBSCRIBE: the subscription tree, the session's own list
 * of filters, SUBACK/UNSUBACK, and retained messages for new subscriptions.
 * Loop thread only. */
#include <stdlib.h>

#include "broker/acl.h"
#include "broker/broker_internal.h"
#include "broker/retain.h"
#include "broker/topic.h"
#include "broker/topic_tree.h"
#include "common/log.h"

struct retained_delivery {
    struct broker *broker;
    struct session *session;
    uint8_t granted;
};

static void
deliver_retained(struct message *msg, void *arg)
{
    struct retained_delivery *d = arg;
    struct route r = {
        .topic = msg->topic,
        .topic_len = msg->topic_len,
        .payload = msg->payload,
        .payload_len = msg->payload_len,
        .qos = msg->qos,
        .retain = true,
        .msg = message_ref(msg),
    };
    uint8_t qos = msg->qos < d->granted ? msg->qos : d->granted;
    session_deliver(d->broker, d->session, &r, qos, true);
    message_unref(r.msg);
}

static uint8_t
subscribe_one(struct broker *b, struct session *s, const struct mqtt_str *f, uint8_t qos)
{
    const char *filter = (const char *)f->data;
    if (!topic_filter_valid(filter, f->len)) {
        log_info("client %s: invalid filter '%.*s' refused", s->client_id, (int)f->len, filter);
        return MQTT_SUBACK_FAILURE;
    }
    /* READ is checked here only, not again per delivered message: acl.h's
     * "covers" relation makes that sufficient. */
    const char *user = s->conn ? s->conn->username : NULL;
    if (b->cfg->acl &&
        !acl_check(b->cfg->acl, s->client_id, user, filter, f->len, ACL_READ)) {
        log_info("client %s: subscription to '%.*s' denied by the ACL", s->client_id,
                 (int)f->len, filter);
        b->metrics.acl_denied++;
        return MQTT_SUBACK_FAILURE;
    }
    bool replaced = false;
    if (broker_subscribe(b, filter, f->len, s, qos, &replaced) != RMQ_OK)
        return MQTT_SUBACK_FAILURE;
    if (session_add_sub(s, filter, f->len, qos, !replaced) != RMQ_OK) {
        if (!replaced) /* keep an existing subscription that was only updated */
            broker_unsubscribe(b, filter, f->len, s);
        return MQTT_SUBACK_FAILURE;
    }
    session_notify(b, s, SESSION_SUBSCRIBED, filter, f->len, qos, NULL);
    return qos;
}

enum rmq_status
handle_subscribe(struct conn *c, const struct mqtt_packet *p)
{
    struct broker *b = c->broker;
    struct session *s = c->session;
    const struct mqtt_topic_list *list = &p->u.list;
    size_t n = 0, pos = 0;
    struct mqtt_str f;
    uint8_t qos;
    enum rmq_status st = RMQ_NOMEM;

    /* One block: the filters, their return codes, then the SUBACK (header,
     * packet id and one code per filter). */
    struct mqtt_str *filters = calloc(1, list->count * (sizeof(*filters) + 2u) +
                                             MQTT_FIXED_HEADER_MAX + 2u);
    if (!filters)
        return RMQ_NOMEM;
    uint8_t *codes = (uint8_t *)(filters + list->count);
    uint8_t *out = codes + list->count;
    while (n < list->count && mqtt_topic_iter_next(MQTT_SUBSCRIBE, list, &pos, &f, &qos)) {
        filters[n] = f;
        codes[n++] = subscribe_one(b, s, &f, qos);
    }
    st = conn_write(c, out, mqtt_encode_suback(out, list->packet_id, codes, n));
    if (st != RMQ_OK)
        goto fail;
    /* Retained messages follow the SUBACK, as clients expect. */
    for (size_t i = 0; i < n; i++) {
        if (codes[i] == MQTT_SUBACK_FAILURE)
            continue;
        struct retained_delivery d = {.broker = b, .session = s, .granted = codes[i]};
        retain_match(b->retained, (const char *)filters[i].data, filters[i].len,
                     deliver_retained, &d);
    }
fail:
    free(filters);
    return st;
}

enum rmq_status
handle_unsubscribe(struct conn *c, const struct mqtt_packet *p)
{
    struct broker *b = c->broker;
    struct session *s = c->session;
    size_t pos = 0;
    struct mqtt_str f;
    uint8_t qos;
    while (mqtt_topic_iter_next(MQTT_UNSUBSCRIBE, &p->u.list, &pos, &f, &qos)) {
        if (session_remove_sub(s, (const char *)f.data, f.len)) {
            broker_unsubscribe(b, (const char *)f.data, f.len, s);
            session_notify(b, s, SESSION_UNSUBSCRIBED, (const char *)f.data, f.len, 0, NULL);
        }
    }
    uint8_t out[4];
    return conn_write(c, out, mqtt_encode_ack(out, MQTT_UNSUBACK, p->u.list.packet_id));
}
