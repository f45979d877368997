/* PUBLISH from a client and the acknowledgement packets of both directions.
 *
 * Incoming QoS 2 follows the spec's "method B": the message is routed when
 * the PUBLISH first arrives and its packet id is remembered until PUBREL, so
 * a re-sent PUBLISH (DUP) with the same id is acknowledged again but never
 * delivered twice.
 *
 * A PUBLISH the ACL denies is acknowledged as usual (MQTT 3.1.1 has no way
 * to refuse one, and Mosquitto does the same) but not routed or retained.
 * Loop thread only. */
#include "broker/acl.h"
#include "broker/broker_internal.h"
#include "broker/topic.h"
#include "common/log.h"

static void
count_received(struct broker *b, uint8_t qos)
{
    b->metrics.messages_received++;
    if (qos == 0)
        b->metrics.messages_received_qos0++;
    else if (qos == 1)
        b->metrics.messages_received_qos1++;
    else
        b->metrics.messages_received_qos2++;
}

static enum rmq_status
send_ack(struct conn *c, enum mqtt_type type, uint16_t packet_id)
{
    uint8_t out[4];
    return conn_write(c, out, mqtt_encode_ack(out, type, packet_id));
}

static void
notify_observers(struct conn *c, const struct route *r, bool dup)
{
    struct broker *b = c->broker;
    struct broker_publish_info info = {
        .client_id = c->session->client_id,
        .username = c->username,
        .channel = c->channel,
        .topic = r->topic,
        .topic_len = r->topic_len,
        .payload = r->payload,
        .payload_len = r->payload_len,
        .qos = r->qos,
        .retain = r->retain,
        .dup = dup,
    };
    for (size_t i = 0; i < b->observer_count; i++) {
        const struct broker_observer *o = b->observers[i];
        if (o->published)
            o->published(o->ctx, &info);
    }
}

/* Routes with c as the publisher, so a backed-up subscriber can pause it,
 * then shows the message to the observers. A publish the ACL denies is
 * dropped here, counted and logged. */
static void
route_from(struct conn *c, struct route *r, bool dup)
{
    const struct acl *acl = c->broker->cfg->acl;
    if (acl && !acl_check(acl, c->session->client_id, c->username, r->topic, r->topic_len,
                          ACL_WRITE)) {
        log_debug("client %s: PUBLISH to '%.*s' denied by the ACL", c->session->client_id,
                  (int)r->topic_len, r->topic);
        c->broker->metrics.acl_denied++;
        return;
    }
    c->broker->publisher = c;
    broker_route(c->broker, r);
    c->broker->publisher = NULL;
    if (c->broker->observer_count > 0 && c->session)
        notify_observers(c, r, dup);
}

enum rmq_status
handle_publish(struct conn *c, const struct mqtt_packet *p)
{
    struct broker *b = c->broker;
    const struct mqtt_publish *pub = &p->u.publish;
    if (!topic_name_valid((const char *)pub->topic.data, pub->topic.len)) {
        log_info("%s (%s): PUBLISH to an invalid topic name, closing", c->peer,
                 c->session->client_id);
        return RMQ_PROTOCOL;
    }
    count_received(b, pub->qos);
    limits_charge_publish(c, pub->payload_len); /* may pause input after this packet */
    struct route r = {
        .topic = (const char *)pub->topic.data,
        .topic_len = pub->topic.len,
        .payload = pub->payload,
        .payload_len = pub->payload_len,
        .qos = pub->qos,
        .retain = pub->retain,
    };
    switch (pub->qos) {
    case 0:
        route_from(c, &r, pub->dup);
        return RMQ_OK;
    case 1:
        route_from(c, &r, pub->dup);
        return send_ack(c, MQTT_PUBACK, pub->packet_id);
    default: {
        bool nomem;
        if (session_qos2_seen(c->session, pub->packet_id, &nomem))
            b->metrics.messages_duplicate_qos2++;
        else if (nomem)
            return RMQ_NOMEM;
        else
            route_from(c, &r, pub->dup);
        return send_ack(c, MQTT_PUBREC, pub->packet_id);
    }
    }
}

enum rmq_status
handle_pubrel(struct conn *c, const struct mqtt_packet *p)
{
    session_qos2_release(c->session, p->u.packet_id);
    return send_ack(c, MQTT_PUBCOMP, p->u.packet_id);
}

enum rmq_status
handle_puback(struct conn *c, const struct mqtt_packet *p)
{
    session_ack(c->broker, c->session, MQTT_PUBACK, p->u.packet_id);
    return RMQ_OK;
}

enum rmq_status
handle_pubrec(struct conn *c, const struct mqtt_packet *p)
{
    session_ack(c->broker, c->session, MQTT_PUBREC, p->u.packet_id);
    return RMQ_OK;
}

enum rmq_status
handle_pubcomp(struct conn *c, const struct mqtt_packet *p)
{
    session_ack(c->broker, c->session, MQTT_PUBCOMP, p->u.packet_id);
    return RMQ_OK;
}
