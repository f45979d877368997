/* Unit tests for broker/topic_tree.c: the MQTT 3.1.1 section 4.7 matching
 * examples and edge cases (empty levels, '#' matching its parent, the '$'
 * rule), overlapping filters, upsert, unsubscribe and pruning, wide levels,
 * crowded filters, the depth limit, and a randomized cross-check against a
 * brute-force matcher written here from the spec (not broker/topic.c),
 * also with changes between matches, the match cache (a change is seen at
 * once, more matches than an entry holds, long topics, colliding slots),
 * and level_map.h's word-at-a-time level scan and comparison against plain
 * byte loops at every length up to 100 bytes and eight alignments.
 * Leaks are caught by the ASan build; pruning is checked through
 * topic_tree_node_count(). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "topic_reference.h"

#include "broker/level_map.h"
#include "broker/topic_tree.h"

/* ---- helpers ---- */

#define SUB(n) ((void *)(uintptr_t)(0x1000u + 16u * (unsigned)(n)))

static size_t
sub_index(const void *subscriber)
{
    return (size_t)(((uintptr_t)subscriber - 0x1000u) / 16u);
}

struct hits {
    size_t n;
    size_t cap;
    void **subs;
    uint8_t *qos;
};

static void
collect(void *subscriber, uint8_t qos, void *arg)
{
    struct hits *h = arg;
    if (h->n == h->cap) {
        h->cap = h->cap ? h->cap * 2 : 16;
        h->subs = realloc(h->subs, h->cap * sizeof(*h->subs));
        h->qos = realloc(h->qos, h->cap);
        assert_non_null(h->subs);
        assert_non_null(h->qos);
    }
    h->subs[h->n] = subscriber;
    h->qos[h->n++] = qos;
}

static void
hits_free(struct hits *h)
{
    free(h->subs);
    free(h->qos);
    memset(h, 0, sizeof(*h));
}

static size_t
match(const struct topic_tree *tree, const char *topic, struct hits *h)
{
    h->n = 0;
    topic_tree_match(tree, topic, strlen(topic), collect, h);
    return h->n;
}

static enum rmq_status
sub(struct topic_tree *tree, const char *filter, void *subscriber, uint8_t qos, bool *replaced)
{
    return topic_tree_subscribe(tree, filter, strlen(filter), subscriber, qos, replaced);
}

static enum rmq_status
unsub(struct topic_tree *tree, const char *filter, void *subscriber)
{
    return topic_tree_unsubscribe(tree, filter, strlen(filter), subscriber);
}

/* ---- spec table ---- */

struct match_case {
    const char *filter;
    const char *topic;
    bool match;
};

static const struct match_case spec_cases[] = {
    /* MQTT 3.1.1 section 4.7.1.2 */
    {"sport/tennis/player1/#", "sport/tennis/player1", true},
    {"sport/tennis/player1/#", "sport/tennis/player1/ranking", true},
    {"sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", true},
    {"sport/tennis/player1/#", "sport/tennis/player2", false},
    {"sport/tennis/player1/#", "sport/tennis", false},
    {"sport/#", "sport", true},
    {"sport/#", "sport/", true},
    {"sport/#", "sports", false},
    {"#", "sport/tennis/player1", true},
    {"#", "/", true},
    {"sport/tennis/#", "sport/tennis", true},
    {"sport/tennis/#", "sport/tennisplayer1", false},
    /* 4.7.1.3 */
    {"sport/tennis/+", "sport/tennis/player1", true},
    {"sport/tennis/+", "sport/tennis/player2", true},
    {"sport/tennis/+", "sport/tennis/player1/ranking", false},
    {"sport/tennis/+", "sport/tennis", false},
    {"sport/tennis/+", "sport/tennis/", true},
    {"sport/+", "sport", false},
    {"sport/+", "sport/", true},
    {"sport/+", "sport/tennis/player1", false},
    {"+/+", "/finance", true},
    {"/+", "/finance", true},
    {"+", "/finance", false},
    {"+", "finance", true},
    {"+/+", "a", false},
    {"+/+", "a/b/c", false},
    {"+/+", "/", true},
    {"/+", "finance", false},
    {"/+", "//", false},
    {"+/tennis/#", "sport/tennis/player1", true},
    {"+/tennis/#", "sport/tennis", true},
    {"+/#", "a", true},
    /* 4.7.2: the '$' rule */
    {"#", "$SYS/x", false},
    {"#", "$SYS", false},
    {"+", "$SYS", false},
    {"+", "$", false},
    {"$", "$", true},
    {"+/#", "$SYS", false},
    {"$SYS/#", "$SYS/x", true},
    {"$SYS/#", "$SYS", true},
    {"$SYS/#", "$SYSx", false},
    {"+/monitor/Clients", "$SYS/monitor/Clients", false},
    {"+/monitor/Clients", "SYS/monitor/Clients", true},
    {"$SYS/monitor/+", "$SYS/monitor/Clients", true},
    {"#", "a/$SYS", true},
    {"a/+", "a/$SYS", true},
    /* empty levels are levels */
    {"a//b", "a//b", true},
    {"a//b", "a/b", false},
    {"a/+/b", "a//b", true},
    {"/a", "/a", true},
    {"/a", "a", false},
    {"a/", "a/", true},
    {"a/", "a", false},
    {"a/#", "a", true},
    {"a/#", "ab", false},
    {"a/#", "b/a", false},
    {"+/+/+", "//", true},
    /* literal compare is exact and case-sensitive */
    {"sport/tennis/player1", "sport/tennis/player1", true},
    {"sport/tennis/player1", "Sport/tennis/player1", false},
    {"sport/tennis/player1", "sport/tennis/player", false},
    {"sport/tennis/player", "sport/tennis/player1", false},
};

static void
test_spec_table(void **state)
{
    struct hits h = {0};
    for (size_t i = 0; i < sizeof(spec_cases) / sizeof(spec_cases[0]); i++) {
        const struct match_case *c = &spec_cases[i];
        struct topic_tree *tree = topic_tree_new();
        assert_non_null(tree);
        assert_int_equal(sub(tree, c->filter, SUB(1), 1, NULL), RMQ_OK);
        size_t got = match(tree, c->topic, &h);
        if (got != (size_t)c->match || ref_match(c->filter, c->topic) != c->match)
            print_error("filter '%s' topic '%s': tree %zu ref %d want %d\n", c->filter, c->topic,
                        got, ref_match(c->filter, c->topic), c->match);
        assert_int_equal(got, c->match);
        assert_int_equal(ref_match(c->filter, c->topic), c->match);
        if (got)
            assert_ptr_equal(h.subs[0], SUB(1));
        topic_tree_free(tree);
    }
    hits_free(&h);
}

/* All spec filters in one tree: each topic reaches exactly the filters the
 * table says, so branches do not leak into each other. */
static void
test_spec_table_one_tree(void **state)
{
    size_t n = sizeof(spec_cases) / sizeof(spec_cases[0]);
    struct topic_tree *tree = topic_tree_new();
    struct hits h = {0};
    assert_non_null(tree);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(sub(tree, spec_cases[i].filter, SUB(i), 0, NULL), RMQ_OK);
    assert_int_equal(topic_tree_count(tree), n);
    for (size_t i = 0; i < n; i++) {
        size_t got = match(tree, spec_cases[i].topic, &h);
        size_t want = 0;
        for (size_t j = 0; j < n; j++)
            want += ref_match(spec_cases[j].filter, spec_cases[i].topic);
        assert_int_equal(got, want);
        for (size_t k = 0; k < got; k++)
            assert_true(ref_match(spec_cases[sub_index(h.subs[k])].filter, spec_cases[i].topic));
    }
    for (size_t i = 0; i < n; i++)
        assert_int_equal(unsub(tree, spec_cases[i].filter, SUB(i)), RMQ_OK);
    assert_int_equal(topic_tree_count(tree), 0);
    assert_int_equal(topic_tree_node_count(tree), 0);
    topic_tree_free(tree);
    hits_free(&h);
}

/* ---- overlap, upsert, unsubscribe ---- */

static void
test_overlapping_filters(void **state)
{
    static const char *const filters[] = {"a/b", "a/+", "a/#", "#", "+/b", "+/+", "+/#"};
    struct topic_tree *tree = topic_tree_new();
    struct hits h = {0};
    assert_non_null(tree);
    for (size_t i = 0; i < 7; i++)
        assert_int_equal(sub(tree, filters[i], SUB(1), (uint8_t)(i % 3), NULL), RMQ_OK);
    assert_int_equal(sub(tree, "a/b", SUB(2), 2, NULL), RMQ_OK);
    assert_int_equal(topic_tree_count(tree), 8);

    /* SUB(1) once per matching filter, each with that filter's qos. */
    assert_int_equal(match(tree, "a/b", &h), 8);
    unsigned qos_seen[3] = {0}, by_two = 0;
    for (size_t i = 0; i < h.n; i++) {
        if (h.subs[i] == SUB(2)) {
            by_two++;
            assert_int_equal(h.qos[i], 2);
        } else {
            assert_ptr_equal(h.subs[i], SUB(1));
            qos_seen[h.qos[i]]++;
        }
    }
    assert_int_equal(by_two, 1);
    assert_int_equal(qos_seen[0], 3); /* a/b, #, +/# */
    assert_int_equal(qos_seen[1], 2); /* a/+, +/b */
    assert_int_equal(qos_seen[2], 2); /* a/#, +/+ */

    assert_int_equal(match(tree, "a", &h), 3);   /* a/#, #, +/# */
    assert_int_equal(match(tree, "x/y", &h), 3); /* #, +/+, +/# */
    assert_int_equal(match(tree, "$x/b", &h), 0);
    topic_tree_free(tree);
    hits_free(&h);
}

static void
test_upsert_replaces_qos(void **state)
{
    struct topic_tree *tree = topic_tree_new();
    struct hits h = {0};
    bool replaced = true;
    assert_non_null(tree);
    assert_int_equal(sub(tree, "a/+/c", SUB(1), 0, &replaced), RMQ_OK);
    assert_false(replaced);
    assert_int_equal(sub(tree, "a/+/c", SUB(2), 1, &replaced), RMQ_OK);
    assert_false(replaced);
    assert_int_equal(sub(tree, "a/+/c", SUB(1), 2, &replaced), RMQ_OK);
    assert_true(replaced);
    assert_int_equal(topic_tree_count(tree), 2);
    assert_int_equal(topic_tree_node_count(tree), 3);
    assert_int_equal(match(tree, "a/b/c", &h), 2);
    for (size_t i = 0; i < h.n; i++)
        assert_int_equal(h.qos[i], h.subs[i] == SUB(1) ? 2 : 1);
    /* A NULL replaced pointer is allowed. */
    assert_int_equal(sub(tree, "a/+/c", SUB(1), 0, NULL), RMQ_OK);
    assert_int_equal(topic_tree_count(tree), 2);
    topic_tree_free(tree);
    hits_free(&h);
}

static void
test_unsubscribe_and_prune(void **state)
{
    struct topic_tree *tree = topic_tree_new();
    struct hits h = {0};
    assert_non_null(tree);
    assert_int_equal(sub(tree, "a/b/c", SUB(1), 0, NULL), RMQ_OK);
    assert_int_equal(sub(tree, "a/b/c", SUB(2), 0, NULL), RMQ_OK);
    assert_int_equal(sub(tree, "a/+/#", SUB(1), 0, NULL), RMQ_OK);
    assert_int_equal(topic_tree_node_count(tree), 5); /* a b c + # */

    assert_int_equal(unsub(tree, "a/b", SUB(1)), RMQ_NOT_FOUND);
    assert_int_equal(unsub(tree, "a/b/c/d", SUB(1)), RMQ_NOT_FOUND);
    assert_int_equal(unsub(tree, "a/b/c", SUB(3)), RMQ_NOT_FOUND);
    assert_int_equal(unsub(tree, "a/+", SUB(1)), RMQ_NOT_FOUND);
    assert_int_equal(unsub(tree, "x", SUB(1)), RMQ_NOT_FOUND);
    assert_int_equal(topic_tree_count(tree), 3);

    assert_int_equal(unsub(tree, "a/b/c", SUB(1)), RMQ_OK);
    assert_int_equal(unsub(tree, "a/b/c", SUB(1)), RMQ_NOT_FOUND);
    assert_int_equal(topic_tree_node_count(tree), 5);
    assert_int_equal(match(tree, "a/b/c", &h), 2);

    assert_int_equal(unsub(tree, "a/+/#", SUB(1)), RMQ_OK);
    assert_int_equal(topic_tree_node_count(tree), 3);
    assert_int_equal(match(tree, "a/b/c", &h), 1);
    assert_ptr_equal(h.subs[0], SUB(2));

    assert_int_equal(unsub(tree, "a/b/c", SUB(2)), RMQ_OK);
    assert_int_equal(topic_tree_count(tree), 0);
    assert_int_equal(topic_tree_node_count(tree), 0);
    assert_int_equal(match(tree, "a/b/c", &h), 0);
    topic_tree_free(tree);
    hits_free(&h);
}

static void
test_invalid_and_limits(void **state)
{
    static char deep[4 * TOPIC_TREE_MAX_LEVELS + 8];
    struct topic_tree *tree = topic_tree_new();
    struct hits h = {0};
    assert_non_null(tree);
    assert_int_equal(topic_tree_subscribe(tree, "a", 0, SUB(1), 0, NULL), RMQ_INVALID);
    assert_int_equal(sub(tree, "a", NULL, 0, NULL), RMQ_INVALID);
    assert_int_equal(sub(tree, "a/#/b", SUB(1), 0, NULL), RMQ_INVALID);
    assert_int_equal(topic_tree_unsubscribe(tree, "a", 0, SUB(1)), RMQ_NOT_FOUND);

    /* TOPIC_TREE_MAX_LEVELS levels are accepted, one more is not. */
    for (size_t i = 0; i < TOPIC_TREE_MAX_LEVELS; i++)
        memcpy(deep + 2 * i, "+/", 2);
    deep[2 * TOPIC_TREE_MAX_LEVELS - 1] = '\0';
    assert_int_equal(sub(tree, deep, SUB(1), 0, NULL), RMQ_OK);
    deep[2 * TOPIC_TREE_MAX_LEVELS - 1] = '/';
    deep[2 * TOPIC_TREE_MAX_LEVELS] = 'x';
    assert_int_equal(sub(tree, deep, SUB(2), 0, NULL), RMQ_LIMIT);
    assert_int_equal(topic_tree_count(tree), 1);
    assert_int_equal(topic_tree_node_count(tree), TOPIC_TREE_MAX_LEVELS);
    assert_int_equal(sub(tree, "#", SUB(3), 0, NULL), RMQ_OK);

    /* A name far deeper than any filter is matched without trouble. */
    for (size_t i = 0; i < 2 * TOPIC_TREE_MAX_LEVELS; i++)
        memcpy(deep + 2 * i, "a/", 2);
    deep[4 * TOPIC_TREE_MAX_LEVELS - 1] = '\0';
    assert_int_equal(match(tree, deep, &h), 1);
    deep[2 * TOPIC_TREE_MAX_LEVELS - 1] = '\0';
    assert_int_equal(match(tree, deep, &h), 2);
    topic_tree_free(tree);
    hits_free(&h);
}

/* Filters a^k/+^(MAX-k) for every k: along the name a^MAX every node has both
 * a literal and a '+' child, the worst case for the match stack. */
static void
test_deepest_branching(void **state)
{
    enum { MAX = TOPIC_TREE_MAX_LEVELS };
    static char filter[2 * MAX + 1], name[2 * MAX + 1];
    struct topic_tree *tree = topic_tree_new();
    struct hits h = {0};
    assert_non_null(tree);
    for (size_t k = 0; k <= MAX; k++) {
        for (size_t i = 0; i < MAX; i++)
            memcpy(filter + 2 * i, i < k ? "a/" : "+/", 2);
        filter[2 * MAX - 1] = '\0';
        assert_int_equal(sub(tree, filter, SUB(k), 1, NULL), RMQ_OK);
    }
    for (size_t i = 0; i < MAX; i++)
        memcpy(name + 2 * i, "a/", 2);
    name[2 * MAX - 1] = '\0';
    assert_int_equal(match(tree, name, &h), MAX + 1);
    name[2 * MAX - 2] = 'b';
    assert_int_equal(match(tree, name, &h), MAX);
    topic_tree_free(tree);
    hits_free(&h);
}

/* ---- scale ---- */

static void
random_filter(uint64_t *rng, char *buf, size_t cap)
{
    static const char *const words[] = {"devices", "sensors", "home", "", "$SYS", "temp", "a", "b"};
    size_t levels = 1 + rng_below(rng, 6), n = 0;
    for (size_t i = 0; i < levels; i++) {
        size_t pick = rng_below(rng, 20);
        if (i)
            buf[n++] = '/';
        if (pick == 0)
            n += (size_t)snprintf(buf + n, cap - n, "+");
        else if (pick == 1 && i == levels - 1)
            n += (size_t)snprintf(buf + n, cap - n, "#");
        else if (pick < 10)
            n += (size_t)snprintf(buf + n, cap - n, "%s", words[pick % 8]);
        else
            n += (size_t)snprintf(buf + n, cap - n, "%zu", rng_below(rng, 5000));
    }
    buf[n] = '\0';
    if (n == 0) /* "" is no filter */
        random_filter(rng, buf, cap);
}

struct pair {
    char filter[64];
    void *subscriber;
};

static void
test_random_subscribe_unsubscribe_100k(void **state)
{
    enum { N = 100000 };
    uint64_t rng = 0x9e3779b97f4a7c15ull;
    struct pair *pairs = malloc(N * sizeof(*pairs));
    struct topic_tree *tree = topic_tree_new();
    assert_non_null(pairs);
    assert_non_null(tree);
    size_t unique = 0;
    for (size_t i = 0; i < N; i++) {
        bool replaced;
        random_filter(&rng, pairs[i].filter, sizeof(pairs[i].filter));
        pairs[i].subscriber = SUB(rng_below(&rng, 2000));
        assert_int_equal(sub(tree, pairs[i].filter, pairs[i].subscriber, 1, &replaced), RMQ_OK);
        unique += !replaced;
    }
    assert_true(unique > N / 2);
    assert_int_equal(topic_tree_count(tree), unique);
    for (size_t i = N - 1; i > 0; i--) {
        size_t j = rng_below(&rng, i + 1);
        struct pair t = pairs[i];
        pairs[i] = pairs[j];
        pairs[j] = t;
    }
    size_t removed = 0;
    for (size_t i = 0; i < N; i++) {
        enum rmq_status s = unsub(tree, pairs[i].filter, pairs[i].subscriber);
        assert_true(s == RMQ_OK || s == RMQ_NOT_FOUND);
        removed += s == RMQ_OK;
    }
    assert_int_equal(removed, unique);
    assert_int_equal(topic_tree_count(tree), 0);
    assert_int_equal(topic_tree_node_count(tree), 0);
    topic_tree_free(tree);
    free(pairs);
}

/* One level with 100k children: devices/<n>/cmd, and devices/+/telemetry. */
static void
test_wide_level(void **state)
{
    enum { N = 100000 };
    char topic[64];
    struct topic_tree *tree = topic_tree_new();
    struct hits h = {0};
    assert_non_null(tree);
    for (size_t i = 0; i < N; i++) {
        snprintf(topic, sizeof(topic), "devices/%zu/cmd", i);
        assert_int_equal(sub(tree, topic, SUB(i), (uint8_t)(i % 3), NULL), RMQ_OK);
    }
    assert_int_equal(sub(tree, "devices/+/telemetry", SUB(N), 1, NULL), RMQ_OK);
    assert_int_equal(topic_tree_node_count(tree), 1 + 2 * (size_t)N + 2);
    for (size_t i = 0; i < N; i++) {
        snprintf(topic, sizeof(topic), "devices/%zu/cmd", i);
        assert_int_equal(match(tree, topic, &h), 1);
        assert_ptr_equal(h.subs[0], SUB(i));
        assert_int_equal(h.qos[0], i % 3);
    }
    assert_int_equal(match(tree, "devices/100000/cmd", &h), 0);
    assert_int_equal(match(tree, "devices/7/telemetry", &h), 1);
    assert_ptr_equal(h.subs[0], SUB(N));
    /* Drop the even ids: the odd ones must still be found (table deletes). */
    for (size_t i = 0; i < N; i += 2) {
        snprintf(topic, sizeof(topic), "devices/%zu/cmd", i);
        assert_int_equal(unsub(tree, topic, SUB(i)), RMQ_OK);
    }
    for (size_t i = 0; i < N; i++) {
        snprintf(topic, sizeof(topic), "devices/%zu/cmd", i);
        assert_int_equal(match(tree, topic, &h), i % 2);
    }
    for (size_t i = 1; i < N; i += 2) {
        snprintf(topic, sizeof(topic), "devices/%zu/cmd", i);
        assert_int_equal(unsub(tree, topic, SUB(i)), RMQ_OK);
    }
    assert_int_equal(unsub(tree, "devices/+/telemetry", SUB(N)), RMQ_OK);
    assert_int_equal(topic_tree_node_count(tree), 0);
    topic_tree_free(tree);
    hits_free(&h);
}

/* Many subscribers on one filter (the subscriber set's table mode). */
static void
test_crowded_filter(void **state)
{
    enum { N = 20000 };
    struct topic_tree *tree = topic_tree_new();
    struct hits h = {0};
    unsigned char *seen = calloc(N, 1);
    assert_non_null(tree);
    assert_non_null(seen);
    for (size_t i = 0; i < N; i++)
        assert_int_equal(sub(tree, "alerts/#", SUB(i), 0, NULL), RMQ_OK);
    for (size_t i = 0; i < N; i += 3) {
        bool replaced = false;
        assert_int_equal(sub(tree, "alerts/#", SUB(i), 2, &replaced), RMQ_OK);
        assert_true(replaced);
    }
    for (size_t i = 1; i < N; i += 2)
        assert_int_equal(unsub(tree, "alerts/#", SUB(i)), RMQ_OK);
    assert_int_equal(topic_tree_count(tree), N / 2);
    assert_int_equal(match(tree, "alerts/fire", &h), N / 2);
    for (size_t i = 0; i < h.n; i++) {
        size_t id = sub_index(h.subs[i]);
        assert_true(id < N && id % 2 == 0 && !seen[id]);
        seen[id] = 1;
        assert_int_equal(h.qos[i], id % 3 == 0 ? 2 : 0);
    }
    for (size_t i = 0; i < N; i += 2)
        assert_int_equal(unsub(tree, "alerts/#", SUB(i)), RMQ_OK);
    assert_int_equal(topic_tree_node_count(tree), 0);
    free(seen);
    topic_tree_free(tree);
    hits_free(&h);
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

enum { XC_FILTERS = 400, XC_SUBS = 37, XC_NAMES = 400 };

struct xc_entry {
    char filter[32];
    size_t sub;
    uint8_t qos;
    bool live;
};

/* Checks count random names' hits against the brute force over the live
 * entries. */
static void
cross_check_names_n(const struct topic_tree *tree, const struct xc_entry *e, uint64_t *rng,
                    size_t count)
{
    struct hits h = {0}, again = {0};
    char name[32];
    for (size_t k = 0; k < count; k++) {
        unsigned want[XC_SUBS][3] = {{0}}, got[XC_SUBS][3] = {{0}};
        random_words(rng, name, false);
        for (size_t i = 0; i < XC_FILTERS; i++)
            if (e[i].live && ref_match(e[i].filter, name))
                want[e[i].sub][e[i].qos]++;
        match(tree, name, &h);
        for (size_t i = 0; i < h.n; i++)
            got[sub_index(h.subs[i])][h.qos[i]]++;
        if (memcmp(want, got, sizeof(want)) != 0)
            print_error("name '%s': hits differ from the reference\n", name);
        assert_memory_equal(want, got, sizeof(want));
        /* Again (from the cache, if it fits): the same calls in the same order. */
        match(tree, name, &again);
        assert_int_equal(again.n, h.n);
        assert_memory_equal(again.subs, h.subs, h.n * sizeof(h.subs[0]));
        assert_memory_equal(again.qos, h.qos, h.n);
    }
    hits_free(&h);
    hits_free(&again);
}

static void
cross_check_names(const struct topic_tree *tree, const struct xc_entry *e, uint64_t *rng)
{
    cross_check_names_n(tree, e, rng, XC_NAMES);
}

static void
cross_check_round(uint64_t *rng)
{
    struct xc_entry *e = calloc(XC_FILTERS, sizeof(*e));
    struct topic_tree *tree = topic_tree_new();
    assert_non_null(e);
    assert_non_null(tree);
    for (size_t i = 0; i < XC_FILTERS; i++) {
        bool replaced;
        e[i] = (struct xc_entry){
            .sub = rng_below(rng, XC_SUBS), .qos = (uint8_t)rng_below(rng, 3), .live = true};
        random_words(rng, e[i].filter, true);
        assert_int_equal(sub(tree, e[i].filter, SUB(e[i].sub), e[i].qos, &replaced), RMQ_OK);
        for (size_t j = 0; j < i && replaced; j++) {
            if (e[j].live && e[j].sub == e[i].sub && !strcmp(e[j].filter, e[i].filter)) {
                e[j].live = false; /* the new entry carries the updated qos */
                break;
            }
        }
    }
    cross_check_names(tree, e, rng);
    for (size_t i = 0; i < XC_FILTERS; i++) {
        if (e[i].live && rng_below(rng, 2)) {
            assert_int_equal(unsub(tree, e[i].filter, SUB(e[i].sub)), RMQ_OK);
            e[i].live = false;
        }
    }
    cross_check_names(tree, e, rng);
    /* One change at a time, each followed by matches: the match cache must
     * never answer with what the tree held before the change. */
    for (size_t step = 0; step < 60; step++) {
        size_t i = rng_below(rng, XC_FILTERS);
        if (e[i].live) {
            assert_int_equal(unsub(tree, e[i].filter, SUB(e[i].sub)), RMQ_OK);
            e[i].live = false;
        } else {
            bool replaced;
            e[i].qos = (uint8_t)rng_below(rng, 3);
            assert_int_equal(sub(tree, e[i].filter, SUB(e[i].sub), e[i].qos, &replaced), RMQ_OK);
            for (size_t j = 0; j < XC_FILTERS && replaced; j++) {
                if (j != i && e[j].live && e[j].sub == e[i].sub &&
                    !strcmp(e[j].filter, e[i].filter)) {
                    e[j].live = false;
                    break;
                }
            }
            e[i].live = true;
        }
        cross_check_names_n(tree, e, rng, 12);
    }
    topic_tree_free(tree);
    free(e);
}

static void
test_random_cross_check(void **state)
{
    uint64_t rng = 0x2545f4914f6cdd1dull;
    for (int round = 0; round < 25; round++)
        cross_check_round(&rng);
}

/* ---- match cache ---- */

/* Matches topic and checks that it gives exactly subs[0..n) (in any order)
 * at qos[i] each. */
static void
expect_hits(const struct topic_tree *tree, const char *topic, const size_t *subs,
            const uint8_t *qos, size_t n)
{
    struct hits h = {0};
    assert_int_equal(match(tree, topic, &h), n);
    for (size_t i = 0; i < n; i++) {
        size_t found = 0;
        for (size_t k = 0; k < h.n; k++)
            if (h.subs[k] == SUB(subs[i]) && h.qos[k] == qos[i])
                found++;
        assert_int_equal(found, 1);
    }
    hits_free(&h);
}

static void
test_match_cache(void **state)
{
    (void)state;
    struct topic_tree *tree = topic_tree_new();
    assert_non_null(tree);
    assert_int_equal(sub(tree, "a/b", SUB(1), 1, NULL), RMQ_OK);
    expect_hits(tree, "a/b", (size_t[]){1}, (uint8_t[]){1}, 1);
    uint64_t hits = topic_tree_cache_hits(tree);
    expect_hits(tree, "a/b", (size_t[]){1}, (uint8_t[]){1}, 1);
    assert_int_equal(topic_tree_cache_hits(tree), hits + 1);

    /* Every kind of change is seen by the next match. */
    assert_int_equal(sub(tree, "a/+", SUB(2), 0, NULL), RMQ_OK);
    expect_hits(tree, "a/b", (size_t[]){1, 2}, (uint8_t[]){1, 0}, 2);
    assert_int_equal(sub(tree, "a/b", SUB(1), 2, NULL), RMQ_OK); /* qos upgrade */
    expect_hits(tree, "a/b", (size_t[]){1, 2}, (uint8_t[]){2, 0}, 2);
    assert_int_equal(unsub(tree, "a/b", SUB(1)), RMQ_OK);
    expect_hits(tree, "a/b", (size_t[]){2}, (uint8_t[]){0}, 1);
    expect_hits(tree, "a/b", (size_t[]){2}, (uint8_t[]){0}, 1);
    assert_int_equal(unsub(tree, "a/+", SUB(2)), RMQ_OK);
    expect_hits(tree, "a/b", NULL, NULL, 0);
    /* A name that matched nothing starts matching. */
    expect_hits(tree, "x/y", NULL, NULL, 0);
    assert_int_equal(sub(tree, "#", SUB(3), 1, NULL), RMQ_OK);
    expect_hits(tree, "x/y", (size_t[]){3}, (uint8_t[]){1}, 1);
    expect_hits(tree, "$SYS/x", NULL, NULL, 0);
    expect_hits(tree, "$SYS/x", NULL, NULL, 0);
    assert_int_equal(unsub(tree, "#", SUB(3)), RMQ_OK);

    /* As many matches as an entry holds (8), then one more, twice each. */
    size_t many[9];
    uint8_t many_qos[9];
    for (size_t i = 0; i < 9; i++) {
        many[i] = 10 + i;
        many_qos[i] = (uint8_t)(i % 3);
        assert_int_equal(sub(tree, "m/#", SUB(many[i]), many_qos[i], NULL), RMQ_OK);
        if (i == 7) {
            expect_hits(tree, "m/x", many, many_qos, 8);
            hits = topic_tree_cache_hits(tree);
            expect_hits(tree, "m/x", many, many_qos, 8);
            assert_int_equal(topic_tree_cache_hits(tree), hits + 1);
        }
    }
    hits = topic_tree_cache_hits(tree);
    expect_hits(tree, "m/x", many, many_qos, 9);
    expect_hits(tree, "m/x", many, many_qos, 9); /* walked again: too many to keep */
    assert_int_equal(topic_tree_cache_hits(tree), hits);
    char name[300];
    memset(name, 'q', sizeof(name) - 1);
    name[sizeof(name) - 1] = '\0';
    memcpy(name, "m/", 2);
    expect_hits(tree, name, many, many_qos, 9);
    expect_hits(tree, name, many, many_qos, 9);

    /* Topics around the longest an entry holds (96 bytes), each with a
     * subscriber of its own: a prefix never answers for a longer name, and
     * a name up to 96 bytes matched twice in a row is replayed the second
     * time. (Not "every one of them replayed in the second round": slots
     * come from a hash seeded per tree, so two of these names may share a
     * slot and evict each other, in about one run in twelve.) */
    memcpy(name, "n/", 2);
    for (size_t len = 90; len <= 100; len++) {
        char c = name[len];
        name[len] = '\0';
        assert_int_equal(sub(tree, name, SUB(100 + len), 1, NULL), RMQ_OK);
        name[len] = c;
    }
    for (size_t round = 0; round < 2; round++) {
        for (size_t len = 90; len <= 100; len++) {
            char c = name[len];
            name[len] = '\0';
            expect_hits(tree, name, (size_t[]){100 + len}, (uint8_t[]){1}, 1);
            hits = topic_tree_cache_hits(tree);
            expect_hits(tree, name, (size_t[]){100 + len}, (uint8_t[]){1}, 1);
            assert_int_equal(topic_tree_cache_hits(tree), hits + (len <= 96));
            name[len] = c;
        }
    }
    topic_tree_free(tree);

    /* Many more topics than slots, each with its own subscriber, matched in
     * rounds: colliding topics replace each other and never mix. */
    tree = topic_tree_new();
    assert_non_null(tree);
    enum { TOPICS = 3000 };
    char topic[32];
    for (size_t i = 0; i < TOPICS; i++) {
        snprintf(topic, sizeof(topic), "dev/%zu/cmd", i);
        assert_int_equal(sub(tree, topic, SUB(i), (uint8_t)(i % 3), NULL), RMQ_OK);
    }
    uint64_t rng = 0x51ed270b5e2a4a9dull;
    for (size_t k = 0; k < 4 * TOPICS; k++) {
        size_t i = rng_below(&rng, TOPICS);
        snprintf(topic, sizeof(topic), "dev/%zu/cmd", i);
        expect_hits(tree, topic, (size_t[]){i}, (uint8_t[]){(uint8_t)(i % 3)}, 1);
    }
    assert_true(topic_tree_cache_hits(tree) > 0);
    topic_tree_free(tree);
}

/* ---- level scan and comparison (level_map.h) ---- */

static void
test_level_end_and_equal(void **state)
{
    (void)state;
    uint64_t rng = 0x9e3779b97f4a7c15ull;
    char bufs[128], others[128];
    for (size_t len = 0; len <= 100; len++) {
        for (size_t round = 0; round < 200; round++) {
            char *buf = bufs + round % 8, *other = others + (round / 8) % 8;
            for (size_t i = 0; i < len; i++) /* bytes around '/' (0x2f) and high ones */
                buf[i] = (char)("./0ab\x2e\x30\xaf\x80\xff/"[rng_below(&rng, 11)]);
            size_t start = len ? rng_below(&rng, len + 1) : 0;
            size_t want = start;
            while (want < len && buf[want] != '/')
                want++;
            assert_int_equal(level_end(buf, start, len), want);
            memcpy(other, buf, len);
            assert_true(level_bytes_equal(buf, other, len));
            if (len) {
                size_t at = rng_below(&rng, len);
                other[at] = (char)(other[at] ^ (1u << rng_below(&rng, 8)));
                assert_false(level_bytes_equal(buf, other, len));
            }
        }
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spec_table),
        cmocka_unit_test(test_spec_table_one_tree),
        cmocka_unit_test(test_overlapping_filters),
        cmocka_unit_test(test_upsert_replaces_qos),
        cmocka_unit_test(test_unsubscribe_and_prune),
        cmocka_unit_test(test_invalid_and_limits),
        cmocka_unit_test(test_deepest_branching),
        cmocka_unit_test(test_random_subscribe_unsubscribe_100k),
        cmocka_unit_test(test_wide_level),
        cmocka_unit_test(test_crowded_filter),
        cmocka_unit_test(test_random_cross_check),
        cmocka_unit_test(test_match_cache),
        cmocka_unit_test(test_level_end_and_equal),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
