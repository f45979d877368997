/* Unit tests for broker/proxy_proto.c: version 1 lines and version 2 blocks
 * parse to the right address, port and length; every strict prefix of a
 * valid header asks for more; malformed headers, foreign protocols (MQTT,
 * TLS) and versions the listener does not accept are refused, as early as
 * the bytes allow. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "broker/proxy_proto.h"

static const uint8_t SIG[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
                                0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};

static enum rmq_status
parse_text(const char *text, unsigned accept, struct proxy_proto_header *h)
{
    return proxy_proto_parse((const uint8_t *)text, strlen(text), accept, h);
}

/* Every strict prefix of buf[0..len) is a valid incomplete header. */
static void
assert_prefixes_need_more(const uint8_t *buf, size_t len)
{
    struct proxy_proto_header h;
    for (size_t i = 0; i < len; i++)
        assert_int_equal(proxy_proto_parse(buf, i, PROXY_PROTO_ACCEPT_ANY, &h), RMQ_AGAIN);
}

static void
assert_source(const struct proxy_proto_header *h, const char *want)
{
    char text[64];
    assert_true(proxy_proto_format_source(h, text, sizeof(text)));
    assert_string_equal(text, want);
}

/* A v2 header: preamble with ver_cmd and fam, then body[0..blen). */
static size_t
v2(uint8_t *out, uint8_t ver_cmd, uint8_t fam, const uint8_t *body, size_t blen)
{
    memcpy(out, SIG, 12);
    out[12] = ver_cmd;
    out[13] = fam;
    out[14] = (uint8_t)(blen >> 8);
    out[15] = (uint8_t)blen;
    if (blen)
        memcpy(out + 16, body, blen);
    return 16 + blen;
}

/* ---- version 1 ---- */

static void
test_v1_tcp4(void **state)
{
    (void)state;
    const char *hdr = "PROXY TCP4 192.168.0.1 192.168.0.11 56324 1883\r\n";
    struct proxy_proto_header h;
    assert_int_equal(parse_text(hdr, PROXY_PROTO_ACCEPT_ANY, &h), RMQ_OK);
    assert_int_equal(h.len, strlen(hdr));
    assert_int_equal(h.version, 1);
    assert_true(h.has_addr);
    assert_int_equal(h.family, AF_INET);
    assert_int_equal(h.src_port, 56324);
    assert_int_equal(h.dst_port, 1883);
    uint8_t dst[4] = {192, 168, 0, 11};
    assert_memory_equal(h.dst_addr, dst, 4);
    assert_source(&h, "192.168.0.1:56324");
    assert_prefixes_need_more((const uint8_t *)hdr, strlen(hdr));
}

static void
test_v1_tcp6_and_following_bytes_untouched(void **state)
{
    (void)state;
    const char *hdr = "PROXY TCP6 2001:db8::7 ::1 65535 0\r\n";
    static const uint8_t connect[] = {0x10, 0x0c, 0x00, 0x04, 'M', 'Q', 'T', 'T'};
    uint8_t buf[128];
    memcpy(buf, hdr, strlen(hdr));
    memcpy(buf + strlen(hdr), connect, sizeof(connect));
    struct proxy_proto_header h;
    assert_int_equal(proxy_proto_parse(buf, strlen(hdr) + sizeof(connect), PROXY_PROTO_ACCEPT_V1,
                                       &h),
                     RMQ_OK);
    assert_int_equal(h.len, strlen(hdr));
    assert_int_equal(h.family, AF_INET6);
    assert_int_equal(h.src_port, 65535);
    assert_int_equal(h.dst_port, 0);
    assert_source(&h, "[2001:db8::7]:65535");
}

static void
test_v1_unknown_keeps_socket_address(void **state)
{
    (void)state;
    struct proxy_proto_header h;
    char text[64];
    assert_int_equal(parse_text("PROXY UNKNOWN\r\n", PROXY_PROTO_ACCEPT_ANY, &h), RMQ_OK);
    assert_int_equal(h.len, 15);
    assert_false(h.has_addr);
    assert_false(proxy_proto_format_source(&h, text, sizeof(text)));
    /* Anything after UNKNOWN is ignored. */
    assert_int_equal(parse_text("PROXY UNKNOWN ffff::1 whatever 1 2\r\n", PROXY_PROTO_ACCEPT_ANY,
                                &h),
                     RMQ_OK);
    assert_false(h.has_addr);
    assert_int_equal(parse_text("PROXY UNKNOWNX\r\n", PROXY_PROTO_ACCEPT_ANY, &h), RMQ_PROTOCOL);
}

static void
test_v1_length_limit(void **state)
{
    (void)state;
    char line[200];
    struct proxy_proto_header h;
    /* Exactly 107 bytes with CRLF: accepted. */
    int n = snprintf(line, sizeof(line), "PROXY UNKNOWN %0*d\r\n", 107 - 16, 0);
    assert_int_equal(n, 107);
    assert_int_equal(parse_text(line, PROXY_PROTO_ACCEPT_ANY, &h), RMQ_OK);
    assert_int_equal(h.len, 107);
    /* 108: refused, and so is a 107-byte start without CRLF. */
    n = snprintf(line, sizeof(line), "PROXY UNKNOWN %0*d\r\n", 107 - 15, 0);
    assert_int_equal(n, 108);
    assert_int_equal(parse_text(line, PROXY_PROTO_ACCEPT_ANY, &h), RMQ_PROTOCOL);
    memset(line + 6, 'A', 150);
    assert_int_equal(proxy_proto_parse((const uint8_t *)line, 106, PROXY_PROTO_ACCEPT_ANY, &h),
                     RMQ_AGAIN);
    assert_int_equal(proxy_proto_parse((const uint8_t *)line, 107, PROXY_PROTO_ACCEPT_ANY, &h),
                     RMQ_PROTOCOL);
}

static void
test_v1_malformed(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",       /* case matters */
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",         /* LF without CR */
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rx",        /* CR without LF */
        "PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",      /* two spaces */
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",      /* trailing space */
        "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",         /* missing port */
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",     /* extra field */
        "PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",      /* leading zero */
        "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",   /* port too large */
        "PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",      /* not a number */
        "PROXY TCP4 ::1 5.6.7.8 1 2\r\n",           /* v6 address under TCP4 */
        "PROXY TCP6 1.2.3.4 ::1 1 2\r\n",           /* v4 address under TCP6 */
        "PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n",     /* not an address */
        "PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",       /* unknown protocol */
        "PROXY \r\n",                                /* nothing */
        "PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n",      /* control byte */
    };
    struct proxy_proto_header h;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (parse_text(bad[i], PROXY_PROTO_ACCEPT_ANY, &h) != RMQ_PROTOCOL)
            fail_msg("accepted or waited on: %s", bad[i]);
    }
}

/* ---- version 2 ---- */

static void
test_v2_tcp4_with_tlvs(void **state)
{
    (void)state;
    uint8_t body[12 + 7] = {127, 0, 0, 1, 10, 0, 0, 2, 0xc3, 0x50, 0x07, 0x5b,
                            /* a TLV (type 0x04 NOOP, length 4) */
                            0x04, 0x00, 0x04, 'a', 'b', 'c', 'd'};
    uint8_t buf[64];
    size_t n = v2(buf, 0x21, 0x11, body, sizeof(body));
    buf[n] = 0x10; /* the CONNECT that follows */
    struct proxy_proto_header h;
    assert_int_equal(proxy_proto_parse(buf, n + 1, PROXY_PROTO_ACCEPT_V2, &h), RMQ_OK);
    assert_int_equal(h.len, n);
    assert_int_equal(h.version, 2);
    assert_true(h.has_addr);
    assert_int_equal(h.src_port, 50000);
    assert_int_equal(h.dst_port, 1883);
    assert_source(&h, "127.0.0.1:50000");
    assert_prefixes_need_more(buf, n);
}

static void
test_v2_tcp6(void **state)
{
    (void)state;
    uint8_t body[36] = {0};
    inet_pton(AF_INET6, "fe80::1:2", body);
    inet_pton(AF_INET6, "::1", body + 16);
    body[32] = 0x12;
    body[33] = 0x34;
    body[35] = 1;
    uint8_t buf[64];
    size_t n = v2(buf, 0x21, 0x21, body, sizeof(body));
    struct proxy_proto_header h;
    assert_int_equal(proxy_proto_parse(buf, n, PROXY_PROTO_ACCEPT_ANY, &h), RMQ_OK);
    assert_int_equal(h.family, AF_INET6);
    assert_int_equal(h.dst_port, 1);
    assert_source(&h, "[fe80::1:2]:4660");
}

static void
test_v2_local_unspec_unix_udp_keep_socket_address(void **state)
{
    (void)state;
    uint8_t body[216] = {1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2};
    uint8_t buf[300];
    struct proxy_proto_header h;
    /* LOCAL ignores its address block, even an undefined family byte. */
    size_t n = v2(buf, 0x20, 0xff, NULL, 0);
    assert_int_equal(proxy_proto_parse(buf, n, PROXY_PROTO_ACCEPT_ANY, &h), RMQ_OK);
    assert_int_equal(h.len, 16);
    assert_false(h.has_addr);
    n = v2(buf, 0x20, 0x11, body, 12);
    assert_int_equal(proxy_proto_parse(buf, n, PROXY_PROTO_ACCEPT_ANY, &h), RMQ_OK);
    assert_false(h.has_addr);
    static const uint8_t fams[] = {0x00, 0x12, 0x22, 0x31, 0x32};
    for (size_t i = 0; i < sizeof(fams); i++) {
        n = v2(buf, 0x21, fams[i], body, sizeof(body));
        assert_int_equal(proxy_proto_parse(buf, n, PROXY_PROTO_ACCEPT_ANY, &h), RMQ_OK);
        assert_int_equal(h.len, n);
        assert_false(h.has_addr);
    }
}

static void
test_v2_malformed(void **state)
{
    (void)state;
    uint8_t body[36] = {0};
    uint8_t buf[128];
    struct proxy_proto_header h;
    size_t n = v2(buf, 0x11, 0x11, body, 12); /* version 1 nibble */
    assert_int_equal(proxy_proto_parse(buf, n, PROXY_PROTO_ACCEPT_ANY, &h), RMQ_PROTOCOL);
    n = v2(buf, 0x22, 0x11, body, 12); /* command 2 */
    assert_int_equal(proxy_proto_parse(buf, n, PROXY_PROTO_ACCEPT_ANY, &h), RMQ_PROTOCOL);
    n = v2(buf, 0x21, 0x13, body, 12); /* undefined transport */
    assert_int_equal(proxy_proto_parse(buf, n, PROXY_PROTO_ACCEPT_ANY, &h), RMQ_PROTOCOL);
    /* Refused on the family byte, before the rest has arrived. */
    assert_int_equal(proxy_proto_parse(buf, 14, PROXY_PROTO_ACCEPT_ANY, &h), RMQ_PROTOCOL);
    n = v2(buf, 0x21, 0x21, body, 12); /* block too short for IPv6 */
    assert_int_equal(proxy_proto_parse(buf, 16, PROXY_PROTO_ACCEPT_ANY, &h), RMQ_PROTOCOL);
    assert_int_equal(proxy_proto_parse(buf, n, PROXY_PROTO_ACCEPT_ANY, &h), RMQ_PROTOCOL);
    /* Signature wrong in its last byte. */
    n = v2(buf, 0x21, 0x11, body, 12);
    buf[11] = 0x0b;
    assert_int_equal(proxy_proto_parse(buf, n, PROXY_PROTO_ACCEPT_ANY, &h), RMQ_PROTOCOL);
    assert_int_equal(proxy_proto_parse(buf, 11, PROXY_PROTO_ACCEPT_ANY, &h), RMQ_AGAIN);
}

static void
test_v2_length_limit(void **state)
{
    (void)state;
    uint8_t buf[16];
    struct proxy_proto_header h;
    v2(buf, 0x21, 0x11, NULL, 0);
    size_t body = PROXY_PROTO_MAX - 16;
    buf[14] = (uint8_t)(body >> 8);
    buf[15] = (uint8_t)body;
    assert_int_equal(proxy_proto_parse(buf, 16, PROXY_PROTO_ACCEPT_ANY, &h), RMQ_AGAIN);
    body++;
    buf[14] = (uint8_t)(body >> 8);
    buf[15] = (uint8_t)body;
    assert_int_equal(proxy_proto_parse(buf, 16, PROXY_PROTO_ACCEPT_ANY, &h), RMQ_LIMIT);
    buf[14] = buf[15] = 0xff;
    assert_int_equal(proxy_proto_parse(buf, 16, PROXY_PROTO_ACCEPT_ANY, &h), RMQ_LIMIT);
}

/* ---- both ---- */

static void
test_versions_not_accepted_are_refused(void **state)
{
    (void)state;
    struct proxy_proto_header h;
    uint8_t buf[32];
    size_t n = v2(buf, 0x20, 0x00, NULL, 0);
    assert_int_equal(parse_text("PROXY UNKNOWN\r\n", PROXY_PROTO_ACCEPT_V2, &h), RMQ_PROTOCOL);
    assert_int_equal(proxy_proto_parse(buf, n, PROXY_PROTO_ACCEPT_V1, &h), RMQ_PROTOCOL);
    assert_int_equal(proxy_proto_parse(buf, 1, PROXY_PROTO_ACCEPT_V1, &h), RMQ_PROTOCOL);
    assert_int_equal(proxy_proto_parse(buf, n, PROXY_PROTO_ACCEPT_V2, &h), RMQ_OK);
}

static void
test_foreign_protocols_refused_on_first_byte(void **state)
{
    (void)state;
    struct proxy_proto_header h;
    static const uint8_t connect[] = {0x10, 0x0c, 0x00, 0x04, 'M', 'Q', 'T', 'T'};
    static const uint8_t hello[] = {0x16, 0x03, 0x01, 0x02, 0x00};
    assert_int_equal(proxy_proto_parse(connect, 1, PROXY_PROTO_ACCEPT_ANY, &h), RMQ_PROTOCOL);
    assert_int_equal(proxy_proto_parse(connect, sizeof(connect), PROXY_PROTO_ACCEPT_ANY, &h),
                     RMQ_PROTOCOL);
    assert_int_equal(proxy_proto_parse(hello, sizeof(hello), PROXY_PROTO_ACCEPT_ANY, &h),
                     RMQ_PROTOCOL);
    assert_int_equal(parse_text("GET / HTTP/1.0\r\n", PROXY_PROTO_ACCEPT_ANY, &h), RMQ_PROTOCOL);
    assert_int_equal(parse_text("PROXX", PROXY_PROTO_ACCEPT_ANY, &h), RMQ_PROTOCOL);
    assert_int_equal(proxy_proto_parse(hello, 0, PROXY_PROTO_ACCEPT_ANY, &h), RMQ_AGAIN);
}

static void
test_format_needs_room(void **state)
{
    (void)state;
    struct proxy_proto_header h;
    char text[64];
    assert_int_equal(parse_text("PROXY TCP4 10.1.2.3 10.0.0.1 65535 1883\r\n",
                                PROXY_PROTO_ACCEPT_ANY, &h),
                     RMQ_OK);
    assert_false(proxy_proto_format_source(&h, text, 10));
    assert_true(proxy_proto_format_source(&h, text, strlen("10.1.2.3:65535") + 1));
    assert_string_equal(text, "10.1.2.3:65535");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_v1_tcp4),
        cmocka_unit_test(test_v1_tcp6_and_following_bytes_untouched),
        cmocka_unit_test(test_v1_unknown_keeps_socket_address),
        cmocka_unit_test(test_v1_length_limit),
        cmocka_unit_test(test_v1_malformed),
        cmocka_unit_test(test_v2_tcp4_with_tlvs),
        cmocka_unit_test(test_v2_tcp6),
        cmocka_unit_test(test_v2_local_unspec_unix_udp_keep_socket_address),
        cmocka_unit_test(test_v2_malformed),
        cmocka_unit_test(test_v2_length_limit),
        cmocka_unit_test(test_versions_not_accepted_are_refused),
        cmocka_unit_test(test_foreign_protocols_refused_on_first_byte),
        cmocka_unit_test(test_format_needs_room),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
