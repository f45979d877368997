/* Forwarded-message frames; see forward_codec.h. */
#include "cluster/forward_codec.h"

#include <string.h>

#include "broker/topic.h"

void
forward_frame_write(uint8_t *out, const struct forward_frame *f)
{
    out[0] = (uint8_t)((f->qos & 3u) | (f->retain ? 4u : 0u));
    out[1] = (uint8_t)(f->topic_len >> 8);
    out[2] = (uint8_t)f->topic_len;
    memcpy(out + 3, f->topic, f->topic_len);
    uint8_t *p = out + 3 + f->topic_len;
    p[0] = (uint8_t)(f->payload_len >> 24);
    p[1] = (uint8_t)(f->payload_len >> 16);
    p[2] = (uint8_t)(f->payload_len >> 8);
    p[3] = (uint8_t)f->payload_len;
    if (f->payload_len)
        memcpy(p + 4, f->payload, f->payload_len);
}

enum rmq_status
forward_frame_next(const uint8_t *buf, size_t len, size_t *pos, struct forward_frame *f)
{
    size_t at = *pos;
    if (at == len)
        return RMQ_NOT_FOUND;
    if (at > len || len - at < 3)
        return RMQ_PROTOCOL;
    uint8_t flags = buf[at];
    size_t tlen = (size_t)buf[at + 1] << 8 | buf[at + 2];
    if ((flags & ~7u) || (flags & 3u) == 3u || len - at - 3 < tlen + 4)
        return RMQ_PROTOCOL;
    const uint8_t *p = buf + at + 3 + tlen;
    size_t plen = (size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3];
    if (plen > FORWARD_MAX_PAYLOAD || len - at - 3 - tlen - 4 < plen)
        return RMQ_PROTOCOL;
    const char *topic = (const char *)buf + at + 3;
    if (!topic_name_valid(topic, tlen))
        return RMQ_PROTOCOL;
    *f = (struct forward_frame){
        .topic = topic,
        .topic_len = tlen,
        .payload = p + 4,
        .payload_len = plen,
        .qos = flags & 3u,
        .retain = (flags & 4u) != 0,
    };
    *pos = at + 3 + tlen + 4 + plen;
    return RMQ_OK;
}
