/* libFuzzer target for broker/websocket.c.
 *
 * Even first byte: the rest is an opening handshake request. RMQ_OK means a
 * length within the input, every strict prefix RMQ_AGAIN, a 24-character
 * key, and a status of 0; a refusal carries an HTTP status and a reason.
 *
 * Odd first byte: the rest is a stream of client frames, decoded whole and
 * again in two pieces split where the second byte says. Both must agree on
 * the result and, up to the first error, on the decoded bytes; the output
 * never outgrows the input; control payloads stay within 125 bytes.
 * Single-threaded; one copy of the input per run, freed. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/websocket.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);               \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static void
check_request(const uint8_t *in, size_t len)
{
    struct ws_request r, again;
    int status, st2;
    const char *why, *why2;
    enum rmq_status st = ws_request_parse(in, len, "/mqtt", &r, &status, &why);
    if (st == RMQ_OK) {
        CHECK(r.len >= 4 && r.len <= len && status == 0);
        CHECK(memcmp(in + r.len - 4, "\r\n\r\n", 4) == 0);
        CHECK(strlen(r.key) == WS_KEY_LEN);
        CHECK(!r.protocol || !strcmp(r.protocol, "mqtt") || !strcmp(r.protocol, "mqttv3.1"));
        for (size_t i = 0; i + 1 < r.len; i++)
            CHECK(ws_request_parse(in, i, "/mqtt", &again, &st2, &why2) == RMQ_AGAIN);
    } else if (st == RMQ_AGAIN) {
        CHECK(len < WS_REQUEST_MAX);
    } else {
        CHECK(st == RMQ_PROTOCOL || st == RMQ_LIMIT);
        CHECK(status >= 400 && status < 500 && why != NULL);
    }
}

static void
check_frames(const uint8_t *in, size_t len, size_t split)
{
    uint8_t *a = malloc(len ? len : 1), *b = malloc(len ? len : 1);
    CHECK(a && b);
    if (len) {
        memcpy(a, in, len);
        memcpy(b, in, len);
    }
    struct ws_decoder whole = {0}, parts = {0};
    size_t out_a = 0, out_b1 = 0, out_b2 = 0;
    enum rmq_status st_a = ws_decode(&whole, a, len, &out_a);
    CHECK(out_a <= len && whole.ping_len <= 125 && whole.ctl_len <= 125);
    if (split > len)
        split = len;
    enum rmq_status st_b = ws_decode(&parts, b, split, &out_b1);
    CHECK(out_b1 <= split);
    if (st_b == RMQ_OK) {
        /* The second piece decodes into its own place; join the outputs. */
        st_b = ws_decode(&parts, b + split, len - split, &out_b2);
        CHECK(out_b2 <= len - split);
        memmove(b + out_b1, b + split, out_b2);
    }
    CHECK(st_a == st_b);
    CHECK(out_a == out_b1 + out_b2);
    CHECK(out_a == 0 || memcmp(a, b, out_a) == 0);
    CHECK(whole.closed == parts.closed && whole.close_code == parts.close_code);
    if (st_a != RMQ_OK)
        CHECK(whole.error && whole.error_code == parts.error_code);
    free(a);
    free(b);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    if (!(data[0] & 1))
        check_request(data + 2, size - 2);
    else
        check_frames(data + 2, size - 2, (size_t)data[1] * 7);
    return 0;
}
