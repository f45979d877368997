/* Unit tests for broker/tls.c and its compact TLS 1.3 sessions
 * (tls_compact.c, tls_record.c): a real OpenSSL client talks to the
 * broker's server code over a socketpair in this process. Every suite the
 * compact path handles carries data both ways (small reads, large writes
 * through a tiny socket buffer), a client KeyUpdate asking for ours is
 * answered, close_notify ends the stream both ways, and records that are
 * forged, not allowed or cut end the connection with an error. TLS 1.2,
 * and TLS 1.3 with compact sessions off, stay with OpenSSL and still work. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "broker/outq.h"
#include "broker/tls.h"
#include "broker/tls_record.h"

static char cert_path[512], key_path[512], dir_path[480];
/* TLS 1.3 session tickets the server of the next pair_open sends. */
static unsigned pair_tickets;

/* A throw-away self-signed P-256 certificate in a temporary directory. */
static int
make_certificate(void **state)
{
    (void)state;
    /* mkdtemp replaces the XXXXXX with a unique name. */
    const char *tmp = getenv("TMPDIR");
    snprintf(dir_path, sizeof(dir_path), "%s/rmq-tls-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir_path))
        return -1;
    snprintf(cert_path, sizeof(cert_path), "%s/c.pem", dir_path);
    snprintf(key_path, sizeof(key_path), "%s/k.pem", dir_path);
    EVP_PKEY *pkey = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, pkey);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"localhost", -1, -1,
                               0);
    X509_set_issuer_name(x, name);
    X509_sign(x, pkey, EVP_sha256());
    FILE *fc = fopen(cert_path, "w"), *fk = fopen(key_path, "w");
    int ok = fc && fk && PEM_write_X509(fc, x) &&
             PEM_write_PrivateKey(fk, pkey, NULL, NULL, 0, NULL, NULL);
    if (fc)
        fclose(fc);
    if (fk)
        fclose(fk);
    X509_free(x);
    EVP_PKEY_free(pkey);
    return ok ? 0 : -1;
}

static int
remove_certificate(void **state)
{
    (void)state;
    unlink(cert_path);
    unlink(key_path);
    rmdir(dir_path);
    return 0;
}

struct pair {
    SSL_CTX *sctx, *cctx;
    SSL *client;
    struct tls_conn *server;
    int sfd, cfd;
    int key_updates_seen; /* KeyUpdate messages the client received */
};

static void
client_msg(int write_p, int version, int type, const void *buf, size_t len, SSL *ssl, void *arg)
{
    (void)version, (void)ssl;
    struct pair *p = arg;
    if (!write_p && type == SSL3_RT_HANDSHAKE && len > 0 && ((const uint8_t *)buf)[0] == 24)
        p->key_updates_seen++;
}

/* Client and server connected and through the handshake. */
static void
pair_open(struct pair *p, const char *suite, int max_version, bool compact)
{
    memset(p, 0, sizeof(*p));
    struct listener_tls cfg = {.cert = cert_path,
                               .key = key_path,
                               .min_version = LISTENER_TLS_1_2,
                               .compact_sessions = compact,
                               .session_tickets = pair_tickets};
    char err[256];
    p->sctx = tls_context_new(&cfg, err, sizeof(err));
    assert_non_null(p->sctx);
    int fds[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    p->sfd = fds[0];
    p->cfd = fds[1];
    fcntl(p->sfd, F_SETFL, O_NONBLOCK);
    fcntl(p->cfd, F_SETFL, O_NONBLOCK);
    p->cctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_max_proto_version(p->cctx, max_version);
    if (suite)
        assert_int_equal(SSL_CTX_set_ciphersuites(p->cctx, suite), 1);
    SSL_CTX_set_mode(p->cctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    p->client = SSL_new(p->cctx);
    SSL_set_fd(p->client, p->cfd);
    SSL_set_connect_state(p->client);
    SSL_set_msg_callback(p->client, client_msg);
    SSL_set_msg_callback_arg(p->client, p);
    p->server = tls_conn_new(p->sctx, p->sfd);
    assert_non_null(p->server);
    bool cdone = false, sdone = false;
    for (int i = 0; i < 200 && !(cdone && sdone); i++) {
        if (!cdone) {
            int r = SSL_do_handshake(p->client);
            cdone = r == 1;
            if (r != 1)
                assert_true(SSL_get_error(p->client, r) == SSL_ERROR_WANT_READ);
        }
        if (!sdone) {
            enum rmq_status st = tls_conn_handshake(p->server, err, sizeof(err));
            assert_true(st == RMQ_OK || st == RMQ_AGAIN);
            sdone = st == RMQ_OK;
        }
    }
    assert_true(cdone && sdone);
}

static void
pair_close(struct pair *p)
{
    tls_conn_free(p->server);
    SSL_free(p->client);
    SSL_CTX_free(p->cctx);
    tls_context_free(p->sctx);
    close(p->sfd);
    close(p->cfd);
}

static bool
is_compact(struct pair *p)
{
    char desc[128];
    tls_conn_describe(p->server, desc, sizeof(desc));
    return strstr(desc, ", compact") != NULL;
}

static void
pattern(uint8_t *buf, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        buf[i] = (uint8_t)(i * 31u + seed + (i >> 8));
}

/* The client sends n bytes (in writes of at most chunk bytes); the server
 * reads them back with reads of at most rlen bytes. */
static void
client_to_server(struct pair *p, size_t n, size_t chunk, size_t rlen)
{
    uint8_t *sent = malloc(n), *got = malloc(n);
    pattern(sent, n, (unsigned)n);
    size_t off = 0, have = 0;
    for (int spins = 0; have < n && spins < 100000; spins++) {
        if (off < n) {
            size_t w = n - off < chunk ? n - off : chunk;
            int r = SSL_write(p->client, sent + off, (int)w);
            if (r > 0)
                off += (size_t)r;
            else
                assert_int_equal(SSL_get_error(p->client, r), SSL_ERROR_WANT_WRITE);
        }
        size_t want = n - have < rlen ? n - have : rlen;
        ssize_t r = tls_conn_read(p->server, got + have, want);
        if (r < 0)
            assert_int_equal(errno, EAGAIN);
        else {
            assert_true(r > 0);
            have += (size_t)r;
        }
    }
    assert_int_equal(have, n);
    assert_memory_equal(sent, got, n);
    assert_false(tls_conn_pending(p->server));
    free(sent);
    free(got);
}

/* The server sends n bytes through its output queue; the client reads. */
static void
server_to_client(struct pair *p, size_t n)
{
    uint8_t *sent = malloc(n), *got = malloc(n);
    pattern(sent, n, (unsigned)n + 7);
    struct outq q = {0};
    /* Several pieces, so records gather across them. */
    for (size_t off = 0; off < n; off += 1000) {
        size_t k = n - off < 1000 ? n - off : 1000;
        memcpy(outq_reserve(&q, k), sent + off, k);
    }
    size_t have = 0, taken = 0;
    enum rmq_status st = RMQ_AGAIN;
    for (int spins = 0; (have < n || st != RMQ_OK) && spins < 100000; spins++) {
        if (st != RMQ_OK) {
            size_t w;
            st = tls_conn_write(p->server, &q, &w);
            assert_true(st == RMQ_OK || st == RMQ_AGAIN);
            taken += w;
        }
        int r = SSL_read(p->client, got + have, (int)(n - have));
        if (r > 0)
            have += (size_t)r;
        else
            assert_int_equal(SSL_get_error(p->client, r), SSL_ERROR_WANT_READ);
    }
    assert_int_equal(st, RMQ_OK);
    assert_int_equal(taken, n);
    assert_int_equal(have, n);
    assert_memory_equal(sent, got, n);
    outq_clear(&q);
    free(sent);
    free(got);
}

static void
exchange(const char *suite)
{
    struct pair p;
    pair_open(&p, suite, TLS1_3_VERSION, true);
    assert_true(is_compact(&p));
    char desc[128];
    tls_conn_describe(p.server, desc, sizeof(desc));
    assert_non_null(strstr(desc, suite));
    client_to_server(&p, 10, 10, 4096);       /* a CONNECT-sized message */
    client_to_server(&p, 100000, 100000, 7);  /* many records, tiny reads */
    client_to_server(&p, 300000, 777, 65536); /* many small records */
    int small = 4608;
    setsockopt(p.sfd, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
    server_to_client(&p, 50);
    server_to_client(&p, 400000); /* far beyond the socket buffer */
    client_to_server(&p, 20, 20, 4096);
    pair_close(&p);
}

static void
test_aes_256_gcm(void **state)
{
    (void)state;
    exchange("TLS_AES_256_GCM_SHA384");
}

static void
test_aes_128_gcm(void **state)
{
    (void)state;
    exchange("TLS_AES_128_GCM_SHA256");
}

static void
test_chacha20(void **state)
{
    (void)state;
    exchange("TLS_CHACHA20_POLY1305_SHA256");
}

/* Tickets are records the server sends under its traffic key before the
 * hand-over: the compact session's first sequence number counts them, or
 * the client could not open a single record after them. */
static void
test_compact_after_session_tickets(void **state)
{
    (void)state;
    pair_tickets = 2;
    struct pair p;
    pair_open(&p, "TLS_AES_256_GCM_SHA384", TLS1_3_VERSION, true);
    pair_tickets = 0;
    assert_true(is_compact(&p));
    server_to_client(&p, 50); /* the client reads the two tickets first */
    SSL_SESSION *s = SSL_get1_session(p.client);
    assert_non_null(s);
    assert_int_equal(SSL_SESSION_has_ticket(s), 1);
    SSL_SESSION_free(s);
    client_to_server(&p, 1000, 1000, 4096);
    server_to_client(&p, 100000);
    pair_close(&p);
}

/* TLS 1.2, and TLS 1.3 with compact sessions off: OpenSSL keeps the
 * session, and it works as before. */
static void
test_stays_with_openssl(void **state)
{
    (void)state;
    struct pair p;
    pair_open(&p, NULL, TLS1_2_VERSION, true);
    assert_false(is_compact(&p));
    client_to_server(&p, 50000, 50000, 100);
    server_to_client(&p, 50000);
    pair_close(&p);

    pair_open(&p, NULL, TLS1_3_VERSION, false);
    assert_false(is_compact(&p));
    client_to_server(&p, 50000, 50000, 100);
    server_to_client(&p, 50000);
    pair_close(&p);
}

/* The client's KeyUpdate moves the server's receiving key on; asked for,
 * the server sends its own before its next data, and both keep working. */
static void
test_key_update(void **state)
{
    (void)state;
    struct pair p;
    pair_open(&p, NULL, TLS1_3_VERSION, true);
    assert_true(is_compact(&p));
    client_to_server(&p, 100, 100, 4096);
    assert_int_equal(SSL_key_update(p.client, SSL_KEY_UPDATE_REQUESTED), 1);
    client_to_server(&p, 5000, 5000, 4096); /* sends the KeyUpdate first */
    assert_int_equal(p.key_updates_seen, 0);
    server_to_client(&p, 3000);
    assert_int_equal(p.key_updates_seen, 1);
    client_to_server(&p, 100, 100, 4096);
    /* Not asking: the server's key stays. */
    assert_int_equal(SSL_key_update(p.client, SSL_KEY_UPDATE_NOT_REQUESTED), 1);
    client_to_server(&p, 100, 100, 4096);
    server_to_client(&p, 100);
    assert_int_equal(p.key_updates_seen, 1);
    pair_close(&p);
}

/* close_notify after data: the data, then the end. The server's own close
 * sends close_notify to the client. */
static void
test_close_notify(void **state)
{
    (void)state;
    struct pair p;
    pair_open(&p, NULL, TLS1_3_VERSION, true);
    assert_int_equal(SSL_write(p.client, "hello", 5), 5);
    SSL_shutdown(p.client);
    char buf[64];
    assert_int_equal(tls_conn_read(p.server, buf, sizeof(buf)), 5);
    assert_memory_equal(buf, "hello", 5);
    assert_int_equal(tls_conn_read(p.server, buf, sizeof(buf)), 0);
    pair_close(&p);

    pair_open(&p, NULL, TLS1_3_VERSION, true);
    tls_conn_free(p.server);
    p.server = NULL;
    int r = SSL_read(p.client, buf, sizeof(buf));
    assert_int_equal(r, 0);
    assert_int_equal(SSL_get_error(p.client, r), SSL_ERROR_ZERO_RETURN);
    pair_close(&p);
}

/* close_notify behind more data than a read takes: every byte first,
 * then the end, and the end again. */
static void
test_close_notify_after_more_than_a_read(void **state)
{
    (void)state;
    struct pair p;
    pair_open(&p, NULL, TLS1_3_VERSION, true);
    size_t n = 48 * 1024, have = 0;
    uint8_t *sent = malloc(n), *got = malloc(n);
    pattern(sent, n, 3);
    for (size_t off = 0; off < n;) {
        int w = SSL_write(p.client, sent + off, (int)(n - off)); /* a record at a time */
        assert_true(w > 0);
        off += (size_t)w;
    }
    SSL_shutdown(p.client);
    ssize_t r;
    while ((r = tls_conn_read(p.server, got + have, n - have < 20000 ? n - have : 20000)) > 0)
        have += (size_t)r;
    assert_int_equal(r, 0);
    assert_int_equal(have, n);
    assert_memory_equal(sent, got, n);
    assert_true(tls_conn_pending(p.server)); /* the end waits to be read again */
    assert_int_equal(tls_conn_read(p.server, got, 10), 0);
    free(sent);
    free(got);
    pair_close(&p);
}

/* Records sealed from the queue that the socket did not take are still
 * output to flush, even when the queue itself is empty. */
static void
test_unsent_records_count_as_output(void **state)
{
    (void)state;
    struct pair p;
    pair_open(&p, NULL, TLS1_3_VERSION, true);
    int small = 4608;
    setsockopt(p.sfd, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
    setsockopt(p.cfd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    struct outq q = {0};
    size_t n = 30000, w;
    memset(outq_reserve(&q, n), 'x', n);
    assert_int_equal(tls_conn_write(p.server, &q, &w), RMQ_AGAIN);
    assert_int_equal(outq_pending(&q), 0);
    assert_true(tls_conn_unsent(p.server) > 0);
    uint8_t *got = malloc(n);
    size_t have = 0;
    enum rmq_status st = RMQ_AGAIN;
    for (int spins = 0; (have < n || st != RMQ_OK) && spins < 100000; spins++) {
        int r = SSL_read(p.client, got + have, (int)(n - have));
        if (r > 0)
            have += (size_t)r;
        if (st != RMQ_OK)
            st = tls_conn_write(p.server, &q, &w);
    }
    assert_int_equal(st, RMQ_OK);
    assert_int_equal(have, n);
    assert_int_equal(tls_conn_unsent(p.server), 0);
    free(got);
    outq_clear(&q);
    pair_close(&p);
}

/* KeyUpdates are fine between data, but a peer that sends more than 32
 * records in a row without data is refused. */
static void
test_records_without_data_are_capped(void **state)
{
    (void)state;
    struct pair p;
    pair_open(&p, NULL, TLS1_3_VERSION, true);
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 20; i++) {
            assert_int_equal(SSL_key_update(p.client, SSL_KEY_UPDATE_NOT_REQUESTED), 1);
            assert_int_equal(SSL_do_handshake(p.client), 1);
        }
        client_to_server(&p, 100, 100, 4096);
    }
    for (int i = 0; i < 40; i++) {
        assert_int_equal(SSL_key_update(p.client, SSL_KEY_UPDATE_NOT_REQUESTED), 1);
        assert_int_equal(SSL_do_handshake(p.client), 1);
    }
    char buf[64];
    ssize_t r;
    int tries = 0;
    do /* a call reads a few times at most: EAGAIN means come back */
        r = tls_conn_read(p.server, buf, sizeof(buf));
    while (r < 0 && errno == EAGAIN && ++tries < 100);
    assert_int_equal(r, -1);
    assert_int_equal(errno, EPROTO);
    /* The client is told: a fatal alert. */
    assert_true(SSL_read(p.client, buf, sizeof(buf)) <= 0);
    pair_close(&p);
}

/* Data authenticated before a forged record is handed over; then the
 * error, every time. */
static void
test_data_before_a_forged_record(void **state)
{
    (void)state;
    struct pair p;
    pair_open(&p, NULL, TLS1_3_VERSION, true);
    assert_int_equal(SSL_write(p.client, "abc", 3), 3);
    uint8_t forged[5 + 40] = {23, 3, 3, 0, 40};
    memset(forged + 5, 0xab, 40);
    assert_int_equal(write(p.cfd, forged, sizeof(forged)), (ssize_t)sizeof(forged));
    char buf[64];
    assert_int_equal(tls_conn_read(p.server, buf, sizeof(buf)), 3);
    assert_memory_equal(buf, "abc", 3);
    for (int i = 0; i < 2; i++) {
        errno = 0;
        assert_int_equal(tls_conn_read(p.server, buf, sizeof(buf)), -1);
        assert_int_equal(errno, EPROTO);
    }
    pair_close(&p);
}

/* Raw bytes after the handshake; the server's read must fail with err. */
static void
expect_refused(const uint8_t *bytes, size_t n, bool then_close, int err)
{
    struct pair p;
    pair_open(&p, NULL, TLS1_3_VERSION, true);
    assert_true(is_compact(&p));
    client_to_server(&p, 10, 10, 4096);
    assert_int_equal(write(p.cfd, bytes, n), (ssize_t)n);
    if (then_close)
        shutdown(p.cfd, SHUT_WR);
    char buf[64];
    errno = 0;
    assert_int_equal(tls_conn_read(p.server, buf, sizeof(buf)), -1);
    assert_int_equal(errno, err);
    pair_close(&p);
}

static void
test_bad_records(void **state)
{
    (void)state;
    uint8_t forged[5 + 40] = {23, 3, 3, 0, 40};
    memset(forged + 5, 0xab, 40);
    expect_refused(forged, sizeof(forged), false, EPROTO); /* does not authenticate */
    const uint8_t ccs[] = {20, 3, 3, 0, 1, 1};
    expect_refused(ccs, sizeof(ccs), false, EPROTO); /* change_cipher_spec after the handshake */
    const uint8_t alert[] = {21, 3, 3, 0, 2, 1, 0};
    expect_refused(alert, sizeof(alert), false, EPROTO); /* a plaintext alert */
    const uint8_t huge[] = {23, 3, 3, 0x41, 0x01};
    expect_refused(huge, sizeof(huge), false, EPROTO); /* longer than 2^14 + 256 */
    const uint8_t cut[] = {23, 3, 3, 0, 40, 1, 2, 3};
    expect_refused(cut, sizeof(cut), true, ECONNRESET); /* the stream ends inside a record */
}

/* The record codec alone: a record opens once, at its sequence number;
 * padding after the content type is stripped; a record of padding only,
 * and one whose header was changed, are refused. */
static void
test_record_codec(void **state)
{
    (void)state;
    uint8_t c_secret[48], s_secret[48];
    memset(c_secret, 1, sizeof(c_secret));
    memset(s_secret, 2, sizeof(s_secret));
    struct tls13 server, client;
    assert_true(tls13_init(&server, 0x1302, c_secret, s_secret, 48));
    assert_false(tls13_init(&client, 0x1302, c_secret, s_secret, 32)); /* wrong length */
    assert_false(tls13_init(&client, 0x1304, c_secret, s_secret, 32)); /* CCM: not here */
    /* The client's view: it sends (tx) with the client secret. */
    assert_true(tls13_init(&client, 0x1302, s_secret, c_secret, 48));

    uint8_t rec[64], copy[64], *content, type;
    size_t clen;
    memcpy(rec + 5, "ping", 4);
    size_t n = tls13_seal(&client, TLS13_APPLICATION_DATA, rec, 4);
    assert_int_equal(n, 4 + TLS13_OVERHEAD);
    memcpy(copy, rec, n);
    assert_true(tls13_open(&server, rec, n, &content, &clen, &type));
    assert_int_equal(type, TLS13_APPLICATION_DATA);
    assert_int_equal(clen, 4);
    assert_memory_equal(content, "ping", 4);
    assert_false(tls13_open(&server, copy, n, &content, &clen, &type)); /* replayed */

    server.rx.seq = client.tx.seq;
    memcpy(rec + 5, "ab\x17\0", 4); /* content "ab", type 23, then padding */
    n = tls13_seal(&client, 0, rec, 4);
    assert_true(tls13_open(&server, rec, n, &content, &clen, &type));
    assert_int_equal(type, TLS13_APPLICATION_DATA);
    assert_int_equal(clen, 2);

    n = tls13_seal(&client, 0, rec, 0); /* padding only */
    assert_false(tls13_open(&server, rec, n, &content, &clen, &type));

    server.rx.seq = client.tx.seq;
    memcpy(rec + 5, "pong", 4);
    n = tls13_seal(&client, TLS13_APPLICATION_DATA, rec, 4);
    rec[2] = 1; /* the header is authenticated too */
    assert_false(tls13_open(&server, rec, n, &content, &clen, &type));

    /* After a KeyUpdate on both ends records open again. */
    assert_true(tls13_update(&client, &client.tx));
    assert_true(tls13_update(&server, &server.rx));
    memcpy(rec + 5, "next", 4);
    n = tls13_seal(&client, TLS13_APPLICATION_DATA, rec, 4);
    assert_true(tls13_open(&server, rec, n, &content, &clen, &type));
    assert_memory_equal(content, "next", 4);
    tls13_wipe(&server);
    tls13_wipe(&client);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_aes_256_gcm),
        cmocka_unit_test(test_aes_128_gcm),
        cmocka_unit_test(test_chacha20),
        cmocka_unit_test(test_compact_after_session_tickets),
        cmocka_unit_test(test_stays_with_openssl),
        cmocka_unit_test(test_key_update),
        cmocka_unit_test(test_close_notify),
        cmocka_unit_test(test_close_notify_after_more_than_a_read),
        cmocka_unit_test(test_unsent_records_count_as_output),
        cmocka_unit_test(test_records_without_data_are_capped),
        cmocka_unit_test(test_data_before_a_forged_record),
        cmocka_unit_test(test_bad_records),
        cmocka_unit_test(test_record_codec),
    };
    return cmocka_run_group_tests(tests, make_certificate, remove_certificate);
}
