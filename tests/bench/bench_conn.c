/* Client connections for relaymq-bench (see bench_conn.h).
 *
 * Input: each readable event reads up to BCONN_READS_PER_EVENT chunks of
 * whatever fits in the input buffer and decodes every complete packet in it;
 * a partial packet is moved to the front and completed by the next read.
 * Output: owners append packets into one buffer and bconn flushes it once
 * after the callbacks, so acks and publishes are batched per event.
 * Callbacks never flush or close: bconn does both after they return, so a
 * write error can never free buffers under a running callback. */
#include "tests/bench/bench_conn.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Enough to drain a busy socket without starving the other connections. */
#define BCONN_READS_PER_EVENT 4

static void bconn_read_cb(evutil_socket_t fd, short what, void *arg);
static void bconn_write_cb(evutil_socket_t fd, short what, void *arg);

bool
bconn_is_open(const struct bconn *c)
{
    return c->fd >= 0 && c->rev != NULL;
}

size_t
bconn_pending(const struct bconn *c)
{
    return c->out_len - c->out_off;
}

void
bconn_close(struct bconn *c)
{
    if (c->rev != NULL)
        event_free(c->rev);
    if (c->wev != NULL)
        event_free(c->wev);
    if (c->fd >= 0)
        close(c->fd);
    free(c->in);
    free(c->out);
    c->rev = c->wev = NULL;
    c->in = c->out = NULL;
    c->fd = -1;
    c->in_cap = c->in_start = c->in_end = 0;
    c->out_cap = c->out_off = c->out_len = 0;
    c->connecting = c->blocked = c->want_write = false;
}

/* Closes c, then tells the owner. */
static void
bconn_fail(struct bconn *c, enum rmq_status st, const char *what)
{
    int err = st == RMQ_IO ? errno : 0;
    bconn_close(c);
    c->err = err;
    c->ops->on_error(c, st, what);
}

static enum rmq_status
open_socket(struct bconn *c, const struct sockaddr_in *addr)
{
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        return RMQ_IO;
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(c->fd, (const struct sockaddr *)addr, sizeof(*addr)) == 0)
        return RMQ_OK;
    if (errno != EINPROGRESS)
        return RMQ_IO;
    c->connecting = true;
    return RMQ_OK;
}

enum rmq_status
bconn_open(struct bconn *c, struct event_base *base, const struct sockaddr_in *addr, size_t in_cap,
           size_t out_cap, const struct bconn_ops *ops, void *owner)
{
    memset(c, 0, sizeof(*c));
    c->fd = -1;
    c->ops = ops;
    c->owner = owner;
    enum rmq_status st = RMQ_NOMEM;
    c->in = malloc(in_cap);
    c->out = malloc(out_cap);
    if (c->in == NULL || c->out == NULL)
        goto fail;
    c->in_cap = in_cap;
    c->out_cap = out_cap;
    st = open_socket(c, addr);
    if (st != RMQ_OK)
        goto fail;
    st = RMQ_NOMEM;
    c->rev = event_new(base, c->fd, EV_READ | EV_PERSIST, bconn_read_cb, c);
    c->wev = event_new(base, c->fd, EV_WRITE | EV_PERSIST, bconn_write_cb, c);
    if (c->rev == NULL || c->wev == NULL)
        goto fail;
    event_add(c->rev, NULL);
    if (c->connecting)
        event_add(c->wev, NULL);
    return RMQ_OK;
fail:
    bconn_close(c);
    return st;
}

size_t
bconn_room(struct bconn *c)
{
    if (c->out_off == c->out_len) {
        c->out_off = c->out_len = 0;
    } else if (c->out_off > 0) {
        memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
        c->out_len -= c->out_off;
        c->out_off = 0;
    }
    return c->out_cap - c->out_len;
}

uint8_t *
bconn_reserve(struct bconn *c, size_t n)
{
    if (c->out_cap - c->out_len < n && bconn_room(c) < n)
        return NULL;
    return c->out + c->out_len;
}

void
bconn_commit(struct bconn *c, size_t n)
{
    c->out_len += n;
}

bool
bconn_append(struct bconn *c, const void *data, size_t n)
{
    uint8_t *p = bconn_reserve(c, n);
    if (p == NULL)
        return false;
    memcpy(p, data, n);
    bconn_commit(c, n);
    return true;
}

/* Keeps the write event armed exactly while something needs it. */
static void
update_write_interest(struct bconn *c)
{
    bool need = c->connecting || c->want_write || c->blocked || bconn_pending(c) > 0;
    bool armed = event_pending(c->wev, EV_WRITE, NULL) != 0;
    if (need && !armed)
        event_add(c->wev, NULL);
    else if (!need && armed)
        event_del(c->wev);
}

void
bconn_want_write(struct bconn *c, bool on)
{
    if (!bconn_is_open(c))
        return;
    c->want_write = on;
    update_write_interest(c);
}

enum rmq_status
bconn_flush(struct bconn *c)
{
    if (!bconn_is_open(c))
        return RMQ_IO;
    while (!c->connecting && c->out_off < c->out_len) {
        size_t want = c->out_len - c->out_off;
        ssize_t n = send(c->fd, c->out + c->out_off, want, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            bconn_fail(c, RMQ_IO, "write failed");
            return RMQ_IO;
        }
        c->out_off += (size_t)n;
        c->bytes_out += (uint64_t)n;
        if ((size_t)n < want)
            break; /* the socket buffer is full: wait for the write event */
    }
    if (c->out_off == c->out_len)
        c->out_off = c->out_len = 0;
    update_write_interest(c);
    return RMQ_OK;
}

/* Offers p to the owner; on RMQ_AGAIN flushes once and retries.
 * Returns RMQ_AGAIN if output is still full (c is then blocked). */
static enum rmq_status
deliver(struct bconn *c, const struct mqtt_packet *p)
{
    enum rmq_status st = c->ops->on_packet(c, p);
    if (st != RMQ_AGAIN)
        return st;
    if (bconn_flush(c) != RMQ_OK)
        return RMQ_IO;
    st = c->ops->on_packet(c, p);
    if (st == RMQ_AGAIN) {
        c->blocked = true;
        event_del(c->rev);
        update_write_interest(c);
    }
    return st;
}

/* Decodes and delivers every complete packet in the input buffer.
 * Returns RMQ_IO if c failed (and is closed). */
static enum rmq_status
process_input(struct bconn *c)
{
    while (c->in_start < c->in_end) {
        struct mqtt_packet p;
        size_t used = 0;
        enum rmq_status st =
            mqtt_decode(c->in + c->in_start, c->in_end - c->in_start, 0, &p, &used);
        if (st == RMQ_AGAIN) {
            if (used > c->in_cap) {
                uint8_t *in = realloc(c->in, used);
                if (in == NULL) {
                    bconn_fail(c, RMQ_NOMEM, "out of memory for a large packet");
                    return RMQ_IO;
                }
                c->in = in;
                c->in_cap = used;
            }
            break;
        }
        if (st != RMQ_OK) {
            bconn_fail(c, st, "malformed packet from the broker");
            return RMQ_IO;
        }
        st = deliver(c, &p);
        if (st == RMQ_AGAIN)
            break;
        if (!bconn_is_open(c))
            return RMQ_IO;
        if (st != RMQ_OK) {
            bconn_fail(c, st, "packet refused (unexpected type or state, or a refusal)");
            return RMQ_IO;
        }
        c->in_start += used;
    }
    if (c->in_start == c->in_end) {
        c->in_start = c->in_end = 0;
    } else if (c->in_start > 0) {
        memmove(c->in, c->in + c->in_start, c->in_end - c->in_start);
        c->in_end -= c->in_start;
        c->in_start = 0;
    }
    return RMQ_OK;
}

/* Lets the owner queue more output, then writes it. */
static void
fill_and_flush(struct bconn *c)
{
    if (c->ops->on_fill != NULL && !c->connecting)
        c->ops->on_fill(c);
    if (bconn_is_open(c))
        bconn_flush(c);
}

static void
bconn_read_cb(evutil_socket_t fd, short what, void *arg)
{
    struct bconn *c = arg;
    for (int i = 0; i < BCONN_READS_PER_EVENT && !c->blocked; i++) {
        size_t space = c->in_cap - c->in_end;
        ssize_t n = recv(fd, c->in + c->in_end, space, 0);
        if (n == 0) {
            errno = 0;
            bconn_fail(c, RMQ_IO, "connection closed by the broker");
            return;
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            bconn_fail(c, RMQ_IO, c->connecting ? "connect failed" : "read failed");
            return;
        }
        c->in_end += (size_t)n;
        c->bytes_in += (uint64_t)n;
        if (process_input(c) != RMQ_OK)
            return;
        if ((size_t)n < space)
            break; /* drained the socket */
    }
    fill_and_flush(c);
}

static void
bconn_write_cb(evutil_socket_t fd, short what, void *arg)
{
    struct bconn *c = arg;
    if (c->connecting) {
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
            errno = err;
            bconn_fail(c, RMQ_IO, "connect failed");
            return;
        }
        c->connecting = false;
    }
    if (bconn_flush(c) != RMQ_OK)
        return;
    if (c->blocked && bconn_pending(c) == 0) {
        c->blocked = false;
        event_add(c->rev, NULL);
        if (process_input(c) != RMQ_OK)
            return;
    }
    fill_and_flush(c);
}
