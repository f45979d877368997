/* A connection's output queue: encoded bytes appended in place, plus
 * message payloads held by reference, written to a socket with one
 * writev(2) per flush in their exact order. A large payload fanned out to
 * many subscribers therefore exists once in memory (in its refcounted
 * message) however many queues send it; small payloads are cheaper to copy
 * and go in with the bytes.
 *
 * Layout: buf[off..len) holds the bytes still to write; refs[] (oldest
 * first) each place one message's payload at byte offset `at` of buf, i.e.
 * after buf[..at) and before buf[at..). Single-threaded: belongs to one
 * connection. */
#ifndef RMQ_BROKER_OUTQ_H
#define RMQ_BROKER_OUTQ_H

#include <stddef.h>
#include <stdint.h>

#include "broker/message.h"
#include "common/status.h"

/* Payloads at least this large are queued by reference. */
#define OUTQ_REF_MIN 1024u

struct outq_ref {
    size_t at;
    struct message *msg; /* one reference held */
};

struct outq {
    uint8_t *buf;
    size_t off, len, cap;
    struct outq_ref *refs;
    uint32_t ref_head, ref_count, ref_cap;
    size_t ref_done;  /* bytes of refs[ref_head]'s payload already written */
    size_t ref_bytes; /* payload bytes still queued by reference */
};

/* Bytes still to write. */
static inline size_t
outq_pending(const struct outq *q)
{
    return q->len - q->off + q->ref_bytes;
}

/* n bytes to fill at the end of the queue, or NULL (out of memory). */
uint8_t *outq_reserve(struct outq *q, size_t n);

/* Makes room for one more reference: after RMQ_OK the next
 * outq_add_ref() cannot fail. */
enum rmq_status outq_ref_room(struct outq *q);

/* Queues msg's payload after everything queued so far, taking a reference. */
enum rmq_status outq_add_ref(struct outq *q, struct message *msg);

/* Writes what the socket takes. RMQ_OK when all is written, RMQ_AGAIN when
 * the socket is full (the rest stays queued), RMQ_IO on an error. *written
 * gets the bytes written. */
enum rmq_status outq_write(struct outq *q, int fd, size_t *written);

/* The first contiguous piece of the pending output, for writers that take
 * one buffer at a time (TLS). *len is 0 only when nothing is pending or a
 * zero-length payload leads (outq_consume(q, 0) drops it). The piece only
 * grows (appends) until consumed; its address may move. */
void outq_peek(const struct outq *q, const uint8_t **data, size_t *len);

/* Marks n bytes from the front as written, releasing payloads fully
 * written; once nothing is pending the buffer is reset as by outq_write. */
void outq_consume(struct outq *q, size_t n);

/* Drops everything queued and frees the memory. */
void outq_clear(struct outq *q);

#endif
