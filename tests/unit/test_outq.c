/* Unit tests for broker/outq.c: bytes and payloads by reference come out of
 * the socket in exactly the order they were queued, across partial writes
 * (a small socket buffer forces EAGAIN), and every reference is released. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "broker/outq.h"

static struct message *
payload_message(size_t len, uint8_t fill)
{
    uint8_t *p = malloc(len);
    memset(p, fill, len);
    struct message *m = message_new("t", 1, p, (uint32_t)len, 0, false, 0);
    free(p);
    return m;
}

/* Reads everything available from fd into out (growing), until EAGAIN. */
static size_t
drain(int fd, uint8_t *out, size_t cap)
{
    size_t got = 0;
    for (;;) {
        ssize_t n = read(fd, out + got, cap - got);
        if (n <= 0)
            return got;
        got += (size_t)n;
    }
}

static void
test_bytes_and_refs_keep_their_order(void **state)
{
    (void)state;
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    int small = 4096;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    fcntl(sv[1], F_SETFL, O_NONBLOCK);

    struct outq q = {0};
    struct message *big = payload_message(100000, 'B');
    uint8_t expect[400000];
    size_t elen = 0;
    for (int i = 0; i < 3; i++) {
        uint8_t *p = outq_reserve(&q, 5);
        memcpy(p, "head", 5);
        memcpy(expect + elen, "head", 5);
        elen += 5;
        assert_int_equal(outq_add_ref(&q, big), RMQ_OK);
        memset(expect + elen, 'B', 100000);
        elen += 100000;
    }
    uint8_t *tail = outq_reserve(&q, 3);
    memcpy(tail, "end", 3);
    memcpy(expect + elen, "end", 3);
    elen += 3;
    assert_int_equal(outq_pending(&q), elen);
    assert_int_equal(atomic_load(&big->refs), 4);

    static uint8_t got[400000];
    size_t have = 0, written;
    enum rmq_status st;
    do {
        st = outq_write(&q, sv[0], &written);
        assert_true(st == RMQ_OK || st == RMQ_AGAIN);
        have += drain(sv[1], got + have, sizeof(got) - have);
        /* Queue more bytes between partial writes: they must stay behind. */
    } while (st == RMQ_AGAIN);
    have += drain(sv[1], got + have, sizeof(got) - have);
    assert_int_equal(have, elen);
    assert_memory_equal(got, expect, elen);
    assert_int_equal(outq_pending(&q), 0);
    assert_int_equal(atomic_load(&big->refs), 1); /* every queue reference released */
    message_unref(big);
    outq_clear(&q);
    close(sv[0]);
    close(sv[1]);
}

/* More references than one writev takes: the bytes between them must not
 * overtake the payloads left for the next call. */
static void
test_many_refs_across_writev_batches(void **state)
{
    (void)state;
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    fcntl(sv[1], F_SETFL, O_NONBLOCK);
    struct outq q = {0};
    struct message *m = payload_message(1500, 'P');
    static uint8_t expect[200 * 1600], got[200 * 1600];
    size_t elen = 0;
    for (int i = 0; i < 200; i++) {
        uint8_t *p = outq_reserve(&q, 2);
        p[0] = (uint8_t)i;
        p[1] = 0xee;
        expect[elen++] = (uint8_t)i;
        expect[elen++] = 0xee;
        outq_add_ref(&q, m);
        memset(expect + elen, 'P', 1500);
        elen += 1500;
    }
    size_t have = 0, written;
    enum rmq_status st;
    do {
        st = outq_write(&q, sv[0], &written);
        assert_true(st == RMQ_OK || st == RMQ_AGAIN);
        have += drain(sv[1], got + have, sizeof(got) - have);
    } while (st == RMQ_AGAIN);
    have += drain(sv[1], got + have, sizeof(got) - have);
    assert_int_equal(have, elen);
    assert_memory_equal(got, expect, elen);
    assert_int_equal(atomic_load(&m->refs), 1);
    message_unref(m);
    outq_clear(&q);
    close(sv[0]);
    close(sv[1]);
}

static void
test_clear_releases_unsent_refs(void **state)
{
    (void)state;
    struct outq q = {0};
    struct message *m = payload_message(5000, 'x');
    outq_reserve(&q, 10);
    outq_add_ref(&q, m);
    outq_add_ref(&q, m);
    assert_int_equal(atomic_load(&m->refs), 3);
    outq_clear(&q);
    assert_int_equal(atomic_load(&m->refs), 1);
    message_unref(m);
}

static void
test_write_error_is_reported(void **state)
{
    (void)state;
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    close(sv[1]);
    struct outq q = {0};
    memcpy(outq_reserve(&q, 4), "abcd", 4);
    size_t written;
    assert_int_equal(outq_write(&q, sv[0], &written), RMQ_IO);
    outq_clear(&q);
    close(sv[0]);
}

/* The one-buffer-at-a-time writer (TLS): peek gives the pieces in wire
 * order, each piece only grows while unconsumed, partial consumes work, and
 * references are released once their payload is consumed. */
static void
test_peek_and_consume_in_pieces(void **state)
{
    (void)state;
    struct outq q = {0};
    struct message *m = payload_message(2000, 'P');
    const uint8_t *data;
    size_t len;
    uint8_t expect[4096], got[4096];
    size_t elen = 0, glen = 0;

    memcpy(outq_reserve(&q, 3), "abc", 3);
    outq_peek(&q, &data, &len);
    assert_int_equal(len, 3);
    memcpy(outq_reserve(&q, 2), "de", 2); /* the first piece grows */
    outq_peek(&q, &data, &len);
    assert_int_equal(len, 5);
    assert_int_equal(outq_add_ref(&q, m), RMQ_OK);
    memcpy(outq_reserve(&q, 2), "fg", 2);
    memcpy(expect, "abcde", 5);
    memset(expect + 5, 'P', 2000);
    memcpy(expect + 2005, "fg", 2);
    elen = 2007;
    outq_peek(&q, &data, &len);
    assert_int_equal(len, 5); /* bytes stop where the payload starts */
    /* Consume in odd steps: 2 bytes, then pieces of at most 333. */
    memcpy(got, data, 2);
    outq_consume(&q, 2);
    glen = 2;
    while (outq_pending(&q) > 0) {
        outq_peek(&q, &data, &len);
        assert_true(len > 0);
        size_t n = len < 333 ? len : 333;
        memcpy(got + glen, data, n);
        glen += n;
        outq_consume(&q, n);
    }
    assert_int_equal(glen, elen);
    assert_memory_equal(got, expect, elen);
    assert_int_equal(atomic_load(&m->refs), 1); /* the queue's reference is gone */
    assert_int_equal(q.off, 0);
    assert_int_equal(q.len, 0);
    outq_clear(&q);
    message_unref(m);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bytes_and_refs_keep_their_order),
        cmocka_unit_test(test_many_refs_across_writev_batches),
        cmocka_unit_test(test_clear_releases_unsent_refs),
        cmocka_unit_test(test_write_error_is_reported),
        cmocka_unit_test(test_peek_and_consume_in_pieces),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
