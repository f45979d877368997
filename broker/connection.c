/* Client connections: non-blocking socket I/O, packet framing, dispatch to
 * the handlers, output batching and the connection's one timer.
 *
 * Reading: each wake-up does one read(2) into the loop's shared 64 KiB
 * buffer, decodes every complete packet in place and keeps only the tail of
 * an incomplete packet in a per-connection buffer (so an idle connection
 * holds no read buffer). Packets larger than the shared buffer are gathered
 * in the connection's own buffer, sized from the fixed header.
 *
 * Writing: handlers append encoded packets to the connection's output and
 * put it on the loop's dirty list; a flush event, activated once per loop
 * iteration, writes every dirty connection with one write(2) each. Output
 * blocked by the kernel arms EV_WRITE; output above max-output-buffer also
 * stops reading from that client until it drains (back-pressure).
 *
 * Set-up: a listener with the PROXY protocol on first takes the load
 * balancer's header off the socket (peeked, then exactly its bytes read, so
 * what follows stays for TLS or MQTT) and adopts the client address it
 * carries; a TLS listener then runs the handshake. Both are bounded by the
 * connect timeout, refusals are logged and counted. Over TLS the same
 * reading and writing code runs with tls_conn_read/tls_conn_write in place
 * of read(2)/sendmsg(2); plain connections take no other path.
 *
 * Loop thread only. conn_close() frees the connection at once: callers must
 * not touch it afterwards. */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "broker/broker_internal.h"
#include "broker/proxy_proto.h"
#include "broker/retain.h"
#include "broker/tls.h"
#include "broker/websocket.h"
#include "common/hashmap.h"
#include "common/log.h"


const char *
close_reason_name(enum close_reason reason)
{
    static const char *const names[] = {
        [CLOSE_NORMAL] = "normal",
        [CLOSE_SOCKET_ERROR] = "socket_error",
        [CLOSE_PROTOCOL_ERROR] = "protocol_error",
        [CLOSE_KEEPALIVE_TIMEOUT] = "keepalive_timeout",
        [CLOSE_CONNECT_TIMEOUT] = "connect_timeout",
        [CLOSE_TAKEOVER] = "takeover",
        [CLOSE_REFUSED] = "refused",
        [CLOSE_SHUTDOWN] = "shutdown",
        [CLOSE_KICKED] = "kicked",
    };
    return (unsigned)reason < sizeof(names) / sizeof(names[0]) ? names[reason] : "unknown";
}

/* The largest CONNECT MQTT 3.1.1 allows: fixed header, variable header and
 * five length-prefixed fields (client id, will topic, will payload,
 * username, password) of at most 65535 bytes each. */
#define CONNECT_MAX_SIZE (5u + 10u + 5u * (2u + 65535u))

static void conn_on_event(evutil_socket_t fd, short what, void *arg);
static void conn_on_timer(struct timer_entry *entry, uint64_t now_ms);

/* Input received but not yet run: bytes kept in c->in, or plaintext (or
 * the stream's end) waiting inside the TLS session. */
static bool
input_waiting(const struct conn *c)
{
    return c->in_len || (c->tls && tls_conn_pending(c->tls));
}

static void
conn_set_events(struct conn *c, bool want_read, bool want_write)
{
    short flags = (short)(EV_PERSIST | (want_read ? EV_READ : 0) | (want_write ? EV_WRITE : 0));
    if (event_get_events(&c->ev) == flags)
        return;
    event_del(&c->ev); /* also drops a pending event_active() */
    event_assign(&c->ev, c->broker->base, c->fd, flags, conn_on_event, c);
    event_add(&c->ev, NULL);
    if (want_read && input_waiting(c) && !c->dispatching)
        event_active(&c->ev, EV_READ, 1); /* kept input still waits to be run */
}

/* Output not yet written: the queue, and records a compact TLS session
 * sealed from it that the socket has not taken yet. */
static size_t
out_pending(const struct conn *c)
{
    return outq_pending(&c->out) + (c->tls ? tls_conn_unsent(c->tls) : 0);
}

/* Reads resume only once the output has drained below the limit. */
void
conn_update_events(struct conn *c)
{
    bool blocked = out_pending(c) > 0 && c->want_write;
    bool over = out_pending(c) > c->broker->cfg->max_output_buffer;
    bool reading = !over && !c->paused_off && !c->throttled_by;
    if (c->tls) {
        /* TLS may need the socket's other direction to go on. */
        blocked = blocked || (reading && tls_conn_wants_write(c->tls));
        reading = reading || (out_pending(c) > 0 && tls_conn_wants_read(c->tls));
    }
    conn_set_events(c, reading, blocked);
}

void
conn_throttle(struct conn *c, struct session *s)
{
    c->throttled_by = s;
    c->throttle_next = s->throttled;
    s->throttled = c;
    conn_update_events(c);
}

static void
unthrottle_one(struct conn *c)
{
    if (!c->throttled_by)
        return;
    struct conn **pp = &c->throttled_by->throttled;
    while (*pp && *pp != c)
        pp = &(*pp)->throttle_next;
    if (*pp)
        *pp = c->throttle_next;
    if (!c->throttled_by->throttled)
        session_unlink_throttling(c->broker, c->throttled_by);
    c->throttled_by = NULL;
    c->throttle_next = NULL;
}

/* Lazily: most pauses (a claim, a look-up) end before the client sends
 * more, so reading stays armed until input actually arrives meanwhile;
 * then conn_on_event disarms it (two epoll_ctl calls saved per claim). */
void
conn_pause_input(struct conn *c)
{
    c->paused = true;
}

void
conn_client_info(const struct conn *c, struct broker_client_info *info)
{
    const struct message *will = c->will;
    *info = (struct broker_client_info){
        .client_id = c->session ? c->session->client_id : c->claim ? c->claim->client_id : "",
        .username = c->username,
        .peer = c->peer,
        .channel = c->channel,
        .connected_at_ms = c->connected_at_ms,
        .protocol_level = c->protocol_level,
        .clean_session = c->session ? c->session->clean : c->claim && c->claim->clean,
        .will_topic = will ? will->topic : NULL,
        .will_payload = will ? will->payload : NULL,
        .will_payload_len = will ? will->payload_len : 0,
        .will_qos = will ? will->qos : 0,
        .will_retain = will && will->retain,
    };
}

void
conn_accept(struct broker *b, int fd, const char *peer, const struct listener_slot *l)
{
    struct conn *c = calloc(1, sizeof(*c));
    if (c && ((l->tls_ctx && !(c->tls = tls_conn_new(l->tls_ctx, fd))) ||
              (l->spec.ws && !(c->ws = ws_conn_new(l->spec.path))))) {
        tls_conn_free(c->tls);
        free(c);
        c = NULL;
    }
    if (!c) {
        log_error("out of memory accepting %s", peer);
        close(fd);
        return;
    }
    c->broker = b;
    c->fd = fd;
    c->state = l->spec.proxy ? CONN_PROXY_HEADER
               : c->tls      ? CONN_TLS_HANDSHAKE
               : c->ws       ? CONN_WS_HANDSHAKE
                             : CONN_AWAIT_CONNECT;
    c->proxy_accept = (uint8_t)l->spec.proxy;
    c->use_identity = c->tls && l->spec.tls_cfg.use_identity_as_username;
    c->channel = ++b->next_channel;
    c->last_rx_ms = broker_now(b);
    snprintf(c->peer, sizeof(c->peer), "%s", peer);
    timer_entry_init(&c->timer, conn_on_timer);
    event_assign(&c->ev, b->base, fd, EV_READ | EV_PERSIST, conn_on_event, c);
    if (event_add(&c->ev, NULL) != 0) {
        log_error("cannot watch connection from %s", peer);
        tls_conn_free(c->tls);
        close(fd);
        free(c->ws);
        free(c);
        return;
    }
    timer_wheel_schedule(b->wheel, &c->timer, broker_now(b) + b->cfg->connect_timeout_ms);
    c->next = b->conns;
    if (b->conns)
        b->conns->prev = c;
    b->conns = c;
    b->conn_count++;
    limits_conn_opened(c, l);
    b->metrics.connections_accepted++;
    log_debug("accepted connection %llu from %s", (unsigned long long)c->channel, peer);
}

static void
mark_dirty(struct conn *c)
{
    if (c->dirty)
        return;
    struct broker *b = c->broker;
    c->dirty = true;
    if (!b->dirty)
        event_active(b->flush_ev, EV_WRITE, 0);
    c->dirty_next = b->dirty;
    b->dirty = c;
}

uint8_t *
conn_reserve(struct conn *c, size_t n)
{
    if (c->ws) {
        /* Each piece of output is one binary frame: MQTT packets may span
         * frames, and a frame never holds half a piece. */
        size_t h = ws_frame_header_size(n);
        uint8_t *p = outq_reserve(&c->out, h + n);
        if (!p)
            return NULL;
        ws_frame_header(p, WS_OP_BINARY, n);
        mark_dirty(c);
        return p + h;
    }
    uint8_t *p = outq_reserve(&c->out, n);
    if (p)
        mark_dirty(c);
    return p;
}

enum rmq_status
conn_write_raw(struct conn *c, const void *data, size_t len)
{
    uint8_t *p = outq_reserve(&c->out, len);
    if (!p)
        return RMQ_NOMEM;
    memcpy(p, data, len);
    mark_dirty(c);
    return RMQ_OK;
}

enum rmq_status
conn_write_ref(struct conn *c, struct message *msg)
{
    if (c->ws) {
        /* session.c copies payloads for WebSocket clients; a reference
         * would still need a frame of its own. */
        uint8_t h[WS_HEADER_MAX];
        size_t n = ws_frame_header(h, WS_OP_BINARY, msg->payload_len);
        if (outq_ref_room(&c->out) != RMQ_OK || conn_write_raw(c, h, n) != RMQ_OK)
            return RMQ_NOMEM;
    }
    enum rmq_status st = outq_add_ref(&c->out, msg);
    if (st == RMQ_OK)
        mark_dirty(c);
    return st;
}

enum rmq_status
conn_write(struct conn *c, const void *data, size_t len)
{
    uint8_t *p = conn_reserve(c, len);
    if (!p)
        return RMQ_NOMEM;
    memcpy(p, data, len);
    return RMQ_OK;
}

/* Writes as much output as the socket takes. RMQ_IO on a socket error. */
static enum rmq_status
conn_flush(struct conn *c)
{
    size_t written;
    enum rmq_status st = c->tls ? tls_conn_write(c->tls, &c->out, &written)
                                : outq_write(&c->out, c->fd, &written);
    c->broker->metrics.bytes_sent += written;
    if (st == RMQ_IO)
        return RMQ_IO;
    /* A TLS write that waits for input is woken by EV_READ, not EV_WRITE. */
    c->want_write = st == RMQ_AGAIN && !(c->tls && tls_conn_wants_read(c->tls));
    conn_update_events(c);
    return RMQ_OK;
}

static void
unlink_dirty(struct conn *c)
{
    if (!c->dirty)
        return;
    struct conn **pp = &c->broker->dirty;
    while (*pp && *pp != c)
        pp = &(*pp)->dirty_next;
    if (*pp)
        *pp = c->dirty_next;
    c->dirty = false;
}

void
conn_flush_all(struct broker *b)
{
    while (b->dirty) {
        struct conn *c = b->dirty;
        b->dirty = c->dirty_next;
        c->dirty = false;
        if (conn_flush(c) != RMQ_OK) {
            b->metrics.socket_errors++;
            conn_close(c, CLOSE_SOCKET_ERROR);
        }
    }
}

static void
publish_will(struct broker *b, struct message *will)
{
    struct route r = {
        .topic = will->topic,
        .topic_len = will->topic_len,
        .payload = will->payload,
        .payload_len = will->payload_len,
        .qos = will->qos,
        .retain = will->retain,
        .msg = will, /* the route takes over our reference */
    };
    b->metrics.wills_published++;
    broker_route(b, &r);
}

static void
detach_session(struct broker *b, struct conn *c)
{
    struct session *s = c->session;
    if (!s)
        return;
    c->session = NULL;
    s->conn = NULL;
    b->connected_count--;
    /* Offline, the queue bound applies: publishers need not wait. */
    session_unthrottle(b, s);
    if (s->clean) {
        hashmap_remove(b->sessions, s->client_id, s->client_id_len);
        session_free(b, s);
    } else {
        session_notify(b, s, SESSION_OFFLINE, NULL, 0, 0, NULL);
    }
}

/* Tells the cluster layer the client is gone, or orphans a pending claim
 * (broker_claim_done() then undoes it). */
static void
release_claim(struct broker *b, struct conn *c, enum close_reason reason)
{
    if (c->claim) {
        c->claim->conn = NULL;
        c->claim = NULL;
    } else if (c->state == CONN_ACTIVE) {
        struct broker_client_info info;
        conn_client_info(c, &info);
        if (b->hooks && b->hooks->released)
            b->hooks->released(b->hooks->ctx, &info, reason);
        for (size_t i = 0; i < b->observer_count; i++) {
            const struct broker_observer *o = b->observers[i];
            if (o->disconnected)
                o->disconnected(o->ctx, &info, reason);
        }
    }
}

void
conn_close(struct conn *c, enum close_reason reason)
{
    struct broker *b = c->broker;
    log_debug("closing connection %llu from %s: %s", (unsigned long long)c->channel, c->peer,
              close_reason_name(reason));
    bool was_active = c->state == CONN_ACTIVE;
    release_claim(b, c, reason);
    unthrottle_one(c);
    /* A WebSocket client is told goodbye, and one that said it first gets
     * its close frame back. */
    bool ws_close = c->ws && c->state >= CONN_AWAIT_CONNECT &&
                    (reason != CLOSE_SOCKET_ERROR || c->ws->dec.closed);
    if (ws_close)
        conn_ws_close_frame(c, reason == CLOSE_SHUTDOWN ? 1001 : WS_CLOSE_NORMAL);
    /* Best effort for a last CONNACK or similar; never wait. */
    if (out_pending(c) > 0 && (reason != CLOSE_SOCKET_ERROR || ws_close)) {
        size_t n;
        if (c->tls)
            tls_conn_write(c->tls, &c->out, &n);
        else
            outq_write(&c->out, c->fd, &n);
    }
    detach_session(b, c);
    struct message *will = c->will;
    c->will = NULL;

    timer_entry_cancel(&c->timer);
    limits_conn_closed(c);
    event_del(&c->ev);
    tls_conn_free(c->tls); /* close_notify, before the socket goes */
    close(c->fd);
    unlink_dirty(c);
    if (c->prev)
        c->prev->next = c->next;
    else
        b->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    b->conn_count--;
    b->metrics.connections_closed++;
    free(c->in);
    outq_clear(&c->out);
    free(c->username);
    free(c->ws);
    free(c);

    /* After the session is detached, so a persistent session of the same
     * client that subscribes to its own will topic gets it queued. */
    if (will && was_active && reason != CLOSE_NORMAL && reason != CLOSE_SHUTDOWN)
        publish_will(b, will); /* only for a CONNECT that was accepted [MQTT-3.1.2-8] */
    else
        message_unref(will);
}

static enum rmq_status
handle_pingreq(struct conn *c, const struct mqtt_packet *p)
{
    uint8_t out[2];
    return conn_write(c, out, mqtt_encode_empty(out, MQTT_PINGRESP));
}

static enum rmq_status
handle_disconnect(struct conn *c, const struct mqtt_packet *p)
{
    /* A clean DISCONNECT discards the will [MQTT-3.14.4-3]. */
    message_unref(c->will);
    c->will = NULL;
    return RMQ_AGAIN; /* tells dispatch to close normally */
}

typedef enum rmq_status (*packet_handler)(struct conn *c, const struct mqtt_packet *p);

/* Packets a client may send once connected; the rest are protocol errors. */
static const packet_handler handlers[16] = {
    [MQTT_PUBLISH] = handle_publish,         [MQTT_PUBACK] = handle_puback,
    [MQTT_PUBREC] = handle_pubrec,           [MQTT_PUBREL] = handle_pubrel,
    [MQTT_PUBCOMP] = handle_pubcomp,         [MQTT_SUBSCRIBE] = handle_subscribe,
    [MQTT_UNSUBSCRIBE] = handle_unsubscribe, [MQTT_PINGREQ] = handle_pingreq,
    [MQTT_DISCONNECT] = handle_disconnect,
};

/* Runs one packet. Returns true if the connection is still open. */
static bool
dispatch(struct conn *c, const struct mqtt_packet *p)
{
    struct broker *b = c->broker;
    enum rmq_status st;
    if (c->state == CONN_AWAIT_CONNECT) {
        if (p->type != MQTT_CONNECT) {
            log_info("%s: first packet is %s, not CONNECT", c->peer, mqtt_type_name(p->type));
            b->metrics.protocol_errors++;
            conn_close(c, CLOSE_PROTOCOL_ERROR);
            return false;
        }
        st = handle_connect(c, p);
        if (st == RMQ_OK)
            return true;
        conn_close(c, st == RMQ_PROTOCOL ? CLOSE_PROTOCOL_ERROR : CLOSE_REFUSED);
        return false;
    }
    packet_handler h = handlers[p->type & 15];
    if (!h) {
        log_info("%s (%s): unexpected %s", c->peer, c->session->client_id,
                 mqtt_type_name(p->type));
        b->metrics.protocol_errors++;
        conn_close(c, CLOSE_PROTOCOL_ERROR);
        return false;
    }
    st = h(c, p);
    if (st == RMQ_OK)
        return true;
    if (st == RMQ_AGAIN) {
        conn_close(c, CLOSE_NORMAL);
    } else if (st == RMQ_NOMEM) {
        log_error("%s: out of memory, closing", c->peer);
        conn_close(c, CLOSE_SOCKET_ERROR);
    } else {
        b->metrics.protocol_errors++;
        conn_close(c, CLOSE_PROTOCOL_ERROR);
    }
    return false;
}

/* Answers an undecodable packet. Returns false (the connection is closed). */
static bool
reject_packet(struct conn *c, enum rmq_status st, const uint8_t *buf, size_t len)
{
    struct broker *b = c->broker;
    if (st == RMQ_LIMIT) {
        log_info("%s: packet above max-packet-size %u, closing", c->peer,
                 b->cfg->max_packet_size);
        b->metrics.oversize_packets++;
    } else if (st == RMQ_UNSUPPORTED && c->state == CONN_AWAIT_CONNECT) {
        uint8_t out[4];
        log_info("%s: unsupported protocol name or level, refusing", c->peer);
        conn_write(c, out, mqtt_encode_connack(out, false, MQTT_CONNACK_BAD_PROTOCOL));
        b->metrics.connections_rejected++;
        conn_close(c, CLOSE_REFUSED);
        return false;
    } else {
        log_info("%s: malformed packet (type %u, %s), closing", c->peer, (unsigned)(buf[0] >> 4),
                 rmq_status_str(st));
        b->metrics.protocol_errors++;
    }
    conn_close(c, CLOSE_PROTOCOL_ERROR);
    return false;
}

bool
conn_keep_input(struct conn *c, const uint8_t *buf, size_t len)
{
    if (len == 0)
        return true;
    c->in = malloc(len);
    if (!c->in) {
        conn_close(c, CLOSE_SOCKET_ERROR);
        return false;
    }
    memcpy(c->in, buf, len);
    c->in_len = c->in_cap = (uint32_t)len;
    c->in_need = 0;
    return true;
}

/* Decodes and runs every complete packet in buf; keeps the incomplete tail.
 * Returns false if the connection was closed. */
static bool
process(struct conn *c, const uint8_t *buf, size_t len)
{
    size_t off = 0;
    while (off < len) {
        struct mqtt_packet p;
        size_t used = 0;
        uint32_t max = c->broker->cfg->max_packet_size;
        if (c->state == CONN_AWAIT_CONNECT) {
            /* Before CONNECT nothing else may come, and nothing larger than
             * the largest CONNECT: refuse early, allocate nothing big. */
            if (buf[off] >> 4 != MQTT_CONNECT) {
                log_info("%s: first packet is type %u, not CONNECT", c->peer,
                         (unsigned)(buf[off] >> 4));
                c->broker->metrics.protocol_errors++;
                conn_close(c, CLOSE_PROTOCOL_ERROR);
                return false;
            }
            if (max > CONNECT_MAX_SIZE)
                max = CONNECT_MAX_SIZE;
        }
        enum rmq_status st = mqtt_decode(buf + off, len - off, max, &p, &used);
        if (st == RMQ_AGAIN) {
            size_t tail = len - off;
            /* Small tails go back through the shared buffer; a large packet
             * is gathered here, so size for all of it. */
            size_t cap = used > BROKER_READ_BUFFER ? used : tail;
            uint8_t *in = malloc(cap);
            if (!in) {
                conn_close(c, CLOSE_SOCKET_ERROR);
                return false;
            }
            memcpy(in, buf + off, tail);
            c->in = in;
            c->in_len = (uint32_t)tail;
            c->in_cap = (uint32_t)cap;
            c->in_need = (uint32_t)used;
            return true;
        }
        if (st != RMQ_OK)
            return reject_packet(c, st, buf + off, len - off);
        off += used;
        c->dispatching = true;
        if (!dispatch(c, &p))
            return false;
        c->dispatching = false;
        if (c->state == CONN_CLAIMING || c->throttled_by || c->forward_paused || c->rate_paused)
            return conn_keep_input(c, buf + off, len - off);
    }
    return true;
}

ssize_t
conn_recv(struct conn *c, void *buf, size_t len)
{
    return c->tls ? tls_conn_read(c->tls, buf, len) : read(c->fd, buf, len);
}

/* After a TLS read: what the session already holds raises no socket event,
 * so come back for it. */
static void
tls_read_again_if_buffered(struct conn *c)
{
    if (tls_conn_pending(c->tls) && !c->paused && !c->throttled_by)
        event_active(&c->ev, EV_READ, 1);
}

/* A read that ended the connection: EOF (n 0) or an error, logged (a TLS
 * protocol error at info: the peer sent what TLS does not allow). */
static void
read_failed(struct conn *c, ssize_t n)
{
    if (n < 0 && errno == EPROTO && c->tls)
        log_info("%s: TLS error after the handshake: a record that does not authenticate, "
                 "a fatal alert or a message not allowed",
                 c->peer);
    else if (n < 0)
        log_debug("%s: read: %s", c->peer, strerror(errno));
    c->broker->metrics.socket_errors++;
    conn_close(c, CLOSE_SOCKET_ERROR);
}

/* Gathers a packet too large for the shared buffer in c->in. */
static void
read_large(struct conn *c)
{
    struct broker *b = c->broker;
    ssize_t n = conn_recv(c, c->in + c->in_len, c->in_need - c->in_len);
    if (n <= 0) {
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
            if (c->tls)
                conn_update_events(c);
            return;
        }
        read_failed(c, n);
        return;
    }
    if (c->ws && (n = conn_ws_input(c, c->in + c->in_len, (size_t)n)) < 0)
        return;
    b->metrics.bytes_received += (uint64_t)n;
    c->last_rx_ms = broker_now(b);
    c->in_len += (uint32_t)n;
    if (c->in_len < c->in_need) {
        if (c->ws && conn_ws_peer_closed(c))
            return;
        if (c->tls)
            tls_read_again_if_buffered(c);
        return;
    }
    uint8_t *in = c->in;
    size_t len = c->in_len;
    c->in = NULL;
    c->in_len = c->in_cap = c->in_need = 0;
    bool open = process(c, in, len);
    free(in);
    if (!open || (c->ws && conn_ws_peer_closed(c)))
        return;
    conn_update_events(c);
    if (c->tls)
        tls_read_again_if_buffered(c);
}

static void
conn_on_read(struct conn *c)
{
    struct broker *b = c->broker;
    if (c->in_len && c->in_need > BROKER_READ_BUFFER) {
        read_large(c);
        return;
    }
    uint8_t *buf = b->rbuf;
    size_t have = c->in_len;
    if (have)
        memcpy(buf, c->in, have);
    ssize_t n = 0;
    if (have < BROKER_READ_BUFFER) {
        n = conn_recv(c, buf + have, BROKER_READ_BUFFER - have);
        bool again = n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR);
        if (again && !have) {
            if (c->tls)
                conn_update_events(c); /* the session may wait for POLLOUT */
            return;
        }
        if (again) {
            n = 0; /* nothing new: run what was kept while paused */
        } else if (n <= 0) {
            read_failed(c, n);
            return;
        }
    }
    /* WebSocket: the frames' payload, in place, is the MQTT input. */
    if (c->ws && n > 0 && (n = conn_ws_input(c, buf + have, (size_t)n)) < 0)
        return;
    free(c->in);
    c->in = NULL;
    c->in_len = c->in_cap = c->in_need = 0;
    b->metrics.bytes_received += (uint64_t)n;
    c->last_rx_ms = broker_now(b);
    if (!process(c, buf, have + (size_t)n) || (c->ws && conn_ws_peer_closed(c)))
        return;
    if (c->state == CONN_ACTIVE || c->tls)
        conn_update_events(c);
    if (c->tls)
        tls_read_again_if_buffered(c);
}

void
conn_resume_input(struct conn *c)
{
    c->paused = false;
    c->paused_off = false;
    conn_update_events(c);
    /* Packets kept while paused run from the loop, never from inside
     * another connection's processing (the read buffer is shared). */
    if (input_waiting(c) && !c->throttled_by)
        event_active(&c->ev, EV_READ, 1);
}

/* TLS can need the socket's other direction: a read that waits for it to
 * be writable, a write that waits for it to be readable. Turns readiness
 * into the operation waiting for it. */
static short
tls_directions(const struct conn *c, short what)
{
    short out = what;
    if ((what & EV_WRITE) && tls_conn_wants_write(c->tls))
        out |= EV_READ;
    if ((what & EV_READ) && tls_conn_wants_read(c->tls)) {
        out |= EV_WRITE;
        if (out_pending(c) > c->broker->cfg->max_output_buffer)
            out &= ~EV_READ; /* armed for the write only: back-pressure holds */
    }
    return out;
}

static void
conn_on_event(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    struct broker *b = c->broker;
    broker_refresh_clock(b);
    if (c->state < CONN_AWAIT_CONNECT) {
        conn_setup_step(c);
        return;
    }
    if (c->tls)
        what = tls_directions(c, what);
    if (what & EV_WRITE) {
        unlink_dirty(c);
        if (conn_flush(c) != RMQ_OK) {
            b->metrics.socket_errors++;
            conn_close(c, CLOSE_SOCKET_ERROR);
            return;
        }
    }
    if ((what & EV_READ) && c->paused && !c->paused_off) {
        c->paused_off = true; /* input while paused: stop reading until resumed */
        conn_update_events(c);
    }
    if ((what & EV_READ) && !c->paused && !c->throttled_by)
        conn_on_read(c);
}

static void
conn_on_timer(struct timer_entry *entry, uint64_t now_ms)
{
    struct conn *c = (struct conn *)((char *)entry - offsetof(struct conn, timer));
    struct broker *b = c->broker;
    if (c->state != CONN_ACTIVE) {
        if (c->state < CONN_AWAIT_CONNECT) {
            conn_setup_timeout(c);
            return;
        }
        log_info("%s: not connected within %llu ms, closing", c->peer,
                 (unsigned long long)b->cfg->connect_timeout_ms);
        b->metrics.connect_timeouts++;
        conn_close(c, CLOSE_CONNECT_TIMEOUT);
        return;
    }
    /* Keepalive: the deadline moves with every read, so check before acting. */
    uint64_t limit = (uint64_t)c->keepalive * 1500u;
    if (c->rate_paused)
        c->last_rx_ms = now_ms; /* we stopped reading it (publish rate): not its silence */
    if (now_ms - c->last_rx_ms >= limit) {
        log_info("%s (%s): keepalive %us expired, closing", c->peer, c->session->client_id,
                 (unsigned)c->keepalive);
        b->metrics.keepalive_timeouts++;
        conn_close(c, CLOSE_KEEPALIVE_TIMEOUT);
        return;
    }
    timer_wheel_schedule(b->wheel, entry, c->last_rx_ms + limit);
}
