/* libFuzzer target for broker/packet_codec.c and broker/topic.c.
 *
 * The input is a byte stream as a broker would read it from a socket: packets
 * are decoded and consumed one after another until the decoder asks for more
 * bytes or reports an error. Every decoded packet is checked for properties
 * the contract promises, and the process aborts on any violation:
 *  - every strict prefix decodes to RMQ_AGAIN with the promised size, and a
 *    max_packet_size one byte short gives RMQ_LIMIT;
 *  - re-encoding the packet with the encoders and decoding that again gives
 *    the same fields, and the same bytes after the fixed header;
 *  - topic lists walk to exactly `count` entries;
 *  - the UTF-8 validator, topic validity and topic matching agree with slow
 *    reference versions written here.
 * Single-threaded; allocates only for re-encodings and frees them. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../unit/utf8_reference.h"
#include "broker/packet_codec.h"
#include "broker/topic.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);               \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#define MAX_TOPICS 32

/* Topic strings seen in one input, checked pairwise at the end. */
struct topic_set {
    struct mqtt_str s[MAX_TOPICS];
    size_t n;
};

static void *
xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    CHECK(p != NULL);
    return p;
}

static bool
same_str(struct mqtt_str a, struct mqtt_str b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.data, b.data, a.len) == 0);
}

/* ---- slow references ---- */

/* Level cursor: the next '/'-separated level of s after *pos. */
static bool
next_level(const uint8_t *s, size_t len, size_t *pos, struct mqtt_str *level)
{
    if (*pos > len)
        return false;
    size_t end = *pos;
    while (end < len && s[end] != '/')
        end++;
    level->data = s + *pos;
    level->len = (uint16_t)(end - *pos);
    *pos = end + 1; /* past the '/', or len + 1 at the end */
    return true;
}

static bool
is_level(struct mqtt_str level, char c)
{
    return level.len == 1 && level.data[0] == (uint8_t)c;
}

static bool
ref_filter_valid(const uint8_t *f, size_t len)
{
    struct mqtt_str level;
    size_t pos = 0;

    if (len == 0 || len > 65535)
        return false;
    while (next_level(f, len, &pos, &level)) {
        bool wild = memchr(level.data, '+', level.len) || memchr(level.data, '#', level.len);
        if (wild && !is_level(level, '+') && !is_level(level, '#'))
            return false;
        if (is_level(level, '#') && pos <= len)
            return false; /* '#' not last */
    }
    return true;
}

static bool
ref_matches(const uint8_t *f, size_t flen, const uint8_t *n, size_t nlen)
{
    struct mqtt_str fl, nl;
    size_t fpos = 0, npos = 0;

    if (n[0] == '$' && (f[0] == '+' || f[0] == '#'))
        return false;
    while (next_level(f, flen, &fpos, &fl)) {
        if (is_level(fl, '#'))
            return true;
        if (!next_level(n, nlen, &npos, &nl))
            return false;
        if (!is_level(fl, '+') && !same_str(fl, nl))
            return false;
    }
    return npos > nlen;
}

/* ---- topics ---- */

static void
check_topic(struct topic_set *set, struct mqtt_str t)
{
    const char *s = (const char *)t.data;

    CHECK(ref_utf8_valid(t.data, t.len)); /* the decoder validated it */
    bool name = topic_name_valid(s, t.len), filter = topic_filter_valid(s, t.len);
    CHECK(name == (t.len > 0 && !memchr(s, '+', t.len) && !memchr(s, '#', t.len)));
    CHECK(filter == ref_filter_valid(t.data, t.len));
    if (name)
        CHECK(filter && topic_matches(s, t.len, s, t.len));
    if (set->n < MAX_TOPICS)
        set->s[set->n++] = t;
}

static void
check_topic_pairs(const struct topic_set *set)
{
    for (size_t i = 0; i < set->n; i++) {
        struct mqtt_str f = set->s[i];
        if (!topic_filter_valid((const char *)f.data, f.len))
            continue;
        for (size_t j = 0; j < set->n; j++) {
            struct mqtt_str n = set->s[j];
            if (!topic_name_valid((const char *)n.data, n.len))
                continue;
            bool got = topic_matches((const char *)f.data, f.len, (const char *)n.data, n.len);
            CHECK(got == ref_matches(f.data, f.len, n.data, n.len));
        }
    }
}

/* ---- round trips ---- */

/* Decodes the re-encoding enc: it must give the packet back, with the same
 * bytes after the fixed header as the original and a minimal varint. */
static void
decode_reencoding(const uint8_t *orig, size_t orig_len, const struct mqtt_packet *pkt,
                  const uint8_t *enc, size_t enc_len, struct mqtt_packet *out)
{
    size_t used, rl = pkt->remaining_length;
    uint8_t varint[4];

    CHECK(mqtt_decode(enc, enc_len, 0, out, &used) == RMQ_OK);
    CHECK(used == enc_len);
    CHECK(out->type == pkt->type && out->flags == pkt->flags);
    CHECK(out->remaining_length == rl);
    CHECK(enc[0] == orig[0]);
    CHECK(enc_len - rl == 1u + mqtt_encode_varint(varint, (uint32_t)rl));
    CHECK(memcmp(orig + (orig_len - rl), enc + (enc_len - rl), rl) == 0);
}

static void
roundtrip_connect(const uint8_t *buf, size_t len, const struct mqtt_packet *pkt)
{
    const struct mqtt_connect *a = &pkt->u.connect, *b;
    struct mqtt_packet again;
    size_t n = mqtt_connect_size(a);
    uint8_t *enc = xmalloc(n);

    CHECK(mqtt_encode_connect(enc, a) == n);
    decode_reencoding(buf, len, pkt, enc, n, &again);
    b = &again.u.connect;
    CHECK(a->protocol_level == b->protocol_level && a->clean_session == b->clean_session);
    CHECK(a->keepalive == b->keepalive && same_str(a->client_id, b->client_id));
    CHECK(a->has_will == b->has_will && a->will_qos == b->will_qos);
    CHECK(a->will_retain == b->will_retain && same_str(a->will_topic, b->will_topic));
    CHECK(same_str(a->will_payload, b->will_payload));
    CHECK(a->has_username == b->has_username && same_str(a->username, b->username));
    CHECK(a->has_password == b->has_password && same_str(a->password, b->password));
    free(enc);
}

static void
roundtrip_publish(const uint8_t *buf, size_t len, const struct mqtt_packet *pkt)
{
    const struct mqtt_publish *a = &pkt->u.publish, *b;
    struct mqtt_packet again;
    uint8_t *header = xmalloc((size_t)MQTT_PUBLISH_HEADER_OVERHEAD + a->topic.len);

    size_t h = mqtt_encode_publish_header(header, a->qos, a->dup, a->retain, a->topic.data,
                                          a->topic.len, a->packet_id, a->payload_len);
    CHECK(h > 0 && h <= (size_t)MQTT_PUBLISH_HEADER_OVERHEAD + a->topic.len);
    CHECK(mqtt_publish_size(a->qos, a->topic.len, a->payload_len) == h + a->payload_len);
    uint8_t *enc = xmalloc(h + a->payload_len);
    memcpy(enc, header, h);
    if (a->payload_len)
        memcpy(enc + h, a->payload, a->payload_len);
    decode_reencoding(buf, len, pkt, enc, h + a->payload_len, &again);
    b = &again.u.publish;
    CHECK(a->qos == b->qos && a->dup == b->dup && a->retain == b->retain);
    CHECK(same_str(a->topic, b->topic) && a->packet_id == b->packet_id);
    CHECK(a->payload_len == b->payload_len);
    CHECK(a->payload_len == 0 || memcmp(a->payload, b->payload, a->payload_len) == 0);
    free(enc);
    free(header);
}

/* Walks a list to the end; fills the arrays when given. Returns the count. */
static size_t
walk_list(const struct mqtt_packet *pkt, struct mqtt_str *topics, uint8_t *codes,
          struct topic_set *set)
{
    struct mqtt_str topic;
    uint8_t qos;
    size_t pos = 0, n = 0;

    while (mqtt_topic_iter_next(pkt->type, &pkt->u.list, &pos, &topic, &qos)) {
        CHECK(n < pkt->u.list.count);
        if (pkt->type == MQTT_SUBACK)
            CHECK(topic.len == 0 && (qos <= 2 || qos == MQTT_SUBACK_FAILURE));
        else
            CHECK(qos <= 2 && (pkt->type == MQTT_SUBSCRIBE || qos == 0));
        if (set && pkt->type != MQTT_SUBACK)
            check_topic(set, topic);
        if (topics)
            topics[n] = topic;
        if (codes)
            codes[n] = qos;
        n++;
    }
    CHECK(pos == pkt->u.list.len);
    CHECK(n == pkt->u.list.count);
    return n;
}

static void
compare_lists(const struct mqtt_packet *a, const struct mqtt_packet *b)
{
    size_t n = a->u.list.count;
    struct mqtt_str *ta = xmalloc(n * sizeof(*ta)), *tb = xmalloc(n * sizeof(*tb));
    uint8_t *ca = xmalloc(n), *cb = xmalloc(n);

    CHECK(a->u.list.packet_id == b->u.list.packet_id && b->u.list.count == n);
    walk_list(a, ta, ca, NULL);
    walk_list(b, tb, cb, NULL);
    for (size_t i = 0; i < n; i++)
        CHECK(same_str(ta[i], tb[i]) && ca[i] == cb[i]);
    free(ta);
    free(tb);
    free(ca);
    free(cb);
}

static void
roundtrip_list(const uint8_t *buf, size_t len, const struct mqtt_packet *pkt)
{
    size_t n = pkt->u.list.count, enc_len;
    struct mqtt_str *topics = xmalloc(n * sizeof(*topics));
    uint8_t *codes = xmalloc(n), *enc;
    struct mqtt_packet again;

    walk_list(pkt, topics, codes, NULL);
    if (pkt->type == MQTT_SUBACK) {
        enc = xmalloc(MQTT_FIXED_HEADER_MAX + 2 + n);
        enc_len = mqtt_encode_suback(enc, pkt->u.list.packet_id, codes, n);
        CHECK(enc_len > 0 && enc_len <= MQTT_FIXED_HEADER_MAX + 2 + n);
    } else {
        size_t cap = mqtt_topic_list_size(pkt->type, topics, n);
        enc = xmalloc(cap);
        enc_len = mqtt_encode_topic_list(enc, pkt->type, pkt->u.list.packet_id, topics,
                                         pkt->type == MQTT_SUBSCRIBE ? codes : NULL, n);
        CHECK(enc_len == cap);
    }
    decode_reencoding(buf, len, pkt, enc, enc_len, &again);
    compare_lists(pkt, &again);
    free(enc);
    free(codes);
    free(topics);
}

static void
roundtrip_small(const uint8_t *buf, size_t len, const struct mqtt_packet *pkt)
{
    struct mqtt_packet again;
    uint8_t enc[4];
    size_t n;

    if (pkt->type == MQTT_CONNACK)
        n = mqtt_encode_connack(enc, pkt->u.connack.session_present, pkt->u.connack.return_code);
    else if (pkt->remaining_length == 2)
        n = mqtt_encode_ack(enc, pkt->type, pkt->u.packet_id);
    else
        n = mqtt_encode_empty(enc, pkt->type);
    CHECK(n == 2 + pkt->remaining_length);
    decode_reencoding(buf, len, pkt, enc, n, &again);
    if (pkt->type == MQTT_CONNACK)
        CHECK(again.u.connack.session_present == pkt->u.connack.session_present &&
              again.u.connack.return_code == pkt->u.connack.return_code);
    else if (pkt->remaining_length == 2)
        CHECK(again.u.packet_id == pkt->u.packet_id);
}

typedef void (*roundtrip_fn)(const uint8_t *buf, size_t len, const struct mqtt_packet *pkt);

static const roundtrip_fn roundtrips[16] = {
    [MQTT_CONNECT] = roundtrip_connect, [MQTT_CONNACK] = roundtrip_small,
    [MQTT_PUBLISH] = roundtrip_publish, [MQTT_PUBACK] = roundtrip_small,
    [MQTT_PUBREC] = roundtrip_small,    [MQTT_PUBREL] = roundtrip_small,
    [MQTT_PUBCOMP] = roundtrip_small,   [MQTT_SUBSCRIBE] = roundtrip_list,
    [MQTT_SUBACK] = roundtrip_list,     [MQTT_UNSUBSCRIBE] = roundtrip_list,
    [MQTT_UNSUBACK] = roundtrip_small,  [MQTT_PINGREQ] = roundtrip_small,
    [MQTT_PINGRESP] = roundtrip_small,  [MQTT_DISCONNECT] = roundtrip_small,
};

/* ---- per-packet checks ---- */

/* Strict prefixes give AGAIN (with the total once the fixed header is in);
 * a limit one byte short gives LIMIT, even from the fixed header alone. */
static void
check_prefixes_and_limit(const uint8_t *buf, size_t len, const struct mqtt_packet *pkt)
{
    size_t header = len - pkt->remaining_length, used;
    struct mqtt_packet tmp;

    CHECK(mqtt_decode(buf, len - 1, 0, &tmp, &used) == RMQ_AGAIN);
    CHECK(used == (len - 1 >= header ? len : 0));
    CHECK(mqtt_decode(buf, header - 1, 0, &tmp, &used) == RMQ_AGAIN && used == 0);
    if (header < len)
        CHECK(mqtt_decode(buf, header, 0, &tmp, &used) == RMQ_AGAIN && used == len);
    CHECK(mqtt_decode(buf, len, (uint32_t)len - 1, &tmp, &used) == RMQ_LIMIT && used == 0);
    CHECK(mqtt_decode(buf, header, (uint32_t)len - 1, &tmp, &used) == RMQ_LIMIT);
    CHECK(mqtt_decode(buf, len, (uint32_t)len, &tmp, &used) == RMQ_OK && used == len);
}

static void
check_packet(const uint8_t *buf, size_t len, const struct mqtt_packet *pkt, struct topic_set *set)
{
    CHECK(len >= 2 && len <= MQTT_FIXED_HEADER_MAX + (size_t)pkt->remaining_length);
    CHECK(pkt->type == buf[0] >> 4 && pkt->flags == (buf[0] & 0x0f));
    CHECK(strcmp(mqtt_type_name(pkt->type), "UNKNOWN") != 0);
    check_prefixes_and_limit(buf, len, pkt);
    if (pkt->type == MQTT_PUBLISH) {
        check_topic(set, pkt->u.publish.topic);
        CHECK((pkt->u.publish.qos == 0) == (pkt->u.publish.packet_id == 0));
    } else if (pkt->type == MQTT_CONNECT && pkt->u.connect.has_will) {
        check_topic(set, pkt->u.connect.will_topic);
    } else if (pkt->type == MQTT_SUBSCRIBE || pkt->type == MQTT_UNSUBSCRIBE ||
               pkt->type == MQTT_SUBACK) {
        walk_list(pkt, NULL, NULL, set);
    }
    roundtrips[pkt->type](buf, len, pkt);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct topic_set set = {.n = 0};
    size_t off = 0;

    CHECK(mqtt_utf8_valid(data, size) == ref_utf8_valid(data, size));
    while (off < size) {
        struct mqtt_packet pkt;
        size_t used = 1;
        enum rmq_status st = mqtt_decode(data + off, size - off, 0, &pkt, &used);
        if (st == RMQ_AGAIN) {
            CHECK(used == 0 || used > size - off);
            break;
        }
        if (st == RMQ_UNSUPPORTED) {
            CHECK(pkt.type == MQTT_CONNECT && used >= 2 && used <= size - off);
            break; /* the broker answers CONNACK 0x01 and closes */
        }
        if (st != RMQ_OK) {
            CHECK(used == 0 && (st == RMQ_PROTOCOL || st == RMQ_LIMIT));
            break;
        }
        CHECK(used <= size - off);
        check_packet(data + off, used, &pkt, &set);
        off += used;
    }
    check_topic_pairs(&set);
    return 0;
}
