/* TLS through OpenSSL on non-blocking sockets; see tls.h.
 *
 * Contexts: TLS 1.2 or 1.3 at least (configurable), no renegotiation, no
 * compression, server cipher preference, partial writes with a buffer that
 * may move between retries (the output queue compacts and grows), and
 * record buffers released while a connection is idle. A peer that closes
 * TCP without close_notify ends the session like a close_notify (MQTT
 * frames its own packets, so a truncated stream cannot pass for a complete
 * one).
 *
 * Compact sessions (the default, `compact_sessions`): most devices are idle
 * most of the time, and an OpenSSL 3.0 session holds about 14 KiB for as
 * long as it lives, most of it handshake state the public API cannot free
 * (BENCHMARKS.md, "TLS memory per idle connection"). So once a TLS 1.3
 * handshake completes, the connection's records are handled here with
 * tls_record.c and the SSL object is freed: what stays is the record
 * state (about 250 bytes) and, under back-pressure only, the bytes in
 * flight. The keys come from OpenSSL's key-log callback (the client's and
 * the server's application traffic secrets), the server's sequence number
 * from counting the records OpenSSL wrote under those keys (its session
 * tickets; the message callback sees every record header). The client's
 * sequence number is 0: OpenSSL reads no further than the record it
 * needs, so the first record after the client's Finished is still in the
 * socket. Should anything not line up (TLS 1.2, a CCM suite, input already
 * buffered inside OpenSSL, a secret missing), the connection simply stays
 * with OpenSSL. Records received afterwards: application data, alerts
 * (close_notify ends the stream, user_canceled is ignored, any other ends
 * it with an error) and KeyUpdate (answered before the next record sent);
 * anything else is a protocol error. Our own key moves on after 2^24
 * records.
 *
 * Client certificates are requested only when the listener requires one or
 * takes the identity as username; a certificate that is sent is always
 * verified against the CA file. */
#include "broker/tls.h"

#include <errno.h>
#include <limits.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "broker/tls_compact.h"
#include "broker/tls_record.h"

/* What the handshake leaves for a compact session. */
struct handover {
    uint8_t client[48], server[48]; /* application traffic secrets */
    size_t client_len, server_len;
    bool counting;    /* the server writes under its application key */
    uint32_t records; /* records written since */
};

struct tls_conn {
    SSL *ssl;                     /* NULL once compact */
    struct tls_compact *compact;  /* non-NULL once compact */
    struct handover *ho;          /* during the handshake, when compact sessions are on */
    const char *version, *cipher; /* OpenSSL's static names, kept once compact */
    char *peer_cn;                /* kept once compact: verified client certificate's CN */
    int fd;
    bool established;
    bool resumed;          /* the handshake resumed an earlier session */
    bool failed;           /* fatal error: no close_notify may follow */
    bool read_wants_write; /* handshake or SSL_read waits for POLLOUT */
    bool write_wants_read; /* SSL_write waits for POLLIN */
    int deferred;          /* 0, or the read result (0 or -1) held back behind data */
    int deferred_errno;
};

/* The oldest queued OpenSSL error as text, the queue then cleared. */
static void
openssl_reason(char *buf, size_t size)
{
    unsigned long e = ERR_peek_last_error();
    if (e)
        ERR_error_string_n(e, buf, size);
    else
        snprintf(buf, size, "unknown OpenSSL error");
    ERR_clear_error();
}

/* "WHAT [SUBJECT]: OpenSSL's reason" into err. */
static void
ctx_err(char *err, size_t errlen, const char *what, const char *subject)
{
    char reason[256];
    openssl_reason(reason, sizeof(reason));
    snprintf(err, errlen, "%s%s%s: %s", what, subject ? " " : "", subject ? subject : "", reason);
}

/* Certificate, key and the CA list; false with err filled. */
static bool
load_files(SSL_CTX *ctx, const struct listener_tls *cfg, char *err, size_t errlen)
{
    if (SSL_CTX_use_certificate_chain_file(ctx, cfg->cert) != 1) {
        ctx_err(err, errlen, "cannot load certificate", cfg->cert);
        return false;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, cfg->key, SSL_FILETYPE_PEM) != 1) {
        ctx_err(err, errlen, "cannot load private key", cfg->key);
        return false;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        ctx_err(err, errlen, "the certificate does not match private key", cfg->key);
        return false;
    }
    if (!cfg->ca_file)
        return true;
    if (SSL_CTX_load_verify_locations(ctx, cfg->ca_file, NULL) != 1) {
        ctx_err(err, errlen, "cannot load CA file", cfg->ca_file);
        return false;
    }
    /* Tells clients which CAs are accepted (mosquitto_pub picks its
     * certificate from it when it has several). */
    STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(cfg->ca_file);
    if (names)
        SSL_CTX_set_client_CA_list(ctx, names);
    ERR_clear_error();
    return true;
}

/* hex (2n digits) into n bytes of out (at most cap); false if not hex. */
static bool
unhex(const char *hex, size_t hex_len, uint8_t *out, size_t cap, size_t *n)
{
    if (hex_len % 2 || hex_len / 2 > cap)
        return false;
    for (size_t i = 0; i < hex_len / 2; i++) {
        int v = 0;
        for (int k = 0; k < 2; k++) {
            char ch = hex[2 * i + (size_t)k];
            int d = ch >= '0' && ch <= '9'   ? ch - '0'
                    : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
                    : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10
                                             : -1;
            if (d < 0)
                return false;
            v = v * 16 + d;
        }
        out[i] = (uint8_t)v;
    }
    *n = hex_len / 2;
    return true;
}

/* OpenSSL's key log ("LABEL CLIENT_RANDOM SECRET" in hex): the two
 * application traffic secrets are kept for the hand-over. The server's
 * is logged once it writes under it, so the records counted from here on
 * are the ones sent with it. */
static void
on_keylog(const SSL *ssl, const char *line)
{
    struct tls_conn *t = SSL_get_app_data(ssl);
    if (!t || !t->ho)
        return;
    static const char CLIENT[] = "CLIENT_TRAFFIC_SECRET_0 ", SERVER[] = "SERVER_TRAFFIC_SECRET_0 ";
    bool client = strncmp(line, CLIENT, sizeof(CLIENT) - 1) == 0;
    bool server = strncmp(line, SERVER, sizeof(SERVER) - 1) == 0;
    const char *secret = strrchr(line, ' ');
    if ((!client && !server) || !secret)
        return;
    secret++;
    struct handover *ho = t->ho;
    if (client && !unhex(secret, strlen(secret), ho->client, sizeof(ho->client), &ho->client_len))
        ho->client_len = 0;
    if (server) {
        if (!unhex(secret, strlen(secret), ho->server, sizeof(ho->server), &ho->server_len))
            ho->server_len = 0;
        ho->counting = true;
        ho->records = 0;
    }
}

/* Counts the records the server writes (one header each). */
static void
on_message(int write_p, int version, int content_type, const void *buf, size_t len, SSL *ssl,
           void *arg)
{
    (void)version, (void)buf, (void)len, (void)arg;
    struct tls_conn *t = SSL_get_app_data(ssl);
    if (write_p && content_type == SSL3_RT_HEADER && t && t->ho && t->ho->counting)
        t->ho->records++;
}

/* Session resumption. With tickets > 0 a TLS 1.3 client gets that many
 * tickets after each full handshake (OpenSSL's default is 2) and TLS 1.2
 * resumes by ticket or session id as OpenSSL does by default. With 0 no
 * handshake is ever resumed: no TLS 1.3 ticket (each costs the server an
 * encryption and a record, and the client bytes it may never use), no
 * TLS 1.2 ticket and no session cache. */
static void
set_resumption(SSL_CTX *ctx, unsigned tickets)
{
    SSL_CTX_set_num_tickets(ctx, tickets);
    if (tickets > 0)
        return;
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
}

/* Adds the bytes of the file at path to md: 0, or an errno value. */
static int
digest_file(EVP_MD_CTX *md, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return errno;
    unsigned char buf[4096];
    size_t n;
    int e = 0;
    while (!e && (n = fread(buf, 1, sizeof(buf), f)) > 0)
        e = EVP_DigestUpdate(md, buf, n) == 1 ? 0 : ENOMEM;
    if (!e && ferror(f))
        e = errno ? errno : EIO;
    fclose(f);
    return e;
}

/* The session id context: a session (ticket or cache entry) resumes only
 * where it is the same. It is a SHA-256 over what decides which client
 * certificates a listener admits (required or not, CN as username, the CA
 * file's bytes), so that with a ticket key shared between listeners and
 * nodes a session made where no certificate (or another CA) was asked for
 * never resumes where one is required, and a changed CA file (SIGHUP)
 * retires the sessions verified under the old one. */
static bool
set_session_context(SSL_CTX *ctx, const struct listener_tls *cfg, char *err, size_t errlen)
{
    unsigned char sid[32], flags[3] = {'r', cfg->require_certificate, cfg->use_identity_as_username};
    unsigned len = 0;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    bool ok = md && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1 &&
              EVP_DigestUpdate(md, flags, sizeof(flags)) == 1;
    int e = ok && cfg->ca_file ? digest_file(md, cfg->ca_file) : 0;
    if (e) {
        snprintf(err, errlen, "cannot read CA file %s: %s", cfg->ca_file, strerror(e));
        EVP_MD_CTX_free(md);
        return false;
    }
    ok = ok && EVP_DigestFinal_ex(md, sid, &len) == 1 && len == sizeof(sid) &&
         SSL_CTX_set_session_id_context(ctx, sid, len) == 1;
    EVP_MD_CTX_free(md);
    if (!ok)
        ctx_err(err, errlen, "cannot set the session id context", NULL);
    return ok;
}

/* The key that seals and opens tickets, from a file of exactly
 * TICKET_KEY_BYTES (OpenSSL's layout: a 16-byte name, a 32-byte HMAC key,
 * a 32-byte AES key). Nodes given the same file accept each other's
 * tickets; without one OpenSSL makes a random key per context. */
#define TICKET_KEY_BYTES 80

static bool
load_ticket_key(SSL_CTX *ctx, const char *path, char *err, size_t errlen)
{
    unsigned char key[TICKET_KEY_BYTES + 1];
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "cannot open ticket key file %s: %s", path, strerror(errno));
        return false;
    }
    setvbuf(f, NULL, _IONBF, 0); /* no stdio buffer left holding the key */
    size_t n = fread(key, 1, sizeof(key), f);
    int read_errno = ferror(f) ? errno : 0;
    fclose(f);
    bool ok = n == TICKET_KEY_BYTES && !read_errno;
    if (read_errno)
        snprintf(err, errlen, "cannot read ticket key file %s: %s", path, strerror(read_errno));
    else if (!ok)
        snprintf(err, errlen,
                 "ticket key file %s must hold exactly %d bytes (head -c %d /dev/urandom); "
                 "it holds %s%zu",
                 path, TICKET_KEY_BYTES, TICKET_KEY_BYTES, n > TICKET_KEY_BYTES ? "more than " : "",
                 n > TICKET_KEY_BYTES ? (size_t)TICKET_KEY_BYTES : n);
    else if (SSL_CTX_set_tlsext_ticket_keys(ctx, key, TICKET_KEY_BYTES) != 1) {
        ctx_err(err, errlen, "cannot use ticket key file", path);
        ok = false;
    }
    OPENSSL_cleanse(key, sizeof(key));
    return ok;
}

struct ssl_ctx_st *
tls_context_new(const struct listener_tls *cfg, char *err, size_t errlen)
{
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        ctx_err(err, errlen, "cannot create a TLS context", NULL);
        return NULL;
    }
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    if (SSL_CTX_set_min_proto_version(ctx, cfg->min_version) != 1) {
        ctx_err(err, errlen, "cannot set the minimum TLS version", NULL);
        goto fail;
    }
    if (cfg->ciphers && SSL_CTX_set_cipher_list(ctx, cfg->ciphers) != 1) {
        ctx_err(err, errlen, "no usable cipher in", cfg->ciphers);
        goto fail;
    }
    if (!load_files(ctx, cfg, err, errlen))
        goto fail;
    int mode = SSL_VERIFY_NONE;
    if (cfg->require_certificate)
        mode = SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
    else if (cfg->use_identity_as_username)
        mode = SSL_VERIFY_PEER;
    SSL_CTX_set_verify(ctx, mode, NULL);
    /* Needed for session resumption once peers are verified. */
    if (!set_session_context(ctx, cfg, err, errlen))
        goto fail;
    set_resumption(ctx, cfg->session_tickets);
    /* Read even where tickets are off: a bad file is an error either way. */
    if (cfg->ticket_key_file && !load_ticket_key(ctx, cfg->ticket_key_file, err, errlen))
        goto fail;
    if (cfg->compact_sessions)
        SSL_CTX_set_keylog_callback(ctx, on_keylog);
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

void
tls_context_free(struct ssl_ctx_st *ctx)
{
    SSL_CTX_free(ctx);
}

struct tls_conn *
tls_conn_new(struct ssl_ctx_st *ctx, int fd)
{
    struct tls_conn *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    ERR_clear_error();
    t->ssl = SSL_new(ctx);
    if (!t->ssl || SSL_set_fd(t->ssl, fd) != 1) {
        ERR_clear_error();
        SSL_free(t->ssl);
        free(t);
        return NULL;
    }
    SSL_set_accept_state(t->ssl);
    t->fd = fd;
    if (SSL_CTX_get_keylog_callback(ctx) && (t->ho = calloc(1, sizeof(*t->ho)))) {
        SSL_set_app_data(t->ssl, t);
        /* The server's sequence number comes from this callback's count:
         * nothing else may install one on this session (a record it did
         * not count would make us reuse a nonce). */
        SSL_set_msg_callback(t->ssl, on_message);
    }
    return t;
}

static void
handover_free(struct tls_conn *t)
{
    if (t->ho)
        OPENSSL_cleanse(t->ho, sizeof(*t->ho));
    free(t->ho);
    t->ho = NULL;
}

void
tls_conn_free(struct tls_conn *t)
{
    if (!t)
        return;
    if (t->compact) {
        tls_compact_free(t->compact, t->fd, t->established && !t->failed);
    } else {
        if (t->established && !t->failed) {
            ERR_clear_error();
            SSL_shutdown(t->ssl); /* one non-blocking attempt at close_notify */
        }
        ERR_clear_error();
        SSL_free(t->ssl);
    }
    handover_free(t);
    free(t->peer_cn);
    free(t);
}

/* Why the handshake failed, for the log line. */
static void
handshake_reason(struct tls_conn *t, int e, int saved_errno, char *why, size_t whylen)
{
    long verify = SSL_get_verify_result(t->ssl);
    if (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) {
        snprintf(why, whylen, "%s",
                 saved_errno ? strerror(saved_errno) : "connection closed during the handshake");
        return;
    }
    char reason[256];
    openssl_reason(reason, sizeof(reason));
    if (verify != X509_V_OK)
        snprintf(why, whylen, "%s (certificate: %s)", reason,
                 X509_verify_cert_error_string(verify));
    else
        snprintf(why, whylen, "%s", reason);
}

/* The verified client certificate's subject CN, or NULL. */
static char *
peer_cn_of(const SSL *ssl)
{
    X509 *cert = SSL_get1_peer_certificate(ssl);
    char *cn = NULL;
    if (!cert || SSL_get_verify_result(ssl) != X509_V_OK)
        goto done;
    X509_NAME *name = X509_get_subject_name(cert);
    int idx = name ? X509_NAME_get_index_by_NID(name, NID_commonName, -1) : -1;
    if (idx < 0)
        goto done;
    ASN1_STRING *data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, idx));
    unsigned char *utf8 = NULL;
    int n = data ? ASN1_STRING_to_UTF8(&utf8, data) : -1;
    /* A name with a NUL inside would log and match as something else. */
    if (n > 0 && n <= 65535 && !memchr(utf8, '\0', (size_t)n))
        cn = strndup((const char *)utf8, (size_t)n);
    OPENSSL_free(utf8);
done:
    X509_free(cert);
    ERR_clear_error();
    return cn;
}

/* A TLS 1.3 session whose handshake just completed continues without
 * OpenSSL when everything the hand-over needs is there (see the top). */
static void
go_compact(struct tls_conn *t)
{
    struct handover *ho = t->ho;
    SSL_set_msg_callback(t->ssl, NULL);
    const SSL_CIPHER *cipher = SSL_get_current_cipher(t->ssl);
    uint16_t suite = cipher ? SSL_CIPHER_get_protocol_id(cipher) : 0;
    if (!ho || SSL_version(t->ssl) != TLS1_3_VERSION || !tls13_suite_supported(suite) ||
        !ho->counting || !ho->client_len || ho->client_len != ho->server_len ||
        SSL_has_pending(t->ssl)) {
        handover_free(t);
        return;
    }
    t->compact = tls_compact_new(suite, ho->client, ho->server, ho->client_len, ho->records);
    handover_free(t);
    if (!t->compact)
        return;
    t->peer_cn = peer_cn_of(t->ssl);
    t->version = SSL_get_version(t->ssl);
    t->cipher = SSL_CIPHER_get_name(cipher);
    /* Not a shutdown: a cached session stays resumable. */
    SSL_set_shutdown(t->ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
    SSL_free(t->ssl);
    t->ssl = NULL;
    ERR_clear_error();
}

enum rmq_status
tls_conn_handshake(struct tls_conn *t, char *why, size_t whylen)
{
    ERR_clear_error();
    errno = 0;
    int r = SSL_do_handshake(t->ssl);
    int saved_errno = errno;
    t->read_wants_write = false;
    if (r == 1) {
        t->established = true;
        t->resumed = SSL_session_reused(t->ssl) == 1;
        go_compact(t);
        return RMQ_OK;
    }
    int e = SSL_get_error(t->ssl, r);
    if (e == SSL_ERROR_WANT_READ)
        return RMQ_AGAIN;
    if (e == SSL_ERROR_WANT_WRITE) {
        t->read_wants_write = true;
        return RMQ_AGAIN;
    }
    t->failed = true;
    handshake_reason(t, e, saved_errno, why, whylen);
    ERR_clear_error();
    return RMQ_PROTOCOL;
}

/* The result of a read that ended the stream or failed, as read(2) gives
 * it: 0 at the end, -1 with errno. */
static int
read_end(struct tls_conn *t, int e, int saved_errno)
{
    if (e == SSL_ERROR_ZERO_RETURN)
        return 0;
    t->failed = true;
    if (e == SSL_ERROR_SYSCALL) {
        ERR_clear_error();
        errno = saved_errno ? saved_errno : ECONNRESET;
        return -1;
    }
    ERR_clear_error();
    errno = EPROTO;
    return -1;
}

/* Data first, the end with the next call. */
static ssize_t
defer_end(struct tls_conn *t, size_t got, int end)
{
    t->deferred = end == 0 ? 1 : 2;
    t->deferred_errno = errno;
    return (ssize_t)got;
}

ssize_t
tls_conn_read(struct tls_conn *t, void *buf, size_t len)
{
    size_t got = 0;
    t->read_wants_write = false;
    if (t->deferred) {
        errno = t->deferred_errno;
        return t->deferred == 1 ? 0 : -1;
    }
    if (t->compact) {
        /* The compact session keeps its own end: data first, then 0 or -1
         * from every later call. */
        ssize_t n = tls_compact_read(t->compact, t->fd, buf, len);
        if (n < 0 && errno != EAGAIN)
            t->failed = true;
        return n;
    }
    while (got < len) {
        size_t want = len - got < INT_MAX ? len - got : INT_MAX;
        ERR_clear_error();
        errno = 0;
        int n = SSL_read(t->ssl, (char *)buf + got, (int)want);
        int saved_errno = errno;
        if (n > 0) {
            got += (size_t)n;
            continue;
        }
        int e = SSL_get_error(t->ssl, n);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            t->read_wants_write = e == SSL_ERROR_WANT_WRITE;
            if (got)
                return (ssize_t)got;
            errno = EAGAIN;
            return -1;
        }
        int end = read_end(t, e, saved_errno);
        if (!got)
            return end;
        return defer_end(t, got, end);
    }
    return (ssize_t)got;
}

enum rmq_status
tls_conn_write(struct tls_conn *t, struct outq *q, size_t *written)
{
    *written = 0;
    t->write_wants_read = false;
    if (t->failed)
        return RMQ_IO;
    if (t->compact) {
        enum rmq_status st = tls_compact_write(t->compact, t->fd, q, written);
        t->failed = st == RMQ_IO;
        return st;
    }
    while (outq_pending(q) > 0) {
        const uint8_t *data;
        size_t n;
        outq_peek(q, &data, &n);
        if (n == 0) {
            outq_consume(q, 0); /* an empty payload at the front */
            continue;
        }
        ERR_clear_error();
        int w = SSL_write(t->ssl, data, n < INT_MAX ? (int)n : INT_MAX);
        if (w > 0) {
            outq_consume(q, (size_t)w);
            *written += (size_t)w;
            continue;
        }
        int e = SSL_get_error(t->ssl, w);
        if (e == SSL_ERROR_WANT_WRITE)
            return RMQ_AGAIN;
        if (e == SSL_ERROR_WANT_READ) {
            t->write_wants_read = true;
            return RMQ_AGAIN;
        }
        t->failed = true;
        ERR_clear_error();
        return RMQ_IO;
    }
    return RMQ_OK;
}

bool
tls_conn_wants_write(const struct tls_conn *t)
{
    return t->read_wants_write;
}

size_t
tls_conn_unsent(const struct tls_conn *t)
{
    return t->compact ? tls_compact_unsent(t->compact) : 0;
}

bool
tls_conn_wants_read(const struct tls_conn *t)
{
    return t->write_wants_read;
}

bool
tls_conn_pending(const struct tls_conn *t)
{
    if (t->compact)
        return t->deferred || tls_compact_pending(t->compact);
    return t->deferred || (t->established && SSL_pending(t->ssl) > 0);
}

char *
tls_conn_peer_cn(const struct tls_conn *t)
{
    if (!t->ssl)
        return t->peer_cn ? strdup(t->peer_cn) : NULL;
    return peer_cn_of(t->ssl);
}

size_t
tls_conn_heap(const struct tls_conn *t)
{
    return sizeof(*t) + (t->ho ? sizeof(*t->ho) : 0) + (t->peer_cn ? strlen(t->peer_cn) + 1 : 0) +
           tls_compact_heap(t->compact);
}

bool
tls_conn_compact(const struct tls_conn *t)
{
    return t->compact != NULL;
}

bool
tls_conn_resumed(const struct tls_conn *t)
{
    return t->resumed;
}

void
tls_conn_describe(const struct tls_conn *t, char *buf, size_t size)
{
    if (t->compact)
        snprintf(buf, size, "%s %s, compact", t->version, t->cipher);
    else
        snprintf(buf, size, "%s %s", SSL_get_version(t->ssl), SSL_get_cipher_name(t->ssl));
}
