/* Output queue with payloads by reference; see outq.h. */
#include "broker/outq.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#define OUTQ_IOV_MAX 64
#define OUTQ_KEEP_MAX (16u * 1024u) /* larger byte buffers are freed once drained */
#define OUTQ_FIRST 256u             /* a buffer's first size; one this small is freed too */

static struct outq_ref *
ref_at(const struct outq *q, uint32_t i)
{
    return &q->refs[(q->ref_head + i) % q->ref_cap];
}

/* Moves the unwritten bytes to the front, shifting the refs with them. */
static void
compact(struct outq *q)
{
    if (!q->off)
        return;
    memmove(q->buf, q->buf + q->off, q->len - q->off);
    for (uint32_t i = 0; i < q->ref_count; i++)
        ref_at(q, i)->at -= q->off;
    q->len -= q->off;
    q->off = 0;
}

uint8_t *
outq_reserve(struct outq *q, size_t n)
{
    if (q->len + n > q->cap) {
        compact(q);
        if (q->len + n > q->cap) {
            size_t cap = q->cap ? q->cap : OUTQ_FIRST;
            while (cap < q->len + n)
                cap *= 2;
            uint8_t *buf = realloc(q->buf, cap);
            if (!buf)
                return NULL;
            q->buf = buf;
            q->cap = cap;
        }
    }
    uint8_t *p = q->buf + q->len;
    q->len += n;
    return p;
}

enum rmq_status
outq_ref_room(struct outq *q)
{
    if (q->ref_count == q->ref_cap) {
        uint32_t cap = q->ref_cap ? q->ref_cap * 2 : 8;
        struct outq_ref *refs = malloc(cap * sizeof(*refs));
        if (!refs)
            return RMQ_NOMEM;
        for (uint32_t i = 0; i < q->ref_count; i++)
            refs[i] = *ref_at(q, i);
        free(q->refs);
        q->refs = refs;
        q->ref_cap = cap;
        q->ref_head = 0;
    }
    return RMQ_OK;
}

enum rmq_status
outq_add_ref(struct outq *q, struct message *msg)
{
    if (outq_ref_room(q) != RMQ_OK)
        return RMQ_NOMEM;
    *ref_at(q, q->ref_count++) = (struct outq_ref){.at = q->len, .msg = message_ref(msg)};
    q->ref_bytes += msg->payload_len;
    return RMQ_OK;
}

/* Fills iov with the queue's pieces in wire order. */
static int
gather(const struct outq *q, struct iovec *iov)
{
    int n = 0;
    size_t pos = q->off;
    uint32_t i = 0;
    for (; i < q->ref_count && n <= OUTQ_IOV_MAX - 2; i++) {
        const struct outq_ref *r = ref_at(q, i);
        if (r->at > pos)
            iov[n++] = (struct iovec){q->buf + pos, r->at - pos};
        pos = r->at;
        size_t skip = i == 0 ? q->ref_done : 0;
        iov[n++] = (struct iovec){(void *)(r->msg->payload + skip), r->msg->payload_len - skip};
    }
    /* The bytes after the last payload gathered, but never past a payload
     * left for the next call. */
    size_t end = i < q->ref_count ? ref_at(q, i)->at : q->len;
    if (n < OUTQ_IOV_MAX && end > pos)
        iov[n++] = (struct iovec){q->buf + pos, end - pos};
    return n;
}

/* Marks n written bytes as gone, releasing payloads fully written. */
static void
consume(struct outq *q, size_t n)
{
    while (n > 0) {
        if (q->ref_count) {
            struct outq_ref *r = ref_at(q, 0);
            if (q->off < r->at) {
                size_t k = r->at - q->off < n ? r->at - q->off : n;
                q->off += k;
                n -= k;
                continue;
            }
            size_t left = r->msg->payload_len - q->ref_done;
            size_t k = left < n ? left : n;
            q->ref_done += k;
            q->ref_bytes -= k;
            n -= k;
            if (q->ref_done == r->msg->payload_len) {
                message_unref(r->msg);
                q->ref_head = (q->ref_head + 1) % q->ref_cap;
                q->ref_count--;
                q->ref_done = 0;
            }
            continue;
        }
        q->off += n;
        n = 0;
    }
    /* A payload already written whole but with nothing after it. */
    while (q->ref_count && ref_at(q, 0)->msg->payload_len == 0 && ref_at(q, 0)->at == q->off) {
        message_unref(ref_at(q, 0)->msg);
        q->ref_head = (q->ref_head + 1) % q->ref_cap;
        q->ref_count--;
    }
}

/* Everything was written: start the buffer over, and let a large one go,
 * or a first-size one: a connection that only ever had small writes is
 * mostly idle (an idle connection then holds no buffer), and taking 256
 * bytes again costs a cached malloc. A busy one keeps its grown buffer. */
static void
drained(struct outq *q)
{
    q->off = q->len = 0;
    if (q->cap > OUTQ_KEEP_MAX || q->cap <= OUTQ_FIRST) {
        free(q->buf);
        q->buf = NULL;
        q->cap = 0;
    }
}

void
outq_peek(const struct outq *q, const uint8_t **data, size_t *len)
{
    if (q->ref_count) {
        const struct outq_ref *r = ref_at(q, 0);
        if (q->off < r->at) {
            *data = q->buf + q->off;
            *len = r->at - q->off;
        } else {
            *data = r->msg->payload + q->ref_done;
            *len = r->msg->payload_len - q->ref_done;
        }
        return;
    }
    *data = q->buf + q->off;
    *len = q->len - q->off;
}

void
outq_consume(struct outq *q, size_t n)
{
    consume(q, n);
    if (outq_pending(q) == 0)
        drained(q);
}

enum rmq_status
outq_write(struct outq *q, int fd, size_t *written)
{
    struct iovec iov[OUTQ_IOV_MAX];
    *written = 0;
    while (outq_pending(q) > 0) {
        int n = gather(q, iov);
        struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        ssize_t w = sendmsg(fd, &mh, MSG_NOSIGNAL);
        if (w > 0) {
            consume(q, (size_t)w);
            *written += (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return RMQ_AGAIN;
        return RMQ_IO;
    }
    drained(q);
    return RMQ_OK;
}

void
outq_clear(struct outq *q)
{
    for (uint32_t i = 0; i < q->ref_count; i++)
        message_unref(ref_at(q, i)->msg);
    free(q->refs);
    free(q->buf);
    *q = (struct outq){0};
}
