/* TLS for MQTT listeners, through OpenSSL, on the connection's own
 * non-blocking socket.
 *
 * A listener holds one server context (certificate, key, CA, versions,
 * ciphers), replaced whole on reload: connections keep the context they were
 * accepted with (OpenSSL counts the references). A connection holds one
 * struct tls_conn: the OpenSSL session plus which direction the last call
 * waits for, since TLS can need the socket writable to read (and the other
 * way round).
 *
 * Loop thread only for everything about one connection; contexts may be
 * built on any thread. Errors of OpenSSL's queue are cleared before every
 * call, so one connection's failure never shows up as another's. */
#ifndef RMQ_BROKER_TLS_H
#define RMQ_BROKER_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "broker/listener_spec.h"
#include "broker/outq.h"
#include "common/status.h"

struct ssl_ctx_st;
struct tls_conn;

/* A server context for cfg. NULL on failure, with the reason (file and
 * OpenSSL's message) in err. */
struct ssl_ctx_st *tls_context_new(const struct listener_tls *cfg, char *err, size_t errlen);

/* Drops the caller's reference. NULL-safe. */
void tls_context_free(struct ssl_ctx_st *ctx);

/* A server session on fd (borrowed: the caller closes it after
 * tls_conn_free). NULL when out of memory. */
struct tls_conn *tls_conn_new(struct ssl_ctx_st *ctx, int fd);

/* Sends close_notify if the session was established and has not failed,
 * then frees it. Never blocks. NULL-safe. */
void tls_conn_free(struct tls_conn *t);

/* Advances the handshake. RMQ_OK once established, RMQ_AGAIN to wait
 * (tls_conn_wants_write tells which way), RMQ_PROTOCOL on failure with the
 * reason in why. */
enum rmq_status tls_conn_handshake(struct tls_conn *t, char *why, size_t whylen);

/* Reads decrypted bytes into buf, as read(2) would: > 0 bytes (several
 * records may be taken), 0 at the peer's close, -1 with errno EAGAIN (wait:
 * see tls_conn_wants_write) or EPROTO/ECONNRESET. */
ssize_t tls_conn_read(struct tls_conn *t, void *buf, size_t len);

/* Writes queued output, as outq_write does: RMQ_OK (all written),
 * RMQ_AGAIN (wait: see tls_conn_wants_read), RMQ_IO. *written gets the
 * plaintext bytes taken. */
enum rmq_status tls_conn_write(struct tls_conn *t, struct outq *q, size_t *written);

/* The last read or handshake step waits for the socket to be writable. */
bool tls_conn_wants_write(const struct tls_conn *t);

/* Bytes taken from the queue by tls_conn_write but not yet written to the
 * socket (compact sessions seal whole records and keep what the socket did
 * not take): the connection still has output to flush. */
size_t tls_conn_unsent(const struct tls_conn *t);

/* The last write waits for the socket to be readable. */
bool tls_conn_wants_read(const struct tls_conn *t);

/* Input is buffered inside the session (or an end is pending): read again
 * without waiting for the socket. */
bool tls_conn_pending(const struct tls_conn *t);

/* The verified client certificate's subject common name (UTF-8, new
 * string for the caller to free), or NULL without one. */
char *tls_conn_peer_cn(const struct tls_conn *t);

/* Heap bytes RelayMQ's own part of the session holds (its structs, and for
 * a compact session whatever is in flight), OpenSSL's not counted. */
size_t tls_conn_heap(const struct tls_conn *t);

/* The handshake handed the session to the compact record layer (see
 * tls.c): OpenSSL's session is gone. */
bool tls_conn_compact(const struct tls_conn *t);

/* The handshake resumed an earlier session (a ticket or a session id). */
bool tls_conn_resumed(const struct tls_conn *t);

/* "TLSv1.3 TLS_AES_256_GCM_SHA384" for logs (", compact" added). */
void tls_conn_describe(const struct tls_conn *t, char *buf, size_t size);

#endif
