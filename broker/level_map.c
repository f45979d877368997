/* Children of a topic-level tree node: inline, dense array or hash table by
 * their number; see level_map.h.
 *
 * Invariants: count <= 1 keeps the child (or NULL) in u.one and its hash in
 * v.one_hash, with no storage. count >= 2 keeps entries in u.entries: either
 * dense (v.cap <= LEVEL_MAP_SMALL, entries[0..count) used, the rest zero) or
 * a table (v.cap a power of two above LEVEL_MAP_SMALL, count <= 3/4 cap; an
 * entry sits in the first free slot probing linearly from hash & (cap-1),
 * with no free slot between its home and its slot). An entry is free exactly
 * when its hash is 0; level_hash() never returns 0. */
#include "broker/level_map.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define DENSE_FIRST_CAP 4u
#define TABLE_MAX_CAP (1u << 30)

static const char seed_anchor;

uint64_t
level_seed(const void *owner)
{
    return level_mix64((uint64_t)(uintptr_t)owner ^ ((uint64_t)(uintptr_t)&seed_anchor << 21));
}

static inline bool
is_table(const struct level_map *map)
{
    return map->count >= 2 && map->v.cap > LEVEL_MAP_SMALL;
}

static inline bool
same_level(const struct level_node *node, const char *level, size_t len)
{
    return node->len == len && level_bytes_equal(node->level, level, len);
}

struct level_node *
level_map_find_many(const struct level_map *map, uint32_t hash, const char *level, size_t len)
{
    const struct level_entry *e = map->u.entries;
    if (!is_table(map)) {
        for (uint32_t i = 0; i < map->count; i++)
            if (e[i].hash == hash && same_level(e[i].node, level, len))
                return e[i].node;
        return NULL;
    }
    uint32_t mask = map->v.cap - 1;
    for (uint32_t i = hash & mask; e[i].hash; i = (i + 1) & mask)
        if (e[i].hash == hash && same_level(e[i].node, level, len))
            return e[i].node;
    return NULL;
}

struct level_node *
level_map_next(const struct level_map *map, uint32_t *pos)
{
    if (map->count <= 1) {
        struct level_node *one = *pos == 0 ? map->u.one : NULL;
        *pos = 1;
        return one;
    }
    uint32_t end = is_table(map) ? map->v.cap : map->count;
    for (uint32_t i = *pos; i < end; i++) {
        if (map->u.entries[i].hash) {
            *pos = i + 1;
            return map->u.entries[i].node;
        }
    }
    *pos = end;
    return NULL;
}

static void
table_put(struct level_entry *entries, uint32_t cap, struct level_node *child)
{
    uint32_t mask = cap - 1;
    uint32_t i = child->hash & mask;
    while (entries[i].hash)
        i = (i + 1) & mask;
    entries[i] = (struct level_entry){child->hash, child};
}

/* Moves every child into new storage of cap entries (cap >= count >= 2 after
 * the call). RMQ_NOMEM keeps the old storage. */
static enum rmq_status
resize(struct level_map *map, uint32_t cap)
{
    struct level_entry *entries = calloc(cap, sizeof(*entries));
    if (!entries)
        return RMQ_NOMEM;
    uint32_t pos = 0, n = 0;
    struct level_node *child;
    while ((child = level_map_next(map, &pos))) {
        if (cap > LEVEL_MAP_SMALL)
            table_put(entries, cap, child);
        else
            entries[n] = (struct level_entry){child->hash, child};
        n++;
    }
    if (map->count >= 2)
        free(map->u.entries);
    map->u.entries = entries;
    map->v.cap = cap;
    return RMQ_OK;
}

enum rmq_status
level_map_add(struct level_map *map, struct level_node *child)
{
    if (map->count == 0) {
        map->u.one = child;
        map->v.one_hash = child->hash;
        map->count = 1;
        return RMQ_OK;
    }
    uint32_t cap = map->count == 1 ? 0 : map->v.cap;
    bool full = cap > LEVEL_MAP_SMALL ? ((uint64_t)map->count + 1) * 4 > (uint64_t)cap * 3
                                      : map->count == cap || cap == 0;
    if (full) {
        if (cap >= TABLE_MAX_CAP)
            return RMQ_NOMEM;
        if (resize(map, cap ? cap * 2 : DENSE_FIRST_CAP) != RMQ_OK)
            return RMQ_NOMEM;
    }
    map->count++; /* >= 2 from here: entries in use */
    if (is_table(map))
        table_put(map->u.entries, map->v.cap, child);
    else
        map->u.entries[map->count - 1] = (struct level_entry){child->hash, child};
    return RMQ_OK;
}

static bool
dense_remove(struct level_map *map, struct level_node *child)
{
    struct level_entry *e = map->u.entries;
    uint32_t last = map->count - 1;
    for (uint32_t i = 0; i <= last; i++) {
        if (e[i].node == child) {
            e[i] = e[last];
            e[last] = (struct level_entry){0, NULL};
            return true;
        }
    }
    return false;
}

/* Frees child's slot, then shifts back any later entry of the probe run that
 * may move into the hole, so lookups never meet a gap (no tombstones). */
static bool
table_remove(struct level_map *map, struct level_node *child)
{
    struct level_entry *e = map->u.entries;
    uint32_t mask = map->v.cap - 1;
    uint32_t hole = child->hash & mask;
    while (e[hole].node != child) {
        if (!e[hole].hash)
            return false;
        hole = (hole + 1) & mask;
    }
    for (uint32_t j = (hole + 1) & mask; e[j].hash; j = (j + 1) & mask) {
        uint32_t home = e[j].hash & mask;
        /* j may move back iff the hole lies in [home, j) cyclically. */
        if (((j - home) & mask) >= ((j - hole) & mask)) {
            e[hole] = e[j];
            hole = j;
        }
    }
    e[hole] = (struct level_entry){0, NULL};
    return true;
}

/* After a removal from storage: back inline at one child, or a smaller
 * table when the load falls under 1/8 (failing to shrink is harmless). */
static void
shrink(struct level_map *map)
{
    if (map->count == 1) {
        /* Unused dense entries are zero like free table slots: scan all. */
        struct level_entry *entries = map->u.entries;
        struct level_entry last = {0, NULL};
        for (uint32_t i = 0; i < map->v.cap && !last.hash; i++)
            last = entries[i];
        free(entries);
        map->u.one = last.node;
        map->v.one_hash = last.hash;
    } else if (is_table(map) && (uint64_t)map->count * 8 < map->v.cap) {
        uint32_t cap = map->v.cap / 4;
        (void)resize(map, cap > LEVEL_MAP_SMALL ? cap : LEVEL_MAP_SMALL);
    }
}

void
level_map_remove(struct level_map *map, struct level_node *child)
{
    if (map->count <= 1) {
        if (map->u.one == child)
            level_map_release(map);
        return;
    }
    bool found = is_table(map) ? table_remove(map, child) : dense_remove(map, child);
    if (!found)
        return;
    map->count--;
    shrink(map);
}

void
level_map_release(struct level_map *map)
{
    if (map->count >= 2)
        free(map->u.entries);
    memset(map, 0, sizeof(*map));
}
