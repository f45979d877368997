/* Unit tests for cluster/forward_codec.c: frames written and read back
 * (untargeted and targeted, every QoS, with and without retain, empty and
 * 1 MiB payloads, a 65535-byte topic), the wire layout byte for byte, a
 * mixed batch walked to its end, every truncation of that batch, and
 * malformed frames refused with RMQ_PROTOCOL (bad flags, QoS 3, an empty
 * target, a repeated flags byte that differs, wildcards, invalid UTF-8,
 * lengths past the end), and a stream's frames told apart from every
 * prefix (forward_frame_peek). Every buffer handed to the decoder is malloc'd to
 * its exact size (not test_malloc, whose guard bytes would hide an
 * over-read), so the address sanitizer catches any read past the end. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cluster/forward_codec.h"

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

/* ---- helpers ---- */

/* n bytes of p in an exactly sized heap buffer (1 byte if n is 0). */
static uint8_t *
exact_copy(const void *p, size_t n)
{
    uint8_t *copy = malloc(n ? n : 1);
    assert_non_null(copy);
    if (n)
        memcpy(copy, p, n);
    return copy;
}

/* f encoded into an exactly sized heap buffer; checks the two length
 * functions agree with each other and with what the writer produced. */
static uint8_t *
encode(const struct forward_frame *f, size_t *len)
{
    size_t size = forward_frame_size_of(f);
    uint8_t *buf = malloc(size);
    assert_non_null(buf);
    forward_frame_write(buf, f);
    assert_int_equal(forward_frame_len(buf), size);
    *len = size;
    return buf;
}

static void
assert_frame_equal(const struct forward_frame *got, const struct forward_frame *want)
{
    assert_int_equal(got->qos, want->qos);
    assert_int_equal(got->retain, want->retain);
    assert_int_equal(got->topic_len, want->topic_len);
    assert_memory_equal(got->topic, want->topic, want->topic_len);
    assert_int_equal(got->payload_len, want->payload_len);
    if (want->payload_len)
        assert_memory_equal(got->payload, want->payload, want->payload_len);
    if (want->target) {
        assert_non_null(got->target);
        assert_int_equal(got->target_len, want->target_len);
        assert_memory_equal(got->target, want->target, want->target_len);
    } else {
        assert_null(got->target);
        assert_int_equal(got->target_len, 0);
    }
}

/* Writes f, reads it back from an exact buffer, and checks the fields, that
 * they point into the buffer where the format says, and that the batch
 * then ends. */
static void
check_round_trip(const struct forward_frame *f)
{
    size_t len;
    uint8_t *buf = encode(f, &len);
    size_t expect_len = FORWARD_FRAME_OVERHEAD + f->topic_len + f->payload_len +
                        (f->target ? 3 + f->target_len : 0);
    assert_int_equal(len, expect_len);

    struct forward_frame got;
    size_t pos = 0;
    assert_int_equal(forward_frame_next(buf, len, &pos, &got), RMQ_OK);
    assert_int_equal(pos, len);
    assert_frame_equal(&got, f);
    size_t head = f->target ? 3 + f->target_len : 0;
    if (f->target)
        assert_ptr_equal(got.target, (const char *)buf + 3);
    assert_ptr_equal(got.topic, (const char *)buf + head + 3);
    assert_ptr_equal(got.payload, buf + head + 3 + f->topic_len + 4);
    assert_int_equal(forward_frame_size_of(&got), len);

    assert_int_equal(forward_frame_next(buf, len, &pos, &got), RMQ_NOT_FOUND);
    assert_int_equal(pos, len);
    free(buf);
}

/* The decoder's answer for the first frame of bytes (copied to an exact
 * buffer); a refusal must leave *pos where it was. */
static enum rmq_status
status_of(const void *bytes, size_t len)
{
    uint8_t *buf = exact_copy(bytes, len);
    struct forward_frame f;
    size_t pos = 0;
    enum rmq_status st = forward_frame_next(buf, len, &pos, &f);
    if (st != RMQ_OK)
        assert_int_equal(pos, 0);
    free(buf);
    return st;
}

/* An untargeted frame with topic t (tlen bytes) and a 2-byte payload,
 * built by hand into out (at least tlen + 9 bytes); returns its length. */
static size_t
hand_frame(uint8_t *out, uint8_t flags, const char *t, size_t tlen)
{
    out[0] = flags;
    out[1] = (uint8_t)(tlen >> 8);
    out[2] = (uint8_t)tlen;
    memcpy(out + 3, t, tlen);
    uint8_t *p = out + 3 + tlen;
    p[0] = p[1] = p[2] = 0;
    p[3] = 2;
    p[4] = 'h';
    p[5] = 'i';
    return 3 + tlen + 6;
}

/* A targeted frame for client "c1" with flags f1 and repeated flags f2,
 * topic "t", payload "hi", built by hand into out (16 bytes). */
static size_t
hand_targeted(uint8_t *out, uint8_t f1, uint8_t f2)
{
    const uint8_t frame[] = {f1, 0, 2, 'c', '1', f2, 0, 1, 't', 0, 0, 0, 2, 'h', 'i'};
    memcpy(out, frame, sizeof(frame));
    return sizeof(frame);
}

/* ---- round trips ---- */

static void
test_untargeted_round_trip(void **state)
{
    static const char topic[] = "sport/tennis/player1";
    static const uint8_t payload[] = "hello";
    for (uint8_t qos = 0; qos <= 2; qos++) {
        for (int retain = 0; retain <= 1; retain++) {
            struct forward_frame f = {.topic = topic,
                                      .topic_len = strlen(topic),
                                      .payload = payload,
                                      .payload_len = 5,
                                      .qos = qos,
                                      .retain = retain};
            check_round_trip(&f);
            size_t len;
            uint8_t *buf = encode(&f, &len);
            assert_int_equal(buf[0], qos | (retain ? 4 : 0));
            assert_int_equal(len, forward_frame_size(f.topic_len, f.payload_len));
            free(buf);
        }
    }
}

static void
test_targeted_round_trip(void **state)
{
    static const char topic[] = "a/b";
    static const uint8_t payload[] = {0, 1, 2, 0xff};
    static const char target[] = "client-42";
    for (uint8_t qos = 0; qos <= 2; qos++) {
        for (int retain = 0; retain <= 1; retain++) {
            struct forward_frame f = {.topic = topic,
                                      .topic_len = 3,
                                      .payload = payload,
                                      .payload_len = sizeof(payload),
                                      .qos = qos,
                                      .retain = retain,
                                      .target = target,
                                      .target_len = strlen(target)};
            check_round_trip(&f);
            size_t len;
            uint8_t *buf = encode(&f, &len);
            uint8_t flags = (uint8_t)(qos | (retain ? 4 : 0) | 8);
            assert_int_equal(buf[0], flags);
            assert_int_equal(buf[3 + f.target_len], flags);
            assert_int_equal(len, forward_frame_size(3, sizeof(payload)) + 3 + strlen(target));
            free(buf);
        }
    }
    /* A one-byte and a 65535-byte client id (the most a u16 carries). */
    struct forward_frame f = {.topic = topic, .topic_len = 3, .qos = 1, .target = "x",
                              .target_len = 1};
    check_round_trip(&f);
    char *big = malloc(65535);
    assert_non_null(big);
    for (size_t i = 0; i < 65535; i++)
        big[i] = (char)('a' + i % 26);
    f.target = big;
    f.target_len = 65535;
    f.payload = payload;
    f.payload_len = sizeof(payload);
    check_round_trip(&f);
    free(big);
}

/* The layout of forward_codec.h, byte for byte, both ways. */
static void
test_wire_layout(void **state)
{
    static const uint8_t plain[] = {0x05, 0, 3, 'a', '/', 'b', 0, 0, 0, 2, 'h', 'i'};
    static const uint8_t targeted[] = {0x0e, 0, 2,   'c', '1', 0x0e, 0, 1,
                                       't',  0, 0,   0,   3,   'x',  'y', 'z'};
    struct forward_frame f = {.topic = "a/b",
                              .topic_len = 3,
                              .payload = (const uint8_t *)"hi",
                              .payload_len = 2,
                              .qos = 1,
                              .retain = true};
    size_t len;
    uint8_t *buf = encode(&f, &len);
    assert_int_equal(len, sizeof(plain));
    assert_memory_equal(buf, plain, sizeof(plain));
    free(buf);

    struct forward_frame t = {.topic = "t",
                              .topic_len = 1,
                              .payload = (const uint8_t *)"xyz",
                              .payload_len = 3,
                              .qos = 2,
                              .retain = true,
                              .target = "c1",
                              .target_len = 2};
    buf = encode(&t, &len);
    assert_int_equal(len, sizeof(targeted));
    assert_memory_equal(buf, targeted, sizeof(targeted));
    free(buf);

    assert_int_equal(forward_frame_len(plain), sizeof(plain));
    assert_int_equal(forward_frame_len(targeted), sizeof(targeted));
    uint8_t *copy = exact_copy(targeted, sizeof(targeted));
    struct forward_frame got;
    size_t pos = 0;
    assert_int_equal(forward_frame_next(copy, sizeof(targeted), &pos, &got), RMQ_OK);
    assert_int_equal(pos, sizeof(targeted));
    assert_frame_equal(&got, &t);
    free(copy);
}

static void
test_empty_payload(void **state)
{
    struct forward_frame f = {.topic = "t", .topic_len = 1, .qos = 0};
    check_round_trip(&f);
    f.qos = 2;
    f.retain = true; /* an empty retained message clears the retained one */
    check_round_trip(&f);
    f.target = "c";
    f.target_len = 1;
    check_round_trip(&f);
    static const uint8_t bytes[] = {0x04, 0, 1, 't', 0, 0, 0, 0};
    assert_int_equal(status_of(bytes, sizeof(bytes)), RMQ_OK);
}

/* A topic is 1..65535 bytes: both ends decode, 0 bytes does not. (65536 is
 * beyond what the u16 length can say, so cannot be written at all.) */
static void
test_topic_length_boundary(void **state)
{
    const size_t max = 65535;
    char *topic = malloc(max);
    assert_non_null(topic);
    for (size_t i = 0; i < max; i++)
        topic[i] = i % 8 == 7 ? '/' : (char)('a' + i % 7);
    struct forward_frame f = {.topic = topic,
                              .topic_len = max,
                              .payload = (const uint8_t *)"p",
                              .payload_len = 1,
                              .qos = 1};
    check_round_trip(&f);
    f.target = "client";
    f.target_len = 6;
    check_round_trip(&f);

    /* The same 65535 bytes with a '#' at the very end: invalid. */
    topic[max - 1] = '#';
    f.target = NULL;
    f.target_len = 0;
    size_t len;
    uint8_t *buf = encode(&f, &len);
    struct forward_frame got;
    size_t pos = 0;
    assert_int_equal(forward_frame_next(buf, len, &pos, &got), RMQ_PROTOCOL);
    free(buf);
    free(topic);

    f = (struct forward_frame){.topic = "x", .topic_len = 1, .qos = 0};
    check_round_trip(&f);
    static const uint8_t empty_topic[] = {0x00, 0, 0, 0, 0, 0, 1, 'p'};
    assert_int_equal(status_of(empty_topic, sizeof(empty_topic)), RMQ_PROTOCOL);
}

static void
test_large_payload(void **state)
{
    const size_t n = 1u << 20;
    uint8_t *payload = malloc(n);
    assert_non_null(payload);
    for (size_t i = 0; i < n; i++)
        payload[i] = (uint8_t)(i * 31 + (i >> 8));
    struct forward_frame f = {.topic = "big/one",
                              .topic_len = 7,
                              .payload = payload,
                              .payload_len = n,
                              .qos = 1,
                              .retain = true};
    check_round_trip(&f);
    f.target = "c9";
    f.target_len = 2;
    f.qos = 2;
    check_round_trip(&f);
    free(payload);
}

/* ---- batches ---- */

static const uint8_t batch_payload[] = "payload bytes";

static const struct forward_frame batch_frames[] = {
    {.topic = "a", .topic_len = 1, .payload = batch_payload, .payload_len = 7, .qos = 0},
    {.topic = "room/1",
     .topic_len = 6,
     .payload = batch_payload,
     .payload_len = 13,
     .qos = 1,
     .retain = true,
     .target = "client-a",
     .target_len = 8},
    {.topic = "$SYS/x", .topic_len = 6, .qos = 2},
    {.topic = "caf\xc3\xa9", .topic_len = 5, .payload = batch_payload, .payload_len = 1,
     .qos = 2, .retain = true},
    {.topic = "q", .topic_len = 1, .qos = 0, .target = "z", .target_len = 1},
    {.topic = "/", .topic_len = 1, .payload = batch_payload, .payload_len = 3, .qos = 1},
};

/* The batch of batch_frames, and where each frame starts (bounds[i]) and
 * where the batch ends (bounds[N]). */
static uint8_t *
build_batch(size_t *len, size_t *bounds)
{
    size_t total = 0;
    for (size_t i = 0; i < N_ELEMS(batch_frames); i++) {
        bounds[i] = total;
        total += forward_frame_size_of(&batch_frames[i]);
    }
    bounds[N_ELEMS(batch_frames)] = total;
    uint8_t *buf = malloc(total);
    assert_non_null(buf);
    for (size_t i = 0; i < N_ELEMS(batch_frames); i++)
        forward_frame_write(buf + bounds[i], &batch_frames[i]);
    *len = total;
    return buf;
}

static void
test_batch_walk(void **state)
{
    size_t bounds[N_ELEMS(batch_frames) + 1];
    size_t len;
    uint8_t *buf = build_batch(&len, bounds);

    /* forward_frame_len walks it the same way. */
    size_t at = 0;
    for (size_t i = 0; i < N_ELEMS(batch_frames); i++) {
        assert_int_equal(at, bounds[i]);
        at += forward_frame_len(buf + at);
    }
    assert_int_equal(at, len);

    size_t pos = 0;
    struct forward_frame got;
    for (size_t i = 0; i < N_ELEMS(batch_frames); i++) {
        assert_int_equal(pos, bounds[i]);
        assert_int_equal(forward_frame_next(buf, len, &pos, &got), RMQ_OK);
        assert_frame_equal(&got, &batch_frames[i]);
        assert_int_equal(pos, bounds[i + 1]);
    }
    assert_int_equal(forward_frame_next(buf, len, &pos, &got), RMQ_NOT_FOUND);
    assert_int_equal(pos, len);
    assert_int_equal(forward_frame_next(buf, len, &pos, &got), RMQ_NOT_FOUND);
    assert_int_equal(pos, len);

    /* An empty batch ends at once; a position past the end is refused. */
    pos = 0;
    assert_int_equal(forward_frame_next(buf, 0, &pos, &got), RMQ_NOT_FOUND);
    pos = len + 1;
    assert_int_equal(forward_frame_next(buf, len, &pos, &got), RMQ_PROTOCOL);
    free(buf);
}

/* Every prefix of the batch: the whole frames in it decode, then the walk
 * ends with RMQ_NOT_FOUND if the cut is at a frame boundary and with
 * RMQ_PROTOCOL (pos unmoved) anywhere else. */
static void
test_truncation(void **state)
{
    size_t bounds[N_ELEMS(batch_frames) + 1];
    size_t len;
    uint8_t *full = build_batch(&len, bounds);

    for (size_t cut = 0; cut <= len; cut++) {
        uint8_t *buf = exact_copy(full, cut);
        size_t whole = 0;
        while (whole < N_ELEMS(batch_frames) && bounds[whole + 1] <= cut)
            whole++;
        size_t pos = 0;
        struct forward_frame got;
        for (size_t i = 0; i < whole; i++) {
            assert_int_equal(forward_frame_next(buf, cut, &pos, &got), RMQ_OK);
            assert_frame_equal(&got, &batch_frames[i]);
        }
        assert_int_equal(pos, bounds[whole]);
        enum rmq_status want = cut == bounds[whole] ? RMQ_NOT_FOUND : RMQ_PROTOCOL;
        enum rmq_status st = forward_frame_next(buf, cut, &pos, &got);
        if (st != want)
            fail_msg("cut at %zu of %zu: want %s, got %s", cut, len, rmq_status_str(want),
                     rmq_status_str(st));
        assert_int_equal(pos, bounds[whole]);
        free(buf);
    }
    free(full);
}

/* A frame aimed at a shared group: the group bit travels and the target is
 * the group's key. */
static void
test_group_round_trip(void **state)
{
    (void)state;
    const char *key = "$share/g/a/+";
    struct forward_frame in = {.topic = "a/b",
                               .topic_len = 3,
                               .payload = (const uint8_t *)"hi",
                               .payload_len = 2,
                               .qos = 1,
                               .target = key,
                               .target_len = strlen(key),
                               .group = true};
    size_t size = forward_frame_size_of(&in);
    uint8_t *buf = malloc(size);
    assert_non_null(buf);
    forward_frame_write(buf, &in);
    assert_int_equal(buf[0], 0x19);
    assert_int_equal(forward_frame_len(buf), size);
    struct forward_frame out;
    size_t pos = 0;
    assert_int_equal(forward_frame_next(buf, size, &pos, &out), RMQ_OK);
    assert_true(out.group);
    assert_int_equal(out.target_len, strlen(key));
    assert_memory_equal(out.target, key, strlen(key));
    assert_int_equal(out.qos, 1);
    assert_int_equal(pos, size);
    /* Without a target the group bit is never written. */
    in.target = NULL;
    in.target_len = 0;
    forward_frame_write(buf, &in);
    assert_int_equal(buf[0], 0x01);
    free(buf);
}

/* A rescued frame: bit 5 travels, the target is the routed-at time then
 * the dead node's id (a target of the time alone, or shorter, is refused),
 * and it is not a group's. */
static void
test_rescued_round_trip(void **state)
{
    (void)state;
    static const char target[] = "\0\0\1\x90\0\0\0\x2an2";
    struct forward_frame in = {.topic = "a/b",
                               .topic_len = 3,
                               .payload = (const uint8_t *)"hi",
                               .payload_len = 2,
                               .qos = 2,
                               .target = target,
                               .target_len = 10,
                               .rescued = true};
    size_t size = forward_frame_size_of(&in);
    uint8_t buf[64];
    assert_true(size <= sizeof(buf));
    forward_frame_write(buf, &in);
    assert_int_equal(buf[0], 0x2a);
    assert_int_equal(forward_frame_len(buf), size);
    struct forward_frame out;
    size_t pos = 0;
    assert_int_equal(forward_frame_next(buf, size, &pos, &out), RMQ_OK);
    assert_true(out.rescued);
    assert_false(out.group);
    assert_int_equal(out.target_len, 10);
    assert_memory_equal(out.target, target, 10);
    assert_int_equal(pos, size);
    for (size_t short_len = 1; short_len <= FORWARD_RESCUE_TIME; short_len++) {
        in.target_len = short_len;
        size = forward_frame_size_of(&in);
        forward_frame_write(buf, &in);
        pos = 0;
        assert_int_equal(forward_frame_next(buf, size, &pos, &out), RMQ_PROTOCOL);
    }
}

/* The second pass over a checked batch reads the same frames, still within
 * bounds (a truncated batch is refused), without validating topics again. */
static void
test_trusted_second_pass(void **state)
{
    (void)state;
    uint8_t buf[64];
    struct forward_frame in = {.topic = "a/b", .topic_len = 3, .payload = (const uint8_t *)"x",
                               .payload_len = 1, .qos = 1};
    size_t size = forward_frame_size_of(&in);
    forward_frame_write(buf, &in);
    struct forward_frame a, b;
    size_t pa = 0, pb = 0;
    assert_int_equal(forward_frame_next(buf, size, &pa, &a), RMQ_OK);
    assert_int_equal(forward_frame_next_trusted(buf, size, &pb, &b), RMQ_OK);
    assert_int_equal(pa, pb);
    assert_ptr_equal(a.topic, b.topic);
    assert_int_equal(a.payload_len, b.payload_len);
    assert_int_equal(forward_frame_next_trusted(buf, size, &pb, &b), RMQ_NOT_FOUND);
    pb = 0;
    assert_int_equal(forward_frame_next_trusted(buf, size - 1, &pb, &b), RMQ_PROTOCOL);
    buf[4] = '+'; /* a wildcard in the topic: only the checked pass refuses it */
    pa = pb = 0;
    assert_int_equal(forward_frame_next(buf, size, &pa, &a), RMQ_PROTOCOL);
    assert_int_equal(forward_frame_next_trusted(buf, size, &pb, &b), RMQ_OK);
}

/* ---- malformed frames ---- */

/* Every flags byte on an untargeted frame: only bits 0-2 may be set, and
 * the QoS bits must not say 3 (bit 4, a group target, needs bit 3). (Bit 3
 * is the targeted layout, tested below.) */
static void
test_untargeted_flags(void **state)
{
    uint8_t frame[32];
    for (unsigned b = 0; b < 256; b++) {
        if (b & 8u)
            continue;
        size_t n = hand_frame(frame, (uint8_t)b, "a/b", 3);
        bool valid = (b & ~7u) == 0 && (b & 3u) != 3u;
        enum rmq_status st = status_of(frame, n);
        if (st != (valid ? RMQ_OK : RMQ_PROTOCOL))
            fail_msg("flags 0x%02x: want %s, got %s", b, valid ? "ok" : "protocol",
                     rmq_status_str(st));
    }
}

/* Every flags byte with bit 3 on a targeted frame, both copies equal (bit 4
 * marks a shared group's key as the target; bit 5, a rescued message, needs
 * a longer target than this 2-byte one, see test_rescued_round_trip; never
 * both); and every pair of copies that differ. */
static void
test_targeted_flags(void **state)
{
    uint8_t frame[32];
    for (unsigned b = 0; b < 256; b++) {
        if (!(b & 8u))
            continue;
        size_t n = hand_targeted(frame, (uint8_t)b, (uint8_t)b);
        bool valid = (b & ~31u) == 0 && (b & 3u) != 3u;
        enum rmq_status st = status_of(frame, n);
        if (st != (valid ? RMQ_OK : RMQ_PROTOCOL))
            fail_msg("flags 0x%02x twice: want %s, got %s", b, valid ? "ok" : "protocol",
                     rmq_status_str(st));
    }
    static const uint8_t good[] = {0x08, 0x09, 0x0a, 0x0c, 0x0d, 0x0e,
                                   0x18, 0x19, 0x1a, 0x1c, 0x1d, 0x1e};
    for (size_t i = 0; i < N_ELEMS(good); i++) {
        for (unsigned b2 = 0; b2 < 256; b2++) {
            if (b2 == good[i])
                continue;
            size_t n = hand_targeted(frame, good[i], (uint8_t)b2);
            enum rmq_status st = status_of(frame, n);
            if (st != RMQ_PROTOCOL)
                fail_msg("flags 0x%02x then 0x%02x: want protocol, got %s", good[i], b2,
                         rmq_status_str(st));
        }
    }
}

static void
test_qos3(void **state)
{
    uint8_t frame[32];
    static const uint8_t plain[] = {0x03, 0x07};
    for (size_t i = 0; i < N_ELEMS(plain); i++) {
        size_t n = hand_frame(frame, plain[i], "t", 1);
        assert_int_equal(status_of(frame, n), RMQ_PROTOCOL);
    }
    static const uint8_t targeted[] = {0x0b, 0x0f};
    for (size_t i = 0; i < N_ELEMS(targeted); i++) {
        size_t n = hand_targeted(frame, targeted[i], targeted[i]);
        assert_int_equal(status_of(frame, n), RMQ_PROTOCOL);
    }
    /* The writer keeps only the low two bits of qos, so it never writes 3
     * by accident; 3 itself is the caller's bug and decodes as refused. */
    struct forward_frame f = {.topic = "t", .topic_len = 1, .qos = 3};
    size_t len;
    uint8_t *buf = encode(&f, &len);
    assert_int_equal(status_of(buf, len), RMQ_PROTOCOL);
    free(buf);
}

static void
test_empty_target(void **state)
{
    static const uint8_t frame[] = {0x09, 0, 0, 0x09, 0, 1, 't', 0, 0, 0, 1, 'p'};
    assert_int_equal(status_of(frame, sizeof(frame)), RMQ_PROTOCOL);
    /* Also when the writer is handed a non-NULL empty client id. */
    struct forward_frame f = {.topic = "t", .topic_len = 1, .qos = 1, .target = "",
                              .target_len = 0};
    static const uint8_t head[] = {0x09, 0, 0, 0x09};
    size_t len;
    uint8_t *buf = encode(&f, &len);
    assert_memory_equal(buf, head, sizeof(head));
    assert_int_equal(status_of(buf, len), RMQ_PROTOCOL);
    free(buf);
}

static void
test_wildcard_topics(void **state)
{
    static const char *const bad[] = {"+", "#", "a/+/b", "a/#", "a+b", "a#", "+/", "/#"};
    uint8_t frame[64];
    for (size_t i = 0; i < N_ELEMS(bad); i++) {
        size_t n = hand_frame(frame, 0x01, bad[i], strlen(bad[i]));
        if (status_of(frame, n) != RMQ_PROTOCOL)
            fail_msg("topic \"%s\" accepted", bad[i]);
        struct forward_frame f = {.topic = bad[i], .topic_len = strlen(bad[i]), .qos = 1,
                                  .target = "c", .target_len = 1};
        size_t len;
        uint8_t *buf = encode(&f, &len);
        if (status_of(buf, len) != RMQ_PROTOCOL)
            fail_msg("targeted, topic \"%s\" accepted", bad[i]);
        free(buf);
    }
}

struct bytes_case {
    const char *s;
    size_t len;
    const char *why;
};

#define BYTES(lit) lit, sizeof(lit) - 1

/* Topics must be MQTT UTF-8 (as the packet codec demands of PUBLISH):
 * well-formed, no U+0000. All are checked and every wrong answer listed
 * before the test fails, so one run shows the whole picture. */
static void
test_invalid_utf8_topics(void **state)
{
    static const struct bytes_case bad[] = {
        {BYTES("a\xff"), "0xff byte"},
        {BYTES("\x80"), "lone continuation byte"},
        {BYTES("a/\xc3"), "sequence cut short at the end"},
        {BYTES("\xc3(b"), "lead byte without continuation"},
        {BYTES("\xc0\xaf"), "overlong '/'"},
        {BYTES("\xe0\x80\xaf"), "overlong 3-byte"},
        {BYTES("\xed\xa0\x80"), "UTF-16 surrogate U+D800"},
        {BYTES("\xf4\x90\x80\x80"), "beyond U+10FFFF"},
        {BYTES("a\0b"), "U+0000"},
    };
    static const struct bytes_case good[] = {
        {BYTES("caf\xc3\xa9/\xe6\x97\xa5"), "2- and 3-byte sequences"},
        {BYTES("\xf0\x9f\x98\x80"), "4-byte sequence"},
    };
    uint8_t frame[64];
    int wrong = 0;
    for (size_t i = 0; i < N_ELEMS(good); i++) {
        size_t n = hand_frame(frame, 0x00, good[i].s, good[i].len);
        enum rmq_status st = status_of(frame, n);
        if (st != RMQ_OK) {
            print_error("valid topic (%s): want ok, got %s\n", good[i].why, rmq_status_str(st));
            wrong++;
        }
    }
    for (size_t i = 0; i < N_ELEMS(bad); i++) {
        size_t n = hand_frame(frame, 0x00, bad[i].s, bad[i].len);
        enum rmq_status st = status_of(frame, n);
        if (st != RMQ_PROTOCOL) {
            print_error("invalid topic (%s): want protocol, got %s\n", bad[i].why,
                        rmq_status_str(st));
            wrong++;
        }
    }
    assert_int_equal(wrong, 0);
}

/* Lengths that point past the end of the buffer, for each length field. */
static void
test_lengths_beyond_buffer(void **state)
{
    /* payload length one more than the bytes present */
    static const uint8_t plen_plus1[] = {0x00, 0, 1, 't', 0, 0, 0, 3, 'a', 'b'};
    /* payload length at its largest allowed and past it, near-empty buffer */
    static const uint8_t plen_max[] = {0x00, 0, 1, 't', 0x0f, 0xff, 0xff, 0xff, 'a'};
    static const uint8_t plen_over[] = {0x00, 0, 1, 't', 0x10, 0x00, 0x00, 0x00, 'a'};
    static const uint8_t plen_all[] = {0x00, 0, 1, 't', 0xff, 0xff, 0xff, 0xff, 'a'};
    /* topic length past the end, and topic present but no payload length */
    static const uint8_t tlen_big[] = {0x00, 0xff, 0xff, 't', 0, 0, 0, 0};
    static const uint8_t tlen_plus1[] = {0x00, 0, 2, 't', 0, 0, 0, 0};
    static const uint8_t no_plen[] = {0x00, 0, 1, 't', 0, 0, 0};
    /* targeted: client id length past the end, and ending right after it */
    static const uint8_t target_big[] = {0x08, 0xff, 0xff, 'c', 0x08, 0, 1, 't', 0, 0, 0, 0};
    static const uint8_t target_only[] = {0x08, 0, 2, 'c', '1'};
    static const uint8_t target_plen[] = {0x08, 0, 1, 'c', 0x08, 0, 1, 't', 0, 0, 0, 9, 'x'};
    static const struct {
        const uint8_t *b;
        size_t n;
        const char *why;
    } cases[] = {
        {plen_plus1, sizeof(plen_plus1), "payload length + 1"},
        {plen_max, sizeof(plen_max), "payload length FORWARD_MAX_PAYLOAD"},
        {plen_over, sizeof(plen_over), "payload length FORWARD_MAX_PAYLOAD + 1"},
        {plen_all, sizeof(plen_all), "payload length 0xffffffff"},
        {tlen_big, sizeof(tlen_big), "topic length 0xffff"},
        {tlen_plus1, sizeof(tlen_plus1), "topic length + 1"},
        {no_plen, sizeof(no_plen), "payload length cut short"},
        {target_big, sizeof(target_big), "client id length 0xffff"},
        {target_only, sizeof(target_only), "nothing after the client id"},
        {target_plen, sizeof(target_plen), "targeted, payload length past the end"},
    };
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        enum rmq_status st = status_of(cases[i].b, cases[i].n);
        if (st != RMQ_PROTOCOL)
            fail_msg("%s: want protocol, got %s", cases[i].why, rmq_status_str(st));
    }
    /* A valid frame followed by stray bytes: the frame, then a refusal. */
    static const uint8_t trailing[] = {0x00, 0, 1, 't', 0, 0, 0, 0, 0x00, 0};
    uint8_t *buf = exact_copy(trailing, sizeof(trailing));
    struct forward_frame got;
    size_t pos = 0;
    assert_int_equal(forward_frame_next(buf, sizeof(trailing), &pos, &got), RMQ_OK);
    assert_int_equal(pos, 8);
    assert_int_equal(forward_frame_next(buf, sizeof(trailing), &pos, &got), RMQ_PROTOCOL);
    assert_int_equal(pos, 8);
    free(buf);
}

/* forward_frame_peek on every prefix of a stream of frames: too few bytes
 * to tell (RMQ_AGAIN) until the lengths are in, then the whole frame's
 * length, whatever follows; bad flags and an oversized payload at once. */
static void
test_peek_prefixes(void **state)
{
    static const uint8_t payload[300] = {7};
    const struct forward_frame frames[] = {
        {.topic = "a/b", .topic_len = 3, .payload = payload, .payload_len = 300, .qos = 1},
        {.topic = "t", .topic_len = 1, .payload = payload, .payload_len = 0, .qos = 2,
         .target = "client-9", .target_len = 8},
    };
    for (size_t k = 0; k < N_ELEMS(frames); k++) {
        size_t len;
        uint8_t *buf = encode(&frames[k], &len);
        /* header bytes before the payload: flags, [target], topic, payload length */
        size_t header = len - frames[k].payload_len;
        for (size_t avail = 0; avail <= len; avail++) {
            uint8_t *prefix = exact_copy(buf, avail);
            size_t need = 0;
            enum rmq_status st = forward_frame_peek(prefix, avail, &need);
            if (avail < header) {
                assert_int_equal(st, RMQ_AGAIN);
            } else {
                assert_int_equal(st, RMQ_OK);
                assert_int_equal(need, len);
            }
            free(prefix);
        }
        free(buf);
    }
    static const uint8_t bad_flags[] = {0xC1, 0, 1, 'x', 0, 0, 0, 0};
    static const uint8_t qos3[] = {0x03, 0, 1, 'x', 0, 0, 0, 0};
    static const uint8_t too_large[] = {0x00, 0, 1, 'x', 0x10, 0, 0, 0};
    size_t need;
    assert_int_equal(forward_frame_peek(bad_flags, sizeof(bad_flags), &need), RMQ_PROTOCOL);
    assert_int_equal(forward_frame_peek(qos3, sizeof(qos3), &need), RMQ_PROTOCOL);
    assert_int_equal(forward_frame_peek(too_large, sizeof(too_large), &need), RMQ_PROTOCOL);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_untargeted_round_trip),
        cmocka_unit_test(test_targeted_round_trip),
        cmocka_unit_test(test_group_round_trip),
        cmocka_unit_test(test_rescued_round_trip),
        cmocka_unit_test(test_trusted_second_pass),
        cmocka_unit_test(test_wire_layout),
        cmocka_unit_test(test_empty_payload),
        cmocka_unit_test(test_topic_length_boundary),
        cmocka_unit_test(test_large_payload),
        cmocka_unit_test(test_batch_walk),
        cmocka_unit_test(test_truncation),
        cmocka_unit_test(test_untargeted_flags),
        cmocka_unit_test(test_targeted_flags),
        cmocka_unit_test(test_qos3),
        cmocka_unit_test(test_empty_target),
        cmocka_unit_test(test_wildcard_topics),
        cmocka_unit_test(test_invalid_utf8_topics),
        cmocka_unit_test(test_lengths_beyond_buffer),
        cmocka_unit_test(test_peek_prefixes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
