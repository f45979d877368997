/* Unit tests for mqtt_utf8_valid (broker/packet_codec.c), the check every
 * topic, client id and string field of a packet goes through: a table of
 * valid and invalid strings (overlong forms, surrogates, code points above
 * U+10FFFF, U+0000, truncated sequences), a bad byte at every position of a
 * long string, and every 1- and 2-byte string and chosen longer ones
 * against a slow reference decoder. The codec allocates nothing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "broker/packet_codec.h"
#include "utf8_reference.h"

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

struct utf8_case {
    const char *s;
    size_t len;
    bool valid;
};

/* clang-format off */
#define U(s, v) {s, sizeof(s) - 1, v}

static const struct utf8_case utf8_cases[] = {
    U("", true),
    U("a", true),
    U("sport/tennis/player1 and a long ascii tail", true),
    U("\x7f", true),
    U("\x01\x1f", true),
    U("\x00", false),
    U("a\x00", false),
    U("abcdefghij\x00klmnop", false),
    U("\xc2\x80", true),                 /* U+0080 */
    U("\xdf\xbf", true),                 /* U+07FF */
    U("\xc0\x80", false),                /* overlong U+0000 */
    U("\xc1\xbf", false),                /* overlong U+007F */
    U("\xe0\xa0\x80", true),             /* U+0800 */
    U("\xe0\x80\x80", false),            /* overlong */
    U("\xe0\x9f\xbf", false),            /* overlong U+07FF */
    U("\xed\x9f\xbf", true),             /* U+D7FF */
    U("\xed\xa0\x80", false),            /* U+D800 */
    U("\xed\xbf\xbf", false),            /* U+DFFF */
    U("\xee\x80\x80", true),             /* U+E000 */
    U("\xef\xbf\xbf", true),             /* U+FFFF */
    U("\xe2\x82\xac", true),             /* euro sign */
    U("\xf0\x90\x80\x80", true),         /* U+10000 */
    U("\xf0\x80\x80\x80", false),        /* overlong */
    U("\xf0\x8f\xbf\xbf", false),        /* overlong U+FFFF */
    U("\xf0\x9f\x98\x80", true),         /* emoji */
    U("\xf4\x8f\xbf\xbf", true),         /* U+10FFFF */
    U("\xf4\x90\x80\x80", false),        /* U+110000 */
    U("\xf5\x80\x80\x80", false),
    U("\xf8\x88\x80\x80\x80", false),    /* old 5-byte form */
    U("\xfe", false),
    U("\xff", false),
    U("\x80", false),                    /* lone continuation */
    U("\xbf", false),
    U("\xc3", false),                    /* truncated */
    U("\xe2\x82", false),
    U("\xf0\x9f\x98", false),
    U("\xc3\x28", false),                /* bad continuation */
    U("\xe2\x28\xa1", false),
    U("\xe2\x82\x28", false),
    U("\xf0\x9f\x98\x28", false),
    U("\xf0\x9f\xc0\x80", false),
    U("abc\xc3\xa9" "defghijklmnop", true),
    U("abcdefgh\xc3\xa9ijklmnopq", true),
    U("abcdefghijklmnop\xed\xa0\x80", false),
    U("abcdefghijklmnop\xc3", false),
    U("\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e/\xe6\x97\xa5", true),
};
/* clang-format on */

static void
test_utf8_table(void **state)
{
    for (size_t i = 0; i < N_ELEMS(utf8_cases); i++) {
        const struct utf8_case *c = &utf8_cases[i];
        if (mqtt_utf8_valid((const uint8_t *)c->s, c->len) != c->valid)
            fail_msg("utf8 case %zu (%zu bytes): want %s", i, c->len,
                     c->valid ? "valid" : "invalid");
    }
}

/* A NUL or a stray byte at every position of a long ASCII string, so each
 * lane of the 8-byte fast path and the byte-wise tail sees it. */
static void
test_utf8_every_position(void **state)
{
    static const uint8_t bad[] = {0x00, 0x80, 0xff, 0xc0};
    uint8_t buf[37];

    for (size_t b = 0; b < N_ELEMS(bad); b++) {
        for (size_t pos = 0; pos < sizeof(buf); pos++) {
            memset(buf, 'x', sizeof(buf));
            assert_true(mqtt_utf8_valid(buf, sizeof(buf)));
            buf[pos] = bad[b];
            if (mqtt_utf8_valid(buf, sizeof(buf)))
                fail_msg("byte 0x%02x at %zu accepted", bad[b], pos);
            assert_true(mqtt_utf8_valid(buf, pos)); /* the prefix is fine */
        }
    }
}

static void
check_utf8_ref(const uint8_t *s, size_t len)
{
    if (mqtt_utf8_valid(s, len) != ref_utf8_valid(s, len))
        fail_msg("utf8 mismatch on %zu bytes %02x %02x %02x %02x", len, s[0], len > 1 ? s[1] : 0,
                 len > 2 ? s[2] : 0, len > 3 ? s[3] : 0);
}

/* Every 1- and 2-byte string, every 3-byte string with a lead byte >= 0xe0,
 * and 4-byte strings with a 4-byte lead over chosen continuation bytes. */
static void
test_utf8_exhaustive(void **state)
{
    static const uint8_t tails[] = {0x00, 0x7f, 0x80, 0x8f, 0x90, 0xbf, 0xc0};
    uint8_t s[4];

    for (unsigned a = 0; a < 256; a++) {
        s[0] = (uint8_t)a;
        check_utf8_ref(s, 1);
        for (unsigned b = 0; b < 256; b++) {
            s[1] = (uint8_t)b;
            check_utf8_ref(s, 2);
            for (unsigned c = 0; a >= 0xe0 && c < 256; c++) {
                s[2] = (uint8_t)c;
                check_utf8_ref(s, 3);
                for (size_t d = 0; a >= 0xf0 && a < 0xf8 && d < N_ELEMS(tails); d++) {
                    s[3] = tails[d];
                    check_utf8_ref(s, 4);
                }
            }
        }
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_utf8_table),
        cmocka_unit_test(test_utf8_every_position),
        cmocka_unit_test(test_utf8_exhaustive),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
