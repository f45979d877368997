/* Unit tests for broker/topic.c: topic name and filter validity, and
 * filter matching, as tables taken mostly from the examples of MQTT 3.1.1
 * section 4.7. Strings are passed with explicit lengths (never relying on a
 * NUL) and copied into exactly sized buffers, so the sanitizers catch any
 * read past the end. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "broker/topic.h"

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

struct validity_case {
    const char *s;
    bool valid;
};

static const struct validity_case name_cases[] = {
    {"a", true},
    {"/", true},
    {"//", true},
    {"sport/tennis/player1", true},
    {"/finance", true},
    {"finance/", true},
    {"$SYS/broker/load", true},
    {" ", true},
    {"caf\xc3\xa9/\xe6\x97\xa5", true},
    {"", false},
    {"+", false},
    {"#", false},
    {"sport/+", false},
    {"sport/#", false},
    {"sport/ten+nis", false},
    {"sport/tennis#", false},
    {"a#", false},
};

static const struct validity_case filter_cases[] = {
    {"#", true},
    {"+", true},
    {"/", true},
    {"+/+", true},
    {"/+", true},
    {"+/", true},
    {"sport/#", true},
    {"sport/tennis/#", true},
    {"sport/+/player1", true},
    {"+/tennis/#", true},
    {"/#", true},
    {"//#", true},
    {"+/+/+", true},
    {"$SYS/#", true},
    {"a/b/c", true},
    {"", false},
    {"sport/tennis#", false},
    {"sport/tennis/#/ranking", false},
    {"#/", false},
    {"##", false},
    {"a/#b", false},
    {"sport+", false},
    {"+sport", false},
    {"sport/+x", false},
    {"sport/x+/y", false},
    {"++", false},
    {"+#", false},
    {"#+", false},
};

/* Copies s into an exactly sized heap buffer (no NUL) for the call. */
static char *
exact_copy(const char *s, size_t len)
{
    char *copy = test_malloc(len ? len : 1);
    if (len)
        memcpy(copy, s, len);
    return copy;
}

static void
test_name_valid(void **state)
{
    for (size_t i = 0; i < N_ELEMS(name_cases); i++) {
        size_t len = strlen(name_cases[i].s);
        char *copy = exact_copy(name_cases[i].s, len);
        if (topic_name_valid(copy, len) != name_cases[i].valid)
            fail_msg("name \"%s\": want %s", name_cases[i].s,
                     name_cases[i].valid ? "valid" : "invalid");
        test_free(copy);
    }
}

static void
test_filter_valid(void **state)
{
    for (size_t i = 0; i < N_ELEMS(filter_cases); i++) {
        size_t len = strlen(filter_cases[i].s);
        char *copy = exact_copy(filter_cases[i].s, len);
        if (topic_filter_valid(copy, len) != filter_cases[i].valid)
            fail_msg("filter \"%s\": want %s", filter_cases[i].s,
                     filter_cases[i].valid ? "valid" : "invalid");
        test_free(copy);
    }
}

/* Length limits: 65535 bytes is the most a 2-byte length can carry. */
static void
test_length_limits(void **state)
{
    const size_t max = 65535;
    char *s = test_malloc(max + 1);

    memset(s, 'a', max + 1);
    assert_true(topic_name_valid(s, max));
    assert_false(topic_name_valid(s, max + 1));
    assert_true(topic_filter_valid(s, max));
    assert_false(topic_filter_valid(s, max + 1));
    s[max - 1] = '#';
    s[max - 2] = '/';
    assert_true(topic_filter_valid(s, max));
    assert_false(topic_name_valid(s, max));
    /* A wildcard past the given length is not part of the string. */
    assert_true(topic_name_valid(s, max - 2));
    test_free(s);
}

/* A NUL byte is not special: lengths are explicit. */
static void
test_embedded_nul(void **state)
{
    assert_true(topic_name_valid("a\0b", 3));
    assert_true(topic_filter_valid("a\0b", 3));
    assert_false(topic_name_valid("a\0#", 3));
    assert_false(topic_filter_valid("a\0#", 3));
    assert_true(topic_matches("a\0b", 3, "a\0b", 3));
    assert_false(topic_matches("a\0b", 3, "a\0c", 3));
    assert_false(topic_matches("a", 1, "a\0", 2));
}

struct match_case {
    const char *filter;
    const char *name;
    bool match;
};

static const struct match_case match_cases[] = {
    /* 4.7.1.2 multi-level wildcard */
    {"sport/tennis/player1/#", "sport/tennis/player1", true},
    {"sport/tennis/player1/#", "sport/tennis/player1/ranking", true},
    {"sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", true},
    {"sport/tennis/player1/#", "sport/tennis/player2", false},
    {"sport/tennis/player1/#", "sport/tennis", false},
    {"sport/#", "sport", true},
    {"sport/#", "sport/", true},
    {"sport/#", "sports", false},
    {"sport/#", "spor", false},
    {"#", "sport", true},
    {"#", "/", true},
    {"#", "a/b/c/d", true},
    {"/#", "/", true},
    {"/#", "/a", true},
    {"/#", "a", false},
    /* 4.7.1.3 single-level wildcard */
    {"sport/tennis/+", "sport/tennis/player1", true},
    {"sport/tennis/+", "sport/tennis/player2", true},
    {"sport/tennis/+", "sport/tennis/player1/ranking", false},
    {"sport/+", "sport", false},
    {"sport/+", "sport/", true},
    {"+", "sport", true},
    {"+", "/sport", false},
    {"+", "sport/", false},
    {"+/+", "/finance", true},
    {"/+", "/finance", true},
    {"+", "/finance", false},
    {"+/tennis/#", "sport/tennis", true},
    {"+/tennis/#", "sport/tennis/x/y", true},
    {"+/tennis/#", "sport/tennisx", false},
    {"sport/+/player1", "sport/tennis/player1", true},
    {"sport/+/player1", "sport//player1", true},
    {"sport/+/player1", "sport/tennis/player2", false},
    {"+/+/+", "a/b/c", true},
    {"+/+/+", "a/b", false},
    {"+/+/+", "a/b/c/d", false},
    {"+/+", "/", true},
    {"+/", "a/", true},
    {"+/", "a", false},
    /* 4.7.2 topics beginning with $ */
    {"#", "$SYS/x", false},
    {"#", "$SYS", false},
    {"+/monitor/Clients", "$SYS/monitor/Clients", false},
    {"+/monitor", "$SYS/monitor", false},
    {"+", "$SYS", false},
    {"$SYS/#", "$SYS/x", true},
    {"$SYS/#", "$SYS", true},
    {"$SYS/monitor/+", "$SYS/monitor/Clients", true},
    {"$SYS/+", "$SYS/x/y", false},
    {"a/#", "a/$x", true},
    {"+/#", "a/$x", true},
    /* literal levels */
    {"a/b", "a/b", true},
    {"a/b", "a/bc", false},
    {"a/bc", "a/b", false},
    {"a/b", "a/b/", false},
    {"a/b/", "a/b", false},
    {"a/b", "A/b", false},
    {"a//b", "a//b", true},
    {"a//b", "a/b", false},
    {"/", "/", true},
    {"/", "//", false},
    {"//", "/", false},
    {"caf\xc3\xa9/+", "caf\xc3\xa9/x", true},
    /* a filter is not a name: "+" in a name is just a byte */
    {"sport/tennis", "sport/+", false},
    /* empty strings are invalid and match nothing */
    {"", "", false},
    {"#", "", false},
    {"", "a", false},
};

static void
test_matches(void **state)
{
    for (size_t i = 0; i < N_ELEMS(match_cases); i++) {
        const struct match_case *c = &match_cases[i];
        size_t flen = strlen(c->filter), nlen = strlen(c->name);
        char *filter = exact_copy(c->filter, flen);
        char *name = exact_copy(c->name, nlen);
        if (topic_matches(filter, flen, name, nlen) != c->match)
            fail_msg("filter \"%s\" name \"%s\": want %s", c->filter, c->name,
                     c->match ? "match" : "no match");
        test_free(filter);
        test_free(name);
    }
}

/* Every valid name matches itself, "#" (unless it starts with '$'), and a
 * filter made of one '+' per level. */
static void
test_matches_self(void **state)
{
    char plus[160];

    for (size_t i = 0; i < N_ELEMS(name_cases); i++) {
        const char *n = name_cases[i].s;
        size_t len = strlen(n), levels = 1, k = 0;
        if (!name_cases[i].valid)
            continue;
        assert_true(topic_matches(n, len, n, len));
        assert_int_equal(topic_matches("#", 1, n, len), n[0] != '$');
        for (size_t j = 0; j < len; j++)
            levels += n[j] == '/';
        for (size_t l = 0; l < levels; l++) {
            if (l)
                plus[k++] = '/';
            plus[k++] = '+';
        }
        assert_true(topic_filter_valid(plus, k));
        assert_int_equal(topic_matches(plus, k, n, len), n[0] != '$');
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_name_valid),    cmocka_unit_test(test_filter_valid),
        cmocka_unit_test(test_length_limits), cmocka_unit_test(test_embedded_nul),
        cmocka_unit_test(test_matches),       cmocka_unit_test(test_matches_self),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
