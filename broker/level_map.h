/* The children of one node in a tree of topic levels, shared by the
 * subscription tree (topic_tree.c) and the retained store (retain.c).
 *
 * A node embeds struct level_node as its first member; its level bytes live
 * in the same allocation, right after the node. A level_map holds the node's
 * literal children keyed by level bytes, in the cheapest shape for their
 * number: one child sits inline (most nodes of a deep tree have exactly one),
 * up to LEVEL_MAP_SMALL sit in a dense array of (hash, child) entries, more
 * in an open-addressed table of the same entries (linear probing,
 * backward-shift deletion, load at most 3/4), because real trees have levels
 * like devices/<id> with 100k children. Keeping the hash beside the pointer
 * makes a table probe touch one cache line before the child itself.
 *
 * Hashes are seeded per tree (level_seed) so that topic names chosen by
 * clients cannot be tuned to collide. The map owns its storage, never the
 * nodes. level_split, at the end, cuts the topic or filter being walked into
 * levels. Not thread-safe; internal to broker/. */
#ifndef RMQ_BROKER_LEVEL_MAP_H
#define RMQ_BROKER_LEVEL_MAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "common/status.h"

#define LEVEL_MAP_SMALL 16u

struct level_node;

struct level_entry {
    uint32_t hash; /* 0 marks a free table slot */
    struct level_node *node;
};

struct level_map {
    union {
        struct level_node *one;      /* count <= 1: the only child, or NULL */
        struct level_entry *entries; /* count >= 2: dense array or table */
    } u;
    uint32_t count;
    union {
        uint32_t one_hash; /* count <= 1: the only child's hash */
        uint32_t cap;      /* count >= 2: <= LEVEL_MAP_SMALL dense, else a power-of-two table */
    } v;
};

struct level_node {
    struct level_node *parent; /* NULL for a root */
    struct level_map children;
    const char *level; /* len bytes, not NUL-terminated */
    uint32_t hash;     /* level_hash() of the level in the parent's tree */
    uint16_t len;
};

/* A per-tree hash seed mixed from the owner's heap address and a static's
 * address (both randomised by ASLR); no I/O, no clock. */
uint64_t level_seed(const void *owner);

/* ---- hashing and comparing levels (inline: they run once per level of
 * every routed message) ---- */

static inline uint64_t
level_mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

static inline uint64_t
level_read64(const char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static inline uint64_t
level_read32(const char *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* The hash of one level under seed; never 0 (0 marks an empty table
 * slot). Reads every byte with fixed-size loads (the last word overlaps
 * the one before it; the length is mixed in, so that is harmless), then one full
 * mix: levels are short, so this is a handful of instructions. */
static inline uint32_t
level_hash(uint64_t seed, const char *level, size_t len)
{
    uint64_t h = seed ^ ((uint64_t)len * 0x9e3779b97f4a7c15ull);
    uint64_t word = 0;
    if (len > 8) {
        const char *last = level + len - 8;
        for (; level < last; level += 8) {
            h = (h ^ level_read64(level)) * 0xff51afd7ed558ccdull;
            h ^= h >> 32;
        }
        word = level_read64(last);
    } else if (len >= 4) {
        word = level_read32(level) | level_read32(level + len - 4) << 32;
    } else if (len) {
        const unsigned char *b = (const unsigned char *)level;
        word = (uint64_t)b[0] << 16 | (uint64_t)b[len / 2] << 8 | b[len - 1];
    }
    h = level_mix64(h ^ word);
    /* The index uses the low bits; the top bit only keeps 0 free as "empty". */
    return (uint32_t)h | 0x80000000u;
}

/* The position of the first '/' in s[start..len), or len: eight bytes at
 * a time (a byte equal to '/' becomes zero, and the classic zero-byte test
 * marks the first one exactly), which beats a call to memchr on levels of a
 * few bytes. */
static inline size_t
level_end(const char *s, size_t start, size_t len)
{
    size_t i = start;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    for (; i + 8 <= len; i += 8) {
        uint64_t w = level_read64(s + i) ^ 0x2f2f2f2f2f2f2f2full;
        uint64_t zero = (w - 0x0101010101010101ull) & ~w & 0x8080808080808080ull;
        if (zero)
            return i + ((size_t)__builtin_ctzll(zero) >> 3);
    }
#endif
    while (i < len && s[i] != '/')
        i++;
    return i;
}

/* a[0..len) == b[0..len), with word loads: levels are short, and a
 * call to memcmp costs more than the comparison. */
static inline bool
level_bytes_equal(const char *a, const char *b, size_t len)
{
    if (len >= 8) {
        for (size_t i = 0; i + 8 < len; i += 8)
            if (level_read64(a + i) != level_read64(b + i))
                return false;
        return level_read64(a + len - 8) == level_read64(b + len - 8);
    }
    if (len >= 4)
        return level_read32(a) == level_read32(b) &&
               level_read32(a + len - 4) == level_read32(b + len - 4);
    for (size_t i = 0; i < len; i++)
        if (a[i] != b[i])
            return false;
    return true;
}

/* level_map_find for a map of two children or more. */
struct level_node *level_map_find_many(const struct level_map *map, uint32_t hash,
                                       const char *level, size_t len);

/* The child whose level is level[0..len), hashed to hash; NULL if none.
 * Most nodes have one child: that case needs no call. */
static inline struct level_node *
level_map_find(const struct level_map *map, uint32_t hash, const char *level, size_t len)
{
    if (map->count > 1)
        return level_map_find_many(map, hash, level, len);
    const struct level_node *one = map->u.one;
    return one && map->v.one_hash == hash && one->len == len &&
                   level_bytes_equal(one->level, level, len)
               ? map->u.one
               : NULL;
}

/* Adds child (its hash, len and level set, not already present).
 * RMQ_NOMEM leaves the map as it was. */
enum rmq_status level_map_add(struct level_map *map, struct level_node *child);

/* Removes child, which must be in the map; may shrink the storage. */
void level_map_remove(struct level_map *map, struct level_node *child);

/* Iteration: the first child at slot *pos or after it, with *pos moved past
 * it; NULL when none is left. Start with *pos = 0; the map must not change
 * during the walk. */
struct level_node *level_map_next(const struct level_map *map, uint32_t *pos);

/* Frees the map's storage (not the children) and empties it. */
void level_map_release(struct level_map *map);

/* A topic name or filter cut into levels lazily, as a walk first reaches
 * each depth, each level's hash computed on first use: a walk that visits
 * one depth from many nodes ('+' and literal branches, '+' over wide levels)
 * scans and hashes each level once. The caller supplies spans[cap], and asks
 * only for depths below cap. */
struct level_span {
    uint32_t start;
    uint32_t len;
    uint32_t hash; /* 0 until level_split_hash() */
};

struct level_split {
    const char *s;
    size_t len;
    uint64_t seed;
    struct level_span *spans;
    uint32_t cap;
    uint32_t known; /* spans[0..known) are filled */
};

static inline void
level_split_init(struct level_split *split, const char *s, size_t len, uint64_t seed,
                 struct level_span *spans, uint32_t cap)
{
    *split = (struct level_split){s, len, seed, spans, cap, 0};
}

/* The level at depth (0 is the first), or NULL if the string has fewer
 * levels. depth must be below cap. */
static inline struct level_span *
level_split_at(struct level_split *split, uint32_t depth)
{
    while (split->known <= depth) {
        size_t start = 0;
        if (split->known) {
            const struct level_span *prev = &split->spans[split->known - 1];
            start = (size_t)prev->start + prev->len + 1;
            if (start > split->len)
                return NULL; /* the previous level was the last */
        }
        size_t end = level_end(split->s, start, split->len);
        split->spans[split->known++] =
            (struct level_span){(uint32_t)start, (uint32_t)(end - start), 0};
    }
    return &split->spans[depth];
}

static inline uint32_t
level_split_hash(const struct level_split *split, struct level_span *span)
{
    if (!span->hash)
        span->hash = level_hash(split->seed, split->s + span->start, span->len);
    return span->hash;
}

static inline bool
level_span_is(const struct level_split *split, const struct level_span *span, char c)
{
    return span->len == 1 && split->s[span->start] == c;
}

#endif
