/* An application message as the broker routes it: topic, payload, QoS and
 * retain flag in one allocation, reference-counted so a message fanned out to
 * many subscribers (and kept in queues and the retained store) exists once.
 *
 * The count is atomic so a message may later cross broker loops; everything
 * else is immutable after message_new(). */
#ifndef RMQ_BROKER_MESSAGE_H
#define RMQ_BROKER_MESSAGE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct message {
    atomic_uint refs;
    uint8_t qos;         /* QoS it was published with */
    bool retain;         /* retain flag as published */
    uint16_t topic_len;
    uint32_t payload_len;
    uint64_t created_ms; /* monotonic, when the broker accepted it */
    uint64_t tag;        /* non-zero: observers hear when the receiver acknowledges it */
    const uint8_t *payload; /* points into data[], after the topic */
    char topic[];        /* NUL-terminated, followed by the payload */
};

/* Copies topic and payload into a new message with one reference.
 * NULL on allocation failure. */
struct message *message_new(const char *topic, uint16_t topic_len, const uint8_t *payload,
                            uint32_t payload_len, uint8_t qos, bool retain, uint64_t now_ms);

static inline struct message *
message_ref(struct message *msg)
{
    atomic_fetch_add_explicit(&msg->refs, 1, memory_order_relaxed);
    return msg;
}

/* Drops one reference; frees on the last. NULL-safe. */
void message_unref(struct message *msg);

/* Bytes the message holds, for memory accounting. */
static inline size_t
message_size(const struct message *msg)
{
    return sizeof(*msg) + msg->topic_len + 1u + msg->payload_len;
}

#endif
