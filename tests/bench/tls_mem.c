/* tls-mem: where the heap of an idle TLS connection goes, by OpenSSL source
 * line.
 *
 * Runs N server sessions of broker/tls.c (the broker's own context and
 * connection code) against N OpenSSL clients in this process over
 * socketpairs: handshake, 1 KiB each way (an MQTT CONNECT and CONNACK
 * stand-in), then the connections sit idle. Every OpenSSL allocation made
 * inside a server-side call is counted through CRYPTO_set_mem_functions,
 * tagged with the file:line OpenSSL passes; what is still allocated at the
 * end, divided by N, is the heap an idle server connection holds. "chunk"
 * adds glibc's per-block overhead (8 bytes, 16-byte rounding, 32 minimum),
 * which is what RSS sees.
 *
 * Built as BUILD/relaymq-tls-mem (a measuring tool, run by hand):
 *
 *   BUILD/relaymq-tls-mem --cert tls.crt --key tls.key [--n 200] [--tls12] [--no-compact]
 *       [--session-tickets N] [--client-no-ticket] [--ca ca.crt --client-cert c.crt --client-key c.key [--require-cert]
 *        [--cn-as-username]]
 *
 * Single-threaded; leaks nothing it does not report. */
#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "broker/listener_spec.h"
#include "broker/outq.h"
#include "broker/tls.h"

/* ---- counting allocator ---- */

#define MAX_SITES 4096
#define HDR 16 /* keeps the 16-byte alignment malloc gives */

struct site {
    const char *file;
    int line;
    int phase;
    long live_n;
    long live_bytes;
};

static struct site sites[MAX_SITES];
static int nsites;
static int phase = -1; /* -1: not counting; else index into PHASES */
static const char *const PHASES[] = {"SSL_new", "handshake", "read/write"};

struct hdr {
    int site; /* -1: not counted */
    int pad;
    size_t size;
};

static int
site_of(const char *file, int line)
{
    for (int i = 0; i < nsites; i++)
        if (sites[i].line == line && sites[i].phase == phase &&
            (sites[i].file == file || strcmp(sites[i].file, file) == 0))
            return i;
    if (nsites == MAX_SITES)
        return -1;
    sites[nsites] = (struct site){file, line, phase, 0, 0};
    return nsites++;
}

static void *
tag(void *raw, size_t n, const char *file, int line)
{
    if (!raw)
        return NULL;
    struct hdr *h = raw;
    h->size = n;
    h->site = phase >= 0 ? site_of(file ? file : "?", line) : -1;
    if (h->site >= 0) {
        sites[h->site].live_n++;
        sites[h->site].live_bytes += (long)n;
    }
    return (char *)raw + HDR;
}

static void
untag(void *p)
{
    struct hdr *h = (struct hdr *)((char *)p - HDR);
    if (h->site >= 0) {
        sites[h->site].live_n--;
        sites[h->site].live_bytes -= (long)h->size;
    }
}

static void *
m_malloc(size_t n, const char *file, int line)
{
    return tag(malloc(n + HDR), n, file, line);
}

static void *
m_realloc(void *p, size_t n, const char *file, int line)
{
    if (!p)
        return m_malloc(n, file, line);
    untag(p);
    void *raw = realloc((char *)p - HDR, n + HDR);
    if (!raw) {
        struct hdr *h = (struct hdr *)((char *)p - HDR);
        if (h->site >= 0) { /* still there: count it again */
            sites[h->site].live_n++;
            sites[h->site].live_bytes += (long)h->size;
        }
        return NULL;
    }
    return tag(raw, n, file, line);
}

static void
m_free(void *p, const char *file, int line)
{
    (void)file;
    (void)line;
    if (!p)
        return;
    untag(p);
    free((char *)p - HDR);
}

/* What glibc's malloc takes for a request of n bytes. */
static long
chunk(long n)
{
    long c = (n + 8 + 15) & ~15L;
    return c < 32 ? 32 : c;
}

/* ---- the connections ---- */

struct pair {
    struct tls_conn *srv;
    SSL *cli;
    int fd[2];
    bool srv_done, cli_done;
};

struct opts {
    const char *cert, *key, *ca, *client_cert, *client_key, *suites;
    bool tls12, require_cert, cn_as_username, no_ticket, no_compact;
    int n;
    unsigned session_tickets; /* the broker's --tls-session-tickets (default 0) */
};

static int
die(const char *what)
{
    fprintf(stderr, "tls-mem: %s\n", what);
    ERR_print_errors_fp(stderr);
    return 1;
}

static SSL_CTX *
client_ctx(const struct opts *o)
{
    SSL_CTX *c = SSL_CTX_new(TLS_client_method());
    if (!c)
        return NULL;
    if (o->tls12)
        SSL_CTX_set_max_proto_version(c, TLS1_2_VERSION);
    if (o->no_ticket)
        SSL_CTX_set_options(c, SSL_OP_NO_TICKET);
    if (o->suites && SSL_CTX_set_ciphersuites(c, o->suites) != 1) {
        SSL_CTX_free(c);
        return NULL;
    }
    if (o->client_cert && (SSL_CTX_use_certificate_file(c, o->client_cert, SSL_FILETYPE_PEM) != 1 ||
                           SSL_CTX_use_PrivateKey_file(c, o->client_key, SSL_FILETYPE_PEM) != 1)) {
        SSL_CTX_free(c);
        return NULL;
    }
    return c;
}

/* Steps every handshake until all are done; false if one fails. */
static bool
handshake_all(struct pair *p, int n)
{
    for (int left = n, rounds = 0; left > 0; rounds++) {
        if (rounds > 1000)
            return false;
        left = 0;
        for (int i = 0; i < n; i++) {
            if (!p[i].cli_done) {
                int r = SSL_do_handshake(p[i].cli);
                if (r == 1)
                    p[i].cli_done = true;
                else if (SSL_get_error(p[i].cli, r) != SSL_ERROR_WANT_READ)
                    return false;
            }
            if (!p[i].srv_done) {
                char why[256];
                phase = 1;
                enum rmq_status s = tls_conn_handshake(p[i].srv, why, sizeof(why));
                phase = -1;
                if (s == RMQ_OK)
                    p[i].srv_done = true;
                else if (s != RMQ_AGAIN)
                    return fprintf(stderr, "tls-mem: handshake: %s\n", why), false;
            }
            left += !p[i].cli_done || !p[i].srv_done;
        }
    }
    return true;
}

/* 1 KiB each way, then a server read that finds nothing (so that
 * SSL_MODE_RELEASE_BUFFERS lets go of the read buffer). */
static bool
exchange(struct pair *p)
{
    char buf[1024];
    memset(buf, 'x', sizeof(buf));
    if (SSL_write(p->cli, buf, sizeof(buf)) != (int)sizeof(buf))
        return false;
    size_t got = 0;
    phase = 2;
    while (got < sizeof(buf)) {
        ssize_t r = tls_conn_read(p->srv, buf, sizeof(buf) - got);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    struct outq q = {0};
    size_t written = 0;
    uint8_t *w = outq_reserve(&q, sizeof(buf));
    bool ok = got == sizeof(buf) && w;
    if (ok) {
        memcpy(w, buf, sizeof(buf));
        ok = tls_conn_write(p->srv, &q, &written) == RMQ_OK;
    }
    outq_clear(&q);
    ok = ok && tls_conn_read(p->srv, buf, sizeof(buf)) < 0 && errno == EAGAIN;
    phase = -1;
    while (ok && got > 0) {
        int r = SSL_read(p->cli, buf, sizeof(buf));
        if (r <= 0)
            return false;
        got -= (size_t)r < got ? (size_t)r : got;
    }
    return ok;
}

static int
cmp_sites(const void *a, const void *b)
{
    long x = ((const struct site *)a)->live_bytes, y = ((const struct site *)b)->live_bytes;
    return (x < y) - (x > y);
}

static void
report(const struct opts *o, SSL_CTX *srv_ctx, size_t own)
{
    qsort(sites, (size_t)nsites, sizeof(sites[0]), cmp_sites);
    long bytes = 0, chunks = 0, blocks = 0;
    printf("%-10s %7s %8s %8s  %s\n", "phase", "blocks", "bytes", "chunk", "OpenSSL file:line");
    for (int i = 0; i < nsites; i++) {
        const struct site *s = &sites[i];
        if (s->live_n <= 0)
            continue;
        /* sizes differ per block only rarely: count the chunks by average */
        long per_block = s->live_bytes / s->live_n;
        long ch = chunk(per_block) * s->live_n;
        bytes += s->live_bytes;
        chunks += ch;
        blocks += s->live_n;
        printf("%-10s %7.2f %8.1f %8.1f  %s:%d\n", PHASES[s->phase], (double)s->live_n / o->n,
               (double)s->live_bytes / o->n, (double)ch / o->n, s->file, s->line);
    }
    printf("per connection: %.1f blocks, %.0f bytes requested, %.0f bytes in glibc chunks "
           "(+ RelayMQ's own TLS state, %ld bytes); server session cache holds %ld\n",
           (double)blocks / o->n, (double)bytes / o->n, (double)chunks / o->n, (long)own,
           SSL_CTX_sess_number(srv_ctx));
}

static bool
parse(int argc, char **argv, struct opts *o)
{
    *o = (struct opts){.n = 200};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--tls12"))
            o->tls12 = true;
        else if (!strcmp(a, "--require-cert"))
            o->require_cert = true;
        else if (!strcmp(a, "--cn-as-username"))
            o->cn_as_username = true;
        else if (!strcmp(a, "--no-compact"))
            o->no_compact = true;
        else if (!strcmp(a, "--client-no-ticket"))
            o->no_ticket = true;
        else if (!strcmp(a, "--session-tickets") && v)
            o->session_tickets = (unsigned)atoi(argv[++i]);
        else if (!v)
            return false;
        else if (!strcmp(a, "--cert"))
            o->cert = argv[++i];
        else if (!strcmp(a, "--key"))
            o->key = argv[++i];
        else if (!strcmp(a, "--ca"))
            o->ca = argv[++i];
        else if (!strcmp(a, "--client-cert"))
            o->client_cert = argv[++i];
        else if (!strcmp(a, "--client-key"))
            o->client_key = argv[++i];
        else if (!strcmp(a, "--client-ciphersuites"))
            o->suites = argv[++i];
        else if (!strcmp(a, "--n"))
            o->n = atoi(argv[++i]);
        else
            return false;
    }
    return o->cert && o->key && o->n > 0 && o->n <= 5000 && !o->client_cert == !o->client_key;
}

int
main(int argc, char **argv)
{
    struct opts o;
    if (!CRYPTO_set_mem_functions(m_malloc, m_realloc, m_free))
        return die("CRYPTO_set_mem_functions failed");
    if (!parse(argc, argv, &o)) {
        fprintf(stderr, "usage: tls-mem --cert C --key K [--n N] [--tls12] [--no-compact] "
                        "[--session-tickets N] [--client-no-ticket] [--ca CA --client-cert C "
                        "--client-key K --require-cert --cn-as-username]\n");
        return 2;
    }
    struct listener_tls cfg = {.cert = o.cert,
                               .key = o.key,
                               .ca_file = o.ca,
                               .require_certificate = o.require_cert,
                               .use_identity_as_username = o.cn_as_username,
                               .compact_sessions = !o.no_compact,
                               .session_tickets = o.session_tickets,
                               .min_version = LISTENER_TLS_1_2};
    char err[512];
    SSL_CTX *sctx = tls_context_new(&cfg, err, sizeof(err));
    if (!sctx)
        return die(err);
    SSL_CTX *cctx = client_ctx(&o);
    struct pair *p = calloc((size_t)o.n, sizeof(*p));
    if (!cctx || !p)
        return die("client context");
    for (int i = 0; i < o.n; i++) {
        if (socketpair(AF_UNIX, SOCK_STREAM, 0, p[i].fd) != 0)
            return die(strerror(errno));
        fcntl(p[i].fd[0], F_SETFL, O_NONBLOCK);
        fcntl(p[i].fd[1], F_SETFL, O_NONBLOCK);
        phase = 0;
        p[i].srv = tls_conn_new(sctx, p[i].fd[0]);
        phase = -1;
        p[i].cli = SSL_new(cctx);
        if (!p[i].srv || !p[i].cli || SSL_set_fd(p[i].cli, p[i].fd[1]) != 1)
            return die("SSL_new");
        SSL_set_connect_state(p[i].cli);
    }
    if (!handshake_all(p, o.n))
        return die("handshake failed");
    for (int i = 0; i < o.n; i++)
        if (!exchange(&p[i]))
            return die("exchange failed");
    printf("%d connections, %s\n", o.n, o.tls12 ? "TLS 1.2" : "TLS 1.3 (default)");
    char desc[128];
    tls_conn_describe(p[0].srv, desc, sizeof(desc));
    char *cn = tls_conn_peer_cn(p[0].srv); /* as CONNECT would ask for it */
    printf("%s, client CN %s\n", desc, cn ? cn : "(none)");
    free(cn);
    report(&o, sctx, tls_conn_heap(p[0].srv));
    for (int i = 0; i < o.n; i++) {
        tls_conn_free(p[i].srv);
        SSL_free(p[i].cli);
        close(p[i].fd[0]);
        close(p[i].fd[1]);
    }
    free(p);
    SSL_CTX_free(cctx);
    tls_context_free(sctx);
    return 0;
}
