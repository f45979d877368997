/* MQTT 3.1 / 3.1.1 packet codec; see packet_codec.h.
 *
 * Decoding runs in two steps. The fixed header alone decides the packet's
 * fate as early as possible: the type, the flags, the remaining-length varint,
 * an exact remaining length where the type has one, and the size limit are all
 * checked before the body has arrived, so a hostile peer cannot make us wait
 * for (or buffer) a packet we would reject anyway. Once the whole packet is in
 * the buffer, a per-type body decoder chosen from type_rules[] parses it with a
 * bounds-checked reader; every decoder must consume the body exactly.
 *
 * Invariants: nothing here allocates, keeps state or reads outside
 * buf[0..len). Decoded packets are views into the caller's buffer. Encoders
 * write only the bytes their contract sizes. Any thread may call anything. */
#include "broker/packet_codec.h"

#include <string.h>

/* ---- per-type rules ---- */

#define FLAGS_PUBLISH 0xffu /* PUBLISH: flags carry DUP/QoS/RETAIN */
#define LEN_ANY 0xffu       /* no fixed remaining length */

struct reader {
    const uint8_t *p;
    const uint8_t *end;
};

typedef enum rmq_status (*body_decoder)(struct reader *r, struct mqtt_packet *out);

struct type_rule {
    const char *name;
    uint8_t flags;       /* the only flags allowed, or FLAGS_PUBLISH */
    uint8_t exact_len;   /* required remaining length, or LEN_ANY */
    body_decoder decode; /* NULL: the type is reserved (0 and 15) */
};

static enum rmq_status decode_connect(struct reader *r, struct mqtt_packet *out);
static enum rmq_status decode_connack(struct reader *r, struct mqtt_packet *out);
static enum rmq_status decode_publish(struct reader *r, struct mqtt_packet *out);
static enum rmq_status decode_packet_id(struct reader *r, struct mqtt_packet *out);
static enum rmq_status decode_list(struct reader *r, struct mqtt_packet *out);
static enum rmq_status decode_empty(struct reader *r, struct mqtt_packet *out);

static const struct type_rule type_rules[16] = {
    [MQTT_CONNECT] = {"CONNECT", 0x0, LEN_ANY, decode_connect},
    [MQTT_CONNACK] = {"CONNACK", 0x0, 2, decode_connack},
    [MQTT_PUBLISH] = {"PUBLISH", FLAGS_PUBLISH, LEN_ANY, decode_publish},
    [MQTT_PUBACK] = {"PUBACK", 0x0, 2, decode_packet_id},
    [MQTT_PUBREC] = {"PUBREC", 0x0, 2, decode_packet_id},
    [MQTT_PUBREL] = {"PUBREL", 0x2, 2, decode_packet_id},
    [MQTT_PUBCOMP] = {"PUBCOMP", 0x0, 2, decode_packet_id},
    [MQTT_SUBSCRIBE] = {"SUBSCRIBE", 0x2, LEN_ANY, decode_list},
    [MQTT_SUBACK] = {"SUBACK", 0x0, LEN_ANY, decode_list},
    [MQTT_UNSUBSCRIBE] = {"UNSUBSCRIBE", 0x2, LEN_ANY, decode_list},
    [MQTT_UNSUBACK] = {"UNSUBACK", 0x0, 2, decode_packet_id},
    [MQTT_PINGREQ] = {"PINGREQ", 0x0, 0, decode_empty},
    [MQTT_PINGRESP] = {"PINGRESP", 0x0, 0, decode_empty},
    [MQTT_DISCONNECT] = {"DISCONNECT", 0x0, 0, decode_empty},
};

const char *
mqtt_type_name(int type)
{
    if (type < 0 || type > 15 || !type_rules[type].name)
        return "UNKNOWN";
    return type_rules[type].name;
}

/* ---- UTF-8 ---- */

#define ONES8 0x0101010101010101ull
#define HIGHS8 0x8080808080808080ull

/* Length of the valid multi-byte sequence at s (lead byte >= 0x80), or 0.
 * Second-byte ranges follow Unicode table 3-7, which excludes overlong
 * forms (C0, C1, E0 80..9F, F0 80..8F), surrogates (ED A0..BF) and code
 * points above U+10FFFF (F4 90.., F5..FF). */
static inline size_t
utf8_sequence(const uint8_t *s, size_t avail)
{
    uint8_t c = s[0], lo = 0x80, hi = 0xbf;
    size_t n;

    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        lo = c == 0xe0 ? 0xa0 : 0x80;
        hi = c == 0xed ? 0x9f : 0xbf;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        lo = c == 0xf0 ? 0x90 : 0x80;
        hi = c == 0xf4 ? 0x8f : 0xbf;
    } else {
        return 0;
    }
    if (avail < n || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t k = 2; k < n; k++)
        if ((s[k] & 0xc0) != 0x80)
            return 0;
    return n;
}

/* True if the 8 bytes at s are all in 0x01..0x7f. Subtracting 1 from each
 * byte sets its top bit only for a zero byte (no borrow can come in from
 * below, as those bytes are non-zero). */
static inline bool
ascii8(const uint8_t *s)
{
    uint64_t w;
    memcpy(&w, s, 8);
    return !(((w - ONES8) | w) & HIGHS8);
}

/* The general loop from s[i]: runs of 8 ASCII bytes a word at a time,
 * everything else a byte or a sequence at a time. */
static bool
utf8_valid_from(const uint8_t *s, size_t len, size_t i)
{
    while (i < len) {
        while (len - i >= 8 && ascii8(s + i))
            i += 8;
        if (i == len)
            break;
        if ((unsigned)s[i] - 1u < 0x7fu) {
            i++;
            continue;
        }
        size_t n = utf8_sequence(s + i, len - i); /* also rejects U+0000 */
        if (n == 0)
            return false;
        i += n;
    }
    return true;
}

/* Topics and client ids are nearly always ASCII, so that case goes first:
 * whole words, then one last word overlapping the previous one, so no byte
 * is looked at alone. Anything else falls back to the general loop. */
bool
mqtt_utf8_valid(const uint8_t *s, size_t len)
{
    size_t i = 0;

    if (len < 8) {
        while (i < len && (unsigned)s[i] - 1u < 0x7fu)
            i++;
        return i == len || utf8_valid_from(s, len, i);
    }
    for (; len - i > 8; i += 8)
        if (!ascii8(s + i))
            return utf8_valid_from(s, len, i);
    return ascii8(s + len - 8) || utf8_valid_from(s, len, i);
}

/* ---- reader: bounds-checked field access for the body decoders ---- */

static inline size_t
reader_left(const struct reader *r)
{
    return (size_t)(r->end - r->p);
}

static inline bool
read_u8(struct reader *r, uint8_t *v)
{
    if (r->p == r->end)
        return false;
    *v = *r->p++;
    return true;
}

static inline bool
read_u16(struct reader *r, uint16_t *v)
{
    if (reader_left(r) < 2)
        return false;
    *v = (uint16_t)(r->p[0] << 8 | r->p[1]);
    r->p += 2;
    return true;
}

/* A 2-byte length followed by that many bytes (binary data). */
static inline bool
read_bytes(struct reader *r, struct mqtt_str *s)
{
    uint16_t n;
    if (!read_u16(r, &n) || reader_left(r) < n)
        return false;
    s->data = r->p;
    s->len = n;
    r->p += n;
    return true;
}

/* A length-prefixed string that must be valid MQTT UTF-8. */
static inline bool
read_utf8(struct reader *r, struct mqtt_str *s)
{
    return read_bytes(r, s) && mqtt_utf8_valid(s->data, s->len);
}

/* A packet identifier, which MQTT requires to be non-zero [MQTT-2.3.1-1]. */
static inline bool
read_packet_id(struct reader *r, uint16_t *id)
{
    return read_u16(r, id) && *id != 0;
}

/* ---- fixed header ---- */

/* Parses the remaining-length varint after the first byte. RMQ_AGAIN if it
 * is not complete yet, RMQ_PROTOCOL if a 4th byte still has its continuation
 * bit set. Non-minimal encodings (0x80 0x00 for 0) are accepted. */
static inline enum rmq_status
parse_remaining_length(const uint8_t *buf, size_t len, uint32_t *value, size_t *header_len)
{
    uint32_t v = 0;
    for (size_t i = 1; i < MQTT_FIXED_HEADER_MAX; i++) {
        if (i == len)
            return RMQ_AGAIN;
        v |= (uint32_t)(buf[i] & 0x7f) << (7 * (i - 1));
        if (!(buf[i] & 0x80)) {
            *value = v;
            *header_len = i + 1;
            return RMQ_OK;
        }
    }
    return RMQ_PROTOCOL;
}

/* The first byte alone: a known type with the only flags it may carry.
 * PUBLISH may carry any DUP/RETAIN and QoS 0..2. DUP with QoS 0 breaks
 * [MQTT-3.3.1-2], but only for 3.1.1: the level is in the CONNECT, not here,
 * and many 3.1-era clients send it, so we accept it and decode dup as sent. */
static inline bool
first_byte_valid(uint8_t byte)
{
    const struct type_rule *rule = &type_rules[byte >> 4];
    uint8_t flags = byte & 0x0f;

    if (!rule->decode)
        return false;
    if (rule->flags == FLAGS_PUBLISH)
        return (flags & 0x6) != 0x6;
    return flags == rule->flags;
}

enum rmq_status
mqtt_decode(const uint8_t *buf, size_t len, uint32_t max_packet_size, struct mqtt_packet *out,
            size_t *consumed)
{
    uint32_t remaining;
    size_t header_len;

    *consumed = 0;
    if (len == 0)
        return RMQ_AGAIN;
    if (!first_byte_valid(buf[0]))
        return RMQ_PROTOCOL;
    enum rmq_status status = parse_remaining_length(buf, len, &remaining, &header_len);
    if (status != RMQ_OK)
        return status;

    const struct type_rule *rule = &type_rules[buf[0] >> 4];
    if (rule->exact_len != LEN_ANY && remaining != rule->exact_len)
        return RMQ_PROTOCOL;
    size_t total = header_len + remaining;
    if (max_packet_size != 0 && total > max_packet_size)
        return RMQ_LIMIT;
    if (len < total) {
        *consumed = total;
        return RMQ_AGAIN;
    }

    out->type = (enum mqtt_type)(buf[0] >> 4);
    out->flags = buf[0] & 0x0f;
    out->remaining_length = remaining;
    struct reader r = {buf + header_len, buf + total};
    status = rule->decode(&r, out);
    if (status == RMQ_OK && r.p != r.end)
        status = RMQ_PROTOCOL; /* trailing bytes */
    if (status == RMQ_OK || status == RMQ_UNSUPPORTED)
        *consumed = total;
    return status;
}

/* ---- body decoders ---- */

#define CF_RESERVED 0x01u
#define CF_CLEAN_SESSION 0x02u
#define CF_WILL 0x04u
#define CF_WILL_QOS_SHIFT 3
#define CF_WILL_QOS 0x18u
#define CF_WILL_RETAIN 0x20u
#define CF_PASSWORD 0x40u
#define CF_USERNAME 0x80u

struct protocol_name {
    const char *name;
    uint16_t len;
    uint8_t level;
};

static const struct protocol_name protocols[] = {
    {"MQTT", 4, MQTT_PROTO_V311},
    {"MQIsdp", 6, MQTT_PROTO_V31},
};

/* Protocol name and level. Anything readable but unknown is UNSUPPORTED, so
 * the broker can answer CONNACK 0x01 (e.g. an MQTT 5 client). */
static enum rmq_status
decode_protocol(struct reader *r, struct mqtt_connect *c)
{
    struct mqtt_str name;
    if (!read_bytes(r, &name) || !read_u8(r, &c->protocol_level))
        return RMQ_PROTOCOL;
    for (size_t i = 0; i < sizeof(protocols) / sizeof(protocols[0]); i++) {
        const struct protocol_name *p = &protocols[i];
        if (name.len == p->len && memcmp(name.data, p->name, p->len) == 0)
            return c->protocol_level == p->level ? RMQ_OK : RMQ_UNSUPPORTED;
    }
    return RMQ_UNSUPPORTED;
}

/* Connect flags [MQTT-3.1.2-3, -11, -12, -13, -14, -15, -22]. A password
 * without a user name was legal in 3.1 and is kept for it. */
static bool
connect_flags_valid(uint8_t flags, uint8_t level)
{
    unsigned will_qos = (flags & CF_WILL_QOS) >> CF_WILL_QOS_SHIFT;

    if ((flags & CF_RESERVED) || will_qos == 3)
        return false;
    if (!(flags & CF_WILL) && (flags & (CF_WILL_QOS | CF_WILL_RETAIN)))
        return false;
    if ((flags & CF_PASSWORD) && !(flags & CF_USERNAME) && level == MQTT_PROTO_V311)
        return false;
    return true;
}

/* CONNECT payload, in the spec's order; each field present only if flagged. */
static bool
decode_connect_payload(struct reader *r, struct mqtt_connect *c)
{
    if (!read_utf8(r, &c->client_id))
        return false;
    if (c->has_will && (!read_utf8(r, &c->will_topic) || !read_bytes(r, &c->will_payload)))
        return false;
    if (c->has_username && !read_utf8(r, &c->username))
        return false;
    if (c->has_password && !read_bytes(r, &c->password))
        return false;
    return true;
}

static enum rmq_status
decode_connect(struct reader *r, struct mqtt_packet *out)
{
    struct mqtt_connect *c = &out->u.connect;
    uint8_t flags;

    memset(c, 0, sizeof(*c));
    enum rmq_status status = decode_protocol(r, c);
    if (status != RMQ_OK)
        return status;
    if (!read_u8(r, &flags) || !connect_flags_valid(flags, c->protocol_level))
        return RMQ_PROTOCOL;
    if (!read_u16(r, &c->keepalive))
        return RMQ_PROTOCOL;
    c->clean_session = flags & CF_CLEAN_SESSION;
    c->has_will = flags & CF_WILL;
    c->will_qos = (flags & CF_WILL_QOS) >> CF_WILL_QOS_SHIFT;
    c->will_retain = flags & CF_WILL_RETAIN;
    c->has_username = flags & CF_USERNAME;
    c->has_password = flags & CF_PASSWORD;
    return decode_connect_payload(r, c) ? RMQ_OK : RMQ_PROTOCOL;
}

/* Acknowledge flags: bits 7..1 are reserved [MQTT-3.2.2-1]; return codes
 * above 5 are reserved too. */
static enum rmq_status
decode_connack(struct reader *r, struct mqtt_packet *out)
{
    uint8_t ack_flags = r->p[0], code = r->p[1];

    r->p += 2; /* the fixed header guaranteed exactly 2 bytes */
    if ((ack_flags & 0xfe) || code > MQTT_CONNACK_NOT_AUTHORIZED)
        return RMQ_PROTOCOL;
    out->u.connack.session_present = ack_flags & 1;
    out->u.connack.return_code = code;
    return RMQ_OK;
}

/* Topic validity (wildcards, emptiness) is the broker's call, through
 * topic_name_valid(); the codec checks only that the topic is UTF-8. */
static enum rmq_status
decode_publish(struct reader *r, struct mqtt_packet *out)
{
    struct mqtt_publish *p = &out->u.publish;

    p->qos = (out->flags >> 1) & 3;
    p->dup = out->flags & 0x8;
    p->retain = out->flags & 0x1;
    p->packet_id = 0;
    if (!read_utf8(r, &p->topic))
        return RMQ_PROTOCOL;
    if (p->qos > 0 && !read_packet_id(r, &p->packet_id))
        return RMQ_PROTOCOL;
    p->payload = r->p;
    p->payload_len = (uint32_t)reader_left(r);
    r->p = r->end;
    return RMQ_OK;
}

static enum rmq_status
decode_packet_id(struct reader *r, struct mqtt_packet *out)
{
    return read_packet_id(r, &out->u.packet_id) ? RMQ_OK : RMQ_PROTOCOL;
}

static enum rmq_status
decode_empty(struct reader *r, struct mqtt_packet *out)
{
    return RMQ_OK;
}

/* One list entry: a SUBSCRIBE filter and its requested QoS (0..2, so the
 * reserved upper bits are zero [MQTT-3.8.3-4]), an UNSUBSCRIBE filter, or a
 * SUBACK return code. Zero-length filters are left to the broker, which
 * answers them with 0x80. */
static inline bool
read_list_entry(struct reader *r, enum mqtt_type type)
{
    struct mqtt_str filter;
    uint8_t byte;

    if (type == MQTT_SUBACK)
        return read_u8(r, &byte) && (byte <= 2 || byte == MQTT_SUBACK_FAILURE);
    if (!read_utf8(r, &filter))
        return false;
    return type == MQTT_UNSUBSCRIBE || (read_u8(r, &byte) && byte <= 2);
}

/* SUBSCRIBE, UNSUBSCRIBE, SUBACK: a packet id, then at least one entry.
 * The count field is 16 bits, so a list longer than that is RMQ_LIMIT. */
static enum rmq_status
decode_list(struct reader *r, struct mqtt_packet *out)
{
    struct mqtt_topic_list *list = &out->u.list;
    size_t count = 0;

    if (!read_packet_id(r, &list->packet_id))
        return RMQ_PROTOCOL;
    list->data = r->p;
    list->len = reader_left(r);
    while (r->p != r->end) {
        if (!read_list_entry(r, out->type))
            return RMQ_PROTOCOL;
        if (++count > UINT16_MAX)
            return RMQ_LIMIT;
    }
    if (count == 0)
        return RMQ_PROTOCOL;
    list->count = (uint16_t)count;
    return RMQ_OK;
}

bool
mqtt_topic_iter_next(enum mqtt_type type, const struct mqtt_topic_list *list, size_t *pos,
                     struct mqtt_str *topic, uint8_t *qos)
{
    if (*pos >= list->len)
        return false;
    struct reader r = {list->data + *pos, list->data + list->len};
    *qos = 0;
    topic->data = NULL;
    topic->len = 0;
    /* The list was validated by mqtt_decode; the checks below only keep a
     * misused list (wrong type, foreign data) from reading out of bounds. */
    if (type == MQTT_SUBACK) {
        read_u8(&r, qos);
    } else if (type == MQTT_SUBSCRIBE || type == MQTT_UNSUBSCRIBE) {
        if (!read_bytes(&r, topic))
            return false;
        if (type == MQTT_SUBSCRIBE && !read_u8(&r, qos))
            return false;
    } else {
        return false;
    }
    *pos = (size_t)(r.p - list->data);
    return true;
}

/* ---- encoders ---- */

static inline size_t
varint_size(uint32_t value)
{
    return value < 128u ? 1 : value < 16384u ? 2 : value < 2097152u ? 3 : 4;
}

size_t
mqtt_encode_varint(uint8_t out[4], uint32_t value)
{
    size_t n = 0;
    if (value > MQTT_MAX_REMAINING_LENGTH)
        return 0;
    do {
        uint8_t byte = value & 0x7f;
        value >>= 7;
        out[n++] = value ? (uint8_t)(byte | 0x80) : byte;
    } while (value);
    return n;
}

/* First byte and remaining length; returns the header size, 0 if too long. */
static inline size_t
write_fixed_header(uint8_t *out, uint8_t first, uint64_t remaining)
{
    if (remaining > MQTT_MAX_REMAINING_LENGTH)
        return 0;
    out[0] = first;
    return 1 + mqtt_encode_varint(out + 1, (uint32_t)remaining);
}

static inline uint8_t *
write_u16(uint8_t *out, uint16_t v)
{
    out[0] = (uint8_t)(v >> 8);
    out[1] = (uint8_t)v;
    return out + 2;
}

static inline uint8_t *
write_str(uint8_t *out, const uint8_t *data, uint16_t len)
{
    out = write_u16(out, len);
    if (len)
        memcpy(out, data, len);
    return out + len;
}

static inline uint8_t
first_byte(enum mqtt_type type)
{
    return (uint8_t)(type << 4 | type_rules[type].flags);
}

size_t
mqtt_encode_connack(uint8_t out[4], bool session_present, uint8_t return_code)
{
    out[0] = first_byte(MQTT_CONNACK);
    out[1] = 2;
    out[2] = session_present ? 1 : 0;
    out[3] = return_code;
    return 4;
}

size_t
mqtt_encode_ack(uint8_t out[4], enum mqtt_type type, uint16_t packet_id)
{
    if ((unsigned)type > 15 || !type_rules[type].decode || type_rules[type].exact_len != 2 ||
        type == MQTT_CONNACK)
        return 0;
    out[0] = first_byte(type);
    out[1] = 2;
    write_u16(out + 2, packet_id);
    return 4;
}

size_t
mqtt_encode_empty(uint8_t out[2], enum mqtt_type type)
{
    if ((unsigned)type > 15 || !type_rules[type].decode || type_rules[type].exact_len != 0)
        return 0;
    out[0] = first_byte(type);
    out[1] = 0;
    return 2;
}

size_t
mqtt_encode_suback(uint8_t *out, uint16_t packet_id, const uint8_t *codes, size_t n)
{
    size_t header = write_fixed_header(out, first_byte(MQTT_SUBACK), 2 + (uint64_t)n);
    if (header == 0)
        return 0;
    write_u16(out + header, packet_id);
    if (n)
        memcpy(out + header + 2, codes, n);
    return header + 2 + n;
}

static inline uint64_t
publish_remaining(uint8_t qos, uint16_t topic_len, uint32_t payload_len)
{
    return 2u + (uint64_t)topic_len + (qos ? 2u : 0u) + payload_len;
}

size_t
mqtt_publish_size(uint8_t qos, uint16_t topic_len, uint32_t payload_len)
{
    uint64_t remaining = publish_remaining(qos, topic_len, payload_len);
    /* Beyond the protocol limit there is no encoding; any size we return is
     * over every limit, which is all a caller needs to know. */
    size_t varint = remaining > MQTT_MAX_REMAINING_LENGTH ? 5 : varint_size((uint32_t)remaining);
    return (size_t)(1 + varint + remaining);
}

size_t
mqtt_encode_publish_header(uint8_t *out, uint8_t qos, bool dup, bool retain, const uint8_t *topic,
                           uint16_t topic_len, uint16_t packet_id, uint32_t payload_len)
{
    if (qos > 2)
        return 0;
    uint8_t first = (uint8_t)(MQTT_PUBLISH << 4 | (dup ? 0x8 : 0) | qos << 1 | (retain ? 0x1 : 0));
    size_t header = write_fixed_header(out, first, publish_remaining(qos, topic_len, payload_len));
    if (header == 0)
        return 0;
    uint8_t *p = write_str(out + header, topic, topic_len);
    if (qos)
        p = write_u16(p, packet_id);
    return (size_t)(p - out);
}

/* ---- client-side encoders ---- */

/* The name written for a level: "MQIsdp" for 3, "MQTT" for anything else. */
static inline const struct protocol_name *
protocol_for_level(uint8_t level)
{
    return &protocols[level == MQTT_PROTO_V31 ? 1 : 0];
}

static uint64_t
connect_remaining(const struct mqtt_connect *c)
{
    const struct protocol_name *proto = protocol_for_level(c->protocol_level);
    uint64_t n = 2u + proto->len + 1 + 1 + 2 + 2u + c->client_id.len;

    if (c->has_will)
        n += 4u + c->will_topic.len + c->will_payload.len;
    if (c->has_username)
        n += 2u + c->username.len;
    if (c->has_password)
        n += 2u + c->password.len;
    return n;
}

size_t
mqtt_connect_size(const struct mqtt_connect *c)
{
    uint64_t remaining = connect_remaining(c); /* at most ~330 KB: always encodable */
    return (size_t)(1 + varint_size((uint32_t)remaining) + remaining);
}

static uint8_t
connect_flags(const struct mqtt_connect *c)
{
    unsigned flags = c->clean_session ? CF_CLEAN_SESSION : 0;

    if (c->has_will) {
        flags |= CF_WILL | (unsigned)(c->will_qos & 3) << CF_WILL_QOS_SHIFT;
        flags |= c->will_retain ? CF_WILL_RETAIN : 0;
    }
    flags |= c->has_username ? CF_USERNAME : 0;
    flags |= c->has_password ? CF_PASSWORD : 0;
    return (uint8_t)flags;
}

/* Level 3 is written as "MQIsdp"; any other level as "MQTT" with that level
 * byte, so tests can produce e.g. an MQTT 5 CONNECT. Will QoS/retain are
 * written only with a will; the other fields exactly as given. */
size_t
mqtt_encode_connect(uint8_t *out, const struct mqtt_connect *c)
{
    const struct protocol_name *proto = protocol_for_level(c->protocol_level);
    uint8_t *p = out + write_fixed_header(out, first_byte(MQTT_CONNECT), connect_remaining(c));

    p = write_str(p, (const uint8_t *)proto->name, proto->len);
    *p++ = c->protocol_level;
    *p++ = connect_flags(c);
    p = write_u16(p, c->keepalive);
    p = write_str(p, c->client_id.data, c->client_id.len);
    if (c->has_will) {
        p = write_str(p, c->will_topic.data, c->will_topic.len);
        p = write_str(p, c->will_payload.data, c->will_payload.len);
    }
    if (c->has_username)
        p = write_str(p, c->username.data, c->username.len);
    if (c->has_password)
        p = write_str(p, c->password.data, c->password.len);
    return (size_t)(p - out);
}

static inline uint64_t
topic_list_remaining(enum mqtt_type type, const struct mqtt_str *filters, size_t n)
{
    uint64_t total = 2;
    size_t per_entry = type == MQTT_SUBSCRIBE ? 3 : 2;
    for (size_t i = 0; i < n; i++)
        total += per_entry + filters[i].len;
    return total;
}

size_t
mqtt_topic_list_size(enum mqtt_type type, const struct mqtt_str *filters, size_t n)
{
    if (type != MQTT_SUBSCRIBE && type != MQTT_UNSUBSCRIBE)
        return 0;
    uint64_t remaining = topic_list_remaining(type, filters, n);
    if (remaining > MQTT_MAX_REMAINING_LENGTH)
        return 0;
    return (size_t)(1 + varint_size((uint32_t)remaining) + remaining);
}

size_t
mqtt_encode_topic_list(uint8_t *out, enum mqtt_type type, uint16_t packet_id,
                       const struct mqtt_str *filters, const uint8_t *qos, size_t n)
{
    if (type != MQTT_SUBSCRIBE && type != MQTT_UNSUBSCRIBE)
        return 0;
    size_t header =
        write_fixed_header(out, first_byte(type), topic_list_remaining(type, filters, n));
    if (header == 0)
        return 0;
    uint8_t *p = write_u16(out + header, packet_id);
    for (size_t i = 0; i < n; i++) {
        p = write_str(p, filters[i].data, filters[i].len);
        if (type == MQTT_SUBSCRIBE)
            *p++ = qos[i];
    }
    return (size_t)(p - out);
}
