/* A connection's transport before and around MQTT: the PROXY protocol
 * header, the TLS handshake, and the WebSocket handshake and frames. The
 * set-up steps run in order, each only where the listener asks for it,
 * while the connection is in a state before CONN_AWAIT_CONNECT; all of
 * them together must finish within connect-timeout. Every refusal is
 * logged and counted (proxy_errors, tls_handshake_errors,
 * ws_handshake_errors, protocol_errors for bad frames).
 *
 * WebSocket after the handshake: input is decoded here in place (the
 * frames' payload is the MQTT byte stream); output is framed by
 * conn_reserve (connection.c), one binary frame per piece of output; pings
 * are answered, and a close frame is echoed before the connection closes.
 *
 * Loop thread only; the functions that close the connection say so. */
#include <errno.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "broker/broker_internal.h"
#include "broker/proxy_proto.h"
#include "broker/tls.h"
#include "broker/websocket.h"
#include "common/log.h"

/* ---- PROXY header ---- */

static void
proxy_refuse(struct conn *c, const char *why)
{
    log_info("%s: %s on a PROXY protocol listener, closing", c->peer, why);
    c->broker->metrics.proxy_errors++;
    conn_close(c, CLOSE_PROTOCOL_ERROR);
}

/* The header's client address replaces the socket's (the proxy's) in logs,
 * the registry and the admin API. LOCAL and UNKNOWN keep the socket's. */
static void
proxy_adopt(struct conn *c, const struct proxy_proto_header *h)
{
    char client[sizeof(c->peer)];
    if (!proxy_proto_format_source(h, client, sizeof(client))) {
        log_debug("connection %llu from %s: PROXY v%u without a client address",
                  (unsigned long long)c->channel, c->peer, (unsigned)h->version);
        return;
    }
    log_debug("connection %llu: client %s through proxy %s (PROXY v%u)",
              (unsigned long long)c->channel, client, c->peer, (unsigned)h->version);
    memcpy(c->peer, client, sizeof(c->peer));
}

/* Keeps the bytes of an incomplete header (at most PROXY_PROTO_MAX). */
static bool
proxy_keep(struct conn *c, const uint8_t *buf, size_t len)
{
    uint8_t *in = realloc(c->in, len);
    if (!in)
        return false;
    memcpy(in, buf, len);
    c->in = in;
    c->in_len = c->in_cap = (uint32_t)len;
    return true;
}

/* CONN_PROXY_HEADER: peeks at the socket, and reads exactly the bytes that
 * belong to the header; what follows is left for TLS or MQTT. */
static void
read_proxy_header(struct conn *c)
{
    struct broker *b = c->broker;
    uint8_t *buf = b->rbuf;
    size_t have = c->in_len;
    if (have)
        memcpy(buf, c->in, have);
    ssize_t n = recv(c->fd, buf + have, PROXY_PROTO_MAX - have, MSG_PEEK);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (n <= 0) {
        proxy_refuse(c, n == 0 ? "closed before a complete PROXY header" : strerror(errno));
        return;
    }
    struct proxy_proto_header h;
    size_t len = have + (size_t)n;
    enum rmq_status st = proxy_proto_parse(buf, len, c->proxy_accept, &h);
    if (st != RMQ_OK && st != RMQ_AGAIN) {
        proxy_refuse(c, st == RMQ_LIMIT ? "PROXY header too long" : "no valid PROXY header");
        return;
    }
    size_t take = st == RMQ_OK ? h.len - have : (size_t)n;
    if (recv(c->fd, buf + have, take, 0) != (ssize_t)take) {
        proxy_refuse(c, "PROXY header unreadable");
        return;
    }
    b->metrics.bytes_received += take;
    if (st == RMQ_AGAIN) {
        if (!proxy_keep(c, buf, len)) {
            log_error("%s: out of memory reading the PROXY header", c->peer);
            conn_close(c, CLOSE_SOCKET_ERROR);
        }
        return;
    }
    free(c->in);
    c->in = NULL;
    c->in_len = c->in_cap = 0;
    proxy_adopt(c, &h);
    c->state = c->tls ? CONN_TLS_HANDSHAKE : c->ws ? CONN_WS_HANDSHAKE : CONN_AWAIT_CONNECT;
    /* Bytes behind the header raise EV_READ again on their own. */
}

/* ---- TLS handshake ---- */

/* CONN_TLS_HANDSHAKE: one step; on success the client certificate's name
 * becomes the username where the listener says so. */
static void
tls_handshake_step(struct conn *c)
{
    struct broker *b = c->broker;
    char why[256];
    enum rmq_status st = tls_conn_handshake(c->tls, why, sizeof(why));
    if (st == RMQ_AGAIN) {
        conn_update_events(c);
        return;
    }
    if (st != RMQ_OK) {
        log_info("%s: TLS handshake failed: %s", c->peer, why);
        b->metrics.tls_handshake_errors++;
        conn_close(c, CLOSE_PROTOCOL_ERROR);
        return;
    }
    if (c->use_identity)
        c->username = tls_conn_peer_cn(c->tls);
    if (tls_conn_compact(c->tls))
        b->metrics.tls_compact_sessions++;
    if (tls_conn_resumed(c->tls))
        b->metrics.tls_sessions_resumed++;
    if (log_enabled(LOG_LEVEL_DEBUG)) {
        char desc[128];
        tls_conn_describe(c->tls, desc, sizeof(desc));
        log_debug("%s: TLS established (%s%s)%s%s", c->peer, desc,
                  tls_conn_resumed(c->tls) ? ", resumed" : "",
                  c->username ? ", certificate CN " : "", c->username ? c->username : "");
    }
    c->state = c->ws ? CONN_WS_HANDSHAKE : CONN_AWAIT_CONNECT;
    conn_update_events(c);
    event_active(&c->ev, EV_READ, 1); /* what follows may already be in the session */
}

/* ---- WebSocket ---- */

struct ws_conn *
ws_conn_new(const char *path)
{
    size_t n = strlen(path);
    struct ws_conn *w = calloc(1, sizeof(*w) + n + 1);
    if (w)
        memcpy(w->path, path, n + 1);
    return w;
}

/* Sec-WebSocket-Accept for key: base64(SHA-1(key + GUID)), 28 characters. */
static bool
ws_accept_value(const char *key, char *out, size_t size)
{
    char input[WS_KEY_LEN + 64];
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int dlen = 0;
    size_t n = ws_accept_input(key, input, sizeof(input));
    if (!n || size < 29 || EVP_Digest(input, n, digest, &dlen, EVP_sha1(), NULL) != 1 ||
        dlen != 20)
        return false;
    EVP_EncodeBlock((unsigned char *)out, digest, (int)dlen);
    return true;
}

/* Refuses the handshake: an HTTP error answer where there is a status. */
static void
ws_refuse(struct conn *c, int status, const char *why)
{
    char resp[256];
    size_t n = status ? ws_response_error(resp, sizeof(resp), status) : 0;
    if (n)
        conn_write_raw(c, resp, n);
    log_info("%s: WebSocket handshake refused%s: %s", c->peer, status ? "" : " (no answer)", why);
    c->broker->metrics.ws_handshake_errors++;
    conn_close(c, CLOSE_PROTOCOL_ERROR);
}

/* The switch to WebSocket: 101, then the frames that came right behind
 * the request become the first MQTT input. */
static void
ws_accept(struct conn *c, const struct ws_request *req, uint8_t *rest, size_t rest_len)
{
    char accept[32], resp[256];
    size_t n = 0;
    if (ws_accept_value(req->key, accept, sizeof(accept)))
        n = ws_response_accept(resp, sizeof(resp), accept, req->protocol);
    if (!n || conn_write_raw(c, resp, n) != RMQ_OK) {
        log_error("%s: cannot answer the WebSocket handshake", c->peer);
        conn_close(c, CLOSE_SOCKET_ERROR);
        return;
    }
    log_debug("%s: WebSocket established on %s (subprotocol %s)", c->peer, c->ws->path,
              req->protocol ? req->protocol : "none");
    c->state = CONN_AWAIT_CONNECT;
    ssize_t m = rest_len ? conn_ws_input(c, rest, rest_len) : 0;
    if (m < 0 || (m > 0 && !conn_keep_input(c, rest, (size_t)m)) || conn_ws_peer_closed(c))
        return;
    conn_update_events(c);
    event_active(&c->ev, EV_READ, 1); /* run what was kept, or buffered by TLS */
}

/* CONN_WS_HANDSHAKE: gathers the HTTP request in c->in until complete. */
static void
ws_handshake_step(struct conn *c)
{
    uint8_t *buf = c->broker->rbuf;
    size_t have = c->in_len;
    if (have)
        memcpy(buf, c->in, have);
    ssize_t n = conn_recv(c, buf + have, WS_REQUEST_MAX - have);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
        if (c->tls)
            conn_update_events(c);
        return;
    }
    if (n <= 0) {
        ws_refuse(c, 0, n == 0 ? "closed before a complete request" : strerror(errno));
        return;
    }
    size_t len = have + (size_t)n;
    struct ws_request req;
    int status;
    const char *why;
    enum rmq_status st = ws_request_parse(buf, len, c->ws->path, &req, &status, &why);
    if (st == RMQ_AGAIN) {
        uint8_t *in = realloc(c->in, len);
        if (!in) {
            conn_close(c, CLOSE_SOCKET_ERROR);
            return;
        }
        memcpy(in, buf, len);
        c->in = in;
        c->in_len = c->in_cap = (uint32_t)len;
        return;
    }
    free(c->in);
    c->in = NULL;
    c->in_len = c->in_cap = 0;
    if (st != RMQ_OK)
        ws_refuse(c, status, why);
    else
        ws_accept(c, &req, buf + req.len, len - req.len);
}

ssize_t
conn_ws_input(struct conn *c, uint8_t *buf, size_t len)
{
    struct ws_decoder *d = &c->ws->dec;
    size_t out;
    if (ws_decode(d, buf, len, &out) != RMQ_OK) {
        log_info("%s: WebSocket protocol error: %s, closing", c->peer, d->error);
        c->broker->metrics.protocol_errors++;
        conn_ws_close_frame(c, d->error_code);
        conn_close(c, CLOSE_PROTOCOL_ERROR);
        return -1;
    }
    if (d->pong_due) {
        uint8_t frame[WS_HEADER_MAX + sizeof(d->ping)];
        size_t h = ws_frame_header(frame, WS_OP_PONG, d->ping_len);
        memcpy(frame + h, d->ping, d->ping_len);
        conn_write_raw(c, frame, h + d->ping_len);
        d->pong_due = false;
    }
    return (ssize_t)out;
}

bool
conn_ws_peer_closed(struct conn *c)
{
    if (!c->ws || !c->ws->dec.closed)
        return false;
    log_debug("%s: WebSocket closed by the client (code %u)", c->peer,
              (unsigned)c->ws->dec.close_code);
    conn_close(c, CLOSE_SOCKET_ERROR); /* echoes the close frame */
    return true;
}

void
conn_ws_close_frame(struct conn *c, uint16_t code)
{
    if (c->ws->sent_close)
        return;
    uint8_t frame[4] = {0x80 | WS_OP_CLOSE, 2, (uint8_t)(code >> 8), (uint8_t)code};
    c->ws->sent_close = conn_write_raw(c, frame, sizeof(frame)) == RMQ_OK;
}

/* ---- dispatch ---- */

void
conn_setup_step(struct conn *c)
{
    switch (c->state) {
    case CONN_PROXY_HEADER:
        read_proxy_header(c);
        break;
    case CONN_TLS_HANDSHAKE:
        tls_handshake_step(c);
        break;
    case CONN_WS_HANDSHAKE:
        ws_handshake_step(c);
        break;
    default:
        break;
    }
}

void
conn_setup_timeout(struct conn *c)
{
    struct broker *b = c->broker;
    unsigned long long ms = (unsigned long long)b->cfg->connect_timeout_ms;
    if (c->state == CONN_PROXY_HEADER) {
        log_info("%s: no complete PROXY header within %llu ms, closing", c->peer, ms);
        b->metrics.proxy_errors++;
    } else if (c->state == CONN_TLS_HANDSHAKE) {
        log_info("%s: TLS handshake not finished within %llu ms, closing", c->peer, ms);
        b->metrics.tls_handshake_errors++;
    } else {
        log_info("%s: no complete WebSocket handshake within %llu ms, closing", c->peer, ms);
        b->metrics.ws_handshake_errors++;
    }
    conn_close(c, CLOSE_CONNECT_TIMEOUT);
}
