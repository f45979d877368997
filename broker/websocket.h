/* WebSocket (RFC 6455) for MQTT over WebSocket: the opening handshake's
 * request parser, the responses, and a streaming decoder of client frames.
 *
 * Pure: no I/O, no allocation. The decoder works in place: the bytes read
 * from the socket go in, the payload of the data frames comes out at the
 * front of the same buffer (the MQTT byte stream, frame boundaries gone),
 * and control frames are reported in the decoder's state. Any thread; one
 * decoder per connection. */
#ifndef RMQ_BROKER_WEBSOCKET_H
#define RMQ_BROKER_WEBSOCKET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

/* Longest opening handshake request accepted. */
#define WS_REQUEST_MAX 8192
/* Sec-WebSocket-Key: base64 of 16 bytes. */
#define WS_KEY_LEN 24
/* Largest server frame header (2 + 8 bytes of length). */
#define WS_HEADER_MAX 10

#define WS_OP_CONTINUATION 0x0
#define WS_OP_TEXT 0x1
#define WS_OP_BINARY 0x2
#define WS_OP_CLOSE 0x8
#define WS_OP_PING 0x9
#define WS_OP_PONG 0xa

#define WS_CLOSE_NORMAL 1000
#define WS_CLOSE_PROTOCOL 1002
#define WS_CLOSE_UNSUPPORTED 1003

struct ws_request {
    size_t len;                  /* bytes of the request through its blank line */
    char key[WS_KEY_LEN + 1];    /* Sec-WebSocket-Key */
    const char *protocol;        /* subprotocol chosen: "mqtt", "mqttv3.1" or NULL */
};

/* Parses an opening handshake at the start of buf[0..len) for a listener
 * serving `path` (a request for path?query matches too).
 *  RMQ_OK:       *out filled.
 *  RMQ_AGAIN:    the request is not complete yet.
 *  RMQ_PROTOCOL: refused; *status is the HTTP status to answer (400, 404,
 *                405, 426) and *why says what was wrong.
 *  RMQ_LIMIT:    no end within WS_REQUEST_MAX bytes (answer 431). */
enum rmq_status ws_request_parse(const uint8_t *buf, size_t len, const char *path,
                                 struct ws_request *out, int *status, const char **why);

/* The 101 answer with `accept` (Sec-WebSocket-Accept) and the protocol (or
 * none). Returns its length, or 0 if size is too small. */
size_t ws_response_accept(char *out, size_t size, const char *accept, const char *protocol);

/* An error answer for status (Connection: close). Length, or 0. */
size_t ws_response_error(char *out, size_t size, int status);

/* The bytes Sec-WebSocket-Accept is the SHA-1 (base64) of: key + GUID.
 * out needs WS_KEY_LEN + 37 bytes; returns the length. */
size_t ws_accept_input(const char *key, char *out, size_t size);

/* Server frame header (FIN set, unmasked) for a payload of len bytes.
 * out needs WS_HEADER_MAX bytes; returns the header's length. */
size_t ws_frame_header(uint8_t *out, uint8_t opcode, uint64_t len);

/* Header size for a payload of len bytes. */
size_t ws_frame_header_size(uint64_t len);

/* Streaming decoder of client frames. Zero it to start. */
struct ws_decoder {
    /* current frame */
    uint64_t left;      /* payload bytes still to come */
    uint8_t mask[4];
    uint8_t mask_pos;
    uint8_t opcode;
    bool fin;
    bool in_frame;      /* header complete, payload pending */
    bool in_message;    /* a fragmented binary message is open */
    uint8_t hdr[14];
    uint8_t hdr_len;
    uint8_t ctl[125];   /* payload of the control frame being read */
    uint8_t ctl_len;
    /* results, for the caller to act on and clear */
    bool pong_due;      /* a ping came: answer with its payload */
    uint8_t ping[125];
    uint8_t ping_len;
    bool closed;        /* a close frame came: nothing after it is decoded */
    uint16_t close_code; /* its status code, 0 if none */
    uint16_t error_code; /* with RMQ_PROTOCOL: the close code to send */
    const char *error;   /* with RMQ_PROTOCOL: why */
};

/* Decodes buf[0..len) (bytes from the socket) in place: the payload of
 * data frames is moved to buf[0..*out) in order. RMQ_OK, with pong_due or
 * closed possibly set; RMQ_PROTOCOL for a frame the MQTT WebSocket binding
 * or RFC 6455 does not allow (unmasked, text, reserved bits or opcodes,
 * bad control frames, continuation without a start, lengths that are not
 * minimal); the data decoded before the bad frame is still in buf[0..*out). */
enum rmq_status ws_decode(struct ws_decoder *d, uint8_t *buf, size_t len, size_t *out);

#endif
