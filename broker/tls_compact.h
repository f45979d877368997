/* A TLS 1.3 server session on a non-blocking socket after OpenSSL's session
 * is freed: record state (tls_record.h) plus whatever is in flight, i.e. a
 * record not yet whole, plaintext the reader has not taken yet, records the
 * socket has not taken yet. An idle session holds none of those: about 300
 * bytes in all. broker/tls.c creates one when a handshake completes (see
 * there for how the keys and sequence numbers are obtained).
 *
 * Loop thread only. */
#ifndef RMQ_BROKER_TLS_COMPACT_H
#define RMQ_BROKER_TLS_COMPACT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "broker/outq.h"
#include "common/status.h"

struct tls_compact;

/* From the suite (IANA number), both application traffic secrets and the
 * number of records the server already sent under its secret. NULL when
 * out of memory or the suite is not handled (tls13_suite_supported). */
struct tls_compact *tls_compact_new(uint16_t suite, const uint8_t *client_secret,
                                    const uint8_t *server_secret, size_t secret_len,
                                    uint64_t server_records);

/* Frees c; with close_notify, first one non-blocking attempt at writing
 * what is pending and a close_notify alert to fd. NULL-safe. */
void tls_compact_free(struct tls_compact *c, int fd, bool close_notify);

/* Reads and decrypts, as read(2) would: > 0 bytes of application data,
 * 0 at the end of the stream, -1 with errno (EAGAIN: nothing yet; EPROTO: a
 * record that does not authenticate or is not allowed, a fatal alert, or
 * too many records in a row without data; ECONNRESET: a reset or a stream
 * cut inside a record). The data received before an end or an error is
 * returned first; from then on every call returns the end (0) or the
 * error again. On an error a fatal alert is sent when the socket takes it. */
ssize_t tls_compact_read(struct tls_compact *c, int fd, void *buf, size_t len);

/* Seals what q holds into records (up to 16 KiB of plaintext each, several
 * per write) and writes them, as outq_write does: RMQ_OK when all is
 * written, RMQ_AGAIN when the socket is full (the sealed rest is kept),
 * RMQ_IO on an error. *written gets the plaintext bytes taken from q. */
enum rmq_status tls_compact_write(struct tls_compact *c, int fd, struct outq *q, size_t *written);

/* Sealed bytes the socket has not taken yet. */
size_t tls_compact_unsent(const struct tls_compact *c);

/* Heap bytes c holds (0 for NULL). */
size_t tls_compact_heap(const struct tls_compact *c);

/* Decrypted bytes, or the end or an error, wait to be read: read again
 * without waiting for fd. */
bool tls_compact_pending(const struct tls_compact *c);

#endif
