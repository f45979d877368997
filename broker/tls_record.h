/* TLS 1.3 record protection (RFC 8446, section 5) for an established
 * server connection, once OpenSSL's session is gone: the two directions'
 * traffic secrets, keys, IVs and sequence numbers, sealing and opening one
 * record at a time with OpenSSL's AEAD ciphers, and KeyUpdate (4.6.3).
 *
 * Why: an OpenSSL 3.0 session holds about 14 KiB for as long as the
 * connection lives, mostly handshake state; the record layer needs about
 * 250 bytes. broker/tls.c hands a TLS 1.3 connection over to this module
 * as soon as its handshake completes (see tls.c).
 *
 * Three suites: TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384,
 * TLS_CHACHA20_POLY1305_SHA256 (the CCM suites stay with OpenSSL). Cipher
 * contexts are not kept per connection: each thread keeps a cache of 256
 * per suite and direction (at most about 600 KiB per suite) and loads a
 * connection's key into its slot when another key holds it.
 * Loop thread only; the state of one connection is touched by one thread. */
#ifndef RMQ_BROKER_TLS_RECORD_H
#define RMQ_BROKER_TLS_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TLS13_HEADER 5u
#define TLS13_TAG 16u
#define TLS13_MAX_PLAIN 16384u
/* A record's length field at most (2^14 + 256, RFC 8446 5.2). */
#define TLS13_MAX_CIPHER (TLS13_MAX_PLAIN + 256u)
/* Bytes a sealed record adds to its content: header, inner type, tag. */
#define TLS13_OVERHEAD (TLS13_HEADER + 1u + TLS13_TAG)

/* Record content types. */
enum {
    TLS13_ALERT = 21,
    TLS13_HANDSHAKE = 22,
    TLS13_APPLICATION_DATA = 23,
};

/* Records sent under one key before the sender moves to the next (RFC 8446
 * 5.5 bounds AES-GCM at 2^24.5 full-size records). */
#define TLS13_REKEY_RECORDS (1u << 24)

struct tls13_dir {
    uint8_t secret[48]; /* this direction's current traffic secret */
    uint8_t key[32];
    uint8_t iv[12];
    uint64_t seq;
    uint64_t gen; /* identifies the key loaded from here, see tls_record.c */
};

struct tls13 {
    uint8_t suite;    /* TLS13_SUITE_* below */
    uint8_t hash_len; /* 32 or 48 */
    uint8_t key_len;  /* 16 or 32 */
    struct tls13_dir rx, tx;
};

/* suite_id (IANA's number, 0x1301...) is one handled here. */
bool tls13_suite_supported(uint16_t suite_id);

/* Sets up a server's record state for suite_id from the client's and the
 * server's application traffic secrets (hash_len bytes each). False when
 * the suite is not handled or a derivation fails. */
bool tls13_init(struct tls13 *s, uint16_t suite_id, const uint8_t *client_secret,
                const uint8_t *server_secret, size_t secret_len);

/* Wipes the keys (OPENSSL_cleanse) and forgets the state. */
void tls13_wipe(struct tls13 *s);

/* Moves d to its next traffic secret and key (KeyUpdate), sequence 0. */
bool tls13_update(const struct tls13 *s, struct tls13_dir *d);

/* Seals one record in place: rec + TLS13_HEADER holds len bytes of content
 * (len <= TLS13_MAX_PLAIN) and rec has room for TLS13_OVERHEAD more.
 * Writes the header, inner type and tag; returns the record's size, or 0
 * when the cipher fails. */
size_t tls13_seal(struct tls13 *s, uint8_t type, uint8_t *rec, size_t len);

/* Opens one whole record in place (rec: header and rec_len - 5 bytes of
 * body, already checked to be application_data and within
 * TLS13_MAX_CIPHER). On success *content points into rec, *content_len
 * and *type are the inner content and type. False when the record does
 * not authenticate or carries no content type. */
bool tls13_open(struct tls13 *s, uint8_t *rec, size_t rec_len, uint8_t **content,
                size_t *content_len, uint8_t *type);

#endif
