/* Unit tests for broker/websocket.c: the opening handshake (what is
 * accepted, each refusal with its HTTP status, incomplete and oversized
 * requests), the answers, frame headers, and the in-place decoder of
 * client frames fed whole, byte by byte and with every error RFC 6455 and
 * the MQTT binding name. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/websocket.h"

#define KEY "dGhlIHNhbXBsZSBub25jZQ=="

static enum rmq_status
parse(const char *req, struct ws_request *r, int *status)
{
    const char *why;
    return ws_request_parse((const uint8_t *)req, strlen(req), "/mqtt", r, status, &why);
}

static const char GOOD[] = "GET /mqtt HTTP/1.1\r\n"
                           "Host: broker.example:8080\r\n"
                           "Upgrade: websocket\r\n"
                           "Connection: Upgrade\r\n"
                           "Sec-WebSocket-Key: " KEY "\r\n"
                           "Sec-WebSocket-Protocol: mqtt\r\n"
                           "Sec-WebSocket-Version: 13\r\n"
                           "\r\n";

/* GOOD with one header line replaced (or dropped when with is ""). */
static char *
variant(const char *header, const char *with)
{
    static char out[1024];
    const char *at = strstr(GOOD, header);
    assert_non_null(at);
    const char *eol = strstr(at, "\r\n") + 2;
    snprintf(out, sizeof(out), "%.*s%s%s", (int)(at - GOOD), GOOD, with, eol);
    return out;
}

static void
test_request_accepted(void **state)
{
    (void)state;
    struct ws_request r;
    int status;
    char buf[1024];
    snprintf(buf, sizeof(buf), "%s%s", GOOD, "\x82\x80xxxx"); /* a frame right behind */
    assert_int_equal(parse(buf, &r, &status), RMQ_OK);
    assert_int_equal(r.len, strlen(GOOD));
    assert_string_equal(r.key, KEY);
    assert_string_equal(r.protocol, "mqtt");
    for (size_t i = 0; i < strlen(GOOD); i++) {
        const char *why;
        assert_int_equal(ws_request_parse((const uint8_t *)GOOD, i, "/mqtt", &r, &status, &why),
                         RMQ_AGAIN);
    }
}

static void
test_request_variants_accepted(void **state)
{
    (void)state;
    struct ws_request r;
    int status;
    assert_int_equal(parse(variant("Sec-WebSocket-Protocol", "Sec-WebSocket-Protocol: "
                                                             "mqttv3.1\r\n"),
                           &r, &status),
                     RMQ_OK);
    assert_string_equal(r.protocol, "mqttv3.1");
    assert_int_equal(parse(variant("Sec-WebSocket-Protocol", "sec-websocket-protocol: "
                                                             "mqttv3.1, MQTT\r\n"),
                           &r, &status),
                     RMQ_OK);
    assert_string_equal(r.protocol, "mqtt");
    assert_int_equal(parse(variant("Sec-WebSocket-Protocol", ""), &r, &status), RMQ_OK);
    assert_null(r.protocol);
    assert_int_equal(
        parse(variant("Connection", "connection:keep-alive,  upgrade \r\n"), &r, &status),
        RMQ_OK);
    assert_int_equal(parse(variant("Upgrade", "UPGRADE: WebSocket\r\n"), &r, &status), RMQ_OK);
    assert_int_equal(parse(variant("GET", "GET /mqtt?token=1 HTTP/1.1\r\n"), &r, &status),
                     RMQ_OK);
}

static void
test_request_refusals(void **state)
{
    (void)state;
    static const struct {
        const char *header, *with;
        int status;
    } bad[] = {
        {"GET", "GET /other HTTP/1.1\r\n", 404},
        {"GET", "GET /mqttx HTTP/1.1\r\n", 404},
        {"GET", "POST /mqtt HTTP/1.1\r\n", 405},
        {"GET", "GET /mqtt HTTP/1.0\r\n", 400},
        {"GET", "GET /mqtt\r\n", 400},
        {"Upgrade", "", 400},
        {"Upgrade", "Upgrade: h2c\r\n", 400},
        {"Connection", "Connection: keep-alive\r\n", 400},
        {"Sec-WebSocket-Version", "Sec-WebSocket-Version: 8\r\n", 426},
        {"Sec-WebSocket-Version", "", 400},
        {"Sec-WebSocket-Key", "", 400},
        {"Sec-WebSocket-Key", "Sec-WebSocket-Key: abc==\r\n", 400},
        {"Sec-WebSocket-Key", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ!=\r\n", 400},
        {"Sec-WebSocket-Protocol", "Sec-WebSocket-Protocol: chat, superchat\r\n", 400},
        {"Host", "Host broker\r\n", 400},
        {"Host", " folded: value\r\n", 400},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct ws_request r;
        int status = 0;
        const char *why = NULL;
        const char *req = variant(bad[i].header, bad[i].with);
        enum rmq_status st =
            ws_request_parse((const uint8_t *)req, strlen(req), "/mqtt", &r, &status, &why);
        if (st != RMQ_PROTOCOL || status != bad[i].status || !why)
            fail_msg("case %zu (%s): status %d, result %d", i, bad[i].with, status, st);
    }
}

static void
test_request_too_large(void **state)
{
    (void)state;
    char *big = malloc(WS_REQUEST_MAX + 10);
    memset(big, 'a', WS_REQUEST_MAX + 10);
    memcpy(big, "GET /mqtt HTTP/1.1\r\nX: ", 23);
    struct ws_request r;
    int status;
    const char *why;
    assert_int_equal(ws_request_parse((uint8_t *)big, WS_REQUEST_MAX - 1, "/mqtt", &r, &status,
                                      &why),
                     RMQ_AGAIN);
    assert_int_equal(ws_request_parse((uint8_t *)big, WS_REQUEST_MAX + 10, "/mqtt", &r, &status,
                                      &why),
                     RMQ_LIMIT);
    assert_int_equal(status, 431);
    free(big);
}

static void
test_responses(void **state)
{
    (void)state;
    char out[512];
    size_t n = ws_response_accept(out, sizeof(out), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", "mqtt");
    assert_int_equal(n, strlen(out));
    assert_non_null(strstr(out, "HTTP/1.1 101 Switching Protocols\r\n"));
    assert_non_null(strstr(out, "\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    assert_non_null(strstr(out, "\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n"));
    n = ws_response_accept(out, sizeof(out), "x", NULL);
    assert_null(strstr(out, "Sec-WebSocket-Protocol"));
    assert_int_equal(ws_response_accept(out, 20, "x", NULL), 0);
    n = ws_response_error(out, sizeof(out), 426);
    assert_true(n > 0);
    assert_non_null(strstr(out, "HTTP/1.1 426 Upgrade Required\r\n"));
    assert_non_null(strstr(out, "Sec-WebSocket-Version: 13\r\n"));
    ws_response_error(out, sizeof(out), 404);
    assert_non_null(strstr(out, "HTTP/1.1 404 Not Found\r\n"));
    /* RFC 6455 section 1.3's example key. */
    assert_int_equal(ws_accept_input(KEY, out, sizeof(out)), 60);
    assert_string_equal(out, KEY "258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
}

static void
test_frame_headers(void **state)
{
    (void)state;
    static const struct {
        uint64_t len;
        size_t size;
        uint8_t b1;
    } cases[] = {{0, 2, 0}, {125, 2, 125}, {126, 4, 126}, {65535, 4, 126}, {65536, 10, 127}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint8_t h[WS_HEADER_MAX];
        assert_int_equal(ws_frame_header_size(cases[i].len), cases[i].size);
        assert_int_equal(ws_frame_header(h, WS_OP_BINARY, cases[i].len), cases[i].size);
        assert_int_equal(h[0], 0x82);
        assert_int_equal(h[1], cases[i].b1);
    }
    uint8_t h[WS_HEADER_MAX];
    ws_frame_header(h, WS_OP_PONG, 70000);
    static const uint8_t want[] = {0x8a, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70};
    assert_memory_equal(h, want, sizeof(want));
}

/* ---- decoder ---- */

/* A masked client frame; returns its length. */
static size_t
frame(uint8_t *out, uint8_t first, const uint8_t *payload, size_t len)
{
    static const uint8_t mask[4] = {0x37, 0xfa, 0x21, 0x3d};
    size_t n = 0;
    out[n++] = first;
    if (len < 126) {
        out[n++] = (uint8_t)(0x80 | len);
    } else if (len <= 0xffff) {
        out[n++] = 0x80 | 126;
        out[n++] = (uint8_t)(len >> 8);
        out[n++] = (uint8_t)len;
    } else {
        out[n++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            out[n++] = (uint8_t)((uint64_t)len >> (8 * i));
    }
    memcpy(out + n, mask, 4);
    n += 4;
    for (size_t i = 0; i < len; i++)
        out[n + i] = payload[i] ^ mask[i & 3];
    return n + len;
}

static void
test_decode_whole_and_byte_by_byte(void **state)
{
    (void)state;
    uint8_t wire[200000], copy[200000], *big = malloc(70000);
    for (size_t i = 0; i < 70000; i++)
        big[i] = (uint8_t)(i * 7);
    size_t n = 0;
    n += frame(wire + n, 0x82, (const uint8_t *)"\x10\x0c", 2);   /* binary */
    n += frame(wire + n, 0x02, (const uint8_t *)"abc", 3);        /* start, no FIN */
    n += frame(wire + n, 0x89, (const uint8_t *)"hi", 2);         /* ping inside */
    n += frame(wire + n, 0x00, (const uint8_t *)"de", 2);         /* continuation */
    n += frame(wire + n, 0x80, (const uint8_t *)"", 0);           /* final, empty */
    n += frame(wire + n, 0x82, big, 300);                         /* 16-bit length */
    n += frame(wire + n, 0x82, big, 70000);                       /* 64-bit length */
    n += frame(wire + n, 0x8a, (const uint8_t *)"p", 1);          /* unsolicited pong */

    /* Whole. */
    struct ws_decoder d = {0};
    size_t out;
    memcpy(copy, wire, n);
    assert_int_equal(ws_decode(&d, copy, n, &out), RMQ_OK);
    assert_int_equal(out, 2 + 5 + 300 + 70000);
    assert_memory_equal(copy, "\x10\x0c" "abcde", 7);
    assert_memory_equal(copy + 7, big, 300);
    assert_memory_equal(copy + 307, big, 70000);
    assert_true(d.pong_due);
    assert_int_equal(d.ping_len, 2);
    assert_memory_equal(d.ping, "hi", 2);
    assert_false(d.closed);

    /* One byte at a time gives the same stream. */
    struct ws_decoder e = {0};
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t b = wire[i];
        assert_int_equal(ws_decode(&e, &b, 1, &out), RMQ_OK);
        if (out)
            copy[total++] = b;
    }
    assert_int_equal(total, 70307);
    assert_memory_equal(copy + 307, big, 70000);
    assert_true(e.pong_due);
    free(big);
}

static void
test_close_stops_decoding(void **state)
{
    (void)state;
    uint8_t wire[64];
    size_t n = frame(wire, 0x82, (const uint8_t *)"ab", 2);
    n += frame(wire + n, 0x88, (const uint8_t *)"\x03\xe8" "bye", 5);
    n += frame(wire + n, 0x82, (const uint8_t *)"zz", 2);
    struct ws_decoder d = {0};
    size_t out;
    assert_int_equal(ws_decode(&d, wire, n, &out), RMQ_OK);
    assert_int_equal(out, 2);
    assert_memory_equal(wire, "ab", 2);
    assert_true(d.closed);
    assert_int_equal(d.close_code, 1000);
    /* An empty close frame, its header at the very end of the input. */
    struct ws_decoder e = {0};
    n = frame(wire, 0x88, NULL, 0);
    assert_int_equal(ws_decode(&e, wire, n, &out), RMQ_OK);
    assert_true(e.closed);
    assert_int_equal(e.close_code, 0);
}

static void
test_decode_errors(void **state)
{
    (void)state;
    static const struct {
        uint8_t bytes[16];
        size_t len;
        uint16_t code;
    } bad[] = {
        {{0x82, 0x02, 'a', 'b'}, 4, WS_CLOSE_PROTOCOL},              /* not masked */
        {{0x81, 0x80, 1, 2, 3, 4}, 6, WS_CLOSE_UNSUPPORTED},          /* text */
        {{0xc2, 0x80, 1, 2, 3, 4}, 6, WS_CLOSE_PROTOCOL},             /* RSV1 */
        {{0x83, 0x80, 1, 2, 3, 4}, 6, WS_CLOSE_PROTOCOL},             /* opcode 3 */
        {{0x8b, 0x80, 1, 2, 3, 4}, 6, WS_CLOSE_PROTOCOL},             /* opcode 0xb */
        {{0x09, 0x80, 1, 2, 3, 4}, 6, WS_CLOSE_PROTOCOL},             /* ping without FIN */
        {{0x89, 0xfe, 0, 126, 1, 2, 3, 4}, 8, WS_CLOSE_PROTOCOL},    /* ping of 126 bytes */
        {{0x80, 0x80, 1, 2, 3, 4}, 6, WS_CLOSE_PROTOCOL},             /* continuation alone */
        {{0x82, 0xfe, 0, 100, 1, 2, 3, 4}, 8, WS_CLOSE_PROTOCOL},    /* 100 in 16 bits */
        {{0x82, 0xff, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 1, 2, 3, 4}, 14, WS_CLOSE_PROTOCOL},
        {{0x82, 0xff, 0x80, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4}, 14, WS_CLOSE_PROTOCOL},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct ws_decoder d = {0};
        uint8_t buf[16];
        size_t out;
        memcpy(buf, bad[i].bytes, bad[i].len);
        if (ws_decode(&d, buf, bad[i].len, &out) != RMQ_PROTOCOL || d.error_code != bad[i].code ||
            !d.error)
            fail_msg("case %zu not refused with %u", i, (unsigned)bad[i].code);
    }
    /* A new binary message inside a fragmented one. */
    uint8_t wire[32];
    size_t n = frame(wire, 0x02, (const uint8_t *)"a", 1);
    size_t m = frame(wire + n, 0x82, (const uint8_t *)"b", 1);
    struct ws_decoder d = {0};
    size_t out;
    assert_int_equal(ws_decode(&d, wire, n + m, &out), RMQ_PROTOCOL);
    assert_int_equal(out, 1); /* what came before the bad frame */
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_accepted),
        cmocka_unit_test(test_request_variants_accepted),
        cmocka_unit_test(test_request_refusals),
        cmocka_unit_test(test_request_too_large),
        cmocka_unit_test(test_responses),
        cmocka_unit_test(test_frame_headers),
        cmocka_unit_test(test_decode_whole_and_byte_by_byte),
        cmocka_unit_test(test_close_stops_decoding),
        cmocka_unit_test(test_decode_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
