/* Forwarded-message frames; see forward_codec.h. */
#include "cluster/forward_codec.h"

#include <string.h>

#include "broker/packet_codec.h"
#include "broker/topic.h"

size_t
forward_frame_len(const uint8_t *p)
{
    size_t extra = 0;
    if (p[0] & 8u) {
        extra = 3 + ((size_t)p[1] << 8 | p[2]);
        p += extra;
    }
    size_t tlen = (size_t)p[1] << 8 | p[2];
    const uint8_t *q = p + 3 + tlen;
    size_t plen = (size_t)q[0] << 24 | (size_t)q[1] << 16 | (size_t)q[2] << 8 | q[3];
    return extra + FORWARD_FRAME_OVERHEAD + tlen + plen;
}

void
forward_frame_write(uint8_t *out, const struct forward_frame *f)
{
    uint8_t flags = (uint8_t)((f->qos & 3u) | (f->retain ? 4u : 0u) | (f->target ? 8u : 0u) |
                              (f->target && f->group ? 16u : 0u) |
                              (f->target && f->rescued ? 32u : 0u));
    out[0] = flags;
    if (f->target) {
        out[1] = (uint8_t)(f->target_len >> 8);
        out[2] = (uint8_t)f->target_len;
        memcpy(out + 3, f->target, f->target_len);
        out += 3 + f->target_len; /* then the frame as if untargeted, flags repeated */
        out[0] = flags;
    }
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
forward_frame_peek(const uint8_t *buf, size_t avail, size_t *len)
{
    if (avail < 3)
        return RMQ_AGAIN;
    uint8_t flags = buf[0];
    size_t extra = 0;
    if ((flags & ~63u) || (flags & 3u) == 3u || ((flags & 48u) && !(flags & 8u)) ||
        (flags & 48u) == 48u)
        return RMQ_PROTOCOL;
    if (flags & 8u) {
        extra = 3 + ((size_t)buf[1] << 8 | buf[2]);
        if (avail < extra + 3)
            return RMQ_AGAIN;
        buf += extra;
        avail -= extra;
    }
    size_t tlen = (size_t)buf[1] << 8 | buf[2];
    if (avail < 3 + tlen + 4)
        return RMQ_AGAIN;
    const uint8_t *p = buf + 3 + tlen;
    size_t plen = (size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3];
    if (plen > FORWARD_MAX_PAYLOAD)
        return RMQ_PROTOCOL;
    *len = extra + FORWARD_FRAME_OVERHEAD + tlen + plen;
    return RMQ_OK;
}

static enum rmq_status
frame_next(const uint8_t *buf, size_t len, size_t *pos, struct forward_frame *f, bool check_topic)
{
    size_t at = *pos;
    if (at == len)
        return RMQ_NOT_FOUND;
    if (at > len || len - at < 3)
        return RMQ_PROTOCOL;
    uint8_t flags = buf[at];
    const char *target = NULL;
    size_t target_len = 0;
    if ((flags & ~63u) || (flags & 3u) == 3u || ((flags & 48u) && !(flags & 8u)) ||
        (flags & 48u) == 48u)
        return RMQ_PROTOCOL;
    if (flags & 8u) {
        target_len = (size_t)buf[at + 1] << 8 | buf[at + 2];
        if (target_len == 0 || len - at < 3 + target_len + 3 ||
            ((flags & 32u) && target_len <= FORWARD_RESCUE_TIME))
            return RMQ_PROTOCOL;
        target = (const char *)buf + at + 3;
        at += 3 + target_len; /* buf[at] repeats the flags byte */
        if (buf[at] != flags)
            return RMQ_PROTOCOL;
    }
    size_t tlen = (size_t)buf[at + 1] << 8 | buf[at + 2];
    if (len - at - 3 < tlen + 4)
        return RMQ_PROTOCOL;
    const uint8_t *p = buf + at + 3 + tlen;
    size_t plen = (size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3];
    if (plen > FORWARD_MAX_PAYLOAD || len - at - 3 - tlen - 4 < plen)
        return RMQ_PROTOCOL;
    const char *topic = (const char *)buf + at + 3;
    /* Frames come from other nodes: checked as a client's PUBLISH would be. */
    if (check_topic &&
        (!topic_name_valid(topic, tlen) || !mqtt_utf8_valid((const uint8_t *)topic, tlen)))
        return RMQ_PROTOCOL;
    *f = (struct forward_frame){
        .topic = topic,
        .topic_len = tlen,
        .payload = p + 4,
        .payload_len = plen,
        .qos = flags & 3u,
        .retain = (flags & 4u) != 0,
        .target = target,
        .target_len = target_len,
        .group = (flags & 16u) != 0,
        .rescued = (flags & 32u) != 0,
    };
    *pos = at + 3 + tlen + 4 + plen;
    return RMQ_OK;
}

enum rmq_status
forward_frame_next(const uint8_t *buf, size_t len, size_t *pos, struct forward_frame *f)
{
    return frame_next(buf, len, pos, f, true);
}

enum rmq_status
forward_frame_next_trusted(const uint8_t *buf, size_t len, size_t *pos, struct forward_frame *f)
{
    return frame_next(buf, len, pos, f, false);
}
