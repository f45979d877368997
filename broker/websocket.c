/* WebSocket handshake parsing and frame decoding; see websocket.h.
 *
 * The request parser checks what RFC 6455 section 4.2.1 asks of a server
 * (GET, HTTP/1.1, Upgrade: websocket, Connection: upgrade, a 16-byte key,
 * version 13) plus the MQTT binding's subprotocol: a client that offers
 * subprotocols must offer "mqtt" (or the older "mqttv3.1"); one that offers
 * none is served without. Header names go through a table.
 *
 * The decoder keeps a partial header (at most 14 bytes) and a control
 * frame's payload (at most 125) between calls, never the data itself: data
 * payload is unmasked and moved forward in the caller's buffer. Pure and
 * allocation-free; any thread. */
#include "broker/websocket.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

static const char WS_GUID[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/* ---- handshake ---- */

struct request_state {
    bool upgrade, connection, version_seen, version_ok, protocol_seen;
    const char *protocol;
    char key[WS_KEY_LEN + 1];
};

static bool
equal_nocase(const char *a, size_t alen, const char *b)
{
    size_t blen = strlen(b);
    if (alen != blen)
        return false;
    for (size_t i = 0; i < alen; i++)
        if (tolower((unsigned char)a[i]) != tolower((unsigned char)b[i]))
            return false;
    return true;
}

/* True if the comma-separated list v[0..n) holds token (any case). */
static bool
list_has(const char *v, size_t n, const char *token)
{
    size_t i = 0;
    while (i < n) {
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t s = i;
        while (i < n && v[i] != ',')
            i++;
        size_t e = i;
        while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
            e--;
        if (e > s && equal_nocase(v + s, e - s, token))
            return true;
    }
    return false;
}

static bool
base64_char(char c)
{
    return isalnum((unsigned char)c) || c == '+' || c == '/';
}

static void
h_upgrade(struct request_state *r, const char *v, size_t n)
{
    r->upgrade = r->upgrade || list_has(v, n, "websocket");
}

static void
h_connection(struct request_state *r, const char *v, size_t n)
{
    r->connection = r->connection || list_has(v, n, "upgrade");
}

static void
h_version(struct request_state *r, const char *v, size_t n)
{
    r->version_seen = true;
    r->version_ok = n == 2 && memcmp(v, "13", 2) == 0;
}

static void
h_protocol(struct request_state *r, const char *v, size_t n)
{
    r->protocol_seen = true;
    if (list_has(v, n, "mqtt"))
        r->protocol = "mqtt";
    else if (!r->protocol && list_has(v, n, "mqttv3.1"))
        r->protocol = "mqttv3.1";
}

/* 16 bytes in base64: 22 characters and "==". Anything else is no key. */
static void
h_key(struct request_state *r, const char *v, size_t n)
{
    r->key[0] = '\0';
    if (n != WS_KEY_LEN || v[22] != '=' || v[23] != '=')
        return;
    for (size_t i = 0; i < 22; i++)
        if (!base64_char(v[i]))
            return;
    memcpy(r->key, v, n);
    r->key[n] = '\0';
}

static const struct {
    const char *name;
    void (*fn)(struct request_state *r, const char *v, size_t n);
} headers[] = {
    {"upgrade", h_upgrade},
    {"connection", h_connection},
    {"sec-websocket-version", h_version},
    {"sec-websocket-protocol", h_protocol},
    {"sec-websocket-key", h_key},
};

/* One "Name: value" line (without CRLF); false if malformed. */
static bool
header_line(struct request_state *r, const char *line, size_t n)
{
    const char *colon = memchr(line, ':', n);
    if (!colon || colon == line || line[0] == ' ' || line[0] == '\t')
        return false; /* no name, or obsolete line folding */
    size_t nlen = (size_t)(colon - line);
    for (size_t i = 0; i < nlen; i++)
        if (line[i] <= ' ' || line[i] >= 0x7f)
            return false;
    const char *v = colon + 1, *end = line + n;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    for (size_t i = 0; i < sizeof(headers) / sizeof(headers[0]); i++)
        if (equal_nocase(line, nlen, headers[i].name))
            headers[i].fn(r, v, (size_t)(end - v));
    return true;
}

/* "GET TARGET HTTP/1.1": 0 if fine, else the HTTP status to answer. */
static int
request_line(const char *line, size_t n, const char *path, const char **why)
{
    const char *sp1 = memchr(line, ' ', n);
    const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(line + n - sp1 - 1)) : NULL;
    if (!sp1 || !sp2) {
        *why = "malformed request line";
        return 400;
    }
    size_t vlen = (size_t)(line + n - sp2 - 1);
    if (vlen != 8 || memcmp(sp2 + 1, "HTTP/1.", 7) != 0 || sp2[8] < '1' || sp2[8] > '9') {
        *why = "not HTTP/1.1";
        return 400;
    }
    if (sp1 - line != 3 || memcmp(line, "GET", 3) != 0) {
        *why = "method is not GET";
        return 405;
    }
    const char *target = sp1 + 1;
    size_t tlen = (size_t)(sp2 - target), plen = strlen(path);
    if (tlen < plen || memcmp(target, path, plen) != 0 || (tlen > plen && target[plen] != '?')) {
        *why = "no WebSocket endpoint at that path";
        return 404;
    }
    return 0;
}

/* The checks after every header was read. */
static int
request_complete(const struct request_state *r, const char **why)
{
    if (!r->upgrade || !r->connection) {
        *why = "not a WebSocket upgrade (Upgrade: websocket, Connection: upgrade)";
        return 400;
    }
    if (!r->version_ok) {
        *why = r->version_seen ? "WebSocket version is not 13" : "no Sec-WebSocket-Version";
        return r->version_seen ? 426 : 400;
    }
    if (!r->key[0]) {
        *why = "missing or malformed Sec-WebSocket-Key";
        return 400;
    }
    if (r->protocol_seen && !r->protocol) {
        *why = "subprotocols offered, but not mqtt";
        return 400;
    }
    return 0;
}

enum rmq_status
ws_request_parse(const uint8_t *buf, size_t len, const char *path, struct ws_request *out,
                 int *status, const char **why)
{
    const char *text = (const char *)buf;
    size_t scan = len < WS_REQUEST_MAX ? len : WS_REQUEST_MAX;
    const char *end = scan >= 4 ? memmem(text, scan, "\r\n\r\n", 4) : NULL;
    *out = (struct ws_request){0};
    *status = 0;
    *why = NULL;
    if (!end) {
        if (len < WS_REQUEST_MAX)
            return RMQ_AGAIN;
        *status = 431;
        *why = "request headers too large";
        return RMQ_LIMIT;
    }
    struct request_state r = {0};
    const char *line = text, *stop = end + 2;
    const char *eol = memmem(line, (size_t)(stop - line), "\r\n", 2);
    if ((*status = request_line(line, (size_t)(eol - line), path, why)) != 0)
        return RMQ_PROTOCOL;
    for (line = eol + 2; line < end + 2; line = eol + 2) {
        eol = memmem(line, (size_t)(stop - line), "\r\n", 2);
        if (!header_line(&r, line, (size_t)(eol - line))) {
            *status = 400;
            *why = "malformed header line";
            return RMQ_PROTOCOL;
        }
    }
    if ((*status = request_complete(&r, why)) != 0)
        return RMQ_PROTOCOL;
    out->len = (size_t)(end - text) + 4;
    memcpy(out->key, r.key, sizeof(out->key));
    out->protocol = r.protocol;
    return RMQ_OK;
}

size_t
ws_response_accept(char *out, size_t size, const char *accept, const char *protocol)
{
    int n = snprintf(out, size,
                     "HTTP/1.1 101 Switching Protocols\r\n"
                     "Upgrade: websocket\r\n"
                     "Connection: Upgrade\r\n"
                     "Sec-WebSocket-Accept: %s\r\n"
                     "%s%s%s"
                     "\r\n",
                     accept, protocol ? "Sec-WebSocket-Protocol: " : "", protocol ? protocol : "",
                     protocol ? "\r\n" : "");
    return n > 0 && (size_t)n < size ? (size_t)n : 0;
}

size_t
ws_response_error(char *out, size_t size, int status)
{
    const char *reason = status == 404   ? "Not Found"
                         : status == 405 ? "Method Not Allowed"
                         : status == 426 ? "Upgrade Required"
                         : status == 431 ? "Request Header Fields Too Large"
                                         : "Bad Request";
    int n = snprintf(out, size,
                     "HTTP/1.1 %d %s\r\n"
                     "%s"
                     "Content-Length: 0\r\n"
                     "Connection: close\r\n"
                     "\r\n",
                     status, reason, status == 426 ? "Sec-WebSocket-Version: 13\r\n" : "");
    return n > 0 && (size_t)n < size ? (size_t)n : 0;
}

size_t
ws_accept_input(const char *key, char *out, size_t size)
{
    int n = snprintf(out, size, "%s%s", key, WS_GUID);
    return n > 0 && (size_t)n < size ? (size_t)n : 0;
}

/* ---- frames ---- */

size_t
ws_frame_header_size(uint64_t len)
{
    return len < 126 ? 2 : len <= 0xffff ? 4 : 10;
}

size_t
ws_frame_header(uint8_t *out, uint8_t opcode, uint64_t len)
{
    out[0] = (uint8_t)(0x80 | (opcode & 0x0f));
    if (len < 126) {
        out[1] = (uint8_t)len;
        return 2;
    }
    if (len <= 0xffff) {
        out[1] = 126;
        out[2] = (uint8_t)(len >> 8);
        out[3] = (uint8_t)len;
        return 4;
    }
    out[1] = 127;
    for (int i = 0; i < 8; i++)
        out[2 + i] = (uint8_t)(len >> (56 - 8 * i));
    return 10;
}

static enum rmq_status
fail(struct ws_decoder *d, uint16_t code, const char *why)
{
    d->error_code = code;
    d->error = why;
    return RMQ_PROTOCOL;
}

/* Header bytes needed, given those already in d->hdr. */
static size_t
header_need(const struct ws_decoder *d)
{
    if (d->hdr_len < 2)
        return 2;
    uint8_t len7 = d->hdr[1] & 0x7f;
    return 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + 4;
}

/* What the first two bytes alone can tell: checked as soon as they are
 * in, so a bad frame is refused before the rest of its header. */
static enum rmq_status
check_first_bytes(struct ws_decoder *d)
{
    const uint8_t *h = d->hdr;
    uint8_t opcode = h[0] & 0x0f;
    if (h[0] & 0x70)
        return fail(d, WS_CLOSE_PROTOCOL, "reserved bits set");
    if (!(h[1] & 0x80))
        return fail(d, WS_CLOSE_PROTOCOL, "client frame not masked");
    if (opcode == WS_OP_TEXT)
        return fail(d, WS_CLOSE_UNSUPPORTED, "text frame (MQTT needs binary frames)");
    if ((opcode > WS_OP_BINARY && opcode < WS_OP_CLOSE) || opcode > WS_OP_PONG)
        return fail(d, WS_CLOSE_PROTOCOL, "reserved opcode");
    if (opcode >= WS_OP_CLOSE && (!(h[0] & 0x80) || (h[1] & 0x7f) > 125))
        return fail(d, WS_CLOSE_PROTOCOL, "fragmented or long control frame");
    return RMQ_OK;
}

/* Checks the complete header in d->hdr and starts its frame. */
static enum rmq_status
start_frame(struct ws_decoder *d)
{
    const uint8_t *h = d->hdr;
    uint8_t opcode = h[0] & 0x0f, len7 = h[1] & 0x7f;
    uint64_t len = len7;
    size_t at = 2;
    if (len7 >= 126) {
        size_t n = len7 == 126 ? 2 : 8;
        len = 0;
        for (size_t i = 0; i < n; i++)
            len = len << 8 | h[at + i];
        at += n;
        if ((len7 == 126 && len < 126) || (len7 == 127 && len <= 0xffff) || (len >> 63))
            return fail(d, WS_CLOSE_PROTOCOL, "frame length not minimally encoded");
    }
    bool fin = h[0] & 0x80;
    if (opcode == WS_OP_BINARY) {
        if (d->in_message)
            return fail(d, WS_CLOSE_PROTOCOL, "new message inside a fragmented one");
        d->in_message = !fin;
    } else if (opcode == WS_OP_CONTINUATION) {
        if (!d->in_message)
            return fail(d, WS_CLOSE_PROTOCOL, "continuation without a message");
        d->in_message = !fin;
    } /* control frames were checked with the first two bytes */
    memcpy(d->mask, h + at, 4);
    d->mask_pos = 0;
    d->opcode = opcode;
    d->fin = fin;
    d->left = len;
    d->ctl_len = 0;
    d->in_frame = true;
    d->hdr_len = 0;
    return RMQ_OK;
}

/* A control frame's payload is all in d->ctl. */
static void
end_control(struct ws_decoder *d)
{
    if (d->opcode == WS_OP_PING) {
        memcpy(d->ping, d->ctl, d->ctl_len);
        d->ping_len = d->ctl_len;
        d->pong_due = true;
    } else if (d->opcode == WS_OP_CLOSE) {
        d->closed = true;
        d->close_code = d->ctl_len >= 2 ? (uint16_t)(d->ctl[0] << 8 | d->ctl[1]) : 0;
    }
}

enum rmq_status
ws_decode(struct ws_decoder *d, uint8_t *buf, size_t len, size_t *out)
{
    size_t in = 0, o = 0;
    *out = 0;
    while (in < len && !d->closed) {
        if (!d->in_frame) {
            enum rmq_status st = RMQ_OK;
            while (in < len && d->hdr_len < header_need(d) && st == RMQ_OK) {
                d->hdr[d->hdr_len++] = buf[in++];
                if (d->hdr_len == 2)
                    st = check_first_bytes(d);
            }
            if (st == RMQ_OK && d->hdr_len < header_need(d))
                break;
            if (st == RMQ_OK)
                st = start_frame(d);
            if (st != RMQ_OK) {
                *out = o;
                return st;
            }
        }
        size_t n = len - in < d->left ? len - in : (size_t)d->left;
        bool control = d->opcode >= WS_OP_CLOSE;
        uint8_t *dst = control ? d->ctl + d->ctl_len : buf + o;
        for (size_t i = 0; i < n; i++)
            dst[i] = buf[in + i] ^ d->mask[(d->mask_pos + i) & 3];
        d->mask_pos = (uint8_t)((d->mask_pos + n) & 3);
        in += n;
        d->left -= n;
        if (control)
            d->ctl_len = (uint8_t)(d->ctl_len + n);
        else
            o += n;
        if (d->left == 0) {
            d->in_frame = false;
            if (control)
                end_control(d);
        }
    }
    *out = o;
    return RMQ_OK;
}
