/* PROXY protocol v1/v2 header parser; see proxy_proto.h.
 *
 * Version 1 is one ASCII line, "PROXY TCP4|TCP6|UNKNOWN ... \r\n", at most
 * 107 bytes. Version 2 starts with a fixed 12-byte signature, then a
 * version/command byte, a family/transport byte and a 16-bit length of the
 * rest (addresses, then TLVs, which are skipped).
 *
 * Rejection comes as early as the bytes allow: a client that speaks MQTT or
 * TLS straight to a PROXY listener is refused on its first byte, not after
 * the connect timeout. Pure and stateless; any thread. */
#include "broker/proxy_proto.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

static const char V1_PREFIX[] = "PROXY ";
#define V1_PREFIX_LEN (sizeof(V1_PREFIX) - 1)

static const uint8_t V2_SIGNATURE[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
                                         0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};
#define V2_PREAMBLE 16
#define V2_CMD_LOCAL 0x0
#define V2_CMD_PROXY 0x1

/* True if the first min(len, n) bytes of buf equal those of sig. */
static bool
prefix_matches(const uint8_t *buf, size_t len, const void *sig, size_t n)
{
    return memcmp(buf, sig, len < n ? len : n) == 0;
}

/* ---- version 1 ---- */

/* A cursor over the space-separated fields of a v1 line. */
struct fields {
    const uint8_t *p;
    size_t n, pos;
};

/* The next field: non-empty, followed by exactly one space, or by the end
 * of the line when `last`. */
static bool
next_field(struct fields *f, const uint8_t **start, size_t *flen, bool last)
{
    size_t s = f->pos;
    while (f->pos < f->n && f->p[f->pos] != ' ')
        f->pos++;
    *start = f->p + s;
    *flen = f->pos - s;
    if (*flen == 0)
        return false;
    if (last)
        return f->pos == f->n;
    if (f->pos == f->n)
        return false;
    f->pos++;
    return true;
}

static bool
field_is(const uint8_t *s, size_t n, const char *word)
{
    return n == strlen(word) && memcmp(s, word, n) == 0;
}

static bool
parse_v1_addr(const uint8_t *s, size_t n, int family, uint8_t *out)
{
    char text[INET6_ADDRSTRLEN];
    if (n >= sizeof(text))
        return false;
    memcpy(text, s, n);
    text[n] = '\0';
    return inet_pton(family, text, out) == 1;
}

/* Decimal 0..65535 without leading zeros. */
static bool
parse_v1_port(const uint8_t *s, size_t n, uint16_t *out)
{
    if (n == 0 || n > 5 || (n > 1 && s[0] == '0'))
        return false;
    uint32_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (uint32_t)(s[i] - '0');
    }
    if (v > 65535)
        return false;
    *out = (uint16_t)v;
    return true;
}

/* The line after "PROXY " without its CRLF. */
static enum rmq_status
parse_v1_line(const uint8_t *line, size_t n, struct proxy_proto_header *out)
{
    struct fields f = {.p = line, .n = n};
    const uint8_t *s;
    size_t len;

    /* "UNKNOWN" may be followed by anything, which is ignored. */
    if (n >= 7 && memcmp(line, "UNKNOWN", 7) == 0 && (n == 7 || line[7] == ' '))
        return RMQ_OK;
    if (!next_field(&f, &s, &len, false))
        return RMQ_PROTOCOL;
    if (field_is(s, len, "TCP4"))
        out->family = AF_INET;
    else if (field_is(s, len, "TCP6"))
        out->family = AF_INET6;
    else
        return RMQ_PROTOCOL;
    if (!next_field(&f, &s, &len, false) || !parse_v1_addr(s, len, out->family, out->src_addr))
        return RMQ_PROTOCOL;
    if (!next_field(&f, &s, &len, false) || !parse_v1_addr(s, len, out->family, out->dst_addr))
        return RMQ_PROTOCOL;
    if (!next_field(&f, &s, &len, false) || !parse_v1_port(s, len, &out->src_port))
        return RMQ_PROTOCOL;
    if (!next_field(&f, &s, &len, true) || !parse_v1_port(s, len, &out->dst_port))
        return RMQ_PROTOCOL;
    out->has_addr = true;
    return RMQ_OK;
}

static enum rmq_status
parse_v1(const uint8_t *buf, size_t len, struct proxy_proto_header *out)
{
    if (!prefix_matches(buf, len, V1_PREFIX, V1_PREFIX_LEN))
        return RMQ_PROTOCOL;
    size_t scan = len < PROXY_PROTO_V1_MAX ? len : PROXY_PROTO_V1_MAX;
    for (size_t i = 0; i < scan; i++) {
        uint8_t ch = buf[i];
        if (ch == '\r') {
            if (i + 2 > PROXY_PROTO_V1_MAX)
                return RMQ_PROTOCOL;
            if (i + 1 == len)
                return RMQ_AGAIN;
            if (buf[i + 1] != '\n' || i < V1_PREFIX_LEN)
                return RMQ_PROTOCOL;
            out->version = 1;
            out->len = i + 2;
            return parse_v1_line(buf + V1_PREFIX_LEN, i - V1_PREFIX_LEN, out);
        }
        if (ch < 0x20 || ch > 0x7e)
            return RMQ_PROTOCOL;
    }
    return len >= PROXY_PROTO_V1_MAX ? RMQ_PROTOCOL : RMQ_AGAIN;
}

/* ---- version 2 ---- */

/* Bytes of the address block for a family/transport byte, or -1 if the
 * byte is not one the specification defines. */
static int
v2_addr_size(uint8_t fam)
{
    switch (fam) {
    case 0x00: /* UNSPEC */
        return 0;
    case 0x11: /* TCP over IPv4 */
    case 0x12: /* UDP over IPv4 */
        return 12;
    case 0x21: /* TCP over IPv6 */
    case 0x22: /* UDP over IPv6 */
        return 36;
    case 0x31: /* UNIX stream */
    case 0x32: /* UNIX datagram */
        return 216;
    default:
        return -1;
    }
}

static void
v2_take_addresses(const uint8_t *a, uint8_t fam, struct proxy_proto_header *out)
{
    size_t alen = fam == 0x11 ? 4 : 16;
    out->family = fam == 0x11 ? AF_INET : AF_INET6;
    memcpy(out->src_addr, a, alen);
    memcpy(out->dst_addr, a + alen, alen);
    out->src_port = (uint16_t)(a[2 * alen] << 8 | a[2 * alen + 1]);
    out->dst_port = (uint16_t)(a[2 * alen + 2] << 8 | a[2 * alen + 3]);
    out->has_addr = true;
}

static enum rmq_status
parse_v2(const uint8_t *buf, size_t len, struct proxy_proto_header *out)
{
    if (!prefix_matches(buf, len, V2_SIGNATURE, sizeof(V2_SIGNATURE)))
        return RMQ_PROTOCOL;
    if (len <= 12)
        return RMQ_AGAIN;
    uint8_t version = buf[12] >> 4, cmd = buf[12] & 0x0f;
    if (version != 2 || (cmd != V2_CMD_LOCAL && cmd != V2_CMD_PROXY))
        return RMQ_PROTOCOL;
    /* LOCAL (a health check by the proxy itself) keeps the real endpoints,
     * whatever its address block says. */
    int asize = cmd == V2_CMD_PROXY && len > 13 ? v2_addr_size(buf[13]) : 0;
    if (asize < 0)
        return RMQ_PROTOCOL;
    if (len < V2_PREAMBLE)
        return RMQ_AGAIN;
    size_t body = (size_t)buf[14] << 8 | buf[15];
    if (V2_PREAMBLE + body > PROXY_PROTO_MAX)
        return RMQ_LIMIT;
    if (body < (size_t)asize)
        return RMQ_PROTOCOL;
    if (len < V2_PREAMBLE + body)
        return RMQ_AGAIN;
    out->version = 2;
    out->len = V2_PREAMBLE + body;
    /* Datagram, UNIX and unspecified families say nothing useful about a
     * TCP client: keep the socket's address. */
    if (cmd == V2_CMD_PROXY && (buf[13] == 0x11 || buf[13] == 0x21))
        v2_take_addresses(buf + V2_PREAMBLE, buf[13], out);
    return RMQ_OK;
}

enum rmq_status
proxy_proto_parse(const uint8_t *buf, size_t len, unsigned accept, struct proxy_proto_header *out)
{
    *out = (struct proxy_proto_header){0};
    if (len == 0)
        return RMQ_AGAIN;
    if ((accept & PROXY_PROTO_ACCEPT_V1) && buf[0] == (uint8_t)V1_PREFIX[0])
        return parse_v1(buf, len, out);
    if ((accept & PROXY_PROTO_ACCEPT_V2) && buf[0] == V2_SIGNATURE[0])
        return parse_v2(buf, len, out);
    return RMQ_PROTOCOL;
}

bool
proxy_proto_format_source(const struct proxy_proto_header *h, char *text, size_t size)
{
    char addr[INET6_ADDRSTRLEN];
    if (!h->has_addr || !inet_ntop(h->family, h->src_addr, addr, sizeof(addr)))
        return false;
    int n = h->family == AF_INET6 ? snprintf(text, size, "[%s]:%u", addr, (unsigned)h->src_port)
                                  : snprintf(text, size, "%s:%u", addr, (unsigned)h->src_port);
    return n > 0 && (size_t)n < size;
}
