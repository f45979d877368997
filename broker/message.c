/* Reference-counted application messages; see message.h. */
#include "broker/message.h"

#include <stdlib.h>
#include <string.h>

struct message *
message_new(const char *topic, uint16_t topic_len, const uint8_t *payload, uint32_t payload_len,
            uint8_t qos, bool retain, uint64_t now_ms)
{
    struct message *msg = malloc(sizeof(*msg) + topic_len + 1u + payload_len);
    if (!msg)
        return NULL;
    atomic_init(&msg->refs, 1);
    msg->qos = qos;
    msg->retain = retain;
    msg->topic_len = topic_len;
    msg->payload_len = payload_len;
    msg->created_ms = now_ms;
    msg->tag = 0;
    memcpy(msg->topic, topic, topic_len);
    msg->topic[topic_len] = '\0';
    uint8_t *p = (uint8_t *)msg->topic + topic_len + 1;
    if (payload_len)
        memcpy(p, payload, payload_len);
    msg->payload = p;
    return msg;
}

void
message_unref(struct message *msg)
{
    if (msg && atomic_fetch_sub_explicit(&msg->refs, 1, memory_order_acq_rel) == 1)
        free(msg);
}
