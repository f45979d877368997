/* One MQTT client connection of the load generator: a non-blocking TCP socket
 * (TCP_NODELAY) on a libevent base, an input buffer decoded with mqtt_decode
 * and an output buffer that callers fill and flush once per event, so many
 * packets leave in one write().
 *
 * The struct lives inside the caller's own struct (publisher, subscriber,
 * connect slot); the caller owns it and calls bconn_close() before freeing.
 * Single-threaded: everything runs on the event loop that owns `base`. */
#ifndef RMQ_TESTS_BENCH_CONN_H
#define RMQ_TESTS_BENCH_CONN_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "broker/packet_codec.h"
#include "common/status.h"

struct event;
struct event_base;
struct bconn;
struct ssl_st;

/* Callbacks into the owner. None may call bconn_close() on c except on_error
 * (after which c is closed anyway). */
struct bconn_ops {
    /* One decoded packet (CONNACK included). Return RMQ_OK when handled,
     * RMQ_AGAIN when the output buffer has no room for the answer (the packet
     * is offered again once the socket drains), anything else to fail the
     * connection. The packet's views point into c's input buffer. */
    enum rmq_status (*on_packet)(struct bconn *c, const struct mqtt_packet *p);
    /* Called after each batch of input and each time the socket drains:
     * the owner may queue more output (e.g. publishes). May be NULL. */
    void (*on_fill)(struct bconn *c);
    /* The connection failed (refused, reset, EOF, malformed input). c is
     * already closed when this runs. what is a short static description;
     * c->err holds the errno when a system call failed. */
    void (*on_error)(struct bconn *c, enum rmq_status st, const char *what);
};

struct bconn {
    int fd;
    bool connecting; /* connect() still in progress */
    bool blocked;    /* a packet waits for output room: input paused */
    bool want_write; /* owner asked for on_fill on every writable event */
    struct event *rev;
    struct event *wev;
    uint8_t *in;
    size_t in_cap, in_start, in_end;
    uint8_t *out;
    size_t out_cap, out_off, out_len;
    const struct bconn_ops *ops;
    void *owner;
    uint64_t bytes_in, bytes_out;
    int err; /* errno of the last failure, 0 if none */
    struct ssl_st *ssl;    /* TLS session (bconn_tls_init was called), else NULL */
    bool handshaking;      /* TLS handshake in progress: output waits */
    bool hs_want_write;    /* the handshake waits for the socket to be writable */
};

/* Makes every later connection speak TLS (no certificate check: this is a
 * load generator). 0, or -1 if OpenSSL cannot make a client context. */
int bconn_tls_init(void);

/* Starts a non-blocking connect to addr. Buffers of in_cap/out_cap bytes are
 * allocated here (the input buffer grows if a packet needs more). Output can
 * be queued at once; it is written when the connection completes.
 * RMQ_IO if the socket cannot be created, RMQ_NOMEM. On failure c is closed. */
enum rmq_status bconn_open(struct bconn *c, struct event_base *base, const struct sockaddr_in *addr,
                           size_t in_cap, size_t out_cap, const struct bconn_ops *ops, void *owner);

/* Closes the socket, frees events and buffers. Safe on a closed or zeroed
 * struct. */
void bconn_close(struct bconn *c);

/* True while the socket is open. */
bool bconn_is_open(const struct bconn *c);

/* Free bytes at the end of the output buffer (after compacting it). */
size_t bconn_room(struct bconn *c);

/* Where the next n output bytes go, or NULL if fewer than n are free; call
 * bconn_commit(n) after writing them. */
uint8_t *bconn_reserve(struct bconn *c, size_t n);
void bconn_commit(struct bconn *c, size_t n);

/* Appends n bytes; false if there is no room. */
bool bconn_append(struct bconn *c, const void *data, size_t n);

/* Writes as much buffered output as the socket takes and arms the write
 * event for the rest. On a write error the connection fails through
 * on_error and RMQ_IO is returned: the caller must not touch c afterwards
 * except to check bconn_is_open. */
enum rmq_status bconn_flush(struct bconn *c);

/* Asks for on_fill on every writable event (flood publishers) or stops it. */
void bconn_want_write(struct bconn *c, bool on);

/* Bytes queued but not yet written. */
size_t bconn_pending(const struct bconn *c);

#endif
