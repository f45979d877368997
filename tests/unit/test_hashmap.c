/* Unit tests for common/hashmap.c: put/get/replace/remove, growth to 100k
 * keys, binary keys, iteration that visits every key once, removal of the
 * entry just returned during iteration (including clusters that wrap around
 * the end of the table), destructors, and the hash itself. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/hashmap.h"

static size_t freed;

static void
count_free(void *value)
{
    freed++;
    test_free(value);
}

static int *
new_int(int v)
{
    int *p = test_malloc(sizeof(*p));
    *p = v;
    return p;
}

/* Values that are just tags: index i stored as (void *)(i + 1). */
static void *
tag(size_t i)
{
    return (void *)(uintptr_t)(i + 1);
}

static size_t
untag(void *value)
{
    return (size_t)(uintptr_t)value - 1;
}

static size_t
key_of(char *buf, size_t i)
{
    return (size_t)snprintf(buf, 32, "client-%zu", i);
}

/* ---- basic operations ---- */

static void
test_put_get_replace_remove(void **state)
{
    (void)state;
    struct hashmap *map = hashmap_new(NULL);
    assert_non_null(map);
    int a = 1, b = 2;
    void *old = &a;
    assert_null(hashmap_get(map, "alpha", 5));
    assert_int_equal(hashmap_put(map, "alpha", 5, &a, &old), RMQ_OK);
    assert_null(old);
    assert_ptr_equal(hashmap_get(map, "alpha", 5), &a);
    assert_null(hashmap_get(map, "alph", 4));
    assert_null(hashmap_get(map, "alphab", 6));
    assert_int_equal(hashmap_count(map), 1);

    assert_int_equal(hashmap_put(map, "alpha", 5, &b, &old), RMQ_OK);
    assert_ptr_equal(old, &a);
    assert_ptr_equal(hashmap_get(map, "alpha", 5), &b);
    assert_int_equal(hashmap_count(map), 1);

    assert_ptr_equal(hashmap_remove(map, "alpha", 5), &b);
    assert_null(hashmap_remove(map, "alpha", 5));
    assert_null(hashmap_get(map, "alpha", 5));
    assert_int_equal(hashmap_count(map), 0);
    hashmap_free(map);
    hashmap_free(NULL);
}

/* The key is copied: the caller's buffer may change afterwards. */
static void
test_key_is_copied(void **state)
{
    (void)state;
    struct hashmap *map = hashmap_new(NULL);
    char key[] = "session-1";
    int v = 7;
    assert_int_equal(hashmap_put(map, key, strlen(key), &v, NULL), RMQ_OK);
    key[8] = '2';
    assert_null(hashmap_get(map, key, strlen(key)));
    assert_ptr_equal(hashmap_get(map, "session-1", 9), &v);
    hashmap_free(map);
}

static void
test_binary_and_empty_keys(void **state)
{
    (void)state;
    static const struct {
        const char *bytes;
        size_t len;
    } keys[] = {
        {"", 0},         {"\0", 1},        {"\0\0", 2},      {"a", 1},
        {"a\0", 2},      {"a\0b", 3},      {"a\0c", 3},      {"\0a", 2},
        {"12345678", 8}, {"1234567\0", 8}, {"123456789", 9}, {"12345678\0", 9},
    };
    enum { N = sizeof(keys) / sizeof(keys[0]) };
    struct hashmap *map = hashmap_new(NULL);
    for (size_t i = 0; i < N; i++)
        assert_int_equal(hashmap_put(map, keys[i].bytes, keys[i].len, tag(i), NULL), RMQ_OK);
    assert_int_equal(hashmap_count(map), N);
    for (size_t i = 0; i < N; i++)
        assert_ptr_equal(hashmap_get(map, keys[i].bytes, keys[i].len), tag(i));
    assert_ptr_equal(hashmap_get(map, NULL, 0), tag(0));
    assert_ptr_equal(hashmap_remove(map, "a\0b", 3), tag(5));
    assert_ptr_equal(hashmap_get(map, "a\0c", 3), tag(6));
    assert_null(hashmap_get(map, "a\0b", 3));
    hashmap_free(map);
}

/* ---- destructor ---- */

static void
test_destructor_on_free_and_replace(void **state)
{
    (void)state;
    freed = 0;
    struct hashmap *map = hashmap_new(count_free);
    char key[32];
    for (int i = 0; i < 100; i++)
        assert_int_equal(hashmap_put(map, key, key_of(key, (size_t)i), new_int(i), NULL), RMQ_OK);

    /* Replacing without `old` frees the previous value... */
    assert_int_equal(hashmap_put(map, key, key_of(key, 5), new_int(500), NULL), RMQ_OK);
    assert_int_equal(freed, 1);
    /* ...with `old` hands it back instead. */
    void *old = NULL;
    assert_int_equal(hashmap_put(map, key, key_of(key, 6), new_int(600), &old), RMQ_OK);
    assert_int_equal(freed, 1);
    assert_int_equal(*(int *)old, 6);
    test_free(old);
    /* Storing the same pointer again must not free it. */
    void *same = hashmap_get(map, key, key_of(key, 7));
    assert_int_equal(hashmap_put(map, key, key_of(key, 7), same, NULL), RMQ_OK);
    assert_int_equal(freed, 1);
    assert_int_equal(*(int *)hashmap_get(map, key, key_of(key, 7)), 7);

    /* remove hands the value back, never frees it. */
    int *removed = hashmap_remove(map, key, key_of(key, 8));
    assert_int_equal(*removed, 8);
    assert_int_equal(freed, 1);
    test_free(removed);

    hashmap_free(map);
    assert_int_equal(freed, 1 + 99);
}

/* ---- growth ---- */

static void
test_growth_100k_keys(void **state)
{
    (void)state;
    enum { N = 100000 };
    struct hashmap *map = hashmap_new(NULL);
    char key[32];
    for (size_t i = 0; i < N; i++) {
        assert_int_equal(hashmap_put(map, key, key_of(key, i), tag(i), NULL), RMQ_OK);
        assert_int_equal(hashmap_count(map), i + 1);
    }
    for (size_t i = 0; i < N; i++)
        assert_ptr_equal(hashmap_get(map, key, key_of(key, i)), tag(i));
    assert_null(hashmap_get(map, key, key_of(key, N)));
    for (size_t i = 0; i < N; i += 2)
        assert_ptr_equal(hashmap_remove(map, key, key_of(key, i)), tag(i));
    assert_int_equal(hashmap_count(map), N / 2);
    for (size_t i = 0; i < N; i++) {
        void *want = i % 2 ? tag(i) : NULL;
        assert_ptr_equal(hashmap_get(map, key, key_of(key, i)), want);
    }
    /* Put them back: deletions left no tombstones to trip over. */
    for (size_t i = 0; i < N; i += 2)
        assert_int_equal(hashmap_put(map, key, key_of(key, i), tag(i), NULL), RMQ_OK);
    assert_int_equal(hashmap_count(map), N);
    for (size_t i = 0; i < N; i++)
        assert_ptr_equal(hashmap_get(map, key, key_of(key, i)), tag(i));
    hashmap_free(map);
}

/* Random puts and removes checked against a plain array. */
static void
test_random_against_model(void **state)
{
    (void)state;
    enum { KEYS = 3000, OPS = 300000 };
    unsigned char present[KEYS] = {0};
    size_t count = 0;
    uint64_t rng = 88172645463325252ULL;
    struct hashmap *map = hashmap_new(NULL);
    char key[32];
    for (int op = 0; op < OPS; op++) {
        rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
        size_t k = (size_t)(rng >> 8) % KEYS;
        size_t len = key_of(key, k);
        if (rng & 1) {
            assert_int_equal(hashmap_put(map, key, len, tag(k), NULL), RMQ_OK);
            count += !present[k];
            present[k] = 1;
        } else {
            assert_ptr_equal(hashmap_remove(map, key, len), present[k] ? tag(k) : NULL);
            count -= present[k];
            present[k] = 0;
        }
        if (op % 1000 == 0) {
            for (size_t i = 0; i < KEYS; i++)
                assert_ptr_equal(hashmap_get(map, key, key_of(key, i)), present[i] ? tag(i) : NULL);
        }
    }
    assert_int_equal(hashmap_count(map), count);
    hashmap_free(map);
}

/* ---- iteration ---- */

/* Walks the map, checking every entry is seen once and its key matches its
 * value; removes the entry just returned when remove_if(i) says so. */
static size_t
walk(struct hashmap *map, unsigned char *seen, size_t n, int (*remove_if)(size_t))
{
    size_t pos = 0, visits = 0;
    const void *key;
    size_t len;
    void *value;
    char expect[32];
    while (hashmap_next(map, &pos, &key, &len, &value)) {
        size_t i = untag(value);
        assert_true(i < n);
        assert_int_equal(seen[i], 0);
        seen[i] = 1;
        visits++;
        assert_int_equal(len, key_of(expect, i));
        assert_memory_equal(key, expect, len);
        if (remove_if && remove_if(i))
            assert_ptr_equal(hashmap_remove(map, expect, len), value);
    }
    assert_false(hashmap_next(map, &pos, &key, &len, &value));
    return visits;
}

static int
remove_all(size_t i)
{
    return 1;
}

static int
remove_even(size_t i)
{
    return i % 2 == 0;
}

static int
remove_by_hash(size_t i)
{
    char key[32];
    return (hashmap_hash(key, key_of(key, i)) >> 40) % 3 != 0;
}

static int (*const removers[])(size_t) = {NULL, remove_all, remove_even, remove_by_hash};

/* Every size from empty to a few growths, every removal pattern. */
static void
test_iteration_visits_each_once(void **state)
{
    (void)state;
    static const size_t sizes[] = {0, 1, 2, 11, 12, 13, 24, 25, 47, 48, 49, 96, 97, 500, 20000};
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
        for (size_t r = 0; r < sizeof(removers) / sizeof(removers[0]); r++) {
            size_t n = sizes[s];
            struct hashmap *map = hashmap_new(NULL);
            char key[32];
            for (size_t i = 0; i < n; i++)
                assert_int_equal(hashmap_put(map, key, key_of(key, i), tag(i), NULL), RMQ_OK);
            unsigned char *seen = calloc(n + 1, 1);
            assert_int_equal(walk(map, seen, n, removers[r]), n);
            size_t kept = 0;
            for (size_t i = 0; i < n; i++) {
                int gone = removers[r] && removers[r](i);
                kept += !gone;
                assert_ptr_equal(hashmap_get(map, key, key_of(key, i)), gone ? NULL : tag(i));
            }
            assert_int_equal(hashmap_count(map), kept);
            memset(seen, 0, n + 1);
            assert_int_equal(walk(map, seen, n, NULL), kept);
            free(seen);
            hashmap_free(map);
        }
    }
}

/* Keys whose home slot is the last one of a 16-, 32- or 64-slot table form
 * a cluster that wraps around the end: the hard case for removing during
 * iteration with backward shift. Built for several table sizes since the
 * capacity is internal. */
static void
test_iteration_with_wrapping_clusters(void **state)
{
    (void)state;
    static const size_t caps[] = {16, 32, 64, 128};
    for (size_t c = 0; c < sizeof(caps) / sizeof(caps[0]); c++) {
        for (size_t r = 1; r < sizeof(removers) / sizeof(removers[0]); r++) {
            enum { N = 90 };
            size_t picked[N], n = 0;
            char key[32];
            /* Half the keys crowd the last slots, the rest land anywhere. */
            for (size_t i = 0; n < N && i < 10000000; i++) {
                uint64_t h = hashmap_hash(key, key_of(key, i));
                size_t slot = (size_t)h & (caps[c] - 1);
                if ((n % 2 == 0 && slot >= caps[c] - 2) || (n % 2 == 1 && slot < caps[c] - 2))
                    picked[n++] = i;
            }
            assert_int_equal(n, N);
            size_t limit = caps[c] * 3 / 4 < N ? caps[c] * 3 / 4 : N;
            struct hashmap *map = hashmap_new(NULL);
            size_t max_i = picked[limit - 1] + 1;
            for (size_t k = 0; k < limit; k++)
                assert_int_equal(
                    hashmap_put(map, key, key_of(key, picked[k]), tag(picked[k]), NULL), RMQ_OK);
            unsigned char *seen = calloc(max_i, 1);
            assert_int_equal(walk(map, seen, max_i, removers[r]), limit);
            for (size_t k = 0; k < limit; k++) {
                int gone = removers[r](picked[k]);
                assert_ptr_equal(hashmap_get(map, key, key_of(key, picked[k])),
                                 gone ? NULL : tag(picked[k]));
            }
            free(seen);
            hashmap_free(map);
        }
    }
}

/* The broker's shutdown pattern: free every value while iterating, then free the map. */
static void
test_free_values_during_iteration(void **state)
{
    (void)state;
    struct hashmap *map = hashmap_new(NULL);
    char key[32];
    for (int i = 0; i < 1000; i++)
        hashmap_put(map, key, key_of(key, (size_t)i), new_int(i), NULL);
    size_t pos = 0, n = 0;
    const void *k;
    size_t len;
    void *value;
    while (hashmap_next(map, &pos, &k, &len, &value)) {
        test_free(value);
        n++;
    }
    assert_int_equal(n, 1000);
    hashmap_free(map);
}

/* ---- hash ---- */

static void
test_hash_is_stable_and_spreads(void **state)
{
    (void)state;
    assert_true(hashmap_hash("abc", 3) == hashmap_hash("abc", 3));
    assert_true(hashmap_hash("abc", 3) != hashmap_hash("abd", 3));
    assert_true(hashmap_hash("", 0) != hashmap_hash("\0", 1));
    assert_true(hashmap_hash("\0", 1) != hashmap_hash("\0\0", 2));
    assert_true(hashmap_hash(NULL, 0) == hashmap_hash("", 0));

    /* Sequential keys spread evenly over the low bits (what the table uses)
     * and over the high bits. */
    enum { N = 1 << 18, BUCKETS = 1024 };
    unsigned *low = calloc(BUCKETS, sizeof(*low)), *high = calloc(BUCKETS, sizeof(*high));
    char key[32];
    for (size_t i = 0; i < N; i++) {
        uint64_t h = hashmap_hash(key, key_of(key, i));
        low[h % BUCKETS]++;
        high[h >> 54]++;
    }
    double chi_low = 0, chi_high = 0, expect = (double)N / BUCKETS;
    for (size_t b = 0; b < BUCKETS; b++) {
        chi_low += (low[b] - expect) * (low[b] - expect) / expect;
        chi_high += (high[b] - expect) * (high[b] - expect) / expect;
    }
    /* 1023 degrees of freedom: mean 1023, sd ~45; 1300 is > 6 sd. */
    assert_true(chi_low < 1300);
    assert_true(chi_high < 1300);

    /* Flipping any single input bit flips about half the output bits. */
    unsigned char buf[16] = "avalanche-test!";
    uint64_t base = hashmap_hash(buf, sizeof(buf));
    for (size_t bit = 0; bit < sizeof(buf) * 8; bit++) {
        buf[bit / 8] ^= (unsigned char)(1u << (bit % 8));
        int flipped = __builtin_popcountll(base ^ hashmap_hash(buf, sizeof(buf)));
        buf[bit / 8] ^= (unsigned char)(1u << (bit % 8));
        assert_in_range(flipped, 12, 52);
    }
    free(low);
    free(high);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_get_replace_remove),
        cmocka_unit_test(test_key_is_copied),
        cmocka_unit_test(test_binary_and_empty_keys),
        cmocka_unit_test(test_destructor_on_free_and_replace),
        cmocka_unit_test(test_growth_100k_keys),
        cmocka_unit_test(test_random_against_model),
        cmocka_unit_test(test_iteration_visits_each_once),
        cmocka_unit_test(test_iteration_with_wrapping_clusters),
        cmocka_unit_test(test_free_values_during_iteration),
        cmocka_unit_test(test_hash_is_stable_and_spreads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
