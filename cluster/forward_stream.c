/* Node-to-node forwarding: streams from other nodes; see forward_send.c
 * for the protocol.
 *
 * The link route's handler (HTTP thread) checks the request (the internal
 * API has checked its signature) and switches the connection; the socket
 * then belongs to the broker loop, which reads frames, routes each as it
 * arrives (a frame is checked as a client's PUBLISH would be), and
 * acknowledges what it routed. Before a frame that would go to a backed-up
 * local QoS 1/2 subscriber, reading pauses (TCP then holds the sender,
 * whose buffer holds its publishers), for at most max_stall_ms at a time,
 * repeating its acknowledgement every second so the sender knows it is
 * alive.
 *
 * Each link id remembers how far its frames were routed, so the frames a
 * sender writes again on a new stream (their acknowledgement was lost with
 * the old one) are skipped, not routed twice. Loop thread only, except
 * handle_link and on_upgraded. */
#include <errno.h>
#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "broker/broker.h"
#include "broker/broker_api.h"
#include "cluster/forward_codec.h"
#include "cluster/forwarder_internal.h"
#include "cluster/redis_link.h"
#include "common/clock.h"
#include "common/hashmap.h"
#include "common/inbox.h"
#include "common/log.h"
#include "http/hmac.h"
#include "http/http_server.h"

#define STREAM_BUF (256u * 1024) /* read buffer; grows for a larger frame */
#define MAX_SEEN 4096            /* remembered link ids; closed ones are forgotten beyond */
#define ACK_BYTES (256u * 1024) /* routed and not acknowledged: acknowledge at once */
#define ACK_DELAY_MS 2           /* below that, this much later (fewer wake-ups for the sender) */
#define KEEPALIVE_MS 1000
#define STREAM_PAUSE_MS 20       /* a paused stream looks again after this at the latest */        /* a paused stream repeats its acknowledgement this often */

/* How far one link's frames were routed here (any of its streams). */
struct stream_seen {
    uint64_t next;      /* stream position of the first frame not routed */
    struct rlink *open; /* its stream now, if any */
};

/* A stream from another node. */
struct rlink {
    struct forwarder *f;
    struct rlink *prev, *next;
    struct http_upgraded *conn;
    int fd;
    struct event *rev, *resume, *ack_later;
    struct stream_seen *seen;
    uint8_t *buf;
    size_t pos, len, cap; /* bytes not routed yet: [pos, len) */
    uint64_t seq;         /* stream position of buf[pos] */
    uint64_t skip;        /* bytes routed before, on an earlier stream: dropped */
    uint64_t acked;       /* the last acknowledgement sent */
    uint64_t acked_ms;    /* when (monotonic) */
    uint64_t barrier_seq; /* durable: what the PING in flight will acknowledge */
    uint64_t paused_since;
    bool barrier;    /* durable: a PING in flight */
    bool closed;     /* closed while its PING was in flight: freed by the answer */
    bool check_next; /* look before routing the next frame */
    char node[64];   /* the sender, for logs */
};

/* The switch, from the HTTP thread to the loop. */
struct handoff {
    struct inbox_item item;
    struct forwarder *f;
    uint64_t id, seq;
    int fd;
    struct http_upgraded *conn;
    uint8_t *extra;
    size_t extra_len;
    char node[64];
};

static void on_stream_read(evutil_socket_t fd, short what, void *arg);

static void
stream_close(struct rlink *rl, bool bad, const char *why)
{
    struct forwarder *f = rl->f;
    if (bad)
        log_warn("forward stream from node %s: %s; closed", rl->node, why);
    else
        log_debug("forward stream from node %s: %s", rl->node, why);
    if (rl->prev)
        rl->prev->next = rl->next;
    else
        f->rlinks = rl->next;
    if (rl->next)
        rl->next->prev = rl->prev;
    if (rl->seen && rl->seen->open == rl)
        rl->seen->open = NULL;
    if (rl->rev)
        event_free(rl->rev);
    if (rl->resume)
        event_free(rl->resume);
    if (rl->ack_later)
        event_free(rl->ack_later);
    http_upgraded_close(rl->conn);
    free(rl->buf);
    if (rl->barrier)
        rl->closed = true; /* the PING's answer frees it */
    else
        free(rl);
}

/* Acknowledges up to seq (again: the same position once more, which tells
 * a sender waiting on a long pause that this node is alive). Returns false
 * if the stream was closed (rl may be gone). */
static bool
send_ack(struct rlink *rl, uint64_t seq, bool again)
{
    if (seq < rl->acked || (seq == rl->acked && !again))
        return true;
    uint8_t b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(seq >> (56 - 8 * i));
    ssize_t w = send(rl->fd, b, sizeof(b), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w == (ssize_t)sizeof(b)) {
        rl->acked = seq;
        rl->acked_ms = clock_monotonic_ms();
        rl->f->recv_batches++;
    } else if (!(w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))) {
        /* (A full socket skips this one: the next says more.) */
        stream_close(rl, false, w < 0 ? strerror(errno) : "cannot acknowledge");
        return false;
    }
    return true;
}

static void stream_ack(struct rlink *rl);

/* Durable: Redis has every session write the routed frames caused (they
 * went first on the same connection). */
static void
on_stream_barrier(struct redisReply *reply, void *arg)
{
    struct rlink *rl = arg;
    rl->barrier = false;
    if (rl->closed) {
        free(rl);
        return;
    }
    if (!reply || reply->type == REDIS_REPLY_ERROR)
        rl->f->barriers_failed++;
    if (send_ack(rl, rl->barrier_seq, false) && rl->seq > rl->acked)
        stream_ack(rl);
}

/* Acknowledges what is routed; durable: once Redis confirms (without
 * Redis there is nothing to wait for: counted). May close the stream. */
static void
stream_ack(struct rlink *rl)
{
    static const char *ping[] = {"PING"};
    struct forwarder *f = rl->f;
    if (!f->cfg->durable) {
        send_ack(rl, rl->seq, false);
        return;
    }
    if (rl->barrier)
        return; /* its answer asks again */
    rl->barrier_seq = rl->seq;
    if (redis_link_argv(f->link, on_stream_barrier, rl, 1, ping, NULL) == RMQ_OK) {
        rl->barrier = true;
        return;
    }
    f->barriers_failed++;
    send_ack(rl, rl->seq, false);
}

/* Room for a frame of need bytes at pos. */
static bool
make_room(struct rlink *rl, size_t need)
{
    if (rl->pos > 0) {
        memmove(rl->buf, rl->buf + rl->pos, rl->len - rl->pos);
        rl->len -= rl->pos;
        rl->pos = 0;
    }
    if (need <= rl->cap)
        return true;
    uint8_t *b = realloc(rl->buf, need);
    if (!b)
        return false;
    rl->buf = b;
    rl->cap = need;
    return true;
}

enum pause { ROUTE, PAUSED, CLOSED };

/* Pauses before a frame for a backed-up subscriber, or says to route it;
 * CLOSED: the stream is gone (rl with it). */
static enum pause
pause_for(struct rlink *rl, const struct forward_frame *fr)
{
    struct forwarder *f = rl->f;
    if (!(rl->check_next || fr->rescued) || (fr->target && !fr->rescued))
        return ROUTE;
    if (!broker_api_remote_backed_up(f->broker, fr->topic, fr->topic_len, fr->qos)) {
        rl->paused_since = 0;
        return ROUTE;
    }
    uint64_t now = clock_monotonic_ms();
    if (!rl->paused_since)
        rl->paused_since = now;
    if (now - rl->paused_since >= f->cfg->max_stall_ms)
        return ROUTE; /* held long enough: the subscriber's queue takes it */
    if (now - rl->acked_ms >= KEEPALIVE_MS && !send_ack(rl, rl->acked, true))
        return CLOSED;
    if (!rl->resume && !(rl->resume = evtimer_new(f->base, on_stream_read, rl)))
        return ROUTE;
    /* broker_api_on_room wakes it at once; the timer is the fallback. */
    struct timeval tv = {0, STREAM_PAUSE_MS * 1000};
    event_del(rl->rev);
    evtimer_add(rl->resume, &tv);
    rl->check_next = true;
    f->recv_pauses++;
    return PAUSED;
}

/* Routes every whole frame in the buffer, then acknowledges. */
static void
stream_route(struct rlink *rl)
{
    struct forwarder *f = rl->f;
    size_t routed = 0;
    bool paused = false;
    broker_api_now(f->broker); /* one clock reading for the frames routed now */
    for (;;) {
        size_t avail = rl->len - rl->pos, need;
        if (rl->skip) {
            size_t n = rl->skip < avail ? (size_t)rl->skip : avail;
            rl->pos += n;
            rl->seq += n;
            rl->skip -= n;
            if (rl->skip)
                break;
            continue;
        }
        enum rmq_status st = forward_frame_peek(rl->buf + rl->pos, avail, &need);
        if (st == RMQ_AGAIN || (st == RMQ_OK && need > avail)) {
            if (st == RMQ_OK && need > rl->cap - rl->pos && !make_room(rl, need)) {
                stream_close(rl, true, "out of memory for a frame");
                return;
            }
            break;
        }
        struct forward_frame fr;
        size_t at = 0;
        if (st != RMQ_OK || forward_frame_next(rl->buf + rl->pos, need, &at, &fr) != RMQ_OK) {
            f->recv_bad++;
            stream_close(rl, true, "malformed frame");
            return;
        }
        enum pause p = pause_for(rl, &fr);
        if (p == CLOSED) {
            f->recv_msgs += routed;
            return;
        }
        if (p == PAUSED) {
            paused = true;
            break;
        }
        bool backed_up;
        deliver_frame(f, &fr, &backed_up);
        rl->check_next = backed_up;
        rl->pos += need;
        rl->seq += need;
        rl->seen->next = rl->seq;
        routed++;
    }
    f->recv_msgs += routed;
    if (rl->pos == rl->len)
        rl->pos = rl->len = 0;
    else if (rl->pos > rl->cap / 2)
        make_room(rl, 0);
    if (!paused && !event_pending(rl->rev, EV_READ, NULL))
        event_add(rl->rev, NULL); /* after a pause */
    if (rl->seq - rl->acked >= ACK_BYTES || f->cfg->durable) {
        stream_ack(rl); /* last: it may close the stream */
    } else if (rl->seq > rl->acked && !evtimer_pending(rl->ack_later, NULL)) {
        struct timeval tv = {0, ACK_DELAY_MS * 1000};
        evtimer_add(rl->ack_later, &tv);
    }
}

static void
on_ack_later(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    stream_ack(arg);
}

/* The socket is readable, or a pause is over (rl->resume: fd is -1). */
static void
on_stream_read(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct rlink *rl = arg;
    if (fd == rl->fd && rl->len < rl->cap) {
        ssize_t r = recv(rl->fd, rl->buf + rl->len, rl->cap - rl->len, 0);
        if (r == 0) {
            stream_close(rl, false, "closed by the node");
            return;
        }
        if (r < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                stream_close(rl, true, strerror(errno));
            return;
        }
        rl->len += (size_t)r;
        rl->f->last_in_ms = clock_monotonic_ms();
    }
    stream_route(rl);
}

/* Forgets closed streams' link ids beyond MAX_SEEN (their senders have
 * most probably gone; one that comes back starts from what it says). */
static void
forget_seen(struct forwarder *f)
{
    size_t pos = 0, len;
    const void *key;
    void *v;
    while (hashmap_count(f->streams) >= MAX_SEEN && hashmap_next(f->streams, &pos, &key, &len, &v))
        if (!((struct stream_seen *)v)->open)
            free(hashmap_remove(f->streams, key, len));
}

static void
stream_open(struct handoff *h)
{
    struct forwarder *f = h->f;
    struct stream_seen *seen = hashmap_get(f->streams, &h->id, sizeof(h->id));
    struct rlink *rl = calloc(1, sizeof(*rl));
    if (!seen && rl) {
        forget_seen(f);
        if ((seen = calloc(1, sizeof(*seen)))) {
            seen->next = h->seq;
            if (hashmap_put(f->streams, &h->id, sizeof(h->id), seen, NULL) != RMQ_OK) {
                free(seen);
                seen = NULL;
            }
        }
    }
    /* Acknowledgements go out at once: MHD may have left the socket corked,
     * and Nagle would hold an ack until the sender's delayed ACK (40 ms). */
    int one = 1, zero = 0;
    setsockopt(h->fd, IPPROTO_TCP, TCP_CORK, &zero, sizeof(zero));
    setsockopt(h->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (!rl || !seen || !(rl->buf = malloc(STREAM_BUF)) ||
        !(rl->rev = event_new(f->base, h->fd, EV_READ | EV_PERSIST, on_stream_read, rl)) ||
        !(rl->ack_later = evtimer_new(f->base, on_ack_later, rl)) ||
        evutil_make_socket_nonblocking(h->fd) != 0 || event_add(rl->rev, NULL) != 0) {
        log_warn("forward stream from node %s: cannot start (out of memory)", h->node);
        if (rl) {
            if (rl->rev)
                event_free(rl->rev);
            if (rl->ack_later)
                event_free(rl->ack_later);
            free(rl->buf);
            free(rl);
        }
        http_upgraded_close(h->conn);
        return;
    }
    if (seen->open)
        stream_close(seen->open, false, "replaced by a new stream");
    rl->f = f;
    rl->conn = h->conn;
    rl->fd = h->fd;
    rl->cap = STREAM_BUF;
    rl->seen = seen;
    rl->seq = rl->acked = h->seq;
    if (seen->next > h->seq)
        rl->skip = seen->next - h->seq; /* routed before: its acknowledgement was lost */
    else
        seen->next = h->seq; /* later: the sender dropped what came between */
    memcpy(rl->node, h->node, sizeof(rl->node));
    seen->open = rl;
    rl->next = f->rlinks;
    if (f->rlinks)
        f->rlinks->prev = rl;
    f->rlinks = rl;
    f->streams_in++;
    if (h->extra_len && make_room(rl, h->extra_len)) {
        memcpy(rl->buf, h->extra, h->extra_len);
        rl->len = h->extra_len;
        stream_route(rl);
    }
}

static void
handoff_run(struct inbox_item *item, bool cancelled)
{
    struct handoff *h = (struct handoff *)item;
    if (cancelled)
        http_upgraded_close(h->conn);
    else
        stream_open(h);
    free(h->extra);
    free(h);
}

/* HTTP thread: the 101 is sent (fd >= 0), or the request is gone. */
static void
on_upgraded(void *arg, int fd, const char *extra, size_t extra_len, struct http_upgraded *conn)
{
    struct handoff *h = arg;
    if (fd < 0) {
        free(h);
        return;
    }
    h->fd = fd;
    h->conn = conn;
    if (extra_len && (h->extra = malloc(extra_len))) {
        memcpy(h->extra, extra, extra_len);
        h->extra_len = extra_len;
    } else if (extra_len) {
        http_upgraded_close(conn);
        free(h);
        return;
    }
    h->item.run = handoff_run;
    inbox_post(broker_inbox(h->f->broker), &h->item);
}

static bool
parse_u64(const char *s, int base, size_t max_digits, uint64_t *out)
{
    if (!s || !*s || strlen(s) > max_digits)
        return false;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, base);
    if (*end || errno || s[0] == '-' || s[0] == '+')
        return false;
    *out = v;
    return true;
}

void
handle_link(struct http_request *req, void *ctx)
{
    (void)ctx;
    struct forwarder *f = http_request_route(req)->arg;
    uint64_t id, seq;
    const char *up = http_request_header(req, "Upgrade");
    const char *node = http_request_header(req, HMAC_HEADER_NODE);
    if (!parse_u64(http_request_param(req, "id"), 16, 16, &id) ||
        !parse_u64(http_request_param(req, "seq"), 10, 20, &seq)) {
        http_reply_error(req, 400, "bad_link", "expected /link/{16 hex digits}/{position}");
        return;
    }
    if (!up || strcasecmp(up, LINK_PROTOCOL) != 0) {
        http_reply_error(req, 400, "upgrade_required", "expected Upgrade: " LINK_PROTOCOL);
        return;
    }
    struct handoff *h = calloc(1, sizeof(*h));
    if (!h) {
        http_reply_error(req, 500, "internal", "out of memory");
        return;
    }
    h->f = f;
    h->id = id;
    h->seq = seq;
    snprintf(h->node, sizeof(h->node), "%s", node ? node : "?");
    if (!http_reply_upgrade(req, LINK_PROTOCOL, on_upgraded, h))
        free(h);
}

/* broker_api_on_room: a backed-up subscriber has room again; every paused
 * stream looks again now (one whose subscriber is still full pauses again). */
void
streams_on_room(void *ctx)
{
    struct forwarder *f = ctx;
    for (struct rlink *rl = f->rlinks; rl; rl = rl->next)
        if (rl->resume && evtimer_pending(rl->resume, NULL))
            event_active(rl->resume, EV_TIMEOUT, 0);
}

void
streams_close_all(struct forwarder *f)
{
    while (f->rlinks)
        stream_close(f->rlinks, false, "this node is stopping");
}
