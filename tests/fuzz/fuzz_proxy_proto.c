/* libFuzzer target for broker/proxy_proto.c.
 *
 * The input is the first bytes a load balancer (or an attacker) sends to a
 * listener with the PROXY protocol on. The first input byte picks the
 * accepted versions; the rest is parsed. The process aborts when a promise
 * of proxy_proto.h breaks:
 *  - RMQ_OK: 0 < len <= size, the same header parses from exactly len bytes
 *    and with more bytes appended, every strict prefix gives RMQ_AGAIN, and
 *    an address, when there is one, survives a round trip through a v1 line
 *    and a v2 block built here from the parsed fields;
 *  - RMQ_AGAIN: every prefix gives RMQ_AGAIN too and the input is shorter
 *    than the largest header;
 *  - RMQ_PROTOCOL / RMQ_LIMIT: appending bytes never makes it valid.
 * Single-threaded; allocates one copy of the input per run and frees it. */
#include <arpa/inet.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "broker/proxy_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);               \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static bool
same_header(const struct proxy_proto_header *a, const struct proxy_proto_header *b)
{
    size_t alen = a->family == AF_INET ? 4 : 16;
    if (a->len != b->len || a->version != b->version || a->has_addr != b->has_addr)
        return false;
    if (!a->has_addr)
        return true;
    return a->family == b->family && a->src_port == b->src_port && a->dst_port == b->dst_port &&
           memcmp(a->src_addr, b->src_addr, alen) == 0 &&
           memcmp(a->dst_addr, b->dst_addr, alen) == 0;
}

static bool
same_address(const struct proxy_proto_header *a, const struct proxy_proto_header *b)
{
    struct proxy_proto_header x = *a, y = *b;
    x.len = y.len = 0;
    x.version = y.version = 0;
    return same_header(&x, &y);
}

/* Rebuilds h as a v1 line and parses it back. */
static void
roundtrip_v1(const struct proxy_proto_header *h)
{
    char src[INET6_ADDRSTRLEN], dst[INET6_ADDRSTRLEN], line[PROXY_PROTO_V1_MAX + 1];
    struct proxy_proto_header again;
    CHECK(inet_ntop(h->family, h->src_addr, src, sizeof(src)));
    CHECK(inet_ntop(h->family, h->dst_addr, dst, sizeof(dst)));
    int n = snprintf(line, sizeof(line), "PROXY %s %s %s %u %u\r\n",
                     h->family == AF_INET ? "TCP4" : "TCP6", src, dst, (unsigned)h->src_port,
                     (unsigned)h->dst_port);
    CHECK(n > 0 && (size_t)n < sizeof(line));
    CHECK(proxy_proto_parse((const uint8_t *)line, (size_t)n, PROXY_PROTO_ACCEPT_V1, &again) ==
          RMQ_OK);
    CHECK(again.len == (size_t)n && same_address(h, &again));
}

/* Rebuilds h as a v2 block and parses it back. */
static void
roundtrip_v2(const struct proxy_proto_header *h)
{
    static const uint8_t sig[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
                                    0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};
    uint8_t buf[16 + 36];
    size_t alen = h->family == AF_INET ? 4 : 16, body = 2 * alen + 4;
    struct proxy_proto_header again;
    memcpy(buf, sig, 12);
    buf[12] = 0x21;
    buf[13] = h->family == AF_INET ? 0x11 : 0x21;
    buf[14] = 0;
    buf[15] = (uint8_t)body;
    memcpy(buf + 16, h->src_addr, alen);
    memcpy(buf + 16 + alen, h->dst_addr, alen);
    buf[16 + 2 * alen] = (uint8_t)(h->src_port >> 8);
    buf[17 + 2 * alen] = (uint8_t)h->src_port;
    buf[18 + 2 * alen] = (uint8_t)(h->dst_port >> 8);
    buf[19 + 2 * alen] = (uint8_t)h->dst_port;
    CHECK(proxy_proto_parse(buf, 16 + body, PROXY_PROTO_ACCEPT_V2, &again) == RMQ_OK);
    CHECK(again.len == 16 + body && same_address(h, &again));
}

static void
check_ok(const uint8_t *in, size_t len, unsigned accept, const struct proxy_proto_header *h)
{
    struct proxy_proto_header again;
    char text[64];
    CHECK(h->len > 0 && h->len <= len);
    CHECK(h->version == 1 || h->version == 2);
    CHECK(h->version == 1 ? h->len <= PROXY_PROTO_V1_MAX : h->len <= PROXY_PROTO_MAX);
    CHECK(accept & (h->version == 1 ? PROXY_PROTO_ACCEPT_V1 : PROXY_PROTO_ACCEPT_V2));
    CHECK(proxy_proto_parse(in, h->len, accept, &again) == RMQ_OK && same_header(h, &again));
    for (size_t i = 0; i < h->len; i++)
        CHECK(proxy_proto_parse(in, i, accept, &again) == RMQ_AGAIN);
    CHECK(proxy_proto_format_source(h, text, sizeof(text)) == h->has_addr);
    if (h->has_addr) {
        CHECK(h->family == AF_INET || h->family == AF_INET6);
        roundtrip_v1(h);
        roundtrip_v2(h);
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const unsigned accepts[4] = {PROXY_PROTO_ACCEPT_ANY, PROXY_PROTO_ACCEPT_V1,
                                        PROXY_PROTO_ACCEPT_V2, PROXY_PROTO_ACCEPT_ANY};
    struct proxy_proto_header h, again;
    if (size == 0)
        return 0;
    unsigned accept = accepts[data[0] & 3];
    const uint8_t *in = data + 1;
    size_t len = size - 1;

    enum rmq_status st = proxy_proto_parse(in, len, accept, &h);
    CHECK(st == RMQ_OK || st == RMQ_AGAIN || st == RMQ_PROTOCOL || st == RMQ_LIMIT);

    /* The same bytes with a tail appended (what follows on the socket). */
    uint8_t *longer = malloc(len + 64);
    CHECK(longer != NULL);
    if (len)
        memcpy(longer, in, len);
    memset(longer + len, data[0], 64);
    enum rmq_status st2 = proxy_proto_parse(longer, len + 64, accept, &again);

    if (st == RMQ_OK) {
        check_ok(in, len, accept, &h);
        CHECK(st2 == RMQ_OK && same_header(&h, &again));
    } else if (st == RMQ_AGAIN) {
        CHECK(len < PROXY_PROTO_MAX);
        for (size_t i = 0; i < len; i++)
            CHECK(proxy_proto_parse(in, i, accept, &again) == RMQ_AGAIN);
    } else {
        CHECK(st2 == RMQ_PROTOCOL || st2 == RMQ_LIMIT);
    }
    free(longer);
    return 0;
}
