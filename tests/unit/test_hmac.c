/* Unit tests for http/hmac.c: the canonical string is pinned by vectors
 * computed independently (Python's hmac module), every field is covered by
 * the signature (nonce included), and the verifier refuses missing, malformed, bad, stale and
 * replayed requests, forgets replays once they are stale anyway, and fails
 * closed when its cache is full. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "http/hmac.h"

#define SECRET "secret-0123456789"
#define T0 1700000000000ull
#define SKEW 30000u

static const char close_body[] = "{\"reason\":\"kicked\"}";

static struct hmac_message
close_msg(void)
{
    return (struct hmac_message){
        .method = "POST",
        .path = "/internal/v1/channels/7/close",
        .timestamp_ms = T0,
        .nonce = "0123456789abcdef",
        .node = "node-a",
        .body = close_body,
        .body_len = strlen(close_body),
    };
}

static void
sign(const struct hmac_message *m, char out[HMAC_HEX_LEN + 1])
{
    assert_int_equal(hmac_sign(SECRET, strlen(SECRET), m, out), RMQ_OK);
}

static void
test_sign_matches_reference_vectors(void **state)
{
    char sig[HMAC_HEX_LEN + 1];
    struct hmac_message m = close_msg();
    sign(&m, sig);
    assert_string_equal(sig, "b160843585893be46e41e1c477805a115bff0875395d43f57ae8b5829f4ff017");

    struct hmac_message get = {.method = "GET",
                               .path = "/internal/v1/clients/a%2Fb",
                               .timestamp_ms = T0,
                               .nonce = "n1",
                               .node = "node-a"};
    sign(&get, sig);
    assert_string_equal(sig, "8d5895e4a6ccc1de29e0d09fafdb0942f49d1722897fa7582de19a366a6781da");
}

static void
test_every_field_is_signed(void **state)
{
    char base[HMAC_HEX_LEN + 1], other[HMAC_HEX_LEN + 1];
    struct hmac_message m = close_msg();
    sign(&m, base);

    struct hmac_message v[6];
    for (int i = 0; i < 6; i++)
        v[i] = m;
    v[0].method = "PUT";
    v[1].path = "/internal/v1/channels/8/close";
    v[2].timestamp_ms = T0 + 1;
    v[3].node = "node-b";
    v[4].body_len--; /* one byte less of body */
    v[5].nonce = "0123456789abcdeF";
    for (int i = 0; i < 6; i++) {
        sign(&v[i], other);
        assert_string_not_equal(base, other);
    }
    assert_int_equal(hmac_sign("other", 5, &m, other), RMQ_OK);
    assert_string_not_equal(base, other);
}

static void
test_newline_in_a_field_is_refused(void **state)
{
    char sig[HMAC_HEX_LEN + 1];
    struct hmac_message m = close_msg();
    m.path = "/a\nb";
    assert_int_equal(hmac_sign(SECRET, strlen(SECRET), &m, sig), RMQ_INVALID);
    m = close_msg();
    m.node = NULL;
    assert_int_equal(hmac_sign(SECRET, strlen(SECRET), &m, sig), RMQ_INVALID);
    m = close_msg();
    m.nonce = "";
    assert_int_equal(hmac_sign(SECRET, strlen(SECRET), &m, sig), RMQ_INVALID);
    m.nonce = "0123456789012345678901234567890123456789012345678901234567890123456789";
    assert_int_equal(hmac_sign(SECRET, strlen(SECRET), &m, sig), RMQ_INVALID);
}

static void
test_verify_accepts_once_then_refuses_the_replay(void **state)
{
    struct hmac_verifier *v = hmac_verifier_new(SECRET, strlen(SECRET), SKEW, 1024);
    char sig[HMAC_HEX_LEN + 1];
    struct hmac_message m = close_msg();
    sign(&m, sig);
    assert_int_equal(hmac_verify(v, &m, "1700000000000", sig, T0 + 5), HMAC_OK);
    assert_int_equal(hmac_verify(v, &m, "1700000000000", sig, T0 + 6), HMAC_REPLAY);
    /* The same request with another nonce is another request. */
    struct hmac_message again = m;
    char sig2[HMAC_HEX_LEN + 1];
    again.nonce = "fedcba9876543210";
    sign(&again, sig2);
    assert_int_equal(hmac_verify(v, &again, "1700000000000", sig2, T0 + 6), HMAC_OK);

    /* Upper-case hex is the same signature: still a replay. */
    for (char *p = sig; *p; p++)
        if (*p >= 'a' && *p <= 'f')
            *p = (char)(*p - 'a' + 'A');
    assert_int_equal(hmac_verify(v, &m, "1700000000000", sig, T0 + 7), HMAC_REPLAY);
    hmac_verifier_free(v);
}

static void
test_verify_refuses_bad_input(void **state)
{
    struct hmac_verifier *v = hmac_verifier_new(SECRET, strlen(SECRET), SKEW, 1024);
    char sig[HMAC_HEX_LEN + 1];
    struct hmac_message m = close_msg();
    sign(&m, sig);

    assert_int_equal(hmac_verify(v, &m, NULL, sig, T0), HMAC_MISSING);
    assert_int_equal(hmac_verify(v, &m, "1700000000000", NULL, T0), HMAC_MISSING);
    struct hmac_message anon = m;
    anon.node = "";
    assert_int_equal(hmac_verify(v, &anon, "1700000000000", sig, T0), HMAC_MISSING);
    anon = m;
    anon.nonce = NULL;
    assert_int_equal(hmac_verify(v, &anon, "1700000000000", sig, T0), HMAC_MISSING);
    struct hmac_message swapped = m; /* the nonce of another request */
    swapped.nonce = "0123456789abcdee";
    assert_int_equal(hmac_verify(v, &swapped, "1700000000000", sig, T0), HMAC_BAD_SIGNATURE);

    assert_int_equal(hmac_verify(v, &m, "17e11", sig, T0), HMAC_MALFORMED);
    assert_int_equal(hmac_verify(v, &m, "-1700000000000", sig, T0), HMAC_MALFORMED);
    assert_int_equal(hmac_verify(v, &m, "", sig, T0), HMAC_MALFORMED);
    assert_int_equal(hmac_verify(v, &m, "1700000000000", "abc", T0), HMAC_MALFORMED);
    char bad[HMAC_HEX_LEN + 1];
    memcpy(bad, sig, sizeof(bad));
    bad[10] = 'g';
    assert_int_equal(hmac_verify(v, &m, "1700000000000", bad, T0), HMAC_MALFORMED);

    bad[10] = sig[10] == '0' ? '1' : '0';
    assert_int_equal(hmac_verify(v, &m, "1700000000000", bad, T0), HMAC_BAD_SIGNATURE);
    /* The signature of another timestamp: the header was changed. */
    assert_int_equal(hmac_verify(v, &m, "1700000000001", sig, T0), HMAC_BAD_SIGNATURE);
    struct hmac_message tampered = m;
    tampered.body = "{\"reason\":\"takeovr\"}";
    assert_int_equal(hmac_verify(v, &tampered, "1700000000000", sig, T0), HMAC_BAD_SIGNATURE);

    struct hmac_verifier *w = hmac_verifier_new("wrong", 5, SKEW, 64);
    assert_int_equal(hmac_verify(w, &m, "1700000000000", sig, T0), HMAC_BAD_SIGNATURE);
    hmac_verifier_free(w);
    /* None of the refused attempts used the signature up. */
    assert_int_equal(hmac_verify(v, &m, "1700000000000", sig, T0), HMAC_OK);
    hmac_verifier_free(v);
}

static void
test_verify_window(void **state)
{
    struct hmac_verifier *v = hmac_verifier_new(SECRET, strlen(SECRET), SKEW, 1024);
    char sig[HMAC_HEX_LEN + 1];
    struct hmac_message m = close_msg();
    sign(&m, sig);
    assert_int_equal(hmac_verify(v, &m, "1700000000000", sig, T0 + SKEW + 1), HMAC_STALE);
    assert_int_equal(hmac_verify(v, &m, "1700000000000", sig, T0 - SKEW - 1), HMAC_STALE);
    /* The edges of the window are inside it (early clock, late clock). */
    assert_int_equal(hmac_verify(v, &m, "1700000000000", sig, T0 - SKEW), HMAC_OK);
    m.timestamp_ms = T0 + 1;
    sign(&m, sig);
    assert_int_equal(hmac_verify(v, &m, "1700000000001", sig, T0 + 1 + SKEW), HMAC_OK);
    /* Once stale, a replay is refused as stale (its cache entry expired). */
    assert_int_equal(hmac_verify(v, &m, "1700000000001", sig, T0 + 2 + SKEW), HMAC_STALE);
    hmac_verifier_free(v);
}

/* Distinct valid requests until the cache refuses one; returns how many
 * were accepted. */
static int
fill(struct hmac_verifier *v, uint64_t now, int max)
{
    char path[64], ts[24], sig[HMAC_HEX_LEN + 1];
    snprintf(ts, sizeof(ts), "%llu", (unsigned long long)now);
    for (int i = 0; i < max; i++) {
        snprintf(path, sizeof(path), "/p/%llu/%d", (unsigned long long)now, i);
        struct hmac_message m = {
            .method = "GET", .path = path, .timestamp_ms = now, .nonce = "x", .node = "n"};
        sign(&m, sig);
        enum hmac_result r = hmac_verify(v, &m, ts, sig, now);
        if (r != HMAC_OK) {
            assert_int_equal(r, HMAC_CACHE_FULL);
            return i;
        }
    }
    return max;
}

static void
test_full_cache_fails_closed_and_expired_slots_are_reused(void **state)
{
    struct hmac_verifier *v = hmac_verifier_new(SECRET, strlen(SECRET), SKEW, 64);
    int accepted = fill(v, T0, 1000);
    assert_true(accepted >= 32 && accepted <= 64);
    /* A window later every entry has expired: the same room is there again. */
    int again = fill(v, T0 + SKEW + 1000, 1000);
    assert_true(again >= 32 && again <= 64);
    hmac_verifier_free(v);
}

static void
test_empty_secret_is_refused(void **state)
{
    assert_null(hmac_verifier_new("", 0, SKEW, 64));
    assert_null(hmac_verifier_new(NULL, 0, SKEW, 64));
    assert_string_equal(hmac_result_name(HMAC_REPLAY), "replay");
    assert_string_equal(hmac_result_name(HMAC_BAD_SIGNATURE), "bad_signature");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sign_matches_reference_vectors),
        cmocka_unit_test(test_every_field_is_signed),
        cmocka_unit_test(test_newline_in_a_field_is_refused),
        cmocka_unit_test(test_verify_accepts_once_then_refuses_the_replay),
        cmocka_unit_test(test_verify_refuses_bad_input),
        cmocka_unit_test(test_verify_window),
        cmocka_unit_test(test_full_cache_fails_closed_and_expired_slots_are_reused),
        cmocka_unit_test(test_empty_secret_is_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
