/* Open-addressing hash map with linear probing and backward-shift deletion.
 *
 * Invariants: the capacity is a power of two (at least 16) and the map holds
 * at most 3/4 of it, so there is always an empty slot and probes end. A slot
 * is empty when its key is NULL (keys are copied into their own allocation,
 * at least one byte, so a zero-length key still has a pointer). Each slot
 * keeps the full 64-bit hash: probes compare it before the key bytes and
 * growing never rehashes a key. Deletion shifts the following entries of the
 * cluster back instead of leaving tombstones, so lookups never slow down after
 * churn. The table grows by doubling and never shrinks.
 *
 * Iteration and removal. Removing at slot p pulls entries from p+1, p+2, ...
 * (wrapping at the end) back towards p, never across an empty slot. So
 * hashmap_next() walks the table *downwards*, starting just below an empty
 * slot E (the highest empty slot when the walk starts): E-1 down to 0
 * (phase 1), then from the top down to E+1 (phase 2). Everything a removal of
 * the entry just returned can move lies between that entry and E, which is
 * the part already walked, and E stays empty; so no entry is skipped or
 * returned twice. In phase 2 the slots not yet walked, E+1 up to the cursor,
 * are never touched, so the walk simply stops at the first empty slot.
 * `*pos` encodes the phase and the next index:
 *   0                 not started
 *   1 .. cap          phase 1, next index pos - 1
 *   cap + 1 .. 2 cap  phase 2, next index pos - cap - 1
 *   2 cap + 1         finished
 *
 * Not thread-safe. Values are borrowed unless a destructor was given. */
#include "common/hashmap.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define MIN_CAPACITY 16

struct slot {
    uint64_t hash;
    unsigned char *key; /* NULL: empty slot */
    size_t len;
    void *value;
};

struct hashmap {
    struct slot *slots;
    size_t cap; /* power of two */
    size_t count;
    void (*value_free)(void *value);
};

/* ---- hash: a 64-bit multiply-rotate round per 8 bytes (MurmurHash3's
 * constants) and a final avalanche; little-endian reads so the value is the
 * same on every platform. Not keyed: do not rely on it against adversaries
 * who can pick colliding keys. ---- */

#define HASH_C1 UINT64_C(0x87c37b91114253d5)
#define HASH_C2 UINT64_C(0x4cf5ad432745937f)
#define HASH_SEED UINT64_C(0x9e3779b97f4a7c15)

static uint64_t
rotl64(uint64_t x, unsigned r)
{
    return (x << r) | (x >> (64u - r));
}

static uint64_t
load_le64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof(v));
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

static uint64_t
hash_round(uint64_t h, uint64_t k)
{
    k *= HASH_C1;
    k = rotl64(k, 31);
    k *= HASH_C2;
    h ^= k;
    h = rotl64(h, 27);
    return h * 5 + 0x52dce729;
}

static uint64_t
hash_final(uint64_t h)
{
    h ^= h >> 33;
    h *= UINT64_C(0xff51afd7ed558ccd);
    h ^= h >> 33;
    h *= UINT64_C(0xc4ceb9fe1a85ec53);
    h ^= h >> 33;
    return h;
}

uint64_t
hashmap_hash(const void *key, size_t len)
{
    const unsigned char *p = key;
    uint64_t h = HASH_SEED ^ ((uint64_t)len * HASH_C2);
    for (; len >= 8; p += 8, len -= 8)
        h = hash_round(h, load_le64(p));
    uint64_t tail = 0;
    for (size_t i = 0; i < len; i++)
        tail |= (uint64_t)p[i] << (8 * i);
    return hash_final(hash_round(h, tail));
}

/* ---- table ---- */

/* Finds key: true with its slot in *index, or false with the empty slot
 * where it would go. */
static bool
find(const struct hashmap *map, const void *key, size_t len, uint64_t hash, size_t *index)
{
    size_t mask = map->cap - 1;
    for (size_t i = (size_t)hash & mask;; i = (i + 1) & mask) {
        const struct slot *s = &map->slots[i];
        if (!s->key) {
            *index = i;
            return false;
        }
        if (s->hash == hash && s->len == len && (len == 0 || memcmp(s->key, key, len) == 0)) {
            *index = i;
            return true;
        }
    }
}

/* Doubles the table; RMQ_NOMEM leaves it as it was. */
static enum rmq_status
grow(struct hashmap *map)
{
    if (map->cap > SIZE_MAX / 2 / sizeof(struct slot))
        return RMQ_NOMEM;
    size_t cap = map->cap * 2, mask = cap - 1;
    struct slot *slots = calloc(cap, sizeof(*slots));
    if (!slots)
        return RMQ_NOMEM;
    for (size_t i = 0; i < map->cap; i++) {
        if (!map->slots[i].key)
            continue;
        size_t j = (size_t)map->slots[i].hash & mask;
        while (slots[j].key)
            j = (j + 1) & mask;
        slots[j] = map->slots[i];
    }
    free(map->slots);
    map->slots = slots;
    map->cap = cap;
    return RMQ_OK;
}

/* Empties slot i and shifts the rest of its cluster back over the gap: an
 * entry at j moves to the gap when the gap is no earlier than its home slot. */
static void
remove_at(struct hashmap *map, size_t i)
{
    size_t mask = map->cap - 1;
    free(map->slots[i].key);
    for (size_t j = (i + 1) & mask; map->slots[j].key; j = (j + 1) & mask) {
        size_t home = (size_t)map->slots[j].hash & mask;
        if (((j - home) & mask) >= ((j - i) & mask)) {
            map->slots[i] = map->slots[j];
            i = j;
        }
    }
    map->slots[i] = (struct slot){0};
    map->count--;
}

/* ---- public API ---- */

struct hashmap *
hashmap_new(void (*value_free)(void *value))
{
    struct hashmap *map = calloc(1, sizeof(*map));
    if (!map)
        return NULL;
    map->slots = calloc(MIN_CAPACITY, sizeof(*map->slots));
    if (!map->slots) {
        free(map);
        return NULL;
    }
    map->cap = MIN_CAPACITY;
    map->value_free = value_free;
    return map;
}

void
hashmap_free(struct hashmap *map)
{
    if (!map)
        return;
    for (size_t i = 0; i < map->cap; i++) {
        struct slot *s = &map->slots[i];
        if (!s->key)
            continue;
        free(s->key);
        if (map->value_free && s->value)
            map->value_free(s->value);
    }
    free(map->slots);
    free(map);
}

void *
hashmap_get(const struct hashmap *map, const void *key, size_t len)
{
    size_t i;
    if (!find(map, key, len, hashmap_hash(key, len), &i))
        return NULL;
    return map->slots[i].value;
}

enum rmq_status
hashmap_put(struct hashmap *map, const void *key, size_t len, void *value, void **old)
{
    uint64_t hash = hashmap_hash(key, len);
    size_t i;
    if (find(map, key, len, hash, &i)) {
        void *prev = map->slots[i].value;
        map->slots[i].value = value;
        if (old)
            *old = prev;
        else if (map->value_free && prev && prev != value)
            map->value_free(prev);
        return RMQ_OK;
    }
    unsigned char *copy = malloc(len ? len : 1);
    if (!copy)
        return RMQ_NOMEM;
    if (len)
        memcpy(copy, key, len);
    if (map->count + 1 > map->cap / 4 * 3) {
        if (grow(map) != RMQ_OK) {
            free(copy);
            return RMQ_NOMEM;
        }
        find(map, key, len, hash, &i);
    }
    map->slots[i] = (struct slot){.hash = hash, .key = copy, .len = len, .value = value};
    map->count++;
    if (old)
        *old = NULL;
    return RMQ_OK;
}

void *
hashmap_remove(struct hashmap *map, const void *key, size_t len)
{
    size_t i;
    if (!find(map, key, len, hashmap_hash(key, len), &i))
        return NULL;
    void *value = map->slots[i].value;
    remove_at(map, i);
    return value;
}

size_t
hashmap_count(const struct hashmap *map)
{
    return map->count;
}

/* The highest empty slot: where an iteration starts and ends. */
static size_t
top_empty_slot(const struct hashmap *map)
{
    size_t i = map->cap - 1;
    while (map->slots[i].key)
        i--;
    return i;
}

static int
emit(const struct hashmap *map, size_t i, const void **key, size_t *len, void **value)
{
    *key = map->slots[i].key;
    *len = map->slots[i].len;
    *value = map->slots[i].value;
    return 1;
}

int
hashmap_next(const struct hashmap *map, size_t *pos, const void **key, size_t *len, void **value)
{
    size_t cap = map->cap, p = *pos;
    if (p == 0) {
        size_t empty = top_empty_slot(map);
        p = empty > 0 ? empty : 2 * cap; /* phase 1 would be empty */
    }
    while (p >= 1 && p <= cap) {
        size_t i = p - 1;
        p = i > 0 ? p - 1 : 2 * cap;
        if (map->slots[i].key) {
            *pos = p;
            return emit(map, i, key, len, value);
        }
    }
    if (p > cap && p <= 2 * cap) {
        size_t i = p - cap - 1;
        if (map->slots[i].key) {
            *pos = i > 0 ? p - 1 : 2 * cap + 1;
            return emit(map, i, key, len, value);
        }
    }
    *pos = 2 * cap + 1;
    return 0;
}
