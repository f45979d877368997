/* Node-to-node forwarding: a link's stream to its node; see forwarder.h.
 *
 * A link (forwarder_internal.h) holds its frames in one buffer. Its stream
 * is one TCP connection to the node's internal API, switched by a signed
 * request
 *
 *     POST /internal/v1/link/{id}/{seq}   Connection: Upgrade, Upgrade: relaymq-link
 *
 * (id: 16 hex digits naming the link; seq: the stream position of the
 * first byte to come) to "101 Switching Protocols". Then the frames follow
 * as they are routed, with nothing around them, and the receiver answers
 * with acknowledgements: 8 bytes each, big endian, the stream position up
 * to which it has routed every frame (durable: and Redis holds the
 * sessions' copies). Only an acknowledgement moves the link's head. A
 * broken stream is connected again and everything unacknowledged written
 * again from the acknowledged position; the receiver skips what it had
 * already routed, so nothing arrives twice.
 *
 * Writes go straight from the link's buffer to the socket, once per loop
 * iteration (the flush), with a write event only while the socket is full.
 * Loop thread only. */
#include <errno.h>
#include <event2/event.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cluster/forwarder_internal.h"
#include "common/clock.h"
#include "common/log.h"
#include "http/peer_client.h"

#define CONNECT_TIMEOUT_MS 2000
#define ACK_TIMEOUT_MS 5000 /* a paused receiver repeats its ack every second */
#define WATCH_MS 500
#define WRITE_MAX (1u << 20) /* bytes per write call */

static void on_readable(evutil_socket_t fd, short what, void *arg);
static void on_writable(evutil_socket_t fd, short what, void *arg);
static void on_watch(evutil_socket_t fd, short what, void *arg);

void
link_disconnect(struct link *l)
{
    if (l->state == LINK_CLOSED)
        return;
    if (l->rev)
        event_free(l->rev);
    if (l->wev)
        event_free(l->wev);
    if (l->watch)
        event_free(l->watch);
    l->rev = l->wev = l->watch = NULL;
    close(l->fd);
    l->fd = -1;
    l->state = LINK_CLOSED;
    l->in_len = 0;
    l->sent = l->head; /* written again on the next stream */
}

static bool
link_connect(struct link *l)
{
    char host[256], port[8];
    uint16_t p;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV}, *ai = NULL;
    if (peer_client_split_address(l->addr, host, sizeof(host), &p) != RMQ_OK) {
        link_failed(l, "bad address");
        return false;
    }
    snprintf(port, sizeof(port), "%u", p);
    int rc = getaddrinfo(host, port, &hints, &ai);
    if (rc != 0) {
        link_failed(l, gai_strerror(rc));
        return false;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM, 0);
    int one = 1;
    if (fd < 0 || evutil_make_socket_nonblocking(fd) != 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0 ||
        (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0 && errno != EINPROGRESS)) {
        int err = errno;
        freeaddrinfo(ai);
        if (fd >= 0)
            close(fd);
        link_failed(l, strerror(err));
        return false;
    }
    freeaddrinfo(ai);
    struct forwarder *f = l->f;
    l->fd = fd;
    l->rev = event_new(f->base, fd, EV_READ | EV_PERSIST, on_readable, l);
    l->wev = event_new(f->base, fd, EV_WRITE, on_writable, l);
    l->watch = event_new(f->base, -1, EV_PERSIST, on_watch, l);
    l->state = LINK_CONNECTING;
    l->since_ms = clock_monotonic_ms();
    struct timeval tv = {0, WATCH_MS * 1000};
    if (!l->rev || !l->wev || !l->watch || event_add(l->wev, NULL) != 0 ||
        event_add(l->watch, &tv) != 0) {
        link_failed(l, "out of memory");
        return false;
    }
    return true;
}

/* The connection is up: asks for the stream. */
static void
send_handshake(struct link *l)
{
    char path[96], sig[512], req[1024];
    snprintf(path, sizeof(path), LINK_PATH "/%016llx/%llu", (unsigned long long)l->id,
             (unsigned long long)l->seq_head);
    if (peer_client_sign_headers(l->f->peers, "POST", path, sig, sizeof(sig)) != RMQ_OK) {
        link_failed(l, "cannot sign");
        return;
    }
    int n = snprintf(req, sizeof(req),
                     "POST %s HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: " LINK_PROTOCOL
                     "\r\nContent-Length: 0\r\n%s\r\n",
                     path, l->addr, sig);
    /* A fresh connection takes a few hundred bytes at once. */
    if (n < 0 || (size_t)n >= sizeof(req) || send(l->fd, req, (size_t)n, MSG_NOSIGNAL) != n) {
        link_failed(l, "cannot send the request");
        return;
    }
    l->state = LINK_HANDSHAKE;
    l->since_ms = clock_monotonic_ms();
    if (event_add(l->rev, NULL) != 0)
        link_failed(l, "out of memory");
}

/* Writes from sent on, until everything is written or the socket is full. */
static void
write_out(struct link *l)
{
    while (l->sent < l->len) {
        size_t n = l->len - l->sent;
        if (n > WRITE_MAX)
            n = WRITE_MAX;
        if (l->sent == l->head)
            l->since_ms = clock_monotonic_ms(); /* the oldest unacknowledged byte */
        ssize_t w = send(l->fd, l->buf + l->sent, n, MSG_NOSIGNAL);
        if (w > 0) {
            l->sent += (size_t)w;
            continue;
        }
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!event_pending(l->wev, EV_WRITE, NULL) && event_add(l->wev, NULL) != 0)
                link_failed(l, "out of memory");
            return;
        }
        if (w < 0 && errno == EINTR)
            continue;
        link_failed(l, w < 0 ? strerror(errno) : "closed");
        return;
    }
}

void
link_send(struct link *l)
{
    if (l->head == l->len && l->state == LINK_CLOSED)
        return; /* nothing to say: no connection needed */
    if (l->state == LINK_CLOSED) {
        if (!evtimer_pending(l->retry, NULL))
            link_connect(l);
        return;
    }
    if (l->state == LINK_OPEN && !event_pending(l->wev, EV_WRITE, NULL))
        write_out(l);
}

static void
on_writable(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct link *l = arg;
    if (l->state == LINK_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
            err = errno;
        if (err) {
            link_failed(l, strerror(err));
            return;
        }
        send_handshake(l);
        return;
    }
    if (l->state == LINK_OPEN)
        write_out(l);
}

/* The answer to the handshake, in l->in: "HTTP/1.1 101" and the headers.
 * Returns the bytes it took, 0 if incomplete, -1 after a failure. */
static ssize_t
take_answer(struct link *l)
{
    const char *end = memmem(l->in, l->in_len, "\r\n\r\n", 4);
    if (!end) {
        if (l->in_len == sizeof(l->in)) {
            link_failed(l, "answer too long");
            return -1;
        }
        return 0;
    }
    if (l->in_len < 12 || memcmp(l->in, "HTTP/1.1 101", 12) != 0) {
        const char *eol = memchr(l->in, '\r', l->in_len);
        char why[128];
        snprintf(why, sizeof(why), "refused: %.*s", (int)(eol ? eol - (const char *)l->in : 0),
                 (const char *)l->in);
        link_failed(l, why);
        return -1;
    }
    l->state = LINK_OPEN;
    l->since_ms = clock_monotonic_ms();
    l->f->streams_out++;
    size_t took = (size_t)(end + 4 - (const char *)l->in);
    write_out(l);
    return l->state == LINK_OPEN ? (ssize_t)took : -1;
}

static void
on_readable(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct link *l = arg;
    ssize_t r = recv(fd, l->in + l->in_len, sizeof(l->in) - l->in_len, 0);
    if (r <= 0) {
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        link_failed(l, r < 0 ? strerror(errno) : "closed by the node");
        return;
    }
    l->in_len += (size_t)r;
    size_t at = 0;
    if (l->state == LINK_HANDSHAKE) {
        ssize_t took = take_answer(l);
        if (took <= 0)
            return;
        at = (size_t)took;
    }
    uint64_t seq = 0;
    bool acked = false;
    for (; l->in_len - at >= 8; at += 8) {
        seq = 0;
        for (int i = 0; i < 8; i++)
            seq = seq << 8 | l->in[at + i];
        acked = true;
    }
    memmove(l->in, l->in + at, l->in_len - at);
    l->in_len -= at;
    if (acked)
        link_acked(l, seq); /* the latest says it all */
}

static void
on_watch(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct link *l = arg;
    uint64_t waited = clock_monotonic_ms() - l->since_ms;
    if (l->state != LINK_OPEN && waited >= CONNECT_TIMEOUT_MS)
        link_failed(l, "connect timeout");
    else if (l->state == LINK_OPEN && l->sent > l->head && waited >= ACK_TIMEOUT_MS)
        link_failed(l, "no acknowledgement");
}
