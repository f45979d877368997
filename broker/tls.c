/* TLS through OpenSSL on non-blocking sockets; see tls.h.
 *
 * Contexts: TLS 1.2 or 1.3 at least (configurable), no renegotiation, no
 * compression, server cipher preference, partial writes with a buffer that
 * may move between retries (the output queue compacts and grows), and
 * record buffers released while a connection is idle: most devices are idle
 * most of the time, and an idle session then holds no 17 KiB buffer. It
 * still holds about 14 KiB of OpenSSL 3.0 state that the public API cannot
 * shrink (the SSL object alone is 7.5 KiB, the traffic keys 2.3 KiB; see
 * BENCHMARKS.md, "TLS memory per idle connection", and tests/bench/tls_mem.c,
 * which counts it by OpenSSL source line). A peer that closes TCP without
 * close_notify ends the session like a close_notify (MQTT frames its own
 * packets, so a truncated stream cannot pass for a complete one).
 *
 * Client certificates are requested only when the listener requires one or
 * takes the identity as username; a certificate that is sent is always
 * verified against the CA file. */
#include "broker/tls.h"

#include <errno.h>
#include <limits.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct tls_conn {
    SSL *ssl;
    bool established;
    bool failed;           /* fatal error: no close_notify may follow */
    bool read_wants_write; /* handshake or SSL_read waits for POLLOUT */
    bool write_wants_read; /* SSL_write waits for POLLIN */
    int deferred;          /* 0, or the read result (0 or -1) held back behind data */
    int deferred_errno;
};

static const unsigned char SESSION_ID_CONTEXT[] = "relaymq";

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
    SSL_CTX_set_session_id_context(ctx, SESSION_ID_CONTEXT, sizeof(SESSION_ID_CONTEXT) - 1);
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
    return t;
}

void
tls_conn_free(struct tls_conn *t)
{
    if (!t)
        return;
    if (t->established && !t->failed) {
        ERR_clear_error();
        SSL_shutdown(t->ssl); /* one non-blocking attempt at close_notify */
    }
    ERR_clear_error();
    SSL_free(t->ssl);
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

ssize_t
tls_conn_read(struct tls_conn *t, void *buf, size_t len)
{
    size_t got = 0;
    t->read_wants_write = false;
    if (t->deferred) {
        errno = t->deferred_errno;
        return t->deferred == 1 ? 0 : -1;
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
        /* Hand over the data first; the end comes with the next call. */
        t->deferred = end == 0 ? 1 : 2;
        t->deferred_errno = errno;
        return (ssize_t)got;
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

bool
tls_conn_wants_read(const struct tls_conn *t)
{
    return t->write_wants_read;
}

bool
tls_conn_pending(const struct tls_conn *t)
{
    return t->deferred || (t->established && SSL_pending(t->ssl) > 0);
}

char *
tls_conn_peer_cn(const struct tls_conn *t)
{
    X509 *cert = SSL_get1_peer_certificate(t->ssl);
    char *cn = NULL;
    if (!cert || SSL_get_verify_result(t->ssl) != X509_V_OK)
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

void
tls_conn_describe(const struct tls_conn *t, char *buf, size_t size)
{
    snprintf(buf, size, "%s %s", SSL_get_version(t->ssl), SSL_get_cipher_name(t->ssl));
}
