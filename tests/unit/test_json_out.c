/* Unit tests for common/json_out.c: every byte value 1..255 in keys and
 * values survives a round trip through jansson's parser (quotes,
 * backslashes, each control character, UTF-8), null and integer members,
 * the exact text of a small object, and overflow at every buffer size
 * (NULL, never a write past the buffer). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/json_out.h"

static void
test_exact_text(void **state)
{
    (void)state;
    char buf[128];
    struct json_out j = json_out_init(buf, sizeof(buf));
    json_out_key_str(&j, "event", "online");
    json_out_key_str(&j, "username", NULL);
    json_out_key_int(&j, "ts", 1765000000123);
    json_out_key_int(&j, "neg", -5);
    json_out_key_int(&j, "min", INT64_MIN);
    json_out_key_int(&j, "zero", 0);
    const char *text = json_out_finish(&j);
    assert_non_null(text);
    assert_string_equal(text,
                        "{\"event\":\"online\",\"username\":null,\"ts\":1765000000123,\"neg\":-5,"
                        "\"min\":-9223372036854775808,\"zero\":0}");
    assert_int_equal(j.len, strlen(text));
}

static void
test_empty_object(void **state)
{
    (void)state;
    char buf[3];
    struct json_out j = json_out_init(buf, sizeof(buf));
    assert_string_equal(json_out_finish(&j), "{}");
}

static void
test_every_byte_round_trips(void **state)
{
    (void)state;
    /* Bytes 1..127 one by one (ASCII, controls, quote, backslash), then a
     * UTF-8 string: each as a value and inside a key. */
    char value[256];
    for (int c = 1; c <= 128; c++) {
        if (c < 128)
            snprintf(value, sizeof(value), "a%cb%c", (char)c, (char)c);
        else
            snprintf(value, sizeof(value), "h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80");
        char key[64];
        snprintf(key, sizeof(key), "k%c", c < 128 ? (char)c : 'x');
        char buf[512];
        struct json_out j = json_out_init(buf, sizeof(buf));
        json_out_key_str(&j, key, value);
        json_out_key_int(&j, "n", c);
        const char *text = json_out_finish(&j);
        assert_non_null(text);
        json_error_t err;
        json_t *parsed = json_loads(text, 0, &err);
        if (!parsed)
            fail_msg("byte %d: %s does not parse: %s", c, text, err.text);
        assert_string_equal(json_string_value(json_object_get(parsed, key)), value);
        assert_int_equal(json_integer_value(json_object_get(parsed, "n")), c);
        assert_int_equal(json_object_size(parsed), 2);
        json_decref(parsed);
    }
}

static void
test_worst_case_fits_str_max(void **state)
{
    (void)state;
    /* 100 control characters: every one a \u00XX escape, so the value
     * takes exactly json_out_str_max(100) bytes. */
    char value[101];
    memset(value, 0x01, 100);
    value[100] = '\0';
    size_t text_len = strlen("{\"k\":") + json_out_str_max(100) + strlen("}");
    char buf[700];
    assert_true(text_len + 1 <= sizeof(buf));
    struct json_out j = json_out_init(buf, text_len + 1);
    json_out_key_str(&j, "k", value);
    assert_non_null(json_out_finish(&j));
    assert_int_equal(j.len, text_len);
    j = json_out_init(buf, text_len); /* one byte short */
    json_out_key_str(&j, "k", value);
    assert_null(json_out_finish(&j));
}

static void
test_overflow_at_every_size(void **state)
{
    (void)state;
    char full[256];
    struct json_out j = json_out_init(full, sizeof(full));
    json_out_key_str(&j, "device", "d\"1\n");
    json_out_key_int(&j, "ts", 42);
    const char *want = json_out_finish(&j);
    assert_non_null(want);
    size_t need = strlen(want) + 1;
    for (size_t cap = 0; cap <= need; cap++) {
        /* A guard byte after the buffer must never be touched. */
        char *buf = malloc(cap + 1);
        assert_non_null(buf);
        buf[cap] = '#';
        struct json_out k = json_out_init(buf, cap);
        json_out_key_str(&k, "device", "d\"1\n");
        json_out_key_int(&k, "ts", 42);
        const char *text = json_out_finish(&k);
        if (cap < need)
            assert_null(text);
        else
            assert_string_equal(text, want);
        assert_int_equal(buf[cap], '#');
        free(buf);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exact_text),
        cmocka_unit_test(test_empty_object),
        cmocka_unit_test(test_every_byte_round_trips),
        cmocka_unit_test(test_worst_case_fits_str_max),
        cmocka_unit_test(test_overflow_at_every_size),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
