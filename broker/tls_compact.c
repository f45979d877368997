/* TLS 1.3 sessions without OpenSSL's session object; see tls_compact.h.
 *
 * Reading: bytes from the socket go to a per-thread buffer behind any
 * partial record kept from before; whole records are opened in place,
 * their application data copied to the caller (what does not fit is kept
 * in c->plain, and the socket is not read again until it is taken); a
 * trailing partial record is copied out to c->in. Writing: plaintext from
 * the output queue is gathered into full records in a per-thread buffer,
 * sealed in place and written with one send(2); what the socket does not
 * take is copied out to c->out and goes first next time. So the per-thread
 * buffers carry all the traffic, and a connection holds heap only while
 * something is in flight.
 *
 * Records accepted (RFC 8446): outer type application_data only (a
 * change_cipher_spec or a plaintext record after the handshake is a
 * protocol error), length within 2^14 + 256, inner content at most 2^14.
 * Inner types: application data; alerts (close_notify ends the stream,
 * user_canceled is ignored, anything else is fatal); a handshake record
 * holding exactly one KeyUpdate (4.6.3: the peer's key moves on; if it asks,
 * ours moves on too, with a KeyUpdate of ours before our next record).
 * Anything else, and a record that does not authenticate, ends the
 * connection with EPROTO (no alert is sent: the broker closes, the client
 * sees the TCP close). */
#include "broker/tls_compact.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "broker/tls_record.h"

#define READ_CHUNK (64u * 1024u)
#define RECORDS_PER_WRITE 4u

enum { ALERT_WARNING = 1, ALERT_CLOSE_NOTIFY = 0, ALERT_USER_CANCELED = 90 };
enum { HS_KEY_UPDATE = 24 };

struct tls_compact {
    struct tls13 rec;
    bool key_update_owed; /* the peer asked: ours goes before our next record */
    uint8_t *in;          /* the start of a record not yet whole */
    size_t in_len;
    uint8_t *plain; /* decrypted application data not yet taken */
    size_t plain_off, plain_len;
    uint8_t *out; /* sealed records the socket has not taken */
    size_t out_off, out_len;
};

/* The thread's buffers: a read (a partial record, then a chunk from the
 * socket) and a write (RECORDS_PER_WRITE full records). First use
 * allocates; they live as long as the thread. */
struct scratch {
    uint8_t in[TLS13_HEADER + TLS13_MAX_CIPHER + READ_CHUNK];
    uint8_t out[RECORDS_PER_WRITE * (TLS13_MAX_PLAIN + TLS13_OVERHEAD)];
};
static _Thread_local struct scratch *scratch;

static struct scratch *
get_scratch(void)
{
    if (!scratch)
        scratch = malloc(sizeof(*scratch));
    return scratch;
}

struct tls_compact *
tls_compact_new(uint16_t suite, const uint8_t *client_secret, const uint8_t *server_secret,
                size_t secret_len, uint64_t server_records)
{
    struct tls_compact *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    if (!tls13_init(&c->rec, suite, client_secret, server_secret, secret_len)) {
        free(c);
        return NULL;
    }
    c->rec.tx.seq = server_records;
    return c;
}

/* Writes c->out's rest: RMQ_OK once empty. */
static enum rmq_status
flush_out(struct tls_compact *c, int fd)
{
    while (c->out_off < c->out_len) {
        ssize_t n = send(fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno == EAGAIN || errno == EWOULDBLOCK ? RMQ_AGAIN : RMQ_IO;
        c->out_off += (size_t)n;
    }
    free(c->out);
    c->out = NULL;
    c->out_off = c->out_len = 0;
    return RMQ_OK;
}

/* Keeps bytes the socket did not take, in order, after c->out. */
static bool
keep_out(struct tls_compact *c, const uint8_t *data, size_t n)
{
    size_t have = c->out_len - c->out_off;
    uint8_t *p = malloc(have + n);
    if (!p)
        return false;
    if (have)
        memcpy(p, c->out + c->out_off, have);
    memcpy(p + have, data, n);
    free(c->out);
    c->out = p;
    c->out_off = 0;
    c->out_len = have + n;
    return true;
}

void
tls_compact_free(struct tls_compact *c, int fd, bool close_notify)
{
    if (!c)
        return;
    if (close_notify && flush_out(c, fd) == RMQ_OK) {
        uint8_t rec[TLS13_HEADER + 2 + 1 + TLS13_TAG];
        rec[TLS13_HEADER] = ALERT_WARNING;
        rec[TLS13_HEADER + 1] = ALERT_CLOSE_NOTIFY;
        size_t n = tls13_seal(&c->rec, TLS13_ALERT, rec, 2);
        if (n && send(fd, rec, n, MSG_NOSIGNAL) < 0) {
            /* best effort: the socket closes next anyway */
        }
    }
    tls13_wipe(&c->rec);
    free(c->in);
    free(c->plain);
    free(c->out);
    free(c);
}

size_t
tls_compact_heap(const struct tls_compact *c)
{
    if (!c)
        return 0;
    return sizeof(*c) + c->in_len + c->plain_len + c->out_len;
}

bool
tls_compact_pending(const struct tls_compact *c)
{
    return c->plain_len > c->plain_off;
}

/* Copies kept plaintext to buf; returns the bytes taken. */
static size_t
take_plain(struct tls_compact *c, uint8_t *buf, size_t len)
{
    size_t n = c->plain_len - c->plain_off;
    if (n > len)
        n = len;
    memcpy(buf, c->plain + c->plain_off, n);
    c->plain_off += n;
    if (c->plain_off == c->plain_len) {
        free(c->plain);
        c->plain = NULL;
        c->plain_off = c->plain_len = 0;
    }
    return n;
}

static bool
keep_plain(struct tls_compact *c, const uint8_t *data, size_t n)
{
    uint8_t *p = realloc(c->plain, c->plain_len + n);
    if (!p)
        return false;
    memcpy(p + c->plain_len, data, n);
    c->plain = p;
    c->plain_len += n;
    return true;
}

/* A handshake record after the handshake: one KeyUpdate or nothing. */
static bool
on_handshake(struct tls_compact *c, const uint8_t *msg, size_t n)
{
    if (n != 5 || msg[0] != HS_KEY_UPDATE || msg[1] || msg[2] || msg[3] != 1 || msg[4] > 1)
        return false;
    if (!tls13_update(&c->rec, &c->rec.rx))
        return false;
    if (msg[4] == 1)
        c->key_update_owed = true;
    return true;
}

/* What one read found after the records it opened. */
enum verdict { GO_ON, ENDED, FAILED };

/* Opens the whole records in data[0..n); application data goes to
 * buf[*got..len) then to c->plain. *used gets the bytes of whole records
 * taken. */
static enum verdict
open_records(struct tls_compact *c, uint8_t *data, size_t n, size_t *used, uint8_t *buf, size_t len,
             size_t *got)
{
    size_t off = 0;
    enum verdict v = GO_ON;
    while (v == GO_ON && n - off >= TLS13_HEADER) {
        uint8_t *rec = data + off;
        size_t body = (size_t)rec[3] << 8 | rec[4];
        if (rec[0] != TLS13_APPLICATION_DATA || body > TLS13_MAX_CIPHER) {
            errno = EPROTO;
            return FAILED;
        }
        if (n - off < TLS13_HEADER + body)
            break;
        off += TLS13_HEADER + body;
        uint8_t *content, type;
        size_t clen;
        if (!tls13_open(&c->rec, rec, TLS13_HEADER + body, &content, &clen, &type) ||
            clen > TLS13_MAX_PLAIN) {
            errno = EPROTO;
            return FAILED;
        }
        if (type == TLS13_APPLICATION_DATA) {
            size_t direct = len - *got < clen ? len - *got : clen;
            memcpy(buf + *got, content, direct);
            *got += direct;
            if (direct < clen && !keep_plain(c, content + direct, clen - direct)) {
                errno = ENOMEM;
                return FAILED;
            }
        } else if (type == TLS13_ALERT && clen == 2) {
            if (content[1] == ALERT_CLOSE_NOTIFY)
                v = ENDED;
            else if (content[1] != ALERT_USER_CANCELED) {
                errno = EPROTO; /* a fatal alert from the peer */
                return FAILED;
            }
        } else if (type != TLS13_HANDSHAKE || !on_handshake(c, content, clen)) {
            errno = EPROTO;
            return FAILED;
        }
    }
    *used = off;
    return v;
}

ssize_t
tls_compact_read(struct tls_compact *c, int fd, void *out, size_t len, int *end)
{
    uint8_t *buf = out;
    *end = 0;
    if (tls_compact_pending(c))
        return (ssize_t)take_plain(c, buf, len);
    struct scratch *sc = get_scratch();
    if (!sc) {
        *end = -1;
        errno = ENOMEM;
        return -1;
    }
    size_t got = 0;
    for (;;) {
        size_t have = c->in_len;
        if (have)
            memcpy(sc->in, c->in, have);
        free(c->in);
        c->in = NULL;
        c->in_len = 0;
        ssize_t n = read(fd, sc->in + have, sizeof(sc->in) - have);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
            if (have && !(c->in = malloc(have))) {
                *end = -1;
                errno = ENOMEM;
                return -1;
            }
            if (have)
                memcpy(c->in, sc->in, have);
            c->in_len = have;
            errno = EAGAIN;
            return -1;
        }
        if (n <= 0) {
            /* EOF without close_notify ends the stream like one, unless
             * it cuts a record. */
            if (n == 0 && !have) {
                *end = 1;
                return 0;
            }
            if (n == 0)
                errno = ECONNRESET;
            *end = -1;
            return -1;
        }
        size_t total = have + (size_t)n, used = 0;
        enum verdict v = open_records(c, sc->in, total, &used, buf, len, &got);
        if (v == FAILED) {
            *end = -1;
            return -1;
        }
        if (v == ENDED) {
            *end = 1;
            return (ssize_t)got;
        }
        if (used < total) {
            if (!(c->in = malloc(total - used))) {
                *end = -1;
                errno = ENOMEM;
                return -1;
            }
            memcpy(c->in, sc->in + used, total - used);
            c->in_len = total - used;
        }
        if (got)
            return (ssize_t)got;
        /* Only a partial record, a KeyUpdate or an empty record: more may
         * be in the socket. */
    }
}

/* Gathers up to room bytes of q's plaintext at dst; returns how many. */
static size_t
gather(struct outq *q, uint8_t *dst, size_t room)
{
    size_t fill = 0;
    while (fill < room && outq_pending(q) > 0) {
        const uint8_t *data;
        size_t n;
        outq_peek(q, &data, &n);
        if (n > room - fill)
            n = room - fill;
        memcpy(dst + fill, data, n);
        outq_consume(q, n); /* n 0: drops an empty payload at the front */
        fill += n;
    }
    return fill;
}

/* Our KeyUpdate (not asking the peer for one) sealed at rec; then our key
 * moves on. Returns the record's size, 0 on failure. */
static size_t
seal_key_update(struct tls_compact *c, uint8_t *rec)
{
    uint8_t *msg = rec + TLS13_HEADER;
    msg[0] = HS_KEY_UPDATE;
    msg[1] = msg[2] = 0;
    msg[3] = 1;
    msg[4] = 0; /* update_not_requested */
    size_t n = tls13_seal(&c->rec, TLS13_HANDSHAKE, rec, 5);
    if (!n || !tls13_update(&c->rec, &c->rec.tx))
        return 0;
    c->key_update_owed = false;
    return n;
}

enum rmq_status
tls_compact_write(struct tls_compact *c, int fd, struct outq *q, size_t *written)
{
    *written = 0;
    struct scratch *sc = get_scratch();
    if (!sc)
        return RMQ_IO;
    for (;;) {
        enum rmq_status st = flush_out(c, fd);
        if (st != RMQ_OK)
            return st;
        bool rekey = c->key_update_owed || c->rec.tx.seq >= TLS13_REKEY_RECORDS;
        if (!rekey && outq_pending(q) == 0)
            return RMQ_OK;
        size_t used = 0;
        if (rekey && !(used = seal_key_update(c, sc->out)))
            return RMQ_IO;
        while (outq_pending(q) > 0 && sizeof(sc->out) - used > TLS13_OVERHEAD) {
            size_t room = sizeof(sc->out) - used - TLS13_OVERHEAD;
            uint8_t *rec = sc->out + used;
            size_t fill =
                gather(q, rec + TLS13_HEADER, room < TLS13_MAX_PLAIN ? room : TLS13_MAX_PLAIN);
            if (!fill)
                continue; /* only empty payloads were dropped */
            size_t n = tls13_seal(&c->rec, TLS13_APPLICATION_DATA, rec, fill);
            if (!n)
                return RMQ_IO;
            used += n;
            *written += fill;
        }
        ssize_t n;
        do
            n = send(fd, sc->out, used, MSG_NOSIGNAL);
        while (n < 0 && errno == EINTR);
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
            return RMQ_IO;
        size_t sent = n < 0 ? 0 : (size_t)n;
        if (sent < used) {
            /* The records are sealed: they must go, in this order. */
            if (!keep_out(c, sc->out + sent, used - sent))
                return RMQ_IO;
            return RMQ_AGAIN;
        }
    }
}
