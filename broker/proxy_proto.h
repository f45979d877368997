/* PROXY protocol header parser (HAProxy's version 1 text line and version 2
 * binary block), as sent by a load balancer in front of a listener so that
 * the broker learns the client's real address.
 *
 * Pure: no I/O, no allocation, no state. Given the bytes received so far it
 * answers "need more", "not a valid header" or the parsed header with its
 * length, so the caller can take exactly the header off the socket and leave
 * what follows (TLS or MQTT) untouched. Any thread. */
#ifndef RMQ_BROKER_PROXY_PROTO_H
#define RMQ_BROKER_PROXY_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

/* A v1 line is at most 107 bytes, CRLF included. */
#define PROXY_PROTO_V1_MAX 107
/* Longest v2 header accepted (16-byte preamble, addresses and TLVs). */
#define PROXY_PROTO_MAX 4096

/* Which versions a listener accepts (bit mask). */
#define PROXY_PROTO_ACCEPT_V1 1u
#define PROXY_PROTO_ACCEPT_V2 2u
#define PROXY_PROTO_ACCEPT_ANY (PROXY_PROTO_ACCEPT_V1 | PROXY_PROTO_ACCEPT_V2)

struct proxy_proto_header {
    size_t len;      /* bytes of the header: what the caller skips */
    uint8_t version; /* 1 or 2 */
    /* false: keep the socket's own addresses (v1 UNKNOWN, v2 LOCAL, v2
     * UNSPEC, UNIX or datagram families). */
    bool has_addr;
    int family; /* AF_INET or AF_INET6 when has_addr */
    uint8_t src_addr[16], dst_addr[16]; /* network order; 4 bytes used for AF_INET */
    uint16_t src_port, dst_port;        /* host order */
};

/* Parses the header at the start of buf[0..len), accepting the versions in
 * `accept` (PROXY_PROTO_ACCEPT_*).
 *  RMQ_OK:       *out is filled; out->len <= len bytes are the header.
 *  RMQ_AGAIN:    buf is a valid but incomplete header and every one of its
 *                len bytes belongs to it (the caller may consume them all).
 *  RMQ_PROTOCOL: not a PROXY header of an accepted version, or malformed;
 *                no amount of further input makes it valid.
 *  RMQ_LIMIT:    a v2 header longer than PROXY_PROTO_MAX. */
enum rmq_status proxy_proto_parse(const uint8_t *buf, size_t len, unsigned accept,
                                  struct proxy_proto_header *out);

/* Writes the source as "a.b.c.d:port" or "[v6]:port" into text (NUL
 * terminated). False if h has no address or text is too small. */
bool proxy_proto_format_source(const struct proxy_proto_header *h, char *text, size_t size);

#endif
