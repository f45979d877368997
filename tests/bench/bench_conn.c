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
#include <limits.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Enough to drain a busy socket without starving the other connections. */
#define BCONN_READS_PER_EVENT 4

static void bconn_read_cb(evutil_socket_t fd, short what, void *arg);
static void bconn_write_cb(evutil_socket_t fd, short what, void *arg);
static void update_write_interest(struct bconn *c);
static void fill_and_flush(struct bconn *c);
static void bconn_fail(struct bconn *c, enum rmq_status st, const char *what);

/* ---- TLS (--tls) ---- */

static SSL_CTX *tls_ctx;

int
bconn_tls_init(void)
{
    tls_ctx = SSL_CTX_new(TLS_client_method());
    if (!tls_ctx)
        return -1;
    SSL_CTX_set_verify(tls_ctx, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_mode(tls_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    return 0;
}

/* After the TCP connect: a TLS session on the socket, handshake pending. */
static bool
tls_start(struct bconn *c)
{
    if (!tls_ctx)
        return true;
    c->ssl = SSL_new(tls_ctx);
    if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1)
        return false;
    SSL_set_connect_state(c->ssl);
    c->handshaking = true;
    return true;
}

/* One handshake step. False if c failed (and is closed). */
static bool
tls_step(struct bconn *c)
{
    ERR_clear_error();
    int r = SSL_do_handshake(c->ssl);
    c->hs_want_write = false;
    if (r == 1) {
        c->handshaking = false;
        update_write_interest(c);
        return true;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        c->hs_want_write = e == SSL_ERROR_WANT_WRITE;
        update_write_interest(c);
        return true;
    }
    ERR_clear_error();
    errno = ECONNRESET;
    bconn_fail(c, RMQ_IO, "TLS handshake failed");
    return false;
}

/* send(2) or SSL_write: bytes written, or -1 with errno (EAGAIN to wait). */
static ssize_t
conn_send(struct bconn *c, const void *buf, size_t len)
{
    if (!c->ssl)
        return send(c->fd, buf, len, MSG_NOSIGNAL);
    ERR_clear_error();
    int n = SSL_write(c->ssl, buf, len < INT_MAX ? (int)len : INT_MAX);
    if (n > 0)
        return n;
    int e = SSL_get_error(c->ssl, n);
    errno = e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ ? EAGAIN : EPIPE;
    ERR_clear_error();
    return -1;
}

/* recv(2) or SSL_read: bytes, 0 at the end, -1 with errno. */
static ssize_t
conn_recv(struct bconn *c, void *buf, size_t len)
{
    if (!c->ssl)
        return recv(c->fd, buf, len, 0);
    ERR_clear_error();
    int n = SSL_read(c->ssl, buf, len < INT_MAX ? (int)len : INT_MAX);
    if (n > 0)
        return n;
    int e = SSL_get_error(c->ssl, n);
    ERR_clear_error();
    if (e == SSL_ERROR_ZERO_RETURN)
        return 0;
    errno = e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE ? EAGAIN : ECONNRESET;
    return -1;
}

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
    if (c->ssl != NULL)
        SSL_free(c->ssl);
    c->ssl = NULL;
    c->handshaking = c->hs_want_write = false;
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
    else if (!tls_start(c))
        goto fail;
    if (c->handshaking) {
        c->hs_want_write = true; /* the first step, from the write event */
        update_write_interest(c);
    }
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
    bool need = c->connecting || c->hs_want_write ||
                (!c->handshaking && (c->want_write || c->blocked || bconn_pending(c) > 0));
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
    while (!c->connecting && !c->handshaking && c->out_off < c->out_len) {
        size_t want = c->out_len - c->out_off;
        ssize_t n = conn_send(c, c->out + c->out_off, want);
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
    if (c->handshaking) {
        if (tls_step(c) && !c->handshaking)
            fill_and_flush(c);
        return;
    }
    for (int i = 0; i < BCONN_READS_PER_EVENT && !c->blocked; i++) {
        size_t space = c->in_cap - c->in_end;
        ssize_t n = conn_recv(c, c->in + c->in_end, space);
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
        if ((size_t)n < space && !c->ssl)
            break; /* drained the socket */
    }
    /* Records already inside the TLS session raise no socket event. */
    if (bconn_is_open(c) && c->ssl && !c->blocked && SSL_pending(c->ssl) > 0)
        event_active(c->rev, EV_READ, 1);
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
        if (!tls_start(c)) {
            bconn_fail(c, RMQ_NOMEM, "TLS session");
            return;
        }
    }
    if (c->handshaking) {
        if (!tls_step(c) || c->handshaking)
            return;
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
