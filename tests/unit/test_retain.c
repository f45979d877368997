/* Unit tests for broker/retain.c: set, replace and clear with their
 * reference counts, count and bytes, retain_match over '+', '#' and '$'
 * names, a level with 100k children, the depth limit, and a randomized
 * cross-check against a brute-force matcher written here from MQTT 3.1.1
 * section 4.7 (not broker/topic.c). Leaks are caught by the ASan build;
 * pruning is checked through retain_node_count(). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "topic_reference.h"

#include "broker/retain.h"

/* ---- helpers ---- */


static struct message *
msg_new(const char *topic, const char *payload)
{
    struct message *msg = message_new(topic, (uint16_t)strlen(topic), (const uint8_t *)payload,
                                      (uint32_t)strlen(payload), 1, true, 0);
    assert_non_null(msg);
    return msg;
}

static unsigned
refs(struct message *msg)
{
    return atomic_load(&msg->refs);
}

/* Stores topic with payload and drops the caller's reference. */
static void
put(struct retain_store *store, const char *topic, const char *payload)
{
    struct message *msg = msg_new(topic, payload);
    assert_int_equal(retain_set(store, msg), RMQ_OK);
    message_unref(msg);
}

struct found {
    size_t n;
    size_t cap;
    struct message **msgs;
};

static void
collect(struct message *msg, void *arg)
{
    struct found *f = arg;
    if (f->n == f->cap) {
        f->cap = f->cap ? f->cap * 2 : 16;
        f->msgs = realloc(f->msgs, f->cap * sizeof(*f->msgs));
        assert_non_null(f->msgs);
    }
    f->msgs[f->n++] = msg;
}

static size_t
match(const struct retain_store *store, const char *filter, struct found *f)
{
    f->n = 0;
    retain_match(store, filter, strlen(filter), collect, f);
    return f->n;
}

static int
cmp_topic(const void *a, const void *b)
{
    return strcmp((*(struct message *const *)a)->topic, (*(struct message *const *)b)->topic);
}

/* The matched topics, sorted and joined with '|'. */
static const char *
match_list(const struct retain_store *store, const char *filter, struct found *f)
{
    static char out[1024];
    size_t n = 0;
    if (match(store, filter, f))
        qsort(f->msgs, f->n, sizeof(*f->msgs), cmp_topic);
    out[0] = '\0';
    for (size_t i = 0; i < f->n; i++)
        n += (size_t)snprintf(out + n, sizeof(out) - n, "%s%s", i ? "|" : "", f->msgs[i]->topic);
    return out;
}

/* ---- set, replace, clear ---- */

static void
test_set_replace_clear(void **state)
{
    struct retain_store *store = retain_new();
    struct found f = {0};
    assert_non_null(store);
    struct message *m1 = msg_new("a/b", "one");
    struct message *m2 = msg_new("a/b", "second");
    struct message *clear = msg_new("a/b", "");

    assert_int_equal(retain_set(store, m1), RMQ_OK);
    assert_int_equal(refs(m1), 2);
    assert_int_equal(retain_count(store), 1);
    assert_int_equal(retain_bytes(store), message_size(m1));
    assert_int_equal(retain_node_count(store), 2);

    assert_int_equal(retain_set(store, m2), RMQ_OK);
    assert_int_equal(refs(m1), 1);
    assert_int_equal(refs(m2), 2);
    assert_int_equal(retain_count(store), 1);
    assert_int_equal(retain_bytes(store), message_size(m2));
    assert_int_equal(match(store, "a/b", &f), 1);
    assert_ptr_equal(f.msgs[0], m2);

    /* Setting the stored message again keeps exactly one reference. */
    assert_int_equal(retain_set(store, m2), RMQ_OK);
    assert_int_equal(refs(m2), 2);
    assert_int_equal(retain_bytes(store), message_size(m2));

    assert_int_equal(retain_set(store, clear), RMQ_OK);
    assert_int_equal(refs(m2), 1);
    assert_int_equal(refs(clear), 1);
    assert_int_equal(retain_count(store), 0);
    assert_int_equal(retain_bytes(store), 0);
    assert_int_equal(retain_node_count(store), 0);
    assert_int_equal(match(store, "#", &f), 0);

    /* Clearing what is not there is fine. */
    assert_int_equal(retain_set(store, clear), RMQ_OK);
    message_unref(m1);
    message_unref(m2);
    message_unref(clear);
    retain_free(store);
    free(f.msgs);
}

static void
test_clear_prunes_only_empty_nodes(void **state)
{
    struct retain_store *store = retain_new();
    struct found f = {0};
    assert_non_null(store);
    put(store, "a", "x");
    put(store, "a/b/c", "y");
    put(store, "a/b/d", "z");
    assert_int_equal(retain_node_count(store), 4);
    put(store, "a/b/c", "");
    assert_int_equal(retain_node_count(store), 3);
    put(store, "a/b/d", "");
    assert_int_equal(retain_node_count(store), 1); /* "a" keeps its message */
    assert_int_equal(retain_count(store), 1);
    assert_string_equal(match_list(store, "#", &f), "a");
    put(store, "a", "");
    assert_int_equal(retain_node_count(store), 0);
    retain_free(store);
    free(f.msgs);
}

/* The callback's own reference outlives the store. */
static void
keep_ref(struct message *msg, void *arg)
{
    *(struct message **)arg = message_ref(msg);
}

static void
test_callback_keeps_reference(void **state)
{
    struct retain_store *store = retain_new();
    struct message *kept = NULL;
    assert_non_null(store);
    put(store, "x/y", "payload");
    retain_match(store, "x/+", 3, keep_ref, &kept);
    assert_non_null(kept);
    assert_int_equal(refs(kept), 2);
    retain_free(store);
    assert_int_equal(refs(kept), 1);
    assert_string_equal(kept->topic, "x/y");
    message_unref(kept);
}

static void
test_count_and_bytes(void **state)
{
    struct retain_store *store = retain_new();
    assert_non_null(store);
    size_t want = 0;
    char topic[32];
    for (int i = 0; i < 50; i++) {
        snprintf(topic, sizeof(topic), "t/%d", i % 20);
        struct message *msg = msg_new(topic, i % 2 ? "odd" : "even!");
        assert_int_equal(retain_set(store, msg), RMQ_OK);
        message_unref(msg);
    }
    for (int i = 0; i < 20; i++) /* the last write per topic is i = 30..49 */
        want +=
            sizeof(struct message) + strlen("t/") + (i >= 10 ? 2 : 1) + 1 + ((30 + i) % 2 ? 3 : 5);
    assert_int_equal(retain_count(store), 20);
    assert_int_equal(retain_bytes(store), want);
    retain_free(store);
}

static void
test_invalid_and_limits(void **state)
{
    enum { MAX = RETAIN_MAX_LEVELS };
    static char deep[4 * MAX + 8];
    struct retain_store *store = retain_new();
    struct found f = {0};
    assert_non_null(store);
    struct message *empty_topic = msg_new("", "x");
    assert_int_equal(retain_set(store, empty_topic), RMQ_INVALID);
    message_unref(empty_topic);

    for (size_t i = 0; i < MAX; i++)
        memcpy(deep + 2 * i, "a/", 2);
    deep[2 * MAX - 1] = '\0';
    put(store, deep, "deepest");
    deep[2 * MAX - 1] = '/';
    deep[2 * MAX] = 'a';
    struct message *too_deep = msg_new(deep, "x");
    assert_int_equal(retain_set(store, too_deep), RMQ_LIMIT);
    message_unref(too_deep);
    assert_int_equal(retain_count(store), 1);
    assert_int_equal(retain_node_count(store), MAX);

    assert_int_equal(match(store, "#", &f), 1);
    for (size_t i = 0; i < 2 * MAX; i++) /* a '+' filter deeper than the store */
        memcpy(deep + 2 * i, "+/", 2);
    deep[4 * MAX - 1] = '\0';
    assert_int_equal(match(store, deep, &f), 0);
    deep[2 * MAX - 1] = '\0';
    assert_int_equal(match(store, deep, &f), 1);
    memcpy(deep + 2 * MAX - 1, "/#", 3);
    assert_int_equal(match(store, deep, &f), 1); /* '#' matching the parent */
    retain_free(store);
    free(f.msgs);
}

/* ---- matching ---- */

static const char *const stored_topics[] = {
    "sport",
    "sport/",
    "sport/tennis",
    "sport/tennis/player1",
    "sport/tennis/player1/ranking",
    "sport/tennis/player2",
    "/finance",
    "finance",
    "/",
    "a//b",
    "$SYS",
    "$SYS/broker/uptime",
    "$SYS/monitor/Clients",
    "x/$SYS",
};

struct list_case {
    const char *filter;
    const char *want; /* sorted, '|'-joined */
};

static const struct list_case list_cases[] = {
    {"sport/tennis/player1/#", "sport/tennis/player1|sport/tennis/player1/ranking"},
    {"sport/#", "sport|sport/|sport/tennis|sport/tennis/player1|sport/tennis/player1/ranking|"
                "sport/tennis/player2"},
    {"sport/tennis/+", "sport/tennis/player1|sport/tennis/player2"},
    {"sport/+", "sport/|sport/tennis"},
    {"+", "finance|sport"},
    {"+/+", "/|/finance|sport/|sport/tennis|x/$SYS"},
    {"/+", "/|/finance"},
    {"#", "/|/finance|a//b|finance|sport|sport/|sport/tennis|sport/tennis/player1|"
          "sport/tennis/player1/ranking|sport/tennis/player2|x/$SYS"},
    {"+/monitor/Clients", ""},
    {"$SYS/monitor/+", "$SYS/monitor/Clients"},
    {"$SYS/#", "$SYS|$SYS/broker/uptime|$SYS/monitor/Clients"},
    {"$SYS", "$SYS"},
    {"+/#", "/|/finance|a//b|finance|sport|sport/|sport/tennis|sport/tennis/player1|"
            "sport/tennis/player1/ranking|sport/tennis/player2|x/$SYS"},
    {"+/$SYS", "x/$SYS"},
    {"a/+/b", "a//b"},
    {"a//b", "a//b"},
    {"a/b", ""},
    {"sport/tennis/player3", ""},
    {"+/+/+/+", "sport/tennis/player1/ranking"},
    {"+/+/+/+/#", "sport/tennis/player1/ranking"},
    {"sport/tennis/player1/ranking/#", "sport/tennis/player1/ranking"},
};

static void
test_match_table(void **state)
{
    struct retain_store *store = retain_new();
    struct found f = {0};
    assert_non_null(store);
    size_t n = sizeof(stored_topics) / sizeof(stored_topics[0]);
    for (size_t i = 0; i < n; i++)
        put(store, stored_topics[i], "v");
    assert_int_equal(retain_count(store), n);
    for (size_t i = 0; i < sizeof(list_cases) / sizeof(list_cases[0]); i++) {
        const char *got = match_list(store, list_cases[i].filter, &f);
        if (strcmp(got, list_cases[i].want) != 0)
            print_error("filter '%s'\n", list_cases[i].filter);
        assert_string_equal(got, list_cases[i].want);
        size_t want_n = 0;
        for (size_t j = 0; j < n; j++)
            want_n += ref_match(list_cases[i].filter, stored_topics[j]);
        assert_int_equal(f.n, want_n);
    }
    for (size_t i = 0; i < n; i++)
        put(store, stored_topics[i], "");
    assert_int_equal(retain_node_count(store), 0);
    retain_free(store);
    free(f.msgs);
}

/* One level with 100k children: devices/<n>/state. */
static void
test_wide_level(void **state)
{
    enum { N = 100000 };
    char topic[64];
    uint64_t rng = 42;
    size_t *order = malloc(N * sizeof(*order));
    struct retain_store *store = retain_new();
    struct found f = {0};
    assert_non_null(order);
    assert_non_null(store);
    for (size_t i = 0; i < N; i++) {
        snprintf(topic, sizeof(topic), "devices/%zu/state", i);
        put(store, topic, "on");
        order[i] = i;
    }
    put(store, "devices/7/state/extra", "x");
    assert_int_equal(retain_count(store), N + 1);
    assert_int_equal(match(store, "devices/+/state", &f), N);
    assert_int_equal(match(store, "devices/77777/state", &f), 1);
    assert_string_equal(f.msgs[0]->topic, "devices/77777/state");
    assert_int_equal(match(store, "devices/#", &f), N + 1);
    assert_int_equal(match(store, "#", &f), N + 1);
    assert_int_equal(match(store, "+/+/+", &f), N);
    assert_int_equal(match(store, "devices/+", &f), 0);
    assert_int_equal(match(store, "devices/+/state/#", &f), N + 1);
    for (size_t i = N - 1; i > 0; i--) {
        size_t j = rng_below(&rng, i + 1), t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    for (size_t i = 0; i < N; i++) {
        snprintf(topic, sizeof(topic), "devices/%zu/state", order[i]);
        put(store, topic, "");
        if (i == N / 2)
            assert_int_equal(match(store, "devices/+/state", &f), N - N / 2 - 1);
    }
    put(store, "devices/7/state/extra", "");
    assert_int_equal(retain_count(store), 0);
    assert_int_equal(retain_bytes(store), 0);
    assert_int_equal(retain_node_count(store), 0);
    retain_free(store);
    free(order);
    free(f.msgs);
}

/* ---- randomized cross-check ---- */

static const char *const alphabet[] = {"", "a", "b", "ab", "$SYS", "$", "+", "#"};

/* A random filter (wildcards == true) or name over the small alphabet. */
static void
random_words(uint64_t *rng, char *buf, bool wildcards)
{
    size_t levels = 1 + rng_below(rng, 4), n = 0;
    for (size_t i = 0; i < levels; i++) {
        size_t pick = rng_below(rng, wildcards ? 8 : 6);
        if (pick == 7 && i != levels - 1)
            pick = 6;
        if (i)
            buf[n++] = '/';
        memcpy(buf + n, alphabet[pick], strlen(alphabet[pick]));
        n += strlen(alphabet[pick]);
    }
    buf[n] = '\0';
    if (n == 0)
        random_words(rng, buf, wildcards);
}

enum { XC_NAMES = 150, XC_FILTERS = 300 };

/* Every filter's hits equal the brute force over the names still stored. */
static void
cross_check_filters(const struct retain_store *store, char (*names)[32], const bool *live,
                    uint64_t *rng)
{
    struct found f = {0};
    char filter[32];
    for (size_t k = 0; k < XC_FILTERS; k++) {
        unsigned hits[XC_NAMES] = {0};
        random_words(rng, filter, true);
        match(store, filter, &f);
        for (size_t i = 0; i < f.n; i++)
            for (size_t j = 0; j < XC_NAMES; j++)
                hits[j] += live[j] && !strcmp(f.msgs[i]->topic, names[j]);
        for (size_t j = 0; j < XC_NAMES; j++) {
            if (hits[j] != (unsigned)(live[j] && ref_match(filter, names[j])))
                print_error("filter '%s' name '%s': %u hits\n", filter, names[j], hits[j]);
            assert_int_equal(hits[j], live[j] && ref_match(filter, names[j]));
        }
    }
    free(f.msgs);
}

static void
cross_check_round(uint64_t *rng)
{
    static char names[XC_NAMES][32];
    bool live[XC_NAMES] = {false};
    size_t stored = 0;
    struct retain_store *store = retain_new();
    assert_non_null(store);
    for (size_t i = 0; i < XC_NAMES; i++) {
        random_words(rng, names[i], false);
        bool dup = false;
        for (size_t j = 0; j < i; j++)
            dup = dup || !strcmp(names[j], names[i]);
        put(store, names[i], "payload");
        live[i] = !dup; /* one live entry per distinct name */
        stored += !dup;
    }
    assert_int_equal(retain_count(store), stored);
    cross_check_filters(store, names, live, rng);
    for (size_t i = 0; i < XC_NAMES; i++) {
        if (live[i] && rng_below(rng, 2)) {
            put(store, names[i], "");
            live[i] = false;
            stored--;
        }
    }
    assert_int_equal(retain_count(store), stored);
    cross_check_filters(store, names, live, rng);
    retain_free(store);
}

static void
test_random_cross_check(void **state)
{
    uint64_t rng = 0x2545f4914f6cdd1dull;
    for (int round = 0; round < 25; round++)
        cross_check_round(&rng);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_set_replace_clear),
        cmocka_unit_test(test_clear_prunes_only_empty_nodes),
        cmocka_unit_test(test_callback_keeps_reference),
        cmocka_unit_test(test_count_and_bytes),
        cmocka_unit_test(test_invalid_and_limits),
        cmocka_unit_test(test_match_table),
        cmocka_unit_test(test_wide_level),
        cmocka_unit_test(test_random_cross_check),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
