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
/* Socket reads per tls_compact_read call at most. */
#define MAX_READS 4
/* Records in a row that carry no data (KeyUpdate, empty, user_canceled)
 * before the peer is refused; OpenSSL allows 32 of each. */
#define MAX_IDLE_RECORDS 32u

enum { ALERT_WARNING = 1, ALERT_FATAL = 2 };
enum {
    ALERT_CLOSE_NOTIFY = 0,
    ALERT_UNEXPECTED_MESSAGE = 10,
    ALERT_BAD_RECORD_MAC = 20,
    ALERT_RECORD_OVERFLOW = 22,
    ALERT_USER_CANCELED = 90,
};
enum { HS_KEY_UPDATE = 24 };

struct tls_compact {
    struct tls13 rec;
    bool key_update_owed;  /* the peer asked: ours goes before our next record */
    bool closed;           /* close_notify or EOF received: reads return 0 */
    int read_errno;        /* reading failed: reads return -1 with it */
    uint32_t idle_records; /* records in a row without data */
    uint8_t *in;           /* the start of a record not yet whole */
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

/* Frees p (from malloc) after zeroing its n bytes. */
static void
wipe_free(void *p, size_t n)
{
    if (p)
        OPENSSL_cleanse(p, n);
    free(p);
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
    wipe_free(c->in, c->in_len);
    wipe_free(c->plain, c->plain_len);
    wipe_free(c->out, c->out_len);
    free(c);
}

size_t
tls_compact_heap(const struct tls_compact *c)
{
    if (!c)
        return 0;
    return sizeof(*c) + c->in_len + c->plain_len + c->out_len;
}

static bool
plain_waiting(const struct tls_compact *c)
{
    return c->plain_len > c->plain_off;
}

bool
tls_compact_pending(const struct tls_compact *c)
{
    return plain_waiting(c) || c->closed || c->read_errno;
}

size_t
tls_compact_unsent(const struct tls_compact *c)
{
    return c->out_len - c->out_off;
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

/* Ends the session for reading with errno err; the peer is told with a
 * fatal alert (RFC 8446 6.2) when nothing of ours waits in the socket's
 * way and err is the peer's fault. */
static void
fail(struct tls_compact *c, int fd, int err, uint8_t alert)
{
    c->read_errno = err;
    if (!alert || c->out_len > c->out_off)
        return;
    uint8_t rec[TLS13_HEADER + 2 + 1 + TLS13_TAG];
    rec[TLS13_HEADER] = ALERT_FATAL;
    rec[TLS13_HEADER + 1] = alert;
    size_t n = tls13_seal(&c->rec, TLS13_ALERT, rec, 2);
    if (n && send(fd, rec, n, MSG_NOSIGNAL) < 0) {
        /* best effort: the connection closes next */
    }
}

/* Opens the whole records in data[0..n); application data goes to
 * buf[*got..len) then to c->plain. *used gets the bytes of whole records
 * taken. False when the session failed (c->read_errno). */
static bool
open_records(struct tls_compact *c, int fd, uint8_t *data, size_t n, size_t *used, uint8_t *buf,
             size_t len, size_t *got)
{
    size_t off = 0;
    while (!c->closed && n - off >= TLS13_HEADER) {
        uint8_t *rec = data + off;
        size_t body = (size_t)rec[3] << 8 | rec[4];
        if (rec[0] != TLS13_APPLICATION_DATA) {
            fail(c, fd, EPROTO, ALERT_UNEXPECTED_MESSAGE);
            return false;
        }
        if (body > TLS13_MAX_CIPHER) {
            fail(c, fd, EPROTO, ALERT_RECORD_OVERFLOW);
            return false;
        }
        if (n - off < TLS13_HEADER + body)
            break;
        off += TLS13_HEADER + body;
        uint8_t *content, type;
        size_t clen;
        if (!tls13_open(&c->rec, rec, TLS13_HEADER + body, &content, &clen, &type)) {
            fail(c, fd, EPROTO, ALERT_BAD_RECORD_MAC);
            return false;
        }
        /* The inner plaintext, padding included, is at most 2^14 + 1. */
        if (body - TLS13_TAG > TLS13_MAX_PLAIN + 1) {
            fail(c, fd, EPROTO, ALERT_RECORD_OVERFLOW);
            return false;
        }
        bool data_record = type == TLS13_APPLICATION_DATA && clen > 0;
        /* Records without data cost work and give nothing: a peer that
         * sends many in a row is refused, as OpenSSL does. */
        c->idle_records = data_record ? 0 : c->idle_records + 1;
        if (c->idle_records > MAX_IDLE_RECORDS) {
            fail(c, fd, EPROTO, ALERT_UNEXPECTED_MESSAGE);
            return false;
        }
        if (type == TLS13_APPLICATION_DATA) {
            size_t direct = len - *got < clen ? len - *got : clen;
            memcpy(buf + *got, content, direct);
            *got += direct;
            if (direct < clen && !keep_plain(c, content + direct, clen - direct)) {
                fail(c, fd, ENOMEM, 0);
                return false;
            }
        } else if (type == TLS13_ALERT && clen == 2) {
            if (content[1] == ALERT_CLOSE_NOTIFY)
                c->closed = true; /* anything after it is ignored */
            else if (content[1] != ALERT_USER_CANCELED) {
                fail(c, fd, EPROTO, 0); /* the peer's fatal alert */
                return false;
            }
        } else if (type != TLS13_HANDSHAKE || !on_handshake(c, content, clen)) {
            fail(c, fd, EPROTO, ALERT_UNEXPECTED_MESSAGE);
            return false;
        }
    }
    *used = off;
    return true;
}

/* Keeps data[0..n) (the start of a record) for the next read. */
static bool
keep_in(struct tls_compact *c, const uint8_t *data, size_t n)
{
    if (n && !(c->in = malloc(n)))
        return false;
    if (n)
        memcpy(c->in, data, n);
    c->in_len = n;
    return true;
}

/* What the session has when the socket is not read (again): kept data,
 * then the end or the error, else nothing yet. */
static ssize_t
no_more_input(struct tls_compact *c, uint8_t *buf, size_t len, size_t got)
{
    if (got)
        return (ssize_t)got;
    if (plain_waiting(c))
        return (ssize_t)take_plain(c, buf, len);
    if (c->read_errno) {
        errno = c->read_errno;
        return -1;
    }
    if (c->closed)
        return 0;
    errno = EAGAIN;
    return -1;
}

ssize_t
tls_compact_read(struct tls_compact *c, int fd, void *out, size_t len)
{
    uint8_t *buf = out;
    if (tls_compact_pending(c))
        return no_more_input(c, buf, len, 0);
    struct scratch *sc = get_scratch();
    if (!sc) {
        errno = ENOMEM;
        return -1;
    }
    size_t got = 0;
    /* A few reads at most: what is left raises the next EV_READ. */
    for (int reads = 0; reads < MAX_READS && !got && !tls_compact_pending(c); reads++) {
        size_t have = c->in_len;
        if (have)
            memcpy(sc->in, c->in, have);
        free(c->in);
        c->in = NULL;
        c->in_len = 0;
        /* No more ciphertext than the caller can take as plaintext (a
         * record's plaintext is shorter than the record), so that nothing
         * usually has to wait in c->plain; but a whole record at least,
         * so that a small read does not take many system calls. */
        size_t want = len > have ? len - have : 0;
        if (want < TLS13_HEADER + TLS13_MAX_CIPHER)
            want = TLS13_HEADER + TLS13_MAX_CIPHER;
        if (want > sizeof(sc->in) - have)
            want = sizeof(sc->in) - have;
        ssize_t n = read(fd, sc->in + have, want);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
            if (!keep_in(c, sc->in, have)) {
                errno = ENOMEM;
                return -1;
            }
            break;
        }
        if (n <= 0) {
            /* EOF without close_notify ends the stream like one, unless
             * it cuts a record. */
            if (n == 0 && !have)
                c->closed = true;
            else
                c->read_errno = n == 0 ? ECONNRESET : errno;
            break;
        }
        size_t total = have + (size_t)n, used = 0;
        if (!open_records(c, fd, sc->in, total, &used, buf, len, &got))
            break;
        if (!c->closed && !keep_in(c, sc->in + used, total - used)) {
            c->read_errno = ENOMEM;
            break;
        }
    }
    return no_more_input(c, buf, len, got);
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
