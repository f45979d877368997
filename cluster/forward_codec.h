/* The wire format of messages forwarded between nodes: a batch is a plain
 * concatenation of frames, each
 *
 *   u8  flags        bits 0-1 QoS, bit 2 retain, bit 3 targeted, bit 4 (only
 *                    with bit 3) the target is a shared subscription group's
 *                    key rather than a client id; bit 5 (only with bit 3,
 *                    not with bit 4) a rescued message: the target is u64
 *                    (big endian) the wall-clock ms when it was first
 *                    routed, then the id of the dead node it was meant
 *                    for; others 0
 *   [u16 target length, the target, u8 flags again]   only when
 *                    targeted: the message is for that one session (a
 *                    redirect after a hand-over), that group, or the
 *                    sessions restored from that dead node
 *   u16 topic length (big endian), then the topic (a valid topic name)
 *   u32 payload length (big endian), then the payload
 *
 * Pure: no I/O, no allocation; any thread. Fuzzed (tests/fuzz). */
#ifndef RMQ_CLUSTER_FORWARD_CODEC_H
#define RMQ_CLUSTER_FORWARD_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

#define FORWARD_FRAME_OVERHEAD 7u
#define FORWARD_RESCUE_TIME 8u /* bytes of the routed-at time in a rescued frame's target */
#define FORWARD_MAX_PAYLOAD 268435455u /* MQTT's largest */

struct forward_frame {
    const char *topic; /* points into the batch */
    size_t topic_len;
    const uint8_t *payload;
    size_t payload_len;
    uint8_t qos;
    bool retain;
    const char *target; /* a client id, or NULL: for the node's subscribers */
    size_t target_len;
    bool group;         /* target is a shared group's key ("$share/g/f") */
    bool rescued;       /* target is the dead node whose sessions it is for */
};

/* Bytes one frame takes. */
static inline size_t
forward_frame_size(size_t topic_len, size_t payload_len)
{
    return FORWARD_FRAME_OVERHEAD + topic_len + payload_len;
}

/* Bytes frame f takes (targeted or not). */
static inline size_t
forward_frame_size_of(const struct forward_frame *f)
{
    return forward_frame_size(f->topic_len, f->payload_len) + (f->target ? 3 + f->target_len : 0);
}

/* Length of the whole frame at p, which must hold a frame this module
 * wrote (no checks: for walking one's own buffers). */
size_t forward_frame_len(const uint8_t *p);

/* Writes one frame at out (forward_frame_size_of bytes). topic_len must fit in
 * 16 bits and payload_len in FORWARD_MAX_PAYLOAD (callers route only MQTT
 * messages, which do). */
void forward_frame_write(uint8_t *out, const struct forward_frame *f);

/* Reads the frame at buf[*pos]: RMQ_OK (f points into buf, *pos moves
 * past it), RMQ_NOT_FOUND at the end of the batch, RMQ_PROTOCOL for a
 * truncated or invalid frame (bad flags, QoS 3, an invalid topic name). */
enum rmq_status forward_frame_next(const uint8_t *buf, size_t len, size_t *pos,
                                   struct forward_frame *f);

/* For a stream of frames: the length of the frame starting at buf, of
 * which avail bytes have arrived. RMQ_OK (*len may exceed avail: wait for
 * the rest), RMQ_AGAIN (too few bytes to tell), RMQ_PROTOCOL (it cannot be
 * a frame: bad flags, a payload too large). The frame's contents are
 * checked by forward_frame_next once it is whole. */
enum rmq_status forward_frame_peek(const uint8_t *buf, size_t avail, size_t *len);

/* forward_frame_next for a buffer whose every frame forward_frame_next
 * already accepted (a second pass over a received batch): the framing is
 * still bounds-checked, the topics are not validated again. */
enum rmq_status forward_frame_next_trusted(const uint8_t *buf, size_t len, size_t *pos,
                                           struct forward_frame *f);

#endif
