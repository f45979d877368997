/* Unit tests for broker/packet_codec.c.
 *
 * Most cases are tables of raw packets written out byte by byte (so a bug
 * shared by the encoder and the decoder cannot hide), each with the status and
 * consumed count mqtt_decode must give. Field tests check what a decoded
 * packet holds; stream tests feed packets one byte at a time; encoder tests
 * compare with exact bytes; round trips tie encoders and decoder together.
 * The UTF-8 validator has its own file, test_packet_codec_utf8.c.
 * The codec allocates nothing, so neither do these tests.
 *
 * Beware C hex escapes: "\x03a" is one byte (0x3a). Strings are split
 * ("\x03" "a") wherever an escape is followed by a hex digit. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "broker/packet_codec.h"

#define BYTES(s) (const uint8_t *)(s), sizeof(s) - 1
#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

/* ---- decode tables ---- */

struct decode_case {
    const char *name;
    const uint8_t *buf;
    size_t len;
    enum rmq_status status;
    size_t consumed;
};

/* The tables keep one case per line. */
/* clang-format off */
#define OK(n, s) {n, BYTES(s), RMQ_OK, sizeof(s) - 1}
#define BAD(n, s) {n, BYTES(s), RMQ_PROTOCOL, 0}
#define UNSUP(n, s) {n, BYTES(s), RMQ_UNSUPPORTED, sizeof(s) - 1}
#define AGAIN(n, s, need) {n, BYTES(s), RMQ_AGAIN, need}

/* Variable header of a 3.1.1 / 3.1 CONNECT up to the flags byte. */
#define V4 "\x00\x04MQTT\x04"
#define V3 "\x00\x06MQIsdp\x03"

static const struct decode_case connect_cases[] = {
    OK("3.1.1 minimal", "\x10\x0c" V4 "\x02\x00\x3c\x00\x00"),
    OK("3.1 minimal", "\x10\x0e" V3 "\x02\x00\x3c\x00\x00"),
    OK("3.1.1 client id", "\x10\x0f" V4 "\x00\x00\x00\x00\x03" "abc"),
    OK("3.1.1 user+pass", "\x10\x14" V4 "\xc2\x00\x00\x00\x00\x00\x01u\x00\x03p\x00q"),
    OK("3.1.1 will qos2 retain", "\x10\x14" V4 "\x34\x00\x00\x00\x00\x00\x01t\x00\x03\x00\x01\x02"),
    OK("3.1 password only", "\x10\x11" V3 "\x42\x00\x00\x00\x00\x00\x01p"),
    BAD("3.1.1 password only", "\x10\x0f" V4 "\x42\x00\x00\x00\x00\x00\x01p"),
    BAD("reserved connect flag", "\x10\x0c" V4 "\x03\x00\x3c\x00\x00"),
    BAD("will qos 3", "\x10\x11" V4 "\x1c\x00\x00\x00\x00\x00\x01t\x00\x00"),
    BAD("will qos without will", "\x10\x0c" V4 "\x0a\x00\x3c\x00\x00"),
    BAD("will retain without will", "\x10\x0c" V4 "\x22\x00\x3c\x00\x00"),
    BAD("3.1 will qos 3", "\x10\x13" V3 "\x1c\x00\x00\x00\x00\x00\x01t\x00\x00"),
    BAD("fixed header flags", "\x11\x0c" V4 "\x02\x00\x3c\x00\x00"),
    BAD("client id past end", "\x10\x0c" V4 "\x02\x00\x3c\x00\x05"),
    BAD("client id NUL", "\x10\x0d" V4 "\x02\x00\x3c\x00\x01\x00"),
    BAD("client id overlong", "\x10\x0e" V4 "\x02\x00\x3c\x00\x02\xc0\x80"),
    BAD("trailing byte", "\x10\x0d" V4 "\x02\x00\x3c\x00\x00\xff"),
    BAD("no keepalive", "\x10\x09" V4 "\x02\x00"),
    BAD("no flags", "\x10\x07" V4),
    BAD("no level", "\x10\x06\x00\x04MQTT"),
    BAD("name past end", "\x10\x03\x00\x04M"),
    BAD("empty body", "\x10\x00"),
    BAD("username flag, no username", "\x10\x0c" V4 "\x82\x00\x3c\x00\x00"),
    BAD("password flag, no password", "\x10\x0f" V4 "\xc2\x00\x3c\x00\x00\x00\x01u"),
    BAD("will flag, no will payload", "\x10\x0f" V4 "\x06\x00\x3c\x00\x00\x00\x01t"),
    BAD("will topic invalid utf-8", "\x10\x11" V4 "\x06\x00\x3c\x00\x00\x00\x01\xff\x00\x00"),
    BAD("username invalid utf-8", "\x10\x0f" V4 "\x82\x00\x3c\x00\x00\x00\x01\xed"),
    UNSUP("MQTT level 5", "\x10\x0d\x00\x04MQTT\x05\x02\x00\x3c\x00\x00\x00"),
    UNSUP("MQTT level 3", "\x10\x0c\x00\x04MQTT\x03\x02\x00\x3c\x00\x00"),
    UNSUP("MQIsdp level 4", "\x10\x0e\x00\x06MQIsdp\x04\x02\x00\x3c\x00\x00"),
    UNSUP("unknown name", "\x10\x0c\x00\x04MQTX\x04\x02\x00\x3c\x00\x00"),
    UNSUP("unknown level, garbage after", "\x10\x07\x00\x04MQTT\x07"),
};

static const struct decode_case ack_cases[] = {
    OK("connack", "\x20\x02\x00\x00"),
    OK("connack present, code 5", "\x20\x02\x01\x05"),
    BAD("connack reserved ack flag", "\x20\x02\x02\x00"),
    BAD("connack code 6", "\x20\x02\x00\x06"),
    BAD("connack length 3", "\x20\x03\x00\x00\x00"),
    BAD("connack length 1", "\x20\x01\x00"),
    BAD("connack flags", "\x21\x02\x00\x00"),
    OK("puback", "\x40\x02\x00\x01"),
    BAD("puback id 0", "\x40\x02\x00\x00"),
    BAD("puback length 3", "\x40\x03\x00\x01\x00"),
    BAD("puback length 1", "\x40\x01\x00"),
    BAD("puback flags", "\x41\x02\x00\x01"),
    OK("pubrec", "\x50\x02\xff\xff"),
    BAD("pubrec flags 2", "\x52\x02\x00\x01"),
    OK("pubrel", "\x62\x02\x00\x01"),
    BAD("pubrel flags 0", "\x60\x02\x00\x01"),
    BAD("pubrel flags 3", "\x63\x02\x00\x01"),
    OK("pubcomp", "\x70\x02\x00\x01"),
    BAD("pubcomp flags", "\x78\x02\x00\x01"),
    OK("unsuback", "\xb0\x02\x00\x01"),
    BAD("unsuback flags 2", "\xb2\x02\x00\x01"),
    BAD("unsuback length 0", "\xb0\x00"),
    OK("pingreq", "\xc0\x00"),
    OK("pingresp", "\xd0\x00"),
    OK("disconnect", "\xe0\x00"),
    BAD("pingreq length 1", "\xc0\x01\x00"),
    BAD("pingreq flags", "\xc1\x00"),
    BAD("disconnect flags", "\xe2\x00"),
    BAD("type 0", "\x00\x00"),
    BAD("type 15", "\xf0\x00"),
    BAD("type 0, flags", "\x0f\x00"),
};

static const struct decode_case publish_cases[] = {
    OK("qos 0, empty payload", "\x30\x05\x00\x03" "a/b"),
    OK("qos 0, payload", "\x30\x07\x00\x03" "a/bhi"),
    OK("qos 1", "\x32\x07\x00\x03" "a/b\x00\x01"),
    OK("qos 2", "\x34\x08\x00\x03" "a/b\x00\x01x"),
    OK("dup qos 0 (accepted)", "\x38\x05\x00\x03" "a/b"),
    OK("dup qos 1 retain", "\x3b\x07\x00\x03" "a/b\x00\x01"),
    OK("empty topic (broker's call)", "\x30\x02\x00\x00"),
    OK("wildcard topic (broker's call)", "\x30\x05\x00\x03" "a/#"),
    OK("binary payload", "\x30\x06\x00\x01" "a\x00\xff\xfe"),
    BAD("qos 3", "\x36\x07\x00\x03" "a/b\x00\x01"),
    BAD("qos 3 dup retain", "\x3f\x07\x00\x03" "a/b\x00\x01"),
    BAD("qos 1 without packet id", "\x32\x05\x00\x03" "a/b"),
    BAD("qos 1 half packet id", "\x32\x06\x00\x03" "a/b\x00"),
    BAD("qos 2 packet id 0", "\x34\x07\x00\x03" "a/b\x00\x00"),
    BAD("no body", "\x30\x00"),
    BAD("half topic length", "\x30\x01\x00"),
    BAD("topic past end", "\x30\x04\x00\x03" "a/"),
    BAD("topic invalid utf-8", "\x30\x04\x00\x02\xc3\x28"),
    BAD("topic NUL", "\x30\x03\x00\x01\x00"),
    BAD("topic surrogate", "\x30\x05\x00\x03\xed\xa0\x80"),
};

static const struct decode_case list_cases[] = {
    OK("subscribe", "\x82\x08\x00\x01\x00\x03" "a/b\x01"),
    OK("subscribe 2", "\x82\x0c\x00\x0a\x00\x01" "a\x00\x00\x03" "b/#\x02"),
    OK("subscribe empty filter", "\x82\x05\x00\x01\x00\x00\x00"),
    OK("subscribe utf-8 filter", "\x82\x07\x00\x01\x00\x02\xc3\xa9\x00"),
    BAD("subscribe flags 0", "\x80\x08\x00\x01\x00\x03" "a/b\x01"),
    BAD("subscribe flags 3", "\x83\x08\x00\x01\x00\x03" "a/b\x01"),
    BAD("subscribe qos 3", "\x82\x08\x00\x01\x00\x03" "a/b\x03"),
    BAD("subscribe qos reserved bits", "\x82\x08\x00\x01\x00\x03" "a/b\x41"),
    BAD("subscribe qos 0x80", "\x82\x08\x00\x01\x00\x03" "a/b\x80"),
    BAD("subscribe no entries", "\x82\x02\x00\x01"),
    BAD("subscribe packet id 0", "\x82\x08\x00\x00\x00\x03" "a/b\x01"),
    BAD("subscribe no qos", "\x82\x07\x00\x01\x00\x03" "a/b"),
    BAD("subscribe second entry cut", "\x82\x08\x00\x01\x00\x01" "a\x00\x00\x03"),
    BAD("subscribe filter past end", "\x82\x06\x00\x01\x00\x05" "a\x01"),
    BAD("subscribe invalid utf-8", "\x82\x06\x00\x01\x00\x01\xff\x00"),
    BAD("subscribe length 1", "\x82\x01\x00"),
    OK("unsubscribe", "\xa2\x07\x00\x01\x00\x03" "a/b"),
    OK("unsubscribe 2", "\xa2\x0c\x00\x01\x00\x03" "a/b\x00\x03" "c/d"),
    OK("unsubscribe empty filter", "\xa2\x04\x00\x01\x00\x00"),
    BAD("unsubscribe flags 0", "\xa0\x07\x00\x01\x00\x03" "a/b"),
    BAD("unsubscribe no entries", "\xa2\x02\x00\x01"),
    BAD("unsubscribe packet id 0", "\xa2\x07\x00\x00\x00\x03" "a/b"),
    BAD("unsubscribe filter past end", "\xa2\x06\x00\x01\x00\x03" "a/"),
    BAD("unsubscribe half length", "\xa2\x03\x00\x01\x00"),
    BAD("unsubscribe NUL", "\xa2\x05\x00\x01\x00\x01\x00"),
    OK("suback", "\x90\x03\x00\x01\x00"),
    OK("suback all codes", "\x90\x06\x00\x01\x00\x01\x02\x80"),
    BAD("suback code 3", "\x90\x03\x00\x01\x03"),
    BAD("suback code 0x81", "\x90\x03\x00\x01\x81"),
    BAD("suback no codes", "\x90\x02\x00\x01"),
    BAD("suback flags", "\x92\x03\x00\x01\x00"),
};

static const struct decode_case header_cases[] = {
    AGAIN("empty", "", 0),
    AGAIN("type only", "\x30", 0),
    AGAIN("varint cut", "\x30\x80", 0),
    AGAIN("varint cut 3", "\x30\x80\x80\x80", 0),
    AGAIN("body cut", "\x30\x05\x00", 7),
    AGAIN("header only", "\x82\x08", 10),
    AGAIN("2-byte varint", "\x30\xff\x7f", 3 + 16383),
    AGAIN("max varint", "\x30\xff\xff\xff\x7f", 5 + 268435455),
    AGAIN("non-minimal varint", "\x30\x85\x00\x00", 8),
    OK("non-minimal zero", "\xc0\x80\x00"),
    OK("non-minimal 4-byte", "\x40\x82\x80\x80\x00\x00\x01"),
    BAD("5-byte varint", "\x30\xff\xff\xff\xff\x01"),
    BAD("5-byte varint, 5th missing", "\x30\x80\x80\x80\x80"),
    BAD("bad type before varint", "\x00"),
    BAD("qos 3 before varint", "\x36"),
    BAD("reserved flags before varint", "\x80"),
    BAD("exact length checked early", "\xc0\x05"),
    BAD("ack length checked early", "\x40\x03\x00"),
};
/* clang-format on */

static void
run_cases(const struct decode_case *cases, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const struct decode_case *c = &cases[i];
        struct mqtt_packet pkt;
        size_t used = 12345;
        enum rmq_status st = mqtt_decode(c->buf, c->len, 0, &pkt, &used);
        if (st != c->status || used != c->consumed)
            fail_msg("case \"%s\": got %s/%zu, want %s/%zu", c->name, rmq_status_str(st), used,
                     rmq_status_str(c->status), c->consumed);
        if (st == RMQ_OK || st == RMQ_UNSUPPORTED)
            assert_int_equal(pkt.type, c->buf[0] >> 4);
    }
}

static void
test_decode_connect_table(void **state)
{
    run_cases(connect_cases, N_ELEMS(connect_cases));
}

static void
test_decode_ack_table(void **state)
{
    run_cases(ack_cases, N_ELEMS(ack_cases));
}

static void
test_decode_publish_table(void **state)
{
    run_cases(publish_cases, N_ELEMS(publish_cases));
}

static void
test_decode_list_table(void **state)
{
    run_cases(list_cases, N_ELEMS(list_cases));
}

static void
test_decode_header_table(void **state)
{
    run_cases(header_cases, N_ELEMS(header_cases));
}

/* ---- decoded fields ---- */

/* CONNECT 3.1.1 with every field: clean session, will QoS 1 retained, user
 * name, password; binary will payload and password. */
/* clang-format off */
static const uint8_t full_connect[] = "\x10\x23" V4 "\xee\x00\x3c"
                                      "\x00\x03" "cid"
                                      "\x00\x03" "w/t"
                                      "\x00\x02\x00\xff"
                                      "\x00\x04" "user"
                                      "\x00\x03\x00\x01\x02";
/* clang-format on */
#define FULL_CONNECT_LEN (sizeof(full_connect) - 1)

static void
assert_str(struct mqtt_str s, const char *want, size_t want_len)
{
    assert_int_equal(s.len, want_len);
    if (want_len)
        assert_memory_equal(s.data, want, want_len);
}

static void
test_connect_fields(void **state)
{
    struct mqtt_packet pkt;
    size_t used;

    assert_int_equal(mqtt_decode(full_connect, FULL_CONNECT_LEN, 0, &pkt, &used), RMQ_OK);
    assert_int_equal(used, FULL_CONNECT_LEN);
    assert_int_equal(pkt.type, MQTT_CONNECT);
    assert_int_equal(pkt.remaining_length, 0x23);
    const struct mqtt_connect *c = &pkt.u.connect;
    assert_int_equal(c->protocol_level, MQTT_PROTO_V311);
    assert_true(c->clean_session);
    assert_int_equal(c->keepalive, 60);
    assert_str(c->client_id, "cid", 3);
    assert_true(c->has_will);
    assert_int_equal(c->will_qos, 1);
    assert_true(c->will_retain);
    assert_str(c->will_topic, "w/t", 3);
    assert_str(c->will_payload, "\x00\xff", 2);
    assert_true(c->has_username);
    assert_str(c->username, "user", 4);
    assert_true(c->has_password);
    assert_str(c->password, "\x00\x01\x02", 3);
}

static void
test_connect_v31_fields(void **state)
{
    static const uint8_t buf[] = "\x10\x11" V3 "\x40\x01\x00\x00\x00\x00\x01p";
    struct mqtt_packet pkt;
    size_t used;

    assert_int_equal(mqtt_decode(buf, sizeof(buf) - 1, 0, &pkt, &used), RMQ_OK);
    const struct mqtt_connect *c = &pkt.u.connect;
    assert_int_equal(c->protocol_level, MQTT_PROTO_V31);
    assert_false(c->clean_session);
    assert_int_equal(c->keepalive, 256);
    assert_str(c->client_id, "", 0);
    assert_false(c->has_will);
    assert_int_equal(c->will_qos, 0);
    assert_false(c->has_username);
    assert_int_equal(c->username.len, 0);
    assert_true(c->has_password);
    assert_str(c->password, "p", 1);
}

static void
test_connect_unsupported_fields(void **state)
{
    static const uint8_t buf[] = "\x10\x0d\x00\x04MQTT\x05\x02\x00\x3c\x00\x00\x00\xc0\x00";
    struct mqtt_packet pkt;
    size_t used;

    /* The MQTT 5 CONNECT is 15 bytes; a PINGREQ follows it. */
    assert_int_equal(mqtt_decode(buf, sizeof(buf) - 1, 0, &pkt, &used), RMQ_UNSUPPORTED);
    assert_int_equal(pkt.type, MQTT_CONNECT);
    assert_int_equal(pkt.u.connect.protocol_level, 5);
    assert_int_equal(used, 15);
}

static void
test_publish_fields(void **state)
{
    static const uint8_t buf[] = "\x3d\x0a\x00\x03"
                                 "a/b\x12\x34xyz";
    struct mqtt_packet pkt;
    size_t used;

    assert_int_equal(mqtt_decode(buf, sizeof(buf) - 1, 0, &pkt, &used), RMQ_OK);
    assert_int_equal(used, 12);
    assert_int_equal(pkt.type, MQTT_PUBLISH);
    assert_int_equal(pkt.flags, 0xd);
    const struct mqtt_publish *p = &pkt.u.publish;
    assert_int_equal(p->qos, 2);
    assert_true(p->dup);
    assert_true(p->retain);
    assert_str(p->topic, "a/b", 3);
    assert_int_equal(p->packet_id, 0x1234);
    assert_int_equal(p->payload_len, 3);
    assert_ptr_equal(p->payload, buf + 9);
}

static void
test_publish_qos0_fields(void **state)
{
    static const uint8_t buf[] = "\x30\x05\x00\x03"
                                 "a/b";
    struct mqtt_packet pkt;
    size_t used;

    memset(&pkt, 0xa5, sizeof(pkt));
    assert_int_equal(mqtt_decode(buf, sizeof(buf) - 1, 0, &pkt, &used), RMQ_OK);
    assert_int_equal(pkt.u.publish.qos, 0);
    assert_false(pkt.u.publish.dup);
    assert_false(pkt.u.publish.retain);
    assert_int_equal(pkt.u.publish.packet_id, 0);
    assert_int_equal(pkt.u.publish.payload_len, 0);
}

/* A PUBLISH whose remaining length needs a 2-byte varint (205 = 0xcd 0x01). */
static size_t
make_big_publish(uint8_t *buf)
{
    buf[0] = 0x30;
    buf[1] = 0xcd;
    buf[2] = 0x01;
    memcpy(buf + 3,
           "\x00\x03"
           "a/b",
           5);
    for (size_t i = 0; i < 200; i++)
        buf[8 + i] = (uint8_t)i;
    return 208;
}

static void
test_publish_big_fields(void **state)
{
    uint8_t buf[208];
    struct mqtt_packet pkt;
    size_t used, len = make_big_publish(buf);

    assert_int_equal(mqtt_decode(buf, len, 0, &pkt, &used), RMQ_OK);
    assert_int_equal(used, 208);
    assert_int_equal(pkt.remaining_length, 205);
    assert_int_equal(pkt.u.publish.payload_len, 200);
    assert_ptr_equal(pkt.u.publish.payload, buf + 8);
}

static void
test_ack_fields(void **state)
{
    static const struct {
        const char *bytes;
        enum mqtt_type type;
    } acks[] = {
        {"\x40\x02\x12\x34", MQTT_PUBACK},   {"\x50\x02\x12\x34", MQTT_PUBREC},
        {"\x62\x02\x12\x34", MQTT_PUBREL},   {"\x70\x02\x12\x34", MQTT_PUBCOMP},
        {"\xb0\x02\x12\x34", MQTT_UNSUBACK},
    };
    struct mqtt_packet pkt;
    size_t used;

    for (size_t i = 0; i < N_ELEMS(acks); i++) {
        assert_int_equal(mqtt_decode((const uint8_t *)acks[i].bytes, 4, 0, &pkt, &used), RMQ_OK);
        assert_int_equal(pkt.type, acks[i].type);
        assert_int_equal(pkt.u.packet_id, 0x1234);
    }
    assert_int_equal(mqtt_decode(BYTES("\x20\x02\x01\x04"), 0, &pkt, &used), RMQ_OK);
    assert_true(pkt.u.connack.session_present);
    assert_int_equal(pkt.u.connack.return_code, MQTT_CONNACK_BAD_CREDENTIALS);
    assert_int_equal(mqtt_decode(BYTES("\xe0\x00"), 0, &pkt, &used), RMQ_OK);
    assert_int_equal(pkt.type, MQTT_DISCONNECT);
    assert_int_equal(pkt.remaining_length, 0);
}

struct entry {
    const char *topic;
    size_t len;
    uint8_t qos;
};

/* Decodes buf as a list packet and checks its entries one by one. */
static void
check_list(const uint8_t *buf, size_t len, uint16_t id, const struct entry *want, size_t n)
{
    struct mqtt_packet pkt;
    struct mqtt_str topic;
    uint8_t qos;
    size_t used, pos = 0;

    assert_int_equal(mqtt_decode(buf, len, 0, &pkt, &used), RMQ_OK);
    assert_int_equal(pkt.u.list.packet_id, id);
    assert_int_equal(pkt.u.list.count, n);
    for (size_t i = 0; i < n; i++) {
        assert_true(mqtt_topic_iter_next(pkt.type, &pkt.u.list, &pos, &topic, &qos));
        assert_str(topic, want[i].topic, want[i].len);
        assert_int_equal(qos, want[i].qos);
    }
    assert_false(mqtt_topic_iter_next(pkt.type, &pkt.u.list, &pos, &topic, &qos));
    assert_false(mqtt_topic_iter_next(pkt.type, &pkt.u.list, &pos, &topic, &qos));
}

static void
test_list_iteration(void **state)
{
    static const struct entry sub[] = {{"a", 1, 0}, {"b/#", 3, 2}, {"", 0, 1}};
    static const struct entry unsub[] = {{"a/b", 3, 0}, {"c/d", 3, 0}};
    static const struct entry suback[] = {{"", 0, 0}, {"", 0, 1}, {"", 0, 2}, {"", 0, 0x80}};

    check_list(BYTES("\x82\x0f\x00\x0a\x00\x01"
                     "a\x00\x00\x03"
                     "b/#\x02\x00\x00\x01"),
               10, sub, N_ELEMS(sub));
    check_list(BYTES("\xa2\x0c\x00\x01\x00\x03"
                     "a/b\x00\x03"
                     "c/d"),
               1, unsub, N_ELEMS(unsub));
    check_list(BYTES("\x90\x06\xbe\xef\x00\x01\x02\x80"), 0xbeef, suback, N_ELEMS(suback));
}

static void
test_iter_misuse(void **state)
{
    static const uint8_t entries[] = "\x00\x05"
                                     "ab"; /* length beyond the data */
    struct mqtt_topic_list list = {.packet_id = 1, .count = 1, .data = entries, .len = 4};
    struct mqtt_str topic;
    uint8_t qos;
    size_t pos = 0;

    assert_false(mqtt_topic_iter_next(MQTT_SUBSCRIBE, &list, &pos, &topic, &qos));
    assert_false(mqtt_topic_iter_next(MQTT_PUBLISH, &list, &pos, &topic, &qos));
    list.len = 2;
    list.data = (const uint8_t *)"\x00\x00";
    assert_false(mqtt_topic_iter_next(MQTT_SUBSCRIBE, &list, &pos, &topic, &qos)); /* no qos */
    assert_true(mqtt_topic_iter_next(MQTT_UNSUBSCRIBE, &list, &pos, &topic, &qos));
    assert_int_equal(pos, 2);
}

/* A SUBACK with n codes in a static buffer (count is a 16-bit field). */
static size_t
make_suback(uint8_t *buf, size_t n)
{
    uint32_t remaining = (uint32_t)(2 + n);
    buf[0] = 0x90;
    size_t header = 1 + mqtt_encode_varint(buf + 1, remaining);
    buf[header] = 0;
    buf[header + 1] = 1;
    memset(buf + header + 2, 1, n);
    return header + remaining;
}

static void
test_list_count_limit(void **state)
{
    static uint8_t buf[70000];
    struct mqtt_packet pkt;
    size_t used, len;

    len = make_suback(buf, 65535);
    assert_int_equal(mqtt_decode(buf, len, 0, &pkt, &used), RMQ_OK);
    assert_int_equal(pkt.u.list.count, 65535);
    len = make_suback(buf, 65536);
    assert_int_equal(mqtt_decode(buf, len, 0, &pkt, &used), RMQ_LIMIT);
    assert_int_equal(used, 0);
}

/* ---- streaming and limits ---- */

/* Feeds buf one byte more at a time: AGAIN with the promised size once the
 * fixed header (header_len bytes) is in, then OK at the full length. */
static void
check_bytewise(const uint8_t *buf, size_t len, size_t header_len)
{
    struct mqtt_packet pkt;
    size_t used;

    for (size_t k = 0; k < len; k++) {
        if (mqtt_decode(buf, k, 0, &pkt, &used) != RMQ_AGAIN)
            fail_msg("prefix of %zu/%zu bytes did not give AGAIN", k, len);
        if (used != (k >= header_len ? len : 0))
            fail_msg("prefix of %zu/%zu bytes: consumed %zu", k, len, used);
    }
    assert_int_equal(mqtt_decode(buf, len, 0, &pkt, &used), RMQ_OK);
    assert_int_equal(used, len);
}

static void
test_bytewise(void **state)
{
    uint8_t big[208];
    size_t big_len = make_big_publish(big);

    check_bytewise(full_connect, FULL_CONNECT_LEN, 2);
    check_bytewise(big, big_len, 3);
    check_bytewise(BYTES("\x82\x0c\x00\x0a\x00\x01"
                         "a\x00\x00\x03"
                         "b/#\x02"),
                   2);
    check_bytewise(BYTES("\xa2\x07\x00\x01\x00\x03"
                         "a/b"),
                   2);
    check_bytewise(BYTES("\x62\x02\x00\x01"), 2);
    check_bytewise(BYTES("\xc0\x00"), 2);
    check_bytewise(BYTES("\xc0\x80\x80\x00"), 4);
    check_bytewise(BYTES("\x34\x85\x80\x00\x00\x01"
                         "a\x00\x07"),
                   4);
}

static void
test_stream_two_packets(void **state)
{
    static const uint8_t buf[] = "\x30\x05\x00\x03"
                                 "a/b\xc0\x00\x40";
    struct mqtt_packet pkt;
    size_t used, off = 0;

    assert_int_equal(mqtt_decode(buf, sizeof(buf) - 1, 0, &pkt, &used), RMQ_OK);
    assert_int_equal(pkt.type, MQTT_PUBLISH);
    assert_int_equal(used, 7);
    off += used;
    assert_int_equal(mqtt_decode(buf + off, sizeof(buf) - 1 - off, 0, &pkt, &used), RMQ_OK);
    assert_int_equal(pkt.type, MQTT_PINGREQ);
    off += used;
    assert_int_equal(mqtt_decode(buf + off, sizeof(buf) - 1 - off, 0, &pkt, &used), RMQ_AGAIN);
    assert_int_equal(used, 0);
}

static void
test_limit(void **state)
{
    uint8_t big[208];
    struct mqtt_packet pkt;
    size_t used, len = make_big_publish(big);

    assert_int_equal(mqtt_decode(big, len, 207, &pkt, &used), RMQ_LIMIT);
    assert_int_equal(used, 0);
    assert_int_equal(mqtt_decode(big, len, 208, &pkt, &used), RMQ_OK);
    assert_int_equal(mqtt_decode(big, len, 0, &pkt, &used), RMQ_OK);
    /* From the fixed header alone, before the body arrives. */
    assert_int_equal(mqtt_decode(big, 3, 207, &pkt, &used), RMQ_LIMIT);
    assert_int_equal(mqtt_decode(big, 3, 208, &pkt, &used), RMQ_AGAIN);
    assert_int_equal(used, 208);
    assert_int_equal(mqtt_decode(big, 2, 10, &pkt, &used), RMQ_AGAIN); /* varint cut */
    assert_int_equal(mqtt_decode(BYTES("\x30\xff\xff\xff\x7f"), 1u << 20, &pkt, &used), RMQ_LIMIT);
    assert_int_equal(mqtt_decode(BYTES("\xc0\x00"), 1, &pkt, &used), RMQ_LIMIT);
    assert_int_equal(mqtt_decode(BYTES("\xc0\x00"), 2, &pkt, &used), RMQ_OK);
}

/* ---- encoders ---- */

static void
test_varint(void **state)
{
    static const struct {
        uint32_t value;
        const char *bytes;
        size_t len;
    } cases[] = {
        {0, "\x00", 1},
        {127, "\x7f", 1},
        {128, "\x80\x01", 2},
        {16383, "\xff\x7f", 2},
        {16384, "\x80\x80\x01", 3},
        {2097151, "\xff\xff\x7f", 3},
        {2097152, "\x80\x80\x80\x01", 4},
        {MQTT_MAX_REMAINING_LENGTH, "\xff\xff\xff\x7f", 4},
    };
    uint8_t out[4], hdr[5];
    struct mqtt_packet pkt;
    size_t used;

    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        assert_int_equal(mqtt_encode_varint(out, cases[i].value), cases[i].len);
        assert_memory_equal(out, cases[i].bytes, cases[i].len);
        /* The decoder reads it back: a bare SUBSCRIBE header promises it. */
        hdr[0] = 0x82;
        memcpy(hdr + 1, out, cases[i].len);
        if (cases[i].value == 0)
            continue;
        assert_int_equal(mqtt_decode(hdr, 1 + cases[i].len, 0, &pkt, &used), RMQ_AGAIN);
        assert_int_equal(used, 1 + cases[i].len + cases[i].value);
    }
    assert_int_equal(mqtt_encode_varint(out, MQTT_MAX_REMAINING_LENGTH + 1), 0);
}

static void
test_encode_small(void **state)
{
    static const struct {
        enum mqtt_type type;
        const char *bytes;
    } acks[] = {
        {MQTT_PUBACK, "\x40\x02\x12\x34"},   {MQTT_PUBREC, "\x50\x02\x12\x34"},
        {MQTT_PUBREL, "\x62\x02\x12\x34"},   {MQTT_PUBCOMP, "\x70\x02\x12\x34"},
        {MQTT_UNSUBACK, "\xb0\x02\x12\x34"},
    };
    static const enum mqtt_type not_acks[] = {
        MQTT_CONNECT, MQTT_CONNACK, MQTT_PUBLISH, MQTT_SUBACK, MQTT_PINGREQ, 0, 15};
    uint8_t out[4];

    for (size_t i = 0; i < N_ELEMS(acks); i++) {
        assert_int_equal(mqtt_encode_ack(out, acks[i].type, 0x1234), 4);
        assert_memory_equal(out, acks[i].bytes, 4);
    }
    for (size_t i = 0; i < N_ELEMS(not_acks); i++)
        assert_int_equal(mqtt_encode_ack(out, not_acks[i], 1), 0);
    assert_int_equal(mqtt_encode_connack(out, true, 0), 4);
    assert_memory_equal(out, "\x20\x02\x01\x00", 4);
    assert_int_equal(mqtt_encode_connack(out, false, MQTT_CONNACK_NOT_AUTHORIZED), 4);
    assert_memory_equal(out, "\x20\x02\x00\x05", 4);
    assert_int_equal(mqtt_encode_empty(out, MQTT_PINGREQ), 2);
    assert_memory_equal(out, "\xc0\x00", 2);
    assert_int_equal(mqtt_encode_empty(out, MQTT_PINGRESP), 2);
    assert_memory_equal(out, "\xd0\x00", 2);
    assert_int_equal(mqtt_encode_empty(out, MQTT_DISCONNECT), 2);
    assert_memory_equal(out, "\xe0\x00", 2);
    assert_int_equal(mqtt_encode_empty(out, MQTT_PUBACK), 0);
    assert_int_equal(mqtt_encode_empty(out, 0), 0);
}

static void
test_encode_suback(void **state)
{
    static const uint8_t codes[] = {0, 1, 2, MQTT_SUBACK_FAILURE};
    uint8_t out[MQTT_FIXED_HEADER_MAX + 2 + 300], many[300];
    struct mqtt_packet pkt;
    size_t used;

    assert_int_equal(mqtt_encode_suback(out, 7, codes, 4), 8);
    assert_memory_equal(out, "\x90\x06\x00\x07\x00\x01\x02\x80", 8);
    memset(many, 2, sizeof(many));
    size_t n = mqtt_encode_suback(out, 9, many, sizeof(many));
    assert_int_equal(n, 3 + 2 + 300);
    assert_memory_equal(out, "\x90\xae\x02\x00\x09", 5);
    assert_int_equal(mqtt_decode(out, n, 0, &pkt, &used), RMQ_OK);
    assert_int_equal(pkt.u.list.count, 300);
}

static void
test_encode_publish_header(void **state)
{
    uint8_t out[MQTT_PUBLISH_HEADER_OVERHEAD + 3];
    const uint8_t *topic = (const uint8_t *)"a/b";

    assert_int_equal(mqtt_encode_publish_header(out, 0, false, false, topic, 3, 99, 2), 7);
    assert_memory_equal(out,
                        "\x30\x07\x00\x03"
                        "a/b",
                        7);
    assert_int_equal(mqtt_encode_publish_header(out, 1, true, true, topic, 3, 10, 2), 9);
    assert_memory_equal(out,
                        "\x3b\x09\x00\x03"
                        "a/b\x00\x0a",
                        9);
    assert_int_equal(mqtt_encode_publish_header(out, 2, false, false, topic, 3, 0x102, 200), 10);
    assert_memory_equal(out,
                        "\x34\xcf\x01\x00\x03"
                        "a/b\x01\x02",
                        10);
    assert_int_equal(mqtt_encode_publish_header(out, 3, false, false, topic, 3, 1, 0), 0);
    assert_int_equal(mqtt_encode_publish_header(out, 0, false, false, topic, 3, 0,
                                                MQTT_MAX_REMAINING_LENGTH - 5),
                     5 + 5);
    assert_int_equal(mqtt_encode_publish_header(out, 0, false, false, topic, 3, 0,
                                                MQTT_MAX_REMAINING_LENGTH - 4),
                     0);
}

/* mqtt_publish_size() equals header + payload around every varint step. */
static void
test_publish_size(void **state)
{
    static const uint32_t remaining[] = {5,     127,     128,     16383,
                                         16384, 2097151, 2097152, MQTT_MAX_REMAINING_LENGTH};
    uint8_t out[MQTT_PUBLISH_HEADER_OVERHEAD + 3];
    const uint8_t *topic = (const uint8_t *)"a/b";

    for (uint8_t qos = 0; qos <= 2; qos++) {
        for (size_t i = 0; i < N_ELEMS(remaining); i++) {
            if (remaining[i] < 5u + (qos ? 2 : 0))
                continue;
            uint32_t payload = remaining[i] - 5 - (qos ? 2 : 0);
            size_t header =
                mqtt_encode_publish_header(out, qos, false, false, topic, 3, 1, payload);
            assert_true(header > 0);
            assert_int_equal(mqtt_publish_size(qos, 3, payload), header + payload);
        }
    }
    assert_true(mqtt_publish_size(0, 3, UINT32_MAX) > MQTT_MAX_REMAINING_LENGTH);
}

static const struct mqtt_str filters[] = {
    {(const uint8_t *)"a/b", 3}, {(const uint8_t *)"c/#", 3}, {(const uint8_t *)"", 0}};
static const uint8_t filter_qos[] = {0, 2, 1};

static void
test_encode_topic_list(void **state)
{
    uint8_t out[64];

    assert_int_equal(mqtt_topic_list_size(MQTT_SUBSCRIBE, filters, 3), 2 + 2 + 6 + 6 + 3);
    assert_int_equal(mqtt_encode_topic_list(out, MQTT_SUBSCRIBE, 5, filters, filter_qos, 3), 19);
    assert_memory_equal(out,
                        "\x82\x11\x00\x05\x00\x03"
                        "a/b\x00\x00\x03"
                        "c/#\x02\x00\x00\x01",
                        19);
    assert_int_equal(mqtt_topic_list_size(MQTT_UNSUBSCRIBE, filters, 2), 14);
    assert_int_equal(mqtt_encode_topic_list(out, MQTT_UNSUBSCRIBE, 6, filters, NULL, 2), 14);
    assert_memory_equal(out,
                        "\xa2\x0c\x00\x06\x00\x03"
                        "a/b\x00\x03"
                        "c/#",
                        14);
    assert_int_equal(mqtt_topic_list_size(MQTT_SUBACK, filters, 2), 0);
    assert_int_equal(mqtt_encode_topic_list(out, MQTT_PUBLISH, 6, filters, NULL, 2), 0);
}

static struct mqtt_connect
full_connect_fields(void)
{
    struct mqtt_connect c = {
        .protocol_level = MQTT_PROTO_V311,
        .clean_session = true,
        .keepalive = 60,
        .client_id = {(const uint8_t *)"cid", 3},
        .has_will = true,
        .will_qos = 1,
        .will_retain = true,
        .will_topic = {(const uint8_t *)"w/t", 3},
        .will_payload = {(const uint8_t *)"\x00\xff", 2},
        .has_username = true,
        .username = {(const uint8_t *)"user", 4},
        .has_password = true,
        .password = {(const uint8_t *)"\x00\x01\x02", 3},
    };
    return c;
}

static void
test_encode_connect(void **state)
{
    struct mqtt_connect c = full_connect_fields();
    uint8_t out[64];

    assert_int_equal(mqtt_connect_size(&c), FULL_CONNECT_LEN);
    assert_int_equal(mqtt_encode_connect(out, &c), FULL_CONNECT_LEN);
    assert_memory_equal(out, full_connect, FULL_CONNECT_LEN);

    struct mqtt_connect v3 = {.protocol_level = MQTT_PROTO_V31,
                              .clean_session = true,
                              .keepalive = 60,
                              .will_qos = 2,
                              .will_retain = true};
    assert_int_equal(mqtt_encode_connect(out, &v3), 16);
    /* Will QoS/retain are not written without a will. */
    assert_memory_equal(out, "\x10\x0e" V3 "\x02\x00\x3c\x00\x00", 16);
}

/* ---- round trips ---- */

static void
assert_same_str(struct mqtt_str a, struct mqtt_str b)
{
    assert_int_equal(a.len, b.len);
    if (a.len)
        assert_memory_equal(a.data, b.data, a.len);
}

static void
assert_same_connect(const struct mqtt_connect *a, const struct mqtt_connect *b)
{
    assert_int_equal(a->protocol_level, b->protocol_level);
    assert_int_equal(a->clean_session, b->clean_session);
    assert_int_equal(a->keepalive, b->keepalive);
    assert_same_str(a->client_id, b->client_id);
    assert_int_equal(a->has_will, b->has_will);
    assert_int_equal(a->has_username, b->has_username);
    assert_int_equal(a->has_password, b->has_password);
    if (a->has_will) {
        assert_int_equal(a->will_qos, b->will_qos);
        assert_int_equal(a->will_retain, b->will_retain);
        assert_same_str(a->will_topic, b->will_topic);
        assert_same_str(a->will_payload, b->will_payload);
    }
    if (a->has_username)
        assert_same_str(a->username, b->username);
    if (a->has_password)
        assert_same_str(a->password, b->password);
}

/* Every combination of level and connect flags. */
static void
test_roundtrip_connect(void **state)
{
    struct mqtt_connect c = full_connect_fields();
    struct mqtt_packet pkt;
    uint8_t out[64];
    size_t used;

    for (unsigned bits = 0; bits < 256; bits++) {
        c.protocol_level = bits & 1 ? MQTT_PROTO_V31 : MQTT_PROTO_V311;
        c.clean_session = bits & 2;
        c.has_will = bits & 4;
        c.will_qos = (bits >> 3) % 3;
        c.will_retain = bits & 32;
        c.has_username = bits & 64;
        c.has_password = bits & 128;
        size_t n = mqtt_encode_connect(out, &c);
        assert_int_equal(n, mqtt_connect_size(&c));
        enum rmq_status st = mqtt_decode(out, n, 0, &pkt, &used);
        if (c.has_password && !c.has_username && c.protocol_level == MQTT_PROTO_V311) {
            assert_int_equal(st, RMQ_PROTOCOL);
            continue;
        }
        assert_int_equal(st, RMQ_OK);
        assert_int_equal(used, n);
        assert_same_connect(&c, &pkt.u.connect);
    }
    c.protocol_level = 5;
    assert_int_equal(mqtt_decode(out, mqtt_encode_connect(out, &c), 0, &pkt, &used),
                     RMQ_UNSUPPORTED);
    assert_int_equal(pkt.u.connect.protocol_level, 5);
}

static void
test_roundtrip_publish(void **state)
{
    static const uint32_t sizes[] = {0, 1, 120, 121, 122, 16000, 20000};
    static uint8_t buf[MQTT_PUBLISH_HEADER_OVERHEAD + 5 + 20000];
    const uint8_t *topic = (const uint8_t *)"x/\xc3\xa9";
    struct mqtt_packet pkt;
    size_t used;

    for (unsigned bits = 0; bits < 12; bits++) {
        uint8_t qos = bits % 3;
        bool dup = bits & 4, retain = bits & 8;
        for (size_t i = 0; i < N_ELEMS(sizes); i++) {
            size_t h = mqtt_encode_publish_header(buf, qos, dup, retain, topic, 4, 77, sizes[i]);
            memset(buf + h, 'p', sizes[i]);
            assert_int_equal(h + sizes[i], mqtt_publish_size(qos, 4, sizes[i]));
            assert_int_equal(mqtt_decode(buf, h + sizes[i], 0, &pkt, &used), RMQ_OK);
            assert_int_equal(used, h + sizes[i]);
            assert_int_equal(pkt.u.publish.qos, qos);
            assert_int_equal(pkt.u.publish.dup, dup);
            assert_int_equal(pkt.u.publish.retain, retain);
            assert_str(pkt.u.publish.topic, (const char *)topic, 4);
            assert_int_equal(pkt.u.publish.packet_id, qos ? 77 : 0);
            assert_int_equal(pkt.u.publish.payload_len, sizes[i]);
            assert_ptr_equal(pkt.u.publish.payload, buf + h);
        }
    }
}

static void
test_roundtrip_lists(void **state)
{
    static const enum mqtt_type types[] = {MQTT_SUBSCRIBE, MQTT_UNSUBSCRIBE};
    struct mqtt_packet pkt;
    struct mqtt_str topic;
    uint8_t out[64], qos;
    size_t used;

    for (size_t t = 0; t < N_ELEMS(types); t++) {
        size_t n = mqtt_encode_topic_list(out, types[t], 0xabcd, filters, filter_qos, 3);
        assert_int_equal(n, mqtt_topic_list_size(types[t], filters, 3));
        assert_int_equal(mqtt_decode(out, n, 0, &pkt, &used), RMQ_OK);
        assert_int_equal(pkt.type, types[t]);
        assert_int_equal(pkt.u.list.packet_id, 0xabcd);
        assert_int_equal(pkt.u.list.count, 3);
        size_t pos = 0;
        for (size_t i = 0; i < 3; i++) {
            assert_true(mqtt_topic_iter_next(types[t], &pkt.u.list, &pos, &topic, &qos));
            assert_same_str(topic, filters[i]);
            assert_int_equal(qos, types[t] == MQTT_SUBSCRIBE ? filter_qos[i] : 0);
        }
        assert_false(mqtt_topic_iter_next(types[t], &pkt.u.list, &pos, &topic, &qos));
    }
}

static void
test_type_names(void **state)
{
    assert_string_equal(mqtt_type_name(MQTT_CONNECT), "CONNECT");
    assert_string_equal(mqtt_type_name(MQTT_PUBREL), "PUBREL");
    assert_string_equal(mqtt_type_name(MQTT_UNSUBSCRIBE), "UNSUBSCRIBE");
    assert_string_equal(mqtt_type_name(MQTT_DISCONNECT), "DISCONNECT");
    assert_string_equal(mqtt_type_name(0), "UNKNOWN");
    assert_string_equal(mqtt_type_name(15), "UNKNOWN");
    assert_string_equal(mqtt_type_name(16), "UNKNOWN");
    assert_string_equal(mqtt_type_name(-1), "UNKNOWN");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decode_connect_table),
        cmocka_unit_test(test_decode_ack_table),
        cmocka_unit_test(test_decode_publish_table),
        cmocka_unit_test(test_decode_list_table),
        cmocka_unit_test(test_decode_header_table),
        cmocka_unit_test(test_connect_fields),
        cmocka_unit_test(test_connect_v31_fields),
        cmocka_unit_test(test_connect_unsupported_fields),
        cmocka_unit_test(test_publish_fields),
        cmocka_unit_test(test_publish_qos0_fields),
        cmocka_unit_test(test_publish_big_fields),
        cmocka_unit_test(test_ack_fields),
        cmocka_unit_test(test_list_iteration),
        cmocka_unit_test(test_iter_misuse),
        cmocka_unit_test(test_list_count_limit),
        cmocka_unit_test(test_bytewise),
        cmocka_unit_test(test_stream_two_packets),
        cmocka_unit_test(test_limit),
        cmocka_unit_test(test_varint),
        cmocka_unit_test(test_encode_small),
        cmocka_unit_test(test_encode_suback),
        cmocka_unit_test(test_encode_publish_header),
        cmocka_unit_test(test_publish_size),
        cmocka_unit_test(test_encode_topic_list),
        cmocka_unit_test(test_encode_connect),
        cmocka_unit_test(test_roundtrip_connect),
        cmocka_unit_test(test_roundtrip_publish),
        cmocka_unit_test(test_roundtrip_lists),
        cmocka_unit_test(test_type_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
