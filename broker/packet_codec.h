/* MQTT 3.1 / 3.1.1 packet codec: pure functions, no I/O, no allocation.
 *
 * Decoding: feed the bytes you have; get one complete packet out, RMQ_AGAIN
 * ("need more bytes", a normal answer), or an error. Decoded packets hold
 * views (pointer + length) into the caller's input buffer: they are valid only
 * while that buffer is. Every string the protocol says is UTF-8 is validated
 * (well-formed, no U+0000, no surrogates) before it is handed out.
 *
 * Encoding: writers fill caller-provided memory and return the number of
 * bytes written. A PUBLISH is split into a small header (fixed header, topic,
 * packet id) and the payload, so a message fanned out to many subscribers
 * keeps one payload and only re-encodes a few header bytes per subscriber.
 *
 * The shape leaves room for MQTT 5: the protocol level is carried through,
 * and properties/reason codes can be added as further fields.
 * Any thread may call any function here. */
#ifndef RMQ_BROKER_PACKET_CODEC_H
#define RMQ_BROKER_PACKET_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

enum mqtt_type {
    MQTT_CONNECT = 1,
    MQTT_CONNACK = 2,
    MQTT_PUBLISH = 3,
    MQTT_PUBACK = 4,
    MQTT_PUBREC = 5,
    MQTT_PUBREL = 6,
    MQTT_PUBCOMP = 7,
    MQTT_SUBSCRIBE = 8,
    MQTT_SUBACK = 9,
    MQTT_UNSUBSCRIBE = 10,
    MQTT_UNSUBACK = 11,
    MQTT_PINGREQ = 12,
    MQTT_PINGRESP = 13,
    MQTT_DISCONNECT = 14,
};

enum mqtt_protocol_level {
    MQTT_PROTO_V31 = 3,  /* "MQIsdp" */
    MQTT_PROTO_V311 = 4, /* "MQTT" */
};

enum mqtt_connack_code {
    MQTT_CONNACK_ACCEPTED = 0,
    MQTT_CONNACK_BAD_PROTOCOL = 1,
    MQTT_CONNACK_ID_REJECTED = 2,
    MQTT_CONNACK_UNAVAILABLE = 3,
    MQTT_CONNACK_BAD_CREDENTIALS = 4,
    MQTT_CONNACK_NOT_AUTHORIZED = 5,
};

#define MQTT_SUBACK_FAILURE 0x80u
#define MQTT_MAX_REMAINING_LENGTH 268435455u /* 4-byte varint limit */
#define MQTT_FIXED_HEADER_MAX 5u
/* fixed header + topic length prefix + packet id; add the topic length. */
#define MQTT_PUBLISH_HEADER_OVERHEAD (MQTT_FIXED_HEADER_MAX + 2u + 2u)

/* A view into the decode input. Not NUL-terminated. */
struct mqtt_str {
    const uint8_t *data;
    uint16_t len;
};

struct mqtt_connect {
    uint8_t protocol_level; /* MQTT_PROTO_V31 or MQTT_PROTO_V311 */
    bool clean_session;
    uint16_t keepalive; /* seconds, 0 = none */
    struct mqtt_str client_id;
    bool has_will;
    uint8_t will_qos;
    bool will_retain;
    struct mqtt_str will_topic;
    struct mqtt_str will_payload; /* binary, may be empty */
    bool has_username;
    struct mqtt_str username;
    bool has_password;
    struct mqtt_str password; /* binary */
};

struct mqtt_connack {
    bool session_present;
    uint8_t return_code;
};

struct mqtt_publish {
    uint8_t qos;
    bool dup;
    bool retain;
    struct mqtt_str topic;
    uint16_t packet_id; /* 0 for QoS 0 */
    const uint8_t *payload;
    uint32_t payload_len;
};

/* SUBSCRIBE, UNSUBSCRIBE and SUBACK carry a list; the decoder validates it
 * whole and leaves a view to walk with mqtt_topic_iter_next(). */
struct mqtt_topic_list {
    uint16_t packet_id;
    uint16_t count;     /* entries in the list (>= 1 for SUBSCRIBE/UNSUBSCRIBE) */
    const uint8_t *data; /* the encoded entries */
    size_t len;
};

struct mqtt_packet {
    enum mqtt_type type;
    uint8_t flags;             /* low nibble of the first byte */
    uint32_t remaining_length;
    union {
        struct mqtt_connect connect;
        struct mqtt_connack connack;
        struct mqtt_publish publish;
        struct mqtt_topic_list list; /* SUBSCRIBE, UNSUBSCRIBE, SUBACK (codes) */
        uint16_t packet_id;          /* PUBACK, PUBREC, PUBREL, PUBCOMP, UNSUBACK */
    } u;
};

/* Decodes one packet from buf[0..len).
 * RMQ_OK: *out is filled, *consumed = whole packet length.
 * RMQ_AGAIN: the packet is incomplete; nothing consumed. If the fixed header
 *   is complete, *consumed is set to the total size the packet will need (so
 *   the caller can size its buffer), else to 0.
 * RMQ_LIMIT: the declared packet size exceeds max_packet_size (0 = only the
 *   protocol's limit); detected from the fixed header alone.
 * RMQ_UNSUPPORTED: a CONNECT with a protocol name/level other than
 *   MQIsdp/3 or MQTT/4 (the broker answers CONNACK 0x01); out->type is set,
 *   out->u.connect.protocol_level holds the level sent, and *consumed is the
 *   packet length (the rest of the CONNECT is not parsed).
 * RMQ_PROTOCOL: malformed: bad varint, reserved flags, QoS 3, bad lengths,
 *   invalid UTF-8, trailing bytes, empty subscription list, will flags set
 *   without a will, password without username (3.1.1), etc.
 *   PUBLISH with QoS 0 and DUP set is accepted (3.1 clients send it).
 * RMQ_LIMIT is also returned for a list of more than 65535 entries, which
 *   struct mqtt_topic_list.count cannot hold.
 * On every status other than OK, AGAIN and UNSUPPORTED, *consumed is 0.
 * The decoder is for a server: it accepts every type a client or a server can
 * send, so the load generator and tests decode with it too. */
enum rmq_status mqtt_decode(const uint8_t *buf, size_t len, uint32_t max_packet_size,
                            struct mqtt_packet *out, size_t *consumed);

/* Walks a SUBSCRIBE (filter + requested QoS), UNSUBSCRIBE (filter, qos = 0)
 * or SUBACK (no filter: topic->len = 0, qos = return code) list. Start with
 * *pos = 0. Returns false at the end. Entries were validated by mqtt_decode. */
bool mqtt_topic_iter_next(enum mqtt_type type, const struct mqtt_topic_list *list, size_t *pos,
                          struct mqtt_str *topic, uint8_t *qos);

/* True if s is well-formed UTF-8 per MQTT: no U+0000, no surrogates, no
 * overlong forms. */
bool mqtt_utf8_valid(const uint8_t *s, size_t len);

/* Writes the remaining-length varint; returns bytes written (1..4), or 0 for
 * a value above MQTT_MAX_REMAINING_LENGTH. */
size_t mqtt_encode_varint(uint8_t out[4], uint32_t value);

/* Every encoder below returns 0, writing nothing, when its arguments cannot
 * form a packet: a type it does not write, QoS above 2, or a remaining length
 * above MQTT_MAX_REMAINING_LENGTH. */

/* ---- encoders (server side) ---- */

/* CONNACK: always 4 bytes. */
size_t mqtt_encode_connack(uint8_t out[4], bool session_present, uint8_t return_code);

/* PUBACK, PUBREC, PUBREL (flags 0x2), PUBCOMP, UNSUBACK: always 4 bytes. */
size_t mqtt_encode_ack(uint8_t out[4], enum mqtt_type type, uint16_t packet_id);

/* PINGREQ, PINGRESP, DISCONNECT: always 2 bytes. */
size_t mqtt_encode_empty(uint8_t out[2], enum mqtt_type type);

/* SUBACK with n return codes; out must hold MQTT_FIXED_HEADER_MAX + 2 + n. */
size_t mqtt_encode_suback(uint8_t *out, uint16_t packet_id, const uint8_t *codes, size_t n);

/* Everything of a PUBLISH before the payload. out must hold
 * MQTT_PUBLISH_HEADER_OVERHEAD + topic_len bytes. packet_id is ignored for
 * QoS 0. The payload (payload_len bytes) follows directly on the wire. */
size_t mqtt_encode_publish_header(uint8_t *out, uint8_t qos, bool dup, bool retain,
                                  const uint8_t *topic, uint16_t topic_len, uint16_t packet_id,
                                  uint32_t payload_len);

/* Total wire size of a PUBLISH, for buffer sizing and limits. Beyond the
 * protocol's limit the result is only guaranteed to exceed that limit. */
size_t mqtt_publish_size(uint8_t qos, uint16_t topic_len, uint32_t payload_len);

/* ---- encoders (client side: load generator, tests) ---- */

/* CONNECT. out must hold mqtt_connect_size(c). Fields as in the decoder;
 * the protocol name follows protocol_level. */
size_t mqtt_connect_size(const struct mqtt_connect *c);
size_t mqtt_encode_connect(uint8_t *out, const struct mqtt_connect *c);

/* SUBSCRIBE with n filters and requested QoS; UNSUBSCRIBE ignores qos (may
 * be NULL). out must hold mqtt_topic_list_size(). */
size_t mqtt_topic_list_size(enum mqtt_type type, const struct mqtt_str *filters, size_t n);
size_t mqtt_encode_topic_list(uint8_t *out, enum mqtt_type type, uint16_t packet_id,
                              const struct mqtt_str *filters, const uint8_t *qos, size_t n);

/* Human-readable packet type name ("CONNECT", ...); "UNKNOWN" otherwise. */
const char *mqtt_type_name(int type);

#endif
